//! Who is calling: the identity the gateway vouches for, carried in signed headers.
//!
//! Only the gateway faces the internet. After validating a token and resolving the person, it
//! forwards the request with `x-hopsbridge-*` headers describing the caller (a person is the
//! token's issuer and subject together: a subject is unique only within its issuer) and an
//! HMAC-SHA256 signature over them, the method, the path and a timestamp, made with a key it
//! shares with the services. A service trusts those headers only when the signature verifies (in constant
//! time) and the timestamp is within a minute; the [`Caller`] extractor answers 401 otherwise.
//! Binding the method and path means a captured set of headers opens no other route.
//!
//! Services call each other's `/internal/...` routes the same way: the calling service signs
//! with the same key, as [`Caller::service`] (subject `service:<name>`, role
//! [`Role::Service`], no user id, no email). The gateway never gives a person that role and
//! never forwards `/internal/...` paths, so only a holder of the key can present it.

use crate::http::{ApiError, ErrorCode, PlatformCode};
use crate::secret::Secret;
use actix_web::dev::Payload;
use actix_web::http::header::HeaderMap;
use actix_web::{FromRequest, HttpRequest, web};
use hmac::{Hmac, Mac};
use hopsbridge_contracts::Service;
use hopsbridge_domain::{Email, UserId};
use sha2::Sha256;
use std::future::{Ready, ready};

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
/// Unix seconds when the gateway signed.
pub const TIMESTAMP: &str = "x-hopsbridge-timestamp";
/// `v2=<hex HMAC-SHA256>`.
pub const SIGNATURE: &str = "x-hopsbridge-signature";

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

/// Signs and verifies caller headers with the key shared by the gateway and the services.
#[derive(Clone, Debug)]
pub struct CallerKey(Secret<Vec<u8>>);

/// Why caller headers were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// No signature: the request did not come through the gateway.
    #[error("request not signed by the gateway")]
    Unsigned,
    /// A header is missing or malformed.
    #[error("malformed caller headers")]
    Malformed,
    /// The timestamp is too far from now.
    #[error("signature expired")]
    Stale,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
}

type HmacSha256 = Hmac<Sha256>;

impl CallerKey {
    /// A key from its secret text (at least 32 bytes).
    ///
    /// # Errors
    /// When the key is shorter than 32 bytes.
    pub fn new(secret: &Secret<String>) -> Result<Self, String> {
        let bytes = secret.expose().as_bytes().to_vec();
        if bytes.len() < 32 {
            return Err("must be at least 32 bytes".to_owned());
        }
        Ok(Self(Secret::new(bytes)))
    }

    fn mac(&self, timestamp: i64, method: &str, path: &str, caller: &Caller) -> HmacSha256 {
        // new_from_slice accepts keys of any length for HMAC.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.0.expose()).unwrap_or_else(|_| unreachable_mac());
        let user_id = caller.user_id.map(|u| u.to_string()).unwrap_or_default();
        let canonical = format!(
            "v2\n{timestamp}\n{method}\n{path}\n{}\n{}\n{user_id}\n{}\n{}",
            caller.issuer.as_deref().unwrap_or_default(),
            caller.subject,
            caller.roles_header(),
            caller.email.as_ref().map(Email::as_str).unwrap_or_default()
        );
        mac.update(canonical.as_bytes());
        mac
    }

    /// The headers the gateway adds to a request for `method` and `path` (with its query).
    #[must_use]
    pub fn sign(&self, method: &str, path: &str, caller: &Caller, now: i64) -> Vec<(&'static str, String)> {
        let signature = hex::encode(self.mac(now, method, path, caller).finalize().into_bytes());
        let mut headers = vec![
            (SUBJECT, caller.subject.clone()),
            (ROLES, caller.roles_header()),
            (TIMESTAMP, now.to_string()),
            (SIGNATURE, format!("v2={signature}")),
        ];
        if let Some(issuer) = &caller.issuer {
            headers.push((ISSUER, issuer.clone()));
        }
        if let Some(id) = caller.user_id {
            headers.push((USER_ID, id.to_string()));
        }
        if let Some(email) = &caller.email {
            headers.push((EMAIL, email.to_string()));
        }
        headers
    }

