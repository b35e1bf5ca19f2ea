//! metering's HTTP API: who may call, what the query says, and the answer's status; the
//! queries themselves are in the stores ([`runs`], [`samples`], [`usage_daily`]).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /api/admin/metering/runs?cluster_id=&status=&from=&to=&limit=` | admins | collection runs, newest first |
//! | `GET /api/admin/metering/gaps?cluster_id=&from=&to=&limit=` | admins | windows that could not be measured |
//! | `POST /api/admin/metering/clusters/{id}/collect` | admins | collect the cluster's last window now |
//! | `GET /api/admin/metering/estimates?cluster_id=&status=&from=&to=&limit=` | admins | gap estimates and what each was based on |
//! | `POST /api/admin/metering/estimates/{id}/approve` | admins | publish a pending estimate |
//! | `POST /api/admin/metering/estimates/{id}/reject` | admins | reject a pending estimate: the window stays a gap |
//! | `GET /api/admin/usage?user_id=&owner_user_id=&cluster_id=&from=&to=` | admins | usage per user, project and UTC day |
//! | `GET /api/admin/usage/samples?user_id=&day=` | admins | the samples behind one user-day |
//! | `GET /api/admin/usage/storage-samples?user_id=&day=` | admins | the storage samples behind one user-day |
//! | `GET /api/admin/metering/storage-gaps?cluster_id=&from=&to=` | admins | storage windows and projects not measured |
//! | `GET /api/admin/metering/storage-estimates?cluster_id=&project_id=&status=&from=&to=&limit=` | admins | storage gap estimates and what each was based on |
//! | `POST /api/admin/metering/storage-estimates/{id}/approve` | admins | publish a pending storage estimate |
//! | `POST /api/admin/metering/storage-estimates/{id}/reject` | admins | reject a pending storage estimate: it stays a gap |
//! | `GET /api/admin/usage/unbilled?cluster_id=&from=&to=` | admins | usage in namespaces that are no project of ours, per day |
//! | `GET /api/usage?from=&to=` | any signed-in person | their own usage per project and day, and their team's for an owner |
//!
//! `from` and `to` are UTC days (`YYYY-MM-DD`, inclusive) for usage and RFC 3339 instants for
//! runs. Quantities are exact decimal strings next to the integers they come from.

use crate::error::MeteringCode;
use crate::gaps::{self, Decided, Estimate, EstimateFilter, EstimateLine, EstimatePage};
use crate::runs::{self, CollectNow, Run, RunFilter, RunPage};
use crate::samples::StoreError;
use crate::samples::{self, Sample, UnbilledUsage};
use crate::storage::api::{self as storage_api, GapQuery, StorageGap, StorageSample};
use crate::storage::estimates::{
    self as storage_estimates, StorageEstimate, StorageEstimateFilter, StorageEstimatePage,
};
use crate::usage_daily::{self, DailyUsage, UsageFilter};
use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use hopsbridge_domain::{ClusterId, OwnerId, ProjectId, RunState, UserId};
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode, PlatformCode};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::Notify;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    /// metering's schema.
    pub db: Database,
    /// Calendar time: which window has just ended, which day is today.
    pub clock: Clock,
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
        .route("/api/admin/metering/estimates", web::get().to(list_estimates))
        .route("/api/admin/metering/estimates/{id}/approve", web::post().to(approve_estimate))
        .route("/api/admin/metering/estimates/{id}/reject", web::post().to(reject_estimate))
        .route("/api/admin/usage", web::get().to(admin_usage))
        .route("/api/admin/usage/samples", web::get().to(admin_samples))
        .route("/api/admin/usage/storage-samples", web::get().to(admin_storage_samples))
        .route("/api/admin/metering/storage-gaps", web::get().to(storage_gaps))
        .route("/api/admin/metering/storage-estimates", web::get().to(list_storage_estimates))
        .route("/api/admin/metering/storage-estimates/{id}/approve", web::post().to(approve_storage_estimate))
        .route("/api/admin/metering/storage-estimates/{id}/reject", web::post().to(reject_storage_estimate))
        .route("/api/admin/usage/unbilled", web::get().to(admin_unbilled))
        .route("/api/usage", web::get().to(my_usage));
}

type Data = web::Data<State>;

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.has(Role::Admin) { Ok(()) } else { Err(MeteringCode::AdminOnly.error()) }
}

fn db(e: diesel::result::Error) -> ApiError {
    ApiError::from(DbError::from(e))
}

