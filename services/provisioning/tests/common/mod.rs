//! provisioning in process against the real Postgres and NATS, with clusters played by the
//! Hopsworks sandbox: start it, call it as the gateway would, publish what other services
//! announce, and read its tables and outbox.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Event;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::{
    Envelope, PaymentMethodAddedV1, TeamMemberJoinedV1, TeamMemberRemovedV1, UserCreatedV1,
};
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_provisioning::ProvisioningConfig;
use hopsbridge_sandbox::hopsworks::{HopsworksConfig, HopsworksSim};
use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::{SimClock, Workload};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, PROVISIONING_ENCRYPTION_KEYS, TestBus, TestDb, TestSettings};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const CLIENT_ID: &str = "hopsbridge-oauth-client";
pub const WAIT: Duration = Duration::from_secs(30);

/// A kubeconfig no API server answers: for refusals decided before any request is made.
pub const KUBECONFIG: &str = "apiVersion: v1
kind: Config
current-context: main
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: main
  context:
    cluster: c
    user: u
users:
- name: u
  user:
    token: kube-token-very-secret-0123
";

pub fn admin() -> Caller {
    Caller {
        subject: "auth0|admin".into(),
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: Some(Uuid::now_v7().into()),
        roles: vec![Role::User, Role::Admin],
        email: hopsbridge_domain::Email::parse("admin@example.com").ok(),
    }
}

pub fn person(user_id: Uuid) -> Caller {
    Caller {
        subject: format!("auth0|{user_id}"),
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: Some(user_id.into()),
        roles: vec![Role::User, Role::Owner],
        email: None,
    }
}

/// The token of the test binary's Kubernetes API server ([`kubeconfig`]).
pub const KUBE_TOKEN: &str = "kube-token-very-secret-0123";

/// A kubeconfig of a sandbox Kubernetes API server that passes every check (it answers,
/// allows what metering does, serves metrics-server's API), with the token [`KUBE_TOKEN`]:
/// one server per test binary, on a thread and runtime of its own, since each test has its
/// own runtime.
pub fn kubeconfig() -> String {
    static KUBECONFIG: LazyLock<String> = LazyLock::new(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                let cluster = kube_cluster("tests", Some(KUBE_TOKEN));
                tx.send(cluster.kubeconfig()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    });
    KUBECONFIG.clone()
}

/// A sandbox Kubernetes API server of its own, on the calling test's runtime, for a test that
/// changes what it answers (permissions denied, no metrics-server).
pub fn kube_cluster(name: &str, token: Option<&str>) -> KubeCluster {
    let options = KubeOptions { token: token.map(str::to_owned), ..KubeOptions::default() };
    kube_cluster_with(name, options)
}

/// [`kube_cluster`] with `options`.
pub fn kube_cluster_with(name: &str, options: KubeOptions) -> KubeCluster {
    let clock = Arc::new(SimClock::new(1_798_761_600));
    KubeCluster::start(name, Arc::new(Workload::new(Vec::new(), Vec::new())), clock, options).unwrap()
}

/// A running provisioning (or several replicas of it) and what it runs against.
pub struct Provisioning {
    /// Its base URL.
    pub base: String,
    /// Its database.
    pub db: TestDb,
    /// Its NATS prefix.
    pub bus: TestBus,
    /// The gateway's signing key, to call it as the gateway would.
    pub key: CallerSigner,
    /// Stops every replica started in process.
    pub stops: Vec<CancellationToken>,
}

impl Drop for Provisioning {
    fn drop(&mut self) {
        for s in &self.stops {
            s.cancel();
        }
    }
}

/// provisioning's test settings: sealing `keys` with `active`, and Hopsworks timeouts and
/// retry delays short enough for a test to see failures retried.
pub fn settings(db: &TestDb, bus: &TestBus, keys: &str, active: &str) -> TestSettings {
    TestSettings::provisioning(db, bus).set("encryption.keys", keys).set("encryption.active_key", active)
}

pub async fn launch(db: &TestDb, bus: &TestBus, keys: &str, active: &str) -> (String, CancellationToken) {
    launch_with(settings(db, bus, keys, active)).await
}

/// Starts provisioning with `settings`.
pub async fn launch_with(settings: TestSettings) -> (String, CancellationToken) {
    // Named in full: diesel's RunQueryDsl, in scope here, also has a `load`.
    let config: ProvisioningConfig = TestSettings::load(&settings, &hopsbridge_provisioning::DEFAULTS);
    let app = hopsbridge_provisioning::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    (base, stop)
}

pub fn metering() -> Caller {
    Caller::service(Service::Metering)
}

pub async fn start() -> Provisioning {
    start_with(|s| s).await
}

/// Starts provisioning with its test settings changed by `change`.
pub async fn start_with(change: impl FnOnce(TestSettings) -> TestSettings) -> Provisioning {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let (base, stop) = launch_with(change(settings(&db, &bus, PROVISIONING_ENCRYPTION_KEYS, "test1"))).await;
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    Provisioning { base, db, bus, key, stops: vec![stop] }
}

pub fn hopsworks(name: &str) -> HopsworksSim {
    HopsworksSim::start(HopsworksConfig::new(name, &format!("hw-key-{name}-{}", Uuid::new_v4().simple()), CLIENT_ID))
        .unwrap()
}

pub fn cluster_body(name: &str, sim: &HopsworksSim, capacity: i64) -> Value {
    json!({
        "name": name,
        "api_url": sim.origin(),
        "api_key": sim.api_key(),
        "kubeconfig": kubeconfig(),
        "ca_bundle": sim.ca_pem(),
        "oauth_client_id": CLIENT_ID,
        "capacity": capacity,
        "region": "eu-north-1",
        "status": "active",
    })
}

