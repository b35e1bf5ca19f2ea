//! The hopsbridge-gateway executable, run as a real process in front of a real service.

use hopsbridge_testkit::binary_checks;

const BINARY: &str = env!("CARGO_BIN_EXE_hopsbridge-gateway");

/// The gateway's readiness is checked against a real identity binary behind five proxies.
fn identity_binary() -> String {
    let dir = std::path::Path::new(BINARY).parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let path = dir.join("hopsbridge-identity");
    assert!(path.exists(), "build hopsbridge-identity first (cargo test --workspace does)");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_services_it_routes_to_and_sigterm_exits_zero() {
    binary_checks::gateway_lifecycle(BINARY, &identity_binary()).await;
}

#[test]
fn refuses_bad_configuration_naming_the_key() {
    binary_checks::gateway_bad_configuration(BINARY);
}
