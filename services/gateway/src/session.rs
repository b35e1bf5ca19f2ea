//! Browser sessions: the login flow and the encrypted cookies it leaves.
//!
//! `GET /api/auth/login?returnTo=/path` starts Auth0's authorization code flow with PKCE, a
//! random `state` and `nonce`, kept in a short-lived encrypted cookie. `GET /api/auth/callback`
//! checks the state, exchanges the code with the PKCE verifier, validates the ID token
//! (signature, issuer, audience, nonce) and the access token, then sets the session cookie and
//! redirects to the relative path the login started from (anything else goes to `/`).
//! `GET /api/auth/session` tells the frontend who is signed in and its CSRF token;
//! `GET /api/auth/logout` clears the session and signs out of Auth0.
//!
//! Cookies are sealed by the `cookie` crate's private jar (AES-256-GCM with a random nonce; the
//! cookie name is the associated data, so one cannot stand in for the other) and are
//! `HttpOnly; Secure; SameSite=Lax`. A request authenticated by the session cookie that changes
//! something must carry the session's CSRF token in `x-csrf-token`.

use crate::error::GatewayCode;
use crate::tokens::LazyValidator;
use actix_web::cookie::{Cookie, CookieJar, Key, SameSite, time::Duration as CookieDuration};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hopsbridge_domain::AuthSubject;
use hopsbridge_platform::caller::CallerSigner;
use hopsbridge_platform::http::{ApiError, ErrorCode as _};
use hopsbridge_platform::{Secret, constant_time_eq};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The session cookie.
pub const SESSION_COOKIE: &str = "hb_session";
/// The cookie that carries a login in progress.
pub const LOGIN_COOKIE: &str = "hb_login";
/// The header a cookie-authenticated change must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
const LOGIN_TTL_SECS: i64 = 600;

/// Seals and opens cookie values with the `cookie` crate's private jar.
#[derive(Clone)]
pub struct CookieSealer(Key);

impl std::fmt::Debug for CookieSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSealer")
    }
}

impl CookieSealer {
    /// A sealer whose key is derived from `secret` (`login.cookie_key`, at least 32 bytes) by
    /// [`Key::derive_from`]: HKDF-SHA256 over the secret, of which the private jar uses 32
    /// bytes as its AES-256-GCM key. Cookies sealed before the gateway used the private jar (an
    /// AES-256-GCM key that was the secret's SHA-256) no longer open: their holders sign in
    /// again.
    ///
    /// # Errors
    /// When `secret` is shorter than 32 bytes.
    pub fn new(secret: &Secret<String>) -> anyhow::Result<Self> {
        let secret = secret.expose().as_bytes();
        anyhow::ensure!(secret.len() >= 32, "the cookie key must be at least 32 bytes");
        Ok(Self(Key::derive_from(secret)))
    }

    /// `value` as the sealed content of cookie `name`.
    #[must_use]
    pub fn seal<T: Serialize>(&self, name: &str, value: &T) -> String {
        let plain = serde_json::to_string(value).unwrap_or_default();
        let mut jar = CookieJar::new();
        jar.private_mut(&self.0).add(Cookie::new(name.to_owned(), plain));
        jar.get(name).map(|sealed| sealed.value().to_owned()).unwrap_or_default()
    }

    /// The content of cookie `name`, if it was sealed by this key for this name.
    #[must_use]
    pub fn open<T: DeserializeOwned>(&self, name: &str, sealed: &str) -> Option<T> {
        let jar = CookieJar::new();
        let plain = jar.private(&self.0).decrypt(Cookie::new(name.to_owned(), sealed.to_owned()))?;
        serde_json::from_str(plain.value()).ok()
    }
}

/// A signed-in browser.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// The Auth0 access token the session stands for.
    pub access_token: String,
    /// The person's Auth0 subject.
    pub subject: AuthSubject,
    /// The CSRF token changes must echo.
    pub csrf: String,
    /// When the session ends (the access token's expiry), Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LoginInProgress {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    expires_at: i64,
}

