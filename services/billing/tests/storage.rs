//! Storage billed per GB-month (decision 0057), against the running service, the real Postgres
//! and NATS and the Stripe sandbox: `StorageRecordedV1` ledgered once per sample, a month of
//! constant storage costing its GB-month price whatever the month's length, prepaid credits and
//! the hybrid overflow paying storage window by window, the owner's view down to the samples,
//! the public prices, and Stripe's invoice equal to the ledger to the cent with storage on it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use chrono::{DateTime, NaiveDate, Utc};
use common::*;
use hopsbridge_billing::catalog::Prices;
use hopsbridge_billing::events::UserCreatedHooks;
use hopsbridge_billing::money::{Resource, month_seconds};
use hopsbridge_billing::reporting::Reporter;
use hopsbridge_billing::stripe::Stripe;
use hopsbridge_billing::{BillingConfig, quantise};
use hopsbridge_contracts::events::StorageRecordedV1;
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_sandbox::clock::{ClockServer, REAL_TIME_RATE_MILLI, SimClock};
use hopsbridge_sandbox::stripe::{StripeConfig, StripeSim};
use hopsbridge_testkit::{STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, TestBus, TestDb, TestSettings};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
const GB: u64 = 1_000_000_000;

/// One hour of a project's storage: `offline` and `online` bytes held from `start`.
fn storage(owner: Uuid, start: i64, (offline, online): (u64, u64)) -> StorageRecordedV1 {
    StorageRecordedV1 {
        sample_id: Uuid::now_v7().to_string(),
        cluster_id: Uuid::from_u128(7).to_string(),
        project_id: 119,
        namespace: "fraud".into(),
        owner_user_id: owner.to_string(),
        user_id: owner.to_string(),
        window_start_unix_seconds: start,
        window_end_unix_seconds: start + HOUR,
        offline_bytes: offline,
        online_bytes: online,
        offline_byte_seconds: offline * 3_600,
        online_byte_seconds: online * 3_600,
        measured_at_unix_seconds: start + 120,
        estimated: false,
    }
}

/// Publishes each event as metering's relay does, with `Nats-Msg-Id` = event id.
async fn publish_storage(bus: &TestBus, events: &[(Uuid, StorageRecordedV1)]) {
    publish_metering(bus, events).await;
}

fn with_ids(events: &[StorageRecordedV1]) -> Vec<(Uuid, StorageRecordedV1)> {
    events.iter().map(|e| (Uuid::now_v7(), e.clone())).collect()
}

async fn until(db: &TestDb, sql: &str, want: i64) {
    let reached =
        hopsbridge_testkit::eventually(Duration::from_secs(60), || async { count(db, sql).await == want }).await;
    assert!(reached, "{sql}: {} instead of {want}", count(db, sql).await);
}

#[derive(diesel::QueryableByName, Debug)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    t: String,
}

/// The rows of `sql`, which selects one text column named `t`.
async fn texts(db: &TestDb, sql: &str) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    let mut conn = db.connect("billing").await;
    diesel::sql_query(sql).load::<Text>(&mut conn).await.unwrap().into_iter().map(|r| r.t).collect()
}

