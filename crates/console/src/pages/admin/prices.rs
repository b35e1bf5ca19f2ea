//! The price book for admins: per resource, the version in force, the scheduled ones and the
//! past ones, with their unit amounts and currency as billing gives them
//! (`GET /api/admin/prices`), and a form to schedule a new version
//! (`POST /api/admin/prices`: a resource, a unit amount in minor units, and when it starts, in
//! UTC). Which version is in force is billing's word: its public price list
//! (`GET /api/pricing`) names the version in force of each resource by its start, so the page
//! agrees with billing's clock; only when that list cannot be read does the page judge by the
//! console's clock. A refused form comes back with billing's code explained; a scheduled one
//! comes back to the page, which says what was scheduled by finding it in the book (the URL
//! names the resource and the start, never an id).

use super::super::{Ctx, Data, Form, Layout, field, render, see_other};
use super::emails_of;
use crate::{Method, api, format};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};

/// The resources billing prices, in its order (the form offers these when the book is empty).
const RESOURCES: [&str; 5] = ["cpu", "memory", "gpu", "storage_offline", "storage_online"];

/// Where a version stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// It prices windows starting now.
    InForce,
    /// It starts later.
    Scheduled,
    /// A later one replaced it.
    Past,
}

/// One version, as the page shows it.
#[derive(Debug)]
struct Version {
    standing: Standing,
    /// Its start, in words (UTC).
    from: String,
    /// Its start, as billing gave it (for `<time datetime>`).
    from_iso: String,
    /// Minor units per billed unit, as billing gave it.
    minor: String,
    /// Lowercase ISO 4217, as billing gave it.
    currency: String,
    /// The same price in the currency's major unit, exact.
    major: String,
    /// When it was recorded, in words.
    recorded: String,
    /// Who recorded it: the admin's email, configuration, or a machine client.
    by: String,
}

impl Version {
    fn standing(&self) -> &'static str {
        match self.standing {
            Standing::InForce => "In force",
            Standing::Scheduled => "Scheduled",
            Standing::Past => "Past",
        }
    }
}

/// One resource's versions.
#[derive(Debug)]
struct Priced {
    /// Billing's name (`cpu`).
    resource: String,
    /// The name as an HTML id: itself when snake_case, else its place in the book.
    anchor: String,
    /// Its name for people (`CPU`).
    name: String,
    /// Its billed unit (`core-hour`).
    unit: &'static str,
    /// Latest start first.
    versions: Vec<Version>,
}

impl Priced {
    fn in_force(&self) -> Option<&Version> {
        self.versions.iter().find(|v| v.standing == Standing::InForce)
    }

    /// The soonest scheduled version.
    fn next(&self) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.standing == Standing::Scheduled)
    }
}

#[derive(Template)]
#[template(path = "admin_prices.html")]
struct PricesPage {
    l: Layout,
    csrf: String,
    book: Vec<Priced>,
    /// The form's resources: billing's name and what the option says.
    options: Vec<(String, String)>,
    /// The currency prices are in, as billing gives it (empty when the book is).
    currency: String,
    /// 3.5 minor units in that currency's major unit, for the form's hint.
    example: String,
    /// What was just scheduled, in words, when the page comes back from the form.
    scheduled: Option<String>,
    /// Billing's own list of prices in force could not be read: the page judged by its clock.
    by_console_clock: bool,
}

/// An instant in words: `1 January 2030 00:00 UTC` (with seconds when it has any).
fn words(at: &DateTime<Utc>) -> String {
    if at.timestamp() % 60 == 0 && at.timestamp_subsec_nanos() == 0 {
        at.format("%-d %B %Y %H:%M UTC").to_string()
    } else {
        at.format("%-d %B %Y %H:%M:%S UTC").to_string()
    }
}

fn instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|d| d.with_timezone(&Utc))
}

/// When a new price starts, as typed: the `datetime-local` field's `2030-01-01T00:00` (with or
/// without seconds), read as UTC, or a full RFC 3339 instant.
fn typed_instant(typed: &str) -> Option<DateTime<Utc>> {
    let typed = typed.trim();
    instant(typed).or_else(|| {
        ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(typed, f).ok())
            .map(|n| n.and_utc())
    })
}

fn name_of(resource: &str) -> String {
    match format::resource_name(resource) {
        "Other" => resource.to_owned(),
        name => name.to_owned(),
    }
}

