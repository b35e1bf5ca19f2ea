//! Every code in the gateway's catalogue is documented in its OpenAPI part and answered by some
//! request, with exactly the catalogue's status.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{Options, Platform};
use hopsbridge_domain::AuthSubject;
use hopsbridge_gateway::error::GatewayCode;
use hopsbridge_gateway::session::{CookieSealer, SESSION_COOKIE, Session};
use hopsbridge_platform::Secret;
use hopsbridge_platform::http::ErrorCode as _;
use hopsbridge_sandbox::auth0::{ADMIN_CLIENT_ID, BadToken, TestUser, TokenSpec};
use serde_json::Value;
use std::collections::HashSet;

/// Codes no HTTP request can draw, with the reason.
const UNREACHABLE: [(GatewayCode, &str); 1] = [(
    GatewayCode::InvalidMethod,
    "actix parses methods with http 0.2, whose method characters are a subset of what reqwest's http 1.x accepts, \
     so a method that reached the handler always converts",
)];

/// The cookie key `common` configures.
const COOKIE_KEY: &str = "a-cookie-sealing-key-of-32-bytes-or-more";

#[test]
fn every_code_is_documented_in_the_gateways_part_of_the_document() {
    let doc = hopsbridge_gateway::api_doc::document(Vec::new()).to_json().unwrap();
    for code in GatewayCode::ALL {
        assert!(doc.contains(code.code()), "{} is not in the gateway's OpenAPI part", code.code());
    }
}

/// The codes seen so far, each checked against its status.
#[derive(Default)]
struct Seen(HashSet<GatewayCode>);

impl Seen {
    fn answered(&mut self, code: GatewayCode, (status, body): (u16, Value)) {
        assert_eq!((status, body["code"].as_str()), (code.status().as_u16(), Some(code.code())), "{code:?}: {body}");
        self.0.insert(code);
    }
}

