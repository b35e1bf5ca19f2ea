//! Test harness for Hopsbridge: real Postgres and real NATS, isolated per test.
//!
//! - [`TestDb`]: a database of its own per test, cloned in ~50 ms from a template that has
//!   every service's migrations applied (the template is rebuilt when a migration changes).
//! - [`TestBus`]: a subject and stream prefix of its own per test on the shared NATS server;
//!   its streams are deleted when it is dropped.
//! - [`NatsServer`]: a private `nats-server` that a test may stop and restart.
//! - [`TcpProxy`]: a TCP forwarder a test can cut and restore, to make Postgres or NATS
//!   unreachable for one service only.
//! - [`ServiceProcess`]: a service binary run as a real process.
//! - [`TestSettings`]: a service's settings for a test, loaded in process or passed to a
//!   process.
//! - [`SecretScan`]: finds the secrets a run used in its logs, answers or events.
//!
//! Leftovers of crashed runs (databases and streams older than an hour) are swept away the
//! next time a test starts, since CI reuses the same servers.

#![allow(clippy::expect_used, clippy::panic, reason = "a test harness fails the test loudly")]

pub mod binary_checks;
mod bus;
mod db;
mod process;
mod proxy;
mod secrets;
mod settings;

pub use bus::{NatsServer, TestBus, free_port};
pub use db::TestDb;
pub use process::ServiceProcess;
pub use proxy::TcpProxy;
pub use secrets::{Finding, SecretScan};
pub use settings::TestSettings;

use std::sync::Once;

/// Installs the TLS provider and a test log subscriber (`RUST_LOG`, default `warn`). Call at
/// the start of every test; repeated calls are harmless.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        hopsbridge_platform::install_crypto_provider();
        let cfg = hopsbridge_platform::config::TelemetryConfig {
            log_filter: "warn".to_owned(),
            json_logs: false,
            otlp_endpoint: String::new(),
        };
        let _ = hopsbridge_platform::telemetry::init("test", &cfg);
    });
}

/// What [`raw_http`] read back: the status, the `Allow` header and the body as JSON (`Null` when
/// it is not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct RawAnswer {
    /// The status code (0 when the answer was not HTTP).
    pub status: u16,
    /// The `Allow` header, if any.
    pub allow: Option<String>,
    /// The body.
    pub body: serde_json::Value,
}

/// Sends one request exactly as written (any method, any path, raw header lines each ending in
/// CRLF, the body bytes) to `base` (`http://host:port`) over a fresh connection, for what a
/// client library would refuse to send or would rewrite.
pub async fn raw_http(base: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> RawAnswer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write the head");
    stream.write_all(body).await.expect("write the body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read the answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    let allow = head.lines().find_map(|l| {
        l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("allow")).map(|(_, v)| v.trim().to_owned())
    });
    RawAnswer { status, allow, body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null) }
}

/// The key tests sign gateway caller headers with.
pub const GATEWAY_SIGNING_KEY: &str = "test-gateway-signing-key-0123456789abcdef";

/// The keys tests seal provisioning's cluster secrets with (`test1` is the one to make active).
pub const PROVISIONING_ENCRYPTION_KEYS: &str =
    "test1:dGVzdC1rZXktb25lLTMyLWJ5dGVzLWxvbmctLS0tLS0=,test2:dGVzdC1rZXktdHdvLTMyLWJ5dGVzLWxvbmctLS0tLS0=";

/// The secret tests' Auth0 Action sends to identity's webhook.
pub const WEBHOOK_SECRET: &str = "test-auth0-webhook-secret";

/// The Stripe secret key tests configure billing with (the sandbox is started with it).
pub const STRIPE_SECRET_KEY: &str = "sk_test_hopsbridge_0123456789abcdef";

/// The webhook signing secret tests configure billing and the Stripe sandbox with.
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_test_hopsbridge_0123456789";

/// The admin URL of the test Postgres server (`HOPSBRIDGE_TEST_DATABASE_URL`, default the
/// local server as user postgres).
#[must_use]
pub fn admin_database_url() -> String {
    std::env::var("HOPSBRIDGE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The URL of the shared test NATS server (`HOPSBRIDGE_TEST_NATS_URL`, default local).
#[must_use]
pub fn nats_url() -> String {
    std::env::var("HOPSBRIDGE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A short random lowercase hex string.
#[must_use]
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// Sends `method path` to the service at `base` with `caller`'s headers signed as the gateway
/// signs them (none when `None`) and `body` as JSON; answers the status and the JSON answer
/// (null when there is none).
pub async fn signed_call(
    key: &hopsbridge_platform::caller::CallerKey,
    base: &str,
    method: reqwest::Method,
    path: &str,
    caller: Option<&hopsbridge_platform::caller::Caller>,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = reqwest::Client::new().request(method.clone(), format!("{base}{path}"));
    if let Some(caller) = caller {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        for (name, value) in key.sign(method.as_str(), path, caller, now) {
            request = request.header(name, value);
        }
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs a future to completion on a runtime of its own, on another thread (for clean-up in
/// `Drop`, which may run inside or outside a runtime).
pub(crate) fn block_on_side<F>(f: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(f);
        }
    })
    .join();
    drop(joined);
}
