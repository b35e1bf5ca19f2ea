//! The idempotent consumer runner.
//!
//! One [`Consumer`] is one durable JetStream pull consumer feeding one [`Handler`]. Messages
//! are handled in batches: the runner claims the batch's event ids in the inbox and hands the
//! newly claimed ones to the handler (one by one, unless it handles batches itself), all in one
//! transaction, commits, then acks. When a handler fails, the batch is rolled back and its
//! messages are handled one transaction each, so one bad message cannot hold up or undo the
//! others.
//!
//! | outcome | what happens |
//! |---|---|
//! | handled | effect and inbox row committed together, then ack |
//! | already in the inbox | ack, no effect |
//! | [`HandlerError::Retry`] | nak with the configured backoff; after `max_deliver` deliveries, dead letter |
//! | [`HandlerError::Reject`], undecodable, wrong type | dead letter with the reason, then term |
//! | Postgres unavailable | the batch is held (in-progress acks) and tried again until it is back |
//!
//! A dead letter is written to the service's `dead_letters` table and published to the
//! dead-letter subject; admins replay it through the same handler and inbox
//! ([`super::dead_letters`]).
//!
//! # Kill point
//!
//! For tests that stop a process between a consumer's commit and its acknowledgement (decision
//! 0065): when the environment variable `HOPSBRIDGE_KILL_POINT` is
//! `consumer_committed:<consumer name>[,<consumer name>…]` (or `consumer_committed:*`), the
//! process aborts (SIGABRT: no shutdown, no ack) right after a consumer it names commits a
//! transaction that applied at least one event. JetStream then redelivers the batch after `ack_wait`, and the inbox must
//! acknowledge it without applying it again. The variable is read once; when it is unset the
//! point costs one emptiness check per commit.

use super::dead_letters::{self, Failure, Replayer};
use super::{EventBus, Hook, headers};
use crate::config::EventsConfig;
use crate::db::{Database, DbError};
use crate::metrics::ConsumerMetrics;
use crate::telemetry;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use diesel::prelude::*;
use diesel::upsert::on_constraint;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use futures::future::BoxFuture;
use hopsbridge_contracts::Event;
use hopsbridge_contracts::events::Envelope;
use hopsbridge_domain::EventId;
use prost::Message as _;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::schema::inbox;

/// An event as a handler sees it.
#[derive(Debug, Clone)]
pub struct ReceivedEvent<E> {
    /// The event's id.
    pub id: EventId,
    /// The event whose handling caused this one, if any.
    pub causation: Option<EventId>,
    /// When the change happened.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// Which delivery this is (1 for the first).
    pub delivered: i64,
    /// The payload.
    pub payload: E,
}

/// Why a handler did not handle an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// It may work later (a dependency was down): redeliver with backoff.
    #[error("retry: {0:#}")]
    Retry(anyhow::Error),
    /// It can never work (the event refers to something that cannot exist): dead letter.
    #[error("rejected: {0}")]
    Reject(String),
}

/// Parses an event's id field, rejecting the event (it can never be handled) when the field
/// is not a UUID.
///
/// # Errors
/// [`HandlerError::Reject`] naming the field and the value.
pub fn parse_uuid(field: &str, value: &str) -> Result<uuid::Uuid, HandlerError> {
    value.parse().map_err(|_| HandlerError::Reject(format!("{field} is not a UUID: {value:?}")))
}

/// Parses `value`, the field `field` of an event, as a typed id.
///
/// # Errors
/// [`HandlerError::Reject`] when it is not a UUID.
pub fn parse_id<T: From<uuid::Uuid>>(field: &str, value: &str) -> Result<T, HandlerError> {
    parse_uuid(field, value).map(T::from)
}

impl From<DbError> for HandlerError {
    fn from(e: DbError) -> Self {
        Self::Retry(e.into())
    }
}

impl From<diesel::result::Error> for HandlerError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Retry(DbError::from(e).into())
    }
}

/// An event of a batch, with the span its handling is traced in (a child of the span that
/// published it).
#[derive(Debug)]
pub struct InBatch<'a, E> {
    /// The event.
    pub event: &'a ReceivedEvent<E>,
    /// Its span: enter it (or instrument with it) for the event's own work and logs.
    pub span: tracing::Span,
}

