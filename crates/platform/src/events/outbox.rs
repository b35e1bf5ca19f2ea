//! Writing events into the outbox, inside the caller's transaction.

use crate::db::DbError;
use crate::telemetry;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::Event;
use hopsbridge_contracts::events::Envelope;
use hopsbridge_domain::EventId;
use prost::Message as _;

use crate::schema::outbox;

/// The NOTIFY channel a producer's relay listens on.
#[must_use]
pub fn channel(producer: hopsbridge_contracts::Service) -> String {
    format!("hopsbridge_outbox_{}", producer.name())
}

/// Writes `event` to the outbox. Call it inside the transaction that makes the change the event
/// describes: the event is then published if and only if the change commits. The current
/// span's trace context travels with it. `causation` is the event being handled, if any. The
/// envelope says it occurred now on the machine's clock; a service on a calendar clock uses
/// [`enqueue_at`].
///
/// # Errors
/// A [`DbError`] from the insert.
pub async fn enqueue<E: Event>(
    conn: &mut AsyncPgConnection,
    event: &E,
    causation: Option<EventId>,
) -> Result<EventId, DbError> {
    enqueue_at(conn, event, causation, chrono::Utc::now()).await
}

/// [`enqueue`], the envelope saying the event occurred at `occurred_at` (the service's calendar
/// clock's now: consumers read it as when the change happened, e.g. since when a cluster is
/// measured).
///
/// # Errors
/// A [`DbError`] from the insert.
pub async fn enqueue_at<E: Event>(
    conn: &mut AsyncPgConnection,
    event: &E,
    causation: Option<EventId>,
    occurred_at: chrono::DateTime<chrono::Utc>,
) -> Result<EventId, DbError> {
    let ids = enqueue_all_at(conn, std::slice::from_ref(event), causation, occurred_at).await?;
    ids.into_iter().next().ok_or(DbError::NotFound)
}

/// Writes several events of one type to the outbox in one statement, with the same guarantees
/// as [`enqueue`]. Returns their ids in order.
///
/// # Errors
/// A [`DbError`] from the insert.
pub async fn enqueue_all<E: Event>(
    conn: &mut AsyncPgConnection,
    events: &[E],
    causation: Option<EventId>,
) -> Result<Vec<EventId>, DbError> {
    enqueue_all_at(conn, events, causation, chrono::Utc::now()).await
}

/// [`enqueue_all`] at `occurred_at` (a metering window's samples, say), as [`enqueue_at`].
///
/// # Errors
/// A [`DbError`] from the insert.
#[tracing::instrument(skip_all, err, fields(event_type = E::TYPE, count = events.len()))]
pub async fn enqueue_all_at<E: Event>(
    conn: &mut AsyncPgConnection,
    events: &[E],
    causation: Option<EventId>,
    occurred_at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<EventId>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let trace_context = telemetry::trace_context_of(&tracing::Span::current());
    let trace_json = serde_json::to_value(&trace_context).unwrap_or_default();
    let occurred_at = occurred_at.timestamp_micros();
    let subject = E::subject_suffix();
    let version = i32::try_from(E::VERSION).unwrap_or(i32::MAX);
    let mut ids = Vec::with_capacity(events.len());
    let rows: Vec<_> = events
        .iter()
        .map(|event| {
            let id = EventId::new();
            ids.push(id);
            let envelope = Envelope {
                event_id: id.to_string(),
                event_type: E::TYPE.to_owned(),
                schema_version: E::VERSION,
                occurred_at_unix_micros: occurred_at,
                causation_id: causation.map(|c| c.to_string()).unwrap_or_default(),
                producer: E::PRODUCER.name().to_owned(),
                trace_context: trace_context.clone().into_iter().collect(),
                payload: event.encode_to_vec(),
            };
            (
                outbox::id.eq(id.as_uuid()),
                outbox::subject.eq(subject.clone()),
                outbox::event_type.eq(E::TYPE),
                outbox::schema_version.eq(version),
                outbox::envelope.eq(envelope.encode_to_vec()),
                outbox::trace_context.eq(trace_json.clone()),
            )
        })
        .collect();
    // Both statements go to Postgres together (pipelined). The notification is delivered at
    // commit, and only if the transaction commits; it wakes the relay.
    let (mut inserting, mut notifying): (&AsyncPgConnection, &AsyncPgConnection) = (conn, conn);
    let insert = diesel::insert_into(outbox::table).values(rows).execute(&mut inserting);
    let channel = channel(E::PRODUCER);
    let notify = diesel::sql_query("SELECT pg_notify($1, '')")
        .bind::<diesel::sql_types::Text, _>(&channel)
        .execute(&mut notifying);
    futures::try_join!(insert, notify)?;
    Ok(ids)
}
