//! The gap policy (decision 0069): what becomes of a window that could not be measured.
//!
//! - `record` (the default): the gap stays a gap with its reason; nothing is invented.
//! - `estimate`: once the gap's deadline has passed, an estimate is made and published at once
//!   as samples marked estimated, with their `usage_daily` additions and one
//!   `UsageRecordedV1` (`estimated: true`) per billed sample, in one transaction, exactly as a
//!   measured window's (decision 0027).
//! - `review`: the same estimate is made and kept `pending` until an administrator approves it
//!   (published as under `estimate`) or rejects it (the window stays a gap).
//!
//! The basis of an estimate, in order ([`Estimator::estimate_due`]):
//! 1. `readings`: a readings run that holds readings of its own while the run of the window
//!    after it holds readings too (its first read covers the gap's last resolution): both are
//!    integrated over the gap's window by the readings integrator, which estimates the time
//!    between readings at the mean of the rates around it (decision 0043).
//! 2. `neighbours`: per sample key (namespace, Hopsworks username), the mean of the nearest
//!    complete window before the gap and the nearest after it, each looked for within
//!    `gaps.neighbour_windows` windows; a key absent from one of them counts zero there; each
//!    quantity is `(before + after) / 2` in integer resource-seconds, truncated; pods are the
//!    larger of the two. With one neighbour only, its quantities. The estimate waits for the
//!    window after until one is complete or until the last window that could be it is past
//!    its deadline (`neighbour_windows` windows plus the deadline after the gap's end), then
//!    takes the window before alone.
//!
//! A key with nothing in either neighbour gets nothing; an estimate with no line at all is
//! recorded as `none` with why. Estimates are made only for gaps past their deadline, which
//! nothing measures any more ("collect now" answers `window_closed` for them), and the samples'
//! unique key is the last guard: an estimate and a measurement of one window can never both be
//! billed. One estimate per gap run (unique on the run), so replicas and reruns make it once.

use crate::attribution;
use crate::collect::readings::{self as integration, Reading};
use crate::collect::{Basis, Method, OwnerUsage, Source};
use crate::projection;
use crate::reading_runs;
use crate::runs;
use crate::samples::{self, StoreError};
use crate::schema::{
    gap_estimate_lines, gap_estimates, readings, run_pods, runs as runs_table, samples as samples_table,
};
use crate::usage::Usage;
use crate::usage_daily;
use crate::window::WindowLength;
use chrono::{DateTime, Utc};
use diesel::dsl;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::Service;
use hopsbridge_domain::{ClusterId, RunState, SampleId};
use hopsbridge_platform::config::ConfigError;
use hopsbridge_platform::events::enqueue_all_at;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// What becomes of a window that could not be measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// It stays a gap.
    #[default]
    Record,
    /// It is filled with an estimate at once.
    Estimate,
    /// Its estimate waits for an administrator.
    Review,
}

impl Policy {
    /// As configured and stored (`record`, `estimate`, `review`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Estimate => "estimate",
            Self::Review => "review",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Record, Self::Estimate, Self::Review].into_iter().find(|p| p.as_str() == text)
    }
}

/// The `gaps` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapsConfig {
    /// `record`, `estimate` or `review`.
    pub policy: String,
    /// How many windows before and after a gap its neighbours are looked for in (1-96).
    pub neighbour_windows: u32,
}

impl Default for GapsConfig {
    fn default() -> Self {
        Self { policy: Policy::Record.as_str().to_owned(), neighbour_windows: 4 }
    }
}

impl GapsConfig {
    /// The policy (validated at load; `record` otherwise).
    #[must_use]
    pub fn policy(&self) -> Policy {
        Policy::parse(&self.policy).unwrap_or_default()
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self, service: Service) -> Result<(), ConfigError> {
        if Policy::parse(&self.policy).is_none() {
            return Err(ConfigError::new(
                service,
                "gaps.policy",
                format!("must be record, estimate or review, not {:?}", self.policy),
            ));
        }
        if !(1..=96).contains(&self.neighbour_windows) {
            return Err(ConfigError::new(service, "gaps.neighbour_windows", "must be 1-96"));
        }
        Ok(())
    }
}

