//! A new person gets exactly one Stripe customer and one subscription of three metered prices,
//! however the event arrives and whatever fails in between.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use hopsbridge_billing::catalog::{CatalogError, Prices};
use hopsbridge_billing::events::{UserCreated, UserCreatedHooks};
use hopsbridge_billing::stripe::Stripe;
use hopsbridge_contracts::events::UserCreatedV1;
use hopsbridge_domain::EventId;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent};
use hopsbridge_sandbox::stripe::StripeSim;
use hopsbridge_testkit::{STRIPE_SECRET_KEY, TestBus, TestDb};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// Checks the sandbox holds exactly one customer and one subscription for `user`, with a
/// metered item per resource (CPU, RAM, GPU, offline and online storage) on the configured
/// meters and rates; returns their ids.
async fn assert_one_customer_and_subscription(sim: &StripeSim, user: Uuid) -> (String, String) {
    let user_id = user.to_string();
    let customers: Vec<Value> =
        sim.customers().into_iter().filter(|c| c["metadata"]["hopsbridge_user_id"] == user_id.as_str()).collect();
    assert_eq!(customers.len(), 1, "one customer: {customers:#?}");
    assert_eq!(customers[0]["email"], format!("{}@example.com", user.simple()));
    assert_eq!(customers[0]["name"], "Ada Lovelace");
    let customer = customers[0]["id"].as_str().unwrap().to_owned();
    let subscriptions: Vec<Value> =
        sim.subscriptions().into_iter().filter(|s| s["customer"] == customer.as_str()).collect();
    assert_eq!(subscriptions.len(), 1, "one subscription");
    let items = subscriptions[0]["items"]["data"].as_array().unwrap();
    let mut seen: Vec<(String, String, String)> = items
        .iter()
        .map(|i| {
            let price = &i["price"];
            assert_eq!(price["recurring"]["usage_type"], "metered");
            assert_eq!(price["currency"], "usd");
            let meter = price["recurring"]["meter"].as_str().unwrap();
            assert!(meter.starts_with("mtr_"));
            (
                price["lookup_key"].as_str().unwrap().to_owned(),
                price["unit_amount_decimal"].as_str().unwrap().to_owned(),
                meter.to_owned(),
            )
        })
        .collect();
    seen.sort();
    let keys: Vec<(&str, &str)> = seen.iter().map(|(k, a, _)| (k.as_str(), a.as_str())).collect();
    assert_eq!(
        keys,
        vec![
            ("hopsbridge_cpu_core_hour_v1", "35"),
            ("hopsbridge_gpu_hour_v1", "350"),
            ("hopsbridge_ram_gib_hour_v1", "3.5"),
            ("hopsbridge_storage_offline_gb_month_v1", "3.5"),
            ("hopsbridge_storage_online_gb_month_v1", "35"),
        ]
    );
    let meters = stripe_get(sim, "billing/meters?limit=100").await;
    let meters = meters["data"].as_array().unwrap();
    assert_eq!(meters.len(), 5, "one meter per resource");
    for meter in meters {
        assert_eq!(meter["default_aggregation"]["formula"], "sum");
        assert_eq!(meter["customer_mapping"]["event_payload_key"], "stripe_customer_id");
        assert!(seen.iter().any(|(_, _, id)| meter["id"] == id.as_str()));
    }
    (customer, subscriptions[0]["id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_person_gets_one_customer_and_one_metered_subscription_despite_duplicates_and_429s() {
    let billing = start().await;
    catalog_ready(&billing.sim).await;
    // Stripe refuses the first attempts: twice rate-limited, once a server error.
    billing.sim.fail_next(2, 429);
    billing.sim.fail_next(1, 503);
    let user = Uuid::now_v7();
    let event = Uuid::now_v7();
    // The same event stored twice (as a relay that published again outside JetStream's window).
    publish_user_created(&billing.bus, event, "first", &person(user)).await;
    publish_user_created(&billing.bus, event, "second", &person(user)).await;
    let done = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        account(&billing.db, user).await.is_some_and(|a| a.stripe_subscription_id.is_some())
    })
    .await;
    assert!(done, "the account got its subscription");
    assert_eq!(billing.sim.failures_left(), 0, "the failures were met and retried");
    // Give a second delivery every chance to do harm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (customer, subscription) = assert_one_customer_and_subscription(&billing.sim, user).await;
    let row = account(&billing.db, user).await.unwrap();
    assert_eq!(row.stripe_customer_id.as_deref(), Some(customer.as_str()));
    assert_eq!(row.stripe_subscription_id.as_deref(), Some(subscription.as_str()));
    assert_eq!(row.billing_mode, "postpaid", "postpaid, with no payment method yet");
    assert_eq!(count(&billing.db, "payment_methods").await, 0);
    assert_eq!(billing.sim.customers().len(), 1);
    assert_eq!(billing.sim.subscriptions().len(), 1);
}

