//! Each measured cluster's pods kept by a Kubernetes watch (decision 0070): list, then watch
//! from the list's resourceVersion with bookmarks, list again on 410 Expired, reconnect with
//! backoff; every pod's lifetime (uid, owner, GPUs, requests, start, end) is written to
//! Postgres in batches ([`store`]), idempotently, so every replica may watch every cluster.
//!
//! The span of time a watch knew every pod is recorded with it: a window inside one span has
//! every pod's lifetime, and its GPU-seconds and requests come from them
//! ([`crate::collect::readings::integrate`]); other windows are measured as before.
//!
//! A watcher runs per cluster metering measures and stops when the cluster no longer is.

pub mod store;

use crate::access::Provisioning;
use crate::collect::watch::{PodLife, WatchOpenError};
use crate::collect::{ClusterClient, CollectConfig};
use futures::StreamExt as _;
use hopsbridge_domain::ClusterId;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::retry::Backoff;
use kube::core::WatchEvent;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The `watch` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Whether pods are watched at all (off: GPU-seconds and requests from the time readings
    /// cover, as before).
    pub enabled: bool,
    /// `timeoutSeconds` of each watch request; the watch is opened again from its last
    /// resourceVersion when it ends.
    pub timeout_secs: u32,
    /// Longest time (milliseconds) received changes wait before they are written.
    pub flush_ms: u64,
    /// Changes written at once at most.
    pub batch_rows: usize,
    /// First pause after a failed list or watch; doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    /// Longest such pause.
    pub backoff_max_ms: u64,
    /// How often the measured clusters are looked up, to start and stop watchers.
    pub clusters_refresh_ms: u64,
    /// How long (real milliseconds) a window's measurement waits for the watch to have
    /// reached the window's end before it measures without lifetimes.
    pub wait_ms: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout_secs: 290,
            flush_ms: 1000,
            batch_rows: 500,
            backoff_initial_ms: 1000,
            backoff_max_ms: 30_000,
            clusters_refresh_ms: 10_000,
            wait_ms: 2000,
        }
    }
}

impl WatchConfig {
    /// The first invalid value's key (under `watch`) and why.
    #[must_use]
    pub fn invalid(&self) -> Option<(&'static str, &'static str)> {
        if self.timeout_secs == 0 {
            return Some(("watch.timeout_secs", "must be at least 1"));
        }
        if self.flush_ms == 0 || self.batch_rows == 0 || self.clusters_refresh_ms == 0 {
            return Some(("watch.flush_ms", "flush_ms, batch_rows and clusters_refresh_ms must be at least 1"));
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Some(("watch.backoff_max_ms", "backoff_initial_ms must be at least 1 and at most backoff_max_ms"));
        }
        None
    }
}

/// What the watchers of one replica count, for its metrics and logs.
#[derive(Debug, Default)]
pub struct WatchCounters {
    /// Lists and watch requests sent.
    pub api_calls: AtomicU64,
    /// Lists made again after 410 Expired.
    pub relists: AtomicU64,
    /// Pod lifetime rows written (a row written again counts again).
    pub rows_written: AtomicU64,
}

/// The watchers of one replica: one per measured cluster.
#[derive(Clone)]
pub struct Watchers {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    clock: Clock,
    provisioning: Provisioning,
    collect: CollectConfig,
    config: WatchConfig,
    replica: String,
    counters: Arc<WatchCounters>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers").field("replica", &self.inner.replica).finish_non_exhaustive()
    }
}

/// Why one watcher's pass ended.
enum Ended {
    /// Stop: cancelled.
    Stopped,
    /// 410 Expired: list again.
    Expired,
    /// A failure: pause, then watch again from the last resourceVersion.
    Failed(String),
    /// The watch ended cleanly: watch again at once.
    TimedOut,
}

