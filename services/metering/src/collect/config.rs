//! How a cluster is collected: the `collect` settings and their checks.

use hopsbridge_contracts::Service;
use hopsbridge_platform::config::ConfigError;
use serde::Deserialize;

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
        Ok(())
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
}
