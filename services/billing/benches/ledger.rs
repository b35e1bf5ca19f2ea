//! The usage ledger under load (`just bench ledger`, i.e. `cargo bench -p hopsbridge-billing
//! --bench ledger`): billing in process on the local Postgres and NATS, the Stripe sandbox
//! beside it.
//!
//! 1. Throughput: `EVENTS` (20,000) UsageRecorded events of `OWNERS` (200) postpaid owners are
//!    published first; billing then starts and the time until every one is in the ledger is
//!    measured. Goal: at least 5,000 events a second.
//! 2. Latency: `RATE` (1,000) events a second for `SECS` (20) s of prepaid owners with credit;
//!    each event's deduction is looked for every 10 ms, and the time from its publication to
//!    the moment its deduction is visible is recorded. Goal: p99 within 1 s.
//!
//! Self-checks, each failing the run (exit status 1): every event is ledgered exactly once,
//! every prepaid entry is paid in full by its deductions, every prepaid event's deduction was
//! seen (its latency sample is present), and the latency part offered at least 95 % of `RATE`.
//! The goals are targets: the ratios to them are printed, and a missed goal is reported
//! without failing the run.

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

use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::events::{Envelope, UsageRecordedV1};
use hopsbridge_contracts::{Event as _, Service};
use hopsbridge_sandbox::stripe::{StripeConfig, StripeSim};
use hopsbridge_testkit::{STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, SelfChecks, TestBus, TestDb, TestSettings};
use prost::Message as _;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn sample(owner: Uuid, start: i64) -> UsageRecordedV1 {
    UsageRecordedV1 {
        sample_id: Uuid::now_v7().to_string(),
        cluster_id: Uuid::from_u128(1).to_string(),
        namespace: "lab".into(),
        user_id: owner.to_string(),
        owner_user_id: owner.to_string(),
        window_start_unix_seconds: start,
        window_end_unix_seconds: start + 900,
        project_id: 7,
        cpu_nanocore_seconds: 1_500_000_000 * 900,
        memory_byte_seconds: (3 << 30) * 900,
        gpu_seconds: 0,
        ..Default::default()
    }
}

