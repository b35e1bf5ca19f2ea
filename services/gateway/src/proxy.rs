//! Forwarding the public API to the service that owns each route.
//!
//! For every `/api/…` request: rate-limit by client IP; require `Authorization: Bearer <Auth0
//! access token>` and validate it; rate-limit by person; resolve the person through identity
//! (cached for `limits.caller_cache_secs`), refusing suspended and deleted accounts; then
//! forward the request to the owning service with the caller's identity in headers signed with
//! the key the services share, the request id and the trace context. Client-sent
//! `x-hopsbridge-*` headers, cookies and the token itself never reach a service.
//!
//! Only the prefixes in [`Routes`] are forwarded, and only when the path arrives as it will be
//! sent (no dot segments, nothing the URL parser would rewrite), so no request reaches a
//! service's `/internal/...` routes, which are for the services themselves (decision 0026).
//!
//! Two `/api/…` routes are public: `GET /api/invitations/{token}`, an invitation's preview, which
//! its link's holder opens before signing in (decision 0035), and `GET /api/pricing`, the price
//! list (decision 0038). Exactly those methods and path shapes (for the preview one segment of
//! base64url characters; no query) are forwarded without a token, under the per-address limit
//! only and with no caller headers; every other route, accepting an invitation included, needs a
//! token as usual.
//!
//! A machine client's client-credentials token (decision 0045) opens only `/api/admin/…`, and
//! only when its client id is in `admin.machine_clients`: the request goes on signed as an admin
//! service principal ([`Caller::machine_admin`]: subject `client:<id>`, the token's issuer, role admin,
//! no user id, no email); nobody is resolved through identity and no account is made. Another
//! client's token is 403 `machine_client_not_admin`, a granted one on any other route 403
//! `machine_client_admin_only`; a token that does not verify stays 401 `invalid_token`.

use crate::callers::{CallerCache, PersonKey, Resolved};
use crate::error::GatewayCode;
use crate::limits::{RateLimiter, too_many_requests};
use crate::session::CookieSealer;
use crate::tokens::LazyValidator;
use actix_web::http::StatusCode;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use futures::StreamExt;
use hopsbridge_contracts::Service;
use hopsbridge_domain::AccountStatus;
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_platform::http::{ApiError, ErrorCode as _};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Which service owns which path prefix.
#[derive(Clone, Debug)]
pub struct Routes {
    table: Vec<(&'static str, Upstream)>,
    identity: Upstream,
    billing: Upstream,
}

/// One service's base URL, parsed once here: a forwarded request's URL is this one with its
/// path and query replaced, which does not parse the scheme and host again.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    base: String,
    url: reqwest::Url,
    /// The base URL's path without a trailing slash.
    path: String,
}

impl Upstream {
    /// `None` unless `base` is an http(s) URL with a host (configuration is checked with this).
    pub(crate) fn new(base: &str) -> Option<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())?;
        let path = url.path().trim_end_matches('/').to_owned();
        Some(Self { base, url, path })
    }
}

