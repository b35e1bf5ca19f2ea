//! `just bench journey`: 500 people from card to cluster, in two scenarios, each on a platform
//! of its own.
//!
//! Setup (release build, one machine): every service as its own process (2 actix workers each)
//! on the local Postgres and NATS, the sandbox answering without delay (Auth0, Stripe
//! delivering webhooks concurrently, 4 Hopsworks clusters of 150 places each), one process for
//! the sandbox and the load. Each scenario first times 5 people one after another, alone on the
//! platform: the baseline its ratios are printed against.
//!
//! 1. Concurrent journeys (the scenario issue 5 sets its target on): 500 people start the
//!    whole journey at the same moment, each on their own: sign up, wait for billing's Stripe
//!    customer and subscription, ask for a Checkout Session, complete it, wait for their
//!    cluster. Stripe is in live mode (100 requests a second, billing pacing itself at 90), as
//!    in production; its pace, not the platform, sets how fast people reach Checkout.
//! 2. Burst: 500 people sign up and get their Stripe customer, subscription and Checkout
//!    Session (not timed, Stripe in test mode), then all 500 sessions are completed in the
//!    sandbox in the same instant: 1,500 webhooks at once, the worst case for the platform.
//!
//! Timed for each person in both: from completing their Checkout Session (the moment Stripe
//! sends the webhooks) to their ClusterAssignedV1 on NATS, split at PaymentMethodAddedV1.
//! Printed: journeys/s, p50 and p99, the ratio of the loaded p99 to the baseline p50, CPU per
//! process, the webhook deliveries Stripe had to send again, and the audit (one customer, subscription, Hopsworks user and assignment per
//! person; no cluster over capacity). The burst also prints Postgres's table counters and, when
//! Postgres has `pg_stat_statements` loaded, its statements by execution time.
//! `JOURNEY_SCENARIOS=concurrent` or `=burst` runs one of them.
//! Target (issue 5): all 500 complete, p99 under 500 ms, no cluster over capacity.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    clippy::panic,
    reason = "a benchmark reporting on stdout"
)]

use futures::StreamExt;
use hopsbridge_journey::{Options, Person, Platform, binaries};
use hopsbridge_testkit::SelfChecks;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PEOPLE: usize = 500;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn wait_event(platform: &Platform, person: &Person, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(at) = platform.assigned_at.lock().unwrap().get(&person.user_id) {
            return *at;
        }
        assert!(Instant::now() < deadline, "no ClusterAssignedV1 for {}", person.auth0.email);
        // The time is the listener's, taken when the event went by; this only looks for it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scenarios = std::env::var("JOURNEY_SCENARIOS").unwrap_or_else(|_| "concurrent,burst".to_owned());
    let options = Options { clusters: 4, capacity: 150, log_filter: "warn", workers: 2, ..Options::default() };
    println!(
        "journey benchmark: {PEOPLE} people, {} clusters x {} places, every service its own process, sandbox without delay",
        options.clusters, options.capacity
    );
    let mut checks = SelfChecks::new();
    if scenarios.contains("concurrent") {
        let live = Options { stripe_live_mode: true, ..options.clone() };
        let platform = Platform::start(binaries!(), &live).await;
        concurrent(&platform, &mut checks).await;
    }
    if scenarios.contains("burst") {
        let platform = Platform::start(binaries!(), &options).await;
        burst(&platform, &mut checks).await;
    }
    checks.finish();
}

/// 5 people one after another, alone on the platform: webhook to ClusterAssignedV1, sorted.
async fn baseline(platform: &Platform) -> Vec<Duration> {
    let mut alone = Vec::new();
    for i in 0..5 {
        let person = platform.sign_up(&format!("alone{i}")).await;
        platform.wait_billing_account(&person, Duration::from_secs(30)).await;
        let session = platform.retry_call("POST", "/api/billing/payment-method", &person.token).await;
        let id = session["id"].as_str().unwrap().to_owned();
        let start = Instant::now();
        platform.world.stripe.complete_checkout_session(&id).unwrap();
        alone.push(wait_event(platform, &person, Duration::from_secs(30)).await - start);
    }
    alone.sort();
    alone
}

