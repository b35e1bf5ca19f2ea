//! The storage loop of one replica: schedule the storage windows that have started, make gaps
//! of the ones that ended unmeasured, lease due runs and read each cluster's storage through
//! provisioning on a task of its own.

use super::StorageConfig;
use super::estimates::StorageEstimator;
use super::runs::{self, Claimed};
use crate::access::Provisioning;
use crate::config::ScheduleConfig;
use crate::samples::StoreError;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::retry::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Tx<T> = Result<T, DbError>;

/// One replica's storage loop.
#[derive(Clone)]
pub struct StorageMeter {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    clock: Clock,
    provisioning: Provisioning,
    storage: StorageConfig,
    schedule: ScheduleConfig,
    replica: String,
    retries: Backoff,
    /// The gap policy's storage estimates (decision 0076).
    estimator: Option<StorageEstimator>,
}

impl std::fmt::Debug for StorageMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageMeter").field("replica", &self.inner.replica).finish_non_exhaustive()
    }
}

/// Why a run failed: a stable code and a message without secrets.
struct Failure {
    code: &'static str,
    message: String,
}

impl StorageMeter {
    /// A loop over `db` on calendar time `clock`, reading storage through `provisioning`, with
    /// the leases, tries and tick of `schedule`.
    #[must_use]
    pub fn new(
        (db, clock): (Database, Clock),
        provisioning: Provisioning,
        storage: StorageConfig,
        schedule: ScheduleConfig,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "metering".to_owned());
        let replica = format!("{host}-storage-{}", uuid::Uuid::new_v4().simple());
        let first = Duration::from_millis(schedule.retry_delay_ms);
        let retries = Backoff::new(first, first.saturating_mul(1 << 16));
        Self {
            inner: Arc::new(Inner { db, clock, provisioning, storage, schedule, replica, retries, estimator: None }),
        }
    }

    /// This loop estimating storage gaps as `estimator` says (without one, or under `record`,
    /// gaps stay gaps); called on a new loop, before it is cloned (on a clone it changes
    /// nothing).
    #[must_use]
    pub fn with_estimator(mut self, estimator: StorageEstimator) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.estimator = (estimator.policy != crate::gaps::Policy::Record).then_some(estimator);
        }
        self
    }

    /// Runs until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tasks = JoinSet::new();
        let tick = Duration::from_millis(self.inner.schedule.tick_ms);
        let len = i64::from(self.inner.storage.window_secs);
        loop {
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.pass(&mut tasks).await {
                tracing::warn!(error = %e, "storage pass failed");
            }
            // The next window is due when it starts, in calendar time.
            let now = self.inner.clock.now().timestamp();
            let next = chrono::DateTime::from_timestamp(now.div_euclid(len) * len + len, 0).unwrap_or_default();
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(tick) => {}
                () = self.inner.clock.sleep_until(next) => {}
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
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not give back storage runs on shutdown; their leases will run out");
        }
    }

    /// One pass: schedule, sweep, claim what free slots allow and read it.
    async fn pass(&self, tasks: &mut JoinSet<()>) -> Result<(), DbError> {
        let now = self.inner.clock.now();
        let (len, lookback) = (i64::from(self.inner.storage.window_secs), i64::from(self.inner.storage.lookback_secs));
        let (added, gaps) = self
            .inner
            .db
            .transaction(|c| {
                Box::pin(async move {
                    let added = runs::schedule(c, len, now.timestamp(), lookback).await?;
                    let gaps = runs::sweep(c, now).await?;
                    Tx::Ok((added, gaps))
                })
            })
            .await?;
        if added > 0 {
            tracing::debug!(runs = added, "storage windows scheduled");
        }
        if gaps > 0 {
            tracing::warn!(runs = gaps, "storage windows ended unmeasured and are recorded as gaps");
        }
        if let Some(estimator) = self.inner.estimator {
            self.estimate_gaps(estimator, now).await;
        }
        let free = self.inner.storage.clusters_in_flight.saturating_sub(tasks.len());
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
            let meter = self.clone();
            tasks.spawn(async move { meter.process(run).await });
        }
        Ok(())
    }

    /// Makes the storage estimates due at calendar time `now`, each in its own transaction; a
    /// failure is logged and the estimate tried again next pass.
    async fn estimate_gaps(&self, estimator: StorageEstimator, now: chrono::DateTime<chrono::Utc>) {
        let due = match self.inner.db.conn().await {
            Ok(mut conn) => estimator.due(&mut conn, now, 500).await.map_err(DbError::from),
            Err(e) => Err(e),
        };
        let due = match due {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for storage gaps to estimate");
                return;
            }
        };
        for gap in due {
            let made =
                self.inner.db.transaction(|c| Box::pin(async move { estimator.estimate(c, gap, now).await })).await;
            match made {
                Ok(Some(status)) => tracing::info!(cluster_id = %gap.cluster_id, project_id = %gap.project_id,
                    window_start = %gap.window_start, status, policy = estimator.policy.as_str(), "storage gap estimated"),
                Ok(None) => {}
                Err(e) => tracing::warn!(cluster_id = %gap.cluster_id, project_id = %gap.project_id,
                    window_start = %gap.window_start, error = %e, "could not estimate a storage gap; tried again next pass"),
            }
        }
    }

    /// Reads one cluster's storage and stores it, or records why not.
    pub async fn process(&self, run: Claimed) {
        let lease = u64::from(self.inner.schedule.lease_secs);
        let budget = Duration::from_secs(lease.saturating_sub(5.min(lease / 3)).max(1));
        let outcome = match tokio::time::timeout(budget, self.attempt(&run)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure {
                code: "collection_timeout",
                message: format!("the storage read took longer than {} s", budget.as_secs()),
            }),
        };
        if let Err(failure) = outcome {
            self.record_failure(&run, failure).await;
        }
    }

    async fn attempt(&self, run: &Claimed) -> Result<(), Failure> {
        let snapshot = self
            .inner
            .provisioning
            .storage(run.cluster_id)
            .await
            .map_err(|e| Failure { code: e.reason(), message: e.to_string() })?;
        let measured_at = self.inner.clock.now();
        if measured_at >= run.window_end {
            return Err(Failure {
                code: "snapshot_late",
                message: format!("the snapshot was taken at {measured_at}, after the window's end"),
            });
        }
        let snapshot = Arc::new(snapshot);
        let replica = self.inner.replica.clone();
        let result = self
            .inner
            .db
            .transaction(|c| {
                let (run, replica, snapshot) = (run.clone(), replica.clone(), Arc::clone(&snapshot));
                Box::pin(async move { runs::complete(c, &run, &replica, &snapshot, measured_at).await })
            })
            .await;
        match result {
            Ok(Some(stored)) => {
                tracing::info!(cluster_id = %run.cluster_id, window_start = %run.window_start,
                    projects = stored.projects, unreported = stored.unreported,
                    online_unreported = stored.online_unreported, added = stored.added,
                    announced = stored.announced, "storage measured");
                Ok(())
            }
            Ok(None) => {
                tracing::info!(cluster_id = %run.cluster_id, window_start = %run.window_start,
                    "storage run no longer ours; snapshot dropped");
                Ok(())
            }
            Err(StoreError::Overflow(message)) => Err(Failure { code: "usage_overflow", message }),
            Err(StoreError::Db(e)) => Err(Failure { code: "database_unavailable", message: e.to_string() }),
        }
    }

    async fn record_failure(&self, run: &Claimed, failure: Failure) {
        let max = i32::try_from(self.inner.schedule.max_attempts).unwrap_or(i32::MAX);
        let retry_ms = (run.attempts < max).then(|| {
            let delay = self.inner.retries.delay(u32::try_from(run.attempts.saturating_sub(1)).unwrap_or(0));
            i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
        });
        let replica = self.inner.replica.clone();
        let now = self.inner.clock.now();
        let recorded = self
            .inner
            .db
            .transaction(|c| {
                let (run, replica) = (run.clone(), replica.clone());
                let (code, message) = (failure.code, failure.message.clone());
                Box::pin(async move { Tx::Ok(runs::failed(c, &run, &replica, (code, &message), retry_ms, now).await?) })
            })
            .await;
        match recorded {
            Ok(Some(status)) => tracing::warn!(cluster_id = %run.cluster_id, window_start = %run.window_start,
                attempts = run.attempts, reason = failure.code, error = %failure.message, %status,
                "storage not measured"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not record a failed storage run; its lease will run out"),
        }
    }
}
