//! The audit itself ([`audit`]): every owner's period checked end to end, its problems by kind
//! ([`PROBLEMS`]) and a table of every owner's figures ([`Findings`]).

use super::{
    E9, E12, E21, HYBRID_CREDITS, Kind, Owner, PATIENCE, Price, RESOURCES, STORAGE_OFFLINE_PRICE, ceil_div, cents,
    customers, day_of, day_start, decimal, fixed, half_up, in_force, int, ledger, meters, per_unit, price_book,
    samples, stripe_list, text,
};
use crate::Platform;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What one owner's proof found.
#[derive(Debug, Default)]
pub struct Row {
    pub samples: usize,
    /// Of which storage samples.
    pub storage_samples: usize,
    /// The cost of the storage samples, 10^-12 minor units.
    pub storage_cost: i128,
    /// Whether the invoice is to have a line of offline storage.
    pub storage_line: bool,
    pub member_samples: usize,
    pub entries: usize,
    /// 10^-12 minor units.
    pub samples_cost: i128,
    pub ledger_cost: i128,
    pub credits_paid: i128,
    pub deducted: i128,
    pub expected_invoice: i128,
    pub invoice: Option<i128>,
    pub invoice_status: String,
    pub meter_events: usize,
    /// The ledger's cost of every mode but free.
    pub billable: i128,
    /// The ledger's cost of prepaid windows (what credits pay, with hybrid overflow).
    pub prepaid_cost: i128,
    /// Credit left of a hybrid owner's, 10^-12 minor units.
    pub left: i128,
}

/// The kinds of problem [`audit`] counts, in the order it prints them.
pub const PROBLEMS: [&str; 21] = [
    "meter reports pending",
    "samples of no owner of the run",
    "samples missing from the ledger",
    "samples in the ledger more than once",
    "ledger entries of no sample",
    "ledger entries differing from their sample",
    "ledger entries of another mode",
    "ledger costs differing from samples × prices",
    "windows paid wrongly",
    "owners without usage",
    "owners' storage measured wrongly",
    "team members' usage not rolled up",
    "credit deductions differing from what they paid",
    "owners' views differing from the ledger",
    "invoices missing",
    "invoices differing from the ledger",
    "owner-days billing's reports differ from the ledger",
    "owner-days Stripe's meter events differ from the ledger",
    "owner-days Stripe's meter event summaries differ from the ledger",
    "meter event identifiers sent twice",
    "no storage on an invoice",
];

/// The billing period [`audit`] checks.
#[derive(Clone, Copy, Debug)]
pub struct Period {
    /// When the owners signed up: the owners' view is read from its day.
    pub from: DateTime<Utc>,
    /// Its end, the 1st of a month, 00:00 UTC: samples whose window starts before it are on
    /// its invoices.
    pub end: DateTime<Utc>,
}

/// What [`audit`] found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Each problem: its kind (one of [`PROBLEMS`]) and what it is.
    pub problems: Vec<(&'static str, String)>,
    /// A table of every owner's figures and a summary line.
    pub table: String,
}

impl Findings {
    /// Problems per kind, every kind of [`PROBLEMS`] included (zero when none).
    #[must_use]
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts: BTreeMap<&'static str, usize> = PROBLEMS.iter().map(|k| (*k, 0)).collect();
        for (kind, _) in &self.problems {
            *counts.entry(kind).or_default() += 1;
        }
        counts
    }
}