/// Filters of the runs, gaps and estimates lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Only this cluster.
    cluster_id: Option<ClusterId>,
    /// Only this status: of runs pending, running, complete or gap (not of gaps); of estimates
    /// pending, published, rejected or none.
    status: Option<String>,
    /// Windows starting at or after this instant.
    from: Option<DateTime<Utc>>,
    /// Windows starting before this instant.
    to: Option<DateTime<Utc>>,
    /// At most this many (1-1000, default 100).
    limit: Option<i64>,
}

async fn runs_page(state: &State, q: &WindowQuery, status: Option<RunState>) -> Result<RunPage, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(PlatformCode::InvalidQuery.with_message("limit must be 1-1000"));
    }
    let filter = RunFilter { cluster: q.cluster_id, status, from: q.from, to: q.to };
    let mut conn = state.db.conn().await?;
    runs::list(&mut conn, &filter, limit).await.map_err(db)
}

const BAD_RUN_FILTER: &str = "invalid_query: limit is not 1-1000, or a filter is malformed; \
    invalid_status: status names no run state";
const NOT_SIGNED_IN: &str = "unauthenticated: not signed in";
const NOT_ADMIN: &str = "admin_only: administrators only";
const NO_DATABASE: &str = "database_unavailable: Postgres cannot be reached; try again shortly";

#[utoipa::path(get, path = "/api/admin/metering/runs", tag = "metering", params(WindowQuery),
    responses((status = 200, description = "collection runs, newest window first", body = RunPage),
        (status = 400, description = BAD_RUN_FILTER, body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn list_runs(state: Data, caller: Caller, q: web::Query<WindowQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<RunState>().map_err(|_| {
            let names: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
            MeteringCode::InvalidStatus.with_message(format!("status must be one of {}", names.join(", ")))
        })?),
    };
    Ok(HttpResponse::Ok().json(runs_page(&state, &q, status).await?))
}

