//! identity's projection of team memberships follows the one rule: every case of
//! `hopsbridge_domain::membership::cases()` is published, in its order, to the real consumers,
//! and the projection answers each expected owner at each expected time; `GET /api/me` answers
//! the owner the rule gives for now.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::start;
use hopsbridge_domain::UserId;
use hopsbridge_domain::membership::{self, Change};
use reqwest::Method;
use std::time::Duration;

/// Publishes `change` about `member` as the team service would, and waits until identity has
/// handled it, so the next change arrives after it.
async fn publish(identity: &common::Identity, member: UserId, change: Change) {
    let id = identity.bus.publish_membership(member, change).await;
    assert!(identity.db.handled("identity", &id, Duration::from_secs(15)).await, "identity handled {change:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_of_the_membership_rule_holds_through_the_real_handlers() {
    let identity = start().await;
    for (n, case) in membership::cases().into_iter().enumerate() {
        let caller = identity.sign_in(&format!("auth0|member{n}"), &format!("member{n}@example.com")).await;
        let member = caller.user_id.unwrap();
        for change in &case.changes {
            publish(&identity, member, *change).await;
        }
        let mut conn = identity.db.connect("identity").await;
        for (t, owner) in &case.expected {
            let at = chrono::DateTime::from_timestamp_micros(*t).unwrap();
            let answered = hopsbridge_identity::memberships::owner_at(&mut conn, member, at).await.unwrap();
            assert_eq!(answered, *owner, "{}: at {t}", case.name);
        }
        let kept = case.changes.iter().fold(None, |kept, change| membership::apply(kept, *change));
        let now = membership::owner_at(kept, chrono::Utc::now().timestamp_micros()).unwrap_or(member.as_owner());
        let (status, me) = identity.call(Method::GET, "/api/me", Some(&caller), None).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["account_owner_id"], now.to_string(), "{}: whose account now", case.name);
    }
}
