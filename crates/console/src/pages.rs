//! The page and form handlers. A page asks the API for its data as the signed-in person and
//! renders it; a form checks the session's CSRF token, makes its change through the API and
//! answers `303 See Other` back to its page with a fixed notice, or the API's error code.

use crate::api;
use crate::format;
use crate::{Answer, Backend, Method, Viewer};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashMap;
use subtle::ConstantTimeEq as _;

type Data = web::Data<dyn Backend>;
type Form = web::Form<HashMap<String, String>>;

/// The stylesheet, served by the binary.
const CSS: &str = include_str!("../static/console.css");

pub(crate) fn configure(cfg: &mut web::ServiceConfig, data: Data) {
    cfg.app_data(data)
        .route("/", web::get().to(home))
        .route("/console.css", web::get().to(css))
        .route("/cluster", web::get().to(cluster))
        .route("/usage", web::get().to(usage))
        .route("/usage/{day}", web::get().to(usage_day))
        .route("/billing", web::get().to(billing))
        .route("/billing/card", web::post().to(billing_card))
        .route("/billing/portal", web::post().to(billing_portal))
        .route("/billing/credits", web::post().to(billing_credits))
        .route("/billing/cap", web::post().to(billing_cap))
        .route("/billing/plan", web::post().to(billing_plan))
        .route("/team", web::get().to(team))
        .route("/team/invite", web::post().to(team_invite))
        .route("/team/resend", web::post().to(team_resend))
        .route("/team/cancel", web::post().to(team_cancel))
        .route("/team/remove", web::post().to(team_remove))
        .route("/team/leave", web::post().to(team_leave))
        .route("/invitations/{token}", web::get().to(invitation))
        .route("/invitations/{token}", web::post().to(invitation_accept))
        .route("/settings", web::get().to(settings))
        .route("/settings/name", web::post().to(settings_name))
        .route("/settings/delete", web::post().to(settings_delete))
        .configure(admin::configure);
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(CSS)
}

// ---------------------------------------------------------------------------------------------
// The layout every page shares.

/// One link of the navigation.
#[derive(Debug)]
pub(crate) struct NavItem {
    href: &'static str,
    name: &'static str,
    current: bool,
}

/// What the layout shows around a page.
#[derive(Debug)]
pub(crate) struct Layout {
    title: String,
    viewer: Option<Viewer>,
    login: bool,
    nav: Vec<NavItem>,
    notice: Option<&'static str>,
    error: Option<String>,
}

impl Layout {
    fn new(title: &str, viewer: Option<&Viewer>, login: bool, current: &str) -> Self {
        let mut links: Vec<(&'static str, &'static str)> = vec![("/", "Overview"), ("/cluster", "Cluster")];
        if let Some(v) = viewer {
            links.push(("/usage", "Usage"));
            if v.owner {
                links.push(("/billing", "Billing"));
            }
            links.push(("/team", "Team"));
            links.push(("/settings", "Settings"));
            if v.admin {
                links.push(("/admin", "Admin"));
            }
        }
        let nav = if viewer.is_some() {
            links.into_iter().map(|(href, name)| NavItem { href, name, current: href == current }).collect()
        } else {
            Vec::new()
        };
        Self { title: title.to_owned(), viewer: viewer.cloned(), login, nav, notice: None, error: None }
    }
}

