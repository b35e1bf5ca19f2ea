//! Checkout Sessions and billing portal sessions.

use super::customers::create_customer;
use super::params::{integer, known, metadata, one_of, required, s};
use super::payments::{attach, new_card, new_setup_intent, paid_intent};
use super::state::{Answer, ApiError, DAY, RequestCtx, State, random_id};
use serde_json::{Value, json};

pub fn create_checkout_session(state: &mut State, p: &Value) -> Answer {
    known(
        p,
        &[
            "cancel_url",
            "client_reference_id",
            "currency",
            "customer",
            "customer_email",
            "line_items",
            "metadata",
            "mode",
            "payment_method_types",
            "success_url",
        ],
    )?;
    let mode = one_of(p, "mode", "mode", &["payment", "setup", "subscription"])?
        .ok_or_else(|| ApiError::missing_param("mode"))?;
    if mode == "subscription" {
        return Err(ApiError::invalid("The sandbox does not simulate Checkout in subscription mode.", Some("mode")));
    }
    let success_url = required(p, "success_url")?;
    let customer = s(p, "customer");
    if let Some(c) = customer {
        state
            .get("customer", "customer", c, "customer")
            .map_err(|_| ApiError::no_such_param("customer", c, "customer"))?;
    }
    let mut currency = s(p, "currency").map(str::to_lowercase);
    let mut amount: Option<i64> = None;
    if mode == "setup" {
        if currency.is_none() && p.get("payment_method_types").is_none() {
            return Err(ApiError::invalid(
                "You must provide `currency` when creating a setup mode Checkout Session without `payment_method_types`.",
                Some("currency"),
            ));
        }
        if p.get("line_items").is_some() {
            return Err(ApiError::invalid("You cannot pass `line_items` in `setup` mode.", Some("line_items")));
        }
    } else {
        let items = p
            .get("line_items")
            .and_then(Value::as_array)
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::missing_param("line_items"))?;
        let mut total = 0_i64;
        for (i, item) in items.iter().enumerate() {
            let quantity_param = format!("line_items[{i}][quantity]");
            let quantity =
                integer(item, "quantity", &quantity_param)?.ok_or_else(|| ApiError::missing_param(&quantity_param))?;
            if quantity < 1 {
                return Err(ApiError::invalid("Quantity must be greater than 0.", Some(&quantity_param)));
            }
            let (unit, item_currency) = if let Some(price_id) = s(item, "price") {
                let param = format!("line_items[{i}][price]");
                let price = state
                    .get("price", "price", price_id, &param)
                    .map_err(|_| ApiError::no_such_param("price", price_id, &param))?;
                if price["type"] == "recurring" {
                    return Err(ApiError::invalid(
                        "You specified `payment` mode but passed a recurring price. Either switch to `subscription` \
                         mode or use only one-time prices.",
                        Some(&param),
                    ));
                }
                (price["unit_amount"].as_i64(), price["currency"].as_str().map(str::to_owned))
            } else if let Some(data) = item.get("price_data") {
                let prefix = format!("line_items[{i}][price_data]");
                let currency =
                    required(data, "currency").map_err(|_| ApiError::missing_param(&format!("{prefix}[currency]")))?;
                if s(data, "product").is_none() && s(&data["product_data"], "name").is_none() {
                    return Err(ApiError::missing_param(&format!("{prefix}[product_data][name]")));
                }
                if data.get("recurring").is_some() {
                    return Err(ApiError::invalid(
                        "You specified `payment` mode but passed a recurring price. Either switch to `subscription` \
                         mode or use only one-time prices.",
                        Some(&format!("{prefix}[recurring]")),
                    ));
                }
                let unit = integer(data, "unit_amount", &format!("{prefix}[unit_amount]"))?;
                if unit.is_some_and(|u| u < 0) {
                    return Err(ApiError::invalid(
                        "Invalid non-negative integer",
                        Some(&format!("{prefix}[unit_amount]")),
                    ));
                }
                (unit, Some(currency.to_lowercase()))
            } else {
                return Err(ApiError::missing_param(&format!("line_items[{i}][price]")));
            };
            let unit =
                unit.ok_or_else(|| ApiError::missing_param(&format!("line_items[{i}][price_data][unit_amount]")))?;
            total = total.saturating_add(unit.saturating_mul(quantity));
            if currency.is_some() && item_currency.is_some() && currency != item_currency {
                return Err(ApiError::invalid(
                    "All line items must have the same currency as the Checkout Session.",
                    Some(&format!("line_items[{i}]")),
                ));
            }
            currency = currency.or(item_currency);
        }
        // Stripe's smallest and largest card charges (for the currencies it publishes them for).
        let minimum = match currency.as_deref() {
            Some("usd" | "eur" | "chf" | "cad" | "aud" | "nzd" | "sgd") => 50,
            Some("gbp") => 30,
            _ => 1,
        };
        if total < minimum {
            return Err(ApiError::invalid(
                format!(
                    "The Checkout Session's total amount due must add up to at least {minimum} in the currency's minor \
                     unit ({}).",
                    currency.as_deref().unwrap_or_default()
                ),
                None,
            ));
        }
        if total > 99_999_999 {
            return Err(ApiError {
                code: Some("amount_too_large"),
                ..ApiError::invalid("Amount must be no more than 99999999 in the currency's minor unit.", None)
            });
        }
        amount = Some(total);
    }
    let id = random_id(&format!("cs_{}_", state.mode()), 58);
    let now = state.now();
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "after_expiration": null,
        "allow_promotion_codes": null,
        "amount_subtotal": amount,
        "amount_total": amount,
        "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
        "billing_address_collection": null,
        "cancel_url": s(p, "cancel_url"),
        "client_reference_id": s(p, "client_reference_id"),
        "client_secret": null,
        "consent": null,
        "consent_collection": null,
        "created": now,
        "currency": currency,
        "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
        "customer": customer,
        "customer_creation": if customer.is_some() { Value::Null } else { json!("if_required") },
        "customer_details": null,
        "customer_email": s(p, "customer_email"),
        "expires_at": now + DAY,
        "invoice": null,
        "livemode": false,
        "locale": null,
        "metadata": metadata(p),
        "mode": mode,
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": "always",
        "payment_method_types": p.get("payment_method_types").cloned().unwrap_or_else(|| json!(["card"])),
        "payment_status": if mode == "setup" { "no_payment_required" } else { "unpaid" },
        "phone_number_collection": {"enabled": false},
        "recovered_from": null,
        "setup_intent": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": "open",
        "submit_type": null,
        "subscription": null,
        "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": format!("{}/c/pay/{id}", state.base_url),
    });
    state.put(session.clone());
    Ok(session)
}

