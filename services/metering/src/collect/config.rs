//! How a cluster is collected: the `collect` settings and their checks.

use hopsbridge_contracts::Service;
use hopsbridge_platform::config::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a cluster's CPU and memory are measured (decision 0043).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// One PodMetrics reading per window, held for the window (decision 0023).
    Point,
    /// PodMetrics read at metrics-server's resolution from the window's start to its end, and
    /// integrated over the window.
    #[default]
    Readings,
}

impl Source {
    /// As stored (`point`, `readings`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Point => "point",
            Self::Readings => "readings",
        }
    }
}

/// What a resource is billed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The usage measured.
    #[default]
    Usage,
    /// Per pod and window, the larger of its request held for the time it ran and its usage
    /// (as OpenCost allocates).
    MaxRequestUsage,
}

impl Basis {
    /// As stored (`usage`, `max_request_usage`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::MaxRequestUsage => "max_request_usage",
        }
    }

    /// What a pod is billed for: its `usage`, or the larger of it and `request`.
    #[must_use]
    pub fn billed(self, usage: u128, request: u128) -> u128 {
        match self {
            Self::Usage => usage,
            Self::MaxRequestUsage => usage.max(request),
        }
    }
}

/// How a window's samples were measured: the source and each resource's basis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Method {
    /// Where CPU and memory came from.
    pub source: Source,
    /// CPU's basis.
    pub cpu_basis: Basis,
    /// Memory's basis.
    pub memory_basis: Basis,
}

/// How a cluster is collected. Every field has a default; durations are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectConfig {
    /// The label whose value is the Hopsworks username owning a pod (`owner`).
    pub label_key: String,
    /// Items per page (`limit`); 1000 keeps a 2,000-pod cluster at about 2.5 calls per 1,000
    /// pods.
    pub page_size: u32,
    /// Requests in flight to one cluster at once.
    pub max_concurrency: u32,
    /// Requests started per second against one cluster, on average.
    pub requests_per_second: u32,
    /// Requests that may start at once before the rate applies (client-go's QPS 5, burst 10).
    pub burst: u32,
    /// Attempts of one request that fails with a 5xx, a timeout or a connection error.
    pub max_attempts: u32,
    /// First backoff after such a failure; doubles each time, and each wait adds a random part
    /// of up to its own length (jitter).
    pub backoff_initial_ms: u64,
    /// Longest backoff, before jitter.
    pub backoff_max_ms: u64,
    /// 429 answers to one request before the collection gives up.
    pub max_throttled: u32,
    /// Longest `Retry-After` honoured; a longer one fails the collection rather than blocking
    /// the window.
    pub max_retry_after_ms: u64,
    /// Times one list may restart after its continue token expired (410).
    pub max_restarts: u32,
    /// Longest wait for one answer.
    pub request_timeout_ms: u64,
    /// How clusters' CPU and memory are measured unless `sources` names them.
    pub source: Source,
    /// Per cluster id, its own source (e.g. `point` on a cluster measured both ways).
    pub sources: BTreeMap<uuid::Uuid, Source>,
    /// metrics-server's resolution, seconds: a `readings` run reads PodMetrics this often, at
    /// `schedule.settle_secs` after each multiple of it. Windows shorter than four resolutions
    /// (the seconds-long windows of tests) are measured by `point`.
    pub resolution_secs: u32,
    /// What CPU is billed on.
    pub cpu_basis: Basis,
    /// What memory is billed on.
    pub memory_basis: Basis,
    /// Pod lifetimes from a watch (decision 0070), `[collect.watch]`.
    pub watch: crate::watch::WatchConfig,
}

impl Default for CollectConfig {
    fn default() -> Self {
        Self {
            label_key: "owner".to_owned(),
            page_size: 1000,
            max_concurrency: 2,
            requests_per_second: 5,
            burst: 10,
            max_attempts: 5,
            backoff_initial_ms: 500,
            backoff_max_ms: 10_000,
            max_throttled: 10,
            max_retry_after_ms: 60_000,
            max_restarts: 3,
            request_timeout_ms: 30_000,
            source: Source::Readings,
            sources: BTreeMap::new(),
            resolution_secs: 15,
            cpu_basis: Basis::Usage,
            memory_basis: Basis::Usage,
            watch: crate::watch::WatchConfig::default(),
        }
    }
}