/// The notices a form's redirect may ask for (`?done=`): fixed texts, never the URL's.
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "added" | "1" => "Thank you: your card is being added. It shows here once Stripe confirms it.",
        "cap" => "Your spending cap was saved.",
        "plan" => "Your plan was saved.",
        "invited" => "The invitation was sent.",
        "resent" => "The invitation was sent again with a new link.",
        "cancelled" => "The invitation was cancelled.",
        "removed" => "The member was removed from your team.",
        "left" => "You left the team.",
        "joined" => "Welcome to the team.",
        "renamed" => "Your name was saved.",
        "suspended" => "The person was suspended.",
        "reactivated" => "The person was reactivated.",
        "granted" => "The person is now an admin.",
        "revoked" => "The person is no longer an admin.",
        "registered" => "The cluster was registered.",
        "updated" => "The cluster was saved.",
        "purchased" => "Thank you: your credit is added once Stripe confirms the payment.",
        "running" => "The checks were started and are running; reload to see them end.",
        "scheduled" => "The new price was scheduled.",
        "moved" => {
            "The person was placed on the cluster you chose: their Hopsworks account there is made in the background, and any previous one deactivated."
        }
        "unassigned" => {
            "The person was unassigned: their seat is released, and any Hopsworks account of theirs is deactivated in the background."
        }
        _ => return None,
    })
}

/// What an API error code means for a person, for the codes a form commonly meets.
fn explain(code: &str) -> String {
    let text = match code {
        "csrf_failed" => "The form had expired. Please try again.",
        "invalid_amount" => "Please enter an amount.",
        "invalid_email" => "That is not an email address.",
        "invalid_name" => "Please enter a name of 1 to 200 characters.",
        "not_confirmed" => "Please type your email address to confirm.",
        "terms_not_accepted" => "Please accept the terms to go on.",
        "terms_outdated" => "The terms changed: please reload the page and accept the current ones.",
        "card_required" => "Pay as you go needs a card: add one first.",
        "already_invited" | "invitation_pending" => "That address already has a pending invitation.",
        "already_member" => "That person is already in a team.",
        "not_found" | "invitation_not_found" => "Nothing was found there.",
        "invitation_expired" => "This invitation has expired. Ask for a new one.",
        "has_members" | "team_not_empty" => "Remove your team's members first.",
        "upstream_unavailable" | "stripe_error" => "A service we depend on did not answer. Please try again shortly.",
        "rate_limited" => "Too many requests. Please wait a moment.",
        "unknown_service" => "There is no such service.",
        "integrity_run_in_progress" => "Those checks are running already: wait for that run to end.",
        "unknown_resource" => "There is no such resource to price.",
        "invalid_price" => {
            "Please enter the unit amount as a decimal number of minor units (for example 3.5), with at most 12 decimal places."
        }
        "invalid_effective_from" => "Please enter when the price starts: a date and a time, in UTC.",
        "price_too_soon" => {
            "A new price must start further ahead, so that Stripe's catalogue is ready for it: at least the configured lead time (prices.min_lead_secs) from now."
        }
        "price_exists" => "That resource already has a price starting at that instant.",
        "unknown_person" => "Nobody has that email address.",
        "unknown_cluster" => "There is no cluster of that name.",
        "unassign_not_confirmed" => "Tick the box to confirm the unassignment.",
        "user_not_found" => "Provisioning does not know this person yet.",
        "user_deleted" => "That person's account is deleted.",
        "cluster_not_found" => "There is no such cluster.",
        "cluster_not_active" => "That cluster is not active: it takes nobody now.",
        "cluster_full" => "That cluster has no free seat.",
        "assignment_busy" => {
            "The person's previous Hopsworks account is still being deactivated. Please try again shortly."
        }
        "not_assigned" | "assignment_not_found" => "That person holds no seat and waits for none.",
        _ => "",
    };
    if text.is_empty() { format!("The request was refused ({code}).") } else { text.to_owned() }
}

/// `?failed=` as a code: only snake_case, so no text of the URL's reaches the page.
fn failed_code(query: &HashMap<String, String>) -> Option<String> {
    query
        .get("failed")
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(|c| explain(c))
}

fn render(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .insert_header(("x-frame-options", "DENY"))
            .insert_header((
                "content-security-policy",
                "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ))
            .body(html),
        Err(_) => HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body("The page could not be drawn."),
    }
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("location", location)).finish()
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    l: Layout,
    status: u16,
    heading: String,
    text: String,
}

