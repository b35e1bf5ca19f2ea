//! billing's integrity check `stripe_subscriptions` (decision 0061) against the Stripe sandbox:
//! nothing found while Stripe and the accounts agree; each disagreement made in Stripe or in
//! billing's tables found under its key, whatever the page size; a run while Stripe answers 503
//! fails and resolves nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{Billing, caller, catalog_ready, sql, start, stripe_get, stripe_send};
use hopsbridge_billing::integrity::{STRIPE_SUBSCRIPTIONS, stripe_subscriptions};
use hopsbridge_billing::stripe::Stripe;
use hopsbridge_platform::caller::Role;
use hopsbridge_platform::db::Database;
use hopsbridge_testkit::STRIPE_SECRET_KEY;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;
use uuid::Uuid;

/// Runs every check of billing now, as an admin (202, then polled until done); answers the run
/// of `stripe_subscriptions`.
async fn run(b: &Billing) -> Value {
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    let (status, started) = b.call(Method::POST, "/api/admin/integrity/billing/run", Some(&admin)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let path = format!("/api/admin/integrity/billing/runs/{}", started["id"].as_str().unwrap());
    let mut body = started;
    for _ in 0..600 {
        let (status, polled) = b.call(Method::GET, &path, Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{polled}");
        body = polled;
        if body["status"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(body["status"], "done", "{body}");
    body["runs"].as_array().unwrap().iter().find(|r| r["check"] == STRIPE_SUBSCRIPTIONS).cloned().unwrap()
}

fn keys(findings: &Value) -> BTreeSet<String> {
    findings.as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap().to_owned()).collect()
}

/// A request straight to the sandbox's Stripe API, as someone in Stripe's dashboard would act.
async fn stripe(b: &Billing, method: Method, path: &str, form: &[(&str, &str)]) -> Value {
    let (status, body) = stripe_send(&b.sim, method, path, form).await;
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_subscriptions_finds_each_disagreement_on_every_page_and_a_failed_run_resolves_nothing() {
    let b = start().await;
    catalog_ready(&b.sim).await;
    let mut owners = Vec::new();
    for _ in 0..4 {
        owners.push(b.new_owner().await);
    }
    let [(a, acc_a), (second, acc_second), (c, acc_c), (d, acc_d)] = <[_; 4]>::try_from(owners).unwrap();
    let sub = |row: &common::AccountRow| row.stripe_subscription_id.clone().unwrap();
    let customer = |row: &common::AccountRow| row.stripe_customer_id.clone().unwrap();

    // Healthy: nothing, through the runner and with pages of one subscription.
    let healthy = run(&b).await;
    assert_eq!(healthy["outcome"], "ok", "{healthy}");
    assert_eq!(healthy["findings"], serde_json::json!([]), "{healthy}");
    let mut config = b.config.database.clone();
    config.max_connections = 1;
    let db = Database::new(&config, "billing").unwrap();
    let client = Stripe::new(&b.sim.url(), STRIPE_SECRET_KEY.to_owned().into(), 20).unwrap();
    assert_eq!(stripe_subscriptions(&db, &client, 1).await.unwrap(), Vec::new());

    // Broken in Stripe, behind billing's back (no webhook reaches it).
    stripe(&b, Method::DELETE, &format!("subscriptions/{}", sub(&acc_a)), &[]).await;
    let price = stripe_get(&b.sim, "prices?lookup_keys[0]=hopsbridge_gpu_hour_v1").await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let extra =
        stripe(&b, Method::POST, "subscriptions", &[("customer", &customer(&acc_second)), ("items[0][price]", &price)])
            .await;
    let stranger = stripe(&b, Method::POST, "customers", &[("email", "nobody@example.com")]).await;
    let orphan = stripe(
        &b,
        Method::POST,
        "subscriptions",
        &[("customer", stranger["id"].as_str().unwrap()), ("items[0][price]", &price)],
    )
    .await;
    // Broken in billing: c records a subscription Stripe never had, d counts a live one ended.
    sql(&b.db, &format!("UPDATE accounts SET stripe_subscription_id = 'sub_never' WHERE user_id = '{c}'")).await;
    sql(&b.db, &format!("UPDATE accounts SET subscription_status = 'canceled' WHERE user_id = '{d}'")).await;

    let expected: BTreeSet<String> = [
        format!("status:{}", sub(&acc_a)),
        format!("duplicate:{}", customer(&acc_second)),
        format!("orphan:{}", orphan["id"].as_str().unwrap()),
        "missing:sub_never".to_owned(),
        format!("unrecorded:{}", sub(&acc_c)),
        format!("status:{}", sub(&acc_d)),
    ]
    .into_iter()
    .collect();
    for page in [1, 2, 100] {
        let found = stripe_subscriptions(&db, &client, page).await.unwrap();
        let got: BTreeSet<String> = found.iter().map(|f| f.key.clone()).collect();
        assert_eq!(got, expected, "pages of {page}: {found:#?}");
    }
    let broken = run(&b).await;
    assert_eq!((broken["outcome"].as_str(), broken["opened"].as_u64()), (Some("ok"), Some(6)), "{broken}");
    assert_eq!(keys(&broken["findings"]), expected);
    let by_key = |key: &str| broken["findings"].as_array().unwrap().iter().find(|f| f["key"] == key).cloned().unwrap();
    let cancelled = by_key(&format!("status:{}", sub(&acc_a)));
    assert_eq!(cancelled["subject"], format!("subscription {}", sub(&acc_a)));
    let detail = cancelled["detail"].as_str().unwrap();
    assert!(detail.contains("canceled in Stripe and active in billing") && detail.contains(&a.to_string()), "{detail}");
    let duplicate = by_key(&format!("duplicate:{}", customer(&acc_second)));
    assert_eq!(duplicate["subject"], format!("person {second}"));
    let detail = duplicate["detail"].as_str().unwrap();
    assert!(
        detail.contains(extra["id"].as_str().unwrap()) && detail.contains(&format!("but {}", sub(&acc_second))),
        "{detail}"
    );
    assert!(by_key(&format!("status:{}", sub(&acc_d)))["detail"].as_str().unwrap().contains("cancel it in Stripe"));

    // Stripe down: the run fails and every finding stays open.
    b.sim.fail_next(1000, 503);
    let failed = run(&b).await;
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("503"), "{failed}");
    assert_eq!(failed["resolved"], 0, "{failed}");
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    let (status, open) = b.call(Method::GET, "/api/admin/integrity/billing?status=open&limit=200", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{open}");
    let open: BTreeSet<String> = open["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == STRIPE_SUBSCRIPTIONS)
        .map(|f| f["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(open, expected, "nothing resolved by a failed run");
}