/// The login settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The frontend application's Auth0 client id; empty turns browser login off.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: Secret<String>,
    /// This gateway's callback URL, as registered with Auth0, e.g.
    /// `https://app.hopsbridge.example/api/auth/callback`.
    pub callback_url: String,
    /// Where Auth0 sends the browser after logout (registered as an allowed logout URL).
    pub post_logout_url: String,
    /// The key session cookies are sealed with (at least 32 characters). Required with login.
    pub cookie_key: Secret<String>,
}

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// What the login routes share.
#[derive(Debug)]
pub struct Login {
    config: LoginConfig,
    issuer: String,
    audience: String,
    http: reqwest::Client,
    /// Seals cookies.
    pub sealer: CookieSealer,
    /// Checks the access token Auth0 hands over before it becomes a session.
    tokens: Arc<LazyValidator>,
    client: tokio::sync::OnceCell<Client>,
    /// identity's base URL and the key requests to it are signed with: each sign-in is
    /// announced there ([`crate::callers::SIGNED_IN_PATH`]).
    identity: Option<(String, CallerSigner)>,
}

/// An HTTP failure as openidconnect's client interface wants it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl Login {
    /// Login for the tenant at `issuer`, issuing access tokens for `audience`, which `tokens`
    /// validates.
    ///
    /// # Errors
    /// When `login.cookie_key` is shorter than 32 bytes.
    pub fn new(
        config: LoginConfig,
        issuer: &str,
        audience: &str,
        http: reqwest::Client,
        tokens: Arc<LazyValidator>,
    ) -> anyhow::Result<Self> {
        let sealer = CookieSealer::new(&config.cookie_key)?;
        Ok(Self {
            config,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            http,
            sealer,
            tokens,
            client: tokio::sync::OnceCell::new(),
            identity: None,
        })
    }

    /// Announces each sign-in to identity at `url` (its base URL), signed with `key`.
    #[must_use]
    pub fn announcing_to(mut self, url: &str, key: CallerSigner) -> Self {
        self.identity = Some((url.trim_end_matches('/').to_owned(), key));
        self
    }

    fn http_client(
        &self,
    ) -> impl Fn(
        openidconnect::HttpRequest,
    ) -> futures::future::BoxFuture<'static, Result<openidconnect::HttpResponse, HttpError>>
    + use<> {
        let http = self.http.clone();
        move |request: openidconnect::HttpRequest| {
            let http = http.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
                    .map_err(|e| HttpError(e.to_string()))?;
                let mut outgoing = http.request(method, parts.uri.to_string()).body(body);
                for (name, value) in &parts.headers {
                    outgoing = outgoing.header(name.as_str(), value.as_bytes());
                }
                let response = outgoing.send().await.map_err(|e| HttpError(e.to_string()))?;
                let mut builder = http::Response::builder().status(response.status().as_u16());
                for (name, value) in response.headers() {
                    builder = builder.header(name.as_str(), value.as_bytes());
                }
                let body = response.bytes().await.map_err(|e| HttpError(e.to_string()))?;
                builder.body(body.to_vec()).map_err(|e| HttpError(e.to_string()))
            })
        }
    }

    async fn client(&self) -> Result<&Client, ApiError> {
        self.client
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(self.issuer.clone()).map_err(|e| anyhow::anyhow!("issuer: {e}"))?;
                let metadata = CoreProviderMetadata::discover_async(issuer, &self.http_client())
                    .await
                    .map_err(|e| anyhow::anyhow!("discovery: {e}"))?;
                let client = CoreClient::from_provider_metadata(
                    metadata,
                    ClientId::new(self.config.client_id.clone()),
                    Some(ClientSecret::new(self.config.client_secret.expose().clone())),
                )
                .set_redirect_uri(
                    RedirectUrl::new(self.config.callback_url.clone()).map_err(|e| anyhow::anyhow!("callback: {e}"))?,
                );
                Ok::<_, anyhow::Error>(client)
            })
            .await
            .map_err(|e: anyhow::Error| {
                tracing::warn!(error = %e, "Auth0 login unavailable");
                GatewayCode::LoginUnavailable.error()
            })
    }
}

