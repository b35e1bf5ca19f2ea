//! Runs: one per (cluster, window), the claim that makes a window's measurement happen exactly
//! once however many replicas run, and the transaction that stores what it measured.
//!
//! - [`schedule`] adds a `pending` run for every measured cluster and every window that has
//!   ended (and settled) since the last one scheduled, going back at most `lookback_secs`.
//! - [`claim`] leases due runs to one replica (`FOR UPDATE SKIP LOCKED`): pending ones whose
//!   time has come, and running ones whose replica's lease ran out (it died mid-window).
//! - [`complete`] stores the samples, adds the attributed ones to `usage_daily` and writes one
//!   `UsageRecordedV1` per new attributed sample to the outbox, in one transaction, and only
//!   while the run is still leased to the replica: a replica that lost its lease writes
//!   nothing. The samples' unique key (cluster, namespace, username, window) is the last guard.
//! - [`failed`] puts a run back to pending with a backoff, or makes it a gap; [`sweep`] makes a
//!   gap of every run that can no longer be measured in time.

use crate::attribution::{self, Attributed, Attribution, Known, Project};
use crate::collect::{CollectStats, Collection};
use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::UsageRecordedV1;
use hopsbridge_platform::db::{DbError, RetryableError};
use hopsbridge_platform::events::enqueue_all;
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

type Result<T> = std::result::Result<T, diesel::result::Error>;

/// Run statuses.
pub mod status {
    /// Waiting for its time, or for a retry.
    pub const PENDING: &str = "pending";
    /// Leased to a replica that is collecting it.
    pub const RUNNING: &str = "running";
    /// Measured and stored.
    pub const COMPLETE: &str = "complete";
    /// Could not be measured; see the reason.
    pub const GAP: &str = "gap";
    /// Every status.
    pub const ALL: [&str; 4] = [PENDING, RUNNING, COMPLETE, GAP];
}

/// When windows are scheduled and how long they stay collectable.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Window length, seconds.
    pub window_secs: i64,
    /// Seconds after a window's end before it is collected.
    pub settle_secs: i64,
    /// Seconds after a window's end after which it is a gap.
    pub deadline_secs: i64,
    /// How far back windows are scheduled, seconds.
    pub lookback_secs: i64,
}

/// Adds the runs of every window that has ended and settled at `now` (Unix seconds) for every
/// measured cluster. Returns how many were added.
///
/// # Errors
/// When Postgres fails.
pub async fn schedule(conn: &mut AsyncPgConnection, t: Timing, now: i64) -> Result<usize> {
    let len = t.window_secs;
    // The end of the last window whose settling time has passed, and the earliest start looked at.
    let last_end = (now - t.settle_secs).div_euclid(len) * len;
    let earliest = (now - t.lookback_secs).div_euclid(len) * len;
    sql_query(
        "WITH measured AS (
             SELECT cluster_id,
                    greatest(coalesce(extract(epoch FROM scheduled_through)::bigint,
                                      ceil(extract(epoch FROM measured_from) / $1)::bigint * $1),
                             $3) AS first_start
             FROM clusters WHERE status <> 'inactive'
         ), due AS (
             SELECT m.cluster_id, s AS start
             FROM measured m, generate_series(m.first_start, $2 - $1, $1) AS s
         ), added AS (
             INSERT INTO runs (cluster_id, window_start, window_end, status, next_attempt_at, deadline)
             SELECT cluster_id, to_timestamp(start), to_timestamp(start + $1), 'pending',
                    to_timestamp(start + $1 + $4), to_timestamp(start + $1 + $5)
             FROM due
             ON CONFLICT (cluster_id, window_start) DO NOTHING
             RETURNING 1
         ), moved AS (
             UPDATE clusters SET scheduled_through = to_timestamp($2)
             WHERE status <> 'inactive' AND (scheduled_through IS NULL OR scheduled_through < to_timestamp($2))
               AND ceil(extract(epoch FROM measured_from) / $1)::bigint * $1 < $2
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM added) AS count",
    )
    .bind::<BigInt, _>(len)
    .bind::<BigInt, _>(last_end)
    .bind::<BigInt, _>(earliest)
    .bind::<BigInt, _>(t.settle_secs)
    .bind::<BigInt, _>(t.deadline_secs)
    .get_result::<Count>(conn)
    .await
    .map(|c| usize::try_from(c.count).unwrap_or(0))
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Makes a gap of every run that can no longer be measured in time: pending past its deadline,
/// or running past its deadline with its lease run out. Returns how many.
///
/// # Errors
/// When Postgres fails.
pub async fn sweep(conn: &mut AsyncPgConnection) -> Result<usize> {
    sql_query(
        "UPDATE runs SET status = 'gap',
             gap_reason = coalesce(last_error_code, CASE WHEN status = 'running' THEN 'abandoned' ELSE 'not_collected' END),
             gap_detail = coalesce(last_error, CASE WHEN status = 'running'
                 THEN 'the replica collecting it stopped and no other took it over before the deadline'
                 ELSE 'no replica collected it before the deadline (metering was down or overloaded)' END),
             claimed_by = NULL, lease_until = NULL, finished_at = now()
         WHERE status IN ('pending', 'running') AND deadline <= now()
           AND (status = 'pending' OR lease_until < now())",
    )
    .execute(conn)
    .await
}