impl Routes {
    /// The routing table over the configured upstream base URLs; `None` when one of them is
    /// not an http(s) URL.
    #[must_use]
    pub fn new(upstreams: &crate::Upstreams) -> Option<Self> {
        let base = Upstream::new;
        Some(Self {
            table: vec![
                ("/api/me", base(&upstreams.identity)?),
                ("/api/admin/users", base(&upstreams.identity)?),
                ("/api/team", base(&upstreams.team)?),
                ("/api/invitations", base(&upstreams.team)?),
                ("/api/billing", base(&upstreams.billing)?),
                ("/api/credits", base(&upstreams.billing)?),
                ("/api/pricing", base(&upstreams.billing)?),
                ("/api/admin/prices", base(&upstreams.billing)?),
                ("/api/admin/billing", base(&upstreams.billing)?),
                ("/api/cluster", base(&upstreams.provisioning)?),
                ("/api/admin/clusters", base(&upstreams.provisioning)?),
                ("/api/admin/assignments", base(&upstreams.provisioning)?),
                ("/api/usage", base(&upstreams.metering)?),
                ("/api/admin/metering", base(&upstreams.metering)?),
                ("/api/admin/usage", base(&upstreams.metering)?),
                // Each service's own mail outbox (platform::mail).
                ("/api/admin/mail/identity", base(&upstreams.identity)?),
                ("/api/admin/mail/team", base(&upstreams.team)?),
                ("/api/admin/mail/billing", base(&upstreams.billing)?),
                ("/api/admin/mail/provisioning", base(&upstreams.provisioning)?),
                ("/api/admin/mail/metering", base(&upstreams.metering)?),
                // Each service's own dead letters (platform::events::dead_letters).
                ("/api/admin/dead-letters/identity", base(&upstreams.identity)?),
                ("/api/admin/dead-letters/team", base(&upstreams.team)?),
                ("/api/admin/dead-letters/billing", base(&upstreams.billing)?),
                ("/api/admin/dead-letters/provisioning", base(&upstreams.provisioning)?),
                ("/api/admin/dead-letters/metering", base(&upstreams.metering)?),
                // Each service's own integrity checks (platform::integrity).
                ("/api/admin/integrity/identity", base(&upstreams.identity)?),
                ("/api/admin/integrity/team", base(&upstreams.team)?),
                ("/api/admin/integrity/billing", base(&upstreams.billing)?),
                ("/api/admin/integrity/provisioning", base(&upstreams.provisioning)?),
                ("/api/admin/integrity/metering", base(&upstreams.metering)?),
            ],
            identity: base(&upstreams.identity)?,
            billing: base(&upstreams.billing)?,
        })
    }

    pub(crate) fn upstream(&self, path: &str) -> Option<&Upstream> {
        self.route(path).map(|(_, upstream)| upstream)
    }

