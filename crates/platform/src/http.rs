//! HTTP plumbing shared by every service: the server, request ids, the error envelope and the
//! health endpoints.
//!
//! - Every response carries `x-request-id`: the caller's, when it sent a sane one, or a new
//!   UUIDv7. The same id is in the request's log span and in every error body.
//! - Every error body is `{"code", "message", "request_id"}` (plus `details` where useful).
//!   5xx bodies say nothing internal; the cause goes to the log.
//! - `GET /metrics` answers Prometheus' text format ([`crate::metrics`]), here or on a listener
//!   of its own (`http.metrics_port`).
//! - `GET /healthz` answers 200 while the process runs; `GET /readyz` answers 200 when every
//!   dependency check passes and 503 naming the ones that fail.
//! - Before any handler runs ([`input_guard`]): a method this server does not implement for
//!   any path (none of RFC 9110's methods nor PATCH) answers 501 `method_not_implemented`
//!   (RFC 9110 §15.6.2), and a NUL character in the path, the query (`%00`) or the body (a raw
//!   0x00 byte, or the JSON escape `\u0000`) answers 400 `nul_character`: no field takes one,
//!   and Postgres cannot store one in text.
//! - A path that exists with other methods answers 405 `method_not_allowed` with `Allow` naming
//!   them (RFC 9110 §15.5.6; TRACE included, which is never echoed); a path that does not
//!   exist answers 404 `route_not_found`.

use crate::config::HttpConfig;
use crate::metrics::Metrics;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, ResponseError, web};
use futures::future::BoxFuture;
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request being handled, as stored in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The request id of the request this task is handling, if any.
#[must_use]
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = (1..=128).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    ok.then(|| s.to_owned())
}

async fn request_id_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    // Handlers turn their errors into responses inside this scope, so error bodies can carry
    // the id. (No clone of the request may be held across the call: routing needs it unique.)
    let mut res = CURRENT_REQUEST_ID.scope(id.clone(), next.call(req)).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(res)
}

/// Root span of every request: tracing-actix-web's standard fields plus our request id.
#[derive(Debug)]
pub struct RootSpan;

impl tracing_actix_web::RootSpanBuilder for RootSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        tracing_actix_web::root_span!(request, x_request_id = %id)
    }

    fn on_request_end<B: MessageBody>(span: tracing::Span, outcome: &Result<ServiceResponse<B>, actix_web::Error>) {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// An error answered to an HTTP caller: a status, a stable snake_case code and a message.
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    details: Option<serde_json::Value>,
    cause: Option<anyhow::Error>,
}

impl ApiError {
    /// An error with a status, a stable code and a message meant for the caller. A service
    /// builds its own errors from its catalogue ([`ErrorCode`]); this is for passing on an
    /// answer another service gave, code and all.
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), details: None, cause: None }
    }

    /// 500: something broke. The caller sees only `internal_error`; `cause` goes to the log.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self { cause: Some(cause.into()), ..PlatformCode::InternalError.error() }
    }

    /// Adds structured details to the body.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The stable code.
    #[must_use]
    pub fn code(&self) -> &str {
        &self.code
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status.as_u16())
            .field("code", &self.code)
            .field("message", &self.message)
            .field("cause", &self.cause)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

/// A service's catalogue of error codes. Each code has one status and one description, so the
/// codes a service answers with are written once, listed in the OpenAPI document, and tested.
/// Declare a catalogue with [`error_codes!`](crate::error_codes).
pub trait ErrorCode: Copy + fmt::Debug + Send + Sync + 'static {
    /// Every code of the catalogue.
    const ALL: &'static [Self];

    /// The stable snake_case code.
    fn code(self) -> &'static str;

    /// The HTTP status it is answered with.
    fn status(self) -> StatusCode;

    /// When it is answered; also the message when none more precise is given.
    fn description(self) -> &'static str;

    /// The error, with a message for the caller.
    fn with_message(self, message: impl Into<String>) -> ApiError {
        ApiError::new(self.status(), self.code(), message)
    }

    /// The error, with the code's description as its message.
    fn error(self) -> ApiError {
        self.with_message(self.description())
    }
}

