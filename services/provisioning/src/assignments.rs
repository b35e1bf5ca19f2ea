//! Who is on which cluster, and the Hopsworks work still to do for it.
//!
//! Seats are never counted in a column: every placement takes one transaction-wide advisory
//! lock and locks the candidate cluster rows, then counts the `provisioning` and `complete`
//! assignments of each, so two placements can never fill the same last seat. The Hopsworks
//! calls happen outside any transaction, under a lease (`lease_until`) taken by the background
//! task; their results are written back only if no admin changed the assignment meanwhile
//! (`version`).

use crate::clusters::{self, ClusterRow, clusters as clusters_table};
use crate::error::ProvisioningError;
use crate::users::{self, status as user_status};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{ClusterAssignedV1, ClusterUnassignedV1};
use hopsbridge_platform::events::enqueue;
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

diesel::table! {
    /// Users' assignments to clusters.
    assignments (user_id) {
        user_id -> Uuid,
        cluster_id -> Nullable<Uuid>,
        status -> Text,
        hopsworks_username -> Nullable<Text>,
        hopsworks_user_id -> Nullable<Int8>,
        max_num_projects -> Int4,
        previous_cluster_id -> Nullable<Uuid>,
        previous_hopsworks_user_id -> Nullable<Int8>,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        next_attempt_at -> Nullable<Timestamptz>,
        lease_until -> Nullable<Timestamptz>,
        version -> Int4,
        waiting_since -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(assignments, clusters_table);

/// Assignment statuses.
pub mod status {
    /// PaymentMethodAdded came before UserCreated.
    pub const WAITING_FOR_USER: &str = "waiting_for_user";
    /// No active cluster had room.
    pub const WAITING_FOR_CAPACITY: &str = "waiting_for_capacity";
    /// A seat is taken; the Hopsworks account is being made.
    pub const PROVISIONING: &str = "provisioning";
    /// The Hopsworks account exists.
    pub const COMPLETE: &str = "complete";
    /// The seat is released; the Hopsworks account is being deactivated.
    pub const UNASSIGNING: &str = "unassigning";
    /// Nothing left to do.
    pub const UNASSIGNED: &str = "unassigned";
    /// Every status.
    pub const ALL: [&str; 6] =
        [WAITING_FOR_USER, WAITING_FOR_CAPACITY, PROVISIONING, COMPLETE, UNASSIGNING, UNASSIGNED];
}

/// Statuses that hold a seat.
pub const SEATED: [&str; 2] = [status::PROVISIONING, status::COMPLETE];

/// An assignment as stored and as admins see it.
#[derive(Clone, Debug, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = assignments)]
pub struct Assignment {
    /// The user.
    pub user_id: Uuid,
    /// The cluster holding (or releasing) their seat.
    pub cluster_id: Option<Uuid>,
    /// See [`status`].
    pub status: String,
    /// Their Hopsworks username, once the account exists.
    pub hopsworks_username: Option<String>,
    /// Their numeric Hopsworks user id, once the account exists.
    pub hopsworks_user_id: Option<i64>,
    /// `maxNumProjects` of their Hopsworks account.
    pub max_num_projects: i32,
    /// For a move: the cluster whose account is still to be deactivated.
    pub previous_cluster_id: Option<Uuid>,
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

/// Serialises every placement (seat counting) across replicas for the rest of the transaction.
async fn placement_lock(mut conn: &AsyncPgConnection) -> Result<(), diesel::result::Error> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('hopsbridge_provisioning_placement'))")
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Locks the active clusters and answers each one's free seats. The two statements go to
/// Postgres together; it runs them in order, so the seats (of every cluster: the active ones
/// are not known when the count is sent) are counted once the clusters are locked.
async fn free_seats(conn: &AsyncPgConnection) -> Result<Vec<(Uuid, i64)>, diesel::result::Error> {
    let mut locking = conn;
    let active = clusters_table::table
        .filter(clusters_table::status.eq(clusters::status::ACTIVE))
        .order(clusters_table::id.asc())
        .select((clusters_table::id, clusters_table::capacity))
        .for_update()
        .load::<(Uuid, i32)>(&mut locking);
    let (active, used) = futures::try_join!(active, clusters::occupancy(conn, None))?;
    Ok(active.into_iter().map(|(id, cap)| (id, i64::from(cap) - used.get(&id).copied().unwrap_or(0))).collect())
}

/// The cluster with the most free seats, if any has one; takes that seat in `free`.
fn take_best(free: &mut [(Uuid, i64)]) -> Option<Uuid> {
    let best = free.iter_mut().filter(|(_, n)| *n > 0).max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
    best.1 -= 1;
    Some(best.0)
}

async fn lock_row(mut conn: &AsyncPgConnection, user: Uuid) -> Result<Option<Assignment>, diesel::result::Error> {
    assignments::table.find(user).select(Assignment::as_select()).for_update().first(&mut conn).await.optional()
}

/// The assignment of `user`, if any.
///
/// # Errors
/// When Postgres fails.
pub async fn get(conn: &mut AsyncPgConnection, user: Uuid) -> Result<Option<Assignment>, diesel::result::Error> {
    assignments::table.find(user).select(Assignment::as_select()).first(conn).await.optional()
}

/// Seats `user` on `cluster` (status provisioning, work due now) or leaves them waiting for
/// capacity, creating the row if needed. The caller holds the placement lock.
async fn seat(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    cluster: Option<Uuid>,
    max_num_projects: i32,
    exists: bool,
) -> Result<(), diesel::result::Error> {
    let status = if cluster.is_some() { status::PROVISIONING } else { status::WAITING_FOR_CAPACITY };
    let next = cluster.map(|_| Utc::now());
    if exists {
        // Asking again after an unassignment queues the user anew.
        diesel::update(assignments::table.find(user).filter(assignments::status.eq(status::UNASSIGNED)))
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
    user: Uuid,
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
    requests: &[(Uuid, i32)],
) -> Result<Vec<Requested>, diesel::result::Error> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<Uuid> = requests.iter().map(|(user, _)| *user).collect();
    ids.sort_unstable();
    ids.dedup();
    // Everything the decisions need, sent to Postgres together and run in this order: the
    // placement lock first, so the rest is read under it.
    let shared: &AsyncPgConnection = conn;
    let (_, existing, people, mut free) = futures::try_join!(
        placement_lock(shared),
        lock_rows(shared, &ids),
        users::get_many(shared, &ids),
        free_seats(shared)
    )?;
    // Each user's row as the requests before leave it: (status, maxNumProjects).
    let mut rows: HashMap<Uuid, (&str, i32)> =
        existing.iter().map(|a| (a.user_id, (a.status.as_str(), a.max_num_projects))).collect();
    let (mut new_rows, mut seated_again) = (Vec::new(), Vec::new());
    let mut outcomes = Vec::with_capacity(requests.len());
    for &(user, max_num_projects) in requests {
        let row = rows.get(&user).copied();
        if let Some((status, ..)) = row
            && status != status::UNASSIGNED
            && status != status::WAITING_FOR_USER
        {
            outcomes.push(Requested::AlreadyAssigned);
            continue;
        }
        let Some(person) = people.get(&user) else {
            if row.is_none() {
                new_rows.push(NewRow { user, cluster: None, status: status::WAITING_FOR_USER, max_num_projects });
                rows.insert(user, (status::WAITING_FOR_USER, max_num_projects));
            }
            outcomes.push(Requested::WaitingForUser);
            continue;
        };
        if person.status == user_status::DELETED {
            outcomes.push(Requested::UserDeleted);
            continue;
        }
        let cluster = take_best(&mut free);
        let status = if cluster.is_some() { status::PROVISIONING } else { status::WAITING_FOR_CAPACITY };
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
    user: Uuid,
    cluster: Option<Uuid>,
    status: &'static str,
    max_num_projects: i32,
}

async fn lock_rows(mut conn: &AsyncPgConnection, users: &[Uuid]) -> Result<Vec<Assignment>, diesel::result::Error> {
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
pub async fn user_known(conn: &mut AsyncPgConnection, user: Uuid) -> Result<Option<Requested>, diesel::result::Error> {
    // Taken before looking: a PaymentMethodAdded being handled at this moment holds the lock and
    // either sees this person (once committed) or has written its waiting row by the time the
    // lock is ours.
    placement_lock(conn).await?;
    let waiting = assignments::table
        .find(user)
        .filter(assignments::status.eq(status::WAITING_FOR_USER))
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
    let mut free = free_seats(conn).await?;
    let room: i64 = free.iter().map(|(_, n)| (*n).max(0)).sum();
    if room == 0 {
        return Ok(0);
    }
    let waiting: Vec<(Uuid, i32)> = assignments::table
        .filter(assignments::status.eq(status::WAITING_FOR_CAPACITY))
        .order((assignments::waiting_since.asc(), assignments::user_id.asc()))
        .limit(room)
        .select((assignments::user_id, assignments::max_num_projects))
        .for_update()
        .load(conn)
        .await?;
    let mut placed = 0;
    for (user, max_num_projects) in waiting {
        let Some(cluster) = take_best(&mut free) else { break };
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
    diesel::select(diesel::dsl::exists(assignments::table.filter(assignments::status.eq(status::WAITING_FOR_CAPACITY))))
        .get_result(conn)
        .await
}

/// How an admin's move ended.
///
/// # Errors
/// Not found, cluster not active or full, or the assignment busy releasing its seat.
pub async fn move_to(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    target: Uuid,
    default_max_num_projects: i32,
) -> Result<Assignment, ProvisioningError> {
    placement_lock(conn).await?;
    let cluster: ClusterRow = clusters::lock(conn, target).await?;
    let existing = lock_row(conn, user).await?;
    match users::get(conn, user).await? {
        None => {
            return Err(ProvisioningError::NotFound("user_not_found", "provisioning does not know this user".into()));
        }
        Some(p) if p.status == user_status::DELETED => {
            return Err(ProvisioningError::Conflict("user_deleted", "the user's account is deleted".into()));
        }
        Some(_) => {}
    }
    if let Some(a) = &existing {
        if a.cluster_id == Some(target) && SEATED.contains(&a.status.as_str()) {
            return Ok(a.clone());
        }
        if a.status == status::UNASSIGNING || a.previous_cluster_id.is_some() {
            return Err(ProvisioningError::Conflict(
                "assignment_busy",
                "the user's previous Hopsworks account is still being deactivated; try again shortly".into(),
            ));
        }
    }
    if cluster.status != clusters::status::ACTIVE {
        return Err(ProvisioningError::Conflict(
            "cluster_not_active",
            format!("the cluster is {}, not active", cluster.status),
        ));
    }
    let used = clusters::occupancy(conn, Some(&[target])).await?.get(&target).copied().unwrap_or(0);
    if used >= i64::from(cluster.capacity) {
        return Err(ProvisioningError::Conflict("cluster_full", "the cluster has no free seat".into()));
    }
    let max_num_projects = existing.as_ref().map_or(default_max_num_projects, |a| a.max_num_projects);
    match &existing {
        Some(a) if SEATED.contains(&a.status.as_str()) => {
            // The old account is deactivated first, then the new one is made (the background
            // task does both, announcing ClusterUnassigned, then ClusterAssigned).
            diesel::update(assignments::table.find(user))
                .set((
                    assignments::previous_cluster_id.eq(a.cluster_id),
                    assignments::previous_hopsworks_user_id.eq(a.hopsworks_user_id),
                    assignments::cluster_id.eq(Some(target)),
                    assignments::status.eq(status::PROVISIONING),
                    assignments::hopsworks_username.eq(None::<String>),
                    assignments::hopsworks_user_id.eq(None::<i64>),
                    assignments::attempts.eq(0),
                    assignments::last_error.eq(None::<String>),
                    assignments::next_attempt_at.eq(Some(Utc::now())),
                    assignments::version.eq(assignments::version + 1),
                    assignments::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
        }
        _ => seat(conn, user, Some(target), max_num_projects, existing.is_some()).await?,
    }
    get(conn, user).await?.ok_or_else(|| ProvisioningError::NotFound("assignment_not_found", String::new()))
}

/// An admin's unassignment: the seat is released at once; the account is deactivated by the
/// background task.
///
/// # Errors
/// [`ProvisioningError::NotFound`] when the user has no assignment.
pub async fn unassign(conn: &mut AsyncPgConnection, user: Uuid) -> Result<Assignment, ProvisioningError> {
    placement_lock(conn).await?;
    let Some(a) = lock_row(conn, user).await? else {
        return Err(not_assigned());
    };
    match a.status.as_str() {
        status::UNASSIGNED | status::UNASSIGNING => return Err(not_assigned()),
        status::PROVISIONING | status::COMPLETE => {
            diesel::update(assignments::table.find(user))
                .set((
                    assignments::status.eq(status::UNASSIGNING),
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
                    assignments::status.eq(status::UNASSIGNED),
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
    ProvisioningError::NotFound("not_assigned", "the user is not assigned to a cluster".into())
}

/// A page of assignments, optionally of one status, in order of request.
///
/// # Errors
/// When Postgres fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Assignment>, i64), diesel::result::Error> {
    let filtered = |s: Option<&str>| {
        let mut q = assignments::table.into_boxed();
        if let Some(s) = s {
            q = q.filter(assignments::status.eq(s.to_owned()));
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

/// Work the background task took: one assignment's Hopsworks steps.
#[derive(Debug, Clone, QueryableByName)]
pub struct Work {
    /// The user.
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub user_id: Uuid,
    /// provisioning or unassigning.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub status: String,
    /// The cluster to make (or deactivate) the account on.
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub cluster_id: Uuid,
    /// For a move: the cluster whose account is deactivated first.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
    pub previous_cluster_id: Option<Uuid>,
    /// For a move: the account to deactivate, when known.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub previous_hopsworks_user_id: Option<i64>,
    /// The account on `cluster_id`, when known.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub hopsworks_user_id: Option<i64>,
    /// `maxNumProjects` to set.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub max_num_projects: i32,
    /// The assignment's version when taken.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub version: i32,
    /// Attempts including this one.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub attempts: i32,
}

/// Takes up to `limit` due pieces of work under a lease of `lease_secs`.
///
/// # Errors
/// When Postgres fails.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease_secs: i64,
) -> Result<Vec<Work>, diesel::result::Error> {
    diesel::sql_query(
        "UPDATE assignments SET lease_until = now() + make_interval(secs => $2), attempts = attempts + 1
         WHERE user_id IN (
             SELECT user_id FROM assignments
             WHERE status IN ('provisioning', 'unassigning') AND next_attempt_at <= now()
               AND (lease_until IS NULL OR lease_until < now())
             ORDER BY next_attempt_at, user_id
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING user_id, status, cluster_id, previous_cluster_id, previous_hopsworks_user_id,
                   hopsworks_user_id, max_num_projects, version, attempts",
    )
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .bind::<diesel::sql_types::BigInt, _>(lease_secs)
    .load(conn)
    .await
}

/// Locks the assignment and checks it is still the work that was taken.
async fn still_current(conn: &mut AsyncPgConnection, work: &Work) -> Result<bool, diesel::result::Error> {
    Ok(lock_row(conn, work.user_id)
        .await?
        .is_some_and(|a| a.status == work.status && a.cluster_id == Some(work.cluster_id) && a.version == work.version))
}

/// A move's old account is deactivated: forget it and announce ClusterUnassigned (if the user
/// ever had that account). Returns false when an admin changed the assignment meanwhile.
///
/// # Errors
/// When Postgres fails.
pub async fn moved_off(
    conn: &mut AsyncPgConnection,
    work: &Work,
    had_account: bool,
) -> Result<bool, diesel::result::Error> {
    if !still_current(conn, work).await? {
        return Ok(false);
    }
    diesel::update(assignments::table.find(work.user_id))
        .set((
            assignments::previous_cluster_id.eq(None::<Uuid>),
            assignments::previous_hopsworks_user_id.eq(None::<i64>),
            assignments::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    if let (true, Some(previous)) = (had_account, work.previous_cluster_id) {
        let event = ClusterUnassignedV1 {
            user_id: work.user_id.to_string(),
            cluster_id: previous.to_string(),
            reason: "moved".to_owned(),
        };
        enqueue(conn, &event, None).await.map_err(db_to_diesel)?;
    }
    Ok(true)
}

/// The Hopsworks account exists: the assignment is complete and ClusterAssigned is announced,
/// in one transaction. Returns false when an admin changed the assignment meanwhile.
///
/// # Errors
/// When Postgres fails.
pub async fn complete(
    conn: &mut AsyncPgConnection,
    work: &Work,
    username: &str,
    hopsworks_id: i64,
) -> Result<bool, diesel::result::Error> {
    // Written only if it is still the work that was taken (the update waits for a concurrent
    // change of the row and checks again).
    let current = assignments::table
        .find(work.user_id)
        .filter(assignments::status.eq(&work.status))
        .filter(assignments::cluster_id.eq(work.cluster_id))
        .filter(assignments::version.eq(work.version));
    let updated = diesel::update(current)
        .set((
            assignments::status.eq(status::COMPLETE),
            assignments::hopsworks_username.eq(Some(username)),
            assignments::hopsworks_user_id.eq(Some(hopsworks_id)),
            assignments::last_error.eq(None::<String>),
            assignments::next_attempt_at.eq(None::<DateTime<Utc>>),
            assignments::lease_until.eq(None::<DateTime<Utc>>),
            assignments::completed_at.eq(Some(Utc::now())),
            assignments::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    if updated == 0 {
        return Ok(false);
    }
    let event = ClusterAssignedV1 {
        user_id: work.user_id.to_string(),
        cluster_id: work.cluster_id.to_string(),
        hopsworks_username: username.to_owned(),
        hopsworks_user_id: hopsworks_id,
    };
    enqueue(conn, &event, None).await.map_err(db_to_diesel)?;
    Ok(true)
}

/// An unassigned user's account is deactivated: nothing is left to do; ClusterUnassigned is
/// announced (if the user ever had the account). Returns false when an admin changed the
/// assignment meanwhile.
///
/// # Errors
/// When Postgres fails.
pub async fn released(
    conn: &mut AsyncPgConnection,
    work: &Work,
    had_account: bool,
) -> Result<bool, diesel::result::Error> {
    if !still_current(conn, work).await? {
        return Ok(false);
    }
    diesel::update(assignments::table.find(work.user_id))
        .set((
            assignments::status.eq(status::UNASSIGNED),
            assignments::cluster_id.eq(None::<Uuid>),
            assignments::hopsworks_username.eq(None::<String>),
            assignments::hopsworks_user_id.eq(None::<i64>),
            assignments::last_error.eq(None::<String>),
            assignments::next_attempt_at.eq(None::<DateTime<Utc>>),
            assignments::lease_until.eq(None::<DateTime<Utc>>),
            assignments::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    if had_account {
        let event = ClusterUnassignedV1 {
            user_id: work.user_id.to_string(),
            cluster_id: work.cluster_id.to_string(),
            reason: "unassigned".to_owned(),
        };
        enqueue(conn, &event, None).await.map_err(db_to_diesel)?;
    }
    Ok(true)
}

/// The attempt failed: record why and when to try again, and give the lease back. If an admin
/// changed the assignment meanwhile, the new work is due at once instead.
///
/// # Errors
/// When Postgres fails.
pub async fn failed(
    conn: &mut AsyncPgConnection,
    work: &Work,
    reason: &str,
    retry_in: chrono::Duration,
) -> Result<(), diesel::result::Error> {
    let current = still_current(conn, work).await?;
    let next = if current { Utc::now() + retry_in } else { Utc::now() };
    let mut reason: String = reason.chars().take(1000).collect();
    if !current {
        reason.clear();
    }
    diesel::update(assignments::table.find(work.user_id).filter(assignments::status.eq_any(WORKING)))
        .set((
            assignments::last_error.eq((!reason.is_empty()).then_some(reason)),
            assignments::next_attempt_at.eq(Some(next)),
            assignments::lease_until.eq(None::<DateTime<Utc>>),
            assignments::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Gives the lease back without recording a failure (the assignment changed under the work).
///
/// # Errors
/// When Postgres fails.
pub async fn release_lease(conn: &mut AsyncPgConnection, user: Uuid) -> Result<(), diesel::result::Error> {
    diesel::update(assignments::table.find(user))
        .set((assignments::lease_until.eq(None::<DateTime<Utc>>), assignments::next_attempt_at.eq(Some(Utc::now()))))
        .execute(conn)
        .await?;
    Ok(())
}

/// Statuses with Hopsworks work to do.
pub const WORKING: [&str; 2] = [status::PROVISIONING, status::UNASSIGNING];

fn db_to_diesel(e: hopsbridge_platform::db::DbError) -> diesel::result::Error {
    match e {
        hopsbridge_platform::db::DbError::Other(d) => d,
        other => diesel::result::Error::QueryBuilderError(other.to_string().into()),
    }
}

/// Rows by cluster, for the background task: each cluster's row once.
///
/// # Errors
/// When Postgres fails.
pub async fn cluster_rows(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, ClusterRow>, diesel::result::Error> {
    let rows: Vec<ClusterRow> =
        clusters_table::table.filter(clusters_table::id.eq_any(ids)).select(ClusterRow::as_select()).load(conn).await?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
}