#[derive(diesel::QueryableByName)]
pub struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

#[derive(diesel::QueryableByName)]
pub struct Bytes {
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    pub b: Vec<u8>,
}

impl Provisioning {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        caller: Option<&Caller>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        hopsbridge_testkit::signed_call(&self.key, &self.base, method, path, caller, body).await
    }

    pub async fn register(&self, name: &str, sim: &HopsworksSim, capacity: i64) -> String {
        let (status, body) = self
            .call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(cluster_body(name, sim, capacity)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Records a person straight in provisioning's projection, as UserCreatedV1 would.
    pub async fn insert_person(&self, user: Uuid, email: &str, status: &str) {
        let mut conn = self.db.connect("provisioning").await;
        diesel::sql_query("INSERT INTO users (user_id, auth_subject, email, name, status) VALUES ($1, $2, $3, $4, $5)")
            .bind::<diesel::sql_types::Uuid, _>(user)
            .bind::<diesel::sql_types::Text, _>(format!("auth0|{user}"))
            .bind::<diesel::sql_types::Text, _>(email)
            .bind::<diesel::sql_types::Text, _>(email)
            .bind::<diesel::sql_types::Text, _>(status)
            .execute(&mut conn)
            .await
            .unwrap();
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let mut conn = self.db.connect("provisioning").await;
        diesel::sql_query(sql).get_result::<Count>(&mut conn).await.unwrap().n
    }

    /// Every outbox envelope of `event_type`, oldest first.
    pub async fn outbox(&self, event_type: &str) -> Vec<Envelope> {
        let mut conn = self.db.connect("provisioning").await;
        let rows: Vec<Bytes> =
            diesel::sql_query("SELECT envelope AS b FROM outbox WHERE event_type = $1 ORDER BY created_at, id")
                .bind::<diesel::sql_types::Text, _>(event_type)
                .load(&mut conn)
                .await
                .unwrap();
        rows.into_iter().map(|r| Envelope::decode(r.b.as_slice()).unwrap()).collect()
    }

    pub async fn publish<E: Event>(&self, event: &E, id: Option<String>) -> String {
        self.bus.publish(event, id).await
    }

    pub async fn user_created(&self, user: Uuid, email: &str, name: &str) {
        let event = UserCreatedV1 {
            user_id: user.to_string(),
            auth_subject: format!("auth0|{user}"),
            email: email.into(),
            name: name.into(),
        };
        self.publish(&event, None).await;
    }

    pub async fn paid(&self, user: Uuid) -> String {
        let event =
            PaymentMethodAddedV1 { user_id: user.to_string(), stripe_customer_id: format!("cus_{}", user.simple()) };
        self.publish(&event, None).await
    }

    /// Announces, as the team service does, that `member` joined `owner`'s team with `role`
    /// at `at` (microseconds since the Unix epoch); answers the event id.
    pub async fn joined(&self, owner: Uuid, member: Uuid, membership: Uuid, role: &str, at: i64) -> String {
        let event = TeamMemberJoinedV1 {
            owner_user_id: owner.to_string(),
            member_user_id: member.to_string(),
            project_role: role.into(),
            membership_id: membership.to_string(),
            joined_at_unix_micros: at,
        };
        self.publish(&event, None).await
    }

    /// Announces, as the team service does, that `member`'s membership ended at `at`.
    pub async fn removed(&self, owner: Uuid, member: Uuid, membership: Uuid, at: i64) -> String {
        let event = TeamMemberRemovedV1 {
            owner_user_id: owner.to_string(),
            member_user_id: member.to_string(),
            membership_id: membership.to_string(),
            removed_at_unix_micros: at,
            reason: "removed".into(),
        };
        self.publish(&event, None).await
    }

    /// Waits until the event `id` was handled (or found handled before).
    pub async fn handled(&self, id: &str) {
        let sql = format!("SELECT count(*) AS n FROM inbox WHERE event_id = '{id}'");
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.count(&sql).await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "event {id} was never handled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A person's team membership and their places in the owner's projects, as admins see them.
    pub async fn member_projects(&self, user: Uuid) -> Value {
        let (status, body) =
            self.call(Method::GET, &format!("/api/admin/assignments/{user}/projects"), Some(&admin()), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Polls a person's places in projects until `pred` holds; answers them.
    pub async fn wait_projects(&self, user: Uuid, what: &str, pred: impl Fn(&[Value]) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = self.member_projects(user).await;
            if pred(last["projects"].as_array().map_or(&[][..], Vec::as_slice)) {
                return last;
            }
            assert!(tokio::time::Instant::now() < deadline, "projects of {user} never {what}; last: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn assignment(&self, user: Uuid) -> Value {
        let (status, body) =
            self.call(Method::GET, &format!("/api/admin/assignments/{user}"), Some(&admin()), None).await;
        if status == StatusCode::NOT_FOUND { Value::Null } else { body }
    }

    /// Polls the assignment of `user` until `pred` holds; answers it.
    pub async fn wait_for(&self, user: Uuid, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = self.assignment(user).await;
            if pred(&last) {
                return last;
            }
            assert!(tokio::time::Instant::now() < deadline, "assignment of {user} never {what}; last: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_status(&self, user: Uuid, want: &str) -> Value {
        self.wait_for(user, &format!("became {want}"), |a| a["status"] == want).await
    }
}
