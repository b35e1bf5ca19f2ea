//! Project sync (decision 0050): each cluster's Hopsworks projects with their creators, read on
//! a schedule (`projects.sync_interval_secs`) and on an admin's demand, kept in `projects` by
//! (cluster, project id) with the namespace, the creator and the owner whose plan the project
//! counts against (a member's project is their owner's).
//!
//! A sync holds the cluster's lease (`project_syncs`), reads Hopsworks outside any transaction,
//! then writes everything in one transaction: the projects seen (and those gone), a
//! `ProjectsCountedV1` per owner whose active projects (count or names) changed, and each
//! owner's `maxNumProjects` ([`lifecycle::settle_limit`]). A failed read changes nothing but the
//! cluster's `last_sync_error`: no project is taken for gone because Hopsworks did not answer.

use crate::clusters;
use crate::config::{HopsworksConfig, ProjectsConfig};
use crate::crypto::Vault;
use crate::hopsworks::{Hopsworks, HopsworksProject, HopsworksUser, PROJECT_PAGE};
use crate::lifecycle;
use crate::schema::{assignments, clusters as cluster_table, project_counts, project_syncs, projects, team_members};
use crate::states::TeamState;
use chrono::{DateTime, Utc};
use diesel::dsl::IntervalDsl as _;
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::ProjectsCountedV1;
use hopsbridge_domain::{ClusterId, ClusterStatus, OwnerId, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::events::enqueue_at;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a successful sync found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Synced {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// When.
    pub synced_at: DateTime<Utc>,
    /// Projects Hopsworks listed.
    pub projects: usize,
    /// Projects seen before that are gone now.
    pub gone: usize,
    /// Owners whose active projects changed (a `ProjectsCountedV1` each).
    pub owners_counted: usize,
}

/// Why a sync did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    /// Another replica holds the cluster's lease.
    #[error("the cluster's projects are being synced")]
    Busy,
    /// No such cluster.
    #[error("no such cluster")]
    NoCluster,
    /// Hopsworks could not be read (recorded as the cluster's `last_sync_error`).
    #[error("{0}")]
    Hopsworks(String),
    /// Postgres failed.
    #[error("database: {0}")]
    Db(String),
}

fn db(e: impl std::fmt::Display) -> SyncError {
    SyncError::Db(e.to_string())
}

/// Syncs clusters' projects.
#[derive(Debug, Clone)]
pub struct ProjectSync {
    db: Database,
    vault: Vault,
    hopsworks: HopsworksConfig,
    cfg: ProjectsConfig,
    clock: Clock,
    allow_private_addresses: bool,
    /// Wakes the background task when a limit changed.
    wake: Arc<Notify>,
}

type Tx<T> = Result<T, DbError>;

impl ProjectSync {
    /// Syncs over `db` on calendar time `clock`, waking `wake` when accounts are due a push.
    #[must_use]
    pub fn new(
        (db, clock): (Database, Clock),
        vault: Vault,
        (hopsworks, cfg): (HopsworksConfig, ProjectsConfig),
        allow_private_addresses: bool,
        wake: Arc<Notify>,
    ) -> Self {
        Self { db, vault, hopsworks, cfg, clock, allow_private_addresses, wake }
    }

