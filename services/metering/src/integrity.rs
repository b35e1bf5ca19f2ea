//! metering's integrity checks (decision 0060): usage in namespaces no project knows, and
//! clusters whose windows keep becoming gaps.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::config::ConfigError;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::integrity::{BoxFuture, Check, Finding, IntegrityChecks, RegisterError};
use serde::Deserialize;

/// Settings of metering's checks (`[integrity_checks]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksConfig {
    /// `namespaces_without_project`: how far back usage is looked at, in seconds.
    pub usage_lookback_secs: u32,
    /// `windows_gapped_repeatedly`: a cluster with at least this many gaps ...
    pub gapped_windows: u32,
    /// ... among its last this many ended windows is a finding.
    pub of_last_windows: u32,
}

impl ChecksConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// The first that is out of range.
    pub fn validate(&self, service: Service) -> Result<(), ConfigError> {
        if self.usage_lookback_secs == 0 {
            return Err(ConfigError::new(service, "integrity_checks.usage_lookback_secs", "must be at least 1"));
        }
        if self.gapped_windows == 0 || self.gapped_windows > self.of_last_windows {
            return Err(ConfigError::new(
                service,
                "integrity_checks.gapped_windows",
                "must be at least 1 and at most of_last_windows",
            ));
        }
        if self.of_last_windows > 10_000 {
            return Err(ConfigError::new(service, "integrity_checks.of_last_windows", "must be at most 10000"));
        }
        Ok(())
    }
}

/// Registers metering's checks.
///
/// # Errors
/// When a name is taken (a bug).
pub fn register(checks: &IntegrityChecks, clock: &Clock, config: &ChecksConfig) -> Result<(), RegisterError> {
    checks.register(NamespacesWithoutProject {
        clock: clock.clone(),
        lookback_secs: i64::from(config.usage_lookback_secs),
    })?;
    checks.register(WindowsGappedRepeatedly {
        gapped: i64::from(config.gapped_windows),
        of_last: i64::from(config.of_last_windows),
    })
}

/// `namespaces_without_project`: usage measured within the lookback (calendar time) in a
/// namespace that is none of its cluster's Hopsworks projects as provisioning last listed them
/// (`projects`, replaced at every listing), from pods labelled with a Hopsworks user. Such
/// usage is billed to nobody (decision 0040, `unknown_project`). Pods without the owner label
/// (the cluster's system namespaces) are left out: they are no one's. One finding per
/// (cluster, namespace).
#[derive(Clone, Debug)]
pub struct NamespacesWithoutProject {
    /// The calendar clock windows are measured on.
    pub clock: Clock,
    /// How far back usage is looked at, in seconds.
    pub lookback_secs: i64,
}

#[derive(QueryableByName)]
struct Orphan {
    #[diesel(sql_type = SqlUuid)]
    cluster_id: uuid::Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    cluster_name: Option<String>,
    #[diesel(sql_type = Text)]
    namespace: String,
    #[diesel(sql_type = BigInt)]
    windows: i64,
    #[diesel(sql_type = Timestamptz)]
    last_window_end: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    usernames: String,
}

impl NamespacesWithoutProject {
    async fn look(&self, db: &Database) -> anyhow::Result<Vec<Finding>> {
        let since = self.clock.now() - chrono::Duration::seconds(self.lookback_secs);
        let mut conn = db.conn().await?;
        let orphans: Vec<Orphan> = diesel::sql_query(
            "SELECT s.cluster_id, c.name AS cluster_name, s.namespace, \
                 count(DISTINCT s.window_start) AS windows, max(s.window_end) AS last_window_end, \
                 string_agg(DISTINCT s.hopsworks_username, ', ' ORDER BY s.hopsworks_username) AS usernames \
             FROM samples s LEFT JOIN clusters c ON c.cluster_id = s.cluster_id \
             WHERE s.window_end > $1 AND s.hopsworks_username <> '' \
               AND NOT EXISTS (SELECT 1 FROM projects p WHERE p.cluster_id = s.cluster_id AND p.namespace = s.namespace) \
             GROUP BY s.cluster_id, c.name, s.namespace \
             ORDER BY s.cluster_id, s.namespace",
        )
        .bind::<Timestamptz, _>(since)
        .load(&mut conn)
        .await?;
        Ok(orphans
            .into_iter()
            .map(|o| {
                let cluster = o.cluster_name.clone().unwrap_or_else(|| o.cluster_id.to_string());
                Finding::new(
                    format!("{}/{}", o.cluster_id, o.namespace),
                    format!("namespace {} on cluster {cluster}", o.namespace),
                    format!(
                        "Usage of {} measured in {} window(s) since {} (the last ending {}) in namespace {}, \
                         which is none of cluster {cluster}'s Hopsworks projects as provisioning last listed \
                         them; it is billed to nobody. Check that the project exists in Hopsworks and that \
                         provisioning lists it (GET /api/admin/usage/unbilled shows the usage), or remove the \
                         pods.",
                        o.usernames,
                        o.windows,
                        since.format("%Y-%m-%d %H:%M UTC"),
                        o.last_window_end.format("%Y-%m-%d %H:%M UTC"),
                        o.namespace,
                    ),
                )
            })
            .collect())
    }
}

