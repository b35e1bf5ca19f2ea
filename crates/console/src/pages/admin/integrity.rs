//! The integrity findings of every data service (decision 0060): each service's findings, open,
//! resolved or all (`?status=`), a page at a time with plain links (`?service=…&page=…`), and
//! its checks' last runs with their status, from `GET /api/admin/integrity/<service>`; a form
//! per service asks for its checks to run now (`POST /api/admin/integrity/<service>/run`), and
//! any 2xx is taken as the run started: the page then says it is running. A service that does
//! not answer is shown as such; the others still are.

use super::super::{Ctx, Data, Form, Layout, field, render, see_other};
use crate::{Method, api};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use std::collections::HashMap;

/// The data services with integrity checks, in the order the page shows them: the
/// `<service>` of the API's paths.
pub(super) const SERVICES: [&str; 5] = ["identity", "team", "provisioning", "metering", "billing"];

/// The filters of findings, as the API names them, with what the page calls them.
const STATUSES: [(&str, &str); 3] = [("open", "Open"), ("resolved", "Resolved"), ("all", "All")];

/// Findings per page (the API allows up to 200).
const PAGE_SIZE: i64 = 50;

/// The highest page number a link may ask for (so the offset cannot overflow).
const MAX_PAGE: i64 = 1_000_000;

/// One link of the status filter.
#[derive(Debug)]
struct FilterLink {
    href: String,
    name: &'static str,
    current: bool,
}

/// One service's part of the page.
#[derive(Debug)]
struct Section {
    service: &'static str,
    /// Its findings and checks; `None` when the service did not answer.
    page: Option<api::IntegrityPage>,
    /// Why it could not be read.
    problem: Option<String>,
    /// An admin asked for its checks to run, and the API accepted.
    started: bool,
    /// The findings shown, numbered from 1 (first, last), when any are.
    shown: Option<(i64, i64)>,
    /// The newer page's link.
    newer: Option<String>,
    /// The older page's link.
    older: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_integrity.html")]
struct IntegrityPage {
    l: Layout,
    csrf: String,
    /// `open`, `resolved` or `all`.
    status: &'static str,
    filters: Vec<FilterLink>,
    /// The one service shown, when the page is narrowed to it.
    only: Option<&'static str>,
    /// The link back to every service, with the same filter.
    every: String,
    sections: Vec<Section>,
}

impl IntegrityPage {
    fn name(&self, service: &str) -> String {
        let mut name = service.to_owned();
        if let Some(first) = name.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        name
    }

    fn when(&self, instant: &Option<String>) -> String {
        instant.as_deref().map_or_else(
            || "never".to_owned(),
            |t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_or_else(|_| t.to_owned(), |d| d.format("%-d %B %Y %H:%M UTC").to_string())
            },
        )
    }

    fn instant(&self, instant: &str) -> String {
        self.when(&Some(instant.to_owned()))
    }

    /// When a finding was resolved, or that it is still open.
    fn resolved(&self, finding: &api::IntegrityFinding) -> String {
        finding.resolved_at.as_ref().map_or_else(|| "still open".to_owned(), |t| self.instant(t))
    }

    /// The findings the filter lists, in words: "3 open", "2 resolved", "5 in all".
    fn counted(&self, total: &i64) -> String {
        match self.status {
            "all" => format!("{total} in all"),
            status => format!("{total} {status}"),
        }
    }

    fn outcome(&self, check: &api::CheckStatus) -> String {
        match (check.running, check.last_ok) {
            (true, _) => "running now".to_owned(),
            (false, None) => "not run yet".to_owned(),
            (false, Some(true)) => "worked".to_owned(),
            (false, Some(false)) => {
                format!("failed: {}", check.last_error.as_deref().unwrap_or("no reason given"))
            }
        }
    }

    fn found(&self, check: &api::CheckStatus) -> String {
        check.last_found.map_or_else(String::new, |n| n.to_string())
    }
}

/// The page's own address with `status`, `service` and `page` (the first page and the open
/// filter are left out, being the defaults).
fn href(status: &str, service: Option<&str>, page: i64) -> String {
    let page = page.to_string();
    let query: Vec<(&str, &str)> = [
        (status != "open").then_some(("status", status)),
        service.map(|s| ("service", s)),
        (page != "1").then_some(("page", page.as_str())),
    ]
    .into_iter()
    .flatten()
    .collect();
    if query.is_empty() {
        "/admin/integrity".to_owned()
    } else {
        format!("/admin/integrity?{}", serde_urlencoded::to_string(query).unwrap_or_default())
    }
}

