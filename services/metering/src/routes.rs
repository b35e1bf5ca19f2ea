//! metering's HTTP API.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /api/admin/metering/runs?cluster_id=&status=&from=&to=&limit=` | admins | collection runs, newest first |
//! | `GET /api/admin/metering/gaps?cluster_id=&from=&to=&limit=` | admins | windows that could not be measured |
//! | `POST /api/admin/metering/clusters/{id}/collect` | admins | collect the cluster's last window now |
//! | `GET /api/admin/usage?user_id=&owner_user_id=&cluster_id=&from=&to=` | admins | usage per user, project and UTC day |
//! | `GET /api/admin/usage/samples?user_id=&day=` | admins | the samples behind one user-day |
//! | `GET /api/usage?from=&to=` | any signed-in person | their own usage per project and day, and their team's for an owner |
//!
//! `from` and `to` are UTC days (`YYYY-MM-DD`, inclusive) for usage and RFC 3339 instants for
//! runs. Quantities are exact decimal strings next to the integers they come from.

use crate::runs::status as run_status;
use crate::usage::Usage;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::sql_types::{BigInt, Date, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_platform::db::Database;
use hopsbridge_platform::http::{ApiError, ErrorBody};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    /// metering's schema.
    pub db: Database,
    /// Wakes the metering loop.
    pub wake: Arc<Notify>,
    /// Window length, seconds.
    pub window_secs: i64,
    /// Seconds after a window's end during which it may still be collected.
    pub deadline_secs: i64,
}

/// Registers the routes.
pub fn configure(c: &mut web::ServiceConfig, state: State) {
    c.app_data(web::Data::new(state))
        .route("/api/admin/metering/runs", web::get().to(list_runs))
        .route("/api/admin/metering/gaps", web::get().to(list_gaps))
        .route("/api/admin/metering/clusters/{id}/collect", web::post().to(collect_now))
        .route("/api/admin/usage", web::get().to(admin_usage))
        .route("/api/admin/usage/samples", web::get().to(admin_samples))
        .route("/api/usage", web::get().to(my_usage));
}

type Data = web::Data<State>;

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.has(Role::Admin) { Ok(()) } else { Err(ApiError::forbidden("admin_only", "administrators only")) }
}

fn db(e: diesel::result::Error) -> ApiError {
    ApiError::from(hopsbridge_platform::db::DbError::from(e))
}

/// A collection run of one cluster and window.
#[derive(Debug, Serialize, QueryableByName, utoipa::ToSchema)]
pub struct Run {
    /// The cluster.
    #[diesel(sql_type = SqlUuid)]
    pub cluster_id: Uuid,
    /// The window's start (inclusive), UTC.
    #[diesel(sql_type = Timestamptz)]
    pub window_start: DateTime<Utc>,
    /// The window's end (exclusive), UTC.
    #[diesel(sql_type = Timestamptz)]
    pub window_end: DateTime<Utc>,
    /// pending, running, complete or gap.
    #[diesel(sql_type = Text)]
    pub status: String,
    /// Tries so far.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// After this the window can no longer be measured.
    #[diesel(sql_type = Timestamptz)]
    pub deadline: DateTime<Utc>,
    /// For a gap: the stable code of why.
    #[diesel(sql_type = Nullable<Text>)]
    pub gap_reason: Option<String>,
    /// For a gap: what happened.
    #[diesel(sql_type = Nullable<Text>)]
    pub gap_detail: Option<String>,
    /// The last failed try's code, while it is retried.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error_code: Option<String>,
    /// The last failed try's message.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// Samples stored by the run.
    #[diesel(sql_type = Nullable<Integer>)]
    pub sample_count: Option<i32>,
    /// The collection's counters (API calls, pods, skipped items, attribution).
    #[diesel(sql_type = Nullable<Jsonb>)]
    #[schema(value_type = Option<Object>)]
    pub stats: Option<serde_json::Value>,
    /// When it finished.
    #[diesel(sql_type = Nullable<Timestamptz>)]
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

/// Filters of the runs and gaps lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Only this cluster.
    cluster_id: Option<Uuid>,
    /// Only this status (runs only).
    status: Option<String>,
    /// Windows starting at or after this instant.
    from: Option<DateTime<Utc>>,
    /// Windows starting before this instant.
    to: Option<DateTime<Utc>>,
    /// At most this many (1-1000, default 100).
    limit: Option<i64>,
}

