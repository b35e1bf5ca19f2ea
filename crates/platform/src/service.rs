//! Assembling a service: HTTP server, background tasks and the shutdown that stops them.
//!
//! [`Application`] is what `main` runs and what tests start on port 0. A service that owns
//! data is built with [`DataService`]: it connects Postgres and NATS, ensures the streams,
//! starts its outbox relay, and lets the service add routes and consumers.

use crate::clock::Clock;
use crate::config::{DataServiceConfig, HttpConfig, ShutdownConfig};
use crate::db::{Database, Migrations, PostgresCheck};
use crate::events::{Consumer, EventBus, Handler, NatsCheck, Relay, Replayers};
use crate::http::{self, ReadinessCheck};
use crate::integrity::{Integrity, IntegrityChecks, OutboxDraining};
use crate::metrics::{ConsumerLag, Metrics};
use actix_web::web;
use futures::future::BoxFuture;
use hopsbridge_contracts::{Event, Service};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Routes a service adds to the HTTP server.
pub type Routes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

type Task = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// A running service: its HTTP port and its background tasks.
pub struct Application {
    service: Service,
    port: u16,
    server: actix_web::dev::Server,
    metrics_server: Option<(u16, actix_web::dev::Server)>,
    tasks: Vec<(String, Task)>,
    cancel: CancellationToken,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("service", &self.service).field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the HTTP server of `service` with `checks` behind `/readyz` and `routes`, and a
    /// metrics registry of its own served on `/metrics`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn new(
        service: Service,
        http_cfg: &HttpConfig,
        shutdown: &ShutdownConfig,
        checks: Vec<Arc<dyn ReadinessCheck>>,
        routes: Routes,
    ) -> anyhow::Result<Self> {
        Self::with_metrics(service, http_cfg, shutdown, checks, Metrics::of_service(service), routes)
    }

    /// [`Application::new`] with the service's `metrics` (where `/metrics` is served is
    /// `metrics`' and `http.metrics_port`'s choice, see [`http::bind`]).
    ///
    /// # Errors
    /// When a port cannot be bound.
    pub fn with_metrics(
        service: Service,
        http_cfg: &HttpConfig,
        shutdown: &ShutdownConfig,
        checks: Vec<Arc<dyn ReadinessCheck>>,
        metrics: Metrics,
        routes: Routes,
    ) -> anyhow::Result<Self> {
        let bound = http::bind(http_cfg, shutdown.timeout(), Arc::new(checks), metrics, move |c| routes(c))?;
        Ok(Self {
            service,
            port: bound.port,
            server: bound.server,
            metrics_server: bound.metrics,
            tasks: Vec::new(),
            cancel: CancellationToken::new(),
            shutdown_timeout: shutdown.timeout(),
        })
    }

    /// Adds a background task; it gets a token that is cancelled at shutdown and must return
    /// soon after.
    #[must_use]
    pub fn with_task<F, Fut>(mut self, name: impl Into<String>, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push((name.into(), Box::new(move |c| Box::pin(task(c)))));
        self
    }

    /// The bound port.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The port of the listener that serves `/metrics` alone, when `http.metrics_port` is set.
    #[must_use]
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    /// The token that stops the application when cancelled (also cancelled by signals when
    /// [`Application::run_until_stopped`] is given [`crate::shutdown::on_signal`]).
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Serves until `stop` (or the application's own token) is cancelled, then shuts down:
    /// stops accepting, lets in-flight requests and the tasks' current work finish within the
    /// shutdown bound.
    ///
    /// # Errors
    /// When the HTTP server fails, or the tasks do not finish within the bound.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Self { service, port, server, metrics_server, tasks, cancel, shutdown_timeout } = self;
        let tracker = TaskTracker::new();
        for (name, task) in tasks {
            let token = cancel.child_token();
            tracker.spawn(async move {
                task(token).await;
                tracing::debug!(task = %name, "task stopped");
            });
        }
        if let Some((_, metrics)) = metrics_server {
            let handle = metrics.handle();
            let stopped = cancel.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = metrics => {}
                    () = stopped.cancelled() => handle.stop(false).await,
                }
            });
        }
        tracker.close();
        let handle = server.handle();
        let mut server = tokio::spawn(server);
        tracing::info!(service = %service, port, "listening");
        let served = tokio::select! {
            () = stop.cancelled() => None,
            () = cancel.cancelled() => None,
            r = &mut server => Some(r),
        };
        cancel.cancel();
        if let Some(result) = served {
            tracker.wait().await;
            result??;
            anyhow::bail!("HTTP server stopped on its own");
        }
        tracing::info!(service = %service, "shutting down");
        let drained = tokio::time::timeout(shutdown_timeout, async {
            handle.stop(true).await;
            let _ = server.await;
            tracker.wait().await;
        })
        .await;
        if drained.is_err() {
            anyhow::bail!("shutdown took longer than {}s", shutdown_timeout.as_secs());
        }
        tracing::info!(service = %service, "stopped");
        Ok(())
    }
}

/// What a service that owns data is given to wire its routes and consumers.
#[derive(Clone, Debug)]
pub struct DataService {
    /// Which service this is.
    pub service: Service,
    /// Its settings.
    pub config: DataServiceConfig,
    /// Its schema's pool.
    pub db: Database,
    /// NATS.
    pub bus: EventBus,
    /// The calendar clock (`[clock]`).
    pub clock: Clock,
    /// Its consumers' handlers, by consumer name, for replaying dead letters.
    pub replayers: Replayers,
    /// Its metrics registry (served on `/metrics`); a service adds its own metrics here.
    pub metrics: Metrics,
    /// Its integrity checks (`outbox_draining` from the start); a service registers its own
    /// here before [`DataService::application`], which runs them on schedule and on demand.
    pub integrity: IntegrityChecks,
    lag: Arc<ConsumerLag>,
}

