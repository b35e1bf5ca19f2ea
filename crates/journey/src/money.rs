//! The money proof's audit (`tests/money.rs`, decision 0042), for any end-to-end run to end
//! with (the chaos campaign's is to, decision 0066): billing settings that tell every price
//! apart, the end of a billing period on the World's clock ([`close_period`]: the last day
//! reported while the invoices are drafts, then the invoices finalised), and per owner
//! ([`audit`]):
//!
//! - billing's ledger holds exactly metering's attributed usage and storage samples of the
//!   period, once each, with the mode and the price in force at each window's start and each
//!   window's cost `n × price / per_unit` rounded half up to 12 places;
//! - the invoice the sandbox's Stripe computed has lines equal, to the cent, to Σ over days of
//!   the day's quantity quantised to 9 places half up × the price, rounded half up once;
//! - the owner's view of the period (`GET /api/billing/usage`) shows the ledger's cost and
//!   credits; prepaid credit deductions equal the cost they paid;
//! - each owner-day-price is reported once: Stripe's meter events, Stripe's meter event
//!   summaries and billing's accepted `meter_reports` each add up to the day's quantity, and no
//!   meter event identifier is sent twice.
//!
//! Every amount is computed here, apart from billing, in integers.

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test harness: it fails the test loudly and prints what it found"
)]

use crate::{Person, Platform, wait_for};
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Utc};
use hopsbridge_contracts::Service;
use hopsbridge_sandbox::stripe::HoldStatus;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How long an effect may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(240);
/// 10^12 and 10^9 and 10^21: money in 12 places of the minor unit, quantities in 9 places.
pub const E12: i128 = 1_000_000_000_000;
/// 10^9.
pub const E9: i128 = 1_000_000_000;
/// 10^21.
pub const E21: i128 = E12 * E9;
/// The billed resources, in the order of [`Sample::n`].
pub const RESOURCES: [&str; 5] = ["cpu", "memory", "gpu", "storage_offline", "storage_online"];
/// Credits bought by a prepaid owner (plenty) and a hybrid one (run out), minor units.
pub const PREPAID_CREDITS: i64 = 100_000;
/// See [`PREPAID_CREDITS`].
pub const HYBRID_CREDITS: i64 = 500;
/// Seconds after the period's end by which billing has reported the period's last day: it
/// reports a day 30 minutes after it ends (`reporting.close_after_secs`); Stripe finalises the
/// period's invoices an hour after it ends.
pub const REPORTED_BY: i64 = 40 * 60;
/// The storage prices of the audited runs: unit amounts no other price has, since invoice
/// lines and reports are told apart by unit amount (the defaults are memory's 3.5 and CPU's 35).
pub const STORAGE_OFFLINE_PRICE: &str = "2.75";
/// See [`STORAGE_OFFLINE_PRICE`].
pub const STORAGE_ONLINE_PRICE: &str = "36.25";

/// billing's settings of an audited run: storage prices of their own.
#[must_use]
pub fn settings() -> Vec<(Service, &'static str, String)> {
    vec![
        (Service::Billing, "rates.storage_offline.unit_amount_decimal", STORAGE_OFFLINE_PRICE.to_owned()),
        (Service::Billing, "rates.storage_online.unit_amount_decimal", STORAGE_ONLINE_PRICE.to_owned()),
    ]
}

/// What kind of owner: how they pay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Postpaid with a card.
    Postpaid,
    /// Prepaid with plenty of credits bought through Checkout.
    Prepaid,
    /// Prepaid with a card whose credits run out (the overflow billed postpaid).
    Hybrid,
    /// Postpaid, with a team member whose usage rolls up to them.
    TeamOwner,
    /// Free.
    Free,
}

impl Kind {
    /// Its name in the table.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Postpaid => "postpaid",
            Self::Prepaid => "prepaid",
            Self::Hybrid => "hybrid",
            Self::TeamOwner => "team",
            Self::Free => "free",
        }
    }
    /// The billing mode an admin sets (none: postpaid, the default).
    #[must_use]
    pub fn mode(self) -> Option<&'static str> {
        match self {
            Self::Prepaid | Self::Hybrid => Some("prepaid"),
            Self::Free => Some("free"),
            Self::Postpaid | Self::TeamOwner => None,
        }
    }
    /// Credits bought, minor units.
    #[must_use]
    pub fn credits(self) -> Option<i64> {
        match self {
            Self::Prepaid => Some(PREPAID_CREDITS),
            Self::Hybrid => Some(HYBRID_CREDITS),
            _ => None,
        }
    }
}

/// The 1st of the month after `t`'s, 00:00 UTC.
pub fn next_month(t: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap()
}

/// `t` moved by `secs` seconds.
#[must_use]
pub fn at(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    t + TimeDelta::seconds(secs)
}

/// `n / d` rounded half up (n ≥ 0, d > 0).
pub fn half_up(n: i128, d: i128) -> i128 {
    (2 * n + d).div_euclid(2 * d)
}

/// `n / d` rounded up (n ≥ 0, d > 0).
#[must_use]
pub fn ceil_div(n: i128, d: i128) -> i128 {
    (n + d - 1).div_euclid(d)
}

