//! A deleted person's personal data erased when identity announces their retention period has
//! passed (`UserErasedV1`, decision 0058). provisioning erases, for that person:
//!
//! - `users`: the email and name (empty) and the Auth0 subject (`erased|<user id>`); the row
//!   stays with its status `deleted`.
//! - `project_members`: the Hopsworks email of each of the person's places in projects (empty).
//! - the mail outbox: every sent mail to the address or naming it.
//! - dead letters: the person's `UserCreated` and any message holding the address (decision 0068).
//!
//! It keeps the person's Hopsworks usernames and user ids (`assignments`, `project_members`,
//! `projects.creator_username`): Hopsworks keeps the deactivated account under that username,
//! and provisioning needs it to keep the account deactivated, to tell the account's projects
//! from others' in a project sync and to answer the admins' status drift view. A username is
//! Hopsworks' pseudonym, not the address. A redelivery finds nothing left to erase.

use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::UserErasedV1;
use hopsbridge_domain::{Email, UserId};
use hopsbridge_platform::db::DbError;
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent, parse_uuid};

/// Erases a person's data on `UserErasedV1`.
#[derive(Debug, Clone, Copy)]
pub struct UserErased;

impl Handler<UserErasedV1> for UserErased {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserErasedV1>,
    ) -> Result<(), HandlerError> {
        let id = parse_uuid("user_id", &event.payload.user_id).map(UserId::from_uuid)?;
        erase(conn, id).await?;
        Ok(())
    }
}

#[derive(diesel::QueryableByName)]
struct Address {
    #[diesel(sql_type = Text)]
    email: String,
}

/// Erases what provisioning holds about `id` (see the module).
///
/// # Errors
/// When Postgres fails.
pub async fn erase(conn: &mut AsyncPgConnection, id: UserId) -> Result<(), DbError> {
    let addresses: Vec<Email> = diesel::sql_query(
        "SELECT email FROM users WHERE user_id = $1
         UNION SELECT hopsworks_email FROM project_members WHERE member_id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .get_results::<Address>(conn)
    .await?
    .into_iter()
    .filter_map(|a| Email::parse(&a.email).ok())
    .collect();
    for address in &addresses {
        hopsbridge_platform::mail::erase_sent(conn, address).await?;
    }
    let carried: Vec<&str> = addresses.iter().map(Email::as_str).collect();
    hopsbridge_platform::events::dead_letters::erase_carrying(conn, id.as_uuid(), &carried).await?;
    diesel::sql_query(
        "UPDATE users SET email = '', name = '', auth_subject = 'erased|' || user_id, updated_at = now()
          WHERE user_id = $1 AND auth_subject <> 'erased|' || user_id",
    )
    .bind::<SqlUuid, _>(id)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "UPDATE project_members SET hopsworks_email = '', updated_at = now()
          WHERE member_id = $1 AND hopsworks_email <> ''",
    )
    .bind::<SqlUuid, _>(id)
    .execute(conn)
    .await?;
    Ok(())
}
