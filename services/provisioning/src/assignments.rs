//! Who is on which cluster: placing paying owners (on request, once they are known, or when a
//! seat frees up), placing team members on their owner's cluster ([`place_member`]), admins'
//! moves and unassignments, and the admin listing.
//!
//! Every placement counts seats under the placement lock ([`crate::seats`]). The Hopsworks work
//! a placement leaves behind is done by the background task ([`crate::work`]).

use crate::clusters::{self, ClusterRow};
use crate::error::{ProvisioningCode, ProvisioningError};
use crate::schema::assignments;
use crate::seats::{self, FreeSeats, placement_lock};
use crate::users;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{AccountStatus, AssignmentState, ClusterId, ClusterStatus, UserId};
use serde::Serialize;
use std::collections::HashMap;

/// An assignment as stored and as admins see it.
#[derive(Clone, Debug, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = assignments)]
pub struct Assignment {
    /// The user.
    pub user_id: UserId,
    /// The cluster holding (or releasing) their seat.
    pub cluster_id: Option<ClusterId>,
    /// Where the assignment is.
    pub status: AssignmentState,
    /// Their Hopsworks username, once the account exists.
    pub hopsworks_username: Option<String>,
    /// Their numeric Hopsworks user id, once the account exists.
    pub hopsworks_user_id: Option<i64>,
    /// `maxNumProjects` of their Hopsworks account.
    pub max_num_projects: i32,
    /// For a move: the cluster whose account is still to be deactivated.
    pub previous_cluster_id: Option<ClusterId>,
    /// Background attempts so far.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the user asked (or last asked again) for a cluster.
    pub waiting_since: DateTime<Utc>,
    /// When the account was last completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Bumped by every admin change, so background work started before it is not written back.
    #[serde(skip)]
    pub version: i32,
}

/// What [`request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The user already has (or is getting, or is waiting for) a seat.
    AlreadyAssigned,
    /// The user is not known yet; kept as waiting_for_user.
    WaitingForUser,
    /// The user is deleted; nothing done.
    UserDeleted,
    /// A seat was taken; the background task makes the account.
    Seated,
    /// No room; waiting for capacity.
    WaitingForCapacity,
}

async fn lock_row(mut conn: &AsyncPgConnection, user: UserId) -> Result<Option<Assignment>, diesel::result::Error> {
    assignments::table.find(user).select(Assignment::as_select()).for_update().first(&mut conn).await.optional()
}

/// The assignment of `user`, if any.
///
/// # Errors
/// When Postgres fails.
pub async fn get(conn: &mut AsyncPgConnection, user: UserId) -> Result<Option<Assignment>, diesel::result::Error> {
    assignments::table.find(user).select(Assignment::as_select()).first(conn).await.optional()
}

/// The assignments of those of `users` who have one, by user.
///
/// # Errors
/// When Postgres fails.
pub async fn get_many(
    mut conn: &AsyncPgConnection,
    users: &[UserId],
) -> Result<HashMap<UserId, Assignment>, diesel::result::Error> {
    let rows: Vec<Assignment> = assignments::table
        .filter(assignments::user_id.eq_any(users))
        .select(Assignment::as_select())
        .load(&mut conn)
        .await?;
    Ok(rows.into_iter().map(|a| (a.user_id, a)).collect())
}

/// What [`place_member`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberPlaced {
    /// Nothing to change.
    Unchanged,
    /// The owner has no cluster yet: the member waits for it.
    WaitingForOwner,
    /// Seated on the owner's cluster; the account is made in the background.
    Seated,
    /// Moved from another cluster; the old account is deactivated and the new one made in the
    /// background.
    Moved,
    /// Already on the owner's cluster: the account is made again (`maxNumProjects` 0, the
    /// owner's projects), in the background.
    Redone,
    /// A previous move or unassignment is still deactivating an account; placed once it is
    /// done.
    Busy,
}

