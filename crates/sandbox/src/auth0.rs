//! Auth0, as Hopsbridge uses it: OIDC discovery, a JWKS with key rotation, RS256 access and ID
//! tokens, the authorization code flow with PKCE, logout, and the post-registration Action.
//!
//! Facts kept from the real tenant: the issuer is the tenant URL with a trailing slash; the
//! JWKS lists the signing key and the next one; access tokens carry `aud` as a string or, when
//! `openid` was asked for, an array with the userinfo URL; custom claims live under a
//! namespaced key; authorization codes are single-use and bound to the PKCE challenge and the
//! redirect URI; unknown clients and unregistered callback URLs are refused.
//!
//! Machine-to-machine applications get tokens by client credentials (`POST /oauth/token` with
//! `grant_type=client_credentials`, their id and secret, and the API's `audience`), as Auth0
//! issues them: `sub` = `<client_id>@clients`, `azp` = the client id, `gty` =
//! `client-credentials`, `aud` = the API, no email. Only a machine application with a grant for
//! the API gets one: another audience, a missing audience (the tenant has no default) or the
//! frontend application is refused with 403 `access_denied`, a wrong secret with 401.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::server::Served;

mod endpoints;
mod login;
use endpoints::{authorize, discovery, issue_code, jwks, logout, redirect, token, userinfo};
pub use login::{ActionCall, SESSION_COOKIE, SESSION_INACTIVITY_SECS, SESSION_LIFETIME_SECS};

/// The namespace of Hopsbridge's custom claims (`https://hopsbridge.example/email`).
pub const CLAIM_NAMESPACE: &str = "https://hopsbridge.example/";

/// The tenant's settings.
#[derive(Clone, Debug)]
pub struct Auth0Config {
    /// The API identifier access tokens are issued for (`aud`).
    pub audience: String,
    /// The frontend application: its client id and secret, callback and logout URLs.
    pub client_id: String,
    /// The application's secret (confidential client).
    pub client_secret: String,
    /// Allowed callback URLs (exact match, as Auth0 checks them).
    pub callback_urls: Vec<String>,
    /// Allowed logout return URLs.
    pub logout_urls: Vec<String>,
    /// Access token lifetime in seconds.
    pub token_lifetime_secs: i64,
    /// Machine-to-machine applications granted access to the API (client credentials).
    pub machine_clients: Vec<MachineClient>,
    /// Whether the frontend application has the Password grant enabled (`grant_type=password`
    /// with a database user's email and password; off by default, as on a new application).
    pub password_grant: bool,
}

/// A machine-to-machine application with a client grant for the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineClient {
    /// Its client id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
}

/// The machine application the sandbox's tenant has from the start, for `hopsbridge-admin`.
pub const ADMIN_CLIENT_ID: &str = "hopsbridge-admin";
/// Its secret.
pub const ADMIN_CLIENT_SECRET: &str = "sandbox-admin-client-secret";

impl Default for Auth0Config {
    fn default() -> Self {
        Self {
            audience: "https://api.hopsbridge.example".to_owned(),
            client_id: "hopsbridge-frontend".to_owned(),
            client_secret: "sandbox-client-secret".to_owned(),
            callback_urls: Vec::new(),
            logout_urls: Vec::new(),
            token_lifetime_secs: 86_400,
            machine_clients: vec![MachineClient {
                client_id: ADMIN_CLIENT_ID.to_owned(),
                client_secret: ADMIN_CLIENT_SECRET.to_owned(),
            }],
            password_grant: false,
        }
    }
}

/// A person in the tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestUser {
    /// `auth0|…`, `google-oauth2|…`.
    pub sub: String,
    /// Email address as the identity provider gives it.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Whether the address was verified.
    pub email_verified: bool,
    /// The connection: `Username-Password-Authentication`, `google-oauth2`, …
    pub connection: String,
}

impl TestUser {
    /// A database-connection user `auth0|<id>`.
    #[must_use]
    pub fn database(id: &str, email: &str, name: &str) -> Self {
        Self {
            sub: format!("auth0|{id}"),
            email: email.to_owned(),
            name: name.to_owned(),
            email_verified: true,
            connection: "Username-Password-Authentication".to_owned(),
        }
    }

