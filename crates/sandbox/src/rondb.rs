//! RonDB's MySQL server of one cluster, as provisioning reads online storage from it
//! (decision 0071): the MySQL wire protocol on loopback (handshake v10,
//! `mysql_native_password`, text queries), accounts with grants, and the `ndbinfo` table
//! `memory_per_fragment` computed from a storage model of databases, tables and fragments.
//!
//! Faithful to MySQL 8 / RonDB where provisioning meets it:
//! - a wrong password or an unknown user is refused at connection with error 1045 (SQLSTATE
//!   28000, "Access denied for user 'u'@'host' (using password: YES)");
//! - naming a database the account holds no grant in is refused with 1044 ("Access denied for
//!   user … to database …"); reading a table the account has no `SELECT` on answers 1142
//!   ("SELECT command denied to user … for table …");
//! - `memory_per_fragment` has one row per fragment replica: every fragment of every table and
//!   ordered index on each of the node group's data nodes (two replicas here), `fq_name`
//!   `<db>/def/<table>` for tables and `sys/def/<table id>/<index>` for indexes (their
//!   `parent_fq_name` names the table), and the system databases' tables (`mysql`, `sys`,
//!   Hopsworks' own `hopsworks`) beside the projects';
//! - an unknown table is 1146, an unknown column 1054.
//!
//! Only what provisioning sends is understood: `SELECT <columns> FROM
//! ndbinfo.memory_per_fragment` (or `*`), `COM_PING`, `COM_INIT_DB` and `COM_QUIT`; any other
//! statement answers 1064 (not a `SELECT`) or 1235 (a form the sandbox does not implement).
//! No TLS: the sandbox does not offer `CLIENT_SSL`. A connection is made with a database
//! named or without one.
//!
//! Faults: [`RonDbSim::set_down`] closes the port (connections are refused, as a stopped
//! server's), [`RonDbSim::set_delay`] holds every answer.

mod sql;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The account the sandbox's clusters give provisioning: `SELECT` on `ndbinfo.*` only.
pub const READER_USER: &str = "hopsbridge_meter";

/// Data nodes holding a replica of each fragment (RonDB's default `NoOfReplicas` of 2).
pub const REPLICA_NODES: [u32; 2] = [1, 2];

/// The memory of one fragment (one replica), as `memory_per_fragment` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Bytes allocated to fixed-size elements (rows' fixed part).
    pub fixed_elem_alloc_bytes: u64,
    /// Free bytes in the pages allocated to fixed-size elements.
    pub fixed_elem_free_bytes: u64,
    /// Bytes allocated to variable-size elements.
    pub var_elem_alloc_bytes: u64,
    /// Free bytes in the pages allocated to variable-size elements.
    pub var_elem_free_bytes: u64,
    /// Bytes allocated to the fragment's hash index.
    pub hash_index_alloc_bytes: u64,
}

impl Fragment {
    /// The allocated bytes: fixed, variable and hash index (what a client sums per fragment).
    #[must_use]
    pub const fn allocated(&self) -> u64 {
        self.fixed_elem_alloc_bytes + self.var_elem_alloc_bytes + self.hash_index_alloc_bytes
    }
}

/// One table of a database: its fragments, and its ordered indexes' fragments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Name in its database.
    pub name: String,
    /// Its fragments (`fragment_num` is the position).
    pub fragments: Vec<Fragment>,
    /// Ordered indexes: name and fragments.
    pub indexes: Vec<(String, Vec<Fragment>)>,
}

impl Table {
    /// A table of `fragments` fragments holding `bytes` allocated between them: each
    /// fragment's share split into fixed, variable and hash index memory, the remainder in
    /// the last one, with some free bytes in the pages; and a `PRIMARY` ordered index of
    /// `index_bytes` over the same fragments.
    #[must_use]
    pub fn holding(name: &str, bytes: u64, fragments: u32, index_bytes: u64) -> Self {
        let n = u64::from(fragments.max(1));
        let split = |total: u64| -> Vec<Fragment> {
            (0..n)
                .map(|i| {
                    let share = total / n + if i + 1 == n { total % n } else { 0 };
                    let fixed = share / 2;
                    let var = share / 4;
                    Fragment {
                        fixed_elem_alloc_bytes: fixed,
                        fixed_elem_free_bytes: fixed / 8,
                        var_elem_alloc_bytes: var,
                        var_elem_free_bytes: var / 16,
                        hash_index_alloc_bytes: share - fixed - var,
                    }
                })
                .collect()
        };
        let index = (0..n)
            .map(|i| Fragment {
                fixed_elem_alloc_bytes: index_bytes / n + if i + 1 == n { index_bytes % n } else { 0 },
                ..Fragment::default()
            })
            .collect();
        Self { name: name.to_owned(), fragments: split(bytes), indexes: vec![("PRIMARY".to_owned(), index)] }
    }

    /// The table's allocated bytes, tables' and indexes' fragments each counted once.
    #[must_use]
    pub fn allocated(&self) -> u64 {
        self.fragments.iter().chain(self.indexes.iter().flat_map(|(_, f)| f)).map(Fragment::allocated).sum()
    }
}

/// What an account may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `GRANT SELECT ON <db>.*`.
    Database(String),
    /// `GRANT SELECT ON <db>.<table>`.
    Table(String, String),
}

