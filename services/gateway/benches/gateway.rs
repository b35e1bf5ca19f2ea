//! `just bench gateway`: what the gateway costs, measured against in-process services by an
//! open-loop load generator (latency from each request's scheduled time) and oha.
//!
//! Setup (one process, release build): identity on a template-cloned database and the local
//! NATS, the sandbox's Auth0 tenant, and the gateway in front (2 workers each, rate limits out
//! of the way, callers cached for the default 10 s). `PEOPLE` (default 1,000) sandbox Auth0
//! users each have their own access token, sign up through the gateway first (`GET /api/me`),
//! and each has their own caller headers signed as the gateway signs them for the baseline, so
//! the gateway's caller cache and rate limiter see a key per person.
//!
//! 1. Added latency: `GET /api/me` straight to identity (the person's signed caller headers)
//!    and through the gateway (the person's bearer token), each at `RATE` (default 2,000) req/s
//!    in `SLICES` (default 20) pairs of `SLICE_MS` (default 2,500 ms) slices that alternate
//!    which of the two goes first; request i is person i mod `PEOPLE`. The generator is open
//!    loop: request i is scheduled at start + i / `RATE`, a dispatcher thread hands it to the
//!    HTTP client at that time whether or not earlier requests have been answered, and its
//!    latency is measured from its scheduled time to its answer's last byte. At most
//!    `CONNECTIONS` (default 64) requests are in flight, each side on kept-alive connections
//!    of its own; a request scheduled while all are busy waits for one, and that wait counts in
//!    its latency (unbounded, a stall of a few seconds at 2,000 req/s opened more connections
//!    than the process may hold files). A stall therefore counts against every request
//!    scheduled during it (no coordinated omission). The p50/p99 of each side are taken over
//!    all of its slices' requests (100,000 with the defaults), so a busy moment of the machine
//!    falls on both sides alike. Target: the gateway adds at most 1 ms at p99.
//! 2. Throughput: `GET /api/auth/caller` through the gateway (authenticated, answered without
//!    a database) with one person's token, as fast as 64 oha connections go for 10 s (target:
//!    at least 10,000 req/s), against identity's `GET /healthz` (no authentication, no
//!    database) in the same run.
//!
//! Self-checks, each failing the run (exit status 1): every person signed up; every scheduled
//! request of part 1 has a latency sample and was answered 200; the generator kept up with its
//! schedule (the dispatch lag, from a request's scheduled time to the moment its task began,
//! before any wait for a connection, was at most `MAX_LAG_MS` (default 5 ms) at p99 on each side, and every slice
//! handed its last request to the client within 25 ms of that request's time); every request of
//! part 2 was answered 200. Targets are reported and do not fail the run.
//!
//! `WORKERS=n` gives identity and the gateway n actix workers each instead of 2, and
//! `GATEWAY_WORKERS=n` the gateway alone; `CALLER_CACHE_SECS=n` keeps the gateway's answers
//! about callers n seconds instead of 10; `DUMP_DIR=dir` writes every run's per-request CSV
//! there, numbered in the order they ran.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    clippy::panic,
    reason = "a benchmark reporting on stdout"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Options, Platform};
use futures::StreamExt as _;
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_sandbox::auth0::{TestUser, TokenSpec};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, SelfChecks};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile (0..=1) of sorted values, by nearest rank (NaN when there are none).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// One scheduled request that was answered.
#[derive(Clone, Copy)]
struct Sample {
    /// From its scheduled time to the moment its task began: the generator's lag.
    lag: Duration,
    /// From its scheduled time to its answer's last byte: the latency reported.
    latency: Duration,
    /// From the moment it had a connection to its answer's last byte (what a closed-loop tool
    /// reports).
    service: Duration,
    status: u16,
}

/// What one or several open-loop runs saw.
struct OpenLoop {
    scheduled: usize,
    samples: Vec<Sample>,
    /// Requests that failed without an answer (connection refused or reset, timed out).
    errors: usize,
    /// The largest dispatch lag of a run's last request, over the runs pooled.
    last_lag: Duration,
}

