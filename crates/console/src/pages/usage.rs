//! Usage and cost: the month's charts and tables per resource (CPU, memory, GPUs and storage),
//! for an owner their costs, upcoming invoice and each team member's share, which links down
//! (by the member's address, never an id) to that member's days and the samples behind each;
//! a storage day links to its storage samples.
//!
//! Each row of the projects table links to the page narrowed to that project
//! (`?project=<its name as the table shows it>`, keeping `member` and `month`): the same charts,
//! days, people and (owners) costs, of that project's usage only. Billing's lines name a project
//! by Hopsworks' numeric id alone, so an owner's projects are "Project <id>" (and "Outside any
//! project" for namespaces of no known project); a member's are the namespaces of
//! `GET /api/usage`. A project is known when the month shown has usage in it; any other is 404.
//! An owner's narrowed day links to that day's samples of the project (and of the member picked):
//! `/usage/{day}?project=<name>` asks billing for them by `project_id` (the id of "Project 7", or
//! `none` for "Outside any project"), and keeps the project in its next-page and back links.
//! A day's samples come a thousand to a page, numbered (`?page=2`), so that a page's address
//! holds nothing but the day, the member's address, the project's name and the page.

use super::{Ctx, Data, Layout, currency, render};
use crate::chart::{self, Bar};
use crate::{api, format};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{Datelike as _, NaiveDate};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};

/// Samples on a page of a day.
const DAY_PAGE: u32 = 1000;

/// The last page of a day that can be asked for (billing skips at most a million entries).
const LAST_DAY_PAGE: u32 = 1001;

/// The resources charted, as [`format::shown_as`] names them.
const RESOURCES: [&str; 4] = ["cpu", "memory", "gpu", "storage"];

/// A row of a usage table: a project or a person, with their quantities and cost.
#[derive(Debug, Default)]
struct UsageRow {
    name: String,
    /// Where the row's usage is shown on its own (a member's days and samples).
    href: Option<String>,
    cpu: Decimal,
    memory: Decimal,
    gpu: Decimal,
    /// Offline and online storage, GB-months.
    storage: Decimal,
    cost: Decimal,
}

impl UsageRow {
    fn add(&mut self, resource: &str, quantity: Decimal, cost: Decimal) {
        match format::shown_as(resource) {
            "cpu" => self.cpu += quantity,
            "memory" => self.memory += quantity,
            "gpu" => self.gpu += quantity,
            "storage" => self.storage += quantity,
            _ => {}
        }
        self.cost += cost;
    }
}

/// A resource's daily chart.
#[derive(Debug)]
struct Chart {
    heading: String,
    total: String,
    /// The resource's cost in the range (owners only).
    cost: Option<String>,
    svg: String,
}

/// One link of the month picker.
#[derive(Debug)]
struct MonthLink {
    value: String,
    label: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    l: Layout,
    owner: bool,
    month_label: String,
    months: Vec<MonthLink>,
    charts: Vec<Chart>,
    days: Vec<(Option<String>, String)>,
    projects: Vec<UsageRow>,
    members: Vec<UsageRow>,
    currency: String,
    month_cost: String,
    range_cost: String,
    credits_paid: String,
    cap: Option<String>,
    invoice: Option<api::UpcomingInvoice>,
    /// The one person whose usage an owner is looking at, when they picked one.
    focus: Option<Focus>,
    /// The one project the page is narrowed to, when one was picked.
    project: Option<ProjectFocus>,
}

/// The project a usage page is narrowed to.
#[derive(Debug)]
struct ProjectFocus {
    /// Its name as the projects table shows it (and `?project=` gives it).
    name: String,
    /// The page of every project, keeping the person and the month.
    all: String,
    /// Its cost in the range shown, of the person picked when one was (owners only).
    cost: Option<String>,
}

/// One person of an owner's account, as the usage pages pick them: by address.
#[derive(Debug, Clone)]
struct Person {
    user_id: String,
    email: String,
    name: String,
}

/// The person an owner's usage page is narrowed to.
#[derive(Debug)]
struct Focus {
    name: String,
    email: String,
    /// Their cost in the range shown.
    cost: String,
}

