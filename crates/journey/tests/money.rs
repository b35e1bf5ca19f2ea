//! The money proof end to end (issue 17), with every service as its own process: owners of
//! every kind (postpaid with a card; prepaid with credits bought through Checkout; hybrid,
//! prepaid with a card whose credits run out; a team whose member's usage rolls up to the
//! owner; free) run their labs on the sandbox's Kubernetes, and some hold offline storage in
//! their labs' Hopsworks projects, while the World's clock runs across a UTC day boundary and
//! the end of a billing period. When the sandbox's Stripe has created and finalised the
//! period's invoices, for every owner:
//!
//! - billing's ledger holds exactly metering's attributed usage and storage samples, once
//!   each, with the mode
//!   and the price in force at each window's start and each window's cost
//!   `n × price / per_unit` rounded half up to 12 places (decisions 0038 and 0057: storage's
//!   unit a GB-month of the day's calendar month);
//! - the invoice's lines equal, to the cent, Σ over days of the day's quantity quantised to 9
//!   places half up (postpaid usage, plus prepaid overflow) × the price, rounded half up once;
//! - the owner's view of the period (`GET /api/billing/usage`) shows the ledger's cost and
//!   credits;
//! - prepaid credit deductions equal the cost they paid; the hybrid overflow and the credits
//!   together pay each window's cost exactly;
//! - Stripe counted each owner-day-resource-price once (the sum of its meter events is the
//!   day's quantity) and no meter event identifier twice.
//!
//! Faults on the way: a UsageRecorded republished after later ones (a duplicate, out of order),
//! a price change mid-day, Stripe answering 429 and 500 while the period's last day is reported,
//! and billing killed among those reports.
//! Bad input through the gateway (prices, caps, purchases, another owner's ids) is refused with
//! its code and changes none of billing's rows.
//!
//! `cargo test -p hopsbridge-journey --test money` runs the short form and the bad input;
//! `just proof-money` the long form: 50 owners over a simulated month.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests; the proof prints its per-owner table"
)]

use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::UsageRecordedV1;
use hopsbridge_journey::{Options, Person, Platform, binaries, wait_for};
use hopsbridge_sandbox::hopsworks::{Directory, ProjectStorage};
use hopsbridge_sandbox::stripe::HoldStatus;
use hopsbridge_sandbox::world::lab_pods;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// metering's window, seconds of the World's clock.
const WINDOW: u32 = 30;
/// The World's clock while usage runs: 30× real time, one window a second.
const RATE: u32 = 30_000;
/// billing's mode window (`ledger.window_secs`).
const MODE_WINDOW: i64 = 900;
/// Seconds after the period's end by which billing has reported the period's last day: it
/// reports a day 30 minutes after it ends (`reporting.close_after_secs`); Stripe finalises the
/// period's invoices an hour after it ends.
const REPORTED_BY: i64 = 40 * 60;
/// How long an effect may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(120);
/// The price of a CPU core-hour from the price change on.
const NEW_CPU_PRICE: &str = "41.5";
/// Credits bought by a prepaid owner (plenty) and a hybrid one (run out), minor units.
const PREPAID_CREDITS: i64 = 100_000;
const HYBRID_CREDITS: i64 = 500;
/// Extra one-GPU pods in the hybrid owner's lab, so that their credits run out early.
const HYBRID_EXTRA_GPU_PODS: usize = 4;
const RESOURCES: [&str; 5] = ["cpu", "memory", "gpu", "storage_offline", "storage_online"];
/// metering's storage window in the proof (`storage.window_secs`): 10 real seconds at [`RATE`],
/// so each snapshot is taken inside its window on a loaded machine (decision 0064).
const STORAGE_WINDOW: u32 = 300;
/// The storage prices of the proof: unit amounts no other price has, since invoice lines and
/// reports are told apart by unit amount (memory's default is 3.5).
const STORAGE_OFFLINE_PRICE: &str = "2.75";
const STORAGE_ONLINE_PRICE: &str = "36.25";
/// Offline bytes in a storing owner's lab: terabytes, so that half an hour is cents.
const LAB_STORAGE_BYTES: u64 = 4_000_000_000_000;
/// One platform at a time: two would take more Postgres connections than a test server allows.
static ONE_PLATFORM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// 10^12 and 10^9 and 10^21: money in 12 places of the minor unit, quantities in 9 places.
const E12: i128 = 1_000_000_000_000;
const E9: i128 = 1_000_000_000;
const E21: i128 = E12 * E9;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Postpaid,
    Prepaid,
    Hybrid,
    TeamOwner,
    Free,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Postpaid => "postpaid",
            Self::Prepaid => "prepaid",
            Self::Hybrid => "hybrid",
            Self::TeamOwner => "team",
            Self::Free => "free",
        }
    }
    fn mode(self) -> Option<&'static str> {
        match self {
            Self::Prepaid | Self::Hybrid => Some("prepaid"),
            Self::Free => Some("free"),
            Self::Postpaid | Self::TeamOwner => None,
        }
    }
    fn credits(self) -> Option<i64> {
        match self {
            Self::Prepaid => Some(PREPAID_CREDITS),
            Self::Hybrid => Some(HYBRID_CREDITS),
            _ => None,
        }
    }
}

/// What a run does, on the World's clock.
#[derive(Debug)]
struct Plan {
    kinds: Vec<Kind>,
    /// The clock stands here while owners sign up (their periods end at `period_end`).
    setup_at: DateTime<Utc>,
    /// When the CPU price changes (posted during the setup).
    price_change_at: DateTime<Utc>,
    /// Stretches the clock runs through at [`RATE`], jumping to each start.
    phases: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// The end of the owners' first billing period: the 1st of a month.
    period_end: DateTime<Utc>,
    /// Whether Stripe answers the reports of the last day slowly (2 meter events a second,
    /// then 429) and fails three requests with 500.
    slow_stripe: bool,
    /// Billing killed while Stripe holds its answer to the `n`th meter event from the start of
    /// the last phase (mid-batch), and started again at once.
    kill_mid_batch: Option<u32>,
    /// Billing down between phases.
    outage: Option<Outage>,
}

/// Billing down for a while between two phases.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// When the day of phase `after` has closed, billing is killed while Stripe holds its
    /// answer to the first meter event of the pass reporting it, once the pass's other reports
    /// are in Stripe too: Stripe has every report, billing knows the outcome of none. The
    /// clock moves `hours` on (past Stripe's 24-hour identifier window) before billing starts
    /// again; it must settle them from Stripe's summaries and send none of them again.
    UnknownOutcomes { after: usize, hours: i64 },
    /// Billing is killed at the end of phase `after` and started again at the start of phase
    /// `until`, days later, which waits until it has caught up: every closed day reported.
    Down { after: usize, until: usize },
}

/// The 1st of the month after `t`'s, 00:00 UTC.
fn next_month(t: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap()
}

fn at(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    t + TimeDelta::seconds(secs)
}