impl OpenLoop {
    fn pooled(runs: &[Self]) -> Self {
        Self {
            scheduled: runs.iter().map(|r| r.scheduled).sum(),
            samples: runs.iter().flat_map(|r| r.samples.iter().copied()).collect(),
            errors: runs.iter().map(|r| r.errors).sum(),
            last_lag: runs.iter().map(|r| r.last_lag).max().unwrap_or_default(),
        }
    }

    fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.status == 200).count()
    }

    fn latencies(&self) -> Vec<f64> {
        sorted(self.samples.iter().map(|s| ms(s.latency)).collect())
    }

    fn service(&self) -> Vec<f64> {
        sorted(self.samples.iter().map(|s| ms(s.service)).collect())
    }

    fn lags(&self) -> Vec<f64> {
        sorted(self.samples.iter().map(|s| ms(s.lag)).collect())
    }

    fn report(&self, name: &str) {
        let (latency, service, lags) = (self.latencies(), self.service(), self.lags());
        println!(
            "{name:<44} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  (from sending: p50 {:.2}, p99 {:.2} ms; \
             dispatch lag p50 {:.3}, p99 {:.3}, max {:.2} ms; {} of {} scheduled answered 200)",
            quantile(&latency, 0.50),
            quantile(&latency, 0.99),
            latency.last().copied().unwrap_or(f64::NAN),
            quantile(&service, 0.50),
            quantile(&service, 0.99),
            quantile(&lags, 0.50),
            quantile(&lags, 0.99),
            lags.last().copied().unwrap_or(f64::NAN),
            self.ok(),
            self.scheduled,
        );
    }
}

/// The open-loop generator: its own runtime (one worker thread) runs the requests, a dispatcher
/// thread hands each to it at its scheduled time.
struct Generator {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    connections: Arc<tokio::sync::Semaphore>,
}

impl Generator {
    fn new(connections: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("load")
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(connections)
            .build()
            .unwrap();
        Self { runtime, client, connections: Arc::new(tokio::sync::Semaphore::new(connections)) }
    }

    /// Sends `GET url` at `rate` a second for `millis`, request i with `people[i % len]`'s
    /// headers, and waits for every answer. Blocks: call it from a blocking thread.
    fn run(&self, url: &str, people: &Arc<Vec<HeaderMap>>, rate: u32, millis: u64) -> OpenLoop {
        let url = reqwest::Url::parse(url).unwrap();
        let count = usize::try_from(u64::from(rate) * millis / 1000).unwrap();
        let period = Duration::from_secs(1) / rate;
        let (sender, answers) = std::sync::mpsc::channel::<Option<Sample>>();
        let start = Instant::now() + Duration::from_millis(2);
        let mut last_lag = Duration::ZERO;
        for i in 0..count {
            let scheduled = start + period * u32::try_from(i).unwrap();
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            let request = self.client.get(url.clone()).headers(people[i % people.len()].clone());
            let (sender, connections) = (sender.clone(), Arc::clone(&self.connections));
            let last = i + 1 == count;
            self.runtime.spawn(async move {
                let dispatched = Instant::now();
                let _connection = connections.acquire_owned().await;
                let sent = Instant::now();
                let answer = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.bytes().await.ok().map(|_| {
                            let done = Instant::now();
                            Sample {
                                lag: dispatched.saturating_duration_since(scheduled),
                                latency: done.saturating_duration_since(scheduled),
                                service: done.saturating_duration_since(sent),
                                status,
                            }
                        })
                    }
                    Err(_) => None,
                };
                let _ = sender.send(answer);
            });
            if last {
                last_lag = Instant::now().saturating_duration_since(scheduled);
            }
        }
        drop(sender);
        let mut run = OpenLoop { scheduled: count, samples: Vec::with_capacity(count), errors: 0, last_lag };
        for answer in answers.iter().take(count) {
            match answer {
                Some(sample) => run.samples.push(sample),
                None => run.errors += 1,
            }
        }
        if let Ok(dir) = std::env::var("DUMP_DIR") {
            dump(&dir, if people[0].contains_key("authorization") { "through" } else { "direct" }, &run);
        }
        run
    }
}

