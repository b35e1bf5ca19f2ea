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
//! - [`collect_now`] makes a cluster's last window due at once; [`list`] pages through runs.
//!
//! Calendar comparisons (which windows have ended, deadlines, when a run finished) use the
//! calendar clock's `now`, passed in; leases and retry times are compared with Postgres'
//! `now()`, on real time (decision 0037). Queries use diesel's DSL; the raw SQL ones say why.

use crate::attribution::{self, Attributed};
use crate::collect::{CollectStats, Collection, Source};
use crate::projection;
use crate::samples::{self, StoreError};
use crate::schema::{clusters, readings, run_pods, runs};
use crate::usage_daily;
use chrono::{DateTime, Utc};
use diesel::dsl;
use diesel::dsl::case_when;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::UsageRecordedV1;
use hopsbridge_domain::{Attribution, ClusterId, ClusterStatus, OwnerId, RunState, SampleId, UserId};
use hopsbridge_platform::events::enqueue_all_at;
use serde::Serialize;

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

/// Which clusters are measured by which source when scheduling: the default, and the clusters
/// that differ from it.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The source of every cluster not named below.
    pub default: Source,
    /// Clusters measured by `point` whatever the default.
    pub point: Vec<ClusterId>,
    /// Clusters measured by `readings` whatever the default.
    pub readings: Vec<ClusterId>,
}