impl<C: ErrorCode> From<C> for ApiError {
    fn from(code: C) -> Self {
        code.error()
    }
}

/// Declares a catalogue of error codes: an enum whose variants each name a status, a stable
/// code and a description, with its [`ErrorCode`] implementation.
///
/// ```
/// hopsbridge_platform::error_codes! {
///     /// What the example answers.
///     pub enum ExampleCode {
///         /// Nothing of the caller's has the id.
///         NotFound = (NOT_FOUND, "example_not_found", "no such example"),
///     }
/// }
/// use hopsbridge_platform::http::ErrorCode;
/// assert_eq!(ExampleCode::NotFound.code(), "example_not_found");
/// ```
#[macro_export]
macro_rules! error_codes {
    (
        $(#[$doc:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vdoc:meta])* $variant:ident = ($status:ident, $code:literal, $description:literal), )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vdoc])* $variant, )+
        }

        impl $crate::http::ErrorCode for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn code(self) -> &'static str {
                match self { $(Self::$variant => $code,)+ }
            }

            fn status(self) -> ::actix_web::http::StatusCode {
                match self { $(Self::$variant => ::actix_web::http::StatusCode::$status,)+ }
            }

            fn description(self) -> &'static str {
                match self { $(Self::$variant => $description,)+ }
            }
        }
    };
}

error_codes! {
    /// The codes the platform answers with for every service, before a handler runs or when
    /// one fails unexpectedly.
    pub enum PlatformCode {
        /// No route has the path.
        RouteNotFound = (NOT_FOUND, "route_not_found", "no such route"),
        /// The path exists, but not with this method; `Allow` names the methods it takes.
        MethodNotAllowed = (METHOD_NOT_ALLOWED, "method_not_allowed",
            "the path does not take this method; Allow lists the methods it takes"),
        /// The method is none this server implements for any path (RFC 9110's methods and
        /// PATCH are known; a known method a path does not take is `method_not_allowed`).
        MethodNotImplemented = (NOT_IMPLEMENTED, "method_not_implemented",
            "the method is not implemented by this server"),
        /// The path, the query (`%00`) or the JSON body (a raw 0x00 byte or `\u0000`) carries a
        /// NUL character, which no field accepts; nothing was read or changed.
        NulCharacter = (BAD_REQUEST, "nul_character",
            "the request carries a NUL character (%00 or \\u0000), which no field accepts"),
        /// The JSON body is malformed or does not match the operation's schema.
        InvalidBody = (BAD_REQUEST, "invalid_body", "the request body is not valid for this operation"),
        /// A query parameter is missing or malformed.
        InvalidQuery = (BAD_REQUEST, "invalid_query", "the query string is not valid for this operation"),
        /// A path parameter is malformed.
        InvalidPath = (BAD_REQUEST, "invalid_path", "the path is not valid for this operation"),
        /// The body is larger than the service accepts.
        PayloadTooLarge = (PAYLOAD_TOO_LARGE, "payload_too_large", "request body too large"),
        /// The body is not JSON.
        UnsupportedMediaType = (UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "expected application/json"),
        /// No trusted caller identity came with the request.
        Unauthenticated = (UNAUTHORIZED, "unauthenticated", "authentication required"),
        /// A record the operation needed is not there (a handler that names its own code is
        /// more precise; this is the fallback).
        NotFound = (NOT_FOUND, "not_found", "not found"),
        /// The change conflicts with a record that already exists (the fallback, as above).
        Conflict = (CONFLICT, "conflict", "already exists"),
        /// Postgres cannot be reached; the request changed nothing.
        DatabaseUnavailable = (SERVICE_UNAVAILABLE, "database_unavailable", "try again shortly"),
        /// A dependency `/readyz` checks does not answer.
        NotReady = (SERVICE_UNAVAILABLE, "not_ready", "a dependency is unavailable"),
        /// Something broke; the cause is in the service's log under the request id.
        InternalError = (INTERNAL_SERVER_ERROR, "internal_error", "internal error"),
    }
}

