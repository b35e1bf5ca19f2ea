//! One journey, one trace: a person's first request through the gateway reaches identity, which
//! creates them and announces UserCreatedV1 through its outbox and NATS; team handles the event.
//! An in-process OTLP/HTTP receiver decodes every exported span, and the gateway's request, the
//! request identity served and team's handling of the event share one trace id. (A test binary
//! of its own: the telemetry pipeline is process-wide, and must be installed before anything
//! else installs one.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use actix_web::{App, HttpResponse, HttpServer, web};
use hopsbridge_contracts::Service;
use hopsbridge_platform::config::TelemetryConfig;
use hopsbridge_sandbox::auth0::{Auth0Config, Auth0Sim, TestUser, TokenSpec};
use hopsbridge_testkit::{TestBus, TestDb, TestSettings, WEBHOOK_SECRET};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A span as the collector received it.
#[derive(Debug)]
struct Received {
    trace_id: String,
    name: String,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn decode(bodies: &[Vec<u8>]) -> Vec<Received> {
    let mut spans = Vec::new();
    for body in bodies {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP trace export");
        for span in request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            let attributes = span
                .attributes
                .iter()
                .map(|kv| {
                    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::StringValue(s)) => s.clone(),
                        Some(Value::IntValue(i)) => i.to_string(),
                        Some(Value::BoolValue(b)) => b.to_string(),
                        Some(other) => format!("{other:?}"),
                        None => String::new(),
                    };
                    (kv.key.clone(), value)
                })
                .collect();
            spans.push(Received { trace_id: hex::encode(&span.trace_id), name: span.name.clone(), attributes });
        }
    }
    spans
}

/// A collector that keeps every body posted to /v1/traces; answers its base URL.
fn collector(sink: Arc<Mutex<Vec<Vec<u8>>>>) -> String {
    let server = HttpServer::new(move || {
        let sink = Arc::clone(&sink);
        App::new().route(
            "/v1/traces",
            web::post().to(move |body: web::Bytes| {
                let sink = Arc::clone(&sink);
                async move {
                    sink.lock().unwrap().push(body.to_vec());
                    HttpResponse::Ok().finish()
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_the_gateway_and_the_event_it_causes_are_one_trace() {
    hopsbridge_platform::install_crypto_provider();
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let cfg = TelemetryConfig {
        log_filter: "warn".into(),
        json_logs: false,
        otlp_endpoint: collector(Arc::clone(&received)),
    };
    let telemetry = hopsbridge_platform::telemetry::init("traces", &cfg).unwrap();

    let (db, bus, stop) = (TestDb::new().await, TestBus::new().await, CancellationToken::new());
    let identity = hopsbridge_identity::build(
        TestSettings::data_service(Service::Identity, &db, &bus)
            .set("webhook.secret", WEBHOOK_SECRET)
            .load(&hopsbridge_identity::DEFAULTS),
    )
    .await
    .unwrap();
    let identity_url = format!("http://127.0.0.1:{}", identity.port());
    tokio::spawn(identity.run_until_stopped(stop.clone()));
    let team =
        hopsbridge_team::build(TestSettings::data_service(Service::Team, &db, &bus).load(&hopsbridge_team::DEFAULTS))
            .await
            .unwrap();
    let team_url = format!("http://127.0.0.1:{}", team.port());
    tokio::spawn(team.run_until_stopped(stop.clone()));
    let tenant = Auth0Sim::start(Auth0Config::default()).unwrap();
    let mut settings = TestSettings::new(Service::Gateway).set("auth0.issuer", tenant.issuer());
    for upstream in ["identity", "provisioning", "metering", "billing"] {
        settings = settings.set(&format!("upstreams.{upstream}"), &identity_url);
    }
    let gateway =
        hopsbridge_gateway::build(settings.set("upstreams.team", &team_url).load(&hopsbridge_gateway::DEFAULTS))
            .await
            .unwrap();
    let gateway_port = gateway.port();
    tokio::spawn(gateway.run_until_stopped(stop.clone()));

    // Her first request creates her in identity, which announces UserCreatedV1; team handles it.
    let token =
        tenant.access_token(&TokenSpec::user(&TestUser::database("trace", "trace@example.com", "Trace"))).unwrap();
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{gateway_port}/api/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let handled = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        let text = reqwest::get(format!("{team_url}/metrics")).await.unwrap().text().await.unwrap();
        text.contains(r#"hopsbridge_events_consumer_processed_total{consumer="team-user_created",service="team"} 1"#)
    })
    .await;
    assert!(handled, "team handled UserCreatedV1");
    stop.cancel();
    // Shutdown flushes the batch; the exporter's HTTP client is blocking.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await.unwrap();

    let spans = decode(&received.lock().unwrap());
    let at = |port: u16| {
        spans
            .iter()
            .filter(|s| {
                s.attribute("http.host").is_some_and(|h| h.ends_with(&format!(":{port}")))
                    && s.attribute("http.target") == Some("/api/me")
            })
            .collect::<Vec<_>>()
    };
    let gateway_spans = at(gateway_port);
    assert_eq!(gateway_spans.len(), 1, "the gateway's request: {spans:#?}");
    let trace = &gateway_spans[0].trace_id;
    let identity_port: u16 = identity_url.rsplit(':').next().unwrap().parse().unwrap();
    let identity_spans = at(identity_port);
    assert!(
        identity_spans.iter().any(|s| &s.trace_id == trace),
        "identity served the forwarded request in the gateway's trace: {identity_spans:#?}"
    );
    let handling: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "handle_event" && s.attribute("consumer") == Some("team-user_created"))
        .collect();
    assert!(!handling.is_empty(), "team's handling was exported: {spans:#?}");
    assert!(handling.iter().all(|s| &s.trace_id == trace), "team handled the event in the same trace: {handling:#?}");
}
