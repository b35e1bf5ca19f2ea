//! Subscriptions and their invoices.

use super::params::{integer, known, metadata, one_of, required, s};
use super::state::{Answer, ApiError, DAY, RequestCtx, State};
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

pub fn create_subscription(state: &mut State, p: &Value, ctx: &RequestCtx) -> Answer {
    known(
        p,
        &[
            "collection_method",
            "customer",
            "days_until_due",
            "default_payment_method",
            "description",
            "items",
            "metadata",
            "payment_behavior",
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
    let now = state.now();
    let period_end = chrono::DateTime::from_timestamp(now, 0)
        .and_then(|t| t.checked_add_months(chrono::Months::new(1)))
        .map_or(now + 30 * DAY, |t| t.timestamp());
    let id = State::new_id("sub_");
    let mut data = Vec::new();
    let mut currency: Option<Value> = None;
    let mut charged_now = 0_i64;
    let mut first_amounts = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let param = format!("items[{i}][price]");
        let price_id = s(item, "price").ok_or_else(|| ApiError::missing_param(&param))?;
        let price = state
            .get("price", "price", price_id, &param)
            .map_err(|_| ApiError::no_such_param("price", price_id, &param))?;
        if price["type"] != "recurring" {
            return Err(ApiError::invalid(
                format!(
                    "The price specified ({price_id}) is set to `type=one_time` but this field only accepts prices with `type=recurring`."
                ),
                Some(&param),
            ));
        }
        if data.iter().any(|d: &Value| d["price"]["id"] == price_id) {
            return Err(ApiError::invalid(
                format!("Cannot add multiple subscription items with the same price: {price_id}"),
                Some(&param),
            ));
        }
        match &currency {
            Some(c) if *c != price["currency"] => {
                return Err(ApiError::invalid(
                    "All prices on a subscription must have the same currency.",
                    Some(&param),
                ));
            }
            _ => currency = Some(price["currency"].clone()),
        }
        let metered = price["recurring"]["usage_type"] == "metered";
        let quantity = integer(item, "quantity", &format!("items[{i}][quantity]"))?;
        let mut entry = json!({
            "id": State::new_id("si_"),
            "object": "subscription_item",
            "billing_thresholds": null,
            "created": now,
            "current_period_end": period_end,
            "current_period_start": now,
            "discounts": [],
            "metadata": metadata(item),
            "plan": plan_of(&price),
            "price": price,
            "subscription": id,
            "tax_rates": [],
        });
        first_amounts.push(0);
        if metered {
            if quantity.is_some() {
                return Err(ApiError::invalid(
                    format!(
                        "Quantity should not be specified where usage_type is `metered`. Remove quantity from `items[{i}]`."
                    ),
                    Some(&format!("items[{i}][quantity]")),
                ));
            }
        } else {
            let quantity = quantity.unwrap_or(1);
            entry["quantity"] = json!(quantity);
            let amount = entry["price"]["unit_amount"].as_i64().unwrap_or(0).saturating_mul(quantity);
            charged_now += amount;
            if let Some(last) = first_amounts.last_mut() {
                *last = amount;
            }
        }
        data.push(entry);
    }
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
    let subscription = json!({
        "id": id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "billing_cycle_anchor": now,
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
        "currency": currency,
        "customer": customer_id,
        "days_until_due": integer(p, "days_until_due", "days_until_due")?,
        "default_payment_method": default_pm,
        "default_source": null,
        "default_tax_rates": [],
        "description": s(p, "description"),
        "discounts": [],
        "ended_at": null,
        "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
        "items": {"object": "list", "data": data, "has_more": false, "total_count": items.len(), "url": format!("/v1/subscription_items?subscription={id}")},
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
    state.put(subscription.clone());
    state.emit("customer.subscription.created", subscription.clone(), None, ctx);
    if status == "active" {
        // The first invoice: licensed items in advance, metered items at zero until usage.
        invoice(state, &id, &first_amounts, true, "subscription_create", ctx)?;
    }
    state.get("subscription", "subscription", &id, "id")
}

pub fn cancel_subscription(state: &mut State, id: &str, ctx: &RequestCtx) -> Answer {
    let mut subscription = state.get("subscription", "subscription", id, "id")?;
    if subscription["status"] == "canceled" {
        return Err(ApiError::invalid(
            format!("A canceled subscription can only update its cancellation_details and metadata. ({id})"),
            None,
        ));
    }
    let now = state.now();
    subscription["status"] = json!("canceled");
    subscription["canceled_at"] = json!(now);
    subscription["ended_at"] = json!(now);
    subscription["cancellation_details"]["reason"] = json!("cancellation_requested");
    state.put(subscription.clone());
    state.emit("customer.subscription.deleted", subscription.clone(), None, ctx);
    Ok(subscription)
}

pub fn create_invoice(state: &mut State, subscription_id: &str, amounts: &[i64], paid: bool) -> Answer {
    invoice(state, subscription_id, amounts, paid, "subscription_cycle", &RequestCtx::default())
}

fn invoice(
    state: &mut State,
    subscription_id: &str,
    amounts: &[i64],
    paid: bool,
    reason: &str,
    ctx: &RequestCtx,
) -> Answer {
    let mut subscription = state.get("subscription", "subscription", subscription_id, "subscription")?;
    let items = subscription["items"]["data"].as_array().cloned().unwrap_or_default();
    if items.len() != amounts.len() {
        return Err(ApiError::invalid(
            format!("The subscription has {} items but {} amounts were given.", items.len(), amounts.len()),
            None,
        ));
    }
    let amount_due: i64 = amounts.iter().sum();
    let customer = subscription["customer"].as_str().unwrap_or_default().to_owned();
    let email =
        state.get("customer", "customer", &customer, "customer").map(|c| c["email"].clone()).unwrap_or(Value::Null);
    let now = state.now();
    let id = State::new_id("in_");
    let number = state.order.get("invoice").map_or(0, Vec::len) + 1;
    let period_start = match items.first() {
        Some(item) if reason == "subscription_cycle" => item["current_period_start"].clone(),
        _ => json!(now),
    };
    let lines: Vec<Value> = items
        .iter()
        .zip(amounts)
        .map(|(item, amount)| {
            json!({
                "id": State::new_id("il_"),
                "object": "line_item",
                "amount": amount,
                "currency": subscription["currency"],
                "description": item["price"]["nickname"],
                "discount_amounts": [],
                "discountable": true,
                "discounts": [],
                "invoice": id,
                "livemode": false,
                "metadata": {},
                "parent": {
                    "invoice_item_details": null,
                    "subscription_item_details": {
                        "invoice_item": null,
                        "proration": false,
                        "proration_details": {"credited_items": null},
                        "subscription": subscription_id,
                        "subscription_item": item["id"],
                    },
                    "type": "subscription_item_details",
                },
                "period": {"end": now, "start": period_start},
                "pretax_credit_amounts": [],
                "pricing": {
                    "price_details": {"price": item["price"]["id"], "product": item["price"]["product"]},
                    "type": "price_details",
                    "unit_amount_decimal": item["price"]["unit_amount_decimal"],
                },
                "quantity": item.get("quantity").cloned().unwrap_or(Value::Null),
                "subtotal": amount,
                "taxes": [],
            })
        })
        .collect();
    let mut invoice = json!({
        "id": id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Hopsbridge (sandbox)",
        "amount_due": amount_due,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": amount_due,
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
        "hosted_invoice_url": null,
        "invoice_pdf": null,
        "issuer": {"type": "self"},
        "last_finalization_error": null,
        "lines": {"object": "list", "data": lines, "has_more": false, "total_count": amounts.len(), "url": format!("/v1/invoices/{id}/lines")},
        "livemode": false,
        "metadata": {},
        "next_payment_attempt": null,
        "number": null,
        "parent": {"quote_details": null, "subscription_details": {"metadata": {}, "subscription": subscription_id}, "type": "subscription_details"},
        "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
        "period_end": now,
        "period_start": period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "starting_balance": 0,
        "status": "draft",
        "status_transitions": {"finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null},
        "subtotal": amount_due,
        "total": amount_due,
        "total_discount_amounts": [],
        "total_taxes": [],
    });
    state.emit("invoice.created", invoice.clone(), None, ctx);
    invoice["status"] = json!("open");
    invoice["number"] = json!(format!("SANDBOX-{number:04}"));
    invoice["status_transitions"]["finalized_at"] = json!(now);
    invoice["hosted_invoice_url"] = json!(format!("{}/i/{id}", state.base_url));
    state.emit("invoice.finalized", invoice.clone(), None, ctx);
    invoice["attempt_count"] = json!(1);
    invoice["attempted"] = json!(true);
    if paid {
        invoice["status"] = json!("paid");
        invoice["amount_paid"] = json!(amount_due);
        invoice["amount_remaining"] = json!(0);
        invoice["status_transitions"]["paid_at"] = json!(now);
        state.put(invoice.clone());
        state.emit("invoice.paid", invoice.clone(), None, ctx);
        state.emit("invoice.payment_succeeded", invoice.clone(), None, ctx);
    } else {
        invoice["next_payment_attempt"] = json!(now + 3 * DAY);
        state.put(invoice.clone());
        state.emit("invoice.payment_failed", invoice.clone(), None, ctx);
        if subscription["status"] == "active" {
            subscription["status"] = json!("past_due");
            subscription["latest_invoice"] = json!(id);
            state.put(subscription.clone());
            state.emit("customer.subscription.updated", subscription.clone(), Some(json!({"status": "active"})), ctx);
        }
    }
    if let Ok(mut subscription) = state.get("subscription", "subscription", subscription_id, "subscription") {
        subscription["latest_invoice"] = json!(id);
        state.put(subscription);
    }
    Ok(invoice)
}
