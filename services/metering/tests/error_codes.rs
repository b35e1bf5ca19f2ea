//! metering's error catalogue: every code is documented in the OpenAPI document, and every code
//! is answered, with its status, to a real request against the service on Postgres and NATS.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use common::{admin, person};
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::ClusterRegisteredV1;
use hopsbridge_metering::MeteringConfig;
use hopsbridge_metering::error::MeteringCode;
use hopsbridge_platform::caller::{Caller, CallerSigner};
use hopsbridge_platform::http::ErrorCode;
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings};
use reqwest::Method;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[test]
fn the_openapi_document_names_every_code() {
    let doc = serde_json::to_string(&<hopsbridge_metering::routes::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    for code in MeteringCode::ALL {
        assert!(doc.contains(code.code()), "{} is not documented", code.code());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_code_is_answered_with_its_status() {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    // Provisioning is never reached: no window of these clusters is due during the test.
    let config: MeteringConfig = TestSettings::data_service(Service::Metering, &db, &bus)
        .set("provisioning.url", "http://127.0.0.1:9")
        .load(&hopsbridge_metering::DEFAULTS);
    let app = hopsbridge_metering::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let call = |method: Method, path: String, caller: Caller| {
        let (key, base) = (&key, &base);
        async move { hopsbridge_testkit::signed_call(key, base, method, &path, Some(&caller), None).await }
    };

    // An inactive cluster with no pods left, and an active one whose last window is a gap past its deadline (the
    // scheduler may have scheduled that window already).
    let (inactive, active) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, status) in [(inactive, "inactive"), (active, "active")] {
        let event = ClusterRegisteredV1 {
            cluster_id: id.to_string(),
            name: format!("c-{status}"),
            region: "eu-north-1".into(),
            status: status.into(),
            capacity: 10,
        };
        bus.publish(&event, None).await;
    }
    let collect = |id: Uuid| format!("/api/admin/metering/clusters/{id}/collect");
    for id in [inactive, active] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while known(&db, id).await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "metering never learned of cluster {id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let window = 900;
    let end = chrono::Utc::now().timestamp() / window * window;
    let mut conn = db.connect("metering").await;
    // The inactive cluster's projects were found without pods: it is measured no more.
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!("UPDATE clusters SET drained_at = now() WHERE cluster_id = '{inactive}'")),
        &mut conn,
    )
    .await
    .unwrap();
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "INSERT INTO runs (cluster_id, window_start, window_end, status, next_attempt_at, deadline, gap_reason)
             VALUES ('{active}', to_timestamp({end} - {window}), to_timestamp({end}), 'gap', now(),
                     now() - interval '1 s', 'not_collected')
             ON CONFLICT (cluster_id, window_start) DO UPDATE SET status = 'gap', deadline = now() - interval '1 s',
                 gap_reason = 'not_collected', claimed_by = NULL, lease_until = NULL"
        )),
        &mut conn,
    )
    .await
    .unwrap();

    // The gap was looked at and nothing was found to estimate: the estimate is decided already.
    let decided = Uuid::now_v7();
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "INSERT INTO gap_estimates (id, cluster_id, window_start, window_end, policy, status, source, cpu_basis,
                 memory_basis, detail)
             VALUES ('{decided}', '{active}', to_timestamp({end} - {window}), to_timestamp({end}), 'review', 'none',
                     'point', 'usage', 'usage', 'no neighbouring window was measured')"
        )),
        &mut conn,
    )
    .await
    .unwrap();
    let estimate = |id: Uuid| format!("/api/admin/metering/estimates/{id}/approve");

    let cases: Vec<(MeteringCode, Method, String, Caller)> = vec![
        (MeteringCode::AdminOnly, Method::GET, "/api/admin/metering/runs".into(), person(Uuid::now_v7())),
        (MeteringCode::InvalidStatus, Method::GET, "/api/admin/metering/runs?status=lost".into(), admin()),
        (MeteringCode::InvalidRange, Method::GET, "/api/admin/usage?from=2026-03-01&to=2026-01-01".into(), admin()),
        (MeteringCode::ClusterNotFound, Method::POST, collect(Uuid::now_v7()), admin()),
        (MeteringCode::ClusterInactive, Method::POST, collect(inactive), admin()),
        (MeteringCode::WindowClosed, Method::POST, collect(active), admin()),
        (MeteringCode::BillingOnly, Method::GET, "/internal/usage/daily?day=2026-12-01".into(), admin()),
        (MeteringCode::EstimateNotFound, Method::POST, estimate(Uuid::now_v7()), admin()),
        (MeteringCode::EstimateDecided, Method::POST, estimate(decided), admin()),
        (MeteringCode::InvalidEstimateStatus, Method::GET, "/api/admin/metering/estimates?status=lost".into(), admin()),
    ];
    let mut exercised = HashSet::new();
    for (code, method, path, caller) in cases {
        let (status, body) = call(method, path.clone(), caller).await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (code.status().as_u16(), Some(code.code())),
            "{path}: {body}"
        );
        exercised.insert(code);
    }
    assert_eq!(exercised, MeteringCode::ALL.iter().copied().collect::<HashSet<_>>(), "every code has a case");
    stop.cancel();
}

/// Whether metering has recorded the cluster.
async fn known(db: &TestDb, id: Uuid) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.connect("metering").await;
    let q = diesel::sql_query(format!("SELECT count(*) AS n FROM clusters WHERE cluster_id = '{id}'"));
    diesel_async::RunQueryDsl::get_result::<N>(q, &mut conn).await.unwrap().n
}
