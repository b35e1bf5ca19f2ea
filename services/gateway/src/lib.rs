//! The gateway: the one public HTTP entry point. It owns no data. It validates Auth0 access
//! tokens, resolves the person through identity, rate-limits, and forwards each `/api/…`
//! request to the service that owns it with the caller's identity in signed headers
//! ([`proxy`]). It serves the console's pages on the other paths, which get their data through
//! the same forwarding as the signed-in person ([`console`]). `/readyz` checks the tenant and
//! every service it routes to.

pub mod api_doc;
pub mod callers;
pub mod console;
pub mod error;
pub mod limits;
pub mod proxy;
pub mod session;
pub mod tokens;

use actix_web::web;
use futures::future::BoxFuture;
use hopsbridge_contracts::Service;
use hopsbridge_platform::config::{
    ConfigError, GatewayAuthConfig, HttpConfig, ServiceSettings, ShutdownConfig, TelemetryConfig, Validate,
};
use hopsbridge_platform::http::ReadinessCheck;
use hopsbridge_platform::service::Application;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// This service.
pub const SERVICE: Service = Service::Gateway;

/// Built-in configuration.
pub const DEFAULTS: [&str; 1] = [include_str!("../config/default.toml")];

/// Base URLs of the services behind the gateway.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstreams {
    /// identity, e.g. `http://127.0.0.1:8081`.
    pub identity: String,
    /// team.
    pub team: String,
    /// provisioning.
    pub provisioning: String,
    /// metering.
    pub metering: String,
    /// billing.
    pub billing: String,
}

impl Upstreams {
    fn all(&self) -> [(&'static str, &str); 5] {
        [
            ("identity", &self.identity),
            ("team", &self.team),
            ("provisioning", &self.provisioning),
            ("metering", &self.metering),
            ("billing", &self.billing),
        ]
    }
}

/// The gateway's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The public listener.
    pub http: HttpConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Shutdown.
    pub shutdown: ShutdownConfig,
    /// The services behind the gateway.
    pub upstreams: Upstreams,
    /// The Auth0 tenant whose access tokens open the API.
    pub auth0: Auth0Config,
    /// The private key caller headers are signed with (only the gateway holds it).
    pub auth: GatewayAuthConfig,
    /// Admin access for machine clients.
    pub admin: AdminConfig,
    /// Rate limits and caching.
    pub limits: LimitsConfig,
    /// Cross-origin requests from the frontend.
    pub cors: CorsConfig,
    /// Browser login.
    pub login: session::LoginConfig,
    /// The calendar clock. The gateway has no calendar logic: token, session and login expiry
    /// are Auth0's and the browser's, in real time (decision 0037); it follows a simulated
    /// clock only to say so at `/readyz`, as every service does.
    pub clock: hopsbridge_platform::clock::ClockConfig,
}

/// The Auth0 tenant.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth0Config {
    /// The tenant's issuer, with its trailing slash, e.g. `https://hopsbridge.eu.auth0.com/`.
    pub issuer: String,
    /// Our API identifier, which access tokens must carry in `aud`.
    pub audience: String,
    /// Least seconds between JWKS refetches caused by unknown key ids.
    pub jwks_refetch_interval_secs: u64,
}

/// Who may use the admin routes without being a person.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Auth0 client ids, comma-separated, whose client-credentials tokens are admin service
    /// principals; empty grants none.
    pub machine_clients: String,
}

impl AdminConfig {
    /// The granted client ids.
    #[must_use]
    pub fn clients(&self) -> std::collections::HashSet<String> {
        self.machine_clients.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
    }
}

/// Rate limits and the caller cache.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests a minute per person (bursts of a sixth of it).
    pub per_user_per_minute: u64,
    /// Requests a minute per client address, before authentication.
    pub per_ip_per_minute: u64,
    /// Seconds a resolved caller (status, roles) is reused before asking identity again.
    pub caller_cache_secs: u64,
}

/// CORS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// The frontend's origin, e.g. `https://app.hopsbridge.example`; empty allows none.
    pub allowed_origin: String,
}

impl Validate for GatewayConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        self.http.validate(service)?;
        if !(self.auth0.issuer.starts_with("https://") || self.auth0.issuer.starts_with("http://"))
            || !self.auth0.issuer.ends_with('/')
        {
            return Err(ConfigError::new(service, "auth0.issuer", "must be the tenant URL with its trailing slash"));
        }
        self.auth.validate(service)?;
        self.clock.validate(service)?;
        if self.auth0.audience.is_empty() {
            return Err(ConfigError::new(service, "auth0.audience", "missing"));
        }
        if !self.login.client_id.is_empty() {
            if self.login.cookie_key.expose().len() < 32 {
                return Err(ConfigError::new(service, "login.cookie_key", "must be at least 32 characters"));
            }
            if !(self.login.callback_url.starts_with("https://") || self.login.callback_url.starts_with("http://")) {
                return Err(ConfigError::new(service, "login.callback_url", "must be an http(s) URL"));
            }
        }
        if self.admin.clients().iter().any(|c| c.chars().any(|ch| ch.is_whitespace() || ch == '@')) {
            return Err(ConfigError::new(
                service,
                "admin.machine_clients",
                "must be Auth0 client ids separated by commas (the id, not `<id>@clients`)",
            ));
        }
        if self.limits.per_user_per_minute == 0 || self.limits.per_ip_per_minute == 0 {
            return Err(ConfigError::new(service, "limits.per_user_per_minute", "limits must be at least 1"));
        }
        for (name, url) in self.upstreams.all() {
            if proxy::Upstream::new(url).is_none() {
                return Err(ConfigError::new(service, &format!("upstreams.{name}"), "must be an http(s) URL"));
            }
        }
        Ok(())
    }
}

