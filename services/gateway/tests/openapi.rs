//! The committed OpenAPI document is the one the code describes, and the gateway serves it.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

fn generated() -> String {
    let doc = hopsbridge_gateway::api_doc::document(vec![
        <hopsbridge_identity::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        <hopsbridge_billing::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        <hopsbridge_provisioning::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        <hopsbridge_metering::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        <hopsbridge_team::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        hopsbridge_platform::mail::api_doc(),
    ]);
    format!("{}\n", doc.to_pretty_json().unwrap())
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let wanted = generated();
    if std::env::var_os("HOPSBRIDGE_UPDATE_OPENAPI").is_some() {
        std::fs::write(FILE, &wanted).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(FILE).unwrap();
    if committed != wanted {
        panic!(
            "services/gateway/openapi.json is out of date; run \
             HOPSBRIDGE_UPDATE_OPENAPI=1 cargo test -p hopsbridge-gateway --test openapi and commit it"
        );
    }
    let doc: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    for path in ["/api/me", "/api/admin/users", "/api/admin/users/{id}/suspend", "/api/auth/login"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    let paths = doc["paths"].as_object().unwrap();
    // Public routes are the API and the signed webhooks; internal routes never appear.
    assert!(
        paths.keys().all(|p| p.starts_with("/api/") || p.starts_with("/webhooks/")),
        "only public routes are documented: {:?}",
        paths.keys()
    );
    assert!(paths.keys().all(|p| !p.contains("/internal")), "no internal route is documented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_it_without_authentication() {
    let p = common::Platform::start(common::Options::default()).await;
    let served = reqwest::get(format!("{}/api/openapi.json", p.gateway)).await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.text().await.unwrap(), std::fs::read_to_string(FILE).unwrap());
}