/// Adds the runs of every measured cluster (every cluster but an inactive one whose projects'
/// namespaces were found without pods) due at once, at calendar Unix seconds `now`: for a
/// cluster measured by `point`, every window that has ended and settled; for one measured by
/// `readings`, every window that has started, since its run reads from the window's start to
/// its end. Each run records its cluster's source.
///
/// # Errors
/// When Postgres fails.
pub async fn schedule(conn: &mut AsyncPgConnection, t: Timing, now: i64, sources: &Sources) -> QueryResult<usize> {
    let len = t.window_secs;
    // The end of the last window whose settling time has passed, the end of the window under
    // way, and the earliest start looked at.
    let last_end = (now - t.settle_secs).div_euclid(len) * len;
    let current_end = now.div_euclid(len) * len + len;
    let earliest = (now - t.lookback_secs).div_euclid(len) * len;
    let ids = |v: &[ClusterId]| v.iter().map(|c| uuid::Uuid::from(*c)).collect::<Vec<_>>();
    // Raw SQL: one statement of CTEs over generate_series schedules every cluster's windows and
    // moves its scheduled_through; the DSL has neither CTEs nor generate_series.
    sql_query(
        "WITH sourced AS (
             SELECT c.*, CASE WHEN cluster_id = ANY($6) THEN 'point' WHEN cluster_id = ANY($7) THEN 'readings'
                              ELSE $5 END AS source
             FROM clusters c WHERE status <> 'inactive' OR drained_at IS NULL
         ), measured AS (
             SELECT cluster_id, source, measured_from, scheduled_through,
                    greatest(coalesce(extract(epoch FROM scheduled_through)::bigint,
                                      ceil(extract(epoch FROM measured_from) / $1)::bigint * $1),
                             $3) AS first_start,
                    CASE WHEN source = 'readings' THEN $8 ELSE $2 END AS through
             FROM sourced
         ), due AS (
             SELECT m.cluster_id, m.source, s AS start
             FROM measured m, generate_series(m.first_start, m.through - $1, $1) AS s
         ), added AS (
             INSERT INTO runs (cluster_id, window_start, window_end, status, next_attempt_at, deadline, source)
             SELECT cluster_id, to_timestamp(start), to_timestamp(start + $1), 'pending',
                    now(), to_timestamp(start + $1 + $4), source
             FROM due
             ON CONFLICT (cluster_id, window_start) DO NOTHING
             RETURNING 1
         ), moved AS (
             UPDATE clusters c SET scheduled_through = to_timestamp(m.through)
             FROM measured m
             WHERE c.cluster_id = m.cluster_id
               AND (m.scheduled_through IS NULL OR m.scheduled_through < to_timestamp(m.through))
               AND ceil(extract(epoch FROM m.measured_from) / $1)::bigint * $1 < m.through
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM added) AS count",
    )
    .bind::<BigInt, _>(len)
    .bind::<BigInt, _>(last_end)
    .bind::<BigInt, _>(earliest)
    .bind::<BigInt, _>(t.deadline_secs)
    .bind::<Text, _>(sources.default.as_str())
    .bind::<Array<SqlUuid>, _>(ids(&sources.point))
    .bind::<Array<SqlUuid>, _>(ids(&sources.readings))
    .bind::<BigInt, _>(current_end)
    .get_result::<Count>(conn)
    .await
    .map(|c| usize::try_from(c.count).unwrap_or(0))
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Makes a gap of every run that can no longer be measured in time: pending past its deadline
/// at calendar time `now`, or running past it with its lease run out, and drops the readings
/// kept for gaps past their deadline. When `keep_secs` is given (a gap policy estimates from
/// readings, decision 0069), a gap's readings are kept that many seconds past its deadline
/// unless it has its estimate already. Returns how many runs became gaps.
///
/// # Errors
/// When Postgres fails.
pub async fn sweep(conn: &mut AsyncPgConnection, now: DateTime<Utc>, keep_secs: Option<i64>) -> QueryResult<usize> {
    let running = || runs::status.eq(RunState::Running);
    let gaps = diesel::update(
        runs::table
            .filter(runs::status.eq_any([RunState::Pending, RunState::Running]))
            .filter(runs::deadline.le(now))
            .filter(runs::status.eq(RunState::Pending).or(runs::lease_until.lt(dsl::now))),
    )
    .set((
        runs::status.eq(RunState::Gap),
        // The last failure's code and message when there was one, or why nobody measured it.
        runs::gap_reason.eq(case_when::<_, _, Nullable<Text>>(
            runs::last_error_code.is_not_null(),
            runs::last_error_code,
        )
        .when(running(), "abandoned")
        .otherwise("not_collected")),
        runs::gap_detail.eq(case_when::<_, _, Nullable<Text>>(runs::last_error.is_not_null(), runs::last_error)
            .when(running(), "the replica collecting it stopped and no other took it over before the deadline")
            .otherwise("no replica collected it before the deadline (metering was down or overloaded)")),
        runs::claimed_by.eq(None::<String>),
        runs::lease_until.eq(None::<DateTime<Utc>>),
        runs::finished_at.eq(now),
    ))
    .execute(conn)
    .await?;
    // Readings of runs that can no longer complete (gaps past their deadline; windows end
    // within a day of being scheduled) are kept no longer, unless an estimate may still be
    // made from them. Raw SQL: a row-value IN over the partial index of gaps, then the
    // readings' primary key.
    for table in ["readings", "run_pods"] {
        sql_query(format!(
            "DELETE FROM {table} WHERE (cluster_id, window_start) IN (
                 SELECT r.cluster_id, r.window_start FROM runs r
                 WHERE r.status = 'gap' AND r.window_start > $1 - interval '2 days' AND r.deadline <= $1
                   AND ($2::bigint IS NULL OR r.deadline <= $1 - make_interval(secs => $2)
                        OR EXISTS (SELECT 1 FROM gap_estimates e
                                   WHERE e.cluster_id = r.cluster_id AND e.window_start = r.window_start)))"
        ))
        .bind::<Timestamptz, _>(now)
        .bind::<Nullable<BigInt>, _>(keep_secs)
        .execute(conn)
        .await?;
    }
    Ok(gaps)
}

/// A run leased to this replica.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
#[diesel(table_name = runs, check_for_backend(Pg))]
pub struct Claimed {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The window's start.
    pub window_start: DateTime<Utc>,
    /// The window's end.
    pub window_end: DateTime<Utc>,
    /// Tries so far, this one included.
    pub attempts: i32,
    /// After this the run is a gap.
    pub deadline: DateTime<Utc>,
    /// How it is measured (`point` or `readings`).
    pub source: String,
}

impl Claimed {
    /// How the run is measured.
    #[must_use]
    pub fn source(&self) -> Source {
        if self.source == Source::Readings.as_str() { Source::Readings } else { Source::Point }
    }
}

