//! Usage from pod to bill line, with every service as its own process: a person signs up, adds
//! a card and is given a Hopsworks account; their lab's pods on the sandbox's Kubernetes are
//! measured each window, attributed to them, announced as UsageRecorded, and shown to them and
//! to admins through the gateway, every sample exact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_journey::{Options, Platform, binaries};
use hopsbridge_sandbox::world::{
    LAB_NOTEBOOK_CPU_NANOCORES, LAB_NOTEBOOK_MEMORY_BYTES, LAB_TRAINING_CPU_NANOCORES, LAB_TRAINING_MEMORY_BYTES,
};
use serde_json::Value;
use std::time::{Duration, Instant};

const WINDOW: u32 = 2;

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paying_persons_pods_are_measured_attributed_and_shown_to_them() {
    let options = Options {
        clusters: 1,
        metering_window_secs: WINDOW,
        // What the Hopsworks sandbox names metered@example.com's account.
        lab_owners: vec!["met10000".to_owned()],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    // Every service follows the sandbox's clock (at real time here); the gateway says so.
    let (status, ready) = platform.call_as("GET", "/readyz", None, None).await;
    assert_eq!((status, &ready["checks"]["clock"]), (200, &serde_json::json!("simulated")), "{ready}");
    let person = platform.sign_up("metered").await;
    platform.wait_billing_account(&person, Duration::from_secs(30)).await;
    platform.add_card(&person).await;
    platform.wait_assigned(&person, Duration::from_secs(30)).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let (status, rows) = platform.call("GET", "/api/usage", &person.token, None).await;
        assert_eq!(status, 200, "{rows}");
        if rows.as_array().is_some_and(|r| !r.is_empty()) {
            break rows;
        }
        assert!(Instant::now() < deadline, "no usage shown within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let row = &rows[0];
    assert_eq!(row["user_id"], person.user_id.to_string());
    assert_eq!(row["owner_user_id"], person.user_id.to_string(), "an owner pays for their own usage");
    assert_eq!(row["namespace"], "met10000-lab");

    // Every sample is the lab's two steady pods held for the window, exactly.
    let today = chrono::Utc::now().date_naive();
    let samples = platform.samples_today(&person).await;
    assert!(!samples.is_empty());
    let secs = i64::from(WINDOW);
    let cpu = i64::try_from(LAB_NOTEBOOK_CPU_NANOCORES + LAB_TRAINING_CPU_NANOCORES).unwrap() * secs;
    let memory = i64::try_from(LAB_NOTEBOOK_MEMORY_BYTES + LAB_TRAINING_MEMORY_BYTES).unwrap() * secs;
    for s in samples {
        let got = |k: &str| s[k].as_i64().unwrap();
        assert_eq!(
            (got("cpu_nanocore_seconds"), got("memory_byte_seconds"), got("gpu_seconds"), got("pods")),
            (cpu, memory, secs, 2),
            "{s}"
        );
        assert_eq!(s["owner_user_id"], person.user_id.to_string());
    }
    // The day's figure is the sum of its samples.
    let (_, daily) = platform
        .call(
            "GET",
            &format!("/api/admin/usage?user_id={}&from={today}&to={today}", person.user_id),
            &platform.admin_token,
            None,
        )
        .await;
    let day_cpu: i64 = daily.as_array().unwrap().iter().map(|r| r["cpu_nanocore_seconds"].as_i64().unwrap()).sum();
    assert_eq!(day_cpu % cpu, 0, "whole samples only: {daily}");
    assert!(day_cpu >= cpu);

    // The samples left through the outbox to NATS.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let published = metering_count(
            &platform,
            "SELECT count(*) AS n FROM outbox WHERE event_type = 'UsageRecorded' AND published_at IS NOT NULL",
        )
        .await;
        if published > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "UsageRecorded never published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, runs) =
        platform.call("GET", "/api/admin/metering/runs?status=complete", &platform.admin_token, None).await;
    assert_eq!(status, 200, "{runs}");
    assert!(runs["total"].as_i64().unwrap() >= 1, "{runs}");
    let gaps: Value = platform.call("GET", "/api/admin/metering/gaps", &platform.admin_token, None).await.1;
    assert_eq!(gaps["total"], 0, "no window missed: {gaps}");

    // metering killed (no graceful shutdown) for longer than a window's deadline, then back:
    // the windows it missed are gaps with their reason, a run it held is taken over or becomes
    // a gap, every window in between has exactly one run, and nothing is counted twice.
    platform.kill_service(Service::Metering);
    tokio::time::sleep(Duration::from_secs(u64::from(WINDOW) * 9)).await;
    platform.start_service(Service::Metering);
    let restarted = chrono::Utc::now().timestamp();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let measured = metering_count(
            &platform,
            &format!(
                "SELECT count(*) AS n FROM runs WHERE status = 'complete' AND window_start >= to_timestamp({restarted})"
            ),
        )
        .await;
        if measured >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "measuring did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missed = metering_count(
        &platform,
        "SELECT count(*) AS n FROM runs WHERE status = 'gap' AND gap_reason IN ('not_collected', 'abandoned')",
    )
    .await;
    assert!(missed >= 1, "the outage is recorded as gaps");
    let holes = metering_count(
        &platform,
        &format!(
            "SELECT ((extract(epoch FROM max(window_start) - min(window_start))::bigint / {WINDOW}) + 1 - count(*))::bigint AS n
             FROM runs"
        ),
    )
    .await;
    assert_eq!(holes, 0, "every window since the cluster was registered has its run");
    let mismatched = metering_count(
        &platform,
        "SELECT count(*) AS n FROM usage_daily d FULL JOIN (
             SELECT (window_start AT TIME ZONE 'UTC')::date AS day, user_id, owner_user_id, cluster_id, namespace,
                    sum(cpu_nanocore_seconds) AS cpu, count(*) AS samples
             FROM samples WHERE attribution = 'attributed' GROUP BY 1, 2, 3, 4, 5) s
         USING (day, user_id, owner_user_id, cluster_id, namespace)
         WHERE d.cpu_nanocore_seconds IS DISTINCT FROM s.cpu OR d.samples IS DISTINCT FROM s.samples",
    )
    .await;
    assert_eq!(mismatched, 0, "usage_daily is the sum of its samples");
    let unannounced = metering_count(
        &platform,
        "SELECT (SELECT count(*) FROM samples WHERE attribution = 'attributed')
              - (SELECT count(*) FROM outbox WHERE event_type = 'UsageRecorded') AS n",
    )
    .await;
    assert_eq!(unannounced, 0, "one UsageRecorded per attributed sample");
    let wrong = metering_count(
        &platform,
        &format!(
            "SELECT count(*) AS n FROM samples WHERE attribution = 'attributed' AND cpu_nanocore_seconds <> {cpu}"
        ),
    )
    .await;
    assert_eq!(wrong, 0, "every sample is one window's usage, never two");
}

async fn metering_count(platform: &Platform, sql: &str) -> i64 {
    let mut conn = platform.db.connect("metering").await;
    diesel::sql_query(sql).get_result::<N>(&mut conn).await.unwrap().n
}
