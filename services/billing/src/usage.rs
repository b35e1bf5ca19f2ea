//! The ledger read back for the owner (decision 0038): usage and cost per day, resource,
//! project and member; the entries behind a day; and each day's quantities as Stripe is told
//! them ([`day_totals`], which the reporter shares), from which the upcoming invoice is
//! computed with [`crate::quantise`].

use crate::money::{RESOURCES, Resource};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Nullable, Numeric, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::OwnerId;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use uuid::Uuid;

/// One (day, member, project, mode) group of an owner's entries.
#[derive(Debug, Clone, QueryableByName)]
pub struct Group {
    /// The UTC day.
    #[diesel(sql_type = Date)]
    pub day: NaiveDate,
    /// The member (or the owner).
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    /// The project.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub project_id: Option<i64>,
    /// The mode the windows were billed in.
    #[diesel(sql_type = Text)]
    pub billing_mode: String,
    /// Nanocore-seconds.
    #[diesel(sql_type = Numeric)]
    pub cpu: Decimal,
    /// Byte-seconds.
    #[diesel(sql_type = Numeric)]
    pub memory: Decimal,
    /// GPU-seconds.
    #[diesel(sql_type = Numeric)]
    pub gpu: Decimal,
    /// CPU cost.
    #[diesel(sql_type = Numeric)]
    pub cpu_cost: Decimal,
    /// Memory cost.
    #[diesel(sql_type = Numeric)]
    pub memory_cost: Decimal,
    /// GPU cost.
    #[diesel(sql_type = Numeric)]
    pub gpu_cost: Decimal,
    /// Offline storage byte-seconds.
    #[diesel(sql_type = Numeric)]
    pub storage_offline: Decimal,
    /// Online storage byte-seconds.
    #[diesel(sql_type = Numeric)]
    pub storage_online: Decimal,
    /// Offline storage cost.
    #[diesel(sql_type = Numeric)]
    pub storage_offline_cost: Decimal,
    /// Online storage cost.
    #[diesel(sql_type = Numeric)]
    pub storage_online_cost: Decimal,
}

impl Group {
    /// Each resource's base units and cost, in [`Resource::ALL`] order.
    #[must_use]
    pub fn by_resource(&self) -> [(Resource, Decimal, Decimal); RESOURCES] {
        [
            (Resource::Cpu, self.cpu, self.cpu_cost),
            (Resource::Memory, self.memory, self.memory_cost),
            (Resource::Gpu, self.gpu, self.gpu_cost),
            (Resource::StorageOffline, self.storage_offline, self.storage_offline_cost),
            (Resource::StorageOnline, self.storage_online, self.storage_online_cost),
        ]
    }
}

/// `owner`'s entries of the days `from` to `to` (inclusive), grouped.
///
/// # Errors
/// When Postgres fails.
pub async fn groups(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    from: NaiveDate,
    to: NaiveDate,
) -> QueryResult<Vec<Group>> {
    diesel::sql_query(
        "SELECT day, user_id, project_id, billing_mode,
                sum(cpu_nanocore_seconds) AS cpu, sum(memory_byte_seconds) AS memory, sum(gpu_seconds) AS gpu,
                sum(cpu_cost) AS cpu_cost, sum(memory_cost) AS memory_cost, sum(gpu_cost) AS gpu_cost,
                sum(storage_offline_byte_seconds) AS storage_offline, sum(storage_online_byte_seconds) AS storage_online,
                sum(storage_offline_cost) AS storage_offline_cost, sum(storage_online_cost) AS storage_online_cost
         FROM ledger_entries WHERE owner_id = $1 AND day BETWEEN $2 AND $3
         GROUP BY day, user_id, project_id, billing_mode
         ORDER BY day, user_id, project_id NULLS FIRST, billing_mode",
    )
    .bind::<SqlUuid, _>(owner.as_uuid())
    .bind::<Date, _>(from)
    .bind::<Date, _>(to)
    .load(conn)
    .await
}

/// What an owner's days from `from` to `to` came to, modes but free.
#[derive(Debug, Clone, Default, QueryableByName)]
pub struct Sums {
    /// Cost.
    #[diesel(sql_type = Numeric)]
    pub cost: Decimal,
    /// Paid with credits.
    #[diesel(sql_type = Numeric)]
    pub credits_paid: Decimal,
    /// Unpaid (prepaid, no credit, no card).
    #[diesel(sql_type = Numeric)]
    pub unpaid: Decimal,
}

