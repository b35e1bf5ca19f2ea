//! The admins' pages: people, clusters (registered with an uploaded kubeconfig, edited, their
//! occupancy), the price book (and scheduling a new price), people's assignments to clusters
//! (moving and unassigning them), the operational tables (metering runs and gaps, billing's
//! reconciliation findings) and every data service's integrity findings.

use super::{Ctx, Data, Form, Layout, Refused, field, render, see_other};
use crate::{Method, api};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use std::collections::{BTreeSet, HashMap};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin", web::get().to(admin))
        .route("/admin/people", web::get().to(admin_people))
        .route("/admin/people/{action}", web::post().to(admin_people_action))
        .route("/admin/clusters", web::get().to(admin_clusters))
        .route("/admin/clusters", web::post().to(admin_clusters_register))
        .route("/admin/cluster", web::get().to(admin_cluster))
        .route("/admin/cluster", web::post().to(admin_cluster_update))
        .route("/admin/metering", web::get().to(admin_metering))
        .route("/admin/prices", web::get().to(admin_prices))
        .route("/admin/prices", web::post().to(admin_prices_schedule))
        .route("/admin/assignments", web::get().to(admin_assignments))
        .route("/admin/assignments/move", web::post().to(admin_assignments_move))
        .route("/admin/assignments/unassign", web::post().to(admin_assignments_unassign))
        .route("/admin/findings", web::get().to(admin_findings))
        .route("/admin/integrity", web::get().to(admin_integrity))
        .route("/admin/integrity/run", web::post().to(admin_integrity_run));
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    l: Layout,
}

async fn admin(data: Data, req: HttpRequest) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    render(StatusCode::OK, &AdminPage { l: ctx.layout("Admin", "/admin") })
}

#[derive(Template)]
#[template(path = "admin_people.html")]
struct PeoplePage {
    l: Layout,
    csrf: String,
    q: String,
    people: api::UserPage,
}

async fn admin_people(data: Data, req: HttpRequest, query: web::Query<HashMap<String, String>>) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let q = query.get("q").map_or("", |q| q.trim()).to_owned();
    let path = format!(
        "/api/admin/users?{}",
        serde_urlencoded::to_string([("q", q.as_str()), ("limit", "50")]).unwrap_or_default()
    );
    let people: api::UserPage = tri!(ctx.fetch(&path).await);
    render(StatusCode::OK, &PeoplePage { l: ctx.layout("People", "/admin"), csrf: ctx.viewer.csrf.clone(), q, people })
}

async fn admin_people_action(data: Data, req: HttpRequest, action: web::Path<String>, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    tri!(ctx.form_ok(&form));
    let email = field(&form, "email");
    let (method, suffix, done) = match action.as_str() {
        "suspend" => (Method::Post, "suspend", "suspended"),
        "reactivate" => (Method::Post, "reactivate", "reactivated"),
        "grant-admin" => (Method::Put, "admin", "granted"),
        "revoke-admin" => (Method::Delete, "admin", "revoked"),
        _ => return ctx.error(404, "not_found"),
    };
    let Some(person) = tri!(person_by_email(&ctx, email).await) else {
        return ctx.failed("/admin/people", "not_found");
    };
    let answer = ctx.call(method, &format!("/api/admin/users/{}/{suffix}", person.id), None).await;
    let back = format!("/admin/people?{}", serde_urlencoded::to_string([("q", email)]).unwrap_or_default());
    if answer.is_success() {
        see_other(&format!("{back}&done={done}"))
    } else {
        ctx.failed("/admin/people", &answer.code())
    }
}

/// The person whose email is `email` (any case), from identity's search; `None` when nobody
/// has it.
async fn person_by_email(ctx: &Ctx<'_>, email: &str) -> Result<Option<api::AdminUser>, Refused> {
    if email.is_empty() {
        return Ok(None);
    }
    let path = format!(
        "/api/admin/users?{}",
        serde_urlencoded::to_string([("q", email), ("limit", "200")]).unwrap_or_default()
    );
    let found: api::UserPage = ctx.fetch(&path).await?;
    Ok(found.items.into_iter().find(|u| u.email.eq_ignore_ascii_case(email)))
}

/// People read per page of identity's list when looking for emails.
const PEOPLE_PAGE: i64 = 200;

