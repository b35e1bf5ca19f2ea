//! The owner's billing routes and Stripe's webhooks, against the running service, the real
//! Postgres and NATS and the Stripe sandbox.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use futures::StreamExt as _;
use hopsbridge_contracts::events::{PaymentMethodAddedV1, PaymentMethodRemovedV1};
use hopsbridge_platform::caller::Role;
use hopsbridge_sandbox::stripe::{WebhookFaults, signature_header};
use hopsbridge_testkit::STRIPE_WEBHOOK_SECRET;
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

fn event(kind: &str, created: i64, object: Value, previous: Option<Value>) -> String {
    let mut data = json!({ "object": object });
    if let Some(p) = previous {
        data["previous_attributes"] = p;
    }
    json!({
        "id": format!("evt_{}", Uuid::new_v4().simple()),
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": created,
        "data": data,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
    })
    .to_string()
}

fn card(id: &str, customer: Option<&str>, last4: &str) -> Value {
    json!({
        "id": id, "object": "payment_method", "type": "card", "customer": customer, "created": 1,
        "card": {"brand": "mastercard", "last4": last4, "exp_month": 4, "exp_year": 2031},
    })
}

/// Counts of everything a webhook can change.
async fn footprint(billing: &Billing) -> [i64; 5] {
    [
        count(&billing.db, "processed_stripe_events").await,
        count(&billing.db, "payment_methods").await,
        count(&billing.db, "invoices").await,
        count(&billing.db, "outbox").await,
        count(&billing.db, "accounts WHERE subscription_status IS DISTINCT FROM 'active'").await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_sees_billing_members_and_others_get_403_and_strangers_401() {
    let billing = start().await;
    let (user, _) = billing.new_owner().await;
    for path in ["/api/billing", "/api/billing/payment-method", "/api/billing/portal"] {
        let method = if path == "/api/billing" { Method::GET } else { Method::POST };
        let (status, body) = billing.call(method.clone(), path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {body}");
        for roles in [vec![Role::User, Role::Member], vec![Role::User], vec![Role::User, Role::Admin]] {
            let (status, body) = billing.call(method.clone(), path, Some(&caller(user, &roles))).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (StatusCode::FORBIDDEN, Some("owner_only")),
                "{path} {roles:?}"
            );
        }
    }
    let (status, body) =
        billing.call(Method::GET, "/api/billing", Some(&caller(user, &[Role::User, Role::Owner]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["billing_mode"], "postpaid");
    assert_eq!(body["payment_method"], Value::Null, "no card yet");
    assert_eq!(body["subscription_status"], "active");
    assert_eq!(body["invoices"], json!([]), "no invoice webhooks delivered in this test: {body}");

    // An owner whose account is not opened yet.
    let (status, body) =
        billing.call(Method::GET, "/api/billing", Some(&caller(Uuid::now_v7(), &[Role::User, Role::Owner]))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("billing_account_not_found")));
    let (status, body) =
        billing.call(Method::POST, "/api/billing/payment-method", Some(&caller(Uuid::now_v7(), &[Role::Owner]))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("billing_not_ready")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_card_through_checkout_publishes_payment_method_added_once_and_shows_card_and_invoices() {
    let billing = start().await;
    billing.deliver_webhooks();
    // Stripe delivers every event twice.
    billing.sim.set_webhook_faults(WebhookFaults { duplicate: true, ..WebhookFaults::default() });
    let (user, account) = billing.new_owner().await;
    let owner = caller(user, &[Role::User, Role::Owner]);
    let customer = account.stripe_customer_id.clone().unwrap();

    let (status, session) = billing.call(Method::POST, "/api/billing/payment-method", Some(&owner)).await;
    assert_eq!(status, 200, "{session}");
    let id = session["id"].as_str().unwrap();
    assert!(id.starts_with("cs_"), "{session}");
    assert!(session["url"].as_str().unwrap().starts_with(&billing.sim.url()));
    let stored = stripe_get(&billing.sim, &format!("checkout/sessions/{id}")).await;
    assert_eq!((stored["mode"].as_str(), stored["customer"].as_str()), (Some("setup"), Some(customer.as_str())));
    assert_eq!(stored["success_url"], "https://app.hopsbridge.test/billing?done={CHECKOUT_SESSION_ID}");

    // The customer completes Checkout; Stripe sends signed events to the running service.
    billing.sim.complete_checkout_session(id).unwrap();
    let subject = billing.bus.subjects().event::<PaymentMethodAddedV1>();
    let announced = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        !published(&billing.bus, &subject).await.is_empty()
    })
    .await;
    assert!(announced, "PaymentMethodAddedV1 published");
    // Let every duplicate and every other event land.
    let settled = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        billing
            .sim
            .deliveries()
            .iter()
            .filter(|d| {
                d.event_type.starts_with("payment_method")
                    || d.event_type.starts_with("setup_intent.succeeded")
                    || d.event_type.starts_with("checkout")
            })
            .all(|d| d.succeeded)
    })
    .await;
    let unsettled: Vec<_> = billing
        .sim
        .deliveries()
        .into_iter()
        .filter(|d| !d.succeeded)
        .map(|d| (d.event_type, d.attempts.iter().map(|a| a.status).collect::<Vec<_>>()))
        .collect();
    assert!(settled, "deliveries not answered 2xx: {unsettled:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = published(&billing.bus, &subject).await;
    assert_eq!(messages.len(), 1, "published once");
    let envelope = hopsbridge_contracts::events::Envelope::decode(messages[0].payload.as_ref()).unwrap();
    let added = PaymentMethodAddedV1::decode(envelope.payload.as_slice()).unwrap();
    assert_eq!(
        (added.user_id.as_str(), added.stripe_customer_id.as_str()),
        (user.to_string().as_str(), customer.as_str())
    );

    // The card becomes the customer's default for invoices (in the background, just after).
    let pm = billing.sim.payment_methods()[0]["id"].as_str().unwrap().to_owned();
    let made_default = hopsbridge_testkit::eventually(Duration::from_secs(10), || async {
        let stripe_customer = stripe_get(&billing.sim, &format!("customers/{customer}")).await;
        stripe_customer["invoice_settings"]["default_payment_method"] == pm.as_str()
    })
    .await;
    assert!(made_default, "the card is the invoice default");

    // Invoices: one paid, one failed (which makes the subscription past due). The subscription
    // is anchored at the 1st of next month, so it made no first invoice.
    let subscription = account.stripe_subscription_id.clone().unwrap();
    let paid = billing.sim.create_invoice(&subscription, &[1234, 56, 0, 0, 0], true).unwrap();
    let failed = billing.sim.create_invoice(&subscription, &[700, 0, 3500, 0, 0], false).unwrap();
    let shown = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        let (_, body) = billing.call(Method::GET, "/api/billing", Some(&owner)).await;
        body["invoices"].as_array().is_some_and(|i| i.len() == 2) && body["subscription_status"] == "past_due"
    })
    .await;
    assert!(shown, "invoices and the past-due status arrived");
    let before = footprint(&billing).await;
    let (status, body) = billing.call(Method::GET, "/api/billing", Some(&owner)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["payment_method"],
        json!({"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": billing.sim.payment_methods()[0]["card"]["exp_year"]})
    );
    let invoices = body["invoices"].as_array().unwrap();
    let by_id =
        |inv: &Value| invoices.iter().find(|i| i["hosted_invoice_url"] == inv["hosted_invoice_url"]).cloned().unwrap();
    let p = by_id(&paid);
    assert_eq!(
        (p["status"].as_str(), p["amount_due"].as_i64(), p["currency"].as_str()),
        (Some("paid"), Some(1290), Some("usd"))
    );
    assert_eq!(p["number"], paid["number"]);
    assert_eq!(p["created"], paid["created"]);
    let f = by_id(&failed);
    assert_eq!((f["status"].as_str(), f["amount_due"].as_i64()), (Some("open"), Some(4200)));
    assert!(f["hosted_invoice_url"].as_str().unwrap().starts_with("http"));
    // Reading changed nothing, in Postgres or in Stripe.
    let stripe_events = billing.sim.events().len();
    billing.call(Method::GET, "/api/billing", Some(&owner)).await;
    assert_eq!(footprint(&billing).await, before);
    assert_eq!(billing.sim.events().len(), stripe_events);

    // The billing portal.
    let (status, body) = billing.call(Method::POST, "/api/billing/portal", Some(&owner)).await;
    assert_eq!(status, 200, "{body}");
    let url = body["url"].as_str().unwrap();
    let page = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert!(page.contains(&customer) && page.contains("https://app.hopsbridge.test/billing"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_unsigned_webhooks_get_400_and_change_nothing() {
    let billing = start().await;
    let (_, account) = billing.new_owner().await;
    let customer = account.stripe_customer_id.unwrap();
    let now = chrono::Utc::now().timestamp();
    let body = event("payment_method.attached", now, card("pm_forged", Some(&customer), "0005"), None);
    let before = footprint(&billing).await;

    let cases = [
        (None, "missing_signature"),
        (Some(signature_header(&body, "whsec_somebody_else_entirely", now)), "invalid_signature"),
        // A minute past the 300 s tolerance either way, so a slow test cannot drift back inside
        // it; the exact boundary is covered by the unit tests with a fixed clock.
        (Some(signature_header(&body, STRIPE_WEBHOOK_SECRET, now - 360)), "signature_expired"),
        (Some(signature_header(&body, STRIPE_WEBHOOK_SECRET, now + 360)), "signature_expired"),
        (Some("t=abc,v1=00".to_owned()), "invalid_signature"),
        (Some(format!("t={now}")), "invalid_signature"),
    ];
    for (signature, code) in cases {
        let (status, answer) = billing.webhook_raw(&body, signature.clone()).await;
        assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{signature:?}");
    }
    // A valid signature over a different body.
    let other = body.replace("0005", "0006");
    let (status, answer) = billing.webhook_raw(&other, Some(signature_header(&body, STRIPE_WEBHOOK_SECRET, now))).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_signature")));
    // A signed body that is not an event.
    let (status, answer) = billing.webhook("{\"hello\": 1}").await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));
    // An event type billing does not handle.
    let unsupported = event("customer.updated", now, json!({"id": customer, "object": "customer"}), None);
    let (status, answer) = billing.webhook(&unsupported).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_event_type")));
    assert_eq!(footprint(&billing).await, before, "nothing changed");

    // The same event, properly signed, is applied.
    let (status, _) = billing.webhook(&body).await;
    assert_eq!(status, 200);
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivered_concurrently_has_one_effect_and_one_event() {
    let billing = start().await;
    let (_, account) = billing.new_owner().await;
    let customer = account.stripe_customer_id.unwrap();
    let body =
        event("payment_method.attached", chrono::Utc::now().timestamp(), card("pm_dup", Some(&customer), "4444"), None);
    let answers = futures::future::join_all((0..8).map(|_| billing.webhook(&body))).await;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
    }
    assert_eq!(answers.iter().filter(|(_, a)| a["duplicate"] == true).count(), 7, "{answers:?}");
    assert_eq!(count(&billing.db, "processed_stripe_events").await, 1);
    assert_eq!(count(&billing.db, "payment_methods").await, 1);
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 1);
    // Later again: still once.
    assert_eq!(billing.webhook(&body).await.1["duplicate"], true);
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_deliveries_is_written_in_groups_and_each_event_counts_once() {
    let billing = start().await;
    let owners = futures::future::join_all((0..20).map(|_| billing.new_owner())).await;
    let t = chrono::Utc::now().timestamp();
    let mut bodies = Vec::new();
    for (i, (_, account)) in owners.iter().enumerate() {
        let customer = account.stripe_customer_id.clone().unwrap();
        let pm = format!("pm_burst_{i}");
        bodies.push(event("payment_method.attached", t, card(&pm, Some(&customer), "4242"), None));
        let intent = json!({"id": format!("seti_burst_{i}"), "object": "setup_intent", "status": "succeeded",
            "customer": customer, "payment_method": pm});
        bodies.push(event("setup_intent.succeeded", t, intent, None));
        let invoice = json!({"id": format!("in_burst_{i}"), "object": "invoice", "customer": customer, "status": "paid",
            "amount_due": 100 + i, "currency": "usd", "number": format!("B-{i}"), "hosted_invoice_url": null, "created": t});
        bodies.push(event("invoice.paid", t, invoice, None));
    }
    // Every event delivered twice, 32 deliveries at a time: forwards, then backwards.
    let answers: Vec<_> = futures::stream::iter(bodies.iter().chain(bodies.iter().rev()))
        .map(|b| billing.webhook(b))
        .buffer_unordered(32)
        .collect()
        .await;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
    }
    assert_eq!(
        answers.iter().filter(|(_, a)| a["duplicate"] == true).count(),
        bodies.len(),
        "one of each pair applied"
    );
    assert_eq!(count(&billing.db, "processed_stripe_events").await, 60);
    assert_eq!(count(&billing.db, "payment_methods WHERE attached_at IS NOT NULL").await, 20);
    assert_eq!(count(&billing.db, "invoices").await, 20);
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 20, "one per owner, though two events name each card");
    // Rows claimed in one transaction share its start time.
    let transactions = count(&billing.db, "(SELECT DISTINCT processed_at FROM processed_stripe_events) AS t").await;
    assert!(transactions < 60, "60 events were written in {transactions} transactions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_postgres_refuses_fails_alone_and_the_rest_of_its_burst_is_applied() {
    let billing = start().await;
    let (_, account) = billing.new_owner().await;
    let customer = account.stripe_customer_id.unwrap();
    let t = chrono::Utc::now().timestamp();
    // Postgres refuses this card (a trigger raises an error for it; a NUL character, which
    // Postgres cannot store either, is now refused as bad input before any handler runs): this
    // event's transaction always fails.
    sql(
        &billing.db,
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.id = 'pm_poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$",
    )
    .await;
    sql(
        &billing.db,
        "CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON payment_methods \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .await;
    let poisoned = event("payment_method.attached", t, card("pm_poison", Some(&customer), "0000"), None);
    let invoices: Vec<String> = (0..40)
        .map(|i| {
            let invoice = json!({"id": format!("in_ok_{i}"), "object": "invoice", "customer": customer, "status": "paid",
                "amount_due": 100, "currency": "usd", "number": format!("OK-{i}"), "hosted_invoice_url": null, "created": t});
            event("invoice.paid", t, invoice, None)
        })
        .collect();
    let deliveries: Vec<&String> =
        invoices[..20].iter().chain(std::iter::once(&poisoned)).chain(invoices[20..].iter()).collect();
    let answers: Vec<_> = futures::stream::iter(deliveries)
        .map(|b| {
            let billing = &billing;
            async move { (b, billing.webhook(b).await) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (body, (status, answer)) in &answers {
        let expected = if *body == &poisoned { 503 } else { 200 };
        assert_eq!(*status, expected, "{answer}");
    }
    assert_eq!(count(&billing.db, "invoices").await, 40, "every other event of the burst applied");
    assert_eq!(count(&billing.db, "processed_stripe_events").await, 40, "the failed event is not claimed");
    assert_eq!(count(&billing.db, "payment_methods").await, 0);
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 0);
}

#[derive(diesel::QueryableByName)]
struct OutboxRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_type: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    envelope: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_added_and_removed_in_one_burst_is_announced_in_order() {
    let billing = start().await;
    let owners = futures::future::join_all((0..24).map(|_| billing.new_owner())).await;
    let t = chrono::Utc::now().timestamp();
    // Each owner's card is attached, then detached a second later, and a second card attached
    // after that: all delivered at once, so groups hold several events of one account.
    let mut bodies = Vec::new();
    for (i, (_, account)) in owners.iter().enumerate() {
        let customer = account.stripe_customer_id.clone().unwrap();
        let (first, second) = (format!("pm_come_{i}"), format!("pm_stay_{i}"));
        bodies.push(event("payment_method.attached", t, card(&first, Some(&customer), "1111"), None));
        let gone = Some(json!({"customer": customer}));
        bodies.push(event("payment_method.detached", t + 1, card(&first, None, "1111"), gone));
        bodies.push(event("payment_method.attached", t + 2, card(&second, Some(&customer), "2222"), None));
    }
    let answers: Vec<_> =
        futures::stream::iter(&bodies).map(|b| billing.webhook(b)).buffer_unordered(48).collect().await;
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    assert_eq!(count(&billing.db, "payment_methods WHERE detached_at IS NULL AND attached_at IS NOT NULL").await, 24);
    // Whatever the grouping, each account's announcements, in the order the relay sends them,
    // alternate Added, Removed, ... and end on Added: it has a card.
    let mut conn = billing.db.connect("billing").await;
    let rows: Vec<OutboxRow> = diesel_async::RunQueryDsl::load(
        diesel::sql_query("SELECT event_type, envelope FROM outbox ORDER BY created_at, id"),
        &mut conn,
    )
    .await
    .unwrap();
    let mut seen: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for row in rows {
        let envelope = hopsbridge_contracts::events::Envelope::decode(row.envelope.as_slice()).unwrap();
        let customer = match row.event_type.as_str() {
            "PaymentMethodAdded" => {
                PaymentMethodAddedV1::decode(envelope.payload.as_slice()).unwrap().stripe_customer_id
            }
            "PaymentMethodRemoved" => {
                PaymentMethodRemovedV1::decode(envelope.payload.as_slice()).unwrap().stripe_customer_id
            }
            _ => continue,
        };
        seen.entry(customer).or_default().push(row.event_type);
    }
    assert_eq!(seen.len(), 24);
    for (customer, announced) in &seen {
        let alternating = announced
            .iter()
            .enumerate()
            .all(|(i, kind)| kind == if i % 2 == 0 { "PaymentMethodAdded" } else { "PaymentMethodRemoved" });
        assert!(alternating && announced.len() % 2 == 1, "{customer}: {announced:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_come_and_go_with_one_event_per_change_whatever_the_order() {
    let billing = start().await;
    let (user, account) = billing.new_owner().await;
    let owner = caller(user, &[Role::Owner]);
    let customer = account.stripe_customer_id.unwrap();
    let t = chrono::Utc::now().timestamp();
    let card_shown = async || billing.call(Method::GET, "/api/billing", Some(&owner)).await.1["payment_method"].clone();

    // Detached delivered before attached (same second, as Stripe often stamps them).
    let detached = event("payment_method.detached", t, card("pm_a", None, "1111"), Some(json!({"customer": customer})));
    let attached = event("payment_method.attached", t, card("pm_a", Some(&customer), "1111"), None);
    assert_eq!(billing.webhook(&detached).await.0, 200);
    assert_eq!(billing.webhook(&attached).await.0, 200);
    assert_eq!(card_shown().await, Value::Null, "a detached card stays detached");
    assert_eq!((billing.outbox("PaymentMethodAdded").await, billing.outbox("PaymentMethodRemoved").await), (0, 0));

    // A card, then a second one: Added once.
    let b = event("payment_method.attached", t + 1, card("pm_b", Some(&customer), "2222"), None);
    assert_eq!(billing.webhook(&b).await.0, 200);
    let c = event("payment_method.attached", t + 2, card("pm_c", Some(&customer), "3333"), None);
    assert_eq!(billing.webhook(&c).await.0, 200);
    assert_eq!(card_shown().await["last4"], "3333", "the newest card is shown");
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 1);

    // The first of two goes: nothing to announce. The last goes: Removed.
    let bye_b =
        event("payment_method.detached", t + 3, card("pm_b", None, "2222"), Some(json!({"customer": customer})));
    assert_eq!(billing.webhook(&bye_b).await.0, 200);
    assert_eq!(billing.outbox("PaymentMethodRemoved").await, 0);
    let bye_c =
        event("payment_method.detached", t + 4, card("pm_c", None, "3333"), Some(json!({"customer": customer})));
    assert_eq!(billing.webhook(&bye_c).await.0, 200);
    assert_eq!(billing.outbox("PaymentMethodRemoved").await, 1);
    assert_eq!(card_shown().await, Value::Null);

    // A late, older attached for a detached card changes nothing.
    let late = event("payment_method.attached", t + 1, card("pm_b", Some(&customer), "2222"), None);
    assert_eq!(billing.webhook(&late).await.0, 200);
    assert_eq!(card_shown().await, Value::Null);

    // A new card later: Added again (a setup_intent.succeeded names it before its attached event).
    let intent = json!({"id": "seti_1", "object": "setup_intent", "status": "succeeded", "customer": customer, "payment_method": "pm_d"});
    assert_eq!(billing.webhook(&event("setup_intent.succeeded", t + 5, intent, None)).await.0, 200);
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 2);
    let d = event("payment_method.attached", t + 5, card("pm_d", Some(&customer), "4444"), None);
    assert_eq!(billing.webhook(&d).await.0, 200);
    assert_eq!(card_shown().await["last4"], "4444", "the details filled in");
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 2);

    // Events about a customer that is not ours are acknowledged and change nothing.
    let stranger = event("payment_method.attached", t, card("pm_x", Some("cus_stranger"), "9999"), None);
    assert_eq!(billing.webhook(&stranger).await.0, 200);
    assert_eq!(count(&billing.db, "payment_methods WHERE id = 'pm_x'").await, 0);
    let invoice = json!({"id": "in_x", "object": "invoice", "customer": "cus_stranger", "status": "paid",
        "amount_due": 100, "currency": "usd", "number": "X-1", "hosted_invoice_url": null, "created": t});
    assert_eq!(billing.webhook(&event("invoice.paid", t, invoice, None)).await.0, 200);
    assert_eq!(count(&billing.db, "invoices").await, 0);
    let session = json!({"id": "cs_x", "object": "checkout.session", "mode": "setup", "customer": "cus_stranger", "setup_intent": "seti_x"});
    assert_eq!(
        billing.webhook(&event("checkout.session.completed", t, session, None)).await.0,
        200,
        "no Stripe call for a stranger"
    );
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_events_out_of_order_end_in_stripes_latest_state() {
    let billing = start().await;
    let (user, account) = billing.new_owner().await;
    let owner = caller(user, &[Role::Owner]);
    let customer = account.stripe_customer_id.unwrap();
    let subscription = account.stripe_subscription_id.unwrap();
    // Stripe moves the subscription to past_due (a failed invoice); its events arrive newest first.
    billing.sim.create_invoice(&subscription, &[100, 0, 0, 0, 0], false).unwrap();
    let t = chrono::Utc::now().timestamp();
    let object =
        |status: &str| json!({"id": subscription, "object": "subscription", "customer": customer, "status": status});
    let updated = event("customer.subscription.updated", t, object("past_due"), Some(json!({"status": "active"})));
    let created = event("customer.subscription.created", t - 5, object("active"), None);
    assert_eq!(billing.webhook(&updated).await.0, 200);
    assert_eq!(billing.webhook(&created).await.0, 200);
    let (_, body) = billing.call(Method::GET, "/api/billing", Some(&owner)).await;
    assert_eq!(body["subscription_status"], "past_due", "{body}");

    // Stripe's own deliveries, reordered, of a cancellation.
    billing.deliver_webhooks();
    billing.sim.set_webhook_faults(WebhookFaults { out_of_order: true, ..WebhookFaults::default() });
    let cancelled: Value = reqwest::Client::new()
        .delete(format!("{}/v1/subscriptions/{subscription}", billing.sim.url()))
        .bearer_auth(hopsbridge_testkit::STRIPE_SECRET_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "canceled");
    // The late `created` of the beginning arrives after the deletion.
    assert_eq!(billing.webhook(&created.replace("evt_", "evt_late")).await.0, 200);
    let done = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        billing.call(Method::GET, "/api/billing", Some(&owner)).await.1["subscription_status"] == "canceled"
    })
    .await;
    assert!(done, "canceled in the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_stripe_fails_routes_answer_503_and_webhooks_are_left_for_stripe_to_deliver_again() {
    let billing = start().await;
    let (user, account) = billing.new_owner().await;
    let owner = caller(user, &[Role::Owner]);
    // A lone 429 is absorbed by the client's own retry; a lasting one reaches the caller. (The
    // lasting faults are outages: billing's background work, such as the catalogue sync, may
    // take a counted failure meant for the route.)
    billing.sim.fail_next(1, 429);
    let (status, body) = billing.call(Method::POST, "/api/billing/payment-method", Some(&owner)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    billing.sim.set_outage(Some(429));
    let (status, body) = billing.call(Method::POST, "/api/billing/payment-method", Some(&owner)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("stripe_unavailable")));
    billing.sim.set_outage(Some(500));
    let (status, body) = billing.call(Method::POST, "/api/billing/portal", Some(&owner)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("stripe_unavailable")));
    billing.sim.set_outage(None);

    let subscription = account.stripe_subscription_id.unwrap();
    billing.sim.create_invoice(&subscription, &[1, 0, 0, 0, 0], false).unwrap();
    let object = json!({"id": subscription, "object": "subscription", "customer": account.stripe_customer_id, "status": "past_due"});
    let body = event("customer.subscription.updated", chrono::Utc::now().timestamp(), object, None);
    let before = footprint(&billing).await;
    billing.sim.set_outage(Some(503));
    let (status, answer) = billing.webhook(&body).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("stripe_unavailable")));
    assert_eq!(footprint(&billing).await, before, "the event is not claimed, so Stripe's retry applies it");
    billing.sim.set_outage(None);
    let (status, answer) = billing.webhook(&body).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (StatusCode::OK, None));
    assert_eq!(account_status(&billing, user).await, "past_due");
}

