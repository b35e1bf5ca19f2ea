//! One metering window over 200 sandbox clusters × 2,000 running pods (400,000 pods), collected
//! by `collect::ClusterClient` with its production defaults, and in the same run the same
//! window collected the way the original design did it: one pod query per user, then one
//! metrics read per pod (on a subset of the clusters, extrapolated).
//!
//! `just bench metering`, i.e. `cargo bench -p hopsbridge-metering --bench collect` (release).
//! The sandbox runs in a child process (this executable with `METERING_BENCH_SANDBOX=1`), so
//! the peak memory printed (VmHWM of this process) is the collector's alone. Knobs (env):
//! `CLUSTERS` (200), `PODS` (2000), `PARALLEL_CLUSTERS` (64), `BASELINE_CLUSTERS` (20).
//!
//! Before timing, one small list of each kind warms every cluster's snapshot, so both methods
//! are timed against the same ready server and the time is the clients' work and the wire.
//! CPU seconds of both processes are printed per phase: when they are about twice the wall time
//! (two cores busy), the phase is throughput-bound and the baseline's linear extrapolation holds.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::float_arithmetic,
    reason = "a benchmark reporting on stdout"
)]

use futures::StreamExt as _;
use hopsbridge_metering::collect::{ClusterClient, CollectConfig, Collection};
use hopsbridge_metering::quantity;
use hopsbridge_metering::usage::Usage;
use hopsbridge_metering::window::{Window, WindowLength};
use hopsbridge_platform::Secret;
use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::{SimClock, Workload, WorkloadConfig};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The measured instant: six hours into the workload's day, on a scrape boundary.
const NOW: i64 = 1_798_761_600 + 6 * 3600;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) used so far by process `pid`, from /proc (100 ticks per second).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    (tick(11) + tick(12)) as f64 / 100.0
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ClusterLine {
    name: String,
    kubeconfig: String,
    owners: Vec<String>,
}

/// Child mode: serve the clusters until stdin closes.
fn sandbox(clusters: usize, pods: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let clock = Arc::new(SimClock::new(NOW));
        let mut running = Vec::new();
        let mut out = std::io::stdout().lock();
        for seed in 1..=clusters as u64 {
            let config = WorkloadConfig {
                seed,
                users: 100,
                projects_per_user: 2,
                long_running_pods: pods,
                short_lived_pods: 200,
                ..WorkloadConfig::default()
            };
            let workload = Arc::new(Workload::generate(&config));
            let mut owners: Vec<String> = workload.projects().iter().map(|p| p.owner.clone()).collect();
            owners.dedup();
            let cluster =
                KubeCluster::start(&format!("cluster-{seed}"), workload, Arc::clone(&clock), KubeOptions::default())
                    .unwrap();
            let line = ClusterLine { name: cluster.name().to_owned(), kubeconfig: cluster.kubeconfig(), owners };
            writeln!(out, "{}", serde_json::to_string(&line).unwrap()).unwrap();
            running.push(cluster);
        }
        writeln!(out, "ready").unwrap();
        out.flush().unwrap();
        drop(out);
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        })
        .await
        .unwrap();
        for c in &running {
            c.stop().await;
        }
    });
}