fn error_page(viewer: Option<&Viewer>, login: bool, status: u16, code: &str) -> HttpResponse {
    let (heading, text) = match status {
        401 => ("Please sign in", "Your session has ended.".to_owned()),
        403 => (
            "Not available to you",
            match code {
                "account_suspended" => "Your account is suspended. Please contact support.".to_owned(),
                "account_deleted" => "This account was deleted.".to_owned(),
                "owner_only" | "" => "This page is for account owners.".to_owned(),
                "admin_only" => "This page is for admins.".to_owned(),
                _ => explain(code),
            },
        ),
        404 => ("Not found", "There is nothing here.".to_owned()),
        429 => ("Slow down", "Too many requests. Please wait a moment and reload.".to_owned()),
        _ => (
            "Something went wrong",
            format!(
                "A service did not answer as expected ({}). Please try again shortly.",
                if code.is_empty() { "no code" } else { code }
            ),
        ),
    };
    let page = ErrorPage { l: Layout::new(heading, viewer, login, ""), status, heading: heading.to_owned(), text };
    render(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), &page)
}

/// A signed-in request.
struct Ctx<'a> {
    backend: &'a dyn Backend,
    req: &'a HttpRequest,
    viewer: Viewer,
}

impl<'a> Ctx<'a> {
    /// The signed-in person, or the answer for a visitor who is not: to sign in, coming back
    /// here.
    async fn new(backend: &'a Data, req: &'a HttpRequest) -> Result<Self, Refused> {
        let backend: &dyn Backend = backend.get_ref();
        match backend.viewer(req).await {
            Ok(Some(viewer)) => Ok(Self { backend, req, viewer }),
            Ok(None) if backend.login_enabled() => {
                // A form's route has no page of its own: come back to the overview after signing in.
                let here = if req.method() == actix_web::http::Method::GET {
                    req.uri().path_and_query().map_or("/", |pq| pq.as_str())
                } else {
                    "/"
                };
                let query = serde_urlencoded::to_string([("returnTo", here)]).unwrap_or_default();
                Err(Box::new(see_other(&format!("/api/auth/login?{query}"))))
            }
            Ok(None) => Err(Box::new(error_page(None, false, 401, "unauthenticated"))),
            Err(answer) => Err(Box::new(error_page(None, backend.login_enabled(), answer.status, &answer.code()))),
        }
    }

    fn layout(&self, title: &str, current: &str) -> Layout {
        let query: HashMap<String, String> = serde_urlencoded::from_str(self.req.query_string()).unwrap_or_default();
        let mut l = Layout::new(title, Some(&self.viewer), self.backend.login_enabled(), current);
        l.notice = notice(query.get("done").map(String::as_str));
        l.error = failed_code(&query);
        l
    }

