//! What provisioning learns from other services: people (identity), paying owners (billing)
//! and team members (team).

use crate::assignments::{self, Requested};
use crate::error::ProvisioningCode;
use crate::lifecycle;
use crate::teams::{self, Announced};
use crate::users::{self, Person};
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::{
    PaymentMethodAddedV1, PlanChangedV1, TeamMemberJoinedV1, TeamMemberRemovedV1, UserCreatedV1, UserDeletedV1,
    UserReactivatedV1, UserSignedInV1, UserSuspendedV1,
};
use hopsbridge_domain::{AccountStatus, ProjectRole, UserId};
use hopsbridge_platform::events::{
    Handler, HandlerError, InBatch, MembershipEvent as _, NewPerson, ReceivedEvent, parse_uuid,
};
use tracing::Instrument as _;

/// The `user_id` of an event.
fn user_id(raw: &str) -> Result<UserId, HandlerError> {
    parse_uuid("user_id", raw).map(UserId::from_uuid)
}

/// Records a new person, and seats them if their payment method arrived first.
#[derive(Debug, Clone, Copy)]
pub struct UserCreated;

impl Handler<UserCreatedV1> for UserCreated {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        let new = NewPerson::read(&event.payload)?;
        let user_id = new.user;
        let person = Person {
            user_id,
            auth_subject: new.subject,
            email: new.email.to_string(),
            name: new.name,
            status: AccountStatus::Active,
        };
        users::upsert(conn, &person).await?;
        if let Some(outcome) = assignments::user_known(conn, user_id).await? {
            tracing::info!(%user_id, ?outcome, "waiting request placed now that the user is known");
        }
        Ok(())
    }
}

/// Records a status change announced by identity.
#[derive(Debug, Clone, Copy)]
pub struct UserStatus;

impl Handler<UserSuspendedV1> for UserStatus {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserSuspendedV1>,
    ) -> Result<(), HandlerError> {
        let user = user_id(&event.payload.user_id)?;
        if users::set_status(conn, user, AccountStatus::Suspended).await? {
            // The Hopsworks account is blocked by the background task, retried until it is.
            lifecycle::mark_due(conn, user).await?;
        }
        Ok(())
    }
}

impl Handler<UserReactivatedV1> for UserStatus {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserReactivatedV1>,
    ) -> Result<(), HandlerError> {
        let user = user_id(&event.payload.user_id)?;
        if users::set_status(conn, user, AccountStatus::Active).await? {
            lifecycle::mark_due(conn, user).await?;
        }
        Ok(())
    }
}

impl Handler<UserDeletedV1> for UserStatus {
    /// A deleted person keeps no seat: their assignment is released like an admin's
    /// unassignment (the account deactivated, ClusterUnassigned announced).
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserDeletedV1>,
    ) -> Result<(), HandlerError> {
        let user_id = user_id(&event.payload.user_id)?;
        users::set_status(conn, user_id, AccountStatus::Deleted).await?;
        match assignments::unassign(conn, user_id).await {
            Ok(a) => tracing::info!(%user_id, status = %a.status, "deleted user's seat released"),
            Err(e) if e.code() == Some(ProvisioningCode::NotAssigned) => {}
            Err(e) => return Err(HandlerError::Retry(e.into())),
        }
        Ok(())
    }
}

/// A sign-in (login repair): the person's Hopsworks account is checked against ours (status and
/// `maxNumProjects`) and set again where it differs, by the same push as a change.
#[derive(Debug, Clone, Copy)]
pub struct SignedIn;

impl Handler<UserSignedInV1> for SignedIn {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserSignedInV1>,
    ) -> Result<(), HandlerError> {
        lifecycle::mark_due(conn, user_id(&event.payload.user_id)?).await?;
        Ok(())
    }
}

/// Keeps each owner's plan (the active projects it allows) and sets their account's
/// `maxNumProjects` again from the last project sync.
#[derive(Debug, Clone, Copy)]
pub struct PlanChanged {
    /// Active projects allowed before any plan (`projects.default_active_projects`).
    pub default_active_projects: i32,
}

