//! Watching pods on the simulated API server: events in resourceVersion order as the clock
//! moves, bookmarks, 410 Expired for a resourceVersion older than the history kept, and the
//! stream's end at timeoutSeconds; read raw and through the kube crate's watch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::{MemFormat, Profile, SimClock, SimContainer, SimPod, Workload};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_798_761_600;

fn pod(name: &str, created: i64, started: i64, finished: Option<i64>, deleted: Option<i64>) -> SimPod {
    SimPod {
        namespace: "ada-lab".to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        labels: [("owner".to_owned(), "ada".to_owned())].into(),
        node: "node-1".to_owned(),
        created,
        started,
        finished,
        deleted,
        containers: vec![SimContainer {
            name: "main".to_owned(),
            image: "python".to_owned(),
            cpu_request_millis: 500,
            memory_request_bytes: 1 << 30,
            gpus: 1,
            profile: Profile::Steady { cpu_nanocores: 1_000, memory_bytes: 1 << 20 },
            memory_format: MemFormat::Mebi,
        }],
    }
}

fn start(pods: Vec<SimPod>, options: KubeOptions) -> (Arc<SimClock>, KubeCluster) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Arc::new(SimClock::new(T0));
    let cluster =
        KubeCluster::start("watched", Arc::new(Workload::new(Vec::new(), pods)), Arc::clone(&clock), options).unwrap();
    (clock, cluster)
}

/// A raw watch: its lines as JSON, read as they come.
struct Raw(reqwest::Response, Vec<u8>);

impl Raw {
    async fn open(cluster: &KubeCluster, query: &str) -> Self {
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(cluster.ca_pem().as_bytes()).unwrap()])
            .build()
            .unwrap();
        let resp = http
            .get(format!("{}/api/v1/pods?watch=1&{query}", cluster.url()))
            .bearer_auth(cluster.token())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        Self(resp, Vec::new())
    }

    /// The next line, or `None` when the stream has ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(at) = self.1.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.1.drain(..=at).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.0.chunk()).await.unwrap().unwrap()?;
            self.1.extend_from_slice(&chunk);
        }
    }

    /// (type, pod name or resourceVersion, phase) of the next line.
    async fn event(&mut self) -> Option<(String, String, String)> {
        let v = self.next().await?;
        let kind = v["type"].as_str().unwrap().to_owned();
        let o = &v["object"];
        let what =
            o["metadata"]["name"].as_str().map_or_else(|| o["metadata"]["resourceVersion"].to_string(), str::to_owned);
        Some((kind, what, o["status"]["phase"].as_str().unwrap_or_default().to_owned()))
    }
}

