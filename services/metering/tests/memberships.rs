//! metering's projection of team memberships follows the one rule: every case of
//! `hopsbridge_domain::membership::cases()` is published, in its order, to the real consumers,
//! and the owners metering would bill a window starting at each expected time are the
//! expected ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_domain::membership::{self, Change};
use hopsbridge_domain::{ClusterId, UserId};
use hopsbridge_metering::MeteringConfig;
use hopsbridge_testkit::{TestBus, TestDb, TestSettings};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Publishes `change` about `member` as the team service would, and waits until metering has
/// handled it, so the next change arrives after it.
async fn publish(db: &TestDb, bus: &TestBus, member: UserId, change: Change) {
    let id = bus.publish_membership(member, change).await;
    assert!(db.handled("metering", &id, Duration::from_secs(15)).await, "metering handled {change:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_of_the_membership_rule_holds_through_the_real_handlers() {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let settings =
        TestSettings::data_service(Service::Metering, &db, &bus).set("provisioning.url", "http://127.0.0.1:9");
    let config: MeteringConfig = TestSettings::load(&settings, &hopsbridge_metering::DEFAULTS);
    let app = hopsbridge_metering::build(config).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let cluster = ClusterId::new();

    for (n, case) in membership::cases().into_iter().enumerate() {
        let member = UserId::new();
        let mut conn = db.connect("metering").await;
        // The member holds an account on the cluster, so a window's usage there is theirs.
        diesel::sql_query(format!(
            "INSERT INTO accounts (cluster_id, user_id, hopsworks_username, assigned_at)
             VALUES ('{cluster}', '{member}', 'member{n}', now())"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        for change in &case.changes {
            publish(&db, &bus, member, *change).await;
        }
        for (t, owner) in &case.expected {
            let window_start = chrono::DateTime::from_timestamp_micros(*t).unwrap();
            let known = hopsbridge_metering::projection::known(&mut conn, cluster, window_start).await.unwrap();
            assert_eq!(known.accounts.get(&format!("member{n}")), Some(&member));
            assert_eq!(known.owners.get(&member), owner.as_ref(), "{}: at {t}", case.name);
        }
    }
    stop.cancel();
}