    /// Runs until `cancel` fires: every interval (at most a minute), each cluster (not
    /// inactive) whose sync is due.
    pub async fn run(self, cancel: CancellationToken) {
        let tick = Duration::from_secs(self.cfg.sync_interval_secs.clamp(1, 60));
        loop {
            if let Err(e) = self.due().await {
                tracing::warn!(error = %e, "project sync pass failed");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Syncs every cluster whose sync is due.
    async fn due(&self) -> Result<(), SyncError> {
        let ids: Vec<ClusterId> = {
            let mut conn = self.db.conn().await.map_err(db)?;
            // A cluster's first sync comes one interval after its registration (or an admin's
            // sync); later ones one interval after the last.
            let interval = i64::try_from(self.cfg.sync_interval_secs).unwrap_or(i64::MAX);
            let not_due = project_syncs::table
                .filter(project_syncs::next_sync_at.gt(diesel::dsl::now))
                .select(project_syncs::cluster_id);
            cluster_table::table
                .filter(cluster_table::status.ne(ClusterStatus::Inactive))
                .filter(cluster_table::created_at.le(diesel::dsl::now.into_sql::<Timestamptz>() - interval.seconds()))
                .filter(cluster_table::id.ne_all(not_due))
                .order(cluster_table::id)
                .select(cluster_table::id)
                .load(&mut conn)
                .await
                .map_err(db)?
        };
        for id in ids {
            match self.sync(id).await {
                Ok(s) => {
                    tracing::info!(cluster_id = %id, projects = s.projects, owners = s.owners_counted, "projects synced")
                }
                Err(SyncError::Busy) => {}
                Err(e) => tracing::warn!(cluster_id = %id, error = %e, "project sync failed"),
            }
        }
        Ok(())
    }

    /// Syncs the cluster `id` now.
    ///
    /// # Errors
    /// [`SyncError`].
    pub async fn sync(&self, id: ClusterId) -> Result<Synced, SyncError> {
        let lease = i64::try_from(self.cfg.sync_lease_secs).unwrap_or(i64::MAX);
        let taken = self
            .db
            .transaction(|c| Box::pin(async move { Tx::Ok(take_lease(c, id, lease).await?) }))
            .await
            .map_err(db)?;
        if !taken {
            return Err(SyncError::Busy);
        }
        let read = self.read(id).await;
        let interval = i64::try_from(self.cfg.sync_interval_secs).unwrap_or(i64::MAX);
        let (projects, users) = match read {
            Ok(read) => read,
            Err(reason) => {
                let r = reason.clone();
                self.db
                    .transaction(|c| {
                        let r = r.clone();
                        Box::pin(async move { Tx::Ok(failed(c, id, &r, interval).await?) })
                    })
                    .await
                    .map_err(db)?;
                return Err(SyncError::Hopsworks(reason));
            }
        };
        let now = self.clock.now();
        let default = self.cfg.default_active_projects;
        let synced = self
            .db
            .transaction(|c| {
                let (projects, users) = (projects.clone(), users.clone());
                Box::pin(async move { Tx::Ok(write(c, id, (&projects, &users), (now, interval), default).await?) })
            })
            .await
            .map_err(db)?;
        self.wake.notify_one();
        Ok(synced)
    }

    /// The cluster's projects and users, read from its Hopsworks.
    async fn read(&self, id: ClusterId) -> Result<(Vec<HopsworksProject>, Vec<HopsworksUser>), String> {
        let row = {
            let mut conn = self.db.conn().await.map_err(|e| format!("database: {e}"))?;
            clusters::row(&mut conn, id).await.map_err(|e| format!("the cluster: {e}"))?
        };
        let access = row.access(&self.vault).map_err(|e| format!("cluster {}: API key: {e}", row.name))?;
        let client = Hopsworks::new(&access, &self.hopsworks, self.allow_private_addresses).map_err(|e| e.0)?;
        let projects = client.projects(PROJECT_PAGE).await.map_err(|e| e.0)?;
        let users = client.users().await.map_err(|e| e.0)?;
        Ok((projects, users))
    }

    /// Whether the cluster `id` exists.
    ///
    /// # Errors
    /// [`SyncError::NoCluster`], [`SyncError::Db`].
    pub async fn exists(&self, id: ClusterId) -> Result<(), SyncError> {
        let mut conn = self.db.conn().await.map_err(db)?;
        let n: i64 = cluster_table::table.find(id).count().get_result(&mut conn).await.map_err(db)?;
        if n == 0 { Err(SyncError::NoCluster) } else { Ok(()) }
    }
}

/// Takes the cluster's sync lease for `lease_secs`; false when another holds it.
async fn take_lease(
    conn: &mut AsyncPgConnection,
    id: ClusterId,
    lease_secs: i64,
) -> Result<bool, diesel::result::Error> {
    diesel::insert_into(project_syncs::table)
        .values(project_syncs::cluster_id.eq(id))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    let now = diesel::dsl::now;
    let lease = project_syncs::lease_until;
    let n = diesel::update(project_syncs::table.find(id).filter(lease.is_null().or(lease.lt(now))))
        .set((
            lease.eq((now.into_sql::<Timestamptz>() + lease_secs.seconds()).nullable()),
            project_syncs::last_attempt_at.eq(now.into_sql::<Timestamptz>().nullable()),
        ))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Records a failed read: nothing else changes; the next sync is due after the interval.
async fn failed(
    conn: &mut AsyncPgConnection,
    id: ClusterId,
    reason: &str,
    interval_secs: i64,
) -> Result<(), diesel::result::Error> {
    let reason: String = reason.chars().take(1000).collect();
    diesel::update(project_syncs::table.find(id))
        .set((
            project_syncs::lease_until.eq(None::<DateTime<Utc>>),
            project_syncs::last_sync_error.eq(Some(reason)),
            project_syncs::next_sync_at.eq(diesel::dsl::now.into_sql::<Timestamptz>() + interval_secs.seconds()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes a successful read of cluster `id` at `now`.
async fn write(
    conn: &mut AsyncPgConnection,
    id: ClusterId,
    (listed, users): (&[HopsworksProject], &[HopsworksUser]),
    (now, interval_secs): (DateTime<Utc>, i64),
    default_allowance: i32,
) -> Result<Synced, diesel::result::Error> {
    // Whose account on this cluster each username is, and whose team each person is in.
    let accounts: Vec<(UserId, String, Option<i64>)> = assignments::table
        .filter(assignments::cluster_id.eq(id))
        .filter(assignments::hopsworks_username.is_not_null())
        .select((
            assignments::user_id,
            assignments::hopsworks_username.assume_not_null(),
            assignments::hopsworks_user_id,
        ))
        .load(conn)
        .await?;
    let by_username: HashMap<&str, UserId> = accounts.iter().map(|(u, name, _)| (name.as_str(), *u)).collect();
    let people: Vec<UserId> = accounts.iter().map(|(u, _, _)| *u).collect();
    let teams: HashMap<UserId, OwnerId> = team_members::table
        .filter(team_members::member_id.eq_any(&people))
        .filter(team_members::state.eq(TeamState::Member))
        .select((team_members::member_id, team_members::owner_id))
        .load::<(UserId, OwnerId)>(conn)
        .await?
        .into_iter()
        .collect();
    for p in listed {
        let username = p.creator.as_ref().and_then(|c| c.username.clone());
        let creator = username.as_deref().and_then(|u| by_username.get(u).copied());
        let owner = creator.map(|c| teams.get(&c).copied().unwrap_or(c.as_owner()));
        diesel::insert_into(projects::table)
            .values((
                projects::cluster_id.eq(id),
                projects::project_id.eq(p.id),
                projects::namespace.eq(&p.namespace),
                projects::name.eq(&p.name),
                projects::creator_username.eq(&username),
                projects::creator_id.eq(creator),
                projects::owner_id.eq(owner),
                projects::first_seen_at.eq(now),
                projects::last_seen_at.eq(now),
            ))
            .on_conflict((projects::cluster_id, projects::project_id))
            .do_update()
            .set((
                projects::namespace.eq(&p.namespace),
                projects::name.eq(&p.name),
                projects::creator_username.eq(&username),
                projects::creator_id.eq(creator),
                projects::owner_id.eq(owner),
                projects::last_seen_at.eq(now),
                projects::gone_at.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await?;
    }
    let seen: Vec<i64> = listed.iter().map(|p| p.id).collect();
    let gone = diesel::update(
        projects::table
            .filter(projects::cluster_id.eq(id))
            .filter(projects::gone_at.is_null())
            .filter(projects::project_id.ne_all(&seen)),
    )
    .set(projects::gone_at.eq(Some(now)))
    .execute(conn)
    .await?;

    // Each owner's active projects here, and what was last announced.
    let active: Vec<(OwnerId, String)> = projects::table
        .filter(projects::cluster_id.eq(id))
        .filter(projects::gone_at.is_null())
        .filter(projects::owner_id.is_not_null())
        .select((projects::owner_id.assume_not_null(), projects::name))
        .load(conn)
        .await?;
    let mut now_counted: BTreeMap<OwnerId, BTreeSet<String>> = BTreeMap::new();
    for (owner, name) in active {
        now_counted.entry(owner).or_default().insert(name);
    }
    let announced: Vec<(OwnerId, Vec<Option<String>>)> = project_counts::table
        .filter(project_counts::cluster_id.eq(id))
        .select((project_counts::owner_id, project_counts::project_names))
        .load(conn)
        .await?;
    let announced: HashMap<OwnerId, BTreeSet<String>> =
        announced.into_iter().map(|(o, names)| (o, names.into_iter().flatten().collect())).collect();
    let owners: BTreeSet<OwnerId> = now_counted.keys().chain(announced.keys()).copied().collect();
    let mut owners_counted = 0;
    for owner in &owners {
        let names = now_counted.get(owner).cloned().unwrap_or_default();
        if announced.get(owner) == Some(&names) {
            continue;
        }
        let names: Vec<String> = names.into_iter().collect();
        let count = i32::try_from(names.len()).unwrap_or(i32::MAX);
        diesel::insert_into(project_counts::table)
            .values((
                project_counts::owner_id.eq(owner),
                project_counts::cluster_id.eq(id),
                project_counts::active_projects.eq(count),
                project_counts::project_names.eq(&names),
                project_counts::synced_at.eq(now),
            ))
            .on_conflict((project_counts::owner_id, project_counts::cluster_id))
            .do_update()
            .set((
                project_counts::active_projects.eq(count),
                project_counts::project_names.eq(&names),
                project_counts::synced_at.eq(now),
            ))
            .execute(conn)
            .await?;
        let event = ProjectsCountedV1 {
            user_id: owner.to_string(),
            cluster_id: id.to_string(),
            active_projects: count,
            project_names: names,
            synced_at_unix_seconds: now.timestamp(),
        };
        enqueue_at(conn, &event, None, now).await.map_err(to_diesel)?;
        owners_counted += 1;
    }

    // Each account's limit, from what Hopsworks says it created.
    let created: HashMap<i64, i32> =
        users.iter().filter_map(|u| Some((u.id, i32::try_from(u.num_created_projects?).ok()?))).collect();
    for (user, _, hopsworks_id) in &accounts {
        let made = hopsworks_id.and_then(|h| created.get(&h).copied());
        lifecycle::settle_limit(conn, *user, id, made, default_allowance).await?;
    }

    diesel::update(project_syncs::table.find(id))
        .set((
            project_syncs::lease_until.eq(None::<DateTime<Utc>>),
            project_syncs::last_synced_at.eq(Some(now)),
            project_syncs::last_sync_error.eq(None::<String>),
            project_syncs::next_sync_at.eq(diesel::dsl::now.into_sql::<Timestamptz>() + interval_secs.seconds()),
        ))
        .execute(conn)
        .await?;
    Ok(Synced { cluster_id: id, synced_at: now, projects: listed.len(), gone, owners_counted })
}

fn to_diesel(e: DbError) -> diesel::result::Error {
    match e {
        DbError::Other(d) => d,
        other => diesel::result::Error::QueryBuilderError(other.to_string().into()),
    }
}
