//! Storage runs: one per (cluster, storage window), claimed by one replica, completed with its
//! samples, gaps and events in one transaction (see [`super`]).
//!
//! Calendar comparisons (which windows have started, deadlines) use the calendar clock's `now`,
//! passed in; leases and retry times use Postgres' `now()`, on real time, as usage runs do
//! (decision 0037). Raw SQL where the statement needs CTEs, `generate_series` or row values.

use super::sample_id;
use crate::access::{ONLINE_NOT_CONFIGURED, ProjectStorage};
use crate::attribution::Known;
use crate::projection;
use crate::samples::StoreError;
use crate::schema::{storage_gaps, storage_runs, storage_samples};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::StorageRecordedV1;
use hopsbridge_domain::{ClusterId, OwnerId, SampleId, UserId};
use hopsbridge_platform::events::enqueue_all_at;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Adds a pending run for every cluster and every storage window of `len` seconds that has
/// started by calendar Unix seconds `now` since the last one scheduled, going back at most
/// `lookback` seconds (earlier windows are not scheduled at all; those missed while metering
/// was down become gaps). A cluster's first window is the one under way when it is first
/// scheduled, so clusters known before storage was measured get no gaps for that time.
/// Returns how many runs were added.
///
/// # Errors
/// When Postgres fails.
pub async fn schedule(conn: &mut AsyncPgConnection, len: i64, now: i64, lookback: i64) -> QueryResult<usize> {
    let current = now.div_euclid(len) * len;
    let earliest = (now - lookback).div_euclid(len) * len;
    sql_query(
        "WITH due AS (
             SELECT c.cluster_id, s AS start
             FROM clusters c,
                  generate_series(greatest(coalesce(extract(epoch FROM c.storage_scheduled_through)::bigint, $2), $3),
                                  $2, $1) AS s
         ), added AS (
             INSERT INTO storage_runs (cluster_id, window_start, window_end, status, next_attempt_at, deadline)
             SELECT cluster_id, to_timestamp(start), to_timestamp(start + $1), 'pending', now(), to_timestamp(start + $1)
             FROM due
             ON CONFLICT (cluster_id, window_start) DO NOTHING
             RETURNING 1
         ), moved AS (
             UPDATE clusters SET storage_scheduled_through = to_timestamp($2 + $1)
             WHERE storage_scheduled_through IS NULL OR storage_scheduled_through < to_timestamp($2 + $1)
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM added) AS count",
    )
    .bind::<BigInt, _>(len)
    .bind::<BigInt, _>(current)
    .bind::<BigInt, _>(earliest)
    .get_result::<Count>(conn)
    .await
    .map(|c| usize::try_from(c.count).unwrap_or(0))
}

/// Makes a gap of every run whose window ended (calendar `now`) before it was measured: pending,
/// or running with its lease run out. Returns how many.
///
/// # Errors
/// When Postgres fails.
pub async fn sweep(conn: &mut AsyncPgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    sql_query(
        "UPDATE storage_runs SET status = 'gap',
             gap_reason = coalesce(last_error_code, CASE WHEN status = 'running' THEN 'abandoned' ELSE 'not_collected' END),
             gap_detail = coalesce(last_error, CASE WHEN status = 'running'
                 THEN 'the replica reading it stopped and no other took it over before the window ended'
                 ELSE 'no replica read it before the window ended (metering was down or overloaded)' END),
             claimed_by = NULL, lease_until = NULL, finished_at = $1
         WHERE status IN ('pending', 'running') AND deadline <= $1
           AND (status = 'pending' OR lease_until < now())",
    )
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
}

/// A storage run leased to this replica.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
#[diesel(table_name = storage_runs, check_for_backend(diesel::pg::Pg))]
pub struct Claimed {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The window's start.
    pub window_start: DateTime<Utc>,
    /// The window's end (also its deadline).
    pub window_end: DateTime<Utc>,
    /// Tries so far, this one included.
    pub attempts: i32,
}

