//! Collecting one cluster's usage for one window: PodMetrics and pods listed across all
//! namespaces by label, page by page, joined on (namespace, name) and aggregated per
//! (namespace, owner) as exact integers.
//!
//! The cluster is reached with the kube crate's client built from the kubeconfig text in
//! memory (decision 0021): TLS verified against the kubeconfig's CA, its credentials applied
//! by the client. Requests go out raw (`Client::send`) so every status is handled here: a 410
//! on a continue token restarts that list, a 429 waits its `Retry-After`, 5xx and connection
//! failures are retried with exponential backoff a bounded number of times, anything else fails
//! the collection with its reason. Requests to one cluster share a concurrency bound and a
//! minimum spacing (the rate bound); nothing is shared between clusters.

use crate::quantity::{self, QuantityError};
use crate::usage::Usage;
use crate::window::Window;
use bytes::Bytes;
use hopsbridge_contracts::Service;
use hopsbridge_platform::Secret;
use hopsbridge_platform::config::ConfigError;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// The PodMetrics list, across all namespaces.
pub const METRICS_PATH: &str = "/apis/metrics.k8s.io/v1beta1/pods";
/// The pod list, across all namespaces.
pub const PODS_PATH: &str = "/api/v1/pods";
/// The extended resource GPUs are requested as.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

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
    /// First backoff after such a failure; doubles each time.
    pub backoff_initial_ms: u64,
    /// Longest backoff.
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
    /// Running pods with an owner and metrics: the ones aggregated.
    pub pods_measured: u64,
    /// Running pods with an owner but no PodMetrics (skipped).
    pub pods_without_metrics: u64,
    /// Running pods whose owner label is empty (skipped).
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
}

impl Collection {
    /// The sum over every (namespace, owner).
    #[must_use]
    pub fn total(&self) -> Usage {
        self.usage.values().fold(Usage::default(), |acc, u| acc + u.usage)
    }
}

/// Bounds on one cluster's requests: at most `max_concurrency` in flight, starts at
/// `requests_per_second` on average with bursts of up to `burst` (a token bucket kept as its
/// theoretical arrival time, GCRA, in integer time), and a cluster-wide pause after a 429.
#[derive(Debug)]
struct Limiter {
    permits: Semaphore,
    interval: Duration,
    tolerance: Duration,
    /// When the bucket would be full again if no request came.
    tat: Mutex<Instant>,
}

impl Limiter {
    fn new(config: &CollectConfig) -> Self {
        let interval = Duration::from_secs(1) / config.requests_per_second.max(1);
        Self {
            permits: Semaphore::new(usize::try_from(config.max_concurrency).unwrap_or(1).max(1)),
            interval,
            tolerance: interval * config.burst.max(1).saturating_sub(1),
            tat: Mutex::new(Instant::now()),
        }
    }

    async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        let permit = self.permits.acquire().await.ok()?;
        let at = {
            let mut tat = self.tat.lock().await;
            let now = Instant::now();
            let at = now.max(tat.checked_sub(self.tolerance).unwrap_or(now));
            *tat = (*tat).max(at) + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
        Some(permit)
    }

    /// No request starts before `until`.
    async fn pause_until(&self, until: Instant) {
        let mut tat = self.tat.lock().await;
        *tat = (*tat).max(until + self.tolerance);
    }
}

#[derive(Default)]
struct Counters {
    api_calls: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    restarts: AtomicU64,
}

/// What one GET came back with, short of success.
enum Failure {
    Gone,
    Fatal(CollectError),
}

/// A connection to one cluster's API server.
pub struct ClusterClient {
    name: String,
    client: kube::Client,
    config: CollectConfig,
    limiter: Limiter,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient").field("name", &self.name).finish_non_exhaustive()
    }
}

// The list items, borrowing their strings from the page's bytes where JSON allows (no
// escapes), so a page costs few allocations.

#[derive(Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
    #[serde(default)]
    metadata: ListMeta,
}

#[derive(Default, Deserialize)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

type Text<'a> = Cow<'a, str>;
type Map<'a> = HashMap<Text<'a>, Text<'a>>;

#[derive(Deserialize)]
struct ObjectMeta<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    namespace: Text<'a>,
    #[serde(default, borrow)]
    labels: Option<Map<'a>>,
}

#[derive(Deserialize)]
struct PodItem<'a> {
    #[serde(borrow)]
    metadata: ObjectMeta<'a>,
    #[serde(default, borrow)]
    spec: Option<PodSpec<'a>>,
    #[serde(default, borrow)]
    status: Option<PodStatus<'a>>,
}