/// A run leased to this replica.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Claimed {
    /// The cluster.
    #[diesel(sql_type = SqlUuid)]
    pub cluster_id: Uuid,
    /// The window's start.
    #[diesel(sql_type = Timestamptz)]
    pub window_start: DateTime<Utc>,
    /// The window's end.
    #[diesel(sql_type = Timestamptz)]
    pub window_end: DateTime<Utc>,
    /// Tries so far, this one included.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// After this the run is a gap.
    #[diesel(sql_type = Timestamptz)]
    pub deadline: DateTime<Utc>,
}

/// Leases up to `limit` due runs to `replica` for `lease_secs`, oldest window first.
///
/// # Errors
/// When Postgres fails.
pub async fn claim(conn: &mut AsyncPgConnection, replica: &str, limit: i64, lease_secs: i64) -> Result<Vec<Claimed>> {
    sql_query(
        "UPDATE runs SET status = 'running', claimed_by = $1, lease_until = now() + make_interval(secs => $3),
             attempts = attempts + 1, started_at = coalesce(started_at, now())
         WHERE (cluster_id, window_start) IN (
             SELECT cluster_id, window_start FROM runs
             WHERE (status = 'pending' OR (status = 'running' AND lease_until < now()))
               AND next_attempt_at <= now() AND deadline > now()
             ORDER BY window_start, cluster_id
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING cluster_id, window_start, window_end, attempts, deadline",
    )
    .bind::<Text, _>(replica)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(lease_secs)
    .load(conn)
    .await
}

/// Gives back the runs `replica` holds (it is stopping), for another replica to take at once.
///
/// # Errors
/// When Postgres fails.
pub async fn release(conn: &mut AsyncPgConnection, replica: &str) -> Result<usize> {
    sql_query(
        "UPDATE runs SET status = 'pending', claimed_by = NULL, lease_until = NULL, next_attempt_at = now()
         WHERE status = 'running' AND claimed_by = $1",
    )
    .bind::<Text, _>(replica)
    .execute(conn)
    .await
}

/// Records a failed try: back to pending at `retry_at` when that is before the deadline and
/// tries remain, a gap with the failure as its reason otherwise. Nothing happens when the run
/// is no longer leased to `replica`. Returns the run's new status, if it was still ours.
///
/// # Errors
/// When Postgres fails.
pub async fn failed(
    conn: &mut AsyncPgConnection,
    run: &Claimed,
    replica: &str,
    code: &str,
    message: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<Option<String>> {
    #[derive(QueryableByName)]
    struct Status {
        #[diesel(sql_type = Text)]
        status: String,
    }
    let rows: Vec<Status> = sql_query(
        "UPDATE runs SET
             status = CASE WHEN $5::timestamptz IS NOT NULL AND $5 < deadline THEN 'pending' ELSE 'gap' END,
             next_attempt_at = coalesce($5, next_attempt_at),
             last_error_code = $3, last_error = $4,
             gap_reason = CASE WHEN $5::timestamptz IS NOT NULL AND $5 < deadline THEN NULL ELSE $3 END,
             gap_detail = CASE WHEN $5::timestamptz IS NOT NULL AND $5 < deadline THEN NULL ELSE $4 END,
             finished_at = CASE WHEN $5::timestamptz IS NOT NULL AND $5 < deadline THEN NULL ELSE now() END,
             claimed_by = NULL, lease_until = NULL
         WHERE cluster_id = $1 AND window_start = $2 AND status = 'running' AND claimed_by = $6
         RETURNING status",
    )
    .bind::<SqlUuid, _>(run.cluster_id)
    .bind::<Timestamptz, _>(run.window_start)
    .bind::<Text, _>(code)
    .bind::<Text, _>(message)
    .bind::<Nullable<Timestamptz>, _>(retry_at)
    .bind::<Text, _>(replica)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(|r| r.status))
}

/// What is known about `cluster` now: its projects and current accounts, and the current
/// owners of those account holders.
///
/// # Errors
/// When Postgres fails.
pub async fn known(conn: &mut AsyncPgConnection, cluster: Uuid) -> Result<Known> {
    #[derive(QueryableByName)]
    struct P {
        #[diesel(sql_type = Text)]
        namespace: String,
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        creator_username: String,
    }
    #[derive(QueryableByName)]
    struct A {
        #[diesel(sql_type = Text)]
        hopsworks_username: String,
        #[diesel(sql_type = SqlUuid)]
        user_id: Uuid,
        #[diesel(sql_type = Nullable<SqlUuid>)]
        owner_user_id: Option<Uuid>,
    }
    let projects: Vec<P> =
        sql_query("SELECT namespace, project_id, name, creator_username FROM projects WHERE cluster_id = $1")
            .bind::<SqlUuid, _>(cluster)
            .load(conn)
            .await?;
    let accounts: Vec<A> = sql_query(
        "SELECT a.hopsworks_username, a.user_id,
                CASE WHEN m.removed_at IS NULL OR m.removed_at < m.joined_at THEN m.owner_user_id END AS owner_user_id
         FROM accounts a LEFT JOIN memberships m ON m.member_user_id = a.user_id AND m.joined_at IS NOT NULL
         WHERE a.cluster_id = $1 AND a.hopsworks_username IS NOT NULL AND a.assigned_at IS NOT NULL
           AND (a.unassigned_at IS NULL OR a.unassigned_at < a.assigned_at)",
    )
    .bind::<SqlUuid, _>(cluster)
    .load(conn)
    .await?;
    Ok(Known {
        projects: projects
            .into_iter()
            .map(|p| (p.namespace, Project { id: p.project_id, name: p.name, creator_username: p.creator_username }))
            .collect(),
        owners: accounts.iter().filter_map(|a| Some((a.user_id, a.owner_user_id?))).collect(),
        accounts: accounts.into_iter().map(|a| (a.hopsworks_username, a.user_id)).collect(),
    })
}

/// Replaces the stored project list of `cluster` with a fresh one from Hopsworks.
///
/// # Errors
/// When Postgres fails.
pub async fn store_projects(conn: &mut AsyncPgConnection, cluster: Uuid, projects: &[(String, Project)]) -> Result<()> {
    sql_query("DELETE FROM projects WHERE cluster_id = $1").bind::<SqlUuid, _>(cluster).execute(conn).await?;
    let (namespaces, ids, names, creators): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) = projects
        .iter()
        .map(|(ns, p)| (ns.clone(), p.id, p.name.clone(), p.creator_username.clone()))
        .fold((vec![], vec![], vec![], vec![]), |mut acc, (a, b, c, d)| {
            acc.0.push(a);
            acc.1.push(b);
            acc.2.push(c);
            acc.3.push(d);
            acc
        });
    sql_query(
        "INSERT INTO projects (cluster_id, namespace, project_id, name, creator_username)
         SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[])
         ON CONFLICT (cluster_id, namespace) DO NOTHING",
    )
    .bind::<SqlUuid, _>(cluster)
    .bind::<Array<Text>, _>(namespaces)
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Array<Text>, _>(names)
    .bind::<Array<Text>, _>(creators)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether any project of `cluster` was ever listed.
