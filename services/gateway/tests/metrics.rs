//! Metrics stay off the internet: the gateway serves its own only on `http.metrics_port`, and
//! forwards no path to a service's `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{Options, Platform};
use hopsbridge_contracts::Service;
use hopsbridge_testkit::TestSettings;

async fn text(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_its_metrics_only_on_its_metrics_port_and_forwards_none() {
    let p = Platform::start(Options::default()).await;
    // identity, behind the gateway, serves its metrics on its own listener.
    assert_eq!(text(&format!("{}/healthz", p.identity)).await.0, 200);
    let (status, identity) = text(&format!("{}/metrics", p.identity)).await;
    assert_eq!(status, 200);
    assert!(identity.contains("# TYPE hopsbridge_http_requests_total counter"), "{identity}");

    // Through the gateway's public listener: nothing, however the path is written.
    let (_, body) = text(&format!("{}/metrics", p.gateway)).await;
    assert!(!body.contains("hopsbridge_"), "{body}");
    for path in ["/api/me/../../metrics", "/api/metrics", "/api/%2e%2e/metrics", "/webhooks/../metrics"] {
        let answer = hopsbridge_testkit::raw_http(&p.gateway, "GET", path, "", b"").await;
        assert_ne!(answer.status, 200, "{path}: {:?}", answer.body);
    }

    // A gateway with a metrics port serves its own requests' metrics there, and only there.
    let settings = TestSettings::new(Service::Gateway)
        .set("http.metrics_port", "0")
        .set("auth0.issuer", p.tenant.issuer())
        .set("upstreams.identity", &p.identity)
        .set("upstreams.team", &p.identity)
        .set("upstreams.provisioning", &p.identity)
        .set("upstreams.metering", &p.identity)
        .set("upstreams.billing", &p.identity);
    let gateway = hopsbridge_gateway::build(settings.load(&hopsbridge_gateway::DEFAULTS)).await.unwrap();
    let (port, metrics_port) = (gateway.port(), gateway.metrics_port().expect("a metrics listener"));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(gateway.run_until_stopped(stop.clone()));
    let (status, _) = text(&format!("http://127.0.0.1:{port}/api/me")).await;
    assert_eq!(status, 401);
    let (_, public) = text(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(!public.contains("hopsbridge_"), "{public}");
    let (status, own) = text(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert_eq!(status, 200);
    // Forwarded requests are counted by the prefix they are routed by.
    assert!(
        own.contains(
            r#"hopsbridge_http_requests_total{method="GET",route="/api/me",status_class="4xx",service="gateway"} 1"#
        ),
        "{own}"
    );
    stop.cancel();
}