/// Leases up to `limit` due runs of `source` still measurable at calendar time `now` to
/// `replica` for `lease_secs` (real time), oldest window first.
///
/// # Errors
/// When Postgres fails.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    replica: &str,
    limit: i64,
    lease_secs: i64,
    now: DateTime<Utc>,
    source: Source,
) -> QueryResult<Vec<Claimed>> {
    // Raw SQL: make_interval and a row-locking subquery (FOR UPDATE SKIP LOCKED) in the WHERE
    // of an UPDATE, neither of which the DSL can say. Leases and retries run on Postgres'
    // now(), the deadline on the calendar's ($4).
    sql_query(
        "UPDATE runs SET status = 'running', claimed_by = $1, lease_until = now() + make_interval(secs => $3),
             attempts = attempts + 1, started_at = coalesce(started_at, $4)
         WHERE (cluster_id, window_start) IN (
             SELECT cluster_id, window_start FROM runs
             WHERE (status = 'pending' OR (status = 'running' AND lease_until < now()))
               AND next_attempt_at <= now() AND deadline > $4 AND source = $5
             ORDER BY window_start, cluster_id
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING cluster_id, window_start, window_end, attempts, deadline, source",
    )
    .bind::<Text, _>(replica)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(lease_secs)
    .bind::<Timestamptz, _>(now)
    .bind::<Text, _>(source.as_str())
    .load(conn)
    .await
}

/// Gives back the runs `replica` holds (it is stopping), for another replica to take at once.
///
/// # Errors
/// When Postgres fails.
pub async fn release(conn: &mut AsyncPgConnection, replica: &str) -> QueryResult<usize> {
    diesel::update(runs::table.filter(runs::status.eq(RunState::Running)).filter(runs::claimed_by.eq(replica)))
        .set((
            runs::status.eq(RunState::Pending),
            runs::claimed_by.eq(None::<String>),
            runs::lease_until.eq(None::<DateTime<Utc>>),
            runs::next_attempt_at.eq(dsl::now),
        ))
        .execute(conn)
        .await
}

/// When a failed run is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAt {
    /// The real time it is due (compared with Postgres' `now()`, like every retry).
    pub due: DateTime<Utc>,
    /// The calendar time it will then be (compared with the run's deadline).
    pub calendar: DateTime<Utc>,
}

/// Records a failed try at calendar time `now`: back to pending at `retry` when that is
/// before the deadline and tries remain, a gap with the failure as its reason otherwise.
/// Nothing happens when the run is no longer leased to `replica`. Returns the run's new status,
/// if it was still ours.
///
/// # Errors
/// When Postgres fails.
pub async fn failed(
    conn: &mut AsyncPgConnection,
    run: &Claimed,
    replica: &str,
    (code, message): (&str, &str),
    retry: Option<RetryAt>,
    now: DateTime<Utc>,
) -> QueryResult<Option<RunState>> {
    // Retried when a retry is given and falls before the run's deadline (NULL otherwise, which
    // CASE takes as false): a gap otherwise.
    let retry_at = retry.map(|r| r.due);
    let retried = || runs::deadline.nullable().gt(retry.map(|r| r.calendar));
    let ours = runs::table
        .find((run.cluster_id, run.window_start))
        .filter(runs::status.eq(RunState::Running))
        .filter(runs::claimed_by.eq(replica));
    let states: Vec<RunState> = diesel::update(ours)
        .set((
            runs::status.eq(case_when::<_, _, Text>(retried(), RunState::Pending).otherwise(RunState::Gap)),
            // The retry time when one is given (the placeholder is never chosen).
            runs::next_attempt_at.eq(case_when::<_, _, Timestamptz>(
                retry_at.is_some().into_sql::<Bool>(),
                retry_at.unwrap_or_default(),
            )
            .otherwise(runs::next_attempt_at)),
            runs::last_error_code.eq(code),
            runs::last_error.eq(message),
            runs::gap_reason.eq(case_when::<_, _, Nullable<Text>>(retried(), None::<&str>).otherwise(code)),
            runs::gap_detail.eq(case_when::<_, _, Nullable<Text>>(retried(), None::<&str>).otherwise(message)),
            runs::finished_at
                .eq(case_when::<_, _, Nullable<Timestamptz>>(retried(), None::<DateTime<Utc>>).otherwise(now)),
            runs::claimed_by.eq(None::<String>),
            runs::lease_until.eq(None::<DateTime<Utc>>),
        ))
        .returning(runs::status)
        .get_results(conn)
        .await?;
    Ok(states.into_iter().next())
}