    async fn call(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> Answer {
        self.backend.call(self.req, method, path.to_owned(), body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::Get, path, None).await
    }

    /// `GET path` as `T`, or the error page for its answer.
    async fn fetch<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refused> {
        let answer = self.get(path).await;
        self.read(&answer)
    }

    fn read<T: DeserializeOwned>(&self, answer: &Answer) -> Result<T, Refused> {
        if !answer.is_success() {
            return Err(Box::new(self.error(answer.status, &answer.code())));
        }
        answer.json().map_err(|_| Box::new(self.error(502, "unreadable_answer")))
    }

    fn error(&self, status: u16, code: &str) -> HttpResponse {
        error_page(Some(&self.viewer), self.backend.login_enabled(), status, code)
    }

    /// Owners only: members see no billing at all.
    fn owner_only(&self) -> Result<(), Refused> {
        if self.viewer.owner { Ok(()) } else { Err(Box::new(self.error(403, "owner_only"))) }
    }

    fn admin_only(&self) -> Result<(), Refused> {
        if self.viewer.admin { Ok(()) } else { Err(Box::new(self.error(403, "admin_only"))) }
    }

    /// A form's CSRF token matches the session's.
    fn form_ok(&self, form: &HashMap<String, String>) -> Result<(), Refused> {
        let sent = form.get("csrf").map(String::as_bytes).unwrap_or_default();
        if bool::from(sent.ct_eq(self.viewer.csrf.as_bytes())) && !sent.is_empty() {
            Ok(())
        } else {
            Err(Box::new(self.error(403, "csrf_failed")))
        }
    }

    /// Where a form goes after the API answered: `to?done=done` on success, else
    /// `to?failed=<code>`.
    fn after(&self, answer: &Answer, to: &str, done: &str) -> HttpResponse {
        if answer.is_success() { see_other(&format!("{to}?done={done}")) } else { self.failed(to, &answer.code()) }
    }

    fn failed(&self, to: &str, code: &str) -> HttpResponse {
        let code = if code.is_empty() { "request_failed" } else { code };
        let query = serde_urlencoded::to_string([("failed", code)]).unwrap_or_default();
        let sep = if to.contains('?') { '&' } else { '?' };
        see_other(&format!("{to}{sep}{query}"))
    }
}

/// The answer a page or form gives instead when it cannot go on (boxed: a response is large).
type Refused = Box<HttpResponse>;

macro_rules! ctx {
    ($data:expr, $req:expr) => {
        match Ctx::new(&$data, &$req).await {
            Ok(ctx) => ctx,
            Err(answer) => return *answer,
        }
    };
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(answer) => return *answer,
        }
    };
}

fn field<'f>(form: &'f HashMap<String, String>, name: &str) -> &'f str {
    form.get(name).map_or("", |v| v.trim())
}

// ---------------------------------------------------------------------------------------------
// Overview and the signed-out landing.

#[derive(Template)]
#[template(path = "landing.html")]
struct Landing {
    l: Layout,
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    l: Layout,
    name: String,
    cluster: Option<api::MyCluster>,
    card: Option<bool>,
    month_cost: Option<String>,
    owner: bool,
}

async fn home(data: Data, req: HttpRequest) -> HttpResponse {
    let backend: &dyn Backend = data.get_ref();
    let viewer = match backend.viewer(&req).await {
        Ok(v) => v,
        Err(answer) => return error_page(None, backend.login_enabled(), answer.status, &answer.code()),
    };
    if viewer.is_none() {
        return render(StatusCode::OK, &Landing { l: Layout::new("Welcome", None, backend.login_enabled(), "/") });
    }
    let ctx = ctx!(data, req);
    let me: api::Me = tri!(ctx.fetch("/api/me").await);
    let cluster = ctx.get("/api/cluster").await;
    let cluster = if cluster.is_success() { cluster.json().ok() } else { None };
    let (mut card, mut month_cost) = (None, None);
    if ctx.viewer.owner {
        let billing = ctx.get("/api/billing").await;
        if let Ok(b) = billing
            .json::<api::Billing>()
            .map_err(|_| ())
            .and_then(|b| if billing.is_success() { Ok(b) } else { Err(()) })
        {
            card = Some(b.payment_method.is_some());
        }
        let usage = ctx.get("/api/billing/usage").await;
        if usage.is_success()
            && let Ok(u) = usage.json::<api::OwnerUsage>()
        {
            month_cost = Some(format::minor(u.month_to_date.cost_minor, &currency(&ctx).await));
        }
    }
    let name = if me.name.is_empty() { me.email.clone() } else { me.name.clone() };
    render(
        StatusCode::OK,
        &Home { l: ctx.layout("Overview", "/"), name, cluster, card, month_cost, owner: ctx.viewer.owner },
    )
}

