//! Postpaid usage reported to Stripe as meter events (decision 0044).
//!
//! A pass ([`Reporter::pass`]):
//! 1. settles the reports whose outcome is unknown (`pending` rows of an earlier pass: the
//!    process may have died after sending): sent again with the same identifier while Stripe's
//!    24-hour identifier window surely holds (created less than 23 h ago), else checked against
//!    Stripe's meter event summary of the day ([`Reporter::settle_unknown`]);
//! 2. plans, per owner, closed UTC day within Stripe's 35-day window, resource and price
//!    version: what the ledger says Stripe must bill ([`crate::usage::all_day_totals`]) minus
//!    what accepted reports carried; a positive difference is a new revision carrying only it;
//! 3. writes the new reports `pending` (committed), sends them (`POST
//!    /v1/billing/meter_events`, `Idempotency-Key` = identifier) paced at
//!    `reporting.max_events_per_second` with many in flight, and marks each `accepted` when
//!    Stripe has it.
//!
//! A day at a price Stripe does not have yet (its meter and price not recorded, or the item of
//! the version in force missing from a live subscription) waits for a later pass.
//!
//! A report's event is timestamped at the later of its day's start and when the subscription
//! got the price's item (Stripe bills an event by an item only from then); a correction for a
//! day whose invoice is finalised is timestamped at the start of the open period instead and
//! records the period it was carried into.

use crate::catalog::{self, Prices};
use crate::config::ReportingConfig;
use crate::events::next_month;
use crate::ledger::Settings;
use crate::quantise::{self, MAX_SIGNIFICANT_DIGITS};
use crate::schema::{accounts, meter_reports, reconciliation_findings, report_requests};
use crate::stripe::{Stripe, StripeError, params};
use crate::usage::{self, DayTotal};
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use hopsbridge_domain::OwnerId;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::mail::{self, Alert};
use hopsbridge_platform::retry::Backoff;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Stripe takes meter events timestamped at most this many days back.
pub const WINDOW_DAYS: i64 = 35;

/// A pending report created this recently is surely inside Stripe's 24-hour identifier
/// window when sent again (it was sent after it was created).
const RESEND_WITHIN: TimeDelta = TimeDelta::hours(23);

/// A day's report made later than this after its billing period ended would land after
/// Stripe finalised the period's invoice (an hour after `invoice.created`): it is carried into
/// the open period.
const FINALISED_AFTER: TimeDelta = TimeDelta::minutes(50);

/// Rows written per statement.
const BATCH: usize = 500;

/// The pauses before a meter event is sent again after a 429, a 5xx or no answer: 200 ms
/// doubling to 10 s, with jitter, eight more tries; then the report stays pending for the next
/// pass.
const SEND_RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).with_max_attempts(8);

/// Meter events may catch up a fiftieth of a second's worth after late turns of the pace
/// (19 at 950 a second: never more than 969 in any second, under live mode's 1,000).
const EVENT_BURST_DIVISOR: u32 = 50;

/// Stripe's answer to an identifier it has already counted.
const DUPLICATE: &str = "An event already exists with identifier";

/// One meter event report as recorded.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = meter_reports)]
pub struct Report {
    /// The report.
    pub id: Uuid,
    /// Whose usage.
    pub owner_id: Uuid,
    /// The UTC day of the usage.
    pub day: NaiveDate,
    /// `cpu`, `memory` or `gpu`.
    pub resource: String,
    /// The price version (`prices.id`).
    pub price_id: Uuid,
    /// 1 for the day's first report, then one more per correction.
    pub revision: i32,
    /// The meter event's identifier.
    pub identifier: String,
    /// Quanta (1e-9 of a billed unit) this report adds.
    pub delta_quanta: i64,
    /// The day's quanta once this report counts.
    pub total_quanta: i64,
    /// The meter event's timestamp.
    pub event_timestamp: DateTime<Utc>,
    /// The first day of the billing period a correction was carried into (its own period's
    /// invoice was finalised).
    pub carried_into: Option<NaiveDate>,
    /// `pending`, `accepted` or `abandoned`.
    pub state: String,
    /// `cus_…`.
    pub customer_id: String,
    /// `mtr_…`.
    pub meter_id: String,
    /// The meter's event name.
    pub event_name: String,
    /// When it was planned (and written, before it was sent).
    pub created_at: DateTime<Utc>,
    /// When Stripe's answer was last received.
    pub sent_at: Option<DateTime<Utc>>,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PassOutcome {
    /// Reports planned.
    pub planned: usize,
    /// Reports Stripe accepted (new ones and earlier pending ones).
    pub accepted: usize,
    /// Reports still pending (Stripe could not be reached).
    pub pending: usize,
    /// Owner-days left for a later pass because Stripe does not have their price yet: the
    /// version's meter and price are not recorded, or the live subscription lacks the item of
    /// the version in force.
    pub waiting: usize,
    /// Reports abandoned (Stripe does not have them; a new revision follows).
    pub abandoned: usize,
    /// Findings recorded.
    pub findings: usize,
}

impl std::ops::AddAssign for PassOutcome {
    fn add_assign(&mut self, o: Self) {
        self.planned += o.planned;
        self.accepted += o.accepted;
        self.pending += o.pending;
        self.waiting += o.waiting;
        self.abandoned += o.abandoned;
        self.findings += o.findings;
    }
}

/// Which days of whose usage a pass reports.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// One owner, or every one.
    pub owner: Option<OwnerId>,
    /// The last day reported (inclusive).
    pub through: NaiveDate,
}