#[derive(Deserialize)]
struct PodSpec<'a> {
    #[serde(default, borrow)]
    containers: Vec<Container<'a>>,
}

#[derive(Deserialize)]
struct Container<'a> {
    #[serde(default, borrow)]
    resources: Option<Resources<'a>>,
}

#[derive(Deserialize)]
struct Resources<'a> {
    #[serde(default, borrow)]
    requests: Option<Gpus<'a>>,
    #[serde(default, borrow)]
    limits: Option<Gpus<'a>>,
}

/// The one resource of requests or limits metering reads; the others are skipped unread.
#[derive(Deserialize)]
struct Gpus<'a> {
    #[serde(default, borrow, rename = "nvidia.com/gpu")]
    gpu: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct PodStatus<'a> {
    #[serde(default, borrow)]
    phase: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct MetricsItem<'a> {
    #[serde(borrow)]
    metadata: ObjectMeta<'a>,
    #[serde(default, borrow)]
    containers: Vec<ContainerUsage<'a>>,
}

#[derive(Deserialize)]
struct ContainerUsage<'a> {
    #[serde(default, borrow)]
    usage: UsageQuantities<'a>,
}

#[derive(Default, Deserialize)]
struct UsageQuantities<'a> {
    #[serde(default, borrow)]
    cpu: Option<Text<'a>>,
    #[serde(default, borrow)]
    memory: Option<Text<'a>>,
}

fn decode<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<List<T>, CollectError> {
    serde_json::from_slice(body).map_err(|e| CollectError::Malformed { what: what.to_owned(), message: e.to_string() })
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Option<StatusDetails>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusDetails {
    #[serde(default)]
    retry_after_seconds: Option<u64>,
}

/// The pod list folded: Running pods with an owner, and counts.
#[derive(Debug, Default)]
struct PodFold {
    running: HashMap<(String, String), RunningPod>,
    listed: u64,
    running_count: u64,
    without_owner: u64,
    duplicates: u64,
}

/// One PodMetrics item reduced to its sums.
struct Measured {
    key: (String, String),
    cpu: u128,
    memory: u128,
}

/// A running pod's owner and GPUs.
#[derive(Debug)]
struct RunningPod {
    owner: String,
    gpus: u64,
    measured: bool,
}

fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if text.contains("certificate") || text.contains("UnknownIssuer") || text.contains("tls handshake") {
            return Some(text);
        }
        cur = e.source();
    }
    None
}

fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

