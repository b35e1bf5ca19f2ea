//! Prometheus metrics: what every service exposes on `GET /metrics` in the text format.
//!
//! Each [`Metrics`] is one registry, owned by one running service (several services started by
//! one test keep theirs apart). It holds:
//!
//! - the HTTP metrics every route gets from the platform's middleware ([`http`]): requests by
//!   route pattern, method and status class, server errors, latency;
//! - the consumers' counters (processed, failed, dead-lettered, redelivered) and their lag,
//!   read from JetStream's consumer info when scraped ([`events`]);
//! - values read from Postgres when scraped ([`sql`]): outbox depth and age, dead letters, and
//!   whatever a service adds (metering's window lag, billing's backlog, …).
//!
//! Values read at scrape time are as fresh as the scrape, and nothing runs when nobody scrapes.
//! A read that fails or takes longer than [`SAMPLE_TIMEOUT`] leaves that metric's previous
//! values and sets `hopsbridge_metrics_sampler_up{sampler}` to 0, so an alert can see it.
//!
//! Every name starts with `hopsbridge_`; labels are bounded (route patterns, never raw paths;
//! consumer and cluster names, never ids of people).

pub mod events;
pub mod http;
pub mod sql;

use futures::future::BoxFuture;
use hopsbridge_contracts::Service;
use prometheus::{Encoder as _, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use events::{ConsumerLag, ConsumerMetrics};
pub use http::{HttpMetrics, RouteLabel};
/// The Prometheus client, for a service's own counters (registered in [`Metrics::registry`]).
pub use prometheus;
pub use sql::{Kind, SqlMetric, SqlMetrics};

/// How long one sampler may take when `/metrics` is scraped.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(3);

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Something read when `/metrics` is scraped (Postgres counts, JetStream consumer info) that
/// updates metrics in the registry.
pub trait Sampler: Send + Sync {
    /// A short name for `hopsbridge_metrics_sampler_up{sampler}` and the log.
    fn name(&self) -> &str;
    /// Reads and updates its metrics.
    fn sample(&self) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// One service's metrics registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http: HttpMetrics,
    consumers: events::ConsumerCounters,
    samplers: Mutex<Vec<Arc<dyn Sampler>>>,
    sampler_up: IntGaugeVec,
    on_main_listener: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("on_main_listener", &self.inner.on_main_listener).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the HTTP and consumer metrics, served on the service's own listener
    /// unless `http.metrics_port` gives it a listener of its own; its series carry no
    /// `service` label (tests of the platform itself).
    #[must_use]
    pub fn new() -> Self {
        Self::build(None, true)
    }

    /// [`Metrics::new`] for `service`: every series is labelled `service="<name>"`, so rules
    /// and dashboards tell the services apart whatever the scrape configuration adds.
    #[must_use]
    pub fn of_service(service: Service) -> Self {
        Self::build(Some(service), true)
    }

    /// [`Metrics::of_service`] whose `/metrics` is never served on the main listener, only on
    /// `http.metrics_port` when it is set: for the gateway, whose main listener is the internet's.
    #[must_use]
    pub fn public(service: Service) -> Self {
        Self::build(Some(service), false)
    }

    #[allow(clippy::expect_used, reason = "constant names registered once in a fresh registry cannot clash")]
    fn build(service: Option<Service>, on_main_listener: bool) -> Self {
        let labels = service.map(|s| std::iter::once(("service".to_owned(), s.name().to_owned())).collect());
        let registry = Registry::new_custom(None, labels).expect("no prefix, valid label");
        let http = HttpMetrics::new();
        http.register(&registry).expect("HTTP metrics register in a fresh registry");
        let consumers = events::ConsumerCounters::new();
        consumers.register(&registry).expect("consumer metrics register in a fresh registry");
        let sampler_up = IntGaugeVec::new(
            Opts::new(
                "hopsbridge_metrics_sampler_up",
                "1 when the sampler's last read (Postgres, JetStream) at scrape time worked, 0 when it failed or timed out",
            ),
            &["sampler"],
        )
        .expect("valid metric");
        registry.register(Box::new(sampler_up.clone())).expect("sampler metric registers in a fresh registry");
        Self {
            inner: Arc::new(Inner {
                registry,
                http,
                consumers,
                samplers: Mutex::default(),
                sampler_up,
                on_main_listener,
            }),
        }
    }

    /// The registry, for a service's own collectors.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The HTTP metrics the middleware records.
    #[must_use]
    pub fn http(&self) -> &HttpMetrics {
        &self.inner.http
    }

    /// Whether `/metrics` may be served on the main listener (when no metrics port is set).
    #[must_use]
    pub fn on_main_listener(&self) -> bool {
        self.inner.on_main_listener
    }

    /// The counters of consumer `name`.
    #[must_use]
    pub fn consumer(&self, name: &str) -> ConsumerMetrics {
        self.inner.consumers.of(name)
    }

    /// Adds a sampler run at every scrape.
    pub fn add_sampler(&self, sampler: Arc<dyn Sampler>) {
        if let Ok(mut samplers) = self.inner.samplers.lock() {
            samplers.push(sampler);
        }
    }

    /// Registers `metrics`, read from `db` at every scrape, under the sampler name `name`.
    ///
    /// # Errors
    /// When a metric's name is invalid or already registered.
    pub fn add_sql(&self, name: &str, db: crate::db::Database, metrics: Vec<SqlMetric>) -> anyhow::Result<()> {
        let sampler = Arc::new(SqlMetrics::new(name, db, metrics)?);
        self.inner.registry.register(Box::new(sql::Collector(Arc::clone(&sampler))))?;
        self.add_sampler(sampler);
        Ok(())
    }

    /// Runs every sampler (each within [`SAMPLE_TIMEOUT`]), then renders the registry in the
    /// text format.
    pub async fn render(&self) -> String {
        let samplers: Vec<Arc<dyn Sampler>> = self.inner.samplers.lock().map(|s| s.clone()).unwrap_or_default();
        let results = futures::future::join_all(samplers.iter().map(|s| async move {
            let outcome = match tokio::time::timeout(SAMPLE_TIMEOUT, s.sample()).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("timed out after {}s", SAMPLE_TIMEOUT.as_secs())),
            };
            (s.name().to_owned(), outcome)
        }))
        .await;
        for (name, outcome) in results {
            let up = match outcome {
                Ok(()) => 1,
                Err(e) => {
                    tracing::warn!(sampler = %name, error = format!("{e:#}"), "metrics sampler failed");
                    0
                }
            };
            self.inner.sampler_up.with_label_values(&[name.as_str()]).set(up);
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.inner.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `GET /metrics`: the registry in Prometheus' text format.
pub(crate) async fn serve(metrics: actix_web::web::Data<Metrics>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().content_type(CONTENT_TYPE).body(metrics.render().await)
}

/// The metric families (`# TYPE` lines) of a text exposition: a histogram's family is its base
/// name (its series add `_bucket`, `_sum`, `_count`), a counter's its full `…_total` name. What
/// tests compare the dashboard and the alert rules with.
#[must_use]
pub fn names_in(exposition: &str) -> std::collections::BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}
