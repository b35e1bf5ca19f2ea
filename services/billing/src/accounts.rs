//! billing's store of accounts, payment methods, invoices and claimed Stripe events: the
//! queries on those tables (the checkout follow-ups have their own store,
//! [`crate::checkout_follow_ups`]).

use crate::schema::{accounts, invoices, payment_methods, processed_stripe_events};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::membership::Membership;
use hopsbridge_domain::{BillingMode, Email, MembershipId, OwnerId, UserId};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// A billing account.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = accounts)]
pub struct Account {
    /// The person.
    pub user_id: UserId,
    /// Their email when the account was opened.
    pub email: Email,
    /// Their name.
    pub name: String,
    /// How they pay.
    pub billing_mode: BillingMode,
    /// `cus_…` once created.
    pub stripe_customer_id: Option<String>,
    /// `sub_…` once created.
    pub stripe_subscription_id: Option<String>,
    /// The subscription's status as Stripe last reported it.
    pub subscription_status: Option<String>,
    /// The person's latest team membership, as the one membership rule keeps it.
    #[diesel(embed)]
    pub team: TeamColumns,
}

/// The person's latest team membership as stored (all empty when they never joined a team).
#[derive(Debug, Clone, Default, Queryable, Selectable, AsChangeset)]
#[diesel(table_name = accounts, treat_none_as_null = true)]
pub struct TeamColumns {
    /// The membership.
    pub team_membership_id: Option<MembershipId>,
    /// Whose team it is.
    pub team_owner_id: Option<OwnerId>,
    /// When it began; unknown while only its removal has arrived.
    pub team_joined_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub team_removed_at: Option<DateTime<Utc>>,
}

impl TeamColumns {
    /// What the rule keeps, if anything.
    #[must_use]
    pub fn kept(&self) -> Option<Membership> {
        Some(Membership {
            id: self.team_membership_id?,
            owner: self.team_owner_id?,
            joined_at: self.team_joined_at.map(|t| t.timestamp_micros()),
            removed_at: self.team_removed_at.map(|t| t.timestamp_micros()),
        })
    }

    /// The columns holding `kept`.
    #[must_use]
    pub fn of(kept: Membership) -> Self {
        Self {
            team_membership_id: Some(kept.id),
            team_owner_id: Some(kept.owner),
            team_joined_at: kept.joined_at.and_then(DateTime::from_timestamp_micros),
            team_removed_at: kept.removed_at.and_then(DateTime::from_timestamp_micros),
        }
    }
}

/// Subscription statuses after which Stripe bills nothing more on the subscription.
pub const ENDED: [&str; 2] = ["canceled", "incomplete_expired"];

impl Account {
    /// The owner whose team the person is in at `now` (microseconds), as billing heard it: a
    /// membership whose join has arrived and that has not ended by then. A join billing has
    /// heard of is in force even while billing's clock is behind the team service's.
    #[must_use]
    pub fn team_owner(&self, now: i64) -> Option<OwnerId> {
        let kept = self.team.kept()?;
        kept.owner_at(now.max(kept.joined_at?))
    }

    /// The recorded subscription, while Stripe may still bill on it.
    #[must_use]
    pub fn live_subscription(&self) -> Option<&str> {
        let ended = self.subscription_status.as_deref().is_some_and(|s| ENDED.contains(&s));
        self.stripe_subscription_id.as_deref().filter(|_| !ended)
    }
}

/// A card as `GET /api/billing` shows it, and as much of it as a webhook carried (every field
/// may be missing).
#[derive(Debug, Clone, Default, Queryable, Serialize, utoipa::ToSchema)]
pub struct CardSummary {
    /// `visa`, `mastercard`, …
    pub brand: Option<String>,
    /// The last four digits.
    pub last4: Option<String>,
    /// Expiry month, 1-12.
    pub exp_month: Option<i32>,
    /// Expiry year.
    pub exp_year: Option<i32>,
}

/// An invoice as `GET /api/billing` shows it.
#[derive(Debug, Clone, Queryable, Serialize, utoipa::ToSchema)]
pub struct InvoiceSummary {
    /// The invoice number.
    pub number: Option<String>,
    /// `open`, `paid`, `void`, `uncollectible`.
    pub status: String,
    /// What is due, in the currency's minor unit.
    pub amount_due: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// Stripe's hosted page for the invoice.
    pub hosted_invoice_url: Option<String>,
    /// When Stripe created it (unix seconds).
    pub created: i64,
}

