//! provisioning's settings: the shared data-service settings plus the keys that seal cluster
//! secrets, the Hopsworks client and the background task.

pub use crate::crypto::EncryptionConfig;
use crate::crypto::Vault;
use hopsbridge_contracts::Service;
use hopsbridge_platform::config::{ConfigError, Validate};
use hopsbridge_platform::retry::Backoff;
use serde::Deserialize;
use std::time::Duration;

hopsbridge_platform::data_service_config! {
    /// provisioning's settings.
    pub struct ProvisioningConfig {
        /// The keys cluster secrets are sealed with.
        pub encryption: EncryptionConfig,
        /// Calls to the clusters' Hopsworks admin API.
        pub hopsworks: HopsworksConfig,
        /// The background task that places waiting users and retries Hopsworks work.
        pub assignments: AssignmentsConfig,
        /// What clusters admins may register.
        pub clusters: ClustersConfig,
        /// Project syncs and the project limit.
        pub projects: ProjectsConfig,
    }
}

/// Project syncs and the project limit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectsConfig {
    /// How often each cluster's projects are synced, in seconds.
    pub sync_interval_secs: u64,
    /// How long one replica may hold a cluster's sync before another may take it, in seconds.
    pub sync_lease_secs: u64,
    /// Active projects an owner may have before billing announces their plan (the free plan's).
    pub default_active_projects: i32,
}

/// What clusters admins may register.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClustersConfig {
    /// Accept a Hopsworks URL or kubeconfig server that is, or resolves to, a loopback,
    /// link-local, unspecified or cloud metadata address. Development and tests only, whose
    /// simulated clusters listen on 127.0.0.1; false in production.
    pub allow_private_addresses: bool,
    /// How long one request of a cluster's checks may take (each Kubernetes request; the
    /// Hopsworks check uses the `hopsworks` client settings), in milliseconds.
    pub check_timeout_ms: u64,
    /// How often each cluster's health is checked, in seconds (every check a registration
    /// passes, run again).
    pub health_interval_secs: u64,
}

impl ClustersConfig {
    /// How long one replica may hold a cluster's health check before another may take it.
    #[must_use]
    pub fn health_lease(&self) -> Duration {
        Duration::from_millis(self.check_timeout_ms.saturating_mul(8)).max(Duration::from_secs(60))
    }
}

/// Calls to a cluster's Hopsworks admin API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopsworksConfig {
    /// Timeout of one HTTP request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Timeout of establishing a connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Tries of one call before the operation is left for the background task (5xx, 429,
    /// timeouts and connection errors are tried again).
    pub max_attempts: u32,
    /// The pause after the first failed try, in milliseconds; it doubles each time (jitter adds
    /// up to as much again).
    pub initial_backoff_ms: u64,
    /// The longest pause between tries before jitter, in milliseconds.
    pub max_backoff_ms: u64,
    /// `maxNumProjects` of a paying owner's Hopsworks account.
    pub max_num_projects_paying: i32,
}

impl HopsworksConfig {
    /// One request's timeout.
    #[must_use]
    pub const fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The pauses between the tries of one call: `max_attempts` tries are `max_attempts - 1`
    /// retries.
    #[must_use]
    pub fn backoff(&self) -> Backoff {
        let retries = usize::try_from(self.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        Backoff::new(Duration::from_millis(self.initial_backoff_ms), Duration::from_millis(self.max_backoff_ms))
            .with_max_attempts(retries)
    }
}

/// The background task.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentsConfig {
    /// How often the task looks for waiting users and due work, in milliseconds (it is also
    /// woken when something changes).
    pub retry_interval_ms: u64,
    /// The delay before retrying failed Hopsworks work, in milliseconds; it doubles with each
    /// failed attempt up to `max_retry_delay_ms` (jitter adds up to as much again).
    pub initial_retry_delay_ms: u64,
    /// The longest delay between attempts before jitter, in milliseconds.
    pub max_retry_delay_ms: u64,
    /// How long a replica may hold one piece of work before another may take it over, in
    /// seconds.
    pub lease_secs: u64,
    /// Pieces of Hopsworks work done at once.
    pub concurrency: usize,
}

impl AssignmentsConfig {
    /// The delays before failed Hopsworks work is tried again, stored as `next_attempt_at`.
    #[must_use]
    pub const fn retry_backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(self.initial_retry_delay_ms), Duration::from_millis(self.max_retry_delay_ms))
    }
}

impl Validate for ProvisioningConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        self.base().validate(service)?;
        Vault::from_config(&self.encryption).map_err(|(key, reason)| ConfigError::new(service, key, reason))?;
        let h = &self.hopsworks;
        let positive = [
            ("hopsworks.request_timeout_ms", h.request_timeout_ms),
            ("hopsworks.connect_timeout_ms", h.connect_timeout_ms),
            ("hopsworks.initial_backoff_ms", h.initial_backoff_ms),
            ("hopsworks.max_backoff_ms", h.max_backoff_ms),
            ("assignments.retry_interval_ms", self.assignments.retry_interval_ms),
            ("assignments.initial_retry_delay_ms", self.assignments.initial_retry_delay_ms),
            ("assignments.max_retry_delay_ms", self.assignments.max_retry_delay_ms),
            ("assignments.lease_secs", self.assignments.lease_secs),
            ("projects.sync_interval_secs", self.projects.sync_interval_secs),
            ("projects.sync_lease_secs", self.projects.sync_lease_secs),
            ("clusters.check_timeout_ms", self.clusters.check_timeout_ms),
            ("clusters.health_interval_secs", self.clusters.health_interval_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(service, key, "must be at least 1"));
            }
        }
        if h.max_attempts == 0 {
            return Err(ConfigError::new(service, "hopsworks.max_attempts", "must be at least 1"));
        }
        if h.max_num_projects_paying < 0 {
            return Err(ConfigError::new(service, "hopsworks.max_num_projects_paying", "must not be negative"));
        }
        if self.projects.default_active_projects < 0 {
            return Err(ConfigError::new(service, "projects.default_active_projects", "must not be negative"));
        }
        if self.assignments.concurrency == 0 {
            return Err(ConfigError::new(service, "assignments.concurrency", "must be at least 1"));
        }
        // A replica must finish a piece of work (every try of every call) before its lease ends.
        let worst_ms = u64::from(h.max_attempts)
            .saturating_mul(h.request_timeout_ms.saturating_add(h.connect_timeout_ms).saturating_add(h.max_backoff_ms))
            .saturating_mul(6);
        if self.assignments.lease_secs.saturating_mul(1000) < worst_ms {
            return Err(ConfigError::new(
                service,
                "assignments.lease_secs",
                format!("must cover the worst case of one piece of Hopsworks work ({} s)", worst_ms.div_ceil(1000)),
            ));
        }
        Ok(())
    }
}