/// What a completed run records about itself (the `stats` column).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunStats {
    /// The collection's counters.
    pub collect: CollectStats,
    /// Samples attributed to a user on the project.
    pub attributed: u64,
    /// Samples of pods without the owner label in a project's namespace, billed to the
    /// project's creator.
    pub unlabelled: u64,
    /// Samples of a user not on the project (or with no account on the cluster) in a project's
    /// namespace, billed to the project's creator.
    pub not_member: u64,
    /// Samples outside the cluster's projects (or in a project whose creator is not ours),
    /// billed to nobody and shown to administrators.
    pub unknown_project: u64,
    /// Pods measured in the cluster's projects' namespaces; none on an inactive cluster ends
    /// its measurement.
    pub project_pods: u64,
    /// Samples this run added (the others were stored already).
    pub added: u64,
    /// Whether the project list came from an earlier listing (Hopsworks did not answer).
    pub projects_from_earlier_listing: bool,
}

/// Stores a run's measurement, finished at calendar time `now`, if the run is still leased to
/// `replica` (see the module documentation). Returns the stats recorded, or `None` when the
/// run was not ours any more.
///
/// # Errors
/// When Postgres fails or a quantity overflows.
pub async fn complete(
    conn: &mut AsyncPgConnection,
    run: &Claimed,
    replica: &str,
    (collection, projects_from_earlier_listing): (&Collection, bool),
    now: DateTime<Utc>,
) -> Result<Option<RunStats>, StoreError> {
    let key = (run.cluster_id, run.window_start);
    let held: Option<(RunState, Option<String>)> =
        runs::table.find(key).select((runs::status, runs::claimed_by)).for_update().first(conn).await.optional()?;
    if !held.is_some_and(|(status, by)| status == RunState::Running && by.as_deref() == Some(replica)) {
        return Ok(None);
    }
    let known = projection::known(conn, run.cluster_id, run.window_start).await?;
    let measured = attribution::attribute(&collection.usage, &known);
    let mut stats = RunStats { collect: collection.stats, projects_from_earlier_listing, ..RunStats::default() };
    for s in &measured {
        match s.whose.attribution() {
            Attribution::Attributed => stats.attributed += 1,
            Attribution::Unlabelled => stats.unlabelled += 1,
            Attribution::NotMember => stats.not_member += 1,
            // No longer produced: a project's pods are billed to its creator.
            Attribution::UnknownUser | Attribution::UnknownProject => stats.unknown_project += 1,
        }
        if s.project.is_some() {
            stats.project_pods += s.usage.pods;
        }
    }
    if stats.project_pods == 0 {
        // An inactive cluster with no pods left in its projects is measured no more.
        diesel::update(clusters::table.find(run.cluster_id))
            .filter(clusters::status.eq(ClusterStatus::Inactive))
            .filter(clusters::drained_at.is_null())
            .set(clusters::drained_at.eq(run.window_end))
            .execute(conn)
            .await?;
    }
    let added = samples::insert(
        conn,
        (run.cluster_id, run.window_start, run.window_end),
        (collection.method, false),
        &measured,
    )
    .await?;
    // A readings run's readings and pods are integrated now: kept no longer.
    diesel::delete(
        readings::table
            .filter(readings::cluster_id.eq(run.cluster_id))
            .filter(readings::window_start.eq(run.window_start)),
    )
    .execute(conn)
    .await?;
    diesel::delete(
        run_pods::table
            .filter(run_pods::cluster_id.eq(run.cluster_id))
            .filter(run_pods::window_start.eq(run.window_start)),
    )
    .execute(conn)
    .await?;
    stats.added = u64::try_from(added.len()).unwrap_or(u64::MAX);
    let (ids, events): (Vec<SampleId>, Vec<UsageRecordedV1>) = added
        .iter()
        .filter_map(|(id, s)| {
            let window = (run.cluster_id, run.window_start, run.window_end);
            s.whose.billed().map(|(user, owner)| (*id, event(*id, window, s, (user, owner), false)))
        })
        .unzip();
    if !ids.is_empty() {
        usage_daily::add(conn, &ids).await?;
        enqueue_all_at(conn, &events, None, now).await?;
    }
    let stats_json = serde_json::to_value(&stats).unwrap_or_default();
    // A readings run has counted its calls read by read; a point run's are counted here, so
    // the per-cluster API calls metric sees both.
    let api_calls = i64::try_from(stats.collect.api_calls).unwrap_or(i64::MAX);
    diesel::update(runs::table.find(key))
        .set((
            runs::status.eq(RunState::Complete),
            runs::stats.eq(stats_json),
            runs::api_calls.eq(dsl::sql::<BigInt>("greatest(api_calls, ").bind::<BigInt, _>(api_calls).sql(")")),
            runs::sample_count.eq(i32::try_from(measured.len()).unwrap_or(i32::MAX)),
            runs::finished_at.eq(now),
            runs::lease_until.eq(None::<DateTime<Utc>>),
            runs::last_error.eq(None::<String>),
            runs::last_error_code.eq(None::<String>),
        ))
        .execute(conn)
        .await?;
    Ok(Some(stats))
}

