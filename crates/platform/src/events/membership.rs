//! What a team event says about one membership, read the same way by every service that keeps a
//! projection of memberships (identity, billing, provisioning, metering): the ids as UUIDs, the
//! nil membership for an event from before memberships had ids, and the event's own time, or
//! the envelope's when the event carries none.

use super::{HandlerError, ReceivedEvent, parse_uuid};
use chrono::{DateTime, Utc};
use hopsbridge_contracts::events::{TeamMemberJoinedV1, TeamMemberRemovedV1};
use hopsbridge_domain::membership::Change;
use hopsbridge_domain::{MembershipId, OwnerId, UserId};

/// The member a team event is about, and the change to their membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipNews {
    /// The member.
    pub member: UserId,
    /// What happened to the membership, for [`hopsbridge_domain::membership::apply`].
    pub change: Change,
}

impl MembershipNews {
    /// The membership's id.
    #[must_use]
    pub const fn membership(&self) -> MembershipId {
        match self.change {
            Change::Joined { id, .. } | Change::Removed { id, .. } => id,
        }
    }

    /// The owner whose team it is.
    #[must_use]
    pub const fn owner(&self) -> OwnerId {
        match self.change {
            Change::Joined { owner, .. } | Change::Removed { owner, .. } => owner,
        }
    }

    /// When it happened (the join or the removal).
    #[must_use]
    pub fn at(&self) -> DateTime<Utc> {
        let micros = match self.change {
            Change::Joined { at, .. } | Change::Removed { at, .. } => at,
        };
        // Checked when the news was read.
        DateTime::from_timestamp_micros(micros).unwrap_or_default()
    }
}

/// A team event that announces a change to a membership.
pub trait MembershipEvent: Sized {
    /// Reads the news of `event`.
    ///
    /// # Errors
    /// [`HandlerError::Reject`] when an id is not a UUID, the member is their own owner, or the
    /// time is out of any calendar's range: no retry can make such an event handleable.
    fn news(event: &ReceivedEvent<Self>) -> Result<MembershipNews, HandlerError>;
}

struct Fields<'a> {
    member: &'a str,
    owner: &'a str,
    membership: &'a str,
    at: i64,
}

fn read(fields: &Fields<'_>, occurred: DateTime<Utc>) -> Result<(UserId, OwnerId, MembershipId, i64), HandlerError> {
    let member = UserId::from_uuid(parse_uuid("member_user_id", fields.member)?);
    let owner = OwnerId::from_uuid(parse_uuid("owner_user_id", fields.owner)?);
    let membership =
        if fields.membership.is_empty() { uuid::Uuid::nil() } else { parse_uuid("membership_id", fields.membership)? };
    if owner.as_user() == member {
        return Err(HandlerError::Reject("a member of their own team".into()));
    }
    let at = if fields.at == 0 { occurred.timestamp_micros() } else { fields.at };
    if DateTime::from_timestamp_micros(at).is_none() {
        return Err(HandlerError::Reject(format!("the membership's time {at} is out of range")));
    }
    Ok((member, owner, MembershipId::from_uuid(membership), at))
}

impl MembershipEvent for TeamMemberJoinedV1 {
    fn news(event: &ReceivedEvent<Self>) -> Result<MembershipNews, HandlerError> {
        let p = &event.payload;
        let fields = Fields {
            member: &p.member_user_id,
            owner: &p.owner_user_id,
            membership: &p.membership_id,
            at: p.joined_at_unix_micros,
        };
        let (member, owner, id, at) = read(&fields, event.occurred_at)?;
        Ok(MembershipNews { member, change: Change::Joined { id, owner, at } })
    }
}

impl MembershipEvent for TeamMemberRemovedV1 {
    fn news(event: &ReceivedEvent<Self>) -> Result<MembershipNews, HandlerError> {
        let p = &event.payload;
        let fields = Fields {
            member: &p.member_user_id,
            owner: &p.owner_user_id,
            membership: &p.membership_id,
            at: p.removed_at_unix_micros,
        };
        let (member, owner, id, at) = read(&fields, event.occurred_at)?;
        Ok(MembershipNews { member, change: Change::Removed { id, owner, at } })
    }
}