/// What an admin route refuses with: the codes of its own catalogue, so each route's document
/// names them.
#[derive(Debug, Clone, Copy)]
pub struct AdminRefusals<C> {
    /// The caller is no administrator (403 `admin_only`).
    pub not_admin: C,
    /// `limit` or `offset` is out of range (400 `invalid_page`).
    pub invalid_page: C,
}

impl<C: ErrorCode> AdminRefusals<C> {
    /// `Ok` when `caller` has the admin role (a person or a granted machine client).
    ///
    /// # Errors
    /// `not_admin` otherwise.
    pub fn admin(&self, caller: &crate::caller::Caller) -> Result<(), ApiError> {
        if caller.has(crate::caller::Role::Admin) { Ok(()) } else { Err(self.not_admin.error()) }
    }

    /// For an admin, the page asked for: `limit` 1-200 (50 when absent) and `offset` at least
    /// 0 (0), as `(limit, offset)`.
    ///
    /// # Errors
    /// `not_admin` for anyone else, first; then `invalid_page`.
    pub fn page(
        &self,
        caller: &crate::caller::Caller,
        limit: Option<i64>,
        offset: Option<i64>,
    ) -> Result<(i64, i64), ApiError> {
        self.admin(caller)?;
        let (limit, offset) = (limit.unwrap_or(50), offset.unwrap_or(0));
        if !(1..=200).contains(&limit) || offset < 0 {
            return Err(self.invalid_page.error());
        }
        Ok((limit, offset))
    }
}

/// Describes error responses in the OpenAPI document: each code with its description
/// (`code: description; …`), so the document says what the catalogues say.
#[must_use]
pub fn describe(codes: &[(&'static str, &'static str)]) -> String {
    codes.iter().map(|(code, description)| format!("{code}: {description}")).collect::<Vec<_>>().join("; ")
}

/// A catalogue's entry for [`describe`].
#[must_use]
pub fn entry<C: ErrorCode>(code: C) -> (&'static str, &'static str) {
    (code.code(), code.description())
}

/// Adds catalogue `C` to the OpenAPI document as the string schema `name`: every code, with its
/// status and description, those answered only by routes outside the public document included.
#[derive(Debug, Clone, Copy)]
pub struct CatalogueSchema<C> {
    name: &'static str,
    intro: &'static str,
    catalogue: std::marker::PhantomData<C>,
}

impl<C: ErrorCode> CatalogueSchema<C> {
    /// The schema `name`, introduced by `intro`.
    #[must_use]
    pub const fn new(name: &'static str, intro: &'static str) -> Self {
        Self { name, intro, catalogue: std::marker::PhantomData }
    }
}

impl<C: ErrorCode> utoipa::Modify for CatalogueSchema<C> {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let mut codes: Vec<&str> = Vec::new();
        for code in C::ALL.iter().map(|c| c.code()) {
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
        let lines: Vec<String> =
            C::ALL.iter().map(|c| format!("- `{}` ({}): {}", c.code(), c.status().as_u16(), c.description())).collect();
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(codes))
            .description(Some(format!("{}\n\n{}", self.intro, lines.join("\n"))))
            .build();
        openapi.components.get_or_insert_with(Default::default).schemas.insert(self.name.into(), schema.into());
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// The request's id, for support.
    pub request_id: String,
    /// Structured details, when the error has any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(cause) = &self.cause {
            tracing::error!(code = %self.code, error = format!("{cause:#}"), "request failed");
        }
        HttpResponse::build(self.status).json(ErrorBody {
            code: self.code.to_string(),
            message: self.message.clone(),
            request_id: current_request_id().unwrap_or_default(),
            details: self.details.clone(),
        })
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        match e {
            crate::db::DbError::NotFound => PlatformCode::NotFound.error(),
            crate::db::DbError::UniqueViolation { .. } => PlatformCode::Conflict.error(),
            crate::db::DbError::Unavailable(_) => PlatformCode::DatabaseUnavailable.error(),
            other => Self::internal(other),
        }
    }
}

async fn not_found_handler() -> Result<HttpResponse, ApiError> {
    Err(PlatformCode::RouteNotFound.error())
}

