//! The gateway: the one public HTTP entry point. It owns no data; it will validate Auth0
//! tokens, rate-limit and route each request to the service that owns it. Today it serves its
//! health endpoints, and `/readyz` checks that every service it routes to answers.

pub mod tokens;

use futures::future::BoxFuture;
use hopsbridge_contracts::Service;
use hopsbridge_platform::config::{
    ConfigError, HttpConfig, ServiceSettings, ShutdownConfig, TelemetryConfig, Validate,
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
}

impl Validate for GatewayConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        self.http.validate(service)?;
        for (name, url) in self.upstreams.all() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
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

/// Binds the gateway; run it with [`Application::run_until_stopped`].
///
/// # Errors
/// When the HTTP client or the port cannot be set up.
pub async fn build(config: GatewayConfig) -> anyhow::Result<Application> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let checks: Vec<Arc<dyn ReadinessCheck>> = config
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
    Application::new(SERVICE, &config.http, &config.shutdown, checks, Arc::new(|_routes| {}))
}
