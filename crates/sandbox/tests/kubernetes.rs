//! The simulated Kubernetes API server, driven by real clients: the kube crate and kubectl.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_sandbox::kubernetes::{Faults, KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::{
    MemFormat, Profile, SCRAPE_SECS, SimClock, SimContainer, SimPod, Workload, WorkloadConfig,
};
use k8s_metrics::v1beta1::PodMetrics;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: i64 = 1_798_761_600;

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn start(config: &WorkloadConfig, options: KubeOptions) -> (Arc<SimClock>, KubeCluster) {
    let clock = Arc::new(SimClock::new(config.start));
    let cluster =
        KubeCluster::start("cluster-a", Arc::new(Workload::generate(config)), Arc::clone(&clock), options).unwrap();
    (clock, cluster)
}

async fn client_from(yaml: &str) -> kube::Client {
    let kc = Kubeconfig::from_yaml(yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn http(cluster: &KubeCluster) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cluster.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap()
}

async fn get_json(cluster: &KubeCluster, path: &str) -> (u16, serde_json::Value) {
    let resp = http(cluster).get(format!("{}{path}", cluster.url())).bearer_auth(cluster.token()).send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap())
}

async fn list_all_pods(api: &Api<Pod>, labels: &str, limit: u32) -> (Vec<Pod>, usize) {
    let mut lp = ListParams::default().labels(labels).limit(limit);
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= limit as usize);
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => lp = lp.continue_token(&t),
            _ => break,
        }
    }
    (out, pages)
}

fn keys_of(pods: &[Pod]) -> BTreeSet<(String, String)> {
    pods.iter().map(|p| (p.metadata.namespace.clone().unwrap(), p.metadata.name.clone().unwrap())).collect()
}

fn expected(workload: &Workload, t: i64, f: impl Fn(&SimPod) -> bool) -> BTreeSet<(String, String)> {
    workload.pods().iter().filter(|p| p.exists_at(t) && f(p)).map(|p| (p.namespace.clone(), p.name.clone())).collect()
}

