//! The NATS connection, JetStream context and streams.

use crate::config::NatsConfig;
use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use hopsbridge_contracts::{Service, Subjects};
use std::time::Duration;

/// A service's connection to NATS and JetStream, with the subject names of its deployment.
#[derive(Clone, Debug)]
pub struct EventBus {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    cfg: NatsConfig,
}

impl EventBus {
    /// Connects to NATS. The client then reconnects on its own for as long as the process runs;
    /// publishing and consuming fail (and are retried by their callers) while it is away.
    ///
    /// # Errors
    /// When the server cannot be reached within 5 seconds, or the prefix is invalid.
    pub async fn connect(cfg: &NatsConfig, service: Service) -> anyhow::Result<Self> {
        let subjects = Subjects::new(&cfg.prefix)?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("hopsbridge-{service}"))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .connect(cfg.url.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {}", cfg.url))?;
        let js = jetstream::new(client.clone());
        Ok(Self { client, js, subjects, cfg: cfg.clone() })
    }

    /// The core NATS client.
    #[must_use]
    pub const fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    #[must_use]
    pub const fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Subject and stream names.
    #[must_use]
    pub const fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    fn stream_config(&self, name: String, subjects: String) -> stream::Config {
        stream::Config {
            name,
            subjects: vec![subjects],
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(self.cfg.stream_max_age_hours * 3600),
            duplicate_window: Duration::from_secs(self.cfg.duplicate_window_secs),
            num_replicas: self.cfg.stream_replicas,
            ..Default::default()
        }
    }

    /// Creates every producer's stream and the dead-letter stream, or brings their settings up
    /// to date. Safe to run from every service at every start, concurrently.
    ///
    /// # Errors
    /// When JetStream refuses or cannot be reached.
    pub async fn ensure_streams(&self) -> anyhow::Result<()> {
        let mut wanted: Vec<stream::Config> = Service::WITH_DATA
            .iter()
            .map(|p| self.stream_config(self.subjects.stream(*p), self.subjects.stream_subjects(*p)))
            .collect();
        wanted.push(self.stream_config(self.subjects.dead_letter_stream(), self.subjects.dead_letter_subjects()));
        for config in wanted {
            let name = config.name.clone();
            let mut attempt = 0;
            loop {
                match self.js.create_or_update_stream(config.clone()).await {
                    Ok(_) => break,
                    // Two services creating the same stream at once: one loses, and its next
                    // attempt finds the stream and updates it.
                    Err(e) if attempt < 3 => {
                        tracing::debug!(stream = %name, error = %e, "retrying stream creation");
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e).with_context(|| format!("ensuring stream {name}")),
                }
            }
        }
        Ok(())
    }
}

/// A readiness check: the NATS connection is up and the server answers a flush.
#[derive(Debug, Clone)]
pub struct NatsCheck(pub async_nats::Client);

impl crate::http::ReadinessCheck for NatsCheck {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn check(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.0.connection_state() != async_nats::connection::State::Connected {
                return Err("unreachable".to_owned());
            }
            self.0.flush().await.map_err(|_| "unreachable".to_owned())
        })
    }
}
