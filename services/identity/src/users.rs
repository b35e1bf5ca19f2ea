//! The users table and everything that changes it. Each change that others must hear about
//! writes its event to the outbox in the same transaction.

use crate::error::IdentityError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{UserCreatedV1, UserDeletedV1, UserReactivatedV1, UserSuspendedV1};
use hopsbridge_domain::{AuthSubject, Email};
use hopsbridge_platform::events::enqueue;
use serde::Serialize;
use uuid::Uuid;

diesel::table! {
    /// People.
    users (id) {
        id -> Uuid,
        auth_subject -> Text,
        email -> Text,
        name -> Text,
        is_admin -> Bool,
        status -> Text,
        created_at -> Timestamptz,
        last_login_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// Team memberships, as the team service announces them.
    team_members (member_user_id) {
        member_user_id -> Uuid,
        owner_user_id -> Uuid,
        joined_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(users, team_members);

/// An account's state.
pub mod status {
    /// May use Hopsbridge.
    pub const ACTIVE: &str = "active";
    /// Blocked by an admin (or by billing); may be reactivated.
    pub const SUSPENDED: &str = "suspended";
    /// Deleted by its owner; kept for the record, never reactivated.
    pub const DELETED: &str = "deleted";
}

/// A user as stored and as answered.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = users)]
pub struct User {
    /// Hopsbridge's id.
    pub id: Uuid,
    /// The Auth0 subject.
    pub auth_subject: String,
    /// Lowercased email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Operates the platform.
    pub is_admin: bool,
    /// `active`, `suspended` or `deleted`.
    pub status: String,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// The last authenticated call.
    pub last_login_at: Option<DateTime<Utc>>,
    /// The last change.
    pub updated_at: DateTime<Utc>,
}

/// Someone to create: what the Action or the first token says about them.
#[derive(Clone, Debug)]
pub struct NewPerson {
    /// The Auth0 subject.
    pub subject: AuthSubject,
    /// Their email.
    pub email: Email,
    /// Their name (may be empty).
    pub name: String,
}

/// Finds the user with `subject`, creating them (and their `UserCreatedV1`) if they do not
/// exist yet. Safe to race: the subject's unique key lets one insert win and the other find it.
/// Returns the user and whether this call created them.
///
/// # Errors
/// [`IdentityError::EmailInUse`] when another account has the email.
pub async fn create_if_absent(conn: &mut AsyncPgConnection, person: &NewPerson) -> Result<(User, bool), IdentityError> {
    let inserted: Option<User> = diesel::insert_into(users::table)
        .values((
            users::id.eq(Uuid::now_v7()),
            users::auth_subject.eq(person.subject.as_str()),
            users::email.eq(person.email.as_str()),
            users::name.eq(&person.name),
        ))
        .on_conflict(users::auth_subject)
        .do_nothing()
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    match inserted {
        Some(user) => {
            let event = UserCreatedV1 {
                user_id: user.id.to_string(),
                auth_subject: user.auth_subject.clone(),
                email: user.email.clone(),
                name: user.name.clone(),
            };
            enqueue(conn, &event, None).await?;
            Ok((user, true))
        }
        None => Ok((by_subject(conn, person.subject.as_str()).await?, false)),
    }
}

/// The user with `subject`.
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn by_subject(conn: &mut AsyncPgConnection, subject: &str) -> Result<User, IdentityError> {
    Ok(users::table.filter(users::auth_subject.eq(subject)).select(User::as_select()).first(conn).await?)
}

/// The user with `id`.
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> Result<User, IdentityError> {
    Ok(users::table.find(id).select(User::as_select()).first(conn).await?)
}

/// Records an authenticated call.
///
/// # Errors
/// When Postgres fails.
pub async fn touch_login(conn: &mut AsyncPgConnection, id: Uuid) -> Result<(), IdentityError> {
    diesel::update(users::table.find(id)).set(users::last_login_at.eq(diesel::dsl::now)).execute(conn).await?;
    Ok(())
}

/// Renames a user.
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn rename(conn: &mut AsyncPgConnection, id: Uuid, name: &str) -> Result<User, IdentityError> {
    Ok(diesel::update(users::table.find(id))
        .set((users::name.eq(name), users::updated_at.eq(diesel::dsl::now)))
        .returning(User::as_returning())
        .get_result(conn)
        .await?)
}

/// The user with `id` and the owner whose account they are billed to (themselves unless they
/// are a team member), in one statement.
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn get_with_owner(conn: &mut AsyncPgConnection, id: Uuid) -> Result<(User, Uuid), IdentityError> {
    let (user, owner): (User, Option<Uuid>) = users::table
        .left_join(team_members::table.on(team_members::member_user_id.eq(users::id)))
        .filter(users::id.eq(id))
        .select((User::as_select(), team_members::owner_user_id.nullable()))
        .first(conn)
        .await?;
    let owner = owner.unwrap_or(user.id);
    Ok((user, owner))
}

/// The owner whose team `member` belongs to, if any.
///
/// # Errors
/// When Postgres fails.
pub async fn owner_of(conn: &mut AsyncPgConnection, member: Uuid) -> Result<Option<Uuid>, IdentityError> {
    Ok(team_members::table.find(member).select(team_members::owner_user_id).first(conn).await.optional()?)
}

/// How many members `owner`'s team has.
///
/// # Errors
/// When Postgres fails.
pub async fn member_count(conn: &mut AsyncPgConnection, owner: Uuid) -> Result<i64, IdentityError> {
    Ok(team_members::table.filter(team_members::owner_user_id.eq(owner)).count().get_result(conn).await?)
}

/// Marks an owner's account deleted and publishes `UserDeletedV1`. Refused for a team member
/// (their owner removes them) and for an owner who still has members.
///
/// # Errors
/// [`IdentityError::Conflict`] as above.
pub async fn delete_account(conn: &mut AsyncPgConnection, id: Uuid) -> Result<User, IdentityError> {
    let user = lock(conn, id).await?;
    if user.status == status::DELETED {
        return Ok(user);
    }
    if owner_of(conn, id).await?.is_some() {
        return Err(IdentityError::Conflict(
            "member_account",
            "a team member's account is removed by its owner".into(),
        ));
    }
    if member_count(conn, id).await? > 0 {
        return Err(IdentityError::Conflict(
            "team_not_empty",
            "remove your team members before deleting the account".into(),
        ));
    }
    let user = set_status(conn, id, status::DELETED).await?;
    enqueue(conn, &UserDeletedV1 { user_id: id.to_string() }, None).await?;
    Ok(user)
}

/// Suspends an active account and publishes `UserSuspendedV1`; suspending a suspended account
/// changes nothing.
///
/// # Errors
/// [`IdentityError::Conflict`] for a deleted account.
pub async fn suspend(conn: &mut AsyncPgConnection, id: Uuid, reason: &str) -> Result<User, IdentityError> {
    let user = lock(conn, id).await?;
    match user.status.as_str() {
        status::SUSPENDED => Ok(user),
        status::DELETED => Err(IdentityError::Conflict("account_deleted", "the account is deleted".into())),
        _ => {
            let user = set_status(conn, id, status::SUSPENDED).await?;
            enqueue(conn, &UserSuspendedV1 { user_id: id.to_string(), reason: reason.to_owned() }, None).await?;
            Ok(user)
        }
    }
}

/// Reactivates a suspended account and publishes `UserReactivatedV1`; an active account is left
/// as it is.
///
/// # Errors
/// [`IdentityError::Conflict`] for a deleted account.
pub async fn reactivate(conn: &mut AsyncPgConnection, id: Uuid) -> Result<User, IdentityError> {
    let user = lock(conn, id).await?;
    match user.status.as_str() {
        status::ACTIVE => Ok(user),
        status::DELETED => Err(IdentityError::Conflict("account_deleted", "the account is deleted".into())),
        _ => {
            let user = set_status(conn, id, status::ACTIVE).await?;
            enqueue(conn, &UserReactivatedV1 { user_id: id.to_string() }, None).await?;
            Ok(user)
        }
    }
}

/// Grants or revokes admin.
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn set_admin(conn: &mut AsyncPgConnection, id: Uuid, admin: bool) -> Result<User, IdentityError> {
    Ok(diesel::update(users::table.find(id))
        .set((users::is_admin.eq(admin), users::updated_at.eq(diesel::dsl::now)))
        .returning(User::as_returning())
        .get_result(conn)
        .await?)
}

/// A page of users, newest first, optionally matching `query` in the email or name.
///
/// # Errors
/// When Postgres fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    query: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<User>, i64), IdentityError> {
    let filter = |q: Option<&str>| {
        let mut f = users::table.into_boxed();
        if let Some(q) = q {
            let pattern = format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            f = f.filter(users::email.ilike(pattern.clone()).or(users::name.ilike(pattern)));
        }
        f
    };
    let total = filter(query).count().get_result(conn).await?;
    let items = filter(query)
        .order((users::created_at.desc(), users::id.desc()))
        .limit(limit)
        .offset(offset)
        .select(User::as_select())
        .load(conn)
        .await?;
    Ok((items, total))
}

/// Adds or moves a member to `owner`'s team (from TeamMemberJoinedV1).
///
/// # Errors
/// When Postgres fails.
pub async fn record_membership(conn: &mut AsyncPgConnection, owner: Uuid, member: Uuid) -> Result<(), IdentityError> {
    diesel::insert_into(team_members::table)
        .values((team_members::member_user_id.eq(member), team_members::owner_user_id.eq(owner)))
        .on_conflict(team_members::member_user_id)
        .do_update()
        .set(team_members::owner_user_id.eq(owner))
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes a member from `owner`'s team (from TeamMemberRemovedV1).
///
/// # Errors
/// When Postgres fails.
pub async fn remove_membership(conn: &mut AsyncPgConnection, owner: Uuid, member: Uuid) -> Result<(), IdentityError> {
    diesel::delete(
        team_members::table
            .filter(team_members::member_user_id.eq(member))
            .filter(team_members::owner_user_id.eq(owner)),
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn lock(conn: &mut AsyncPgConnection, id: Uuid) -> Result<User, IdentityError> {
    Ok(users::table.find(id).select(User::as_select()).for_update().first(conn).await?)
}

async fn set_status(conn: &mut AsyncPgConnection, id: Uuid, to: &str) -> Result<User, IdentityError> {
    Ok(diesel::update(users::table.find(id))
        .set((users::status.eq(to), users::updated_at.eq(diesel::dsl::now)))
        .returning(User::as_returning())
        .get_result(conn)
        .await?)
}
