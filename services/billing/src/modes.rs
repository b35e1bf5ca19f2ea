//! Billing modes with their history (`billing_modes`): the mode in force for a window is the
//! latest change effective at or before its start (none: postpaid). An admin's change takes
//! effect at the start of the next window and is announced as `BillingModeChangedV1`, so one
//! window is never billed two ways.

use crate::schema::{accounts, billing_modes};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::BillingModeChangedV1;
use hopsbridge_domain::{BillingMode, OwnerId};
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

/// The mode of an account with no change recorded.
pub const DEFAULT_MODE: BillingMode = BillingMode::Postpaid;

/// The changes of some owners, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History(HashMap<OwnerId, Vec<(DateTime<Utc>, BillingMode)>>);

impl History {
    /// The mode of `owner` in force at `at`.
    #[must_use]
    pub fn at(&self, owner: OwnerId, at: DateTime<Utc>) -> BillingMode {
        self.0
            .get(&owner)
            .and_then(|changes| changes.iter().rev().find(|(from, _)| *from <= at))
            .map_or(DEFAULT_MODE, |(_, mode)| *mode)
    }
}

/// The changes of `owners`.
///
/// # Errors
/// When Postgres fails.
pub async fn history(conn: &mut AsyncPgConnection, owners: &[OwnerId]) -> QueryResult<History> {
    let rows: Vec<(OwnerId, DateTime<Utc>, BillingMode)> = billing_modes::table
        .filter(billing_modes::owner_id.eq_any(owners))
        .order((billing_modes::owner_id, billing_modes::effective_from))
        .select((billing_modes::owner_id, billing_modes::effective_from, billing_modes::mode))
        .load(conn)
        .await?;
    let mut history = History::default();
    for (owner, from, mode) in rows {
        history.0.entry(owner).or_default().push((from, mode));
    }
    Ok(history)
}

/// The start of the first window after `now`.
#[must_use]
pub fn next_window_start(now: DateTime<Utc>, window_secs: u32) -> DateTime<Utc> {
    let w = i64::from(window_secs.max(1));
    let next = now.timestamp().div_euclid(w) * w + w;
    DateTime::from_timestamp(next, 0).unwrap_or(now)
}

/// A change as recorded and announced.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModeChange {
    /// The owner.
    pub owner_id: OwnerId,
    /// The mode in force before the change.
    pub previous_mode: BillingMode,
    /// The new mode.
    pub mode: BillingMode,
    /// The start of the first window it applies to.
    pub effective_from: DateTime<Utc>,
}

/// Sets `owner`'s mode from `effective_from` on (a change already scheduled for that instant
/// is replaced), records it on the account, and writes `BillingModeChangedV1` to the outbox,
/// all in the caller's transaction. `None` when the mode in force then is already `mode`.
///
/// # Errors
/// When Postgres fails.
pub async fn change(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    mode: BillingMode,
    effective_from: DateTime<Utc>,
    by: Option<Uuid>,
) -> Result<Option<ModeChange>, hopsbridge_platform::db::DbError> {
    let before: Option<BillingMode> = billing_modes::table
        .filter(billing_modes::owner_id.eq(owner))
        .filter(billing_modes::effective_from.lt(effective_from))
        .order(billing_modes::effective_from.desc())
        .select(billing_modes::mode)
        .first(conn)
        .await
        .optional()?;
    let previous = before.unwrap_or(DEFAULT_MODE);
    let scheduled: Option<BillingMode> =
        billing_modes::table.find((owner, effective_from)).select(billing_modes::mode).first(conn).await.optional()?;
    if scheduled.unwrap_or(previous) == mode {
        return Ok(None);
    }
    diesel::insert_into(billing_modes::table)
        .values((
            billing_modes::owner_id.eq(owner),
            billing_modes::effective_from.eq(effective_from),
            billing_modes::mode.eq(mode),
            billing_modes::changed_by.eq(by),
        ))
        .on_conflict((billing_modes::owner_id, billing_modes::effective_from))
        .do_update()
        .set((billing_modes::mode.eq(mode), billing_modes::changed_by.eq(by)))
        .execute(conn)
        .await?;
    diesel::update(accounts::table.find(owner.as_user()))
        .set((accounts::billing_mode.eq(mode), accounts::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    let event = BillingModeChangedV1 {
        user_id: owner.to_string(),
        previous_mode: previous.as_str().to_owned(),
        mode: mode.as_str().to_owned(),
        effective_from_unix_seconds: effective_from.timestamp(),
    };
    hopsbridge_platform::events::enqueue(conn, &event, None).await?;
    Ok(Some(ModeChange { owner_id: owner, previous_mode: previous, mode, effective_from }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_change_applies_from_the_next_window_start() {
        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        assert_eq!(next_window_start(at(0), 900), at(900));
        assert_eq!(next_window_start(at(899), 900), at(900));
        assert_eq!(next_window_start(at(900), 900), at(1800));
        let owner = OwnerId::new();
        let mut history = History::default();
        history.0.insert(owner, vec![(at(900), BillingMode::Prepaid), (at(1800), BillingMode::Free)]);
        assert_eq!(history.at(owner, at(899)), BillingMode::Postpaid);
        assert_eq!(history.at(owner, at(900)), BillingMode::Prepaid);
        assert_eq!(history.at(owner, at(1800)), BillingMode::Free);
        assert_eq!(history.at(OwnerId::new(), at(1800)), BillingMode::Postpaid);
    }
}
