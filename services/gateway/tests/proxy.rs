//! The gateway in front of a real identity service, with tokens from the sandbox's Auth0.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use hopsbridge_sandbox::auth0::{BadToken, TestUser, TokenSpec};
use reqwest::StatusCode;

mod common;

use common::{Options, Platform};

async fn start(per_user_per_minute: u64) -> Platform {
    Platform::start(Options { per_user_per_minute, ..Options::default() }).await
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
    p.sql("UPDATE users SET status = 'suspended', suspended_by = 'admin' WHERE auth_subject = 'auth0|ada'").await;
    let (status, body, _) = p.get("/api/me", Some(&token)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("account_suspended")));
    // The billing page's routes, where a suspension is resolved, are still forwarded (billing's
    // upstream is identity here, which has no such route).
    for path in ["/api/billing", "/api/billing/payment-method", "/api/credits", "/api/credits/purchase"] {
        let (status, body, _) = p.get(path, Some(&token)).await;
        assert_ne!(body["code"], "account_suspended", "{path}: {status} {body}");
    }
    p.sql(
        "UPDATE users SET status = 'deleted', deleted_at = now(), suspended_by = NULL WHERE auth_subject = 'auth0|ada'",
    )
    .await;
    for path in ["/api/me", "/api/billing", "/api/credits"] {
        let (status, body, _) = p.get(path, Some(&token)).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("account_deleted")), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_caller_cache_on_a_suspension_reaches_a_busy_person_within_its_time() {
    let p = Platform::start(Options { caller_cache_secs: 2, ..Options::default() }).await;
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let token = p.token(&ada);
    assert_eq!(p.get("/api/me", Some(&token)).await.0, 200);
    // Requests keep coming every 50 ms, so the cached answer is refreshed in the background
    // instead of expiring; the suspension must still be seen within the 2 s.
    p.sql("UPDATE users SET status = 'suspended', suspended_by = 'admin' WHERE auth_subject = 'auth0|ada'").await;
    let suspended_at = std::time::Instant::now();
    let refused_after = loop {
        let (status, body, _) = p.get("/api/me", Some(&token)).await;
        if status == StatusCode::FORBIDDEN {
            assert_eq!(body["code"], "account_suspended");
            break suspended_at.elapsed();
        }
        assert_eq!(status, 200, "{body}");
        assert!(suspended_at.elapsed() < std::time::Duration::from_secs(4), "still let in after 4 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // The 2 s, plus one pause between requests and some slack for a slow machine.
    assert!(refused_after <= std::time::Duration::from_millis(2_500), "refused only after {refused_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_over_their_rate_is_told_when_to_come_back() {
    // 12 a minute: a burst of 10 (the least burst), then one request every 5 s. A loaded
    // machine takes well under 5 s for eleven requests, so no token comes back before the last.
    let p = start(12).await;
    let token = p.token(&TestUser::database("ada", "ada@example.com", "Ada"));
    for _ in 0..10 {
        assert_eq!(p.get("/api/me", Some(&token)).await.0, 200);
    }
    let (status, body, headers) = p.get("/api/me", Some(&token)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after} is the wait for the next request");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0s_action_reaches_identitys_webhook_through_the_gateway() {
    let p = start(600).await;
    let url = format!("{}/webhooks/auth0/post-registration", p.gateway);
    let client = reqwest::Client::new();
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let wrong = hopsbridge_sandbox::auth0::Auth0Sim::post_registration_action(&url, "not-the-webhook-secret");
    assert_eq!(wrong.fire(&client, &ada).await.unwrap(), 401);
    let action =
        hopsbridge_sandbox::auth0::Auth0Sim::post_registration_action(&url, hopsbridge_testkit::WEBHOOK_SECRET);
    assert_eq!(action.fire(&client, &ada).await.unwrap(), 200);
    let (status, me, _) = p.get("/api/me", Some(&p.token(&ada))).await;
    assert_eq!((status.as_u16(), me["name"].as_str()), (200, Some("Ada")), "the Action's user is the token's person");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_says_who_it_takes_the_caller_to_be() {
    let p = start(600).await;
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let (status, caller, _) = p.get("/api/auth/caller", Some(&p.token(&ada))).await;
    assert_eq!(status, 200);
    assert_eq!(caller["subject"], "auth0|ada");
    assert_eq!(caller["roles"], serde_json::json!(["user", "owner"]));
    assert_eq!(caller["account_owner_id"], caller["user_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_at_the_gateway() {
    let p = start(600).await;
    let token = p.token(&TestUser::database("ada", "ada@example.com", "Ada"));
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(300 * 1024));
    let response = reqwest::Client::new()
        .patch(format!("{}/api/me", p.gateway))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_routes_are_never_reached_through_the_gateway() {
    let p = start(600).await;
    let token = p.token(&TestUser::database("ada", "ada@example.com", "Ada"));
    let cluster = uuid::Uuid::now_v7();
    for path in [
        format!("/internal/clusters/{cluster}/kubeconfig"),
        format!("/internal/clusters/{cluster}/projects"),
        format!("/api/internal/clusters/{cluster}/kubeconfig"),
        "/internal/callers/resolve".to_owned(),
    ] {
        for token in [None, Some(token.as_str())] {
            let (status, body, _) = p.get(&path, token).await;
            assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("route_not_found")), "{path}");
        }
    }
    // identity serves POST /internal/callers/resolve; through the gateway it is no route.
    let response = reqwest::Client::new()
        .post(format!("{}/internal/callers/resolve", p.gateway))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // A path the URL parser would rewrite (dot segments, plain or percent-encoded, backslashes)
    // is refused by the gateway itself: /api/me/../../internal/callers/resolve would otherwise be
    // routed as /api/me and sent to identity as /internal/callers/resolve.
    for line in [
        "POST /api/me/../internal/callers/resolve".to_owned(),
        "POST /api/me/../../internal/callers/resolve".to_owned(),
        "POST /api/me/%2e%2e/%2E%2E/internal/callers/resolve".to_owned(),
        "POST /api/me/.%2e/%2e./internal/callers/resolve".to_owned(),
        format!("GET /api/cluster/../../internal/clusters/{cluster}/kubeconfig"),
        "GET /api/me/./".to_owned(),
        "POST /api/me/\\..\\..\\internal/callers/resolve".to_owned(),
    ] {
        let (status, body) = common::raw(&p.gateway, &line, &token).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_path")), "{line}: {body}");
    }
    for line in ["GET /api/me", "GET /api/me?x=a%40b&y=..", "GET /api/me?"] {
        let (status, body) = common::raw(&p.gateway, line, &token).await;
        assert_eq!((status, body["auth_subject"].as_str()), (200, Some("auth0|ada")), "{line} passes: {body}");
    }
}
