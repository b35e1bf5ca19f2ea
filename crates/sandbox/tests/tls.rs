//! A simulator served over TLS is trusted with its own CA, and only with it.

#![allow(clippy::unwrap_used, reason = "tests")]

use actix_web::{HttpResponse, web};
use hopsbridge_sandbox::server::Served;
use hopsbridge_sandbox::tls::Ca;

fn client_trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_simulator_is_trusted_through_its_own_ca_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = Ca::new("cluster-a").unwrap();
    let served = Served::start(
        |c: &mut web::ServiceConfig| {
            c.route("/ping", web::get().to(|| async { HttpResponse::Ok().body("pong") }));
        },
        Some(ca.server_config().unwrap()),
    )
    .unwrap();
    assert!(served.url().starts_with("https://127.0.0.1:"));

    let ok = client_trusting(ca.cert_pem()).get(format!("{}/ping", served.url())).send().await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "pong");

    let other = Ca::new("cluster-b").unwrap();
    let refused = client_trusting(other.cert_pem()).get(format!("{}/ping", served.url())).send().await;
    assert!(refused.is_err(), "a certificate from another CA is refused");
    served.stop().await;
}