    /// A Google user `google-oauth2|<id>` (social: no post-registration Action fires).
    #[must_use]
    pub fn google(id: &str, email: &str, name: &str) -> Self {
        Self {
            sub: format!("google-oauth2|{id}"),
            email: email.to_owned(),
            name: name.to_owned(),
            email_verified: true,
            connection: "google-oauth2".to_owned(),
        }
    }
}

/// `aud` as Auth0 writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Just the API.
    One(String),
    /// The API and the userinfo URL (when `openid` was requested), or any list.
    Many(Vec<String>),
}

/// The `typ` header of an access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// `JWT`, Auth0's default profile.
    Jwt,
    /// `at+jwt`, the RFC 9068 profile.
    AtJwt,
}

/// What to put in an access token.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    /// `sub`.
    pub sub: String,
    /// `aud`; `None` means the tenant's API as a string.
    pub audience: Option<Audience>,
    /// Space-separated scopes.
    pub scope: String,
    /// `permissions` (RBAC); omitted when `None`.
    pub permissions: Option<Vec<String>>,
    /// The namespaced email claim; omitted when `None`.
    pub email: Option<String>,
    /// Header `typ`.
    pub typ: TokenType,
    /// Seconds until `exp` (negative for an expired token).
    pub expires_in: i64,
    /// Seconds until `nbf`, when the token should carry one.
    pub not_before_in: Option<i64>,
}

impl TokenSpec {
    /// A user's access token for the tenant's API with the email claim.
    #[must_use]
    pub fn user(user: &TestUser) -> Self {
        Self {
            sub: user.sub.clone(),
            audience: None,
            scope: "openid profile email".to_owned(),
            permissions: None,
            email: Some(user.email.clone()),
            typ: TokenType::Jwt,
            expires_in: 3600,
            not_before_in: None,
        }
    }
}

/// Tokens that a resource server must refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadToken {
    /// `exp` two minutes in the past (beyond a 60 s leeway).
    Expired,
    /// `nbf` five minutes in the future.
    NotYetValid,
    /// `aud` is another API.
    WrongAudience,
    /// `iss` is another tenant.
    WrongIssuer,
    /// Signed by a key the JWKS never listed.
    UnknownKid,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256, with the tenant's public key (PEM) as the HMAC secret.
    Hs256WithPublicKey,
    /// A valid token whose payload was changed after signing.
    TamperedPayload,
}

/// The body the post-registration Action posts to identity's webhook, as Hopsbridge's Action
/// code builds it from `event.user` and `event.connection`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRegistration {
    /// `event.user.user_id`.
    pub user_id: String,
    /// `event.user.email`.
    pub email: String,
    /// `event.user.email_verified`.
    pub email_verified: bool,
    /// `event.user.name`.
    pub name: String,
    /// `event.connection.name`.
    pub connection: String,
    /// `event.user.created_at`, RFC 3339.
    pub created_at: String,
}

/// The header carrying the shared secret of the post-registration call.
pub const WEBHOOK_SECRET_HEADER: &str = "x-auth0-webhook-secret";

struct SigningKey {
    kid: String,
    private: rsa::RsaPrivateKey,
    encoding: EncodingKey,
}

impl SigningKey {
    fn generate() -> anyhow::Result<Self> {
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
        let der = private.to_pkcs1_der()?;
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(private.n().to_bytes_be())[..12]);
        Ok(Self { kid, private, encoding })
    }

    fn jwk(&self) -> Value {
        let public = self.private.to_public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        })
    }

    fn public_pem(&self) -> String {
        use rsa::pkcs8::EncodePublicKey;
        self.private.to_public_key().to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap_or_default()
    }
}

/// A checked `/authorize` request: what the code it ends with is bound to.
struct Authorization {
    client_id: String,
    redirect_uri: String,
    state: String,
    challenge: Option<(String, String)>,
    nonce: Option<String>,
    scope: String,
    audience: Option<String>,
}

