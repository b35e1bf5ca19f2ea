//! Team memberships as the team service announces them (`team_members`): per member, the
//! latest membership under the one rule of [`hopsbridge_domain::membership`], whatever order
//! and however often `TeamMemberJoinedV1` and `TeamMemberRemovedV1` arrive. identity keeps
//! them to answer whose account a person's usage belongs to (`account_owner_id`, from which
//! the gateway derives the owner and member roles) and to refuse a member deleting their own
//! account.

use crate::error::IdentityError;
use crate::schema::team_members;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::membership::{self, Change, Membership};
use hopsbridge_domain::{MembershipId, OwnerId, UserId};

/// A member's row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = team_members, treat_none_as_null = true)]
struct Row {
    member_user_id: UserId,
    membership_id: MembershipId,
    owner_user_id: OwnerId,
    joined_at: Option<DateTime<Utc>>,
    removed_at: Option<DateTime<Utc>>,
}

/// A time as the rule counts it: microseconds since the Unix epoch.
fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A time of the rule as stored. Events are checked before they are applied, so a time out of
/// range cannot reach here; it would be stored as unknown.
fn stored(at: Option<i64>) -> Option<DateTime<Utc>> {
    at.and_then(DateTime::from_timestamp_micros)
}

impl Row {
    fn kept(&self) -> Membership {
        Membership {
            id: self.membership_id,
            owner: self.owner_user_id,
            joined_at: self.joined_at.map(micros),
            removed_at: self.removed_at.map(micros),
        }
    }

    fn of(member: UserId, m: Membership) -> Self {
        Self {
            member_user_id: member,
            membership_id: m.id,
            owner_user_id: m.owner,
            joined_at: stored(m.joined_at),
            removed_at: stored(m.removed_at),
        }
    }
}

/// What is kept of `member`'s latest membership.
///
/// # Errors
/// When Postgres fails.
pub async fn kept(conn: &mut AsyncPgConnection, member: UserId) -> Result<Option<Membership>, IdentityError> {
    let row: Option<Row> = team_members::table.find(member).select(Row::as_select()).first(conn).await.optional()?;
    Ok(row.map(|r| r.kept()))
}

/// The owner whose team `member` belongs to at `at`, if any.
///
/// # Errors
/// When Postgres fails.
pub async fn owner_at(
    conn: &mut AsyncPgConnection,
    member: UserId,
    at: DateTime<Utc>,
) -> Result<Option<OwnerId>, IdentityError> {
    Ok(membership::owner_at(kept(conn, member).await?, micros(at)))
}

/// The current members of `owner`'s team at `at`, by id.
///
/// # Errors
/// When Postgres fails.
pub async fn members_at(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    at: DateTime<Utc>,
) -> Result<Vec<UserId>, IdentityError> {
    let rows: Vec<Row> = team_members::table
        .filter(team_members::owner_user_id.eq(owner))
        .order(team_members::member_user_id)
        .select(Row::as_select())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter(|r| membership::owner_at(Some(r.kept()), micros(at)) == Some(owner))
        .map(|r| r.member_user_id)
        .collect())
}

/// Applies what the team service announced about `member`: the row is read for update, the
/// rule decides what to keep, and that is written back, in the caller's transaction. A first
/// row inserted meanwhile by another transaction is read again and the rule applied to it.
///
/// # Errors
/// When Postgres fails.
pub async fn apply(conn: &mut AsyncPgConnection, member: UserId, change: Change) -> Result<(), IdentityError> {
    loop {
        let row: Option<Row> =
            team_members::table.find(member).select(Row::as_select()).for_update().first(conn).await.optional()?;
        let before = row.map(|r| r.kept());
        let Some(after) = membership::apply(before, change) else { return Ok(()) };
        let row = Row::of(member, after);
        if before.is_some() {
            if before != Some(after) {
                diesel::update(team_members::table.find(member)).set(&row).execute(conn).await?;
            }
            return Ok(());
        }
        let inserted =
            diesel::insert_into(team_members::table).values(&row).on_conflict_do_nothing().execute(conn).await?;
        if inserted == 1 {
            return Ok(());
        }
    }
}
