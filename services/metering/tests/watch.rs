//! Pod lifetimes from a Kubernetes watch (decision 0070), through the metering service
//! in-process with provisioning, against the real Postgres and NATS and the sandbox's API
//! server, on the sandbox's clock moved resolution by resolution:
//! - a 75 s job on 2 GPUs inside one window is billed exactly its 150 GPU-seconds from its
//!   lifetime (the sandbox's ground truth), its samples marked `lifetimes`; without the watch
//!   the same window holds the GPUs for the time its readings cover (60 s: 120 GPU-seconds),
//!   unmarked;
//! - a watch expired mid-window leaves that window without lifetimes (the span broke) and the
//!   next one, inside the span the list after the 410 began, with them;
//! - a metering restarted between windows continues the span: no window is lost and the next
//!   one has lifetimes.
//!
//! Windows of 120 s (8 resolutions: measured from readings), so a window takes a few steps of
//! the clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{admin, container, pod};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_metering::MeteringConfig;
use hopsbridge_platform::caller::CallerSigner;
use hopsbridge_sandbox::clock::{ClockServer, SimClock};
use hopsbridge_sandbox::hopsworks::{HopsworksConfig, HopsworksSim};
use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::{SimPod, Workload};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CLIENT_ID: &str = "hopsbridge-oauth-client";
/// 2027-01-01T00:00:00Z.
const DAY: i64 = 1_798_761_600;
/// The first window measured: the cluster is registered, and the watch lists, 30 s before.
const FIRST: i64 = DAY;
/// Where the clock stands when the test starts.
const START: i64 = FIRST - 30;
const WINDOW: i64 = 120;
const SETTLE: i64 = 3;
const RESOLUTION: i64 = 15;
/// Where the jobs run: a namespace of their own.
const JOBS: &str = "jobs";
/// How long a step may take metering before the test gives up.
const WAIT: Duration = Duration::from_secs(30);

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName, Debug, Clone)]
struct RunRow {
    #[diesel(sql_type = BigInt)]
    start: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = BigInt)]
    read_through: i64,
}

/// A window's samples: how many, how many marked `lifetimes`, and the jobs' GPU-seconds.
#[derive(QueryableByName, Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    #[diesel(sql_type = BigInt)]
    samples: i64,
    #[diesel(sql_type = BigInt)]
    marked: i64,
    #[diesel(sql_type = BigInt)]
    job_samples: i64,
    #[diesel(sql_type = BigInt)]
    job_gpu_seconds: i64,
    #[diesel(sql_type = Bool)]
    job_estimated: bool,
}

/// A 75 s job on 2 GPUs of `owner` in [`JOBS`], running from `started` (a multiple of the
/// resolution, so metrics-server has readings of it for 60 s only) and deleted 5 s after.
fn job(name: &str, owner: &str, started: i64) -> SimPod {
    let mut p = pod(JOBS, name, owner, started, vec![container(50_000_000, 1 << 28, 2)]);
    p.finished = Some(started + 75);
    p.deleted = Some(started + 80);
    p
}

/// A steady pod running through every window (so every window has samples), and a job 30 s
/// into the window starting at each of `jobs`.
fn workload(jobs: &[i64]) -> Workload {
    let mut pods = vec![pod("team", "notebook", "ada", DAY - 3600, vec![container(200_000_000, 1 << 30, 0)])];
    for (i, &w) in jobs.iter().enumerate() {
        pods.push(job(&format!("train-{i}"), "bob", w + 30));
    }
    Workload::new(Vec::new(), pods)
}

/// The sandbox's ground truth: the jobs' GPU-seconds in the window starting at `w`.
fn truth(workload: &Workload, w: i64) -> u128 {
    workload.usage_of_namespace(JOBS, w, w + WINDOW).gpu_seconds
}

/// A window as measured, and what the watch had written by then (shown when an assertion fails).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Measured {
    samples: i64,
    marked: i64,
    job_samples: i64,
    job_gpu_seconds: i64,
    job_estimated: bool,
    watched: String,
}

struct Env {
    db: TestDb,
    bus: TestBus,
    provisioning: String,
    clock: Arc<SimClock>,
    clock_server: ClockServer,
    stops: Vec<CancellationToken>,
    _hopsworks: HopsworksSim,
    kube: KubeCluster,
    workload: Workload,
}

impl Drop for Env {
    fn drop(&mut self) {
        for s in &self.stops {
            s.cancel();
        }
    }
}

