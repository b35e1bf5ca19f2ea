//! The usage ledger (`ledger_entries`): every `UsageRecordedV1` and `StorageRecordedV1`
//! sample ([`crate::storage`]), once, with the billing mode and the price of each resource in
//! force at its window's start, and what it costs (decisions 0038 and 0057).
//!
//! A batch of samples is ingested in the consumer's transaction ([`ingest`]):
//! 1. each sample becomes one entry per UTC day its window touches (a window across midnight is
//!    split pro rata by seconds, the remainder to the later day), priced per resource;
//! 2. the entries go in with one multi-row insert, `ON CONFLICT (sample_id, day) DO NOTHING`,
//!    so a redelivered or republished sample changes nothing: only the entries inserted now go
//!    on;
//! 3. prepaid entries are paid from the owner's grants, window by window in window order
//!    ([`crate::credits`]'s spending order); what the credits cannot pay is billed postpaid
//!    by the hybrid rule ([`money::overflow`]) when a card is on file, and is otherwise
//!    recorded unpaid with one `CreditsExhaustedV1` per exhaustion; a low-balance threshold
//!    the balance falls to from above mails the owner, once per crossing;
//! 4. the month's cost (every mode but free) is added up, and 80, 90 and 100 % of a spending
//!    cap mail the owner once per month (and the admins at 100 %).

use crate::modes;
use crate::money::{self, RESOURCES, Resource};
use crate::prices::{self, Price};
use chrono::Datelike;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Date, Nullable, Numeric, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::UsageRecordedV1;
use hopsbridge_domain::{BillingMode, ClusterId, EventId, OwnerId, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::DbError;
use hopsbridge_platform::events::{Handler, HandlerError, InBatch, ReceivedEvent};
use hopsbridge_platform::mail::{self, MailConfig};
use rust_decimal::Decimal;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

mod costs;
mod prepaid;

use costs::{Mails, track_costs};
use prepaid::settle_prepaid;

/// The longest window the ledger takes: a sample claiming more is refused.
pub const MAX_WINDOW_SECS: i64 = 31 * 86_400;

/// The shares of a spending cap that alert, in percent.
pub const CAP_ALERTS: [i32; 3] = [80, 90, 100];

/// Which event a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `UsageRecordedV1` (or its backfill): CPU, memory and GPUs of one user's pods.
    Usage,
    /// `StorageRecordedV1`: one project's offline and online storage.
    Storage,
}

impl Source {
    /// The stored name (`ledger_entries.source`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::Storage => "storage",
        }
    }
}

/// A measured sample, from a `UsageRecordedV1`, a `StorageRecordedV1` or metering's backfill
/// route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// metering's id: the ledger's key.
    pub sample_id: Uuid,
    /// The event that announced it; none when backfilled.
    pub event_id: Option<EventId>,
    /// Whose pods.
    pub user: UserId,
    /// Who pays (the owner at measurement time).
    pub owner: OwnerId,
    /// Where.
    pub cluster: ClusterId,
    /// The project's namespace.
    pub namespace: String,
    /// Hopsworks' project id, when known.
    pub project_id: Option<i64>,
    /// The window.
    pub window_start: DateTime<Utc>,
    /// Its end.
    pub window_end: DateTime<Utc>,
    /// Nanocore-seconds, byte-seconds, GPU-seconds, offline and online storage byte-seconds
    /// (in [`Resource::ALL`] order).
    pub usage: [u64; RESOURCES],
    /// Estimated rather than measured.
    pub estimated: bool,
    /// Which event it came from.
    pub source: Source,
}

impl Sample {
    /// The sample a `UsageRecordedV1` announces.
    ///
    /// # Errors
    /// Why the event can never be ledgered.
    pub fn from_event(id: Option<EventId>, e: &UsageRecordedV1) -> Result<Self, String> {
        let uuid = |field: &str, v: &str| v.parse::<Uuid>().map_err(|_| format!("{field} is not a UUID: {v:?}"));
        let at = |field: &str, secs: i64| {
            DateTime::from_timestamp(secs, 0).ok_or_else(|| format!("{field} {secs} is no time"))
        };
        let int = |field: &str, v: u64| {
            i64::try_from(v).map(|_| v).map_err(|_| format!("{field} {v} does not fit the ledger"))
        };
        let sample = Self {
            sample_id: uuid("sample_id", &e.sample_id)?,
            event_id: id,
            user: uuid("user_id", &e.user_id)?.into(),
            owner: uuid("owner_user_id", &e.owner_user_id)?.into(),
            cluster: uuid("cluster_id", &e.cluster_id)?.into(),
            namespace: e.namespace.clone(),
            project_id: (e.project_id != 0).then_some(e.project_id),
            window_start: at("window_start", e.window_start_unix_seconds)?,
            window_end: at("window_end", e.window_end_unix_seconds)?,
            usage: [
                int("cpu_nanocore_seconds", e.cpu_nanocore_seconds)?,
                int("memory_byte_seconds", e.memory_byte_seconds)?,
                int("gpu_seconds", e.gpu_seconds)?,
                0,
                0,
            ],
            estimated: e.estimated,
            source: Source::Usage,
        };
        sample.checked()
    }

