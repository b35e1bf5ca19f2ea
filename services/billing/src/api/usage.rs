//! What the owner sees: usage and cost per day, resource, project and member; month to date;
//! the upcoming invoice as Stripe will compute it; the entries behind a day; the spending cap.

use super::{Data, owner, whole_number};
use crate::error::{BillingCode, describe};
use crate::ledger::month_of;
use crate::money::{self, Resource, round_minor};
use crate::prices;
use crate::quantise;
use crate::schema::spending_caps;
use crate::usage;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Months, NaiveDate, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use hopsbridge_domain::OwnerId;
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::db::DbError;
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode, PlatformCode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

fn db(e: diesel::result::Error) -> ApiError {
    ApiError::from(DbError::from(e))
}

/// The longest range `GET /api/billing/usage` answers, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

/// The cap to set.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapBody {
    /// Minor units a month, from 1 to `caps.max_minor`; null removes the cap.
    #[schema(value_type = Option<i64>)]
    monthly_cap_minor: serde_json::Value,
    /// What crossing 100 % does: `alert` (the default) only mails; `suspend` also suspends the
    /// account until the next month or a higher cap. Omitted: unchanged.
    #[serde(default)]
    cap_action: Option<String>,
}

/// The spending cap.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cap {
    /// Minor units a month; null when none is set.
    monthly_cap_minor: Option<i64>,
    /// `alert` or `suspend`; null when no cap is set.
    cap_action: Option<String>,
}

#[utoipa::path(put, path = "/api/billing/cap", tag = "billing", request_body = CapBody,
    description = "Reaching 80, 90 and 100 % of the cap in a UTC month mails the owner once each (and the admins at 100 %). With cap_action suspend, crossing 100 % also suspends the account until the next month or a cap above the month's cost (which clears it, as removing the cap or choosing alert does).",
    responses((status = 200, description = "the cap", body = Cap),
        (status = 400, description = describe(&[BillingCode::InvalidCap, BillingCode::InvalidCapAction]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody)))]
pub(super) async fn set_cap(state: Data, caller: Caller, body: web::Json<CapBody>) -> Result<HttpResponse, ApiError> {
    let account = owner(&state, &caller).await?;
    let owner = OwnerId::of(account.user_id);
    let action = match body.cap_action.as_deref() {
        None => None,
        Some(a @ ("alert" | "suspend")) => Some(a.to_owned()),
        Some(_) => return Err(BillingCode::InvalidCapAction.error()),
    };
    let cap = if body.monthly_cap_minor.is_null() {
        None
    } else {
        let cap = whole_number(&body.monthly_cap_minor, BillingCode::InvalidCap)?;
        if !(1..=state.caps.max_minor).contains(&cap) {
            return Err(BillingCode::InvalidCap
                .with_message(format!("monthly_cap_minor must be from 1 to {}", state.caps.max_minor)));
        }
        Some(cap)
    };
    let lifecycle = state.lifecycle.clone();
    let answer = state
        .db
        .transaction(move |c| {
            let (lifecycle, action) = (lifecycle.clone(), action.clone());
            Box::pin(async move {
                crate::lifecycle::lock_owner(c, owner).await?;
                let Some(cap) = cap else {
                    diesel::delete(spending_caps::table.find(owner)).execute(c).await?;
                    lifecycle.clear(c, owner, crate::lifecycle::Reason::SpendingCap, lifecycle.clock.now()).await?;
                    return Ok::<_, anyhow::Error>(Cap { monthly_cap_minor: None, cap_action: None });
                };
                let action: String = diesel::insert_into(spending_caps::table)
                    .values((
                        spending_caps::owner_id.eq(owner),
                        spending_caps::monthly_cap_minor.eq(cap),
                        spending_caps::cap_action.eq(action.as_deref().unwrap_or("alert")),
                    ))
                    .on_conflict(spending_caps::owner_id)
                    .do_update()
                    .set((
                        spending_caps::monthly_cap_minor.eq(cap),
                        spending_caps::cap_action.eq(diesel::dsl::sql::<diesel::sql_types::Text>("coalesce(")
                            .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(action.clone())
                            .sql(", spending_caps.cap_action)")),
                        spending_caps::updated_at.eq(diesel::dsl::now),
                    ))
                    .returning(spending_caps::cap_action)
                    .get_result(c)
                    .await?;
                // A cap above the month's cost, or one that only alerts, ends a cap suspension.
                let now = lifecycle.clock.now();
                let spent: Option<Decimal> = crate::schema::monthly_costs::table
                    .find((owner, month_of(now.date_naive())))
                    .select(crate::schema::monthly_costs::cost)
                    .first(c)
                    .await
                    .optional()?;
                if action == "alert" || spent.unwrap_or_default() < Decimal::from(cap) {
                    lifecycle.clear(c, owner, crate::lifecycle::Reason::SpendingCap, now).await?;
                }
                Ok(Cap { monthly_cap_minor: Some(cap), cap_action: Some(action) })
            })
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(answer))
}

/// Which days.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// First UTC day (default: the first of this month).
    from: Option<NaiveDate>,
    /// Last UTC day, inclusive (default: today).
    to: Option<NaiveDate>,
}