/// Checks every owner's period end to end (see the module's documentation): every problem
/// found, by kind, and the table of figures.
pub async fn audit(platform: &Platform, owners: &[Owner], period: &Period) -> Findings {
    let world = &platform.world;
    let end = period.end.timestamp();
    let customers = customers(platform).await;
    // billing has every sample of the period; Stripe has finalised every owner's invoice. What
    // is still missing then is counted below.
    let all_samples = samples(platform, end).await;
    let owners_customers: BTreeSet<String> =
        owners.iter().filter_map(|o| customers.get(&o.person.user_id.to_string()).cloned()).collect();
    let deadline = Instant::now() + PATIENCE;
    let (ledger, invoices) = loop {
        let ledger = ledger(platform, end).await;
        let invoices = world.stripe.invoices();
        let closed: BTreeSet<String> = invoices
            .iter()
            .filter(|i| i["period_end"].as_i64() == Some(end) && i["status"] != "draft")
            .filter_map(|i| i["customer"].as_str().map(str::to_owned))
            .collect();
        let settled = all_samples.iter().all(|s| ledger.contains_key(&s.id)) && owners_customers.is_subset(&closed);
        if settled || Instant::now() > deadline {
            break (ledger, invoices);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let book = price_book(platform).await;
    let prices_by_id: HashMap<&str, &Price> = book.iter().map(|p| (p.id.as_str(), p)).collect();
    let events = world.stripe.meter_events();
    let meters = meters(platform).await;
    let meter_amounts: HashMap<String, i128> = meters.iter().map(|(_, name, amount)| (name.clone(), *amount)).collect();
    let deducted: HashMap<String, i128> = platform
        .rows(
            "billing",
            &format!(
                "SELECT owner_id::text AS o, sum(amount)::text AS a FROM credit_deductions
             WHERE window_start < to_timestamp({end}) GROUP BY owner_id"
            ),
        )
        .await
        .iter()
        .map(|r| (text(r, "o"), fixed(&text(r, "a"), 12)))
        .collect();

    // billing's own record of its reports (meter_reports), where it has one: per owner, price
    // and day, the accepted revisions add up to what Stripe must bill, and none is pending.
    let has_reports =
        platform.rows("billing", "SELECT to_regclass('meter_reports')::text AS t").await[0]["t"].is_string();
    let mut reports: HashMap<String, BTreeMap<(i128, String), i128>> = HashMap::new();
    let mut pending = 0;
    if has_reports {
        let sql = "SELECT owner_id::text AS o, price_id::text AS p, day::text AS d, state AS s, delta_quanta AS q FROM meter_reports";
        for r in platform.rows("billing", sql).await {
            match text(&r, "s").as_str() {
                "accepted" => {
                    let amount = prices_by_id[text(&r, "p").as_str()].amount;
                    *reports.entry(text(&r, "o")).or_default().entry((amount, text(&r, "d"))).or_default() +=
                        int(&r, "q");
                }
                "pending" => pending += 1,
                _ => {}
            }
        }
    }

    let mut problems: Vec<(&'static str, String)> = Vec::new();
    if pending > 0 {
        problems.push(("meter reports pending", format!("{pending} meter reports still pending")));
    }
    let mut table = Vec::new();
    let known: BTreeSet<String> = owners.iter().map(|o| o.person.user_id.to_string()).collect();
    for s in all_samples.iter().filter(|s| !known.contains(&s.owner)) {
        problems.push(("samples of no owner of the run", format!("sample {} of an unknown owner {}", s.id, s.owner)));
    }
    let ledger_owned: usize = ledger.values().filter(|e| e.iter().any(|e| known.contains(&e.owner))).count();
    let sampled: BTreeSet<&str> = all_samples.iter().map(|s| s.id.as_str()).collect();
    if ledger_owned != ledger.len() || ledger.keys().any(|k| !sampled.contains(k.as_str())) {
        problems.push((
            "ledger entries of no sample",
            "the ledger holds entries that are no sample of metering's".to_owned(),
        ));
    }
    for owner in owners {
        let id = owner.person.user_id.to_string();
        let Some(customer) = customers.get(&id).cloned() else {
            problems.push(("invoices missing", format!("{}: no Stripe customer in billing", owner.username)));
            continue;
        };
        let mut row = Row::default();
        // (price id, day) → Σ integers (postpaid), Σ overflow quanta (prepaid).
        let mut postpaid: BTreeMap<(String, String), i128> = BTreeMap::new();
        let mut overflow: BTreeMap<(String, String), i128> = BTreeMap::new();
        for s in all_samples.iter().filter(|s| s.owner == id) {
            row.samples += 1;
            if s.storage {
                row.storage_samples += 1;
            }
            if owner.member.as_ref().is_some_and(|m| m.user_id.to_string() == s.user) {
                row.member_samples += 1;
            }
            let mode = match (owner.kind.mode(), owner.mode_from) {
                (Some(m), Some(from)) if s.start >= from => m,
                _ => "postpaid",
            };
            let Some(entries) = ledger.get(&s.id) else {
                problems.push((
                    "samples missing from the ledger",
                    format!("{}: sample {} not in the ledger", owner.username, s.id),
                ));
                continue;
            };
            let [entry] = entries.as_slice() else {
                problems.push((
                    "samples in the ledger more than once",
                    format!("{}: sample {} split in {} entries", owner.username, s.id, entries.len()),
                ));
                continue;
            };
            row.entries += 1;
            if entry.n != s.n || entry.owner != id || entry.start != s.start || entry.day != day_of(s.start) {
                problems.push((
                    "ledger entries differing from their sample",
                    format!("{}: entry of {} differs from its sample", owner.username, s.id),
                ));
            }
            if entry.end - entry.start != s.end - s.start {
                problems.push((
                    "ledger entries differing from their sample",
                    format!("{}: entry of {} is not one window", owner.username, s.id),
                ));
            }
            if entry.mode != mode {
                problems.push((
                    "ledger entries of another mode",
                    format!("{}: {} billed {}, expected {mode}", owner.username, s.id, entry.mode),
                ));
            }
            let mut over_cost = 0;
            for (r, resource) in RESOURCES.iter().enumerate() {
                let price = in_force(&book, resource, s.start);
                let cost = half_up(s.n[r] * price.amount, per_unit(resource, s.start));
                row.samples_cost += cost;
                if s.storage {
                    row.storage_cost += cost;
                }
                row.ledger_cost += entry.cost[r];
                if entry.mode != "free" {
                    row.billable += entry.cost[r];
                }
                if entry.mode == "prepaid" {
                    row.prepaid_cost += entry.cost[r];
                }
                if entry.price[r] != price.id || entry.cost[r] != cost {
                    problems.push((
                        "ledger costs differing from samples × prices",
                        format!(
                            "{}: {} {resource}: price {} cost {} expected {} {cost}",
                            owner.username, s.id, entry.price[r], entry.cost[r], price.id
                        ),
                    ));
                }
                let key = (price.id.clone(), entry.day.clone());
                match mode {
                    "postpaid" => *postpaid.entry(key).or_default() += s.n[r],
                    "prepaid" => {
                        *overflow.entry(key).or_default() += entry.over[r];
                        over_cost += ceil_div(entry.over[r] * price.amount, E9);
                    }
                    _ => {}
                }
            }
            row.credits_paid += entry.paid;
            if entry.unpaid != 0 {
                problems.push((
                    "windows paid wrongly",
                    format!("{}: {} unpaid {} with a card on file", owner.username, s.id, entry.unpaid),
                ));
            }
            // The hybrid rule (decision 0038): the overflow of each resource is its quantity's
            // share of what credit could not pay, in whole quanta rounded up; the credits pay
            // the rest exactly; a window credit pays nothing of overflows whole.
            let total: i128 = entry.cost.iter().sum();
            if mode == "prepaid" && entry.paid > 0 && entry.paid + over_cost != total {
                problems.push((
                    "windows paid wrongly",
                    format!(
                        "{}: {} credits {} + overflow {over_cost} != cost {total}",
                        owner.username, s.id, entry.paid
                    ),
                ));
            }
            if mode == "prepaid" && entry.paid == 0 {
                let whole: Vec<i128> = RESOURCES
                    .iter()
                    .enumerate()
                    .map(|(r, resource)| ceil_div(entry.cost[r] * E9, in_force(&book, resource, s.start).amount.max(1)))
                    .collect();
                if entry.over.as_slice() != whole.as_slice() {
                    problems.push((
                        "windows paid wrongly",
                        format!(
                            "{}: {} paid by no credit overflows {:?}, not its whole quantity {whole:?}",
                            owner.username, s.id, entry.over
                        ),
                    ));
                }
            }
            if mode != "prepaid" && (entry.paid != 0 || entry.over != [0; 5]) {
                problems.push((
                    "windows paid wrongly",
                    format!("{}: {} {mode} but paid with credits", owner.username, s.id),
                ));
            }
        }
        if row.samples == row.storage_samples {
            problems.push(("owners without usage", format!("{}: no usage measured", owner.username)));
        }
        // An empty lab is measured too: samples of zero bytes.
        if owner.stores && row.storage_cost == 0 {
            problems.push(("owners' storage measured wrongly", format!("{}: no storage measured", owner.username)));
        }
        if !owner.stores && row.storage_cost != 0 {
            problems.push((
                "owners' storage measured wrongly",
                format!("{}: storage billed of an empty lab", owner.username),
            ));
        }
        if owner.member.is_some() && row.member_samples == 0 {
            problems.push((
                "team members' usage not rolled up",
                format!("{}: no usage of the member rolled up", owner.username),
            ));
        }
        // What Stripe is told per price and day, and the invoice lines it makes of it.
        let mut told: BTreeMap<(i128, String), i128> = BTreeMap::new();
        for ((price_id, day), n) in &postpaid {
            let price = prices_by_id[price_id.as_str()];
            *told.entry((price.amount, day.clone())).or_default() +=
                half_up(n * E9, per_unit(&price.resource, day_start(day)));
        }
        for ((price_id, day), quanta) in &overflow {
            *told.entry((prices_by_id[price_id.as_str()].amount, day.clone())).or_default() += quanta;
        }
        let mut lines: BTreeMap<i128, i128> = BTreeMap::new();
        for ((amount, _), q) in &told {
            *lines.entry(*amount).or_default() += q;
        }
        let expected: BTreeMap<i128, i128> = lines
            .iter()
            .map(|(amount, q)| (*amount, half_up(q * amount, E21)))
            .filter(|(_, minor)| *minor != 0)
            .collect();
        row.expected_invoice = expected.values().sum();
        row.storage_line = expected.contains_key(&fixed(STORAGE_OFFLINE_PRICE, 12));
        row.deducted = deducted.get(&id).copied().unwrap_or(0);
        match owner.kind {
            Kind::Prepaid => {
                if row.deducted != row.credits_paid || row.credits_paid != row.prepaid_cost {
                    problems.push((
                        "credit deductions differing from what they paid",
                        format!(
                            "{}: deducted {} credits paid {} cost of prepaid windows {}",
                            owner.username, row.deducted, row.credits_paid, row.prepaid_cost
                        ),
                    ));
                }
            }
            Kind::Hybrid => {
                // Spent down to less than one quantum of each resource: overflow is rounded up
                // to whole quanta, so the last window credit shares can leave a fraction.
                let quantum: i128 = RESOURCES
                    .iter()
                    .map(|r| {
                        book.iter().filter(|p| p.resource == *r).map(|p| ceil_div(p.amount, E9)).max().unwrap_or(0)
                    })
                    .sum();
                let left = i128::from(HYBRID_CREDITS) * E12 - row.deducted;
                row.left = left;
                if row.deducted != row.credits_paid || !(0..quantum).contains(&left) {
                    problems.push((
                        "credit deductions differing from what they paid",
                        format!(
                            "{}: deducted {} credits paid {} of {HYBRID_CREDITS} bought",
                            owner.username, row.deducted, row.credits_paid
                        ),
                    ));
                }
            }
            _ => {
                if row.deducted != 0 {
                    problems.push((
                        "credit deductions differing from what they paid",
                        format!("{}: credits deducted without credits", owner.username),
                    ));
                }
            }
        }
        // The owner's view of the period: the ledger's cost and credits, unrounded.
        let path = format!("/api/billing/usage?from={}&to={}", day_of(period.from.timestamp()), day_of(end - 1));
        let (status, view) = platform.call("GET", &path, &owner.person.token, None).await;
        let figure = |k: &str| view["range"][k].as_str().map(|v| fixed(v, 12));
        if status != 200 || figure("cost") != Some(row.billable) || figure("credits_paid") != Some(row.credits_paid) {
            problems.push((
                "owners' views differing from the ledger",
                format!(
                    "{}: the owner's view {status} {}, the ledger's cost {} and credits {}",
                    owner.username, view["range"], row.billable, row.credits_paid
                ),
            ));
        }
        // Stripe's invoice for the period.
        let invoice =
            invoices.iter().find(|i| i["customer"] == customer.as_str() && i["period_end"].as_i64() == Some(end));
        match invoice {
            None => problems.push(("invoices missing", format!("{}: no invoice for the period", owner.username))),
            Some(invoice) => {
                row.invoice_status = invoice["status"].as_str().unwrap_or_default().to_owned();
                let got: BTreeMap<i128, i128> = invoice["lines"]["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|l| l["amount"].as_i64().is_some_and(|a| a != 0))
                    .map(|l| {
                        let amount = l["pricing"]["unit_amount_decimal"].as_str().map_or(0, |a| fixed(a, 12));
                        (amount, int(l, "amount"))
                    })
                    .collect();
                row.invoice = Some(got.values().sum());
                if got != expected {
                    problems.push((
                        "invoices differing from the ledger",
                        format!(
                            "{}: invoice lines (unit amount ×1e12 → cents) {got:?}, expected {expected:?}",
                            owner.username
                        ),
                    ));
                }
            }
        }
        // Stripe counted each day's quantity once: its meter events per price and day add up.
        let mut counted: BTreeMap<(i128, String), i128> = BTreeMap::new();
        for e in events.iter().filter(|e| e["payload"]["stripe_customer_id"] == customer.as_str()) {
            row.meter_events += 1;
            let price = meter_amounts.get(e["event_name"].as_str().unwrap_or_default()).copied().unwrap_or(-1);
            let day = day_of(e["timestamp"].as_i64().unwrap_or_default());
            let value = e["payload"]["value"].as_str().map_or(0, |v| fixed(v, 9));
            if day.as_str() < day_of(end).as_str() {
                *counted.entry((price, day)).or_default() += value;
            }
        }
        told.retain(|_, q| *q != 0);
        counted.retain(|_, q| *q != 0);
        let mut reported = reports.get(&id).cloned().unwrap_or_default();
        reported.retain(|(_, day), _| day.as_str() < day_of(end).as_str());
        if has_reports && reported != told {
            problems.push((
                "owner-days billing's reports differ from the ledger",
                format!(
                    "{}: billing's accepted reports per (unit amount, day) {:?}, the ledger says {told:?}",
                    owner.username, reported
                ),
            ));
        }
        if counted != told {
            problems.push((
                "owner-days Stripe's meter events differ from the ledger",
                format!(
                    "{}: Stripe counted per (unit amount, day) {counted:?}, the ledger says {told:?}",
                    owner.username
                ),
            ));
        }
        // Stripe's meter event summaries per meter and UTC day add up to the same.
        let mut summed: BTreeMap<(i128, String), i128> = BTreeMap::new();
        let from = day_start(&day_of(period.from.timestamp()));
        for (meter, _, amount) in &meters {
            let path = format!(
                "billing/meters/{meter}/event_summaries?customer={customer}&start_time={from}&end_time={end}&value_grouping_window=day"
            );
            for s in stripe_list(platform, &path).await {
                let day = day_of(s["start_time"].as_i64().unwrap_or_default());
                *summed.entry((*amount, day)).or_default() += decimal(&s["aggregated_value"], 9);
            }
        }
        summed.retain(|_, q| *q != 0);
        if summed != told {
            problems.push((
                "owner-days Stripe's meter event summaries differ from the ledger",
                format!(
                    "{}: Stripe's summaries per (unit amount, day) {summed:?}, the ledger says {told:?}",
                    owner.username
                ),
            ));
        }
        table.push((owner, row));
    }
    if owners.iter().any(|o| o.stores) && !table.iter().any(|(_, row)| row.storage_line) {
        problems.push(("no storage on an invoice", "no owner's storage reached an invoice".to_owned()));
    }
    let mut identifiers: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *identifiers.entry(e["identifier"].as_str().unwrap_or_default()).or_default() += 1;
    }
    let repeated = identifiers.values().filter(|n| **n > 1).count();
    for (identifier, n) in identifiers.iter().filter(|(_, n)| **n > 1) {
        problems.push((
            "meter event identifiers sent twice",
            format!("meter event identifier {identifier} sent {n} times"),
        ));
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:>7} {:>7} {:>7} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12} {:>9} {:>6}",
        "owner",
        "kind",
        "samples",
        "storage",
        "entries",
        "member",
        "samples ¢",
        "storage ¢",
        "ledger ¢",
        "credits ¢",
        "deducted ¢",
        "expected ¢",
        "invoice ¢",
        "status",
        "events"
    );
    for (owner, row) in &table {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:>7} {:>7} {:>7} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12} {:>9} {:>6}",
            owner.username,
            owner.kind.name(),
            row.samples,
            row.storage_samples,
            row.entries,
            row.member_samples,
            cents(row.samples_cost, 12),
            cents(row.storage_cost, 12),
            cents(row.ledger_cost, 12),
            cents(row.credits_paid, 12),
            cents(row.deducted, 12),
            cents(row.expected_invoice * 100, 2),
            row.invoice.map_or("-".to_owned(), |i| cents(i * 100, 2)),
            row.invoice_status,
            row.meter_events
        );
    }
    for (owner, row) in table.iter().filter(|(_, r)| r.left != 0) {
        let _ = writeln!(out, "{}: credit left after overflow {} × 10^-12 minor units", owner.username, row.left);
    }
    let _ = writeln!(
        out,
        "{} owners, {} samples, {} ledger entries, {} meter events ({} identifiers repeated), {} invoices",
        owners.len(),
        all_samples.len(),
        ledger.len(),
        events.len(),
        repeated,
        invoices.iter().filter(|i| i["period_end"].as_i64() == Some(end)).count(),
    );
    Findings { problems, table: out }
}