impl Handler<PlanChangedV1> for PlanChanged {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<PlanChangedV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let owner = user_id(&p.user_id)?;
        if p.max_active_projects < 0 {
            return Err(HandlerError::Reject(format!("max_active_projects is negative: {}", p.max_active_projects)));
        }
        let changed_at = chrono::DateTime::from_timestamp(p.changed_at_unix_seconds, 0).ok_or_else(|| {
            HandlerError::Reject(format!("changed_at is out of range: {}", p.changed_at_unix_seconds))
        })?;
        if lifecycle::record_plan(conn, owner.as_owner(), &p.plan, p.max_active_projects, changed_at).await? {
            let limit = lifecycle::plan_changed(conn, owner, self.default_active_projects).await?;
            tracing::info!(user_id = %owner, plan = %p.plan, ?limit, "plan recorded");
        }
        Ok(())
    }
}

/// Seats a paying owner on a cluster (or lets them wait for capacity, or for their UserCreated).
#[derive(Debug, Clone, Copy)]
pub struct PaymentMethodAdded {
    /// `maxNumProjects` of a paying owner.
    pub max_num_projects: i32,
}

impl Handler<PaymentMethodAddedV1> for PaymentMethodAdded {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<PaymentMethodAddedV1>,
    ) -> Result<(), HandlerError> {
        let user_id = user_id(&event.payload.user_id)?;
        let outcome = assignments::request(conn, user_id, self.max_num_projects).await?;
        log_request(user_id, outcome);
        Ok(())
    }

    /// A batch is placed together: one placement lock and one seat count for all of it.
    async fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[InBatch<'_, PaymentMethodAddedV1>],
    ) -> Result<(), HandlerError> {
        let mut requests = Vec::with_capacity(events.len());
        for e in events {
            requests.push((user_id(&e.event.payload.user_id)?, self.max_num_projects));
        }
        let outcomes = assignments::request_all(conn, &requests)
            .instrument(tracing::info_span!("place", requests = requests.len()))
            .await?;
        for ((e, (user_id, _)), outcome) in events.iter().zip(&requests).zip(outcomes) {
            e.span.in_scope(|| log_request(*user_id, outcome));
        }
        Ok(())
    }
}

fn log_request(user_id: UserId, outcome: Requested) {
    match outcome {
        Requested::AlreadyAssigned => tracing::debug!(%user_id, "already assigned; nothing to do"),
        Requested::UserDeleted => tracing::info!(%user_id, "payment method of a deleted user; not assigned"),
        other => tracing::info!(%user_id, outcome = ?other, "cluster requested"),
    }
}

/// Places team members on their owner's cluster and projects, and takes them out again, under
/// the one membership rule ([`teams`]).
#[derive(Debug, Clone, Copy)]
pub struct TeamMembers {
    /// `maxNumProjects` of a paying owner, which a former member's next account gets.
    pub max_num_projects: i32,
}

impl Handler<TeamMemberJoinedV1> for TeamMembers {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberJoinedV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let news = TeamMemberJoinedV1::news(event)?;
        let (member, owner, membership, at) = (news.member, news.owner(), news.membership(), news.at());
        let role: ProjectRole = p
            .project_role
            .parse()
            .map_err(|_| HandlerError::Reject(format!("project_role is not a role: {:?}", p.project_role)))?;
        let news = Announced::Joined { membership, owner, role, at };
        let applied = teams::apply(conn, member, news, self.max_num_projects).await?;
        tracing::info!(member_id = %member, owner_id = %owner, %membership, ?applied, "team member joined");
        Ok(())
    }
}

impl Handler<TeamMemberRemovedV1> for TeamMembers {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberRemovedV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let news = TeamMemberRemovedV1::news(event)?;
        let (member, owner, membership, at) = (news.member, news.owner(), news.membership(), news.at());
        let news = Announced::Removed { membership, owner, at };
        let applied = teams::apply(conn, member, news, self.max_num_projects).await?;
        tracing::info!(member_id = %member, owner_id = %owner, %membership, reason = %p.reason, ?applied,
            "team member removed");
        Ok(())
    }
}
