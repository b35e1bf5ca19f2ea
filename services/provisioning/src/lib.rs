//! The provisioning service: the cluster registry (with its secrets sealed at rest), the
//! assignment of paying owners to Hopsworks clusters, and their Hopsworks accounts.
//!
//! - Admins register and change clusters; the Hopsworks API key and the kubeconfig are sealed
//!   with AES-256-GCM under a configured key and never answered or announced.
//! - `PaymentMethodAddedV1` seats the owner on the active cluster with the most free seats
//!   (counted from assignments under lock, never kept in a counter), or lets them wait for
//!   capacity; a background task creates the Hopsworks OAuth user, then marks the assignment
//!   complete and announces `ClusterAssignedV1` in one transaction.
//! - Admins move and unassign users; old accounts are deactivated (status 3) and
//!   `ClusterUnassignedV1` announced.
//! - `TeamMemberJoinedV1` places the member on the owner's cluster (`maxNumProjects` 0, whatever
//!   its capacity; or waiting for the owner's cluster) and the background task adds them to
//!   each of the owner's Hopsworks projects; `TeamMemberRemovedV1` takes them out of those
//!   projects, then unassigns them ([`teams`]).
//! - `UserSuspendedV1` blocks the person's Hopsworks account and `UserReactivatedV1` activates
//!   it, and each owner's `maxNumProjects` follows their plan (`PlanChangedV1`) and the project
//!   sync, pushed until Hopsworks agrees, and checked again at each sign-in
//!   (`UserSignedInV1`) ([`lifecycle`]); each cluster's projects are synced on
//!   a schedule and on demand, and each owner's count announced (`ProjectsCountedV1`,
//!   [`project_sync`]).
//! - A cluster is checked as the services will use it before a registration or a change of its
//!   kubeconfig, URL, key or CA bundle is accepted, and again on a schedule, its last result
//!   shown as its health ([`cluster_checks`], [`kube_checks`], [`cluster_health`], decision 0054).
//! - Integrity checks `cluster_occupancy` (seats against capacity and cluster status) and
//!   `hopsworks_status` (Hopsworks accounts' status against ours), scheduled and on demand with
//!   the platform's checks ([`integrity`], decision 0061).
//!
//! Modules are layered: each imports only modules of the layers before it (the `layers` test
//! checks this), so none is part of an import circle.
//!
//! | layer | modules | what they own |
//! |---|---|---|
//! | 1 | [`schema`], [`error`], [`crypto`], [`states`] | tables, the error catalogue, sealing (with its keys' settings), the states of team records |
//! | 2 | [`config`] | settings |
//! | 3 | [`users`], [`seats`], [`work`], [`team_members`], [`project_members`] | the people projection, seat counting and the placement lock, leased Hopsworks work, team memberships, members' places in projects |
//! | 4 | [`clusters`] | the registry |
//! | 5 | [`hopsworks`], [`kube_checks`], [`rondb`] | a cluster's Hopsworks API, the checks of its kubeconfig, its online storage read from RonDB |
//! | 6 | [`validate`], [`cluster_checks`] | checks of registrations, and of the cluster they name |
//! | 7 | [`assignments`], [`cluster_health`] | placement, moves and unassignments; clusters' scheduled checks |
//! | 8 | [`teams`], [`lifecycle`] | what joining and leaving a team do, accounts' status and limit following ours |
//! | 9 | [`events`], [`erasure`], [`worker`], [`rotate`], [`project_sync`], [`metrics`], [`integrity`] | consumers, personal data erased, the background task, `rotate-keys`, project syncs, the service's own metrics, integrity checks and the Hopsworks status comparison |
//! | 10 | [`routes`] | the HTTP API |

pub mod assignments;
pub mod cluster_checks;
pub mod cluster_health;
pub mod clusters;
pub mod config;
pub mod crypto;
pub mod erasure;
pub mod error;
pub mod events;
pub mod hopsworks;
pub mod integrity;
pub mod kube_checks;
pub mod lifecycle;
pub mod metrics;
pub mod project_members;
pub mod project_sync;
pub mod rondb;
pub mod rotate;
pub mod routes;
/// provisioning's tables, generated from its migrations by `scripts/schema.sh`.
pub mod schema;
pub mod seats;
pub mod states;
pub mod team_members;
pub mod teams;
pub mod users;
pub mod validate;
pub mod work;
pub mod worker;

pub use config::ProvisioningConfig;

use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::{
    PaymentMethodAddedV1, PlanChangedV1, TeamMemberJoinedV1, TeamMemberRemovedV1, UserCreatedV1, UserDeletedV1,
    UserReactivatedV1, UserSignedInV1, UserSuspendedV1,
};
use hopsbridge_platform::cli::ExtraCommand;
use hopsbridge_platform::config::DATA_SERVICE_DEFAULTS;
use hopsbridge_platform::db::{Migrations, migrations_for};
use hopsbridge_platform::events::ConsumerHooks;
use hopsbridge_platform::service::{Application, DataService};
use std::sync::Arc;
use tokio::sync::Notify;

/// This service.
pub const SERVICE: Service = Service::Provisioning;

/// Built-in configuration layers, later wins.
pub const DEFAULTS: [&str; 2] = [DATA_SERVICE_DEFAULTS, include_str!("../config/default.toml")];

