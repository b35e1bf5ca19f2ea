//! Latency of listing 2,000 PodMetrics and 2,000 pods over HTTPS while one process serves 200
//! clusters of 2,000 running pods each.
//!
//! `cargo bench -p hopsbridge-sandbox --bench podmetrics` (release). Prints p50/p99 per case:
//! "same tick" lists at an unchanged clock (served from the cached snapshot), "new tick"
//! advances the clock by one scrape before each list (the snapshot is rebuilt).
//!
//! Self-checks, each failing the run (exit status 1): every request answered 200, and every
//! list held at least the cluster's 2,000 running pods. The target (p99 under 50 ms) is
//! reported and does not fail the run.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    reason = "a benchmark reporting on stdout"
)]

// The testkit depends on this crate, so its self-check collector is included by path.
#[path = "../../testkit/src/checks.rs"]
mod checks;

use checks::SelfChecks;
use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::{SCRAPE_SECS, SimClock, Workload, WorkloadConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLUSTERS: u64 = 200;
const PODS: usize = 2_000;
const ROUNDS: usize = 200;

fn ms(d: Duration) -> String {
    let us = d.as_micros();
    format!("{}.{:02}", us / 1000, us % 1000 / 10)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// What one case measured: p50, p90 and p99, the fewest items of a list, the answers not 200.
struct Measured {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    fewest_items: usize,
    not_ok: usize,
}

/// 10 warm-ups and `ROUNDS` timed requests; every answer's status and item count is read
/// after its time is taken.
async fn measure(
    client: &reqwest::Client,
    cluster: &KubeCluster,
    clock: &SimClock,
    path: &str,
    advance: i64,
) -> Measured {
    let url = format!("{}{path}", cluster.url());
    let mut times = Vec::with_capacity(ROUNDS);
    let (mut fewest_items, mut not_ok) = (usize::MAX, 0);
    for round in 0..ROUNDS + 10 {
        clock.advance(advance);
        let started = Instant::now();
        let response = client.get(&url).bearer_auth(cluster.token()).send().await.unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap();
        let took = started.elapsed();
        not_ok += usize::from(status != reqwest::StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        fewest_items = fewest_items.min(v["items"].as_array().map_or(0, Vec::len));
        if round >= 10 {
            times.push(took);
        }
    }
    times.sort_unstable();
    Measured {
        p50: percentile(&times, 50),
        p90: percentile(&times, 90),
        p99: percentile(&times, 99),
        fewest_items,
        not_ok,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut checks = SelfChecks::new();
    let started = Instant::now();
    let clock = Arc::new(SimClock::new(WorkloadConfig::default().start));
    let mut clusters = Vec::new();
    for seed in 1..=CLUSTERS {
        let config = WorkloadConfig {
            seed,
            users: 100,
            projects_per_user: 2,
            long_running_pods: PODS,
            short_lived_pods: 200,
            ..WorkloadConfig::default()
        };
        let workload = Arc::new(Workload::generate(&config));
        let name = format!("cluster-{seed}");
        clusters.push(KubeCluster::start(&name, workload, Arc::clone(&clock), KubeOptions::default()).unwrap());
    }
    println!("{CLUSTERS} clusters of {PODS} running pods started in {:?}", started.elapsed());

    for (i, cluster) in [(0, &clusters[0]), (CLUSTERS as usize - 1, &clusters[CLUSTERS as usize - 1])] {
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(cluster.ca_pem().as_bytes()).unwrap()])
            .build()
            .unwrap();
        // Baseline, same server and connection: the smallest authenticated answer (/version).
        let baseline = measure(&client, cluster, &clock, "/version", 0).await;
        println!(
            "cluster {:>3} baseline   /version                p50 {:>6} ms  p99 {:>6} ms",
            i + 1,
            ms(baseline.p50),
            ms(baseline.p99)
        );
        checks.check(
            &format!("cluster {} /version: every request answered 200", i + 1),
            baseline.not_ok == 0,
            format!("{} of {} not 200", baseline.not_ok, ROUNDS + 10),
        );
        for (what, path) in [
            ("PodMetrics", "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=owner"),
            ("pods", "/api/v1/pods?labelSelector=owner"),
        ] {
            for (case, advance) in [("same tick", 0), ("new tick", SCRAPE_SECS)] {
                let m = measure(&client, cluster, &clock, path, advance).await;
                println!(
                    "cluster {:>3} {what:<10} {case:<9} items >= {:>5}  p50 {:>6} ms  p90 {:>6} ms  p99 {:>6} ms  \
                     p99 = {:.1}x baseline",
                    i + 1,
                    m.fewest_items,
                    ms(m.p50),
                    ms(m.p90),
                    ms(m.p99),
                    m.p99.as_secs_f64() / baseline.p99.as_secs_f64().max(1e-9),
                );
                let name = format!("cluster {} {what} {case}", i + 1);
                checks.check(
                    &format!("{name}: every request answered 200"),
                    m.not_ok == 0,
                    format!("{} of {} not 200", m.not_ok, ROUNDS + 10),
                );
                checks.check(
                    &format!("{name}: every list held the {PODS} running pods"),
                    m.fewest_items >= PODS,
                    format!("fewest items {}", m.fewest_items),
                );
                checks.target(
                    &format!("{name}: p99 under 50 ms"),
                    m.p99 < Duration::from_millis(50),
                    ms(m.p99) + " ms",
                );
            }
        }
    }
    for c in &clusters {
        c.stop().await;
    }
    checks.finish();
}
