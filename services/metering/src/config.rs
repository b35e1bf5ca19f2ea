//! metering's settings: the shared data-service settings plus how clusters are collected
//! (`collect`), when and how runs are scheduled (`schedule`), where provisioning answers
//! for cluster access (`provisioning`), how storage is measured (`storage`) and what becomes of
//! windows that could not be measured (`gaps`).

use crate::collect::CollectConfig;
use crate::storage::StorageConfig;
use crate::window::WindowLength;
use hopsbridge_contracts::Service;
use hopsbridge_platform::config::{ConfigError, Validate};
use serde::Deserialize;

hopsbridge_platform::data_service_config! {
    /// metering's settings.
    pub struct MeteringConfig {
        /// How one cluster is read.
        pub collect: CollectConfig,
        /// Windows and runs.
        pub schedule: ScheduleConfig,
        /// provisioning's internal API.
        pub provisioning: ProvisioningApiConfig,
        /// How storage is measured per project (decision 0056).
        pub storage: StorageConfig,
        /// metering's integrity checks (decision 0060).
        pub integrity_checks: crate::integrity::ChecksConfig,
        /// What becomes of windows that could not be measured (decision 0069).
        pub gaps: crate::gaps::GapsConfig,
    }
}

impl MeteringConfig {
    /// The window length (validated at load).
    #[must_use]
    pub fn window(&self) -> WindowLength {
        WindowLength::new(self.schedule.window_secs).unwrap_or_default()
    }
}

/// When windows are collected.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Window length in seconds; it must divide a day (900 by default).
    pub window_secs: u32,
    /// Seconds after a window's end before it is collected, so metrics-server has scraped
    /// since (it scrapes every 15 s).
    pub settle_secs: u32,
    /// Seconds after a window's end during which it may still be collected; a run not complete
    /// by then is a gap (a sample taken later would describe another window).
    pub deadline_secs: u32,
    /// How far back windows are scheduled after metering was down, in seconds: each becomes a
    /// gap. Older windows are not scheduled at all.
    pub lookback_secs: u32,
    /// Tries of one run; between tries the run waits `retry_delay_ms`, doubling.
    pub max_attempts: u32,
    /// The pause after the first failed try, in milliseconds; each pause doubles the one
    /// before and adds a random part of up to its own length (jitter).
    pub retry_delay_ms: u64,
    /// How long a replica holds a run before another may take it over, in seconds. A
    /// collection that takes longer is abandoned by its replica.
    pub lease_secs: u32,
    /// Clusters collected at once by one replica by `point`.
    pub clusters_in_flight: usize,
    /// Windows read at once by one replica by `readings` (each reads its cluster every
    /// resolution for a whole window, and sleeps in between).
    pub readings_in_flight: usize,
    /// How often the scheduler looks for due runs, in milliseconds (it also wakes at each
    /// window's end and on "collect now").
    pub tick_ms: u64,
    /// How long a cluster's kubeconfig is kept in memory before it is asked for again, in
    /// seconds.
    pub access_ttl_secs: u32,
}

/// provisioning's internal API, which answers kubeconfigs and Hopsworks projects.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningApiConfig {
    /// Base URL, e.g. `http://127.0.0.1:8083`.
    pub url: String,
    /// One request, in milliseconds.
    pub timeout_ms: u64,
}

impl Validate for MeteringConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        self.base().validate(service)?;
        self.collect.validate("collect")?;
        self.storage.validate("storage").map_err(|e| StorageConfig::error(service, e))?;
        self.integrity_checks.validate(service)?;
        self.gaps.validate(service)?;
        let s = &self.schedule;
        if WindowLength::new(s.window_secs).is_err() {
            return Err(ConfigError::new(service, "schedule.window_secs", "must divide a day (86400 s), e.g. 900"));
        }
        if s.deadline_secs <= s.settle_secs {
            return Err(ConfigError::new(service, "schedule.deadline_secs", "must be greater than settle_secs"));
        }
        let positive = [
            ("schedule.max_attempts", u64::from(s.max_attempts)),
            ("schedule.retry_delay_ms", s.retry_delay_ms),
            ("schedule.lease_secs", u64::from(s.lease_secs)),
            ("schedule.clusters_in_flight", u64::try_from(s.clusters_in_flight).unwrap_or(u64::MAX)),
            ("schedule.readings_in_flight", u64::try_from(s.readings_in_flight).unwrap_or(u64::MAX)),
            ("schedule.tick_ms", s.tick_ms),
            ("schedule.access_ttl_secs", u64::from(s.access_ttl_secs)),
            ("provisioning.timeout_ms", self.provisioning.timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(service, key, "must be at least 1"));
            }
        }
        let url = &self.provisioning.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new(service, "provisioning.url", "must be an http(s) URL"));
        }
        Ok(())
    }
}
