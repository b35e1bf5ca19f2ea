//! The authorisation matrix: every operation of the public API's OpenAPI document
//! (`services/gateway/openapi.json`, read when the test runs) × {anonymous, another user, the
//! owner, a team member, an admin}, through the gateway, with every service as its own process.
//!
//! - The document is the list. An operation it has and [`matrix`] has no expectation for, or an
//!   expectation for an operation it no longer has, fails the test, naming them; so does an
//!   expected status the document does not give the operation, and an anonymous expectation
//!   that disagrees with the operation's security. `every_documented_operation_has_one_expectation`
//!   checks this in a second, without starting anything.
//! - Paths and bodies name real objects: the owner's cluster and another owner's, the owner's
//!   and other people's user ids, the owner's pending invitation, another user's invitation, a
//!   sent and an unsent mail, a day on which both the owner and another user have usage. So
//!   another user is refused on the owner's real objects, not on ids that do not exist.
//! - The data is made as people make it: cards through Checkout, clusters by placement, usage
//!   measured by metering from the sandbox's pods, the team through the team API (invitations
//!   accepted; identity, billing and provisioning learn of members from the team service's own
//!   events). The matrix's admin is granted through the API by the harness's first admin, the
//!   one person made in SQL (no API can make the first).
//! - Every request that must change nothing (each refusal, and each read) runs first, with the
//!   sandbox's clock standing still and every service idle: the snapshot taken after it (every
//!   row of every table of every service's schema, and what the sandbox's Stripe, Hopsworks and
//!   mail catcher hold) must equal the one before, or the request is named with the rows it
//!   added and removed. No 2xx answer to one person names another's user id or cluster. The
//!   requests that must succeed at a change run afterwards, in the matrix's order, and each must
//!   change something.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
#![allow(clippy::print_stdout, reason = "the test says how much it checked")]

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::Service;
use hopsbridge_journey::{Options, Person, Platform, binaries, wait_for};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The public API's document, as the gateway serves it at `/api/openapi.json`.
const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../services/gateway/openapi.json");
/// How long an effect may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(120);
const ROLE: &str = "Data scientist";
/// The data services, whose schemas are snapshotted.
const SCHEMAS: [&str; 5] = ["identity", "team", "billing", "provisioning", "metering"];
/// What the Hopsworks sandbox names owner@example.com's and another@example.com's accounts:
/// each has a lab of running pods, so metering measures usage for both.
const LABS: [&str; 2] = ["own10000", "ano10000"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    AnotherUser,
    Owner,
    Member,
    Admin,
}

/// The order of the answers in a [`Case`].
const CALLERS: [Who; 5] = [Who::Anonymous, Who::AnotherUser, Who::Owner, Who::Member, Who::Admin];

/// One request of an operation, and what each kind of caller is answered.
#[derive(Debug)]
struct Case {
    /// The path with its parameters filled (and a query where the operation takes one).
    path: String,
    body: Option<Value>,
    /// For anonymous, another user, the owner, a member, an admin (the order of [`CALLERS`]).
    answers: [u16; 5],
}

/// The expectation for one documented operation: at least one case.
#[derive(Debug)]
struct Expectation {
    method: &'static str,
    template: &'static str,
    cases: Vec<Case>,
}

fn case(path: impl Into<String>, body: Option<Value>, answers: [u16; 5]) -> Case {
    Case { path: path.into(), body, answers }
}

/// An operation with one case.
fn one(
    method: &'static str,
    template: &'static str,
    path: impl Into<String>,
    body: Option<Value>,
    answers: [u16; 5],
) -> Expectation {
    Expectation { method, template, cases: vec![case(path, body, answers)] }
}

/// An operation whose path has no parameters, called without a body.
fn plain(method: &'static str, template: &'static str, answers: [u16; 5]) -> Expectation {
    one(method, template, template, None, answers)
}

/// The objects the matrix's paths and bodies name.
#[derive(Debug)]
struct Seed {
    /// The owner: a card, a cluster, a lab, two members, a pending invitation.
    owner: Uuid,
    /// Another user, who owns their own account, card, cluster and lab.
    another: Uuid,
    /// The owner's member.
    member: Uuid,
    /// The owner's second member, whom the owner removes.
    mate: Uuid,
    /// A person no caller is, the object of admins' account changes.
    target: Uuid,
    /// The owner's cluster.
    cluster: Uuid,
    /// Another user's cluster.
    other_cluster: Uuid,
    /// The owner's pending invitation.
    pending: String,
    /// The token of another user's invitation to the member's address.
    foreign: String,
    /// The terms version invitations are accepted with.
    terms_version: String,
    /// A team mail sent.
    sent_mail: String,
    /// A team mail not sent (SMTP was down), due again in an hour.
    stuck_mail: String,
    /// A UTC day with usage of the owner and of another user.
    day: NaiveDate,
    /// The calendar time the matrix runs at (the sandbox's clock stands still).
    now: DateTime<Utc>,
    /// A registration of a new cluster.
    new_cluster: Value,
}

impl Seed {
    /// Ids of the right shape, for checking the matrix against the document without data.
    fn placeholder() -> Self {
        let id = Uuid::nil();
        Self {
            owner: id,
            another: id,
            member: id,
            mate: id,
            target: id,
            cluster: id,
            other_cluster: id,
            pending: id.to_string(),
            foreign: "A".repeat(43),
            terms_version: "1".to_owned(),
            sent_mail: id.to_string(),
            stuck_mail: id.to_string(),
            day: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            now: DateTime::UNIX_EPOCH,
            new_cluster: json!({}),
        }
    }
}

/// The version of billing's terms (plans.terms_version) an owner accepts with a plan.
const BILLING_TERMS: &str = "2026-12-01";