/// The original design: for each user, GET their pods; for each Running one, GET its metrics.
async fn per_user(client: &ClusterClient, owners: &[String], window: Window, calls: &AtomicU64) -> (Usage, u64) {
    let mut total = Usage::default();
    let mut measured = 0;
    for owner in owners {
        let query = serde_urlencoded::to_string([("labelSelector", format!("owner={owner}"))]).unwrap();
        let body = client.get_raw(&format!("/api/v1/pods?{query}"), calls).await.unwrap();
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let running: Vec<(String, String, u64)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .map(|p| {
                let gpus = p["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|c| c["resources"]["requests"]["nvidia.com/gpu"].as_str())
                    .map(|q| quantity::count(q).unwrap())
                    .sum();
                (
                    p["metadata"]["namespace"].as_str().unwrap().to_owned(),
                    p["metadata"]["name"].as_str().unwrap().to_owned(),
                    gpus,
                )
            })
            .collect();
        let reads = futures::stream::iter(running)
            .map(|(ns, name, gpus)| async move {
                let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}");
                (client.get_raw(&path, calls).await, gpus)
            })
            .buffer_unordered(2);
        let results: Vec<_> = reads.collect().await;
        for (res, gpus) in results {
            let Ok(body) = res else { continue };
            let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let (mut cpu, mut mem) = (0, 0);
            for c in m["containers"].as_array().unwrap() {
                cpu += quantity::cpu_nanocores(c["usage"]["cpu"].as_str().unwrap()).unwrap();
                mem += quantity::memory_bytes(c["usage"]["memory"].as_str().unwrap()).unwrap();
            }
            total += Usage::of_rates(cpu, mem, u128::from(gpus), window.secs());
            measured += 1;
        }
    }
    (total, measured)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clusters = env("CLUSTERS", 200);
    let pods = env("PODS", 2000);
    if std::env::var_os("METERING_BENCH_SANDBOX").is_some() {
        // Leave the parent's runtime alone: the child builds its own on a plain thread.
        std::thread::spawn(move || sandbox(clusters, pods)).join().unwrap();
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parallel = env("PARALLEL_CLUSTERS", 64);
    let baseline_clusters = env("BASELINE_CLUSTERS", 20).min(clusters);
    let window = WindowLength::default().previous_complete(NOW);
    println!(
        "metering collect: {clusters} clusters x {pods} running pods ({} pods), window {window}, \
         {parallel} clusters collected at once",
        clusters * pods
    );

    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("METERING_BENCH_SANDBOX", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut targets: Vec<ClusterLine> = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        targets.push(serde_json::from_str(&line).unwrap());
    }
    assert_eq!(targets.len(), clusters, "the sandbox started every cluster");
    println!("sandbox (child process) started {clusters} clusters in {}", secs(started.elapsed()));

    // Warm-up, untimed: build each cluster's pod and PodMetrics snapshots at this clock.
    let warm = CollectConfig { requests_per_second: 1_000_000, ..CollectConfig::default() };
    futures::stream::iter(&targets)
        .for_each_concurrent(parallel, |t| {
            let warm = warm.clone();
            async move {
                let client = ClusterClient::connect(&t.name, &Secret::new(t.kubeconfig.clone()), warm).await.unwrap();
                let calls = AtomicU64::new(0);
                for path in [
                    "/api/v1/pods?labelSelector=owner&limit=1",
                    "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=owner&limit=1",
                ] {
                    client.get_raw(path, &calls).await.unwrap();
                }
            }
        })
        .await;
    let child_pid = child.id().to_string();
    let cpu = || (cpu_secs("self"), cpu_secs(&child_pid));

    // The new collector, production defaults.
    let config = CollectConfig::default();
    println!(
        "collector settings: page size {}, {} requests in flight and {} requests/s per cluster",
        config.page_size, config.max_concurrency, config.requests_per_second
    );
    let rss_before = status_kib("VmRSS:");
    let cpu_before = cpu();
    let started = Instant::now();
    let results: Vec<(String, Collection)> = futures::stream::iter(&targets)
        .map(|t| {
            let config = config.clone();
            async move {
                let client = ClusterClient::connect(&t.name, &Secret::new(t.kubeconfig.clone()), config).await.unwrap();
                let c = client.collect(window).await.unwrap_or_else(|e| panic!("{}: {e}", t.name));
                (t.name.clone(), c)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let wall = started.elapsed();
    let cpu_new = (cpu().0 - cpu_before.0, cpu().1 - cpu_before.1);
    let peak_kib = status_kib("VmHWM:");
    let calls: u64 = results.iter().map(|(_, c)| c.stats.api_calls).sum();
    let measured: u64 = results.iter().map(|(_, c)| c.stats.pods_measured).sum();
    let per_cluster = calls as f64 / clusters as f64;
    let per_thousand = calls as f64 * 1000.0 / measured as f64;
    let peak_mib = peak_kib as f64 / 1024.0;
    println!(
        "new: wall {}; peak memory (VmHWM) {peak_mib:.1} MiB (VmRSS before {:.1} MiB); API calls {calls} \
         ({per_cluster:.2} per cluster, {per_thousand:.2} per 1,000 pods); pods measured {measured}; \
         CPU {:.2} s collector + {:.2} s sandbox",
        secs(wall),
        rss_before as f64 / 1024.0,
        cpu_new.0,
        cpu_new.1
    );

    // The original design on the first BASELINE_CLUSTERS clusters, same parallelism and
    // concurrency per cluster, without the rate bound (it would only slow the baseline down).
    let baseline_config = CollectConfig { requests_per_second: 1_000_000, ..config.clone() };
    let subset = &targets[..baseline_clusters];
    let baseline_calls = AtomicU64::new(0);
    let cpu_before = cpu();
    let started = Instant::now();
    let baseline: Vec<(String, Usage, u64)> = futures::stream::iter(subset)
        .map(|t| {
            let config = baseline_config.clone();
            let calls = &baseline_calls;
            async move {
                let client = ClusterClient::connect(&t.name, &Secret::new(t.kubeconfig.clone()), config).await.unwrap();
                let (usage, measured) = per_user(&client, &t.owners, window, calls).await;
                (t.name.clone(), usage, measured)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let baseline_wall = started.elapsed();
    let cpu_base = (cpu().0 - cpu_before.0, cpu().1 - cpu_before.1);
    let baseline_calls = baseline_calls.load(Ordering::Relaxed);
    let baseline_measured: u64 = baseline.iter().map(|(_, _, m)| m).sum();
    let extrapolated = baseline_wall.mul_f64(clusters as f64 / baseline_clusters.max(1) as f64);
    println!(
        "per-user baseline on {baseline_clusters} of {clusters} clusters: wall {}; API calls {baseline_calls} \
         ({:.1} per cluster, {:.1} per 1,000 pods); pods measured {baseline_measured}; extrapolated to \
         {clusters} clusters (throughput-bound, linear): {}; CPU {:.2} s collector + {:.2} s sandbox",
        secs(baseline_wall),
        baseline_calls as f64 / baseline_clusters.max(1) as f64,
        baseline_calls as f64 * 1000.0 / baseline_measured.max(1) as f64,
        secs(extrapolated),
        cpu_base.0,
        cpu_base.1
    );
    let same = baseline.iter().all(|(name, usage, measured)| {
        let new = &results.iter().find(|(n, _)| n == name).unwrap().1;
        new.total() == *usage && new.stats.pods_measured == *measured
    });
    println!("same usage from both methods on the baseline clusters: {}", if same { "yes" } else { "NO" });
    let ratio = extrapolated.as_secs_f64() / wall.as_secs_f64();
    println!("ratio, baseline without the rate bound (extrapolated) / new with it: {ratio:.1}x");
    // Under the per-cluster rate bound both must keep (issue 6), a cluster's calls beyond the
    // burst take 1 / rate each: arithmetic on the measured call counts, not a measurement.
    let per_cluster_calls = baseline_calls as f64 / baseline_clusters.max(1) as f64;
    let bound_secs = (per_cluster_calls - f64::from(config.burst)).max(0.0) / f64::from(config.requests_per_second);
    println!(
        "under the rate bound ({} requests/s, burst {}) the baseline's {per_cluster_calls:.0} calls per cluster take \
         at least {bound_secs:.0} s, even with every cluster in parallel: {:.0}x the new wall time (computed)",
        config.requests_per_second,
        config.burst,
        bound_secs / wall.as_secs_f64()
    );
    println!(
        "targets: whole window <= 30 s: {}; peak <= 512 MiB: {}; <= 4 API calls per 1,000 pods: {}; >= 20x faster: {}",
        met(wall <= Duration::from_secs(30)),
        met(peak_mib <= 512.0),
        met(per_thousand <= 4.0),
        met(ratio >= 20.0)
    );
    drop(child.stdin.take());
    let _ = child.wait();
}
