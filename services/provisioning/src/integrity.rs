//! provisioning's integrity checks (decision 0061), and the comparison of Hopsworks account
//! statuses with ours that both the check and the admin drift view read.
//!
//! - `cluster_occupancy`: seats (decision 0016: assignments in `provisioning` or `complete`)
//!   against each cluster's capacity and status. A cluster whose owners' seats exceed its
//!   capacity (`over_capacity:<cluster>`; team members are placed whatever the capacity, so
//!   their seats count in occupancy but not against it), a person seated on a retired
//!   (`inactive`) cluster (`retired_cluster:<user>`), and a seat held by a deleted person
//!   (`deleted_person:<user>`).
//! - `hopsworks_status`: each complete assignment's Hopsworks account against the person's
//!   status here ([`status_drift`], also `GET /api/admin/assignments/status-drift`): blocked
//!   while suspended, activated otherwise, and present (`status:<user>`). An account whose push
//!   is due and has not failed yet is on its way and not a finding. Each cluster is read on its
//!   own (decision 0072): one whose Hopsworks cannot be read is a finding of its own
//!   (`hopsworks_unreachable:<cluster>`, with the error) and its accounts' open findings are
//!   answered again as they were, so none is resolved on no evidence, while the other clusters'
//!   accounts are compared.

use crate::clusters::{self, ClusterRow};
use crate::config::HopsworksConfig;
use crate::crypto::Vault;
use crate::hopsworks::{Hopsworks, STATUS_ACTIVATED, STATUS_BLOCKED, STATUS_DEACTIVATED};
use crate::lifecycle;
use crate::schema::{assignments, clusters as clusters_table, team_members, users};
use crate::seats;
use crate::states::TeamState;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use hopsbridge_domain::{AccountStatus, AssignmentState, ClusterId, ClusterStatus, UserId};
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::integrity::{Check, Finding};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The occupancy check's name.
pub const CLUSTER_OCCUPANCY: &str = "cluster_occupancy";
/// The Hopsworks status check's name.
pub const HOPSWORKS_STATUS: &str = "hopsworks_status";

/// How the clusters' Hopsworks are reached.
#[derive(Clone, Debug)]
pub struct HopsworksAccess {
    /// The keys cluster secrets are sealed with.
    pub vault: Vault,
    /// Timeouts and retries of Hopsworks calls.
    pub config: HopsworksConfig,
    /// Clusters may be on private addresses (development only).
    pub allow_private_addresses: bool,
}

/// `cluster_occupancy`, registered with the service's integrity checks.
#[derive(Clone, Copy, Debug)]
pub struct ClusterOccupancy;

impl Check for ClusterOccupancy {
    fn name(&self) -> &str {
        CLUSTER_OCCUPANCY
    }

    fn run<'a>(&'a self, db: &'a Database) -> BoxFuture<'a, anyhow::Result<Vec<Finding>>> {
        Box::pin(async move {
            let mut conn = db.conn().await?;
            Ok(cluster_occupancy(&mut conn).await?)
        })
    }
}

/// `hopsworks_status`, registered with the service's integrity checks.
#[derive(Clone, Debug)]
pub struct HopsworksStatus(pub HopsworksAccess);

impl Check for HopsworksStatus {
    fn name(&self) -> &str {
        HOPSWORKS_STATUS
    }

    fn run<'a>(&'a self, db: &'a Database) -> BoxFuture<'a, anyhow::Result<Vec<Finding>>> {
        Box::pin(hopsworks_status(db, &self.0))
    }
}