struct PendingCode {
    user: TestUser,
    client_id: String,
    redirect_uri: String,
    challenge: Option<(String, String)>,
    nonce: Option<String>,
    scope: String,
    audience: Option<String>,
    issued_at: i64,
}

struct State {
    config: Auth0Config,
    /// Published keys, oldest first; the signing key is `keys[signing]`.
    keys: Vec<SigningKey>,
    signing: usize,
    users: HashMap<String, TestUser>,
    next_login: Option<String>,
    codes: HashMap<String, PendingCode>,
    used_codes: Vec<String>,
    jwks_fetches: usize,
    /// Database users' passwords, by `sub`.
    passwords: HashMap<String, login::Password>,
    /// Authorization requests waiting on the login page.
    transactions: HashMap<String, login::Transaction>,
    /// SSO sessions, by the `auth0` cookie's value.
    sessions: HashMap<String, login::SsoSession>,
    /// The post-registration Action sign-ups on the page fire.
    action: Option<PostRegistrationAction>,
    action_calls: Vec<ActionCall>,
}

/// A running Auth0 tenant.
#[derive(Clone)]
pub struct Auth0Sim {
    state: Arc<Mutex<State>>,
    base: String,
    served: Arc<Served>,
}

impl std::fmt::Debug for Auth0Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth0Sim").field("issuer", &self.issuer()).finish_non_exhaustive()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Auth0Sim {
    /// Starts a tenant on loopback with two published keys (the signing key and the next one).
    ///
    /// # Errors
    /// When keys cannot be generated or the port cannot be bound.
    pub fn start(config: Auth0Config) -> anyhow::Result<Self> {
        let keys = vec![SigningKey::generate()?, SigningKey::generate()?];
        let state = Arc::new(Mutex::new(State {
            config,
            keys,
            signing: 0,
            users: HashMap::new(),
            next_login: None,
            codes: HashMap::new(),
            used_codes: Vec::new(),
            jwks_fetches: 0,
            passwords: HashMap::new(),
            transactions: HashMap::new(),
            sessions: HashMap::new(),
            action: None,
            action_calls: Vec::new(),
        }));
        let shared = web::Data::new(Arc::clone(&state));
        let served = Served::start(
            move |c: &mut web::ServiceConfig| {
                c.app_data(shared.clone())
                    .route("/.well-known/openid-configuration", web::get().to(discovery))
                    .route("/.well-known/jwks.json", web::get().to(jwks))
                    .route("/authorize", web::get().to(authorize))
                    .route("/oauth/token", web::post().to(token))
                    .route("/userinfo", web::get().to(userinfo))
                    .route("/v2/logout", web::get().to(logout))
                    .route("/u/login", web::get().to(login::login_page))
                    .route("/u/login", web::post().to(login::login_submit))
                    .route("/u/login/google", web::post().to(login::google_submit))
                    .route("/u/signup", web::get().to(login::signup_page))
                    .route("/u/signup", web::post().to(login::signup_submit));
            },
            None,
        )?;
        let base = served.url();
        Ok(Self { state, base, served: Arc::new(served) })
    }

    /// The issuer: the tenant URL with its trailing slash.
    #[must_use]
    pub fn issuer(&self) -> String {
        format!("{}/", self.base)
    }

    /// The API identifier tokens are issued for.
    #[must_use]
    pub fn audience(&self) -> String {
        lock(&self.state).config.audience.clone()
    }

    /// The JWKS URL.
    #[must_use]
    pub fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.base)
    }

    /// How many times the JWKS was fetched (to check a client's caching).
    #[must_use]
    pub fn jwks_fetches(&self) -> usize {
        lock(&self.state).jwks_fetches
    }

    /// Adds callback and logout URLs for the frontend application.
    pub fn allow_urls(&self, callback: &str, logout: &str) {
        let mut s = lock(&self.state);
        s.config.callback_urls.push(callback.to_owned());
        s.config.logout_urls.push(logout.to_owned());
    }

    /// Registers a user; [`Auth0Sim::sign_in_as`] or `login_hint` picks who `/authorize` signs in.
    pub fn add_user(&self, user: TestUser) {
        lock(&self.state).users.insert(user.sub.clone(), user);
    }

    /// Registers a database-connection user who logs in on the login page with `password`.
    pub fn add_user_with_password(&self, user: TestUser, password: &str) {
        let mut s = lock(&self.state);
        s.passwords.insert(user.sub.clone(), login::Password::new(password));
        s.users.insert(user.sub.clone(), user);
    }

    /// The user registered under `email` (any case) on `connection`, e.g. one who signed up on
    /// the login page (`Username-Password-Authentication`).
    #[must_use]
    pub fn user_by_email(&self, connection: &str, email: &str) -> Option<TestUser> {
        lock(&self.state)
            .users
            .values()
            .find(|u| u.connection == connection && u.email.eq_ignore_ascii_case(email))
            .cloned()
    }

    /// Sign-ups on the login page fire this post-registration Action (in the background, once).
    pub fn set_post_registration_action(&self, action: PostRegistrationAction) {
        lock(&self.state).action = Some(action);
    }

    /// Every firing of the post-registration Action so far, in the order they finished.
    #[must_use]
    pub fn action_calls(&self) -> Vec<ActionCall> {
        lock(&self.state).action_calls.clone()
    }

    /// The next `/authorize` signs in this user (registering them if needed), as if they had
    /// typed their password.
    pub fn sign_in_as(&self, user: &TestUser) {
        let mut s = lock(&self.state);
        s.users.insert(user.sub.clone(), user.clone());
        s.next_login = Some(user.sub.clone());
    }

    /// Publishes a brand-new key and signs with it from now on; older keys stay published
    /// (Auth0 keeps the previous key until it is revoked).
    ///
    /// # Errors
    /// When key generation fails.
    pub fn rotate_keys(&self) -> anyhow::Result<String> {
        let key = SigningKey::generate()?;
        let kid = key.kid.clone();
        let mut s = lock(&self.state);
        s.keys.push(key);
        s.signing = s.keys.len() - 1;
        Ok(kid)
    }

    /// Replaces the key published under `kid` with a brand-new one under the same `kid` (a
    /// tenant whose key was re-created, or a JWKS served by a misbehaving proxy); tokens signed
    /// before no longer validate, tokens signed from now on do with the new key. Returns
    /// whether a key had that `kid`.
    ///
    /// # Errors
    /// When key generation fails.
    pub fn replace_key(&self, kid: &str) -> anyhow::Result<bool> {
        let mut fresh = SigningKey::generate()?;
        let mut s = lock(&self.state);
        let Some(key) = s.keys.iter_mut().find(|k| k.kid == kid) else { return Ok(false) };
        fresh.kid = kid.to_owned();
        *key = fresh;
        Ok(true)
    }

    /// Removes a key from the JWKS (tokens it signed stop validating).
    pub fn revoke_key(&self, kid: &str) {
        let mut s = lock(&self.state);
        let signing_kid = s.keys[s.signing].kid.clone();
        s.keys.retain(|k| k.kid != kid || k.kid == signing_kid);
        s.signing = s.keys.iter().position(|k| k.kid == signing_kid).unwrap_or(0);
    }

    /// The kid tokens are signed with now.
    #[must_use]
    pub fn signing_kid(&self) -> String {
        let s = lock(&self.state);
        s.keys[s.signing].kid.clone()
    }

    /// Adds a machine-to-machine application with a grant for the API.
    pub fn add_machine_client(&self, client_id: &str, client_secret: &str) {
        lock(&self.state)
            .config
            .machine_clients
            .push(MachineClient { client_id: client_id.to_owned(), client_secret: client_secret.to_owned() });
    }

    /// An RS256 access token with the given claims.
    ///
    /// # Errors
    /// When signing fails.
    pub fn access_token(&self, spec: &TokenSpec) -> anyhow::Result<String> {
        let s = lock(&self.state);
        let claims = self.access_claims(&s, spec);
        sign(&s.keys[s.signing], spec.typ, &claims)
    }

    /// A client-credentials (machine) token: `sub` is `<client_id>@clients`, `gty` is
    /// `client-credentials`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn machine_token(&self, client_id: &str, scope: &str) -> anyhow::Result<String> {
        let s = lock(&self.state);
        let mut claims = self.access_claims(
            &s,
            &TokenSpec {
                sub: format!("{client_id}@clients"),
                audience: None,
                scope: scope.to_owned(),
                permissions: None,
                email: None,
                typ: TokenType::Jwt,
                expires_in: 86_400,
                not_before_in: None,
            },
        );
        claims["azp"] = json!(client_id);
        claims["gty"] = json!("client-credentials");
        sign(&s.keys[s.signing], TokenType::Jwt, &claims)
    }

    /// A token a resource server must refuse, otherwise like `spec`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn bad_token(&self, kind: BadToken, spec: &TokenSpec) -> anyhow::Result<String> {
        let s = lock(&self.state);
        let mut claims = self.access_claims(&s, spec);
        let key = &s.keys[s.signing];
        match kind {
            BadToken::Expired => {
                claims["iat"] = json!(now() - 3600);
                claims["exp"] = json!(now() - 120);
                sign(key, spec.typ, &claims)
            }
            BadToken::NotYetValid => {
                claims["nbf"] = json!(now() + 300);
                sign(key, spec.typ, &claims)
            }
            BadToken::WrongAudience => {
                claims["aud"] = json!("https://another-api.example");
                sign(key, spec.typ, &claims)
            }
            BadToken::WrongIssuer => {
                claims["iss"] = json!("https://another-tenant.eu.auth0.com/");
                sign(key, spec.typ, &claims)
            }
            BadToken::UnknownKid => sign(&SigningKey::generate()?, spec.typ, &claims),
            BadToken::AlgNone => {
                let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": key.kid}).to_string());
                let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
                Ok(format!("{header}.{payload}."))
            }
            BadToken::Hs256WithPublicKey => {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some(key.kid.clone());
                let secret = EncodingKey::from_secret(key.public_pem().as_bytes());
                Ok(jsonwebtoken::encode(&header, &claims, &secret)?)
            }
            BadToken::TamperedPayload => {
                let token = sign(key, spec.typ, &claims)?;
                let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
                claims["sub"] = json!("auth0|someone-else");
                if let Some(payload) = parts.get_mut(1) {
                    *payload = URL_SAFE_NO_PAD.encode(claims.to_string());
                }
                Ok(parts.join("."))
            }
        }
    }

    fn access_claims(&self, s: &State, spec: &TokenSpec) -> Value {
        let iat = now();
        let aud = match &spec.audience {
            None => json!(s.config.audience),
            Some(Audience::One(a)) => json!(a),
            Some(Audience::Many(list)) => json!(list),
        };
        let mut claims = json!({
            "iss": self.issuer(),
            "sub": spec.sub,
            "aud": aud,
            "iat": iat,
            "exp": iat + spec.expires_in,
            "scope": spec.scope,
            "azp": s.config.client_id,
        });
        if let Some(p) = &spec.permissions {
            claims["permissions"] = json!(p);
        }
        if let Some(e) = &spec.email {
            claims[format!("{CLAIM_NAMESPACE}email")] = json!(e);
        }
        if let Some(nbf) = spec.not_before_in {
            claims["nbf"] = json!(iat + nbf);
        }
        claims
    }

    /// The post-registration Action of this tenant, pointed at identity's webhook.
    #[must_use]
    pub fn post_registration_action(url: &str, secret: &str) -> PostRegistrationAction {
        PostRegistrationAction { url: url.to_owned(), secret: secret.to_owned() }
    }

    /// Stops the tenant's server.
    pub async fn stop(&self) {
        self.served.stop().await;
    }
}

