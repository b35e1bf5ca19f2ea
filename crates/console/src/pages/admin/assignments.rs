//! People's assignments to clusters, for admins: provisioning's list (`GET
//! /api/admin/assignments`, oldest first, a page at a time with plain links and narrowed to a
//! status with `?status=`), or one person's found by their email (`?email=`), each shown with
//! the person's email (from identity) and the cluster's name. A form per row moves the person
//! to a cluster chosen by its name (`PUT /api/admin/assignments/{user_id}`), another unassigns
//! them once a box confirming what that does is ticked (`DELETE …`). The URLs and the forms
//! name people by email and clusters by name: the ids are looked up here, before the one call
//! that makes the change, and an email or name that names nobody makes no call.

use super::super::{Ctx, Data, Form, Layout, field, render, see_other};
use super::{emails_of, id_ok, person_by_email};
use crate::{Method, api};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};

/// Where an assignment may be, as provisioning names it, with what the page calls it.
const STATES: [(&str, &str); 7] = [
    ("waiting_for_user", "Waiting for the person to arrive"),
    ("waiting_for_capacity", "Waiting for a free seat"),
    ("waiting_for_owner", "Waiting for their owner's cluster"),
    ("provisioning", "Provisioning: the account is being made"),
    ("complete", "Complete"),
    ("unassigning", "Unassigning: the account is being deactivated"),
    ("unassigned", "Unassigned"),
];

/// Assignments per page (provisioning allows up to 500).
const PAGE_SIZE: i64 = 50;

/// The highest page number a link may ask for (so the offset cannot overflow).
const MAX_PAGE: i64 = 1_000_000;

/// One assignment, as the page shows it.
#[derive(Debug)]
struct Row {
    /// The person's email; `None` when identity did not say (no form names them then).
    email: Option<String>,
    /// Their id, shown only when their email is unknown.
    user_id: String,
    /// The cluster's name, when the assignment names one.
    cluster: Option<String>,
    /// For a move: the cluster whose account is still to be deactivated.
    previous: Option<String>,
    /// Provisioning's status.
    status: String,
    hopsworks_username: Option<String>,
    attempts: i64,
    last_error: Option<String>,
    next_attempt: Option<String>,
    since: String,
    updated: String,
}

impl Row {
    /// A move is refused while an account is still being deactivated.
    fn can_move(&self) -> bool {
        self.status != "unassigning" && self.previous.is_none()
    }

    /// A seat is taken (an account is being made or exists).
    fn holds_seat(&self) -> bool {
        self.status == "provisioning" || self.status == "complete"
    }

    /// There is a seat to release or a wait to end.
    fn can_unassign(&self) -> bool {
        self.status != "unassigning" && self.status != "unassigned"
    }
}

/// What `?email=` found.
#[derive(Debug)]
enum Found {
    /// Nobody has the address.
    Nobody,
    /// The person has no assignment.
    Unassigned(String),
    /// The person's assignment is the one row.
    One(String),
}

#[derive(Template)]
#[template(path = "admin_assignments.html")]
struct AssignmentsPage {
    l: Layout,
    csrf: String,
    /// The address asked for, as typed.
    email: String,
    found: Option<Found>,
    /// The status asked for (`""` for every one).
    status: &'static str,
    states: [(&'static str, &'static str); 7],
    clusters: Vec<api::AdminCluster>,
    rows: Vec<Row>,
    /// Assignments matching, over every page.
    total: i64,
    /// The ones shown, numbered from 1 (first, last), when any are.
    shown: Option<(i64, i64)>,
    earlier: Option<String>,
    later: Option<String>,
}

impl AssignmentsPage {
    fn state(&self, status: &str) -> String {
        STATES.iter().find(|(s, _)| *s == status).map_or_else(|| status.to_owned(), |(_, words)| (*words).to_owned())
    }

    /// The count in words, with the status asked for.
    fn counted(&self) -> String {
        let noun = if self.total == 1 { "assignment" } else { "assignments" };
        if self.status.is_empty() {
            format!("{} {noun}", self.total)
        } else {
            format!("{} {noun} {}", self.total, self.state(self.status).to_lowercase())
        }
    }
}

fn when(instant: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(instant)
        .map_or_else(|_| instant.to_owned(), |d| d.format("%-d %B %Y %H:%M UTC").to_string())
}

/// The page's own address with `status` and `page` (every status and the first page are left
/// out, being the defaults).
fn href(status: &str, page: i64) -> String {
    let page = page.to_string();
    let query: Vec<(&str, &str)> =
        [(!status.is_empty()).then_some(("status", status)), (page != "1").then_some(("page", page.as_str()))]
            .into_iter()
            .flatten()
            .collect();
    if query.is_empty() {
        "/admin/assignments".to_owned()
    } else {
        format!("/admin/assignments?{}", serde_urlencoded::to_string(query).unwrap_or_default())
    }
}

/// The page showing one person's assignment, by their email.
fn person_href(email: &str) -> String {
    format!("/admin/assignments?{}", serde_urlencoded::to_string([("email", email)]).unwrap_or_default())
}

fn row_of(a: api::Assignment, email: Option<String>, names: &HashMap<String, String>) -> Row {
    let name = |id: &Option<String>| {
        id.as_ref().map(|id| names.get(id).cloned().unwrap_or_else(|| "an unknown cluster".to_owned()))
    };
    Row {
        email,
        cluster: name(&a.cluster_id),
        previous: name(&a.previous_cluster_id),
        since: a.waiting_since.as_deref().map_or_else(String::new, when),
        updated: a.updated_at.as_deref().map_or_else(String::new, when),
        next_attempt: a.next_attempt_at.as_deref().map(when),
        user_id: a.user_id,
        status: a.status,
        hopsworks_username: a.hopsworks_username,
        attempts: a.attempts,
        last_error: a.last_error.filter(|e| !e.is_empty()),
    }
}

