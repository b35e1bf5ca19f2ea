//! Stripe's webhooks: signature verification, and each supported event applied exactly once.
//!
//! The event id is claimed in `processed_stripe_events` in the same transaction as the event's
//! effect, so a duplicate, even one delivered concurrently, waits on the claim and then does
//! nothing. Out-of-order delivery is handled per object type:
//! - payment methods: a detached payment method can never be attached again (Stripe's rule), so
//!   detachment is final and a late `attached` or `setup_intent.succeeded` for it is ignored;
//! - subscriptions: the subscription is re-read from Stripe while the account row is locked,
//!   so whatever order events arrive in, the stored status is Stripe's latest;
//! - invoices: a state is replaced only by one from a later event, or from an event of the same
//!   second with a later status (`draft` < `open` < `uncollectible` < `paid`/`void`).
//!
//! The first usable payment method of an account publishes `PaymentMethodAddedV1` and losing
//! the last one `PaymentMethodRemovedV1`, through the outbox in the same transaction.

use crate::accounts::{self, Card, InvoiceRecord};
use crate::stripe::{Stripe, StripeError, Subscription, params};
use diesel_async::AsyncPgConnection;
use hmac::{Hmac, Mac};
use hopsbridge_contracts::events::{PaymentMethodAddedV1, PaymentMethodRemovedV1};
use hopsbridge_platform::constant_time_eq;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::events::enqueue;
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// How far a signature's timestamp may be from now, in seconds (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// The event types billing handles; any other is refused with `unsupported_event_type`.
pub const SUPPORTED_EVENTS: [&str; 9] = [
    "checkout.session.completed",
    "setup_intent.succeeded",
    "payment_method.attached",
    "payment_method.detached",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
];

/// Why a `Stripe-Signature` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No header.
    #[error("the Stripe-Signature header is missing")]
    Missing,
    /// No `t=` or no `v1=`, or one that is not hex.
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    /// No `v1` signature matches.
    #[error("no signature matches the payload")]
    Mismatch,
    /// The timestamp is more than the tolerance away from now.
    #[error("the signature's timestamp is outside the tolerance")]
    Expired,
}

