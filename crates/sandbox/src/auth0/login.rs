//! The tenant's hosted login, as Universal Login meets a person: `/authorize` without a chosen
//! user and without a remembered session sends the browser to `/u/login?state=<transaction>`
//! (`/u/signup` with `screen_hint=signup`), plain HTML forms with no script. Log-in checks the
//! password; sign-up makes a database-connection user (`auth0|<24 hex digits>`, address not yet
//! verified), fires the post-registration Action in the background as Auth0 does (never waited
//! for, never retried), and signs them in. "Continue with Google" signs in a social user by
//! address, with no Action. A successful sign-in starts the SSO session (the `auth0` cookie),
//! so a later `/authorize` signs the same person in without the page until `prompt=login`,
//! `/v2/logout`, or the session's inactivity (3 days) or lifetime (30 days) ends it.
//!
//! Passwords are kept as HMAC-SHA256 under a random 16-byte salt and compared in constant
//! time: the sandbox holds throw-away passwords in memory, and a memory-hard hash (argon2)
//! would cost each test's sign-up far more in debug builds without protecting anything more.

use super::{Authorization, Shared, State, TestUser, lock, now, redirect};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The SSO session cookie's name, as Auth0's.
pub const SESSION_COOKIE: &str = "auth0";
/// A session ends after this long without a sign-in through it (Auth0's default, 3 days).
pub const SESSION_INACTIVITY_SECS: i64 = 3 * 86_400;
/// A session ends this long after it began, whatever its use (Auth0's default, 30 days).
pub const SESSION_LIFETIME_SECS: i64 = 30 * 86_400;
/// How long a login page's transaction stays usable.
const TRANSACTION_SECS: i64 = 3600;
/// The database connection's name.
pub(super) const DATABASE_CONNECTION: &str = "Username-Password-Authentication";

/// An `/authorize` request waiting for the person to sign in on the page.
pub(super) struct Transaction {
    pub(super) authorization: Authorization,
    created: i64,
}

/// A remembered sign-in.
pub(super) struct SsoSession {
    sub: String,
    created: i64,
    last_used: i64,
}

/// A stored password: salt and HMAC-SHA256(salt, password).
pub(super) struct Password {
    salt: [u8; 16],
    mac: Vec<u8>,
}

impl Password {
    pub(super) fn new(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        Self { salt, mac: Self::mac(&salt, password).finalize().into_bytes().to_vec() }
    }

    fn mac(salt: &[u8; 16], password: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salt).unwrap_or_else(|_| unreachable!("any key length"));
        mac.update(password.as_bytes());
        mac
    }

    fn matches(&self, password: &str) -> bool {
        Self::mac(&self.salt, password).verify_slice(&self.mac).is_ok()
    }
}

/// What one firing of the post-registration Action came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionCall {
    /// The new user's `user_id`.
    pub user_id: String,
    /// The webhook's status, or why it was not reached.
    pub outcome: Result<u16, String>,
}

pub(super) fn new_transaction(s: &mut State, authorization: Authorization) -> String {
    let at = now();
    s.transactions.retain(|_, t| at - t.created < TRANSACTION_SECS);
    let id = random_id();
    s.transactions.insert(id.clone(), Transaction { authorization, created: at });
    id
}

/// The person the request's SSO session cookie names, if the session is alive; it is
/// refreshed as used.
pub(super) fn session_user(s: &mut State, req: &HttpRequest) -> Option<TestUser> {
    let sid = cookie(req, SESSION_COOKIE)?;
    let at = now();
    s.sessions.retain(|_, x| at - x.last_used < SESSION_INACTIVITY_SECS && at - x.created < SESSION_LIFETIME_SECS);
    let session = s.sessions.get_mut(&sid)?;
    session.last_used = at;
    let sub = session.sub.clone();
    s.users.get(&sub).cloned()
}

/// Ends the request's SSO session, if any; answers the cookie that clears it.
pub(super) fn end_session(s: &mut State, req: &HttpRequest) -> String {
    if let Some(sid) = cookie(req, SESSION_COOKIE) {
        s.sessions.remove(&sid);
    }
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    let header = req.headers().get("cookie")?.to_str().ok()?;
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn random_id() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// Signs `user` in for the transaction: a new SSO session and the code sent to the callback.
fn signed_in(s: &mut State, transaction: &str, user: TestUser) -> HttpResponse {
    let Some(t) = s.transactions.remove(transaction) else { return invalid_state() };
    let sid = random_id();
    let at = now();
    s.sessions.insert(sid.clone(), SsoSession { sub: user.sub.clone(), created: at, last_used: at });
    let location = super::issue_code(s, &t.authorization, user);
    let mut response = redirect(&location);
    if let Ok(value) =
        format!("{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_INACTIVITY_SECS}")
            .parse::<actix_web::http::header::HeaderValue>()
    {
        response.headers_mut().append(actix_web::http::header::SET_COOKIE, value);
    }
    response
}

/// `?state=` of the login pages.
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    #[serde(default)]
    state: String,
}

