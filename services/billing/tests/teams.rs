//! Joining a team cancels the member's own subscription once and refuses them billing; leaving
//! opens one new subscription; duplicates, reordering and Stripe failing in between change
//! nothing more, against the Stripe sandbox and the real consumers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use hopsbridge_domain::membership::{self, Change};
use hopsbridge_domain::{MembershipId, OwnerId};
use hopsbridge_platform::caller::Role;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// Publishes `change` about `member` as the team service would and waits until billing has
/// handled it; answers the event's id.
async fn publish(billing: &Billing, member: Uuid, change: Change) -> String {
    let id = billing.bus.publish_membership(member.into(), change).await;
    assert!(billing.db.handled("billing", &id, Duration::from_secs(30)).await, "billing handled {change:?}");
    id
}

/// The subscriptions of `member`'s customer in the sandbox, newest first.
fn subscriptions(billing: &Billing, customer: &str) -> Vec<Value> {
    billing.sim.subscriptions().into_iter().filter(|s| s["customer"] == customer).collect()
}

/// How many times Stripe cancelled a subscription of `customer`.
fn cancellations(billing: &Billing, customer: &str) -> usize {
    billing
        .sim
        .events()
        .iter()
        .filter(|e| e["type"] == "customer.subscription.deleted" && e["data"]["object"]["customer"] == customer)
        .count()
}

/// The statuses of the three billing routes for `member`, signed as an owner by the gateway.
async fn routes(billing: &Billing, member: Uuid) -> Vec<(StatusCode, Option<String>)> {
    let caller = caller(member, &[Role::User, Role::Owner]);
    let mut answers = Vec::new();
    for (method, path) in [
        (Method::GET, "/api/billing"),
        (Method::POST, "/api/billing/payment-method"),
        (Method::POST, "/api/billing/portal"),
    ] {
        let (status, body) = billing.call(method, path, Some(&caller)).await;
        answers.push((status, body["code"].as_str().map(str::to_owned)));
    }
    answers
}

