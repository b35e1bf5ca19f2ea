//! billing run in-process against the real Postgres and NATS and the Stripe sandbox, with
//! requests signed as the gateway signs them and webhooks signed as Stripe signs them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code, reason = "tests")]

use diesel_async::RunQueryDsl;
use futures::StreamExt;
use hopsbridge_billing::BillingConfig;
use hopsbridge_billing::events::UserCreatedHooks;
use hopsbridge_contracts::events::{Envelope, UsageRecordedV1, UserCreatedV1};
use hopsbridge_contracts::{Event, Service};
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_sandbox::stripe::{StripeConfig, StripeSim, signature_header};
use hopsbridge_testkit::{
    GATEWAY_SIGNING_KEY, STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, TestBus, TestDb, TestSettings,
};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Fast redelivery for tests: a Retry comes back after a second.
pub const TEST_EVENTS: &str = "[events]\nbackoff_secs = [1]\nmax_deliver = 10\nack_wait_secs = 10\n";

pub struct Billing {
    pub base: String,
    pub db: TestDb,
    pub bus: TestBus,
    pub sim: StripeSim,
    pub key: CallerSigner,
    pub config: BillingConfig,
    stop: CancellationToken,
    /// One client for every webhook, as Stripe keeps its connections. (A client built per
    /// request loads its TLS roots each time; a burst of 48 failed once under load with hyper's
    /// `UnexpectedMessage`, likely a connection left unwritten past the server's 5 s request
    /// timeout, though not reproduced.)
    http: reqwest::Client,
}

