//! What metering learns from other services, kept in its own tables: clusters
//! (ClusterRegistered, ClusterUpdated), who holds which Hopsworks account on a cluster
//! (ClusterAssigned, ClusterUnassigned) and whose team a member is in (TeamMemberJoined,
//! TeamMemberRemoved).
//!
//! Events of different types may arrive in any order, so every row keeps when the change it
//! reflects happened, and an older event never overwrites a newer one.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{
    ClusterAssignedV1, ClusterRegisteredV1, ClusterUnassignedV1, ClusterUpdatedV1, TeamMemberJoinedV1,
    TeamMemberRemovedV1,
};
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent, parse_uuid};

fn db(e: diesel::result::Error) -> HandlerError {
    HandlerError::Retry(e.into())
}

/// Runs an upsert whose parameters are two ids and when the change happened.
async fn record(
    conn: &mut AsyncPgConnection,
    sql: &str,
    (first, second): (uuid::Uuid, uuid::Uuid),
    at: DateTime<Utc>,
) -> Result<(), HandlerError> {
    diesel::sql_query(sql)
        .bind::<SqlUuid, _>(first)
        .bind::<SqlUuid, _>(second)
        .bind::<Timestamptz, _>(at)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// The cluster statuses provisioning announces.
pub const CLUSTER_STATUSES: [&str; 4] = ["active", "maintenance", "full", "inactive"];

/// Records a cluster, or a change to one.
#[derive(Debug, Clone, Copy)]
pub struct Clusters;

async fn upsert_cluster(
    conn: &mut AsyncPgConnection,
    cluster_id: &str,
    name: &str,
    status: &str,
    at: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let cluster_id = parse_uuid("cluster_id", cluster_id)?;
    if !CLUSTER_STATUSES.contains(&status) {
        return Err(HandlerError::Reject(format!("unknown cluster status {status:?}")));
    }
    diesel::sql_query(
        "INSERT INTO clusters (cluster_id, name, status, measured_from, updated_at) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (cluster_id) DO UPDATE SET
             name = CASE WHEN excluded.updated_at >= clusters.updated_at THEN excluded.name ELSE clusters.name END,
             status = CASE WHEN excluded.updated_at >= clusters.updated_at THEN excluded.status ELSE clusters.status END,
             -- Back from inactive: measured again from now on; the inactive time is no gap.
             measured_from = CASE WHEN clusters.status = 'inactive' AND excluded.status <> 'inactive'
                                   AND excluded.updated_at >= clusters.updated_at
                              THEN excluded.measured_from
                              ELSE least(clusters.measured_from, excluded.measured_from) END,
             scheduled_through = CASE WHEN clusters.status = 'inactive' AND excluded.status <> 'inactive'
                                      AND excluded.updated_at >= clusters.updated_at
                                 THEN NULL ELSE clusters.scheduled_through END,
             updated_at = greatest(clusters.updated_at, excluded.updated_at)",
    )
    .bind::<SqlUuid, _>(cluster_id)
    .bind::<Text, _>(name)
    .bind::<Text, _>(status)
    .bind::<Timestamptz, _>(at)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

impl Handler<ClusterRegisteredV1> for Clusters {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<ClusterRegisteredV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        upsert_cluster(conn, &p.cluster_id, &p.name, &p.status, event.occurred_at).await
    }
}

impl Handler<ClusterUpdatedV1> for Clusters {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<ClusterUpdatedV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        upsert_cluster(conn, &p.cluster_id, &p.name, &p.status, event.occurred_at).await
    }
}

/// Records who holds which Hopsworks account on a cluster.
#[derive(Debug, Clone, Copy)]
pub struct Accounts;

impl Handler<ClusterAssignedV1> for Accounts {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<ClusterAssignedV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        if p.hopsworks_username.is_empty() {
            return Err(HandlerError::Reject("ClusterAssigned without a Hopsworks username".into()));
        }
        diesel::sql_query(
            "INSERT INTO accounts (cluster_id, user_id, hopsworks_username, assigned_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (cluster_id, user_id) DO UPDATE SET
                 hopsworks_username = CASE WHEN accounts.assigned_at IS NULL OR excluded.assigned_at >= accounts.assigned_at
                                      THEN excluded.hopsworks_username ELSE accounts.hopsworks_username END,
                 assigned_at = greatest(accounts.assigned_at, excluded.assigned_at)",
        )
        .bind::<SqlUuid, _>(parse_uuid("cluster_id", &p.cluster_id)?)
        .bind::<SqlUuid, _>(parse_uuid("user_id", &p.user_id)?)
        .bind::<Text, _>(&p.hopsworks_username)
        .bind::<Timestamptz, _>(event.occurred_at)
        .execute(conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}

impl Handler<ClusterUnassignedV1> for Accounts {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<ClusterUnassignedV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        record(
            conn,
            "INSERT INTO accounts (cluster_id, user_id, unassigned_at) VALUES ($1, $2, $3)
             ON CONFLICT (cluster_id, user_id) DO UPDATE SET
                 unassigned_at = greatest(accounts.unassigned_at, excluded.unassigned_at)",
            (parse_uuid("cluster_id", &p.cluster_id)?, parse_uuid("user_id", &p.user_id)?),
            event.occurred_at,
        )
        .await
    }
}

/// Records whose team a member is in.
#[derive(Debug, Clone, Copy)]
pub struct Memberships;

impl Handler<TeamMemberJoinedV1> for Memberships {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberJoinedV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        record(
            conn,
            "INSERT INTO memberships (member_user_id, owner_user_id, joined_at) VALUES ($1, $2, $3)
             ON CONFLICT (member_user_id) DO UPDATE SET
                 owner_user_id = CASE WHEN memberships.joined_at IS NULL OR excluded.joined_at >= memberships.joined_at
                                 THEN excluded.owner_user_id ELSE memberships.owner_user_id END,
                 joined_at = greatest(memberships.joined_at, excluded.joined_at)",
            (parse_uuid("member_user_id", &p.member_user_id)?, parse_uuid("owner_user_id", &p.owner_user_id)?),
            event.occurred_at,
        )
        .await
    }
}

impl Handler<TeamMemberRemovedV1> for Memberships {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberRemovedV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        record(
            conn,
            "INSERT INTO memberships (member_user_id, owner_user_id, removed_at) VALUES ($1, $2, $3)
             ON CONFLICT (member_user_id) DO UPDATE SET
                 removed_at = greatest(memberships.removed_at, excluded.removed_at)",
            (parse_uuid("member_user_id", &p.member_user_id)?, parse_uuid("owner_user_id", &p.owner_user_id)?),
            event.occurred_at,
        )
        .await
    }
}