/// A gap past its deadline without an estimate.
#[derive(Debug, Clone, Queryable)]
struct Due {
    cluster_id: ClusterId,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    source: String,
}

/// What an estimate was based on, and its lines by sample key.
struct Made {
    basis: &'static str,
    before: Option<DateTime<Utc>>,
    after: Option<DateTime<Utc>>,
    readings: Option<i32>,
    lines: BTreeMap<(String, String), OwnerUsage>,
    detail: String,
}

/// Makes the estimates a policy asks for.
#[derive(Debug, Clone, Copy)]
pub struct Estimator {
    /// The policy (not `record`: nothing is estimated then).
    pub policy: Policy,
    /// Window length.
    pub window: WindowLength,
    /// Seconds after a window's end after which it is a gap.
    pub deadline_secs: i64,
    /// Gaps older than this (seconds before now) are not estimated.
    pub lookback_secs: i64,
    /// How many windows before and after a gap neighbours are looked for in.
    pub neighbour_windows: i64,
    /// The bases the estimates' samples record.
    pub bases: (Basis, Basis),
}

fn big(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Estimator {
    /// Seconds a gap's readings are kept past its deadline for a `readings` estimate: until the
    /// following run has completed (and dropped its own), one window.
    #[must_use]
    pub fn keep_readings_secs(&self) -> Option<i64> {
        (self.policy != Policy::Record).then(|| i64::from(self.window.secs()))
    }

    /// The gaps that may be estimated at calendar time `now`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// When Postgres fails.
    pub async fn due(
        &self,
        conn: &mut AsyncPgConnection,
        now: DateTime<Utc>,
        limit: i64,
    ) -> QueryResult<Vec<(ClusterId, DateTime<Utc>)>> {
        if self.policy == Policy::Record {
            return Ok(Vec::new());
        }
        let estimated = gap_estimates::table
            .filter(gap_estimates::cluster_id.eq(runs_table::cluster_id))
            .filter(gap_estimates::window_start.eq(runs_table::window_start));
        runs_table::table
            .filter(runs_table::status.eq(RunState::Gap))
            .filter(runs_table::deadline.le(now))
            .filter(runs_table::window_start.gt(now - chrono::TimeDelta::seconds(self.lookback_secs)))
            .filter(dsl::not(dsl::exists(estimated)))
            .order((runs_table::window_start, runs_table::cluster_id))
            .limit(limit)
            .select((runs_table::cluster_id, runs_table::window_start))
            .load(conn)
            .await
    }

    /// Estimates the gap of `cluster` starting at `start` if it is due at calendar time `now`
    /// (see the module documentation), in the caller's transaction; answers the estimate's
    /// status, or `None` when it is not due yet or was made already.
    ///
    /// # Errors
    /// When Postgres fails or a quantity overflows.
    pub async fn estimate(
        &self,
        conn: &mut AsyncPgConnection,
        (cluster, start): (ClusterId, DateTime<Utc>),
        now: DateTime<Utc>,
    ) -> Result<Option<&'static str>, StoreError> {
        let gap: Option<Due> = runs_table::table
            .find((cluster, start))
            .filter(runs_table::status.eq(RunState::Gap))
            .filter(runs_table::deadline.le(now))
            .select((runs_table::cluster_id, runs_table::window_start, runs_table::window_end, runs_table::source))
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some(gap) = gap else { return Ok(None) };
        let exists: i64 = gap_estimates::table
            .filter(gap_estimates::cluster_id.eq(cluster))
            .filter(gap_estimates::window_start.eq(start))
            .count()
            .get_result(conn)
            .await?;
        if exists > 0 {
            return Ok(None);
        }
        let made = match self.by_readings(conn, &gap).await? {
            Some(made) => made,
            None => match self.by_neighbours(conn, &gap, now).await? {
                Some(made) => made,
                None => return Ok(None),
            },
        };
        let status = if made.lines.is_empty() {
            "none"
        } else if self.policy == Policy::Estimate {
            "published"
        } else {
            "pending"
        };
        let id = Uuid::now_v7();
        let source = if gap.source == Source::Readings.as_str() { Source::Readings } else { Source::Point };
        diesel::insert_into(gap_estimates::table)
            .values((
                gap_estimates::id.eq(id),
                gap_estimates::cluster_id.eq(cluster),
                gap_estimates::window_start.eq(start),
                gap_estimates::window_end.eq(gap.window_end),
                gap_estimates::policy.eq(self.policy.as_str()),
                gap_estimates::status.eq(if status == "none" { "none" } else { "pending" }),
                gap_estimates::basis.eq((status != "none").then_some(made.basis)),
                gap_estimates::before_window.eq(made.before),
                gap_estimates::after_window.eq(made.after),
                gap_estimates::readings.eq(made.readings),
                gap_estimates::source.eq(source.as_str()),
                gap_estimates::cpu_basis.eq(self.bases.0.as_str()),
                gap_estimates::memory_basis.eq(self.bases.1.as_str()),
                gap_estimates::detail.eq(&made.detail),
            ))
            .execute(conn)
            .await?;
        let rows: Vec<_> = made
            .lines
            .iter()
            .map(|((namespace, username), u)| {
                (
                    gap_estimate_lines::estimate_id.eq(id),
                    gap_estimate_lines::namespace.eq(namespace),
                    gap_estimate_lines::hopsworks_username.eq(username),
                    gap_estimate_lines::cpu_nanocore_seconds.eq(big(u.usage.cpu_nanocore_seconds)),
                    gap_estimate_lines::memory_byte_seconds.eq(big(u.usage.memory_byte_seconds)),
                    gap_estimate_lines::gpu_seconds.eq(big(u.usage.gpu_seconds)),
                    gap_estimate_lines::pods.eq(i32::try_from(u.pods).unwrap_or(i32::MAX)),
                    gap_estimate_lines::estimated_ms.eq(u.estimated_ms.max(0)),
                )
            })
            .collect();
        for chunk in rows.chunks(1000) {
            diesel::insert_into(gap_estimate_lines::table).values(chunk).execute(conn).await?;
        }
        // The gap's readings have served.
        diesel::delete(
            readings::table.filter(readings::cluster_id.eq(cluster)).filter(readings::window_start.eq(start)),
        )
        .execute(conn)
        .await?;
        diesel::delete(
            run_pods::table.filter(run_pods::cluster_id.eq(cluster)).filter(run_pods::window_start.eq(start)),
        )
        .execute(conn)
        .await?;
        if status == "published" {
            publish(conn, id, None, now).await?;
        }
        Ok(Some(status))
    }

    /// The `readings` basis: the gap run's readings and the following run's, when both hold some.
    async fn by_readings(&self, conn: &mut AsyncPgConnection, gap: &Due) -> Result<Option<Made>, StoreError> {
        if gap.source != Source::Readings.as_str() {
            return Ok(None);
        }
        let (own, following): (i64, i64) = (
            readings_held(conn, gap.cluster_id, gap.window_start).await?,
            readings_held(conn, gap.cluster_id, gap.window_end).await?,
        );
        if own == 0 || following == 0 {
            return Ok(None);
        }
        let mut all: Vec<Reading> = reading_runs::load(conn, gap.cluster_id, gap.window_start).await?;
        all.extend(reading_runs::load(conn, gap.cluster_id, gap.window_end).await?);
        // Each pod's readings in the order read: the gap's, then the following window's.
        all.sort_by(|a, b| (&a.key, a.end_ms).cmp(&(&b.key, b.end_ms)));
        let mut pods = reading_runs::pods(conn, gap.cluster_id, gap.window_end).await?;
        pods.extend(reading_runs::pods(conn, gap.cluster_id, gap.window_start).await?);
        let window = self.window.containing(gap.window_start.timestamp());
        let method = Method { source: Source::Readings, cpu_basis: self.bases.0, memory_basis: self.bases.1 };
        let integrated = integration::integrate(window, method, &all, &pods);
        Ok(Some(Made {
            basis: "readings",
            before: None,
            after: Some(gap.window_end),
            readings: Some(i32::try_from(all.len()).unwrap_or(i32::MAX)),
            detail: format!(
                "the gap's readings and the following window's first integrated; {} ms of pod time estimated between readings",
                integrated.estimated_ms
            ),
            lines: integrated.usage,
        }))
    }

    /// The `neighbours` basis, once the window after is known or can no longer come.
    async fn by_neighbours(
        &self,
        conn: &mut AsyncPgConnection,
        gap: &Due,
        now: DateTime<Utc>,
    ) -> Result<Option<Made>, StoreError> {
        let len = i64::from(self.window.secs());
        let reach = chrono::TimeDelta::seconds(len * self.neighbour_windows);
        let complete = || {
            runs_table::table
                .filter(runs_table::cluster_id.eq(gap.cluster_id))
                .filter(runs_table::status.eq(RunState::Complete))
        };
        let before: Option<DateTime<Utc>> = complete()
            .filter(runs_table::window_start.lt(gap.window_start))
            .filter(runs_table::window_start.ge(gap.window_start - reach))
            .order(runs_table::window_start.desc())
            .select(runs_table::window_start)
            .first(conn)
            .await
            .optional()?;
        let after: Option<DateTime<Utc>> = complete()
            .filter(runs_table::window_start.gt(gap.window_start))
            .filter(runs_table::window_start.le(gap.window_start + reach))
            .order(runs_table::window_start)
            .select(runs_table::window_start)
            .first(conn)
            .await
            .optional()?;
        // The window after may still come until the last one that could be it is past its
        // deadline.
        let last_chance = gap.window_end + reach + chrono::TimeDelta::seconds(self.deadline_secs);
        if after.is_none() && now < last_chance {
            return Ok(None);
        }
        let mut lines: BTreeMap<(String, String), (Quantities, Quantities)> = BTreeMap::new();
        for (at, side) in [(before, 0), (after, 1)] {
            let Some(at) = at else { continue };
            let rows: Vec<(String, String, i64, i64, i64, i32)> = samples_table::table
                .filter(samples_table::cluster_id.eq(gap.cluster_id))
                .filter(samples_table::window_start.eq(at))
                .select((
                    samples_table::namespace,
                    samples_table::hopsworks_username,
                    samples_table::cpu_nanocore_seconds,
                    samples_table::memory_byte_seconds,
                    samples_table::gpu_seconds,
                    samples_table::pods,
                ))
                .load(conn)
                .await?;
            for (ns, user, cpu, memory, gpu, pods) in rows {
                let entry = lines.entry((ns, user)).or_default();
                let q = Quantities { cpu, memory, gpu, pods };
                if side == 0 {
                    entry.0 = q;
                } else {
                    entry.1 = q;
                }
            }
        }
        let both = before.is_some() && after.is_some();
        let window_ms = i64::from(self.window.secs()) * 1000;
        let positive = |v: i64| u128::try_from(v).unwrap_or(0);
        let lines: BTreeMap<(String, String), OwnerUsage> = lines
            .into_iter()
            .filter_map(|(key, (b, a))| {
                let mean = |x: i64, y: i64| if both { (x + y) / 2 } else { x + y };
                let usage = Usage {
                    cpu_nanocore_seconds: positive(mean(b.cpu, a.cpu)),
                    memory_byte_seconds: positive(mean(b.memory, a.memory)),
                    gpu_seconds: positive(mean(b.gpu, a.gpu)),
                };
                let pods = u64::try_from(b.pods.max(a.pods)).unwrap_or(0);
                (usage != Usage::default()).then(|| {
                    let estimated_ms = i64::try_from(pods).unwrap_or(0).saturating_mul(window_ms);
                    (key, OwnerUsage { usage, pods, estimated_ms })
                })
            })
            .collect();
        let n = self.neighbour_windows;
        let detail = match (before, after) {
            (Some(_), Some(_)) => "the mean of the complete windows before and after, truncated".to_owned(),
            (Some(_), None) => format!("the complete window before; none complete within {n} windows after"),
            (None, Some(_)) => format!("the complete window after; none complete within {n} windows before"),
            (None, None) => format!("no complete window within {n} windows before or after: nothing estimated"),
        };
        Ok(Some(Made { basis: "neighbours", before, after, readings: None, lines, detail }))
    }
}