impl SignatureError {
    /// The stable error code.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_signature",
            Self::Malformed | Self::Mismatch => "invalid_signature",
            Self::Expired => "signature_expired",
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Verifies `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over `"<t>.<body>"` with the
/// endpoint secret: some `v1` must match (compared in constant time), and `t` must be within
/// [`TOLERANCE_SECS`] of `now`.
///
/// # Errors
/// [`SignatureError`].
pub fn verify(header: Option<&str>, body: &[u8], secret: &[u8], now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { continue };
        match k {
            "t" => timestamp = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(unhex(v).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    // Every candidate is compared, so the time taken does not say which one matched.
    let matched = signatures.iter().fold(false, |any, s| constant_time_eq(s, &expected) | any);
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

/// A Stripe event, as much of it as billing reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// `evt_…`.
    pub id: String,
    /// e.g. `payment_method.attached`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    /// The object and the changed attributes.
    pub data: EventData,
}

/// An event's data.
#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    /// The object as it was when the event happened.
    pub object: Value,
    /// Attributes that changed, with their previous values.
    #[serde(default)]
    pub previous_attributes: Option<Value>,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied now.
    Applied,
    /// Applied before (a duplicate): nothing done.
    Duplicate,
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn card_of(pm: &Value) -> Card {
    let card = &pm["card"];
    let int = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok());
    Card {
        brand: card["brand"].as_str().map(str::to_owned),
        last4: card["last4"].as_str().map(str::to_owned),
        exp_month: int(&card["exp_month"]),
        exp_year: int(&card["exp_year"]),
    }
}

/// Applies verified events.
#[derive(Debug, Clone)]
pub struct Webhooks {
    db: Database,
    stripe: Stripe,
}

/// A change to a payment method an event asks for.
#[derive(Debug, Clone)]
enum PmChange {
    Attach { pm: String, customer: String, card: Card },
    Detach { pm: String, customer: String },
}

/// What an event needs done in the transaction, prepared from its payload (and, for a completed
/// Checkout Session, from Stripe).
#[derive(Debug, Clone)]
enum Effect {
    PaymentMethod(PmChange),
    Subscription { id: String, customer: String },
    Invoice(InvoiceRecord),
    Nothing,
}

impl Webhooks {
    /// Applies events to `db`, reading from and writing to `stripe` where an event needs it.
    #[must_use]
    pub const fn new(db: Database, stripe: Stripe) -> Self {
        Self { db, stripe }
    }

    /// Applies a verified event of a supported type exactly once.
    ///
    /// # Errors
    /// When Postgres or Stripe fails (Stripe will deliver the event again).
    pub async fn apply(&self, event: &Event) -> anyhow::Result<Outcome> {
        if self.seen(&event.id).await? {
            return Ok(Outcome::Duplicate);
        }
        let effect = self.prepare(event).await?;
        let (event, effect, stripe) = (event.clone(), effect, self.stripe.clone());
        self.db
            .transaction(move |c| {
                let (event, effect, stripe) = (event.clone(), effect.clone(), stripe.clone());
                Box::pin(async move {
                    if !accounts::claim_event(c, &event.id, &event.kind, event.created).await? {
                        return Ok(Outcome::Duplicate);
                    }
                    apply_effect(c, &stripe, &effect, event.created).await?;
                    Ok(Outcome::Applied)
                })
            })
            .await
    }

    async fn seen(&self, id: &str) -> anyhow::Result<bool> {
        use crate::accounts::processed_stripe_events as p;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.conn().await?;
        let n: i64 = p::table.filter(p::event_id.eq(id)).count().get_result(&mut conn).await?;
        Ok(n > 0)
    }

    async fn knows_customer(&self, customer: &str) -> anyhow::Result<bool> {
        use crate::accounts::accounts as a;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.conn().await?;
        let n: i64 = a::table.filter(a::stripe_customer_id.eq(customer)).count().get_result(&mut conn).await?;
        Ok(n > 0)
    }

    async fn prepare(&self, event: &Event) -> anyhow::Result<Effect> {
        let o = &event.data.object;
        let effect = match event.kind.as_str() {
            "payment_method.attached" => match (id_of(&o["id"]), id_of(&o["customer"])) {
                (Some(pm), Some(customer)) => {
                    Effect::PaymentMethod(PmChange::Attach { pm, customer, card: card_of(o) })
                }
                _ => Effect::Nothing,
            },
            "payment_method.detached" => {
                let previous = event.data.previous_attributes.as_ref().map_or(&Value::Null, |p| &p["customer"]);
                match (id_of(&o["id"]), id_of(previous)) {
                    (Some(pm), Some(customer)) => Effect::PaymentMethod(PmChange::Detach { pm, customer }),
                    _ => Effect::Nothing,
                }
            }
            "setup_intent.succeeded" => match (id_of(&o["payment_method"]), id_of(&o["customer"])) {
                (Some(pm), Some(customer)) => {
                    let card =
                        if o["payment_method"].is_object() { card_of(&o["payment_method"]) } else { Card::default() };
                    Effect::PaymentMethod(PmChange::Attach { pm, customer, card })
                }
                _ => Effect::Nothing,
            },
            "checkout.session.completed" => self.completed_checkout(event).await?,
            "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
                match (id_of(&o["id"]), id_of(&o["customer"])) {
                    (Some(id), Some(customer)) => Effect::Subscription { id, customer },
                    _ => Effect::Nothing,
                }
            }
            "invoice.paid" | "invoice.payment_failed" => match (id_of(&o["id"]), id_of(&o["customer"])) {
                (Some(id), Some(customer)) => Effect::Invoice(InvoiceRecord {
                    id,
                    customer,
                    number: o["number"].as_str().map(str::to_owned),
                    status: o["status"].as_str().unwrap_or("open").to_owned(),
                    amount_due: o["amount_due"].as_i64().unwrap_or(0),
                    currency: o["currency"].as_str().unwrap_or_default().to_owned(),
                    hosted_invoice_url: o["hosted_invoice_url"].as_str().map(str::to_owned),
                    created: o["created"].as_i64().unwrap_or(event.created),
                }),
                _ => Effect::Nothing,
            },
            _ => Effect::Nothing,
        };
        Ok(effect)
    }

    /// A setup-mode Checkout Session saved a card: it becomes the customer's default for
    /// invoices (an idempotent Stripe write keyed by the event) and counts as attached.
    async fn completed_checkout(&self, event: &Event) -> anyhow::Result<Effect> {
        let o = &event.data.object;
        if o["mode"] != "setup" {
            return Ok(Effect::Nothing);
        }
        let (Some(intent), Some(customer)) = (id_of(&o["setup_intent"]), id_of(&o["customer"])) else {
            return Ok(Effect::Nothing);
        };
        if !self.knows_customer(&customer).await? {
            // Not one of ours: no Stripe write on its behalf.
            return Ok(Effect::Nothing);
        }
        #[derive(Deserialize)]
        struct Intent {
            payment_method: Option<Value>,
        }
        let intent: Intent = self.stripe.get(&format!("setup_intents/{intent}"), &Vec::new()).await?;
        let Some(pm) = intent.payment_method.as_ref().and_then(id_of) else {
            return Ok(Effect::Nothing);
        };
        let form = params([("invoice_settings[default_payment_method]", pm.as_str())]);
        let key = format!("hb-default-pm-{}", event.id);
        match self.stripe.post::<Value>(&format!("customers/{customer}"), &form, Some(&key)).await {
            Ok(_) => {}
            // Detached meanwhile: then it is not the default, and the detach event says so.
            Err(StripeError::Api { status: 400, .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Effect::PaymentMethod(PmChange::Attach { pm, customer, card: Card::default() }))
    }
}

async fn apply_effect(c: &mut AsyncPgConnection, stripe: &Stripe, effect: &Effect, at: i64) -> anyhow::Result<()> {
    match effect {
        Effect::Nothing => Ok(()),
        Effect::Invoice(invoice) => {
            if accounts::lock_by_customer(c, &invoice.customer).await?.is_some() {
                accounts::record_invoice(c, invoice, at).await?;
            }
            Ok(())
        }
        Effect::Subscription { id, customer } => {
            let Some(account) = accounts::lock_by_customer(c, customer).await? else {
                return Ok(());
            };
            // Stripe's current state, read while the account is locked: order of delivery
            // does not matter.
            let current: Subscription = stripe.get(&format!("subscriptions/{id}"), &Vec::new()).await?;
            accounts::set_subscription_status(c, account.user_id, &current.id, &current.status).await?;
            Ok(())
        }
        Effect::PaymentMethod(change) => {
            let customer = match change {
                PmChange::Attach { customer, .. } | PmChange::Detach { customer, .. } => customer,
            };
            let Some(account) = accounts::lock_by_customer(c, customer).await? else {
                return Ok(());
            };
            let before = accounts::usable_payment_methods(c, customer).await?;
            match change {
                PmChange::Attach { pm, customer, card } => accounts::attach(c, pm, customer, card, at).await?,
                PmChange::Detach { pm, customer } => accounts::detach(c, pm, customer, at).await?,
            }
            let after = accounts::usable_payment_methods(c, customer).await?;
            let user_id = account.user_id.to_string();
            if before == 0 && after > 0 {
                enqueue(c, &PaymentMethodAddedV1 { user_id, stripe_customer_id: customer.clone() }, None).await?;
            } else if before > 0 && after == 0 {
                enqueue(c, &PaymentMethodRemovedV1 { user_id, stripe_customer_id: customer.clone() }, None).await?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn sign(body: &str, secret: &str, t: i64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_matching_signature_within_the_tolerance_verifies() {
        let body = r#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let header = format!("t={now},v1={}", sign(body, "whsec_test_secret", now));
        assert_eq!(verify(Some(&header), body.as_bytes(), b"whsec_test_secret", now + 299), Ok(()));
        // One of several v1 signatures matching is enough (secret rotation).
        let header = format!("t={now},v1={},v1={}", sign(body, "old", now), sign(body, "whsec_test_secret", now));
        assert_eq!(verify(Some(&header), body.as_bytes(), b"whsec_test_secret", now), Ok(()));
    }

    #[test]
    fn forged_stale_missing_and_malformed_signatures_are_refused() {
        let body = r#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let secret = b"whsec_test_secret";
        let good = sign(body, "whsec_test_secret", now);
        let cases = [
            (None, SignatureError::Missing),
            (Some(format!("t={now},v1={}", sign(body, "another", now))), SignatureError::Mismatch),
            (Some(format!("t={now},v1={good}")), SignatureError::Expired),
            (Some(format!("v1={good}")), SignatureError::Malformed),
            (Some(format!("t={now}")), SignatureError::Malformed),
            (Some(format!("t={now},v0={good}")), SignatureError::Malformed),
            (Some(format!("t=yesterday,v1={good}")), SignatureError::Malformed),
            (Some(format!("t={now},v1=zz")), SignatureError::Malformed),
        ];
        for (i, (header, want)) in cases.into_iter().enumerate() {
            let at = if want == SignatureError::Expired { now + 301 } else { now };
            assert_eq!(verify(header.as_deref(), body.as_bytes(), secret, at), Err(want), "case {i}");
        }
        // The body is covered: a changed payload with the old signature fails.
        let header = format!("t={now},v1={good}");
        assert_eq!(verify(Some(&header), br#"{"id":"evt_2"}"#, secret, now), Err(SignatureError::Mismatch));
    }
}