/// The methods this server knows: RFC 9110's and PATCH (RFC 5789). A path that does not take
/// one of them answers 405; any other method 501, whatever the path.
pub const KNOWN_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"];

/// True for a method in [`KNOWN_METHODS`].
#[must_use]
pub fn is_known_method(method: &actix_web::http::Method) -> bool {
    KNOWN_METHODS.contains(&method.as_str())
}

/// True when `text` (a path or query as sent) carries a percent-encoded NUL.
#[must_use]
pub fn has_encoded_nul(text: &str) -> bool {
    text.contains("%00")
}

/// True when `body` carries a NUL character: a raw 0x00 byte, or the JSON escape `\u0000`
/// (`\U0000` too). An escaped backslash followed by `u0000` (`\\u0000`) is text, not a NUL.
#[must_use]
pub fn has_json_nul(body: &[u8]) -> bool {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            0 => return true,
            b'\\' => {
                if matches!(body.get(i + 1), Some(b'u' | b'U')) && body.get(i + 2..i + 6) == Some(b"0000".as_slice()) {
                    return true;
                }
                // Whatever is escaped is skipped with its backslash.
                i += 2;
            }
            _ => i += 1,
        }
    }
    false
}

/// Whether the request says its body is JSON (`application/json`, or a `+json` type).
fn declares_json(req: &ServiceRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"))
}

/// Whether a JSON body is an object, `null` or empty: every body the API takes (with POST, PUT
/// or PATCH) is an object (a few may be `null` or left out). serde's derived structs would also read an array by
/// position (`[null, null]` as both fields absent), so anything else is refused here.
#[must_use]
pub fn is_object_or_null(body: &[u8]) -> bool {
    let text = body.trim_ascii();
    text.is_empty() || text.first() == Some(&b'{') || text == b"null"
}

/// The refusal of a request before any handler: a method no path implements (501), a NUL
/// character in the path, query or body (400), a JSON body that is not an object (400), or a
/// body over `max_body_bytes` (413). A body that passes is put back for the handler, unchanged.
async fn input_guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    max_body_bytes: usize,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    use futures::StreamExt as _;
    let refuse =
        |req: ServiceRequest, error: ApiError| Ok(req.into_response(error.error_response()).map_into_right_body());
    if !is_known_method(req.method()) {
        return refuse(req, PlatformCode::MethodNotImplemented.error());
    }
    if has_encoded_nul(req.uri().path()) || req.uri().query().is_some_and(has_encoded_nul) {
        return refuse(req, PlatformCode::NulCharacter.error());
    }
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return refuse(req, PlatformCode::InvalidBody.with_message("the request body could not be read"));
        };
        if body.len() + chunk.len() > max_body_bytes {
            return refuse(req, PlatformCode::PayloadTooLarge.error());
        }
        body.extend_from_slice(&chunk);
    }
    if has_json_nul(&body) {
        return refuse(req, PlatformCode::NulCharacter.error());
    }
    if let Err(e) = record_body_digest(&req, &body) {
        return refuse(req, e);
    }
    let takes_body = matches!(
        *req.method(),
        actix_web::http::Method::POST | actix_web::http::Method::PUT | actix_web::http::Method::PATCH
    );
    if takes_body && declares_json(&req) && !is_object_or_null(&body) {
        return refuse(req, PlatformCode::InvalidBody.with_message("the request body must be a JSON object"));
    }
    req.set_payload(actix_web::dev::Payload::from(body.freeze()));
    Ok(next.call(req).await?.map_into_left_body())
}

/// Records the digest of the body read for the [`crate::caller::Caller`] extractor, refusing
/// with 401 a body that is not the one the caller headers' signed digest names (decision 0053).
fn record_body_digest(req: &ServiceRequest, body: &[u8]) -> Result<(), ApiError> {
    let digest = crate::caller::body_sha256(body);
    let signed = req.headers().get(crate::caller::CONTENT_SHA256).map(|v| v.as_bytes().to_vec());
    if signed.is_some_and(|signed| !crate::secret::constant_time_eq(&signed, digest.as_bytes())) {
        tracing::warn!("request refused: the body does not match its signed digest");
        return Err(PlatformCode::Unauthenticated.with_message("the body does not match its signed digest"));
    }
    req.extensions_mut().insert(crate::caller::BodyDigest(digest));
    Ok(())
}

