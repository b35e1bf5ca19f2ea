//! identity's settings: the shared data-service settings plus the Auth0 webhook secret.

use hopsbridge_contracts::Service;
use hopsbridge_platform::Secret;
use hopsbridge_platform::config::{
    AuthConfig, ConfigError, DataServiceConfig, DatabaseConfig, EventsConfig, HttpConfig, NatsConfig, ServiceSettings,
    ShutdownConfig, TelemetryConfig, Validate,
};
use serde::Deserialize;

/// identity's settings: the sections every data service has, plus `webhook`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The HTTP listener.
    pub http: HttpConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Shutdown.
    pub shutdown: ShutdownConfig,
    /// Postgres.
    pub database: DatabaseConfig,
    /// NATS.
    pub nats: NatsConfig,
    /// Outbox relay and consumers.
    pub events: EventsConfig,
    /// Trust in the gateway.
    pub auth: AuthConfig,
    /// The post-registration webhook.
    pub webhook: WebhookConfig,
}

impl IdentityConfig {
    /// The sections every data service has.
    #[must_use]
    pub fn base(&self) -> DataServiceConfig {
        DataServiceConfig {
            http: self.http.clone(),
            telemetry: self.telemetry.clone(),
            shutdown: self.shutdown.clone(),
            database: self.database.clone(),
            nats: self.nats.clone(),
            events: self.events.clone(),
            auth: self.auth.clone(),
        }
    }
}

/// The Auth0 post-registration webhook.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The shared secret the Auth0 Action sends in `x-auth0-webhook-secret` (at least 16
    /// characters). Required.
    pub secret: Secret<String>,
}

impl Validate for IdentityConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        self.base().validate(service)?;
        if self.webhook.secret.expose().len() < 16 {
            return Err(ConfigError::new(service, "webhook.secret", "must be at least 16 characters"));
        }
        Ok(())
    }
}

impl ServiceSettings for IdentityConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }

    fn database(&self) -> Option<&DatabaseConfig> {
        Some(&self.database)
    }
}