/// The owner (first) and their team's members, by address.
async fn people(ctx: &Ctx<'_>) -> Vec<Person> {
    let mut people = Vec::new();
    if let Ok(me) = ctx.get("/api/me").await.json::<api::Me>() {
        let name = format!("You ({})", me.email);
        people.push(Person { user_id: me.id, email: me.email, name });
    }
    let answer = ctx.get("/api/team").await;
    if let Some(team) = answer.is_success().then(|| answer.json::<api::Team>().ok()).flatten() {
        people.extend(team.members.into_iter().filter_map(|m| {
            let email = m.email?;
            let name = if m.name.is_empty() { email.clone() } else { m.name };
            Some(Person { user_id: m.user_id, email, name })
        }));
    }
    people
}

/// The person `?member=` names, when it names one of `people`; `Err` when it names nobody.
fn focus_of<'p>(query: &HashMap<String, String>, people: &'p [Person]) -> Result<Option<&'p Person>, ()> {
    match query.get("member").map(|m| m.trim()).filter(|m| !m.is_empty()) {
        None => Ok(None),
        Some(email) => people.iter().find(|p| p.email.eq_ignore_ascii_case(email)).map(Some).ok_or(()),
    }
}

/// The project `?project=` names (trimmed), when it names one.
fn project_of(query: &HashMap<String, String>) -> Option<&str> {
    query.get("project").map(|p| p.trim()).filter(|p| !p.is_empty())
}

/// An owner's project as the projects table names it: billing's lines carry Hopsworks'
/// numeric project id only.
fn project_name(project_id: Option<i64>) -> String {
    project_id.map_or_else(|| "Outside any project".to_owned(), |id| format!("Project {id}"))
}

/// The project an owner's `name` is ([`project_name`]'s inverse): `Some(None)` for "Outside any
/// project", `Some(Some(id))` for "Project <id>" exactly as the page writes it, `None` for any
/// other name.
fn project_id_of(name: &str) -> Option<Option<i64>> {
    if name == project_name(None) {
        return Some(None);
    }
    let id = name.strip_prefix("Project ")?.parse::<i64>().ok().filter(|id| *id > 0)?;
    (project_name(Some(id)) == name).then_some(Some(id))
}

/// Where a page narrowed to `project` is, in words after "Usage": "in Project 7", "outside any
/// project" (an owner's), "in project lab" (a member's namespace).
fn in_project(project: &str, owner: bool) -> String {
    if owner && project == project_name(None) {
        "outside any project".to_owned()
    } else if owner {
        format!("in {project}")
    } else {
        format!("in project {project}")
    }
}

/// The pairs of `pairs` whose value is given.
fn given<'a>(pairs: &[(&'a str, Option<&'a str>)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().filter_map(|&(k, v)| Some((k, v?))).collect()
}

/// `path` with the pairs of `pairs` whose value is given as its query.
fn with_given(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let query = given(pairs);
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", serde_urlencoded::to_string(query).unwrap_or_default())
    }
}

/// The usage page narrowed to `member` and `project` when given, of `month` when given.
fn usage_href(member: Option<&str>, project: Option<&str>, month: Option<&str>) -> String {
    with_given("/usage", &[("member", member), ("project", project), ("month", month)])
}

/// The console's page of `day`'s samples: of one member when `member` names them, of one
/// project when `project` names it (as the usage page does), of one source (`storage`) when
/// `source` names it.
fn day_href(day: NaiveDate, member: Option<&str>, project: Option<&str>, source: Option<&str>) -> String {
    with_given(&format!("/usage/{day}"), &[("member", member), ("project", project), ("source", source)])
}

/// The source of samples a storage figure links down to.
fn source_of(resource: &str) -> Option<&'static str> {
    (resource == "storage").then_some("storage")
}

impl UsagePage {
    fn money(&self, minor: &i64) -> String {
        format::minor(*minor, &self.currency)
    }

    fn cost(&self, exact: &Decimal) -> String {
        format::minor_decimal(&exact.to_string(), &self.currency)
    }

    fn q(&self, value: &Decimal) -> String {
        format::quantity(&value.to_string(), 3)
    }

    fn storage(&self, value: &Decimal) -> String {
        format::quantity(&value.to_string(), format::places("storage"))
    }

    fn unit(&self, resource: &str) -> &'static str {
        format::unit(resource)
    }

    fn resource(&self, resource: &str) -> &'static str {
        format::resource_name(resource)
    }
}

fn parse_month(value: Option<&String>) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{}-01", value?), "%Y-%m-%d").ok()
}

