//! One metering window over 200 sandbox clusters × 2,000 running pods (400,000 pods), collected
//! by `collect::ClusterClient` with its production defaults, and in the same run the same
//! window collected the way the original design did it: one pod query per user, then one
//! metrics read per pod. The per-user method runs twice:
//! - without the rate bound (as fast as the CPU allows), on a subset of the clusters, its wall
//!   time extrapolated linearly to all clusters;
//! - held to the same per-cluster bounds as the new collector (the `CollectConfig` defaults:
//!   2 in flight, 5 requests/s, burst 10), which issue 6 requires of every client of a
//!   cluster. Done whole it takes about 7 minutes, so every cluster runs it at once for real for
//!   its first users until `BOUNDED_SECS` have passed; each cluster's measured seconds per call
//!   beyond the burst, times its calls beyond the burst for the whole window, gives its time,
//!   and the window's time is the slowest cluster's. The measured rate is checked against the
//!   bound and the extrapolation against the computed (calls − burst) / rate.
//!
//! `just bench metering`, i.e. `cargo bench -p hopsbridge-metering --bench collect` (release).
//! The sandbox runs in a child process (this executable with `METERING_BENCH_SANDBOX=1`), so
//! the peak memory printed (VmHWM of this process) is the collector's alone. Knobs (env):
//! `CLUSTERS` (200), `PODS` (2000), `PARALLEL_CLUSTERS` (64), `BASELINE_CLUSTERS` (20),
//! `BOUNDED_CLUSTERS` (all), `BOUNDED_SECS` (40).
//!
//! Before timing, one small list of each kind warms every cluster's snapshot, so both methods
//! are timed against the same ready server and the time is the clients' work and the wire.
//! CPU seconds of both processes are printed per phase: when they are about twice the wall time
//! (two cores busy), the phase is throughput-bound and the unbounded baseline's linear
//! extrapolation holds; in the bounded phase they are a small part of the wall time, which is
//! then the rate limiter's.
//!
//! Self-checks, each failing the run (exit status 1): both per-user runs found the same usage
//! as the collector for what they covered; the bounded run was rate-bound (every cluster
//! within 5 % of the bound after its burst); the per-user calls computed from the collection
//! equal those the unbounded run made; the extrapolation agrees with the computed (calls −
//! burst) / rate within that 5 %. The targets are reported and do not fail the run.

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
use hopsbridge_testkit::SelfChecks;
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
        let (usage, pods) = one_user(client, owner, window, calls).await;
        total += usage;
        measured += pods;
    }
    (total, measured)
}

/// One user the original way: their pods, then one metrics read per Running pod (2 at once).
async fn one_user(client: &ClusterClient, owner: &str, window: Window, calls: &AtomicU64) -> (Usage, u64) {
    let mut total = Usage::default();
    let mut measured = 0;
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
    (total, measured)
}

/// What the per-user method did on one cluster, within the production bounds, in its
/// measured stretch: whole users only, from the first request until the last user's last
/// answer.
struct BoundedRun {
    name: String,
    users: usize,
    calls: u64,
    elapsed: Duration,
    usage: Usage,
    measured: u64,
}

/// The per-user method on one cluster with `config`, one user after another, starting no new
/// user once `stop_after` has passed.
async fn per_user_until(
    target: &ClusterLine,
    config: CollectConfig,
    window: Window,
    stop_after: Duration,
) -> BoundedRun {
    let calls = AtomicU64::new(0);
    let started = Instant::now();
    let client = ClusterClient::connect(&target.name, &Secret::new(target.kubeconfig.clone()), config).await.unwrap();
    let (mut usage, mut measured, mut users) = (Usage::default(), 0, 0);
    for owner in &target.owners {
        if started.elapsed() >= stop_after {
            break;
        }
        let (u, m) = one_user(&client, owner, window, &calls).await;
        usage += u;
        measured += m;
        users += 1;
    }
    BoundedRun {
        name: target.name.clone(),
        users,
        calls: calls.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        usage,
        measured,
    }
}

