//! billing's store of checkout follow-ups: the Stripe work a completed Checkout Session left
//! (`checkout_follow_ups`), recorded by the webhook and done by the follow-up task
//! ([`crate::webhooks::run_follow_ups`]).
//!
//! Three statements are SQL text: the record is inserted only if an account has the customer
//! (an `INSERT … SELECT … WHERE EXISTS`, which diesel's insert cannot say), and due times are
//! Postgres' `now()` plus an interval on a `timestamptz` column (diesel's `now` is a
//! `timestamp` and has no addition for one), so every replica keeps time by the database.

use crate::schema::checkout_follow_ups;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Interval, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;

/// One recorded follow-up, as the task takes it.
#[derive(Debug, Clone, QueryableByName)]
pub struct FollowUp {
    /// The `checkout.session.completed` event (`evt_…`) that asked for it; also its
    /// idempotency key.
    #[diesel(sql_type = Text)]
    pub event_id: String,
    /// `cus_…`.
    #[diesel(sql_type = Text)]
    pub stripe_customer_id: String,
    /// `seti_…`: the SetupIntent whose card the session saved.
    #[diesel(sql_type = Text)]
    pub setup_intent_id: String,
    /// When the event happened (Unix seconds): the card counts as attached from then.
    #[diesel(sql_type = BigInt)]
    pub event_created: i64,
    /// How many times it was taken, this time included.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub attempts: i32,
}

fn interval(d: Duration) -> PgInterval {
    PgInterval::from_microseconds(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Records the follow-up of event `event_id` for `customer`'s SetupIntent `setup_intent`,
/// unless no account has the customer (no Stripe write on anyone else's behalf) or it is
/// recorded already.
///
/// # Errors
/// When Postgres fails.
pub async fn record(
    mut conn: &AsyncPgConnection,
    event_id: &str,
    customer: &str,
    setup_intent: &str,
    event_created: i64,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO checkout_follow_ups (event_id, stripe_customer_id, setup_intent_id, event_created) \
         SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM accounts WHERE stripe_customer_id = $2) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind::<Text, _>(event_id)
    .bind::<Text, _>(customer)
    .bind::<Text, _>(setup_intent)
    .bind::<BigInt, _>(event_created)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Takes up to `limit` due follow-ups that no other task holds, counting the attempt and
/// leaving them to the caller for `lease` (then another task may take them again).
///
/// # Errors
/// When Postgres fails.
pub async fn take(conn: &mut AsyncPgConnection, limit: i64, lease: Duration) -> QueryResult<Vec<FollowUp>> {
    diesel::sql_query(
        "UPDATE checkout_follow_ups SET attempts = attempts + 1, next_attempt_at = now() + $2 \
         WHERE event_id IN (SELECT event_id FROM checkout_follow_ups \
           WHERE done_at IS NULL AND next_attempt_at <= now() \
           ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING event_id, stripe_customer_id, setup_intent_id, event_created, attempts",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Interval, _>(interval(lease))
    .load(conn)
    .await
}

/// Marks the follow-up of `event_id` done.
///
/// # Errors
/// When Postgres fails.
pub async fn finish(conn: &mut AsyncPgConnection, event_id: &str) -> QueryResult<()> {
    diesel::update(checkout_follow_ups::table.find(event_id))
        .set((checkout_follow_ups::done_at.eq(diesel::dsl::now), checkout_follow_ups::last_error.eq(None::<String>)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records why the follow-up of `event_id` failed, and makes it due again after `delay`.
///
/// # Errors
/// When Postgres fails.
pub async fn retry_later(
    conn: &mut AsyncPgConnection,
    event_id: &str,
    error: &str,
    delay: Duration,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE checkout_follow_ups SET last_error = $2, next_attempt_at = now() + $3 WHERE event_id = $1",
    )
    .bind::<Text, _>(event_id)
    .bind::<Text, _>(error)
    .bind::<Interval, _>(interval(delay))
    .execute(conn)
    .await?;
    Ok(())
}