/// One day's usage of one resource in one project by one member, in one mode.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageLine {
    /// The UTC day.
    day: NaiveDate,
    /// The resource.
    resource: Resource,
    /// Hopsworks' project id; null when the namespace is no known project.
    project_id: Option<i64>,
    /// Whose pods (the owner or a member); for storage, the project's creator.
    user_id: Uuid,
    /// `free` (shown, never charged), `postpaid` or `prepaid`.
    billing_mode: String,
    /// Billed units (core-hours, GiB-hours, GPU-hours, GB-months of the day's calendar month),
    /// exact decimal (storage rounded half up at 32 places).
    quantity: String,
    /// The billed unit: `core-hour`, `GiB-hour`, `GPU-hour` or `GB-month`.
    unit: &'static str,
    /// The cost in minor units, unrounded.
    cost: String,
    /// The cost rounded half up to whole minor units.
    cost_minor: i64,
}

/// Costs added up.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Totals {
    /// First day.
    from: NaiveDate,
    /// Last day.
    to: NaiveDate,
    /// Cost, every mode but free, minor units unrounded.
    cost: String,
    /// Rounded half up.
    cost_minor: i64,
    /// Paid with credits, unrounded.
    credits_paid: String,
    /// Unpaid (prepaid without credit or card), unrounded.
    unpaid: String,
}

/// One line of the upcoming invoice.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvoiceLine {
    /// The resource.
    resource: Resource,
    /// The price version.
    price_id: Uuid,
    /// Its unit amount.
    #[schema(value_type = String)]
    unit_amount_decimal: Decimal,
    /// The sum of the quantised days (9 decimal places), as Stripe is told them.
    quantity: String,
    /// Quantity × price, unrounded.
    amount: String,
    /// Rounded half up once, as Stripe rounds the line.
    amount_minor: i64,
}

/// The invoice of the current billing period (the UTC month) as Stripe will compute it from
/// what billing reports: postpaid windows and the overflow of prepaid ones.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Invoice {
    /// The period's first day.
    period_start: NaiveDate,
    /// Its last day.
    period_end: NaiveDate,
    /// One line per resource and price version.
    lines: Vec<InvoiceLine>,
    /// The lines' amounts added up.
    total_minor: i64,
}

/// The owner's usage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView {
    /// Per day, resource, project, member and mode; every figure links to its samples at
    /// `GET /api/billing/usage/samples?day=` (narrowed as the line is by `user_id` and
    /// `project_id`, `none` for a null project).
    lines: Vec<UsageLine>,
    /// The range asked for.
    range: Totals,
    /// This UTC month so far (also the current billing period).
    month_to_date: Totals,
    /// The upcoming invoice.
    upcoming_invoice: Invoice,
    /// The spending cap, minor units a month.
    monthly_cap_minor: Option<i64>,
}

