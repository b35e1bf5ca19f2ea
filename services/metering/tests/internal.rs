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

/// metering serving its routes (and nothing measured), its database and its address.
async fn metering() -> (TestDb, TestBus, String, CancellationToken) {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let config: MeteringConfig = TestSettings::data_service(Service::Metering, &db, &bus)
        .set("provisioning.url", "http://127.0.0.1:9")
        .set("storage.enabled", "false")
        .load(&hopsbridge_metering::DEFAULTS);
    let app = hopsbridge_metering::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    (db, bus, base, stop)
}

/// `owner`'s usage on 2026-12-01 in `usage_daily`: five samples of a quarter core-hour each.
async fn usage_day(db: &TestDb, owner: Uuid, cluster: Uuid) {
    let mut conn = db.connect("metering").await;
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
}

/// A GET of `path` signed for `caller` (by the gateway's key for a person, a service's own for
/// a service).
async fn get(base: &str, path: &str, caller: &Caller) -> (StatusCode, serde_json::Value) {
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    hopsbridge_testkit::signed_call(&key, base, Method::GET, path, Some(caller), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_pages_through_samples_and_reads_usage_per_owner_and_day() {
    let (db, _bus, base, stop) = metering().await;
    let call = |path: String, caller: Caller| {
        let base = &base;
        async move { get(base, &path, &caller).await }
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
    usage_day(&db, owner, cluster).await;

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

/// Stores a storage sample of `project` in the hour starting `hour` hours after 2026-12-01
/// 00:00 UTC, attributed to `owner` (none: unbilled), holding `bytes`.
async fn storage_sample(db: &TestDb, cluster: Uuid, project: i64, hour: i64, owner: Option<Uuid>, bytes: i64) -> Uuid {
    let id = Uuid::now_v7();
    let who = owner.map_or_else(|| "NULL".to_owned(), |o| format!("'{o}'"));
    let mut conn = db.connect("metering").await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "INSERT INTO storage_samples (id, cluster_id, project_id, window_start, window_end, namespace, project_name,
                 creator_username, user_id, owner_user_id, offline_bytes, online_bytes, offline_byte_seconds,
                 online_byte_seconds, measured_at)
             VALUES ('{id}', '{cluster}', {project}, '2026-12-01T00:00:00Z'::timestamptz + interval '{hour} hours',
                 '2026-12-01T01:00:00Z'::timestamptz + interval '{hour} hours', 'p{project}', 'p{project}', 'u', {who},
                 {who}, {bytes}, 0, {bytes}::bigint * 3600, 0, '2026-12-01T00:01:00Z'::timestamptz + interval '{hour} hours')"
        )),
        &mut conn,
    )
    .await
    .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_pages_through_storage_samples_in_a_stable_order_and_reads_storage_per_owner_and_day() {
    let (db, _bus, base, stop) = metering().await;
    let (owner, lone, cluster) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    // On 2026-12-01: five hours of the owner's project 7 and, in hour 2, their project 8; one
    // hour of an unbilled project; one hour of another owner with storage and no pods. Hour 24
    // is the next day.
    let mut ids = Vec::new();
    for hour in 0..5 {
        ids.push((hour, storage_sample(&db, cluster, 7, hour, Some(owner), 1_000_000_007 + hour).await));
    }
    ids.push((2, storage_sample(&db, cluster, 8, 2, Some(owner), 5).await));
    storage_sample(&db, cluster, 9, 1, None, 1_000).await;
    storage_sample(&db, cluster, 10, 3, Some(lone), 2).await;
    storage_sample(&db, cluster, 7, 24, Some(owner), 1).await;
    usage_day(&db, owner, cluster).await;

    // Pages of three in (window start, id) order, each sample once, the unbilled one never.
    let billing = Caller::service(Service::Billing);
    let range = "from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z";
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/internal/storage-samples?{range}&limit=3&after={a}"),
            None => format!("/internal/storage-samples?{range}&limit=3"),
        };
        let (status, page) = get(&base, &path, &billing).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        // The same page read again is the same page.
        assert_eq!(get(&base, &path, &billing).await.1, page);
        pages += 1;
        for s in page["samples"].as_array().unwrap() {
            seen.push((s["window_start_unix_seconds"].as_i64().unwrap(), s["sample_id"].as_str().unwrap().to_owned()));
            if s["sample_id"] == ids[0].1.to_string() {
                assert_eq!(s["owner_user_id"], owner.to_string());
                assert_eq!(s["user_id"], owner.to_string());
                assert_eq!(s["project_id"], 7);
                assert_eq!(s["offline_bytes"], 1_000_000_007_i64);
                assert_eq!(s["offline_byte_seconds"], 3_600_000_025_200_i64);
                assert_eq!(
                    s["window_end_unix_seconds"].as_i64().unwrap() - s["window_start_unix_seconds"].as_i64().unwrap(),
                    3600
                );
                assert_eq!(s["estimated"], false);
            }
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3, "7 samples in pages of 3");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "ordered by window start, then id");
    assert_eq!(seen.len(), 7, "{seen:?}");
    for (hour, id) in &ids {
        assert!(seen.contains(&(1_796_083_200 + hour * 3600, id.to_string())), "{id} in {seen:?}");
    }

    // Per owner on the day: usage and storage side by side, an owner with storage only too.
    let (status, daily) = get(&base, "/internal/usage/daily?day=2026-12-01", &billing).await;
    assert_eq!(status, StatusCode::OK, "{daily}");
    let owners = daily["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 2, "{daily}");
    let of = |o: Uuid| owners.iter().find(|d| d["owner_user_id"] == o.to_string()).unwrap().clone();
    let full = of(owner);
    assert_eq!(full["cpu_nanocore_seconds"], 4_500_000_000_000_i64);
    assert_eq!(full["storage_offline_byte_seconds"], (5 * 1_000_000_007 + 10 + 5) * 3600_i64);
    assert_eq!((full["storage_online_byte_seconds"].as_i64(), full["storage_samples"].as_i64()), (Some(0), Some(6)));
    let lone = of(lone);
    assert_eq!((lone["cpu_nanocore_seconds"].as_i64(), lone["samples"].as_i64()), (Some(0), Some(0)));
    assert_eq!(lone["storage_offline_byte_seconds"], 7200);

    // Billing only: an admin and another service's key are refused; a bad cursor is a 400.
    for who in [admin(), Caller::service(Service::Provisioning), Caller::service(Service::Identity)] {
        let (status, body) = get(&base, &format!("/internal/storage-samples?{range}"), &who).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("billing_only")), "{who:?}");
    }
    let (status, body) = get(&base, &format!("/internal/storage-samples?{range}&after=yesterday"), &billing).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")));
    let (status, _) = hopsbridge_testkit::signed_call(
        &CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap(),
        &base,
        Method::GET,
        &format!("/internal/storage-samples?{range}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    stop.cancel();
}