/// One expectation per documented operation. The requests that succeed at a change run in
/// this order, after every other: what one needs comes before it (a suspension before the
/// reactivation, a move before the unassignment), and what ends a caller's part comes last
/// (the member leaving, people deleting their accounts).
fn matrix(s: &Seed) -> Vec<Expectation> {
    let Seed { owner, member, mate, target, cluster, other_cluster, .. } = s;
    let (day, foreign, unknown) = (s.day, &s.foreign, "A".repeat(43));
    let signed_in = [401, 200, 200, 200, 200];
    let admins = [401, 403, 403, 403, 200];
    let admins_accepted = [401, 403, 403, 403, 202];
    let admins_created = [401, 403, 403, 403, 201];
    // Billing is the account owner's: every person who is not a member owns an account, admins
    // too; a member is refused.
    let owners = [401, 200, 200, 403, 200];
    let terms = json!({"accept_terms": true, "terms_version": s.terms_version});
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap().and_utc().to_rfc3339();
    vec![
        // The gateway's own routes. Browser login is on; these callers carry bearer tokens,
        // never a session, and a callback without the login's cookie is a bad login state.
        plain("GET", "/api/auth/caller", signed_in),
        plain("GET", "/api/auth/login", [302; 5]),
        plain("GET", "/api/auth/callback", [400; 5]),
        plain("GET", "/api/auth/session", [401; 5]),
        plain("GET", "/api/auth/logout", [302; 5]),
        // identity
        plain("GET", "/api/me", signed_in),
        one("PATCH", "/api/me", "/api/me", Some(json!({"name": "Renamed"})), signed_in),
        plain("GET", "/api/admin/users", admins),
        one("GET", "/api/admin/users/{id}", format!("/api/admin/users/{owner}"), None, admins),
        one(
            "POST",
            "/api/admin/users/{id}/suspend",
            format!("/api/admin/users/{target}/suspend"),
            Some(json!({"reason": "matrix"})),
            admins,
        ),
        one("POST", "/api/admin/users/{id}/reactivate", format!("/api/admin/users/{target}/reactivate"), None, admins),
        one("PUT", "/api/admin/users/{id}/admin", format!("/api/admin/users/{target}/admin"), None, admins),
        one("DELETE", "/api/admin/users/{id}/admin", format!("/api/admin/users/{target}/admin"), None, admins),
        // billing: the owner's routes, Stripe's webhook (signed, never with a token), prices
        plain("GET", "/api/billing", owners),
        plain("POST", "/api/billing/payment-method", owners),
        plain("POST", "/api/billing/portal", owners),
        one(
            "POST",
            "/webhooks/stripe",
            "/webhooks/stripe",
            Some(json!({"id": "evt_matrix", "type": "invoice.paid"})),
            [400; 5],
        ),
        plain("GET", "/api/pricing", [200; 5]),
        plain("GET", "/api/admin/prices", admins),
        one(
            "POST",
            "/api/admin/prices",
            "/api/admin/prices",
            Some(json!({"resource": "cpu", "unit_amount_decimal": "40",
                "effective_from": (s.now + TimeDelta::days(2)).to_rfc3339()})),
            admins_created,
        ),
        one(
            "PUT",
            "/api/admin/billing/{owner}/mode",
            format!("/api/admin/billing/{owner}/mode"),
            Some(json!({"mode": "prepaid"})),
            admins,
        ),
        one(
            "POST",
            "/api/admin/billing/{owner}/credits",
            format!("/api/admin/billing/{owner}/credits"),
            Some(json!({"amount_minor": 1000})),
            admins_created,
        ),
        one(
            "POST",
            "/api/admin/billing/backfill",
            "/api/admin/billing/backfill",
            Some(json!({"from": midnight(day), "to": midnight(day + TimeDelta::days(1))})),
            admins_accepted,
        ),
        plain("GET", "/api/admin/billing/backfills", admins),
        plain("POST", "/api/admin/billing/reconcile", admins_accepted),
        plain("POST", "/api/admin/billing/reconcile/stripe", admins_accepted),
        plain("GET", "/api/admin/billing/findings", admins),
        one(
            "GET",
            "/api/admin/billing/reports",
            format!("/api/admin/billing/reports?owner={owner}&day={day}"),
            None,
            admins,
        ),
        one("POST", "/api/credits/purchase", "/api/credits/purchase", Some(json!({"amount_minor": 1000})), owners),
        plain("GET", "/api/credits", owners),
        one("PUT", "/api/billing/cap", "/api/billing/cap", Some(json!({"monthly_cap_minor": 50_000})), owners),
        plain("GET", "/api/billing/plan", owners),
        one(
            "PUT",
            "/api/billing/plan",
            "/api/billing/plan",
            Some(json!({"plan": "free", "accept_terms": true, "terms_version": BILLING_TERMS})),
            owners,
        ),
        one(
            "PUT",
            "/api/admin/billing/{owner}/plan",
            format!("/api/admin/billing/{owner}/plan"),
            Some(json!({"plan": "prepaid"})),
            admins,
        ),
        one("GET", "/api/billing/usage", format!("/api/billing/usage?from={day}&to={day}"), None, owners),
        // an owner's day narrowed to a member of theirs: anyone else's member is no person of theirs
        Expectation {
            method: "GET",
            template: "/api/billing/usage/samples",
            cases: vec![
                case(format!("/api/billing/usage/samples?day={day}"), None, owners),
                case(format!("/api/billing/usage/samples?day={day}&user_id={member}"), None, [401, 404, 200, 403, 404]),
            ],
        },
        // metering: a person sees their own usage (an owner their team's too); the rest is for
        // admins, on the owner's usage and cluster
        one("GET", "/api/usage", format!("/api/usage?from={day}&to={day}"), None, signed_in),
        one(
            "GET",
            "/api/admin/usage",
            format!("/api/admin/usage?owner_user_id={owner}&from={day}&to={day}"),
            None,
            admins,
        ),
        one(
            "GET",
            "/api/admin/usage/samples",
            format!("/api/admin/usage/samples?user_id={owner}&day={day}"),
            None,
            admins,
        ),
        one(
            "GET",
            "/api/admin/usage/unbilled",
            format!("/api/admin/usage/unbilled?cluster_id={cluster}&from={day}&to={day}"),
            None,
            admins,
        ),
        one("GET", "/api/admin/metering/runs", format!("/api/admin/metering/runs?cluster_id={cluster}"), None, admins),
        one("GET", "/api/admin/metering/gaps", format!("/api/admin/metering/gaps?cluster_id={cluster}"), None, admins),
        one(
            "GET",
            "/api/admin/usage/storage-samples",
            format!("/api/admin/usage/storage-samples?user_id={owner}&day={day}"),
            None,
            admins,
        ),
        one(
            "GET",
            "/api/admin/metering/storage-gaps",
            format!("/api/admin/metering/storage-gaps?cluster_id={cluster}"),
            None,
            admins,
        ),
        // gap estimates (decision 0069): listed for admins; deciding one that does not exist is 404
        one(
            "GET",
            "/api/admin/metering/estimates",
            format!("/api/admin/metering/estimates?cluster_id={cluster}"),
            None,
            admins,
        ),
        one(
            "POST",
            "/api/admin/metering/estimates/{id}/approve",
            format!("/api/admin/metering/estimates/{}/approve", Uuid::now_v7()),
            None,
            [401, 403, 403, 403, 404],
        ),
        one(
            "POST",
            "/api/admin/metering/estimates/{id}/reject",
            format!("/api/admin/metering/estimates/{}/reject", Uuid::now_v7()),
            None,
            [401, 403, 403, 403, 404],
        ),
        // storage gap estimates (decision 0076): the same, per project and storage window
        one(
            "GET",
            "/api/admin/metering/storage-estimates",
            format!("/api/admin/metering/storage-estimates?cluster_id={cluster}"),
            None,
            admins,
        ),
        one(
            "POST",
            "/api/admin/metering/storage-estimates/{id}/approve",
            format!("/api/admin/metering/storage-estimates/{}/approve", Uuid::now_v7()),
            None,
            [401, 403, 403, 403, 404],
        ),
        one(
            "POST",
            "/api/admin/metering/storage-estimates/{id}/reject",
            format!("/api/admin/metering/storage-estimates/{}/reject", Uuid::now_v7()),
            None,
            [401, 403, 403, 403, 404],
        ),
        one(
            "POST",
            "/api/admin/metering/clusters/{id}/collect",
            format!("/api/admin/metering/clusters/{cluster}/collect"),
            None,
            admins_accepted,
        ),
        // team: owners manage their team and a member is refused every owner route; another
        // owner's objects are not found; the preview is public; accepting is for the invited
        // address alone
        plain("GET", "/api/team", owners),
        plain("GET", "/api/team/invitations", owners),
        one(
            "POST",
            "/api/team/invitations",
            "/api/team/invitations",
            Some(json!({"email": "newcomer@example.com", "project_role": ROLE})),
            [401, 201, 201, 403, 201],
        ),
        one(
            "POST",
            "/api/team/invitations/{id}/resend",
            format!("/api/team/invitations/{}/resend", s.pending),
            None,
            [401, 404, 200, 403, 404],
        ),
        one(
            "DELETE",
            "/api/team/invitations/{id}",
            format!("/api/team/invitations/{}", s.pending),
            None,
            [401, 404, 200, 403, 404],
        ),
        plain("GET", "/api/team/membership", [401, 404, 404, 200, 404]),
        Expectation {
            method: "GET",
            template: "/api/invitations/{token}",
            cases: vec![
                case(format!("/api/invitations/{foreign}"), None, [200; 5]),
                case(format!("/api/invitations/{unknown}"), None, [404; 5]),
            ],
        },
        Expectation {
            method: "POST",
            template: "/api/invitations/{token}/accept",
            cases: vec![
                case(format!("/api/invitations/{foreign}/accept"), Some(terms.clone()), [401, 403, 403, 409, 403]),
                case(format!("/api/invitations/{unknown}/accept"), Some(terms), [401, 404, 404, 404, 404]),
            ],
        },
        one(
            "DELETE",
            "/api/team/members/{user_id}",
            format!("/api/team/members/{mate}"),
            None,
            [401, 404, 200, 403, 404],
        ),
        // each service's mail, for admins: team's unsent mail is retried; its sent one is not;
        // no other service has a mail of team's id
        Expectation {
            method: "GET",
            template: "/api/admin/mail/{service}",
            cases: SCHEMAS.iter().map(|service| case(format!("/api/admin/mail/{service}"), None, admins)).collect(),
        },
        Expectation {
            method: "POST",
            template: "/api/admin/mail/{service}/{id}/retry",
            cases: [
                case(format!("/api/admin/mail/team/{}/retry", s.stuck_mail), None, admins_accepted),
                case(format!("/api/admin/mail/team/{}/retry", s.sent_mail), None, [401, 403, 403, 403, 409]),
            ]
            .into_iter()
            .chain(SCHEMAS.iter().filter(|service| **service != "team").map(|service| {
                case(format!("/api/admin/mail/{service}/{}/retry", s.sent_mail), None, [401, 403, 403, 403, 404])
            }))
            .collect(),
        },
        // each service's dead letters, for admins: the run dead-letters nothing, so an id is
        // no dead letter and replaying all of them replays none
        Expectation {
            method: "GET",
            template: "/api/admin/dead-letters/{service}",
            cases: SCHEMAS
                .iter()
                .map(|service| case(format!("/api/admin/dead-letters/{service}"), None, admins))
                .collect(),
        },
        Expectation {
            method: "GET",
            template: "/api/admin/dead-letters/{service}/{id}",
            cases: SCHEMAS
                .iter()
                .map(|service| {
                    case(format!("/api/admin/dead-letters/{service}/{owner}"), None, [401, 403, 403, 403, 404])
                })
                .collect(),
        },
        Expectation {
            method: "POST",
            template: "/api/admin/dead-letters/{service}/{id}/replay",
            cases: SCHEMAS
                .iter()
                .map(|service| {
                    case(format!("/api/admin/dead-letters/{service}/{owner}/replay"), None, [401, 403, 403, 403, 404])
                })
                .collect(),
        },
        Expectation {
            method: "POST",
            template: "/api/admin/dead-letters/{service}/replay",
            cases: SCHEMAS
                .iter()
                .map(|service| case(format!("/api/admin/dead-letters/{service}/replay"), None, admins))
                .collect(),
        },
        // each service's integrity findings and an on-demand run of its checks, for admins
        Expectation {
            method: "GET",
            template: "/api/admin/integrity/{service}",
            cases: SCHEMAS
                .iter()
                .map(|service| case(format!("/api/admin/integrity/{service}"), None, admins))
                .collect(),
        },
        Expectation {
            method: "POST",
            template: "/api/admin/integrity/{service}/run",
            cases: SCHEMAS
                .iter()
                .map(|service| case(format!("/api/admin/integrity/{service}/run"), None, admins_accepted))
                .collect(),
        },
        Expectation {
            method: "GET",
            template: "/api/admin/integrity/{service}/runs/{id}",
            cases: SCHEMAS
                .iter()
                .map(|service| {
                    case(
                        format!("/api/admin/integrity/{service}/runs/{}", Uuid::now_v7()),
                        None,
                        [401, 403, 403, 403, 404],
                    )
                })
                .collect(),
        },
        // provisioning: a person sees only their own cluster (the admin has none); the registry
        // and the assignments are for admins, on the owner's cluster and the owner's place
        plain("GET", "/api/cluster", [401, 200, 200, 200, 404]),
        plain("GET", "/api/cluster/projects", [401, 200, 200, 200, 404]),
        plain("GET", "/api/admin/clusters", admins),
        one("POST", "/api/admin/clusters", "/api/admin/clusters", Some(s.new_cluster.clone()), admins_created),
        one("GET", "/api/admin/clusters/{id}", format!("/api/admin/clusters/{cluster}"), None, admins),
        one(
            "PATCH",
            "/api/admin/clusters/{id}",
            format!("/api/admin/clusters/{cluster}"),
            Some(json!({"capacity": 60})),
            admins,
        ),
        one(
            "POST",
            "/api/admin/clusters/{id}/projects/sync",
            format!("/api/admin/clusters/{cluster}/projects/sync"),
            None,
            admins,
        ),
        plain("GET", "/api/admin/assignments", admins),
        plain("GET", "/api/admin/assignments/status-drift", admins),
        one("GET", "/api/admin/assignments/{user_id}", format!("/api/admin/assignments/{owner}"), None, admins),
        one(
            "GET",
            "/api/admin/assignments/{user_id}/projects",
            format!("/api/admin/assignments/{member}/projects"),
            None,
            admins,
        ),
        one(
            "PUT",
            "/api/admin/assignments/{user_id}",
            format!("/api/admin/assignments/{owner}"),
            Some(json!({"cluster_id": other_cluster})),
            admins,
        ),
        one("DELETE", "/api/admin/assignments/{user_id}", format!("/api/admin/assignments/{owner}"), None, admins),
        // Last: the member leaves; people delete their accounts (a member cannot, an owner with
        // members cannot).
        plain("POST", "/api/team/leave", [401, 404, 404, 200, 404]),
        plain("DELETE", "/api/me", [401, 200, 409, 409, 200]),
    ]
}

