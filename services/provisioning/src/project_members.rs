//! A member's place in each of their owner's Hopsworks projects (`project_members`): one row
//! per (membership, cluster, project), its state ([`AccessState`]), and the background task's
//! attempts at it. Due rows are claimed under a lease, the Hopsworks calls happen outside any
//! transaction, and each step is written back only if the row was not turned meanwhile (from
//! adding to removing: `version`).

use crate::schema::project_members;
pub use crate::states::AccessState;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::dsl::{IntervalDsl as _, exists, not};
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{ClusterId, MembershipId, ProjectRole, UserId};
use serde::Serialize;
use std::time::Duration;

/// The states with Hopsworks work to do.
pub const WORKING: [AccessState; 2] = [AccessState::Adding, AccessState::Removing];

/// What a row is about: the member's place in one project of their owner's.
#[derive(Clone, Debug, Queryable, Selectable, Insertable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = project_members)]
pub struct Place {
    /// The membership it is for.
    pub membership_id: MembershipId,
    /// The member.
    pub member_id: UserId,
    /// The cluster of the project.
    pub cluster_id: ClusterId,
    /// Hopsworks' project id.
    pub project_id: i64,
    /// The project's name.
    pub project_name: String,
    /// The member's Hopsworks username on the cluster.
    pub hopsworks_username: String,
    /// The member's email as their Hopsworks account has it.
    pub hopsworks_email: String,
    /// The role in the project.
    pub project_role: ProjectRole,
}

