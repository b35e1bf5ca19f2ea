//! One rule for what a service keeps of a person's team membership, whatever order the team
//! service's `TeamMemberJoinedV1` and `TeamMemberRemovedV1` arrive in, and however often.
//!
//! A person is a member of at most one team at a time, and memberships do not overlap: a
//! membership ends before the next one begins. So, per member, a projection keeps only the
//! latest membership it has heard of: a join replaces what is kept when it began later, a
//! removal closes the membership it names (or, naming a later one, replaces what is kept with
//! it, its join still to come). Times are microseconds since the Unix epoch, as events carry
//! them. What is kept answers for times from the latest membership's start on; earlier times
//! belong to memberships it no longer keeps, and a projection asks about the present (identity)
//! or the window just measured (metering).

use crate::ids::{MembershipId, OwnerId};

/// What a projection keeps of one member's latest membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The membership.
    pub id: MembershipId,
    /// The owner whose team it is.
    pub owner: OwnerId,
    /// When it began; unknown while only its removal has arrived.
    pub joined_at: Option<i64>,
    /// When it ended, if it did.
    pub removed_at: Option<i64>,
}

/// What the team service announced about a membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The membership began at `at`.
    Joined {
        /// The membership.
        id: MembershipId,
        /// The owner whose team it is.
        owner: OwnerId,
        /// When it began.
        at: i64,
    },
    /// The membership ended at `at`.
    Removed {
        /// The membership.
        id: MembershipId,
        /// The owner whose team it was.
        owner: OwnerId,
        /// When it ended.
        at: i64,
    },
}

impl Membership {
    /// The earliest moment the membership is known to cover: its join, or, while that is
    /// unknown, its removal (it began no later).
    const fn known_from(&self) -> i64 {
        match (self.joined_at, self.removed_at) {
            (Some(j), _) => j,
            (None, Some(r)) => r,
            (None, None) => i64::MIN,
        }
    }

    /// The owner the member's usage at `t` belongs to under this membership, if it covers `t`.
    #[must_use]
    pub fn owner_at(&self, t: i64) -> Option<OwnerId> {
        let began = self.joined_at.is_some_and(|j| j <= t);
        let ended = self.removed_at.is_some_and(|r| r <= t);
        (began && !ended).then_some(self.owner)
    }
}

/// What to keep after `change`, given what was kept (`None`: nothing yet).
#[must_use]
pub fn apply(kept: Option<Membership>, change: Change) -> Option<Membership> {
    match (kept, change) {
        (None, Change::Joined { id, owner, at }) => {
            Some(Membership { id, owner, joined_at: Some(at), removed_at: None })
        }
        (None, Change::Removed { id, owner, at }) => {
            Some(Membership { id, owner, joined_at: None, removed_at: Some(at) })
        }
        (Some(k), Change::Joined { id, at, .. }) if k.id == id => Some(Membership { joined_at: Some(at), ..k }),
        (Some(k), Change::Removed { id, at, .. }) if k.id == id => Some(Membership { removed_at: Some(at), ..k }),
        // Another membership: it is later than the kept one when it is known from a later time
        // (memberships do not overlap, so the later one began after the kept one ended).
        (Some(k), Change::Joined { id, owner, at }) if at > k.known_from() => {
            Some(Membership { id, owner, joined_at: Some(at), removed_at: None })
        }
        (Some(k), Change::Removed { id, owner, at }) if at > k.known_from() => {
            Some(Membership { id, owner, joined_at: None, removed_at: Some(at) })
        }
        (Some(k), _) => Some(k),
    }
}

/// The owner of the member's usage at `t`, from what a projection keeps.
#[must_use]
pub fn owner_at(kept: Option<Membership>, t: i64) -> Option<OwnerId> {
    kept.and_then(|k| k.owner_at(t))
}

/// A sequence of changes, as they arrive, and which owner the member belongs to at times
/// after all of them arrived: the table every projection of memberships is tested against.
#[derive(Clone, Debug)]
pub struct Case {
    /// What the case shows.
    pub name: &'static str,
    /// The changes in arrival order.
    pub changes: Vec<Change>,
    /// `(t, owner at t)` once every change has arrived.
    pub expected: Vec<(i64, Option<OwnerId>)>,
}

/// The cases: a join and a removal in both orders, duplicates, a rejoin with another owner
/// whose events arrive before the first membership's, and a stale removal.
#[must_use]
pub fn cases() -> Vec<Case> {
    let ada = OwnerId::from_uuid(uuid::Uuid::from_u128(0xada));
    let grace = OwnerId::from_uuid(uuid::Uuid::from_u128(0x9ace));
    let first = MembershipId::from_uuid(uuid::Uuid::from_u128(1));
    let second = MembershipId::from_uuid(uuid::Uuid::from_u128(2));
    let joined = |id, owner, at| Change::Joined { id, owner, at };
    let removed = |id, owner, at| Change::Removed { id, owner, at };
    vec![
        Case {
            name: "joined",
            changes: vec![joined(first, ada, 100)],
            expected: vec![(99, None), (100, Some(ada)), (1_000, Some(ada))],
        },
        Case {
            name: "joined then removed",
            changes: vec![joined(first, ada, 100), removed(first, ada, 200)],
            expected: vec![(150, Some(ada)), (200, None), (300, None)],
        },
        Case {
            name: "removed before its join arrives",
            changes: vec![removed(first, ada, 200), joined(first, ada, 100)],
            expected: vec![(150, Some(ada)), (200, None)],
        },
        Case {
            name: "duplicates change nothing",
            changes: vec![
                joined(first, ada, 100),
                joined(first, ada, 100),
                removed(first, ada, 200),
                removed(first, ada, 200),
            ],
            expected: vec![(150, Some(ada)), (250, None)],
        },
        Case {
            name: "rejoined another team, in order",
            changes: vec![joined(first, ada, 100), removed(first, ada, 200), joined(second, grace, 300)],
            expected: vec![(250, None), (300, Some(grace))],
        },
        Case {
            name: "rejoined another team, the first membership's events last",
            changes: vec![joined(second, grace, 300), removed(first, ada, 200), joined(first, ada, 100)],
            expected: vec![(300, Some(grace)), (400, Some(grace))],
        },
        Case {
            name: "a stale removal does not end the later membership",
            changes: vec![joined(first, ada, 100), joined(second, grace, 300), removed(first, ada, 200)],
            expected: vec![(350, Some(grace))],
        },
        Case {
            name: "the later membership's removal arrives before everything else",
            changes: vec![
                removed(second, grace, 400),
                joined(first, ada, 100),
                removed(first, ada, 200),
                joined(second, grace, 300),
            ],
            expected: vec![(350, Some(grace)), (400, None)],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_holds() {
        for case in cases() {
            let kept = case.changes.iter().fold(None, |kept, change| apply(kept, *change));
            for (t, owner) in &case.expected {
                assert_eq!(owner_at(kept, *t), *owner, "{}: at {t}", case.name);
            }
        }
    }
}
