//! A deleted account's personal data erased once its retention period has passed (decision
//! 0058): `deletion.retention_days` after the deletion (calendar time, [`Clock`]), the
//! [`Eraser`] replaces the person's email, name and Auth0 subject with markers derived from
//! the user id alone, sets `erased_at` and writes `UserErasedV1` to the outbox in the same
//! transaction, so every service erases its own copies. The user id, status, `deleted_at` and
//! `erased_at` stay, so the account stays deleted and its usage and invoices stay attributable.
//!
//! Replicas share the work safely: each pass takes the due accounts with `FOR UPDATE SKIP
//! LOCKED`, and an account with `erased_at` set is never due again, so each person is erased
//! and announced exactly once.
//!
//! A person who signs up again with the same Auth0 subject during the retention period is
//! refused (`account_deleted`), as before; after the erasure nothing links the subject to the
//! old account (its subject is gone, no hash of it is kept), so they get a new account with a new
//! user id and nothing of the old one.

use crate::schema::users;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::UserErasedV1;
use hopsbridge_domain::{AccountStatus, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::events::enqueue_at;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Accounts erased per transaction.
const BATCH: i64 = 100;

/// The email an erased account keeps: unique (the user id), never deliverable (`.invalid` is
/// reserved, RFC 2606) and still a well-formed address for the code that reads it.
#[must_use]
pub fn erased_email(id: UserId) -> String {
    format!("erased+{id}@erased.invalid")
}

/// The Auth0 subject an erased account keeps: `erased|<user id>`, which no Auth0 connection
/// issues, so no sign-in ever finds the account again.
#[must_use]
pub fn erased_subject(id: UserId) -> String {
    format!("erased|{id}")
}

/// The scheduled job that erases deleted accounts whose retention has passed.
#[derive(Clone, Debug)]
pub struct Eraser {
    /// identity's database.
    pub db: Database,
    /// Calendar time: when a retention period has passed.
    pub clock: Clock,
    /// How long after the deletion the data is kept.
    pub retention: TimeDelta,
    /// Time between passes (real time).
    pub every: Duration,
}

impl Eraser {
    /// One pass: every deleted account whose retention has passed (and that no other replica
    /// is erasing) erased, each with its `UserErasedV1`. Returns how many it erased.
    ///
    /// # Errors
    /// When Postgres fails (what was committed before stays erased).
    pub async fn pass(&self) -> Result<usize, DbError> {
        let mut erased = 0;
        loop {
            let now = self.clock.now();
            let cutoff = now - self.retention;
            let n = self.db.transaction(move |c| Box::pin(async move { erase_due(c, cutoff, now).await })).await?;
            erased += n;
            if i64::try_from(n).unwrap_or(i64::MAX) < BATCH {
                return Ok(erased);
            }
        }
    }

    /// Runs a pass every `every` until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let mut every = tokio::time::interval(self.every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            match self.pass().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(erased = n, "personal data of deleted accounts erased"),
                Err(e) => tracing::warn!(error = %e, "erasure pass failed"),
            }
        }
    }
}

/// Erases up to [`BATCH`] accounts deleted at or before `cutoff` and not erased yet, skipping
/// those another transaction holds, at calendar time `now`. Returns how many.
///
/// # Errors
/// When Postgres fails.
pub async fn erase_due(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, DbError> {
    let due: Vec<(UserId, Option<DateTime<Utc>>)> = users::table
        .filter(users::status.eq(AccountStatus::Deleted))
        .filter(users::erased_at.is_null())
        .filter(users::deleted_at.le(cutoff))
        .order((users::deleted_at, users::id))
        .select((users::id, users::deleted_at))
        .limit(BATCH)
        .for_update()
        .skip_locked()
        .load(conn)
        .await?;
    for (id, deleted_at) in &due {
        let id = *id;
        diesel::update(users::table.find(id))
            .set((
                users::email.eq(erased_email(id)),
                users::name.eq(""),
                users::auth_subject.eq(erased_subject(id)),
                users::erased_at.eq(now),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        let event = UserErasedV1 {
            user_id: id.to_string(),
            deleted_at_unix_seconds: deleted_at.unwrap_or(cutoff).timestamp(),
            erased_at_unix_seconds: now.timestamp(),
        };
        enqueue_at(conn, &event, None, now).await?;
        tracing::info!(user = %id, "personal data erased");
    }
    Ok(due.len())
}
