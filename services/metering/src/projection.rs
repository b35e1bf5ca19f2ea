//! What metering learns from other services, kept in its own tables: clusters
//! (ClusterRegistered, ClusterUpdated), who holds which Hopsworks account on a cluster
//! (ClusterAssigned, ClusterUnassigned) and whose team a member is in (TeamMemberJoined,
//! TeamMemberRemoved).
//!
//! Events of different types may arrive in any order, so every row keeps when the change it
//! reflects happened, and an older event never overwrites a newer one. The upserts that keep
//! the newer of two rows are raw SQL: their conflict updates keep the later or earlier of the
//! stored and incoming times (`greatest`, `least`), functions diesel's DSL does not have.
//! Memberships follow the one rule of [`hopsbridge_domain::membership`]: the member's row is
//! read for update, the rule decides what to keep, and that is written back.
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
use hopsbridge_domain::membership::{self, Change, Membership};
use hopsbridge_domain::{ClusterId, ClusterStatus, MembershipId, OwnerId, ProjectId, UserId};
use hopsbridge_platform::events::{Handler, HandlerError, MembershipEvent as _, ReceivedEvent, parse_id};

fn db(e: diesel::result::Error) -> HandlerError {
    HandlerError::Retry(e.into())
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
    let cluster_id: ClusterId = parse_id("cluster_id", cluster_id)?;
    let status: ClusterStatus =
        status.parse().map_err(|_| HandlerError::Reject(format!("unknown cluster status {status:?}")))?;
    diesel::sql_query(
        "INSERT INTO clusters (cluster_id, name, status, measured_from, updated_at) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (cluster_id) DO UPDATE SET
             name = CASE WHEN excluded.updated_at >= clusters.updated_at THEN excluded.name ELSE clusters.name END,
             status = CASE WHEN excluded.updated_at >= clusters.updated_at THEN excluded.status ELSE clusters.status END,
             -- Back from inactive after it was measured no more (no pods left in its projects):
             -- measured again from now on; the time in between is no gap.
             measured_from = CASE WHEN clusters.status = 'inactive' AND clusters.drained_at IS NOT NULL
                                   AND excluded.status <> 'inactive'
                                   AND excluded.updated_at >= clusters.updated_at
                              THEN excluded.measured_from
                              ELSE least(clusters.measured_from, excluded.measured_from) END,
             scheduled_through = CASE WHEN clusters.status = 'inactive' AND clusters.drained_at IS NOT NULL
                                      AND excluded.status <> 'inactive'
                                      AND excluded.updated_at >= clusters.updated_at
                                 THEN NULL ELSE clusters.scheduled_through END,
             -- An inactive cluster is measured until its projects are found without pods;
             -- any change of status starts that over.
             drained_at = CASE WHEN excluded.status <> clusters.status AND excluded.updated_at >= clusters.updated_at
                          THEN NULL ELSE clusters.drained_at END,
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
        .bind::<SqlUuid, _>(parse_id::<ClusterId>("cluster_id", &p.cluster_id)?)
        .bind::<SqlUuid, _>(parse_id::<UserId>("user_id", &p.user_id)?)
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
            (parse_id::<ClusterId>("cluster_id", &p.cluster_id)?, parse_id::<UserId>("user_id", &p.user_id)?),
            event.occurred_at,
        )
        .await
    }
}

/// A member's row in `memberships`: what the rule keeps of their latest membership.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = memberships, treat_none_as_null = true)]
struct MembershipRow {
    member_user_id: UserId,
    membership_id: MembershipId,
    owner_user_id: OwnerId,
    joined_at: Option<DateTime<Utc>>,
    removed_at: Option<DateTime<Utc>>,
}

/// A membership's id, owner, join and removal as stored.
type Stored = (MembershipId, OwnerId, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// What the rule keeps, from what is stored.
fn kept(&(id, owner, joined_at, removed_at): &Stored) -> Membership {
    Membership {
        id,
        owner,
        joined_at: joined_at.map(|t| t.timestamp_micros()),
        removed_at: removed_at.map(|t| t.timestamp_micros()),
    }
}

impl MembershipRow {
    fn kept(&self) -> Membership {
        kept(&(self.membership_id, self.owner_user_id, self.joined_at, self.removed_at))
    }

    fn of(member: UserId, m: Membership) -> Self {
        Self {
            member_user_id: member,
            membership_id: m.id,
            owner_user_id: m.owner,
            joined_at: m.joined_at.and_then(DateTime::from_timestamp_micros),
            removed_at: m.removed_at.and_then(DateTime::from_timestamp_micros),
        }
    }
}

/// Applies `change` to what is kept of `member`'s membership, in the handler's transaction. A
/// first row inserted meanwhile by another transaction is read again and the rule applied to it.
async fn apply(conn: &mut AsyncPgConnection, member: UserId, change: Change) -> Result<(), HandlerError> {
    loop {
        let row: Option<MembershipRow> = memberships::table
            .find(member)
            .select(MembershipRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()
            .map_err(db)?;
        let before = row.map(|r| r.kept());
        let Some(after) = membership::apply(before, change) else { return Ok(()) };
        let row = MembershipRow::of(member, after);
        if before.is_some() {
            if before != Some(after) {
                diesel::update(memberships::table.find(member)).set(&row).execute(conn).await.map_err(db)?;
            }
            return Ok(());
        }
        let inserted = diesel::insert_into(memberships::table)
            .values(&row)
            .on_conflict_do_nothing()
            .execute(conn)
            .await
            .map_err(db)?;
        if inserted == 1 {
            return Ok(());
        }
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
        let news = TeamMemberJoinedV1::news(event)?;
        apply(conn, news.member, news.change).await
    }
}

impl Handler<TeamMemberRemovedV1> for Memberships {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberRemovedV1>,
    ) -> Result<(), HandlerError> {
        let news = TeamMemberRemovedV1::news(event)?;
        apply(conn, news.member, news.change).await
    }
}

/// What is known about `cluster` for the window starting `at`: its projects and current
/// accounts, and the owners those account holders belonged to at `at` (the one rule's answer).
///
/// # Errors
/// When Postgres fails.
pub async fn known(conn: &mut AsyncPgConnection, cluster: ClusterId, at: DateTime<Utc>) -> QueryResult<Known> {
    let listed: Vec<(String, ProjectId, String, String)> = projects::table
        .filter(projects::cluster_id.eq(cluster))
        .select((projects::namespace, projects::project_id, projects::name, projects::creator_username))
        .load(conn)
        .await?;
    let current: Vec<(String, UserId, Option<Stored>)> = accounts::table
        .left_join(memberships::table.on(memberships::member_user_id.eq(accounts::user_id)))
        .filter(accounts::cluster_id.eq(cluster))
        .filter(accounts::hopsworks_username.is_not_null())
        .filter(accounts::assigned_at.is_not_null())
        .filter(accounts::unassigned_at.is_null().or(accounts::unassigned_at.lt(accounts::assigned_at)))
        .select((
            accounts::hopsworks_username.assume_not_null(),
            accounts::user_id,
            (memberships::membership_id, memberships::owner_user_id, memberships::joined_at, memberships::removed_at)
                .nullable(),
        ))
        .load(conn)
        .await?;
    let at = at.timestamp_micros();
    Ok(Known {
        projects: listed
            .into_iter()
            .map(|(namespace, id, name, creator_username)| (namespace, Project { id, name, creator_username }))
            .collect(),
        owners: current.iter().filter_map(|(_, user, m)| Some((*user, kept(m.as_ref()?).owner_at(at)?))).collect(),
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
