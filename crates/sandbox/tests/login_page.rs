//! The tenant's hosted login page, driven over HTTP as a browser without JavaScript would:
//! follow `/authorize` to the page, post its forms, keep the `auth0` cookie.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hopsbridge_sandbox::auth0::{Auth0Config, Auth0Sim, SESSION_COOKIE, TestUser, WEBHOOK_SECRET_HEADER};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const CALLBACK: &str = "http://127.0.0.1:9/api/auth/callback";

fn start() -> Auth0Sim {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Auth0Sim::start(Auth0Config::default()).unwrap();
    sim.allow_urls(CALLBACK, "http://127.0.0.1:9/");
    sim
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn query_of(location: &str) -> HashMap<String, String> {
    serde_urlencoded::from_str(location.split_once('?').map_or("", |(_, q)| q)).unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// The `auth0` cookie a response sets, with its attributes.
fn session_cookie(r: &reqwest::Response) -> Option<(String, String)> {
    r.headers().get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().unwrap();
        let (pair, attributes) = v.split_once(';').unwrap_or((v, ""));
        let (name, value) = pair.split_once('=')?;
        (name == SESSION_COOKIE).then(|| (value.to_owned(), attributes.to_owned()))
    })
}

fn authorize_url(sim: &Auth0Sim, extra: &[(&str, &str)]) -> String {
    let cfg = Auth0Config::default();
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", cfg.client_id.as_str()),
        ("redirect_uri", CALLBACK),
        ("scope", "openid profile email"),
        ("audience", cfg.audience.as_str()),
        ("state", "st-1"),
        ("nonce", "n-1"),
    ];
    params.extend_from_slice(extra);
    format!("{}authorize?{}", sim.issuer(), serde_urlencoded::to_string(&params).unwrap())
}

/// `GET /authorize` (with the session cookie, if any); answers where it sends the browser.
async fn authorize(sim: &Auth0Sim, extra: &[(&str, &str)], cookie: Option<&str>) -> String {
    let mut request = client().get(authorize_url(sim, extra));
    if let Some(c) = cookie {
        request = request.header("cookie", format!("{SESSION_COOKIE}={c}"));
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 302);
    location(&r)
}

async fn post_form(sim: &Auth0Sim, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}{}", sim.issuer(), path.trim_start_matches('/')))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap()
}

async fn exchange(sim: &Auth0Sim, code: &str) -> Value {
    let cfg = Auth0Config::default();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", cfg.client_id.as_str()),
        ("client_secret", cfg.client_secret.as_str()),
        ("code", code),
        ("redirect_uri", CALLBACK),
    ];
    let r = post_form(sim, "/oauth/token", &form).await;
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    let id = tokens["id_token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(id).unwrap()).unwrap()
}