    /// `self` when its window is one the ledger takes.
    ///
    /// # Errors
    /// Why not.
    pub(crate) fn checked(self) -> Result<Self, String> {
        let sample = self;
        let secs = (sample.window_end - sample.window_start).num_seconds();
        if !(1..=MAX_WINDOW_SECS).contains(&secs) {
            return Err(format!("the window of sample {} lasts {secs} s", sample.sample_id));
        }
        Ok(sample)
    }

    /// The UTC days the window touches, with the seconds it spends in each.
    #[must_use]
    pub fn days(&self) -> Vec<(NaiveDate, u64)> {
        let mut days = Vec::new();
        let mut t = self.window_start;
        while t < self.window_end {
            let day = t.date_naive();
            let midnight = (day + TimeDelta::days(1)).and_time(NaiveTime::MIN).and_utc();
            let until = midnight.min(self.window_end);
            days.push((day, u64::try_from((until - t).num_seconds()).unwrap_or(0)));
            t = until;
        }
        days
    }
}

/// One ledger entry as computed before it is inserted.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The sample.
    pub sample: Arc<Sample>,
    /// The UTC day of this part of the window.
    pub day: NaiveDate,
    /// This day's share of the usage.
    pub usage: [u64; RESOURCES],
    /// The mode in force at the window's start.
    pub mode: BillingMode,
    /// The price ids in force at the window's start.
    pub price_ids: [Uuid; RESOURCES],
    /// The prices.
    pub prices: [Decimal; RESOURCES],
    /// This day's cost of each resource.
    pub costs: [Decimal; RESOURCES],
}

impl Entry {
    /// The cost of every resource.
    #[must_use]
    pub fn cost(&self) -> Decimal {
        self.costs.iter().sum()
    }
}

/// Why a batch was not ingested.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A mail did not render.
    #[error(transparent)]
    Mail(#[from] mail::MailError),
    /// The price book has no version for a resource at a window's start (not seeded yet).
    #[error("no price in force at {0}")]
    NoPrice(DateTime<Utc>),
    /// An amount beyond any real usage.
    #[error(transparent)]
    Overflow(#[from] money::Overflow),
}

impl From<diesel::result::Error> for IngestError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<IngestError> for HandlerError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Overflow(o) => Self::Reject(o.to_string()),
            e => Self::Retry(e.into()),
        }
    }
}

/// What ingestion needs besides the connection.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Low-balance thresholds, minor units.
    pub thresholds: Vec<i64>,
    /// The currency amounts are in.
    pub currency: String,
    /// Mail settings (admin alerts, links).
    pub mail: MailConfig,
    /// The calendar clock.
    pub clock: Clock,
}

impl Settings {
    fn billing_link(&self) -> String {
        self.mail.links().map(|l| l.to(&["billing"], &[]).to_string()).unwrap_or_default()
    }
}

/// The `UsageRecordedV1` consumer.
#[derive(Clone, Debug)]
pub struct Ledger {
    settings: Arc<Settings>,
}

impl Ledger {
    /// The consumer's handler.
    #[must_use]
    pub fn new(settings: Settings) -> Self {
        Self { settings: Arc::new(settings) }
    }

    /// The settings ingestion runs with.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }
}

impl Handler<UsageRecordedV1> for Ledger {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UsageRecordedV1>,
    ) -> Result<(), HandlerError> {
        let sample = Sample::from_event(Some(event.id), &event.payload).map_err(HandlerError::Reject)?;
        ingest(conn, &self.settings, vec![sample]).await?;
        Ok(())
    }

    async fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[InBatch<'_, UsageRecordedV1>],
    ) -> Result<(), HandlerError> {
        let samples = events
            .iter()
            .map(|e| Sample::from_event(Some(e.event.id), &e.event.payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandlerError::Reject)?;
        ingest(conn, &self.settings, samples).await?;
        Ok(())
    }
}