/// Writes a run's samples as CSV: lag, latency and time from sending in microseconds, status.
fn dump(dir: &str, kind: &str, run: &OpenLoop) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut text = String::from("lag_us,latency_us,service_us,status\n");
    for s in &run.samples {
        text.push_str(&format!(
            "{},{},{},{}\n",
            s.lag.as_micros(),
            s.latency.as_micros(),
            s.service.as_micros(),
            s.status
        ));
    }
    std::fs::write(format!("{dir}/{n:03}-{kind}.csv"), text).unwrap();
}

fn header_map(pairs: impl IntoIterator<Item = (String, String)>) -> HeaderMap {
    pairs.into_iter().map(|(k, v)| (HeaderName::try_from(k).unwrap(), HeaderValue::try_from(v).unwrap())).collect()
}

/// What one oha run saw: every answered request's duration, in milliseconds, sorted.
struct Load {
    secs: f64,
    durations_ms: Vec<f64>,
    ok: usize,
}

impl Load {
    fn rps(&self) -> f64 {
        self.durations_ms.len() as f64 / self.secs
    }

    fn report(&self, name: &str) {
        println!(
            "{name:<52} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} of {} answered 200)",
            self.rps(),
            quantile(&self.durations_ms, 0.50),
            quantile(&self.durations_ms, 0.99),
            self.ok,
            self.durations_ms.len()
        );
    }
}

fn oha() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = PathBuf::from(home).join(".cargo/bin/oha");
    if cargo_bin.exists() { cargo_bin } else { PathBuf::from("oha") }
}

/// Runs oha as fast as `connections` go for `millis` and reads the duration and status of
/// every request from its CSV.
fn run_oha(url: &str, headers: &[(String, String)], connections: u32, millis: u64) -> Load {
    let mut cmd = Command::new(oha());
    cmd.args(["-z", &format!("{millis}ms"), "-c", &connections.to_string(), "--no-tui", "--output-format", "csv"]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(url);
    let out = cmd.output().expect("run oha (just bench gateway installs it with cargo install oha)");
    assert!(out.status.success(), "oha failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("oha writes UTF-8");
    if let Ok(dir) = std::env::var("DUMP_DIR") {
        let name = url.rsplit('/').next().unwrap_or("oha");
        std::fs::write(format!("{dir}/oha-{name}.csv"), &text).unwrap();
    }
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("oha CSV header").split(',').collect();
    let column =
        |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} in {header:?}"));
    let (duration, status) = (column("request-duration"), column("status"));
    let (mut durations_ms, mut ok) = (Vec::new(), 0);
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        durations_ms.push(fields[duration].parse::<f64>().expect("a duration in seconds") * 1000.0);
        ok += usize::from(fields[status] == "200");
    }
    Load { secs: millis as f64 / 1000.0, durations_ms: sorted(durations_ms), ok }
}

/// A sandbox Auth0 user of the benchmark.
struct Person {
    token: String,
    caller: Caller,
}