impl Drop for Billing {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn start_sim() -> StripeSim {
    hopsbridge_testkit::init();
    StripeSim::start(StripeConfig { secret_key: STRIPE_SECRET_KEY.to_owned(), rate_limit: None }).unwrap()
}

/// billing's settings on the test's database, NATS prefix and Stripe sandbox (without the
/// fast redelivery of [`TEST_EVENTS`], which only an in-process service can take).
pub fn settings(db: &TestDb, bus: &TestBus, sim: &StripeSim) -> TestSettings {
    TestSettings::data_service(Service::Billing, db, bus)
        .set("stripe.api_base", sim.url())
        .set("stripe.secret_key", STRIPE_SECRET_KEY)
        .set("stripe.webhook_secret", STRIPE_WEBHOOK_SECRET)
        .set("checkout.success_url", "https://app.hopsbridge.test/billing?done={CHECKOUT_SESSION_ID}")
        .set("checkout.cancel_url", "https://app.hopsbridge.test/billing?cancelled")
        .set("portal.return_url", "https://app.hopsbridge.test/billing")
}

pub fn config(db: &TestDb, bus: &TestBus, sim: &StripeSim) -> BillingConfig {
    let settings = settings(db, bus, sim).set("http.workers", "2").layer(TEST_EVENTS);
    // Named in full: diesel-async's `load` is in scope too.
    TestSettings::load(&settings, &hopsbridge_billing::DEFAULTS)
}

pub async fn start() -> Billing {
    start_with(UserCreatedHooks::default()).await
}

pub async fn start_with(hooks: UserCreatedHooks) -> Billing {
    start_adjusted(hooks, |s| s).await
}

/// [`start_with`], with `adjust` applied to the settings.
pub async fn start_adjusted(hooks: UserCreatedHooks, adjust: impl FnOnce(TestSettings) -> TestSettings) -> Billing {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let sim = start_sim();
    let settings = adjust(settings(&db, &bus, &sim).set("http.workers", "2").layer(TEST_EVENTS));
    let config: BillingConfig = TestSettings::load(&settings, &hopsbridge_billing::DEFAULTS);
    let app = hopsbridge_billing::build_with_hooks(config.clone(), hooks).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    Billing { base, db, bus, sim, key, config, stop, http: reqwest::Client::new() }
}

pub fn caller(user: Uuid, roles: &[Role]) -> Caller {
    Caller {
        subject: format!("auth0|{}", user.simple()),
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: Some(user.into()),
        roles: roles.to_vec(),
        email: hopsbridge_domain::Email::parse(&format!("{}@example.com", user.simple())).ok(),
    }
}

#[derive(diesel::QueryableByName, Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub billing_mode: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub stripe_customer_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub stripe_subscription_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub subscription_status: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

pub async fn account(db: &TestDb, user: Uuid) -> Option<AccountRow> {
    let mut conn = db.connect("billing").await;
    diesel::sql_query(
        "SELECT billing_mode, stripe_customer_id, stripe_subscription_id, subscription_status FROM accounts WHERE user_id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(user)
    .get_result(&mut conn)
    .await
    .ok()
}

pub async fn count(db: &TestDb, sql: &str) -> i64 {
    let mut conn = db.connect("billing").await;
    diesel::sql_query(format!("SELECT count(*) AS n FROM {sql}")).get_result::<Count>(&mut conn).await.unwrap().n
}

pub async fn sql(db: &TestDb, statement: &str) {
    let mut conn = db.connect("billing").await;
    diesel::sql_query(statement).execute(&mut conn).await.unwrap();
}

/// A UserCreatedV1 as identity's relay publishes it (`Nats-Msg-Id` is given separately, so a
/// test can make JetStream store the same event twice).
pub async fn publish_user_created(bus: &TestBus, event_id: Uuid, msg_id: &str, payload: &UserCreatedV1) {
    let envelope = Envelope {
        event_id: event_id.to_string(),
        event_type: UserCreatedV1::TYPE.into(),
        schema_version: 1,
        producer: "identity".into(),
        payload: payload.encode_to_vec(),
        occurred_at_unix_micros: chrono::Utc::now().timestamp_micros(),
        ..Default::default()
    };
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(envelope.encode_to_vec().into())
        .message_id(msg_id);
    bus.jetstream().await.send_publish(bus.subjects().event::<UserCreatedV1>(), message).await.unwrap().await.unwrap();
}

pub fn person(user: Uuid) -> UserCreatedV1 {
    UserCreatedV1 {
        user_id: user.to_string(),
        auth_subject: format!("auth0|{}", user.simple()),
        email: format!("{}@example.com", user.simple()),
        name: "Ada Lovelace".into(),
    }
}

/// Raw GET on the sandbox's API (for checks the inspection methods do not cover).
pub async fn stripe_get(sim: &StripeSim, path_and_query: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/v1/{path_and_query}", sim.url()))
        .bearer_auth(STRIPE_SECRET_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A raw form request on the sandbox's API (a POST or DELETE the service did not make, as
/// someone in Stripe's dashboard would act): the status and the body.
pub async fn stripe_send(sim: &StripeSim, method: Method, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, format!("{}/v1/{path}", sim.url()))
        .bearer_auth(STRIPE_SECRET_KEY)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Waits until the service has found or created its meters and prices.
pub async fn catalog_ready(sim: &StripeSim) {
    let ready = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        stripe_get(sim, "prices?lookup_keys[0]=hopsbridge_gpu_hour_v1").await["data"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    })
    .await;
    assert!(ready, "billing created its prices");
}

impl Billing {
    /// A running service's handle from its parts (a test that starts the service itself).
    pub fn assemble(
        base: String,
        db: TestDb,
        bus: TestBus,
        sim: StripeSim,
        key: CallerSigner,
        config: BillingConfig,
        stop: CancellationToken,
    ) -> Self {
        Self { base, db, bus, sim, key, config, stop, http: reqwest::Client::new() }
    }

    pub async fn call(&self, method: Method, path: &str, caller: Option<&Caller>) -> (StatusCode, Value) {
        hopsbridge_testkit::signed_call(&self.key, &self.base, method, path, caller, None).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        caller: Option<&Caller>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        hopsbridge_testkit::signed_call(&self.key, &self.base, method, path, caller, body).await
    }

    /// Posts a webhook body with the given `Stripe-Signature` (none when `None`).
    pub async fn webhook_raw(&self, body: &str, signature: Option<String>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/webhooks/stripe", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(s) = signature {
            request = request.header("stripe-signature", s);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts a webhook body signed with the endpoint secret, now.
    pub async fn webhook(&self, body: &str) -> (StatusCode, Value) {
        let signature = signature_header(body, STRIPE_WEBHOOK_SECRET, chrono::Utc::now().timestamp());
        self.webhook_raw(body, Some(signature)).await
    }

    /// Opens the account of a new person through the real consumer and waits for its
    /// subscription.
    pub async fn new_owner(&self) -> (Uuid, AccountRow) {
        let user = Uuid::now_v7();
        let event = Uuid::now_v7();
        publish_user_created(&self.bus, event, &event.to_string(), &person(user)).await;
        let ready = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
            account(&self.db, user).await.is_some_and(|a| a.stripe_subscription_id.is_some())
        })
        .await;
        assert!(ready, "the account was opened");
        (user, account(&self.db, user).await.unwrap())
    }

    /// Lets Stripe's own deliveries reach the service.
    pub fn deliver_webhooks(&self) {
        self.sim.add_webhook_endpoint(&format!("{}/webhooks/stripe", self.base), STRIPE_WEBHOOK_SECRET);
    }

    /// How many events of `event_type` are in billing's outbox.
    pub async fn outbox(&self, event_type: &str) -> i64 {
        count(&self.db, &format!("outbox WHERE event_type = '{event_type}'")).await
    }
}

/// Every message on `subject` in the billing stream of `bus`, read by an ephemeral consumer.
pub async fn published(bus: &TestBus, subject: &str) -> Vec<async_nats::jetstream::Message> {
    let js = bus.jetstream().await;
    let stream = js.get_stream(bus.subjects().stream(Service::Billing)).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: subject.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(100).expires(Duration::from_secs(1)).messages().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        out.push(m.unwrap());
    }
    out
}

/// A sample of `cores` cores, `gib` GiB and `gpus` GPUs for `secs` seconds from `start`.
pub fn usage(owner: Uuid, user: Uuid, start: i64, secs: i64, (cores, gib, gpus): (u64, u64, u64)) -> UsageRecordedV1 {
    let s = u64::try_from(secs).unwrap();
    UsageRecordedV1 {
        sample_id: Uuid::now_v7().to_string(),
        cluster_id: Uuid::from_u128(7).to_string(),
        namespace: "lab".into(),
        user_id: user.to_string(),
        owner_user_id: owner.to_string(),
        window_start_unix_seconds: start,
        window_end_unix_seconds: start + secs,
        project_id: 42,
        cpu_nanocore_seconds: cores * 1_000_000_000 * s,
        memory_byte_seconds: (gib << 30) * s,
        gpu_seconds: gpus * s,
        ..Default::default()
    }
}

/// Publishes each event as metering's relay does, with `Nats-Msg-Id` = event id.
pub async fn publish_usage(bus: &TestBus, events: &[(Uuid, UsageRecordedV1)]) {
    publish_metering(bus, events).await;
}

/// Publishes each of metering's events as its relay does, with `Nats-Msg-Id` = event id.
pub async fn publish_metering<E: Event>(bus: &TestBus, events: &[(Uuid, E)]) {
    let js = bus.jetstream().await;
    let mut acks = Vec::with_capacity(events.len());
    for (id, e) in events {
        let envelope = Envelope {
            event_id: id.to_string(),
            event_type: E::TYPE.into(),
            schema_version: 1,
            producer: "metering".into(),
            payload: e.encode_to_vec(),
            occurred_at_unix_micros: chrono::Utc::now().timestamp_micros(),
            ..Default::default()
        };
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(envelope.encode_to_vec().into())
            .message_id(id.to_string());
        acks.push(js.send_publish(bus.subjects().event::<E>(), message).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
}
