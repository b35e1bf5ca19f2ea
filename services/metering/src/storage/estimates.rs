//! The gap policy for storage (decision 0076; decision 0069 for usage windows): what becomes of
//! a storage window, or one project in it, that could not be measured.
//!
//! Under `gaps.policy = record` nothing: the gap stays a gap. Under `estimate` or `review`, once
//! the window has ended (a storage run's deadline is its window's end) and while it is within
//! `storage.lookback_secs`, each gapped (cluster, project, window) is estimated:
//! - a whole-cluster gap (`storage_runs.status = 'gap'`): every project with a sample read from
//!   the cluster in a neighbour window;
//! - a project Hopsworks did not report (a `storage_gaps` row) that has no sample of the
//!   window. A project whose online part alone was unreported has its sample (online 0) already:
//!   the sample key is unique, so it is never estimated.
//!
//! The basis is `neighbours`: the project's nearest measured sample before the window and the
//! nearest after it, each within `gaps.neighbour_windows` storage windows. A measured sample is
//! one read from the cluster (not estimated) whose online part was measured or not configured:
//! one whose online part RonDB did not report holds 0 there, which is no measurement. Offline
//! and online bytes are each `(before + after) / 2` in integers, truncated; with one neighbour,
//! its bytes. The estimate waits for the one after until it exists or the last window that could
//! be it has ended (the gap's end plus `neighbour_windows` windows), then takes the one before
//! alone; with no neighbour at all it is recorded `none` with why, and no sample is written.
//!
//! An estimate is written as a measured sample is ([`super::runs::store`]): the sample with the
//! key's id ([`super::sample_id`]), marked estimated, held for the whole window, attributed as of
//! the window's start, and one `StorageRecordedV1` (`estimated: true`) when it is billed to
//! someone, in one transaction. `estimate` publishes it at once; `review` keeps it `pending`
//! until an administrator approves or rejects it. One estimate per (cluster, project, window),
//! made under the window's storage run locked, so replicas and reruns make it and publish it once.

use super::runs::{self, Row};
use crate::access::ProjectStorage;
use crate::gaps::Policy;
use crate::projection;
use crate::samples::StoreError;
use crate::schema::{storage_gap_estimates, storage_gaps, storage_runs, storage_samples};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::dsl;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{ClusterId, ProjectId, SampleId};
use serde::Serialize;
use uuid::Uuid;

/// Makes the storage estimates a policy asks for.
#[derive(Debug, Clone, Copy)]
pub struct StorageEstimator {
    /// The policy (under `record` nothing is estimated).
    pub policy: Policy,
    /// Storage window length, seconds.
    pub window_secs: i64,
    /// Windows that started longer ago than this (seconds before now) are not estimated.
    pub lookback_secs: i64,
    /// How many windows before and after a gap its neighbours are looked for in.
    pub neighbour_windows: i64,
}

/// A project's storage window that was not measured and has neither an estimate nor a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Due {
    /// The cluster.
    #[diesel(sql_type = SqlUuid)]
    pub cluster_id: ClusterId,
    /// The project.
    #[diesel(sql_type = BigInt)]
    pub project_id: ProjectId,
    /// The window's start.
    #[diesel(sql_type = Timestamptz)]
    pub window_start: DateTime<Utc>,
    /// The window's end.
    #[diesel(sql_type = Timestamptz)]
    pub window_end: DateTime<Utc>,
}

