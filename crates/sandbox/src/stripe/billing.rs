//! Subscription billing on the calendar clock, as Stripe bills usage-based subscriptions:
//! periods counted from the billing cycle anchor; at each period's end a draft invoice
//! (`invoice.created`) whose metered lines are the meter's usage in the period times the
//! price's `unit_amount_decimal`, rounded half up once per line; an hour later finalisation
//! (`invoice.finalized`), counting the usage received until then, and payment with the default
//! payment method (`invoice.paid` and `invoice.payment_succeeded`, or `invoice.payment_failed`);
//! final invoices on cancellation; previews of the open period.

use super::decimal::Dec;
use super::meters;
use super::params::{embedded_list, known, s};
use super::state::{
    Answer, ApiError, Cycle, DAY, Draft, FINALIZE_AFTER, LineSpec, PendingItem, RequestCtx, State, random_id,
};
use serde_json::{Value, json};

/// The `k`-th boundary of a cycle: its anchor moved on by `k` intervals of `count`; a month
/// without the anchor's day ends on its last day, as Stripe's periods do.
pub fn boundary(anchor: i64, interval: &str, count: u32, k: i64) -> i64 {
    let steps = k.saturating_mul(i64::from(count));
    match interval {
        "day" => anchor.saturating_add(steps.saturating_mul(DAY)),
        "week" => anchor.saturating_add(steps.saturating_mul(7 * DAY)),
        unit => {
            let months = if unit == "year" { steps.saturating_mul(12) } else { steps };
            chrono::DateTime::from_timestamp(anchor, 0)
                .and_then(|t| t.checked_add_months(chrono::Months::new(u32::try_from(months).unwrap_or(0))))
                .map_or(anchor, |t| t.timestamp())
        }
    }
}

/// A price's recurring interval and count.
pub fn interval_of(price: &Value) -> (String, u32) {
    let recurring = &price["recurring"];
    let interval = recurring["interval"].as_str().unwrap_or("month").to_owned();
    let count = recurring["interval_count"].as_u64().and_then(|c| u32::try_from(c).ok()).unwrap_or(1).max(1);
    (interval, count)
}

impl Cycle {
    /// A subscription created at `created`: periods from `created` by its interval, or, with
    /// a future `anchor`, a first period up to the anchor and then from it.
    pub fn new(created: i64, anchor: Option<i64>, interval: String, count: u32) -> Self {
        match anchor {
            Some(anchor) => Self { anchor, period_start: created, period_end: anchor, next: 0, interval, count },
            None => {
                let period_end = boundary(created, &interval, count, 1);
                Self { anchor: created, period_start: created, period_end, next: 1, interval, count }
            }
        }
    }

    fn following_end(&self) -> i64 {
        boundary(self.anchor, &self.interval, self.count, self.next + 1)
    }
}

/// `amount × part / whole`, rounded half up.
pub fn prorate(amount: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return 0;
    }
    let exact = i128::from(amount) * i128::from(part.clamp(0, whole));
    let whole = i128::from(whole);
    let rounded = if exact >= 0 { (2 * exact + whole) / (2 * whole) } else { -((-2 * exact + whole) / (2 * whole)) };
    i64::try_from(rounded).unwrap_or(0)
}

impl State {
    /// Does what has fallen due on the clock, in time order, each at its own scheduled time:
    /// periods ending (a draft invoice) and drafts finalising (with payment).
    pub fn tick(&mut self) {
        let now = self.clock.now();
        loop {
            let draft = self
                .drafts
                .iter()
                .enumerate()
                .filter(|(_, d)| d.finalize_at <= now)
                .min_by_key(|(i, d)| (d.finalize_at, *i))
                .map(|(i, d)| (d.finalize_at, i));
            // Periods ending at the same time end in the order the subscriptions were made.
            let mut due: Vec<(i64, String)> = self
                .cycles
                .iter()
                .filter(|(_, c)| c.period_end <= now)
                .map(|(id, c)| (c.period_end, id.clone()))
                .collect();
            let cycle = due.iter().map(|(end, _)| *end).min().and_then(|first| {
                due.retain(|(end, _)| *end == first);
                let made = self.order.get("subscription");
                let position = |id: &String| made.and_then(|m| m.iter().position(|o| o == id)).unwrap_or(usize::MAX);
                due.into_iter().min_by_key(|(_, id)| position(id))
            });
            match (draft, cycle) {
                (Some((at, i)), cycle) if cycle.as_ref().is_none_or(|(end, ..)| at <= *end) => {
                    let draft = self.drafts.remove(i);
                    self.as_of = Some(at);
                    finalize(self, &draft.invoice, &draft.lines, None, &RequestCtx::default());
                }
                (_, Some((end, id))) => {
                    self.as_of = Some(end);
                    renew(self, &id);
                }
                _ => break,
            }
            self.as_of = None;
        }
    }
}

