//! Daily reporting to Stripe under load (`just bench reporting`, i.e. `cargo bench -p
//! hopsbridge-billing --bench reporting`): billing's reporter on the local Postgres against the
//! Stripe sandbox in live mode (`StripeConfig::live()`: 1,000 meter events a second).
//!
//! `OWNERS` (100,000) postpaid owners, each with a Stripe customer (created through the
//! sandbox's API with its limits lifted for the seeding, then restored) and one closed day of
//! CPU, memory and GPU usage in the ledger (seeded with SQL), are reported by one pass paced at
//! `MAX_EVENTS` (950) a second with `IN_FLIGHT` (64) requests at once (`BURST` overrides the
//! pace's burst, 1 for none). Printed: reports a second and the ratio to Stripe's 1,000 (goal:
//! at least 0.90), the time before the first meter event and after the last, and the rate at
//! Stripe per second of arrivals.
//!
//! Self-checks, each failing the run (exit status 1): the pass planned and accepted one report per
//! owner-day-resource with none pending, abandoned or found; every owner-day-resource has
//! exactly one report and it is accepted, none is left pending, the sandbox holds exactly one
//! meter event per report with the report's identifier, the sum of the events' values is the
//! sum of the reports', and no second at Stripe took more than its 1,000. The goal (a ratio of
//! at least 0.90) is a target: reported, a miss does not fail the run.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    reason = "a benchmark reporting on stdout"
)]