/// The candidates: projects with a sample read from the cluster in a neighbour window of a
/// whole-cluster gap, and projects not reported in a complete window; windows ended by `$1`
/// and started after `$1 - $3`; neither estimated nor sampled; ready, that is with a measured
/// sample after or past the last window that could hold one (so waiting ones take no turn).
/// `$2` is the neighbours' reach in seconds, `$4` the most answered.
const DUE: &str = "
    SELECT d.cluster_id, d.project_id, d.window_start, d.window_end FROM (
        SELECT DISTINCT r.cluster_id, s.project_id, r.window_start, r.window_end
        FROM storage_runs r
        JOIN storage_samples s ON s.cluster_id = r.cluster_id AND NOT s.estimated
            AND s.window_start >= r.window_start - make_interval(secs => $2)
            AND s.window_start < r.window_end + make_interval(secs => $2)
            AND s.window_start <> r.window_start
        WHERE r.status = 'gap' AND r.deadline <= $1 AND r.window_start > $1 - make_interval(secs => $3)
        UNION
        SELECT g.cluster_id, g.project_id, g.window_start, r.window_end
        FROM storage_gaps g JOIN storage_runs r USING (cluster_id, window_start)
        WHERE r.deadline <= $1 AND g.window_start > $1 - make_interval(secs => $3)
    ) d
    WHERE NOT EXISTS (SELECT 1 FROM storage_gap_estimates e
                      WHERE (e.cluster_id, e.project_id, e.window_start) = (d.cluster_id, d.project_id, d.window_start))
      AND NOT EXISTS (SELECT 1 FROM storage_samples x
                      WHERE (x.cluster_id, x.project_id, x.window_start) = (d.cluster_id, d.project_id, d.window_start))
      AND (d.window_end + make_interval(secs => $2) <= $1
           OR EXISTS (SELECT 1 FROM storage_samples a
                      WHERE a.cluster_id = d.cluster_id AND a.project_id = d.project_id AND NOT a.estimated
                        AND a.window_start >= d.window_end AND a.window_start < d.window_end + make_interval(secs => $2)
                        AND NOT EXISTS (SELECT 1 FROM storage_gaps o
                                        WHERE (o.cluster_id, o.project_id, o.window_start)
                                            = (a.cluster_id, a.project_id, a.window_start))))
    ORDER BY d.window_start, d.cluster_id, d.project_id
    LIMIT $4";

/// A measured sample next to a gap: its window and what it says of the project.
#[derive(Debug, Clone, Queryable)]
struct Neighbour {
    window_start: DateTime<Utc>,
    namespace: String,
    project_name: String,
    creator_username: Option<String>,
    offline_bytes: i64,
    online_bytes: i64,
}

/// The measured samples of `due`'s project (read from the cluster, online part not unreported).
fn measured(due: &Due) -> storage_samples::BoxedQuery<'static, Pg> {
    let online_unreported = storage_gaps::table
        .filter(storage_gaps::cluster_id.eq(storage_samples::cluster_id))
        .filter(storage_gaps::project_id.eq(storage_samples::project_id))
        .filter(storage_gaps::window_start.eq(storage_samples::window_start));
    storage_samples::table
        .filter(storage_samples::cluster_id.eq(due.cluster_id))
        .filter(storage_samples::project_id.eq(due.project_id))
        .filter(storage_samples::estimated.eq(false))
        .filter(dsl::not(dsl::exists(online_unreported)))
        .into_boxed()
}

type NeighbourColumns = (
    storage_samples::window_start,
    storage_samples::namespace,
    storage_samples::project_name,
    storage_samples::creator_username,
    storage_samples::offline_bytes,
    storage_samples::online_bytes,
);

const NEIGHBOUR: NeighbourColumns = (
    storage_samples::window_start,
    storage_samples::namespace,
    storage_samples::project_name,
    storage_samples::creator_username,
    storage_samples::offline_bytes,
    storage_samples::online_bytes,
);

/// `(before + after) / 2`, truncated, of two byte counts; with one, it.
fn mean(before: Option<i64>, after: Option<i64>) -> Result<Option<i64>, StoreError> {
    let bytes = |v: i64| u64::try_from(v).map_err(|_| StoreError::Overflow(format!("{v} bytes is negative")));
    Ok(match (before, after) {
        (Some(b), Some(a)) => {
            let sum = bytes(b)?
                .checked_add(bytes(a)?)
                .ok_or_else(|| StoreError::Overflow(format!("{b} + {a} bytes: too many to count")))?;
            Some(i64::try_from(sum / 2).map_err(|_| StoreError::Overflow(format!("{sum} / 2 bytes does not fit")))?)
        }
        (one, None) | (None, one) => one,
    })
}

