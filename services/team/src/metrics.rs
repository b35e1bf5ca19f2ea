//! team's metrics, read from its tables when `/metrics` is scraped: the invitations still open
//! (waiting, or expired unanswered), the memberships in force and the teams they make.

use hopsbridge_platform::metrics::{Kind, SqlMetric};
use hopsbridge_platform::service::DataService;

/// The metrics.
#[must_use]
pub fn all() -> Vec<SqlMetric> {
    vec![
        SqlMetric {
            name: "hopsbridge_team_invitations_open",
            help: "Invitations nobody answered: waiting for the invited person, or expired unanswered",
            kind: Kind::Gauge,
            label: Some("state"),
            // Both states have their series, 0 when none is in it; expiry is derived, never stored.
            sql: "SELECT s.state AS label, count(i.id)::float8 AS value \
                  FROM (VALUES ('waiting'), ('expired')) AS s(state) \
                  LEFT JOIN invitations i ON i.status = 'pending' \
                    AND (CASE WHEN i.expires_at > now() THEN 'waiting' ELSE 'expired' END) = s.state \
                  GROUP BY s.state",
        },
        SqlMetric {
            name: "hopsbridge_team_members",
            help: "Memberships in force (members billed to an owner)",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, count(*)::float8 AS value FROM memberships WHERE removed_at IS NULL",
        },
        SqlMetric {
            name: "hopsbridge_team_teams",
            help: "Owners with at least one member",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, count(DISTINCT owner_user_id)::float8 AS value \
                  FROM memberships WHERE removed_at IS NULL",
        },
    ]
}

/// Adds them to the service's registry.
///
/// # Errors
/// When a name is already registered.
pub fn register(service: &DataService) -> anyhow::Result<()> {
    service.metrics.add_sql("postgres_team", service.db.clone(), all())
}
