//! What billing does when a person joins or leaves a team (decision 0035).
//!
//! Each account keeps the person's latest membership under the one rule of
//! [`hopsbridge_domain::membership`] (`accounts.team_*`), so `TeamMemberJoinedV1` and
//! `TeamMemberRemovedV1` may arrive in any order and more than once. After each, in the
//! consumer's transaction and under the account's lock, billing settles Stripe with what the
//! rule keeps ([`settle`]):
//! - a member is billed to their owner: their own usage so far is reported and their own
//!   subscription cancelled with a final invoice of it ([`crate::deletion::close`]; a person may
//!   have used their own cluster before joining), and billing's routes refuse them;
//! - anyone else has a live subscription of the metered prices: one is opened after a removal,
//!   as for a new person (its `Idempotency-Key` comes from the event's id).
//!
//! A duplicate or a late event leaves what the rule keeps as it was, and settling finds Stripe
//! already as it should be: nothing is cancelled or opened twice. A cancellation or a
//! subscription whose record rolled back is found again in Stripe on the next try.

use crate::accounts::{self, Account, TeamColumns};
use crate::catalog::Prices;
use crate::events::{db_failure, idempotency_key, open_subscription, stripe_failure, unrecorded_subscription};
use crate::reporting::Reporter;
use crate::stripe::{Stripe, Subscription, params};
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::{TeamMemberJoinedV1, TeamMemberRemovedV1};
use hopsbridge_domain::UserId;
use hopsbridge_domain::membership::{self, Change};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::events::{Handler, HandlerError, MembershipEvent as _, ReceivedEvent};

/// Applies team changes to billing accounts.
#[derive(Debug, Clone)]
pub struct Memberships {
    stripe: Stripe,
    prices: Prices,
    clock: Clock,
    reporter: Reporter,
}

impl Memberships {
    /// The handler, on calendar time `clock`, reporting a new member's own usage with `reporter`.
    #[must_use]
    pub fn new(stripe: Stripe, prices: Prices, clock: Clock, reporter: Reporter) -> Self {
        Self { stripe, prices, clock, reporter }
    }

    /// Records `change` on `member`'s account and settles Stripe with it. The event (`event`)
    /// names the subscription a removal opens.
    async fn apply(
        &self,
        conn: &mut AsyncPgConnection,
        member: UserId,
        change: Change,
        event: &str,
    ) -> Result<(), HandlerError> {
        // identity announces a person before anyone can invite them, so the account is opened
        // soon: until then the event waits.
        let mut account = accounts::lock(conn, member)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| HandlerError::Retry(anyhow::anyhow!("the billing account of {member} is not opened yet")))?;
        let before = account.team.kept();
        if let Some(after) = membership::apply(before, change).filter(|after| Some(*after) != before) {
            account.team = TeamColumns::of(after);
            accounts::set_team(conn, member, &account.team).await.map_err(db_failure)?;
        }
        let now = self.clock.now();
        if account.team_owner(now.timestamp_micros()).is_some() && account.live_subscription().is_some() {
            // Their own usage until now is theirs to pay: reported, and invoiced as the
            // subscription ends. What `settle` would cancel is then cancelled already.
            crate::deletion::close(conn, (&self.reporter, &self.stripe), member).await?;
            account = accounts::lock(conn, member)
                .await
                .map_err(db_failure)?
                .ok_or_else(|| HandlerError::Retry(anyhow::anyhow!("the billing account of {member} went away")))?;
        }
        settle(conn, (&self.stripe, &self.prices), &account, event, now).await
    }
}

impl Handler<TeamMemberJoinedV1> for Memberships {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberJoinedV1>,
    ) -> Result<(), HandlerError> {
        let news = TeamMemberJoinedV1::news(event)?;
        let key = idempotency_key("subscription", event.id);
        self.apply(conn, news.member, news.change, &key).await
    }
}

impl Handler<TeamMemberRemovedV1> for Memberships {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberRemovedV1>,
    ) -> Result<(), HandlerError> {
        let news = TeamMemberRemovedV1::news(event)?;
        let key = idempotency_key("subscription", event.id);
        self.apply(conn, news.member, news.change, &key).await
    }
}

/// Makes Stripe agree with `account` (locked by the caller): a team member has no live
/// subscription of their own, anyone else has one (a new one is created with the idempotency
/// key `key`). Nothing is done before the account has a Stripe customer: opening the account
/// settles it then.
///
/// # Errors
/// [`HandlerError`] when Stripe or Postgres fails.
pub(crate) async fn settle(
    conn: &mut AsyncPgConnection,
    (stripe, prices): (&Stripe, &Prices),
    account: &Account,
    key: &str,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let user = account.user_id;
    let Some(customer) = account.stripe_customer_id.as_deref() else { return Ok(()) };
    let member = account.team_owner(now.timestamp_micros()).is_some();
    let settled = match (member, account.live_subscription()) {
        (true, Some(live)) => Some(cancel(stripe, live, false).await?),
        (true, None) => match unrecorded_subscription(stripe, user, customer).await? {
            Some(found) => Some(cancel(stripe, &found.id, false).await?),
            None => None,
        },
        (false, Some(_)) => None,
        (false, None) => Some(open_subscription(conn, (stripe, prices), user, customer, (key, now)).await?),
    };
    if let Some(s) = settled {
        accounts::replace_subscription(conn, user, &s.id, &s.status).await.map_err(db_failure)?;
    }
    Ok(())
}

/// Cancels subscription `id` at once, with a final invoice of the usage so far when
/// `invoice_now` (else Stripe discards the open period's usage). A subscription cancelled
/// already (by a try whose record rolled back) is answered as it is: Stripe refuses to cancel it
/// twice.
pub(crate) async fn cancel(stripe: &Stripe, id: &str, invoice_now: bool) -> Result<Subscription, HandlerError> {
    let path = format!("subscriptions/{id}");
    let answer = if invoice_now {
        stripe.delete_with::<Subscription>(&path, &params([("invoice_now", "true")])).await
    } else {
        stripe.delete::<Subscription>(&path).await
    };
    match answer {
        Ok(cancelled) => Ok(cancelled),
        Err(e) if !e.is_retryable() => {
            let current: Subscription =
                stripe.get(&path, &Vec::new()).await.map_err(|e| stripe_failure("reading the subscription", e))?;
            if current.status == "canceled" {
                Ok(current)
            } else {
                Err(stripe_failure("cancelling the subscription", e))
            }
        }
        Err(e) => Err(stripe_failure("cancelling the subscription", e)),
    }
}