impl Watchers {
    /// The watchers of replica `replica`, reaching clusters with what `provisioning` answers.
    #[must_use]
    pub fn new(
        (db, clock): (Database, Clock),
        provisioning: Provisioning,
        collect: CollectConfig,
        config: WatchConfig,
        replica: String,
    ) -> Self {
        let counters = Arc::new(WatchCounters::default());
        Self { inner: Arc::new(Inner { db, clock, provisioning, collect, config, replica, counters }) }
    }

    /// What the watchers have counted so far.
    #[must_use]
    pub fn counters(&self) -> Arc<WatchCounters> {
        Arc::clone(&self.inner.counters)
    }

    /// Watches every measured cluster until `cancel` fires, starting and stopping watchers as
    /// clusters come and go.
    pub async fn run(self, cancel: CancellationToken) {
        let mut running: HashMap<ClusterId, CancellationToken> = HashMap::new();
        let mut tasks = JoinSet::new();
        let refresh = Duration::from_millis(self.inner.config.clusters_refresh_ms);
        loop {
            while tasks.try_join_next().is_some() {}
            match self.measured().await {
                Ok(clusters) => {
                    running.retain(|cluster, stop| {
                        let keep = clusters.contains(cluster);
                        if !keep {
                            tracing::info!(cluster_id = %cluster, "cluster no longer measured; its pod watch stops");
                            stop.cancel();
                        }
                        keep
                    });
                    for cluster in clusters {
                        if running.contains_key(&cluster) {
                            continue;
                        }
                        let stop = cancel.child_token();
                        running.insert(cluster, stop.clone());
                        let watchers = self.clone();
                        tasks.spawn(async move { watchers.watch(cluster, stop).await });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not look up the measured clusters to watch"),
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(refresh) => {}
            }
        }
        tasks.shutdown().await;
    }

    async fn measured(&self) -> Result<Vec<ClusterId>, DbError> {
        let mut conn = self.inner.db.conn().await?;
        Ok(store::measured_clusters(&mut conn).await?)
    }

    async fn connect(&self, cluster: ClusterId) -> Result<ClusterClient, String> {
        let kubeconfig = self.inner.provisioning.kubeconfig(cluster).await.map_err(|e| e.to_string())?;
        ClusterClient::connect(&cluster.to_string(), &kubeconfig, self.inner.collect.clone())
            .await
            .map_err(|e| e.to_string())
    }

    /// One cluster's watch, until `stop` fires, through a client built from the kubeconfig
    /// provisioning answers (built again after a failure).
    async fn watch(&self, cluster: ClusterId, stop: CancellationToken) {
        self.watch_from(cluster, None, stop).await;
    }

    /// One cluster's watch through `client`, until `stop` fires (for callers that hold the
    /// cluster's client, such as tests).
    pub async fn watch_with(&self, cluster: ClusterId, client: ClusterClient, stop: CancellationToken) {
        self.watch_from(cluster, Some(client), stop).await;
    }

    async fn watch_from(&self, cluster: ClusterId, given: Option<ClusterClient>, stop: CancellationToken) {
        let c = &self.inner.config;
        let backoff =
            Backoff::new(Duration::from_millis(c.backoff_initial_ms), Duration::from_millis(c.backoff_max_ms));
        let mut failures = 0_u32;
        let reconnect = given.is_none();
        let mut client: Option<ClusterClient> = given;
        // The span being extended and the resourceVersion its writes reached: the latest span
        // when the watcher starts (a restarted replica continues it if the server still can).
        let mut span = match self.inner.db.conn().await {
            Ok(mut conn) => store::latest_span(&mut conn, cluster).await.unwrap_or(None),
            Err(_) => None,
        };
        loop {
            if failures > 0 {
                let pause = backoff.delay(failures.saturating_sub(1).min(16));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            if stop.is_cancelled() {
                return;
            }
            if client.is_none() {
                match self.connect(cluster).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(cluster_id = %cluster, error = %e, "pod watch cannot reach the cluster");
                        continue;
                    }
                }
            }
            let Some(cl) = client.as_ref() else { continue };
            let current = match span.clone() {
                Some(s) => s,
                None => match self.list(cl, cluster).await {
                    Ok(s) => s,
                    Err(e) => {
                        failures += 1;
                        if reconnect {
                            client = None;
                        }
                        tracing::warn!(cluster_id = %cluster, error = %e, "pod list failed; trying again");
                        continue;
                    }
                },
            };
            span = Some(current.clone());
            match self.follow(cl, cluster, current, &stop, &mut span).await {
                Ended::Stopped => return,
                Ended::Expired => {
                    self.inner.counters.relists.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(cluster_id = %cluster, "pod watch expired (410); listing again");
                    span = None;
                    failures = 0;
                }
                Ended::TimedOut => failures = 0,
                Ended::Failed(e) => {
                    failures += 1;
                    if reconnect {
                        client = None;
                    }
                    tracing::warn!(cluster_id = %cluster, error = %e, "pod watch failed; watching again");
                }
            }
        }
    }

    /// Lists every pod, writes their lifetimes (ending those no longer listed) and starts a
    /// span at the list.
    async fn list(&self, client: &ClusterClient, cluster: ClusterId) -> Result<store::Span, String> {
        let sent = self.inner.clock.now();
        let lives = client.list_pod_lives().await.map_err(|e| e.to_string())?;
        self.inner.counters.api_calls.fetch_add(lives.api_calls, Ordering::Relaxed);
        let listed = self.inner.clock.now();
        let span = store::Span { from: listed, through: listed, resource_version: lives.resource_version };
        let (pods, replica, s) = (Arc::new(lives.pods), self.inner.replica.clone(), span.clone());
        let rows = pods.len() as u64;
        self.inner
            .db
            .transaction(|c| {
                let (pods, replica, s) = (Arc::clone(&pods), replica.clone(), s.clone());
                Box::pin(async move {
                    store::relisted(c, cluster, &replica, (sent, &s), &pods).await?;
                    Ok::<_, DbError>(())
                })
            })
            .await
            .map_err(|e| e.to_string())?;
        self.inner.counters.rows_written.fetch_add(rows, Ordering::Relaxed);
        Ok(span)
    }

    /// Writes `batch` and moves the span on to `through` at `resource_version`.
    async fn flush(
        &self,
        cluster: ClusterId,
        batch: &mut HashMap<String, PodLife>,
        span: &store::Span,
    ) -> Result<(), DbError> {
        let pods: Arc<Vec<PodLife>> = Arc::new(batch.drain().map(|(_, p)| p).collect());
        let rows = pods.len() as u64;
        let s = Arc::new(span.clone());
        self.inner
            .db
            .transaction(|c| {
                let (pods, s) = (Arc::clone(&pods), Arc::clone(&s));
                Box::pin(async move {
                    store::upsert(c, cluster, &pods).await?;
                    store::extend(c, cluster, &s).await?;
                    Ok::<_, DbError>(())
                })
            })
            .await?;
        self.inner.counters.rows_written.fetch_add(rows, Ordering::Relaxed);
        Ok(())
    }

    /// Follows one watch request from `span`'s resourceVersion, writing what it receives.
    async fn follow(
        &self,
        client: &ClusterClient,
        cluster: ClusterId,
        mut current: store::Span,
        stop: &CancellationToken,
        out: &mut Option<store::Span>,
    ) -> Ended {
        let c = &self.inner.config;
        let label_key = self.inner.collect.label_key.as_str();
        let mut events =
            match client.watch_pods(&current.resource_version, c.timeout_secs, &self.inner.counters.api_calls).await {
                Ok(events) => events,
                Err(WatchOpenError::Expired) => return Ended::Expired,
                Err(WatchOpenError::Failed(e)) => return Ended::Failed(e.to_string()),
            };
        let mut batch: HashMap<String, PodLife> = HashMap::new();
        let flush_every = Duration::from_millis(c.flush_ms);
        let mut flush_at = tokio::time::Instant::now() + flush_every;
        loop {
            let mut flush_now = false;
            let step = tokio::select! {
                () = stop.cancelled() => Some(Ended::Stopped),
                () = tokio::time::sleep_until(flush_at) => { flush_now = true; None }
                next = events.next() => {
                    let now = self.inner.clock.now();
                    match next {
                        Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => match crate::collect::watch::pod_of(&o, label_key) {
                            Ok(pod) => {
                                current.resource_version.clone_from(&pod.resource_version);
                                merge(&mut batch, pod);
                                current.through = now;
                                None
                            }
                            Err(e) => Some(Ended::Failed(e.to_string())),
                        },
                        Some(Ok(WatchEvent::Deleted(o))) => match crate::collect::watch::pod_of(&o, label_key) {
                            Ok(mut pod) => {
                                current.resource_version.clone_from(&pod.resource_version);
                                // Its end: its containers' finish, else its deletion.
                                pod.ended_at = pod.ended_at.or(pod.deletion_at).or(Some(now));
                                merge(&mut batch, pod);
                                current.through = now;
                                None
                            }
                            Err(e) => Some(Ended::Failed(e.to_string())),
                        },
                        Some(Ok(WatchEvent::Bookmark(b))) => {
                            current.resource_version = b.metadata.resource_version;
                            current.through = now;
                            flush_now = true;
                            None
                        }
                        Some(Ok(WatchEvent::Error(status))) if status.code == 410 => Some(Ended::Expired),
                        Some(Ok(WatchEvent::Error(status))) => Some(Ended::Failed(format!("{} {}: {}", status.code, status.reason, status.message))),
                        Some(Err(e)) => Some(Ended::Failed(e.to_string())),
                        None => {
                            current.through = now;
                            Some(Ended::TimedOut)
                        }
                    }
                }
            };
            if flush_now || step.is_some() || batch.len() >= c.batch_rows {
                if let Err(e) = self.flush(cluster, &mut batch, &current).await {
                    return Ended::Failed(format!("writing pod lifetimes: {e}"));
                }
                *out = Some(current.clone());
                flush_at = tokio::time::Instant::now() + flush_every;
            }
            if let Some(ended) = step {
                return ended;
            }
        }
    }
}

/// The lifetimes of `cluster`'s pods in `window` when the watch is on and one span covers the
/// window whole (waiting up to `wait_ms` for a watch that began by the window's start to reach
/// its end); `None` otherwise, or when Postgres fails, and the window is measured without them.
pub async fn lifetimes_for(
    db: &Database,
    config: &WatchConfig,
    cluster: ClusterId,
    window: crate::window::Window,
) -> Option<Vec<crate::collect::readings::Lifetime>> {
    if !config.enabled {
        return None;
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(config.wait_ms);
    loop {
        let mut conn = db.conn().await.ok()?;
        match store::covers(&mut conn, cluster, window).await {
            Ok((_, true)) => return store::in_window(&mut conn, cluster, window).await.ok(),
            Ok((true, false)) if tokio::time::Instant::now() < until => {}
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(cluster_id = %cluster, error = %e, "pod lifetimes unreadable; measured without them");
                return None;
            }
        }
        drop(conn);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Adds `pod` to the batch, keeping the earliest start and end known for its uid.
fn merge(batch: &mut HashMap<String, PodLife>, pod: PodLife) {
    match batch.get_mut(&pod.uid) {
        Some(known) => {
            let started_at = earliest(known.started_at, pod.started_at);
            let ended_at = earliest(known.ended_at, pod.ended_at);
            *known = PodLife { started_at, ended_at, ..pod };
        }
        None => {
            batch.insert(pod.uid.clone(), pod);
        }
    }
}

fn earliest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
