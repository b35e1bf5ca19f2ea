//! Who is calling: the identity the gateway or a service vouches for, carried in signed headers.
//!
//! Only the gateway faces the internet. After validating a token and resolving the person, it
//! forwards the request with `x-hopsbridge-*` headers describing the caller (a person is the
//! token's issuer and subject together: a subject is unique only within its issuer) and an
//! Ed25519 signature made with a private key only the gateway holds ([`CallerSigner`]). The
//! signature covers the method, the path with its query, the SHA-256 digest of the body
//! ([`CONTENT_SHA256`]), every caller header and a timestamp. Services hold only the gateway's
//! public key ([`CallerVerifier`]): they trust the headers when the signature verifies, the
//! timestamp is within [`MAX_SKEW_SECS`] and the body is the one that was signed (the HTTP
//! layer hashes every body it reads and refuses a mismatch with 401); the [`Caller`] extractor
//! answers 401 otherwise. A captured set of headers therefore opens no other route, takes no
//! other query or body, and expires within a minute.
//!
//! Services call each other's `/internal/...` routes as [`Caller::service`] (subject
//! `service:<name>`, role [`Role::Service`], no user id, no email), signed with their OWN key
//! pair (`auth.service_key`). A service verifies such a request with the calling service's
//! public key from its `auth.trusted_services`; an unknown service is refused 401, and a
//! service-signed caller must have exactly the shape [`Caller::service`] gives (a service
//! cannot sign itself a person or an admin). Each internal route then accepts only the
//! services it names (`Caller::is_service`), answering 403 with its own code to any other.
//! The gateway never gives a person [`Role::Service`] and never forwards `/internal/...` paths.
//! See decision 0053.

use crate::http::{ApiError, ErrorCode, PlatformCode};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use hopsbridge_contracts::Service;
use hopsbridge_domain::{Email, UserId};
use std::future::{Ready, ready};

mod keys;

pub use keys::{BodyDigest, CallerError, CallerSigner, CallerVerifier, PublicKey, body_sha256};

/// The Auth0 subject of the caller.
pub const SUBJECT: &str = "x-hopsbridge-subject";
/// The issuer of the caller's token (the Auth0 tenant), with its trailing slash.
pub const ISSUER: &str = "x-hopsbridge-issuer";
/// The caller's Hopsbridge user id, once identity knows them.
pub const USER_ID: &str = "x-hopsbridge-user-id";
/// The caller's roles, comma-separated.
pub const ROLES: &str = "x-hopsbridge-roles";
/// The caller's email, from the token.
pub const EMAIL: &str = "x-hopsbridge-email";
/// Unix seconds when the gateway (or the calling service) signed.
pub const TIMESTAMP: &str = "x-hopsbridge-timestamp";
/// `v3=<hex Ed25519 signature>`.
pub const SIGNATURE: &str = "x-hopsbridge-signature";
/// The lowercase hex SHA-256 of the request body (of nothing, when there is none); signed.
pub const CONTENT_SHA256: &str = "x-hopsbridge-content-sha256";

/// How far a signature's timestamp may be from the service's clock, in seconds.
pub const MAX_SKEW_SECS: i64 = 60;

/// A caller's role. Admin comes from identity's `is_admin`, never from a token; Service only
/// from a service signing its own request, never from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Any signed-in person.
    User,
    /// Owns an account (pays for it).
    Owner,
    /// A member of an owner's team.
    Member,
    /// Operates the platform.
    Admin,
    /// Another Hopsbridge service calling an `/internal/...` route; never a person.
    Service,
}

impl Role {
    /// The role's name in the roles header.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Owner => "owner",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "owner" => Some(Self::Owner),
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
}

/// The subject prefix of a service caller.
pub const SERVICE_SUBJECT_PREFIX: &str = "service:";
/// The subject prefix of a machine client granted the admin role (decision 0045).
pub const CLIENT_SUBJECT_PREFIX: &str = "client:";

/// The caller of a request, as the gateway vouched for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The Auth0 subject.
    pub subject: String,
    /// The issuer of the person's token: a person is (issuer, subject). `None` for a service.
    pub issuer: Option<String>,
    /// The Hopsbridge user id, when identity already knows the person.
    pub user_id: Option<UserId>,
    /// Roles.
    pub roles: Vec<Role>,
    /// Email from the token, lowercased.
    pub email: Option<Email>,
}

impl Caller {
    /// `service` calling another service: subject `service:<name>`, role [`Role::Service`] only,
    /// no issuer, no user id and no email.
    #[must_use]
    pub fn service(service: Service) -> Self {
        Self {
            subject: format!("{SERVICE_SUBJECT_PREFIX}{}", service.name()),
            issuer: None,
            user_id: None,
            roles: vec![Role::Service],
            email: None,
        }
    }

    /// True when the caller is exactly `service` as [`Caller::service`] makes it: its subject,
    /// the service role and nothing else, no person.
    #[must_use]
    pub fn is_service(&self, service: Service) -> bool {
        self.roles == [Role::Service]
            && self.issuer.is_none()
            && self.user_id.is_none()
            && self.email.is_none()
            && self.subject.strip_prefix(SERVICE_SUBJECT_PREFIX) == Some(service.name())
    }

    /// A machine client granted the admin role, as the gateway vouches for it: subject
    /// `client:<id>`, the token's issuer, role [`Role::Admin`] only, no user id and no email.
    #[must_use]
    pub fn machine_admin(issuer: &str, client_id: &str) -> Self {
        Self {
            subject: format!("{CLIENT_SUBJECT_PREFIX}{client_id}"),
            issuer: Some(issuer.to_owned()),
            user_id: None,
            roles: vec![Role::Admin],
            email: None,
        }
    }

    /// True when the caller is a machine admin exactly as [`Caller::machine_admin`] makes one:
    /// an administrator who is no person, so has no account to check or to act on.
    #[must_use]
    pub fn is_machine_admin(&self) -> bool {
        self.roles == [Role::Admin]
            && self.issuer.is_some()
            && self.user_id.is_none()
            && self.email.is_none()
            && self.subject.strip_prefix(CLIENT_SUBJECT_PREFIX).is_some_and(|id| !id.is_empty())
    }

    /// True when the caller has `role`.
    #[must_use]
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The person calling: their user id.
    ///
    /// # Errors
    /// `401 unauthenticated` when the caller is no person identity knows (a service, or a
    /// token identity has not resolved).
    pub fn person(&self) -> Result<UserId, ApiError> {
        self.user_id.ok_or_else(|| PlatformCode::Unauthenticated.error())
    }

    fn roles_header(&self) -> String {
        self.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let Some(verifier) = req.app_data::<web::Data<CallerVerifier>>() else {
            return ready(Err(ApiError::internal(anyhow::anyhow!("no CallerVerifier configured"))));
        };
        // The HTTP layer hashed the body it read; without that digest nothing can be verified.
        let Some(digest) = req.extensions().get::<BodyDigest>().cloned() else {
            return ready(Err(ApiError::internal(anyhow::anyhow!("the request body was not hashed"))));
        };
        let path = req.uri().path_and_query().map_or_else(|| req.path().to_owned(), ToString::to_string);
        let result =
            verifier.verify(req.method().as_str(), &path, req.headers(), &digest.0, chrono::Utc::now().timestamp());
        ready(result.map_err(|e| {
            tracing::warn!(reason = %e, "request refused: caller headers not trusted");
            PlatformCode::Unauthenticated.error()
        }))
    }
}

#[cfg(test)]
mod tests;
