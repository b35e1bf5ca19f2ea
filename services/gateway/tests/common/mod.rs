//! The gateway in front of a real identity service on the real Postgres and NATS, with the
//! sandbox's Auth0 tenant; every other upstream points at identity too.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use hopsbridge_contracts::Service;
use hopsbridge_platform::config::env_var;
use hopsbridge_sandbox::auth0::{Auth0Config, Auth0Sim, TestUser, TokenSpec};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, WEBHOOK_SECRET};
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

        let id = |k: &str, v: &str| (env_var(Service::Identity, k), v.to_owned());
        let env = vec![
            id("database.url", db.url()),
            id("nats.url", bus.url()),
            id("nats.prefix", bus.prefix()),
            id("http.port", "0"),
            id("http.workers", &options.workers.to_string()),
            id("telemetry.log_filter", options.log_filter),
            id("auth.gateway_signing_key", GATEWAY_SIGNING_KEY),
            id("webhook.secret", WEBHOOK_SECRET),
        ];
        let config =
            hopsbridge_platform::config::load_from(Service::Identity, &hopsbridge_identity::DEFAULTS, None, env)
                .unwrap();
        let identity = hopsbridge_identity::build(config).await.unwrap();
        let identity_url = format!("http://127.0.0.1:{}", identity.port());
        tokio::spawn(identity.run_until_stopped(stop.clone()));

        let tenant = Auth0Sim::start(Auth0Config::default()).unwrap();
        let port = hopsbridge_testkit::free_port();
        let gateway_url = format!("http://127.0.0.1:{port}");
        let gw = |k: &str, v: &str| (env_var(Service::Gateway, k), v.to_owned());
        let mut env = vec![
            gw("http.port", &port.to_string()),
            gw("auth0.issuer", &tenant.issuer()),
            gw("auth.gateway_signing_key", GATEWAY_SIGNING_KEY),
            gw("http.workers", &options.gateway_workers.to_string()),
            gw("telemetry.log_filter", options.log_filter),
            gw("limits.per_user_per_minute", &options.per_user_per_minute.to_string()),
            gw("limits.per_ip_per_minute", &options.per_ip_per_minute.to_string()),
            gw("limits.caller_cache_secs", &options.caller_cache_secs.to_string()),
            gw("cors.allowed_origin", "https://app.hopsbridge.example"),
        ];
        if options.login {
            let cfg = Auth0Config::default();
            tenant.allow_urls(&format!("{gateway_url}/api/auth/callback"), &format!("{gateway_url}/"));
            env.extend([
                gw("login.client_id", &cfg.client_id),
                gw("login.client_secret", &cfg.client_secret),
                gw("login.callback_url", &format!("{gateway_url}/api/auth/callback")),
                gw("login.post_logout_url", &format!("{gateway_url}/")),
                gw("login.cookie_key", "a-cookie-sealing-key-of-32-bytes-or-more"),
            ]);
        }
        for name in ["identity", "team", "provisioning", "metering", "billing"] {
            env.push(gw(&format!("upstreams.{name}"), &identity_url));
        }
        let config =
            hopsbridge_platform::config::load_from(Service::Gateway, &hopsbridge_gateway::DEFAULTS, None, env).unwrap();
        let gateway = hopsbridge_gateway::build(config).await.unwrap();
        tokio::spawn(gateway.run_until_stopped(stop.clone()));
        Self { gateway: gateway_url, identity: identity_url, tenant, db, _bus: bus, stop }
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