fn message(e: &UsageRecordedV1) -> async_nats::jetstream::message::PublishMessage {
    let id = Uuid::now_v7().to_string();
    let envelope = Envelope {
        event_id: id.clone(),
        event_type: UsageRecordedV1::TYPE.into(),
        schema_version: 1,
        producer: "metering".into(),
        payload: e.encode_to_vec(),
        occurred_at_unix_micros: chrono::Utc::now().timestamp_micros(),
        ..Default::default()
    };
    async_nats::jetstream::message::PublishMessage::build().payload(envelope.encode_to_vec().into()).message_id(id)
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let mut conn = db.connect("billing").await;
    diesel::sql_query(format!("SELECT count(*) AS n FROM {sql}")).get_result::<N>(&mut conn).await.unwrap().n
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    hopsbridge_testkit::init();
    let (events, owners, rate, secs) = (env("EVENTS", 20_000), env("OWNERS", 200), env("RATE", 1000), env("SECS", 20));
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let sim = StripeSim::start(StripeConfig { secret_key: STRIPE_SECRET_KEY.to_owned(), rate_limit: None }).unwrap();
    let settings = TestSettings::data_service(Service::Billing, &db, &bus)
        .set("stripe.api_base", sim.url())
        .set("stripe.secret_key", STRIPE_SECRET_KEY)
        .set("stripe.webhook_secret", STRIPE_WEBHOOK_SECRET)
        .set("http.workers", "1")
        .set("events.consumer_batch_size", "500")
        .set("telemetry.log_filter", "warn");
    let config: hopsbridge_billing::BillingConfig = TestSettings::load(&settings, &hopsbridge_billing::DEFAULTS);
    // Built (streams ensured) but not yet running: the backlog waits for it.
    let app = hopsbridge_billing::build(config).await.unwrap();
    let js = bus.jetstream().await;
    let subject = bus.subjects().event::<UsageRecordedV1>();
    let day = chrono::Utc::now().timestamp() / 86_400 * 86_400;

    // 1. Throughput: a backlog of postpaid usage, then billing starts.
    let postpaid: Vec<Uuid> = (0..owners).map(|_| Uuid::now_v7()).collect();
    let mut acks = Vec::with_capacity(events);
    let published = Instant::now();
    for i in 0..events {
        let owner = postpaid[i % owners];
        let start = day + i64::try_from(i / owners).unwrap() % 96 * 900;
        acks.push(js.send_publish(subject.clone(), message(&sample(owner, start))).await.unwrap());
        // The client holds a bounded number of unacknowledged publishes.
        if acks.len() >= 1000 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    println!("published {events} events in {:.2} s", published.elapsed().as_secs_f64());
    let stop = CancellationToken::new();
    let started = Instant::now();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let want = i64::try_from(events).unwrap();
    while count(&db, "ledger_entries").await < want {
        assert!(started.elapsed() < Duration::from_secs(300), "the backlog was not ledgered in 5 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let throughput = events as f64 / elapsed;
    println!(
        "throughput: {events} events ledgered in {elapsed:.2} s = {throughput:.0} events/s (goal 5,000: ratio {:.2})",
        throughput / 5000.0
    );

    // 2. Latency: prepaid owners with credit, a steady rate.
    let prepaid: Vec<Uuid> = (0..owners).map(|_| Uuid::now_v7()).collect();
    {
        let mut conn = db.connect("billing").await;
        for o in &prepaid {
            diesel::sql_query(
                "INSERT INTO billing_modes (owner_id, effective_from, mode) VALUES ($1, 'epoch', 'prepaid');
                 ",
            )
            .bind::<SqlUuid, _>(*o)
            .execute(&mut conn)
            .await
            .unwrap();
            diesel::sql_query(
                "INSERT INTO credit_grants (id, owner_id, category, amount, remaining, source)
                 VALUES (gen_random_uuid(), $1, 'promotional', 100000000, 100000000, $2)",
            )
            .bind::<SqlUuid, _>(*o)
            .bind::<Text, _>(format!("bench:{o}"))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    let sent: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = std::sync::Arc::default();
    let seen: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = std::sync::Arc::default();
    let watching = CancellationToken::new();
    let watcher = {
        let (seen, watching) = (std::sync::Arc::clone(&seen), watching.clone());
        let db_conn = db.connect("billing").await;
        tokio::spawn(async move {
            #[derive(diesel::QueryableByName)]
            struct Row {
                #[diesel(sql_type = Text)]
                s: String,
            }
            let mut conn = db_conn;
            while !watching.is_cancelled() {
                let rows: Vec<Row> = diesel::sql_query(
                    "SELECT sample_id::text AS s FROM credit_deductions WHERE created_at > now() - interval '3 s'",
                )
                .load(&mut conn)
                .await
                .unwrap();
                let now = Instant::now();
                {
                    let mut guard = seen.lock().unwrap();
                    for r in rows {
                        guard.entry(r.s).or_insert(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let total = rate * secs;
    let pace = Duration::from_secs(1) / u32::try_from(rate).unwrap();
    let begun = Instant::now();
    let mut acks = Vec::new();
    for i in 0..total {
        let due = begun + pace * u32::try_from(i).unwrap();
        tokio::time::sleep_until(due.into()).await;
        let owner = prepaid[i % owners];
        let e = sample(owner, day + 86_400 + i64::try_from(i / owners).unwrap() % 96 * 900);
        sent.lock().unwrap().insert(e.sample_id.clone(), Instant::now());
        acks.push(js.send_publish(subject.clone(), message(&e)).await.unwrap());
        if acks.len() >= 100 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    let sending = begun.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watching.cancel();
    watcher.await.unwrap();
    let mut latencies: Vec<f64> = {
        let (sent, seen) = (sent.lock().unwrap(), seen.lock().unwrap());
        sent.iter()
            .filter_map(|(id, at)| seen.get(id).map(|s| s.saturating_duration_since(*at).as_secs_f64() * 1000.0))
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let (p50, p99, max) = (pct(0.5), pct(0.99), latencies.last().copied().unwrap_or(f64::NAN));
    println!(
        "latency: {total} prepaid events at {:.0}/s; deduction visible after p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms (goal p99 1,000 ms: ratio {:.2})",
        total as f64 / sending,
        p99 / 1000.0
    );

    // Self-checks.
    let ledgered = count(&db, "ledger_entries").await;
    let distinct = count(&db, "(SELECT DISTINCT sample_id FROM ledger_entries) s").await;
    let unpaid = count(
        &db,
        "ledger_entries l WHERE billing_mode = 'prepaid' AND cpu_cost + memory_cost + gpu_cost <>
             (SELECT coalesce(sum(amount), 0) FROM credit_deductions d WHERE d.sample_id = l.sample_id AND d.day = l.day)",
    )
    .await;
    stop.cancel();
    let expected = want + i64::try_from(total).unwrap();
    let offered = total as f64 / sending;
    let mut checks = SelfChecks::new();
    checks.check(
        "every event ledgered exactly once",
        ledgered == expected && distinct == expected,
        format!("{ledgered} entries of {distinct} samples; {expected} events"),
    );
    checks.check("every prepaid entry paid in full by its deductions", unpaid == 0, format!("{unpaid} not"));
    checks.check(
        "every prepaid event's deduction seen (latency samples complete)",
        latencies.len() == total,
        format!("{} of {total}", latencies.len()),
    );
    checks.check(
        &format!("the latency part offered at least 95 % of {rate} events/s"),
        offered >= 0.95 * rate as f64,
        format!("{offered:.0} events/s"),
    );
    checks.target("at least 5,000 events/s into the ledger", throughput >= 5000.0, format!("{throughput:.0} events/s"));
    checks.target("a deduction visible within 1 s at p99", p99 <= 1000.0, format!("p99 {p99:.0} ms"));
    checks.finish();
}
