//! Postgres plumbing: migrations apply and revert, errors are classified, serialization
//! failures are retried, and a checkout waits for a Postgres whose connections are all taken.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::Service;
use hopsbridge_platform::db::{Database, DbError, migrations_for};
use hopsbridge_testkit::TestDb;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A database with nothing in it (not cloned from the migrated template): its URL, an admin
/// connection and its name, for dropping.
async fn empty_database() -> (String, AsyncPgConnection, String) {
    hopsbridge_testkit::init();
    let admin = hopsbridge_testkit::admin_database_url();
    let name = format!("t_{}_{}", hopsbridge_testkit::unix_now(), hopsbridge_testkit::random_suffix());
    let mut conn = AsyncPgConnection::establish(&admin).await.unwrap();
    diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    (url, conn, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_migration_applies_reverts_and_applies_again() {
    let (url, mut conn, name) = empty_database().await;
    for service in Service::WITH_DATA {
        let m = migrations_for(service);
        let applied = m.run(&url).await.unwrap();
        assert!(!applied.is_empty(), "{service}");
        assert!(m.run(&url).await.unwrap().is_empty(), "a second run applies nothing");
        assert_eq!(m.revert_all(&url).await.unwrap(), applied.len());
        assert_eq!(m.run(&url).await.unwrap(), applied);
    }
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_sees_only_its_own_schema() {
    let db = TestDb::new().await;
    let billing = Database::new(&db.config(), "billing").unwrap();
    let mut conn = billing.conn().await.unwrap();
    diesel::sql_query("CREATE TABLE customers (id int PRIMARY KEY)").execute(&mut conn).await.unwrap();
    let mut identity = db.connect("identity").await;
    let err = diesel::sql_query("SELECT * FROM customers").execute(&mut identity).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_are_classified() {
    let db = TestDb::new().await;
    let database = Database::new(&db.config(), "billing").unwrap();
    let mut conn = database.conn().await.unwrap();
    diesel::sql_query("CREATE TABLE scratch_accounts (id int PRIMARY KEY, owner int REFERENCES scratch_accounts(id))")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query("INSERT INTO scratch_accounts VALUES (1, NULL)").execute(&mut conn).await.unwrap();
    let dup = diesel::sql_query("INSERT INTO scratch_accounts VALUES (1, NULL)").execute(&mut conn).await.unwrap_err();
    assert!(
        matches!(DbError::from(dup), DbError::UniqueViolation { constraint } if constraint == "scratch_accounts_pkey")
    );
    let fk = diesel::sql_query("INSERT INTO scratch_accounts VALUES (2, 99)").execute(&mut conn).await.unwrap_err();
    assert!(matches!(DbError::from(fk), DbError::ForeignKeyViolation));
    assert!(matches!(DbError::from(diesel::result::Error::NotFound), DbError::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serialization_failure_is_retried_until_the_transaction_commits() {
    let db = TestDb::new().await;
    let database = Database::new(&db.config(), "billing").unwrap();
    let mut conn = database.conn().await.unwrap();
    diesel::sql_query("CREATE TABLE totals (n int NOT NULL)").execute(&mut conn).await.unwrap();
    drop(conn);

    // Two transactions each read the sum and insert sum + 1. Under SERIALIZABLE, with both
    // reading before either writes, one of them must fail with 40001 and run again.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new(AtomicUsize::new(0));
    let run = |database: Database, barrier: Arc<tokio::sync::Barrier>, attempts: Arc<AtomicUsize>| async move {
        database
            .transaction(|c| {
                let barrier = Arc::clone(&barrier);
                let attempts = Arc::clone(&attempts);
                Box::pin(async move {
                    let first = attempts.fetch_add(1, Ordering::SeqCst) < 2;
                    diesel::sql_query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").execute(c).await?;
                    diesel::sql_query("SELECT coalesce(sum(n), 0)::int AS n FROM totals").execute(c).await?;
                    if first {
                        barrier.wait().await;
                    }
                    diesel::sql_query("INSERT INTO totals SELECT coalesce(sum(n), 0) + 1 FROM totals")
                        .execute(c)
                        .await?;
                    Ok::<(), DbError>(())
                })
            })
            .await
    };
    let (a, b) = tokio::join!(
        run(database.clone(), Arc::clone(&barrier), Arc::clone(&attempts)),
        run(database.clone(), Arc::clone(&barrier), Arc::clone(&attempts))
    );
    a.unwrap();
    b.unwrap();
    assert!(AtomicUsize::load(&attempts, Ordering::SeqCst) >= 3, "one transaction ran again");
    let mut conn = database.conn().await.unwrap();
    #[derive(diesel::QueryableByName)]
    struct Sum {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        n: i32,
    }
    let sum: Sum = diesel::sql_query("SELECT sum(n)::int AS n FROM totals").get_result(&mut conn).await.unwrap();
    assert_eq!(sum.n, 1 + 2, "the retried transaction saw the first one's row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_at_once_take_turns() {
    let (url, mut conn, name) = empty_database().await;
    let m = migrations_for(Service::Billing);
    let (a, b, c) = tokio::join!(m.run(&url), m.run(&url), m.run(&url));
    let mut applied: Vec<usize> = [a, b, c].into_iter().map(|r| r.unwrap().len()).collect();
    applied.sort_unstable();
    assert_eq!(applied[..2], [0, 0], "only one of them applied anything");
    assert!(applied[2] > 0);
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
}

#[derive(diesel::QueryableByName)]
struct Pid {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

#[derive(diesel::QueryableByName)]
struct LastQuery {
    #[diesel(sql_type = diesel::sql_types::Text)]
    query: String,
}

async fn backend_pid(conn: &mut AsyncPgConnection) -> Result<i32, diesel::result::Error> {
    diesel::sql_query("SELECT pg_backend_pid() AS pid").get_result::<Pid>(conn).await.map(|p| p.pid)
}

async fn last_query(admin: &mut AsyncPgConnection, pid: i32) -> String {
    diesel::sql_query("SELECT query FROM pg_stat_activity WHERE pid = $1")
        .bind::<diesel::sql_types::Integer, _>(pid)
        .get_result::<LastQuery>(admin)
        .await
        .unwrap()
        .query
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_is_checked_with_a_query_only_after_sitting_idle() {
    let db = TestDb::new().await;
    let database = Database::new(&db.config(), "identity").unwrap();
    let mut admin = db.connect("identity").await;
    let pid = backend_pid(&mut database.conn().await.unwrap()).await.unwrap();

    // Taken again at once: no check query ran before the caller's own.
    let mut conn = database.conn().await.unwrap();
    assert_eq!(last_query(&mut admin, pid).await, "SELECT pg_backend_pid() AS pid");
    assert_eq!(backend_pid(&mut conn).await.unwrap(), pid, "the pool reuses its one connection");
    drop(conn);

    // Taken again after sitting idle for longer than the window: checked first.
    tokio::time::sleep(hopsbridge_platform::db::VERIFY_IDLE_AFTER + std::time::Duration::from_millis(100)).await;
    let mut conn = database.conn().await.unwrap();
    assert_eq!(last_query(&mut admin, pid).await, "SELECT 1");
    assert_eq!(backend_pid(&mut conn).await.unwrap(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_whose_sessions_ended_are_never_handed_out_again() {
    let db = TestDb::new().await;
    let database = Database::new(&db.config(), "identity").unwrap();
    let mut admin = db.connect("identity").await;
    let (mut a, mut b) = (database.conn().await.unwrap(), database.conn().await.unwrap());
    let ended = [backend_pid(&mut a).await.unwrap(), backend_pid(&mut b).await.unwrap()];
    drop((a, b));

    // What a restart of Postgres does to every session: it ends with FATAL 57P01 and the
    // socket is closed.
    for pid in ended {
        diesel::sql_query("SELECT pg_terminate_backend($1)")
            .bind::<diesel::sql_types::Integer, _>(pid)
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let mut gone = false;
    for _ in 0..100 {
        let left: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
            "(SELECT count(*) FROM pg_stat_activity WHERE pid IN ({}, {}))",
            ended[0], ended[1]
        )))
        .get_result(&mut admin)
        .await
        .unwrap();
        if left == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(gone, "the sessions ended");
    // Well inside the idle window, so no check query runs: only the connections' closed flag
    // (set when their tasks read the closed socket, which takes a moment) keeps them out.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut taken = Vec::new();
    for _ in 0..3 {
        let mut conn = database.conn().await.unwrap();
        let pid = backend_pid(&mut conn).await.expect("a working connection on the first try");
        assert!(!ended.contains(&pid), "{pid} was handed out again");
        taken.push(conn);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_waits_for_a_connection_slot_when_postgres_has_none_free() {
    // A role allowed one connection stands for a server whose every connection is taken (the
    // same refusal, SQLSTATE 53300); superusers, which the tests are, are not limited.
    let db = TestDb::new().await;
    let mut admin = db.connect("billing").await;
    let role = format!("hb_full_{}", hopsbridge_testkit::random_suffix());
    diesel::sql_query(format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")).execute(&mut admin).await.unwrap();
    let mut url = url::Url::parse(db.url()).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(None).unwrap();
    let held = AsyncPgConnection::establish(url.as_str()).await.unwrap();
    let mut cfg = db.config();
    cfg.url = url.to_string().into();
    cfg.acquire_timeout_secs = 10;
    let database = Database::new(&cfg, "billing").unwrap();

    let waiting = tokio::spawn(async move { database.conn().await.map(drop) });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the checkout waits instead of failing at once");
    drop(held);
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert!(got.is_ok(), "{got:?}");
    drop(admin);
    let mut admin = db.connect("billing").await;
    diesel::sql_query(format!("DROP ROLE {role}")).execute(&mut admin).await.unwrap();
}
