//! Latency of listing 2,000 PodMetrics and 2,000 pods over HTTPS while one process serves 200
//! clusters of 2,000 running pods each.
//!
//! `cargo bench -p hopsbridge-sandbox --bench podmetrics` (release). Prints p50/p99 per case:
//! "same tick" lists at an unchanged clock (served from the cached snapshot), "new tick"
//! advances the clock by one scrape before each list (the snapshot is rebuilt).

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    reason = "a benchmark reporting on stdout"
)]

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

async fn measure(
    client: &reqwest::Client,
    cluster: &KubeCluster,
    clock: &SimClock,
    path: &str,
    advance: i64,
) -> (Duration, Duration, Duration, usize) {
    let url = format!("{}{path}", cluster.url());
    let mut times = Vec::with_capacity(ROUNDS);
    let mut items = 0;
    for round in 0..ROUNDS + 10 {
        clock.advance(advance);
        let started = Instant::now();
        let body = client.get(&url).bearer_auth(cluster.token()).send().await.unwrap().bytes().await.unwrap();
        let took = started.elapsed();
        if round == 0 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            items = v["items"].as_array().map_or(0, Vec::len);
        }
        if round >= 10 {
            times.push(took);
        }
    }
    times.sort_unstable();
    (percentile(&times, 50), percentile(&times, 90), percentile(&times, 99), items)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
        let (b50, _, b99, _) = measure(&client, cluster, &clock, "/version", 0).await;
        println!(
            "cluster {:>3} baseline   /version                p50 {:>6} ms  p99 {:>6} ms",
            i + 1,
            ms(b50),
            ms(b99)
        );
        for (what, path) in [
            ("PodMetrics", "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=owner"),
            ("pods", "/api/v1/pods?labelSelector=owner"),
        ] {
            for (case, advance) in [("same tick", 0), ("new tick", SCRAPE_SECS)] {
                let (p50, p90, p99, items) = measure(&client, cluster, &clock, path, advance).await;
                println!(
                    "cluster {:>3} {what:<10} {case:<9} items {items:>5}  p50 {:>6} ms  p90 {:>6} ms  p99 {:>6} ms  \
                     p99 = {:.1}x baseline; target p99 < 50 ms: {}",
                    i + 1,
                    ms(p50),
                    ms(p90),
                    ms(p99),
                    p99.as_secs_f64() / b99.as_secs_f64().max(1e-9),
                    if p99 < Duration::from_millis(50) { "met" } else { "NOT met" }
                );
            }
        }
    }
    for c in &clusters {
        c.stop().await;
    }
}
