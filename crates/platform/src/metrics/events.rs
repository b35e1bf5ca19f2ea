//! The consumers' metrics: counters the runner moves, and the lag JetStream reports.

use super::Sampler;
use crate::events::EventBus;
use futures::future::BoxFuture;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::Mutex;

/// The counters of every consumer of a service, labelled by consumer.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerCounters {
    processed: IntCounterVec,
    failed: IntCounterVec,
    dead_lettered: IntCounterVec,
    redelivered: IntCounterVec,
}

#[allow(clippy::expect_used, reason = "constant, valid metric options")]
fn counter(name: &str, help: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &["consumer"]).expect("valid metric")
}

impl ConsumerCounters {
    pub(crate) fn new() -> Self {
        Self {
            processed: counter(
                "hopsbridge_events_consumer_processed_total",
                "Messages a consumer handled and acknowledged (applied, or found already applied in its inbox), by consumer",
            ),
            failed: counter(
                "hopsbridge_events_consumer_failed_total",
                "Deliveries whose handling failed and were left for redelivery, by consumer",
            ),
            dead_lettered: counter(
                "hopsbridge_events_consumer_dead_lettered_total",
                "Messages a consumer gave up on and dead-lettered, by consumer",
            ),
            redelivered: counter(
                "hopsbridge_events_consumer_redeliveries_total",
                "Messages received again (JetStream delivery count above 1), by consumer",
            ),
        }
    }

    pub(crate) fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        for c in [&self.processed, &self.failed, &self.dead_lettered, &self.redelivered] {
            registry.register(Box::new(c.clone()))?;
        }
        Ok(())
    }

    /// The counters of one consumer, created at 0 so that their series exist from the start.
    pub(crate) fn of(&self, name: &str) -> ConsumerMetrics {
        ConsumerMetrics {
            processed: self.processed.with_label_values(&[name]),
            failed: self.failed.with_label_values(&[name]),
            dead_lettered: self.dead_lettered.with_label_values(&[name]),
            redelivered: self.redelivered.with_label_values(&[name]),
        }
    }
}

/// One consumer's counters.
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    /// Events applied.
    pub processed: IntCounter,
    /// Deliveries that failed and wait for a redelivery.
    pub failed: IntCounter,
    /// Messages dead-lettered.
    pub dead_lettered: IntCounter,
    /// Messages delivered more than once.
    pub redelivered: IntCounter,
}

impl Default for ConsumerMetrics {
    /// Counters registered nowhere, for a consumer built without a service's metrics.
    fn default() -> Self {
        ConsumerCounters::new().of("unregistered")
    }
}

/// Reads each consumer's pending and unacknowledged messages from JetStream at scrape time.
pub struct ConsumerLag {
    bus: EventBus,
    /// (consumer, stream) pairs.
    consumers: Mutex<Vec<(String, String)>>,
    pending: IntGaugeVec,
    ack_pending: IntGaugeVec,
}

impl std::fmt::Debug for ConsumerLag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerLag").finish_non_exhaustive()
    }
}

impl ConsumerLag {
    /// The sampler, with its gauges registered in `registry`.
    ///
    /// # Errors
    /// When the gauges are already registered.
    pub fn new(bus: EventBus, registry: &Registry) -> prometheus::Result<Self> {
        let pending = IntGaugeVec::new(
            Opts::new(
                "hopsbridge_events_consumer_lag_messages",
                "Messages on a consumer's stream not yet delivered to it (JetStream num_pending), by consumer",
            ),
            &["consumer"],
        )?;
        let ack_pending = IntGaugeVec::new(
            Opts::new(
                "hopsbridge_events_consumer_ack_pending_messages",
                "Messages delivered to a consumer and not yet acknowledged (JetStream num_ack_pending), by consumer",
            ),
            &["consumer"],
        )?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(ack_pending.clone()))?;
        Ok(Self { bus, consumers: Mutex::default(), pending, ack_pending })
    }

    /// Adds consumer `name` of `stream`.
    pub fn watch(&self, name: &str, stream: String) {
        if let Ok(mut consumers) = self.consumers.lock()
            && !consumers.iter().any(|(n, _)| n == name)
        {
            consumers.push((name.to_owned(), stream));
        }
    }

    async fn read(&self) -> anyhow::Result<()> {
        let consumers = self.consumers.lock().map(|c| c.clone()).unwrap_or_default();
        for (name, stream) in consumers {
            let stream = self.bus.jetstream().get_stream_no_info(&stream).await?;
            // A consumer not created yet (its runner has not started) has no lag to report.
            let Ok(info) = stream.consumer_info(&name).await else { continue };
            self.pending.with_label_values(&[name.as_str()]).set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
            self.ack_pending
                .with_label_values(&[name.as_str()])
                .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
        }
        Ok(())
    }
}

impl Sampler for ConsumerLag {
    fn name(&self) -> &str {
        "jetstream_consumers"
    }

    fn sample(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(self.read())
    }
}