/// The book by resource (billing's order, then any other it names), each version placed by
/// `in_force`: the start of each resource's version in force, or `None` to judge by `now`.
fn book_of(
    prices: Vec<api::AdminPrice>,
    in_force: Option<&HashMap<String, DateTime<Utc>>>,
    now: DateTime<Utc>,
    emails: &HashMap<String, String>,
) -> Vec<Priced> {
    let mut resources: Vec<String> = RESOURCES.iter().map(|r| (*r).to_owned()).collect();
    for p in &prices {
        if !resources.contains(&p.resource) {
            resources.push(p.resource.clone());
        }
    }
    let mut book = Vec::new();
    for resource in resources {
        let mut versions: Vec<(DateTime<Utc>, &api::AdminPrice)> = prices
            .iter()
            .filter(|p| p.resource == resource)
            .map(|p| (instant(&p.effective_from).unwrap_or(DateTime::<Utc>::MIN_UTC), p))
            .collect();
        if versions.is_empty() {
            continue;
        }
        versions.sort_by_key(|(from, _)| *from);
        // The start of the version in force: billing's word, else the latest started by now.
        let cut = match in_force {
            Some(starts) => starts.get(&resource).copied(),
            None => versions.iter().rev().find(|(from, _)| *from <= now).map(|(from, _)| *from),
        };
        let versions = versions
            .into_iter()
            .rev()
            .map(|(from, p)| Version {
                standing: match cut {
                    Some(cut) if from == cut => Standing::InForce,
                    Some(cut) if from < cut => Standing::Past,
                    _ => Standing::Scheduled,
                },
                from: instant(&p.effective_from).map_or_else(|| p.effective_from.clone(), |d| words(&d)),
                from_iso: p.effective_from.clone(),
                minor: p.unit_amount_decimal.clone(),
                currency: p.currency.clone(),
                major: format::unit_price(&p.unit_amount_decimal, &p.currency),
                recorded: p
                    .created_at
                    .as_deref()
                    .map_or_else(String::new, |t| instant(t).map_or_else(|| t.to_owned(), |d| words(&d))),
                // Billing records no person for the versions it seeds from configuration (in
                // force from the epoch) and for those a machine client with the admin role sets.
                by: match &p.created_by {
                    None if from == DateTime::<Utc>::UNIX_EPOCH => "configuration".to_owned(),
                    None => "a machine client".to_owned(),
                    Some(id) => emails.get(id).cloned().unwrap_or_else(|| "an admin".to_owned()),
                },
            })
            .collect();
        let anchor = if resource.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            resource.clone()
        } else {
            format!("resource-{}", book.len() + 1)
        };
        book.push(Priced { unit: format::per_unit(&resource), name: name_of(&resource), anchor, resource, versions });
    }
    book
}

pub(in crate::pages) async fn admin_prices(
    data: Data,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    let list: api::PriceList = tri!(ctx.fetch("/api/admin/prices").await);
    // Billing's prices in force, by the start of each resource's.
    let pricing = ctx.get("/api/pricing").await;
    let in_force: Option<HashMap<String, DateTime<Utc>>> =
        pricing.is_success().then(|| pricing.json::<api::Pricing>().ok()).flatten().and_then(|p| {
            p.current
                .iter()
                .map(|c| c.effective_from.as_deref().and_then(instant).map(|from| (c.resource.clone(), from)))
                .collect()
        });
    let creators: BTreeSet<String> = list.prices.iter().filter_map(|p| p.created_by.clone()).collect();
    let emails = emails_of(&ctx, &creators).await;
    let currency = list.prices.first().map(|p| p.currency.clone()).unwrap_or_default();
    let book = book_of(list.prices, in_force.as_ref(), Utc::now(), &emails);
    let mut options: Vec<(String, String)> =
        book.iter().map(|r| (r.resource.clone(), format!("{} (per {})", r.name, r.unit))).collect();
    if options.is_empty() {
        options = RESOURCES
            .iter()
            .map(|r| ((*r).to_owned(), format!("{} (per {})", name_of(r), format::per_unit(r))))
            .collect();
    }
    // Back from the form: what was scheduled, found in the book.
    let scheduled = (query.get("done").map(String::as_str) == Some("scheduled"))
        .then(|| {
            let resource = query.get("resource")?;
            let from = instant(query.get("from")?)?;
            let priced = book.iter().find(|r| &r.resource == resource)?;
            let v = priced.versions.iter().find(|v| instant(&v.from_iso) == Some(from))?;
            Some(format!(
                "Scheduled: {} ({}) at {} minor units of {} per {} ({}), from {}.",
                priced.name, priced.resource, v.minor, v.currency, priced.unit, v.major, v.from
            ))
        })
        .flatten();
    let mut l = ctx.layout("Prices", "/admin");
    if scheduled.is_some() {
        l.notice = None;
    }
    let page = PricesPage {
        l,
        csrf: ctx.viewer.csrf.clone(),
        book,
        options,
        example: format::unit_price("3.5", &currency),
        currency,
        scheduled,
        by_console_clock: in_force.is_none(),
    };
    render(StatusCode::OK, &page)
}

