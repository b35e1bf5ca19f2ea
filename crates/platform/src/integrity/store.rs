//! The `integrity_findings` and `integrity_runs` tables: leases, recorded runs, what admins see.

use super::Finding;
use crate::db::DbError;
use crate::mail::{Alert, MailConfig, MailError};
use crate::schema::{integrity_findings, integrity_runs};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};

/// A finding as admins see it.
#[derive(Clone, Debug, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = integrity_findings)]
pub struct IntegrityFinding {
    /// The finding's id; a finding found again after it was resolved has a new one.
    pub id: uuid::Uuid,
    /// The check that found it, e.g. `outbox_draining`.
    #[serde(rename = "check")]
    pub check_name: String,
    /// Stable within the check, e.g. `outbox/ClusterAssignedV1`.
    pub key: String,
    /// What it is about.
    pub subject: String,
    /// What is wrong and what to do, as the last run that found it said.
    pub detail: String,
    /// When a run first found it.
    pub first_seen: DateTime<Utc>,
    /// When a run last found it.
    pub last_seen: DateTime<Utc>,
    /// When a run no longer found it; absent while it is open.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When the admin alert of its opening was written to the mail outbox.
    pub alerted_at: Option<DateTime<Utc>>,
}

/// Which findings to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingStatus {
    /// Not resolved yet.
    #[default]
    Open,
    /// Resolved: a later run no longer found them.
    Resolved,
    /// Both.
    All,
}

/// A check and its last run, as admins see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CheckStatus {
    /// The check's name.
    pub check: String,
    /// When its last run started; absent when it never ran.
    pub last_started_at: Option<DateTime<Utc>>,
    /// When its last run that ended (worked or failed) ended.
    pub last_finished_at: Option<DateTime<Utc>>,
    /// Whether that run worked; absent when none ended yet.
    pub last_ok: Option<bool>,
    /// Why it failed, when it did.
    pub last_error: Option<String>,
    /// Findings the last run that worked found.
    pub last_found: Option<i32>,
    /// Whether a run holds the check's lease now.
    pub running: bool,
    /// Its open findings.
    pub open: i64,
}

/// Gives each of `checks` its row, so its metrics have a series (0) before it first runs.
pub(super) async fn enroll(conn: &mut AsyncPgConnection, checks: &[String]) -> Result<(), DbError> {
    let rows: Vec<_> = checks.iter().map(|c| integrity_runs::check_name.eq(c)).collect();
    diesel::insert_into(integrity_runs::table).values(rows).on_conflict_do_nothing().execute(conn).await?;
    Ok(())
}

/// Takes `check`'s lease for `owner` for `lease_secs`, when no live lease holds it and, when
/// `due_after_secs` is given, its last run started at least that long ago. Answers whether it
/// was taken.
pub(super) async fn claim(
    conn: &mut AsyncPgConnection,
    check: &str,
    owner: uuid::Uuid,
    lease_secs: i64,
    due_after_secs: Option<i64>,
) -> Result<bool, DbError> {
    let taken = diesel::sql_query(
        "INSERT INTO integrity_runs (check_name, lease_owner, lease_until, last_started_at) \
         VALUES ($1, $2, now() + make_interval(secs => $3), now()) \
         ON CONFLICT (check_name) DO UPDATE SET lease_owner = excluded.lease_owner, \
             lease_until = excluded.lease_until, last_started_at = excluded.last_started_at \
         WHERE (integrity_runs.lease_until IS NULL OR integrity_runs.lease_until < now()) \
           AND ($4::bigint IS NULL OR integrity_runs.last_started_at IS NULL \
                OR integrity_runs.last_started_at <= now() - make_interval(secs => $4))",
    )
    .bind::<Text, _>(check)
    .bind::<SqlUuid, _>(owner)
    .bind::<BigInt, _>(lease_secs)
    .bind::<Nullable<BigInt>, _>(due_after_secs)
    .execute(conn)
    .await?;
    Ok(taken == 1)
}