/// Leases up to `limit` due runs to `replica` for `lease_secs`: pending ones whose retry time
/// has come and running ones whose lease ran out, of windows under way at calendar `now`.
///
/// # Errors
/// When Postgres fails.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    replica: &str,
    limit: i64,
    lease_secs: i64,
    now: DateTime<Utc>,
) -> QueryResult<Vec<Claimed>> {
    sql_query(
        "UPDATE storage_runs SET status = 'running', attempts = attempts + 1, claimed_by = $1,
             lease_until = now() + make_interval(secs => $3)
         WHERE (cluster_id, window_start) IN (
             SELECT cluster_id, window_start FROM storage_runs
             WHERE ((status = 'pending' AND next_attempt_at <= now()) OR (status = 'running' AND lease_until < now()))
               AND window_start <= $4 AND deadline > $4
             ORDER BY window_start, cluster_id
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING cluster_id, window_start, window_end, attempts",
    )
    .bind::<Text, _>(replica)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(lease_secs)
    .bind::<Timestamptz, _>(now)
    .load(conn)
    .await
}

/// Gives back the runs `replica` holds (it is stopping).
///
/// # Errors
/// When Postgres fails.
pub async fn release(conn: &mut AsyncPgConnection, replica: &str) -> QueryResult<usize> {
    sql_query(
        "UPDATE storage_runs SET status = 'pending', claimed_by = NULL, lease_until = NULL, next_attempt_at = now()
         WHERE status = 'running' AND claimed_by = $1",
    )
    .bind::<Text, _>(replica)
    .execute(conn)
    .await
}

/// Records a failed try: pending again after `retry_ms` (real time) when given, a gap with the
/// failure as its reason otherwise. Nothing happens when the run is no longer `replica`'s.
/// Answers the run's new status, if it was still ours.
///
/// # Errors
/// When Postgres fails.
pub async fn failed(
    conn: &mut AsyncPgConnection,
    run: &Claimed,
    replica: &str,
    (code, message): (&str, &str),
    retry_ms: Option<i64>,
    now: DateTime<Utc>,
) -> QueryResult<Option<String>> {
    #[derive(QueryableByName)]
    struct Status {
        #[diesel(sql_type = Text)]
        status: String,
    }
    let status: Option<Status> = sql_query(
        "UPDATE storage_runs SET
             status = CASE WHEN $5::bigint IS NULL THEN 'gap' ELSE 'pending' END,
             next_attempt_at = CASE WHEN $5::bigint IS NULL THEN next_attempt_at
                                    ELSE now() + make_interval(secs => $5::bigint / 1000.0) END,
             last_error_code = $3, last_error = $4,
             gap_reason = CASE WHEN $5::bigint IS NULL THEN $3 END,
             gap_detail = CASE WHEN $5::bigint IS NULL THEN $4 END,
             finished_at = CASE WHEN $5::bigint IS NULL THEN $6 END,
             claimed_by = NULL, lease_until = NULL
         WHERE cluster_id = $1 AND window_start = $2 AND status = 'running' AND claimed_by = $7
         RETURNING status",
    )
    .bind::<SqlUuid, _>(run.cluster_id)
    .bind::<Timestamptz, _>(run.window_start)
    .bind::<Text, _>(code)
    .bind::<Text, _>(message)
    .bind::<diesel::sql_types::Nullable<BigInt>, _>(retry_ms)
    .bind::<Timestamptz, _>(now)
    .bind::<Text, _>(replica)
    .get_result(conn)
    .await
    .optional()?;
    Ok(status.map(|s| s.status))
}

/// What a completed storage run stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Projects whose storage was read.
    pub projects: usize,
    /// Projects Hopsworks did not report (each a storage gap).
    pub unreported: usize,
    /// Projects stored whose online part RonDB did not report (each a storage gap
    /// `online_unreported`, the sample's online bytes 0).
    pub online_unreported: usize,
    /// Samples this run added (the others were stored already).
    pub added: usize,
    /// Of those, attributed to someone and announced.
    pub announced: usize,
}

/// A storage window: the cluster, the window's start and its end.
pub type StorageWindow = (ClusterId, DateTime<Utc>, DateTime<Utc>);

/// One sample to store: a project's bytes held over a whole window, and who is billed.
#[derive(Debug)]
pub struct Row {
    id: SampleId,
    project: ProjectStorage,
    bytes: i64,
    byte_seconds: i64,
    online_bytes: i64,
    online_byte_seconds: i64,
    billed: Option<(UserId, OwnerId)>,
}

