//! The users table and everything that changes it. Each change that others must hear about
//! writes its event to the outbox in the same transaction.

use crate::error::{IdentityCode, IdentityError};
use crate::memberships;
use crate::schema::users;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{UserCreatedV1, UserDeletedV1, UserReactivatedV1, UserSignedInV1, UserSuspendedV1};
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
    /// The last authenticated call, to the minute.
    pub last_login_at: Option<DateTime<Utc>>,
    /// The last change.
    pub updated_at: DateTime<Utc>,
    /// Who suspended a suspended account: `admin`, `billing` or `owner` (the account's owner
    /// was suspended). Lifting a suspension undoes only its author's.
    pub suspended_by: Option<String>,
    /// Why, as `UserSuspendedV1` said it.
    pub suspension_reason: Option<String>,
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

/// Records an authenticated call, to the minute: when the last one recorded is at least a
/// minute old. The gateway resolves every active person every few seconds (its caller cache's
/// refreshes); recording each of those would put a commit (a WAL flush) on every resolution.
///
/// # Errors
/// When Postgres fails.
pub async fn touch_login(conn: &mut AsyncPgConnection, id: UserId) -> Result<(), IdentityError> {
    let stale =
        diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>>("now() - interval '1 minute'");
    diesel::update(users::table.find(id).filter(users::last_login_at.is_null().or(users::last_login_at.lt(stale))))
        .set(users::last_login_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(())
}

/// Announces that the person `id` signed in through the browser login (`UserSignedInV1`, at
/// calendar time `now`), for each service to complete what earlier steps left undone.
///
/// # Errors
/// When Postgres fails.
pub async fn signed_in(conn: &mut AsyncPgConnection, id: UserId, now: DateTime<Utc>) -> Result<(), IdentityError> {
    enqueue_at(conn, &UserSignedInV1 { user_id: id.to_string() }, None, now).await?;
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
    // The calendar time of the deletion starts the retention of the person's data (decision
    // 0058, [`crate::erasure`]).
    let user = diesel::update(users::table.find(id))
        .set((
            users::status.eq(AccountStatus::Deleted),
            users::deleted_at.eq(now),
            users::suspended_by.eq(None::<String>),
            users::suspension_reason.eq(None::<String>),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .returning(User::as_returning())
        .get_result(conn)
        .await?;
    enqueue_at(conn, &UserDeletedV1 { user_id: id.to_string() }, None, now).await?;
    Ok(user)
}

/// Who suspends an account, lowest rank first: an owner's suspension reaches their members,
/// billing suspends for a restriction, an administrator for any reason. A suspension by a
/// higher rank takes over a lower one (an admin suspending an account billing suspended makes
/// it the admin's), so lifting a suspension never undoes a higher one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Suspender {
    /// The account's owner was suspended (members only).
    Owner,
    /// Billing: a restriction held past its deadline.
    Billing,
    /// An administrator.
    Admin,
}

impl Suspender {
    /// As stored in `users.suspended_by`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Billing => "billing",
            Self::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Owner, Self::Billing, Self::Admin].into_iter().find(|x| x.as_str() == s)
    }
}

/// Why a member is suspended when their owner is.
pub const OWNER_SUSPENDED: &str = "owner_suspended";

