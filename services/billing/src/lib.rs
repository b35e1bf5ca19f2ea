//! The billing service: Stripe customers and subscriptions, payment methods and webhooks.
//!
//! - On `UserCreatedV1` ([`events::UserCreated`]): one Stripe customer and one subscription of
//!   metered prices (CPU core-hours, RAM GiB-hours, GPU hours), safe to repeat.
//! - On `UserDeletedV1` ([`deletion`]): the last usage reported, the subscription cancelled
//!   with a final invoice; billing's records kept; the owner left out of the lifecycle.
//! - On `UserErasedV1` ([`erasure`]): the person's email and name erased here and at the
//!   Stripe customer, once their retention period has passed (decision 0058).
//! - On `TeamMemberJoinedV1` and `TeamMemberRemovedV1` ([`memberships`]): a member's own
//!   subscription is cancelled and billing refuses them; a removed member gets a new one.
//! - `GET /api/billing`, `POST /api/billing/payment-method`, `POST /api/billing/portal` for the
//!   account owner, never a team member ([`routes`]).
//! - `POST /webhooks/stripe` ([`webhooks`]): signed events applied once; the first usable card
//!   publishes `PaymentMethodAddedV1`, losing the last one `PaymentMethodRemovedV1`; a paid
//!   credit purchase grants its credit.
//! - Usage becomes money (decision 0038): the price book ([`prices`]), the usage ledger fed by
//!   `UsageRecordedV1` ([`ledger`]) and `StorageRecordedV1` per GB-month ([`storage`],
//!   decision 0057) with billing modes ([`modes`]), prepaid credits
//!   ([`credits`]) and spending caps, the owner's views ([`usage`], [`quantise`]), backfill and
//!   reconciliation with metering ([`reconciliation`], [`metering`]) and their routes ([`api`]).
//! - Plans (free, payg, prepaid) chosen with the terms accepted ([`plans`]), and the account's
//!   standing ([`lifecycle`], decision 0048): a lost card or subscription moves a payg owner to
//!   free, failed payments, exhausted credits and a suspending spending cap open restrictions with
//!   deadlines, and a scheduled enforcer announces `AccountRestrictedV1` and
//!   `AccountRestrictionLiftedV1` once each; `ProjectsCountedV1` keeps each owner's active
//!   projects; `UserSignedInV1` completes a missing customer or subscription (login repair).
//! - Postpaid usage reported to Stripe as meter events, one per owner, closed day, resource
//!   and price version, corrections as new revisions ([`reporting`], decision 0044), on a
//!   catalogue of one meter and price per price version ([`catalog`]).
//! - Integrity check `stripe_subscriptions` ([`integrity`], decision 0061): Stripe's
//!   subscriptions against the accounts, scheduled and on demand with the platform's checks.

pub mod accounts;
pub mod api;
pub mod catalog;
pub mod checkout_follow_ups;
pub mod config;
pub mod credits;
pub mod deletion;
pub mod erasure;
pub mod error;
pub mod events;
pub mod integrity;
pub mod ledger;
pub mod lifecycle;
pub mod mail;
pub mod memberships;
pub mod metering;
pub mod metrics;
pub mod modes;
pub mod money;
pub mod plans;
pub mod prices;
pub mod quantise;
pub mod reconciliation;
pub mod reporting;
pub mod routes;
mod schema;
pub mod storage;
pub mod stripe;
pub mod usage;
pub mod webhooks;

pub use config::BillingConfig;

use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::{
    CreditsExhaustedV1, PaymentMethodAddedV1, PaymentMethodRemovedV1, ProjectsCountedV1, StorageRecordedV1,
    TeamMemberJoinedV1, TeamMemberRemovedV1, UsageRecordedV1, UserCreatedV1, UserDeletedV1, UserSignedInV1,
};
use hopsbridge_platform::config::DATA_SERVICE_DEFAULTS;
use hopsbridge_platform::db::{Migrations, migrations_for};
use hopsbridge_platform::retry::Backoff;
use hopsbridge_platform::service::{Application, DataService};
use std::sync::Arc;
use std::time::Duration;

/// This service.
pub const SERVICE: Service = Service::Billing;

/// Built-in configuration layers, later wins.
pub const DEFAULTS: [&str; 2] = [DATA_SERVICE_DEFAULTS, include_str!("../config/default.toml")];

/// The migrations this binary applies.
pub const MIGRATIONS: Migrations = migrations_for(SERVICE);

/// Connects everything and binds the HTTP server; run it with
/// [`Application::run_until_stopped`].
///
/// # Errors
/// When Postgres or NATS cannot be reached, a migration fails, or the port cannot be bound.
pub async fn build(config: BillingConfig) -> anyhow::Result<Application> {
    build_with_hooks(config, events::UserCreatedHooks::default()).await
}

