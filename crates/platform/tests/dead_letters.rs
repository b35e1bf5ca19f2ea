//! Dead letters against the real Postgres and NATS: a consumer's give-ups are kept with their
//! reason, admins list them, and a replay after the fix applies each event exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use actix_web::{App, test, web};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::Event;
use hopsbridge_contracts::events::{Envelope, UserCreatedV1};
use hopsbridge_domain::Email;
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_platform::config::EventsConfig;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::events::consumer::prune_inbox;
use hopsbridge_platform::events::{
    Consumer, EventBus, Handler, HandlerError, ReceivedEvent, Replayers, configure_dead_letter_routes,
};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, eventually};
use prost::Message as _;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

const CONSUMER: &str = "billing-user_created";
const TYPE: &str = "UserCreatedV1";

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

/// Until `fixed`, rejects `poison@…` and fails `flaky@…` as if a dependency were down; applies
/// everything else (and, once fixed, those too) into `effects`.
#[derive(Clone, Default)]
struct Flaky {
    fixed: Arc<AtomicBool>,
}

impl Handler<UserCreatedV1> for Flaky {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        let fixed = AtomicBool::load(&self.fixed, Ordering::SeqCst);
        if !fixed && event.payload.email.starts_with("poison@") {
            return Err(HandlerError::Reject("blocked address".to_owned()));
        }
        if !fixed && event.payload.email.starts_with("flaky@") {
            return Err(HandlerError::Retry(anyhow::anyhow!("directory down")));
        }
        diesel::sql_query("INSERT INTO effects (event_id, email) VALUES ($1, $2)")
            .bind::<diesel::sql_types::Uuid, _>(event.id.as_uuid())
            .bind::<diesel::sql_types::Text, _>(&event.payload.email)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// billing consumes UserCreatedV1 with [`Flaky`]; its admin dead-letter routes run in process.
struct World {
    _db: TestDb,
    bus: TestBus,
    billing: Database,
    handler: Flaky,
    replayers: Replayers,
    key: CallerSigner,
    /// Stops the consumer with the world.
    _stop: DropGuard,
}

impl World {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let bus = TestBus::new().await;
        let mut conn = db.connect("billing").await;
        diesel::sql_query("CREATE TABLE effects (event_id uuid NOT NULL, email text NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        let billing = Database::new(&db.config(), "billing").unwrap();
        let events = EventBus::connect(&bus.config(), hopsbridge_contracts::Service::Billing).await.unwrap();
        events.ensure_streams().await.unwrap();
        let handler = Flaky::default();
        let consumer = Consumer::new(CONSUMER, billing.clone(), events.clone(), events_config(), handler.clone());
        let replayers = Replayers::default();
        replayers.register(&consumer);
        let stop = CancellationToken::new();
        tokio::spawn(consumer.run(stop.clone()));
        let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
        Self { _db: db, bus, billing, handler, replayers, key, _stop: stop.drop_guard() }
    }

    async fn publish(&self, email: &str) -> String {
        let event = UserCreatedV1 { user_id: email.to_owned(), email: email.to_owned(), ..Default::default() };
        self.bus.publish(&event, None).await
    }

    /// Publishes the event `id` again under another message id, as a producer that wrote it
    /// twice would (past JetStream's duplicate window).
    async fn publish_again(&self, id: &str, email: &str) {
        let event = UserCreatedV1 { user_id: email.to_owned(), email: email.to_owned(), ..Default::default() };
        let envelope = Envelope {
            event_id: id.to_owned(),
            event_type: UserCreatedV1::TYPE.into(),
            schema_version: 1,
            producer: "identity".into(),
            payload: event.encode_to_vec(),
            ..Default::default()
        };
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(envelope.encode_to_vec().into())
            .message_id(format!("{id}:again"));
        let js = self.bus.jetstream().await;
        js.send_publish(self.bus.subjects().event::<UserCreatedV1>(), message).await.unwrap().await.unwrap();
    }

    async fn inbox_has(&self, event_id: &str) -> bool {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.billing.conn().await.unwrap();
        diesel::sql_query("SELECT count(*) AS n FROM inbox WHERE event_id = $1::uuid")
            .bind::<diesel::sql_types::Text, _>(event_id)
            .get_result::<Count>(&mut conn)
            .await
            .unwrap()
            .n
            > 0
    }