/// Operations that succeed without changing anything the snapshot holds, and why.
const WITHOUT_RECORDED_EFFECT: [(&str, &str, &str); 6] = [
    ("POST", "/api/billing/payment-method", "a Checkout Session at Stripe, which the sandbox does not list"),
    ("POST", "/api/billing/portal", "a portal session at Stripe, which the sandbox does not list"),
    ("POST", "/api/admin/billing/reconcile", "no day has closed since the usage began"),
    ("POST", "/api/admin/billing/reconcile/stripe", "no day has closed, so no meter event was reported to compare"),
    ("POST", "/api/admin/metering/clusters/{id}/collect", "the cluster's last window is measured already"),
    ("POST", "/api/admin/dead-letters/{service}/replay", "nothing is dead-lettered, so nothing waits"),
];

/// An operation as the document has it.
#[derive(Debug)]
struct Documented {
    method: String,
    template: String,
    /// No security requirement: anyone may call it without a token.
    public: bool,
    /// The statuses it documents.
    statuses: BTreeSet<u16>,
}

/// Every operation of the document.
fn documented() -> Vec<Documented> {
    let text = std::fs::read_to_string(DOCUMENT).unwrap_or_else(|e| panic!("{DOCUMENT}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DOCUMENT}: {e}"));
    let global_security = doc.get("security").cloned().unwrap_or(Value::Null);
    let mut operations = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("the document's paths") {
        for method in ["get", "put", "post", "delete", "options", "head", "patch", "trace"] {
            let Some(operation) = item.get(method) else { continue };
            let security = operation.get("security").unwrap_or(&global_security);
            let public = security.as_array().is_none_or(Vec::is_empty);
            let statuses = operation["responses"]
                .as_object()
                .map(|r| r.keys().filter_map(|k| k.parse().ok()).collect())
                .unwrap_or_default();
            operations.push(Documented { method: method.to_uppercase(), template: template.clone(), public, statuses });
        }
    }
    operations
}

