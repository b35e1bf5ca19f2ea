//! Online storage from RonDB (decision 0071): `ndbinfo.memory_per_fragment` read over MySQL's
//! protocol with the cluster's read-only account, summed per database.
//!
//! `memory_per_fragment` has one row per fragment replica. A table's rows are named
//! `<db>/def/<table>`; its ordered and unique indexes' rows `sys/def/<table id>/<index>`, with
//! the table in `parent_fq_name`. A database's size is the sum over its tables' and indexes'
//! fragments of the memory allocated to them (`fixed_elem_alloc_bytes`, `var_elem_alloc_bytes`,
//! `hash_index_alloc_bytes`), each fragment counted once (the largest of its replicas), so the
//! figure does not depend on the deployment's number of replicas. A project's online feature
//! store is the database named after the project in lower case (Hopsworks'
//! `OnlineFeaturestoreController.getOnlineFeaturestoreDbName`).

use crate::clusters::RonDbAccess;
use mysql_async::prelude::Queryable;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The one statement sent.
pub const QUERY: &str = "SELECT fq_name, parent_fq_name, fragment_num, fixed_elem_alloc_bytes, \
    var_elem_alloc_bytes, hash_index_alloc_bytes FROM ndbinfo.memory_per_fragment";

/// Why RonDB could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The endpoint does not answer (refused, unreachable, timed out).
    #[error("RonDB at {endpoint} cannot be reached: {detail}")]
    Unreachable {
        /// `host:port`.
        endpoint: String,
        /// What failed.
        detail: String,
    },
    /// The account or its password is refused (MySQL error 1045).
    #[error("RonDB refused the account: {0}")]
    AccessDenied(String),
    /// The account may not read `ndbinfo.memory_per_fragment` (1044, 1142).
    #[error("the account may not read ndbinfo.memory_per_fragment: {0}: grant SELECT ON ndbinfo.* to it")]
    NoGrant(String),
    /// Any other failure.
    #[error("reading ndbinfo.memory_per_fragment failed: {0}")]
    Failed(String),
}

impl ReadError {
    /// A short stable reason, for storage gaps.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "rondb_unreachable",
            Self::AccessDenied(_) => "rondb_access_denied",
            Self::NoGrant(_) => "rondb_no_grant",
            Self::Failed(_) => "rondb_failed",
        }
    }
}

/// `host` and `port` of `host:port` (`[v6]:port`).
#[must_use]
pub fn split_endpoint(endpoint: &str) -> Option<(String, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let valid = !host.is_empty() && !host.contains(['[', ']', '/', '@', ' ']) && !host.chars().any(char::is_control);
    valid.then(|| (host.to_owned(), port))
}

fn classify(endpoint: &str, e: mysql_async::Error) -> ReadError {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            1045 | 1698 => ReadError::AccessDenied(format!("{} ({})", s.message, s.code)),
            1044 | 1142 | 1143 => ReadError::NoGrant(format!("{} ({})", s.message, s.code)),
            _ => ReadError::Failed(format!("{} ({})", s.message, s.code)),
        },
        mysql_async::Error::Io(io) => ReadError::Unreachable { endpoint: endpoint.to_owned(), detail: io.to_string() },
        other => ReadError::Failed(other.to_string()),
    }
}

/// The database a row's memory belongs to: its own for a table, its table's for an index.
fn database_of<'a>(fq_name: &'a str, parent: &'a str) -> &'a str {
    let owner = if fq_name.starts_with("sys/def/") && !parent.is_empty() { parent } else { fq_name };
    owner.split('/').next().unwrap_or(owner)
}

type Row = (String, String, u32, u64, u64, u64);

