//! The states things are in: accounts, billing modes, clusters, assignments, metering runs.
//!
//! Each is an enum with one stable lowercase name per variant, the name stored in Postgres
//! (a `text` column with a `CHECK` listing the same names), written in JSON and in events.

use crate::text::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! text_enum {
    (
        $(#[$doc:meta])*
        $name:ident {
            $( $(#[$vdoc:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "diesel", derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow))]
        #[cfg_attr(feature = "diesel", diesel(sql_type = diesel::sql_types::Text))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        // Every name is its variant in snake_case; saying so once lets utoipa, which does not
        // see a `rename` whose value comes through the macro, list the names in the document.
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $(
                $(#[$vdoc])*
                #[serde(rename = $text)]
                $variant,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stable name, as stored and as written in JSON.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(ParseError::Unknown { what: stringify!($name), value: s.chars().take(64).collect() }),
                }
            }
        }

        #[cfg(feature = "diesel")]
        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>) -> diesel::serialize::Result {
                std::io::Write::write_all(out, self.as_str().as_bytes())?;
                Ok(diesel::serialize::IsNull::No)
            }
        }

        #[cfg(feature = "diesel")]
        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                Ok(std::str::from_utf8(bytes.as_bytes())?.parse()?)
            }
        }
    };
}

text_enum!(
    /// Whether a person may use Hopsbridge.
    AccountStatus {
        /// May use Hopsbridge.
        Active = "active",
        /// Blocked by an admin or by billing; may be reactivated.
        Suspended = "suspended",
        /// Deleted by its owner; kept for the record, never reactivated.
        Deleted = "deleted",
    }
);

text_enum!(
    /// How an owner pays for usage.
    BillingMode {
        /// Usage is shown, not charged.
        Free = "free",
        /// Usage is reported to Stripe and invoiced at the end of each period.
        Postpaid = "postpaid",
        /// Usage is deducted from credits bought in advance.
        Prepaid = "prepaid",
    }
);

text_enum!(
    /// A cluster's place in the registry.
    ClusterStatus {
        /// Takes new people and is measured.
        Active = "active",
        /// Takes nobody new; is measured.
        Maintenance = "maintenance",
        /// Marked full by an admin; is measured.
        Full = "full",
        /// Retired: takes nobody new; measured while its projects' namespaces have pods.
        Inactive = "inactive",
    }
);

text_enum!(
    /// Where a person's cluster assignment is.
    AssignmentState {
        /// The card arrived before the person: placed when the person arrives.
        WaitingForUser = "waiting_for_user",
        /// No active cluster had room: placed in order of waiting.
        WaitingForCapacity = "waiting_for_capacity",
        /// A team member whose owner has no cluster yet: placed on it when the owner is.
        WaitingForOwner = "waiting_for_owner",
        /// A seat is taken; the Hopsworks account is being made.
        Provisioning = "provisioning",
        /// The Hopsworks account exists.
        Complete = "complete",
        /// The seat is released; the Hopsworks account is being deactivated.
        Unassigning = "unassigning",
        /// Nothing left to do.
        Unassigned = "unassigned",
    }
);

impl AssignmentState {
    /// Whether an assignment in this state holds a seat on its cluster.
    #[must_use]
    pub const fn holds_seat(self) -> bool {
        matches!(self, Self::Provisioning | Self::Complete)
    }
}

text_enum!(
    /// Where the measurement of one (cluster, window) is.
    RunState {
        /// Due (or waiting for its next try).
        Pending = "pending",
        /// Leased to one replica, which is measuring it.
        Running = "running",
        /// Measured; its samples are recorded.
        Complete = "complete",
        /// Could not be measured by its deadline; the reason is recorded.
        Gap = "gap",
    }
);

impl RunState {
    /// Whether a run in this state will change no more.
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Complete | Self::Gap)
    }
}

text_enum!(
    /// Whether a sample's usage could be given to a person, and by which path.
    Attribution {
        /// The namespace is one of our people's projects and the pod's user is ours and on the
        /// project: billed to that user's owner.
        Attributed = "attributed",
        /// The pod's Hopsworks user is nobody of ours on the cluster: billed to nobody (samples
        /// measured before whole namespaces were billed; a project's pods are now `not_member`).
        UnknownUser = "unknown_user",
        /// The namespace is no project of ours on the cluster: billed to nobody, shown to
        /// administrators.
        UnknownProject = "unknown_project",
        /// Pods without the owner label in a project's namespace: billed to the project's
        /// creator and their owner.
        Unlabelled = "unlabelled",
        /// Pods labelled with a user who is not on the project (no account on the cluster, or
        /// neither its creator nor in its creator's team): billed to the project's creator and
        /// their owner.
        NotMember = "not_member",
    }
);

