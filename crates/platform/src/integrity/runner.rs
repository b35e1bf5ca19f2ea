//! Running a service's checks: on schedule, in one replica at a time, and on demand.

use super::requests::{self, IntegrityRequest};
use super::store::{self, IntegrityFinding};
use super::{Check, Finding, IntegrityChecks, IntegrityConfig};
use crate::db::{Database, DbError};
use crate::mail::{MailConfig, MailError};
use diesel_async::AsyncConnection;
use hopsbridge_contracts::Service;
use serde::Serialize;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Time a run gets, past `integrity.run_timeout_secs`, to record what it found before its
/// lease lapses.
const RECORD_MARGIN_SECS: i64 = 60;

/// How often an on-demand run looks whether another run of a check has ended.
const BUSY_POLL: Duration = Duration::from_millis(250);

/// Longest pause between two looks of the scheduler at which checks are due.
const MAX_TICK_SECS: u64 = 60;

/// Longest key a finding may have.
const MAX_KEY_LEN: usize = 200;

/// How one run of one check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// It looked; its findings are recorded.
    Ok,
    /// It could not look (or answered something unusable); its findings were left as they
    /// were.
    Failed,
    /// Another run of the check held its lease throughout; this one did not run.
    Busy,
}

/// One run of one check: how it went and the check's open findings after it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CheckRun {
    /// The check.
    pub check: String,
    /// How the run went.
    pub outcome: RunOutcome,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Findings this run opened (each alerted once).
    pub opened: u32,
    /// Findings this run resolved.
    pub resolved: u32,
    /// The check's open findings after the run, newest first.
    pub findings: Vec<IntegrityFinding>,
}

#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Alert(String),
}

impl From<diesel::result::Error> for RecordError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<MailError> for RecordError {
    fn from(e: MailError) -> Self {
        match e {
            MailError::Db(e) => Self::Db(e),
            other => Self::Alert(other.to_string()),
        }
    }
}

/// The integrity checks of one service with what runs them: the database, where alerts go,
/// the schedule.
#[derive(Clone, Debug)]
pub struct Integrity {
    service: &'static str,
    db: Database,
    mail: MailConfig,
    config: IntegrityConfig,
    checks: IntegrityChecks,
}

impl Integrity {
    /// The runner of `checks` for `service`.
    #[must_use]
    pub fn new(
        service: Service,
        db: Database,
        mail: MailConfig,
        config: IntegrityConfig,
        checks: IntegrityChecks,
    ) -> Self {
        Self { service: service.name(), db, mail, config, checks }
    }

