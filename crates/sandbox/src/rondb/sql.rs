//! The statements the sandbox's RonDB understands, and `ndbinfo.memory_per_fragment` computed
//! from the storage model.

use super::{Account, REPLICA_NODES, State};

/// A MySQL error: code, SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SqlError {
    pub(super) code: u16,
    pub(super) state: [u8; 5],
    pub(super) message: String,
}

impl SqlError {
    fn new(code: u16, state: &[u8; 5], message: String) -> Self {
        Self { code, state: *state, message }
    }

    /// 1045: wrong password or unknown user.
    pub(super) fn access_denied(user: &str, host: &str, with_password: bool) -> Self {
        let using = if with_password { "YES" } else { "NO" };
        Self::new(1045, b"28000", format!("Access denied for user '{user}'@'{host}' (using password: {using})"))
    }

    /// 1044: no grant in the database.
    pub(super) fn db_access_denied(user: &str, host: &str, db: &str) -> Self {
        Self::new(1044, b"42000", format!("Access denied for user '{user}'@'{host}' to database '{db}'"))
    }

    /// 1049: no such database.
    pub(super) fn unknown_database(db: &str) -> Self {
        Self::new(1049, b"42000", format!("Unknown database '{db}'"))
    }

    /// 1047: a command the server does not take.
    pub(super) fn unknown_command() -> Self {
        Self::new(1047, b"08S01", "Unknown command".to_owned())
    }

    fn syntax(near: &str) -> Self {
        Self::new(
            1064,
            b"42000",
            format!(
                "You have an error in your SQL syntax; check the manual that corresponds to your MySQL server \
                 version for the right syntax to use near '{near}' at line 1"
            ),
        )
    }

    fn unsupported(what: &str) -> Self {
        Self::new(1235, b"42000", format!("This version of MySQL doesn't yet support '{what}'"))
    }
}

/// How a column is typed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Int,
    BigInt,
}

/// A result set: column names and types, and rows of text values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResultSet {
    pub(super) schema: &'static str,
    pub(super) table: &'static str,
    pub(super) columns: Vec<(&'static str, Kind)>,
    pub(super) rows: Vec<Vec<String>>,
}

const COLUMNS: [(&str, Kind); 16] = [
    ("fq_name", Kind::Text),
    ("parent_fq_name", Kind::Text),
    ("type", Kind::Text),
    ("table_id", Kind::Int),
    ("node_id", Kind::Int),
    ("block_instance", Kind::Int),
    ("fragment_num", Kind::Int),
    ("fixed_elem_alloc_bytes", Kind::BigInt),
    ("fixed_elem_free_bytes", Kind::BigInt),
    ("fixed_elem_size_bytes", Kind::BigInt),
    ("fixed_elem_count", Kind::BigInt),
    ("fixed_elem_free_count", Kind::BigInt),
    ("var_elem_alloc_bytes", Kind::BigInt),
    ("var_elem_free_bytes", Kind::BigInt),
    ("var_elem_count", Kind::BigInt),
    ("hash_index_alloc_bytes", Kind::BigInt),
];

/// The `ndbinfo` tables that exist (only `memory_per_fragment` is served).
const NDBINFO_TABLES: [&str; 6] =
    ["memory_per_fragment", "memoryusage", "nodes", "table_fragments", "dict_obj_types", "cluster_operations"];

/// Fixed-size element length the sandbox reports (bytes per row's fixed part).
const FIXED_ELEM_SIZE: u64 = 64;

