//! The HTTP plumbing every service shares: request ids, the error envelope, readiness and
//! graceful shutdown, on a real server bound to a free port.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use actix_web::{HttpResponse, web};
use futures::future::BoxFuture;
use hopsbridge_contracts::Service;
use hopsbridge_platform::config::{HttpConfig, ShutdownConfig};
use hopsbridge_platform::http::{ApiError, ReadinessCheck};
use hopsbridge_platform::service::Application;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Switch(Arc<AtomicBool>);

impl ReadinessCheck for Switch {
    fn name(&self) -> &'static str {
        "ledger"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let up = self.0.load(Ordering::SeqCst);
        Box::pin(async move { if up { Ok(()) } else { Err("unreachable".into()) } })
    }
}

async fn boom() -> Result<HttpResponse, ApiError> {
    Err(ApiError::internal(anyhow::anyhow!("connection to 10.0.0.7 refused, password=hunter2")))
}

async fn echo(body: web::Json<serde_json::Value>) -> HttpResponse {
    HttpResponse::Ok().json(body.into_inner())
}

async fn trace() -> HttpResponse {
    HttpResponse::Ok().body(hopsbridge_platform::telemetry::trace_id_of(&tracing::Span::current()).unwrap_or_default())
}

async fn whoami(caller: hopsbridge_platform::caller::Caller) -> HttpResponse {
    HttpResponse::Ok().body(caller.subject)
}

async fn whoami_with(caller: hopsbridge_platform::caller::Caller, body: web::Json<serde_json::Value>) -> HttpResponse {
    HttpResponse::Ok().body(format!("{} {}", caller.subject, body.into_inner()))
}

/// Handlers that let a storage error through unmapped: the platform's fallbacks answer them.
async fn missing() -> Result<HttpResponse, ApiError> {
    Err(hopsbridge_platform::db::DbError::NotFound.into())
}

async fn taken() -> Result<HttpResponse, ApiError> {
    Err(hopsbridge_platform::db::DbError::UniqueViolation { constraint: "x_unique".into() }.into())
}

async fn down() -> Result<HttpResponse, ApiError> {
    Err(hopsbridge_platform::db::DbError::Unavailable("no connection".into()).into())
}

async fn query(_: web::Query<Page>) -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn path(_: web::Path<u32>) -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[derive(serde::Deserialize)]
struct Page {
    #[expect(dead_code, reason = "read only to be parsed")]
    limit: u32,
}

async fn slow() -> HttpResponse {
    tokio::time::sleep(Duration::from_millis(800)).await;
    HttpResponse::Ok().body("finished")
}

struct Server {
    base: String,
    stop: CancellationToken,
    ledger: Arc<AtomicBool>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start() -> Server {
    hopsbridge_testkit::init();
    let ledger = Arc::new(AtomicBool::new(true));
    let http = HttpConfig { host: "127.0.0.1".into(), port: 0, workers: 1, max_body_bytes: 1024, metrics_port: None };
    let checks: Vec<Arc<dyn ReadinessCheck>> = vec![Arc::new(Switch(Arc::clone(&ledger)))];
    let app = Application::new(
        Service::Identity,
        &http,
        &ShutdownConfig { timeout_secs: 5 },
        checks,
        Arc::new(|c: &mut web::ServiceConfig| {
            c.route("/boom", web::get().to(boom))
                .route("/echo", web::post().to(echo))
                .route("/echo", web::put().to(echo))
                .route("/slow", web::get().to(slow))
                .route("/trace", web::get().to(trace))
                .route("/whoami", web::get().to(whoami))
                .route("/whoami", web::post().to(whoami_with))
                .route("/missing", web::get().to(missing))
                .route("/taken", web::get().to(taken))
                .route("/down", web::get().to(down))
                .route("/query", web::get().to(query))
                .route("/path/{n}", web::get().to(path))
                .app_data(web::Data::new(hopsbridge_testkit::caller_verifier()));
        }),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let done = tokio::spawn(app.run_until_stopped(stop.clone()));
    Server { base, stop, ledger, done }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sane_request_id_is_echoed_and_a_missing_or_hostile_one_replaced() {
    let s = start().await;
    let r = client().get(format!("{}/healthz", s.base)).header("x-request-id", "req-42.a_b").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42.a_b");

    let r = client().get(format!("{}/healthz", s.base)).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&generated).unwrap().get_version_num(), 7);

    for hostile in ["a b", "<script>", &"x".repeat(129)] {
        let r = client().get(format!("{}/healthz", s.base)).header("x-request-id", hostile).send().await.unwrap();
        assert_ne!(r.headers()["x-request-id"], hostile);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_share_one_envelope_carrying_the_request_id() {
    let s = start().await;
    let r = client().get(format!("{}/no/such/route", s.base)).header("x-request-id", "r-1").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"code": "route_not_found", "message": "no such route", "request_id": "r-1"}));

