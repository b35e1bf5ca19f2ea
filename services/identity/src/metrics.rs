//! identity's metrics, read from its tables when `/metrics` is scraped: people by status and by
//! who suspended them, the administrators, who signed in lately, and the erasures waiting for
//! their retention (with the retention itself, so an alert can compare the two).

use hopsbridge_platform::metrics::prometheus::{IntGauge, Opts};
use hopsbridge_platform::metrics::{Kind, SqlMetric};
use hopsbridge_platform::service::DataService;

/// The metrics read from Postgres.
#[must_use]
pub fn all() -> Vec<SqlMetric> {
    vec![
        SqlMetric {
            name: "hopsbridge_identity_people",
            help: "Accounts by status (deleted ones until and after their erasure)",
            kind: Kind::Gauge,
            label: Some("status"),
            // Each status has its series, 0 when nobody is in it.
            sql: "SELECT s.status AS label, count(u.id)::float8 AS value \
                  FROM (VALUES ('active'), ('suspended'), ('deleted')) AS s(status) \
                  LEFT JOIN users u ON u.status = s.status GROUP BY s.status",
        },
        SqlMetric {
            name: "hopsbridge_identity_suspended",
            help: "Suspended accounts by who suspended them (admin, billing, or their team's owner being suspended)",
            kind: Kind::Gauge,
            label: Some("by"),
            sql: "SELECT s.by AS label, count(u.id)::float8 AS value \
                  FROM (VALUES ('admin'), ('billing'), ('owner')) AS s(by) \
                  LEFT JOIN users u ON u.status = 'suspended' AND u.suspended_by = s.by GROUP BY s.by",
        },
        SqlMetric {
            name: "hopsbridge_identity_administrators",
            help: "Active accounts with admin rights",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, count(*)::float8 AS value FROM users WHERE is_admin AND status = 'active'",
        },
        SqlMetric {
            name: "hopsbridge_identity_signed_in_last_day",
            help: "Active accounts that made an authenticated call in the last 24 hours (recorded to the minute)",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, count(*)::float8 AS value FROM users \
                  WHERE status = 'active' AND last_login_at >= now() - interval '1 day'",
        },
        SqlMetric {
            name: "hopsbridge_identity_erasures_pending",
            help: "Deleted accounts whose personal data is not erased yet (waiting for the retention period)",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, count(*)::float8 AS value FROM users \
                  WHERE status = 'deleted' AND erased_at IS NULL",
        },
        SqlMetric {
            name: "hopsbridge_identity_erasure_oldest_pending_seconds",
            help: "How long ago the oldest deleted account still holding personal data was deleted (0 when none)",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, coalesce(extract(epoch FROM now() - min(deleted_at)), 0)::float8 AS value \
                  FROM users WHERE status = 'deleted' AND erased_at IS NULL",
        },
    ]
}

/// Adds them to the service's registry, with `retention` (`deletion.retention_days`) as
/// `hopsbridge_identity_erasure_retention_seconds`.
///
/// # Errors
/// When a name is already registered.
pub fn register(service: &DataService, retention: chrono::TimeDelta) -> anyhow::Result<()> {
    let gauge = IntGauge::with_opts(Opts::new(
        "hopsbridge_identity_erasure_retention_seconds",
        "How long a deleted account's personal data is kept before it is erased (deletion.retention_days)",
    ))?;
    gauge.set(retention.num_seconds());
    service.metrics.registry().register(Box::new(gauge))?;
    service.metrics.add_sql("postgres_identity", service.db.clone(), all())
}
