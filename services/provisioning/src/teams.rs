//! What joining and leaving a team do in provisioning (decision 0035).
//!
//! - A join ([`apply`] of `TeamMemberJoinedV1`) places the member on the owner's cluster with
//!   `maxNumProjects` 0, whatever its capacity, or lets them wait as `waiting_for_owner` until
//!   the owner's assignment completes ([`owner_ready`]). Once the member's account exists, the
//!   background task records each of the owner's projects on that cluster (those whose creator
//!   is the owner's Hopsworks username) as a `project_members` row ([`synced`]) and adds the
//!   member to each, retrying until Hopsworks agrees.
//! - A removal turns the member's rows to removing; once every one is done (the member out of
//!   the project, and the admin key's user too if it was added for that), the member is
//!   unassigned ([`removal_done`]): the account deactivated, `ClusterUnassignedV1` announced.
//! - Events arrive in any order and more than once: the rule of
//!   [`hopsbridge_domain::membership`] decides which membership is kept, and provisioning acts
//!   only when the kept membership's currency changes: a duplicate does nothing, nor does a
//!   join arriving after its own removal.
//!
//! Locks are taken in one order everywhere: the member's `team_members` row, the placement
//! lock, assignment rows, `project_members` rows; so no two transactions wait for each other.

use crate::assignments::{self, MemberPlaced};
use crate::error::ProvisioningCode;
use crate::project_members::{self, Place};
use crate::seats::placement_lock;
use crate::team_members::{self, TeamMember, TeamState};
use crate::users;
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use hopsbridge_domain::membership::{self, Change, Membership};
use hopsbridge_domain::{AccountStatus, AssignmentState, ClusterId, MembershipId, OwnerId, ProjectRole, UserId};

/// What the team service announced about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// `TeamMemberJoinedV1`.
    Joined {
        /// The membership.
        membership: MembershipId,
        /// The owner whose team it is.
        owner: OwnerId,
        /// The role in the owner's projects.
        role: ProjectRole,
        /// When it began.
        at: DateTime<Utc>,
    },
    /// `TeamMemberRemovedV1`.
    Removed {
        /// The membership.
        membership: MembershipId,
        /// The owner whose team it was.
        owner: OwnerId,
        /// When it ended.
        at: DateTime<Utc>,
    },
}