/// The currency prices are in (the price list is public), `usd` when there is none.
async fn currency(ctx: &Ctx<'_>) -> String {
    let answer = ctx.get("/api/pricing").await;
    answer
        .json::<api::Pricing>()
        .ok()
        .and_then(|p| p.current.first().map(|p| p.currency.clone()))
        .unwrap_or_else(|| "usd".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Cluster.

#[derive(Template)]
#[template(path = "cluster.html")]
struct ClusterPage {
    l: Layout,
    mine: Option<api::MyCluster>,
    owner: bool,
    /// The person's Hopsworks projects, once the cluster is theirs (none when the API could
    /// not tell: the page says so rather than failing).
    projects: Option<api::MyProjects>,
}

impl ClusterPage {
    fn synced(&self, instant: &str) -> String {
        chrono::DateTime::parse_from_rfc3339(instant)
            .map_or_else(|_| instant.to_owned(), |d| d.format("%-d %B %Y, %H:%M UTC").to_string())
    }
}

async fn cluster(data: Data, req: HttpRequest) -> HttpResponse {
    let ctx = ctx!(data, req);
    let answer = ctx.get("/api/cluster").await;
    let mine = if answer.status == 404 { None } else { Some(tri!(ctx.read::<api::MyCluster>(&answer))) };
    let projects = if mine.as_ref().is_some_and(|m| m.status == "complete") {
        let answer = ctx.get("/api/cluster/projects").await;
        if answer.is_success() { answer.json().ok() } else { None }
    } else {
        None
    };
    let page = ClusterPage { l: ctx.layout("Cluster", "/cluster"), mine, owner: ctx.viewer.owner, projects };
    render(StatusCode::OK, &page)
}

// ---------------------------------------------------------------------------------------------
// Usage and cost.

mod usage;
use usage::{usage, usage_day};

// ---------------------------------------------------------------------------------------------
// Billing.

#[derive(Template)]
#[template(path = "billing.html")]
struct BillingPage {
    l: Layout,
    csrf: String,
    billing: api::Billing,
    credits: Option<api::Credits>,
    currency: String,
    month_cost: Option<String>,
    cap: Option<String>,
    plan: Option<api::PlanView>,
    cluster: Option<api::MyCluster>,
}

impl BillingPage {
    fn plan_name(&self, plan: &str) -> &'static str {
        match plan {
            "free" => "Free",
            "payg" => "Pay as you go",
            "prepaid" => "Prepaid credit",
            _ => "Other",
        }
    }

    fn reason(&self, reason: &str) -> &'static str {
        match reason {
            "over_project_limit" => "More active projects than the plan allows",
            "payment_failed" => "A payment failed",
            "credits_exhausted" => "Your credit is used up",
            "spending_cap" => "The spending cap was reached",
            _ => "A restriction",
        }
    }

    fn money(&self, minor: &i64, currency: &str) -> String {
        format::minor(*minor, currency)
    }

    fn exact(&self, minor: &str) -> String {
        format::minor_decimal(minor, &self.currency)
    }

    fn date(&self, unix: &i64) -> String {
        chrono::DateTime::from_timestamp(*unix, 0).map_or_else(String::new, |d| d.format("%-d %B %Y").to_string())
    }

    fn day(&self, instant: &str) -> String {
        chrono::DateTime::parse_from_rfc3339(instant)
            .map_or_else(|_| instant.to_owned(), |d| d.format("%-d %B %Y").to_string())
    }
}

