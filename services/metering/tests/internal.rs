//! The routes billing calls: attributed samples paged by window, usage per owner and day;
//! billing signing as itself only.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use common::admin;
use hopsbridge_contracts::Service;
use hopsbridge_metering::MeteringConfig;
use hopsbridge_platform::caller::{Caller, CallerSigner};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings};
use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_pages_through_samples_and_reads_usage_per_owner_and_day() {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let config: MeteringConfig = TestSettings::data_service(Service::Metering, &db, &bus)
        .set("provisioning.url", "http://127.0.0.1:9")
        .load(&hopsbridge_metering::DEFAULTS);
    let app = hopsbridge_metering::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let call = |path: String, caller: Caller| {
        let (key, base) = (&key, &base);
        async move { hopsbridge_testkit::signed_call(key, base, Method::GET, &path, Some(&caller), None).await }
    };

    // Five attributed samples of one owner on 2026-12-01 and one unattributed.
    let (owner, cluster) = (Uuid::now_v7(), Uuid::now_v7());
    let mut conn = db.connect("metering").await;
    for i in 0..6 {
        let (user, owner) =
            if i == 5 { ("NULL".to_owned(), "NULL".to_owned()) } else { (format!("'{owner}'"), format!("'{owner}'")) };
        let attribution = if i == 5 { "unknown_user" } else { "attributed" };
        diesel_async::RunQueryDsl::execute(
            diesel::sql_query(format!(
                "INSERT INTO samples (id, cluster_id, namespace, hopsworks_username, window_start, window_end, attribution,
                     user_id, owner_user_id, project_id, cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, pods)
                 VALUES ('{}', '{cluster}', 'lab', 'u{i}', '2026-12-01T00:00:00Z'::timestamptz + interval '{} s',
                     '2026-12-01T00:15:00Z'::timestamptz + interval '{} s', '{attribution}', {user}, {owner}, 7,
                     900000000000, 1024, 0, 1)",
                Uuid::now_v7(),
                i * 900,
                i * 900
            )),
            &mut conn,
        )
        .await
        .unwrap();
    }
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "INSERT INTO usage_daily (day, user_id, owner_user_id, cluster_id, namespace, cpu_nanocore_seconds,
                 memory_byte_seconds, gpu_seconds, samples) VALUES ('2026-12-01', '{owner}', '{owner}', '{cluster}', 'lab',
                 4500000000000, 5120, 0, 5)"
        )),
        &mut conn,
    )
    .await
    .unwrap();

    let billing = Caller::service(Service::Billing);
    let range = "from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z";
    let (status, first) = call(format!("/internal/samples?{range}&limit=3"), billing.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["samples"].as_array().unwrap().len(), 3);
    assert_eq!(first["samples"][0]["owner_user_id"], owner.to_string());
    assert_eq!(first["samples"][0]["cpu_core_hours"], "0.25");
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, second) = call(format!("/internal/samples?{range}&limit=3&after={next}"), billing.clone()).await;
    assert_eq!(second["samples"].as_array().unwrap().len(), 2, "{second}");
    assert_eq!(second["next"], serde_json::Value::Null);
    let (status, daily) = call("/internal/usage/daily?day=2026-12-01".into(), billing).await;
    assert_eq!(status, StatusCode::OK, "{daily}");
    assert_eq!(daily["owners"][0]["cpu_nanocore_seconds"], 4_500_000_000_000_i64);

    for who in [admin(), Caller::service(Service::Provisioning)] {
        let (status, body) = call(format!("/internal/samples?{range}"), who).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("billing_only")));
    }
    stop.cancel();
}
