//! The billing executable as a real process, configured only through its environment, against
//! the real Postgres and NATS and the Stripe sandbox: a new person's subscription, a card added
//! through Checkout, and PaymentMethodAddedV1 on NATS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use hopsbridge_contracts::events::PaymentMethodAddedV1;
use hopsbridge_platform::caller::{CallerSigner, Role};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, STRIPE_WEBHOOK_SECRET, ServiceProcess, TestBus, TestDb};
use std::time::Duration;
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_hopsbridge-billing");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_opens_an_account_and_announces_a_card_added_through_checkout() {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let sim = start_sim();
    let env = settings(&db, &bus, &sim)
        .set("database.migrate_on_start", "true")
        .set("checkout.success_url", "https://app.hopsbridge.test/billing?ok")
        .set("checkout.cancel_url", "https://app.hopsbridge.test/billing?no")
        .env();
    let mut process = ServiceProcess::start(BINARY, &env);
    let base = process.url();
    sim.add_webhook_endpoint(&format!("{base}/webhooks/stripe"), STRIPE_WEBHOOK_SECRET);

    let user = Uuid::now_v7();
    let event = Uuid::now_v7();
    publish_user_created(&bus, event, &event.to_string(), &person(user)).await;
    let opened = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        account(&db, user).await.is_some_and(|a| a.stripe_subscription_id.is_some())
    })
    .await;
    assert!(opened, "account opened; output:\n{}", process.output());

    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let owner = caller(user, &[Role::User, Role::Owner]);
    let path = "/api/billing/payment-method";
    let mut request = reqwest::Client::new().post(format!("{base}{path}"));
    for (name, value) in key.sign("POST", path, &owner, chrono::Utc::now().timestamp()) {
        request = request.header(name, value);
    }
    let session: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
    sim.complete_checkout_session(session["id"].as_str().unwrap()).unwrap();

    let subject = bus.subjects().event::<PaymentMethodAddedV1>();
    let announced = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        published(&bus, &subject).await.len() == 1
    })
    .await;
    assert!(announced, "PaymentMethodAddedV1 published; output:\n{}", process.output());
    assert_eq!(process.terminate(Duration::from_secs(15)).and_then(|s| s.code()), Some(0));
}
