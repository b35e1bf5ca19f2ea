//! Subscriptions, their items, their cancellation (with a final invoice), and invoices a test
//! makes.

use super::billing::{Finalize, boundary, interval_of, open_invoice, prorate, usage_item};
use super::params::{boolean, embedded_list, integer, known, list, metadata, one_of, required, s};
use super::state::{Answer, ApiError, Cycle, ItemRecord, LineSpec, PendingItem, RequestCtx, State};
use serde_json::{Value, json};

fn plan_of(price: &Value) -> Value {
    json!({
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": price["recurring"]["interval"],
        "interval_count": price["recurring"]["interval_count"],
        "livemode": false,
        "metadata": price["metadata"],
        "meter": price["recurring"]["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": price["recurring"]["usage_type"],
    })
}

/// The subscription item prices must agree on: currency and recurring interval.
#[derive(Default)]
struct Terms {
    currency: Option<Value>,
    interval: Option<(String, u32)>,
}

/// The recurring price `price_id` (parameter `param`), if it fits `terms` (which it sets when
/// empty).
fn item_price(state: &State, price_id: &str, param: &str, terms: &mut Terms) -> Result<Value, ApiError> {
    let price =
        state.get("price", "price", price_id, param).map_err(|_| ApiError::no_such_param("price", price_id, param))?;
    if price["type"] != "recurring" {
        return Err(ApiError::invalid(
            format!(
                "The price specified ({price_id}) is set to `type=one_time` but this field only accepts prices with `type=recurring`."
            ),
            Some(param),
        ));
    }
    match &terms.currency {
        Some(c) if *c != price["currency"] => {
            return Err(ApiError::invalid("All prices on a subscription must have the same currency.", Some(param)));
        }
        _ => terms.currency = Some(price["currency"].clone()),
    }
    let interval = interval_of(&price);
    match &terms.interval {
        Some(i) if *i != interval => {
            return Err(ApiError::invalid(
                "Currency and interval fields must match across all plans on this subscription.",
                Some(param),
            ));
        }
        _ => terms.interval = Some(interval),
    }
    Ok(price)
}

/// The quantity an item of `price` takes: none for a metered price (Stripe refuses one), else
/// the one given or 1.
fn item_quantity(price: &Value, given: Option<i64>, param: &str, item: &str) -> Result<Option<i64>, ApiError> {
    if price["recurring"]["usage_type"] == "metered" {
        if given.is_some() {
            return Err(ApiError::invalid(
                format!(
                    "Quantity should not be specified where usage_type is `metered`. Remove quantity from `{item}`."
                ),
                Some(param),
            ));
        }
        return Ok(None);
    }
    match given {
        Some(q) if q < 0 => Err(ApiError::invalid("Invalid positive integer", Some(param))),
        other => Ok(Some(other.unwrap_or(1))),
    }
}

fn item_json(
    id: &str,
    subscription: &str,
    price: &Value,
    quantity: Option<i64>,
    meta: Value,
    created: i64,
    cycle: &Cycle,
) -> Value {
    let mut item = json!({
        "id": id,
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": created,
        "current_period_end": cycle.period_end,
        "current_period_start": cycle.period_start,
        "discounts": [],
        "metadata": meta,
        "plan": plan_of(price),
        "price": price,
        "subscription": subscription,
        "tax_rates": [],
    });
    if let Some(quantity) = quantity {
        item["quantity"] = json!(quantity);
    }
    item
}

fn set_items(subscription: &mut Value, items: Vec<Value>) {
    let id = subscription["id"].as_str().unwrap_or_default().to_owned();
    subscription["items"] = embedded_list(format!("/v1/subscription_items?subscription={id}"), items);
}

fn proration_behavior(p: &Value) -> Result<&str, ApiError> {
    Ok(one_of(p, "proration_behavior", "proration_behavior", &["always_invoice", "create_prorations", "none"])?
        .unwrap_or("create_prorations"))
}

fn licensed_amount(price: &Value, quantity: Option<i64>) -> i64 {
    price["unit_amount"].as_i64().unwrap_or(0).saturating_mul(quantity.unwrap_or(0))
}

/// A proration invoice item for licensed `item` over `[from, to)` of the period.
fn proration_of(subscription: &str, item: &ItemRecord, cycle: &Cycle, from: i64, credit: bool) -> PendingItem {
    let full = licensed_amount(&item.price, item.quantity);
    let amount = prorate(full, cycle.period_end - from, cycle.period_end - cycle.period_start);
    PendingItem {
        id: State::new_id("ii_"),
        subscription: subscription.to_owned(),
        subscription_item: item.id.clone(),
        price: item.price.clone(),
        amount: if credit { -amount } else { amount },
        quantity_decimal: item.quantity.unwrap_or(0).to_string(),
        proration: true,
        from,
        to: cycle.period_end,
    }
}

/// `always_invoice`: the subscription's pending invoice items are invoiced now.
fn invoice_pending_now(state: &mut State, subscription: &str, ctx: &RequestCtx) -> Result<(), ApiError> {
    let specs: Vec<LineSpec> =
        state.pending_items.iter().filter(|p| p.subscription == subscription).cloned().map(LineSpec::Item).collect();
    if specs.is_empty() {
        return Ok(());
    }
    state.pending_items.retain(|p| p.subscription != subscription);
    let now = state.now();
    open_invoice(state, subscription, "subscription_update", (now, now), specs, Finalize::AnHourLater, ctx).map(|_| ())
}

pub fn create_subscription(state: &mut State, p: &Value, ctx: &RequestCtx) -> Answer {
    known(
        p,
        &[
            "billing_cycle_anchor",
            "collection_method",
            "customer",
            "days_until_due",
            "default_payment_method",
            "description",
            "items",
            "metadata",
            "payment_behavior",
            "proration_behavior",
        ],
    )?;
    let customer_id = required(p, "customer")?;
    let customer = state
        .get("customer", "customer", customer_id, "customer")
        .map_err(|_| ApiError::no_such_param("customer", customer_id, "customer"))?;
    let items = p
        .get("items")
        .and_then(Value::as_array)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::missing_param("items"))?;
    let proration = proration_behavior(p)?;
    let anchor = integer(p, "billing_cycle_anchor", "billing_cycle_anchor")?;
    let now = state.now();
    let id = State::new_id("sub_");
    let mut terms = Terms::default();
    let mut chosen: Vec<(Value, Option<i64>, Value)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let param = format!("items[{i}][price]");
        let price_id = s(item, "price").ok_or_else(|| ApiError::missing_param(&param))?;
        let price = item_price(state, price_id, &param, &mut terms)?;
        if chosen.iter().any(|(p, ..)| p["id"] == price_id) {
            return Err(ApiError::invalid(
                format!("Cannot add multiple subscription items with the same price: {price_id}"),
                Some(&param),
            ));
        }
        let quantity_param = format!("items[{i}][quantity]");
        let quantity = integer(item, "quantity", &quantity_param)?;
        let quantity = item_quantity(&price, quantity, &quantity_param, &format!("items[{i}]"))?;
        chosen.push((price, quantity, metadata(item)));
    }
    let (interval, count) = terms.interval.unwrap_or(("month".to_owned(), 1));
    let natural = boundary(now, &interval, count, 1);
    if let Some(anchor) = anchor {
        if anchor <= now {
            return Err(ApiError::invalid(
                "billing_cycle_anchor cannot be in the past: it must be a future timestamp.",
                Some("billing_cycle_anchor"),
            ));
        }
        if anchor > natural {
            return Err(ApiError::invalid(
                format!("billing_cycle_anchor cannot be later than next natural billing date ({natural}) for plan"),
                Some("billing_cycle_anchor"),
            ));
        }
    }
    let cycle = Cycle::new(now, anchor, interval, count);
    let mut data = Vec::new();
    let mut records = Vec::new();
    let mut first = Vec::new();
    for (price, quantity, meta) in chosen {
        let item_id = State::new_id("si_");
        let amount = match (quantity, anchor) {
            (None, _) => 0,
            (Some(_), None) => licensed_amount(&price, quantity),
            // Up to a future anchor, a prorated share of a full period (free with `none`).
            (Some(_), Some(anchor)) => prorate(licensed_amount(&price, quantity), anchor - now, natural - now),
        };
        first.push(LineSpec::Fixed {
            item: item_id.clone(),
            price: price.clone(),
            quantity,
            from: now,
            to: if quantity.is_some() { cycle.period_end } else { now },
            amount,
        });
        data.push(item_json(&item_id, &id, &price, quantity, meta, now, &cycle));
        records.push(ItemRecord { id: item_id, price, quantity, added: now, removed: None });
    }
    // With a future anchor and no prorations the time up to the anchor is free and Stripe
    // makes no invoice for it.
    let first = if anchor.is_some() && proration == "none" { None } else { Some(first) };
    let charged_now: i64 =
        first.iter().flatten().map(|line| if let LineSpec::Fixed { amount, .. } = line { *amount } else { 0 }).sum();
    let default_pm = s(p, "default_payment_method").map(str::to_owned);
    let has_pm = default_pm.is_some() || !customer["invoice_settings"]["default_payment_method"].is_null();
    let collection = one_of(p, "collection_method", "collection_method", &["charge_automatically", "send_invoice"])?
        .unwrap_or("charge_automatically");
    if charged_now > 0
        && collection == "charge_automatically"
        && !has_pm
        && s(p, "payment_behavior") != Some("default_incomplete")
    {
        return Err(ApiError {
            code: Some("resource_missing"),
            ..ApiError::invalid(
                "This customer has no attached payment source or default payment method. Please consider adding a \
                 default payment method.",
                None,
            )
        });
    }
    let status = if charged_now > 0 && !has_pm { "incomplete" } else { "active" };
    let mut subscription = json!({
        "id": id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "billing_cycle_anchor": cycle.anchor,
        "billing_cycle_anchor_config": null,
        "billing_mode": {"flexible": {"proration_discounts": "included"}, "type": "flexible", "updated_at": now},
        "billing_schedules": [],
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": null,
        "cancellation_details": {"comment": null, "feedback": null, "reason": null},
        "collection_method": collection,
        "created": now,
        "currency": terms.currency,
        "customer": customer_id,
        "days_until_due": integer(p, "days_until_due", "days_until_due")?,
        "default_payment_method": default_pm,
        "default_source": null,
        "default_tax_rates": [],
        "description": s(p, "description"),
        "discounts": [],
        "ended_at": null,
        "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
        "items": {},
        "latest_invoice": null,
        "livemode": false,
        "metadata": metadata(p),
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": {"payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off"},
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": now,
        "status": status,
        "test_clock": null,
        "transfer_data": null,
        "trial_end": null,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": null,
    });
    set_items(&mut subscription, data);
    state.put(subscription.clone());
    state.items.insert(id.clone(), records);
    state.emit("customer.subscription.created", subscription, None, ctx);
    if status == "active" {
        state.cycles.insert(id.clone(), cycle);
        if let Some(first) = first {
            // The first invoice: licensed items in advance, metered items at zero until usage.
            open_invoice(state, &id, "subscription_create", (now, now), first, Finalize::AtOnce, ctx)?;
        }
    }
    state.get("subscription", "subscription", &id, "id")
}

