//! `just bench gateway`: what the gateway costs, measured with oha against in-process services.
//!
//! Setup (one process, release build): identity on a template-cloned database and the local
//! NATS, the sandbox's Auth0 tenant, and the gateway in front (2 workers each, rate limits out
//! of the way, callers cached for the default 10 s). oha runs as a separate process on the
//! same 2-core machine.
//!
//! 1. `GET /api/me` straight to identity (with headers signed as the gateway signs them) and
//!    the same request through the gateway with an Auth0 bearer token, each at a steady
//!    2,000 req/s over 16 connections, in `SLICES` (default 20) pairs of `SLICE_MS` (default
//!    2,500 ms) slices that alternate which of the two goes first. The p50/p99 of each are
//!    taken over all of its slices' requests (100,000 with the defaults), so a few seconds in
//!    which the machine is busy with something else land on both sides alike instead of
//!    deciding one side of one long run. Target: the gateway adds at most 1 ms at p99.
//! 2. `GET /api/auth/caller` through the gateway (authenticated, answered without a database)
//!    as fast as 64 connections go for 10 s (target: at least 10,000 req/s), against the
//!    baseline of identity's `GET /healthz` (no authentication, no database) in the same run.
//!
//! `WORKERS=n` gives identity and the gateway n actix workers each instead of 2, and
//! `GATEWAY_WORKERS=n` the gateway alone;
//! `CALLER_CACHE_SECS=n` keeps the gateway's answers about callers n seconds instead of 10;
//! `DUMP_DIR=dir` writes every oha run's per-request CSV there, numbered in the order they ran.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    clippy::panic,
    reason = "a benchmark reporting on stdout"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Options, Platform};
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_sandbox::auth0::{TestUser, TokenSpec};
use hopsbridge_testkit::GATEWAY_SIGNING_KEY;
use std::path::PathBuf;
use std::process::Command;

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

    fn new(secs: f64, mut durations_ms: Vec<f64>, ok: usize) -> Self {
        durations_ms.sort_by(f64::total_cmp);
        Self { secs, durations_ms, ok }
    }

    /// Pools the requests of several runs.
    fn pooled(runs: &[Self]) -> Self {
        Self::new(
            runs.iter().map(|l| l.secs).sum(),
            runs.iter().flat_map(|l| l.durations_ms.iter().copied()).collect(),
            runs.iter().map(|l| l.ok).sum(),
        )
    }

    /// The `q` quantile (0..=1) of the durations, by nearest rank.
    fn quantile(&self, q: f64) -> f64 {
        let sorted = &self.durations_ms;
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

fn oha() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = PathBuf::from(home).join(".cargo/bin/oha");
    if cargo_bin.exists() { cargo_bin } else { PathBuf::from("oha") }
}