/// Whether `owner` still holds `check`'s lease, locking the row until the transaction ends.
pub(super) async fn holds(conn: &mut AsyncPgConnection, check: &str, owner: uuid::Uuid) -> Result<bool, DbError> {
    let held: Option<String> = integrity_runs::table
        .filter(integrity_runs::check_name.eq(check))
        .filter(integrity_runs::lease_owner.eq(owner))
        .select(integrity_runs::check_name)
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(held.is_some())
}

/// Ends `owner`'s run of `check`: releases the lease and records how it went.
pub(super) async fn finish(
    conn: &mut AsyncPgConnection,
    check: &str,
    owner: uuid::Uuid,
    outcome: Result<i32, &str>,
) -> Result<(), DbError> {
    let row = integrity_runs::table
        .filter(integrity_runs::check_name.eq(check))
        .filter(integrity_runs::lease_owner.eq(owner));
    let released = (
        integrity_runs::lease_owner.eq(None::<uuid::Uuid>),
        integrity_runs::lease_until.eq(None::<DateTime<Utc>>),
        integrity_runs::last_finished_at.eq(diesel::dsl::now),
    );
    let update = match outcome {
        Ok(found) => {
            diesel::update(row)
                .set((
                    released,
                    integrity_runs::last_ok.eq(true),
                    integrity_runs::last_error.eq(None::<String>),
                    integrity_runs::last_found.eq(found),
                ))
                .execute(conn)
                .await?
        }
        // The last count found stays: it is what the open findings are.
        Err(error) => {
            diesel::update(row)
                .set((released, integrity_runs::last_ok.eq(false), integrity_runs::last_error.eq(error)))
                .execute(conn)
                .await?
        }
    };
    if update == 0 {
        tracing::warn!(check, "integrity run ended after its lease lapsed; another run took over");
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Upserted {
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    alerted_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    first_seen: DateTime<Utc>,
}

/// What recording one run's findings did.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    pub opened: u32,
    pub resolved: u32,
}

/// Records `findings` as `check`'s current ones (see the module's description): opens the new
/// ones with their admin alert, refreshes those still found, resolves those no longer found.
pub(super) async fn record(
    conn: &mut AsyncPgConnection,
    mail: &MailConfig,
    service: &str,
    check: &str,
    findings: &[Finding],
) -> Result<Recorded, MailError> {
    let mut recorded = Recorded::default();
    for finding in findings {
        let row: Upserted = diesel::sql_query(
            "INSERT INTO integrity_findings (id, check_name, key, subject, detail) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (check_name, key) WHERE resolved_at IS NULL \
             DO UPDATE SET subject = excluded.subject, detail = excluded.detail, last_seen = now() \
             RETURNING id, alerted_at, first_seen",
        )
        .bind::<SqlUuid, _>(uuid::Uuid::now_v7())
        .bind::<Text, _>(check)
        .bind::<Text, _>(&finding.key)
        .bind::<Text, _>(&finding.subject)
        .bind::<Text, _>(&finding.detail)
        .get_result(conn)
        .await
        .map_err(DbError::from)?;
        if row.alerted_at.is_none() {
            let alert = Alert {
                title: format!("Integrity check {check} of {service}: {}", finding.subject),
                lines: vec![
                    finding.detail.clone(),
                    format!("Check: {check} ({service}), key {}", finding.key),
                    format!("First seen: {}", row.first_seen.format("%Y-%m-%d %H:%M UTC")),
                    format!("Findings: GET /api/admin/integrity/{service}"),
                ],
                link: None,
            };
            // Keyed by the finding's id: however many runs or replicas see it open, one alert.
            crate::mail::enqueue_alert(conn, mail, &format!("integrity:{}", row.id), &alert).await?;
            diesel::update(integrity_findings::table.find(row.id))
                .set(integrity_findings::alerted_at.eq(diesel::dsl::now))
                .execute(conn)
                .await
                .map_err(DbError::from)?;
            recorded.opened += 1;
        }
    }
    let keys: Vec<&str> = findings.iter().map(|f| f.key.as_str()).collect();
    let resolved = diesel::update(
        integrity_findings::table
            .filter(integrity_findings::check_name.eq(check))
            .filter(integrity_findings::resolved_at.is_null())
            .filter(integrity_findings::key.ne_all(keys)),
    )
    .set(integrity_findings::resolved_at.eq(diesel::dsl::now))
    .execute(conn)
    .await
    .map_err(DbError::from)?;
    recorded.resolved = u32::try_from(resolved).unwrap_or(u32::MAX);
    Ok(recorded)
}

/// `check`'s open findings, newest first.
pub(super) async fn open_of(conn: &mut AsyncPgConnection, check: &str) -> Result<Vec<IntegrityFinding>, DbError> {
    Ok(integrity_findings::table
        .filter(integrity_findings::check_name.eq(check))
        .filter(integrity_findings::resolved_at.is_null())
        .order((integrity_findings::first_seen.desc(), integrity_findings::id.desc()))
        .select(IntegrityFinding::as_select())
        .load(conn)
        .await?)
}

/// A page of findings in `status`, newest first, and how many there are.
///
/// # Errors
/// When Postgres fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    status: FindingStatus,
    limit: i64,
    offset: i64,
) -> Result<(Vec<IntegrityFinding>, i64), DbError> {
    let filtered = || {
        let query = integrity_findings::table.into_boxed();
        match status {
            FindingStatus::All => query,
            FindingStatus::Open => query.filter(integrity_findings::resolved_at.is_null()),
            FindingStatus::Resolved => query.filter(integrity_findings::resolved_at.is_not_null()),
        }
    };
    let total = filtered().count().get_result(conn).await?;
    let items = filtered()
        .order((integrity_findings::first_seen.desc(), integrity_findings::id.desc()))
        .limit(limit)
        .offset(offset)
        .select(IntegrityFinding::as_select())
        .load(conn)
        .await?;
    Ok((items, total))
}

