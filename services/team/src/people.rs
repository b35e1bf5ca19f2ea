//! People as identity announces them (`people`): their address and name, for invitations and
//! the team view, and their account status. Events about one person arrive in any order; a
//! status change applies only when it is no older than the one kept, and deleted is final.

use crate::error::TeamError;
use crate::schema::people;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{AccountStatus, Email, UserId};

/// A person as team knows them.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = people)]
pub struct Person {
    /// Their user id.
    pub id: UserId,
    /// Their address, once their `UserCreatedV1` (or their own call) told it.
    pub email: Option<Email>,
    /// Their name (may be empty).
    pub name: String,
    /// Their account's status.
    pub status: AccountStatus,
}

impl Person {
    /// What to call them in a mail or a view: their name, else their address.
    #[must_use]
    pub fn display_name(&self) -> String {
        match (&self.email, self.name.trim()) {
            (_, name) if !name.is_empty() => name.to_owned(),
            (Some(email), _) => email.to_string(),
            (None, _) => self.id.to_string(),
        }
    }
}

/// Records a person identity created (`UserCreatedV1`), or fills in the address and name of one
/// a status event already introduced.
///
/// # Errors
/// When Postgres fails.
pub async fn created(conn: &mut AsyncPgConnection, id: UserId, email: &Email, name: &str) -> Result<(), TeamError> {
    diesel::insert_into(people::table)
        .values((people::id.eq(id), people::email.eq(email), people::name.eq(name)))
        .on_conflict(people::id)
        .do_update()
        .set((
            people::email.eq(excluded(people::email)),
            people::name.eq(excluded(people::name)),
            people::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes sure a person the gateway vouched for (their id and address) is known, without
/// changing one already known.
///
/// # Errors
/// When Postgres fails.
pub async fn ensure(conn: &mut AsyncPgConnection, id: UserId, email: &Email) -> Result<(), TeamError> {
    diesel::insert_into(people::table)
        .values((people::id.eq(id), people::email.eq(email)))
        .on_conflict(people::id)
        .do_nothing()
        .execute(conn)
        .await?;
    diesel::update(people::table.find(id).filter(people::email.is_null()))
        .set(people::email.eq(email))
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies a status change that happened at `at`, unless a later one was already applied or
/// the account is deleted.
///
/// # Errors
/// When Postgres fails.
pub async fn set_status(
    conn: &mut AsyncPgConnection,
    id: UserId,
    status: AccountStatus,
    at: DateTime<Utc>,
) -> Result<(), TeamError> {
    let upsert = diesel::insert_into(people::table)
        .values((people::id.eq(id), people::status.eq(status), people::status_at.eq(at)))
        .on_conflict(people::id)
        .do_update()
        .set((
            people::status.eq(excluded(people::status)),
            people::status_at.eq(excluded(people::status_at)),
            people::updated_at.eq(diesel::dsl::now),
        ));
    let newer = people::status_at.le(excluded(people::status_at)).and(people::status.ne(AccountStatus::Deleted));
    // ON CONFLICT … DO UPDATE … WHERE: the trait is named because QueryDsl's filter is in scope.
    diesel::query_dsl::methods::FilterDsl::filter(upsert, newer).execute(conn).await?;
    if status == AccountStatus::Deleted {
        // Deleted is final, whatever the order its events arrived in.
        diesel::update(people::table.find(id)).set(people::status.eq(status)).execute(conn).await?;
    }
    Ok(())
}

/// The person with `id`, if known.
///
/// # Errors
/// When Postgres fails.
pub async fn find(conn: &mut AsyncPgConnection, id: UserId) -> Result<Option<Person>, TeamError> {
    Ok(people::table.find(id).select(Person::as_select()).first(conn).await.optional()?)
}

/// The people (not deleted) with the address `email`.
///
/// # Errors
/// When Postgres fails.
pub async fn with_email(conn: &mut AsyncPgConnection, email: &Email) -> Result<Vec<UserId>, TeamError> {
    Ok(people::table
        .filter(people::email.eq(email))
        .filter(people::status.ne(AccountStatus::Deleted))
        .select(people::id)
        .load(conn)
        .await?)
}
