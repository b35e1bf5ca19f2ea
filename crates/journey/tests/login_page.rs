//! A person reaches the product in a browser with every service as its own process: the
//! gateway's login leads to the sandbox tenant's sign-up page; signing up there fires the
//! post-registration Action through the gateway, so identity knows the person before their
//! first call; the session cookie then works on `/api/me`; a later login reuses Auth0's SSO
//! session, and the password logs in again after logging out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_journey::{Options, Platform, binaries, wait_for};
use hopsbridge_sandbox::auth0::{Auth0Sim, SESSION_COOKIE};
use hopsbridge_testkit::WEBHOOK_SECRET;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// A browser without JavaScript: follows nothing by itself, keeps the cookies it is given.
struct Browser {
    cookies: HashMap<String, String>,
    http: reqwest::Client,
}

impl Browser {
    fn new() -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { cookies: HashMap::new(), http }
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (name, value) = v.split(';').next().unwrap().split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let r = self.http.get(url).header("cookie", self.cookie_header()).send().await.unwrap();
        self.keep(&r);
        r
    }

    async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let r = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&"))
            .send()
            .await
            .unwrap();
        self.keep(&r);
        r
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn location(r: &reqwest::Response, base: &str) -> String {
    assert_eq!(r.status(), 302, "{:?}", r.headers());
    let to = r.headers()["location"].to_str().unwrap();
    if to.starts_with('/') { format!("{}{to}", base.trim_end_matches('/')) } else { to.to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_up_on_the_tenants_page_and_their_session_works_at_the_gateway() {
    let platform = Platform::start(binaries!(), &Options { clusters: 1, ..Options::default() }).await;
    let tenant = platform.world.auth0.issuer();
    let gateway = platform.gateway.clone();
    platform.world.auth0.set_post_registration_action(Auth0Sim::post_registration_action(
        &format!("{gateway}/webhooks/auth0/post-registration"),
        WEBHOOK_SECRET,
    ));

    let mut browser = Browser::new();
    let r = browser.get(&format!("{gateway}/api/auth/login?returnTo=%2Fwelcome")).await;
    let authorize = location(&r, &gateway);
    assert!(authorize.starts_with(&format!("{tenant}authorize?")), "{authorize}");
    let r = browser.get(&authorize).await;
    let login_page = location(&r, &tenant);
    let page = browser.get(&login_page).await;
    assert_eq!(page.status(), 200);
    let signup = login_page.replace("/u/login?", "/u/signup?");
    assert!(page.text().await.unwrap().contains(&signup[tenant.len() - 1..]), "the page links to sign-up");

    let r = browser
        .post_form(
            &signup,
            &[("name", "Rosalind Franklin"), ("email", "rosalind@example.com"), ("password", "Helix-1952")],
        )
        .await;
    let callback = location(&r, &tenant);
    assert!(callback.starts_with(&format!("{gateway}/api/auth/callback?")), "{callback}");
    assert!(browser.cookies.contains_key(SESSION_COOKIE), "Auth0's SSO session");

    // The Action reached identity through the gateway: the person exists before any call of theirs.
    let listed = wait_for("the Action's person in identity", Duration::from_secs(60), || async {
        let (status, body) =
            platform.call("GET", "/api/admin/users?q=rosalind%40example.com", &platform.admin_token, None).await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().and_then(|items| items.first().cloned())
    })
    .await;
    assert_eq!(platform.world.auth0.action_calls().len(), 1);
    assert_eq!(platform.world.auth0.action_calls()[0].outcome, Ok(200));
    assert_eq!(
        (listed["email"].as_str(), listed["name"].as_str()),
        (Some("rosalind@example.com"), Some("Rosalind Franklin"))
    );

    let r = browser.get(&callback).await;
    assert_eq!(location(&r, &gateway), format!("{gateway}/welcome"));
    assert!(browser.cookies.contains_key("hb_session"));
    let me: Value = browser.get(&format!("{gateway}/api/me")).await.json().await.unwrap();
    assert_eq!((me["id"].as_str(), me["email"].as_str()), (listed["id"].as_str(), Some("rosalind@example.com")));

    // Logging in again goes straight through Auth0's SSO session, to the same person.
    let r = browser.get(&format!("{gateway}/api/auth/login")).await;
    let r = browser.get(&location(&r, &gateway)).await;
    let callback = location(&r, &tenant);
    assert!(callback.starts_with(&format!("{gateway}/api/auth/callback?")), "no page: {callback}");
    browser.get(&callback).await;
    let me: Value = browser.get(&format!("{gateway}/api/me")).await.json().await.unwrap();
    assert_eq!(me["id"], listed["id"]);

    // Logging out ends both sessions; the password logs in again on the page.
    let r = browser.get(&format!("{gateway}/api/auth/logout")).await;
    let r = browser.get(&location(&r, &gateway)).await;
    assert_eq!(location(&r, &tenant), format!("{gateway}/"));
    assert!(!browser.cookies.contains_key(SESSION_COOKIE) && !browser.cookies.contains_key("hb_session"));
    assert_eq!(browser.get(&format!("{gateway}/api/me")).await.status(), 401);
    let r = browser.get(&format!("{gateway}/api/auth/login")).await;
    let r = browser.get(&location(&r, &gateway)).await;
    let login_page = location(&r, &tenant);
    assert!(login_page.starts_with(&format!("{tenant}u/login?")), "{login_page}");
    let r = browser.post_form(&login_page, &[("email", "Rosalind@Example.com"), ("password", "Helix-1952")]).await;
    browser.get(&location(&r, &tenant)).await;
    let me: Value = browser.get(&format!("{gateway}/api/me")).await.json().await.unwrap();
    assert_eq!(me["id"], listed["id"]);
    assert_eq!(platform.world.auth0.action_calls().len(), 1, "a log-in fires no Action");
}