fn month_end(first: NaiveDate) -> NaiveDate {
    first.checked_add_months(chrono::Months::new(1)).and_then(|d| d.pred_opt()).unwrap_or(first)
}

/// The month picker: the twelve months up to `current` (the newest with usage possible).
fn months(shown: NaiveDate, current: NaiveDate) -> Vec<MonthLink> {
    (0..12)
        .filter_map(|back| current.checked_sub_months(chrono::Months::new(back)))
        .map(|m| MonthLink {
            value: m.format("%Y-%m").to_string(),
            label: m.format("%B %Y").to_string(),
            current: m == shown,
        })
        .collect()
}

/// Where an owner's figures link down to: the samples of a day, of the person and the project
/// they are looking at when they picked them. Members have no samples page (decision 0049).
#[derive(Debug, Clone, Copy)]
struct Links<'a> {
    member: Option<&'a str>,
    project: Option<&'a str>,
}

/// The days of `from..=to`, each with its value per resource summed from `per_day`.
fn daily_bars(
    resource: &str,
    from: NaiveDate,
    to: NaiveDate,
    per_day: &BTreeMap<(NaiveDate, String), Decimal>,
    links: Option<Links<'_>>,
) -> Vec<Bar> {
    from.iter_days()
        .take_while(|d| *d <= to)
        .map(|day| {
            let value = per_day.get(&(day, resource.to_owned())).copied().unwrap_or_default();
            Bar {
                label: day.format("%-d").to_string(),
                value,
                title: format!(
                    "{}: {} {}",
                    day.format("%-d %B"),
                    format::quantity(&value.to_string(), format::places(resource)),
                    format::unit(resource)
                ),
                href: links.map(|l| day_href(day, l.member, l.project, source_of(resource))),
            }
        })
        .collect()
}