async fn account_status(billing: &Billing, user: Uuid) -> String {
    account(&billing.db, user).await.unwrap().subscription_status.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_checkout_is_answered_at_once_and_its_stripe_work_retried_until_it_succeeds() {
    let billing = start().await;
    billing.deliver_webhooks();
    let (user, account) = billing.new_owner().await;
    let owner = caller(user, &[Role::User, Role::Owner]);
    let customer = account.stripe_customer_id.clone().unwrap();
    let (status, session) = billing.call(Method::POST, "/api/billing/payment-method", Some(&owner)).await;
    assert_eq!(status, 200, "{session}");

    // Stripe fails billing's next three calls: the follow-up's reads and writes.
    billing.sim.fail_next(3, 500);
    billing.sim.complete_checkout_session(session["id"].as_str().unwrap()).unwrap();
    let answered = hopsbridge_testkit::eventually(Duration::from_secs(10), || async {
        billing.sim.deliveries().iter().filter(|d| d.event_type == "checkout.session.completed").all(|d| d.succeeded)
    })
    .await;
    assert!(answered, "the webhook was answered 2xx although Stripe was failing");
    let pm = billing.sim.payment_methods().into_iter().find(|p| p["customer"] == customer.as_str()).unwrap();
    let made_default = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        let c = stripe_get(&billing.sim, &format!("customers/{customer}")).await;
        c["invoice_settings"]["default_payment_method"] == pm["id"]
    })
    .await;
    assert!(made_default, "the saved card became the invoice default once Stripe answered");
    assert_eq!(billing.sim.failures_left(), 0);
    let mut conn = billing.db.connect("billing").await;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        attempts: i32,
    }
    use diesel_async::RunQueryDsl;
    // Stripe answers before billing records the follow-up as done.
    let recorded = hopsbridge_testkit::eventually(Duration::from_secs(10), || async {
        count(&billing.db, "checkout_follow_ups WHERE done_at IS NOT NULL").await == 1
    })
    .await;
    assert!(recorded, "the follow-up was recorded as done");
    let rows: Vec<Row> = diesel::sql_query("SELECT attempts FROM checkout_follow_ups WHERE done_at IS NOT NULL")
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].attempts >= 2, "retried after the failures: {}", rows[0].attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_webhook_or_a_query_is_refused_as_bad_input_and_nothing_is_applied() {
    let billing = start().await;
    let (user, before) = billing.new_owner().await;
    let customer = before.stripe_customer_id.clone().unwrap();
    // A correctly signed event whose card id carries a NUL: refused before it is read, so
    // nothing about it is recorded (it would have been a card added to the customer).
    let object = card("pm_nul\u{0}", Some(&customer), "4242");
    let body = event("payment_method.attached", chrono::Utc::now().timestamp(), object, None);
    assert!(body.contains("\\u0000"), "the JSON escapes the NUL: {body}");
    let (status, answer) = billing.webhook(&body).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("nul_character")), "{answer}");
    let raw = body.replace("\\u0000", "\0");
    let (status, answer) = billing.webhook(&raw).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("nul_character")), "{answer}");
    assert_eq!(count(&billing.db, "processed_stripe_events").await, 0, "no event was applied");
    assert_eq!(count(&billing.db, "payment_methods").await, 0, "no card was recorded");
    assert_eq!(billing.outbox("PaymentMethodAdded").await, 0);

    let owner = caller(user, &[Role::User, Role::Owner]);
    let (status, answer) = billing.call(Method::GET, "/api/billing?x=%00", Some(&owner)).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("nul_character")), "{answer}");
}
