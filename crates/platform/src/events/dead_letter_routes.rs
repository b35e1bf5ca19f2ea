//! The admin view of a service's dead letters, `GET /api/admin/dead-letters/<service>`, and
//! their replay.

use super::dead_letters::{self, DeadLetter, DeadLetterStatus, ReplayError, ReplayOutcome, ReplaySummary, Replayers};
use crate::caller::Caller;
use crate::db::{Database, DbError};
use crate::http::{AdminRefusals, ApiError, ErrorBody, ErrorCode};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

crate::error_codes! {
    /// What the admin dead-letter routes answer.
    pub enum DeadLetterCode {
        /// The caller is not an administrator.
        AdminOnly = (FORBIDDEN, "admin_only", "administrators only"),
        /// No dead letter of this service has the id.
        DeadLetterNotFound = (NOT_FOUND, "dead_letter_not_found", "no such dead letter"),
        /// The consumer that gave up on it no longer runs in this service: nothing can replay it.
        ConsumerNotRunning = (CONFLICT, "dead_letter_consumer_not_running", "its consumer no longer runs in this service"),
        /// `limit` or `offset` is out of range.
        InvalidPage = (BAD_REQUEST, "invalid_page", "limit must be 1-200 and offset at least 0"),
        /// A bulk replay's `limit` is out of range.
        InvalidReplayLimit = (BAD_REQUEST, "invalid_replay_limit", "limit must be 1-1000"),
    }
}

#[derive(Clone)]
struct State {
    db: Database,
    replayers: Replayers,
}

/// The data services whose dead letters the admin routes show: the `{service}` of their paths.
/// The gateway forwards each to that service; any other name is 404 `route_not_found`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "documents the path parameter; each service mounts its own name")]
enum DeadLetterService {
    Identity,
    Team,
    Provisioning,
    Metering,
    Billing,
}

/// Which dead letters to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// Only of this event type with its version, e.g. `UserCreatedV1`.
    event_type: Option<String>,
    /// `waiting` (not resolved by a replay) or `replayed`; every one when absent.
    status: Option<DeadLetterStatus>,
    /// Page size, 1-200 (50).
    limit: Option<i64>,
    /// Dead letters to skip (0).
    offset: Option<i64>,
}

/// Which waiting dead letters to replay.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    /// Only of this event type with its version, e.g. `UserCreatedV1`.
    event_type: Option<String>,
    /// At most this many, oldest first, 1-1000 (1000).
    limit: Option<i64>,
}

/// A page of dead letters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterPage {
    /// The dead letters, newest failure first.
    items: Vec<DeadLetter>,
    /// How many match.
    total: i64,
    /// The page size used.
    limit: i64,
    /// The offset used.
    offset: i64,
}

/// One replay: what it did and the dead letter as it now is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayAnswer {
    /// `applied`, `already_applied` (the inbox held the event: nothing applied again) or
    /// `failed` (it waits with the new reason).
    outcome: ReplayOutcome,
    /// The dead letter.
    dead_letter: DeadLetter,
}

/// Mounts the admin dead-letter routes of `service` (its name, e.g. `team`).
pub fn configure(cfg: &mut web::ServiceConfig, service: &'static str, db: Database, replayers: Replayers) {
    let state = State { db, replayers };
    cfg.service(
        web::scope(&format!("/api/admin/dead-letters/{service}"))
            .app_data(web::Data::new(state))
            .route("", web::get().to(list_dead_letters))
            .route("/replay", web::post().to(replay_dead_letters))
            .route("/{id}", web::get().to(get_dead_letter))
            .route("/{id}/replay", web::post().to(replay_dead_letter)),
    );
}

const ADMIN: AdminRefusals<DeadLetterCode> =
    AdminRefusals { not_admin: DeadLetterCode::AdminOnly, invalid_page: DeadLetterCode::InvalidPage };

fn missing(e: DbError) -> ApiError {
    match e {
        DbError::NotFound => DeadLetterCode::DeadLetterNotFound.error(),
        other => other.into(),
    }
}

/// `GET /api/admin/dead-letters/{service}`: the events a service's consumers gave up on.
#[utoipa::path(get, path = "/api/admin/dead-letters/{service}", tag = "admin",
    params(("service" = DeadLetterService, Path, description = "identity, team, provisioning, metering or billing"), DeadLetterQuery),
    responses((status = 200, description = "a page of dead letters, newest failure first", body = DeadLetterPage),
        (status = 400, description = "invalid_page: limit must be 1-200 and offset at least 0; invalid_query", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "route_not_found: no service of that name", body = ErrorBody)))]