/// A member's place in one project with where it is, as stored, as admins see it and as the
/// background task takes it.
#[derive(Clone, Debug, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = project_members)]
pub struct ProjectMember {
    /// The row.
    pub id: i64,
    /// What it is about.
    #[diesel(embed)]
    #[serde(flatten)]
    pub place: Place,
    /// Where it is.
    pub state: AccessState,
    /// Removal: whether the admin key's user is made a member for it (null: not yet known).
    pub admin_added: Option<bool>,
    /// Removal: whether the member is out already.
    pub member_removed: bool,
    /// Background attempts so far (since it was last turned to removing), including one under
    /// way.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Bumped when the row is turned to removing, so an attempt started before is not written
    /// back.
    #[serde(skip)]
    pub version: i32,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Records rows (adding, due now); one already recorded for the same (membership, cluster,
/// project) is left as it is. Answers how many are new.
///
/// # Errors
/// When Postgres fails.
pub async fn add_all(conn: &mut AsyncPgConnection, rows: &[Place]) -> Result<usize, diesel::result::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let values: Vec<_> = rows
        .iter()
        .map(|r| (r, project_members::state.eq(AccessState::Adding), project_members::next_attempt_at.eq(Some(now))))
        .collect();
    diesel::insert_into(project_members::table)
        .values(values)
        .on_conflict((project_members::membership_id, project_members::cluster_id, project_members::project_id))
        .do_nothing()
        .execute(conn)
        .await
}

/// Turns `member`'s rows that are being added or are added, except those of `keep`, to
/// removing, due now. Answers how many.
///
/// # Errors
/// When Postgres fails.
pub async fn start_removal(
    conn: &mut AsyncPgConnection,
    member: UserId,
    keep: Option<MembershipId>,
) -> Result<usize, diesel::result::Error> {
    let rows = project_members::table
        .filter(project_members::member_id.eq(member))
        .filter(project_members::state.eq_any([AccessState::Adding, AccessState::Added]))
        .filter(project_members::membership_id.nullable().is_distinct_from(keep));
    diesel::update(rows)
        .set((
            project_members::state.eq(AccessState::Removing),
            project_members::admin_added.eq(None::<bool>),
            project_members::member_removed.eq(false),
            project_members::attempts.eq(0),
            project_members::last_error.eq(None::<String>),
            project_members::next_attempt_at.eq(Some(Utc::now())),
            // A lease is kept: an attempt at adding still under way is not overtaken by the
            // removal (its late answer would put the member back); it gives the row back when
            // it finds the row turned.
            project_members::version.eq(project_members::version + 1),
            project_members::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await
}

/// Whether any of `member`'s rows is still being removed.
///
/// # Errors
/// When Postgres fails.
pub async fn any_removing(conn: &mut AsyncPgConnection, member: UserId) -> Result<bool, diesel::result::Error> {
    diesel::select(exists(
        project_members::table
            .filter(project_members::member_id.eq(member))
            .filter(project_members::state.eq(AccessState::Removing)),
    ))
    .get_result(conn)
    .await
}

/// Every row of `member`, oldest first.
///
/// # Errors
/// When Postgres fails.
pub async fn of_member(
    conn: &mut AsyncPgConnection,
    member: UserId,
) -> Result<Vec<ProjectMember>, diesel::result::Error> {
    project_members::table
        .filter(project_members::member_id.eq(member))
        .order((project_members::created_at.asc(), project_members::id.asc()))
        .select(ProjectMember::as_select())
        .load(conn)
        .await
}

/// Takes up to `limit` due rows under a lease of `lease_secs`; replicas claiming at the same
/// time skip each other's rows. A member is not added to a project while a removal of an
/// earlier membership of theirs from the same project is under way (it would take them out
/// again).
///
/// # Errors
/// When Postgres fails.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease_secs: i64,
) -> Result<Vec<ProjectMember>, diesel::result::Error> {
    let now = diesel::dsl::now;
    let (candidates, earlier) = diesel::alias!(project_members as candidates, project_members as earlier);
    let removal_under_way = earlier
        .filter(earlier.field(project_members::member_id).eq(candidates.field(project_members::member_id)))
        .filter(earlier.field(project_members::cluster_id).eq(candidates.field(project_members::cluster_id)))
        .filter(earlier.field(project_members::project_id).eq(candidates.field(project_members::project_id)))
        .filter(earlier.field(project_members::state).eq(AccessState::Removing));
    let due = candidates
        .filter(candidates.field(project_members::state).eq_any(WORKING))
        .filter(candidates.field(project_members::next_attempt_at).le(now))
        .filter(
            candidates
                .field(project_members::lease_until)
                .is_null()
                .or(candidates.field(project_members::lease_until).lt(now)),
        )
        .filter(candidates.field(project_members::state).eq(AccessState::Removing).or(not(exists(removal_under_way))))
        .order((candidates.field(project_members::next_attempt_at).asc(), candidates.field(project_members::id).asc()))
        .limit(limit)
        .select(candidates.field(project_members::id))
        .for_update()
        .skip_locked();
    diesel::update(project_members::table.filter(project_members::id.eq_any(due)))
        .set((
            project_members::lease_until.eq((now.into_sql::<Timestamptz>() + lease_secs.seconds()).nullable()),
            project_members::attempts.eq(project_members::attempts + 1),
        ))
        .returning(ProjectMember::as_returning())
        .load(conn)
        .await
}

/// The row `work` was taken as: found only if it was not turned meanwhile.
type AsTaken = diesel::dsl::Filter<
    diesel::dsl::Filter<diesel::dsl::Find<project_members::table, i64>, diesel::dsl::Eq<project_members::version, i32>>,
    diesel::dsl::Eq<project_members::state, AccessState>,
>;

fn as_taken(work: &ProjectMember) -> AsTaken {
    project_members::table
        .find(work.id)
        .filter(project_members::version.eq(work.version))
        .filter(project_members::state.eq(work.state))
}

/// Records a removal's progress: whether the admin key's user is made a member for it, and
/// whether the member is out. Answers false when the row was turned meanwhile.
///
/// # Errors
/// When Postgres fails.
pub async fn progress(
    conn: &mut AsyncPgConnection,
    work: &ProjectMember,
    admin_added: Option<bool>,
    member_removed: bool,
) -> Result<bool, diesel::result::Error> {
    let n = diesel::update(as_taken(work))
        .set((
            project_members::admin_added.eq(admin_added),
            project_members::member_removed.eq(member_removed),
            project_members::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Hopsworks agreed: the row is `to` (added, removed or gone) and nothing is left to do.
/// Answers false when the row was turned meanwhile.
///
/// # Errors
/// When Postgres fails.
pub async fn finish(
    conn: &mut AsyncPgConnection,
    work: &ProjectMember,
    to: AccessState,
) -> Result<bool, diesel::result::Error> {
    let n = diesel::update(as_taken(work))
        .set((
            project_members::state.eq(to),
            project_members::last_error.eq(None::<String>),
            project_members::next_attempt_at.eq(None::<DateTime<Utc>>),
            project_members::lease_until.eq(None::<DateTime<Utc>>),
            project_members::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// The attempt failed: record why and when to try again, and give the lease back. If the row
/// was turned meanwhile, its new work is due at once instead.
///
/// # Errors
/// When Postgres fails.
pub async fn failed(
    conn: &mut AsyncPgConnection,
    work: &ProjectMember,
    reason: &str,
    retry_in: Duration,
) -> Result<(), diesel::result::Error> {
    let now = Utc::now();
    let next =
        TimeDelta::from_std(retry_in).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let reason: String = reason.chars().take(1000).collect();
    let same = diesel::update(as_taken(work))
        .set((
            project_members::last_error.eq(Some(reason)),
            project_members::next_attempt_at.eq(Some(next)),
            project_members::lease_until.eq(None::<DateTime<Utc>>),
            project_members::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    if same == 0 {
        release_lease(conn, work.id).await?;
    }
    Ok(())
}

/// Gives the lease back without recording a failure (the row was turned under the work); its
/// work is due at once.
///
/// # Errors
/// When Postgres fails.
pub async fn release_lease(conn: &mut AsyncPgConnection, id: i64) -> Result<(), diesel::result::Error> {
    diesel::update(project_members::table.find(id).filter(project_members::state.eq_any(WORKING)))
        .set((
            project_members::lease_until.eq(None::<DateTime<Utc>>),
            project_members::next_attempt_at.eq(Some(Utc::now())),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
