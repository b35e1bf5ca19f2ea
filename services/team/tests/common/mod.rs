//! team on the real Postgres and NATS with the sandbox's mail catcher, called as the gateway
//! calls it (signed caller headers), told of people, accounts and usage by events on the bus
//! as identity, provisioning and metering publish them.

#![allow(dead_code, reason = "each test binary uses part of the harness")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use futures::StreamExt as _;
use hopsbridge_contracts::events::{Envelope, UserCreatedV1};
use hopsbridge_contracts::{Event, Service};
use hopsbridge_domain::{Email, UserId};
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_sandbox::mail::{MailSim, Message};
use hopsbridge_team::TeamConfig;
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the console's links point in these tests.
pub const PUBLIC_BASE_URL: &str = "https://app.hopsbridge.test";

/// The terms version team is configured with.
pub const TERMS: &str = "2026-12-01";

pub struct Team {
    pub base: String,
    pub db: TestDb,
    pub bus: TestBus,
    pub mail: MailSim,
    pub key: CallerSigner,
    stop: CancellationToken,
}

impl Drop for Team {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// team with its mail going to a fresh catcher, retried after a second when SMTP fails.
pub async fn start() -> Team {
    start_on(&hopsbridge_testkit::nats_url()).await
}

/// [`start`], reaching NATS at `nats_url` (a link a test can cut, say).
pub async fn start_on(nats_url: &str) -> Team {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let mail = MailSim::start().unwrap();
    let (base, stop) = launch(&db, &bus, &mail, nats_url).await;
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    Team { base, db, bus, mail, key, stop }
}

async fn launch(db: &TestDb, bus: &TestBus, mail: &MailSim, nats_url: &str) -> (String, CancellationToken) {
    let config: TeamConfig = TestSettings::data_service(Service::Team, db, bus)
        .set("nats.url", nats_url)
        .set("http.workers", "2")
        .set("shutdown.timeout_secs", "2")
        .set("mail.smtp_url", mail.smtp_url())
        .set("mail.public_base_url", PUBLIC_BASE_URL)
        .set("mail.poll_interval_ms", "100")
        .set("mail.backoff_initial_secs", "1")
        .set("mail.backoff_max_secs", "1")
        .set("mail.timeout_secs", "2")
        .set("terms.version", TERMS)
        .load(&hopsbridge_team::DEFAULTS);
    let app = hopsbridge_team::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    (base, stop)
}

/// An invitation as the owner got it: its id, its link and the token in the link.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub link: String,
    pub token: String,
}

/// The accept body with the current terms.
pub fn terms() -> Value {
    json!({"accept_terms": true, "terms_version": TERMS})
}

impl Team {
    /// Stops this instance, as a crash would leave its tables, and starts another on the same
    /// database and stream prefix, reaching NATS at `nats_url`.
    pub async fn restart(&mut self, nats_url: &str) {
        self.stop.cancel();
        let (base, stop) = launch(&self.db, &self.bus, &self.mail, nats_url).await;
        (self.base, self.stop) = (base, stop);
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        caller: Option<&Caller>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        hopsbridge_testkit::signed_call(&self.key, &self.base, method, path, caller, body).await
    }

    /// A person identity created (its `UserCreatedV1` consumed), signed in as the gateway
    /// forwards them (the roles the gateway would send an owner).
    pub async fn person(&self, name: &str, email: &str) -> Caller {
        let id = UserId::new();
        let created = UserCreatedV1 {
            user_id: id.to_string(),
            auth_subject: format!("auth0|{name}"),
            email: email.to_owned(),
            name: name.to_owned(),
        };
        self.bus.publish(&created, None).await;
        let known = eventually(Duration::from_secs(20), || async {
            self.count(&format!("SELECT count(*) AS n FROM people WHERE id = '{id}' AND email IS NOT NULL")).await == 1
        })
        .await;
        assert!(known, "team learnt of {name}");
        Caller {
            subject: format!("auth0|{name}"),
            issuer: Some("https://tenant.hopsbridge.test/".into()),
            user_id: Some(id),
            roles: vec![Role::User, Role::Owner],
            email: Some(Email::parse(email).unwrap()),
        }
    }

    /// `owner` invites `email` with `role`; the answer must be 201.
    pub async fn invite(&self, owner: &Caller, email: &str, role: &str) -> Sent {
        let body = json!({"email": email, "project_role": role});
        let (status, answer) = self.call(Method::POST, "/api/team/invitations", Some(owner), Some(body)).await;
        assert_eq!(status, 201, "{answer}");
        sent(&answer)
    }

    /// Accepts `token` as `member` with the current terms.
    pub async fn accept(&self, member: &Caller, token: &str) -> (StatusCode, Value) {
        self.call(Method::POST, &format!("/api/invitations/{token}/accept"), Some(member), Some(terms())).await
    }

    /// The preview of `token`, asked without signing in.
    pub async fn preview(&self, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/api/invitations/{token}"), None, None).await
    }