/// What a subscription's open period bills at its end: each metered item's usage in the
/// period (from when the item was added), each licensed item for the next period in advance,
/// and the pending invoice items.
fn period_lines(state: &State, subscription: &str, cycle: &Cycle, customer: &str) -> Vec<LineSpec> {
    let next_end = cycle.following_end();
    let mut lines: Vec<LineSpec> = state
        .items
        .get(subscription)
        .into_iter()
        .flatten()
        .filter(|item| item.removed.is_none())
        .map(|item| {
            if item.price["recurring"]["usage_type"] == "metered" {
                LineSpec::Metered {
                    item: item.id.clone(),
                    price: item.price.clone(),
                    customer: customer.to_owned(),
                    from: item.added.max(cycle.period_start),
                    to: cycle.period_end,
                }
            } else {
                let quantity = item.quantity.unwrap_or(1);
                LineSpec::Fixed {
                    item: item.id.clone(),
                    price: item.price.clone(),
                    quantity: Some(quantity),
                    from: cycle.period_end,
                    to: next_end,
                    amount: item.price["unit_amount"].as_i64().unwrap_or(0).saturating_mul(quantity),
                }
            }
        })
        .collect();
    lines.extend(state.pending_items.iter().filter(|p| p.subscription == subscription).cloned().map(LineSpec::Item));
    lines
}

/// A period has ended: the invoice for it is drafted and finalised an hour later, and the
/// subscription moves on to the next period.
fn renew(state: &mut State, subscription_id: &str) {
    let Some(cycle) = state.cycles.get(subscription_id).cloned() else { return };
    let live = state.get("subscription", "subscription", subscription_id, "subscription").ok();
    let Some(mut subscription) =
        live.filter(|s| matches!(s["status"].as_str(), Some("active" | "past_due" | "trialing")))
    else {
        state.cycles.remove(subscription_id);
        return;
    };
    let customer = subscription["customer"].as_str().unwrap_or_default().to_owned();
    let lines = period_lines(state, subscription_id, &cycle, &customer);
    state.pending_items.retain(|p| p.subscription != subscription_id);
    let next = Cycle {
        period_start: cycle.period_end,
        period_end: cycle.following_end(),
        next: cycle.next + 1,
        ..cycle.clone()
    };
    state.cycles.insert(subscription_id.to_owned(), next.clone());
    let previous =
        json!({"items": subscription["items"].clone(), "latest_invoice": subscription["latest_invoice"].clone()});
    let ctx = RequestCtx::default();
    let Ok(invoice) = open_invoice(
        state,
        subscription_id,
        "subscription_cycle",
        (cycle.period_start, cycle.period_end),
        lines,
        Finalize::AnHourLater,
        &ctx,
    ) else {
        return;
    };
    subscription["latest_invoice"] = json!(invoice);
    if let Some(items) = subscription["items"]["data"].as_array_mut() {
        for item in items {
            item["current_period_start"] = json!(next.period_start);
            item["current_period_end"] = json!(next.period_end);
        }
    }
    state.put(subscription.clone());
    state.emit("customer.subscription.updated", subscription, Some(previous), &ctx);
}

/// The price's product's name, for a line's description.
fn product_name(state: &State, price: &Value) -> String {
    let product = price["product"].as_str().unwrap_or_default();
    state.objects.get(product).and_then(|p| p["name"].as_str()).unwrap_or(product).to_owned()
}