    /// The prefix `path` is routed by, and its upstream.
    fn route(&self, path: &str) -> Option<(&'static str, &Upstream)> {
        self.table
            .iter()
            .find(|(prefix, _)| path == *prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')))
            .map(|(prefix, upstream)| (*prefix, upstream))
    }
}

/// The HTTP client one actix worker forwards with. Every worker builds its own, so a pooled
/// connection's I/O runs on the worker thread that uses it instead of waking another thread
/// for each forwarded request (a shared client hands a connection opened by one worker to the
/// others, and every request on it then crosses threads twice).
#[derive(Clone, Debug)]
pub struct WorkerClient(pub(crate) reqwest::Client);

impl WorkerClient {
    /// A client for the services: no redirects, a 30 s bound, a pool per worker whose idle
    /// connections are dropped after 30 s, well before a service closes them (120 s), so a
    /// request never goes out on a connection the service is closing.
    ///
    /// # Errors
    /// When the TLS backend cannot be set up.
    pub fn build() -> reqwest::Result<Self> {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(Self)
    }
}

/// What the forwarding handler needs.
#[derive(Debug)]
pub struct Proxy {
    /// The routing table.
    pub routes: Routes,
    /// Auth0 token validation.
    pub tokens: Arc<LazyValidator>,
    /// The gateway's private key, that caller headers are signed with.
    pub key: CallerSigner,
    /// Requests a minute per person (issuer and subject).
    pub per_user: RateLimiter<PersonKey>,
    /// Requests a minute per client address (requests without one share a budget).
    pub per_ip: RateLimiter<Option<IpAddr>>,
    /// Largest request body forwarded.
    pub max_body_bytes: usize,
    /// Opens session cookies, when browser login is configured.
    pub sessions: Option<CookieSealer>,
    /// Requests a minute per machine client (issuer and client id), as for a person.
    pub per_client: RateLimiter<(String, String)>,
    /// Machine clients granted the admin role (`admin.machine_clients`).
    pub machine_admins: HashSet<String>,
    /// Who each person is, as identity last answered.
    callers: CallerCache,
}

impl Proxy {
    /// A proxy over `routes`.
    #[must_use]
    pub fn new(
        routes: Routes,
        tokens: Arc<LazyValidator>,
        key: CallerSigner,
        limits: &crate::LimitsConfig,
        max_body_bytes: usize,
        sessions: Option<CookieSealer>,
        machine_admins: HashSet<String>,
    ) -> Self {
        Self {
            routes,
            tokens,
            key,
            per_user: RateLimiter::per_minute(limits.per_user_per_minute),
            per_client: RateLimiter::per_minute(limits.per_user_per_minute),
            machine_admins,
            per_ip: RateLimiter::per_minute(limits.per_ip_per_minute),
            max_body_bytes,
            sessions,
            callers: CallerCache::new(Duration::from_secs(limits.caller_cache_secs)),
        }
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Headers that describe one hop, not the message, and never cross a proxy; plus what must not
/// reach a service from the client.
fn forwardable(name: &str) -> bool {
    !matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "authorization"
            | "cookie"
            | "x-request-id"
            | "traceparent"
            | "tracestate"
    ) && !name.starts_with("x-hopsbridge-")
}

/// The Auth0 post-registration Action's route.
const AUTH0_WEBHOOK: &str = "/webhooks/auth0/post-registration";

/// Webhooks from outside carry no token: the service that owns each one checks its signature
/// (identity the Auth0 Action's shared secret, billing the `Stripe-Signature`). The gateway
/// forwards the raw body untouched, under the per-address limit only. To the Auth0 Action's
/// call it adds, signed as the gateway, the issuer of the tenant it trusts: the people the
/// Action announces are that tenant's, and identity keys people by issuer and subject.
pub async fn forward_webhook(
    proxy: web::Data<Proxy>,
    client: web::Data<WorkerClient>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let upstream = match req.uri().path() {
        AUTH0_WEBHOOK => proxy.routes.identity.base.as_str(),
        "/webhooks/stripe" => proxy.routes.billing.base.as_str(),
        _ => return Err(GatewayCode::RouteNotFound.error()),
    };
    if let Err(wait) = proxy.per_ip.check(&req.peer_addr().map(|a| a.ip())) {
        return Ok(too_many_requests(wait));
    }
    let body = read_body(&mut payload, proxy.max_body_bytes).await?;
    let mut outgoing = client.0.post(format!("{upstream}{}", req.uri().path()));
    for (name, value) in req.headers() {
        if forwardable(name.as_str()) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    if let Some(id) = hopsbridge_platform::http::current_request_id() {
        outgoing = outgoing.header("x-request-id", id);
    }
    if req.uri().path() == AUTH0_WEBHOOK {
        let tenant = Caller { issuer: Some(proxy.tokens.issuer().to_owned()), ..Caller::service(Service::Gateway) };
        let now = chrono::Utc::now().timestamp();
        for (name, value) in proxy.key.sign_with_body("POST", req.uri().path(), &body, &tenant, now) {
            outgoing = outgoing.header(name, value);
        }
    }
    relay_answer(outgoing.body(body), upstream).await
}

/// The whole request body, up to `max_bytes`.
async fn read_body(payload: &mut web::Payload, max_bytes: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| GatewayCode::InvalidBody.error())?;
        if body.len() + chunk.len() > max_bytes {
            return Err(GatewayCode::PayloadTooLarge.error());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The `/api/…` handler.
pub async fn forward(
    proxy: web::Data<Proxy>,
    client: web::Data<WorkerClient>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let path = req.uri().path();
    if let Some(allowed) = crate::api_doc::methods_of(path)
        && !allowed.contains(&req.method().as_str())
    {
        return Ok(method_not_allowed(&allowed));
    }
    let Some((prefix, upstream)) = proxy.routes.route(path) else {
        return Err(GatewayCode::RouteNotFound.error());
    };
    // Metrics count forwarded requests by the prefix they were routed by (a bounded set).
    req.extensions_mut().insert(hopsbridge_platform::metrics::http::RouteLabel(prefix));
    let path_and_query = req.uri().path_and_query().map_or(path, |pq| pq.as_str());
    let target = Target::new(upstream, path_and_query).ok_or_else(|| GatewayCode::InvalidPath.error())?;
    if is_public(req.method(), path_and_query) {
        if let Err(wait) = proxy.per_ip.check(&req.peer_addr().map(|a| a.ip())) {
            return Ok(too_many_requests(wait));
        }
        return send(&proxy, &client, &req, &target, None, web::Bytes::new()).await;
    }
    let caller = match authenticate(&proxy, &client, &req, path).await? {
        Ok(Authenticated::Person(caller, _)) | Ok(Authenticated::Machine(caller)) => caller,
        Err(limited) => return Ok(limited),
    };
    let body = read_body(&mut payload, proxy.max_body_bytes).await?;
    send(&proxy, &client, &req, &target, Some(&caller), body).await
}

/// 405 for a documented path asked with another method (TRACE included: nothing is forwarded
/// or echoed), with `Allow` naming the methods the document gives it.
fn method_not_allowed(allowed: &[&str]) -> HttpResponse {
    use actix_web::ResponseError as _;
    let mut answer = GatewayCode::MethodNotAllowed.error().error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")) {
        answer.headers_mut().insert(actix_web::http::header::ALLOW, value);
    }
    answer
}

/// The longest invitation token the public preview route takes (team's are 43 characters).
const MAX_PUBLIC_TOKEN: usize = 64;

/// True for the public `/api/…` requests: `GET /api/invitations/{token}`, with the token one
/// segment of base64url characters and no query, and `GET /api/pricing` with no query.
pub(crate) fn is_public(method: &actix_web::http::Method, path_and_query: &str) -> bool {
    if method != actix_web::http::Method::GET {
        return false;
    }
    if path_and_query == "/api/pricing" {
        return true;
    }
    let token = path_and_query.strip_prefix("/api/invitations/").unwrap_or_default();
    (1..=MAX_PUBLIC_TOKEN).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where a request is forwarded: the upstream, the path and query the gateway routed on and
/// signs, and the URL that carries exactly them.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    pub(crate) upstream: &'a str,
    pub(crate) path_and_query: &'a str,
    pub(crate) url: reqwest::Url,
}

impl<'a> Target<'a> {
    /// `None` when the URL would not carry `path_and_query` unchanged. Parsing a URL resolves
    /// dot segments (`..`, `%2e%2e`, `.%2E`), reads `\` as `/` and percent-encodes some
    /// characters, so such a path would reach another route than the one the gateway chose:
    /// `/api/me/../../internal/…` would leave `/api` for a service's internal routes.
    pub(crate) fn new(upstream: &'a Upstream, path_and_query: &'a str) -> Option<Self> {
        let base_path = &upstream.path;
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = upstream.url.clone();
        url.set_path(&format!("{base_path}{path}"));
        url.set_query(query);
        let unchanged = url.path().strip_prefix(base_path.as_str()) == Some(path) && url.query() == query;
        unchanged.then_some(Self { upstream: upstream.base.as_str(), path_and_query, url })
    }
}

/// `GET /api/auth/caller`: who the gateway takes the caller to be (subject, user id, roles),
/// answered by the gateway itself from the token and the cached resolution.
pub async fn caller(
    proxy: web::Data<Proxy>,
    client: web::Data<WorkerClient>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (caller, person) = match authenticate(&proxy, &client, &req, req.uri().path()).await? {
        Ok(Authenticated::Person(caller, person)) => (caller, person),
        Ok(Authenticated::Machine(_)) => return Err(GatewayCode::MachineClientAdminOnly.error()),
        Err(limited) => return Ok(limited),
    };
    let roles: Vec<&str> = caller.roles.iter().map(|r| r.as_str()).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "subject": caller.subject,
        "issuer": caller.issuer,
        "user_id": person.id,
        "email": person.email,
        "roles": roles,
        "account_owner_id": person.account_owner_id,
    })))
}