pub(super) async fn usage(data: Data, req: HttpRequest, query: web::Query<HashMap<String, String>>) -> HttpResponse {
    let ctx = ctx!(data, req);
    let asked = parse_month(query.get("month"));
    let month = asked.map(|m| m.format("%Y-%m").to_string());
    let range = asked.map(|first| format!("from={first}&to={}", month_end(first)));
    let project = project_of(&query);
    let mut per_day: BTreeMap<(NaiveDate, String), Decimal> = BTreeMap::new();
    let mut page = UsagePage {
        l: ctx.layout("Usage and cost", "/usage"),
        owner: ctx.viewer.owner,
        month_label: String::new(),
        months: Vec::new(),
        charts: Vec::new(),
        days: Vec::new(),
        projects: Vec::new(),
        members: Vec::new(),
        currency: String::new(),
        month_cost: String::new(),
        range_cost: String::new(),
        credits_paid: String::new(),
        cap: None,
        invoice: None,
        focus: None,
        project: None,
    };
    let (from, to, current);
    // An owner's links down to a day keep the person they are looking at.
    let mut focus_email = None;
    let mut cost_of: Option<BTreeMap<&str, Decimal>> = None;
    if ctx.viewer.owner {
        let path =
            range.as_ref().map_or_else(|| "/api/billing/usage".to_owned(), |r| format!("/api/billing/usage?{r}"));
        let usage: api::OwnerUsage = tri!(ctx.fetch(&path).await);
        let people = people(&ctx).await;
        let Ok(focus) = focus_of(&query, &people) else {
            return ctx.error(404, "not_found");
        };
        // A project is one the account used in the month shown (whoever used it).
        if project.is_some_and(|p| !usage.lines.iter().any(|l| project_name(l.project_id) == p)) {
            return ctx.error(404, "not_found");
        }
        page.currency = currency(&ctx).await;
        from = usage.range.from;
        to = asked.map_or(usage.range.to, month_end);
        current = usage.month_to_date.from;
        let (mut projects, mut members): (BTreeMap<String, UsageRow>, BTreeMap<String, UsageRow>) = Default::default();
        let mut narrowed_cost = Decimal::ZERO;
        let mut costs: BTreeMap<&str, Decimal> = BTreeMap::new();
        let email = focus.map(|p| p.email.as_str());
        for (line, name) in usage
            .lines
            .iter()
            .map(|l| (l, project_name(l.project_id)))
            .filter(|(l, name)| focus.is_none_or(|f| f.user_id == l.user_id) && project.is_none_or(|p| p == name))
        {
            let quantity = format::parse(&line.quantity).unwrap_or_default();
            let cost = format::parse(&line.cost).unwrap_or_default();
            let shown = format::shown_as(&line.resource);
            *per_day.entry((line.day, shown.to_owned())).or_default() += quantity;
            if let Some(r) = RESOURCES.iter().find(|r| **r == shown) {
                *costs.entry(r).or_default() += cost;
            }
            projects
                .entry(name.clone())
                .or_insert_with(|| UsageRow {
                    // A project's row links to its page, unless this is that page.
                    href: project.is_none().then(|| usage_href(email, Some(&name), month.as_deref())),
                    name,
                    ..UsageRow::default()
                })
                .add(&line.resource, quantity, cost);
            narrowed_cost += cost;
            let who = people.iter().find(|p| p.user_id == line.user_id);
            let name = who.map_or_else(|| "Former members".to_owned(), |p| p.name.clone());
            let href = who.map(|p| usage_href(Some(&p.email), project, month.as_deref()));
            members.entry(name.clone()).or_insert_with(|| UsageRow { name, href, ..UsageRow::default() }).add(
                &line.resource,
                quantity,
                cost,
            );
        }
        cost_of = Some(costs);
        let narrowed_cost = format::minor_decimal(&narrowed_cost.to_string(), &page.currency);
        if let Some(person) = focus {
            focus_email = Some(person.email.clone());
            page.l.title = format!("Usage of {}", person.name);
            page.focus =
                Some(Focus { name: person.name.clone(), email: person.email.clone(), cost: narrowed_cost.clone() });
        }
        if let Some(p) = project {
            page.l.title = match focus {
                Some(person) => format!("Usage of {} {}", person.name, in_project(p, true)),
                None => format!("Usage {}", in_project(p, true)),
            };
            page.project = Some(ProjectFocus {
                name: p.to_owned(),
                all: usage_href(email, None, month.as_deref()),
                cost: Some(narrowed_cost),
            });
        }
        page.projects = projects.into_values().collect();
        page.members = members.into_values().collect();
        page.month_cost = format::minor(usage.month_to_date.cost_minor, &page.currency);
        page.range_cost = format::minor(usage.range.cost_minor, &page.currency);
        page.credits_paid = format::minor_decimal(&usage.range.credits_paid, &page.currency);
        page.cap = usage.monthly_cap_minor.map(|c| format::minor(c, &page.currency));
        page.invoice = Some(usage.upcoming_invoice);
    } else {
        let path = range.as_ref().map_or_else(|| "/api/usage".to_owned(), |r| format!("/api/usage?{r}"));
        let rows: Vec<api::DailyUsage> = tri!(ctx.fetch(&path).await);
        // A member's project is a namespace they used in the range shown.
        if project.is_some_and(|p| !rows.iter().any(|r| r.namespace == p)) {
            return ctx.error(404, "not_found");
        }
        let mut projects: BTreeMap<String, UsageRow> = BTreeMap::new();
        for row in rows.iter().filter(|r| project.is_none_or(|p| p == r.namespace)) {
            for (resource, value) in [
                ("cpu", &row.cpu_core_hours),
                ("memory", &row.memory_gib_hours),
                ("gpu", &row.gpu_hours),
                ("storage", &row.storage_gb_months),
            ] {
                let quantity = format::parse(value).unwrap_or_default();
                *per_day.entry((row.day, resource.to_owned())).or_default() += quantity;
                projects
                    .entry(row.namespace.clone())
                    .or_insert_with(|| UsageRow {
                        name: row.namespace.clone(),
                        href: project.is_none().then(|| usage_href(None, Some(&row.namespace), month.as_deref())),
                        ..UsageRow::default()
                    })
                    .add(resource, quantity, Decimal::ZERO);
            }
        }
        if let Some(p) = project {
            page.l.title = format!("Usage {}", in_project(p, false));
            page.project =
                Some(ProjectFocus { name: p.to_owned(), all: usage_href(None, None, month.as_deref()), cost: None });
        }
        page.projects = projects.into_values().collect();
        // The range is the month asked for, or the 30 days up to their newest usage (of any
        // project, so that a project's page shows the days the whole page would).
        let newest = rows.iter().map(|r| r.day).max();
        to = asked.map_or_else(|| newest.unwrap_or_else(|| chrono::Utc::now().date_naive()), month_end);
        from = asked.unwrap_or_else(|| to - chrono::TimeDelta::days(30));
        current = to.with_day(1).unwrap_or(to);
    }
    page.month_label = match asked {
        Some(first) => first.format("%B %Y").to_string(),
        None if ctx.viewer.owner => format!("{} (this month, to {})", from.format("%B %Y"), to.format("%-d %B")),
        None => format!("{} to {}", from.format("%-d %B %Y"), to.format("%-d %B %Y")),
    };
    page.months = months(asked.unwrap_or(from.with_day(1).unwrap_or(from)), current);
    let links = ctx.viewer.owner.then_some(Links { member: focus_email.as_deref(), project });
    // What a chart is of, for its label: the whole page's or one project's days.
    let scope =
        page.project.as_ref().map(|p| format!(" {}", in_project(&p.name, ctx.viewer.owner))).unwrap_or_default();
    for resource in RESOURCES {
        let bars = daily_bars(resource, from, to, &per_day, links);
        let total: Decimal = bars.iter().map(|b| b.value).sum();
        let heading = format!("{} ({})", format::resource_name(resource), format::unit(resource));
        page.charts.push(Chart {
            svg: chart::bars(&format!("{heading} per day{scope}"), &bars),
            total: format!(
                "{} {}",
                format::quantity(&total.to_string(), format::places(resource)),
                format::unit(resource)
            ),
            cost: cost_of.as_ref().map(|c| {
                format::minor_decimal(&c.get(resource).copied().unwrap_or_default().to_string(), &page.currency)
            }),
            heading,
        });
    }
    page.days = from
        .iter_days()
        .take_while(|d| *d <= to)
        .filter(|d| RESOURCES.iter().any(|r| per_day.get(&(*d, (*r).to_owned())).is_some_and(|v| !v.is_zero())))
        .map(|d| {
            let q = |r: &str| {
                let value = per_day.get(&(d, r.to_owned())).copied().unwrap_or_default();
                format::quantity(&value.to_string(), format::places(r))
            };
            (
                links.map(|l| day_href(d, l.member, l.project, None)),
                format!(
                    "{} · CPU {} · memory {} · GPU {} · storage {}",
                    d.format("%-d %B"),
                    q("cpu"),
                    q("memory"),
                    q("gpu"),
                    q("storage")
                ),
            )
        })
        .collect();
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "usage_day.html")]
struct DayPage {
    l: Layout,
    day: String,
    samples: Vec<api::Sample>,
    /// Where the previous page is, on any page but the first.
    previous: Option<String>,
    /// Where the next page is, when there are more samples.
    next: Option<String>,
    currency: String,
    total_cost: String,
    /// Where "back" goes: the account's usage, or the member's it came from.
    back: String,
    /// The person the samples are narrowed to, when an owner picked one.
    member: Option<String>,
    /// Where the samples are, in words ("in Project 7", "outside any project"), when they are
    /// narrowed to a project.
    project: Option<String>,
    /// Pods' figures are shown (not when only storage is asked for).
    pods: bool,
    /// Storage figures are shown (not when only pods' usage is asked for).
    storage: bool,
}

