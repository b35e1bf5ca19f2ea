//! The team page: an owner's members (with each one's storage this month) and pending
//! invitations, a member's membership, and the forms that invite, resend, cancel, remove and
//! leave.

use super::{Ctx, Data, Form, Layout, Refused, field, render};
use crate::{Method, api, format};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use rust_decimal::Decimal;
use serde_json::json;
use std::collections::HashMap;

#[derive(Template)]
#[template(path = "team.html")]
struct TeamPage {
    l: Layout,
    csrf: String,
    owner: bool,
    members: Vec<api::Member>,
    invitations: Vec<api::Invitation>,
    membership: Option<api::MyMembership>,
    /// Each person's storage this month, by user id, from billing's usage lines (the usage
    /// page's figures); `None` when billing did not answer.
    storage: Option<HashMap<String, Stored>>,
}

/// A person's storage in a month: offline and online GB-months, exact.
#[derive(Clone, Copy, Debug, Default)]
struct Stored {
    offline: Decimal,
    online: Decimal,
}

/// Billing's usage lines' storage added up per person.
fn stored_by_person(usage: &api::OwnerUsage) -> HashMap<String, Stored> {
    let mut by_person: HashMap<String, Stored> = HashMap::new();
    for line in &usage.lines {
        let quantity = format::parse(&line.quantity).unwrap_or_default();
        let stored = by_person.entry(line.user_id.clone()).or_default();
        match line.resource.as_str() {
            "storage_offline" => stored.offline += quantity,
            "storage_online" => stored.online += quantity,
            _ => {}
        }
    }
    by_person
}

impl TeamPage {
    fn q(&self, value: &str) -> String {
        format::quantity(value, 2)
    }

    /// A member's `offline` or `online` storage this month, GB-months to the usage page's
    /// places; a dash when billing could not tell.
    fn stored(&self, user_id: &str, kind: &str) -> String {
        self.storage.as_ref().map_or_else(
            || "–".to_owned(),
            |by_person| {
                let s = by_person.get(user_id).copied().unwrap_or_default();
                let gb_months = if kind == "online" { s.online } else { s.offline };
                format::quantity(&gb_months.to_string(), format::places("storage"))
            },
        )
    }

    fn usage_href(&self, email: &str) -> String {
        format!("/usage?{}", serde_urlencoded::to_string([("member", email)]).unwrap_or_default())
    }

    fn day(&self, instant: &str) -> String {
        chrono::DateTime::parse_from_rfc3339(instant)
            .map_or_else(|_| instant.to_owned(), |d| d.format("%-d %B %Y").to_string())
    }
}

pub(super) async fn team(data: Data, req: HttpRequest) -> HttpResponse {
    let ctx = ctx!(data, req);
    let mut page = TeamPage {
        l: ctx.layout("Team", "/team"),
        csrf: ctx.viewer.csrf.clone(),
        owner: ctx.viewer.owner,
        members: Vec::new(),
        invitations: Vec::new(),
        membership: None,
        storage: None,
    };
    if ctx.viewer.owner {
        let team: api::Team = tri!(ctx.fetch("/api/team").await);
        let invitations: Vec<api::Invitation> = tri!(ctx.fetch("/api/team/invitations").await);
        page.members = team.members;
        page.invitations = invitations.into_iter().filter(|i| i.status == "pending").collect();
        // This month's storage, as the usage page reads it: billing's lines (no range: the
        // current UTC month to date).
        if !page.members.is_empty() {
            let usage = ctx.get("/api/billing/usage").await;
            page.storage = usage
                .is_success()
                .then(|| usage.json::<api::OwnerUsage>().ok())
                .flatten()
                .map(|u| stored_by_person(&u));
        }
    } else {
        page.membership = Some(tri!(ctx.fetch("/api/team/membership").await));
    }
    render(StatusCode::OK, &page)
}

pub(super) async fn team_invite(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.form_ok(&form));
    let body = json!({ "email": field(&form, "email"), "project_role": field(&form, "project_role") });
    let answer = ctx.call(Method::Post, "/api/team/invitations", Some(body)).await;
    ctx.after(&answer, "/team", "invited")
}

/// The owner's pending invitation to `email`, found by its address so no id reaches a URL.
async fn pending_invitation(ctx: &Ctx<'_>, email: &str) -> Result<api::Invitation, Refused> {
    let invitations: Vec<api::Invitation> = ctx.fetch("/api/team/invitations").await?;
    invitations
        .into_iter()
        .find(|i| i.status == "pending" && i.email.eq_ignore_ascii_case(email))
        .ok_or_else(|| Box::new(ctx.failed("/team", "invitation_not_found")))
}

pub(super) async fn team_resend(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.form_ok(&form));
    let invitation = tri!(pending_invitation(&ctx, field(&form, "email")).await);
    let answer = ctx.call(Method::Post, &format!("/api/team/invitations/{}/resend", invitation.id), None).await;
    ctx.after(&answer, "/team", "resent")
}

pub(super) async fn team_cancel(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.form_ok(&form));
    let invitation = tri!(pending_invitation(&ctx, field(&form, "email")).await);
    let answer = ctx.call(Method::Delete, &format!("/api/team/invitations/{}", invitation.id), None).await;
    ctx.after(&answer, "/team", "cancelled")
}

pub(super) async fn team_remove(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.form_ok(&form));
    let team: api::Team = tri!(ctx.fetch("/api/team").await);
    let email = field(&form, "email");
    let Some(member) = team.members.iter().find(|m| m.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(email)))
    else {
        return ctx.failed("/team", "not_found");
    };
    let answer = ctx.call(Method::Delete, &format!("/api/team/members/{}", member.user_id), None).await;
    ctx.after(&answer, "/team", "removed")
}

pub(super) async fn team_leave(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.form_ok(&form));
    let answer = ctx.call(Method::Post, "/api/team/leave", None).await;
    ctx.after(&answer, "/team", "left")
}
