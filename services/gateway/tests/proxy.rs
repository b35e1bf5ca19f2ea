//! The gateway in front of a real identity service, with tokens from the sandbox's Auth0.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use hopsbridge_contracts::Service;
use hopsbridge_platform::config::env_var;
use hopsbridge_sandbox::auth0::{Auth0Config, Auth0Sim, BadToken, TestUser, TokenSpec};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, WEBHOOK_SECRET};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

struct Platform {
    gateway: String,
    tenant: Auth0Sim,
    db: TestDb,
    _bus: TestBus,
    stop: CancellationToken,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(per_user_per_minute: u64) -> Platform {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let stop = CancellationToken::new();

    let id = |k: &str, v: &str| (env_var(Service::Identity, k), v.to_owned());
    let env = vec![
        id("database.url", db.url()),
        id("nats.url", bus.url()),
        id("nats.prefix", bus.prefix()),
        id("http.port", "0"),
        id("http.workers", "1"),
        id("auth.gateway_signing_key", GATEWAY_SIGNING_KEY),
        id("webhook.secret", WEBHOOK_SECRET),
    ];
    let config =
        hopsbridge_platform::config::load_from(Service::Identity, &hopsbridge_identity::DEFAULTS, None, env).unwrap();
    let identity = hopsbridge_identity::build(config).await.unwrap();
    let identity_url = format!("http://127.0.0.1:{}", identity.port());
    tokio::spawn(identity.run_until_stopped(stop.clone()));

    let tenant = Auth0Sim::start(Auth0Config::default()).unwrap();
    let gw = |k: &str, v: &str| (env_var(Service::Gateway, k), v.to_owned());
    let mut env = vec![
        gw("http.port", "0"),
        gw("auth0.issuer", &tenant.issuer()),
        gw("auth.gateway_signing_key", GATEWAY_SIGNING_KEY),
        gw("limits.per_user_per_minute", &per_user_per_minute.to_string()),
        gw("limits.caller_cache_secs", "0"),
        gw("cors.allowed_origin", "https://app.hopsbridge.example"),
    ];
    for name in ["identity", "team", "provisioning", "metering", "billing"] {
        env.push(gw(&format!("upstreams.{name}"), &identity_url));
    }
    let config =
        hopsbridge_platform::config::load_from(Service::Gateway, &hopsbridge_gateway::DEFAULTS, None, env).unwrap();
    let gateway = hopsbridge_gateway::build(config).await.unwrap();
    let gateway_url = format!("http://127.0.0.1:{}", gateway.port());
    tokio::spawn(gateway.run_until_stopped(stop.clone()));
    Platform { gateway: gateway_url, tenant, db, _bus: bus, stop }
}

impl Platform {
    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.gateway)).header("x-request-id", "req-7");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, response.json().await.unwrap_or(Value::Null), headers)
    }

    fn token(&self, user: &TestUser) -> String {
        self.tenant.access_token(&TokenSpec::user(user)).unwrap()
    }

    async fn sql(&self, statement: &str) {
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.connect("identity").await;
        diesel::sql_query(statement).execute(&mut conn).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_reaches_their_account_with_an_auth0_token_and_is_created_on_the_way() {
    let p = start(600).await;
    let grace = TestUser::google("1034", "Grace@Example.com", "Grace");
    let (status, me, headers) = p.get("/api/me", Some(&p.token(&grace))).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["auth_subject"].as_str(), me["email"].as_str()),
        (Some("google-oauth2|1034"), Some("grace@example.com"))
    );
    assert_eq!(headers["x-request-id"], "req-7");

    // identity's own refusal carries the request id the gateway forwarded.
    let (status, body, _) = p.get("/api/admin/users", Some(&p.token(&grace))).await;
    assert_eq!(
        (status, body["code"].as_str(), body["request_id"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin_only"), Some("req-7"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused_before_any_service_sees_them() {
    let p = start(600).await;
    let (status, body, _) = p.get("/api/me", None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")));
    let spec = TokenSpec::user(&TestUser::database("ada", "ada@example.com", "Ada"));
    for kind in [
        BadToken::Expired,
        BadToken::WrongAudience,
        BadToken::AlgNone,
        BadToken::Hs256WithPublicKey,
        BadToken::TamperedPayload,
    ] {
        let (status, body, _) = p.get("/api/me", Some(&p.tenant.bad_token(kind, &spec).unwrap())).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")), "{kind:?}");
    }
    let (status, body, _) =
        p.get("/api/nowhere", Some(&p.token(&TestUser::database("ada", "ada@example.com", "Ada")))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("route_not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_a_client_sends_in_the_gateways_name_grant_nothing() {
    let p = start(600).await;
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let response = reqwest::Client::new()
        .get(format!("{}/api/admin/users", p.gateway))
        .bearer_auth(p.token(&ada))
        .header("x-hopsbridge-roles", "user,owner,admin")
        .header("x-hopsbridge-subject", "auth0|admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_and_deleted_accounts_are_refused_at_the_gateway() {
    let p = start(600).await;
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let token = p.token(&ada);
    assert_eq!(p.get("/api/me", Some(&token)).await.0, 200);
    p.sql("UPDATE users SET status = 'suspended' WHERE auth_subject = 'auth0|ada'").await;
    let (status, body, _) = p.get("/api/me", Some(&token)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("account_suspended")));
    p.sql("UPDATE users SET status = 'deleted' WHERE auth_subject = 'auth0|ada'").await;
    let (status, body, _) = p.get("/api/me", Some(&token)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("account_deleted")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_over_their_rate_is_told_when_to_come_back() {
    let p = start(60).await;
    let token = p.token(&TestUser::database("ada", "ada@example.com", "Ada"));
    for _ in 0..10 {
        assert_eq!(p.get("/api/me", Some(&token)).await.0, 200);
    }
    let (status, body, headers) = p.get("/api/me", Some(&token)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    assert_eq!(headers["retry-after"], "1");
    let other = p.token(&TestUser::database("grace", "grace@example.com", "Grace"));
    assert_eq!(p.get("/api/me", Some(&other)).await.0, 200, "another person has their own budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_frontend_origin_may_call_across_origins() {
    let p = start(600).await;
    let preflight = |origin: &str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{}/api/me", p.gateway))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let allowed = preflight("https://app.hopsbridge.example").await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.hopsbridge.example");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}
