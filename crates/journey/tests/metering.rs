//! Usage from pod to bill line, with every service as its own process: a person signs up, adds
//! a card and is given a Hopsworks account; their lab's pods on the sandbox's Kubernetes are
//! measured each window, attributed to them, announced as UsageRecorded, and shown to them and
//! to admins through the gateway, every sample exact.

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
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
    let (status, samples) = platform
        .call(
            "GET",
            &format!("/api/admin/usage/samples?user_id={}&day={today}", person.user_id),
            &platform.admin_token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{samples}");
    let samples = samples.as_array().unwrap();
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
        let mut conn = platform.db.connect("metering").await;
        let published = diesel::sql_query(
            "SELECT count(*) AS n FROM outbox WHERE event_type = 'UsageRecorded' AND published_at IS NOT NULL",
        )
        .get_result::<N>(&mut conn)
        .await
        .unwrap()
        .n;
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
}