/// Handles one event type. The effect must be written through `conn`: it is committed together
/// with the inbox record, or not at all.
pub trait Handler<E: Event>: Send + Sync + 'static {
    /// Applies the event.
    fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<E>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies a batch's newly claimed events, in order, in one transaction, with the same
    /// effect as [`Handler::handle`] on each in turn. The default does exactly that; a handler
    /// whose events can share work (one read for the whole batch) overrides it. When it fails,
    /// the batch is rolled back and each event goes to [`Handler::handle`] in a transaction of
    /// its own, so a failure is still judged event by event.
    fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[InBatch<'_, E>],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            for e in events {
                self.handle(conn, e.event).instrument(e.span.clone()).await?;
            }
            Ok(())
        }
    }
}

/// Test seams of a consumer.
#[derive(Clone, Default)]
pub struct ConsumerHooks {
    /// Runs after a transaction with effects committed and before its messages are acked.
    pub after_commit: Option<Hook>,
}

impl std::fmt::Debug for ConsumerHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHooks").field("after_commit", &self.after_commit.is_some()).finish()
    }
}

/// A durable consumer of one event type.
pub struct Consumer<E, H> {
    name: String,
    db: Database,
    bus: EventBus,
    cfg: EventsConfig,
    handler: Arc<H>,
    hooks: ConsumerHooks,
    metrics: ConsumerMetrics,
    _event: PhantomData<fn() -> E>,
}

impl<E, H> std::fmt::Debug for Consumer<E, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The consumers named by `HOPSBRIDGE_KILL_POINT=consumer_committed:<name>[,<name>…]` (`*`:
/// any), read once.
static KILL_POINT: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| kill_point_consumers(std::env::var("HOPSBRIDGE_KILL_POINT").ok().as_deref()));