///
/// # Errors
/// When Postgres fails.
pub async fn has_projects(conn: &mut AsyncPgConnection, cluster: Uuid) -> Result<bool> {
    sql_query("SELECT count(*) AS count FROM projects WHERE cluster_id = $1")
        .bind::<SqlUuid, _>(cluster)
        .get_result::<Count>(conn)
        .await
        .map(|c| c.count > 0)
}

/// What a completed run records about itself (the `stats` column).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunStats {
    /// The collection's counters.
    pub collect: CollectStats,
    /// Samples attributed to a user.
    pub attributed: u64,
    /// Samples whose username holds no account on the cluster.
    pub unknown_user: u64,
    /// Samples outside the cluster's projects.
    pub unknown_project: u64,
    /// Samples this run added (the others were stored already).
    pub added: u64,
    /// Whether the project list came from an earlier listing (Hopsworks did not answer).
    pub projects_from_earlier_listing: bool,
}

/// Why a measurement could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A quantity does not fit the store (far beyond any real cluster).
    #[error("{0}")]
    Overflow(String),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

impl RetryableError for StoreError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}

/// Stores a run's measurement, if the run is still leased to `replica` (see the module
/// documentation). Returns the stats recorded, or `None` when the run was not ours any more.
///
/// # Errors
/// When Postgres fails or a quantity overflows.
pub async fn complete(
    conn: &mut AsyncPgConnection,
    run: &Claimed,
    replica: &str,
    collection: &Collection,
    projects_from_earlier_listing: bool,
) -> std::result::Result<Option<RunStats>, StoreError> {
    #[derive(QueryableByName)]
    struct Held {
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = Nullable<Text>)]
        claimed_by: Option<String>,
    }
    let held: Vec<Held> =
        sql_query("SELECT status, claimed_by FROM runs WHERE cluster_id = $1 AND window_start = $2 FOR UPDATE")
            .bind::<SqlUuid, _>(run.cluster_id)
            .bind::<Timestamptz, _>(run.window_start)
            .load(conn)
            .await?;
    if !<[Held]>::first(&held).is_some_and(|h| h.status == status::RUNNING && h.claimed_by.as_deref() == Some(replica))
    {
        return Ok(None);
    }
    let known = known(conn, run.cluster_id).await?;
    let samples = attribution::attribute(&collection.usage, &known);
    let mut stats = RunStats { collect: collection.stats, projects_from_earlier_listing, ..RunStats::default() };
    for s in &samples {
        match s.attribution {
            Attribution::Attributed { .. } => stats.attributed += 1,
            Attribution::UnknownUser => stats.unknown_user += 1,
            Attribution::UnknownProject => stats.unknown_project += 1,
        }
    }
    let added = insert_samples(conn, run, &samples).await?;
    stats.added = u64::try_from(added.len()).unwrap_or(u64::MAX);
    let billed: Vec<&(Uuid, &Attributed)> =
        added.iter().filter(|(_, s)| matches!(s.attribution, Attribution::Attributed { .. })).collect();
    if !billed.is_empty() {
        let ids: Vec<Uuid> = billed.iter().map(|(id, _)| *id).collect();
        sql_query(
            "INSERT INTO usage_daily (day, user_id, owner_user_id, cluster_id, namespace,
                                      cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, samples)
             SELECT (window_start AT TIME ZONE 'UTC')::date, user_id, owner_user_id, cluster_id, namespace,
                    sum(cpu_nanocore_seconds), sum(memory_byte_seconds), sum(gpu_seconds), count(*)
             FROM samples WHERE id = ANY($1)
             GROUP BY 1, 2, 3, 4, 5
             ON CONFLICT (day, user_id, owner_user_id, cluster_id, namespace) DO UPDATE SET
                 cpu_nanocore_seconds = usage_daily.cpu_nanocore_seconds + excluded.cpu_nanocore_seconds,
                 memory_byte_seconds = usage_daily.memory_byte_seconds + excluded.memory_byte_seconds,
                 gpu_seconds = usage_daily.gpu_seconds + excluded.gpu_seconds,
                 samples = usage_daily.samples + excluded.samples,
                 updated_at = now()",
        )
        .bind::<Array<SqlUuid>, _>(ids)
        .execute(conn)
        .await?;
        let events: Vec<UsageRecordedV1> = billed.iter().map(|(id, s)| event(*id, run, s)).collect();
        enqueue_all(conn, &events, None).await?;
    }
    let stats_json = serde_json::to_value(&stats).unwrap_or_default();
    sql_query(
        "UPDATE runs SET status = 'complete', stats = $3, sample_count = $4, finished_at = now(),
             lease_until = NULL, last_error = NULL, last_error_code = NULL
         WHERE cluster_id = $1 AND window_start = $2",
    )
    .bind::<SqlUuid, _>(run.cluster_id)
    .bind::<Timestamptz, _>(run.window_start)
    .bind::<Jsonb, _>(stats_json)
    .bind::<Integer, _>(i32::try_from(samples.len()).unwrap_or(i32::MAX))
    .execute(conn)
    .await?;
    Ok(Some(stats))
}

