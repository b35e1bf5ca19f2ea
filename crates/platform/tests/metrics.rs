//! `GET /metrics`: requests by route pattern and status, where the endpoint is served, and the
//! consumers' and outboxes' metrics of a data service against the real Postgres and NATS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use actix_web::{HttpResponse, web};
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::UserCreatedV1;
use hopsbridge_platform::config::{DATA_SERVICE_DEFAULTS, DataServiceConfig, HttpConfig, ShutdownConfig};
use hopsbridge_platform::db::migrations_for;
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent};
use hopsbridge_platform::metrics::Metrics;
use hopsbridge_platform::service::{Application, DataService};
use hopsbridge_testkit::{TestBus, TestDb, TestSettings, eventually};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn http(metrics_port: Option<u16>) -> HttpConfig {
    HttpConfig { host: "127.0.0.1".into(), port: 0, workers: 1, max_body_bytes: 1024, metrics_port }
}

async fn thing() -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn boom() -> HttpResponse {
    HttpResponse::InternalServerError().finish()
}

/// Starts an application with `/things/{id}` and `/boom`; answers its ports and its stop token.
fn start(metrics: Metrics, metrics_port: Option<u16>) -> (u16, Option<u16>, CancellationToken) {
    let app = Application::with_metrics(
        Service::Identity,
        &http(metrics_port),
        &ShutdownConfig { timeout_secs: 5 },
        Vec::new(),
        metrics,
        Arc::new(|c: &mut web::ServiceConfig| {
            c.route("/things/{id}", web::get().to(thing)).route("/boom", web::get().to(boom));
        }),
    )
    .unwrap();
    let (port, metrics_port, stop) = (app.port(), app.metrics_port(), CancellationToken::new());
    tokio::spawn(app.run_until_stopped(stop.clone()));
    (port, metrics_port, stop)
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of the sample whose line starts with `series` (name and labels as rendered).
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_counted_under_its_route_pattern_method_and_status_class() {
    hopsbridge_testkit::init();
    let (port, _, stop) = start(Metrics::new(), None);
    for id in ["7", "8", "elephant"] {
        assert_eq!(get(port, &format!("/things/{id}")).await.0, 200);
    }
    assert_eq!(get(port, "/boom").await.0, 500);
    assert_eq!(get(port, "/nowhere/9").await.0, 404);

    let (status, text) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    let requests = "hopsbridge_http_requests_total";
    assert_eq!(
        value(&text, &format!(r#"{requests}{{method="GET",route="/things/{{id}}",status_class="2xx"}}"#)),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!(r#"{requests}{{method="GET",route="/boom",status_class="5xx"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!(r#"{requests}{{method="GET",route="unmatched",status_class="4xx"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"hopsbridge_http_request_duration_seconds_count{method="GET",route="/things/{id}"}"#),
        Some(3.0),
        "{text}"
    );
    // Raw paths never become labels.
    assert!(!text.contains("/things/7") && !text.contains("elephant") && !text.contains("/nowhere"), "{text}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_metrics_port_the_main_listener_serves_no_metrics_and_a_public_one_never_does() {
    hopsbridge_testkit::init();
    let (port, metrics_port, stop) = start(Metrics::new(), Some(0));
    let metrics_port = metrics_port.expect("a metrics listener");
    assert_eq!(get(port, "/things/1").await.0, 200);
    assert_eq!(get(port, "/metrics").await.0, 404, "not on the main listener");
    let (status, text) = get(metrics_port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains(r#"route="/things/{id}""#), "{text}");
    assert_eq!(get(metrics_port, "/things/1").await.0, 404, "the metrics listener serves nothing else");
    stop.cancel();

    // The gateway's kind: nothing on the main listener, even without a metrics port.
    let (port, metrics_port, stop) = start(Metrics::public(Service::Gateway), None);
    assert_eq!(metrics_port, None);
    assert_eq!(get(port, "/metrics").await.0, 404);
    stop.cancel();
}

/// Fails each event's first two handlings (the batch and its one-by-one retry), so every
/// event is nakked once and delivered again.
#[derive(Clone, Default)]
struct FailTwice(Arc<Mutex<HashMap<uuid::Uuid, u32>>>);

impl Handler<UserCreatedV1> for FailTwice {
    async fn handle(
        &self,
        _: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        let mut seen = self.0.lock().unwrap();
        let n = seen.entry(event.id.as_uuid()).or_default();
        *n += 1;
        if *n <= 2 { Err(HandlerError::Retry(anyhow::anyhow!("not yet"))) } else { Ok(()) }
    }
}

fn user(i: usize) -> UserCreatedV1 {
    UserCreatedV1 {
        user_id: format!("u{i}"),
        auth_subject: format!("auth0|{i}"),
        email: format!("user{i}@example.com"),
        name: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_counters_lag_and_outboxes_move_with_what_the_consumer_does() {
    hopsbridge_testkit::init();
    let (db, bus) = (TestDb::new().await, TestBus::new().await);
    let config: DataServiceConfig = TestSettings::data_service(Service::Billing, &db, &bus)
        .set("database.migrate_on_start", "true")
        .layer("[events]\nbackoff_secs = [1]\nack_wait_secs = 10\n")
        .load(&[DATA_SERVICE_DEFAULTS]);
    let service = DataService::connect(Service::Billing, config, migrations_for(Service::Billing)).await.unwrap();
    let consumer = service.consumer::<UserCreatedV1, _>(FailTwice::default());
    let app = service.application(Arc::new(|_: &mut web::ServiceConfig| {})).unwrap();
    let port = app.port();
    let (stop, consumer_stop) = (CancellationToken::new(), CancellationToken::new());
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let running = tokio::spawn(consumer.run(consumer_stop.clone()));

    let name = "billing-user_created";
    let series = |metric: &str| format!(r#"{metric}{{consumer="{name}",service="billing"}}"#);
    let scrape = || async { get(port, "/metrics").await.1 };
    let text = scrape().await;
    for metric in [
        "hopsbridge_events_consumer_processed_total",
        "hopsbridge_events_consumer_failed_total",
        "hopsbridge_events_consumer_redeliveries_total",
        "hopsbridge_events_consumer_dead_lettered_total",
    ] {
        assert_eq!(value(&text, &series(metric)), Some(0.0), "{metric} exists from the start: {text}");
    }
    for metric in [
        "hopsbridge_events_outbox_depth",
        "hopsbridge_events_outbox_oldest_age_seconds",
        "hopsbridge_mail_outbox_depth",
        "hopsbridge_mail_outbox_oldest_age_seconds",
        "hopsbridge_events_dead_letters",
    ] {
        assert_eq!(value(&text, &format!(r#"{metric}{{service="billing"}}"#)), Some(0.0), "{metric}: {text}");
    }
    assert_eq!(
        value(&text, r#"hopsbridge_metrics_sampler_up{sampler="postgres_platform",service="billing"}"#),
        Some(1.0),
        "{text}"
    );

    for i in 0..3 {
        bus.publish(&user(i), None).await;
    }
    let settled = eventually(Duration::from_secs(30), || async {
        let text = scrape().await;
        value(&text, &series("hopsbridge_events_consumer_processed_total")) == Some(3.0)
    })
    .await;
    let text = scrape().await;
    assert!(settled, "{text}");
    assert!(value(&text, &series("hopsbridge_events_consumer_failed_total")).unwrap() >= 3.0, "{text}");
    assert!(value(&text, &series("hopsbridge_events_consumer_redeliveries_total")).unwrap() >= 3.0, "{text}");
    assert_eq!(value(&text, &series("hopsbridge_events_consumer_lag_messages")), Some(0.0), "{text}");

    // Stopped, the consumer falls behind by what is published meanwhile.
    consumer_stop.cancel();
    running.await.unwrap();
    for i in 3..5 {
        bus.publish(&user(i), None).await;
    }
    let text = scrape().await;
    assert_eq!(value(&text, &series("hopsbridge_events_consumer_lag_messages")), Some(2.0), "{text}");
    assert_eq!(
        value(&text, r#"hopsbridge_metrics_sampler_up{sampler="jetstream_consumers",service="billing"}"#),
        Some(1.0),
        "{text}"
    );
    stop.cancel();
}
