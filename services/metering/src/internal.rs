//! The routes billing calls (`/internal/...`, decision 0038), signed as `service:billing` and
//! refused to anyone else, admins included (403 `billing_only`):
//!
//! | route | what |
//! |---|---|
//! | `GET /internal/samples?from=&to=&after=&limit=` | billed samples (attributed, or a project's unlabelled and foreign pods) whose window starts in `[from, to)`, paged by (window start, id), with UsageRecorded's fields |
//! | `GET /internal/storage-samples?from=&to=&after=&limit=` | attributed storage samples whose window starts in `[from, to)`, paged by (window start, id), with StorageRecorded's fields (decision 0064) |
//! | `GET /internal/usage/daily?day=` | usage per owner on one UTC day (by window start), from `usage_daily`, and the owner's storage byte-seconds from `storage_samples` |

use crate::error::MeteringCode;
use crate::schema::{samples, storage_samples};
use crate::usage::Usage;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_domain::{ClusterId, OwnerId, SampleId, UserId};
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode, PlatformCode};
use serde::{Deserialize, Serialize};

/// The most samples one page holds.
pub const MAX_PAGE: i64 = 10_000;

/// What the internal handlers share.
#[derive(Clone, Debug)]
pub struct Internal {
    /// metering's schema.
    pub db: Database,
}

/// Registers the internal routes.
pub fn configure(c: &mut web::ServiceConfig, internal: Internal) {
    c.app_data(web::Data::new(internal))
        .route("/internal/samples", web::get().to(list_samples))
        .route("/internal/storage-samples", web::get().to(list_storage_samples))
        .route("/internal/usage/daily", web::get().to(usage_daily));
}

/// 401 without caller headers (the extractor), 403 for anyone but billing signing as itself.
fn require_billing(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_service(Service::Billing) { Ok(()) } else { Err(MeteringCode::BillingOnly.error()) }
}

fn db(e: diesel::result::Error) -> ApiError {
    ApiError::from(DbError::from(e))
}

/// Which samples a page holds.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SamplesQuery {
    /// Windows starting at or after this instant.
    from: DateTime<Utc>,
    /// Windows starting before this instant.
    to: DateTime<Utc>,
    /// The previous page's `next`: `<window start, unix seconds>_<sample id>`.
    after: Option<String>,
    /// At most this many (1-10000, default 1000).
    limit: Option<i64>,
}

/// One billed sample, with the fields of `UsageRecordedV1`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SampleRecord {
    sample_id: SampleId,
    cluster_id: ClusterId,
    namespace: String,
    user_id: UserId,
    owner_user_id: OwnerId,
    window_start_unix_seconds: i64,
    window_end_unix_seconds: i64,
    cpu_core_hours: String,
    memory_gib_hours: String,
    gpu_hours: String,
    estimated: bool,
    hopsworks_username: String,
    /// 0 when the namespace belongs to no known project.
    project_id: i64,
    cpu_nanocore_seconds: i64,
    memory_byte_seconds: i64,
    gpu_seconds: i64,
    pods: i32,
}

/// A page of samples.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SamplePage {
    samples: Vec<SampleRecord>,
    /// The `after` of the next page; null on the last.
    next: Option<String>,
}

type Row = (
    SampleId,
    ClusterId,
    String,
    Option<UserId>,
    Option<OwnerId>,
    DateTime<Utc>,
    DateTime<Utc>,
    bool,
    String,
    Option<i64>,
    (i64, i64, i64),
    i32,
);

#[utoipa::path(get, path = "/internal/samples", tag = "internal", params(SamplesQuery),
    responses((status = 200, description = "billed samples by (window start, id)", body = SamplePage),
        (status = 400, description = "invalid_query: a bound, the cursor or the limit is malformed", body = ErrorBody),
        (status = 401, description = "unauthenticated: not signed", body = ErrorBody),
        (status = 403, description = "billing_only: the billing service only", body = ErrorBody)))]
