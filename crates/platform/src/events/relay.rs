//! The outbox relay: publishes outbox rows to JetStream and marks them published.

use super::outbox;
use super::{EventBus, Hook, headers};
use crate::config::{DatabaseConfig, EventsConfig};
use crate::db::{Database, DbError};
use crate::schema::outbox as table;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use hopsbridge_contracts::Service;
use hopsbridge_domain::EventId;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Test seams of the relay.
#[derive(Clone, Default)]
pub struct RelayHooks {
    /// Runs after the PubAcks of a batch arrived and before its rows are marked published.
    pub after_publish: Option<Hook>,
}

impl std::fmt::Debug for RelayHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHooks").field("after_publish", &self.after_publish.is_some()).finish()
    }
}

/// Publishes one producer's outbox. Several relays may run against the same outbox.
#[derive(Clone, Debug)]
pub struct Relay {
    db: Database,
    db_cfg: DatabaseConfig,
    bus: EventBus,
    producer: Service,
    cfg: EventsConfig,
    hooks: RelayHooks,
    totals: Arc<RelayTotals>,
}

/// What a relay (and its clones) published since it was made: every PubAck it received, and
/// those JetStream flagged as duplicates of a message id it already held. A row published
/// once has one PubAck; a duplicate means a row was published again, by a relay that died
/// before marking it or by two relays holding the same row.
#[derive(Debug, Default)]
pub struct RelayTotals {
    published: AtomicU64,
    duplicates: AtomicU64,
}

impl RelayTotals {
    /// PubAcks received, duplicates included.
    #[must_use]
    pub fn published(&self) -> u64 {
        AtomicU64::load(&self.published, Ordering::Relaxed)
    }

    /// PubAcks that JetStream flagged as a duplicate.
    #[must_use]
    pub fn duplicates(&self) -> u64 {
        AtomicU64::load(&self.duplicates, Ordering::Relaxed)
    }
}

#[derive(Queryable)]
struct Row {
    id: uuid::Uuid,
    subject: String,
    event_type: String,
    schema_version: i32,
    envelope: Vec<u8>,
    trace_context: serde_json::Value,
}

/// What one pass over the outbox did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayPass {
    /// Rows published and marked.
    pub published: usize,
    /// Rows whose publication failed; they stay in the outbox.
    pub failed: usize,
    /// Of the published rows, those JetStream already held (its PubAck flagged a duplicate).
    pub duplicates: usize,
}

impl Relay {
    /// A relay for `producer`'s outbox.
    #[must_use]
    pub fn new(db: Database, db_cfg: DatabaseConfig, bus: EventBus, producer: Service, cfg: EventsConfig) -> Self {
        Self { db, db_cfg, bus, producer, cfg, hooks: RelayHooks::default(), totals: Arc::default() }
    }

    /// What this relay and its clones published so far.
    #[must_use]
    pub fn totals(&self) -> Arc<RelayTotals> {
        Arc::clone(&self.totals)
    }