async fn totals(
    conn: &mut diesel_async::AsyncPgConnection,
    owner: OwnerId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Totals, ApiError> {
    let s = usage::sums(conn, owner, from, to).await.map_err(db)?;
    Ok(Totals {
        from,
        to,
        cost: s.cost.normalize().to_string(),
        cost_minor: round_minor(s.cost),
        credits_paid: s.credits_paid.normalize().to_string(),
        unpaid: s.unpaid.normalize().to_string(),
    })
}

#[utoipa::path(get, path = "/api/billing/usage", tag = "billing", params(RangeQuery),
    responses((status = 200, description = "usage and cost per day, resource, project and member; month to date; the upcoming invoice", body = UsageView),
        (status = 400, description = describe(&[BillingCode::InvalidRange]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody)))]
pub(super) async fn get_usage(
    state: Data,
    caller: Caller,
    q: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let account = owner(&state, &caller).await?;
    let owner = OwnerId::of(account.user_id);
    let today = state.clock.now().date_naive();
    let month = month_of(today);
    let (from, to) = (q.from.unwrap_or(month), q.to.unwrap_or(today));
    if to < from || to - from > TimeDelta::days(MAX_RANGE_DAYS) {
        return Err(BillingCode::InvalidRange.with_message("from must not be after to, at most 366 days before it"));
    }
    let mut conn = state.db.conn().await?;
    let mut lines = Vec::new();
    for g in usage::groups(&mut conn, owner, from, to).await.map_err(db)? {
        for (resource, n, cost) in g.by_resource() {
            let n = u128::try_from(n.trunc().mantissa()).unwrap_or(0);
            if n == 0 {
                continue;
            }
            lines.push(UsageLine {
                day: g.day,
                resource,
                project_id: g.project_id,
                user_id: g.user_id,
                billing_mode: g.billing_mode.clone(),
                quantity: money::quantity_text(resource, g.day, n),
                unit: resource.unit(),
                cost: cost.normalize().to_string(),
                cost_minor: round_minor(cost),
            });
        }
    }
    let range = totals(&mut conn, owner, from, to).await?;
    let month_to_date = totals(&mut conn, owner, month, today).await?;
    let period_end = month.checked_add_months(Months::new(1)).map_or(month, |m| m - TimeDelta::days(1));
    let day_totals = usage::day_totals(&mut conn, owner, month, period_end).await.map_err(db)?;
    let book = prices::book(&mut conn).await.map_err(db)?;
    let mut per_line: BTreeMap<(Resource, Uuid), u128> = BTreeMap::new();
    for d in &day_totals {
        *per_line.entry((d.resource, d.price_id)).or_default() += d.quanta();
    }
    let mut invoice_lines = Vec::new();
    for ((resource, price_id), quanta) in per_line {
        let Some(price) = book.iter().find(|p| p.id == price_id) else { continue };
        let exact = quantise::line_exact(quanta, price.unit_amount_decimal).unwrap_or_default();
        invoice_lines.push(InvoiceLine {
            resource,
            price_id,
            unit_amount_decimal: price.unit_amount_decimal,
            quantity: quantise::quanta_text(quanta),
            amount: exact.normalize().to_string(),
            amount_minor: quantise::line_amount(quanta, price.unit_amount_decimal).unwrap_or(i64::MAX),
        });
    }
    let total_minor = invoice_lines.iter().map(|l| l.amount_minor).sum();
    let cap: Option<i64> = spending_caps::table
        .find(owner)
        .select(spending_caps::monthly_cap_minor)
        .first(&mut conn)
        .await
        .optional()
        .map_err(db)?;
    Ok(HttpResponse::Ok().json(UsageView {
        lines,
        range,
        month_to_date,
        upcoming_invoice: Invoice { period_start: month, period_end, lines: invoice_lines, total_minor },
        monthly_cap_minor: cap,
    }))
}