pub fn complete_checkout_session(state: &mut State, id: &str) -> Answer {
    let ctx = RequestCtx::default();
    let mut session = state.get("checkout.session", "checkout.session", id, "session")?;
    if session["status"] != "open" {
        return Err(ApiError::invalid(format!("Checkout Session {id} is not open."), None));
    }
    let customer = match session["customer"].as_str() {
        Some(c) => c.to_owned(),
        None => {
            let email = session["customer_email"].as_str().map(str::to_owned);
            let created = create_customer(state, &json!({ "email": email }), &ctx)?;
            created["id"].as_str().unwrap_or_default().to_owned()
        }
    };
    let card = new_card(state);
    let pm = card["id"].as_str().unwrap_or_default().to_owned();
    if session["mode"] == "setup" {
        // Setup mode saves the card on the customer; a one-off payment does not.
        attach(state, &pm, &customer, &ctx)?;
        let intent = new_setup_intent(state, Some(&customer), &json!(["card"]), "off_session", None, json!({}));
        let intent_id = intent["id"].as_str().unwrap_or_default().to_owned();
        state.emit("setup_intent.created", intent.clone(), None, &ctx);
        let mut intent = intent;
        intent["payment_method"] = json!(pm);
        intent["status"] = json!("succeeded");
        state.put(intent.clone());
        state.emit("setup_intent.succeeded", intent, None, &ctx);
        session["setup_intent"] = json!(intent_id);
    } else {
        // A one-off payment: a PaymentIntent paid with the card, which is not saved.
        let amount = session["amount_total"].as_i64().unwrap_or(0);
        let mut intent = paid_intent(state, amount, &session["currency"], &customer, &pm);
        let succeeded = intent.clone();
        intent["status"] = json!("requires_payment_method");
        intent["amount_received"] = json!(0);
        intent["latest_charge"] = Value::Null;
        state.emit("payment_intent.created", intent, None, &ctx);
        state.emit("payment_intent.succeeded", succeeded.clone(), None, &ctx);
        session["payment_intent"] = succeeded["id"].clone();
        session["payment_status"] = json!("paid");
    }
    session["customer"] = json!(customer);
    let email = state.get("customer", "customer", &customer, "customer").map_or(Value::Null, |c| c["email"].clone());
    session["customer_details"] = json!({
        "address": null, "email": email, "name": null, "phone": null, "tax_exempt": "none", "tax_ids": []
    });
    session["status"] = json!("complete");
    session["url"] = Value::Null;
    state.put(session.clone());
    state.emit("checkout.session.completed", session.clone(), None, &ctx);
    Ok(session)
}

pub fn create_portal_session(state: &mut State, p: &Value) -> Answer {
    known(p, &["configuration", "customer", "flow_data", "locale", "on_behalf_of", "return_url"])?;
    let customer = required(p, "customer")?;
    state
        .get("customer", "customer", customer, "customer")
        .map_err(|_| ApiError::no_such_param("customer", customer, "customer"))?;
    let id = State::new_id("bps_");
    let session = json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": s(p, "configuration").map_or_else(|| State::new_id("bpc_"), str::to_owned),
        "created": state.now(),
        "customer": customer,
        "flow": null,
        "livemode": false,
        "locale": s(p, "locale"),
        "on_behalf_of": null,
        "return_url": s(p, "return_url"),
        "url": format!("{}/p/session/{id}", state.base_url),
    });
    state.put(session.clone());
    Ok(session)
}
