//! The background task: seats users waiting for capacity (longest waiting first) and does the
//! Hopsworks work of assignments (create accounts, deactivate old ones), retrying failures with
//! backoff. It runs every `assignments.retry_interval_ms` and whenever something changes.

use crate::assignments;
use crate::clusters::{self, ClusterRow};
use crate::config::{AssignmentsConfig, HopsworksConfig};
use crate::crypto::Vault;
use crate::hopsworks::Hopsworks;
use crate::users::{self, Person};
use crate::work::{self, Work};
use futures::StreamExt as _;
use hopsbridge_domain::{AssignmentState, ClusterId, UserId};
use hopsbridge_platform::db::{Database, DbError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

/// The background task.
#[derive(Debug, Clone)]
pub struct Worker {
    db: Database,
    vault: Vault,
    hopsworks: HopsworksConfig,
    cfg: AssignmentsConfig,
    wake: Arc<Notify>,
    clients: Arc<Mutex<HashMap<ClusterId, (Fingerprint, Hopsworks)>>>,
}

/// What a cluster's Hopsworks client was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    api_url: String,
    ca_bundle: String,
    oauth_client_id: String,
    api_key_ciphertext: Vec<u8>,
}

type Tx<T> = Result<T, DbError>;

impl Worker {
    /// A task over `db`, woken early through `wake`.
    #[must_use]
    pub fn new(
        db: Database,
        vault: Vault,
        hopsworks: HopsworksConfig,
        cfg: AssignmentsConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Self { db, vault, hopsworks, cfg, wake, clients: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Runs until `cancel` fires; the work in hand is finished first.
    pub async fn run(self, cancel: CancellationToken) {
        let interval = Duration::from_millis(self.cfg.retry_interval_ms);
        loop {
            let busy = match self.tick().await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "assignment task pass failed");
                    false
                }
            };
            if cancel.is_cancelled() {
                return;
            }
            if busy {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass: seat waiting users, then do due work. Answers whether more may be waiting.
    ///
    /// # Errors
    /// When Postgres fails.
    pub async fn tick(&self) -> Result<bool, DbError> {
        // Placing takes the placement lock, which PaymentMethodAdded's handler needs too: only
        // when someone is waiting for a seat.
        let placed = if assignments::anyone_waiting(&mut *self.db.conn().await?).await? {
            self.db.transaction(|c| Box::pin(async move { Tx::Ok(assignments::place_waiting(c).await?) })).await?
        } else {
            0
        };
        if placed > 0 {
            tracing::info!(placed, "waiting users seated");
        }
        let limit = i64::try_from(self.cfg.concurrency.saturating_mul(4)).unwrap_or(i64::MAX);
        let lease = i64::try_from(self.cfg.lease_secs).unwrap_or(i64::MAX);
        let work =
            self.db.transaction(|c| Box::pin(async move { Tx::Ok(work::claim_due(c, limit, lease).await?) })).await?;
        let taken = work.len();
        if work.is_empty() {
            return Ok(placed > 0);
        }
        // Who and where, read once for the whole pass.
        let (people, clusters) = {
            let mut conn = self.db.conn().await?;
            let user_ids: Vec<UserId> = work.iter().map(|w| w.user_id).collect();
            let cluster_ids: Vec<ClusterId> =
                work.iter().flat_map(|w| std::iter::once(w.cluster_id).chain(w.previous_cluster_id)).collect();
            (users::get_many(&conn, &user_ids).await?, clusters::rows(&mut conn, &cluster_ids).await?)
        };
        let pass = Pass { people: &people, clusters: &clusters };
        futures::stream::iter(work)
            .for_each_concurrent(self.cfg.concurrency, |w| async move { self.process(w, pass).await })
            .await;
        Ok(placed > 0 || i64::try_from(taken).unwrap_or(0) >= limit)
    }

    async fn process(&self, work: Work, pass: Pass<'_>) {
        match self.attempt(&work, pass).await {
            Ok(()) => {}
            Err(reason) => {
                tracing::warn!(user_id = %work.user_id, cluster_id = %work.cluster_id, attempts = work.attempts,
                    reason = %reason, "Hopsworks work failed; will try again");
                // `attempts` counts this one: the first failure waits the first delay.
                let retry = u32::try_from(work.attempts.saturating_sub(1)).unwrap_or(0);
                let delay = self.cfg.retry_backoff().delay(retry);
                let w = work.clone();
                let recorded = self
                    .db
                    .transaction(|c| {
                        let (w, reason) = (w.clone(), reason.clone());
                        Box::pin(async move { Tx::Ok(work::failed(c, &w, &reason, delay).await?) })
                    })
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "could not record a failed attempt; the lease will run out");
                }
            }
        }
    }