/// Pages of people read at most when looking for emails; past them, the ones still missing
/// are asked for one by one.
const PEOPLE_PAGES: i64 = 25;

/// An id of the API's that may go into a path as it is.
fn id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The emails of the people `ids` names, by id: identity's list of people is read a page at
/// a time until every one is found (or the list ends), and any still missing after
/// [`PEOPLE_PAGES`] pages are asked for one by one. Whoever identity does not answer for is
/// left out (the page then shows them without an email, and offers no form naming them).
async fn emails_of(ctx: &Ctx<'_>, ids: &BTreeSet<String>) -> HashMap<String, String> {
    let mut found = HashMap::new();
    let mut offset = 0;
    let mut pages = 0;
    while found.len() < ids.len() {
        if pages == PEOPLE_PAGES {
            let missing: Vec<&String> = ids.iter().filter(|id| !found.contains_key(*id) && id_ok(id)).collect();
            for id in missing {
                let answer = ctx.get(&format!("/api/admin/users/{id}")).await;
                if let Some(person) = answer.is_success().then(|| answer.json::<api::AdminUser>().ok()).flatten() {
                    found.insert(id.clone(), person.email);
                }
            }
            break;
        }
        let answer = ctx.get(&format!("/api/admin/users?limit={PEOPLE_PAGE}&offset={offset}")).await;
        let Some(page) = answer.is_success().then(|| answer.json::<api::UserPage>().ok()).flatten() else {
            break;
        };
        let read = i64::try_from(page.items.len()).unwrap_or(i64::MAX);
        found.extend(page.items.into_iter().filter(|u| ids.contains(&u.id)).map(|u| (u.id, u.email)));
        offset += PEOPLE_PAGE;
        pages += 1;
        if read == 0 || offset >= page.total {
            break;
        }
    }
    found
}

/// A table of whatever rows the API answered, for the admin's operational views: each row's
/// scalar fields in the order of the first row.
#[derive(Debug, Default)]
struct Table {
    heading: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn table(heading: &str, value: &serde_json::Value) -> Table {
    let items: Vec<&serde_json::Value> = match value {
        serde_json::Value::Array(items) => items.iter().collect(),
        serde_json::Value::Object(o) => {
            o.values().find_map(|v| v.as_array()).map(|a| a.iter().collect()).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let columns: Vec<String> = items
        .first()
        .and_then(|f| f.as_object())
        .map(|o| o.iter().filter(|(_, v)| !v.is_object() && !v.is_array()).map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let rows = items
        .iter()
        .take(200)
        .map(|item| {
            columns
                .iter()
                .map(|c| match item.get(c) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                })
                .collect()
        })
        .collect();
    Table { heading: heading.to_owned(), columns, rows }
}

#[derive(Template)]
#[template(path = "admin_tables.html")]
struct TablesPage {
    l: Layout,
    tables: Vec<Table>,
}

async fn admin_metering(data: Data, req: HttpRequest) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let runs: serde_json::Value = tri!(ctx.fetch("/api/admin/metering/runs?limit=100").await);
    let gaps: serde_json::Value = tri!(ctx.fetch("/api/admin/metering/gaps?limit=100").await);
    let page = TablesPage {
        l: ctx.layout("Metering", "/admin"),
        tables: vec![table("Recent runs", &runs), table("Gaps", &gaps)],
    };
    render(StatusCode::OK, &page)
}

async fn admin_findings(data: Data, req: HttpRequest) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let findings: serde_json::Value = tri!(ctx.fetch("/api/admin/billing/findings").await);
    let tables = vec![table("Reconciliation findings, newest first", &findings)];
    render(StatusCode::OK, &TablesPage { l: ctx.layout("Reconciliation findings", "/admin"), tables })
}

// ---------------------------------------------------------------------------------------------
// Clusters.

mod clusters;
use clusters::{admin_cluster, admin_cluster_update, admin_clusters, admin_clusters_register};

// ---------------------------------------------------------------------------------------------
// The price book.

mod prices;
use prices::{admin_prices, admin_prices_schedule};

// ---------------------------------------------------------------------------------------------
// Assignments of people to clusters.

mod assignments;
use assignments::{admin_assignments, admin_assignments_move, admin_assignments_unassign};

// ---------------------------------------------------------------------------------------------
// Integrity findings of every data service.

mod integrity;
use integrity::{admin_integrity, admin_integrity_run};