/// How many readings the run of `cluster`'s window starting at `start` holds.
async fn readings_held(conn: &mut AsyncPgConnection, cluster: ClusterId, start: DateTime<Utc>) -> QueryResult<i64> {
    readings::table
        .filter(readings::cluster_id.eq(cluster))
        .filter(readings::window_start.eq(start))
        .count()
        .get_result(conn)
        .await
}

#[derive(Debug, Clone, Copy, Default)]
struct Quantities {
    cpu: i64,
    memory: i64,
    gpu: i64,
    pods: i32,
}

fn basis(text: &str) -> Basis {
    if text == Basis::MaxRequestUsage.as_str() { Basis::MaxRequestUsage } else { Basis::Usage }
}

/// Publishes pending estimate `id`, in the caller's transaction with its row locked: its lines
/// become samples marked estimated, attributed as the window's own would be, added to
/// `usage_daily` and announced; `by` is who approved it (`None`: the policy). Answers the
/// samples added.
async fn publish(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let (cluster, start, end, source, cpu_basis, memory_basis): (
        ClusterId,
        DateTime<Utc>,
        DateTime<Utc>,
        String,
        String,
        String,
    ) = gap_estimates::table
        .find(id)
        .select((
            gap_estimates::cluster_id,
            gap_estimates::window_start,
            gap_estimates::window_end,
            gap_estimates::source,
            gap_estimates::cpu_basis,
            gap_estimates::memory_basis,
        ))
        .first(conn)
        .await?;
    let lines: Vec<(String, String, i64, i64, i64, i32, i64)> = gap_estimate_lines::table
        .filter(gap_estimate_lines::estimate_id.eq(id))
        .select((
            gap_estimate_lines::namespace,
            gap_estimate_lines::hopsworks_username,
            gap_estimate_lines::cpu_nanocore_seconds,
            gap_estimate_lines::memory_byte_seconds,
            gap_estimate_lines::gpu_seconds,
            gap_estimate_lines::pods,
            gap_estimate_lines::estimated_ms,
        ))
        .load(conn)
        .await?;
    let positive = |v: i64| u128::try_from(v).unwrap_or(0);
    let usage: BTreeMap<(String, String), OwnerUsage> = lines
        .into_iter()
        .map(|(ns, user, cpu, memory, gpu, pods, estimated_ms)| {
            let usage = Usage {
                cpu_nanocore_seconds: positive(cpu),
                memory_byte_seconds: positive(memory),
                gpu_seconds: positive(gpu),
            };
            ((ns, user), OwnerUsage { usage, pods: u64::try_from(pods).unwrap_or(0), estimated_ms })
        })
        .collect();
    let known = projection::known(conn, cluster, start).await?;
    let measured = attribution::attribute(&usage, &known);
    let source = if source == Source::Readings.as_str() { Source::Readings } else { Source::Point };
    let method = Method { source, cpu_basis: basis(&cpu_basis), memory_basis: basis(&memory_basis) };
    let added = samples::insert(conn, (cluster, start, end), (method, true), &measured).await?;
    for (sample, s) in &added {
        diesel::update(gap_estimate_lines::table.find((id, &s.namespace, &s.username)))
            .set(gap_estimate_lines::sample_id.eq(Some(*sample)))
            .execute(conn)
            .await?;
    }
    let (ids, events): (Vec<SampleId>, Vec<_>) = added
        .iter()
        .filter_map(|(sample, s)| {
            s.whose.billed().map(|billed| (*sample, runs::event(*sample, (cluster, start, end), s, billed, true)))
        })
        .unzip();
    if !ids.is_empty() {
        usage_daily::add(conn, &ids).await?;
        enqueue_all_at(conn, &events, None, now).await?;
    }
    diesel::update(gap_estimates::table.find(id))
        .set((
            gap_estimates::status.eq("published"),
            gap_estimates::decided_at.eq(dsl::now),
            gap_estimates::decided_by.eq(by),
        ))
        .execute(conn)
        .await?;
    Ok(added.len())
}

