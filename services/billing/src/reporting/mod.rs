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
use crate::ledger::Settings;
use crate::schema::{accounts, meter_reports, reconciliation_findings, report_requests};
use crate::stripe::{Stripe, StripeError};
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::OwnerId;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::mail::{self, Alert};
use hopsbridge_platform::retry::Backoff;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod planning;
mod reconciling;
mod sending;

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
}
