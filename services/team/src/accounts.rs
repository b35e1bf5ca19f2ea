//! People's Hopsworks accounts as provisioning announces them (`accounts`): one row per person
//! and cluster, assigned or not. Events about one account arrive in any order; one applies only
//! when it is no older than the one kept.

use crate::error::TeamError;
use crate::schema::accounts;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{ClusterId, UserId};
use serde::Serialize;

/// A person's Hopsworks account as the team view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    /// `assigned` (an account on a cluster), `unassigned` (it was deactivated) or `none`.
    pub state: AccountState,
    /// The cluster, unless `none`.
    pub cluster_id: Option<ClusterId>,
    /// The Hopsworks username, unless `none`.
    pub hopsworks_username: Option<String>,
}

/// Where a person's Hopsworks account is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    /// The person has an account on a cluster.
    Assigned,
    /// Their account was deactivated, and they have no other.
    Unassigned,
    /// Provisioning has announced no account yet.
    None,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = accounts)]
struct Row {
    cluster_id: ClusterId,
    hopsworks_username: String,
    assigned: bool,
}

/// Records an announcement about `user`'s account on `cluster` made at `at`: assigned (with its
/// username) or not (`username` `None` keeps the one known).
///
/// # Errors
/// When Postgres fails.
pub async fn record(
    conn: &mut AsyncPgConnection,
    user: UserId,
    cluster: ClusterId,
    username: Option<&str>,
    assigned: bool,
    at: DateTime<Utc>,
) -> Result<(), TeamError> {
    let values = (
        accounts::user_id.eq(user),
        accounts::cluster_id.eq(cluster),
        accounts::hopsworks_username.eq(username.unwrap_or_default()),
        accounts::assigned.eq(assigned),
        accounts::changed_at.eq(at),
    );
    let upsert =
        diesel::insert_into(accounts::table).values(values).on_conflict((accounts::user_id, accounts::cluster_id));
    let newer = accounts::changed_at.le(excluded(accounts::changed_at));
    // ON CONFLICT … DO UPDATE … WHERE: the trait is named because QueryDsl's filter is in scope.
    use diesel::query_dsl::methods::FilterDsl as Where;
    let state =
        (accounts::assigned.eq(excluded(accounts::assigned)), accounts::changed_at.eq(excluded(accounts::changed_at)));
    if username.is_some() {
        let set =
            upsert.do_update().set((accounts::hopsworks_username.eq(excluded(accounts::hopsworks_username)), state));
        Where::filter(set, newer).execute(conn).await?;
    } else {
        Where::filter(upsert.do_update().set(state), newer).execute(conn).await?;
    }
    Ok(())
}

/// The Hopsworks account of each of `users`: an assigned one if there is one (the latest),
/// else the latest deactivated one, else none.
///
/// # Errors
/// When Postgres fails.
pub async fn of(
    conn: &mut AsyncPgConnection,
    users: &[UserId],
) -> Result<std::collections::HashMap<UserId, AccountView>, TeamError> {
    let rows: Vec<(UserId, Row)> = accounts::table
        .filter(accounts::user_id.eq_any(users))
        .order((accounts::user_id, accounts::assigned.desc(), accounts::changed_at.desc()))
        .select((accounts::user_id, Row::as_select()))
        .load(conn)
        .await?;
    let mut views = std::collections::HashMap::new();
    for (user, row) in rows {
        views.entry(user).or_insert_with(|| AccountView {
            state: if row.assigned { AccountState::Assigned } else { AccountState::Unassigned },
            cluster_id: Some(row.cluster_id),
            hopsworks_username: Some(row.hopsworks_username),
        });
    }
    Ok(views)
}

impl AccountView {
    /// No account announced.
    #[must_use]
    pub const fn none() -> Self {
        Self { state: AccountState::None, cluster_id: None, hopsworks_username: None }
    }
}
