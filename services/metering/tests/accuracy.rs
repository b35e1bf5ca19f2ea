//! Metering accuracy: how far a day of 15-minute point samples is from the true integrated usage.
//!
//! A sandbox cluster serves a generated workload over a simulated clock. For each of the 96
//! windows of one UTC day the clock is set to the collection moment (the window's end plus
//! [`COLLECT_AFTER_END`]) and the window is collected with `collect::ClusterClient`, as the
//! service will. The samples are summed per (owner, day) and compared with the workload
//! model's exact integral over the day, CPU, memory and GPUs separately. All quantities are
//! integers (nanocore-seconds, byte-seconds, GPU-seconds); relative errors are integer parts
//! per million.
//!
//! The same days are also integrated from PodMetrics read at metrics-server's resolution
//! (every 15 s) with `collect::readings` (decision 0043), and compared beside the point samples.
//!
//! `cargo test -p hopsbridge-metering --test accuracy -- --nocapture` prints the report.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "tests print their report"
)]

mod common;

use chrono::NaiveDate;
use common::{fast, init};
use hopsbridge_metering::collect::readings::Integrator;
use hopsbridge_metering::collect::{ClusterClient, CollectConfig, CollectStats, OwnerUsage};
use hopsbridge_metering::usage::{
    BYTE_SECONDS_PER_GIB_HOUR, GPU_SECONDS_PER_GPU_HOUR, NANOCORE_SECONDS_PER_CORE_HOUR, Usage,
};
use hopsbridge_metering::window::{DAY_SECS, Window, WindowLength};
use hopsbridge_platform::Secret;
use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::{Profile, SCRAPE_SECS, SimClock, SimPod, Workload, WorkloadConfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

/// 2027-01-01T00:00:00Z: the day measured.
const DAY: i64 = 1_798_761_600;

/// Seconds after a window's end at which it is collected. metrics-server reports the rate of
/// its last scrape, which lies on a multiple of [`SCRAPE_SECS`]; window ends are multiples of
/// it too, so any offset below it reads the scrape taken at the window's end, whose rate is
/// that of the window's last 15 s. A longer offset would read a later scrape and book the
/// next window's rate in this one. A few seconds leave room for the service's and the
/// cluster's clocks to differ (decision 0025).
const COLLECT_AFTER_END: i64 = 3;
const _: () = assert!(0 <= COLLECT_AFTER_END && COLLECT_AFTER_END < SCRAPE_SECS);

/// Parts per million.
const PPM: i128 = 1_000_000;

/// Every pod runs from before the day to after it, at a constant rate.
fn steady() -> WorkloadConfig {
    WorkloadConfig {
        seed: 11,
        users: 12,
        long_running_pods: 150,
        short_lived_pods: 0,
        start: DAY,
        horizon_secs: i64::from(DAY_SECS),
        bursty_users_permille: 0,
        gpu_pods_permille: 200,
        ..WorkloadConfig::default()
    }
}

/// Every pod's rate is a square wave (bursts of 30 s to a quarter of a 5 to 40 minute cycle),
/// and short jobs of 30 s to 20 min start all through the day.
fn bursty() -> WorkloadConfig {
    WorkloadConfig { seed: 12, short_lived_pods: 300, bursty_users_permille: 1000, ..steady() }
}

/// One of a usage's quantities.
type Quantity = fn(&Usage) -> u128;

/// The three quantities, with their names and units per hour.
const RESOURCES: [(&str, Quantity, u128); 3] = [
    ("core-h", |u| u.cpu_nanocore_seconds, NANOCORE_SECONDS_PER_CORE_HOUR),
    ("GiB-h", |u| u.memory_byte_seconds, BYTE_SECONDS_PER_GIB_HOUR),
    ("GPU-h", |u| u.gpu_seconds, GPU_SECONDS_PER_GPU_HOUR),
];

/// The workload model's exact usage as the metering type.
fn from_model(u: hopsbridge_sandbox::workload::Usage) -> Usage {
    Usage {
        cpu_nanocore_seconds: u.cpu_nanocore_seconds,
        memory_byte_seconds: u.memory_byte_seconds,
        gpu_seconds: u.gpu_seconds,
    }
}

/// What a point sample of `window` taken at its collection moment books for `pod`, from the
/// workload model alone (decision 0023): nothing unless the pod list shows it Running and
/// metrics-server has a rate for it; else its containers' rate in the scrape read, and its
/// GPUs, held for the whole window.
fn sample_of(pod: &SimPod, window: Window) -> Option<Usage> {
    let now = window.end() + COLLECT_AFTER_END;
    let scrape = now - now.rem_euclid(SCRAPE_SECS);
    let listed_running = pod.exists_at(now) && pod.running_at(now);
    let has_metrics = pod.exists_at(scrape) && pod.running_at(scrape) && pod.running_at(scrape - 1);
    if !(listed_running && has_metrics) {
        return None;
    }
    let mut u = Usage::default();
    for c in &pod.containers {
        let (cpu, memory) = c.profile.at(scrape - 1);
        u += Usage::of_rates(cpu.into(), memory.into(), c.gpus.into(), window.secs());
    }
    Some(u)
}

/// The most a window's point sample of `pod` can differ from the pod's true usage in that
/// window, per quantity.
///
/// The true usage is the integral of the rate over the part of the window the pod runs. The
/// sample is either nothing, or the rate the pod had in the window's last second, held for the
/// window.
/// Let `hi` be the highest rate the pod has in the window (0 if it does not run). If the pod
/// runs through the whole window and is still Running when collected, the sample is taken
/// and both it and the true usage lie in `[lo, hi] × secs` with `lo` the window's lowest
/// rate. Otherwise both lie in `[0, hi] × secs`. Either way their distance is at most
/// `(hi − lo) × secs` with `lo = 0` in the second case. So a pod whose rate does not change in
/// a window it lives through is sampled exactly there, and the bound for a day is the sum over
/// its windows of how much its rate varies in each.
fn bound_of(pod: &SimPod, window: Window) -> Usage {
    let (from, to) = (window.start().max(pod.started), pod.finished.map_or(window.end(), |f| f.min(window.end())));
    let now = window.end() + COLLECT_AFTER_END;
    let whole = pod.started <= window.start() && pod.exists_at(now) && pod.running_at(now);
    let mut b = Usage::default();
    for c in &pod.containers {
        let Some(r) = c.profile.range(from, to) else { continue };
        let (cpu_lo, memory_lo, gpu_lo) = if whole { (r.cpu_min, r.memory_min, c.gpus) } else { (0, 0, 0) };
        b += Usage::of_rates(
            (r.cpu_max - cpu_lo).into(),
            (r.memory_max - memory_lo).into(),
            (c.gpus - gpu_lo).into(),
            window.secs(),
        );
    }
    b
}

/// What the model says the collection of `window` finds, per (namespace, owner).
fn expected(workload: &Workload, window: Window) -> BTreeMap<(String, String), OwnerUsage> {
    let mut out: BTreeMap<(String, String), OwnerUsage> = BTreeMap::new();
    for pod in workload.pods() {
        if let Some(u) = sample_of(pod, window) {
            let e = out.entry((pod.namespace.clone(), pod.owner().unwrap_or("").to_owned())).or_default();
            e.usage += u;
            e.pods += 1;
        }
    }
    out
}

/// One user-day: the truth, the sum of the samples and the bound on their distance.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct UserDay {
    truth: Usage,
    sampled: Usage,
    bound: Usage,
}

