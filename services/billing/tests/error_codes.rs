//! billing's error catalogue: every code is documented in the OpenAPI document, and every code
//! is answered, with its status, to a real request against the running service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use hopsbridge_billing::error::BillingCode;
use hopsbridge_platform::caller::Role;
use hopsbridge_platform::http::{ErrorCode, PlatformCode};
use hopsbridge_sandbox::stripe::signature_header;
use hopsbridge_testkit::STRIPE_WEBHOOK_SECRET;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use uuid::Uuid;

#[test]
fn the_openapi_document_names_every_code() {
    let doc = serde_json::to_string(&<hopsbridge_billing::routes::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    for code in BillingCode::ALL {
        assert!(doc.contains(&format!("{}: {}", code.code(), code.description())), "{code:?} is not documented");
    }
    for code in [PlatformCode::Unauthenticated, PlatformCode::DatabaseUnavailable] {
        assert!(doc.contains(code.code()), "{code:?} is not documented");
    }
}

fn event(kind: &str, object: Value) -> String {
    json!({"id": format!("evt_{}", Uuid::new_v4().simple()), "object": "event", "type": kind,
        "created": chrono::Utc::now().timestamp(), "data": {"object": object}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_code_is_answered_with_its_status() {
    let billing = start().await;
    let (user, _) = billing.new_owner().await;
    let owner = caller(user, &[Role::User, Role::Owner]);
    let stranger = caller(Uuid::now_v7(), &[Role::User, Role::Owner]);
    let mut answered = HashSet::new();
    let mut expect = |code: BillingCode, (status, body): (StatusCode, Value)| {
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (code.status().as_u16(), Some(code.code())),
            "{code:?}: {body}"
        );
        answered.insert(code);
    };

    let member = caller(user, &[Role::User, Role::Member]);
    expect(BillingCode::OwnerOnly, billing.call(Method::GET, "/api/billing", Some(&member)).await);
    expect(BillingCode::AccountNotFound, billing.call(Method::GET, "/api/billing", Some(&stranger)).await);
    expect(BillingCode::NotReady, billing.call(Method::POST, "/api/billing/portal", Some(&stranger)).await);
    billing.sim.fail_next(1, 500);
    expect(BillingCode::StripeUnavailable, billing.call(Method::POST, "/api/billing/portal", Some(&owner)).await);
    billing.sim.fail_next(1, 400);
    expect(BillingCode::StripeError, billing.call(Method::POST, "/api/billing/payment-method", Some(&owner)).await);

    let body = event("invoice.paid", json!({"id": "in_1", "object": "invoice", "customer": "cus_x", "status": "paid"}));
    let now = chrono::Utc::now().timestamp();
    expect(BillingCode::MissingSignature, billing.webhook_raw(&body, None).await);
    let forged = signature_header(&body, "whsec_somebody_else_entirely", now);
    expect(BillingCode::InvalidSignature, billing.webhook_raw(&body, Some(forged)).await);
    let stale = signature_header(&body, STRIPE_WEBHOOK_SECRET, now - 3600);
    expect(BillingCode::SignatureExpired, billing.webhook_raw(&body, Some(stale)).await);
    expect(BillingCode::InvalidPayload, billing.webhook(r#"{"object": "charge"}"#).await);
    let unsupported = event("customer.updated", json!({"id": "cus_x", "object": "customer"}));
    expect(BillingCode::UnsupportedEventType, billing.webhook(&unsupported).await);

    // The money routes (decision 0038).
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(2)).to_rfc3339();
    let price = |resource: &str, amount: Value, from: &str| json!({"resource": resource, "unit_amount_decimal": amount, "effective_from": from});
    let prices = "/api/admin/prices";
    expect(BillingCode::AdminOnly, billing.call(Method::GET, prices, Some(&owner)).await);
    expect(
        BillingCode::UnknownResource,
        billing.call_with(Method::POST, prices, Some(&admin), Some(price("disk", json!("1"), &later))).await,
    );
    expect(
        BillingCode::InvalidPrice,
        billing.call_with(Method::POST, prices, Some(&admin), Some(price("cpu", json!("1e3"), &later))).await,
    );
    let soon = chrono::Utc::now().to_rfc3339();
    expect(
        BillingCode::PriceTooSoon,
        billing.call_with(Method::POST, prices, Some(&admin), Some(price("cpu", json!("1"), &soon))).await,
    );
    assert_eq!(
        billing.call_with(Method::POST, prices, Some(&admin), Some(price("gpu", json!("1"), &later))).await.0,
        StatusCode::CREATED
    );
    expect(
        BillingCode::PriceExists,
        billing.call_with(Method::POST, prices, Some(&admin), Some(price("gpu", json!("1"), &later))).await,
    );
    let mode = format!("/api/admin/billing/{user}/mode");
    expect(
        BillingCode::InvalidMode,
        billing.call_with(Method::PUT, &mode, Some(&admin), Some(json!({"mode": "x"}))).await,
    );
    expect(
        BillingCode::InvalidAmount,
        billing.call_with(Method::POST, "/api/credits/purchase", Some(&owner), Some(json!({"amount_minor": 1}))).await,
    );
    let grant = format!("/api/admin/billing/{user}/credits");
    expect(
        BillingCode::InvalidGrant,
        billing.call_with(Method::POST, &grant, Some(&admin), Some(json!({"amount_minor": 1, "priority": 5000}))).await,
    );
    let cap = Some(json!({"monthly_cap_minor": -1}));
    expect(BillingCode::InvalidCap, billing.call_with(Method::PUT, "/api/billing/cap", Some(&owner), cap).await);
    expect(
        BillingCode::InvalidRange,
        billing.call(Method::GET, "/api/billing/usage?from=2026-12-02&to=2026-12-01", Some(&owner)).await,
    );
    // The plan routes and the cap's action (decision 0048).
    let plan = |body: Value| billing.call_with(Method::PUT, "/api/billing/plan", Some(&owner), Some(body));
    expect(
        BillingCode::InvalidPlan,
        plan(json!({"plan": "gold", "accept_terms": true, "terms_version": "2026-12-01"})).await,
    );
    expect(BillingCode::TermsNotAccepted, plan(json!({"plan": "free", "terms_version": "2026-12-01"})).await);
    expect(BillingCode::TermsOutdated, plan(json!({"plan": "free", "accept_terms": true, "terms_version": "1"})).await);
    expect(
        BillingCode::CardRequired,
        plan(json!({"plan": "payg", "accept_terms": true, "terms_version": "2026-12-01"})).await,
    );
    let cap = Some(json!({"monthly_cap_minor": 100, "cap_action": "stop"}));
    expect(BillingCode::InvalidCapAction, billing.call_with(Method::PUT, "/api/billing/cap", Some(&owner), cap).await);
    let someone = format!("/api/billing/usage/samples?day=2026-12-01&user_id={}", Uuid::now_v7());
    expect(BillingCode::PersonNotFound, billing.call(Method::GET, &someone, Some(&owner)).await);

    let every: HashSet<BillingCode> = BillingCode::ALL.iter().copied().collect();
    assert_eq!(answered, every, "each code of the catalogue is exercised here");

    // The platform's codes billing's own handlers answer with.
    let (status, body) = billing.call(Method::GET, "/api/billing", None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")));
}