/// The cost, credits paid and unpaid of `owner`'s entries from `from` to `to`, free mode
/// left out.
///
/// # Errors
/// When Postgres fails.
pub async fn sums(conn: &mut AsyncPgConnection, owner: OwnerId, from: NaiveDate, to: NaiveDate) -> QueryResult<Sums> {
    diesel::sql_query(
        "SELECT coalesce(sum(cpu_cost + memory_cost + gpu_cost + storage_offline_cost + storage_online_cost), 0) AS cost,
                coalesce(sum(credits_paid), 0) AS credits_paid, coalesce(sum(unpaid), 0) AS unpaid
         FROM ledger_entries WHERE owner_id = $1 AND day BETWEEN $2 AND $3 AND billing_mode <> 'free'",
    )
    .bind::<SqlUuid, _>(owner.as_uuid())
    .bind::<Date, _>(from)
    .bind::<Date, _>(to)
    .get_result(conn)
    .await
}

/// What one day reports to Stripe for one resource at one price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayTotal {
    /// The UTC day.
    pub day: NaiveDate,
    /// The resource.
    pub resource: Resource,
    /// The price version.
    pub price_id: Uuid,
    /// Base units of the day's postpaid windows (summed, quantised once).
    pub whole: u128,
    /// Quanta of the day's hybrid windows' overflow.
    pub over: u128,
}

impl DayTotal {
    /// The day's quantity in quanta, as Stripe is told it.
    #[must_use]
    pub fn quanta(&self) -> u128 {
        crate::quantise::day_quanta(self.resource, self.day, self.whole, self.over)
    }
}

#[derive(QueryableByName)]
struct DayRow {
    #[diesel(sql_type = SqlUuid)]
    owner_id: Uuid,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = SqlUuid)]
    cpu_price_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    memory_price_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    gpu_price_id: Uuid,
    #[diesel(sql_type = Numeric)]
    cpu: Decimal,
    #[diesel(sql_type = Numeric)]
    memory: Decimal,
    #[diesel(sql_type = Numeric)]
    gpu: Decimal,
    #[diesel(sql_type = Numeric)]
    cpu_over: Decimal,
    #[diesel(sql_type = Numeric)]
    memory_over: Decimal,
    #[diesel(sql_type = Numeric)]
    gpu_over: Decimal,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    storage_offline_price_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    storage_online_price_id: Option<Uuid>,
    #[diesel(sql_type = Numeric)]
    storage_offline: Decimal,
    #[diesel(sql_type = Numeric)]
    storage_online: Decimal,
    #[diesel(sql_type = Numeric)]
    storage_offline_over: Decimal,
    #[diesel(sql_type = Numeric)]
    storage_online_over: Decimal,
}

fn whole(d: Decimal) -> u128 {
    u128::try_from(d.trunc().mantissa()).unwrap_or(0) / 10_u128.pow(d.trunc().scale())
}

/// What `owner`'s days from `from` to `to` report to Stripe, per day, resource and price:
/// postpaid windows' integers and hybrid windows' overflow quanta (free windows and what
/// credits paid report nothing). Days with nothing to report are left out.
///
/// # Errors
/// When Postgres fails.
pub async fn day_totals(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    from: NaiveDate,
    to: NaiveDate,
) -> QueryResult<Vec<DayTotal>> {
    let rows: Vec<DayRow> = diesel::sql_query(format!(
        "SELECT {DAY_COLUMNS} FROM ledger_entries
         WHERE owner_id = $1 AND day BETWEEN $2 AND $3 AND billing_mode <> 'free'
         GROUP BY {DAY_GROUPS}"
    ))
    .bind::<SqlUuid, _>(owner.as_uuid())
    .bind::<Date, _>(from)
    .bind::<Date, _>(to)
    .load(conn)
    .await?;
    Ok(fold(rows).into_values().next().unwrap_or_default())
}

