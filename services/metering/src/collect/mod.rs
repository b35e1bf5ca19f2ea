//! Collecting one cluster's usage for one window: PodMetrics and pods listed across all
//! namespaces, every pod whatever its labels, page by page, joined on (namespace, name) and
//! aggregated per (namespace, owner label) as exact integers; pods without the label are
//! aggregated under the empty owner.
//!
//! - [`client`]: the connection to the cluster's API server, each request's retries, 429s and
//!   failures (decision 0021);
//! - [`limiter`]: the pacing of one cluster's requests (nothing is shared between clusters);
//! - [`pages`]: paging through a list, and restarting it when its continue token expired;
//! - [`items`]: what is read from each page and how a page is folded;
//! - [`readings`]: PodMetrics readings with their timestamps and windows, integrated over time
//!   (decision 0043);
//! - [`watch`]: the pod list with its resourceVersion and a pod watch from it (decision 0070);
//! - [`config`]: the `collect` settings.
//!
//! This module joins the two lists into what a collection computes: usage per (namespace,
//! owner), and the counters of what it took.

mod client;
mod config;
mod items;
mod limiter;
mod pages;
pub mod readings;
pub mod watch;

pub use client::ClusterClient;
pub use config::{Basis, CollectConfig, Method, Source};

use crate::quantity::QuantityError;
use crate::usage::Usage;
use crate::window::Window;
use client::Counters;
use items::{PodFold, fold_metrics, fold_pods};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// The PodMetrics list, across all namespaces.
pub const METRICS_PATH: &str = "/apis/metrics.k8s.io/v1beta1/pods";
/// The pod list, across all namespaces.
pub const PODS_PATH: &str = "/api/v1/pods";
/// The extended resource GPUs are requested as.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Why a collection failed. [`CollectError::reason`] is the stable code a gap records.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The kubeconfig cannot be used (no secret is echoed).
    #[error("the kubeconfig cannot be used: {0}")]
    Kubeconfig(String),
    /// The server's certificate is not trusted by the kubeconfig's CA.
    #[error("{what}: TLS verification failed: {message}")]
    Tls {
        /// The request.
        what: String,
        /// The TLS error.
        message: String,
    },
    /// 5xx, timeouts or connection failures on every attempt.
    #[error("{what}: failed {attempts} times, last: {last}")]
    Exhausted {
        /// The request.
        what: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// 429 more often than allowed, or a `Retry-After` longer than allowed.
    #[error("{what}: throttled (429) {times} times, last Retry-After {retry_after_secs} s")]
    Throttled {
        /// The request.
        what: String,
        /// 429s received.
        times: u32,
        /// The last `Retry-After`.
        retry_after_secs: u64,
    },
    /// An answer that retrying cannot change (401, 403, 404, 400, …).
    #[error("{what}: answered {status} {reason}: {message}")]
    Refused {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The Status reason.
        reason: String,
        /// The Status message.
        message: String,
    },
    /// The continue token kept expiring.
    #[error("{what}: the list restarted {restarts} times after its continue token expired (410)")]
    Expired {
        /// The list.
        what: String,
        /// Restarts made.
        restarts: u32,
    },
    /// A 200 whose body is not the expected list.
    #[error("{what}: unreadable answer: {message}")]
    Malformed {
        /// The request.
        what: String,
        /// The decoding error.
        message: String,
    },
    /// A pod's usage or request is not a valid quantity.
    #[error("pod {namespace}/{name}: {source}")]
    Quantity {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The refused quantity.
        source: QuantityError,
    },
}

impl CollectError {
    /// A stable snake_case code for the failure.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Kubeconfig(_) => "kubeconfig_invalid",
            Self::Tls { .. } => "tls_verification_failed",
            Self::Exhausted { .. } => "cluster_unavailable",
            Self::Throttled { .. } => "throttled",
            Self::Refused { .. } => "request_refused",
            Self::Expired { .. } => "continue_token_expired",
            Self::Malformed { .. } => "malformed_answer",
            Self::Quantity { .. } => "malformed_quantity",
        }
    }
}

/// Usage of one (namespace, owner) in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerUsage {
    /// The window's usage, exact.
    pub usage: Usage,
    /// Pods measured.
    pub pods: u64,
    /// Pod time estimated between readings, milliseconds (readings only).
    pub estimated_ms: i64,
}

