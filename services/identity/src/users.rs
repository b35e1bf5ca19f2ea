//! The users table and everything that changes it. Each change that others must hear about
//! writes its event to the outbox in the same transaction.

use crate::error::{IdentityCode, IdentityError};
use crate::memberships;
use crate::schema::users;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{UserCreatedV1, UserDeletedV1, UserReactivatedV1, UserSuspendedV1};
use hopsbridge_domain::{AccountStatus, AuthSubject, Email, OwnerId, UserId};
use hopsbridge_platform::events::enqueue_at;
use serde::Serialize;

/// A user as stored and as answered.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = users)]
pub struct User {
    /// Hopsbridge's id.
    pub id: UserId,
    /// The Auth0 tenant that issued the subject (its issuer, with the trailing slash): a person
    /// is the pair, a subject being unique only within its tenant.
    pub auth_issuer: String,
    /// The Auth0 subject.
    pub auth_subject: AuthSubject,
    /// Lowercased email.
    pub email: Email,
    /// Display name.
    pub name: String,
    /// Operates the platform.
    pub is_admin: bool,
    /// `active`, `suspended` or `deleted`.
    pub status: AccountStatus,
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
    /// The tenant that issued the subject.
    pub issuer: String,
    /// The Auth0 subject.
    pub subject: AuthSubject,
    /// Their email.
    pub email: Email,
    /// Their name (may be empty).
    pub name: String,
}

/// Finds the user with the person's issuer and subject, creating them (and their
/// `UserCreatedV1`) if they do not exist yet. Safe to race: the (issuer, subject) unique key
/// lets one insert win and the other find it. Returns the user and whether this call created
/// them (at calendar time `now`, as the event says).
///
/// # Errors
/// [`IdentityError::EmailInUse`] when another account has the email.
pub async fn create_if_absent(
    conn: &mut AsyncPgConnection,
    person: &NewPerson,
    now: DateTime<Utc>,
) -> Result<(User, bool), IdentityError> {
    if let Some(user) = adopt(conn, &person.issuer, &person.subject).await? {
        return Ok((user, false));
    }
    let inserted: Option<User> = diesel::insert_into(users::table)
        .values((
            users::id.eq(UserId::new()),
            users::auth_issuer.eq(&person.issuer),
            users::auth_subject.eq(&person.subject),
            users::email.eq(&person.email),
            users::name.eq(&person.name),
        ))
        .on_conflict((users::auth_issuer, users::auth_subject))
        .do_nothing()
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    match inserted {
        Some(user) => {
            let event = UserCreatedV1 {
                user_id: user.id.to_string(),
                auth_subject: user.auth_subject.to_string(),
                email: user.email.to_string(),
                name: user.name.clone(),
            };
            enqueue_at(conn, &event, None, now).await?;
            Ok((user, true))
        }
        None => Ok((by_identity(conn, &person.issuer, &person.subject).await?, false)),
    }
}

/// The user `subject` of `issuer` is: the one recorded with both, or an account made before
/// issuers were kept (issuer `''`) with that subject, which is bound to `issuer` from now on.
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn by_identity(
    conn: &mut AsyncPgConnection,
    issuer: &str,
    subject: &AuthSubject,
) -> Result<User, IdentityError> {
    let found = users::table
        .filter(users::auth_issuer.eq(issuer))
        .filter(users::auth_subject.eq(subject))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()?;
    match found {
        Some(user) => Ok(user),
        None => adopt(conn, issuer, subject).await?.ok_or(IdentityError::NotFound),
    }
}

