//! What billing does when a person is created: one Stripe customer and one subscription of
//! metered prices, made safe to repeat.
//!
//! The account and the customer's id are committed the moment they exist (on a connection of
//! their own, outside the consumer's transaction), so a crash between two calls reuses what was
//! made. The subscription is made last, in the consumer's transaction under the account's
//! lock, by the same step a team change takes ([`crate::memberships::settle`]): a person who
//! joined a team meanwhile gets none. Creates carry an `Idempotency-Key` derived from the event
//! id, which covers a retry within Stripe's 24 hours; before creating, the customer is looked
//! up by email and the `hopsbridge_user_id` metadata, and the subscription by customer and
//! metadata, which covers a retry after the keys expired. A 429, a 5xx or no answer from Stripe
//! is a [`HandlerError::Retry`]: JetStream redelivers with the consumer's backoff.

use crate::accounts;
use crate::catalog::{self, Prices};
use crate::memberships;
use crate::stripe::{Customer, List, Stripe, StripeError, Subscription, params};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::UserCreatedV1;
use hopsbridge_domain::{Email, EventId, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::events::{Handler, HandlerError, NewPerson, ReceivedEvent};
use std::sync::Arc;

/// The metadata key naming the Hopsbridge user on Stripe objects.
pub const USER_ID_METADATA: &str = "hopsbridge_user_id";

/// A test seam run right after Stripe created a customer and before its id is stored; an error
/// stops the handler there, as if the process had been killed.
pub type AfterCustomerCreated = Arc<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

/// Test seams of the `UserCreated` handler.
#[derive(Clone, Default)]
pub struct UserCreatedHooks {
    /// See [`AfterCustomerCreated`].
    pub after_customer_created: Option<AfterCustomerCreated>,
}

impl std::fmt::Debug for UserCreatedHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCreatedHooks")
            .field("after_customer_created", &self.after_customer_created.is_some())
            .finish()
    }
}

/// Opens the billing account of a new person.
#[derive(Debug, Clone)]
pub struct UserCreated {
    db: Database,
    clock: Clock,
    stripe: Stripe,
    prices: Prices,
    hooks: UserCreatedHooks,
}

impl UserCreated {
    /// The handler, on calendar time `clock`.
    #[must_use]
    pub fn new((db, clock): (Database, Clock), stripe: Stripe, prices: Prices, hooks: UserCreatedHooks) -> Self {
        Self { db, clock, stripe, prices, hooks }
    }
}

/// A failed Stripe call as the consumer takes it: retried when trying again may work,
/// rejected when Stripe refused.
pub(crate) fn stripe_failure(what: &str, e: StripeError) -> HandlerError {
    if e.is_retryable() {
        HandlerError::Retry(anyhow::Error::new(e).context(what.to_owned()))
    } else {
        HandlerError::Reject(format!("{what}: {e}"))
    }
}

/// A failed Postgres call: retried.
pub(crate) fn db_failure(e: impl Into<anyhow::Error>) -> HandlerError {
    HandlerError::Retry(e.into())
}

/// The `Idempotency-Key` of a Stripe create made for `event` (`hb-customer-<event id>`), so
/// every delivery of the event asks for the same object.
pub(crate) fn idempotency_key(object: &str, event: EventId) -> String {
    format!("hb-{object}-{event}")
}

impl UserCreated {
    /// The customer made for `user` earlier (found by email, then by metadata).
    async fn find_customer(&self, user: UserId, email: &Email) -> Result<Option<String>, StripeError> {
        let mut after: Option<String> = None;
        loop {
            let mut query = params([("email", email.as_str()), ("limit", "100")]);
            if let Some(a) = &after {
                query.push(("starting_after".into(), a.clone()));
            }
            let page: List<Customer> = self.stripe.get("customers", &query).await?;
            let user = user.to_string();
            if let Some(c) = page.data.iter().find(|c| c.metadata.get(USER_ID_METADATA) == Some(&user)) {
                return Ok(Some(c.id.clone()));
            }
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                _ => return Ok(None),
            }
        }
    }

    async fn customer(&self, event: EventId, person: &NewPerson) -> Result<String, HandlerError> {
        let user = person.user;
        if let Some(found) =
            self.find_customer(user, &person.email).await.map_err(|e| stripe_failure("looking up the customer", e))?
        {
            return Ok(found);
        }
        let user_id = user.to_string();
        let mut form = params([("email", person.email.as_str()), (&format!("metadata[{USER_ID_METADATA}]"), &user_id)]);
        if !person.name.is_empty() {
            form.push(("name".into(), person.name.clone()));
        }
        let key = idempotency_key("customer", event);
        let created: Customer = self
            .stripe
            .post("customers", &form, Some(&key))
            .await
            .map_err(|e| stripe_failure("creating the customer", e))?;
        Ok(created.id)
    }
}