/// What deciding an estimate came to.
#[derive(Debug)]
pub enum Decided {
    /// No such estimate.
    NotFound,
    /// It was decided already (published, rejected, or nothing to estimate): its status.
    Already(String),
    /// Decided now.
    Done(Box<Estimate>),
}

/// Approves (publishes) or rejects pending estimate `id` for administrator `by`, at calendar
/// time `now`; nothing changes unless it is pending.
///
/// # Errors
/// When Postgres fails or a quantity overflows.
pub async fn decide(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    approve: bool,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Decided, StoreError> {
    let status: Option<String> =
        gap_estimates::table.find(id).select(gap_estimates::status).for_update().first(conn).await.optional()?;
    match status.as_deref() {
        None => return Ok(Decided::NotFound),
        Some("pending") => {}
        Some(other) => return Ok(Decided::Already(other.to_owned())),
    }
    if approve {
        publish(conn, id, Some(by), now).await?;
    } else {
        diesel::update(gap_estimates::table.find(id))
            .set((
                gap_estimates::status.eq("rejected"),
                gap_estimates::decided_at.eq(dsl::now),
                gap_estimates::decided_by.eq(by),
            ))
            .execute(conn)
            .await?;
    }
    let filter = EstimateFilter { id: Some(id), ..EstimateFilter::default() };
    let mut page = list(conn, &filter, 1).await?;
    Ok(page.items.pop().map_or(Decided::NotFound, |e| Decided::Done(Box::new(e))))
}

/// An estimate's line: one sample key's quantities.
#[derive(Debug, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = gap_estimate_lines, check_for_backend(Pg))]
pub struct EstimateLine {
    /// The estimate.
    #[serde(skip)]
    pub estimate_id: Uuid,
    /// The namespace.
    pub namespace: String,
    /// The pods' owner label; empty for pods without one.
    pub hopsworks_username: String,
    /// Nanocore-seconds.
    pub cpu_nanocore_seconds: i64,
    /// Byte-seconds.
    pub memory_byte_seconds: i64,
    /// GPU-seconds.
    pub gpu_seconds: i64,
    /// Pods.
    pub pods: i32,
    /// Pod time estimated, milliseconds.
    pub estimated_ms: i64,
    /// The sample written once published.
    pub sample_id: Option<SampleId>,
}

/// An estimate's row.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = gap_estimates, check_for_backend(Pg))]
struct Row {
    id: Uuid,
    cluster_id: ClusterId,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    policy: String,
    status: String,
    basis: Option<String>,
    before_window: Option<DateTime<Utc>>,
    after_window: Option<DateTime<Utc>>,
    readings: Option<i32>,
    detail: String,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    decided_by: Option<String>,
}

/// An estimate of a gap and what it was based on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Estimate {
    /// Its id.
    pub id: Uuid,
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The gap's window start, UTC.
    pub window_start: DateTime<Utc>,
    /// The gap's window end, UTC.
    pub window_end: DateTime<Utc>,
    /// The policy it was made under: `estimate` or `review`.
    pub policy: String,
    /// `pending` (awaiting review), `published`, `rejected`, or `none` (nothing to estimate).
    pub status: String,
    /// `readings` or `neighbours`; none when nothing was estimated.
    pub basis: Option<String>,
    /// neighbours: the complete window before that was averaged.
    pub before_window: Option<DateTime<Utc>>,
    /// neighbours: the complete window after; readings: the following window whose first
    /// readings were integrated.
    pub after_window: Option<DateTime<Utc>>,
    /// readings: how many readings were integrated.
    pub readings: Option<i32>,
    /// How it was made, or why nothing was.
    pub detail: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was published or rejected.
    pub decided_at: Option<DateTime<Utc>>,
    /// The administrator who approved or rejected it (none when the policy published it).
    pub decided_by: Option<String>,
    /// Its lines, by namespace and username.
    pub lines: Vec<EstimateLine>,
}