/// The consumers a `HOPSBRIDGE_KILL_POINT` value names (none unless it is `consumer_committed:…`).
fn kill_point_consumers(value: Option<&str>) -> Vec<String> {
    value
        .and_then(|v| v.strip_prefix("consumer_committed:"))
        .map(|names| names.split(',').filter(|n| !n.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether the kill point is set on consumer `name`.
fn kill_point_names(name: &str) -> bool {
    !KILL_POINT.is_empty() && names_consumer(&KILL_POINT, name)
}

fn names_consumer(named: &[String], name: &str) -> bool {
    named.iter().any(|n| n == "*" || n == name)
}

/// A message taken apart: the ack handle, and the event if it decoded.
struct Delivery<E> {
    message: async_nats::jetstream::Message,
    delivered: i64,
    decoded: Result<(ReceivedEvent<E>, HashMap<String, String>), String>,
}

impl<E: Event, H: Handler<E>> Consumer<E, H> {
    /// A consumer named `name` (the durable name and the inbox key; unique per service and
    /// event type, e.g. `billing-user_created`).
    #[must_use]
    pub fn new(name: impl Into<String>, db: Database, bus: EventBus, cfg: EventsConfig, handler: H) -> Self {
        Self {
            name: name.into(),
            db,
            bus,
            cfg,
            handler: Arc::new(handler),
            hooks: ConsumerHooks::default(),
            metrics: ConsumerMetrics::default(),
            _event: PhantomData,
        }
    }

    /// Counts what it does in `metrics` (processed, failed, dead-lettered, redelivered).
    #[must_use]
    pub fn with_metrics(mut self, metrics: ConsumerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Installs test seams.
    #[must_use]
    pub fn with_hooks(mut self, hooks: ConsumerHooks) -> Self {
        self.hooks = hooks;
        self
    }

    fn consumer_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.name.clone()),
            filter_subject: self.bus.subjects().event::<E>(),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: Duration::from_secs(self.cfg.ack_wait_secs),
            max_deliver: self.cfg.max_deliver,
            backoff: self.cfg.backoff_secs.iter().map(|s| Duration::from_secs(*s)).collect(),
            max_ack_pending: 10_000,
            ..Default::default()
        }
    }

    /// Consumes until `cancel` fires; the batch in hand is finished first. Reconnects after
    /// NATS outages.
    pub async fn run(self, cancel: CancellationToken) {
        let mut failures = 0_u32;
        while !cancel.is_cancelled() {
            match self.consume(&cancel).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(consumer = %self.name, error = %e, "consumer interrupted; resubscribing");
                }
            }
            let pause = Duration::from_millis((100_u64 << failures.min(6)).min(5_000));
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn consume(&self, cancel: &CancellationToken) -> anyhow::Result<()> {
        let stream = self.bus.jetstream().get_stream(self.bus.subjects().stream(E::PRODUCER)).await?;
        let consumer = stream.get_or_create_consumer(&self.name, self.consumer_config()).await?;
        let batch = self.cfg.consumer_batch_size;
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .expires(Duration::from_secs(30))
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await?;
        let mut chunks = messages.ready_chunks(batch);
        loop {
            let chunk = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                chunk = chunks.next() => chunk,
            };
            let Some(chunk) = chunk else { return Ok(()) };
            let mut deliveries = Vec::with_capacity(chunk.len());
            let mut broken = None;
            for m in chunk {
                match m {
                    Ok(message) => deliveries.push(self.decode(message)),
                    Err(e) => broken = Some(e),
                }
            }
            if !deliveries.is_empty() {
                self.process(deliveries, cancel).await;
            }
            if let Some(e) = broken {
                return Err(e.into());
            }
        }
    }

    fn decode(&self, message: async_nats::jetstream::Message) -> Delivery<E> {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        if delivered > 1 {
            self.metrics.redelivered.inc();
        }
        let decoded = decode_envelope(message.payload.as_ref(), delivered);
        Delivery { message, delivered, decoded }
    }

    /// The consumer's name and what replays its dead letters: the same handler, through the
    /// same inbox.
    pub(crate) fn replayer(&self) -> (String, Arc<dyn Replayer>) {
        let replayer = ConsumerReplayer::<E, H> {
            name: self.name.clone(),
            handler: Arc::clone(&self.handler),
            _event: PhantomData,
        };
        (self.name.clone(), Arc::new(replayer))
    }

    async fn process(&self, deliveries: Vec<Delivery<E>>, cancel: &CancellationToken) {
        let (good, bad): (Vec<_>, Vec<_>) = deliveries.into_iter().partition(|d| d.decoded.is_ok());
        for d in bad {
            let reason = d.decoded.as_ref().err().cloned().unwrap_or_default();
            self.dead_letter(&d, &reason).await;
        }
        if good.is_empty() {
            return;
        }
        // Fast path: the whole batch in one transaction.
        let mut outage = Outage::new(Duration::from_secs(self.cfg.ack_wait_secs));
        loop {
            match self.handle_together(&good).await {
                Ok(()) => {
                    self.metrics.processed.inc_by(u64::try_from(good.len()).unwrap_or(u64::MAX));
                    self.ack_all(&good).await;
                    return;
                }
                Err(BatchFailure::Handler) => break,
                Err(BatchFailure::Database(e)) => {
                    if !self.hold(&good, &e, &mut outage, cancel).await {
                        return;
                    }
                }
            }
        }
        // Slow path: one transaction per message.
        for (i, d) in good.iter().enumerate() {
            loop {
                match self.handle_one(d).await {
                    Ok(()) => {
                        self.metrics.processed.inc();
                        self.ack(d).await;
                    }
                    Err(HandlerError::Retry(e)) if is_outage(&e) => {
                        if !self.hold(&good[i..], &e, &mut outage, cancel).await {
                            return;
                        }
                        continue;
                    }
                    Err(HandlerError::Reject(reason)) => self.dead_letter(d, &reason).await,
                    Err(HandlerError::Retry(e)) if d.delivered >= self.cfg.max_deliver - 1 => {
                        self.dead_letter(d, &format!("gave up after {} deliveries: {e:#}", d.delivered)).await;
                    }
                    Err(HandlerError::Retry(e)) => {
                        tracing::warn!(consumer = %self.name, error = format!("{e:#}"), delivered = d.delivered, "handler failed; will retry");
                        self.metrics.failed.inc();
                        let _ = d.message.ack_with(AckKind::Nak(Some(self.backoff(d.delivered)))).await;
                    }
                }
                break;
            }
        }
    }

    /// Postgres is away: keeps `held` from being redelivered (in-progress acks count no
    /// delivery) and waits with backoff. Returns false when told to stop meanwhile; the held
    /// messages are then released for redelivery.
    async fn hold(
        &self,
        held: &[Delivery<E>],
        error: &(dyn std::fmt::Display + Sync),
        outage: &mut Outage,
        cancel: &CancellationToken,
    ) -> bool {
        tracing::warn!(consumer = %self.name, error = %error, "database unavailable; holding {} messages", held.len());
        for d in held {
            let _ = d.message.ack_with(AckKind::Progress).await;
        }
        tokio::select! {
            () = cancel.cancelled() => {
                for d in held {
                    let _ = d.message.ack_with(AckKind::Nak(None)).await;
                }
                false
            }
            () = tokio::time::sleep(outage.next_pause()) => true,
        }
    }

    fn backoff(&self, delivered: i64) -> Duration {
        let steps = &self.cfg.backoff_secs;
        let i = usize::try_from(delivered.saturating_sub(1)).unwrap_or(0).min(steps.len().saturating_sub(1));
        Duration::from_secs(steps.get(i).copied().unwrap_or(1))
    }

    async fn handle_together(&self, batch: &[Delivery<E>]) -> Result<(), BatchFailure> {
        let mut conn = self.db.conn().await.map_err(BatchFailure::Database)?;
        let committed = conn
            .transaction(async |c| -> Result<Vec<EventId>, BatchFailure> {
                let mut claimed =
                    claim(c, &self.name, E::TYPE, batch.iter().filter_map(|d| d.event().map(|e| e.id))).await?;
                let mut todo = Vec::with_capacity(claimed.len());
                for d in batch {
                    let Some(event) = d.event() else { continue };
                    // `remove`: the same event twice in one batch is handled once.
                    if claimed.remove(&event.id) {
                        todo.push(InBatch { event, span: self.span_of(d) });
                    }
                }
                if !todo.is_empty() {
                    self.handler.handle_batch(c, &todo).await.map_err(|e| match e {
                        HandlerError::Retry(e) if is_outage(&e) => {
                            BatchFailure::Database(DbError::Unavailable(format!("{e:#}")))
                        }
                        _ => BatchFailure::Handler,
                    })?;
                }
                Ok(todo.iter().map(|e| e.event.id).collect())
            })
            .await?;
        self.after_commit(committed).await;
        Ok(())
    }

    async fn handle_one(&self, d: &Delivery<E>) -> Result<(), HandlerError> {
        let Some(event) = d.event() else {
            return Ok(());
        };
        let mut conn = self.db.conn().await?;
        let handled = conn
            .transaction(async |c| -> Result<bool, HandlerError> {
                let claimed = claim(c, &self.name, E::TYPE, std::iter::once(event.id)).await?;
                if claimed.is_empty() {
                    return Ok(false);
                }
                self.call_handler(c, d).await?;
                Ok(true)
            })
            .await?;
        if handled {
            self.after_commit(vec![event.id]).await;
        }
        Ok(())
    }

    async fn call_handler(&self, conn: &mut AsyncPgConnection, d: &Delivery<E>) -> Result<(), HandlerError> {
        let Ok((event, _)) = &d.decoded else {
            return Ok(());
        };
        self.handler.handle(conn, event).instrument(self.span_of(d)).await
    }

    /// The span an event is handled in: a child of the span that published it.
    fn span_of(&self, d: &Delivery<E>) -> tracing::Span {
        let Ok((event, trace_context)) = &d.decoded else {
            return tracing::Span::none();
        };
        event_span(&self.name, event, trace_context)
    }

    async fn after_commit(&self, ids: Vec<EventId>) {
        if !ids.is_empty() && kill_point_names(&self.name) {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "{{\"message\":\"kill point consumer_committed reached; aborting\",\"consumer\":\"{}\",\"events\":{}}}",
                self.name,
                ids.len()
            );
            std::process::abort();
        }
        if let Some(hook) = &self.hooks.after_commit {
            hook(ids).await;
        }
    }

    async fn ack(&self, d: &Delivery<E>) {
        if let Err(e) = d.message.ack().await {
            // The effect is committed; a redelivery will find the inbox record.
            tracing::warn!(consumer = %self.name, error = %e, "ack failed");
        }
    }

    async fn ack_all(&self, batch: &[Delivery<E>]) {
        for d in batch {
            self.ack(d).await;
        }
    }

    /// Records the message in the `dead_letters` table and publishes it to the dead-letter
    /// subject with its reason, then terminates it. If either fails, the message is left to be
    /// redelivered (a second record of it updates the first).
    async fn dead_letter(&self, d: &Delivery<E>, reason: &str) {
        let subjects = self.bus.subjects();
        let mut h = d.message.headers.clone().unwrap_or_default();
        let event_id = h.get(headers::MSG_ID).map(|v| v.as_str().to_owned()).unwrap_or_default();
        let header_type = h.get(headers::EVENT_TYPE).map(|v| v.as_str().to_owned());
        let known_id = d.event().map(|e| e.id.as_uuid()).or_else(|| event_id.parse().ok());
        let sequence = d.message.info().map(|i| i.stream_sequence).unwrap_or_default();
        let failure = Failure {
            consumer: &self.name,
            message_key: known_id.map_or_else(|| format!("stream:{sequence}"), |id| id.to_string()),
            event_id: known_id,
            event_type: header_type.or_else(|| d.event().map(|_| format!("{}V{}", E::TYPE, E::VERSION))),
            subject: d.message.subject.as_str(),
            body: d.message.payload.as_ref(),
            reason,
            deliveries: d.delivered,
        };
        let recorded = async {
            let mut conn = self.db.conn().await?;
            dead_letters::record(&mut conn, &failure).await
        }
        .await;
        if let Err(e) = recorded {
            tracing::error!(consumer = %self.name, error = %e, "dead letter could not be recorded; will retry");
            let _ = d.message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
            return;
        }
        h.insert(headers::MSG_ID, format!("{event_id}:{}", self.name).as_str());
        h.insert(headers::DEAD_LETTER_REASON, reason);
        h.insert(headers::ORIGINAL_SUBJECT, d.message.subject.as_str());
        h.insert(headers::CONSUMER, self.name.as_str());
        h.insert(headers::DELIVERED, d.delivered.to_string().as_str());
        let published = async {
            self.bus
                .jetstream()
                .publish_with_headers(subjects.dead_letter(&self.name), h, d.message.payload.clone())
                .await?
                .await?;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        match published {
            Ok(()) => {
                self.metrics.dead_lettered.inc();
                tracing::error!(consumer = %self.name, event_id, reason, "message dead-lettered");
                let _ = d.message.ack_with(AckKind::Term).await;
            }
            Err(e) => {
                tracing::error!(consumer = %self.name, error = %e, "dead letter could not be published; will retry");
                let _ = d.message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
            }
        }
    }
}