fn min_max<T: PartialOrd + Copy>(values: impl IntoIterator<Item = T>) -> (T, T) {
    let mut it = values.into_iter();
    let first = it.next().expect("at least one value");
    it.fold((first, first), |(lo, hi), v| (if v < lo { v } else { lo }, if v > hi { v } else { hi }))
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
                for path in ["/api/v1/pods?limit=1", "/apis/metrics.k8s.io/v1beta1/pods?limit=1"] {
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
    let baseline: Vec<(String, Usage, u64, u64)> = futures::stream::iter(subset)
        .map(|t| {
            let config = baseline_config.clone();
            let total = &baseline_calls;
            async move {
                let client = ClusterClient::connect(&t.name, &Secret::new(t.kubeconfig.clone()), config).await.unwrap();
                let calls = AtomicU64::new(0);
                let (usage, measured) = per_user(&client, &t.owners, window, &calls).await;
                let calls = calls.load(Ordering::Relaxed);
                total.fetch_add(calls, Ordering::Relaxed);
                (t.name.clone(), usage, measured, calls)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let baseline_wall = started.elapsed();
    let cpu_base = (cpu().0 - cpu_before.0, cpu().1 - cpu_before.1);
    let baseline_calls = baseline_calls.load(Ordering::Relaxed);
    let baseline_measured: u64 = baseline.iter().map(|(_, _, m, _)| m).sum();
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
    let mut checks = SelfChecks::new();
    let same = baseline.iter().all(|(name, usage, measured, _)| {
        let new = &results.iter().find(|(n, _)| n == name).unwrap().1;
        new.total() == *usage && new.stats.pods_measured == *measured
    });
    checks.check(
        "the per-user method without the rate bound found the same usage as the collector",
        same,
        format!("usage and pods measured compared on {baseline_clusters} clusters"),
    );
    let ratio = extrapolated.as_secs_f64() / wall.as_secs_f64();
    println!("ratio, baseline without the rate bound (extrapolated) / new with it: {ratio:.1}x");
    // The original design held to the same per-cluster bounds as the new collector, which
    // issue 6 requires of every client of a cluster: each of the first BOUNDED_CLUSTERS
    // clusters (all at once) runs it for real, whole users only, until BOUNDED_SECS have
    // passed. Its time is the rate limiter's, so each cluster's measured seconds per call
    // beyond the burst, times its calls beyond the burst for the whole window, gives that
    // cluster's time; clusters run in parallel, so the window's time is the slowest cluster's.
    let bounded_clusters = env("BOUNDED_CLUSTERS", clusters).clamp(1, clusters);
    let stop_after = Duration::from_secs(env("BOUNDED_SECS", 40) as u64);
    let burst = u64::from(config.burst);
    let rate = f64::from(config.requests_per_second);
    let cpu_before = cpu();
    let started = Instant::now();
    let bounded: Vec<BoundedRun> = futures::stream::iter(&targets[..bounded_clusters])
        .map(|t| per_user_until(t, config.clone(), window, stop_after))
        .buffer_unordered(bounded_clusters)
        .collect()
        .await;
    let bounded_wall = started.elapsed();
    let cpu_bounded = (cpu().0 - cpu_before.0, cpu().1 - cpu_before.1);
    let bounded_calls: u64 = bounded.iter().map(|b| b.calls).sum();
    let bounded_measured: u64 = bounded.iter().map(|b| b.measured).sum();
    for b in &bounded {
        assert!(b.calls > burst * 2, "{}: {} calls in {:?}; raise BOUNDED_SECS", b.name, b.calls, b.elapsed);
    }
    // Seconds per call once the burst is spent, and the rate that is.
    let secs_per_call = |b: &BoundedRun| b.elapsed.as_secs_f64() / (b.calls - burst) as f64;
    let (rate_lo, rate_hi) = min_max(bounded.iter().map(|b| 1.0 / secs_per_call(b)));
    let (users_lo, users_hi) = min_max(bounded.iter().map(|b| b.users));
    let (calls_lo, calls_hi) = min_max(bounded.iter().map(|b| b.calls));
    let cores_busy = (cpu_bounded.0 + cpu_bounded.1) / bounded_wall.as_secs_f64();
    println!(
        "per-user baseline under the same bounds ({} in flight, {} requests/s, burst {} per cluster), MEASURED on \
         {bounded_clusters} of {clusters} clusters at once, each for whole users until {} had passed: wall {}; users \
         {} ({users_lo}-{users_hi} per cluster); API calls {bounded_calls} ({calls_lo}-{calls_hi} per cluster); rate \
         after the burst {rate_lo:.2}-{rate_hi:.2} requests/s per cluster; pods measured {bounded_measured}; CPU {:.2} \
         s collector + {:.2} s sandbox ({cores_busy:.2} of 2 cores busy)",
        config.max_concurrency,
        config.requests_per_second,
        config.burst,
        secs(stop_after),
        secs(bounded_wall),
        bounded.iter().map(|b| b.users).sum::<usize>(),
        cpu_bounded.0,
        cpu_bounded.1
    );
    let rate_bound = rate_lo >= 0.95 * rate && rate_hi <= rate * 1.01;
    checks.check(
        &format!("rate-bound, not CPU-bound: every cluster within 5 % of {rate} requests/s after its burst"),
        rate_bound,
        format!("{rate_lo:.2}-{rate_hi:.2} requests/s"),
    );
    let new_of = |name: &str| &results.iter().find(|(n, _)| n == name).unwrap().1;
    let same_bounded = bounded.iter().all(|b| {
        let target = targets.iter().find(|t| t.name == b.name).unwrap();
        let covered = &target.owners[..b.users];
        let (usage, pods) = new_of(&b.name)
            .usage
            .iter()
            .filter(|((_, owner), _)| covered.contains(owner))
            .fold((Usage::default(), 0), |(u, p), (_, o)| (u + o.usage, p + o.pods));
        usage == b.usage && pods == b.measured
    });
    checks.check(
        "the per-user method under the same bounds found the same usage as the collector for the users it covered",
        same_bounded,
        format!("usage and pods measured compared on {bounded_clusters} clusters"),
    );

    // Each cluster's calls for the whole window the per-user way: one per user and one per
    // Running pod with an owner (measured or not), from the new collection's counts; checked
    // against the calls the unbounded baseline actually made on its clusters.
    let full_calls = |t: &ClusterLine| {
        let c = new_of(&t.name);
        t.owners.len() as u64 + c.stats.pods_measured + c.stats.pods_without_metrics
    };
    let counts_match = baseline.iter().all(|(name, _, _, calls)| {
        let target = targets.iter().find(|t| &t.name == name).unwrap();
        full_calls(target) == *calls
    });
    let (full_lo, full_hi) = min_max(targets.iter().map(full_calls));
    println!(
        "per-user calls per cluster for the whole window: {full_lo}-{full_hi} (users + Running owned pods, from the new \
         collection)"
    );
    checks.check(
        "the per-user calls computed from the collection equal the calls the unbounded baseline made",
        counts_match,
        format!("on its {baseline_clusters} clusters"),
    );
    // Clusters not measured take the measured clusters' mean seconds per call.
    let mean_secs_per_call = bounded.iter().map(secs_per_call).sum::<f64>() / bounded.len() as f64;
    let secs_per_any_call = |b: &BoundedRun| b.elapsed.as_secs_f64() / b.calls as f64;
    let mean_secs_per_any_call = bounded.iter().map(secs_per_any_call).sum::<f64>() / bounded.len() as f64;
    let per_cluster: Vec<(f64, f64, f64)> = targets
        .iter()
        .map(|t| {
            let all = full_calls(t);
            let run = bounded.iter().find(|b| b.name == t.name);
            let spc = run.map_or(mean_secs_per_call, secs_per_call);
            let extrapolated = spc * all.saturating_sub(burst) as f64;
            // The plainer linear figure, spreading the burst's free start over every call.
            let linear = run.map_or(mean_secs_per_any_call, secs_per_any_call) * all as f64;
            let lower = all.saturating_sub(burst) as f64 / rate;
            (extrapolated, linear, lower)
        })
        .collect();
    let (ext_lo, ext_hi) = min_max(per_cluster.iter().map(|p| p.0));
    let linear_hi = min_max(per_cluster.iter().map(|p| p.1)).1;
    let lower_hi = min_max(per_cluster.iter().map(|p| p.2)).1;
    println!(
        "per-user baseline under the same bounds, EXTRAPOLATED to the whole window (each cluster: its measured seconds \
         per call beyond the burst x its calls beyond the burst; clusters in parallel, so the window takes the slowest \
         cluster's): {ext_hi:.1} s (clusters {ext_lo:.1}-{ext_hi:.1} s; {}); linear over all measured calls \
         instead, the burst's free start spread over them: {linear_hi:.1} s",
        if bounded.len() == clusters {
            format!("every cluster from its own measurement, mean {mean_secs_per_call:.4} s per call")
        } else {
            format!(
                "{} of {clusters} clusters from their own measurement, the rest at their mean {mean_secs_per_call:.4} s \
                 per call",
                bounded.len()
            )
        }
    );
    let agreement = ext_hi / lower_hi;
    checks.check(
        "the extrapolation agrees with the computed (calls - burst) / rate within the rate check's 5 %",
        (0.98..=1.06).contains(&agreement),
        format!(
            "COMPUTED (no measurement), slowest cluster: {lower_hi:.1} s; extrapolated / computed: {agreement:.3}, \
             within 0.98-1.06"
        ),
    );
    let bounded_ratio = ext_hi / wall.as_secs_f64();
    println!("ratio, baseline under the same bounds (extrapolated) / new: {bounded_ratio:.1}x");
    checks.target("the whole window in at most 30 s", wall <= Duration::from_secs(30), secs(wall));
    checks.target("peak memory at most 512 MiB", peak_mib <= 512.0, format!("{peak_mib:.1} MiB"));
    checks.target("at most 4 API calls per 1,000 pods", per_thousand <= 4.0, format!("{per_thousand:.2}"));
    checks.target(
        "at least 20x faster than the per-user method under the same bounds",
        bounded_ratio >= 20.0,
        format!("{bounded_ratio:.1}x"),
    );
    checks.target(
        "at least 20x faster than the per-user method without the rate bound",
        ratio >= 20.0,
        format!("{ratio:.1}x"),
    );
    drop(child.stdin.take());
    let _ = child.wait();
    checks.finish();
}