/// Places a team member on their owner's cluster `target` (None: the owner has none yet),
/// with `maxNumProjects` 0 and whatever the cluster's capacity: a team stays together, and the
/// seat still counts in occupancy. `synced` says whether the member was already given the
/// owner's projects on `target`. A member who holds a seat elsewhere keeps it until the
/// owner's cluster is ready, then is moved. Takes the placement lock.
///
/// # Errors
/// When Postgres fails.
pub async fn place_member(
    conn: &mut AsyncPgConnection,
    member: UserId,
    target: Option<ClusterId>,
    synced: bool,
) -> Result<MemberPlaced, diesel::result::Error> {
    placement_lock(conn).await?;
    let existing = lock_row(conn, member).await?;
    let Some(target) = target else {
        return match existing {
            Some(a) if a.status.holds_seat() || a.status == AssignmentState::Unassigning => Ok(MemberPlaced::Unchanged),
            Some(a) if a.status == AssignmentState::WaitingForOwner => Ok(MemberPlaced::Unchanged),
            Some(_) => {
                diesel::update(assignments::table.find(member))
                    .set((
                        assignments::status.eq(AssignmentState::WaitingForOwner),
                        assignments::cluster_id.eq(None::<ClusterId>),
                        assignments::max_num_projects.eq(0),
                        assignments::next_attempt_at.eq(None::<DateTime<Utc>>),
                        assignments::version.eq(assignments::version + 1),
                        assignments::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                Ok(MemberPlaced::WaitingForOwner)
            }
            None => {
                let row = NewRow {
                    user: member,
                    cluster: None,
                    status: AssignmentState::WaitingForOwner,
                    max_num_projects: 0,
                };
                insert_rows(conn, &[row]).await?;
                Ok(MemberPlaced::WaitingForOwner)
            }
        };
    };
    let Some(a) = existing else {
        let row =
            NewRow { user: member, cluster: Some(target), status: AssignmentState::Provisioning, max_num_projects: 0 };
        insert_rows(conn, &[row]).await?;
        return Ok(MemberPlaced::Seated);
    };
    let busy = a.status == AssignmentState::Unassigning || (a.status.holds_seat() && a.previous_cluster_id.is_some());
    if busy {
        return Ok(MemberPlaced::Busy);
    }
    if !a.status.holds_seat() {
        seat(conn, member, Some(target), 0, true).await?;
        return Ok(MemberPlaced::Seated);
    }
    if a.cluster_id == Some(target) {
        // An account being made gets maxNumProjects 0 and the owner's projects (one whose work
        // began before the member joined is made again when it completes).
        if a.max_num_projects == 0 && (a.status == AssignmentState::Provisioning || synced) {
            return Ok(MemberPlaced::Unchanged);
        }
        seat(conn, member, Some(target), 0, true).await?;
        return Ok(MemberPlaced::Redone);
    }
    start_move(conn, &a, target, 0).await?;
    Ok(MemberPlaced::Moved)
}

/// Moves a seated user to `target`: the old account is deactivated first, then the new one is
/// made, with `max_num_projects` (the background task does both, announcing
/// ClusterUnassigned, then ClusterAssigned). The caller holds the placement lock and the row.
async fn start_move(
    conn: &mut AsyncPgConnection,
    a: &Assignment,
    target: ClusterId,
    max_num_projects: i32,
) -> Result<(), diesel::result::Error> {
    diesel::update(assignments::table.find(a.user_id))
        .set((
            assignments::previous_cluster_id.eq(a.cluster_id),
            assignments::previous_hopsworks_user_id.eq(a.hopsworks_user_id),
            assignments::cluster_id.eq(Some(target)),
            assignments::status.eq(AssignmentState::Provisioning),
            assignments::hopsworks_username.eq(None::<String>),
            assignments::hopsworks_user_id.eq(None::<i64>),
            assignments::max_num_projects.eq(max_num_projects),
            assignments::attempts.eq(0),
            assignments::last_error.eq(None::<String>),
            assignments::next_attempt_at.eq(Some(Utc::now())),
            assignments::version.eq(assignments::version + 1),
            assignments::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets the `maxNumProjects` the user's next account gets (a former member's, back to a
/// paying owner's).
///
/// # Errors
/// When Postgres fails.
pub async fn set_max_num_projects(
    conn: &mut AsyncPgConnection,
    user: UserId,
    max_num_projects: i32,
) -> Result<(), diesel::result::Error> {
    diesel::update(assignments::table.find(user))
        .set(assignments::max_num_projects.eq(max_num_projects))
        .execute(conn)
        .await?;
    Ok(())
}

/// Seats `user` on `cluster` (status provisioning, work due now) or leaves them waiting for
/// capacity, creating the row if needed. The caller holds the placement lock.
async fn seat(
    conn: &mut AsyncPgConnection,
    user: UserId,
    cluster: Option<ClusterId>,
    max_num_projects: i32,
    exists: bool,
) -> Result<(), diesel::result::Error> {
    let status = if cluster.is_some() { AssignmentState::Provisioning } else { AssignmentState::WaitingForCapacity };
    let next = cluster.map(|_| Utc::now());
    if exists {
        // Asking again after an unassignment queues the user anew.
        diesel::update(assignments::table.find(user).filter(assignments::status.eq(AssignmentState::Unassigned)))
            .set(assignments::waiting_since.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        diesel::update(assignments::table.find(user))
            .set((
                assignments::cluster_id.eq(cluster),
                assignments::status.eq(status),
                assignments::max_num_projects.eq(max_num_projects),
                assignments::hopsworks_username.eq(None::<String>),
                assignments::hopsworks_user_id.eq(None::<i64>),
                assignments::attempts.eq(0),
                assignments::last_error.eq(None::<String>),
                assignments::next_attempt_at.eq(next),
                assignments::version.eq(assignments::version + 1),
                assignments::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
    } else {
        diesel::insert_into(assignments::table)
            .values((
                assignments::user_id.eq(user),
                assignments::cluster_id.eq(cluster),
                assignments::status.eq(status),
                assignments::max_num_projects.eq(max_num_projects),
                assignments::next_attempt_at.eq(next),
            ))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// A paying owner wants a cluster (PaymentMethodAddedV1): seat them on the active cluster with
/// the most free seats, or let them wait. An existing assignment is left alone.
///
/// # Errors
/// When Postgres fails.
pub async fn request(
    conn: &mut AsyncPgConnection,
    user: UserId,
    max_num_projects: i32,
) -> Result<Requested, diesel::result::Error> {
    let outcomes = request_all(conn, &[(user, max_num_projects)]).await?;
    // One outcome per request.
    Ok(outcomes.into_iter().next().unwrap_or(Requested::AlreadyAssigned))
}

/// [`request`] for several owners (each with the `maxNumProjects` of a new assignment), in
/// order, as if one after another: the same outcomes, one per request. The placement lock is
/// taken and the seats counted once for all of them, and their new rows are written in one
/// insert.
///
/// # Errors
/// When Postgres fails.
pub async fn request_all(
    conn: &mut AsyncPgConnection,
    requests: &[(UserId, i32)],
) -> Result<Vec<Requested>, diesel::result::Error> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<UserId> = requests.iter().map(|(user, _)| *user).collect();
    ids.sort_unstable();
    ids.dedup();
    // Everything the decisions need, sent to Postgres together and run in this order: the
    // placement lock first, so the rest is read under it.
    let shared: &AsyncPgConnection = conn;
    let (_, existing, people, mut free) = futures::try_join!(
        placement_lock(shared),
        lock_rows(shared, &ids),
        users::get_many(shared, &ids),
        FreeSeats::lock(shared)
    )?;
    // Each user's row as the requests before leave it: (status, maxNumProjects).
    let mut rows: HashMap<UserId, (AssignmentState, i32)> =
        existing.iter().map(|a| (a.user_id, (a.status, a.max_num_projects))).collect();
    let (mut new_rows, mut seated_again) = (Vec::new(), Vec::new());
    let mut outcomes = Vec::with_capacity(requests.len());
    for &(user, max_num_projects) in requests {
        let row = rows.get(&user).copied();
        if let Some((status, ..)) = row
            && status != AssignmentState::Unassigned
            && status != AssignmentState::WaitingForUser
        {
            outcomes.push(Requested::AlreadyAssigned);
            continue;
        }
        let Some(person) = people.get(&user) else {
            if row.is_none() {
                new_rows.push(NewRow {
                    user,
                    cluster: None,
                    status: AssignmentState::WaitingForUser,
                    max_num_projects,
                });
                rows.insert(user, (AssignmentState::WaitingForUser, max_num_projects));
            }
            outcomes.push(Requested::WaitingForUser);
            continue;
        };
        if person.status == AccountStatus::Deleted {
            outcomes.push(Requested::UserDeleted);
            continue;
        }
        let cluster = free.take_best();
        let status =
            if cluster.is_some() { AssignmentState::Provisioning } else { AssignmentState::WaitingForCapacity };
        // A row this batch made only waits for an unknown person, who stays unknown for the
        // whole batch; so a known person's row, if any, is in Postgres already.
        match row {
            Some((_, kept)) => seated_again.push((user, cluster, kept)),
            None => new_rows.push(NewRow { user, cluster, status, max_num_projects }),
        }
        let max_num_projects = row.map_or(max_num_projects, |(_, kept)| kept);
        rows.insert(user, (status, max_num_projects));
        outcomes.push(if cluster.is_some() { Requested::Seated } else { Requested::WaitingForCapacity });
    }
    insert_rows(conn, &new_rows).await?;
    for (user, cluster, max_num_projects) in seated_again {
        seat(conn, user, cluster, max_num_projects, true).await?;
    }
    Ok(outcomes)
}

/// An assignment row a placement creates.
#[derive(Debug)]
struct NewRow {
    user: UserId,
    cluster: Option<ClusterId>,
    status: AssignmentState,
    max_num_projects: i32,
}

async fn lock_rows(mut conn: &AsyncPgConnection, users: &[UserId]) -> Result<Vec<Assignment>, diesel::result::Error> {
    assignments::table
        .filter(assignments::user_id.eq_any(users))
        .order(assignments::user_id.asc())
        .select(Assignment::as_select())
        .for_update()
        .load(&mut conn)
        .await
}

/// Writes new assignment rows in one insert; a seated one's Hopsworks work is due now.
async fn insert_rows(conn: &mut AsyncPgConnection, rows: &[NewRow]) -> Result<(), diesel::result::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                assignments::user_id.eq(r.user),
                assignments::cluster_id.eq(r.cluster),
                assignments::status.eq(r.status),
                assignments::max_num_projects.eq(r.max_num_projects),
                assignments::next_attempt_at.eq(r.cluster.map(|_| now)),
            )
        })
        .collect();
    diesel::insert_into(assignments::table).values(values).execute(conn).await?;
    Ok(())
}

/// A person became known (UserCreatedV1): place them if their request was waiting for it.
///
/// # Errors
/// When Postgres fails.
pub async fn user_known(
    conn: &mut AsyncPgConnection,
    user: UserId,
) -> Result<Option<Requested>, diesel::result::Error> {
    // Taken before looking: a PaymentMethodAdded being handled at this moment holds the lock and
    // either sees this person (once committed) or has written its waiting row by the time the
    // lock is ours.
    placement_lock(conn).await?;
    let waiting = assignments::table
        .find(user)
        .filter(assignments::status.eq(AssignmentState::WaitingForUser))
        .select(assignments::max_num_projects)
        .first::<i32>(conn)
        .await
        .optional()?;
    match waiting {
        Some(n) => request(conn, user, n).await.map(Some),
        None => Ok(None),
    }
}

/// Seats users waiting for capacity, longest waiting first, while any active cluster has room.
/// Returns how many were seated.
///
/// # Errors
/// When Postgres fails.
pub async fn place_waiting(conn: &mut AsyncPgConnection) -> Result<usize, diesel::result::Error> {
    placement_lock(conn).await?;
    let mut free = FreeSeats::lock(conn).await?;
    let room = free.room();
    if room == 0 {
        return Ok(0);
    }
    let waiting: Vec<(UserId, i32)> = assignments::table
        .filter(assignments::status.eq(AssignmentState::WaitingForCapacity))
        .order((assignments::waiting_since.asc(), assignments::user_id.asc()))
        .limit(room)
        .select((assignments::user_id, assignments::max_num_projects))
        .for_update()
        .load(conn)
        .await?;
    let mut placed = 0;
    for (user, max_num_projects) in waiting {
        let Some(cluster) = free.take_best() else { break };
        seat(conn, user, Some(cluster), max_num_projects, true).await?;
        placed += 1;
    }
    Ok(placed)
}

/// Whether any user is waiting for capacity (read without the placement lock: a user who starts
/// waiting just after is seen on the next pass).
///
/// # Errors
/// When Postgres fails.
pub async fn anyone_waiting(conn: &mut AsyncPgConnection) -> Result<bool, diesel::result::Error> {
    diesel::select(diesel::dsl::exists(
        assignments::table.filter(assignments::status.eq(AssignmentState::WaitingForCapacity)),
    ))
    .get_result(conn)
    .await
}

/// How an admin's move ended.
///
/// # Errors
/// Not found, cluster not active or full, or the assignment busy releasing its seat.
pub async fn move_to(
    conn: &mut AsyncPgConnection,
    user: UserId,
    target: ClusterId,
    default_max_num_projects: i32,
) -> Result<Assignment, ProvisioningError> {
    placement_lock(conn).await?;
    let cluster: ClusterRow = clusters::lock(conn, target).await?;
    let existing = lock_row(conn, user).await?;
    match users::get(conn, user).await? {
        None => return Err(ProvisioningCode::UserNotFound.into()),
        Some(p) if p.status == AccountStatus::Deleted => return Err(ProvisioningCode::UserDeleted.into()),
        Some(_) => {}
    }
    if let Some(a) = &existing {
        if a.cluster_id == Some(target) && a.status.holds_seat() {
            return Ok(a.clone());
        }
        if a.status == AssignmentState::Unassigning || a.previous_cluster_id.is_some() {
            return Err(ProvisioningCode::AssignmentBusy.into());
        }
    }
    if cluster.status != ClusterStatus::Active {
        let message = format!("the cluster is {}, not active", cluster.status);
        return Err(ProvisioningError::refused(ProvisioningCode::ClusterNotActive, message));
    }
    if seats::taken(conn, target).await? >= i64::from(cluster.capacity) {
        return Err(ProvisioningCode::ClusterFull.into());
    }
    let max_num_projects = existing.as_ref().map_or(default_max_num_projects, |a| a.max_num_projects);
    match &existing {
        Some(a) if a.status.holds_seat() => start_move(conn, a, target, max_num_projects).await?,
        _ => seat(conn, user, Some(target), max_num_projects, existing.is_some()).await?,
    }
    get(conn, user).await?.ok_or_else(|| ProvisioningCode::AssignmentNotFound.into())
}

/// An admin's unassignment: the seat is released at once; the account is deactivated by the
/// background task.
///
/// # Errors
/// `not_assigned` when the user holds no seat and waits for none.
pub async fn unassign(conn: &mut AsyncPgConnection, user: UserId) -> Result<Assignment, ProvisioningError> {
    placement_lock(conn).await?;
    let Some(a) = lock_row(conn, user).await? else {
        return Err(not_assigned());
    };
    match a.status {
        AssignmentState::Unassigned | AssignmentState::Unassigning => return Err(not_assigned()),
        AssignmentState::Provisioning | AssignmentState::Complete => {
            diesel::update(assignments::table.find(user))
                .set((
                    assignments::status.eq(AssignmentState::Unassigning),
                    assignments::attempts.eq(0),
                    assignments::last_error.eq(None::<String>),
                    assignments::next_attempt_at.eq(Some(Utc::now())),
                    assignments::version.eq(assignments::version + 1),
                    assignments::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
        }
        _ => {
            diesel::update(assignments::table.find(user))
                .set((
                    assignments::status.eq(AssignmentState::Unassigned),
                    assignments::next_attempt_at.eq(None::<DateTime<Utc>>),
                    assignments::version.eq(assignments::version + 1),
                    assignments::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
        }
    }
    get(conn, user).await?.ok_or_else(not_assigned)
}

fn not_assigned() -> ProvisioningError {
    ProvisioningCode::NotAssigned.into()
}

/// A page of assignments, optionally of one status, in order of request.
///
/// # Errors
/// When Postgres fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    status: Option<AssignmentState>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Assignment>, i64), diesel::result::Error> {
    let filtered = |s: Option<AssignmentState>| {
        let mut q = assignments::table.into_boxed();
        if let Some(s) = s {
            q = q.filter(assignments::status.eq(s));
        }
        q
    };
    let total = filtered(status).count().get_result(conn).await?;
    let items = filtered(status)
        .order((assignments::waiting_since.asc(), assignments::user_id.asc()))
        .limit(limit)
        .offset(offset)
        .select(Assignment::as_select())
        .load(conn)
        .await?;
    Ok((items, total))
}
