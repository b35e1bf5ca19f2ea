//! What identity learns from other services: team memberships, kept under the one rule of
//! [`hopsbridge_domain::membership`] (a member follows a suspended owner), and billing's
//! restrictions, which suspend an owner and their members until billing lifts them.

use crate::error::IdentityError;
use crate::memberships;
use crate::users::{self, Suspender};
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::{
    AccountRestrictedV1, AccountRestrictionLiftedV1, TeamMemberJoinedV1, TeamMemberRemovedV1,
};
use hopsbridge_domain::UserId;
use hopsbridge_domain::membership::Change;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::events::{Handler, HandlerError, MembershipEvent as _, ReceivedEvent, parse_uuid};

fn retry(e: IdentityError) -> HandlerError {
    HandlerError::Retry(e.into())
}

async fn apply(
    conn: &mut AsyncPgConnection,
    member: UserId,
    change: Change,
    clock: &Clock,
) -> Result<(), HandlerError> {
    memberships::apply(conn, member, change).await.map_err(retry)?;
    users::follow_owner(conn, member, clock.now()).await.map_err(retry)
}

/// Records that a member joined an owner's team (suspended with the owner if the owner is).
#[derive(Debug, Clone)]
pub struct MemberJoined {
    /// Calendar time: whose team a member is in now.
    pub clock: Clock,
}

impl Handler<TeamMemberJoinedV1> for MemberJoined {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberJoinedV1>,
    ) -> Result<(), HandlerError> {
        let news = TeamMemberJoinedV1::news(event)?;
        apply(conn, news.member, news.change, &self.clock).await
    }
}

/// Records that a member left an owner's team (reactivated if only the owner's suspension held
/// them).
#[derive(Debug, Clone)]
pub struct MemberRemoved {
    /// Calendar time: whose team a member is in now.
    pub clock: Clock,
}

impl Handler<TeamMemberRemovedV1> for MemberRemoved {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<TeamMemberRemovedV1>,
    ) -> Result<(), HandlerError> {
        let news = TeamMemberRemovedV1::news(event)?;
        apply(conn, news.member, news.change, &self.clock).await
    }
}

/// The user an event names; a person identity never knew is refused (billing names only people
/// identity announced).
async fn known(conn: &mut AsyncPgConnection, raw: &str) -> Result<Option<UserId>, HandlerError> {
    let id = UserId::from_uuid(parse_uuid("user_id", raw)?);
    match users::get(conn, id).await {
        Ok(_) => Ok(Some(id)),
        Err(IdentityError::NotFound) => Err(HandlerError::Reject(format!("user {id} is not known"))),
        Err(e) => Err(retry(e)),
    }
}

/// Billing's restriction held past its deadline: the owner is suspended with reason
/// `billing:<reason>`, and their members with them.
#[derive(Debug, Clone)]
pub struct Restrictions {
    /// Calendar time of the announcements.
    pub clock: Clock,
}

impl Handler<AccountRestrictedV1> for Restrictions {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<AccountRestrictedV1>,
    ) -> Result<(), HandlerError> {
        let Some(id) = known(conn, &event.payload.user_id).await? else { return Ok(()) };
        let reason = format!("billing:{}", event.payload.reason);
        match users::suspend(conn, id, Suspender::Billing, &reason, self.clock.now()).await {
            // A deleted account stays deleted.
            Ok(_) | Err(IdentityError::Refused(_)) => Ok(()),
            Err(e) => Err(retry(e)),
        }
    }
}

impl Handler<AccountRestrictionLiftedV1> for Restrictions {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<AccountRestrictionLiftedV1>,
    ) -> Result<(), HandlerError> {
        let Some(id) = known(conn, &event.payload.user_id).await? else { return Ok(()) };
        match users::reactivate(conn, id, Some(Suspender::Billing), self.clock.now()).await {
            Ok(_) | Err(IdentityError::Refused(_)) => Ok(()),
            Err(e) => Err(retry(e)),
        }
    }
}