/// `DELETE /v1/subscriptions/{id}`: cancels at once. Metered usage of the open period is
/// discarded unless `invoice_now=true`, which drafts a final invoice for it (and the pending
/// invoice items) finalised an hour later; `prorate=true` credits unused licensed time on it.
pub fn cancel_subscription(state: &mut State, id: &str, p: &Value, ctx: &RequestCtx) -> Answer {
    known(p, &["cancellation_details", "invoice_now", "prorate"])?;
    let subscription = state.get("subscription", "subscription", id, "id")?;
    if subscription["status"] == "canceled" {
        return Err(ApiError::invalid(
            format!("A canceled subscription can only update its cancellation_details and metadata. ({id})"),
            None,
        ));
    }
    let invoice_now = boolean(p, "invoice_now")?.unwrap_or(false);
    let prorate_now = boolean(p, "prorate")?.unwrap_or(false);
    let now = state.now();
    let customer = subscription["customer"].as_str().unwrap_or_default().to_owned();
    if let Some(cycle) = state.cycles.remove(id).filter(|_| invoice_now) {
        let mut specs = Vec::new();
        for item in state.items.get(id).into_iter().flatten().filter(|i| i.removed.is_none()) {
            if item.price["recurring"]["usage_type"] == "metered" {
                specs.push(LineSpec::Metered {
                    item: item.id.clone(),
                    price: item.price.clone(),
                    customer: customer.clone(),
                    from: item.added.max(cycle.period_start),
                    to: now,
                });
            } else if prorate_now {
                specs.push(LineSpec::Item(proration_of(id, item, &cycle, now, true)));
            }
        }
        specs.extend(state.pending_items.iter().filter(|p| p.subscription == id).cloned().map(LineSpec::Item));
        open_invoice(state, id, "subscription_cycle", (cycle.period_start, now), specs, Finalize::AnHourLater, ctx)?;
    }
    state.pending_items.retain(|p| p.subscription != id);
    for item in state.items.get_mut(id).into_iter().flatten().filter(|i| i.removed.is_none()) {
        item.removed = Some(now);
    }
    let mut subscription = state.get("subscription", "subscription", id, "id")?;
    subscription["status"] = json!("canceled");
    subscription["canceled_at"] = json!(now);
    subscription["ended_at"] = json!(now);
    subscription["cancellation_details"]["reason"] = json!("cancellation_requested");
    if let Some(comment) = s(&p["cancellation_details"], "comment") {
        subscription["cancellation_details"]["comment"] = json!(comment);
    }
    state.put(subscription.clone());
    state.emit("customer.subscription.deleted", subscription.clone(), None, ctx);
    Ok(subscription)
}