impl Env {
    /// Postgres, NATS, the clock standing at [`START`], provisioning following it, and one
    /// cluster serving `workload`, registered.
    async fn start(workload: Workload) -> Self {
        hopsbridge_testkit::init();
        let db = TestDb::new().await;
        let bus = TestBus::new().await;
        let clock = Arc::new(SimClock::new(START));
        let clock_server = ClockServer::start(Arc::clone(&clock)).unwrap();
        let (provisioning, stop) =
            common::provisioning(&db, &bus, &clock_server.url(), &[("clock.poll_ms", "5")]).await;

        let name = "eu-1";
        let hopsworks =
            HopsworksSim::start(HopsworksConfig::new(name, &format!("hw-key-{}", Uuid::new_v4().simple()), CLIENT_ID))
                .unwrap();
        // A bookmark whenever the clock moves (each step), not only each minute.
        let options = KubeOptions { bookmark_secs: 1, ..KubeOptions::default() };
        let kube = KubeCluster::start(name, Arc::new(workload.clone()), Arc::clone(&clock), options).unwrap();
        let body = json!({
            "name": name,
            "api_url": hopsworks.origin(),
            "api_key": hopsworks.api_key(),
            "kubeconfig": kube.kubeconfig(),
            "ca_bundle": hopsworks.ca_pem(),
            "oauth_client_id": CLIENT_ID,
            "capacity": 10,
            "region": "eu-north-1",
            "status": "active",
        });
        let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
        let (status, body) = hopsbridge_testkit::signed_call(
            &key,
            &provisioning,
            Method::POST,
            "/api/admin/clusters",
            Some(&admin()),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Self { db, bus, provisioning, clock, clock_server, stops: vec![stop], _hopsworks: hopsworks, kube, workload }
    }

    /// Starts a metering replica measuring by readings in windows of [`WINDOW`], the pod watch
    /// on or off, and waits until it knows the cluster (and, with the watch, until its watcher
    /// has listed the pods).
    async fn metering(&mut self, watch: bool) -> CancellationToken {
        let settings = TestSettings::data_service(Service::Metering, &self.db, &self.bus)
            .set("http.workers", "1")
            .set("provisioning.url", &self.provisioning)
            .clock(&self.clock_server.url())
            .set("clock.poll_ms", "5")
            .set("schedule.window_secs", WINDOW.to_string())
            .set("schedule.tick_ms", "50")
            .set("storage.enabled", "false")
            // The pacing is real time and the clock is stepped.
            .set("collect.requests_per_second", "1000")
            .set("collect.watch.enabled", watch.to_string())
            // A watcher starts as soon as metering knows the cluster.
            .set("collect.watch.clusters_refresh_ms", "50");
        let config: MeteringConfig = TestSettings::load(&settings, &hopsbridge_metering::DEFAULTS);
        assert_eq!(
            (config.schedule.settle_secs, config.collect.resolution_secs, config.collect.watch.wait_ms),
            (3, 15, 2000)
        );
        let app = hopsbridge_metering::build(config).await.unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(stop.clone()));
        self.stops.push(stop.clone());
        self.until("metering knows the cluster", "SELECT count(*) AS n FROM clusters").await;
        if watch {
            self.until("the watcher has listed the pods", "SELECT count(*) AS n FROM pod_watch_spans").await;
        }
        stop
    }

    async fn n(&self, sql: &str) -> i64 {
        let mut conn = self.db.connect("metering").await;
        diesel::sql_query(sql).get_result::<N>(&mut conn).await.unwrap().n
    }