/// The handler on its own, as the consumer would call it for each delivery.
struct Direct {
    db: TestDb,
    _bus: TestBus,
    sim: StripeSim,
    database: Database,
    stripe: Stripe,
    prices: Prices,
}

async fn direct() -> Direct {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let sim = start_sim();
    let config = config(&db, &bus, &sim);
    let database = Database::new(&db.config(), "billing").unwrap();
    let stripe = Stripe::new(&sim.url(), STRIPE_SECRET_KEY.to_owned().into(), 20).unwrap();
    let prices = Prices::new(stripe.clone(), config.rates.clone(), "usd".into());
    // The service seeds its price book at start; subscriptions are made of its versions.
    hopsbridge_billing::prices::seed(&mut db.connect("billing").await, &config.rates, "usd").await.unwrap();
    Direct { db, _bus: bus, sim, database, stripe, prices }
}

impl Direct {
    fn handler(&self, hooks: UserCreatedHooks) -> UserCreated {
        UserCreated::new((self.database.clone(), Clock::system()), self.stripe.clone(), self.prices.clone(), hooks)
    }

    async fn deliver(&self, handler: &UserCreated, event: &ReceivedEvent<UserCreatedV1>) -> Result<(), HandlerError> {
        let mut conn = self.db.connect("billing").await;
        handler.handle(&mut conn, event).await
    }
}

fn received(id: EventId, user: Uuid, delivered: i64) -> ReceivedEvent<UserCreatedV1> {
    ReceivedEvent { id, causation: None, occurred_at: chrono::Utc::now(), delivered, payload: person(user) }
}

