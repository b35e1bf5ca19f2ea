//! The states of provisioning's own records of teams, stored as `text` (each column has a
//! `CHECK` listing the same names) and written in JSON under the same names.

use serde::Serialize;

/// A state enum with one stable lowercase name per variant, as stored and written in JSON.
macro_rules! text_state {
    (
        $(#[$doc:meta])*
        $name:ident {
            $( $(#[$vdoc:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            Serialize,
            utoipa::ToSchema,
            diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )+
        }

        impl $name {
            /// The name stored.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                std::io::Write::write_all(out, self.as_str().as_bytes())?;
                Ok(diesel::serialize::IsNull::No)
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                match bytes.as_bytes() {
                    $(b if b == $text.as_bytes() => Ok(Self::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        String::from_utf8_lossy(other)
                    )
                    .into()),
                }
            }
        }
    };
}

text_state!(
    /// What provisioning does about a member's kept membership.
    TeamState {
        /// The membership is current: the member is on the owner's cluster (or waits for it)
        /// and is added to the owner's projects.
        Member = "member",
        /// A membership provisioning acted on has ended: the member is being taken out of the
        /// owner's projects, then unassigned.
        Leaving = "leaving",
        /// Nothing to do.
        Left = "left",
    }
);

text_state!(
    /// Where a member's place in one of their owner's projects is.
    AccessState {
        /// add-to-projects is due (retried until Hopsworks agrees).
        Adding = "adding",
        /// Hopsworks agreed: the member is in the project.
        Added = "added",
        /// The membership ended: the member is being taken out of the project.
        Removing = "removing",
        /// The member is out of the project.
        Removed = "removed",
        /// The project no longer exists.
        Gone = "gone",
    }
);