/// Units of usage per billed unit on the UTC day of `t`: nanocore-seconds per core-hour,
/// byte-seconds per GiB-hour, GPU-seconds per GPU-hour, byte-seconds per GB-month of the day's
/// calendar month.
pub fn per_unit(resource: &str, t: i64) -> i128 {
    match resource {
        "cpu" => 3_600 * E9,
        "memory" => (1_i128 << 30) * 3_600,
        "gpu" => 3_600,
        "storage_offline" | "storage_online" => {
            let day = DateTime::from_timestamp(t, 0).unwrap();
            let first = Utc.with_ymd_and_hms(day.year(), day.month(), 1, 0, 0, 0).unwrap();
            E9 * i128::from((next_month(first) - first).num_seconds())
        }
        other => panic!("no resource {other}"),
    }
}

/// The start of a day named `YYYY-MM-DD`.
pub fn day_start(day: &str) -> i64 {
    NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

/// A decimal string as an integer count of 10^-places.
pub fn fixed(s: &str, places: usize) -> i128 {
    let s = s.trim();
    let (negative, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = if frac.len() > places { frac.trim_end_matches('0') } else { frac };
    assert!(frac.len() <= places, "{s} has more than {places} places");
    let scale = 10_i128.pow(u32::try_from(places).unwrap());
    let frac: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<places$}").parse().unwrap() };
    let v = whole.parse::<i128>().unwrap_or(0) * scale + frac;
    if negative { -v } else { v }
}

/// `v` (10^-places) as a decimal with two places, truncated: a table figure.
pub fn cents(v: i128, places: u32) -> String {
    let hundredths = v / 10_i128.pow(places.saturating_sub(2));
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// The string `k` of a JSON row.
#[must_use]
pub fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_owned()
}

/// The integer `k` of a JSON row.
#[must_use]
pub fn int(v: &Value, k: &str) -> i128 {
    i128::from(v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}")))
}

/// One of metering's attributed samples, of usage or of storage.
#[derive(Clone, Debug)]
pub struct Sample {
    pub id: String,
    pub user: String,
    pub owner: String,
    pub start: i64,
    pub end: i64,
    /// In [`RESOURCES`] order.
    pub n: [i128; 5],
    pub storage: bool,
}

/// metering's attributed usage and storage samples whose window starts before `before`.
pub async fn samples(platform: &Platform, before: i64) -> Vec<Sample> {
    let mut all = usage_samples(platform, before).await;
    let sql = format!(
        "SELECT id::text AS id, user_id::text AS u, owner_user_id::text AS o,
                extract(epoch FROM window_start)::bigint AS ws, extract(epoch FROM window_end)::bigint AS we,
                offline_byte_seconds AS so, online_byte_seconds AS sn
         FROM storage_samples WHERE owner_user_id IS NOT NULL AND window_start < to_timestamp({before})"
    );
    all.extend(platform.rows("metering", &sql).await.iter().map(|r| Sample {
        id: text(r, "id"),
        user: text(r, "u"),
        owner: text(r, "o"),
        start: r["ws"].as_i64().unwrap(),
        end: r["we"].as_i64().unwrap(),
        n: [0, 0, 0, int(r, "so"), int(r, "sn")],
        storage: true,
    }));
    all
}

pub async fn usage_samples(platform: &Platform, before: i64) -> Vec<Sample> {
    let sql = format!(
        "SELECT id::text AS id, user_id::text AS u, owner_user_id::text AS o,
                extract(epoch FROM window_start)::bigint AS ws, extract(epoch FROM window_end)::bigint AS we,
                cpu_nanocore_seconds AS c, memory_byte_seconds AS m, gpu_seconds AS g
         FROM samples WHERE attribution = 'attributed' AND window_start < to_timestamp({before})"
    );
    platform
        .rows("metering", &sql)
        .await
        .iter()
        .map(|r| Sample {
            id: text(r, "id"),
            user: text(r, "u"),
            owner: text(r, "o"),
            start: r["ws"].as_i64().unwrap(),
            end: r["we"].as_i64().unwrap(),
            n: [int(r, "c"), int(r, "m"), int(r, "g"), 0, 0],
            storage: false,
        })
        .collect()
}

/// One of billing's ledger entries.
#[derive(Clone, Debug)]
pub struct Entry {
    pub day: String,
    pub owner: String,
    pub start: i64,
    pub end: i64,
    pub n: [i128; 5],
    pub mode: String,
    pub price: [String; 5],
    /// 10^-12 minor units.
    pub cost: [i128; 5],
    pub paid: i128,
    pub unpaid: i128,
    /// 10^-9 billed units.
    pub over: [i128; 5],
}

pub async fn ledger(platform: &Platform, before: i64) -> HashMap<String, Vec<Entry>> {
    let sql = format!(
        "SELECT sample_id::text AS id, day::text AS day, owner_id::text AS o,
                extract(epoch FROM window_start)::bigint AS ws, extract(epoch FROM window_end)::bigint AS we,
                cpu_nanocore_seconds AS c, memory_byte_seconds AS m, gpu_seconds AS g,
                storage_offline_byte_seconds AS so, storage_online_byte_seconds AS sn, billing_mode AS mode,
                cpu_price_id::text AS cp, memory_price_id::text AS mp, gpu_price_id::text AS gp,
                coalesce(storage_offline_price_id::text, '') AS sop, coalesce(storage_online_price_id::text, '') AS snp,
                cpu_cost::text AS cc, memory_cost::text AS mc, gpu_cost::text AS gc,
                storage_offline_cost::text AS soc, storage_online_cost::text AS snc,
                credits_paid::text AS paid, unpaid::text AS unpaid,
                cpu_over_quanta AS co, memory_over_quanta AS mo, gpu_over_quanta AS go,
                storage_offline_over_quanta AS soo, storage_online_over_quanta AS sno
         FROM ledger_entries WHERE window_start < to_timestamp({before})"
    );
    let money = |r: &Value, k: &str| fixed(&text(r, k), 12);
    let mut by_sample: HashMap<String, Vec<Entry>> = HashMap::new();
    for r in platform.rows("billing", &sql).await {
        by_sample.entry(text(&r, "id")).or_default().push(Entry {
            day: text(&r, "day"),
            owner: text(&r, "o"),
            start: r["ws"].as_i64().unwrap(),
            end: r["we"].as_i64().unwrap(),
            n: [int(&r, "c"), int(&r, "m"), int(&r, "g"), int(&r, "so"), int(&r, "sn")],
            mode: text(&r, "mode"),
            price: [text(&r, "cp"), text(&r, "mp"), text(&r, "gp"), text(&r, "sop"), text(&r, "snp")],
            cost: [money(&r, "cc"), money(&r, "mc"), money(&r, "gc"), money(&r, "soc"), money(&r, "snc")],
            paid: money(&r, "paid"),
            unpaid: money(&r, "unpaid"),
            over: [int(&r, "co"), int(&r, "mo"), int(&r, "go"), int(&r, "soo"), int(&r, "sno")],
        });
    }
    by_sample
}

/// A version of the price book.
#[derive(Clone, Debug)]
pub struct Price {
    pub id: String,
    pub resource: String,
    /// 10^-12 minor units per billed unit.
    pub amount: i128,
    pub from: i64,
}

pub async fn price_book(platform: &Platform) -> Vec<Price> {
    let (status, list) = platform.call("GET", "/api/admin/prices", &platform.admin_token, None).await;
    assert_eq!(status, 200, "{list}");
    list["prices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Price {
            id: text(p, "id"),
            resource: text(p, "resource"),
            amount: fixed(&text(p, "unit_amount_decimal"), 12),
            from: DateTime::parse_from_rfc3339(&text(p, "effective_from")).unwrap().timestamp(),
        })
        .collect()
}

