//! The person a `UserCreatedV1` announces, read the same way by every service that keeps people
//! (billing, provisioning, team): a user id, a valid email, the Auth0 subject and the name.

use super::{HandlerError, parse_id};
use hopsbridge_contracts::events::UserCreatedV1;
use hopsbridge_domain::{Email, UserId};

/// A new person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPerson {
    /// Their id.
    pub user: UserId,
    /// The Auth0 subject they signed up with.
    pub subject: String,
    /// Their email, normalised.
    pub email: Email,
    /// Their name (may be empty).
    pub name: String,
}

impl NewPerson {
    /// Reads the person of `event`.
    ///
    /// # Errors
    /// [`HandlerError::Reject`] when the id is not a UUID, the subject is empty or the email is
    /// not an address: no retry makes such an event handleable.
    pub fn read(event: &UserCreatedV1) -> Result<Self, HandlerError> {
        let user = parse_id("user_id", &event.user_id)?;
        if event.auth_subject.trim().is_empty() {
            return Err(HandlerError::Reject("UserCreated without a subject".into()));
        }
        let email = Email::parse(&event.email)
            .map_err(|e| HandlerError::Reject(format!("UserCreated email {:?}: {e}", event.email)))?;
        Ok(Self { user, subject: event.auth_subject.clone(), email, name: event.name.clone() })
    }
}
