//! Each cluster's health: the checks a registration passes ([`crate::cluster_checks`]), run
//! again on a schedule (`clusters.health_interval_secs`), the last result kept in
//! `cluster_health` and shown with the cluster in the admin API.
//!
//! A check holds the cluster's lease (`lease_until`), so replicas do not check one cluster at
//! once; the network calls are made outside any transaction. A failing cluster is logged at
//! each check (without secrets) and keeps being measured and used: health informs the
//! operator, it changes nothing else.

use crate::cluster_checks::{Checker, Report, Target};
use crate::clusters::{ClusterRow, ClusterView};
use crate::crypto::Vault;
use crate::kube_checks::Check;
use crate::schema::cluster_health;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Double, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::ClusterId;
use hopsbridge_platform::db::Database;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A cluster's last health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Whether every check passed.
    pub ok: bool,
    /// When the check ended.
    pub checked_at: DateTime<Utc>,
    /// Each check, with what to fix when it failed.
    pub checks: Vec<Check>,
}

/// A `cluster_health` row as read: cluster, when checked, whether all passed, the checks.
type HealthRow = (ClusterId, Option<DateTime<Utc>>, Option<bool>, serde_json::Value);

/// Records `report` as cluster `id`'s last check, ended now, and frees its lease.
///
/// # Errors
/// When Postgres fails.
pub async fn record(conn: &mut AsyncPgConnection, id: ClusterId, report: &Report) -> Result<(), diesel::result::Error> {
    let checks =
        serde_json::to_value(&report.checks).map_err(|e| diesel::result::Error::SerializationError(e.into()))?;
    let now = diesel::dsl::now.into_sql::<diesel::sql_types::Timestamptz>().nullable();
    diesel::insert_into(cluster_health::table)
        .values((
            cluster_health::cluster_id.eq(id),
            cluster_health::checked_at.eq(now),
            cluster_health::ok.eq(Some(report.ok)),
            cluster_health::checks.eq(&checks),
        ))
        .on_conflict(cluster_health::cluster_id)
        .do_update()
        .set((
            cluster_health::checked_at.eq(now),
            cluster_health::ok.eq(Some(report.ok)),
            cluster_health::checks.eq(&checks),
            cluster_health::lease_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The last check of each of `ids` that has one.
///
/// # Errors
/// When Postgres fails.
pub async fn of(
    conn: &mut AsyncPgConnection,
    ids: &[ClusterId],
) -> Result<HashMap<ClusterId, Health>, diesel::result::Error> {
    let rows: Vec<HealthRow> = cluster_health::table
        .filter(cluster_health::cluster_id.eq_any(ids))
        .select((cluster_health::cluster_id, cluster_health::checked_at, cluster_health::ok, cluster_health::checks))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, checked_at, ok, checks)| {
            let checks: Vec<Check> = serde_json::from_value(checks).ok()?;
            Some((id, Health { ok: ok?, checked_at: checked_at?, checks }))
        })
        .collect())
}

/// A cluster as admins see it, with its last health check (null until one ended).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterWithHealth {
    /// The cluster.
    #[serde(flatten)]
    pub cluster: ClusterView,
    /// Its last health check: the checks a registration passes, run again every
    /// `clusters.health_interval_secs`.
    pub health: Option<Health>,
}

/// `views` with their last health checks.
///
/// # Errors
/// When Postgres fails.
pub async fn with_health(
    conn: &mut AsyncPgConnection,
    views: Vec<ClusterView>,
) -> Result<Vec<ClusterWithHealth>, diesel::result::Error> {
    let ids: Vec<ClusterId> = views.iter().map(|v| v.id).collect();
    let mut health = of(conn, &ids).await?;
    Ok(views.into_iter().map(|cluster| ClusterWithHealth { health: health.remove(&cluster.id), cluster }).collect())
}

#[derive(QueryableByName)]
struct Due {
    #[diesel(sql_type = SqlUuid)]
    cluster_id: uuid::Uuid,
}

