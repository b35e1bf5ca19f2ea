//! People are keyed by the issuer and the subject of their token together: the same subject
//! from another Auth0 tenant is another person, and never opens the first one's account.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{ISSUER, person, start};
use hopsbridge_platform::caller::Caller;
use hopsbridge_sandbox::auth0::TestUser;
use reqwest::Method;
use serde_json::Value;

const OTHER: &str = "https://other-tenant.example/";

fn of(issuer: &str, subject: &str, email: &str) -> Caller {
    Caller { issuer: Some(issuer.into()), ..person(subject, Some(email)) }
}

async fn resolve(identity: &common::Identity, caller: &Caller) -> (u16, Value) {
    let (status, body) = identity.call(Method::POST, "/internal/callers/resolve", Some(caller), None).await;
    (status.as_u16(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_subject_from_another_issuer_is_another_person() {
    let identity = start().await;
    let ada = identity.sign_in("auth0|ada", "ada@example.com").await;
    let (status, first) = resolve(&identity, &ada).await;
    assert_eq!((status, first["auth_issuer"].as_str()), (200, Some(ISSUER)), "{first}");

    // Another tenant's auth0|ada, with the address the first one uses: refused, nothing made.
    let (status, body) = resolve(&identity, &of(OTHER, "auth0|ada", "ada@example.com")).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("email_in_use")), "{body}");
    assert_eq!(identity.users().await, 1);
    // With an address of its own: a person of its own, never the first one.
    let (status, other) = resolve(&identity, &of(OTHER, "auth0|ada", "ada@other.example")).await;
    assert_eq!(status, 200, "{other}");
    assert_ne!(other["id"], first["id"], "another tenant's auth0|ada is not ada");
    assert_ne!(other["account_owner_id"], first["account_owner_id"], "nor billed to her account");
    assert_eq!(other["auth_issuer"].as_str(), Some(OTHER));
    assert_eq!(identity.events("UserCreated").await, 2, "each person announced once");
    // Each is found again by their own pair.
    assert_eq!(resolve(&identity, &ada).await.1["id"], first["id"]);
    assert_eq!(resolve(&identity, &of(OTHER, "auth0|ada", "ada@other.example")).await.1["id"], other["id"]);

    // A caller the gateway named no issuer for is refused.
    let (status, body) = resolve(&identity, &Caller { issuer: None, ..ada.clone() }).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_subject")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_creates_people_of_the_configured_tenant() {
    let identity = start().await;
    let grace = TestUser::database("grace", "grace@example.com", "Grace");
    let client = reqwest::Client::new();
    assert_eq!(identity.webhook(hopsbridge_testkit::WEBHOOK_SECRET).fire(&client, &grace).await.unwrap(), 200);
    let (status, mine) = resolve(&identity, &of(ISSUER, "auth0|grace", "grace@example.com")).await;
    assert_eq!((status, mine["name"].as_str()), (200, Some("Grace")), "the tenant's grace is the webhook's: {mine}");
    let (status, body) = resolve(&identity, &of(OTHER, "auth0|grace", "grace@example.com")).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("email_in_use")), "another tenant's grace: {body}");
    assert_eq!(identity.users().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_from_before_issuers_were_kept_is_bound_to_the_first_issuer_that_names_it() {
    let identity = start().await;
    identity
        .sql(&format!(
            "INSERT INTO users (id, auth_issuer, auth_subject, email, name) \
             VALUES ('{}', '', 'auth0|old', 'old@example.com', 'Old')",
            uuid::Uuid::now_v7()
        ))
        .await;
    let (status, old) = resolve(&identity, &of(ISSUER, "auth0|old", "old@example.com")).await;
    assert_eq!((status, old["name"].as_str(), old["auth_issuer"].as_str()), (200, Some("Old"), Some(ISSUER)));
    assert_eq!(identity.events("UserCreated").await, 0, "adopted, not created");
    let (status, other) = resolve(&identity, &of(OTHER, "auth0|old", "old@other.example")).await;
    assert_eq!(status, 200);
    assert_ne!(other["id"], old["id"], "bound once: another tenant's auth0|old is another person");
}