/// Schedules a new version: the resource as chosen, the unit amount as typed (billing judges
/// both), and the start read as UTC.
pub(in crate::pages) async fn admin_prices_schedule(data: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.admin_only());
    tri!(ctx.form_ok(&form));
    let Some(from) = typed_instant(field(&form, "effective_from")) else {
        return ctx.failed("/admin/prices", "invalid_effective_from");
    };
    let from = from.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let body = json!({
        "resource": field(&form, "resource"),
        "unit_amount_decimal": field(&form, "unit_amount_decimal"),
        "effective_from": from,
    });
    let answer = ctx.call(Method::Post, "/api/admin/prices", Some(body)).await;
    if !answer.is_success() {
        return ctx.failed("/admin/prices", &answer.code());
    }
    // What billing recorded (else what was asked), for the page to find and describe.
    let (resource, from) = answer
        .json::<api::AdminPrice>()
        .map_or_else(|_| (field(&form, "resource").to_owned(), from), |p| (p.resource, p.effective_from));
    let query = serde_urlencoded::to_string([("done", "scheduled"), ("resource", &resource), ("from", &from)])
        .unwrap_or_default();
    see_other(&format!("/admin/prices?{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_start_is_read_as_utc() {
        let at = |s| typed_instant(s).map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        assert_eq!(at("2030-01-01T10:30").as_deref(), Some("2030-01-01T10:30:00Z"));
        assert_eq!(at(" 2030-01-01T10:30:15 ").as_deref(), Some("2030-01-01T10:30:15Z"));
        assert_eq!(at("2030-01-01T10:30:15.250").as_deref(), Some("2030-01-01T10:30:15.250Z"));
        assert_eq!(at("2030-01-01T12:00:00+02:00").as_deref(), Some("2030-01-01T10:00:00Z"));
        for bad in ["", "tomorrow", "2030-13-01T00:00", "2030-01-01"] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_are_placed_by_the_start_billing_says_is_in_force() {
        let price = |resource: &str, amount: &str, from: &str| api::AdminPrice {
            resource: resource.to_owned(),
            currency: "usd".to_owned(),
            unit_amount_decimal: amount.to_owned(),
            effective_from: from.to_owned(),
            created_at: None,
            created_by: None,
        };
        let prices = vec![
            price("cpu", "35", "1970-01-01T00:00:00Z"),
            price("cpu", "40", "2030-01-01T00:00:00Z"),
            price("cpu", "45", "2031-01-01T00:00:00Z"),
            price("gpu", "900", "2030-06-01T00:00:00Z"),
        ];
        let now = instant("2029-01-01T00:00:00Z").unwrap();
        // Billing says cpu's 2030 version is in force (its clock is ahead of the console's).
        let starts = HashMap::from([("cpu".to_owned(), instant("2030-01-01T00:00:00Z").unwrap())]);
        let book = book_of(prices.clone(), Some(&starts), now, &HashMap::new());
        let standings = |r: &Priced| r.versions.iter().map(|v| (v.minor.clone(), v.standing)).collect::<Vec<_>>();
        assert_eq!(
            standings(&book[0]),
            [
                ("45".to_owned(), Standing::Scheduled),
                ("40".to_owned(), Standing::InForce),
                ("35".to_owned(), Standing::Past)
            ]
        );
        assert_eq!((book[1].resource.as_str(), book[1].in_force().is_none()), ("gpu", true));
        // By the console's clock, when billing's list could not be read.
        let book = book_of(prices, None, now, &HashMap::new());
        assert_eq!(book[0].in_force().map(|v| v.minor.as_str()), Some("35"));
        assert_eq!(book[0].next().map(|v| v.minor.as_str()), Some("40"));
    }
}
