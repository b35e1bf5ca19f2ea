//! Validated text values: email addresses and Auth0 subjects.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The email address is not of the form `local@domain`.
    #[error("not a valid email address")]
    InvalidEmail,
    /// The Auth0 subject is not of the form `provider|id`.
    #[error("not a valid Auth0 subject (expected provider|id)")]
    InvalidSubject,
    /// The text names no value of the kind (a status, a mode).
    #[error("'{value}' is not a known {what}")]
    Unknown {
        /// The kind of value, such as `AccountStatus`.
        what: &'static str,
        /// The text, cut to 64 characters.
        value: String,
    },
}

/// Stores a validated text value as Postgres `text`, and checks it again when read back.
macro_rules! text_sql {
    ($name:ident) => {
        #[cfg(feature = "diesel")]
        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                std::io::Write::write_all(out, self.0.as_bytes())?;
                Ok(diesel::serialize::IsNull::No)
            }
        }

        #[cfg(feature = "diesel")]
        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                Ok(Self::parse(std::str::from_utf8(bytes.as_bytes())?)?)
            }
        }
    };
}

/// An email address, trimmed and lowercased, so that comparisons and uniqueness are
/// case-insensitive everywhere (Hopsworks look-ups included).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "diesel", derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow))]
#[cfg_attr(feature = "diesel", diesel(sql_type = diesel::sql_types::Text))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Email))]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

text_sql!(Email);

impl Email {
    /// Parses and normalises an address.
    ///
    /// # Errors
    /// [`ParseError::InvalidEmail`] when the text is not `local@domain.tld`-shaped, has spaces
    /// or is longer than 254 characters (RFC 5321).
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let value = raw.trim().to_lowercase();
        let valid = value.len() <= 254
            && !value.chars().any(char::is_whitespace)
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if valid { Ok(Self(value)) } else { Err(ParseError::InvalidEmail) }
    }

    /// The normalised address.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Email {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Email {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

/// An Auth0 user id (the token's `sub`), such as `auth0|64f…` or `google-oauth2|1034…`.
/// It is the stable key of a person; it is kept exactly as Auth0 wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "diesel", derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow))]
#[cfg_attr(feature = "diesel", diesel(sql_type = diesel::sql_types::Text))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(try_from = "String", into = "String")]
pub struct AuthSubject(String);

text_sql!(AuthSubject);

impl AuthSubject {
    /// Parses a subject.
    ///
    /// # Errors
    /// [`ParseError::InvalidSubject`] unless the text is `provider|id` with both parts
    /// non-empty, no whitespace, at most 255 characters.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let valid = raw.len() <= 255
            && !raw.chars().any(char::is_whitespace)
            && raw.split_once('|').is_some_and(|(provider, id)| !provider.is_empty() && !id.is_empty());
        if valid { Ok(Self(raw.to_owned())) } else { Err(ParseError::InvalidSubject) }
    }

    /// The subject as Auth0 wrote it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AuthSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AuthSubject {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<AuthSubject> for String {
    fn from(s: AuthSubject) -> Self {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(
            Email::parse("  Ada.Lovelace@Example.COM ").map(|e| e.to_string()),
            Ok("ada.lovelace@example.com".to_owned())
        );
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in ["", "ada", "ada@", "@example.com", "ada@example", "a b@example.com", "a@b@c.com", "ada@.com"] {
            assert_eq!(Email::parse(bad), Err(ParseError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn subjects_need_a_provider_and_an_id() {
        assert!(AuthSubject::parse("auth0|64f0c0ffee").is_ok());
        assert!(AuthSubject::parse("google-oauth2|103456").is_ok());
        for bad in ["", "auth0", "auth0|", "|123", "auth0|a b"] {
            assert_eq!(AuthSubject::parse(bad), Err(ParseError::InvalidSubject), "{bad}");
        }
    }
}
