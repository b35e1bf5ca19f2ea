//! The account lifecycle on Hopsworks (decision 0050): each account's status follows the
//! person's (suspended: blocked; active: activated) and its `maxNumProjects` follows the owner's
//! plan, pushed by the background task until Hopsworks agrees.
//!
//! A change marks the assignment due (`account_sync_due_at`) and bumps `account_sync_version`
//! in the transaction that makes it; the task claims due accounts under a lease, reads the
//! account, sets what differs, and clears the mark only if no change came meanwhile. A failure
//! keeps it due, with the reason and a backoff, so nothing is lost while Hopsworks is down.

use crate::hopsworks::{Hopsworks, STATUS_ACTIVATED, STATUS_BLOCKED, UpdateOutcome};
use crate::schema::{assignments, plans, project_syncs, projects, users};
use crate::states::TeamState;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::dsl::IntervalDsl as _;
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{AccountStatus, AssignmentState, ClusterId, OwnerId, UserId};
use serde_json::json;
use std::time::Duration;

/// The Hopsworks status an account should have while its person is `status`: blocked while
/// suspended, activated otherwise (a deleted person's account is deactivated by the
/// unassignment, not here).
#[must_use]
pub const fn wanted_status(status: AccountStatus) -> i64 {
    match status {
        AccountStatus::Suspended => STATUS_BLOCKED,
        AccountStatus::Active | AccountStatus::Deleted => STATUS_ACTIVATED,
    }
}

