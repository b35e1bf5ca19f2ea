//! `just bench gateway`: what the gateway costs, measured with oha against in-process services.
//!
//! Setup (one process, release build): identity on a template-cloned database and the local
//! NATS, the sandbox's Auth0 tenant, and the gateway in front (2 workers each, rate limits out
//! of the way, callers cached for the default 10 s). oha runs as a separate process on the
//! same 2-core machine.
//!
//! 1. `GET /api/me` straight to identity (with headers signed as the gateway signs them) and
//!    the same request through the gateway with an Auth0 bearer token, each at a steady
//!    2,000 req/s for 10 s, in `ROUNDS` rounds (default 5) that alternate which goes first:
//!    p50/p99 of both and the difference in each round, and the median difference (target:
//!    the gateway adds at most 1 ms at p99). One 10 s run's p99 moves by several milliseconds
//!    on a 2-core machine, so one pair of runs decides nothing.
//! 2. `GET /api/auth/caller` through the gateway (authenticated, answered without a database)
//!    as fast as 64 connections go for 10 s (target: at least 10,000 req/s), against the
//!    baseline of identity's `GET /healthz` (no authentication, no database) in the same run.
//!
//! `WORKERS=n` gives identity and the gateway n actix workers each instead of 2.

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
use hopsbridge_platform::caller::{Caller, CallerKey, Role};
use hopsbridge_sandbox::auth0::{TestUser, TokenSpec};
use hopsbridge_testkit::GATEWAY_SIGNING_KEY;
use std::path::PathBuf;
use std::process::Command;

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    total: u64,
}

fn oha() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = PathBuf::from(home).join(".cargo/bin/oha");
    if cargo_bin.exists() { cargo_bin } else { PathBuf::from("oha") }
}

fn run_oha(url: &str, headers: &[(String, String)], rate: Option<u32>, connections: u32) -> Load {
    let mut cmd = Command::new(oha());
    cmd.args(["-z", "10s", "-c", &connections.to_string(), "--no-tui", "--output-format", "json"]);
    if let Some(rate) = rate {
        cmd.args(["-q", &rate.to_string()]);
    }
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(url);
    let out = cmd.output().expect("run oha (just bench gateway installs it with cargo install oha)");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("oha output: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let total: u64 = json["statusCodeDistribution"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(serde_json::Value::as_u64).sum());
    let ok = json["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
    Load {
        rps: json["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: json["latencyPercentiles"]["p50"].as_f64().unwrap_or(0.0) * 1000.0,
        p99_ms: json["latencyPercentiles"]["p99"].as_f64().unwrap_or(0.0) * 1000.0,
        ok,
        total,
    }
}

fn report(name: &str, l: &Load) {
    println!(
        "{name:<44} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} of {} answered 200)",
        l.rps, l.p50_ms, l.p99_ms, l.ok, l.total
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) { f64::midpoint(values[mid - 1], values[mid]) } else { values[mid] }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let platform = Platform::start(Options {
        per_user_per_minute: 1_000_000_000,
        per_ip_per_minute: 1_000_000_000,
        workers: std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2),
        log_filter: "error",
        caller_cache_secs: 10,
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
    let key = CallerKey::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let caller = Caller {
        subject: "auth0|ada".into(),
        user_id: Some(user_id),
        roles: vec![Role::User, Role::Owner],
        email: Some("ada@example.com".into()),
    };
    let signed = |at: i64| -> Vec<(String, String)> {
        key.sign("GET", "/api/me", &caller, at).into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    };

    println!("gateway benchmark: oha, 10 s per case, 2 cores shared by oha, the gateway, identity, Postgres and NATS");
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let (mut added_p99, mut added_p50) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let direct = || {
            let url = format!("{identity_url}/api/me");
            let headers = signed(chrono::Utc::now().timestamp() + 20);
            tokio::task::spawn_blocking(move || run_oha(&url, &headers, Some(2_000), 16))
        };
        let through = || {
            let url = format!("{gateway_url}/api/me");
            let headers = bearer.clone();
            tokio::task::spawn_blocking(move || run_oha(&url, &headers, Some(2_000), 16))
        };
        let (direct, through) = if round % 2 == 1 {
            let d = direct().await.unwrap();
            (d, through().await.unwrap())
        } else {
            let t = through().await.unwrap();
            (direct().await.unwrap(), t)
        };
        report(&format!("round {round}: GET /api/me straight to identity @2000/s"), &direct);
        report(&format!("round {round}: GET /api/me through the gateway @2000/s"), &through);
        added_p99.push(through.p99_ms - direct.p99_ms);
        added_p50.push(through.p50_ms - direct.p50_ms);
    }
    let rounds_p99: Vec<String> = added_p99.iter().map(|a| format!("{a:.2}")).collect();
    let added = median(&mut added_p99);
    println!(
        "gateway adds at p99: median {added:.2} ms over {rounds} rounds ({} ms; p50 median {:.2} ms); target at most 1 ms: {}",
        rounds_p99.join(", "),
        median(&mut added_p50),
        if added <= 1.0 { "met" } else { "NOT met" }
    );

    let baseline = tokio::task::spawn_blocking({
        let url = format!("{identity_url}/healthz");
        move || run_oha(&url, &[], None, 64)
    })
    .await
    .unwrap();
    report("GET /healthz on identity (baseline), max", &baseline);
    let caller_route = tokio::task::spawn_blocking({
        let url = format!("{gateway_url}/api/auth/caller");
        let headers = bearer.clone();
        move || run_oha(&url, &headers, None, 64)
    })
    .await
    .unwrap();
    report("GET /api/auth/caller through the gateway, max", &caller_route);
    println!(
        "authenticated no-database route: {:.0} req/s = {:.2}x the unauthenticated baseline; target at least 10000 req/s: {}",
        caller_route.rps,
        caller_route.rps / baseline.rps.max(1.0),
        if caller_route.rps >= 10_000.0 { "met" } else { "NOT met" }
    );
    drop(platform);
}
