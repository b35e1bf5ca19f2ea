//! The simulated Hopsworks' project storage (`GET /admin/projects?expand=quotas`), driven by an
//! independent HTTPS client: the quota figures as Hopsworks' admin API answers them (GiB as a
//! 32-bit float, usage missing where a directory has no quota, no feature store fields for a
//! project without one), storage changing on the simulated clock, and a failed read.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use hopsbridge_sandbox::clock::SimClock;
use hopsbridge_sandbox::hopsworks::{Directory, HopsworksConfig, HopsworksSim, ProjectStorage, Route};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;

const KEY: &str = "admin-api-key";

fn start() -> HopsworksSim {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HopsworksSim::start(HopsworksConfig::new("cluster-s", KEY, "hopsbridge-oauth")).unwrap()
}

async fn get(sim: &HopsworksSim, path_and_query: &str) -> (StatusCode, Value) {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let response = client
        .get(format!("{}{path_and_query}", sim.url()))
        .header("Authorization", format!("ApiKey {KEY}"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// A project's figure read back as a client reads it: a Java float of GiB, times 2^30.
fn bytes(quotas: &Value, field: &str) -> Option<u64> {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a whole, non-negative float")]
    quotas.get(field).and_then(Value::as_f64).map(|gib| {
        let float = gib as f32;
        // × 2^30 on the exponent: no float arithmetic.
        if float.to_bits() == 0 { 0 } else { f32::from_bits(float.to_bits() + (30 << 23)) as u64 }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_answer_each_directory_in_float_gib_and_omit_what_is_missing() {
    let sim = start();
    let admin = sim.admin().unwrap().username;
    let full = sim.create_project(&admin, "full").unwrap();
    let no_fs = sim.create_project(&admin, "no_fs").unwrap();
    let no_quota = sim.create_project(&admin, "no_quota").unwrap();
    let fresh = sim.create_project(&admin, "fresh").unwrap();
    // 3 GiB + 1 byte needs 33 bits: the float keeps 24, so the byte is lost, as in Hopsworks.
    sim.set_storage(full.id, ProjectStorage::of((3 << 30) + 1, Some(5 << 20), Some(7 << 20))).unwrap();
    sim.set_storage(no_fs.id, ProjectStorage::of(123, Some(0), None)).unwrap();
    let unquoted =
        ProjectStorage { project: Directory::holding(1 << 30).without_quota(), hive: None, featurestore: None };
    sim.set_storage(no_quota.id, unquoted).unwrap();

    let (status, listing) = get(&sim, "/admin/projects?expand=creator&expand=quotas").await;
    assert_eq!(status, StatusCode::OK);
    let item = |id: u64| listing["items"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap().clone();

    let q = &item(full.id)["projectQuotas"];
    assert_eq!(q["hdfsQuota"], 200.0, "the default quota, in GiB");
    assert_eq!(bytes(q, "hdfsUsage"), Some(3 << 30), "the float drops the last byte");
    assert_eq!(bytes(q, "hiveUsage"), Some(5 << 20));
    assert_eq!(bytes(q, "featurestoreUsage"), Some(7 << 20));
    assert_eq!(q["hdfsNsQuota"], -1);
    assert!(q["kafkaMaxNumTopics"].is_number());
    assert_eq!(sim.storage_at(full.id, i64::MAX).unwrap().reported_offline_bytes(), Some((3 << 30) + (12 << 20)));

    let q = &item(no_fs.id)["projectQuotas"];
    assert_eq!(bytes(q, "hdfsUsage"), Some(123));
    assert!(q.get("featurestoreUsage").is_none() && q.get("featurestoreQuota").is_none(), "{q}");

    let q = &item(no_quota.id)["projectQuotas"];
    assert_eq!(q["hdfsQuota"], -1.0);
    assert!(q.get("hdfsUsage").is_none(), "a directory without a quota answers no usage: {q}");
    assert!(q.get("hiveQuota").is_none());

    let q = &item(fresh.id)["projectQuotas"];
    assert_eq!(
        (bytes(q, "hdfsUsage"), bytes(q, "hiveUsage"), bytes(q, "featurestoreUsage")),
        (Some(0), Some(0), Some(0))
    );

    let (_, plain) = get(&sim, "/admin/projects?expand=creator").await;
    assert!(plain["items"][0].get("projectQuotas").is_none(), "quotas come on request only");
    let (_, comma) = get(&sim, "/admin/projects?expand=creator,quotas").await;
    assert!(comma["items"][0].get("projectQuotas").is_some());
    assert!(sim.set_storage(9999, ProjectStorage::empty()).is_err(), "an unknown project has no storage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_changes_on_the_simulated_clock_and_a_quota_read_can_fail_alone() {
    let sim = start();
    let clock = Arc::new(SimClock::new(1_800_000_000));
    sim.use_clock(Arc::clone(&clock));
    let admin = sim.admin().unwrap().username;
    let p = sim.create_project(&admin, "growing").unwrap();
    sim.set_storage_at(p.id, 1_800_000_000, ProjectStorage::of(1 << 30, None, None)).unwrap();
    sim.set_storage_at(p.id, 1_800_003_600, ProjectStorage::of(2 << 30, None, None)).unwrap();
    let read = |v: &Value| bytes(&v["items"][0]["projectQuotas"], "hdfsUsage");

    let (_, now) = get(&sim, "/admin/projects?expand=quotas").await;
    assert_eq!(read(&now), Some(1 << 30));
    clock.advance(3599);
    assert_eq!(read(&get(&sim, "/admin/projects?expand=quotas").await.1), Some(1 << 30));
    clock.advance(1);
    assert_eq!(read(&get(&sim, "/admin/projects?expand=quotas").await.1), Some(2 << 30));

    sim.fail_next_on(Route::ProjectQuotas, 1, 503);
    let (status, body) = get(&sim, "/admin/projects?expand=creator").await;
    assert_eq!(status, StatusCode::OK, "the plain list is not the faulted route: {body}");
    let (status, body) = get(&sim, "/admin/projects?expand=creator&expand=quotas").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["errorCode"].is_number(), "{body}");
    assert_eq!(
        read(&get(&sim, "/admin/projects?expand=quotas").await.1),
        Some(2 << 30),
        "one read failed, the next answers"
    );
}