/// What the Action posted: the secret header and the body, in order.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook that records what the Action posts, with the secret header.
fn action_sink() -> (String, Seen) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    let server = HttpServer::new(move || {
        let sink = Arc::clone(&sink);
        App::new().route(
            "/webhooks/auth0",
            web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                let sink = Arc::clone(&sink);
                async move {
                    let secret = req.headers().get(WEBHOOK_SECRET_HEADER).map(|v| v.to_str().unwrap().to_owned());
                    sink.lock().unwrap().push((secret.unwrap_or_default(), body.into_inner()));
                    HttpResponse::Ok().finish()
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let url = format!("http://{}/webhooks/auth0", server.addrs()[0]);
    tokio::spawn(server.run());
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_up_on_the_page_fires_the_action_once_and_logs_in_again_with_the_password() {
    let sim = start();
    let (url, seen) = action_sink();
    sim.set_post_registration_action(Auth0Sim::post_registration_action(&url, "s3cret"));

    // Nobody chosen, no session: the login page, which links to the sign-up page.
    let to_page = authorize(&sim, &[], None).await;
    assert!(to_page.starts_with("/u/login?state="), "{to_page}");
    let transaction = query_of(&to_page)["state"].clone();
    let page = client().get(format!("{}{}", sim.issuer(), &to_page[1..])).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("name=\"password\"") && html.contains(&format!("/u/signup?state={transaction}")), "{html}");
    assert!(!html.contains("<script"), "no script needed");
    let to_signup = authorize(&sim, &[("screen_hint", "signup")], None).await;
    assert!(to_signup.starts_with("/u/signup?state="), "{to_signup}");

    let signup = format!("/u/signup?state={transaction}");
    let weak = post_form(&sim, &signup, &[("email", "new@example.com"), ("password", "short"), ("name", "N")]).await;
    assert_eq!(weak.status(), 400);
    assert!(weak.text().await.unwrap().contains("at least 8 characters"));
    let bad = post_form(&sim, &signup, &[("email", "<b>@x"), ("password", "Passw0rd!"), ("name", "N")]).await;
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.unwrap();
    assert!(text.contains("Email is not valid.") && text.contains("&lt;b&gt;@x") && !text.contains("<b>@x"));
    assert!(sim.user_by_email("Username-Password-Authentication", "new@example.com").is_none(), "nothing made");

    let form = [("email", "New@Example.com"), ("password", "Passw0rd!"), ("name", "Nora <New>")];
    let done = post_form(&sim, &signup, &form).await;
    assert_eq!(done.status(), 302);
    let back = location(&done);
    assert!(back.starts_with(CALLBACK), "{back}");
    assert_eq!(query_of(&back)["state"], "st-1");
    let (sid, attributes) = session_cookie(&done).expect("an SSO session cookie");
    assert!(attributes.contains("HttpOnly") && attributes.contains("Path=/"), "{attributes}");
    let id = exchange(&sim, &query_of(&back)["code"]).await;
    assert_eq!((id["email"].as_str(), id["name"].as_str()), (Some("New@Example.com"), Some("Nora <New>")));
    assert_eq!(id["email_verified"], false, "a database sign-up has not verified its address");
    let sub = id["sub"].as_str().unwrap().to_owned();
    assert!(sub.starts_with("auth0|") && sub.len() == "auth0|".len() + 24, "{sub}");

    // The Action ran in the background, once, with the body and secret of the Action path.
    for _ in 0..200 {
        if !sim.action_calls().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let calls = sim.action_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].user_id.as_str(), calls[0].outcome.clone()), (sub.as_str(), Ok(200)));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "s3cret");
        let body = &seen[0].1;
        assert_eq!((body["user_id"].as_str(), body["email"].as_str()), (Some(sub.as_str()), Some("New@Example.com")));
        assert_eq!(body["connection"], "Username-Password-Authentication");
        assert_eq!((body["name"].as_str(), body["email_verified"].as_bool()), (Some("Nora <New>"), Some(false)));
    }

    // The same address again, in another case, is taken; no second user, no second Action.
    let again_page = authorize(&sim, &[("screen_hint", "signup")], None).await;
    let again =
        post_form(&sim, &again_page, &[("email", "new@example.COM"), ("password", "Passw0rd!"), ("name", "Other")])
            .await;
    assert_eq!(again.status(), 400);
    assert!(again.text().await.unwrap().contains("The user already exists."));

    // The SSO session signs the person in without the page; prompt=login asks again.
    let quiet = authorize(&sim, &[], Some(&sid)).await;
    assert!(quiet.starts_with(CALLBACK), "{quiet}");
    assert_eq!(exchange(&sim, &query_of(&quiet)["code"]).await["sub"], sub.as_str());
    let forced = authorize(&sim, &[("prompt", "login")], Some(&sid)).await;
    assert!(forced.starts_with("/u/login?state="), "{forced}");

    // Logging in: a wrong password and an unknown address get the same answer; the right one signs in.
    let login = format!("/u/login?state={}", query_of(&forced)["state"]);
    for (email, password) in [("new@example.com", "Passw0rd?"), ("nobody@example.com", "Passw0rd!"), ("", "")] {
        let r = post_form(&sim, &login, &[("email", email), ("password", password)]).await;
        assert_eq!(r.status(), 400, "{email}");
        assert!(session_cookie(&r).is_none());
        let text = r.text().await.unwrap();
        assert!(text.contains("Wrong email or password.") || text.contains("Enter your email and password."));
    }
    let ok = post_form(&sim, &login, &[("email", "NEW@example.com"), ("password", "Passw0rd!")]).await;
    assert_eq!(ok.status(), 302);
    assert_eq!(exchange(&sim, &query_of(&location(&ok))["code"]).await["sub"], sub.as_str());
    let (second_sid, _) = session_cookie(&ok).unwrap();
    // A transaction ends with its sign-in.
    let replay = post_form(&sim, &login, &[("email", "new@example.com"), ("password", "Passw0rd!")]).await;
    assert_eq!(replay.status(), 400);

    // Logging out ends the session: the next authorize shows the page again.
    let out = client()
        .get(format!("{}v2/logout?returnTo=http%3A%2F%2F127.0.0.1%3A9%2F", sim.issuer()))
        .header("cookie", format!("{SESSION_COOKIE}={second_sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 302);
    let (cleared, attributes) = session_cookie(&out).unwrap();
    assert!(cleared.is_empty() && attributes.contains("Max-Age=0"));
    assert!(authorize(&sim, &[], Some(&second_sid)).await.starts_with("/u/login?state="));
    assert!(authorize(&sim, &[], Some("forged")).await.starts_with("/u/login?state="));
    assert_eq!(sim.action_calls().len(), 1, "log-ins fire no Action");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_none_social_sign_in_and_the_test_paths_keep_auth0s_answers() {
    let sim = start();
    let (url, seen) = action_sink();
    sim.set_post_registration_action(Auth0Sim::post_registration_action(&url, "s3cret"));

    let none = authorize(&sim, &[("prompt", "none")], None).await;
    let q = query_of(&none);
    assert!(none.starts_with(CALLBACK), "{none}");
    assert_eq!((q["error"].as_str(), q["state"].as_str()), ("login_required", "st-1"));
    let odd = query_of(&authorize(&sim, &[("prompt", "sometimes")], None).await);
    assert_eq!(odd["error"], "invalid_request");

    // Social sign-in by address: a google-oauth2 user, no Action.
    let page = authorize(&sim, &[], None).await;
    let r = post_form(
        &sim,
        &format!("/u/login/google?{}", &page.split_once('?').unwrap().1),
        &[("email", "g@example.com")],
    )
    .await;
    assert_eq!(r.status(), 302);
    let id = exchange(&sim, &query_of(&location(&r))["code"]).await;
    assert!(id["sub"].as_str().unwrap().starts_with("google-oauth2|"), "{id}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(sim.action_calls().is_empty() && seen.lock().unwrap().is_empty(), "social sign-ins fire no Action");

    // sign_in_as and login_hint still sign in at once, even with prompt=login.
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    sim.sign_in_as(&ada);
    let direct = authorize(&sim, &[("prompt", "login")], None).await;
    assert_eq!(exchange(&sim, &query_of(&direct)["code"]).await["sub"], "auth0|ada");
    let hinted = authorize(&sim, &[("login_hint", "auth0|ada")], None).await;
    assert_eq!(exchange(&sim, &query_of(&hinted)["code"]).await["sub"], "auth0|ada");

    // A seeded password logs in on the page.
    let grace = TestUser::database("grace", "grace@example.com", "Grace");
    sim.add_user_with_password(grace, "Hopper-1906");
    let page = authorize(&sim, &[], None).await;
    let r = post_form(&sim, &page, &[("email", "grace@example.com"), ("password", "Hopper-1906")]).await;
    assert_eq!(r.status(), 302);
    assert_eq!(exchange(&sim, &query_of(&location(&r))["code"]).await["sub"], "auth0|grace");

    // A page or form of an unknown transaction is Auth0's error page.
    assert_eq!(client().get(format!("{}u/login?state=nope", sim.issuer())).send().await.unwrap().status(), 400);
    let r = post_form(&sim, "/u/signup?state=nope", &[("email", "x@example.com"), ("password", "Passw0rd!")]).await;
    assert_eq!(r.status(), 400);
    assert!(sim.user_by_email("Username-Password-Authentication", "x@example.com").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_grant_gives_a_database_user_a_token_only_when_the_application_has_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = Auth0Config::default();
    let grant = |sim: &Auth0Sim, app: (&str, &str), username: &str, password: &str, audience: Option<&str>| {
        let mut form = vec![
            ("grant_type", "password".to_owned()),
            ("client_id", app.0.to_owned()),
            ("client_secret", app.1.to_owned()),
            ("username", username.to_owned()),
            ("password", password.to_owned()),
            ("scope", "openid email".to_owned()),
        ];
        if let Some(a) = audience {
            form.push(("audience", a.to_owned()));
        }
        let url = format!("{}oauth/token", sim.issuer());
        async move {
            let r = client()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string(&form).unwrap())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let frontend = (cfg.client_id.as_str(), cfg.client_secret.as_str());
    let ada = TestUser::database("ada", "ada@example.com", "Ada");

    let off = Auth0Sim::start(Auth0Config::default()).unwrap();
    off.add_user_with_password(ada.clone(), "Lovelace-1815");
    let (status, body) = grant(&off, frontend, "ada@example.com", "Lovelace-1815", Some(&cfg.audience)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("unauthorized_client")), "off on a new application");

    let sim = Auth0Sim::start(Auth0Config { password_grant: true, ..Auth0Config::default() }).unwrap();
    sim.add_user_with_password(ada, "Lovelace-1815");
    let (status, body) = grant(&sim, frontend, "ADA@example.com", "Lovelace-1815", Some(&cfg.audience)).await;
    assert_eq!(status, 200, "{body}");
    let part = body["access_token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
    assert_eq!((claims["sub"].as_str(), claims["azp"].as_str()), (Some("auth0|ada"), Some(cfg.client_id.as_str())));
    assert_eq!(claims["aud"][0], cfg.audience.as_str());
    assert!(body["id_token"].is_string());

    let wrong = grant(&sim, frontend, "ada@example.com", "Lovelace-1816", Some(&cfg.audience)).await;
    assert_eq!((wrong.0, wrong.1["error"].as_str()), (403, Some("invalid_grant")));
    let nobody = grant(&sim, frontend, "nobody@example.com", "Lovelace-1815", Some(&cfg.audience)).await;
    assert_eq!((nobody.0, nobody.1["error"].as_str()), (403, Some("invalid_grant")));
    let no_audience = grant(&sim, frontend, "ada@example.com", "Lovelace-1815", None).await;
    assert_eq!((no_audience.0, no_audience.1["error"].as_str()), (403, Some("access_denied")));
    let machine = (hopsbridge_sandbox::auth0::ADMIN_CLIENT_ID, hopsbridge_sandbox::auth0::ADMIN_CLIENT_SECRET);
    let (status, body) = grant(&sim, machine, "ada@example.com", "Lovelace-1815", Some(&cfg.audience)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("unauthorized_client")));
    let bad_secret = grant(&sim, (frontend.0, "nope"), "ada@example.com", "Lovelace-1815", Some(&cfg.audience)).await;
    assert_eq!(bad_secret.0, 401);
}