/// Whether `path` (its query aside) is an instance of `template`.
fn instance_of(path: &str, template: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let (ours, theirs): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), template.split('/').collect());
    ours.len() == theirs.len()
        && ours.iter().zip(&theirs).all(|(o, t)| if t.starts_with('{') { !o.is_empty() } else { o == t })
}

/// What is wrong between the document and the matrix: each problem, naming the operation.
fn coverage(document: &[Documented], matrix: &[Expectation]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for e in matrix {
        let name = format!("{} {}", e.method, e.template);
        if !seen.insert(name.clone()) {
            problems.push(format!("{name}: more than one expectation"));
        }
        let Some(d) = document.iter().find(|d| d.method == e.method && d.template == e.template) else {
            problems.push(format!("{name}: an expectation for an operation the document does not have"));
            continue;
        };
        if e.cases.is_empty() {
            problems.push(format!("{name}: an expectation without a case"));
        }
        for c in &e.cases {
            if !instance_of(&c.path, e.template) {
                problems.push(format!("{name}: the case {} is not this operation's path", c.path));
            }
            for (who, status) in CALLERS.iter().zip(c.answers) {
                if !d.statuses.contains(&status) {
                    problems.push(format!(
                        "{name}: {who:?} is expected {status}, which the document does not give ({:?})",
                        d.statuses
                    ));
                }
            }
            let anonymous = c.answers[0];
            if d.public == (anonymous == 401) {
                let security = if d.public { "no security requirement" } else { "a security requirement" };
                problems
                    .push(format!("{name}: the document gives it {security}, but anonymous is expected {anonymous}"));
            }
        }
    }
    for d in document {
        if !matrix.iter().any(|e| e.method == d.method && e.template == d.template) {
            problems.push(format!(
                "{} {}: documented, but the matrix has no expectation for it (add one to matrix())",
                d.method, d.template
            ));
        }
    }
    problems
}