/// Suspends the account `id` by `by` and publishes `UserSuspendedV1` with `reason` (at calendar
/// time `now`). An account suspended already stays so with no new event; it becomes `by`'s
/// when `by` outranks its current suspender.
///
/// # Errors
/// [`IdentityError::Refused`] for a deleted account.
pub async fn suspend_by(
    conn: &mut AsyncPgConnection,
    id: UserId,
    by: Suspender,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<User, IdentityError> {
    let user = lock(conn, id).await?;
    match user.status {
        AccountStatus::Deleted => Err(IdentityError::Refused(IdentityCode::AccountDeletedConflict)),
        AccountStatus::Suspended => {
            let current = user.suspended_by.as_deref().and_then(Suspender::parse).unwrap_or(Suspender::Admin);
            if by <= current {
                return Ok(user);
            }
            Ok(diesel::update(users::table.find(id))
                .set((
                    users::suspended_by.eq(by.as_str()),
                    users::suspension_reason.eq(reason),
                    users::updated_at.eq(diesel::dsl::now),
                ))
                .returning(User::as_returning())
                .get_result(conn)
                .await?)
        }
        AccountStatus::Active => {
            let user = diesel::update(users::table.find(id))
                .set((
                    users::status.eq(AccountStatus::Suspended),
                    users::suspended_by.eq(by.as_str()),
                    users::suspension_reason.eq(reason),
                    users::updated_at.eq(diesel::dsl::now),
                ))
                .returning(User::as_returning())
                .get_result(conn)
                .await?;
            let event = UserSuspendedV1 { user_id: id.to_string(), reason: reason.to_owned() };
            enqueue_at(conn, &event, None, now).await?;
            Ok(user)
        }
    }
}

/// Reactivates the suspended account `id` and publishes `UserReactivatedV1` (at calendar time
/// `now`): any suspension when `by` is `None` (an administrator), only `by`'s own otherwise.
/// An active account, or one suspended by someone else, is left as it is.
///
/// # Errors
/// [`IdentityError::Refused`] for a deleted account.
pub async fn lift(
    conn: &mut AsyncPgConnection,
    id: UserId,
    by: Option<Suspender>,
    now: DateTime<Utc>,
) -> Result<User, IdentityError> {
    let user = lock(conn, id).await?;
    match user.status {
        AccountStatus::Active => Ok(user),
        AccountStatus::Deleted => Err(IdentityError::Refused(IdentityCode::AccountDeletedConflict)),
        AccountStatus::Suspended => {
            if by.is_some_and(|by| user.suspended_by.as_deref() != Some(by.as_str())) {
                return Ok(user);
            }
            let user = diesel::update(users::table.find(id))
                .set((
                    users::status.eq(AccountStatus::Active),
                    users::suspended_by.eq(None::<String>),
                    users::suspension_reason.eq(None::<String>),
                    users::updated_at.eq(diesel::dsl::now),
                ))
                .returning(User::as_returning())
                .get_result(conn)
                .await?;
            enqueue_at(conn, &UserReactivatedV1 { user_id: id.to_string() }, None, now).await?;
            Ok(user)
        }
    }
}

/// Suspends the account `id` by `by` (see [`suspend_by`]) and, unless `by` is the owner
/// cascade itself, every current member of `id`'s team with [`Suspender::Owner`] and reason
/// [`OWNER_SUSPENDED`], each announced once. A deleted member, or one identity does not know,
/// is passed over.
///
/// # Errors
/// [`IdentityError::Refused`] for a deleted account.
pub async fn suspend(
    conn: &mut AsyncPgConnection,
    id: UserId,
    by: Suspender,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<User, IdentityError> {
    let user = suspend_by(conn, id, by, reason, now).await?;
    if by != Suspender::Owner {
        for member in memberships::members_at(conn, id.as_owner(), now).await? {
            match suspend_by(conn, member, Suspender::Owner, OWNER_SUSPENDED, now).await {
                Ok(_) | Err(IdentityError::NotFound | IdentityError::Refused(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(user)
}

/// Lifts `by`'s suspension of the account `id` (any suspension for `None`: an administrator;
/// see [`lift`]) and, once the account is active, reactivates every current member of its team
/// whom the owner's suspension suspended (a member's own suspension stays).
///
/// # Errors
/// [`IdentityError::Refused`] for a deleted account.
pub async fn reactivate(
    conn: &mut AsyncPgConnection,
    id: UserId,
    by: Option<Suspender>,
    now: DateTime<Utc>,
) -> Result<User, IdentityError> {
    let user = lift(conn, id, by, now).await?;
    if user.status == AccountStatus::Active {
        for member in memberships::members_at(conn, id.as_owner(), now).await? {
            match lift(conn, member, Some(Suspender::Owner), now).await {
                Ok(_) | Err(IdentityError::NotFound | IdentityError::Refused(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(user)
}

/// After a membership change of `member`: a member of a suspended owner's team is suspended
/// with them; a person no longer in the team of the owner whose suspension suspended them is
/// reactivated. Anything else is left as it is.
///
/// # Errors
/// When Postgres fails.
pub async fn follow_owner(
    conn: &mut AsyncPgConnection,
    member: UserId,
    now: DateTime<Utc>,
) -> Result<(), IdentityError> {
    let owner = memberships::owner_at(conn, member, now).await?;
    let outcome = match owner {
        Some(owner) => {
            // The owner's row is locked first, as a suspension of the owner locks it before
            // reading its members: whichever commits second sees the other.
            let owner_status = match lock(conn, owner.as_user()).await {
                Ok(owner) => Some(owner.status),
                Err(IdentityError::NotFound) => None,
                Err(e) => return Err(e),
            };
            if owner_status == Some(AccountStatus::Suspended) {
                suspend_by(conn, member, Suspender::Owner, OWNER_SUSPENDED, now).await
            } else {
                lift(conn, member, Some(Suspender::Owner), now).await
            }
        }
        None => lift(conn, member, Some(Suspender::Owner), now).await,
    };
    match outcome {
        Ok(_) | Err(IdentityError::NotFound | IdentityError::Refused(_)) => Ok(()),
        Err(e) => Err(e),
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
