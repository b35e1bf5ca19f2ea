//! The integrity findings of every data service (decision 0060): each service's open findings
//! (check, subject, detail, first and last seen) and its checks' last runs, from
//! `GET /api/admin/integrity/<service>`, with a form per service that runs its checks now
//! (`POST /api/admin/integrity/<service>/run`). A service that does not answer is shown as such;
//! the others still are.

use super::super::{Ctx, Data, Form, Layout, field, render};
use crate::{Method, api};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

/// The data services with integrity checks, in the order the page shows them: the
/// `<service>` of the API's paths.
pub(super) const SERVICES: [&str; 5] = ["identity", "team", "provisioning", "metering", "billing"];

/// One service's part of the page.
#[derive(Debug)]
struct Section {
    service: &'static str,
    /// Its findings and checks; `None` when the service did not answer.
    page: Option<api::IntegrityPage>,
    /// Why it could not be read.
    problem: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_integrity.html")]
struct IntegrityPage {
    l: Layout,
    csrf: String,
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
}

pub(super) async fn admin_integrity(data: Data, req: HttpRequest) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let mut sections = Vec::new();
    for service in SERVICES {
        let answer = ctx.get(&format!("/api/admin/integrity/{service}?status=open&limit=200")).await;
        let page = answer.is_success().then(|| answer.json::<api::IntegrityPage>().ok()).flatten();
        let problem = page.is_none().then(|| {
            let code = answer.code();
            format!(
                "Its findings could not be read ({}).",
                if code.is_empty() { format!("HTTP {}", answer.status) } else { code }
            )
        });
        sections.push(Section { service, page, problem });
    }
    let page = IntegrityPage { l: ctx.layout("Integrity findings", "/admin"), csrf: ctx.viewer.csrf.clone(), sections };
    render(StatusCode::OK, &page)
}

/// Runs one service's checks now; the service is named in the form, from the fixed list.
pub(super) async fn admin_integrity_run(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    tri!(ctx.form_ok(&form));
    let Some(service) = SERVICES.iter().find(|s| **s == field(&form, "service")) else {
        return ctx.failed("/admin/integrity", "unknown_service");
    };
    let answer = ctx.call(Method::Post, &format!("/api/admin/integrity/{service}/run"), None).await;
    ctx.after(&answer, "/admin/integrity", "checked")
}
