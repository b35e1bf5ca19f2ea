//! The admin view of a service's mail: `GET /api/admin/mail/<service>` and a retry.

use super::MailConfig;
use super::outbox::{self, MailRow, MailStatus};
use crate::caller::Caller;
use crate::db::Database;
use crate::http::{AdminRefusals, ApiError, ErrorBody, ErrorCode};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

crate::error_codes! {
    /// What the admin mail routes answer.
    pub enum MailCode {
        /// The caller is not an administrator.
        AdminOnly = (FORBIDDEN, "admin_only", "administrators only"),
        /// No mail of this service has the id.
        MailNotFound = (NOT_FOUND, "mail_not_found", "no such mail"),
        /// The mail was already sent; there is nothing to retry.
        MailAlreadySent = (CONFLICT, "mail_already_sent", "the mail was already sent"),
        /// `limit` or `offset` is out of range.
        InvalidPage = (BAD_REQUEST, "invalid_page", "limit must be 1-200 and offset at least 0"),
    }
}

#[derive(Clone)]
struct State {
    db: Database,
    failing_after: i32,
}

/// The data services whose mail the admin routes show: the `{service}` of their paths. The
/// gateway forwards each to that service; any other name is 404 `route_not_found`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "documents the path parameter; each service mounts its own name")]
enum MailService {
    Identity,
    Team,
    Provisioning,
    Metering,
    Billing,
}

/// Which mails to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MailQuery {
    /// `pending`, `failing` or `sent`; every mail when absent.
    status: Option<MailStatus>,
    /// Page size, 1-200 (50).
    limit: Option<i64>,
    /// Mails to skip (0).
    offset: Option<i64>,
}

/// A mail and where it is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailView {
    #[serde(flatten)]
    mail: MailRow,
    /// `pending`, `failing` or `sent`.
    status: MailStatus,
}

/// A page of mails.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailPage {
    /// The mails, newest first.
    items: Vec<MailView>,
    /// How many match.
    total: i64,
    /// The page size used.
    limit: i64,
    /// The offset used.
    offset: i64,
}

/// Mounts the admin mail routes of `service` (its name, e.g. `team`).
pub fn configure(cfg: &mut web::ServiceConfig, service: &'static str, db: Database, mail: &MailConfig) {
    let state = State { db, failing_after: mail.failing_after_attempts };
    cfg.service(
        web::scope(&format!("/api/admin/mail/{service}"))
            .app_data(web::Data::new(state))
            .route("", web::get().to(list_mail))
            .route("/{id}/retry", web::post().to(retry_mail)),
    );
}

const ADMIN: AdminRefusals<MailCode> =
    AdminRefusals { not_admin: MailCode::AdminOnly, invalid_page: MailCode::InvalidPage };

/// `GET /api/admin/mail/{service}`: a service's mail, newest first.
#[utoipa::path(get, path = "/api/admin/mail/{service}", tag = "admin",
    params(("service" = MailService, Path, description = "identity, team, provisioning, metering or billing"), MailQuery),
    responses((status = 200, description = "a page of mails", body = MailPage),
        (status = 400, description = "invalid_page: limit must be 1-200 and offset at least 0; invalid_query", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "route_not_found: no service of that name", body = ErrorBody)))]
async fn list_mail(
    state: web::Data<State>,
    caller: Caller,
    query: web::Query<MailQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = ADMIN.page(&caller, query.limit, query.offset)?;
    let mut conn = state.db.conn().await?;
    let (rows, total) = outbox::list(&mut conn, query.status, state.failing_after, limit, offset).await?;
    let items = rows.into_iter().map(|mail| MailView { status: mail.status(state.failing_after), mail }).collect();
    Ok(HttpResponse::Ok().json(MailPage { items, total, limit, offset }))
}

/// `POST /api/admin/mail/{service}/{id}/retry`: tries an unsent mail again now.
#[utoipa::path(post, path = "/api/admin/mail/{service}/{id}/retry", tag = "admin",
    params(("service" = MailService, Path, description = "the service that holds the mail"), ("id" = uuid::Uuid, Path, description = "the mail's id")),
    responses((status = 202, description = "the mail is due now", body = MailView),
        (status = 400, description = "invalid_path: the id is not a UUID", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "admin_only: administrators only", body = ErrorBody),
        (status = 404, description = "mail_not_found: no such mail; route_not_found: no service of that name", body = ErrorBody),
        (status = 409, description = "mail_already_sent: the mail was already sent", body = ErrorBody)))]
async fn retry_mail(
    state: web::Data<State>,
    caller: Caller,
    id: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    ADMIN.admin(&caller)?;
    let id = id.into_inner();
    let mut conn = state.db.conn().await?;
    let missing = |e: crate::db::DbError| match e {
        crate::db::DbError::NotFound => MailCode::MailNotFound.error(),
        other => other.into(),
    };
    if !outbox::retry_now(&mut conn, id).await.map_err(missing)? {
        return Err(MailCode::MailAlreadySent.error());
    }
    let mail = outbox::find(&mut conn, id).await.map_err(missing)?;
    Ok(HttpResponse::Accepted().json(MailView { status: mail.status(state.failing_after), mail }))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_mail, retry_mail),
    components(schemas(MailPage, MailView, MailRow, MailStatus, MailService, ErrorBody))
)]
struct MailApi;

/// The admin mail routes' part of the OpenAPI document.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    <MailApi as utoipa::OpenApi>::openapi()
}