    async fn until(&self, what: &str, sql: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.n(sql).await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn runs(&self) -> Vec<RunRow> {
        let mut conn = self.db.connect("metering").await;
        diesel::sql_query(
            "SELECT extract(epoch FROM window_start)::bigint AS start, status, source,
                    coalesce(extract(epoch FROM read_through)::bigint, 0) AS read_through
             FROM runs ORDER BY window_start",
        )
        .load(&mut conn)
        .await
        .unwrap()
    }

    /// The samples of the window starting at `w`.
    async fn measured(&self, w: i64) -> Measured {
        let mut conn = self.db.connect("metering").await;
        let row = diesel::sql_query(
            "SELECT count(*) AS samples, count(*) FILTER (WHERE lifetimes) AS marked,
                    count(*) FILTER (WHERE namespace = $2) AS job_samples,
                    coalesce(sum(gpu_seconds) FILTER (WHERE namespace = $2), 0)::bigint AS job_gpu_seconds,
                    coalesce(bool_or(estimated) FILTER (WHERE namespace = $2), false) AS job_estimated
             FROM samples WHERE window_start = to_timestamp($1)",
        )
        .bind::<BigInt, _>(w)
        .bind::<Text, _>(JOBS)
        .get_result::<Row>(&mut conn)
        .await
        .unwrap();
        Measured {
            samples: row.samples,
            marked: row.marked,
            job_samples: row.job_samples,
            job_gpu_seconds: row.job_gpu_seconds,
            job_estimated: row.job_estimated,
            watched: self.watched().await,
        }
    }

    /// The watch's spans and the jobs' lifetimes, as text (for failures).
    async fn watched(&self) -> String {
        #[derive(QueryableByName)]
        struct Line {
            #[diesel(sql_type = Text)]
            line: String,
        }
        let mut conn = self.db.connect("metering").await;
        let lines: Vec<Line> = diesel::sql_query(
            "SELECT format('span %s .. %s at %s', extract(epoch FROM synced_from) - $1,
                           extract(epoch FROM synced_through) - $1, resource_version) AS line
             FROM pod_watch_spans
             UNION ALL
             SELECT format('pod %s %s .. %s', pod, extract(epoch FROM started_at) - $1,
                           extract(epoch FROM ended_at) - $1)
             FROM pod_lifetimes WHERE namespace = $2",
        )
        .bind::<BigInt, _>(FIRST)
        .bind::<Text, _>(JOBS)
        .load(&mut conn)
        .await
        .unwrap();
        lines.into_iter().map(|l| l.line).collect::<Vec<_>>().join("; ")
    }

