//! provisioning's metrics, read from its tables when `/metrics` is scraped: the assignment
//! queue, by state, and how long its oldest entry has waited.

use hopsbridge_platform::metrics::{Kind, SqlMetric};
use hopsbridge_platform::service::DataService;

/// The metrics.
#[must_use]
pub fn all() -> Vec<SqlMetric> {
    vec![
        SqlMetric {
            name: "hopsbridge_provisioning_assignments_pending",
            help: "Assignments not settled (waiting for a person, capacity or an owner, or with Hopsworks work to do), by state",
            kind: Kind::Gauge,
            label: Some("status"),
            // Each unsettled state has its series, 0 when none is in it.
            sql: "SELECT s.status AS label, count(a.user_id)::float8 AS value \
                  FROM (VALUES ('waiting_for_user'), ('waiting_for_capacity'), ('waiting_for_owner'), \
                    ('provisioning'), ('unassigning')) AS s(status) \
                  LEFT JOIN assignments a ON a.status = s.status GROUP BY s.status",
        },
        SqlMetric {
            name: "hopsbridge_provisioning_assignments_oldest_pending_seconds",
            help: "How long the oldest unsettled assignment of each state has waited (0 when there is none)",
            kind: Kind::Gauge,
            label: Some("status"),
            sql: "SELECT s.status AS label, \
                    coalesce(extract(epoch FROM now() - min(a.waiting_since)), 0)::float8 AS value \
                  FROM (VALUES ('waiting_for_user'), ('waiting_for_capacity'), ('waiting_for_owner'), \
                    ('provisioning'), ('unassigning')) AS s(status) \
                  LEFT JOIN assignments a ON a.status = s.status GROUP BY s.status",
        },
    ]
}

/// Adds them to the service's registry.
///
/// # Errors
/// When a name is already registered.
pub fn register(service: &DataService) -> anyhow::Result<()> {
    service.metrics.add_sql("postgres_provisioning", service.db.clone(), all())
}
