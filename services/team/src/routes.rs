//! team's HTTP API.
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /api/team/invitations`, `GET /api/team/invitations` | owners | invite, list pending |
//! | `POST /api/team/invitations/{id}/resend`, `DELETE /api/team/invitations/{id}` | owners | resend, cancel |
//! | `GET /api/invitations/{token}` | anyone with the link (no sign-in) | preview |
//! | `POST /api/invitations/{token}/accept` | the invited person, signed in | join |
//! | `GET /api/team`, `DELETE /api/team/members/{user_id}` | owners | the team, remove a member |
//! | `GET /api/team/membership`, `POST /api/team/leave` | members | their membership, leave |
//! | `GET /internal/owners/{user_id}/members` | the identity service | count an owner's members |
//!
//! Whether a caller is an owner or a member comes from team's own memberships, never from the
//! gateway's roles: a member is refused every owner route with `403 owner_only`.

use crate::error::{TeamCode, answers};
use crate::invitations::Invitation;
use crate::inviting::{self, Acceptance, Issued, Preview, Rules};
use crate::members::{self, MyMembership, Team};
use crate::memberships::Membership;
use actix_web::{HttpResponse, web};
use hopsbridge_contracts::Service;
use hopsbridge_domain::{Email, ProjectRole, UserId};
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode, PlatformCode};
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    /// team's schema.
    pub db: Database,
    /// Invitation lifetimes, the terms version and the console's links.
    pub rules: Arc<Rules>,
}

/// Registers the routes.
pub fn configure(c: &mut web::ServiceConfig, state: State) {
    c.app_data(web::Data::new(state))
        .route("/api/team", web::get().to(get_team))
        .route("/api/team/invitations", web::post().to(invite_member))
        .route("/api/team/invitations", web::get().to(list_invitations))
        .route("/api/team/invitations/{id}/resend", web::post().to(resend_invitation))
        .route("/api/team/invitations/{id}", web::delete().to(cancel_invitation))
        .route("/api/team/members/{user_id}", web::delete().to(remove_member))
        .route("/api/team/membership", web::get().to(get_membership))
        .route("/api/team/leave", web::post().to(leave_team))
        .route("/api/invitations/{token}", web::get().to(preview_invitation))
        .route("/api/invitations/{token}/accept", web::post().to(accept_invitation))
        .route("/internal/owners/{user_id}/members", web::get().to(owner_members));
}

type Data = web::Data<State>;

/// The caller's address, which the gateway sends with every person.
fn my_email(caller: &Caller) -> Result<Email, ApiError> {
    caller.email.clone().ok_or_else(|| PlatformCode::Unauthenticated.with_message("the caller has no email address"))
}

/// An invitation to send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// The address to invite (normalised: trimmed and lowercased).
    email: String,
    /// `Data owner` or `Data scientist`: the role in the owner's Hopsworks projects.
    project_role: String,
}

#[utoipa::path(post, path = "/api/team/invitations", tag = "team", request_body = Invite,
    responses((status = 201, description = "invited; the mail is on its way. The link (with its token) is shown only here and in a resend's answer", body = Issued),
        (status = 400, description = answers(&[TeamCode::InvalidEmail, TeamCode::InvalidProjectRole, TeamCode::CannotInviteSelf], &[PlatformCode::InvalidBody]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = owners_only(), body = ErrorBody),
        (status = 409, description = answers(&[TeamCode::AlreadyMember, TeamCode::MemberOfAnotherTeam], &[]), body = ErrorBody),
        (status = 415, description = answers(&[], &[PlatformCode::UnsupportedMediaType]), body = ErrorBody)))]
async fn invite_member(state: Data, caller: Caller, body: web::Json<Invite>) -> Result<HttpResponse, ApiError> {
    let me = caller.person()?;
    let mine = my_email(&caller)?;
    let email = Email::parse(&body.email).map_err(|e| TeamCode::InvalidEmail.with_message(e.to_string()))?;
    let role: ProjectRole = body.project_role.parse().map_err(|_| TeamCode::InvalidProjectRole.error())?;
    let issued = state
        .db
        .transaction(|c| {
            let (rules, mine, email) = (Arc::clone(&state.rules), mine.clone(), email.clone());
            Box::pin(async move { inviting::invite(c, &rules, me, &mine, &email, role).await })
        })
        .await?;
    Ok(HttpResponse::Created().json(issued))
}

#[utoipa::path(get, path = "/api/team/invitations", tag = "team",
    responses((status = 200, description = "the pending invitations, newest first (expired ones included: see expires_at)", body = Vec<Invitation>),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = owners_only(), body = ErrorBody)))]
async fn list_invitations(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let me = caller.person()?;
    let mut conn = state.db.conn().await?;
    Ok(HttpResponse::Ok().json(inviting::pending(&mut conn, me).await?))
}

#[utoipa::path(post, path = "/api/team/invitations/{id}/resend", tag = "team", params(("id" = Uuid, Path, description = "invitation id")),
    responses((status = 200, description = "sent again with a new link and a new expiry; the old link stops working", body = Issued),
        (status = 400, description = answers(&[], &[PlatformCode::InvalidPath]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = owners_only(), body = ErrorBody),
        (status = 404, description = answers(&[TeamCode::InvitationNotFound], &[]), body = ErrorBody)))]
async fn resend_invitation(state: Data, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let me = caller.person()?;
    let id = *id;
    let issued = state
        .db
        .transaction(|c| {
            let rules = Arc::clone(&state.rules);
            Box::pin(async move { inviting::resend(c, &rules, me, id).await })
        })
        .await?;
    Ok(HttpResponse::Ok().json(issued))
}

#[utoipa::path(delete, path = "/api/team/invitations/{id}", tag = "team", params(("id" = Uuid, Path, description = "invitation id")),
    responses((status = 200, description = "cancelled; its link stops working", body = Invitation),
        (status = 400, description = answers(&[], &[PlatformCode::InvalidPath]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = owners_only(), body = ErrorBody),
        (status = 404, description = answers(&[TeamCode::InvitationNotFound], &[]), body = ErrorBody)))]
async fn cancel_invitation(state: Data, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let me = caller.person()?;
    let (id, now) = (*id, state.rules.clock.now());
    let cancelled = state.db.transaction(|c| Box::pin(async move { inviting::cancel(c, me, id, now).await })).await?;
    Ok(HttpResponse::Ok().json(cancelled))
}

/// Public: the gateway forwards it without a token (under its per-address rate limit), so it
/// takes no caller.
#[utoipa::path(get, path = "/api/invitations/{token}", tag = "invitations", params(("token" = String, Path, description = "the token from the invitation's link")),
    security(()),
    responses((status = 200, description = "who invited, to which address, for which role, until when, and the terms version to accept", body = Preview),
        (status = 404, description = answers(&[TeamCode::InvitationNotFound], &[]), body = ErrorBody),
        (status = 410, description = answers(&[TeamCode::InvitationExpired], &[]), body = ErrorBody)))]
async fn preview_invitation(state: Data, token: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.db.conn().await?;
    Ok(HttpResponse::Ok().json(inviting::preview(&mut conn, &state.rules, &token).await?))
}

#[utoipa::path(post, path = "/api/invitations/{token}/accept", tag = "invitations", params(("token" = String, Path, description = "the token from the invitation's link")),
    request_body = Acceptance,
    responses((status = 200, description = "joined: a member of the owner's team from joined_at on (TeamMemberJoined announced once)", body = Membership),
        (status = 400, description = answers(&[TeamCode::TermsNotAccepted], &[PlatformCode::InvalidBody]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = answers(&[TeamCode::EmailMismatch], &[]), body = ErrorBody),
        (status = 404, description = answers(&[TeamCode::InvitationNotFound], &[]), body = ErrorBody),
        (status = 409, description = answers(&[TeamCode::AlreadyInTeam, TeamCode::OwnerHasMembers, TeamCode::CannotJoinOwnTeam], &[]), body = ErrorBody),
        (status = 410, description = answers(&[TeamCode::InvitationExpired], &[]), body = ErrorBody),
        (status = 415, description = answers(&[], &[PlatformCode::UnsupportedMediaType]), body = ErrorBody)))]
async fn accept_invitation(
    state: Data,
    caller: Caller,
    token: web::Path<String>,
    body: web::Json<Acceptance>,
) -> Result<HttpResponse, ApiError> {
    let me = caller.person()?;
    let (token, acceptance) = (token.into_inner(), body.into_inner());
    let membership = state
        .db
        .transaction(|c| {
            let (rules, email, token, acceptance) =
                (Arc::clone(&state.rules), caller.email.clone(), token.clone(), acceptance.clone());
            Box::pin(async move { inviting::accept(c, &rules, me, email.as_ref(), &token, &acceptance).await })
        })
        .await?;
    Ok(HttpResponse::Ok().json(membership))
}

#[utoipa::path(get, path = "/api/team", tag = "team",
    responses((status = 200, description = "the caller's team: each member's role, join time, account status, Hopsworks account and usage this month", body = Team),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = owners_only(), body = ErrorBody)))]
async fn get_team(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let me = caller.person()?;
    let mut conn = state.db.conn().await?;
    Ok(HttpResponse::Ok().json(members::team(&mut conn, me, state.rules.clock.now()).await?))
}

#[utoipa::path(get, path = "/api/team/membership", tag = "team",
    responses((status = 200, description = "the team the caller is a member of", body = MyMembership),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 404, description = answers(&[TeamCode::NotAMember], &[]), body = ErrorBody)))]
async fn get_membership(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let me = caller.person()?;
    let mut conn = state.db.conn().await?;
    Ok(HttpResponse::Ok().json(members::membership(&mut conn, me).await?))
}

#[utoipa::path(delete, path = "/api/team/members/{user_id}", tag = "team", params(("user_id" = UserId, Path, description = "the member's user id")),
    responses((status = 200, description = "removed (TeamMemberRemoved announced once, reason removed)", body = Membership),
        (status = 400, description = answers(&[], &[PlatformCode::InvalidPath]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = owners_only(), body = ErrorBody),
        (status = 404, description = answers(&[TeamCode::MemberNotFound], &[]), body = ErrorBody)))]
async fn remove_member(state: Data, caller: Caller, member: web::Path<UserId>) -> Result<HttpResponse, ApiError> {
    let me = caller.person()?;
    let (member, now) = (*member, state.rules.clock.now());
    let ended = state.db.transaction(|c| Box::pin(async move { members::remove(c, me, member, now).await })).await?;
    Ok(HttpResponse::Ok().json(ended))
}

#[utoipa::path(post, path = "/api/team/leave", tag = "team",
    responses((status = 200, description = "left (TeamMemberRemoved announced once, reason left)", body = Membership),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 404, description = answers(&[TeamCode::NotAMember], &[]), body = ErrorBody)))]
async fn leave_team(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let (me, now) = (caller.person()?, state.rules.clock.now());
    let ended = state.db.transaction(|c| Box::pin(async move { members::leave(c, me, now).await })).await?;
    Ok(HttpResponse::Ok().json(ended))
}

/// For identity, which refuses to delete an owner who has members: 401 without caller headers,
/// 403 for anyone but identity signing as itself. The id is read after the caller is known.
async fn owner_members(state: Data, caller: Caller, raw: web::Path<String>) -> Result<HttpResponse, ApiError> {
    if !caller.is_service(Service::Identity) {
        return Err(TeamCode::IdentityOnly.error());
    }
    let owner: UserId =
        raw.parse().map_err(|_| PlatformCode::InvalidPath.with_message("the user id must be a UUID"))?;
    let mut conn = state.db.conn().await?;
    Ok(HttpResponse::Ok().json(members::of_owner(&mut conn, owner.as_owner()).await?))
}

/// 401 on every route for people.
fn not_signed_in() -> String {
    answers(&[], &[PlatformCode::Unauthenticated])
}

/// 403 on the owner routes.
fn owners_only() -> String {
    answers(&[TeamCode::OwnerOnly], &[])
}

/// team's catalogue in the document, the codes of routes outside it included.
const CATALOGUE: hopsbridge_platform::http::CatalogueSchema<TeamCode> = hopsbridge_platform::http::CatalogueSchema::new(
    "TeamErrorCode",
    "The codes team answers with, besides the platform's.",
);

/// team's part of the public API's OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(invite_member, list_invitations, resend_invitation, cancel_invitation, preview_invitation, accept_invitation,
        get_team, get_membership, remove_member, leave_team),
    components(schemas(Invite, Issued, Invitation, Preview, Acceptance, Membership, Team, MyMembership, ErrorBody)),
    modifiers(&CATALOGUE),
    tags((name = "team", description = "an owner's team: invitations and members"),
        (name = "invitations", description = "an invitation as its link's holder sees and accepts it"))
)]
pub struct ApiDoc;