#[test]
fn every_documented_operation_has_one_expectation() {
    let document = documented();
    let problems = coverage(&document, &matrix(&Seed::placeholder()));
    assert!(problems.is_empty(), "the matrix and {DOCUMENT} disagree:\n{}", problems.join("\n"));
    assert!(document.len() >= 60, "{} operations: is this the whole document?", document.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_each_kind_of_caller_as_it_should_and_a_refusal_changes_nothing() {
    // Before anything starts: a document the matrix does not cover fails at once.
    let document = documented();
    let problems = coverage(&document, &matrix(&Seed::placeholder()));
    assert!(problems.is_empty(), "the matrix and {DOCUMENT} disagree:\n{}", problems.join("\n"));

    // A mail that fails is tried again in an hour, not in seconds: team's unsent mail stays as
    // it is until the admin's retry.
    let mut settings: Vec<_> =
        [Service::Identity, Service::Team, Service::Billing, Service::Provisioning, Service::Metering]
            .into_iter()
            .flat_map(|s| {
                [(s, "mail.backoff_initial_secs", "3600".to_owned()), (s, "mail.backoff_max_secs", "7200".to_owned())]
            })
            .collect();
    // billing acts on Stripe's lifecycle signals every 2 s, so the platform goes idle soon.
    settings.push((Service::Billing, "lifecycle.enforce_interval_secs", "2".to_owned()));
    let options = Options {
        metering_window_secs: 30,
        lab_owners: LABS.iter().map(|l| (*l).to_owned()).collect(),
        settings,
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let (people, seed) = seed(&platform).await;
    let expectations = matrix(&seed);
    let problems = coverage(&document, &expectations);
    assert!(problems.is_empty(), "the matrix and {DOCUMENT} disagree:\n{}", problems.join("\n"));

    let mut matrix = Matrix::new(&platform, &people, &seed).await;
    let requests: Vec<(&Expectation, &Case, Who, u16)> = expectations
        .iter()
        .flat_map(|e| e.cases.iter().map(move |c| (e, c)))
        .flat_map(|(e, c)| CALLERS.iter().zip(c.answers).map(move |(who, want)| (e, c, *who, want)))
        .collect();
    let (unchanging, changing): (Vec<_>, Vec<_>) =
        requests.into_iter().partition(|(e, _, _, want)| e.method == "GET" || !(200..300).contains(want));

    // First every request that must change nothing, on an idle platform.
    let mut mismatches = Vec::new();
    let mut before = matrix.settled().await;
    for (e, c, who, want) in &unchanging {
        let (got, answer) = matrix.send(*who, e.method, c).await;
        mismatches.extend(matrix.answered(e, c, *who, *want, got, &answer));
        let after = matrix.snapshot().await;
        let changes = before.changes(&after);
        if !changes.is_empty() {
            mismatches.push(format!(
                "{} {} as {who:?} answered {got} but changed (or the request before it did, late):\n{changes}",
                e.method, c.path
            ));
        }
        before = after;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = before.changes(&matrix.snapshot().await);
    if !late.is_empty() {
        mismatches.push(format!("after the requests that must change nothing, something changed late:\n{late}"));
    }
    let refusals = unchanging.iter().filter(|(_, _, _, want)| *want >= 300).count();

    // Then the requests that must succeed at a change, in the matrix's order.
    for (e, c, who, want) in &changing {
        let before = matrix.snapshot().await;
        let (got, answer) = matrix.send(*who, e.method, c).await;
        mismatches.extend(matrix.answered(e, c, *who, *want, got, &answer));
        let recorded = !WITHOUT_RECORDED_EFFECT.iter().any(|(m, t, _)| *m == e.method && *t == e.template);
        if (200..300).contains(&got) && recorded && !matrix.changes_within(&before, Duration::from_secs(15)).await {
            mismatches.push(format!("{} {} as {who:?} answered {got} but changed nothing", e.method, c.path));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} requests ({} operations) went wrong:\n{}\n\nwhat the services warned of:\n{}",
        mismatches.len(),
        unchanging.len() + changing.len(),
        expectations.len(),
        mismatches.join("\n"),
        warnings(&platform)
    );
    println!(
        "{} operations, {} requests: {refusals} refusals and {} other reads changed nothing; {} changes made",
        expectations.len(),
        unchanging.len() + changing.len(),
        unchanging.len() - refusals,
        changing.len()
    );

    // What the changes did: the newcomer has the invitations (and mails) of the three allowed
    // to invite; the pending invitation's mail went twice (sent, resent by the owner); the
    // unsent mail went once the admin retried it.
    let mails = |to: &str| platform.world.mail.messages_to(to).len();
    wait_for("the newcomer's, the resent and the retried mails", PATIENCE, || async {
        (mails("newcomer@example.com") >= 3 && mails("pending@example.com") >= 2 && mails("stuck@example.com") >= 1)
            .then_some(())
    })
    .await;
    assert_eq!(mails("newcomer@example.com"), 3, "one mail per invitation");
    assert_eq!(mails("pending@example.com"), 2, "the first mail and the owner's resend alone");
    assert_eq!(mails("stuck@example.com"), 1, "the unsent mail, sent once on the admin's retry");
}

/// Each service's warnings, errors and panics so far (the last few of each), to explain a
/// mismatch.
fn warnings(platform: &Platform) -> String {
    let services = [
        Service::Gateway,
        Service::Identity,
        Service::Team,
        Service::Billing,
        Service::Provisioning,
        Service::Metering,
    ];
    let mut out = Vec::new();
    for service in services {
        let output = platform.service_output(service);
        let lines = output.lines().filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"));
        // Every service warns once that it follows the sandbox's clock.
        let lines: Vec<&str> = lines.filter(|l| !l.contains("simulated clock")).collect();
        let shown = lines.iter().skip(lines.len().saturating_sub(10));
        out.extend(shown.map(|l| format!("  {}: {}", service.name(), l.chars().take(600).collect::<String>())));
    }
    out.join("\n")
}

/// Makes the people and their objects, then stops the sandbox's clock.
async fn seed(platform: &Platform) -> (HashMap<Who, Person>, Seed) {
    let mut people: HashMap<Who, Person> = HashMap::new();
    for (who, handle) in
        [(Who::AnotherUser, "another"), (Who::Owner, "owner"), (Who::Member, "member"), (Who::Admin, "admin")]
    {
        let person = platform.sign_up(handle).await;
        platform.wait_billing_account(&person, PATIENCE).await;
        people.insert(who, person);
    }
    // The owner and another user each add a card and are placed, each on a cluster of their own
    // (the one with the most room), where metering measures their lab.
    for who in [Who::Owner, Who::AnotherUser] {
        platform.add_card(&people[&who]).await;
        platform.wait_assigned(&people[&who], PATIENCE).await;
    }
    let cluster_of = |who: Who| {
        let people = &people;
        async move {
            let (_, mine) = platform.call("GET", "/api/cluster", &people[&who].token, None).await;
            mine["cluster"]["id"].as_str().and_then(|id| id.parse::<Uuid>().ok()).expect("a cluster")
        }
    };
    let (cluster, other_cluster) = (cluster_of(Who::Owner).await, cluster_of(Who::AnotherUser).await);
    assert_ne!(cluster, other_cluster, "the owner and another user share a cluster");
    let admin = people[&Who::Admin].user_id;
    let (status, granted) =
        platform.call("PUT", &format!("/api/admin/users/{admin}/admin"), &platform.admin_token, None).await;
    assert_eq!(status, 200, "the admin is granted: {granted}");
    let target = platform.sign_up("target").await.user_id;

    // Team's first mail, sent while SMTP is down (before team's mail relay holds a pooled
    // connection, which the sandbox would not refuse): it fails and is due again in an hour.
    let mail = |sql: &'static str| async move {
        let mut conn = platform.db.connect("team").await;
        diesel::sql_query(sql).get_result::<One>(&mut conn).await.ok().map(|r| r.v)
    };
    platform.world.mail.set_smtp_down(true);
    platform.invite(&people[&Who::Owner], "stuck@example.com", ROLE).await;
    let stuck_mail = wait_for("the mail to stuck@example.com failed once", PATIENCE, || async {
        mail("SELECT id::text AS v FROM mail_outbox WHERE recipient = 'stuck@example.com' AND attempts >= 1").await
    })
    .await;
    platform.world.mail.set_smtp_down(false);

    // The team, through the team API: another user's invitation to the member (still pending
    // when the member has joined), the owner's to the member, accepted, and to "mate", a second
    // member for the owner to remove; a pending invitation of the owner's to resend and cancel.
    let foreign = platform.invite(&people[&Who::AnotherUser], "member@example.com", ROLE).await;
    let invitation = platform.invite(&people[&Who::Owner], "member@example.com", ROLE).await;
    platform.join(&people[&Who::Member], &invitation.token).await;
    let mate = platform.sign_up("mate").await;
    let invitation = platform.invite(&people[&Who::Owner], "mate@example.com", ROLE).await;
    platform.join(&mate, &invitation.token).await;
    let pending = platform.invite(&people[&Who::Owner], "pending@example.com", ROLE).await.id;
    // The member's places follow from team's events: identity names the owner their account
    // owner, billing refuses them, provisioning puts them on the owner's cluster.
    let (owner, member) = (people[&Who::Owner].user_id, people[&Who::Member].user_id);
    for person in [&people[&Who::Member], &mate] {
        wait_for(&format!("identity names the owner {}'s account owner", person.auth0.email), PATIENCE, || async {
            let (_, me) = platform.call("GET", "/api/me", &person.token, None).await;
            (me["account_owner_id"] == owner.to_string()).then_some(())
        })
        .await;
    }
    wait_for("billing refuses the member", PATIENCE, || async {
        (platform.call("GET", "/api/billing", &people[&Who::Member].token, None).await.0 == 403).then_some(())
    })
    .await;
    let placed = platform.wait_assigned(&people[&Who::Member], PATIENCE).await;
    assert_eq!(placed["cluster"]["id"], cluster.to_string(), "the member is on the owner's cluster: {placed}");

    // A sent team mail.
    let sent_mail = wait_for("every team mail sent", PATIENCE, || async {
        let unsent =
            mail("SELECT count(*)::text AS v FROM mail_outbox WHERE sent_at IS NULL AND next_attempt_at <= now()")
                .await?;
        let sent = mail("SELECT min(id::text) AS v FROM mail_outbox WHERE sent_at IS NOT NULL").await;
        (unsent == "0").then_some(sent).flatten()
    })
    .await;

    // A day with usage of the owner and of another user, measured by metering and priced by
    // billing.
    let admin_token = &platform.admin_token;
    let days_of = |user: Uuid| async move {
        let (_, rows) = platform.call("GET", &format!("/api/admin/usage?user_id={user}"), admin_token, None).await;
        rows.as_array()
            .map(|rows| rows.iter().filter_map(|r| r["day"].as_str()?.parse::<NaiveDate>().ok()).collect())
            .unwrap_or_else(BTreeSet::new)
    };
    let another = people[&Who::AnotherUser].user_id;
    let day = wait_for("a day with usage of the owner and of another user", PATIENCE, || async {
        days_of(owner).await.intersection(&days_of(another).await).max().copied()
    })
    .await;
    for who in [Who::Owner, Who::AnotherUser] {
        wait_for(&format!("billing's usage of {who:?} on {day}"), PATIENCE, || async {
            let path = format!("/api/billing/usage?from={day}&to={day}");
            let (_, usage) = platform.call("GET", &path, &people[&who].token, None).await;
            usage["lines"].as_array().is_some_and(|l| !l.is_empty()).then_some(())
        })
        .await;
    }

    // The calendar stands still from here: no window ends, nothing expires.
    platform.world.set_rate(0);
    let now = DateTime::from_timestamp(platform.world.clock.now(), 0).expect("the sandbox's time");
    let (_, preview) = platform.call_as("GET", &format!("/api/invitations/{}", foreign.token), None, None).await;
    let c = &platform.world.clusters[0];
    let new_cluster = json!({
        "name": "matrix", "api_url": c.hopsworks.origin(), "api_key": c.hopsworks.api_key(), "kubeconfig": c.kubernetes.kubeconfig(),
        "ca_bundle": c.hopsworks.ca_pem(), "oauth_client_id": "client", "capacity": 1, "region": "eu", "status": "inactive",
    });
    let seed = Seed {
        owner,
        another,
        member,
        mate: mate.user_id,
        target,
        cluster,
        other_cluster,
        pending,
        foreign: foreign.token,
        terms_version: preview["terms_version"].as_str().expect("the terms version").to_owned(),
        sent_mail,
        stuck_mail,
        day,
        now,
        new_cluster,
    };
    (people, seed)
}

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = Text)]
    v: String,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    t: String,
    #[diesel(sql_type = Text)]
    v: String,
}