const RUN_COLUMNS: &str = "cluster_id, window_start, window_end, status, attempts, deadline, gap_reason, gap_detail,
    last_error_code, last_error, sample_count, stats, finished_at";

async fn runs_page(state: &State, q: &RunQuery, status: Option<&str>) -> Result<RunPage, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit must be 1-1000"));
    }
    if let Some(s) = status
        && !run_status::ALL.contains(&s)
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            format!("status must be one of {}", run_status::ALL.join(", ")),
        ));
    }
    let filter = "($1::uuid IS NULL OR cluster_id = $1) AND ($2::text IS NULL OR status = $2)
        AND ($3::timestamptz IS NULL OR window_start >= $3) AND ($4::timestamptz IS NULL OR window_start < $4)";
    let mut conn = state.db.conn().await?;
    let items: Vec<Run> = sql_query(format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE {filter} ORDER BY window_start DESC, cluster_id LIMIT $5"
    ))
    .bind::<Nullable<SqlUuid>, _>(q.cluster_id)
    .bind::<Nullable<Text>, _>(status)
    .bind::<Nullable<Timestamptz>, _>(q.from)
    .bind::<Nullable<Timestamptz>, _>(q.to)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
    .map_err(db)?;
    let total: Count = sql_query(format!("SELECT count(*) AS count FROM runs WHERE {filter}"))
        .bind::<Nullable<SqlUuid>, _>(q.cluster_id)
        .bind::<Nullable<Text>, _>(status)
        .bind::<Nullable<Timestamptz>, _>(q.from)
        .bind::<Nullable<Timestamptz>, _>(q.to)
        .get_result(&mut conn)
        .await
        .map_err(db)?;
    Ok(RunPage { items, total: total.count })
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[utoipa::path(get, path = "/api/admin/metering/runs", tag = "metering", params(RunQuery),
    responses((status = 200, description = "collection runs, newest window first", body = RunPage),
        (status = 400, description = "bad filter", body = ErrorBody), (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "administrators only", body = ErrorBody)))]
async fn list_runs(state: Data, caller: Caller, q: web::Query<RunQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    Ok(HttpResponse::Ok().json(runs_page(&state, &q, status).await?))
}

#[utoipa::path(get, path = "/api/admin/metering/gaps", tag = "metering", params(RunQuery),
    responses((status = 200, description = "windows that could not be measured, with their reasons", body = RunPage),
        (status = 400, description = "bad filter", body = ErrorBody), (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "administrators only", body = ErrorBody)))]
async fn list_gaps(state: Data, caller: Caller, q: web::Query<RunQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    if q.status.is_some() {
        return Err(ApiError::bad_request("invalid_query", "gaps take no status filter"));
    }
    Ok(HttpResponse::Ok().json(runs_page(&state, &q, Some(run_status::GAP)).await?))
}

#[utoipa::path(post, path = "/api/admin/metering/clusters/{id}/collect", tag = "metering",
    params(("id" = Uuid, Path, description = "cluster id")),
    responses((status = 202, description = "the cluster's last complete window is collected now (or already was)", body = Run),
        (status = 401, description = "not signed in", body = ErrorBody), (status = 403, description = "administrators only", body = ErrorBody),
        (status = 404, description = "no such cluster", body = ErrorBody),
        (status = 409, description = "cluster_inactive, or window_closed: the window can no longer be measured", body = ErrorBody)))]