    /// Reads and verifies the caller headers of a request.
    ///
    /// # Errors
    /// A [`CallerError`] saying why the headers cannot be trusted.
    pub fn verify(&self, method: &str, path: &str, headers: &HeaderMap, now: i64) -> Result<Caller, CallerError> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signature = get(SIGNATURE).ok_or(CallerError::Unsigned)?;
        let signature =
            signature.strip_prefix("v2=").and_then(|hex| hex::decode(hex).ok()).ok_or(CallerError::Malformed)?;
        let timestamp: i64 = get(TIMESTAMP).and_then(|t| t.parse().ok()).ok_or(CallerError::Malformed)?;
        let subject = get(SUBJECT).filter(|s| !s.is_empty()).ok_or(CallerError::Malformed)?.to_owned();
        let issuer = match get(ISSUER) {
            Some(i) if !i.is_empty() => Some(i.to_owned()),
            Some(_) => return Err(CallerError::Malformed),
            None => None,
        };
        let user_id = match get(USER_ID) {
            Some(id) => Some(id.parse().map_err(|_| CallerError::Malformed)?),
            None => None,
        };
        let roles = get(ROLES)
            .unwrap_or_default()
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| Role::parse(r).ok_or(CallerError::Malformed))
            .collect::<Result<Vec<_>, _>>()?;
        let email = match get(EMAIL) {
            Some(e) => Some(Email::parse(e).map_err(|_| CallerError::Malformed)?),
            None => None,
        };
        let caller = Caller { subject, issuer, user_id, roles, email };
        // Checked before the timestamp so a forger learns nothing from the answer.
        self.mac(timestamp, method, path, &caller).verify_slice(&signature).map_err(|_| CallerError::BadSignature)?;
        if (now - timestamp).abs() > MAX_SKEW_SECS {
            return Err(CallerError::Stale);
        }
        Ok(caller)
    }
}