/// The body hashing [`bind`]'s servers do (so a [`crate::caller::Caller`] can be verified), for
/// an `App` assembled without [`bind`], as tests do around a service's routes:
/// `App::new().wrap(from_fn(hash_body))`. Reads at most 1 MiB.
///
/// # Errors
/// Only the inner service's.
pub async fn hash_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    use futures::StreamExt as _;
    const LIMIT: usize = 1 << 20;
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let error = match chunk {
            Ok(chunk) if body.len() + chunk.len() <= LIMIT => {
                body.extend_from_slice(&chunk);
                continue;
            }
            Ok(_) => PlatformCode::PayloadTooLarge.error(),
            Err(_) => PlatformCode::InvalidBody.with_message("the request body could not be read"),
        };
        return Ok(req.into_response(error.error_response()).map_into_right_body());
    }
    if let Err(e) = record_body_digest(&req, &body) {
        return Ok(req.into_response(e.error_response()).map_into_right_body());
    }
    req.set_payload(actix_web::dev::Payload::from(body.freeze()));
    Ok(next.call(req).await?.map_into_left_body())
}

/// What the last resource of every service ([`bind`] adds it after the service's routes, so it
/// takes every path no route took) answers. actix records the methods of the routes whose path
/// matched as it tries them, and a resource without routes answers 405 with those methods in
/// `Allow`, or without `Allow` when none were recorded (no route has the path). This turns that
/// answer into the error envelope: 405 `method_not_allowed` with the same `Allow`, or 404
/// `route_not_found`.
async fn unrouted(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::http::header::ALLOW;
    let response = next.call(req).await?;
    let allow = response.headers().get(ALLOW).filter(|methods| !methods.is_empty()).cloned();
    let (req, _) = response.into_parts();
    let mut answer = match &allow {
        Some(_) => PlatformCode::MethodNotAllowed.error(),
        None => PlatformCode::RouteNotFound.error(),
    }
    .error_response();
    if let Some(methods) = allow {
        answer.headers_mut().insert(ALLOW, methods);
    }
    Ok(ServiceResponse::new(req, answer))
}

fn extractor_configs(max_body_bytes: usize) -> (web::JsonConfig, web::QueryConfig, web::PathConfig) {
    let json = web::JsonConfig::default().limit(max_body_bytes).error_handler(|err, _req| {
        use actix_web::error::JsonPayloadError;
        let api = match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                PlatformCode::PayloadTooLarge.error()
            }
            JsonPayloadError::ContentType => PlatformCode::UnsupportedMediaType.error(),
            JsonPayloadError::Deserialize(e) => PlatformCode::InvalidBody.with_message(e.to_string()),
            _ => PlatformCode::InvalidBody.with_message("request body could not be read"),
        };
        api.into()
    });
    let query = web::QueryConfig::default()
        .error_handler(|err, _req| PlatformCode::InvalidQuery.with_message(err.to_string()).into());
    let path = web::PathConfig::default()
        .error_handler(|err, _req| PlatformCode::InvalidPath.with_message(err.to_string()).into());
    (json, query, path)
}

/// One dependency `/readyz` checks.
pub trait ReadinessCheck: Send + Sync {
    /// The dependency's name as the 503 body names it, e.g. `postgres`.
    fn name(&self) -> &'static str;
    /// Ok when the dependency answers; otherwise a short reason (no addresses or secrets).
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
    /// What the report says when the check passes.
    fn ready_as(&self) -> &'static str {
        "ok"
    }
}

/// Checks run by `/readyz`.
pub type ReadinessChecks = Arc<Vec<Arc<dyn ReadinessCheck>>>;