impl<E> Delivery<E> {
    fn event(&self) -> Option<&ReceivedEvent<E>> {
        self.decoded.as_ref().ok().map(|(e, _)| e)
    }
}

type Decoded<E> = Result<(ReceivedEvent<E>, HashMap<String, String>), String>;

/// Takes a message's envelope apart into the event and its trace context, or says why it is
/// not an `E`.
fn decode_envelope<E: Event>(body: &[u8], delivered: i64) -> Decoded<E> {
    let env = Envelope::decode(body).map_err(|e| format!("undecodable envelope: {e}"))?;
    if env.event_type != E::TYPE || env.schema_version != E::VERSION {
        return Err(format!("expected {}V{}, got {}V{}", E::TYPE, E::VERSION, env.event_type, env.schema_version));
    }
    let id: EventId = env.event_id.parse().map_err(|e| format!("bad event id: {e}"))?;
    let payload = E::decode(env.payload.as_slice()).map_err(|e| format!("undecodable payload: {e}"))?;
    let causation = env.causation_id.parse().ok();
    let occurred_at = chrono::DateTime::from_timestamp_micros(env.occurred_at_unix_micros).unwrap_or_default();
    Ok((ReceivedEvent { id, causation, occurred_at, delivered, payload }, env.trace_context.into_iter().collect()))
}

