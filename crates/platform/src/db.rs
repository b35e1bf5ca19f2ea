//! Postgres: the connection pool, migrations and database errors.
//!
//! Each service owns one Postgres schema named after it (`identity`, `billing`, …) and every
//! connection it opens has `search_path` set to that schema, so its SQL and its diesel tables
//! are unqualified and it cannot touch another service's tables by accident. The migrations in
//! the top-level `migrations/` are embedded in the binaries: `migrations/platform` (the outbox
//! and inbox every service has) and then `migrations/<service>`, applied by the `migrate`
//! subcommand, or at start when `database.migrate_on_start` is set.

use crate::config::DatabaseConfig;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Hook, HookError, Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use std::time::Duration;

/// How long a pooled connection may sit unused before it is checked with a query on checkout.
pub const VERIFY_IDLE_AFTER: Duration = Duration::from_millis(500);

/// A pool of connections to one service's schema.
pub type PgPool = Pool<AsyncPgConnection>;
/// A connection taken from the pool.
pub type PooledConnection = Object<AsyncPgConnection>;

/// What a database call can fail with, classified so callers can react.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A row that must exist does not.
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write.
    #[error("unique violation on {constraint}")]
    UniqueViolation {
        /// The constraint's name, when Postgres gave it.
        constraint: String,
    },
    /// A foreign key refused the write.
    #[error("foreign key violation")]
    ForeignKeyViolation,
    /// A serializable transaction lost a conflict (SQLSTATE 40001), or a deadlock was broken;
    /// the transaction may simply be run again.
    #[error("serialization failure")]
    SerializationFailure,
    /// No connection could be had in time, or the connection broke.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Other(DieselError),
}

impl From<DieselError> for DbError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Self::UniqueViolation { constraint: info.constraint_name().unwrap_or_default().to_owned() }
            }
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => Self::ForeignKeyViolation,
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => Self::SerializationFailure,
            // diesel has no kind for deadlocks (40P01); Postgres' message is stable.
            DieselError::DatabaseError(_, ref info) if info.message().contains("deadlock detected") => {
                Self::SerializationFailure
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            DieselError::BrokenTransactionManager => Self::Unavailable("broken transaction".to_owned()),
            other => Self::Other(other),
        }
    }
}

/// How long a checkout waits before asking a full Postgres again.
const SERVER_FULL_PAUSE: Duration = Duration::from_millis(50);

/// Whether a refused connection was refused because a connection limit is reached: the
/// server's, the database's or the role's (SQLSTATE 53300; the connection error carries only
/// Postgres' message).
#[must_use]
pub fn server_full(error: &str) -> bool {
    ["too many clients already", "remaining connection slots are reserved", "too many connections for"]
        .iter()
        .any(|m| error.contains(m))
}

/// A connection URL whose every session uses `schema` as its `search_path` and, unless the URL
/// names one, `hopsbridge-<schema>` as its `application_name` (so `pg_stat_activity` says which
/// service holds each connection).
#[must_use]
pub fn url_for_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    let name = if url.contains("application_name=") {
        String::new()
    } else {
        format!("&application_name=hopsbridge-{schema}")
    };
    format!("{url}{sep}options=-c%20search_path%3D{schema}{name}")
}

