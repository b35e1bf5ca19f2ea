//! What billing does when an owner's account is deleted (`UserDeletedV1`): every unreported day
//! of their usage is reported to Stripe at once, today's partial day included, then their
//! subscription is cancelled with `invoice_now=true`, so Stripe makes the final invoice of the
//! usage so far ([`close`], also used when the last card goes and when a person joins a team).
//! Billing's records (ledger, reports, invoices) are kept. A redelivery finds the days reported
//! and the subscription cancelled, and does nothing more.

use crate::accounts;
use crate::events::db_failure;
use crate::reporting::{Reporter, Scope};
use crate::stripe::Stripe;
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::UserDeletedV1;
use hopsbridge_domain::{OwnerId, UserId};
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent};

/// Closes the billing of a deleted account.
#[derive(Debug, Clone)]
pub struct UserDeleted {
    reporter: Reporter,
    stripe: Stripe,
}

impl UserDeleted {
    /// The handler, reporting with `reporter`.
    #[must_use]
    pub fn new(reporter: Reporter, stripe: Stripe) -> Self {
        Self { reporter, stripe }
    }
}

impl Handler<UserDeletedV1> for UserDeleted {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserDeletedV1>,
    ) -> Result<(), HandlerError> {
        let user: UserId = event
            .payload
            .user_id
            .parse()
            .map_err(|_| HandlerError::Reject(format!("user_id is not a UUID: {:?}", event.payload.user_id)))?;
        close(conn, (&self.reporter, &self.stripe), user).await
    }
}

/// Closes `user`'s own billing (the account locked by the caller's transaction): every
/// unreported day of the usage billed to them reported to Stripe, today's partial day included,
/// then their live subscription cancelled with `invoice_now=true`, so Stripe makes the final
/// invoice of the usage so far. Used when the account is deleted, when the last card goes (the
/// lifecycle's move to free) and when the person joins a team (their usage is billed to the
/// owner from then on). Without a Stripe customer or a live subscription there is nothing to
/// close; done again, it finds the days reported and the subscription cancelled.
///
/// # Errors
/// [`HandlerError::Retry`] while reports are pending or Stripe or Postgres fails.
pub(crate) async fn close(
    conn: &mut AsyncPgConnection,
    (reporter, stripe): (&Reporter, &Stripe),
    user: UserId,
) -> Result<(), HandlerError> {
    let Some(account) = accounts::lock(conn, user).await.map_err(db_failure)? else {
        return Ok(());
    };
    if account.stripe_customer_id.is_none() {
        return Ok(());
    }
    let today = reporter.settings.clock.now().date_naive();
    let owner = OwnerId::from_uuid(user.as_uuid());
    let outcome = reporter
        .pass(Scope { owner: Some(owner), through: today })
        .await
        .map_err(|e| HandlerError::Retry(anyhow::Error::new(e).context("reporting the last usage")))?;
    if outcome.pending > 0 || outcome.waiting > 0 {
        let (pending, waiting) = (outcome.pending, outcome.waiting);
        return Err(HandlerError::Retry(anyhow::anyhow!(
            "reports of {user} not settled: {pending} pending, {waiting} waiting for their price in Stripe"
        )));
    }
    let Some(live) = account.live_subscription() else { return Ok(()) };
    let cancelled = crate::memberships::cancel(stripe, live, true).await?;
    accounts::replace_subscription(conn, user, &cancelled.id, &cancelled.status).await.map_err(db_failure)?;
    tracing::info!(%user, subscription = %cancelled.id, "subscription cancelled with a final invoice");
    Ok(())
}
