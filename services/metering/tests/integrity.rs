//! metering's integrity checks against its real tables: each finds its case and not the
//! healthy one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use chrono::{DateTime, Duration, DurationRound, Utc};
use diesel::sql_types::{Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::Service;
use hopsbridge_metering::integrity::{ChecksConfig, NamespacesWithoutProject, WindowsGappedRepeatedly};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::{Database, migrations_for};
use hopsbridge_platform::integrity::{Check, Finding, IntegrityChecks};
use hopsbridge_testkit::TestDb;

async fn metering_db() -> (TestDb, Database) {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    migrations_for(Service::Metering).run(db.url()).await.unwrap();
    let mut config = db.config();
    config.max_connections = 2;
    let pool = Database::new(&config, "metering").unwrap();
    (db, pool)
}

async fn cluster(conn: &mut AsyncPgConnection, name: &str, drained: bool) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    diesel::sql_query(
        "INSERT INTO clusters (cluster_id, name, status, measured_from, drained_at) \
         VALUES ($1, $2, 'active', now() - interval '30 days', CASE WHEN $3 = 1 THEN now() END)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(name)
    .bind::<Integer, _>(i32::from(drained))
    .execute(conn)
    .await
    .unwrap();
    id
}

async fn project(conn: &mut AsyncPgConnection, cluster: uuid::Uuid, namespace: &str) {
    diesel::sql_query(
        "INSERT INTO projects (cluster_id, namespace, project_id, name, creator_username) VALUES ($1, $2, 7, $2, 'ada')",
    )
    .bind::<SqlUuid, _>(cluster)
    .bind::<Text, _>(namespace)
    .execute(conn)
    .await
    .unwrap();
}

async fn sample(conn: &mut AsyncPgConnection, cluster: uuid::Uuid, namespace: &str, user: &str, end: DateTime<Utc>) {
    diesel::sql_query(
        "INSERT INTO samples (id, cluster_id, namespace, hopsworks_username, window_start, window_end, attribution, \
             cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, pods) \
         VALUES (gen_random_uuid(), $1, $2, $3, $4 - interval '15 minutes', $4, 'unknown_project', 1000, 1000, 0, 1)",
    )
    .bind::<SqlUuid, _>(cluster)
    .bind::<Text, _>(namespace)
    .bind::<Text, _>(user)
    .bind::<Timestamptz, _>(end)
    .execute(conn)
    .await
    .unwrap();
}

/// Runs of `cluster`'s windows ending at the last quarter hour and before, newest first:
/// `g` a gap, `c` complete, `p` pending.
async fn runs(conn: &mut AsyncPgConnection, cluster: uuid::Uuid, statuses: &str) {
    let last = Utc::now().duration_trunc(Duration::minutes(15)).unwrap();
    for (i, status) in statuses.chars().enumerate() {
        let end = last - Duration::minutes(15 * i64::try_from(i).unwrap());
        let (status, reason) = match status {
            'g' => ("gap", Some(if i == 0 { "tls_verification_failed" } else { "cluster_unavailable" })),
            'c' => ("complete", None),
            _ => ("pending", None),
        };
        diesel::sql_query(
            "INSERT INTO runs (cluster_id, window_start, window_end, status, next_attempt_at, deadline, gap_reason, gap_detail) \
             VALUES ($1, $2 - interval '15 minutes', $2, $3, $2, $2 + interval '3 minutes', $4, $5)",
        )
        .bind::<SqlUuid, _>(cluster)
        .bind::<Timestamptz, _>(end)
        .bind::<Text, _>(status)
        .bind::<diesel::sql_types::Nullable<Text>, _>(reason)
        .bind::<diesel::sql_types::Nullable<Text>, _>(reason.map(|r| format!("{r}: the API server said no")))
        .execute(conn)
        .await
        .unwrap();
    }
}

async fn found(check: &dyn Check, db: &Database) -> Vec<Finding> {
    let mut findings = check.run(db).await.unwrap();
    findings.sort_by(|a, b| a.key.cmp(&b.key));
    findings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_in_a_namespace_no_project_knows_is_found_and_project_or_system_usage_is_not() {
    let (test_db, db) = metering_db().await;
    let mut conn = test_db.connect("metering").await;
    let lab = cluster(&mut conn, "lab-1", false).await;
    project(&mut conn, lab, "demo").await;
    let now = Utc::now();
    // A project's usage, system pods (no owner label), usage older than the lookback: healthy.
    sample(&mut conn, lab, "demo", "ada", now - Duration::minutes(30)).await;
    sample(&mut conn, lab, "kube-system", "", now - Duration::minutes(30)).await;
    sample(&mut conn, lab, "gone", "bob", now - Duration::days(2)).await;
    let check = NamespacesWithoutProject { clock: Clock::system(), lookback_secs: 86_400 };
    assert_eq!(check.name(), "namespaces_without_project");
    assert_eq!(found(&check, &db).await, Vec::new());

    // A labelled user's pods in a namespace the project list does not have, in two windows.
    sample(&mut conn, lab, "shadow", "bob", now - Duration::minutes(30)).await;
    sample(&mut conn, lab, "shadow", "eve", now - Duration::minutes(45)).await;
    sample(&mut conn, lab, "shadow", "bob", now - Duration::minutes(60)).await;
    let findings = found(&check, &db).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].key, format!("{lab}/shadow"));
    assert_eq!(findings[0].subject, "namespace shadow on cluster lab-1");
    assert!(findings[0].detail.starts_with("Usage of bob, eve measured in 3 window(s)"), "{}", findings[0].detail);

    // Once provisioning lists it as a project, it is no finding.
    project(&mut conn, lab, "shadow").await;
    assert_eq!(found(&check, &db).await, Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_gaps_in_enough_of_its_last_windows_is_found_and_others_are_not() {
    let (test_db, db) = metering_db().await;
    let mut conn = test_db.connect("metering").await;
    // Three gaps among the last eight ended windows (the pending one does not count).
    let flaky = cluster(&mut conn, "flaky", false).await;
    runs(&mut conn, flaky, "pgcgccgcc").await;
    // Two gaps among the last eight, and older gaps beyond them.
    let healthy = cluster(&mut conn, "healthy", false).await;
    runs(&mut conn, healthy, "gccgccccgggg").await;
    // Gapped throughout, but drained: no longer measured.
    let drained = cluster(&mut conn, "drained", true).await;
    runs(&mut conn, drained, "gggggggg").await;

    let check = WindowsGappedRepeatedly { gapped: 3, of_last: 8 };
    assert_eq!(check.name(), "windows_gapped_repeatedly");
    let findings = found(&check, &db).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!((findings[0].key.clone(), findings[0].subject.as_str()), (flaky.to_string(), "cluster flaky"));
    assert!(
        findings[0]
            .detail
            .starts_with("3 of the last 8 windows (900 s each) of cluster flaky are gaps: cluster_unavailable x3"),
        "{}",
        findings[0].detail
    );

    // One more gap for the healthy cluster makes three of its last eight.
    let last = Utc::now().duration_trunc(Duration::minutes(15)).unwrap() + Duration::minutes(15);
    diesel::sql_query(
        "INSERT INTO runs (cluster_id, window_start, window_end, status, next_attempt_at, deadline, gap_reason) \
         VALUES ($1, $2 - interval '15 minutes', $2, 'gap', $2, $2, 'throttled')",
    )
    .bind::<SqlUuid, _>(healthy)
    .bind::<Timestamptz, _>(last)
    .execute(&mut conn)
    .await
    .unwrap();
    let keys: Vec<String> = found(&check, &db).await.into_iter().map(|f| f.key).collect();
    let mut wanted = vec![flaky.to_string(), healthy.to_string()];
    wanted.sort();
    assert_eq!(keys, wanted);
}

#[test]
fn the_settings_are_checked_and_both_checks_register() {
    let ok = ChecksConfig { usage_lookback_secs: 86_400, gapped_windows: 3, of_last_windows: 8 };
    assert!(ok.validate(Service::Metering).is_ok());
    for bad in [
        ChecksConfig { usage_lookback_secs: 0, ..ok.clone() },
        ChecksConfig { gapped_windows: 0, ..ok.clone() },
        ChecksConfig { gapped_windows: 9, ..ok.clone() },
        ChecksConfig { of_last_windows: 20_000, gapped_windows: 3, ..ok.clone() },
    ] {
        assert!(bad.validate(Service::Metering).is_err(), "{bad:?}");
    }
    let checks = IntegrityChecks::default();
    hopsbridge_metering::integrity::register(&checks, &Clock::system(), &ok).unwrap();
    assert_eq!(checks.names(), vec!["namespaces_without_project", "windows_gapped_repeatedly"]);
}
