//! Validating Auth0 access tokens, as a resource server must.
//!
//! - RS256 only: the algorithm is fixed here, never taken from the token (so `none` and HS256
//!   signed with the public key are refused).
//! - `iss` equals the configured issuer exactly (with its trailing slash); `aud` contains our API
//!   identifier (a string or an array); `exp` and `nbf` with at most 60 s leeway.
//! - Header `typ` absent, `JWT` or `at+jwt`.
//! - Keys come from the tenant's JWKS, found through OIDC discovery and cached by `kid`. A token
//!   with an unknown `kid`, or whose signature fails under the key cached for its `kid` (a key
//!   replaced under the same `kid`), triggers one refetch, at most once per `refetch_interval`
//!   (a governor limiter) whatever the cause, which is how key rotation is absorbed without a
//!   restart; if the refetch fails the cached keys stay.
//! - A token that passed is remembered (by its SHA-256) for a minute, never past its expiry, so
//!   a client's repeated requests cost one signature check a minute. The verdicts are held in a
//!   moka cache (expiry per token, bounded size), and requests that bring the same token at once
//!   share one check.
//! - A client-credentials token (a machine client: `gty` = `client-credentials`, `sub` =
//!   `<azp>@clients`) passes the same checks and is answered as [`Bearer::Machine`]; only the
//!   proxy decides what it may reach (decision 0045). Every other subject must be a person's
//!   (`provider|id`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter as GovernorLimiter};
use hopsbridge_domain::{AuthSubject, Email};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::Expiry;
use moka::future::Cache;
use serde::Deserialize;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// The namespace of Hopsbridge's custom claims in Auth0 tokens.
pub const CLAIM_NAMESPACE: &str = "https://hopsbridge.example/";

/// Why a token was refused. Each maps to 401 `invalid_token`; the variant is logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not RS256 (includes `none` and HS256).
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `typ` is neither JWT nor at+jwt.
    #[error("unsupported token type")]
    UnsupportedType,
    /// No key with the token's `kid`, even after refetching the JWKS.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// `exp` passed.
    #[error("token expired")]
    Expired,
    /// `nbf` not reached.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not our tenant.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain our API.
    #[error("wrong audience")]
    WrongAudience,
    /// `sub` is missing or not a person's Auth0 subject (`provider|id`); a machine client's
    /// token (`<client>@clients`) is no person's ([`TokenValidator::validate`]).
    #[error("invalid subject")]
    InvalidSubject,
}

/// What Hopsbridge takes from a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// The tenant that issued the token (`iss`, the configured issuer: no other passes). A
    /// subject is unique only within its issuer, so a person is the pair.
    pub issuer: String,
    /// The person (or machine client) the token speaks for.
    pub subject: AuthSubject,
    /// The namespaced email claim, when the tenant's Action adds it.
    pub email: Option<Email>,
    /// Scopes.
    pub scope: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
}

/// What Hopsbridge takes from a valid client-credentials token: a machine client, no person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineClaims {
    /// The tenant that issued the token.
    pub issuer: String,
    /// The client id (`azp`; `sub` is `<client id>@clients`).
    pub client_id: String,
    /// Scopes.
    pub scope: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
}

/// Who a valid access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer {
    /// A person (`sub` = `provider|id`).
    Person(AccessClaims),
    /// A machine client (client credentials).
    Machine(MachineClaims),
}

/// The grant type Auth0 writes in `gty` for client credentials.
const CLIENT_CREDENTIALS: &str = "client-credentials";

#[derive(Deserialize)]
struct RawClaims {
    sub: String,
    exp: i64,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    gty: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

/// Validates access tokens of one Auth0 tenant for one API.
pub struct TokenValidator {
    issuer: String,
    audience: String,
    jwks_uri: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// One JWKS fetch per `refetch_interval`; `None` when the interval is zero (no bound).
    fetches: Option<DefaultDirectRateLimiter>,
    /// Tokens already verified, by SHA-256.
    verified: Cache<[u8; 32], Verdict>,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("verified", &self.verified.entry_count())
            .finish_non_exhaustive()
    }
}

/// A token that passed, and the Unix second until which it is taken on trust.
#[derive(Clone, Debug)]
struct Verdict {
    claims: Bearer,
    until: i64,
}

/// moka's expiry for verdicts: at their `until`.
struct UntilSecond;

impl Expiry<[u8; 32], Verdict> for UntilSecond {
    fn expire_after_create(&self, _: &[u8; 32], verdict: &Verdict, _: Instant) -> Option<Duration> {
        let left = verdict.until.saturating_sub(chrono::Utc::now().timestamp());
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }
}