/// Signs every person up through the gateway (`GET /api/me`, 16 at a time) and answers them
/// with the caller the gateway vouches for, for those that answered 200 with an id.
async fn sign_up(platform: &Platform, people: usize) -> Vec<Person> {
    let client = reqwest::Client::new();
    let issuer = platform.tenant.issuer();
    futures::stream::iter(0..people)
        .map(|i| {
            let user = TestUser::database(&format!("bench-{i}"), &format!("bench{i}@example.com"), "Bench Person");
            let token = platform.tenant.access_token(&TokenSpec::user(&user)).unwrap();
            let (client, url, issuer) = (client.clone(), format!("{}/api/me", platform.gateway), issuer.clone());
            async move {
                let answer = client.get(url).bearer_auth(&token).send().await.ok()?;
                if answer.status() != reqwest::StatusCode::OK {
                    return None;
                }
                let me: serde_json::Value = answer.json().await.ok()?;
                let caller = Caller {
                    subject: user.sub.clone(),
                    issuer: Some(issuer),
                    user_id: Some(me["id"].as_str()?.parse().ok()?),
                    roles: vec![Role::User, Role::Owner],
                    email: hopsbridge_domain::Email::parse(&user.email).ok(),
                };
                Some(Person { token, caller })
            }
        })
        .buffer_unordered(16)
        .filter_map(|p| async move { p })
        .collect()
        .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let workers = env("WORKERS", 2);
    let platform = Platform::start(Options {
        per_user_per_minute: 1_000_000_000,
        per_ip_per_minute: 1_000_000_000,
        workers,
        gateway_workers: env("GATEWAY_WORKERS", workers),
        log_filter: "error",
        caller_cache_secs: env("CALLER_CACHE_SECS", 10),
        ..Options::default()
    })
    .await;
    let (gateway_url, identity_url) = (platform.gateway.clone(), platform.identity.clone());
    let (people_wanted, rate, max_lag_ms) =
        (env("PEOPLE", 1_000_usize).max(1), env("RATE", 2_000_u32), env("MAX_LAG_MS", 5.0));
    let slices: usize = env("SLICES", 20_usize).max(1);
    let slice_ms: u64 = env("SLICE_MS", 2_500_u64).max(500);
    let connections = env("CONNECTIONS", 64_usize).max(1);
    let mut checks = SelfChecks::new();

    let signing_up = Instant::now();
    let people = sign_up(&platform, people_wanted).await;
    println!("{} people signed up through the gateway in {:.1} s", people.len(), signing_up.elapsed().as_secs_f64());
    checks.check(
        "every person signed up through the gateway",
        people.len() == people_wanted,
        format!("{} of {people_wanted}", people.len()),
    );
    if people.is_empty() {
        checks.finish();
        return;
    }
    let bearers: Arc<Vec<HeaderMap>> = Arc::new(
        people.iter().map(|p| header_map([("authorization".to_owned(), format!("Bearer {}", p.token))])).collect(),
    );
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let callers: Arc<Vec<Caller>> = Arc::new(people.into_iter().map(|p| p.caller).collect());
    // Every person's headers signed now, as the gateway signs them (valid for a minute).
    let signed = move || -> Arc<Vec<HeaderMap>> {
        let now = chrono::Utc::now().timestamp();
        Arc::new(
            callers
                .iter()
                .map(|c| header_map(key.sign("GET", "/api/me", c, now).into_iter().map(|(k, v)| (k.to_owned(), v))))
                .collect(),
        )
    };

    println!(
        "gateway benchmark: open-loop generator in this process (latency from each request's scheduled time), \
         on the same 2 cores as the gateway, identity, Postgres and NATS; GET /api/me at {rate} req/s, \
         {} people, at most {connections} in flight, {slices} slices of {slice_ms} ms each way, interleaved",
        bearers.len()
    );
    let generator = Arc::new(Generator::new(connections));
    let generator_direct = Arc::new(Generator::new(connections));
    let run = |generator: &Arc<Generator>, url: String, headers: Arc<Vec<HeaderMap>>, millis: u64| {
        let generator = Arc::clone(generator);
        tokio::task::spawn_blocking(move || generator.run(&url, &headers, rate, millis))
    };
    let (direct_url, through_url) = (format!("{identity_url}/api/me"), format!("{gateway_url}/api/me"));
    // Warm-up, not counted: connections opened, every person's caller cached.
    run(&generator_direct, direct_url.clone(), signed(), 1_000).await.unwrap();
    run(&generator, through_url.clone(), Arc::clone(&bearers), 1_000).await.unwrap();
    let (mut direct_runs, mut through_runs) = (Vec::new(), Vec::new());
    for slice in 0..slices {
        let direct = || run(&generator_direct, direct_url.clone(), signed(), slice_ms);
        let through = || run(&generator, through_url.clone(), Arc::clone(&bearers), slice_ms);
        if slice % 2 == 0 {
            direct_runs.push(direct().await.unwrap());
            through_runs.push(through().await.unwrap());
        } else {
            through_runs.push(through().await.unwrap());
            direct_runs.push(direct().await.unwrap());
        }
    }
    let slice_p99s = |runs: &[OpenLoop]| {
        let p99s = sorted(runs.iter().map(|r| quantile(&r.latencies(), 0.99)).collect());
        format!("{:.2}–{:.2} ms", p99s[0], p99s[p99s.len() - 1])
    };
    let (direct, through) = (OpenLoop::pooled(&direct_runs), OpenLoop::pooled(&through_runs));
    direct.report(&format!("GET /api/me straight to identity @{rate}/s"));
    through.report(&format!("GET /api/me through the gateway @{rate}/s"));
    println!(
        "p99 of single slices: straight {}, through the gateway {}",
        slice_p99s(&direct_runs),
        slice_p99s(&through_runs)
    );
    let (direct_ms, through_ms) = (direct.latencies(), through.latencies());
    let added = quantile(&through_ms, 0.99) - quantile(&direct_ms, 0.99);
    let added_p50 = quantile(&through_ms, 0.50) - quantile(&direct_ms, 0.50);
    println!(
        "gateway adds at p99: {added:.2} ms (p50: {added_p50:.2} ms); ratio of p99s through / straight: {:.2}",
        quantile(&through_ms, 0.99) / quantile(&direct_ms, 0.99)
    );
    for (side, load) in [("straight to identity", &direct), ("through the gateway", &through)] {
        checks.check(
            &format!("{side}: every scheduled request has a latency sample"),
            load.samples.len() == load.scheduled,
            format!("{} of {} ({} failed without an answer)", load.samples.len(), load.scheduled, load.errors),
        );
        checks.check(
            &format!("{side}: every request answered 200"),
            load.ok() == load.scheduled,
            format!("{} of {}", load.ok(), load.scheduled),
        );
        let lag_p99 = quantile(&load.lags(), 0.99);
        checks.check(
            &format!("{side}: the generator kept up with its schedule"),
            lag_p99 <= max_lag_ms && load.last_lag <= Duration::from_millis(25),
            format!(
                "dispatch lag p99 {lag_p99:.3} ms, at most {max_lag_ms} ms; every slice's last request handed over \
                 at most {:.2} ms late, at most 25 ms",
                ms(load.last_lag)
            ),
        );
    }
    checks.target("the gateway adds at most 1 ms at p99", added <= 1.0, format!("{added:.2} ms"));

    let baseline = tokio::task::spawn_blocking({
        let url = format!("{identity_url}/healthz");
        move || run_oha(&url, &[], 64, 10_000)
    })
    .await
    .unwrap();
    baseline.report("GET /healthz on identity (baseline), max");
    let one = vec![("authorization".to_owned(), bearers[0]["authorization"].to_str().unwrap().to_owned())];
    let caller_route = tokio::task::spawn_blocking({
        let url = format!("{gateway_url}/api/auth/caller");
        move || run_oha(&url, &one, 64, 10_000)
    })
    .await
    .unwrap();
    caller_route.report("GET /api/auth/caller through the gateway, max");
    println!(
        "authenticated no-database route: {:.0} req/s = {:.2}x the unauthenticated baseline",
        caller_route.rps(),
        caller_route.rps() / baseline.rps().max(1.0),
    );
    for (name, load) in [("GET /healthz", &baseline), ("GET /api/auth/caller", &caller_route)] {
        checks.check(
            &format!("{name} at full speed: every request answered 200"),
            !load.durations_ms.is_empty() && load.ok == load.durations_ms.len(),
            format!("{} of {}", load.ok, load.durations_ms.len()),
        );
    }
    checks.target(
        "at least 10,000 authenticated req/s on a route without a database",
        caller_route.rps() >= 10_000.0,
        format!("{:.0} req/s", caller_route.rps()),
    );
    drop(platform);
    for generator in [generator, generator_direct] {
        if let Ok(generator) = Arc::try_unwrap(generator) {
            generator.runtime.shutdown_background();
        }
    }
    checks.finish();
}
