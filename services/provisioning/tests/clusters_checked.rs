//! Clusters checked before they are accepted and on a schedule (decision 0054), against the
//! sandbox's Kubernetes API server and Hopsworks: each way a real cluster can be wrong is
//! refused with what to fix, and nothing of a refused registration or change is kept.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{Provisioning, admin, cluster_body, hopsworks, kube_cluster, kube_cluster_with, start, start_with};
use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions, ServerCertificate};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const NAMES: [&str; 6] = [
    "kubernetes_api",
    "kubernetes_can_list_pods",
    "kubernetes_can_list_pod_metrics",
    "kubernetes_can_watch_pods",
    "metrics_api",
    "hopsworks_admin_api",
];

fn body_with(name: &str, sim: &hopsbridge_sandbox::hopsworks::HopsworksSim, kube: &KubeCluster) -> Value {
    let mut body = cluster_body(name, sim, 5);
    body["kubeconfig"] = json!(kube.kubeconfig());
    body
}

/// The checks of a 422 `cluster_check_failed`, by name: (ok, detail).
fn refused_checks(status: StatusCode, err: &Value) -> Vec<(String, bool, String)> {
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cluster_check_failed")),
        "{err}"
    );
    err["details"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["ok"].as_bool().unwrap(),
                c["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn failed<'a>(checks: &'a [(String, bool, String)], name: &str) -> &'a str {
    let (_, ok, detail) = checks.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("{name} in {checks:?}"));
    assert!(!ok, "{name} failed: {checks:?}");
    detail
}

async fn register(p: &Provisioning, body: Value) -> (StatusCode, Value) {
    p.call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(body)).await
}

