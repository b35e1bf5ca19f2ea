//! metering's metrics, read from its tables when `/metrics` is scraped: how late each
//! cluster's windows complete, the gaps of the last day, and the Kubernetes API calls its runs
//! made. Clusters are labelled by name.

use hopsbridge_platform::metrics::{Kind, SqlMetric};
use hopsbridge_platform::service::DataService;

/// The metrics.
#[must_use]
pub fn all() -> Vec<SqlMetric> {
    vec![
        SqlMetric {
            name: "hopsbridge_metering_window_lag_seconds",
            help: "Seconds between the end of a cluster's latest completed window and its completion",
            kind: Kind::Gauge,
            label: Some("cluster"),
            sql: "SELECT c.name AS label, extract(epoch FROM r.finished_at - r.window_end)::float8 AS value \
                  FROM clusters c CROSS JOIN LATERAL ( \
                    SELECT window_end, finished_at FROM runs \
                    WHERE runs.cluster_id = c.cluster_id AND status = 'complete' AND finished_at IS NOT NULL \
                    ORDER BY window_start DESC LIMIT 1) r",
        },
        SqlMetric {
            name: "hopsbridge_metering_last_complete_window_age_seconds",
            help: "Seconds since the end of a cluster's latest completed window (grows while nothing completes)",
            kind: Kind::Gauge,
            label: Some("cluster"),
            sql: "SELECT c.name AS label, extract(epoch FROM now() - r.window_end)::float8 AS value \
                  FROM clusters c CROSS JOIN LATERAL ( \
                    SELECT window_end FROM runs WHERE runs.cluster_id = c.cluster_id AND status = 'complete' \
                    ORDER BY window_start DESC LIMIT 1) r",
        },
        SqlMetric {
            name: "hopsbridge_metering_gaps_last_day",
            help: "A cluster's windows that ended in the last 24 hours and are gaps (not measured)",
            kind: Kind::Gauge,
            label: Some("cluster"),
            sql: "SELECT c.name AS label, count(r.cluster_id)::float8 AS value FROM clusters c \
                  LEFT JOIN runs r ON r.cluster_id = c.cluster_id AND r.status = 'gap' \
                    AND r.window_start > now() - interval '2 days' AND r.window_end > now() - interval '1 day' \
                  GROUP BY c.name",
        },
        SqlMetric {
            name: "hopsbridge_metering_kubernetes_api_calls_last_hour",
            help: "Kubernetes API calls made by a cluster's runs whose windows ended in the last hour",
            kind: Kind::Gauge,
            label: Some("cluster"),
            sql: "SELECT c.name AS label, coalesce(sum(r.api_calls), 0)::float8 AS value FROM clusters c \
                  LEFT JOIN runs r ON r.cluster_id = c.cluster_id \
                    AND r.window_start > now() - interval '1 day' AND r.window_end > now() - interval '1 hour' \
                  GROUP BY c.name",
        },
    ]
}

/// Adds them to the service's registry.
///
/// # Errors
/// When a name is already registered.
pub fn register(service: &DataService) -> anyhow::Result<()> {
    service.metrics.add_sql("postgres_metering", service.db.clone(), all())
}
