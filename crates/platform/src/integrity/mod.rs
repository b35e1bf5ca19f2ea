//! Integrity checks: scheduled and on-demand comparisons of what a service holds against what
//! it should match (another service, Stripe, a cluster, its own outboxes), whose findings are
//! kept until resolved and alerted once (decision 0060).
//!
//! - A [`Check`] has a stable name (`outbox_draining`) and a run that answers the current
//!   [`Finding`]s, each with a key that is stable within the check (an event type, a cluster
//!   id). A service registers its checks in [`DataService::integrity`] before
//!   [`DataService::application`], which mounts the admin routes and runs them on schedule.
//! - A run that works upserts its findings into the service's `integrity_findings` table and
//!   resolves the check's open findings it no longer found; a finding found again after it was
//!   resolved is a new finding. A run that fails (Stripe down) records its error and leaves the
//!   check's findings as they were.
//! - A finding that opens writes one admin alert to the service's mail outbox in the same
//!   transaction, keyed by the finding's id, so no second alert of it can be written, by any
//!   replica.
//! - One replica at a time runs a check: it takes the check's lease in `integrity_runs` (a row
//!   per check, so the lease also tells every replica when the check last started, and a
//!   scheduled run happens once per `integrity.interval_secs` across replicas).
//! - Admins see the findings and each check's last run at `GET /api/admin/integrity/<service>`
//!   and run every check now with `POST /api/admin/integrity/<service>/run`, which answers at
//!   once (202) while the checks run in the background, one such run per service at a time;
//!   `GET /api/admin/integrity/<service>/runs/{id}` says how it went (decision 0072).
//!
//! [`DataService::integrity`]: crate::service::DataService::integrity
//! [`DataService::application`]: crate::service::DataService::application

mod outbox;
mod requests;
mod routes;
mod runner;
mod store;

pub use outbox::OutboxDraining;
pub use requests::{IntegrityRequest, RequestStatus};
pub use routes::{IntegrityCode, configure as configure_routes, document as api_doc};
pub use runner::{CheckRun, Integrity, RunOutcome};
pub use store::{CheckStatus, FindingStatus, IntegrityFinding};

use crate::config::{ConfigError, Validate};
use crate::db::Database;
/// What [`Check::run`] answers: a boxed future (re-exported so a check needs no `futures`).
pub use futures::future::BoxFuture;
use hopsbridge_contracts::Service;
use serde::Deserialize;
use std::sync::{Arc, PoisonError, RwLock};

/// Integrity check settings (`[integrity]`), shared by every service that owns data.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityConfig {
    /// How often each check runs, in seconds (once across replicas).
    pub interval_secs: u64,
    /// How long one run of one check may take, in seconds; a longer run fails, and its lease
    /// lapses so another replica may run the check.
    pub run_timeout_secs: u64,
    /// `outbox_draining`: an outbox event unpublished, or a mail due and unsent, for longer
    /// than this many seconds is a finding.
    pub outbox_max_age_secs: u64,
}

impl Validate for IntegrityConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        for (key, value) in [
            ("interval_secs", self.interval_secs),
            ("run_timeout_secs", self.run_timeout_secs),
            ("outbox_max_age_secs", self.outbox_max_age_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::new(service, &format!("integrity.{key}"), "must be positive"));
            }
            // Stored and compared as Postgres intervals and i64 seconds.
            if i64::try_from(value).is_err() || value > 10 * 365 * 24 * 3600 {
                return Err(ConfigError::new(service, &format!("integrity.{key}"), "must be at most ten years"));
            }
        }
        Ok(())
    }
}

/// One thing a check found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Stable within the check: the same problem found by the next run has the same key (an
    /// event type, a cluster id, a Stripe subscription id). At most 200 characters.
    pub key: String,
    /// What it is about, for people, e.g. "cluster lab-1".
    pub subject: String,
    /// What is wrong and what to do about it.
    pub detail: String,
}

impl Finding {
    /// A finding.
    pub fn new(key: impl Into<String>, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { key: key.into(), subject: subject.into(), detail: detail.into() }
    }
}