/// Ingests `samples` in the caller's transaction; answers how many entries were new.
///
/// # Errors
/// [`IngestError`]; nothing is kept then (the caller rolls back).
pub async fn ingest(
    conn: &mut AsyncPgConnection,
    settings: &Settings,
    mut samples: Vec<Sample>,
) -> Result<usize, IngestError> {
    samples.sort_by_key(|s| (s.window_start, s.sample_id));
    samples.dedup_by_key(|s| s.sample_id);
    if samples.is_empty() {
        return Ok(0);
    }
    let book = prices::book(conn).await?;
    let mut owners: Vec<OwnerId> = samples.iter().map(|s| s.owner).collect();
    owners.sort_unstable();
    owners.dedup();
    let history = modes::history(conn, &owners).await?;
    let mut entries = Vec::with_capacity(samples.len());
    for sample in samples {
        let sample = Arc::new(sample);
        let in_force = book.all_in_force(sample.window_start).ok_or(IngestError::NoPrice(sample.window_start))?;
        let mode = history.at(sample.owner, sample.window_start);
        let days = sample.days();
        let secs: Vec<u64> = days.iter().map(|(_, s)| *s).collect();
        let shares: Vec<Vec<u64>> = sample.usage.iter().map(|n| money::pro_rata(*n, &secs)).collect();
        for (i, (day, _)) in days.iter().enumerate() {
            let usage: [u64; RESOURCES] = std::array::from_fn(|r| shares[r][i]);
            let prices = in_force.map(|p: &Price| p.unit_amount_decimal);
            let mut costs = [Decimal::ZERO; RESOURCES];
            for r in Resource::ALL {
                costs[r.index()] = money::cost(r, *day, usage[r.index()], prices[r.index()])?;
            }
            entries.push(Entry {
                sample: Arc::clone(&sample),
                day: *day,
                usage,
                mode,
                price_ids: in_force.map(|p| p.id),
                prices,
                costs,
            });
        }
    }
    let added = insert(conn, &entries).await?;
    let new: Vec<&Entry> = entries.iter().filter(|e| added.contains(&(e.sample.sample_id, e.day))).collect();
    let prepaid: Vec<&Entry> = new.iter().copied().filter(|e| e.mode == BillingMode::Prepaid).collect();
    let mut mails = Mails::default();
    if !prepaid.is_empty() {
        settle_prepaid(conn, settings, &prepaid, &mut mails).await?;
    }
    track_costs(conn, &new, &mut mails, settings.clock.now()).await?;
    mails.send(conn, settings).await?;
    Ok(new.len())
}

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = SqlUuid)]
    sample_id: Uuid,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
}