#[expect(clippy::panic, reason = "HMAC takes keys of any length; this cannot happen")]
fn unreachable_mac() -> HmacSha256 {
    panic!("HMAC-SHA256 refused a key")
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let Some(key) = req.app_data::<web::Data<CallerKey>>() else {
            return ready(Err(ApiError::internal(anyhow::anyhow!("no CallerKey configured"))));
        };
        let path = req.uri().path_and_query().map_or_else(|| req.path().to_owned(), ToString::to_string);
        let result = key.verify(req.method().as_str(), &path, req.headers(), chrono::Utc::now().timestamp());
        ready(result.map_err(|e| {
            tracing::warn!(reason = %e, "request refused: caller headers not trusted");
            PlatformCode::Unauthenticated.error()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn key(text: &str) -> CallerKey {
        CallerKey::new(&Secret::new(text.to_owned())).unwrap()
    }

    fn ada() -> Caller {
        Caller {
            subject: "auth0|ada".into(),
            issuer: Some("https://tenant.example/".into()),
            user_id: Some(UserId::from_uuid(uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001))),
            roles: vec![Role::User, Role::Owner],
            email: Email::parse("ada@example.com").ok(),
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_caller_round_trips() {
        let k = key(KEY);
        let signed = headers(&k.sign("GET", "/api/me?x=1", &ada(), 1_000));
        assert_eq!(k.verify("GET", "/api/me?x=1", &signed, 1_030), Ok(ada()));
    }

    #[test]
    fn signatures_bind_the_method_the_path_the_caller_and_the_key() {
        let k = key(KEY);
        let signed = k.sign("GET", "/api/me", &ada(), 1_000);
        assert_eq!(k.verify("DELETE", "/api/me", &headers(&signed), 1_000), Err(CallerError::BadSignature));
        assert_eq!(k.verify("GET", "/api/admin/users", &headers(&signed), 1_000), Err(CallerError::BadSignature));
        let mut escalated = signed.clone();
        for (name, value) in &mut escalated {
            if *name == ROLES {
                *value = "user,owner,admin".into();
            }
        }
        assert_eq!(k.verify("GET", "/api/me", &headers(&escalated), 1_000), Err(CallerError::BadSignature));
        let other = key("another-key-of-thirty-two-bytes!!");
        assert_eq!(other.verify("GET", "/api/me", &headers(&signed), 1_000), Err(CallerError::BadSignature));
    }

    #[test]
    fn the_issuer_is_signed_so_the_same_subject_of_another_tenant_is_another_caller() {
        let k = key(KEY);
        let signed = k.sign("GET", "/api/me", &ada(), 1_000);
        assert!(signed.contains(&(ISSUER, "https://tenant.example/".to_owned())), "{signed:?}");
        for forged in ["https://other-tenant.example/", ""] {
            let mut moved = signed.clone();
            for (name, value) in &mut moved {
                if *name == ISSUER {
                    *value = forged.to_owned();
                }
            }
            assert_ne!(k.verify("GET", "/api/me", &headers(&moved), 1_000), Ok(ada()), "{forged:?}");
        }
        let mut dropped = signed.clone();
        dropped.retain(|(name, _)| *name != ISSUER);
        assert_eq!(k.verify("GET", "/api/me", &headers(&dropped), 1_000), Err(CallerError::BadSignature));
        let other = Caller { issuer: Some("https://other-tenant.example/".into()), ..ada() };
        let verified = k.verify("GET", "/api/me", &headers(&k.sign("GET", "/api/me", &other, 1_000)), 1_000);
        assert_eq!(verified.map(|c| c.issuer), Ok(Some("https://other-tenant.example/".to_owned())));
    }

    #[test]
    fn a_service_caller_signs_and_verifies_as_exactly_that_service() {
        let k = key(KEY);
        let metering = Caller::service(Service::Metering);
        assert_eq!(metering.subject, "service:metering");
        assert_eq!(
            (metering.issuer.as_ref(), metering.user_id, metering.roles.as_slice(), metering.email.as_ref()),
            (None, None, [Role::Service].as_slice(), None)
        );
        let path = "/internal/clusters/0193a000-0000-7000-8000-000000000001/kubeconfig";
        let signed = k.sign("GET", path, &metering, 1_000);
        let roles = signed.iter().find(|(n, _)| *n == ROLES).map(|(_, v)| v.as_str());
        assert_eq!(roles, Some("service"));
        assert!(
            signed.iter().all(|(n, _)| *n != USER_ID && *n != EMAIL && *n != ISSUER),
            "a service has no issuer, user id or email"
        );
        let verified = k.verify("GET", path, &headers(&signed), 1_010).unwrap();
        assert_eq!(verified, metering);
        assert!(verified.is_service(Service::Metering));
        assert!(!verified.is_service(Service::Billing));
        assert!(!verified.has(Role::Admin) && !verified.has(Role::User));

        // Another service's name, an added role or another key does not pass for metering.
        let mut renamed = signed.clone();
        for (name, value) in &mut renamed {
            if *name == SUBJECT {
                *value = "service:billing".into();
            }
        }
        assert_eq!(k.verify("GET", path, &headers(&renamed), 1_000), Err(CallerError::BadSignature));
        let mut escalated = signed.clone();
        for (name, value) in &mut escalated {
            if *name == ROLES {
                *value = "service,admin".into();
            }
        }
        assert_eq!(k.verify("GET", path, &headers(&escalated), 1_000), Err(CallerError::BadSignature));
        let other = key("another-key-of-thirty-two-bytes!!");
        assert_eq!(other.verify("GET", path, &headers(&signed), 1_000), Err(CallerError::BadSignature));
        assert_eq!(
            k.verify("GET", "/internal/clusters/x/projects", &headers(&signed), 1_000),
            Err(CallerError::BadSignature)
        );
    }

    #[test]
    fn only_the_exact_service_shape_counts_as_a_service() {
        let metering = Caller::service(Service::Metering);
        assert!(metering.is_service(Service::Metering));
        let variants = [
            Caller { roles: vec![Role::Service, Role::Admin], ..metering.clone() },
            Caller { roles: vec![Role::Admin], ..metering.clone() },
            Caller { roles: vec![], ..metering.clone() },
            Caller { user_id: Some(UserId::from_uuid(uuid::Uuid::from_u128(1))), ..metering.clone() },
            Caller { email: Email::parse("metering@example.com").ok(), ..metering.clone() },
            Caller { subject: "metering".into(), ..metering.clone() },
            Caller { subject: "service:metering|x".into(), ..metering.clone() },
            Caller { subject: "auth0|service:metering".into(), ..metering.clone() },
            Caller { issuer: Some("https://tenant.example/".into()), ..metering.clone() },
            Caller { roles: vec![Role::User, Role::Owner, Role::Admin], ..ada() },
        ];
        for caller in variants {
            assert!(!caller.is_service(Service::Metering), "{caller:?}");
        }
    }

    #[test]
    fn only_the_exact_machine_admin_shape_counts_as_a_machine_admin() {
        let machine = Caller::machine_admin("https://tenant.example/", "ops-bot");
        assert!(machine.is_machine_admin());
        assert_eq!(machine.subject, "client:ops-bot");
        let k = key(KEY);
        let signed = headers(&k.sign("GET", "/api/admin/users", &machine, 1_000));
        assert!(k.verify("GET", "/api/admin/users", &signed, 1_000).unwrap().is_machine_admin());
        for not in [
            Caller { user_id: ada().user_id, ..machine.clone() },
            Caller { email: ada().email, ..machine.clone() },
            Caller { issuer: None, ..machine.clone() },
            Caller { roles: vec![Role::Admin, Role::User], ..machine.clone() },
            Caller { roles: vec![Role::User], ..machine.clone() },
            Caller { subject: "client:".into(), ..machine.clone() },
            Caller { subject: "auth0|ops-bot".into(), ..machine.clone() },
            ada(),
        ] {
            assert!(!not.is_machine_admin(), "{not:?}");
        }
    }

    #[test]
    fn unsigned_stale_and_malformed_headers_are_refused() {
        let k = key(KEY);
        assert_eq!(k.verify("GET", "/", &HeaderMap::new(), 0), Err(CallerError::Unsigned));
        let signed = k.sign("GET", "/", &ada(), 1_000);
        assert_eq!(k.verify("GET", "/", &headers(&signed), 1_061), Err(CallerError::Stale));
        assert_eq!(k.verify("GET", "/", &headers(&signed), 939), Err(CallerError::Stale));
        let mut bad = signed.clone();
        bad.retain(|(n, _)| *n != SUBJECT);
        assert_eq!(k.verify("GET", "/", &headers(&bad), 1_000), Err(CallerError::Malformed));
        assert!(CallerKey::new(&Secret::new("short".to_owned())).is_err());
    }
}
