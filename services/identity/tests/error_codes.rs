//! identity's error catalogue is whole: every code is answered by some request with exactly its
//! status, and the OpenAPI document names every code, each under the status it is answered with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{Identity, person, start};
use hopsbridge_contracts::Service;
use hopsbridge_identity::error::IdentityCode;
use hopsbridge_identity::routes::{ApiDoc, WEBHOOK_SECRET_HEADER};
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::http::{ErrorCode, PlatformCode};
use hopsbridge_testkit::WEBHOOK_SECRET;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};
use utoipa::OpenApi as _;

/// The codes answered only by routes the public document leaves out: the Auth0 webhook and
/// the gateway's caller resolution (whose refusals the gateway relays on a person's first call).
const OUTSIDE_THE_PUBLIC_ROUTES: [&str; 7] = [
    "email_in_use",
    "email_required",
    "gateway_only",
    "invalid_email",
    "invalid_subject",
    "invalid_user_id",
    "invalid_webhook_secret",
];

#[test]
fn the_openapi_document_names_every_code_under_the_status_it_is_answered_with() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let text = doc.to_string();
    for code in IdentityCode::ALL {
        assert!(text.contains(code.code()), "{} is not in the OpenAPI document", code.code());
    }
    let known: HashSet<(&str, u16)> = IdentityCode::ALL
        .iter()
        .map(|c| (c.code(), c.status().as_u16()))
        .chain(PlatformCode::ALL.iter().map(|c| (c.code(), c.status().as_u16())))
        .collect();
    let mut named = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let status: u16 = status.parse().unwrap();
                if status < 400 {
                    continue;
                }
                let description = response["description"].as_str().unwrap();
                for answer in description.split("; ") {
                    let (code, _) =
                        answer.split_once(": ").unwrap_or_else(|| panic!("{method} {path} {status}: {answer}"));
                    assert!(known.contains(&(code, status)), "{method} {path} documents {code} under {status}");
                    named.insert(code);
                }
            }
        }
    }
    let unnamed: BTreeSet<&str> = IdentityCode::ALL.iter().map(|c| c.code()).filter(|c| !named.contains(c)).collect();
    assert_eq!(unnamed, BTreeSet::from(OUTSIDE_THE_PUBLIC_ROUTES), "codes no public operation names");
}

/// The codes seen so far, each checked against its status.
#[derive(Default)]
struct Seen(HashSet<IdentityCode>);

impl Seen {
    fn answered(&mut self, code: IdentityCode, (status, body): (StatusCode, Value)) {
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (code.status().as_u16(), Some(code.code())),
            "{code:?}: {body}"
        );
        self.0.insert(code);
    }
}

