//! The background task: seats users waiting for capacity (longest waiting first), does the
//! Hopsworks work of assignments (create accounts, deactivate old ones) and of team members'
//! places in their owner's projects (add them, take them out), retrying failures with backoff.
//! It also pushes each account's status and `maxNumProjects` until Hopsworks agrees
//! ([`lifecycle`]). It runs every `assignments.retry_interval_ms` and whenever something
//! changes.
//!
//! Taking a member out of a project goes through Hopsworks' members route, which only a
//! project's Data owner may use to remove someone else: the admin key's own user is made a
//! Data owner of the project (unless it is one already), removes the member, then removes
//! itself. Each step is recorded, so a failure midway is retried from where it stopped, and a
//! step repeated finds its work done (a member already gone, a user already added).

use crate::assignments::{self, Assignment};
use crate::clusters::{self, ClusterRow};
use crate::config::{AssignmentsConfig, HopsworksConfig};
use crate::crypto::Vault;
use crate::hopsworks::{Hopsworks, HopsworksUser, MemberChange, Members, PROJECT_PAGE};
use crate::lifecycle;
use crate::project_members::{self, AccessState, ProjectMember};
use crate::seats::placement_lock;
use crate::team_members::{self, TeamMember};
use crate::teams::{self, OwnerProjects};
use crate::users::{self, Person};
use crate::work::{self, Work};
use futures::StreamExt as _;
use hopsbridge_domain::{AssignmentState, ClusterId, ProjectRole, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::{Database, DbError};
use std::collections::{BTreeMap, HashMap};
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
    /// Calendar time: when an assignment completed.
    clock: Clock,
    /// Clusters may be on loopback, link-local and metadata addresses (development).
    allow_private_addresses: bool,
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
    /// A task over `db` on calendar time `clock`, woken early through `wake`.
    #[must_use]
    pub fn new(
        (db, clock): (Database, Clock),
        vault: Vault,
        hopsworks: HopsworksConfig,
        cfg: AssignmentsConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            db,
            vault,
            hopsworks,
            cfg,
            wake,
            clock,
            allow_private_addresses: false,
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Lets the clients call clusters on loopback, link-local and metadata addresses
    /// (`clusters.allow_private_addresses`, development).
    #[must_use]
    pub const fn allowing_private_addresses(mut self, allow: bool) -> Self {
        self.allow_private_addresses = allow;
        self
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
        let more_accounts = self.account_work().await?;
        let more_projects = self.project_work().await?;
        let more_syncs = self.account_syncs().await?;
        Ok(placed > 0 || more_accounts || more_projects || more_syncs)
    }

    fn limits(&self) -> (i64, i64) {
        let limit = i64::try_from(self.cfg.concurrency.saturating_mul(4)).unwrap_or(i64::MAX);
        let lease = i64::try_from(self.cfg.lease_secs).unwrap_or(i64::MAX);
        (limit, lease)
    }

    /// Does due assignment work; answers whether more may be due.
    async fn account_work(&self) -> Result<bool, DbError> {
        let (limit, lease) = self.limits();
        let work =
            self.db.transaction(|c| Box::pin(async move { Tx::Ok(work::claim_due(c, limit, lease).await?) })).await?;
        let taken = work.len();
        if work.is_empty() {
            return Ok(false);
        }
        // Who and where, read once for the whole pass: the people, the clusters, and for team
        // members their membership and their owner's assignment.
        let (people, clusters, teams, owners) = {
            let mut conn = self.db.conn().await?;
            let user_ids: Vec<UserId> = work.iter().map(|w| w.user_id).collect();
            let cluster_ids: Vec<ClusterId> =
                work.iter().flat_map(|w| std::iter::once(w.cluster_id).chain(w.previous_cluster_id)).collect();
            let teams = team_members::current_of(&conn, &user_ids).await?;
            let owner_ids: Vec<UserId> = teams.values().map(|t| t.owner_id.as_user()).collect();
            let owners = assignments::get_many(&conn, &owner_ids).await?;
            (users::get_many(&conn, &user_ids).await?, clusters::rows(&mut conn, &cluster_ids).await?, teams, owners)
        };
        let pass = Pass { people: &people, clusters: &clusters, teams: &teams, owners: &owners };
        futures::stream::iter(work)
            .for_each_concurrent(self.cfg.concurrency, |w| async move { self.process(w, pass).await })
            .await;
        Ok(i64::try_from(taken).unwrap_or(0) >= limit)
    }

    /// Pushes due account statuses and limits to Hopsworks ([`lifecycle`]); answers whether
    /// more may be due.
    async fn account_syncs(&self) -> Result<bool, DbError> {
        let (limit, lease) = self.limits();
        let work = self
            .db
            .transaction(|c| Box::pin(async move { Tx::Ok(lifecycle::claim_due(c, limit, lease).await?) }))
            .await?;
        let taken = work.len();
        if work.is_empty() {
            return Ok(false);
        }
        let clusters = {
            let mut conn = self.db.conn().await?;
            let ids: Vec<ClusterId> = work.iter().map(|w| w.cluster_id).collect();
            clusters::rows(&mut conn, &ids).await?
        };
        let clusters = &clusters;
        futures::stream::iter(work)
            .for_each_concurrent(self.cfg.concurrency, |w| async move {
                let outcome = self.push_account(&w, clusters).await;
                if let Err(reason) = &outcome {
                    tracing::warn!(user_id = %w.user_id, cluster_id = %w.cluster_id, attempts = w.attempts,
                        reason = %reason, "Hopsworks account status or limit not set; will try again");
                } else {
                    tracing::info!(user_id = %w.user_id, cluster_id = %w.cluster_id, "Hopsworks account agrees");
                }
                let delay = self.retry_delay(w.attempts);
                let recorded = self
                    .db
                    .transaction(|c| {
                        let (w, outcome) = (w.clone(), outcome.clone());
                        Box::pin(async move {
                            Tx::Ok(
                                lifecycle::finished(c, &w, outcome.as_ref().copied().map_err(String::as_str), delay)
                                    .await?,
                            )
                        })
                    })
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "could not record an account push; the lease will run out");
                }
            })
            .await;
        Ok(i64::try_from(taken).unwrap_or(0) >= limit)
    }

    async fn push_account(
        &self,
        work: &lifecycle::AccountSync,
        clusters: &HashMap<ClusterId, ClusterRow>,
    ) -> Result<(), String> {
        let status = {
            let mut conn = self.db.conn().await.map_err(|e| format!("database: {e}"))?;
            lifecycle::person_status(&mut conn, work.user_id).await.map_err(|e| format!("database: {e}"))?
        };
        let client = self.client(clusters, work.cluster_id).await?;
        lifecycle::push(&client, work, status).await
    }

    async fn process(&self, work: Work, pass: Pass<'_>) {
        match self.attempt(&work, pass).await {
            Ok(()) => {}
            Err(reason) => {
                tracing::warn!(user_id = %work.user_id, cluster_id = %work.cluster_id, attempts = work.attempts,
                    reason = %reason, "Hopsworks work failed; will try again");
                let delay = self.retry_delay(work.attempts);
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

    /// The delay before the next attempt, `attempts` counting the one that failed: the first
    /// failure waits the first delay.
    fn retry_delay(&self, attempts: i32) -> Duration {
        let retry = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0);
        self.cfg.retry_backoff().delay(retry)
    }

    /// The cluster's Hopsworks client. One is kept per cluster, so its connections (and their
    /// TLS sessions) serve every piece of work; it is made again when the cluster's URL, CA
    /// bundle, OAuth client or sealed API key changed.
    async fn client(&self, clusters: &HashMap<ClusterId, ClusterRow>, cluster: ClusterId) -> Result<Hopsworks, String> {
        let row: &ClusterRow = clusters.get(&cluster).ok_or_else(|| format!("cluster {cluster} is gone"))?;
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
        let client = Hopsworks::new(&access, &self.hopsworks, self.allow_private_addresses).map_err(|e| e.0)?;
        self.clients.lock().await.insert(cluster, (made_from, client.clone()));
        Ok(client)
    }

    /// Does the work; answers why not when it could not.
    async fn attempt(&self, work: &Work, pass: Pass<'_>) -> Result<(), String> {
        let person = pass.people.get(&work.user_id).ok_or_else(|| "the user is not known yet".to_owned())?;
        let current = self.client(pass.clusters, work.cluster_id).await?;
        let previous = match work.previous_cluster_id {
            Some(id) => Some(self.client(pass.clusters, id).await?),
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
            let account = current.ensure_account(person, work.max_num_projects).await.map_err(|e| e.0)?;
            tracing::info!(user_id = %work.user_id, cluster_id = %work.cluster_id, hopsworks_username = %account.username,
                "Hopsworks account ready");
            let projects = match pass.owner_on(work) {
                Some((team, owner)) => Some(self.owner_projects(&current, work, team, owner, &account).await?),
                None => None,
            };
            self.write(work, Step::Complete { username: account.username, id: account.id, projects }).await?
        };
        if written { Ok(()) } else { self.release(work).await }
    }

    /// A team member's account exists on their owner's cluster: the owner's projects there
    /// (those whose creator is the owner's Hopsworks username), for the member to be added to.
    async fn owner_projects(
        &self,
        client: &Hopsworks,
        work: &Work,
        team: &TeamMember,
        owner: &Assignment,
        account: &HopsworksUser,
    ) -> Result<OwnerProjects, String> {
        let owner_username = owner.hopsworks_username.as_deref().unwrap_or_default();
        let projects = client
            .projects(PROJECT_PAGE)
            .await
            .map_err(|e| format!("list the owner's projects: {}", e.0))?
            .into_iter()
            .filter(|p| p.creator.as_ref().and_then(|c| c.username.as_deref()) == Some(owner_username))
            .map(|p| (p.id, p.name))
            .collect();
        Ok(OwnerProjects {
            membership: team.membership_id,
            cluster: work.cluster_id,
            username: account.username.clone(),
            email: account.email.clone(),
            projects,
        })
    }

    /// Writes a finished step back, if the assignment is still the one the work was for, with
    /// what follows from it for teams: a member's projects recorded, a member (or an owner's
    /// members) placed. The member's team row and the placement lock are taken first, in the
    /// order every transaction takes them.
    async fn write(&self, work: &Work, step: Step) -> Result<bool, String> {
        self.db
            .transaction(|c| {
                let (w, step, now) = (work.clone(), step.clone(), self.clock.now());
                Box::pin(async move {
                    team_members::lock(c, w.user_id).await?;
                    placement_lock(c).await?;
                    Tx::Ok(match step {
                        Step::Released { had } => {
                            let written = work::released(c, &w, had, now).await?;
                            if written {
                                teams::settle(c, w.user_id).await?;
                            }
                            written
                        }
                        Step::MovedOff { had } => work::moved_off(c, &w, had, now).await?,
                        Step::Complete { username, id, projects } => {
                            let written = work::complete(c, &w, (&username, id), now).await?;
                            if written {
                                if let Some(read) = &projects {
                                    let added = teams::synced(c, w.user_id, read).await?;
                                    tracing::info!(user_id = %w.user_id, added, "team member's projects recorded");
                                }
                                teams::settle(c, w.user_id).await?;
                                teams::owner_ready(c, w.user_id).await?;
                            }
                            written
                        }
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

    // -----------------------------------------------------------------------------------------
    // Members' places in their owner's projects

    /// Does due project work; answers whether more may be due. Rows of one project are done
    /// one after another (their removals share the admin's membership of it); projects
    /// concurrently.
    async fn project_work(&self) -> Result<bool, DbError> {
        let (limit, lease) = self.limits();
        let work = self
            .db
            .transaction(|c| Box::pin(async move { Tx::Ok(project_members::claim_due(c, limit, lease).await?) }))
            .await?;
        let taken = work.len();
        if work.is_empty() {
            return Ok(false);
        }
        let cluster_ids: Vec<ClusterId> = work.iter().map(|w| w.place.cluster_id).collect();
        let clusters = clusters::rows(&mut *self.db.conn().await?, &cluster_ids).await?;
        let mut by_project: BTreeMap<(ClusterId, i64), Vec<ProjectMember>> = BTreeMap::new();
        for w in work {
            by_project.entry((w.place.cluster_id, w.place.project_id)).or_default().push(w);
        }
        let clusters = &clusters;
        futures::stream::iter(by_project.into_values())
            .for_each_concurrent(self.cfg.concurrency, |rows| async move {
                for w in rows {
                    self.process_project(w, clusters).await;
                }
            })
            .await;
        Ok(i64::try_from(taken).unwrap_or(0) >= limit)
    }

    async fn process_project(&self, work: ProjectMember, clusters: &HashMap<ClusterId, ClusterRow>) {
        let outcome = match self.client(clusters, work.place.cluster_id).await {
            Ok(client) => match work.state {
                AccessState::Adding => self.add_to_project(&client, &work).await,
                _ => self.remove_from_project(&client, &work).await,
            },
            Err(e) => Err(e),
        };
        let Err(reason) = outcome else { return };
        tracing::warn!(member_id = %work.place.member_id, cluster_id = %work.place.cluster_id, project_id = work.place.project_id,
            state = work.state.as_str(), attempts = work.attempts, reason = %reason,
            "Hopsworks project membership work failed; will try again");
        let delay = self.retry_delay(work.attempts);
        let recorded = self
            .db
            .transaction(|c| {
                let (w, reason) = (work.clone(), reason.clone());
                Box::pin(async move { Tx::Ok(project_members::failed(c, &w, &reason, delay).await?) })
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "could not record a failed attempt; the lease will run out");
        }
    }

    /// Adds the member to the project with their role.
    async fn add_to_project(&self, client: &Hopsworks, work: &ProjectMember) -> Result<(), String> {
        let role = work.place.project_role.as_str();
        let added = client
            .add_to_projects(&work.place.hopsworks_username, role, &[work.place.project_id])
            .await
            .map_err(|e| e.0)?;
        let to = if added == MemberChange::ProjectGone { AccessState::Gone } else { AccessState::Added };
        tracing::info!(member_id = %work.place.member_id, project_id = work.place.project_id, state = to.as_str(),
            "team member added to a project of their owner's");
        self.finish_project(work, to).await
    }

    /// Takes the member out of the project, step by step: find out whether the admin key's
    /// user must be made a member for it, make it one, remove the member, remove it again.
    async fn remove_from_project(&self, client: &Hopsworks, work: &ProjectMember) -> Result<(), String> {
        let admin = client.me().await.map_err(|e| e.0)?;
        let mut admin_added = work.admin_added;
        if admin_added.is_none() && !work.member_removed {
            match client.project_members(work.place.project_id).await.map_err(|e| e.0)? {
                Members::ProjectGone => return self.finish_project(work, AccessState::Gone).await,
                Members::NotAMember => admin_added = Some(true),
                Members::Listed(members) => {
                    if !members.iter().any(|m| m.email.eq_ignore_ascii_case(&work.place.hopsworks_email)) {
                        return self.finish_project(work, AccessState::Removed).await;
                    }
                    let own = members.iter().find(|m| m.username == admin.username).map(|m| m.role.as_str());
                    if own != Some(ProjectRole::DataOwner.as_str()) {
                        return Err(format!(
                            "the API key's user {} is a {} of project {}, not a Data owner: it cannot remove members",
                            admin.username,
                            own.unwrap_or("member"),
                            work.place.project_name
                        ));
                    }
                    admin_added = Some(false);
                }
            }
            if !self.progress(work, admin_added, false).await? {
                return Ok(());
            }
        }
        if !work.member_removed {
            if admin_added == Some(true) {
                let made = client
                    .add_to_projects(&admin.username, ProjectRole::DataOwner.as_str(), &[work.place.project_id])
                    .await
                    .map_err(|e| format!("make the API key's user a Data owner: {}", e.0))?;
                if made == MemberChange::ProjectGone {
                    return self.finish_project(work, AccessState::Gone).await;
                }
            }
            match client.remove_member(work.place.project_id, &work.place.hopsworks_email).await.map_err(|e| e.0)? {
                MemberChange::Done | MemberChange::NotMember => {}
                MemberChange::ProjectGone => return self.finish_project(work, AccessState::Gone).await,
                MemberChange::CallerNotMember => {
                    // Someone took the admin's user out meanwhile: find out again next time.
                    self.progress(work, None, false).await?;
                    return Err("the API key's user is no member of the project any more".into());
                }
            }
            if !self.progress(work, admin_added, true).await? {
                return Ok(());
            }
        }
        if admin_added == Some(true) {
            match client.remove_member(work.place.project_id, &admin.email).await.map_err(|e| e.0)? {
                MemberChange::Done | MemberChange::NotMember | MemberChange::CallerNotMember => {}
                MemberChange::ProjectGone => return self.finish_project(work, AccessState::Gone).await,
            }
        }
        tracing::info!(member_id = %work.place.member_id, project_id = work.place.project_id,
            "former team member taken out of a project of their owner's");
        self.finish_project(work, AccessState::Removed).await
    }

    /// Records a removal's progress; answers false (having given the row back) when the row
    /// was turned meanwhile.
    async fn progress(
        &self,
        work: &ProjectMember,
        admin_added: Option<bool>,
        member_removed: bool,
    ) -> Result<bool, String> {
        let written = self
            .db
            .transaction(|c| {
                let w = work.clone();
                Box::pin(async move { Tx::Ok(project_members::progress(c, &w, admin_added, member_removed).await?) })
            })
            .await
            .map_err(|e| format!("database: {e}"))?;
        if !written {
            self.release_project(work).await?;
        }
        Ok(written)
    }

    /// The row is `to`; a removal done may leave the member out of every project of the team
    /// they left, and so unassigned (in the same transaction, after the member's team row and
    /// the placement lock).
    async fn finish_project(&self, work: &ProjectMember, to: AccessState) -> Result<(), String> {
        let paying = self.hopsworks.max_num_projects_paying;
        let written = self
            .db
            .transaction(|c| {
                let w = work.clone();
                Box::pin(async move {
                    if to == AccessState::Added {
                        return Tx::Ok(project_members::finish(c, &w, to).await?);
                    }
                    team_members::lock(c, w.place.member_id).await?;
                    placement_lock(c).await?;
                    let written = project_members::finish(c, &w, to).await?;
                    if written && teams::removal_done(c, w.place.member_id, paying).await? {
                        tracing::info!(member_id = %w.place.member_id, "former team member out of every project; unassigned");
                    }
                    Tx::Ok(written)
                })
            })
            .await
            .map_err(|e| format!("database: {e}"))?;
        if written { Ok(()) } else { self.release_project(work).await }
    }

    async fn release_project(&self, work: &ProjectMember) -> Result<(), String> {
        let id = work.id;
        self.db
            .transaction(|c| Box::pin(async move { Tx::Ok(project_members::release_lease(c, id).await?) }))
            .await
            .map_err(|e| format!("database: {e}"))
    }
}

/// What one pass read for all its work: the people, the clusters, team members' memberships
/// and their owners' assignments.
#[derive(Debug, Clone, Copy)]
struct Pass<'a> {
    people: &'a HashMap<UserId, Person>,
    clusters: &'a HashMap<ClusterId, ClusterRow>,
    teams: &'a HashMap<UserId, TeamMember>,
    owners: &'a HashMap<UserId, Assignment>,
}

impl<'a> Pass<'a> {
    /// For a team member whose account is being made on their owner's cluster (the owner's
    /// assignment complete there): the membership and the owner's assignment.
    fn owner_on(&self, work: &Work) -> Option<(&'a TeamMember, &'a Assignment)> {
        let team = self.teams.get(&work.user_id)?;
        let owner = self.owners.get(&team.owner_id.as_user())?;
        (owner.status == AssignmentState::Complete && owner.cluster_id == Some(work.cluster_id))
            .then_some((team, owner))
    }
}

/// A finished piece of Hopsworks work to write back.
#[derive(Debug, Clone)]
enum Step {
    /// The unassigned user's account is deactivated.
    Released { had: bool },
    /// The moved user's old account is deactivated.
    MovedOff { had: bool },
    /// The account exists; for a team member on their owner's cluster, with the owner's
    /// projects there.
    Complete { username: String, id: i64, projects: Option<OwnerProjects> },
}
