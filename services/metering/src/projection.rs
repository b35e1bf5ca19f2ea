//! What metering learns from other services, kept in its own tables: clusters
//! (ClusterRegistered, ClusterUpdated), who holds which Hopsworks account on a cluster
//! (ClusterAssigned, ClusterUnassigned) and whose team a member is in (TeamMemberJoined,
//! TeamMemberRemoved).
//!
//! Events of different types may arrive in any order, so every row keeps when the change it
//! reflects happened, and an older event never overwrites a newer one. The upserts that keep
//! the newer of two rows are raw SQL: their conflict updates keep the later or earlier of the
//! stored and incoming times (`greatest`, `least`), functions diesel's DSL does not have.
//!
//! It also keeps each cluster's Hopsworks projects as provisioning last listed them, and reads
//! what a run needs to attribute usage ([`known`]).

use crate::attribution::{Known, Project};
use crate::schema::{accounts, memberships, projects};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{
    ClusterAssignedV1, ClusterRegisteredV1, ClusterUnassignedV1, ClusterUpdatedV1, TeamMemberJoinedV1,
    TeamMemberRemovedV1,
};
use hopsbridge_domain::{ClusterId, ClusterStatus, OwnerId, ProjectId, UserId};
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent, parse_uuid};

fn db(e: diesel::result::Error) -> HandlerError {
    HandlerError::Retry(e.into())
}

/// Reads the id in an event's `field`.
fn id<T: From<uuid::Uuid>>(field: &str, value: &str) -> Result<T, HandlerError> {
    parse_uuid(field, value).map(T::from)
}

/// Runs an upsert whose parameters are two ids and when the change happened.
async fn record<A, B>(
    conn: &mut AsyncPgConnection,
    sql: &str,
    (first, second): (A, B),
    at: DateTime<Utc>,
) -> Result<(), HandlerError>
where
    A: diesel::serialize::ToSql<SqlUuid, diesel::pg::Pg> + Send + 'static,
    B: diesel::serialize::ToSql<SqlUuid, diesel::pg::Pg> + Send + 'static,
{
    diesel::sql_query(sql)
        .bind::<SqlUuid, _>(first)
        .bind::<SqlUuid, _>(second)
        .bind::<Timestamptz, _>(at)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

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
    let cluster_id: ClusterId = id("cluster_id", cluster_id)?;
    let status: ClusterStatus =
        status.parse().map_err(|_| HandlerError::Reject(format!("unknown cluster status {status:?}")))?;
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
        .bind::<SqlUuid, _>(id::<ClusterId>("cluster_id", &p.cluster_id)?)
        .bind::<SqlUuid, _>(id::<UserId>("user_id", &p.user_id)?)
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
            (id::<ClusterId>("cluster_id", &p.cluster_id)?, id::<UserId>("user_id", &p.user_id)?),
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
            (id::<UserId>("member_user_id", &p.member_user_id)?, id::<OwnerId>("owner_user_id", &p.owner_user_id)?),
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
            (id::<UserId>("member_user_id", &p.member_user_id)?, id::<OwnerId>("owner_user_id", &p.owner_user_id)?),
            event.occurred_at,
        )
        .await
    }
}

/// What is known about `cluster` now: its projects and current accounts, and the current
/// owners of those account holders.
///
/// # Errors
/// When Postgres fails.
pub async fn known(conn: &mut AsyncPgConnection, cluster: ClusterId) -> QueryResult<Known> {
    let listed: Vec<(String, ProjectId, String, String)> = projects::table
        .filter(projects::cluster_id.eq(cluster))
        .select((projects::namespace, projects::project_id, projects::name, projects::creator_username))
        .load(conn)
        .await?;
    type Membership = (OwnerId, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let current: Vec<(String, UserId, Option<Membership>)> = accounts::table
        .left_join(
            memberships::table
                .on(memberships::member_user_id.eq(accounts::user_id).and(memberships::joined_at.is_not_null())),
        )
        .filter(accounts::cluster_id.eq(cluster))
        .filter(accounts::hopsworks_username.is_not_null())
        .filter(accounts::assigned_at.is_not_null())
        .filter(accounts::unassigned_at.is_null().or(accounts::unassigned_at.lt(accounts::assigned_at)))
        .select((
            accounts::hopsworks_username.assume_not_null(),
            accounts::user_id,
            (memberships::owner_user_id, memberships::joined_at, memberships::removed_at).nullable(),
        ))
        .load(conn)
        .await?;
    // A member's owner is current unless they were removed after they last joined.
    let owner = |m: &Option<Membership>| match *m {
        Some((owner, _, None)) => Some(owner),
        Some((owner, Some(joined), Some(removed))) if removed < joined => Some(owner),
        _ => None,
    };
    Ok(Known {
        projects: listed
            .into_iter()
            .map(|(namespace, id, name, creator_username)| (namespace, Project { id, name, creator_username }))
            .collect(),
        owners: current.iter().filter_map(|(_, user, m)| Some((*user, owner(m)?))).collect(),
        accounts: current.into_iter().map(|(username, user, _)| (username, user)).collect(),
    })
}

/// Replaces the stored project list of `cluster` with a fresh one from Hopsworks.
///
/// # Errors
/// When Postgres fails.
pub async fn store_projects(
    conn: &mut AsyncPgConnection,
    cluster: ClusterId,
    listed: &[(String, Project)],
) -> QueryResult<()> {
    diesel::delete(projects::table.filter(projects::cluster_id.eq(cluster))).execute(conn).await?;
    // Five parameters a row, well inside Postgres's 65,535 per statement.
    for chunk in listed.chunks(10_000) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(namespace, p)| {
                (
                    projects::cluster_id.eq(cluster),
                    projects::namespace.eq(namespace),
                    projects::project_id.eq(p.id),
                    projects::name.eq(&p.name),
                    projects::creator_username.eq(&p.creator_username),
                )
            })
            .collect();
        diesel::insert_into(projects::table)
            .values(rows)
            .on_conflict((projects::cluster_id, projects::namespace))
            .do_nothing()
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Whether any project of `cluster` was ever listed.
///
/// # Errors
/// When Postgres fails.
pub async fn has_projects(conn: &mut AsyncPgConnection, cluster: ClusterId) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(projects::table.filter(projects::cluster_id.eq(cluster)))).get_result(conn).await
}
