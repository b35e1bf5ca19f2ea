//! What the gateway answers a method a path does not take: 405 with `Allow` for a documented
//! path (TRACE included, never forwarded nor echoed), 501 for a method no path takes, before
//! any token is looked at; and a NUL character anywhere in a request is refused before it is
//! forwarded.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{Options, Platform};
use hopsbridge_sandbox::auth0::TestUser;

/// Sends `method path` as written with `headers` and `body`; answers the status, `Allow` and
/// the JSON body.
async fn send(
    gateway: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let answer = hopsbridge_testkit::raw_http(gateway, method, path, headers, body.as_bytes()).await;
    (answer.status, answer.allow, answer.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_take_is_405_with_allow_and_an_unknown_one_501() {
    let p = Platform::start(Options::default()).await;
    let bearer = format!("authorization: Bearer {}\r\n", p.token(&TestUser::database("ada", "ada@example.com", "Ada")));
    for (method, path, allow) in [
        ("TRACE", "/api/me", "GET, PATCH, DELETE"),
        ("PUT", "/api/me", "GET, PATCH, DELETE"),
        ("TRACE", "/api/admin/users/0193a000-0000-7000-8000-000000000001", "GET"),
        ("DELETE", "/api/usage", "GET"),
        ("TRACE", "/api/invitations/abc", "GET"),
        ("TRACE", "/api/auth/caller", "GET"),
        ("POST", "/api/openapi.json", "GET"),
        ("GET", "/webhooks/stripe", "POST"),
        ("TRACE", "/webhooks/auth0/post-registration", "POST"),
    ] {
        for headers in ["", bearer.as_str()] {
            let (status, allowed, body) = send(&p.gateway, method, path, headers, "").await;
            assert_eq!(
                (status, allowed.as_deref(), body["code"].as_str()),
                (405, Some(allow), Some("method_not_allowed")),
                "{method} {path} with {headers:?}: {body}"
            );
        }
    }
    let (status, _, body) = send(&p.gateway, "TRACE", "/api/me", &bearer, "echo-me").await;
    assert!(status == 405 && !body.to_string().contains("echo-me"), "TRACE is never echoed: {body}");
    for path in ["/api/me", "/api/nowhere", "/webhooks/stripe", "/elsewhere"] {
        let (status, _, body) = send(&p.gateway, "BREW", path, &bearer, "").await;
        assert_eq!((status, body["code"].as_str()), (501, Some("method_not_implemented")), "BREW {path}");
    }
    // A path nobody documents is still not found, whatever the method.
    let (status, _, body) = send(&p.gateway, "TRACE", "/elsewhere", "", "").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("route_not_found")));
    // And the methods a path takes still work.
    let (status, _, body) = send(&p.gateway, "GET", "/api/me", &bearer, "").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_anywhere_is_refused_at_the_gateway_and_nothing_is_forwarded() {
    let p = Platform::start(Options::default()).await;
    let bearer = format!("authorization: Bearer {}\r\n", p.token(&TestUser::database("ada", "ada@example.com", "Ada")));
    let json = "content-type: application/json\r\n";
    for (method, path, headers, body) in [
        ("GET", "/api/admin/users?q=a%00b", bearer.clone(), ""),
        ("PATCH", "/api/me", format!("{bearer}{json}"), r#"{"name": "a\u0000b"}"#),
        (
            "POST",
            "/webhooks/auth0/post-registration",
            json.to_owned(),
            r#"{"user_id": "auth0|a\u0000", "email": "x@example.com"}"#,
        ),
        ("POST", "/webhooks/stripe", json.to_owned(), r#"{"id": "evt_\u0000"}"#),
    ] {
        let (status, _, answer) = send(&p.gateway, method, path, &headers, body).await;
        assert_eq!((status, answer["code"].as_str()), (400, Some("nul_character")), "{method} {path}: {answer}");
    }
    let (status, _, me) = send(&p.gateway, "GET", "/api/me", &bearer, "").await;
    assert_eq!(
        (status, me["name"].as_str()),
        (200, Some("")),
        "ada's first call made her; the refused PATCH did not rename her"
    );
}
