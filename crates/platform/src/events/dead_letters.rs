//! Dead letters kept in each service's `dead_letters` table, and their replay.
//!
//! A consumer that gives up on a message (rejected, undecodable, or out of deliveries) writes
//! it here with its reason before it terminates it, and also publishes it to the dead-letter
//! stream. The row outlives the stream's max age and is what admins see and replay.
//!
//! A replay hands the stored message to the consumer's own handler through the inbox, in one
//! transaction with the row's outcome: an event already in the inbox (replayed before, or
//! arrived again and handled meanwhile) is `already_applied` and changes nothing. A replay that
//! fails rolls back and leaves the row unresolved with the new reason.

use super::consumer::{Handler, HandlerError, is_outage};
use crate::db::{Database, DbError};
use crate::schema::dead_letters;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use hopsbridge_contracts::Event;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// A dead letter as admins see it (the message body left out).
#[derive(Clone, Debug, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = dead_letters)]
pub struct DeadLetter {
    /// The dead letter's id.
    pub id: uuid::Uuid,
    /// The consumer that gave up, e.g. `billing-user_created`.
    pub consumer: String,
    /// The event's id; absent when the message was not an event.
    pub event_id: Option<uuid::Uuid>,
    /// The event type with its version, e.g. `UserCreatedV1`, when the message said.
    pub event_type: Option<String>,
    /// The subject it was published on.
    pub subject: String,
    /// Why it was given up on, or why its last replay failed.
    pub reason: String,
    /// Deliveries before the consumer gave up.
    pub deliveries: i64,
    /// When it was first dead-lettered.
    pub first_failed_at: DateTime<Utc>,
    /// When it last failed (dead-lettered again, or a replay failed).
    pub last_failed_at: DateTime<Utc>,
    /// Replays tried.
    pub replays: i32,
    /// The outcome that resolved it (`applied`, `already_applied`), or `failed` after a failed
    /// replay; absent before any replay.
    pub replay_outcome: Option<String>,
    /// When a replay resolved it; absent while it waits.
    pub replayed_at: Option<DateTime<Utc>>,
}

/// What one replay did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// The handler applied the event.
    Applied,
    /// The inbox already held the event: nothing was applied again.
    AlreadyApplied,
    /// The handler failed again; the dead letter waits with the new reason.
    Failed,
}

impl ReplayOutcome {
    /// The name stored in `dead_letters.replay_outcome`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::AlreadyApplied => "already_applied",
            Self::Failed => "failed",
        }
    }
}

/// Which dead letters to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    /// Not yet resolved by a replay (never replayed, or its replays failed).
    Waiting,
    /// Resolved by a replay.
    Replayed,
}

/// What a consumer writes when it gives up on a message.
#[derive(Debug)]
pub(crate) struct Failure<'a> {
    pub consumer: &'a str,
    pub message_key: String,
    pub event_id: Option<uuid::Uuid>,
    pub event_type: Option<String>,
    pub subject: &'a str,
    pub body: &'a [u8],
    pub reason: &'a str,
    pub deliveries: i64,
}

/// Records a message `consumer` gave up on; the same message again updates its row (reason,
/// deliveries, last failure) and makes it wait again.
pub(crate) async fn record(conn: &mut AsyncPgConnection, f: &Failure<'_>) -> Result<(), DbError> {
    diesel::insert_into(dead_letters::table)
        .values((
            dead_letters::id.eq(uuid::Uuid::now_v7()),
            dead_letters::consumer.eq(f.consumer),
            dead_letters::message_key.eq(&f.message_key),
            dead_letters::event_id.eq(f.event_id),
            dead_letters::event_type.eq(&f.event_type),
            dead_letters::subject.eq(f.subject),
            dead_letters::body.eq(f.body),
            dead_letters::reason.eq(f.reason),
            dead_letters::deliveries.eq(f.deliveries),
        ))
        .on_conflict((dead_letters::consumer, dead_letters::message_key))
        .do_update()
        .set((
            dead_letters::body.eq(excluded(dead_letters::body)),
            dead_letters::reason.eq(excluded(dead_letters::reason)),
            dead_letters::deliveries.eq(excluded(dead_letters::deliveries)),
            dead_letters::last_failed_at.eq(diesel::dsl::now),
            dead_letters::replayed_at.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// A page of dead letters, newest failure first, optionally of one event type and status.
///
/// # Errors
/// When Postgres fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    event_type: Option<&str>,
    status: Option<DeadLetterStatus>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<DeadLetter>, i64), DbError> {
    let filtered = || {
        let mut query = dead_letters::table.into_boxed();
        if let Some(t) = event_type {
            query = query.filter(dead_letters::event_type.eq(t.to_owned()));
        }
        match status {
            None => query,
            Some(DeadLetterStatus::Waiting) => query.filter(dead_letters::replayed_at.is_null()),
            Some(DeadLetterStatus::Replayed) => query.filter(dead_letters::replayed_at.is_not_null()),
        }
    };
    let total = filtered().count().get_result(conn).await?;
    let items = filtered()
        .order((dead_letters::last_failed_at.desc(), dead_letters::id.desc()))
        .limit(limit)
        .offset(offset)
        .select(DeadLetter::as_select())
        .load(conn)
        .await?;
    Ok((items, total))
}

/// One dead letter.
///
/// # Errors
/// [`DbError::NotFound`].
pub async fn find(conn: &mut AsyncPgConnection, id: uuid::Uuid) -> Result<DeadLetter, DbError> {
    Ok(dead_letters::table.find(id).select(DeadLetter::as_select()).first(conn).await?)
}

/// Hands a stored message to a consumer's handler through its inbox.
pub trait Replayer: Send + Sync {
    /// Decodes `body`, claims the event in the inbox and, when newly claimed, applies it with
    /// the handler, all through `conn` (the caller's transaction). Returns whether it was
    /// applied (false: the inbox already held it).
    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        body: &'a [u8],
        delivered: i64,
    ) -> BoxFuture<'a, Result<bool, HandlerError>>;
}

/// The replayers of a service's consumers, by consumer name. Cloning shares the registry.
#[derive(Clone, Default)]
pub struct Replayers(Arc<RwLock<HashMap<String, Arc<dyn Replayer>>>>);

impl std::fmt::Debug for Replayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.0.read().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        f.debug_tuple("Replayers").field(&names).finish()
    }
}