fn transaction_alive(s: &State, id: &str) -> bool {
    s.transactions.get(id).is_some_and(|t| now() - t.created < TRANSACTION_SECS)
}

/// `GET /u/login`.
pub(super) async fn login_page(state: Shared, query: web::Query<PageQuery>) -> HttpResponse {
    if !transaction_alive(&lock(&state), &query.state) {
        return invalid_state();
    }
    html(StatusCode::OK, &login_form(&query.state, "", None))
}

/// `GET /u/signup`.
pub(super) async fn signup_page(state: Shared, query: web::Query<PageQuery>) -> HttpResponse {
    if !transaction_alive(&lock(&state), &query.state) {
        return invalid_state();
    }
    html(StatusCode::OK, &signup_form(&query.state, "", "", None))
}

fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map_or("", |v| v.trim())
}

fn find_database_user(s: &State, email: &str) -> Option<TestUser> {
    s.users.values().find(|u| u.connection == DATABASE_CONNECTION && u.email.eq_ignore_ascii_case(email)).cloned()
}

/// The database user with this address (any case) and password, if both are right.
pub(super) fn check_password(s: &State, email: &str, password: &str) -> Option<TestUser> {
    find_database_user(s, email.trim()).filter(|u| s.passwords.get(&u.sub).is_some_and(|p| p.matches(password)))
}

/// `POST /u/login`: email and password.
pub(super) async fn login_submit(
    state: Shared,
    query: web::Query<PageQuery>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let mut s = lock(&state);
    if !transaction_alive(&s, &query.state) {
        return invalid_state();
    }
    let (email, password) = (field(&form, "email"), form.get("password").map_or("", String::as_str));
    if email.is_empty() || password.is_empty() {
        return html(StatusCode::BAD_REQUEST, &login_form(&query.state, email, Some("Enter your email and password.")));
    }
    match check_password(&s, email, password) {
        Some(user) => signed_in(&mut s, &query.state, user),
        // Auth0 does not say which of the two was wrong, so addresses cannot be probed.
        None => html(StatusCode::BAD_REQUEST, &login_form(&query.state, email, Some("Wrong email or password."))),
    }
}

/// Auth0's default password policy for new database connections ("Fair").
fn password_problem(password: &str) -> Option<&'static str> {
    let ok = password.chars().count() >= 8
        && password.chars().any(|c| c.is_ascii_lowercase())
        && password.chars().any(|c| c.is_ascii_uppercase())
        && password.chars().any(|c| c.is_ascii_digit());
    (!ok).then_some(
        "Your password must contain at least 8 characters, lower case letters (a-z), upper case letters (A-Z) and numbers (0-9).",
    )
}

fn email_ok(email: &str) -> bool {
    email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
}

/// `POST /u/signup`: email, password and name.
pub(super) async fn signup_submit(
    state: Shared,
    query: web::Query<PageQuery>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let mut s = lock(&state);
    if !transaction_alive(&s, &query.state) {
        return invalid_state();
    }
    let (email, name) = (field(&form, "email"), field(&form, "name"));
    let password = form.get("password").map_or("", String::as_str);
    let refuse = |message: &str| html(StatusCode::BAD_REQUEST, &signup_form(&query.state, email, name, Some(message)));
    if !email_ok(email) {
        return refuse("Email is not valid.");
    }
    if let Some(problem) = password_problem(password) {
        return refuse(problem);
    }
    if find_database_user(&s, email).is_some() {
        return refuse("The user already exists.");
    }
    // Auth0's user ids on database connections are 24 hex digits; the name defaults to the address.
    let id = uuid::Uuid::new_v4().simple().to_string()[..24].to_owned();
    let mut user = TestUser::database(&id, email, if name.is_empty() { email } else { name });
    user.email_verified = false;
    s.users.insert(user.sub.clone(), user.clone());
    s.passwords.insert(user.sub.clone(), Password::new(password));
    if let Some(action) = s.action.clone() {
        let (shared, fired) = (std::sync::Arc::clone(&state), user.clone());
        tokio::spawn(async move {
            let outcome = match reqwest::Client::builder().build() {
                Ok(client) => action.fire(&client, &fired).await.map_err(|e| format!("{e:#}")),
                Err(e) => Err(e.to_string()),
            };
            lock(&shared).action_calls.push(ActionCall { user_id: fired.sub, outcome });
        });
    }
    signed_in(&mut s, &query.state, user)
}