    async fn effects(&self) -> Vec<String> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            email: String,
        }
        let mut conn = self.billing.conn().await.unwrap();
        diesel::sql_query("SELECT email FROM effects ORDER BY email")
            .load::<Row>(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.email)
            .collect()
    }

    /// Calls billing's dead-letter routes as a caller with `roles`; answers the status and the
    /// JSON body.
    async fn call(&self, method: &str, path: &str, roles: Vec<Role>) -> (u16, Value) {
        self.call_with(&self.replayers, method, path, roles).await
    }

    /// [`World::call`] on routes that replay with `replayers`.
    async fn call_with(&self, replayers: &Replayers, method: &str, path: &str, roles: Vec<Role>) -> (u16, Value) {
        let (db, replayers) = (self.billing.clone(), replayers.clone());
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(hopsbridge_testkit::caller_verifier()))
                .wrap(actix_web::middleware::from_fn(hopsbridge_platform::http::hash_body))
                .configure(move |c| configure_dead_letter_routes(c, "billing", db.clone(), replayers.clone())),
        )
        .await;
        let caller = Caller {
            subject: "auth0|someone".to_owned(),
            issuer: Some("https://tenant.hopsbridge.test/".into()),
            user_id: Some(hopsbridge_domain::UserId::new()),
            roles,
            email: Email::parse("someone@hopsbridge.test").ok(),
        };
        let mut req = if method == "GET" { test::TestRequest::get() } else { test::TestRequest::post() }.uri(path);
        for (name, value) in self.key.sign(method, path, &caller, chrono::Utc::now().timestamp()) {
            req = req.insert_header((name, value));
        }
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status().as_u16();
        let body = test::read_body(res).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

const ADMIN: fn() -> Vec<Role> = || vec![Role::User, Role::Admin];
const MACHINE_ADMIN: fn() -> Vec<Role> = || vec![Role::Admin];
const USER: fn() -> Vec<Role> = || vec![Role::User, Role::Owner];

