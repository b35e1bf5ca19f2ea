//! Samples: what a run measured, one row per (cluster, namespace, Hopsworks username, window),
//! stored once whatever the replays, and read back behind a user's day of usage.

use crate::attribution::Attributed;
use crate::collect::Method;
use crate::schema::samples;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{Attribution, ClusterId, OwnerId, ProjectId, SampleId, UserId};
use hopsbridge_platform::db::{DbError, RetryableError};
use serde::Serialize;
use std::collections::HashMap;

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

fn fit(what: &str, value: u128, s: &Attributed) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Overflow(format!("{}/{}: {what} of {value} does not fit a 64-bit integer", s.namespace, s.username))
    })
}

/// The columns of a chunk of samples, one array each.
#[derive(Default)]
struct Columns {
    id: Vec<SampleId>,
    namespace: Vec<String>,
    username: Vec<String>,
    attribution: Vec<Attribution>,
    user: Vec<Option<UserId>>,
    owner: Vec<Option<OwnerId>>,
    project_id: Vec<Option<ProjectId>>,
    project_name: Vec<Option<String>>,
    cpu: Vec<i64>,
    memory: Vec<i64>,
    gpu: Vec<i64>,
    pods: Vec<i32>,
    estimated_ms: Vec<i64>,
}

/// Inserts the samples of `cluster`'s window `[start, end)` not stored yet, measured by
/// `method`; returns the new ones with their ids. A sample is marked estimated when some of
/// its pod time was, or when `estimate` says the whole sample is (a gap's estimate, decision
/// 0069).
///
/// # Errors
/// When Postgres fails or a quantity does not fit a 64-bit integer.
pub async fn insert<'a>(
    conn: &mut AsyncPgConnection,
    (cluster, start, end): (ClusterId, DateTime<Utc>, DateTime<Utc>),
    (method, estimate): (Method, bool),
    measured: &'a [Attributed],
) -> Result<Vec<(SampleId, &'a Attributed)>, StoreError> {
    #[derive(QueryableByName)]
    #[diesel(table_name = samples, check_for_backend(Pg))]
    struct Added {
        id: SampleId,
        namespace: String,
        hopsworks_username: String,
    }
    let mut added = Vec::new();
    for chunk in measured.chunks(5000) {
        let mut cols = Columns::default();
        for s in chunk {
            let billed = s.whose.billed();
            cols.id.push(SampleId::new());
            cols.namespace.push(s.namespace.clone());
            cols.username.push(s.username.clone());
            cols.attribution.push(s.whose.attribution());
            cols.user.push(billed.map(|(user, _)| user));
            cols.owner.push(billed.map(|(_, owner)| owner));
            cols.project_id.push(s.project.as_ref().map(|p| p.id));
            cols.project_name.push(s.project.as_ref().map(|p| p.name.clone()));
            cols.cpu.push(fit("CPU nanocore-seconds", s.usage.usage.cpu_nanocore_seconds, s)?);
            cols.memory.push(fit("memory byte-seconds", s.usage.usage.memory_byte_seconds, s)?);
            cols.gpu.push(fit("GPU-seconds", s.usage.usage.gpu_seconds, s)?);
            cols.pods.push(i32::try_from(s.usage.pods).unwrap_or(i32::MAX));
            cols.estimated_ms.push(s.usage.estimated_ms.max(0));
        }
        // Raw SQL: unnest binds each column as one array, so 5,000 samples are 15 parameters
        // rather than the 75,000 of a multi-row VALUES (Postgres takes at most 65,535).
        let rows: Vec<Added> = diesel::sql_query(
            "INSERT INTO samples (id, cluster_id, window_start, window_end, namespace, hopsworks_username, attribution,
                                  user_id, owner_user_id, project_id, project_name,
                                  cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, pods,
                                  source, cpu_basis, memory_basis, estimated_ms, estimated)
             SELECT u.id, $1, $2, $3, u.namespace, u.username, u.attribution, u.user_id, u.owner_user_id,
                    u.project_id, u.project_name, u.cpu, u.memory, u.gpu, u.pods,
                    $16, $17, $18, u.estimated_ms, u.estimated_ms > 0 OR $20
             FROM unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::uuid[], $9::uuid[], $10::bigint[],
                         $11::text[], $12::bigint[], $13::bigint[], $14::bigint[], $15::int[], $19::bigint[])
                  AS u(id, namespace, username, attribution, user_id, owner_user_id, project_id, project_name,
                       cpu, memory, gpu, pods, estimated_ms)
             ON CONFLICT (cluster_id, namespace, hopsworks_username, window_start) DO NOTHING
             RETURNING id, namespace, hopsworks_username",
        )
        .bind::<SqlUuid, _>(cluster)
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
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
        .bind::<Text, _>(method.source.as_str())
        .bind::<Text, _>(method.cpu_basis.as_str())
        .bind::<Text, _>(method.memory_basis.as_str())
        .bind::<Array<BigInt>, _>(cols.estimated_ms)
        .bind::<diesel::sql_types::Bool, _>(estimate)
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

