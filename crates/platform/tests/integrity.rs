//! Integrity checks against the real Postgres: findings open once and alert once across runs
//! and replicas, resolve when gone, reopen as new findings; a failing check keeps its findings;
//! the outbox check finds stuck rows; the admin routes and the schedule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use hopsbridge_contracts::Service;
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_platform::config::{DATA_SERVICE_DEFAULTS, DataServiceConfig};
use hopsbridge_platform::db::{Database, migrations_for};
use hopsbridge_platform::integrity::{Check, CheckRun, Finding, RunOutcome};
use hopsbridge_platform::service::DataService;
use hopsbridge_testkit::{TestBus, TestDb, TestSettings, eventually, gateway_signer, signed_call};
use reqwest::Method;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A check whose answer the test sets: findings, or a failure. Each run takes a moment, and
/// notes whether another run was under way meanwhile.
#[derive(Clone)]
struct Scripted {
    answer: Arc<Mutex<Result<Vec<Finding>, String>>>,
    runs: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    overlapped: Arc<AtomicBool>,
    /// How long each run takes, in milliseconds.
    takes_ms: Arc<AtomicU64>,
}

impl Scripted {
    fn new() -> Self {
        Self {
            answer: Arc::new(Mutex::new(Ok(Vec::new()))),
            runs: Arc::default(),
            running: Arc::default(),
            overlapped: Arc::default(),
            takes_ms: Arc::new(AtomicU64::new(200)),
        }
    }

    fn finds(&self, keys: &[&str]) {
        *self.answer.lock().unwrap() =
            Ok(keys.iter().map(|k| Finding::new(*k, format!("thing {k}"), format!("{k} is wrong; fix it"))).collect());
    }

    fn fails(&self, why: &str) {
        *self.answer.lock().unwrap() = Err(why.to_owned());
    }
}

impl Check for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn run<'a>(&'a self, _: &'a Database) -> BoxFuture<'a, anyhow::Result<Vec<Finding>>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().unwrap().clone();
        let takes = Duration::from_millis(AtomicU64::load(&self.takes_ms, Ordering::SeqCst));
        Box::pin(async move {
            if self.running.fetch_add(1, Ordering::SeqCst) > 0 {
                self.overlapped.store(true, Ordering::SeqCst);
            }
            tokio::time::sleep(takes).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            answer.map_err(|e| anyhow::anyhow!(e))
        })
    }
}

struct World {
    db: TestDb,
    _bus: TestBus,
    check: Scripted,
    /// Two replicas of billing on the same database, each with the check registered.
    replicas: [DataService; 2],
}

impl World {
    async fn new(interval_secs: u64) -> Self {
        hopsbridge_testkit::init();
        let (db, bus) = (TestDb::new().await, TestBus::new().await);
        let check = Scripted::new();
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let settings = TestSettings::data_service(Service::Billing, &db, &bus)
                .set("database.migrate_on_start", "true")
                .set("database.max_connections", "3")
                .set("mail.admin_addresses", "ops@hopsbridge.test")
                .set("integrity.interval_secs", interval_secs.to_string())
                .set("integrity.outbox_max_age_secs", "600");
            let config: DataServiceConfig = TestSettings::load(&settings, &[DATA_SERVICE_DEFAULTS]);
            let service =
                DataService::connect(Service::Billing, config, migrations_for(Service::Billing)).await.unwrap();
            service.integrity.register(check.clone()).unwrap();
            replicas.push(service);
        }
        let replicas = replicas.try_into().unwrap_or_else(|_| panic!("two replicas"));
        Self { db, _bus: bus, check, replicas }
    }

    async fn conn(&self) -> AsyncPgConnection {
        self.db.connect("billing").await
    }

    async fn run(&self, replica: usize) -> Vec<CheckRun> {
        self.replicas[replica].integrity_runner().run_all().await.unwrap()
    }

    /// `scripted`'s rows: (id, key, open).
    async fn findings(&self) -> Vec<(String, String, bool)> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            id: String,
            #[diesel(sql_type = Text)]
            key: String,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            open: bool,
        }
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT id::text AS id, key, resolved_at IS NULL AS open FROM integrity_findings \
             WHERE check_name = 'scripted' ORDER BY first_seen, id",
        )
        .load(&mut self.conn().await)
        .await
        .unwrap();
        rows.into_iter().map(|r| (r.id, r.key, r.open)).collect()
    }

    /// The integrity alerts in the mail outbox: their subjects.
    async fn alerts(&self) -> Vec<String> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            subject: String,
        }
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT subject FROM mail_outbox WHERE dedup_key LIKE 'integrity:%' \
             AND recipient = 'ops@hopsbridge.test' ORDER BY created_at, id",
        )
        .load(&mut self.conn().await)
        .await
        .unwrap();
        rows.into_iter().map(|r| r.subject).collect()
    }

    async fn count(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        diesel::sql_query(sql).get_result::<N>(&mut self.conn().await).await.unwrap().n
    }
}