fn cookie(name: &'static str, value: String, max_age_secs: i64, path: &'static str) -> Cookie<'static> {
    Cookie::build(name, value)
        .path(path)
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(max_age_secs))
        .finish()
}

/// The relative path to return to, or `/`: never another origin (`//host`, `/\host`,
/// `https://…`).
#[must_use]
pub fn safe_return_to(raw: Option<&str>) -> String {
    match raw {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && !p.chars().any(|c| c.is_control() || c == '\\') =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// `?returnTo=` of the login route.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Where to go after signing in: a relative path, else `/`.
    #[serde(rename = "returnTo")]
    pub return_to: Option<String>,
}

/// `GET /api/auth/login`.
pub async fn login(state: web::Data<Login>, query: web::Query<LoginQuery>) -> Result<HttpResponse, ApiError> {
    let client = state.client().await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .add_extra_param("audience", state.audience.clone())
        .set_pkce_challenge(challenge)
        .url();
    let pending = LoginInProgress {
        state: csrf.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        return_to: safe_return_to(query.return_to.as_deref()),
        expires_at: chrono::Utc::now().timestamp() + LOGIN_TTL_SECS,
    };
    let sealed = state.sealer.seal(LOGIN_COOKIE, &pending);
    Ok(HttpResponse::Found()
        .insert_header(("location", url.to_string()))
        .cookie(cookie(LOGIN_COOKIE, sealed, LOGIN_TTL_SECS, "/api/auth"))
        .finish())
}

/// What Auth0 appends to the callback URL.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    /// The authorization code.
    pub code: Option<String>,
    /// The state the login started with.
    pub state: Option<String>,
    /// Auth0's error, when it refused.
    pub error: Option<String>,
}

/// `GET /api/auth/callback`.
pub async fn callback(
    state: web::Data<Login>,
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    let bad_state = || GatewayCode::InvalidLoginState.error();
    let pending: LoginInProgress =
        req.cookie(LOGIN_COOKIE).and_then(|c| state.sealer.open(LOGIN_COOKIE, c.value())).ok_or_else(bad_state)?;
    if pending.expires_at < chrono::Utc::now().timestamp()
        || !constant_time_eq(query.state.as_deref().unwrap_or_default().as_bytes(), pending.state.as_bytes())
    {
        return Err(bad_state());
    }
    if let Some(error) = &query.error {
        return Err(GatewayCode::LoginFailed.with_message(format!("Auth0 refused the sign-in: {error}")));
    }
    let code = query.code.clone().ok_or_else(|| GatewayCode::LoginFailed.with_message("no authorization code"))?;
    let client = state.client().await?;
    let failed = |e: &dyn std::fmt::Display| {
        tracing::info!(error = %e, "sign-in failed");
        GatewayCode::LoginFailed.error()
    };
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| failed(&e))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
        .request_async(&state.http_client())
        .await
        .map_err(|e| failed(&e))?;
    let id_token = response.id_token().ok_or_else(|| failed(&"no ID token"))?;
    let claims =
        id_token.claims(&client.id_token_verifier(), &Nonce::new(pending.nonce.clone())).map_err(|e| failed(&e))?;
    let access_token = response.access_token().secret().clone();
    let access =
        state.tokens.get().await.map_err(|e| failed(&e))?.validate(&access_token).await.map_err(|e| failed(&e))?;
    if access.subject.as_str() != claims.subject().as_str() {
        return Err(failed(&"the ID and access tokens name different people"));
    }
    announce_sign_in(&state, &access).await;
    let session = Session {
        access_token,
        subject: access.subject.clone(),
        csrf: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>()),
        expires_at: access.expires_at,
    };
    let max_age = (session.expires_at - chrono::Utc::now().timestamp()).max(0);
    let sealed = state.sealer.seal(SESSION_COOKIE, &session);
    Ok(HttpResponse::Found()
        .insert_header(("location", pending.return_to.clone()))
        .cookie(cookie(SESSION_COOKIE, sealed, max_age, "/"))
        .cookie(cookie(LOGIN_COOKIE, String::new(), 0, "/api/auth"))
        .finish())
}

