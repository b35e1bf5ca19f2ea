//! A browser signing in through the gateway and the sandbox's Auth0, as a person would: login,
//! Auth0's authorize page, the callback, a session cookie, CSRF-protected changes, logout.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{Options, Platform};
use hopsbridge_sandbox::auth0::TestUser;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The `name=value` of a Set-Cookie header with that name, and its attributes.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let (pair, attributes) = v.split_once(';').unwrap_or((v, ""));
        pair.strip_prefix(&format!("{name}=")).map(|value| (value.to_owned(), attributes.to_owned()))
    })
}

fn location(headers: &HeaderMap) -> String {
    headers[LOCATION].to_str().unwrap().to_owned()
}

/// `GET path` as a browser holding `cookie`, answered in JSON.
async fn get_with_cookie(p: &Platform, path: &str, cookie: &str) -> Value {
    browser().get(format!("{}{path}", p.gateway)).header("cookie", cookie).send().await.unwrap().json().await.unwrap()
}

struct Started {
    authorize_url: String,
    login_cookie: String,
}

async fn start_login(p: &Platform, return_to: &str) -> Started {
    let r =
        browser().get(format!("{}/api/auth/login?returnTo={}", p.gateway, urlencode(return_to))).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let (login_cookie, attributes) = set_cookie(r.headers(), "hb_login").expect("a login cookie");
    assert!(attributes.contains("HttpOnly") && attributes.contains("Secure") && attributes.contains("SameSite=Lax"));
    Started { authorize_url: location(r.headers()), login_cookie }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)]).unwrap().trim_start_matches("v=").to_owned()
}

/// Auth0's authorize page signs the chosen user in and sends the browser to the callback.
async fn authorize(p: &Platform, started: &Started, user: &TestUser) -> String {
    p.tenant.sign_in_as(user);
    let r = browser().get(&started.authorize_url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let callback = location(r.headers());
    assert!(callback.starts_with(&format!("{}/api/auth/callback?", p.gateway)), "{callback}");
    callback
}

async fn callback(callback: &str, login_cookie: &str) -> reqwest::Response {
    browser().get(callback).header("cookie", format!("hb_login={login_cookie}")).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_uses_the_api_with_its_session_and_signs_out() {
    let p = Platform::start(Options { login: true, ..Options::default() }).await;
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let started = start_login(&p, "/billing?tab=cards").await;
    assert!(started.authorize_url.contains("code_challenge_method=S256"), "{}", started.authorize_url);
    assert!(started.authorize_url.contains("nonce=") && started.authorize_url.contains("state="));
    let callback_url = authorize(&p, &started, &ada).await;
    let r = callback(&callback_url, &started.login_cookie).await;
    assert_eq!(r.status(), 302, "{:?}", r.headers());
    assert_eq!(location(r.headers()), "/billing?tab=cards", "back where the login started");
    let (session, attributes) = set_cookie(r.headers(), "hb_session").expect("a session cookie");
    assert!(attributes.contains("HttpOnly") && attributes.contains("Secure") && attributes.contains("SameSite=Lax"));
    let cookie = format!("hb_session={session}");

    let me = get_with_cookie(&p, "/api/me", &cookie).await;
    assert_eq!(me["email"], "ada@example.com");

    // Changes made with the cookie need the session's CSRF token.
    let patch = |csrf: Option<String>| {
        let mut r =
            browser().patch(format!("{}/api/me", p.gateway)).header("cookie", &cookie).json(&json!({"name": "Ada L."}));
        if let Some(csrf) = csrf {
            r = r.header("x-csrf-token", csrf);
        }
        r.send()
    };
    let refused = patch(None).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "csrf_failed");
    assert_eq!(patch(Some("guessed".into())).await.unwrap().status(), 403);
    let session_info = get_with_cookie(&p, "/api/auth/session", &cookie).await;
    let csrf = session_info["csrf_token"].as_str().unwrap().to_owned();
    let renamed: Value = patch(Some(csrf)).await.unwrap().json().await.unwrap();
    assert_eq!(renamed["name"], "Ada L.");

    let out = browser().get(format!("{}/api/auth/logout", p.gateway)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(out.status(), 302);
    assert!(location(out.headers()).starts_with(&format!("{}v2/logout?", p.tenant.issuer())));
    let (cleared, attributes) = set_cookie(out.headers(), "hb_session").unwrap();
    assert!(cleared.is_empty() && attributes.contains("Max-Age=0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_state_a_replayed_code_and_a_foreign_return_address_get_nowhere() {
    let p = Platform::start(Options { login: true, ..Options::default() }).await;
    let ada = TestUser::database("ada", "ada@example.com", "Ada");

    // A callback whose state is not the one this browser's login started with.
    let started = start_login(&p, "/").await;
    let callback_url = authorize(&p, &started, &ada).await;
    let other = start_login(&p, "/").await;
    let r = callback(&callback_url, &other.login_cookie).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_login_state");
    let r = browser().get(&callback_url).send().await.unwrap();
    assert_eq!(r.status(), 400, "no login cookie at all");

    // The genuine callback works once; replaying it (cookie and all) does not.
    assert_eq!(callback(&callback_url, &started.login_cookie).await.status(), 302);
    let replay = callback(&callback_url, &started.login_cookie).await;
    assert_eq!(replay.status(), 400);
    assert!(set_cookie(replay.headers(), "hb_session").is_none());
    assert_eq!(replay.json::<Value>().await.unwrap()["code"], "login_failed");

    // returnTo pointing elsewhere ends at the site's root.
    for hostile in ["https://evil.example/phish", "//evil.example", "/\\evil.example"] {
        let started = start_login(&p, hostile).await;
        let callback_url = authorize(&p, &started, &ada).await;
        let r = callback(&callback_url, &started.login_cookie).await;
        assert_eq!(location(r.headers()), "/", "{hostile}");
    }

    // A session cookie that was tampered with is no session.
    let r = browser()
        .get(format!("{}/api/me", p.gateway))
        .header("cookie", "hb_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