/// Columns a request may change without changing anything: (table, column, why).
const IGNORED: [(&str, &str, &str); 18] = [
    ("users", "last_login_at", "identity records each call the gateway resolves"),
    ("cluster_health", "checked_at", "provisioning's scheduled health check of each cluster"),
    ("cluster_health", "ok", "provisioning's scheduled health check of each cluster"),
    ("cluster_health", "checks", "provisioning's scheduled health check of each cluster"),
    ("cluster_health", "lease_until", "provisioning's scheduled health check of each cluster"),
    ("outbox", "published_at", "the relay's bookkeeping once the event is written"),
    ("outbox", "attempts", "the relay's bookkeeping"),
    ("outbox", "last_error", "the relay's bookkeeping"),
    ("integrity_requests", "finished_at", "the on-demand integrity run's background bookkeeping"),
    ("integrity_requests", "runs", "the on-demand integrity run's background bookkeeping"),
    ("integrity_requests", "error", "the on-demand integrity run's background bookkeeping"),
    ("integrity_runs", "last_ok", "the scheduled integrity checks' bookkeeping"),
    ("integrity_runs", "last_error", "the scheduled integrity checks' bookkeeping"),
    ("integrity_runs", "last_found", "the scheduled integrity checks' bookkeeping"),
    ("integrity_runs", "lease_owner", "the scheduled integrity checks' bookkeeping"),
    ("integrity_runs", "lease_until", "the scheduled integrity checks' bookkeeping"),
    ("integrity_runs", "last_started_at", "the scheduled integrity checks' bookkeeping"),
    ("integrity_runs", "last_finished_at", "the scheduled integrity checks' bookkeeping"),
];

