//! What identity learns from other services: team memberships.

use crate::users;
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::{TeamMemberJoinedV1, TeamMemberRemovedV1};
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent, parse_uuid};

/// Records that a member joined an owner's team.
#[derive(Debug, Clone, Copy)]
pub struct MemberJoined;

impl Handler<TeamMemberJoinedV1> for MemberJoined {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberJoinedV1>,
    ) -> Result<(), HandlerError> {
        let owner = parse_uuid("owner_user_id", &event.payload.owner_user_id)?;
        let member = parse_uuid("member_user_id", &event.payload.member_user_id)?;
        users::record_membership(conn, owner, member).await.map_err(|e| HandlerError::Retry(e.into()))
    }
}

/// Records that a member left an owner's team.
#[derive(Debug, Clone, Copy)]
pub struct MemberRemoved;

impl Handler<TeamMemberRemovedV1> for MemberRemoved {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberRemovedV1>,
    ) -> Result<(), HandlerError> {
        let owner = parse_uuid("owner_user_id", &event.payload.owner_user_id)?;
        let member = parse_uuid("member_user_id", &event.payload.member_user_id)?;
        users::remove_membership(conn, owner, member).await.map_err(|e| HandlerError::Retry(e.into()))
    }
}