pub fn in_force<'a>(book: &'a [Price], resource: &str, t: i64) -> &'a Price {
    book.iter()
        .filter(|p| p.resource == resource && p.from <= t)
        .max_by_key(|p| p.from)
        .unwrap_or_else(|| panic!("no {resource} price at {t}"))
}

pub fn day_of(t: i64) -> String {
    DateTime::from_timestamp(t, 0).unwrap().date_naive().to_string()
}

/// An owner of the run.
#[derive(Debug)]
pub struct Owner {
    pub kind: Kind,
    pub username: String,
    pub person: Person,
    pub member: Option<Person>,
    /// From when their mode applies (none: postpaid from the start).
    pub mode_from: Option<i64>,
    /// Whether their lab's Hopsworks project holds offline storage.
    pub stores: bool,
}

/// The Stripe API of the sandbox, read as billing's key.
pub async fn stripe_list(platform: &Platform, path: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let joiner = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{}/v1/{path}{joiner}limit=100", platform.world.stripe.url());
        if let Some(a) = &after {
            let _ = write!(url, "&starting_after={a}");
        }
        // Stripe may be failing requests (the faults): read until it answers.
        let page: Value = wait_for("a page of Stripe's list", PATIENCE, || async {
            let answer = http.get(&url).bearer_auth(platform.world.stripe.secret_key()).send().await.ok()?;
            if !answer.status().is_success() {
                return None;
            }
            answer.json().await.ok()
        })
        .await;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        after = data.last().and_then(|d| d["id"].as_str()).map(str::to_owned);
        all.extend(data);
        if page["has_more"] != true || after.is_none() {
            return all;
        }
    }
}

/// What one owner's proof found.
#[derive(Debug, Default)]
pub struct Row {
    pub samples: usize,
    /// Of which storage samples.
    pub storage_samples: usize,
    /// The cost of the storage samples, 10^-12 minor units.
    pub storage_cost: i128,
    /// Whether the invoice is to have a line of offline storage.
    pub storage_line: bool,
    pub member_samples: usize,
    pub entries: usize,
    /// 10^-12 minor units.
    pub samples_cost: i128,
    pub ledger_cost: i128,
    pub credits_paid: i128,
    pub deducted: i128,
    pub expected_invoice: i128,
    pub invoice: Option<i128>,
    pub invoice_status: String,
    pub meter_events: usize,
    /// The ledger's cost of every mode but free.
    pub billable: i128,
    /// The ledger's cost of prepaid windows (what credits pay, with hybrid overflow).
    pub prepaid_cost: i128,
    /// Credit left of a hybrid owner's, 10^-12 minor units.
    pub left: i128,
}

/// Stripe's path for meter events.
pub const METER_EVENTS: &str = "/v1/billing/meter_events";

/// billing killed at a pinned point: while Stripe holds its answer to a meter event it has
/// counted.
#[derive(Debug)]
pub struct PinnedKill {
    /// The sandbox Stripe's hold.
    pub hold: String,
    /// Whether billing was killed there.
    pub done: bool,
}

