//! What a client learns about its own access from the simulated API server, driven by real
//! clients (the kube crate's typed API, kubectl): `SelfSubjectAccessReview` allowed by default
//! and denied where a test says, metrics-server's API present or absent, and a server
//! certificate that is its own CA, which kubectl accepts and rustls refuses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions, ServerCertificate};
use hopsbridge_sandbox::workload::{SimClock, Workload};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::sync::Arc;

const T0: i64 = 1_798_761_600;

fn start(options: KubeOptions) -> KubeCluster {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Arc::new(SimClock::new(T0));
    KubeCluster::start("access", Arc::new(Workload::new(Vec::new(), Vec::new())), clock, options).unwrap()
}

async fn client(cluster: &KubeCluster) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&cluster.kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

async fn can(client: &kube::Client, verb: &str, group: &str, resource: &str) -> (bool, Option<String>) {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answered = api.create(&PostParams::default(), &review).await.unwrap();
    let status = answered.status.expect("a review comes back with its status");
    assert_eq!(answered.spec.resource_attributes.unwrap().resource.as_deref(), Some(resource), "the spec is echoed");
    (status.allowed, status.reason)
}

async fn kubectl(cluster: &KubeCluster, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = std::env::temp_dir().join(format!("hb-kubectl-access-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("kubeconfig");
    std::fs::write(&config, cluster.kubeconfig()).unwrap();
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&config)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("kubectl could not run ({e}); install it: apt-get install kubernetes-client, or run scripts/test.sh")
        });
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_allow_everything_until_a_permission_is_denied() {
    let cluster = start(KubeOptions::default());
    let client = client(&cluster).await;
    let (allowed, reason) = can(&client, "list", "", "pods").await;
    assert!(allowed);
    assert!(reason.unwrap_or_default().starts_with("RBAC: allowed by ClusterRoleBinding"));
    assert!(can(&client, "list", "metrics.k8s.io", "pods").await.0);

    cluster.deny("list", "metrics.k8s.io", "pods");
    assert_eq!(can(&client, "list", "metrics.k8s.io", "pods").await, (false, None), "denied without a reason");
    assert!(can(&client, "list", "", "pods").await.0, "only the denied permission is refused");
    let (code, out, err) = kubectl(&cluster, &["auth", "can-i", "list", "pods.metrics.k8s.io", "-A"]).await;
    assert_eq!((code, out.as_str()), (Some(1), "no"), "{err}");
    assert_eq!(kubectl(&cluster, &["auth", "can-i", "list", "pods", "-A"]).await.1, "yes");

    cluster.allow_all();
    assert!(can(&client, "list", "metrics.k8s.io", "pods").await.0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_without_attributes_is_invalid() {
    let cluster = start(KubeOptions::default());
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cluster.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let url = format!("{}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", cluster.url());
    let body =
        serde_json::json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "spec": {}});
    let answer = http.post(&url).bearer_auth(cluster.token()).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 422);
    let status: serde_json::Value = answer.json().await.unwrap();
    assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("Invalid")), "{status}");
    let forged = http.post(&url).bearer_auth("forged").json(&body).send().await.unwrap();
    assert_eq!(forged.status(), 401, "a review needs a valid token too");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metrics_server_its_api_is_absent_from_discovery_and_paths() {
    let cluster = start(KubeOptions::default());
    let client = client(&cluster).await;
    let groups = |c: kube::Client| async move {
        c.list_api_groups().await.unwrap().groups.into_iter().map(|g| g.name).collect::<Vec<_>>()
    };
    assert!(groups(client.clone()).await.contains(&"metrics.k8s.io".to_owned()));
    let (code, out, _) = kubectl(&cluster, &["get", "--raw", "/apis/metrics.k8s.io/v1beta1"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("PodMetrics"), "{out}");

    cluster.set_metrics_api(false);
    assert!(!groups(client.clone()).await.contains(&"metrics.k8s.io".to_owned()));
    let (code, _, err) = kubectl(&cluster, &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("NotFound") || err.contains("could not find"), "{err}");
    assert_eq!(client.apiserver_version().await.unwrap().git_version, "v1.33.5", "the rest still answers");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_that_is_its_own_ca_passes_kubectl_and_fails_rustls() {
    let cluster = start(KubeOptions { server_certificate: ServerCertificate::CaAsEndEntity, ..KubeOptions::default() });
    let (code, out, err) = kubectl(&cluster, &["get", "--raw", "/version"]).await;
    assert_eq!(code, Some(0), "kubectl (Go's TLS) accepts it: {err}");
    assert!(out.contains("v1.33.5"), "{out}");

    let refused = client(&cluster).await.apiserver_version().await.unwrap_err();
    let mut chain = refused.to_string();
    let mut source = std::error::Error::source(&refused);
    while let Some(e) = source {
        chain.push_str(&format!(": {e}"));
        source = e.source();
    }
    assert!(chain.contains("CaUsedAsEndEntity"), "{chain}");
    cluster.stop().await;
}
