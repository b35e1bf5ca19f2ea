//! The team service: invitations and memberships, who is on whose team (decision 0035).
//!
//! - An owner invites an address with a project role ([`inviting`]): the address is
//!   normalised; inviting oneself, a member of one's own team or of another is refused; a new
//!   invitation to the same address replaces a pending (or expired) one. The token is 32 bytes
//!   from the OS generator, sent as base64url and stored only as its SHA-256 ([`token`]); the
//!   link (`mail.public_base_url` + `/invitations/<token>`) is in the answer to the invitation
//!   and to each resend, and in the mail ([`mail`]), which is written to the mail outbox in the
//!   invitation's transaction. Links expire after `invitations.ttl_hours`.
//! - Anyone holding a link previews it without signing in; the invited person, signed in with
//!   the invited address and accepting the current terms (`terms.version`), joins: the
//!   invitation is claimed under its row lock and both people's locks, the membership is
//!   written and `TeamMemberJoinedV1` goes to the outbox in the same transaction, so two tabs
//!   or a crash make one member and one event.
//! - The owner removes a member, the member leaves, or the member's account is deleted
//!   (`UserDeletedV1`): the membership ends and `TeamMemberRemovedV1` goes out once
//!   ([`members`], [`memberships`]).
//! - Members are refused every owner route (`403 owner_only`), decided from team's own
//!   memberships ([`routes`]). identity asks `GET /internal/owners/{id}/members` before
//!   deleting an owner's account.
//! - From other services' events ([`events`]): people and their status (identity), their
//!   Hopsworks accounts (provisioning) and their usage per UTC month (metering), for the
//!   owner's view of the team ([`people`], [`accounts`], [`usage`]).
//! - When a deleted person's retention period has passed (`UserErasedV1`), their address,
//!   name and Hopsworks username are erased here ([`erasure`]).

pub mod accounts;
pub mod config;
pub mod erasure;
pub mod error;
pub mod events;
pub mod invitations;
pub mod inviting;
pub mod mail;
pub mod members;
pub mod memberships;
pub mod metrics;
pub mod people;
pub mod routes;
mod schema;
pub mod states;
pub mod token;
pub mod usage;

pub use config::TeamConfig;

use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::{
    ClusterAssignedV1, ClusterUnassignedV1, UsageRecordedV1, UserCreatedV1, UserDeletedV1, UserErasedV1,
    UserReactivatedV1, UserSuspendedV1,
};
use hopsbridge_platform::config::DATA_SERVICE_DEFAULTS;
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
pub async fn build(config: TeamConfig) -> anyhow::Result<Application> {
    let links = config.mail.links().map_err(|e| anyhow::anyhow!("mail.public_base_url: {e}"))?;
    let service = DataService::connect(SERVICE, config.base(), MIGRATIONS).await?;
    metrics::register(&service)?;
    let rules = inviting::Rules {
        ttl: config.invitations.ttl(),
        terms_version: config.terms.version.clone(),
        links,
        clock: service.clock.clone(),
    };
    let state = routes::State { db: service.db.clone(), rules: Arc::new(rules) };
    let created = service.consumer::<UserCreatedV1, _>(events::UserCreated);
    let suspended = service.consumer::<UserSuspendedV1, _>(events::UserStatus);
    let reactivated = service.consumer::<UserReactivatedV1, _>(events::UserStatus);
    let deleted = service.consumer::<UserDeletedV1, _>(events::UserDeleted { clock: service.clock.clone() });
    let erased = service.consumer::<UserErasedV1, _>(erasure::UserErased { clock: service.clock.clone() });
    let assigned = service.consumer::<ClusterAssignedV1, _>(events::Accounts);
    let unassigned = service.consumer::<ClusterUnassignedV1, _>(events::Accounts);
    let usage = service.consumer::<UsageRecordedV1, _>(events::UsageRecorded);
    Ok(service
        .application(Arc::new(move |c| routes::configure(c, state.clone())))?
        .with_task("user-created", move |cancel| created.run(cancel))
        .with_task("user-suspended", move |cancel| suspended.run(cancel))
        .with_task("user-reactivated", move |cancel| reactivated.run(cancel))
        .with_task("user-deleted", move |cancel| deleted.run(cancel))
        .with_task("user-erased", move |cancel| erased.run(cancel))
        .with_task("cluster-assigned", move |cancel| assigned.run(cancel))
        .with_task("cluster-unassigned", move |cancel| unassigned.run(cancel))
        .with_task("usage-recorded", move |cancel| usage.run(cancel)))
}