    let r = client()
        .post(format!("{}/echo", s.base))
        .header("content-type", "application/json")
        .header("x-request-id", "r-2")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!((body["code"].as_str(), body["request_id"].as_str()), (Some("invalid_body"), Some("r-2")));

    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(2048));
    let r = client()
        .post(format!("{}/echo", s.base))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_reveals_nothing_internal() {
    let s = start().await;
    let r = client().get(format!("{}/boom", s.base)).header("x-request-id", "r-3").send().await.unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert_eq!(text, r#"{"code":"internal_error","message":"internal error","request_id":"r-3"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_the_failing_dependency() {
    let s = start().await;
    let r = client().get(format!("{}/readyz", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.ledger.store(false, Ordering::SeqCst);
    let r = client().get(format!("{}/readyz", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_ready");
    assert_eq!(body["message"], "not ready: ledger unreachable");
    assert_eq!(body["details"]["checks"]["ledger"], "unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_stops_accepting() {
    let s = start().await;
    let url = format!("{}/slow", s.base);
    let in_flight = tokio::spawn(async move { client().get(url).send().await.unwrap().text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.stop.cancel();
    assert_eq!(in_flight.await.unwrap(), "finished");
    s.done.await.unwrap().unwrap();
    assert!(client().get(format!("{}/healthz", s.base)).send().await.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_continues_the_callers_trace() {
    let s = start().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = client()
        .get(format!("{}/trace", s.base))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), trace_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_trusts_only_callers_signed_by_the_gateway() {
    use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
    let s = start().await;
    let r =
        client().get(format!("{}/whoami", s.base)).header("x-hopsbridge-subject", "auth0|ada").send().await.unwrap();
    assert_eq!(r.status(), 401, "unsigned identity headers are ignored");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");

    let caller = Caller {
        subject: "auth0|ada".into(),
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: None,
        roles: vec![Role::User],
        email: None,
    };
    let gateway = hopsbridge_testkit::gateway_signer();
    let mut request = client().get(format!("{}/whoami", s.base));
    for (name, value) in gateway.sign("GET", "/whoami", &caller, chrono::Utc::now().timestamp()) {
        request = request.header(name, value);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "auth0|ada");

    // Signed with any other key (a service's own included) the same headers vouch for no one.
    for other in [CallerSigner::from_seed(&[42; 32]), hopsbridge_testkit::service_signer(Service::Billing)] {
        let mut request = client().get(format!("{}/whoami", s.base));
        for (name, value) in other.sign("GET", "/whoami", &caller, chrono::Utc::now().timestamp()) {
            request = request.header(name, value);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
}

/// Sends `body` to `path` with `headers`; answers the status and the error code or the text.
async fn post_with(s: &Server, path: &str, headers: &[(&'static str, String)], body: &str) -> (u16, String) {
    let mut request = client().post(format!("{}{path}", s.base)).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let r = request.body(body.to_owned()).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let code =
        serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["code"].as_str().map(str::to_owned));
    (status, code.unwrap_or(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_caller_headers_open_no_other_body_or_query() {
    use hopsbridge_platform::caller::{Caller, Role};
    let s = start().await;
    let caller = Caller {
        subject: "auth0|ada".into(),
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: None,
        roles: vec![Role::User],
        email: None,
    };
    let gateway = hopsbridge_testkit::gateway_signer();
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"amount":100}"#;
    let signed = gateway.sign_with_body("POST", "/whoami", body.as_bytes(), &caller, now);
    assert_eq!(post_with(&s, "/whoami", &signed, body).await, (200, r#"auth0|ada {"amount":100}"#.to_owned()));
    // The same headers replayed with another body, another query or no body at all: 401.
    assert_eq!(post_with(&s, "/whoami", &signed, r#"{"amount":100000}"#).await, (401, "unauthenticated".to_owned()));
    assert_eq!(post_with(&s, "/whoami", &signed, r#"{"amount":100} "#).await, (401, "unauthenticated".to_owned()));
    assert_eq!(post_with(&s, "/whoami?as=admin", &signed, body).await, (401, "unauthenticated".to_owned()));
    assert_eq!(post_with(&s, "/whoami", &signed, "").await.0, 401);
    // Re-pointing the digest at the new body breaks the signature instead.
    let mut rewritten = signed.clone();
    for (name, value) in &mut rewritten {
        if *name == hopsbridge_platform::caller::CONTENT_SHA256 {
            *value = hopsbridge_platform::caller::body_sha256(br#"{"amount":100000}"#);
        }
    }
    assert_eq!(post_with(&s, "/whoami", &rewritten, r#"{"amount":100000}"#).await, (401, "unauthenticated".to_owned()));
    // Headers signed over a minute ago have expired.
    let stale = gateway.sign_with_body("POST", "/whoami", body.as_bytes(), &caller, now - 120);
    assert_eq!(post_with(&s, "/whoami", &stale, body).await, (401, "unauthenticated".to_owned()));
}

/// Sends `method path` as written, with `body`, and answers the status, the `Allow` header and
/// the JSON body.
async fn raw(base: &str, method: &str, path: &str, body: &[u8]) -> (u16, Option<String>, serde_json::Value) {
    let answer = hopsbridge_testkit::raw_http(base, method, path, "content-type: application/json\r\n", body).await;
    (answer.status, answer.allow, answer.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_path_answers_405_with_allow_an_unknown_method_501_and_trace_is_never_echoed() {
    let s = start().await;
    for method in ["GET", "DELETE", "PATCH", "TRACE", "OPTIONS", "HEAD"] {
        let (status, allow, body) = raw(&s.base, method, "/echo", b"").await;
        assert_eq!(status, 405, "{method} /echo");
        assert_eq!(allow.as_deref(), Some("POST, PUT"), "{method} /echo names the methods the path takes");
        if method != "HEAD" {
            assert_eq!(body["code"], "method_not_allowed", "{method} /echo: {body}");
        }
    }
    let (status, allow, body) = raw(&s.base, "TRACE", "/healthz", b"secret-cookie=1").await;
    assert_eq!((status, allow.as_deref(), body["code"].as_str()), (405, Some("GET"), Some("method_not_allowed")));
    assert!(!body.to_string().contains("secret-cookie"), "TRACE echoes nothing: {body}");
    let (status, allow, body) = raw(&s.base, "TRACE", "/no/such/route", b"").await;
    assert_eq!((status, allow, body["code"].as_str()), (404, None, Some("route_not_found")));
    for path in ["/echo", "/no/such/route"] {
        let (status, _, body) = raw(&s.base, "BREW", path, b"").await;
        assert_eq!((status, body["code"].as_str()), (501, Some("method_not_implemented")), "BREW {path}");
    }
    let (status, _, body) = raw(&s.base, "PUT", "/echo", b"{\"a\": 1}").await;
    assert_eq!((status, body), (200, serde_json::json!({"a": 1})), "a route still takes its own methods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_the_path_query_or_body_is_refused_before_any_handler() {
    let s = start().await;
    for (method, path, body) in [
        ("GET", "/whoami?q=a%00b", &b""[..]),
        ("GET", "/who%00ami", b""),
        ("POST", "/echo?x=%00", b"{}"),
        ("POST", "/echo", b"{\"name\": \"a\\u0000b\"}"),
        ("POST", "/echo", b"{\"name\": \"a\\U0000b\"}"),
        ("POST", "/echo", b"{\"a\\u0000\": 1}"),
        ("POST", "/echo", b"{\"name\": \"a\x00b\"}"),
    ] {
        let (status, _, answer) = raw(&s.base, method, path, body).await;
        assert_eq!((status, answer["code"].as_str()), (400, Some("nul_character")), "{method} {path} {body:?}");
    }
    // An escaped backslash before `u0000` is text, and reaches the handler unchanged.
    let text = b"{\"name\": \"a\\\\u0000b\"}";
    let (status, _, answer) = raw(&s.base, "POST", "/echo", text).await;
    assert_eq!((status, answer["name"].as_str()), (200, Some("a\\u0000b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_that_is_not_an_object_is_refused_before_any_handler() {
    let s = start().await;
    for body in [&b"[null, null]"[..], b" [1]", b"1", b"\"text\"", b"true"] {
        let (status, _, answer) = raw(&s.base, "POST", "/echo", body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("invalid_body")),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let (status, _, answer) = raw(&s.base, "POST", "/echo", b" {\"a\": [1]} ").await;
    assert_eq!((status, answer), (200, serde_json::json!({"a": [1]})), "an object still reaches the handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_platform_code_is_answered_by_the_shared_pipeline_with_its_status() {
    use hopsbridge_platform::http::{ErrorCode, PlatformCode};
    let s = start().await;
    let mut seen = std::collections::BTreeSet::new();
    let mut answered = |code: PlatformCode, (status, _, body): (u16, Option<String>, serde_json::Value)| {
        assert_eq!((status, body["code"].as_str()), (code.status().as_u16(), Some(code.code())), "{code:?}: {body}");
        seen.insert(code.code());
    };
    answered(PlatformCode::RouteNotFound, raw(&s.base, "GET", "/no/such/route", b"").await);
    answered(PlatformCode::InvalidBody, raw(&s.base, "POST", "/echo", b"{not json").await);
    answered(PlatformCode::InvalidQuery, raw(&s.base, "GET", "/query?limit=many", b"").await);
    answered(PlatformCode::InvalidPath, raw(&s.base, "GET", "/path/seven", b"").await);
    answered(PlatformCode::PayloadTooLarge, raw(&s.base, "POST", "/echo", "x".repeat(2048).as_bytes()).await);
    let r =
        client().post(format!("{}/echo", s.base)).header("content-type", "text/plain").body("{}").send().await.unwrap();
    answered(PlatformCode::UnsupportedMediaType, (r.status().as_u16(), None, r.json().await.unwrap()));
    answered(PlatformCode::Unauthenticated, raw(&s.base, "GET", "/whoami", b"").await);
    answered(PlatformCode::NotFound, raw(&s.base, "GET", "/missing", b"").await);
    answered(PlatformCode::Conflict, raw(&s.base, "GET", "/taken", b"").await);
    answered(PlatformCode::DatabaseUnavailable, raw(&s.base, "GET", "/down", b"").await);
    s.ledger.store(false, Ordering::SeqCst);
    answered(PlatformCode::NotReady, raw(&s.base, "GET", "/readyz", b"").await);
    answered(PlatformCode::InternalError, raw(&s.base, "GET", "/boom", b"").await);
    answered(PlatformCode::NulCharacter, raw(&s.base, "GET", "/query?limit=%00", b"").await);
    answered(PlatformCode::MethodNotAllowed, raw(&s.base, "DELETE", "/echo", b"").await);
    answered(PlatformCode::MethodNotImplemented, raw(&s.base, "BREW", "/echo", b"").await);
    let all: std::collections::BTreeSet<_> = PlatformCode::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(seen, all, "every platform code has a request that gets it");
}

/// A pooled client connection left idle for longer than actix's default keep-alive (5 s) is
/// still open: clients pool idle connections for up to 90 s (reqwest's default), and a request
/// sent on one the server has just closed gets no answer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_stays_open_longer_than_clients_keep_it_pooled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = start().await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n");
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_secs(7)).await;
        }
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0_u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "round {round}: the connection answered {text:?}");
    }
    server.stop.cancel();
}