/// How long a service keeps an idle client connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(120);
/// How long one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(checks: web::Data<ReadinessChecks>) -> Result<HttpResponse, ApiError> {
    let results = futures::future::join_all(checks.iter().map(|c| async move {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, c.check()).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_owned()),
        };
        (c.name(), c.ready_as(), outcome)
    }))
    .await;
    let mut report = serde_json::Map::new();
    let mut failed = Vec::new();
    for (name, ready_as, outcome) in results {
        match outcome {
            Ok(()) => {
                report.insert(name.to_owned(), ready_as.into());
            }
            Err(reason) => {
                report.insert(name.to_owned(), reason.into());
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "checks": report})))
    } else {
        Err(PlatformCode::NotReady
            .with_message(format!("not ready: {} unreachable", failed.join(", ")))
            .with_details(serde_json::json!({"checks": report})))
    }
}

/// A bound, not yet running HTTP server.
pub struct BoundServer {
    /// The port actually bound (useful when the configured port is 0).
    pub port: u16,
    /// The server; drive it to completion, stop it through its handle.
    pub server: Server,
    /// The listener of `/metrics` alone, when `http.metrics_port` is set: its port and server.
    pub metrics: Option<(u16, Server)>,
}

impl fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundServer")
            .field("port", &self.port)
            .field("metrics_port", &self.metrics.as_ref().map(|(port, _)| *port))
            .finish_non_exhaustive()
    }
}

/// Binds the HTTP server: request ids, tracing, metrics, the error envelope, `/healthz`,
/// `/readyz`, the service's own routes from `configure`, and JSON 404s for everything else.
/// `GET /metrics` is served on a listener of its own when `http.metrics_port` is set, else on
/// this one when `metrics` allows it ([`Metrics::on_main_listener`]). Signals are not handled
/// here: [`crate::shutdown`] owns them and stops the server through its handle.
///
/// # Errors
/// When an address cannot be bound.
pub fn bind<F>(
    cfg: &HttpConfig,
    shutdown_timeout: Duration,
    checks: ReadinessChecks,
    metrics: Metrics,
    configure: F,
) -> std::io::Result<BoundServer>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))?;
    let port = listener.local_addr()?.port();
    let max_body = cfg.max_body_bytes;
    let checks = web::Data::new(checks);
    let metrics_here = cfg.metrics_port.is_none() && metrics.on_main_listener();
    let data = web::Data::new(metrics.clone());
    let recorded = metrics.clone();
    let server = HttpServer::new(move || {
        let (json, query, path) = extractor_configs(max_body);
        let recorded = recorded.clone();
        let mut app = App::new()
            .app_data(json)
            .app_data(query)
            .app_data(path)
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(checks.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz));
        if metrics_here {
            app = app.app_data(data.clone()).route("/metrics", web::get().to(crate::metrics::serve));
        }
        app.configure(configure.clone())
            .service(web::resource("/{unrouted:.*}").wrap(from_fn(unrouted)))
            .default_service(web::to(not_found_handler))
            .wrap(from_fn(move |req, next| input_guard(req, next, max_body)))
            .wrap(tracing_actix_web::TracingLogger::<RootSpan>::new())
            .wrap(from_fn(request_id_middleware))
            .wrap(from_fn(move |req, next| crate::metrics::http::record(req, next, recorded.clone())))
    })
    .workers(cfg.workers)
    // Idle connections stay open longer than any client of ours keeps one pooled (reqwest's
    // default is 90 s, the gateway's 30 s), so a client never sends on a connection the server
    // is closing, which answers the request with nothing.
    .keep_alive(KEEP_ALIVE)
    .disable_signals()
    .shutdown_timeout(shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    let metrics = match cfg.metrics_port {
        Some(metrics_port) => Some(bind_metrics(&cfg.host, metrics_port, metrics, shutdown_timeout)?),
        None => None,
    };
    Ok(BoundServer { port, server, metrics })
}

/// The listener that serves `GET /metrics` and nothing else (404 elsewhere).
fn bind_metrics(host: &str, port: u16, metrics: Metrics, shutdown_timeout: Duration) -> std::io::Result<(u16, Server)> {
    let listener = TcpListener::bind((host, port))?;
    let port = listener.local_addr()?.port();
    let data = web::Data::new(metrics);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(crate::metrics::serve))
            .default_service(web::to(not_found_handler))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    Ok((port, server))
}