/// Reports postpaid usage to Stripe.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// billing's schema.
    pub db: Database,
    /// Stripe for reads (summaries) and the catalogue.
    pub stripe: Stripe,
    /// Stripe for meter events, paced at `reporting.max_events_per_second`.
    pub events: Stripe,
    /// The catalogue of price versions.
    pub prices: Prices,
    /// The clock and alert settings.
    pub settings: Arc<Settings>,
    /// The settings.
    pub config: ReportingConfig,
    /// One pass at a time in this process.
    pub running: Arc<tokio::sync::Mutex<()>>,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReportingError {
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    /// No connection.
    #[error(transparent)]
    Pool(#[from] hopsbridge_platform::db::DbError),
    /// Stripe failed where the pass cannot go on without it.
    #[error(transparent)]
    Stripe(#[from] StripeError),
    /// The catalogue could not be brought in step.
    #[error(transparent)]
    Catalogue(#[from] catalog::CatalogError),
    /// An alert could not be queued.
    #[error(transparent)]
    Mail(#[from] mail::MailError),
}

/// The identifier of revision `revision` of `owner`'s `day` at price version `price`:
/// `hb-<owner>-<yyyymmdd>-<price>-r<revision>` (83 characters at most for 5-digit revisions;
/// Stripe allows 100).
#[must_use]
pub fn identifier(owner: Uuid, day: NaiveDate, price: Uuid, revision: i32) -> String {
    format!("hb-{}-{}-{}-r{revision}", owner.simple(), day.format("%Y%m%d"), price.simple())
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive().with_day(1).map_or(at, day_start)
}

/// The last day closed at `now`: its end is `close_after` or longer ago.
#[must_use]
pub fn last_closed_day(now: DateTime<Utc>, close_after_secs: u64) -> NaiveDate {
    let grace = TimeDelta::seconds(i64::try_from(close_after_secs).unwrap_or(i64::MAX));
    (now - grace).date_naive() - TimeDelta::days(1)
}

#[derive(QueryableByName)]
struct Reported {
    #[diesel(sql_type = SqlUuid)]
    owner_id: Uuid,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = SqlUuid)]
    price_id: Uuid,
    #[diesel(sql_type = BigInt)]
    accepted: i64,
    #[diesel(sql_type = Integer)]
    revision: i32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pending: bool,
}

#[derive(QueryableByName)]
struct Billed {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Text)]
    customer: String,
    #[diesel(sql_type = Nullable<Text>)]
    subscription: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
}

#[derive(QueryableByName)]
struct ItemRow {
    #[diesel(sql_type = Text)]
    subscription_id: String,
    #[diesel(sql_type = SqlUuid)]
    price_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    added_at: DateTime<Utc>,
}

/// What Stripe answered to one report.
enum Sent {
    Accepted(Uuid),
    Pending,
    Refused(Box<Report>, String),
}