impl Row {
    /// Project `p` holding `offline` and `online` bytes for the whole of `window`, attributed by
    /// `known` (the projection at the window's start) to its creator and their owner, or to
    /// nobody when the creator holds no account on the cluster.
    ///
    /// # Errors
    /// When the bytes or their byte-seconds do not fit 64 bits.
    pub fn held(
        window: StorageWindow,
        p: &ProjectStorage,
        (offline, online): (u64, u64),
        known: &Known,
    ) -> Result<Self, StoreError> {
        let (cluster, start, end) = window;
        let secs = (end - start).num_seconds();
        let fit = |what: &str, bytes: u64| {
            let overflow =
                || StoreError::Overflow(format!("project {} holds {bytes} bytes{what}: too many to count", p.id));
            let fitted = i64::try_from(bytes).map_err(|_| overflow())?;
            Ok::<_, StoreError>((fitted, fitted.checked_mul(secs).ok_or_else(overflow)?))
        };
        let (bytes, byte_seconds) = fit("", offline)?;
        let (online_bytes, online_byte_seconds) = fit(" online", online)?;
        let user = p.creator_username.as_ref().and_then(|name| known.accounts.get(name)).copied();
        let billed = user.map(|u| (u, known.owners.get(&u).copied().unwrap_or_else(|| u.as_owner())));
        Ok(Self {
            id: sample_id(cluster, p.id, start.timestamp()),
            project: p.clone(),
            bytes,
            byte_seconds,
            online_bytes,
            online_byte_seconds,
            billed,
        })
    }

    /// The sample's id.
    #[must_use]
    pub const fn id(&self) -> SampleId {
        self.id
    }
}

/// Inserts `rows` of `window` (a row whose key is stored already is left as it is), taken at
/// calendar `measured_at` and marked `estimated` or not, and enqueues one `StorageRecordedV1`
/// per new attributed sample occurring at `occurred_at`, in the caller's transaction. Answers
/// the samples added and how many were announced.
///
/// # Errors
/// When Postgres fails.
pub async fn store(
    conn: &mut AsyncPgConnection,
    window: StorageWindow,
    rows: &[Row],
    (measured_at, estimated): (DateTime<Utc>, bool),
    occurred_at: DateTime<Utc>,
) -> Result<(Vec<SampleId>, usize), StoreError> {
    let (cluster, start, end) = window;
    let mut added: Vec<SampleId> = Vec::new();
    // 16 parameters a row, well inside Postgres' 65,535 per statement.
    for chunk in rows.chunks(2000) {
        let values: Vec<_> = chunk
            .iter()
            .map(|r| {
                (
                    storage_samples::id.eq(r.id),
                    storage_samples::cluster_id.eq(cluster),
                    storage_samples::project_id.eq(r.project.id),
                    storage_samples::window_start.eq(start),
                    storage_samples::window_end.eq(end),
                    storage_samples::namespace.eq(&r.project.namespace),
                    storage_samples::project_name.eq(&r.project.name),
                    storage_samples::creator_username.eq(r.project.creator_username.as_deref()),
                    storage_samples::user_id.eq(r.billed.map(|(u, _)| u)),
                    storage_samples::owner_user_id.eq(r.billed.map(|(_, o)| o)),
                    storage_samples::offline_bytes.eq(r.bytes),
                    storage_samples::online_bytes.eq(r.online_bytes),
                    storage_samples::offline_byte_seconds.eq(r.byte_seconds),
                    storage_samples::online_byte_seconds.eq(r.online_byte_seconds),
                    storage_samples::measured_at.eq(measured_at),
                    storage_samples::estimated.eq(estimated),
                )
            })
            .collect();
        let ids: Vec<SampleId> = diesel::insert_into(storage_samples::table)
            .values(values)
            .on_conflict((storage_samples::cluster_id, storage_samples::project_id, storage_samples::window_start))
            .do_nothing()
            .returning(storage_samples::id)
            .get_results(conn)
            .await?;
        added.extend(ids);
    }
    let events: Vec<StorageRecordedV1> = rows
        .iter()
        .filter(|r| added.contains(&r.id))
        .filter_map(|r| r.billed.map(|billed| event(window, r, billed, (measured_at, estimated))))
        .collect();
    enqueue_all_at(conn, &events, None, occurred_at).await?;
    Ok((added, events.len()))
}

/// How a run measured online storage, kept in `storage_runs.online`: `measured`,
/// `online_not_configured` (the cluster has no RonDB endpoint: online storage is not billed
/// there) or `online_unreported` (RonDB could not be read: each project a gap); null for a run
/// without projects.
fn online_status(snapshot: &[ProjectStorage]) -> Option<&'static str> {
    let first = snapshot.first()?;
    Some(match &first.online {
        Ok(_) => "measured",
        Err(why) if why == ONLINE_NOT_CONFIGURED => ONLINE_NOT_CONFIGURED,
        Err(_) => "online_unreported",
    })
}

