//! What each event type asks for, decided from its payload alone ([`prepare`]), and the
//! statements that carry it out ([`run`]).
//!
//! Out-of-order delivery is handled per object type:
//! - payment methods: a detached payment method can never be attached again (Stripe's rule), so
//!   detachment is final and a late `attached` or `setup_intent.succeeded` for it is ignored;
//! - subscriptions: the subscription is re-read from Stripe while the account row is locked,
//!   so whatever order events arrive in, the stored status is Stripe's latest;
//! - invoices: a state is replaced only by one from a later event, or from an event of the same
//!   second with a later status (`draft` < `open` < `uncollectible` < `paid`/`void`);
//! - a completed setup-mode Checkout Session only records its follow-up
//!   ([`crate::checkout_follow_ups`]), which the follow-up task does with Stripe later;
//! - a completed and paid payment-mode Checkout Session of a credit purchase grants the
//!   purchase's credit, once: the grant's source is the session.
//!
//! A subscription ended, an invoice's payment failed or paid, and credit bought are also
//! recorded as signals for the account's standing ([`crate::lifecycle`]), in the same
//! transaction.

use super::apply::Locked;
use super::{ApplyError, Event};
use crate::accounts::{self, CardSummary, InvoiceRecord, PaymentMethodState};
use crate::checkout_follow_ups;
use crate::credits;
use crate::lifecycle;
use crate::stripe::{Stripe, Subscription};
use diesel_async::AsyncPgConnection;
use serde_json::Value;

/// A change to a payment method an event asks for.
#[derive(Debug, Clone)]
pub(super) enum PmChange {
    Attach { pm: String, customer: String, card: CardSummary },
    Detach { pm: String, customer: String },
}

impl PmChange {
    /// The payment method.
    pub(super) fn pm(&self) -> &str {
        match self {
            Self::Attach { pm, .. } | Self::Detach { pm, .. } => pm,
        }
    }

    /// The customer the event names.
    pub(super) fn customer(&self) -> &str {
        match self {
            Self::Attach { customer, .. } | Self::Detach { customer, .. } => customer,
        }
    }
}

/// What an event needs done in the transaction, prepared from its payload.
#[derive(Debug, Clone)]
pub(super) enum Effect {
    PaymentMethod(PmChange),
    /// A completed setup-mode Checkout Session: record the follow-up work.
    CheckoutFollowUp {
        event_id: String,
        customer: String,
        setup_intent: String,
    },
    Subscription {
        id: String,
        customer: String,
    },
    /// A paid payment-mode Checkout Session: grant the credit it bought.
    CreditPurchase {
        session: String,
        customer: String,
    },
    /// An invoice paid, or one of its payments failed (Stripe's attempt count).
    Invoice(InvoiceRecord, Option<i32>),
    /// A subscription cycle's invoice was created: its customer's usage through `through` is
    /// to be reported before Stripe finalises it an hour later.
    ReportThrough {
        customer: String,
        through: chrono::NaiveDate,
    },
    Nothing,
}

impl Effect {
    /// The customer whose account the effect locks, if any: groups lock accounts in this order,
    /// so two groups never wait on each other in a cycle.
    pub(super) fn customer(&self) -> Option<&str> {
        match self {
            Self::PaymentMethod(change) => Some(change.customer()),
            Self::CheckoutFollowUp { customer, .. }
            | Self::Subscription { customer, .. }
            | Self::CreditPurchase { customer, .. } => Some(customer),
            Self::Invoice(invoice, _) => Some(&invoice.customer),
            Self::ReportThrough { customer, .. } => Some(customer),
            Self::Nothing => None,
        }
    }

    /// Whether applying it calls Stripe (inside its transaction).
    pub(super) const fn calls_stripe(&self) -> bool {
        matches!(self, Self::Subscription { .. })
    }

    /// The row the effect writes, if any: effects on different rows give the same results in
    /// any order, so their statements may go to Postgres together.
    pub(super) fn row(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::PaymentMethod(change) => Some(("pm", change.pm())),
            Self::Invoice(invoice, _) => Some(("invoice", &invoice.id)),
            Self::CheckoutFollowUp { event_id, .. } => Some(("checkout", event_id)),
            Self::Subscription { customer, .. } => Some(("account", customer)),
            Self::CreditPurchase { session, .. } => Some(("credits", session)),
            Self::ReportThrough { customer, .. } => Some(("report", customer)),
            Self::Nothing => None,
        }
    }
}