/// Counters of one collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CollectStats {
    /// HTTP requests sent, retries and restarts included.
    pub api_calls: u64,
    /// Pods listed (every phase, last complete pass of the list).
    pub pods_listed: u64,
    /// Of those, Running.
    pub pods_running: u64,
    /// PodMetrics listed.
    pub metrics_listed: u64,
    /// Running pods with metrics: the ones aggregated.
    pub pods_measured: u64,
    /// Running pods without PodMetrics (skipped).
    pub pods_without_metrics: u64,
    /// Running pods without an owner label, or with an empty one (aggregated under the empty
    /// owner and billed by their namespace).
    pub pods_without_owner: u64,
    /// PodMetrics without a Running pod in the pod list (skipped).
    pub metrics_without_pod: u64,
    /// Items listed twice (ignored after the first).
    pub duplicates: u64,
    /// Lists restarted after a 410.
    pub list_restarts: u64,
    /// 429 answers waited out.
    pub throttled: u64,
    /// Requests retried after a 5xx, timeout or connection failure.
    pub retries: u64,
    /// Reads of the PodMetrics list (readings: one per resolution; point: one).
    pub reads: u64,
    /// Pod time estimated between readings, milliseconds, over every pod (readings only).
    pub estimated_ms: i64,
    /// Milliseconds from the window's start to the first read that served it, beyond the
    /// expected first read (`settle_secs` after the start): time before a late first read is
    /// not measured (readings only).
    pub late_first_read_ms: i64,
}

/// One cluster's usage in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// The window.
    pub window: Window,
    /// Usage per (namespace, owner).
    pub usage: BTreeMap<(String, String), OwnerUsage>,
    /// What it took.
    pub stats: CollectStats,
    /// How it was measured.
    pub method: Method,
}

impl Collection {
    /// The sum over every (namespace, owner).
    #[must_use]
    pub fn total(&self) -> Usage {
        self.usage.values().fold(Usage::default(), |acc, u| acc + u.usage)
    }
}

impl ClusterClient {
    /// The usage of `window` by point (decision 0023): both lists read now, each pod's current
    /// rate held for the window's length, on the configured bases. Every Running pod with
    /// PodMetrics counts, with or without an owner label.
    ///
    /// # Errors
    /// The first failure that retries could not overcome; nothing partial is returned.
    pub async fn collect(&self, window: Window) -> Result<Collection, CollectError> {
        let method = self.config.method(Source::Point);
        let counters = Counters::default();
        let label_key = self.config.label_key.as_str();
        let pods = self
            .list_all(PODS_PATH, &counters, PodFold::default, |acc, what, body| fold_pods(acc, label_key, what, body));
        let metrics = self.list_all(METRICS_PATH, &counters, Vec::new, fold_metrics);
        let (pods, metrics) = tokio::join!(pods, metrics);
        let (mut pods, metrics) = (pods?, metrics?);
        let mut stats = CollectStats {
            api_calls: counters.api_calls.load(Ordering::Relaxed),
            throttled: counters.throttled.load(Ordering::Relaxed),
            retries: counters.retries.load(Ordering::Relaxed),
            list_restarts: counters.restarts.load(Ordering::Relaxed),
            reads: 1,
            pods_listed: pods.listed,
            pods_running: pods.running_count,
            pods_without_owner: pods.without_owner,
            duplicates: pods.duplicates,
            metrics_listed: metrics.len() as u64,
            ..CollectStats::default()
        };
        let mut usage: BTreeMap<(String, String), OwnerUsage> = BTreeMap::new();
        let secs = window.secs();
        for m in metrics {
            let Some(pod) = pods.running.get_mut(&m.key) else {
                stats.metrics_without_pod += 1;
                continue;
            };
            if pod.measured {
                stats.duplicates += 1;
                continue;
            }
            pod.measured = true;
            stats.pods_measured += 1;
            let entry = usage.entry((m.key.0, pod.owner.clone())).or_default();
            let cpu = method.cpu_basis.billed(m.cpu, pod.requests.0);
            let memory = method.memory_basis.billed(m.memory, pod.requests.1);
            entry.usage += Usage::of_rates(cpu, memory, u128::from(pod.gpus), secs);
            entry.pods += 1;
        }
        stats.pods_without_metrics = pods.running.values().filter(|p| !p.measured).count() as u64;
        tracing::debug!(cluster = %self.name, window = %window, ?stats, "collected");
        Ok(Collection { window, usage, stats, method })
    }
}
