//! Team memberships as the team service announces them (`team_members`): whose team a person is
//! in, and how many members an owner has. identity keeps them to bill a member's usage to their
//! owner and to refuse deleting an account that still has a team.

use crate::error::IdentityError;
use crate::schema::team_members;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{OwnerId, UserId};

/// The owner whose team `member` belongs to, if any.
///
/// # Errors
/// When Postgres fails.
pub async fn owner_of(conn: &mut AsyncPgConnection, member: UserId) -> Result<Option<OwnerId>, IdentityError> {
    Ok(team_members::table.find(member).select(team_members::owner_user_id).first(conn).await.optional()?)
}

/// How many members `owner`'s team has.
///
/// # Errors
/// When Postgres fails.
pub async fn member_count(conn: &mut AsyncPgConnection, owner: OwnerId) -> Result<i64, IdentityError> {
    Ok(team_members::table.filter(team_members::owner_user_id.eq(owner)).count().get_result(conn).await?)
}

/// Adds or moves a member to `owner`'s team (from TeamMemberJoinedV1).
///
/// # Errors
/// When Postgres fails.
pub async fn record(conn: &mut AsyncPgConnection, owner: OwnerId, member: UserId) -> Result<(), IdentityError> {
    diesel::insert_into(team_members::table)
        .values((team_members::member_user_id.eq(member), team_members::owner_user_id.eq(owner)))
        .on_conflict(team_members::member_user_id)
        .do_update()
        .set(team_members::owner_user_id.eq(owner))
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes a member from `owner`'s team (from TeamMemberRemovedV1).
///
/// # Errors
/// When Postgres fails.
pub async fn remove(conn: &mut AsyncPgConnection, owner: OwnerId, member: UserId) -> Result<(), IdentityError> {
    diesel::delete(
        team_members::table
            .filter(team_members::member_user_id.eq(member))
            .filter(team_members::owner_user_id.eq(owner)),
    )
    .execute(conn)
    .await?;
    Ok(())
}