/// How long a verified token is taken on trust before it is checked again (never past its
/// `exp` plus the leeway).
const VERIFIED_FOR_SECS: i64 = 60;
/// Most verified tokens remembered.
const VERIFIED_CAPACITY: u64 = 10_000;

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl TokenValidator {
    /// The issuer whose tokens pass, with its trailing slash.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Reads the tenant's discovery document and JWKS.
    ///
    /// # Errors
    /// When discovery or the JWKS cannot be fetched, or discovery names another issuer.
    pub async fn discover(issuer: &str, audience: &str, refetch_interval: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let discovery: Discovery = http
            .get(format!("{issuer}.well-known/openid-configuration"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(discovery.issuer == issuer, "discovery names issuer {}, expected {issuer}", discovery.issuer);
        let validator = Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            jwks_uri: discovery.jwks_uri,
            http,
            keys: RwLock::default(),
            fetches: Quota::with_period(refetch_interval)
                .map(|q| GovernorLimiter::direct(q.allow_burst(NonZeroU32::MIN))),
            verified: Cache::builder().max_capacity(VERIFIED_CAPACITY).expire_after(UntilSecond).build(),
        };
        validator.refresh().await?;
        Ok(validator)
    }

    /// Fetches the JWKS and replaces the cached keys.
    ///
    /// # Errors
    /// When the JWKS cannot be fetched or parsed.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        // Every fetch starts the interval, whoever asked for it.
        let _ = self.may_refetch();
        let set: JwkSet = self.http.get(&self.jwks_uri).send().await?.error_for_status()?.json().await?;
        let keys: HashMap<String, DecodingKey> =
            set.keys.iter().filter_map(|k| Some((k.common.key_id.clone()?, DecodingKey::from_jwk(k).ok()?))).collect();
        *self.keys.write().await = keys;
        Ok(())
    }

    /// True when the last fetch is older than the refetch interval (and claims the slot).
    fn may_refetch(&self) -> bool {
        self.fetches.as_ref().is_none_or(|fetches| fetches.check().is_ok())
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        if let Some(k) = self.keys.read().await.get(kid) {
            return Ok(k.clone());
        }
        self.refetched(kid).await.ok_or(TokenError::UnknownKey)
    }

    /// The key of `kid` after one more JWKS fetch, when the refetch interval allows one.
    async fn refetched(&self, kid: &str) -> Option<DecodingKey> {
        if !self.may_refetch() {
            return None;
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "JWKS refetch failed; keeping the cached keys");
        }
        self.keys.read().await.get(kid).cloned()
    }

    /// Validates a person's `token` and returns its claims; a machine client's token is
    /// refused as [`TokenError::InvalidSubject`].
    ///
    /// # Errors
    /// The first reason the token is refused.
    pub async fn validate(&self, token: &str) -> Result<AccessClaims, TokenError> {
        match self.validate_bearer(token).await? {
            Bearer::Person(claims) => Ok(claims),
            Bearer::Machine(_) => Err(TokenError::InvalidSubject),
        }
    }

    /// Validates `token`, a person's or a machine client's, and says whose it is. A token
    /// verified in the last minute is not verified again (a signature check costs tens of
    /// microseconds; requests repeat tokens).
    ///
    /// # Errors
    /// The first reason the token is refused.
    pub async fn validate_bearer(&self, token: &str) -> Result<Bearer, TokenError> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        let entry = self
            .verified
            .entry(digest)
            .or_try_insert_with(self.verdict(token, now))
            .await
            .map_err(|e| TokenError::clone(&e))?;
        if entry.is_fresh() || now < entry.value().until {
            return Ok(entry.into_value().claims);
        }
        // moka keeps time by the monotonic clock and `until` is wall-clock time: when the wall
        // clock moved ahead, the verdict is over although moka still holds it.
        self.verified.invalidate(&digest).await;
        let verdict = self.verdict(token, now).await?;
        self.verified.insert(digest, verdict.clone()).await;
        Ok(verdict.claims)
    }

    /// Verifies `token` at Unix second `now`; the verdict holds for a minute, never past the
    /// token's `exp` plus the leeway.
    async fn verdict(&self, token: &str, now: i64) -> Result<Verdict, TokenError> {
        let claims = self.verify(token).await?;
        let expires_at = match &claims {
            Bearer::Person(c) => c.expires_at,
            Bearer::Machine(c) => c.expires_at,
        };
        let until = (now + VERIFIED_FOR_SECS).min(expires_at + 60);
        Ok(Verdict { claims, until })
    }

    /// The claims of `token` if `key` signed it and they are ours and current.
    fn decode(&self, token: &str, key: &DecodingKey) -> Result<RawClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<RawClaims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidIssuer => TokenError::WrongIssuer,
                K::InvalidAudience => TokenError::WrongAudience,
                K::InvalidSignature => TokenError::InvalidSignature,
                K::InvalidAlgorithm => TokenError::UnsupportedAlgorithm,
                K::MissingRequiredClaim(c) if c == "sub" => TokenError::InvalidSubject,
                _ => TokenError::Malformed,
            }
        })?;
        Ok(data.claims)
    }

    async fn verify(&self, token: &str) -> Result<Bearer, TokenError> {
        // The algorithm is checked on the raw header first: jsonwebtoken cannot even parse
        // `none`, and the answer to any algorithm but RS256 is the same.
        let raw_alg = token
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .ok_or(TokenError::Malformed)?
            .get("alg")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        if raw_alg.as_deref() != Some("RS256") {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if let Some(typ) = &header.typ
            && !typ.eq_ignore_ascii_case("JWT")
            && !typ.eq_ignore_ascii_case("at+jwt")
        {
            return Err(TokenError::UnsupportedType);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.key(&kid).await?;
        let claims = match self.decode(token, &key) {
            // The tenant may have replaced the key under the same kid: fetch the keys again
            // (within the same bound as for unknown kids) and try the key now published.
            Err(TokenError::InvalidSignature) => match self.refetched(&kid).await {
                Some(key) => self.decode(token, &key)?,
                None => return Err(TokenError::InvalidSignature),
            },
            decoded => decoded?,
        };
        let scope = claims.scope.split_whitespace().map(str::to_owned).collect();
        if claims.gty.as_deref() == Some(CLIENT_CREDENTIALS) {
            // Auth0 writes the client id in `azp` and `sub` = `<client id>@clients`; both must agree.
            let client_id = claims.azp.filter(|id| !id.is_empty() && !id.chars().any(char::is_whitespace));
            return match client_id {
                Some(client_id) if claims.sub == format!("{client_id}@clients") => Ok(Bearer::Machine(MachineClaims {
                    issuer: self.issuer.clone(),
                    client_id,
                    scope,
                    expires_at: claims.exp,
                })),
                _ => Err(TokenError::InvalidSubject),
            };
        }
        let subject = AuthSubject::parse(&claims.sub).map_err(|_| TokenError::InvalidSubject)?;
        let email = claims
            .rest
            .get(&format!("{CLAIM_NAMESPACE}email"))
            .and_then(serde_json::Value::as_str)
            .and_then(|e| Email::parse(e).ok());
        Ok(Bearer::Person(AccessClaims { issuer: self.issuer.clone(), subject, email, scope, expires_at: claims.exp }))
    }
}

/// A [`TokenValidator`] made on first use, so the gateway starts (and reports not ready)
/// while the tenant is unreachable; failed discoveries are retried at most every 5 seconds.
#[derive(Debug)]
pub struct LazyValidator {
    issuer: String,
    audience: String,
    refetch_interval: Duration,
    cell: tokio::sync::OnceCell<TokenValidator>,
    /// When discovery last failed. Only failures hold the next attempt back, which a rate
    /// limiter (counting every attempt) does not express; so it is a timestamp.
    last_failure: Mutex<Option<Instant>>,
}

impl LazyValidator {
    /// A validator for `issuer` (with its trailing slash) and `audience`.
    #[must_use]
    pub fn new(issuer: &str, audience: &str, refetch_interval: Duration) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            refetch_interval,
            cell: tokio::sync::OnceCell::new(),
            last_failure: Mutex::new(None),
        }
    }

    /// The issuer whose tokens pass, with its trailing slash.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The validator, discovering the tenant first if needed.
    ///
    /// # Errors
    /// When discovery fails (now, or less than 5 seconds ago).
    pub async fn get(&self) -> anyhow::Result<&TokenValidator> {
        if let Some(v) = self.cell.get() {
            return Ok(v);
        }
        if let Ok(last) = self.last_failure.lock()
            && last.is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            anyhow::bail!("Auth0 discovery failed moments ago");
        }
        let result = self
            .cell
            .get_or_try_init(|| TokenValidator::discover(&self.issuer, &self.audience, self.refetch_interval))
            .await;
        if result.is_err()
            && let Ok(mut last) = self.last_failure.lock()
        {
            *last = Some(Instant::now());
        }
        result
    }
}
