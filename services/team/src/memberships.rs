//! The memberships table: who is on whose team, since when, under which terms, and how it
//! ended. A person has at most one current membership (a partial unique index). Every join and
//! every end writes its event (`TeamMemberJoinedV1`, `TeamMemberRemovedV1`) to the outbox in
//! the same transaction, so each goes out once, exactly when the change commits.

use crate::error::TeamError;
use crate::schema::memberships;
use crate::states::RemovalReason;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{TeamMemberJoinedV1, TeamMemberRemovedV1};
use hopsbridge_domain::{EventId, MembershipId, OwnerId, ProjectRole, UserId};
use hopsbridge_platform::events::enqueue_at;
use serde::Serialize;
use uuid::Uuid;

/// A membership as stored.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = memberships)]
pub struct Membership {
    /// The membership's id (a person who leaves and joins again has a new one).
    pub id: MembershipId,
    /// The owner whose team it is.
    pub owner_user_id: OwnerId,
    /// The member.
    pub member_user_id: UserId,
    /// The member's role in the owner's Hopsworks projects.
    pub project_role: ProjectRole,
    /// The invitation it came from.
    pub invitation_id: Uuid,
    /// When it began.
    pub joined_at: DateTime<Utc>,
    /// The terms the member accepted.
    pub terms_version: String,
    /// When they accepted them.
    pub terms_accepted_at: DateTime<Utc>,
    /// When it ended, if it did.
    pub removed_at: Option<DateTime<Utc>>,
    /// Why it ended.
    pub removal_reason: Option<RemovalReason>,
}

/// Takes the transaction-long locks of `people` (as members or as owners), in one order, so
/// two changes to one person's place in teams (joining, inviting, being joined, leaving) take
/// turns and each sees what the other committed.
///
/// # Errors
/// When Postgres fails.
pub async fn lock_people(conn: &mut AsyncPgConnection, people: &[UserId]) -> Result<(), TeamError> {
    let mut ids: Vec<UserId> = people.to_vec();
    ids.sort();
    ids.dedup();
    for id in ids {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended('team.person:' || $1, 0))")
            .bind::<diesel::sql_types::Text, _>(id.to_string())
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The current membership of `member`, if any.
///
/// # Errors
/// When Postgres fails.
pub async fn current_of(conn: &mut AsyncPgConnection, member: UserId) -> Result<Option<Membership>, TeamError> {
    Ok(memberships::table
        .filter(memberships::member_user_id.eq(member))
        .filter(memberships::removed_at.is_null())
        .select(Membership::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The current memberships of `owner`'s team, oldest first.
///
/// # Errors
/// When Postgres fails.
pub async fn members_of(conn: &mut AsyncPgConnection, owner: OwnerId) -> Result<Vec<Membership>, TeamError> {
    Ok(memberships::table
        .filter(memberships::owner_user_id.eq(owner))
        .filter(memberships::removed_at.is_null())
        .order((memberships::joined_at, memberships::id))
        .select(Membership::as_select())
        .load(conn)
        .await?)
}

/// How many current members `owner`'s team has.
///
/// # Errors
/// When Postgres fails.
pub async fn count_of(conn: &mut AsyncPgConnection, owner: OwnerId) -> Result<i64, TeamError> {
    Ok(memberships::table
        .filter(memberships::owner_user_id.eq(owner))
        .filter(memberships::removed_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}

/// A membership to begin.
#[derive(Clone, Debug)]
pub struct Joining<'a> {
    /// The owner whose team it is.
    pub owner: OwnerId,
    /// The new member.
    pub member: UserId,
    /// Their project role.
    pub role: ProjectRole,
    /// The invitation accepted.
    pub invitation: Uuid,
    /// The terms accepted.
    pub terms_version: &'a str,
    /// Now: the join and the terms' acceptance.
    pub at: DateTime<Utc>,
}

/// Begins a membership and writes its `TeamMemberJoinedV1`.
///
/// # Errors
/// [`crate::error::TeamCode::AlreadyInTeam`] when the member already has a current membership.
pub async fn join(conn: &mut AsyncPgConnection, j: &Joining<'_>) -> Result<Membership, TeamError> {
    let membership: Membership = diesel::insert_into(memberships::table)
        .values((
            memberships::id.eq(MembershipId::new()),
            memberships::owner_user_id.eq(j.owner),
            memberships::member_user_id.eq(j.member),
            memberships::project_role.eq(j.role),
            memberships::invitation_id.eq(j.invitation),
            memberships::joined_at.eq(j.at),
            memberships::terms_version.eq(j.terms_version),
            memberships::terms_accepted_at.eq(j.at),
        ))
        .returning(Membership::as_returning())
        .get_result(conn)
        .await?;
    let event = TeamMemberJoinedV1 {
        owner_user_id: membership.owner_user_id.to_string(),
        member_user_id: membership.member_user_id.to_string(),
        project_role: membership.project_role.as_str().to_owned(),
        membership_id: membership.id.to_string(),
        joined_at_unix_micros: membership.joined_at.timestamp_micros(),
    };
    enqueue_at(conn, &event, None, j.at).await?;
    Ok(membership)
}

/// Ends a current membership at `at` for `reason` and writes its `TeamMemberRemovedV1`
/// (`causation`: the event that caused it, if any).
///
/// # Errors
/// When Postgres fails.
pub async fn end(
    conn: &mut AsyncPgConnection,
    membership: MembershipId,
    reason: RemovalReason,
    at: DateTime<Utc>,
    causation: Option<EventId>,
) -> Result<Membership, TeamError> {
    let ended: Membership =
        diesel::update(memberships::table.find(membership).filter(memberships::removed_at.is_null()))
            .set((memberships::removed_at.eq(at), memberships::removal_reason.eq(reason)))
            .returning(Membership::as_returning())
            .get_result(conn)
            .await?;
    let event = TeamMemberRemovedV1 {
        owner_user_id: ended.owner_user_id.to_string(),
        member_user_id: ended.member_user_id.to_string(),
        membership_id: ended.id.to_string(),
        removed_at_unix_micros: at.timestamp_micros(),
        reason: reason.as_str().to_owned(),
    };
    enqueue_at(conn, &event, causation, at).await?;
    Ok(ended)
}