/// The span an event is handled in: a child of the span that published it.
fn event_span<E: Event>(
    consumer: &str,
    event: &ReceivedEvent<E>,
    trace_context: &HashMap<String, String>,
) -> tracing::Span {
    let span = tracing::info_span!("handle_event", consumer = %consumer, event_id = %event.id, event_type = E::TYPE, delivered = event.delivered);
    telemetry::set_remote_parent(&span, trace_context);
    span
}

/// Replays a consumer's dead letters through its handler and inbox.
struct ConsumerReplayer<E, H> {
    name: String,
    handler: Arc<H>,
    _event: PhantomData<fn() -> E>,
}

impl<E: Event, H: Handler<E>> Replayer for ConsumerReplayer<E, H> {
    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        body: &'a [u8],
        delivered: i64,
    ) -> BoxFuture<'a, Result<bool, HandlerError>> {
        Box::pin(async move {
            let (event, trace_context) = decode_envelope::<E>(body, delivered).map_err(HandlerError::Reject)?;
            if claim(conn, &self.name, E::TYPE, std::iter::once(event.id)).await?.is_empty() {
                return Ok(false);
            }
            let span = event_span(&self.name, &event, &trace_context);
            self.handler.handle(conn, &event).instrument(span).await?;
            Ok(true)
        })
    }
}

