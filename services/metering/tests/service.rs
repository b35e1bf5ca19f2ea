//! The metering service in-process with provisioning, against the real Postgres and NATS and
//! the sandbox's Hopsworks and Kubernetes: windows measured once, attributed by (cluster,
//! namespace) to the right user and owner, announced once; replays, a second replica and a
//! replica killed mid-window add nothing twice; failing clusters and a metering outage leave
//! gaps with reasons, which the gap policy leaves (`record`), fills with the neighbours' mean
//! (`estimate`) or holds for review (`review`); the admin API. Following the sandbox's clock, metering measures every
//! window of a simulated hour run at 60× at its own time, and after a jump of an hour leaves
//! gaps only where the jump passed a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{admin, container, person, pod};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::events::{
    Envelope, PaymentMethodAddedV1, TeamMemberJoinedV1, UsageRecordedV1, UserCreatedV1,
};
use hopsbridge_contracts::{Event, Service};
use hopsbridge_metering::MeteringConfig;
use hopsbridge_platform::caller::{Caller, CallerSigner};
use hopsbridge_sandbox::clock::{ClockServer, REAL_TIME_RATE_MILLI, SimClock};
use hopsbridge_sandbox::hopsworks::{HopsworksConfig, HopsworksSim};
use hopsbridge_sandbox::kubernetes::{Faults, KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::{Profile, SimContainer, Workload};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TcpProxy, TestBus, TestDb, TestSettings};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Each in-process service's pool (10 by default): two tests at once, each with provisioning and
/// its metering replicas, stay well under Postgres' 100 connections while a journey runs beside
/// them.
const POOL: &str = "4";

const CLIENT_ID: &str = "hopsbridge-oauth-client";
/// Window length of these tests, seconds.
const WINDOW: i64 = 2;
const WAIT: Duration = Duration::from_secs(60);
/// CPU of ada's pod, nanocores (500m), memory 1 GiB; bob's pod: 250m, 512 MiB, one GPU.
const ADA_CPU: i64 = 500_000_000;
const ADA_MEM: i64 = 1 << 30;
const BOB_CPU: i64 = 250_000_000;
const BOB_MEM: i64 = 512 << 20;
/// When the tests' pods started: long before any window measured.
const STARTED: i64 = 1_700_000_000;
/// A pod without the owner label in ada's project: 100m CPU, 10 MiB.
const UNLABELLED_CPU: i64 = 100_000_000;
const UNLABELLED_MEM: i64 = 10 << 20;

/// A pod without the owner label in `ns`.
fn unlabelled(ns: &str, name: &str) -> hopsbridge_sandbox::workload::SimPod {
    let mut p = pod(ns, name, "", STARTED, vec![container(100_000_000, 10 << 20, 0)]);
    p.labels.clear();
    p
}

/// ada's and bob's pods in ada's project, a stranger's pod and a pod without the owner label
/// there, ada's pod in a namespace that is no project of this cluster, and a system pod. Usernames are what the Hopsworks sandbox generates for
/// ada@… and bob@… (`ada10000`, `bob10000`).
fn workload() -> Workload {
    let (a, b) = (u64::try_from(ADA_CPU).unwrap(), u64::try_from(BOB_CPU).unwrap());
    let (am, bm) = (u64::try_from(ADA_MEM).unwrap(), u64::try_from(BOB_MEM).unwrap());
    Workload::new(
        vec![],
        vec![
            pod("ada-lab", "jupyter-ada", "ada10000", STARTED, vec![container(a, am, 0)]),
            pod("ada-lab", "train-bob", "bob10000", STARTED, vec![container(b, bm, 1)]),
            pod("ada-lab", "miner", "eve10000", STARTED, vec![container(a, am, 0)]),
            pod("elsewhere", "side-job", "ada10000", STARTED, vec![container(a, am, 0)]),
            unlabelled("ada-lab", "sidecar"),
            unlabelled("kube-system", "coredns"),
        ],
    )
}

struct Sim {
    hopsworks: HopsworksSim,
    kube: KubeCluster,
}

fn sim(name: &str, clock: &Arc<SimClock>) -> Sim {
    sim_of(name, clock, workload())
}

fn sim_of(name: &str, clock: &Arc<SimClock>, workload: Workload) -> Sim {
    let hopsworks = HopsworksSim::start(HopsworksConfig::new(
        name,
        &format!("hw-key-{name}-{}", Uuid::new_v4().simple()),
        CLIENT_ID,
    ))
    .unwrap();
    let kube = KubeCluster::start(name, Arc::new(workload), Arc::clone(clock), KubeOptions::default()).unwrap();
    Sim { hopsworks, kube }
}

struct Env {
    db: TestDb,
    bus: TestBus,
    key: CallerSigner,
    provisioning: String,
    /// The sandbox's clock, at real time unless a test moves it, and where it is served.
    clock: Arc<SimClock>,
    clock_server: ClockServer,
    stops: Vec<CancellationToken>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for s in &self.stops {
            s.cancel();
        }
    }
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct S {
    #[diesel(sql_type = Text)]
    s: String,
}

impl Env {
    async fn start() -> Self {
        hopsbridge_testkit::init();
        let db = TestDb::new().await;
        let bus = TestBus::new().await;
        let clock = Arc::new(SimClock::running(chrono::Utc::now().timestamp_micros(), REAL_TIME_RATE_MILLI));
        let clock_server = ClockServer::start(Arc::clone(&clock)).unwrap();
        let (provisioning, p_stop) =
            common::provisioning(&db, &bus, &clock_server.url(), &[("database.max_connections", POOL)]).await;
        let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
        Self { db, bus, key, provisioning, clock, clock_server, stops: vec![p_stop] }
    }