impl ClusterClient {
    /// A client for cluster `name` from its kubeconfig (YAML, current context), which stays in
    /// memory. Refuses a kubeconfig that turns TLS verification off.
    ///
    /// # Errors
    /// [`CollectError::Kubeconfig`] when the text is not a usable kubeconfig.
    pub async fn connect(name: &str, kubeconfig: &Secret<String>, config: CollectConfig) -> Result<Self, CollectError> {
        // The YAML parser's messages can quote the document, which holds credentials.
        let kc = Kubeconfig::from_yaml(kubeconfig.expose())
            .map_err(|_| CollectError::Kubeconfig("not a kubeconfig document (YAML)".to_owned()))?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| CollectError::Kubeconfig(e.to_string()))?;
        if cfg.accept_invalid_certs {
            return Err(CollectError::Kubeconfig(
                "insecure-skip-tls-verify is set; metering verifies every cluster's certificate".to_owned(),
            ));
        }
        cfg.default_retry = false;
        cfg.read_timeout = Some(Duration::from_millis(config.request_timeout_ms));
        let client = kube::Client::try_from(cfg).map_err(|e| CollectError::Kubeconfig(e.to_string()))?;
        let limiter = Limiter::new(&config);
        Ok(Self { name: name.to_owned(), client, config, limiter })
    }

    /// The cluster's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1_u64.checked_shl(failures.saturating_sub(1)).unwrap_or(u64::MAX);
        Duration::from_millis(self.config.backoff_initial_ms.saturating_mul(factor).min(self.config.backoff_max_ms))
    }

    async fn send_once(&self, path: &str) -> Result<(http::StatusCode, http::HeaderMap, Bytes), kube::Error> {
        let request = http::Request::get(path).body(kube::client::Body::empty()).map_err(kube::Error::HttpError)?;
        let (parts, body) = self.client.send(request).await?.into_parts();
        let bytes = body.collect_bytes().await?;
        Ok((parts.status, parts.headers, bytes))
    }

    /// GETs `path` (with its query) within the cluster's bounds, retrying what can be
    /// retried. A 410 comes back as [`Failure::Gone`].
    async fn get(&self, path: &str, what: &str, counters: &Counters) -> Result<Bytes, Failure> {
        let mut failures = 0_u32;
        let mut throttled = 0_u32;
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        loop {
            let Some(permit) = self.limiter.acquire().await else {
                return Err(Failure::Fatal(CollectError::Exhausted {
                    what: what.to_owned(),
                    attempts: failures,
                    last: "the client was shut down".to_owned(),
                }));
            };
            counters.api_calls.fetch_add(1, Ordering::Relaxed);
            let outcome = tokio::time::timeout(timeout, self.send_once(path)).await;
            drop(permit);
            let last = match outcome {
                Ok(Ok((status, _, body))) if status.is_success() => return Ok(body),
                Ok(Ok((status, headers, body))) => {
                    let parsed: Option<Status> = serde_json::from_slice(&body).ok();
                    let (reason, message) =
                        parsed.as_ref().map_or_else(Default::default, |s| (s.reason.clone(), s.message.clone()));
                    if status == http::StatusCode::GONE {
                        return Err(Failure::Gone);
                    }
                    if status == http::StatusCode::TOO_MANY_REQUESTS {
                        throttled += 1;
                        counters.throttled.fetch_add(1, Ordering::Relaxed);
                        let secs = headers
                            .get(http::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .or_else(|| parsed.and_then(|s| s.details).and_then(|d| d.retry_after_seconds))
                            .unwrap_or(1);
                        let wait = Duration::from_secs(secs);
                        if throttled > self.config.max_throttled
                            || wait > Duration::from_millis(self.config.max_retry_after_ms)
                        {
                            return Err(Failure::Fatal(CollectError::Throttled {
                                what: what.to_owned(),
                                times: throttled,
                                retry_after_secs: secs,
                            }));
                        }
                        tracing::info!(cluster = %self.name, what, retry_after_secs = secs, "throttled; waiting");
                        self.limiter.pause_until(Instant::now() + wait).await;
                        continue;
                    }
                    if !status.is_server_error() {
                        return Err(Failure::Fatal(CollectError::Refused {
                            what: what.to_owned(),
                            status: status.as_u16(),
                            reason,
                            message,
                        }));
                    }
                    format!("{} {reason}: {message}", status.as_u16())
                }
                Ok(Err(e)) => {
                    if let Some(message) = is_tls_failure(&e) {
                        return Err(Failure::Fatal(CollectError::Tls { what: what.to_owned(), message }));
                    }
                    chain(&e)
                }
                Err(_) => format!("no answer within {} ms", self.config.request_timeout_ms),
            };
            failures += 1;
            if failures >= self.config.max_attempts {
                return Err(Failure::Fatal(CollectError::Exhausted {
                    what: what.to_owned(),
                    attempts: failures,
                    last,
                }));
            }
            counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::info!(cluster = %self.name, what, failures, last, "request failed; retrying");
            tokio::time::sleep(self.backoff(failures)).await;
        }
    }

    /// Folds every page of the list at `path` (owner label selector) into a fresh `S` with
    /// `fold`, which returns the page's continue token; when a continue token has expired the
    /// list starts again from a fresh `S`, so no item counts twice.
    async fn list_all<S>(
        &self,
        path: &str,
        counters: &Counters,
        fresh: impl Fn() -> S,
        mut fold: impl FnMut(&mut S, &str, &[u8]) -> Result<Option<String>, CollectError>,
    ) -> Result<S, CollectError> {
        let what = format!("GET {path}");
        let mut restarts = 0_u32;
        'restart: loop {
            let mut state = fresh();
            let mut token: Option<String> = None;
            loop {
                let mut query = vec![
                    ("labelSelector", self.config.label_key.clone()),
                    ("limit", self.config.page_size.to_string()),
                ];
                if let Some(t) = &token {
                    query.push(("continue", t.clone()));
                }
                let query = serde_urlencoded::to_string(&query)
                    .map_err(|e| CollectError::Malformed { what: what.clone(), message: e.to_string() })?;
                let body = match self.get(&format!("{path}?{query}"), &what, counters).await {
                    Ok(body) => body,
                    Err(Failure::Gone) if token.is_some() => {
                        restarts += 1;
                        counters.restarts.fetch_add(1, Ordering::Relaxed);
                        if restarts > self.config.max_restarts {
                            return Err(CollectError::Expired { what, restarts: restarts - 1 });
                        }
                        tracing::info!(cluster = %self.name, what, restarts, "continue token expired; listing again");
                        continue 'restart;
                    }
                    Err(Failure::Gone) => {
                        return Err(CollectError::Refused {
                            what,
                            status: 410,
                            reason: "Gone".to_owned(),
                            message: "410 without a continue token".to_owned(),
                        });
                    }
                    Err(Failure::Fatal(e)) => return Err(e),
                };
                match fold(&mut state, &what, &body)? {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => return Ok(state),
                }
            }
        }
    }

    /// The usage of `window`: both lists read now, each pod's current rate held for the
    /// window's length. Only Running pods with a non-empty owner label and PodMetrics count.
    ///
    /// # Errors
    /// The first failure that retries could not overcome; nothing partial is returned.
    pub async fn collect(&self, window: Window) -> Result<Collection, CollectError> {
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
            entry.usage += Usage::of_rates(m.cpu, m.memory, u128::from(pod.gpus), secs);
            entry.pods += 1;
        }
        stats.pods_without_metrics = pods.running.values().filter(|p| !p.measured).count() as u64;
        tracing::debug!(cluster = %self.name, window = %window, ?stats, "collected");
        Ok(Collection { window, usage, stats })
    }

    /// GETs one path within this cluster's bounds and retries (for callers outside the
    /// collection, such as the benchmark's per-pod baseline); a 410 is refused like any 4xx.
    ///
    /// # Errors
    /// As for a collection's requests.
    pub async fn get_raw(&self, path: &str, api_calls: &AtomicU64) -> Result<Bytes, CollectError> {
        let counters = Counters::default();
        let out = self.get(path, &format!("GET {path}"), &counters).await;
        api_calls.fetch_add(counters.api_calls.load(Ordering::Relaxed), Ordering::Relaxed);
        out.map_err(|f| match f {
            Failure::Fatal(e) => e,
            Failure::Gone => CollectError::Refused {
                what: format!("GET {path}"),
                status: 410,
                reason: "Gone".to_owned(),
                message: String::new(),
            },
        })
    }
}