fn refused() -> Vec<(StatusCode, Option<String>)> {
    vec![(StatusCode::FORBIDDEN, Some("owner_only".to_owned())); 3]
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_cancels_the_own_subscription_once_and_leaving_opens_one_new_one() {
    let billing = start().await;
    catalog_ready(&billing.sim).await;
    let (member, opened) = billing.new_owner().await;
    let customer = opened.stripe_customer_id.clone().unwrap();
    let own = opened.stripe_subscription_id.clone().unwrap();
    assert!(routes(&billing, member).await.iter().all(|(s, _)| s.is_success()), "an owner sees billing");

    let (ada, first) = (OwnerId::from_uuid(Uuid::now_v7()), MembershipId::new());
    let joined = Change::Joined { id: first, owner: ada, at: now() };
    // Stripe fails the first cancellation: the event comes back and cancels once.
    billing.sim.fail_next(1, 503);
    publish(&billing, member, joined).await;
    let cancelled = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        account(&billing.db, member).await.unwrap().subscription_status.as_deref() == Some("canceled")
    })
    .await;
    assert!(cancelled, "the member's own subscription is cancelled");
    let subs = subscriptions(&billing, &customer);
    assert_eq!(
        (subs.len(), subs[0]["id"].as_str(), subs[0]["status"].as_str()),
        (1, Some(own.as_str()), Some("canceled"))
    );
    assert_eq!(cancellations(&billing, &customer), 1);
    // Refused from billing's own record, though the gateway still says owner; nothing changes.
    assert_eq!(routes(&billing, member).await, refused());
    assert_eq!(subscriptions(&billing, &customer).len(), 1);

    // The same join again: nothing more.
    publish(&billing, member, joined).await;
    assert_eq!((subscriptions(&billing, &customer).len(), cancellations(&billing, &customer)), (1, 1));

    let removed = Change::Removed { id: first, owner: ada, at: now() };
    let removal = publish(&billing, member, removed).await;
    let subs = subscriptions(&billing, &customer);
    assert_eq!(subs.len(), 2, "one new subscription");
    let new = subs.iter().find(|s| s["status"] != "canceled").unwrap();
    assert_eq!(new["metadata"]["hopsbridge_user_id"], member.to_string());
    assert_eq!(new["items"]["data"].as_array().unwrap().len(), 5, "the metered prices");
    let created = billing
        .sim
        .events()
        .into_iter()
        .find(|e| e["type"] == "customer.subscription.created" && e["data"]["object"]["id"] == new["id"])
        .unwrap();
    assert_eq!(created["request"]["idempotency_key"], format!("hb-subscription-{removal}"));
    let row = account(&billing.db, member).await.unwrap();
    assert_eq!(row.stripe_subscription_id.as_deref(), new["id"].as_str());
    assert!(routes(&billing, member).await.iter().all(|(s, _)| s.is_success()), "an owner again");

    // A duplicate removal and the join delivered late again: nothing more.
    publish(&billing, member, removed).await;
    publish(&billing, member, joined).await;
    assert_eq!((subscriptions(&billing, &customer).len(), cancellations(&billing, &customer)), (2, 1));
    assert_eq!(account(&billing.db, member).await.unwrap(), row);
    assert!(routes(&billing, member).await.iter().all(|(s, _)| s.is_success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_refused_billing_from_the_join_on_whatever_the_gateway_says() {
    let billing = start().await;
    catalog_ready(&billing.sim).await;
    let (member, opened) = billing.new_owner().await;
    let joined = Change::Joined { id: MembershipId::new(), owner: OwnerId::from_uuid(Uuid::now_v7()), at: now() };
    publish(&billing, member, joined).await;
    let (before, stripe_before) = (account(&billing.db, member).await.unwrap(), billing.sim.events().len());
    assert_eq!(before.stripe_customer_id, opened.stripe_customer_id);
    assert_eq!(routes(&billing, member).await, refused());
    // As the gateway says once it knows: a member.
    let (status, body) =
        billing.call(Method::GET, "/api/billing", Some(&caller(member, &[Role::User, Role::Member]))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("owner_only")));
    // Refused before anything was asked of Stripe or written here.
    assert_eq!(billing.sim.events().len(), stripe_before);
    assert_eq!(account(&billing.db, member).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_of_the_membership_rule_leaves_stripe_as_the_rule_says() {
    let billing = start().await;
    catalog_ready(&billing.sim).await;
    for case in membership::cases() {
        let (member, opened) = billing.new_owner().await;
        let customer = opened.stripe_customer_id.clone().unwrap();
        for change in &case.changes {
            publish(&billing, member, *change).await;
        }
        let kept = case.changes.iter().fold(None, |kept, change| membership::apply(kept, *change));
        let is_member = membership::owner_at(kept, now()).is_some();
        let live: Vec<Value> =
            subscriptions(&billing, &customer).into_iter().filter(|s| s["status"] != "canceled").collect();
        let row = account(&billing.db, member).await.unwrap();
        if is_member {
            assert!(live.is_empty(), "{}: a member has no subscription of their own", case.name);
            assert_eq!(row.subscription_status.as_deref(), Some("canceled"), "{}", case.name);
            assert_eq!(routes(&billing, member).await, refused(), "{}", case.name);
        } else {
            assert_eq!(live.len(), 1, "{}: an owner has one subscription", case.name);
            assert_eq!(row.stripe_subscription_id.as_deref(), live[0]["id"].as_str(), "{}", case.name);
            assert!(routes(&billing, member).await.iter().all(|(s, _)| s.is_success()), "{}", case.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_reports_the_own_usage_so_far_and_invoices_it_as_the_own_subscription_ends() {
    let billing = start().await;
    catalog_ready(&billing.sim).await;
    let (member, opened) = billing.new_owner().await;
    let customer = opened.stripe_customer_id.clone().unwrap();
    let own = opened.stripe_subscription_id.clone().unwrap();
    // Half an hour of two cores in a window that has ended, billed to the person themselves.
    let now_secs = chrono::Utc::now().timestamp();
    let window = now_secs - now_secs.rem_euclid(900) - 900;
    let sample = usage(member, member, window, 900, (2, 1, 0));
    publish_usage(&billing.bus, &[(Uuid::now_v7(), sample.clone())]).await;
    let sql = format!("ledger_entries WHERE sample_id = '{}'", sample.sample_id);
    assert!(
        hopsbridge_testkit::eventually(Duration::from_secs(30), || async { count(&billing.db, &sql).await == 1 }).await
    );

    let joined = Change::Joined { id: MembershipId::new(), owner: OwnerId::from_uuid(Uuid::now_v7()), at: now() };
    publish(&billing, member, joined).await;
    let cancelled = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        account(&billing.db, member).await.unwrap().subscription_status.as_deref() == Some("canceled")
    })
    .await;
    assert!(cancelled, "the member's own subscription is cancelled");
    // Their usage was reported before the subscription ended: 2 cores for 900 s is 0.5 core-hours.
    let cpu: Vec<rust_decimal::Decimal> = billing
        .sim
        .meter_events()
        .into_iter()
        .filter(|e| e["payload"]["stripe_customer_id"] == customer.as_str())
        .filter(|e| e["event_name"].as_str().is_some_and(|n| n.contains("cpu")))
        .map(|e| e["payload"]["value"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(cpu, [rust_decimal::Decimal::new(5, 1)], "the own usage reported once");
    // And the cancellation asked Stripe for the final invoice of the open period.
    let finals: Vec<Value> = billing
        .sim
        .invoices()
        .into_iter()
        .filter(|i| i["parent"]["subscription_details"]["subscription"] == own.as_str())
        .collect();
    assert_eq!(finals.len(), 1, "a final invoice of the own subscription: {finals:?}");
    assert_eq!(cancellations(&billing, &customer), 1);

    // The same join again reports and cancels nothing more.
    let reported = || {
        billing.sim.meter_events().iter().filter(|e| e["payload"]["stripe_customer_id"] == customer.as_str()).count()
    };
    let before = reported();
    publish(&billing, member, joined).await;
    assert_eq!((reported(), cancellations(&billing, &customer)), (before, 1));
}
