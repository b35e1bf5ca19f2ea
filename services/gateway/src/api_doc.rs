//! The public API's OpenAPI document.
//!
//! Each service describes its routes next to their handlers (utoipa); [`document`] merges them
//! with the gateway's own. The merged document is committed as `services/gateway/openapi.json`,
//! served at `GET /api/openapi.json`, and a test fails when the code and the file disagree
//! (`HOPSBRIDGE_UPDATE_OPENAPI=1 cargo test -p hopsbridge-gateway --test openapi` rewrites it).
//!
//! The codes the gateway answers on every forwarded route (from its catalogue,
//! [`GatewayCode`]) are listed in the document's description, and [`document`] adds to every
//! operation what the gateway and the platform answer before it runs ([`complete`]): its
//! security requirement (none on the public operations, [`is_public`]), and the 400, 401, 403,
//! 413, 415 and 429 answers that apply to it.
//!
//! The gateway also answers from the document ([`methods_of`]): a documented path asked with a
//! method it does not take is 405 `method_not_allowed`, with `Allow`.

use crate::error::GatewayCode;
use hopsbridge_platform::http::{CatalogueSchema, ErrorBody, ErrorCode, PlatformCode};
use std::collections::BTreeMap;
use std::sync::LazyLock;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{InfoBuilder, OpenApi, RefOr, ResponseBuilder};

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
    responses((status = 200, description = "{subject, issuer, user_id, email, roles, account_owner_id}"),
        (status = 401, description = "no valid token or session. unauthenticated: neither a bearer token nor a session cookie; \
            invalid_token: the token is not a valid Auth0 access token for this API", body = ErrorBody),
        (status = 403, description = "account suspended or deleted. account_suspended, account_deleted: the person's account status; \
            csrf_failed: a change made with the session cookie without its x-csrf-token; \
            machine_client_not_admin, machine_client_admin_only: a machine client's token, which speaks for no person", body = ErrorBody),
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
        C::MethodNotAllowed,
        C::MethodNotImplemented,
        C::NulCharacter,
        C::InvalidBody,
        C::PayloadTooLarge,
        C::Unauthenticated,
        C::InvalidToken,
        C::CsrfFailed,
        C::AccountSuspended,
        C::AccountDeleted,
        C::MachineClientNotAdmin,
        C::MachineClientAdminOnly,
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

/// The whole public API: the gateway's routes and every service's, [`complete`]d.
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
            "Every operation names its security requirement: an Auth0 access token (Authorization: Bearer) or the \
             browser session cookie. The public ones name none: an invitation's preview (GET /api/invitations/{{token}}), \
             which its link's holder opens before signing in, the price list (GET /api/pricing), the sign-in routes, and the webhooks, which carry their \
             own signature (Stripe-Signature; the Auth0 Action's shared secret). Changes made with the cookie need the \
             x-csrf-token header. Errors are {{code, message, request_id}}.\n\n\
             Besides each operation's own answers, the gateway itself may answer any forwarded route with: {}.\n\n\
             A documented path asked with a method it does not take answers 405 {} with Allow naming its methods \
             (TRACE included, never echoed); a method the server implements for no path (any but GET, HEAD, POST, PUT, \
             PATCH, DELETE, OPTIONS, TRACE and CONNECT) answers 501 {} (RFC 9110 sections 15.5.6 and 15.6.2).",
            forwarding_codes(),
            PlatformCode::MethodNotAllowed.code(),
            PlatformCode::MethodNotImplemented.code(),
        )))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
    );
    components.add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("hb_session"))));
    complete(&mut doc);
    utoipa::Modify::modify(
        &CatalogueSchema::<PlatformCode>::new(
            "PlatformErrorCode",
            "The codes every service answers with, before its handlers run or when one fails unexpectedly.",
        ),
        &mut doc,
    );
    utoipa::Modify::modify(
        &CatalogueSchema::<GatewayCode>::new("GatewayErrorCode", "The codes the gateway itself answers with."),
        &mut doc,
    );
    doc
}

/// True for an operation anyone may call without a token or a session: an invitation's
/// preview and the price list (the public `/api/…` routes the gateway forwards, `proxy`'s
/// `is_public`), the
/// sign-in routes, and the webhooks, which carry their own signature.
#[must_use]
pub fn is_public(method: &str, path: &str) -> bool {
    path.starts_with("/webhooks/")
        || (method.eq_ignore_ascii_case("get") && matches!(path, "/api/invitations/{token}" | "/api/pricing"))
        || matches!(path, "/api/auth/login" | "/api/auth/callback" | "/api/auth/logout")
}

/// True for an operation the gateway forwards to a service (after its own checks of the path
/// and the caller); the others it answers itself.
fn forwarded(path: &str) -> bool {
    path.starts_with("/api/") && !path.starts_with("/api/auth/")
}

/// `code: description` of each code, joined as the services write their answers.
fn described(codes: &[(&'static str, &'static str)]) -> String {
    codes.iter().map(|(code, description)| format!("{code}: {description}")).collect::<Vec<_>>().join("; ")
}

fn of<C: ErrorCode>(code: C) -> (&'static str, &'static str) {
    (code.code(), code.description())
}