type Days = BTreeMap<(String, NaiveDate), UserDay>;

/// The day's windows of `secs` seconds.
fn windows(secs: u32) -> Vec<Window> {
    WindowLength::new(secs).unwrap().between(DAY, DAY + i64::from(DAY_SECS)).collect()
}

/// The user-days of `workload` sampled from the model alone with windows of `secs` seconds:
/// the true usage, the point samples summed per (owner, day), and the bound.
fn model_days(workload: &Workload, secs: u32) -> Days {
    let mut days = Days::new();
    for w in windows(secs) {
        for pod in workload.pods() {
            let Some(owner) = pod.owner().filter(|o| !o.is_empty()) else { continue };
            let d = days.entry((owner.to_owned(), w.day())).or_default();
            d.bound += bound_of(pod, w);
            if let Some(u) = sample_of(pod, w) {
                d.sampled += u;
            }
        }
    }
    // The windows tile one UTC day, so the day's truth is per (owner, that day).
    let day = windows(secs).first().unwrap().day();
    for (owner, truth) in workload.usage_by_owner(DAY, DAY + i64::from(DAY_SECS)) {
        days.entry((owner, day)).or_default().truth = from_model(truth);
    }
    days
}

/// Collects every 15-minute window of the day from a sandbox cluster serving `workload`, at
/// each window's collection moment, and sums the samples per (owner, day). Each collection is
/// checked against the model's point sample, so the error measured is the sampling method's
/// alone. Returns the user-days and the summed counters.
async fn collect_day(workload: &Workload) -> (Days, CollectStats) {
    let clock = Arc::new(SimClock::new(DAY));
    let cluster =
        KubeCluster::start("eu-1", Arc::new(workload.clone()), Arc::clone(&clock), KubeOptions::default()).unwrap();
    let client = ClusterClient::connect(cluster.name(), &Secret::new(cluster.kubeconfig()), fast()).await.unwrap();
    let day = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
    let windows = windows(WindowLength::default().secs());
    assert_eq!(windows.len(), 96);
    let mut sampled: BTreeMap<(String, NaiveDate), Usage> = BTreeMap::new();
    let mut stats = CollectStats::default();
    for &w in &windows {
        clock.set(w.end() + COLLECT_AFTER_END);
        assert_eq!(WindowLength::default().previous_complete(clock.now()), w, "the moment collects this window");
        let got = client.collect(w).await.unwrap();
        assert_eq!(got.window, w);
        assert_eq!(w.day(), day, "every window of the day is booked on it");
        assert_eq!(got.usage, expected(workload, w), "{w}");
        for ((_, owner), u) in got.usage {
            *sampled.entry((owner, w.day())).or_default() += u.usage;
        }
        let s = got.stats;
        stats.api_calls += s.api_calls;
        stats.pods_measured += s.pods_measured;
        stats.pods_without_metrics += s.pods_without_metrics;
        stats.metrics_without_pod += s.metrics_without_pod;
        stats.pods_without_owner += s.pods_without_owner;
    }
    cluster.stop().await;
    // The truth and the bound come from the model; the samples are the collector's.
    let mut days = model_days(workload, WindowLength::default().secs());
    for (key, d) in &mut days {
        let got = sampled.remove(key).unwrap_or_default();
        assert_eq!(got, d.sampled, "{key:?}");
        d.sampled = got;
    }
    assert!(sampled.is_empty(), "samples of users the model does not know: {sampled:?}");
    (days, stats)
}

/// `sampled − truth` relative to `truth` in parts per million (truncated toward zero); `None`
/// when the truth is zero.
fn error_ppm(truth: u128, sampled: u128) -> Option<i128> {
    let (t, s) = (i128::try_from(truth).unwrap(), i128::try_from(sampled).unwrap());
    (t != 0).then(|| (s - t) * PPM / t)
}

/// `ppm` as a signed percentage with two decimals, by integer arithmetic (truncated).
fn percent(ppm: i128) -> String {
    let sign = if ppm < 0 { "-" } else { "+" };
    let a = ppm.unsigned_abs() / 100;
    format!("{sign}{}.{:02}%", a / 100, a % 100)
}

/// `numerator / denominator` with three decimals, rounded half up.
fn hours(numerator: u128, denominator: u128) -> String {
    let milli = (numerator * 2000 / denominator).div_ceil(2);
    format!("{}.{:03}", milli / 1000, milli % 1000)
}

/// Over the user-days with a non-zero truth, per quantity, in ppm: the worst relative error,
/// the mean absolute and mean signed ones, the error of the whole cluster-day, and the worst
/// bound relative to the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Summary {
    user_days: usize,
    worst: i128,
    mean_abs: i128,
    mean_signed: i128,
    total: i128,
    worst_bound: i128,
}

fn summarise(days: &Days, quantity: Quantity) -> Summary {
    let measured: Vec<&UserDay> = days.values().filter(|d| quantity(&d.truth) > 0).collect();
    let errors: Vec<i128> =
        measured.iter().filter_map(|d| error_ppm(quantity(&d.truth), quantity(&d.sampled))).collect();
    let n = i128::try_from(errors.len()).unwrap().max(1);
    let (truth, sampled) = days.values().fold((0, 0), |(t, s), d| (t + quantity(&d.truth), s + quantity(&d.sampled)));
    let bound = |d: &&UserDay| error_ppm(quantity(&d.truth), quantity(&d.truth) + quantity(&d.bound)).unwrap_or(0);
    Summary {
        user_days: errors.len(),
        worst: errors.iter().copied().max_by_key(|e| e.abs()).unwrap_or(0),
        mean_abs: errors.iter().map(|e| e.abs()).sum::<i128>() / n,
        mean_signed: errors.iter().sum::<i128>() / n,
        total: error_ppm(truth, sampled).unwrap_or(0),
        worst_bound: measured.iter().map(bound).max().unwrap_or(0),
    }
}

