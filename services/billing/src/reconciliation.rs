//! Backfill and reconciliation with metering (decisions 0038 and 0064).
//!
//! - A backfill (`backfills`) pulls every attributed sample of a range from metering, page by
//!   page, usage samples and then storage samples, and ingests each page through the same
//!   statements as the consumers ([`crate::ledger::ingest`], a storage record checked as a
//!   `StorageRecordedV1` is): samples the ledger has change nothing.
//! - Reconciliation compares, for each closed UTC day of the last `reconciliation.days`, the
//!   ledger's usage and storage per owner (samples whose window starts that day) with
//!   metering's `usage_daily` and its storage samples' byte-seconds. A day where the ledger
//!   lacks any of them is backfilled first; a difference left is a finding
//!   (`reconciliation_findings`), alerted to the admins once
//!   (`billing.drift:<kind>:<owner>:<day>`) and resolved when a later run finds agreement.

use crate::ledger::{self, Settings};
use crate::metering::{Metering, OwnerDay, SampleKind};
use crate::schema::{backfills, reconciliation_findings};
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::OwnerId;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::mail::{self, Alert};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Everything backfill and reconciliation use.
#[derive(Clone, Debug)]
pub struct Reconciler {
    /// billing's schema.
    pub db: Database,
    /// metering's internal API.
    pub metering: Metering,
    /// What ingestion needs.
    pub settings: Arc<Settings>,
    /// Closed days compared per run.
    pub days: u32,
    /// Seconds after a day's end before it is compared.
    pub grace_secs: u64,
}

/// A backfill as admins see it.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = backfills)]
pub struct Backfill {
    /// The backfill.
    pub id: Uuid,
    /// Windows starting at or after this instant.
    pub range_start: DateTime<Utc>,
    /// Windows starting before this instant.
    pub range_end: DateTime<Utc>,
    /// The admin who asked; null when reconciliation did.
    pub requested_by: Option<Uuid>,
    /// `running`, `done` or `failed`.
    pub status: String,
    /// Samples metering sent.
    pub samples_seen: i64,
    /// Ledger entries they added.
    pub samples_added: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A difference between the ledger and metering.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = reconciliation_findings)]