/// True for the admin routes, the only ones a machine client may reach.
pub(crate) fn is_admin_route(path: &str) -> bool {
    path.starts_with("/api/admin/")
}

/// True for the billing page's routes (`/api/billing…`, `/api/credits…`): where a suspension
/// billing made is resolved (a card, credits, a plan, a cap), so a suspended person still
/// reaches them; billing decides what they may do there.
pub(crate) fn resolves_suspension(path: &str) -> bool {
    ["/api/billing", "/api/credits"]
        .iter()
        .any(|prefix| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// Who a request comes from, once its token checked out.
pub(crate) enum Authenticated {
    /// A person, as identity knows them.
    Person(Caller, Resolved),
    /// A granted machine client on an admin route.
    Machine(Caller),
}

/// Rate limits, the token (bearer, or the session cookie with CSRF for changes), the person
/// behind it and their roles, or the granted machine client on an admin route, for a request
/// to `path`. `Ok(Err(response))` is a rate-limit answer.
async fn authenticate(
    proxy: &Proxy,
    client: &WorkerClient,
    req: &HttpRequest,
    path: &str,
) -> Result<Result<Authenticated, HttpResponse>, ApiError> {
    if let Err(wait) = proxy.per_ip.check(&req.peer_addr().map(|a| a.ip())) {
        return Ok(Err(too_many_requests(wait)));
    }
    // A bearer token (API clients), else the browser's session cookie (then changes need the
    // session's CSRF token).
    let token = match bearer(req) {
        Some(token) => token.to_owned(),
        None => {
            let session = proxy.sessions.as_ref().and_then(|sealer| crate::session::session_of(sealer, req));
            let session = session.ok_or_else(|| GatewayCode::Unauthenticated.error())?;
            if !crate::session::csrf_ok(req, &session) {
                return Err(GatewayCode::CsrfFailed.error());
            }
            session.access_token
        }
    };
    authenticate_token(proxy, client, &token, path).await
}

/// [`authenticate`] once the access token is known (a bearer's, or a session's the caller has
/// already checked): the token, the person behind it and their roles, or the granted machine
/// client on an admin route, for a request to `path`. A suspended person is refused except on
/// the billing page's routes ([`resolves_suspension`]). `Ok(Err(response))` is a rate-limit
/// answer.
pub(crate) async fn authenticate_token(
    proxy: &Proxy,
    client: &WorkerClient,
    token: &str,
    path: &str,
) -> Result<Result<Authenticated, HttpResponse>, ApiError> {
    let bearer = match proxy.tokens.get().await {
        Ok(validator) => validator.validate_bearer(token).await.map_err(|e| {
            tracing::info!(reason = %e, "access token refused");
            GatewayCode::InvalidToken.error()
        })?,
        Err(e) => {
            tracing::warn!(error = %e, "Auth0 discovery unavailable");
            return Err(GatewayCode::AuthUnavailable.error());
        }
    };
    let claims = match bearer {
        crate::tokens::Bearer::Person(claims) => claims,
        crate::tokens::Bearer::Machine(machine) => {
            if !proxy.machine_admins.contains(&machine.client_id) {
                tracing::info!(client_id = %machine.client_id, "machine client refused: not granted the admin role");
                return Err(GatewayCode::MachineClientNotAdmin.error());
            }
            if !is_admin_route(path) {
                return Err(GatewayCode::MachineClientAdminOnly.error());
            }
            if let Err(wait) = proxy.per_client.check(&(machine.issuer.clone(), machine.client_id.clone())) {
                return Ok(Err(too_many_requests(wait)));
            }
            return Ok(Ok(Authenticated::Machine(Caller::machine_admin(&machine.issuer, &machine.client_id))));
        }
    };
    let key = PersonKey { issuer: claims.issuer.clone(), subject: claims.subject.clone() };
    if let Err(wait) = proxy.per_user.check(&key) {
        return Ok(Err(too_many_requests(wait)));
    }
    let person = resolve(proxy, client, key, claims.email.clone()).await?;
    match person.status {
        AccountStatus::Active => {}
        AccountStatus::Suspended if !resolves_suspension(path) => return Err(GatewayCode::AccountSuspended.error()),
        AccountStatus::Suspended => {}
        AccountStatus::Deleted => return Err(GatewayCode::AccountDeleted.error()),
    }
    let caller = Caller {
        subject: claims.subject.to_string(),
        issuer: Some(claims.issuer.clone()),
        user_id: Some(person.id),
        roles: roles_of(&person),
        email: Some(person.email.clone()),
    };
    Ok(Ok(Authenticated::Person(caller, person)))
}

/// A person's roles: user, owner or member, and admin when identity says so. Never
/// [`Role::Service`]: that role is only ever signed by a service for itself.
fn roles_of(person: &Resolved) -> Vec<Role> {
    let owner = if person.account_owner_id == person.id.as_owner() { Role::Owner } else { Role::Member };
    let mut roles = vec![Role::User, owner];
    if person.is_admin {
        roles.push(Role::Admin);
    }
    roles
}

async fn send(
    proxy: &Proxy,
    client: &WorkerClient,
    req: &HttpRequest,
    target: &Target<'_>,
    caller: Option<&Caller>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| GatewayCode::InvalidMethod.error())?;
    let mut outgoing = client.0.request(method, target.url.clone());
    for (name, value) in req.headers() {
        if forwardable(name.as_str()) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    if let Some(caller) = caller {
        let now = chrono::Utc::now().timestamp();
        for (name, value) in proxy.key.sign_with_body(req.method().as_str(), target.path_and_query, &body, caller, now)
        {
            outgoing = outgoing.header(name, value);
        }
    }
    if let Some(id) = hopsbridge_platform::http::current_request_id() {
        outgoing = outgoing.header("x-request-id", id);
    }
    for (name, value) in hopsbridge_platform::telemetry::trace_context_of(&tracing::Span::current()) {
        outgoing = outgoing.header(name, value);
    }
    relay_answer(outgoing.body(body), target.upstream).await
}

/// Sends a prepared request and hands its answer back to the client.
async fn relay_answer(outgoing: reqwest::RequestBuilder, upstream: &str) -> Result<HttpResponse, ApiError> {
    let response = outgoing.send().await.map_err(|e| {
        tracing::warn!(error = %e, upstream, "upstream unreachable");
        GatewayCode::UpstreamUnavailable.error()
    })?;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut answer = HttpResponse::build(status);
    for (name, value) in response.headers() {
        if forwardable(name.as_str()) && name.as_str() != "date" {
            answer.insert_header((name.as_str(), value.as_bytes()));
        }
    }
    let bytes = response.bytes().await.map_err(|e| {
        tracing::warn!(error = %e, upstream, "upstream answer cut short");
        GatewayCode::UpstreamUnavailable.error()
    })?;
    Ok(answer.body(bytes))
}

/// Who the token's person is: from the caller cache, else asked of identity (which creates
/// them on their first call).
async fn resolve(
    proxy: &Proxy,
    client: &WorkerClient,
    person: PersonKey,
    email: Option<hopsbridge_domain::Email>,
) -> Result<Resolved, ApiError> {
    proxy
        .callers
        .get(&person, || {
            let url = format!("{}{}", proxy.routes.identity.base, crate::callers::RESOLVE_PATH);
            crate::callers::ask_identity(client.0.clone(), url, proxy.key.clone(), person.clone(), email.clone())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hopsbridge_domain::{Email, OwnerId, UserId};
    use uuid::Uuid;

    #[test]
    fn a_person_never_gets_the_service_role() {
        let me = UserId::from_uuid(Uuid::from_u128(1));
        let (mine, other) = (me.as_owner(), OwnerId::from_uuid(Uuid::from_u128(2)));
        for (owner, is_admin, want) in [
            (mine, false, vec![Role::User, Role::Owner]),
            (mine, true, vec![Role::User, Role::Owner, Role::Admin]),
            (other, false, vec![Role::User, Role::Member]),
            (other, true, vec![Role::User, Role::Member, Role::Admin]),
        ] {
            let person = Resolved {
                id: me,
                status: AccountStatus::Active,
                is_admin,
                email: Email::parse("ada@example.com").unwrap(),
                account_owner_id: owner,
            };
            let roles = roles_of(&person);
            assert_eq!(roles, want);
            assert!(!roles.contains(&Role::Service));
        }
    }

    #[test]
    fn only_an_invitation_preview_and_the_price_list_are_public() {
        use actix_web::http::Method;
        let token = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";
        assert!(is_public(&Method::GET, &format!("/api/invitations/{token}")));
        assert!(is_public(&Method::GET, "/api/pricing"));
        for (method, path) in [
            (Method::POST, format!("/api/invitations/{token}/accept")),
            (Method::GET, format!("/api/invitations/{token}/accept")),
            (Method::POST, format!("/api/invitations/{token}")),
            (Method::DELETE, format!("/api/invitations/{token}")),
            (Method::HEAD, format!("/api/invitations/{token}")),
            (Method::GET, format!("/api/invitations/{token}?x=1")),
            (Method::GET, "/api/invitations/".to_owned()),
            (Method::GET, "/api/invitations".to_owned()),
            (Method::GET, "/api/invitations/a.b".to_owned()),
            (Method::GET, "/api/invitations/%2e%2e".to_owned()),
            (Method::GET, format!("/api/invitations/{}", "a".repeat(65))),
            (Method::GET, format!("/api/team/invitations/{token}")),
            (Method::GET, format!("/api/me/invitations/{token}")),
            (Method::POST, "/api/pricing".to_owned()),
            (Method::GET, "/api/pricing?x=1".to_owned()),
            (Method::GET, "/api/pricing/x".to_owned()),
            (Method::GET, "/api/admin/prices".to_owned()),
        ] {
            assert!(!is_public(&method, &path), "{method} {path}");
        }
    }

    #[test]
    fn only_http_urls_with_a_host_are_upstreams() {
        for bad in ["http://", "ftp://identity:8081", "identity:8081", "/identity", ""] {
            assert!(Upstream::new(bad).is_none(), "{bad}");
        }
        assert!(Upstream::new("https://identity.internal/").is_some());
    }

    #[test]
    fn a_request_is_forwarded_only_with_the_path_it_was_routed_on() {
        let identity = Upstream::new("http://identity:8081").unwrap();
        let target = Target::new(&identity, "/api/me?x=a%40b&y=..").unwrap();
        assert_eq!(target.url.as_str(), "http://identity:8081/api/me?x=a%40b&y=..");
        let prefixed = Upstream::new("http://10.0.0.7/identity/").unwrap();
        let target = Target::new(&prefixed, "/api/admin/users/7").unwrap();
        assert_eq!(target.url.as_str(), "http://10.0.0.7/identity/api/admin/users/7");
        assert!(Target::new(&prefixed, "/api/me?a b").is_none(), "a space in the query would be encoded");
        for rewritten in [
            "/api/me/../../internal/callers/resolve",
            "/api/me/%2e%2E/%2E%2e/internal/callers/resolve",
            "/api/me/.%2e/internal",
            "/api/me/./",
            "/api/me/\\..\\..\\internal",
            "/api/me#fragment",
            "/api/me/{x}",
        ] {
            assert!(Target::new(&identity, rewritten).is_none(), "{rewritten}");
            assert!(Target::new(&prefixed, rewritten).is_none(), "{rewritten}");
        }
    }
}
