//! A deleted person's personal data erased when identity announces their retention period has
//! passed (`UserErasedV1`, decision 0058). team erases, for that person:
//!
//! - `people`: the email (NULL) and name (empty); the row stays (id, status `deleted`).
//! - `invitations`: the address of every invitation the person sent (their own team's, already
//!   closed when the account was deleted; one still pending is cancelled), of the one they
//!   accepted, and of every closed invitation to their address. Each is replaced by
//!   `erased+<invitation id>@erased.invalid`; owner, role, status and times stay. A pending
//!   invitation another owner sent to the address stays: it is an offer to the address, which
//!   its owner controls and a new account with that address may accept.
//! - `accounts`: the Hopsworks username (empty); cluster and times stay.
//! - the mail outbox: every sent mail to the address or naming it.
//! - dead letters: the person's `UserCreated` and any message holding the address (decision 0068).
//!
//! Memberships and usage stay under the user id. A redelivery finds nothing left to erase.

use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::UserErasedV1;
use hopsbridge_domain::{Email, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::DbError;
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent, parse_uuid};

/// Erases a person's data on `UserErasedV1`.
#[derive(Debug, Clone)]
pub struct UserErased {
    /// Calendar time (when a still-pending invitation is closed).
    pub clock: Clock,
}

impl Handler<UserErasedV1> for UserErased {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserErasedV1>,
    ) -> Result<(), HandlerError> {
        let id = parse_uuid("user_id", &event.payload.user_id).map(UserId::from_uuid)?;
        erase(conn, id, self.clock.now()).await?;
        Ok(())
    }
}

#[derive(diesel::QueryableByName)]
struct Address {
    #[diesel(sql_type = Nullable<Text>)]
    email: Option<String>,
}

/// Erases what team holds about `id` (see the module), at calendar time `now`.
///
/// # Errors
/// When Postgres fails.
pub async fn erase(
    conn: &mut AsyncPgConnection,
    id: UserId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), DbError> {
    let address: Option<Email> = diesel::sql_query("SELECT email FROM people WHERE id = $1 FOR UPDATE")
        .bind::<SqlUuid, _>(id)
        .get_results::<Address>(conn)
        .await?
        .into_iter()
        .find_map(|a| a.email)
        .and_then(|e| Email::parse(&e).ok());
    if let Some(address) = &address {
        hopsbridge_platform::mail::erase_sent(conn, address).await?;
    }
    let carried: Vec<&str> = address.iter().map(Email::as_str).collect();
    hopsbridge_platform::events::dead_letters::erase_carrying(conn, id.as_uuid(), &carried).await?;
    diesel::sql_query(
        "UPDATE invitations
            SET email = 'erased+' || id || '@erased.invalid',
                status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
                closed_at = coalesce(closed_at, $3)
          WHERE (owner_user_id = $1 OR accepted_by = $1 OR (email = $2 AND status <> 'pending'))
            AND email <> 'erased+' || id || '@erased.invalid'",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<Text>, _>(address.as_ref().map(Email::as_str))
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await?;
    diesel::sql_query("UPDATE accounts SET hopsworks_username = '' WHERE user_id = $1 AND hopsworks_username <> ''")
        .bind::<SqlUuid, _>(id)
        .execute(conn)
        .await?;
    diesel::sql_query(
        "UPDATE people SET email = NULL, name = '', updated_at = now()
          WHERE id = $1 AND (email IS NOT NULL OR name <> '')",
    )
    .bind::<SqlUuid, _>(id)
    .execute(conn)
    .await?;
    Ok(())
}