/// The UsageRecorded announcing a sample of `cluster`'s window `[start, end)` attributed to
/// `user`, billed to `owner`; estimated when some of its pod time was, or when `estimate`
/// says the whole sample is.
pub(crate) fn event(
    id: SampleId,
    (cluster, start, end): (ClusterId, DateTime<Utc>, DateTime<Utc>),
    s: &Attributed,
    (user, owner): (UserId, OwnerId),
    estimate: bool,
) -> UsageRecordedV1 {
    let u = s.usage.usage;
    UsageRecordedV1 {
        sample_id: id.to_string(),
        cluster_id: cluster.to_string(),
        namespace: s.namespace.clone(),
        user_id: user.to_string(),
        owner_user_id: owner.to_string(),
        window_start_unix_seconds: start.timestamp(),
        window_end_unix_seconds: end.timestamp(),
        cpu_core_hours: u.cpu_core_hours().to_decimal().text,
        memory_gib_hours: u.memory_gib_hours().to_decimal().text,
        gpu_hours: u.gpu_hours().to_decimal().text,
        estimated: estimate || s.usage.estimated_ms > 0,
        hopsworks_username: s.username.clone(),
        project_id: s.project.as_ref().map_or(0, |p| p.id.get()),
        cpu_nanocore_seconds: u64::try_from(u.cpu_nanocore_seconds).unwrap_or(u64::MAX),
        memory_byte_seconds: u64::try_from(u.memory_byte_seconds).unwrap_or(u64::MAX),
        gpu_seconds: u64::try_from(u.gpu_seconds).unwrap_or(u64::MAX),
        pods: s.usage.pods,
    }
}

/// A collection run of one cluster and window.
#[derive(Debug, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = runs, check_for_backend(Pg))]
pub struct Run {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The window's start (inclusive), UTC.
    pub window_start: DateTime<Utc>,
    /// The window's end (exclusive), UTC.
    pub window_end: DateTime<Utc>,
    /// pending, running, complete or gap.
    pub status: RunState,
    /// Tries so far.
    pub attempts: i32,
    /// After this the window can no longer be measured.
    pub deadline: DateTime<Utc>,
    /// For a gap: the stable code of why.
    pub gap_reason: Option<String>,
    /// For a gap: what happened.
    pub gap_detail: Option<String>,
    /// The last failed try's code, while it is retried.
    pub last_error_code: Option<String>,
    /// The last failed try's message.
    pub last_error: Option<String>,
    /// Samples stored by the run.
    pub sample_count: Option<i32>,
    /// The collection's counters (API calls, pods, skipped items, attribution).
    #[schema(value_type = Option<Object>)]
    pub stats: Option<serde_json::Value>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A page of runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunPage {
    /// Newest window first.
    pub items: Vec<Run>,
    /// Runs matching the filter.
    pub total: i64,
}

/// Which runs [`list`] answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFilter {
    /// Only this cluster.
    pub cluster: Option<ClusterId>,
    /// Only runs in this state.
    pub status: Option<RunState>,
    /// Windows starting at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Windows starting before this instant.
    pub to: Option<DateTime<Utc>>,
}

impl RunFilter {
    fn query(&self) -> runs::BoxedQuery<'static, Pg> {
        let mut q = runs::table.into_boxed();
        if let Some(cluster) = self.cluster {
            q = q.filter(runs::cluster_id.eq(cluster));
        }
        if let Some(status) = self.status {
            q = q.filter(runs::status.eq(status));
        }
        if let Some(from) = self.from {
            q = q.filter(runs::window_start.ge(from));
        }
        if let Some(to) = self.to {
            q = q.filter(runs::window_start.lt(to));
        }
        q
    }
}