/// The live subscription holding item `id`, or Stripe's 404.
fn subscription_of_item(state: &State, id: &str) -> Result<String, ApiError> {
    state
        .items
        .iter()
        .find(|(_, items)| items.iter().any(|i| i.id == id && i.removed.is_none()))
        .map(|(subscription, _)| subscription.clone())
        .ok_or_else(|| ApiError::no_such("subscription_item", id, "item"))
}

/// `POST /v1/subscription_items`: adds a price to a live subscription from now on. A metered
/// item bills the usage timestamped from now; a licensed one, with prorations, the rest of
/// the period (on the next invoice, or at once with `always_invoice`).
pub fn create_item(state: &mut State, p: &Value, ctx: &RequestCtx) -> Answer {
    known(
        p,
        &["metadata", "payment_behavior", "price", "proration_behavior", "proration_date", "quantity", "subscription"],
    )?;
    let subscription_id = required(p, "subscription")?;
    let mut subscription = state
        .get("subscription", "subscription", subscription_id, "subscription")
        .map_err(|_| ApiError::no_such_param("subscription", subscription_id, "subscription"))?;
    if subscription["status"] == "canceled" {
        return Err(ApiError::invalid(
            format!(
                "A canceled subscription can only update its cancellation_details and metadata. ({subscription_id})"
            ),
            Some("subscription"),
        ));
    }
    let price_id = required(p, "price")?;
    let current = subscription["items"]["data"].as_array().cloned().unwrap_or_default();
    let mut terms = Terms::default();
    if let Some(first) = current.first() {
        terms.currency = Some(first["price"]["currency"].clone());
        terms.interval = Some(interval_of(&first["price"]));
    }
    let price = item_price(state, price_id, "price", &mut terms)?;
    if current.iter().any(|i| i["price"]["id"] == price_id) {
        return Err(ApiError::invalid(
            format!("Cannot add multiple subscription items with the same price: {price_id}"),
            Some("price"),
        ));
    }
    let quantity = item_quantity(&price, integer(p, "quantity", "quantity")?, "quantity", "the request")?;
    let proration = proration_behavior(p)?;
    let now = state.now();
    let cycle = state.cycles.get(subscription_id).cloned().unwrap_or_else(|| Cycle::new(now, None, "month".into(), 1));
    let id = State::new_id("si_");
    let item = item_json(&id, subscription_id, &price, quantity, metadata(p), now, &cycle);
    let record = ItemRecord { id: id.clone(), price, quantity, added: now, removed: None };
    if quantity.is_some() && proration != "none" && state.cycles.contains_key(subscription_id) {
        state.pending_items.push(proration_item(subscription_id, &record, &cycle, now));
    }
    state.items.entry(subscription_id.to_owned()).or_default().push(record);
    let previous = json!({"items": subscription["items"].clone()});
    let mut items = current;
    items.push(item.clone());
    set_items(&mut subscription, items);
    state.put(subscription.clone());
    state.emit("customer.subscription.updated", subscription, Some(previous), ctx);
    if proration == "always_invoice" {
        invoice_pending_now(state, subscription_id, ctx)?;
    }
    Ok(item)
}

