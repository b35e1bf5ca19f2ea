//! Usage per (UTC day, user, owner, cluster, namespace): the billed samples added up in
//! the transaction that stores them, and read back for people and admins with the storage
//! billed for the same key (decision 0056; a project with storage and no pods has a row of
//! its own).

use crate::schema::usage_daily;
use crate::storage::{self, views::StorageDay};
use crate::usage::Usage;
use chrono::NaiveDate;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{ClusterId, OwnerId, SampleId, UserId};
use serde::Serialize;
use std::collections::BTreeMap;

/// At most this many rows are answered.
const MAX_ROWS: i64 = 10_000;

/// Adds the samples `ids` to their days.
///
/// # Errors
/// When Postgres fails.
pub async fn add(conn: &mut AsyncPgConnection, ids: &[SampleId]) -> QueryResult<()> {
    // Raw SQL: an INSERT from a grouped SELECT whose conflicts add to the stored sums; Postgres
    // types sum(bigint) as numeric, which the DSL will not insert into a bigint column.
    diesel::sql_query(
        "INSERT INTO usage_daily (day, user_id, owner_user_id, cluster_id, namespace,
                                  cpu_nanocore_seconds, memory_byte_seconds, gpu_seconds, samples)
         SELECT (window_start AT TIME ZONE 'UTC')::date, user_id, owner_user_id, cluster_id, namespace,
                sum(cpu_nanocore_seconds), sum(memory_byte_seconds), sum(gpu_seconds), count(*)
         FROM samples WHERE id = ANY($1)
         GROUP BY 1, 2, 3, 4, 5
         ON CONFLICT (day, user_id, owner_user_id, cluster_id, namespace) DO UPDATE SET
             cpu_nanocore_seconds = usage_daily.cpu_nanocore_seconds + excluded.cpu_nanocore_seconds,
             memory_byte_seconds = usage_daily.memory_byte_seconds + excluded.memory_byte_seconds,
             gpu_seconds = usage_daily.gpu_seconds + excluded.gpu_seconds,
             samples = usage_daily.samples + excluded.samples,
             updated_at = now()",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Which days [`list`] answers: `from` to `to` inclusive, narrowed by the others.
#[derive(Debug, Clone, Copy)]
pub struct UsageFilter {
    /// First UTC day.
    pub from: NaiveDate,
    /// Last UTC day, inclusive.
    pub to: NaiveDate,
    /// Only this user's pods.
    pub user: Option<UserId>,
    /// Only usage billed to this owner.
    pub owner: Option<OwnerId>,
    /// Only this person's usage, as the user or as the owner billed.
    pub person: Option<UserId>,
    /// Only this cluster.
    pub cluster: Option<ClusterId>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = usage_daily, check_for_backend(Pg))]
struct DailyRow {
    day: NaiveDate,
    user_id: UserId,
    owner_user_id: OwnerId,
    cluster_id: ClusterId,
    namespace: String,
    cpu_nanocore_seconds: i64,
    memory_byte_seconds: i64,
    gpu_seconds: i64,
    samples: i32,
}

/// Usage of one user in one project on one UTC day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DailyUsage {
    /// The UTC day.
    pub day: NaiveDate,
    /// Whose pods.
    pub user_id: UserId,
    /// Who pays for them.
    pub owner_user_id: OwnerId,
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The project's namespace on that cluster.
    pub namespace: String,
    /// CPU core-hours, exact decimal.
    pub cpu_core_hours: String,
    /// Memory GiB-hours, exact decimal.
    pub memory_gib_hours: String,
    /// GPU hours, exact decimal.
    pub gpu_hours: String,
    /// The integers behind them.
    pub cpu_nanocore_seconds: i64,
    /// Byte-seconds.
    pub memory_byte_seconds: i64,
    /// GPU-seconds.
    pub gpu_seconds: i64,
    /// Samples added up.
    pub samples: i32,
    /// The project's storage that day in GB-months (offline and online, over the seconds of
    /// the month), rounded half to even at 12 places; "0" without storage samples.
    pub storage_gb_months: String,
    /// The exact offline storage behind it, byte-seconds.
    pub storage_offline_byte_seconds: i64,
    /// The exact online storage behind it, byte-seconds.
    pub storage_online_byte_seconds: i64,
    /// Storage samples added up.
    pub storage_samples: i64,
    /// Of those, estimated under the gap policy (decision 0076).
    pub storage_estimated_samples: i64,
}

