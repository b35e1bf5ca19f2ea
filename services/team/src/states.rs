//! The states team stores as text: where an invitation is, and why a membership ended. Each is
//! stored and written in JSON by the same lowercase name.

use diesel::deserialize::FromSql;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{IsNull, Output, ToSql};
use diesel::sql_types::Text;
use serde::Serialize;

macro_rules! text_state {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
        #[derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
        #[diesel(sql_type = Text)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The stored name.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> diesel::serialize::Result {
                std::io::Write::write_all(out, self.as_str().as_bytes())?;
                Ok(IsNull::No)
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = std::str::from_utf8(bytes.as_bytes())?;
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)).into())
            }
        }
    };
}

text_state! {
    /// Where an invitation is. A pending invitation past its expiry is expired; that is derived
    /// from `expires_at`, never stored.
    InvitationStatus {
        /// Waiting for the invited person.
        Pending = "pending",
        /// The invited person joined.
        Accepted = "accepted",
        /// The owner cancelled it, or became a member of a team themselves.
        Cancelled = "cancelled",
        /// A newer invitation to the same address took its place.
        Replaced = "replaced",
    }
}

text_state! {
    /// Why a membership ended (`TeamMemberRemovedV1.reason`).
    RemovalReason {
        /// The owner removed the member.
        Removed = "removed",
        /// The member left.
        Left = "left",
        /// The member's account was deleted.
        AccountDeleted = "account_deleted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_stored_names_are_the_same() {
        for s in InvitationStatus::ALL {
            assert_eq!(serde_json::to_string(s).ok(), Some(format!("\"{}\"", s.as_str())));
        }
        for r in RemovalReason::ALL {
            assert_eq!(serde_json::to_string(r).ok(), Some(format!("\"{}\"", r.as_str())));
        }
    }
}