/// Drives identity's webhook the way Hopsbridge's post-user-registration Action does: a JSON
/// POST with the shared secret in [`WEBHOOK_SECRET_HEADER`]. Auth0 runs the Action only for
/// database and passwordless signups, does not wait for it and does not retry it.
#[derive(Clone, Debug)]
pub struct PostRegistrationAction {
    url: String,
    secret: String,
}

impl PostRegistrationAction {
    /// The body the Action sends for `user`.
    #[must_use]
    pub fn body(user: &TestUser) -> PostRegistration {
        PostRegistration {
            user_id: user.sub.clone(),
            email: user.email.clone(),
            email_verified: user.email_verified,
            name: user.name.clone(),
            connection: user.connection.clone(),
            created_at: chrono::Utc::now().to_rfc3339(),
        }
    }

    /// Fires the Action for `user`; returns the webhook's status. Social connections never
    /// fire it, so calling this for one is an error.
    ///
    /// # Errors
    /// For a social user, or when the webhook cannot be reached.
    pub async fn fire(&self, client: &reqwest::Client, user: &TestUser) -> anyhow::Result<u16> {
        anyhow::ensure!(
            !user.sub.starts_with("google-oauth2|"),
            "Auth0 does not run post-registration Actions for social connections"
        );
        let response = client
            .post(&self.url)
            .header(WEBHOOK_SECRET_HEADER, &self.secret)
            .json(&Self::body(user))
            .timeout(std::time::Duration::from_secs(20))
            .send()
            .await?;
        Ok(response.status().as_u16())
    }
}

