//! The hopsbridge-provisioning executable, run as a real process against the real Postgres and NATS.

use hopsbridge_contracts::Service;
use hopsbridge_testkit::binary_checks;

const BINARY: &str = env!("CARGO_BIN_EXE_hopsbridge-provisioning");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_reports_each_unreachable_dependency_and_exits_zero_on_sigterm() {
    binary_checks::data_service_lifecycle(BINARY, Service::Provisioning).await;
}

#[test]
fn refuses_bad_configuration_naming_the_key() {
    binary_checks::data_service_bad_configuration(BINARY, Service::Provisioning);
}