impl Replayers {
    /// Registers `consumer`'s handler under its name, so its dead letters can be replayed.
    pub fn register<E: Event, H: Handler<E>>(&self, consumer: &super::Consumer<E, H>) {
        let (name, replayer) = consumer.replayer();
        self.0.write().unwrap_or_else(PoisonError::into_inner).insert(name, replayer);
    }

    fn get(&self, consumer: &str) -> Option<Arc<dyn Replayer>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).get(consumer).cloned()
    }
}

/// Why a replay could not be tried.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No dead letter has the id.
    #[error("no such dead letter")]
    NotFound,
    /// The consumer that gave up does not run in this service any more.
    #[error("consumer {0} is not running in this service")]
    ConsumerNotRunning(String),
    /// Postgres failed; nothing changed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for ReplayError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Replays dead letter `id` (see the module's description) and returns it as it now is, with
/// what this replay did.
///
/// # Errors
/// [`ReplayError`]; Postgres unavailable during the handler is [`DbError::Unavailable`], with
/// nothing changed.
pub async fn replay(
    db: &Database,
    replayers: &Replayers,
    id: uuid::Uuid,
) -> Result<(DeadLetter, ReplayOutcome), ReplayError> {
    let mut conn = db.conn().await?;
    let letter = find(&mut conn, id).await.map_err(|e| match e {
        DbError::NotFound => ReplayError::NotFound,
        other => other.into(),
    })?;
    let replayer =
        replayers.get(&letter.consumer).ok_or_else(|| ReplayError::ConsumerNotRunning(letter.consumer.clone()))?;
    let done = conn
        .transaction(async |c| -> Result<ReplayOutcome, HandlerError> {
            // Locked: two replays of one dead letter take turns.
            let (body, deliveries, replayed_at): (Vec<u8>, i64, Option<DateTime<Utc>>) = dead_letters::table
                .find(id)
                .select((dead_letters::body, dead_letters::deliveries, dead_letters::replayed_at))
                .for_update()
                .first(c)
                .await?;
            let outcome = if replayer.apply(c, &body, deliveries + 1).await? {
                ReplayOutcome::Applied
            } else {
                ReplayOutcome::AlreadyApplied
            };
            let row = dead_letters::table.find(id);
            if replayed_at.is_none() {
                diesel::update(row)
                    .set((
                        dead_letters::replays.eq(dead_letters::replays + 1),
                        dead_letters::replay_outcome.eq(outcome.as_str()),
                        dead_letters::replayed_at.eq(diesel::dsl::now),
                    ))
                    .execute(c)
                    .await?;
            } else {
                // Resolved before: keep what resolved it.
                diesel::update(row).set(dead_letters::replays.eq(dead_letters::replays + 1)).execute(c).await?;
            }
            Ok(outcome)
        })
        .await;
    let outcome = match done {
        Ok(outcome) => outcome,
        Err(HandlerError::Retry(e)) if is_outage(&e) => {
            return Err(DbError::Unavailable(format!("{e:#}")).into());
        }
        Err(e) => {
            let reason = match e {
                HandlerError::Reject(reason) => reason,
                HandlerError::Retry(e) => format!("replay failed: {e:#}"),
            };
            tracing::warn!(dead_letter = %id, consumer = %letter.consumer, reason, "replay failed");
            diesel::update(dead_letters::table.find(id))
                .set((
                    dead_letters::replays.eq(dead_letters::replays + 1),
                    dead_letters::replay_outcome.eq(ReplayOutcome::Failed.as_str()),
                    dead_letters::reason.eq(&reason),
                    dead_letters::last_failed_at.eq(diesel::dsl::now),
                ))
                .filter(dead_letters::replayed_at.is_null())
                .execute(&mut conn)
                .await?;
            ReplayOutcome::Failed
        }
    };
    Ok((find(&mut conn, id).await?, outcome))
}