    /// The service's name.
    #[must_use]
    pub const fn service(&self) -> &'static str {
        self.service
    }

    /// The registered checks.
    #[must_use]
    pub const fn checks(&self) -> &IntegrityChecks {
        &self.checks
    }

    /// The database the checks look at and findings are kept in.
    #[must_use]
    pub const fn db(&self) -> &Database {
        &self.db
    }

    fn lease_secs(&self) -> i64 {
        i64::try_from(self.config.run_timeout_secs).unwrap_or(i64::MAX / 2) + RECORD_MARGIN_SECS
    }

    /// Runs every check now, one after the other; a check another replica is running is run
    /// once that run has ended (or its lease lapsed).
    ///
    /// # Errors
    /// When Postgres fails (a check's own failure is its [`CheckRun`]'s outcome).
    pub async fn run_all(&self) -> Result<Vec<CheckRun>, DbError> {
        let mut runs = Vec::new();
        for check in self.checks.all() {
            let owner = uuid::Uuid::now_v7();
            let deadline = tokio::time::Instant::now()
                + Duration::from_secs(u64::try_from(self.lease_secs()).unwrap_or(u64::MAX / 2) + 5);
            let claimed = loop {
                if store::claim(&mut *self.db.conn().await?, check.name(), owner, self.lease_secs(), None).await? {
                    break true;
                }
                if tokio::time::Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(BUSY_POLL).await;
            };
            runs.push(if claimed {
                self.run_claimed(check.as_ref(), owner).await?
            } else {
                self.busy(check.name()).await?
            });
        }
        Ok(runs)
    }

    /// Starts running every check now in the background (a task of this process), under the
    /// same leases as [`run_all`](Self::run_all): `Ok` with the started request to poll, or
    /// `Err` with the one still running.
    ///
    /// # Errors
    /// When Postgres fails.
    pub async fn start(&self) -> Result<Result<IntegrityRequest, IntegrityRequest>, DbError> {
        let id = uuid::Uuid::now_v7();
        // Each check may wait for another run's lease and then run for as long.
        let per_check = 2 * self.lease_secs() + 5;
        let checks = i64::try_from(self.checks.all().len()).unwrap_or(1).max(1);
        let started = requests::begin(&mut *self.db.conn().await?, id, per_check.saturating_mul(checks)).await?;
        if started.is_ok() {
            let this = self.clone();
            tokio::spawn(async move {
                let ran = this.run_all().await;
                let outcome = match &ran {
                    Ok(runs) => Ok(runs.as_slice()),
                    Err(e) => Err(format!("the checks could not be run: {e}")),
                };
                let finished = match this.db.conn().await {
                    Ok(mut conn) => {
                        requests::finish(&mut conn, id, outcome.as_ref().map_err(String::as_str).copied()).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = finished {
                    tracing::warn!(request = %id, error = %e, "on-demand integrity run could not be recorded; it lapses");
                }
            });
        }
        Ok(started)
    }

    /// Runs the checks that are due (none of their runs started within
    /// `integrity.interval_secs`) and not running elsewhere.
    ///
    /// # Errors
    /// When Postgres fails; the checks run before stay recorded.
    pub async fn run_due(&self) -> Result<Vec<CheckRun>, DbError> {
        let interval = i64::try_from(self.config.interval_secs).unwrap_or(i64::MAX / 2);
        let mut runs = Vec::new();
        for check in self.checks.all() {
            let owner = uuid::Uuid::now_v7();
            if store::claim(&mut *self.db.conn().await?, check.name(), owner, self.lease_secs(), Some(interval)).await?
            {
                runs.push(self.run_claimed(check.as_ref(), owner).await?);
            }
        }
        Ok(runs)
    }

    /// Runs the due checks every so often (at most a minute apart) until `cancel`. Each
    /// registered check gets its `integrity_runs` row first, so its gauges read 0 from the start.
    pub async fn run(self, cancel: CancellationToken) {
        let tick = Duration::from_secs(self.config.interval_secs.clamp(1, MAX_TICK_SECS));
        let mut enrolled = false;
        loop {
            if !enrolled {
                enrolled = match self.db.conn().await {
                    Ok(mut conn) => store::enroll(&mut conn, &self.checks.names()).await.is_ok(),
                    Err(_) => false,
                };
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
            let ran = tokio::select! {
                () = cancel.cancelled() => return,
                ran = self.run_due() => ran,
            };
            match ran {
                Ok(runs) => {
                    for run in runs.iter().filter(|r| r.outcome == RunOutcome::Failed) {
                        tracing::warn!(check = %run.check, error = run.error.as_deref().unwrap_or(""), "integrity check failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "integrity checks could not run"),
            }
        }
    }

    async fn busy(&self, check: &str) -> Result<CheckRun, DbError> {
        let findings = store::open_of(&mut *self.db.conn().await?, check).await?;
        Ok(CheckRun {
            check: check.to_owned(),
            outcome: RunOutcome::Busy,
            error: Some("another run of this check held it throughout".to_owned()),
            opened: 0,
            resolved: 0,
            findings,
        })
    }

    /// Runs `check`, whose lease `owner` holds, and records what it found (or why it failed).
    async fn run_claimed(&self, check: &dyn Check, owner: uuid::Uuid) -> Result<CheckRun, DbError> {
        let name = check.name().to_owned();
        let timeout = Duration::from_secs(self.config.run_timeout_secs);
        let looked = match tokio::time::timeout(timeout, check.run(&self.db)).await {
            Ok(Ok(findings)) => usable(findings),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("timed out after {}s", self.config.run_timeout_secs)),
        };
        let mut conn = self.db.conn().await?;
        let (outcome, error, opened, resolved) = match looked {
            Ok(findings) => {
                let found = i32::try_from(findings.len()).unwrap_or(i32::MAX);
                let recorded = conn
                    .transaction(async |c| -> Result<Option<store::Recorded>, RecordError> {
                        if !store::holds(c, &name, owner).await? {
                            return Ok(None);
                        }
                        let recorded = store::record(c, &self.mail, self.service, &name, &findings).await?;
                        store::finish(c, &name, owner, Ok(found)).await?;
                        Ok(Some(recorded))
                    })
                    .await;
                match recorded {
                    Ok(Some(r)) => {
                        if r.opened > 0 || r.resolved > 0 {
                            tracing::info!(check = %name, opened = r.opened, resolved = r.resolved, "integrity findings changed");
                        }
                        (RunOutcome::Ok, None, r.opened, r.resolved)
                    }
                    Ok(None) => {
                        tracing::warn!(check = %name, "integrity run outlived its lease; its findings were not recorded");
                        (RunOutcome::Busy, Some("the run outlived its lease; another run took over".to_owned()), 0, 0)
                    }
                    Err(RecordError::Db(e)) => return Err(e),
                    Err(RecordError::Alert(e)) => {
                        let error = format!("the findings' alert could not be written: {e}");
                        store::finish(&mut conn, &name, owner, Err(&error)).await?;
                        (RunOutcome::Failed, Some(error), 0, 0)
                    }
                }
            }
            Err(error) => {
                store::finish(&mut conn, &name, owner, Err(&error)).await?;
                (RunOutcome::Failed, Some(error), 0, 0)
            }
        };
        let findings = store::open_of(&mut conn, &name).await?;
        Ok(CheckRun { check: name, outcome, error, opened, resolved, findings })
    }
}

/// `findings` with one per key (the first), or why they cannot be recorded.
fn usable(findings: Vec<Finding>) -> Result<Vec<Finding>, String> {
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::with_capacity(findings.len());
    for finding in findings {
        if finding.key.is_empty() || finding.key.len() > MAX_KEY_LEN {
            return Err(format!("the check answered a finding key of {} bytes (1-{MAX_KEY_LEN})", finding.key.len()));
        }
        if seen.insert(finding.key.clone()) {
            kept.push(finding);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_one_per_key_and_keys_are_bounded() {
        let f = |key: &str, detail: &str| Finding::new(key, "s", detail);
        let kept = usable(vec![f("a", "first"), f("b", "x"), f("a", "second")]).unwrap_or_default();
        assert_eq!(kept, vec![f("a", "first"), f("b", "x")]);
        assert!(usable(vec![f("", "x")]).is_err());
        assert!(usable(vec![f(&"k".repeat(201), "x")]).is_err());
    }
}
