//! What identity learns from other services: team memberships, kept under the one rule of
//! [`hopsbridge_domain::membership`].

use crate::memberships;
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::{TeamMemberJoinedV1, TeamMemberRemovedV1};
use hopsbridge_domain::UserId;
use hopsbridge_domain::membership::Change;
use hopsbridge_platform::events::{Handler, HandlerError, MembershipEvent as _, ReceivedEvent};

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
        let news = TeamMemberJoinedV1::news(event)?;
        apply(conn, news.member, news.change).await
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
        let news = TeamMemberRemovedV1::news(event)?;
        apply(conn, news.member, news.change).await
    }
}