/// One stored sample.
#[derive(Debug, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = samples, check_for_backend(Pg))]
pub struct Sample {
    /// Its id (UsageRecorded's `sample_id`).
    pub id: SampleId,
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The namespace.
    pub namespace: String,
    /// The pods' owner label.
    pub hopsworks_username: String,
    /// The window's start.
    pub window_start: DateTime<Utc>,
    /// The window's end.
    pub window_end: DateTime<Utc>,
    /// The owner billed.
    pub owner_user_id: Option<OwnerId>,
    /// The Hopsworks project.
    pub project_id: Option<ProjectId>,
    /// Nanocore-seconds.
    pub cpu_nanocore_seconds: i64,
    /// Byte-seconds.
    pub memory_byte_seconds: i64,
    /// GPU-seconds.
    pub gpu_seconds: i64,
    /// Pods measured.
    pub pods: i32,
    /// Estimated rather than measured.
    pub estimated: bool,
}

/// The samples of `user`'s usage in windows starting on the UTC `day`, by window.
///
/// # Errors
/// When Postgres fails.
pub async fn of_user_day(conn: &mut AsyncPgConnection, user: UserId, day: NaiveDate) -> QueryResult<Vec<Sample>> {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    samples::table
        .filter(samples::user_id.eq(user))
        .filter(samples::window_start.ge(start))
        .filter(samples::window_start.lt(start + chrono::TimeDelta::days(1)))
        .order((samples::window_start, samples::cluster_id, samples::namespace))
        .select(Sample::as_select())
        .load(conn)
        .await
}

/// Usage billed to nobody (a namespace that is no project of ours on its cluster), per UTC day,
/// cluster, namespace, username and attribution.
#[derive(Debug, Serialize, QueryableByName, utoipa::ToSchema)]
pub struct UnbilledUsage {
    /// The UTC day.
    #[diesel(sql_type = diesel::sql_types::Date)]
    pub day: NaiveDate,
    /// The cluster.
    #[diesel(sql_type = SqlUuid)]
    pub cluster_id: ClusterId,
    /// The namespace.
    #[diesel(sql_type = Text)]
    pub namespace: String,
    /// The pods' owner label; empty for pods without one.
    #[diesel(sql_type = Text)]
    pub hopsworks_username: String,
    /// Why nobody is billed: `unknown_project` (or `unknown_user`, from before every pod of a
    /// project's namespace was billed to it).
    #[diesel(sql_type = Text)]
    pub attribution: Attribution,
    /// Nanocore-seconds.
    #[diesel(sql_type = BigInt)]
    pub cpu_nanocore_seconds: i64,
    /// Byte-seconds.
    #[diesel(sql_type = BigInt)]
    pub memory_byte_seconds: i64,
    /// GPU-seconds.
    #[diesel(sql_type = BigInt)]
    pub gpu_seconds: i64,
    /// Samples added up.
    #[diesel(sql_type = BigInt)]
    pub samples: i64,
}

/// Usage billed to nobody in windows starting on the UTC days `from` to `to` (inclusive),
/// optionally of one cluster, at most `limit` rows, by day, cluster, namespace and username.
///
/// # Errors
/// When Postgres fails.
pub async fn unbilled(
    conn: &mut AsyncPgConnection,
    (from, to): (NaiveDate, NaiveDate),
    cluster: Option<ClusterId>,
    limit: i64,
) -> QueryResult<Vec<UnbilledUsage>> {
    let start = from.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = to.and_time(chrono::NaiveTime::MIN).and_utc() + chrono::TimeDelta::days(1);
    // Raw SQL: sums cast back to bigint and a day computed in UTC, grouped, which the DSL's
    // group_by cannot select together.
    diesel::sql_query(
        "SELECT (window_start AT TIME ZONE 'UTC')::date AS day, cluster_id, namespace, hopsworks_username, attribution,
                sum(cpu_nanocore_seconds)::bigint AS cpu_nanocore_seconds,
                sum(memory_byte_seconds)::bigint AS memory_byte_seconds,
                sum(gpu_seconds)::bigint AS gpu_seconds, count(*) AS samples
         FROM samples
         WHERE owner_user_id IS NULL AND window_start >= $1 AND window_start < $2
           AND ($3::uuid IS NULL OR cluster_id = $3)
         GROUP BY 1, 2, 3, 4, 5
         ORDER BY 1, 2, 3, 4, 5
         LIMIT $4",
    )
    .bind::<Timestamptz, _>(start)
    .bind::<Timestamptz, _>(end)
    .bind::<Nullable<SqlUuid>, _>(cluster)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}