/// Up to `limit` runs matching `filter`, newest window first, and how many match.
///
/// # Errors
/// When Postgres fails.
pub async fn list(conn: &mut AsyncPgConnection, filter: &RunFilter, limit: i64) -> QueryResult<RunPage> {
    let items = filter
        .query()
        .order((runs::window_start.desc(), runs::cluster_id))
        .limit(limit)
        .select(Run::as_select())
        .load(conn)
        .await?;
    let total = filter.query().count().get_result(conn).await?;
    Ok(RunPage { items, total })
}

/// What asking to collect a cluster now came to.
#[derive(Debug)]
pub enum CollectNow {
    /// metering knows no such cluster.
    UnknownCluster,
    /// The cluster is inactive and its projects' namespaces were found without pods: it is
    /// measured no more.
    Inactive,
    /// The window's deadline has passed: it stays a gap.
    Closed,
    /// The run of the cluster's last window, due at once (or already measured or running).
    Due(Box<Run>),
}

/// Makes the last window of `cluster` that has ended at calendar time `now` due at once:
/// scheduled now if it was not, due at once if pending, and tried again from scratch if it
/// became a gap while it can still be measured. A window past its deadline is
/// [`CollectNow::Closed`] and nothing is written (it is answered as measured when it was).
///
/// # Errors
/// When Postgres fails.
pub async fn collect_now(
    conn: &mut AsyncPgConnection,
    cluster: ClusterId,
    (window_secs, deadline_secs): (i64, i64),
    now: DateTime<Utc>,
) -> QueryResult<CollectNow> {
    let now_secs = now.timestamp();
    let status: Option<(ClusterStatus, Option<DateTime<Utc>>)> =
        clusters::table.find(cluster).select((clusters::status, clusters::drained_at)).first(conn).await.optional()?;
    match status {
        None => return Ok(CollectNow::UnknownCluster),
        Some((ClusterStatus::Inactive, Some(_))) => return Ok(CollectNow::Inactive),
        Some(_) => {}
    }
    let end = now_secs.div_euclid(window_secs) * window_secs;
    let at = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap_or_default();
    // Past its deadline the window can only stay what it is: a run made or made due now would
    // be swept into a gap before anyone measured it.
    let existing: Option<Run> = runs::table
        .filter(runs::cluster_id.eq(cluster))
        .filter(runs::window_start.eq(at(end - window_secs)))
        .select(Run::as_select())
        .first(conn)
        .await
        .optional()?;
    let deadline = existing.as_ref().map_or(end + deadline_secs, |run| run.deadline.timestamp());
    if deadline <= now_secs {
        return Ok(match existing {
            Some(run) if run.status == RunState::Complete => CollectNow::Due(Box::new(run)),
            _ => CollectNow::Closed,
        });
    }
    // A gap that can still be measured starts again from scratch.
    let reopened = || runs::status.eq(RunState::Gap).and(runs::deadline.gt(now));
    let run: Run = diesel::insert_into(runs::table)
        .values((
            runs::cluster_id.eq(cluster),
            runs::window_start.eq(at(end - window_secs)),
            runs::window_end.eq(at(end)),
            runs::status.eq(RunState::Pending),
            runs::next_attempt_at.eq(dsl::now),
            runs::deadline.eq(at(end + deadline_secs)),
        ))
        .on_conflict((runs::cluster_id, runs::window_start))
        .do_update()
        .set((
            runs::status.eq(case_when::<_, _, Text>(reopened(), RunState::Pending).otherwise(runs::status)),
            runs::attempts.eq(case_when::<_, _, Integer>(reopened(), 0).otherwise(runs::attempts)),
            runs::gap_reason
                .eq(case_when::<_, _, Nullable<Text>>(reopened(), None::<String>).otherwise(runs::gap_reason)),
            runs::gap_detail
                .eq(case_when::<_, _, Nullable<Text>>(reopened(), None::<String>).otherwise(runs::gap_detail)),
            runs::finished_at.eq(case_when::<_, _, Nullable<Timestamptz>>(reopened(), None::<DateTime<Utc>>)
                .otherwise(runs::finished_at)),
            // Due at once unless it is running or measured.
            runs::next_attempt_at.eq(case_when::<_, _, Timestamptz>(
                runs::status.eq_any([RunState::Pending, RunState::Gap]),
                dsl::now,
            )
            .otherwise(runs::next_attempt_at)),
        ))
        .returning(Run::as_returning())
        .get_result(conn)
        .await?;
    Ok(if run.status == RunState::Gap { CollectNow::Closed } else { CollectNow::Due(Box::new(run)) })
}
