//! On-demand runs of every check of a service (`integrity_requests`): started by
//! `POST /api/admin/integrity/<service>/run`, which answers at once, run in the background by the
//! replica that accepted them, and polled at `GET …/runs/{id}`. One at a time per service.

use super::runner::CheckRun;
use crate::db::DbError;
use crate::schema::integrity_requests;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

/// Where an on-demand run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Its checks are running.
    Running,
    /// Every check ran (each run's own outcome says how it went).
    Done,
    /// It ended without its runs: Postgres failed, or the replica running it stopped.
    Failed,
}

/// An on-demand run of every check of a service, as admins see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrityRequest {
    /// The run's id, to poll at `GET /api/admin/integrity/<service>/runs/{id}`.
    pub id: uuid::Uuid,
    /// `running`, `done` or `failed`.
    pub status: RequestStatus,
    /// When it was started.
    pub started_at: DateTime<Utc>,
    /// When it ended; absent while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// Each check's run, in the order they ran; empty until it is done.
    #[schema(value_type = Vec<CheckRun>)]
    pub runs: serde_json::Value,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

type Row = (uuid::Uuid, DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>, Option<serde_json::Value>, Option<String>);

const ABANDONED: &str = "the replica running it stopped before it ended; run the checks again";

fn view((id, started_at, expires_at, finished_at, runs, error): Row, now: DateTime<Utc>) -> IntegrityRequest {
    let (status, error) = match (finished_at, &error) {
        (None, _) if expires_at < now => (RequestStatus::Failed, Some(ABANDONED.to_owned())),
        (None, _) => (RequestStatus::Running, None),
        (Some(_), Some(_)) => (RequestStatus::Failed, error),
        (Some(_), None) => (RequestStatus::Done, None),
    };
    IntegrityRequest {
        id,
        status,
        started_at,
        finished_at,
        runs: runs.unwrap_or_else(|| serde_json::Value::Array(Vec::new())),
        error,
    }
}

fn columns() -> (
    integrity_requests::id,
    integrity_requests::started_at,
    integrity_requests::expires_at,
    integrity_requests::finished_at,
    integrity_requests::runs,
    integrity_requests::error,
) {
    (
        integrity_requests::id,
        integrity_requests::started_at,
        integrity_requests::expires_at,
        integrity_requests::finished_at,
        integrity_requests::runs,
        integrity_requests::error,
    )
}

async fn now(conn: &mut AsyncPgConnection) -> Result<DateTime<Utc>, DbError> {
    Ok(diesel::select(diesel::dsl::now.into_sql::<diesel::sql_types::Timestamptz>()).get_result(conn).await?)
}

/// Starts request `id`, which may run for `expires_secs`: `Ok` with it, or `Err` with the one
/// still running (a request past its expiry is ended as abandoned first).
pub(super) async fn begin(
    conn: &mut AsyncPgConnection,
    id: uuid::Uuid,
    expires_secs: i64,
) -> Result<Result<IntegrityRequest, IntegrityRequest>, DbError> {
    conn.transaction(async |c| {
        diesel::update(
            integrity_requests::table
                .filter(integrity_requests::finished_at.is_null())
                .filter(integrity_requests::expires_at.lt(diesel::dsl::now)),
        )
        .set((integrity_requests::finished_at.eq(diesel::dsl::now), integrity_requests::error.eq(ABANDONED)))
        .execute(c)
        .await?;
        let inserted = diesel::sql_query(
            "INSERT INTO integrity_requests (id, expires_at) VALUES ($1, now() + make_interval(secs => $2)) \
             ON CONFLICT DO NOTHING",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<BigInt, _>(expires_secs)
        .execute(c)
        .await?;
        let now = now(c).await?;
        if inserted == 1 {
            let row: Row = integrity_requests::table.find(id).select(columns()).first(c).await?;
            return Ok(Ok(view(row, now)));
        }
        let row: Row = integrity_requests::table
            .filter(integrity_requests::finished_at.is_null())
            .select(columns())
            .first(c)
            .await?;
        Ok(Err(view(row, now)))
    })
    .await
}

/// Ends request `id` with its runs, or why it has none.
pub(super) async fn finish(
    conn: &mut AsyncPgConnection,
    id: uuid::Uuid,
    outcome: Result<&[CheckRun], &str>,
) -> Result<(), DbError> {
    let (runs, error) = match outcome {
        Ok(runs) => (Some(serde_json::to_value(runs).unwrap_or_default()), None),
        Err(e) => (None, Some(e)),
    };
    diesel::update(integrity_requests::table.find(id))
        .set((
            integrity_requests::finished_at.eq(diesel::dsl::now),
            integrity_requests::runs.eq(runs),
            integrity_requests::error.eq(error),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Request `id`.
///
/// # Errors
/// [`DbError::NotFound`] when there is none; when Postgres fails.
pub async fn find(conn: &mut AsyncPgConnection, id: uuid::Uuid) -> Result<IntegrityRequest, DbError> {
    let row: Row = integrity_requests::table.find(id).select(columns()).first(conn).await?;
    Ok(view(row, now(conn).await?))
}
