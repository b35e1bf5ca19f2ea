//! The admins' view of storage: the storage samples behind a user-day, and the storage windows
//! and projects that could not be measured, with why (decision 0056).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /api/admin/usage/storage-samples?user_id=&day=` | admins | the storage samples behind one user-day |
//! | `GET /api/admin/metering/storage-gaps?cluster_id=&from=&to=` | admins | storage windows and projects not measured |

use crate::schema::storage_samples;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{ClusterId, OwnerId, ProjectId, SampleId, UserId};
use serde::{Deserialize, Serialize};

/// At most this many gaps are answered.
pub const MAX_GAPS: i64 = 10_000;

/// One stored storage sample.
#[derive(Debug, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = storage_samples, check_for_backend(Pg))]
pub struct StorageSample {
    /// Its id (StorageRecorded's `sample_id`), derived from (cluster, project, window).
    pub id: SampleId,
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The Hopsworks project.
    pub project_id: ProjectId,
    /// The project's namespace.
    pub namespace: String,
    /// The project's name.
    pub project_name: String,
    /// The window's start.
    pub window_start: DateTime<Utc>,
    /// The window's end.
    pub window_end: DateTime<Utc>,
    /// The project's creator, billed.
    pub user_id: Option<UserId>,
    /// Their owner, who pays.
    pub owner_user_id: Option<OwnerId>,
    /// Bytes held offline at the snapshot.
    pub offline_bytes: i64,
    /// Bytes held online at the snapshot (0: not measured yet, decision 0056).
    pub online_bytes: i64,
    /// Offline bytes times the window's seconds.
    pub offline_byte_seconds: i64,
    /// Online bytes times the window's seconds.
    pub online_byte_seconds: i64,
    /// When the snapshot was taken, inside the window (an estimate's: the window's start).
    pub measured_at: DateTime<Utc>,
    /// Estimated under the gap policy from the project's measured samples around the window,
    /// not read from the cluster (decision 0076).
    pub estimated: bool,
}

/// The storage samples billed to `user` in windows starting on the UTC `day`, by window.
///
/// # Errors
/// When Postgres fails.
pub async fn samples_of_user_day(
    conn: &mut AsyncPgConnection,
    user: UserId,
    day: NaiveDate,
) -> QueryResult<Vec<StorageSample>> {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    storage_samples::table
        .filter(storage_samples::user_id.eq(user))
        .filter(storage_samples::window_start.ge(start))
        .filter(storage_samples::window_start.lt(start + chrono::TimeDelta::days(1)))
        .order((storage_samples::window_start, storage_samples::cluster_id, storage_samples::project_id))
        .select(StorageSample::as_select())
        .load(conn)
        .await
}

/// Filters of the storage gaps list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GapQuery {
    /// Only this cluster.
    pub cluster_id: Option<ClusterId>,
    /// Windows starting at or after this instant (default: 7 days before `to`).
    pub from: Option<DateTime<Utc>>,
    /// Windows starting before this instant (default: now).
    pub to: Option<DateTime<Utc>>,
}

/// A storage window, or one project in it, that could not be measured.
#[derive(Debug, Serialize, QueryableByName, utoipa::ToSchema)]
pub struct StorageGap {
    /// The cluster.
    #[diesel(sql_type = SqlUuid)]
    pub cluster_id: ClusterId,
    /// The window's start.
    #[diesel(sql_type = Timestamptz)]
    pub window_start: DateTime<Utc>,
    /// The project not reported; null when the whole cluster's window is a gap.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub project_id: Option<ProjectId>,
    /// The project's namespace, with `project_id`.
    #[diesel(sql_type = Nullable<Text>)]
    pub namespace: Option<String>,
    /// Stable code of why (`storage_unavailable`, `snapshot_late`, `not_collected`,
    /// `abandoned`, `storage_unreported`, …).
    #[diesel(sql_type = Text)]
    pub reason: String,
    /// What happened.
    #[diesel(sql_type = Nullable<Text>)]
    pub detail: Option<String>,
}

/// The gaps of windows starting in `[from, to)`, newest first (at most [`MAX_GAPS`]).
///
/// # Errors
/// When Postgres fails.
pub async fn gaps(
    conn: &mut AsyncPgConnection,
    cluster: Option<ClusterId>,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> QueryResult<Vec<StorageGap>> {
    // Raw SQL: a UNION of the two tables' gaps.
    diesel::sql_query(
        "SELECT * FROM (
             SELECT cluster_id, window_start, NULL::bigint AS project_id, NULL::text AS namespace,
                    gap_reason AS reason, gap_detail AS detail
             FROM storage_runs WHERE status = 'gap'
             UNION ALL
             SELECT cluster_id, window_start, project_id, namespace, reason, detail FROM storage_gaps
         ) g
         WHERE window_start >= $1 AND window_start < $2 AND ($3::uuid IS NULL OR cluster_id = $3)
         ORDER BY window_start DESC, cluster_id, project_id NULLS FIRST
         LIMIT $4",
    )
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Nullable<SqlUuid>, _>(cluster)
    .bind::<BigInt, _>(MAX_GAPS)
    .load(conn)
    .await
}