/// A page of estimates.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EstimatePage {
    /// Newest window first.
    pub items: Vec<Estimate>,
    /// Estimates matching the filter.
    pub total: i64,
}

/// The statuses an estimate can have.
pub const STATUSES: [&str; 4] = ["pending", "published", "rejected", "none"];

/// Which estimates [`list`] answers.
#[derive(Debug, Clone, Default)]
pub struct EstimateFilter {
    /// Only this one.
    pub id: Option<Uuid>,
    /// Only this cluster.
    pub cluster: Option<ClusterId>,
    /// Only this status (one of [`STATUSES`]).
    pub status: Option<String>,
    /// Windows starting at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Windows starting before this instant.
    pub to: Option<DateTime<Utc>>,
}

impl EstimateFilter {
    fn query(&self) -> gap_estimates::BoxedQuery<'static, Pg> {
        let mut q = gap_estimates::table.into_boxed();
        if let Some(id) = self.id {
            q = q.filter(gap_estimates::id.eq(id));
        }
        if let Some(cluster) = self.cluster {
            q = q.filter(gap_estimates::cluster_id.eq(cluster));
        }
        if let Some(status) = self.status.clone() {
            q = q.filter(gap_estimates::status.eq(status));
        }
        if let Some(from) = self.from {
            q = q.filter(gap_estimates::window_start.ge(from));
        }
        if let Some(to) = self.to {
            q = q.filter(gap_estimates::window_start.lt(to));
        }
        q
    }
}

