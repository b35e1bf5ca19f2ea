//! Prepaid credits' store: grants (`credit_grants`), what each grant paid (`credit_deductions`),
//! Checkout purchases (`credit_purchases`) and exhaustion (`credit_states`). The ledger spends
//! grants as usage arrives, and mails low balances ([`crate::ledger`]); this module grants and
//! reads.
//!
//! Spending order: promotional credit first, then the lower priority number, then the earliest
//! expiry (none last), then the oldest grant.

use crate::schema::{credit_deductions, credit_grants, credit_purchases, credit_states};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::OwnerId;
use hopsbridge_platform::db::DbError;
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

/// Purchased through Checkout.
pub const PURCHASED: &str = "purchased";
/// Granted by an admin; spent first.
pub const PROMOTIONAL: &str = "promotional";

/// A grant.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = credit_grants)]
pub struct Grant {
    /// The grant.
    pub id: Uuid,
    /// Whose.
    pub owner_id: OwnerId,
    /// `purchased` or `promotional`.
    pub category: String,
    /// Granted, minor units.
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// Left, minor units (up to 12 decimal places).
    #[schema(value_type = String)]
    pub remaining: Decimal,
    /// Lower is spent first (after promotional credit).
    pub priority: i32,
    /// Not spent on windows starting at or after this instant.
    pub expires_at: Option<DateTime<Utc>>,
    /// What granted it: `checkout:<session>` or `admin:<id>`.
    pub source: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl Grant {
    /// Whether it may pay for a window starting at `at`.
    #[must_use]
    pub fn usable_at(&self, at: DateTime<Utc>) -> bool {
        self.remaining > Decimal::ZERO && self.expires_at.is_none_or(|e| e > at)
    }
}

/// A grant to make.
#[derive(Debug, Clone)]
pub struct NewGrant<'a> {
    /// Whose.
    pub owner: OwnerId,
    /// [`PURCHASED`] or [`PROMOTIONAL`].
    pub category: &'a str,
    /// Minor units.
    pub amount: i64,
    /// Spending priority.
    pub priority: i32,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// What grants it, once.
    pub source: String,
    /// The admin, for a promotional grant.
    pub by: Option<Uuid>,
}

/// Grants `new` unless its source granted already (`None`), in the caller's transaction; a new
/// grant ends the owner's exhaustion (the next one announces `CreditsExhaustedV1` again).
///
/// # Errors
/// When Postgres fails.
pub async fn grant(mut conn: &AsyncPgConnection, new: &NewGrant<'_>) -> Result<Option<Grant>, DbError> {
    let amount = Decimal::from(new.amount);
    let made = diesel::insert_into(credit_grants::table)
        .values((
            credit_grants::id.eq(Uuid::now_v7()),
            credit_grants::owner_id.eq(new.owner),
            credit_grants::category.eq(new.category),
            credit_grants::amount.eq(amount),
            credit_grants::remaining.eq(amount),
            credit_grants::priority.eq(new.priority),
            credit_grants::expires_at.eq(new.expires_at),
            credit_grants::source.eq(&new.source),
            credit_grants::created_by.eq(new.by),
        ))
        .on_conflict(credit_grants::source)
        .do_nothing()
        .returning(Grant::as_returning())
        .get_result(&mut conn)
        .await
        .optional()?;
    if made.is_some() {
        diesel::update(credit_states::table.find(new.owner))
            .set(credit_states::exhausted_at.eq(None::<DateTime<Utc>>))
            .execute(&mut conn)
            .await?;
    }
    Ok(made)
}

/// What `owner` may spend on a window starting at `at`: the remaining credit of grants not
/// expired by then.
///
/// # Errors
/// When Postgres fails.
pub async fn balance(mut conn: &AsyncPgConnection, owner: OwnerId, at: DateTime<Utc>) -> QueryResult<Decimal> {
    let sum: Option<Decimal> = credit_grants::table
        .filter(credit_grants::owner_id.eq(owner))
        .filter(credit_grants::expires_at.is_null().or(credit_grants::expires_at.gt(at)))
        .select(diesel::dsl::sum(credit_grants::remaining))
        .first(&mut conn)
        .await?;
    Ok(sum.unwrap_or_default())
}

