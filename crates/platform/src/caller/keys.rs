//! Ed25519 keys: the signer (a private key, held by the gateway or by one service) and the
//! verifier (public keys only: the gateway's and those of the services allowed to call).

use super::{
    CONTENT_SHA256, Caller, EMAIL, ISSUER, MAX_SKEW_SECS, ROLES, Role, SERVICE_SUBJECT_PREFIX, SIGNATURE, SUBJECT,
    TIMESTAMP, USER_ID,
};
use crate::secret::Secret;
use actix_web::http::header::HeaderMap;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hopsbridge_contracts::Service;
use hopsbridge_domain::Email;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fmt;

/// The lowercase hex SHA-256 of a request body: what [`CONTENT_SHA256`] carries.
#[must_use]
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The digest of the body the HTTP layer actually read, kept in the request's extensions for the
/// [`Caller`] extractor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyDigest(pub String);

/// 32 bytes from hex (64 digits) or from base64 (standard or URL-safe, padded or not). Never
/// echoes the text.
fn decode_32(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    // A 32-byte key in base64 is 43 characters (odd) or ends in `=`: never taken for hex.
    let bytes = if text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| "is not valid hex".to_owned())?
    } else {
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines
            .iter()
            .find_map(|e| e.decode(text).ok())
            .ok_or_else(|| "is neither 64 hex digits nor base64".to_owned())?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("must be 32 bytes (an Ed25519 key), not {}", bytes.len()))
}

/// An Ed25519 public key, written as base64 of its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// A public key from 64 hex digits or base64.
    ///
    /// # Errors
    /// What is wrong with the text (never the text itself).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = decode_32(text)?;
        VerifyingKey::from_bytes(&bytes).map(Self).map_err(|_| "is not an Ed25519 public key".to_owned())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Why caller headers were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// No signature: the request came neither through the gateway nor from a service.
    #[error("request not signed")]
    Unsigned,
    /// A header is missing or malformed.
    #[error("malformed caller headers")]
    Malformed,
    /// Signed as a service whose public key this service does not hold.
    #[error("signed as a service this service does not trust")]
    UnknownService,
    /// The body is not the one the signature covers.
    #[error("the body does not match its signed digest")]
    BodyMismatch,
    /// The timestamp is too far from now.
    #[error("signature expired")]
    Stale,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
}

/// The text a signature covers: every signed header, the method, the path with its query and
/// the body's digest, one per line.
fn canonical(timestamp: i64, method: &str, path: &str, content_sha256: &str, caller: &Caller) -> String {
    let user_id = caller.user_id.map(|u| u.to_string()).unwrap_or_default();
    format!(
        "v3\n{timestamp}\n{method}\n{path}\n{content_sha256}\n{}\n{}\n{user_id}\n{}\n{}",
        caller.issuer.as_deref().unwrap_or_default(),
        caller.subject,
        caller.roles_header(),
        caller.email.as_ref().map(Email::as_str).unwrap_or_default()
    )
}

/// Who must have signed `caller`: `None` for the gateway (a person, a machine admin, or the
/// gateway as a service), `Some(service)` for another service calling as itself.
fn signer_of(caller: &Caller) -> Result<Option<Service>, CallerError> {
    if !caller.has(Role::Service) {
        return Ok(None);
    }
    let name = caller.subject.strip_prefix(SERVICE_SUBJECT_PREFIX).ok_or(CallerError::Malformed)?;
    let service = std::iter::once(Service::Gateway)
        .chain(Service::WITH_DATA)
        .find(|s| s.name() == name)
        .ok_or(CallerError::Malformed)?;
    Ok((service != Service::Gateway).then_some(service))
}

/// A private Ed25519 key that signs caller headers: the gateway's (`auth.gateway_signing_key`)
/// or one service's own (`auth.service_key`). `Debug` shows only the public half.
#[derive(Clone)]
pub struct CallerSigner(Secret<SigningKey>);

impl fmt::Debug for CallerSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallerSigner").field(&self.public_key()).finish()
    }
}

impl CallerSigner {
    /// A signer from its 32-byte seed, as 64 hex digits or base64.
    ///
    /// # Errors
    /// What is wrong with the seed (never the seed itself).
    pub fn new(seed: &Secret<String>) -> Result<Self, String> {
        let bytes = decode_32(seed.expose())?;
        Ok(Self::from_seed(&bytes))
    }

