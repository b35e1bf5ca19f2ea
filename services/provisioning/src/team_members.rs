//! Team memberships as the team service announces them (`team_members`): per member, the
//! latest membership under the one rule of [`hopsbridge_domain::membership`], with the role
//! the owner gave, and what provisioning does about it ([`TeamState`]). The decisions are
//! [`crate::teams`]'; this module only reads and writes the rows.

use crate::schema::team_members;
pub use crate::states::TeamState;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::membership::Membership;
use hopsbridge_domain::{ClusterId, MembershipId, OwnerId, ProjectRole, UserId};
use serde::Serialize;
use std::collections::HashMap;

/// A member's row.
#[derive(Clone, Debug, Queryable, Selectable, Insertable, AsChangeset, Serialize, utoipa::ToSchema)]
#[diesel(table_name = team_members, treat_none_as_null = true)]
pub struct TeamMember {
    /// The member.
    pub member_id: UserId,
    /// Their latest membership.
    pub membership_id: MembershipId,
    /// The owner whose team it is.
    pub owner_id: OwnerId,
    /// Their role in the owner's projects; unknown while only the removal has arrived.
    pub project_role: Option<ProjectRole>,
    /// When the membership began, once known.
    pub joined_at: Option<DateTime<Utc>>,
    /// When it ended, if it did.
    pub removed_at: Option<DateTime<Utc>>,
    /// What provisioning does about it.
    pub state: TeamState,
    /// The cluster whose owner's projects the member was last given.
    pub synced_cluster_id: Option<ClusterId>,
}

impl TeamMember {
    /// The membership as the rule sees it (times in microseconds since the Unix epoch).
    #[must_use]
    pub fn kept(&self) -> Membership {
        Membership {
            id: self.membership_id,
            owner: self.owner_id,
            joined_at: self.joined_at.map(|t| t.timestamp_micros()),
            removed_at: self.removed_at.map(|t| t.timestamp_micros()),
        }
    }
}

/// The row of `member`, locked for the rest of the transaction.
///
/// # Errors
/// When Postgres fails.
pub async fn lock(conn: &mut AsyncPgConnection, member: UserId) -> Result<Option<TeamMember>, diesel::result::Error> {
    team_members::table.find(member).select(TeamMember::as_select()).for_update().first(conn).await.optional()
}

/// The row of `member`, unlocked.
///
/// # Errors
/// When Postgres fails.
pub async fn get(mut conn: &AsyncPgConnection, member: UserId) -> Result<Option<TeamMember>, diesel::result::Error> {
    team_members::table.find(member).select(TeamMember::as_select()).first(&mut conn).await.optional()
}

/// Writes a first row; answers false when another transaction wrote one meanwhile (read it
/// again, locked).
///
/// # Errors
/// When Postgres fails.
pub async fn insert(conn: &mut AsyncPgConnection, row: &TeamMember) -> Result<bool, diesel::result::Error> {
    let n = diesel::insert_into(team_members::table).values(row).on_conflict_do_nothing().execute(conn).await?;
    Ok(n == 1)
}

/// Rewrites the row of `row.member_id`.
///
/// # Errors
/// When Postgres fails.
pub async fn update(conn: &mut AsyncPgConnection, row: &TeamMember) -> Result<(), diesel::result::Error> {
    diesel::update(team_members::table.find(row.member_id))
        .set((row, team_members::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets what provisioning does about `member`'s membership.
///
/// # Errors
/// When Postgres fails.
pub async fn set_state(
    conn: &mut AsyncPgConnection,
    member: UserId,
    state: TeamState,
) -> Result<(), diesel::result::Error> {
    diesel::update(team_members::table.find(member))
        .set((team_members::state.eq(state), team_members::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that `member` was given the owner's projects on `cluster`.
///
/// # Errors
/// When Postgres fails.
pub async fn set_synced(
    conn: &mut AsyncPgConnection,
    member: UserId,
    cluster: ClusterId,
) -> Result<(), diesel::result::Error> {
    diesel::update(team_members::table.find(member))
        .set((team_members::synced_cluster_id.eq(Some(cluster)), team_members::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// The current members of `owner`'s team.
///
/// # Errors
/// When Postgres fails.
pub async fn members_of(mut conn: &AsyncPgConnection, owner: OwnerId) -> Result<Vec<UserId>, diesel::result::Error> {
    team_members::table
        .filter(team_members::owner_id.eq(owner))
        .filter(team_members::state.eq(TeamState::Member))
        .order(team_members::member_id.asc())
        .select(team_members::member_id)
        .load(&mut conn)
        .await
}

/// The current memberships of those of `members` who are in a team, by member.
///
/// # Errors
/// When Postgres fails.
pub async fn current_of(
    mut conn: &AsyncPgConnection,
    members: &[UserId],
) -> Result<HashMap<UserId, TeamMember>, diesel::result::Error> {
    let rows: Vec<TeamMember> = team_members::table
        .filter(team_members::member_id.eq_any(members))
        .filter(team_members::state.eq(TeamState::Member))
        .select(TeamMember::as_select())
        .load(&mut conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.member_id, r)).collect())
}
