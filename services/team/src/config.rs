//! team's settings: the shared data-service settings plus invitations and terms.

use hopsbridge_contracts::Service;
use hopsbridge_platform::config::{ConfigError, Validate};
use serde::Deserialize;

hopsbridge_platform::data_service_config! {
    /// team's settings: the sections every data service has, plus `invitations` and `terms`.
    pub struct TeamConfig {
        /// Invitations.
        pub invitations: InvitationsConfig,
        /// The terms a person accepts when joining a team.
        pub terms: TermsConfig,
    }
}

/// Invitations.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitationsConfig {
    /// Hours an invitation's link works after each send (168: seven days), 1 to 8760.
    pub ttl_hours: u32,
}

impl InvitationsConfig {
    /// How long a link works.
    #[must_use]
    pub fn ttl(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::hours(i64::from(self.ttl_hours))
    }
}

/// The terms of team membership.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermsConfig {
    /// The current version (1-64 printable characters, e.g. `2026-12-01`); a join must accept
    /// exactly this one.
    pub version: String,
}

impl Validate for TeamConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        self.base().validate(service)?;
        if !(1..=8760).contains(&self.invitations.ttl_hours) {
            return Err(ConfigError::new(service, "invitations.ttl_hours", "must be 1 to 8760"));
        }
        let version = &self.terms.version;
        if version.is_empty() || version.len() > 64 || version.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ConfigError::new(service, "terms.version", "must be 1-64 characters without spaces"));
        }
        Ok(())
    }
}