pub struct Finding {
    /// The finding.
    pub id: Uuid,
    /// `missing` (the ledger has less) or `excess` (more).
    pub kind: String,
    /// Whose usage.
    pub owner_id: OwnerId,
    /// The UTC day (of the windows' start).
    pub day: NaiveDate,
    /// The ledger's integers: `cpu=<ns-s> memory=<byte-s> gpu=<s> storage_offline=<byte-s>
    /// storage_online=<byte-s>`.
    pub ours: String,
    /// metering's.
    pub theirs: String,
    /// When it was found.
    pub found_at: DateTime<Utc>,
    /// When a later run found agreement.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Records a backfill of `[from, to)` asked by `by`; run it with [`Reconciler::run_backfill`].
///
/// # Errors
/// When Postgres fails.
pub async fn record_backfill(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    by: Option<Uuid>,
) -> QueryResult<Backfill> {
    diesel::insert_into(backfills::table)
        .values((
            backfills::id.eq(Uuid::now_v7()),
            backfills::range_start.eq(from),
            backfills::range_end.eq(to),
            backfills::requested_by.eq(by),
            backfills::status.eq("running"),
        ))
        .returning(Backfill::as_returning())
        .get_result(conn)
        .await
}

/// The newest backfills.
///
/// # Errors
/// When Postgres fails.
pub async fn recent_backfills(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<Backfill>> {
    backfills::table.order(backfills::created_at.desc()).limit(limit).select(Backfill::as_select()).load(conn).await
}

/// The findings, open ones only unless `all`, newest first.
///
/// # Errors
/// When Postgres fails.
pub async fn findings(conn: &mut AsyncPgConnection, all: bool, limit: i64) -> QueryResult<Vec<Finding>> {
    let mut q = reconciliation_findings::table.into_boxed();
    if !all {
        q = q.filter(reconciliation_findings::resolved_at.is_null());
    }
    q.order((reconciliation_findings::found_at.desc(), reconciliation_findings::id))
        .limit(limit)
        .select(Finding::as_select())
        .load(conn)
        .await
}

/// One owner's integers on one day, in [`crate::money::Resource::ALL`] order.
type Totals = [i64; crate::money::RESOURCES];

fn text(t: Totals) -> String {
    format!("cpu={} memory={} gpu={} storage_offline={} storage_online={}", t[0], t[1], t[2], t[3], t[4])
}

impl Reconciler {
    /// Pulls the samples of backfill `backfill` from metering and ingests them, then records
    /// how it ended.
    pub async fn run_backfill(&self, backfill: Uuid, from: DateTime<Utc>, to: DateTime<Utc>) {
        let outcome = self.backfill(from, to).await;
        let (status, seen, added, error) = match &outcome {
            Ok((seen, added)) => ("done", *seen, *added, None),
            Err((seen, added, e)) => ("failed", *seen, *added, Some(e.clone())),
        };
        if let Some(e) = &error {
            tracing::warn!(%backfill, error = %e, "backfill failed");
        }
        let recorded = async {
            let mut conn = self.db.conn().await?;
            diesel::update(backfills::table.find(backfill))
                .set((
                    backfills::status.eq(status),
                    backfills::samples_seen.eq(seen),
                    backfills::samples_added.eq(added),
                    backfills::error.eq(error),
                    backfills::finished_at.eq(diesel::dsl::now),
                ))
                .execute(&mut conn)
                .await?;
            anyhow::Ok(())
        };
        if let Err(e) = recorded.await {
            tracing::warn!(%backfill, error = %e, "the end of a backfill was not recorded");
        }
    }

    /// Ingests every usage and storage sample of `[from, to)`; answers (seen, added), or how
    /// far it got and why it stopped.
    async fn backfill(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(i64, i64), (i64, i64, String)> {
        let mut counts = (0_i64, 0_i64);
        for kind in SampleKind::ALL {
            counts = self.pull(kind, from, to, counts).await?;
        }
        Ok(counts)
    }

    /// Ingests every sample of `kind` in `[from, to)`, adding to (`seen`, `added`).
    async fn pull(
        &self,
        kind: SampleKind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        (mut seen, mut added): (i64, i64),
    ) -> Result<(i64, i64), (i64, i64, String)> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .metering
                .samples(kind, from, to, after.as_deref())
                .await
                .map_err(|e| (seen, added, e.to_string()))?;
            let samples: Vec<_> = page
                .samples
                .iter()
                .filter_map(|r| {
                    r.clone().map_err(|e| tracing::warn!(error = %e, ?kind, "a backfilled sample is refused")).ok()
                })
                .collect();
            seen += i64::try_from(page.samples.len()).unwrap_or(0);
            let settings = Arc::clone(&self.settings);
            let new = self
                .db
                .transaction(move |c| {
                    let (samples, settings) = (samples.clone(), Arc::clone(&settings));
                    Box::pin(async move { ledger::ingest(c, &settings, samples).await.map_err(BackfillError) })
                })
                .await
                .map_err(|e| (seen, added, e.to_string()))?;
            added += i64::try_from(new).unwrap_or(0);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok((seen, added)),
            }
        }
    }