/// The short form: one crossing of a month's end, which is a UTC day boundary and the end of
/// the owners' first period.
fn short_plan(now: DateTime<Utc>) -> Plan {
    let period_end = next_month(at(now, 2 * 3600));
    let setup_at = at(period_end, -40 * 60);
    Plan {
        kinds: vec![Kind::Postpaid, Kind::Prepaid, Kind::Hybrid, Kind::TeamOwner, Kind::Free],
        setup_at,
        price_change_at: at(period_end, -15 * 60),
        phases: vec![(at(period_end, -30 * 60), at(period_end, 2 * 60))],
        period_end,
        slow_stripe: true,
        kill_mid_batch: Some(3),
        outage: None,
    }
}

/// A plan for billing's outages: the short plan's owners, ten minutes of work at ten in the
/// morning on each of `days` days from `days + 2` days before the period's end, the price
/// changing in the middle of the second's (the first's with one day), and the month's end.
fn outage_plan(now: DateTime<Utc>, days: i64, outage: Outage) -> Plan {
    let period_end = next_month(at(now, (days + 3) * 86_400));
    let first = at(period_end, -(days + 2) * 86_400);
    let mut phases: Vec<_> =
        (0..days).map(|d| (at(first, d * 86_400 + 10 * 3600), at(first, d * 86_400 + 10 * 3600 + 600))).collect();
    phases.push((at(period_end, -30 * 60), at(period_end, 2 * 60)));
    Plan {
        kinds: vec![Kind::Postpaid, Kind::Prepaid, Kind::Hybrid, Kind::TeamOwner, Kind::Free],
        setup_at: at(first, 10 * 3600 - 10 * 60),
        price_change_at: at(first, days.min(2).saturating_sub(1) * 86_400 + 10 * 3600 + 300),
        phases,
        period_end,
        slow_stripe: false,
        kill_mid_batch: None,
        outage: Some(outage),
    }
}

/// The long form: 50 owners from the 1st of a month to the next; ten minutes of work at ten in
/// the morning each day, the price changing in the middle of the 15th's, and the month's end.
fn long_plan(now: DateTime<Utc>) -> Plan {
    let start = next_month(at(now, 2 * 3600));
    let period_end = next_month(at(start, 86_400));
    let kinds = (0..50)
        .map(|i| match i % 10 {
            6 => Kind::Prepaid,
            7 => Kind::Hybrid,
            8 => Kind::Free,
            9 if i == 9 => Kind::TeamOwner,
            _ => Kind::Postpaid,
        })
        .collect();
    let days = (period_end - start).num_days();
    let mut phases: Vec<_> =
        (0..days - 1).map(|d| (at(start, d * 86_400 + 10 * 3600), at(start, d * 86_400 + 10 * 3600 + 600))).collect();
    phases.push((at(period_end, -600), at(period_end, 120)));
    Plan {
        kinds,
        setup_at: at(start, 5 * 60),
        price_change_at: at(start, 14 * 86_400 + 10 * 3600 + 300),
        phases,
        period_end,
        slow_stripe: false,
        kill_mid_batch: Some(20),
        outage: None,
    }
}

/// `n / d` rounded half up (n ≥ 0, d > 0).
fn half_up(n: i128, d: i128) -> i128 {
    (2 * n + d).div_euclid(2 * d)
}

fn ceil_div(n: i128, d: i128) -> i128 {
    (n + d - 1).div_euclid(d)
}