/// [`build`] with test seams in the `UserCreated` handler.
///
/// # Errors
/// As [`build`].
pub async fn build_with_hooks(config: BillingConfig, hooks: events::UserCreatedHooks) -> anyhow::Result<Application> {
    let service = DataService::connect(SERVICE, config.base(), MIGRATIONS).await?;
    metrics::register(&service)?;
    let stripe = stripe::Stripe::new(
        &config.stripe.api_base,
        config.stripe.secret_key.clone(),
        config.stripe.max_requests_per_second,
    )?;
    service.integrity.register(integrity::StripeSubscriptions { stripe: stripe.clone(), page: integrity::PAGE })?;
    let prices = catalog::Prices::new(stripe.clone(), config.rates.clone(), config.stripe.currency.clone());
    let webhooks = webhooks::Webhooks::new(service.db.clone(), stripe.clone());
    let follow_ups = (service.db.clone(), stripe.clone(), webhooks.follow_up_signal());
    let writers: Vec<_> = (0..webhooks::GROUP_WRITERS).map(|i| (i, webhooks.clone())).collect();
    let state = routes::State {
        db: service.db.clone(),
        stripe: stripe.clone(),
        webhook_secret: config.stripe.webhook_secret.clone(),
        currency: config.stripe.currency.clone(),
        checkout: config.checkout.clone(),
        portal: config.portal.clone(),
        webhooks,
        clock: service.clock.clone(),
    };
    prices::seed(&mut *service.db.conn().await?, &config.rates, &config.stripe.currency).await?;
    let settings = ledger::Settings {
        thresholds: config.credits.alert_thresholds_minor.clone(),
        currency: config.stripe.currency.clone(),
        mail: config.mail.clone(),
        clock: service.clock.clone(),
    };
    let usage = service.consumer::<UsageRecordedV1, _>(ledger::Ledger::new(settings.clone()));
    let storage = service.consumer::<StorageRecordedV1, _>(ledger::Ledger::new(settings.clone()));
    // This service's own credential for other services' internal routes.
    let key = config.auth.service_signer()?;
    let reconciler = reconciliation::Reconciler {
        db: service.db.clone(),
        metering: metering::Metering::new(&config.metering, key)?,
        settings: Arc::new(settings),
        days: config.reconciliation.days,
        grace_secs: config.reconciliation.grace_secs,
    };
    let reporter =
        reporting::Reporter::new(&config, service.db.clone(), (stripe.clone(), prices.clone()), service.clock.clone())?;
    let lifecycle = lifecycle::Lifecycle {
        db: service.db.clone(),
        clock: service.clock.clone(),
        stripe: stripe.clone(),
        prices: prices.clone(),
        reporter: reporter.clone(),
        plans: config.plans.clone(),
        config: config.lifecycle.clone(),
        window_secs: config.ledger.window_secs,
        mail: config.mail.clone(),
    };
    let money = api::Api {
        db: service.db.clone(),
        stripe: stripe.clone(),
        clock: service.clock.clone(),
        currency: config.stripe.currency.clone(),
        window_secs: config.ledger.window_secs,
        min_lead_secs: config.prices.min_lead_secs,
        credits: config.credits.clone(),
        caps: config.caps.clone(),
        reconciler: reconciler.clone(),
        reporter: reporter.clone(),
        lifecycle: lifecycle.clone(),
    };
    let reconcile_every = Duration::from_secs(config.reconciliation.interval_secs);
    let report_every = Duration::from_secs(config.reporting.interval_secs);
    let on_request = reporter.clone();
    let stripe_reconciler = reporter.clone();
    let reconcile_days = config.reconciliation.days;
    // The deleted account's billing closed by deletion's handler, then left out of the lifecycle.
    let deleted = service.consumer::<UserDeletedV1, _>(lifecycle.clone());
    let erased =
        service.consumer::<hopsbridge_contracts::events::UserErasedV1, _>(erasure::UserErased::new(stripe.clone()));
    let card_removed = service.consumer::<PaymentMethodRemovedV1, _>(lifecycle.clone());
    let card_added = service.consumer::<PaymentMethodAddedV1, _>(lifecycle.clone());
    let exhausted = service.consumer::<CreditsExhaustedV1, _>(lifecycle.clone());
    let counted = service.consumer::<ProjectsCountedV1, _>(lifecycle.clone());
    let signed_in = service.consumer::<UserSignedInV1, _>(lifecycle::SignedIn::new(
        (service.db.clone(), service.clock.clone()),
        stripe.clone(),
        prices.clone(),
    ));
    let enforcer = lifecycle::Enforcer(lifecycle.clone());
    let catalogue = Catalogue {
        db: service.db.clone(),
        stripe: stripe.clone(),
        prices: prices.clone(),
        clock: service.clock.clone(),
        every: Duration::from_secs(config.prices.sync_interval_secs),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    let price_changes = (
        service.config.database.clone(),
        service.db.schema(),
        format!("{}{}", prices::CHANGED, service.db.schema()),
        Arc::clone(&catalogue.wake),
    );
    let teams = memberships::Memberships::new(stripe.clone(), prices.clone(), service.clock.clone(), reporter.clone());
    let joined = service.consumer::<TeamMemberJoinedV1, _>(teams.clone());
    let removed = service.consumer::<TeamMemberRemovedV1, _>(teams);
    let created = service.consumer::<UserCreatedV1, _>(events::UserCreated::new(
        (service.db.clone(), service.clock.clone()),
        stripe,
        prices.clone(),
        hooks,
    ));
    let mut application = service.application(Arc::new(move |c| {
        routes::configure_all(c, state.clone(), money.clone(), lifecycle.clone());
    }))?;
    for (i, writer) in writers {
        application = application.with_task("webhook-groups", move |cancel| writer.write_groups(i, cancel));
    }
    Ok(application
        .with_task("stripe-catalog", move |cancel| ensure_catalog(catalogue, cancel))
        .with_task("price-changes", move |cancel| {
            let (db, schema, channel, wake) = price_changes;
            hopsbridge_platform::events::relay::listen(db, schema, channel, wake, cancel)
        })
        .with_task("user-created", move |cancel| created.run(cancel))
        .with_task("user-deleted", move |cancel| deleted.run(cancel))
        .with_task("user-erased", move |cancel| erased.run(cancel))
        .with_task("payment-method-removed", move |cancel| card_removed.run(cancel))
        .with_task("payment-method-added", move |cancel| card_added.run(cancel))
        .with_task("credits-exhausted", move |cancel| exhausted.run(cancel))
        .with_task("projects-counted", move |cancel| counted.run(cancel))
        .with_task("user-signed-in", move |cancel| signed_in.run(cancel))
        .with_task("lifecycle-enforcer", move |cancel| enforcer.run(cancel))
        .with_task("team-member-joined", move |cancel| joined.run(cancel))
        .with_task("team-member-removed", move |cancel| removed.run(cancel))
        .with_task("usage-ledger", move |cancel| usage.run(cancel))
        .with_task("storage-ledger", move |cancel| storage.run(cancel))
        .with_task("reconciliation", move |cancel| reconciler.run(reconcile_every, cancel))
        .with_task("stripe-report-requests", move |cancel| on_request.run_requests(cancel))
        .with_task("stripe-reporting", move |cancel| reporter.run(report_every, cancel))
        .with_task("stripe-reconciliation", move |cancel| {
            stripe_reconciler.run_reconciliation(reconcile_days, reconcile_every, cancel)
        })
        .with_task("checkout-follow-ups", move |cancel| {
            let (db, stripe, wake) = follow_ups;
            webhooks::run_follow_ups(db, stripe, wake, cancel)
        }))
}

/// The pauses between tries of the catalog at start: 1 s doubling to 5 minutes, with jitter.
const CATALOG_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));