/// The quantity a metered line bills (at most 12 decimals, as Stripe keeps a line's
/// `quantity_decimal`) and its amount: quantity × `unit_amount_decimal`, rounded half up to
/// the minor unit.
pub fn metered_amount(state: &State, price: &Value, customer: &str, from: i64, to: i64, as_of: i64) -> (Dec, i64) {
    let meter = price["recurring"]["meter"].as_str().unwrap_or_default();
    let quantity = meters::usage(state, meter, customer, from, to, as_of).round_half_up(12);
    let unit = price["unit_amount_decimal"].as_str().and_then(Dec::parse).unwrap_or_else(Dec::zero);
    let amount = quantity.mul(&unit).to_i64_rounded().unwrap_or(0);
    (quantity, amount)
}

fn render_line(
    state: &State,
    invoice: &str,
    subscription: &str,
    currency: &Value,
    spec: &LineSpec,
    as_of: i64,
) -> Value {
    let (item, price, from, to, quantity, amount, pending) = match spec {
        LineSpec::Metered { item, price, customer, from, to } => {
            let (quantity, amount) = metered_amount(state, price, customer, *from, *to, as_of);
            (item, price, *from, *to, Some(quantity), amount, None)
        }
        LineSpec::Fixed { item, price, quantity, from, to, amount } => {
            (item, price, *from, *to, quantity.map(Dec::from_i64), *amount, None)
        }
        LineSpec::Item(p) => {
            (&p.subscription_item, &p.price, p.from, p.to, Dec::parse(&p.quantity_decimal), p.amount, Some(p))
        }
    };
    let name = product_name(state, price);
    let description = match (&quantity, pending) {
        (_, Some(p)) if p.proration && p.amount < 0 => format!("Unused time on {name}"),
        (_, Some(p)) if p.proration => format!("Remaining time on {name}"),
        (Some(q), _) => format!("{q} × {name}"),
        (None, _) => name,
    };
    let parent = match pending {
        Some(p) => json!({
            "invoice_item_details": {
                "invoice_item": p.id,
                "proration": p.proration,
                "proration_details": {"credited_items": null},
                "subscription": subscription,
            },
            "subscription_item_details": null,
            "type": "invoice_item_details",
        }),
        None => json!({
            "invoice_item_details": null,
            "subscription_item_details": {
                "invoice_item": null,
                "proration": false,
                "proration_details": {"credited_items": null},
                "subscription": subscription,
                "subscription_item": item,
            },
            "type": "subscription_item_details",
        }),
    };
    let whole = quantity.as_ref().and_then(|q| q.to_string().split('.').next().and_then(|w| w.parse::<u64>().ok()));
    json!({
        "id": State::new_id("il_"),
        "object": "line_item",
        "amount": amount,
        "currency": currency,
        "description": description,
        "discount_amounts": [],
        "discountable": true,
        "discounts": [],
        "invoice": invoice,
        "livemode": false,
        "metadata": {},
        "parent": parent,
        "period": {"end": to, "start": from},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
        "quantity": whole,
        "quantity_decimal": quantity.map(|q| q.to_string()),
        "subtotal": amount,
        "taxes": [],
    })
}

/// Lines and their total as of `as_of` (metered usage received until then).
fn render_lines(
    state: &State,
    invoice: &str,
    subscription: &str,
    currency: &Value,
    specs: &[LineSpec],
    as_of: i64,
) -> (Vec<Value>, i64) {
    let lines: Vec<Value> =
        specs.iter().map(|spec| render_line(state, invoice, subscription, currency, spec, as_of)).collect();
    let total = lines.iter().filter_map(|l| l["amount"].as_i64()).sum();
    (lines, total)
}

fn with_lines(invoice: &mut Value, lines: Vec<Value>, total: i64) {
    let id = invoice["id"].as_str().unwrap_or_default().to_owned();
    invoice["lines"] = embedded_list(format!("/v1/invoices/{id}/lines"), lines);
    for key in ["amount_due", "amount_remaining", "subtotal", "subtotal_excluding_tax", "total", "total_excluding_tax"]
    {
        invoice[key] = json!(total);
    }
}

