//! A database per test, cloned from a migrated template.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::Service;
use hopsbridge_platform::db::migrations_for;
use std::time::Duration;

/// A database of its own, with every service's schema migrated; dropped with the value.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// Clones a fresh database from the template (building the template first if the
    /// migrations changed since it was built).
    pub async fn new() -> Self {
        crate::init();
        let admin = crate::admin_database_url();
        let template = ensure_template(&admin).await;
        let name = format!("t_{}_{}", crate::unix_now(), crate::random_suffix());
        let mut conn = establish(&admin).await;
        // CREATE DATABASE ... TEMPLATE fails while another session is connected to the template
        // (a concurrent clone); a short retry covers it.
        let mut attempt = 0;
        loop {
            match diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}")).execute(&mut conn).await {
                Ok(_) => break,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "retrying database clone");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        let url = replace_database(&admin, &name);
        Self { name, url }
    }

    /// The database's URL (no schema selected; services add their own `search_path`).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A database config for a service, pointing here.
    #[must_use]
    pub fn config(&self) -> hopsbridge_platform::config::DatabaseConfig {
        hopsbridge_platform::config::DatabaseConfig {
            url: self.url.clone().into(),
            max_connections: 3,
            acquire_timeout_secs: 5,
            migrate_on_start: false,
        }
    }

    /// A connection whose `search_path` is `schema` (waiting as [`establish`] does).
    pub async fn connect(&self, schema: &str) -> AsyncPgConnection {
        establish(&hopsbridge_platform::db::url_for_schema(&self.url, schema)).await
    }
}

/// A connection to `url`. While Postgres has no connection slot free (tests running side by
/// side, each with its services' pools) or a test has made the database refuse connections (a
/// simulated Postgres restart, `ALLOW_CONNECTIONS false`), it waits, up to 30 s.
async fn establish(url: &str) -> AsyncPgConnection {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match AsyncPgConnection::establish(url).await {
            Ok(conn) => return conn,
            Err(e) if passing(&e.to_string()) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect to the test Postgres (is it running?): {e:?}"),
        }
    }
}

/// Whether a connection error is one that passes by itself.
fn passing(error: &str) -> bool {
    hopsbridge_platform::db::server_full(error) || error.contains("is not currently accepting connections")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::block_on_side(async move {
            if let Ok(mut conn) = AsyncPgConnection::establish(&crate::admin_database_url()).await {
                let _ =
                    diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
            }
        });
    }
}

fn replace_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl TestDb {
    /// Waits up to `within` until `schema`'s inbox records event `id` as handled (by any
    /// consumer); answers whether it did.
    pub async fn handled(&self, schema: &str, id: &str, within: Duration) -> bool {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        crate::eventually(within, || async {
            let mut conn = self.connect(schema).await;
            diesel::sql_query("SELECT count(*) AS n FROM inbox WHERE event_id = $1::uuid")
                .bind::<diesel::sql_types::Text, _>(id)
                .get_result::<Count>(&mut conn)
                .await
                .is_ok_and(|c| c.n > 0)
        })
        .await
    }
}

/// Builds `hb_tpl_<fingerprint>` once, under an advisory lock so that concurrent test
/// processes wait for one builder; sweeps leftovers of earlier runs.
async fn ensure_template(admin: &str) -> String {
    // Named after the migrations this binary embeds: a binary built before a migration changed
    // builds (or uses) its own template, never one named after files it does not apply.
    let name = format!("hb_tpl_{}", hopsbridge_platform::db::MIGRATIONS_FINGERPRINT);
    let mut conn = establish(admin).await;
    diesel::sql_query("SELECT pg_advisory_lock(727274)").execute(&mut conn).await.expect("advisory lock");
    let exists = database_exists(&mut conn, &name).await;
    if !exists {
        sweep(&mut conn).await;
        let building = format!("{name}_building");
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)")).execute(&mut conn).await;
        diesel::sql_query(format!("CREATE DATABASE {building}")).execute(&mut conn).await.expect("create template");
        let url = replace_database(admin, &building);
        for service in Service::WITH_DATA {
            migrations_for(service).run(&url).await.expect("migrate the template");
        }
        // No session may stay connected to a template.
        let _ = diesel::sql_query(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{building}' AND pid <> pg_backend_pid()"
        ))
        .execute(&mut conn)
        .await;
        diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut conn)
            .await
            .expect("publish template");
    }
    diesel::sql_query("SELECT pg_advisory_unlock(727274)").execute(&mut conn).await.expect("advisory unlock");
    name
}

#[derive(diesel::QueryableByName)]
struct DbName {
    #[diesel(sql_type = diesel::sql_types::Text)]
    datname: String,
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> bool {
    let rows: Vec<DbName> = diesel::sql_query("SELECT datname FROM pg_database WHERE datname = $1")
        .bind::<diesel::sql_types::Text, _>(name)
        .load(conn)
        .await
        .unwrap_or_default();
    !rows.is_empty()
}

/// Drops test databases older than an hour and templates of older migrations.
async fn sweep(conn: &mut AsyncPgConnection) {
    let rows: Vec<DbName> =
        diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%' OR datname LIKE 'hb\\_tpl\\_%'")
            .load(conn)
            .await
            .unwrap_or_default();
    let cutoff = crate::unix_now().saturating_sub(3600);
    for DbName { datname } in rows {
        let stale = if datname.starts_with("hb_tpl_") {
            true
        } else {
            datname.split('_').nth(1).and_then(|t| t.parse::<u64>().ok()).is_some_and(|t| t < cutoff)
        };
        if stale {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {datname} WITH (FORCE)")).execute(conn).await;
        }
    }
}