fn proration_item(subscription: &str, item: &ItemRecord, cycle: &Cycle, from: i64) -> PendingItem {
    proration_of(subscription, item, cycle, from, false)
}

/// `DELETE /v1/subscription_items/{id}`: removes an item from now on. With
/// `proration_behavior=none` (or `clear_usage=true`) nothing more is billed for it; otherwise
/// a metered item's usage so far in the period is billed (an invoice item on the next invoice,
/// or at once with `always_invoice`), and a licensed item's unused time credited.
pub fn delete_item(state: &mut State, id: &str, p: &Value, ctx: &RequestCtx) -> Answer {
    known(p, &["clear_usage", "payment_behavior", "proration_behavior", "proration_date"])?;
    let subscription_id = subscription_of_item(state, id)?;
    let mut subscription = state.get("subscription", "subscription", &subscription_id, "subscription")?;
    let current = subscription["items"]["data"].as_array().cloned().unwrap_or_default();
    if current.len() <= 1 {
        return Err(ApiError::invalid(
            "A subscription must have at least one active plan. To cancel a subscription, please use the cancel API \
             endpoint on /v1/subscriptions.",
            None,
        ));
    }
    let proration = proration_behavior(p)?;
    let clear_usage = boolean(p, "clear_usage")?.unwrap_or(false);
    let now = state.now();
    let customer = subscription["customer"].as_str().unwrap_or_default().to_owned();
    let record = state
        .items
        .get(&subscription_id)
        .and_then(|items| items.iter().find(|i| i.id == id))
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription_item", id, "item"))?;
    if let Some(cycle) = state.cycles.get(&subscription_id).cloned().filter(|_| proration != "none") {
        let pending = if record.quantity.is_none() {
            (!clear_usage).then(|| {
                let from = record.added.max(cycle.period_start);
                usage_item(state, &subscription_id, id, &record.price, &customer, from, now)
            })
        } else {
            Some(proration_of(&subscription_id, &record, &cycle, now, true))
        };
        state.pending_items.extend(pending);
    }
    if let Some(item) = state.items.get_mut(&subscription_id).and_then(|items| items.iter_mut().find(|i| i.id == id)) {
        item.removed = Some(now);
    }
    let previous = json!({"items": subscription["items"].clone()});
    set_items(&mut subscription, current.into_iter().filter(|i| i["id"] != id).collect());
    state.put(subscription.clone());
    state.emit("customer.subscription.updated", subscription, Some(previous), ctx);
    if proration == "always_invoice" {
        invoice_pending_now(state, &subscription_id, ctx)?;
    }
    Ok(json!({"id": id, "object": "subscription_item", "deleted": true}))
}

