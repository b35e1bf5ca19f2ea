//! billing's metrics: the Stripe reporting backlog and the subscription items Stripe lacks (read
//! from its tables when `/metrics` is scraped), and the rate-limited answers Stripe gave and the meter reports it accepted
//! (counted as they happen, per process).

use hopsbridge_platform::metrics::prometheus::{IntCounter, Opts};
use hopsbridge_platform::metrics::{Kind, SqlMetric};
use hopsbridge_platform::service::DataService;
use std::sync::LazyLock;

/// Every 429 Stripe answered (each retry's too).
pub static STRIPE_RATE_LIMITED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter("hopsbridge_billing_stripe_rate_limited_total", "Answers 429 (rate limited) received from Stripe")
});

/// Meter reports Stripe accepted.
pub static STRIPE_REPORTS_SENT: LazyLock<IntCounter> =
    LazyLock::new(|| counter("hopsbridge_billing_stripe_reports_sent_total", "Meter reports Stripe accepted"));

#[allow(clippy::expect_used, reason = "constant, valid metric options")]
fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect("valid metric")
}

/// The metrics read from Postgres.
#[must_use]
pub fn all() -> Vec<SqlMetric> {
    vec![
        SqlMetric {
            name: "hopsbridge_billing_stripe_reports_pending",
            help: "Meter reports waiting to be sent to Stripe",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, count(*)::float8 AS value FROM meter_reports WHERE state = 'pending'",
        },
        SqlMetric {
            name: "hopsbridge_billing_stripe_reports_oldest_pending_seconds",
            help: "Age of the oldest meter report waiting to be sent to Stripe (0 when none waits)",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS value \
                  FROM meter_reports WHERE state = 'pending'",
        },
        SqlMetric {
            name: "hopsbridge_billing_subscription_items_missing",
            help: "Prices in force that a live subscription has no Stripe item of yet (its usage waits to be reported)",
            kind: Kind::Gauge,
            label: None,
            sql: concat!(
                "SELECT '' AS label, count(*)::float8 AS value ",
                crate::catalog::missing_items!("now()"),
                " AND p.effective_from <= now()"
            ),
        },
    ]
}

/// Adds them to the service's registry.
///
/// # Errors
/// When a name is already registered.
pub fn register(service: &DataService) -> anyhow::Result<()> {
    let registry = service.metrics.registry();
    registry.register(Box::new(STRIPE_RATE_LIMITED.clone()))?;
    registry.register(Box::new(STRIPE_REPORTS_SENT.clone()))?;
    service.metrics.add_sql("postgres_billing", service.db.clone(), all())
}
