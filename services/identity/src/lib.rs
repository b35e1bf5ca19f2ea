//! The identity service: who people are. Users are keyed by their Auth0 issuer and subject
//! (a subject is unique only within its tenant), created once
//! (by the post-registration webhook or on their first authenticated call, whichever comes
//! first), and move between active, suspended and deleted; each change is announced through
//! the outbox (`UserCreatedV1`, `UserSuspendedV1`, `UserReactivatedV1`, `UserDeletedV1`), as
//! is each browser sign-in (`UserSignedInV1`).
//!
//! A suspension records who made it (an admin, billing's `AccountRestrictedV1`, or the owner's
//! own suspension reaching their members); lifting one undoes only its author's, and an owner's
//! suspension and reactivation reach every member of their team ([`users::suspend`]).
//!
//! It keeps each person's team membership as the team service announces it ([`memberships`],
//! [`events`]) to answer whose account a person belongs to, and asks the team service before
//! an owner's account is deleted ([`team`]).
//!
//! A deleted account's personal data is erased once `deletion.retention_days` have passed,
//! announced once with `UserErasedV1` for every service to erase its copies ([`erasure`]).

pub mod config;
pub mod erasure;
pub mod error;
pub mod events;
pub mod memberships;
pub mod metrics;
pub mod routes;
mod schema;
pub mod team;
pub mod users;

pub use config::IdentityConfig;

use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::{
    AccountRestrictedV1, AccountRestrictionLiftedV1, TeamMemberJoinedV1, TeamMemberRemovedV1,
};
use hopsbridge_platform::config::DATA_SERVICE_DEFAULTS;
use hopsbridge_platform::db::{Migrations, migrations_for};
use hopsbridge_platform::service::{Application, DataService};
use std::sync::Arc;

/// This service.
pub const SERVICE: Service = Service::Identity;

/// Built-in configuration layers, later wins.
pub const DEFAULTS: [&str; 2] = [DATA_SERVICE_DEFAULTS, include_str!("../config/default.toml")];

/// The migrations this binary applies.
pub const MIGRATIONS: Migrations = migrations_for(SERVICE);

/// Connects everything and binds the HTTP server; run it with
/// [`Application::run_until_stopped`].
///
/// # Errors
/// When Postgres or NATS cannot be reached, a migration fails, or the port cannot be bound.
pub async fn build(config: IdentityConfig) -> anyhow::Result<Application> {
    // This service's own credential for other services' internal routes.
    let key = config.auth.service_signer()?;
    let team = team::Team::new(&config.team, key)?;
    let service = DataService::connect(SERVICE, config.base(), MIGRATIONS).await?;
    metrics::register(&service, config.deletion.retention())?;
    let state = routes::State {
        db: service.db.clone(),
        webhook_secret: config.webhook.secret.clone(),
        tenant: config.auth0.issuer().map(str::to_owned),
        team,
        clock: service.clock.clone(),
    };
    let clock = service.clock.clone();
    let eraser = erasure::Eraser {
        db: service.db.clone(),
        clock: clock.clone(),
        retention: config.deletion.retention(),
        every: std::time::Duration::from_secs(config.deletion.erase_interval_secs),
    };
    let joined = service.consumer::<TeamMemberJoinedV1, _>(events::MemberJoined { clock: clock.clone() });
    let removed = service.consumer::<TeamMemberRemovedV1, _>(events::MemberRemoved { clock: clock.clone() });
    let restricted = service.consumer::<AccountRestrictedV1, _>(events::Restrictions { clock: clock.clone() });
    let lifted = service.consumer::<AccountRestrictionLiftedV1, _>(events::Restrictions { clock });
    Ok(service
        .application(Arc::new(move |c| routes::configure(c, state.clone())))?
        .with_task("team-member-joined", move |cancel| joined.run(cancel))
        .with_task("team-member-removed", move |cancel| removed.run(cancel))
        .with_task("account-restricted", move |cancel| restricted.run(cancel))
        .with_task("account-restriction-lifted", move |cancel| lifted.run(cancel))
        .with_task("eraser", move |cancel| eraser.run(cancel)))
}
