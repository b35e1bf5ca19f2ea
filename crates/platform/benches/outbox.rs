//! `just bench outbox`: events from the outbox to a consumer's committed effect.
//!
//! Setup: one template-cloned Postgres database and a private subject prefix on the local NATS
//! server; identity's outbox, one relay (LISTEN/NOTIFY wake-ups, batches of 500), billing's
//! consumer (batches of up to 500, inbox + one INSERT per event, one transaction per batch).
//!
//! 1. Throughput: 100,000 events committed 100 per transaction (`enqueue_all`, one INSERT each)
//!    as fast as possible, from 4 writers, while the
//!    relay and consumer run; sustained rate = events / (first commit → last effect commit).
//! 2. Baseline in the same run: 100,000 messages published straight to JetStream (PubAcks
//!    awaited) and pulled and acked with no Postgres at all: the broker's ceiling here.
//! 3. Latency: a steady 1,000 events/s, one event per transaction, for 20 s; p50/p99/max from
//!    the producer's commit returning to the consumer's transaction committing.
//!
//! Self-checks, each failing the run (exit status 1): every event's effect committed exactly
//! once in both parts, every event has its latency sample, and the steady part offered at least
//! 95 % of its 1,000 events/s. The targets (5,000 events/s; p99 under 50 ms) are reported and
//! do not fail the run.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    reason = "benchmark"
)]

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use futures::future::BoxFuture;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::UserCreatedV1;
use hopsbridge_domain::EventId;
use hopsbridge_platform::config::EventsConfig;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::events::{
    Consumer, ConsumerHooks, EventBus, Handler, HandlerError, Hook, ReceivedEvent, Relay, enqueue, enqueue_all,
};
use hopsbridge_testkit::{SelfChecks, TestBus, TestDb};
use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 100_000;
const PER_TRANSACTION: usize = 100;
const STEADY_RATE: u64 = 1_000;
const STEADY_SECONDS: u64 = 20;
/// Which of an event's two instants was seen.
#[derive(Clone, Copy)]
enum Seen {
    Commit,
    Effect,
}

impl Clock {
    /// Notes that the events `ids` were committed, or had their effect committed, at `at`. A
    /// writer notes its commit once the transaction returns, and a relay woken by the commit's
    /// NOTIFY can have the effect committed before that: whichever of the two comes second makes
    /// the latency sample (zero when the effect was first, since the commit was then a moment
    /// earlier than the writer could note).
    fn seen(&self, seen: Seen, ids: impl IntoIterator<Item = EventId>, at: Instant) {
        let mut first = self.first_seen.lock().unwrap();
        let mut latencies = self.latencies.lock().unwrap();
        for id in ids {
            match (first.remove(&id), seen) {
                (Some(commit), Seen::Effect) => latencies.push(at.saturating_duration_since(commit)),
                (Some(effect), Seen::Commit) => latencies.push(effect.saturating_duration_since(at)),
                (None, _) => {
                    first.insert(id, at);
                }
            }
        }
    }
}

/// How long the consumer may take to commit every effect after the last event was written.
const DRAIN_CEILING: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Clock {
    /// The instant of each event whose commit or effect was seen and not yet the other.
    first_seen: Mutex<HashMap<EventId, Instant>>,
    latencies: Mutex<Vec<Duration>>,
    last_handled: Mutex<Option<Instant>>,
    transactions: std::sync::atomic::AtomicUsize,
}

struct Effect;

diesel::table! {
    bench_effects (event_id) {
        event_id -> Uuid,
    }
}

impl Handler<UserCreatedV1> for Effect {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        use diesel::ExpressionMethods;
        diesel::insert_into(bench_effects::table)
            .values(bench_effects::event_id.eq(event.id.as_uuid()))
            .execute(conn)
            .await?;
        Ok(())
    }
}

fn events_config() -> EventsConfig {
    EventsConfig {
        relay_batch_size: 500,
        relay_poll_interval_ms: 500,
        retention_hours: 1,
        consumer_batch_size: 500,
        ack_wait_secs: 30,
        max_deliver: 6,
        backoff_secs: vec![1, 5, 30, 120, 600],
    }
}

fn event(i: usize) -> UserCreatedV1 {
    UserCreatedV1 {
        user_id: format!("{i}"),
        auth_subject: format!("auth0|{i}"),
        email: format!("user{i}@example.com"),
        name: "Bench User".into(),
    }
}

