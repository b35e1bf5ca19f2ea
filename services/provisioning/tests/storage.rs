//! `GET /internal/clusters/{id}/storage` (decision 0056): each project's offline storage as the
//! sandbox's Hopsworks reports it, for the metering service only; a project without a quota is
//! unreported, never zero; a failing Hopsworks is a 502.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::{admin, hopsworks, metering, start};
use hopsbridge_sandbox::hopsworks::{Directory, ProjectStorage, Route};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metering_service_reads_each_projects_offline_storage_as_hopsworks_reports_it() {
    let p = start().await;
    let sim = hopsworks("storage");
    let id = p.register("eu-1", &sim, 5).await;
    let path = format!("/internal/clusters/{id}/storage");
    let full = sim.create_project("admin", "full").unwrap();
    let no_fs = sim.create_project("admin", "no_fs").unwrap();
    let unquoted = sim.create_project("admin", "unquoted").unwrap();
    // 3 GiB + 1 byte: Hopsworks' float keeps 24 bits, so the byte is not reported.
    sim.set_storage(full.id, ProjectStorage::of((3 << 30) + 1, Some(5 << 20), Some(7 << 20))).unwrap();
    sim.set_storage(no_fs.id, ProjectStorage::of(123, Some(4), None)).unwrap();
    let dir = Directory::holding(1 << 30).without_quota();
    sim.set_storage(unquoted.id, ProjectStorage { project: dir, hive: None, featurestore: None }).unwrap();

    let (status, body) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cluster_id"], Value::String(id.clone()));
    assert!(body["read_at"].is_string());
    let item = |pid: u64| body["projects"].as_array().unwrap().iter().find(|p| p["id"] == pid).unwrap().clone();
    let f = item(full.id);
    assert_eq!(
        (f["name"].as_str(), f["namespace"].as_str(), f["creator_username"].as_str()),
        (Some("full"), Some("full"), Some("admin"))
    );
    assert_eq!(f["offline_bytes"].as_u64(), Some((3 << 30) + (12 << 20)));
    assert!(f["unreported"].is_null());
    assert_eq!(item(no_fs.id)["offline_bytes"].as_u64(), Some(127), "no feature store holds nothing");
    let u = item(unquoted.id);
    assert!(u["offline_bytes"].is_null(), "never a zero: {u}");
    assert!(u["unreported"].as_str().unwrap().contains("no quota"), "{u}");
    let reads: Vec<_> = sim.requests().into_iter().filter(|r| r.path.ends_with("/admin/projects")).collect();
    let last = reads.last().unwrap();
    assert!(
        last.query.split('&').any(|q| q == "expand=quotas") && last.query.split('&').any(|q| q == "expand=creator"),
        "{last:?}"
    );

    // Only the metering service; an unknown cluster is 404.
    let (status, err) = p.call(Method::GET, &path, Some(&admin()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("metering_only")));
    let unknown = format!("/internal/clusters/{}/storage", Uuid::now_v7());
    let (status, err) = p.call(Method::GET, &unknown, Some(&metering()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("cluster_not_found")));

    // Hopsworks failing on every try: 502 with the stable code, no figures.
    sim.fail_next_on(Route::ProjectQuotas, 10, 503);
    let (status, err) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("hopsworks_unavailable")), "{err}");
    sim.clear_faults();
    let (status, _) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!(status, StatusCode::OK);
}