    /// Installs test seams.
    #[must_use]
    pub fn with_hooks(mut self, hooks: RelayHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Publishes until `cancel` fires: at once when a committed transaction notifies, otherwise
    /// every `events.relay_poll_interval_ms`; backs off while NATS or Postgres is away. The
    /// batch in hand when `cancel` fires is finished first.
    pub async fn run(self, cancel: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(
            self.db_cfg.clone(),
            self.db.schema(),
            outbox::channel(self.producer),
            Arc::clone(&wake),
            cancel.clone(),
        ));
        let poll = Duration::from_millis(self.cfg.relay_poll_interval_ms);
        let mut failures = 0_u32;
        let mut last_prune = tokio::time::Instant::now();
        let full_batch = usize::try_from(self.cfg.relay_batch_size).unwrap_or(usize::MAX);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let idle = match self.relay_once().await {
                Ok(pass) if pass.failed == 0 => {
                    failures = 0;
                    pass.published < full_batch
                }
                Ok(pass) => {
                    failures += 1;
                    tracing::warn!(failed = pass.failed, "some outbox events could not be published");
                    true
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "outbox relay pass failed");
                    true
                }
            };
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = tokio::time::Instant::now();
                if let Err(e) = self.prune().await {
                    tracing::warn!(error = %e, "pruning the outbox failed");
                }
            }
            if idle {
                let pause = if failures > 0 { backoff(failures) } else { poll };
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = wake.notified() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        listener.abort();
    }

    /// One pass: takes up to `events.relay_batch_size` unpublished rows no other relay holds,
    /// publishes them, waits for every PubAck, and marks the acknowledged ones published, all
    /// while holding the rows' locks.
    ///
    /// # Errors
    /// When Postgres fails; rows are then left as they were.
    pub async fn relay_once(&self) -> Result<RelayPass, DbError> {
        let mut conn = self.db.conn().await?;
        let (pass, ids) = conn
            .transaction(async |c| -> Result<(RelayPass, Vec<EventId>), DbError> {
                let rows: Vec<Row> = table::table
                    .filter(table::published_at.is_null())
                    .order((table::created_at, table::id))
                    .limit(self.cfg.relay_batch_size)
                    .select((
                        table::id,
                        table::subject,
                        table::event_type,
                        table::schema_version,
                        table::envelope,
                        table::trace_context,
                    ))
                    .for_update()
                    .skip_locked()
                    .load(c)
                    .await?;
                if rows.is_empty() {
                    return Ok((RelayPass::default(), Vec::new()));
                }
                let (acked, duplicates, failed) = self.publish(rows).await;
                let ids: Vec<EventId> = acked.iter().copied().map(EventId::from).collect();
                if let Some(hook) = &self.hooks.after_publish {
                    hook(ids.clone()).await;
                }
                mark(c, &acked, &failed).await?;
                Ok((RelayPass { published: acked.len(), failed: failed.len(), duplicates }, ids))
            })
            .await?;
        if !ids.is_empty() {
            tracing::debug!(published = pass.published, "outbox batch published");
        }
        if pass.duplicates > 0 {
            tracing::info!(duplicates = pass.duplicates, "JetStream already held some published outbox events");
        }
        Ok(pass)
    }

    /// Publishes `rows` and waits for their PubAcks: the acknowledged ids, how many of those
    /// JetStream flagged as duplicates, and the failures.
    async fn publish(&self, rows: Vec<Row>) -> (Vec<uuid::Uuid>, usize, Vec<(uuid::Uuid, String)>) {
        let js = self.bus.jetstream();
        let mut pending = Vec::with_capacity(rows.len());
        let mut failed = Vec::new();
        for row in rows {
            let mut message = async_nats::jetstream::message::PublishMessage::build()
                .payload(row.envelope.into())
                .message_id(row.id.to_string())
                .header(headers::EVENT_TYPE, format!("{}V{}", row.event_type, row.schema_version));
            if let Ok(context) = serde_json::from_value::<HashMap<String, String>>(row.trace_context) {
                for (k, v) in context {
                    message = message.header(k.as_str(), v.as_str());
                }
            }
            match js.send_publish(self.bus.subjects().subject(&row.subject), message).await {
                Ok(ack) => pending.push((row.id, ack)),
                Err(e) => failed.push((row.id, e.to_string())),
            }
        }
        let results =
            futures::future::join_all(pending.into_iter().map(|(id, ack)| async move { (id, ack.await) })).await;
        let mut acked = Vec::with_capacity(results.len());
        let mut duplicates = 0_usize;
        for (id, result) in results {
            match result {
                Ok(ack) => {
                    self.totals.published.fetch_add(1, Ordering::Relaxed);
                    if ack.duplicate {
                        duplicates += 1;
                        self.totals.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    acked.push(id);
                }
                Err(e) => failed.push((id, e.to_string())),
            }
        }
        (acked, duplicates, failed)
    }

    /// Deletes published rows older than `events.retention_hours`.
    ///
    /// # Errors
    /// When Postgres fails.
    pub async fn prune(&self) -> Result<usize, DbError> {
        let mut conn = self.db.conn().await?;
        let cutoff =
            chrono::Utc::now() - chrono::Duration::hours(i64::try_from(self.cfg.retention_hours).unwrap_or(i64::MAX));
        Ok(diesel::delete(table::table.filter(table::published_at.lt(cutoff))).execute(&mut conn).await?)
    }
}

async fn mark(
    conn: &mut AsyncPgConnection,
    acked: &[uuid::Uuid],
    failed: &[(uuid::Uuid, String)],
) -> Result<(), DbError> {
    if !acked.is_empty() {
        diesel::update(table::table.filter(table::id.eq_any(acked)))
            .set((
                table::published_at.eq(diesel::dsl::now),
                table::attempts.eq(table::attempts + 1),
                table::last_error.eq(None::<String>),
            ))
            .execute(conn)
            .await?;
    }
    for (id, error) in failed {
        diesel::update(table::table.find(id))
            .set((table::attempts.eq(table::attempts + 1), table::last_error.eq(error)))
            .execute(conn)
            .await?;
    }
    Ok(())
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100_u64 << failures.min(6)).min(5_000))
}

/// Holds a connection that LISTENs on `channel` and wakes `wake` on every notification (the
/// outbox relay, the mail relay, billing's catalogue sync); reconnects when the connection
/// drops, and wakes once on every (re)connect, for what was notified while nobody listened.
pub async fn listen(
    cfg: DatabaseConfig,
    schema: &'static str,
    channel: String,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        match crate::db::dedicated_connection(&cfg, schema).await {
            Ok(mut conn) => {
                if let Err(e) = diesel::sql_query(format!("LISTEN {channel}")).execute(&mut conn).await {
                    tracing::debug!(error = %e, "LISTEN failed");
                } else {
                    // Rows committed while nobody listened are found by the next pass.
                    wake.notify_one();
                    let mut notifications = std::pin::pin!(conn.notifications_stream());
                    loop {
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            n = notifications.next() => match n {
                                Some(Ok(_)) => wake.notify_one(),
                                Some(Err(_)) | None => break,
                            },
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "relay listener cannot connect"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