/// The account of `user`, if opened.
///
/// # Errors
/// When Postgres fails.
pub async fn get(conn: &mut AsyncPgConnection, user: UserId) -> QueryResult<Option<Account>> {
    accounts::table.find(user).select(Account::as_select()).first(conn).await.optional()
}

/// The account of `user`, locked for the rest of the transaction, if opened.
///
/// # Errors
/// When Postgres fails.
pub async fn lock(conn: &mut AsyncPgConnection, user: UserId) -> QueryResult<Option<Account>> {
    accounts::table.find(user).select(Account::as_select()).for_update().first(conn).await.optional()
}

/// Records what is kept of `user`'s latest team membership.
///
/// # Errors
/// When Postgres fails.
pub async fn set_team(conn: &mut AsyncPgConnection, user: UserId, team: &TeamColumns) -> QueryResult<()> {
    diesel::update(accounts::table.find(user))
        .set((team, accounts::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records `subscription` as `user`'s, replacing an ended one (a member's own subscription is
/// cancelled when they join a team, and another opened when they leave it).
///
/// # Errors
/// When Postgres fails.
pub async fn replace_subscription(
    conn: &mut AsyncPgConnection,
    user: UserId,
    subscription: &str,
    status: &str,
) -> QueryResult<()> {
    diesel::update(accounts::table.find(user))
        .set((
            accounts::stripe_subscription_id.eq(subscription),
            accounts::subscription_status.eq(status),
            accounts::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Opens the account of `user` unless it exists, postpaid (a card is required before access);
/// returns it either way.
///
/// # Errors
/// When Postgres fails.
pub async fn open(conn: &mut AsyncPgConnection, user: UserId, email: &Email, name: &str) -> QueryResult<Account> {
    diesel::insert_into(accounts::table)
        .values((
            accounts::user_id.eq(user),
            accounts::email.eq(email),
            accounts::name.eq(name),
            accounts::billing_mode.eq(BillingMode::Postpaid),
        ))
        .on_conflict(accounts::user_id)
        .do_nothing()
        .execute(conn)
        .await?;
    accounts::table.find(user).select(Account::as_select()).first(conn).await
}

/// Records the Stripe customer of `user` (only if none is recorded yet; returns the one kept).
///
/// # Errors
/// When Postgres fails.
pub async fn set_customer(conn: &mut AsyncPgConnection, user: UserId, customer: &str) -> QueryResult<String> {
    diesel::update(accounts::table.find(user).filter(accounts::stripe_customer_id.is_null()))
        .set((accounts::stripe_customer_id.eq(customer), accounts::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    let kept: Option<String> = accounts::table.find(user).select(accounts::stripe_customer_id).first(conn).await?;
    Ok(kept.unwrap_or_else(|| customer.to_owned()))
}

/// Locks the accounts of `customers` for the rest of the transaction, in customer order (so
/// two transactions locking overlapping sets wait on each other in one direction only), and
/// answers their users by customer; customers without an account are left out.
///
/// # Errors
/// When Postgres fails.
pub async fn lock_by_customers(
    conn: &mut AsyncPgConnection,
    mut customers: Vec<&str>,
) -> QueryResult<HashMap<String, UserId>> {
    customers.sort_unstable();
    customers.dedup();
    let rows: Vec<(Option<String>, UserId)> = accounts::table
        .filter(accounts::stripe_customer_id.eq_any(customers))
        .order(accounts::stripe_customer_id.asc())
        .select((accounts::stripe_customer_id, accounts::user_id))
        .for_update()
        .load(conn)
        .await?;
    Ok(rows.into_iter().filter_map(|(customer, user)| Some((customer?, user))).collect())
}

/// Sets the subscription status (and id, when the account has none yet or it is this one).
///
/// # Errors
/// When Postgres fails.
pub async fn set_subscription_status(
    mut conn: &AsyncPgConnection,
    user: UserId,
    subscription: &str,
    status: &str,
) -> QueryResult<usize> {
    diesel::update(
        accounts::table
            .find(user)
            .filter(accounts::stripe_subscription_id.is_null().or(accounts::stripe_subscription_id.eq(subscription))),
    )
    .set((
        accounts::stripe_subscription_id.eq(subscription),
        accounts::subscription_status.eq(status),
        accounts::updated_at.eq(diesel::dsl::now),
    ))
    .execute(&mut conn)
    .await
}

/// The usable (attached, not detached) payment methods of each of `customers`, by id;
/// customers with none are left out.
///
/// # Errors
/// When Postgres fails.
pub async fn usable_payment_methods(
    conn: &mut AsyncPgConnection,
    customers: Vec<&str>,
) -> QueryResult<HashMap<String, HashSet<String>>> {
    let mut usable: HashMap<String, HashSet<String>> = HashMap::new();
    if customers.is_empty() {
        return Ok(usable);
    }
    let rows: Vec<(String, String)> = payment_methods::table
        .filter(payment_methods::stripe_customer_id.eq_any(customers))
        .filter(payment_methods::attached_at.is_not_null())
        .filter(payment_methods::detached_at.is_null())
        .select((payment_methods::stripe_customer_id, payment_methods::id))
        .load(conn)
        .await?;
    for (customer, id) in rows {
        usable.entry(customer).or_default().insert(id);
    }
    Ok(usable)
}

/// A payment method's row after a change: whose it is, and whether it is usable now.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct PaymentMethodState {
    /// The customer the row belongs to.
    pub customer: String,
    /// Attached and not detached.
    pub usable: bool,
}

diesel::define_sql_function! {
    /// SQL's `COALESCE` of two values: the first that is not null.
    fn coalesce<T: diesel::sql_types::SingleValue>(
        first: diesel::sql_types::Nullable<T>,
        second: diesel::sql_types::Nullable<T>,
    ) -> diesel::sql_types::Nullable<T>;
}

/// Records that payment method `id` is attached to `customer` (at `at`, the event's time),
/// unless it was detached already: a detached payment method cannot be attached again.
/// Details the event leaves out keep their stored values. Answers the row as it is now, or
/// `None` when it was detached already (nothing changed).
///
/// # Errors
/// When Postgres fails.
pub async fn attach(
    mut conn: &AsyncPgConnection,
    id: &str,
    customer: &str,
    card: &CardSummary,
    at: i64,
) -> QueryResult<Option<PaymentMethodState>> {
    // The upsert's WHERE: diesel offers it as FilterDsl, which the prelude does not bring.
    use diesel::query_dsl::methods::FilterDsl;
    use diesel::upsert::excluded;
    use payment_methods as pm;
    diesel::insert_into(pm::table)
        .values((
            pm::id.eq(id),
            pm::stripe_customer_id.eq(customer),
            pm::brand.eq(&card.brand),
            pm::last4.eq(&card.last4),
            pm::exp_month.eq(card.exp_month),
            pm::exp_year.eq(card.exp_year),
            pm::attached_at.eq(at),
        ))
        .on_conflict(pm::id)
        .do_update()
        .set((
            pm::attached_at.eq(coalesce(pm::attached_at, excluded(pm::attached_at))),
            pm::brand.eq(coalesce(excluded(pm::brand), pm::brand)),
            pm::last4.eq(coalesce(excluded(pm::last4), pm::last4)),
            pm::exp_month.eq(coalesce(excluded(pm::exp_month), pm::exp_month)),
            pm::exp_year.eq(coalesce(excluded(pm::exp_year), pm::exp_year)),
            pm::updated_at.eq(diesel::dsl::now),
        ))
        .filter(pm::detached_at.is_null())
        .returning((pm::stripe_customer_id, pm::attached_at.is_not_null().and(pm::detached_at.is_null())))
        .get_result(&mut conn)
        .await
        .optional()
}

/// Records that payment method `id` was detached from `customer` at `at`. Final. Answers the
/// customer the row belongs to.
///
/// # Errors
/// When Postgres fails.
pub async fn detach(mut conn: &AsyncPgConnection, id: &str, customer: &str, at: i64) -> QueryResult<String> {
    diesel::insert_into(payment_methods::table)
        .values((
            payment_methods::id.eq(id),
            payment_methods::stripe_customer_id.eq(customer),
            payment_methods::detached_at.eq(at),
        ))
        .on_conflict(payment_methods::id)
        .do_update()
        .set((payment_methods::detached_at.eq(at), payment_methods::updated_at.eq(diesel::dsl::now)))
        .returning(payment_methods::stripe_customer_id)
        .get_result(&mut conn)
        .await
}

/// The card shown for `customer`: the most recently attached usable one.
///
/// # Errors
/// When Postgres fails.
pub async fn card(conn: &mut AsyncPgConnection, customer: &str) -> QueryResult<Option<CardSummary>> {
    payment_methods::table
        .filter(payment_methods::stripe_customer_id.eq(customer))
        .filter(payment_methods::attached_at.is_not_null())
        .filter(payment_methods::detached_at.is_null())
        .order((payment_methods::attached_at.desc(), payment_methods::updated_at.desc()))
        .select((payment_methods::brand, payment_methods::last4, payment_methods::exp_month, payment_methods::exp_year))
        .first(conn)
        .await
        .optional()
}

/// An invoice as a webhook reports it.
#[derive(Debug, Clone)]
pub struct InvoiceRecord {
    /// `in_…`.
    pub id: String,
    /// `cus_…`.
    pub customer: String,
    /// Number.
    pub number: Option<String>,
    /// Status.
    pub status: String,
    /// Amount due, minor units.
    pub amount_due: i64,
    /// Currency.
    pub currency: String,
    /// Hosted page.
    pub hosted_invoice_url: Option<String>,
    /// Stripe's creation time of the invoice.
    pub created: i64,
}

/// How far along an invoice's life a status is: a later status is never overwritten by an
/// earlier one delivered late.
#[must_use]
pub fn status_rank(status: &str) -> i32 {
    match status {
        "draft" => 0,
        "open" => 1,
        "uncollectible" => 2,
        "paid" | "void" => 3,
        _ => 0,
    }
}

/// Records an invoice unless a newer state of it is recorded already.
///
/// # Errors
/// When Postgres fails.
pub async fn record_invoice(
    mut conn: &AsyncPgConnection,
    invoice: &InvoiceRecord,
    event_created: i64,
) -> QueryResult<()> {
    let rank = status_rank(&invoice.status);
    let values = (
        invoices::id.eq(&invoice.id),
        invoices::stripe_customer_id.eq(&invoice.customer),
        invoices::number.eq(&invoice.number),
        invoices::status.eq(&invoice.status),
        invoices::amount_due.eq(invoice.amount_due),
        invoices::currency.eq(&invoice.currency),
        invoices::hosted_invoice_url.eq(&invoice.hosted_invoice_url),
        invoices::created.eq(invoice.created),
        invoices::event_created.eq(event_created),
        invoices::status_rank.eq(rank),
    );
    let inserted = diesel::insert_into(invoices::table)
        .values(values)
        .on_conflict(invoices::id)
        .do_nothing()
        .execute(&mut conn)
        .await?;
    if inserted == 0 {
        // Newer wins: a later event, or the same second with a later status.
        diesel::update(
            invoices::table.find(&invoice.id).filter(
                invoices::event_created
                    .lt(event_created)
                    .or(invoices::event_created.eq(event_created).and(invoices::status_rank.lt(rank))),
            ),
        )
        .set(values)
        .execute(&mut conn)
        .await?;
    }
    Ok(())
}

/// The newest invoices of `customer`.
///
/// # Errors
/// When Postgres fails.
pub async fn recent_invoices(
    conn: &mut AsyncPgConnection,
    customer: &str,
    limit: i64,
) -> QueryResult<Vec<InvoiceSummary>> {
    invoices::table
        .filter(invoices::stripe_customer_id.eq(customer))
        .filter(invoices::status.ne("draft"))
        .order((invoices::created.desc(), invoices::id.desc()))
        .limit(limit)
        .select((
            invoices::number,
            invoices::status,
            invoices::amount_due,
            invoices::currency,
            invoices::hosted_invoice_url,
            invoices::created,
        ))
        .load(conn)
        .await
}

/// Claims Stripe event ids (with their type and created time) in one statement, answering the
/// ids claimed now: an id claimed before (a duplicate) is not among them. Concurrent claims of
/// one id wait for each other on the primary key, so exactly one transaction gets it. Rows are
/// inserted in id order, so two transactions claiming overlapping sets wait on each other in
/// one direction only.
///
/// # Errors
/// When Postgres fails.
pub async fn claim_events(
    conn: &mut AsyncPgConnection,
    mut events: Vec<(&str, &str, i64)>,
) -> QueryResult<HashSet<String>> {
    events.sort_unstable();
    events.dedup_by_key(|e| e.0);
    let rows: Vec<_> = events
        .into_iter()
        .map(|(id, kind, created)| {
            (
                processed_stripe_events::event_id.eq(id),
                processed_stripe_events::event_type.eq(kind),
                processed_stripe_events::created.eq(created),
            )
        })
        .collect();
    let claimed: Vec<String> = diesel::insert_into(processed_stripe_events::table)
        .values(rows)
        .on_conflict(processed_stripe_events::event_id)
        .do_nothing()
        .returning(processed_stripe_events::event_id)
        .get_results(conn)
        .await?;
    Ok(claimed.into_iter().collect())
}
