//! Customers.

use super::params::{known, metadata, s};
use super::state::{Answer, ApiError, RequestCtx, State, random_id};
use serde_json::{Value, json};

pub fn create_customer(state: &mut State, p: &Value, ctx: &RequestCtx) -> Answer {
    known(p, &["description", "email", "invoice_settings", "metadata", "name", "phone", "preferred_locales"])?;
    let id = State::new_id("cus_");
    let customer = json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": state.now(),
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": s(p, "description"),
        "discount": null,
        "email": s(p, "email"),
        "invoice_prefix": random_id("", 8).to_uppercase(),
        "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null},
        "livemode": false,
        "metadata": metadata(p),
        "name": s(p, "name"),
        "next_invoice_sequence": 1,
        "phone": s(p, "phone"),
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null,
    });
    if let Some(pm) = s(&p["invoice_settings"], "default_payment_method") {
        // A new customer has no attached payment methods yet.
        return Err(default_pm_error(pm));
    }
    state.put(customer.clone());
    state.emit("customer.created", customer.clone(), None, ctx);
    Ok(customer)
}

fn default_pm_error(pm: &str) -> ApiError {
    ApiError::invalid(
        format!(
            "The customer does not have a payment method with the ID {pm}. The payment method must be attached to \
             the customer."
        ),
        Some("invoice_settings[default_payment_method]"),
    )
}

pub fn update_customer(state: &mut State, id: &str, p: &Value, ctx: &RequestCtx) -> Answer {
    known(p, &["description", "email", "invoice_settings", "metadata", "name", "phone", "preferred_locales"])?;
    let mut customer = state.get("customer", "customer", id, "id")?;
    let mut previous = serde_json::Map::new();
    for key in ["description", "email", "name", "phone"] {
        if let Some(v) = p.get(key).and_then(Value::as_str) {
            previous.insert(key.to_owned(), customer[key].clone());
            customer[key] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
    if let Some(entries) = p.get("metadata").and_then(Value::as_object) {
        previous.insert("metadata".to_owned(), customer["metadata"].clone());
        if let Some(stored) = customer["metadata"].as_object_mut() {
            for (k, v) in entries {
                match v.as_str() {
                    Some("") | None => stored.remove(k),
                    Some(v) => stored.insert(k.clone(), json!(v)),
                };
            }
        }
    }
    if let Some(pm) = p["invoice_settings"].get("default_payment_method").and_then(Value::as_str) {
        if !pm.is_empty() {
            let method = state.get("payment_method", "PaymentMethod", pm, "invoice_settings[default_payment_method]");
            if method.map_or(true, |m| m["customer"] != id) {
                return Err(default_pm_error(pm));
            }
        }
        previous.insert(
            "invoice_settings".to_owned(),
            json!({"default_payment_method": customer["invoice_settings"]["default_payment_method"]}),
        );
        customer["invoice_settings"]["default_payment_method"] = if pm.is_empty() { Value::Null } else { json!(pm) };
    }
    state.put(customer.clone());
    state.emit("customer.updated", customer.clone(), Some(Value::Object(previous)), ctx);
    Ok(customer)
}