/// Folds one page of the pod list: Running pods with a non-empty `label_key` label, with
/// their GPUs; returns the continue token.
fn fold_pods(acc: &mut PodFold, label_key: &str, what: &str, body: &[u8]) -> Result<Option<String>, CollectError> {
    let page: List<PodItem<'_>> = decode(what, body)?;
    for pod in page.items {
        acc.listed += 1;
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
            continue;
        }
        acc.running_count += 1;
        let owner = pod.metadata.labels.as_ref().and_then(|l| l.get(label_key)).filter(|o| !o.is_empty());
        let Some(owner) = owner.map(|o| o.clone().into_owned()) else {
            acc.without_owner += 1;
            continue;
        };
        let gpus = gpus_of(&pod)?;
        let key = (pod.metadata.namespace.into_owned(), pod.metadata.name.into_owned());
        if acc.running.insert(key, RunningPod { owner, gpus, measured: false }).is_some() {
            acc.duplicates += 1;
        }
    }
    Ok(page.metadata.continue_)
}

/// Folds one page of the PodMetrics list into (pod, CPU nanocores, bytes); returns the
/// continue token.
fn fold_metrics(acc: &mut Vec<Measured>, what: &str, body: &[u8]) -> Result<Option<String>, CollectError> {
    let page: List<MetricsItem<'_>> = decode(what, body)?;
    for m in page.items {
        let (mut cpu, mut memory) = (0_u128, 0_u128);
        for c in &m.containers {
            let q = |resource: &str| {
                let text = if resource == "cpu" { &c.usage.cpu } else { &c.usage.memory };
                let text = text.as_deref().unwrap_or("");
                let parsed =
                    if resource == "cpu" { quantity::cpu_nanocores(text) } else { quantity::memory_bytes(text) };
                parsed.map_err(|source| CollectError::Quantity {
                    namespace: m.metadata.namespace.clone().into_owned(),
                    name: m.metadata.name.clone().into_owned(),
                    source,
                })
            };
            cpu = cpu.saturating_add(q("cpu")?);
            memory = memory.saturating_add(q("memory")?);
        }
        let key = (m.metadata.namespace.into_owned(), m.metadata.name.into_owned());
        acc.push(Measured { key, cpu, memory });
    }
    Ok(page.metadata.continue_)
}