/// Tells identity that the person of `access` signed in, once per sign-in (plain API calls
/// resolve the caller through another route): identity announces it (`UserSignedInV1`) for
/// each service to complete what earlier steps left undone. A failure does not stop the
/// sign-in; it is logged, and the next sign-in announces it again.
async fn announce_sign_in(state: &Login, access: &crate::tokens::AccessClaims) {
    let Some((url, key)) = &state.identity else { return };
    let person = crate::callers::PersonKey { issuer: access.issuer.clone(), subject: access.subject.clone() };
    let url = format!("{url}{}", crate::callers::SIGNED_IN_PATH);
    let asked = crate::callers::ask_identity_at(
        crate::callers::SIGNED_IN_PATH,
        state.http.clone(),
        url,
        key.clone(),
        person,
        access.email.clone(),
    )
    .await;
    if let Err(e) = asked {
        tracing::warn!(error = %e, "identity was not told of a sign-in");
    }
}

/// The session a request's cookie carries, if it is valid and unexpired.
#[must_use]
pub fn session_of(sealer: &CookieSealer, req: &HttpRequest) -> Option<Session> {
    let session: Session = sealer.open(SESSION_COOKIE, req.cookie(SESSION_COOKIE)?.value())?;
    (session.expires_at > chrono::Utc::now().timestamp()).then_some(session)
}

/// True when a cookie-authenticated request may go ahead: safe methods always, changes only
/// with the session's CSRF token.
#[must_use]
pub fn csrf_ok(req: &HttpRequest, session: &Session) -> bool {
    let safe = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    safe || req.headers().get(CSRF_HEADER).is_some_and(|v| constant_time_eq(v.as_bytes(), session.csrf.as_bytes()))
}

/// `GET /api/auth/session`.
pub async fn current(state: web::Data<Login>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let session =
        session_of(&state.sealer, &req).ok_or_else(|| GatewayCode::Unauthenticated.with_message("not signed in"))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "subject": session.subject,
        "csrf_token": session.csrf,
        "expires_at": session.expires_at,
    })))
}

/// `GET /api/auth/logout`: clears the session and signs out of Auth0.
pub async fn logout(state: web::Data<Login>) -> HttpResponse {
    let target = format!(
        "{}v2/logout?{}",
        state.issuer,
        serde_urlencoded::to_string([
            ("client_id", state.config.client_id.as_str()),
            ("returnTo", state.config.post_logout_url.as_str())
        ])
        .unwrap_or_default()
    );
    HttpResponse::Found()
        .insert_header(("location", target))
        .cookie(cookie(SESSION_COOKIE, String::new(), 0, "/"))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_never_leaves_the_origin() {
        assert_eq!(safe_return_to(Some("/billing?tab=1")), "/billing?tab=1");
        for hostile in ["https://evil.example/", "//evil.example", "/\\evil.example", "evil", "/a\\b", "/a\nb"] {
            assert_eq!(safe_return_to(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn a_cookie_opens_only_under_its_own_name_and_key() {
        let key = Secret::new("k".repeat(32));
        let sealer = CookieSealer::new(&key).unwrap();
        let sealed = sealer.seal(SESSION_COOKIE, &"hello");
        assert_eq!(sealer.open::<String>(SESSION_COOKIE, &sealed).as_deref(), Some("hello"));
        assert!(sealer.open::<String>(LOGIN_COOKIE, &sealed).is_none(), "bound to its name");
        assert!(
            CookieSealer::new(&Secret::new("x".repeat(32))).unwrap().open::<String>(SESSION_COOKIE, &sealed).is_none()
        );
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(sealer.open::<String>(SESSION_COOKIE, &String::from_utf8(tampered).unwrap()).is_none());
    }
}