/// billing's reports whose outcome it does not know.
pub async fn pending_reports(platform: &Platform) -> i64 {
    let found =
        platform.rows("billing", "SELECT count(*)::bigint AS n FROM meter_reports WHERE state = 'pending'").await;
    found[0]["n"].as_i64().unwrap()
}

/// Once Stripe holds the pinned meter event: billing killed, the answer released (to nobody),
/// billing started again at once; it must settle what it sent and did not record.
pub async fn kill_when_held(platform: &Platform, pinned: Option<&mut PinnedKill>) {
    let Some(k) = pinned else { return };
    if k.done || !matches!(platform.world.stripe.hold_status(&k.hold), Some(HoldStatus::Held { .. })) {
        return;
    }
    platform.kill_service(Service::Billing);
    platform.world.stripe.release(&k.hold).unwrap();
    let pending = pending_reports(platform).await;
    eprintln!(
        "billing killed while Stripe held its answer to a meter event: {pending} reports pending, {} meter events in",
        platform.world.stripe.meter_events().len()
    );
    assert!(pending > 0, "billing recorded the held report's outcome without its answer");
    platform.start_service(Service::Billing);
    k.done = true;
}

/// The kinds of problem [`audit`] counts, in the order it prints them.
pub const PROBLEMS: [&str; 21] = [
    "meter reports pending",
    "samples of no owner of the run",
    "samples missing from the ledger",
    "samples in the ledger more than once",
    "ledger entries of no sample",
    "ledger entries differing from their sample",
    "ledger entries of another mode",
    "ledger costs differing from samples × prices",
    "windows paid wrongly",
    "owners without usage",
    "owners' storage measured wrongly",
    "team members' usage not rolled up",
    "credit deductions differing from what they paid",
    "owners' views differing from the ledger",
    "invoices missing",
    "invoices differing from the ledger",
    "owner-days billing's reports differ from the ledger",
    "owner-days Stripe's meter events differ from the ledger",
    "owner-days Stripe's meter event summaries differ from the ledger",
    "meter event identifiers sent twice",
    "no storage on an invoice",
];

/// The billing period [`audit`] checks.
#[derive(Clone, Copy, Debug)]
pub struct Period {
    /// When the owners signed up: the owners' view is read from its day.
    pub from: DateTime<Utc>,
    /// Its end, the 1st of a month, 00:00 UTC: samples whose window starts before it are on
    /// its invoices.
    pub end: DateTime<Utc>,
}

/// What [`audit`] found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Each problem: its kind (one of [`PROBLEMS`]) and what it is.
    pub problems: Vec<(&'static str, String)>,
    /// A table of every owner's figures and a summary line.
    pub table: String,
}

impl Findings {
    /// Problems per kind, every kind of [`PROBLEMS`] included (zero when none).
    #[must_use]
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts: BTreeMap<&'static str, usize> = PROBLEMS.iter().map(|k| (*k, 0)).collect();
        for (kind, _) in &self.problems {
            *counts.entry(kind).or_default() += 1;
        }
        counts
    }
}

/// Each owner's Stripe customer as billing recorded it: user id → customer id.
pub async fn customers(platform: &Platform) -> HashMap<String, String> {
    platform
        .rows("billing", "SELECT user_id::text AS u, stripe_customer_id AS c FROM accounts")
        .await
        .iter()
        .filter_map(|r| Some((text(r, "u"), r["c"].as_str()?.to_owned())))
        .collect()
}