    /// `invite` then `accept`: `member` joins `owner`'s team.
    pub async fn join(&self, owner: &Caller, member: &Caller, role: &str) -> Value {
        let email = member.email.as_ref().unwrap().to_string();
        let sent = self.invite(owner, &email, role).await;
        let (status, body) = self.accept(member, &sent.token).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A count from team's schema (`SELECT count(*) AS n …`).
    pub async fn count(&self, query: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.connect("team").await;
        diesel::sql_query(query).get_result::<N>(&mut conn).await.unwrap().n
    }

    /// One text value from team's schema (`SELECT … AS v`).
    pub async fn text(&self, query: &str) -> String {
        #[derive(diesel::QueryableByName)]
        struct V {
            #[diesel(sql_type = diesel::sql_types::Text)]
            v: String,
        }
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.connect("team").await;
        diesel::sql_query(query).get_result::<V>(&mut conn).await.unwrap().v
    }

    pub async fn sql(&self, statement: &str) {
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.connect("team").await;
        diesel::sql_query(statement).execute(&mut conn).await.unwrap();
    }

    /// Everything a refused request must leave as it was: every invitation's state and token,
    /// every membership, the mails and the events.
    pub async fn snapshot(&self) -> String {
        self.text(
            "SELECT concat_ws(' | ',
                (SELECT string_agg(concat_ws(',', id, status, sends, encode(token_hash, 'hex'), expires_at, accepted_by), ';' ORDER BY id) FROM invitations),
                (SELECT string_agg(concat_ws(',', id, member_user_id, owner_user_id, removed_at, removal_reason), ';' ORDER BY id) FROM memberships),
                (SELECT string_agg(id::text, ';' ORDER BY id) FROM mail_outbox),
                (SELECT string_agg(id::text, ';' ORDER BY id) FROM outbox),
                (SELECT string_agg(concat_ws(',', id, email, status), ';' ORDER BY id) FROM people)) AS v",
        )
        .await
    }

    /// How many messages of `E` are on team's stream.
    pub async fn published<E: Event>(&self) -> usize {
        let js = self.bus.jetstream().await;
        let Ok(stream) = js.get_stream(self.bus.subjects().stream(E::PRODUCER)).await else {
            return 0;
        };
        let subject = self.bus.subjects().event::<E>();
        let counts: Vec<(String, usize)> =
            stream.info_with_subjects(&subject).await.unwrap().filter_map(|r| async move { r.ok() }).collect().await;
        counts.into_iter().filter(|(s, _)| *s == subject).map(|(_, n)| n).sum()
    }

    /// Waits until exactly `want` messages of `E` are on the stream, and checks that no more
    /// arrive for a moment (a duplicate would).
    pub async fn published_exactly<E: Event>(&self, want: usize) {
        let reached = eventually(Duration::from_secs(20), || async { self.published::<E>().await >= want }).await;
        assert!(reached, "only {} {} published, {want} wanted", self.published::<E>().await, E::TYPE);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(self.published::<E>().await, want, "{} published more than once", E::TYPE);
    }

    /// The payloads of `E` on the stream, oldest first.
    pub async fn payloads<E: Event>(&self) -> Vec<E> {
        use prost::Message as _;
        let js = self.bus.jetstream().await;
        let stream = js.get_stream(self.bus.subjects().stream(E::PRODUCER)).await.unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                filter_subject: self.bus.subjects().event::<E>(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch =
            consumer.fetch().max_messages(100).expires(Duration::from_millis(500)).messages().await.unwrap();
        let mut out = Vec::new();
        while let Some(Ok(message)) = batch.next().await {
            let envelope = Envelope::decode(message.payload.as_ref()).unwrap();
            out.push(E::decode(envelope.payload.as_slice()).unwrap());
        }
        out
    }

    /// Publishes `event` as its producer would, saying it happened at `occurred_at_micros`.
    pub async fn publish_at<E: Event>(&self, event: &E, occurred_at_micros: i64) {
        use prost::Message as _;
        let id = uuid::Uuid::now_v7().to_string();
        let envelope = Envelope {
            event_id: id.clone(),
            event_type: E::TYPE.into(),
            schema_version: E::VERSION,
            occurred_at_unix_micros: occurred_at_micros,
            producer: E::PRODUCER.name().into(),
            payload: event.encode_to_vec(),
            ..Default::default()
        };
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(envelope.encode_to_vec().into())
            .message_id(id);
        let js = self.bus.jetstream().await;
        js.send_publish(self.bus.subjects().event::<E>(), message).await.unwrap().await.unwrap();
    }

    /// Waits until `address` has received `n` mails, and answers them.
    pub async fn mails_to(&self, address: &str, n: usize) -> Vec<Message> {
        let arrived = eventually(Duration::from_secs(20), || async { self.mail.messages_to(address).len() >= n }).await;
        assert!(arrived, "{} of {n} mails to {address}", self.mail.messages_to(address).len());
        self.mail.messages_to(address)
    }
}

/// The invitation in a create or resend answer.
pub fn sent(answer: &Value) -> Sent {
    let link = answer["link"].as_str().unwrap().to_owned();
    let token = link.strip_prefix(&format!("{PUBLIC_BASE_URL}/invitations/")).unwrap().to_owned();
    Sent { id: answer["invitation"]["id"].as_str().unwrap().to_owned(), link, token }
}
