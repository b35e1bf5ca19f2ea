//! team's error catalogue is whole: every code is answered by a real request with exactly its
//! status, and the OpenAPI document names every code of a public route under that status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{TERMS, start};
use hopsbridge_contracts::Service;
use hopsbridge_domain::Email;
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::http::ErrorCode;
use hopsbridge_team::error::TeamCode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use utoipa::OpenApi as _;

/// `(status, code)` for every code an operation of the document names in an error response.
fn documented() -> BTreeSet<(u16, String)> {
    let doc = serde_json::to_value(hopsbridge_team::routes::ApiDoc::openapi()).unwrap();
    let mut named = BTreeSet::new();
    for operations in doc["paths"].as_object().unwrap().values() {
        for operation in operations.as_object().unwrap().values() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let status: u16 = status.parse().unwrap();
                let text = response["description"].as_str().unwrap();
                if status >= 400 {
                    named.extend(text.split("; ").map(|a| (status, a.split_once(": ").unwrap().0.to_owned())));
                }
            }
        }
    }
    named
}

#[test]
fn the_openapi_document_names_every_public_code_under_its_status() {
    let named = documented();
    for code in TeamCode::ALL {
        let pair = (code.status().as_u16(), code.code().to_owned());
        // The internal route identity calls is not in the public document.
        assert_eq!(named.contains(&pair), *code != TeamCode::IdentityOnly, "{pair:?}");
    }
}

fn check(seen: &mut Vec<TeamCode>, code: TeamCode, (status, body): (StatusCode, Value)) {
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (code.status().as_u16(), Some(code.code())),
        "{code:?}: {body}"
    );
    seen.push(code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_code_of_the_catalogue_is_answered_with_its_status() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let alan = team.person("Alan", "alan@example.com").await;
    let eve = team.person("Eve", "eve@example.com").await;
    let mut seen = Vec::new();
    let invite = |who: &Caller, email: &str, role: &str| {
        let body = json!({"email": email, "project_role": role});
        let (team, who) = (&team, who.clone());
        async move { team.call(Method::POST, "/api/team/invitations", Some(&who), Some(body)).await }
    };
    let accept = |who: &Caller, token: &str, body: Value| {
        let (team, who, path) = (&team, who.clone(), format!("/api/invitations/{token}/accept"));
        async move { team.call(Method::POST, &path, Some(&who), Some(body)).await }
    };
    let terms = json!({"accept_terms": true, "terms_version": TERMS});

    check(&mut seen, TeamCode::InvalidEmail, invite(&ada, "grace", "Data owner").await);
    check(&mut seen, TeamCode::InvalidProjectRole, invite(&ada, "grace@example.com", "data owner").await);
    check(&mut seen, TeamCode::CannotInviteSelf, invite(&ada, "ada@example.com", "Data owner").await);
    check(&mut seen, TeamCode::NotAMember, team.call(Method::GET, "/api/team/membership", Some(&grace), None).await);
    check(&mut seen, TeamCode::NotAMember, team.call(Method::POST, "/api/team/leave", Some(&grace), None).await);

    let to_grace = team.invite(&ada, "grace@example.com", "Data owner").await;
    check(
        &mut seen,
        TeamCode::TermsNotAccepted,
        accept(&grace, &to_grace.token, json!({"accept_terms": false, "terms_version": TERMS})).await,
    );
    check(&mut seen, TeamCode::EmailMismatch, accept(&alan, &to_grace.token, terms.clone()).await);
    check(&mut seen, TeamCode::InvitationNotFound, team.preview(&"x".repeat(43)).await);
    // Ada's address changed at Auth0 to the one she invited: she cannot join her own team.
    let to_ada2 = team.invite(&ada, "ada2@example.com", "Data owner").await;
    let ada2 = Caller { email: Some(Email::parse("ada2@example.com").unwrap()), ..ada.clone() };
    check(&mut seen, TeamCode::CannotJoinOwnTeam, accept(&ada2, &to_ada2.token, terms.clone()).await);

    // Grace has a member of her own, so she cannot join Ada's team yet.
    let to_alan = team.invite(&eve, "alan@example.com", "Data owner").await;
    team.join(&grace, &alan, "Data owner").await;
    check(&mut seen, TeamCode::OwnerHasMembers, accept(&grace, &to_grace.token, terms.clone()).await);
    check(&mut seen, TeamCode::OwnerOnly, team.call(Method::GET, "/api/team", Some(&alan), None).await);
    check(&mut seen, TeamCode::MemberOfAnotherTeam, invite(&ada, "alan@example.com", "Data owner").await);
    check(&mut seen, TeamCode::AlreadyMember, invite(&grace, "alan@example.com", "Data owner").await);
    check(&mut seen, TeamCode::AlreadyInTeam, accept(&alan, &to_alan.token, terms.clone()).await);
    let nobody = format!("/api/team/members/{}", uuid::Uuid::now_v7());
    check(&mut seen, TeamCode::MemberNotFound, team.call(Method::DELETE, &nobody, Some(&grace), None).await);
    let cancel = format!("/api/team/invitations/{}", uuid::Uuid::now_v7());
    check(&mut seen, TeamCode::InvitationNotFound, team.call(Method::DELETE, &cancel, Some(&ada), None).await);

    team.sql(&format!("UPDATE invitations SET expires_at = now() WHERE id = '{}'", to_grace.id)).await;
    check(&mut seen, TeamCode::InvitationExpired, team.preview(&to_grace.token).await);
    check(&mut seen, TeamCode::InvitationExpired, accept(&grace, &to_grace.token, terms.clone()).await);

    let internal = format!("/internal/owners/{}/members", ada.user_id.unwrap());
    let metering = Caller::service(Service::Metering);
    check(&mut seen, TeamCode::IdentityOnly, team.call(Method::GET, &internal, Some(&metering), None).await);

    let missing: Vec<_> = TeamCode::ALL.iter().filter(|c| !seen.contains(c)).collect();
    assert!(missing.is_empty(), "codes no request answered: {missing:?}");
}