impl StorageEstimator {
    fn reach(&self) -> i64 {
        self.window_secs.saturating_mul(self.neighbour_windows)
    }

    /// The gapped (cluster, project, window)s that may be estimated at calendar time `now`,
    /// oldest first, at most `limit`.
    ///
    /// # Errors
    /// When Postgres fails.
    pub async fn due(&self, conn: &mut AsyncPgConnection, now: DateTime<Utc>, limit: i64) -> QueryResult<Vec<Due>> {
        if self.policy == Policy::Record {
            return Ok(Vec::new());
        }
        diesel::sql_query(DUE)
            .bind::<Timestamptz, _>(now)
            .bind::<BigInt, _>(self.reach())
            .bind::<BigInt, _>(self.lookback_secs)
            .bind::<BigInt, _>(limit)
            .load(conn)
            .await
    }

    /// Estimates `due` if it is due at calendar time `now` (see the module documentation), in
    /// the caller's transaction; answers the estimate's status, or `None` when it is not due
    /// yet (its neighbour after may still come) or was made already.
    ///
    /// # Errors
    /// When Postgres fails or a quantity overflows.
    pub async fn estimate(
        &self,
        conn: &mut AsyncPgConnection,
        due: Due,
        now: DateTime<Utc>,
    ) -> Result<Option<&'static str>, StoreError> {
        if self.policy == Policy::Record || due.window_start <= now - TimeDelta::seconds(self.lookback_secs) {
            return Ok(None);
        }
        // Every estimate of a window is made under its storage run, locked.
        let run: Option<(String, DateTime<Utc>)> = storage_runs::table
            .find((due.cluster_id, due.window_start))
            .select((storage_runs::status, storage_runs::deadline))
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some((status, deadline)) = run else { return Ok(None) };
        if deadline > now {
            return Ok(None);
        }
        let unreported: Option<String> = storage_gaps::table
            .find((due.cluster_id, due.project_id, due.window_start))
            .select(storage_gaps::namespace)
            .first(conn)
            .await
            .optional()?;
        let whole = status == "gap";
        if !whole && unreported.is_none() {
            return Ok(None);
        }
        let made: i64 = storage_gap_estimates::table
            .filter(storage_gap_estimates::cluster_id.eq(due.cluster_id))
            .filter(storage_gap_estimates::project_id.eq(due.project_id))
            .filter(storage_gap_estimates::window_start.eq(due.window_start))
            .count()
            .get_result(conn)
            .await?;
        let sampled: i64 = storage_samples::table
            .filter(storage_samples::cluster_id.eq(due.cluster_id))
            .filter(storage_samples::project_id.eq(due.project_id))
            .filter(storage_samples::window_start.eq(due.window_start))
            .count()
            .get_result(conn)
            .await?;
        if made > 0 || sampled > 0 {
            return Ok(None);
        }
        let reach = TimeDelta::seconds(self.reach());
        let before: Option<Neighbour> = measured(&due)
            .filter(storage_samples::window_start.lt(due.window_start))
            .filter(storage_samples::window_start.ge(due.window_start - reach))
            .order(storage_samples::window_start.desc())
            .select(NEIGHBOUR)
            .first(conn)
            .await
            .optional()?;
        let after: Option<Neighbour> = measured(&due)
            .filter(storage_samples::window_start.ge(due.window_end))
            .filter(storage_samples::window_start.lt(due.window_end + reach))
            .order(storage_samples::window_start.asc())
            .select(NEIGHBOUR)
            .first(conn)
            .await
            .optional()?;
        if after.is_none() && now < due.window_end + reach {
            // The window after may still be measured.
            return Ok(None);
        }
        let offline = mean(before.as_ref().map(|n| n.offline_bytes), after.as_ref().map(|n| n.offline_bytes))?;
        let online = mean(before.as_ref().map(|n| n.online_bytes), after.as_ref().map(|n| n.online_bytes))?;
        let n = self.neighbour_windows;
        let detail = match (&before, &after) {
            (Some(_), Some(_)) => "the mean of the measured samples before and after, truncated".to_owned(),
            (Some(_), None) => format!("the measured sample before; none within {n} windows after"),
            (None, Some(_)) => format!("the measured sample after; none within {n} windows before"),
            (None, None) => format!(
                "no measured sample of the project within {n} windows before or after (a sample whose online \
                 part was unreported is none): nothing estimated"
            ),
        };
        let status = match (&before, &after, self.policy) {
            (None, None, _) => "none",
            (_, _, Policy::Estimate) => "published",
            _ => "pending",
        };
        // The project as its nearest neighbour names it; as its gap or any sample does otherwise.
        let named = before.as_ref().or(after.as_ref());
        let namespace = match (named, unreported) {
            (Some(n), _) => n.namespace.clone(),
            (None, Some(namespace)) => namespace,
            (None, None) => storage_samples::table
                .filter(storage_samples::cluster_id.eq(due.cluster_id))
                .filter(storage_samples::project_id.eq(due.project_id))
                .order(storage_samples::window_start.desc())
                .select(storage_samples::namespace)
                .first(conn)
                .await
                .optional()?
                .unwrap_or_default(),
        };
        let id = Uuid::now_v7();
        let inserted = diesel::insert_into(storage_gap_estimates::table)
            .values((
                storage_gap_estimates::id.eq(id),
                storage_gap_estimates::cluster_id.eq(due.cluster_id),
                storage_gap_estimates::project_id.eq(due.project_id),
                storage_gap_estimates::window_start.eq(due.window_start),
                storage_gap_estimates::window_end.eq(due.window_end),
                storage_gap_estimates::gap.eq(if whole { "cluster" } else { "project" }),
                storage_gap_estimates::namespace.eq(namespace),
                storage_gap_estimates::project_name.eq(named.map(|n| n.project_name.clone())),
                storage_gap_estimates::creator_username.eq(named.and_then(|n| n.creator_username.clone())),
                storage_gap_estimates::policy.eq(self.policy.as_str()),
                storage_gap_estimates::status.eq(if status == "none" { "none" } else { "pending" }),
                storage_gap_estimates::basis.eq((status != "none").then_some("neighbours")),
                storage_gap_estimates::before_window.eq(before.as_ref().map(|n| n.window_start)),
                storage_gap_estimates::after_window.eq(after.as_ref().map(|n| n.window_start)),
                storage_gap_estimates::offline_bytes.eq(offline),
                storage_gap_estimates::online_bytes.eq(online),
                storage_gap_estimates::detail.eq(detail),
            ))
            .on_conflict((
                storage_gap_estimates::cluster_id,
                storage_gap_estimates::project_id,
                storage_gap_estimates::window_start,
            ))
            .do_nothing()
            .execute(conn)
            .await?;
        if inserted == 0 {
            return Ok(None);
        }
        if status == "published" {
            publish(conn, id, None, now).await?;
        }
        Ok(Some(status))
    }
}