fn by_email<'a>(items: &'a [Value], world_ids: &[(String, &str)], email: &str) -> &'a Value {
    let id = &world_ids.iter().find(|(_, e)| *e == email).unwrap().0;
    items.iter().find(|i| i["event_id"] == id.as_str()).unwrap_or_else(|| panic!("no dead letter of {email}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_listed_with_their_reason_and_replayed_once_after_the_fix() {
    let w = World::new().await;
    let mut ids = Vec::new();
    for email in ["ok@example.com", "poison@example.com", "flaky@example.com", "poison@other.example.com"] {
        ids.push((w.publish(email).await, email));
    }
    let js = w.bus.jetstream().await;
    js.publish(w.bus.subjects().event::<UserCreatedV1>(), "not protobuf".into()).await.unwrap().await.unwrap();

    // Two rejected at once, one given up after its deliveries, one not an event at all.
    let listed = eventually(Duration::from_secs(30), || async {
        w.call("GET", "/api/admin/dead-letters/billing", MACHINE_ADMIN()).await.1["total"] == 4
    })
    .await;
    assert!(listed, "four dead letters");
    assert_eq!(w.effects().await, ["ok@example.com"]);

    let (status, page) = w.call("GET", "/api/admin/dead-letters/billing", ADMIN()).await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().unwrap();
    let poison = by_email(items, &ids, "poison@example.com");
    assert_eq!(poison["reason"], "blocked address");
    assert_eq!(poison["event_type"], TYPE);
    assert_eq!(poison["consumer"], CONSUMER);
    assert_eq!(poison["deliveries"], 1);
    assert!(poison["subject"].as_str().unwrap().ends_with("identity.user_created.v1"));
    assert_eq!(poison["replayed_at"], Value::Null);
    assert_eq!(poison["replay_outcome"], Value::Null);
    assert!(poison.get("body").is_none(), "the message body is not listed");
    let flaky = by_email(items, &ids, "flaky@example.com");
    assert!(flaky["reason"].as_str().unwrap().starts_with("gave up after 3 deliveries"), "{flaky}");
    assert_eq!(flaky["deliveries"], 3);
    let raw = items.iter().find(|i| i["event_id"].is_null()).unwrap();
    assert!(raw["reason"].as_str().unwrap().starts_with("undecodable envelope"), "{raw}");
    assert_eq!(raw["event_type"], Value::Null);
    // Newest failure first.
    let times: Vec<&str> = items.iter().map(|i| i["last_failed_at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|p| p[0] >= p[1]), "{times:?}");
    let (poison_id, flaky_id, raw_id) = (
        poison["id"].as_str().unwrap().to_owned(),
        flaky["id"].as_str().unwrap().to_owned(),
        raw["id"].as_str().unwrap().to_owned(),
    );

    // One of them, and filtered lists.
    let (status, one) = w.call("GET", &format!("/api/admin/dead-letters/billing/{poison_id}"), ADMIN()).await;
    assert_eq!((status, one["reason"].as_str()), (200, Some("blocked address")));
    let (_, page) =
        w.call("GET", "/api/admin/dead-letters/billing?event_type=UserCreatedV1&status=waiting", ADMIN()).await;
    assert_eq!(page["total"], 3);
    let (status, _) = w.call("GET", "/api/admin/dead-letters/billing?limit=0", ADMIN()).await;
    assert_eq!(status, 400);

    // Replayed before the fix: it fails again and waits with the new reason.
    let replay = format!("/api/admin/dead-letters/billing/{poison_id}/replay");
    let (status, answer) = w.call("POST", &replay, ADMIN()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["outcome"], "failed");
    assert_eq!(answer["dead_letter"]["replays"], 1);
    assert_eq!(answer["dead_letter"]["replay_outcome"], "failed");
    assert_eq!(answer["dead_letter"]["replayed_at"], Value::Null);
    let (_, flaky_answer) =
        w.call("POST", &format!("/api/admin/dead-letters/billing/{flaky_id}/replay"), ADMIN()).await;
    assert_eq!(flaky_answer["outcome"], "failed");
    assert_eq!(flaky_answer["dead_letter"]["reason"], "replay failed: directory down");
    assert_eq!(w.effects().await, ["ok@example.com"]);

    w.handler.fixed.store(true, Ordering::SeqCst);

    // Nobody but an admin replays or reads, and their attempt changes nothing.
    for (method, path) in [
        ("POST", replay.clone()),
        ("POST", "/api/admin/dead-letters/billing/replay".to_owned()),
        ("GET", "/api/admin/dead-letters/billing".to_owned()),
        ("GET", format!("/api/admin/dead-letters/billing/{poison_id}")),
    ] {
        let (status, body) = w.call(method, &path, USER()).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("admin_only")), "{method} {path}");
    }
    assert_eq!(w.effects().await, ["ok@example.com"]);
    let (_, unchanged) = w.call("GET", &format!("/api/admin/dead-letters/billing/{poison_id}"), ADMIN()).await;
    assert_eq!(unchanged["replays"], 1);

    // After the fix: applied once, however often it is replayed.
    let (status, answer) = w.call("POST", &replay, MACHINE_ADMIN()).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")), "{answer}");
    let replayed_at = answer["dead_letter"]["replayed_at"].clone();
    assert!(replayed_at.is_string());
    let (_, again) = w.call("POST", &replay, ADMIN()).await;
    assert_eq!(again["outcome"], "already_applied");
    assert_eq!(again["dead_letter"]["replay_outcome"], "applied", "what resolved it is kept");
    assert_eq!(again["dead_letter"]["replayed_at"], replayed_at);
    assert_eq!(again["dead_letter"]["replays"], 3);
    assert_eq!(w.effects().await, ["ok@example.com", "poison@example.com"]);

    // Inbox records are pruned, but not those of dead-lettered events: a replay long after still
    // applies nothing.
    assert!(w.inbox_has(&ids[0].0).await, "ok@example.com was handled");
    prune_inbox(&w.billing, Duration::ZERO).await.unwrap();
    assert!(!w.inbox_has(&ids[0].0).await, "pruned");
    assert!(w.inbox_has(&ids[1].0).await, "kept for poison@example.com's dead letter");
    let (_, again) = w.call("POST", &replay, ADMIN()).await;
    assert_eq!(again["outcome"], "already_applied");
    assert_eq!(w.effects().await, ["ok@example.com", "poison@example.com"]);

    // All the waiting ones of a type; the message that is no event fails again.
    let (status, summary) =
        w.call("POST", "/api/admin/dead-letters/billing/replay?event_type=UserCreatedV1", ADMIN()).await;
    assert_eq!(status, 200);
    assert_eq!((summary["applied"].as_u64(), summary["already_applied"].as_u64()), (Some(2), Some(0)), "{summary}");
    assert_eq!(summary["failed"], serde_json::json!([]));
    assert_eq!(summary["remaining"], 0);
    let (_, summary) = w.call("POST", "/api/admin/dead-letters/billing/replay", ADMIN()).await;
    assert_eq!(summary["applied"], 0);
    assert_eq!(summary["failed"], serde_json::json!([raw_id]));
    let (_, summary) = w.call("POST", "/api/admin/dead-letters/billing/replay?limit=0", ADMIN()).await;
    assert_eq!(summary["code"], "invalid_replay_limit");
    assert_eq!(
        w.effects().await,
        ["flaky@example.com", "ok@example.com", "poison@example.com", "poison@other.example.com"]
    );
    let (_, page) = w.call("GET", "/api/admin/dead-letters/billing?status=waiting", ADMIN()).await;
    assert_eq!(page["total"], 1, "only the message that is no event waits");

    // Unknown ids.
    let unknown = uuid::Uuid::now_v7();
    for (method, path) in [
        ("GET", format!("/api/admin/dead-letters/billing/{unknown}")),
        ("POST", format!("/api/admin/dead-letters/billing/{unknown}/replay")),
    ] {
        let (status, body) = w.call(method, &path, ADMIN()).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("dead_letter_not_found")), "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_arrives_again_and_its_replay_apply_it_once_in_either_order() {
    let w = World::new().await;
    let first = w.publish("poison@example.com").await;
    let second = w.publish("poison@other.example.com").await;
    let listed = eventually(Duration::from_secs(20), || async {
        w.call("GET", "/api/admin/dead-letters/billing", ADMIN()).await.1["total"] == 2
    })
    .await;
    assert!(listed);
    let (_, page) = w.call("GET", "/api/admin/dead-letters/billing", ADMIN()).await;
    let id_of = |event: &str| {
        page["items"].as_array().unwrap().iter().find(|i| i["event_id"] == event).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (first_letter, second_letter) = (id_of(&first), id_of(&second));
    w.handler.fixed.store(true, Ordering::SeqCst);

    // The first arrives again and is handled; its replay then finds it in the inbox.
    w.publish_again(&first, "poison@example.com").await;
    assert!(eventually(Duration::from_secs(10), || async { w.effects().await.len() == 1 }).await);
    let (_, answer) = w.call("POST", &format!("/api/admin/dead-letters/billing/{first_letter}/replay"), ADMIN()).await;
    assert_eq!(answer["outcome"], "already_applied", "{answer}");

    // The second is replayed; when it arrives again the inbox drops it.
    let (_, answer) = w.call("POST", &format!("/api/admin/dead-letters/billing/{second_letter}/replay"), ADMIN()).await;
    assert_eq!(answer["outcome"], "applied", "{answer}");
    w.publish_again(&second, "poison@other.example.com").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.effects().await, ["poison@example.com", "poison@other.example.com"]);
    let js = w.bus.jetstream().await;
    let mut stream = js.get_stream(w.bus.subjects().dead_letter_stream()).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2, "the dead-letter stream still has its copies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_consumer_no_longer_runs_is_refused_and_left_waiting() {
    let w = World::new().await;
    w.publish("poison@example.com").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            w.call("GET", "/api/admin/dead-letters/billing", ADMIN()).await.1["total"] == 1
        })
        .await
    );
    let (_, page) = w.call("GET", "/api/admin/dead-letters/billing", ADMIN()).await;
    let id = page["items"][0]["id"].as_str().unwrap().to_owned();
    let nobody = Replayers::default();
    let (status, body) =
        w.call_with(&nobody, "POST", &format!("/api/admin/dead-letters/billing/{id}/replay"), ADMIN()).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("dead_letter_consumer_not_running")));
    let (_, summary) = w.call_with(&nobody, "POST", "/api/admin/dead-letters/billing/replay", ADMIN()).await;
    assert_eq!(summary["consumer_not_running"], serde_json::json!([id]));
    assert_eq!(summary["remaining"], 0);
    let (_, one) = w.call("GET", &format!("/api/admin/dead-letters/billing/{id}"), ADMIN()).await;
    assert_eq!((one["replays"].as_u64(), one["replayed_at"].is_null()), (Some(0), true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_persons_own_creation_and_messages_holding_their_address_are_deleted_and_others_stay() {
    let w = World::new().await;
    let (erased, other) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    // The erased person's own UserCreated and another person's, both rejected; a message that is
    // no event but holds the erased person's address (in other letters' case).
    for (user, email) in [(erased, "poison@erased.example"), (other, "poison@other.example")] {
        let event = UserCreatedV1 { user_id: user.to_string(), email: email.to_owned(), ..Default::default() };
        w.bus.publish(&event, None).await;
    }
    let js = w.bus.jetstream().await;
    let unreadable = "not protobuf, about Mention@Erased.example".to_owned().into_bytes();
    js.publish(w.bus.subjects().event::<UserCreatedV1>(), unreadable.into()).await.unwrap().await.unwrap();
    let listed = eventually(Duration::from_secs(30), || async {
        w.call("GET", "/api/admin/dead-letters/billing", MACHINE_ADMIN()).await.1["total"] == 3
    })
    .await;
    assert!(listed, "three dead letters");

    let mut conn = w.billing.conn().await.unwrap();
    let erase = hopsbridge_platform::events::dead_letters::erase_carrying;
    assert_eq!(erase(&mut conn, erased, &["mention@erased.example"]).await.unwrap(), 2);
    assert_eq!(erase(&mut conn, erased, &["mention@erased.example"]).await.unwrap(), 0, "nothing more the second time");
    let (_, page) = w.call("GET", "/api/admin/dead-letters/billing", ADMIN()).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["event_type"], TYPE);
    // What stays is the other person's: erasing by their id alone takes it.
    assert_eq!(erase(&mut conn, other, &[]).await.unwrap(), 1);
}