impl Reporter {
    /// The reporter of `config`'s Stripe account on `db`, on calendar time `clock`: reads go
    /// through `stripe` (the service's client, paced at `stripe.max_requests_per_second`),
    /// meter events through a client of their own paced at
    /// `reporting.max_events_per_second` (Stripe limits them apart).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        config: &crate::BillingConfig,
        db: Database,
        (stripe, prices): (Stripe, Prices),
        clock: hopsbridge_platform::clock::Clock,
    ) -> anyhow::Result<Self> {
        let rate = config.reporting.max_events_per_second;
        let events = Stripe::new(&config.stripe.api_base, config.stripe.secret_key.clone(), rate)?
            .with_burst(rate, rate / EVENT_BURST_DIVISOR);
        let settings = Settings {
            thresholds: config.credits.alert_thresholds_minor.clone(),
            currency: config.stripe.currency.clone(),
            mail: config.mail.clone(),
            clock,
        };
        Ok(Self {
            db,
            stripe,
            events,
            prices,
            settings: Arc::new(settings),
            config: config.reporting.clone(),
            running: Arc::default(),
        })
    }

    /// A pass over every owner's closed days ([`Scope`] through the last closed day).
    ///
    /// # Errors
    /// [`ReportingError`].
    pub async fn report_closed(&self) -> Result<PassOutcome, ReportingError> {
        let now = self.settings.clock.now();
        let through = last_closed_day(now, self.config.close_after_secs);
        self.pass(Scope { owner: None, through }).await
    }

    /// Settles unknown outcomes, then plans and sends what `scope`'s days lack.
    ///
    /// # Errors
    /// [`ReportingError`]; what was accepted before stays recorded.
    pub async fn pass(&self, scope: Scope) -> Result<PassOutcome, ReportingError> {
        let _one = self.running.lock().await;
        let mut outcome = self.settle_unknown().await?;
        let now = self.settings.clock.now();
        {
            let mut conn = self.db.conn().await?;
            catalog::sync_items(&mut conn, (&self.stripe, &self.prices), now).await?;
        }
        let planned = self.plan(scope, now, &mut outcome).await?;
        outcome.planned += planned.len();
        outcome += self.send_all(planned).await?;
        Ok(outcome)
    }

    /// The reports `scope`'s days lack, written `pending`.
    async fn plan(
        &self,
        scope: Scope,
        now: DateTime<Utc>,
        outcome: &mut PassOutcome,
    ) -> Result<Vec<Report>, ReportingError> {
        let from = now.date_naive() - TimeDelta::days(WINDOW_DAYS - 1);
        let through = scope.through;
        if through < from {
            return Ok(Vec::new());
        }
        let mut conn = self.db.conn().await?;
        let desired: BTreeMap<OwnerId, Vec<DayTotal>> = match scope.owner {
            Some(owner) => BTreeMap::from([(owner, usage::day_totals(&mut conn, owner, from, through).await?)]),
            None => usage::all_day_totals(&mut conn, from, through).await?,
        };
        let reported: Vec<Reported> = diesel::sql_query(
            "SELECT owner_id, day, price_id,
                    coalesce(sum(delta_quanta) FILTER (WHERE state = 'accepted'), 0)::bigint AS accepted,
                    max(revision) AS revision, bool_or(state = 'pending') AS pending
             FROM meter_reports WHERE day BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR owner_id = $3)
             GROUP BY owner_id, day, price_id",
        )
        .bind::<Date, _>(from)
        .bind::<Date, _>(through)
        .bind::<Nullable<SqlUuid>, _>(scope.owner.map(|o| o.as_uuid()))
        .load(&mut conn)
        .await?;
        let reported: HashMap<(Uuid, NaiveDate, Uuid), Reported> =
            reported.into_iter().map(|r| ((r.owner_id, r.day, r.price_id), r)).collect();
        let billed: Vec<Billed> = diesel::sql_query(
            "SELECT user_id, stripe_customer_id AS customer, stripe_subscription_id AS subscription,
                    subscription_status AS status
             FROM accounts WHERE stripe_customer_id IS NOT NULL AND ($1::uuid IS NULL OR user_id = $1)",
        )
        .bind::<Nullable<SqlUuid>, _>(scope.owner.map(|o| o.as_uuid()))
        .load(&mut conn)
        .await?;
        let billed: HashMap<Uuid, Billed> = billed.into_iter().map(|b| (b.user_id, b)).collect();
        let items: Vec<ItemRow> = diesel::sql_query(
            "SELECT i.subscription_id, i.price_id, i.added_at FROM subscription_items i
             JOIN accounts a ON a.stripe_subscription_id = i.subscription_id
             WHERE ($1::uuid IS NULL OR a.user_id = $1)",
        )
        .bind::<Nullable<SqlUuid>, _>(scope.owner.map(|o| o.as_uuid()))
        .load(&mut conn)
        .await?;
        let items: HashMap<(String, Uuid), DateTime<Utc>> =
            items.into_iter().map(|i| ((i.subscription_id, i.price_id), i.added_at)).collect();
        // What Stripe has: the pass's sync recorded every version it could bring in step.
        let meters: HashMap<Uuid, catalog::StripePrice> = crate::schema::stripe_prices::table
            .select(catalog::StripePrice::as_select())
            .load(&mut conn)
            .await?
            .into_iter()
            .map(|p| (p.price_id, p))
            .collect();
        let book = crate::prices::book(&mut conn).await?;

        let open_period = month_start(now);
        let mut planned = Vec::new();
        for (owner, days) in desired {
            let owner = owner.as_uuid();
            let Some(account) = billed.get(&owner) else {
                tracing::warn!(%owner, "usage to report for an owner without a Stripe customer");
                continue;
            };
            for total in days {
                let key = (owner, total.day, total.price_id);
                let before = reported.get(&key);
                if before.is_some_and(|r| r.pending) {
                    continue;
                }
                let accepted = before.map_or(0, |r| r.accepted);
                let quanta = total.quanta();
                let Ok(desired) = i64::try_from(quanta) else {
                    outcome.findings +=
                        self.finding(&mut conn, "report_too_large", owner, total.day, &quanta.to_string(), "-").await?;
                    continue;
                };
                let delta = desired - accepted;
                if delta < 0 {
                    outcome.findings += self
                        .finding(
                            &mut conn,
                            "report_negative",
                            owner,
                            total.day,
                            &desired.to_string(),
                            &accepted.to_string(),
                        )
                        .await?;
                    continue;
                }
                if delta == 0 {
                    continue;
                }
                let delta_quanta = u128::try_from(delta).unwrap_or(0);
                if quantise::significant_digits(delta_quanta) > MAX_SIGNIFICANT_DIGITS {
                    outcome.findings += self
                        .finding(
                            &mut conn,
                            "report_too_large",
                            owner,
                            total.day,
                            &quantise::quanta_text(delta_quanta),
                            "-",
                        )
                        .await?;
                    continue;
                }
                let Some(meter) = meters.get(&total.price_id) else {
                    let price = total.price_id;
                    tracing::warn!(%owner, day = %total.day, %price, "waiting for the price's Stripe meter");
                    outcome.waiting += 1;
                    continue;
                };
                let item = account.subscription.as_ref().and_then(|s| items.get(&(s.clone(), total.price_id)));
                // The sync gives a live subscription an item of the version in force; until
                // Stripe has it, an event would be counted by the meter and billed by no item.
                let live = account.subscription.is_some()
                    && !account.status.as_deref().is_some_and(|s| crate::accounts::ENDED.contains(&s));
                let current = book.in_force(total.resource, now).is_some_and(|p| p.id == total.price_id);
                if item.is_none() && live && current {
                    let price = total.price_id;
                    tracing::warn!(%owner, day = %total.day, %price, "waiting for the subscription's item");
                    outcome.waiting += 1;
                    continue;
                }
                let added = item.copied().unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                let period_end = next_month(day_start(total.day));
                let (event_timestamp, carried_into) = if now >= period_end + FINALISED_AFTER {
                    (open_period.max(added), Some(open_period.date_naive()))
                } else {
                    (day_start(total.day).max(added), None)
                };
                let revision = before.map_or(1, |r| r.revision + 1);
                planned.push(Report {
                    id: Uuid::now_v7(),
                    owner_id: owner,
                    day: total.day,
                    resource: total.resource.to_string(),
                    price_id: total.price_id,
                    revision,
                    identifier: identifier(owner, total.day, total.price_id, revision),
                    delta_quanta: delta,
                    total_quanta: desired,
                    event_timestamp,
                    carried_into,
                    state: "pending".to_owned(),
                    customer_id: account.customer.clone(),
                    meter_id: meter.meter_id.clone(),
                    event_name: meter.event_name.clone(),
                    created_at: now,
                    sent_at: None,
                });
            }
        }
        let mut written = Vec::with_capacity(planned.len());
        for chunk in planned.chunks(BATCH) {
            let ids: std::collections::HashSet<Uuid> = insert_pending(&mut conn, chunk).await?.into_iter().collect();
            written.extend(chunk.iter().filter(|r| ids.contains(&r.id)).cloned());
        }
        Ok(written)
    }

    /// Sends `reports` with `reporting.in_flight` requests at once, marking each accepted
    /// report in batches.
    async fn send_all(&self, reports: Vec<Report>) -> Result<PassOutcome, ReportingError> {
        let mut outcome = PassOutcome::default();
        let mut accepted = Vec::new();
        let mut results = futures::stream::iter(reports).map(|r| self.send(r)).buffer_unordered(self.config.in_flight);
        while let Some(sent) = results.next().await {
            match sent {
                Sent::Accepted(id) => accepted.push(id),
                Sent::Pending => outcome.pending += 1,
                Sent::Refused(report, why) => {
                    let mut conn = self.db.conn().await?;
                    set_state(&mut conn, &[report.id], "abandoned", self.settings.clock.now()).await?;
                    outcome.abandoned += 1;
                    outcome.findings += self
                        .finding(&mut conn, "report_refused", report.owner_id, report.day, &report.identifier, &why)
                        .await?;
                }
            }
            if accepted.len() >= BATCH {
                let mut conn = self.db.conn().await?;
                outcome.accepted += set_state(&mut conn, &accepted, "accepted", self.settings.clock.now()).await?;
                accepted.clear();
            }
        }
        if !accepted.is_empty() {
            let mut conn = self.db.conn().await?;
            outcome.accepted += set_state(&mut conn, &accepted, "accepted", self.settings.clock.now()).await?;
        }
        Ok(outcome)
    }

    /// One meter event, sent again after a 429, a 5xx or no answer with [`SEND_RETRY`]'s
    /// pauses.
    async fn send(&self, report: Report) -> Sent {
        let value = quantise::quanta_text(u128::try_from(report.delta_quanta).unwrap_or(0));
        let timestamp = report.event_timestamp.timestamp().to_string();
        let form = params([
            ("event_name", report.event_name.as_str()),
            ("payload[stripe_customer_id]", report.customer_id.as_str()),
            ("payload[value]", value.as_str()),
            ("timestamp", timestamp.as_str()),
            ("identifier", report.identifier.as_str()),
        ]);
        let mut pauses = SEND_RETRY.delays();
        loop {
            match self.events.post::<serde_json::Value>("billing/meter_events", &form, Some(&report.identifier)).await {
                Ok(_) => return Sent::Accepted(report.id),
                Err(StripeError::Api { status: 400, message, .. }) if message.contains(DUPLICATE) => {
                    return Sent::Accepted(report.id);
                }
                Err(e) if e.is_retryable() => match pauses.next() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => {
                        tracing::warn!(identifier = %report.identifier, error = %e, "meter event left pending");
                        return Sent::Pending;
                    }
                },
                Err(e) => return Sent::Refused(Box::new(report), e.to_string()),
            }
        }
    }

    /// Settles the pending reports of earlier passes: sent again while Stripe's identifier
    /// window surely holds; older ones compared with Stripe's summary of their day.
    ///
    /// # Errors
    /// [`ReportingError`].
    pub async fn settle_unknown(&self) -> Result<PassOutcome, ReportingError> {
        let now = self.settings.clock.now();
        let mut conn = self.db.conn().await?;
        let pending: Vec<Report> = meter_reports::table
            .filter(meter_reports::state.eq("pending"))
            .order(meter_reports::created_at)
            .select(Report::as_select())
            .load(&mut conn)
            .await?;
        drop(conn);
        if pending.is_empty() {
            return Ok(PassOutcome::default());
        }
        let (recent, old): (Vec<Report>, Vec<Report>) =
            pending.into_iter().partition(|r| r.created_at > now - RESEND_WITHIN);
        let mut outcome = self.send_all(recent).await?;
        let mut groups: BTreeMap<(String, String, NaiveDate), Vec<Report>> = BTreeMap::new();
        let mut conn = self.db.conn().await?;
        for r in old {
            if r.event_timestamp <= now - TimeDelta::days(WINDOW_DAYS) {
                set_state(&mut conn, &[r.id], "abandoned", now).await?;
                outcome.abandoned += 1;
                outcome.findings +=
                    self.finding(&mut conn, "report_expired", r.owner_id, r.day, &r.identifier, "-").await?;
                continue;
            }
            groups
                .entry((r.customer_id.clone(), r.meter_id.clone(), r.event_timestamp.date_naive()))
                .or_default()
                .push(r);
        }
        for ((customer, meter, day), reports) in groups {
            let theirs = self.stripe_day_total(&customer, &meter, day).await?;
            let ours: i64 = meter_reports::table
                .filter(meter_reports::customer_id.eq(&customer))
                .filter(meter_reports::meter_id.eq(&meter))
                .filter(meter_reports::state.eq("accepted"))
                .filter(meter_reports::event_timestamp.ge(day_start(day)))
                .filter(meter_reports::event_timestamp.lt(day_start(day) + TimeDelta::days(1)))
                .select(diesel::dsl::sum(meter_reports::delta_quanta))
                .first::<Option<rust_decimal::Decimal>>(&mut conn)
                .await?
                .and_then(|d| i64::try_from(d).ok())
                .unwrap_or(0);
            let pending: i64 = reports.iter().map(|r| r.delta_quanta).sum();
            let ids: Vec<Uuid> = reports.iter().map(|r| r.id).collect();
            if theirs == i128::from(ours) + i128::from(pending) {
                outcome.accepted += set_state(&mut conn, &ids, "accepted", now).await?;
            } else if theirs == i128::from(ours) {
                outcome.abandoned += set_state(&mut conn, &ids, "abandoned", now).await?;
            } else if let Some(first) = <[Report]>::first(&reports) {
                outcome.findings += self
                    .finding(
                        &mut conn,
                        "report_unknown",
                        first.owner_id,
                        first.day,
                        &format!("accepted {ours} + pending {pending} quanta"),
                        &format!("stripe {theirs} quanta on {day}"),
                    )
                    .await?;
            }
        }
        Ok(outcome)
    }

    /// Stripe's total of `customer`'s events on `meter` timestamped on `day`, in quanta.
    ///
    /// # Errors
    /// [`ReportingError`] when Stripe fails.
    pub async fn stripe_day_total(&self, customer: &str, meter: &str, day: NaiveDate) -> Result<i128, ReportingError> {
        let days = self.stripe_days(customer, meter, (day, day + TimeDelta::days(1))).await?;
        Ok(days.get(&day).copied().unwrap_or(0))
    }

    /// Records a finding (`reconciliation_findings`) and alerts the admins, once per kind,
    /// owner and day while it is open; answers 1 when it is new.
    async fn finding(
        &self,
        conn: &mut AsyncPgConnection,
        kind: &str,
        owner: Uuid,
        day: NaiveDate,
        ours: &str,
        theirs: &str,
    ) -> Result<usize, ReportingError> {
        record_finding(conn, &self.settings, (kind, owner, day), ours, theirs).await
    }

    /// Reports closed days every `interval` until `cancel`. The first pass comes soon after
    /// start ([`FIRST_PASS_AFTER`], or `interval` if shorter), once the catalogue and the
    /// consumers have settled, so a billing that was down catches up when it is back.
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        let mut pause = interval.min(FIRST_PASS_AFTER);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = interval;
            match self.report_closed().await {
                Ok(o) => tracing::info!(?o, "postpaid usage reported to Stripe"),
                Err(e) => tracing::warn!(error = %e, "reporting usage to Stripe failed"),
            }
        }
    }
}