/// [`day_totals`] of every owner with something to report from `from` to `to`.
///
/// # Errors
/// When Postgres fails.
pub async fn all_day_totals(
    conn: &mut AsyncPgConnection,
    from: NaiveDate,
    to: NaiveDate,
) -> QueryResult<BTreeMap<OwnerId, Vec<DayTotal>>> {
    let rows: Vec<DayRow> = diesel::sql_query(format!(
        "SELECT {DAY_COLUMNS} FROM ledger_entries
         WHERE day BETWEEN $1 AND $2 AND billing_mode <> 'free'
         GROUP BY {DAY_GROUPS}"
    ))
    .bind::<Date, _>(from)
    .bind::<Date, _>(to)
    .load(conn)
    .await?;
    Ok(fold(rows))
}

const DAY_COLUMNS: &str = "owner_id, day, cpu_price_id, memory_price_id, gpu_price_id,
    coalesce(sum(cpu_nanocore_seconds) FILTER (WHERE billing_mode = 'postpaid'), 0) AS cpu,
    coalesce(sum(memory_byte_seconds) FILTER (WHERE billing_mode = 'postpaid'), 0) AS memory,
    coalesce(sum(gpu_seconds) FILTER (WHERE billing_mode = 'postpaid'), 0) AS gpu,
    sum(cpu_over_quanta) AS cpu_over, sum(memory_over_quanta) AS memory_over,
    sum(gpu_over_quanta) AS gpu_over, storage_offline_price_id, storage_online_price_id,
    coalesce(sum(storage_offline_byte_seconds) FILTER (WHERE billing_mode = 'postpaid'), 0) AS storage_offline,
    coalesce(sum(storage_online_byte_seconds) FILTER (WHERE billing_mode = 'postpaid'), 0) AS storage_online,
    sum(storage_offline_over_quanta) AS storage_offline_over, sum(storage_online_over_quanta) AS storage_online_over";

const DAY_GROUPS: &str =
    "owner_id, day, cpu_price_id, memory_price_id, gpu_price_id, storage_offline_price_id, storage_online_price_id";

type Key = (NaiveDate, Resource, Uuid);

/// Per owner, each (day, resource, price)'s integers and overflow quanta summed, days with
/// nothing to report left out.
fn fold(rows: Vec<DayRow>) -> BTreeMap<OwnerId, Vec<DayTotal>> {
    let mut totals: BTreeMap<Uuid, BTreeMap<Key, (u128, u128)>> = BTreeMap::new();
    for r in rows {
        let owner = totals.entry(r.owner_id).or_default();
        for (resource, price, n, over) in [
            (Resource::Cpu, Some(r.cpu_price_id), r.cpu, r.cpu_over),
            (Resource::Memory, Some(r.memory_price_id), r.memory, r.memory_over),
            (Resource::Gpu, Some(r.gpu_price_id), r.gpu, r.gpu_over),
            (Resource::StorageOffline, r.storage_offline_price_id, r.storage_offline, r.storage_offline_over),
            (Resource::StorageOnline, r.storage_online_price_id, r.storage_online, r.storage_online_over),
        ] {
            // No storage price: an entry from before storage was metered, with no storage.
            let Some(price) = price else { continue };
            let t = owner.entry((r.day, resource, price)).or_default();
            t.0 += whole(n);
            t.1 += whole(over);
        }
    }
    totals
        .into_iter()
        .map(|(owner, days)| {
            let days = days
                .into_iter()
                .filter(|(_, (w, o))| *w > 0 || *o > 0)
                .map(|((day, resource, price_id), (whole, over))| DayTotal { day, resource, price_id, whole, over })
                .collect();
            (OwnerId::from_uuid(owner), days)
        })
        .collect()
}