impl CollectConfig {
    /// Checks the values, naming the key (under `section`, e.g. `collect`) of the first bad one.
    ///
    /// # Errors
    /// The first invalid value.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let err =
            |key: &str, reason: &str| Err(ConfigError::new(Service::Metering, &format!("{section}.{key}"), reason));
        if !valid_label_key(&self.label_key) {
            return err("label_key", "must be a Kubernetes label key such as `owner` or `example.com/owner`");
        }
        if self.page_size == 0 {
            return err("page_size", "must be at least 1");
        }
        if self.max_concurrency == 0 {
            return err("max_concurrency", "must be at least 1");
        }
        if self.requests_per_second == 0 {
            return err("requests_per_second", "must be at least 1");
        }
        if self.burst == 0 {
            return err("burst", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return err("max_attempts", "must be at least 1");
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return err("backoff_max_ms", "must not be below backoff_initial_ms");
        }
        if self.request_timeout_ms == 0 {
            return err("request_timeout_ms", "must be at least 1");
        }
        if self.resolution_secs == 0 || 86_400 % self.resolution_secs != 0 {
            return err("resolution_secs", "must divide a day (86400 s), e.g. 15");
        }
        if let Some((key, reason)) = self.watch.invalid() {
            return err(key, reason);
        }
        Ok(())
    }

    /// The source of `cluster` for windows of `window_secs` seconds: its own, else the
    /// default; `point` when the window is shorter than four resolutions.
    #[must_use]
    pub fn source_of(&self, cluster: uuid::Uuid, window_secs: u32) -> Source {
        if window_secs < self.resolution_secs.saturating_mul(4) {
            return Source::Point;
        }
        self.sources.get(&cluster).copied().unwrap_or(self.source)
    }

    /// How `source` measures with the configured bases.
    #[must_use]
    pub const fn method(&self, source: Source) -> Method {
        Method { source, cpu_basis: self.cpu_basis, memory_basis: self.memory_basis }
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of up to 63 characters
/// of alphanumerics, `-`, `_`, `.`, beginning and ending with an alphanumeric.
fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    name_ok && prefix_ok
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn label_keys_follow_kubernetes_rules() {
        for ok in ["owner", "hopsworks.ai/owner", "a", "app.kubernetes.io/name", "Owner_1"] {
            assert!(valid_label_key(ok), "{ok}");
        }
        for bad in ["", "/owner", "owner/", "-owner", "owner-", "a b", "Example.com/owner", "owner=x", &"x".repeat(64)]
        {
            assert!(!valid_label_key(bad), "{bad}");
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        assert!(CollectConfig::default().validate("collect").is_ok());
        let cases: [(&str, CollectConfig); 6] = [
            ("collect.label_key", CollectConfig { label_key: "a b".into(), ..CollectConfig::default() }),
            ("collect.page_size", CollectConfig { page_size: 0, ..CollectConfig::default() }),
            ("collect.max_concurrency", CollectConfig { max_concurrency: 0, ..CollectConfig::default() }),
            ("collect.requests_per_second", CollectConfig { requests_per_second: 0, ..CollectConfig::default() }),
            ("collect.max_attempts", CollectConfig { max_attempts: 0, ..CollectConfig::default() }),
            ("collect.backoff_max_ms", CollectConfig { backoff_max_ms: 1, ..CollectConfig::default() }),
        ];
        for (key, config) in cases {
            let err = config.validate("collect").unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn a_cluster_is_measured_by_its_own_source_and_short_windows_by_point() {
        let (mine, other) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let config = CollectConfig { sources: [(mine, Source::Point)].into(), ..CollectConfig::default() };
        assert_eq!((config.source_of(mine, 900), config.source_of(other, 900)), (Source::Point, Source::Readings));
        assert_eq!(config.source_of(other, 60), Source::Readings, "four resolutions");
        assert_eq!(config.source_of(other, 30), Source::Point, "too short to integrate");
        let bad = CollectConfig { resolution_secs: 7, ..CollectConfig::default() }.validate("collect").unwrap_err();
        assert!(bad.to_string().contains("collect.resolution_secs"), "{bad}");
        assert_eq!(
            (Basis::Usage.billed(5, 9), Basis::MaxRequestUsage.billed(5, 9), Basis::MaxRequestUsage.billed(9, 5)),
            (5, 9, 9)
        );
    }
}
