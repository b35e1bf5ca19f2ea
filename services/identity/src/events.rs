//! What identity learns from other services: team memberships.

use crate::memberships;
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::{TeamMemberJoinedV1, TeamMemberRemovedV1};
use hopsbridge_domain::{OwnerId, UserId};
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent, parse_uuid};

/// The owner and the member an event names, parsed once; an event naming anything else is
/// rejected.
fn owner_and_member(owner: &str, member: &str) -> Result<(OwnerId, UserId), HandlerError> {
    let owner = OwnerId::from_uuid(parse_uuid("owner_user_id", owner)?);
    let member = UserId::from_uuid(parse_uuid("member_user_id", member)?);
    Ok((owner, member))
}

/// Records that a member joined an owner's team.
#[derive(Debug, Clone, Copy)]
pub struct MemberJoined;

impl Handler<TeamMemberJoinedV1> for MemberJoined {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberJoinedV1>,
    ) -> Result<(), HandlerError> {
        let (owner, member) = owner_and_member(&event.payload.owner_user_id, &event.payload.member_user_id)?;
        memberships::record(conn, owner, member).await.map_err(|e| HandlerError::Retry(e.into()))
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
        let (owner, member) = owner_and_member(&event.payload.owner_user_id, &event.payload.member_user_id)?;
        memberships::remove(conn, owner, member).await.map_err(|e| HandlerError::Retry(e.into()))
    }
}
