//! The admin view of a service's integrity findings, `GET /api/admin/integrity/<service>`,
//! `POST /api/admin/integrity/<service>/run` and `GET /api/admin/integrity/<service>/runs/{id}`.

use super::requests::{self, IntegrityRequest, RequestStatus};
use super::runner::{CheckRun, Integrity, RunOutcome};
use super::store::{self, CheckStatus, FindingStatus, IntegrityFinding};
use crate::caller::Caller;
use crate::db::DbError;
use crate::http::{AdminRefusals, ApiError, ErrorBody, ErrorCode};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

crate::error_codes! {
    /// What the admin integrity routes answer.
    pub enum IntegrityCode {
        /// The caller is not an administrator.
        AdminOnly = (FORBIDDEN, "admin_only", "administrators only"),
        /// `limit` or `offset` is out of range.
        InvalidPage = (BAD_REQUEST, "invalid_page", "limit must be 1-200 and offset at least 0"),
        /// An on-demand run of the service's checks is still running: poll it (`details.run`).
        RunInProgress = (CONFLICT, "integrity_run_in_progress", "a run of these checks is in progress; poll it"),
        /// No on-demand run of this service has the id.
        RunNotFound = (NOT_FOUND, "integrity_run_not_found", "no such integrity run"),
    }
}

const ADMIN: AdminRefusals<IntegrityCode> =
    AdminRefusals { not_admin: IntegrityCode::AdminOnly, invalid_page: IntegrityCode::InvalidPage };

/// The data services whose integrity checks the admin routes show: the `{service}` of their
/// paths. The gateway forwards each to that service; any other name is 404 `route_not_found`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "documents the path parameter; each service mounts its own name")]
enum IntegrityService {
    Identity,
    Team,
    Provisioning,
    Metering,
    Billing,
}

/// Which findings to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FindingQuery {
    /// `open` (the default), `resolved` or `all`.
    status: Option<FindingStatus>,
    /// Page size, 1-200 (50).
    limit: Option<i64>,
    /// Findings to skip (0).
    offset: Option<i64>,
}

/// A page of findings, and every check with its last run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FindingPage {
    /// The findings, newest first.
    items: Vec<IntegrityFinding>,
    /// How many match.
    total: i64,
    /// The page size used.
    limit: i64,
    /// The offset used.
    offset: i64,
    /// Every check of the service (and any that ran here before), by name, with its last run.
    checks: Vec<CheckStatus>,
}

/// Mounts the admin integrity routes of `integrity`'s service.
pub fn configure(cfg: &mut web::ServiceConfig, integrity: Integrity) {
    let service = integrity.service();
    cfg.service(
        web::scope(&format!("/api/admin/integrity/{service}"))
            .app_data(web::Data::new(integrity))
            .route("", web::get().to(list_findings))
            .route("/run", web::post().to(run_checks))
            .route("/runs/{id}", web::get().to(get_run)),
    );
}

/// `GET /api/admin/integrity/{service}`: a service's integrity findings and its checks' last
/// runs.
#[utoipa::path(get, path = "/api/admin/integrity/{service}", tag = "admin",
    params(("service" = IntegrityService, Path, description = "identity, team, provisioning, metering or billing"), FindingQuery),
    responses((status = 200, description = "a page of findings, newest first, and every check's last run", body = FindingPage),
        (status = 400, description = "invalid_page: limit must be 1-200 and offset at least 0; invalid_query: status is not open, resolved or all", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "route_not_found: no service of that name", body = ErrorBody),
        (status = 503, description = "database_unavailable", body = ErrorBody)))]
async fn list_findings(
    integrity: web::Data<Integrity>,
    caller: Caller,
    query: web::Query<FindingQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = ADMIN.page(&caller, query.limit, query.offset)?;
    let mut conn = integrity.db().conn().await?;
    let (items, total) = store::list(&mut conn, query.status.unwrap_or_default(), limit, offset).await?;
    let checks = store::statuses(&mut conn, &integrity.checks().names()).await?;
    Ok(HttpResponse::Ok().json(FindingPage { items, total, limit, offset, checks }))
}

/// `POST /api/admin/integrity/{service}/run`: starts running every check of the service now,
/// in the background (a check another replica is running is run after that run), and answers
/// the run to poll at once.
#[utoipa::path(post, path = "/api/admin/integrity/{service}/run", tag = "admin",
    params(("service" = IntegrityService, Path, description = "identity, team, provisioning, metering or billing")),
    responses((status = 202, description = "started: the run, `running`, to poll at runs/{id}", body = IntegrityRequest),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "route_not_found: no service of that name", body = ErrorBody),
        (status = 409, description = "integrity_run_in_progress: a run of these checks is in progress; details.run is it, to poll", body = ErrorBody),
        (status = 503, description = "database_unavailable: nothing was started", body = ErrorBody)))]
async fn run_checks(integrity: web::Data<Integrity>, caller: Caller) -> Result<HttpResponse, ApiError> {
    ADMIN.admin(&caller)?;
    match integrity.start().await? {
        Ok(started) => Ok(HttpResponse::Accepted().json(started)),
        Err(running) => Err(IntegrityCode::RunInProgress.error().with_details(serde_json::json!({ "run": running }))),
    }
}

/// `GET /api/admin/integrity/{service}/runs/{id}`: an on-demand run: `running`, or `done` with
/// each check's run and its open findings, or `failed`.
#[utoipa::path(get, path = "/api/admin/integrity/{service}/runs/{id}", tag = "admin",
    params(("service" = IntegrityService, Path, description = "identity, team, provisioning, metering or billing"),
        ("id" = uuid::Uuid, Path, description = "the run's id, as POST …/run answered it")),
    responses((status = 200, description = "the run", body = IntegrityRequest),
        (status = 400, description = "invalid_path: the id is not a UUID", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "integrity_run_not_found: no such integrity run; route_not_found: no service of that name", body = ErrorBody),
        (status = 503, description = "database_unavailable", body = ErrorBody)))]
async fn get_run(
    integrity: web::Data<Integrity>,
    caller: Caller,
    id: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    ADMIN.admin(&caller)?;
    let mut conn = integrity.db().conn().await?;
    match requests::find(&mut conn, id.into_inner()).await {
        Ok(run) => Ok(HttpResponse::Ok().json(run)),
        Err(DbError::NotFound) => Err(IntegrityCode::RunNotFound.error()),
        Err(e) => Err(e.into()),
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_findings, run_checks, get_run),
    components(schemas(
        FindingPage,
        IntegrityFinding,
        FindingStatus,
        CheckStatus,
        IntegrityRequest,
        RequestStatus,
        CheckRun,
        RunOutcome,
        IntegrityService,
        ErrorBody
    ))
)]
struct IntegrityApi;

/// The admin integrity routes' part of the OpenAPI document.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    <IntegrityApi as utoipa::OpenApi>::openapi()
}