/// Runs `cluster_occupancy`: the findings as they are now.
///
/// # Errors
/// When Postgres fails.
pub async fn cluster_occupancy(conn: &mut AsyncPgConnection) -> Result<Vec<Finding>, diesel::result::Error> {
    let rows: Vec<(ClusterId, String, i32, ClusterStatus)> = clusters_table::table
        .order(clusters_table::id)
        .select((clusters_table::id, clusters_table::name, clusters_table::capacity, clusters_table::status))
        .load(conn)
        .await?;
    let seated: Vec<(UserId, ClusterId)> = assignments::table
        .filter(assignments::status.eq_any([AssignmentState::Provisioning, AssignmentState::Complete]))
        .order(assignments::user_id)
        .select((assignments::user_id, assignments::cluster_id.assume_not_null()))
        .load(conn)
        .await?;
    let ids: Vec<UserId> = seated.iter().map(|(u, _)| *u).collect();
    let members: HashSet<UserId> = team_members::table
        .filter(team_members::member_id.eq_any(&ids))
        .filter(team_members::state.eq_any([TeamState::Member, TeamState::Leaving]))
        .select(team_members::member_id)
        .load::<UserId>(conn)
        .await?
        .into_iter()
        .collect();
    let deleted: HashSet<UserId> = users::table
        .filter(users::user_id.eq_any(&ids))
        .filter(users::status.eq(AccountStatus::Deleted))
        .select(users::user_id)
        .load::<UserId>(conn)
        .await?
        .into_iter()
        .collect();
    // The count placements use, so the check and placement agree on what a seat is.
    let taken = seats::occupancy(conn, None).await?;
    let mut owners: HashMap<ClusterId, i64> = HashMap::new();
    for (user, cluster) in &seated {
        if !members.contains(user) {
            *owners.entry(*cluster).or_default() += 1;
        }
    }
    let clusters: BTreeMap<ClusterId, (String, i32, ClusterStatus)> =
        rows.into_iter().map(|(id, name, capacity, status)| (id, (name, capacity, status))).collect();
    let mut found = Vec::new();
    for (id, (name, capacity, _)) in &clusters {
        let held = owners.get(id).copied().unwrap_or(0);
        if held > i64::from(*capacity) {
            let all = taken.get(id).copied().unwrap_or(0);
            found.push(Finding {
                key: format!("over_capacity:{id}"),
                subject: format!("cluster {name} ({id})"),
                detail: format!(
                    "cluster {name} seats {held} owners ({all} seats with team members) for a capacity of {capacity}: \
                     raise its capacity to at least {held} (PATCH /api/admin/clusters/{id}) or move {} of them to \
                     another cluster (PUT /api/admin/assignments/{{user_id}})",
                    held - i64::from(*capacity)
                ),
            });
        }
    }
    for (user, cluster) in seated {
        let (name, status) =
            clusters.get(&cluster).map_or(("unknown", None), |(name, _, status)| (name.as_str(), Some(*status)));
        if deleted.contains(&user) {
            found.push(Finding {
                key: format!("deleted_person:{user}"),
                subject: format!("person {user}"),
                detail: format!(
                    "person {user} is deleted but still holds a seat on cluster {name} ({cluster}): unassign them \
                     (DELETE /api/admin/assignments/{user}), which frees the seat and deactivates their account"
                ),
            });
        } else if status == Some(ClusterStatus::Inactive) {
            found.push(Finding {
                key: format!("retired_cluster:{user}"),
                subject: format!("person {user}"),
                detail: format!(
                    "person {user} holds a seat on cluster {name} ({cluster}), which is retired (inactive): move \
                     them to an active cluster (PUT /api/admin/assignments/{user}) or unassign them"
                ),
            });
        }
    }
    Ok(found)
}

/// An account whose Hopsworks status disagrees with ours.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusDrift {
    user_id: UserId,
    cluster_id: ClusterId,
    hopsworks_username: Option<String>,
    hopsworks_user_id: i64,
    /// The person's status in Hopsbridge: `active` or `suspended`.
    status: String,
    /// The Hopsworks status that follows from it: 2 activated, 4 blocked.
    wanted_hopsworks_status: i64,
    /// What Hopsworks answered; null when it has no such user.
    hopsworks_status: Option<i64>,
    /// When the background task tries again to set it, and why the last try failed.
    sync_due_at: Option<chrono::DateTime<chrono::Utc>>,
    sync_error: Option<String>,
}

/// A cluster whose users could not be read.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnreadCluster {
    cluster_id: ClusterId,
    error: String,
}

/// The accounts whose Hopsworks status disagrees with ours.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusDriftReport {
    items: Vec<StatusDrift>,
    /// Accounts compared.
    checked: usize,
    /// Clusters whose Hopsworks did not answer: their accounts are not compared.
    unread: Vec<UnreadCluster>,
}

/// Reads every cluster's users from its Hopsworks and lists each account (of a complete
/// assignment, its person not deleted) whose status is not the one ours gives.
///
/// # Errors
/// When Postgres fails; a cluster that cannot be read is reported in `unread`.
pub async fn status_drift(db: &Database, access: &HopsworksAccess) -> Result<StatusDriftReport, DbError> {
    let (accounts, rows) = {
        let mut conn = db.conn().await?;
        let accounts = lifecycle::accounts(&mut conn).await?;
        let ids: Vec<ClusterId> = accounts.iter().map(|a| a.cluster_id).collect();
        let rows = clusters::rows(&mut conn, &ids).await?;
        (accounts, rows)
    };
    let mut read: HashMap<ClusterId, HashMap<i64, i64>> = HashMap::new();
    let mut unread = Vec::new();
    let mut ids: Vec<ClusterId> = rows.keys().copied().collect();
    ids.sort();
    for id in ids {
        match users_of(&rows[&id], access).await {
            Ok(users) => {
                read.insert(id, users);
            }
            Err(error) => unread.push(UnreadCluster { cluster_id: id, error }),
        }
    }
    let mut checked = 0;
    let mut items = Vec::new();
    for a in accounts {
        let Some(users) = read.get(&a.cluster_id) else { continue };
        checked += 1;
        let wanted = lifecycle::wanted_status(a.status);
        let actual = users.get(&a.hopsworks_user_id).copied();
        if actual != Some(wanted) {
            items.push(StatusDrift {
                user_id: a.user_id,
                cluster_id: a.cluster_id,
                hopsworks_username: a.hopsworks_username,
                hopsworks_user_id: a.hopsworks_user_id,
                status: a.status.to_string(),
                wanted_hopsworks_status: wanted,
                hopsworks_status: actual,
                sync_due_at: a.sync_due_at,
                sync_error: a.sync_error,
            });
        }
    }
    Ok(StatusDriftReport { items, checked, unread })
}