#[utoipa::path(get, path = "/api/admin/metering/gaps", tag = "metering", params(WindowQuery),
    responses((status = 200, description = "windows that could not be measured, with their reasons", body = RunPage),
        (status = 400, description = "invalid_query: limit is not 1-1000, a status is given, or a filter is malformed",
            body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn list_gaps(state: Data, caller: Caller, q: web::Query<WindowQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    if q.status.is_some() {
        return Err(PlatformCode::InvalidQuery.with_message("gaps take no status filter"));
    }
    Ok(HttpResponse::Ok().json(runs_page(&state, &q, Some(RunState::Gap)).await?))
}

#[utoipa::path(post, path = "/api/admin/metering/clusters/{id}/collect", tag = "metering",
    params(("id" = Uuid, Path, description = "cluster id")),
    responses((status = 202, description = "the cluster's last complete window is collected now (or already was)", body = Run),
        (status = 400, description = "invalid_path: the id is not a UUID", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "cluster_not_found: no such cluster", body = ErrorBody),
        (status = 409, description = "cluster_inactive: the cluster is inactive and has no pods left to measure; \
            window_closed: the window's deadline has passed; nothing is scheduled and it stays a gap", body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn collect_now(state: Data, caller: Caller, id: web::Path<ClusterId>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let timing = (state.window_secs, state.deadline_secs);
    match runs::collect_now(&mut conn, *id, timing, state.clock.now()).await.map_err(db)? {
        CollectNow::UnknownCluster => Err(MeteringCode::ClusterNotFound.error()),
        CollectNow::Inactive => Err(MeteringCode::ClusterInactive.error()),
        CollectNow::Closed => Err(MeteringCode::WindowClosed.error()),
        CollectNow::Due(run) => {
            state.wake.notify_one();
            Ok(HttpResponse::Accepted().json(run))
        }
    }
}

#[utoipa::path(get, path = "/api/admin/metering/estimates", tag = "metering", params(WindowQuery),
    responses((status = 200, description = "gap estimates under every policy, newest window first, each with its basis \
            (readings or neighbours), the windows it was based on and its lines", body = EstimatePage),
        (status = 400, description = "invalid_query: limit is not 1-1000, or a filter is malformed; \
            invalid_estimate_status: status names no estimate status", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn list_estimates(state: Data, caller: Caller, q: web::Query<WindowQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(PlatformCode::InvalidQuery.with_message("limit must be 1-1000"));
    }
    let status = q.status.clone().filter(|s| !s.is_empty());
    if status.as_deref().is_some_and(|s| !gaps::STATUSES.contains(&s)) {
        return Err(MeteringCode::InvalidEstimateStatus.error());
    }
    let filter = EstimateFilter { id: None, cluster: q.cluster_id, status, from: q.from, to: q.to };
    let mut conn = state.db.conn().await?;
    Ok(HttpResponse::Ok().json(gaps::list(&mut conn, &filter, limit).await.map_err(db)?))
}

async fn decide(state: &State, caller: &Caller, id: uuid::Uuid, approve: bool) -> Result<HttpResponse, ApiError> {
    require_admin(caller)?;
    let now = state.clock.now();
    let by = caller.subject.clone();
    let decided = state
        .db
        .transaction(|c| {
            let by = by.clone();
            Box::pin(async move { gaps::decide(c, id, approve, &by, now).await })
        })
        .await;
    match decided {
        Ok(Decided::NotFound) => Err(MeteringCode::EstimateNotFound.error()),
        Ok(Decided::Already(status)) => {
            Err(MeteringCode::EstimateDecided.with_message(format!("the estimate is {status}, no longer pending")))
        }
        Ok(Decided::Done(estimate)) => Ok(HttpResponse::Ok().json(estimate)),
        Err(StoreError::Db(e)) => Err(e.into()),
        Err(StoreError::Overflow(message)) => Err(ApiError::internal(anyhow::anyhow!(message))),
    }
}

#[utoipa::path(post, path = "/api/admin/metering/estimates/{id}/approve", tag = "metering",
    params(("id" = Uuid, Path, description = "estimate id")),
    responses((status = 200, description = "published: its samples are written marked estimated, added to the day's usage \
            and announced", body = Estimate),
        (status = 400, description = "invalid_path: the id is not a UUID", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "estimate_not_found: no such estimate", body = ErrorBody),
        (status = 409, description = "estimate_decided: it is not pending; nothing changes", body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn approve_estimate(state: Data, caller: Caller, id: web::Path<uuid::Uuid>) -> Result<HttpResponse, ApiError> {
    decide(&state, &caller, *id, true).await
}

#[utoipa::path(post, path = "/api/admin/metering/estimates/{id}/reject", tag = "metering",
    params(("id" = Uuid, Path, description = "estimate id")),
    responses((status = 200, description = "rejected: nothing is written and the window stays a gap", body = Estimate),
        (status = 400, description = "invalid_path: the id is not a UUID", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "estimate_not_found: no such estimate", body = ErrorBody),
        (status = 409, description = "estimate_decided: it is not pending; nothing changes", body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn reject_estimate(state: Data, caller: Caller, id: web::Path<uuid::Uuid>) -> Result<HttpResponse, ApiError> {
    decide(&state, &caller, *id, false).await
}

/// Filters of the admin usage list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Only this user's pods.
    user_id: Option<UserId>,
    /// Only usage billed to this owner.
    owner_user_id: Option<OwnerId>,
    /// Only this cluster.
    cluster_id: Option<ClusterId>,
    /// First UTC day (default: 30 days before `to`).
    from: Option<NaiveDate>,
    /// Last UTC day, inclusive (default: today).
    to: Option<NaiveDate>,
}

fn days(clock: &Clock, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let to = to.unwrap_or_else(|| clock.now().date_naive());
    let from = from.unwrap_or_else(|| to - chrono::Days::new(30));
    if from > to || (to - from).num_days() > 366 {
        return Err(MeteringCode::InvalidRange.error());
    }
    Ok((from, to))
}

async fn daily(state: &State, filter: &UsageFilter) -> Result<Vec<DailyUsage>, ApiError> {
    let mut conn = state.db.conn().await?;
    usage_daily::list(&mut conn, filter).await.map_err(db)
}

#[utoipa::path(get, path = "/api/admin/usage", tag = "metering", params(UsageQuery),
    responses((status = 200, description = "usage per user, project and UTC day", body = Vec<DailyUsage>),
        (status = 400, description = "invalid_query: a filter is malformed; \
            invalid_range: from is after to, or more than 366 days before it", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn admin_usage(state: Data, caller: Caller, q: web::Query<UsageQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let (from, to) = days(&state.clock, q.from, q.to)?;
    let filter = UsageFilter { from, to, user: q.user_id, owner: q.owner_user_id, person: None, cluster: q.cluster_id };
    Ok(HttpResponse::Ok().json(daily(&state, &filter).await?))
}

/// The caller's usage filter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MyUsageQuery {
    /// First UTC day (default: 30 days before `to`).
    from: Option<NaiveDate>,
    /// Last UTC day, inclusive (default: today).
    to: Option<NaiveDate>,
}

#[utoipa::path(get, path = "/api/usage", tag = "metering", params(MyUsageQuery),
    responses((status = 200, description = "the caller's usage per project and UTC day; for an owner, their team's too", body = Vec<DailyUsage>),
        (status = 400, description = "invalid_query: a day is malformed; \
            invalid_range: from is after to, or more than 366 days before it", body = ErrorBody),
        (status = 401, description = "unauthenticated: not signed in as a person", body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn my_usage(state: Data, caller: Caller, q: web::Query<MyUsageQuery>) -> Result<HttpResponse, ApiError> {
    let person = caller.person()?;
    let (from, to) = days(&state.clock, q.from, q.to)?;
    let filter = UsageFilter { from, to, user: None, owner: None, person: Some(person), cluster: None };
    Ok(HttpResponse::Ok().json(daily(&state, &filter).await?))
}

/// Which user-day's samples.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SampleQuery {
    /// The user.
    user_id: UserId,
    /// The UTC day.
    day: NaiveDate,
}

#[utoipa::path(get, path = "/api/admin/usage/samples", tag = "metering", params(SampleQuery),
    responses((status = 200, description = "the samples a user-day's usage adds up, by window", body = Vec<Sample>),
        (status = 400, description = "invalid_query: user_id or day is missing or malformed", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn admin_samples(state: Data, caller: Caller, q: web::Query<SampleQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let rows = samples::of_user_day(&mut conn, q.user_id, q.day).await.map_err(db)?;
    Ok(HttpResponse::Ok().json(rows))
}

#[utoipa::path(get, path = "/api/admin/usage/storage-samples", tag = "metering", params(SampleQuery),
    responses((status = 200, description = "the storage samples a user-day's storage adds up, by window (decision 0056)",
            body = Vec<StorageSample>),
        (status = 400, description = "invalid_query: user_id or day is missing or malformed", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn admin_storage_samples(
    state: Data,
    caller: Caller,
    q: web::Query<SampleQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let rows = storage_api::samples_of_user_day(&mut conn, q.user_id, q.day).await.map_err(db)?;
    Ok(HttpResponse::Ok().json(rows))
}

#[utoipa::path(get, path = "/api/admin/metering/storage-gaps", tag = "metering", params(GapQuery),
    responses((status = 200, description = "storage windows (project_id null) and projects that could not be measured, \
            newest first, at most 10,000", body = Vec<StorageGap>),
        (status = 400, description = "invalid_query: a filter is malformed; invalid_range: from is not before to", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn storage_gaps(state: Data, caller: Caller, q: web::Query<GapQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let to = q.to.unwrap_or_else(|| state.clock.now());
    let from = q.from.unwrap_or(to - chrono::TimeDelta::days(7));
    if from >= to {
        return Err(MeteringCode::InvalidRange.with_message("from must be before to"));
    }
    let mut conn = state.db.conn().await?;
    let rows = storage_api::gaps(&mut conn, q.cluster_id, (from, to)).await.map_err(db)?;
    Ok(HttpResponse::Ok().json(rows))
}

/// Filters of the storage estimates list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StorageEstimateQuery {
    /// Only this cluster.
    cluster_id: Option<ClusterId>,
    /// Only this Hopsworks project.
    project_id: Option<ProjectId>,
    /// Only this status: pending, published, rejected or none.
    status: Option<String>,
    /// Windows starting at or after this instant.
    from: Option<DateTime<Utc>>,
    /// Windows starting before this instant.
    to: Option<DateTime<Utc>>,
    /// At most this many (1-1000, default 100).
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/admin/metering/storage-estimates", tag = "metering", params(StorageEstimateQuery),
    responses((status = 200, description = "storage gap estimates under every policy (decision 0076), newest window first, \
            one per cluster, project and storage window, each with its basis, the windows it was based on and its bytes",
            body = StorageEstimatePage),
        (status = 400, description = "invalid_query: limit is not 1-1000, or a filter is malformed; \
            invalid_estimate_status: status names no estimate status", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn list_storage_estimates(
    state: Data,
    caller: Caller,
    q: web::Query<StorageEstimateQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(PlatformCode::InvalidQuery.with_message("limit must be 1-1000"));
    }
    let status = q.status.clone().filter(|s| !s.is_empty());
    if status.as_deref().is_some_and(|s| !gaps::STATUSES.contains(&s)) {
        return Err(MeteringCode::InvalidEstimateStatus.error());
    }
    let filter = StorageEstimateFilter {
        id: None,
        cluster: q.cluster_id,
        project: q.project_id,
        status,
        from: q.from,
        to: q.to,
    };
    let mut conn = state.db.conn().await?;
    Ok(HttpResponse::Ok().json(storage_estimates::list(&mut conn, &filter, limit).await.map_err(db)?))
}

async fn decide_storage(
    state: &State,
    caller: &Caller,
    id: uuid::Uuid,
    approve: bool,
) -> Result<HttpResponse, ApiError> {
    require_admin(caller)?;
    let now = state.clock.now();
    let by = caller.subject.clone();
    let decided = state
        .db
        .transaction(|c| {
            let by = by.clone();
            Box::pin(async move { storage_estimates::decide(c, id, approve, &by, now).await })
        })
        .await;
    match decided {
        Ok(storage_estimates::Decided::NotFound) => Err(MeteringCode::EstimateNotFound.error()),
        Ok(storage_estimates::Decided::Already(status)) => {
            Err(MeteringCode::EstimateDecided.with_message(format!("the estimate is {status}, no longer pending")))
        }
        Ok(storage_estimates::Decided::Done(estimate)) => Ok(HttpResponse::Ok().json(estimate)),
        Err(StoreError::Db(e)) => Err(e.into()),
        Err(StoreError::Overflow(message)) => Err(ApiError::internal(anyhow::anyhow!(message))),
    }
}

#[utoipa::path(post, path = "/api/admin/metering/storage-estimates/{id}/approve", tag = "metering",
    params(("id" = Uuid, Path, description = "storage estimate id")),
    responses((status = 200, description = "published: its storage sample is written marked estimated and announced",
            body = StorageEstimate),
        (status = 400, description = "invalid_path: the id is not a UUID", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "estimate_not_found: no such estimate", body = ErrorBody),
        (status = 409, description = "estimate_decided: it is not pending; nothing changes", body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn approve_storage_estimate(
    state: Data,
    caller: Caller,
    id: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    decide_storage(&state, &caller, *id, true).await
}

#[utoipa::path(post, path = "/api/admin/metering/storage-estimates/{id}/reject", tag = "metering",
    params(("id" = Uuid, Path, description = "storage estimate id")),
    responses((status = 200, description = "rejected: nothing is written and the window stays a gap", body = StorageEstimate),
        (status = 400, description = "invalid_path: the id is not a UUID", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "estimate_not_found: no such estimate", body = ErrorBody),
        (status = 409, description = "estimate_decided: it is not pending; nothing changes", body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn reject_storage_estimate(
    state: Data,
    caller: Caller,
    id: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    decide_storage(&state, &caller, *id, false).await
}

/// Filters of the unbilled usage list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UnbilledQuery {
    /// Only this cluster.
    cluster_id: Option<ClusterId>,
    /// First UTC day (default: 30 days before `to`).
    from: Option<NaiveDate>,
    /// Last UTC day, inclusive (default: today).
    to: Option<NaiveDate>,
}

/// Rows the unbilled usage list answers at most.
const MAX_UNBILLED_ROWS: i64 = 10_000;

#[utoipa::path(get, path = "/api/admin/usage/unbilled", tag = "metering", params(UnbilledQuery),
    responses((status = 200, description = "usage billed to nobody (namespaces that are no project of ours), \
            per UTC day, cluster, namespace and username; at most 10,000 rows", body = Vec<UnbilledUsage>),
        (status = 400, description = "invalid_query: a filter is malformed; \
            invalid_range: from is after to, or more than 366 days before it", body = ErrorBody),
        (status = 401, description = NOT_SIGNED_IN, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 503, description = NO_DATABASE, body = ErrorBody)))]
async fn admin_unbilled(state: Data, caller: Caller, q: web::Query<UnbilledQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let range = days(&state.clock, q.from, q.to)?;
    let mut conn = state.db.conn().await?;
    let rows = samples::unbilled(&mut conn, range, q.cluster_id, MAX_UNBILLED_ROWS).await.map_err(db)?;
    Ok(HttpResponse::Ok().json(rows))
}

/// metering's catalogue in the document, the codes of routes outside it included.
const CATALOGUE: hopsbridge_platform::http::CatalogueSchema<MeteringCode> =
    hopsbridge_platform::http::CatalogueSchema::new(
        "MeteringErrorCode",
        "The codes metering answers with, besides the platform's.",
    );

/// metering's part of the public API's OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(list_runs, list_gaps, collect_now, list_estimates, approve_estimate, reject_estimate, admin_usage, admin_samples, admin_unbilled, my_usage,
        admin_storage_samples, storage_gaps, list_storage_estimates, approve_storage_estimate, reject_storage_estimate),
    components(schemas(Run, RunPage, Estimate, EstimateLine, EstimatePage, DailyUsage, Sample, UnbilledUsage, StorageSample, StorageGap,
        StorageEstimate, StorageEstimatePage, ErrorBody)),
    modifiers(&CATALOGUE),
    tags((name = "metering", description = "Usage measured on the clusters, collection runs and gaps"))
)]
pub struct ApiDoc;