/// The live subscription made for `user` earlier on `customer`.
async fn find_subscription(stripe: &Stripe, user: UserId, customer: &str) -> Result<Option<Subscription>, StripeError> {
    let query = params([("customer", customer), ("limit", "100")]);
    let page: List<Subscription> = stripe.get("subscriptions", &query).await?;
    let user = user.to_string();
    Ok(page.data.into_iter().find(|s| s.status != "canceled" && s.metadata.get(USER_ID_METADATA) == Some(&user)))
}

/// The live subscription of `user` on `customer` that Stripe knows of though billing may not
/// have recorded it (a try whose record was lost made it).
///
/// # Errors
/// [`HandlerError`] when Stripe fails.
pub(crate) async fn unrecorded_subscription(
    stripe: &Stripe,
    user: UserId,
    customer: &str,
) -> Result<Option<Subscription>, HandlerError> {
    find_subscription(stripe, user, customer).await.map_err(|e| stripe_failure("looking up the subscription", e))
}

/// A live subscription of the metered prices for `user` on `customer`: one made earlier, or a
/// new one created with the idempotency key `key`, of the price versions in force at `now`,
/// its periods calendar months (anchored at the 1st of the next UTC month, the time up to it
/// billed then). Its items are recorded (`subscription_items`).
///
/// # Errors
/// [`HandlerError`] when Stripe or Postgres fails or the prices are not ready.
pub(crate) async fn open_subscription(
    conn: &mut AsyncPgConnection,
    (stripe, prices): (&Stripe, &Prices),
    user: UserId,
    customer: &str,
    (key, now): (&str, DateTime<Utc>),
) -> Result<Subscription, HandlerError> {
    if let Some(found) = unrecorded_subscription(stripe, user, customer).await? {
        catalog::record_items(conn, &found).await.map_err(db_failure)?;
        return Ok(found);
    }
    let versions = prices.in_force(conn, now).await.map_err(|e| HandlerError::Retry(e.into()))?;
    let user_id = user.to_string();
    let anchor = next_month(now).timestamp().to_string();
    let mut form = params([
        ("customer", customer),
        (&format!("metadata[{USER_ID_METADATA}]"), &user_id),
        ("billing_cycle_anchor", &anchor),
        ("proration_behavior", "none"),
    ]);
    for (i, version) in versions.iter().enumerate() {
        form.push((format!("items[{i}][price]"), version.stripe_price_id.clone()));
    }
    let opened: Subscription = stripe
        .post("subscriptions", &form, Some(key))
        .await
        .map_err(|e| stripe_failure("creating the subscription", e))?;
    catalog::record_items(conn, &opened).await.map_err(db_failure)?;
    Ok(opened)
}

/// The start of the UTC month after `now`'s.
#[must_use]
pub fn next_month(now: DateTime<Utc>) -> DateTime<Utc> {
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    NaiveDate::from_ymd_opt(year, month, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).map_or(now, |d| d.and_utc())
}

impl Handler<UserCreatedV1> for UserCreated {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        let person = NewPerson::read(&event.payload)?;
        let user = person.user;
        // The account and the customer commit on their own: what Stripe made is never lost
        // with a rollback.
        let mut own = self.db.conn().await.map_err(db_failure)?;
        let account = accounts::open(&mut own, user, &person.email, &person.name).await.map_err(db_failure)?;
        drop(own);

        if account.stripe_customer_id.is_none() {
            let created = self.customer(event.id, &person).await?;
            if let Some(hook) = &self.hooks.after_customer_created {
                hook(&created).map_err(HandlerError::Retry)?;
            }
            let mut own = self.db.conn().await.map_err(db_failure)?;
            accounts::set_customer(&mut own, user, &created).await.map_err(db_failure)?;
        }

        if account.stripe_subscription_id.is_none() {
            let account = accounts::lock(conn, user)
                .await
                .map_err(db_failure)?
                .ok_or_else(|| HandlerError::Retry(anyhow::anyhow!("the account of {user} is gone")))?;
            let key = idempotency_key("subscription", event.id);
            memberships::settle(conn, (&self.stripe, &self.prices), &account, &key, self.clock.now()).await?;
        }
        Ok(())
    }
}