fn at(y: i32, m: u32, d: u32) -> i64 {
    NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

fn day_of(t: i64) -> NaiveDate {
    DateTime::from_timestamp(t, 0).unwrap().date_naive()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn owner_caller(user: Uuid) -> Caller {
    caller(user, &[Role::User, Role::Owner])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_constant_storage_costs_its_gb_month_price_once_per_sample_in_28_30_and_31_day_months() {
    let b = start_adjusted(UserCreatedHooks::default(), |s| s.set("reconciliation.interval_secs", "86400")).await;
    // 3 GB offline and 0.5 GB online all month: 3 × 3.5 + 0.5 × 35 = 28 cents, each month.
    let months = [(2027, 2, 28), (2026, 11, 30), (2026, 12, 31)];
    let mut owners = Vec::new();
    let mut events = Vec::new();
    for (y, m, days) in months {
        let (owner, _) = b.new_owner().await;
        for h in 0..days * 24 {
            let mut e = storage(owner, at(y, m, 1) + h * HOUR, (3 * GB, GB / 2));
            e.estimated = h == 5;
            events.push(e);
        }
        owners.push(owner);
    }
    let published = with_ids(&events);
    publish_storage(&b.bus, &published).await;
    let total = i64::try_from(events.len()).unwrap();
    assert_eq!(total, (28 + 30 + 31) * 24);
    until(&b.db, "ledger_entries WHERE source = 'storage'", total).await;
    // Redelivered (the same event id) and republished (a new event id, the same sample): nothing changes.
    publish_storage(&b.bus, &published[..100]).await;
    publish_storage(&b.bus, &with_ids(&events[100..200])).await;
    let consumed = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        count(&b.db, "inbox WHERE event_type = 'StorageRecorded'").await >= total + 100
    })
    .await;
    assert!(consumed, "the republished events were consumed");
    // A sample whose byte-seconds are not its bytes times its window is refused, and changes nothing.
    let mut bad = storage(owners[0], at(2027, 2, 3), (GB, 0));
    bad.offline_byte_seconds += 1;
    publish_storage(&b.bus, &with_ids(&[bad])).await;
    until(&b.db, "dead_letters WHERE consumer = 'billing-storage_recorded'", 1).await;
    assert_eq!(count(&b.db, "ledger_entries").await, total);

    for ((y, m, days), owner) in months.iter().zip(&owners) {
        let from = NaiveDate::from_ymd_opt(*y, *m, 1).unwrap();
        let to = NaiveDate::from_ymd_opt(*y, *m, u32::try_from(*days).unwrap()).unwrap();
        let (status, view) =
            b.call(Method::GET, &format!("/api/billing/usage?from={from}&to={to}"), Some(&owner_caller(*owner))).await;
        assert_eq!(status, 200, "{view}");
        // Each hour's cost is rounded at 12 places: the month is 28 to well under 1e-9 of a cent.
        let cost = dec(view["range"]["cost"].as_str().unwrap());
        assert!((cost - Decimal::from(28)).abs() < dec("0.000000001"), "{y}-{m}: {cost}");
        assert_eq!(view["range"]["cost_minor"], 28, "{y}-{m}");
        let lines = view["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 2 * usize::try_from(*days).unwrap(), "{y}-{m}: a line per day and storage resource");
        assert!(lines.iter().all(|l| l["unit"] == "GB-month" && l["project_id"] == 119), "{y}-{m}");
        let offline: Vec<&Value> = lines.iter().filter(|l| l["resource"] == "storage_offline").collect();
        // A day of 3 GB is 3 / days GB-months.
        let first = offline[0]["quantity"].as_str().unwrap().trim_end_matches('0');
        let want = match days {
            30 => "0.1",
            28 => "0.10714285714285714285714285714286",
            _ => "0.0967741935483870967741935483871",
        };
        assert_eq!(first, want, "{y}-{m}");
        // Every figure traces to its samples.
        let (status, samples) = b
            .call(Method::GET, &format!("/api/billing/usage/samples?day={from}&limit=6"), Some(&owner_caller(*owner)))
            .await;
        assert_eq!(status, 200, "{samples}");
        let s = &samples["samples"][5];
        assert_eq!((s["source"].as_str(), s["estimated"].as_bool()), (Some("storage"), Some(true)), "{s}");
        assert_eq!(s["storage_offline_byte_seconds"], 3 * GB * 3_600, "{s}");
        assert_eq!(s["storage_online_byte_seconds"], GB / 2 * 3_600, "{s}");
        assert_eq!(s["cpu_nanocore_seconds"], 0, "{s}");
        if *days == 30 {
            // 3 GB for one hour of 720: 1/240 GB-month, at 32 places.
            assert_eq!(s["storage_offline_gb_months"], "0.00416666666666666666666666666667", "{s}");
        }
    }
    let sums =
        "SELECT (sum(storage_offline_byte_seconds) || ' ' || sum(cpu_nanocore_seconds)) AS t FROM ledger_entries";
    assert_eq!(texts(&b.db, sums).await, vec![format!("{} 0", 3 * GB * 3_600 * u64::try_from(total).unwrap())]);

    // Anyone sees the storage prices.
    let (status, pricing) =
        reqwest::Client::new().get(format!("{}/api/pricing", b.base)).send().await.map(|r| (r.status(), r)).unwrap();
    assert_eq!(status, 200);
    let pricing: Value = pricing.json().await.unwrap();
    let current: BTreeMap<String, (String, String)> = pricing["current"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let r = p["resource"].as_str().unwrap().to_owned();
            (r, (p["unit"].as_str().unwrap().to_owned(), p["unit_amount_decimal"].as_str().unwrap().to_owned()))
        })
        .collect();
    assert_eq!(current.len(), 5, "{pricing}");
    assert_eq!(current["storage_offline"], ("GB-month".into(), "3.5".into()));
    assert_eq!(current["storage_online"], ("GB-month".into(), "35".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepaid_storage_is_paid_from_credits_window_by_window_and_overflows_to_postpaid_with_a_card() {
    let b = start_adjusted(UserCreatedHooks::default(), |s| s.set("reconciliation.interval_secs", "86400")).await;
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    let (owner, account) = b.new_owner().await;
    let (status, _) = b
        .call_with(
            Method::PUT,
            &format!("/api/admin/billing/{owner}/mode"),
            Some(&admin),
            Some(json!({"mode": "prepaid"})),
        )
        .await;
    assert_eq!(status, 200);
    let grant = || async {
        let path = format!("/api/admin/billing/{owner}/credits");
        let (status, g) = b.call_with(Method::POST, &path, Some(&admin), Some(json!({"amount_minor": 100}))).await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
    };
    grant().await;
    // Hourly windows from the first whole hour after the mode takes effect, each holding as
    // many GB offline as its month has hours (3.5 an hour at 3.5 a GB-month) and a tenth of
    // that online (3.5 an hour at 35): 7 an hour, whatever the month.
    let now = Utc::now().timestamp();
    let first = (now + 900).div_euclid(HOUR) * HOUR + HOUR;
    let window = |i: i64| {
        let start = first + i * HOUR;
        let hours = month_seconds(day_of(start)) / 3_600;
        storage(owner, start, (hours * GB, hours * GB / 10))
    };
    let windows: Vec<_> = (0..16).map(window).collect();
    publish_storage(&b.bus, &with_ids(&windows)).await;
    until(&b.db, &format!("ledger_entries WHERE owner_id = '{owner}'"), 16).await;
    let paid_sql = format!(
        "SELECT (storage_offline_cost || ' ' || storage_online_cost || ' ' || credits_paid || ' ' || unpaid) AS t
         FROM ledger_entries WHERE owner_id = '{owner}' ORDER BY window_start"
    );
    let mut want: Vec<String> = (0..14).map(|_| "3.5 3.5 7 0".to_owned()).collect();
    want.push("3.5 3.5 2 5".to_owned());
    want.push("3.5 3.5 0 7".to_owned());
    assert_eq!(texts(&b.db, &paid_sql).await, want);
    assert_eq!(b.outbox("CreditsExhausted").await, 1, "exhausted once, without a card");

    // A card and another grant: the window beyond the credit overflows to postpaid, each storage
    // resource in quanta of a GB-month: 5 of 7 over, ceil(1e9 × 5 / 7) offline and
    // ceil(1e9 × 5 / 70) online, billed 2.5000000025 + 2.50000002; the credits pay the rest.
    let customer = account.stripe_customer_id.unwrap();
    let attached = json!({"id": format!("evt_{}", Uuid::new_v4().simple()), "object": "event", "type": "payment_method.attached",
        "created": Utc::now().timestamp(), "data": {"object": {"id": "pm_storage", "object": "payment_method",
        "customer": customer, "card": {"brand": "visa", "last4": "4242", "exp_month": 1, "exp_year": 2031}}}});
    assert_eq!(b.webhook(&attached.to_string()).await.0, 200);
    grant().await;
    let more: Vec<_> = (16..31).map(window).collect();
    publish_storage(&b.bus, &with_ids(&more)).await;
    until(&b.db, &format!("ledger_entries WHERE owner_id = '{owner}'"), 31).await;
    let last = texts(
        &b.db,
        &format!(
            "SELECT (credits_paid || ' ' || unpaid || ' ' || storage_offline_over_quanta || ' ' || storage_online_over_quanta
                     || ' ' || cpu_over_quanta) AS t
             FROM ledger_entries WHERE sample_id IN ('{}', '{}') ORDER BY window_start",
            more[13].sample_id, more[14].sample_id
        ),
    )
    .await;
    assert_eq!(last, vec!["7 0 0 0 0", "1.9999999775 0 714285715 71428572 0"]);
    assert_eq!(b.outbox("CreditsExhausted").await, 1, "a card on file: no exhaustion");
    let (status, credits) = b.call(Method::GET, "/api/credits", Some(&owner_caller(owner))).await;
    assert_eq!(status, 200, "{credits}");
    assert_eq!(credits["balance"], "0.0000000225", "{credits}");
}

/// billing running on a simulated calendar that the Stripe sandbox shares.
struct Service {
    base: String,
    db: TestDb,
    bus: TestBus,
    sim: StripeSim,
    stop: CancellationToken,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Service {
    /// Opens the account of a new person through the real consumer and waits for its
    /// subscription.
    async fn new_owner(&self) -> (Uuid, AccountRow) {
        let (user, event) = (Uuid::now_v7(), Uuid::now_v7());
        publish_user_created(&self.bus, event, &event.to_string(), &person(user)).await;
        let ready = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
            account(&self.db, user).await.is_some_and(|a| a.stripe_subscription_id.is_some())
        })
        .await;
        assert!(ready, "the account was opened");
        (user, account(&self.db, user).await.unwrap())
    }
}

/// The service, and a reporter to drive.
struct World {
    billing: Service,
    clock: Arc<SimClock>,
    _clock_server: ClockServer,
    reporter: Reporter,
}

/// 2026-11-03T10:00:00Z: a subscription opened then is anchored at 2026-12-01.
const START: i64 = 1_793_700_000;
const NOV_3: i64 = START - 10 * HOUR;
const DEC_1: i64 = NOV_3 + 28 * DAY;

async fn world() -> World {
    hopsbridge_testkit::init();
    let clock = Arc::new(SimClock::running(START * 1_000_000, REAL_TIME_RATE_MILLI));
    let clock_server = ClockServer::start(Arc::clone(&clock)).unwrap();
    let sim = StripeSim::start_with_clock(
        StripeConfig { secret_key: STRIPE_SECRET_KEY.to_owned(), rate_limit: None },
        Arc::clone(&clock),
    )
    .unwrap();
    let (db, bus) = (TestDb::new().await, TestBus::new().await);
    let settings = settings(&db, &bus, &sim)
        .set("http.workers", "2")
        .layer(TEST_EVENTS)
        .clock(&clock_server.url())
        .set("reporting.interval_secs", "86400")
        .set("reconciliation.interval_secs", "86400");
    let config: BillingConfig = TestSettings::load(&settings, &hopsbridge_billing::DEFAULTS);
    let app = hopsbridge_billing::build(config.clone()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let billing = Service { base, db, bus, sim, stop };
    let database = Database::new(&billing.db.config(), "billing").unwrap();
    let stripe = Stripe::new(&billing.sim.url(), STRIPE_SECRET_KEY.to_owned().into(), 100).unwrap();
    let prices = Prices::new(stripe.clone(), config.rates.clone(), "usd".into());
    let followed = Clock::follow(&clock_server.url(), Duration::from_millis(20)).await.unwrap();
    let reporter = Reporter::new(&config, database, (stripe, prices), followed).unwrap();
    World { billing, clock, _clock_server: clock_server, reporter }
}

impl World {
    async fn at(&self, at: i64) {
        self.clock.set(at);
        self.billing.sim.run_due();
        let followed = hopsbridge_testkit::eventually(Duration::from_secs(10), || async {
            self.reporter.settings.clock.now().timestamp() >= at
        })
        .await;
        assert!(followed, "the reporter follows the calendar");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoice_stripe_computes_with_storage_equals_the_ledger_to_the_cent() {
    let w = world().await;
    let (owner, account) = w.billing.new_owner().await;
    let (customer, subscription) = (account.stripe_customer_id.unwrap(), account.stripe_subscription_id.unwrap());
    // The subscription has an item of each storage price.
    let items = stripe_get(&w.billing.sim, &format!("subscription_items?subscription={subscription}")).await;
    assert_eq!(items["data"].as_array().unwrap().len(), 5, "{items}");
    // A card on file, so the invoice is paid.
    let form = |pairs: &[(&str, &str)]| serde_urlencoded::to_string(pairs).unwrap();
    let sim_url = w.billing.sim.url();
    let post = |path: String, body: String| {
        let url = format!("{sim_url}/v1/{path}");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(STRIPE_SECRET_KEY)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let pm = post("payment_methods/pm_card_visa/attach".into(), form(&[("customer", &customer)])).await;
    let pm = pm["id"].as_str().unwrap().to_owned();
    post(format!("customers/{customer}"), form(&[("invoice_settings[default_payment_method]", &pm)])).await;
    // November from the 3rd: 3 GB offline and 0.5 GB online, hour by hour, growing by an odd
    // number of bytes each day, and a little CPU.
    let mut events = Vec::new();
    for h in 0..28 * 24 {
        let grown = u64::try_from(h / 24).unwrap() * 7_777_777;
        events.push(storage(owner, NOV_3 + h * HOUR, (3 * GB + grown, GB / 2 + grown)));
    }
    let published = with_ids(&events);
    publish_storage(&w.billing.bus, &published).await;
    let cpu = vec![(Uuid::now_v7(), usage(owner, owner, NOV_3 + 13 * HOUR, 900, (2, 1, 0)))];
    publish_usage(&w.billing.bus, &cpu).await;
    until(&w.billing.db, &format!("ledger_entries WHERE owner_id = '{owner}'"), 28 * 24 + 1).await;
    for d in 1..=27 {
        w.at(NOV_3 + d * DAY + 31 * 60).await;
        w.reporter.report_closed().await.unwrap();
    }
    // The period ends: Nov 30 is reported on invoice.created, the invoice finalised an hour later.
    w.billing.sim.add_webhook_endpoint(&format!("{}/webhooks/stripe", w.billing.base), STRIPE_WEBHOOK_SECRET);
    w.at(DEC_1 + 60).await;
    let last = format!("meter_reports WHERE owner_id = '{owner}' AND day = '2026-11-30' AND state = 'accepted'");
    until(&w.billing.db, &last, 2).await;
    w.at(DEC_1 + HOUR + 60).await;
    let invoice = w
        .billing
        .sim
        .invoices()
        .into_iter()
        .find(|i| i["customer"] == customer.as_str())
        .unwrap_or_else(|| panic!("an invoice for {customer}"));
    assert_eq!(invoice["status"], "paid", "{invoice:#}");

    // What the ledger says each line is: its quantised days times the price, rounded once; and
    // what the ledger's own costs come to, per resource, rounded once: the same to the cent.
    use diesel_async::RunQueryDsl;
    let mut conn = w.billing.db.connect("billing").await;
    let from = day_of(NOV_3);
    let to = day_of(DEC_1 - DAY);
    let totals = hopsbridge_billing::usage::day_totals(&mut conn, owner.into(), from, to).await.unwrap();
    let book = hopsbridge_billing::prices::book(&mut conn).await.unwrap();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for r in Resource::ALL {
        let quanta: u128 = totals.iter().filter(|t| t.resource == r).map(|t| t.quanta()).sum();
        if quanta == 0 {
            continue;
        }
        let price = book.iter().find(|p| p.resource == r).unwrap().unit_amount_decimal;
        want.insert(r.as_str().to_owned(), quantise::line_amount(quanta, price).unwrap());
    }
    #[derive(diesel::QueryableByName)]
    struct Costs {
        #[diesel(sql_type = diesel::sql_types::Numeric)]
        cpu: Decimal,
        #[diesel(sql_type = diesel::sql_types::Numeric)]
        memory: Decimal,
        #[diesel(sql_type = diesel::sql_types::Numeric)]
        offline: Decimal,
        #[diesel(sql_type = diesel::sql_types::Numeric)]
        online: Decimal,
    }
    let costs: Costs = diesel::sql_query(format!(
        "SELECT sum(cpu_cost) AS cpu, sum(memory_cost) AS memory, sum(storage_offline_cost) AS offline, sum(storage_online_cost) AS online
         FROM ledger_entries WHERE owner_id = '{owner}'"
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    let ledger: BTreeMap<String, i64> = [
        ("cpu", costs.cpu),
        ("memory", costs.memory),
        ("storage_offline", costs.offline),
        ("storage_online", costs.online),
    ]
    .into_iter()
    .map(|(r, c)| (r.to_owned(), hopsbridge_billing::money::round_minor(c)))
    .collect();
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    for line in invoice["lines"]["data"].as_array().unwrap() {
        let amount = line["amount"].as_i64().unwrap();
        if amount == 0 {
            continue;
        }
        let price =
            line["pricing"]["price_details"]["price"].as_str().or_else(|| line["price"]["id"].as_str()).unwrap();
        let resource = texts(
            &w.billing.db,
            &format!("SELECT p.resource AS t FROM stripe_prices s JOIN prices p ON p.id = s.price_id WHERE s.stripe_price_id = '{price}'"),
        )
        .await;
        got.insert(resource[0].clone(), amount);
    }
    assert_eq!(got, want, "{invoice:#}");
    assert_eq!(got, ledger, "the ledger's costs rounded once per line");
    // 28 of November's 30 days of 3.105 GB on average at 3.5 (10.143) and 0.605 GB at 35 (19.763).
    assert_eq!((got["storage_offline"], got["storage_online"]), (10, 20), "{got:?}");
    assert_eq!(invoice["amount_due"].as_i64().unwrap(), got.values().sum::<i64>());
}