/// The service's pool and schema.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    schema: &'static str,
    acquire_timeout: Duration,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl Database {
    /// Builds the pool. No connection is opened until one is needed.
    ///
    /// # Errors
    /// When the pool cannot be built.
    pub fn new(cfg: &DatabaseConfig, schema: &'static str) -> anyhow::Result<Self> {
        // Every checkout drops a connection whose session has ended (its closed flag, set when
        // Postgres closes the socket, as a restart does). A connection idle for longer than
        // `VERIFY_IDLE_AFTER` is also asked `SELECT 1` first; one in steady use is not, which
        // spares each request a round trip to Postgres.
        let mut manager_config = ManagerConfig::default();
        manager_config.recycling_method = RecyclingMethod::Fast;
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            url_for_schema(cfg.url.expose(), schema),
            manager_config,
        );
        let verify_idle = Hook::async_fn(|conn: &mut AsyncPgConnection, metrics| {
            let idle = metrics.last_used() >= VERIFY_IDLE_AFTER;
            Box::pin(async move {
                if idle {
                    diesel::sql_query("SELECT 1")
                        .execute(conn)
                        .await
                        .map_err(|e| HookError::Backend(diesel_async::pooled_connection::PoolError::QueryError(e)))?;
                }
                Ok(())
            })
        });
        let pool = Pool::builder(manager).max_size(cfg.max_connections).pre_recycle(verify_idle).build()?;
        Ok(Self { pool, schema, acquire_timeout: Duration::from_secs(cfg.acquire_timeout_secs) })
    }

    /// The pool.
    #[must_use]
    pub const fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema this service owns.
    #[must_use]
    pub const fn schema(&self) -> &'static str {
        self.schema
    }

    /// A connection, waiting at most `database.acquire_timeout_secs`: for one of the pool's to
    /// be free, and for a slot on Postgres when a new connection is refused because every one of
    /// its `max_connections` is taken (a moment's crowd, which passes; any other refusal is
    /// answered at once).
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when none can be had in time.
    pub async fn conn(&self) -> Result<PooledConnection, DbError> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.pool.get()).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) if server_full(&e.to_string()) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(SERVER_FULL_PAUSE).await;
                }
                Ok(Err(e)) => return Err(DbError::Unavailable(e.to_string())),
                Err(_) => return Err(DbError::Unavailable("timed out waiting for a connection".to_owned())),
            }
        }
    }

    /// Runs `f` in a transaction, again (up to 5 times, with a growing pause) when it fails
    /// with a serialization failure or a deadlock. `f` returns a boxed future so that the
    /// transaction can run on any thread: `db.transaction(|c| Box::pin(async move { … }))`.
    ///
    /// # Errors
    /// The last error.
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> futures::future::BoxFuture<'c, Result<T, E>> + Send + Sync,
        T: Send,
        E: From<DbError> + From<DieselError> + RetryableError + Send,
    {
        let mut attempt = 0_u32;
        loop {
            let mut conn = self.conn().await?;
            let result = conn.transaction(async |c| f(c).await).await;
            match result {
                Err(e) if e.is_retryable() && attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                other => return other,
            }
        }
    }
}

/// Errors that know whether a transaction that failed with them may be run again.
pub trait RetryableError {
    /// True for serialization failures and deadlocks.
    fn is_retryable(&self) -> bool;
}

impl RetryableError for DbError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::SerializationFailure)
    }
}

impl RetryableError for DieselError {
    fn is_retryable(&self) -> bool {
        match self {
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
            DieselError::DatabaseError(_, info) => info.message().contains("deadlock detected"),
            _ => false,
        }
    }
}

impl RetryableError for anyhow::Error {
    fn is_retryable(&self) -> bool {
        self.downcast_ref::<DbError>().is_some_and(RetryableError::is_retryable)
            || self.downcast_ref::<DieselError>().is_some_and(RetryableError::is_retryable)
    }
}

/// The migrations of `service`: the platform's tables in its schema, then its own (added to
/// this function as each service gains tables in `migrations/<service>`).
#[must_use]
pub const fn migrations_for(service: hopsbridge_contracts::Service) -> Migrations {
    use hopsbridge_contracts::Service;
    let own = match service {
        Service::Identity => Some(&IDENTITY_MIGRATIONS),
        Service::Billing => Some(&BILLING_MIGRATIONS),
        Service::Provisioning => Some(&PROVISIONING_MIGRATIONS),
        Service::Metering => Some(&METERING_MIGRATIONS),
        Service::Team => Some(&TEAM_MIGRATIONS),
        Service::Gateway => None,
    };
    Migrations { schema: service.name(), own }
}

/// A fingerprint of the migrations embedded in this build (every file under `migrations/`,
/// taken when the crate was compiled): equal fingerprints mean the same migrations.
pub const MIGRATIONS_FINGERPRINT: &str = env!("HOPSBRIDGE_MIGRATIONS_FINGERPRINT");

/// identity's own tables.
pub const IDENTITY_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/identity");

/// billing's own tables.
pub const BILLING_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/billing");

/// provisioning's own tables.
pub const PROVISIONING_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/provisioning");

/// metering's own tables.
pub const METERING_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/metering");

/// team's own tables.
pub const TEAM_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/team");

/// The outbox and inbox tables every service has.
pub const PLATFORM_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/platform");

