//! An admin registers a cluster in a real browser: Debian's headless Chromium at a phone's
//! width (390 px), every service as a process and the sandbox, and a Hopsworks cluster the
//! sandbox starts that nobody registered yet. The admin uploads its kubeconfig and CA bundle as
//! files (`<input type=file>`, a multipart form) with the Hopsworks address and API key; a
//! refused upload is shown next to its field with what was typed kept; the registered cluster
//! is listed with its occupancy and edited from its page, and the API then holds exactly what
//! the forms said. The admin then reads every service's integrity findings, filters them by
//! plain links and runs one service's checks from its form. Every page has labelled,
//! keyboard-reachable controls and no sideways scrolling. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/console-screenshots/admin-*.png`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_journey::browser::chromium::{Chromium, TAB};
use hopsbridge_journey::{Options, Platform, binaries};
use hopsbridge_sandbox::auth0::Auth0Config;
use hopsbridge_sandbox::hopsworks::{HopsworksConfig, HopsworksSim};
use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::Workload;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(30);

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

async fn accessible(browser: &Chromium, page: &str) {
    let problems = browser.accessibility_problems().await;
    assert!(problems.is_empty(), "{page}: {problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_registers_a_cluster_by_uploading_its_kubeconfig_and_edits_it_in_chromium() {
    let platform = Platform::start(binaries!(), &Options { clusters: 1, ..Options::default() }).await;
    let gateway = platform.gateway.clone();

    // A cluster of the sandbox's that is not registered yet: Hopsworks and its Kubernetes.
    let api_key = format!("hw-admin-key-north-{}", uuid::Uuid::new_v4().simple());
    let hopsworks =
        HopsworksSim::start(HopsworksConfig::new("north-9", &api_key, &Auth0Config::default().client_id)).unwrap();
    let kubernetes = KubeCluster::start(
        "north-9",
        Arc::new(Workload::new(Vec::new(), Vec::new())),
        Arc::clone(&platform.world.clock),
        KubeOptions::default(),
    )
    .unwrap();
    let files = std::env::temp_dir().join(format!("hopsbridge-admin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&files).unwrap();
    let kubeconfig = files.join("north-9.kubeconfig.yaml");
    std::fs::write(&kubeconfig, kubernetes.kubeconfig()).unwrap();
    let ca = files.join("north-9-ca.pem");
    std::fs::write(&ca, hopsworks.ca_pem()).unwrap();
    let not_yaml = files.join("photo.yaml");
    std::fs::write(&not_yaml, "{{ this is: [not a kubeconfig").unwrap();

    // An admin, made by the one who bootstrapped the platform.
    let admin = platform.sign_up("opal").await;
    let (status, granted) =
        platform.call("PUT", &format!("/api/admin/users/{}/admin", admin.user_id), &platform.admin_token, None).await;
    assert!((200..300).contains(&status), "{granted}");

    let browser = Chromium::start(&shots(), 390, 844).await;
    platform.world.auth0.sign_in_as(&admin.auth0);
    browser.goto(&format!("{gateway}/admin/clusters")).await;
    assert_eq!(browser.url().await, format!("{gateway}/admin/clusters"));
    let listed = browser.text().await;
    assert!(listed.contains("eu-1") && listed.contains("0 of 50 seats (0 %)"), "{listed}");
    accessible(&browser, "the clusters page").await;
    // The form is reached by the keyboard: Tab from the name field walks into the next fields.
    browser.click("#c-name").await;
    browser.press(TAB).await;
    let focused = browser.script("return document.activeElement.id;").await;
    assert_eq!(focused.as_str(), Some("c-region"));
    browser.screenshot("admin-01-clusters").await;

    let fill = |kubeconfig: PathBuf| {
        let browser = &browser;
        let hopsworks = &hopsworks;
        let api_key = &api_key;
        let ca = &ca;
        async move {
            browser.clear("#c-name").await;
            browser.type_into("#c-name", "north-9").await;
            browser.clear("#c-region").await;
            browser.type_into("#c-region", "eu-north").await;
            browser.clear("#c-api_url").await;
            browser.type_into("#c-api_url", &hopsworks.origin()).await;
            browser.type_into("#c-api_key", api_key).await;
            browser.clear("#c-oauth_client_id").await;
            browser.type_into("#c-oauth_client_id", hopsworks.oauth_client_id()).await;
            browser.clear("#c-capacity").await;
            browser.type_into("#c-capacity", "5").await;
            browser.type_into("#c-kubeconfig", kubeconfig.to_str().unwrap()).await;
            browser.type_into("#c-ca_bundle", ca.to_str().unwrap()).await;
        }
    };

    // A file that is no kubeconfig: refused, said next to its field, the typed fields kept.
    fill(not_yaml.clone()).await;
    browser.follow(r#"form[action="/admin/clusters"] button[type="submit"]"#).await;
    let refused = browser.text().await;
    let error = browser.script("return [...document.querySelectorAll('.field-error, .error')].map(e => e.id + ': ' + e.textContent).join(' | ');").await;
    assert!(
        browser.count("#c-kubeconfig-error").await == 1 || refused.contains("Provisioning checked the cluster"),
        "the kubeconfig's error is shown: {error} {refused}"
    );
    let kept = browser
        .script("return document.getElementById('c-name').value + ' ' + document.getElementById('c-api_key').value;")
        .await;
    assert_eq!(kept.as_str(), Some("north-9 "), "the name kept, the key not");
    let (_, clusters) = platform.call("GET", "/api/admin/clusters", &platform.admin_token, None).await;
    assert_eq!(clusters.as_array().unwrap().len(), 1, "nothing registered");
    accessible(&browser, "the refused registration").await;
    browser.script("document.querySelector('.field-error, .checks')?.scrollIntoView(); return null;").await;
    browser.screenshot("admin-02-refused-upload").await;

    // The right files: registered and listed with its occupancy.
    fill(kubeconfig.clone()).await;
    browser.follow(r#"form[action="/admin/clusters"] button[type="submit"]"#).await;
    browser.wait_url(&format!("{gateway}/admin/clusters?done=registered"), PATIENCE).await;
    let listed = browser.text().await;
    assert!(listed.contains("The cluster was registered.") && listed.contains("0 of 5 seats (0 %)"), "{listed}");
    browser.screenshot("admin-03-registered").await;
    let (_, clusters) = platform.call("GET", "/api/admin/clusters", &platform.admin_token, None).await;
    let north: Value = clusters.as_array().unwrap().iter().find(|c| c["name"] == "north-9").unwrap().clone();
    assert_eq!(
        (north["api_url"].as_str(), north["region"].as_str(), north["capacity"].as_i64(), north["status"].as_str()),
        (Some(hopsworks.origin().as_str()), Some("eu-north"), Some(5), Some("active"))
    );
    assert_eq!(north["ca_bundle"].as_str(), Some(hopsworks.ca_pem()), "the uploaded CA bundle, as the file held it");

    // Edited from its page: more seats, in maintenance; the secrets left as they were.
    browser.follow(r#"a[href="/admin/cluster?name=north-9"]"#).await;
    assert!(browser.text().await.contains("Cluster north-9"));
    accessible(&browser, "the cluster's page").await;
    browser.clear("#c-capacity").await;
    browser.type_into("#c-capacity", "8").await;
    browser.click(r#"#c-status option[value="maintenance"]"#).await;
    browser.screenshot("admin-04-edit").await;
    browser.follow(r#"form[action="/admin/cluster"] button[type="submit"]"#).await;
    browser.wait_url(&format!("{gateway}/admin/cluster?name=north-9&done=updated"), PATIENCE).await;
    assert!(browser.text().await.contains("The cluster was saved."));
    let (_, after) = platform
        .call("GET", &format!("/api/admin/clusters/{}", north["id"].as_str().unwrap()), &platform.admin_token, None)
        .await;
    assert_eq!((after["capacity"].as_i64(), after["status"].as_str()), (Some(8), Some("maintenance")), "{after}");
    assert_eq!(after["api_key_key_id"], north["api_key_key_id"]);
    browser.goto(&format!("{gateway}/admin/clusters")).await;
    assert!(browser.text().await.contains("0 of 8 seats (0 %)"));
    browser.screenshot("admin-05-clusters-after-edit").await;

    // The integrity findings: every service's, filtered open, resolved or all by plain links,
    // each check's last run; a service's checks run from its form, and the page says so.
    browser.goto(&format!("{gateway}/admin/integrity")).await;
    let text = browser.text().await;
    assert!(text.contains("Integrity findings") && !text.contains("could not be read"), "{text}");
    assert_eq!(browser.count(r#"form[action="/admin/integrity/run"]"#).await, 5, "a run form per service");
    let (_, provisioning) =
        platform.call("GET", "/api/admin/integrity/provisioning", &platform.admin_token, None).await;
    let checks = provisioning["checks"].as_array().unwrap().len();
    assert!(checks > 0, "{provisioning}");
    assert_eq!(browser.count("#integrity-provisioning-runs tbody tr").await, checks, "each check's last run");
    accessible(&browser, "the integrity page").await;
    browser.screenshot("admin-06-integrity").await;
    browser.follow(r#"nav.filters a[href="/admin/integrity?status=all"]"#).await;
    assert_eq!(browser.url().await, format!("{gateway}/admin/integrity?status=all"));
    let current =
        browser.script(r#"return document.querySelector('nav.filters a[aria-current="page"]').textContent;"#).await;
    assert_eq!(current.as_str(), Some("All"));
    accessible(&browser, "every finding").await;
    browser.follow(r#"#integrity-provisioning-section form[action="/admin/integrity/run"] button"#).await;
    let (url, text) = (browser.url().await, browser.text().await);
    assert_eq!(
        url,
        format!("{gateway}/admin/integrity?status=all&started=provisioning&done=running#integrity-provisioning"),
        "{text}"
    );
    assert!(text.contains("The checks were started and are running"), "{text}");
    assert_eq!(browser.count("#integrity-provisioning-started").await, 1, "said in provisioning's section");
    assert_eq!(browser.count(r#"[id$="-started"]"#).await, 1, "and only there");
    accessible(&browser, "the integrity page after a run was asked for").await;
    browser.screenshot("admin-07-integrity-running").await;
    let _ = std::fs::remove_dir_all(&files);
}
