//! The hopsbridge-metering executable, run as a real process against the real Postgres and NATS:
//! health, readiness naming each unreachable dependency, exit 0 on SIGTERM, and refusal of bad
//! configuration naming the key.

use hopsbridge_contracts::Service;

hopsbridge_testkit::data_service_binary_tests!(Service::Metering, "hopsbridge-metering");