/// What publishing an estimate needs of it.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = storage_gap_estimates, check_for_backend(Pg))]
struct ToPublish {
    cluster_id: ClusterId,
    project_id: ProjectId,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    namespace: String,
    project_name: Option<String>,
    creator_username: Option<String>,
    offline_bytes: Option<i64>,
    online_bytes: Option<i64>,
}

/// Publishes pending estimate `id`, in the caller's transaction with its row locked: its
/// sample is written marked estimated, attributed as of the window's start and announced when
/// billed (as a measured one is, [`runs::store`]); `by` is who approved it (`None`: the
/// policy). Answers the sample written (none when the key had one already).
async fn publish(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<SampleId>, StoreError> {
    let e: ToPublish = storage_gap_estimates::table.find(id).select(ToPublish::as_select()).first(conn).await?;
    let bytes = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
    let (offline, online) = (bytes(e.offline_bytes), bytes(e.online_bytes));
    let p = ProjectStorage {
        id: e.project_id,
        name: e.project_name.unwrap_or_else(|| e.namespace.clone()),
        namespace: e.namespace,
        creator_username: e.creator_username,
        offline: Ok(offline),
        online: Ok(online),
    };
    let window = (e.cluster_id, e.window_start, e.window_end);
    let known = projection::known(conn, e.cluster_id, e.window_start).await?;
    let row = Row::held(window, &p, (offline, online), &known)?;
    // Nothing was measured: the sample is taken as of the window's start, and announced now.
    let (added, _) = runs::store(conn, window, &[row], (e.window_start, true), now).await?;
    let sample = added.into_iter().next();
    diesel::update(storage_gap_estimates::table.find(id))
        .set((
            storage_gap_estimates::status.eq("published"),
            storage_gap_estimates::sample_id.eq(sample),
            storage_gap_estimates::decided_at.eq(dsl::now),
            storage_gap_estimates::decided_by.eq(by),
        ))
        .execute(conn)
        .await?;
    Ok(sample)
}

/// What deciding a storage estimate came to.
#[derive(Debug)]
pub enum Decided {
    /// No such estimate.
    NotFound,
    /// It was decided already (published, rejected, or nothing to estimate): its status.
    Already(String),
    /// Decided now.
    Done(Box<StorageEstimate>),
}

/// Approves (publishes) or rejects pending storage estimate `id` for administrator `by`, at
/// calendar time `now`; nothing changes unless it is pending.
///
/// # Errors
/// When Postgres fails or a quantity overflows.
pub async fn decide(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    approve: bool,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Decided, StoreError> {
    let status: Option<String> = storage_gap_estimates::table
        .find(id)
        .select(storage_gap_estimates::status)
        .for_update()
        .first(conn)
        .await
        .optional()?;
    match status.as_deref() {
        None => return Ok(Decided::NotFound),
        Some("pending") => {}
        Some(other) => return Ok(Decided::Already(other.to_owned())),
    }
    if approve {
        publish(conn, id, Some(by), now).await?;
    } else {
        diesel::update(storage_gap_estimates::table.find(id))
            .set((
                storage_gap_estimates::status.eq("rejected"),
                storage_gap_estimates::decided_at.eq(dsl::now),
                storage_gap_estimates::decided_by.eq(by),
            ))
            .execute(conn)
            .await?;
    }
    let filter = StorageEstimateFilter { id: Some(id), ..StorageEstimateFilter::default() };
    let mut page = list(conn, &filter, 1).await?;
    Ok(page.items.pop().map_or(Decided::NotFound, |e| Decided::Done(Box::new(e))))
}

/// An estimate of one project's storage window and what it was based on.
#[derive(Debug, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = storage_gap_estimates, check_for_backend(Pg))]
pub struct StorageEstimate {
    /// Its id.
    pub id: Uuid,
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The Hopsworks project.
    pub project_id: ProjectId,
    /// The project's namespace.
    pub namespace: String,
    /// The project's name (from the sample it was based on; none when nothing was estimated).
    pub project_name: Option<String>,
    /// The window's start, UTC.
    pub window_start: DateTime<Utc>,
    /// The window's end, UTC.
    pub window_end: DateTime<Utc>,
    /// `cluster`: the whole cluster's window was a gap; `project`: the project alone was not
    /// reported.
    pub gap: String,
    /// The policy it was made under: `estimate` or `review`.
    pub policy: String,
    /// `pending` (awaiting review), `published`, `rejected`, or `none` (nothing to estimate).
    pub status: String,
    /// `neighbours`; none when nothing was estimated.
    pub basis: Option<String>,
    /// The window of the measured sample before that was averaged.
    pub before_window: Option<DateTime<Utc>>,
    /// The window of the measured sample after.
    pub after_window: Option<DateTime<Utc>>,
    /// Offline bytes estimated for the whole window.
    pub offline_bytes: Option<i64>,
    /// Online bytes estimated for the whole window.
    pub online_bytes: Option<i64>,
    /// How it was made, or why nothing was.
    pub detail: String,
    /// The storage sample written once published (none when the key had one already).
    pub sample_id: Option<SampleId>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was published or rejected.
    pub decided_at: Option<DateTime<Utc>>,
    /// The administrator who approved or rejected it (none when the policy published it).
    pub decided_by: Option<String>,
}

/// A page of storage estimates.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StorageEstimatePage {
    /// Newest window first.
    pub items: Vec<StorageEstimate>,
    /// Estimates matching the filter.
    pub total: i64,
}

/// Which storage estimates [`list`] answers.
#[derive(Debug, Clone, Default)]
pub struct StorageEstimateFilter {
    /// Only this one.
    pub id: Option<Uuid>,
    /// Only this cluster.
    pub cluster: Option<ClusterId>,
    /// Only this project.
    pub project: Option<ProjectId>,
    /// Only this status (one of [`crate::gaps::STATUSES`]).
    pub status: Option<String>,
    /// Windows starting at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Windows starting before this instant.
    pub to: Option<DateTime<Utc>>,
}

impl StorageEstimateFilter {
    fn query(&self) -> storage_gap_estimates::BoxedQuery<'static, Pg> {
        let mut q = storage_gap_estimates::table.into_boxed();
        if let Some(id) = self.id {
            q = q.filter(storage_gap_estimates::id.eq(id));
        }
        if let Some(cluster) = self.cluster {
            q = q.filter(storage_gap_estimates::cluster_id.eq(cluster));
        }
        if let Some(project) = self.project {
            q = q.filter(storage_gap_estimates::project_id.eq(project));
        }
        if let Some(status) = self.status.clone() {
            q = q.filter(storage_gap_estimates::status.eq(status));
        }
        if let Some(from) = self.from {
            q = q.filter(storage_gap_estimates::window_start.ge(from));
        }
        if let Some(to) = self.to {
            q = q.filter(storage_gap_estimates::window_start.lt(to));
        }
        q
    }
}