/// A draft invoice of `subscription_id` for `period` (not stored).
fn draft_invoice(
    state: &State,
    id: &str,
    subscription_id: &str,
    reason: &str,
    period: (i64, i64),
    specs: &[LineSpec],
) -> Result<Value, ApiError> {
    let subscription = state.get("subscription", "subscription", subscription_id, "subscription")?;
    let customer = subscription["customer"].as_str().unwrap_or_default().to_owned();
    let email =
        state.get("customer", "customer", &customer, "customer").map(|c| c["email"].clone()).unwrap_or(Value::Null);
    let now = state.now();
    let mut invoice = json!({
        "id": id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Hopsbridge (sandbox)",
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "attempt_count": 0,
        "attempted": false,
        "auto_advance": true,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null},
        "billing_reason": reason,
        "collection_method": subscription["collection_method"],
        "created": now,
        "currency": subscription["currency"],
        "customer": customer,
        "customer_email": email,
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "due_date": null,
        "effective_at": null,
        "hosted_invoice_url": null,
        "invoice_pdf": null,
        "issuer": {"type": "self"},
        "last_finalization_error": null,
        "lines": {},
        "livemode": false,
        "metadata": {},
        "next_payment_attempt": null,
        "number": null,
        "parent": {
            "quote_details": null,
            "subscription_details": {"metadata": subscription["metadata"], "subscription": subscription_id},
            "type": "subscription_details",
        },
        "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
        "period_end": period.1,
        "period_start": period.0,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "starting_balance": 0,
        "status": "draft",
        "status_transitions": {"finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null},
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_taxes": [],
    });
    let (lines, total) = render_lines(state, id, subscription_id, &subscription["currency"], specs, now);
    with_lines(&mut invoice, lines, total);
    Ok(invoice)
}

/// When a new invoice is finalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalize {
    /// An hour after `invoice.created`, as Stripe finalises a subscription's invoices.
    AnHourLater,
    /// At once (a subscription's first invoice), charging the default payment method.
    AtOnce,
    /// At once, with the payment's outcome chosen by a test.
    AtOnceWithOutcome(bool),
}

/// Drafts an invoice (`invoice.created`), makes it the subscription's latest, and finalises
/// it at once or an hour later. Answers its id.
pub fn open_invoice(
    state: &mut State,
    subscription_id: &str,
    reason: &str,
    period: (i64, i64),
    specs: Vec<LineSpec>,
    when: Finalize,
    ctx: &RequestCtx,
) -> Result<String, ApiError> {
    let id = State::new_id("in_");
    let invoice = draft_invoice(state, &id, subscription_id, reason, period, &specs)?;
    state.put(invoice.clone());
    state.emit("invoice.created", invoice, None, ctx);
    if let Ok(mut subscription) = state.get("subscription", "subscription", subscription_id, "subscription") {
        subscription["latest_invoice"] = json!(id);
        state.put(subscription);
    }
    match when {
        Finalize::AnHourLater => {
            let finalize_at = state.now() + FINALIZE_AFTER;
            state.drafts.push(Draft { invoice: id.clone(), finalize_at, lines: specs });
        }
        Finalize::AtOnce => finalize(state, &id, &specs, None, ctx),
        Finalize::AtOnceWithOutcome(paid) => finalize(state, &id, &specs, Some(paid), ctx),
    }
    Ok(id)
}

/// Finalises a draft with the usage received until now (`invoice.finalized`) and takes the
/// payment; `forced` decides the payment's outcome instead of the payment method.
pub fn finalize(state: &mut State, id: &str, specs: &[LineSpec], forced: Option<bool>, ctx: &RequestCtx) {
    let Ok(mut invoice) = state.get("invoice", "invoice", id, "invoice") else { return };
    if invoice["status"] != "draft" {
        return;
    }
    let now = state.now();
    let subscription =
        invoice["parent"]["subscription_details"]["subscription"].as_str().unwrap_or_default().to_owned();
    let (lines, total) = render_lines(state, id, &subscription, &invoice["currency"].clone(), specs, now);
    with_lines(&mut invoice, lines, total);
    let number = state.all_where("invoice", |i| !i["number"].is_null()).len() + 1;
    invoice["status"] = json!("open");
    invoice["number"] = json!(format!("SANDBOX-{number:04}"));
    invoice["effective_at"] = json!(now);
    invoice["status_transitions"]["finalized_at"] = json!(now);
    invoice["hosted_invoice_url"] = json!(format!("{}/i/{id}", state.base_url));
    state.put(invoice.clone());
    state.emit("invoice.finalized", invoice, None, ctx);
    pay(state, id, forced, ctx);
}

