//! Metrics read from Postgres when `/metrics` is scraped.
//!
//! A [`SqlMetric`] is one query that returns rows of `(label text, value float8)`: one series
//! per row, labelled `label_name=label` (or unlabelled when the metric has no label, the label
//! column then being ignored). A row whose value is NULL is left out.

use super::Sampler;
use crate::db::Database;
use diesel::QueryableByName;
use diesel::sql_types::{Double, Nullable, Text};
use diesel_async::RunQueryDsl;
use futures::future::BoxFuture;
use prometheus::core::Desc;
use prometheus::proto::{self, MetricFamily, MetricType};
use std::sync::{Arc, Mutex};

/// How Prometheus should read a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Goes up and down (a depth, an age).
    Gauge,
    /// Only goes up (a total kept in a table); `rate()` applies.
    Counter,
}

/// One metric read from Postgres.
#[derive(Clone, Debug)]
pub struct SqlMetric {
    /// Its name, `hopsbridge_…`.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Gauge or counter.
    pub kind: Kind,
    /// The label the query's `label` column fills, if any.
    pub label: Option<&'static str>,
    /// The query: columns `label` (text) and `value` (float8).
    pub sql: &'static str,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    label: String,
    #[diesel(sql_type = Nullable<Double>)]
    value: Option<f64>,
}

struct Family {
    metric: SqlMetric,
    desc: Desc,
    rows: Vec<(String, f64)>,
}

/// A set of [`SqlMetric`]s read from one database: the sampler that reads them and, through
/// [`Collector`], what the registry renders.
pub struct SqlMetrics {
    name: String,
    db: Database,
    families: Mutex<Vec<Family>>,
    descs: Vec<Desc>,
}

impl std::fmt::Debug for SqlMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlMetrics").field("name", &self.name).finish_non_exhaustive()
    }
}

impl SqlMetrics {
    /// The metrics, not read yet.
    ///
    /// # Errors
    /// When a name or label is not a valid Prometheus name.
    pub fn new(name: &str, db: Database, metrics: Vec<SqlMetric>) -> anyhow::Result<Self> {
        let mut families = Vec::with_capacity(metrics.len());
        let mut descs = Vec::with_capacity(metrics.len());
        for metric in metrics {
            let labels = metric.label.map(|l| vec![l.to_owned()]).unwrap_or_default();
            let desc = Desc::new(metric.name.to_owned(), metric.help.to_owned(), labels, Default::default())?;
            descs.push(desc.clone());
            families.push(Family { metric, desc, rows: Vec::new() });
        }
        Ok(Self { name: name.to_owned(), db, families: Mutex::new(families), descs })
    }

    async fn read(&self) -> anyhow::Result<()> {
        let queries: Vec<&'static str> =
            self.families.lock().map(|f| f.iter().map(|f| f.metric.sql).collect()).unwrap_or_default();
        let mut conn = self.db.conn().await?;
        let mut results = Vec::with_capacity(queries.len());
        for sql in queries {
            let rows: Vec<Row> = diesel::sql_query(sql).load(&mut conn).await?;
            results.push(rows.into_iter().filter_map(|r| r.value.map(|v| (r.label, v))).collect::<Vec<_>>());
        }
        if let Ok(mut families) = self.families.lock() {
            for (family, rows) in families.iter_mut().zip(results) {
                family.rows = rows;
            }
        }
        Ok(())
    }
}

impl Sampler for SqlMetrics {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(self.read())
    }
}

/// Renders an [`SqlMetrics`]' last reading.
pub(crate) struct Collector(pub(crate) Arc<SqlMetrics>);

impl prometheus::core::Collector for Collector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(families) = self.0.families.lock() else { return Vec::new() };
        families
            .iter()
            .map(|f| {
                let mut family = MetricFamily::default();
                family.set_name(f.desc.fq_name.clone());
                family.set_help(f.desc.help.clone());
                let kind = match f.metric.kind {
                    Kind::Gauge => MetricType::GAUGE,
                    Kind::Counter => MetricType::COUNTER,
                };
                family.set_field_type(kind);
                let metrics = f
                    .rows
                    .iter()
                    .map(|(label, value)| {
                        let mut m = proto::Metric::default();
                        if let Some(name) = f.metric.label {
                            let mut pair = proto::LabelPair::default();
                            pair.set_name(name.to_owned());
                            pair.set_value(label.clone());
                            m.set_label(vec![pair]);
                        }
                        match f.metric.kind {
                            Kind::Gauge => {
                                let mut g = proto::Gauge::default();
                                g.set_value(*value);
                                m.set_gauge(g);
                            }
                            Kind::Counter => {
                                let mut c = proto::Counter::default();
                                c.set_value(*value);
                                m.set_counter(c);
                            }
                        }
                        m
                    })
                    .collect();
                family.set_metric(metrics);
                family
            })
            .collect()
    }
}

/// The platform's own tables every data service has: the events outbox, the mail outbox, the
/// dead letters and the integrity findings.
#[must_use]
pub fn platform_metrics() -> Vec<SqlMetric> {
    vec![
        SqlMetric {
            name: "hopsbridge_events_outbox_depth",
            help: "Events in the outbox not yet published to JetStream",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, count(*)::float8 AS value FROM outbox WHERE published_at IS NULL",
        },
        SqlMetric {
            name: "hopsbridge_events_outbox_oldest_age_seconds",
            help: "Age of the oldest unpublished event in the outbox (0 when it is empty)",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS value \
                  FROM outbox WHERE published_at IS NULL",
        },
        SqlMetric {
            name: "hopsbridge_mail_outbox_depth",
            help: "Mails in the mail outbox not yet sent",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, count(*)::float8 AS value FROM mail_outbox WHERE sent_at IS NULL",
        },
        SqlMetric {
            name: "hopsbridge_mail_outbox_oldest_age_seconds",
            help: "Age of the oldest unsent mail in the mail outbox (0 when it is empty)",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS value \
                  FROM mail_outbox WHERE sent_at IS NULL",
        },
        SqlMetric {
            name: "hopsbridge_events_dead_letters",
            help: "Dead letters waiting for a replay, all the service's consumers together",
            kind: Kind::Gauge,
            label: None,
            sql: "SELECT '' AS label, count(*)::float8 AS value FROM dead_letters WHERE replayed_at IS NULL",
        },
        SqlMetric {
            name: "hopsbridge_integrity_open_findings",
            help: "Open integrity findings, by check (every check that ran here, 0 when it found nothing)",
            kind: Kind::Gauge,
            label: Some("check"),
            sql: "SELECT r.check_name AS label, count(f.id)::float8 AS value FROM integrity_runs r \
                  LEFT JOIN integrity_findings f ON f.check_name = r.check_name AND f.resolved_at IS NULL \
                  GROUP BY r.check_name",
        },
        SqlMetric {
            name: "hopsbridge_integrity_check_failed",
            help: "1 when the check's last run failed (its findings are then as an earlier run left them), else 0",
            kind: Kind::Gauge,
            label: Some("check"),
            sql: "SELECT check_name AS label, (CASE WHEN last_ok = false THEN 1 ELSE 0 END)::float8 AS value \
                  FROM integrity_runs",
        },
    ]
}