/// Units of usage per billed unit on the UTC day of `t`: nanocore-seconds per core-hour,
/// byte-seconds per GiB-hour, GPU-seconds per GPU-hour, byte-seconds per GB-month of the day's
/// calendar month.
fn per_unit(resource: &str, t: i64) -> i128 {
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
fn day_start(day: &str) -> i64 {
    NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

/// A decimal string as an integer count of 10^-places.
fn fixed(s: &str, places: usize) -> i128 {
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
fn cents(v: i128, places: u32) -> String {
    let hundredths = v / 10_i128.pow(places.saturating_sub(2));
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

#[derive(QueryableByName)]
struct Json {
    #[diesel(sql_type = Nullable<Text>)]
    j: Option<String>,
}

/// The rows of `sql` in `schema`, as JSON objects.
async fn rows(platform: &Platform, schema: &str, sql: &str) -> Vec<Value> {
    let mut conn = platform.db.connect(schema).await;
    let wrapped = format!("SELECT json_agg(t)::text AS j FROM ({sql}) t");
    let found: Json = diesel::sql_query(wrapped).get_result(&mut conn).await.unwrap();
    found.j.map(|j| serde_json::from_str::<Value>(&j).unwrap()).and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_owned()
}

fn int(v: &Value, k: &str) -> i128 {
    i128::from(v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}")))
}

/// One of metering's attributed samples, of usage or of storage.
#[derive(Clone, Debug)]
struct Sample {
    id: String,
    user: String,
    owner: String,
    start: i64,
    end: i64,
    /// In [`RESOURCES`] order.
    n: [i128; 5],
    storage: bool,
}

/// metering's attributed usage and storage samples whose window starts before `before`.
async fn samples(platform: &Platform, before: i64) -> Vec<Sample> {
    let mut all = usage_samples(platform, before).await;
    let sql = format!(
        "SELECT id::text AS id, user_id::text AS u, owner_user_id::text AS o,
                extract(epoch FROM window_start)::bigint AS ws, extract(epoch FROM window_end)::bigint AS we,
                offline_byte_seconds AS so, online_byte_seconds AS sn
         FROM storage_samples WHERE owner_user_id IS NOT NULL AND window_start < to_timestamp({before})"
    );
    all.extend(rows(platform, "metering", &sql).await.iter().map(|r| Sample {
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

async fn usage_samples(platform: &Platform, before: i64) -> Vec<Sample> {
    let sql = format!(
        "SELECT id::text AS id, user_id::text AS u, owner_user_id::text AS o,
                extract(epoch FROM window_start)::bigint AS ws,
                cpu_nanocore_seconds AS c, memory_byte_seconds AS m, gpu_seconds AS g
         FROM samples WHERE attribution = 'attributed' AND window_start < to_timestamp({before})"
    );
    rows(platform, "metering", &sql)
        .await
        .iter()
        .map(|r| Sample {
            id: text(r, "id"),
            user: text(r, "u"),
            owner: text(r, "o"),
            start: r["ws"].as_i64().unwrap(),
            end: r["ws"].as_i64().unwrap() + i64::from(WINDOW),
            n: [int(r, "c"), int(r, "m"), int(r, "g"), 0, 0],
            storage: false,
        })
        .collect()
}

/// One of billing's ledger entries.
#[derive(Clone, Debug)]
struct Entry {
    day: String,
    owner: String,
    start: i64,
    end: i64,
    n: [i128; 5],
    mode: String,
    price: [String; 5],
    /// 10^-12 minor units.
    cost: [i128; 5],
    paid: i128,
    unpaid: i128,
    /// 10^-9 billed units.
    over: [i128; 5],
}

async fn ledger(platform: &Platform, before: i64) -> HashMap<String, Vec<Entry>> {
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
    for r in rows(platform, "billing", &sql).await {
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
struct Price {
    id: String,
    resource: String,
    /// 10^-12 minor units per billed unit.
    amount: i128,
    from: i64,
}

async fn price_book(platform: &Platform) -> Vec<Price> {
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

fn in_force<'a>(book: &'a [Price], resource: &str, t: i64) -> &'a Price {
    book.iter()
        .filter(|p| p.resource == resource && p.from <= t)
        .max_by_key(|p| p.from)
        .unwrap_or_else(|| panic!("no {resource} price at {t}"))
}

fn day_of(t: i64) -> String {
    DateTime::from_timestamp(t, 0).unwrap().date_naive().to_string()
}

/// An owner of the run.
#[derive(Debug)]
struct Owner {
    kind: Kind,
    username: String,
    person: Person,
    member: Option<Person>,
    /// From when their mode applies (none: postpaid from the start).
    mode_from: Option<i64>,
    /// Whether their lab's Hopsworks project holds offline storage.
    stores: bool,
}

/// Whether the `i`th owner's lab holds offline storage: every other owner's, and the team's
/// (its member's work is in the owner's project).
fn stores(i: usize, kind: Kind) -> bool {
    i.is_multiple_of(2) || kind == Kind::TeamOwner
}

/// A lab's offline storage: `bytes` over the project's directory, its Hive database and its
/// feature store, under quotas that hold it.
fn lab_storage(bytes: u64) -> ProjectStorage {
    let dir = |bytes: u64| Directory { bytes, files: 3, quota_bytes: Some(4 * LAB_STORAGE_BYTES) };
    ProjectStorage {
        project: dir(bytes / 2),
        hive: Some(dir(bytes / 3)),
        featurestore: Some(dir(bytes - bytes / 2 - bytes / 3)),
    }
}

/// Gives the storing owners' labs offline storage from now on (on the World's clock; the labs
/// are made when their owners get a cluster), a little different for each, and doubles the
/// first's half way through the first phase.
async fn store(platform: &Platform, plan: &Plan) {
    let world = &platform.world;
    let cluster = &world.clusters[0];
    cluster.hopsworks.use_clock(std::sync::Arc::clone(&world.clock));
    let (from, until) = plan.phases[0];
    let half_way = from.timestamp() + (until - from).num_seconds() / 2;
    for i in (0..plan.kinds.len()).filter(|i| stores(*i, plan.kinds[*i])) {
        let lab = format!("{}10000_lab", handle(i));
        let project = wait_for("the owner's lab", PATIENCE, || async {
            cluster.hopsworks.projects().into_iter().find(|p| p.name == lab)
        })
        .await;
        let bytes = LAB_STORAGE_BYTES + u64::try_from(i).unwrap() * 1_234_567_891;
        cluster.hopsworks.set_storage(project.id, lab_storage(bytes)).unwrap();
        if i == 0 {
            cluster.hopsworks.set_storage_at(project.id, half_way, lab_storage(2 * bytes)).unwrap();
        }
    }
}

/// Email local parts whose first three letters differ, so that the Hopsworks sandbox names
/// each `<letters>10000` and the lab is theirs.
fn handle(i: usize) -> String {
    let letter = |k: usize| char::from(b'a' + u8::try_from(k % 26).unwrap());
    format!("q{}{}", letter(i / 26), letter(i))
}

/// Signs the owners up while the clock stands at the plan's setup time, sets their modes,
/// changes the CPU price, buys credits, adds cards and the team member, and waits until
/// everybody has their cluster.
async fn setup(platform: &Platform, plan: &Plan) -> Vec<Owner> {
    let world = &platform.world;
    world.set_rate(0);
    world.set_time(plan.setup_at);
    // The price change first, so billing has a whole catalogue sync to put it in Stripe.
    let body =
        json!({ "resource": "cpu", "unit_amount_decimal": NEW_CPU_PRICE, "effective_from": plan.price_change_at });
    let (status, price) = platform.call("POST", "/api/admin/prices", &platform.admin_token, Some(body)).await;
    assert_eq!(status, 201, "the price change: {price}");

    let handles: Vec<String> = (0..plan.kinds.len()).map(handle).collect();
    let mut people = Vec::new();
    for chunk in handles.chunks(10) {
        people.extend(futures::future::join_all(chunk.iter().map(|h| platform.sign_up(h))).await);
    }
    futures::future::join_all(people.iter().map(|p| platform.wait_billing_account(p, PATIENCE))).await;

    let mut owners = Vec::new();
    for ((kind, handle), person) in plan.kinds.iter().zip(&handles).zip(people) {
        let mut mode_from = None;
        if let Some(mode) = kind.mode() {
            let path = format!("/api/admin/billing/{}/mode", person.user_id);
            let (status, set) = platform.call("PUT", &path, &platform.admin_token, Some(json!({ "mode": mode }))).await;
            assert_eq!(status, 200, "{path}: {set}");
            let from = DateTime::parse_from_rfc3339(&text(&set, "effective_from")).unwrap().timestamp();
            assert_eq!(from % MODE_WINDOW, 0, "a mode starts at a window: {set}");
            mode_from = Some(from);
        }
        let i = owners.len();
        owners.push(Owner {
            kind: *kind,
            username: format!("{}10000", &handle[..3]),
            person,
            member: None,
            mode_from,
            stores: stores(i, *kind),
        });
    }
    // Every mode is in force before anyone's first window.
    let usage_from = owners.iter().filter_map(|o| o.mode_from).max().unwrap_or(plan.setup_at.timestamp());
    world.set_time(DateTime::from_timestamp(usage_from, 0).unwrap());

    // Credits through Checkout in payment mode, granted by its webhook.
    for owner in owners.iter().filter(|o| o.kind.credits().is_some()) {
        let amount = owner.kind.credits().unwrap();
        let (status, purchase) = platform
            .call("POST", "/api/credits/purchase", &owner.person.token, Some(json!({ "amount_minor": amount })))
            .await;
        assert_eq!(status, 200, "{purchase}");
        world.stripe.complete_checkout_session(&text(&purchase, "id")).unwrap();
    }
    for owner in owners.iter().filter(|o| o.kind.credits().is_some()) {
        let amount = i128::from(owner.kind.credits().unwrap()) * E12;
        wait_for("the credits granted", PATIENCE, || async {
            let (status, credits) = platform.call("GET", "/api/credits", &owner.person.token, None).await;
            (status == 200 && credits["balance"].as_str().is_some_and(|b| fixed(b, 12) == amount)).then_some(())
        })
        .await;
    }

    // A card each (free owners too: it gets them a cluster), then their clusters.
    for owner in &owners {
        platform.add_card(&owner.person).await;
    }
    futures::future::join_all(owners.iter().map(|o| platform.wait_assigned(&o.person, PATIENCE))).await;
    store(platform, plan).await;

    // The team: its owner invites a member who joins and works in the owner's lab.
    let cluster = &world.clusters[0];
    if let Some(team) = owners.iter_mut().find(|o| o.kind == Kind::TeamOwner) {
        let invitation = platform.invite(&team.person, "zmember@example.com", "Data scientist").await;
        let member = platform.sign_up("zmember").await;
        platform.wait_billing_account(&member, PATIENCE).await;
        platform.join(&member, &invitation.token).await;
        platform.wait_assigned(&member, PATIENCE).await;
        let account = wait_for("the member's Hopsworks account", PATIENCE, || async {
            cluster.hopsworks.users().into_iter().find(|u| u.email == "zmember@example.com" && u.status == 2)
        })
        .await;
        let lab = format!("{}_lab", team.username);
        let project = cluster.hopsworks.projects().into_iter().find(|p| p.name == lab).expect("the team owner's lab");
        let namespace = format!("{}-lab", team.username);
        let mut pod = lab_pods(&account.username, world.clock.now())
            .into_iter()
            .find(|p| p.name.starts_with("notebook"))
            .unwrap();
        pod.uid = format!("uid-{namespace}-{}", pod.name);
        pod.namespace = namespace;
        pod.labels.insert("project-id".to_owned(), project.id.to_string());
        cluster.kubernetes.run_pods(vec![pod]).unwrap();
        team.member = Some(member);
    }
    // The hybrid owners' labs train on more GPUs, so their credits run out early.
    for owner in owners.iter().filter(|o| o.kind == Kind::Hybrid) {
        let training =
            lab_pods(&owner.username, world.clock.now()).into_iter().find(|p| p.name.starts_with("training"));
        let training = training.unwrap();
        let pods = (0..HYBRID_EXTRA_GPU_PODS)
            .map(|k| {
                let mut pod = training.clone();
                pod.name = format!("training{k}-{}", owner.username);
                pod.uid = format!("uid-{}-training{k}", pod.namespace);
                pod
            })
            .collect();
        cluster.kubernetes.run_pods(pods).unwrap();
    }
    // Every owner's subscription has the new price's item before the clock runs on: billing
    // adds it within a catalogue sync (60 s, real time), under a price's 600 s lead in real
    // time but not on a clock running 30 times faster.
    let new_price = text(&price, "id");
    let ids: Vec<String> = owners.iter().map(|o| format!("'{}'", o.person.user_id)).collect();
    let sql = format!(
        "SELECT count(*)::bigint AS n FROM accounts a WHERE a.user_id IN ({}) AND a.stripe_subscription_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM subscription_items i WHERE i.subscription_id = a.stripe_subscription_id
                            AND i.price_id = '{new_price}')",
        ids.join(", ")
    );
    wait_for("every owner's subscription has the new price's item", PATIENCE, || async {
        (rows(platform, "billing", &sql).await[0]["n"].as_i64() == Some(0)).then_some(())
    })
    .await;
    owners
}

/// Publishes the first UsageRecorded on metering's stream again, under a new message id, as a
/// relay that lost its bookkeeping would: a duplicate, arriving after later events.
async fn republish_first_usage(platform: &Platform) {
    let js = platform.bus.jetstream().await;
    let subject = platform.bus.subjects().event::<UsageRecordedV1>();
    let stream = js.get_stream(platform.bus.subjects().stream(Service::Metering)).await.unwrap();
    let first = stream.get_first_raw_message_by_subject(&subject, 1).await.unwrap();
    let again = PublishMessage::build().payload(first.payload).message_id(Uuid::now_v7().to_string());
    js.send_publish(subject, again).await.unwrap().await.unwrap();
}

/// The Stripe API of the sandbox, read as billing's key.
async fn stripe_list(platform: &Platform, path: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/{path}?limit=100", platform.world.stripe.url());
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

/// The meters' event names and the unit amount (10^-12) of the price on each meter.
async fn meter_prices(platform: &Platform) -> HashMap<String, i128> {
    let meters: HashMap<String, String> =
        stripe_list(platform, "billing/meters").await.iter().map(|m| (text(m, "id"), text(m, "event_name"))).collect();
    stripe_list(platform, "prices")
        .await
        .iter()
        .filter_map(|p| {
            let meter = p["recurring"]["meter"].as_str()?;
            let name = meters.get(meter)?.clone();
            Some((name, fixed(p["unit_amount_decimal"].as_str()?, 12)))
        })
        .collect()
}

/// What one owner's proof found.
#[derive(Debug, Default)]
struct Row {
    samples: usize,
    /// Of which storage samples.
    storage_samples: usize,
    /// The cost of the storage samples, 10^-12 minor units.
    storage_cost: i128,
    /// Whether the invoice is to have a line of offline storage.
    storage_line: bool,
    member_samples: usize,
    entries: usize,
    /// 10^-12 minor units.
    samples_cost: i128,
    ledger_cost: i128,
    credits_paid: i128,
    deducted: i128,
    expected_invoice: i128,
    invoice: Option<i128>,
    invoice_status: String,
    meter_events: usize,
    /// The ledger's cost of every mode but free.
    billable: i128,
    /// The ledger's cost of prepaid windows (what credits pay, with hybrid overflow).
    prepaid_cost: i128,
    /// Credit left of a hybrid owner's, 10^-12 minor units.
    left: i128,
}

/// Stripe's path for meter events.
const METER_EVENTS: &str = "/v1/billing/meter_events";

/// billing killed at a pinned point: while Stripe holds its answer to a meter event it has
/// counted.
struct PinnedKill {
    /// The sandbox Stripe's hold.
    hold: String,
    done: bool,
}

/// billing's reports whose outcome it does not know.
async fn pending_reports(platform: &Platform) -> i64 {
    let found =
        rows(platform, "billing", "SELECT count(*)::bigint AS n FROM meter_reports WHERE state = 'pending'").await;
    found[0]["n"].as_i64().unwrap()
}

/// Once Stripe holds the pinned meter event: billing killed, the answer released (to nobody),
/// billing started again at once; it must settle what it sent and did not record.
async fn kill_when_held(platform: &Platform, pinned: Option<&mut PinnedKill>) {
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

/// [`Outage::UnknownOutcomes`] for the day of `phase_start`: billing killed when Stripe holds
/// the first meter event of the pass reporting the closed day and has every other one of the
/// pass; the clock moved `hours` on; billing started again. It settles every report from
/// Stripe's summaries as accepted and sends none again.
async fn unknown_outcomes(platform: &Platform, postpaid: &[String], phase_start: i64, hours: i64) {
    let world = &platform.world;
    let day_start = phase_start - phase_start.rem_euclid(86_400);
    let day = day_of(day_start);
    let on_day = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["timestamp"].as_i64().is_some_and(|t| t >= day_start && t < day_start + 86_400))
            .map(|e| text(e, "identifier"))
            .collect()
    };
    let hold = world.stripe.hold("POST", METER_EVENTS, 1);
    // The day closes for billing 30 minutes after its end.
    let closed = day_start + 86_400 + 31 * 60;
    world.set_time(DateTime::from_timestamp(closed, 0).unwrap());
    let deadline = Instant::now() + PATIENCE;
    let (mut count, mut since) = (usize::MAX, Instant::now());
    loop {
        let n = on_day(&world.stripe.meter_events()).len();
        if n != count {
            (count, since) = (n, Instant::now());
        }
        let held = matches!(world.stripe.hold_status(&hold), Some(HoldStatus::Held { .. }));
        if held && since.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Stripe never held a meter event of {day}: {:?}",
            world.stripe.hold_status(&hold)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    platform.kill_service(Service::Billing);
    world.stripe.release(&hold).unwrap();
    let sent = on_day(&world.stripe.meter_events());
    let sql = format!("SELECT owner_id::text AS o, state AS s, identifier AS i FROM meter_reports WHERE day = '{day}'");
    let reports = rows(platform, "billing", &sql).await;
    let owners_in: BTreeSet<String> = reports.iter().map(|r| text(r, "o")).collect();
    let unknown = reports.iter().filter(|r| r["s"] == "pending").count();
    eprintln!(
        "billing killed with {unknown} of {} reports of {day} pending, {} meter events of it in Stripe",
        reports.len(),
        sent.len()
    );
    assert!(
        unknown == reports.len() && postpaid.iter().all(|o| owners_in.contains(o)),
        "the kill was to find every report of {day} sent and none recorded: {reports:?}"
    );
    let in_stripe: BTreeSet<&str> = sent.iter().map(String::as_str).collect();
    let missing: Vec<String> =
        reports.iter().map(|r| text(r, "i")).filter(|i| !in_stripe.contains(i.as_str())).collect();
    assert!(missing.is_empty(), "reports of {day} Stripe never got: {missing:?}");

    world.set_time(DateTime::from_timestamp(closed + hours * 3600, 0).unwrap());
    platform.start_service(Service::Billing);
    wait_for("billing settles the reports of unknown outcome", PATIENCE, || async {
        (pending_reports(platform).await == 0).then_some(())
    })
    .await;
    let reports = rows(platform, "billing", &sql).await;
    let accepted = reports.iter().filter(|r| r["s"] == "accepted").count();
    assert_eq!(accepted, reports.len(), "every report of {day} settled as accepted: {reports:?}");
    assert_eq!(on_day(&world.stripe.meter_events()), sent, "a report of {day} was sent to Stripe again");
    let findings =
        rows(platform, "billing", "SELECT kind FROM reconciliation_findings WHERE kind LIKE 'report_%'").await;
    assert!(findings.is_empty(), "findings: {findings:?}");
    eprintln!(
        "{} reports of {day} settled from Stripe's summaries {hours} hours later, none sent again",
        reports.len()
    );
}

/// Waits until billing has accepted reports of every day of `days` for every owner of
/// `postpaid` and has none pending.
async fn caught_up(platform: &Platform, postpaid: &[String], days: &[String]) {
    let want: BTreeSet<(String, String)> =
        postpaid.iter().flat_map(|o| days.iter().map(move |d| (o.clone(), d.clone()))).collect();
    wait_for("billing reports every closed day it missed", PATIENCE, || async {
        let sql = "SELECT DISTINCT owner_id::text AS o, day::text AS d FROM meter_reports WHERE state = 'accepted'";
        let got: BTreeSet<(String, String)> =
            rows(platform, "billing", sql).await.iter().map(|r| (text(r, "o"), text(r, "d"))).collect();
        (want.is_subset(&got) && pending_reports(platform).await == 0).then_some(())
    })
    .await;
}

/// Runs `plan` through metering, billing and the sandbox's Stripe and checks every owner.
async fn prove(plan: &Plan, faults: bool) {
    let _one = ONE_PLATFORM.lock().await;
    let started = Instant::now();
    let kinds = plan.kinds.clone();
    let lab_owners = (0..kinds.len()).map(|i| format!("{}10000", handle(i))).collect();
    let mut settings = vec![
        (Service::Metering, "storage.window_secs", STORAGE_WINDOW.to_string()),
        (Service::Billing, "rates.storage_offline.unit_amount_decimal", STORAGE_OFFLINE_PRICE.to_owned()),
        (Service::Billing, "rates.storage_online.unit_amount_decimal", STORAGE_ONLINE_PRICE.to_owned()),
    ];
    if plan.outage.is_some() {
        // A pass every five seconds: days closed during the run are reported in it.
        settings.push((Service::Billing, "reporting.interval_secs", "5".to_owned()));
    }
    let options = Options {
        clusters: 1,
        capacity: 200,
        metering_window_secs: WINDOW,
        lab_owners,
        log_filter: "warn",
        settings,
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let world = &platform.world;
    let owners = setup(&platform, plan).await;
    eprintln!("setup done after {:?}", started.elapsed());

    let customers: HashMap<String, String> =
        rows(&platform, "billing", "SELECT user_id::text AS u, stripe_customer_id AS c FROM accounts")
            .await
            .iter()
            .filter_map(|r| Some((text(r, "u"), r["c"].as_str()?.to_owned())))
            .collect();
    let billed: BTreeSet<String> = owners
        .iter()
        .filter(|o| o.kind != Kind::Free && o.kind != Kind::Prepaid)
        .map(|o| customers[&o.person.user_id.to_string()].clone())
        .collect();
    // Owners whose every day of work is reported (a hybrid owner's only once credit runs out).
    let postpaid: Vec<String> = owners
        .iter()
        .filter(|o| o.kind == Kind::Postpaid || o.kind == Kind::TeamOwner)
        .map(|o| o.person.user_id.to_string())
        .collect();

    // The clock runs through each phase; the first UsageRecorded is republished half way
    // through the first. From the start of the last phase (the period's end passes in it, and
    // with it invoice.created, on which billing reports the last day at once), Stripe may be
    // slow and failing, and billing is killed at its pinned point.
    let end = plan.period_end.timestamp();
    let mut republished = !faults;
    let mut pinned: Option<PinnedKill> = None;
    for (phase, (from, until)) in plan.phases.iter().enumerate() {
        if let Some(Outage::Down { until: back, .. }) = plan.outage.filter(|_| faults)
            && back == phase
        {
            world.set_time(*from);
            platform.start_service(Service::Billing);
            let days: Vec<String> = plan.phases[..phase].iter().map(|(f, _)| day_of(f.timestamp())).collect();
            eprintln!("billing started again at {from}, with days {days:?} to report");
            caught_up(&platform, &postpaid, &days).await;
            eprintln!("billing caught up after {:?}", started.elapsed());
        }
        if phase + 1 == plan.phases.len() && faults {
            if plan.slow_stripe {
                // Stripe takes two meter events a second, so the reports of the last day take
                // a while and billing is killed among them, and fails its next requests with 500s.
                world.stripe.set_meter_event_rate_limit(Some(2));
                world.stripe.fail_next(3, 500);
            }
            pinned = plan
                .kill_mid_batch
                .map(|n| PinnedKill { hold: world.stripe.hold("POST", METER_EVENTS, n), done: false });
        }
        world.set_time(*from);
        world.set_rate(RATE);
        let real = Duration::from_secs(u64::try_from((*until - *from).num_seconds()).unwrap() * 1000 / u64::from(RATE));
        let deadline = Instant::now() + real + Duration::from_secs(60);
        while world.clock.now() < until.timestamp() {
            if !republished && world.clock.now() >= from.timestamp() + (*until - *from).num_seconds() / 2 {
                republish_first_usage(&platform).await;
                republished = true;
            }
            kill_when_held(&platform, pinned.as_mut()).await;
            assert!(Instant::now() < deadline, "the clock did not reach {until}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        world.set_rate(0);
        match plan.outage.filter(|_| faults) {
            Some(Outage::Down { after, .. }) if after == phase => {
                platform.kill_service(Service::Billing);
                eprintln!("billing killed at {until}");
            }
            Some(Outage::UnknownOutcomes { after, hours }) if after == phase => {
                unknown_outcomes(&platform, &postpaid, from.timestamp(), hours).await;
            }
            _ => {}
        }
    }
    eprintln!("usage done after {:?}", started.elapsed());

    // billing reports a day once it has been closed for `reporting.close_after_secs` (30
    // minutes); the clock stands 40 minutes after the period's end, before Stripe finalises its
    // invoices (an hour after it), while billing reports what it has not.
    world.set_time(at(plan.period_end, REPORTED_BY));
    let last_day = (end - 86_400, end);
    let reported = |events: &[Value]| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| e["timestamp"].as_i64().is_some_and(|t| t >= last_day.0 && t < last_day.1))
            .filter_map(|e| e["payload"]["stripe_customer_id"].as_str().map(str::to_owned))
            .collect()
    };
    // Every owner-day-resource (five resources) at test mode's 25 meter events a second, twice over.
    let days = u64::try_from(plan.phases.len()).unwrap();
    let ceiling = Duration::from_secs(60 + u64::try_from(billed.len()).unwrap() * days * 6 / 12);
    let wait_start = Instant::now();
    let (mut count, mut steady_since) = (0, Instant::now());
    loop {
        kill_when_held(&platform, pinned.as_mut()).await;
        let events = world.stripe.meter_events();
        let seen = reported(&events);
        if events.len() != count {
            (count, steady_since) = (events.len(), Instant::now());
        }
        let killed = pinned.as_ref().is_none_or(|k| k.done);
        let done = killed
            && billed.is_subset(&seen)
            && steady_since.elapsed() > Duration::from_secs(5)
            && pending_reports(&platform).await == 0;
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
    world.set_time(at(plan.period_end, 3600 + 30));

    // billing has every sample of the period (the duplicate changed nothing).
    let all_samples = samples(&platform, end).await;
    let ledger = wait_for("billing's ledger holds every sample of the period", PATIENCE, || async {
        let ledger = ledger(&platform, end).await;
        all_samples.iter().all(|s| ledger.contains_key(&s.id)).then_some(ledger)
    })
    .await;
    let invoices = wait_for("the period's invoices", Duration::from_secs(30), || async {
        let invoices = world.stripe.invoices();
        let closed: BTreeSet<String> = invoices
            .iter()
            .filter(|i| i["period_end"].as_i64() == Some(end) && i["status"] != "draft")
            .filter_map(|i| i["customer"].as_str().map(str::to_owned))
            .collect();
        let owners_customers: BTreeSet<String> =
            owners.iter().map(|o| customers[&o.person.user_id.to_string()].clone()).collect();
        owners_customers.is_subset(&closed).then_some(invoices)
    })
    .await;
    let book = price_book(&platform).await;
    let prices_by_id: HashMap<&str, &Price> = book.iter().map(|p| (p.id.as_str(), p)).collect();
    let events = world.stripe.meter_events();
    let meters = meter_prices(&platform).await;
    let deducted: HashMap<String, i128> = rows(
        &platform,
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
        rows(&platform, "billing", "SELECT to_regclass('meter_reports')::text AS t").await[0]["t"].is_string();
    let mut reports: HashMap<String, BTreeMap<(i128, String), i128>> = HashMap::new();
    let mut pending = 0;
    if has_reports {
        let sql = "SELECT owner_id::text AS o, price_id::text AS p, day::text AS d, state AS s, delta_quanta AS q FROM meter_reports";
        for r in rows(&platform, "billing", sql).await {
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

    let mut problems: Vec<String> = Vec::new();
    if pending > 0 {
        problems.push(format!("{pending} meter reports still pending"));
    }
    let mut table = Vec::new();
    let known: BTreeSet<String> = owners.iter().map(|o| o.person.user_id.to_string()).collect();
    for s in all_samples.iter().filter(|s| !known.contains(&s.owner)) {
        problems.push(format!("sample {} of an unknown owner {}", s.id, s.owner));
    }
    let ledger_owned: usize = ledger.values().filter(|e| e.iter().any(|e| known.contains(&e.owner))).count();
    let sampled: BTreeSet<&str> = all_samples.iter().map(|s| s.id.as_str()).collect();
    if ledger_owned != ledger.len() || ledger.keys().any(|k| !sampled.contains(k.as_str())) {
        problems.push("the ledger holds entries that are no sample of metering's".to_owned());
    }
    for owner in &owners {
        let id = owner.person.user_id.to_string();
        let customer = customers[&id].clone();
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
                problems.push(format!("{}: sample {} not in the ledger", owner.username, s.id));
                continue;
            };
            let [entry] = entries.as_slice() else {
                problems.push(format!("{}: sample {} split in {} entries", owner.username, s.id, entries.len()));
                continue;
            };
            row.entries += 1;
            if entry.n != s.n || entry.owner != id || entry.start != s.start || entry.day != day_of(s.start) {
                problems.push(format!("{}: entry of {} differs from its sample", owner.username, s.id));
            }
            if entry.end - entry.start != s.end - s.start {
                problems.push(format!("{}: entry of {} is not one window", owner.username, s.id));
            }
            if entry.mode != mode {
                problems.push(format!("{}: {} billed {}, expected {mode}", owner.username, s.id, entry.mode));
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
                    problems.push(format!(
                        "{}: {} {resource}: price {} cost {} expected {} {cost}",
                        owner.username, s.id, entry.price[r], entry.cost[r], price.id
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
                problems.push(format!("{}: {} unpaid {} with a card on file", owner.username, s.id, entry.unpaid));
            }
            // The hybrid rule (decision 0038): the overflow of each resource is its quantity's
            // share of what credit could not pay, in whole quanta rounded up; the credits pay
            // the rest exactly; a window credit pays nothing of overflows whole.
            let total: i128 = entry.cost.iter().sum();
            if mode == "prepaid" && entry.paid > 0 && entry.paid + over_cost != total {
                problems.push(format!(
                    "{}: {} credits {} + overflow {over_cost} != cost {total}",
                    owner.username, s.id, entry.paid
                ));
            }
            if mode == "prepaid" && entry.paid == 0 {
                let whole: Vec<i128> = RESOURCES
                    .iter()
                    .enumerate()
                    .map(|(r, resource)| ceil_div(entry.cost[r] * E9, in_force(&book, resource, s.start).amount.max(1)))
                    .collect();
                if entry.over.as_slice() != whole.as_slice() {
                    problems.push(format!(
                        "{}: {} paid by no credit overflows {:?}, not its whole quantity {whole:?}",
                        owner.username, s.id, entry.over
                    ));
                }
            }
            if mode != "prepaid" && (entry.paid != 0 || entry.over != [0; 5]) {
                problems.push(format!("{}: {} {mode} but paid with credits", owner.username, s.id));
            }
        }
        if row.samples == row.storage_samples {
            problems.push(format!("{}: no usage measured", owner.username));
        }
        // An empty lab is measured too: samples of zero bytes.
        if owner.stores && row.storage_cost == 0 {
            problems.push(format!("{}: no storage measured", owner.username));
        }
        if !owner.stores && row.storage_cost != 0 {
            problems.push(format!("{}: storage billed of an empty lab", owner.username));
        }
        if owner.member.is_some() && row.member_samples == 0 {
            problems.push(format!("{}: no usage of the member rolled up", owner.username));
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
                    problems.push(format!(
                        "{}: deducted {} credits paid {} cost of prepaid windows {}",
                        owner.username, row.deducted, row.credits_paid, row.prepaid_cost
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
                    problems.push(format!(
                        "{}: deducted {} credits paid {} of {HYBRID_CREDITS} bought",
                        owner.username, row.deducted, row.credits_paid
                    ));
                }
            }
            _ => {
                if row.deducted != 0 {
                    problems.push(format!("{}: credits deducted without credits", owner.username));
                }
            }
        }
        // The owner's view of the period: the ledger's cost and credits, unrounded.
        let path = format!("/api/billing/usage?from={}&to={}", day_of(plan.setup_at.timestamp()), day_of(end - 1));
        let (status, view) = platform.call("GET", &path, &owner.person.token, None).await;
        let figure = |k: &str| view["range"][k].as_str().map(|v| fixed(v, 12));
        if status != 200 || figure("cost") != Some(row.billable) || figure("credits_paid") != Some(row.credits_paid) {
            problems.push(format!(
                "{}: the owner's view {status} {}, the ledger's cost {} and credits {}",
                owner.username, view["range"], row.billable, row.credits_paid
            ));
        }
        // Stripe's invoice for the period.
        let invoice =
            invoices.iter().find(|i| i["customer"] == customer.as_str() && i["period_end"].as_i64() == Some(end));
        match invoice {
            None => problems.push(format!("{}: no invoice for the period", owner.username)),
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
                    problems.push(format!(
                        "{}: invoice lines (unit amount ×1e12 → cents) {got:?}, expected {expected:?}",
                        owner.username
                    ));
                }
            }
        }
        // Stripe counted each day's quantity once: its meter events per price and day add up.
        let mut counted: BTreeMap<(i128, String), i128> = BTreeMap::new();
        for e in events.iter().filter(|e| e["payload"]["stripe_customer_id"] == customer.as_str()) {
            row.meter_events += 1;
            let price = meters.get(e["event_name"].as_str().unwrap_or_default()).copied().unwrap_or(-1);
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
            problems.push(format!(
                "{}: billing's accepted reports per (unit amount, day) {:?}, the ledger says {told:?}",
                owner.username, reported
            ));
        }
        if counted != told {
            problems.push(format!(
                "{}: Stripe counted per (unit amount, day) {counted:?}, the ledger says {told:?}",
                owner.username
            ));
        }
        table.push((owner, row));
    }
    if !table.iter().any(|(_, row)| row.storage_line) {
        problems.push("no owner's storage reached an invoice".to_owned());
    }
    let mut identifiers: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *identifiers.entry(e["identifier"].as_str().unwrap_or_default()).or_default() += 1;
    }
    let repeated = identifiers.values().filter(|n| **n > 1).count();
    if repeated > 0 {
        problems.push(format!("{repeated} meter event identifiers sent more than once"));
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
        "{} owners, {} samples, {} ledger entries, {} meter events ({} identifiers repeated), {} invoices; {:?}",
        owners.len(),
        all_samples.len(),
        ledger.len(),
        events.len(),
        repeated,
        invoices.iter().filter(|i| i["period_end"].as_i64() == Some(end)).count(),
        started.elapsed()
    );
    eprintln!("{out}");
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_end_is_invoiced_to_the_cent_despite_duplicates_a_price_change_and_a_killed_billing() {
    let plan = short_plan(Utc::now());
    prove(&plan, true).await;
}

/// billing killed after Stripe accepted a day's reports and before it recorded them, then down
/// 30 hours: `just proof-money faults`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "billing down 30 hours with reports of unknown outcome: just proof-money faults"]
async fn reports_of_unknown_outcome_are_settled_from_stripe_after_thirty_hours_down_never_resent() {
    let plan = outage_plan(Utc::now(), 1, Outage::UnknownOutcomes { after: 0, hours: 30 });
    prove(&plan, true).await;
}

/// billing down for three days of work, then catching up: `just proof-money faults`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "billing down three days: just proof-money faults"]
async fn billing_down_for_three_days_catches_up_every_closed_day() {
    let plan = outage_plan(Utc::now(), 3, Outage::Down { after: 0, until: 3 });
    prove(&plan, true).await;
}

/// The long form: `just proof-money`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a simulated month for 50 owners: just proof-money"]
async fn a_simulated_month_for_fifty_owners_is_invoiced_to_the_cent() {
    let plan = long_plan(Utc::now());
    prove(&plan, true).await;
}

/// A request and the answer it must get: method, path, token, body, status, code.
type Case<'a> = (&'a str, String, &'a str, Option<Value>, u16, &'a str);

/// A fingerprint of every billing table bad input could change.
async fn billing_rows(platform: &Platform) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for table in [
        "prices",
        "billing_modes",
        "spending_caps",
        "credit_purchases",
        "credit_grants",
        "credit_deductions",
        "credit_states",
        "ledger_entries",
        "accounts",
    ] {
        let sql = format!("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS h FROM {table} t");
        let found = rows(platform, "billing", &sql).await;
        all.push((table.to_owned(), text(&found[0], "h")));
    }
    all
}

/// billing's rows once they and Stripe's events have not changed for three seconds.
async fn settled_billing_rows(platform: &Platform) -> Vec<(String, String)> {
    let deadline = Instant::now() + PATIENCE;
    let mut last = (billing_rows(platform).await, platform.world.stripe.events().len());
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = (billing_rows(platform).await, platform.world.stripe.events().len());
        if now == last {
            return now.0;
        }
        assert!(Instant::now() < deadline, "billing's rows never settled");
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_money_input_is_refused_with_its_code_and_changes_nothing() {
    let _one = ONE_PLATFORM.lock().await;
    let platform =
        Platform::start(binaries!(), &Options { clusters: 1, log_filter: "warn", ..Options::default() }).await;
    let (a, b) = (platform.sign_up("qbada").await, platform.sign_up("qbadb").await);
    platform.wait_billing_account(&a, PATIENCE).await;
    platform.wait_billing_account(&b, PATIENCE).await;
    let admin = platform.admin_token.as_str();
    let a_token = a.token.as_str();
    let soon = at(Utc::now(), 3600).to_rfc3339();
    let now = Utc::now().to_rfc3339();
    // Stripe's webhooks about the new subscriptions still update the accounts after both have
    // their ids: start from rows that stay the same for a while.
    let before = settled_billing_rows(&platform).await;
    let stripe_events = platform.world.stripe.events().len();

    let price = |resource: &str, amount: Value, from: &str| json!({ "resource": resource, "unit_amount_decimal": amount, "effective_from": from });
    let other = format!("/api/admin/billing/{}", b.user_id);
    let cases: Vec<Case<'_>> = vec![
        // Malformed prices.
        ("POST", "/api/admin/prices".into(), admin, Some(price("disk", json!("1"), &soon)), 400, "unknown_resource"),
        ("POST", "/api/admin/prices".into(), admin, Some(price("cpu", json!(3.5), &soon)), 400, "invalid_price"),
        ("POST", "/api/admin/prices".into(), admin, Some(price("cpu", json!("-1"), &soon)), 400, "invalid_price"),
        ("POST", "/api/admin/prices".into(), admin, Some(price("cpu", json!("1e3"), &soon)), 400, "invalid_price"),
        ("POST", "/api/admin/prices".into(), admin, Some(price("cpu", json!("abc"), &soon)), 400, "invalid_price"),
        ("POST", "/api/admin/prices".into(), admin, Some(price("cpu", json!(""), &soon)), 400, "invalid_price"),
        (
            "POST",
            "/api/admin/prices".into(),
            admin,
            Some(price("cpu", json!("0.1234567890123"), &soon)),
            400,
            "invalid_price",
        ),
        ("POST", "/api/admin/prices".into(), admin, Some(price("cpu", json!("35"), &now)), 400, "price_too_soon"),
        ("POST", "/api/admin/prices".into(), a_token, Some(price("cpu", json!("35"), &soon)), 403, "admin_only"),
        // Negative and absurd caps.
        ("PUT", "/api/billing/cap".into(), a_token, Some(json!({ "monthly_cap_minor": -1 })), 400, "invalid_cap"),
        ("PUT", "/api/billing/cap".into(), a_token, Some(json!({ "monthly_cap_minor": 0 })), 400, "invalid_cap"),
        (
            "PUT",
            "/api/billing/cap".into(),
            a_token,
            Some(json!({ "monthly_cap_minor": 100_000_001 })),
            400,
            "invalid_cap",
        ),
        ("PUT", "/api/billing/cap".into(), a_token, Some(json!({ "monthly_cap_minor": i64::MAX })), 400, "invalid_cap"),
        ("PUT", "/api/billing/cap".into(), a_token, Some(json!({ "monthly_cap_minor": 10.5 })), 400, "invalid_cap"),
        ("PUT", "/api/billing/cap".into(), a_token, Some(json!({ "monthly_cap_minor": "500" })), 400, "invalid_cap"),
        // Credit purchases of bad amounts.
        ("POST", "/api/credits/purchase".into(), a_token, Some(json!({ "amount_minor": 0 })), 400, "invalid_amount"),
        ("POST", "/api/credits/purchase".into(), a_token, Some(json!({ "amount_minor": -500 })), 400, "invalid_amount"),
        ("POST", "/api/credits/purchase".into(), a_token, Some(json!({ "amount_minor": 499 })), 400, "invalid_amount"),
        (
            "POST",
            "/api/credits/purchase".into(),
            a_token,
            Some(json!({ "amount_minor": 1_000_001 })),
            400,
            "invalid_amount",
        ),
        (
            "POST",
            "/api/credits/purchase".into(),
            a_token,
            Some(json!({ "amount_minor": 500.5 })),
            400,
            "invalid_amount",
        ),
        (
            "POST",
            "/api/credits/purchase".into(),
            a_token,
            Some(json!({ "amount_minor": "500" })),
            400,
            "invalid_amount",
        ),
        ("POST", "/api/credits/purchase".into(), a_token, Some(json!({ "amount_minor": 1e30 })), 400, "invalid_amount"),
        // Another owner's ids: the routes naming an owner are the admins'.
        ("PUT", format!("{other}/mode"), a_token, Some(json!({ "mode": "free" })), 403, "admin_only"),
        ("POST", format!("{other}/credits"), a_token, Some(json!({ "amount_minor": 1000 })), 403, "admin_only"),
        // And the admins' with bad values.
        ("PUT", format!("{other}/mode"), admin, Some(json!({ "mode": "gold" })), 400, "invalid_mode"),
        (
            "PUT",
            format!("/api/admin/billing/{}/mode", Uuid::now_v7()),
            admin,
            Some(json!({ "mode": "free" })),
            404,
            "billing_account_not_found",
        ),
        ("POST", format!("{other}/credits"), admin, Some(json!({ "amount_minor": -5 })), 400, "invalid_amount"),
        (
            "POST",
            format!("{other}/credits"),
            admin,
            Some(json!({ "amount_minor": 100, "priority": -1 })),
            400,
            "invalid_grant",
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path, token, body, status, code) in &cases {
        let (got, answer) = platform.call(method, path, token, body.clone()).await;
        if got != *status || answer["code"] != *code {
            wrong.push(format!("{method} {path} {body:?}: {got} {answer}, expected {status} {code}"));
        }
    }
    // A body that is not the route's: refused before anything is read.
    for (method, path, body) in [
        ("POST", "/api/admin/prices", json!({ "resource": "cpu", "unit_amount_decimal": "1" })),
        (
            "POST",
            "/api/admin/prices",
            json!({ "resource": "cpu", "unit_amount_decimal": "1", "effective_from": soon, "x": 1 }),
        ),
        ("PUT", "/api/billing/cap", json!({ "cap": 5 })),
        ("POST", "/api/credits/purchase", json!({})),
    ] {
        let token = if path.starts_with("/api/admin") { admin } else { a_token };
        let (got, answer) = platform.call(method, path, token, Some(body.clone())).await;
        if got != 400 || answer["code"].as_str().is_none_or(str::is_empty) {
            wrong.push(format!("{method} {path} {body}: {got} {answer}, expected 400 with a code"));
        }
    }
    // B's usage and credits are not A's to see: A's own views show only A.
    let (status, usage) = platform.call("GET", "/api/billing/usage", a_token, None).await;
    assert_eq!(status, 200, "{usage}");
    let mentions_b = usage.to_string().contains(&b.user_id.to_string());
    assert!(!mentions_b, "A's usage names B: {usage}");

    assert!(wrong.is_empty(), "{} answers wrong:\n{}", wrong.len(), wrong.join("\n"));
    assert_eq!(billing_rows(&platform).await, before, "bad input changed billing's rows");
    assert_eq!(platform.world.stripe.events().len(), stripe_events, "bad input reached Stripe");
}
