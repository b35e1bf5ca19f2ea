//! The console's pages and forms over a fake API: what each kind of person sees, that forms
//! need the session's CSRF token and make exactly the API call they describe, that members
//! never reach billing, and that the API's text is escaped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use actix_web::{App, HttpRequest, test};
use futures::future::LocalBoxFuture;
use hopsbridge_console::{Answer, Backend, Method, Viewer};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Canned answers by method and path; every call recorded.
#[derive(Default)]
struct Fake {
    viewer: Option<Viewer>,
    answers: HashMap<(String, String), (u16, Value)>,
    calls: Mutex<Vec<(String, String, Option<Value>)>>,
}

impl Fake {
    fn as_(viewer: Option<Viewer>) -> Self {
        Self { viewer, ..Self::default() }
    }

    fn answer(mut self, method: &str, path: &str, status: u16, body: Value) -> Self {
        self.answers.insert((method.to_owned(), path.to_owned()), (status, body));
        self
    }

    fn calls(&self) -> Vec<(String, String, Option<Value>)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Backend for Fake {
    fn viewer<'a>(&'a self, _: &'a HttpRequest) -> LocalBoxFuture<'a, Result<Option<Viewer>, Answer>> {
        Box::pin(async move { Ok(self.viewer.clone()) })
    }

    fn call<'a>(
        &'a self,
        _: &'a HttpRequest,
        method: Method,
        path: String,
        body: Option<Value>,
    ) -> LocalBoxFuture<'a, Answer> {
        Box::pin(async move {
            self.calls.lock().unwrap().push((method.as_str().to_owned(), path.clone(), body));
            match self.answers.get(&(method.as_str().to_owned(), path)) {
                Some((status, body)) => Answer { status: *status, body: body.to_string().into_bytes() },
                None => Answer::error(404, "route_not_found"),
            }
        })
    }

    fn login_enabled(&self) -> bool {
        true
    }
}

const CSRF: &str = "the-session-csrf-token";

fn owner() -> Option<Viewer> {
    Some(Viewer { email: "ada@example.com".into(), owner: true, admin: false, csrf: CSRF.into() })
}

fn member() -> Option<Viewer> {
    Some(Viewer { email: "bob@example.com".into(), owner: false, admin: false, csrf: CSRF.into() })
}

async fn get(fake: Arc<Fake>, path: &str) -> (u16, String, Option<String>) {
    let app = test::init_service(App::new().configure(|c| hopsbridge_console::configure(c, fake.clone()))).await;
    let r = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
    let body = String::from_utf8(test::read_body(r).await.to_vec()).unwrap();
    (status, body, location)
}

async fn post(fake: Arc<Fake>, path: &str, form: &[(&str, &str)]) -> (u16, Option<String>) {
    let app = test::init_service(App::new().configure(|c| hopsbridge_console::configure(c, fake.clone()))).await;
    let r = test::call_service(&app, test::TestRequest::post().uri(path).set_form(form).to_request()).await;
    (r.status().as_u16(), r.headers().get("location").map(|l| l.to_str().unwrap().to_owned()))
}

fn billing_view() -> Value {
    json!({
        "billing_mode": "postpaid",
        "subscription_status": "active",
        "payment_method": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030},
        "invoices": [{"status": "paid", "amount_due": 1999, "currency": "usd", "created": 1_764_547_200_i64,
                      "number": "<script>alert(1)</script>", "hosted_invoice_url": "https://invoice.example/in_1"}]
    })
}

fn usage_view() -> Value {
    json!({
        "lines": [
            {"day": "2026-12-01", "resource": "cpu", "user_id": "u-ada", "billing_mode": "postpaid", "project_id": 7,
             "quantity": "2.5", "cost": "87.5", "cost_minor": 88},
            {"day": "2026-12-03", "resource": "cpu", "user_id": "u-bob", "billing_mode": "postpaid", "project_id": 7,
             "quantity": "5", "cost": "175", "cost_minor": 175},
            {"day": "2026-12-03", "resource": "memory", "user_id": "u-bob", "billing_mode": "postpaid", "project_id": null,
             "quantity": "10", "cost": "40", "cost_minor": 40},
            {"day": "2026-12-03", "resource": "storage_offline", "user_id": "u-bob", "billing_mode": "postpaid", "project_id": 7,
             "quantity": "0.5", "unit": "GB-month", "cost": "1.75", "cost_minor": 2}
        ],
        "range": {"from": "2026-12-01", "to": "2026-12-03", "cost": "304.25", "cost_minor": 304, "credits_paid": "0", "unpaid": "0"},
        "month_to_date": {"from": "2026-12-01", "to": "2026-12-03", "cost": "304.25", "cost_minor": 304, "credits_paid": "0", "unpaid": "0"},
        "monthly_cap_minor": 5000,
        "upcoming_invoice": {"period_start": "2026-12-01", "period_end": "2026-12-31", "total_minor": 303,
            "lines": [{"resource": "cpu", "price_id": "p1", "unit_amount_decimal": "35", "quantity": "7.5", "amount": "262.5", "amount_minor": 263},
                      {"resource": "memory", "price_id": "p2", "unit_amount_decimal": "4", "quantity": "10", "amount": "40", "amount_minor": 40}]}
    })
}

fn pricing() -> Value {
    json!({"current": [{"resource": "cpu", "unit": "core-hour", "unit_amount_decimal": "35", "currency": "usd", "effective_from": "2026-01-01T00:00:00Z"}], "scheduled": []})
}

