//! Postpaid usage reported to Stripe (decision 0044), against the running service, the real
//! Postgres and NATS and the Stripe sandbox on a simulated calendar that billing follows: one
//! report per owner-day-resource-price, corrections carrying only the difference, unknown
//! outcomes settled without double counting, faults, and invoices equal to the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use hopsbridge_billing::catalog::Prices;
use hopsbridge_billing::reporting::{PassOutcome, Reporter};
use hopsbridge_billing::stripe::Stripe;
use hopsbridge_billing::{BillingConfig, quantise};
use hopsbridge_contracts::Event as _;
use hopsbridge_contracts::events::{Envelope, UsageRecordedV1};
use hopsbridge_platform::caller::Role;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_sandbox::clock::{ClockServer, REAL_TIME_RATE_MILLI, SimClock};
use hopsbridge_sandbox::stripe::{StripeConfig, StripeSim};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, STRIPE_SECRET_KEY, TestBus, TestDb, TestSettings};
use prost::Message as _;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
const WINDOW: i64 = 900;

/// 2026-11-03T10:00:00Z: a subscription opened then is anchored at 2026-12-01.
const START: i64 = 1_793_700_000;
/// 2026-11-03T00:00:00Z.
const NOV_3: i64 = START - 10 * HOUR;
/// 2026-12-01T00:00:00Z.
const DEC_1: i64 = NOV_3 + 28 * DAY;

struct World {
    billing: Billing,
    clock: Arc<SimClock>,
    _clock_server: ClockServer,
    reporter: Reporter,
}

impl std::ops::Deref for World {
    type Target = Billing;
    fn deref(&self) -> &Billing {
        &self.billing
    }
}

async fn world() -> World {
    world_with(|s| s).await
}

/// [`world`] with its settings adjusted.
async fn world_with(adjust: impl FnOnce(TestSettings) -> TestSettings) -> World {
    hopsbridge_testkit::init();
    let clock = Arc::new(SimClock::running(START * 1_000_000, REAL_TIME_RATE_MILLI));
    let clock_server = ClockServer::start(Arc::clone(&clock)).unwrap();
    let sim = StripeSim::start_with_clock(
        StripeConfig { secret_key: STRIPE_SECRET_KEY.to_owned(), rate_limit: None },
        Arc::clone(&clock),
    )
    .unwrap();
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let settings = settings(&db, &bus, &sim)
        .set("http.workers", "2")
        .layer(TEST_EVENTS)
        .clock(&clock_server.url())
        .set("reporting.interval_secs", "86400")
        .set("reconciliation.interval_secs", "86400")
        .set("mail.admin_addresses", "ops@hopsbridge.test");
    let settings = adjust(settings);
    let config: BillingConfig = TestSettings::load(&settings, &hopsbridge_billing::DEFAULTS);
    let app = hopsbridge_billing::build(config.clone()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let key = hopsbridge_platform::caller::CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let billing = Billing::assemble(base, db, bus, sim, key, config.clone(), stop);
    let database = Database::new(&billing.db.config(), "billing").unwrap();
    let stripe = Stripe::new(&billing.sim.url(), STRIPE_SECRET_KEY.to_owned().into(), 100).unwrap();
    let prices = Prices::new(stripe.clone(), config.rates.clone(), "usd".into());
    let followed = Clock::follow(&clock_server.url(), Duration::from_millis(20)).await.unwrap();
    let reporter = Reporter::new(&config, database, (stripe, prices), followed).unwrap();
    World { billing, clock, _clock_server: clock_server, reporter }
}

impl World {
    /// Moves the calendar to `at` and waits until the reporter's clock has followed.
    async fn at(&self, at: i64) {
        self.clock.set(at);
        self.sim.run_due();
        let followed = hopsbridge_testkit::eventually(Duration::from_secs(10), || async {
            self.reporter.settings.clock.now().timestamp() >= at
        })
        .await;
        assert!(followed, "the reporter follows the calendar");
    }

    async fn pass(&self) -> PassOutcome {
        self.reporter.report_closed().await.unwrap()
    }
}

async fn ledgered(w: &World, events: &[(Uuid, UsageRecordedV1)]) {
    publish_usage(&w.bus, events).await;
    let want = i64::try_from(events.len()).unwrap();
    let ids: Vec<String> = events.iter().map(|(_, e)| format!("'{}'", e.sample_id)).collect();
    let sql = format!("ledger_entries WHERE sample_id IN ({})", ids.join(","));
    let done =
        hopsbridge_testkit::eventually(Duration::from_secs(30), || async { count(&w.db, &sql).await >= want }).await;
    assert!(done, "the usage was ledgered");
}

fn new(events: Vec<UsageRecordedV1>) -> Vec<(Uuid, UsageRecordedV1)> {
    events.into_iter().map(|e| (Uuid::now_v7(), e)).collect()
}

/// The sandbox's meter events of `customer`: identifier → (count, value, timestamp).
fn stripe_events(sim: &StripeSim, customer: &str) -> BTreeMap<String, (usize, Decimal, i64)> {
    let mut out: BTreeMap<String, (usize, Decimal, i64)> = BTreeMap::new();
    for e in sim.meter_events() {
        if e["payload"]["stripe_customer_id"] != customer {
            continue;
        }
        let value = Decimal::from_str(e["payload"]["value"].as_str().unwrap()).unwrap();
        let entry = out.entry(e["identifier"].as_str().unwrap().to_owned()).or_default();
        entry.0 += 1;
        entry.1 += value;
        entry.2 = e["timestamp"].as_i64().unwrap();
    }
    out
}

#[derive(diesel::QueryableByName, Debug, Clone)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Date)]
    day: chrono::NaiveDate,
    #[diesel(sql_type = diesel::sql_types::Text)]
    resource: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    revision: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    delta_quanta: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    total_quanta: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    identifier: String,
}

