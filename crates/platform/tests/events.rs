//! The event backbone against the real Postgres and NATS: every event written through the
//! outbox reaches its consumer's effect exactly once, whatever fails in between.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use futures::future::BoxFuture;
use hopsbridge_contracts::events::{Envelope, UserCreatedV1};
use hopsbridge_contracts::{Event, Service};
use hopsbridge_platform::config::EventsConfig;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::events::{
    Consumer, ConsumerHooks, EventBus, Handler, HandlerError, Hook, ReceivedEvent, Relay, RelayHooks, enqueue, headers,
};
use hopsbridge_platform::telemetry;
use hopsbridge_testkit::{NatsServer, TcpProxy, TestBus, TestDb, eventually};
use prost::Message as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const CONSUMER: &str = "billing-test";

fn events_config() -> EventsConfig {
    EventsConfig {
        relay_batch_size: 100,
        relay_poll_interval_ms: 100,
        retention_hours: 1,
        consumer_batch_size: 50,
        ack_wait_secs: 2,
        max_deliver: 4,
        backoff_secs: vec![1, 1, 1],
    }
}

/// identity writes UserCreatedV1 through its outbox; billing consumes it into `effects`.
struct World {
    db: TestDb,
    bus: TestBus,
    identity: Database,
    billing: Database,
    events: EventBus,
    written: AtomicUsize,
}

impl World {
    async fn new() -> Self {
        Self::on(TestBus::new().await).await
    }