async fn collect_now(state: Data, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    #[derive(QueryableByName)]
    struct C {
        #[diesel(sql_type = Text)]
        status: String,
    }
    let cluster = *id;
    let mut conn = state.db.conn().await?;
    let found: Vec<C> = sql_query("SELECT status FROM clusters WHERE cluster_id = $1")
        .bind::<SqlUuid, _>(cluster)
        .load(&mut conn)
        .await
        .map_err(db)?;
    let Some(c) = found.into_iter().next() else {
        return Err(ApiError::not_found("cluster_not_found", "metering knows no such cluster"));
    };
    if c.status == "inactive" {
        return Err(ApiError::conflict("cluster_inactive", "the cluster is inactive and is not measured"));
    }
    // The last window that has ended: scheduled now if it was not, due at once if pending, and
    // tried again from scratch if it became a gap while it can still be measured.
    let len = state.window_secs;
    let end = Utc::now().timestamp().div_euclid(len) * len;
    let run: Run = sql_query(format!(
        "INSERT INTO runs (cluster_id, window_start, window_end, status, next_attempt_at, deadline)
         VALUES ($1, to_timestamp($2 - $3), to_timestamp($2), 'pending', now(), to_timestamp($2 + $4))
         ON CONFLICT (cluster_id, window_start) DO UPDATE SET
             status = CASE WHEN runs.status = 'gap' AND runs.deadline > now() THEN 'pending' ELSE runs.status END,
             attempts = CASE WHEN runs.status = 'gap' AND runs.deadline > now() THEN 0 ELSE runs.attempts END,
             gap_reason = CASE WHEN runs.status = 'gap' AND runs.deadline > now() THEN NULL ELSE runs.gap_reason END,
             gap_detail = CASE WHEN runs.status = 'gap' AND runs.deadline > now() THEN NULL ELSE runs.gap_detail END,
             finished_at = CASE WHEN runs.status = 'gap' AND runs.deadline > now() THEN NULL ELSE runs.finished_at END,
             next_attempt_at = CASE WHEN runs.status IN ('pending', 'gap') THEN now() ELSE runs.next_attempt_at END
         RETURNING {RUN_COLUMNS}"
    ))
    .bind::<SqlUuid, _>(cluster)
    .bind::<BigInt, _>(end)
    .bind::<BigInt, _>(len)
    .bind::<BigInt, _>(state.deadline_secs)
    .get_result(&mut conn)
    .await
    .map_err(db)?;
    if run.status == run_status::GAP {
        return Err(ApiError::conflict("window_closed", "the window can no longer be measured; it stays a gap"));
    }
    state.wake.notify_one();
    Ok(HttpResponse::Accepted().json(run))
}

/// Usage of one user in one project on one UTC day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DailyUsage {
    /// The UTC day.
    pub day: NaiveDate,
    /// Whose pods.
    pub user_id: Uuid,
    /// Who pays for them.
    pub owner_user_id: Uuid,
    /// The cluster.
    pub cluster_id: Uuid,
    /// The project's namespace on that cluster.
    pub namespace: String,
    /// CPU core-hours, exact decimal.
    pub cpu_core_hours: String,
    /// Memory GiB-hours, exact decimal.
    pub memory_gib_hours: String,
    /// GPU hours, exact decimal.
    pub gpu_hours: String,
    /// The integers behind them.
    pub cpu_nanocore_seconds: i64,
    /// Byte-seconds.
    pub memory_byte_seconds: i64,
    /// GPU-seconds.
    pub gpu_seconds: i64,
    /// Samples added up.
    pub samples: i32,
}

#[derive(QueryableByName)]
struct DailyRow {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    owner_user_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    cluster_id: Uuid,
    #[diesel(sql_type = Text)]
    namespace: String,
    #[diesel(sql_type = BigInt)]
    cpu_nanocore_seconds: i64,
    #[diesel(sql_type = BigInt)]
    memory_byte_seconds: i64,
    #[diesel(sql_type = BigInt)]
    gpu_seconds: i64,
    #[diesel(sql_type = Integer)]
    samples: i32,
}