async fn gap(
    conn: &mut AsyncPgConnection,
    run: &Claimed,
    p: &ProjectStorage,
    reason: &str,
    detail: &str,
) -> QueryResult<usize> {
    diesel::insert_into(storage_gaps::table)
        .values((
            storage_gaps::cluster_id.eq(run.cluster_id),
            storage_gaps::project_id.eq(p.id),
            storage_gaps::window_start.eq(run.window_start),
            storage_gaps::namespace.eq(&p.namespace),
            storage_gaps::reason.eq(reason),
            storage_gaps::detail.eq(detail),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await
}

/// Stores a run's snapshot taken at calendar `measured_at`, if the run is still leased to
/// `replica` (answers `None` otherwise): the samples, the gaps, one `StorageRecordedV1` per new
/// attributed sample, and the run complete.
///
/// # Errors
/// When Postgres fails, or a project's byte-seconds do not fit 64 bits.
pub async fn complete(
    conn: &mut AsyncPgConnection,
    run: &Claimed,
    replica: &str,
    snapshot: &[ProjectStorage],
    measured_at: DateTime<Utc>,
) -> Result<Option<Stored>, StoreError> {
    let held: Option<(String, Option<String>)> = storage_runs::table
        .find((run.cluster_id, run.window_start))
        .select((storage_runs::status, storage_runs::claimed_by))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    if !held.is_some_and(|(status, by)| status == "running" && by.as_deref() == Some(replica)) {
        return Ok(None);
    }
    let window = (run.cluster_id, run.window_start, run.window_end);
    let known = projection::known(conn, run.cluster_id, run.window_start).await?;
    let mut rows = Vec::new();
    let mut stored = Stored::default();
    for p in snapshot {
        // One gap per project and window: the offline part's, which also names the online
        // part's failure when both failed.
        let online_failure = p.online.as_ref().err().filter(|why| *why != ONLINE_NOT_CONFIGURED);
        let bytes = match &p.offline {
            Ok(bytes) => *bytes,
            Err(why) => {
                stored.unreported += 1;
                let detail = online_failure.map_or_else(|| why.clone(), |online| format!("{why}; online: {online}"));
                gap(conn, run, p, "storage_unreported", &detail).await?;
                continue;
            }
        };
        stored.projects += 1;
        let online = match (&p.online, online_failure) {
            (Ok(bytes), _) => *bytes,
            (Err(_), None) => 0,
            (Err(_), Some(why)) => {
                stored.online_unreported += 1;
                gap(conn, run, p, "online_unreported", why).await?;
                0
            }
        };
        rows.push(Row::held(window, p, (bytes, online), &known)?);
    }
    let (added, announced) = store(conn, window, &rows, (measured_at, false), measured_at).await?;
    stored.added = added.len();
    stored.announced = announced;
    sql_query(
        "UPDATE storage_runs SET status = 'complete', projects = $3, unreported = $4, measured_at = $5,
             finished_at = $5, claimed_by = NULL, lease_until = NULL, last_error = NULL, last_error_code = NULL,
             online = $6
         WHERE cluster_id = $1 AND window_start = $2",
    )
    .bind::<SqlUuid, _>(run.cluster_id)
    .bind::<Timestamptz, _>(run.window_start)
    .bind::<Integer, _>(i32::try_from(stored.projects).unwrap_or(i32::MAX))
    .bind::<Integer, _>(i32::try_from(stored.unreported).unwrap_or(i32::MAX))
    .bind::<Timestamptz, _>(measured_at)
    .bind::<diesel::sql_types::Nullable<Text>, _>(online_status(snapshot))
    .execute(conn)
    .await?;
    Ok(Some(stored))
}

/// The StorageRecorded announcing a sample of `window` billed to `owner` for `user`'s project.
fn event(
    window: StorageWindow,
    r: &Row,
    (user, owner): (UserId, OwnerId),
    (measured_at, estimated): (DateTime<Utc>, bool),
) -> StorageRecordedV1 {
    let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
    let (cluster, start, end) = window;
    StorageRecordedV1 {
        sample_id: r.id.to_string(),
        cluster_id: cluster.to_string(),
        project_id: r.project.id.get(),
        namespace: r.project.namespace.clone(),
        owner_user_id: owner.to_string(),
        user_id: user.to_string(),
        window_start_unix_seconds: start.timestamp(),
        window_end_unix_seconds: end.timestamp(),
        offline_bytes: non_negative(r.bytes),
        online_bytes: non_negative(r.online_bytes),
        offline_byte_seconds: non_negative(r.byte_seconds),
        online_byte_seconds: non_negative(r.online_byte_seconds),
        measured_at_unix_seconds: measured_at.timestamp(),
        estimated,
    }
}