impl Identity {
    async fn post_registration(&self, secret: &str, body: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/webhooks/auth0/post-registration", self.base))
            .header(WEBHOOK_SECRET_HEADER, secret)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn resolve(&self, subject: &str, email: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::POST, "/internal/callers/resolve", Some(&person(subject, email)), None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_code_of_the_catalogue_is_answered_with_its_status() {
    let identity = start().await;
    let mut seen = Seen::default();

    let valid = json!({"user_id": "auth0|ada", "email": "ada@example.com"}).to_string();
    seen.answered(
        IdentityCode::InvalidWebhookSecret,
        identity.post_registration("not-the-secret-at-all", &valid).await,
    );
    let body = json!({"user_id": "ada", "email": "ada@example.com"}).to_string();
    seen.answered(IdentityCode::InvalidUserId, identity.post_registration(WEBHOOK_SECRET, &body).await);
    let body = json!({"user_id": "auth0|ada", "email": "ada"}).to_string();
    seen.answered(IdentityCode::InvalidEmail, identity.post_registration(WEBHOOK_SECRET, &body).await);
    let body = json!({"user_id": "auth0|ada", "email": "ada@example.com", "name": "a\u{0007}b"}).to_string();
    seen.answered(IdentityCode::InvalidName, identity.post_registration(WEBHOOK_SECRET, &body).await);

    seen.answered(IdentityCode::InvalidSubject, identity.resolve("ada", Some("ada@example.com")).await);
    // A service's own key signs only that service, and the caller routes are the gateway's.
    for service in [Service::Metering, Service::Team, Service::Billing] {
        for path in ["/internal/callers/resolve", "/internal/callers/signed-in"] {
            let answer = identity.call(Method::POST, path, Some(&Caller::service(service)), None).await;
            seen.answered(IdentityCode::GatewayOnly, answer);
        }
    }
    seen.answered(IdentityCode::EmailRequired, identity.resolve("google-oauth2|1034", None).await);
    let admin = identity.sign_in("auth0|admin", "admin@example.com").await;
    let ada = identity.sign_in("auth0|ada", "ada@example.com").await;
    let grace = identity.sign_in("auth0|grace", "grace@example.com").await;
    seen.answered(IdentityCode::EmailInUse, identity.resolve("google-oauth2|ada", Some("Ada@example.com")).await);

    seen.answered(IdentityCode::AdminOnly, identity.call(Method::GET, "/api/admin/users", Some(&admin), None).await);
    identity.sql(&format!("UPDATE users SET is_admin = true WHERE id = '{}'", admin.user_id.unwrap())).await;
    let nobody = format!("/api/admin/users/{}", uuid::Uuid::now_v7());
    seen.answered(IdentityCode::UserNotFound, identity.call(Method::GET, &nobody, Some(&admin), None).await);
    let own = format!("/api/admin/users/{}", admin.user_id.unwrap());
    let suspend_self = identity.call(Method::POST, &format!("{own}/suspend"), Some(&admin), None).await;
    seen.answered(IdentityCode::CannotSuspendSelf, suspend_self);
    let revoke_self = identity.call(Method::DELETE, &format!("{own}/admin"), Some(&admin), None).await;
    seen.answered(IdentityCode::CannotRevokeSelf, revoke_self);

    let ada_path = format!("/api/admin/users/{}", ada.user_id.unwrap());
    assert_eq!(identity.call(Method::POST, &format!("{ada_path}/suspend"), Some(&admin), None).await.0, 200);
    seen.answered(IdentityCode::AccountSuspended, identity.call(Method::GET, "/api/me", Some(&ada), None).await);

    let (o, m) = (admin.user_id.unwrap(), ada.user_id.unwrap());
    identity.member_of(m, o).await;
    identity.team.set_members(o, 1);
    seen.answered(IdentityCode::TeamNotEmpty, identity.call(Method::DELETE, "/api/me", Some(&admin), None).await);
    assert_eq!(identity.call(Method::POST, &format!("{ada_path}/reactivate"), Some(&admin), None).await.0, 200);
    seen.answered(IdentityCode::MemberAccount, identity.call(Method::DELETE, "/api/me", Some(&ada), None).await);

    identity.team.set_failing(true);
    seen.answered(IdentityCode::TeamUnavailable, identity.call(Method::DELETE, "/api/me", Some(&grace), None).await);
    identity.team.set_failing(false);
    assert_eq!(identity.call(Method::DELETE, "/api/me", Some(&grace), None).await.0, 200);
    seen.answered(IdentityCode::AccountDeleted, identity.call(Method::GET, "/api/me", Some(&grace), None).await);
    let grace_path = format!("/api/admin/users/{}", grace.user_id.unwrap());
    let suspend_deleted = identity.call(Method::POST, &format!("{grace_path}/suspend"), Some(&admin), None).await;
    seen.answered(IdentityCode::AccountDeletedConflict, suspend_deleted);

    assert_eq!(seen.0, IdentityCode::ALL.iter().copied().collect::<HashSet<_>>(), "a code without a request here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_codes_identity_answers_itself_keep_their_status() {
    let identity = start().await;
    let answered = |code: PlatformCode, (status, body): (StatusCode, Value)| {
        assert_eq!((status.as_u16(), body["code"].as_str()), (code.status().as_u16(), Some(code.code())), "{body}");
    };
    answered(PlatformCode::InvalidBody, identity.post_registration(WEBHOOK_SECRET, "{").await);
    let unresolved = person("auth0|ada", Some("ada@example.com"));
    answered(PlatformCode::Unauthenticated, identity.call(Method::GET, "/api/me", Some(&unresolved), None).await);
    let admin = identity.sign_in("auth0|admin", "admin@example.com").await;
    identity.sql(&format!("UPDATE users SET is_admin = true WHERE id = '{}'", admin.user_id.unwrap())).await;
    answered(
        PlatformCode::InvalidQuery,
        identity.call(Method::GET, "/api/admin/users?limit=0", Some(&admin), None).await,
    );
}
