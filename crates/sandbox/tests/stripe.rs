//! The Stripe simulator driven by the real async-stripe client: answers decode, errors carry
//! Stripe's types and codes, and webhooks arrive signed and misbehave on request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::TimeZone;
use hmac::{Hmac, Mac};
use hopsbridge_sandbox::clock::SimClock;
use hopsbridge_sandbox::server::Served;
use hopsbridge_sandbox::stripe::{HoldStatus, StripeConfig, StripeSim, WebhookFaults};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stripe::{ApiErrorsCode, ApiErrorsType, Client, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter::{
    CreateBillingMeter, CreateBillingMeterCustomerMapping, CreateBillingMeterCustomerMappingType,
    CreateBillingMeterDefaultAggregation, CreateBillingMeterDefaultAggregationFormula, CreateBillingMeterValueSettings,
    ListBillingMeter,
};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_meter_event_adjustment::{
    CreateBillingMeterEventAdjustment, CreateBillingMeterEventAdjustmentCancel,
};
use stripe_billing::billing_meter_event_summary::{
    ListIdBillingMeterEventSummary, ListIdBillingMeterEventSummaryValueGroupingWindow,
};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::{CreatePreviewInvoice, ListInvoice, RetrieveInvoice};
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems, CreateSubscriptionProrationBehavior,
    ListSubscription, RetrieveSubscription,
};
use stripe_billing::subscription_item::{
    CreateSubscriptionItem, CreateSubscriptionItemProrationBehavior, DeleteSubscriptionItem,
    DeleteSubscriptionItemProrationBehavior, ListSubscriptionItem, RetrieveSubscriptionItem,
};
use stripe_billing::{BillingMeterEventAdjustmentType, InvoiceStatus, SubscriptionStatus};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, RetrieveCheckoutSession,
};
use stripe_checkout::{CheckoutSessionMode, CheckoutSessionPaymentStatus, CheckoutSessionStatus};
use stripe_core::SetupIntentStatus;
use stripe_core::customer::{
    CreateCustomer, ListPaymentMethodsCustomer, RetrieveCustomer, RetrieveCustomerReturned, UpdateCustomer,
    UpdateCustomerInvoiceSettings,
};
use stripe_core::payment_intent::RetrievePaymentIntent;
use stripe_core::setup_intent::{ConfirmSetupIntent, CreateSetupIntent, RetrieveSetupIntent};
use stripe_payment::payment_method::{AttachPaymentMethod, DetachPaymentMethod};
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, CreatePriceRecurringUsageType,
};
use stripe_product::product::CreateProduct;
use stripe_types::Currency;
use stripe_webhook::{EventObject, Webhook};

const DAY: i64 = 86_400;

fn start() -> (StripeSim, Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = StripeSim::start(StripeConfig::default()).unwrap();
    let client = stripe::ClientBuilder::new(sim.secret_key()).url(format!("{}/", sim.url())).build().unwrap();
    (sim, client)
}

/// The status and error of a failed call.
fn api_error<T: std::fmt::Debug>(result: Result<T, StripeError>) -> (u16, Box<stripe::ApiErrors>) {
    match result {
        Err(StripeError::Stripe(error, status)) => (status, error),
        other => panic!("expected a Stripe error, got {other:?}"),
    }
}

/// One webhook request as the endpoint saw it.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    body: String,
}

/// A webhook endpoint on loopback recording requests; answers 500 to the first `fail_first`.
struct Receiver {
    served: Served,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let store = received.clone();
        let served = Served::start(
            move |cfg: &mut web::ServiceConfig| {
                let store = store.clone();
                let seen = seen.clone();
                cfg.route(
                    "/hook",
                    web::post().to(move |req: HttpRequest, body: web::Bytes| {
                        let store = store.clone();
                        let seen = seen.clone();
                        async move {
                            let signature = req
                                .headers()
                                .get("stripe-signature")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let body = String::from_utf8(body.to_vec()).unwrap();
                            store.lock().unwrap().push(Received { signature, body });
                            if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                                HttpResponse::InternalServerError().finish()
                            } else {
                                HttpResponse::Ok().finish()
                            }
                        }
                    }),
                );
            },
            None,
        )
        .unwrap();
        Self { served, received }
    }

    fn url(&self) -> String {
        format!("{}/hook", self.served.url())
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn types(&self) -> Vec<String> {
        self.received().iter().map(|r| event_json(r)["type"].as_str().unwrap().to_owned()).collect()
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..1000 {
            if self.received().len() >= count {
                return self.received();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {count} webhook requests, got {:?}", self.types());
    }
}

fn event_json(received: &Received) -> Value {
    serde_json::from_str(&received.body).unwrap()
}

/// Checks `t=…,v1=…` with an HMAC computed here, independently of the simulator.
fn assert_signed(received: &Received, secret: &str) {
    let parts: HashMap<&str, &str> = received.signature.split(',').filter_map(|kv| kv.split_once('=')).collect();
    let t: i64 = parts["t"].parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - t).abs() < 60, "timestamp is now");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", received.body).as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(parts["v1"], expected, "v1 is HMAC-SHA256 over t.body");
    Webhook::construct_event(&received.body, &received.signature, secret).unwrap();
    assert!(Webhook::construct_event(&received.body, &received.signature, "whsec_other").is_err());
}

async fn customer(client: &Client, email: &str) -> String {
    CreateCustomer::new().email(email).send(client).await.unwrap().id.to_string()
}

/// A meter `compute_usage`, product and three metered monthly prices on it.
/// One subscription item per price.
fn subscription_items(prices: &[String]) -> Vec<CreateSubscriptionItems> {
    prices
        .iter()
        .map(|p| {
            let mut item = CreateSubscriptionItems::new();
            item.price = Some(p.clone());
            item
        })
        .collect()
}

