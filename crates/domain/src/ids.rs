//! Typed identifiers. Each wraps a UUID (or, for a Hopsworks project, its numeric id) so that a
//! `UserId` can never be passed where a `ClusterId` or an `OwnerId` is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "diesel", derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow))]
        #[cfg_attr(feature = "diesel", diesel(sql_type = diesel::sql_types::Uuid))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            #[must_use]
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The UUID inside.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        #[cfg(feature = "diesel")]
        impl diesel::serialize::ToSql<diesel::sql_types::Uuid, diesel::pg::Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>) -> diesel::serialize::Result {
                diesel::serialize::ToSql::<diesel::sql_types::Uuid, diesel::pg::Pg>::to_sql(&self.0, out)
            }
        }

        #[cfg(feature = "diesel")]
        impl diesel::deserialize::FromSql<diesel::sql_types::Uuid, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                diesel::deserialize::FromSql::<diesel::sql_types::Uuid, diesel::pg::Pg>::from_sql(bytes).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The id of an event. Event ids are UUIDv7, so they sort by creation time; the same id is
    /// the JetStream `Nats-Msg-Id` and the key of every consumer's inbox.
    EventId
);
uuid_id!(
    /// The id of a Hopsbridge person (account owner or team member).
    UserId
);
uuid_id!(
    /// The id of the person whose account a usage or a charge belongs to: the person themselves,
    /// or the owner of the team they are a member of. Every owner is a person, so an owner id is
    /// made from a [`UserId`] (see [`OwnerId::of`]) and names the same person.
    OwnerId
);
uuid_id!(
    /// The id of a Hopsworks cluster in the registry.
    ClusterId
);
uuid_id!(
    /// The id of one team membership: a person who leaves a team and joins one again has a new
    /// membership.
    MembershipId
);
uuid_id!(
    /// The id of one measured sample: usage of one (cluster, namespace, Hopsworks user, window).
    /// Billing's ledger is keyed by it, so a sample is counted once however often it arrives.
    SampleId
);

impl OwnerId {
    /// The owner id of a person who owns their account.
    #[must_use]
    pub const fn of(user: UserId) -> Self {
        Self(user.0)
    }

    /// The owner as a person.
    #[must_use]
    pub const fn as_user(self) -> UserId {
        UserId(self.0)
    }
}

impl UserId {
    /// This person as the owner of their own account.
    #[must_use]
    pub const fn as_owner(self) -> OwnerId {
        OwnerId(self.0)
    }
}

/// A Hopsworks project's id, as Hopsworks numbers them. It is unique on one cluster only: a
/// project is named by (cluster, project id) wherever clusters mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "diesel", derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow))]
#[cfg_attr(feature = "diesel", diesel(sql_type = diesel::sql_types::BigInt))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = i64))]
#[serde(transparent)]
pub struct ProjectId(i64);

impl ProjectId {
    /// Wraps Hopsworks' number.
    #[must_use]
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// Hopsworks' number.
    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ProjectId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

#[cfg(feature = "diesel")]
impl diesel::serialize::ToSql<diesel::sql_types::BigInt, diesel::pg::Pg> for ProjectId {
    fn to_sql<'b>(&'b self, out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>) -> diesel::serialize::Result {
        diesel::serialize::ToSql::<diesel::sql_types::BigInt, diesel::pg::Pg>::to_sql(&self.0, out)
    }
}

#[cfg(feature = "diesel")]
impl diesel::deserialize::FromSql<diesel::sql_types::BigInt, diesel::pg::Pg> for ProjectId {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        diesel::deserialize::FromSql::<diesel::sql_types::BigInt, diesel::pg::Pg>::from_sql(bytes).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_version_7_and_increase() {
        let a = EventId::new();
        let b = EventId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
    }

    #[test]
    fn ids_round_trip_through_text_and_json() {
        let id = ClusterId::new();
        assert_eq!(id.to_string().parse::<ClusterId>().ok(), Some(id));
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, format!("\"{id}\""));
        let project = ProjectId::new(1_042);
        assert_eq!(serde_json::to_string(&project).unwrap_or_default(), "1042");
        assert_eq!("1042".parse::<ProjectId>().ok(), Some(project));
    }

    #[test]
    fn an_owner_is_the_same_person_as_the_user() {
        let user = UserId::new();
        assert_eq!(user.as_owner().as_user(), user);
        assert_eq!(OwnerId::of(user).as_uuid(), user.as_uuid());
    }
}
