//! The sandbox binary starts the whole simulated world, writes its settings and CA bundles,
//! and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_starts_the_world_writes_its_settings_and_stops_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("hb-sandbox-{}", uuid::Uuid::new_v4().simple()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hopsbridge-sandbox"))
        .args(["--state-dir", dir.to_str().unwrap(), "--clusters", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l == "Ready.")
    });
    assert!(tokio::time::timeout(Duration::from_secs(60), ready).await.unwrap().unwrap());

    let env: HashMap<String, String> = std::fs::read_to_string(dir.join("sandbox.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned())))
        .collect();
    assert_eq!(env["SANDBOX_CLUSTERS"], "eu-1 eu-2 eu-3");
    let discovery =
        reqwest::get(format!("{}.well-known/openid-configuration", env["SANDBOX_AUTH0_ISSUER"])).await.unwrap();
    assert_eq!(discovery.status(), 200);

    for cluster in ["EU_1", "EU_2", "EU_3"] {
        let ca = std::fs::read(&env[&format!("SANDBOX_{cluster}_HOPSWORKS_CA")]).unwrap();
        let client =
            reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()]).build().unwrap();
        let users = client
            .get(format!("{}/hopsworks-api/api/admin/users", env[&format!("SANDBOX_{cluster}_HOPSWORKS_URL")]))
            .header("authorization", format!("ApiKey {}", env[&format!("SANDBOX_{cluster}_HOPSWORKS_API_KEY")]))
            .send()
            .await
            .unwrap();
        assert_eq!(users.status(), 200, "{cluster} answers through the CA bundle written for it");
    }

    let stripe = reqwest::Client::new()
        .get(format!("{}/v1/customers", env["SANDBOX_STRIPE_URL"]))
        .bearer_auth(&env["SANDBOX_STRIPE_SECRET_KEY"])
        .send()
        .await
        .unwrap();
    assert_eq!(stripe.status(), 200);
    assert!(env["SANDBOX_STRIPE_WEBHOOK_SECRET"].starts_with("whsec_"), "billing's webhook secret is written");

    for cluster in ["EU_1", "EU_2", "EU_3"] {
        let yaml = std::fs::read_to_string(&env[&format!("SANDBOX_{cluster}_KUBECONFIG")]).unwrap();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(kube::Client::try_from(config).unwrap());
        let list = pods.list(&kube::api::ListParams::default().labels("owner")).await.unwrap();
        assert!(!list.items.is_empty(), "{cluster} runs a demo workload");
    }

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