async fn metered_catalog(client: &Client) -> (String, Vec<String>) {
    let meter = CreateBillingMeter::new(
        CreateBillingMeterDefaultAggregation::new(CreateBillingMeterDefaultAggregationFormula::Sum),
        "Compute usage",
        "compute_usage",
    )
    .customer_mapping(CreateBillingMeterCustomerMapping::new(
        "stripe_customer_id",
        CreateBillingMeterCustomerMappingType::ById,
    ))
    .value_settings(CreateBillingMeterValueSettings::new("value"))
    .send(client)
    .await
    .unwrap();
    let product = CreateProduct::new("Hopsworks compute").send(client).await.unwrap();
    let mut prices = Vec::new();
    for decimal in ["0.5", "0.05", "12.5"] {
        let price = metered_price(client, meter.id.as_str(), product.id.as_str(), decimal).await;
        assert_eq!(price.recurring.as_ref().unwrap().meter.as_deref(), Some(meter.id.as_str()));
        assert_eq!(price.unit_amount_decimal.as_deref(), Some(decimal));
        prices.push(price.id.to_string());
    }
    (meter.id.to_string(), prices)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_same_customer_and_refuses_different_parameters() {
    let (sim, client) = start();
    let key = || RequestStrategy::Idempotent(IdempotencyKey::new("customer-team-1").unwrap());
    let first =
        CreateCustomer::new().email("a@example.com").customize().request_strategy(key()).send(&client).await.unwrap();
    let again =
        CreateCustomer::new().email("a@example.com").customize().request_strategy(key()).send(&client).await.unwrap();
    assert_eq!(first.id, again.id);
    assert!(first.id.as_str().starts_with("cus_"));
    assert_eq!(sim.customers().len(), 1, "the replay created nothing");

    let (status, error) =
        api_error(CreateCustomer::new().email("b@example.com").customize().request_strategy(key()).send(&client).await);
    assert_eq!(status, 400);
    assert_eq!(error.type_, ApiErrorsType::IdempotencyError);
    assert_eq!(sim.customers().len(), 1);

    // The replay is marked, as Stripe marks it.
    let http = reqwest::Client::new();
    let replay = http
        .post(format!("{}/v1/customers", sim.url()))
        .bearer_auth(sim.secret_key())
        .header("idempotency-key", "customer-team-1")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=a%40example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers().get("idempotent-replayed").unwrap(), "true");
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["id"], first.id.as_str());

    // Keys are kept 24 hours.
    sim.advance_clock(DAY + 1);
    let later =
        CreateCustomer::new().email("b@example.com").customize().request_strategy(key()).send(&client).await.unwrap();
    assert_ne!(later.id, first.id);

    let fetched = RetrieveCustomer::new(first.id.as_str()).send(&client).await.unwrap();
    let RetrieveCustomerReturned::Customer(fetched) = fetched else { panic!("a live customer") };
    assert_eq!(fetched.email.as_deref(), Some("a@example.com"));
    let (status, error) = api_error(RetrieveCustomer::new("cus_missing").send(&client).await);
    assert_eq!((status, error.code), (404, Some(ApiErrorsCode::ResourceMissing)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_secret_key_are_refused_with_401() {
    let (sim, _client) = start();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/customers", sim.url());
    let missing = http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("did not provide an API key"));

    let wrong = http.get(&url).bearer_auth("sk_test_wrong1234").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("Invalid API Key provided: sk_test_****1234"));

    let other = stripe::ClientBuilder::new("sk_test_nope").url(format!("{}/", sim.url())).build().unwrap();
    let (status, _) = api_error(CreateCustomer::new().send(&other).await);
    assert_eq!(status, 401);
    assert!(sim.customers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_with_three_metered_items_on_one_meter_decodes_and_cancels() {
    let (sim, client) = start();
    let customer = customer(&client, "team@example.com").await;
    let (meter, prices) = metered_catalog(&client).await;
    let meters = ListBillingMeter::new().send(&client).await.unwrap();
    assert_eq!(meters.data.len(), 1);
    assert_eq!(meters.data[0].id.as_str(), meter);

    let items = subscription_items(&prices);
    let subscription = CreateSubscription::new().customer(customer.as_str()).items(items).send(&client).await.unwrap();
    assert!(subscription.id.as_str().starts_with("sub_"));
    assert_eq!(subscription.items.data.len(), 3);
    for (item, price) in subscription.items.data.iter().zip(&prices) {
        assert!(item.id.as_str().starts_with("si_"));
        assert_eq!(item.price.id.as_str(), price);
        assert_eq!(item.price.recurring.as_ref().unwrap().meter.as_deref(), Some(meter.as_str()));
        assert!(item.quantity.is_none(), "metered items carry no quantity");
    }

    let fetched = RetrieveSubscription::new(subscription.id.as_str()).send(&client).await.unwrap();
    assert_eq!(fetched.items.data.len(), 3);
    let listed = ListSubscription::new().customer(customer.as_str()).send(&client).await.unwrap();
    assert_eq!(listed.data.len(), 1);

    let canceled = CancelSubscription::new(subscription.id.as_str()).send(&client).await.unwrap();
    assert_eq!(canceled.status, SubscriptionStatus::Canceled);
    let listed = ListSubscription::new().customer(customer.as_str()).send(&client).await.unwrap();
    assert!(listed.data.is_empty(), "canceled subscriptions are not listed by default");
    assert_eq!(sim.subscriptions()[0]["status"], "canceled");

    // What Stripe refuses: a metered price without a meter, an unknown price, a quantity on a metered item.
    let product = CreateProduct::new("Other").send(&client).await.unwrap();
    let mut recurring = CreatePriceRecurring::new(CreatePriceRecurringInterval::Month);
    recurring.usage_type = Some(CreatePriceRecurringUsageType::Metered);
    let (status, error) = api_error(
        CreatePrice::new(Currency::USD)
            .product(product.id.as_str())
            .recurring(recurring)
            .unit_amount(1)
            .send(&client)
            .await,
    );
    assert_eq!((status, error.param.as_deref()), (400, Some("recurring[meter]")));
    let mut item = CreateSubscriptionItems::new();
    item.price = Some("price_missing".into());
    let (status, error) =
        api_error(CreateSubscription::new().customer(customer.as_str()).items(vec![item]).send(&client).await);
    assert_eq!((status, error.code), (400, Some(ApiErrorsCode::ResourceMissing)));
    let mut item = CreateSubscriptionItems::new();
    item.price = Some(prices[0].clone());
    item.quantity = Some(2);
    let (status, _) =
        api_error(CreateSubscription::new().customer(customer.as_str()).items(vec![item]).send(&client).await);
    assert_eq!(status, 400);
    assert_eq!(sim.subscriptions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_events_are_deduplicated_and_kept_within_35_days_back_and_5_minutes_ahead() {
    let (sim, client) = start();
    let customer = customer(&client, "usage@example.com").await;
    metered_catalog(&client).await;
    let payload = |value: &str| {
        HashMap::from([("stripe_customer_id".to_owned(), customer.clone()), ("value".to_owned(), value.to_owned())])
    };
    let now = sim.now();

    let event = CreateBillingMeterEvent::new("compute_usage", payload("3"))
        .identifier("usage-1")
        .timestamp(now - 34 * DAY)
        .send(&client)
        .await
        .unwrap();
    assert_eq!(event.identifier, "usage-1");
    assert_eq!(event.payload["value"], "3");

    let (status, error) = api_error(
        CreateBillingMeterEvent::new("compute_usage", payload("3")).identifier("usage-1").send(&client).await,
    );
    assert_eq!((status, error.param.as_deref()), (400, Some("identifier")));
    assert_eq!(error.message.as_deref(), Some("An event already exists with identifier usage-1."));

    let (status, error) = api_error(
        CreateBillingMeterEvent::new("compute_usage", payload("1"))
            .identifier("usage-2")
            .timestamp(now - 36 * DAY)
            .send(&client)
            .await,
    );
    assert_eq!((status, error.param.as_deref()), (400, Some("timestamp")));
    let (status, error) = api_error(
        CreateBillingMeterEvent::new("compute_usage", payload("1"))
            .identifier("usage-3")
            .timestamp(now + 6 * 60)
            .send(&client)
            .await,
    );
    assert_eq!((status, error.param.as_deref()), (400, Some("timestamp")));
    CreateBillingMeterEvent::new("compute_usage", payload("1.5"))
        .identifier("usage-4")
        .timestamp(now + 4 * 60)
        .send(&client)
        .await
        .unwrap();

    let (status, error) = api_error(CreateBillingMeterEvent::new("compute_usage", payload("lots")).send(&client).await);
    assert_eq!((status, error.param.as_deref()), (400, Some("payload[value]")));
    let (status, error) =
        api_error(CreateBillingMeterEvent::new("compute_usage", payload("1234567890.123456")).send(&client).await);
    assert_eq!((status, error.param.as_deref()), (400, Some("payload[value]")), "at most 15 significant digits");
    CreateBillingMeterEvent::new("compute_usage", payload("0.000012345678901230"))
        .identifier("usage-5")
        .send(&client)
        .await
        .unwrap();
    let stranger = HashMap::from([
        ("stripe_customer_id".to_owned(), "cus_nobody".to_owned()),
        ("value".to_owned(), "1".to_owned()),
    ]);
    let (status, error) = api_error(CreateBillingMeterEvent::new("compute_usage", stranger).send(&client).await);
    assert_eq!((status, error.code), (400, Some(ApiErrorsCode::ResourceMissing)));

    let identifiers: Vec<Value> = sim.meter_events().iter().map(|e| e["identifier"].clone()).collect();
    assert_eq!(identifiers, vec![Value::from("usage-1"), Value::from("usage-4"), Value::from("usage-5")]);

    // After 24 hours an identifier may be used again.
    sim.advance_clock(DAY + 1);
    CreateBillingMeterEvent::new("compute_usage", payload("3")).identifier("usage-1").send(&client).await.unwrap();
    assert_eq!(sim.meter_events().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_checkout_completed_by_the_customer_sends_signed_events_and_saves_the_card() {
    let (sim, client) = start();
    let receiver = Receiver::start(0);
    sim.add_webhook_endpoint(&receiver.url(), "whsec_test_secret");
    let customer = customer(&client, "buyer@example.com").await;

    let session = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Setup)
        .customer(customer.as_str())
        .currency(Currency::USD)
        .success_url("https://app.example.com/ok")
        .cancel_url("https://app.example.com/cancel")
        .send(&client)
        .await
        .unwrap();
    assert!(session.id.as_str().starts_with("cs_test_"));
    assert!(session.url.as_deref().unwrap().starts_with(&sim.url()));
    assert_eq!(session.status, Some(CheckoutSessionStatus::Open));

    sim.complete_checkout_session(session.id.as_str()).unwrap();
    let expected = [
        "customer.created",
        "payment_method.attached",
        "setup_intent.created",
        "setup_intent.succeeded",
        "checkout.session.completed",
    ];
    let received = receiver.wait_for(expected.len()).await;
    assert_eq!(receiver.types(), expected);
    for r in &received {
        assert_signed(r, "whsec_test_secret");
        let event = event_json(r);
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(event["object"], "event");
        assert_eq!(event["livemode"], false);
    }
    let completed = Webhook::construct_event(&received[4].body, &received[4].signature, "whsec_test_secret").unwrap();
    let EventObject::CheckoutSessionCompleted(done) = completed.data.object else { panic!("a completed session") };
    assert_eq!(done.status, Some(CheckoutSessionStatus::Complete));
    let setup_intent = done.setup_intent.unwrap().id().to_string();

    let intent = RetrieveSetupIntent::new(setup_intent.as_str()).send(&client).await.unwrap();
    assert_eq!(intent.status, SetupIntentStatus::Succeeded);
    let retrieved = RetrieveCheckoutSession::new(session.id.as_str()).send(&client).await.unwrap();
    assert_eq!(retrieved.status, Some(CheckoutSessionStatus::Complete));

    let cards = ListPaymentMethodsCustomer::new(customer.as_str()).send(&client).await.unwrap();
    assert_eq!(cards.data.len(), 1);
    let card = cards.data[0].card.as_ref().unwrap();
    assert_eq!((card.brand.as_str(), card.last4.as_str()), ("visa", "4242"));
    let pm = cards.data[0].id.to_string();

    let mut settings = UpdateCustomerInvoiceSettings::new();
    settings.default_payment_method = Some(pm.clone());
    let updated = UpdateCustomer::new(customer.as_str()).invoice_settings(settings).send(&client).await.unwrap();
    let default = updated.invoice_settings.unwrap().default_payment_method.unwrap();
    assert_eq!(default.id().as_str(), pm);

    let mut unknown = UpdateCustomerInvoiceSettings::new();
    unknown.default_payment_method = Some("pm_not_attached".into());
    let (status, _) = api_error(UpdateCustomer::new(customer.as_str()).invoice_settings(unknown).send(&client).await);
    assert_eq!(status, 400);

    let portal = CreateBillingPortalSession::new()
        .customer(customer.as_str())
        .return_url("https://app.example.com/billing")
        .send(&client)
        .await
        .unwrap();
    assert!(portal.id.as_str().starts_with("bps_"));
    assert!(portal.url.starts_with(&sim.url()));
    let page = reqwest::get(&portal.url).await.unwrap().text().await.unwrap();
    assert!(page.contains("href=\"https://app.example.com/billing\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_payment_method_names_its_customer_only_in_previous_attributes() {
    let (sim, client) = start();
    let receiver = Receiver::start(0);
    sim.add_webhook_endpoint(&receiver.url(), "whsec_detach");
    let customer = customer(&client, "card@example.com").await;
    let intent = CreateSetupIntent::new().customer(customer.as_str()).send(&client).await.unwrap();
    assert!(intent.id.as_str().starts_with("seti_"));
    assert_eq!(intent.status, SetupIntentStatus::RequiresPaymentMethod);
    let confirmed = sim.confirm_setup_intent(intent.id.as_str()).unwrap();
    let pm = confirmed["payment_method"].as_str().unwrap().to_owned();

    let detached = DetachPaymentMethod::new(pm.as_str()).send(&client).await.unwrap();
    assert!(detached.customer.is_none());
    let received = receiver.wait_for(4).await;
    let last = event_json(&received[3]);
    assert_eq!(last["type"], "payment_method.detached");
    assert!(last["data"]["object"]["customer"].is_null());
    assert_eq!(last["data"]["previous_attributes"]["customer"], customer.as_str());
    assert_signed(&received[3], "whsec_detach");
    let event = Webhook::construct_event(&received[3].body, &received[3].signature, "whsec_detach").unwrap();
    assert!(matches!(event.data.object, EventObject::PaymentMethodDetached(ref m) if m.customer.is_none()));

    let (status, _) = api_error(DetachPaymentMethod::new(pm.as_str()).send(&client).await);
    assert_eq!(status, 400, "a detached method cannot be detached again");

    let attached = AttachPaymentMethod::new(pm.as_str()).customer(customer.as_str()).send(&client).await.unwrap();
    assert_eq!(attached.customer.unwrap().id().as_str(), customer);
    receiver.wait_for(5).await;
    assert_eq!(receiver.types()[4], "payment_method.attached");
    let other = self::customer(&client, "other@example.com").await;
    let (status, _) = api_error(AttachPaymentMethod::new(pm.as_str()).customer(other.as_str()).send(&client).await);
    assert_eq!(status, 400, "a method attached to one customer cannot be attached to another");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_rate_limit_are_answered_429_rate_limit() {
    let (sim, client) = start();
    sim.set_rate_limit(Some(3));
    let mut limited = 0;
    for _ in 0..10 {
        match CreateCustomer::new().send(&client).await {
            Ok(_) => {}
            Err(StripeError::Stripe(error, 429)) => {
                assert_eq!(error.code, Some(ApiErrorsCode::RateLimit));
                limited += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited >= 4, "at most 3 per second pass, {limited} limited");
    assert_eq!(sim.customers().len(), 10 - limited);
    sim.set_rate_limit(None);
    CreateCustomer::new().send(&client).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_with_backoff_until_the_endpoint_answers_2xx() {
    let (sim, client) = start();
    let receiver = Receiver::start(2);
    sim.set_webhook_faults(WebhookFaults { backoff: Duration::from_millis(20), ..WebhookFaults::default() });
    sim.add_webhook_endpoint(&receiver.url(), "whsec_retry");
    customer(&client, "retry@example.com").await;
    let received = receiver.wait_for(3).await;
    let ids: Vec<Value> = received.iter().map(|r| event_json(r)["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "the same event is retried");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let deliveries = sim.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].statuses(), vec![Some(500), Some(500), Some(200)]);
    assert!(deliveries[0].succeeded);
    let at: Vec<_> = deliveries[0].attempts.iter().map(|a| a.at).collect();
    assert!(at[1] - at[0] >= Duration::from_millis(20), "first retry after the backoff");
    assert!(at[2] - at[1] >= Duration::from_millis(40), "the backoff doubles");

    // Attempts are bounded.
    let failing = Receiver::start(usize::MAX);
    let (sim, client) = start();
    sim.set_webhook_faults(WebhookFaults {
        backoff: Duration::from_millis(10),
        max_attempts: 3,
        ..WebhookFaults::default()
    });
    sim.add_webhook_endpoint(&failing.url(), "whsec_retry");
    customer(&client, "never@example.com").await;
    failing.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(failing.received().len(), 3);
    assert_eq!(sim.deliveries()[0].statuses(), vec![Some(500); 3]);
    assert!(!sim.deliveries()[0].succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delayed_and_out_of_order_deliveries_happen_when_switched_on() {
    let (sim, client) = start();
    let receiver = Receiver::start(0);
    sim.add_webhook_endpoint(&receiver.url(), "whsec_faults");

    sim.set_webhook_faults(WebhookFaults { duplicate: true, ..WebhookFaults::default() });
    customer(&client, "twice@example.com").await;
    let received = receiver.wait_for(2).await;
    assert_eq!(event_json(&received[0])["id"], event_json(&received[1])["id"]);

    sim.set_webhook_faults(WebhookFaults { delay: Duration::from_millis(800), ..WebhookFaults::default() });
    customer(&client, "late@example.com").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 2, "not delivered before the delay");
    receiver.wait_for(3).await;

    sim.set_webhook_faults(WebhookFaults::default());
    let buyer = customer(&client, "shuffle@example.com").await;
    receiver.wait_for(4).await;
    let session = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Setup)
        .customer(buyer.as_str())
        .currency(Currency::USD)
        .success_url("https://app.example.com/ok")
        .send(&client)
        .await
        .unwrap();
    sim.set_webhook_faults(WebhookFaults { out_of_order: true, ..WebhookFaults::default() });
    sim.complete_checkout_session(session.id.as_str()).unwrap();
    receiver.wait_for(8).await;
    let emitted: Vec<String> = sim.events()[3..].iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(emitted.len(), 4);
    let mut reversed = emitted.clone();
    reversed.reverse();
    assert_eq!(receiver.types()[4..].to_vec(), reversed, "a held batch arrives newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_and_failed_invoices_are_listed_and_announced() {
    let (sim, client) = start();
    let receiver = Receiver::start(0);
    let customer = customer(&client, "invoice@example.com").await;
    let (_, prices) = metered_catalog(&client).await;
    let items = subscription_items(&prices[..2]);
    let subscription = CreateSubscription::new().customer(customer.as_str()).items(items).send(&client).await.unwrap();
    sim.add_webhook_endpoint(&receiver.url(), "whsec_invoice");

    assert!(sim.create_invoice(subscription.id.as_str(), &[1250], true).is_err(), "one amount per item");
    let paid = sim.create_invoice(subscription.id.as_str(), &[1000, 250], true).unwrap();
    let failed = sim.create_invoice(subscription.id.as_str(), &[900, 90], false).unwrap();
    let listed = ListInvoice::new().customer(customer.as_str()).send(&client).await.unwrap();
    assert_eq!(listed.data.len(), 3);
    let first = &listed.data[2];
    assert_eq!(
        first.id.as_ref().map(|i| i.as_str()),
        subscription.latest_invoice.as_ref().and_then(|i| i.id().as_ref()).map(|i| i.as_str())
    );
    assert_eq!(first.billing_reason, Some(stripe_billing::InvoiceBillingReason::SubscriptionCreate));
    assert_eq!((first.amount_due, first.status.clone()), (0, Some(InvoiceStatus::Paid)));
    let fetched = RetrieveInvoice::new(paid["id"].as_str().unwrap()).send(&client).await.unwrap();
    assert_eq!(fetched.amount_paid, 1250);
    assert_eq!(fetched.status, Some(InvoiceStatus::Paid));
    let amounts: Vec<i64> = fetched.lines.data.iter().map(|l| l.amount).collect();
    assert_eq!(amounts, [1000, 250]);
    let line_items: Vec<String> = fetched
        .lines
        .data
        .iter()
        .map(|l| l.parent.as_ref().unwrap().subscription_item_details.as_ref().unwrap().subscription_item.clone())
        .collect();
    let item_ids: Vec<String> = subscription.items.data.iter().map(|i| i.id.to_string()).collect();
    assert_eq!(line_items, item_ids);
    let fetched = RetrieveInvoice::new(failed["id"].as_str().unwrap()).send(&client).await.unwrap();
    assert_eq!((fetched.amount_remaining, fetched.status), (990, Some(InvoiceStatus::Open)));

    let received = receiver.wait_for(8).await;
    assert_eq!(
        receiver.types(),
        [
            "invoice.created",
            "invoice.finalized",
            "invoice.paid",
            "invoice.payment_succeeded",
            "invoice.created",
            "invoice.finalized",
            "invoice.payment_failed",
            "customer.subscription.updated"
        ]
    );
    for r in &received {
        assert_signed(r, "whsec_invoice");
    }
    let event = Webhook::construct_event(&received[6].body, &received[6].signature, "whsec_invoice").unwrap();
    assert!(matches!(event.data.object, EventObject::InvoicePaymentFailed(ref i) if i.amount_due == 990));
    let updated = RetrieveSubscription::new(subscription.id.as_str())
        .expand(["latest_invoice".to_owned(), "customer".to_owned(), "items.data.price.product".to_owned()])
        .send(&client)
        .await
        .unwrap();
    assert_eq!(updated.status, SubscriptionStatus::PastDue);
    let latest = updated.latest_invoice.unwrap().into_object().expect("an expanded invoice");
    assert_eq!(latest.id.as_ref().map(|i| i.as_str()), failed["id"].as_str());
    assert_eq!(
        updated.customer.into_object().expect("an expanded customer").email.as_deref(),
        Some("invoice@example.com")
    );
    let product = updated.items.data[0].price.product.clone().into_object().expect("an expanded product");
    assert_eq!(product.name, "Hopsworks compute");
    let (status, error) = api_error(
        RetrieveSubscription::new(subscription.id.as_str()).expand(["status".to_owned()]).send(&client).await,
    );
    assert_eq!((status, error.param.as_deref()), (400, Some("expand")));

    // Stripe's retry of the failed payment (no card to charge): another attempt, failed again.
    let retried = sim.retry_invoice_payment(failed["id"].as_str().unwrap()).unwrap();
    assert_eq!((retried["status"].as_str(), retried["attempt_count"].as_i64()), (Some("open"), Some(2)));
    assert!(sim.retry_invoice_payment(paid["id"].as_str().unwrap()).is_err(), "a paid invoice is not retried");
    receiver.wait_for(9).await;
    assert_eq!(receiver.types()[8], "invoice.payment_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declining_test_card_is_answered_402_card_declined_and_a_good_one_succeeds() {
    let (sim, client) = start();
    let customer = customer(&client, "decline@example.com").await;
    let intent = CreateSetupIntent::new().customer(customer.as_str()).send(&client).await.unwrap();

    let (status, error) = api_error(
        ConfirmSetupIntent::new(intent.id.as_str()).payment_method("pm_card_visa_chargeDeclined").send(&client).await,
    );
    assert_eq!(status, 402);
    assert_eq!(error.type_, ApiErrorsType::CardError);
    assert_eq!(error.code, Some(ApiErrorsCode::CardDeclined));
    assert_eq!(error.decline_code.as_deref(), Some("generic_decline"));
    let failed = error.setup_intent.unwrap();
    assert_eq!(failed.status, SetupIntentStatus::RequiresPaymentMethod);
    assert!(failed.last_setup_error.is_some());
    assert!(sim.payment_methods().is_empty());

    let confirmed =
        ConfirmSetupIntent::new(intent.id.as_str()).payment_method("pm_card_visa").send(&client).await.unwrap();
    assert_eq!(confirmed.status, SetupIntentStatus::Succeeded);
    assert_eq!(sim.payment_methods().len(), 1);
    assert_eq!(sim.payment_methods()[0]["customer"], customer.as_str());

    // A test card attaches as a new payment method.
    let attached = AttachPaymentMethod::new("pm_card_visa").customer(customer.as_str()).send(&client).await.unwrap();
    assert!(attached.id.as_str().starts_with("pm_"));
    assert_ne!(attached.id.as_str(), "pm_card_visa");
    let cards = ListPaymentMethodsCustomer::new(customer.as_str()).send(&client).await.unwrap();
    assert_eq!(cards.data.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_endpoint_created_through_the_api_gets_only_its_enabled_events() {
    let (sim, client) = start();
    let receiver = Receiver::start(0);
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/v1/webhook_endpoints", sim.url()))
        .bearer_auth(sim.secret_key())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("url={}&enabled_events[]=customer.created", receiver.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["id"].as_str().unwrap().starts_with("we_"));
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));

    let customer = customer(&client, "hooks@example.com").await;
    CreateSetupIntent::new().customer(customer.as_str()).send(&client).await.unwrap();
    let intent = CreateSetupIntent::new().customer(customer.as_str()).send(&client).await.unwrap();
    sim.confirm_setup_intent(intent.id.as_str()).unwrap();
    let received = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.types(), ["customer.created"]);
    assert_signed(&received[0], &secret);
    let event = event_json(&received[0]);
    assert!(event["request"]["id"].as_str().unwrap().starts_with("req_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_bad_versions_and_unknown_parameters_are_refused_and_not_remembered_by_a_key() {
    let (sim, client) = start();
    let http = reqwest::Client::new();
    let post = |body: &str, content_type: &str| {
        http.post(format!("{}/v1/customers", sim.url()))
            .bearer_auth(sim.secret_key())
            .header("content-type", content_type)
            .header("idempotency-key", "same-key")
            .body(body.to_owned())
            .send()
    };
    let json = post(r#"{"email":"a@example.com"}"#, "application/json").await.unwrap();
    assert_eq!(json.status(), 400);
    let body: Value = json.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("unsupported Content-Type application/json"));

    let unknown = post("emial=a%40example.com", "application/x-www-form-urlencoded").await.unwrap();
    assert_eq!(unknown.status(), 400);
    assert_eq!(unknown.headers().get("stripe-should-retry").unwrap(), "false");
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["param"], "emial");

    // The failed validation was not saved under the key: a corrected request runs.
    let fixed = post("email=a%40example.com", "application/x-www-form-urlencoded").await.unwrap();
    assert_eq!(fixed.status(), 200);
    assert!(fixed.headers().get("idempotent-replayed").is_none());
    assert_eq!(sim.customers().len(), 1);

    let versioned = http
        .get(format!("{}/v1/customers", sim.url()))
        .bearer_auth(sim.secret_key())
        .header("stripe-version", "2025-03-31.basil")
        .send()
        .await
        .unwrap();
    assert_eq!(versioned.headers().get("stripe-version").unwrap(), "2025-03-31.basil");
    let bad = http
        .get(format!("{}/v1/customers", sim.url()))
        .bearer_auth(sim.secret_key())
        .header("stripe-version", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let unknown_route =
        http.get(format!("{}/v1/usage_records", sim.url())).bearer_auth(sim.secret_key()).send().await.unwrap();
    assert_eq!(unknown_route.status(), 404);
    let listed = stripe_core::customer::ListCustomer::new().email("a@example.com").send(&client).await.unwrap();
    assert_eq!(listed.data.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_checkout_for_credits_totals_its_lines_and_completes_paid() {
    let (sim, client) = start();
    let receiver = Receiver::start(0);
    let customer = customer(&client, "credits@example.com").await;
    sim.add_webhook_endpoint(&receiver.url(), "whsec_credits");
    let product = CreateProduct::new("Compute credits").send(&client).await.unwrap();
    let price =
        CreatePrice::new(Currency::USD).product(product.id.as_str()).unit_amount(2000).send(&client).await.unwrap();
    assert_eq!(price.type_, stripe_product::PriceType::OneTime);

    let mut line = CreateCheckoutSessionLineItems::new();
    line.price = Some(price.id.to_string());
    line.quantity = Some(3);
    let session = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Payment)
        .customer(customer.as_str())
        .line_items(vec![line])
        .success_url("https://app.example.com/ok")
        .send(&client)
        .await
        .unwrap();
    assert_eq!(session.amount_total, Some(6000));
    assert_eq!(session.payment_status, CheckoutSessionPaymentStatus::Unpaid);
    assert!(session.payment_intent.is_none(), "created when the customer pays");

    sim.complete_checkout_session(session.id.as_str()).unwrap();
    let received = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        receiver.types(),
        ["payment_intent.created", "payment_intent.succeeded", "checkout.session.completed"],
        "a one-off payment saves no card"
    );
    let event = Webhook::construct_event(&received[2].body, &received[2].signature, "whsec_credits").unwrap();
    let EventObject::CheckoutSessionCompleted(done) = event.data.object else { panic!("a completed session") };
    assert_eq!(done.payment_status, CheckoutSessionPaymentStatus::Paid);
    assert_eq!(done.amount_total, Some(6000));
    let intent = RetrievePaymentIntent::new(done.payment_intent.unwrap().id().as_str()).send(&client).await.unwrap();
    assert_eq!((intent.amount, intent.amount_received), (6000, 6000));
    assert_eq!(intent.status, stripe_core::PaymentIntentStatus::Succeeded);
    assert!(sim.complete_checkout_session(session.id.as_str()).is_err(), "a session completes once");
    let saved = ListPaymentMethodsCustomer::new(customer.as_str()).send(&client).await.unwrap();
    assert!(saved.data.is_empty());

    // Stripe refuses a payment-mode session without line items or with a recurring price.
    let no_lines = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Payment)
        .customer(customer.as_str())
        .success_url("https://app.example.com/ok")
        .send(&client)
        .await;
    assert_eq!(api_error(no_lines).1.param.as_deref(), Some("line_items"));
    let (_, prices) = metered_catalog(&client).await;
    let mut line = CreateCheckoutSessionLineItems::new();
    line.price = Some(prices[0].clone());
    line.quantity = Some(1);
    let recurring = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Payment)
        .line_items(vec![line])
        .success_url("https://app.example.com/ok")
        .send(&client)
        .await;
    assert_eq!(api_error(recurring).0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosted_checkout_page_pays_and_redirects_to_the_success_url_with_the_session_id() {
    let (sim, client) = start();
    let customer = customer(&client, "browser@example.com").await;
    let session = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Setup)
        .customer(customer.as_str())
        .currency(Currency::USD)
        .success_url("https://app.example.com/ok?session={CHECKOUT_SESSION_ID}")
        .send(&client)
        .await
        .unwrap();
    let url = session.url.unwrap();
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = browser.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\">"));

    let paid = browser.post(&url).send().await.unwrap();
    assert_eq!(paid.status(), 303);
    let location = paid.headers().get("location").unwrap().to_str().unwrap().to_owned();
    assert_eq!(location, format!("https://app.example.com/ok?session={}", session.id));
    let done = RetrieveCheckoutSession::new(session.id.as_str()).send(&client).await.unwrap();
    assert_eq!(done.status, Some(CheckoutSessionStatus::Complete));
    assert!(done.url.is_none());
    assert_eq!(browser.get(&url).send().await.unwrap().status(), 404, "a completed session's page is gone");
    assert_eq!(sim.payment_methods().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_are_found_by_lookup_key_and_meters_by_status() {
    use stripe_product::price::ListPrice;
    let (_sim, client) = start();
    let (meter, _) = metered_catalog(&client).await;
    let product = CreateProduct::new("GPU hours").send(&client).await.unwrap();
    let mut recurring = CreatePriceRecurring::new(CreatePriceRecurringInterval::Month);
    recurring.usage_type = Some(CreatePriceRecurringUsageType::Metered);
    recurring.meter = Some(meter.clone());
    let keyed = CreatePrice::new(Currency::USD)
        .product(product.id.as_str())
        .recurring(recurring)
        .unit_amount_decimal("350")
        .lookup_key("gpu_hour_v1")
        .send(&client)
        .await
        .unwrap();
    let found = ListPrice::new().lookup_keys(vec!["gpu_hour_v1".to_owned()]).active(true).send(&client).await.unwrap();
    assert_eq!(found.data.iter().map(|p| p.id.to_string()).collect::<Vec<_>>(), vec![keyed.id.to_string()]);
    assert_eq!(found.data[0].lookup_key.as_deref(), Some("gpu_hour_v1"));
    let none = ListPrice::new().lookup_keys(vec!["cpu_hour_v1".to_owned()]).send(&client).await.unwrap();
    assert!(none.data.is_empty());
    assert_eq!(ListPrice::new().send(&client).await.unwrap().data.len(), 4, "no filter: every price");
    let eleven: Vec<String> = (0..11).map(|i| format!("k{i}")).collect();
    let (status, _) = api_error(ListPrice::new().lookup_keys(eleven).send(&client).await);
    assert_eq!(status, 400, "at most 10 lookup keys");

    let active =
        ListBillingMeter::new().status(stripe_billing::BillingMeterStatus::Active).send(&client).await.unwrap();
    assert_eq!(active.data.len(), 1);
    let inactive =
        ListBillingMeter::new().status(stripe_billing::BillingMeterStatus::Inactive).send(&client).await.unwrap();
    assert!(inactive.data.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_429s_and_5xxs_change_nothing_and_then_requests_succeed() {
    let (sim, client) = start();
    sim.fail_next(2, 429);
    sim.fail_next(1, 503);
    let key = || RequestStrategy::Idempotent(IdempotencyKey::new("hb-customer-evt-1").unwrap());
    let create = || CreateCustomer::new().email("ada@example.com").customize().request_strategy(key());
    let (status, error) = api_error(create().send(&client).await);
    assert_eq!((status, error.code), (429, Some(ApiErrorsCode::RateLimit)));
    assert_eq!(api_error(create().send(&client).await).0, 429);
    let (status, error) = api_error(create().send(&client).await);
    assert_eq!((status, error.type_), (503, ApiErrorsType::ApiError));
    assert_eq!(sim.failures_left(), 0);
    assert!(sim.customers().is_empty(), "a failed request changes nothing");
    let first = create().send(&client).await.unwrap();
    let again = create().send(&client).await.unwrap();
    assert_eq!(first.id, again.id, "the key was not spent by the failures");
    assert_eq!(sim.customers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_delivery_lets_a_slow_endpoint_answer_hold_up_only_its_own_event() {
    // An endpoint that takes a second to answer each request and counts arrivals.
    let arrived = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&arrived);
    let served = Served::start(
        move |cfg: &mut web::ServiceConfig| {
            let counter = Arc::clone(&counter);
            cfg.route(
                "/slow",
                web::post().to(move || {
                    let counter = Arc::clone(&counter);
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        HttpResponse::Ok().finish()
                    }
                }),
            );
        },
        None,
    )
    .unwrap();
    let (sim, client) = start();
    sim.add_webhook_endpoint(&format!("{}/slow", served.url()), "whsec_slow");
    let count_after = |faults: WebhookFaults| {
        let (sim, client, arrived) = (&sim, &client, Arc::clone(&arrived));
        async move {
            sim.set_webhook_faults(faults);
            arrived.store(0, Ordering::SeqCst);
            for i in 0..6 {
                customer(client, &format!("slow{i}@example.com")).await;
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            arrived.load(Ordering::SeqCst)
        }
    };
    // One at a time: only the first request has arrived after 600 ms.
    assert_eq!(count_after(WebhookFaults::default()).await, 1);
    // Wait out the sequential backlog (6 s from the first) before the concurrent round.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(count_after(WebhookFaults { concurrent: true, ..WebhookFaults::default() }).await, 6);
}

// ---- Usage-based billing on the calendar clock ----

/// Unix seconds of a UTC time.
fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> i64 {
    chrono::Utc.with_ymd_and_hms(year, month, day, hour, minute, 0).unwrap().timestamp()
}

/// A simulator (no rate limit) on a clock standing still at `at`, and that clock.
fn start_at(at: i64) -> (StripeSim, Client, Arc<SimClock>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Arc::new(SimClock::new(at));
    let config = StripeConfig { rate_limit: None, ..StripeConfig::default() };
    let sim = StripeSim::start_with_clock(config, Arc::clone(&clock)).unwrap();
    let client = stripe::ClientBuilder::new(sim.secret_key()).url(format!("{}/", sim.url())).build().unwrap();
    (sim, client, clock)
}

/// A sum meter on `event_name` and a monthly metered price on it at `unit_amount_decimal`.
async fn meter_and_price(client: &Client, event_name: &str, unit_amount_decimal: &str) -> (String, String) {
    let meter = CreateBillingMeter::new(
        CreateBillingMeterDefaultAggregation::new(CreateBillingMeterDefaultAggregationFormula::Sum),
        event_name,
        event_name,
    )
    .send(client)
    .await
    .unwrap();
    let product = CreateProduct::new(format!("{event_name} usage")).send(client).await.unwrap();
    let price = metered_price(client, meter.id.as_str(), product.id.as_str(), unit_amount_decimal).await;
    (meter.id.to_string(), price.id.to_string())
}

/// A monthly metered price of `product` on `meter` at `unit_amount_decimal`.
async fn metered_price(
    client: &Client,
    meter: &str,
    product: &str,
    unit_amount_decimal: &str,
) -> stripe_product::Price {
    let mut recurring = CreatePriceRecurring::new(CreatePriceRecurringInterval::Month);
    recurring.usage_type = Some(CreatePriceRecurringUsageType::Metered);
    recurring.meter = Some(meter.to_owned());
    CreatePrice::new(Currency::USD)
        .product(product)
        .recurring(recurring)
        .unit_amount_decimal(unit_amount_decimal)
        .send(client)
        .await
        .unwrap()
}

/// A customer whose default payment method is `card` (a Stripe test card name).
async fn customer_paying_with(client: &Client, email: &str, card: &str) -> (String, String) {
    let customer = customer(client, email).await;
    let pm = AttachPaymentMethod::new(card).customer(customer.as_str()).send(client).await.unwrap().id.to_string();
    let mut settings = UpdateCustomerInvoiceSettings::new();
    settings.default_payment_method = Some(pm.clone());
    UpdateCustomer::new(customer.as_str()).invoice_settings(settings).send(client).await.unwrap();
    (customer, pm)
}

/// Reports `value` for `customer` at `timestamp`.
async fn report(client: &Client, event_name: &str, customer: &str, value: &str, timestamp: i64, identifier: &str) {
    let payload =
        HashMap::from([("stripe_customer_id".to_owned(), customer.to_owned()), ("value".to_owned(), value.to_owned())]);
    CreateBillingMeterEvent::new(event_name, payload)
        .identifier(identifier)
        .timestamp(timestamp)
        .send(client)
        .await
        .unwrap_or_else(|e| panic!("reporting {identifier}: {e:?}"));
}

/// A subscription of `customer` to `prices`, anchored at `anchor` without prorations.
async fn subscribe(client: &Client, customer: &str, prices: &[String], anchor: i64) -> stripe_billing::Subscription {
    CreateSubscription::new()
        .customer(customer)
        .items(subscription_items(prices))
        .billing_cycle_anchor(anchor)
        .proration_behavior(CreateSubscriptionProrationBehavior::None)
        .send(client)
        .await
        .unwrap()
}

/// The types of the events emitted since the `from`-th.
fn types_since(sim: &StripeSim, from: usize) -> Vec<String> {
    sim.events()[from..].iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

/// `(amount, quantity_decimal)` of each line, in order.
fn line_amounts(invoice: &stripe_billing::Invoice) -> Vec<(i64, Option<String>)> {
    invoice.lines.data.iter().map(|l| (l.amount, l.quantity_decimal.clone())).collect()
}

/// A raw API request (for what the client does not send, or to see the exact answer).
async fn raw(sim: &StripeSim, method: reqwest::Method, path_and_query: &str, form: &str) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .request(method, format!("{}{path_and_query}", sim.url()))
        .bearer_auth(sim.secret_key())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_runs_on_the_worlds_clock_and_advance_clock_moves_that_clock() {
    let t0 = utc(2027, 1, 15, 10, 0);
    let (sim, _client, clock) = start_at(t0);
    assert_eq!(sim.now(), t0);
    clock.advance(3600);
    assert_eq!(sim.now(), t0 + 3600, "moving the shared clock moves Stripe's");
    sim.advance_clock(60);
    assert_eq!(clock.now(), t0 + 3660, "advance_clock moves the shared clock");
    sim.advance_clock(-600);
    assert_eq!(sim.now(), t0 + 3660, "a clock never goes back");
    assert!(Arc::ptr_eq(&sim.clock(), &clock));

    // The World hands Stripe its own clock.
    let world = hopsbridge_sandbox::world::World::start(&hopsbridge_sandbox::world::WorldConfig {
        clusters: 0,
        ..hopsbridge_sandbox::world::WorldConfig::default()
    })
    .unwrap();
    assert!(Arc::ptr_eq(&world.stripe.clock(), &world.clock));
    world.advance(Duration::from_secs(2 * 86_400));
    assert!((world.stripe.now() - world.clock.now()).abs() <= 1);
    assert!(world.stripe.now() >= chrono::Utc::now().timestamp() + 2 * 86_400 - 5);

    // A simulator started alone runs on its own clock at real time.
    let (alone, _) = start();
    assert!((alone.now() - chrono::Utc::now().timestamp()).abs() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_billing_cycle_anchor_sets_the_periods_and_without_prorations_makes_no_first_invoice() {
    let t0 = utc(2027, 1, 15, 10, 0);
    let (sim, client, clock) = start_at(t0);
    let (customer, _) = customer_paying_with(&client, "anchor@example.com", "pm_card_visa").await;
    let (_, price) = meter_and_price(&client, "anchor_cpu", "1").await;
    let feb1 = utc(2027, 2, 1, 0, 0);

    for (anchor, why) in [(t0 - 60, "in the past"), (utc(2027, 2, 15, 10, 1), "beyond the next natural billing date")] {
        let (status, error) = api_error(
            CreateSubscription::new()
                .customer(customer.as_str())
                .items(subscription_items(std::slice::from_ref(&price)))
                .billing_cycle_anchor(anchor)
                .send(&client)
                .await,
        );
        assert_eq!((status, error.param.as_deref()), (400, Some("billing_cycle_anchor")), "{why}");
    }

    let subscription = subscribe(&client, &customer, std::slice::from_ref(&price), feb1).await;
    assert_eq!(subscription.billing_cycle_anchor, feb1);
    let item = &subscription.items.data[0];
    assert_eq!((item.current_period_start, item.current_period_end), (t0, feb1), "a first period up to the anchor");
    assert!(subscription.latest_invoice.is_none(), "no invoice for the free time up to the anchor");
    assert!(sim.invoices().is_empty());

    // With prorations (the default) there is a first invoice, of nothing for a metered price.
    let prorated = CreateSubscription::new()
        .customer(customer.as_str())
        .items(subscription_items(std::slice::from_ref(&price)))
        .billing_cycle_anchor(feb1)
        .send(&client)
        .await
        .unwrap();
    assert!(prorated.latest_invoice.is_some());
    assert_eq!(sim.invoices().len(), 1);

    // Periods run from the anchor, a month at a time.
    clock.set(feb1);
    sim.run_due();
    let fetched = RetrieveSubscription::new(subscription.id.as_str()).send(&client).await.unwrap();
    let item = &fetched.items.data[0];
    assert_eq!((item.current_period_start, item.current_period_end), (feb1, utc(2027, 3, 1, 0, 0)));
    let invoices = ListInvoice::new().subscription(subscription.id.as_str()).send(&client).await.unwrap();
    assert_eq!(invoices.data.len(), 1);
    assert_eq!((invoices.data[0].period_start, invoices.data[0].period_end), (t0, feb1));
    clock.set(utc(2027, 3, 1, 0, 0));
    let fetched = RetrieveSubscription::new(subscription.id.as_str()).send(&client).await.unwrap();
    assert_eq!(fetched.items.data[0].current_period_end, utc(2027, 4, 1, 0, 0));

    // Without an anchor a subscription started on the 31st ends its periods on the month's
    // last day when the month is short, and on the 31st again after.
    clock.set(utc(2027, 3, 31, 10, 0));
    let late = CreateSubscription::new()
        .customer(customer.as_str())
        .items(subscription_items(std::slice::from_ref(&price)))
        .send(&client)
        .await
        .unwrap();
    assert_eq!(late.items.data[0].current_period_end, utc(2027, 4, 30, 10, 0));
    clock.set(utc(2027, 4, 30, 10, 0));
    let late = RetrieveSubscription::new(late.id.as_str()).send(&client).await.unwrap();
    assert_eq!(late.items.data[0].current_period_end, utc(2027, 5, 31, 10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_period_end_invoice_is_usage_times_the_price_rounded_half_up_once_per_line() {
    let t0 = utc(2027, 1, 15, 10, 0);
    let (sim, client, clock) = start_at(t0);
    let (customer, _) = customer_paying_with(&client, "money@example.com", "pm_card_visa").await;
    let (_, cpu) = meter_and_price(&client, "hb_cpu", "0.35").await;
    let (_, gpu) = meter_and_price(&client, "hb_gpu", "3.5").await;
    let (_, mem) = meter_and_price(&client, "hb_mem", "0.25").await;
    let (feb1, mar1) = (utc(2027, 2, 1, 0, 0), utc(2027, 3, 1, 0, 0));
    // Usage before the subscription began is never billed.
    report(&client, "hb_cpu", &customer, "100", t0 - 3600, "before").await;
    let events_before = sim.events().len();
    let subscription = subscribe(&client, &customer, &[cpu.clone(), gpu.clone(), mem.clone()], feb1).await;

    // Reports arrive over the month, each within Stripe's window of the clock.
    let at = |day: u32| utc(2027, 1, day, 0, 0);
    for (day, event, value, id) in [
        (16, "hb_cpu", "1.5", "cpu-16"),
        (17, "hb_cpu", "100", "cpu-oops"),
        (18, "hb_gpu", "12.345678901", "gpu-18"),
        (20, "hb_cpu", "1.5", "cpu-20"),
        (25, "hb_mem", "10", "mem-25"),
        (31, "hb_cpu", "1.5", "cpu-31"),
    ] {
        clock.set(at(day) + 6 * 3600);
        report(&client, event, &customer, value, at(day), id).await;
        if id == "cpu-oops" {
            // A report cancelled within 24 hours counts nowhere.
            clock.set(at(day) + 20 * 3600);
            let mut cancel = CreateBillingMeterEventAdjustmentCancel::new();
            cancel.identifier = Some(id.to_owned());
            CreateBillingMeterEventAdjustment::new("hb_cpu", BillingMeterEventAdjustmentType::Cancel)
                .cancel(cancel)
                .send(&client)
                .await
                .unwrap();
        }
    }

    // The period ends: a draft with what was received so far.
    clock.set(feb1);
    sim.run_due();
    assert_eq!(
        types_since(&sim, events_before),
        ["customer.subscription.created", "invoice.created", "customer.subscription.updated"]
    );
    let draft = sim.invoices()[0].clone();
    assert_eq!(draft["status"], "draft");
    assert_eq!(draft["created"], feb1);
    assert_eq!((draft["period_start"].as_i64(), draft["period_end"].as_i64()), (Some(t0), Some(feb1)));
    assert_eq!(draft["amount_due"], 2 + 43 + 3);

    // Within the hour: the last day's late report counts; a report for the next period does not.
    clock.set(feb1 + 600);
    report(&client, "hb_gpu", &customer, "0.1", at(31), "gpu-31-late").await;
    report(&client, "hb_mem", &customer, "4", feb1, "mem-feb-1").await;
    clock.set(feb1 + 3600);
    sim.run_due();
    let invoice = RetrieveInvoice::new(draft["id"].as_str().unwrap()).send(&client).await.unwrap();
    // By hand, each line rounded half up once (never each report):
    //   cpu 1.5 + 1.5 + 1.5 = 4.5 units × 0.35 = 1.575 → 2 (per report it would be 1 + 1 + 1 = 3)
    //   gpu 12.345678901 + 0.1 = 12.445678901 units × 3.5 = 43.5598761535 → 44
    //   mem 10 units × 0.25 = 2.5 → 3 (half up, not to even)
    assert_eq!(
        line_amounts(&invoice),
        [(2, Some("4.5".to_owned())), (44, Some("12.445678901".to_owned())), (3, Some("10".to_owned()))]
    );
    assert_eq!((invoice.amount_due, invoice.amount_paid), (49, 49));
    assert_eq!(invoice.status, Some(InvoiceStatus::Paid));
    assert_eq!(invoice.billing_reason, Some(stripe_billing::InvoiceBillingReason::SubscriptionCycle));
    assert_eq!(invoice.lines.data[0].quantity, Some(4), "the integer quantity is truncated");
    let line = &invoice.lines.data[1];
    assert_eq!((line.period.start, line.period.end), (t0, feb1));
    let detail = line.parent.as_ref().unwrap().subscription_item_details.as_ref().unwrap();
    assert_eq!(detail.subscription_item, subscription.items.data[1].id.as_str());
    assert_eq!(
        types_since(&sim, events_before)[3..],
        ["invoice.finalized", "invoice.paid", "invoice.payment_succeeded"]
    );
    let finalized = sim.events().into_iter().find(|e| e["type"] == "invoice.finalized").unwrap();
    assert_eq!(finalized["created"], feb1 + 3600, "finalised an hour after invoice.created");

    // Usage for January reported after its invoice was finalised is on no invoice.
    clock.set(feb1 + 2 * 3600);
    report(&client, "hb_mem", &customer, "4", at(31) + 43_200, "mem-31-too-late").await;
    let paid = RetrieveInvoice::new(draft["id"].as_str().unwrap()).send(&client).await.unwrap();
    assert_eq!(paid.amount_due, 49);

    // The open period's preview: February's usage so far (4 × 0.25 = 1).
    let preview = CreatePreviewInvoice::new().subscription(subscription.id.as_str()).send(&client).await.unwrap();
    assert_eq!((preview.period_start, preview.period_end), (feb1, mar1));
    assert_eq!(
        line_amounts(&preview),
        [(0, Some("0".to_owned())), (0, Some("0".to_owned())), (1, Some("4".to_owned()))]
    );
    assert_eq!(preview.amount_due, 1);
    let by_customer = CreatePreviewInvoice::new().customer(customer.as_str()).send(&client).await.unwrap();
    assert_eq!(by_customer.amount_due, 1);
    let (status, _) = raw(&sim, reqwest::Method::GET, &format!("/v1/invoices/upcoming?customer={customer}"), "").await;
    assert_eq!(status, 404, "the pinned API version has create_preview, not upcoming");

    // March 1st: February's invoice holds February's usage only.
    clock.set(mar1 + 3600);
    let invoices = ListInvoice::new().subscription(subscription.id.as_str()).send(&client).await.unwrap();
    assert_eq!(invoices.data.len(), 2);
    assert_eq!(invoices.data[0].amount_due, 1);
    assert_eq!(invoices.data[0].status, Some(InvoiceStatus::Paid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_added_and_removed_mid_period_bill_only_the_usage_timestamped_while_they_were_on() {
    let t0 = utc(2027, 1, 15, 10, 0);
    let (sim, client, clock) = start_at(t0);
    let (customer, _) = customer_paying_with(&client, "items@example.com", "pm_card_visa").await;
    let (_, cpu) = meter_and_price(&client, "i_cpu", "1").await;
    let (_, gpu) = meter_and_price(&client, "i_gpu", "3.5").await;
    let (_, mem) = meter_and_price(&client, "i_mem", "1").await;
    let (_, net) = meter_and_price(&client, "i_net", "2").await;
    let feb1 = utc(2027, 2, 1, 0, 0);
    let subscription = subscribe(&client, &customer, std::slice::from_ref(&cpu), feb1).await;
    let id = subscription.id.as_str();

    clock.set(utc(2027, 1, 16, 6, 0));
    report(&client, "i_cpu", &customer, "5", utc(2027, 1, 16, 0, 0), "cpu").await;
    report(&client, "i_gpu", &customer, "7", utc(2027, 1, 16, 0, 0), "gpu-before").await;

    clock.set(utc(2027, 1, 20, 12, 0));
    let added = CreateSubscriptionItem::new(id)
        .price(gpu.as_str())
        .proration_behavior(CreateSubscriptionItemProrationBehavior::None)
        .send(&client)
        .await
        .unwrap();
    assert_eq!(added.created, utc(2027, 1, 20, 12, 0));
    assert_eq!((added.current_period_start, added.current_period_end), (t0, feb1));
    let mem_item = CreateSubscriptionItem::new(id).price(mem.as_str()).send(&client).await.unwrap();
    let net_item = CreateSubscriptionItem::new(id).price(net.as_str()).send(&client).await.unwrap();
    // Timestamped before the item was added: not billed, though received after.
    report(&client, "i_gpu", &customer, "3", utc(2027, 1, 20, 0, 0), "gpu-same-day").await;
    clock.set(utc(2027, 1, 21, 6, 0));
    report(&client, "i_gpu", &customer, "2", utc(2027, 1, 21, 0, 0), "gpu").await;
    report(&client, "i_mem", &customer, "10", utc(2027, 1, 21, 0, 0), "mem").await;
    report(&client, "i_net", &customer, "4", utc(2027, 1, 21, 0, 0), "net").await;

    // What Stripe refuses: the same price twice, a quantity on a metered price.
    let (status, error) = api_error(CreateSubscriptionItem::new(id).price(gpu.as_str()).send(&client).await);
    assert_eq!((status, error.param.as_deref()), (400, Some("price")));
    let (status, _) =
        api_error(CreateSubscriptionItem::new(id).price(cpu.as_str()).quantity(2_u64).send(&client).await);
    assert_eq!(status, 400);
    let listed = ListSubscriptionItem::new(id).send(&client).await.unwrap();
    assert_eq!(listed.data.len(), 4);

    // Removed without prorations: nothing is billed for it. Removed with them (the default):
    // its usage so far is billed on the next invoice.
    clock.set(utc(2027, 1, 23, 0, 0));
    let deleted = DeleteSubscriptionItem::new(mem_item.id.as_str())
        .proration_behavior(DeleteSubscriptionItemProrationBehavior::None)
        .send(&client)
        .await
        .unwrap();
    assert_eq!(deleted.id, mem_item.id);
    DeleteSubscriptionItem::new(net_item.id.as_str()).send(&client).await.unwrap();
    let (status, error) = api_error(RetrieveSubscriptionItem::new(mem_item.id.as_str()).send(&client).await);
    assert_eq!((status, error.code), (404, Some(ApiErrorsCode::ResourceMissing)));
    assert_eq!(RetrieveSubscriptionItem::new(added.id.as_str()).send(&client).await.unwrap().id, added.id);
    let fetched = RetrieveSubscription::new(id).send(&client).await.unwrap();
    assert_eq!(fetched.items.data.len(), 2);
    // Usage reported later for a removed item's time is not billed either.
    report(&client, "i_net", &customer, "100", utc(2027, 1, 22, 0, 0), "net-late").await;

    clock.set(feb1 + 3600);
    let invoices = ListInvoice::new().subscription(id).send(&client).await.unwrap();
    let invoice = &invoices.data[0];
    // cpu 5 × 1 = 5; gpu 2 × 3.5 = 7; net (removed, prorated): 4 × 2 = 8; mem: nothing.
    assert_eq!(
        line_amounts(invoice),
        [(5, Some("5".to_owned())), (7, Some("2".to_owned())), (8, Some("4".to_owned()))]
    );
    assert_eq!(invoice.amount_paid, 20);
    let pending = invoice.lines.data[2].parent.as_ref().unwrap();
    assert!(pending.invoice_item_details.is_some(), "billed through an invoice item");
    assert_eq!(invoice.lines.data[1].period.start, utc(2027, 1, 20, 12, 0), "from when the item was added");

    // A subscription keeps at least one item.
    let single = subscribe(&client, &customer, std::slice::from_ref(&cpu), utc(2027, 2, 15, 0, 0)).await;
    let (status, _) = api_error(DeleteSubscriptionItem::new(single.items.data[0].id.as_str()).send(&client).await);
    assert_eq!(status, 400);
    let (status, _) = api_error(DeleteSubscriptionItem::new("si_missing").send(&client).await);
    assert_eq!(status, 404);
    assert_eq!(sim.subscriptions().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_with_invoice_now_bills_the_period_so_far_and_without_it_discards_the_usage() {
    let t0 = utc(2027, 1, 15, 10, 0);
    let (sim, client, clock) = start_at(t0);
    let (customer, _) = customer_paying_with(&client, "leaving@example.com", "pm_card_visa").await;
    let (_, cpu) = meter_and_price(&client, "c_cpu", "0.35").await;
    let feb1 = utc(2027, 2, 1, 0, 0);
    let leaving = subscribe(&client, &customer, std::slice::from_ref(&cpu), feb1).await;
    let (other, _) = customer_paying_with(&client, "quiet@example.com", "pm_card_visa").await;
    let quiet = subscribe(&client, &other, std::slice::from_ref(&cpu), feb1).await;

    clock.set(utc(2027, 1, 20, 6, 0));
    report(&client, "c_cpu", &customer, "12.345678901", utc(2027, 1, 16, 0, 0), "a-16").await;
    report(&client, "c_cpu", &customer, "1", utc(2027, 1, 20, 0, 0), "a-20").await;
    report(&client, "c_cpu", &other, "50", utc(2027, 1, 16, 0, 0), "b-16").await;

    let cancelled =
        CancelSubscription::new(leaving.id.as_str()).invoice_now(true).prorate(false).send(&client).await.unwrap();
    assert_eq!(cancelled.status, SubscriptionStatus::Canceled);
    let final_id = cancelled.latest_invoice.as_ref().unwrap().id().as_ref().unwrap().to_string();
    let draft = RetrieveInvoice::new(final_id.as_str()).send(&client).await.unwrap();
    assert_eq!(draft.status, Some(InvoiceStatus::Draft));
    assert_eq!((draft.period_start, draft.period_end), (t0, utc(2027, 1, 20, 6, 0)));
    // (12.345678901 + 1) × 0.35 = 4.67098761535 → 5
    assert_eq!(line_amounts(&draft), [(5, Some("13.345678901".to_owned()))]);

    let plain = CancelSubscription::new(quiet.id.as_str()).send(&client).await.unwrap();
    assert!(plain.latest_invoice.is_none(), "without invoice_now the usage is discarded");

    clock.set(utc(2027, 1, 20, 7, 0));
    let paid = RetrieveInvoice::new(final_id.as_str()).send(&client).await.unwrap();
    assert_eq!((paid.status, paid.amount_paid), (Some(InvoiceStatus::Paid), 5));
    // Cancelled subscriptions make no more invoices.
    clock.set(utc(2027, 3, 2, 0, 0));
    assert_eq!(sim.invoices().len(), 1);
    let (status, _) = api_error(CancelSubscription::new(leaving.id.as_str()).send(&client).await);
    assert_eq!(status, 400);
    let (status, error) = api_error(CreatePreviewInvoice::new().subscription(leaving.id.as_str()).send(&client).await);
    assert_eq!((status, error.code), (400, Some(ApiErrorsCode::InvoiceUpcomingNone)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_whose_charges_fail_leaves_the_invoice_open_and_the_subscription_past_due() {
    let t0 = utc(2027, 1, 15, 10, 0);
    let (sim, client, clock) = start_at(t0);
    let (customer, card) = customer_paying_with(&client, "broke@example.com", "pm_card_chargeCustomerFail").await;
    let (_, gpu) = meter_and_price(&client, "f_gpu", "350").await;
    let feb1 = utc(2027, 2, 1, 0, 0);
    let subscription = subscribe(&client, &customer, std::slice::from_ref(&gpu), feb1).await;
    clock.set(utc(2027, 1, 20, 0, 0));
    report(&client, "f_gpu", &customer, "0.75", utc(2027, 1, 19, 0, 0), "gpu").await;
    let from = sim.events().len();
    clock.set(feb1 + 3600);
    sim.run_due();
    assert_eq!(
        types_since(&sim, from),
        [
            "invoice.created",
            "customer.subscription.updated",
            "invoice.finalized",
            "invoice.payment_failed",
            "customer.subscription.updated"
        ]
    );
    let invoice = &ListInvoice::new().customer(customer.as_str()).send(&client).await.unwrap().data[0];
    // 0.75 × 350 = 262.5 → 263
    assert_eq!(
        (invoice.status.clone(), invoice.amount_remaining, invoice.amount_paid),
        (Some(InvoiceStatus::Open), 263, 0)
    );
    let fetched = RetrieveSubscription::new(subscription.id.as_str()).send(&client).await.unwrap();
    assert_eq!(fetched.status, SubscriptionStatus::PastDue);

    // Once charges go through, the next period's invoice is paid and the subscription is active.
    sim.decline_charges(&card, false);
    clock.set(utc(2027, 3, 1, 1, 0));
    let fetched = RetrieveSubscription::new(subscription.id.as_str()).send(&client).await.unwrap();
    assert_eq!(fetched.status, SubscriptionStatus::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_events_are_validated_on_the_clock_and_a_repeated_identifier_is_refused_not_counted() {
    let t0 = utc(2027, 1, 15, 10, 0);
    let (sim, client, clock) = start_at(t0);
    let customer = customer(&client, "strict@example.com").await;
    let (meter, _) = meter_and_price(&client, "v_cpu", "1").await;
    let send = |value: &str, timestamp: i64, identifier: &str| {
        let payload = HashMap::from([
            ("stripe_customer_id".to_owned(), customer.clone()),
            ("value".to_owned(), value.to_owned()),
        ]);
        let request = CreateBillingMeterEvent::new("v_cpu", payload).identifier(identifier).timestamp(timestamp);
        let client = client.clone();
        async move { request.send(&client).await }
    };
    send("999999.999999999", t0 - 35 * DAY, "oldest").await.unwrap();
    send("1", t0 + 300, "ahead").await.unwrap();
    for (value, timestamp, identifier, param) in [
        ("1", t0 - 35 * DAY - 1, "too-old", "timestamp"),
        ("1", t0 + 301, "too-new", "timestamp"),
        ("1000000.000000001", t0, "sixteen-digits", "payload[value]"),
        ("-1", t0, "negative", "payload[value]"),
        ("1e3", t0, "exponent", "payload[value]"),
        ("1", t0, &"x".repeat(101), "identifier"),
    ] {
        let (status, error) = api_error(send(value, timestamp, identifier).await);
        assert_eq!((status, error.param.as_deref()), (400, Some(param)), "{identifier}");
    }
    let (status, error) = api_error(send("2", t0, "oldest").await);
    assert_eq!((status, error.param.as_deref()), (400, Some("identifier")));
    assert_eq!(error.message.as_deref(), Some("An event already exists with identifier oldest."));
    let (status, error) = api_error(
        CreateBillingMeterEvent::new("v_unknown", HashMap::from([("stripe_customer_id".to_owned(), customer.clone())]))
            .send(&client)
            .await,
    );
    assert_eq!((status, error.param.as_deref()), (400, Some("event_name")));
    let (status, error) = api_error(
        CreateBillingMeterEvent::new("v_cpu", HashMap::from([("stripe_customer_id".to_owned(), customer.clone())]))
            .send(&client)
            .await,
    );
    assert_eq!((status, error.code), (400, Some(ApiErrorsCode::ParameterMissing)));
    assert_eq!(sim.meter_events().len(), 2, "refusals count nothing");

    // 24 hours of the clock after it was received, the identifier is free again.
    clock.advance(DAY - 1);
    assert_eq!(api_error(send("2", t0, "oldest").await).0, 400, "still within 24 hours");
    clock.advance(1);
    send("2", t0, "oldest").await.unwrap();
    let summary = ListIdBillingMeterEventSummary::new(
        meter.as_str(),
        customer.as_str(),
        t0 + 3600 - (t0 % 60),
        t0 - 36 * DAY - (t0 % 60),
    )
    .send(&client)
    .await
    .unwrap();
    assert_eq!(summary.data.len(), 1);
    // 999999.999999999 + 1 + 2, refusals not counted
    assert!((summary.data[0].aggregated_value - 1_000_002.999_999_999).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_summaries_group_by_utc_day_leave_out_cancelled_events_and_adjustments_expire_after_24_hours() {
    let t0 = utc(2027, 1, 19, 6, 0);
    let (_sim, client, clock) = start_at(t0);
    let customer = customer(&client, "summary@example.com").await;
    let (meter, _) = meter_and_price(&client, "s_cpu", "1").await;
    report(&client, "s_cpu", &customer, "1.5", utc(2027, 1, 16, 0, 0), "16a").await;
    report(&client, "s_cpu", &customer, "2.25", utc(2027, 1, 16, 23, 59), "16b").await;
    report(&client, "s_cpu", &customer, "0.25", utc(2027, 1, 18, 12, 0), "18a").await;
    report(&client, "s_cpu", &customer, "9", utc(2027, 1, 18, 13, 0), "18-oops").await;
    let cancel = |identifier: &str| {
        let mut cancel = CreateBillingMeterEventAdjustmentCancel::new();
        cancel.identifier = Some(identifier.to_owned());
        let request =
            CreateBillingMeterEventAdjustment::new("s_cpu", BillingMeterEventAdjustmentType::Cancel).cancel(cancel);
        let client = client.clone();
        async move { request.send(&client).await }
    };
    let adjustment = cancel("18-oops").await.unwrap();
    assert_eq!(adjustment.cancel.unwrap().identifier.as_deref(), Some("18-oops"));
    let (status, _) = api_error(cancel("18-oops").await);
    assert_eq!(status, 400, "cancelled once");
    let (status, _) = api_error(cancel("never-sent").await);
    assert_eq!(status, 400);

    let days = |start: i64, end: i64| {
        ListIdBillingMeterEventSummary::new(meter.as_str(), customer.as_str(), end, start)
            .value_grouping_window(ListIdBillingMeterEventSummaryValueGroupingWindow::Day)
    };
    let (jan16, jan19) = (utc(2027, 1, 16, 0, 0), utc(2027, 1, 19, 0, 0));
    let summaries = days(jan16, jan19).send(&client).await.unwrap();
    let got: Vec<(i64, i64, f64)> =
        summaries.data.iter().map(|s| (s.start_time, s.end_time, s.aggregated_value)).collect();
    assert_eq!(
        got,
        [(utc(2027, 1, 18, 0, 0), jan19, 0.25), (jan16, utc(2027, 1, 17, 0, 0), 3.75)],
        "newest first, no empty day"
    );
    let first = days(jan16, jan19).limit(1).send(&client).await.unwrap();
    assert!(first.has_more);
    let next = days(jan16, jan19).limit(1).starting_after(first.data[0].id.as_str()).send(&client).await.unwrap();
    assert_eq!(next.data[0].start_time, jan16);
    assert!(!next.has_more);

    for (start, end, param) in [(jan16 + 3600, jan19, "start_time"), (jan16, jan19 - 60, "end_time")] {
        let (status, error) = api_error(days(start, end).send(&client).await);
        assert_eq!((status, error.param.as_deref()), (400, Some(param)), "day grouping needs UTC day boundaries");
    }
    let (status, error) = api_error(
        ListIdBillingMeterEventSummary::new(meter.as_str(), customer.as_str(), jan19, jan16 + 30).send(&client).await,
    );
    assert_eq!((status, error.param.as_deref()), (400, Some("start_time")), "minute boundaries always");
    let hours = ListIdBillingMeterEventSummary::new(meter.as_str(), customer.as_str(), utc(2027, 1, 17, 0, 0), jan16)
        .value_grouping_window(ListIdBillingMeterEventSummaryValueGroupingWindow::Hour)
        .send(&client)
        .await
        .unwrap();
    assert_eq!(hours.data.iter().map(|s| s.start_time).collect::<Vec<_>>(), [utc(2027, 1, 16, 23, 0), jan16]);
    let whole = ListIdBillingMeterEventSummary::new(meter.as_str(), customer.as_str(), jan19 + 60, jan16 + 60)
        .send(&client)
        .await
        .unwrap();
    assert_eq!(whole.data.len(), 1, "no grouping: one summary");
    assert!((whole.data[0].aggregated_value - 2.5).abs() < 1e-9);

    // 24 hours after it was received, an event can no longer be cancelled.
    clock.advance(DAY);
    let (status, error) = api_error(cancel("16a").await);
    assert_eq!((status, error.param.as_deref()), (400, Some("cancel[identifier]")));
    let (status, error) = api_error(
        CreateBillingMeterEventAdjustment::new("s_cpu", BillingMeterEventAdjustmentType::Cancel).send(&client).await,
    );
    assert_eq!((status, error.code), (400, Some(ApiErrorsCode::ParameterMissing)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_allows_100_requests_and_1000_meter_events_a_second_and_limits_can_be_lowered() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = StripeSim::start(StripeConfig::live()).unwrap();
    assert!(sim.livemode());
    let client = stripe::ClientBuilder::new(sim.secret_key()).url(format!("{}/", sim.url())).build().unwrap();
    let customer = customer(&client, "live@example.com").await;
    let fetched = RetrieveCustomer::new(customer.as_str()).send(&client).await.unwrap();
    let RetrieveCustomerReturned::Customer(fetched) = fetched else { panic!("a live customer") };
    assert!(fetched.livemode);
    meter_and_price(&client, "l_cpu", "1").await;
    let event = |i: usize| {
        let payload =
            HashMap::from([("stripe_customer_id".to_owned(), customer.clone()), ("value".to_owned(), "1".to_owned())]);
        let request = CreateBillingMeterEvent::new("l_cpu", payload).identifier(format!("live-{i}"));
        let client = client.clone();
        async move { request.send(&client).await }
    };
    // Meter events have a budget of their own, far above the general one.
    let mut refused = 0;
    for i in 0..150 {
        if event(i).await.is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 0, "150 meter events in about a second are within 1,000 a second");

    sim.set_rate_limit(Some(3));
    sim.set_meter_event_rate_limit(Some(5));
    let mut limited = 0;
    for i in 150..170 {
        match event(i).await {
            Ok(_) => {}
            Err(StripeError::Stripe(error, 429)) => {
                assert_eq!(error.code, Some(ApiErrorsCode::RateLimit));
                assert_eq!(error.type_, ApiErrorsType::InvalidRequestError);
                limited += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited >= 10, "at most 5 a second pass: {limited} limited");
    // Reads have their own budget, and meter events spent none of it.
    RetrieveCustomer::new(customer.as_str()).send(&client).await.unwrap();
    // Reads beyond the lowered budget are refused; on a loaded machine a few may straddle a
    // second, so read until one is.
    let (status, body) = {
        let mut last = (200, Value::Null);
        for _ in 0..40 {
            last = raw(&sim, reqwest::Method::GET, "/v1/customers", "").await;
            if last.0 == 429 {
                break;
            }
        }
        last
    };
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limit");

    // Test mode: 25 meter events a second by default.
    let (test_sim, test_client) = start();
    assert!(!test_sim.livemode());
    let test_customer = self::customer(&test_client, "test@example.com").await;
    meter_and_price(&test_client, "t_cpu", "1").await;
    let mut limited = 0;
    for i in 0..60 {
        let payload = HashMap::from([
            ("stripe_customer_id".to_owned(), test_customer.clone()),
            ("value".to_owned(), "1".to_owned()),
        ]);
        if let Err(StripeError::Stripe(_, 429)) =
            CreateBillingMeterEvent::new("t_cpu", payload).identifier(format!("t-{i}")).send(&test_client).await
        {
            limited += 1;
        }
    }
    assert!(limited >= 10, "25 a second in test mode: {limited} limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_checkout_with_price_data_completes_on_the_hosted_page_with_its_metadata() {
    let (sim, client) = start();
    let receiver = Receiver::start(0);
    sim.add_webhook_endpoint_for(&receiver.url(), "whsec_pay", &["checkout.session.completed"]);
    let customer = customer(&client, "buyer@example.com").await;
    let form = |amount: &str| {
        format!(
            "mode=payment&customer={customer}&success_url=https%3A%2F%2Fapp.example.com%2Fok%3Fs%3D%7BCHECKOUT_SESSION_ID%7D\
             &cancel_url=https%3A%2F%2Fapp.example.com%2Fno&client_reference_id=owner-1\
             &line_items[0][quantity]=1&line_items[0][price_data][currency]=usd\
             &line_items[0][price_data][unit_amount]={amount}\
             &line_items[0][price_data][product_data][name]=Hopsbridge+credits\
             &metadata[hopsbridge_user_id]=owner-1&metadata[hopsbridge_purpose]=credits"
        )
    };
    let (status, session) = raw(&sim, reqwest::Method::POST, "/v1/checkout/sessions", &form("2500")).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!((session["amount_total"].as_i64(), session["payment_status"].as_str()), (Some(2500), Some("unpaid")));
    for (amount, why) in [("49", "below Stripe's minimum charge"), ("100000000", "above its maximum")] {
        let (status, _) = raw(&sim, reqwest::Method::POST, "/v1/checkout/sessions", &form(amount)).await;
        assert_eq!(status, 400, "{why}");
    }

    let url = session["url"].as_str().unwrap();
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let paid = browser.post(url).send().await.unwrap();
    assert_eq!(paid.status(), 303);
    let received = receiver.wait_for(1).await;
    let event = Webhook::construct_event(&received[0].body, &received[0].signature, "whsec_pay").unwrap();
    let EventObject::CheckoutSessionCompleted(done) = event.data.object else { panic!("a completed session") };
    assert_eq!(done.mode, CheckoutSessionMode::Payment);
    assert_eq!(done.payment_status, CheckoutSessionPaymentStatus::Paid);
    assert_eq!(done.amount_total, Some(2500));
    assert_eq!(done.client_reference_id.as_deref(), Some("owner-1"));
    let metadata = done.metadata.unwrap();
    assert_eq!(metadata["hopsbridge_purpose"], "credits");
    assert_eq!(metadata["hopsbridge_user_id"], "owner-1");
    let intent = RetrievePaymentIntent::new(done.payment_intent.unwrap().id().as_str()).send(&client).await.unwrap();
    assert_eq!(intent.amount, 2500);
    assert_eq!(intent.customer.unwrap().id().as_str(), customer);
}

/// A sandbox control request with JSON (`body` Some) or none.
async fn control(sim: &StripeSim, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", sim.url())).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_applies_the_nth_matching_request_and_keeps_its_answer_until_released() {
    let (sim, _client) = start();
    let key = sim.secret_key();
    // Arming through the control route: the second customer created is held.
    let arm = serde_json::json!({ "method": "post", "path_prefix": "/v1/customers", "nth": 2 });
    let (status, hold) = control(&sim, &key, reqwest::Method::POST, "/_sandbox/holds", Some(arm.clone())).await;
    assert_eq!((status, hold["status"].as_str()), (200, Some("armed")), "{hold}");
    let id = hold["id"].as_str().unwrap().to_owned();
    let show = format!("/_sandbox/holds/{id}");

    // A refused request is not applied, so it does not count; a read is another method.
    let (status, _) = raw(&sim, reqwest::Method::POST, "/v1/customers", "unknown=1").await;
    assert_eq!(status, 400);
    assert_eq!(raw(&sim, reqwest::Method::GET, "/v1/customers", "").await.0, 200);
    let (status, first) = raw(&sim, reqwest::Method::POST, "/v1/customers", "email=a%40example.com").await;
    assert_eq!(status, 200, "the first match is answered: {first}");
    assert_eq!(control(&sim, &key, reqwest::Method::GET, &show, None).await.1["matches_before"], 0);

    let url = format!("{}/v1/customers", sim.url());
    let held = tokio::spawn({
        let key = key.clone();
        async move {
            let answer = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "held-1")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("email=b%40example.com")
                .send()
                .await
                .unwrap();
            (answer.status().as_u16(), answer.json::<Value>().await.unwrap())
        }
    });
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = control(&sim, &key, reqwest::Method::GET, &show, None).await.1;
        if seen["status"] == "held" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen["status"], "held", "{seen}");
    assert_eq!(
        (seen["held_path"].as_str(), seen["held_idempotency_key"].as_str()),
        (Some("/v1/customers"), Some("held-1"))
    );
    assert_eq!(
        sim.hold_status(&id),
        Some(HoldStatus::Held { path: "/v1/customers".into(), idempotency_key: Some("held-1".into()) })
    );
    // Applied, its answer not out, and other requests served meanwhile.
    assert_eq!(sim.customers().len(), 2, "the held request is applied");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the answer waits for the release");
    assert_eq!(raw(&sim, reqwest::Method::GET, "/v1/customers", "").await.0, 200);
    let (status, third) = raw(&sim, reqwest::Method::POST, "/v1/customers", "email=c%40example.com").await;
    assert_eq!(status, 200, "a hold holds one request: {third}");

    let (status, released) = control(&sim, &key, reqwest::Method::POST, &format!("{show}/release"), None).await;
    assert_eq!((status, released["status"].as_str()), (200, Some("released")));
    let (status, customer) = tokio::time::timeout(Duration::from_secs(10), held).await.unwrap().unwrap();
    assert_eq!((status, customer["email"].as_str()), (200, Some("b@example.com")));
    assert_eq!(sim.customers().len(), 3);

    // An armed hold released holds nothing; the control routes need the key and a hold.
    let other = sim.hold("POST", "/v1/customers", 1);
    sim.release(&other).unwrap();
    assert_eq!(raw(&sim, reqwest::Method::POST, "/v1/customers", "email=d%40example.com").await.0, 200);
    assert_eq!(sim.hold_status(&other), Some(HoldStatus::Released));
    assert_eq!(control(&sim, "sk_test_wrong", reqwest::Method::POST, "/_sandbox/holds", Some(arm)).await.0, 401);
    assert_eq!(control(&sim, &key, reqwest::Method::GET, "/_sandbox/holds/hold_none", None).await.0, 404);
    let bad = serde_json::json!({ "method": "POST", "path_prefix": "v1", "nth": 0 });
    assert_eq!(control(&sim, &key, reqwest::Method::POST, "/_sandbox/holds", Some(bad)).await.0, 400);
    assert!(sim.release("hold_none").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_every_request_with_its_status_until_cleared_and_changes_nothing() {
    let (sim, _client) = start();
    let key = sim.secret_key();
    let outage = serde_json::json!({ "status": 503 });
    assert_eq!(
        control(&sim, "sk_test_wrong", reqwest::Method::PUT, "/_sandbox/outage", Some(outage.clone())).await.0,
        401
    );
    for bad in [serde_json::json!({ "status": 404 }), serde_json::json!({ "status": 200 }), serde_json::json!({})] {
        let (status, body) = control(&sim, &key, reqwest::Method::PUT, "/_sandbox/outage", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(raw(&sim, reqwest::Method::GET, "/v1/customers", "").await.0, 200, "a refused control starts nothing");

    let (status, started) = control(&sim, &key, reqwest::Method::PUT, "/_sandbox/outage", Some(outage)).await;
    assert_eq!((status, started["status"].as_u64()), (200, Some(503)), "{started}");
    // However many requests come, each is answered 503 api_error and creates nothing.
    for i in 0..30 {
        let (status, body) =
            raw(&sim, reqwest::Method::POST, "/v1/customers", &format!("email=c{i}%40example.com")).await;
        assert_eq!((status, body["error"]["type"].as_str()), (503, Some("api_error")), "{body}");
    }
    assert_eq!(sim.failures_left(), 0, "an outage is not a count of failures");

    let (status, _) = control(&sim, &key, reqwest::Method::DELETE, "/_sandbox/outage", None).await;
    assert_eq!(status, 200);
    let (status, listed) = raw(&sim, reqwest::Method::GET, "/v1/customers", "").await;
    assert_eq!((status, listed["data"].as_array().map(Vec::len)), (200, Some(0)), "nothing was created: {listed}");
    sim.set_outage(Some(429));
    assert_eq!(raw(&sim, reqwest::Method::GET, "/v1/customers", "").await.0, 429);
    sim.set_outage(None);
    assert_eq!(raw(&sim, reqwest::Method::GET, "/v1/customers", "").await.0, 200);
}