async fn list_samples(
    state: web::Data<Internal>,
    caller: Caller,
    q: web::Query<SamplesQuery>,
) -> Result<HttpResponse, ApiError> {
    require_billing(&caller)?;
    let (limit, after) = q.bounds()?;
    let mut conn = state.db.conn().await?;
    let mut query = samples::table
        .filter(samples::owner_user_id.is_not_null())
        .filter(samples::user_id.is_not_null())
        .filter(samples::window_start.ge(q.from))
        .filter(samples::window_start.lt(q.to))
        .into_boxed();
    if let Some((at, id)) = after {
        query = query.filter(samples::window_start.gt(at).or(samples::window_start.eq(at).and(samples::id.gt(id))));
    }
    let rows: Vec<Row> = query
        .order((samples::window_start, samples::id))
        .limit(limit)
        .select((
            samples::id,
            samples::cluster_id,
            samples::namespace,
            samples::user_id,
            samples::owner_user_id,
            samples::window_start,
            samples::window_end,
            samples::estimated,
            samples::hopsworks_username,
            samples::project_id,
            (samples::cpu_nanocore_seconds, samples::memory_byte_seconds, samples::gpu_seconds),
            samples::pods,
        ))
        .load(&mut conn)
        .await
        .map_err(db)?;
    let next = next_cursor(rows.len(), limit, rows.last().map(|r| (r.5, r.0)));
    let samples = rows
        .into_iter()
        .filter_map(|(id, cluster, namespace, user, owner, start, end, estimated, username, project, q, pods)| {
            let exact = |v: i64| u128::try_from(v).unwrap_or(0);
            let u =
                Usage { cpu_nanocore_seconds: exact(q.0), memory_byte_seconds: exact(q.1), gpu_seconds: exact(q.2) };
            Some(SampleRecord {
                sample_id: id,
                cluster_id: cluster,
                namespace,
                user_id: user?,
                owner_user_id: owner?,
                window_start_unix_seconds: start.timestamp(),
                window_end_unix_seconds: end.timestamp(),
                cpu_core_hours: u.cpu_core_hours().to_decimal().text,
                memory_gib_hours: u.memory_gib_hours().to_decimal().text,
                gpu_hours: u.gpu_hours().to_decimal().text,
                estimated,
                hopsworks_username: username,
                project_id: project.unwrap_or(0),
                cpu_nanocore_seconds: q.0,
                memory_byte_seconds: q.1,
                gpu_seconds: q.2,
                pods,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(SamplePage { samples, next }))
}

/// A page's key: its window start and sample id.
type Cursor = (DateTime<Utc>, SampleId);

impl SamplesQuery {
    /// The page's size and where it starts after.
    fn bounds(&self) -> Result<(i64, Option<Cursor>), ApiError> {
        let limit = self.limit.unwrap_or(1000);
        if !(1..=MAX_PAGE).contains(&limit) || self.to < self.from {
            return Err(PlatformCode::InvalidQuery.with_message("limit must be 1-10000 and from not after to"));
        }
        let after = match self.after.as_deref() {
            None => None,
            Some(cursor) => Some(
                parse_cursor(cursor).ok_or_else(|| PlatformCode::InvalidQuery.with_message("after is not a cursor"))?,
            ),
        };
        Ok((limit, after))
    }
}

/// The `after` of the next page: the last row's key when the page is full.
fn next_cursor(rows: usize, limit: i64, last: Option<Cursor>) -> Option<String> {
    let full = i64::try_from(rows).unwrap_or(i64::MAX) == limit;
    last.filter(|_| full).map(|(at, id)| format!("{}_{id}", at.timestamp()))
}

/// One attributed storage sample, with the fields of `StorageRecordedV1` (decision 0056).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StorageSampleRecord {
    sample_id: SampleId,
    cluster_id: ClusterId,
    project_id: i64,
    namespace: String,
    /// The project's creator.
    user_id: UserId,
    owner_user_id: OwnerId,
    window_start_unix_seconds: i64,
    window_end_unix_seconds: i64,
    offline_bytes: i64,
    online_bytes: i64,
    offline_byte_seconds: i64,
    online_byte_seconds: i64,
    measured_at_unix_seconds: i64,
    /// Whether the sample was estimated under the gap policy rather than read (decision 0076).
    estimated: bool,
}

/// A page of storage samples.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StorageSamplePage {
    samples: Vec<StorageSampleRecord>,
    /// The `after` of the next page; null on the last.
    next: Option<String>,
}

type StorageRow = (
    SampleId,
    ClusterId,
    i64,
    String,
    Option<UserId>,
    Option<OwnerId>,
    (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>),
    (i64, i64, i64, i64),
    bool,
);

#[utoipa::path(get, path = "/internal/storage-samples", tag = "internal", params(SamplesQuery),
    responses((status = 200, description = "attributed storage samples by (window start, id)", body = StorageSamplePage),
        (status = 400, description = "invalid_query: a bound, the cursor or the limit is malformed", body = ErrorBody),
        (status = 401, description = "unauthenticated: not signed", body = ErrorBody),
        (status = 403, description = "billing_only: the billing service only", body = ErrorBody)))]