impl DataService {
    /// Connects Postgres and NATS, applies migrations when `database.migrate_on_start` is set,
    /// ensures the streams, and reads the calendar clock.
    ///
    /// # Errors
    /// When Postgres, NATS or a simulated clock to follow cannot be reached, or a migration fails.
    pub async fn connect(service: Service, config: DataServiceConfig, migrations: Migrations) -> anyhow::Result<Self> {
        let clock = Clock::from_config(&config.clock).await?;
        if config.database.migrate_on_start {
            let applied = migrations.run(config.database.url.expose()).await?;
            tracing::info!(count = applied.len(), "migrations applied");
        }
        let db = Database::new(&config.database, migrations.schema)?;
        let bus = EventBus::connect(&config.nats, service).await?;
        bus.ensure_streams().await?;
        let metrics = Metrics::of_service(service);
        let lag = Arc::new(ConsumerLag::new(bus.clone(), metrics.registry())?);
        metrics.add_sampler(lag.clone());
        metrics.add_sql("postgres_platform", db.clone(), crate::metrics::sql::platform_metrics())?;
        let integrity = IntegrityChecks::default();
        integrity.register(OutboxDraining { max_age_secs: config.integrity.outbox_max_age_secs })?;
        Ok(Self { service, config, db, bus, clock, replayers: Replayers::default(), metrics, integrity, lag })
    }

    /// A consumer of `E` for this service, named `<service>-<event token>`; its dead letters
    /// can be replayed through the admin routes.
    #[must_use]
    pub fn consumer<E: Event, H: Handler<E>>(&self, handler: H) -> Consumer<E, H> {
        let name = format!("{}-{}", self.service.name(), E::TOKEN);
        self.lag.watch(&name, self.bus.subjects().stream(E::PRODUCER));
        let metrics = self.metrics.consumer(&name);
        let consumer = Consumer::new(name, self.db.clone(), self.bus.clone(), self.config.events.clone(), handler)
            .with_metrics(metrics);
        self.replayers.register(&consumer);
        consumer
    }

    /// The runner of this service's integrity checks (what the admin routes and the schedule
    /// use).
    #[must_use]
    pub fn integrity_runner(&self) -> Integrity {
        Integrity::new(
            self.service,
            self.db.clone(),
            self.config.mail.clone(),
            self.config.integrity.clone(),
            self.integrity.clone(),
        )
    }

    /// The relay of this service's outbox.
    #[must_use]
    pub fn relay(&self) -> Relay {
        Relay::new(
            self.db.clone(),
            self.config.database.clone(),
            self.bus.clone(),
            self.service,
            self.config.events.clone(),
        )
    }

    /// The HTTP server with Postgres and NATS readiness checks (and `"clock": "simulated"` when
    /// the clock follows a simulated one), `routes` (which may extract a gateway-signed
    /// [`crate::caller::Caller`]), the admin mail, dead-letter and integrity routes, and the
    /// outbox relay, the mail relay, inbox pruning and the scheduled integrity checks running in
    /// the background. Add consumers with
    /// [`Application::with_task`].
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn application(&self, routes: Routes) -> anyhow::Result<Application> {
        let mut checks: Vec<Arc<dyn ReadinessCheck>> =
            vec![Arc::new(PostgresCheck(self.db.clone())), Arc::new(NatsCheck(self.bus.client().clone()))];
        checks.extend(self.clock.readiness());
        let relay = self.relay();
        let mail_relay =
            crate::mail::MailRelay::new(self.db.clone(), self.config.database.clone(), self.config.mail.clone())?;
        let db = self.db.clone();
        let retention = Duration::from_secs(self.config.events.retention_hours * 3600);
        let key = web::Data::new(self.config.auth.verifier()?);
        let (service, mail_db, mail_cfg) = (self.service.name(), self.db.clone(), self.config.mail.clone());
        let replayers = self.replayers.clone();
        let integrity = self.integrity_runner();
        let scheduled = integrity.clone();
        // Every route can take a `Caller`, verified with the gateway's and the trusted services'
        // public keys.
        let routes: Routes = Arc::new(move |c: &mut web::ServiceConfig| {
            c.app_data(key.clone());
            crate::mail::configure_routes(c, service, mail_db.clone(), &mail_cfg);
            crate::events::configure_dead_letter_routes(c, service, mail_db.clone(), replayers.clone());
            crate::integrity::configure_routes(c, integrity.clone());
            routes(c);
        });
        Ok(Application::with_metrics(
            self.service,
            &self.config.http,
            &self.config.shutdown,
            checks,
            self.metrics.clone(),
            routes,
        )?
        .with_task("outbox-relay", move |c| relay.run(c))
        .with_task("mail-relay", move |c| mail_relay.run(c))
        .with_task("inbox-pruning", move |c| prune_inbox_periodically(db, retention, c))
        .with_task("integrity-checks", move |c| scheduled.run(c)))
    }
}

async fn prune_inbox_periodically(db: Database, retention: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
        match crate::events::consumer::prune_inbox(&db, retention).await {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "inbox pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "inbox pruning failed"),
        }
    }
}
