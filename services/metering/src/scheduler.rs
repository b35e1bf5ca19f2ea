//! The metering loop of one replica: schedule the windows that have ended, make gaps of the
//! ones that can no longer be measured, lease due runs and collect each on its own task.
//!
//! Windows, deadlines and sweeps run on the calendar clock (which tests move through the
//! sandbox's); the tick, leases, retries and the collection's time budget on real time.
//!
//! Each claimed run is collected on a task of its own, at most `clusters_in_flight` at once,
//! so a slow or failing cluster holds up nobody else; a collection is cut off before its lease
//! runs out. Stopping cancels the collections in hand and gives their runs back at once.

use crate::access::{AccessError, Provisioning};
use crate::collect::readings::{self, Reading};
use crate::collect::{ClusterClient, CollectConfig, CollectError, CollectStats, Collection, Source};
use crate::config::ScheduleConfig;
use crate::gaps;
use crate::projection;
use crate::reading_runs::{self, Read};
use crate::runs::{self, Claimed, RetryAt, Sources, Timing};
use crate::samples::StoreError;
use crate::window::{Window, WindowLength};
use hopsbridge_domain::ClusterId;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::retry::Backoff;
use moka::future::Cache;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type Tx<T> = Result<T, DbError>;

/// Seconds kept between the end of a collection's time budget and its lease's end (at most a
/// third of the lease).
const LEASE_MARGIN_SECS: u64 = 5;

/// The collections one replica runs at once: point runs (each a few requests) and readings
/// runs (each reading for a whole window, mostly asleep).
struct Slots {
    point: Arc<Semaphore>,
    readings: Arc<Semaphore>,
}

/// A run in a task's hands until the task ends, however it ends.
struct InHand<'a> {
    meter: &'a Meter,
    key: (ClusterId, i64),
}

impl Drop for InHand<'_> {
    fn drop(&mut self) {
        self.meter.inner.in_hand.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.key);
    }
}

/// How a readings run ended short of a failure.
enum ReadingsEnd {
    /// Measured and stored (or found no longer ours when storing).
    Done,
    /// Its lease was taken over by another replica: it stopped reading.
    NotOurs,
    /// Nothing was read while its window ran (metering was down): it is measured by point.
    Unread,
}

/// Why a run failed: a stable code and a message without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable snake_case code (a gap's reason).
    pub code: &'static str,
    /// What happened.
    pub message: String,
}

impl From<CollectError> for Failure {
    fn from(e: CollectError) -> Self {
        Self { code: e.reason(), message: e.to_string() }
    }
}

impl From<AccessError> for Failure {
    fn from(e: AccessError) -> Self {
        Self { code: e.reason(), message: e.to_string() }
    }
}

/// One replica's metering loop.
#[derive(Clone)]
pub struct Meter {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    provisioning: Provisioning,
    collect: CollectConfig,
    schedule: ScheduleConfig,
    window: WindowLength,
    replica: String,
    wake: Arc<Notify>,
    /// Calendar time.
    clock: Clock,
    /// Each cluster's client, built from a kubeconfig asked of provisioning at most every
    /// `access_ttl_secs`; concurrent runs of one cluster share one request.
    clients: Cache<ClusterId, Arc<ClusterClient>>,
    /// The pause before a failed run's next try.
    retries: Backoff,
    /// The gap policy's estimates (decision 0069).
    estimator: Option<gaps::Estimator>,
    /// The runs this replica's tasks are measuring: a run claimed again while in hand (its
    /// lease had run out and nobody else took it) goes on in the task that has it.
    in_hand: std::sync::Mutex<HashSet<(ClusterId, i64)>>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").field("replica", &self.inner.replica).finish_non_exhaustive()
    }
}