/// Binds the account made before issuers were kept that has `subject` to `issuer`, and returns
/// it. Only the first issuer to name the subject gets it: after that it is no longer `''`.
async fn adopt(
    conn: &mut AsyncPgConnection,
    issuer: &str,
    subject: &AuthSubject,
) -> Result<Option<User>, IdentityError> {
    Ok(diesel::update(users::table.filter(users::auth_issuer.eq("")).filter(users::auth_subject.eq(subject)))
        .set(users::auth_issuer.eq(issuer))
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// The user with `id`.
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn get(conn: &mut AsyncPgConnection, id: UserId) -> Result<User, IdentityError> {
    Ok(users::table.find(id).select(User::as_select()).first(conn).await?)
}

/// Records an authenticated call.
///
/// # Errors
/// When Postgres fails.
pub async fn touch_login(conn: &mut AsyncPgConnection, id: UserId) -> Result<(), IdentityError> {
    diesel::update(users::table.find(id)).set(users::last_login_at.eq(diesel::dsl::now)).execute(conn).await?;
    Ok(())
}

/// Renames a user.
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn rename(conn: &mut AsyncPgConnection, id: UserId, name: &str) -> Result<User, IdentityError> {
    Ok(diesel::update(users::table.find(id))
        .set((users::name.eq(name), users::updated_at.eq(diesel::dsl::now)))
        .returning(User::as_returning())
        .get_result(conn)
        .await?)
}

/// The user with `id` and the owner whose account they are billed to at calendar time `now`
/// (themselves unless they are a team member).
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn get_with_owner(
    conn: &mut AsyncPgConnection,
    id: UserId,
    now: DateTime<Utc>,
) -> Result<(User, OwnerId), IdentityError> {
    let user = get(conn, id).await?;
    let owner = memberships::owner_at(conn, id, now).await?.unwrap_or(user.id.as_owner());
    Ok((user, owner))
}

/// Marks an owner's account deleted and publishes `UserDeletedV1`. Refused for a team member
/// at calendar time `now` (their owner removes them). The caller has asked the team service first that the owner has
/// no members (identity does not keep owners' teams whole: it keeps each member's owner).
///
/// # Errors
/// [`IdentityError::Refused`] as above.
pub async fn delete_account(
    conn: &mut AsyncPgConnection,
    id: UserId,
    now: DateTime<Utc>,
) -> Result<User, IdentityError> {
    let user = lock(conn, id).await?;
    if user.status == AccountStatus::Deleted {
        return Ok(user);
    }
    if memberships::owner_at(conn, id, now).await?.is_some() {
        return Err(IdentityError::Refused(IdentityCode::MemberAccount));
    }
    let user = set_status(conn, id, AccountStatus::Deleted).await?;
    enqueue_at(conn, &UserDeletedV1 { user_id: id.to_string() }, None, now).await?;
    Ok(user)
}

/// Suspends an active account and publishes `UserSuspendedV1` (at calendar time `now`);
/// suspending a suspended account changes nothing.
///
/// # Errors
/// [`IdentityError::Refused`] for a deleted account.
pub async fn suspend(
    conn: &mut AsyncPgConnection,
    id: UserId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<User, IdentityError> {
    let user = lock(conn, id).await?;
    match user.status {
        AccountStatus::Suspended => Ok(user),
        AccountStatus::Deleted => Err(IdentityError::Refused(IdentityCode::AccountDeletedConflict)),
        AccountStatus::Active => {
            let user = set_status(conn, id, AccountStatus::Suspended).await?;
            let event = UserSuspendedV1 { user_id: id.to_string(), reason: reason.to_owned() };
            enqueue_at(conn, &event, None, now).await?;
            Ok(user)
        }
    }
}

/// Reactivates a suspended account and publishes `UserReactivatedV1` (at calendar time `now`);
/// an active account is left as it is.
///
/// # Errors
/// [`IdentityError::Refused`] for a deleted account.
pub async fn reactivate(conn: &mut AsyncPgConnection, id: UserId, now: DateTime<Utc>) -> Result<User, IdentityError> {
    let user = lock(conn, id).await?;
    match user.status {
        AccountStatus::Active => Ok(user),
        AccountStatus::Deleted => Err(IdentityError::Refused(IdentityCode::AccountDeletedConflict)),
        AccountStatus::Suspended => {
            let user = set_status(conn, id, AccountStatus::Active).await?;
            enqueue_at(conn, &UserReactivatedV1 { user_id: id.to_string() }, None, now).await?;
            Ok(user)
        }
    }
}

/// Grants or revokes admin.
///
/// # Errors
/// [`IdentityError::NotFound`].
pub async fn set_admin(conn: &mut AsyncPgConnection, id: UserId, admin: bool) -> Result<User, IdentityError> {
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

async fn lock(conn: &mut AsyncPgConnection, id: UserId) -> Result<User, IdentityError> {
    Ok(users::table.find(id).select(User::as_select()).for_update().first(conn).await?)
}

async fn set_status(conn: &mut AsyncPgConnection, id: UserId, to: AccountStatus) -> Result<User, IdentityError> {
    Ok(diesel::update(users::table.find(id))
        .set((users::status.eq(to), users::updated_at.eq(diesel::dsl::now)))
        .returning(User::as_returning())
        .get_result(conn)
        .await?)
}
