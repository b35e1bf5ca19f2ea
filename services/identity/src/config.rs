//! identity's settings: the shared data-service settings plus the Auth0 webhook secret.

use hopsbridge_contracts::Service;
use hopsbridge_platform::Secret;
use hopsbridge_platform::config::{ConfigError, Validate};
use serde::Deserialize;

hopsbridge_platform::data_service_config! {
    /// identity's settings: the sections every data service has, plus `webhook`.
    pub struct IdentityConfig {
        /// The post-registration webhook.
        pub webhook: WebhookConfig,
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
