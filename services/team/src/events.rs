//! What team learns from other services: people and their status (identity), their Hopsworks
//! accounts (provisioning) and their usage (metering). Each handler writes through the
//! consumer's transaction, so its effect and the event's inbox record commit together.

use crate::error::TeamError;
use crate::usage::{self, Sample};
use crate::{accounts, members, people};
use chrono::DateTime;
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::{
    ClusterAssignedV1, ClusterUnassignedV1, UsageRecordedV1, UserCreatedV1, UserDeletedV1, UserReactivatedV1,
    UserSuspendedV1,
};
use hopsbridge_domain::{AccountStatus, ClusterId, OwnerId, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::events::{Handler, HandlerError, NewPerson, ReceivedEvent, parse_uuid};

fn retry(e: TeamError) -> HandlerError {
    HandlerError::Retry(e.into())
}

fn user(field: &str, value: &str) -> Result<UserId, HandlerError> {
    parse_uuid(field, value).map(UserId::from_uuid)
}

/// Records a new person (`UserCreatedV1`).
#[derive(Debug, Clone, Copy)]
pub struct UserCreated;

impl Handler<UserCreatedV1> for UserCreated {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserCreatedV1>,
    ) -> Result<(), HandlerError> {
        let new = NewPerson::read(&event.payload)?;
        people::created(conn, new.user, &new.email, &new.name).await.map_err(retry)
    }
}

/// Records a suspension (`UserSuspendedV1`) or a reactivation (`UserReactivatedV1`).
#[derive(Debug, Clone, Copy)]
pub struct UserStatus;

impl Handler<UserSuspendedV1> for UserStatus {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserSuspendedV1>,
    ) -> Result<(), HandlerError> {
        let id = user("user_id", &event.payload.user_id)?;
        people::set_status(conn, id, AccountStatus::Suspended, event.occurred_at).await.map_err(retry)
    }
}

impl Handler<UserReactivatedV1> for UserStatus {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserReactivatedV1>,
    ) -> Result<(), HandlerError> {
        let id = user("user_id", &event.payload.user_id)?;
        people::set_status(conn, id, AccountStatus::Active, event.occurred_at).await.map_err(retry)
    }
}

/// A deleted account (`UserDeletedV1`) leaves its team (reason `account_deleted`, with its
/// `TeamMemberRemovedV1`) and its pending invitations, at the calendar time it is handled.
#[derive(Debug, Clone)]
pub struct UserDeleted {
    /// Calendar time.
    pub clock: Clock,
}

impl Handler<UserDeletedV1> for UserDeleted {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserDeletedV1>,
    ) -> Result<(), HandlerError> {
        let id = user("user_id", &event.payload.user_id)?;
        members::account_deleted(conn, id, (event.occurred_at, event.id), self.clock.now()).await.map_err(retry)
    }
}

/// Records a Hopsworks account on a cluster (`ClusterAssignedV1`) or its end
/// (`ClusterUnassignedV1`).
#[derive(Debug, Clone, Copy)]
pub struct Accounts;

impl Handler<ClusterAssignedV1> for Accounts {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<ClusterAssignedV1>,
    ) -> Result<(), HandlerError> {
        let e = &event.payload;
        let id = user("user_id", &e.user_id)?;
        let cluster = ClusterId::from_uuid(parse_uuid("cluster_id", &e.cluster_id)?);
        accounts::record(conn, id, cluster, Some(&e.hopsworks_username), true, event.occurred_at).await.map_err(retry)
    }
}

impl Handler<ClusterUnassignedV1> for Accounts {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<ClusterUnassignedV1>,
    ) -> Result<(), HandlerError> {
        let e = &event.payload;
        let id = user("user_id", &e.user_id)?;
        let cluster = ClusterId::from_uuid(parse_uuid("cluster_id", &e.cluster_id)?);
        accounts::record(conn, id, cluster, None, false, event.occurred_at).await.map_err(retry)
    }
}

/// Adds a sample's usage to its owner's month (`UsageRecordedV1`).
#[derive(Debug, Clone, Copy)]
pub struct UsageRecorded;

impl Handler<UsageRecordedV1> for UsageRecorded {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UsageRecordedV1>,
    ) -> Result<(), HandlerError> {
        let e = &event.payload;
        let id = user("user_id", &e.user_id)?;
        let owner = OwnerId::from_uuid(parse_uuid("owner_user_id", &e.owner_user_id)?);
        let start = DateTime::from_timestamp(e.window_start_unix_seconds, 0).ok_or_else(|| {
            HandlerError::Reject(format!("window_start_unix_seconds out of range: {}", e.window_start_unix_seconds))
        })?;
        let sample = Sample {
            cpu_nanocore_seconds: e.cpu_nanocore_seconds,
            memory_byte_seconds: e.memory_byte_seconds,
            gpu_seconds: e.gpu_seconds,
        };
        usage::add(conn, owner, id, usage::month_of(start), sample).await.map_err(retry)
    }
}