/// Checks clusters' health on a schedule.
#[derive(Debug, Clone)]
pub struct HealthChecks {
    db: Database,
    vault: Vault,
    checker: Checker,
    interval: Duration,
    lease: Duration,
}

impl HealthChecks {
    /// Checks every cluster over `db` each `interval`, holding a cluster `lease` at most.
    #[must_use]
    pub const fn new(db: Database, vault: Vault, checker: Checker, interval: Duration, lease: Duration) -> Self {
        Self { db, vault, checker, interval, lease }
    }

    /// Runs until `cancel` fires: every tick (the interval, at most a minute), each cluster
    /// whose last check is older than the interval, or that has none.
    pub async fn run(self, cancel: CancellationToken) {
        let tick = self.interval.clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            if let Err(e) = self.due().await {
                tracing::warn!(error = %e, "cluster health pass failed");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Checks every cluster that is due and not leased by another replica.
    async fn due(&self) -> Result<(), diesel::result::Error> {
        let interval = self.interval.as_secs_f64();
        let due: Vec<Due> = {
            let mut conn = self.db.conn().await.map_err(to_diesel)?;
            diesel::sql_query(
                "SELECT c.id AS cluster_id FROM clusters c LEFT JOIN cluster_health h ON h.cluster_id = c.id \
                 WHERE (h.checked_at IS NULL OR h.checked_at <= now() - make_interval(secs => $1)) \
                 AND (h.lease_until IS NULL OR h.lease_until < now()) ORDER BY c.id",
            )
            .bind::<Double, _>(interval)
            .load(&mut conn)
            .await?
        };
        for Due { cluster_id } in due {
            let id = ClusterId::from_uuid(cluster_id);
            match self.check(id).await {
                Ok(Some(report)) if report.ok => tracing::info!(cluster_id = %id, "cluster healthy"),
                Ok(Some(report)) => {
                    let failed: Vec<String> =
                        report.checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect();
                    tracing::warn!(cluster_id = %id, failed = ?failed, "cluster failed its health check");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(cluster_id = %id, error = %e, "cluster health check failed to run"),
            }
        }
        Ok(())
    }

    /// Checks cluster `id` now, when no other replica is: `None` when another holds its lease
    /// or its last check is not due, or the cluster is gone.
    ///
    /// # Errors
    /// When Postgres fails or a secret does not open.
    pub async fn check(&self, id: ClusterId) -> Result<Option<Report>, anyhow::Error> {
        let row: Option<ClusterRow> = {
            let mut conn = self.db.conn().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let taken: Vec<Due> = diesel::sql_query(
                "INSERT INTO cluster_health (cluster_id, lease_until) \
                 SELECT id, now() + make_interval(secs => $2) FROM clusters WHERE id = $1 \
                 ON CONFLICT (cluster_id) DO UPDATE SET lease_until = excluded.lease_until \
                 WHERE (cluster_health.lease_until IS NULL OR cluster_health.lease_until < now()) \
                 AND (cluster_health.checked_at IS NULL OR cluster_health.checked_at <= now() - make_interval(secs => $3)) \
                 RETURNING cluster_id",
            )
            .bind::<SqlUuid, _>(id.as_uuid())
            .bind::<Double, _>(self.lease.as_secs_f64())
            .bind::<Double, _>(self.interval.as_secs_f64())
            .load(&mut conn)
            .await?;
            if taken.is_empty() {
                return Ok(None);
            }
            crate::clusters::row(&mut conn, id).await.ok()
        };
        let Some(row) = row else { return Ok(None) };
        let report = self.checker.run(&Target::of_row(&row, &self.vault)?).await;
        let mut conn = self.db.conn().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        record(&mut conn, id, &report).await?;
        Ok(Some(report))
    }
}

fn to_diesel(e: hopsbridge_platform::db::DbError) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(e.to_string().into())
}