impl ServiceSettings for GatewayConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }

    fn database(&self) -> Option<&hopsbridge_platform::config::DatabaseConfig> {
        None
    }
}

/// Readiness of one upstream: its `/healthz` answers 2xx.
struct UpstreamCheck {
    name: &'static str,
    url: String,
    client: reqwest::Client,
}

impl ReadinessCheck for UpstreamCheck {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self.client.get(&self.url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("answered {}", r.status().as_u16())),
                Err(_) => Err("unreachable".to_owned()),
            }
        })
    }
}

/// Readiness of the Auth0 tenant: discovery and the JWKS were read.
struct TenantCheck(Arc<tokens::LazyValidator>);

impl ReadinessCheck for TenantCheck {
    fn name(&self) -> &'static str {
        "auth0"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.get().await.map(|_| ()).map_err(|_| "unreachable".to_owned()) })
    }
}

/// Binds the gateway; run it with [`Application::run_until_stopped`].
///
/// # Errors
/// When the HTTP client or the port cannot be set up.
pub async fn build(config: GatewayConfig) -> anyhow::Result<Application> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let mut checks: Vec<Arc<dyn ReadinessCheck>> = config
        .upstreams
        .all()
        .into_iter()
        .map(|(name, base)| {
            Arc::new(UpstreamCheck {
                name,
                url: format!("{}/healthz", base.trim_end_matches('/')),
                client: client.clone(),
            }) as Arc<dyn ReadinessCheck>
        })
        .collect();
    let key = config.auth.signer()?;
    let login_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    // Checked once here, so that building one per worker below cannot fail.
    proxy::WorkerClient::build()?;
    let tokens = Arc::new(tokens::LazyValidator::new(
        &config.auth0.issuer,
        &config.auth0.audience,
        Duration::from_secs(config.auth0.jwks_refetch_interval_secs),
    ));
    let login = if config.login.client_id.is_empty() {
        None
    } else {
        let (issuer, audience) = (&config.auth0.issuer, &config.auth0.audience);
        Some(Arc::new(
            session::Login::new(config.login.clone(), issuer, audience, login_client, Arc::clone(&tokens))?
                .announcing_to(&config.upstreams.identity, key.clone()),
        ))
    };
    let proxy = Arc::new(proxy::Proxy::new(
        proxy::Routes::new(&config.upstreams)
            .ok_or_else(|| anyhow::anyhow!("an upstream URL does not parse (validated at load)"))?,
        Arc::clone(&tokens),
        key,
        &config.limits,
        config.http.max_body_bytes,
        login.as_ref().map(|login| login.sealer.clone()),
        config.admin.clients(),
    ));
    let console: Arc<dyn hopsbridge_console::Backend> = Arc::new(console::ConsoleBackend::new(Arc::clone(&proxy)));
    checks.push(Arc::new(TenantCheck(tokens)));
    checks.extend(hopsbridge_platform::clock::Clock::from_config(&config.clock).await?.readiness());
    let data = web::Data::from(proxy);
    let origin = config.cors.allowed_origin.clone();
    // The main listener is the internet's: `/metrics` only on `http.metrics_port`, when set.
    Application::with_metrics(
        SERVICE,
        &config.http,
        &config.shutdown,
        checks,
        hopsbridge_platform::metrics::Metrics::public(SERVICE),
        Arc::new(move |c: &mut web::ServiceConfig| {
            let mut cors = actix_cors::Cors::default()
                .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
                .allowed_headers(["authorization", "content-type", "x-request-id", "x-csrf-token"])
                .expose_headers(["x-request-id", "retry-after"])
                .supports_credentials()
                .max_age(3600);
            if !origin.is_empty() {
                cors = cors.allowed_origin(&origin);
            }
            let mut api = web::scope("/api").wrap(cors).route(
                "/openapi.json",
                web::get().to(|| async {
                    actix_web::HttpResponse::Ok().content_type("application/json").body(api_doc::OPENAPI_JSON)
                }),
            );
            api = api.route("/auth/caller", web::get().to(proxy::caller));
            if let Some(login) = &login {
                api = api
                    .app_data(web::Data::from(Arc::clone(login)))
                    .route("/auth/login", web::get().to(session::login))
                    .route("/auth/callback", web::get().to(session::callback))
                    .route("/auth/session", web::get().to(session::current))
                    .route("/auth/logout", web::get().to(session::logout));
            }
            // This closure runs once per worker thread: each gets its own client.
            if let Ok(client) = proxy::WorkerClient::build() {
                c.app_data(web::Data::new(client));
            }
            c.app_data(data.clone())
                .route("/webhooks/auth0/post-registration", web::post().to(proxy::forward_webhook))
                .route("/webhooks/stripe", web::post().to(proxy::forward_webhook))
                .service(api.default_service(web::to(proxy::forward)));
            // The console's pages, on every path outside /api and /webhooks.
            hopsbridge_console::configure(c, Arc::clone(&console));
        }),
    )
}