fn scripted(runs: &[CheckRun]) -> &CheckRun {
    runs.iter().find(|r| r.check == "scripted").expect("the scripted check ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_opens_and_alerts_once_across_runs_and_replicas_resolves_and_reopens() {
    let w = World::new(3600).await;
    w.check.finds(&["cluster-1"]);

    let first = w.run(0).await;
    let run = scripted(&first);
    assert_eq!((run.outcome, run.opened, run.resolved), (RunOutcome::Ok, 1, 0));
    assert_eq!(run.findings.len(), 1);
    assert_eq!((run.findings[0].key.as_str(), run.findings[0].subject.as_str()), ("cluster-1", "thing cluster-1"));
    // The other replica, then both at once: still one finding, one alert.
    let again = w.run(1).await;
    assert_eq!((scripted(&again).opened, scripted(&again).findings.len()), (0, 1));
    let (a, b) = tokio::join!(w.run(0), w.run(1));
    assert_eq!(scripted(&a).opened + scripted(&b).opened, 0);
    assert!(!AtomicBool::load(&w.check.overlapped, Ordering::SeqCst), "the two replicas' runs took turns");
    let open = w.findings().await;
    assert_eq!(open.len(), 1, "{open:?}");
    let first_id = open[0].0.clone();
    assert_eq!(open[0], (first_id.clone(), "cluster-1".to_owned(), true));
    assert_eq!(w.alerts().await, vec!["[Hopsbridge] Integrity check scripted of billing: thing cluster-1".to_owned()]);
    assert_eq!(AtomicUsize::load(&w.check.runs, Ordering::SeqCst), 4, "every run ran the check");
    let alerted = w
        .count("SELECT count(*) AS n FROM integrity_findings WHERE alerted_at IS NOT NULL AND last_seen > first_seen")
        .await;
    assert_eq!(alerted, 1, "the finding is marked alerted and seen again");

    // Gone: resolved, and no mail says so.
    w.check.finds(&[]);
    let gone = w.run(1).await;
    assert_eq!((scripted(&gone).resolved, scripted(&gone).findings.len()), (1, 0));
    assert_eq!(w.findings().await, vec![(first_id.clone(), "cluster-1".to_owned(), false)]);
    assert_eq!(w.alerts().await.len(), 1);

    // Back: a new finding, alerted again; the resolved one stays resolved.
    w.check.finds(&["cluster-1", "cluster-2"]);
    let back = w.run(0).await;
    assert_eq!(scripted(&back).opened, 2);
    let rows = w.findings().await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0], (first_id.clone(), "cluster-1".to_owned(), false));
    assert!(rows[1..].iter().all(|(id, _, open)| *open && *id != first_id), "{rows:?}");
    assert_eq!(w.alerts().await.len(), 3);

    // A check that cannot look leaves its findings open and records why.
    w.check.fails("Stripe is down");
    let failed = w.run(1).await;
    let run = scripted(&failed);
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert_eq!(run.error.as_deref(), Some("Stripe is down"));
    assert_eq!(run.findings.len(), 2);
    assert_eq!(w.findings().await.iter().filter(|r| r.2).count(), 2);
    let recorded = w
        .count(
            "SELECT count(*) AS n FROM integrity_runs WHERE check_name = 'scripted' AND last_ok = false \
             AND last_error = 'Stripe is down' AND last_found = 2 AND lease_owner IS NULL",
        )
        .await;
    assert_eq!(recorded, 1, "the failure is recorded, the last count kept and the lease released");
    assert_eq!(w.alerts().await.len(), 3);

    // Working again with one of the two: only the other resolves.
    w.check.finds(&["cluster-2"]);
    let after = w.run(0).await;
    assert_eq!((scripted(&after).outcome, scripted(&after).resolved), (RunOutcome::Ok, 1));
    let open: Vec<String> = w.findings().await.into_iter().filter(|r| r.2).map(|r| r.1).collect();
    assert_eq!(open, vec!["cluster-2".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_draining_finds_stuck_events_and_mails_and_not_fresh_ones() {
    let w = World::new(3600).await;
    let mut conn = w.conn().await;
    for (event_type, age_secs) in [("ClusterAssignedV1", 3600), ("ClusterAssignedV1", 1200), ("UserCreatedV1", 5)] {
        diesel::sql_query(
            "INSERT INTO outbox (id, subject, event_type, schema_version, envelope, trace_context, created_at, last_error) \
             VALUES (gen_random_uuid(), 'hb.x', $1, 1, '\\x00', '{}', now() - make_interval(secs => $2), 'nats: timed out')",
        )
        .bind::<Text, _>(event_type)
        .bind::<BigInt, _>(age_secs)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // A mail due an hour ago and unsent; one waiting for its retry; one due just now.
    for (kind, due_secs_ago) in [("team.invitation", 3600), ("admin.alert", -3600), ("billing.receipt", 1)] {
        diesel::sql_query(
            "INSERT INTO mail_outbox (id, dedup_key, kind, channel, recipient, subject, text_body, html_body, next_attempt_at) \
             VALUES (gen_random_uuid(), $1, $1, 'email', 'a@hopsbridge.test', 's', 't', 'h', now() - make_interval(secs => $2))",
        )
        .bind::<Text, _>(kind)
        .bind::<BigInt, _>(due_secs_ago)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let runs = w.run(0).await;
    let run = runs.iter().find(|r| r.check == "outbox_draining").unwrap();
    assert_eq!(run.outcome, RunOutcome::Ok);
    let mut keys: Vec<&str> = run.findings.iter().map(|f| f.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["mail_outbox/team.invitation", "outbox/ClusterAssignedV1"]);
    let events = run.findings.iter().find(|f| f.key == "outbox/ClusterAssignedV1").unwrap();
    assert!(
        events.detail.starts_with("2 ClusterAssignedV1 event(s) not published")
            && events.detail.contains("nats: timed out"),
        "{}",
        events.detail
    );

    // Published: that finding resolves, the mail's stays.
    diesel::sql_query("UPDATE outbox SET published_at = now()").execute(&mut conn).await.unwrap();
    let runs = w.run(1).await;
    let run = runs.iter().find(|r| r.check == "outbox_draining").unwrap();
    let keys: Vec<&str> = run.findings.iter().map(|f| f.key.as_str()).collect();
    assert_eq!((keys, run.resolved), (vec!["mail_outbox/team.invitation"], 1));
}

/// Starts every check through `POST …/run` (202, `running`) and polls `GET …/runs/{id}` until
/// it is no longer running; answers the run.
async fn run_now(key: &CallerSigner, base: &str, who: &Caller) -> Value {
    let (status, started) =
        signed_call(key, base, Method::POST, "/api/admin/integrity/billing/run", Some(who), None).await;
    assert_eq!((status.as_u16(), started["status"].as_str()), (202, Some("running")), "{started}");
    let path = format!("/api/admin/integrity/billing/runs/{}", started["id"].as_str().unwrap());
    let mut last = Value::Null;
    for _ in 0..240 {
        let (status, run) = signed_call(key, base, Method::GET, &path, Some(who), None).await;
        assert_eq!(status.as_u16(), 200, "{run}");
        if run["status"] != "running" {
            return run;
        }
        last = run;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the run did not end within a minute: {last}");
}

fn caller(roles: Vec<Role>, person: bool) -> Caller {
    Caller {
        subject: if person { "auth0|ada".into() } else { "automation@clients".into() },
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: person.then(hopsbridge_domain::UserId::new),
        roles,
        email: if person { hopsbridge_domain::Email::parse("ada@hopsbridge.test").ok() } else { None },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_and_run_checks_and_nobody_else_does() {
    let w = World::new(3600).await;
    w.check.finds(&["cluster-9"]);
    let app = w.replicas[0].application(Arc::new(|_: &mut actix_web::web::ServiceConfig| {})).unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let _stop = stop.drop_guard();
    let key = gateway_signer();
    let person = caller(vec![Role::User, Role::Owner], true);
    let admin = caller(vec![Role::User, Role::Admin], true);
    let machine = caller(vec![Role::Admin], false);

    let unknown = format!("/api/admin/integrity/billing/runs/{}", uuid::Uuid::now_v7());
    for (method, path) in [
        (Method::POST, "/api/admin/integrity/billing/run"),
        (Method::GET, "/api/admin/integrity/billing"),
        (Method::GET, unknown.as_str()),
    ] {
        let (status, body) = signed_call(&key, &base, method.clone(), path, Some(&person), None).await;
        assert_eq!((status.as_u16(), body["code"].as_str()), (403, Some("admin_only")), "{method} {path}");
        let (status, _) = signed_call(&key, &base, method.clone(), path, None, None).await;
        assert_eq!(status.as_u16(), 401, "{method} {path}");
    }
    assert_eq!(AtomicUsize::load(&w.check.runs, Ordering::SeqCst), 0, "a refused run runs nothing");
    assert_eq!(w.count("SELECT count(*) AS n FROM integrity_runs WHERE last_started_at IS NOT NULL").await, 0);
    assert_eq!(w.count("SELECT count(*) AS n FROM integrity_requests").await, 0, "nor starts one");
    let (status, body) = signed_call(&key, &base, Method::GET, &unknown, Some(&admin), None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (404, Some("integrity_run_not_found")), "{body}");
    let (status, body) =
        signed_call(&key, &base, Method::GET, "/api/admin/integrity/billing/runs/nope", Some(&admin), None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (400, Some("invalid_path")), "{body}");

    let body = run_now(&key, &base, &machine).await;
    assert_eq!((body["status"].as_str(), body["error"].as_str()), (Some("done"), None), "{body}");
    let runs = body["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["check"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["outbox_draining", "scripted"]);
    let run = &runs[1];
    assert_eq!((run["outcome"].as_str(), run["opened"].as_u64()), (Some("ok"), Some(1)), "{run}");
    assert_eq!(run["findings"][0]["check"], "scripted");
    assert_eq!(run["findings"][0]["key"], "cluster-9");
    assert_eq!(run["findings"][0]["detail"], "cluster-9 is wrong; fix it");
    assert_eq!(w.findings().await.len(), 1);

    let (status, page) =
        signed_call(&key, &base, Method::GET, "/api/admin/integrity/billing", Some(&admin), None).await;
    assert_eq!(status.as_u16(), 200, "{page}");
    assert_eq!((page["total"].as_i64(), page["items"][0]["key"].as_str()), (Some(1), Some("cluster-9")));
    let check = |name: &str| -> Value {
        page["checks"].as_array().unwrap().iter().find(|c| c["check"] == name).cloned().unwrap_or(Value::Null)
    };
    assert_eq!((check("scripted")["last_ok"].as_bool(), check("scripted")["open"].as_i64()), (Some(true), Some(1)));
    assert_eq!(check("scripted")["last_found"].as_i64(), Some(1));
    assert_eq!(check("outbox_draining")["open"].as_i64(), Some(0));

    // Resolved ones are listed on request, not by default.
    w.check.finds(&[]);
    assert_eq!(run_now(&key, &base, &admin).await["status"], "done");
    let list = |q: &'static str| {
        let (key, base, admin) = (key.clone(), base.clone(), admin.clone());
        async move {
            let path = format!("/api/admin/integrity/billing{q}");
            let (status, body) = signed_call(&key, &base, Method::GET, &path, Some(&admin), None).await;
            (status.as_u16(), body)
        }
    };
    assert_eq!(list("").await.1["total"].as_i64(), Some(0));
    assert_eq!(list("?status=resolved").await.1["total"].as_i64(), Some(1));
    assert_eq!(list("?status=all&limit=1&offset=0").await.1["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list("?status=all&offset=1").await.1["items"].as_array().map(Vec::len), Some(0));
    for (q, code) in [
        ("?status=bogus", "invalid_query"),
        ("?limit=0", "invalid_page"),
        ("?limit=201", "invalid_page"),
        ("?offset=-1", "invalid_page"),
        ("?limit=ten", "invalid_query"),
        ("?unknown=1", "invalid_query"),
    ] {
        let (status, body) = list(q).await;
        assert_eq!((status, body["code"].as_str()), (400, Some(code)), "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_run_answers_at_once_runs_in_the_background_and_one_at_a_time() {
    let w = World::new(3600).await;
    w.check.finds(&["cluster-4"]);
    // Longer than a caller would wait on one request.
    w.check.takes_ms.store(4000, Ordering::SeqCst);
    let app = w.replicas[0].application(Arc::new(|_: &mut actix_web::web::ServiceConfig| {})).unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let other = w.replicas[1].application(Arc::new(|_: &mut actix_web::web::ServiceConfig| {})).unwrap();
    let other_base = format!("http://127.0.0.1:{}", other.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    tokio::spawn(other.run_until_stopped(stop.clone()));
    let _stop = stop.drop_guard();
    let key = gateway_signer();
    let admin = caller(vec![Role::User, Role::Admin], true);

    let asked = std::time::Instant::now();
    let (status, started) =
        signed_call(&key, &base, Method::POST, "/api/admin/integrity/billing/run", Some(&admin), None).await;
    assert!(asked.elapsed() < Duration::from_secs(4), "answered before the check ended: {:?}", asked.elapsed());
    assert_eq!((status.as_u16(), started["status"].as_str()), (202, Some("running")), "{started}");
    assert_eq!(started["runs"], serde_json::json!([]), "{started}");
    let id = started["id"].as_str().unwrap().to_owned();

    // Another request, to either replica, while it runs: 409 naming the run to poll.
    for at in [&base, &other_base] {
        let (status, busy) =
            signed_call(&key, at, Method::POST, "/api/admin/integrity/billing/run", Some(&admin), None).await;
        assert_eq!((status.as_u16(), busy["code"].as_str()), (409, Some("integrity_run_in_progress")), "{busy}");
        assert_eq!(busy["details"]["run"]["id"].as_str(), Some(id.as_str()), "{busy}");
    }
    // Either replica answers the run, from the table.
    let path = format!("/api/admin/integrity/billing/runs/{id}");
    let (status, polled) = signed_call(&key, &other_base, Method::GET, &path, Some(&admin), None).await;
    assert_eq!((status.as_u16(), polled["status"].as_str()), (200, Some("running")), "{polled}");

    let ended = eventually(Duration::from_secs(60), || {
        let (key, base, admin, path) = (key.clone(), base.clone(), admin.clone(), path.clone());
        async move { signed_call(&key, &base, Method::GET, &path, Some(&admin), None).await.1["status"] == "done" }
    })
    .await;
    assert!(ended, "the run ends");
    let (_, done) = signed_call(&key, &base, Method::GET, &path, Some(&admin), None).await;
    assert!(done["finished_at"].is_string(), "{done}");
    let scripted = done["runs"].as_array().unwrap().iter().find(|r| r["check"] == "scripted").cloned().unwrap();
    assert_eq!((scripted["outcome"].as_str(), scripted["opened"].as_u64()), (Some("ok"), Some(1)), "{scripted}");
    assert_eq!(scripted["findings"][0]["key"], "cluster-4");
    assert_eq!(AtomicUsize::load(&w.check.runs, Ordering::SeqCst), 1, "the refused requests ran nothing");
    assert_eq!(w.alerts().await.len(), 1);

    // Once it ended, the next one starts.
    w.check.takes_ms.store(10, Ordering::SeqCst);
    let next = run_now(&key, &other_base, &admin).await;
    assert_eq!(next["status"], "done", "{next}");
    assert_ne!(next["id"].as_str(), Some(id.as_str()));

    // A run whose replica stopped before it ended does not hold the next one back past its
    // expiry: it reads as failed, and a new one starts.
    let mut conn = w.conn().await;
    diesel::sql_query(
        "INSERT INTO integrity_requests (id, started_at, expires_at) VALUES (gen_random_uuid(), now() - interval '1 hour', now() - interval '1 second')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let after = run_now(&key, &base, &admin).await;
    assert_eq!(after["status"], "done", "{after}");
    assert_eq!(
        w.count("SELECT count(*) AS n FROM integrity_requests WHERE finished_at IS NOT NULL AND error LIKE 'the replica running it stopped%'").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_run_on_schedule_in_one_replica_at_a_time_and_show_in_metrics() {
    let w = World::new(1).await;
    w.check.finds(&["cluster-3"]);
    let mut ports = Vec::new();
    let stop = CancellationToken::new();
    for replica in &w.replicas {
        let app = replica.application(Arc::new(|_: &mut actix_web::web::ServiceConfig| {})).unwrap();
        ports.push(app.port());
        tokio::spawn(app.run_until_stopped(stop.clone()));
    }
    let _stop = stop.drop_guard();
    // Waits until replica `at`'s /metrics serves every one of `series`.
    let serves = |at: usize, series: &'static [&'static str]| {
        let url = format!("http://127.0.0.1:{}/metrics", ports[at]);
        eventually(Duration::from_secs(30), move || {
            let url = url.clone();
            async move {
                let text = reqwest::get(url).await.unwrap().text().await.unwrap();
                series.iter().all(|s| text.contains(s))
            }
        })
    };
    // Every registered check has its series before it runs.
    let enrolled = serves(0, &[r#"hopsbridge_integrity_open_findings{check="outbox_draining",service="billing"} 0"#]);
    assert!(enrolled.await, "outbox_draining has its gauge");
    // Nobody asked: the schedule runs it, in both replicas over time, and it still opens and
    // alerts once.
    let ran =
        eventually(Duration::from_secs(60), || async { AtomicUsize::load(&w.check.runs, Ordering::SeqCst) >= 4 }).await;
    assert!(ran, "scheduled runs happen");
    assert!(!AtomicBool::load(&w.check.overlapped, Ordering::SeqCst), "one replica at a time runs the check");
    assert_eq!(w.findings().await.len(), 1);
    assert_eq!(w.alerts().await.len(), 1);
    let scraped = serves(
        1,
        &[
            r#"hopsbridge_integrity_open_findings{check="scripted",service="billing"} 1"#,
            r#"hopsbridge_integrity_check_failed{check="scripted",service="billing"} 0"#,
        ],
    );
    assert!(scraped.await, "the gauge counts the open finding");
    w.check.fails("down");
    let failing = serves(
        0,
        &[
            r#"hopsbridge_integrity_check_failed{check="scripted",service="billing"} 1"#,
            r#"hopsbridge_integrity_open_findings{check="scripted",service="billing"} 1"#,
        ],
    );
    assert!(failing.await, "a failing check shows, its finding still open");
}