impl From<DailyRow> for DailyUsage {
    fn from(r: DailyRow) -> Self {
        let exact = |v: i64| u128::try_from(v).unwrap_or(0);
        let u = Usage {
            cpu_nanocore_seconds: exact(r.cpu_nanocore_seconds),
            memory_byte_seconds: exact(r.memory_byte_seconds),
            gpu_seconds: exact(r.gpu_seconds),
        };
        Self {
            day: r.day,
            user_id: r.user_id,
            owner_user_id: r.owner_user_id,
            cluster_id: r.cluster_id,
            namespace: r.namespace,
            cpu_core_hours: u.cpu_core_hours().to_decimal().text,
            memory_gib_hours: u.memory_gib_hours().to_decimal().text,
            gpu_hours: u.gpu_hours().to_decimal().text,
            cpu_nanocore_seconds: r.cpu_nanocore_seconds,
            memory_byte_seconds: r.memory_byte_seconds,
            gpu_seconds: r.gpu_seconds,
            samples: r.samples,
            storage_gb_months: "0".to_owned(),
            storage_offline_byte_seconds: 0,
            storage_online_byte_seconds: 0,
            storage_samples: 0,
            storage_estimated_samples: 0,
        }
    }
}

impl DailyUsage {
    /// A day with storage and no pods.
    fn of_storage(s: &StorageDay) -> Self {
        let mut day = Self::from(DailyRow {
            day: s.day,
            user_id: s.user_id,
            owner_user_id: s.owner_user_id,
            cluster_id: s.cluster_id,
            namespace: s.namespace.clone(),
            cpu_nanocore_seconds: 0,
            memory_byte_seconds: 0,
            gpu_seconds: 0,
            samples: 0,
        });
        day.add_storage(s);
        day
    }

    fn add_storage(&mut self, s: &StorageDay) {
        self.storage_gb_months = s.gb_months();
        self.storage_offline_byte_seconds = s.offline_byte_seconds;
        self.storage_online_byte_seconds = s.online_byte_seconds;
        self.storage_samples = s.samples;
        self.storage_estimated_samples = s.estimated_samples;
    }
}

/// The days matching `filter`, by day, user, cluster and namespace (at most 10,000).
///
/// # Errors
/// When Postgres fails.
pub async fn list(conn: &mut AsyncPgConnection, filter: &UsageFilter) -> QueryResult<Vec<DailyUsage>> {
    let mut q = usage_daily::table.filter(usage_daily::day.between(filter.from, filter.to)).into_boxed();
    if let Some(user) = filter.user {
        q = q.filter(usage_daily::user_id.eq(user));
    }
    if let Some(owner) = filter.owner {
        q = q.filter(usage_daily::owner_user_id.eq(owner));
    }
    if let Some(person) = filter.person {
        q = q.filter(usage_daily::user_id.eq(person).or(usage_daily::owner_user_id.eq(person.as_owner())));
    }
    if let Some(cluster) = filter.cluster {
        q = q.filter(usage_daily::cluster_id.eq(cluster));
    }
    let rows: Vec<DailyRow> = q
        .order((usage_daily::day, usage_daily::user_id, usage_daily::cluster_id, usage_daily::namespace))
        .limit(MAX_ROWS)
        .select(DailyRow::as_select())
        .load(conn)
        .await?;
    let stored = storage::views::list(conn, filter, MAX_ROWS).await?;
    let mut days: BTreeMap<(NaiveDate, UserId, ClusterId, String, OwnerId), DailyUsage> = rows
        .into_iter()
        .map(|r| ((r.day, r.user_id, r.cluster_id, r.namespace.clone(), r.owner_user_id), DailyUsage::from(r)))
        .collect();
    for s in &stored {
        let key = (s.day, s.user_id, s.cluster_id, s.namespace.clone(), s.owner_user_id);
        if let Some(day) = days.get_mut(&key) {
            day.add_storage(s);
        } else if s.offline_byte_seconds > 0 || s.online_byte_seconds > 0 {
            // A project holding storage and running no pods has a row of its own; an empty
            // one has nothing to show.
            days.insert(key, DailyUsage::of_storage(s));
        }
    }
    Ok(days.into_values().take(usize::try_from(MAX_ROWS).unwrap_or(usize::MAX)).collect())
}