/// Inserts `entries` in one statement (each column bound as one array), answering the keys
/// inserted now.
async fn insert(conn: &mut AsyncPgConnection, entries: &[Entry]) -> Result<HashSet<(Uuid, NaiveDate)>, IngestError> {
    let mut added = HashSet::with_capacity(entries.len());
    for chunk in entries.chunks(5000) {
        let col = |f: &dyn Fn(&Entry) -> Uuid| chunk.iter().map(f).collect::<Vec<_>>();
        let num = |f: &dyn Fn(&Entry) -> i64| chunk.iter().map(f).collect::<Vec<_>>();
        let dec = |r: usize| chunk.iter().map(|e| e.costs[r]).collect::<Vec<_>>();
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let keys: Vec<Key> = diesel::sql_query(
            "INSERT INTO ledger_entries (sample_id, day, event_id, user_id, owner_id, cluster_id, namespace, project_id,
                 window_start, window_end, cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, estimated,
                 billing_mode, cpu_price_id, memory_price_id, gpu_price_id, cpu_cost, memory_cost, gpu_cost,
                 storage_offline_byte_seconds, storage_online_byte_seconds, storage_offline_price_id,
                 storage_online_price_id, storage_offline_cost, storage_online_cost, source)
             SELECT * FROM unnest($1::uuid[], $2::date[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[], $7::text[],
                 $8::bigint[], $9::timestamptz[], $10::timestamptz[], $11::bigint[], $12::bigint[], $13::bigint[],
                 $14::boolean[], $15::text[], $16::uuid[], $17::uuid[], $18::uuid[], $19::numeric[], $20::numeric[],
                 $21::numeric[], $22::bigint[], $23::bigint[], $24::uuid[], $25::uuid[], $26::numeric[],
                 $27::numeric[], $28::text[])
             ON CONFLICT (sample_id, day) DO NOTHING
             RETURNING sample_id, day",
        )
        .bind::<Array<SqlUuid>, _>(col(&|e| e.sample.sample_id))
        .bind::<Array<Date>, _>(chunk.iter().map(|e| e.day).collect::<Vec<_>>())
        .bind::<Array<Nullable<SqlUuid>>, _>(chunk.iter().map(|e| e.sample.event_id.map(|i| i.as_uuid())).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(col(&|e| e.sample.user.as_uuid()))
        .bind::<Array<SqlUuid>, _>(col(&|e| e.sample.owner.as_uuid()))
        .bind::<Array<SqlUuid>, _>(col(&|e| e.sample.cluster.as_uuid()))
        .bind::<Array<Text>, _>(chunk.iter().map(|e| e.sample.namespace.as_str()).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(chunk.iter().map(|e| e.sample.project_id).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(chunk.iter().map(|e| e.sample.window_start).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(chunk.iter().map(|e| e.sample.window_end).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(num(&|e| signed(e.usage[0])))
        .bind::<Array<BigInt>, _>(num(&|e| signed(e.usage[1])))
        .bind::<Array<BigInt>, _>(num(&|e| signed(e.usage[2])))
        .bind::<Array<Bool>, _>(chunk.iter().map(|e| e.sample.estimated).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(chunk.iter().map(|e| e.mode.as_str()).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(col(&|e| e.price_ids[0]))
        .bind::<Array<SqlUuid>, _>(col(&|e| e.price_ids[1]))
        .bind::<Array<SqlUuid>, _>(col(&|e| e.price_ids[2]))
        .bind::<Array<Numeric>, _>(dec(0))
        .bind::<Array<Numeric>, _>(dec(1))
        .bind::<Array<Numeric>, _>(dec(2))
        .bind::<Array<BigInt>, _>(num(&|e| signed(e.usage[3])))
        .bind::<Array<BigInt>, _>(num(&|e| signed(e.usage[4])))
        .bind::<Array<SqlUuid>, _>(col(&|e| e.price_ids[3]))
        .bind::<Array<SqlUuid>, _>(col(&|e| e.price_ids[4]))
        .bind::<Array<Numeric>, _>(dec(3))
        .bind::<Array<Numeric>, _>(dec(4))
        .bind::<Array<Text>, _>(chunk.iter().map(|e| e.sample.source.as_str()).collect::<Vec<_>>())
        .load(conn)
        .await?;
        added.extend(keys.into_iter().map(|k| (k.sample_id, k.day)));
    }
    Ok(added)
}

/// The first day of `day`'s month.
#[must_use]
pub fn month_of(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn event(start: i64, end: i64) -> UsageRecordedV1 {
        UsageRecordedV1 {
            sample_id: Uuid::now_v7().to_string(),
            cluster_id: Uuid::now_v7().to_string(),
            namespace: "lab".into(),
            user_id: Uuid::now_v7().to_string(),
            owner_user_id: Uuid::now_v7().to_string(),
            window_start_unix_seconds: start,
            window_end_unix_seconds: end,
            cpu_nanocore_seconds: 10,
            ..Default::default()
        }
    }

    #[test]
    fn a_window_across_midnight_touches_both_days() {
        let midnight = 1_798_761_600;
        let s = Sample::from_event(None, &event(midnight - 300, midnight + 600)).unwrap();
        let days = s.days();
        assert_eq!(days.len(), 2);
        assert_eq!((days[0].1, days[1].1), (300, 600));
        assert_eq!(days[1].0, DateTime::from_timestamp(midnight, 0).unwrap().date_naive());
        assert_eq!(Sample::from_event(None, &event(midnight, midnight + 900)).unwrap().days().len(), 1);
        assert!(Sample::from_event(None, &event(midnight, midnight)).is_err());
        let mut bad = event(midnight, midnight + 900);
        bad.owner_user_id = "nobody".into();
        assert!(Sample::from_event(None, &bad).unwrap_err().contains("owner_user_id"));
        assert_eq!(
            month_of(NaiveDate::from_ymd_opt(2026, 12, 9).unwrap()),
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
        );
    }
}