    /// The ledger's integers per owner for windows starting on `day`.
    async fn ours(&self, day: NaiveDate) -> anyhow::Result<BTreeMap<OwnerId, Totals>> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = SqlUuid)]
            owner_id: Uuid,
            #[diesel(sql_type = BigInt)]
            cpu: i64,
            #[diesel(sql_type = BigInt)]
            memory: i64,
            #[diesel(sql_type = BigInt)]
            gpu: i64,
            #[diesel(sql_type = BigInt)]
            offline: i64,
            #[diesel(sql_type = BigInt)]
            online: i64,
        }
        let start = day.and_time(NaiveTime::MIN).and_utc();
        let mut conn = self.db.conn().await?;
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT owner_id, sum(cpu_nanocore_seconds)::bigint AS cpu, sum(memory_byte_seconds)::bigint AS memory,
                    sum(gpu_seconds)::bigint AS gpu, sum(storage_offline_byte_seconds)::bigint AS offline,
                    sum(storage_online_byte_seconds)::bigint AS online
             FROM ledger_entries WHERE window_start >= $1 AND window_start < $2 GROUP BY owner_id",
        )
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(start + TimeDelta::days(1))
        .load(&mut conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (OwnerId::from(r.owner_id), [r.cpu, r.memory, r.gpu, r.offline, r.online]))
            .collect())
    }

    /// Compares the closed days of the last `days` with metering; answers the open findings
    /// written or kept.
    ///
    /// # Errors
    /// When metering or Postgres fails.
    pub async fn reconcile(&self) -> anyhow::Result<usize> {
        let now = self.settings.clock.now();
        let grace = TimeDelta::seconds(i64::try_from(self.grace_secs).unwrap_or(i64::MAX));
        let last_closed = (now - grace - TimeDelta::days(1)).date_naive();
        let mut open = 0;
        for back in 0..self.days {
            let day = last_closed - TimeDelta::days(i64::from(back));
            open += self.reconcile_day(day).await?;
        }
        Ok(open)
    }

    /// Compares one day, backfilling it first when the ledger lacks usage metering has.
    ///
    /// # Errors
    /// When metering or Postgres fails.
    pub async fn reconcile_day(&self, day: NaiveDate) -> anyhow::Result<usize> {
        let theirs: BTreeMap<OwnerId, Totals> = self
            .metering
            .daily(day)
            .await?
            .into_iter()
            .map(|d: OwnerDay| {
                let totals = [
                    d.cpu_nanocore_seconds,
                    d.memory_byte_seconds,
                    d.gpu_seconds,
                    d.storage_offline_byte_seconds,
                    d.storage_online_byte_seconds,
                ];
                (d.owner_user_id, totals)
            })
            .collect();
        let mut ours = self.ours(day).await?;
        let lacking = theirs.iter().any(|(o, t)| ours.get(o).is_none_or(|u| u.iter().zip(t).any(|(u, t)| u < t)));
        if lacking {
            let start = day.and_time(NaiveTime::MIN).and_utc();
            let mut conn = self.db.conn().await?;
            let b = record_backfill(&mut conn, start, start + TimeDelta::days(1), None).await?;
            drop(conn);
            self.run_backfill(b.id, b.range_start, b.range_end).await;
            ours = self.ours(day).await?;
        }
        let owners: BTreeSet<OwnerId> = theirs.keys().chain(ours.keys()).copied().collect();
        let mut open = 0;
        let mut conn = self.db.conn().await?;
        for owner in owners {
            let (u, t) =
                (ours.get(&owner).copied().unwrap_or_default(), theirs.get(&owner).copied().unwrap_or_default());
            if u == t {
                diesel::update(
                    reconciliation_findings::table
                        .filter(reconciliation_findings::kind.eq_any(["missing", "excess"]))
                        .filter(reconciliation_findings::owner_id.eq(owner))
                        .filter(reconciliation_findings::day.eq(day))
                        .filter(reconciliation_findings::resolved_at.is_null()),
                )
                .set(reconciliation_findings::resolved_at.eq(diesel::dsl::now))
                .execute(&mut conn)
                .await?;
                continue;
            }
            open += 1;
            let kind = if u.iter().zip(&t).any(|(u, t)| u < t) { "missing" } else { "excess" };
            let inserted = diesel::insert_into(reconciliation_findings::table)
                .values((
                    reconciliation_findings::id.eq(Uuid::now_v7()),
                    reconciliation_findings::kind.eq(kind),
                    reconciliation_findings::owner_id.eq(owner),
                    reconciliation_findings::day.eq(day),
                    reconciliation_findings::ours.eq(text(u)),
                    reconciliation_findings::theirs.eq(text(t)),
                ))
                .on_conflict_do_nothing()
                .execute(&mut conn)
                .await?;
            if inserted == 1 {
                let alert = Alert {
                    title: format!("Billing's ledger and metering disagree for {owner} on {day}"),
                    lines: vec![
                        format!("Kind: {kind}"),
                        format!("Ledger: {}", text(u)),
                        format!("Metering: {}", text(t)),
                    ],
                    link: None,
                };
                let key = format!("billing.drift:{kind}:{owner}:{day}");
                mail::enqueue_alert(&mut conn, &self.settings.mail, &key, &alert).await?;
            }
        }
        Ok(open)
    }

    /// Reconciles every `interval` until `cancel` (the first run right away).
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        loop {
            match self.reconcile().await {
                Ok(open) => tracing::info!(open_findings = open, "ledger reconciled with metering"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "reconciliation with metering failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// A page that could not be ingested.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct BackfillError(ledger::IngestError);

impl From<hopsbridge_platform::db::DbError> for BackfillError {
    fn from(e: hopsbridge_platform::db::DbError) -> Self {
        Self(e.into())
    }
}

impl From<diesel::result::Error> for BackfillError {
    fn from(e: diesel::result::Error) -> Self {
        Self(e.into())
    }
}

impl hopsbridge_platform::db::RetryableError for BackfillError {
    fn is_retryable(&self) -> bool {
        matches!(&self.0, ledger::IngestError::Db(e) if e.is_retryable())
    }
}
