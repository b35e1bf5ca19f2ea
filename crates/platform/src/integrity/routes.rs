//! The admin view of a service's integrity findings, `GET /api/admin/integrity/<service>`, and
//! `POST /api/admin/integrity/<service>/run`.

use super::runner::{CheckRun, Integrity, RunOutcome};
use super::store::{self, CheckStatus, FindingStatus, IntegrityFinding};
use crate::caller::{Caller, Role};
use crate::http::{ApiError, ErrorBody, ErrorCode};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

crate::error_codes! {
    /// What the admin integrity routes answer.
    pub enum IntegrityCode {
        /// The caller is not an administrator.
        AdminOnly = (FORBIDDEN, "admin_only", "administrators only"),
        /// `limit` or `offset` is out of range.
        InvalidPage = (BAD_REQUEST, "invalid_page", "limit must be 1-200 and offset at least 0"),
    }
}

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

/// What running every check now did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunAnswer {
    /// One run per check, in the order they ran.
    runs: Vec<CheckRun>,
}

/// Mounts the admin integrity routes of `integrity`'s service.
pub fn configure(cfg: &mut web::ServiceConfig, integrity: Integrity) {
    let service = integrity.service();
    cfg.service(
        web::scope(&format!("/api/admin/integrity/{service}"))
            .app_data(web::Data::new(integrity))
            .route("", web::get().to(list_findings))
            .route("/run", web::post().to(run_checks)),
    );
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.has(Role::Admin) { Ok(()) } else { Err(IntegrityCode::AdminOnly.error()) }
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
    require_admin(&caller)?;
    let limit = query.limit.unwrap_or(50);
    let offset = query.offset.unwrap_or(0);
    if !(1..=200).contains(&limit) || offset < 0 {
        return Err(IntegrityCode::InvalidPage.error());
    }
    let mut conn = integrity.db().conn().await?;
    let (items, total) = store::list(&mut conn, query.status.unwrap_or_default(), limit, offset).await?;
    let checks = store::statuses(&mut conn, &integrity.checks().names()).await?;
    Ok(HttpResponse::Ok().json(FindingPage { items, total, limit, offset, checks }))
}

/// `POST /api/admin/integrity/{service}/run`: runs every check of the service now (a check
/// another replica is running is run after that run) and answers what each found.
#[utoipa::path(post, path = "/api/admin/integrity/{service}/run", tag = "admin",
    params(("service" = IntegrityService, Path, description = "identity, team, provisioning, metering or billing")),
    responses((status = 200, description = "each check's run: ok with its open findings, failed (its findings left as they were) or busy", body = RunAnswer),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "route_not_found: no service of that name", body = ErrorBody),
        (status = 503, description = "database_unavailable: the checks run before stay recorded", body = ErrorBody)))]
async fn run_checks(integrity: web::Data<Integrity>, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let runs = integrity.run_all().await?;
    Ok(HttpResponse::Ok().json(RunAnswer { runs }))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_findings, run_checks),
    components(schemas(
        FindingPage,
        IntegrityFinding,
        FindingStatus,
        CheckStatus,
        RunAnswer,
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