async fn billing(data: Data, req: HttpRequest) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.owner_only());
    let billing: api::Billing = tri!(ctx.fetch("/api/billing").await);
    let credits = ctx.get("/api/credits").await;
    let credits: Option<api::Credits> = if credits.is_success() { credits.json().ok() } else { None };
    let currency = match &credits {
        Some(c) => c.currency.clone(),
        None => currency(&ctx).await,
    };
    let usage = ctx.get("/api/billing/usage").await;
    let usage: Option<api::OwnerUsage> = if usage.is_success() { usage.json().ok() } else { None };
    let plan = ctx.get("/api/billing/plan").await;
    let plan: Option<api::PlanView> = if plan.is_success() { plan.json().ok() } else { None };
    let cluster = ctx.get("/api/cluster").await;
    let cluster: Option<api::MyCluster> = if cluster.is_success() { cluster.json().ok() } else { None };
    let page = BillingPage {
        plan,
        cluster,
        l: ctx.layout("Billing", "/billing"),
        csrf: ctx.viewer.csrf.clone(),
        month_cost: usage.as_ref().map(|u| format::minor(u.month_to_date.cost_minor, &currency)),
        cap: usage
            .as_ref()
            .and_then(|u| u.monthly_cap_minor)
            .map(|c| format::quantity(&Decimal::new(c, 2).to_string(), 2)),
        billing,
        credits,
        currency,
    };
    render(StatusCode::OK, &page)
}

/// A form that answers with a URL to send the browser to (Checkout, the portal).
async fn to_stripe(ctx: &Ctx<'_>, path: &str, body: Option<serde_json::Value>) -> HttpResponse {
    let answer = ctx.call(Method::Post, path, body).await;
    match answer.json::<api::Redirect>() {
        Ok(r) if answer.is_success() && (r.url.starts_with("https://") || r.url.starts_with("http://")) => {
            see_other(&r.url)
        }
        _ => ctx.failed("/billing", &answer.code()),
    }
}

async fn billing_card(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.owner_only());
    tri!(ctx.form_ok(&form));
    to_stripe(&ctx, "/api/billing/payment-method", None).await
}

async fn billing_portal(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.owner_only());
    tri!(ctx.form_ok(&form));
    to_stripe(&ctx, "/api/billing/portal", None).await
}

async fn billing_credits(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.owner_only());
    tri!(ctx.form_ok(&form));
    let currency = currency(&ctx).await;
    let Some(amount_minor) = format::parse_major(field(&form, "amount"), &currency) else {
        return ctx.failed("/billing", "invalid_amount");
    };
    to_stripe(&ctx, "/api/credits/purchase", Some(json!({ "amount_minor": amount_minor }))).await
}

async fn billing_cap(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.owner_only());
    tri!(ctx.form_ok(&form));
    let typed = field(&form, "cap");
    let cap = if typed.is_empty() {
        None
    } else {
        match format::parse_major(typed, &currency(&ctx).await) {
            Some(minor) => Some(minor),
            None => return ctx.failed("/billing", "invalid_amount"),
        }
    };
    let answer = ctx.call(Method::Put, "/api/billing/cap", Some(json!({ "monthly_cap_minor": cap }))).await;
    ctx.after(&answer, "/billing", "cap")
}

async fn billing_plan(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.owner_only());
    tri!(ctx.form_ok(&form));
    if field(&form, "accept_terms") != "yes" {
        return ctx.failed("/billing", "terms_not_accepted");
    }
    let body =
        json!({ "plan": field(&form, "plan"), "accept_terms": true, "terms_version": field(&form, "terms_version") });
    let answer = ctx.call(Method::Put, "/api/billing/plan", Some(body)).await;
    ctx.after(&answer, "/billing", "plan")
}

// ---------------------------------------------------------------------------------------------
// Team.

mod team;
use team::{team, team_cancel, team_invite, team_leave, team_remove, team_resend};

// ---------------------------------------------------------------------------------------------
// The invitation page.

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    l: Layout,
    token: String,
    preview: api::Preview,
    csrf: Option<String>,
    signed_in_as: Option<String>,
    sign_in: String,
}

impl InvitationPage {
    fn day(&self, instant: &str) -> String {
        chrono::DateTime::parse_from_rfc3339(instant)
            .map_or_else(|_| instant.to_owned(), |d| d.format("%-d %B %Y").to_string())
    }
}