/// Everything a request could change: each row of each table of each service's schema (as
/// JSON, without the [`IGNORED`] columns), and what the sandbox's Stripe (customers,
/// subscriptions, cards, invoices, meter events, events), Hopsworks (users, projects,
/// memberships, every write asked of it) and mail catcher hold.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot(BTreeMap<String, BTreeSet<String>>);

impl Snapshot {
    /// The rows added and removed from `self` to `after`, by table; empty when none.
    fn changes(&self, after: &Self) -> String {
        let empty = BTreeSet::new();
        let tables: BTreeSet<&String> = self.0.keys().chain(after.0.keys()).collect();
        let mut out = Vec::new();
        let short = |row: &str| row.chars().take(300).collect::<String>();
        for table in tables {
            let (old, new) = (self.0.get(table).unwrap_or(&empty), after.0.get(table).unwrap_or(&empty));
            let added: Vec<&String> = new.difference(old).collect();
            let removed: Vec<&String> = old.difference(new).collect();
            if added.is_empty() && removed.is_empty() {
                continue;
            }
            out.push(format!("  {table}: {} rows added, {} removed", added.len(), removed.len()));
            out.extend(added.iter().take(3).map(|r| format!("    + {}", short(r))));
            out.extend(removed.iter().take(3).map(|r| format!("    - {}", short(r))));
        }
        out.join("\n")
    }
}

/// Calls the operations as each kind of caller, and watches what they change.
struct Matrix<'a> {
    platform: &'a Platform,
    /// Follows no redirect: login and logout answer 302.
    http: reqwest::Client,
    tokens: HashMap<Who, String>,
    /// Ids no 2xx answer to the caller may name: other people's.
    foreign: HashMap<Who, Vec<(&'static str, String)>>,
    conn: AsyncPgConnection,
    /// One query reading every table of every service's schema.
    tables: String,
    /// One query naming what is still at work.
    busy: String,
}