fn event(id: Uuid, run: &Claimed, s: &Attributed) -> UsageRecordedV1 {
    let (user, owner) = match s.attribution {
        Attribution::Attributed { user, owner } => (user, owner),
        Attribution::UnknownUser | Attribution::UnknownProject => (Uuid::nil(), Uuid::nil()),
    };
    let u = s.usage.usage;
    UsageRecordedV1 {
        sample_id: id.to_string(),
        cluster_id: run.cluster_id.to_string(),
        namespace: s.namespace.clone(),
        user_id: user.to_string(),
        owner_user_id: owner.to_string(),
        window_start_unix_seconds: run.window_start.timestamp(),
        window_end_unix_seconds: run.window_end.timestamp(),
        cpu_core_hours: u.cpu_core_hours().to_decimal().text,
        memory_gib_hours: u.memory_gib_hours().to_decimal().text,
        gpu_hours: u.gpu_hours().to_decimal().text,
        estimated: false,
        hopsworks_username: s.username.clone(),
        project_id: s.project.as_ref().map_or(0, |p| p.id),
        cpu_nanocore_seconds: u64::try_from(u.cpu_nanocore_seconds).unwrap_or(u64::MAX),
        memory_byte_seconds: u64::try_from(u.memory_byte_seconds).unwrap_or(u64::MAX),
        gpu_seconds: u64::try_from(u.gpu_seconds).unwrap_or(u64::MAX),
        pods: s.usage.pods,
    }
}