/// A hook that fails its first call, as a process killed right after Stripe answered.
fn crash_once() -> (UserCreatedHooks, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let hooks = UserCreatedHooks {
        after_customer_created: Some(Arc::new(move |_customer: &str| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 { Err(anyhow::anyhow!("killed")) } else { Ok(()) }
        })),
    };
    (hooks, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_creating_the_customer_and_storing_it_reuses_the_customer() {
    let d = direct().await;
    let (hooks, calls) = crash_once();
    let handler = d.handler(hooks);
    let user = Uuid::now_v7();
    let event = EventId::new();

    let first = d.deliver(&handler, &received(event, user, 1)).await;
    assert!(matches!(first, Err(HandlerError::Retry(_))), "{first:?}");
    assert_eq!(d.sim.customers().len(), 1, "Stripe made the customer");
    let row = account(&d.db, user).await.unwrap();
    assert_eq!(row.stripe_customer_id, None, "but it was never stored");
    assert_eq!(d.sim.subscriptions().len(), 0);

    d.deliver(&handler, &received(event, user, 2)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let (customer, subscription) = assert_one_customer_and_subscription(&d.sim, user).await;
    let row = account(&d.db, user).await.unwrap();
    assert_eq!(row.stripe_customer_id, Some(customer));
    assert_eq!(row.stripe_subscription_id, Some(subscription));

    // Once more, with everything done: nothing new.
    d.deliver(&handler, &received(event, user, 3)).await.unwrap();
    assert_eq!((d.sim.customers().len(), d.sim.subscriptions().len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_idempotency_keys_expired_finds_the_customer_and_the_subscription() {
    let d = direct().await;
    let (hooks, _) = crash_once();
    let handler = d.handler(hooks);
    let user = Uuid::now_v7();
    let event = EventId::new();
    assert!(d.deliver(&handler, &received(event, user, 1)).await.is_err());
    assert_eq!(d.sim.customers().len(), 1);

    // Stripe forgets idempotency keys after 24 hours.
    d.sim.advance_clock(25 * 3600);
    d.deliver(&handler, &received(event, user, 2)).await.unwrap();
    let (customer, subscription) = assert_one_customer_and_subscription(&d.sim, user).await;
    assert_eq!(account(&d.db, user).await.unwrap().stripe_customer_id, Some(customer));

    // The subscription was made but its id lost (a crash before it was stored); days later:
    sql(&d.db, &format!("UPDATE accounts SET stripe_subscription_id = NULL WHERE user_id = '{user}'")).await;
    d.sim.advance_clock(3 * 86_400);
    d.deliver(&handler, &received(event, user, 3)).await.unwrap();
    assert_eq!(d.sim.subscriptions().len(), 1, "found, not made again");
    assert_eq!(account(&d.db, user).await.unwrap().stripe_subscription_id, Some(subscription));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_rejected_and_stripe_refusals_are_retried_or_rejected() {
    let d = direct().await;
    let handler = d.handler(UserCreatedHooks::default());
    let mut event = received(EventId::new(), Uuid::now_v7(), 1);
    event.payload.user_id = "not-a-uuid".into();
    assert!(matches!(d.deliver(&handler, &event).await, Err(HandlerError::Reject(_))));
    let mut event = received(EventId::new(), Uuid::now_v7(), 1);
    event.payload.email = String::new();
    assert!(matches!(d.deliver(&handler, &event).await, Err(HandlerError::Reject(_))));
    assert_eq!(count(&d.db, "accounts").await, 0, "nothing opened for a bad event");

    let user = Uuid::now_v7();
    d.sim.fail_next(1, 500);
    assert!(matches!(d.deliver(&handler, &received(EventId::new(), user, 1)).await, Err(HandlerError::Retry(_))));
    // Four 429s in a row outlast the client's own retries.
    d.sim.fail_next(4, 429);
    assert!(matches!(d.deliver(&handler, &received(EventId::new(), user, 2)).await, Err(HandlerError::Retry(_))));
    assert!(d.sim.customers().is_empty());
    d.deliver(&handler, &received(EventId::new(), user, 3)).await.unwrap();
    assert_one_customer_and_subscription(&d.sim, user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_and_prices_are_found_again_after_a_restart_and_a_changed_rate_is_refused() {
    let d = direct().await;
    let first = d.prices.get().await.unwrap();
    assert_eq!(first.prices.len(), 5);
    // A restart (a new process) finds them instead of creating more.
    let again = Prices::new(d.stripe.clone(), direct_rates(&d), "usd".into()).get().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(stripe_get(&d.sim, "prices?limit=100").await["data"].as_array().unwrap().len(), 5);
    assert_eq!(stripe_get(&d.sim, "billing/meters?limit=100").await["data"].as_array().unwrap().len(), 5);

    // The same lookup key with a different rate would bill at the old one: refused loudly.
    let mut rates = direct_rates(&d);
    rates.cpu.unit_amount_decimal = "40".into();
    let changed = Prices::new(d.stripe.clone(), rates, "usd".into()).get().await;
    assert!(matches!(changed, Err(CatalogError::Mismatch(_))), "{changed:?}");
}

fn direct_rates(d: &Direct) -> hopsbridge_billing::config::Rates {
    config(&d.db, &d._bus, &d.sim).rates
}
