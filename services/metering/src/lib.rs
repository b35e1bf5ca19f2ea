//! The metering service: usage samples per cluster, namespace, user and UTC window, exactly
//! once, and usage per user, project and day derived from them.
//!
//! - It learns clusters, Hopsworks accounts and team memberships from provisioning's and
//!   team's events ([`projection`]), and asks provisioning for each cluster's kubeconfig and
//!   Hopsworks projects ([`access`]).
//! - Every UTC-aligned window, each measured cluster gets a run ([`runs`]) that one replica
//!   leases and collects ([`collect`], [`scheduler`]); the samples, `usage_daily` and one
//!   `UsageRecordedV1` per attributed sample are written in one transaction.
//! - The samples ([`samples`]) and the usage per day ([`usage_daily`]) are read back for
//!   people and admins.
//! - A window that cannot be measured in time is a gap with its reason; admins see runs, gaps
//!   and usage, and can collect a cluster now ([`routes`], answering [`error`]'s codes). The
//!   gap policy may fill gaps with estimates, published at once or after review ([`gaps`]).
//! - Every storage window (hourly), each cluster's projects' storage is read through
//!   provisioning and stored per project, with one `StorageRecordedV1` per attributed sample
//!   ([`storage`], decision 0056); the gap policy may fill storage gaps too (decision 0076).
//! - billing pages through attributed samples and reads usage per owner and day for its
//!   backfill and reconciliation ([`internal`], signed as the billing service only).

pub mod access;
pub mod attribution;
pub mod collect;
pub mod config;
pub mod error;
pub mod gaps;
pub mod integrity;
pub mod internal;
pub mod metrics;
pub mod projection;
pub mod quantity;
pub mod reading_runs;
pub mod routes;
pub mod runs;
pub mod samples;
pub mod scheduler;
mod schema;
pub mod storage;
pub mod usage;
pub mod usage_daily;
pub mod watch;
pub mod window;

pub use config::MeteringConfig;

use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::{
    ClusterAssignedV1, ClusterRegisteredV1, ClusterUnassignedV1, ClusterUpdatedV1, TeamMemberJoinedV1,
    TeamMemberRemovedV1,
};
use hopsbridge_platform::config::DATA_SERVICE_DEFAULTS;
use hopsbridge_platform::db::{Migrations, migrations_for};
use hopsbridge_platform::events::ConsumerHooks;
use hopsbridge_platform::service::{Application, DataService};
use std::sync::Arc;
use tokio::sync::Notify;

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
pub async fn build(config: MeteringConfig) -> anyhow::Result<Application> {
    // This service's own credential for other services' internal routes.
    let key = config.auth.service_signer()?;
    let provisioning = access::Provisioning::new(&config.provisioning, key)?;
    let service = DataService::connect(SERVICE, config.base(), MIGRATIONS).await?;
    metrics::register(&service)?;
    integrity::register(&service.integrity, &service.clock, &config.integrity_checks)?;
    let wake = Arc::new(Notify::new());
    // A newly known cluster is scheduled at once rather than at the next tick.
    let woken = wake.clone();
    let hooks = ConsumerHooks {
        after_commit: Some(Arc::new(move |_| {
            woken.notify_one();
            Box::pin(async {})
        })),
    };
    let registered = service.consumer::<ClusterRegisteredV1, _>(projection::Clusters).with_hooks(hooks.clone());
    let updated = service.consumer::<ClusterUpdatedV1, _>(projection::Clusters).with_hooks(hooks);
    let assigned = service.consumer::<ClusterAssignedV1, _>(projection::Accounts);
    let unassigned = service.consumer::<ClusterUnassignedV1, _>(projection::Accounts);
    let joined = service.consumer::<TeamMemberJoinedV1, _>(projection::Memberships);
    let removed = service.consumer::<TeamMemberRemovedV1, _>(projection::Memberships);
    let internal = internal::Internal { db: service.db.clone() };
    let state = routes::State {
        db: service.db.clone(),
        clock: service.clock.clone(),
        wake: wake.clone(),
        window_secs: i64::from(config.schedule.window_secs),
        deadline_secs: i64::from(config.schedule.deadline_secs),
    };
    let storage = config.storage.enabled.then(|| {
        storage::meter::StorageMeter::new(
            (service.db.clone(), service.clock.clone()),
            provisioning.clone(),
            config.storage.clone(),
            config.schedule.clone(),
        )
        .with_estimator(storage::estimates::StorageEstimator {
            policy: config.gaps.policy(),
            window_secs: i64::from(config.storage.window_secs),
            lookback_secs: i64::from(config.storage.lookback_secs),
            neighbour_windows: i64::from(config.gaps.neighbour_windows),
        })
    });
    let estimator = gaps::Estimator {
        policy: config.gaps.policy(),
        window: config.window(),
        deadline_secs: i64::from(config.schedule.deadline_secs),
        lookback_secs: i64::from(config.schedule.lookback_secs),
        neighbour_windows: i64::from(config.gaps.neighbour_windows),
        bases: (config.collect.cpu_basis, config.collect.memory_basis),
    };
    let watch_access = provisioning.clone();
    let meter = scheduler::Meter::new(
        (service.db.clone(), service.clock.clone()),
        provisioning,
        config.collect.clone(),
        config.schedule.clone(),
        wake,
    )
    .with_estimator(estimator);
    // Each cluster's pods kept by a watch (decision 0070), when switched on.
    let watchers = config.collect.watch.enabled.then(|| {
        watch::Watchers::new(
            (service.db.clone(), service.clock.clone()),
            watch_access,
            config.collect.clone(),
            config.collect.watch.clone(),
            meter.replica().to_owned(),
        )
    });
    let mut app = service
        .application(Arc::new(move |c| {
            routes::configure(c, state.clone());
            internal::configure(c, internal.clone());
        }))?
        .with_task("cluster-registered", move |cancel| registered.run(cancel))
        .with_task("cluster-updated", move |cancel| updated.run(cancel))
        .with_task("cluster-assigned", move |cancel| assigned.run(cancel))
        .with_task("cluster-unassigned", move |cancel| unassigned.run(cancel))
        .with_task("team-member-joined", move |cancel| joined.run(cancel))
        .with_task("team-member-removed", move |cancel| removed.run(cancel))
        .with_task("meter", move |cancel| meter.run(cancel));
    if let Some(watchers) = watchers {
        app = app.with_task("pod-watch", move |cancel| watchers.run(cancel));
    }
    if let Some(storage) = storage {
        app = app.with_task("storage", move |cancel| storage.run(cancel));
    }
    Ok(app)
}