/// Runs oha for `millis` and reads the duration and status of every request from its CSV.
fn run_oha(url: &str, headers: &[(String, String)], rate: Option<u32>, connections: u32, millis: u64) -> Load {
    let mut cmd = Command::new(oha());
    cmd.args(["-z", &format!("{millis}ms"), "-c", &connections.to_string(), "--no-tui", "--output-format", "csv"]);
    if let Some(rate) = rate {
        cmd.args(["-q", &rate.to_string()]);
    }
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(url);
    let out = cmd.output().expect("run oha (just bench gateway installs it with cargo install oha)");
    assert!(out.status.success(), "oha failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("oha writes UTF-8");
    if let Ok(dir) = std::env::var("DUMP_DIR") {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let kind = if headers.iter().any(|(k, _)| k == "authorization") { "through" } else { "direct" };
        std::fs::write(format!("{dir}/{n:03}-{kind}.csv"), &text).unwrap();
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
    Load::new(millis as f64 / 1000.0, durations_ms, ok)
}

fn report(name: &str, l: &Load) {
    println!(
        "{name:<52} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} of {} answered 200)",
        l.rps(),
        l.quantile(0.50),
        l.quantile(0.99),
        l.ok,
        l.durations_ms.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let workers = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    let platform = Platform::start(Options {
        per_user_per_minute: 1_000_000_000,
        per_ip_per_minute: 1_000_000_000,
        workers,
        gateway_workers: std::env::var("GATEWAY_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(workers),
        log_filter: "error",
        caller_cache_secs: std::env::var("CALLER_CACHE_SECS").ok().and_then(|w| w.parse().ok()).unwrap_or(10),
        ..Options::default()
    })
    .await;
    let (tenant, gateway_url, identity_url) = (&platform.tenant, platform.gateway.clone(), platform.identity.clone());

    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let token = tenant.access_token(&TokenSpec::user(&ada)).unwrap();
    let bearer = vec![("authorization".to_owned(), format!("Bearer {token}"))];
    let me: serde_json::Value = reqwest::Client::new()
        .get(format!("{gateway_url}/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_id = me["id"].as_str().unwrap().parse().unwrap();
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let caller = Caller {
        subject: "auth0|ada".into(),
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: Some(user_id),
        roles: vec![Role::User, Role::Owner],
        email: hopsbridge_domain::Email::parse("ada@example.com").ok(),
    };
    let signed = |at: i64| -> Vec<(String, String)> {
        key.sign("GET", "/api/me", &caller, at).into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    };

    let slices: usize = std::env::var("SLICES").ok().and_then(|r| r.parse().ok()).unwrap_or(20).max(1);
    let slice_ms: u64 = std::env::var("SLICE_MS").ok().and_then(|r| r.parse().ok()).unwrap_or(2_500).max(500);
    println!(
        "gateway benchmark: oha on the same 2 cores as the gateway, identity, Postgres and NATS; \
         GET /api/me at 2,000 req/s, 16 connections, {slices} slices of {slice_ms} ms each way, interleaved"
    );
    let (mut direct_runs, mut through_runs) = (Vec::new(), Vec::new());
    for slice in 0..slices {
        let direct = || {
            let url = format!("{identity_url}/api/me");
            // Signed 20 s ahead of now, within the services' allowed clock skew for the slice.
            let headers = signed(chrono::Utc::now().timestamp() + 20);
            tokio::task::spawn_blocking(move || run_oha(&url, &headers, Some(2_000), 16, slice_ms))
        };
        let through = || {
            let url = format!("{gateway_url}/api/me");
            let headers = bearer.clone();
            tokio::task::spawn_blocking(move || run_oha(&url, &headers, Some(2_000), 16, slice_ms))
        };
        if slice % 2 == 0 {
            direct_runs.push(direct().await.unwrap());
            through_runs.push(through().await.unwrap());
        } else {
            through_runs.push(through().await.unwrap());
            direct_runs.push(direct().await.unwrap());
        }
    }
    let slice_p99s = |runs: &[Load]| {
        let mut p99s: Vec<f64> = runs.iter().map(|l| l.quantile(0.99)).collect();
        p99s.sort_by(f64::total_cmp);
        format!("{:.2}–{:.2} ms", p99s[0], p99s[p99s.len() - 1])
    };
    let (direct, through) = (Load::pooled(&direct_runs), Load::pooled(&through_runs));
    report("GET /api/me straight to identity @2000/s, all slices", &direct);
    report("GET /api/me through the gateway @2000/s, all slices", &through);
    println!(
        "p99 of single slices: straight {}, through the gateway {}",
        slice_p99s(&direct_runs),
        slice_p99s(&through_runs)
    );
    let added = through.quantile(0.99) - direct.quantile(0.99);
    println!(
        "gateway adds at p99: {added:.2} ms (p50: {:.2} ms); target at most 1 ms: {}",
        through.quantile(0.50) - direct.quantile(0.50),
        if added <= 1.0 { "met" } else { "NOT met" }
    );

    let baseline = tokio::task::spawn_blocking({
        let url = format!("{identity_url}/healthz");
        move || run_oha(&url, &[], None, 64, 10_000)
    })
    .await
    .unwrap();
    report("GET /healthz on identity (baseline), max", &baseline);
    let caller_route = tokio::task::spawn_blocking({
        let url = format!("{gateway_url}/api/auth/caller");
        let headers = bearer.clone();
        move || run_oha(&url, &headers, None, 64, 10_000)
    })
    .await
    .unwrap();
    report("GET /api/auth/caller through the gateway, max", &caller_route);
    println!(
        "authenticated no-database route: {:.0} req/s = {:.2}x the unauthenticated baseline; target at least 10000 req/s: {}",
        caller_route.rps(),
        caller_route.rps() / baseline.rps().max(1.0),
        if caller_route.rps() >= 10_000.0 { "met" } else { "NOT met" }
    );
    drop(platform);
}