/// The role a team member is given in their owner's Hopsworks projects, named as Hopsworks
/// names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "diesel", derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow))]
#[cfg_attr(feature = "diesel", diesel(sql_type = diesel::sql_types::Text))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ProjectRole {
    /// Manages the project: members, datasets, jobs.
    #[serde(rename = "Data owner")]
    DataOwner,
    /// Works in the project: datasets and jobs.
    #[serde(rename = "Data scientist")]
    DataScientist,
}

impl ProjectRole {
    /// Every role.
    pub const ALL: &'static [Self] = &[Self::DataOwner, Self::DataScientist];

    /// The name Hopsworks uses, as stored and written in JSON.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DataOwner => "Data owner",
            Self::DataScientist => "Data scientist",
        }
    }
}

impl fmt::Display for ProjectRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProjectRole {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseError::Unknown { what: "ProjectRole", value: s.chars().take(64).collect() })
    }
}

#[cfg(feature = "diesel")]
impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for ProjectRole {
    fn to_sql<'b>(&'b self, out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>) -> diesel::serialize::Result {
        std::io::Write::write_all(out, self.as_str().as_bytes())?;
        Ok(diesel::serialize::IsNull::No)
    }
}

#[cfg(feature = "diesel")]
impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for ProjectRole {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        Ok(std::str::from_utf8(bytes.as_bytes())?.parse()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_name_and_json() {
        fn check<T: Copy + fmt::Debug + PartialEq + FromStr + Serialize>(all: &[T], name: impl Fn(T) -> &'static str)
        where
            T::Err: fmt::Debug,
        {
            for value in all {
                let text = name(*value);
                assert_eq!(text.parse::<T>().ok(), Some(*value));
                assert_eq!(serde_json::to_string(value).unwrap_or_default(), format!("\"{text}\""));
            }
        }
        check(AccountStatus::ALL, AccountStatus::as_str);
        check(BillingMode::ALL, BillingMode::as_str);
        check(ClusterStatus::ALL, ClusterStatus::as_str);
        check(AssignmentState::ALL, AssignmentState::as_str);
        check(RunState::ALL, RunState::as_str);
        check(Attribution::ALL, Attribution::as_str);
    }

    #[test]
    fn every_name_is_its_variant_in_snake_case() {
        // The OpenAPI schemas take the names from `rename_all = "snake_case"`.
        fn snake(debug: &str) -> String {
            let mut out = String::new();
            for (i, c) in debug.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        }
        let names: Vec<(String, &str)> = [
            AccountStatus::ALL.iter().map(|s| (format!("{s:?}"), s.as_str())).collect::<Vec<_>>(),
            BillingMode::ALL.iter().map(|s| (format!("{s:?}"), s.as_str())).collect(),
            ClusterStatus::ALL.iter().map(|s| (format!("{s:?}"), s.as_str())).collect(),
            AssignmentState::ALL.iter().map(|s| (format!("{s:?}"), s.as_str())).collect(),
            RunState::ALL.iter().map(|s| (format!("{s:?}"), s.as_str())).collect(),
            Attribution::ALL.iter().map(|s| (format!("{s:?}"), s.as_str())).collect(),
        ]
        .concat();
        for (variant, name) in names {
            assert_eq!(snake(&variant), name);
        }
    }

    #[test]
    fn project_roles_are_named_as_hopsworks_names_them() {
        for role in ProjectRole::ALL {
            assert_eq!(role.as_str().parse::<ProjectRole>().ok(), Some(*role));
            assert_eq!(serde_json::to_string(role).unwrap_or_default(), format!("\"{}\"", role.as_str()));
        }
        assert!("Observer".parse::<ProjectRole>().is_err(), "Hopsbridge gives members no other role");
    }

    #[test]
    fn unknown_names_are_refused_and_named() {
        assert_eq!(
            "paused".parse::<AccountStatus>(),
            Err(ParseError::Unknown { what: "AccountStatus", value: "paused".to_owned() })
        );
        assert!(serde_json::from_str::<BillingMode>("\"Postpaid\"").is_err());
    }

    #[test]
    fn only_provisioning_and_complete_hold_a_seat() {
        let seated: Vec<_> = AssignmentState::ALL.iter().filter(|s| s.holds_seat()).collect();
        assert_eq!(seated, [&AssignmentState::Provisioning, &AssignmentState::Complete]);
    }
}