/// One line per quantity: the summary of `days`.
fn summary_lines(days: &Days) -> String {
    let mut out = String::new();
    for (unit, quantity, _) in RESOURCES {
        let s = summarise(days, quantity);
        let _ = writeln!(
            out,
            "  {unit:<6} {:>2} user-days: worst {:>8}, mean |error| {:>7}, mean signed {:>7}, cluster-day {:>7}, worst bound {:>9}",
            s.user_days,
            percent(s.worst),
            percent(s.mean_abs),
            percent(s.mean_signed),
            percent(s.total),
            percent(s.worst_bound),
        );
    }
    out
}

/// The report: a row per user-day, then the summary per quantity.
fn report(title: &str, days: &Days, stats: &CollectStats) -> String {
    let mut out = format!("\n{title}\n");
    let mut head = format!("{:<12} {:>10}", "owner", "day");
    for (unit, _, _) in RESOURCES {
        let _ = write!(head, " | {:>11} {:>11} {:>8}", format!("true {unit}"), "sampled", "error");
    }
    let _ = writeln!(out, "{head}");
    for ((owner, day), d) in days {
        let _ = write!(out, "{owner:<12} {day:>10}");
        for (_, quantity, per_hour) in RESOURCES {
            let (t, s) = (quantity(&d.truth), quantity(&d.sampled));
            let e = error_ppm(t, s).map_or_else(|| "-".to_owned(), percent);
            let _ = write!(out, " | {:>11} {:>11} {e:>8}", hours(t, per_hour), hours(s, per_hour));
        }
        out.push('\n');
    }
    out.push_str(&summary_lines(days));
    let _ = writeln!(
        out,
        "  96 collections: {} API calls, {} pod samples, {} Running pods without metrics, {} metrics without a Running pod",
        stats.api_calls, stats.pods_measured, stats.pods_without_metrics, stats.metrics_without_pod
    );
    out
}

