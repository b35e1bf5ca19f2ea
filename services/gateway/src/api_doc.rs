//! The public API's OpenAPI document.
//!
//! Each service describes its routes next to their handlers (utoipa); [`document`] merges them
//! with the gateway's own. The merged document is committed as `services/gateway/openapi.json`,
//! served at `GET /api/openapi.json`, and a test fails when the code and the file disagree
//! (`HOPSBRIDGE_UPDATE_OPENAPI=1 cargo test -p hopsbridge-gateway --test openapi` rewrites it).
//!
//! The codes the gateway answers on every forwarded route (from its catalogue,
//! [`GatewayCode`]) are listed in the document's description.

use crate::error::GatewayCode;
use hopsbridge_platform::http::{ErrorBody, ErrorCode as _};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi};

/// The committed document the gateway serves.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// `GET /api/auth/login`: starts signing in.
#[utoipa::path(get, path = "/api/auth/login", tag = "session",
    params(("returnTo" = Option<String>, Query, description = "relative path to return to after signing in")),
    responses((status = 302, description = "to Auth0's sign-in page; sets the login cookie"),
        (status = 503, description = "login_unavailable: the Auth0 tenant cannot be reached to start signing in", body = ErrorBody)))]
#[expect(dead_code, reason = "documents the route served by session::login")]
fn login() {}

/// `GET /api/auth/callback`: where Auth0 returns.
#[utoipa::path(get, path = "/api/auth/callback", tag = "session",
    params(("code" = Option<String>, Query, description = "authorization code"), ("state" = Option<String>, Query, description = "the login's state")),
    responses((status = 302, description = "signed in: to the path the login started from, with the session cookie"),
        (status = 400, description = "invalid_login_state: the state matches no sign-in this browser started in the last 10 minutes; \
            login_failed: Auth0 refused the sign-in, or its code or tokens did not check out", body = ErrorBody),
        (status = 503, description = "login_unavailable: the Auth0 tenant cannot be reached", body = ErrorBody)))]
#[expect(dead_code, reason = "documents the route served by session::callback")]
fn callback() {}

/// `GET /api/auth/session`: the signed-in browser's session.
#[utoipa::path(get, path = "/api/auth/session", tag = "session",
    responses((status = 200, description = "{subject, csrf_token, expires_at}; send csrf_token as x-csrf-token with changes"),
        (status = 401, description = "unauthenticated: not signed in", body = ErrorBody)))]
#[expect(dead_code, reason = "documents the route served by session::current")]
fn session() {}

/// `GET /api/auth/logout`: signs out.
#[utoipa::path(get, path = "/api/auth/logout", tag = "session",
    responses((status = 302, description = "to Auth0's logout; clears the session cookie")))]
#[expect(dead_code, reason = "documents the route served by session::logout")]
fn logout() {}

/// `GET /api/auth/caller`: who the gateway takes the caller to be.
#[utoipa::path(get, path = "/api/auth/caller", tag = "session",
    responses((status = 200, description = "{subject, user_id, email, roles, account_owner_id}"),
        (status = 401, description = "no valid token or session. unauthenticated: neither a bearer token nor a session cookie; \
            invalid_token: the token is not a valid Auth0 access token for this API", body = ErrorBody),
        (status = 403, description = "account suspended or deleted. account_suspended, account_deleted: the person's account status; \
            csrf_failed: a change made with the session cookie without its x-csrf-token", body = ErrorBody),
        (status = 429, description = "rate_limited: over the per-address or per-person rate; Retry-After says when to come back", body = ErrorBody),
        (status = 503, description = "auth_unavailable: the Auth0 tenant cannot be reached; \
            identity_unavailable: identity cannot say who the person is", body = ErrorBody)))]
#[expect(dead_code, reason = "documents the route served by proxy::caller")]
fn caller() {}

#[derive(utoipa::OpenApi)]
#[openapi(paths(login, callback, session, logout, caller), components(schemas(ErrorBody)),
    tags((name = "session", description = "browser sign-in through Auth0")))]
struct GatewayApi;

/// The gateway's answers on any forwarded route, as `status code (description)`.
fn forwarding_codes() -> String {
    use GatewayCode as C;
    [
        C::RouteNotFound,
        C::InvalidPath,
        C::InvalidMethod,
        C::InvalidBody,
        C::PayloadTooLarge,
        C::Unauthenticated,
        C::InvalidToken,
        C::CsrfFailed,
        C::AccountSuspended,
        C::AccountDeleted,
        C::RateLimited,
        C::UpstreamUnavailable,
        C::AuthUnavailable,
        C::IdentityUnavailable,
    ]
    .iter()
    .map(|c| format!("{} {} ({})", c.status().as_u16(), c.code(), c.description()))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The whole public API: the gateway's routes and every service's.
#[must_use]
pub fn document(services: Vec<OpenApi>) -> OpenApi {
    let mut doc = <GatewayApi as utoipa::OpenApi>::openapi();
    for part in services {
        doc.merge(part);
    }
    doc.info = InfoBuilder::new()
        .title("Hopsbridge API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(format!(
            "Every route needs an Auth0 access token (Authorization: Bearer) or the browser session cookie, \
             except an invitation's preview (GET /api/invitations/{{token}}), which its link's holder opens before \
             signing in; changes made with the cookie need the x-csrf-token header. Errors are {{code, message, request_id}}.\n\n\
             Besides each operation's own answers, the gateway itself may answer any forwarded route with: {}.",
            forwarding_codes()
        )))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
    );
    components.add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("hb_session"))));
    doc
}
