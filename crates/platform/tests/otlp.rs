//! Traces leave over OTLP/HTTP when an endpoint is configured. (A test binary of its own: the
//! telemetry pipeline is process-wide.)

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use actix_web::{App, HttpResponse, HttpServer, web};
use hopsbridge_platform::config::TelemetryConfig;
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_the_configured_collector() {
    hopsbridge_platform::install_crypto_provider();
    // A collector that keeps every body posted to /v1/traces.
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = Arc::clone(&received);
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

    let cfg = TelemetryConfig {
        log_filter: "warn".into(),
        json_logs: true,
        otlp_endpoint: format!("http://127.0.0.1:{port}"),
    };
    let telemetry = hopsbridge_platform::telemetry::init("otlp-test", &cfg).unwrap();
    {
        let span = tracing::info_span!("exported_span_for_the_test");
        let _entered = span.enter();
        tracing::info!("inside");
    }
    // Shutdown flushes the batch; the exporter's HTTP client is blocking.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await.unwrap();

    let bodies = received.lock().unwrap();
    let all: Vec<u8> = bodies.iter().flatten().copied().collect();
    let needle = b"exported_span_for_the_test";
    assert!(all.windows(needle.len()).any(|w| w == needle), "the span reached the collector");
    let service = b"hopsbridge-otlp-test";
    assert!(all.windows(service.len()).any(|w| w == service), "with the service name");
}