/// Whether charging the invoice's customer succeeds: a default payment method (the
/// subscription's, else the customer's) attached to the customer, not a declining card.
fn charge_succeeds(state: &State, invoice: &Value) -> bool {
    let customer = invoice["customer"].as_str().unwrap_or_default();
    let subscription = invoice["parent"]["subscription_details"]["subscription"].as_str().unwrap_or_default();
    let from_subscription = state
        .get("subscription", "subscription", subscription, "subscription")
        .ok()
        .and_then(|s| s["default_payment_method"].as_str().map(str::to_owned));
    let from_customer = state
        .get("customer", "customer", customer, "customer")
        .ok()
        .and_then(|c| c["invoice_settings"]["default_payment_method"].as_str().map(str::to_owned));
    from_subscription.or(from_customer).is_some_and(|pm| {
        !state.failing_cards.contains(&pm)
            && state
                .get("payment_method", "PaymentMethod", &pm, "payment_method")
                .is_ok_and(|m| m["customer"] == customer)
    })
}

/// Takes the payment of a finalised invoice (each attempt counted in `attempt_count`):
/// nothing to charge or a successful charge marks it paid (`invoice.paid`,
/// `invoice.payment_succeeded`, and a `past_due` subscription whose latest invoice it is turns
/// `active`); a failed one leaves it open (`invoice.payment_failed`) and the subscription
/// `past_due`.
pub fn pay(state: &mut State, id: &str, forced: Option<bool>, ctx: &RequestCtx) {
    let Ok(mut invoice) = state.get("invoice", "invoice", id, "invoice") else { return };
    let now = state.now();
    let amount = invoice["amount_due"].as_i64().unwrap_or(0);
    let succeeds = forced.unwrap_or_else(|| amount <= 0 || charge_succeeds(state, &invoice));
    invoice["attempt_count"] = json!(invoice["attempt_count"].as_i64().unwrap_or(0) + 1);
    invoice["attempted"] = json!(true);
    let subscription_id = invoice["parent"]["subscription_details"]["subscription"].as_str().map(str::to_owned);
    let subscription = subscription_id.as_deref().and_then(|s| state.get("subscription", "subscription", s, "id").ok());
    if succeeds {
        invoice["status"] = json!("paid");
        invoice["amount_paid"] = json!(amount);
        invoice["amount_remaining"] = json!(0);
        invoice["status_transitions"]["paid_at"] = json!(now);
        state.put(invoice.clone());
        state.emit("invoice.paid", invoice.clone(), None, ctx);
        state.emit("invoice.payment_succeeded", invoice, None, ctx);
        if let Some(mut subscription) = subscription.filter(|s| s["status"] == "past_due" && s["latest_invoice"] == id)
        {
            subscription["status"] = json!("active");
            state.put(subscription.clone());
            state.emit("customer.subscription.updated", subscription, Some(json!({"status": "past_due"})), ctx);
        }
    } else {
        state.put(invoice.clone());
        state.emit("invoice.payment_failed", invoice, None, ctx);
        let first = invoice_reason(state, id) == "subscription_create";
        if let Some(mut subscription) = subscription.filter(|s| s["status"] == "active") {
            // A subscription whose first payment fails never started: Stripe leaves it incomplete.
            subscription["status"] = json!(if first { "incomplete" } else { "past_due" });
            state.put(subscription.clone());
            state.emit("customer.subscription.updated", subscription, Some(json!({"status": "active"})), ctx);
        }
    }
}

fn invoice_reason(state: &State, id: &str) -> String {
    state.objects.get(id).and_then(|i| i["billing_reason"].as_str()).unwrap_or_default().to_owned()
}

