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
use crate::collect::{ClusterClient, CollectConfig, CollectError};
use crate::config::ScheduleConfig;
use crate::projection;
use crate::runs::{self, Claimed, RetryAt, Timing};
use crate::samples::StoreError;
use crate::window::WindowLength;
use hopsbridge_domain::ClusterId;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::retry::Backoff;
use moka::future::Cache;
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
            }),
        }
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

    /// Runs until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.inner.schedule.clusters_in_flight));
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
    async fn pass(&self, slots: &Arc<Semaphore>, tasks: &mut JoinSet<()>) -> Result<(), DbError> {
        let timing = self.timing();
        let now = self.inner.clock.now();
        let (added, gaps) = self
            .inner
            .db
            .transaction(|c| {
                Box::pin(async move {
                    let added = runs::schedule(c, timing, now.timestamp()).await?;
                    let gaps = runs::sweep(c, now).await?;
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
        let free = slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        let limit = i64::try_from(free).unwrap_or(i64::MAX);
        let lease = i64::from(self.inner.schedule.lease_secs);
        let replica = self.inner.replica.clone();
        let claimed = self
            .inner
            .db
            .transaction(|c| {
                let replica = replica.clone();
                Box::pin(async move { Tx::Ok(runs::claim(c, &replica, limit, lease, now).await?) })
            })
            .await?;
        for run in claimed {
            let Ok(permit) = Arc::clone(slots).try_acquire_owned() else { break };
            let meter = self.clone();
            tasks.spawn(async move {
                meter.process(run).await;
                drop(permit);
            });
        }
        Ok(())
    }

    /// Collects and stores one run, or records why not.
    pub async fn process(&self, run: Claimed) {
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

    async fn attempt(&self, run: &Claimed) -> Result<(), Failure> {
        let window = self.inner.window.containing(run.window_start.timestamp());
        if window.end() != run.window_end.timestamp() {
            return Err(Failure {
                code: "window_length_changed",
                message: format!("the run's window does not have the configured length of {} s", window.secs()),
            });
        }
        let client = self.client(run.cluster_id).await?;
        let projects_from_earlier_listing = self.refresh_projects(run.cluster_id).await?;
        let collection = match client.collect(window).await {
            Ok(c) => c,
            Err(e) => {
                // Credentials may have been rotated: ask for the kubeconfig again next time.
                if matches!(e, CollectError::Refused { status: 401 | 403, .. } | CollectError::Tls { .. }) {
                    self.inner.clients.invalidate(&run.cluster_id).await;
                }
                return Err(e.into());
            }
        };
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
                    runs::complete(c, &run, &replica, measured, clock.now()).await
                })
            })
            .await;
        match result {
            Ok(Some(stats)) => {
                tracing::info!(cluster_id = %run.cluster_id, window_start = %run.window_start,
                    samples = stats.attributed + stats.unlabelled + stats.not_member + stats.unknown_project, added = stats.added,
                    api_calls = stats.collect.api_calls, "window measured");
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