/// Each user's status on `cluster`'s Hopsworks, by account id.
async fn users_of(cluster: &ClusterRow, access: &HopsworksAccess) -> Result<HashMap<i64, i64>, String> {
    let opened = cluster.access(&access.vault).map_err(|e| format!("API key: {e}"))?;
    let client = Hopsworks::new(&opened, &access.config, access.allow_private_addresses).map_err(|e| e.0)?;
    let users = client.users().await.map_err(|e| e.0)?;
    Ok(users.into_iter().map(|u| (u.id, u.status)).collect())
}

/// Runs `hopsworks_status`: the findings as they are now.
///
/// # Errors
/// When Postgres fails.
pub async fn hopsworks_status(db: &Database, access: &HopsworksAccess) -> anyhow::Result<Vec<Finding>> {
    let report = status_drift(db, access).await?;
    let mut findings: Vec<Finding> = report.items.iter().filter_map(drift_finding).collect();
    if report.unread.is_empty() {
        return Ok(findings);
    }
    // The accounts of the clusters not read: their open findings stay as they are.
    let unread: HashSet<ClusterId> = report.unread.iter().map(|u| u.cluster_id).collect();
    let unseen: HashSet<String> = {
        let mut conn = db.conn().await?;
        lifecycle::accounts(&mut conn)
            .await?
            .into_iter()
            .filter(|a| unread.contains(&a.cluster_id))
            .map(|a| format!("status:{}", a.user_id))
            .collect()
    };
    findings.extend(
        hopsbridge_platform::integrity::open_findings(db, HOPSWORKS_STATUS)
            .await?
            .into_iter()
            .filter(|f| unseen.contains(&f.key)),
    );
    findings.extend(report.unread.iter().map(|u| Finding {
        key: format!("hopsworks_unreachable:{}", u.cluster_id),
        subject: format!("cluster {}", u.cluster_id),
        detail: format!(
            "cluster {}'s Hopsworks could not be read ({}), so its accounts were not compared and their findings \
             stay as they were: check the cluster's health (GET /api/admin/clusters/{}), its address and API key",
            u.cluster_id, u.error, u.cluster_id
        ),
    }));
    Ok(findings)
}

/// The finding of one disagreement, unless the background task is about to settle it.
fn drift_finding(d: &StatusDrift) -> Option<Finding> {
    let pushing = d.sync_due_at.is_some() && d.sync_error.is_none();
    if pushing && d.hopsworks_status.is_some() {
        return None;
    }
    let user = d.user_id;
    let account = d.hopsworks_username.as_deref().map_or_else(
        || format!("account {}", d.hopsworks_user_id),
        |name| format!("account {name} ({})", d.hopsworks_user_id),
    );
    let wanted = describe(d.wanted_hopsworks_status);
    let detail = match d.hopsworks_status {
        None => format!(
            "person {user} ({}) is assigned to cluster {} with Hopsworks {account}, which that cluster's Hopsworks \
             does not have: look for an account with the person's email there; if there is none, unassign \
             them and place them again (DELETE, then PUT /api/admin/assignments/{user}) so that one is made",
            d.status, d.cluster_id
        ),
        Some(actual) => {
            let fix = match &d.sync_error {
                Some(error) => format!("the background task's pushes fail ({error}): fix that, and it sets it"),
                None => format!(
                    "nothing is pushing it: set the account's status to {} in Hopsworks, or let the person's next \
                     sign-in repair it",
                    d.wanted_hopsworks_status
                ),
            };
            format!(
                "person {user} is {} here, but their Hopsworks {account} on cluster {} is {} where it should be \
                 {wanted}; {fix}",
                d.status,
                d.cluster_id,
                describe(actual)
            )
        }
    };
    Some(Finding { key: format!("status:{user}"), subject: format!("person {user}"), detail })
}

/// A Hopsworks account status in words.
fn describe(status: i64) -> String {
    match status {
        STATUS_ACTIVATED => "activated (2)".to_owned(),
        STATUS_DEACTIVATED => "deactivated (3)".to_owned(),
        STATUS_BLOCKED => "blocked (4)".to_owned(),
        other => format!("status {other}"),
    }
}
