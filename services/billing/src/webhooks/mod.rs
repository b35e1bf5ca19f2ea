//! Stripe's webhooks: each verified event of a supported type applied exactly once.
//!
//! - `signature`: `Stripe-Signature` verification.
//! - `effects`: what each event type asks for, from its payload, and the statements that do it.
//! - `apply`: one transaction's events claimed, their accounts locked, their effects applied
//!   and their announcements (`PaymentMethodAddedV1`, `PaymentMethodRemovedV1`) written.
//! - `groups`: events that need nothing from Stripe are written in groups by writers chosen
//!   by customer; each delivery is still answered only once its event is committed.
//!   Subscription events, which re-read Stripe under the account's lock, always take a
//!   transaction of their own.
//! - `follow_ups`: the Stripe work a completed Checkout Session leaves, done in the
//!   background so that a webhook is answered from its payload and Postgres only.

mod apply;
mod effects;
mod follow_ups;
mod groups;
mod signature;

pub use follow_ups::run_follow_ups;
pub use groups::{GROUP_SIZE, GROUP_WRITERS};
pub use signature::{SignatureError, TOLERANCE_SECS, verify};

use crate::stripe::{Stripe, StripeError};
use hopsbridge_platform::db::{Database, DbError, RetryableError};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

/// The event types billing handles; any other is refused with `unsupported_event_type`.
pub const SUPPORTED_EVENTS: [&str; 10] = [
    "checkout.session.completed",
    "setup_intent.succeeded",
    "payment_method.attached",
    "payment_method.detached",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.created",
    "invoice.paid",
    "invoice.payment_failed",
];

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

/// Why an event was not applied. Nothing of it was committed, so Stripe's next delivery of it
/// applies it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Stripe failed while the event's effect read from it.
    #[error(transparent)]
    Stripe(#[from] StripeError),
    /// Postgres failed or refused the event's statements.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The group writer stopped before answering.
    #[error("the webhook group writer stopped")]
    WriterStopped,
}

impl From<diesel::result::Error> for ApplyError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Database(e.into())
    }
}

impl RetryableError for ApplyError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Database(e) if e.is_retryable())
    }
}

/// Applies verified events.
#[derive(Debug, Clone)]
pub struct Webhooks {
    db: Database,
    stripe: Stripe,
    follow_ups: Arc<Notify>,
    /// One queue per group writer. An event goes to its customer's queue, so two groups written
    /// at the same time never touch the same account and never wait on each other's locks.
    queues: Arc<[mpsc::Sender<groups::Job>]>,
    inboxes: Arc<[Mutex<mpsc::Receiver<groups::Job>>]>,
}

impl Webhooks {
    /// Applies events to `db`, reading from and writing to `stripe` where an event needs it.
    /// Grouped events wait for a task running [`Webhooks::write_groups`].
    #[must_use]
    pub fn new(db: Database, stripe: Stripe) -> Self {
        let (queues, inboxes) = groups::queues();
        Self { db, stripe, follow_ups: Arc::new(Notify::new()), queues: queues.into(), inboxes: inboxes.into() }
    }

    /// Wakes the follow-up task whenever a webhook records work for it.
    #[must_use]
    pub fn follow_up_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.follow_ups)
    }

    /// Applies a verified event of a supported type exactly once: in the next group, or in a
    /// transaction of its own when its effect calls Stripe or no group writer is running.
    ///
    /// # Errors
    /// When Postgres or Stripe fails (Stripe will deliver the event again).
    pub async fn apply(&self, event: &Event) -> Result<Outcome, ApplyError> {
        let effect = effects::prepare(event);
        if effect.calls_stripe() {
            return self.apply_alone(event.clone(), effect).await;
        }
        let (reply, answer) = oneshot::channel();
        let queue = &self.queues[groups::writer_of(&effect)];
        match queue.send(groups::Job { event: event.clone(), effect, reply }).await {
            Ok(()) => answer.await.unwrap_or(Err(ApplyError::WriterStopped)),
            // Shutting down: the writers are gone.
            Err(mpsc::error::SendError(job)) => self.apply_alone(job.event, job.effect).await,
        }
    }

    /// Claims `event` and applies `effect` in a transaction of their own.
    async fn apply_alone(&self, event: Event, effect: effects::Effect) -> Result<Outcome, ApplyError> {
        let outcomes = self.write(vec![(event, effect)]).await?;
        Ok(outcomes.first().copied().unwrap_or(Outcome::Duplicate))
    }

    /// Claims and applies `work` in one transaction, answering each event's outcome in order,
    /// and wakes the follow-up task if a completed Checkout was recorded.
    async fn write(&self, work: Vec<(Event, effects::Effect)>) -> Result<Vec<Outcome>, ApplyError> {
        let checkouts: Vec<bool> =
            work.iter().map(|(_, e)| matches!(e, effects::Effect::CheckoutFollowUp { .. })).collect();
        let stripe = self.stripe.clone();
        let outcomes = self
            .db
            .transaction(move |c| {
                let (work, stripe) = (work.clone(), stripe.clone());
                Box::pin(async move { apply::apply_all(c, &stripe, &work).await })
            })
            .await?;
        if checkouts.iter().zip(&outcomes).any(|(checkout, outcome)| *checkout && *outcome == Outcome::Applied) {
            self.follow_ups.notify_one();
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_registers_the_stripe_endpoint_for_exactly_the_events_billing_handles() {
        let mut ours = SUPPORTED_EVENTS.to_vec();
        ours.sort_unstable();
        let mut registered = hopsbridge_sandbox::world::STRIPE_ENDPOINT_EVENTS.to_vec();
        registered.sort_unstable();
        assert_eq!(ours, registered);
    }
}