/// Up to `limit` storage estimates matching `filter`, newest window first, and how many match.
///
/// # Errors
/// When Postgres fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &StorageEstimateFilter,
    limit: i64,
) -> QueryResult<StorageEstimatePage> {
    let items = filter
        .query()
        .order((
            storage_gap_estimates::window_start.desc(),
            storage_gap_estimates::cluster_id,
            storage_gap_estimates::project_id,
        ))
        .limit(limit)
        .select(StorageEstimate::as_select())
        .load(conn)
        .await?;
    let total = filter.query().count().get_result(conn).await?;
    Ok(StorageEstimatePage { items, total })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn the_mean_of_two_neighbours_is_truncated_and_one_neighbour_is_itself() {
        assert_eq!(mean(Some(3), Some(4)).unwrap(), Some(3));
        assert_eq!(mean(Some(1_073_741_825), Some(2_147_483_650)).unwrap(), Some(1_610_612_737));
        assert_eq!(mean(Some(7), None).unwrap(), Some(7));
        assert_eq!(mean(None, Some(9)).unwrap(), Some(9));
        assert_eq!(mean(None, None).unwrap(), None);
        assert_eq!(mean(Some(i64::MAX), Some(i64::MAX)).unwrap(), Some(i64::MAX));
        assert!(mean(Some(-1), Some(1)).is_err());
    }
}