impl Check for NamespacesWithoutProject {
    fn name(&self) -> &str {
        "namespaces_without_project"
    }

    fn run<'a>(&'a self, db: &'a Database) -> BoxFuture<'a, anyhow::Result<Vec<Finding>>> {
        Box::pin(self.look(db))
    }
}

/// `windows_gapped_repeatedly`: a cluster (still measured: not drained, decision 0040) with at
/// least `gapped` gaps among its last `of_last` ended windows (complete or gap, decision 0027).
/// One finding per cluster.
#[derive(Clone, Debug)]
pub struct WindowsGappedRepeatedly {
    /// Gaps that make a finding ...
    pub gapped: i64,
    /// ... among this many of the cluster's last ended windows.
    pub of_last: i64,
}

#[derive(QueryableByName)]
struct Gapped {
    #[diesel(sql_type = SqlUuid)]
    cluster_id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    gaps: i64,
    #[diesel(sql_type = BigInt)]
    windows: i64,
    #[diesel(sql_type = Text)]
    reasons: String,
    #[diesel(sql_type = Timestamptz)]
    latest_gap: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    latest_detail: Option<String>,
    #[diesel(sql_type = Integer)]
    window_secs: i32,
}

impl WindowsGappedRepeatedly {
    async fn look(&self, db: &Database) -> anyhow::Result<Vec<Finding>> {
        let mut conn = db.conn().await?;
        let gapped: Vec<Gapped> = diesel::sql_query(
            "WITH recent AS ( \
                 SELECT r.cluster_id, r.window_start, r.window_end, r.status, r.gap_reason, r.gap_detail, \
                        row_number() OVER (PARTITION BY r.cluster_id ORDER BY r.window_start DESC) AS n \
                 FROM runs r JOIN clusters c ON c.cluster_id = r.cluster_id \
                 WHERE c.drained_at IS NULL AND r.status IN ('complete', 'gap')), \
             last AS (SELECT * FROM recent WHERE n <= $1), \
             reasons AS ( \
                 SELECT cluster_id, string_agg(gap_reason || ' x' || k, ', ' ORDER BY k DESC, gap_reason) AS reasons \
                 FROM (SELECT cluster_id, gap_reason, count(*) AS k FROM last WHERE status = 'gap' \
                       GROUP BY cluster_id, gap_reason) g GROUP BY cluster_id) \
             SELECT l.cluster_id, c.name, \
                 count(*) FILTER (WHERE l.status = 'gap') AS gaps, count(*) AS windows, rs.reasons, \
                 max(l.window_start) FILTER (WHERE l.status = 'gap') AS latest_gap, \
                 (array_agg(l.gap_detail ORDER BY l.window_start DESC) FILTER (WHERE l.status = 'gap'))[1] AS latest_detail, \
                 extract(epoch FROM min(l.window_end - l.window_start))::int AS window_secs \
             FROM last l JOIN clusters c ON c.cluster_id = l.cluster_id JOIN reasons rs ON rs.cluster_id = l.cluster_id \
             GROUP BY l.cluster_id, c.name, rs.reasons \
             HAVING count(*) FILTER (WHERE l.status = 'gap') >= $2 \
             ORDER BY l.cluster_id",
        )
        .bind::<BigInt, _>(self.of_last)
        .bind::<BigInt, _>(self.gapped)
        .load(&mut conn)
        .await?;
        Ok(gapped
            .into_iter()
            .map(|g| {
                Finding::new(
                    g.cluster_id.to_string(),
                    format!("cluster {}", g.name),
                    format!(
                        "{} of the last {} windows ({} s each) of cluster {} are gaps: {}; the latest starting {}{}. \
                         Their usage is not measured. Fix what the reasons say (GET /api/admin/metering/gaps \
                         lists them; the operator's guide explains each), then collect now.",
                        g.gaps,
                        g.windows,
                        g.window_secs,
                        g.name,
                        g.reasons,
                        g.latest_gap.format("%Y-%m-%d %H:%M UTC"),
                        g.latest_detail.map(|d| format!(" ({d})")).unwrap_or_default(),
                    ),
                )
            })
            .collect())
    }
}

impl Check for WindowsGappedRepeatedly {
    fn name(&self) -> &str {
        "windows_gapped_repeatedly"
    }

    fn run<'a>(&'a self, db: &'a Database) -> BoxFuture<'a, anyhow::Result<Vec<Finding>>> {
        Box::pin(self.look(db))
    }
}