#[derive(Clone, Debug)]
struct Account {
    password: String,
    grants: Vec<Grant>,
}

impl Account {
    fn can_use(&self, db: &str) -> bool {
        self.grants.iter().any(|g| match g {
            Grant::Database(d) | Grant::Table(d, _) => d.eq_ignore_ascii_case(db),
        })
    }

    fn can_select(&self, db: &str, table: &str) -> bool {
        self.grants.iter().any(|g| match g {
            Grant::Database(d) => d.eq_ignore_ascii_case(db),
            Grant::Table(d, t) => d.eq_ignore_ascii_case(db) && t.eq_ignore_ascii_case(table),
        })
    }
}

/// A table as stored: with the table id RonDB gave it.
#[derive(Clone, Debug)]
struct Stored {
    id: u32,
    system: bool,
    table: Table,
}

#[derive(Debug)]
struct State {
    accounts: HashMap<String, Account>,
    databases: BTreeMap<String, Vec<Stored>>,
    next_table_id: u32,
    delay: Option<Duration>,
    queries: Vec<(String, String)>,
}

impl State {
    fn put(&mut self, db: &str, tables: Vec<Table>, system: bool) {
        let mut stored = Vec::with_capacity(tables.len());
        for table in tables {
            let known =
                self.databases.get(db).and_then(|t| t.iter().find(|s| s.table.name == table.name)).map(|s| s.id);
            let id = if let Some(id) = known {
                id
            } else {
                self.next_table_id += 1;
                self.next_table_id
            };
            stored.push(Stored { id, system, table });
        }
        self.databases.insert(db.to_owned(), stored);
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulated RonDB MySQL server.
#[derive(Debug)]
pub struct RonDbSim {
    addr: SocketAddr,
    password: String,
    inner: Arc<Inner>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl RonDbSim {
    /// Binds `127.0.0.1:0` and serves with the reader account ([`READER_USER`], a random
    /// password, `SELECT` on `ndbinfo.*`), Hopsworks' own and RonDB's system databases, and no
    /// project database yet.
    ///
    /// Serves on the calling Tokio runtime.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn start() -> std::io::Result<Self> {
        let password = wire::random_text(24);
        let mut state = State {
            accounts: HashMap::new(),
            databases: BTreeMap::new(),
            next_table_id: 1,
            delay: None,
            queries: Vec::new(),
        };
        state.accounts.insert(
            READER_USER.to_owned(),
            Account { password: password.clone(), grants: vec![Grant::Database("ndbinfo".to_owned())] },
        );
        state.put("sys", vec![Table::holding("SYSTAB_0", 32_768, 1, 0)], true);
        state.put("mysql", vec![Table::holding("ndb_schema", 262_144, 2, 8_192)], true);
        state.put(
            "hopsworks",
            vec![Table::holding("users", 1 << 20, 2, 65_536), Table::holding("project", 1 << 19, 2, 32_768)],
            false,
        );
        let inner = Arc::new(Inner { state: Mutex::new(state) });
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(wire::serve(listener, Arc::clone(&inner)));
        Ok(Self { addr, password, inner, listener: Mutex::new(Some(task)) })
    }

    /// `127.0.0.1:<port>`: the endpoint a cluster registers.
    #[must_use]
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The reader account's password.
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Adds (or replaces) an account.
    pub fn add_account(&self, user: &str, password: &str, grants: Vec<Grant>) {
        lock(&self.inner.state).accounts.insert(user.to_owned(), Account { password: password.to_owned(), grants });
    }

    /// From now on database `db` (a project's online feature store: the project's name in
    /// lower case) holds `tables`; table ids stay with table names.
    pub fn set_database(&self, db: &str, tables: Vec<Table>) {
        lock(&self.inner.state).put(db, tables, false);
    }

    /// Drops database `db`.
    pub fn drop_database(&self, db: &str) {
        lock(&self.inner.state).databases.remove(db);
    }

    /// What database `db` holds allocated (each fragment once, not per replica).
    #[must_use]
    pub fn allocated_bytes(&self, db: &str) -> Option<u64> {
        lock(&self.inner.state).databases.get(db).map(|t| t.iter().map(|s| s.table.allocated()).sum())
    }

    /// Every answer waits `delay` first (`None`: none).
    pub fn set_delay(&self, delay: Option<Duration>) {
        lock(&self.inner.state).delay = delay;
    }

    /// Down: the port is closed and connections are refused; up: it is bound again.
    ///
    /// # Errors
    /// When the port cannot be bound again.
    pub async fn set_down(&self, down: bool) -> std::io::Result<()> {
        let running = lock(&self.listener).take();
        if let Some(task) = running {
            task.abort();
            let _ = task.await;
        }
        if !down {
            let listener = TcpListener::bind(self.addr).await?;
            *lock(&self.listener) = Some(tokio::spawn(wire::serve(listener, Arc::clone(&self.inner))));
        }
        Ok(())
    }

    /// The statements received, as (user, statement), oldest first.
    #[must_use]
    pub fn queries(&self) -> Vec<(String, String)> {
        lock(&self.inner.state).queries.clone()
    }
}

impl Drop for RonDbSim {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.listener).take() {
            task.abort();
        }
    }
}