/// How soon after start the first reporting pass runs.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(30);

/// Asks for `customer`'s days through `through` to be reported at once (`report_requests`);
/// asking twice is asking once.
///
/// # Errors
/// When Postgres fails.
pub async fn request(
    mut conn: &AsyncPgConnection,
    customer: &str,
    through: NaiveDate,
    reason: &str,
) -> QueryResult<()> {
    diesel::insert_into(report_requests::table)
        .values((
            report_requests::customer_id.eq(customer),
            report_requests::through.eq(through),
            report_requests::reason.eq(reason),
        ))
        .on_conflict((report_requests::customer_id, report_requests::through))
        .do_nothing()
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// How often open report requests are looked for.
const REQUESTS_EVERY: Duration = Duration::from_secs(2);

impl Reporter {
    /// Reports the days of each open request (`invoice.created`, an account deleted) at once,
    /// the last day included even if not closed, and marks it done. Answers how many were done.
    ///
    /// # Errors
    /// [`ReportingError`]; an undone request is tried again.
    pub async fn serve_requests(&self) -> Result<usize, ReportingError> {
        let mut conn = self.db.conn().await?;
        let open: Vec<(String, NaiveDate, Option<Uuid>)> = report_requests::table
            .left_join(accounts::table.on(accounts::stripe_customer_id.eq(report_requests::customer_id.nullable())))
            .filter(report_requests::done_at.is_null())
            .order(report_requests::requested_at)
            .select((report_requests::customer_id, report_requests::through, accounts::user_id.nullable()))
            .load(&mut conn)
            .await?;
        drop(conn);
        let mut done = 0;
        for (customer, through, owner) in open {
            if let Some(owner) = owner {
                let outcome = self.pass(Scope { owner: Some(OwnerId::from_uuid(owner)), through }).await?;
                if outcome.pending > 0 || outcome.waiting > 0 {
                    continue;
                }
            }
            let mut conn = self.db.conn().await?;
            diesel::update(report_requests::table.find((&customer, through)))
                .set(report_requests::done_at.eq(diesel::dsl::now))
                .execute(&mut conn)
                .await?;
            done += 1;
        }
        Ok(done)
    }

    /// Serves report requests every couple of seconds until `cancel`.
    pub async fn run_requests(self, cancel: CancellationToken) {
        loop {
            match self.serve_requests().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(requests = n, "usage reported to Stripe on request"),
                Err(e) => tracing::warn!(error = %e, "reporting usage on request failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(REQUESTS_EVERY) => {}
            }
        }
    }
}

/// A meter whose day differs: its id, Σ accepted quanta, Stripe's quanta.
type Differing = (String, i64, i128);

#[derive(QueryableByName)]
struct AcceptedDay {
    #[diesel(sql_type = SqlUuid)]
    owner_id: Uuid,
    #[diesel(sql_type = Text)]
    customer_id: String,
    #[diesel(sql_type = Text)]
    meter_id: String,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    quanta: i64,
}

#[derive(Deserialize)]
struct DaySummaries {
    data: Vec<DaySummary>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct DaySummary {
    id: String,
    start_time: i64,
    aggregated_value: serde_json::Number,
}

impl Reporter {
    /// Compares, for each of the `days` closed UTC days before now, Stripe's meter event
    /// summaries per customer, meter and day with Σ accepted reports timestamped that day; a
    /// difference is a `stripe_drift` finding (alerted once), an agreement resolves an open one.
    /// One summary request per customer and meter covers every day. Answers the open drifts.
    ///
    /// # Errors
    /// [`ReportingError`].
    pub async fn reconcile_stripe(&self, days: u32) -> Result<usize, ReportingError> {
        let now = self.settings.clock.now();
        let to = last_closed_day(now, self.config.close_after_secs) + TimeDelta::days(1);
        let from = to - TimeDelta::days(i64::from(days.max(1)));
        let mut conn = self.db.conn().await?;
        let ours: Vec<AcceptedDay> = diesel::sql_query(
            "SELECT owner_id, customer_id, meter_id, (event_timestamp AT TIME ZONE 'UTC')::date AS day,
                    sum(delta_quanta)::bigint AS quanta
             FROM meter_reports
             WHERE state = 'accepted' AND event_timestamp >= $1 AND event_timestamp < $2
             GROUP BY 1, 2, 3, 4 ORDER BY 2, 3, 4",
        )
        .bind::<Timestamptz, _>(day_start(from))
        .bind::<Timestamptz, _>(day_start(to))
        .load(&mut conn)
        .await?;
        drop(conn);
        let mut by_meter: BTreeMap<(String, String), (Uuid, BTreeMap<NaiveDate, i64>)> = BTreeMap::new();
        for d in ours {
            by_meter
                .entry((d.customer_id, d.meter_id))
                .or_insert((d.owner_id, BTreeMap::new()))
                .1
                .insert(d.day, d.quanta);
        }
        // Per owner and day, the meters whose totals differ (a finding is per owner-day).
        let mut compared: BTreeMap<(Uuid, NaiveDate), Vec<Differing>> = BTreeMap::new();
        for ((customer, meter), (owner, ours)) in by_meter {
            let theirs = self.stripe_days(&customer, &meter, (from, to)).await?;
            for day in ours.keys().chain(theirs.keys()).copied().collect::<std::collections::BTreeSet<_>>() {
                let (u, t) = (ours.get(&day).copied().unwrap_or(0), theirs.get(&day).copied().unwrap_or(0));
                let differing = compared.entry((owner, day)).or_default();
                if i128::from(u) != t {
                    differing.push((meter.clone(), u, t));
                }
            }
        }
        let mut open = 0;
        let mut conn = self.db.conn().await?;
        for ((owner, day), differing) in compared {
            if differing.is_empty() {
                diesel::update(
                    reconciliation_findings::table
                        .filter(reconciliation_findings::kind.eq("stripe_drift"))
                        .filter(reconciliation_findings::owner_id.eq(OwnerId::from_uuid(owner)))
                        .filter(reconciliation_findings::day.eq(day))
                        .filter(reconciliation_findings::resolved_at.is_null()),
                )
                .set(reconciliation_findings::resolved_at.eq(diesel::dsl::now))
                .execute(&mut conn)
                .await?;
                continue;
            }
            open += 1;
            let text = |pick: &dyn Fn(&Differing) -> u128| {
                differing
                    .iter()
                    .map(|d| format!("{}: {}", d.0, quantise::quanta_text(pick(d))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let ours = text(&|d| u128::try_from(d.1).unwrap_or(0));
            let theirs = text(&|d| u128::try_from(d.2).unwrap_or(0));
            record_finding(&mut conn, &self.settings, ("stripe_drift", owner, day), &ours, &theirs).await?;
        }
        Ok(open)
    }

    /// Stripe's totals per day of `customer`'s events on `meter` in `[from, to)`, in quanta.
    async fn stripe_days(
        &self,
        customer: &str,
        meter: &str,
        (from, to): (NaiveDate, NaiveDate),
    ) -> Result<BTreeMap<NaiveDate, i128>, ReportingError> {
        let start = day_start(from).timestamp().to_string();
        let end = day_start(to).timestamp().to_string();
        let mut out = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = params([
                ("customer", customer),
                ("start_time", start.as_str()),
                ("end_time", end.as_str()),
                ("value_grouping_window", "day"),
                ("limit", "100"),
            ]);
            if let Some(a) = &after {
                query.push(("starting_after".into(), a.clone()));
            }
            let page: DaySummaries =
                self.stripe.get(&format!("billing/meters/{meter}/event_summaries"), &query).await?;
            for s in &page.data {
                if let Some(at) = DateTime::from_timestamp(s.start_time, 0) {
                    *out.entry(at.date_naive()).or_default() += to_quanta(&s.aggregated_value);
                }
            }
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// Reconciles with Stripe every `interval` until `cancel` (the first run one interval after
    /// start).
    pub async fn run_reconciliation(self, days: u32, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.reconcile_stripe(days).await {
                Ok(open) => tracing::info!(open_drifts = open, "reports reconciled with Stripe"),
                Err(e) => tracing::warn!(error = %e, "reconciliation with Stripe failed"),
            }
        }
    }
}

/// Records a finding and alerts the admins once while it is open; answers 1 when it is new.
///
/// # Errors
/// When Postgres fails.
pub(crate) async fn record_finding(
    conn: &mut AsyncPgConnection,
    settings: &Settings,
    (kind, owner, day): (&str, Uuid, NaiveDate),
    ours: &str,
    theirs: &str,
) -> Result<usize, ReportingError> {
    let inserted = diesel::insert_into(reconciliation_findings::table)
        .values((
            reconciliation_findings::id.eq(Uuid::now_v7()),
            reconciliation_findings::kind.eq(kind),
            reconciliation_findings::owner_id.eq(OwnerId::from_uuid(owner)),
            reconciliation_findings::day.eq(day),
            reconciliation_findings::ours.eq(ours),
            reconciliation_findings::theirs.eq(theirs),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        tracing::warn!(kind, %owner, %day, ours, theirs, "billing finding");
        let alert = Alert {
            title: format!("Billing's report to Stripe needs a look for {owner} on {day}"),
            lines: vec![format!("Kind: {kind}"), format!("Billing: {ours}"), format!("Stripe: {theirs}")],
            link: None,
        };
        let key = format!("billing.drift:{kind}:{owner}:{day}");
        mail::enqueue_alert(conn, &settings.mail, &key, &alert).await?;
    }
    Ok(inserted)
}

/// A summary's `aggregated_value` (a JSON number) in quanta, rounded to the nearest.
fn to_quanta(n: &serde_json::Number) -> i128 {
    let text = n.to_string();
    let value = rust_decimal::Decimal::from_str_exact(&text)
        .or_else(|_| rust_decimal::Decimal::from_scientific(&text))
        .unwrap_or_default();
    let quanta = (value * rust_decimal::Decimal::from(1_000_000_000_i64)).round();
    i128::try_from(quanta).unwrap_or(0)
}

/// Writes `reports` `pending` in one statement; answers the ids written (a report another
/// replica planned first is left to it).
async fn insert_pending(conn: &mut AsyncPgConnection, reports: &[Report]) -> QueryResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let Some(first) = reports.first() else { return Ok(Vec::new()) };
    let ids: Vec<Id> = diesel::sql_query(
        "INSERT INTO meter_reports (id, owner_id, day, resource, price_id, revision, identifier, delta_quanta,
                                    total_quanta, event_timestamp, carried_into, customer_id, meter_id, event_name,
                                    state, created_at)
         SELECT u.*, 'pending', $15 FROM unnest($1::uuid[], $2::uuid[], $3::date[], $4::text[], $5::uuid[],
                $6::int[], $7::text[], $8::bigint[], $9::bigint[], $10::timestamptz[], $11::date[], $12::text[],
                $13::text[], $14::text[]) AS u
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind::<Array<SqlUuid>, _>(reports.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(reports.iter().map(|r| r.owner_id).collect::<Vec<_>>())
    .bind::<Array<Date>, _>(reports.iter().map(|r| r.day).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.resource.clone()).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(reports.iter().map(|r| r.price_id).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(reports.iter().map(|r| r.revision).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.identifier.clone()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(reports.iter().map(|r| r.delta_quanta).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(reports.iter().map(|r| r.total_quanta).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(reports.iter().map(|r| r.event_timestamp).collect::<Vec<_>>())
    .bind::<Array<Nullable<Date>>, _>(reports.iter().map(|r| r.carried_into).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.customer_id.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.meter_id.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.event_name.clone()).collect::<Vec<_>>())
    .bind::<Timestamptz, _>(first.created_at)
    .load(conn)
    .await?;
    Ok(ids.into_iter().map(|i| i.id).collect())
}

/// Sets the state of reports `ids`; answers how many changed.
async fn set_state(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    state: &str,
    at: DateTime<Utc>,
) -> Result<usize, ReportingError> {
    let changed = diesel::update(
        meter_reports::table.filter(meter_reports::id.eq_any(ids)).filter(meter_reports::state.eq("pending")),
    )
    .set((meter_reports::state.eq(state), meter_reports::sent_at.eq(at)))
    .execute(conn)
    .await?;
    if state == "accepted" {
        crate::metrics::STRIPE_REPORTS_SENT.inc_by(u64::try_from(changed).unwrap_or(u64::MAX));
    }
    Ok(changed)
}

/// The reports of `owner`, of `day` when given, newest first.
///
/// # Errors
/// When Postgres fails.
pub async fn reports(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    day: Option<NaiveDate>,
    limit: i64,
) -> QueryResult<Vec<Report>> {
    let mut query = meter_reports::table.filter(meter_reports::owner_id.eq(owner)).into_boxed();
    if let Some(day) = day {
        query = query.filter(meter_reports::day.eq(day));
    }
    query
        .order((meter_reports::day.desc(), meter_reports::resource, meter_reports::revision.desc()))
        .limit(limit)
        .select(Report::as_select())
        .load(conn)
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn identifiers_are_deterministic_and_short_enough() {
        let (o, p) = (Uuid::now_v7(), Uuid::now_v7());
        let day = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        assert_eq!(identifier(o, day, p, 1), identifier(o, day, p, 1));
        assert_ne!(identifier(o, day, p, 1), identifier(o, day, p, 2));
        assert!(identifier(o, day, p, 99_999).len() <= 100);
    }

    #[test]
    fn a_day_closes_close_after_its_end() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(last_closed_day(at("2026-12-07T00:29:59Z"), 1800), day("2026-12-05"));
        assert_eq!(last_closed_day(at("2026-12-07T00:30:00Z"), 1800), day("2026-12-06"));
    }

    #[test]
    fn summaries_read_as_quanta() {
        let n: serde_json::Number = serde_json::from_str("12.000000001").unwrap();
        assert_eq!(to_quanta(&n), 12_000_000_001);
        let n: serde_json::Number = serde_json::from_str("3").unwrap();
        assert_eq!(to_quanta(&n), 3_000_000_000);
    }
}
