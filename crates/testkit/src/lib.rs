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
//! - [`SelfChecks`]: a benchmark's self-checks (each fails the run) and targets (reported).
//!
//! Leftovers of crashed runs (databases and streams older than an hour) are swept away the
//! next time a test starts, since CI reuses the same servers.

#![allow(clippy::expect_used, clippy::panic, reason = "a test harness fails the test loudly")]

pub mod binary_checks;
mod bus;
mod checks;
mod db;
mod process;
mod proxy;
mod secrets;
mod settings;

pub use bus::{NatsServer, TestBus, free_port};
pub use checks::SelfChecks;
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

/// The gateway's Ed25519 private key (seed) in tests; services under test hold its public key.
pub const GATEWAY_SIGNING_KEY: &str = "b00b7f40840299c23b81e9f9705d142b2d6cb5e3a28b36514a147788c69d86a7";

/// Each service's own Ed25519 private key (seed) in tests: its credential for calling other
/// services' internal routes (the gateway's is [`GATEWAY_SIGNING_KEY`]).
#[must_use]
pub const fn service_key(service: hopsbridge_contracts::Service) -> &'static str {
    use hopsbridge_contracts::Service;
    match service {
        Service::Gateway => GATEWAY_SIGNING_KEY,
        Service::Identity => "035fd04fbaa16e66996b3ea8ff19a062eca2ba33b08c4ab6d508f2511ce97d29",
        Service::Team => "881a4fae43a911cf7c5946b057ee10c71bff72abdf33784f3561c2b22fa1d2dc",
        Service::Provisioning => "ac0f4370aa5db79bac89938c1cc3e5296a10834c9adb3147ac21a5fe055c8907",
        Service::Metering => "301e5047129dcfa3e21ea89aaddc356174d31d053dff25465006f988d7bc5a39",
        Service::Billing => "713a3533cbea3afa50265ffe69da219516cb15b2670873d89e96a424fb8556a6",
    }
}

/// The gateway's signer in tests: it vouches for people and machine admins.
#[must_use]
pub fn gateway_signer() -> hopsbridge_platform::caller::CallerSigner {
    service_signer(hopsbridge_contracts::Service::Gateway)
}

/// `service`'s own signer in tests (the gateway's for [`Service::Gateway`](hopsbridge_contracts::Service)).
#[must_use]
pub fn service_signer(service: hopsbridge_contracts::Service) -> hopsbridge_platform::caller::CallerSigner {
    hopsbridge_platform::caller::CallerSigner::new(&service_key(service).to_owned().into()).expect("a test key")
}

/// `service`'s public key in tests, as configuration takes it.
#[must_use]
pub fn public_key(service: hopsbridge_contracts::Service) -> String {
    service_signer(service).public_key().to_string()
}

/// What a service under test verifies callers with: the gateway's public key and every
/// service's (each route still names the services it serves).
#[must_use]
pub fn caller_verifier() -> hopsbridge_platform::caller::CallerVerifier {
    hopsbridge_contracts::Service::WITH_DATA
        .into_iter()
        .fold(hopsbridge_platform::caller::CallerVerifier::new(gateway_signer().public_key()), |verifier, service| {
            verifier.trusting(service, service_signer(service).public_key())
        })
}

/// The signer a caller's headers come from in production: a service signs for itself with its
/// own key, the gateway (`gateway`, so a test may use another key) for anyone else.
#[must_use]
pub fn signer_for(
    gateway: &hopsbridge_platform::caller::CallerSigner,
    caller: &hopsbridge_platform::caller::Caller,
) -> hopsbridge_platform::caller::CallerSigner {
    use hopsbridge_contracts::Service;
    let service = Service::WITH_DATA.into_iter().find(|s| caller.is_service(*s));
    service.map_or_else(|| gateway.clone(), service_signer)
}

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

/// Sends `method path` to the service at `base` with `caller`'s headers signed as production
/// signs them (none when `None`): by the gateway with `key` for a person, by the service
/// itself with its test key ([`signer_for`]) for a service; `body` as JSON, its digest signed.
/// Answers the status and the JSON answer (null when there is none).
pub async fn signed_call(
    key: &hopsbridge_platform::caller::CallerSigner,
    base: &str,
    method: reqwest::Method,
    path: &str,
    caller: Option<&hopsbridge_platform::caller::Caller>,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = reqwest::Client::new().request(method.clone(), format!("{base}{path}"));
    let body = body.map(|b| serde_json::to_vec(&b).expect("JSON serialises"));
    if let Some(caller) = caller {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let signer = signer_for(key, caller);
        for (name, value) in
            signer.sign_with_body(method.as_str(), path, body.as_deref().unwrap_or_default(), caller, now)
        {
            request = request.header(name, value);
        }
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// The Prometheus text the service at `base` serves at `/metrics`.
pub async fn scrape_metrics(base: &str) -> String {
    let answer = reqwest::get(format!("{base}/metrics")).await.expect("the service answers /metrics");
    answer.text().await.expect("a text answer")
}

/// The value of `series` (its name and labels as rendered, `service` last) in `exposition`.
///
/// # Panics
/// When no such series is there, or its value is no number.
#[must_use]
pub fn metric_value(exposition: &str, series: &str) -> f64 {
    let line = exposition
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no series {series} in\n{exposition}"));
    line[series.len()..].trim().parse().expect("a number")
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