/// Every user-day's error lies within its bound, per quantity.
fn assert_within_bounds(days: &Days, what: &str) {
    for ((owner, _), d) in days {
        for (unit, quantity, _) in RESOURCES {
            let (t, s, b) = (quantity(&d.truth), quantity(&d.sampled), quantity(&d.bound));
            assert!(t.abs_diff(s) <= b, "{what}, {owner} {unit}: true {t}, sampled {s}, bound {b}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_workload_is_metered_exactly() {
    init();
    let started = Instant::now();
    let workload = Workload::generate(&steady());
    let (days, stats) = collect_day(&workload).await;
    println!("{}took {:?}", report("Steady workload, 15-minute windows", &days, &stats), started.elapsed());

    assert!(workload.pods().iter().all(|p| p.started < DAY && p.finished.is_none()), "all pods live the whole day");
    assert_eq!(days.len(), 12, "every user has pods");
    assert_eq!((stats.pods_without_metrics, stats.metrics_without_pod), (0, 0), "{stats:?}");
    assert_eq!(stats.pods_measured, 96 * 150, "every pod in every window");
    // A pod that runs through a window at a constant rate is sampled at that rate, and the
    // rate held for the window is its integral over the window; its GPUs are held throughout.
    // The 96 windows tile the day, so each user-day is exact, CPU, memory and GPUs alike, and
    // the bound (no rate changes, no starts or stops) says so too.
    for ((owner, _), d) in &days {
        assert_eq!(d.bound, Usage::default(), "{owner}");
        assert_eq!(d.sampled, d.truth, "{owner}");
        assert!(d.truth.cpu_nanocore_seconds > 0 && d.truth.memory_byte_seconds > 0, "{owner}");
    }
    let with_gpus = days.values().filter(|d| d.truth.gpu_seconds > 0).count();
    assert!(with_gpus >= 6, "GPU hours are checked for several users: {with_gpus}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bursty_workload_errs_within_the_bound_its_rates_allow() {
    init();
    let started = Instant::now();
    // Bursts alone: every pod lives through the day.
    let long_only = Workload::generate(&WorkloadConfig { short_lived_pods: 0, ..bursty() });
    let (days, stats) = collect_day(&long_only).await;
    println!("{}", report("Bursty workload, long-running pods only, 15-minute windows", &days, &stats));
    assert_within_bounds(&days, "bursts");
    for ((owner, _), d) in &days {
        assert_eq!(d.sampled.gpu_seconds, d.truth.gpu_seconds, "GPUs do not burst: {owner}");
    }
    assert!(days.values().filter(|d| d.truth.gpu_seconds > 0).count() >= 6);
    // The test measures something: point samples of bursts do miss.
    for (unit, quantity, _) in &RESOURCES[..2] {
        let s = summarise(&days, *quantity);
        assert!(s.worst != 0 && s.mean_abs > 0 && s.total != 0, "{unit}: {s:?}");
    }

    // Bursts and short jobs.
    let workload = Workload::generate(&bursty());
    assert!(workload.pods().iter().filter(|p| p.finished.is_some() && p.containers[0].gpus > 0).count() >= 20);
    let (days, stats) = collect_day(&workload).await;
    println!(
        "{}took {:?}",
        report("Bursty workload with short jobs, 15-minute windows", &days, &stats),
        started.elapsed()
    );
    assert_within_bounds(&days, "bursts and short jobs");
    for (unit, quantity, _) in RESOURCES {
        let s = summarise(&days, quantity);
        assert!(s.worst != 0 && s.mean_abs > 0, "{unit}: {s:?}");
    }
}

#[test]
fn shorter_windows_err_less_on_the_same_bursty_day() {
    // The model's point samples (`collect_day` checks them against the collector, window by
    // window, at 900 s) over the bursty day with short jobs, at four window lengths.
    let workload = Workload::generate(&bursty());
    let mut out = String::from("\nBursty workload with short jobs, by window length (model point samples)\n");
    let mut previous: Option<Days> = None;
    for secs in [900, 300, 60, 15] {
        let days = model_days(&workload, secs);
        assert_within_bounds(&days, &format!("{secs} s windows"));
        let _ = writeln!(out, "{secs} s windows ({} a day):", windows(secs).len());
        out.push_str(&summary_lines(&days));
        // Each length divides the one before, so each window splits into shorter ones whose
        // rates range within the longer one's: the bound can only shrink.
        if let Some(longer) = &previous {
            for (key, d) in &days {
                let l = longer[key].bound;
                for (unit, quantity, _) in RESOURCES {
                    assert!(quantity(&d.bound) <= quantity(&l), "{key:?} {unit} at {secs} s");
                }
            }
            let total = |days: &Days| days.values().map(|d| d.bound.cpu_nanocore_seconds).sum::<u128>();
            assert!(total(&days) < total(longer), "the cluster-day's CPU bound shrinks at {secs} s");
        }
        previous = Some(days);
    }
    // Sandbox rates change only on 15 s scrape boundaries, so a 15 s window's sample is the
    // window's exact integral for a pod that lives through it: what error is left at 15 s comes
    // from short jobs starting and stopping within a window.
    let long_running =
        Workload::new(Vec::new(), workload.pods().iter().filter(|p| p.finished.is_none()).cloned().collect());
    for ((owner, _), d) in model_days(&long_running, 15) {
        assert_eq!((d.sampled, d.bound), (d.truth, Usage::default()), "{owner}");
    }
    println!("{out}");
}

/// What integrating metrics-server's readings over a day took.
#[derive(Debug, Default)]
struct Integrated {
    /// Reads of the PodMetrics list, and the API calls they took.
    reads: u64,
    api_calls: u64,
    /// Milliseconds estimated between readings (missed ones), over every pod.
    estimated_ms: i64,
}

/// Reads the PodMetrics list at every scrape of the day (metrics-server's resolution, at
/// [`COLLECT_AFTER_END`] after each scrape) from a sandbox cluster serving `workload`, and
/// integrates each 15-minute window's readings per pod (decision 0043); the user-days carry
/// the true usage and, as `sampled`, the integrated CPU and memory (GPUs are not read from
/// metrics).
async fn integrate_day(workload: &Workload) -> (Days, Integrated) {
    let clock = Arc::new(SimClock::new(DAY));
    let cluster =
        KubeCluster::start("eu-1", Arc::new(workload.clone()), Arc::clone(&clock), KubeOptions::default()).unwrap();
    // Production pages: one call per read of a list of up to 1,000 pods.
    let config = CollectConfig { page_size: 1000, ..fast() };
    let client = ClusterClient::connect(cluster.name(), &Secret::new(cluster.kubeconfig()), config).await.unwrap();
    let owners: BTreeMap<(String, String), String> = workload
        .pods()
        .iter()
        .map(|p| ((p.namespace.clone(), p.name.clone()), p.owner().unwrap_or("").to_owned()))
        .collect();
    let mut done = Integrated::default();
    let mut integrated: BTreeMap<(String, NaiveDate), Usage> = BTreeMap::new();
    for w in windows(WindowLength::default().secs()) {
        let mut integrator = Integrator::new(w);
        // The scrapes whose readings end inside the window or at its end.
        let mut scrape = w.start() + SCRAPE_SECS;
        while scrape <= w.end() {
            clock.set(scrape + COLLECT_AFTER_END);
            let list = client.read_metrics().await.unwrap();
            done.reads += 1;
            done.api_calls += list.api_calls;
            integrator.add(&list.readings);
            scrape += SCRAPE_SECS;
        }
        for (pod, got) in integrator.finish() {
            done.estimated_ms += got.estimated_ms;
            *integrated.entry((owners[&pod].clone(), w.day())).or_default() += got.usage;
        }
    }
    cluster.stop().await;
    let mut days = model_days(workload, WindowLength::default().secs());
    for (key, d) in &mut days {
        d.sampled = integrated.remove(key).unwrap_or_default();
    }
    assert!(integrated.is_empty(), "usage of users the model does not know: {integrated:?}");
    (days, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_integrated_at_metrics_server_resolution_are_within_half_a_percent() {
    init();
    let started = Instant::now();
    let mut out = String::from(
        "\nCPU and memory integrated from PodMetrics read every 15 s (decision 0043) beside 15-minute point samples\n",
    );
    let cases = [
        ("steady", Workload::generate(&steady())),
        ("bursty, long-running only", Workload::generate(&WorkloadConfig { short_lived_pods: 0, ..bursty() })),
        ("bursty with short jobs", Workload::generate(&bursty())),
    ];
    for (name, workload) in &cases {
        let (days, done) = integrate_day(workload).await;
        let points = model_days(workload, WindowLength::default().secs());
        let _ = writeln!(
            out,
            "{name}: {} reads of the PodMetrics list, {} API calls ({} per 15-minute window), {} s estimated between readings",
            done.reads,
            done.api_calls,
            done.api_calls / 96,
            done.estimated_ms / 1000
        );
        for (unit, quantity, _) in &RESOURCES[..2] {
            let (i, p) = (summarise(&days, *quantity), summarise(&points, *quantity));
            let _ = writeln!(
                out,
                "  {unit:<6} {:>2} user-days, integrated: worst {:>8}, mean |error| {:>7}, cluster-day {:>7} | point samples: worst {:>8}, mean |error| {:>7}",
                i.user_days,
                percent(i.worst),
                percent(i.mean_abs),
                percent(i.total),
                percent(p.worst),
                percent(p.mean_abs),
            );
        }
        for ((owner, _), d) in &days {
            let cpu = error_ppm(d.truth.cpu_nanocore_seconds, d.sampled.cpu_nanocore_seconds).unwrap_or(0);
            let memory = error_ppm(d.truth.memory_byte_seconds, d.sampled.memory_byte_seconds).unwrap_or(0);
            assert!(cpu.abs() <= 5_000, "{name}, {owner}: CPU off by {}", percent(cpu));
            assert!(memory.abs() <= 20_000, "{name}, {owner}: memory off by {}", percent(memory));
        }
        if *name != "bursty with short jobs" {
            // Pods that live through the day: readings tile it, so the integral is exact.
            for ((owner, _), d) in &days {
                assert_eq!(d.sampled.cpu_nanocore_seconds, d.truth.cpu_nanocore_seconds, "{name}, {owner}");
                assert_eq!(d.sampled.memory_byte_seconds, d.truth.memory_byte_seconds, "{name}, {owner}");
            }
            assert_eq!(done.estimated_ms, 0, "{name}");
        }
    }
    println!("{out}took {:?}", started.elapsed());
}

/// Greatest common divisor.
const fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[test]
fn a_point_sample_is_unbiased_over_phases_and_errs_most_in_step_with_the_windows() {
    // Long-running bursty pods only, so every error is a burst's. Model point samples, which
    // `collect_day` checks against the collector window by window.
    let workload = Workload::generate(&WorkloadConfig { short_lived_pods: 0, ..bursty() });
    let day_windows = windows(900);
    // (sampled − true) over the day, (CPU, memory), and the truth.
    let error = |pod: &SimPod| {
        let sampled = day_windows.iter().filter_map(|&w| sample_of(pod, w)).fold(Usage::default(), |a, u| a + u);
        let truth = from_model(pod.usage(DAY, DAY + i64::from(DAY_SECS)));
        let diff = |q: Quantity| i128::try_from(q(&sampled)).unwrap() - i128::try_from(q(&truth)).unwrap();
        ((diff(RESOURCES[0].1), diff(RESOURCES[1].1)), truth)
    };
    // Pods by how many points of their cycle the window ends visit: m = P / gcd(P, 900) for a
    // period of P seconds. (pods, Σ CPU error, Σ true CPU, Σ |relative CPU error| in ppm)
    let mut classes: BTreeMap<(i64, i64), (i128, i128, i128, i128)> = BTreeMap::new();
    let mut bursty_pods = 0;
    for pod in workload.pods() {
        let Some(period) = pod.containers.iter().find_map(|c| match c.profile {
            Profile::Bursty { period_secs, .. } => Some(period_secs),
            Profile::Steady { .. } => None,
        }) else {
            continue;
        };
        bursty_pods += 1;
        // Averaged over every phase of the cycle (on the 15 s grid, each once) the error is
        // exactly zero: each second of the day, and each sampled second, is in a burst for
        // the same share of phases (burst / period), and the 96 samples held 900 s stand for
        // the 86,400 seconds.
        let mut over_phases = (0_i128, 0_i128);
        for phase in (0..period).step_by(15) {
            let mut shifted = pod.clone();
            for c in &mut shifted.containers {
                if let Profile::Bursty { phase_secs, .. } = &mut c.profile {
                    *phase_secs = phase;
                }
            }
            let ((cpu, memory), _) = error(&shifted);
            over_phases = (over_phases.0 + cpu, over_phases.1 + memory);
        }
        assert_eq!(over_phases, (0, 0), "{}: a point sample is unbiased over phases", pod.name);

        let m = period / gcd(period, 900);
        let class =
            [(1, 4), (5, 16), (17, 96), (97, i64::MAX)].into_iter().find(|&(lo, hi)| lo <= m && m <= hi).unwrap();
        let ((cpu, _), truth) = error(pod);
        let truth = i128::try_from(truth.cpu_nanocore_seconds).unwrap();
        let c = classes.entry(class).or_default();
        *c = (c.0 + 1, c.1 + cpu, c.2 + truth, c.3 + (cpu * PPM / truth).abs());
    }
    assert_eq!(bursty_pods, 150);
    let mut out = String::from("\nBursty pods by the points of their cycle that 15-minute window ends sample (CPU)\n");
    for (&(lo, hi), &(pods, error, truth, abs)) in &classes {
        let m = if hi == i64::MAX { format!("{lo}+") } else { format!("{lo}-{hi}") };
        let _ = writeln!(
            out,
            "  {m:>6} points: {pods:>3} pods, their error {:>8}, mean |error| per pod {:>8}",
            percent(error * PPM / truth),
            percent(abs / pods)
        );
    }
    println!("{out}");
    // A pod whose cycle the window ends visit at m equally spaced points samples a share of
    // bursts within 1/m of the true one for each full visit: pods in step with the windows
    // (m ≤ 4) err far more than those visited at many points.
    let mean = |class: (i64, i64)| classes[&class].3 / classes[&class].0;
    assert!(mean((1, 4)) > 3 * mean((17, 96)).max(mean((97, i64::MAX))), "{out}");
}

/// The metering service itself, in-process with provisioning, following the sandbox's clock
/// with the production settings (900 s windows, 3 s settling, 15 s resolution, a 300 s lease;
/// the request pacing, which is real time, raised), against the real Postgres and NATS. The test moves the
/// clock scrape by scrape (the sandbox's clock controls, docs/sandbox.md) and waits at each
/// step until every readings run has read, so a day takes minutes, not a day.
mod through_the_service {
    use super::common::admin;
    use diesel::QueryableByName;
    use diesel::sql_types::{BigInt, Bool, Nullable, Text};
    use diesel_async::RunQueryDsl;
    use hopsbridge_contracts::Service;
    use hopsbridge_metering::MeteringConfig;
    use hopsbridge_platform::caller::CallerSigner;
    use hopsbridge_sandbox::clock::{ClockServer, SimClock};
    use hopsbridge_sandbox::hopsworks::{HopsworksConfig, HopsworksSim};
    use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
    use hopsbridge_sandbox::workload::Workload;
    use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings};
    use reqwest::{Method, StatusCode};
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    const CLIENT_ID: &str = "hopsbridge-oauth-client";
    /// The production settling time and resolution.
    pub const SETTLE: i64 = 3;
    pub const RESOLUTION: i64 = 15;
    pub const WINDOW: i64 = 900;

    /// One simulated cluster: its Hopsworks, its API server, and its id once registered.
    pub struct Sim {
        /// Served until the test ends.
        _hopsworks: HopsworksSim,
        _kube: KubeCluster,
        pub id: Uuid,
        /// Measured by point (else by readings).
        pub point: bool,
    }

    pub struct Env {
        pub db: TestDb,
        key: CallerSigner,
        provisioning: String,
        pub clock: Arc<SimClock>,
        clock_server: ClockServer,
        stops: Vec<CancellationToken>,
        bus: TestBus,
    }

    impl Drop for Env {
        fn drop(&mut self) {
            for s in &self.stops {
                s.cancel();
            }
        }
    }

    #[derive(QueryableByName, Debug, Clone)]
    pub struct RunRow {
        #[diesel(sql_type = Text)]
        pub cluster: String,
        #[diesel(sql_type = BigInt)]
        pub start: i64,
        #[diesel(sql_type = Text)]
        pub status: String,
        #[diesel(sql_type = Text)]
        pub source: String,
        #[diesel(sql_type = Nullable<BigInt>)]
        pub read_through: Option<i64>,
        #[diesel(sql_type = Nullable<Text>)]
        pub stats: Option<String>,
    }

    #[derive(QueryableByName, Debug, Clone)]
    pub struct SampleSum {
        #[diesel(sql_type = Text)]
        pub cluster: String,
        #[diesel(sql_type = Text)]
        pub username: String,
        #[diesel(sql_type = Text)]
        pub cpu: String,
        #[diesel(sql_type = Text)]
        pub memory: String,
        #[diesel(sql_type = Text)]
        pub gpu: String,
        #[diesel(sql_type = BigInt)]
        pub estimated_ms: i64,
        #[diesel(sql_type = BigInt)]
        pub samples: i64,
        #[diesel(sql_type = Bool)]
        pub estimated: bool,
    }

    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    impl Env {
        /// Postgres, NATS, the clock standing still at `at`, and provisioning following it.
        pub async fn start(at: i64) -> Self {
            hopsbridge_testkit::init();
            let db = TestDb::new().await;
            let bus = TestBus::new().await;
            let clock = Arc::new(SimClock::new(at));
            let clock_server = ClockServer::start(Arc::clone(&clock)).unwrap();
            let (provisioning, stop) =
                super::common::provisioning(&db, &bus, &clock_server.url(), &[("clock.poll_ms", "5")]).await;
            let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
            Self { db, key, provisioning, clock, clock_server, stops: vec![stop], bus }
        }

        /// A cluster `name` serving `workload` on the shared clock, registered with provisioning.
        pub async fn cluster(&self, name: &str, workload: &Workload, point: bool) -> Sim {
            let hopsworks = HopsworksSim::start(HopsworksConfig::new(
                name,
                &format!("hw-key-{name}-{}", Uuid::new_v4().simple()),
                CLIENT_ID,
            ))
            .unwrap();
            let kube =
                KubeCluster::start(name, Arc::new(workload.clone()), Arc::clone(&self.clock), KubeOptions::default())
                    .unwrap();
            let body = json!({
                "name": name,
                "api_url": hopsworks.origin(),
                "api_key": hopsworks.api_key(),
                "kubeconfig": kube.kubeconfig(),
                "ca_bundle": hopsworks.ca_pem(),
                "oauth_client_id": CLIENT_ID,
                "capacity": 10,
                "region": "eu-north-1",
                "status": "active",
            });
            let (status, body) = hopsbridge_testkit::signed_call(
                &self.key,
                &self.provisioning,
                Method::POST,
                "/api/admin/clusters",
                Some(&admin()),
                Some(body),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let id = body["id"].as_str().unwrap().parse().unwrap();
            Sim { _hopsworks: hopsworks, _kube: kube, id, point }
        }

        /// Starts a metering replica with the production settings, `sims` measured by point or
        /// readings as each says, and `lease_secs`.
        pub async fn metering(&mut self, sims: &[&Sim], lease_secs: u32) -> CancellationToken {
            let mut sources = String::from("[collect.sources]\n");
            for s in sims {
                sources.push_str(&format!("\"{}\" = \"{}\"\n", s.id, if s.point { "point" } else { "readings" }));
            }
            let settings = TestSettings::data_service(Service::Metering, &self.db, &self.bus)
                .set("http.workers", "1")
                .set("provisioning.url", &self.provisioning)
                .clock(&self.clock_server.url())
                .set("clock.poll_ms", "5")
                .set("schedule.lease_secs", lease_secs.to_string())
                .set("schedule.tick_ms", "50")
                // The pacing is real time and the clock is stepped: a resolution takes
                // milliseconds here, not 15 s, so the 5 requests a second would bind.
                .set("collect.requests_per_second", "1000")
                .layer(&sources);
            let config: MeteringConfig = TestSettings::load(&settings, &hopsbridge_metering::DEFAULTS);
            assert_eq!(
                (config.schedule.window_secs, config.schedule.settle_secs, config.collect.resolution_secs),
                (900, 3, 15)
            );
            let app = hopsbridge_metering::build(config).await.unwrap();
            let stop = CancellationToken::new();
            tokio::spawn(app.run_until_stopped(stop.clone()));
            self.stops.push(stop.clone());
            stop
        }

        pub async fn n(&self, sql: &str) -> i64 {
            let mut conn = self.db.connect("metering").await;
            diesel::sql_query(sql).get_result::<N>(&mut conn).await.unwrap().n
        }

        pub async fn exec(&self, sql: &str) -> usize {
            let mut conn = self.db.connect("metering").await;
            diesel::sql_query(sql).execute(&mut conn).await.unwrap()
        }

        pub async fn until(&self, what: &str, sql: &str) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while self.n(sql).await == 0 {
                assert!(tokio::time::Instant::now() < deadline, "never: {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        pub async fn runs(&self) -> Vec<RunRow> {
            let mut conn = self.db.connect("metering").await;
            diesel::sql_query(
                "SELECT cluster_id::text AS cluster, extract(epoch FROM window_start)::bigint AS start, status, source,
                        extract(epoch FROM read_through)::bigint AS read_through, stats::text AS stats
                 FROM runs ORDER BY window_start, cluster_id",
            )
            .load(&mut conn)
            .await
            .unwrap()
        }

        /// Per (cluster, username): the samples' sums, as text (numeric sums).
        pub async fn sample_sums(&self) -> Vec<SampleSum> {
            let mut conn = self.db.connect("metering").await;
            diesel::sql_query(
                "SELECT cluster_id::text AS cluster, hopsworks_username AS username,
                        sum(cpu_nanocore_seconds)::text AS cpu, sum(memory_byte_seconds)::text AS memory,
                        sum(gpu_seconds)::text AS gpu, sum(estimated_ms)::bigint AS estimated_ms,
                        count(*) AS samples, bool_or(estimated) AS estimated
                 FROM samples GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .load(&mut conn)
            .await
            .unwrap()
        }

        /// Sets the clock to `t` and waits until metering has done what is due then: every
        /// readings run of the window under way has read at `t`, and when `t` is a window's
        /// end plus the settling time, that window's run of every cluster is complete.
        pub async fn step(&self, t: i64, sims: &[&Sim], (first, until): (i64, i64)) {
            self.clock.set(t);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let runs = self.runs().await;
                let done = sims.iter().all(|s| step_done(&runs, s, t, (first, until)));
                if done {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "metering never caught up with {t}: {:?}",
                    runs.iter().filter(|r| r.start + WINDOW + SETTLE >= t).collect::<Vec<_>>()
                );
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }

        /// Every usage_daily row is the sum of its billed samples, one UsageRecorded per billed
        /// sample, and no (cluster, namespace, user, window) twice.
        pub async fn assert_consistent(&self) {
            let mismatched = self
                .n("SELECT count(*) AS n FROM usage_daily d FULL JOIN (
                        SELECT (window_start AT TIME ZONE 'UTC')::date AS day, user_id, owner_user_id, cluster_id, namespace,
                               sum(cpu_nanocore_seconds) AS cpu, sum(memory_byte_seconds) AS mem, sum(gpu_seconds) AS gpu,
                               count(*) AS samples
                        FROM samples WHERE owner_user_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5) s
                    USING (day, user_id, owner_user_id, cluster_id, namespace)
                    WHERE d.cpu_nanocore_seconds IS DISTINCT FROM s.cpu OR d.memory_byte_seconds IS DISTINCT FROM s.mem
                       OR d.gpu_seconds IS DISTINCT FROM s.gpu OR d.samples IS DISTINCT FROM s.samples")
                .await;
            assert_eq!(mismatched, 0, "usage_daily is the sum of the billed samples");
            let unannounced = self
                .n("SELECT (SELECT count(*) FROM samples WHERE owner_user_id IS NOT NULL)
                         - (SELECT count(*) FROM outbox WHERE event_type = 'UsageRecorded') AS n")
                .await;
            assert_eq!(unannounced, 0, "one UsageRecorded per billed sample");
            let twice = self
                .n("SELECT count(*) AS n FROM (SELECT 1 FROM samples
                        GROUP BY cluster_id, namespace, hopsworks_username, window_start HAVING count(*) > 1) x")
                .await;
            assert_eq!(twice, 0);
        }
    }

    /// Whether metering has done what is due at `t` for `sim` (see [`Env::step`]) for the
    /// windows from `first` to `until`.
    fn step_done(runs: &[RunRow], sim: &Sim, t: i64, (first, until): (i64, i64)) -> bool {
        let id = sim.id.to_string();
        let run = |start: i64| runs.iter().find(|r| r.cluster == id && r.start == start);
        let under_way = (t - SETTLE).div_euclid(WINDOW) * WINDOW;
        let ended = under_way - WINDOW;
        if (t - SETTLE).rem_euclid(WINDOW) == 0
            && (first..until).contains(&ended)
            && run(ended).is_none_or(|r| r.status != "complete")
        {
            return false;
        }
        if sim.point || !(first..until).contains(&under_way) {
            return true;
        }
        run(under_way).is_some_and(|r| r.status == "complete" || r.read_through.is_some_and(|at| at >= t))
    }
}

/// A table cell: worst / mean absolute / whole cluster-span error.
fn cell(days: &Days, quantity: Quantity) -> String {
    let s = summarise(days, quantity);
    let p = |ppm: i128| match ppm {
        0 => "0".to_owned(),
        -99..=99 => "< 0.01%".to_owned(),
        _ => percent(ppm),
    };
    format!("{} / {} / {}", p(s.worst), p(s.mean_abs), p(s.total))
}

/// Mean API calls per window of a cluster's complete runs, and its reads and estimated pod
/// time summed, from the runs' stats.
fn run_counts(runs: &[through_the_service::RunRow], cluster: &str) -> (u64, u64, u64, i64) {
    let mine: Vec<serde_json::Value> = runs
        .iter()
        .filter(|r| r.cluster == cluster && r.status == "complete")
        .map(|r| serde_json::from_str(r.stats.as_deref().unwrap()).unwrap())
        .collect();
    let sum = |key: &str| mine.iter().map(|s| s["collect"][key].as_i64().unwrap()).sum::<i64>();
    let n = u64::try_from(mine.len()).unwrap();
    (n, u64::try_from(sum("api_calls")).unwrap() / n.max(1), u64::try_from(sum("reads")).unwrap(), sum("estimated_ms"))
}

/// Runs `windows` 15-minute windows from [`DAY`] through the metering service, each workload
/// on two clusters (one measured by point, one by readings) on one clock, and prints the
/// accuracy table per user over the span, beside each other. Answers the report.
async fn through_the_service_for(windows: i64) -> String {
    use through_the_service::{Env, RESOLUTION, SETTLE, WINDOW};
    init();
    let started = Instant::now();
    let (first, until) = (DAY, DAY + windows * WINDOW);
    let mut env = Env::start(DAY - 600).await;
    let cases = [
        ("steady", Workload::generate(&steady())),
        ("bursty, long-running only", Workload::generate(&WorkloadConfig { short_lived_pods: 0, ..bursty() })),
        ("bursty with short jobs", Workload::generate(&bursty())),
    ];
    let mut sims = Vec::new();
    for (i, (_, workload)) in cases.iter().enumerate() {
        sims.push(env.cluster(&format!("w{i}-point"), workload, true).await);
        sims.push(env.cluster(&format!("w{i}-readings"), workload, false).await);
    }
    let refs: Vec<&through_the_service::Sim> = sims.iter().collect();
    env.metering(&refs, 300).await;
    env.until("metering knows every cluster", "SELECT (count(*) = 6)::int::bigint AS n FROM clusters").await;
    let mut t = first + SETTLE;
    while t <= until + SETTLE {
        env.step(t, &refs, (first, until)).await;
        t += RESOLUTION;
    }
    let runs = env.runs().await;
    let sums = env.sample_sums().await;
    let day = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
    let parse = |s: &str| s.parse::<u128>().unwrap();
    let mut out = format!(
        "\nThrough the metering service: {windows} windows of 15 minutes from 2027-01-01T00:00Z, production timing \
         (readings every 15 s at +3 s, point samples at +3 s), one cluster per method and workload.\n\
         Per user over the span, worst / mean absolute / whole cluster:\n\n\
         | workload | method | CPU core-hours | memory GiB-hours | GPU-hours | API calls a window | reads | estimated pod-seconds |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for (i, (name, workload)) in cases.iter().enumerate() {
        let truth = workload.usage_by_owner(first, until);
        for sim in &sims[2 * i..2 * i + 2] {
            let id = sim.id.to_string();
            for s in sums.iter().filter(|s| s.cluster == id) {
                assert!(truth.contains_key(&s.username), "usage of a user the workload does not have: {s:?}");
                assert_eq!(s.samples % windows, 0, "one sample per window and namespace: {s:?}");
            }
            let mut days = Days::new();
            for (owner, u) in &truth {
                let d = days.entry((owner.clone(), day)).or_default();
                d.truth = from_model(*u);
                if let Some(s) = sums.iter().find(|s| s.cluster == id && &s.username == owner) {
                    d.sampled = Usage {
                        cpu_nanocore_seconds: parse(&s.cpu),
                        memory_byte_seconds: parse(&s.memory),
                        gpu_seconds: parse(&s.gpu),
                    };
                }
            }
            let (complete, calls, reads, estimated_ms) = run_counts(&runs, &id);
            assert_eq!(complete, u64::try_from(windows).unwrap(), "every window measured: {name}");
            let method = if sim.point { "point" } else { "readings" };
            let _ = writeln!(
                out,
                "| {name} | {method} | {} | {} | {} | {calls} | {reads} | {} |",
                cell(&days, RESOURCES[0].1),
                cell(&days, RESOURCES[1].1),
                cell(&days, RESOURCES[2].1),
                estimated_ms / 1000
            );
            if sim.point {
                if *name == "steady" {
                    for ((owner, _), d) in &days {
                        assert_eq!(d.sampled, d.truth, "point samples of steady pods are exact: {owner}");
                    }
                }
                continue;
            }
            // Readings: one read per resolution from the window's start to its end, none missed.
            assert_eq!(reads, u64::try_from(windows * (WINDOW / RESOLUTION + 1)).unwrap(), "{name}");
            assert_eq!(estimated_ms, 0, "no read missed: {name}");
            assert!(calls <= 2 * (WINDOW / RESOLUTION + 1).unsigned_abs(), "{name}: {calls} API calls a window");
            for ((owner, _), d) in &days {
                let err = |q: Quantity| error_ppm(q(&d.truth), q(&d.sampled)).unwrap_or(0);
                let (cpu, memory, gpu) = (err(RESOURCES[0].1), err(RESOURCES[1].1), err(RESOURCES[2].1));
                assert!(cpu.abs() <= 5_000, "{name}, {owner}: CPU off by {}", percent(cpu));
                assert!(memory.abs() <= 20_000, "{name}, {owner}: memory off by {}", percent(memory));
                assert!(gpu.abs() <= 5_000, "{name}, {owner}: GPU off by {}", percent(gpu));
                if *name != "bursty with short jobs" {
                    // Pods living through the span: readings tile it, the integral is exact.
                    assert_eq!(d.sampled, d.truth, "{name}, {owner}");
                }
            }
        }
    }
    env.assert_consistent().await;
    let _ = writeln!(out, "\ntook {:?}", started.elapsed());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_the_service_readings_are_within_half_a_percent_beside_point_samples_for_an_hour() {
    println!("{}", through_the_service_for(4).await);
}

/// The whole day (96 windows, about 5,800 clock steps): `just accuracy-day`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a simulated day through the service takes minutes: just accuracy-day"]
async fn through_the_service_readings_are_within_half_a_percent_beside_point_samples_for_a_day() {
    println!("{}", through_the_service_for(96).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_stopped_mid_window_or_losing_its_lease_double_counts_nothing_and_estimates_what_nobody_read() {
    use through_the_service::{Env, RESOLUTION, SETTLE, WINDOW};
    init();
    let workload =
        Workload::generate(&WorkloadConfig { users: 4, long_running_pods: 20, gpu_pods_permille: 300, ..steady() });
    let pods = i64::try_from(workload.pods().len()).unwrap();
    let (first, until) = (DAY, DAY + WINDOW);
    let mut env = Env::start(DAY - 600).await;
    let sim = env.cluster("eu-1", &workload, false).await;
    let sims = [&sim];
    let a = env.metering(&sims, 300).await;
    env.until("metering knows the cluster", "SELECT count(*) AS n FROM clusters").await;
    let at = |k: i64| first + SETTLE + k * RESOLUTION;
    for k in 0..=20 {
        env.step(at(k), &sims, (first, until)).await;
    }
    // Replica A stops: it gives the run back; nobody reads for four resolutions.
    a.cancel();
    env.until("the run is given back", "SELECT count(*) AS n FROM runs WHERE status = 'pending'").await;
    // Replica B starts at 25, takes the run over and reads on, with A's readings.
    env.clock.set(at(25));
    env.metering(&sims, 300).await;
    for k in 25..=40 {
        env.step(at(k), &sims, (first, until)).await;
    }
    // B loses its lease to a replica that then dies without reading: B's read at 41 is not
    // stored, and B takes the run over again once that lease has run out.
    let taken = env
        .exec("UPDATE runs SET claimed_by = 'another-replica', lease_until = now() + interval '1 hour' WHERE status = 'running'")
        .await;
    assert_eq!(taken, 1);
    env.clock.set(at(41));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let stored_through = env.n("SELECT extract(epoch FROM read_through)::bigint AS n FROM runs").await;
    assert_eq!(stored_through, at(40), "a replica that lost its lease stores nothing");
    env.clock.set(at(42));
    env.exec("UPDATE runs SET lease_until = now() - interval '1 second' WHERE claimed_by = 'another-replica'").await;
    for k in 42..=60 {
        env.step(at(k), &sims, (first, until)).await;
    }
    let runs = env.runs().await;
    let run = runs.iter().find(|r| r.start == first).unwrap();
    assert_eq!((run.status.as_str(), run.source.as_str()), ("complete", "readings"));
    let stats: serde_json::Value = serde_json::from_str(run.stats.as_deref().unwrap()).unwrap();
    println!("\nstopped, taken over, lease lost: {}", stats["collect"]);
    // Missed: reads 21–24 (A stopped; [s+300, s+360) not covered) and 41 (lease lost;
    // [s+600, s+615)): 75 s a pod, estimated between the readings around them.
    assert_eq!(stats["collect"]["estimated_ms"], json!(75_000 * pods), "{stats}");
    assert_eq!(stats["collect"]["reads"], json!(21 + 16 + 19), "{stats}");
    assert_eq!(stats["collect"]["pods_measured"], json!(pods), "{stats}");
    // The reads and one pod list: the replicas taking over knew the pods the run had listed.
    assert_eq!(stats["collect"]["api_calls"], json!(21 + 16 + 19 + 1), "{stats}");
    let sums = env.sample_sums().await;
    let truth = workload.usage_by_owner(first, until);
    assert_eq!(sums.len(), truth.len());
    for s in &sums {
        // Steady rates: the estimate (the mean of the readings around a gap) is the truth.
        let t = &truth[&s.username];
        let got = (s.cpu.parse::<u128>().unwrap(), s.memory.parse::<u128>().unwrap(), s.gpu.parse::<u128>().unwrap());
        assert_eq!(got, (t.cpu_nanocore_seconds, t.memory_byte_seconds, t.gpu_seconds), "{s:?}");
        assert!(s.estimated && s.estimated_ms > 0 && s.estimated_ms % 75_000 == 0, "{s:?}");
    }
    assert_eq!(sums.iter().map(|s| s.estimated_ms).sum::<i64>(), 75_000 * pods);
    let kept = env
        .n("SELECT (SELECT count(*) FROM readings WHERE window_start = to_timestamp(1798761600))
                           + (SELECT count(*) FROM run_pods WHERE window_start = to_timestamp(1798761600)) AS n")
        .await;
    assert_eq!(kept, 0, "a complete run's readings are integrated and dropped");
    env.assert_consistent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_readings_run_nobody_finishes_by_its_deadline_is_a_gap_and_its_readings_are_dropped() {
    use through_the_service::{Env, RESOLUTION, SETTLE, WINDOW};
    init();
    let workload = Workload::generate(&WorkloadConfig { users: 2, long_running_pods: 5, ..steady() });
    let (first, until) = (DAY, DAY + WINDOW);
    let mut env = Env::start(DAY - 600).await;
    let sim = env.cluster("eu-1", &workload, false).await;
    let a = env.metering(&[&sim], 300).await;
    env.until("metering knows the cluster", "SELECT count(*) AS n FROM clusters").await;
    for k in 0..=10 {
        env.step(first + SETTLE + k * RESOLUTION, &[&sim], (first, until)).await;
    }
    a.cancel();
    env.until("the run is given back", "SELECT count(*) AS n FROM runs WHERE status = 'pending'").await;
    assert_eq!(env.n("SELECT count(*) AS n FROM readings").await, 11 * 5, "each read of each pod kept");
    // Metering is down past the window's deadline (its end + 180 s).
    env.clock.set(until + 181);
    env.metering(&[&sim], 300).await;
    let first_gap = format!(
        "SELECT count(*) AS n FROM runs WHERE window_start = to_timestamp({first}) AND status = 'gap'
           AND gap_reason = 'not_collected'"
    );
    env.until("the window is a gap", &first_gap).await;
    env.until(
        "its readings are dropped",
        &format!("SELECT (count(*) = 0)::int::bigint AS n FROM readings WHERE window_start = to_timestamp({first})"),
    )
    .await;
    assert_eq!(env.n("SELECT count(*) AS n FROM samples").await, 0, "nothing invented for the gap");
}