/// `POST /v1/invoices/create_preview`: the invoice the subscription's open period will end
/// with, as of now (usage received so far), never stored.
pub fn create_preview(state: &State, p: &Value) -> Answer {
    known(p, &["customer", "subscription"])?;
    let customer = s(p, "customer");
    let subscription = match s(p, "subscription") {
        Some(id) => {
            let found = state
                .get("subscription", "subscription", id, "subscription")
                .map_err(|_| ApiError::no_such_param("subscription", id, "subscription"))?;
            if customer.is_some_and(|c| found["customer"] != c) {
                return Err(ApiError::invalid(
                    format!("The subscription {id} does not belong to the customer {}.", customer.unwrap_or_default()),
                    Some("subscription"),
                ));
            }
            found
        }
        None => {
            let customer = customer.ok_or_else(|| ApiError::missing_param("customer"))?;
            state
                .get("customer", "customer", customer, "customer")
                .map_err(|_| ApiError::no_such_param("customer", customer, "customer"))?;
            state
                .all_where("subscription", |x| {
                    x["customer"] == customer && state.cycles.contains_key(x["id"].as_str().unwrap_or_default())
                })
                .into_iter()
                .next()
                .ok_or_else(|| upcoming_none(customer))?
        }
    };
    let id = subscription["id"].as_str().unwrap_or_default();
    let customer = subscription["customer"].as_str().unwrap_or_default();
    let cycle =
        state.cycles.get(id).filter(|_| subscription["status"] != "canceled").ok_or_else(|| upcoming_none(customer))?;
    let specs = period_lines(state, id, cycle, customer);
    let preview_id = random_id("upcoming_in_", 24);
    let mut invoice =
        draft_invoice(state, &preview_id, id, "upcoming", (cycle.period_start, cycle.period_end), &specs)?;
    invoice["created"] = json!(cycle.period_end);
    invoice["next_payment_attempt"] = json!(cycle.period_end + FINALIZE_AFTER);
    Ok(invoice)
}

fn upcoming_none(customer: &str) -> ApiError {
    ApiError {
        code: Some("invoice_upcoming_none"),
        ..ApiError::invalid(format!("No upcoming invoices for customer: {customer}"), None)
    }
}

/// A pending invoice item of `subscription` for the usage of metered `item` in `[from, to)`,
/// received until now, billed on the subscription's next invoice.
pub fn usage_item(
    state: &State,
    subscription: &str,
    item: &str,
    price: &Value,
    customer: &str,
    from: i64,
    to: i64,
) -> PendingItem {
    let (quantity, amount) = metered_amount(state, price, customer, from, to, state.now());
    PendingItem {
        id: State::new_id("ii_"),
        subscription: subscription.to_owned(),
        subscription_item: item.to_owned(),
        price: price.clone(),
        amount,
        quantity_decimal: quantity.to_string(),
        proration: false,
        from,
        to,
    }
}

#[cfg(test)]
mod tests {
    use super::{boundary, prorate};
    use chrono::TimeZone;

    fn at(month: u32, day: u32) -> i64 {
        chrono::Utc.with_ymd_and_hms(2027, month, day, 0, 0, 0).single().map_or(0, |t| t.timestamp())
    }

    #[test]
    fn periods_count_from_the_anchor_and_short_months_end_on_their_last_day() {
        let jan31 = at(1, 31);
        let ends: Vec<i64> = (1..=3).map(|k| boundary(jan31, "month", 1, k)).collect();
        assert_eq!(ends, [at(2, 28), at(3, 31), at(4, 30)]);
        assert_eq!(boundary(jan31, "month", 3, 1), at(4, 30));
        assert_eq!(boundary(jan31, "week", 2, 1), at(2, 14));
        assert_eq!(boundary(jan31, "day", 1, 2), at(2, 2));
        assert_eq!(
            boundary(at(2, 28), "year", 1, 1),
            chrono::Utc.with_ymd_and_hms(2028, 2, 28, 0, 0, 0).single().map_or(0, |t| t.timestamp())
        );
    }

    #[test]
    fn prorations_round_half_up() {
        assert_eq!(prorate(1000, 1, 3), 333);
        assert_eq!(prorate(1000, 2, 3), 667);
        assert_eq!(prorate(5, 1, 2), 3);
        assert_eq!(prorate(-5, 1, 2), -3);
        assert_eq!(prorate(1000, 5, 0), 0);
    }
}