    /// A signer from the seed's bytes.
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(Secret::new(SigningKey::from_bytes(seed)))
    }

    /// The public key services verify this signer's headers with.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.expose().verifying_key())
    }

    /// The headers for a request without a body: [`CallerSigner::sign_with_body`] with nothing.
    #[must_use]
    pub fn sign(&self, method: &str, path: &str, caller: &Caller, now: i64) -> Vec<(&'static str, String)> {
        self.sign_with_body(method, path, b"", caller, now)
    }

    /// The headers to add to a request for `method`, `path` (with its query) and `body`, sent
    /// exactly as given, at `now` (Unix seconds).
    #[must_use]
    pub fn sign_with_body(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        caller: &Caller,
        now: i64,
    ) -> Vec<(&'static str, String)> {
        let digest = body_sha256(body);
        let signature = self.0.expose().sign(canonical(now, method, path, &digest, caller).as_bytes());
        let mut headers = vec![
            (SUBJECT, caller.subject.clone()),
            (ROLES, caller.roles_header()),
            (TIMESTAMP, now.to_string()),
            (CONTENT_SHA256, digest),
            (SIGNATURE, format!("v3={}", hex::encode(signature.to_bytes()))),
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
}

/// Verifies caller headers with public keys only: the gateway's, and those of the services
/// this service lets call it (`auth.trusted_services`).
#[derive(Clone, Debug)]
pub struct CallerVerifier {
    gateway: PublicKey,
    services: HashMap<Service, PublicKey>,
}

impl CallerVerifier {
    /// A verifier that trusts the gateway's key and no service yet.
    #[must_use]
    pub fn new(gateway: PublicKey) -> Self {
        Self { gateway, services: HashMap::new() }
    }

    /// Also trusts `service`, signing as itself with `key`.
    #[must_use]
    pub fn trusting(mut self, service: Service, key: PublicKey) -> Self {
        self.services.insert(service, key);
        self
    }

    /// Reads and verifies the caller headers of a request whose body hashed to `body_sha256`.
    ///
    /// # Errors
    /// A [`CallerError`] saying why the headers cannot be trusted.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        body_sha256: &str,
        now: i64,
    ) -> Result<Caller, CallerError> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signature = get(SIGNATURE).ok_or(CallerError::Unsigned)?;
        let signature = signature
            .strip_prefix("v3=")
            .and_then(|hex| hex::decode(hex).ok())
            .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
            .ok_or(CallerError::Malformed)?;
        let timestamp: i64 = get(TIMESTAMP).and_then(|t| t.parse().ok()).ok_or(CallerError::Malformed)?;
        let content = get(CONTENT_SHA256).ok_or(CallerError::Malformed)?;
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
        let key = match signer_of(&caller)? {
            None => self.gateway,
            Some(service) => {
                // A service signs only for itself, never a person or an administrator.
                if !caller.is_service(service) {
                    return Err(CallerError::Malformed);
                }
                *self.services.get(&service).ok_or(CallerError::UnknownService)?
            }
        };
        // Checked before the timestamp and the body so a forger learns nothing from the answer.
        key.0
            .verify_strict(canonical(timestamp, method, path, content, &caller).as_bytes(), &signature)
            .map_err(|_| CallerError::BadSignature)?;
        if !crate::secret::constant_time_eq(content.as_bytes(), body_sha256.as_bytes()) {
            return Err(CallerError::BodyMismatch);
        }
        if (now - timestamp).abs() > MAX_SKEW_SECS {
            return Err(CallerError::Stale);
        }
        Ok(caller)
    }

    /// The verifier `auth` describes.
    ///
    /// # Errors
    /// The setting that is wrong and what is wrong with it (never a key).
    pub fn from_config(auth: &crate::config::AuthConfig) -> Result<Self, (String, String)> {
        let gateway =
            PublicKey::parse(&auth.gateway_public_key).map_err(|e| ("auth.gateway_public_key".to_owned(), e))?;
        let mut verifier = Self::new(gateway);
        for (name, key) in &auth.trusted_services {
            let setting = format!("auth.trusted_services.{name}");
            let service = Service::WITH_DATA.into_iter().find(|s| s.name() == name).ok_or_else(|| {
                (
                    setting.clone(),
                    "names no Hopsbridge service (the gateway's key is auth.gateway_public_key)".to_owned(),
                )
            })?;
            let key = PublicKey::parse(key).map_err(|e| (setting, e))?;
            verifier = verifier.trusting(service, key);
        }
        Ok(verifier)
    }
}
