//! identity's settings: the shared data-service settings plus the Auth0 webhook secret, the
//! Auth0 tenant whose people the webhook announces, and where the team service answers.

use hopsbridge_contracts::Service;
use hopsbridge_platform::Secret;
use hopsbridge_platform::config::{ConfigError, Validate};
use serde::Deserialize;

hopsbridge_platform::data_service_config! {
    /// identity's settings: the sections every data service has, plus `webhook`, `auth0` and
    /// `team`.
    pub struct IdentityConfig {
        /// The post-registration webhook.
        pub webhook: WebhookConfig,
        /// The Auth0 tenant.
        pub auth0: TenantConfig,
        /// The team service's internal API.
        pub team: TeamApiConfig,
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

/// The Auth0 tenant whose post-registration Action calls the webhook.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's issuer with its trailing slash (the gateway's `auth0.issuer`): the people
    /// the webhook announces are `(issuer, user_id)`. Empty: the issuer the gateway that
    /// forwarded the Action vouches for, signed; a webhook with neither is refused.
    pub issuer: String,
}

impl TenantConfig {
    /// The configured issuer, if one is.
    #[must_use]
    pub fn issuer(&self) -> Option<&str> {
        Some(self.issuer.as_str()).filter(|i| !i.is_empty())
    }
}

/// The team service's internal API, asked before an owner's account is deleted.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamApiConfig {
    /// Base URL, e.g. `http://127.0.0.1:8082`.
    pub url: String,
    /// One request, in milliseconds.
    pub timeout_ms: u64,
}

impl Validate for IdentityConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        self.base().validate(service)?;
        if self.webhook.secret.expose().len() < 16 {
            return Err(ConfigError::new(service, "webhook.secret", "must be at least 16 characters"));
        }
        if let Some(issuer) = self.auth0.issuer()
            && !((issuer.starts_with("https://") || issuer.starts_with("http://")) && issuer.ends_with('/'))
        {
            return Err(ConfigError::new(service, "auth0.issuer", "must be the tenant URL with its trailing slash"));
        }
        let url = &self.team.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new(service, "team.url", "must be an http(s) URL"));
        }
        if self.team.timeout_ms == 0 {
            return Err(ConfigError::new(service, "team.timeout_ms", "must be at least 1"));
        }
        Ok(())
    }
}
