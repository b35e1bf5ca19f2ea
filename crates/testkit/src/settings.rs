//! One way to configure a service under test, in process or as a process.
//!
//! [`TestSettings`] starts from what every test service needs (port 0, one worker, the test
//! signing key; for a data service its own database and NATS prefix), takes the test's own
//! keys by their configuration names (`stripe.api_base`), and either loads the service's typed
//! settings through the same layers the binary uses, or hands the environment variables to a
//! [`ServiceProcess`](crate::ServiceProcess).

use crate::{GATEWAY_SIGNING_KEY, TestBus, TestDb};
use hopsbridge_contracts::Service;
use hopsbridge_platform::config::{Validate, env_var, load_from};
use serde::de::DeserializeOwned;

/// A service's settings for a test: configuration keys with their values, and extra TOML
/// layers on top of the binary's defaults.
#[derive(Clone, Debug)]
pub struct TestSettings {
    service: Service,
    values: Vec<(String, String)>,
    layers: Vec<String>,
}

impl TestSettings {
    /// A service on port 0 with one HTTP worker and the test keys: the gateway signs with
    /// [`GATEWAY_SIGNING_KEY`]; any other service holds its own test key
    /// ([`crate::service_key`]), the gateway's public key and every other service's.
    #[must_use]
    pub fn new(service: Service) -> Self {
        let settings =
            Self { service, values: Vec::new(), layers: Vec::new() }.set("http.port", "0").set("http.workers", "1");
        if service == Service::Gateway {
            return settings.set("auth.gateway_signing_key", GATEWAY_SIGNING_KEY);
        }
        let settings = settings
            .set("auth.gateway_public_key", crate::public_key(Service::Gateway))
            .set("auth.service_key", crate::service_key(service));
        Service::WITH_DATA.into_iter().filter(|s| *s != service).fold(settings, |settings, caller| {
            settings.set(&format!("auth.trusted_services.{}", caller.name()), crate::public_key(caller))
        })
    }

    /// A data service on the test's database and NATS prefix.
    #[must_use]
    pub fn data_service(service: Service, db: &TestDb, bus: &TestBus) -> Self {
        Self::new(service).set("database.url", db.url()).set("nats.url", bus.url()).set("nats.prefix", bus.prefix())
    }

    /// provisioning on the test's database and NATS prefix, sealing secrets with the test keys
    /// (`test1` active), with Hopsworks timeouts and retry delays short enough for a test to
    /// see failures retried, accepting the sandbox's clusters on 127.0.0.1
    /// (`clusters.allow_private_addresses`).
    #[must_use]
    pub fn provisioning(db: &TestDb, bus: &TestBus) -> Self {
        Self::data_service(Service::Provisioning, db, bus)
            .set("http.workers", "2")
            .set("clusters.allow_private_addresses", "true")
            .set("clusters.check_timeout_ms", "2000")
            .set("encryption.keys", crate::PROVISIONING_ENCRYPTION_KEYS)
            .set("encryption.active_key", "test1")
            .set("hopsworks.request_timeout_ms", "1000")
            .set("hopsworks.connect_timeout_ms", "1000")
            .set("hopsworks.initial_backoff_ms", "20")
            .set("hopsworks.max_backoff_ms", "100")
            .set("assignments.retry_interval_ms", "100")
            .set("assignments.initial_retry_delay_ms", "200")
            .set("assignments.max_retry_delay_ms", "500")
            .set("assignments.lease_secs", "60")
    }

    /// Points the service's calendar clock at a simulated clock (`clock.follow_url`, e.g. a
    /// sandbox `World::clock_url()` or `ClockServer::url()`), so the test can move calendar
    /// time.
    #[must_use]
    pub fn clock(self, url: &str) -> Self {
        self.set("clock.follow_url", url)
    }

    /// Sets `key` (such as `stripe.api_base`), replacing an earlier value.
    #[must_use]
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.retain(|(k, _)| k != key);
        self.values.push((key.to_owned(), value.into()));
        self
    }

    /// Adds a TOML layer over the binary's defaults (and under the keys set with [`set`](Self::set)).
    #[must_use]
    pub fn layer(mut self, toml: &str) -> Self {
        self.layers.push(toml.to_owned());
        self
    }

    /// The value set for `key`, if any.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The keys as the environment variables the binary reads (`HOPSBRIDGE_<SERVICE>__…`), for
    /// a service run as a process. TOML layers cannot be passed this way.
    ///
    /// # Panics
    /// When layers were added.
    #[must_use]
    pub fn env(&self) -> Vec<(String, String)> {
        assert!(self.layers.is_empty(), "a process takes its settings from the environment only");
        self.values.iter().map(|(k, v)| (env_var(self.service, k), v.clone())).collect()
    }

    /// Loads the service's settings through the binary's layers: `defaults`, then the extra
    /// layers, then the keys set here.
    ///
    /// # Panics
    /// When the settings are invalid (the message names the key).
    #[must_use]
    pub fn load<T: DeserializeOwned + Validate>(&self, defaults: &[&str]) -> T {
        let mut layers: Vec<&str> = defaults.to_vec();
        layers.extend(self.layers.iter().map(String::as_str));
        load_from(self.service, &layers, None, self.env_unchecked())
            .unwrap_or_else(|e| panic!("test settings for {}: {e}", self.service.name()))
    }

    fn env_unchecked(&self) -> Vec<(String, String)> {
        self.values.iter().map(|(k, v)| (env_var(self.service, k), v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_values_replace_earlier_ones_and_become_the_binarys_variables() {
        let settings = TestSettings::new(Service::Gateway).set("http.workers", "4").set("upstreams.identity", "x");
        assert_eq!(settings.get("http.workers"), Some("4"));
        let env = settings.env();
        assert!(env.contains(&("HOPSBRIDGE_GATEWAY__HTTP__WORKERS".to_owned(), "4".to_owned())), "{env:?}");
        assert_eq!(env.iter().filter(|(k, _)| k.ends_with("__HTTP__WORKERS")).count(), 1);
    }
}