impl Announced {
    fn change(self) -> Change {
        match self {
            Self::Joined { membership, owner, at, .. } => {
                Change::Joined { id: membership, owner, at: at.timestamp_micros() }
            }
            Self::Removed { membership, owner, at } => {
                Change::Removed { id: membership, owner, at: at.timestamp_micros() }
            }
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing: a duplicate, an earlier membership's news, or a join after its own removal.
    Nothing,
    /// The member joined: placed (or waiting for the owner's cluster).
    Joined(MemberPlaced),
    /// The member left: being taken out of the owner's projects, then unassigned.
    Leaving,
    /// The member left and had no project to be taken out of: unassigned at once.
    Left,
}

/// Whether a kept membership is current: begun and not ended.
const fn current(m: &Membership) -> bool {
    m.joined_at.is_some() && m.removed_at.is_none()
}

fn time(micros: Option<i64>) -> Option<DateTime<Utc>> {
    micros.and_then(DateTime::from_timestamp_micros)
}

/// Applies what the team service announced about `member`, in the caller's transaction.
/// `paying_max_num_projects` is what a former member's next account gets.
///
/// # Errors
/// When Postgres fails.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    member: UserId,
    news: Announced,
    paying_max_num_projects: i32,
) -> Result<Applied, diesel::result::Error> {
    loop {
        let row = team_members::lock(conn, member).await?;
        let before = row.as_ref().map(TeamMember::kept);
        let Some(after) = membership::apply(before, news.change()) else { return Ok(Applied::Nothing) };
        let role = match news {
            Announced::Joined { membership, role, .. } if membership == after.id => Some(role),
            _ => row.as_ref().filter(|r| r.membership_id == after.id).and_then(|r| r.project_role),
        };
        let was = row.as_ref().map_or(TeamState::Left, |r| r.state);
        // A member provisioning acted on stays one only while the same membership is current.
        let stays = was == TeamState::Member && before.is_some_and(|b| b.id == after.id) && current(&after);
        let state = if stays || current(&after) {
            TeamState::Member
        } else if was == TeamState::Member {
            TeamState::Leaving
        } else {
            was
        };
        if before == Some(after) && row.as_ref().is_some_and(|r| r.project_role == role) {
            return Ok(Applied::Nothing);
        }
        let next = TeamMember {
            member_id: member,
            membership_id: after.id,
            owner_id: after.owner,
            project_role: role,
            joined_at: time(after.joined_at),
            removed_at: time(after.removed_at),
            state,
            synced_cluster_id: row.as_ref().and_then(|r| r.synced_cluster_id).filter(|_| stays),
        };
        if row.is_some() {
            team_members::update(conn, &next).await?;
        } else if !team_members::insert(conn, &next).await? {
            // Another transaction wrote the first row meanwhile: read it, locked, and apply
            // the rule to it.
            continue;
        }
        placement_lock(conn).await?;
        if stays {
            return Ok(Applied::Nothing);
        }
        if was == TeamState::Member {
            // An earlier membership provisioning acted on is over: out of its projects.
            let keep = (state == TeamState::Member).then_some(after.id);
            project_members::start_removal(conn, member, keep).await?;
        }
        return match state {
            TeamState::Member => Ok(Applied::Joined(settle(conn, member).await?)),
            TeamState::Leaving => {
                if project_members::any_removing(conn, member).await? {
                    Ok(Applied::Leaving)
                } else {
                    finish_leaving(conn, member, paying_max_num_projects).await?;
                    Ok(Applied::Left)
                }
            }
            TeamState::Left => Ok(Applied::Nothing),
        };
    }
}

/// Places `member` as their current membership says: on the owner's cluster once the owner's
/// assignment is complete, else waiting for it. Does nothing for a person who is in no team
/// or whose account is deleted. Reads the member's row without locking it (callers that
/// change it lock it first).
///
/// # Errors
/// When Postgres fails.
pub async fn settle(conn: &mut AsyncPgConnection, member: UserId) -> Result<MemberPlaced, diesel::result::Error> {
    placement_lock(conn).await?;
    let Some(team) = team_members::get(conn, member).await?.filter(|t| t.state == TeamState::Member) else {
        return Ok(MemberPlaced::Unchanged);
    };
    if users::get(conn, member).await?.is_some_and(|p| p.status == AccountStatus::Deleted) {
        return Ok(MemberPlaced::Unchanged);
    }
    let target = owner_cluster(conn, team.owner_id).await?;
    let synced = target.is_some() && team.synced_cluster_id == target;
    let placed = assignments::place_member(conn, member, target, synced).await?;
    if placed != MemberPlaced::Unchanged {
        tracing::info!(member_id = %member, owner_id = %team.owner_id, ?placed, "team member placed");
    }
    Ok(placed)
}

/// The cluster of `owner`'s complete assignment, if any.
async fn owner_cluster(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
) -> Result<Option<ClusterId>, diesel::result::Error> {
    let owner = assignments::get(conn, owner.as_user()).await?;
    Ok(owner.filter(|a| a.status == AssignmentState::Complete).and_then(|a| a.cluster_id))
}

/// `owner`'s assignment completed (or completed again, elsewhere): their members are placed
/// on its cluster.
///
/// # Errors
/// When Postgres fails.
pub async fn owner_ready(conn: &mut AsyncPgConnection, owner: UserId) -> Result<usize, diesel::result::Error> {
    placement_lock(conn).await?;
    let members = team_members::members_of(conn, OwnerId::of(owner)).await?;
    for member in &members {
        settle(conn, *member).await?;
    }
    Ok(members.len())
}

/// The owner's projects on a cluster, as the background task read them once the member's
/// account existed there.
#[derive(Debug, Clone)]
pub struct OwnerProjects {
    /// The membership they were read for.
    pub membership: MembershipId,
    /// The cluster.
    pub cluster: ClusterId,
    /// The member's Hopsworks username there.
    pub username: String,
    /// The member's email as their account there has it.
    pub email: String,
    /// The projects whose creator is the owner, as (id, name).
    pub projects: Vec<(i64, String)>,
}

/// Records the owner's projects for the member to be added to, if the membership they were
/// read for is still current and the owner is still on that cluster. The caller holds the
/// member's row lock. Answers how many rows are new.
///
/// # Errors
/// When Postgres fails.
pub async fn synced(
    conn: &mut AsyncPgConnection,
    member: UserId,
    read: &OwnerProjects,
) -> Result<usize, diesel::result::Error> {
    let Some(team) = team_members::get(conn, member).await? else { return Ok(0) };
    let Some(role) =
        team.project_role.filter(|_| team.state == TeamState::Member && team.membership_id == read.membership)
    else {
        return Ok(0);
    };
    if owner_cluster(conn, team.owner_id).await? != Some(read.cluster) {
        return Ok(0);
    }
    let rows: Vec<Place> = read
        .projects
        .iter()
        .map(|(id, name)| Place {
            membership_id: read.membership,
            member_id: member,
            cluster_id: read.cluster,
            project_id: *id,
            project_name: name.clone(),
            hopsworks_username: read.username.clone(),
            hopsworks_email: read.email.clone(),
            project_role: role,
        })
        .collect();
    let added = project_members::add_all(conn, &rows).await?;
    team_members::set_synced(conn, member, read.cluster).await?;
    Ok(added)
}

/// One of the member's rows was removed (or its project is gone): once none is left to
/// remove and the member is leaving, they are unassigned. The caller holds the member's row
/// lock. Answers whether they were.
///
/// # Errors
/// When Postgres fails.
pub async fn removal_done(
    conn: &mut AsyncPgConnection,
    member: UserId,
    paying_max_num_projects: i32,
) -> Result<bool, diesel::result::Error> {
    let leaving = team_members::get(conn, member).await?.is_some_and(|t| t.state == TeamState::Leaving);
    if !leaving || project_members::any_removing(conn, member).await? {
        return Ok(false);
    }
    finish_leaving(conn, member, paying_max_num_projects).await?;
    Ok(true)
}

/// The member is out of every project of the team they left: unassigned (the account
/// deactivated and ClusterUnassigned announced in the background), with a paying owner's
/// `maxNumProjects` for the account they get when they add a card.
async fn finish_leaving(
    conn: &mut AsyncPgConnection,
    member: UserId,
    paying_max_num_projects: i32,
) -> Result<(), diesel::result::Error> {
    match assignments::unassign(conn, member).await {
        Ok(a) => tracing::info!(member_id = %member, status = %a.status, "former team member unassigned"),
        Err(e) if e.code() == Some(ProvisioningCode::NotAssigned) => {}
        Err(crate::error::ProvisioningError::Db(e)) => return Err(db_to_diesel(e)),
        Err(e) => return Err(diesel::result::Error::QueryBuilderError(e.to_string().into())),
    }
    assignments::set_max_num_projects(conn, member, paying_max_num_projects).await?;
    team_members::set_state(conn, member, TeamState::Left).await
}

fn db_to_diesel(e: hopsbridge_platform::db::DbError) -> diesel::result::Error {
    match e {
        hopsbridge_platform::db::DbError::Other(d) => d,
        other => diesel::result::Error::QueryBuilderError(other.to_string().into()),
    }
}