#[actix_web::test]
async fn a_visitor_sees_the_landing_page_and_is_sent_to_sign_in_for_the_rest() {
    let fake = Arc::new(Fake::as_(None));
    let (status, body, _) = get(fake.clone(), "/").await;
    assert_eq!(status, 200);
    assert!(body.contains(r#"href="/api/auth/login?returnTo=/""#), "{body}");
    assert!(!body.contains(r#"href="/billing""#), "no navigation for visitors");
    for path in ["/billing", "/usage?month=2026-11", "/team", "/cluster", "/settings", "/admin"] {
        let (status, _, location) = get(fake.clone(), path).await;
        assert_eq!(status, 303, "{path}");
        let expected =
            format!("/api/auth/login?returnTo={}", serde_urlencoded::to_string([("v", path)]).unwrap()[2..].to_owned());
        assert_eq!(location.as_deref(), Some(expected.as_str()), "{path}");
    }
    assert!(fake.calls().is_empty(), "nothing asked of the API for a visitor");
    let (status, css, _) = get(fake, "/console.css").await;
    assert_eq!(status, 200);
    assert!(css.contains("@media"));
}

#[actix_web::test]
async fn an_owner_sees_card_invoices_and_credits_with_the_api_text_escaped() {
    let fake = Arc::new(
        Fake::as_(owner())
            .answer("GET", "/api/billing", 200, billing_view())
            .answer("GET", "/api/credits", 200, json!({"balance": "1250.5", "currency": "usd", "grants": [
                {"id": "g", "owner_id": "o", "category": "purchased", "amount": "2000", "remaining": "1250.5",
                 "priority": 0, "source": "checkout:cs_1", "created_at": "2026-12-02T10:00:00Z"}], "deductions": [], "total_deductions": 0}))
            .answer("GET", "/api/billing/usage", 200, usage_view()),
    );
    let (status, body, _) = get(fake, "/billing").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("visa ending in 4242, expires 12/2030"), "{body}");
    assert!(body.contains("19.99 USD") && body.contains(r#"href="https://invoice.example/in_1""#));
    assert!(
        !body.contains("<script>alert") && body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "escaped: {body}"
    );
    assert!(body.contains(r#"id="credit-balance">12.51 USD<"#), "1250.5 cents round half up: {body}");
    assert!(body.contains(r#"value="50.00""#), "the cap in major units");
    assert!(body.contains(&format!(r#"name="csrf" value="{CSRF}""#)));
    assert!(body.contains(r#"aria-current="page">Billing"#));
}

#[actix_web::test]
async fn a_member_sees_no_billing_at_all() {
    let fake = Arc::new(Fake::as_(member()).answer("GET", "/api/billing", 200, billing_view()));
    let (status, body, _) = get(fake.clone(), "/billing").await;
    assert_eq!(status, 403);
    assert!(!body.contains(r#"href="/billing""#), "no billing link for a member: {body}");
    for path in ["/billing/card", "/billing/portal", "/billing/credits", "/billing/cap"] {
        let (status, _) = post(fake.clone(), path, &[("csrf", CSRF), ("amount", "10"), ("cap", "10")]).await;
        assert_eq!(status, 403, "{path}");
    }
    let (status, _, _) = get(fake.clone(), "/usage/2026-12-01").await;
    assert_eq!(status, 403, "a day's billed samples are the owner's");
    assert!(fake.calls().is_empty(), "the API was never asked: {:?}", fake.calls());
}

#[actix_web::test]
async fn forms_need_the_session_csrf_token_and_make_exactly_their_change() {
    let fake = Arc::new(Fake::as_(owner()).answer("POST", "/api/team/invitations", 201, json!({"link": "x"})));
    for csrf in [None, Some(""), Some("guessed")] {
        let mut form = vec![("email", "bob@example.com"), ("project_role", "Data scientist")];
        if let Some(csrf) = csrf {
            form.push(("csrf", csrf));
        }
        let (status, _) = post(fake.clone(), "/team/invite", &form).await;
        assert_eq!(status, 403, "{csrf:?}");
    }
    assert!(fake.calls().is_empty());
    let (status, location) = post(
        fake.clone(),
        "/team/invite",
        &[("csrf", CSRF), ("email", " bob@example.com "), ("project_role", "Data scientist")],
    )
    .await;
    assert_eq!((status, location.as_deref()), (303, Some("/team?done=invited")));
    assert_eq!(
        fake.calls(),
        vec![(
            "POST".into(),
            "/api/team/invitations".into(),
            Some(json!({"email": "bob@example.com", "project_role": "Data scientist"}))
        )]
    );
}

#[actix_web::test]
async fn a_refused_change_comes_back_with_the_api_code_only() {
    let fake = Arc::new(Fake::as_(owner()).answer(
        "PATCH",
        "/api/me",
        400,
        json!({"code": "invalid_name", "message": "<b>no</b>"}),
    ));
    let (status, location) = post(fake.clone(), "/settings/name", &[("csrf", CSRF), ("name", "")]).await;
    assert_eq!((status, location.as_deref()), (303, Some("/settings?failed=invalid_name")));
    let fake = Arc::new(Fake::as_(owner()).answer(
        "GET",
        "/api/me",
        200,
        json!({"id": "u-ada", "email": "ada@example.com", "name": "Ada"}),
    ));
    let (_, body, _) = get(fake.clone(), "/settings?failed=invalid_name").await;
    assert!(body.contains("Please enter a name of 1 to 200 characters."), "{body}");
    let (_, body, _) = get(fake, "/settings?failed=%3Cscript%3E&done=%3Ci%3E").await;
    assert!(
        !body.contains("<script>") && !body.contains("<i>") && !body.contains("role=\"alert\""),
        "no text of the URL's: {body}"
    );
}

#[actix_web::test]
async fn adding_a_card_and_buying_credit_go_to_stripe_checkout() {
    let fake = Arc::new(
        Fake::as_(owner())
            .answer(
                "POST",
                "/api/billing/payment-method",
                200,
                json!({"id": "cs_1", "url": "https://checkout.example/cs_1"}),
            )
            .answer(
                "POST",
                "/api/credits/purchase",
                200,
                json!({"id": "cs_2", "url": "https://checkout.example/cs_2", "amount_minor": 2550}),
            )
            .answer("GET", "/api/pricing", 200, pricing()),
    );
    let (status, location) = post(fake.clone(), "/billing/card", &[("csrf", CSRF)]).await;
    assert_eq!((status, location.as_deref()), (303, Some("https://checkout.example/cs_1")));
    let (status, location) = post(fake.clone(), "/billing/credits", &[("csrf", CSRF), ("amount", "25.50")]).await;
    assert_eq!((status, location.as_deref()), (303, Some("https://checkout.example/cs_2")));
    let purchase = fake.calls().into_iter().find(|(_, p, _)| p == "/api/credits/purchase").unwrap();
    assert_eq!(purchase.2, Some(json!({"amount_minor": 2550})));
    let (status, location) = post(fake.clone(), "/billing/credits", &[("csrf", CSRF), ("amount", "25.505")]).await;
    assert_eq!((status, location.as_deref()), (303, Some("/billing?failed=invalid_amount")));
    assert_eq!(
        fake.calls().iter().filter(|(_, p, _)| p == "/api/credits/purchase").count(),
        1,
        "a bad amount is not sent"
    );
}

#[actix_web::test]
async fn usage_shows_the_api_figures_per_day_project_and_person() {
    let fake = Arc::new(
        Fake::as_(owner())
            .answer("GET", "/api/billing/usage?from=2026-12-01&to=2026-12-31", 200, usage_view())
            .answer("GET", "/api/pricing", 200, pricing())
            .answer("GET", "/api/me", 200, json!({"id": "u-ada", "email": "ada@example.com", "name": "Ada"}))
            .answer("GET", "/api/team", 200, json!({"owner_user_id": "u-ada", "members": [{"user_id": "u-bob", "name": "Bob", "email": "bob@example.com",
                "membership_id": "m", "project_role": "Data scientist", "joined_at": "2026-12-01T00:00:00Z", "account_status": "active",
                "hopsworks_account": {"state": "assigned", "hopsworks_username": "bob000"},
                "usage_this_month": {"month": "2026-12-01", "cpu_core_hours": "5", "memory_gib_hours": "10", "gpu_hours": "0"}}]})),
    );
    let (status, body, _) = get(fake, "/usage?month=2026-12").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"id="month-cost">3.04 USD<"#), "{body}");
    assert!(body.contains(r#"id="invoice-total">3.03 USD<"#));
    assert!(body.contains("2.63 USD"), "an invoice line");
    assert_eq!(body.matches("<svg").count(), 4, "a chart per resource, storage included");
    assert_eq!(
        body.matches(r#"<a href="/usage/2026-12-"#).count(),
        4 * 31 + 2,
        "every day of each chart, and each day with usage, links to its samples"
    );
    assert!(body.contains(r#"<a href="/usage/2026-12-03">"#));
    // A storage day links to its storage samples.
    assert_eq!(body.matches(r#"<a href="/usage/2026-12-03?source=storage">"#).count(), 1, "{body}");
    assert!(body.contains("Storage (GB-months): 0.500000000 GB-months, costing 0.02 USD"), "{body}");
    assert!(body.contains("CPU (core-hours): 7.500 core-hours, costing 2.63 USD"), "{body}");
    assert!(body.contains("3 December · CPU 5.000 · memory 10.000 · GPU 0.000 · storage 0.500000000"), "{body}");
    // Per project: project 7 has CPU 7.5, storage 0.5 GB-months and 2.64 USD; the memory line
    // is outside any project.
    assert!(body.contains("Project 7<span class=\"sr\">: its days, people and costs</span></a></th><td class=\"num\">7.500</td><td class=\"num\">0.000</td><td class=\"num\">0.000</td><td class=\"num\">0.500000000</td><td class=\"num\">2.64 USD"), "{body}");
    assert!(body.contains("Outside any project"));
    // Per person: the owner's own line, and Bob's by name.
    assert!(
        body.contains(
            "You (ada@example.com)<span class=\"sr\">: their days and samples</span></a></th><td class=\"num\">2.500"
        ),
        "{body}"
    );
    assert!(body.contains("Bob<span class=\"sr\">: their days and samples</span></a></th><td class=\"num\">5.000</td><td class=\"num\">10.000</td><td class=\"num\">0.000</td><td class=\"num\">0.500000000</td><td class=\"num\">2.17 USD"), "{body}");
    assert!(
        body.contains(r#"<a href="/usage?member=bob%40example.com&#38;month=2026-12">Bob"#),
        "a member's row links to their usage: {body}"
    );
    assert!(body.contains(r#"<option value="2026-12" selected>December 2026</option>"#));
}

#[actix_web::test]
async fn an_invitation_is_previewed_before_signing_in_and_joined_after() {
    let token = "abcDEF123_-";
    let preview = json!({"invited_by": {"name": "Ada", "email": "ada@example.com"}, "email": "bob@example.com",
        "project_role": "Data scientist", "expires_at": "2026-12-14T00:00:00Z", "terms_version": "2026-01"});
    let fake = Arc::new(Fake::as_(None).answer("GET", &format!("/api/invitations/{token}"), 200, preview.clone()));
    let (status, body, _) = get(fake, &format!("/invitations/{token}")).await;
    assert_eq!(status, 200);
    assert!(body.contains("Join Ada's team"), "{body}");
    assert!(body.contains(&format!(r#"href="/api/auth/login?returnTo=%2Finvitations%2F{token}""#)), "{body}");
    assert!(!body.contains("name=\"csrf\""));

    let fake = Arc::new(Fake::as_(member()).answer("GET", &format!("/api/invitations/{token}"), 200, preview).answer(
        "POST",
        &format!("/api/invitations/{token}/accept"),
        200,
        json!({}),
    ));
    let (_, body, _) = get(fake.clone(), &format!("/invitations/{token}")).await;
    assert!(body.contains(r#"name="terms_version" value="2026-01""#));
    let (status, location) =
        post(fake.clone(), &format!("/invitations/{token}"), &[("csrf", CSRF), ("terms_version", "2026-01")]).await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some(format!("/invitations/{token}?failed=terms_not_accepted").as_str()))
    );
    let (status, location) = post(
        fake.clone(),
        &format!("/invitations/{token}"),
        &[("csrf", CSRF), ("terms_version", "2026-01"), ("accept_terms", "yes")],
    )
    .await;
    assert_eq!((status, location.as_deref()), (303, Some("/cluster?done=joined")));
    let accepted = fake.calls().into_iter().find(|(m, _, _)| m == "POST").unwrap();
    assert_eq!(accepted.2, Some(json!({"accept_terms": true, "terms_version": "2026-01"})));
    let (status, _, _) = get(fake, "/invitations/not%20a%20token").await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn resending_and_cancelling_find_the_invitation_by_its_address() {
    let invitations = json!([
        {"id": "inv-old", "email": "bob@example.com", "project_role": "Data owner", "status": "cancelled", "sends": 1, "expires_at": "2026-12-01T00:00:00Z"},
        {"id": "inv-1", "email": "bob@example.com", "project_role": "Data owner", "status": "pending", "sends": 1, "expires_at": "2026-12-14T00:00:00Z"}
    ]);
    let fake = Arc::new(
        Fake::as_(owner())
            .answer("GET", "/api/team/invitations", 200, invitations)
            .answer("POST", "/api/team/invitations/inv-1/resend", 200, json!({}))
            .answer("DELETE", "/api/team/invitations/inv-1", 200, json!({})),
    );
    let (_, location) = post(fake.clone(), "/team/resend", &[("csrf", CSRF), ("email", "Bob@Example.com")]).await;
    assert_eq!(location.as_deref(), Some("/team?done=resent"));
    let (_, location) = post(fake.clone(), "/team/cancel", &[("csrf", CSRF), ("email", "bob@example.com")]).await;
    assert_eq!(location.as_deref(), Some("/team?done=cancelled"));
    let (_, location) = post(fake.clone(), "/team/cancel", &[("csrf", CSRF), ("email", "eve@example.com")]).await;
    assert_eq!(location.as_deref(), Some("/team?failed=invitation_not_found"));
    let changes: Vec<_> =
        fake.calls().into_iter().filter(|(m, _, _)| m != "GET").map(|(m, p, _)| format!("{m} {p}")).collect();
    assert_eq!(changes, ["POST /api/team/invitations/inv-1/resend", "DELETE /api/team/invitations/inv-1"]);
}

#[actix_web::test]
async fn admin_pages_are_for_admins() {
    let fake = Arc::new(Fake::as_(owner()));
    for path in [
        "/admin",
        "/admin/people",
        "/admin/clusters",
        "/admin/metering",
        "/admin/prices",
        "/admin/assignments",
        "/admin/findings",
        "/admin/integrity",
    ] {
        assert_eq!(get(fake.clone(), path).await.0, 403, "{path}");
    }
    assert_eq!(post(fake.clone(), "/admin/integrity/run", &[("csrf", CSRF), ("service", "billing")]).await.0, 403);
    assert_eq!(post(fake.clone(), "/admin/people/suspend", &[("csrf", CSRF), ("email", "x@example.com")]).await.0, 403);
    assert!(fake.calls().is_empty());
    let admin = Some(Viewer { admin: true, ..owner().unwrap() });
    let fake = Arc::new(
        Fake::as_(admin)
            .answer("GET", "/api/admin/users?q=bob%40example.com&limit=200", 200, json!({"items": [
                {"id": "u-bob", "email": "bob@example.com", "name": "Bob", "status": "active", "is_admin": false}], "total": 1, "limit": 200, "offset": 0}))
            .answer("POST", "/api/admin/users/u-bob/suspend", 200, json!({})),
    );
    let (status, location) =
        post(fake.clone(), "/admin/people/suspend", &[("csrf", CSRF), ("email", "bob@example.com")]).await;
    assert_eq!((status, location.as_deref()), (303, Some("/admin/people?q=bob%40example.com&done=suspended")));
    assert!(fake.calls().iter().any(|(m, p, _)| m == "POST" && p == "/api/admin/users/u-bob/suspend"));
}

#[actix_web::test]
async fn an_admin_reads_findings_as_a_table_with_their_text_escaped() {
    let admin = Some(Viewer { admin: true, ..owner().unwrap() });
    let fake = Arc::new(Fake::as_(admin).answer(
        "GET",
        "/api/admin/billing/findings",
        200,
        json!({"findings": [
        {"kind": "ledger_mismatch", "detail": "<img src=x>", "count": 2, "nested": {"skipped": true}}]}),
    ));
    let (status, body, _) = get(fake, "/admin/findings").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<th scope=\"col\">kind</th>")
            && body.contains("<td>ledger_mismatch</td>")
            && body.contains("<td>2</td>"),
        "{body}"
    );
    assert!(!body.contains("<img") && !body.contains("skipped"), "escaped, nested values left out: {body}");
}

#[actix_web::test]
async fn an_admin_sees_every_services_open_integrity_findings_and_runs_a_services_checks() {
    let admin = Some(Viewer { admin: true, ..owner().unwrap() });
    let finding = |check: &str, subject: &str, detail: &str| {
        json!({"id": "f1", "check": check, "key": "k", "subject": subject, "detail": detail,
            "first_seen": "2026-12-07T09:00:00Z", "last_seen": "2026-12-07T10:00:00Z", "resolved_at": null, "alerted_at": "2026-12-07T09:00:01Z"})
    };
    let check = |name: &str, ok: Option<bool>, error: Option<&str>, open: i64| {
        json!({"check": name, "last_started_at": "2026-12-07T10:00:00Z", "last_finished_at": "2026-12-07T10:00:01Z",
            "last_ok": ok, "last_error": error, "last_found": open, "running": false, "open": open})
    };
    let fake = Arc::new(
        Fake::as_(admin)
            .answer("GET", "/api/admin/integrity/identity?status=open&limit=50&offset=0", 200, json!({
                "items": [finding("outbox_draining", "outbox/UserCreatedV1", "3 events unpublished for 20 min <script>x</script>")],
                "total": 1, "limit": 200, "offset": 0, "checks": [check("outbox_draining", Some(true), None, 1)]}))
            .answer("GET", "/api/admin/integrity/team?status=open&limit=50&offset=0", 502, json!({"code": "upstream_unavailable"}))
            .answer("GET", "/api/admin/integrity/provisioning?status=open&limit=50&offset=0", 200,
                json!({"items": [], "total": 0, "limit": 200, "offset": 0, "checks": []}))
            .answer("GET", "/api/admin/integrity/metering?status=open&limit=50&offset=0", 200,
                json!({"items": [], "total": 0, "limit": 200, "offset": 0, "checks": []}))
            .answer("GET", "/api/admin/integrity/billing?status=open&limit=50&offset=0", 200, json!({
                "items": [], "total": 0, "limit": 200, "offset": 0,
                "checks": [check("stripe_customers", Some(false), Some("stripe_unavailable"), 0)]}))
            .answer("POST", "/api/admin/integrity/metering/run", 202, json!({"id": "r1", "status": "running"})),
    );
    let (status, body, _) = get(fake.clone(), "/admin/integrity").await;
    assert_eq!(status, 200, "{body}");
    for service in ["identity", "team", "provisioning", "metering", "billing"] {
        assert!(
            body.contains(&format!(r#"<input type="hidden" name="service" value="{service}">"#)),
            "{service}: {body}"
        );
    }
    assert_eq!(body.matches(&format!(r#"<input type="hidden" name="csrf" value="{CSRF}">"#)).count(), 5);
    assert!(
        body.contains("<td>outbox_draining</td><th scope=\"row\">outbox/UserCreatedV1</th><td class=\"wrap\">3 events unpublished for 20 min &#60;script&#62;x&#60;/script&#62;</td><td>7 December 2026 09:00 UTC</td><td>7 December 2026 10:00 UTC</td>"),
        "check, subject, detail escaped, first and last seen: {body}"
    );
    assert!(body.contains("Its findings could not be read (upstream_unavailable)."), "{body}");
    assert!(body.contains(r#"id="integrity-billing-none">No open findings."#), "{body}");
    assert!(body.contains("<caption>1 open, 1 to 1 shown, newest first</caption>"), "{body}");
    assert!(!body.contains("<th scope=\"col\">Resolved</th>"), "open findings have no resolved column: {body}");
    // Each check's last run: started, ended, its status, what it found and what is open now.
    assert!(
        body.contains("<th scope=\"row\">stripe_customers</th><td>7 December 2026 10:00 UTC</td><td>7 December 2026 10:00 UTC</td><td class=\"wrap\">failed: stripe_unavailable</td><td class=\"num\">0</td><td class=\"num\">0</td>"),
        "{body}"
    );
    assert!(body.contains("<th scope=\"row\">outbox_draining</th>") && body.contains(">worked</td>"), "{body}");
    assert!(!body.contains("Run requested"), "nothing started: {body}");
    // The filter, as plain links.
    assert!(body.contains(r#"<a href="/admin/integrity" aria-current="page">Open</a>"#), "{body}");
    assert!(body.contains(r#"<a href="/admin/integrity?status=resolved">Resolved</a>"#), "{body}");
    assert!(body.contains(r#"<a href="/admin/integrity?status=all">All</a>"#), "{body}");
    assert!(!body.contains("Older findings") && !body.contains("Newer findings"), "one page each: {body}");

    // Running: the API accepts (202, a run to poll, as it may answer), and the page says it runs.
    let (status, location) =
        post(fake.clone(), "/admin/integrity/run", &[("csrf", CSRF), ("service", "metering")]).await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("/admin/integrity?started=metering&done=running#integrity-metering"))
    );
    let (_, body, _) = get(fake.clone(), "/admin/integrity?started=metering&done=running").await;
    assert!(body.contains("The checks were started and are running"), "{body}");
    assert_eq!(body.matches("Run requested: running.").count(), 1, "{body}");
    assert!(body.contains(r#"id="integrity-metering-started""#), "in metering's section: {body}");
    let (status, _) = post(fake.clone(), "/admin/integrity/run", &[("csrf", "forged"), ("service", "billing")]).await;
    assert_eq!(status, 403);
    let (status, location) =
        post(fake.clone(), "/admin/integrity/run", &[("csrf", CSRF), ("service", "../users")]).await;
    assert_eq!((status, location.as_deref()), (303, Some("/admin/integrity?failed=unknown_service")));
    let (_, location) =
        post(fake.clone(), "/admin/integrity/run", &[("csrf", CSRF), ("service", "team"), ("status", "resolved")])
            .await;
    assert_eq!(
        location.as_deref(),
        Some("/admin/integrity?status=resolved&failed=route_not_found"),
        "a refused run says why, on the filter it was asked from"
    );
    let runs: Vec<String> = fake.calls().into_iter().filter(|(m, _, _)| m == "POST").map(|(_, path, _)| path).collect();
    assert_eq!(
        runs,
        ["/api/admin/integrity/metering/run", "/api/admin/integrity/team/run"],
        "only the named service's checks were asked for, once each"
    );
}

#[actix_web::test]
async fn an_admin_filters_integrity_findings_by_status_and_pages_through_them_with_links() {
    let admin = Some(Viewer { admin: true, ..owner().unwrap() });
    let finding = |subject: &str, resolved: Option<&str>| {
        json!({"id": "f", "check": "stripe_subscriptions", "key": subject, "subject": subject, "detail": "d",
            "first_seen": "2026-12-01T09:00:00Z", "last_seen": "2026-12-02T09:00:00Z", "resolved_at": resolved, "alerted_at": null})
    };
    let empty = |total: i64| json!({"items": [], "total": total, "limit": 50, "offset": 0, "checks": []});
    let mut fake = Fake::as_(admin)
        // Billing's second page of resolved findings: 120 in all, so a third page follows.
        .answer(
            "GET",
            "/api/admin/integrity/billing?status=resolved&limit=50&offset=50",
            200,
            json!({
            "items": [finding("sub_<1>", Some("2026-12-03T08:30:00Z")), finding("sub_2", None)],
            "total": 120, "limit": 50, "offset": 50, "checks": []}),
        );
    for service in ["identity", "team", "provisioning", "metering"] {
        fake =
            fake.answer("GET", &format!("/api/admin/integrity/{service}?status=all&limit=50&offset=0"), 200, empty(0));
    }
    let fake = Arc::new(fake.answer(
        "GET",
        "/api/admin/integrity/billing?status=all&limit=50&offset=0",
        200,
        json!({
        "items": [finding("sub_9", None)], "total": 51, "limit": 50, "offset": 0, "checks": []}),
    ));

    let (status, body, _) = get(fake.clone(), "/admin/integrity?status=resolved&service=billing&page=2").await;
    assert_eq!(status, 200, "{body}");
    let asked: Vec<String> = fake.calls().into_iter().map(|(_, path, _)| path).collect();
    assert_eq!(asked, ["/api/admin/integrity/billing?status=resolved&limit=50&offset=50"], "billing's page only");
    assert_eq!(body.matches("<section ").count(), 1, "billing's section only: {body}");
    assert!(body.contains("<caption>120 resolved, 51 to 52 shown, newest first</caption>"), "{body}");
    assert!(body.contains("<th scope=\"col\">Resolved</th>"), "{body}");
    assert!(body.contains("<th scope=\"row\">sub_&#60;1&#62;</th>"), "escaped: {body}");
    assert!(
        body.contains("<td>3 December 2026 08:30 UTC</td></tr>") && body.contains("<td>still open</td></tr>"),
        "{body}"
    );
    assert!(
        body.contains(r#"<a href="/admin/integrity?status=resolved&#38;service=billing" rel="prev">Newer findings"#),
        "{body}"
    );
    assert!(
        body.contains(
            r#"<a href="/admin/integrity?status=resolved&#38;service=billing&#38;page=3" rel="next">Older findings"#
        ),
        "{body}"
    );
    // The filter keeps the service and starts again at its first page; every service is a link away.
    assert!(body.contains(r#"<a href="/admin/integrity?status=all&#38;service=billing">All</a>"#), "{body}");
    assert!(body.contains(r#"<a href="/admin/integrity?service=billing">Open</a>"#), "{body}");
    assert!(body.contains(r#"<a href="/admin/integrity?status=resolved">Every service</a>"#), "{body}");
    // The run form comes back to the same filter.
    assert!(body.contains(r#"<input type="hidden" name="status" value="resolved">"#), "{body}");

    // Every service's first page: a service with more than a page links to its next one.
    let (status, body, _) = get(fake.clone(), "/admin/integrity?status=all").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.matches("<section ").count(), 5);
    assert!(body.contains("<caption>51 in all, 1 to 1 shown, newest first</caption>"), "{body}");
    assert!(body.contains(r#"href="/admin/integrity?status=all&#38;service=billing&#38;page=2" rel="next""#), "{body}");
    assert!(body.contains(r#"id="integrity-team-none">No findings."#), "{body}");
    assert!(!body.contains("rel=\"prev\""), "{body}");

    // What the URL names is checked against fixed lists before anything is asked.
    let before = fake.calls().len();
    for bad in [
        "/admin/integrity?status=closed",
        "/admin/integrity?service=..%2Fusers",
        "/admin/integrity?page=0",
        "/admin/integrity?page=-1",
        "/admin/integrity?page=99999999",
        "/admin/integrity?page=2x",
        "/admin/integrity?started=stripe",
    ] {
        assert_eq!(get(fake.clone(), bad).await.0, 404, "{bad}");
    }
    assert_eq!(fake.calls().len(), before, "nothing asked of the API");
}

#[actix_web::test]
async fn the_owners_team_page_shows_each_members_storage_this_month_as_billing_gives_it() {
    let mut usage = usage_view();
    usage["lines"].as_array_mut().unwrap().extend([
        json!({"day": "2026-12-02", "resource": "storage_offline", "user_id": "u-bob", "billing_mode": "postpaid", "project_id": 8,
            "quantity": "0.000123456789", "unit": "GB-month", "cost": "0.01", "cost_minor": 0}),
        json!({"day": "2026-12-02", "resource": "storage_online", "user_id": "u-bob", "billing_mode": "postpaid", "project_id": 8,
            "quantity": "0.25", "unit": "GB-month", "cost": "1", "cost_minor": 1}),
        json!({"day": "2026-12-02", "resource": "storage_offline", "user_id": "u-ada", "billing_mode": "postpaid", "project_id": 9,
            "quantity": "7", "unit": "GB-month", "cost": "24.5", "cost_minor": 25}),
    ]);
    let team = || {
        Fake::as_(owner()).answer("GET", "/api/team", 200, team_view()).answer(
            "GET",
            "/api/team/invitations",
            200,
            json!([]),
        )
    };
    let fake = Arc::new(team().answer("GET", "/api/billing/usage", 200, usage));
    let (status, body, _) = get(fake.clone(), "/team").await;
    assert_eq!(status, 200, "{body}");
    // Bob's offline storage is his two lines (0.5 + 0.000123456789, to 9 places), online 0.25;
    // the owner's own storage is not a member's.
    assert!(
        body.contains("<td class=\"num\">5.00</td><td class=\"num\">10.00</td><td class=\"num\">0.00</td><td class=\"num\">0.500123457</td><td class=\"num\">0.250000000</td>"),
        "{body}"
    );
    assert!(!body.contains("7.000000000"), "{body}");
    assert!(
        body.contains(
            r#"<a href="/usage?member=bob%40example.com">Usage<span class="sr"> of bob@example.com</span></a>"#
        ),
        "{body}"
    );
    assert!(!body.contains("storage-unknown"), "{body}");

    // Billing not answering leaves the rest of the page, and says so.
    let fake = Arc::new(team().answer("GET", "/api/billing/usage", 503, json!({"code": "database_unavailable"})));
    let (status, body, _) = get(fake, "/team").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"id="storage-unknown""#) && body.contains("<td class=\"num\">–</td><td class=\"num\">–</td>"),
        "{body}"
    );

    // A member's team page asks billing nothing.
    let fake = Arc::new(Fake::as_(member()).answer(
        "GET",
        "/api/team/membership",
        200,
        json!({
        "membership_id": "m", "owner_user_id": "u-ada", "owner_name": "Ada", "owner_email": "ada@example.com",
        "project_role": "Data scientist", "joined_at": "2026-12-01T00:00:00Z"}),
    ));
    let (status, body, _) = get(fake.clone(), "/team").await;
    assert_eq!(status, 200, "{body}");
    assert!(fake.calls().iter().all(|(_, path, _)| !path.starts_with("/api/billing")), "{:?}", fake.calls());
}

#[actix_web::test]
async fn the_plan_is_chosen_with_the_terms_and_the_cluster_shows_its_hopsworks_username() {
    let fake = Arc::new(
        Fake::as_(owner())
            .answer("GET", "/api/billing", 200, billing_view())
            .answer("GET", "/api/billing/plan", 200, json!({"plan": null, "limits": {"max_active_projects": 1},
                "active_projects": 0, "terms_version": "2026-12", "restrictions": [], "suspended": false}))
            .answer("GET", "/api/cluster", 200, json!({"status": "complete", "hopsworks_username": "ada10000",
                "cluster": {"id": "c", "name": "north-1", "region": "eu-north", "endpoint": "https://north-1.example/hopsworks"}}))
            .answer("PUT", "/api/billing/plan", 200, json!({})),
    );
    let (_, body, _) = get(fake.clone(), "/billing").await;
    assert!(
        body.contains("Choose a plan to start.") && body.contains(r#"name="terms_version" value="2026-12""#),
        "{body}"
    );
    assert!(body.contains("Your cluster is ready."));
    let (_, location) =
        post(fake.clone(), "/billing/plan", &[("csrf", CSRF), ("plan", "payg"), ("terms_version", "2026-12")]).await;
    assert_eq!(location.as_deref(), Some("/billing?failed=terms_not_accepted"));
    assert!(!fake.calls().iter().any(|(m, _, _)| m == "PUT"), "nothing chosen without the terms");
    let (_, location) = post(
        fake.clone(),
        "/billing/plan",
        &[("csrf", CSRF), ("plan", "payg"), ("terms_version", "2026-12"), ("accept_terms", "yes")],
    )
    .await;
    assert_eq!(location.as_deref(), Some("/billing?done=plan"));
    let put = fake.calls().into_iter().find(|(m, _, _)| m == "PUT").unwrap();
    assert_eq!(put.2, Some(json!({"plan": "payg", "accept_terms": true, "terms_version": "2026-12"})));

    let (status, body, _) = get(fake, "/cluster").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<code>ada10000</code>") && body.contains(r#"href="https://north-1.example/hopsworks""#),
        "{body}"
    );
}

#[actix_web::test]
async fn a_member_sees_their_own_usage_without_cost() {
    let fake = Arc::new(Fake::as_(member()).answer("GET", "/api/usage?from=2026-11-01&to=2026-11-30", 200, json!([
        {"day": "2026-11-02", "user_id": "u-bob", "owner_user_id": "u-ada", "cluster_id": "c", "namespace": "lab",
         "cpu_core_hours": "1.25", "memory_gib_hours": "4", "gpu_hours": "0", "cpu_nanocore_seconds": 1, "memory_byte_seconds": 1, "gpu_seconds": 0, "samples": 4,
         "storage_gb_months": "0.0125", "storage_offline_byte_seconds": 1, "storage_online_byte_seconds": 0, "storage_samples": 24}
    ])));
    let (status, body, _) = get(fake.clone(), "/usage?month=2026-11").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("lab<span class=\"sr\">: its days</span></a></th><td class=\"num\">1.250</td><td class=\"num\">4.000</td><td class=\"num\">0.000</td><td class=\"num\">0.012500000</td></tr>"), "{body}");
    assert!(
        body.contains("Storage (GB-months): 0.012500000 GB-months</figcaption>"),
        "their storage, without cost: {body}"
    );
    assert!(!body.contains("Cost") && !body.contains("USD"), "no money for a member");
    assert!(!body.contains(r#"<a href="/usage/"#), "a member's days do not link to billed samples");
    assert_eq!(fake.calls().len(), 1, "only the member's own usage is asked for: {:?}", fake.calls());
}

#[actix_web::test]
async fn a_form_posted_after_the_session_ended_changes_nothing_and_leads_to_sign_in() {
    let fake = Arc::new(Fake::as_(None));
    let (status, location) = post(fake.clone(), "/team/invite", &[("csrf", CSRF), ("email", "bob@example.com")]).await;
    assert_eq!((status, location.as_deref()), (303, Some("/api/auth/login?returnTo=%2F")));
    assert!(fake.calls().is_empty());
}

fn team_view() -> Value {
    json!({"owner_user_id": "u-ada", "members": [{"user_id": "u-bob", "name": "Bob", "email": "bob@example.com",
        "membership_id": "m", "project_role": "Data scientist", "joined_at": "2026-12-01T00:00:00Z", "account_status": "active",
        "hopsworks_account": {"state": "assigned", "hopsworks_username": "bob000"},
        "usage_this_month": {"month": "2026-12-01", "cpu_core_hours": "5", "memory_gib_hours": "10", "gpu_hours": "0"}}]})
}

#[actix_web::test]
async fn an_owner_follows_a_members_usage_down_to_the_samples_of_their_day() {
    let sample = |user: &str, cost: &str| {
        json!({"sample_id": "s", "user_id": user, "namespace": "lab", "project_id": 7, "window_start": "2026-12-03T10:00:00Z",
            "window_end": "2026-12-03T10:15:00Z", "billing_mode": "postpaid", "cpu_core_hours": "0.25",
            "memory_gib_hours": "1", "gpu_hours": "0", "cost": cost})
    };
    let fake = Arc::new(
        Fake::as_(owner())
            .answer("GET", "/api/billing/usage?from=2026-12-01&to=2026-12-31", 200, usage_view())
            .answer("GET", "/api/pricing", 200, pricing())
            .answer("GET", "/api/me", 200, json!({"id": "u-ada", "email": "ada@example.com", "name": "Ada"}))
            .answer("GET", "/api/team", 200, team_view())
            // The API narrows the day to Bob (by his id, which no console URL carries) and,
            // for his storage, to storage samples.
            .answer(
                "GET",
                "/api/billing/usage/samples?day=2026-12-03&limit=1000&user_id=u-bob",
                200,
                json!({"day": "2026-12-03", "next": "c1", "samples": [sample("u-bob", "8.75"), sample("u-bob", "1.25")]}),
            )
            .answer(
                "GET",
                "/api/billing/usage/samples?day=2026-12-03&limit=1000&user_id=u-bob&offset=1000",
                200,
                json!({"day": "2026-12-03", "next": null, "samples": [sample("u-bob", "2")]}),
            )
            .answer(
                "GET",
                "/api/billing/usage/samples?day=2026-12-03&limit=1000&user_id=u-bob&source=storage",
                200,
                json!({"day": "2026-12-03", "next": null, "samples": [{"sample_id": "st", "user_id": "u-bob",
                    "namespace": "lab", "project_id": 7, "source": "storage", "window_start": "2026-12-03T10:00:00Z",
                    "window_end": "2026-12-03T11:00:00Z", "billing_mode": "postpaid", "cpu_core_hours": "0",
                    "memory_gib_hours": "0", "gpu_hours": "0", "storage_offline_gb_months": "0.0208333333333333333333333333",
                    "storage_online_gb_months": "0", "cost": "0.0729166666666666666666666667"}]}),
            ),
    );
    let (status, body, _) = get(fake.clone(), "/usage?month=2026-12&member=Bob%40example.com").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<h1>Usage of Bob</h1>"), "{body}");
    // Bob's lines only: 2.17 USD of the account's 3.04; his days link to his samples.
    assert!(body.contains(r#"id="member-cost">2.17 USD<"#), "{body}");
    assert!(!body.contains("You (ada@example.com)") && !body.contains(r#"id="month-cost""#));
    assert!(body.contains(r#"<a href="/usage/2026-12-03?member=bob%40example.com">3 December"#), "{body}");
    assert!(body.contains(r#"<input type="hidden" name="member" value="bob@example.com">"#));
    assert!(
        body.contains(r#"<a href="/usage/2026-12-03?member=bob%40example.com&amp;source=storage">"#),
        "his storage day links to his storage samples: {body}"
    );

    let (status, body, _) = get(fake.clone(), "/usage/2026-12-03?member=bob%40example.com").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Usage of Bob on 3 December 2026"), "{body}");
    assert!(body.contains(r#"id="day-cost">0.10 USD<"#), "Bob's two entries: {body}");
    assert_eq!(body.matches("<td>lab</td>").count(), 2);
    assert!(body.contains(r#"href="/usage/2026-12-03?member=bob%40example.com&#38;page=2" rel="next""#), "{body}");
    assert!(!body.contains("rel=\"prev\""), "the first page: {body}");
    assert!(body.contains(r#"href="/usage?member=bob%40example.com&#38;month=2026-12""#));
    // The next page is the next thousand of Bob's entries; it links back to the first.
    let (status, body, _) = get(fake.clone(), "/usage/2026-12-03?member=bob%40example.com&page=2").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"id="day-cost">0.02 USD<"#) && !body.contains("Later entries"), "{body}");
    assert!(
        body.contains(r#"<a href="/usage/2026-12-03?member=bob%40example.com" rel="prev">Earlier entries</a>"#),
        "{body}"
    );
    // A page that is not a number from 1 to 1001 is no page.
    for bad in ["0", "-1", "two", "1002", ""] {
        let (status, _, _) = get(fake.clone(), &format!("/usage/2026-12-03?member=bob%40example.com&page={bad}")).await;
        assert_eq!(status, 404, "page={bad}");
    }

    let (status, body, _) = get(fake.clone(), "/usage/2026-12-03?member=bob%40example.com&source=storage").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Storage of Bob on 3 December 2026"), "{body}");
    assert!(body.contains(r#"<td class="num">0.020833333</td>"#), "the storage sample's GB-months: {body}");
    assert!(!body.contains("CPU core-hours"), "a storage day shows storage only: {body}");
    assert!(body.contains(r#"href="/usage?member=bob%40example.com&#38;month=2026-12""#));
    let calls = fake.calls();
    assert!(
        calls
            .iter()
            .all(|(_, path, _)| !path.starts_with("/api/billing/usage/samples") || path.contains("user_id=u-bob")),
        "a member's day is always asked of the API for that member: {calls:?}"
    );

    // Someone who is not in the team is nobody's usage; a source is usage or storage.
    let before = fake.calls().len();
    assert_eq!(get(fake.clone(), "/usage?member=eve%40example.com").await.0, 404);
    assert_eq!(get(fake.clone(), "/usage/2026-12-03?member=eve%40example.com").await.0, 404);
    assert_eq!(get(fake.clone(), "/usage/2026-12-03?source=disk").await.0, 404);
    assert!(
        fake.calls()[before..].iter().all(|(_, path, _)| !path.starts_with("/api/billing/usage/samples")),
        "no samples are asked for a refused page"
    );
}

/// The targets of a page's links to December's days (chart bars and the days list).
fn day_links(body: &str) -> Vec<&str> {
    body.split(r#"<a href="/usage/2026-12-"#).skip(1).map(|rest| rest.split('"').next().unwrap()).collect()
}

/// `usage_view` with a third project: Bob's core-hour in project 9 on 3 December.
fn usage_of_three_projects() -> Value {
    let mut usage = usage_view();
    usage["lines"].as_array_mut().unwrap().push(json!({"day": "2026-12-03", "resource": "cpu", "user_id": "u-bob",
        "billing_mode": "postpaid", "project_id": 9, "quantity": "1", "cost": "35", "cost_minor": 35}));
    usage
}

#[actix_web::test]
async fn an_owner_narrows_usage_to_one_project_keeping_the_month_and_the_member() {
    let fake = Arc::new(
        Fake::as_(owner())
            .answer("GET", "/api/billing/usage?from=2026-12-01&to=2026-12-31", 200, usage_of_three_projects())
            .answer("GET", "/api/billing/usage", 200, usage_of_three_projects())
            .answer("GET", "/api/pricing", 200, pricing())
            .answer("GET", "/api/me", 200, json!({"id": "u-ada", "email": "ada@example.com", "name": "Ada"}))
            .answer("GET", "/api/team", 200, team_view()),
    );
    // The whole account: 8.5 core-hours (2.98 USD), 10 GiB-hours outside any project; each
    // project's row links to its page by the name shown, keeping the month.
    let (status, body, _) = get(fake.clone(), "/usage?month=2026-12").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("CPU (core-hours): 8.500 core-hours, costing 2.98 USD"), "{body}");
    assert!(body.contains("3 December · CPU 6.000 · memory 10.000 · GPU 0.000 · storage 0.500000000"), "{body}");
    for (query, name) in
        [("Project+7", "Project 7"), ("Project+9", "Project 9"), ("Outside+any+project", "Outside any project")]
    {
        assert!(
            body.contains(&format!(
                r#"<a href="/usage?project={query}&#38;month=2026-12">{name}<span class="sr">: its days, people and costs</span></a></th>"#
            )),
            "{name}: {body}"
        );
    }

    // Project 7 alone: its lines only (no memory, one core-hour less), its cost instead of the
    // account's, its people's share of it, and a way back to every project.
    let (status, body, _) = get(fake.clone(), "/usage?project=Project+7&month=2026-12").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<title>Usage in Project 7"), "{body}");
    assert!(body.contains("<h1>Usage in Project 7</h1>"), "{body}");
    assert!(body.contains(r#"<a href="/usage?month=2026-12">Back to all projects</a>"#), "{body}");
    assert!(!body.contains("Back to the whole account"), "no person was picked");
    assert!(body.contains(r#"<input type="hidden" name="project" value="Project 7">"#), "{body}");
    assert!(body.contains(r#"This project's cost in the month shown: <strong id="project-cost">2.64 USD<"#), "{body}");
    assert!(!body.contains(r#"id="month-cost""#) && !body.contains(r#"id="invoice-total""#), "not the account's cost");
    assert!(body.contains("CPU (core-hours): 7.500 core-hours, costing 2.63 USD"), "{body}");
    assert!(body.contains("Memory (GiB-hours): 0.000 GiB-hours, costing 0.00 USD"), "{body}");
    assert!(body.contains("Storage (GB-months): 0.500000000 GB-months, costing 0.02 USD"), "{body}");
    assert!(body.contains(r#"aria-label="CPU (core-hours) per day in Project 7""#), "the chart says whose: {body}");
    assert!(body.contains("1 December · CPU 2.500 · memory 0.000 · GPU 0.000 · storage 0.000000000"), "{body}");
    assert!(body.contains("3 December · CPU 5.000 · memory 0.000 · GPU 0.000 · storage 0.500000000"), "{body}");
    // Its days link to the day's samples of this project: every chart's bars and every day.
    let days = day_links(&body);
    assert_eq!(days.len(), 4 * 31 + 2, "{body}");
    assert!(days.iter().all(|h| h.contains("?project=Project+7")), "{days:?}");
    assert!(body.contains(r#"<a href="/usage/2026-12-03?project=Project+7">3 December"#), "{body}");
    assert!(body.contains(r#"<a href="/usage/2026-12-03?project=Project+7&amp;source=storage">"#), "{body}");
    assert!(body.contains("(for storage, the storage samples), in this project only."), "{body}");
    assert!(!body.contains("cannot narrow") && !body.contains("days-note"), "{body}");
    // The projects table is this project's row alone, not a link to itself.
    assert!(body.contains(r#"<th scope="row">Project 7</th><td class="num">7.500</td><td class="num">0.000</td><td class="num">0.000</td><td class="num">0.500000000</td><td class="num">2.64 USD"#), "{body}");
    assert!(!body.contains("Project 9") && !body.contains("Outside any project"), "{body}");
    // Each person's share of the project, linking to their usage in it.
    assert!(body.contains(r#"<a href="/usage?member=bob%40example.com&#38;project=Project+7&#38;month=2026-12">Bob<span class="sr">: their days in this project</span></a></th><td class="num">5.000</td><td class="num">0.000</td><td class="num">0.000</td><td class="num">0.500000000</td><td class="num">1.77 USD"#), "{body}");
    assert!(body.contains(r#"<a href="/usage?member=ada%40example.com&#38;project=Project+7&#38;month=2026-12">You (ada@example.com)<span class="sr">: their days in this project</span></a></th><td class="num">2.500</td>"#), "{body}");

    // Bob's page links to his projects keeping him; his usage in project 7 is his lines in it.
    let (status, body, _) = get(fake.clone(), "/usage?member=bob%40example.com&month=2026-12").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"<a href="/usage?member=bob%40example.com&#38;project=Project+9&#38;month=2026-12">Project 9<span class="sr">"#), "{body}");
    let (status, body, _) = get(fake.clone(), "/usage?member=bob%40example.com&project=Project+7&month=2026-12").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<h1>Usage of Bob in Project 7</h1>"), "{body}");
    assert!(
        body.contains(r#"Their cost in this project in the month shown: <strong id="project-cost">1.77 USD<"#),
        "{body}"
    );
    assert!(body.contains("CPU (core-hours): 5.000 core-hours, costing 1.75 USD"), "{body}");
    assert!(body.contains("3 December · CPU 5.000 · memory 0.000 · GPU 0.000 · storage 0.500000000"), "{body}");
    assert!(!body.contains("1 December ·"), "Ada's day is not Bob's: {body}");
    assert!(
        body.contains(r#"<a href="/usage/2026-12-03?member=bob%40example.com&#38;project=Project+7">3 December"#),
        "{body}"
    );
    assert!(day_links(&body).iter().all(|h| h.contains("?member=bob%40example.com&")), "{body}");
    assert!(body.contains("the storage samples), this person's in this project only."), "{body}");
    assert!(body.contains(r#"<a href="/usage?member=bob%40example.com&#38;month=2026-12">Back to all projects<span class="sr"> of Bob</span></a>"#), "{body}");
    assert!(body.contains(r#"<a href="/usage">Back to the whole account</a>"#));
    assert!(body.contains(r#"<input type="hidden" name="member" value="bob@example.com">"#));
    assert!(body.contains(r#"<input type="hidden" name="project" value="Project 7">"#));

    // Lines of no known project are a row, and a page, of their own.
    let (status, body, _) = get(fake.clone(), "/usage?project=Outside%20any%20project&month=2026-12").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<h1>Usage outside any project</h1>"), "{body}");
    assert!(body.contains(r#"id="project-cost">0.40 USD<"#), "{body}");
    assert!(body.contains("3 December · CPU 0.000 · memory 10.000 · GPU 0.000 · storage 0.000000000"), "{body}");
    assert!(body.contains(r#"<a href="/usage/2026-12-03?project=Outside+any+project">3 December"#), "{body}");

    // Without a month, the links keep none.
    let (status, body, _) = get(fake.clone(), "/usage?project=Project+9").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"<a href="/usage">Back to all projects</a>"#), "{body}");
    assert!(body.contains(r#"id="project-cost">0.35 USD<"#), "{body}");
    assert!(body.contains(r#"<a href="/usage?member=bob%40example.com&#38;project=Project+9">Bob"#), "{body}");

    // A project the month has no usage of, or any other name, is not found; so is a project
    // of someone outside the team.
    for path in [
        "/usage?project=Project+8&month=2026-12",
        "/usage?project=7&month=2026-12",
        "/usage?project=project+7&month=2026-12",
        "/usage?project=%3Cscript%3Ealert(1)%3C%2Fscript%3E&month=2026-12",
        "/usage?member=eve%40example.com&project=Project+7&month=2026-12",
    ] {
        let (status, body, _) = get(fake.clone(), path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("<script>alert"), "{body}");
    }
    let calls = fake.calls();
    assert!(
        calls.iter().all(|(_, path, _)| !path.contains("project") && !path.starts_with("/api/billing/usage/samples")),
        "the project is the console's filter, never sent to the API: {calls:?}"
    );
}

#[actix_web::test]
async fn an_owners_project_day_shows_the_samples_billing_gives_for_that_project_only() {
    let sample = |user: &str, project: Value, source: &str, cost: &str| {
        json!({"sample_id": "s", "user_id": user, "namespace": "lab", "project_id": project, "source": source,
            "window_start": "2026-12-03T10:00:00Z", "window_end": "2026-12-03T10:15:00Z", "billing_mode": "postpaid",
            "cpu_core_hours": "0.25", "memory_gib_hours": "1", "gpu_hours": "0", "cost": cost})
    };
    let samples = "/api/billing/usage/samples?day=2026-12-03&limit=1000";
    let month = "/api/billing/usage?from=2026-12-01&to=2026-12-31";
    let fake = Arc::new(
        Fake::as_(owner())
            .answer("GET", month, 200, usage_of_three_projects())
            .answer("GET", "/api/pricing", 200, pricing())
            .answer("GET", "/api/me", 200, json!({"id": "u-ada", "email": "ada@example.com", "name": "Ada"}))
            .answer("GET", "/api/team", 200, team_view())
            // Billing narrows the day to the project by its id ("none": of no known project).
            .answer(
                "GET",
                &format!("{samples}&project_id=7"),
                200,
                json!({"day": "2026-12-03", "next": "c1",
                    "samples": [sample("u-ada", json!(7), "usage", "8.75"), sample("u-bob", json!(7), "usage", "1.25")]}),
            )
            .answer(
                "GET",
                &format!("{samples}&project_id=7&offset=1000"),
                200,
                json!({"day": "2026-12-03", "next": null, "samples": [sample("u-bob", json!(7), "usage", "2")]}),
            )
            .answer(
                "GET",
                &format!("{samples}&project_id=none"),
                200,
                json!({"day": "2026-12-03", "next": null, "samples": [sample("u-bob", Value::Null, "usage", "40")]}),
            )
            .answer(
                "GET",
                &format!("{samples}&user_id=u-bob&project_id=7&source=storage"),
                200,
                json!({"day": "2026-12-03", "next": null, "samples": [sample("u-bob", json!(7), "storage", "1.75")]}),
            ),
    );
    let paths = |from: usize| -> Vec<String> { fake.calls()[from..].iter().map(|(_, p, _)| p.clone()).collect() };

    // Project 7's day: the project is checked against the month's usage, then its samples
    // asked for by id; the page's links keep the project.
    let before = fake.calls().len();
    let (status, body, _) = get(fake.clone(), "/usage/2026-12-03?project=Project+7").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(paths(before), [month.to_owned(), format!("{samples}&project_id=7"), "/api/pricing".to_owned()]);
    assert!(body.contains("<h1>Usage in Project 7 on 3 December 2026</h1>"), "{body}");
    assert!(body.contains(r#"id="day-cost">0.10 USD<"#), "the page's two entries: {body}");
    assert!(
        body.contains(r#"<a href="/usage/2026-12-03?project=Project+7&#38;page=2" rel="next">Later entries</a>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<a href="/usage?project=Project+7&#38;month=2026-12">Back to the usage in Project 7</a>"#),
        "{body}"
    );
    let before = fake.calls().len();
    let (status, body, _) = get(fake.clone(), "/usage/2026-12-03?project=Project+7&page=2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(paths(before)[1], format!("{samples}&project_id=7&offset=1000"));
    assert!(body.contains(r#"id="day-cost">0.02 USD<"#) && !body.contains("Later entries"), "{body}");

    // Outside any project: the entries of no known project.
    let before = fake.calls().len();
    let (status, body, _) = get(fake.clone(), "/usage/2026-12-03?project=Outside+any+project").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(paths(before)[1], format!("{samples}&project_id=none"));
    assert!(body.contains("<h1>Usage outside any project on 3 December 2026</h1>"), "{body}");
    assert!(body.contains(r#"id="day-cost">0.40 USD<"#), "{body}");
    assert!(
        body.contains(r#"<a href="/usage?project=Outside+any+project&#38;month=2026-12">Back to the usage outside any project</a>"#),
        "{body}"
    );

    // With a member and a source too, billing is asked for all three.
    let before = fake.calls().len();
    let (status, body, _) =
        get(fake.clone(), "/usage/2026-12-03?member=bob%40example.com&project=Project+7&source=storage").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        paths(before).contains(&format!("{samples}&user_id=u-bob&project_id=7&source=storage")),
        "{:?}",
        paths(before)
    );
    assert!(body.contains("<h1>Storage of Bob in Project 7 on 3 December 2026</h1>"), "{body}");
    assert!(
        body.contains(r#"<a href="/usage?member=bob%40example.com&#38;project=Project+7&#38;month=2026-12">Back to the usage of Bob in Project 7</a>"#),
        "{body}"
    );

    // A name the usage page would not show, or a project the month has no usage in, is not
    // found, and no samples are asked for; a member has no samples page at all.
    let before = fake.calls().len();
    for path in [
        "/usage/2026-12-03?project=Project+8",
        "/usage/2026-12-03?project=7",
        "/usage/2026-12-03?project=project+7",
        "/usage/2026-12-03?project=Project+07",
        "/usage/2026-12-03?project=Project+%2B7",
        "/usage/2026-12-03?project=Project+0",
        "/usage/2026-12-03?project=Project+-7",
        "/usage/2026-12-03?project=none",
        "/usage/2026-12-03?project=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/usage/2026-12-03?member=eve%40example.com&project=Project+7",
    ] {
        let (status, body, _) = get(fake.clone(), path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("<script>alert"), "{body}");
    }
    assert!(paths(before).iter().all(|p| !p.starts_with("/api/billing/usage/samples")), "{:?}", paths(before));
    let fake = Arc::new(Fake::as_(member()));
    let (status, _, _) = get(fake.clone(), "/usage/2026-12-03?project=lab").await;
    assert_eq!(status, 403);
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[actix_web::test]
async fn a_member_narrows_their_usage_to_one_project_with_its_name_escaped() {
    let row = |day: &str, namespace: &str, cpu: &str, memory: &str, storage: &str| {
        json!({"day": day, "user_id": "u-bob", "owner_user_id": "u-ada", "cluster_id": "c", "namespace": namespace,
            "cpu_core_hours": cpu, "memory_gib_hours": memory, "gpu_hours": "0", "cpu_nanocore_seconds": 1,
            "memory_byte_seconds": 1, "gpu_seconds": 0, "samples": 4, "storage_gb_months": storage,
            "storage_offline_byte_seconds": 1, "storage_online_byte_seconds": 0, "storage_samples": 24})
    };
    let hostile = r#"<em>x</em>&"co""#;
    let fake = Arc::new(Fake::as_(member()).answer(
        "GET",
        "/api/usage?from=2026-11-01&to=2026-11-30",
        200,
        json!([
            row("2026-11-02", "lab", "1.25", "4", "0.0125"),
            row("2026-11-02", hostile, "2", "1", "0"),
            row("2026-11-05", hostile, "0.5", "0", "0"),
        ]),
    ));
    let (status, body, _) = get(fake.clone(), "/usage?month=2026-11").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("2 November · CPU 3.250 · memory 5.000 · GPU 0.000 · storage 0.012500000"), "{body}");
    assert!(
        body.contains(r#"<a href="/usage?project=lab&#38;month=2026-11">lab<span class="sr">: its days</span></a>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<a href="/usage?project=%3Cem%3Ex%3C%2Fem%3E%26%22co%22&#38;month=2026-11">&#60;em&#62;x&#60;/em&#62;&#38;&#34;co&#34;<span class="sr">"#),
        "the name is encoded in the link and escaped in its text: {body}"
    );

    let (status, body, _) = get(fake.clone(), "/usage?project=lab&month=2026-11").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<h1>Usage in project lab</h1>"), "{body}");
    assert!(body.contains(r#"<a href="/usage?month=2026-11">Back to all projects</a>"#), "{body}");
    assert!(body.contains(r#"<input type="hidden" name="project" value="lab">"#), "{body}");
    assert!(body.contains("CPU (core-hours): 1.250 core-hours</figcaption>"), "{body}");
    assert!(body.contains(r#"aria-label="CPU (core-hours) per day in project lab""#), "{body}");
    assert!(body.contains("2 November · CPU 1.250 · memory 4.000 · GPU 0.000 · storage 0.012500000"), "{body}");
    assert!(!body.contains("5 November ·"), "the other project's day: {body}");
    assert!(body.contains(r#"<th scope="row">lab</th><td class="num">1.250</td>"#), "{body}");
    assert!(!body.contains("&#60;em&#62;"), "no other project: {body}");
    assert!(!body.contains("USD") && !body.contains(r#"<a href="/usage/"#), "no money, no samples for a member");

    let (status, body, _) = get(fake.clone(), "/usage?project=%3Cem%3Ex%3C%2Fem%3E%26%22co%22&month=2026-11").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("<em>x"), "escaped everywhere: {body}");
    assert!(body.contains("<h1>Usage in project &#60;em&#62;x&#60;/em&#62;&#38;&#34;co&#34;</h1>"), "{body}");
    assert!(body.contains(r#"name="project" value="&#60;em&#62;x&#60;/em&#62;&#38;&#34;co&#34;">"#), "{body}");
    assert!(
        body.contains(r#"aria-label="CPU (core-hours) per day in project &lt;em&gt;x&lt;/em&gt;&amp;&quot;co&quot;""#),
        "{body}"
    );
    assert!(body.contains("CPU (core-hours): 2.500 core-hours</figcaption>"), "{body}");
    assert!(body.contains("5 November · CPU 0.500 · memory 0.000"), "{body}");

    for path in ["/usage?project=nope&month=2026-11", "/usage?project=Lab&month=2026-11"] {
        assert_eq!(get(fake.clone(), path).await.0, 404, "{path}");
    }
    assert!(
        fake.calls().iter().all(|(_, path, _)| path == "/api/usage?from=2026-11-01&to=2026-11-30"),
        "only the member's own usage is asked for: {:?}",
        fake.calls()
    );
}

#[actix_web::test]
async fn the_cluster_page_lists_the_persons_projects() {
    let fake = Arc::new(
        Fake::as_(member())
            .answer("GET", "/api/cluster", 200, json!({"status": "complete", "hopsworks_username": "bob000",
                "cluster": {"id": "c", "name": "north-1", "region": "eu-north", "endpoint": "https://north-1.example/hopsworks"}}))
            .answer("GET", "/api/cluster/projects", 200, json!({"synced_at": "2026-12-03T10:00:00Z", "projects": [
                {"project_id": 1, "name": "bob_lab", "relation": "creator", "project_role": null, "pending": false},
                {"project_id": 2, "name": "<b>fraud</b>", "relation": "member", "project_role": "Data scientist", "pending": true}]})),
    );
    let (status, body, _) = get(fake, "/cluster").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<strong>bob_lab</strong>: yours"), "{body}");
    assert!(
        body.contains("<strong>&#60;b&#62;fraud&#60;/b&#62;</strong>: your team's, as Data scientist (being added)"),
        "escaped: {body}"
    );
    assert!(body.contains("3 December 2026, 10:00 UTC"));
}

const BOUNDARY: &str = "----hopsbridge-test-boundary";

/// A `multipart/form-data` body: text fields, then files as (field, file name, content).
fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &str)]) -> Vec<u8> {
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
    }
    for (name, file, content) in files {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n{content}\r\n"
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body.into_bytes()
}

async fn post_multipart(fake: Arc<Fake>, path: &str, body: Vec<u8>) -> (u16, String, Option<String>) {
    let app = test::init_service(App::new().configure(|c| hopsbridge_console::configure(c, fake.clone()))).await;
    let request = test::TestRequest::post()
        .uri(path)
        .insert_header(("content-type", format!("multipart/form-data; boundary={BOUNDARY}")))
        .set_payload(body)
        .to_request();
    let r = test::call_service(&app, request).await;
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
    (status, String::from_utf8(test::read_body(r).await.to_vec()).unwrap(), location)
}

fn cluster_fields(csrf: &str) -> Vec<(&str, &str)> {
    vec![
        ("csrf", csrf),
        ("name", "north-2"),
        ("region", "eu-north"),
        ("api_url", "https://north-2.example"),
        ("api_key", "hw-secret-key"),
        ("oauth_client_id", "hopsworks-client"),
        ("capacity", "40"),
        ("status", "active"),
    ]
}

const KUBECONFIG: &str = "apiVersion: v1\r\nkind: Config\r\nclusters: []\r\n";

#[actix_web::test]
async fn an_admin_registers_a_cluster_with_an_uploaded_kubeconfig() {
    let admin = Some(Viewer { admin: true, ..owner().unwrap() });
    let listed = json!([{"id": "c-1", "name": "north-1", "region": "eu-north", "api_url": "https://north-1.example",
        "oauth_client_id": "hw", "status": "active", "capacity": 50, "used": 10}]);
    let fake = Arc::new(Fake::as_(admin.clone()).answer("GET", "/api/admin/clusters", 200, listed.clone()).answer(
        "POST",
        "/api/admin/clusters",
        201,
        json!({"id": "c-2"}),
    ));
    let (status, body, _) = get(fake.clone(), "/admin/clusters").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("10 of 50 seats (20 %)") && body.contains(r#"enctype="multipart/form-data""#), "{body}");
    assert!(body.contains(r#"type="file""#) && body.contains(r#"<label for="c-kubeconfig">"#));
    assert!(body.contains(r#"href="/admin/cluster?name=north-1""#));

    // Without the session's token nothing is registered.
    let files = [("kubeconfig", "north-2.yaml", KUBECONFIG), ("ca_bundle", "ca.pem", "-----BEGIN CERTIFICATE-----\n")];
    let (status, _, _) =
        post_multipart(fake.clone(), "/admin/clusters", multipart(&cluster_fields("forged"), &files)).await;
    assert_eq!(status, 403);
    assert!(!fake.calls().iter().any(|(m, _, _)| m == "POST"));

    let (status, _, location) =
        post_multipart(fake.clone(), "/admin/clusters", multipart(&cluster_fields(CSRF), &files)).await;
    assert_eq!((status, location.as_deref()), (303, Some("/admin/clusters?done=registered")));
    let (_, _, sent) = fake.calls().into_iter().find(|(m, _, _)| m == "POST").unwrap();
    assert_eq!(
        sent,
        Some(
            json!({"name": "north-2", "region": "eu-north", "api_url": "https://north-2.example", "api_key": "hw-secret-key",
            "oauth_client_id": "hopsworks-client", "capacity": 40, "status": "active",
            "kubeconfig": "apiVersion: v1\nkind: Config\nclusters: []\n", "ca_bundle": "-----BEGIN CERTIFICATE-----\n"})
        )
    );

    // No file chosen: said next to the field, nothing sent, what was typed kept (not the key).
    let fake = Arc::new(Fake::as_(admin.clone()).answer("GET", "/api/admin/clusters", 200, listed.clone()));
    let (status, body, _) = post_multipart(
        fake.clone(),
        "/admin/clusters",
        multipart(&cluster_fields(CSRF), &[("kubeconfig", "", ""), ("ca_bundle", "ca.pem", "pem")]),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(r#"id="c-kubeconfig-error">Choose the cluster&#39;s kubeconfig file."#), "{body}");
    assert!(body.contains(r#"value="north-2""#) && !body.contains("hw-secret-key"), "{body}");
    assert!(!fake.calls().iter().any(|(m, _, _)| m == "POST"));
}

#[actix_web::test]
async fn a_refused_registration_shows_the_apis_errors_by_their_fields_and_the_checks() {
    let admin = Some(Viewer { admin: true, ..owner().unwrap() });
    let files = [("kubeconfig", "k.yaml", KUBECONFIG), ("ca_bundle", "ca.pem", "pem")];
    let fake = Arc::new(Fake::as_(admin.clone()).answer("GET", "/api/admin/clusters", 200, json!([])).answer(
        "POST",
        "/api/admin/clusters",
        422,
        json!({"code": "cluster_check_failed", "message": "the cluster failed a check",
                "request_id": "r", "details": {"checks": [
                    {"name": "kubernetes_api", "ok": true, "detail": "v1.30 answered"},
                    {"name": "metrics_api", "ok": false, "detail": "install <metrics-server>"}]}}),
    ));
    let (status, body, _) = post_multipart(fake, "/admin/clusters", multipart(&cluster_fields(CSRF), &files)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("the cluster failed a check"), "{body}");
    assert!(
        body.contains("Passed: <strong>The Kubernetes API server answers the kubeconfig</strong>: v1.30 answered"),
        "{body}"
    );
    assert!(
        body.contains("Failed: <strong>metrics-server&#39;s API is served</strong>: install &#60;metrics-server&#62;"),
        "{body}"
    );

    let fake = Arc::new(Fake::as_(admin).answer("GET", "/api/admin/clusters", 200, json!([])).answer(
        "POST",
        "/api/admin/clusters",
        400,
        json!({"code": "invalid_kubeconfig", "message": "the kubeconfig is not YAML", "request_id": "r"}),
    ));
    let (status, body, _) = post_multipart(fake, "/admin/clusters", multipart(&cluster_fields(CSRF), &files)).await;
    assert_eq!(status, 422);
    assert!(
        body.contains(r#"<p class="field-error" id="c-kubeconfig-error">the kubeconfig is not YAML</p>"#),
        "{body}"
    );
    assert!(body.contains(r#"aria-describedby="c-kubeconfig-error""#));
}

#[actix_web::test]
async fn an_admin_edits_a_cluster_found_by_its_name_keeping_what_is_left_empty() {
    let admin = Some(Viewer { admin: true, ..owner().unwrap() });
    let fake = Arc::new(
        Fake::as_(admin)
            .answer("GET", "/api/admin/clusters", 200, json!([{"id": "c-1", "name": "north 1", "region": "eu-north",
                "api_url": "https://north-1.example", "oauth_client_id": "hw", "status": "active", "capacity": 50, "used": 10}]))
            .answer("PATCH", "/api/admin/clusters/c-1", 200, json!({})),
    );
    let (status, body, _) = get(fake.clone(), "/admin/cluster?name=north+1").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"name="capacity" type="number" min="10""#)
            && body.contains(r#"value="https://north-1.example""#),
        "{body}"
    );
    assert_eq!(get(fake.clone(), "/admin/cluster?name=south").await.0, 404);

    let fields = [
        ("csrf", CSRF),
        ("current_name", "north 1"),
        ("name", "north 1"),
        ("region", "eu-north"),
        ("api_url", "https://north-1.example"),
        ("api_key", ""),
        ("oauth_client_id", "hw"),
        ("capacity", "80"),
        ("status", "maintenance"),
    ];
    let (status, _, location) = post_multipart(
        fake.clone(),
        "/admin/cluster",
        multipart(&fields, &[("kubeconfig", "", ""), ("ca_bundle", "", "")]),
    )
    .await;
    assert_eq!((status, location.as_deref()), (303, Some("/admin/cluster?name=north+1&done=updated")));
    let (_, _, sent) = fake.calls().into_iter().find(|(m, _, _)| m == "PATCH").unwrap();
    assert_eq!(
        sent,
        Some(
            json!({"name": "north 1", "region": "eu-north", "api_url": "https://north-1.example", "oauth_client_id": "hw",
            "capacity": 80, "status": "maintenance"})
        ),
        "no secret or file sent when left empty"
    );
}

// ---------------------------------------------------------------------------------------------
// The price book and assignments, for admins.

fn admin() -> Option<Viewer> {
    Some(Viewer { admin: true, ..owner().unwrap() })
}

/// The changes a fake was asked for (every call but a GET).
fn changes(fake: &Fake) -> Vec<(String, String, Option<Value>)> {
    fake.calls().into_iter().filter(|(m, _, _)| m != "GET").collect()
}

fn price_book() -> Value {
    let version = |resource: &str, amount: &str, from: &str, by: Option<&str>| {
        json!({"id": format!("p-{resource}-{amount}"), "resource": resource, "currency": "usd", "unit_amount_decimal": amount,
            "effective_from": from, "created_at": "2026-12-01T08:00:00Z", "created_by": by})
    };
    json!({"prices": [
        version("cpu", "35", "1970-01-01T00:00:00Z", None),
        version("cpu", "40", "2030-01-01T00:00:00Z", Some("u-opal")),
        version("memory", "3.5", "1970-01-01T00:00:00Z", None),
        version("memory", "4.25", "2030-02-01T09:30:00Z", Some("u-opal")),
        version("gpu", "900", "2031-06-01T12:30:15Z", Some("u-gone")),
        version("storage_offline", "0.5", "2030-03-01T00:00:00Z", None),
        version("<img src=x>", "1", "1970-01-01T00:00:00Z", None),
    ]})
}

/// Billing's prices in force: cpu's and memory's first versions (gpu has none yet).
fn prices_in_force() -> Value {
    json!({"current": [
        {"resource": "cpu", "unit": "core-hour", "unit_amount_decimal": "35", "currency": "usd", "effective_from": "1970-01-01T00:00:00Z"},
        {"resource": "memory", "unit": "GiB-hour", "unit_amount_decimal": "3.5", "currency": "usd", "effective_from": "1970-01-01T00:00:00Z"},
        {"resource": "<img src=x>", "unit": "x", "unit_amount_decimal": "1", "currency": "usd", "effective_from": "1970-01-01T00:00:00Z"}
    ], "scheduled": []})
}

fn people() -> Value {
    json!({"items": [
        {"id": "u-opal", "email": "opal@example.com", "name": "Opal", "status": "active", "is_admin": true},
        {"id": "u-bob", "email": "bob@example.com", "name": "Bob", "status": "active", "is_admin": false},
        {"id": "u-eve", "email": "eve@example.com", "name": "Eve", "status": "active", "is_admin": false}
    ], "total": 3, "limit": 200, "offset": 0})
}

#[actix_web::test]
async fn an_admin_reads_the_price_book_by_resource_and_schedules_a_new_version() {
    let fake = Arc::new(
        Fake::as_(admin())
            .answer("GET", "/api/admin/prices", 200, price_book())
            .answer("GET", "/api/pricing", 200, prices_in_force())
            .answer("GET", "/api/admin/users?limit=200&offset=0", 200, people())
            .answer("POST", "/api/admin/prices", 201, json!({"id": "p-new", "resource": "memory", "currency": "usd",
                "unit_amount_decimal": "4.25", "effective_from": "2030-02-01T09:30:00Z", "created_at": "2026-12-07T10:00:00Z",
                "created_by": "u-opal"})),
    );
    let (status, body, _) = get(fake.clone(), "/admin/prices").await;
    assert_eq!(status, 200, "{body}");
    // In force now, per resource, with its next change: as billing's list of prices in force says.
    assert!(
        body.contains("<tr><th scope=\"row\">CPU <span class=\"muted\">(cpu)</span></th>\n<td>35 minor units of usd per core-hour (0.35 USD)</td>\n<td><time datetime=\"1970-01-01T00:00:00Z\">1 January 1970 00:00 UTC</time></td>\n<td>40 minor units (0.40 USD) from <time datetime=\"2030-01-01T00:00:00Z\">1 January 2030 00:00 UTC</time></td></tr>"),
        "{body}"
    );
    assert!(
        body.contains("<th scope=\"row\">GPU <span class=\"muted\">(gpu)</span></th>\n<td>none yet</td>\n<td></td>\n<td>900 minor units (9.00 USD) from <time datetime=\"2031-06-01T12:30:15Z\">1 June 2031 12:30:15 UTC</time></td>"),
        "{body}"
    );
    // Every version, latest start first, with who set it (an unknown admin's id is not shown).
    assert!(body.contains("<caption>CPU: 2 versions, latest start first</caption>"), "{body}");
    assert!(
        body.contains("<tr><th scope=\"row\"><time datetime=\"2030-01-01T00:00:00Z\">1 January 2030 00:00 UTC</time></th><td>Scheduled</td><td class=\"num\">40</td><td>usd</td><td class=\"num\">0.40 USD</td><td>1 December 2026 08:00 UTC</td><td class=\"wrap\">opal@example.com</td></tr>"),
        "{body}"
    );
    assert!(
        body.contains("<td>In force</td><td class=\"num\">35</td><td>usd</td><td class=\"num\">0.35 USD</td><td>1 December 2026 08:00 UTC</td><td class=\"wrap\">configuration</td>"),
        "{body}"
    );
    assert!(
        body.contains("<td>Scheduled</td><td class=\"num\">4.25</td><td>usd</td><td class=\"num\">0.0425 USD</td>"),
        "{body}"
    );
    assert!(body.contains("<td class=\"wrap\">an admin</td>") && !body.contains("u-gone") && !body.contains("u-opal"));
    assert!(
        body.contains("<td>Scheduled</td><td class=\"num\">0.5</td><td>usd</td><td class=\"num\">0.005 USD</td><td>1 December 2026 08:00 UTC</td><td class=\"wrap\">a machine client</td>"),
        "no person recorded, and not the configuration's first version: {body}"
    );
    // The API's text is escaped, in the tables and the form.
    assert!(!body.contains("<img") && body.contains("&#60;img src=x&#62;"), "{body}");
    assert!(body.contains(r#"<option value="&#60;img src=x&#62;">"#), "{body}");
    assert!(!body.contains("price-clock"), "billing's word on what is in force was read");
    // The form: the API's resources, the amount, the start in UTC, each labelled.
    assert!(body.contains(&format!(r#"<input type="hidden" name="csrf" value="{CSRF}">"#)));
    for (id, text) in [
        ("p-resource", "Resource"),
        ("p-amount", "Unit amount, in minor units of usd per billed unit"),
        ("p-from", "Starts at (UTC)"),
    ] {
        assert!(body.contains(&format!(r#"<label for="{id}">{text}</label>"#)), "{id}: {body}");
    }
    assert!(body.contains(r#"<option value="cpu">CPU (per core-hour)</option>"#), "{body}");
    assert!(body.contains(r#"name="effective_from" type="datetime-local" required"#), "{body}");
    assert!(body.contains("3.5 means 0.035 USD"), "{body}");

    // Scheduling: exactly the one call, the start typed in UTC sent as an instant.
    let before = fake.calls().len();
    let (status, location) = post(
        fake.clone(),
        "/admin/prices",
        &[
            ("csrf", CSRF),
            ("resource", "memory"),
            ("unit_amount_decimal", " 4.25 "),
            ("effective_from", "2030-02-01T09:30"),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("/admin/prices?done=scheduled&resource=memory&from=2030-02-01T09%3A30%3A00Z"))
    );
    assert_eq!(
        fake.calls()[before..],
        [(
            "POST".to_owned(),
            "/api/admin/prices".to_owned(),
            Some(
                json!({"resource": "memory", "unit_amount_decimal": "4.25", "effective_from": "2030-02-01T09:30:00Z"})
            )
        )]
    );
    // Back on the page, it says what was scheduled, from the book.
    let (_, body, _) =
        get(fake.clone(), "/admin/prices?done=scheduled&resource=memory&from=2030-02-01T09%3A30%3A00Z").await;
    assert!(
        body.contains(r#"<p class="notice" role="status" id="price-scheduled">Scheduled: Memory (memory) at 4.25 minor units of usd per GiB-hour (0.0425 USD), from 1 February 2030 09:30 UTC.</p>"#),
        "{body}"
    );
    assert_eq!(body.matches("role=\"status\"").count(), 1, "one notice: {body}");
    // A start that is no version's says only that a price was scheduled; the URL's text is not shown.
    let (_, body, _) =
        get(fake.clone(), "/admin/prices?done=scheduled&resource=%3Cscript%3E&from=2030-02-01T09%3A30%3A00Z").await;
    assert!(body.contains("The new price was scheduled.") && !body.contains("price-scheduled"), "{body}");
    assert!(!body.contains("<script>"), "{body}");
}

#[actix_web::test]
async fn a_refused_forged_or_unreadable_price_form_changes_nothing() {
    let form = |csrf: &'static str, from: &'static str| {
        [("csrf", csrf), ("resource", "cpu"), ("unit_amount_decimal", "36"), ("effective_from", from)]
    };
    // Not an admin: the admin-only answer, for the page and the form, and no call.
    let fake = Arc::new(Fake::as_(owner()).answer("POST", "/api/admin/prices", 201, json!({})));
    let (status, body, _) = get(fake.clone(), "/admin/prices").await;
    assert_eq!(status, 403);
    assert!(body.contains("This page is for admins."), "{body}");
    assert_eq!(post(fake.clone(), "/admin/prices", &form(CSRF, "2030-01-01T00:00")).await.0, 403);
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());

    let fake = Arc::new(
        Fake::as_(admin())
            .answer(
                "POST",
                "/api/admin/prices",
                400,
                json!({"code": "price_too_soon", "message": "effective_from must be at least 3600 s ahead"}),
            )
            .answer("GET", "/api/admin/prices", 200, price_book())
            .answer("GET", "/api/pricing", 502, json!({"code": "upstream_unavailable"}))
            .answer("GET", "/api/admin/users?limit=200&offset=0", 200, people()),
    );
    // A forged token: 403, nothing asked.
    for csrf in ["", "forged"] {
        assert_eq!(post(fake.clone(), "/admin/prices", &form(csrf, "2030-01-01T00:00")).await.0, 403, "{csrf:?}");
    }
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // A start that is no date: the form's error, no call.
    let (status, location) = post(fake.clone(), "/admin/prices", &form(CSRF, "next tuesday")).await;
    assert_eq!((status, location.as_deref()), (303, Some("/admin/prices?failed=invalid_effective_from")));
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // Billing refuses: back with its code, explained.
    let (status, location) = post(fake.clone(), "/admin/prices", &form(CSRF, "2026-12-07T10:00")).await;
    assert_eq!((status, location.as_deref()), (303, Some("/admin/prices?failed=price_too_soon")));
    assert_eq!(changes(&fake).len(), 1);
    let (status, body, _) = get(fake.clone(), "/admin/prices?failed=price_too_soon").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"<p class="error" role="alert">A new price must start further ahead, so that Stripe&#39;s catalogue is ready for it"#),
        "{body}"
    );
    // Billing's list of prices in force could not be read: the page says it judged by its clock.
    assert!(body.contains(r#"id="price-clock""#), "{body}");
    let (_, body, _) = get(fake.clone(), "/admin/prices?failed=invalid_effective_from").await;
    assert!(body.contains("Please enter when the price starts: a date and a time, in UTC."), "{body}");
    assert_eq!(changes(&fake).len(), 1, "only the one refused call: {:?}", changes(&fake));
}

fn clusters() -> Value {
    json!([
        {"id": "c-north", "name": "north-1", "region": "eu-north", "api_url": "https://north.example", "status": "active", "capacity": 10, "used": 3},
        {"id": "c-south", "name": "south <2>", "region": "eu-south", "api_url": "https://south.example", "status": "maintenance", "capacity": 5, "used": 5}
    ])
}

fn assignment(user: &str, cluster: Option<&str>, status: &str) -> Value {
    json!({"user_id": user, "cluster_id": cluster, "status": status, "hopsworks_username": null, "hopsworks_user_id": null,
        "max_num_projects": 10, "previous_cluster_id": null, "attempts": 0, "last_error": null, "next_attempt_at": null,
        "waiting_since": "2026-12-01T10:00:00Z", "completed_at": null, "updated_at": "2026-12-01T10:05:00Z"})
}

#[actix_web::test]
async fn an_admin_sees_assignments_with_emails_and_cluster_names_and_moves_a_person_to_a_cluster_by_its_name() {
    let mut bob = assignment("u-bob", Some("c-north"), "complete");
    bob["hopsworks_username"] = json!("bob001");
    let mut eve = assignment("u-eve", Some("c-south"), "provisioning");
    eve["previous_cluster_id"] = json!("c-north");
    eve["attempts"] = json!(3);
    eve["last_error"] = json!("<script>x</script> Hopsworks answered 500");
    eve["next_attempt_at"] = json!("2026-12-07T10:00:00Z");
    let fake = Arc::new(
        Fake::as_(admin())
            .answer("GET", "/api/admin/clusters", 200, clusters())
            .answer("GET", "/api/admin/assignments?limit=50&offset=0", 200, json!({"items": [
                bob.clone(), eve, assignment("u-gone", None, "waiting_for_capacity"), assignment("u-opal", None, "waiting_for_owner")],
                "total": 4, "limit": 50, "offset": 0}))
            .answer("GET", "/api/admin/users?limit=200&offset=0", 200, people())
            .answer("GET", "/api/admin/users?q=bob%40example.com&limit=200", 200, people())
            .answer("GET", "/api/admin/users?q=Bob%40Example.com&limit=200", 200, people())
            .answer("GET", "/api/admin/assignments/u-bob", 200, bob.clone())
            .answer("PUT", "/api/admin/assignments/u-bob", 200, bob),
    );
    let (status, body, _) = get(fake.clone(), "/admin/assignments").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<caption>4 assignments, 1 to 4 shown, oldest first</caption>"), "{body}");
    assert!(
        body.contains("<th scope=\"row\" class=\"wrap\">bob@example.com</th>\n<td>north-1</td>\n<td>Complete</td>\n<td>bob001</td>\n<td class=\"wrap\">none</td>\n<td>1 December 2026 10:00 UTC</td>\n<td>1 December 2026 10:05 UTC</td>"),
        "{body}"
    );
    assert!(
        body.contains("<th scope=\"row\" class=\"wrap\">eve@example.com</th>\n<td>south &#60;2&#62; <span class=\"muted\">(moving from north-1)</span></td>\n<td>Provisioning: the account is being made</td>\n<td>not made yet</td>\n<td class=\"wrap\">&#60;script&#62;x&#60;/script&#62; Hopsworks answered 500 <span class=\"muted\">(attempt 3; next at 7 December 2026 10:00 UTC)</span></td>"),
        "{body}"
    );
    assert!(body.contains("Unknown person <span class=\"muted\">(identity does not know u-gone)</span></th>\n<td>none</td>\n<td>Waiting for a free seat</td>"), "{body}");
    assert!(
        !body.contains("<script>") && !body.contains("c-north") && !body.contains("u-bob"),
        "no id but the unknown one's: {body}"
    );
    // Forms per row: bob and opal may move (eve's move is still deactivating her old account;
    // the unknown person has no email to name), bob, eve and opal may be unassigned.
    assert_eq!(body.matches(r#"action="/admin/assignments/move""#).count(), 2, "{body}");
    assert_eq!(body.matches(r#"action="/admin/assignments/unassign""#).count(), 3, "{body}");
    assert_eq!(body.matches("No move until the previous Hopsworks account is deactivated.").count(), 1, "{body}");
    assert!(
        body.contains(r#"<label for="unassign-4">Yes, take opal@example.com off the waiting list</label>"#),
        "opal holds no seat: {body}"
    );
    assert!(
        body.contains(
            r#"<input type="hidden" name="email" value="bob@example.com">
<label for="move-1">Move <span class="sr">bob@example.com </span>to</label>
<select id="move-1" name="cluster" required>"#
        ),
        "{body}"
    );
    assert!(
        body.contains(
            r#"<option value="south &#60;2&#62;">south &#60;2&#62; (maintenance, 5 of 5 seats taken)</option>"#
        ),
        "{body}"
    );
    assert!(
        body.contains(
            r#"<input type="checkbox" id="unassign-2" name="confirm" value="yes" required>
<label for="unassign-2">Yes, release the seat of eve@example.com and deactivate their Hopsworks account</label>"#
        ),
        "{body}"
    );
    assert_eq!(body.matches(&format!(r#"<input type="hidden" name="csrf" value="{CSRF}">"#)).count(), 5);
    assert!(
        body.contains(r#"<label for="a-email">Person's email</label>"#)
            && body.contains(r#"<label for="a-status">Status</label>"#)
    );
    assert!(!body.contains("rel=\"next\"") && !body.contains("rel=\"prev\""), "one page: {body}");

    // Moving bob to a cluster named in the form: its id looked up, then exactly the one change.
    let before = fake.calls().len();
    let (status, location) = post(
        fake.clone(),
        "/admin/assignments/move",
        &[("csrf", CSRF), ("email", "Bob@Example.com"), ("cluster", "south <2>")],
    )
    .await;
    assert_eq!((status, location.as_deref()), (303, Some("/admin/assignments?email=bob%40example.com&done=moved")));
    assert_eq!(
        fake.calls()[before..],
        [
            ("GET".to_owned(), "/api/admin/users?q=Bob%40Example.com&limit=200".to_owned(), None),
            ("GET".to_owned(), "/api/admin/clusters".to_owned(), None),
            ("PUT".to_owned(), "/api/admin/assignments/u-bob".to_owned(), Some(json!({"cluster_id": "c-south"}))),
        ],
        "{:?}",
        fake.calls()
    );
    let (status, body, _) = get(fake.clone(), "/admin/assignments?email=bob%40example.com&done=moved").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("The person was placed on the cluster you chose"), "{body}");
    assert!(body.contains("<caption>The assignment of bob@example.com</caption>"), "{body}");
    assert!(body.contains(r#"<input id="a-email" name="email" type="email" value="bob@example.com""#), "{body}");
    assert!(body.contains(r#"<a href="/admin/assignments">Every assignment</a>"#), "{body}");
}

#[actix_web::test]
async fn assignment_forms_name_people_and_clusters_that_exist_need_the_token_and_a_ticked_box() {
    // Not an admin: the admin-only answer, for the page and both forms, and no call.
    let fake = Arc::new(Fake::as_(owner()));
    let (status, body, _) = get(fake.clone(), "/admin/assignments").await;
    assert_eq!(status, 403);
    assert!(body.contains("This page is for admins."), "{body}");
    for path in ["/admin/assignments/move", "/admin/assignments/unassign"] {
        let form = [("csrf", CSRF), ("email", "bob@example.com"), ("cluster", "north-1"), ("confirm", "yes")];
        assert_eq!(post(fake.clone(), path, &form).await.0, 403, "{path}");
    }
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());

    let fake = Arc::new(
        Fake::as_(admin())
            .answer("GET", "/api/admin/clusters", 200, clusters())
            .answer("GET", "/api/admin/users?q=bob%40example.com&limit=200", 200, people())
            .answer("GET", "/api/admin/users?q=nobody%40example.com&limit=200", 200, json!({"items": [], "total": 0}))
            // A search finds addresses containing the one typed: only the exact one is taken.
            .answer("GET", "/api/admin/users?q=bob%40example.co&limit=200", 200, people())
            .answer(
                "PUT",
                "/api/admin/assignments/u-bob",
                409,
                json!({"code": "cluster_full", "message": "<b>full</b>"}),
            )
            .answer("DELETE", "/api/admin/assignments/u-bob", 200, assignment("u-bob", Some("c-north"), "unassigning")),
    );
    // A forged token: 403, nothing asked.
    for csrf in ["", "forged"] {
        let form = [("csrf", csrf), ("email", "bob@example.com"), ("cluster", "north-1"), ("confirm", "yes")];
        assert_eq!(post(fake.clone(), "/admin/assignments/move", &form).await.0, 403, "{csrf:?}");
        assert_eq!(post(fake.clone(), "/admin/assignments/unassign", &form).await.0, 403, "{csrf:?}");
    }
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // Nobody has the email, or no cluster has the name: the form's error, and no change.
    for email in ["nobody@example.com", "bob@example.co", ""] {
        let (status, location) =
            post(fake.clone(), "/admin/assignments/move", &[("csrf", CSRF), ("email", email), ("cluster", "north-1")])
                .await;
        assert_eq!((status, location.as_deref()), (303, Some("/admin/assignments?failed=unknown_person")), "{email}");
        let (_, location) =
            post(fake.clone(), "/admin/assignments/unassign", &[("csrf", CSRF), ("email", email), ("confirm", "yes")])
                .await;
        assert_eq!(location.as_deref(), Some("/admin/assignments?failed=unknown_person"), "{email}");
    }
    for cluster in ["north", "", "c-north"] {
        let (_, location) = post(
            fake.clone(),
            "/admin/assignments/move",
            &[("csrf", CSRF), ("email", "bob@example.com"), ("cluster", cluster)],
        )
        .await;
        assert_eq!(
            location.as_deref(),
            Some("/admin/assignments?email=bob%40example.com&failed=unknown_cluster"),
            "{cluster:?}"
        );
    }
    // Unassigning needs its box ticked: else nothing is asked at all.
    let before = fake.calls().len();
    let (_, location) =
        post(fake.clone(), "/admin/assignments/unassign", &[("csrf", CSRF), ("email", "bob@example.com")]).await;
    assert_eq!(location.as_deref(), Some("/admin/assignments?email=bob%40example.com&failed=unassign_not_confirmed"));
    assert_eq!(fake.calls().len(), before);
    assert!(changes(&fake).is_empty(), "no change yet: {:?}", changes(&fake));
    // Provisioning refuses the move: back with its code, nothing else changed.
    let (_, location) = post(
        fake.clone(),
        "/admin/assignments/move",
        &[("csrf", CSRF), ("email", "bob@example.com"), ("cluster", "north-1")],
    )
    .await;
    assert_eq!(location.as_deref(), Some("/admin/assignments?email=bob%40example.com&failed=cluster_full"));
    assert_eq!(
        changes(&fake),
        [("PUT".to_owned(), "/api/admin/assignments/u-bob".to_owned(), Some(json!({"cluster_id": "c-north"})))]
    );
    // A ticked box: exactly the one unassignment.
    let before = fake.calls().len();
    let (_, location) = post(
        fake.clone(),
        "/admin/assignments/unassign",
        &[("csrf", CSRF), ("email", "bob@example.com"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(location.as_deref(), Some("/admin/assignments?email=bob%40example.com&done=unassigned"));
    assert_eq!(
        fake.calls()[before..],
        [
            ("GET".to_owned(), "/api/admin/users?q=bob%40example.com&limit=200".to_owned(), None),
            ("DELETE".to_owned(), "/api/admin/assignments/u-bob".to_owned(), None),
        ]
    );
    // The codes are explained on the page.
    let fake = Arc::new(
        Fake::as_(admin())
            .answer("GET", "/api/admin/clusters", 200, clusters())
            .answer("GET", "/api/admin/users?q=bob%40example.com&limit=200", 200, people())
            .answer("GET", "/api/admin/assignments/u-bob", 200, assignment("u-bob", Some("c-north"), "unassigning")),
    );
    for (code, text) in [
        ("cluster_full", "That cluster has no free seat."),
        ("unknown_cluster", "There is no cluster of that name."),
        ("unknown_person", "Nobody has that email address."),
        ("unassign_not_confirmed", "Tick the box to confirm the unassignment."),
        ("assignment_busy", "still being deactivated"),
    ] {
        let (status, body, _) =
            get(fake.clone(), &format!("/admin/assignments?email=bob%40example.com&failed={code}")).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(text), "{code}: {body}");
    }
    let (_, body, _) = get(fake.clone(), "/admin/assignments?email=bob%40example.com&done=unassigned").await;
    assert!(body.contains("The person was unassigned"), "{body}");
    assert!(body.contains("<td>Unassigning: the account is being deactivated</td>"), "{body}");
    assert!(!body.contains("action=\"/admin/assignments/"), "nothing to do while unassigning: {body}");
}

#[actix_web::test]
async fn an_admin_finds_one_persons_assignment_by_email_and_pages_through_a_status() {
    let mut fake = Fake::as_(admin())
        .answer("GET", "/api/admin/clusters", 200, clusters())
        .answer("GET", "/api/admin/users?q=nobody%40example.com&limit=200", 200, json!({"items": [], "total": 0}))
        .answer("GET", "/api/admin/users?q=eve%40example.com&limit=200", 200, people())
        .answer("GET", "/api/admin/users?q=%3Cb%3E&limit=200", 200, json!({"items": [], "total": 0}))
        .answer("GET", "/api/admin/assignments/u-eve", 404, json!({"code": "assignment_not_found"}))
        .answer(
            "GET",
            "/api/admin/assignments?limit=50&offset=50&status=complete",
            200,
            json!({
            "items": [assignment("u-zed", Some("c-north"), "complete")], "total": 51, "limit": 50, "offset": 50}),
        );
    // The person is past the pages of people read in one go (25 of 200): asked for by id.
    for page in 0..25 {
        let other = json!({"items": [{"id": format!("u-{page}"), "email": format!("p{page}@example.com"), "status": "active"}],
            "total": 100_000, "limit": 200, "offset": page * 200});
        fake = fake.answer("GET", &format!("/api/admin/users?limit=200&offset={}", page * 200), 200, other);
    }
    let fake = Arc::new(fake.answer("GET", "/api/admin/users/u-zed", 200, json!({
        "id": "u-zed", "email": "zed@example.com", "name": "Zed", "status": "active", "is_admin": false, "account_owner_id": "u-zed"})));

    let (status, body, _) = get(fake.clone(), "/admin/assignments?status=complete&page=2").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<caption>51 assignments complete, 51 to 51 shown, oldest first</caption>"), "{body}");
    assert!(body.contains("<th scope=\"row\" class=\"wrap\">zed@example.com</th>"), "{body}");
    assert!(
        body.contains(r#"<a href="/admin/assignments?status=complete" rel="prev">Earlier assignments</a>"#),
        "{body}"
    );
    assert!(!body.contains("rel=\"next\""), "the last page: {body}");
    assert!(body.contains(r#"<option value="complete" selected>Complete</option>"#), "{body}");
    let asked: Vec<String> = fake.calls().into_iter().map(|(_, p, _)| p).filter(|p| p.contains("/users")).collect();
    assert_eq!(asked.len(), 26, "25 pages, then the one missing by id: {asked:?}");
    assert_eq!(asked.last().map(String::as_str), Some("/api/admin/users/u-zed"));

    let (status, body, _) = get(fake.clone(), "/admin/assignments?email=nobody%40example.com").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"<p id="assignment-nobody">Nobody has the address nobody@example.com.</p>"#), "{body}");
    let (_, body, _) = get(fake.clone(), "/admin/assignments?email=%3Cb%3E").await;
    assert!(!body.contains("<b>") && body.contains("&#60;b&#62;"), "the typed address is escaped: {body}");
    let (status, body, _) = get(fake.clone(), "/admin/assignments?email=eve%40example.com").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"<p id="assignment-none">eve@example.com has no assignment"#), "{body}");
    for path in ["/admin/assignments?status=done", "/admin/assignments?page=0", "/admin/assignments?page=x"] {
        assert_eq!(get(fake.clone(), path).await.0, 404, "{path}");
    }
    assert!(changes(&fake).is_empty());
}