/// The open findings of `check`, as findings. A check that could look at only part of what it
/// covers (one of several clusters did not answer) answers again those of the part it could not
/// see, so they are neither resolved nor changed on no evidence.
///
/// # Errors
/// When Postgres fails.
pub async fn open_findings(db: &Database, check: &str) -> Result<Vec<Finding>, crate::db::DbError> {
    let open = store::open_of(&mut *db.conn().await?, check).await?;
    Ok(open.into_iter().map(|f| Finding { key: f.key, subject: f.subject, detail: f.detail }).collect())
}

/// An integrity check of one service.
///
/// `run` answers everything the check finds wrong now; what it no longer answers is resolved.
/// It returns an error when it could not look (a dependency down, a timeout): the check's open
/// findings then stay as they are. It must not write its findings itself, and may be run by any
/// replica.
pub trait Check: Send + Sync {
    /// The check's stable name: lowercase letters, digits and `_`, at most 64 characters,
    /// unique within the service (e.g. `outbox_draining`).
    fn name(&self) -> &str;

    /// Looks, with the service's database at hand.
    fn run<'a>(&'a self, db: &'a Database) -> BoxFuture<'a, anyhow::Result<Vec<Finding>>>;
}

/// Why a check could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The name is not lowercase letters, digits and `_`, 1-64 characters.
    #[error("integrity check name {0:?} must be 1-64 lowercase letters, digits and _")]
    InvalidName(String),
    /// Another check of the service has the name.
    #[error("integrity check {0} is registered twice")]
    Duplicate(String),
}

/// The integrity checks of a service. Cloning shares the registry.
#[derive(Clone, Default)]
pub struct IntegrityChecks(Arc<RwLock<Vec<Arc<dyn Check>>>>);

impl std::fmt::Debug for IntegrityChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IntegrityChecks").field(&self.names()).finish()
    }
}

impl IntegrityChecks {
    /// Adds `check`; it runs on schedule and on demand from then on.
    ///
    /// # Errors
    /// [`RegisterError`] when its name is invalid or taken.
    pub fn register(&self, check: impl Check + 'static) -> Result<(), RegisterError> {
        let name = check.name().to_owned();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(RegisterError::InvalidName(name));
        }
        let mut checks = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if checks.iter().any(|c| c.name() == name) {
            return Err(RegisterError::Duplicate(name));
        }
        checks.push(Arc::new(check));
        Ok(())
    }

    /// The registered checks' names, in registration order.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.all().iter().map(|c| c.name().to_owned()).collect()
    }

    pub(crate) fn all(&self) -> Vec<Arc<dyn Check>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);

    impl Check for Named {
        fn name(&self) -> &str {
            self.0
        }

        fn run<'a>(&'a self, _: &'a Database) -> BoxFuture<'a, anyhow::Result<Vec<Finding>>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    #[test]
    fn names_are_checked_and_unique() {
        let checks = IntegrityChecks::default();
        assert!(checks.register(Named("outbox_draining")).is_ok());
        assert!(matches!(checks.register(Named("outbox_draining")), Err(RegisterError::Duplicate(_))));
        for bad in ["", "Outbox", "outbox-draining", "a b"] {
            assert!(matches!(checks.register(Named(bad)), Err(RegisterError::InvalidName(_))), "{bad:?}");
        }
        assert_eq!(checks.names(), vec!["outbox_draining".to_owned()]);
    }

    #[test]
    fn every_setting_must_be_positive() {
        let ok = IntegrityConfig { interval_secs: 3600, run_timeout_secs: 300, outbox_max_age_secs: 600 };
        assert!(ok.validate(Service::Billing).is_ok());
        for bad in [
            IntegrityConfig { interval_secs: 0, ..ok.clone() },
            IntegrityConfig { run_timeout_secs: 0, ..ok.clone() },
            IntegrityConfig { outbox_max_age_secs: 0, ..ok.clone() },
            IntegrityConfig { interval_secs: u64::MAX, ..ok.clone() },
        ] {
            assert!(bad.validate(Service::Billing).is_err(), "{bad:?}");
        }
    }
}