fn token_ok(token: &str) -> bool {
    (1..=64).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn invitation(data: Data, req: HttpRequest, token: web::Path<String>) -> HttpResponse {
    let backend: &dyn Backend = data.get_ref();
    let login = backend.login_enabled();
    let viewer = match backend.viewer(&req).await {
        Ok(v) => v,
        Err(answer) => return error_page(None, login, answer.status, &answer.code()),
    };
    if !token_ok(&token) {
        return error_page(viewer.as_ref(), login, 404, "not_found");
    }
    let answer = backend.call(&req, Method::Get, format!("/api/invitations/{token}"), None).await;
    if !answer.is_success() {
        let code = answer.code();
        let status = if answer.status == 410 { 410 } else { answer.status };
        if status == 410 || status == 404 {
            let page = ErrorPage {
                l: Layout::new("Invitation", viewer.as_ref(), login, ""),
                status,
                heading: "This invitation cannot be used".to_owned(),
                text: "The link has expired, was replaced by a newer one, or was cancelled. Ask the person who invited you to send it again.".to_owned(),
            };
            return render(StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND), &page);
        }
        return error_page(viewer.as_ref(), login, answer.status, &code);
    }
    let Ok(preview) = answer.json::<api::Preview>() else {
        return error_page(viewer.as_ref(), login, 502, "unreadable_answer");
    };
    let query: HashMap<String, String> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let here = format!("/invitations/{token}");
    let mut l = Layout::new("Invitation", viewer.as_ref(), login, "");
    l.error = failed_code(&query);
    let page = InvitationPage {
        l,
        sign_in: format!(
            "/api/auth/login?{}",
            serde_urlencoded::to_string([("returnTo", here.as_str())]).unwrap_or_default()
        ),
        token: token.into_inner(),
        preview,
        csrf: viewer.as_ref().map(|v| v.csrf.clone()),
        signed_in_as: viewer.map(|v| v.email),
    };
    render(StatusCode::OK, &page)
}

async fn invitation_accept(data: Data, req: HttpRequest, token: web::Path<String>, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.form_ok(&form));
    if !token_ok(&token) {
        return ctx.error(404, "not_found");
    }
    let here = format!("/invitations/{token}");
    if field(&form, "accept_terms") != "yes" {
        return ctx.failed(&here, "terms_not_accepted");
    }
    let body = json!({ "accept_terms": true, "terms_version": field(&form, "terms_version") });
    let answer = ctx.call(Method::Post, &format!("/api/invitations/{token}/accept"), Some(body)).await;
    if answer.is_success() { see_other("/cluster?done=joined") } else { ctx.failed(&here, &answer.code()) }
}

// ---------------------------------------------------------------------------------------------
// Settings.

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    l: Layout,
    csrf: String,
    me: api::Me,
    owner: bool,
}

async fn settings(data: Data, req: HttpRequest) -> HttpResponse {
    let ctx = ctx!(data, req);
    let me: api::Me = tri!(ctx.fetch("/api/me").await);
    render(
        StatusCode::OK,
        &SettingsPage {
            l: ctx.layout("Settings", "/settings"),
            csrf: ctx.viewer.csrf.clone(),
            me,
            owner: ctx.viewer.owner,
        },
    )
}

async fn settings_name(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.form_ok(&form));
    let answer = ctx.call(Method::Patch, "/api/me", Some(json!({ "name": field(&form, "name") }))).await;
    ctx.after(&answer, "/settings", "renamed")
}

async fn settings_delete(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.form_ok(&form));
    if !field(&form, "confirm").eq_ignore_ascii_case(&ctx.viewer.email) {
        return ctx.failed("/settings", "not_confirmed");
    }
    let answer = ctx.call(Method::Delete, "/api/me", None).await;
    if answer.is_success() { see_other("/api/auth/logout") } else { ctx.failed("/settings", &answer.code()) }
}

// ---------------------------------------------------------------------------------------------
// Admin.

mod admin;
