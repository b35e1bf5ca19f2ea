//! A team's members: what the owner sees of them, what a member sees of their membership, and
//! how a membership ends (the owner removes, the member leaves, the account is deleted).

use crate::accounts::{self, AccountView};
use crate::error::{TeamCode, TeamError};
use crate::invitations;
use crate::inviting::require_owner;
use crate::memberships::{self, Membership, lock_people};
use crate::people;
use crate::states::{InvitationStatus, RemovalReason};
use crate::usage::{self, Hours, Totals};
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use hopsbridge_domain::{AccountStatus, Email, EventId, MembershipId, OwnerId, ProjectRole, UserId};
use serde::Serialize;

/// One member as their owner sees them.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Member {
    /// The member.
    pub user_id: UserId,
    /// Their address.
    pub email: Option<Email>,
    /// Their name (may be empty).
    pub name: String,
    /// Their membership.
    pub membership_id: MembershipId,
    /// Their role in the owner's Hopsworks projects.
    pub project_role: ProjectRole,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
    /// Their Hopsbridge account's status.
    pub account_status: AccountStatus,
    /// Their Hopsworks account.
    pub hopsworks_account: AccountView,
    /// Their usage billed to the owner this UTC month.
    pub usage_this_month: Hours,
}

/// An owner's team.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Team {
    /// The owner.
    pub owner_user_id: OwnerId,
    /// The current members, in the order they joined.
    pub members: Vec<Member>,
}

/// What a member sees of their membership.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MyMembership {
    /// The membership.
    pub membership_id: MembershipId,
    /// Whose team.
    pub owner_user_id: OwnerId,
    /// The owner's name, or their address when they have none.
    pub owner_name: String,
    /// The owner's address.
    pub owner_email: Option<Email>,
    /// The member's role in the owner's projects.
    pub project_role: ProjectRole,
    /// Since when.
    pub joined_at: DateTime<Utc>,
}

/// The members of an owner, for identity.
#[derive(Clone, Debug, Serialize)]
pub struct OwnerMembers {
    /// The owner.
    pub owner_user_id: OwnerId,
    /// How many current members the team has.
    pub count: i64,
    /// Their user ids.
    pub member_ids: Vec<UserId>,
}

/// `me`'s team, with each member's account and usage in the calendar month of `now`.
///
/// # Errors
/// [`TeamCode::OwnerOnly`].
pub async fn team(conn: &mut AsyncPgConnection, me: UserId, now: DateTime<Utc>) -> Result<Team, TeamError> {
    require_owner(conn, me).await?;
    let owner = me.as_owner();
    let current = memberships::members_of(conn, owner).await?;
    let ids: Vec<UserId> = current.iter().map(|m| m.member_user_id).collect();
    let mut accounts = accounts::of(conn, &ids).await?;
    let month = usage::month_of(now);
    let mut used = usage::of_month(conn, owner, month, &ids).await?;
    let mut members = Vec::with_capacity(current.len());
    for m in current {
        let person = people::find(conn, m.member_user_id).await?;
        members.push(Member {
            user_id: m.member_user_id,
            email: person.as_ref().and_then(|p| p.email.clone()),
            name: person.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
            membership_id: m.id,
            project_role: m.project_role,
            joined_at: m.joined_at,
            account_status: person.map_or(AccountStatus::Active, |p| p.status),
            hopsworks_account: accounts.remove(&m.member_user_id).unwrap_or_else(AccountView::none),
            usage_this_month: used.remove(&m.member_user_id).unwrap_or_else(Totals::default).hours(month),
        });
    }
    Ok(Team { owner_user_id: owner, members })
}

/// `me`'s membership of a team.
///
/// # Errors
/// [`TeamCode::NotAMember`].
pub async fn membership(conn: &mut AsyncPgConnection, me: UserId) -> Result<MyMembership, TeamError> {
    let m = memberships::current_of(conn, me).await?.ok_or(TeamCode::NotAMember)?;
    let owner = people::find(conn, m.owner_user_id.as_user()).await?;
    Ok(MyMembership {
        membership_id: m.id,
        owner_user_id: m.owner_user_id,
        owner_name: owner.as_ref().map_or_else(|| m.owner_user_id.to_string(), people::Person::display_name),
        owner_email: owner.and_then(|p| p.email),
        project_role: m.project_role,
        joined_at: m.joined_at,
    })
}

/// `me` removes `member` from their team at calendar time `now`.
///
/// # Errors
/// [`TeamCode::OwnerOnly`], [`TeamCode::MemberNotFound`].
pub async fn remove(
    conn: &mut AsyncPgConnection,
    me: UserId,
    member: UserId,
    now: DateTime<Utc>,
) -> Result<Membership, TeamError> {
    lock_people(conn, &[me, member]).await?;
    require_owner(conn, me).await?;
    let m = memberships::current_of(conn, member)
        .await?
        .filter(|m| m.owner_user_id == me.as_owner())
        .ok_or(TeamCode::MemberNotFound)?;
    memberships::end(conn, m.id, RemovalReason::Removed, now, None).await
}

/// `me` leaves the team they are a member of at calendar time `now`.
///
/// # Errors
/// [`TeamCode::NotAMember`].
pub async fn leave(conn: &mut AsyncPgConnection, me: UserId, now: DateTime<Utc>) -> Result<Membership, TeamError> {
    lock_people(conn, &[me]).await?;
    let m = memberships::current_of(conn, me).await?.ok_or(TeamCode::NotAMember)?;
    memberships::end(conn, m.id, RemovalReason::Left, now, None).await
}

/// `user`'s account was deleted (`cause`, a `UserDeletedV1` that happened at `at`): they are
/// marked deleted, removed from the team they are a member of and their pending invitations
/// are cancelled, at calendar time `now`. Once per event; a second delivery finds nothing left
/// to do.
///
/// # Errors
/// When Postgres fails.
pub async fn account_deleted(
    conn: &mut AsyncPgConnection,
    user: UserId,
    (at, cause): (DateTime<Utc>, EventId),
    now: DateTime<Utc>,
) -> Result<(), TeamError> {
    lock_people(conn, &[user]).await?;
    people::set_status(conn, user, AccountStatus::Deleted, at).await?;
    if let Some(m) = memberships::current_of(conn, user).await? {
        memberships::end(conn, m.id, RemovalReason::AccountDeleted, now, Some(cause)).await?;
    }
    invitations::close_pending(conn, user.as_owner(), None, InvitationStatus::Cancelled, now).await?;
    Ok(())
}

/// How many members `owner` has, and who, for identity.
///
/// # Errors
/// When Postgres fails.
pub async fn of_owner(conn: &mut AsyncPgConnection, owner: OwnerId) -> Result<OwnerMembers, TeamError> {
    let member_ids: Vec<UserId> =
        memberships::members_of(conn, owner).await?.into_iter().map(|m| m.member_user_id).collect();
    let count = i64::try_from(member_ids.len()).unwrap_or(i64::MAX);
    Ok(OwnerMembers { owner_user_id: owner, count, member_ids })
}