    /// The cluster's Hopsworks client. One is kept per cluster, so its connections (and their
    /// TLS sessions) serve every piece of work; it is made again when the cluster's URL, CA
    /// bundle, OAuth client or sealed API key changed.
    async fn client(&self, pass: Pass<'_>, cluster: ClusterId) -> Result<Hopsworks, String> {
        let row: &ClusterRow = pass.clusters.get(&cluster).ok_or_else(|| format!("cluster {cluster} is gone"))?;
        let made_from = Fingerprint {
            api_url: row.api_url.clone(),
            ca_bundle: row.ca_bundle.clone(),
            oauth_client_id: row.oauth_client_id.clone(),
            api_key_ciphertext: row.api_key_ciphertext.clone(),
        };
        if let Some((fingerprint, client)) = self.clients.lock().await.get(&cluster)
            && *fingerprint == made_from
        {
            return Ok(client.clone());
        }
        let access = row.access(&self.vault).map_err(|e| format!("cluster {}: API key: {e}", row.name))?;
        let client = Hopsworks::new(&access, &self.hopsworks).map_err(|e| e.0)?;
        self.clients.lock().await.insert(cluster, (made_from, client.clone()));
        Ok(client)
    }

    /// Does the work; answers why not when it could not.
    async fn attempt(&self, work: &Work, pass: Pass<'_>) -> Result<(), String> {
        let person = pass.people.get(&work.user_id).ok_or_else(|| "the user is not known yet".to_owned())?;
        let current = self.client(pass, work.cluster_id).await?;
        let previous = match work.previous_cluster_id {
            Some(id) => Some(self.client(pass, id).await?),
            None => None,
        };
        let written = if work.status == AssignmentState::Unassigning {
            let had = current.deactivate(work.hopsworks_user_id, &person.email).await.map_err(|e| e.0)?;
            let had = had || work.hopsworks_user_id.is_some();
            self.write(work, Step::Released { had }).await?
        } else {
            if let Some(previous) = previous {
                let had = previous
                    .deactivate(work.previous_hopsworks_user_id, &person.email)
                    .await
                    .map_err(|e| format!("deactivate the account on the previous cluster: {}", e.0))?;
                let had = had || work.previous_hopsworks_user_id.is_some();
                if !self.write(work, Step::MovedOff { had }).await? {
                    return self.release(work).await;
                }
            }
            let (username, id) = current.ensure_account(person, work.max_num_projects).await.map_err(|e| e.0)?;
            tracing::info!(user_id = %work.user_id, cluster_id = %work.cluster_id, hopsworks_username = %username,
                "Hopsworks account ready");
            self.write(work, Step::Complete { username, id }).await?
        };
        if written { Ok(()) } else { self.release(work).await }
    }

    /// Writes a finished step back, if the assignment is still the one the work was for.
    async fn write(&self, work: &Work, step: Step) -> Result<bool, String> {
        self.db
            .transaction(|c| {
                let (w, step) = (work.clone(), step.clone());
                Box::pin(async move {
                    Tx::Ok(match step {
                        Step::Released { had } => work::released(c, &w, had).await?,
                        Step::MovedOff { had } => work::moved_off(c, &w, had).await?,
                        Step::Complete { username, id } => work::complete(c, &w, &username, id).await?,
                    })
                })
            })
            .await
            .map_err(|e| format!("database: {e}"))
    }

    async fn release(&self, work: &Work) -> Result<(), String> {
        let user = work.user_id;
        self.db
            .transaction(|c| Box::pin(async move { Tx::Ok(work::release_lease(c, user).await?) }))
            .await
            .map_err(|e| format!("database: {e}"))
    }
}

/// What one pass read for all its work: the people and the clusters.
#[derive(Debug, Clone, Copy)]
struct Pass<'a> {
    people: &'a HashMap<UserId, Person>,
    clusters: &'a HashMap<ClusterId, ClusterRow>,
}

/// A finished piece of Hopsworks work to write back.
#[derive(Debug, Clone)]
enum Step {
    /// The unassigned user's account is deactivated.
    Released { had: bool },
    /// The moved user's old account is deactivated.
    MovedOff { had: bool },
    /// The account exists.
    Complete { username: String, id: i64 },
}