fn usage_of(cpu: i64, memory: i64, gpu: i64) -> Usage {
    let u = |v: i64| u128::try_from(v).unwrap_or(0);
    Usage { cpu_nanocore_seconds: u(cpu), memory_byte_seconds: u(memory), gpu_seconds: u(gpu) }
}

impl From<DailyRow> for DailyUsage {
    fn from(r: DailyRow) -> Self {
        let u = usage_of(r.cpu_nanocore_seconds, r.memory_byte_seconds, r.gpu_seconds);
        Self {
            day: r.day,
            user_id: r.user_id,
            owner_user_id: r.owner_user_id,
            cluster_id: r.cluster_id,
            namespace: r.namespace,
            cpu_core_hours: u.cpu_core_hours().to_decimal().text,
            memory_gib_hours: u.memory_gib_hours().to_decimal().text,
            gpu_hours: u.gpu_hours().to_decimal().text,
            cpu_nanocore_seconds: r.cpu_nanocore_seconds,
            memory_byte_seconds: r.memory_byte_seconds,
            gpu_seconds: r.gpu_seconds,
            samples: r.samples,
        }
    }
}

/// Filters of the admin usage list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only this user's pods.
    user_id: Option<Uuid>,
    /// Only usage billed to this owner.
    owner_user_id: Option<Uuid>,
    /// Only this cluster.
    cluster_id: Option<Uuid>,
    /// First UTC day (default: 30 days before `to`).
    from: Option<NaiveDate>,
    /// Last UTC day, inclusive (default: today).
    to: Option<NaiveDate>,
}

fn days(from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let to = to.unwrap_or_else(|| Utc::now().date_naive());
    let from = from.unwrap_or_else(|| to - chrono::Days::new(30));
    if from > to || (to - from).num_days() > 366 {
        return Err(ApiError::bad_request(
            "invalid_range",
            "from must not be after to, and at most 366 days before it",
        ));
    }
    Ok((from, to))
}

async fn daily(
    state: &State,
    user: Option<Uuid>,
    owner: Option<Uuid>,
    either: Option<Uuid>,
    cluster: Option<Uuid>,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<Vec<DailyUsage>, ApiError> {
    let mut conn = state.db.conn().await?;
    let rows: Vec<DailyRow> = sql_query(
        "SELECT day, user_id, owner_user_id, cluster_id, namespace, cpu_nanocore_seconds, memory_byte_seconds,
                gpu_seconds, samples
         FROM usage_daily
         WHERE day BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR user_id = $3) AND ($4::uuid IS NULL OR owner_user_id = $4)
           AND ($5::uuid IS NULL OR user_id = $5 OR owner_user_id = $5) AND ($6::uuid IS NULL OR cluster_id = $6)
         ORDER BY day, user_id, cluster_id, namespace
         LIMIT 10000",
    )
    .bind::<Date, _>(from)
    .bind::<Date, _>(to)
    .bind::<Nullable<SqlUuid>, _>(user)
    .bind::<Nullable<SqlUuid>, _>(owner)
    .bind::<Nullable<SqlUuid>, _>(either)
    .bind::<Nullable<SqlUuid>, _>(cluster)
    .load(&mut conn)
    .await
    .map_err(db)?;
    Ok(rows.into_iter().map(DailyUsage::from).collect())
}

#[utoipa::path(get, path = "/api/admin/usage", tag = "metering", params(UsageQuery),
    responses((status = 200, description = "usage per user, project and UTC day", body = Vec<DailyUsage>),
        (status = 400, description = "bad filter", body = ErrorBody), (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "administrators only", body = ErrorBody)))]
async fn admin_usage(state: Data, caller: Caller, q: web::Query<UsageQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let range = days(q.from, q.to)?;
    Ok(HttpResponse::Ok().json(daily(&state, q.user_id, q.owner_user_id, None, q.cluster_id, range).await?))
}

