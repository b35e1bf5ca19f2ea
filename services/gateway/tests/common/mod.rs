//! The gateway in front of a real identity service on the real Postgres and NATS, with the
//! sandbox's Auth0 tenant; every other upstream points at identity too.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use hopsbridge_contracts::Service;
use hopsbridge_sandbox::auth0::{ADMIN_CLIENT_ID, Auth0Config, Auth0Sim, TestUser, TokenSpec};
use hopsbridge_testkit::{TcpProxy, TestBus, TestDb, TestSettings, WEBHOOK_SECRET};
use tokio_util::sync::CancellationToken;

/// The running pieces.
pub struct Platform {
    /// The gateway's base URL.
    pub gateway: String,
    /// identity's base URL (reached directly only by tests of the trust between them).
    pub identity: String,
    /// The Auth0 tenant.
    pub tenant: Auth0Sim,
    /// identity's database.
    pub db: TestDb,
    /// With [`Options::cuttable_upstreams`], the link the gateway reaches identity through.
    pub identity_link: Option<TcpProxy>,
    /// With [`Options::cuttable_upstreams`], the link the gateway reaches every other
    /// upstream through (all of them identity in these tests).
    pub services_link: Option<TcpProxy>,
    _bus: TestBus,
    stop: CancellationToken,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Settings a test or the benchmark changes.
pub struct Options {
    /// Requests a minute per person.
    pub per_user_per_minute: u64,
    /// Requests a minute per client address.
    pub per_ip_per_minute: u64,
    /// Browser login on.
    pub login: bool,
    /// actix workers of identity.
    pub workers: u16,
    /// actix workers of the gateway.
    pub gateway_workers: u16,
    /// The log filter of both.
    pub log_filter: &'static str,
    /// Seconds the gateway reuses a resolved caller (0: ask identity every time, so tests see
    /// changes at once).
    pub caller_cache_secs: u64,
    /// Upstreams reached through links a test can cut ([`Platform::identity_link`],
    /// [`Platform::services_link`]).
    pub cuttable_upstreams: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            per_user_per_minute: 600,
            per_ip_per_minute: 1200,
            login: false,
            workers: 1,
            gateway_workers: 1,
            log_filter: "info",
            caller_cache_secs: 0,
            cuttable_upstreams: false,
        }
    }
}

/// The frontend application's client in the tenant.
pub const CLIENT: &str = "hopsbridge-frontend";

impl Platform {
    /// Starts identity, the tenant and the gateway.
    pub async fn start(options: Options) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = TestDb::new().await;
        let bus = TestBus::new().await;
        let stop = CancellationToken::new();

        let config = TestSettings::data_service(Service::Identity, &db, &bus)
            .set("http.workers", options.workers.to_string())
            .set("telemetry.log_filter", options.log_filter)
            .set("webhook.secret", WEBHOOK_SECRET)
            .load(&hopsbridge_identity::DEFAULTS);
        let identity = hopsbridge_identity::build(config).await.unwrap();
        let identity_url = format!("http://127.0.0.1:{}", identity.port());
        tokio::spawn(identity.run_until_stopped(stop.clone()));

        let tenant = Auth0Sim::start(Auth0Config::default()).unwrap();
        let port = hopsbridge_testkit::free_port();
        let gateway_url = format!("http://127.0.0.1:{port}");
        let mut settings = TestSettings::new(Service::Gateway)
            .set("http.port", port.to_string())
            .set("auth0.issuer", tenant.issuer())
            .set("http.workers", options.gateway_workers.to_string())
            .set("telemetry.log_filter", options.log_filter)
            .set("limits.per_user_per_minute", options.per_user_per_minute.to_string())
            .set("limits.per_ip_per_minute", options.per_ip_per_minute.to_string())
            .set("limits.caller_cache_secs", options.caller_cache_secs.to_string())
            .set("cors.allowed_origin", "https://app.hopsbridge.example")
            .set("admin.machine_clients", ADMIN_CLIENT_ID);
        if options.login {
            let cfg = Auth0Config::default();
            tenant.allow_urls(&format!("{gateway_url}/api/auth/callback"), &format!("{gateway_url}/"));
            settings = settings
                .set("login.client_id", cfg.client_id)
                .set("login.client_secret", cfg.client_secret)
                .set("login.callback_url", format!("{gateway_url}/api/auth/callback"))
                .set("login.post_logout_url", format!("{gateway_url}/"))
                .set("login.cookie_key", "a-cookie-sealing-key-of-32-bytes-or-more");
        }
        let (identity_link, services_link) = if options.cuttable_upstreams {
            let target = identity_url.trim_start_matches("http://");
            (Some(TcpProxy::start(target).await), Some(TcpProxy::start(target).await))
        } else {
            (None, None)
        };
        let through =
            |link: &Option<TcpProxy>| link.as_ref().map_or(identity_url.clone(), |l| format!("http://{}", l.addr()));
        settings = settings.set("upstreams.identity", through(&identity_link));
        for name in ["team", "provisioning", "metering", "billing"] {
            settings = settings.set(&format!("upstreams.{name}"), through(&services_link));
        }
        let gateway = hopsbridge_gateway::build(settings.load(&hopsbridge_gateway::DEFAULTS)).await.unwrap();
        tokio::spawn(gateway.run_until_stopped(stop.clone()));
        Self { gateway: gateway_url, identity: identity_url, tenant, db, identity_link, services_link, _bus: bus, stop }
    }

    /// `GET path` with request id `req-7` and an optional bearer token.
    pub async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (reqwest::StatusCode, serde_json::Value, reqwest::header::HeaderMap) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.gateway)).header("x-request-id", "req-7");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, response.json().await.unwrap_or(serde_json::Value::Null), headers)
    }

    /// An access token for `user`.
    pub fn token(&self, user: &TestUser) -> String {
        self.tenant.access_token(&TokenSpec::user(user)).unwrap()
    }

    /// Runs SQL in identity's schema.
    pub async fn sql(&self, statement: &str) {
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.connect("identity").await;
        diesel::sql_query(statement).execute(&mut conn).await.unwrap();
    }
}

/// Sends `request_line` as written (no client-side path normalization) with a bearer token and
/// answers the status and the JSON body.
pub async fn raw(gateway: &str, request_line: &str, token: &str) -> (u16, serde_json::Value) {
    let headers = format!("authorization: Bearer {token}\r\ncontent-length: 0\r\n");
    raw_request(gateway, request_line, &headers, b"", false).await
}

/// Sends `request_line`, `headers` (each ending in CRLF) and `body` exactly as written, then
/// with `hang_up` closes the sending side (a body shorter than its content-length is then cut
/// short), and answers the status and the JSON body.
pub async fn raw_request(
    gateway: &str,
    request_line: &str,
    headers: &str,
    body: &[u8],
    hang_up: bool,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = gateway.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!("{request_line} HTTP/1.1\r\nhost: {address}\r\n{headers}connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    if hang_up {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}
