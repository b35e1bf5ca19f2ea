//! A deleted person's personal data erased when identity announces their retention period has
//! passed (`UserErasedV1`, decision 0058). billing erases, for that person:
//!
//! - the Stripe customer's email and name, through `POST /v1/customers/{id}` with both empty
//!   (Stripe unsets a field given an empty string); a customer Stripe no longer has
//!   (`resource_missing`) holds nothing more to erase;
//! - `accounts`: the email and name (empty); the row stays (billing mode, Stripe ids, status);
//! - the mail outbox: every sent mail to the address or naming it.
//! - dead letters: the person's `UserCreated` and any message holding the address, first, even
//!   when billing has no account of theirs (decision 0068).
//!
//! Invoices, the ledger, meter reports, credits and payment methods' brand and last four digits
//! stay under the user id and the Stripe customer id: they are the records billing must keep.
//! Stripe first, then our rows, in the handler's transaction: when Stripe fails, nothing is
//! committed and the event is delivered again; a redelivery after success finds the account's
//! email empty and asks Stripe nothing.

use crate::stripe::{Stripe, params};
use diesel::sql_types::{Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::UserErasedV1;
use hopsbridge_domain::{Email, UserId};
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent, parse_uuid};

/// Erases a person's data on `UserErasedV1`.
#[derive(Debug, Clone)]
pub struct UserErased {
    stripe: Stripe,
}

impl UserErased {
    /// The handler, redacting Stripe customers through `stripe`.
    #[must_use]
    pub const fn new(stripe: Stripe) -> Self {
        Self { stripe }
    }
}

impl Handler<UserErasedV1> for UserErased {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserErasedV1>,
    ) -> Result<(), HandlerError> {
        let id = parse_uuid("user_id", &event.payload.user_id).map(UserId::from_uuid)?;
        erase(conn, &self.stripe, id).await
    }
}

#[derive(diesel::QueryableByName)]
struct Account {
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    stripe_customer_id: Option<String>,
}

/// Erases what billing holds about `id` (see the module), the Stripe customer's copy first.
///
/// # Errors
/// [`HandlerError::Retry`] when Stripe or Postgres fails and may work later;
/// [`HandlerError::Reject`] when Stripe refuses the request itself.
pub async fn erase(conn: &mut AsyncPgConnection, stripe: &Stripe, id: UserId) -> Result<(), HandlerError> {
    let account =
        diesel::sql_query("SELECT email, name, stripe_customer_id FROM accounts WHERE user_id = $1 FOR UPDATE")
            .bind::<SqlUuid, _>(id)
            .get_results::<Account>(conn)
            .await?
            .into_iter()
            .next();
    // Dead letters carrying the person's data go whether or not billing has their account.
    let address = account.as_ref().map_or("", |a| a.email.as_str());
    hopsbridge_platform::events::dead_letters::erase_carrying(conn, id.as_uuid(), &[address]).await?;
    let Some(account) = account else {
        return Ok(());
    };
    if account.email.is_empty() && account.name.is_empty() {
        return Ok(());
    }
    if let Some(customer) = &account.stripe_customer_id {
        let form = params([("email", ""), ("name", "")]);
        let key = format!("hb-erase-{id}");
        match stripe.post::<serde_json::Value>(&format!("customers/{customer}"), &form, Some(&key)).await {
            Ok(_) => {}
            Err(e) if e.code() == Some("resource_missing") => {}
            Err(e) if e.is_retryable() => {
                return Err(HandlerError::Retry(anyhow::Error::new(e).context("redacting the Stripe customer")));
            }
            Err(e) => return Err(HandlerError::Reject(format!("Stripe refused redacting {customer}: {e}"))),
        }
    }
    if let Ok(address) = Email::parse(&account.email) {
        hopsbridge_platform::mail::erase_sent(conn, &address).await?;
    }
    diesel::sql_query("UPDATE accounts SET email = '', name = '', updated_at = now() WHERE user_id = $1")
        .bind::<SqlUuid, _>(id)
        .execute(conn)
        .await?;
    tracing::info!(user = %id, "personal data erased, the Stripe customer's included");
    Ok(())
}
