//! Suspension and reactivation: billing's restrictions and admins' suspensions of an owner reach
//! every member of their team; lifting one undoes only its author's (an admin's suspension
//! outranks billing's, a member's own suspension stays); a member joining a suspended owner is
//! suspended on joining; redelivered events announce nothing twice. A browser sign-in is
//! announced once per sign-in, a plain resolve never.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{Identity, start};
use hopsbridge_contracts::Event;
use hopsbridge_contracts::events::{AccountRestrictedV1, AccountRestrictionLiftedV1};
use hopsbridge_domain::membership::Change;
use hopsbridge_domain::{MembershipId, UserId};
use hopsbridge_platform::caller::Caller;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

async fn admin(identity: &Identity) -> Caller {
    let admin = identity.sign_in("auth0|admin", "admin@example.com").await;
    identity.sql(&format!("UPDATE users SET is_admin = true WHERE id = '{}'", admin.user_id.unwrap())).await;
    admin
}

async fn user(identity: &Identity, admin: &Caller, id: UserId) -> Value {
    let (status, body) = identity.call(Method::GET, &format!("/api/admin/users/{id}"), Some(admin), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The status and who suspended, of each of `ids`.
async fn states(identity: &Identity, admin: &Caller, ids: &[UserId]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for id in ids {
        let u = user(identity, admin, *id).await;
        out.push((u["status"].as_str().unwrap().to_owned(), u["suspended_by"].clone()));
    }
    out
}

fn active() -> (String, Value) {
    ("active".into(), Value::Null)
}

fn suspended(by: &str) -> (String, Value) {
    ("suspended".into(), json!(by))
}

async fn publish<E: Event>(identity: &Identity, event: &E, id: Option<String>) {
    let id = identity.bus.publish(event, id).await;
    assert!(identity.db.handled("identity", &id, Duration::from_secs(15)).await, "identity handled {}", E::TYPE);
}

async fn join(identity: &Identity, member: UserId, owner: UserId) {
    let change = Change::Joined {
        id: MembershipId::from_uuid(uuid::Uuid::now_v7()),
        owner: owner.as_owner(),
        at: chrono::Utc::now().timestamp_micros() - 1_000_000,
    };
    let id = identity.bus.publish_membership(member, change).await;
    assert!(identity.db.handled("identity", &id, Duration::from_secs(15)).await, "join handled");
}

async fn person(identity: &Identity, name: &str) -> UserId {
    identity.sign_in(&format!("auth0|{name}"), &format!("{name}@example.com")).await.user_id.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_suspends_an_owner_and_their_members_and_lifts_only_what_it_did() {
    let identity = start().await;
    let admin = admin(&identity).await;
    let (owner, member, own_suspended) =
        (person(&identity, "owner").await, person(&identity, "member").await, person(&identity, "own").await);
    identity.member_of(member, owner).await;
    identity.member_of(own_suspended, owner).await;
    // A member an admin suspended for their own reasons.
    let (status, body) = identity
        .call(
            Method::POST,
            &format!("/api/admin/users/{own_suspended}/suspend"),
            Some(&admin),
            Some(json!({"reason": "abuse"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(identity.events("UserSuspended").await, 1);

    let restricted = AccountRestrictedV1 { user_id: owner.to_string(), reason: "payment_failed".into() };
    publish(&identity, &restricted, None).await;
    assert_eq!(
        states(&identity, &admin, &[owner, member, own_suspended]).await,
        [suspended("billing"), suspended("owner"), suspended("admin")]
    );
    assert_eq!(user(&identity, &admin, owner).await["suspension_reason"], "billing:payment_failed");
    assert_eq!(user(&identity, &admin, member).await["suspension_reason"], "owner_suspended");
    assert_eq!(identity.events("UserSuspended").await, 3, "the owner's and the member's, once each");

    // Redelivered, and announced again under another id: nothing more.
    publish(&identity, &restricted, None).await;
    assert_eq!(identity.events("UserSuspended").await, 3);

    // Joining a suspended owner's team suspends the new member.
    let late = person(&identity, "late").await;
    join(&identity, late, owner).await;
    assert_eq!(states(&identity, &admin, &[late]).await, [suspended("owner")]);
    assert_eq!(identity.events("UserSuspended").await, 4);

    let lifted = AccountRestrictionLiftedV1 { user_id: owner.to_string() };
    publish(&identity, &lifted, None).await;
    assert_eq!(
        states(&identity, &admin, &[owner, member, own_suspended, late]).await,
        [active(), active(), suspended("admin"), active()],
        "the member's own suspension stays"
    );
    assert_eq!(identity.events("UserReactivated").await, 3);
    publish(&identity, &lifted, None).await;
    assert_eq!(identity.events("UserReactivated").await, 3, "a repeat lifts nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_suspension_cascades_and_outlasts_billings() {
    let identity = start().await;
    let admin = admin(&identity).await;
    let (owner, member, leaver) =
        (person(&identity, "owner").await, person(&identity, "member").await, person(&identity, "leaver").await);
    identity.member_of(member, owner).await;
    join(&identity, leaver, owner).await;

    let (status, body) =
        identity.call(Method::POST, &format!("/api/admin/users/{owner}/suspend"), Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        states(&identity, &admin, &[owner, member, leaver]).await,
        [suspended("admin"), suspended("owner"), suspended("owner")]
    );

    // A member who leaves the suspended owner's team is their own again.
    let kept = hopsbridge_identity::memberships::kept(&mut identity.db.connect("identity").await, leaver)
        .await
        .unwrap()
        .unwrap();
    let removal =
        Change::Removed { id: kept.id, owner: owner.as_owner(), at: chrono::Utc::now().timestamp_micros() - 1000 };
    let id = identity.bus.publish_membership(leaver, removal).await;
    assert!(identity.db.handled("identity", &id, Duration::from_secs(15)).await);
    assert_eq!(states(&identity, &admin, &[leaver]).await, [active()]);

    // Billing restricts and lifts: the admin's suspension stays, and so does the cascade.
    publish(&identity, &AccountRestrictedV1 { user_id: owner.to_string(), reason: "credits_exhausted".into() }, None)
        .await;
    publish(&identity, &AccountRestrictionLiftedV1 { user_id: owner.to_string() }, None).await;
    assert_eq!(states(&identity, &admin, &[owner, member]).await, [suspended("admin"), suspended("owner")]);

    let (status, body) =
        identity.call(Method::POST, &format!("/api/admin/users/{owner}/reactivate"), Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(states(&identity, &admin, &[owner, member]).await, [active(), active()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_suspension_of_an_account_billing_suspended_is_the_admins() {
    let identity = start().await;
    let admin = admin(&identity).await;
    let owner = person(&identity, "owner").await;
    publish(&identity, &AccountRestrictedV1 { user_id: owner.to_string(), reason: "spending_cap".into() }, None).await;
    let (status, _) =
        identity.call(Method::POST, &format!("/api/admin/users/{owner}/suspend"), Some(&admin), None).await;
    assert_eq!(status, 200);
    publish(&identity, &AccountRestrictionLiftedV1 { user_id: owner.to_string() }, None).await;
    assert_eq!(states(&identity, &admin, &[owner]).await, [suspended("admin")]);
    assert_eq!(identity.events("UserSuspended").await, 1, "one suspension, whoever holds it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_is_announced_once_and_a_plain_call_never() {
    let identity = start().await;
    let caller = common::person("auth0|ada", Some("ada@example.com"));
    for _ in 0..3 {
        let (status, body) = identity.call(Method::POST, "/internal/callers/resolve", Some(&caller), None).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(identity.events("UserSignedIn").await, 0);
    let (status, body) = identity.call(Method::POST, "/internal/callers/signed-in", Some(&caller), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(identity.events("UserSignedIn").await, 1);
    let (status, _) = identity.call(Method::POST, "/internal/callers/signed-in", Some(&caller), None).await;
    assert_eq!(status, 200);
    assert_eq!(identity.events("UserSignedIn").await, 2, "each sign-in");
    // A person signing in for the first time is created and announced.
    let new = common::person("auth0|grace", Some("grace@example.com"));
    let (status, _) = identity.call(Method::POST, "/internal/callers/signed-in", Some(&new), None).await;
    assert_eq!(status, 200);
    assert_eq!(identity.events("UserSignedIn").await, 3);
    assert_eq!(identity.events("UserCreated").await, 2);
}