/// Which entries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SamplesQuery {
    /// The UTC day.
    day: NaiveDate,
    /// The previous page's `next`.
    after: Option<String>,
    /// Skip this many entries first (0-1000000, default 0; not with `after`).
    offset: Option<i64>,
    /// At most this many (1-10000, default 1000).
    limit: Option<i64>,
    /// Only this person's entries: the owner's own, or a present or past team member's (their
    /// pods, and the storage of the projects they created).
    user_id: Option<Uuid>,
    /// Only entries of this source: `usage` (CPU, memory, GPUs) or `storage`.
    source: Option<String>,
    /// Only entries of this project: Hopsworks' project id (a positive integer), or `none` for
    /// the entries of no known project (whose `project_id` is null).
    project_id: Option<String>,
}

/// One ledger entry: a sample's share of the day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SampleLine {
    /// metering's sample id.
    sample_id: Uuid,
    /// Whose pods; for storage, the project's creator.
    user_id: Uuid,
    /// Where.
    cluster_id: Uuid,
    /// The namespace.
    namespace: String,
    /// The project.
    project_id: Option<i64>,
    /// `usage` (a `UsageRecorded` sample: CPU, memory, GPUs) or `storage` (a
    /// `StorageRecorded` sample: the project's offline and online storage).
    source: String,
    /// Estimated by metering to fill a gap rather than measured.
    estimated: bool,
    /// The window.
    window_start: DateTime<Utc>,
    /// Its end.
    window_end: DateTime<Utc>,
    /// The mode.
    billing_mode: String,
    /// Core-hours, exact.
    cpu_core_hours: String,
    /// GiB-hours, exact.
    memory_gib_hours: String,
    /// GPU-hours, exact.
    gpu_hours: String,
    /// The integers behind them.
    cpu_nanocore_seconds: i64,
    /// Byte-seconds.
    memory_byte_seconds: i64,
    /// GPU-seconds.
    gpu_seconds: i64,
    /// Offline storage GB-months (of the day's calendar month), exact to 32 places.
    storage_offline_gb_months: String,
    /// Online storage GB-months, likewise.
    storage_online_gb_months: String,
    /// The byte-seconds behind them.
    storage_offline_byte_seconds: i64,
    /// Online storage byte-seconds.
    storage_online_byte_seconds: i64,
    /// Its cost, unrounded minor units.
    cost: String,
    /// Paid with credits.
    credits_paid: String,
}

/// The entries behind an owner-day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SamplesView {
    /// The day.
    day: NaiveDate,
    /// By window and sample.
    samples: Vec<SampleLine>,
    /// The `after` of the next page; null on the last.
    next: Option<String>,
}

/// The largest `offset`: a day's entries are read from the start to skip them, so this bounds
/// that read.
const MAX_OFFSET: i64 = 1_000_000;

fn parse_after(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (secs, id) = raw.split_once('_')?;
    Some((DateTime::from_timestamp(secs.parse().ok()?, 0)?, id.parse().ok()?))
}

#[utoipa::path(get, path = "/api/billing/usage/samples", tag = "billing", params(SamplesQuery),
    responses((status = 200, description = "the samples behind the owner's day, of one person, one source and one project when asked", body = SamplesView),
        (status = 400, description = "invalid_query: day, after, offset, limit, user_id, source or project_id is malformed (source must be usage or storage; project_id a positive integer or none; after and offset not together)", body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound, BillingCode::PersonNotFound]), body = ErrorBody)))]