impl DayPage {
    fn cost(&self, exact: &str) -> String {
        format::minor_decimal(exact, &self.currency)
    }

    fn q(&self, value: &str) -> String {
        format::quantity(value, 4)
    }

    /// A sample's offline and online storage together, GB-months.
    fn stored(&self, s: &api::Sample) -> String {
        let gb_months = [&s.storage_offline_gb_months, &s.storage_online_gb_months]
            .into_iter()
            .filter_map(|v| format::parse(v))
            .sum::<Decimal>();
        format::quantity(&gb_months.to_string(), format::places("storage"))
    }

    fn source(&self, source: &str) -> &'static str {
        if source == "storage" { "Storage" } else { "Pods" }
    }

    fn window(&self, start: &str, end: &str) -> String {
        let time = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t).map_or_else(|_| t.to_owned(), |t| t.format("%H:%M").to_string())
        };
        format!("{}–{}", time(start), time(end))
    }
}

pub(super) async fn usage_day(
    data: Data,
    req: HttpRequest,
    day: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let ctx = ctx!(data, req);
    tri!(ctx.owner_only());
    let Ok(day) = NaiveDate::parse_from_str(&day, "%Y-%m-%d") else {
        return ctx.error(404, "not_found");
    };
    let source = match query.get("source").map(String::as_str) {
        None => None,
        Some(s @ ("usage" | "storage")) => Some(s),
        Some(_) => return ctx.error(404, "not_found"),
    };
    // A project is named as the usage page names it, and is one the day's month has usage in
    // (as the usage page it came from, and goes back to, knows it).
    let project = project_of(&query);
    let project_id = match project {
        None => None,
        Some(name) => {
            let Some(id) = project_id_of(name) else {
                return ctx.error(404, "not_found");
            };
            let month = day.with_day(1).unwrap_or(day);
            let path = format!("/api/billing/usage?from={month}&to={}", month_end(month));
            let usage: api::OwnerUsage = tri!(ctx.fetch(&path).await);
            if !usage.lines.iter().any(|l| l.project_id == id) {
                return ctx.error(404, "not_found");
            }
            Some(id.map_or_else(|| "none".to_owned(), |id| id.to_string()))
        }
    };
    let page_number = match query.get("page").map(|p| p.parse::<u32>()) {
        None => 1,
        Some(Ok(n)) if (1..=LAST_DAY_PAGE).contains(&n) => n,
        Some(_) => return ctx.error(404, "not_found"),
    };
    let people = if query.contains_key("member") { people(&ctx).await } else { Vec::new() };
    let Ok(focus) = focus_of(&query, &people) else {
        return ctx.error(404, "not_found");
    };
    // The API narrows the day to the member, the project and the source: its pages and cursor
    // are theirs.
    let day_text = day.to_string();
    let (limit, offset) = (DAY_PAGE.to_string(), ((page_number - 1) * DAY_PAGE).to_string());
    let mut api_query = vec![("day", day_text.as_str()), ("limit", limit.as_str())];
    api_query.extend(focus.map(|p| ("user_id", p.user_id.as_str())));
    api_query.extend(project_id.as_deref().map(|p| ("project_id", p)));
    api_query.extend(source.map(|s| ("source", s)));
    api_query.extend((page_number > 1).then_some(("offset", offset.as_str())));
    let path = format!("/api/billing/usage/samples?{}", serde_urlencoded::to_string(&api_query).unwrap_or_default());
    let samples: api::Samples = tri!(ctx.fetch(&path).await);
    let currency = currency(&ctx).await;
    let total: Decimal = samples.samples.iter().filter_map(|s| format::parse(&s.cost)).sum();
    // What the page's own links keep: the member, the project and the source.
    let keep = given(&[("member", focus.map(|p| p.email.as_str())), ("project", project), ("source", source)]);
    let what = match source {
        Some("storage") => "Storage",
        Some(_) => "Pods' usage",
        None => "Usage",
    };
    let where_ = project.map(|p| in_project(p, true));
    let title = format!(
        "{what}{}{} on {}",
        focus.map(|p| format!(" of {}", p.name)).unwrap_or_default(),
        where_.as_ref().map(|w| format!(" {w}")).unwrap_or_default(),
        day.format("%-d %B %Y")
    );
    let month = day.format("%Y-%m").to_string();
    let page = DayPage {
        l: ctx.layout(&title, "/usage"),
        day: samples.day.to_string(),
        total_cost: format::minor_decimal(&total.to_string(), &currency),
        previous: (page_number > 1).then(|| page_href(day, &keep, page_number - 1)),
        next: (samples.next.is_some() && page_number < LAST_DAY_PAGE).then(|| page_href(day, &keep, page_number + 1)),
        back: usage_href(focus.map(|p| p.email.as_str()), project, Some(&month)),
        member: focus.map(|p| p.name.clone()),
        project: where_,
        pods: source != Some("storage"),
        storage: source != Some("usage"),
        samples: samples.samples,
        currency,
    };
    render(StatusCode::OK, &page)
}

/// Where page `n` of `day` is: with what the page keeps, and the page's number unless it is the
/// first.
fn page_href(day: NaiveDate, keep: &[(&str, &str)], n: u32) -> String {
    let number = n.to_string();
    let mut pairs: Vec<(&str, Option<&str>)> = keep.iter().map(|&(k, v)| (k, Some(v))).collect();
    pairs.push(("page", (n > 1).then_some(number.as_str())));
    with_given(&format!("/usage/{day}"), &pairs)
}