/// Up to `limit` estimates matching `filter` with their lines, newest window first, and how
/// many match.
///
/// # Errors
/// When Postgres fails.
pub async fn list(conn: &mut AsyncPgConnection, filter: &EstimateFilter, limit: i64) -> QueryResult<EstimatePage> {
    let rows: Vec<Row> = filter
        .query()
        .order((gap_estimates::window_start.desc(), gap_estimates::cluster_id))
        .limit(limit)
        .select(Row::as_select())
        .load(conn)
        .await?;
    let total = filter.query().count().get_result(conn).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut lines: HashMap<Uuid, Vec<EstimateLine>> = HashMap::new();
    let loaded: Vec<EstimateLine> = gap_estimate_lines::table
        .filter(gap_estimate_lines::estimate_id.eq_any(ids))
        .order((gap_estimate_lines::namespace, gap_estimate_lines::hopsworks_username))
        .select(EstimateLine::as_select())
        .load(conn)
        .await?;
    for line in loaded {
        lines.entry(line.estimate_id).or_default().push(line);
    }
    let items = rows
        .into_iter()
        .map(|r| Estimate {
            lines: lines.remove(&r.id).unwrap_or_default(),
            id: r.id,
            cluster_id: r.cluster_id,
            window_start: r.window_start,
            window_end: r.window_end,
            policy: r.policy,
            status: r.status,
            basis: r.basis,
            before_window: r.before_window,
            after_window: r.after_window,
            readings: r.readings,
            detail: r.detail,
            created_at: r.created_at,
            decided_at: r.decided_at,
            decided_by: r.decided_by,
        })
        .collect();
    Ok(EstimatePage { items, total })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::MeteringConfig;

    /// metering's settings as the binary loads them, with `gaps.policy` set when given.
    fn load(policy: Option<&str>) -> Result<MeteringConfig, ConfigError> {
        let mut settings = hopsbridge_testkit::TestSettings::new(Service::Metering)
            .set("database.url", "postgres://postgres@127.0.0.1:5432/hopsbridge")
            .set("nats.url", "nats://127.0.0.1:4222");
        if let Some(policy) = policy {
            settings = settings.set("gaps.policy", policy);
        }
        hopsbridge_platform::config::load_from(Service::Metering, &crate::DEFAULTS, None, settings.env())
    }

    #[test]
    fn the_policy_is_record_by_default_and_a_bad_one_stops_the_start_naming_the_key() {
        assert_eq!(load(None).unwrap().gaps.policy(), Policy::Record);
        for policy in [Policy::Record, Policy::Estimate, Policy::Review] {
            assert_eq!(load(Some(policy.as_str())).unwrap().gaps.policy(), policy);
        }
        let error = load(Some("guess")).unwrap_err().to_string();
        assert!(error.contains("gaps.policy") && error.contains("record, estimate or review"), "{error}");
        let zero = GapsConfig { neighbour_windows: 0, ..GapsConfig::default() };
        assert!(zero.validate(Service::Metering).unwrap_err().to_string().contains("gaps.neighbour_windows"));
    }
}
