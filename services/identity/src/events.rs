//! What identity learns from other services: team memberships, kept under the one rule of
//! [`hopsbridge_domain::membership`].

use crate::memberships;
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::{TeamMemberJoinedV1, TeamMemberRemovedV1};
use hopsbridge_domain::membership::Change;
use hopsbridge_domain::{MembershipId, OwnerId, UserId};
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent, parse_uuid};

/// The member, owner and membership an event names, and when it happened: the event's own time
/// (microseconds), or the envelope's when the event carries none. An event without a
/// membership id names the nil one (events from before memberships had ids); one naming
/// anything else than UUIDs, or a time no calendar holds, is rejected.
struct Named {
    member: UserId,
    owner: OwnerId,
    id: MembershipId,
    at: i64,
}

impl Named {
    fn parse(member: &str, owner: &str, id: &str, at: i64, occurred: DateTime<Utc>) -> Result<Self, HandlerError> {
        let id = if id.is_empty() { uuid::Uuid::nil() } else { parse_uuid("membership_id", id)? };
        let at = if at == 0 { occurred.timestamp_micros() } else { at };
        if DateTime::from_timestamp_micros(at).is_none() {
            return Err(HandlerError::Reject(format!("the membership's time {at} is out of range")));
        }
        Ok(Self {
            member: UserId::from_uuid(parse_uuid("member_user_id", member)?),
            owner: OwnerId::from_uuid(parse_uuid("owner_user_id", owner)?),
            id: MembershipId::from_uuid(id),
            at,
        })
    }
}

async fn apply(conn: &mut AsyncPgConnection, member: UserId, change: Change) -> Result<(), HandlerError> {
    memberships::apply(conn, member, change).await.map_err(|e| HandlerError::Retry(e.into()))
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
        let p = &event.payload;
        let n = Named::parse(
            &p.member_user_id,
            &p.owner_user_id,
            &p.membership_id,
            p.joined_at_unix_micros,
            event.occurred_at,
        )?;
        apply(conn, n.member, Change::Joined { id: n.id, owner: n.owner, at: n.at }).await
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
        let p = &event.payload;
        let n = Named::parse(
            &p.member_user_id,
            &p.owner_user_id,
            &p.membership_id,
            p.removed_at_unix_micros,
            event.occurred_at,
        )?;
        apply(conn, n.member, Change::Removed { id: n.id, owner: n.owner, at: n.at }).await
    }
}