/// `GET /v1/subscription_items?subscription=`.
pub fn list_items(state: &State, p: &Value) -> Answer {
    known(p, &["limit", "starting_after", "subscription"])?;
    let subscription_id = required(p, "subscription")?;
    let subscription = state
        .get("subscription", "subscription", subscription_id, "subscription")
        .map_err(|_| ApiError::no_such_param("subscription", subscription_id, "subscription"))?;
    let items = subscription["items"]["data"].as_array().cloned().unwrap_or_default();
    list("/v1/subscription_items", items, p)
}

/// `GET /v1/subscription_items/{id}`.
pub fn get_item(state: &State, id: &str) -> Answer {
    let subscription_id = subscription_of_item(state, id)?;
    let subscription = state.get("subscription", "subscription", &subscription_id, "subscription")?;
    subscription["items"]["data"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == id).cloned())
        .ok_or_else(|| ApiError::no_such("subscription_item", id, "item"))
}

/// A test's invoice: one line per current item at the amounts given (in item order),
/// finalised at once and paid or with a failed payment, whatever the payment method.
pub fn create_invoice(state: &mut State, subscription_id: &str, amounts: &[i64], paid: bool) -> Answer {
    let subscription = state.get("subscription", "subscription", subscription_id, "subscription")?;
    let items = subscription["items"]["data"].as_array().cloned().unwrap_or_default();
    if items.len() != amounts.len() {
        return Err(ApiError::invalid(
            format!("The subscription has {} items but {} amounts were given.", items.len(), amounts.len()),
            None,
        ));
    }
    let now = state.now();
    let period_start = items.first().and_then(|i| i["current_period_start"].as_i64()).unwrap_or(now);
    let specs = items
        .iter()
        .zip(amounts)
        .map(|(item, amount)| LineSpec::Fixed {
            item: item["id"].as_str().unwrap_or_default().to_owned(),
            price: item["price"].clone(),
            quantity: item["quantity"].as_i64(),
            from: period_start,
            to: now,
            amount: *amount,
        })
        .collect();
    let ctx = RequestCtx::default();
    let id = open_invoice(
        state,
        subscription_id,
        "subscription_cycle",
        (period_start, now),
        specs,
        Finalize::AtOnceWithOutcome(paid),
        &ctx,
    )?;
    state.get("invoice", "invoice", &id, "invoice")
}