/// Each database's allocated bytes from `memory_per_fragment`'s rows.
///
/// # Errors
/// A sum beyond `u64`.
pub fn sum_by_database(rows: &[Row]) -> Result<BTreeMap<String, u64>, ReadError> {
    let overflow = || ReadError::Failed("the sizes overflow".to_owned());
    let mut fragments: HashMap<(&str, u32), (&str, u64)> = HashMap::new();
    for (fq_name, parent, num, fixed, var, hash) in rows {
        let bytes = fixed.checked_add(*var).and_then(|b| b.checked_add(*hash)).ok_or_else(overflow)?;
        let db = database_of(fq_name, parent);
        let entry = fragments.entry((fq_name.as_str(), *num)).or_insert((db, 0));
        entry.1 = entry.1.max(bytes);
    }
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (db, bytes) in fragments.into_values() {
        let total = out.entry(db.to_owned()).or_insert(0);
        *total = total.checked_add(bytes).ok_or_else(overflow)?;
    }
    Ok(out)
}

/// Reads `memory_per_fragment` with `access` and answers each database's allocated bytes,
/// within `timeout` for the whole exchange.
///
/// # Errors
/// [`ReadError`].
pub async fn database_bytes(access: &RonDbAccess, timeout: Duration) -> Result<BTreeMap<String, u64>, ReadError> {
    let Some((host, port)) = split_endpoint(&access.endpoint) else {
        return Err(ReadError::Failed(format!("{:?} is not host:port", access.endpoint)));
    };
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(access.user.clone()))
        .pass(Some(access.password.expose().clone()))
        .prefer_socket(false)
        // Known up front, so the client asks the server nothing before the query.
        .max_allowed_packet(Some(16 << 20))
        .wait_timeout(Some(60))
        .stmt_cache_size(0);
    let read = async {
        let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| classify(&access.endpoint, e))?;
        let rows: Vec<Row> = conn.query(QUERY).await.map_err(|e| classify(&access.endpoint, e))?;
        // The answer is in; a failing goodbye changes nothing.
        let _ = conn.disconnect().await;
        sum_by_database(&rows)
    };
    tokio::time::timeout(timeout, read).await.unwrap_or_else(|_| {
        Err(ReadError::Unreachable {
            endpoint: access.endpoint.clone(),
            detail: format!("no answer within {} ms", timeout.as_millis()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fq: &str, parent: &str, num: u32, fixed: u64, var: u64, hash: u64) -> Row {
        (fq.to_owned(), parent.to_owned(), num, fixed, var, hash)
    }

    #[test]
    fn fragments_count_once_and_indexes_belong_to_their_tables_database() {
        let rows = vec![
            row("alpha/def/fg_1", "", 0, 100, 10, 1),
            row("alpha/def/fg_1", "", 0, 100, 10, 1),
            row("alpha/def/fg_1", "", 1, 200, 0, 0),
            row("alpha/def/fg_1", "", 1, 190, 0, 0),
            row("sys/def/14/PRIMARY", "alpha/def/fg_1", 0, 50, 0, 0),
            row("sys/def/SYSTAB_0", "", 0, 999, 0, 0),
            row("beta/def/t", "", 0, 7, 0, 0),
        ];
        let sums = sum_by_database(&rows).unwrap_or_default();
        assert_eq!(sums.get("alpha"), Some(&(111 + 200 + 50)));
        assert_eq!(sums.get("beta"), Some(&7));
        assert_eq!(sums.get("sys"), Some(&999));
        assert!(sum_by_database(&[row("a/def/t", "", 0, u64::MAX, 1, 0)]).is_err());
    }

    #[test]
    fn endpoints_are_host_and_port() {
        assert_eq!(split_endpoint("rondb.internal:3306"), Some(("rondb.internal".to_owned(), 3306)));
        assert_eq!(split_endpoint("[fd00::1]:13001"), Some(("fd00::1".to_owned(), 13001)));
        assert_eq!(split_endpoint("rondb.internal"), None);
        assert_eq!(split_endpoint(":3306"), None);
        assert_eq!(split_endpoint("host:0"), None);
        assert_eq!(split_endpoint("host:99999"), None);
        assert_eq!(split_endpoint("user@host:3306"), None);
    }
}
