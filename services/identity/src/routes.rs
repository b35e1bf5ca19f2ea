//! identity's HTTP API.
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /webhooks/auth0/post-registration` | Auth0's Action (shared secret) | create the person once |
//! | `POST /internal/callers/resolve` | the gateway | find or create the caller, record the login |
//! | `POST /internal/callers/signed-in` | the gateway's login callback | as resolve, and announce the sign-in (`UserSignedInV1`) |
//! | `GET /api/me`, `PATCH /api/me`, `DELETE /api/me` | the signed-in person | their account (deleting it asks the team service first) |
//! | `GET /api/admin/users`, `GET /api/admin/users/{id}` | admins | list, search, view |
//! | `POST /api/admin/users/{id}/suspend`, `…/reactivate` | admins | lifecycle |
//! | `PUT` and `DELETE /api/admin/users/{id}/admin` | admins | grant and revoke admin |

use crate::error::{IdentityCode, IdentityError, answers};
use crate::memberships;
use crate::team::Team;
use crate::users::{self, NewPerson, Suspender, User};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::Service;
use hopsbridge_domain::{AccountStatus, AuthSubject, Email, OwnerId, UserId};
use hopsbridge_platform::caller::{BodyDigest, Caller, CallerVerifier, Role};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::http::{ApiError, CatalogueSchema, ErrorBody, ErrorCode, PlatformCode};
use hopsbridge_platform::{Secret, constant_time_eq};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The header carrying the Action's shared secret.
pub const WEBHOOK_SECRET_HEADER: &str = "x-auth0-webhook-secret";

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    /// identity's schema.
    pub db: Database,
    /// The Action's shared secret.
    pub webhook_secret: Secret<String>,
    /// The issuer of the tenant whose people the Action announces, when configured
    /// (`auth0.issuer`); otherwise the one the forwarding gateway vouches for.
    pub tenant: Option<String>,
    /// The team service, asked before an owner's account is deleted.
    pub team: Team,
    /// Calendar time: whose team a member is in now.
    pub clock: Clock,
}

/// Registers the routes.
pub fn configure(c: &mut web::ServiceConfig, state: State) {
    c.app_data(web::Data::new(state))
        .route("/webhooks/auth0/post-registration", web::post().to(post_registration))
        .route("/internal/callers/resolve", web::post().to(resolve_caller))
        .route("/internal/callers/signed-in", web::post().to(signed_in))
        .route("/api/me", web::get().to(get_me))
        .route("/api/me", web::patch().to(update_me))
        .route("/api/me", web::delete().to(delete_me))
        .route("/api/admin/users", web::get().to(list_users))
        .route("/api/admin/users/{id}", web::get().to(get_user))
        .route("/api/admin/users/{id}/suspend", web::post().to(suspend_user))
        .route("/api/admin/users/{id}/reactivate", web::post().to(reactivate_user))
        .route("/api/admin/users/{id}/admin", web::put().to(grant_admin))
        .route("/api/admin/users/{id}/admin", web::delete().to(revoke_admin));
}

type Data = web::Data<State>;

/// A user as the API shows them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    #[serde(flatten)]
    user: User,
    /// The owner whose account this person's usage is billed to (themselves for an owner).
    account_owner_id: OwnerId,
}

async fn view(conn: &mut AsyncPgConnection, user: User, now: DateTime<Utc>) -> Result<UserView, IdentityError> {
    let owner = memberships::owner_at(conn, user.id, now).await?.unwrap_or(user.id.as_owner());
    Ok(UserView { user, account_owner_id: owner })
}

/// The body Hopsbridge's post-registration Action sends.
#[derive(Debug, Deserialize)]
struct PostRegistration {
    user_id: String,
    email: String,
    #[serde(default)]
    name: String,
}

async fn post_registration(state: Data, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let given = req.headers().get(WEBHOOK_SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !constant_time_eq(given, state.webhook_secret.expose().as_bytes()) {
        return Err(IdentityCode::InvalidWebhookSecret.error());
    }
    let issuer = webhook_tenant(&state, &req)?;
    let body: PostRegistration =
        serde_json::from_slice(&body).map_err(|e| PlatformCode::InvalidBody.with_message(e.to_string()))?;
    let person = NewPerson {
        issuer,
        subject: AuthSubject::parse(&body.user_id)
            .map_err(|e| IdentityCode::InvalidUserId.with_message(e.to_string()))?,
        email: Email::parse(&body.email).map_err(|e| IdentityCode::InvalidEmail.with_message(e.to_string()))?,
        name: clean_name(&body.name)?,
    };
    let (user, created) = state
        .db
        .transaction(|c| {
            let (person, now) = (person.clone(), state.clock.now());
            Box::pin(async move {
                let (user, created) = users::create_if_absent(c, &person, now).await?;
                // Auth0 does not wait for the Action, so a first call can make the person from
                // the token, which carries no name; the Action's name fills it in, once.
                if !created && user.name.is_empty() && !person.name.is_empty() {
                    return Ok::<_, IdentityError>((users::rename(c, user.id, &person.name).await?, false));
                }
                Ok((user, created))
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({"user_id": user.id, "created": created})))
}

/// The tenant whose people the webhook announces: identity's `auth0.issuer`, else the issuer
/// the gateway vouched for when it forwarded the call (signed as the gateway). When both are
/// there they must agree.
fn webhook_tenant(state: &State, req: &HttpRequest) -> Result<String, ApiError> {
    let vouched = req.app_data::<web::Data<CallerVerifier>>().and_then(|verifier| {
        let path = req.uri().path_and_query().map_or_else(|| req.path().to_owned(), ToString::to_string);
        let digest = req.extensions().get::<BodyDigest>()?.0.clone();
        let gateway = verifier.verify("POST", &path, req.headers(), &digest, Utc::now().timestamp()).ok()?;
        let as_gateway = Caller { issuer: None, ..gateway.clone() };
        as_gateway.is_service(Service::Gateway).then_some(gateway.issuer).flatten()
    });
    match (&state.tenant, vouched) {
        (Some(configured), Some(vouched)) if *configured != vouched => {
            tracing::warn!(configured, vouched, "the gateway forwarded the Auth0 webhook for another tenant");
            Err(PlatformCode::Unauthenticated.with_message("the webhook came for another Auth0 tenant than identity's"))
        }
        (Some(configured), _) => Ok(configured.clone()),
        (None, Some(vouched)) => Ok(vouched),
        (None, None) => Err(PlatformCode::Unauthenticated
            .with_message("the webhook's Auth0 tenant is unknown: it did not come through the gateway")),
    }
}

async fn resolve_caller(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    gateway_only(&caller)?;
    Ok(HttpResponse::Ok().json(resolve(&state, &caller, false).await?))
}

/// The gateway's login callback: a person signed in through the browser. Resolved as any
/// caller, and `UserSignedInV1` announced (once per sign-in: plain API calls use
/// `/internal/callers/resolve`) for an account that is not deleted.
async fn signed_in(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    gateway_only(&caller)?;
    Ok(HttpResponse::Ok().json(resolve(&state, &caller, true).await?))
}

/// The caller-resolution routes are the gateway's: it alone signs people (a service's key
/// signs only that service, decision 0053), so any service caller is refused 403.
fn gateway_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.has(Role::Service) { Err(IdentityCode::GatewayOnly.error()) } else { Ok(()) }
}

async fn resolve(state: &State, caller: &Caller, signing_in: bool) -> Result<UserView, ApiError> {
    let subject =
        AuthSubject::parse(&caller.subject).map_err(|e| IdentityCode::InvalidSubject.with_message(e.to_string()))?;
    let issuer = caller
        .issuer
        .clone()
        .ok_or_else(|| IdentityCode::InvalidSubject.with_message("the caller's subject comes without its issuer"))?;
    // The platform parsed the email the gateway vouched for; an invalid one never gets here.
    let email = caller.email.clone();
    let view = state
        .db
        .transaction(|c| {
            let (issuer, subject, email) = (issuer.clone(), subject.clone(), email.clone());
            let now = state.clock.now();
            Box::pin(async move {
                let user = match users::by_identity(c, &issuer, &subject).await {
                    Ok(user) => user,
                    Err(IdentityError::NotFound) => {
                        let email = email.ok_or(IdentityError::EmailRequired)?;
                        let person = NewPerson { issuer, subject, email, name: String::new() };
                        users::create_if_absent(c, &person, now).await?.0
                    }
                    Err(e) => return Err(e),
                };
                if user.status == AccountStatus::Active {
                    users::touch_login(c, user.id).await?;
                }
                if signing_in && user.status != AccountStatus::Deleted {
                    users::signed_in(c, user.id, now).await?;
                }
                view(c, user, now).await
            })
        })
        .await?;
    Ok(view)
}

/// The caller's own id: the gateway resolves every person before forwarding.
fn me(caller: &Caller) -> Result<UserId, ApiError> {
    caller.person()
}

/// Refuses an account that is not active.
fn ensure_active(user: &User) -> Result<(), IdentityError> {
    match user.status {
        AccountStatus::Active => Ok(()),
        AccountStatus::Suspended => Err(IdentityError::Refused(IdentityCode::AccountSuspended)),
        AccountStatus::Deleted => Err(IdentityError::Refused(IdentityCode::AccountDeleted)),
    }
}

/// Loads the caller's account and refuses one that is not active.
async fn active(conn: &mut AsyncPgConnection, id: UserId) -> Result<User, IdentityError> {
    let user = users::get(conn, id).await?;
    ensure_active(&user)?;
    Ok(user)
}

#[utoipa::path(get, path = "/api/me", tag = "account",
    responses((status = 200, description = "the caller's account", body = UserView),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = not_active(), body = ErrorBody)))]
async fn get_me(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let id = me(&caller)?;
    let mut conn = state.db.conn().await?;
    let (user, account_owner_id) = users::get_with_owner(&mut conn, id, state.clock.now()).await?;
    ensure_active(&user)?;
    Ok(HttpResponse::Ok().json(UserView { user, account_owner_id }))
}

/// A change to one's own account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMe {
    /// Display name: 1-200 characters once trimmed, at least one of them not a space, none a
    /// control character.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: String,
}

/// The name trimmed, refused when too long or with control characters (it may be empty).
fn clean_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.chars().count() > 200 {
        return Err(IdentityCode::InvalidName.with_message("name must be at most 200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(IdentityCode::InvalidName.with_message("name must not contain control characters"));
    }
    Ok(name.to_owned())
}

#[utoipa::path(patch, path = "/api/me", tag = "account", request_body = UpdateMe,
    responses((status = 200, description = "renamed", body = UserView),
        (status = 400, description = answers(&[IdentityCode::InvalidName], &[PlatformCode::InvalidBody]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = not_active(), body = ErrorBody),
        (status = 415, description = answers(&[], &[PlatformCode::UnsupportedMediaType]), body = ErrorBody)))]
async fn update_me(state: Data, caller: Caller, body: web::Json<UpdateMe>) -> Result<HttpResponse, ApiError> {
    let id = me(&caller)?;
    let name = clean_name(&body.name)?;
    if name.is_empty() {
        return Err(IdentityCode::InvalidName.with_message("name must not be empty"));
    }
    let view = state
        .db
        .transaction(|c| {
            let (name, now) = (name.clone(), state.clock.now());
            Box::pin(async move {
                active(c, id).await?;
                let user = users::rename(c, id, &name).await?;
                view(c, user, now).await
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(delete, path = "/api/me", tag = "account",
    description = "Deletes an owner's account. A team member is refused; an owner is refused while the team \
        service counts members in their team, and when it does not answer (nothing is changed).",
    responses((status = 200, description = "the account, now deleted", body = UserView),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = not_active(), body = ErrorBody),
        (status = 409, description = answers(&[IdentityCode::MemberAccount, IdentityCode::TeamNotEmpty], &[]), body = ErrorBody),
        (status = 503, description = answers(&[IdentityCode::TeamUnavailable], &[]), body = ErrorBody)))]
async fn delete_me(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let id = me(&caller)?;
    // Refusals identity can tell alone come first, without asking team; the transaction below
    // checks them again under the account's lock.
    {
        let mut conn = state.db.conn().await?;
        active(&mut conn, id).await?;
        if memberships::owner_at(&mut conn, id, state.clock.now()).await?.is_some() {
            return Err(IdentityCode::MemberAccount.error());
        }
    }
    let members = state.team.member_count(id.as_owner()).await.map_err(|e| {
        tracing::warn!(error = %e, "account not deleted: the team service did not say whether the owner has members");
        IdentityCode::TeamUnavailable.error()
    })?;
    if members > 0 {
        return Err(IdentityCode::TeamNotEmpty.error());
    }
    let view = state
        .db
        .transaction(|c| {
            let now = state.clock.now();
            Box::pin(async move {
                active(c, id).await?;
                let user = users::delete_account(c, id, now).await?;
                view(c, user, now).await
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Admin comes from identity's own record, never from a header or a token.
async fn require_admin(state: &State, caller: &Caller) -> Result<Option<UserId>, ApiError> {
    // A machine client the gateway granted the admin role is no person: nothing to look up.
    if caller.is_machine_admin() {
        return Ok(None);
    }
    let id = me(caller)?;
    let mut conn = state.db.conn().await?;
    let user = active(&mut conn, id).await?;
    if user.is_admin { Ok(Some(id)) } else { Err(IdentityCode::AdminOnly.error()) }
}

/// Paging and search of the user list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Text to find in the email or name (case-insensitive).
    q: Option<String>,
    /// Page size, 1-200 (50).
    limit: Option<i64>,
    /// Users to skip (0).
    offset: Option<i64>,
}

/// A page of users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    items: Vec<User>,
    total: i64,
    limit: i64,
    offset: i64,
}

#[utoipa::path(get, path = "/api/admin/users", tag = "admin", params(ListQuery),
    responses((status = 200, description = "a page of users, newest first", body = UserPage),
        (status = 400, description = answers(&[], &[PlatformCode::InvalidQuery]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody)))]
async fn list_users(state: Data, caller: Caller, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &caller).await?;
    let limit = query.limit.unwrap_or(50);
    let offset = query.offset.unwrap_or(0);
    if !(1..=200).contains(&limit) || offset < 0 {
        return Err(PlatformCode::InvalidQuery.with_message("limit must be 1-200 and offset at least 0"));
    }
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let mut conn = state.db.conn().await?;
    let (items, total) = users::list(&mut conn, q, limit, offset).await?;
    Ok(HttpResponse::Ok().json(UserPage { items, total, limit, offset }))
}

#[utoipa::path(get, path = "/api/admin/users/{id}", tag = "admin", params(("id" = UserId, Path, description = "user id")),
    responses((status = 200, description = "the user", body = UserView),
        (status = 400, description = answers(&[], &[PlatformCode::InvalidPath]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = answers(&[IdentityCode::UserNotFound], &[]), body = ErrorBody)))]
async fn get_user(state: Data, caller: Caller, id: web::Path<UserId>) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &caller).await?;
    let mut conn = state.db.conn().await?;
    let (user, account_owner_id) = users::get_with_owner(&mut conn, *id, state.clock.now()).await?;
    Ok(HttpResponse::Ok().json(UserView { user, account_owner_id }))
}

/// Why an account is suspended.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Suspend {
    /// Shown to admins and carried by UserSuspended.
    #[serde(default)]
    reason: String,
}

#[utoipa::path(post, path = "/api/admin/users/{id}/suspend", tag = "admin", params(("id" = UserId, Path, description = "user id")),
    request_body(content = Option<Suspend>, description = "why"),
    responses((status = 200, description = "suspended (UserSuspended announced once)", body = User),
        (status = 400, description = answers(&[], &[PlatformCode::InvalidPath, PlatformCode::InvalidBody]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = answers(&[IdentityCode::UserNotFound], &[]), body = ErrorBody),
        (status = 409, description = answers(&[IdentityCode::AccountDeletedConflict, IdentityCode::CannotSuspendSelf], &[]), body = ErrorBody)))]
async fn suspend_user(
    state: Data,
    caller: Caller,
    id: web::Path<UserId>,
    body: Option<web::Json<Suspend>>,
) -> Result<HttpResponse, ApiError> {
    let admin = require_admin(&state, &caller).await?;
    let id = *id;
    if Some(id) == admin {
        return Err(IdentityCode::CannotSuspendSelf.error());
    }
    let reason = body.map(|b| b.into_inner().reason).unwrap_or_default();
    let user = state
        .db
        .transaction(|c| {
            let (reason, now) = (reason.clone(), state.clock.now());
            Box::pin(async move { users::suspend(c, id, Suspender::Admin, &reason, now).await })
        })
        .await?;
    Ok(HttpResponse::Ok().json(user))
}

#[utoipa::path(post, path = "/api/admin/users/{id}/reactivate", tag = "admin", params(("id" = UserId, Path, description = "user id")),
    responses((status = 200, description = "active again (UserReactivated announced once)", body = User),
        (status = 400, description = answers(&[], &[PlatformCode::InvalidPath]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = answers(&[IdentityCode::UserNotFound], &[]), body = ErrorBody),
        (status = 409, description = answers(&[IdentityCode::AccountDeletedConflict], &[]), body = ErrorBody)))]
async fn reactivate_user(state: Data, caller: Caller, id: web::Path<UserId>) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &caller).await?;
    let id = *id;
    let user = state
        .db
        .transaction(|c| {
            let now = state.clock.now();
            Box::pin(async move { users::reactivate(c, id, None, now).await })
        })
        .await?;
    Ok(HttpResponse::Ok().json(user))
}

#[utoipa::path(put, path = "/api/admin/users/{id}/admin", tag = "admin", params(("id" = UserId, Path, description = "user id")),
    responses((status = 200, description = "now an administrator", body = User),
        (status = 400, description = answers(&[], &[PlatformCode::InvalidPath]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = answers(&[IdentityCode::UserNotFound], &[]), body = ErrorBody)))]
async fn grant_admin(state: Data, caller: Caller, id: web::Path<UserId>) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &caller).await?;
    let id = *id;
    let user = state.db.transaction(|c| Box::pin(async move { users::set_admin(c, id, true).await })).await?;
    Ok(HttpResponse::Ok().json(user))
}

#[utoipa::path(delete, path = "/api/admin/users/{id}/admin", tag = "admin", params(("id" = UserId, Path, description = "user id")),
    responses((status = 200, description = "no longer an administrator", body = User),
        (status = 400, description = answers(&[], &[PlatformCode::InvalidPath]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = answers(&[IdentityCode::UserNotFound], &[]), body = ErrorBody),
        (status = 409, description = answers(&[IdentityCode::CannotRevokeSelf], &[]), body = ErrorBody)))]
async fn revoke_admin(state: Data, caller: Caller, id: web::Path<UserId>) -> Result<HttpResponse, ApiError> {
    let admin = require_admin(&state, &caller).await?;
    let id = *id;
    if Some(id) == admin {
        return Err(IdentityCode::CannotRevokeSelf.error());
    }
    let user = state.db.transaction(|c| Box::pin(async move { users::set_admin(c, id, false).await })).await?;
    Ok(HttpResponse::Ok().json(user))
}

/// 401 on every route for people.
fn not_signed_in() -> String {
    answers(&[], &[PlatformCode::Unauthenticated])
}

/// 403 on the routes for one's own account.
fn not_active() -> String {
    answers(&[IdentityCode::AccountSuspended, IdentityCode::AccountDeleted], &[])
}

/// 403 on the admin routes: not an admin, or the admin's own account is not active.
fn admins_only() -> String {
    answers(&[IdentityCode::AdminOnly, IdentityCode::AccountSuspended, IdentityCode::AccountDeleted], &[])
}

/// identity's catalogue in the document, the codes of routes outside it (the Auth0 webhook, the
/// gateway's caller resolution) included.
const CATALOGUE: CatalogueSchema<IdentityCode> =
    CatalogueSchema::new("IdentityErrorCode", "The codes identity answers with, besides the platform's.");

/// identity's part of the public API's OpenAPI document, with its error catalogue.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(get_me, update_me, delete_me, list_users, get_user, suspend_user, reactivate_user, grant_admin, revoke_admin),
    components(schemas(User, UserView, UserPage, UpdateMe, Suspend, ErrorBody)),
    modifiers(&CATALOGUE),
    tags((name = "account", description = "the signed-in person's own account"), (name = "admin", description = "user administration"))
)]
pub struct ApiDoc;