fn sign(key: &SigningKey, typ: TokenType, claims: &Value) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    header.typ = Some(match typ {
        TokenType::Jwt => "JWT".to_owned(),
        TokenType::AtJwt => "at+jwt".to_owned(),
    });
    Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
}

type Shared = web::Data<Arc<Mutex<State>>>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn client_credentials(sim: &Auth0Sim, id: &str, secret: &str, audience: Option<&str>) -> (u16, Value) {
        let mut form = vec![("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)];
        if let Some(audience) = audience {
            form.push(("audience", audience));
        }
        let response = reqwest::Client::new()
            .post(format!("{}oauth/token", sim.issuer()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(&form).unwrap())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    fn claims_of(token: &str) -> Value {
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_machine_application_gets_a_client_credentials_token_for_the_api_only() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = Auth0Sim::start(Auth0Config::default()).unwrap();
        let api = sim.audience();
        let (status, body) = client_credentials(&sim, ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET, Some(&api)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        let claims = claims_of(body["access_token"].as_str().unwrap());
        assert_eq!(claims["sub"], format!("{ADMIN_CLIENT_ID}@clients"));
        assert_eq!(
            (claims["azp"].as_str(), claims["gty"].as_str()),
            (Some(ADMIN_CLIENT_ID), Some("client-credentials"))
        );
        assert_eq!((claims["aud"].as_str(), claims["iss"].as_str()), (Some(api.as_str()), Some(sim.issuer().as_str())));
        assert!(claims.get(format!("{CLAIM_NAMESPACE}email")).is_none() && claims.get("email").is_none());

        let wrong_secret = client_credentials(&sim, ADMIN_CLIENT_ID, "nope", Some(&api)).await;
        assert_eq!((wrong_secret.0, wrong_secret.1["error"].as_str()), (401, Some("access_denied")));
        let other_api = client_credentials(&sim, ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET, Some("https://other")).await;
        assert_eq!((other_api.0, other_api.1["error"].as_str()), (403, Some("access_denied")));
        let no_audience = client_credentials(&sim, ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET, None).await;
        assert_eq!((no_audience.0, no_audience.1["error"].as_str()), (403, Some("access_denied")));
        let cfg = Auth0Config::default();
        let frontend = client_credentials(&sim, &cfg.client_id, &cfg.client_secret, Some(&api)).await;
        assert_eq!((frontend.0, frontend.1["error"].as_str()), (403, Some("access_denied")), "no client grant");

        sim.add_machine_client("ci-robot", "ci-secret");
        let (status, body) = client_credentials(&sim, "ci-robot", "ci-secret", Some(&api)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(claims_of(body["access_token"].as_str().unwrap())["sub"], "ci-robot@clients");
    }
}
