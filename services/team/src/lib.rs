//! The team service: invitations and memberships: who is on whose team.
//!
//! Its features arrive with their issues; today it is a complete service shell: configuration,
//! its Postgres schema with outbox and inbox, NATS, health endpoints and graceful shutdown.

use hopsbridge_contracts::Service;
use hopsbridge_platform::config::{DATA_SERVICE_DEFAULTS, DataServiceConfig};
use hopsbridge_platform::db::{Migrations, migrations_for};
use hopsbridge_platform::service::{Application, DataService};
use std::sync::Arc;

/// This service.
pub const SERVICE: Service = Service::Team;

/// Built-in configuration layers, later wins.
pub const DEFAULTS: [&str; 2] = [DATA_SERVICE_DEFAULTS, include_str!("../config/default.toml")];

/// The migrations this binary applies.
pub const MIGRATIONS: Migrations = migrations_for(SERVICE);

/// Connects everything and binds the HTTP server; run it with
/// [`Application::run_until_stopped`].
///
/// # Errors
/// When Postgres or NATS cannot be reached, a migration fails, or the port cannot be bound.
pub async fn build(config: DataServiceConfig) -> anyhow::Result<Application> {
    let service = DataService::connect(SERVICE, config, MIGRATIONS).await?;
    service.application(Arc::new(|_routes| {}))
}