/// The migrations of one service: the platform's, then its own.
#[derive(Clone, Copy)]
pub struct Migrations {
    /// The schema they are applied to.
    pub schema: &'static str,
    /// The service's own migrations, applied after the platform's.
    pub own: Option<&'static EmbeddedMigrations>,
}

impl std::fmt::Debug for Migrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrations").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl MigrationSource<diesel::pg::Pg> for Migrations {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<diesel::pg::Pg>>>> {
        let mut all = MigrationSource::migrations(&PLATFORM_MIGRATIONS)?;
        if let Some(own) = self.own {
            all.extend(MigrationSource::migrations(own)?);
        }
        Ok(all)
    }
}

use diesel::migration::MigrationSource;

impl Migrations {
    /// Creates the schema if needed and applies every pending migration, under an advisory lock
    /// so concurrent runs take turns. Returns the versions applied.
    ///
    /// # Errors
    /// When Postgres cannot be reached or a migration fails (that migration is rolled back).
    pub async fn run(self, url: &str) -> anyhow::Result<Vec<String>> {
        let url = url_for_schema(url, self.schema);
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            use diesel::Connection;
            let mut c = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)?;
            // Replicas starting together (Kubernetes init containers) take turns; the second
            // finds nothing pending.
            let lock = format!("hashtext('hopsbridge_migrate_{}')", self.schema);
            diesel::RunQueryDsl::execute(diesel::sql_query(format!("SELECT pg_advisory_lock({lock})")), &mut c)?;
            let result = diesel::RunQueryDsl::execute(
                diesel::sql_query(format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema)),
                &mut c,
            )
            .map_err(anyhow::Error::from)
            .and_then(|_| c.run_pending_migrations(self).map_err(|e| anyhow::anyhow!("migration failed: {e}")))
            .map(|applied| applied.iter().map(ToString::to_string).collect());
            let _ =
                diesel::RunQueryDsl::execute(diesel::sql_query(format!("SELECT pg_advisory_unlock({lock})")), &mut c);
            result
        })
        .await?
    }

    /// Reverts every applied migration of this set, newest first (used to prove each one
    /// reverts).
    ///
    /// # Errors
    /// When a `down.sql` fails.
    pub async fn revert_all(self, url: &str) -> anyhow::Result<usize> {
        let url = url_for_schema(url, self.schema);
        tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            use diesel::Connection;
            let mut c = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)?;
            let reverted = c.revert_all_migrations(self).map_err(|e| anyhow::anyhow!("revert failed: {e}"))?;
            Ok(reverted.len())
        })
        .await?
    }
}

/// Runs `f` with a fresh connection outside the pool (for LISTEN, which needs a connection of
/// its own for as long as it listens).
///
/// # Errors
/// When the connection cannot be opened.
pub async fn dedicated_connection(cfg: &DatabaseConfig, schema: &str) -> Result<AsyncPgConnection, DbError> {
    AsyncPgConnection::establish(&url_for_schema(cfg.url.expose(), schema))
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// A readiness check that runs `SELECT 1` on a pooled connection.
#[derive(Debug, Clone)]
pub struct PostgresCheck(pub Database);

impl crate::http::ReadinessCheck for PostgresCheck {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn check(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.0.conn().await.map_err(|_| "unreachable".to_owned())?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await.map(|_| ()).map_err(|_| "query failed".to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{server_full, url_for_schema};

    #[test]
    fn only_a_full_server_is_waited_for() {
        assert!(server_full("Error occurred while creating a new object: FATAL:  sorry, too many clients already"));
        assert!(server_full("FATAL: remaining connection slots are reserved for roles with the SUPERUSER attribute"));
        assert!(server_full("FATAL: too many connections for role \"hb_full\""));
        assert!(!server_full("FATAL: password authentication failed for user \"postgres\""));
        assert!(!server_full("FATAL: database \"t_1\" does not exist"));
    }

    #[test]
    fn a_schemas_url_sets_its_search_path_and_names_the_service_unless_the_url_does() {
        assert_eq!(
            url_for_schema("postgres://db/hb", "billing"),
            "postgres://db/hb?options=-c%20search_path%3Dbilling&application_name=hopsbridge-billing"
        );
        assert_eq!(
            url_for_schema("postgres://db/hb?sslmode=require&application_name=ops", "team"),
            "postgres://db/hb?sslmode=require&application_name=ops&options=-c%20search_path%3Dteam"
        );
    }
}