    /// Moves the clock to `t` and waits until metering has done what is due then: the
    /// readings run of the window under way has read at `t`, and at a window's end plus the
    /// settling time, that window's run is complete.
    ///
    /// A window's end is crossed in two moves. Metering's calendar clock follows the sandbox's
    /// by reading it every 5 ms, while the API server reads it directly: a bookmark sent the
    /// moment the clock jumps past a window's end can reach the watcher before metering's clock
    /// has jumped, and is stamped before the end (with a clock that runs, it would be stamped
    /// after). So the clock is first set to the end and the test waits until metering has
    /// seen it (the next window's run is scheduled); the bookmark of the move to `t` that
    /// follows is then stamped after the end, as it would be.
    async fn step(&self, t: i64) {
        let end = t - SETTLE;
        if end.rem_euclid(WINDOW) == 0 && self.clock.now() < end {
            self.clock.set(end);
            let scheduled = format!("SELECT count(*) AS n FROM runs WHERE window_start = to_timestamp({end})");
            self.until("metering's clock reaches the window's end", &scheduled).await;
        }
        self.clock.set(t);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let runs = self.runs().await;
            let run = |start: i64| runs.iter().find(|r| r.start == start);
            let under_way = (t - SETTLE).div_euclid(WINDOW) * WINDOW;
            let ended = under_way - WINDOW;
            let ended_done = (t - SETTLE).rem_euclid(WINDOW) != 0
                || ended < FIRST
                || run(ended).is_some_and(|r| r.status == "complete");
            let reading = run(under_way).is_some_and(|r| r.status == "complete" || r.read_through >= t);
            if ended_done && reading {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metering never caught up with {t}: {:?}",
                runs.iter().filter(|r| r.start + WINDOW + SETTLE >= t).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }

    /// Steps the clock resolution by resolution through the window starting at `w`, from its
    /// start to its end, each plus the settling time (the window then measured).
    async fn through(&self, w: i64) {
        for k in 0..=WINDOW / RESOLUTION {
            self.step(w + k * RESOLUTION + SETTLE).await;
        }
    }

    /// The windows from `first` to `until` were all measured from readings, none lost.
    async fn assert_complete(&self, first: i64, until: i64) {
        let runs = self.runs().await;
        for w in (first..until).step_by(usize::try_from(WINDOW).unwrap()) {
            let run = runs.iter().find(|r| r.start == w);
            assert!(
                run.is_some_and(|r| (r.status.as_str(), r.source.as_str()) == ("complete", "readings")),
                "window {w}: {run:?}"
            );
            assert!(self.measured(w).await.samples > 0, "window {w} has samples");
        }
    }
}

/// Measures the window starting at [`FIRST`], with a job inside it, by a metering whose watch is
/// on or off; answers what the window holds and the ground truth.
async fn one_job(watch: bool) -> (Measured, u128) {
    let mut env = Env::start(workload(&[FIRST])).await;
    env.metering(watch).await;
    env.through(FIRST).await;
    env.assert_complete(FIRST, FIRST + WINDOW).await;
    (env.measured(FIRST).await, truth(&env.workload, FIRST))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_inside_a_window_is_billed_its_lifetime_with_the_watch_and_its_readings_without() {
    let ((with, truth), (without, truth_again)) = tokio::join!(one_job(true), one_job(false));
    assert_eq!((truth, truth_again), (150, 150), "2 GPUs for 75 s");
    // From its lifetime: exactly the ground truth, every sample of the window marked.
    assert_eq!(with.job_samples, 1, "{with:?}");
    assert_eq!(u128::try_from(with.job_gpu_seconds).unwrap(), truth, "{with:?}");
    assert_eq!(with.marked, with.samples, "the window's samples say lifetimes: {with:?}");
    assert!(!with.job_estimated, "{with:?}");
    // From its readings: the 60 s they cover (scrapes at +45 … +90), nothing marked.
    assert_eq!(without.job_samples, 1, "{without:?}");
    assert_eq!(without.job_gpu_seconds, 2 * 60, "{without:?}");
    assert_eq!(without.marked, 0, "{without:?}");
    assert_ne!(with.job_gpu_seconds, without.job_gpu_seconds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_expired_mid_window_leaves_that_window_without_lifetimes_and_the_next_with_them() {
    let (first, broken, next) = (FIRST, FIRST + WINDOW, FIRST + 2 * WINDOW);
    let mut env = Env::start(workload(&[first, broken, next])).await;
    env.metering(true).await;
    env.through(first).await;
    assert_eq!(env.n("SELECT count(*) AS n FROM pod_watch_spans").await, 1);
    // Mid-window (the job running), the API server expires every watch: the watcher's watch
    // ends, its next one is answered 410 and it lists again, beginning a new span.
    for k in 1..=4 {
        env.step(broken + k * RESOLUTION + SETTLE).await;
    }
    let opened = env.kube.watches_open();
    assert_eq!(opened, 1, "one watcher, one watch");
    env.kube.expire_watches();
    env.until("a list after the 410 began a new span", "SELECT (count(*) - 1) AS n FROM pod_watch_spans").await;
    for k in 5..=WINDOW / RESOLUTION {
        env.step(broken + k * RESOLUTION + SETTLE).await;
    }
    env.through(next).await;
    env.assert_complete(first, next + WINDOW).await;

    let covered = env.measured(first).await;
    assert_eq!((covered.marked, covered.job_gpu_seconds), (covered.samples, 150), "{covered:?}");
    // The span broke inside it: its GPUs held for the time read, nothing marked.
    let expired = env.measured(broken).await;
    assert_eq!((expired.marked, expired.job_gpu_seconds), (0, 120), "{expired:?}");
    // Inside the new span: from lifetimes again, exactly.
    let after = env.measured(next).await;
    assert_eq!(u128::try_from(after.job_gpu_seconds).unwrap(), truth(&env.workload, next), "{after:?}");
    assert_eq!((after.marked, after.job_gpu_seconds), (after.samples, 150), "{after:?}");
    assert_eq!(env.kube.watches_open(), 1, "watching again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_metering_restarted_between_windows_continues_the_span_and_loses_no_window() {
    let (first, next) = (FIRST, FIRST + WINDOW);
    let mut env = Env::start(workload(&[first, next])).await;
    let a = env.metering(true).await;
    env.through(first).await;
    // The first window measured, metering stops (its watch with it) and a new one starts.
    a.cancel();
    env.until("the run under way is given back", "SELECT count(*) AS n FROM runs WHERE status = 'pending'").await;
    env.metering(true).await;
    env.through(next).await;
    env.assert_complete(first, next + WINDOW).await;
    // The stopped replica's watch is closed once the server writes to it again (a bookmark):
    // the new replica's is the only one.
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.kube.watches_open() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "watches open: {}", env.kube.watches_open());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The new replica continued the span from its resourceVersion: still one span.
    assert_eq!(env.n("SELECT count(*) AS n FROM pod_watch_spans").await, 1);
    for w in [first, next] {
        let m = env.measured(w).await;
        assert_eq!(u128::try_from(m.job_gpu_seconds).unwrap(), truth(&env.workload, w), "{w}: {m:?}");
        assert_eq!((m.marked, m.job_gpu_seconds), (m.samples, 150), "{w}: {m:?}");
    }
}
