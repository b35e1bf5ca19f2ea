//! An admin's "collect now" for a window past its deadline is refused with 409 `window_closed`,
//! as documented, and leaves no run behind (before, it answered 202 and the run it scheduled was
//! swept into a gap moments later).

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use common::admin;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::ClusterRegisteredV1;
use hopsbridge_metering::MeteringConfig;
use hopsbridge_platform::caller::CallerSigner;
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings, unix_now};
use reqwest::Method;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WINDOW: u64 = 300;
const DEADLINE: u64 = 2;

async fn count(db: &TestDb, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.connect("metering").await;
    diesel_async::RunQueryDsl::get_result::<N>(diesel::sql_query(sql), &mut conn).await.unwrap().n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collecting_a_window_past_its_deadline_answers_window_closed_and_schedules_nothing() {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    // Five-minute windows that are gaps two seconds after they end, and a scheduler that looks
    // back one second only: it schedules a window only in the second after it ends, which the
    // test stays clear of, so every run of the cluster below would be the request's (and
    // provisioning, never reached here, stays out of it).
    let config: MeteringConfig = TestSettings::data_service(Service::Metering, &db, &bus)
        .set("provisioning.url", "http://127.0.0.1:9")
        .set("schedule.window_secs", WINDOW.to_string())
        .set("schedule.settle_secs", "0")
        .set("schedule.deadline_secs", DEADLINE.to_string())
        .set("schedule.lookback_secs", "1")
        .set("schedule.tick_ms", "100")
        // By point: readings would schedule the window under way at once.
        .set("collect.source", "point")
        .load(&hopsbridge_metering::DEFAULTS);
    let app = hopsbridge_metering::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));

    // Well inside a window (its predecessor's deadline has passed) for the whole test.
    while !(DEADLINE + 3..WINDOW - 60).contains(&(unix_now() % WINDOW)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cluster = Uuid::now_v7();
    bus.publish(
        &ClusterRegisteredV1 {
            cluster_id: cluster.to_string(),
            name: "late".into(),
            region: "eu-north-1".into(),
            status: "active".into(),
            capacity: 10,
        },
        None,
    )
    .await;
    let known = format!("SELECT count(*) AS n FROM clusters WHERE cluster_id = '{cluster}'");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(&db, &known).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "metering never learned of the cluster");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let path = format!("/api/admin/metering/clusters/{cluster}/collect");
    let (status, body) = hopsbridge_testkit::signed_call(&key, &base, Method::POST, &path, Some(&admin()), None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (409, Some("window_closed")), "{body}");
    let runs = format!("SELECT count(*) AS n FROM runs WHERE cluster_id = '{cluster}'");
    assert_eq!(count(&db, &runs).await, 0, "a closed window is not scheduled, so no gap is recorded for it");
    stop.cancel();
}
