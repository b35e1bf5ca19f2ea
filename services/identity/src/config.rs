//! identity's settings: the shared data-service settings plus the Auth0 webhook secret, the
//! Auth0 tenant whose people the webhook announces, where the team service answers, and how long
//! a deleted account's personal data is kept.

use hopsbridge_contracts::Service;
use hopsbridge_platform::Secret;
use hopsbridge_platform::config::{ConfigError, Validate};
use serde::Deserialize;

hopsbridge_platform::data_service_config! {
    /// identity's settings: the sections every data service has, plus `webhook`, `auth0`,
    /// `team` and `deletion`.
    pub struct IdentityConfig {
        /// The post-registration webhook.
        pub webhook: WebhookConfig,
        /// The Auth0 tenant.
        pub auth0: TenantConfig,
        /// The team service's internal API.
        pub team: TeamApiConfig,
        /// The retention of a deleted account's personal data.
        pub deletion: DeletionConfig,
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

/// How long a deleted account's personal data is kept before it is erased (decision 0058).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionConfig {
    /// Days from an account's deletion (calendar time) until its personal data is erased and
    /// `UserErasedV1` announces it. At least the outbox's retention (`events.retention_hours`),
    /// so no published event carrying the person's email outlives the erasure.
    pub retention_days: u32,
    /// How often the eraser looks for accounts whose retention has passed, in seconds.
    pub erase_interval_secs: u64,
}

impl DeletionConfig {
    /// The retention period.
    #[must_use]
    pub fn retention(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::days(i64::from(self.retention_days))
    }
}

/// The longest retention accepted: ten years.
const MAX_RETENTION_DAYS: u32 = 3650;

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
        let days = self.deletion.retention_days;
        if days == 0 || days > MAX_RETENTION_DAYS {
            return Err(ConfigError::new(service, "deletion.retention_days", "must be between 1 and 3650"));
        }
        if u64::from(days) * 24 < self.events.retention_hours {
            return Err(ConfigError::new(
                service,
                "deletion.retention_days",
                "must cover events.retention_hours (published events carrying the email are kept that long)",
            ));
        }
        if self.deletion.erase_interval_secs == 0 || self.deletion.erase_interval_secs > 86_400 {
            return Err(ConfigError::new(service, "deletion.erase_interval_secs", "must be between 1 and 86400"));
        }
        Ok(())
    }
}