/// Scenario 1: every person runs the whole journey at once, each at their own pace.
async fn concurrent(platform: &Platform, checks: &mut SelfChecks) {
    println!();
    println!(
        "## Scenario 1: {PEOPLE} people through the whole journey concurrently (Stripe in live mode: 100 req/s, billing at 90)"
    );
    let alone = baseline(platform).await;
    // One reader of billing's accounts for everyone, instead of a query per person.
    let ready = Arc::new(Mutex::new(HashSet::new()));
    let watcher = {
        let ready = Arc::clone(&ready);
        async move {
            loop {
                let found = platform.billing_ready().await;
                ready.lock().unwrap().extend(found);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let cpu_before = cpu_by_part(platform);
    let begin = Instant::now();
    let journeys = futures::future::join_all((0..PEOPLE).map(|i| {
        let ready = Arc::clone(&ready);
        async move {
            let person = platform.sign_up(&format!("c{i:04}")).await;
            let deadline = Instant::now() + Duration::from_secs(300);
            while !ready.lock().unwrap().contains(&person.user_id) {
                assert!(Instant::now() < deadline, "no Stripe customer and subscription for {}", person.auth0.email);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let session = platform.retry_call("POST", "/api/billing/payment-method", &person.token).await;
            let id = session["id"].as_str().unwrap().to_owned();
            let start = Instant::now();
            platform.world.stripe.complete_checkout_session(&id).unwrap();
            let at = wait_event(platform, &person, Duration::from_secs(300)).await;
            (person, start, at)
        }
    }));
    let journeys = tokio::select! {
        done = journeys => done,
        () = watcher => unreachable!("the watcher never ends"),
    };
    let last = journeys.iter().map(|(_, _, at)| *at).max().unwrap();
    let wall = last - begin;
    let cpu_after = cpu_by_part(platform);
    let mut to_checkout: Vec<Duration> = journeys.iter().map(|(_, start, _)| *start - begin).collect();
    to_checkout.sort();
    let (people, started): (Vec<Person>, Vec<Instant>) = journeys.into_iter().map(|(p, s, _)| (p, s)).unzip();
    let timings = Timings::of(platform, &people, &started);

    timings.print(&alone, &format!("{PEOPLE} concurrent"), wall);
    row("  start -> Checkout completed (not the target)", &to_checkout, None);
    println!();
    print_cpu(&cpu_before, &cpu_after, wall, "from the first sign-up to the last ClusterAssigned");
    conclude(platform, &people, &alone, &timings.latencies, checks).await;
}

/// Scenario 2: everyone's Checkout completed in the same instant.
async fn burst(platform: &Platform, checks: &mut SelfChecks) {
    println!();
    println!("## Scenario 2: burst, {PEOPLE} Checkouts completed in the same instant (Stripe in test mode)");
    let alone = baseline(platform).await;
    let setup = Instant::now();
    let people: Vec<Person> = futures::stream::iter(0..PEOPLE)
        .map(|i| async move {
            let person = platform.sign_up(&format!("p{i:04}")).await;
            platform.wait_billing_account(&person, Duration::from_secs(300)).await;
            person
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let sessions: Vec<String> = futures::stream::iter(&people)
        .map(|person| async move {
            let session = platform.retry_call("POST", "/api/billing/payment-method", &person.token).await;
            session["id"].as_str().unwrap().to_owned()
        })
        .buffered(32)
        .collect()
        .await;
    println!(
        "setup: {PEOPLE} sign-ups with Stripe customers and checkout sessions in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let tables_before = table_stats(platform).await;
    let statements_tracked = reset_statements(platform).await;
    let cpu_before = cpu_by_part(platform);
    let begin = Instant::now();
    let mut started = Vec::with_capacity(PEOPLE);
    for id in &sessions {
        started.push(Instant::now());
        platform.world.stripe.complete_checkout_session(id).unwrap();
    }
    let mut last = begin;
    for person in &people {
        last = last.max(wait_event(platform, person, Duration::from_secs(300)).await);
    }
    let wall = last - begin;
    let cpu_after = cpu_by_part(platform);
    let tables_after = table_stats(platform).await;
    let timings = Timings::of(platform, &people, &started);

    timings.print(&alone, &format!("{PEOPLE} at once"), wall);
    println!();
    print_cpu(&cpu_before, &cpu_after, wall, "from the first completed Checkout to the last ClusterAssigned");
    let mut busiest: Vec<(String, [i64; 5])> = tables_after
        .iter()
        .map(|(table, after)| {
            let before = tables_before.iter().find(|(t, _)| t == table).map_or([0; 5], |(_, b)| *b);
            (table.clone(), std::array::from_fn(|i| after[i] - before[i]))
        })
        .filter(|(_, d)| d.iter().any(|v| *v != 0))
        .collect();
    busiest.sort_by_key(|(_, d)| std::cmp::Reverse(d[1] + d[3]));
    println!(
        "Postgres tables during the burst (seq scans, rows they read, index scans, rows fetched by index, rows written):"
    );
    for (table, d) in busiest.iter().take(12) {
        println!("  {table}: {} / {} / {} / {} / {}", d[0], d[1], d[2], d[3], d[4]);
    }
    if statements_tracked {
        println!("Postgres statements during the burst, by execution time (calls, ms, rows):");
        for s in statement_stats(platform).await.iter().take(15) {
            println!("  {} / {:.0} / {}: {}", s.calls, s.total_ms, s.rows, s.query);
        }
    }
    conclude(platform, &people, &alone, &timings.latencies, checks).await;
}

/// Each person's journey from their completed Checkout, and its two halves: billing (webhook
/// to PaymentMethodAddedV1 on NATS) and provisioning (from there to ClusterAssignedV1). Sorted.
struct Timings {
    latencies: Vec<Duration>,
    billing: Vec<Duration>,
    provisioning: Vec<Duration>,
}

impl Timings {
    fn of(platform: &Platform, people: &[Person], started: &[Instant]) -> Self {
        let (mut latencies, mut billing, mut provisioning) = (Vec::new(), Vec::new(), Vec::new());
        let added = platform.card_added_at.lock().unwrap();
        let assigned = platform.assigned_at.lock().unwrap();
        for (person, start) in people.iter().zip(started) {
            let Some(c) = assigned.get(&person.user_id) else { continue };
            latencies.push(c.saturating_duration_since(*start));
            if let Some(a) = added.get(&person.user_id) {
                billing.push(a.saturating_duration_since(*start));
                provisioning.push(c.saturating_duration_since(*a));
            }
        }
        for part in [&mut latencies, &mut billing, &mut provisioning] {
            part.sort();
        }
        Self { latencies, billing, provisioning }
    }

    /// The table: the baseline, then the loaded run (`label`, over `wall`) and its halves.
    fn print(&self, alone: &[Duration], label: &str, wall: Duration) {
        println!();
        println!("| run | journeys | journeys/s | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|---|");
        row("alone (baseline)", alone, None);
        row(label, &self.latencies, Some(PEOPLE as f64 / wall.as_secs_f64()));
        row("  of which webhook -> PaymentMethodAdded", &self.billing, None);
        row("  of which PaymentMethodAdded -> ClusterAssigned", &self.provisioning, None);
    }
}

fn row(name: &str, sorted: &[Duration], per_second: Option<f64>) {
    println!(
        "| {name} | {} | {} | {:.1} | {:.1} | {:.1} |",
        sorted.len(),
        per_second.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}")),
        ms(percentile(sorted, 50.0)),
        ms(percentile(sorted, 99.0)),
        ms(*sorted.last().unwrap())
    );
}

fn print_cpu(before: &[(String, f64)], after: &[(String, f64)], wall: Duration, span: &str) {
    let spent: Vec<(String, f64)> = after
        .iter()
        .map(|(part, a)| (part.clone(), a - before.iter().find(|(p, _)| p == part).map_or(0.0, |(_, b)| *b)))
        .collect();
    let total: f64 = spent.iter().map(|(_, s)| s).sum();
    println!(
        "CPU seconds {span} ({:.2} s wall, {:.2} cores busy, {:.1} ms per journey):",
        wall.as_secs_f64(),
        total / wall.as_secs_f64(),
        total * 1000.0 / PEOPLE as f64
    );
    println!("{}", spent.iter().map(|(part, s)| format!("{part} {s:.2}")).collect::<Vec<_>>().join(", "));
}

/// Prints the ratio to the baseline, records the scenario's self-checks and its target, then
/// fails at once unless everyone has exactly one of everything.
async fn conclude(
    platform: &Platform,
    people: &[Person],
    alone: &[Duration],
    latencies: &[Duration],
    checks: &mut SelfChecks,
) {
    let audit = platform.audit(people).await;
    let complete = audit.assignments.iter().filter(|n| **n == 1).count();
    let p99 = percentile(latencies, 99.0);
    // A delivery Stripe had to send again waited at least its backoff (50 ms, doubling).
    let deliveries = platform.world.stripe.deliveries();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in deliveries.iter().flat_map(|d| &d.attempts).filter(|a| a.status.is_none_or(|s| s >= 300)) {
        *refused.entry(attempt.status.map_or_else(|| "no answer".to_owned(), |s| s.to_string())).or_default() += 1;
    }
    println!();
    println!(
        "webhook deliveries: {}, sent again: {} (refused attempts by answer: {refused:?})",
        deliveries.len(),
        deliveries.iter().filter(|d| d.attempts.len() > 1).count()
    );
    println!("loaded p99 / baseline p50: {:.1}x", p99.as_secs_f64() / percentile(alone, 50.0).as_secs_f64());
    checks.check(
        "every person's journey completed (exactly one assignment each)",
        complete == PEOPLE,
        format!("{complete} of {PEOPLE}"),
    );
    checks.check(
        "every person's latency sample present",
        latencies.len() == PEOPLE,
        format!("{} of {PEOPLE}", latencies.len()),
    );
    checks.check(
        "no cluster over capacity",
        audit.clusters_over_capacity == 0,
        format!("{} over", audit.clusters_over_capacity),
    );
    checks.target("p99 under 500 ms", p99 < Duration::from_millis(500), format!("{:.1} ms", ms(p99)));
    // Names every person with other than one customer, subscription, account, assignment and
    // message each (a failed run: the process ends with a panic).
    audit.assert_exactly_once();
}

/// CPU seconds (user + system) used so far by process `pid`, from /proc (100 ticks a second).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU seconds so far of each service process, of this process (the sandbox and the load),
/// of the `postgres` processes serving connections ("postgres"; a backend's title names its
/// client, `127.0.0.1(port)` or `[local]`) and of Postgres's own background processes (WAL
/// writer, checkpointer, autovacuum, ...), and of every `nats-server` process on the machine.
fn cpu_by_part(platform: &Platform) -> Vec<(String, f64)> {
    let mut parts: Vec<(String, f64)> =
        platform.service_pids().into_iter().map(|(name, pid)| (name.to_owned(), cpu_secs(pid))).collect();
    parts.push(("sandbox+load".to_owned(), cpu_secs(std::process::id())));
    // Each process of interest, by the part it counts for.
    let part_of = |pid: u32| -> Option<&'static str> {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        match comm.trim() {
            "nats-server" => Some("nats-server"),
            "postgres" => {
                let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let session = title.contains('(') || title.contains("[local]");
                Some(if session { "postgres" } else { "postgres-background" })
            }
            _ => None,
        }
    };
    let mut others: Vec<(String, f64)> =
        ["postgres", "postgres-background", "nats-server"].iter().map(|p| ((*p).to_owned(), 0.0)).collect();
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
    for pid in pids {
        if let Some(part) = part_of(pid)
            && let Some((_, total)) = others.iter_mut().find(|(p, _)| p == part)
        {
            *total += cpu_secs(pid);
        }
    }
    parts.extend(others);
    parts
}

#[derive(diesel::QueryableByName)]
struct TableStat {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq_scan: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq_tup_read: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    idx_scan: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    idx_tup_fetch: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    written: i64,
}

/// Postgres's counters for every table of the platform's database (they lag by up to the
/// statistics collector's flush interval, a second or so).
async fn table_stats(platform: &Platform) -> Vec<(String, [i64; 5])> {
    use diesel_async::RunQueryDsl;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut conn = platform.db.connect("public").await;
    let rows: Vec<TableStat> = diesel::sql_query(
        "SELECT schemaname || '.' || relname AS name, coalesce(seq_scan, 0) AS seq_scan,
                coalesce(seq_tup_read, 0) AS seq_tup_read, coalesce(idx_scan, 0) AS idx_scan,
                coalesce(idx_tup_fetch, 0) AS idx_tup_fetch, n_tup_ins + n_tup_upd + n_tup_del AS written
         FROM pg_stat_user_tables",
    )
    .load(&mut conn)
    .await
    .unwrap_or_default();
    rows.into_iter().map(|r| (r.name, [r.seq_scan, r.seq_tup_read, r.idx_scan, r.idx_tup_fetch, r.written])).collect()
}

#[derive(diesel::QueryableByName)]
struct StatementStat {
    #[diesel(sql_type = diesel::sql_types::Text)]
    query: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    calls: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    total_ms: f64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    rows: i64,
}

/// Starts counting statements afresh when Postgres has `pg_stat_statements` loaded
/// (`shared_preload_libraries`); answers whether it does. Without it the benchmark prints no
/// statement report.
async fn reset_statements(platform: &Platform) -> bool {
    use diesel_async::RunQueryDsl;
    let mut conn = platform.db.connect("public").await;
    if diesel::sql_query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&mut conn).await.is_err() {
        return false;
    }
    diesel::sql_query("SELECT pg_stat_statements_reset()").execute(&mut conn).await.is_ok()
}

/// The platform database's statements since [`reset_statements`], most execution time first.
async fn statement_stats(platform: &Platform) -> Vec<StatementStat> {
    use diesel_async::RunQueryDsl;
    let mut conn = platform.db.connect("public").await;
    diesel::sql_query(
        "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query, calls, total_exec_time AS total_ms, rows
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY total_exec_time DESC LIMIT 40",
    )
    .load(&mut conn)
    .await
    .unwrap_or_default()
}