/// Ends the owners' billing period at `end` on the World's clock, as a live reporter lives
/// it: the clock stands [`REPORTED_BY`] after the end (past Stripe's `invoice.created`, on
/// which billing reports the last day at once, and the day's close) while billing reports
/// every closed day it has not (for at most a minute plus a twelfth of a second per
/// owner-day-resource of `days` days: test mode's meter event limit, twice over), billing
/// killed there when `pinned` holds; then an hour and 30 seconds after it, when the sandbox's
/// Stripe finalises the period's invoices from its meter totals. Holding the clock stands in
/// for the hour a live reporter has: its pace is bound to real time (Stripe's rate limits).
pub async fn close_period(
    platform: &Platform,
    owners: &[Owner],
    end: DateTime<Utc>,
    days: u64,
    mut pinned: Option<&mut PinnedKill>,
) {
    let world = &platform.world;
    let customers = customers(platform).await;
    let billed: BTreeSet<String> = owners
        .iter()
        .filter(|o| o.kind != Kind::Free && o.kind != Kind::Prepaid)
        .filter_map(|o| customers.get(&o.person.user_id.to_string()).cloned())
        .collect();
    world.set_time(at(end, REPORTED_BY));
    let last_day = (end.timestamp() - 86_400, end.timestamp());
    let reported = |events: &[Value]| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| e["timestamp"].as_i64().is_some_and(|t| t >= last_day.0 && t < last_day.1))
            .filter_map(|e| e["payload"]["stripe_customer_id"].as_str().map(str::to_owned))
            .collect()
    };
    let ceiling = Duration::from_secs(60 + u64::try_from(billed.len()).unwrap() * days * 6 / 12);
    let wait_start = Instant::now();
    let (mut count, mut steady_since) = (0, Instant::now());
    loop {
        kill_when_held(platform, pinned.as_deref_mut()).await;
        let events = world.stripe.meter_events();
        let seen = reported(&events);
        if events.len() != count {
            (count, steady_since) = (events.len(), Instant::now());
        }
        let killed = pinned.as_ref().is_none_or(|k| k.done);
        let done = killed
            && billed.is_subset(&seen)
            && steady_since.elapsed() > Duration::from_secs(5)
            && pending_reports(platform).await == 0;
        if done || wait_start.elapsed() > ceiling {
            eprintln!(
                "last day reported for {} of {} owners, {count} meter events, after {:?}",
                seen.len(),
                billed.len(),
                wait_start.elapsed()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(k) = &pinned {
        assert!(k.done, "Stripe never held the meter event billing was to be killed at");
    }
    world.stripe.set_meter_event_rate_limit(Some(25));
    // An hour after invoice.created the period's invoices are finalised.
    world.set_time(at(end, 3600 + 30));
}

/// A JSON number (Stripe's `aggregated_value`, a float) as an integer count of 10^-places,
/// from its shortest decimal form (exact for the at most 15 significant digits a meter takes),
/// rounded half up past `places`.
#[must_use]
pub fn decimal(v: &Value, places: u32) -> i128 {
    let s = v.to_string();
    let (mantissa, exponent) = s.split_once(['e', 'E']).unwrap_or((&s, "0"));
    let exponent: i32 = exponent.parse().unwrap_or_else(|_| panic!("a number: {s}"));
    let (negative, mantissa) = mantissa.strip_prefix('-').map_or((false, mantissa), |m| (true, m));
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: i128 = format!("{whole}{frac}").parse().unwrap_or_else(|_| panic!("a number: {s}"));
    // value = digits × 10^(exponent - |frac|); scaled by 10^places.
    let shift = exponent - i32::try_from(frac.len()).unwrap() + i32::try_from(places).unwrap();
    let scaled = if shift >= 0 {
        digits * 10_i128.pow(shift.unsigned_abs())
    } else {
        half_up(digits, 10_i128.pow(shift.unsigned_abs()))
    };
    if negative { -scaled } else { scaled }
}

/// Stripe's meters: (id, event name, the unit amount (10^-12) of the price on it).
pub async fn meters(platform: &Platform) -> Vec<(String, String, i128)> {
    let meters: HashMap<String, String> =
        stripe_list(platform, "billing/meters").await.iter().map(|m| (text(m, "id"), text(m, "event_name"))).collect();
    stripe_list(platform, "prices")
        .await
        .iter()
        .filter_map(|p| {
            let meter = p["recurring"]["meter"].as_str()?;
            let name = meters.get(meter)?.clone();
            Some((meter.to_owned(), name, fixed(p["unit_amount_decimal"].as_str()?, 12)))
        })
        .collect()
}

/// Checks every owner's period end to end (see the module's documentation): every problem
/// found, by kind, and the table of figures.
pub async fn audit(platform: &Platform, owners: &[Owner], period: &Period) -> Findings {
    let world = &platform.world;
    let end = period.end.timestamp();
    let customers = customers(platform).await;
    // billing has every sample of the period; Stripe has finalised every owner's invoice. What
    // is still missing then is counted below.
    let all_samples = samples(platform, end).await;
    let owners_customers: BTreeSet<String> =
        owners.iter().filter_map(|o| customers.get(&o.person.user_id.to_string()).cloned()).collect();
    let deadline = Instant::now() + PATIENCE;
    let (ledger, invoices) = loop {
        let ledger = ledger(platform, end).await;
        let invoices = world.stripe.invoices();
        let closed: BTreeSet<String> = invoices
            .iter()
            .filter(|i| i["period_end"].as_i64() == Some(end) && i["status"] != "draft")
            .filter_map(|i| i["customer"].as_str().map(str::to_owned))
            .collect();
        let settled = all_samples.iter().all(|s| ledger.contains_key(&s.id)) && owners_customers.is_subset(&closed);
        if settled || Instant::now() > deadline {
            break (ledger, invoices);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let book = price_book(platform).await;
    let prices_by_id: HashMap<&str, &Price> = book.iter().map(|p| (p.id.as_str(), p)).collect();
    let events = world.stripe.meter_events();
    let meters = meters(platform).await;
    let meter_amounts: HashMap<String, i128> = meters.iter().map(|(_, name, amount)| (name.clone(), *amount)).collect();
    let deducted: HashMap<String, i128> = platform
        .rows(
            "billing",
            &format!(
                "SELECT owner_id::text AS o, sum(amount)::text AS a FROM credit_deductions
             WHERE window_start < to_timestamp({end}) GROUP BY owner_id"
            ),
        )
        .await
        .iter()
        .map(|r| (text(r, "o"), fixed(&text(r, "a"), 12)))
        .collect();

    // billing's own record of its reports (meter_reports), where it has one: per owner, price
    // and day, the accepted revisions add up to what Stripe must bill, and none is pending.
    let has_reports =
        platform.rows("billing", "SELECT to_regclass('meter_reports')::text AS t").await[0]["t"].is_string();
    let mut reports: HashMap<String, BTreeMap<(i128, String), i128>> = HashMap::new();
    let mut pending = 0;
    if has_reports {
        let sql = "SELECT owner_id::text AS o, price_id::text AS p, day::text AS d, state AS s, delta_quanta AS q FROM meter_reports";
        for r in platform.rows("billing", sql).await {
            match text(&r, "s").as_str() {
                "accepted" => {
                    let amount = prices_by_id[text(&r, "p").as_str()].amount;
                    *reports.entry(text(&r, "o")).or_default().entry((amount, text(&r, "d"))).or_default() +=
                        int(&r, "q");
                }
                "pending" => pending += 1,
                _ => {}
            }
        }
    }

    let mut problems: Vec<(&'static str, String)> = Vec::new();
    if pending > 0 {
        problems.push(("meter reports pending", format!("{pending} meter reports still pending")));
    }
    let mut table = Vec::new();
    let known: BTreeSet<String> = owners.iter().map(|o| o.person.user_id.to_string()).collect();
    for s in all_samples.iter().filter(|s| !known.contains(&s.owner)) {
        problems.push(("samples of no owner of the run", format!("sample {} of an unknown owner {}", s.id, s.owner)));
    }
    let ledger_owned: usize = ledger.values().filter(|e| e.iter().any(|e| known.contains(&e.owner))).count();
    let sampled: BTreeSet<&str> = all_samples.iter().map(|s| s.id.as_str()).collect();
    if ledger_owned != ledger.len() || ledger.keys().any(|k| !sampled.contains(k.as_str())) {
        problems.push((
            "ledger entries of no sample",
            "the ledger holds entries that are no sample of metering's".to_owned(),
        ));
    }
    for owner in owners {
        let id = owner.person.user_id.to_string();
        let Some(customer) = customers.get(&id).cloned() else {
            problems.push(("invoices missing", format!("{}: no Stripe customer in billing", owner.username)));
            continue;
        };
        let mut row = Row::default();
        // (price id, day) → Σ integers (postpaid), Σ overflow quanta (prepaid).
        let mut postpaid: BTreeMap<(String, String), i128> = BTreeMap::new();
        let mut overflow: BTreeMap<(String, String), i128> = BTreeMap::new();
        for s in all_samples.iter().filter(|s| s.owner == id) {
            row.samples += 1;
            if s.storage {
                row.storage_samples += 1;
            }
            if owner.member.as_ref().is_some_and(|m| m.user_id.to_string() == s.user) {
                row.member_samples += 1;
            }
            let mode = match (owner.kind.mode(), owner.mode_from) {
                (Some(m), Some(from)) if s.start >= from => m,
                _ => "postpaid",
            };
            let Some(entries) = ledger.get(&s.id) else {
                problems.push((
                    "samples missing from the ledger",
                    format!("{}: sample {} not in the ledger", owner.username, s.id),
                ));
                continue;
            };
            let [entry] = entries.as_slice() else {
                problems.push((
                    "samples in the ledger more than once",
                    format!("{}: sample {} split in {} entries", owner.username, s.id, entries.len()),
                ));
                continue;
            };
            row.entries += 1;
            if entry.n != s.n || entry.owner != id || entry.start != s.start || entry.day != day_of(s.start) {
                problems.push((
                    "ledger entries differing from their sample",
                    format!("{}: entry of {} differs from its sample", owner.username, s.id),
                ));
            }
            if entry.end - entry.start != s.end - s.start {
                problems.push((
                    "ledger entries differing from their sample",
                    format!("{}: entry of {} is not one window", owner.username, s.id),
                ));
            }
            if entry.mode != mode {
                problems.push((
                    "ledger entries of another mode",
                    format!("{}: {} billed {}, expected {mode}", owner.username, s.id, entry.mode),
                ));
            }
            let mut over_cost = 0;
            for (r, resource) in RESOURCES.iter().enumerate() {
                let price = in_force(&book, resource, s.start);
                let cost = half_up(s.n[r] * price.amount, per_unit(resource, s.start));
                row.samples_cost += cost;
                if s.storage {
                    row.storage_cost += cost;
                }
                row.ledger_cost += entry.cost[r];
                if entry.mode != "free" {
                    row.billable += entry.cost[r];
                }
                if entry.mode == "prepaid" {
                    row.prepaid_cost += entry.cost[r];
                }
                if entry.price[r] != price.id || entry.cost[r] != cost {
                    problems.push((
                        "ledger costs differing from samples × prices",
                        format!(
                            "{}: {} {resource}: price {} cost {} expected {} {cost}",
                            owner.username, s.id, entry.price[r], entry.cost[r], price.id
                        ),
                    ));
                }
                let key = (price.id.clone(), entry.day.clone());
                match mode {
                    "postpaid" => *postpaid.entry(key).or_default() += s.n[r],
                    "prepaid" => {
                        *overflow.entry(key).or_default() += entry.over[r];
                        over_cost += ceil_div(entry.over[r] * price.amount, E9);
                    }
                    _ => {}
                }
            }
            row.credits_paid += entry.paid;
            if entry.unpaid != 0 {
                problems.push((
                    "windows paid wrongly",
                    format!("{}: {} unpaid {} with a card on file", owner.username, s.id, entry.unpaid),
                ));
            }
            // The hybrid rule (decision 0038): the overflow of each resource is its quantity's
            // share of what credit could not pay, in whole quanta rounded up; the credits pay
            // the rest exactly; a window credit pays nothing of overflows whole.
            let total: i128 = entry.cost.iter().sum();
            if mode == "prepaid" && entry.paid > 0 && entry.paid + over_cost != total {
                problems.push((
                    "windows paid wrongly",
                    format!(
                        "{}: {} credits {} + overflow {over_cost} != cost {total}",
                        owner.username, s.id, entry.paid
                    ),
                ));
            }
            if mode == "prepaid" && entry.paid == 0 {
                let whole: Vec<i128> = RESOURCES
                    .iter()
                    .enumerate()
                    .map(|(r, resource)| ceil_div(entry.cost[r] * E9, in_force(&book, resource, s.start).amount.max(1)))
                    .collect();
                if entry.over.as_slice() != whole.as_slice() {
                    problems.push((
                        "windows paid wrongly",
                        format!(
                            "{}: {} paid by no credit overflows {:?}, not its whole quantity {whole:?}",
                            owner.username, s.id, entry.over
                        ),
                    ));
                }
            }
            if mode != "prepaid" && (entry.paid != 0 || entry.over != [0; 5]) {
                problems.push((
                    "windows paid wrongly",
                    format!("{}: {} {mode} but paid with credits", owner.username, s.id),
                ));
            }
        }
        if row.samples == row.storage_samples {
            problems.push(("owners without usage", format!("{}: no usage measured", owner.username)));
        }
        // An empty lab is measured too: samples of zero bytes.
        if owner.stores && row.storage_cost == 0 {
            problems.push(("owners' storage measured wrongly", format!("{}: no storage measured", owner.username)));
        }
        if !owner.stores && row.storage_cost != 0 {
            problems.push((
                "owners' storage measured wrongly",
                format!("{}: storage billed of an empty lab", owner.username),
            ));
        }
        if owner.member.is_some() && row.member_samples == 0 {
            problems.push((
                "team members' usage not rolled up",
                format!("{}: no usage of the member rolled up", owner.username),
            ));
        }
        // What Stripe is told per price and day, and the invoice lines it makes of it.
        let mut told: BTreeMap<(i128, String), i128> = BTreeMap::new();
        for ((price_id, day), n) in &postpaid {
            let price = prices_by_id[price_id.as_str()];
            *told.entry((price.amount, day.clone())).or_default() +=
                half_up(n * E9, per_unit(&price.resource, day_start(day)));
        }
        for ((price_id, day), quanta) in &overflow {
            *told.entry((prices_by_id[price_id.as_str()].amount, day.clone())).or_default() += quanta;
        }
        let mut lines: BTreeMap<i128, i128> = BTreeMap::new();
        for ((amount, _), q) in &told {
            *lines.entry(*amount).or_default() += q;
        }
        let expected: BTreeMap<i128, i128> = lines
            .iter()
            .map(|(amount, q)| (*amount, half_up(q * amount, E21)))
            .filter(|(_, minor)| *minor != 0)
            .collect();
        row.expected_invoice = expected.values().sum();
        row.storage_line = expected.contains_key(&fixed(STORAGE_OFFLINE_PRICE, 12));
        row.deducted = deducted.get(&id).copied().unwrap_or(0);
        match owner.kind {
            Kind::Prepaid => {
                if row.deducted != row.credits_paid || row.credits_paid != row.prepaid_cost {
                    problems.push((
                        "credit deductions differing from what they paid",
                        format!(
                            "{}: deducted {} credits paid {} cost of prepaid windows {}",
                            owner.username, row.deducted, row.credits_paid, row.prepaid_cost
                        ),
                    ));
                }
            }
            Kind::Hybrid => {
                // Spent down to less than one quantum of each resource: overflow is rounded up
                // to whole quanta, so the last window credit shares can leave a fraction.
                let quantum: i128 = RESOURCES
                    .iter()
                    .map(|r| {
                        book.iter().filter(|p| p.resource == *r).map(|p| ceil_div(p.amount, E9)).max().unwrap_or(0)
                    })
                    .sum();
                let left = i128::from(HYBRID_CREDITS) * E12 - row.deducted;
                row.left = left;
                if row.deducted != row.credits_paid || !(0..quantum).contains(&left) {
                    problems.push((
                        "credit deductions differing from what they paid",
                        format!(
                            "{}: deducted {} credits paid {} of {HYBRID_CREDITS} bought",
                            owner.username, row.deducted, row.credits_paid
                        ),
                    ));
                }
            }
            _ => {
                if row.deducted != 0 {
                    problems.push((
                        "credit deductions differing from what they paid",
                        format!("{}: credits deducted without credits", owner.username),
                    ));
                }
            }
        }
        // The owner's view of the period: the ledger's cost and credits, unrounded.
        let path = format!("/api/billing/usage?from={}&to={}", day_of(period.from.timestamp()), day_of(end - 1));
        let (status, view) = platform.call("GET", &path, &owner.person.token, None).await;
        let figure = |k: &str| view["range"][k].as_str().map(|v| fixed(v, 12));
        if status != 200 || figure("cost") != Some(row.billable) || figure("credits_paid") != Some(row.credits_paid) {
            problems.push((
                "owners' views differing from the ledger",
                format!(
                    "{}: the owner's view {status} {}, the ledger's cost {} and credits {}",
                    owner.username, view["range"], row.billable, row.credits_paid
                ),
            ));
        }
        // Stripe's invoice for the period.
        let invoice =
            invoices.iter().find(|i| i["customer"] == customer.as_str() && i["period_end"].as_i64() == Some(end));
        match invoice {
            None => problems.push(("invoices missing", format!("{}: no invoice for the period", owner.username))),
            Some(invoice) => {
                row.invoice_status = invoice["status"].as_str().unwrap_or_default().to_owned();
                let got: BTreeMap<i128, i128> = invoice["lines"]["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|l| l["amount"].as_i64().is_some_and(|a| a != 0))
                    .map(|l| {
                        let amount = l["pricing"]["unit_amount_decimal"].as_str().map_or(0, |a| fixed(a, 12));
                        (amount, int(l, "amount"))
                    })
                    .collect();
                row.invoice = Some(got.values().sum());
                if got != expected {
                    problems.push((
                        "invoices differing from the ledger",
                        format!(
                            "{}: invoice lines (unit amount ×1e12 → cents) {got:?}, expected {expected:?}",
                            owner.username
                        ),
                    ));
                }
            }
        }
        // Stripe counted each day's quantity once: its meter events per price and day add up.
        let mut counted: BTreeMap<(i128, String), i128> = BTreeMap::new();
        for e in events.iter().filter(|e| e["payload"]["stripe_customer_id"] == customer.as_str()) {
            row.meter_events += 1;
            let price = meter_amounts.get(e["event_name"].as_str().unwrap_or_default()).copied().unwrap_or(-1);
            let day = day_of(e["timestamp"].as_i64().unwrap_or_default());
            let value = e["payload"]["value"].as_str().map_or(0, |v| fixed(v, 9));
            if day.as_str() < day_of(end).as_str() {
                *counted.entry((price, day)).or_default() += value;
            }
        }
        told.retain(|_, q| *q != 0);
        counted.retain(|_, q| *q != 0);
        let mut reported = reports.get(&id).cloned().unwrap_or_default();
        reported.retain(|(_, day), _| day.as_str() < day_of(end).as_str());
        if has_reports && reported != told {
            problems.push((
                "owner-days billing's reports differ from the ledger",
                format!(
                    "{}: billing's accepted reports per (unit amount, day) {:?}, the ledger says {told:?}",
                    owner.username, reported
                ),
            ));
        }
        if counted != told {
            problems.push((
                "owner-days Stripe's meter events differ from the ledger",
                format!(
                    "{}: Stripe counted per (unit amount, day) {counted:?}, the ledger says {told:?}",
                    owner.username
                ),
            ));
        }
        // Stripe's meter event summaries per meter and UTC day add up to the same.
        let mut summed: BTreeMap<(i128, String), i128> = BTreeMap::new();
        let from = day_start(&day_of(period.from.timestamp()));
        for (meter, _, amount) in &meters {
            let path = format!(
                "billing/meters/{meter}/event_summaries?customer={customer}&start_time={from}&end_time={end}&value_grouping_window=day"
            );
            for s in stripe_list(platform, &path).await {
                let day = day_of(s["start_time"].as_i64().unwrap_or_default());
                *summed.entry((*amount, day)).or_default() += decimal(&s["aggregated_value"], 9);
            }
        }
        summed.retain(|_, q| *q != 0);
        if summed != told {
            problems.push((
                "owner-days Stripe's meter event summaries differ from the ledger",
                format!(
                    "{}: Stripe's summaries per (unit amount, day) {summed:?}, the ledger says {told:?}",
                    owner.username
                ),
            ));
        }
        table.push((owner, row));
    }
    if owners.iter().any(|o| o.stores) && !table.iter().any(|(_, row)| row.storage_line) {
        problems.push(("no storage on an invoice", "no owner's storage reached an invoice".to_owned()));
    }
    let mut identifiers: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *identifiers.entry(e["identifier"].as_str().unwrap_or_default()).or_default() += 1;
    }
    let repeated = identifiers.values().filter(|n| **n > 1).count();
    for (identifier, n) in identifiers.iter().filter(|(_, n)| **n > 1) {
        problems.push((
            "meter event identifiers sent twice",
            format!("meter event identifier {identifier} sent {n} times"),
        ));
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:>7} {:>7} {:>7} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12} {:>9} {:>6}",
        "owner",
        "kind",
        "samples",
        "storage",
        "entries",
        "member",
        "samples ¢",
        "storage ¢",
        "ledger ¢",
        "credits ¢",
        "deducted ¢",
        "expected ¢",
        "invoice ¢",
        "status",
        "events"
    );
    for (owner, row) in &table {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:>7} {:>7} {:>7} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12} {:>9} {:>6}",
            owner.username,
            owner.kind.name(),
            row.samples,
            row.storage_samples,
            row.entries,
            row.member_samples,
            cents(row.samples_cost, 12),
            cents(row.storage_cost, 12),
            cents(row.ledger_cost, 12),
            cents(row.credits_paid, 12),
            cents(row.deducted, 12),
            cents(row.expected_invoice * 100, 2),
            row.invoice.map_or("-".to_owned(), |i| cents(i * 100, 2)),
            row.invoice_status,
            row.meter_events
        );
    }
    for (owner, row) in table.iter().filter(|(_, r)| r.left != 0) {
        let _ = writeln!(out, "{}: credit left after overflow {} × 10^-12 minor units", owner.username, row.left);
    }
    let _ = writeln!(
        out,
        "{} owners, {} samples, {} ledger entries, {} meter events ({} identifiers repeated), {} invoices",
        owners.len(),
        all_samples.len(),
        ledger.len(),
        events.len(),
        repeated,
        invoices.iter().filter(|i| i["period_end"].as_i64() == Some(end)).count(),
    );
    Findings { problems, table: out }
}
