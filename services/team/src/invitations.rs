//! The invitations table: one row per invitation, its token kept only as a hash. At most one
//! invitation per owner and address is pending (a partial unique index); a pending one past
//! `expires_at` is expired.

use crate::error::TeamError;
use crate::schema::invitations;
use crate::states::InvitationStatus;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{Email, OwnerId, ProjectRole, UserId};
use serde::Serialize;
use uuid::Uuid;

/// An invitation as stored (its token's hash left out) and as the owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = invitations)]
pub struct Invitation {
    /// The invitation's id.
    pub id: Uuid,
    /// The inviting owner.
    pub owner_user_id: OwnerId,
    /// The invited address, lowercased.
    pub email: Email,
    /// The project role offered.
    pub project_role: ProjectRole,
    /// Where it is (`pending` also while expired).
    pub status: InvitationStatus,
    /// How many mails were sent for it: the first and each resend.
    pub sends: i32,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When its mail was last sent (with a new token).
    pub sent_at: DateTime<Utc>,
    /// When its current link stops working.
    pub expires_at: DateTime<Utc>,
    /// When it stopped being pending.
    pub closed_at: Option<DateTime<Utc>>,
}

impl Invitation {
    /// A pending invitation whose link no longer works at `now`.
    #[must_use]
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.status == InvitationStatus::Pending && self.expires_at <= now
    }
}

/// A new invitation.
#[derive(Clone, Debug)]
pub struct NewInvitation<'a> {
    /// The inviting owner.
    pub owner: OwnerId,
    /// The invited address.
    pub email: &'a Email,
    /// The role offered.
    pub role: ProjectRole,
    /// Its token's hash.
    pub token_hash: &'a [u8],
    /// Now.
    pub now: DateTime<Utc>,
    /// When its link stops working.
    pub expires_at: DateTime<Utc>,
}

/// Writes a new pending invitation.
///
/// # Errors
/// When Postgres fails (another pending invitation of the owner to the address among them:
/// replace it first, under the owner's lock).
pub async fn insert(conn: &mut AsyncPgConnection, new: &NewInvitation<'_>) -> Result<Invitation, TeamError> {
    Ok(diesel::insert_into(invitations::table)
        .values((
            invitations::id.eq(Uuid::now_v7()),
            invitations::owner_user_id.eq(new.owner),
            invitations::email.eq(new.email),
            invitations::project_role.eq(new.role),
            invitations::token_hash.eq(new.token_hash),
            invitations::created_at.eq(new.now),
            invitations::sent_at.eq(new.now),
            invitations::expires_at.eq(new.expires_at),
        ))
        .returning(Invitation::as_returning())
        .get_result(conn)
        .await?)
}

/// Closes the pending invitations of `owner` (to `email` only, when given) with `status`.
/// Returns how many.
///
/// # Errors
/// When Postgres fails.
pub async fn close_pending(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    email: Option<&Email>,
    status: InvitationStatus,
    now: DateTime<Utc>,
) -> Result<usize, TeamError> {
    let mut pending = invitations::table
        .filter(invitations::owner_user_id.eq(owner))
        .filter(invitations::status.eq(InvitationStatus::Pending))
        .select(invitations::id)
        .into_boxed();
    if let Some(email) = email {
        pending = pending.filter(invitations::email.eq(email));
    }
    Ok(diesel::update(invitations::table.filter(invitations::id.eq_any(pending)))
        .set((invitations::status.eq(status), invitations::closed_at.eq(now)))
        .execute(conn)
        .await?)
}

/// The pending invitations of `owner`, newest first.
///
/// # Errors
/// When Postgres fails.
pub async fn pending_of(conn: &mut AsyncPgConnection, owner: OwnerId) -> Result<Vec<Invitation>, TeamError> {
    Ok(invitations::table
        .filter(invitations::owner_user_id.eq(owner))
        .filter(invitations::status.eq(InvitationStatus::Pending))
        .order((invitations::created_at.desc(), invitations::id.desc()))
        .select(Invitation::as_select())
        .load(conn)
        .await?)
}

/// The pending invitation `id` of `owner`, locked for the rest of the transaction.
///
/// # Errors
/// When Postgres fails.
pub async fn pending_for_update(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    id: Uuid,
) -> Result<Option<Invitation>, TeamError> {
    Ok(invitations::table
        .find(id)
        .filter(invitations::owner_user_id.eq(owner))
        .filter(invitations::status.eq(InvitationStatus::Pending))
        .select(Invitation::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

/// The invitation whose token has `hash`, with the person who accepted it, if any; locked for
/// the rest of the transaction when `lock`.
///
/// # Errors
/// When Postgres fails.
pub async fn by_token(
    conn: &mut AsyncPgConnection,
    hash: &[u8],
    lock: bool,
) -> Result<Option<(Invitation, Option<UserId>)>, TeamError> {
    let query = invitations::table
        .filter(invitations::token_hash.eq(hash))
        .select((Invitation::as_select(), invitations::accepted_by));
    let found = if lock { query.for_update().first(conn).await } else { query.first(conn).await };
    Ok(found.optional()?)
}

/// Gives a pending invitation a new token and a new expiry, and counts one more send.
///
/// # Errors
/// When Postgres fails.
pub async fn reissue(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    token_hash: &[u8],
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<Invitation, TeamError> {
    Ok(diesel::update(invitations::table.find(id))
        .set((
            invitations::token_hash.eq(token_hash),
            invitations::sends.eq(invitations::sends + 1),
            invitations::sent_at.eq(now),
            invitations::expires_at.eq(expires_at),
        ))
        .returning(Invitation::as_returning())
        .get_result(conn)
        .await?)
}

/// Closes one pending invitation: accepted by `member`, or cancelled.
///
/// # Errors
/// When Postgres fails.
pub async fn close(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status: InvitationStatus,
    member: Option<UserId>,
    now: DateTime<Utc>,
) -> Result<Invitation, TeamError> {
    Ok(diesel::update(invitations::table.find(id))
        .set((invitations::status.eq(status), invitations::closed_at.eq(now), invitations::accepted_by.eq(member)))
        .returning(Invitation::as_returning())
        .get_result(conn)
        .await?)
}