    /// Starts a metering replica; `deadline` is seconds after a window's end it may be measured.
    async fn metering(&mut self, deadline: u32, extra: &[(&str, &str)]) -> (String, CancellationToken) {
        let mut settings = TestSettings::data_service(Service::Metering, &self.db, &self.bus)
            .set("database.max_connections", POOL)
            .set("http.workers", "2")
            .set("provisioning.url", &self.provisioning)
            .set("schedule.window_secs", WINDOW.to_string())
            .set("schedule.settle_secs", "0")
            .set("schedule.deadline_secs", deadline.to_string())
            .set("schedule.lookback_secs", "60")
            .set("schedule.max_attempts", "2")
            .set("schedule.retry_delay_ms", "100")
            .set("schedule.lease_secs", "20")
            .set("schedule.tick_ms", "100")
            .set("collect.requests_per_second", "1000")
            .set("collect.max_attempts", "2")
            .set("collect.backoff_initial_ms", "10")
            .set("collect.backoff_max_ms", "50")
            .set("collect.request_timeout_ms", "3000");
        for (key, value) in extra {
            settings = settings.set(key, *value);
        }
        let config: MeteringConfig = TestSettings::load(&settings, &hopsbridge_metering::DEFAULTS);
        let app = hopsbridge_metering::build(config).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(stop.clone()));
        self.stops.push(stop.clone());
        (base, stop)
    }

    async fn call(
        &self,
        base: &str,
        method: Method,
        path: &str,
        caller: Option<&Caller>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        hopsbridge_testkit::signed_call(&self.key, base, method, path, caller, body).await
    }

    /// Changes a cluster's status through provisioning's admin API (ClusterUpdated reaches metering).
    async fn set_cluster_status(&self, cluster: Uuid, status: &str) {
        let path = format!("/api/admin/clusters/{cluster}");
        let (code, body) =
            self.call(&self.provisioning, Method::PATCH, &path, Some(&admin()), Some(json!({"status": status}))).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }

    /// Registers a cluster with provisioning (ClusterRegistered reaches metering).
    async fn register(&self, name: &str, sim: &Sim) -> Uuid {
        let body = json!({
            "name": name,
            "api_url": sim.hopsworks.origin(),
            "api_key": sim.hopsworks.api_key(),
            "kubeconfig": sim.kube.kubeconfig(),
            "ca_bundle": sim.hopsworks.ca_pem(),
            "oauth_client_id": CLIENT_ID,
            "capacity": 10,
            "region": "eu-north-1",
            "status": "active",
        });
        let (status, body) =
            self.call(&self.provisioning, Method::POST, "/api/admin/clusters", Some(&admin()), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    async fn publish<E: Event>(&self, event: &E) {
        self.bus.publish(event, None).await;
    }

    /// A paying person: identity's and billing's events, so provisioning makes their
    /// Hopsworks account and announces ClusterAssigned.
    async fn paying(&self, email: &str) -> Uuid {
        let user = Uuid::now_v7();
        self.publish(&UserCreatedV1 {
            user_id: user.to_string(),
            auth_subject: format!("auth0|{user}"),
            email: email.into(),
            name: email.into(),
        })
        .await;
        self.publish(&PaymentMethodAddedV1 {
            user_id: user.to_string(),
            stripe_customer_id: format!("cus_{}", user.simple()),
        })
        .await;
        user
    }

    async fn n(&self, sql: &str) -> i64 {
        let mut conn = self.db.connect("metering").await;
        diesel::sql_query(sql).get_result::<N>(&mut conn).await.unwrap().n
    }

    async fn s(&self, sql: &str) -> Vec<String> {
        let mut conn = self.db.connect("metering").await;
        diesel::sql_query(sql).load::<S>(&mut conn).await.unwrap().into_iter().map(|r| r.s).collect()
    }

    async fn exec(&self, sql: &str) -> usize {
        let mut conn = self.db.connect("metering").await;
        diesel::sql_query(sql).execute(&mut conn).await.unwrap()
    }

    async fn until(&self, what: &str, sql: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.n(sql).await > 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn usage_events(&self) -> Vec<UsageRecordedV1> {
        #[derive(QueryableByName)]
        struct B {
            #[diesel(sql_type = diesel::sql_types::Bytea)]
            b: Vec<u8>,
        }
        let mut conn = self.db.connect("metering").await;
        let rows: Vec<B> = diesel::sql_query("SELECT envelope AS b FROM outbox WHERE event_type = 'UsageRecorded'")
            .load(&mut conn)
            .await
            .unwrap();
        rows.into_iter()
            .map(|r| UsageRecordedV1::decode(Envelope::decode(r.b.as_slice()).unwrap().payload.as_slice()).unwrap())
            .collect()
    }

    /// Everything stored adds up, each figure read in one snapshot: every usage_daily row is
    /// the sum of its attributed samples, there is one UsageRecorded per attributed sample, and
    /// no sample is announced twice.
    async fn assert_consistent(&self) {
        let mismatched = self
            .n("SELECT count(*) AS n FROM usage_daily d FULL JOIN (
                    SELECT (window_start AT TIME ZONE 'UTC')::date AS day, user_id, owner_user_id, cluster_id, namespace,
                           sum(cpu_nanocore_seconds) AS cpu, sum(memory_byte_seconds) AS mem, sum(gpu_seconds) AS gpu,
                           count(*) AS samples
                    FROM samples WHERE owner_user_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5) s
                USING (day, user_id, owner_user_id, cluster_id, namespace)
                WHERE d.cpu_nanocore_seconds IS DISTINCT FROM s.cpu OR d.memory_byte_seconds IS DISTINCT FROM s.mem
                   OR d.gpu_seconds IS DISTINCT FROM s.gpu OR d.samples IS DISTINCT FROM s.samples")
            .await;
        assert_eq!(mismatched, 0, "usage_daily is the sum of the billed samples");
        let unannounced = self
            .n("SELECT (SELECT count(*) FROM samples WHERE owner_user_id IS NOT NULL)
                     - (SELECT count(*) FROM outbox WHERE event_type = 'UsageRecorded') AS n")
            .await;
        assert_eq!(unannounced, 0, "one UsageRecorded per billed sample");
        let events = self.usage_events().await;
        let ids: std::collections::HashSet<_> = events.iter().map(|e| e.sample_id.clone()).collect();
        assert_eq!(ids.len(), events.len(), "no sample announced twice");
    }
}

/// Sets up one cluster with ada (owner) and bob (member of ada's team) assigned and ada's
/// project created; answers (ada, bob, cluster, when everything was in place).
async fn populated(env: &mut Env, sim: &Sim) -> (Uuid, Uuid, Uuid, i64) {
    let cluster = env.register("eu-1", sim).await;
    let ada = env.paying("ada@example.com").await;
    let bob = env.paying("bob@example.com").await;
    env.until(
        "both accounts are known to metering",
        "SELECT (count(*) = 2)::int::bigint AS n FROM accounts WHERE assigned_at IS NOT NULL",
    )
    .await;
    let names: Vec<String> = sim.hopsworks.users().into_iter().map(|u| u.username).collect();
    assert!(names.contains(&"ada10000".to_owned()) && names.contains(&"bob10000".to_owned()), "{names:?}");
    let project = sim.hopsworks.create_project("ada10000", "ada_lab").unwrap();
    assert_eq!(project.namespace, "ada-lab");
    env.publish(&TeamMemberJoinedV1 {
        owner_user_id: ada.to_string(),
        member_user_id: bob.to_string(),
        project_role: "Data scientist".into(),
        ..TeamMemberJoinedV1::default()
    })
    .await;
    env.until("bob's membership is known", "SELECT count(*) AS n FROM memberships").await;
    // Runs for windows starting from now on see everything in place.
    let ready = (chrono::Utc::now().timestamp() / WINDOW + 1) * WINDOW;
    (ada, bob, cluster, ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn windows_are_measured_once_attributed_by_cluster_and_namespace_and_announced_once() {
    let mut env = Env::start().await;
    let sim = sim("eu-1", &env.clock);
    let (base, _stop) = env.metering(30, &[]).await;
    let (ada, bob, cluster, ready) = populated(&mut env, &sim).await;
    env.until(
        "three windows measured after setup",
        &format!(
            "SELECT (count(*) >= 3)::int::bigint AS n FROM runs WHERE status = 'complete' AND window_start >= to_timestamp({ready})"
        ),
    )
    .await;
    let first = env
        .s(&format!(
            "SELECT extract(epoch FROM window_start)::bigint::text AS s FROM runs
             WHERE status = 'complete' AND window_start >= to_timestamp({ready}) ORDER BY window_start LIMIT 1"
        ))
        .await
        .remove(0);
    // Exact: the steady rates held for the 2 s window, to the nanocore-second.
    let sample = |user: &str, ns: &str| {
        format!(
            "SELECT cpu_nanocore_seconds AS n FROM samples WHERE hopsworks_username = '{user}' AND namespace = '{ns}'
             AND window_start = to_timestamp({first})"
        )
    };
    assert_eq!(env.n(&sample("ada10000", "ada-lab")).await, ADA_CPU * WINDOW);
    assert_eq!(env.n(&sample("bob10000", "ada-lab")).await, BOB_CPU * WINDOW);
    let of = |col: &str, user: &str| {
        format!(
            "SELECT {col}::bigint AS n FROM samples WHERE hopsworks_username = '{user}' AND namespace = 'ada-lab'
             AND window_start = to_timestamp({first})"
        )
    };
    assert_eq!(env.n(&of("memory_byte_seconds", "ada10000")).await, ADA_MEM * WINDOW);
    assert_eq!(env.n(&of("gpu_seconds", "bob10000")).await, WINDOW);
    // Attribution: ada's own, bob's billed to ada; the unlabelled pod and the stranger's in
    // ada's project billed to ada as the project's creator; the foreign and the system
    // namespace kept but billed to nobody.
    let who = env
        .s(&format!(
            "SELECT hopsworks_username || '/' || namespace || '/' || attribution || '/' ||
                    coalesce(user_id::text, '-') || '/' || coalesce(owner_user_id::text, '-') AS s
             FROM samples WHERE window_start = to_timestamp({first}) ORDER BY 1"
        ))
        .await;
    assert_eq!(
        who,
        vec![
            format!("/ada-lab/unlabelled/{ada}/{ada}"),
            "/kube-system/unknown_project/-/-".to_owned(),
            format!("ada10000/ada-lab/attributed/{ada}/{ada}"),
            "ada10000/elsewhere/unknown_project/-/-".to_owned(),
            format!("bob10000/ada-lab/attributed/{bob}/{ada}"),
            format!("eve10000/ada-lab/not_member/{ada}/{ada}"),
        ]
    );
    // The unlabelled pod's 100m and 10 MiB, exactly, billed to ada and announced.
    assert_eq!(env.n(&sample("", "ada-lab")).await, UNLABELLED_CPU * WINDOW);
    assert_eq!(env.n(&of("memory_byte_seconds", "")).await, UNLABELLED_MEM * WINDOW);
    let counted = env
        .s(&format!(
            "SELECT concat_ws(',', stats->>'attributed', stats->>'unlabelled', stats->>'not_member',
                              stats->>'unknown_project', stats->>'project_pods', stats->'collect'->>'pods_without_owner') AS s
             FROM runs WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({first})"
        ))
        .await;
    assert_eq!(counted, vec!["2,1,1,2,4,2"], "each path counted in the run's stats");
    let sidecar = env
        .usage_events()
        .await
        .into_iter()
        .find(|e| e.hopsworks_username.is_empty() && e.window_start_unix_seconds.to_string() == first)
        .expect("the unlabelled pod's sample announced");
    assert_eq!((sidecar.user_id, sidecar.owner_user_id), (ada.to_string(), ada.to_string()));
    assert_eq!(sidecar.cpu_nanocore_seconds, u64::try_from(UNLABELLED_CPU * WINDOW).unwrap());
    env.assert_consistent().await;
    let event = env
        .usage_events()
        .await
        .into_iter()
        .find(|e| e.hopsworks_username == "bob10000" && e.window_start_unix_seconds.to_string() == first)
        .expect("bob's sample announced");
    assert_eq!((event.user_id, event.owner_user_id), (bob.to_string(), ada.to_string()));
    assert_eq!(event.cluster_id, cluster.to_string());
    assert!(event.gpu_hours.starts_with("0.000555555555"), "2 GPU-seconds in hours: {}", event.gpu_hours);
    assert_eq!((event.gpu_seconds, event.pods), (2, 1));
    assert_eq!(event.cpu_nanocore_seconds, u64::try_from(BOB_CPU * WINDOW).unwrap());

    // A replay of a measured window adds nothing: its samples exist already.
    let window_sum = format!(
        "SELECT sum(cpu_nanocore_seconds)::bigint AS n FROM samples WHERE window_start = to_timestamp({first})"
    );
    let before = env.n(&window_sum).await;
    let replayed = env
        .exec(&format!(
            "UPDATE runs SET status = 'pending', next_attempt_at = now(), attempts = 0, deadline = now() + interval '30 s'
             WHERE window_start = to_timestamp({first})"
        ))
        .await;
    assert_eq!(replayed, 1);
    env.until(
        "the replayed window measured again, adding nothing",
        &format!(
            "SELECT count(*) AS n FROM runs WHERE window_start = to_timestamp({first}) AND status = 'complete'
             AND (stats->>'added')::int = 0 AND (stats->>'attributed')::int = 2"
        ),
    )
    .await;
    assert_eq!(env.n(&window_sum).await, before);
    env.assert_consistent().await;

    // An inactive cluster whose projects still have pods is still measured, every window.
    env.set_cluster_status(cluster, "inactive").await;
    env.until("metering knows the cluster is inactive", "SELECT count(*) AS n FROM clusters WHERE status = 'inactive'")
        .await;
    let inactive_from = chrono::Utc::now().timestamp();
    env.until(
        "windows of the inactive cluster measured, its pods billed",
        &format!(
            "SELECT (count(DISTINCT window_start) >= 2)::int::bigint AS n FROM samples
             WHERE cluster_id = '{cluster}' AND attribution = 'unlabelled' AND window_start >= to_timestamp({inactive_from})"
        ),
    )
    .await;
    assert_eq!(env.n("SELECT count(*) AS n FROM clusters WHERE drained_at IS NOT NULL").await, 0);
    assert_eq!(env.n("SELECT count(*) AS n FROM runs WHERE status = 'gap'").await, 0);
    env.assert_consistent().await;

    // An inactive cluster without pods in its projects (only system pods) records one window
    // without billed usage, then nothing: no run, no gap.
    let quiet = sim_of("eu-quiet", &env.clock, Workload::new(vec![], vec![unlabelled("kube-system", "coredns")]));
    let quiet_id = env.register("eu-quiet", &quiet).await;
    let in_quiet = |what: &str| format!("SELECT count(*) AS n FROM runs WHERE cluster_id = '{quiet_id}' {what}");
    env.until("the quiet cluster measured", &in_quiet("AND status = 'complete'")).await;
    env.set_cluster_status(quiet_id, "inactive").await;
    env.until(
        "the inactive quiet cluster found without pods and measured no more",
        &format!("SELECT count(*) AS n FROM clusters WHERE cluster_id = '{quiet_id}' AND drained_at IS NOT NULL"),
    )
    .await;
    env.until(
        "no run of it left in hand",
        &format!("SELECT (({}) = 0)::int::bigint AS n", in_quiet("AND status IN ('pending', 'running')")),
    )
    .await;
    let settled = env.n(&in_quiet("")).await;
    tokio::time::sleep(Duration::from_secs(u64::try_from(2 * WINDOW).unwrap())).await;
    assert_eq!(env.n(&in_quiet("")).await, settled, "no window scheduled for an inactive cluster without pods");
    assert_eq!(env.n(&in_quiet("AND status = 'gap'")).await, 0, "and no gap");
    // Back to active: measured again at once, and the time without pods is neither measured
    // nor a gap.
    let last_before = env
        .n(&format!(
            "SELECT extract(epoch FROM max(window_start))::bigint AS n FROM runs WHERE cluster_id = '{quiet_id}'"
        ))
        .await;
    let quiet_until = chrono::Utc::now().timestamp();
    env.set_cluster_status(quiet_id, "active").await;
    let back = chrono::Utc::now().timestamp();
    env.until(
        "measured again after reactivation",
        &in_quiet(&format!("AND status = 'complete' AND window_start >= to_timestamp({back})")),
    )
    .await;
    assert_eq!(env.n("SELECT count(*) AS n FROM runs WHERE status = 'gap'").await, 0, "no gap for the inactive time");
    let inside = env
        .n(&in_quiet(&format!(
            "AND window_start > to_timestamp({last_before}) AND window_start < to_timestamp({quiet_until} - {WINDOW})"
        )))
        .await;
    assert_eq!(inside, 0, "no window of the inactive time scheduled");
    // Usage billed to nobody is shown to administrators: the system and the foreign namespace.
    let (status, unbilled) = env
        .call(&base, Method::GET, &format!("/api/admin/usage/unbilled?cluster_id={cluster}"), Some(&admin()), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{unbilled}");
    let rows: std::collections::BTreeSet<_> = unbilled
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{}/{}",
                r["namespace"].as_str().unwrap(),
                r["hopsworks_username"].as_str().unwrap(),
                r["attribution"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        rows.into_iter().collect::<Vec<_>>(),
        ["elsewhere/ada10000/unknown_project", "kube-system//unknown_project"],
        "{unbilled}"
    );
    let coredns = unbilled.as_array().unwrap().iter().find(|r| r["namespace"] == "kube-system").unwrap();
    let windows = coredns["samples"].as_i64().unwrap();
    assert_eq!(coredns["cpu_nanocore_seconds"].as_i64().unwrap(), UNLABELLED_CPU * WINDOW * windows);
    let (status, _) = env.call(&base, Method::GET, "/api/admin/usage/unbilled", Some(&person(ada)), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The admin and self-service views.
    let (status, runs) = env
        .call(
            &base,
            Method::GET,
            &format!("/api/admin/metering/runs?cluster_id={cluster}&status=complete"),
            Some(&admin()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    assert!(runs["total"].as_i64().unwrap() >= 3);
    assert_eq!(runs["items"][0]["stats"]["attributed"], 2, "{runs}");
    assert_eq!(runs["items"][0]["stats"]["not_member"], 1);
    let today = chrono::Utc::now().date_naive();
    let (status, mine) = env.call(&base, Method::GET, "/api/usage", Some(&person(ada)), None).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let users: std::collections::BTreeSet<_> =
        mine.as_array().unwrap().iter().map(|r| r["user_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(users.len(), 2, "an owner sees their own usage and their member's: {mine}");
    let (_, bobs) = env.call(&base, Method::GET, "/api/usage", Some(&person(bob)), None).await;
    assert!(bobs.as_array().unwrap().iter().all(|r| r["user_id"] == bob.to_string()), "a member sees only their own");
    let (_, strangers) = env.call(&base, Method::GET, "/api/usage", Some(&person(Uuid::now_v7())), None).await;
    assert_eq!(strangers, json!([]));
    let (status, _) = env.call(&base, Method::GET, "/api/admin/usage", Some(&person(ada)), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env.call(&base, Method::GET, "/api/admin/usage", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, daily) = env
        .call(
            &base,
            Method::GET,
            &format!("/api/admin/usage?owner_user_id={ada}&from={today}&to={today}"),
            Some(&admin()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{daily}");
    assert!(
        daily
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user_id"] == bob.to_string() && r["owner_user_id"] == ada.to_string())
    );
    let (status, samples) = env
        .call(&base, Method::GET, &format!("/api/admin/usage/samples?user_id={ada}&day={today}"), Some(&admin()), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let traced: i64 = samples.as_array().unwrap().iter().map(|s| s["cpu_nanocore_seconds"].as_i64().unwrap()).sum();
    let own: i64 = daily
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["user_id"] == ada.to_string())
        .map(|r| r["cpu_nanocore_seconds"].as_i64().unwrap())
        .sum();
    assert_eq!(traced, own, "the day's figure is the sum of the samples behind it");
    let (status, bad) = env.call(&base, Method::GET, "/api/admin/usage?from=2026-02-30", Some(&admin()), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_cluster_leaves_gaps_with_reasons_and_holds_up_no_other() {
    let mut env = Env::start().await;
    let good = sim("eu-1", &env.clock);
    let bad = sim("eu-2", &env.clock);
    let (base, _stop) = env.metering(30, &[]).await;
    let good_id = env.register("eu-1", &good).await;
    // Provisioning checks a cluster before accepting it, so the cluster fails once registered.
    let bad_id = env.register("eu-2", &bad).await;
    bad.kube.set_faults(Faults { server_error: Some(503), ..Faults::default() });
    env.until(
        "a gap on the failing cluster",
        &format!("SELECT count(*) AS n FROM runs WHERE cluster_id = '{bad_id}' AND status = 'gap'"),
    )
    .await;
    env.until(
        "windows measured on the healthy one",
        &format!(
            "SELECT (count(*) >= 2)::int::bigint AS n FROM runs WHERE cluster_id = '{good_id}' AND status = 'complete'"
        ),
    )
    .await;
    let reasons = env
        .s(&format!("SELECT DISTINCT gap_reason || ': ' || gap_detail AS s FROM runs WHERE cluster_id = '{bad_id}' AND status = 'gap'"))
        .await;
    assert!(reasons.iter().all(|r| r.starts_with("cluster_unavailable: ")), "{reasons:?}");
    assert!(reasons[0].contains("503"), "{reasons:?}");
    assert_eq!(
        env.n(&format!("SELECT count(*) AS n FROM samples WHERE cluster_id = '{bad_id}'")).await,
        0,
        "nothing invented"
    );
    assert_eq!(
        env.n("SELECT count(*) AS n FROM gap_estimates").await,
        0,
        "the default gap policy, record, estimates nothing"
    );
    let tries = env
        .n(&format!("SELECT min(attempts)::bigint AS n FROM runs WHERE cluster_id = '{bad_id}' AND status = 'gap'"))
        .await;
    assert_eq!(tries, 2, "each gap was tried schedule.max_attempts times");

    let (status, gaps) = env
        .call(&base, Method::GET, &format!("/api/admin/metering/gaps?cluster_id={bad_id}"), Some(&admin()), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{gaps}");
    assert!(gaps["total"].as_i64().unwrap() >= 1);
    assert_eq!(gaps["items"][0]["gap_reason"], "cluster_unavailable");
    let (status, none) = env
        .call(&base, Method::GET, &format!("/api/admin/metering/gaps?cluster_id={good_id}"), Some(&admin()), None)
        .await;
    assert_eq!((status, none["total"].as_i64()), (StatusCode::OK, Some(0)), "{none}");
    let (status, body) =
        env.call(&base, Method::GET, "/api/admin/metering/runs?status=lost", Some(&admin()), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_status")));
    let (status, body) =
        env.call(&base, Method::GET, "/api/admin/metering/gaps", Some(&person(Uuid::now_v7())), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));

    // Collect now: once the cluster answers again, its last window is measured on request.
    bad.kube.set_faults(Faults::default());
    let path = format!("/api/admin/metering/clusters/{bad_id}/collect");
    let (status, run) = env.call(&base, Method::POST, &path, Some(&admin()), None).await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT, "{status} {run}");
    env.until(
        "a window of the recovered cluster measured",
        &format!("SELECT count(*) AS n FROM runs WHERE cluster_id = '{bad_id}' AND status = 'complete'"),
    )
    .await;
    let (status, body) = env.call(&base, Method::POST, &path, Some(&person(Uuid::now_v7())), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = env
        .call(
            &base,
            Method::POST,
            &format!("/api/admin/metering/clusters/{}/collect", Uuid::now_v7()),
            Some(&admin()),
            None,
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("cluster_not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_windows_a_killed_one_is_taken_over_and_an_outage_is_recorded_as_gaps() {
    let mut env = Env::start().await;
    let one = sim("eu-1", &env.clock);
    let two = sim("eu-2", &env.clock);
    // One cluster at a time per replica, so both replicas must take part.
    let (_a, stop_a) = env.metering(8, &[("schedule.clusters_in_flight", "1")]).await;
    let (_b, stop_b) = env.metering(8, &[("schedule.clusters_in_flight", "1")]).await;
    let (ada, _bob, c1, ready) = populated(&mut env, &one).await;
    let c2 = env.register("eu-2", &two).await;
    env.until(
        "six windows per cluster measured",
        &format!(
            "SELECT (count(*) = 2)::int::bigint AS n FROM (SELECT cluster_id FROM runs
             WHERE status = 'complete' AND window_start >= to_timestamp({ready}) GROUP BY cluster_id HAVING count(*) >= 6) c"
        ),
    )
    .await;
    let replicas = env.n("SELECT count(DISTINCT claimed_by) AS n FROM runs WHERE status = 'complete'").await;
    assert_eq!(replicas, 2, "both replicas measured windows");
    // Every window after setup was measured exactly once: ada's usage is her rate times the
    // windows measured, not more.
    let windows = env
        .n(&format!("SELECT count(*) AS n FROM runs WHERE cluster_id = '{c1}' AND status = 'complete' AND window_start >= to_timestamp({ready})"))
        .await;
    let ada_cpu = env
        .n(&format!(
            "SELECT sum(cpu_nanocore_seconds)::bigint AS n FROM samples WHERE user_id = '{ada}' AND attribution = 'attributed' AND namespace = 'ada-lab'
             AND window_start >= to_timestamp({ready}) AND window_start IN (SELECT window_start FROM runs WHERE cluster_id = '{c1}' AND status = 'complete')"
        ))
        .await;
    assert_eq!(ada_cpu, windows * ADA_CPU * WINDOW);
    env.assert_consistent().await;

    // A replica killed mid-window leaves its run leased; once the lease runs out another
    // replica takes it over. (This is the state a killed process leaves behind.)
    let killed = (chrono::Utc::now().timestamp() / WINDOW + 2) * WINDOW;
    let taken = env
        .exec(&format!(
            "INSERT INTO runs (cluster_id, window_start, window_end, status, attempts, next_attempt_at, deadline,
                               claimed_by, lease_until, started_at)
             VALUES ('{c2}', to_timestamp({killed}), to_timestamp({killed} + {WINDOW}), 'running', 1,
                     to_timestamp({killed} + {WINDOW}), to_timestamp({killed} + {WINDOW} + 8), 'killed-replica',
                     to_timestamp({killed} + {WINDOW}) + interval '1 s', now())"
        ))
        .await;
    assert_eq!(taken, 1);
    env.until(
        "the killed replica's run completed by another once its lease ran out",
        &format!(
            "SELECT count(*) AS n FROM runs WHERE cluster_id = '{c2}' AND window_start = to_timestamp({killed})
             AND status = 'complete' AND claimed_by <> 'killed-replica' AND attempts = 2"
        ),
    )
    .await;

    // Metering down for longer than the deadline: the windows it missed become gaps when it
    // comes back, and measuring resumes.
    stop_a.cancel();
    stop_b.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down_from = chrono::Utc::now().timestamp();
    // Down for twice the deadline: the windows that ended in the first half are past theirs.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let (_c, _stop_c) = env.metering(8, &[]).await;
    env.until(
        "missed windows recorded as gaps",
        &format!(
            "SELECT (count(*) >= 2)::int::bigint AS n FROM runs WHERE cluster_id = '{c1}' AND status = 'gap'
             AND gap_reason = 'not_collected' AND window_start > to_timestamp({down_from})"
        ),
    )
    .await;
    let resumed_from = chrono::Utc::now().timestamp();
    env.until(
        "measuring resumed",
        &format!("SELECT count(*) AS n FROM runs WHERE cluster_id = '{c1}' AND status = 'complete' AND window_start >= to_timestamp({resumed_from})"),
    )
    .await;
    env.assert_consistent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_lost_for_longer_than_a_deadline_leaves_gaps_and_counts_nothing_twice() {
    let mut env = Env::start().await;
    let sim = sim("eu-1", &env.clock);
    // metering reaches Postgres through a proxy the test can cut.
    let url = env.db.url().to_owned();
    let (head, tail) = url.split_once('@').unwrap();
    let (host_port, database) = tail.split_once('/').unwrap();
    let proxy = TcpProxy::start(host_port).await;
    let through_proxy = format!("{head}@{}/{database}", proxy.addr());
    let (_base, _stop) = env.metering(6, &[("database.url", &through_proxy)]).await;
    let (_ada, _bob, cluster, ready) = populated(&mut env, &sim).await;
    env.until(
        "two windows measured",
        &format!("SELECT (count(*) >= 2)::int::bigint AS n FROM runs WHERE status = 'complete' AND window_start >= to_timestamp({ready})"),
    )
    .await;

    proxy.cut();
    let cut_at = chrono::Utc::now().timestamp();
    tokio::time::sleep(Duration::from_secs(12)).await;
    proxy.restore();
    let restored = chrono::Utc::now().timestamp();
    env.until(
        "measuring resumed",
        &format!("SELECT (count(*) >= 2)::int::bigint AS n FROM runs WHERE status = 'complete' AND window_start >= to_timestamp({restored})"),
    )
    .await;
    let gaps = env
        .s(&format!(
            "SELECT DISTINCT gap_reason AS s FROM runs WHERE status = 'gap' AND window_start >= to_timestamp({cut_at} - {WINDOW})"
        ))
        .await;
    assert!(!gaps.is_empty(), "the windows Postgres was away for are gaps");
    let holes = env
        .n(&format!(
            "SELECT ((extract(epoch FROM max(window_start) - min(window_start))::bigint / {WINDOW}) + 1 - count(*))::bigint AS n
             FROM runs WHERE cluster_id = '{cluster}'"
        ))
        .await;
    assert_eq!(holes, 0, "every window has its run: measured or a gap with its reason ({gaps:?})");
    env.assert_consistent().await;
}

/// CPU of ada's bursty pod in the calendar tests, nanocores: high from 5 minutes into every
/// other window to 5 minutes into the next, low otherwise, so a point sample read within 5
/// minutes of a window's end is that window's own, and the next window's differs.
const BURST_HIGH: u64 = 800_000_000;
const BURST_LOW: u64 = 100_000_000;
/// The default window, settling time and deadline, seconds.
const QUARTER: i64 = 900;
const DEADLINE: i64 = 180;

fn bursty_workload() -> Workload {
    let mut pod = pod("ada-lab", "jupyter-ada", "ada10000", STARTED, vec![container(0, 1 << 30, 0)]);
    pod.containers = vec![SimContainer {
        profile: Profile::Bursty {
            cpu_low: BURST_LOW,
            cpu_high: BURST_HIGH,
            memory_low: 1 << 30,
            memory_high: 1 << 30,
            period_secs: 2 * QUARTER,
            burst_secs: QUARTER,
            phase_secs: 300,
        },
        ..pod.containers.remove(0)
    }];
    Workload::new(vec![], vec![pod])
}

/// ada's CPU in the window ending at `end`, as the workload gives it at the window's own time:
/// the rate metrics-server reports at its end, held for the window.
fn own_time_cpu(workload: &Workload, end: i64) -> i64 {
    let rate = workload.pods()[0].containers[0].profile.at(end - 1).0;
    i64::try_from(rate).unwrap() * QUARTER
}

/// One cluster with ada paying and her project, metering following the sandbox's clock with
/// the production window, settling time and deadline; answers the cluster, the first window
/// start metering measures, and metering's base URL.
async fn on_the_sandbox_clock(env: &mut Env, sim: &Sim) -> (Uuid, i64, String) {
    let url = env.clock_server.url();
    let (base, _) = env
        .metering(
            u32::try_from(DEADLINE).unwrap(),
            &[
                ("clock.follow_url", &url),
                ("schedule.window_secs", "900"),
                ("schedule.settle_secs", "3"),
                ("schedule.lookback_secs", "86400"),
                // These tests follow point samples' timing; readings are tested in accuracy.rs.
                ("collect.source", "point"),
            ],
        )
        .await;
    let (status, ready) = env.call(&base, Method::GET, "/readyz", None, None).await;
    assert_eq!((status, &ready["checks"]["clock"]), (StatusCode::OK, &json!("simulated")), "{ready}");
    let cluster = env.register("eu-1", sim).await;
    env.paying("ada@example.com").await;
    env.until("ada's account is known", "SELECT count(*) AS n FROM accounts WHERE assigned_at IS NOT NULL").await;
    sim.hopsworks.create_project("ada10000", "ada_lab").unwrap();
    let from = env.n("SELECT extract(epoch FROM min(measured_from))::bigint AS n FROM clusters").await;
    (cluster, (from + QUARTER - 1).div_euclid(QUARTER) * QUARTER, base)
}

/// Runs the sandbox's clock at 60× until the deadline of the window ending at `end` has
/// passed, stops it, and waits until that window is measured.
async fn at_60x_until_measured(env: &Env, end: i64) {
    env.clock.set_rate(60 * REAL_TIME_RATE_MILLI);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while env.clock.now() < end + DEADLINE {
        assert!(tokio::time::Instant::now() < deadline, "the sandbox clock never reached {end}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.clock.set_rate(0);
    let measured =
        format!("SELECT count(*) AS n FROM runs WHERE status = 'complete' AND window_end = to_timestamp({end})");
    env.until(&format!("the window ending at {end} measured"), &measured).await;
}

#[derive(QueryableByName, Debug)]
struct WindowRun {
    #[diesel(sql_type = BigInt)]
    start: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    gap_reason: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
    cpu: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
    finished: Option<i64>,
}

/// Every run of the cluster, oldest window first, with ada's sample and when it finished.
async fn window_runs(env: &Env, cluster: Uuid) -> Vec<WindowRun> {
    let mut conn = env.db.connect("metering").await;
    diesel::sql_query(format!(
        "SELECT extract(epoch FROM r.window_start)::bigint AS start, r.status, r.gap_reason,
                s.cpu_nanocore_seconds::bigint AS cpu, extract(epoch FROM r.finished_at)::bigint AS finished
         FROM runs r LEFT JOIN samples s ON s.cluster_id = r.cluster_id AND s.window_start = r.window_start
              AND s.hopsworks_username = 'ada10000'
         WHERE r.cluster_id = '{cluster}' ORDER BY r.window_start"
    ))
    .load(&mut conn)
    .await
    .unwrap()
}

/// Every window from `first` to the last scheduled has exactly one run, none left pending.
fn assert_no_holes(runs: &[WindowRun], first: i64) {
    let starts: Vec<i64> = runs.iter().map(|r| r.start).collect();
    let want: Vec<i64> = (0..i64::try_from(runs.len()).unwrap()).map(|i| first + i * QUARTER).collect();
    assert_eq!(starts, want, "one run per window from the first measured on: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simulated_hour_at_60x_has_every_window_measured_at_its_own_time() {
    let mut env = Env::start().await;
    let workload = bursty_workload();
    let sim = sim_of("eu-1", &env.clock, workload.clone());
    let (cluster, first, _base) = on_the_sandbox_clock(&mut env, &sim).await;

    // An hour of calendar time in a minute of real time.
    let from = env.clock.now();
    let last_end = (from + 3600).div_euclid(QUARTER) * QUARTER;
    at_60x_until_measured(&env, last_end).await;

    let runs = window_runs(&env, cluster).await;
    assert_no_holes(&runs, first);
    let hour: Vec<&WindowRun> =
        runs.iter().filter(|r| r.start + QUARTER > from && r.start + QUARTER <= last_end).collect();
    assert!(hour.len() >= 3, "the hour's windows after the cluster was registered: {runs:?}");
    for r in &runs {
        let end = r.start + QUARTER;
        assert_eq!(r.status, "complete", "no gap a real-time hour would not have: {r:?}");
        assert_eq!(r.cpu, Some(own_time_cpu(&workload, end)), "measured at its own time: {r:?}");
        let finished = r.finished.unwrap();
        assert!((end..end + DEADLINE).contains(&finished), "finished on the calendar, within its deadline: {r:?}");
    }
    let rates: std::collections::BTreeSet<i64> = hour.iter().filter_map(|r| r.cpu).collect();
    assert_eq!(rates.len(), 2, "the windows differ, so each was read at its own time: {hour:?}");
    env.assert_consistent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jump_of_an_hour_leaves_gaps_only_where_it_passed_a_deadline_and_measuring_goes_on_from_there() {
    let mut env = Env::start().await;
    let workload = bursty_workload();
    let sim = sim_of("eu-1", &env.clock, workload.clone());
    let (cluster, first, base) = on_the_sandbox_clock(&mut env, &sim).await;

    // Everything due before the jump measured, the clock stopped a moment so the test knows
    // where it jumps from and lands.
    env.clock.set_rate(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.until(
        "nothing due left",
        "SELECT (count(*) = 0)::int::bigint AS n FROM runs WHERE status IN ('pending', 'running')",
    )
    .await;
    let from = env.clock.now();
    env.clock.advance(3600);
    let landed = from + 3600;
    // Noticed at once: the windows whose deadline the jump passed are gaps straight away.
    let passed = (first..)
        .step_by(usize::try_from(QUARTER).unwrap())
        .take_while(|start| start + QUARTER + DEADLINE <= landed)
        .filter(|start| start + QUARTER + 3 > from)
        .count();
    assert!(passed >= 2, "the jump passes the deadlines of the hour's windows but the last one or two");
    let soon = tokio::time::Instant::now() + Duration::from_secs(3);
    let (status, gaps) = loop {
        let (status, gaps) = env.call(&base, Method::GET, "/api/admin/metering/gaps", Some(&admin()), None).await;
        if gaps["total"].as_u64() >= Some(u64::try_from(passed).unwrap()) || tokio::time::Instant::now() > soon {
            break (status, gaps);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((status, gaps["total"].as_u64()), (StatusCode::OK, Some(u64::try_from(passed).unwrap())), "{gaps}");
    // Metering has seen the jump; provisioning, which dates the registration below, reads the
    // clock every 100 ms and may not have yet on a loaded machine (a registration dated an hour
    // before the jump is measured from then).
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A cluster registered after the jump is measured from then on the calendar, not from the
    // machine's time an hour before.
    let other = sim_of("eu-2", &env.clock, workload.clone());
    let second = env.register("eu-2", &other).await;
    env.until("eu-2 known", &format!("SELECT count(*) AS n FROM clusters WHERE cluster_id = '{second}'")).await;
    // Then the clock runs at 60× through the next two windows.
    let after = (landed.div_euclid(QUARTER) + 2) * QUARTER;
    at_60x_until_measured(&env, after).await;

    let runs = window_runs(&env, cluster).await;
    assert_no_holes(&runs, first);
    assert!(
        runs.iter().filter(|r| r.start + QUARTER <= landed).count() >= 3,
        "the skipped hour is scheduled: {runs:?}"
    );
    for r in &runs {
        let end = r.start + QUARTER;
        if end + 3 > from && end + DEADLINE <= landed {
            // The jump passed its deadline before anyone could measure it: at real speed, an
            // hour in which metering measured nothing leaves the same gap.
            assert_eq!((r.status.as_str(), r.gap_reason.as_deref()), ("gap", Some("not_collected")), "{r:?}");
            assert_eq!(r.cpu, None, "nothing invented for a skipped window");
        } else {
            assert_eq!(r.status, "complete", "no other gap: {r:?}");
            assert_eq!(r.cpu, Some(own_time_cpu(&workload, end)), "measured within 5 minutes of its end: {r:?}");
        }
    }
    assert!(runs.iter().filter(|r| r.start >= landed).count() >= 1, "measuring goes on after the jump: {runs:?}");
    let runs = window_runs(&env, second).await;
    assert_no_holes(&runs, (landed + QUARTER - 1).div_euclid(QUARTER) * QUARTER);
    assert!(!runs.is_empty());
    for r in &runs {
        assert_eq!(r.status, "complete", "eu-2 has no gap: {r:?}");
        assert_eq!(r.cpu, Some(own_time_cpu(&workload, r.start + QUARTER)), "{r:?}");
    }
    env.assert_consistent().await;
}

/// Starts `replicas` metering replicas under gap policy `policy` on one populated cluster, lets
/// it measure a window, fails its API server until `gaps` windows after setup are gaps, then
/// heals it and waits until every gap after setup has its estimate. Answers the sandbox, the
/// first replica's URL, the cluster, when setup was done and the gaps' window starts.
async fn gaps_estimated(env: &mut Env, policy: &str, replicas: usize, gaps: i64) -> (Sim, String, Uuid, i64, Vec<i64>) {
    let sim = sim("eu-1", &env.clock);
    let extra = [("gaps.policy", policy), ("gaps.neighbour_windows", "4")];
    let mut bases = Vec::new();
    for _ in 0..replicas {
        bases.push(env.metering(1, &extra).await.0);
    }
    let (_ada, _bob, cluster, ready) = populated(env, &sim).await;
    let after_ready = format!("cluster_id = '{cluster}' AND window_start >= to_timestamp({ready})");
    env.until(
        "a window measured after setup",
        &format!("SELECT count(*) AS n FROM runs WHERE {after_ready} AND status = 'complete'"),
    )
    .await;
    sim.kube.set_faults(Faults { server_error: Some(503), ..Faults::default() });
    env.until(
        "gaps while the cluster fails",
        &format!("SELECT (count(*) >= {gaps})::int::bigint AS n FROM runs WHERE {after_ready} AND status = 'gap'"),
    )
    .await;
    sim.kube.set_faults(Faults::default());
    env.until(
        "every gap after setup estimated",
        &format!(
            "SELECT (count(*) >= {gaps} AND count(*) = count(e.id))::int::bigint AS n
             FROM runs r LEFT JOIN gap_estimates e USING (cluster_id, window_start)
             WHERE r.{after_ready} AND r.status = 'gap'"
        ),
    )
    .await;
    let starts = env
        .s(&format!(
            "SELECT extract(epoch FROM window_start)::bigint::text AS s FROM runs WHERE {after_ready} AND status = 'gap'
             ORDER BY window_start"
        ))
        .await
        .into_iter()
        .map(|s| s.parse().unwrap())
        .collect();
    (sim, bases.remove(0), cluster, ready, starts)
}

/// Estimated samples of `cluster` whose quantities are not the neighbours' formula: per key
/// `(before + after) / 2` truncated (a key missing from a window counts zero there), pods the
/// larger, `estimated_ms` the pods times the window, marked estimated; and keys of the
/// neighbours with usage that have no estimated sample.
const NOT_THE_FORMULA: &str = "
    WITH e AS (SELECT * FROM gap_estimates WHERE cluster_id = $1 AND status = 'published'),
    keys AS (
        SELECT DISTINCT e.id, s.namespace, s.hopsworks_username FROM e
        JOIN samples s ON s.cluster_id = e.cluster_id AND s.window_start IN (e.before_window, e.after_window)
        WHERE s.cpu_nanocore_seconds + s.memory_byte_seconds + s.gpu_seconds > 0)
    SELECT count(*) AS n FROM keys k JOIN e ON e.id = k.id
    LEFT JOIN samples g ON g.cluster_id = e.cluster_id AND g.window_start = e.window_start
        AND (g.namespace, g.hopsworks_username) = (k.namespace, k.hopsworks_username)
    LEFT JOIN samples b ON b.cluster_id = e.cluster_id AND b.window_start = e.before_window
        AND (b.namespace, b.hopsworks_username) = (k.namespace, k.hopsworks_username)
    LEFT JOIN samples a ON a.cluster_id = e.cluster_id AND a.window_start = e.after_window
        AND (a.namespace, a.hopsworks_username) = (k.namespace, k.hopsworks_username)
    WHERE g.id IS NULL OR NOT g.estimated
       OR g.cpu_nanocore_seconds <> (coalesce(b.cpu_nanocore_seconds, 0) + coalesce(a.cpu_nanocore_seconds, 0)) / 2
       OR g.memory_byte_seconds <> (coalesce(b.memory_byte_seconds, 0) + coalesce(a.memory_byte_seconds, 0)) / 2
       OR g.gpu_seconds <> (coalesce(b.gpu_seconds, 0) + coalesce(a.gpu_seconds, 0)) / 2
       OR g.pods <> greatest(coalesce(b.pods, 0), coalesce(a.pods, 0))
       OR g.estimated_ms <> g.pods::bigint * 1000 * (extract(epoch FROM g.window_end - g.window_start))::bigint";

impl Env {
    /// [`NOT_THE_FORMULA`] for `cluster`.
    async fn not_the_formula(&self, cluster: Uuid) -> i64 {
        let mut conn = self.db.connect("metering").await;
        diesel::sql_query(NOT_THE_FORMULA)
            .bind::<diesel::sql_types::Uuid, _>(cluster)
            .get_result::<N>(&mut conn)
            .await
            .unwrap()
            .n
    }

    /// The UsageRecorded events of windows starting at `start`.
    async fn events_of(&self, start: i64) -> Vec<UsageRecordedV1> {
        self.usage_events().await.into_iter().filter(|e| e.window_start_unix_seconds == start).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_estimate_a_gap_is_filled_once_with_the_mean_of_its_neighbours_marked_estimated() {
    let mut env = Env::start().await;
    // Two replicas, both estimating.
    let (_sim, base, cluster, _ready, starts) = gaps_estimated(&mut env, "estimate", 2, 1).await;
    let published = env
        .n(&format!(
            "SELECT count(*) AS n FROM gap_estimates WHERE cluster_id = '{cluster}' AND status = 'published'
             AND basis = 'neighbours' AND before_window IS NOT NULL AND after_window IS NOT NULL AND decided_by IS NULL"
        ))
        .await;
    assert_eq!(published, i64::try_from(starts.len()).unwrap(), "one published estimate per gap, from both neighbours");
    assert_eq!(env.not_the_formula(cluster).await, 0, "every estimated sample is the neighbours' mean");
    for &start in &starts {
        // The steady pods' neighbours are equal: the mean is ada's rate over the window, exactly.
        let ada = env
            .n(&format!(
                "SELECT cpu_nanocore_seconds AS n FROM samples WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({start})
                 AND hopsworks_username = 'ada10000' AND namespace = 'ada-lab' AND estimated"
            ))
            .await;
        assert_eq!(ada, ADA_CPU * WINDOW);
        let samples = env
            .n(&format!("SELECT count(*) AS n FROM samples WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({start})"))
            .await;
        assert_eq!(samples, 6, "one sample per (namespace, username) of the workload");
        let events = env.events_of(start).await;
        assert_eq!(
            events.len(),
            4,
            "one UsageRecorded per billed sample (ada, bob, the stranger's and the unlabelled pod)"
        );
        assert!(events.iter().all(|e| e.estimated), "every event is marked estimated: {events:?}");
        let run = env
            .s(&format!(
                "SELECT status AS s FROM runs WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({start})"
            ))
            .await;
        assert_eq!(run, vec!["gap"], "the window stays a gap: it was not measured");
    }
    env.assert_consistent().await;

    // Made again from scratch (its record lost): the samples exist, so nothing is added or
    // announced twice.
    let first = starts[0];
    let sums = format!(
        "SELECT sum(cpu_nanocore_seconds)::bigint AS n FROM samples WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({first})"
    );
    let before = (env.n(&sums).await, env.events_of(first).await.len());
    env.exec(&format!(
        "DELETE FROM gap_estimates WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({first})"
    ))
    .await;
    env.until(
        "the gap estimated again",
        &format!(
            "SELECT count(*) AS n FROM gap_estimates WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({first})
             AND status = 'published'"
        ),
    )
    .await;
    assert_eq!((env.n(&sums).await, env.events_of(first).await.len()), before, "nothing counted twice");
    let linked = env
        .n(&format!(
            "SELECT count(sample_id) AS n FROM gap_estimate_lines l JOIN gap_estimates e ON e.id = l.estimate_id
             WHERE e.cluster_id = '{cluster}' AND e.window_start = to_timestamp({first})"
        ))
        .await;
    assert_eq!(linked, 0, "the second estimate wrote no sample");
    env.assert_consistent().await;

    // The admin API shows every estimate and its basis.
    let (status, page) = env
        .call(&base, Method::GET, &format!("/api/admin/metering/estimates?cluster_id={cluster}"), Some(&admin()), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"].as_u64(), Some(u64::try_from(starts.len()).unwrap()), "{page}");
    let item = &page["items"][0];
    assert_eq!((item["status"].as_str(), item["basis"].as_str()), (Some("published"), Some("neighbours")), "{item}");
    assert_eq!(item["lines"].as_array().map(Vec::len), Some(6), "{item}");
    // Under `estimate` there is nothing to decide.
    let id = item["id"].as_str().unwrap();
    let path = format!("/api/admin/metering/estimates/{id}/approve");
    let (status, body) = env.call(&base, Method::POST, &path, Some(&admin()), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("estimate_decided")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_review_estimates_wait_for_an_admin_who_approves_or_rejects_each_once() {
    let mut env = Env::start().await;
    let (_sim, base, cluster, _ready, starts) = gaps_estimated(&mut env, "review", 1, 2).await;
    let (first, second) = (starts[0], starts[1]);
    let pending = env
        .n(&format!("SELECT count(*) AS n FROM gap_estimates WHERE cluster_id = '{cluster}' AND status = 'pending'"))
        .await;
    assert_eq!(pending, i64::try_from(starts.len()).unwrap(), "every gap's estimate waits");
    let in_gaps = format!(
        "SELECT count(*) AS n FROM samples WHERE cluster_id = '{cluster}' AND window_start IN (SELECT window_start FROM runs
         WHERE cluster_id = '{cluster}' AND status = 'gap')"
    );
    assert_eq!(env.n(&in_gaps).await, 0, "nothing published before review");
    assert!(env.events_of(first).await.is_empty());

    let list = |query: &str| format!("/api/admin/metering/estimates?cluster_id={cluster}{query}");
    let (status, page) = env.call(&base, Method::GET, &list("&status=pending"), Some(&admin()), None).await;
    assert_eq!(
        (status, page["total"].as_u64()),
        (StatusCode::OK, Some(u64::try_from(starts.len()).unwrap())),
        "{page}"
    );
    let id_of = |start: i64| {
        let at = chrono::DateTime::from_timestamp(start, 0).unwrap();
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["window_start"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok()) == Some(at)
            })
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (a, b) = (id_of(first), id_of(second));
    for (query, code) in
        [("&status=lost", "invalid_estimate_status"), ("&limit=0", "invalid_query"), ("&colour=red", "invalid_query")]
    {
        let (status, body) = env.call(&base, Method::GET, &list(query), Some(&admin()), None).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{query}: {body}");
    }
    let stranger = person(Uuid::now_v7());
    let (status, body) = env.call(&base, Method::GET, &list(""), Some(&stranger), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    let decide = |id: &str, what: &str| format!("/api/admin/metering/estimates/{id}/{what}");
    for what in ["approve", "reject"] {
        let (status, body) = env.call(&base, Method::POST, &decide(&a, what), Some(&stranger), None).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")), "{body}");
        let (status, body) =
            env.call(&base, Method::POST, &decide(&Uuid::now_v7().to_string(), what), Some(&admin()), None).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("estimate_not_found")), "{body}");
        let (status, _) = env.call(&base, Method::POST, &decide("not-a-uuid", what), Some(&admin()), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(env.n(&in_gaps).await, 0, "refusals change nothing");

    // Approved: published exactly as under `estimate`.
    let (status, approved) = env.call(&base, Method::POST, &decide(&a, "approve"), Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(
        (approved["status"].as_str(), approved["decided_by"].as_str()),
        (Some("published"), Some("auth0|admin"))
    );
    assert_eq!(env.not_the_formula(cluster).await, 0, "the approved estimate is the neighbours' mean");
    let events = env.events_of(first).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events.iter().all(|e| e.estimated));
    // Rejected: the window stays a gap, nothing written.
    let (status, rejected) = env.call(&base, Method::POST, &decide(&b, "reject"), Some(&admin()), None).await;
    assert_eq!((status, rejected["status"].as_str()), (StatusCode::OK, Some("rejected")), "{rejected}");
    let second_samples = format!(
        "SELECT count(*) AS n FROM samples WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({second})"
    );
    assert_eq!(env.n(&second_samples).await, 0);
    assert!(env.events_of(second).await.is_empty());
    // Each is decided once.
    let totals = (env.n(&in_gaps).await, env.events_of(first).await.len() + env.events_of(second).await.len());
    for (id, what) in [(&a, "approve"), (&a, "reject"), (&b, "approve"), (&b, "reject")] {
        let (status, body) = env.call(&base, Method::POST, &decide(id, what), Some(&admin()), None).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("estimate_decided")), "{what}: {body}");
    }
    let after = (env.n(&in_gaps).await, env.events_of(first).await.len() + env.events_of(second).await.len());
    assert_eq!(after, totals, "409s change nothing");
    env.assert_consistent().await;
}