type RunRow = (
    String,
    Option<uuid::Uuid>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<bool>,
    Option<String>,
    Option<i32>,
);

/// The checks `names` (registered) and any other check that ran here before, with their last
/// run and open findings, by name.
///
/// # Errors
/// When Postgres fails.
pub async fn statuses(conn: &mut AsyncPgConnection, names: &[String]) -> Result<Vec<CheckStatus>, DbError> {
    let now: DateTime<Utc> = diesel::select(diesel::dsl::now.into_sql::<Timestamptz>()).get_result(conn).await?;
    let runs: Vec<RunRow> = integrity_runs::table
        .select((
            integrity_runs::check_name,
            integrity_runs::lease_owner,
            integrity_runs::lease_until,
            integrity_runs::last_started_at,
            integrity_runs::last_finished_at,
            integrity_runs::last_ok,
            integrity_runs::last_error,
            integrity_runs::last_found,
        ))
        .load(conn)
        .await?;
    let open: Vec<(String, i64)> = integrity_findings::table
        .filter(integrity_findings::resolved_at.is_null())
        .group_by(integrity_findings::check_name)
        .select((integrity_findings::check_name, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    let mut all: Vec<String> = names.to_vec();
    all.extend(runs.iter().map(|r| r.0.clone()).chain(open.iter().map(|o| o.0.clone())));
    all.sort();
    all.dedup();
    Ok(all
        .into_iter()
        .map(|check| {
            let run = runs.iter().find(|r| r.0 == check);
            let open = open.iter().find(|o| o.0 == check).map_or(0, |o| o.1);
            match run {
                None => CheckStatus {
                    check,
                    last_started_at: None,
                    last_finished_at: None,
                    last_ok: None,
                    last_error: None,
                    last_found: None,
                    running: false,
                    open,
                },
                Some((_, owner, until, started, finished, ok, error, found)) => CheckStatus {
                    check,
                    last_started_at: *started,
                    last_finished_at: *finished,
                    last_ok: *ok,
                    last_error: error.clone(),
                    last_found: *found,
                    running: owner.is_some() && until.is_some_and(|u| u > now),
                    open,
                },
            }
        })
        .collect())
}