/// Adds `codes` to the operation's answer with `status`: to its description when it already
/// has one (each code once), else as a new answer with the error body.
fn answer(operation: &mut Operation, status: u16, codes: &[(&'static str, &'static str)]) {
    let key = status.to_string();
    match operation.responses.responses.get_mut(&key) {
        Some(RefOr::T(response)) => {
            let missing: Vec<_> =
                codes.iter().filter(|(code, _)| !response.description.contains(&format!("{code}:"))).copied().collect();
            let named = response.description.contains(": ");
            if !missing.is_empty() {
                // Answers written as `code: description; …` take more of the same; a prose
                // description gets the codes after it.
                let separator = if named { "; " } else { ". " };
                response.description = format!("{}{separator}{}", response.description, described(&missing));
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(described(codes))
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build();
            operation.responses.responses.insert(key, RefOr::T(response));
        }
    }
}

/// What the gateway and the platform add to every operation: its security requirement, and
/// the answers they give before the operation runs.
/// - 400: `nul_character` everywhere (the platform); `invalid_path` on forwarded routes (the
///   gateway) and where the path has parameters; `invalid_query` where there are query
///   parameters; `invalid_body` where there is a body.
/// - 401 and 403 on every operation that needs a token: no token or a bad one; a suspended or
///   deleted account, a cookie change without its CSRF token, a machine client not granted the
///   admin role, and off the admin routes a granted one (decision 0045).
/// - 413 where there is a body; 415 where the body is JSON (a body of another type, or none
///   where one is required); 429 everywhere (the per-address limit, and per person).
pub fn complete(doc: &mut OpenApi) {
    for (path, item) in &mut doc.paths.paths {
        let operations = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
            ("head", &mut item.head),
            ("options", &mut item.options),
            ("trace", &mut item.trace),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation.as_mut() else { continue };
            let public = is_public(method, path);
            operation.security = Some(if public {
                Vec::new()
            } else if path == "/api/auth/session" {
                vec![SecurityRequirement::new("session", Vec::<String>::new())]
            } else {
                vec![
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                    SecurityRequirement::new("session", Vec::<String>::new()),
                ]
            });
            let parameters = operation.parameters.as_deref().unwrap_or_default();
            let located = |at: ParameterIn| parameters.iter().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == at));
            let (in_path, in_query) = (located(ParameterIn::Path), located(ParameterIn::Query));
            let body = operation.request_body.is_some();
            let mut bad = vec![of(PlatformCode::NulCharacter)];
            if forwarded(path) || in_path {
                bad.push(of(PlatformCode::InvalidPath));
            }
            if in_query {
                bad.push(of(PlatformCode::InvalidQuery));
            }
            if body {
                bad.push(of(PlatformCode::InvalidBody));
            }
            answer(operation, 400, &bad);
            if !public {
                answer(operation, 401, &[of(GatewayCode::Unauthenticated), of(GatewayCode::InvalidToken)]);
                // A suspended person still reaches the billing page's routes (where a suspension
                // is resolved); a deleted account reaches nothing.
                let mut forbidden = Vec::new();
                if !crate::proxy::resolves_suspension(path) {
                    forbidden.push(of(GatewayCode::AccountSuspended));
                }
                forbidden.extend([
                    of(GatewayCode::AccountDeleted),
                    of(GatewayCode::CsrfFailed),
                    of(GatewayCode::MachineClientNotAdmin),
                ]);
                if !path.starts_with("/api/admin/") {
                    forbidden.push(of(GatewayCode::MachineClientAdminOnly));
                }
                answer(operation, 403, &forbidden);
            }
            if body {
                answer(operation, 413, &[of(PlatformCode::PayloadTooLarge)]);
            }
            if takes_json(operation) {
                answer(operation, 415, &[of(PlatformCode::UnsupportedMediaType)]);
            }
            answer(operation, 429, &[of(GatewayCode::RateLimited)]);
        }
    }
}

/// Whether the operation's body is JSON, which the platform refuses in any other type.
fn takes_json(operation: &Operation) -> bool {
    matches!(&operation.request_body, Some(RefOr::T(body)) if body.content.contains_key("application/json"))
}

/// A documented path as segments (`None` for a parameter), and the methods it takes.
type Documented = (Vec<Option<String>>, Vec<String>);

/// The documented paths with the methods each takes; the gateway's own `GET /api/openapi.json`
/// included.
static OPERATIONS: LazyLock<Vec<Documented>> = LazyLock::new(|| {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap_or_default();
    let mut operations: BTreeMap<String, Vec<String>> = BTreeMap::new();
    operations.insert("/api/openapi.json".to_owned(), vec!["GET".to_owned()]);
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            let methods = item.as_object().map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect());
            operations.entry(path.clone()).or_default().extend(methods.unwrap_or_else(Vec::new));
        }
    }
    operations
        .into_iter()
        .map(|(path, methods)| {
            let segments =
                path.split('/').map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned())).collect();
            (segments, methods)
        })
        .collect()
});

/// The methods the document gives `path` (a request's path, parameters filled in), in the
/// order of [`hopsbridge_platform::http::KNOWN_METHODS`]; `None` when no documented path is
/// this one.
#[must_use]
pub fn methods_of(path: &str) -> Option<Vec<&'static str>> {
    let segments: Vec<&str> = path.split('/').collect();
    let matching: Vec<&String> = OPERATIONS
        .iter()
        .filter(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| t.as_deref().map_or(!s.is_empty(), |t| t == *s))
        })
        .flat_map(|(_, methods)| methods)
        .collect();
    if matching.is_empty() {
        return None;
    }
    Some(
        hopsbridge_platform::http::KNOWN_METHODS
            .iter()
            .copied()
            .filter(|known| matching.iter().any(|m| m.as_str() == *known))
            .collect(),
    )
}