async fn list_storage_samples(
    state: web::Data<Internal>,
    caller: Caller,
    q: web::Query<SamplesQuery>,
) -> Result<HttpResponse, ApiError> {
    require_billing(&caller)?;
    let (limit, after) = q.bounds()?;
    let mut conn = state.db.conn().await?;
    let mut query = storage_samples::table
        .filter(storage_samples::owner_user_id.is_not_null())
        .filter(storage_samples::user_id.is_not_null())
        .filter(storage_samples::window_start.ge(q.from))
        .filter(storage_samples::window_start.lt(q.to))
        .into_boxed();
    if let Some((at, id)) = after {
        query = query.filter(
            storage_samples::window_start
                .gt(at)
                .or(storage_samples::window_start.eq(at).and(storage_samples::id.gt(id))),
        );
    }
    let rows: Vec<StorageRow> = query
        .order((storage_samples::window_start, storage_samples::id))
        .limit(limit)
        .select((
            storage_samples::id,
            storage_samples::cluster_id,
            storage_samples::project_id,
            storage_samples::namespace,
            storage_samples::user_id,
            storage_samples::owner_user_id,
            (storage_samples::window_start, storage_samples::window_end, storage_samples::measured_at),
            (
                storage_samples::offline_bytes,
                storage_samples::online_bytes,
                storage_samples::offline_byte_seconds,
                storage_samples::online_byte_seconds,
            ),
            storage_samples::estimated,
        ))
        .load(&mut conn)
        .await
        .map_err(db)?;
    let next = next_cursor(rows.len(), limit, rows.last().map(|r| (r.6.0, r.0)));
    let samples = rows
        .into_iter()
        .filter_map(|(id, cluster, project, namespace, user, owner, (start, end, measured), bytes, estimated)| {
            Some(StorageSampleRecord {
                sample_id: id,
                cluster_id: cluster,
                project_id: project,
                namespace,
                user_id: user?,
                owner_user_id: owner?,
                window_start_unix_seconds: start.timestamp(),
                window_end_unix_seconds: end.timestamp(),
                offline_bytes: bytes.0,
                online_bytes: bytes.1,
                offline_byte_seconds: bytes.2,
                online_byte_seconds: bytes.3,
                measured_at_unix_seconds: measured.timestamp(),
                estimated,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(StorageSamplePage { samples, next }))
}

/// `<unix seconds>_<uuid>`.
fn parse_cursor(cursor: &str) -> Option<Cursor> {
    let (secs, id) = cursor.split_once('_')?;
    Some((DateTime::from_timestamp(secs.parse().ok()?, 0)?, id.parse().ok()?))
}

/// One UTC day.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DayQuery {
    /// `YYYY-MM-DD`.
    day: NaiveDate,
}

/// One owner's usage and storage on one day (windows starting that day), every user and
/// project added up.
#[derive(Debug, Serialize, QueryableByName, utoipa::ToSchema)]
pub struct OwnerDay {
    #[diesel(sql_type = SqlUuid)]
    owner_user_id: OwnerId,
    #[diesel(sql_type = BigInt)]
    cpu_nanocore_seconds: i64,
    #[diesel(sql_type = BigInt)]
    memory_byte_seconds: i64,
    #[diesel(sql_type = BigInt)]
    gpu_seconds: i64,
    /// Usage samples added up.
    #[diesel(sql_type = BigInt)]
    samples: i64,
    /// Offline storage byte-seconds of the owner's attributed storage samples.
    #[diesel(sql_type = BigInt)]
    storage_offline_byte_seconds: i64,
    /// Online storage byte-seconds.
    #[diesel(sql_type = BigInt)]
    storage_online_byte_seconds: i64,
    /// Storage samples added up.
    #[diesel(sql_type = BigInt)]
    storage_samples: i64,
}

/// A day's usage per owner.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DailyOwners {
    day: NaiveDate,
    owners: Vec<OwnerDay>,
}

#[utoipa::path(get, path = "/internal/usage/daily", tag = "internal", params(DayQuery),
    responses((status = 200, description = "usage and storage per owner on the day", body = DailyOwners),
        (status = 400, description = "invalid_query: day is not YYYY-MM-DD", body = ErrorBody),
        (status = 401, description = "unauthenticated: not signed", body = ErrorBody),
        (status = 403, description = "billing_only: the billing service only", body = ErrorBody)))]