    async fn on(bus: TestBus) -> Self {
        let db = TestDb::new().await;
        let mut conn = db.connect("billing").await;
        diesel::sql_query("CREATE TABLE effects (event_id uuid NOT NULL, email text NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        let identity = Database::new(&db.config(), "identity").unwrap();
        let billing = Database::new(&db.config(), "billing").unwrap();
        let events = EventBus::connect(&bus.config(), Service::Identity).await.unwrap();
        events.ensure_streams().await.unwrap();
        Self { db, bus, identity, billing, events, written: AtomicUsize::new(0) }
    }

    fn relay(&self) -> Relay {
        self.relay_on(self.identity.clone())
    }

    fn relay_on(&self, db: Database) -> Relay {
        Relay::new(db, self.db.config(), self.events.clone(), Service::Identity, events_config())
    }

    fn consumer<H: Handler<UserCreatedV1>>(&self, handler: H) -> Consumer<UserCreatedV1, H> {
        Consumer::new(CONSUMER, self.billing.clone(), self.events.clone(), events_config(), handler)
    }

    /// Writes `n` events (user0@…, user1@…, numbered on across calls), each in its own
    /// transaction, as a service would.
    async fn write_events(&self, n: usize) -> Vec<String> {
        let mut emails = Vec::new();
        let mut conn = self.identity.conn().await.unwrap();
        for _ in 0..n {
            let i = self.written.fetch_add(1, Ordering::SeqCst);
            let email = format!("user{i}@example.com");
            let event = UserCreatedV1 {
                user_id: format!("u{i}"),
                auth_subject: format!("auth0|{i}"),
                email: email.clone(),
                name: String::new(),
            };
            conn.transaction(async |c| enqueue(c, &event, None).await).await.unwrap();
            emails.push(email);
        }
        emails
    }

    async fn effects(&self) -> Vec<String> {
        let mut conn = self.billing.conn().await.unwrap();
        diesel::sql_query("SELECT email FROM effects ORDER BY email")
            .load::<EmailRow>(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.email)
            .collect()
    }

    async fn unpublished(&self) -> i64 {
        let mut conn = self.identity.conn().await.unwrap();
        diesel::sql_query("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            .get_result::<Count>(&mut conn)
            .await
            .unwrap()
            .n
    }

    async fn stream_messages(&self) -> u64 {
        let js = self.bus.jetstream().await;
        let mut stream = js.get_stream(self.bus.subjects().stream(Service::Identity)).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Waits until `effects` holds exactly `want` rows (and stays there for a moment, so a
    /// late duplicate would be seen).
    async fn assert_effects_settle_at(&self, want: usize) {
        let reached = eventually(Duration::from_secs(20), || async { self.effects().await.len() >= want }).await;
        assert!(reached, "only {} of {want} effects", self.effects().await.len());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let effects = self.effects().await;
        let mut unique = effects.clone();
        unique.dedup();
        assert_eq!(effects.len(), want, "duplicated effects: {effects:?}");
        assert_eq!(unique.len(), want);
    }
}

#[derive(QueryableByName)]
struct EmailRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    email: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Records each event in `effects`.
#[derive(Clone, Default)]
struct Record {
    calls: Arc<AtomicUsize>,
}

impl Handler<UserCreatedV1> for Record {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        diesel::sql_query("INSERT INTO effects (event_id, email) VALUES ($1, $2)")
            .bind::<diesel::sql_types::Uuid, _>(event.id.as_uuid())
            .bind::<diesel::sql_types::Text, _>(&event.payload.email)
            .execute(conn)
            .await?;
        Ok(())
    }
}

fn run<E: Event, H: Handler<E>>(consumer: Consumer<E, H>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    (cancel, task)
}

fn spawn_relay(relay: Relay) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(relay.run(cancel.clone()));
    (cancel, task)
}

/// A hook that reports the first time it runs and then never returns, so the task running it
/// can be aborted at exactly that point, as if its process had been killed there.
fn stall_once() -> (Hook, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let fired = Arc::new(AtomicUsize::new(0));
    let hook: Hook = Arc::new(move |_ids| -> BoxFuture<'static, ()> {
        let first = fired.fetch_add(1, Ordering::SeqCst) == 0;
        let tx = tx.clone();
        Box::pin(async move {
            if first {
                let _ = tx.send(());
                std::future::pending::<()>().await;
            }
        })
    });
    (hook, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_written_through_the_outbox_has_exactly_one_effect() {
    let world = World::new().await;
    let (_relay, _r) = spawn_relay(world.relay());
    let (_consumer, _c) = run(world.consumer(Record::default()));
    let written = world.write_events(40).await;
    world.assert_effects_settle_at(written.len()).await;
    let mut expected = written.clone();
    expected.sort();
    assert_eq!(world.effects().await, expected);
    assert_eq!(world.unpublished().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_publishes_nothing() {
    let world = World::new().await;
    let mut conn = world.identity.conn().await.unwrap();
    let event = UserCreatedV1 { email: "ghost@example.com".into(), ..Default::default() };
    let result: Result<(), diesel::result::Error> = conn
        .transaction(async |c| {
            enqueue(c, &event, None).await.unwrap();
            Err(diesel::result::Error::RollbackTransaction)
        })
        .await;
    assert!(result.is_err());
    let pass = world.relay().relay_once().await.unwrap();
    assert_eq!(pass.published, 0);
    assert_eq!(world.stream_messages().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publishing_and_marking_sent_causes_no_second_effect() {
    let world = World::new().await;
    world.write_events(10).await;

    // The first relay publishes, gets its PubAcks, and dies before marking the rows sent.
    let doomed_pool = Database::new(&world.db.config(), "identity").unwrap();
    let (hook, mut fired) = stall_once();
    let doomed = world.relay_on(doomed_pool.clone()).with_hooks(RelayHooks { after_publish: Some(hook) });
    let task = tokio::spawn(async move { doomed.relay_once().await });
    fired.recv().await.unwrap();
    task.abort();
    drop(doomed_pool); // the process is gone: its connection closes and its row locks go
    assert_eq!(world.stream_messages().await, 10, "the events did reach JetStream");
    assert_eq!(world.unpublished().await, 10, "but the outbox never heard");

    // A new relay publishes the same rows again; JetStream drops the duplicates by Nats-Msg-Id.
    let relay = world.relay();
    let drained = eventually(Duration::from_secs(10), || async {
        let _ = relay.relay_once().await;
        world.unpublished().await == 0
    })
    .await;
    assert!(drained);
    assert_eq!(world.stream_messages().await, 10);
    assert_eq!(relay.totals().duplicates(), 10, "the relay saw JetStream flag every republished row");

    let (_c, _t) = run(world.consumer(Record::default()));
    world.assert_effects_settle_at(10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_after_its_effect_but_before_its_ack_does_not_repeat_the_effect() {
    let world = World::new().await;
    world.write_events(5).await;
    world.relay().relay_once().await.unwrap();

    let (hook, mut fired) = stall_once();
    let first = Record::default();
    let doomed = world.consumer(first.clone()).with_hooks(ConsumerHooks { after_commit: Some(hook) });
    let (_cancel, task) = run(doomed);
    fired.recv().await.unwrap();
    task.abort();
    // The first batch may have held all five events or only some of them.
    let committed = world.effects().await.len();
    assert!(committed >= 1, "the effects of the first batch were committed");

    // The messages were never acked: JetStream redelivers them after ack_wait to the next
    // instance, which finds them in its inbox.
    let second = Record::default();
    let (_c, _t) = run(world.consumer(second.clone()));
    let js = world.bus.jetstream().await;
    let redelivered = eventually(Duration::from_secs(15), || async {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            js.get_consumer_from_stream(CONSUMER, world.bus.subjects().stream(Service::Identity)).await.unwrap();
        let info = consumer.info().await.unwrap();
        // Every delivery, first or again, takes a consumer sequence number: the committed
        // events were delivered twice.
        let deliveries = usize::try_from(info.delivered.consumer_sequence).unwrap_or(0);
        info.num_ack_pending == 0 && info.num_pending == 0 && deliveries >= 5 + committed
    })
    .await;
    assert!(redelivered, "the messages were redelivered and acked");
    world.assert_effects_settle_at(5).await;
    assert_eq!(
        AtomicUsize::load(&second.calls, Ordering::SeqCst),
        5 - committed,
        "the handler never ran again for an event already handled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_published_twice_has_one_effect() {
    let world = World::new().await;
    world.write_events(1).await;
    world.relay().relay_once().await.unwrap();

    // Take the published message and publish it again: once with the same Nats-Msg-Id (inside
    // the duplicate window JetStream drops it) and once with another id (as a republish after
    // the window would arrive), which only the inbox can catch.
    let js = world.bus.jetstream().await;
    let stream = js.get_stream(world.bus.subjects().stream(Service::Identity)).await.unwrap();
    let original = stream.get_raw_message(1).await.unwrap();
    let id = original.headers.get(headers::MSG_ID).unwrap().as_str().to_owned();
    let ack = js
        .send_publish(
            original.subject.clone(),
            async_nats::jetstream::message::PublishMessage::build().payload(original.payload.clone()).message_id(&id),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(ack.duplicate, "JetStream recognised the duplicate");
    js.send_publish(
        original.subject.clone(),
        async_nats::jetstream::message::PublishMessage::build()
            .payload(original.payload.clone())
            .message_id(format!("{id}-later")),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    assert_eq!(world.stream_messages().await, 2);

    let record = Record::default();
    let (_c, _t) = run(world.consumer(record.clone()));
    world.assert_effects_settle_at(1).await;
    assert_eq!(AtomicUsize::load(&record.calls, Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_while_nats_is_down_are_delivered_once_it_returns() {
    let mut nats = NatsServer::start().await;
    let world = World::on(TestBus::on(&nats.url()).await).await;
    let (_r, _rt) = spawn_relay(world.relay());
    let (_c, _ct) = run(world.consumer(Record::default()));
    world.write_events(5).await;
    world.assert_effects_settle_at(5).await;

    nats.stop();
    world.write_events(20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(world.unpublished().await > 0, "the outbox holds the events while NATS is down");
    assert_eq!(world.effects().await.len(), 5);

    nats.resume().await;
    world.assert_effects_settle_at(25).await;
    assert_eq!(world.unpublished().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_relays_publish_each_event_once() {
    let world = World::new().await;
    world.write_events(300).await;
    let relays: Vec<_> = (0..3).map(|_| world.relay()).collect();
    let totals: Vec<_> = relays.iter().map(Relay::totals).collect();
    let tasks: Vec<_> = relays.into_iter().map(spawn_relay).collect();
    let drained = eventually(Duration::from_secs(20), || async { world.unpublished().await == 0 }).await;
    assert!(drained);
    for (cancel, task) in tasks {
        cancel.cancel();
        task.await.unwrap();
    }
    // The stream's duplicate window would hide a second publish of one row, so count what the
    // relays themselves published: each row was taken by exactly one relay, so 300 PubAcks in
    // all, none of them for a message id JetStream already held.
    let published: Vec<u64> = totals.iter().map(|t| t.published()).collect();
    let duplicates: u64 = totals.iter().map(|t| t.duplicates()).sum();
    assert_eq!(published.iter().sum::<u64>(), 300, "PubAcks per relay: {published:?}");
    assert_eq!(duplicates, 0, "rows published more than once");
    assert_eq!(world.stream_messages().await, 300);
}

/// Fails the first `failures` deliveries of every event, then records it.
#[derive(Clone)]
struct Flaky {
    failures: usize,
    seen: Arc<AtomicUsize>,
    inner: Record,
}

impl Handler<UserCreatedV1> for Flaky {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) < self.failures {
            // Write something first: the failure must roll it back.
            self.inner.handle(conn, event).await?;
            return Err(HandlerError::Retry(anyhow::anyhow!("dependency down")));
        }
        self.inner.handle(conn, event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_with_backoff_and_its_partial_work_rolled_back() {
    let world = World::new().await;
    world.write_events(1).await;
    world.relay().relay_once().await.unwrap();
    let flaky = Flaky { failures: 2, seen: Arc::default(), inner: Record::default() };
    let started = tokio::time::Instant::now();
    let (_c, _t) = run(world.consumer(flaky.clone()));
    world.assert_effects_settle_at(1).await;
    // Three deliveries: the first fails, the second (batch retried one by one) fails and is
    // nakked with the 1 s backoff, the third succeeds.
    assert!(AtomicUsize::load(&flaky.seen, Ordering::SeqCst) >= 3);
    assert!(started.elapsed() >= Duration::from_secs(1), "the retry waited for its backoff");
}

/// Rejects events for one address; records the rest.
#[derive(Clone, Default)]
struct RejectBlocked(Record);

impl Handler<UserCreatedV1> for RejectBlocked {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        if event.payload.email == "user1@example.com" {
            return Err(HandlerError::Reject("blocked address".into()));
        }
        if event.payload.email == "user2@example.com" {
            return Err(HandlerError::Retry(anyhow::anyhow!("always down")));
        }
        self.0.handle(conn, event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_can_never_succeed_go_to_the_dead_letter_subject_with_their_reason() {
    let world = World::new().await;
    let client = async_nats::connect(world.bus.url()).await.unwrap();
    let mut dead = client.subscribe(world.bus.subjects().dead_letter(CONSUMER)).await.unwrap();
    client.flush().await.unwrap();

    world.write_events(4).await; // user1 is rejected, user2 always fails, user0 and user3 pass
    world.relay().relay_once().await.unwrap();
    // And one message that is not an event at all.
    let js = world.bus.jetstream().await;
    js.publish(world.bus.subjects().event::<UserCreatedV1>(), "not protobuf".into()).await.unwrap().await.unwrap();

    let (_c, _t) = run(world.consumer(RejectBlocked::default()));
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(20), dead.next()).await.expect("a dead letter").unwrap();
        let h = m.headers.clone().unwrap();
        let reason = h.get(headers::DEAD_LETTER_REASON).unwrap().as_str().to_owned();
        assert_eq!(h.get(headers::CONSUMER).unwrap().as_str(), CONSUMER);
        assert!(h.get(headers::ORIGINAL_SUBJECT).unwrap().as_str().ends_with("identity.user_created.v1"));
        if let Ok(env) = Envelope::decode(m.payload.as_ref()) {
            let payload = UserCreatedV1::decode(env.payload.as_slice()).unwrap();
            reasons.push(format!("{}: {reason}", payload.email));
        } else {
            reasons.push(format!("raw: {reason}"));
        }
    }
    reasons.sort();
    assert!(reasons[0].starts_with("raw: undecodable envelope"), "{reasons:?}");
    assert_eq!(reasons[1], "user1@example.com: blocked address", "{reasons:?}");
    assert!(reasons[2].starts_with("user2@example.com: gave up after 3 deliveries"), "{reasons:?}");
    world.assert_effects_settle_at(2).await;
}

/// Records the trace id the handler runs under.
#[derive(Clone, Default)]
struct TraceProbe(Arc<std::sync::Mutex<Option<String>>>);

impl Handler<UserCreatedV1> for TraceProbe {
    async fn handle(
        &self,
        _conn: &mut AsyncPgConnection,
        _event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        *self.0.lock().unwrap() = telemetry::trace_id_of(&tracing::Span::current());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_event_from_the_writer_to_the_handler() {
    let world = World::new().await;
    let span = tracing::info_span!("signup_request");
    let trace_id = telemetry::trace_id_of(&span).expect("spans carry trace context");
    async {
        let mut conn = world.identity.conn().await.unwrap();
        let event = UserCreatedV1 { email: "traced@example.com".into(), ..Default::default() };
        conn.transaction(async |c| enqueue(c, &event, None).await).await.unwrap();
    }
    .instrument(span)
    .await;
    world.relay().relay_once().await.unwrap();
    let probe = TraceProbe::default();
    let (_c, _t) = run(world.consumer(probe.clone()));
    let seen = eventually(Duration::from_secs(10), || async { probe.0.lock().unwrap().is_some() }).await;
    assert!(seen);
    assert_eq!(probe.0.lock().unwrap().clone(), Some(trace_id));
}

/// Takes its time over each event.
#[derive(Clone, Default)]
struct Slow {
    started: Arc<AtomicUsize>,
    inner: Record,
}

impl Handler<UserCreatedV1> for Slow {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.inner.handle(conn, event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_told_to_stop_finishes_and_acks_the_batch_in_hand() {
    let world = World::new().await;
    world.write_events(3).await;
    world.relay().relay_once().await.unwrap();
    let slow = Slow::default();
    let (cancel, task) = run(world.consumer(slow.clone()));
    let started =
        eventually(Duration::from_secs(10), || async { AtomicUsize::load(&slow.started, Ordering::SeqCst) > 0 }).await;
    assert!(started);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops within the bound").unwrap();
    // Every event whose handling had begun was finished and committed, not cut off.
    let effects = world.effects().await.len();
    assert!(effects >= 1);
    assert_eq!(effects, AtomicUsize::load(&slow.started, Ordering::SeqCst));
    // The next run handles the rest, and only the rest.
    let (_c, _t) = run(world.consumer(Record::default()));
    world.assert_effects_settle_at(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_while_consuming_holds_the_messages_and_loses_nothing() {
    let world = World::new().await;
    let admin = hopsbridge_testkit::admin_database_url();
    let server = admin.split_once('@').unwrap().1.split('/').next().unwrap().to_owned();
    let proxy = TcpProxy::start(&server).await;
    let mut cfg = world.db.config();
    cfg.url = format!("postgres://postgres@{}/{}", proxy.addr(), world.db.name()).into();
    cfg.acquire_timeout_secs = 1;
    let billing_behind_proxy = Database::new(&cfg, "billing").unwrap();
    let consumer =
        Consumer::new(CONSUMER, billing_behind_proxy, world.events.clone(), events_config(), Record::default());
    let (_c, _ct) = run(consumer);
    let (_r, _rt) = spawn_relay(world.relay());
    world.write_events(5).await;
    world.assert_effects_settle_at(5).await;

    proxy.cut();
    world.write_events(20).await;
    // Three times ack_wait, and longer than max_deliver x ack_wait: without the in-progress
    // acks the messages would have been redelivered until they ran out of deliveries.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(world.effects().await.len(), 5);
    proxy.restore();
    world.assert_effects_settle_at(25).await;

    let js = world.bus.jetstream().await;
    let mut dead = js.get_stream(world.bus.subjects().dead_letter_stream()).await.unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 0, "nothing was dead-lettered");
}