impl<'a> Matrix<'a> {
    async fn new(platform: &'a Platform, people: &HashMap<Who, Person>, seed: &Seed) -> Self {
        let mut conn = platform.db.connect("public").await;
        let schemas = SCHEMAS.map(|s| format!("'{s}'")).join(", ");
        let names: Vec<Row> = diesel::sql_query(format!(
            "SELECT table_schema AS t, table_name AS v FROM information_schema.tables
             WHERE table_schema IN ({schemas}) AND table_type = 'BASE TABLE' ORDER BY 1, 2"
        ))
        .load(&mut conn)
        .await
        .unwrap();
        assert!(names.len() > 20, "the services' tables: {}", names.len());
        let tables = names
            .iter()
            .map(|Row { t: schema, v: table }| {
                let ignored: Vec<String> =
                    IGNORED.iter().filter(|(t, _, _)| t == table).map(|(_, c, _)| format!("'{c}'")).collect();
                format!(
                    "SELECT '{schema}.{table}' AS t, (to_jsonb(r) - ARRAY[{}]::text[])::text AS v FROM \"{schema}\".\"{table}\" r",
                    ignored.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let mut busy: Vec<String> = SCHEMAS
            .iter()
            .flat_map(|s| {
                [
                    format!("SELECT '{s}: unpublished events' AS t, count(*)::text AS v FROM \"{s}\".outbox WHERE published_at IS NULL"),
                    format!("SELECT '{s}: mail due' AS t, count(*)::text AS v FROM \"{s}\".mail_outbox WHERE sent_at IS NULL AND next_attempt_at <= now()"),
                    // The scheduled integrity checks' first run (within a minute of the start)
                    // records what the sandbox's world holds; the matrix starts after it.
                    format!("SELECT '{s}: integrity checks not yet run' AS t, count(*)::text AS v FROM \"{s}\".integrity_runs WHERE last_finished_at IS NULL"),
                ]
            })
            .collect();
        busy.push("SELECT 'billing: lifecycle signals to act on' AS t, count(*)::text AS v FROM billing.lifecycle_signals WHERE handled_at IS NULL".to_owned());
        busy.push("SELECT 'metering: runs to measure' AS t, count(*)::text AS v FROM metering.runs WHERE status IN ('pending', 'running')".to_owned());
        busy.push("SELECT 'provisioning: accounts at work' AS t, count(*)::text AS v FROM provisioning.assignments WHERE status IN ('provisioning', 'unassigning')".to_owned());
        busy.push("SELECT 'provisioning: project places at work' AS t, count(*)::text AS v FROM provisioning.project_members WHERE state IN ('adding', 'removing')".to_owned());
        let id = |who: Who| people[&who].user_id.to_string();
        let owners_side = vec![
            ("the owner's user id", id(Who::Owner)),
            ("the member's user id", id(Who::Member)),
            ("the second member's user id", seed.mate.to_string()),
            ("the owner's cluster", seed.cluster.to_string()),
        ];
        let anothers_side = vec![
            ("another user's id", seed.another.to_string()),
            ("another user's cluster", seed.other_cluster.to_string()),
        ];
        Self {
            platform,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            tokens: people.iter().map(|(who, p)| (*who, p.token.clone())).collect(),
            foreign: HashMap::from([
                (Who::AnotherUser, owners_side),
                (Who::Owner, anothers_side.clone()),
                (Who::Member, anothers_side),
            ]),
            conn,
            tables,
            busy: busy.join(" UNION ALL "),
        }
    }

    /// Calls `case` as `who`; answers the status and the body.
    async fn send(&self, who: Who, method: &str, case: &Case) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method.clone(), format!("{}{}", self.platform.gateway, case.path));
        if let Some(token) = self.tokens.get(&who) {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &case.body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {} as {who:?}: {e}", case.path));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// What is wrong with an answer: its status, or another person's id in it.
    fn answered(&self, e: &Expectation, c: &Case, who: Who, want: u16, got: u16, answer: &str) -> Vec<String> {
        let mut wrong = Vec::new();
        let short: String = answer.chars().take(400).collect();
        if got != want {
            wrong.push(format!("{} {} as {who:?}: {got}, expected {want} ({short})", e.method, c.path));
        }
        if (200..300).contains(&got) {
            for (what, id) in self.foreign.get(&who).into_iter().flatten() {
                if answer.contains(id.as_str()) {
                    wrong.push(format!("{} {} as {who:?} names {what} ({short})", e.method, c.path));
                }
            }
        }
        wrong
    }

    async fn snapshot(&mut self) -> Snapshot {
        let rows: Vec<Row> = diesel::sql_query(&self.tables).load(&mut self.conn).await.unwrap();
        let mut snapshot: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for Row { t, v } in rows {
            snapshot.entry(t).or_default().insert(v);
        }
        let world = &self.platform.world;
        let mut outside = |name: &str, rows: Vec<String>| {
            snapshot.insert(format!("sandbox.{name}"), rows.into_iter().collect());
        };
        outside("stripe.customers", world.stripe.customers().iter().map(Value::to_string).collect());
        outside("stripe.subscriptions", world.stripe.subscriptions().iter().map(Value::to_string).collect());
        outside("stripe.payment_methods", world.stripe.payment_methods().iter().map(Value::to_string).collect());
        outside("stripe.invoices", world.stripe.invoices().iter().map(Value::to_string).collect());
        outside("stripe.meter_events", world.stripe.meter_events().iter().map(Value::to_string).collect());
        // Every object Stripe changed announces it (a card attached, a subscription updated).
        outside("stripe.events", world.stripe.events().iter().map(Value::to_string).collect());
        for (i, c) in world.clusters.iter().enumerate() {
            outside(&format!("hopsworks-{i}.users"), c.hopsworks.users().iter().map(|u| format!("{u:?}")).collect());
            outside(
                &format!("hopsworks-{i}.projects"),
                c.hopsworks.projects().iter().map(|p| format!("{p:?}")).collect(),
            );
            outside(
                &format!("hopsworks-{i}.memberships"),
                c.hopsworks.memberships().iter().map(|m| format!("{m:?}")).collect(),
            );
            // Each write asked of Hopsworks, answered or not: an attempt at a change is one.
            let writes = c.hopsworks.requests().into_iter().filter(|r| r.method != "GET").enumerate();
            outside(
                &format!("hopsworks-{i}.writes"),
                writes.map(|(n, r)| format!("{n} {} {}?{}", r.method, r.path, r.query)).collect(),
            );
        }
        let messages = world.mail.messages();
        outside("mail.messages", messages.iter().map(|m| format!("{} {:?} {}", m.id, m.to, m.subject)).collect());
        outside("mail.webhooks", world.mail.webhooks().iter().map(|w| w.id.clone()).collect());
        Snapshot(snapshot)
    }

    /// The snapshot once nothing is at work and nothing has changed for three seconds.
    async fn settled(&mut self) -> Snapshot {
        let deadline = Instant::now() + PATIENCE;
        let mut last = self.snapshot().await;
        let mut quiet = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let busy: Vec<Row> = diesel::sql_query(&self.busy).load(&mut self.conn).await.unwrap();
            let busy: Vec<String> =
                busy.into_iter().filter(|r| r.v != "0").map(|r| format!("{} {}", r.t, r.v)).collect();
            let now = self.snapshot().await;
            let changes = last.changes(&now);
            quiet = if busy.is_empty() && changes.is_empty() { quiet + 1 } else { 0 };
            if quiet == 3 {
                return now;
            }
            assert!(Instant::now() < deadline, "the platform never went idle: {busy:?}\n{changes}");
            last = now;
        }
    }

    /// Whether something changes from `before` within `timeout`.
    async fn changes_within(&mut self, before: &Snapshot, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.snapshot().await != *before {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