/// The growing pause while Postgres is away: 100 ms doubling to 5 s, and never longer than
/// half of `ack_wait`, so the in-progress acks arrive before JetStream would redeliver.
struct Outage {
    pauses: u32,
    ceiling: Duration,
}

impl Outage {
    fn new(ack_wait: Duration) -> Self {
        Self { pauses: 0, ceiling: (ack_wait / 2).min(Duration::from_secs(5)) }
    }

    fn next_pause(&mut self) -> Duration {
        self.pauses += 1;
        Duration::from_millis(50_u64 << self.pauses.min(7)).min(self.ceiling)
    }
}

/// True when a handler failed because Postgres went away (not because of the event).
pub(crate) fn is_outage(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| matches!(cause.downcast_ref::<DbError>(), Some(DbError::Unavailable(_))))
}

enum BatchFailure {
    Handler,
    Database(DbError),
}

impl From<diesel::result::Error> for BatchFailure {
    fn from(e: diesel::result::Error) -> Self {
        Self::Database(e.into())
    }
}

/// Records `ids` as handled by `consumer`; returns those that were not recorded before.
async fn claim(
    conn: &mut AsyncPgConnection,
    consumer: &str,
    event_type: &str,
    ids: impl Iterator<Item = EventId>,
) -> Result<HashSet<EventId>, diesel::result::Error> {
    let rows: Vec<_> = ids
        .map(|id| (inbox::consumer.eq(consumer), inbox::event_id.eq(id.as_uuid()), inbox::event_type.eq(event_type)))
        .collect();
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let claimed: Vec<uuid::Uuid> = diesel::insert_into(inbox::table)
        .values(rows)
        .on_conflict(on_constraint("inbox_pkey"))
        .do_nothing()
        .returning(inbox::event_id)
        .get_results(conn)
        .await?;
    Ok(claimed.into_iter().map(EventId::from).collect())
}

/// Deletes inbox records older than `retention`, except those of events the same consumer has
/// a dead letter of: a dead letter can be replayed at any age, and its event's record is what
/// makes a replay after the event was applied apply nothing.
///
/// # Errors
/// When Postgres fails.
pub async fn prune_inbox(db: &Database, retention: Duration) -> Result<usize, DbError> {
    use crate::schema::dead_letters;
    let mut conn = db.conn().await?;
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
    let dead_lettered = dead_letters::table
        .filter(dead_letters::consumer.eq(inbox::consumer))
        .filter(dead_letters::event_id.eq(inbox::event_id.nullable()));
    Ok(diesel::delete(
        inbox::table
            .filter(inbox::processed_at.lt(cutoff))
            .filter(diesel::dsl::not(diesel::dsl::exists(dead_lettered))),
    )
    .execute(&mut conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::{kill_point_consumers, names_consumer};

    #[test]
    fn the_kill_point_names_one_consumer_several_or_every_one() {
        let one = kill_point_consumers(Some("consumer_committed:billing-usage_recorded"));
        assert!(names_consumer(&one, "billing-usage_recorded"));
        assert!(!names_consumer(&one, "billing-storage_recorded"));
        let two = kill_point_consumers(Some("consumer_committed:billing-usage_recorded,billing-storage_recorded"));
        assert!(names_consumer(&two, "billing-usage_recorded") && names_consumer(&two, "billing-storage_recorded"));
        assert!(!names_consumer(&two, "billing-user_created"));
        assert!(names_consumer(&kill_point_consumers(Some("consumer_committed:*")), "team-user_created"));
        for unset in [None, Some(""), Some("billing-usage_recorded"), Some("consumer_committed:")] {
            assert!(kill_point_consumers(unset).is_empty(), "{unset:?}");
        }
    }
}
