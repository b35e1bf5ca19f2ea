//! `GET /internal/clusters/{id}/storage` (decision 0056): each project's offline storage as the
//! sandbox's Hopsworks reports it, for the metering service only; a project without a quota is
//! unreported, never zero; a failing Hopsworks is a 502. Online storage from the cluster's
//! RonDB (decision 0071): each project's database from `ndbinfo.memory_per_fragment`, exact
//! against the sandbox's model; RonDB refusing or down leaves every project's online part
//! unreported with why, offline still measured; a cluster without RonDB says so; a bad RonDB
//! account is refused at registration and change.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::{Provisioning, admin, cluster_body, hopsworks, metering, start};
use hopsbridge_sandbox::hopsworks::{Directory, ProjectStorage, Route};
use hopsbridge_sandbox::rondb::{Grant, READER_USER, RonDbSim, Table};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
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

fn with_rondb(mut body: Value, rondb: &RonDbSim, password: &str) -> Value {
    body["rondb_endpoint"] = Value::String(rondb.endpoint());
    body["rondb_user"] = Value::String(READER_USER.to_owned());
    body["rondb_password"] = Value::String(password.to_owned());
    body
}

async fn storage_of(p: &Provisioning, id: &str) -> Vec<Value> {
    let (status, body) =
        p.call(Method::GET, &format!("/internal/clusters/{id}/storage"), Some(&metering()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["projects"].as_array().unwrap().clone()
}

fn project<'a>(projects: &'a [Value], name: &str) -> &'a Value {
    projects.iter().find(|p| p["name"] == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_storage_is_each_projects_rondb_database_and_a_failed_read_leaves_it_unreported() {
    let p = start().await;
    let sim = hopsworks("online");
    let rondb = RonDbSim::start().unwrap();
    let (status, cluster) = p
        .call(
            Method::POST,
            "/api/admin/clusters",
            Some(&admin()),
            Some(with_rondb(cluster_body("eu-online", &sim, 5), &rondb, rondb.password())),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cluster}");
    assert_eq!(cluster["rondb_endpoint"], Value::String(rondb.endpoint()));
    assert_eq!(
        (cluster["rondb_user"].as_str(), cluster["has_rondb_password"].as_bool()),
        (Some(READER_USER), Some(true))
    );
    assert!(!cluster.to_string().contains(rondb.password()), "the password is never answered");
    let checks = cluster["health"]["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["name"] == "rondb_ndbinfo" && c["ok"] == true), "{checks:?}");
    let id = cluster["id"].as_str().unwrap().to_owned();

    sim.create_project("admin", "Fraud_Model").unwrap();
    sim.create_project("admin", "offline_only").unwrap();
    sim.create_project("admin", "gamma").unwrap();
    // Hopsworks names a project's online database after the project, in lower case.
    rondb.set_database(
        "fraud_model",
        vec![Table::holding("fg_1_1", 10_000_123, 4, 4_096), Table::holding("fg_2_1", 777, 2, 0)],
    );
    rondb.set_database("gamma", vec![Table::holding("t_1", 5 << 20, 3, 1_024)]);
    rondb.set_database("no_project", vec![Table::holding("x", 123, 1, 0)]);

    let projects = storage_of(&p, &id).await;
    let online = |name: &str| project(&projects, name)["online_bytes"].as_u64();
    assert_eq!(online("Fraud_Model"), Some(10_000_123 + 4_096 + 777), "tables and indexes, each fragment once");
    assert_eq!(online("gamma"), Some((5 << 20) + 1_024));
    assert_eq!(online("offline_only"), Some(0), "no online database holds nothing online");
    assert!(projects.iter().all(|p| p["online_unreported"].is_null() && p["offline_bytes"].is_u64()), "{projects:?}");
    assert!(rondb.queries().iter().all(|(user, q)| user == READER_USER && q.contains("ndbinfo.memory_per_fragment")));

    // The password changed on RonDB: 1045, every project's online part unreported, offline kept.
    rondb.add_account(READER_USER, "rotated", vec![Grant::Database("ndbinfo".into())]);
    let projects = storage_of(&p, &id).await;
    for p in &projects {
        assert!(p["online_bytes"].is_null() && p["offline_bytes"].is_u64(), "{p}");
        let why = p["online_unreported"].as_str().unwrap();
        assert!(why.starts_with("rondb_access_denied") && why.contains("1045"), "{why}");
    }
    // No SELECT on the table: 1142.
    rondb.add_account(READER_USER, rondb.password(), vec![Grant::Table("ndbinfo".into(), "nodes".into())]);
    let why = project(&storage_of(&p, &id).await, "gamma")["online_unreported"].as_str().unwrap().to_owned();
    assert!(why.starts_with("rondb_no_grant") && why.contains("1142"), "{why}");
    // Down: unreachable.
    rondb.add_account(READER_USER, rondb.password(), vec![Grant::Database("ndbinfo".into())]);
    rondb.set_down(true).await.unwrap();
    let why = project(&storage_of(&p, &id).await, "gamma")["online_unreported"].as_str().unwrap().to_owned();
    assert!(why.starts_with("rondb_unreachable"), "{why}");
    rondb.set_down(false).await.unwrap();
    assert_eq!(project(&storage_of(&p, &id).await, "gamma")["online_bytes"].as_u64(), Some((5 << 20) + 1_024));

    // A cluster registered without RonDB: online storage is not configured there.
    let plain = hopsworks("plain");
    let plain_id = p.register("eu-plain", &plain, 5).await;
    plain.create_project("admin", "delta").unwrap();
    let delta = storage_of(&p, &plain_id).await;
    assert_eq!(delta[0]["online_unreported"].as_str(), Some("online_not_configured"));
    assert!(delta[0]["online_bytes"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rondb_account_that_cannot_read_ndbinfo_is_refused_at_registration_and_change() {
    let p = start().await;
    let sim = hopsworks("rondb-checks");
    let rondb = RonDbSim::start().unwrap();
    let clusters = || async { p.count("SELECT count(*) AS n FROM clusters").await };

    // Malformed: 400 invalid_rondb, before anything is called.
    let mut partial = cluster_body("eu-r", &sim, 5);
    partial["rondb_endpoint"] = Value::String(rondb.endpoint());
    let (status, err) = p.call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(partial)).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_rondb")), "{err}");
    let mut bad = with_rondb(cluster_body("eu-r", &sim, 5), &rondb, rondb.password());
    bad["rondb_endpoint"] = Value::String("rondb-without-port".into());
    let (status, err) = p.call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(bad)).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_rondb")), "{err}");

    // A wrong password: the check fails with 1045 and nothing is kept.
    let wrong = with_rondb(cluster_body("eu-r", &sim, 5), &rondb, "wrong");
    let (status, err) = p.call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(wrong)).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("cluster_check_failed")));
    let check = err["details"]["checks"].as_array().unwrap().iter().find(|c| c["name"] == "rondb_ndbinfo").unwrap();
    assert_eq!(check["ok"], false);
    assert!(check["detail"].as_str().unwrap().contains("1045"), "{check}");
    assert!(err["message"].as_str().unwrap().contains("rondb_ndbinfo"), "{err}");
    assert!(!err.to_string().contains("wrong\""), "no password in the refusal");
    assert_eq!(clusters().await, 0);

    // Registered without RonDB, then given an account without the grant: refused; then a good one.
    let id = p.register("eu-r", &sim, 5).await;
    let path = format!("/api/admin/clusters/{id}");
    let (status, err) =
        p.call(Method::PATCH, &path, Some(&admin()), Some(json!({"rondb_password": rondb.password()}))).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_rondb")), "{err}");
    rondb.add_account("no_grant", "pw", vec![]);
    let change = json!({"rondb_endpoint": rondb.endpoint(), "rondb_user": "no_grant", "rondb_password": "pw"});
    let (status, err) = p.call(Method::PATCH, &path, Some(&admin()), Some(change)).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("cluster_check_failed")));
    assert!(err["message"].as_str().unwrap().contains("1142"), "{err}");
    let (_, unchanged) = p.call(Method::GET, &path, Some(&admin()), None).await;
    assert!(unchanged["rondb_endpoint"].is_null(), "{unchanged}");
    rondb.set_down(true).await.unwrap();
    let down =
        json!({"rondb_endpoint": rondb.endpoint(), "rondb_user": READER_USER, "rondb_password": rondb.password()});
    let (status, err) = p.call(Method::PATCH, &path, Some(&admin()), Some(down.clone())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err["message"].as_str().unwrap().contains("rondb_unreachable"), "{err}");
    rondb.set_down(false).await.unwrap();
    let (status, changed) = p.call(Method::PATCH, &path, Some(&admin()), Some(down)).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (changed["rondb_user"].as_str(), changed["has_rondb_password"].as_bool()),
        (Some(READER_USER), Some(true))
    );
    // A later change of the password alone is checked over the stored endpoint and user.
    let (status, err) = p.call(Method::PATCH, &path, Some(&admin()), Some(json!({"rondb_password": "not-it"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let (status, _) = p.call(Method::PATCH, &path, Some(&admin()), Some(json!({"capacity": 6}))).await;
    assert_eq!(status, StatusCode::OK, "a change that reaches no RonDB is not checked against it");
}
