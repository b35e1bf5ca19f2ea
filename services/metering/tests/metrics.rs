//! metering's metrics, from the runs it keeps: window lag, gaps and Kubernetes API calls per
//! cluster. The runs are written here as the scheduler writes them; the cluster is measured
//! only from tomorrow, so the scheduler adds none of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_metering::MeteringConfig;
use hopsbridge_testkit::{TestBus, TestDb, TestSettings};
use tokio_util::sync::CancellationToken;

fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_lag_gaps_and_api_calls_are_shown_per_cluster() {
    hopsbridge_testkit::init();
    let (db, bus) = (TestDb::new().await, TestBus::new().await);
    let settings = TestSettings::data_service(Service::Metering, &db, &bus).set("database.migrate_on_start", "true");
    let config: MeteringConfig = TestSettings::load(&settings, &hopsbridge_metering::DEFAULTS);
    let app = hopsbridge_metering::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));

    let mut conn = db.connect("metering").await;
    let cluster = uuid::Uuid::now_v7();
    for statement in [
        format!(
            "INSERT INTO clusters (cluster_id, name, status, measured_from) \
             VALUES ('{cluster}', 'north', 'active', now() + interval '1 day')"
        ),
        // Two windows measured 20 s and 45 s after they ended (the later one is the latest),
        // with 7 and 5 API calls; one gap; and a window measured two days ago.
        format!(
            "INSERT INTO runs (cluster_id, window_start, window_end, status, next_attempt_at, deadline, finished_at, api_calls, gap_reason) VALUES \
             ('{cluster}', date_trunc('minute', now()) - interval '20 minutes', date_trunc('minute', now()) - interval '15 minutes', 'complete', now(), now(), date_trunc('minute', now()) - interval '15 minutes' + interval '20 seconds', 7, NULL), \
             ('{cluster}', date_trunc('minute', now()) - interval '15 minutes', date_trunc('minute', now()) - interval '10 minutes', 'complete', now(), now(), date_trunc('minute', now()) - interval '10 minutes' + interval '45 seconds', 5, NULL), \
             ('{cluster}', date_trunc('minute', now()) - interval '30 minutes', date_trunc('minute', now()) - interval '25 minutes', 'gap', now(), now(), NULL, 0, 'cluster_unreachable'), \
             ('{cluster}', now() - interval '2 days', now() - interval '2 days' + interval '5 minutes', 'complete', now(), now(), now() - interval '2 days', 1000, NULL)"
        ),
    ] {
        diesel::sql_query(statement).execute(&mut conn).await.unwrap();
    }

    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let of = |metric: &str| value(&text, &format!(r#"{metric}{{cluster="north",service="metering"}}"#));
    assert_eq!(of("hopsbridge_metering_window_lag_seconds"), Some(45.0), "{text}");
    assert_eq!(of("hopsbridge_metering_gaps_last_day"), Some(1.0), "{text}");
    assert_eq!(of("hopsbridge_metering_kubernetes_api_calls_last_hour"), Some(12.0), "{text}");
    let age = of("hopsbridge_metering_last_complete_window_age_seconds").unwrap();
    assert!((600.0..700.0).contains(&age), "{age}: {text}");
    assert_eq!(
        value(&text, r#"hopsbridge_metrics_sampler_up{sampler="postgres_metering",service="metering"}"#),
        Some(1.0),
        "{text}"
    );
    stop.cancel();
}
