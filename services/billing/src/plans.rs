//! Plans (decision 0048): free, pay as you go (`payg`) and prepaid, each with the active projects
//! it allows from configuration. The owner's plan is on their account (none until they choose);
//! every change (`plan_changes`) and every acceptance of the terms (`terms_acceptances`) is kept,
//! never rewritten. A plan maps onto a billing mode (free → free, payg → postpaid, prepaid →
//! prepaid) changed through [`crate::modes`], from the next window, so a window is never split.
//! A change is announced as `PlanChangedV1` in the same transaction.

use crate::config::PlansConfig;
use crate::modes;
use crate::schema::{accounts, plan_changes, terms_acceptances};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::PlanChangedV1;
use hopsbridge_domain::{BillingMode, OwnerId};
use hopsbridge_platform::db::DbError;
use serde::Serialize;
use uuid::Uuid;

/// A plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// A cluster account and one project; usage shown, not charged.
    Free,
    /// A card, postpaid.
    Payg,
    /// Credits bought ahead.
    Prepaid,
}

impl Plan {
    /// Its name, as stored and announced.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Payg => "payg",
            Self::Prepaid => "prepaid",
        }
    }

    /// The plan of `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "free" => Some(Self::Free),
            "payg" => Some(Self::Payg),
            "prepaid" => Some(Self::Prepaid),
            _ => None,
        }
    }

    /// The billing mode it bills in.
    #[must_use]
    pub const fn mode(self) -> BillingMode {
        match self {
            Self::Free => BillingMode::Free,
            Self::Payg => BillingMode::Postpaid,
            Self::Prepaid => BillingMode::Prepaid,
        }
    }

    /// The active projects it allows.
    #[must_use]
    pub const fn max_active_projects(self, plans: &PlansConfig) -> i32 {
        match self {
            Self::Free => plans.free.max_active_projects,
            Self::Payg => plans.payg.max_active_projects,
            Self::Prepaid => plans.prepaid.max_active_projects,
        }
    }
}

/// Why a plan changed, as `PlanChangedV1` says.
pub mod reason {
    /// The owner chose it.
    pub const CHOSEN: &str = "chosen";
    /// The last card went.
    pub const CARD_REMOVED: &str = "card_removed";
    /// The subscription was deleted.
    pub const SUBSCRIPTION_DELETED: &str = "subscription_deleted";
    /// An admin set it.
    pub const ADMIN: &str = "admin";
}

/// A change as recorded and announced.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanChange {
    /// The owner.
    pub owner_id: OwnerId,
    /// The plan before (null: none chosen).
    pub previous_plan: Option<Plan>,
    /// The plan now.
    pub plan: Plan,
    /// `chosen`, `card_removed`, `subscription_deleted` or `admin`.
    pub reason: String,
    /// When.
    pub changed_at: DateTime<Utc>,
    /// The billing mode's change, from the next window (null: that mode was in force then already).
    pub mode_change: Option<modes::ModeChange>,
}

/// The plan of `owner` now (none chosen: `None`).
///
/// # Errors
/// When Postgres fails.
pub async fn current(conn: &mut AsyncPgConnection, owner: OwnerId) -> QueryResult<Option<Plan>> {
    let name: Option<Option<String>> =
        accounts::table.find(owner.as_user()).select(accounts::plan).first(conn).await.optional()?;
    Ok(name.flatten().as_deref().and_then(Plan::parse))
}

/// Records that `owner` accepted the terms of `version` at `at` (a new row each time).
///
/// # Errors
/// When Postgres fails.
pub async fn accept_terms(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    version: &str,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(terms_acceptances::table)
        .values((
            terms_acceptances::id.eq(Uuid::now_v7()),
            terms_acceptances::owner_id.eq(owner),
            terms_acceptances::terms_version.eq(version),
            terms_acceptances::accepted_at.eq(at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The latest terms `owner` accepted: version and time.
///
/// # Errors
/// When Postgres fails.
pub async fn terms_accepted(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
) -> QueryResult<Option<(String, DateTime<Utc>)>> {
    terms_acceptances::table
        .filter(terms_acceptances::owner_id.eq(owner))
        .order((terms_acceptances::accepted_at.desc(), terms_acceptances::id.desc()))
        .select((terms_acceptances::terms_version, terms_acceptances::accepted_at))
        .first(conn)
        .await
        .optional()
}

/// What a change needs besides the owner and the plan.
#[derive(Debug, Clone, Copy)]
pub struct ChangeOf<'a> {
    /// [`reason`].
    pub reason: &'a str,
    /// The person changing it (the owner, an admin), none for billing itself or a machine admin.
    pub by: Option<Uuid>,
    /// Calendar time now.
    pub now: DateTime<Utc>,
    /// The ledger's window, seconds: the mode changes at the next window's start.
    pub window_secs: u32,
}

/// Moves `owner` (whose account the caller locked) to `plan`: recorded, the billing mode changed
/// from the next window, `PlanChangedV1` in the outbox, all in the caller's transaction. `None`
/// when `owner` is on `plan` already.
///
/// # Errors
/// When Postgres fails.
pub async fn change(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    plan: Plan,
    of: ChangeOf<'_>,
    plans: &PlansConfig,
) -> Result<Option<PlanChange>, DbError> {
    let previous = current(conn, owner).await?;
    if previous == Some(plan) {
        return Ok(None);
    }
    diesel::insert_into(plan_changes::table)
        .values((
            plan_changes::id.eq(Uuid::now_v7()),
            plan_changes::owner_id.eq(owner),
            plan_changes::previous_plan.eq(previous.map(Plan::as_str)),
            plan_changes::plan.eq(plan.as_str()),
            plan_changes::reason.eq(of.reason),
            plan_changes::changed_by.eq(of.by),
            plan_changes::changed_at.eq(of.now),
        ))
        .execute(conn)
        .await?;
    diesel::update(accounts::table.find(owner.as_user()))
        .set((accounts::plan.eq(plan.as_str()), accounts::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    let effective_from = modes::next_window_start(of.now, of.window_secs);
    let mode_change = modes::change(conn, owner, plan.mode(), effective_from, of.by).await?;
    let event = PlanChangedV1 {
        user_id: owner.to_string(),
        previous_plan: previous.map(Plan::as_str).unwrap_or_default().to_owned(),
        plan: plan.as_str().to_owned(),
        max_active_projects: plan.max_active_projects(plans),
        reason: of.reason.to_owned(),
        changed_at_unix_seconds: of.now.timestamp(),
    };
    hopsbridge_platform::events::enqueue(conn, &event, None).await?;
    Ok(Some(PlanChange {
        owner_id: owner,
        previous_plan: previous,
        plan,
        reason: of.reason.to_owned(),
        changed_at: of.now,
        mode_change,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_map_onto_modes_and_names() {
        for plan in [Plan::Free, Plan::Payg, Plan::Prepaid] {
            assert_eq!(Plan::parse(plan.as_str()), Some(plan));
        }
        assert_eq!(Plan::parse("postpaid"), None);
        assert_eq!(Plan::Free.mode(), BillingMode::Free);
        assert_eq!(Plan::Payg.mode(), BillingMode::Postpaid);
        assert_eq!(Plan::Prepaid.mode(), BillingMode::Prepaid);
    }
}