async fn list_rv(cluster: &KubeCluster) -> String {
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cluster.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let list: Value = http
        .get(format!("{}/api/v1/pods", cluster.url()))
        .bearer_auth(cluster.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["metadata"]["resourceVersion"].as_str().unwrap().to_owned()
}

fn ev(kind: &str, name: &str, phase: &str) -> Option<(String, String, String)> {
    Some((kind.to_owned(), name.to_owned(), phase.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_lists_resource_version_sees_every_change_in_order_as_the_clock_moves() {
    let (clock, cluster) = start(
        vec![
            pod("job", T0 + 10, T0 + 20, Some(T0 + 95), Some(T0 + 150)),
            pod("notebook", T0 - 100, T0 - 90, None, None),
        ],
        KubeOptions::default(),
    );
    let rv = list_rv(&cluster).await;
    assert_eq!(rv, (T0 * 1000).to_string());
    let mut w = Raw::open(&cluster, &format!("resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=300")).await;
    clock.advance(30);
    assert_eq!(w.event().await, ev("ADDED", "job", "Pending"));
    assert_eq!(w.event().await, ev("MODIFIED", "job", "Running"));
    clock.advance(40);
    // T0 + 70: a bookmark at T0 + 60, carrying only its resourceVersion.
    let b = w.next().await.unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(b["object"]["metadata"].as_object().unwrap().len(), 1, "{b}");
    assert_eq!(b["object"]["metadata"]["resourceVersion"], ((T0 + 70) * 1000).to_string());
    clock.advance(100);
    assert_eq!(w.event().await, ev("MODIFIED", "job", "Succeeded"));
    let deleted = w.next().await.unwrap();
    assert_eq!(deleted["type"], "DELETED");
    assert_eq!(deleted["object"]["metadata"]["deletionTimestamp"], "2027-01-01T00:02:30Z");
    let finished = &deleted["object"]["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (finished["startedAt"].as_str(), finished["finishedAt"].as_str()),
        (Some("2027-01-01T00:00:20Z"), Some("2027-01-01T00:01:35Z"))
    );
    assert_eq!(w.event().await.unwrap().0, "BOOKMARK");

    // A pod started on the running cluster, at the clock's second: one ADDED at a new
    // resourceVersion, which a list at that second gives too.
    let before = list_rv(&cluster).await;
    cluster.run_pods(vec![pod("late", T0 - 50, T0 - 40, None, None)]).unwrap();
    assert_eq!(w.event().await, ev("ADDED", "late", "Running"));
    let after = list_rv(&cluster).await;
    assert!(after.parse::<i64>().unwrap() > before.parse::<i64>().unwrap(), "{before} {after}");
    let mut from_before = Raw::open(&cluster, &format!("resourceVersion={before}&timeoutSeconds=0")).await;
    assert_eq!(from_before.event().await, ev("ADDED", "late", "Running"));
    assert_eq!(from_before.event().await, None, "timeoutSeconds=0 ends at once");

    // The stream ends at its timeout (simulated seconds), after a last bookmark.
    clock.advance(200);
    let mut rest = Vec::new();
    while let Some(e) = w.event().await {
        rest.push(e.0);
    }
    assert_eq!(rest.last().map(String::as_str), Some("BOOKMARK"), "{rest:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_version_older_than_the_history_kept_is_410_expired_and_a_fresh_list_watches_again() {
    let (clock, cluster) = start(vec![pod("notebook", T0 - 100, T0 - 90, None, None)], KubeOptions::default());
    let old = list_rv(&cluster).await;
    clock.advance(301);
    let mut w = Raw::open(&cluster, &format!("resourceVersion={old}")).await;
    let e = w.next().await.unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!((e["object"]["code"].as_i64(), e["object"]["reason"].as_str()), (Some(410), Some("Expired")));
    assert!(e["object"]["message"].as_str().unwrap().starts_with("too old resource version"), "{e}");
    assert!(w.next().await.is_none(), "the stream ends after the error");

    // Forced: an open watch ends, and resuming it is 410; a fresh list's works.
    let fresh = list_rv(&cluster).await;
    let mut open = Raw::open(&cluster, &format!("resourceVersion={fresh}")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cluster.watches_open(), 1);
    cluster.expire_watches();
    assert!(open.next().await.is_none(), "an expired watch ends");
    let mut resumed = Raw::open(&cluster, &format!("resourceVersion={fresh}")).await;
    assert_eq!(resumed.next().await.unwrap()["object"]["code"], 410);
    let relisted = list_rv(&cluster).await;
    let mut again = Raw::open(&cluster, &format!("resourceVersion={relisted}&timeoutSeconds=5")).await;
    clock.advance(5);
    assert!(again.next().await.is_none(), "no change, no bookmark asked: it just ends");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_apply_and_a_pod_leaving_a_field_selector_is_seen_deleted() {
    let (clock, cluster) = start(
        vec![pod("job", T0 + 5, T0 + 10, Some(T0 + 40), None), pod("notebook", T0 - 100, T0 - 90, None, None)],
        KubeOptions::default(),
    );
    // Without a resourceVersion: the pods now as ADDED, then the changes.
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cluster.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let mut w = Raw(
        http.get(format!(
            "{}/api/v1/namespaces/ada-lab/pods?watch=true&fieldSelector=status.phase%3DRunning&labelSelector=owner%3Dada&timeoutSeconds=60",
            cluster.url()
        ))
        .bearer_auth(cluster.token())
        .send()
        .await
        .unwrap(),
        Vec::new(),
    );
    clock.advance(60);
    let mut seen = Vec::new();
    while let Some(e) = w.event().await {
        seen.push(e);
    }
    assert_eq!(
        seen,
        [ev("ADDED", "notebook", "Running"), ev("ADDED", "job", "Running"), ev("DELETED", "job", "Succeeded")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
    );
    let mut other = Raw::open(&cluster, "labelSelector=owner%3Dmia&timeoutSeconds=0").await;
    assert!(other.next().await.is_none(), "nobody else's pods");
    let (code, metrics) = {
        let r = http
            .get(format!("{}/apis/metrics.k8s.io/v1beta1/pods?watch=1", cluster.url()))
            .bearer_auth(cluster.token())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(code, 405, "metrics.k8s.io has no watch: {metrics}");
    cluster.stop().await;
}