/// The grants of `owners` with credit left, locked for the rest of the transaction, each
/// owner's in spending order (owners in id order, so concurrent batches lock alike).
///
/// # Errors
/// When Postgres fails.
pub async fn lock_spendable(conn: &mut AsyncPgConnection, owners: &[OwnerId]) -> QueryResult<Vec<Grant>> {
    credit_grants::table
        .filter(credit_grants::owner_id.eq_any(owners))
        .filter(credit_grants::remaining.gt(Decimal::ZERO))
        .order((
            credit_grants::owner_id,
            credit_grants::category.ne(PROMOTIONAL),
            credit_grants::priority,
            credit_grants::expires_at.asc().nulls_last(),
            credit_grants::created_at,
            credit_grants::id,
        ))
        .select(Grant::as_select())
        .for_update()
        .load(conn)
        .await
}

/// Every grant of `owner`, newest first.
///
/// # Errors
/// When Postgres fails.
pub async fn grants_of(conn: &mut AsyncPgConnection, owner: OwnerId) -> QueryResult<Vec<Grant>> {
    credit_grants::table
        .filter(credit_grants::owner_id.eq(owner))
        .order((credit_grants::created_at.desc(), credit_grants::id.desc()))
        .select(Grant::as_select())
        .load(conn)
        .await
}

/// One grant's payment for one ledger entry.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = credit_deductions)]
pub struct Deduction {
    /// The sample (UsageRecorded's `sample_id`).
    pub sample_id: Uuid,
    /// The UTC day of the ledger entry.
    pub day: NaiveDate,
    /// The grant that paid.
    pub grant_id: Uuid,
    /// Minor units.
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// The window's start.
    pub window_start: DateTime<Utc>,
}

/// `owner`'s deductions, newest window first, `limit` of them from `offset`.
///
/// # Errors
/// When Postgres fails.
pub async fn deductions_of(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<Deduction>, i64)> {
    let page = credit_deductions::table
        .filter(credit_deductions::owner_id.eq(owner))
        .order((credit_deductions::window_start.desc(), credit_deductions::sample_id, credit_deductions::grant_id))
        .limit(limit)
        .offset(offset)
        .select(Deduction::as_select())
        .load(conn)
        .await?;
    let total = credit_deductions::table.filter(credit_deductions::owner_id.eq(owner)).count().get_result(conn).await?;
    Ok((page, total))
}

/// Marks the purchase of `session` completed.
///
/// # Errors
/// When Postgres fails.
pub async fn complete_purchase(mut conn: &AsyncPgConnection, session: &str) -> QueryResult<()> {
    diesel::update(credit_purchases::table.find(session).filter(credit_purchases::completed_at.is_null()))
        .set(credit_purchases::completed_at.eq(diesel::dsl::now))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Records a Checkout Session made for a purchase.
///
/// # Errors
/// When Postgres fails.
pub async fn record_purchase(
    conn: &mut AsyncPgConnection,
    session: &str,
    owner: OwnerId,
    amount_minor: i64,
    currency: &str,
) -> QueryResult<()> {
    diesel::insert_into(credit_purchases::table)
        .values((
            credit_purchases::session_id.eq(session),
            credit_purchases::owner_id.eq(owner),
            credit_purchases::amount_minor.eq(amount_minor),
            credit_purchases::currency.eq(currency),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// The purchase of `session`: its owner and amount.
///
/// # Errors
/// When Postgres fails.
pub async fn purchase(mut conn: &AsyncPgConnection, session: &str) -> QueryResult<Option<(OwnerId, i64)>> {
    credit_purchases::table
        .find(session)
        .select((credit_purchases::owner_id, credit_purchases::amount_minor))
        .first(&mut conn)
        .await
        .optional()
}
