//! The follow-ups of completed setup-mode Checkout Sessions (decision 0024): a webhook is
//! answered without waiting on Stripe (Stripe gives an endpoint a few seconds, and billing
//! paces its own Stripe calls), so the webhook only records the work
//! ([`crate::checkout_follow_ups`]) and this task reads the saved card, makes it the customer's
//! invoice default and records it as attached, retrying until Stripe agrees.

use super::ApplyError;
use super::apply::{Locked, apply_effects};
use super::effects::{Effect, PmChange, id_of};
use crate::accounts::CardSummary;
use crate::checkout_follow_ups::{self, FollowUp};
use crate::stripe::{Stripe, StripeError, params};
use hopsbridge_platform::db::Database;
use hopsbridge_platform::retry::Backoff;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Follow-ups a task takes at once.
const BATCH: i64 = 16;
/// How long a taken follow-up is left to its task before another may take it.
const LEASE: Duration = Duration::from_secs(120);
/// How long an idle task waits for a wake-up before looking again.
const IDLE: Duration = Duration::from_secs(1);
/// The pause after a failed follow-up: 1 s doubling to 5 minutes, with jitter.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));

/// Does the follow-ups of completed Checkout Sessions until `cancel`: reads the card the
/// session saved, makes it the customer's invoice default (idempotency key from the event) and
/// records it as attached (publishing `PaymentMethodAddedV1` if it is the account's first usable
/// one). A failure is retried after a growing pause ([`RETRY`]); several replicas share the
/// work through leases. `wake` is notified when a webhook records work.
pub async fn run_follow_ups(db: Database, stripe: Stripe, wake: Arc<Notify>, cancel: CancellationToken) {
    loop {
        let idle = match take(&db).await {
            Ok(batch) => {
                let idle = batch.is_empty();
                for work in batch {
                    let result = follow_up(&stripe, &work).await;
                    if let Err(e) = finish(&db, &stripe, &work, result).await {
                        tracing::warn!(error = %e, event = %work.event_id, "could not record a follow-up's outcome");
                    }
                }
                idle
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take checkout follow-ups");
                true
            }
        };
        if idle {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
        } else if cancel.is_cancelled() {
            return;
        }
    }
}

async fn take(db: &Database) -> Result<Vec<FollowUp>, ApplyError> {
    let mut conn = db.conn().await?;
    Ok(checkout_follow_ups::take(&mut conn, BATCH, LEASE).await?)
}

/// The Stripe side of one follow-up; answers the saved card, if the session saved one.
async fn follow_up(stripe: &Stripe, work: &FollowUp) -> Result<Option<String>, StripeError> {
    #[derive(Deserialize)]
    struct Intent {
        payment_method: Option<Value>,
    }
    let intent: Intent = stripe.get(&format!("setup_intents/{}", work.setup_intent_id), &Vec::new()).await?;
    let Some(pm) = intent.payment_method.as_ref().and_then(id_of) else {
        return Ok(None);
    };
    let form = params([("invoice_settings[default_payment_method]", pm.as_str())]);
    let key = format!("hb-default-pm-{}", work.event_id);
    match stripe.post::<Value>(&format!("customers/{}", work.stripe_customer_id), &form, Some(&key)).await {
        Ok(_) => {}
        // Detached meanwhile: then it is not the default, and the detach event says so.
        Err(StripeError::Api { status: 400, .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(Some(pm))
}

/// Records the outcome of one follow-up: done, with the card attached, in one transaction; or
/// failed, due again after [`RETRY`]'s pause for its attempt.
async fn finish(
    db: &Database,
    stripe: &Stripe,
    work: &FollowUp,
    result: Result<Option<String>, StripeError>,
) -> Result<(), ApplyError> {
    match result {
        Ok(pm) => {
            db.transaction(move |c| {
                let (work, pm, stripe) = (work.clone(), pm.clone(), stripe.clone());
                Box::pin(async move {
                    let customer = work.stripe_customer_id;
                    if let Some(pm) = pm {
                        let mut locked = Locked::take(c, vec![&customer], vec![&customer]).await?;
                        let attach = Effect::PaymentMethod(PmChange::Attach {
                            pm,
                            customer: customer.clone(),
                            card: CardSummary::default(),
                        });
                        apply_effects(c, &stripe, &mut locked, &[(&attach, work.event_created)]).await?;
                    }
                    checkout_follow_ups::finish(c, &work.event_id).await?;
                    Ok(())
                })
            })
            .await
        }
        Err(e) => {
            tracing::warn!(error = %e, event = %work.event_id, attempts = work.attempts, "checkout follow-up failed; will retry");
            // `attempts` counts this one: the first failure waits RETRY's first pause.
            let retry = u32::try_from(work.attempts.saturating_sub(1)).unwrap_or(0);
            let mut conn = db.conn().await?;
            checkout_follow_ups::retry_later(&mut conn, &work.event_id, &e.to_string(), RETRY.delay(retry)).await?;
            Ok(())
        }
    }
}