async fn nothing_kept(p: &Provisioning) {
    assert_eq!(p.count("SELECT count(*) AS n FROM clusters").await, 0, "nothing registered");
    assert_eq!(p.count("SELECT count(*) AS n FROM cluster_health").await, 0, "no health kept");
    assert_eq!(p.count("SELECT count(*) AS n FROM outbox").await, 0, "nothing announced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_passes_every_check_is_registered_with_them_as_its_health() {
    let p = start().await;
    let (sim, kube) = (hopsworks("passes"), kube_cluster("passes", None));
    let (status, created) = register(&p, body_with("eu-1", &sim, &kube)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let health = &created["health"];
    assert_eq!(health["ok"], true, "{created}");
    let names: Vec<&str> = health["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, NAMES);
    assert!(health["checks"][0]["detail"].as_str().unwrap().contains("v1.33.5"), "{health}");
    let id = created["id"].as_str().unwrap();
    let (_, one) = p.call(Method::GET, &format!("/api/admin/clusters/{id}"), Some(&admin()), None).await;
    assert_eq!(one["health"], *health, "the admin API shows the same health");
    let (_, all) = p.call(Method::GET, "/api/admin/clusters", Some(&admin()), None).await;
    assert_eq!(all[0]["health"]["ok"], true, "{all}");
    assert!(!created.to_string().contains(kube.token()), "no secret in the answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_way_a_cluster_can_be_wrong_is_refused_with_what_to_fix_and_nothing_kept() {
    let p = start().await;
    let sim = hopsworks("wrong");

    // A missing permission is named, with where to grant it.
    let kube = kube_cluster("denied", None);
    kube.deny("list", "metrics.k8s.io", "pods");
    let (status, err) = register(&p, body_with("eu-1", &sim, &kube)).await;
    let checks = refused_checks(status, &err);
    let detail = failed(&checks, "kubernetes_can_list_pod_metrics");
    assert!(detail.contains("may not list pods.metrics.k8s.io") && detail.contains("10-metering.yaml"), "{detail}");
    assert!(checks.iter().filter(|(_, ok, _)| !ok).count() == 1, "only that check fails: {checks:?}");
    assert!(err["message"].as_str().unwrap().contains("kubernetes_can_list_pod_metrics"), "{err}");

    // A role of an older release, without the watch of pods.
    kube.allow_all();
    kube.deny("watch", "", "pods");
    let (status, err) = register(&p, body_with("eu-1", &sim, &kube)).await;
    let checks = refused_checks(status, &err);
    let detail = failed(&checks, "kubernetes_can_watch_pods");
    assert!(detail.contains("may not watch pods in all namespaces"), "{detail}");
    assert!(checks.iter().filter(|(_, ok, _)| !ok).count() == 1, "only that check fails: {checks:?}");

    // Without metrics-server.
    kube.allow_all();
    kube.set_metrics_api(false);
    let (status, err) = register(&p, body_with("eu-1", &sim, &kube)).await;
    assert!(failed(&refused_checks(status, &err), "metrics_api").contains("install metrics-server"), "{err}");

    // Credentials the API server refuses: the other Kubernetes checks are not run.
    kube.set_metrics_api(true);
    let forged = kube.kubeconfig().replace(kube.token(), "forged-token");
    let mut body = body_with("eu-1", &sim, &kube);
    body["kubeconfig"] = json!(forged);
    let (status, err) = register(&p, body).await;
    let checks = refused_checks(status, &err);
    assert!(failed(&checks, "kubernetes_api").contains("401 Unauthorized"), "{checks:?}");
    assert!(failed(&checks, "metrics_api").starts_with("not checked"), "{checks:?}");
    assert!(!err.to_string().contains("forged-token"), "no secret in the answer");

    // The hand-made certificate kubectl accepts and rustls refuses, with its remedy.
    let ca_itself = kube_cluster_with(
        "ca",
        KubeOptions { server_certificate: ServerCertificate::CaAsEndEntity, ..KubeOptions::default() },
    );
    let (status, err) = register(&p, body_with("eu-1", &sim, &ca_itself)).await;
    let detail = failed(&refused_checks(status, &err), "kubernetes_api").to_owned();
    assert!(detail.contains("CaUsedAsEndEntity") && detail.contains("kubectl accepts it, rustls does not"), "{detail}");
    assert!(detail.contains("issue a server certificate signed by that CA"), "{detail}");

    // A stopped API server.
    let gone = kube_cluster("gone", None);
    let gone_kubeconfig = gone.kubeconfig();
    gone.stop().await;
    let mut body = body_with("eu-1", &sim, &kube);
    body["kubeconfig"] = json!(gone_kubeconfig);
    let (status, err) = register(&p, body).await;
    assert!(failed(&refused_checks(status, &err), "kubernetes_api").contains("cannot be reached"), "{err}");

    // Hopsworks refusing the key, and Hopsworks behind a CA the bundle does not hold.
    let mut body = body_with("eu-1", &sim, &kube);
    body["api_key"] = json!("not-the-key");
    let (status, err) = register(&p, body).await;
    let checks = refused_checks(status, &err);
    assert!(failed(&checks, "hopsworks_admin_api").contains("refused the API key"), "{checks:?}");
    assert!(checks.iter().filter(|(_, ok, _)| !ok).count() == 1, "Kubernetes passed: {checks:?}");
    let mut body = body_with("eu-1", &sim, &kube);
    body["ca_bundle"] = json!(hopsworks("elsewhere").ca_pem());
    let (status, err) = register(&p, body).await;
    let detail = failed(&refused_checks(status, &err), "hopsworks_admin_api").to_owned();
    assert!(detail.contains("UnknownIssuer") && detail.contains("ca_bundle"), "{detail}");

    nothing_kept(&p).await;
    let (status, created) = register(&p, body_with("eu-1", &sim, &kube)).await;
    assert_eq!(status, StatusCode::CREATED, "fixed, it registers: {created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_checked_in_what_it_changes_and_a_refused_one_changes_nothing() {
    let p = start().await;
    let (sim, kube) = (hopsworks("change"), kube_cluster("change", None));
    let (status, created) = register(&p, body_with("eu-1", &sim, &kube)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/api/admin/clusters/{id}");

    let denied = kube_cluster("change-denied", None);
    denied.deny("list", "", "pods");
    let (status, err) =
        p.call(Method::PATCH, &path, Some(&admin()), Some(json!({"kubeconfig": denied.kubeconfig()}))).await;
    let checks = refused_checks(status, &err);
    assert!(failed(&checks, "kubernetes_can_list_pods").contains("may not list pods in all namespaces"), "{checks:?}");
    assert!(checks.iter().all(|(n, _, _)| n != "hopsworks_admin_api"), "Hopsworks is not what changed: {checks:?}");
    let (status, err) = p.call(Method::PATCH, &path, Some(&admin()), Some(json!({"api_key": "wrong"}))).await;
    let checks = refused_checks(status, &err);
    assert_eq!(checks.len(), 1, "only Hopsworks is checked: {checks:?}");
    assert_eq!(p.count("SELECT count(*) AS n FROM outbox").await, 1, "only the registration was announced");
    let (_, kubeconfig) =
        p.call(Method::GET, &format!("/internal/clusters/{id}/kubeconfig"), Some(&common::metering()), None).await;
    assert_eq!(kubeconfig["kubeconfig"].as_str(), Some(kube.kubeconfig().as_str()), "the kubeconfig is unchanged");

    // What reaches no cluster is not checked: a change of capacity passes with the API server down.
    kube.stop().await;
    let (status, changed) = p.call(Method::PATCH, &path, Some(&admin()), Some(json!({"capacity": 9}))).await;
    assert_eq!((status, changed["capacity"].as_i64()), (StatusCode::OK, Some(9)), "{changed}");
    assert_eq!(changed["health"]["ok"], true, "the last check stands until the next: {changed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_check_follows_the_cluster_as_it_breaks_and_is_fixed() {
    let p = start_with(|s| s.set("clusters.health_interval_secs", "1")).await;
    let (sim, kube) = (hopsworks("scheduled"), kube_cluster("scheduled", None));
    let (status, created) = register(&p, body_with("eu-1", &sim, &kube)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/api/admin/clusters/{}", created["id"].as_str().unwrap());
    let first = created["health"]["checked_at"].clone();

    kube.deny("list", "metrics.k8s.io", "pods");
    let broken = wait_health(&p, &path, |h| h["ok"] == false).await;
    let failing: Vec<&str> = broken["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failing, ["kubernetes_can_list_pod_metrics"], "{broken}");
    assert_ne!(broken["checked_at"], first);

    kube.allow_all();
    wait_health(&p, &path, |h| h["ok"] == true).await;
    assert_eq!(p.count("SELECT count(*) AS n FROM cluster_health").await, 1, "one row per cluster");
}

async fn wait_health(p: &Provisioning, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, cluster) = p.call(Method::GET, path, Some(&admin()), None).await;
        if pred(&cluster["health"]) {
            return cluster["health"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "health never matched; last: {cluster}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
