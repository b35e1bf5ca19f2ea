//! Storage measured per Hopsworks project (decision 0056), by the metering service in-process
//! with provisioning, against the real Postgres and NATS and the sandbox's Hopsworks, over a
//! simulated day on the sandbox's clock: every hour's snapshot stored once per project and
//! announced once, attributed by project id to its creator and their owner although no pod
//! runs; the day's byte-seconds exactly the snapshots the sandbox answered; a failed read a gap
//! with nothing announced; a project without a quota a gap of its own; a window read again,
//! and an inactive cluster, measured as before; storage in the usage views. Online storage from
//! the cluster's RonDB (decision 0071): stored and announced per project, a failed RonDB read a
//! gap of each project's online part, a cluster without RonDB recorded as not configured.
//! Storage gaps under the gap policy (decision 0076): under `estimate` each gapped project's
//! window filled once with the mean of its measured neighbours (or the one before alone once
//! the one after can no longer come), marked estimated and announced once by two replicas;
//! under `review` held for an administrator; under `record` (the simulated day) nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{admin, person};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bytea};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::events::{
    Envelope, PaymentMethodAddedV1, StorageRecordedV1, TeamMemberJoinedV1, UserCreatedV1,
};
use hopsbridge_contracts::{Event, Service};
use hopsbridge_metering::MeteringConfig;
use hopsbridge_platform::caller::{Caller, CallerSigner};
use hopsbridge_provisioning::ProvisioningConfig;
use hopsbridge_sandbox::clock::{ClockServer, SimClock};
use hopsbridge_sandbox::hopsworks::{Directory, HopsworksConfig, HopsworksSim, ProjectStorage, Route};
use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
use hopsbridge_sandbox::rondb::{Grant, READER_USER, RonDbSim, Table};
use hopsbridge_sandbox::workload::Workload;
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CLIENT_ID: &str = "hopsbridge-oauth-client";
const HOUR: i64 = 3600;
/// Seconds into each hour the sandbox's clock is moved to: the snapshot is taken then.
const INTO: i64 = 10;
const WAIT: Duration = Duration::from_secs(90);

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

struct Env {
    db: TestDb,
    bus: TestBus,
    key: CallerSigner,
    provisioning: String,
    clock: Arc<SimClock>,
    clock_server: ClockServer,
    hopsworks: HopsworksSim,
    kube: KubeCluster,
    stops: Vec<CancellationToken>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for s in &self.stops {
            s.cancel();
        }
    }
}