/// Marks `user`'s account due for a push (its wanted status or limit changed).
///
/// # Errors
/// When Postgres fails.
pub async fn mark_due(conn: &mut AsyncPgConnection, user: UserId) -> Result<(), diesel::result::Error> {
    diesel::update(assignments::table.find(user))
        .set((
            assignments::account_sync_due_at.eq(diesel::dsl::now.into_sql::<Timestamptz>().nullable()),
            assignments::account_sync_version.eq(assignments::account_sync_version + 1),
            assignments::account_sync_attempts.eq(0),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// An account to push, as the task claimed it.
#[derive(Debug, Clone, Queryable)]
pub struct AccountSync {
    /// The person.
    pub user_id: UserId,
    /// The cluster of the account.
    pub cluster_id: ClusterId,
    /// The account.
    pub hopsworks_user_id: i64,
    /// `maxNumProjects` it should have.
    pub max_num_projects: i32,
    /// The mark's version when claimed.
    pub version: i32,
    /// Attempts including this one.
    pub attempts: i32,
}

/// Claims up to `limit` due accounts of complete assignments under a lease of `lease_secs`;
/// replicas skip each other's rows.
///
/// # Errors
/// When Postgres fails.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease_secs: i64,
) -> Result<Vec<AccountSync>, diesel::result::Error> {
    let now = diesel::dsl::now;
    let candidates = diesel::alias!(assignments as candidates);
    let lease = candidates.field(assignments::account_sync_lease_until);
    let due = candidates
        .filter(candidates.field(assignments::status).eq(AssignmentState::Complete))
        .filter(candidates.field(assignments::hopsworks_user_id).is_not_null())
        .filter(candidates.field(assignments::account_sync_due_at).le(now))
        .filter(lease.is_null().or(lease.lt(now)))
        .order(candidates.field(assignments::account_sync_due_at).asc())
        .limit(limit)
        .select(candidates.field(assignments::user_id))
        .for_update()
        .skip_locked();
    diesel::update(assignments::table.filter(assignments::user_id.eq_any(due)))
        .set((
            assignments::account_sync_lease_until.eq((now.into_sql::<Timestamptz>() + lease_secs.seconds()).nullable()),
            assignments::account_sync_attempts.eq(assignments::account_sync_attempts + 1),
        ))
        .returning((
            assignments::user_id,
            assignments::cluster_id.assume_not_null(),
            assignments::hopsworks_user_id.assume_not_null(),
            assignments::max_num_projects,
            assignments::account_sync_version,
            assignments::account_sync_attempts,
        ))
        .load(conn)
        .await
}

/// Makes the account agree: reads it, and sets the status and `maxNumProjects` that differ.
///
/// # Errors
/// Why it could not.
pub async fn push(client: &Hopsworks, work: &AccountSync, person: AccountStatus) -> Result<(), String> {
    let id = work.hopsworks_user_id;
    let account = client.user(id).await.map_err(|e| e.0)?.ok_or_else(|| format!("Hopsworks has no user {id}"))?;
    let mut changes = serde_json::Map::new();
    let status = wanted_status(person);
    if account.status != status {
        changes.insert("status".into(), json!(status));
    }
    if account.max_num_projects != Some(i64::from(work.max_num_projects)) {
        changes.insert("maxNumProjects".into(), json!(work.max_num_projects));
    }
    if changes.is_empty() {
        return Ok(());
    }
    match client.update(id, "update the account", serde_json::Value::Object(changes)).await.map_err(|e| e.0)? {
        UpdateOutcome::Done => Ok(()),
        UpdateOutcome::Gone => Err(format!("Hopsworks has no user {id}")),
    }
}

/// The push of `work` ended: done (`Ok`) clears the mark unless a change came meanwhile;
/// failed keeps it due after `retry_in`, with the reason.
///
/// # Errors
/// When Postgres fails.
pub async fn finished(
    conn: &mut AsyncPgConnection,
    work: &AccountSync,
    outcome: Result<(), &str>,
    retry_in: Duration,
) -> Result<(), diesel::result::Error> {
    let row = assignments::table.find(work.user_id);
    match outcome {
        Ok(()) => {
            let same = diesel::update(row.filter(assignments::account_sync_version.eq(work.version)))
                .set((
                    assignments::account_sync_due_at.eq(None::<DateTime<Utc>>),
                    assignments::account_sync_lease_until.eq(None::<DateTime<Utc>>),
                    assignments::account_sync_attempts.eq(0),
                    assignments::account_sync_error.eq(None::<String>),
                ))
                .execute(conn)
                .await?;
            if same == 0 {
                diesel::update(row)
                    .set(assignments::account_sync_lease_until.eq(None::<DateTime<Utc>>))
                    .execute(conn)
                    .await?;
            }
        }
        Err(reason) => {
            let next = TimeDelta::from_std(retry_in)
                .ok()
                .and_then(|d| Utc::now().checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            let reason: String = reason.chars().take(1000).collect();
            diesel::update(row.filter(assignments::account_sync_version.eq(work.version)))
                .set((
                    assignments::account_sync_due_at.eq(Some(next)),
                    assignments::account_sync_error.eq(Some(reason)),
                ))
                .execute(conn)
                .await?;
            diesel::update(row)
                .set(assignments::account_sync_lease_until.eq(None::<DateTime<Utc>>))
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// The person's status as provisioning knows it (active when unknown).
///
/// # Errors
/// When Postgres fails.
pub async fn person_status(conn: &mut AsyncPgConnection, user: UserId) -> Result<AccountStatus, diesel::result::Error> {
    Ok(users::table.find(user).select(users::status).first(conn).await.optional()?.unwrap_or(AccountStatus::Active))
}

/// A complete assignment's account, as the drift view compares it.
#[derive(Debug, Clone)]
pub struct Account {
    /// The person.
    pub user_id: UserId,
    /// Their status in Hopsbridge.
    pub status: AccountStatus,
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The account's username.
    pub hopsworks_username: Option<String>,
    /// The account.
    pub hopsworks_user_id: i64,
    /// When the next push is due, if one is.
    pub sync_due_at: Option<DateTime<Utc>>,
    /// Why the last push failed.
    pub sync_error: Option<String>,
}

/// Every account of a complete assignment whose person is not deleted, by user.
///
/// # Errors
/// When Postgres fails.
pub async fn accounts(conn: &mut AsyncPgConnection) -> Result<Vec<Account>, diesel::result::Error> {
    type Row = (UserId, ClusterId, Option<String>, i64, Option<DateTime<Utc>>, Option<String>);
    let rows: Vec<Row> = assignments::table
        .filter(assignments::status.eq(AssignmentState::Complete))
        .filter(assignments::hopsworks_user_id.is_not_null())
        .order(assignments::user_id)
        .select((
            assignments::user_id,
            assignments::cluster_id.assume_not_null(),
            assignments::hopsworks_username,
            assignments::hopsworks_user_id.assume_not_null(),
            assignments::account_sync_due_at,
            assignments::account_sync_error,
        ))
        .load(conn)
        .await?;
    let ids: Vec<UserId> = rows.iter().map(|r| r.0).collect();
    let statuses: std::collections::HashMap<UserId, AccountStatus> = users::table
        .filter(users::user_id.eq_any(&ids))
        .select((users::user_id, users::status))
        .load::<(UserId, AccountStatus)>(conn)
        .await?
        .into_iter()
        .collect();
    Ok(rows
        .into_iter()
        .filter_map(|(user_id, cluster_id, hopsworks_username, hopsworks_user_id, sync_due_at, sync_error)| {
            let status = statuses.get(&user_id).copied().unwrap_or(AccountStatus::Active);
            (status != AccountStatus::Deleted).then_some(Account {
                user_id,
                status,
                cluster_id,
                hopsworks_username,
                hopsworks_user_id,
                sync_due_at,
                sync_error,
            })
        })
        .collect())
}

/// Records `owner`'s plan as billing announced it at `changed_at`, unless a later change is
/// kept already. Answers whether it was recorded.
///
/// # Errors
/// When Postgres fails.
pub async fn record_plan(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    plan: &str,
    max_active_projects: i32,
    changed_at: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    // A change of the same second as the kept one is applied (a repeat changes nothing).
    let n = diesel::sql_query(
        "INSERT INTO plans (owner_id, plan, max_active_projects, changed_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (owner_id) DO UPDATE SET plan = EXCLUDED.plan, \
         max_active_projects = EXCLUDED.max_active_projects, changed_at = EXCLUDED.changed_at \
         WHERE plans.changed_at <= EXCLUDED.changed_at",
    )
    .bind::<diesel::sql_types::Uuid, _>(owner.as_uuid())
    .bind::<diesel::sql_types::Text, _>(plan)
    .bind::<diesel::sql_types::Integer, _>(max_active_projects)
    .bind::<Timestamptz, _>(changed_at)
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// The active projects `owner`'s plan allows; `default` before billing announced a plan.
///
/// # Errors
/// When Postgres fails.
pub async fn allowance(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    default: i32,
) -> Result<i32, diesel::result::Error> {
    Ok(plans::table.find(owner).select(plans::max_active_projects).first(conn).await.optional()?.unwrap_or(default))
}

/// `maxNumProjects` for an account that created `created` projects, whose owner may have
/// `allowance` active projects and has `active` (their members' included): every project
/// created counts against it in Hopsworks, so it is what was created plus what the plan still
/// allows, never below what was created (so never below what runs).
#[must_use]
pub fn limit(created: i32, allowance: i32, active: i32) -> i32 {
    created.max(0).saturating_add(allowance.saturating_sub(active).max(0))
}

/// Sets `owner`'s account `maxNumProjects` on `cluster` from what the last successful sync
/// knows (`created`: Hopsworks' count of projects the account created; the owner's active
/// projects there from `projects`) and their plan, and marks the account due when it changed.
/// A member (current in a team) is left at 0; an owner not complete on `cluster` is left as is.
/// Answers the limit set, if any.
///
/// # Errors
/// When Postgres fails.
pub async fn settle_limit(
    conn: &mut AsyncPgConnection,
    owner: UserId,
    cluster: ClusterId,
    created: Option<i32>,
    default_allowance: i32,
) -> Result<Option<i32>, diesel::result::Error> {
    use crate::schema::team_members;
    let member = team_members::table
        .find(owner)
        .filter(team_members::state.eq(TeamState::Member))
        .count()
        .get_result::<i64>(conn)
        .await?;
    if member > 0 {
        return Ok(None);
    }
    let row: Option<(i32, Option<i32>)> = assignments::table
        .find(owner)
        .filter(assignments::status.eq(AssignmentState::Complete))
        .filter(assignments::cluster_id.eq(cluster))
        .select((assignments::max_num_projects, assignments::hopsworks_created_projects))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some((current, known_created)) = row else { return Ok(None) };
    let created = match created.or(known_created) {
        Some(n) => n,
        // Hopsworks did not say: every project the sync ever saw the account create.
        None => i32::try_from(
            projects::table
                .filter(projects::cluster_id.eq(cluster))
                .filter(projects::creator_id.eq(owner))
                .count()
                .get_result::<i64>(conn)
                .await?,
        )
        .unwrap_or(i32::MAX),
    };
    let active = i32::try_from(
        projects::table
            .filter(projects::cluster_id.eq(cluster))
            .filter(projects::owner_id.eq(owner.as_owner()))
            .filter(projects::gone_at.is_null())
            .count()
            .get_result::<i64>(conn)
            .await?,
    )
    .unwrap_or(i32::MAX);
    let allowance = allowance(conn, owner.as_owner(), default_allowance).await?;
    let wanted = limit(created, allowance, active);
    diesel::update(assignments::table.find(owner))
        .set((assignments::hopsworks_created_projects.eq(Some(created)), assignments::max_num_projects.eq(wanted)))
        .execute(conn)
        .await?;
    if wanted != current {
        mark_due(conn, owner).await?;
    }
    Ok(Some(wanted))
}

/// Sets `owner`'s limit again after their plan changed, from what the last successful sync of
/// their cluster knows (nothing before a first sync).
///
/// # Errors
/// When Postgres fails.
pub async fn plan_changed(
    conn: &mut AsyncPgConnection,
    owner: UserId,
    default_allowance: i32,
) -> Result<Option<i32>, diesel::result::Error> {
    let cluster: Option<Option<ClusterId>> = assignments::table
        .find(owner)
        .filter(assignments::status.eq(AssignmentState::Complete))
        .select(assignments::cluster_id)
        .first(conn)
        .await
        .optional()?;
    let Some(Some(cluster)) = cluster else { return Ok(None) };
    let synced: Option<Option<DateTime<Utc>>> =
        project_syncs::table.find(cluster).select(project_syncs::last_synced_at).first(conn).await.optional()?;
    if !matches!(synced, Some(Some(_))) {
        return Ok(None);
    }
    settle_limit(conn, owner, cluster, None, default_allowance).await
}

#[cfg(test)]
mod tests {
    use super::limit;

    #[test]
    fn the_limit_is_what_was_created_plus_what_the_plan_still_allows() {
        assert_eq!(limit(0, 1, 0), 1, "a new free owner may create one");
        assert_eq!(limit(3, 5, 2), 6, "three created, two active, five allowed: three more");
        assert_eq!(limit(4, 1, 3), 4, "over the plan: nothing more, never below what was created");
        assert_eq!(limit(7, 5, 0), 12);
    }
}
