//! Collecting a window from the sandbox's Kubernetes API servers: the result is exactly what
//! the workload model says the pods were doing, across pages, restarts, throttling and
//! failures; bad TLS and bad kubeconfigs are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{container, fast, init, pod};
use hopsbridge_metering::collect::{ClusterClient, CollectConfig, CollectError, OwnerUsage};
use hopsbridge_metering::usage::Usage;
use hopsbridge_metering::window::{Window, WindowLength};
use hopsbridge_platform::Secret;
use hopsbridge_sandbox::kubernetes::{Faults, KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::{SimClock, Workload, WorkloadConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 2027-01-01T06:00:00Z, on a scrape boundary.
const NOW: i64 = 1_798_761_600 + 6 * 3600;

/// A generated workload plus a pod with an empty owner (measured under the empty owner), one
/// that started this second (Running, no metrics yet, skipped), and a hand-made GPU pod.
fn workload(long_running: usize, short_lived: usize) -> Workload {
    let config = WorkloadConfig {
        seed: 7,
        users: 30,
        long_running_pods: long_running,
        short_lived_pods: short_lived,
        ..WorkloadConfig::default()
    };
    let generated = Workload::generate(&config);
    let mut pods = generated.pods().to_vec();
    pods.push(pod("zz-odd", "no-owner", "", NOW - 600, vec![container(1_000_000, 1 << 20, 0)]));
    pods.push(pod("zz-odd", "just-started", "zed", NOW, vec![container(1_000_000, 1 << 20, 0)]));
    pods.push(pod(
        "zz-odd",
        "gpu",
        "zed",
        NOW - 600,
        vec![container(250_000_000, 3 << 29, 2), container(1_500_000, 123 * 1024, 1)],
    ));
    Workload::new(generated.projects().to_vec(), pods)
}

fn start(workload: Workload) -> (Arc<SimClock>, KubeCluster) {
    let clock = Arc::new(SimClock::new(NOW));
    let cluster = KubeCluster::start("eu-1", Arc::new(workload), Arc::clone(&clock), KubeOptions::default()).unwrap();
    (clock, cluster)
}

/// What the collection must find, from the workload model alone: Running pods that
/// metrics-server has a rate for, with or without an owner, each rate held for the window.
fn expected(workload: &Workload, now: i64, window: Window) -> BTreeMap<(String, String), OwnerUsage> {
    let mut out: BTreeMap<(String, String), OwnerUsage> = BTreeMap::new();
    for p in workload.pods() {
        let has_metrics = p.exists_at(now) && p.running_at(now) && p.running_at(now - 1);
        let owner = p.owner().unwrap_or("");
        if !has_metrics {
            continue;
        }
        let (mut cpu, mut mem, mut gpus) = (0_u128, 0_u128, 0_u128);
        for c in &p.containers {
            let (c_cpu, c_mem) = c.profile.at(now - 1);
            cpu += u128::from(c_cpu);
            mem += u128::from(c_mem);
            gpus += u128::from(c.gpus);
        }
        let e = out.entry((p.namespace.clone(), owner.to_owned())).or_default();
        e.usage += Usage::of_rates(cpu, mem, gpus, window.secs());
        e.pods += 1;
    }
    out
}

async fn client(cluster: &KubeCluster, config: CollectConfig) -> ClusterClient {
    ClusterClient::connect(cluster.name(), &Secret::new(cluster.kubeconfig()), config).await.unwrap()
}

fn window() -> Window {
    WindowLength::default().previous_complete(NOW)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_is_exactly_what_the_running_pods_used_across_many_pages() {
    init();
    let (clock, cluster) = start(workload(2000, 600));
    let c = client(&cluster, fast()).await;
    let got = c.collect(window()).await.unwrap();
    let want = expected(cluster.workload(), clock.now(), window());
    assert_eq!(got.usage, want);
    assert_eq!(got.window, window());
    let s = got.stats;
    let measured: u64 = want.values().map(|u| u.pods).sum();
    assert_eq!(s.pods_measured, measured);
    assert!(measured > 1900, "{measured}");
    assert_eq!((s.pods_without_owner, s.pods_without_metrics), (1, 1), "{s:?}");
    assert_eq!((s.duplicates, s.list_restarts, s.throttled, s.retries), (0, 0, 0, 0));
    let pages = s.pods_listed.div_ceil(100) + s.metrics_listed.div_ceil(100);
    assert_eq!(s.api_calls, pages, "one call per page: {s:?}");
    assert_eq!(cluster.requests(), s.api_calls, "the server saw as many calls as counted");
    assert!(s.api_calls >= 40, "{s:?}");
    // The hand-made GPU pod: 250m + 1.5m for 900 s, 1.5 GiB + 123 KiB, 3 GPUs.
    let zed = &got.usage[&("zz-odd".to_owned(), "zed".to_owned())];
    assert_eq!(zed.pods, 1);
    assert_eq!(zed.usage.cpu_core_hours().to_string(), "0.062875");
    assert_eq!(zed.usage.gpu_hours().to_string(), "0.75");
    let gib = zed.usage.memory_gib_hours().to_decimal();
    assert!(gib.exact);
    assert_eq!(gib.text, "0.375029325485229492187500".trim_end_matches('0'));
    // The pod without an owner: 1m and 1 MiB for 900 s, under the empty owner.
    let unlabelled = &got.usage[&("zz-odd".to_owned(), String::new())];
    assert_eq!(unlabelled.pods, 1);
    assert_eq!(unlabelled.usage, Usage::of_rates(1_000_000, 1 << 20, 0, 900));
    assert_eq!(got.total(), want.values().fold(Usage::default(), |a, u| a + u.usage));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_page_size_needs_few_calls() {
    init();
    let (clock, cluster) = start(workload(2000, 200));
    let c = client(&cluster, CollectConfig { requests_per_second: 1000, ..CollectConfig::default() }).await;
    let got = c.collect(window()).await.unwrap();
    assert_eq!(got.usage, expected(cluster.workload(), clock.now(), window()));
    let per_thousand = got.stats.api_calls * 1000 / got.stats.pods_measured;
    assert!(got.stats.api_calls <= 6 && per_thousand < 4, "{:?}", got.stats);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continue_token_restarts_the_list_and_counts_each_pod_once() {
    init();
    let (clock, cluster) = start(workload(600, 100));
    let c = client(&cluster, CollectConfig { page_size: 50, ..fast() }).await;
    cluster.expire_next_continue_tokens(2);
    let got = c.collect(window()).await.unwrap();
    assert_eq!(got.usage, expected(cluster.workload(), clock.now(), window()));
    assert_eq!(got.stats.list_restarts, 2, "{:?}", got.stats);
    assert_eq!(got.stats.duplicates, 0);
    assert_eq!(cluster.requests(), got.stats.api_calls);

    // A token that never stops expiring fails the collection after the allowed restarts.
    cluster.expire_next_continue_tokens(1000);
    let err = c.collect(window()).await.unwrap_err();
    assert_eq!(err.reason(), "continue_token_expired");
    assert!(err.to_string().contains("restarted 3 times"), "{err}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_for_its_retry_after() {
    init();
    let (clock, cluster) = start(workload(300, 0));
    let c = client(&cluster, fast()).await;
    cluster.set_faults(Faults { too_many_requests: Some(1), times: Some(1), ..Faults::default() });
    let started = Instant::now();
    let got = c.collect(window()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(got.stats.throttled, 1);
    assert_eq!(got.usage, expected(cluster.workload(), clock.now(), window()));

    // A Retry-After longer than allowed fails rather than holding up the window.
    let c = client(&cluster, CollectConfig { max_retry_after_ms: 2000, ..fast() }).await;
    cluster.set_faults(Faults { too_many_requests: Some(30), ..Faults::default() });
    let started = Instant::now();
    let err = c.collect(window()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.reason(), "throttled");
    assert!(err.to_string().contains("Retry-After 30 s"), "{err}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_a_cluster_that_keeps_failing_fails_with_its_reason() {
    init();
    let (clock, cluster) = start(workload(300, 0));
    let c = client(&cluster, CollectConfig { max_attempts: 3, ..fast() }).await;
    cluster.set_faults(Faults { server_error: Some(503), times: Some(2), ..Faults::default() });
    let got = c.collect(window()).await.unwrap();
    assert_eq!(got.stats.retries, 2);
    assert_eq!(got.usage, expected(cluster.workload(), clock.now(), window()));

    cluster.set_faults(Faults { server_error: Some(500), ..Faults::default() });
    let before = cluster.requests();
    let err = c.collect(window()).await.unwrap_err();
    assert_eq!(err.reason(), "cluster_unavailable");
    let text = err.to_string();
    assert!(text.contains("failed 3 times") && text.contains("500 InternalError"), "{text}");
    assert_eq!(cluster.requests() - before, 6, "three attempts for each of the two lists");

    cluster.set_faults(Faults::default());
    cluster.stop().await;
    let err = c.collect(window()).await.unwrap_err();
    assert_eq!(err.reason(), "cluster_unavailable", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_not_retried() {
    init();
    let (_clock, cluster) = start(workload(50, 0));
    let yaml = cluster.kubeconfig().replace(cluster.token(), "forged-token");
    let c = ClusterClient::connect("eu-1", &Secret::new(yaml), fast()).await.unwrap();
    let err = c.collect(window()).await.unwrap_err();
    assert_eq!(err.reason(), "request_refused");
    assert!(err.to_string().contains("401 Unauthorized"), "{err}");
    assert_eq!(cluster.requests(), 2);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_an_insecure_or_a_malformed_kubeconfig_is_refused() {
    init();
    let (_clock, cluster) = start(workload(50, 0));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let other = hopsbridge_sandbox::tls::Ca::new("elsewhere").unwrap();
    let yaml = cluster.kubeconfig().replace(&b64.encode(cluster.ca_pem()), &b64.encode(other.cert_pem()));
    let c = ClusterClient::connect("eu-1", &Secret::new(yaml), fast()).await.unwrap();
    let err = c.collect(window()).await.unwrap_err();
    assert_eq!(err.reason(), "tls_verification_failed", "{err}");
    assert_eq!(cluster.requests(), 0, "nothing reached the server");

    let insecure =
        cluster.kubeconfig().replace("    certificate-authority-data:", "    insecure-skip-tls-verify: true\n    x:");
    let err = ClusterClient::connect("eu-1", &Secret::new(insecure), fast()).await.unwrap_err();
    assert_eq!(err.reason(), "kubeconfig_invalid");
    assert!(err.to_string().contains("insecure-skip-tls-verify"), "{err}");

    let broken = format!("{}\n  - [unclosed", cluster.kubeconfig());
    let err = ClusterClient::connect("eu-1", &Secret::new(broken), fast()).await.unwrap_err();
    assert_eq!(err.reason(), "kubeconfig_invalid");
    assert!(!err.to_string().contains(cluster.token()), "no secret in {err}");
    let no_context = cluster.kubeconfig().replace("current-context: eu-1", "current-context: elsewhere");
    let err = ClusterClient::connect("eu-1", &Secret::new(no_context), fast()).await.unwrap_err();
    assert_eq!(err.reason(), "kubeconfig_invalid", "{err}");
    assert!(!err.to_string().contains(cluster.token()), "no secret in {err}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_cluster_keep_to_its_rate_and_concurrency() {
    init();
    let (_clock, cluster) = start(workload(300, 0));
    // 10 requests per second: about 8 pages are spread over at least 0.7 s.
    let c = client(&cluster, CollectConfig { page_size: 80, requests_per_second: 10, burst: 1, ..fast() }).await;
    let started = Instant::now();
    let got = c.collect(window()).await.unwrap();
    let calls = got.stats.api_calls;
    assert!(calls >= 8, "{calls}");
    assert!(started.elapsed() >= Duration::from_millis(100 * (calls - 1)), "{calls} calls in {:?}", started.elapsed());

    // A burst of 4 lets four calls start at once, then 5 per second.
    let c = client(&cluster, CollectConfig { page_size: 80, requests_per_second: 5, burst: 4, ..fast() }).await;
    let started = Instant::now();
    let calls = c.collect(window()).await.unwrap().stats.api_calls;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200 * (calls - 4)), "{calls} calls in {took:?}");
    assert!(took < Duration::from_millis(200 * (calls - 1)), "{calls} calls in {took:?}");

    // One request at a time: two one-page lists answered in 500 ms each take 1 s; two at a
    // time take about 500 ms.
    cluster.set_faults(Faults { delay: Some(Duration::from_millis(500)), ..Faults::default() });
    let one = client(&cluster, CollectConfig { page_size: 1000, max_concurrency: 1, ..fast() }).await;
    let started = Instant::now();
    one.collect(window()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1000), "{:?}", started.elapsed());
    let two = client(&cluster, CollectConfig { page_size: 1000, max_concurrency: 2, ..fast() }).await;
    let started = Instant::now();
    two.collect(window()).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_label_key_is_configurable() {
    init();
    let mut pods = workload(100, 0).pods().to_vec();
    for p in &mut pods {
        if let Some(owner) = p.labels.remove("owner") {
            p.labels.insert("hopsworks.ai/user".to_owned(), owner);
        }
    }
    let (clock, cluster) = start(Workload::new(Vec::new(), pods));
    let c = client(&cluster, CollectConfig { label_key: "hopsworks.ai/user".to_owned(), ..fast() }).await;
    let got = c.collect(window()).await.unwrap();
    assert!(got.stats.pods_measured > 90);
    let mut want: BTreeMap<(String, String), OwnerUsage> = BTreeMap::new();
    for p in cluster.workload().pods() {
        let now = clock.now();
        let owner = p.labels.get("hopsworks.ai/user").cloned().unwrap_or_default();
        if !(p.exists_at(now) && p.running_at(now) && p.running_at(now - 1)) {
            continue;
        }
        let e = want.entry((p.namespace.clone(), owner.clone())).or_default();
        for c in &p.containers {
            let (cpu, mem) = c.profile.at(now - 1);
            e.usage += Usage::of_rates(cpu.into(), mem.into(), c.gpus.into(), 900);
        }
        e.pods += 1;
    }
    assert_eq!(got.usage, want);
    // The default key finds no owner there: every pod is measured, under the empty owner.
    let none = client(&cluster, fast()).await.collect(window()).await.unwrap();
    assert!(none.usage.keys().all(|(_, owner)| owner.is_empty()), "{:?}", none.usage.keys());
    assert_eq!((none.total(), none.stats.pods_without_owner), (got.total(), got.stats.pods_running));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_failed() {
    let e = CollectError::Refused {
        what: "GET /api/v1/pods".into(),
        status: 403,
        reason: "Forbidden".into(),
        message: "no".into(),
    };
    assert_eq!(e.to_string(), "GET /api/v1/pods: answered 403 Forbidden: no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cluster_does_not_hold_up_another() {
    init();
    let (clock, healthy) = start(workload(200, 0));
    let slow =
        KubeCluster::start("eu-2", Arc::new(workload(200, 0)), Arc::clone(&clock), KubeOptions::default()).unwrap();
    slow.set_faults(Faults { delay: Some(Duration::from_secs(3)), ..Faults::default() });
    let (a, b) = (client(&healthy, fast()).await, client(&slow, CollectConfig { page_size: 1000, ..fast() }).await);
    let timed = |c: ClusterClient| async move {
        let started = Instant::now();
        let r = c.collect(window()).await;
        (r, started.elapsed())
    };
    let ((fast_result, fast_took), (slow_result, slow_took)) = tokio::join!(timed(a), timed(b));
    assert_eq!(fast_result.unwrap().usage, expected(healthy.workload(), clock.now(), window()));
    assert!(fast_took < Duration::from_secs(1), "{fast_took:?}");
    assert!(slow_result.is_ok());
    assert!(slow_took >= Duration::from_secs(3), "{slow_took:?}");
    healthy.stop().await;
    slow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_max_basis_a_point_sample_bills_the_larger_of_request_and_usage() {
    use hopsbridge_metering::collect::{Basis, Source};
    init();
    let (_clock, cluster) = start(workload(20, 0));
    let config = CollectConfig { cpu_basis: Basis::MaxRequestUsage, memory_basis: Basis::MaxRequestUsage, ..fast() };
    let got = client(&cluster, config).await.collect(window()).await.unwrap();
    assert_eq!(
        (got.method.source, got.method.cpu_basis, got.method.memory_basis),
        (Source::Point, Basis::MaxRequestUsage, Basis::MaxRequestUsage)
    );
    // The GPU pod requests 1 core and 1 GiB per container (two containers) and uses 251.5m and
    // 1.5 GiB + 123 KiB: billed its requests, 2 cores and 2 GiB for the quarter hour.
    let zed = &got.usage[&("zz-odd".to_owned(), "zed".to_owned())];
    assert_eq!(zed.usage.cpu_core_hours().to_string(), "0.5");
    assert_eq!(zed.usage.memory_gib_hours().to_string(), "0.5");
    assert_eq!(zed.usage.gpu_hours().to_string(), "0.75");
    // On usage, the same pod is billed what it used.
    let used = client(&cluster, fast()).await.collect(window()).await.unwrap();
    assert_eq!(used.usage[&("zz-odd".to_owned(), "zed".to_owned())].usage.cpu_core_hours().to_string(), "0.062875");
    cluster.stop().await;
}