use diesel::sql_types::{Array, BigInt, Date, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use futures::StreamExt;
use hopsbridge_billing::catalog::Prices;
use hopsbridge_billing::reporting::Reporter;
use hopsbridge_billing::stripe::Stripe;
use hopsbridge_contracts::Service;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_sandbox::stripe::{StripeConfig, StripeSim};
use hopsbridge_testkit::{STRIPE_WEBHOOK_SECRET, SelfChecks, TestBus, TestDb, TestSettings};
use rust_decimal::Decimal;
use std::collections::HashSet;
use std::str::FromStr;
use std::time::Instant;
use uuid::Uuid;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn scalar(db: &TestDb, sql: &str) -> i64 {
    let mut conn = db.connect("billing").await;
    diesel::sql_query(sql).get_result::<N>(&mut conn).await.unwrap().n
}

/// Creates `n` customers through the sandbox's API, `in_flight` at once; answers their ids.
async fn customers(sim: &StripeSim, n: usize, in_flight: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let key = sim.secret_key();
    let url = format!("{}/v1/customers", sim.url());
    futures::stream::iter(0..n)
        .map(|i| {
            let (client, key, url) = (client.clone(), key.clone(), url.clone());
            async move {
                let body = format!("email=owner{i}%40bench.test");
                let answer: serde_json::Value = client
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                answer["id"].as_str().unwrap().to_owned()
            }
        })
        .buffered(in_flight)
        .collect()
        .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    hopsbridge_testkit::init();
    let (owners, max_events, in_flight) = (env("OWNERS", 100_000), env("MAX_EVENTS", 950), env("IN_FLIGHT", 64));
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let sim = StripeSim::start(StripeConfig::live()).unwrap();
    assert!(sim.livemode());
    let settings = TestSettings::data_service(Service::Billing, &db, &bus)
        .set("stripe.api_base", sim.url())
        .set("stripe.secret_key", sim.secret_key())
        .set("stripe.webhook_secret", STRIPE_WEBHOOK_SECRET)
        .set("stripe.max_requests_per_second", "90")
        .set("reporting.max_events_per_second", max_events.to_string())
        .set("reporting.in_flight", in_flight.to_string())
        .set("http.workers", "1")
        .set("telemetry.log_filter", "warn");
    let config: hopsbridge_billing::BillingConfig = TestSettings::load(&settings, &hopsbridge_billing::DEFAULTS);
    // Built (migrated, the price book seeded) but never run: only the reporter works here.
    let _app = hopsbridge_billing::build(config.clone()).await.unwrap();

    // Seeding: customers through the API with the limits lifted, accounts and one closed day of
    // usage (two days ago) per owner with SQL.
    let seeding = Instant::now();
    sim.set_rate_limit(None);
    sim.set_meter_event_rate_limit(None);
    let ids = customers(&sim, owners, 32).await;
    sim.set_rate_limit(Some(100));
    sim.set_meter_event_rate_limit(Some(1000));
    let users: Vec<Uuid> = (0..owners).map(|_| Uuid::now_v7()).collect();
    let day = (chrono::Utc::now() - chrono::TimeDelta::days(2)).date_naive();
    let start = day.and_hms_opt(10, 0, 0).unwrap().and_utc();
    {
        let mut conn = db.connect("billing").await;
        for (u, c) in users.chunks(10_000).zip(ids.chunks(10_000)) {
            diesel::sql_query(
                "INSERT INTO accounts (user_id, email, stripe_customer_id)
                 SELECT u, u::text || '@bench.test', c FROM unnest($1::uuid[], $2::text[]) AS x(u, c)",
            )
            .bind::<Array<SqlUuid>, _>(u.to_vec())
            .bind::<Array<Text>, _>(c.to_vec())
            .execute(&mut conn)
            .await
            .unwrap();
            // Sizes vary by owner so that values differ: 1-4 cores, 1-8 GiB, 0-1 GPU (never 0
            // for all: every owner reports three resources, the GPU at least 1 s).
            diesel::sql_query(
                "INSERT INTO ledger_entries (sample_id, day, user_id, owner_id, cluster_id, namespace, project_id,
                     window_start, window_end, cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, estimated,
                     billing_mode, cpu_price_id, memory_price_id, gpu_price_id, cpu_cost, memory_cost, gpu_cost)
                 SELECT gen_random_uuid(), $2, u, u, gen_random_uuid(), 'lab', 1, $3, $3 + interval '900 seconds',
                        (1 + n % 4) * 900000000000, (1 + n % 8) * 966367641600, 1 + n % 900, false, 'postpaid',
                        (SELECT id FROM prices WHERE resource = 'cpu'), (SELECT id FROM prices WHERE resource = 'memory'),
                        (SELECT id FROM prices WHERE resource = 'gpu'), 0, 0, 0
                 FROM unnest($1::uuid[]) WITH ORDINALITY AS x(u, n)",
            )
            .bind::<Array<SqlUuid>, _>(u.to_vec())
            .bind::<Date, _>(day)
            .bind::<diesel::sql_types::Timestamptz, _>(start)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    println!(
        "seeded {owners} owners (customers, accounts, one day of usage) in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let database = Database::new(&db.config(), "billing").unwrap();
    let stripe = Stripe::new(&sim.url(), sim.secret_key().into(), 90).unwrap();
    let prices = Prices::new(stripe.clone(), config.rates.clone(), "usd".into());
    let mut reporter = Reporter::new(&config, database, (stripe, prices), Clock::system()).unwrap();
    if let Ok(burst) = std::env::var("BURST") {
        let burst: u32 = burst.parse().expect("BURST: a whole number");
        let max = u32::try_from(max_events).unwrap();
        reporter.events = Stripe::new(&sim.url(), sim.secret_key().into(), max).unwrap().with_burst(max, burst);
        println!("meter events paced at {max}/s with a burst of {burst}");
    }
    // The catalogue first (a handful of reads and writes), so the pass measures reporting.
    {
        let mut conn = db.connect("billing").await;
        reporter.prices.ensure_versions(&mut conn).await.unwrap();
    }
    let started = Instant::now();
    let outcome = reporter.report_closed().await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let want = owners * 3;
    let rate = outcome.accepted as f64 / elapsed;
    let ratio = rate / 1000.0;
    println!("pass: {outcome:?}");
    // Where the pass's time went: before the first meter event (settling, the catalogue,
    // planning, writing the pending rows), between the first and the last (sending), after the
    // last (marking the last batch accepted). Stripe's clock is real time here.
    let arrivals: Vec<i64> = sim.meter_events().iter().filter_map(|e| e["created"].as_i64()).collect();
    let mut per_second: std::collections::BTreeMap<i64, usize> = std::collections::BTreeMap::new();
    for a in &arrivals {
        *per_second.entry(*a).or_default() += 1;
    }
    let busiest = per_second.values().copied().max().unwrap_or(0);
    // Whole seconds only: the first and last are partial.
    let mut whole: Vec<usize> = per_second.values().copied().collect();
    if whole.len() > 2 {
        whole = whole[1..whole.len() - 1].to_vec();
    }
    whole.sort_unstable();
    let median = whole.get(whole.len() / 2).copied().unwrap_or(0);
    let sending = per_second.keys().next().zip(per_second.keys().last()).map_or(0, |(f, l)| l - f + 1);
    println!(
        "at Stripe: {} meter events over {sending} s of arrivals; per whole second: median {median}, min {}, max {busiest}",
        arrivals.len(),
        whole.iter().copied().min().unwrap_or(0),
    );
    println!(
        "reporting: {} reports accepted in {elapsed:.1} s = {rate:.0} reports/s; ratio to Stripe's 1,000/s: {ratio:.3} (goal 0.90)",
        outcome.accepted
    );

    // Self-checks.
    let mut checks = SelfChecks::new();
    let whole_pass = hopsbridge_billing::reporting::PassOutcome { planned: want, accepted: want, ..Default::default() };
    checks.check(
        "the pass planned and accepted one report per owner-day-resource, none pending, abandoned or found",
        outcome == whole_pass,
        format!("{outcome:?}; want {whole_pass:?}"),
    );
    checks.check(
        "no second at Stripe over its 1,000 meter events",
        busiest <= 1000,
        format!("busiest second {busiest}"),
    );
    let rows = scalar(&db, "SELECT count(*) AS n FROM meter_reports").await;
    let accepted = scalar(&db, "SELECT count(*) AS n FROM meter_reports WHERE state = 'accepted'").await;
    let pending = scalar(&db, "SELECT count(*) AS n FROM meter_reports WHERE state = 'pending'").await;
    let keys = scalar(&db, "SELECT count(DISTINCT (owner_id, day, resource)) AS n FROM meter_reports").await;
    let want_i = i64::try_from(want).unwrap();
    checks.check(
        "every owner-day-resource has exactly one report and it is accepted",
        (rows, accepted, keys) == (want_i, want_i, want_i),
        format!("{rows} reports, {accepted} accepted, {keys} owner-day-resources; want {want} each"),
    );
    checks.check("no report left pending", pending == 0, format!("{pending} pending"));
    let events = sim.meter_events();
    let identifiers: HashSet<&str> = events.iter().filter_map(|e| e["identifier"].as_str()).collect();
    checks.check(
        "the sandbox holds one meter event per report, with its identifier",
        events.len() == want && identifiers.len() == want,
        format!("{} meter events with {} identifiers; want {want}", events.len(), identifiers.len()),
    );
    let theirs: Decimal =
        events.iter().map(|e| Decimal::from_str(e["payload"]["value"].as_str().unwrap()).unwrap()).sum();
    let ours = Decimal::new(scalar(&db, "SELECT sum(delta_quanta)::bigint AS n FROM meter_reports").await, 9);
    checks.check(
        "Stripe's meter event values sum to the reports' deltas",
        theirs == ours,
        format!("Stripe {theirs}, reports {ours}"),
    );
    checks.target("reports/s at least 0.90 of Stripe's 1,000/s", ratio >= 0.90, format!("ratio {ratio:.3}"));
    checks.finish();
}