/// GPUs a pod holds: per container, its `nvidia.com/gpu` request, or its limit when no request
/// is given (Kubernetes then sets the request to the limit).
fn gpus_of(pod: &PodItem<'_>) -> Result<u64, CollectError> {
    let mut total = 0_u64;
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let Some(r) = &c.resources else { continue };
        let text =
            r.requests.as_ref().and_then(|m| m.gpu.as_ref()).or_else(|| r.limits.as_ref().and_then(|m| m.gpu.as_ref()));
        if let Some(text) = text {
            let n = quantity::count(text).map_err(|source| CollectError::Quantity {
                namespace: pod.metadata.namespace.clone().into_owned(),
                name: pod.metadata.name.clone().into_owned(),
                source,
            })?;
            total = total.saturating_add(n);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn pods_page(items: &str) -> Result<(PodFold, Option<String>), CollectError> {
        let mut acc = PodFold::default();
        let body = format!(r#"{{"kind":"PodList","items":[{items}],"metadata":{{"continue":"next"}}}}"#);
        let token = fold_pods(&mut acc, "owner", "GET /api/v1/pods", body.as_bytes())?;
        Ok((acc, token))
    }

    fn pod_json(name: &str, owner: &str, phase: &str, resources: &str) -> String {
        format!(
            r#"{{"metadata":{{"name":"{name}","namespace":"ns","labels":{{"owner":"{owner}"}}}},
                "spec":{{"containers":[{{"name":"main","resources":{resources}}}]}},"status":{{"phase":"{phase}"}}}}"#
        )
    }

    #[test]
    fn a_pods_page_keeps_running_owned_pods_with_their_gpus() {
        let items = [
            pod_json("a", "alice", "Running", r#"{"requests":{"nvidia.com/gpu":"2"},"limits":{"nvidia.com/gpu":"2"}}"#),
            pod_json("b", "bob", "Running", r#"{"limits":{"nvidia.com/gpu":"1"}}"#),
            pod_json("c", "carol", "Pending", "{}"),
            pod_json("d", "", "Running", "{}"),
            pod_json("e\\u0065", "\\u0065ve", "Running", "{}"),
            r#"{"metadata":{"name":"f","namespace":"ns"},"status":{"phase":"Running"}}"#.to_owned(),
        ]
        .join(",");
        let (acc, token) = pods_page(&items).unwrap();
        assert_eq!(token.as_deref(), Some("next"));
        assert_eq!((acc.listed, acc.running_count, acc.without_owner), (6, 5, 2));
        let get = |n: &str| acc.running.get(&("ns".to_owned(), n.to_owned())).map(|p| (p.owner.as_str(), p.gpus));
        assert_eq!(get("a"), Some(("alice", 2)));
        assert_eq!(get("b"), Some(("bob", 1)), "a limit alone is the request");
        assert_eq!(get("c"), None);
        assert_eq!(get("ee"), Some(("eve", 0)), "escaped strings are decoded");
    }

    #[test]
    fn a_bad_gpu_count_or_a_bad_page_is_an_error_naming_it() {
        let bad = pod_json("a", "alice", "Running", r#"{"requests":{"nvidia.com/gpu":"half"}}"#);
        let err = pods_page(&bad).unwrap_err();
        assert_eq!(err.reason(), "malformed_quantity");
        assert_eq!(err.to_string(), "pod ns/a: invalid quantity \"half\": not a Kubernetes quantity");
        let err = fold_pods(&mut PodFold::default(), "owner", "GET /api/v1/pods", b"<html>").unwrap_err();
        assert_eq!(err.reason(), "malformed_answer");
        assert!(err.to_string().starts_with("GET /api/v1/pods: unreadable answer"), "{err}");
    }

    #[test]
    fn a_metrics_page_sums_containers_and_refuses_a_bad_quantity() {
        let body = br#"{"kind":"PodMetricsList","items":[
            {"metadata":{"name":"a","namespace":"ns"},"timestamp":"2027-01-01T06:00:00Z","window":"15s",
             "containers":[{"name":"x","usage":{"cpu":"250m","memory":"1Gi"}},{"name":"y","usage":{"cpu":"1500000n","memory":"129e6"}}]}
        ],"metadata":{}}"#;
        let mut acc = Vec::new();
        assert_eq!(fold_metrics(&mut acc, "GET m", body).unwrap(), None);
        assert_eq!(acc.len(), 1);
        assert_eq!((acc[0].cpu, acc[0].memory), (251_500_000, (1 << 30) + 129_000_000));
        for usage in [r#"{"cpu":"1.5.0","memory":"1Gi"}"#, r#"{"cpu":"1","memory":"-5Mi"}"#, r#"{"memory":"1Gi"}"#] {
            let body = format!(
                r#"{{"items":[{{"metadata":{{"name":"a","namespace":"ns"}},"containers":[{{"name":"x","usage":{usage}}}]}}]}}"#
            );
            let err = fold_metrics(&mut Vec::new(), "GET m", body.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), "malformed_quantity", "{usage}");
            assert!(err.to_string().starts_with("pod ns/a: invalid quantity"), "{err}");
        }
    }

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