/// A Stripe id, given as the id itself or as the expanded object.
pub(super) fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn card_of(pm: &Value) -> CardSummary {
    let card = &pm["card"];
    let int = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok());
    CardSummary {
        brand: card["brand"].as_str().map(str::to_owned),
        last4: card["last4"].as_str().map(str::to_owned),
        exp_month: int(&card["exp_month"]),
        exp_year: int(&card["exp_year"]),
    }
}

/// What `event` asks for, from its payload alone.
pub(super) fn prepare(event: &Event) -> Effect {
    let o = &event.data.object;
    match event.kind.as_str() {
        "payment_method.attached" => match (id_of(&o["id"]), id_of(&o["customer"])) {
            (Some(pm), Some(customer)) => Effect::PaymentMethod(PmChange::Attach { pm, customer, card: card_of(o) }),
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
                let card = if o["payment_method"].is_object() {
                    card_of(&o["payment_method"])
                } else {
                    CardSummary::default()
                };
                Effect::PaymentMethod(PmChange::Attach { pm, customer, card })
            }
            _ => Effect::Nothing,
        },
        "checkout.session.completed" => completed_checkout(o, &event.id),
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            match (id_of(&o["id"]), id_of(&o["customer"])) {
                (Some(id), Some(customer)) => Effect::Subscription { id, customer },
                _ => Effect::Nothing,
            }
        }
        "invoice.created" => match (id_of(&o["customer"]), o["period_end"].as_i64()) {
            (Some(customer), Some(end)) if o["billing_reason"] == "subscription_cycle" => {
                match chrono::DateTime::from_timestamp(end - 1, 0) {
                    Some(last) => Effect::ReportThrough { customer, through: last.date_naive() },
                    None => Effect::Nothing,
                }
            }
            _ => Effect::Nothing,
        },
        "invoice.paid" | "invoice.payment_failed" => match (id_of(&o["id"]), id_of(&o["customer"])) {
            (Some(id), Some(customer)) => Effect::Invoice(
                InvoiceRecord {
                    id,
                    customer,
                    number: o["number"].as_str().map(str::to_owned),
                    status: o["status"].as_str().unwrap_or("open").to_owned(),
                    amount_due: o["amount_due"].as_i64().unwrap_or(0),
                    currency: o["currency"].as_str().unwrap_or_default().to_owned(),
                    hosted_invoice_url: o["hosted_invoice_url"].as_str().map(str::to_owned),
                    created: o["created"].as_i64().unwrap_or(event.created),
                },
                (event.kind == "invoice.payment_failed")
                    .then(|| o["attempt_count"].as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(1)),
            ),
            _ => Effect::Nothing,
        },
        _ => Effect::Nothing,
    }
}

/// A setup-mode Checkout Session saved a card: it is to become the customer's default for
/// invoices and count as attached. Both need Stripe, so they are left to the follow-up task
/// (recorded only for a customer billing knows: no Stripe write on anyone else's behalf).
fn completed_checkout(session: &Value, event_id: &str) -> Effect {
    if session["mode"] == "payment" {
        return match (id_of(&session["id"]), id_of(&session["customer"])) {
            (Some(session_id), Some(customer)) if session["payment_status"] == "paid" => {
                Effect::CreditPurchase { session: session_id, customer }
            }
            _ => Effect::Nothing,
        };
    }
    if session["mode"] != "setup" {
        return Effect::Nothing;
    }
    let (Some(setup_intent), Some(customer)) = (id_of(&session["setup_intent"]), id_of(&session["customer"])) else {
        return Effect::Nothing;
    };
    Effect::CheckoutFollowUp { event_id: event_id.to_owned(), customer, setup_intent }
}

/// What one effect's statements found, for replaying the payment method changes in order.
#[derive(Debug)]
pub(super) enum Done {
    Other,
    /// The payment method's row after an attach; `None` when it was detached already.
    Attached(Option<PaymentMethodState>),
    /// The customer a detached payment method's row belongs to.
    Detached(String),
}

