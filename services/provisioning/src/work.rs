//! The Hopsworks work of assignments, as the background task takes it: due `provisioning` and
//! `unassigning` rows are claimed under a lease (`lease_until`), the Hopsworks calls happen
//! outside any transaction, and each result is written back (with its event) only if no admin
//! changed the assignment meanwhile (`version`).

use crate::schema::{assignments, users};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::dsl::IntervalDsl as _;
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{ClusterAssignedV1, ClusterUnassignedV1};
use hopsbridge_domain::{AssignmentState, ClusterId, UserId};
use hopsbridge_platform::db::DbError;
use hopsbridge_platform::events::enqueue_at;
use std::time::Duration;

/// States with Hopsworks work to do.
pub const WORKING: [AssignmentState; 2] = [AssignmentState::Provisioning, AssignmentState::Unassigning];

/// Work the background task took: one assignment's Hopsworks steps.
#[derive(Debug, Clone, Queryable)]
pub struct Work {
    /// The user.
    pub user_id: UserId,
    /// provisioning or unassigning.
    pub status: AssignmentState,
    /// The cluster to make (or deactivate) the account on.
    pub cluster_id: ClusterId,
    /// For a move: the cluster whose account is deactivated first.
    pub previous_cluster_id: Option<ClusterId>,
    /// For a move: the account to deactivate, when known.
    pub previous_hopsworks_user_id: Option<i64>,
    /// The account on `cluster_id`, when known.
    pub hopsworks_user_id: Option<i64>,
    /// `maxNumProjects` to set.
    pub max_num_projects: i32,
    /// The assignment's version when taken.
    pub version: i32,
    /// Attempts including this one.
    pub attempts: i32,
}

/// Takes up to `limit` due pieces of work under a lease of `lease_secs`; replicas claiming at
/// the same time skip each other's rows.
///
/// # Errors
/// When Postgres fails.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease_secs: i64,
) -> Result<Vec<Work>, diesel::result::Error> {
    let now = diesel::dsl::now;
    // The rows to claim, read under their own name inside the update of the same table.
    let candidates = diesel::alias!(assignments as candidates);
    let due = candidates
        .filter(candidates.field(assignments::status).eq_any(WORKING))
        .filter(candidates.field(assignments::next_attempt_at).le(now))
        .filter(
            candidates.field(assignments::lease_until).is_null().or(candidates.field(assignments::lease_until).lt(now)),
        )
        .order((candidates.field(assignments::next_attempt_at).asc(), candidates.field(assignments::user_id).asc()))
        .limit(limit)
        .select(candidates.field(assignments::user_id))
        .for_update()
        .skip_locked();
    diesel::update(assignments::table.filter(assignments::user_id.eq_any(due)))
        .set((
            assignments::lease_until.eq((now.into_sql::<Timestamptz>() + lease_secs.seconds()).nullable()),
            assignments::attempts.eq(assignments::attempts + 1),
        ))
        .returning((
            assignments::user_id,
            assignments::status,
            // Work is claimed only in states that hold a cluster.
            assignments::cluster_id.assume_not_null(),
            assignments::previous_cluster_id,
            assignments::previous_hopsworks_user_id,
            assignments::hopsworks_user_id,
            assignments::max_num_projects,
            assignments::version,
            assignments::attempts,
        ))
        .load(conn)
        .await
}