/// Every row of `memory_per_fragment`, all columns, in the order of [`COLUMNS`].
fn memory_per_fragment(state: &State) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (db, tables) in &state.databases {
        for stored in tables {
            let table_name = format!("{db}/def/{}", stored.table.name);
            let kind = if stored.system { "System table" } else { "User table" };
            let objects = std::iter::once((
                table_name.clone(),
                String::new(),
                kind,
                stored.id,
                &stored.table.fragments,
            ))
            .chain(stored.table.indexes.iter().map(|(index, fragments)| {
                (format!("sys/def/{}/{index}", stored.id), table_name.clone(), "Ordered index", stored.id, fragments)
            }));
            for (fq_name, parent, kind, table_id, fragments) in objects {
                for (num, f) in fragments.iter().enumerate() {
                    for node in REPLICA_NODES {
                        let count = f.fixed_elem_alloc_bytes.saturating_sub(f.fixed_elem_free_bytes) / FIXED_ELEM_SIZE;
                        let free_count = f.fixed_elem_free_bytes / FIXED_ELEM_SIZE;
                        rows.push(vec![
                            fq_name.clone(),
                            parent.clone(),
                            kind.to_owned(),
                            table_id.to_string(),
                            node.to_string(),
                            (1 + num % 4).to_string(),
                            num.to_string(),
                            f.fixed_elem_alloc_bytes.to_string(),
                            f.fixed_elem_free_bytes.to_string(),
                            FIXED_ELEM_SIZE.to_string(),
                            count.to_string(),
                            free_count.to_string(),
                            f.var_elem_alloc_bytes.to_string(),
                            f.var_elem_free_bytes.to_string(),
                            count.to_string(),
                            f.hash_index_alloc_bytes.to_string(),
                        ]);
                    }
                }
            }
        }
    }
    rows
}

/// Runs `statement` for `account` (`user`@`host`) with `db` the current database.
pub(super) fn run(
    state: &State,
    account: &Account,
    user: &str,
    host: &str,
    db: Option<&str>,
    statement: &str,
) -> Result<ResultSet, SqlError> {
    let text = statement.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some(first) = words.first() else {
        return Err(SqlError::new(1065, b"42000", "Query was empty".to_owned()));
    };
    if !first.eq_ignore_ascii_case("select") {
        return Err(
            if ["show", "use", "set", "describe", "explain", "with"].iter().any(|w| first.eq_ignore_ascii_case(w)) {
                SqlError::unsupported(text)
            } else {
                SqlError::syntax(text)
            },
        );
    }
    let normal = words.join(" ");
    let lower = normal.to_ascii_lowercase();
    let Some(from) = lower.find(" from ") else {
        return Err(SqlError::unsupported(text));
    };
    let columns_text = normal.get("select ".len()..from).unwrap_or_default();
    let rest: Vec<&str> = normal.get(from + " from ".len()..).unwrap_or_default().split(' ').collect();
    let [table_ref] = rest.as_slice() else {
        return Err(SqlError::unsupported(text));
    };
    let table_ref = table_ref.replace('`', "");
    let (schema, table) = match table_ref.split_once('.') {
        Some((s, t)) => (s.to_owned(), t.to_owned()),
        None => match db {
            Some(d) => (d.to_owned(), table_ref.clone()),
            None => return Err(SqlError::new(1046, b"3D000", "No database selected".to_owned())),
        },
    };
    if !account.can_select(&schema, &table) {
        return Err(SqlError::new(
            1142,
            b"42000",
            format!("SELECT command denied to user '{user}'@'{host}' for table '{}'", table.to_ascii_lowercase()),
        ));
    }
    if !schema.eq_ignore_ascii_case("ndbinfo") || !NDBINFO_TABLES.iter().any(|t| t.eq_ignore_ascii_case(&table)) {
        return Err(SqlError::new(1146, b"42S02", format!("Table '{schema}.{table}' doesn't exist")));
    }
    if !table.eq_ignore_ascii_case("memory_per_fragment") {
        return Err(SqlError::unsupported(text));
    }
    let mut picked = Vec::new();
    for name in columns_text.split(',').map(|c| c.trim().replace('`', "")) {
        if name == "*" {
            picked.extend(0..COLUMNS.len());
            continue;
        }
        let Some(i) = COLUMNS.iter().position(|(c, _)| c.eq_ignore_ascii_case(&name)) else {
            return Err(if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() {
                SqlError::new(1054, b"42S22", format!("Unknown column '{name}' in 'field list'"))
            } else {
                SqlError::unsupported(text)
            });
        };
        picked.push(i);
    }
    let rows = memory_per_fragment(state)
        .into_iter()
        .map(|row| picked.iter().map(|&i| row.get(i).cloned().unwrap_or_default()).collect())
        .collect();
    Ok(ResultSet {
        schema: "ndbinfo",
        table: "memory_per_fragment",
        columns: picked.iter().filter_map(|&i| COLUMNS.get(i).copied()).collect(),
        rows,
    })
}