/// Parses a Kubernetes quantity exactly: CPU in nanocores (`scale` 10^9) or bytes (`scale` 1).
fn parse_quantity(q: &str, scale: u128) -> u128 {
    let digits_end = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(digits_end);
    let n: u128 = num.parse().unwrap();
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        e if e.starts_with('e') => (10_u128.pow(e[1..].parse().unwrap()), 1),
        other => panic!("unknown quantity suffix {other:?} in {q:?}"),
    };
    let v = n * mul * scale;
    assert_eq!(v % div, 0, "{q} is not exact at this scale");
    v / div
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_lists_pods_by_owner_across_pages_as_the_workload_has_them() {
    init();
    let config = WorkloadConfig { long_running_pods: 300, short_lived_pods: 2000, ..WorkloadConfig::default() };
    let (clock, cluster) = start(&config, KubeOptions::default());
    clock.advance(6 * 3600);
    let api: Api<Pod> = Api::all(client_from(&cluster.kubeconfig()).await);
    let (pods, pages) = list_all_pods(&api, "owner", 50).await;
    assert!(pages > 2, "{pages} pages");
    let want = expected(cluster.workload(), clock.now(), |p| p.owner().is_some());
    assert_eq!(keys_of(&pods), want);
    assert_eq!(pods.len(), want.len(), "no pod twice");

    let phases: BTreeSet<String> = pods.iter().map(|p| p.status.clone().unwrap().phase.unwrap()).collect();
    assert!(phases.contains("Running"), "{phases:?}");
    let gpu_pod = pods
        .iter()
        .find(|p| {
            let c = &p.spec.as_ref().unwrap().containers[0];
            c.resources.as_ref().unwrap().requests.as_ref().unwrap().contains_key("nvidia.com/gpu")
        })
        .expect("some pods request GPUs");
    let sim = cluster.workload().pods().iter().find(|p| Some(&p.name) == gpu_pod.metadata.name.as_ref()).unwrap();
    let requests = gpu_pod.spec.as_ref().unwrap().containers[0].resources.as_ref().unwrap().requests.clone().unwrap();
    assert_eq!(requests["nvidia.com/gpu"].0, sim.containers[0].gpus.to_string());
    assert_eq!(
        parse_quantity(&requests["cpu"].0, 1_000_000_000),
        u128::from(sim.containers[0].cpu_request_millis) * 1_000_000
    );
    assert_eq!(parse_quantity(&requests["memory"].0, 1), u128::from(sim.containers[0].memory_request_bytes));
    assert_eq!(gpu_pod.metadata.labels.as_ref().unwrap()["owner"], sim.owner().unwrap());
    assert!(gpu_pod.metadata.labels.as_ref().unwrap().contains_key("project-id"));

    // Later pages come from the snapshot of the first, though the clock moves on.
    let t = clock.now();
    let first = api.list(&ListParams::default().labels("owner").limit(100)).await.unwrap();
    clock.advance(250);
    let mut keys = keys_of(&first.items);
    let mut token = first.metadata.continue_.unwrap();
    while !token.is_empty() {
        let page = api.list(&ListParams::default().labels("owner").limit(100).continue_token(&token)).await.unwrap();
        keys.extend(keys_of(&page.items));
        token = page.metadata.continue_.unwrap_or_default();
    }
    assert_eq!(keys, expected(cluster.workload(), t, |p| p.owner().is_some()));
    assert_ne!(keys, expected(cluster.workload(), clock.now(), |p| p.owner().is_some()), "the workload moved");
    let fresh = api.list(&ListParams::default().labels("owner").limit(100)).await.unwrap();
    // resourceVersions are the clock second × 1,000 (plus the pods started at that second).
    assert_eq!(fresh.metadata.resource_version, Some((clock.now() * 1000).to_string()));

    // Without a selector the server says how many items remain.
    let page = api.list(&ListParams::default().limit(10)).await.unwrap();
    let all = expected(cluster.workload(), clock.now(), |_| true);
    assert_eq!(page.metadata.remaining_item_count, Some(i64::try_from(all.len()).unwrap() - 10));
    let ns = &cluster.workload().projects()[0].namespace;
    let (in_ns, _) = list_all_pods(&Api::namespaced(api.clone().into_client(), ns), "", 7).await;
    assert_eq!(keys_of(&in_ns), expected(cluster.workload(), clock.now(), |p| &p.namespace == ns));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_of_every_form_select_what_kubernetes_would() {
    init();
    let (clock, cluster) = start(&WorkloadConfig::default(), KubeOptions::default());
    let api: Api<Pod> = Api::all(client_from(&cluster.kubeconfig()).await);
    let w = cluster.workload();
    let owner = w.projects()[0].owner.clone();
    let project = w.projects()[0].id.to_string();
    let label = |p: &SimPod, k: &str| p.labels.get(k).cloned();
    type Filter<'a> = Box<dyn Fn(&SimPod) -> bool + 'a>;
    let cases: Vec<(String, Filter)> = vec![
        (format!("owner={owner}"), Box::new(|p: &SimPod| label(p, "owner").as_deref() == Some(&owner))),
        (format!("owner=={owner}"), Box::new(|p: &SimPod| label(p, "owner").as_deref() == Some(&owner))),
        (format!("owner!={owner}"), Box::new(|p: &SimPod| label(p, "owner").as_deref() != Some(&owner))),
        (
            "app in (jupyter, spark-driver)".to_owned(),
            Box::new(|p: &SimPod| matches!(label(p, "app").as_deref(), Some("jupyter" | "spark-driver"))),
        ),
        ("app notin (jupyter)".to_owned(), Box::new(|p: &SimPod| label(p, "app").as_deref() != Some("jupyter"))),
        ("accelerator!=nvidia".to_owned(), Box::new(|p: &SimPod| label(p, "accelerator").as_deref() != Some("nvidia"))),
        (
            "accelerator notin (nvidia)".to_owned(),
            Box::new(|p: &SimPod| label(p, "accelerator").as_deref() != Some("nvidia")),
        ),
        ("accelerator".to_owned(), Box::new(|p: &SimPod| p.labels.contains_key("accelerator"))),
        ("!accelerator".to_owned(), Box::new(|p: &SimPod| !p.labels.contains_key("accelerator"))),
        (
            format!("owner={owner},project-id in ({project},1),!accelerator"),
            Box::new(|p: &SimPod| {
                label(p, "owner").as_deref() == Some(&owner)
                    && label(p, "project-id").as_deref() == Some(&project)
                    && !p.labels.contains_key("accelerator")
            }),
        ),
    ];
    for (selector, filter) in &cases {
        let (pods, _) = list_all_pods(&api, selector, 30).await;
        let want = expected(w, clock.now(), filter);
        assert!(!want.is_empty(), "{selector} selects something");
        assert_ne!(want.len(), w.pods().len(), "{selector} leaves something out");
        assert_eq!(keys_of(&pods), want, "{selector}");
    }
    for bad in ["owner in (a", "owner notin a", "owner=a b", "=a", "!"] {
        match api.list(&ListParams::default().labels(bad)).await.map(|l| l.items.len()) {
            Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"), "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Pods are watched (tests/kubernetes_watch.rs); PodMetrics are not, as metrics-server has no watch.
    let (code, _) = get_json(&cluster, "/apis/metrics.k8s.io/v1beta1/pods?watch=true").await;
    assert_eq!(code, 405, "PodMetrics watches are refused, not answered with a list");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continue_token_is_answered_410_gone() {
    init();
    let (clock, cluster) =
        start(&WorkloadConfig::default(), KubeOptions { continue_ttl_secs: 120, ..KubeOptions::default() });
    let api: Api<Pod> = Api::all(client_from(&cluster.kubeconfig()).await);
    let first = api.list(&ListParams::default().labels("owner").limit(20)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();

    clock.advance(120);
    let second = api.list(&ListParams::default().labels("owner").limit(20).continue_token(&token)).await.unwrap();
    assert_eq!(second.items.len(), 20, "still valid at the TTL");
    assert_ne!(keys_of(&first.items), keys_of(&second.items));

    clock.advance(1);
    let err = api.list(&ListParams::default().labels("owner").limit(20).continue_token(&token)).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.starts_with("The provided continue parameter is too old"), "{}", s.message);
        }
        other => panic!("expected 410, got {other:?}"),
    }
    let (code, body) = get_json(&cluster, &format!("/apis/metrics.k8s.io/v1beta1/pods?limit=5&continue={token}")).await;
    assert_eq!((code, body["reason"].as_str()), (410, Some("Expired")));
    assert_eq!(body["kind"], "Status");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_missing_token_is_answered_401_with_a_status() {
    init();
    let (_clock, cluster) = start(&WorkloadConfig::default(), KubeOptions::default());
    let url = format!("{}/api/v1/pods", cluster.url());
    let missing = http(&cluster).get(&url).send().await.unwrap();
    let wrong = http(&cluster).get(&url).bearer_auth("not-the-token").send().await.unwrap();
    for resp in [missing, wrong] {
        assert_eq!(resp.status().as_u16(), 401);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        );
    }
    let yaml = cluster.kubeconfig().replace(cluster.token(), "forged");
    let err = Api::<Pod>::all(client_from(&yaml).await).list(&ListParams::default()).await.unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 401),
        other => panic!("expected 401, got {other:?}"),
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_refused_without_the_cluster_ca() {
    init();
    let (_clock, cluster) = start(&WorkloadConfig::default(), KubeOptions::default());
    let other = hopsbridge_sandbox::tls::Ca::new("elsewhere").unwrap();
    let stranger = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other.cert_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let refused = stranger.get(format!("{}/version", cluster.url())).bearer_auth(cluster.token()).send().await;
    assert!(refused.is_err(), "a client trusting another CA is refused");

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let yaml = cluster.kubeconfig().replace(&b64.encode(cluster.ca_pem()), &b64.encode(other.cert_pem()));
    assert!(Api::<Pod>::all(client_from(&yaml).await).list(&ListParams::default()).await.is_err());
    let ok = Api::<Pod>::all(client_from(&cluster.kubeconfig()).await).list(&ListParams::default()).await;
    assert!(ok.is_ok(), "{ok:?}");
    cluster.stop().await;
}

fn steady(cpu_nanocores: u64, memory_bytes: u64, format: MemFormat, gpus: u64) -> SimContainer {
    SimContainer {
        name: "main".to_owned(),
        image: "docker.hops.works/jupyter:4.1.0".to_owned(),
        cpu_request_millis: 2000,
        memory_request_bytes: 4 << 30,
        gpus,
        profile: Profile::Steady { cpu_nanocores, memory_bytes },
        memory_format: format,
    }
}

fn pod(ns: &str, name: &str, owner: &str, span: (i64, i64, Option<i64>), containers: Vec<SimContainer>) -> SimPod {
    let (created, started, finished) = span;
    SimPod {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        labels: [("owner".to_owned(), owner.to_owned()), ("project-id".to_owned(), "7".to_owned())].into(),
        node: "node-1".to_owned(),
        created,
        started,
        finished,
        deleted: None,
        containers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podmetrics_cover_only_running_pods_in_every_quantity_format() {
    init();
    let config = WorkloadConfig { long_running_pods: 400, short_lived_pods: 400, ..WorkloadConfig::default() };
    let mut pods = Workload::generate(&config).pods().to_vec();
    let now = T0 + 3 * 3600 + 7;
    pods.push(pod("zz-fixed", "pending", "zed", (now - 5, now + 100, None), vec![steady(1, 1, MemFormat::Bytes, 0)]));
    pods.push(pod(
        "zz-fixed",
        "done",
        "zed",
        (now - 500, now - 400, Some(now - 30)),
        vec![steady(1, 1, MemFormat::Bytes, 0)],
    ));
    pods.push(pod("zz-fixed", "running", "zed", (now - 500, now - 400, None), vec![steady(1, 1, MemFormat::Bytes, 0)]));
    let workload = Arc::new(Workload::new(Vec::new(), pods));
    let clock = Arc::new(SimClock::new(now));
    let cluster =
        KubeCluster::start("cluster-m", Arc::clone(&workload), Arc::clone(&clock), KubeOptions::default()).unwrap();
    let client = client_from(&cluster.kubeconfig()).await;
    let metrics = Api::<PodMetrics>::all(client.clone()).list(&ListParams::default().labels("owner")).await.unwrap();
    let ts = now - now.rem_euclid(SCRAPE_SECS);
    let got: BTreeSet<(String, String)> = metrics
        .items
        .iter()
        .map(|m| (m.metadata.namespace.clone().unwrap(), m.metadata.name.clone().unwrap()))
        .collect();
    let want: BTreeSet<(String, String)> = workload
        .pods()
        .iter()
        .filter(|p| p.running_at(ts - 1) && p.running_at(ts) && p.exists_at(ts))
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    assert_eq!(got, want);
    assert!(got.contains(&("zz-fixed".to_owned(), "running".to_owned())));
    let pods = Api::<Pod>::all(client).list(&ListParams::default().labels("owner=zed")).await.unwrap();
    let phases: BTreeMap<String, String> = pods
        .items
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap(), p.status.clone().unwrap().phase.unwrap()))
        .collect();
    assert_eq!(phases["pending"], "Pending");
    assert_eq!(phases["done"], "Succeeded");
    assert!(!got.contains(&("zz-fixed".to_owned(), "pending".to_owned())));
    assert!(!got.contains(&("zz-fixed".to_owned(), "done".to_owned())));

    // PodMetrics page like pods, across all namespaces and within one.
    let api = Api::<PodMetrics>::all(client_from(&cluster.kubeconfig()).await);
    let mut paged = BTreeSet::new();
    let mut lp = ListParams::default().labels("owner").limit(64);
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 64);
        paged.extend(
            page.items.iter().map(|m| (m.metadata.namespace.clone().unwrap(), m.metadata.name.clone().unwrap())),
        );
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => lp = lp.continue_token(&t),
            _ => break,
        }
    }
    assert!(pages > 3);
    assert_eq!(paged, got);
    let ns = want.iter().next().unwrap().0.clone();
    let in_ns = Api::<PodMetrics>::namespaced(client_from(&cluster.kubeconfig()).await, &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let in_ns: BTreeSet<_> =
        in_ns.items.iter().map(|m| (m.metadata.namespace.clone().unwrap(), m.metadata.name.clone().unwrap())).collect();
    assert_eq!(in_ns, want.iter().filter(|(n, _)| *n == ns).cloned().collect());

    // The usage is the model's rate over the last scrape window, written in every canonical form.
    let by_key: BTreeMap<(&str, &str), &SimPod> =
        workload.pods().iter().map(|p| ((p.namespace.as_str(), p.name.as_str()), p)).collect();
    let mut cpu_forms = BTreeSet::new();
    let mut mem_forms = BTreeSet::new();
    for m in &metrics.items {
        assert_eq!(m.window, Duration::from_secs(15));
        let sim = by_key[&(m.metadata.namespace.as_deref().unwrap(), m.metadata.name.as_deref().unwrap())];
        for (c, sc) in m.containers.iter().zip(&sim.containers) {
            let (cpu, mem) = sc.profile.at(ts - 1);
            let cpu_q = &c.usage.cpu.0;
            let mem_q = &c.usage.memory.0;
            assert_eq!(parse_quantity(cpu_q, 1_000_000_000), u128::from(cpu), "{cpu_q}");
            assert_eq!(parse_quantity(mem_q, 1), u128::from(mem), "{mem_q}");
            cpu_forms.insert(cpu_q.trim_start_matches(|c: char| c.is_ascii_digit()).to_owned());
            let mem_form = mem_q.trim_start_matches(|c: char| c.is_ascii_digit());
            mem_forms.insert(if mem_form.starts_with('e') { "e".to_owned() } else { mem_form.to_owned() });
        }
    }
    assert_eq!(cpu_forms, ["", "m", "n", "u"].map(String::from).into());
    for form in ["", "Ki", "Mi", "e", "M"] {
        assert!(mem_forms.contains(form), "memory form {form:?} missing from {mem_forms:?}");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_answer_429_with_retry_after_then_5xx_then_slowly() {
    init();
    let (_clock, cluster) = start(&WorkloadConfig::default(), KubeOptions::default());
    cluster.set_faults(Faults { too_many_requests: Some(3), times: Some(1), ..Faults::default() });
    let resp = http(&cluster)
        .get(format!("{}/api/v1/pods?labelSelector=owner", cluster.url()))
        .bearer_auth(cluster.token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (body["reason"].as_str(), body["details"]["retryAfterSeconds"].as_u64()),
        (Some("TooManyRequests"), Some(3))
    );
    assert_eq!(get_json(&cluster, "/api/v1/pods?labelSelector=owner").await.0, 200, "once only");

    cluster.set_faults(Faults { server_error: Some(503), times: Some(1), ..Faults::default() });
    let (code, body) = get_json(&cluster, "/version").await;
    assert_eq!((code, body["reason"].as_str()), (503, Some("ServiceUnavailable")));
    let api: Api<Pod> = Api::all(client_from(&cluster.kubeconfig()).await);
    assert!(api.list(&ListParams::default().limit(1)).await.is_ok());

    cluster.set_faults(Faults { server_error: Some(500), ..Faults::default() });
    match api.list(&ListParams::default().limit(1)).await.map(|l| l.items.len()) {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (500, "InternalError")),
        other => panic!("expected 500, got {other:?}"),
    }
    cluster.set_faults(Faults::default());
    assert!(api.list(&ListParams::default().limit(1)).await.is_ok());

    cluster.set_faults(Faults { delay: Some(Duration::from_millis(400)), ..Faults::default() });
    let started = Instant::now();
    assert!(api.list(&ListParams::default().limit(1)).await.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(400));
    cluster.stop().await;
}

async fn kubectl(cluster: &KubeCluster, dir: &std::path::Path, args: &[&str]) -> String {
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_pods_by_owner_and_tops_them() {
    init();
    let config = WorkloadConfig { long_running_pods: 700, short_lived_pods: 300, ..WorkloadConfig::default() };
    let (clock, cluster) = start(&config, KubeOptions::default());
    clock.advance(3600);
    let dir = std::env::temp_dir().join(format!("hb-kubectl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&kubectl(&cluster, &dir, &["get", "pods", "-A", "-l", "owner", "-o", "json"]).await)
            .unwrap();
    let got: BTreeSet<(String, String)> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["namespace"].as_str().unwrap().to_owned(),
                p["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(got.len() > 500, "more than one 500-item chunk: {}", got.len());
    assert_eq!(got, expected(cluster.workload(), clock.now(), |p| p.owner().is_some()));

    let printed = kubectl(&cluster, &dir, &["get", "pods", "-A", "-l", "owner"]).await;
    assert_eq!(printed.lines().count(), got.len() + 1, "a header and one line per pod");
    assert!(printed.lines().next().unwrap().starts_with("NAMESPACE"), "{printed:.200}");
    assert_eq!(clock.now() % SCRAPE_SECS, 0, "now is a scrape");
    let owner = &cluster.workload().projects()[0].owner;
    let top_one = kubectl(&cluster, &dir, &["top", "pods", "-A", "-l", &format!("owner={owner}")]).await;
    let want_one = cluster
        .workload()
        .pods()
        .iter()
        .filter(|p| p.owner() == Some(owner.as_str()) && p.running_at(clock.now() - 1) && p.running_at(clock.now()))
        .count();
    assert_eq!(top_one.lines().count(), want_one + 1, "{top_one}");

    let table = kubectl(&cluster, &dir, &["top", "pods", "-A"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]);
    let ts = clock.now() - clock.now().rem_euclid(SCRAPE_SECS);
    let running: BTreeMap<(String, String), &SimPod> = cluster
        .workload()
        .pods()
        .iter()
        .filter(|p| p.running_at(ts - 1) && p.running_at(ts))
        .map(|p| ((p.namespace.clone(), p.name.clone()), p))
        .collect();
    let mut rows = 0;
    for line in lines {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let sim = running[&(cols[0].to_owned(), cols[1].to_owned())];
        let cpu: u64 = sim.containers.iter().map(|c| c.profile.at(ts - 1).0).sum();
        let mem: u64 = sim.containers.iter().map(|c| c.profile.at(ts - 1).1).sum();
        // kubectl rounds up to millicores and down to MiB.
        assert_eq!(cols[2], format!("{}m", cpu.div_ceil(1_000_000)), "{line}");
        assert_eq!(cols[3], format!("{}Mi", mem >> 20), "{line}");
        rows += 1;
    }
    assert_eq!(rows, running.len());
    std::fs::remove_dir_all(&dir).unwrap();
    cluster.stop().await;
}

#[test]
fn a_steady_pods_integrated_usage_is_the_exact_sum() {
    let c = steady(250_000_000, 512 << 20, MemFormat::Mebi, 1);
    let p = pod("p", "steady", "ann", (T0, T0 + 100, Some(T0 + 3700)), vec![c]);
    let u = p.usage(T0, T0 + 7200);
    assert_eq!(u.cpu_nanocore_seconds, 250_000_000 * 3600);
    assert_eq!(u.memory_byte_seconds, (512 << 20) * 3600);
    assert_eq!(u.gpu_seconds, 3600);
    assert_eq!(p.usage(T0 + 200, T0 + 300).cpu_nanocore_seconds, 250_000_000 * 100);

    // The closed form of a bursty profile equals the second-by-second sum.
    let workload = Workload::generate(&WorkloadConfig { bursty_users_permille: 1000, ..WorkloadConfig::default() });
    for sim in workload.pods().iter().take(30) {
        let (from, to) = (T0 - 1234, T0 + 7 * 3600 + 11);
        let mut sum = (0_u128, 0_u128);
        for t in from.max(sim.started)..sim.finished.map_or(to, |f| f.min(to)) {
            for c in &sim.containers {
                let (cpu, mem) = c.profile.at(t);
                sum.0 += u128::from(cpu);
                sum.1 += u128::from(mem);
            }
        }
        let u = sim.usage(from, to);
        assert_eq!((u.cpu_nanocore_seconds, u.memory_byte_seconds), sum, "{}", sim.name);
    }
    let by_owner = workload.usage_by_owner(T0, T0 + 3600);
    let total = workload.usage_where(T0, T0 + 3600, |_| true);
    assert_eq!(by_owner.values().map(|u| u.cpu_nanocore_seconds).sum::<u128>(), total.cpu_nanocore_seconds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_every_15_minutes_is_close_for_steady_and_far_for_bursty() {
    init();
    let config = WorkloadConfig { users: 6, long_running_pods: 60, short_lived_pods: 0, ..WorkloadConfig::default() };
    let (clock, cluster) = start(&config, KubeOptions::default());
    let w = cluster.workload();
    let bursty = |owner: &str| {
        w.pods().iter().any(|p| p.owner() == Some(owner) && matches!(p.containers[0].profile, Profile::Bursty { .. }))
    };
    let owners: BTreeSet<String> = w.projects().iter().map(|p| p.owner.clone()).collect();
    let steady_owner = owners.iter().find(|o| !bursty(o)).unwrap().clone();
    let bursty_owner = owners.iter().find(|o| bursty(o)).unwrap().clone();
    let api = Api::<PodMetrics>::all(client_from(&cluster.kubeconfig()).await);
    let (from, to, step) = (T0, T0 + 6 * 3600, 900);
    for (owner, close) in [(&steady_owner, true), (&bursty_owner, false)] {
        let (mut cpu, mut memory) = (0_u128, 0_u128);
        let mut t = from;
        while t < to {
            clock.set(t);
            let list = api.list(&ListParams::default().labels(&format!("owner={owner}"))).await.unwrap();
            for m in &list.items {
                for c in &m.containers {
                    cpu += parse_quantity(&c.usage.cpu.0, 1_000_000_000) * step as u128;
                    memory += parse_quantity(&c.usage.memory.0, 1) * step as u128;
                }
            }
            t += step;
        }
        let truth = w.usage_of_owner(owner, from, to);
        let cpu_error = cpu.abs_diff(truth.cpu_nanocore_seconds) * 1000 / truth.cpu_nanocore_seconds;
        let memory_error = memory.abs_diff(truth.memory_byte_seconds) * 1000 / truth.memory_byte_seconds;
        if close {
            assert_eq!((cpu, memory), (truth.cpu_nanocore_seconds, truth.memory_byte_seconds), "steady");
        } else {
            assert!(cpu_error > 50, "bursty CPU: estimate {cpu} truth {truth:?}, error {cpu_error}‰");
            assert!(memory_error > 50, "bursty memory: estimate {memory} truth {truth:?}, error {memory_error}‰");
        }
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_tokens_can_be_made_to_expire_and_requests_are_counted() {
    init();
    let (_clock, cluster) = start(&WorkloadConfig::default(), KubeOptions::default());
    assert_eq!(cluster.requests(), 0);
    let api: Api<Pod> = Api::all(client_from(&cluster.kubeconfig()).await);
    let first = api.list(&ListParams::default().labels("owner").limit(20)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    cluster.expire_next_continue_tokens(2);
    // A list without a token is not affected and does not use up the count.
    assert!(api.list(&ListParams::default().labels("owner").limit(20)).await.is_ok());
    for _ in 0..2 {
        match api.list(&ListParams::default().labels("owner").limit(20).continue_token(&token)).await {
            Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
            other => panic!("expected 410, got {other:?}"),
        }
    }
    let third = api.list(&ListParams::default().labels("owner").limit(20).continue_token(&token)).await.unwrap();
    assert_eq!(third.items.len(), 20, "valid again once the count is used up");
    assert_eq!(cluster.requests(), 5);
    let _ = http(&cluster).get(format!("{}/version", cluster.url())).send().await.unwrap();
    assert_eq!(cluster.requests(), 6, "refused requests count too");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pods_metrics_are_read_by_name_as_in_the_list() {
    init();
    let (clock, cluster) = start(&WorkloadConfig::default(), KubeOptions::default());
    clock.advance(3600);
    let client = client_from(&cluster.kubeconfig()).await;
    let list = Api::<PodMetrics>::all(client.clone()).list(&ListParams::default().labels("owner")).await.unwrap();
    assert!(list.items.len() > 100);
    for m in list.items.iter().step_by(37) {
        let ns = m.metadata.namespace.clone().unwrap();
        let name = m.metadata.name.clone().unwrap();
        let one = Api::<PodMetrics>::namespaced(client.clone(), &ns).get(&name).await.unwrap();
        assert_eq!(one.metadata.name, m.metadata.name);
        assert_eq!(one.metadata.namespace, m.metadata.namespace);
        assert_eq!(one.containers.len(), m.containers.len());
        for (a, b) in one.containers.iter().zip(&m.containers) {
            assert_eq!((&a.usage.cpu.0, &a.usage.memory.0), (&b.usage.cpu.0, &b.usage.memory.0));
        }
    }
    let (code, body) = get_json(&cluster, "/apis/metrics.k8s.io/v1beta1/namespaces/nowhere/pods/nothing").await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(body["message"], "podmetrics.metrics.k8s.io \"nothing\" not found");
    // A pod that exists but is not running has no metrics.
    let now = clock.now();
    let pending = cluster.workload().pods().iter().find(|p| p.exists_at(now) && !p.running_at(now));
    if let Some(p) = pending {
        let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods/{}", p.namespace, p.name);
        assert_eq!(get_json(&cluster, &path).await.0, 404);
    }
    cluster.stop().await;
}