async fn usage_daily(
    state: web::Data<Internal>,
    caller: Caller,
    q: web::Query<DayQuery>,
) -> Result<HttpResponse, ApiError> {
    require_billing(&caller)?;
    let mut conn = state.db.conn().await?;
    // Raw SQL: sum(bigint) is numeric in Postgres; the casts keep the integers. An owner with
    // storage and no pods that day has a row of zero usage, and the other way round.
    let owners: Vec<OwnerDay> = diesel::sql_query(
        "WITH usage AS (
             SELECT owner_user_id, sum(cpu_nanocore_seconds)::bigint AS cpu, sum(memory_byte_seconds)::bigint AS memory,
                    sum(gpu_seconds)::bigint AS gpu, sum(samples)::bigint AS samples
             FROM usage_daily WHERE day = $1 GROUP BY owner_user_id
         ), storage AS (
             SELECT owner_user_id, sum(offline_byte_seconds)::bigint AS offline,
                    sum(online_byte_seconds)::bigint AS online, count(*) AS samples
             FROM storage_samples
             WHERE owner_user_id IS NOT NULL AND user_id IS NOT NULL
               AND window_start >= $1::timestamp AT TIME ZONE 'UTC'
               AND window_start < ($1 + 1)::timestamp AT TIME ZONE 'UTC'
             GROUP BY owner_user_id
         )
         SELECT owner_user_id, coalesce(u.cpu, 0) AS cpu_nanocore_seconds, coalesce(u.memory, 0) AS memory_byte_seconds,
                coalesce(u.gpu, 0) AS gpu_seconds, coalesce(u.samples, 0) AS samples,
                coalesce(s.offline, 0) AS storage_offline_byte_seconds,
                coalesce(s.online, 0) AS storage_online_byte_seconds, coalesce(s.samples, 0) AS storage_samples
         FROM usage u FULL OUTER JOIN storage s USING (owner_user_id)
         ORDER BY owner_user_id",
    )
    .bind::<Date, _>(q.day)
    .load(&mut conn)
    .await
    .map_err(db)?;
    Ok(HttpResponse::Ok().json(DailyOwners { day: q.day, owners }))
}

/// The routes billing calls, kept out of the public document: the gateway never forwards them.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(list_samples, list_storage_samples, usage_daily),
    components(schemas(SamplePage, SampleRecord, StorageSamplePage, StorageSampleRecord, DailyOwners, OwnerDay, ErrorBody)),
    tags((name = "internal", description = "Routes for other Hopsbridge services"))
)]
pub struct InternalApiDoc;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn cursors_name_a_window_start_and_a_sample() {
        let id = SampleId::new();
        let (at, got) = parse_cursor(&format!("1798761600_{id}")).unwrap();
        assert_eq!((at.timestamp(), got), (1_798_761_600, id));
        assert!(parse_cursor("yesterday").is_none());
        assert!(parse_cursor("1_x").is_none());
    }
}