/// `POST /u/login/google`: the sandbox's stand-in for Google's own pages, a social sign-in by
/// address (a new address makes a `google-oauth2|…` user; no Action runs).
pub(super) async fn google_submit(
    state: Shared,
    query: web::Query<PageQuery>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let mut s = lock(&state);
    if !transaction_alive(&s, &query.state) {
        return invalid_state();
    }
    let email = field(&form, "email");
    if !email_ok(email) {
        return html(StatusCode::BAD_REQUEST, &login_form(&query.state, "", Some("Email is not valid.")));
    }
    let existing =
        s.users.values().find(|u| u.connection == "google-oauth2" && u.email.eq_ignore_ascii_case(email)).cloned();
    let user = existing.unwrap_or_else(|| {
        let id: u64 = rand::random::<u64>() % 1_000_000_000_000_000_000;
        TestUser::google(&id.to_string(), email, email.split('@').next().unwrap_or(email))
    });
    s.users.insert(user.sub.clone(), user.clone());
    signed_in(&mut s, &query.state, user)
}

fn invalid_state() -> HttpResponse {
    html(
        StatusCode::BAD_REQUEST,
        &page(
            "Error",
            "<h1>Oops!, something went wrong</h1><p>invalid_request: the login transaction is unknown or has expired. Start again from the application.</p>",
        ),
    )
}

fn html(status: StatusCode, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .insert_header(("x-frame-options", "deny"))
        .body(body.to_owned())
}

/// Escapes text for HTML content and quoted attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} | Hopsbridge (sandbox Auth0)</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}}\
label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.5rem;box-sizing:border-box;font-size:1rem}}\
button{{margin-top:1rem;width:100%;padding:.6rem;font-size:1rem;background:#1f4fd1;color:#fff;border:0;border-radius:4px}}\
.error{{color:#a00000;border:1px solid #a00000;padding:.5rem}}hr{{margin:1.5rem 0}}</style></head>\
<body><main>{body}</main></body></html>\n",
        esc(title)
    )
}

fn error_box(error: Option<&str>) -> String {
    error.map_or_else(String::new, |e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
}

fn login_form(transaction: &str, email: &str, error: Option<&str>) -> String {
    let t = esc(transaction);
    let mut body = String::from("<h1>Log in</h1><p>Log in to Hopsbridge to continue.</p>");
    body.push_str(&error_box(error));
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/u/login?state={t}\">\
<label for=\"email\">Email address</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{}\">\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Continue</button></form>\
<p>Don't have an account? <a href=\"/u/signup?state={t}\">Sign up</a></p><hr>\
<form method=\"post\" action=\"/u/login/google?state={t}\">\
<label for=\"google-email\">Google account (sandbox)</label><input id=\"google-email\" name=\"email\" type=\"email\" required>\
<button type=\"submit\">Continue with Google</button></form>",
        esc(email)
    );
    page("Log in", &body)
}

fn signup_form(transaction: &str, email: &str, name: &str, error: Option<&str>) -> String {
    let t = esc(transaction);
    let mut body = String::from("<h1>Create your account</h1><p>Sign up to Hopsbridge to continue.</p>");
    body.push_str(&error_box(error));
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/u/signup?state={t}\">\
<label for=\"name\">Name</label><input id=\"name\" name=\"name\" autocomplete=\"name\" value=\"{}\">\
<label for=\"email\">Email address</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required value=\"{}\">\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required aria-describedby=\"policy\">\
<p id=\"policy\">At least 8 characters, with lower case and upper case letters and numbers.</p>\
<button type=\"submit\">Continue</button></form>\
<p>Already have an account? <a href=\"/u/login?state={t}\">Log in</a></p>",
        esc(name),
        esc(email)
    );
    page("Sign up", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_people_typed() {
        let out = signup_form("t\"x", "<script>@x.io", "O'Brien & \"Co\"", Some("<b>bad</b>"));
        assert!(!out.contains("<script>") && !out.contains("<b>bad"));
        assert!(out.contains("&lt;script&gt;@x.io") && out.contains("O&#x27;Brien &amp; &quot;Co&quot;"));
        assert!(out.contains("state=t&quot;x"));
    }

    #[test]
    fn a_password_matches_only_itself_and_is_salted() {
        let (a, b) = (Password::new("Secret-123"), Password::new("Secret-123"));
        assert!(a.matches("Secret-123") && !a.matches("secret-123") && !a.matches(""));
        assert_ne!(a.mac, b.mac, "a salt of its own");
    }

    #[test]
    fn the_password_policy_and_address_checks_are_auth0s_fair_policy() {
        assert!(password_problem("Abcdefg1").is_none());
        for weak in ["Abcdef1", "abcdefg1", "ABCDEFG1", "Abcdefgh"] {
            assert!(password_problem(weak).is_some(), "{weak}");
        }
        assert!(email_ok("a.b@example.co"));
        for bad in ["", "a@", "@x.io", "a@b", "a b@x.io", "a@@x.io", "a@x.io.", "<a>@x.io"] {
            assert!(!email_ok(bad), "{bad}");
        }
    }
}