/// Locks the assignment and checks it is still the work that was taken.
async fn still_current(conn: &mut AsyncPgConnection, work: &Work) -> Result<bool, diesel::result::Error> {
    let row: Option<(AssignmentState, Option<ClusterId>, i32)> = assignments::table
        .find(work.user_id)
        .select((assignments::status, assignments::cluster_id, assignments::version))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(row == Some((work.status, Some(work.cluster_id), work.version)))
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
    now: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    if !still_current(conn, work).await? {
        return Ok(false);
    }
    diesel::update(assignments::table.find(work.user_id))
        .set((
            assignments::previous_cluster_id.eq(None::<ClusterId>),
            assignments::previous_hopsworks_user_id.eq(None::<i64>),
            assignments::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    if let (true, Some(previous)) = (had_account, work.previous_cluster_id) {
        announce_unassigned(conn, work.user_id, (previous, "moved"), now).await?;
    }
    Ok(true)
}

/// The Hopsworks account exists: the assignment is complete (at calendar time `now`) and
/// ClusterAssigned is announced, in one transaction. Returns false when an admin changed the assignment meanwhile.
///
/// # Errors
/// When Postgres fails.
pub async fn complete(
    conn: &mut AsyncPgConnection,
    work: &Work,
    (username, hopsworks_id): (&str, i64),
    now: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    // Written only if it is still the work that was taken (the update waits for a concurrent
    // change of the row and checks again).
    let current = assignments::table
        .find(work.user_id)
        .filter(assignments::status.eq(work.status))
        .filter(assignments::cluster_id.eq(work.cluster_id))
        .filter(assignments::version.eq(work.version));
    let updated = diesel::update(current)
        .set((
            assignments::status.eq(AssignmentState::Complete),
            assignments::hopsworks_username.eq(Some(username)),
            assignments::hopsworks_user_id.eq(Some(hopsworks_id)),
            assignments::last_error.eq(None::<String>),
            assignments::next_attempt_at.eq(None::<DateTime<Utc>>),
            assignments::lease_until.eq(None::<DateTime<Utc>>),
            assignments::completed_at.eq(Some(now)),
            assignments::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    if updated == 0 {
        return Ok(false);
    }
    // A person suspended meanwhile: their new account (made activated) is blocked next.
    let suspended = users::table
        .find(work.user_id)
        .filter(users::status.eq(hopsbridge_domain::AccountStatus::Suspended))
        .count()
        .get_result::<i64>(conn)
        .await?;
    if suspended > 0 {
        diesel::update(assignments::table.find(work.user_id))
            .set((
                assignments::account_sync_due_at.eq(diesel::dsl::now.into_sql::<Timestamptz>().nullable()),
                assignments::account_sync_version.eq(assignments::account_sync_version + 1),
            ))
            .execute(conn)
            .await?;
    }
    let event = ClusterAssignedV1 {
        user_id: work.user_id.to_string(),
        cluster_id: work.cluster_id.to_string(),
        hopsworks_username: username.to_owned(),
        hopsworks_user_id: hopsworks_id,
    };
    enqueue_at(conn, &event, None, now).await.map_err(db_to_diesel)?;
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
    now: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    if !still_current(conn, work).await? {
        return Ok(false);
    }
    diesel::update(assignments::table.find(work.user_id))
        .set((
            assignments::status.eq(AssignmentState::Unassigned),
            assignments::cluster_id.eq(None::<ClusterId>),
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
        announce_unassigned(conn, work.user_id, (work.cluster_id, "unassigned"), now).await?;
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
    retry_in: Duration,
) -> Result<(), diesel::result::Error> {
    let current = still_current(conn, work).await?;
    let now = Utc::now();
    let next = if current {
        TimeDelta::from_std(retry_in).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
    } else {
        now
    };
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
pub async fn release_lease(conn: &mut AsyncPgConnection, user: UserId) -> Result<(), diesel::result::Error> {
    diesel::update(assignments::table.find(user))
        .set((assignments::lease_until.eq(None::<DateTime<Utc>>), assignments::next_attempt_at.eq(Some(Utc::now()))))
        .execute(conn)
        .await?;
    Ok(())
}

/// Announces that `user` no longer has an account on `cluster` (`reason`: moved or
/// unassigned) since calendar time `now`.
async fn announce_unassigned(
    conn: &mut AsyncPgConnection,
    user: UserId,
    (cluster, reason): (ClusterId, &str),
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    let event =
        ClusterUnassignedV1 { user_id: user.to_string(), cluster_id: cluster.to_string(), reason: reason.to_owned() };
    enqueue_at(conn, &event, None, now).await.map_err(db_to_diesel)?;
    Ok(())
}

fn db_to_diesel(e: DbError) -> diesel::result::Error {
    match e {
        DbError::Other(d) => d,
        other => diesel::result::Error::QueryBuilderError(other.to_string().into()),
    }
}