fn fit(what: &str, value: u128, s: &Attributed) -> std::result::Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Overflow(format!("{}/{}: {what} of {value} does not fit a 64-bit integer", s.namespace, s.username))
    })
}

/// Inserts the samples not stored yet; returns the new ones with their ids.
async fn insert_samples<'a>(
    conn: &mut AsyncPgConnection,
    run: &Claimed,
    samples: &'a [Attributed],
) -> std::result::Result<Vec<(Uuid, &'a Attributed)>, StoreError> {
    #[derive(QueryableByName)]
    struct Added {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Text)]
        namespace: String,
        #[diesel(sql_type = Text)]
        hopsworks_username: String,
    }
    let mut added = Vec::new();
    for chunk in samples.chunks(5000) {
        let mut cols = SampleColumns::default();
        for s in chunk {
            let (user, owner) = match s.attribution {
                Attribution::Attributed { user, owner } => (Some(user), Some(owner)),
                Attribution::UnknownUser | Attribution::UnknownProject => (None, None),
            };
            cols.id.push(Uuid::now_v7());
            cols.namespace.push(s.namespace.clone());
            cols.username.push(s.username.clone());
            cols.attribution.push(s.attribution.code().to_owned());
            cols.user.push(user);
            cols.owner.push(owner);
            cols.project_id.push(s.project.as_ref().map(|p| p.id));
            cols.project_name.push(s.project.as_ref().map(|p| p.name.clone()));
            cols.cpu.push(fit("CPU nanocore-seconds", s.usage.usage.cpu_nanocore_seconds, s)?);
            cols.memory.push(fit("memory byte-seconds", s.usage.usage.memory_byte_seconds, s)?);
            cols.gpu.push(fit("GPU-seconds", s.usage.usage.gpu_seconds, s)?);
            cols.pods.push(i32::try_from(s.usage.pods).unwrap_or(i32::MAX));
        }
        let rows: Vec<Added> = sql_query(
            "INSERT INTO samples (id, cluster_id, window_start, window_end, namespace, hopsworks_username, attribution,
                                  user_id, owner_user_id, project_id, project_name,
                                  cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, pods)
             SELECT u.id, $1, $2, $3, u.namespace, u.username, u.attribution, u.user_id, u.owner_user_id,
                    u.project_id, u.project_name, u.cpu, u.memory, u.gpu, u.pods
             FROM unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::uuid[], $9::uuid[], $10::bigint[],
                         $11::text[], $12::bigint[], $13::bigint[], $14::bigint[], $15::int[])
                  AS u(id, namespace, username, attribution, user_id, owner_user_id, project_id, project_name,
                       cpu, memory, gpu, pods)
             ON CONFLICT (cluster_id, namespace, hopsworks_username, window_start) DO NOTHING
             RETURNING id, namespace, hopsworks_username",
        )
        .bind::<SqlUuid, _>(run.cluster_id)
        .bind::<Timestamptz, _>(run.window_start)
        .bind::<Timestamptz, _>(run.window_end)
        .bind::<Array<SqlUuid>, _>(cols.id)
        .bind::<Array<Text>, _>(cols.namespace)
        .bind::<Array<Text>, _>(cols.username)
        .bind::<Array<Text>, _>(cols.attribution)
        .bind::<Array<Nullable<SqlUuid>>, _>(cols.user)
        .bind::<Array<Nullable<SqlUuid>>, _>(cols.owner)
        .bind::<Array<Nullable<BigInt>>, _>(cols.project_id)
        .bind::<Array<Nullable<Text>>, _>(cols.project_name)
        .bind::<Array<BigInt>, _>(cols.cpu)
        .bind::<Array<BigInt>, _>(cols.memory)
        .bind::<Array<BigInt>, _>(cols.gpu)
        .bind::<Array<Integer>, _>(cols.pods)
        .load(conn)
        .await?;
        let by_key: HashMap<(&str, &str), &Attributed> =
            chunk.iter().map(|s| ((s.namespace.as_str(), s.username.as_str()), s)).collect();
        for r in rows {
            if let Some(s) = by_key.get(&(r.namespace.as_str(), r.hopsworks_username.as_str())) {
                added.push((r.id, *s));
            }
        }
    }
    Ok(added)
}

#[derive(Default)]
struct SampleColumns {
    id: Vec<Uuid>,
    namespace: Vec<String>,
    username: Vec<String>,
    attribution: Vec<String>,
    user: Vec<Option<Uuid>>,
    owner: Vec<Option<Uuid>>,
    project_id: Vec<Option<i64>>,
    project_name: Vec<Option<String>>,
    cpu: Vec<i64>,
    memory: Vec<i64>,
    gpu: Vec<i64>,
    pods: Vec<i32>,
}