async fn reports(db: &TestDb, owner: Uuid) -> Vec<Row> {
    use diesel_async::RunQueryDsl;
    let mut conn = db.connect("billing").await;
    diesel::sql_query(
        "SELECT day, resource, revision, delta_quanta, total_quanta, state, identifier FROM meter_reports
         WHERE owner_id = $1 ORDER BY day, resource, revision",
    )
    .bind::<diesel::sql_types::Uuid, _>(owner)
    .load(&mut conn)
    .await
    .unwrap()
}

/// Every event counted once, and the values per identifier are the recorded deltas.
fn assert_once(sim: &StripeSim, customer: &str, rows: &[Row]) {
    let events = stripe_events(sim, customer);
    for r in rows.iter().filter(|r| r.state == "accepted") {
        let (n, value, _) = events.get(&r.identifier).unwrap_or_else(|| panic!("{} in Stripe", r.identifier));
        assert_eq!(*n, 1, "{} sent once", r.identifier);
        assert_eq!(*value, Decimal::new(r.delta_quanta, 9), "{}", r.identifier);
    }
}

/// The quanta of `n` base units of an hourly resource (any day: the hourly units do not depend
/// on it).
fn q(resource: hopsbridge_billing::money::Resource, n: u128) -> i64 {
    let day = chrono::DateTime::from_timestamp(NOV_3, 0).unwrap().date_naive();
    i64::try_from(quantise::quantise(resource, day, n)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_closed_day_is_reported_once_and_late_usage_as_a_correction_of_the_difference() {
    use hopsbridge_billing::money::Resource::{Cpu, Memory};
    let w = world().await;
    let (owner, account) = w.new_owner().await;
    let customer = account.stripe_customer_id.unwrap();
    // Nov 3 after the subscription opened, and Nov 4.
    let day3 = new(vec![
        usage(owner, owner, NOV_3 + 11 * HOUR, WINDOW, (1, 2, 0)),
        usage(owner, owner, NOV_3 + 12 * HOUR, WINDOW, (1, 0, 0)),
    ]);
    let day4 = new(vec![usage(owner, owner, NOV_3 + DAY + 5 * HOUR, WINDOW, (2, 1, 0))]);
    ledgered(&w, &day3).await;
    ledgered(&w, &day4).await;

    // Nov 4 is not closed before 00:30 on Nov 5: only Nov 3 is reported.
    w.at(NOV_3 + 2 * DAY + 20 * 60).await;
    let first = w.pass().await;
    assert_eq!((first.planned, first.accepted), (2, 2), "{first:?}");
    w.at(NOV_3 + 2 * DAY + 31 * 60).await;
    let second = w.pass().await;
    assert_eq!((second.planned, second.accepted), (2, 2), "{second:?}");
    let rows = reports(&w.db, owner).await;
    let got: Vec<(String, &str, i32, i64)> =
        rows.iter().map(|r| (r.day.to_string(), r.resource.as_str(), r.revision, r.delta_quanta)).collect();
    assert_eq!(
        got,
        vec![
            ("2026-11-03".into(), "cpu", 1, q(Cpu, 2 * 900 * 1_000_000_000)),
            ("2026-11-03".into(), "memory", 1, q(Memory, (2 << 30) * 900)),
            ("2026-11-04".into(), "cpu", 1, q(Cpu, 2 * 900 * 1_000_000_000)),
            ("2026-11-04".into(), "memory", 1, q(Memory, (1 << 30) * 900)),
        ]
    );
    assert_once(&w.sim, &customer, &rows);
    // Each event is timestamped at the later of its day's start and the item's start (the
    // subscription opened at 10:00 on Nov 3).
    let events = stripe_events(&w.sim, &customer);
    let nov_3 = events[&rows[0].identifier].2;
    assert!((START..START + 600).contains(&nov_3), "Nov 3's event at the item's start: {nov_3}");
    assert_eq!(events[&rows[2].identifier].2, NOV_3 + DAY, "Nov 4's event at midnight");

    // The same events again (redelivered): nothing new is reported.
    publish_usage(&w.bus, &day3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = w.pass().await;
    assert_eq!(again, PassOutcome::default());

    // Late usage for Nov 3: one correction per resource carrying only the difference.
    let late = new(vec![usage(owner, owner, NOV_3 + 20 * HOUR, WINDOW, (3, 0, 0))]);
    ledgered(&w, &late).await;
    let corrected = w.pass().await;
    assert_eq!((corrected.planned, corrected.accepted), (1, 1), "{corrected:?}");
    let rows = reports(&w.db, owner).await;
    let fix = rows.iter().find(|r| r.revision == 2).unwrap();
    assert_eq!((fix.resource.as_str(), fix.delta_quanta), ("cpu", q(Cpu, 3 * 900 * 1_000_000_000)));
    assert_eq!(fix.total_quanta, q(Cpu, 5 * 900 * 1_000_000_000));
    assert_once(&w.sim, &customer, &rows);
    assert_eq!(stripe_events(&w.sim, &customer).len(), 5);

    // Admins see them.
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    let (status, body) =
        w.call(Method::GET, &format!("/api/admin/billing/reports?owner={owner}&day=2026-11-03"), Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reports"].as_array().unwrap().len(), 3, "{body}");
    let (status, _) = w
        .call(
            Method::GET,
            &format!("/api/admin/billing/reports?owner={owner}"),
            Some(&caller(owner, &[Role::User, Role::Owner])),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_outcomes_are_settled_by_resending_inside_24_hours_and_by_stripes_summary_after() {
    let w = world().await;
    let (owner, account) = w.new_owner().await;
    let customer = account.stripe_customer_id.unwrap();
    ledgered(&w, &new(vec![usage(owner, owner, NOV_3 + 11 * HOUR, WINDOW, (1, 1, 1))])).await;
    w.at(NOV_3 + DAY + HOUR).await;
    assert_eq!(w.pass().await.accepted, 3);
    let rows = reports(&w.db, owner).await;
    let [cpu, gpu, memory] = [&rows[0], &rows[1], &rows[2]];

    // Stripe accepted the CPU report but the mark was lost: sent again inside 24 h, Stripe
    // answers that it has it, and it is accepted, counted once.
    sql(&w.db, &format!("UPDATE meter_reports SET state = 'pending' WHERE identifier = '{}'", cpu.identifier)).await;
    let resent = w.pass().await;
    assert_eq!((resent.accepted, resent.planned), (1, 0), "{resent:?}");
    assert_once(&w.sim, &customer, &reports(&w.db, owner).await);

    // Two more lost marks, found 25 hours later: the GPU event Stripe counted is accepted
    // without a resend; the memory event, cancelled in Stripe meanwhile, is abandoned and a
    // new revision carries the day's memory again.
    let cancel = [
        ("event_name", "hopsbridge_ram_gib_hours".to_owned()),
        ("type", "cancel".to_owned()),
        ("cancel[identifier]", memory.identifier.clone()),
    ];
    let (status, answer) = stripe_post(&w.sim, "billing/meter_event_adjustments", &cancel).await;
    assert_eq!(status, 200, "{answer}");
    sql(
        &w.db,
        &format!(
            "UPDATE meter_reports SET state = 'pending' WHERE identifier IN ('{}', '{}')",
            gpu.identifier, memory.identifier
        ),
    )
    .await;
    let sent_before = w.sim.meter_events().len();
    w.at(NOV_3 + 2 * DAY + 2 * HOUR).await;
    let settled = w.pass().await;
    assert_eq!((settled.accepted, settled.abandoned, settled.planned), (2, 1, 1), "{settled:?}");
    assert_eq!(w.sim.meter_events().len(), sent_before + 1, "only the new revision was sent");
    let rows = reports(&w.db, owner).await;
    let states: Vec<(&str, i32, &str)> =
        rows.iter().map(|r| (r.resource.as_str(), r.revision, r.state.as_str())).collect();
    assert_eq!(
        states,
        vec![("cpu", 1, "accepted"), ("gpu", 1, "accepted"), ("memory", 1, "abandoned"), ("memory", 2, "accepted")]
    );
    assert_eq!(rows[3].delta_quanta, memory.delta_quanta);
    // Stripe's day now holds exactly the ledger's quantities.
    let meters = stripe_get(&w.sim, "billing/meters?limit=100").await;
    for m in meters["data"].as_array().unwrap() {
        let path = format!(
            "billing/meters/{}/event_summaries?customer={customer}&start_time={NOV_3}&end_time={}&value_grouping_window=day",
            m["id"].as_str().unwrap(),
            NOV_3 + DAY
        );
        let summary = stripe_get(&w.sim, &path).await;
        // A core, a GiB and a GPU for 900 s: a quarter of an hour each; no storage.
        let Some(value) = summary["data"][0]["aggregated_value"].as_f64() else {
            assert!(m["event_name"].as_str().unwrap().contains("storage"), "{}: {summary}", m["event_name"]);
            continue;
        };
        assert!((value - 0.25).abs() < 1e-12, "{}: {summary}", m["event_name"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_end_with_every_report_accepted_once() {
    let w = world().await;
    let mut owners = Vec::new();
    for _ in 0..4 {
        owners.push(w.new_owner().await);
    }
    let mut events = Vec::new();
    for (owner, _) in &owners {
        for d in 0..3 {
            events.push(usage(*owner, *owner, NOV_3 + 11 * HOUR + d * DAY, WINDOW, (1, 1, 1)));
        }
    }
    ledgered(&w, &new(events)).await;
    w.at(NOV_3 + 3 * DAY + HOUR).await;
    w.sim.fail_next(6, 429);
    w.sim.fail_next(4, 500);
    w.sim.fail_next(2, 503);
    let outcome = w.pass().await;
    assert_eq!((outcome.planned, outcome.accepted, outcome.pending), (36, 36, 0), "{outcome:?}");
    assert_eq!(w.sim.failures_left(), 0);
    for (owner, account) in &owners {
        let rows = reports(&w.db, *owner).await;
        assert_eq!(rows.len(), 9);
        assert_once(&w.sim, account.stripe_customer_id.as_deref().unwrap(), &rows);
    }
    assert_eq!(w.sim.meter_events().len(), 36);
}

/// Σ over each resource and price of `quantise::line_amount(Σ day quanta, price)` for `owner`.
async fn ledger_lines(w: &World, owner: Uuid) -> BTreeMap<String, i64> {
    #[derive(diesel::QueryableByName)]
    struct P {
        #[diesel(sql_type = diesel::sql_types::Text)]
        stripe_price_id: String,
        #[diesel(sql_type = diesel::sql_types::Numeric)]
        unit_amount_decimal: Decimal,
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
    }
    use diesel_async::RunQueryDsl;
    let mut conn = w.db.connect("billing").await;
    let prices: Vec<P> = diesel::sql_query(
        "SELECT s.stripe_price_id, p.unit_amount_decimal, p.id FROM prices p JOIN stripe_prices s ON s.price_id = p.id",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let from = chrono::DateTime::from_timestamp(NOV_3, 0).unwrap().date_naive();
    let to = chrono::DateTime::from_timestamp(DEC_1 - DAY, 0).unwrap().date_naive();
    let totals =
        hopsbridge_billing::usage::day_totals(&mut conn, hopsbridge_domain::OwnerId::from_uuid(owner), from, to)
            .await
            .unwrap();
    let mut lines = BTreeMap::new();
    for p in prices {
        let quanta: u128 = totals.iter().filter(|t| t.price_id == p.id).map(|t| t.quanta()).sum();
        if quanta > 0 {
            lines.insert(p.stripe_price_id, quantise::line_amount(quanta, p.unit_amount_decimal).unwrap());
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoice_stripe_computes_equals_the_ledger_to_the_cent_across_a_price_change() {
    let w = w_with_owner().await;
    let (world, owner, subscription) = (&w.0, w.1, w.2.clone());
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    // CPU becomes 40 from Nov 20: a second CPU line.
    let nov_20 = NOV_3 + 17 * DAY;
    let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
    let body = json!({"resource": "cpu", "unit_amount_decimal": "40.123", "effective_from": at(nov_20)});
    let (status, price) = world.call_with(Method::POST, "/api/admin/prices", Some(&admin), Some(body)).await;
    assert_eq!(status, 201, "{price}");
    // Usage on many days, odd sizes, before and after the change.
    let mut events = Vec::new();
    for d in 0..28 {
        let start = NOV_3 + d * DAY + 13 * HOUR + 17;
        events.push(usage(
            owner,
            owner,
            start,
            WINDOW - 17 * (d % 5),
            (u64::try_from(d % 3).unwrap() + 1, 3, u64::try_from(d % 2).unwrap()),
        ));
    }
    ledgered(world, &new(events)).await;
    // Reported day by day as the month goes by, up to Nov 29.
    for d in 1..=27 {
        world.at(NOV_3 + d * DAY + 31 * 60).await;
        world.pass().await;
    }
    let want = ledger_lines(world, owner).await;
    assert_eq!(want.len(), 4, "CPU at two prices, memory, GPU: {want:?}");
    // The period ends: invoice.created makes billing report Nov 30 at once, before it closes,
    // and before Stripe finalises the invoice an hour later.
    world.deliver_webhooks();
    world.at(DEC_1 + 60).await;
    let last = format!("meter_reports WHERE owner_id = '{owner}' AND day = '2026-11-30' AND state = 'accepted'");
    let reported =
        hopsbridge_testkit::eventually(Duration::from_secs(30), || async { count(&world.db, &last).await == 3 }).await;
    assert!(reported, "Nov 30 reported on invoice.created");
    assert_eq!(count(&world.db, "report_requests WHERE done_at IS NOT NULL AND through = '2026-11-30'").await, 1);
    world.at(DEC_1 + HOUR + 60).await;
    let invoices: Vec<Value> = world
        .sim
        .invoices()
        .into_iter()
        .filter(|i| {
            i["subscription"] == subscription.as_str()
                || i["parent"]["subscription_details"]["subscription"] == subscription.as_str()
        })
        .collect();
    assert_eq!(invoices.len(), 1, "{invoices:#?}");
    let invoice = &invoices[0];
    assert_eq!(invoice["status"], "paid", "{invoice:#}");
    let mut got = BTreeMap::new();
    for line in invoice["lines"]["data"].as_array().unwrap() {
        let price = line["pricing"]["price_details"]["price"]
            .as_str()
            .or_else(|| line["price"]["id"].as_str())
            .unwrap()
            .to_owned();
        let amount = line["amount"].as_i64().unwrap();
        if amount > 0 {
            got.insert(price, amount);
        }
    }
    assert_eq!(got, want, "{invoice:#}");
    assert_eq!(invoice["amount_due"].as_i64().unwrap(), want.values().sum::<i64>());
}

async fn w_with_owner() -> (World, Uuid, String) {
    let w = world().await;
    let (owner, account) = w.new_owner().await;
    // A card on file, so the invoice is paid.
    let customer = account.stripe_customer_id.unwrap();
    let (_, attached) =
        stripe_post(&w.sim, "payment_methods/pm_card_visa/attach", &[("customer", customer.clone())]).await;
    let pm = attached["id"].as_str().unwrap().to_owned();
    let (status, answer) =
        stripe_post(&w.sim, &format!("customers/{customer}"), &[("invoice_settings[default_payment_method]", pm)])
            .await;
    assert_eq!(status, 200, "{answer}");
    (w, owner, account.stripe_subscription_id.unwrap())
}

/// A raw form POST on the sandbox's API.
async fn stripe_post(sim: &StripeSim, path: &str, form: &[(&str, String)]) -> (u16, Value) {
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    stripe_send(sim, Method::POST, path, &form).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_reports_its_last_usage_and_gets_a_final_invoice_once() {
    use hopsbridge_contracts::events::UserDeletedV1;
    let (w, owner, subscription) = w_with_owner().await;
    // Usage yesterday (closed) and this morning (not closed): both reported at deletion.
    w.at(NOV_3 + 2 * DAY + 9 * HOUR).await;
    ledgered(
        &w,
        &new(vec![
            usage(owner, owner, NOV_3 + DAY + 8 * HOUR, WINDOW, (2, 1, 0)),
            usage(owner, owner, NOV_3 + 2 * DAY + 7 * HOUR, WINDOW, (1, 0, 1)),
        ]),
    )
    .await;
    let deleted = UserDeletedV1 { user_id: owner.to_string() };
    let event = Uuid::now_v7();
    for msg_id in ["first", "again"] {
        let envelope = Envelope {
            event_id: event.to_string(),
            event_type: UserDeletedV1::TYPE.into(),
            schema_version: 1,
            producer: "identity".into(),
            payload: deleted.encode_to_vec(),
            occurred_at_unix_micros: chrono::Utc::now().timestamp_micros(),
            ..Default::default()
        };
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(envelope.encode_to_vec().into())
            .message_id(msg_id);
        let js = w.bus.jetstream().await;
        js.send_publish(w.bus.subjects().event::<UserDeletedV1>(), message).await.unwrap().await.unwrap();
    }
    let cancelled = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        account(&w.db, owner).await.and_then(|a| a.subscription_status).as_deref() == Some("canceled")
    })
    .await;
    assert!(cancelled, "the subscription was cancelled");
    let rows = reports(&w.db, owner).await;
    let days: Vec<(String, &str, &str)> =
        rows.iter().map(|r| (r.day.to_string(), r.resource.as_str(), r.state.as_str())).collect();
    assert_eq!(
        days,
        vec![
            ("2026-11-04".into(), "cpu", "accepted"),
            ("2026-11-04".into(), "memory", "accepted"),
            ("2026-11-05".into(), "cpu", "accepted"),
            ("2026-11-05".into(), "gpu", "accepted"),
        ]
    );
    // The final invoice, finalised an hour later, bills exactly the ledger.
    let consumed = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        count(&w.db, "inbox WHERE event_type = 'UserDeleted'").await >= 1
    })
    .await;
    assert!(consumed);
    w.at(NOV_3 + 2 * DAY + 10 * HOUR + 60).await;
    let invoices: Vec<Value> = w
        .sim
        .invoices()
        .into_iter()
        .filter(|i| i["parent"]["subscription_details"]["subscription"] == subscription.as_str())
        .collect();
    assert_eq!(invoices.len(), 1, "one final invoice: {invoices:#?}");
    let want = ledger_lines(&w, owner).await;
    assert_eq!(invoices[0]["amount_due"].as_i64().unwrap(), want.values().sum::<i64>(), "{:#}", invoices[0]);
    assert_eq!(w.sim.meter_events().len(), 4, "each day reported once");
    assert_eq!(w.sim.subscriptions().iter().filter(|s| s["id"] == subscription.as_str()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_stripe_counts_differently_from_the_accepted_reports_is_a_drift_finding() {
    let w = world().await;
    let (owner, _) = w.new_owner().await;
    ledgered(&w, &new(vec![usage(owner, owner, NOV_3 + 11 * HOUR, WINDOW, (1, 1, 0))])).await;
    w.at(NOV_3 + DAY + HOUR).await;
    assert_eq!(w.pass().await.accepted, 2);
    assert_eq!(w.reporter.reconcile_stripe(3).await.unwrap(), 0, "Stripe and billing agree");
    let drift = format!("reconciliation_findings WHERE kind = 'stripe_drift' AND owner_id = '{owner}'");
    assert_eq!(count(&w.db, &drift).await, 0);

    // Someone cancels the CPU event in Stripe: the day now differs.
    let cpu = reports(&w.db, owner).await.into_iter().find(|r| r.resource == "cpu").unwrap();
    let cancel = [
        ("event_name", "hopsbridge_cpu_core_hours".to_owned()),
        ("type", "cancel".to_owned()),
        ("cancel[identifier]", cpu.identifier.clone()),
    ];
    let (status, answer) = stripe_post(&w.sim, "billing/meter_event_adjustments", &cancel).await;
    assert_eq!(status, 200, "{answer}");
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    let (status, _) = w.call(Method::POST, "/api/admin/billing/reconcile/stripe", Some(&admin)).await;
    assert_eq!(status, 202);
    let found = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        count(&w.db, &format!("{drift} AND day = '2026-11-03' AND resolved_at IS NULL")).await == 1
    })
    .await;
    assert!(found, "the drift is a finding");
    // Alerted once: a second run finds it open and records nothing more.
    assert_eq!(w.reporter.reconcile_stripe(3).await.unwrap(), 1);
    let rows = texts(
        &w.db,
        &format!(
            "SELECT day || ' ' || ours || ' / ' || theirs || ' ' || coalesce(resolved_at::text, 'open') AS t
             FROM reconciliation_findings WHERE kind = 'stripe_drift' AND owner_id = '{owner}'"
        ),
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(count(&w.db, "mail_outbox WHERE dedup_key LIKE 'billing.drift:stripe_drift:%'").await, 1);
    let (status, _) =
        w.call(Method::POST, "/api/admin/billing/reconcile/stripe", Some(&caller(owner, &[Role::Owner]))).await;
    assert_eq!(status, 403);
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

/// The id of the Stripe price of `lookup_key`, once Stripe has it.
async fn stripe_price(sim: &StripeSim, lookup_key: &str) -> Option<String> {
    let found = stripe_get(sim, &format!("prices?lookup_keys[0]={lookup_key}")).await;
    found["data"][0]["id"].as_str().map(str::to_owned)
}

/// Whether Stripe's subscription `subscription` has an item of price `price`.
fn has_item(sim: &StripeSim, subscription: &str, price: &str) -> bool {
    sim.subscriptions().iter().any(|s| {
        s["id"] == subscription
            && s["items"]["data"].as_array().is_some_and(|i| i.iter().any(|i| i["price"]["id"] == price))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_change_reaches_stripe_at_once_and_a_day_waits_for_its_item() {
    // The catalogue's tick is an hour: what reaches Stripe sooner was woken by the change (or
    // by a reporting pass, which syncs first: the service's own first pass runs 30 s after its
    // start, so the change is made well after it).
    let started = tokio::time::Instant::now();
    let w = world_with(|s| s.set("prices.sync_interval_secs", "3600").set("prices.min_lead_secs", "7200")).await;
    let (owner, opened) = w.new_owner().await;
    let (other, other_account) = w.new_owner().await;
    let (subscription, customer) = (opened.stripe_subscription_id.unwrap(), opened.stripe_customer_id.unwrap());
    let other_customer = other_account.stripe_customer_id.unwrap();
    // The other's subscription ends in Stripe; billing has not heard of it (no webhook yet).
    let other_subscription = other_account.stripe_subscription_id.unwrap();
    let (status, ended) =
        stripe_send(&w.sim, Method::DELETE, &format!("subscriptions/{other_subscription}"), &[]).await;
    assert_eq!(status, 200, "{ended}");
    tokio::time::sleep_until(started + Duration::from_secs(45)).await;

    // CPU at 40 from Nov 5.
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    let from = chrono::DateTime::from_timestamp(NOV_3 + 2 * DAY, 0).unwrap().to_rfc3339();
    let body = json!({"resource": "cpu", "unit_amount_decimal": "40", "effective_from": from});
    let (status, version) = w.call_with(Method::POST, "/api/admin/prices", Some(&admin), Some(body)).await;
    assert_eq!(status, 201, "{version}");
    let lookup_key = format!("hb_cpu_{}", version["id"].as_str().unwrap().replace('-', ""));
    let in_stripe = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        stripe_price(&w.sim, &lookup_key).await.is_some_and(|p| has_item(&w.sim, &subscription, &p))
    })
    .await;
    assert!(in_stripe, "the new price and the live subscription's item are in Stripe within seconds");
    let price = stripe_price(&w.sim, &lookup_key).await.unwrap();
    assert!(!has_item(&w.sim, &other_subscription, &price), "Stripe refuses items on an ended subscription");

    // Nov 5 at the new CPU price: the owner's day is reported; the other's CPU waits for an
    // item Stripe does not have, pass after pass, while their memory goes out.
    ledgered(
        &w,
        &new(vec![
            usage(owner, owner, NOV_3 + 2 * DAY + 9 * HOUR, WINDOW, (2, 1, 0)),
            usage(other, other, NOV_3 + 2 * DAY + 9 * HOUR, WINDOW, (2, 1, 0)),
        ]),
    )
    .await;
    w.at(NOV_3 + 3 * DAY + HOUR).await;
    let event_name = lookup_key.clone();
    let sent_at = |customer: &str| {
        w.sim
            .meter_events()
            .into_iter()
            .filter(|e| e["event_name"] == event_name.as_str() && e["payload"]["stripe_customer_id"] == customer)
            .count()
    };
    for _ in 0..2 {
        let outcome = w.pass().await;
        assert_eq!(outcome.waiting, 1, "{outcome:?}");
        assert_eq!(sent_at(&other_customer), 0, "nothing sent against the price the subscription lacks");
    }
    assert_eq!(sent_at(&customer), 1, "the owner's day at the new price");
    let other_rows = reports(&w.db, other).await;
    let got: Vec<(String, &str)> = other_rows.iter().map(|r| (r.day.to_string(), r.resource.as_str())).collect();
    assert_eq!(got, vec![("2026-11-05".to_owned(), "memory")]);

    // Once billing hears the subscription ended (Stripe's webhook), no item will come: the day
    // is reported, as any usage after a subscription ends.
    let deleted = w.sim.events().into_iter().find(|e| e["type"] == "customer.subscription.deleted").unwrap();
    let (status, answer) = w.webhook(&deleted.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let ended = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        account(&w.db, other).await.and_then(|a| a.subscription_status).as_deref() == Some("canceled")
    })
    .await;
    assert!(ended, "billing recorded the end");
    // (The lifecycle may report it first, closing the account's billing.)
    let outcome = w.pass().await;
    assert_eq!(outcome.waiting, 0, "{outcome:?}");
    assert_eq!(sent_at(&other_customer), 1);
    let rows = reports(&w.db, other).await;
    assert!(rows.iter().all(|r| r.state == "accepted") && rows.len() == 2, "{rows:?}");
}