impl Env {
    /// provisioning following a sandbox clock standing at `at`, and one cluster's sandboxes.
    async fn start(at: i64) -> Self {
        hopsbridge_testkit::init();
        let db = TestDb::new().await;
        let bus = TestBus::new().await;
        let clock = Arc::new(SimClock::new(at));
        let clock_server = ClockServer::start(Arc::clone(&clock)).unwrap();
        let hopsworks = HopsworksSim::start(HopsworksConfig::new(
            "st-1",
            &format!("hw-key-{}", Uuid::new_v4().simple()),
            CLIENT_ID,
        ))
        .unwrap();
        hopsworks.use_clock(Arc::clone(&clock));
        let kube = KubeCluster::start(
            "st-1",
            Arc::new(Workload::new(vec![], vec![])),
            Arc::clone(&clock),
            KubeOptions::default(),
        )
        .unwrap();
        let settings = TestSettings::provisioning(&db, &bus)
            .set("hopsworks.request_timeout_ms", "2000")
            .clock(&clock_server.url());
        let config: ProvisioningConfig = TestSettings::load(&settings, &hopsbridge_provisioning::DEFAULTS);
        let app = hopsbridge_provisioning::build(config).await.unwrap();
        let provisioning = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(stop.clone()));
        let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
        Self { db, bus, key, provisioning, clock, clock_server, hopsworks, kube, stops: vec![stop] }
    }

    /// A metering replica on the sandbox's clock, storage in hourly windows.
    async fn metering(&mut self) -> String {
        self.metering_with(&[]).await
    }

    /// A metering replica as [`metering`](Self::metering) starts one, with `extra` settings.
    async fn metering_with(&mut self, extra: &[(&str, &str)]) -> String {
        let mut settings = TestSettings::data_service(Service::Metering, &self.db, &self.bus)
            .set("http.workers", "2")
            .set("provisioning.url", &self.provisioning)
            .set("clock.follow_url", self.clock_server.url())
            .set("collect.source", "point")
            .set("schedule.lookback_secs", "3600")
            .set("schedule.max_attempts", "2")
            .set("schedule.retry_delay_ms", "100")
            .set("schedule.lease_secs", "20")
            .set("schedule.tick_ms", "100")
            .set("storage.window_secs", HOUR.to_string())
            .set("storage.lookback_secs", "7200");
        for (key, value) in extra {
            settings = settings.set(key, *value);
        }
        let config: MeteringConfig = TestSettings::load(&settings, &hopsbridge_metering::DEFAULTS);
        let app = hopsbridge_metering::build(config).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(stop.clone()));
        self.stops.push(stop);
        base
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

    async fn register(&self) -> Uuid {
        self.register_with(json!({})).await
    }

    /// Registers the cluster with `extra` fields too.
    async fn register_with(&self, extra: Value) -> Uuid {
        let mut body = json!({
            "name": "st-1",
            "api_url": self.hopsworks.origin(),
            "api_key": self.hopsworks.api_key(),
            "kubeconfig": self.kube.kubeconfig(),
            "ca_bundle": self.hopsworks.ca_pem(),
            "oauth_client_id": CLIENT_ID,
            "capacity": 10,
            "region": "eu-north-1",
            "status": "active",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, body) =
            self.call(&self.provisioning, Method::POST, "/api/admin/clusters", Some(&admin()), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    async fn publish<E: Event>(&self, event: &E) {
        self.bus.publish(event, None).await;
    }

    /// A paying person, so provisioning makes their Hopsworks account and announces it.
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

    async fn exec(&self, sql: &str) -> usize {
        let mut conn = self.db.connect("metering").await;
        diesel::sql_query(sql).execute(&mut conn).await.unwrap()
    }

    async fn until(&self, what: &str, sql: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.n(sql).await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Moves the clock `INTO` seconds into the hour starting at `start` and waits until that
    /// storage window is complete or a gap; answers its status.
    async fn hour(&self, cluster: Uuid, start: i64) -> String {
        self.clock.set(start + INTO);
        let done = format!(
            "SELECT count(*) AS n FROM storage_runs WHERE cluster_id = '{cluster}'
               AND window_start = to_timestamp({start}) AND status IN ('complete', 'gap')"
        );
        self.until(&format!("the storage window at {start} ends"), &done).await;
        let mut conn = self.db.connect("metering").await;
        #[derive(QueryableByName)]
        struct S {
            #[diesel(sql_type = diesel::sql_types::Text)]
            s: String,
        }
        diesel::sql_query(format!(
            "SELECT status AS s FROM storage_runs WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({start})"
        ))
        .get_result::<S>(&mut conn)
        .await
        .unwrap()
        .s
    }

    async fn events(&self) -> Vec<StorageRecordedV1> {
        #[derive(QueryableByName)]
        struct B {
            #[diesel(sql_type = Bytea)]
            b: Vec<u8>,
        }
        let mut conn = self.db.connect("metering").await;
        let rows: Vec<B> = diesel::sql_query("SELECT envelope AS b FROM outbox WHERE event_type = 'StorageRecorded'")
            .load(&mut conn)
            .await
            .unwrap();
        rows.into_iter()
            .map(|r| StorageRecordedV1::decode(Envelope::decode(r.b.as_slice()).unwrap().payload.as_slice()).unwrap())
            .collect()
    }
}

/// Byte-seconds of one project over the day's windows, from the storage the sandbox answered
/// INTO seconds into each hour (as a client reads Hopsworks' floats back), windows in `gaps`
/// left out.
fn truth(sim: &HopsworksSim, project: u64, day: i64, gaps: &[i64]) -> u64 {
    (0..24)
        .map(|h| day + h * HOUR)
        .filter(|start| !gaps.contains(start))
        .map(|start| sim.storage_at(project, start + INTO).unwrap().reported_offline_bytes().unwrap() * 3600)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simulated_day_of_storage_is_measured_hourly_per_project_once_exactly_and_a_failed_read_is_a_gap() {
    // A UTC day well after the wall clock, so memberships joined now precede every window.
    let day = (chrono::Utc::now().timestamp() / 86_400 + 2) * 86_400;
    let mut env = Env::start(day - HOUR + 600).await;
    let base = env.metering().await;
    let cluster = env.register().await;
    let ada = env.paying("ada@example.com").await;
    let bob = env.paying("bob@example.com").await;
    env.until(
        "both accounts known",
        "SELECT (count(*) = 2)::int::bigint AS n FROM accounts WHERE assigned_at IS NOT NULL",
    )
    .await;
    let hw = &env.hopsworks;
    // ada's lab grows through the day (no pod ever runs in it); bob's project has no feature
    // store and shrinks; a stranger's project without a quota is never reported.
    let lab = hw.create_project("ada10000", "ada_lab").unwrap();
    // bob made his project before joining ada's team (members make none).
    let bobs = hw.create_project("bob10000", "bob_nofs").unwrap();
    hw.set_storage_at(lab.id, day, ProjectStorage::of(1 << 30, Some(5 << 20), Some(0))).unwrap();
    hw.set_storage_at(lab.id, day + 6 * HOUR, ProjectStorage::of((3 << 30) + 12_345, Some(5 << 20), Some(777 << 20)))
        .unwrap();
    hw.set_storage_at(lab.id, day + 13 * HOUR + 1800, ProjectStorage::of(10_000_000_001, Some(1), Some(2))).unwrap();
    hw.set_storage_at(bobs.id, day, ProjectStorage::of(500 << 20, Some(1 << 20), None)).unwrap();
    hw.set_storage_at(bobs.id, day + 20 * HOUR, ProjectStorage::of(100, Some(0), None)).unwrap();
    let admin_name = hw.admin().unwrap().username;
    let unquoted = hw.create_project(&admin_name, "no_quota").unwrap();
    let dir = Directory::holding(1 << 30).without_quota();
    hw.set_storage_at(unquoted.id, day, ProjectStorage { project: dir, hive: None, featurestore: None }).unwrap();

    env.publish(&TeamMemberJoinedV1 {
        owner_user_id: ada.to_string(),
        member_user_id: bob.to_string(),
        project_role: "Data scientist".into(),
        ..TeamMemberJoinedV1::default()
    })
    .await;
    env.until("bob's membership known", "SELECT count(*) AS n FROM memberships").await;
    let failed_hour = day + 12 * HOUR;
    for h in 0..24 {
        let start = day + h * HOUR;
        if start == failed_hour {
            // Every read of this hour fails: provisioning's retries and metering's tries.
            env.hopsworks.fail_next_on(Route::ProjectQuotas, 1000, 503);
        }
        if h == 18 {
            // An inactive cluster's projects keep their data: still measured.
            let path = format!("/api/admin/clusters/{cluster}");
            let (status, body) = env
                .call(&env.provisioning, Method::PATCH, &path, Some(&admin()), Some(json!({"status": "inactive"})))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            env.until(
                "the cluster inactive in metering",
                "SELECT count(*) AS n FROM clusters WHERE status = 'inactive'",
            )
            .await;
        }
        let status = env.hour(cluster, start).await;
        if start == failed_hour {
            assert_eq!(status, "gap", "a failed read is a gap");
            env.hopsworks.clear_faults();
        } else {
            assert_eq!(status, "complete", "hour {h}");
        }
    }

    // The failed hour: a gap with its reason, no sample and nothing announced, never a zero.
    let reason = env
        .n(&format!(
            "SELECT count(*) AS n FROM storage_runs WHERE window_start = to_timestamp({failed_hour})
               AND gap_reason = 'storage_unavailable' AND attempts = 2"
        ))
        .await;
    assert_eq!(reason, 1, "the gap says why, after schedule.max_attempts tries");
    assert_eq!(
        env.n(&format!("SELECT count(*) AS n FROM storage_samples WHERE window_start = to_timestamp({failed_hour})"))
            .await,
        0
    );
    // Without a RonDB endpoint online storage is not configured: recorded so in every run.
    assert_eq!(
        env.n(&format!(
            "SELECT count(*) AS n FROM storage_runs WHERE status = 'complete' AND window_start >= to_timestamp({day})
               AND online IS DISTINCT FROM 'online_not_configured'"
        ))
        .await,
        0
    );
    assert_eq!(env.n("SELECT count(*) AS n FROM storage_samples WHERE online_bytes <> 0").await, 0);

    let events = env.events().await;
    let in_day =
        |e: &&StorageRecordedV1| e.window_start_unix_seconds >= day && e.window_start_unix_seconds < day + 86_400;
    let of = |project: u64| {
        events.iter().filter(in_day).filter(|e| e.project_id == i64::try_from(project).unwrap()).collect::<Vec<_>>()
    };
    let (lab_events, bob_events) = (of(lab.id), of(bobs.id));
    assert_eq!((lab_events.len(), bob_events.len()), (23, 23), "one event per project and measured hour");
    assert!(of(unquoted.id).is_empty(), "a project whose storage is not reported is announced never");
    assert!(events.iter().all(|e| e.window_start_unix_seconds != failed_hour), "nothing for the failed hour");
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.sample_id.clone()).collect();
    assert_eq!(ids.len(), events.len(), "no sample announced twice");

    // Exact: the day's byte-seconds are the snapshots the sandbox answered, hour by hour.
    let lab_total: u64 = lab_events.iter().map(|e| e.offline_byte_seconds).sum();
    let bob_total: u64 = bob_events.iter().map(|e| e.offline_byte_seconds).sum();
    assert_eq!(lab_total, truth(&env.hopsworks, lab.id, day, &[failed_hour]));
    assert_eq!(bob_total, truth(&env.hopsworks, bobs.id, day, &[failed_hour]));
    assert!(lab_total > 0 && bob_total > 0);
    // Attributed by project id: ada's project to ada; bob's to bob, billed to his owner ada.
    for e in &lab_events {
        assert_eq!(
            (e.user_id.as_str(), e.owner_user_id.as_str()),
            (ada.to_string().as_str(), ada.to_string().as_str())
        );
        assert_eq!((e.namespace.as_str(), e.online_bytes, e.estimated), ("ada-lab", 0, false));
        assert!(
            e.measured_at_unix_seconds >= e.window_start_unix_seconds
                && e.measured_at_unix_seconds < e.window_end_unix_seconds
        );
        assert_eq!(e.offline_byte_seconds, e.offline_bytes * 3600);
    }
    assert!(bob_events.iter().all(|e| e.user_id == bob.to_string() && e.owner_user_id == ada.to_string()));
    // The unquoted project: a storage gap per measured hour, with the reason.
    let project_gaps = env
        .n(&format!(
            "SELECT count(*) AS n FROM storage_gaps WHERE project_id = {} AND reason = 'storage_unreported'
               AND window_start >= to_timestamp({day}) AND window_start < to_timestamp({})",
            unquoted.id,
            day + 86_400
        ))
        .await;
    assert_eq!(project_gaps, 23);

    // A window read again (its run handed out anew while it is under way) adds nothing and
    // announces nothing.
    let last = day + 23 * HOUR;
    let before = (env.events().await.len(), env.n("SELECT count(*) AS n FROM storage_samples").await);
    let reset = env
        .exec(&format!(
            "UPDATE storage_runs SET status = 'pending', next_attempt_at = now(), finished_at = NULL
             WHERE cluster_id = '{cluster}' AND window_start = to_timestamp({last})"
        ))
        .await;
    assert_eq!(reset, 1);
    env.until(
        "the window read again",
        &format!(
            "SELECT count(*) AS n FROM storage_runs WHERE window_start = to_timestamp({last})
               AND status = 'complete' AND attempts >= 2"
        ),
    )
    .await;
    let after = (env.events().await.len(), env.n("SELECT count(*) AS n FROM storage_samples").await);
    assert_eq!(after, before, "a rerun stores and announces nothing twice");

    // The usage views: storage per project and day, for the owner and for admins.
    let today = chrono::DateTime::from_timestamp(day, 0).unwrap().date_naive();
    let (status, mine) =
        env.call(&base, Method::GET, &format!("/api/usage?from={today}&to={today}"), Some(&person(ada)), None).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let row = |rows: &Value, ns: &str| rows.as_array().unwrap().iter().find(|r| r["namespace"] == ns).cloned().unwrap();
    let lab_row = row(&mine, "ada-lab");
    assert_eq!(lab_row["storage_offline_byte_seconds"].as_u64(), Some(lab_total));
    assert_eq!(lab_row["storage_samples"], 23);
    assert_eq!(lab_row["cpu_nanocore_seconds"], 0, "storage without pods has a row of its own");
    assert!(lab_row["storage_gb_months"].as_str().unwrap().starts_with("0."), "{lab_row}");
    assert_eq!(
        row(&mine, "bob-nofs")["storage_offline_byte_seconds"].as_u64(),
        Some(bob_total),
        "the owner sees the team's"
    );
    let path = format!("/api/admin/usage?owner_user_id={ada}&from={today}&to={today}");
    let (status, all) = env.call(&base, Method::GET, &path, Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(row(&all, "ada-lab")["storage_offline_byte_seconds"].as_u64(), Some(lab_total));

    // The admins' storage samples behind ada's day, and the storage gaps with their reasons.
    let path = format!("/api/admin/usage/storage-samples?user_id={ada}&day={today}");
    let (status, samples) = env.call(&base, Method::GET, &path, Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{samples}");
    let samples = samples.as_array().unwrap();
    assert_eq!(samples.len(), 23, "ada's project, every measured hour");
    let summed: u64 = samples.iter().map(|s| s["offline_byte_seconds"].as_u64().unwrap()).sum();
    assert_eq!(summed, lab_total);
    let instant =
        |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let path = format!(
        "/api/admin/metering/storage-gaps?cluster_id={cluster}&from={}&to={}",
        instant(day),
        instant(day + 86_400)
    );
    let (status, gaps) = env.call(&base, Method::GET, &path, Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{gaps}");
    let gaps = gaps.as_array().unwrap();
    let whole: Vec<&Value> = gaps.iter().filter(|g| g["project_id"].is_null()).collect();
    assert_eq!(whole.len(), 1, "{gaps:?}");
    assert_eq!(whole[0]["reason"], "storage_unavailable");
    assert_eq!(
        whole[0]["window_start"].as_str().map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp()),
        Some(failed_hour)
    );
    assert_eq!(
        gaps.iter().filter(|g| g["project_id"] == unquoted.id && g["reason"] == "storage_unreported").count(),
        23
    );
    let (status, body) = env.call(&base, Method::GET, &path, Some(&person(ada)), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    let backwards = format!("/api/admin/metering/storage-gaps?from={}&to={}", instant(day + 10), instant(day));
    let (status, body) = env.call(&base, Method::GET, &backwards, Some(&admin()), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_range")));

    // The calendar jumps three hours (metering saw none of them): those within the lookback
    // (two hours here) are gaps, never zeros, and the hour under way is measured.
    let after_jump = day + 27 * HOUR;
    assert_eq!(env.hour(cluster, after_jump).await, "complete");
    let missed = env
        .n(&format!(
            "SELECT count(*) AS n FROM storage_runs WHERE cluster_id = '{cluster}' AND status = 'gap'
               AND gap_reason = 'not_collected' AND window_start >= to_timestamp({}) AND window_start < to_timestamp({after_jump})",
            day + 24 * HOUR
        ))
        .await;
    assert_eq!(missed, 2, "the two hours within storage.lookback_secs");
    let unscheduled = env
        .n(&format!("SELECT count(*) AS n FROM storage_runs WHERE window_start = to_timestamp({})", day + 24 * HOUR))
        .await;
    assert_eq!(unscheduled, 0, "an hour beyond the lookback is not scheduled at all");
    let stored = env
        .n(&format!(
            "SELECT count(*) AS n FROM storage_samples WHERE window_start >= to_timestamp({}) AND window_start < to_timestamp({after_jump})",
            day + 24 * HOUR
        ))
        .await;
    assert_eq!(stored, 0, "nothing stored for the hours not read");
    // Under the default gap policy, record, no storage gap is estimated (decision 0076).
    assert_eq!(env.n("SELECT count(*) AS n FROM storage_gap_estimates").await, 0, "record estimates nothing");
    assert_eq!(env.n("SELECT count(*) AS n FROM storage_samples WHERE estimated").await, 0);
    assert!(env.events().await.iter().all(|e| !e.estimated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_storage_is_read_from_rondb_stored_announced_and_a_failed_read_is_a_gap_of_the_online_part() {
    let day = (chrono::Utc::now().timestamp() / 86_400 + 2) * 86_400;
    let mut env = Env::start(day - HOUR + 600).await;
    let _base = env.metering().await;
    let rondb = RonDbSim::start().unwrap();
    let cluster = env
        .register_with(json!({
            "rondb_endpoint": rondb.endpoint(),
            "rondb_user": READER_USER,
            "rondb_password": rondb.password(),
        }))
        .await;
    let ada = env.paying("ada@example.com").await;
    env.until("ada's account known", "SELECT count(*) AS n FROM accounts WHERE assigned_at IS NOT NULL").await;
    let lab = env.hopsworks.create_project("ada10000", "Ada_Lab").unwrap();
    env.hopsworks.set_storage_at(lab.id, day, ProjectStorage::of(1 << 30, Some(0), Some(0))).unwrap();
    // Hopsworks' online database of the project is its name in lower case.
    rondb.set_database(
        "ada_lab",
        vec![Table::holding("fg_1", 123_456_789, 4, 65_536), Table::holding("fg_2", 11, 1, 0)],
    );
    let online = 123_456_789 + 65_536 + 11_u64;

    assert_eq!(env.hour(cluster, day).await, "complete");
    let sample = format!(
        "SELECT count(*) AS n FROM storage_samples WHERE project_id = {} AND window_start = to_timestamp({day})
           AND online_bytes = {online} AND online_byte_seconds = {} AND offline_bytes = {}",
        lab.id,
        online * 3600,
        1_u64 << 30
    );
    assert_eq!(env.n(&sample).await, 1, "the sample holds the project's RonDB bytes");
    assert_eq!(
        env.n(&format!(
            "SELECT count(*) AS n FROM storage_runs WHERE window_start = to_timestamp({day}) AND online = 'measured'"
        ))
        .await,
        1
    );
    let events = env.events().await;
    let event = events.iter().find(|e| u64::try_from(e.project_id) == Ok(lab.id)).unwrap();
    assert_eq!((event.online_bytes, event.online_byte_seconds), (online, online * 3600));
    assert_eq!(event.user_id, ada.to_string());

    // RonDB refuses the account: the window is complete, offline measured, online a gap.
    rondb.add_account(READER_USER, "rotated-elsewhere", vec![Grant::Database("ndbinfo".into())]);
    let next = day + HOUR;
    assert_eq!(env.hour(cluster, next).await, "complete");
    let gap = format!(
        "SELECT count(*) AS n FROM storage_gaps WHERE project_id = {} AND window_start = to_timestamp({next})
           AND reason = 'online_unreported' AND detail LIKE 'rondb_access_denied%1045%'",
        lab.id
    );
    assert_eq!(env.n(&gap).await, 1, "the online part's gap says why");
    assert_eq!(
        env.n(&format!(
            "SELECT count(*) AS n FROM storage_runs WHERE window_start = to_timestamp({next}) AND online = 'online_unreported'"
        ))
        .await,
        1
    );
    assert_eq!(
        env.n(&format!(
            "SELECT count(*) AS n FROM storage_samples WHERE window_start = to_timestamp({next})
               AND offline_bytes = {} AND online_bytes = 0",
            1_u64 << 30
        ))
        .await,
        1
    );
}

/// What the gap policy tests set up (decision 0076): one cluster with RonDB; ada's lab and bob's
/// project measured in the first hour of `day`, every read of the second failing (a gap of the
/// whole cluster), measured again in the third; ada's scratch project unreported from the second
/// hour on (a project gap after the cluster's); the admin's project never reported.
struct Gapped {
    base: String,
    cluster: Uuid,
    ada: Uuid,
    bob: Uuid,
    lab: u64,
    bobs: u64,
    scratch: u64,
    unquoted: u64,
    day: i64,
    _rondb: RonDbSim,
}

async fn with_a_storage_gap(policy: &str, replicas: usize) -> (Env, Gapped) {
    let day = (chrono::Utc::now().timestamp() / 86_400 + 2) * 86_400;
    let mut env = Env::start(day - HOUR + 600).await;
    let settings = [("gaps.policy", policy), ("gaps.neighbour_windows", "2"), ("storage.lookback_secs", "86400")];
    let mut bases = Vec::new();
    for _ in 0..replicas {
        bases.push(env.metering_with(&settings).await);
    }
    let rondb = RonDbSim::start().unwrap();
    let cluster = env
        .register_with(json!({
            "rondb_endpoint": rondb.endpoint(),
            "rondb_user": READER_USER,
            "rondb_password": rondb.password(),
        }))
        .await;
    let ada = env.paying("ada@example.com").await;
    let bob = env.paying("bob@example.com").await;
    env.until(
        "both accounts known",
        "SELECT (count(*) = 2)::int::bigint AS n FROM accounts WHERE assigned_at IS NOT NULL",
    )
    .await;
    let hw = &env.hopsworks;
    let lab = hw.create_project("ada10000", "ada_lab").unwrap();
    let bobs = hw.create_project("bob10000", "bob_nofs").unwrap();
    let scratch = hw.create_project("ada10000", "ada_scratch").unwrap();
    let unquoted = hw.create_project(&hw.admin().unwrap().username, "no_quota").unwrap();
    // Each project's two hours around the gap add up to an odd number of bytes: the mean is
    // truncated.
    hw.set_storage_at(lab.id, day, ProjectStorage::of(1 << 30, Some(1), Some(0))).unwrap();
    hw.set_storage_at(lab.id, day + 2 * HOUR, ProjectStorage::of(2 << 30, Some(2), Some(0))).unwrap();
    hw.set_storage_at(bobs.id, day, ProjectStorage::of(500 << 20, Some(7), None)).unwrap();
    hw.set_storage_at(bobs.id, day + 2 * HOUR, ProjectStorage::of(300 << 20, Some(0), None)).unwrap();
    let unquota =
        |bytes| ProjectStorage { project: Directory::holding(bytes).without_quota(), hive: None, featurestore: None };
    hw.set_storage_at(scratch.id, day, ProjectStorage::of(123_456, None, None)).unwrap();
    hw.set_storage_at(scratch.id, day + HOUR, unquota(123_456)).unwrap();
    hw.set_storage_at(unquoted.id, day, unquota(1 << 30)).unwrap();
    rondb.set_database("ada_lab", vec![Table::holding("fg_1", 1_000_001, 2, 0)]);

    assert_eq!(env.hour(cluster, day).await, "complete");
    env.hopsworks.fail_next_on(Route::ProjectQuotas, 1000, 503);
    assert_eq!(env.hour(cluster, day + HOUR).await, "gap", "every read of the second hour fails");
    env.hopsworks.clear_faults();
    rondb.set_database("ada_lab", vec![Table::holding("fg_1", 2_000_004, 2, 0)]);
    assert_eq!(env.hour(cluster, day + 2 * HOUR).await, "complete");
    let gapped = Gapped {
        base: bases.remove(0),
        cluster,
        ada,
        bob,
        lab: lab.id,
        bobs: bobs.id,
        scratch: scratch.id,
        unquoted: unquoted.id,
        day,
        _rondb: rondb,
    };
    (env, gapped)
}

/// Published storage estimates of `cluster` whose sample is not the neighbours' formula: each of
/// offline and online bytes `(before + after) / 2` truncated (with one neighbour, its bytes),
/// the estimate's own bytes the sample's, byte-seconds the bytes times the hour, taken as of the
/// window's start, marked estimated, from samples that were not.
fn not_the_storage_formula(cluster: Uuid) -> String {
    format!(
        "SELECT count(*) AS n FROM storage_gap_estimates e
         LEFT JOIN storage_samples g ON g.id = e.sample_id
         LEFT JOIN storage_samples b
             ON (b.cluster_id, b.project_id, b.window_start) = (e.cluster_id, e.project_id, e.before_window)
         LEFT JOIN storage_samples a
             ON (a.cluster_id, a.project_id, a.window_start) = (e.cluster_id, e.project_id, e.after_window)
         WHERE e.cluster_id = '{cluster}' AND e.status = 'published' AND (
             g.id IS NULL OR NOT g.estimated OR b.estimated OR a.estimated OR (a.id IS NULL AND b.id IS NULL)
             OR g.offline_bytes <> CASE WHEN a.id IS NULL THEN b.offline_bytes WHEN b.id IS NULL THEN a.offline_bytes
                                        ELSE (b.offline_bytes + a.offline_bytes) / 2 END
             OR g.online_bytes <> CASE WHEN a.id IS NULL THEN b.online_bytes WHEN b.id IS NULL THEN a.online_bytes
                                       ELSE (b.online_bytes + a.online_bytes) / 2 END
             OR (e.offline_bytes, e.online_bytes) <> (g.offline_bytes, g.online_bytes)
             OR g.offline_byte_seconds <> g.offline_bytes * {HOUR} OR g.online_byte_seconds <> g.online_bytes * {HOUR}
             OR g.measured_at <> g.window_start)"
    )
}

impl Env {
    /// One project's sample bytes in the window starting at `start`: offline, online.
    async fn bytes(&self, project: u64, start: i64) -> (i64, i64) {
        let of = |column: &str| {
            format!(
                "SELECT {column} AS n FROM storage_samples WHERE project_id = {project} AND window_start = to_timestamp({start})"
            )
        };
        (self.n(&of("offline_bytes")).await, self.n(&of("online_bytes")).await)
    }

    /// The StorageRecorded events of windows starting at `start`.
    async fn events_of(&self, start: i64) -> Vec<StorageRecordedV1> {
        self.events().await.into_iter().filter(|e| e.window_start_unix_seconds == start).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_estimate_a_storage_gap_is_filled_once_per_project_with_the_mean_of_its_neighbours_marked_estimated() {
    // Two replicas, both estimating.
    let (env, g) = with_a_storage_gap("estimate", 2).await;
    let (h0, h1, h2) = (g.day, g.day + HOUR, g.day + 2 * HOUR);
    // How many of `projects`' estimates of the window starting at `start` are published.
    let published = |start: i64, projects: String| {
        format!(
            "SELECT count(*) AS n FROM storage_gap_estimates WHERE cluster_id = '{}' AND window_start = to_timestamp({start})
               AND status = 'published' AND project_id IN ({projects})",
            g.cluster
        )
    };
    env.until(
        "the gap estimated for lab and bob's project",
        &format!("SELECT (n = 2)::int::bigint AS n FROM ({}) c", published(h1, format!("{}, {}", g.lab, g.bobs))),
    )
    .await;
    assert_eq!(env.n(&not_the_storage_formula(g.cluster)).await, 0, "every estimated sample is the neighbours' mean");
    // Exactly: lab's offline and online bytes of the hours before and after, truncated.
    let (before, after) = (env.bytes(g.lab, h0).await, env.bytes(g.lab, h2).await);
    assert_eq!((before.0 + after.0) % 2, 1, "an odd sum: the mean is truncated");
    assert_eq!((before.1 + after.1) % 2, 1);
    assert_eq!(env.bytes(g.lab, h1).await, ((before.0 + after.0) / 2, (before.1 + after.1) / 2));
    assert_eq!(
        env.bytes(g.lab, h1).await,
        (1_610_612_737, 1_500_002),
        "(2^30 + 1 + 2^31 + 2) / 2 offline, (1,000,001 + 2,000,004) / 2 online"
    );
    let lab_estimate = env
        .n(&format!(
            "SELECT count(*) AS n FROM storage_gap_estimates WHERE project_id = {} AND window_start = to_timestamp({h1})
               AND gap = 'cluster' AND policy = 'estimate' AND basis = 'neighbours' AND decided_by IS NULL
               AND before_window = to_timestamp({h0}) AND after_window = to_timestamp({h2}) AND sample_id IS NOT NULL",
            g.lab
        ))
        .await;
    assert_eq!(lab_estimate, 1, "published by the policy, from both neighbours");
    assert_eq!(
        env.n(&format!(
            "SELECT count(*) AS n FROM storage_gap_estimates WHERE project_id = {} AND window_start = to_timestamp({h1})",
            g.scratch
        ))
        .await,
        0,
        "the scratch project waits for a measured hour after the gap"
    );
    let events = env.events_of(h1).await;
    assert_eq!(events.len(), 2, "one StorageRecorded per project: {events:?}");
    assert!(events.iter().all(|e| e.estimated), "{events:?}");
    let lab_event = events.iter().find(|e| u64::try_from(e.project_id) == Ok(g.lab)).unwrap();
    assert_eq!((lab_event.offline_bytes, lab_event.online_bytes), (1_610_612_737, 1_500_002));
    assert_eq!(
        (lab_event.offline_byte_seconds, lab_event.online_byte_seconds),
        (1_610_612_737 * 3600, 1_500_002 * 3600),
        "the bytes held for the whole window, as billing checks"
    );
    assert_eq!((lab_event.user_id.clone(), lab_event.owner_user_id.clone()), (g.ada.to_string(), g.ada.to_string()));
    let bob_event = events.iter().find(|e| u64::try_from(e.project_id) == Ok(g.bobs)).unwrap();
    assert_eq!(bob_event.user_id, g.bob.to_string(), "attributed as of the window's start, as measured ones are");
    assert_eq!(
        env.n(&format!(
            "SELECT count(*) AS n FROM storage_runs WHERE window_start = to_timestamp({h1}) AND status = 'gap'"
        ))
        .await,
        1,
        "the window stays a gap: it was not measured"
    );

    // Two more hours: the last that could hold the scratch project's neighbour after the gap
    // (2 windows) has ended without one, so the hour before alone is its estimate. The project
    // never reported gets `none` once its bound has passed.
    assert_eq!(env.hour(g.cluster, g.day + 3 * HOUR).await, "complete");
    assert_eq!(env.hour(g.cluster, g.day + 4 * HOUR).await, "complete");
    env.until("the scratch project estimated from the hour before alone", &published(h1, g.scratch.to_string())).await;
    let scratch = env
        .n(&format!(
            "SELECT count(*) AS n FROM storage_gap_estimates WHERE project_id = {} AND window_start = to_timestamp({h1})
               AND before_window = to_timestamp({h0}) AND after_window IS NULL AND offline_bytes = 123456
               AND online_bytes = 0 AND detail LIKE 'the measured sample before; none within 2 windows after%'",
            g.scratch
        ))
        .await;
    assert_eq!(scratch, 1);
    assert_eq!(env.bytes(g.scratch, h1).await, env.bytes(g.scratch, h0).await);
    assert_eq!(env.n(&not_the_storage_formula(g.cluster)).await, 0);
    env.until(
        "the project never reported recorded as nothing to estimate",
        &format!(
            "SELECT count(*) AS n FROM storage_gap_estimates WHERE project_id = {} AND window_start = to_timestamp({h0})
               AND gap = 'project' AND status = 'none' AND basis IS NULL AND sample_id IS NULL
               AND detail LIKE 'no measured sample of the project within 2 windows%'",
            g.unquoted
        ),
    )
    .await;
    assert_eq!(
        env.n(&format!("SELECT count(*) AS n FROM storage_samples WHERE project_id = {}", g.unquoted)).await,
        0,
        "nothing written for it"
    );
    // The scratch project's own gap of the third hour still waits (its bound is the sixth).
    assert_eq!(
        env.n(&format!(
            "SELECT count(*) AS n FROM storage_gap_estimates WHERE project_id = {} AND window_start = to_timestamp({h2})",
            g.scratch
        ))
        .await,
        0
    );

    // Two replicas passing ten times a second through three hours made each estimate and
    // announced each sample once.
    let events = env.events_of(h1).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e.estimated));
    let ids: std::collections::HashSet<_> = env.events().await.iter().map(|e| e.sample_id.clone()).collect();
    assert_eq!(ids.len(), env.events().await.len(), "no sample announced twice");
    assert_eq!(
        env.n(&format!(
            "SELECT count(*) AS n FROM storage_samples WHERE window_start = to_timestamp({h1}) AND estimated"
        ))
        .await,
        3
    );
    assert_eq!(env.n("SELECT count(*) AS n FROM storage_samples WHERE estimated").await, 3, "nothing else estimated");

    // The admin API shows every estimate and its basis; under `estimate` nothing is left to decide.
    let path = format!("/api/admin/metering/storage-estimates?cluster_id={}&project_id={}", g.cluster, g.lab);
    let (status, page) = env.call(&g.base, Method::GET, &path, Some(&admin()), None).await;
    assert_eq!((status, page["total"].as_u64()), (StatusCode::OK, Some(1)), "{page}");
    let item = &page["items"][0];
    assert_eq!(
        (
            item["status"].as_str(),
            item["basis"].as_str(),
            item["offline_bytes"].as_i64(),
            item["online_bytes"].as_i64()
        ),
        (Some("published"), Some("neighbours"), Some(1_610_612_737), Some(1_500_002)),
        "{item}"
    );
    let path = format!("/api/admin/metering/storage-estimates/{}/approve", item["id"].as_str().unwrap());
    let (status, body) = env.call(&g.base, Method::POST, &path, Some(&admin()), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("estimate_decided")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_review_storage_estimates_wait_for_an_admin_who_approves_or_rejects_each_once() {
    let (env, g) = with_a_storage_gap("review", 1).await;
    let (h0, h1, h2) = (g.day, g.day + HOUR, g.day + 2 * HOUR);
    env.until(
        "the estimates of lab and bob's project wait",
        &format!(
            "SELECT (count(*) = 2)::int::bigint AS n FROM storage_gap_estimates WHERE cluster_id = '{}'
               AND window_start = to_timestamp({h1}) AND status = 'pending' AND policy = 'review'",
            g.cluster
        ),
    )
    .await;
    let in_gap = format!("SELECT count(*) AS n FROM storage_samples WHERE window_start = to_timestamp({h1})");
    assert_eq!(env.n(&in_gap).await, 0, "nothing published before review");
    assert!(env.events_of(h1).await.is_empty());

    let list = |query: &str| format!("/api/admin/metering/storage-estimates?cluster_id={}{query}", g.cluster);
    let (status, page) = env.call(&g.base, Method::GET, &list("&status=pending"), Some(&admin()), None).await;
    assert_eq!((status, page["total"].as_u64()), (StatusCode::OK, Some(2)), "{page}");
    let id_of = |project: u64| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["project_id"].as_u64() == Some(project))
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (lab, bobs) = (id_of(g.lab), id_of(g.bobs));
    for (query, code) in
        [("&status=lost", "invalid_estimate_status"), ("&limit=0", "invalid_query"), ("&colour=red", "invalid_query")]
    {
        let (status, body) = env.call(&g.base, Method::GET, &list(query), Some(&admin()), None).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{query}: {body}");
    }
    let stranger = person(Uuid::now_v7());
    let (status, body) = env.call(&g.base, Method::GET, &list(""), Some(&stranger), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    let decide = |id: &str, what: &str| format!("/api/admin/metering/storage-estimates/{id}/{what}");
    for what in ["approve", "reject"] {
        let (status, body) = env.call(&g.base, Method::POST, &decide(&lab, what), Some(&stranger), None).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")), "{body}");
        let (status, body) =
            env.call(&g.base, Method::POST, &decide(&Uuid::now_v7().to_string(), what), Some(&admin()), None).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("estimate_not_found")), "{body}");
        let (status, _) = env.call(&g.base, Method::POST, &decide("not-a-uuid", what), Some(&admin()), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(env.n(&in_gap).await, 0, "refusals change nothing");

    // Approved: published exactly as under `estimate`.
    let (status, approved) = env.call(&g.base, Method::POST, &decide(&lab, "approve"), Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(
        (approved["status"].as_str(), approved["decided_by"].as_str(), approved["sample_id"].is_string()),
        (Some("published"), Some("auth0|admin"), true),
        "{approved}"
    );
    assert_eq!(env.n(&not_the_storage_formula(g.cluster)).await, 0, "the approved estimate is the neighbours' mean");
    let (before, after) = (env.bytes(g.lab, h0).await, env.bytes(g.lab, h2).await);
    assert_eq!(env.bytes(g.lab, h1).await, ((before.0 + after.0) / 2, (before.1 + after.1) / 2));
    let events = env.events_of(h1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].estimated && u64::try_from(events[0].project_id) == Ok(g.lab));
    // The admins' and the owner's views say which storage was estimated.
    let today = chrono::DateTime::from_timestamp(g.day, 0).unwrap().date_naive();
    let path = format!("/api/admin/usage/storage-samples?user_id={}&day={today}", g.ada);
    let (status, samples) = env.call(&g.base, Method::GET, &path, Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{samples}");
    let flags: Vec<(Option<i64>, Option<bool>)> = samples
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["project_id"].as_u64() == Some(g.lab))
        .map(|s| {
            let start = s["window_start"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            (start.map(|t| t.timestamp()), s["estimated"].as_bool())
        })
        .collect();
    assert_eq!(flags, vec![(Some(h0), Some(false)), (Some(h1), Some(true)), (Some(h2), Some(false))]);
    let (status, mine) = env
        .call(&g.base, Method::GET, &format!("/api/usage?from={today}&to={today}"), Some(&person(g.ada)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let lab_row = mine.as_array().unwrap().iter().find(|r| r["namespace"] == "ada-lab").unwrap();
    assert_eq!(
        (lab_row["storage_samples"].as_i64(), lab_row["storage_estimated_samples"].as_i64()),
        (Some(3), Some(1))
    );

    // Rejected: the window stays a gap, nothing written.
    let (status, rejected) = env.call(&g.base, Method::POST, &decide(&bobs, "reject"), Some(&admin()), None).await;
    assert_eq!((status, rejected["status"].as_str()), (StatusCode::OK, Some("rejected")), "{rejected}");
    assert_eq!(
        env.n(&format!(
            "SELECT count(*) AS n FROM storage_samples WHERE project_id = {} AND window_start = to_timestamp({h1})",
            g.bobs
        ))
        .await,
        0
    );
    // Each is decided once.
    let totals = (env.n(&in_gap).await, env.events_of(h1).await.len());
    assert_eq!(totals, (1, 1));
    for (id, what) in [(&lab, "approve"), (&lab, "reject"), (&bobs, "approve"), (&bobs, "reject")] {
        let (status, body) = env.call(&g.base, Method::POST, &decide(id, what), Some(&admin()), None).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("estimate_decided")), "{what}: {body}");
    }
    assert_eq!((env.n(&in_gap).await, env.events_of(h1).await.len()), totals, "409s change nothing");
}