/// What a bulk replay did.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ReplaySummary {
    /// Dead letters the handler applied.
    pub applied: u32,
    /// Dead letters whose event the inbox already held.
    pub already_applied: u32,
    /// Dead letters that failed again, by id (they wait with the new reason).
    pub failed: Vec<uuid::Uuid>,
    /// Dead letters of a consumer this service no longer runs, left waiting.
    pub consumer_not_running: Vec<uuid::Uuid>,
    /// Waiting dead letters left for another call (more than `limit` matched).
    pub remaining: i64,
}

/// Replays up to `limit` waiting dead letters, oldest first, optionally of one event type, each
/// in its own transaction as [`replay`] does.
///
/// # Errors
/// When Postgres fails; those replayed before stay replayed.
pub async fn replay_waiting(
    db: &Database,
    replayers: &Replayers,
    event_type: Option<&str>,
    limit: i64,
) -> Result<ReplaySummary, DbError> {
    let waiting = || {
        let mut q = dead_letters::table.filter(dead_letters::replayed_at.is_null()).into_boxed();
        if let Some(t) = event_type {
            q = q.filter(dead_letters::event_type.eq(t.to_owned()));
        }
        q
    };
    let ids: Vec<uuid::Uuid> = {
        let mut conn = db.conn().await?;
        waiting()
            .order((dead_letters::first_failed_at.asc(), dead_letters::id.asc()))
            .limit(limit)
            .select(dead_letters::id)
            .load(&mut conn)
            .await?
    };
    let mut summary = ReplaySummary::default();
    for id in ids {
        match replay(db, replayers, id).await {
            Ok((_, ReplayOutcome::Applied)) => summary.applied += 1,
            Ok((_, ReplayOutcome::AlreadyApplied)) => summary.already_applied += 1,
            Ok((_, ReplayOutcome::Failed)) => summary.failed.push(id),
            Err(ReplayError::ConsumerNotRunning(_)) => summary.consumer_not_running.push(id),
            // Deleted meanwhile: nothing to replay.
            Err(ReplayError::NotFound) => {}
            Err(ReplayError::Db(e)) => return Err(e),
        }
    }
    let mut conn = db.conn().await?;
    let left: i64 = waiting().count().get_result(&mut conn).await?;
    // Those tried that still wait are not left for another call.
    let tried = i64::try_from(summary.failed.len() + summary.consumer_not_running.len()).unwrap_or(i64::MAX);
    summary.remaining = (left - tried).max(0);
    Ok(summary)
}

/// Deletes this service's dead letters that carry a person's personal data once it is erased
/// (decision 0068): the person's own `UserCreated` event (found by the user id in its body; it
/// holds their email and name) and any message whose body holds one of `addresses` (compared
/// without case; an undecodable message among them). They are deleted, not kept redacted:
/// replaying such an event would write the erased data back (decision 0058), and a row with
/// its body gone could only fail. Dead letters that merely name the person's id (usage,
/// status changes) stay, as the ids do everywhere. Returns how many went; doing it again
/// deletes nothing more.
///
/// # Errors
/// When Postgres fails.
pub async fn erase_carrying(
    conn: &mut AsyncPgConnection,
    user_id: uuid::Uuid,
    addresses: &[&str],
) -> Result<usize, DbError> {
    use diesel::sql_types::{Array, Text};
    // `escape` encoding keeps ASCII as it is and spells other bytes as octal escapes, the same
    // way for the body and the address, so the address is found in the raw protobuf bytes.
    let addresses: Vec<String> = addresses.iter().map(|a| a.trim().to_lowercase()).filter(|a| !a.is_empty()).collect();
    let gone: Vec<DeletedLetter> = diesel::sql_query(
        "DELETE FROM dead_letters
          WHERE (event_type LIKE 'UserCreated%' AND position(convert_to($1, 'UTF8') IN body) > 0)
             OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS a
                         WHERE strpos(lower(encode(body, 'escape')), lower(encode(convert_to(a, 'UTF8'), 'escape'))) > 0)
          RETURNING id, consumer",
    )
    .bind::<Text, _>(user_id.to_string())
    .bind::<Array<Text>, _>(&addresses)
    .load(conn)
    .await?;
    for letter in &gone {
        tracing::warn!(
            dead_letter = %letter.id, consumer = %letter.consumer,
            "dead letter deleted: it carried the personal data of a person now erased"
        );
    }
    Ok(gone.len())
}

/// A dead letter [`erase_carrying`] deleted.
#[derive(QueryableByName)]
struct DeletedLetter {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    consumer: String,
}