async fn effects(db: &Database) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.conn().await.unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM bench_effects").get_result::<N>(&mut conn).await.unwrap().n
}

async fn unpublished(db: &Database) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.conn().await.unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        .get_result::<N>(&mut conn)
        .await
        .unwrap()
        .n
}

/// Waits until `want` effects are committed or [`DRAIN_CEILING`] passed; answers the count.
async fn effects_reaching(db: &Database, want: i64) -> i64 {
    let deadline = Instant::now() + DRAIN_CEILING;
    loop {
        let n = effects(db).await;
        if n >= want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes the latency samples once `want` are recorded (the consumer's hook runs just after its
/// commit, so a sample may follow its effect by a moment) or 10 s passed.
async fn samples(clock: &Clock, want: usize) -> Vec<Duration> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while clock.latencies.lock().unwrap().len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latencies = std::mem::take(&mut *clock.latencies.lock().unwrap());
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let mut setup = db.connect("billing").await;
    diesel::sql_query("CREATE TABLE bench_effects (event_id uuid PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        .execute(&mut setup)
        .await
        .unwrap();
    let mut db_cfg = db.config();
    db_cfg.max_connections = 16;
    let identity = Database::new(&db_cfg, "identity").unwrap();
    let billing = Database::new(&db_cfg, "billing").unwrap();
    let events = EventBus::connect(&bus.config(), Service::Identity).await.unwrap();
    events.ensure_streams().await.unwrap();

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("outbox benchmark: {EVENTS} events, {cores} cores, Postgres and NATS on this machine");
    let mut checks = SelfChecks::new();

    let clock = Arc::new(Clock::default());
    let hook: Hook = {
        let clock = Arc::clone(&clock);
        Arc::new(move |ids: Vec<EventId>| -> BoxFuture<'static, ()> {
            let now = Instant::now();
            clock.transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            clock.seen(Seen::Effect, ids, now);
            *clock.last_handled.lock().unwrap() = Some(now);
            Box::pin(async {})
        })
    };
    let cancel = CancellationToken::new();
    let relay = Relay::new(identity.clone(), db_cfg.clone(), events.clone(), Service::Identity, events_config());
    let relay_task = tokio::spawn(relay.run(cancel.clone()));
    let consumer = Consumer::new("billing-bench", billing.clone(), events.clone(), events_config(), Effect)
        .with_hooks(ConsumerHooks { after_commit: Some(hook) });
    let consumer_task = tokio::spawn(consumer.run(cancel.clone()));

    // 1. Throughput.
    let started = Instant::now();
    let drained = {
        let identity = identity.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            while unpublished(&identity).await > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            started.elapsed()
        })
    };
    let producers = 4;
    let mut tasks = Vec::new();
    for p in 0..producers {
        let identity = identity.clone();
        let clock = Arc::clone(&clock);
        tasks.push(tokio::spawn(async move {
            let mut conn = identity.conn().await.unwrap();
            let mut i = p;
            while i < EVENTS {
                let batch: Vec<usize> = (i..EVENTS).step_by(producers).take(PER_TRANSACTION).collect();
                i = batch.last().map_or(EVENTS, |last| last + producers);
                let events: Vec<UserCreatedV1> = batch.iter().map(|n| event(*n)).collect();
                let ids = conn.transaction(async |c| enqueue_all(c, &events, None).await).await.unwrap();
                clock.seen(Seen::Commit, ids, Instant::now());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let produced = started.elapsed();
    let throughput_effects = effects_reaching(&billing, EVENTS as i64).await;
    let drained = drained.await.unwrap();
    let throughput_latencies = samples(&clock, EVENTS).await;
    let last = clock.last_handled.lock().unwrap().unwrap_or_else(Instant::now);
    let wall = last.saturating_duration_since(started);
    let rate = EVENTS as f64 / wall.as_secs_f64();
    println!(
        "throughput: {EVENTS} events committed in {:.2} s ({:.0}/s); last effect at {:.2} s: {rate:.0} events/s end to end",
        produced.as_secs_f64(),
        EVENTS as f64 / produced.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "            relay: outbox empty at {:.2} s ({:.0} events/s published)",
        drained.as_secs_f64(),
        EVENTS as f64 / drained.as_secs_f64()
    );
    let transactions = clock.transactions.swap(0, std::sync::atomic::Ordering::Relaxed);
    println!(
        "            latency under full load: p50 {:.1} ms, p99 {:.1} ms; consumer transactions {transactions} (mean {:.0} events each)",
        ms(percentile(&throughput_latencies, 0.50)),
        ms(percentile(&throughput_latencies, 0.99)),
        EVENTS as f64 / transactions.max(1) as f64
    );
    checks.check(
        "throughput: every event's effect committed exactly once",
        throughput_effects == EVENTS as i64,
        format!("{throughput_effects} effects of {EVENTS} events"),
    );
    checks.check(
        "throughput: every event has its latency sample",
        throughput_latencies.len() == EVENTS,
        format!("{} of {EVENTS}", throughput_latencies.len()),
    );

    // 2. Baseline: raw JetStream, no Postgres.
    let baseline = raw_jetstream(&bus).await;
    println!(
        "baseline:   raw JetStream publish (PubAck awaited) → pull → ack, no Postgres: {baseline:.0} msgs/s; outbox path = {:.2}× baseline",
        rate / baseline
    );

    // 3. Latency at a steady rate.
    let before = effects(&billing).await;
    let total = (STEADY_RATE * STEADY_SECONDS) as usize;
    let writers = 4_u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let identity = identity.clone();
        let clock = Arc::clone(&clock);
        tasks.push(tokio::spawn(async move {
            let mut conn = identity.conn().await.unwrap();
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * writers / STEADY_RATE));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for n in 0..(STEADY_RATE * STEADY_SECONDS / writers) {
                tick.tick().await;
                let e = event(EVENTS + (w + n * writers) as usize);
                let id = conn.transaction(async |c| enqueue(c, &e, None).await).await.unwrap();
                clock.seen(Seen::Commit, [id], Instant::now());
            }
        }));
    }
    let steady_started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let offered = steady_started.elapsed();
    let steady_effects = effects_reaching(&billing, before + total as i64).await - before;
    let latencies = samples(&clock, total).await;
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "steady:     {total} events at {:.0}/s offered for {:.1} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        total as f64 / offered.as_secs_f64(),
        offered.as_secs_f64(),
        ms(p50),
        ms(p99),
        ms(latencies.last().copied().unwrap_or_default())
    );
    let offered_rate = total as f64 / offered.as_secs_f64();
    checks.check(
        "steady: every event's effect committed exactly once",
        steady_effects == total as i64,
        format!("{steady_effects} effects of {total} events"),
    );
    checks.check(
        "steady: every event has its latency sample",
        latencies.len() == total,
        format!("{} of {total}", latencies.len()),
    );
    checks.check(
        &format!("steady: offered at least 95 % of {STEADY_RATE} events/s"),
        offered_rate >= 0.95 * STEADY_RATE as f64,
        format!("{offered_rate:.0} events/s"),
    );
    checks.target("at least 5,000 events/s end to end", rate >= 5000.0, format!("{rate:.0} events/s"));
    checks.target(
        &format!("p99 under 50 ms at {STEADY_RATE} events/s"),
        p99 < Duration::from_millis(50),
        format!("{:.1} ms", ms(p99)),
    );
    cancel.cancel();
    let _ = relay_task.await;
    let _ = consumer_task.await;
    checks.finish();
}

async fn raw_jetstream(bus: &TestBus) -> f64 {
    let js = bus.jetstream().await;
    let subjects = bus.subjects();
    let stream_name = format!("{}_RAW", subjects.prefix().to_uppercase());
    let subject = format!("{}.raw.bench", subjects.prefix());
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name,
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let payload = bytes::Bytes::from(vec![7_u8; 180]);
    let started = Instant::now();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(500) {
                let mut acks = Vec::with_capacity(chunk.len());
                for i in chunk {
                    let msg = async_nats::jetstream::message::PublishMessage::build()
                        .payload(payload.clone())
                        .message_id(i.to_string());
                    acks.push(js.send_publish(subject.clone(), msg).await.unwrap());
                }
                futures::future::try_join_all(acks.into_iter().map(IntoFuture::into_future)).await.unwrap();
            }
        })
    };
    let mut messages = consumer.stream().max_messages_per_batch(500).messages().await.unwrap();
    let mut received = 0;
    while received < EVENTS {
        let m = messages.next().await.unwrap().unwrap();
        m.ack().await.unwrap();
        received += 1;
    }
    publisher.await.unwrap();
    EVENTS as f64 / started.elapsed().as_secs_f64()
}