pub(in crate::pages) async fn admin_assignments(
    data: Data,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let status = match query.get("status").map(String::as_str) {
        None | Some("") => "",
        Some(s) => match STATES.iter().find(|(name, _)| *name == s) {
            Some((name, _)) => name,
            None => return ctx.error(404, "not_found"),
        },
    };
    let page = match query.get("page") {
        None => 1,
        Some(p) if !p.is_empty() && p.len() <= 7 && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().unwrap_or(0),
        Some(_) => 0,
    };
    if !(1..=MAX_PAGE).contains(&page) {
        return ctx.error(404, "not_found");
    }
    let email = query.get("email").map_or("", |e| e.trim()).to_owned();
    let clusters: Vec<api::AdminCluster> = tri!(ctx.fetch("/api/admin/clusters").await);
    let names: HashMap<String, String> = clusters.iter().map(|c| (c.id.clone(), c.name.clone())).collect();
    let mut page_view = AssignmentsPage {
        l: ctx.layout("Assignments", "/admin"),
        csrf: ctx.viewer.csrf.clone(),
        email: email.clone(),
        found: None,
        status,
        states: STATES,
        clusters: Vec::new(),
        rows: Vec::new(),
        total: 0,
        shown: None,
        earlier: None,
        later: None,
    };
    if email.is_empty() {
        let offset = (page - 1) * PAGE_SIZE;
        let mut path = format!("/api/admin/assignments?limit={PAGE_SIZE}&offset={offset}");
        if !status.is_empty() {
            path.push_str(&format!("&status={status}"));
        }
        let list: api::AssignmentPage = tri!(ctx.fetch(&path).await);
        let ids: BTreeSet<String> = list.items.iter().map(|a| a.user_id.clone()).collect();
        let emails = emails_of(&ctx, &ids).await;
        let count = i64::try_from(list.items.len()).unwrap_or(i64::MAX);
        page_view.total = list.total;
        page_view.shown = (count > 0).then(|| (offset + 1, offset + count));
        // Past the last page, "earlier" leads back to the last one.
        page_view.earlier = (page > 1).then(|| {
            let last = (list.total.max(0) + PAGE_SIZE - 1) / PAGE_SIZE;
            href(status, (page - 1).min(last).max(1))
        });
        page_view.later = (page < MAX_PAGE && offset + count < list.total).then(|| href(status, page + 1));
        page_view.rows = list
            .items
            .into_iter()
            .map(|a| {
                let email = emails.get(&a.user_id).cloned();
                row_of(a, email, &names)
            })
            .collect();
    } else {
        match tri!(person_by_email(&ctx, &email).await) {
            None => page_view.found = Some(Found::Nobody),
            Some(person) if !id_ok(&person.id) => page_view.found = Some(Found::Nobody),
            Some(person) => {
                let answer = ctx.get(&format!("/api/admin/assignments/{}", person.id)).await;
                if answer.status == 404 {
                    page_view.found = Some(Found::Unassigned(person.email));
                } else {
                    let a: api::Assignment = tri!(ctx.read(&answer));
                    page_view.total = 1;
                    page_view.rows = vec![row_of(a, Some(person.email.clone()), &names)];
                    page_view.found = Some(Found::One(person.email));
                }
            }
        }
    }
    page_view.clusters = clusters;
    render(StatusCode::OK, &page_view)
}

/// Moves the person the form names by email to the cluster it names: provisioning seats them
/// there and makes their account in the background.
pub(in crate::pages) async fn admin_assignments_move(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    tri!(ctx.form_ok(&form));
    let Some(person) = tri!(person_by_email(&ctx, field(&form, "email")).await).filter(|p| id_ok(&p.id)) else {
        return ctx.failed("/admin/assignments", "unknown_person");
    };
    let back = person_href(&person.email);
    let clusters: Vec<api::AdminCluster> = tri!(ctx.fetch("/api/admin/clusters").await);
    let name = field(&form, "cluster");
    let Some(cluster) = clusters.iter().find(|c| !name.is_empty() && c.name == name && id_ok(&c.id)) else {
        return ctx.failed(&back, "unknown_cluster");
    };
    let body = json!({ "cluster_id": cluster.id });
    let answer = ctx.call(Method::Put, &format!("/api/admin/assignments/{}", person.id), Some(body)).await;
    if answer.is_success() { see_other(&format!("{back}&done=moved")) } else { ctx.failed(&back, &answer.code()) }
}

/// Unassigns the person the form names by email, once its box is ticked: their seat is
/// released (or their wait ended) and any account of theirs deactivated in the background.
pub(in crate::pages) async fn admin_assignments_unassign(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    tri!(ctx.form_ok(&form));
    let email = field(&form, "email");
    if field(&form, "confirm") != "yes" {
        let back = if email.is_empty() { "/admin/assignments".to_owned() } else { person_href(email) };
        return ctx.failed(&back, "unassign_not_confirmed");
    }
    let Some(person) = tri!(person_by_email(&ctx, email).await).filter(|p| id_ok(&p.id)) else {
        return ctx.failed("/admin/assignments", "unknown_person");
    };
    let back = person_href(&person.email);
    let answer = ctx.call(Method::Delete, &format!("/api/admin/assignments/{}", person.id), None).await;
    if answer.is_success() { see_other(&format!("{back}&done=unassigned")) } else { ctx.failed(&back, &answer.code()) }
}