impl Meter {
    /// A loop over `db`, reaching clusters with what `provisioning` answers, on calendar time
    /// `clock`; woken early through `wake`.
    #[must_use]
    pub fn new(
        (db, clock): (Database, Clock),
        provisioning: Provisioning,
        collect: CollectConfig,
        schedule: ScheduleConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let window = WindowLength::new(schedule.window_secs).unwrap_or_default();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "metering".to_owned());
        let replica = format!("{host}-{}", Uuid::new_v4().simple());
        let clients = Cache::builder().time_to_live(Duration::from_secs(u64::from(schedule.access_ttl_secs))).build();
        let first = Duration::from_millis(schedule.retry_delay_ms);
        // Doubling without a cap of its own: a retry past the run's deadline makes it a gap.
        let retries = Backoff::new(first, first.saturating_mul(1 << 16));
        Self {
            inner: Arc::new(Inner {
                db,
                provisioning,
                collect,
                schedule,
                window,
                replica,
                wake,
                clock,
                clients,
                retries,
                estimator: None,
                in_hand: std::sync::Mutex::new(HashSet::new()),
            }),
        }
    }

    /// This loop estimating gaps as `estimator` says (without one, gaps stay gaps); called on
    /// a new loop, before it is cloned (on a clone it changes nothing).
    #[must_use]
    pub fn with_estimator(mut self, estimator: gaps::Estimator) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.estimator = (estimator.policy != gaps::Policy::Record).then_some(estimator);
        }
        self
    }

    /// This replica's name, as runs record it while it holds them.
    #[must_use]
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    fn timing(&self) -> Timing {
        let s = &self.inner.schedule;
        Timing {
            window_secs: i64::from(s.window_secs),
            settle_secs: i64::from(s.settle_secs),
            deadline_secs: i64::from(s.deadline_secs),
            lookback_secs: i64::from(s.lookback_secs),
        }
    }

    /// Which clusters are measured by which source (`point` for all when the window is shorter
    /// than four resolutions).
    fn sources(&self) -> Sources {
        let c = &self.inner.collect;
        let window = self.inner.window.secs();
        let default = c.source_of(Uuid::nil(), window);
        let named = |source: Source| {
            c.sources
                .iter()
                .filter(|&(id, _)| c.source_of(*id, window) == source)
                .map(|(id, _)| ClusterId::from(*id))
                .collect()
        };
        Sources { default, point: named(Source::Point), readings: named(Source::Readings) }
    }

    /// Runs until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let slots = Slots {
            point: Arc::new(Semaphore::new(self.inner.schedule.clusters_in_flight)),
            readings: Arc::new(Semaphore::new(self.inner.schedule.readings_in_flight)),
        };
        let mut tasks = JoinSet::new();
        let tick = Duration::from_millis(self.inner.schedule.tick_ms);
        loop {
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.pass(&slots, &mut tasks).await {
                tracing::warn!(error = %e, "metering pass failed");
            }
            // The next window is due once it has ended and settled, in calendar time; the
            // clock wakes this at once when the calendar jumps or runs fast.
            let now = self.inner.clock.now().timestamp();
            let (len, settle) = (i64::from(self.inner.window.secs()), i64::from(self.inner.schedule.settle_secs));
            let next_due = (now - settle).div_euclid(len) * len + len + settle;
            let next_due = chrono::DateTime::from_timestamp(next_due, 0).unwrap_or_default();
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(tick) => {}
                () = self.inner.clock.sleep_until(next_due) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
        let replica = self.inner.replica.clone();
        let released = self
            .inner
            .db
            .transaction(|c| {
                let replica = replica.clone();
                Box::pin(async move { Tx::Ok(runs::release(c, &replica).await?) })
            })
            .await;
        match released {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "runs in hand given back on shutdown"),
            Err(e) => tracing::warn!(error = %e, "could not give back runs on shutdown; their leases will run out"),
        }
    }

    /// One pass: schedule, sweep, claim what free slots allow and start collecting it.
    ///
    /// # Errors
    /// When Postgres fails.
    async fn pass(&self, slots: &Slots, tasks: &mut JoinSet<()>) -> Result<(), DbError> {
        let timing = self.timing();
        let now = self.inner.clock.now();
        let sources = Arc::new(self.sources());
        let keep = self.inner.estimator.and_then(|e| e.keep_readings_secs());
        let (added, gaps) = self
            .inner
            .db
            .transaction(|c| {
                let sources = Arc::clone(&sources);
                Box::pin(async move {
                    let added = runs::schedule(c, timing, now.timestamp(), &sources).await?;
                    let gaps = runs::sweep(c, now, keep).await?;
                    Tx::Ok((added, gaps))
                })
            })
            .await?;
        if added > 0 {
            tracing::debug!(runs = added, "windows scheduled");
        }
        if gaps > 0 {
            tracing::warn!(runs = gaps, "windows could not be measured in time and are recorded as gaps");
        }
        if let Some(estimator) = self.inner.estimator {
            self.estimate_gaps(estimator, now).await;
        }
        for (source, slots) in [(Source::Point, &slots.point), (Source::Readings, &slots.readings)] {
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            let limit = i64::try_from(free).unwrap_or(i64::MAX);
            let lease = i64::from(self.inner.schedule.lease_secs);
            let replica = self.inner.replica.clone();
            let claimed = self
                .inner
                .db
                .transaction(|c| {
                    let replica = replica.clone();
                    Box::pin(async move { Tx::Ok(runs::claim(c, &replica, limit, lease, now, source).await?) })
                })
                .await?;
            for run in claimed {
                let key = (run.cluster_id, run.window_start.timestamp());
                if !self.inner.in_hand.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key) {
                    continue;
                }
                let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
                    self.inner.in_hand.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
                    break;
                };
                let meter = self.clone();
                tasks.spawn(async move {
                    let _in_hand = InHand { meter: &meter, key };
                    meter.process(run).await;
                    drop(permit);
                });
            }
        }
        Ok(())
    }

    /// Makes the estimates due at calendar time `now`, each in its own transaction; a failure is
    /// logged and the gap tried again next pass.
    async fn estimate_gaps(&self, estimator: gaps::Estimator, now: chrono::DateTime<chrono::Utc>) {
        let due = match self.inner.db.conn().await {
            Ok(mut conn) => estimator.due(&mut conn, now, 100).await.map_err(DbError::from),
            Err(e) => Err(e),
        };
        let due = match due {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for gaps to estimate");
                return;
            }
        };
        for gap in due {
            let made =
                self.inner.db.transaction(|c| Box::pin(async move { estimator.estimate(c, gap, now).await })).await;
            match made {
                Ok(Some(status)) => tracing::info!(cluster_id = %gap.0, window_start = %gap.1, status,
                    policy = estimator.policy.as_str(), "gap estimated"),
                Ok(None) => {}
                Err(e) => tracing::warn!(cluster_id = %gap.0, window_start = %gap.1, error = %e,
                    "could not estimate a gap; tried again next pass"),
            }
        }
    }

    /// Collects and stores one run, or records why not.
    pub async fn process(&self, run: Claimed) {
        if run.source() == Source::Readings {
            self.process_readings(run).await;
        } else {
            self.process_point(run).await;
        }
    }

    /// Collects one window by point, within the lease, and stores it, or records why not.
    async fn process_point(&self, run: Claimed) {
        let lease = u64::from(self.inner.schedule.lease_secs);
        let budget = Duration::from_secs(lease.saturating_sub(LEASE_MARGIN_SECS.min(lease / 3)).max(1));
        let outcome = match tokio::time::timeout(budget, self.attempt(&run)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure {
                code: "collection_timeout",
                message: format!("the collection took longer than {} s", budget.as_secs()),
            }),
        };
        match outcome {
            Ok(()) => {}
            Err(failure) => self.record_failure(&run, failure).await,
        }
    }

    /// The run's window, checked against the configured length.
    fn window_of(&self, run: &Claimed) -> Result<Window, Failure> {
        let window = self.inner.window.containing(run.window_start.timestamp());
        if window.end() != run.window_end.timestamp() {
            return Err(Failure {
                code: "window_length_changed",
                message: format!("the run's window does not have the configured length of {} s", window.secs()),
            });
        }
        Ok(window)
    }

    /// Forgets a cluster's client after a failure that rotated credentials may explain, so the
    /// kubeconfig is asked for again next time.
    async fn forget_client_after(&self, cluster: ClusterId, e: &CollectError) {
        if matches!(e, CollectError::Refused { status: 401 | 403, .. } | CollectError::Tls { .. }) {
            self.inner.clients.invalidate(&cluster).await;
        }
    }

    async fn attempt(&self, run: &Claimed) -> Result<(), Failure> {
        let window = self.window_of(run)?;
        let client = self.client(run.cluster_id).await?;
        let projects_from_earlier_listing = self.refresh_projects(run.cluster_id).await?;
        let collection = match client.collect(window).await {
            Ok(c) => c,
            Err(e) => {
                self.forget_client_after(run.cluster_id, &e).await;
                return Err(e.into());
            }
        };
        self.store(run, collection, projects_from_earlier_listing, false).await
    }

    /// Stores a run's measurement if the run is still ours.
    async fn store(
        &self,
        run: &Claimed,
        collection: Collection,
        projects_from_earlier_listing: bool,
        from_lifetimes: bool,
    ) -> Result<(), Failure> {
        let replica = self.inner.replica.clone();
        let collection = Arc::new(collection);
        let result = self
            .inner
            .db
            .transaction(|c| {
                let (run, replica, collection) = (run.clone(), replica.clone(), Arc::clone(&collection));
                let clock = self.inner.clock.clone();
                Box::pin(async move {
                    let measured = (&*collection, projects_from_earlier_listing);
                    let stats = runs::complete(c, &run, &replica, measured, clock.now()).await?;
                    // The samples and their mark are written together (`samples.lifetimes`).
                    if stats.is_some() && from_lifetimes {
                        crate::watch::store::mark_samples(c, run.cluster_id, collection.window).await?;
                    }
                    Ok(stats)
                })
            })
            .await;
        match result {
            Ok(Some(stats)) => {
                tracing::info!(cluster_id = %run.cluster_id, window_start = %run.window_start, source = run.source,
                    samples = stats.attributed + stats.unlabelled + stats.not_member + stats.unknown_project, added = stats.added,
                    api_calls = stats.collect.api_calls, reads = stats.collect.reads,
                    estimated_ms = stats.collect.estimated_ms, "window measured");
                Ok(())
            }
            Ok(None) => {
                tracing::info!(cluster_id = %run.cluster_id, window_start = %run.window_start,
                    "run no longer ours (its lease ran out and another replica took it); measurement dropped");
                Ok(())
            }
            Err(StoreError::Overflow(message)) => Err(Failure { code: "usage_overflow", message }),
            Err(StoreError::Db(e)) => Err(Failure { code: "database_unavailable", message: e.to_string() }),
        }
    }

    /// Measures one window from readings (decision 0043), or records why not: a run never read
    /// while its window ran is measured by point instead.
    async fn process_readings(&self, run: Claimed) {
        match self.read_window(&run).await {
            Ok(ReadingsEnd::Done) => {}
            Ok(ReadingsEnd::NotOurs) => tracing::info!(cluster_id = %run.cluster_id, window_start = %run.window_start,
                "run no longer ours (its lease ran out and another replica took it); reading stopped"),
            Ok(ReadingsEnd::Unread) => {
                tracing::warn!(cluster_id = %run.cluster_id, window_start = %run.window_start,
                    "window not read while it ran (metering was down); measured by point");
                self.process_point(run).await;
            }
            Err(failure) => self.record_failure(&run, failure).await,
        }
    }

    /// Reads PodMetrics every resolution, `settle_secs` after each multiple of it, from now to
    /// the window's end plus `settle_secs`, storing each read under the run's lease (renewed
    /// with it and between reads); then integrates what the run read, its own and any earlier
    /// replica's, and stores the samples. A failed read mid-window is skipped (the time it
    /// would have covered is estimated); the last read failing fails the try.
    async fn read_window(&self, run: &Claimed) -> Result<ReadingsEnd, Failure> {
        let db_failure = |e: DbError| Failure { code: "database_unavailable", message: e.to_string() };
        let window = self.window_of(run)?;
        let (settle, resolution) =
            (i64::from(self.inner.schedule.settle_secs), i64::from(self.inner.collect.resolution_secs));
        let lease = i64::from(self.inner.schedule.lease_secs);
        let (progress, pods) = {
            let mut conn = self.inner.db.conn().await.map_err(db_failure)?;
            let progress = reading_runs::progress(&mut conn, run.cluster_id, run.window_start)
                .await
                .map_err(|e| db_failure(e.into()))?;
            let pods = reading_runs::pods(&mut conn, run.cluster_id, run.window_start)
                .await
                .map_err(|e| db_failure(e.into()))?;
            (progress, pods)
        };
        if progress.first_read_at.is_none() && self.inner.clock.now().timestamp() >= window.end() + settle {
            return Ok(ReadingsEnd::Unread);
        }
        let mut known: HashSet<(String, String)> = pods.into_keys().collect();
        // Pods whose readings made this replica list pods once already.
        let mut asked: HashSet<(String, String)> = HashSet::new();
        let lease_secs = u64::from(self.inner.schedule.lease_secs);
        let budget = Duration::from_secs(lease_secs.saturating_sub(LEASE_MARGIN_SECS.min(lease_secs / 3)).max(1));
        loop {
            let at = self.inner.clock.now();
            let last = at.timestamp() >= window.end() + settle;
            let read = match self.client(run.cluster_id).await {
                Ok(client) => match tokio::time::timeout(budget, read_once(&client, &mut known, &mut asked)).await {
                    Ok(Ok(read)) => Ok(read),
                    Ok(Err(e)) => {
                        self.forget_client_after(run.cluster_id, &e).await;
                        Err(Failure::from(e))
                    }
                    Err(_) => Err(Failure {
                        code: "collection_timeout",
                        message: format!("a read took longer than {} s", budget.as_secs()),
                    }),
                },
                Err(failure) => Err(failure),
            };
            let (readings, new_pods, api_calls, failure) = match read {
                Ok((readings, new_pods, api_calls)) => (readings, new_pods, api_calls, None),
                Err(failure) if last => return Err(failure),
                Err(failure) => (Vec::new(), Vec::new(), 0, Some(failure)),
            };
            if let Some(f) = &failure {
                tracing::warn!(cluster_id = %run.cluster_id, window_start = %run.window_start, reason = f.code,
                    error = %f.message, "read failed; the time it would have covered is estimated from the reads around it");
            }
            let replica = self.inner.replica.clone();
            let (readings, new_pods) = (Arc::new(readings), Arc::new(new_pods));
            let ours = self
                .inner
                .db
                .transaction(|c| {
                    let (run, replica) = (run.clone(), replica.clone());
                    let (readings, new_pods) = (Arc::clone(&readings), Arc::clone(&new_pods));
                    let read = failure.is_none();
                    Box::pin(async move {
                        let r = Read { at, readings: &readings, pods: &new_pods, api_calls, read };
                        Tx::Ok(reading_runs::store(c, &run, &replica, lease, r).await?)
                    })
                })
                .await
                .map_err(db_failure)?;
            if !ours {
                return Ok(ReadingsEnd::NotOurs);
            }
            if last {
                break;
            }
            // The next read: `settle` after the next multiple of the resolution, and the last
            // one `settle` after the window's end.
            let next = ((at.timestamp() - settle).div_euclid(resolution) + 1) * resolution + settle;
            let next = next.min(window.end() + settle);
            let next = chrono::DateTime::from_timestamp(next, 0).unwrap_or_default();
            if !self.wait_renewing(run, next).await.map_err(db_failure)? {
                return Ok(ReadingsEnd::NotOurs);
            }
        }
        let projects_from_earlier_listing = self.refresh_projects(run.cluster_id).await?;
        let (readings, pods, progress) = {
            let mut conn = self.inner.db.conn().await.map_err(db_failure)?;
            let (cluster, start) = (run.cluster_id, run.window_start);
            let lift = |e: diesel::result::Error| db_failure(e.into());
            let readings = reading_runs::load(&mut conn, cluster, start).await.map_err(lift)?;
            let pods = reading_runs::pods(&mut conn, cluster, start).await.map_err(lift)?;
            let progress = reading_runs::progress(&mut conn, cluster, start).await.map_err(lift)?;
            (readings, pods, progress)
        };
        let method = self.inner.collect.method(Source::Readings);
        let lifetimes =
            crate::watch::lifetimes_for(&self.inner.db, &self.inner.collect.watch, run.cluster_id, window).await;
        let integrated = readings::integrate_with(window, method, &readings, &pods, lifetimes.as_deref());
        let expected_first = (window.start() + settle) * 1000;
        let late_first_read_ms =
            progress.first_read_at.map_or(0, |first| (first.timestamp_millis() - expected_first).max(0));
        let stats = CollectStats {
            api_calls: progress.api_calls,
            reads: progress.reads,
            pods_listed: u64::try_from(pods.len()).unwrap_or(u64::MAX),
            pods_running: u64::try_from(pods.len()).unwrap_or(u64::MAX),
            metrics_listed: u64::try_from(readings.len()).unwrap_or(u64::MAX),
            pods_measured: integrated.pods_measured,
            metrics_without_pod: integrated.metrics_without_pod,
            pods_without_owner: integrated
                .usage
                .iter()
                .filter(|((_, owner), _)| owner.is_empty())
                .map(|(_, u)| u.pods)
                .sum(),
            estimated_ms: integrated.estimated_ms,
            late_first_read_ms,
            ..CollectStats::default()
        };
        let collection = Collection { window, usage: integrated.usage, stats, method };
        self.store(run, collection, projects_from_earlier_listing, lifetimes.is_some()).await?;
        Ok(ReadingsEnd::Done)
    }

    /// Sleeps until calendar time `until`, renewing the run's lease every third of it (real
    /// time); answers false as soon as the run is no longer ours.
    async fn wait_renewing(&self, run: &Claimed, until: chrono::DateTime<chrono::Utc>) -> Result<bool, DbError> {
        let lease = i64::from(self.inner.schedule.lease_secs);
        let every = Duration::from_secs(u64::from(self.inner.schedule.lease_secs / 3).max(1));
        loop {
            tokio::select! {
                () = self.inner.clock.sleep_until(until) => return Ok(true),
                () = tokio::time::sleep(every) => {
                    let replica = self.inner.replica.clone();
                    let ours = self
                        .inner
                        .db
                        .transaction(|c| {
                            let (run, replica) = (run.clone(), replica.clone());
                            Box::pin(async move { Tx::Ok(reading_runs::renew(c, &run, &replica, lease).await?) })
                        })
                        .await?;
                    if !ours {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// The cluster's client, built from a kubeconfig asked of provisioning at most every
    /// `access_ttl_secs`.
    async fn client(&self, cluster: ClusterId) -> Result<Arc<ClusterClient>, Failure> {
        let connect = async {
            let kubeconfig = self.inner.provisioning.kubeconfig(cluster).await?;
            let client = ClusterClient::connect(&cluster.to_string(), &kubeconfig, self.inner.collect.clone()).await?;
            Ok::<_, Failure>(Arc::new(client))
        };
        self.inner.clients.try_get_with(cluster, connect).await.map_err(|e| Failure::clone(&e))
    }

    /// Lists the cluster's projects and stores them. When Hopsworks does not answer, an earlier
    /// listing is used (answers true); without one the run fails.
    async fn refresh_projects(&self, cluster: ClusterId) -> Result<bool, Failure> {
        let db_failure = |e: DbError| Failure { code: "database_unavailable", message: e.to_string() };
        match self.inner.provisioning.projects(cluster).await {
            Ok(projects) => {
                let projects = Arc::new(projects);
                self.inner
                    .db
                    .transaction(|c| {
                        let projects = Arc::clone(&projects);
                        Box::pin(async move { Tx::Ok(projection::store_projects(c, cluster, &projects).await?) })
                    })
                    .await
                    .map_err(db_failure)?;
                Ok(false)
            }
            Err(e) => {
                let mut conn = self.inner.db.conn().await.map_err(db_failure)?;
                if projection::has_projects(&mut conn, cluster).await.map_err(|e| db_failure(e.into()))? {
                    tracing::warn!(cluster_id = %cluster, error = %e, "project list unavailable; using the last one");
                    Ok(true)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    async fn record_failure(&self, run: &Claimed, failure: Failure) {
        let s = &self.inner.schedule;
        // No retry when the tries are used up (or the pause is beyond any date): a gap. The
        // pause is real time; the deadline it is held against is calendar time.
        let clock = &self.inner.clock;
        let retry = (run.attempts < i32::try_from(s.max_attempts).unwrap_or(i32::MAX))
            .then(|| self.inner.retries.delay(u32::try_from(run.attempts.saturating_sub(1)).unwrap_or(0)))
            .and_then(|delay| {
                let due = chrono::Utc::now().checked_add_signed(chrono::Duration::from_std(delay).ok()?)?;
                Some(RetryAt { due, calendar: clock.after(delay) })
            });
        let replica = self.inner.replica.clone();
        let recorded = self
            .inner
            .db
            .transaction(|c| {
                let (run, replica, failure) = (run.clone(), replica.clone(), failure.clone());
                let clock = clock.clone();
                Box::pin(async move {
                    let why = (failure.code, failure.message.as_str());
                    Tx::Ok(runs::failed(c, &run, &replica, why, retry, clock.now()).await?)
                })
            })
            .await;
        match recorded {
            Ok(Some(status)) => tracing::warn!(cluster_id = %run.cluster_id, window_start = %run.window_start,
                attempts = run.attempts, reason = failure.code, error = %failure.message, %status,
                "window not measured"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not record a failed run; its lease will run out"),
        }
    }
}

/// One read: the PodMetrics list, and the pod list when a reading is of a pod not listed yet
/// (each such pod makes this replica list pods once). Answers the readings, the pods newly
/// listed and the API calls taken.
async fn read_once(
    client: &ClusterClient,
    known: &mut HashSet<(String, String)>,
    asked: &mut HashSet<(String, String)>,
) -> Result<(Vec<Reading>, Vec<((String, String), readings::PodInfo)>, u64), CollectError> {
    let list = client.read_metrics().await?;
    let mut api_calls = list.api_calls;
    let unknown: Vec<(String, String)> = list
        .readings
        .iter()
        .filter(|r| !known.contains(&r.key) && !asked.contains(&r.key))
        .map(|r| r.key.clone())
        .collect();
    let mut new_pods = Vec::new();
    if !unknown.is_empty() {
        let pods = client.list_running_pods().await?;
        api_calls += pods.api_calls;
        asked.extend(unknown);
        for (key, info) in pods.pods {
            if known.insert(key.clone()) {
                new_pods.push((key, info));
            }
        }
    }
    Ok((list.readings, new_pods, api_calls))
}