/// One ledger entry behind an owner-day.
#[derive(Debug, Clone, QueryableByName)]
pub struct EntryRow {
    /// The sample.
    #[diesel(sql_type = SqlUuid)]
    pub sample_id: Uuid,
    /// Whose pods.
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    /// The cluster.
    #[diesel(sql_type = SqlUuid)]
    pub cluster_id: Uuid,
    /// The namespace.
    #[diesel(sql_type = Text)]
    pub namespace: String,
    /// The project.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub project_id: Option<i64>,
    /// The window.
    #[diesel(sql_type = Timestamptz)]
    pub window_start: DateTime<Utc>,
    /// Its end.
    #[diesel(sql_type = Timestamptz)]
    pub window_end: DateTime<Utc>,
    /// The mode.
    #[diesel(sql_type = Text)]
    pub billing_mode: String,
    /// Nanocore-seconds.
    #[diesel(sql_type = BigInt)]
    pub cpu_nanocore_seconds: i64,
    /// Byte-seconds.
    #[diesel(sql_type = BigInt)]
    pub memory_byte_seconds: i64,
    /// GPU-seconds.
    #[diesel(sql_type = BigInt)]
    pub gpu_seconds: i64,
    /// Offline storage byte-seconds.
    #[diesel(sql_type = BigInt)]
    pub storage_offline_byte_seconds: i64,
    /// Online storage byte-seconds.
    #[diesel(sql_type = BigInt)]
    pub storage_online_byte_seconds: i64,
    /// `usage` or `storage`: which of metering's events the sample came from.
    #[diesel(sql_type = Text)]
    pub source: String,
    /// Whether metering estimated the sample to fill a gap.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub estimated: bool,
    /// The cost.
    #[diesel(sql_type = Numeric)]
    pub cost: Decimal,
    /// Paid with credits.
    #[diesel(sql_type = Numeric)]
    pub credits_paid: Decimal,
}

/// Which of an owner-day's entries [`entries`] reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct EntryFilter<'a> {
    /// Only this person's (the pods' user, or the storage's project creator).
    pub user: Option<Uuid>,
    /// Only entries of this `source` (`usage` or `storage`).
    pub source: Option<&'a str>,
    /// Only entries of this project: `Some(Some(id))` of Hopsworks' project `id`, `Some(None)`
    /// of no known project (`project_id` null).
    pub project: Option<Option<i64>>,
}

/// The entries of `owner`'s `day` that `filter` keeps, by window and sample: `limit` of them
/// after `after`, skipping the first `offset` of those.
///
/// # Errors
/// When Postgres fails.
pub async fn entries(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    day: NaiveDate,
    filter: EntryFilter<'_>,
    after: Option<(DateTime<Utc>, Uuid)>,
    offset: i64,
    limit: i64,
) -> QueryResult<Vec<EntryRow>> {
    let (at, id) = after.unwrap_or((DateTime::<Utc>::UNIX_EPOCH, Uuid::nil()));
    diesel::sql_query(
        "SELECT sample_id, user_id, cluster_id, namespace, project_id, window_start, window_end, billing_mode,
                cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, storage_offline_byte_seconds,
                storage_online_byte_seconds, source, estimated,
                cpu_cost + memory_cost + gpu_cost + storage_offline_cost + storage_online_cost AS cost, credits_paid
         FROM ledger_entries WHERE owner_id = $1 AND day = $2 AND (window_start, sample_id) > ($3, $4)
           AND ($6::uuid IS NULL OR user_id = $6) AND ($7::text IS NULL OR source = $7)
           AND (NOT $8 OR project_id IS NOT DISTINCT FROM $9)
         ORDER BY window_start, sample_id LIMIT $5 OFFSET $10",
    )
    .bind::<SqlUuid, _>(owner.as_uuid())
    .bind::<Date, _>(day)
    .bind::<Timestamptz, _>(at)
    .bind::<SqlUuid, _>(id)
    .bind::<BigInt, _>(limit)
    .bind::<Nullable<SqlUuid>, _>(filter.user)
    .bind::<Nullable<Text>, _>(filter.source)
    .bind::<diesel::sql_types::Bool, _>(filter.project.is_some())
    .bind::<Nullable<BigInt>, _>(filter.project.flatten())
    .bind::<BigInt, _>(offset)
    .load(conn)
    .await
}

/// Whether `user` has ever had an entry billed to `owner` (a past member's usage stays in
/// the owner's ledger after they leave).
///
/// # Errors
/// When Postgres fails.
pub async fn has_entries_of(conn: &mut AsyncPgConnection, owner: OwnerId, user: Uuid) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let row: Found =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE owner_id = $1 AND user_id = $2) AS found")
            .bind::<SqlUuid, _>(owner.as_uuid())
            .bind::<SqlUuid, _>(user)
            .get_result(conn)
            .await?;
    Ok(row.found)
}