/// The caller's usage filter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MyUsageQuery {
    /// First UTC day (default: 30 days before `to`).
    from: Option<NaiveDate>,
    /// Last UTC day, inclusive (default: today).
    to: Option<NaiveDate>,
}

#[utoipa::path(get, path = "/api/usage", tag = "metering", params(MyUsageQuery),
    responses((status = 200, description = "the caller's usage per project and UTC day; for an owner, their team's too", body = Vec<DailyUsage>),
        (status = 400, description = "bad range", body = ErrorBody), (status = 401, description = "not signed in", body = ErrorBody)))]
async fn my_usage(state: Data, caller: Caller, q: web::Query<MyUsageQuery>) -> Result<HttpResponse, ApiError> {
    let user = caller.user_id.ok_or_else(|| ApiError::unauthorized("unauthenticated", "authentication required"))?;
    let range = days(q.from, q.to)?;
    Ok(HttpResponse::Ok().json(daily(&state, None, None, Some(user), None, range).await?))
}

/// One stored sample.
#[derive(Debug, Serialize, QueryableByName, utoipa::ToSchema)]
pub struct Sample {
    /// Its id (UsageRecorded's `sample_id`).
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// The cluster.
    #[diesel(sql_type = SqlUuid)]
    pub cluster_id: Uuid,
    /// The namespace.
    #[diesel(sql_type = Text)]
    pub namespace: String,
    /// The pods' owner label.
    #[diesel(sql_type = Text)]
    pub hopsworks_username: String,
    /// The window's start.
    #[diesel(sql_type = Timestamptz)]
    pub window_start: DateTime<Utc>,
    /// The window's end.
    #[diesel(sql_type = Timestamptz)]
    pub window_end: DateTime<Utc>,
    /// The owner billed.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub owner_user_id: Option<Uuid>,
    /// The Hopsworks project.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub project_id: Option<i64>,
    /// Nanocore-seconds.
    #[diesel(sql_type = BigInt)]
    pub cpu_nanocore_seconds: i64,
    /// Byte-seconds.
    #[diesel(sql_type = BigInt)]
    pub memory_byte_seconds: i64,
    /// GPU-seconds.
    #[diesel(sql_type = BigInt)]
    pub gpu_seconds: i64,
    /// Pods measured.
    #[diesel(sql_type = Integer)]
    pub pods: i32,
    /// Estimated rather than measured.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub estimated: bool,
}

/// Which user-day's samples.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SampleQuery {
    /// The user.
    user_id: Uuid,
    /// The UTC day.
    day: NaiveDate,
}

#[utoipa::path(get, path = "/api/admin/usage/samples", tag = "metering", params(SampleQuery),
    responses((status = 200, description = "the samples a user-day's usage adds up, by window", body = Vec<Sample>),
        (status = 400, description = "bad filter", body = ErrorBody), (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "administrators only", body = ErrorBody)))]
async fn admin_samples(state: Data, caller: Caller, q: web::Query<SampleQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let start = q.day.and_time(chrono::NaiveTime::MIN).and_utc();
    let mut conn = state.db.conn().await?;
    let rows: Vec<Sample> = sql_query(
        "SELECT id, cluster_id, namespace, hopsworks_username, window_start, window_end, owner_user_id, project_id,
                cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, pods, estimated
         FROM samples WHERE user_id = $1 AND window_start >= $2 AND window_start < $2 + interval '1 day'
         ORDER BY window_start, cluster_id, namespace",
    )
    .bind::<SqlUuid, _>(q.user_id)
    .bind::<Timestamptz, _>(start)
    .load(&mut conn)
    .await
    .map_err(db)?;
    Ok(HttpResponse::Ok().json(rows))
}

/// metering's part of the public API's OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(list_runs, list_gaps, collect_now, admin_usage, admin_samples, my_usage),
    components(schemas(Run, RunPage, DailyUsage, Sample, ErrorBody)),
    tags((name = "metering", description = "Usage measured on the clusters, collection runs and gaps"))
)]
pub struct ApiDoc;