pub(super) async fn get_samples(
    state: Data,
    caller: Caller,
    q: web::Query<SamplesQuery>,
) -> Result<HttpResponse, ApiError> {
    let account = owner(&state, &caller).await?;
    let owner = OwnerId::of(account.user_id);
    let limit = q.limit.unwrap_or(1000);
    let after = match q.after.as_deref() {
        None => None,
        Some(a) => {
            Some(parse_after(a).ok_or_else(|| PlatformCode::InvalidQuery.with_message("after is not a cursor"))?)
        }
    };
    if !(1..=10_000).contains(&limit) {
        return Err(PlatformCode::InvalidQuery.with_message("limit must be 1-10000"));
    }
    let offset = q.offset.unwrap_or(0);
    if !(0..=MAX_OFFSET).contains(&offset) {
        return Err(PlatformCode::InvalidQuery.with_message("offset must be 0-1000000"));
    }
    if q.offset.is_some() && after.is_some() {
        return Err(PlatformCode::InvalidQuery.with_message("after and offset cannot be given together"));
    }
    let source = match q.source.as_deref() {
        None => None,
        Some(s @ ("usage" | "storage")) => Some(s),
        Some(_) => return Err(PlatformCode::InvalidQuery.with_message("source must be usage or storage")),
    };
    let project = match q.project_id.as_deref() {
        None => None,
        Some("none") => Some(None),
        Some(p) => match p.parse::<i64>() {
            Ok(id) if id > 0 => Some(Some(id)),
            _ => {
                return Err(PlatformCode::InvalidQuery
                    .with_message("project_id must be a project id (a positive integer) or none"));
            }
        },
    };
    let mut conn = state.db.conn().await?;
    if let Some(user) = q.user_id.filter(|u| *u != account.user_id.as_uuid()) {
        // The owner may see their own entries and those of anyone their team billed to them:
        // a present or past member (the latest membership billing heard of, or entries left).
        let member = crate::accounts::get(&mut conn, user.into())
            .await
            .map_err(db)?
            .is_some_and(|a| a.team.team_owner_id == Some(owner));
        if !member && !usage::has_entries_of(&mut conn, owner, user).await.map_err(db)? {
            return Err(BillingCode::PersonNotFound.error());
        }
    }
    let filter = usage::EntryFilter { user: q.user_id, source, project };
    let rows = usage::entries(&mut conn, owner, q.day, filter, after, offset, limit).await.map_err(db)?;
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) == limit;
    let next = rows.last().filter(|_| full).map(|r| format!("{}_{}", r.window_start.timestamp(), r.sample_id));
    let exact = |v: i64| u128::try_from(v).unwrap_or(0);
    let samples = rows
        .into_iter()
        .map(|r| SampleLine {
            sample_id: r.sample_id,
            user_id: r.user_id,
            cluster_id: r.cluster_id,
            namespace: r.namespace,
            project_id: r.project_id,
            source: r.source,
            estimated: r.estimated,
            window_start: r.window_start,
            window_end: r.window_end,
            billing_mode: r.billing_mode,
            cpu_core_hours: money::quantity_text(Resource::Cpu, q.day, exact(r.cpu_nanocore_seconds)),
            memory_gib_hours: money::quantity_text(Resource::Memory, q.day, exact(r.memory_byte_seconds)),
            gpu_hours: money::quantity_text(Resource::Gpu, q.day, exact(r.gpu_seconds)),
            cpu_nanocore_seconds: r.cpu_nanocore_seconds,
            memory_byte_seconds: r.memory_byte_seconds,
            gpu_seconds: r.gpu_seconds,
            storage_offline_gb_months: money::quantity_text(
                Resource::StorageOffline,
                q.day,
                exact(r.storage_offline_byte_seconds),
            ),
            storage_online_gb_months: money::quantity_text(
                Resource::StorageOnline,
                q.day,
                exact(r.storage_online_byte_seconds),
            ),
            storage_offline_byte_seconds: r.storage_offline_byte_seconds,
            storage_online_byte_seconds: r.storage_online_byte_seconds,
            cost: r.cost.normalize().to_string(),
            credits_paid: r.credits_paid.normalize().to_string(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(SamplesView { day: q.day, samples, next }))
}
