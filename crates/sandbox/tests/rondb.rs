//! The simulated RonDB MySQL server, driven by a real MySQL client (mysql_async): the reader
//! account reads `ndbinfo.memory_per_fragment` (one row per fragment replica, tables and their
//! indexes, system databases beside the projects'), wrong passwords are refused with 1045,
//! missing grants with 1044 and 1142, other statements with MySQL's errors, and the faults
//! (down, slow) behave as a stopped or loaded server does.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use hopsbridge_sandbox::rondb::{Grant, READER_USER, REPLICA_NODES, RonDbSim, Table};
use mysql_async::prelude::Queryable;
use std::time::{Duration, Instant};

fn opts(sim: &RonDbSim, user: &str, password: &str, db: Option<&str>) -> mysql_async::Opts {
    let (host, port) = sim.endpoint().rsplit_once(':').map(|(h, p)| (h.to_owned(), p.parse().unwrap())).unwrap();
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(db)
        .prefer_socket(false)
        .max_allowed_packet(Some(16 << 20))
        .wait_timeout(Some(60))
        .into()
}

fn server_error(e: mysql_async::Error) -> (u16, String, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state, s.message),
        other => panic!("not a server error: {other:?}"),
    }
}

type Row = (String, String, String, u32, u32, u32, u64, u64, u64);
const QUERY: &str = "SELECT fq_name, parent_fq_name, type, table_id, node_id, fragment_num, fixed_elem_alloc_bytes, \
                     var_elem_alloc_bytes, hash_index_alloc_bytes FROM ndbinfo.memory_per_fragment";

#[tokio::test]
async fn the_reader_reads_memory_per_fragment_row_by_fragment_replica() {
    let sim = RonDbSim::start().unwrap();
    sim.set_database(
        "fraud_model",
        vec![Table::holding("fg_1", 1_000_003, 4, 4_096), Table::holding("fg_2", 10, 2, 0)],
    );
    let mut conn = mysql_async::Conn::new(opts(&sim, READER_USER, sim.password(), None)).await.unwrap();
    let rows: Vec<Row> = conn.query(QUERY).await.unwrap();
    let ours: Vec<&Row> =
        rows.iter().filter(|r| r.0.starts_with("fraud_model/") || r.1.starts_with("fraud_model/")).collect();
    // fg_1: 4 fragments and 4 index fragments; fg_2: 2 and 2; each on every replica node.
    assert_eq!(ours.len(), (4 + 4 + 2 + 2) * REPLICA_NODES.len());
    let index: Vec<&&Row> = ours.iter().filter(|r| r.2 == "Ordered index").collect();
    assert_eq!(index.len(), (4 + 2) * REPLICA_NODES.len());
    assert!(index.iter().all(|r| r.0.starts_with("sys/def/") && r.1.starts_with("fraud_model/def/fg_")));
    let once: u64 = ours.iter().filter(|r| r.4 == REPLICA_NODES[0]).map(|r| r.6 + r.7 + r.8).sum();
    assert_eq!(once, 1_000_003 + 4_096 + 10);
    assert_eq!(sim.allocated_bytes("fraud_model"), Some(once));
    // System databases and Hopsworks' own are there too, belonging to no project.
    for db in ["sys/def/", "mysql/def/", "hopsworks/def/"] {
        assert!(rows.iter().any(|r| r.0.starts_with(db)), "{db}");
    }
    assert!(rows.iter().any(|r| r.2 == "System table"));
    // `*` and a database named at connection work as MySQL's do.
    let mut in_db = mysql_async::Conn::new(opts(&sim, READER_USER, sim.password(), Some("ndbinfo"))).await.unwrap();
    let all: Vec<mysql_async::Row> = in_db.query("select * from memory_per_fragment;").await.unwrap();
    assert_eq!((all.len(), all[0].len()), (rows.len(), 16));
    // What the sandbox does not implement answers MySQL's errors, and the connection goes on.
    let (code, _, message) = server_error(conn.query_drop("DROP TABLE x").await.unwrap_err());
    assert_eq!(code, 1064, "{message}");
    let (code, _, _) = server_error(conn.query_drop(format!("{QUERY} WHERE node_id = 1")).await.unwrap_err());
    assert_eq!(code, 1235);
    let (code, state, message) =
        server_error(conn.query_drop("SELECT bytes FROM ndbinfo.memory_per_fragment").await.unwrap_err());
    assert_eq!((code, state.as_str(), message.as_str()), (1054, "42S22", "Unknown column 'bytes' in 'field list'"));
    let (code, _, _) = server_error(conn.query_drop("SELECT a FROM ndbinfo.no_such").await.unwrap_err());
    assert_eq!(code, 1146);
    conn.ping().await.unwrap();
    assert!(sim.queries().iter().any(|(u, q)| u == READER_USER && q == QUERY));
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn wrong_passwords_and_missing_grants_are_refused_as_mysql_refuses_them() {
    let sim = RonDbSim::start().unwrap();
    let (code, state, message) =
        server_error(mysql_async::Conn::new(opts(&sim, READER_USER, "not-it", None)).await.unwrap_err());
    assert_eq!((code, state.as_str()), (1045, "28000"));
    assert_eq!(message, format!("Access denied for user '{READER_USER}'@'127.0.0.1' (using password: YES)"));
    let (code, _, _) = server_error(mysql_async::Conn::new(opts(&sim, "nobody", "x", None)).await.unwrap_err());
    assert_eq!(code, 1045);

    // An account with a grant on another ndbinfo table: it may use ndbinfo, not read the table.
    sim.add_account("nodes_only", "pw", vec![Grant::Table("ndbinfo".into(), "nodes".into())]);
    let mut conn = mysql_async::Conn::new(opts(&sim, "nodes_only", "pw", None)).await.unwrap();
    let (code, state, message) = server_error(conn.query_drop(QUERY).await.unwrap_err());
    assert_eq!((code, state.as_str()), (1142, "42000"));
    assert_eq!(message, "SELECT command denied to user 'nodes_only'@'127.0.0.1' for table 'memory_per_fragment'");
    // An account without any grant there may not even name the database.
    sim.add_account("none", "pw", vec![]);
    let (code, _, message) =
        server_error(mysql_async::Conn::new(opts(&sim, "none", "pw", Some("ndbinfo"))).await.unwrap_err());
    assert_eq!((code, message.as_str()), (1044, "Access denied for user 'none'@'127.0.0.1' to database 'ndbinfo'"));
    let mut none = mysql_async::Conn::new(opts(&sim, "none", "pw", None)).await.unwrap();
    assert_eq!(server_error(none.query_drop(QUERY).await.unwrap_err()).0, 1142);
}

#[tokio::test]
async fn a_server_that_is_down_refuses_connections_and_a_slow_one_answers_late() {
    let sim = RonDbSim::start().unwrap();
    sim.set_down(true).await.unwrap();
    let err = mysql_async::Conn::new(opts(&sim, READER_USER, sim.password(), None)).await.unwrap_err();
    assert!(matches!(err, mysql_async::Error::Io(_)), "{err:?}");
    sim.set_down(false).await.unwrap();
    let mut conn = mysql_async::Conn::new(opts(&sim, READER_USER, sim.password(), None)).await.unwrap();
    sim.set_delay(Some(Duration::from_millis(300)));
    let started = Instant::now();
    let rows: Vec<Row> = conn.query(QUERY).await.unwrap();
    assert!(!rows.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
}
