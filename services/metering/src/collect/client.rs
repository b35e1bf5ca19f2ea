//! The connection to one cluster's API server and its requests.
//!
//! The kube crate's client is built from the kubeconfig text in memory (decision 0021): TLS
//! verified against the kubeconfig's CA, its credentials applied by the client. Requests go out
//! raw (`Client::send`) so every status is handled here: a 429 waits its `Retry-After`, 5xx,
//! timeouts and connection failures are retried with the shared backoff a bounded number of
//! times, a 410 is handed back to the list that sent it ([`super::pages`]), anything else fails
//! the collection with its reason.

use super::limiter::Limiter;
use super::{CollectConfig, CollectError};
use bytes::Bytes;
use hopsbridge_platform::Secret;
use hopsbridge_platform::retry::Backoff;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The longest quiet spell on a watch before it counts as broken: longer than any
/// `timeoutSeconds` metering asks for, and than the API server's bookmark interval.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(600);

/// A connection to one cluster's API server.
pub struct ClusterClient {
    pub(super) name: String,
    client: kube::Client,
    /// The same connection settings with a read timeout long enough for a watch's quiet spells.
    watch_client: kube::Client,
    pub(super) config: CollectConfig,
    limiter: Limiter,
    backoff: Backoff,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient").field("name", &self.name).finish_non_exhaustive()
    }
}

/// What one collection's requests counted.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) api_calls: AtomicU64,
    pub(super) throttled: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) restarts: AtomicU64,
}

/// What one GET came back with, short of success.
pub(super) enum Failure {
    /// 410: the list's continue token expired.
    Gone,
    /// Nothing more to try.
    Fatal(CollectError),
}

/// The `Status` body of an answer that is not a success.
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
        let mut watch_cfg = cfg.clone();
        watch_cfg.read_timeout = Some(WATCH_READ_TIMEOUT);
        cfg.read_timeout = Some(Duration::from_millis(config.request_timeout_ms));
        let client = kube::Client::try_from(cfg).map_err(|e| CollectError::Kubeconfig(e.to_string()))?;
        let watch_client = kube::Client::try_from(watch_cfg).map_err(|e| CollectError::Kubeconfig(e.to_string()))?;
        let limiter = Limiter::new(&config);
        let retries = usize::try_from(config.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        let backoff = Backoff::new(
            Duration::from_millis(config.backoff_initial_ms),
            Duration::from_millis(config.backoff_max_ms),
        )
        .with_max_attempts(retries);
        Ok(Self { name: name.to_owned(), client, watch_client, config, limiter, backoff })
    }

    /// The cluster's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn send_once(&self, path: &str) -> Result<(http::StatusCode, http::HeaderMap, Bytes), kube::Error> {
        let request = http::Request::get(path).body(kube::client::Body::empty()).map_err(kube::Error::HttpError)?;
        let (parts, body) = self.client.send(request).await?.into_parts();
        let bytes = body.collect_bytes().await?;
        Ok((parts.status, parts.headers, bytes))
    }

    /// GETs `path` (with its query) within the cluster's bounds, retrying what can be
    /// retried. A 410 comes back as [`Failure::Gone`].
    pub(super) async fn get(&self, path: &str, what: &str, counters: &Counters) -> Result<Bytes, Failure> {
        let mut failures = 0_u32;
        let mut throttled = 0_u32;
        let mut delays = self.backoff.delays();
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
            let Some(delay) = delays.next() else {
                return Err(Failure::Fatal(CollectError::Exhausted {
                    what: what.to_owned(),
                    attempts: failures,
                    last,
                }));
            };
            counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::info!(cluster = %self.name, what, failures, last, "request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Opens a watch at `path` (with its query) within the cluster's bounds (one request: no
    /// retries, the watcher reconnects): its events as they come, each object as JSON. A 410
    /// comes back as [`Failure::Gone`].
    pub(super) async fn open_watch(
        &self,
        path: &str,
        counters: &Counters,
    ) -> Result<
        impl futures::Stream<Item = Result<kube::core::WatchEvent<serde_json::Value>, kube::Error>> + use<>,
        Failure,
    > {
        let what = format!("WATCH {}", path.split('?').next().unwrap_or(path));
        let Some(permit) = self.limiter.acquire().await else {
            return Err(Failure::Fatal(CollectError::Exhausted {
                what,
                attempts: 0,
                last: "the client was shut down".to_owned(),
            }));
        };
        counters.api_calls.fetch_add(1, Ordering::Relaxed);
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| Failure::Fatal(CollectError::Malformed { what: what.clone(), message: e.to_string() }))?;
        let opened = tokio::time::timeout(
            Duration::from_millis(self.config.request_timeout_ms),
            self.watch_client.request_events::<serde_json::Value>(request),
        )
        .await;
        drop(permit);
        match opened {
            Ok(Ok(events)) => Ok(events),
            Ok(Err(kube::Error::Api(status))) if status.code == 410 => Err(Failure::Gone),
            Ok(Err(kube::Error::Api(status))) if status.code == 429 || status.code >= 500 => {
                Err(Failure::Fatal(CollectError::Exhausted { what, attempts: 1, last: status.message.clone() }))
            }
            Ok(Err(kube::Error::Api(status))) => Err(Failure::Fatal(CollectError::Refused {
                what,
                status: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            })),
            Ok(Err(e)) => match is_tls_failure(&e) {
                Some(message) => Err(Failure::Fatal(CollectError::Tls { what, message })),
                None => Err(Failure::Fatal(CollectError::Exhausted { what, attempts: 1, last: chain(&e) })),
            },
            Err(_) => Err(Failure::Fatal(CollectError::Exhausted {
                what,
                attempts: 1,
                last: format!("no answer within {} ms", self.config.request_timeout_ms),
            })),
        }
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