/// An effect's statements (at `at`, its event's time), on a connection other effects'
/// statements share, for the accounts in `locked` only.
pub(super) async fn run(
    c: &AsyncPgConnection,
    stripe: &Stripe,
    locked: &Locked,
    effect: &Effect,
    at: i64,
) -> Result<Done, ApplyError> {
    match effect {
        Effect::Nothing => Ok(Done::Other),
        Effect::ReportThrough { customer, through } => {
            if locked.user(customer).is_some() {
                crate::reporting::request(c, customer, *through, "invoice.created").await?;
            }
            Ok(Done::Other)
        }
        Effect::Invoice(invoice, failed) => {
            if let Some(user) = locked.user(&invoice.customer) {
                accounts::record_invoice(c, invoice, at).await?;
                let signal = match failed {
                    Some(attempt) => lifecycle::Signal::InvoiceFailed(&invoice.id, *attempt),
                    None => lifecycle::Signal::InvoicePaid(&invoice.id),
                };
                lifecycle::signal(c, user, signal, at).await?;
            }
            Ok(Done::Other)
        }
        Effect::Subscription { id, customer } => {
            let Some(user) = locked.user(customer) else {
                return Ok(Done::Other);
            };
            // Stripe's current state, read while the account is locked: order of delivery
            // does not matter.
            let current: Subscription = stripe.get(&format!("subscriptions/{id}"), &Vec::new()).await?;
            accounts::set_subscription_status(c, user, &current.id, &current.status).await?;
            if accounts::ENDED.contains(&current.status.as_str()) {
                lifecycle::signal(c, user, lifecycle::Signal::SubscriptionEnded(&current.id), at).await?;
            }
            Ok(Done::Other)
        }
        Effect::CreditPurchase { session, customer } => {
            // Only a purchase billing made, for the locked account of the customer who paid.
            let Some(user) = locked.user(customer) else { return Ok(Done::Other) };
            let Some((owner, amount)) = credits::purchase(c, session).await? else { return Ok(Done::Other) };
            if owner.as_user() != user {
                tracing::warn!(session, customer, "a credit purchase completed by another customer; nothing granted");
                return Ok(Done::Other);
            }
            let source = format!("checkout:{session}");
            let new = credits::NewGrant {
                owner,
                category: credits::PURCHASED,
                amount,
                priority: 0,
                expires_at: None,
                source,
                by: None,
            };
            if credits::grant(c, &new).await?.is_some() {
                lifecycle::signal(c, user, lifecycle::Signal::CreditsBought(session), at).await?;
            }
            credits::complete_purchase(c, session).await?;
            Ok(Done::Other)
        }
        Effect::CheckoutFollowUp { event_id, customer, setup_intent } => {
            checkout_follow_ups::record(c, event_id, customer, setup_intent, at).await?;
            Ok(Done::Other)
        }
        Effect::PaymentMethod(change) => {
            // Only a locked account's payment methods are written.
            if !locked.holds(change.customer()) {
                return Ok(Done::Other);
            }
            Ok(match change {
                PmChange::Attach { pm, customer, card } => {
                    Done::Attached(accounts::attach(c, pm, customer, card, at).await?)
                }
                PmChange::Detach { pm, customer } => Done::Detached(accounts::detach(c, pm, customer, at).await?),
            })
        }
    }
}

/// Effects for the unit tests of the modules that group and apply them.
#[cfg(test)]
pub(super) mod samples {
    use super::{CardSummary, Effect, PmChange};

    pub(in super::super) fn attach(pm: &str, customer: &str) -> Effect {
        Effect::PaymentMethod(PmChange::Attach {
            pm: pm.into(),
            customer: customer.into(),
            card: CardSummary::default(),
        })
    }

    pub(in super::super) fn detach(pm: &str, customer: &str) -> Effect {
        Effect::PaymentMethod(PmChange::Detach { pm: pm.into(), customer: customer.into() })
    }

    pub(in super::super) fn checkout(event_id: &str, customer: &str) -> Effect {
        Effect::CheckoutFollowUp { event_id: event_id.into(), customer: customer.into(), setup_intent: "seti_1".into() }
    }
}
