//! The routes any user's API key may call: the key's own profile (`GET /users/profile`) and a
//! project's members (`GET /project/{id}/projectMembers`, `DELETE
//! /project/{id}/projectMembers/{email}`).
//!
//! As Hopsworks' project request filter and members service judge them, in this order:
//! - a project id that is not a number is answered 404, an unknown project 404 with `errorCode`
//!   150004;
//! - a caller who is no member of the project is answered 403 with 160000 ("No valid role found
//!   for this user"), a member whose role the route does not take (an `Observer`) 403 with
//!   150068; both routes take a `Data owner` or a `Data scientist`;
//! - removing someone who is no member of the project is answered 404 with 150023
//!   (`TEAM_MEMBER_NOT_FOUND`); a `Data scientist` removing anyone but themselves 403 with
//!   150012; removing the project's creator 403 with 150013, whoever asks;
//! - emails are compared regardless of case, as Hopsworks' database collation does;
//! - a removal answers 200 with `{"successMessage": "Member removed from team."}`.

use super::{
    HopsworksError, Inner, Project, ROLE_DATA_OWNER, ROLE_DATA_SCIENTIST, Route, State, User, base_url, code, lock,
    project_not_found, serve, timestamp_millis, user_json,
};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

/// The roles the members routes take.
const MEMBER_ROLES: [&str; 2] = [ROLE_DATA_OWNER, ROLE_DATA_SCIENTIST];

/// `GET /users/profile`: the API key's own user.
pub(super) async fn profile(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    serve(&data, &req, &body, Some(Route::Profile), |inner, caller| {
        let state = lock(&inner.state);
        let user = caller.and_then(|id| state.user(id)).ok_or_else(HopsworksError::user_not_found)?;
        Ok(HttpResponse::Ok().json(user_json(&base_url(&req), &state, user)))
    })
    .await
}

/// `GET /project/{id}/projectMembers`: every member with their role.
pub(super) async fn list_members(
    req: HttpRequest,
    body: web::Bytes,
    data: web::Data<Inner>,
    path: web::Path<String>,
) -> HttpResponse {
    serve(&data, &req, &body, Some(Route::ListMembers), |inner, caller| {
        let state = lock(&inner.state);
        let allowed = allowed(&state, &path, caller)?;
        let members: Vec<Value> = state
            .memberships
            .iter()
            .filter(|m| m.project_id == allowed.project.id)
            .filter_map(|m| {
                let user = state.users.iter().find(|u| u.username == m.username)?;
                Some(json!({
                    "projectTeamPK": { "projectId": m.project_id, "teamMember": user.email },
                    "teamRole": m.role,
                    "timestamp": timestamp_millis(m.added),
                    "user": {
                        "username": user.username,
                        "email": user.email,
                        "firstname": user.given_name,
                        "lastname": user.surname,
                    },
                }))
            })
            .collect();
        Ok(HttpResponse::Ok().json(members))
    })
    .await
}

/// `DELETE /project/{id}/projectMembers/{email}`: takes a member out of the project.
pub(super) async fn remove_member(
    req: HttpRequest,
    body: web::Bytes,
    data: web::Data<Inner>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    serve(&data, &req, &body, Some(Route::RemoveMember), |inner, caller| {
        let (project, email) = (&path.0, &path.1);
        let mut state = lock(&inner.state);
        let (project_id, owner_id, caller_role, caller_email) = {
            let allowed = allowed(&state, project, caller)?;
            (allowed.project.id, allowed.project.owner_id, allowed.role, allowed.caller.email.clone())
        };
        let target = state
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .filter(|u| state.memberships.iter().any(|m| m.project_id == project_id && m.username == u.username))
            .map(|u| (u.id, u.username.clone()))
            .ok_or_else(|| {
                HopsworksError::new(
                    404,
                    code::TEAM_MEMBER_NOT_FOUND,
                    "The selected user is not a team member in this project.",
                )
            })?;
        if caller_role == ROLE_DATA_SCIENTIST && !caller_email.eq_ignore_ascii_case(email) {
            return Err(HopsworksError::new(
                403,
                code::MEMBER_REMOVAL_NOT_ALLOWED,
                "Your project role does not allow to remove other members from this project.",
            ));
        }
        if target.0 == owner_id {
            return Err(HopsworksError::new(
                403,
                code::PROJECT_OWNER_NOT_ALLOWED,
                "Removing the project owner is not allowed.",
            ));
        }
        state.memberships.retain(|m| !(m.project_id == project_id && m.username == target.1));
        Ok(HttpResponse::Ok().json(json!({ "successMessage": "Member removed from team." })))
    })
    .await
}

/// A caller the project filter let through: the project, the caller and their role in it.
struct Allowed<'a> {
    project: &'a Project,
    caller: &'a User,
    role: &'static str,
}

/// The project named by `raw` and the caller's role in it, judged as Hopsworks' project filter
/// judges a route that takes [`MEMBER_ROLES`].
fn allowed<'a>(state: &'a State, raw: &str, caller: Option<u64>) -> Result<Allowed<'a>, HopsworksError> {
    let id: u64 = raw.parse().map_err(|_| HopsworksError::unconvertible_param())?;
    let project = state.projects.iter().find(|p| p.id == id).ok_or_else(project_not_found)?;
    let caller = caller.and_then(|id| state.user(id)).ok_or_else(HopsworksError::user_not_found)?;
    let role = state
        .memberships
        .iter()
        .find(|m| m.project_id == id && m.username == caller.username)
        .map(|m| m.role.as_str())
        .ok_or_else(|| HopsworksError::new(403, code::NO_ROLE_FOUND, "No valid role found for this user"))?;
    let role = MEMBER_ROLES.into_iter().find(|r| *r == role).ok_or_else(|| {
        HopsworksError::new(
            403,
            code::PROJECT_ROLE_FORBIDDEN,
            "Your project role does not allow to perform this action.",
        )
    })?;
    Ok(Allowed { project, caller, role })
}