/// What the URL asks for, each value checked against its fixed list; `None` when a value is
/// not one of them (the page is then not found).
struct Asked {
    status: &'static str,
    service: Option<&'static str>,
    page: i64,
    started: Option<&'static str>,
}

fn asked(query: &HashMap<String, String>) -> Option<Asked> {
    let service_named = |key: &str| match query.get(key) {
        None => Some(None),
        Some(name) => SERVICES.iter().find(|s| **s == name).map(|s| Some(*s)),
    };
    let status = match query.get("status") {
        None => "open",
        Some(s) => STATUSES.iter().find(|(name, _)| name == s)?.0,
    };
    let page = match query.get("page") {
        None => 1,
        Some(p) if !p.is_empty() && p.len() <= 7 && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    if !(1..=MAX_PAGE).contains(&page) {
        return None;
    }
    Some(Asked { status, service: service_named("service")?, page, started: service_named("started")? })
}

pub(super) async fn admin_integrity(
    data: Data,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let Some(asked) = asked(&query) else {
        return ctx.error(404, "not_found");
    };
    let offset = (asked.page - 1) * PAGE_SIZE;
    let mut sections = Vec::new();
    for service in SERVICES.into_iter().filter(|s| asked.service.is_none_or(|only| only == *s)) {
        let path = format!("/api/admin/integrity/{service}?status={}&limit={PAGE_SIZE}&offset={offset}", asked.status);
        let answer = ctx.get(&path).await;
        let page = answer.is_success().then(|| answer.json::<api::IntegrityPage>().ok()).flatten();
        let problem = page.is_none().then(|| {
            let code = answer.code();
            format!(
                "Its findings could not be read ({}).",
                if code.is_empty() { format!("HTTP {}", answer.status) } else { code }
            )
        });
        let count = page.as_ref().map_or(0, |p| i64::try_from(p.items.len()).unwrap_or(i64::MAX));
        let total = page.as_ref().map_or(0, |p| p.total);
        sections.push(Section {
            service,
            started: asked.started == Some(service),
            shown: (count > 0).then(|| (offset + 1, offset + count)),
            // Past the last page, "newer" leads back to the last one.
            newer: (page.is_some() && asked.page > 1).then(|| {
                let last = (total.max(0) + PAGE_SIZE - 1) / PAGE_SIZE;
                href(asked.status, Some(service), (asked.page - 1).min(last).max(1))
            }),
            older: (asked.page < MAX_PAGE && offset + count < total)
                .then(|| href(asked.status, Some(service), asked.page + 1)),
            page,
            problem,
        });
    }
    let page = IntegrityPage {
        l: ctx.layout("Integrity findings", "/admin"),
        csrf: ctx.viewer.csrf.clone(),
        status: asked.status,
        filters: STATUSES
            .iter()
            .map(|(status, name)| FilterLink {
                href: href(status, asked.service, 1),
                name,
                current: *status == asked.status,
            })
            .collect(),
        only: asked.service,
        every: href(asked.status, None, 1),
        sections,
    };
    render(StatusCode::OK, &page)
}

/// Asks for one service's checks to run now; the service (and the filter to come back to) are
/// named in the form, from their fixed lists. Any 2xx means the run was accepted: the page then
/// shows it running.
pub(super) async fn admin_integrity_run(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    tri!(ctx.form_ok(&form));
    // Back to the filter the form was sent from, whatever the answer.
    let status = STATUSES.iter().find(|(s, _)| *s == field(&form, "status")).map_or("open", |(s, _)| *s);
    let back = href(status, None, 1);
    let Some(service) = SERVICES.iter().find(|s| **s == field(&form, "service")) else {
        return ctx.failed(&back, "unknown_service");
    };
    let answer = ctx.call(Method::Post, &format!("/api/admin/integrity/{service}/run"), None).await;
    if !answer.is_success() {
        return ctx.failed(&back, &answer.code());
    }
    let sep = if back.contains('?') { '&' } else { '?' };
    see_other(&format!("{back}{sep}started={service}&done=running#integrity-{service}"))
}
