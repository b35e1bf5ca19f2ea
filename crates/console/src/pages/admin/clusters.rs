//! Clusters for admins: the list with each one's occupancy, registration with the kubeconfig and
//! CA bundle uploaded as files (`multipart/form-data`), and a cluster's edit page, found by its
//! name so no id reaches a URL. A refused registration or change is drawn again with the API's
//! errors next to their fields (and the connection checks provisioning ran, when it names
//! them); what was typed is kept, except the API key and the files, which a browser never
//! fills in again.

use super::super::{Ctx, Data, ErrorPage, Layout, Refused, field, render, see_other};
use crate::{Answer, Method, api};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The most one uploaded file or typed field may hold (a kubeconfig with its certificates
/// inline is a few kilobytes).
const FIELD_LIMIT: usize = 256 * 1024;
/// The most a whole form may hold.
const FORM_LIMIT: usize = 1024 * 1024;

/// Why a multipart form could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unreadable {
    /// Not `multipart/form-data`, or broken.
    NotMultipart,
    /// A field or the whole form is over its limit.
    TooLarge,
    /// A field is not UTF-8 text.
    NotText,
}

impl Unreadable {
    fn message(self) -> &'static str {
        match self {
            Self::NotMultipart => "The form could not be read. Please submit it again.",
            Self::TooLarge => "A file is too large: a kubeconfig or CA bundle may hold at most 256 KiB.",
            Self::NotText => "A file is not text: choose the kubeconfig (YAML) and the CA bundle (PEM).",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotMultipart | Self::NotText => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a `multipart/form-data` body into its fields (a file's field holds the file's text),
/// within [`FIELD_LIMIT`] and [`FORM_LIMIT`].
async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<HashMap<String, String>, Unreadable> {
    let mut parts = actix_multipart::Multipart::new(req.headers(), payload);
    let mut fields = HashMap::new();
    let mut total = 0usize;
    while let Some(part) = parts.next().await {
        let mut part = part.map_err(|_| Unreadable::NotMultipart)?;
        let name = part.name().unwrap_or_default().to_owned();
        let mut bytes = Vec::new();
        while let Some(chunk) = part.next().await {
            let chunk = chunk.map_err(|_| Unreadable::NotMultipart)?;
            total += chunk.len();
            if bytes.len() + chunk.len() > FIELD_LIMIT || total > FORM_LIMIT {
                return Err(Unreadable::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(bytes).map_err(|_| Unreadable::NotText)?;
        fields.insert(name, text);
    }
    Ok(fields)
}

/// What the form shows again after a refusal (never the API key or a file).
#[derive(Debug, Default)]
struct Typed {
    name: String,
    region: String,
    api_url: String,
    oauth_client_id: String,
    capacity: String,
    status: String,
}

impl Typed {
    fn of(form: &HashMap<String, String>) -> Self {
        Self {
            name: field(form, "name").to_owned(),
            region: field(form, "region").to_owned(),
            api_url: field(form, "api_url").to_owned(),
            oauth_client_id: field(form, "oauth_client_id").to_owned(),
            capacity: field(form, "capacity").to_owned(),
            status: field(form, "status").to_owned(),
        }
    }

    fn of_cluster(c: &api::AdminCluster) -> Self {
        Self {
            name: c.name.clone(),
            region: c.region.clone(),
            api_url: c.api_url.clone(),
            oauth_client_id: c.oauth_client_id.clone(),
            capacity: c.capacity.to_string(),
            status: c.status.clone(),
        }
    }
}

/// One connection check provisioning ran on a registration.
#[derive(Debug)]
struct Check {
    name: String,
    passed: bool,
    detail: String,
}

/// The errors of a refused form: per field, in general, and the connection checks.
#[derive(Debug, Default)]
struct Problems {
    fields: HashMap<&'static str, String>,
    general: Option<String>,
    checks: Vec<Check>,
}

impl Problems {
    fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_none() && self.checks.is_empty()
    }

    /// The API's refusal, placed next to the field its code is about.
    fn of_answer(answer: &Answer) -> Self {
        let body: Value = answer.json().unwrap_or(Value::Null);
        let code = answer.code();
        let message = body.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
        let message = if message.is_empty() { format!("The request was refused ({code}).") } else { message };
        let mut problems = Self::default();
        let at = match code.as_str() {
            "invalid_name" | "cluster_name_taken" => Some("name"),
            "invalid_region" => Some("region"),
            "invalid_api_url" | "cluster_address_refused" => Some("api_url"),
            "invalid_api_key" => Some("api_key"),
            "invalid_oauth_client_id" => Some("oauth_client_id"),
            "invalid_capacity" | "capacity_below_used" => Some("capacity"),
            "invalid_status" => Some("status"),
            "invalid_kubeconfig" => Some("kubeconfig"),
            "invalid_ca_bundle" => Some("ca_bundle"),
            _ => None,
        };
        match at {
            Some(f) => {
                problems.fields.insert(f, message);
            }
            None => problems.general = Some(message),
        }
        // provisioning's connection checks: `checks` at the top or in `details`.
        let checks = body
            .get("checks")
            .or_else(|| body.get("details").and_then(|d| d.get("checks")))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        problems.checks = checks.iter().map(check_of).collect();
        problems
    }
}

/// A check as provisioning words it, read leniently: its name (`name`, `check` or `target`),
/// whether it passed (`ok`, `passed`, or a `status`/`outcome` of `ok`/`passed`), and what it
/// found (`message`, `error` or `detail`).
fn check_of(value: &Value) -> Check {
    let text = |keys: &[&str]| {
        keys.iter().find_map(|k| value.get(*k).and_then(Value::as_str)).map(str::to_owned).unwrap_or_default()
    };
    let passed = ["ok", "passed"].iter().find_map(|k| value.get(*k).and_then(Value::as_bool)).unwrap_or_else(|| {
        matches!(text(&["status", "outcome", "result"]).as_str(), "ok" | "passed" | "pass" | "succeeded")
    });
    let name = text(&["name", "check", "target"]);
    let name = match name.as_str() {
        "kubernetes_api" => "The Kubernetes API server answers the kubeconfig".to_owned(),
        "kubernetes_can_list_pods" => "The kubeconfig's user may list pods".to_owned(),
        "kubernetes_can_list_pod_metrics" => "The kubeconfig's user may read pod metrics".to_owned(),
        "kubernetes_can_watch_pods" => "The kubeconfig's user may watch pods".to_owned(),
        "metrics_api" => "metrics-server's API is served".to_owned(),
        "hopsworks_admin_api" => "Hopsworks' admin API answers the API key".to_owned(),
        "" => value.as_str().unwrap_or("A check").to_owned(),
        _ => name,
    };
    Check { name, passed, detail: text(&["message", "error", "detail", "reason"]) }
}

/// A form of cluster fields, for registration (`editing` none) or a change.
#[derive(Template)]
#[template(path = "admin_clusters.html")]
struct ClustersPage {
    l: Layout,
    csrf: String,
    clusters: Vec<api::AdminCluster>,
    typed: Typed,
    problems: Problems,
}

#[derive(Template)]
#[template(path = "admin_cluster.html")]
struct ClusterPage {
    l: Layout,
    csrf: String,
    current: String,
    used: i64,
    typed: Typed,
    problems: Problems,
}

/// What the templates ask of a form's problems.
trait Shown {
    fn problems(&self) -> &Problems;

    fn error(&self, field: &str) -> Option<&String> {
        self.problems().fields.get(field)
    }
}

impl Shown for ClustersPage {
    fn problems(&self) -> &Problems {
        &self.problems
    }
}

impl Shown for ClusterPage {
    fn problems(&self) -> &Problems {
        &self.problems
    }
}

impl ClustersPage {
    /// Seats taken as a share of capacity, whole percent.
    fn percent(&self, c: &api::AdminCluster) -> i64 {
        if c.capacity > 0 { c.used * 100 / c.capacity } else { 0 }
    }

    fn edit_href(&self, c: &api::AdminCluster) -> String {
        edit_href(&c.name)
    }
}

fn edit_href(name: &str) -> String {
    format!("/admin/cluster?{}", serde_urlencoded::to_string([("name", name)]).unwrap_or_default())
}

pub(in crate::pages) async fn admin_clusters(data: Data, req: HttpRequest) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let clusters: Vec<api::AdminCluster> = tri!(ctx.fetch("/api/admin/clusters").await);
    let page = ClustersPage {
        l: ctx.layout("Clusters", "/admin"),
        csrf: ctx.viewer.csrf.clone(),
        clusters,
        typed: Typed { status: "active".to_owned(), ..Typed::default() },
        problems: Problems::default(),
    };
    render(StatusCode::OK, &page)
}

/// The fields an uploaded text keeps: CRLF as LF (a browser may send either).
fn text(form: &HashMap<String, String>, name: &str) -> String {
    form.get(name).map_or_else(String::new, |v| v.replace("\r\n", "\n"))
}

fn capacity(form: &HashMap<String, String>, problems: &mut Problems) -> Option<i64> {
    let typed = field(form, "capacity");
    match typed.parse::<i64>() {
        Ok(n) if n >= 0 => Some(n),
        _ => {
            problems.fields.insert("capacity", "Please enter the number of seats, a whole number of 0 or more.".into());
            None
        }
    }
}

pub(in crate::pages) async fn admin_clusters_register(
    data: Data,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let form = read_form(&req, payload).await;
    let (status, form, mut problems) = match form {
        Ok(form) => (StatusCode::UNPROCESSABLE_ENTITY, form, Problems::default()),
        Err(why) => {
            (why.status(), HashMap::new(), Problems { general: Some(why.message().to_owned()), ..Problems::default() })
        }
    };
    if problems.is_empty() {
        tri!(ctx.form_ok(&form));
        let seats = capacity(&form, &mut problems);
        for (name, what) in
            [("kubeconfig", "Choose the cluster's kubeconfig file."), ("ca_bundle", "Choose the CA bundle file (PEM).")]
        {
            if text(&form, name).trim().is_empty() {
                problems.fields.insert(name, what.to_owned());
            }
        }
        if problems.is_empty() {
            let body = json!({
                "name": field(&form, "name"),
                "region": field(&form, "region"),
                "api_url": field(&form, "api_url"),
                "api_key": field(&form, "api_key"),
                "oauth_client_id": field(&form, "oauth_client_id"),
                "capacity": seats,
                "status": field(&form, "status"),
                "kubeconfig": text(&form, "kubeconfig"),
                "ca_bundle": text(&form, "ca_bundle"),
            });
            let answer = ctx.call(Method::Post, "/api/admin/clusters", Some(body)).await;
            if answer.is_success() {
                return see_other("/admin/clusters?done=registered");
            }
            problems = Problems::of_answer(&answer);
        }
    }
    // Drawn again with what was typed and why it was refused.
    let clusters: Vec<api::AdminCluster> = ctx.get("/api/admin/clusters").await.json().unwrap_or_default();
    let page = ClustersPage {
        l: ctx.layout("Clusters", "/admin"),
        csrf: ctx.viewer.csrf.clone(),
        clusters,
        typed: Typed::of(&form),
        problems,
    };
    render(status, &page)
}

/// The registered cluster called `name`, from the admins' list.
async fn cluster_named(ctx: &Ctx<'_>, name: &str) -> Result<api::AdminCluster, Refused> {
    let clusters: Vec<api::AdminCluster> = ctx.fetch("/api/admin/clusters").await?;
    clusters.into_iter().find(|c| c.name == name).ok_or_else(|| Box::new(ctx.error(404, "not_found")))
}

pub(in crate::pages) async fn admin_cluster(
    data: Data,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let cluster = tri!(cluster_named(&ctx, query.get("name").map_or("", String::as_str)).await);
    let page = ClusterPage {
        l: ctx.layout(&format!("Cluster {}", cluster.name), "/admin"),
        csrf: ctx.viewer.csrf.clone(),
        current: cluster.name.clone(),
        used: cluster.used,
        typed: Typed::of_cluster(&cluster),
        problems: Problems::default(),
    };
    render(StatusCode::OK, &page)
}

pub(in crate::pages) async fn admin_cluster_update(
    data: Data,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let form = match read_form(&req, payload).await {
        Ok(form) => form,
        Err(why) => {
            let page = ErrorPage {
                l: ctx.layout("Cluster", "/admin"),
                status: why.status().as_u16(),
                heading: "The form could not be read".to_owned(),
                text: why.message().to_owned(),
            };
            return render(why.status(), &page);
        }
    };
    tri!(ctx.form_ok(&form));
    let cluster = tri!(cluster_named(&ctx, field(&form, "current_name")).await);
    let mut problems = Problems::default();
    let seats = capacity(&form, &mut problems);
    if problems.is_empty() {
        let mut body = json!({
            "name": field(&form, "name"),
            "region": field(&form, "region"),
            "api_url": field(&form, "api_url"),
            "oauth_client_id": field(&form, "oauth_client_id"),
            "capacity": seats,
            "status": field(&form, "status"),
        });
        // A secret or file left empty stays as it is.
        for name in ["api_key", "kubeconfig", "ca_bundle"] {
            let given = text(&form, name);
            if !given.trim().is_empty() {
                body[name] = Value::String(if name == "api_key" { given.trim().to_owned() } else { given });
            }
        }
        let answer = ctx.call(Method::Patch, &format!("/api/admin/clusters/{}", cluster.id), Some(body)).await;
        if answer.is_success() {
            let name = field(&form, "name");
            return see_other(&format!(
                "{}&done=updated",
                edit_href(if name.is_empty() { &cluster.name } else { name })
            ));
        }
        problems = Problems::of_answer(&answer);
    }
    let page = ClusterPage {
        l: ctx.layout(&format!("Cluster {}", cluster.name), "/admin"),
        csrf: ctx.viewer.csrf.clone(),
        current: cluster.name.clone(),
        used: cluster.used,
        typed: Typed::of(&form),
        problems,
    };
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_read_whatever_their_words() {
        let answer = Answer {
            status: 422,
            body: json!({"code": "cluster_check_failed", "message": "the cluster could not be reached",
            "details": {"checks": [
                {"name": "hopsworks", "ok": true, "message": "answered"},
                {"check": "kubernetes", "status": "failed", "error": "connection refused"}
            ]}})
            .to_string()
            .into_bytes(),
        };
        let problems = Problems::of_answer(&answer);
        assert_eq!(problems.general.as_deref(), Some("the cluster could not be reached"));
        assert_eq!(problems.checks.len(), 2);
        assert!(problems.checks[0].passed && !problems.checks[1].passed);
        assert_eq!(
            (problems.checks[1].name.as_str(), problems.checks[1].detail.as_str()),
            ("kubernetes", "connection refused")
        );
    }

    #[test]
    fn a_field_code_lands_next_to_its_field() {
        let answer = Answer::error(400, "invalid_kubeconfig");
        let problems = Problems::of_answer(&answer);
        assert!(problems.fields.contains_key("kubeconfig"));
        assert!(problems.general.is_none());
    }
}