async fn list_dead_letters(
    state: web::Data<State>,
    caller: Caller,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = ADMIN.page(&caller, query.limit, query.offset)?;
    let mut conn = state.db.conn().await?;
    let (items, total) =
        dead_letters::list(&mut conn, query.event_type.as_deref(), query.status, limit, offset).await?;
    Ok(HttpResponse::Ok().json(DeadLetterPage { items, total, limit, offset }))
}

/// `GET /api/admin/dead-letters/{service}/{id}`: one dead letter.
#[utoipa::path(get, path = "/api/admin/dead-letters/{service}/{id}", tag = "admin",
    params(("service" = DeadLetterService, Path, description = "the service whose consumer gave up"), ("id" = uuid::Uuid, Path, description = "the dead letter's id")),
    responses((status = 200, description = "the dead letter", body = DeadLetter),
        (status = 400, description = "invalid_path: the id is not a UUID", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "dead_letter_not_found: no such dead letter; route_not_found: no service of that name", body = ErrorBody)))]
async fn get_dead_letter(
    state: web::Data<State>,
    caller: Caller,
    id: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    ADMIN.admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let letter = dead_letters::find(&mut conn, id.into_inner()).await.map_err(missing)?;
    Ok(HttpResponse::Ok().json(letter))
}

/// `POST /api/admin/dead-letters/{service}/{id}/replay`: hands the event to its consumer's
/// handler again, through the inbox, so it is applied at most once however often it is
/// replayed.
#[utoipa::path(post, path = "/api/admin/dead-letters/{service}/{id}/replay", tag = "admin",
    params(("service" = DeadLetterService, Path, description = "the service whose consumer gave up"), ("id" = uuid::Uuid, Path, description = "the dead letter's id")),
    responses((status = 200, description = "replayed: applied, already applied, or failed again (it waits with the new reason)", body = ReplayAnswer),
        (status = 400, description = "invalid_path: the id is not a UUID", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "dead_letter_not_found: no such dead letter; route_not_found: no service of that name", body = ErrorBody),
        (status = 409, description = "dead_letter_consumer_not_running: its consumer no longer runs in this service", body = ErrorBody),
        (status = 503, description = "database_unavailable: nothing was changed", body = ErrorBody)))]
async fn replay_dead_letter(
    state: web::Data<State>,
    caller: Caller,
    id: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    ADMIN.admin(&caller)?;
    match dead_letters::replay(&state.db, &state.replayers, id.into_inner()).await {
        Ok((dead_letter, outcome)) => Ok(HttpResponse::Ok().json(ReplayAnswer { outcome, dead_letter })),
        Err(ReplayError::NotFound) => Err(DeadLetterCode::DeadLetterNotFound.error()),
        Err(ReplayError::ConsumerNotRunning(_)) => Err(DeadLetterCode::ConsumerNotRunning.error()),
        Err(ReplayError::Db(e)) => Err(e.into()),
    }
}

/// `POST /api/admin/dead-letters/{service}/replay`: replays the waiting dead letters, oldest
/// first, each as the single replay does.
#[utoipa::path(post, path = "/api/admin/dead-letters/{service}/replay", tag = "admin",
    params(("service" = DeadLetterService, Path, description = "the service whose consumers gave up"), ReplayQuery),
    responses((status = 200, description = "what was applied, already applied, failed again, and is left", body = ReplaySummary),
        (status = 400, description = "invalid_replay_limit: limit must be 1-1000; invalid_query", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "route_not_found: no service of that name", body = ErrorBody),
        (status = 503, description = "database_unavailable: those replayed before stay replayed", body = ErrorBody)))]
async fn replay_dead_letters(
    state: web::Data<State>,
    caller: Caller,
    query: web::Query<ReplayQuery>,
) -> Result<HttpResponse, ApiError> {
    ADMIN.admin(&caller)?;
    let limit = query.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(DeadLetterCode::InvalidReplayLimit.error());
    }
    let summary = dead_letters::replay_waiting(&state.db, &state.replayers, query.event_type.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(summary))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_dead_letters, get_dead_letter, replay_dead_letter, replay_dead_letters),
    components(schemas(
        DeadLetterPage,
        DeadLetter,
        DeadLetterStatus,
        ReplayAnswer,
        ReplayOutcome,
        ReplaySummary,
        DeadLetterService,
        ErrorBody
    ))
)]
struct DeadLetterApi;

/// The admin dead-letter routes' part of the OpenAPI document.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    <DeadLetterApi as utoipa::OpenApi>::openapi()
}
