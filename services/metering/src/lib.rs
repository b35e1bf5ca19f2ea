//! The metering service: usage samples per cluster, namespace, user and UTC window.
//!
//! Its features arrive with their issues; today it is a complete service shell (configuration,
//! its Postgres schema with outbox and inbox, NATS, health endpoints and graceful shutdown) and
//! the core of collection as library modules: exact [`quantity`] parsing, exact [`usage`],
//! UTC-aligned [`window`]s and [`collect`]ing one cluster's window.

pub mod collect;
pub mod quantity;
pub mod usage;
pub mod window;

use hopsbridge_contracts::Service;
use hopsbridge_platform::config::{DATA_SERVICE_DEFAULTS, DataServiceConfig};
use hopsbridge_platform::db::{Migrations, migrations_for};
use hopsbridge_platform::service::{Application, DataService};
use std::sync::Arc;

/// This service.
pub const SERVICE: Service = Service::Metering;

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