/// The migrations this binary applies.
pub const MIGRATIONS: Migrations = migrations_for(SERVICE);

/// Subcommands of this binary besides `serve` and `migrate`.
pub const COMMANDS: [ExtraCommand<ProvisioningConfig>; 1] = [ExtraCommand {
    name: "rotate-keys",
    about: "Re-encrypt every cluster secret under encryption.active_key, then exit",
    takes_arguments: false,
    run: rotate::command,
}];

/// Connects everything and binds the HTTP server; run it with
/// [`Application::run_until_stopped`].
///
/// # Errors
/// When Postgres or NATS cannot be reached, a migration fails, or the port cannot be bound.
pub async fn build(config: ProvisioningConfig) -> anyhow::Result<Application> {
    let vault =
        crypto::Vault::from_config(&config.encryption).map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?;
    let service = DataService::connect(SERVICE, config.base(), MIGRATIONS).await?;
    metrics::register(&service)?;
    let wake = Arc::new(Notify::new());
    let max_num_projects = config.hopsworks.max_num_projects_paying;
    let sync = project_sync::ProjectSync::new(
        (service.db.clone(), service.clock.clone()),
        vault.clone(),
        (config.hopsworks.clone(), config.projects.clone()),
        config.clusters.allow_private_addresses,
        wake.clone(),
    );
    let scheduled = sync.clone();
    service.integrity.register(integrity::ClusterOccupancy)?;
    service.integrity.register(integrity::HopsworksStatus(integrity::HopsworksAccess {
        vault: vault.clone(),
        config: config.hopsworks.clone(),
        allow_private_addresses: config.clusters.allow_private_addresses,
    }))?;
    let checker = cluster_checks::Checker::new(&config.hopsworks, &config.clusters);
    let health = cluster_health::HealthChecks::new(
        service.db.clone(),
        vault.clone(),
        checker.clone(),
        std::time::Duration::from_secs(config.clusters.health_interval_secs),
        config.clusters.health_lease(),
    );
    let state = routes::State {
        db: service.db.clone(),
        vault: vault.clone(),
        wake: wake.clone(),
        max_num_projects,
        hopsworks: config.hopsworks.clone(),
        clock: service.clock.clone(),
        allow_private_addresses: config.clusters.allow_private_addresses,
        sync,
        checker,
    };
    // Consumers wake the background task once their transaction has committed.
    let woken = wake.clone();
    let hooks = ConsumerHooks {
        after_commit: Some(Arc::new(move |_| {
            woken.notify_one();
            Box::pin(async {})
        })),
    };
    let created = service.consumer::<UserCreatedV1, _>(events::UserCreated).with_hooks(hooks.clone());
    let suspended = service.consumer::<UserSuspendedV1, _>(events::UserStatus).with_hooks(hooks.clone());
    let reactivated = service.consumer::<UserReactivatedV1, _>(events::UserStatus).with_hooks(hooks.clone());
    let signed_in = service.consumer::<UserSignedInV1, _>(events::SignedIn).with_hooks(hooks.clone());
    let default_active_projects = config.projects.default_active_projects;
    let plans =
        service.consumer::<PlanChangedV1, _>(events::PlanChanged { default_active_projects }).with_hooks(hooks.clone());
    let deleted = service.consumer::<UserDeletedV1, _>(events::UserStatus).with_hooks(hooks.clone());
    let erased = service.consumer::<hopsbridge_contracts::events::UserErasedV1, _>(erasure::UserErased);
    let paid = service
        .consumer::<PaymentMethodAddedV1, _>(events::PaymentMethodAdded { max_num_projects })
        .with_hooks(hooks.clone());
    let team = events::TeamMembers { max_num_projects };
    let joined = service.consumer::<TeamMemberJoinedV1, _>(team).with_hooks(hooks.clone());
    let removed = service.consumer::<TeamMemberRemovedV1, _>(team).with_hooks(hooks);
    let worker = worker::Worker::new(
        (service.db.clone(), service.clock.clone()),
        vault,
        config.hopsworks.clone(),
        config.assignments.clone(),
        wake,
    )
    .allowing_private_addresses(config.clusters.allow_private_addresses);
    Ok(service
        .application(Arc::new(move |c| routes::configure(c, state.clone())))?
        .with_task("user-erased", move |cancel| erased.run(cancel))
        .with_task("user-created", move |cancel| created.run(cancel))
        .with_task("user-suspended", move |cancel| suspended.run(cancel))
        .with_task("user-reactivated", move |cancel| reactivated.run(cancel))
        .with_task("user-deleted", move |cancel| deleted.run(cancel))
        .with_task("plan-changed", move |cancel| plans.run(cancel))
        .with_task("user-signed-in", move |cancel| signed_in.run(cancel))
        .with_task("project-sync", move |cancel| scheduled.run(cancel))
        .with_task("cluster-health", move |cancel| health.run(cancel))
        .with_task("payment-method-added", move |cancel| paid.run(cancel))
        .with_task("team-member-joined", move |cancel| joined.run(cancel))
        .with_task("team-member-removed", move |cancel| removed.run(cancel))
        .with_task("assignments", move |cancel| worker.run(cancel)))
}