async fn get(client: &reqwest::Client, url: String, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_code_is_answered_by_a_request_with_its_status() {
    let mut seen = Seen::default();
    let p = Platform::start(Options {
        login: true,
        per_user_per_minute: 60,
        cuttable_upstreams: true,
        ..Options::default()
    })
    .await;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let person = |name: &str| TestUser::database(name, &format!("{name}@example.com"), name);
    let token = |name: &str| p.token(&person(name));
    let bearer = |name: &str| format!("Bearer {}", token(name));
    let api = |path: &str| format!("{}{path}", p.gateway);

    seen.answered(GatewayCode::RouteNotFound, get(&browser, api("/api/nowhere"), &[]).await);
    seen.answered(GatewayCode::MethodNotAllowed, common::raw(&p.gateway, "TRACE /api/me", &token("ada")).await);
    seen.answered(GatewayCode::MethodNotImplemented, common::raw(&p.gateway, "BREW /api/me", &token("ada")).await);
    seen.answered(
        GatewayCode::NulCharacter,
        common::raw(&p.gateway, "GET /api/admin/users?q=a%00b", &token("ada")).await,
    );
    seen.answered(GatewayCode::InvalidPath, common::raw(&p.gateway, "GET /api/me/../me", &token("ada")).await);
    let cut_short = common::raw_request(
        &p.gateway,
        "PATCH /api/me",
        &format!("authorization: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n", bearer("ada")),
        b"{\"na",
        true,
    )
    .await;
    seen.answered(GatewayCode::InvalidBody, cut_short);
    let huge = browser
        .patch(api("/api/me"))
        .header("authorization", bearer("ada"))
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "x".repeat(300 * 1024)))
        .send()
        .await
        .unwrap();
    seen.answered(GatewayCode::PayloadTooLarge, (huge.status().as_u16(), huge.json().await.unwrap()));

    let busy = bearer("busy");
    for _ in 0..10 {
        assert_eq!(get(&browser, api("/api/auth/caller"), &[("authorization", &busy)]).await.0, 200);
    }
    seen.answered(GatewayCode::RateLimited, get(&browser, api("/api/auth/caller"), &[("authorization", &busy)]).await);

    seen.answered(GatewayCode::Unauthenticated, get(&browser, api("/api/me"), &[]).await);
    seen.answered(GatewayCode::Unauthenticated, get(&browser, api("/api/auth/session"), &[]).await);
    let expired = p.tenant.bad_token(BadToken::Expired, &TokenSpec::user(&person("ada"))).unwrap();
    seen.answered(
        GatewayCode::InvalidToken,
        get(&browser, api("/api/me"), &[("authorization", &format!("Bearer {expired}"))]).await,
    );

    // Machine clients: one not granted the admin role, and the granted one off the admin routes.
    let machine = |client: &str| format!("Bearer {}", p.tenant.machine_token(client, "").unwrap());
    seen.answered(
        GatewayCode::MachineClientNotAdmin,
        get(&browser, api("/api/admin/users"), &[("authorization", &machine("not-granted"))]).await,
    );
    seen.answered(
        GatewayCode::MachineClientAdminOnly,
        get(&browser, api("/api/me"), &[("authorization", &machine(ADMIN_CLIENT_ID))]).await,
    );

    // A valid session cookie without the session's CSRF token on a change.
    let session = Session {
        access_token: token("csrf"),
        subject: AuthSubject::parse("auth0|csrf").unwrap(),
        csrf: "the-sessions-csrf-token".to_owned(),
        expires_at: chrono::Utc::now().timestamp() + 3600,
    };
    let sealed = CookieSealer::new(&Secret::new(COOKIE_KEY.to_owned())).unwrap().seal(SESSION_COOKIE, &session);
    let refused = browser
        .patch(api("/api/me"))
        .header("cookie", format!("{SESSION_COOKIE}={sealed}"))
        .json(&serde_json::json!({"name": "C"}))
        .send()
        .await
        .unwrap();
    seen.answered(GatewayCode::CsrfFailed, (refused.status().as_u16(), refused.json().await.unwrap()));

    for (name, status, code) in
        [("sus", "suspended", GatewayCode::AccountSuspended), ("del", "deleted", GatewayCode::AccountDeleted)]
    {
        let auth = bearer(name);
        assert_eq!(get(&browser, api("/api/me"), &[("authorization", &auth)]).await.0, 200);
        // identity requires when a deleted account was deleted.
        let (by, deleted_at) = if status == "suspended" { ("'admin'", "NULL") } else { ("NULL", "now()") };
        p.sql(&format!(
            "UPDATE users SET status = '{status}', suspended_by = {by}, deleted_at = {deleted_at} \
             WHERE auth_subject = 'auth0|{name}'"
        ))
        .await;
        seen.answered(code, get(&browser, api("/api/me"), &[("authorization", &auth)]).await);
    }

    // identity is cut off: nobody can be resolved.
    let identity = p.identity_link.as_ref().unwrap();
    identity.cut();
    seen.answered(
        GatewayCode::IdentityUnavailable,
        get(&browser, api("/api/me"), &[("authorization", &bearer("ada"))]).await,
    );
    identity.restore();
    // billing's upstream is cut off: the person is resolved, the route's service is unreachable.
    p.services_link.as_ref().unwrap().cut();
    seen.answered(
        GatewayCode::UpstreamUnavailable,
        get(&browser, api("/api/billing/account"), &[("authorization", &bearer("ada"))]).await,
    );

    // Sign-in: a callback no login started, and one whose login Auth0 refused.
    seen.answered(GatewayCode::InvalidLoginState, get(&browser, api("/api/auth/callback?state=x&code=y"), &[]).await);
    let started = browser.get(api("/api/auth/login?returnTo=/")).send().await.unwrap();
    let authorize = reqwest::Url::parse(started.headers()["location"].to_str().unwrap()).unwrap();
    let state = authorize.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let login_cookie = started
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next().filter(|pair| pair.starts_with("hb_login=")))
        .unwrap()
        .to_owned();
    let refused_login = get(
        &browser,
        api(&format!("/api/auth/callback?state={state}&error=access_denied")),
        &[("cookie", &login_cookie)],
    )
    .await;
    seen.answered(GatewayCode::LoginFailed, refused_login);

    // A gateway whose Auth0 tenant is down from the start can check no token and start no sign-in.
    let down = Platform::start(Options { login: true, ..Options::default() }).await;
    down.tenant.stop().await;
    let auth = format!("Bearer {}", down.token(&person("ada")));
    seen.answered(
        GatewayCode::AuthUnavailable,
        get(&browser, format!("{}/api/me", down.gateway), &[("authorization", &auth)]).await,
    );
    seen.answered(GatewayCode::LoginUnavailable, get(&browser, format!("{}/api/auth/login", down.gateway), &[]).await);

    let mut covered = seen.0;
    covered.extend(UNREACHABLE.iter().map(|(code, _)| *code));
    assert_eq!(covered, GatewayCode::ALL.iter().copied().collect::<HashSet<_>>(), "every code has a request");
}
