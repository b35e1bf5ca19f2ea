//! NATS subject and JetStream stream names.
//!
//! Every name hangs off a prefix: `hb` in a deployment, a unique one per test so that tests on
//! the same NATS server never see each other's messages.
//!
//! | what | name |
//! |---|---|
//! | an event | `<prefix>.<producer>.<event>.v<version>`, e.g. `hb.identity.user_created.v1` |
//! | a producer's stream | `<PREFIX>_<PRODUCER>`, e.g. `HB_IDENTITY`, subjects `hb.identity.>` |
//! | dead letters | `<prefix>.deadletter.<consumer>`, in stream `<PREFIX>_DEADLETTER` |

use crate::{Event, Service};

/// A prefix was not 1–32 characters of `[a-z0-9_]` starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPrefix(pub String);

impl std::error::Error for InvalidPrefix {}

impl std::fmt::Display for InvalidPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "subject prefix {:?} must be 1-32 characters of a-z, 0-9 and _, starting with a letter", self.0)
    }
}

/// Subject and stream names under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The production prefix.
    pub const DEFAULT_PREFIX: &'static str = "hb";

    /// Names under `prefix`.
    ///
    /// # Errors
    /// [`InvalidPrefix`] unless the prefix is 1–32 characters of `[a-z0-9_]` starting with a
    /// letter (it becomes part of stream names, which allow no dots).
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let ok = (1..=32).contains(&prefix.len())
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok { Ok(Self { prefix: prefix.to_owned() }) } else { Err(InvalidPrefix(prefix.to_owned())) }
    }

    /// The prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full subject for an outbox row's subject suffix.
    #[must_use]
    pub fn subject(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// The full subject of an event type.
    #[must_use]
    pub fn event<E: Event>(&self) -> String {
        self.subject(&E::subject_suffix())
    }

    /// The stream that holds everything `producer` publishes.
    #[must_use]
    pub fn stream(&self, producer: Service) -> String {
        format!("{}_{}", self.prefix, producer.name()).to_uppercase()
    }

    /// The subjects of `producer`'s stream.
    #[must_use]
    pub fn stream_subjects(&self, producer: Service) -> String {
        format!("{}.{}.>", self.prefix, producer.name())
    }

    /// The stream that keeps dead letters.
    #[must_use]
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEADLETTER", self.prefix.to_uppercase())
    }

    /// The subjects of the dead-letter stream.
    #[must_use]
    pub fn dead_letter_subjects(&self) -> String {
        format!("{}.deadletter.>", self.prefix)
    }

    /// Where `consumer` puts the messages it can never handle.
    #[must_use]
    pub fn dead_letter(&self, consumer: &str) -> String {
        format!("{}.deadletter.{consumer}", self.prefix)
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Self { prefix: Self::DEFAULT_PREFIX.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::UserCreatedV1;

    #[test]
    fn names_hang_off_the_prefix() {
        let s = Subjects::new("t_1a2b").unwrap();
        assert_eq!(s.event::<UserCreatedV1>(), "t_1a2b.identity.user_created.v1");
        assert_eq!(s.stream(Service::Identity), "T_1A2B_IDENTITY");
        assert_eq!(s.stream_subjects(Service::Identity), "t_1a2b.identity.>");
        assert_eq!(s.dead_letter("billing"), "t_1a2b.deadletter.billing");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "Hb", "hb.x", "1hb", "hb-x", &"a".repeat(33)] {
            assert!(Subjects::new(bad).is_err(), "{bad}");
        }
    }
}
