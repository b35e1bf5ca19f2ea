//! The projection of people provisioning needs to create their Hopsworks accounts, kept from
//! identity's events.

use crate::schema::users;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{AccountStatus, UserId};
use std::collections::HashMap;

/// A person.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct Person {
    /// Hopsbridge id.
    pub user_id: UserId,
    /// Auth0 subject.
    pub auth_subject: String,
    /// Email.
    pub email: String,
    /// Display name (may be empty).
    pub name: String,
    /// Whether they may use Hopsbridge.
    pub status: AccountStatus,
}

/// Records a person from UserCreatedV1; a repeat changes nothing but the details.
///
/// # Errors
/// When Postgres fails.
pub async fn upsert(conn: &mut AsyncPgConnection, person: &Person) -> Result<(), diesel::result::Error> {
    diesel::insert_into(users::table)
        .values((
            users::user_id.eq(person.user_id),
            users::auth_subject.eq(&person.auth_subject),
            users::email.eq(&person.email),
            users::name.eq(&person.name),
        ))
        .on_conflict(users::user_id)
        .do_update()
        .set((
            users::auth_subject.eq(&person.auth_subject),
            users::email.eq(&person.email),
            users::name.eq(&person.name),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a status change. A person not yet known is recorded once UserCreatedV1 arrives; a
/// deleted person stays deleted. Returns whether a row changed.
///
/// # Errors
/// When Postgres fails.
pub async fn set_status(
    conn: &mut AsyncPgConnection,
    id: UserId,
    to: AccountStatus,
) -> Result<bool, diesel::result::Error> {
    let n = diesel::update(users::table.find(id).filter(users::status.ne(AccountStatus::Deleted)))
        .set((users::status.eq(to), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// The person with `id`, if known.
///
/// # Errors
/// When Postgres fails.
pub async fn get(mut conn: &AsyncPgConnection, id: UserId) -> Result<Option<Person>, diesel::result::Error> {
    users::table.find(id).select(Person::as_select()).first(&mut conn).await.optional()
}

/// The known people among `ids`, by id.
///
/// # Errors
/// When Postgres fails.
pub async fn get_many(
    mut conn: &AsyncPgConnection,
    ids: &[UserId],
) -> Result<HashMap<UserId, Person>, diesel::result::Error> {
    let people: Vec<Person> =
        users::table.filter(users::user_id.eq_any(ids)).select(Person::as_select()).load(&mut conn).await?;
    Ok(people.into_iter().map(|p| (p.user_id, p)).collect())
}