/// What keeps the Stripe catalogue in step with the price book.
struct Catalogue {
    db: hopsbridge_platform::db::Database,
    stripe: stripe::Stripe,
    prices: catalog::Prices,
    clock: hopsbridge_platform::clock::Clock,
    every: Duration,
    /// Notified when a price version is recorded (by any replica: [`prices::CHANGED`]).
    wake: Arc<tokio::sync::Notify>,
}

/// Finds or creates the configured meters and prices at start, retrying with
/// [`CATALOG_RETRY`] while Stripe is unreachable (the service serves meanwhile; a new person's
/// subscription waits for it); then gives each price version its meter and price and each live
/// subscription its items ([`catalog::sync_items`]) as soon as a price version is recorded, and
/// every `prices.sync_interval_secs` in any case.
async fn ensure_catalog(c: Catalogue, cancel: tokio_util::sync::CancellationToken) {
    let mut pauses = CATALOG_RETRY.delays();
    loop {
        let pause = match c.prices.get().await {
            Ok(catalog) => {
                tracing::info!(prices = ?catalog.prices, "Stripe meters and prices ready");
                break;
            }
            Err(e) => {
                let pause = pauses.next().unwrap_or(CATALOG_RETRY.max);
                tracing::warn!(error = %e, retry_in_secs = pause.as_secs(), "Stripe meters and prices not ready");
                pause
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
    loop {
        // A new price version wakes this at once; the tick catches what a lost notification
        // or a failed sync left (subscriptions opened meanwhile get the versions in force).
        tokio::select! {
            () = cancel.cancelled() => return,
            () = c.wake.notified() => {}
            () = tokio::time::sleep(c.every) => {}
        }
        let synced: anyhow::Result<usize> = async {
            let mut conn = c.db.conn().await?;
            Ok(catalog::sync_items(&mut conn, (&c.stripe, &c.prices), c.clock.now()).await?)
        }
        .await;
        match synced {
            Ok(0) => {}
            Ok(n) => tracing::info!(items = n, "subscriptions given the items of new price versions"),
            Err(e) => tracing::warn!(error = %e, "the Stripe catalogue is not in step with the price book yet"),
        }
    }
}
