//! Products, prices, billing meters and meter events.

use super::decimal::Dec;
use super::params::{integer, known, metadata, one_of, required, s};
use super::state::{Answer, ApiError, State};
use serde_json::{Value, json};

pub fn create_product(state: &mut State, p: &Value) -> Answer {
    known(p, &["active", "description", "id", "metadata", "name", "tax_code", "unit_label", "url"])?;
    let name = required(p, "name")?;
    let now = state.now();
    let product = json!({
        "id": s(p, "id").map_or_else(|| State::new_id("prod_"), str::to_owned),
        "object": "product",
        "active": s(p, "active") != Some("false"),
        "created": now,
        "default_price": null,
        "description": s(p, "description"),
        "images": [],
        "livemode": false,
        "marketing_features": [],
        "metadata": metadata(p),
        "name": name,
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": s(p, "tax_code"),
        "type": "service",
        "unit_label": s(p, "unit_label"),
        "updated": now,
        "url": s(p, "url"),
    });
    if state.objects.contains_key(product["id"].as_str().unwrap_or_default()) {
        return Err(ApiError {
            code: Some("resource_already_exists"),
            ..ApiError::invalid("Product already exists.", Some("id"))
        });
    }
    state.put(product.clone());
    Ok(product)
}

pub fn create_price(state: &mut State, p: &Value) -> Answer {
    known(
        p,
        &[
            "active",
            "billing_scheme",
            "currency",
            "lookup_key",
            "metadata",
            "nickname",
            "product",
            "recurring",
            "tax_behavior",
            "unit_amount",
            "unit_amount_decimal",
        ],
    )?;
    let currency = required(p, "currency")?.to_lowercase();
    let product = required(p, "product")?;
    state
        .get("product", "product", product, "product")
        .map_err(|_| ApiError::no_such_param("product", product, "product"))?;
    let unit_amount = integer(p, "unit_amount", "unit_amount")?;
    let decimal = s(p, "unit_amount_decimal");
    let decimal = match (unit_amount, decimal) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
                Some("unit_amount"),
            ));
        }
        (Some(amount), None) if amount >= 0 => amount.to_string(),
        (None, Some(d)) => match Dec::parse(d) {
            Some(x) if !x.is_negative() && x.decimal_places() <= 12 => d.to_owned(),
            _ => {
                return Err(ApiError::invalid(
                    "Invalid decimal: unit_amount_decimal must be a non-negative decimal with at most 12 decimal places.",
                    Some("unit_amount_decimal"),
                ));
            }
        },
        (None, None) => return Err(ApiError::missing_param("unit_amount")),
        _ => return Err(ApiError::invalid("Invalid unit amount: must be a non-negative number", Some("unit_amount"))),
    };
    let recurring = match p.get("recurring") {
        None => Value::Null,
        Some(r) => {
            let interval = one_of(r, "interval", "recurring[interval]", &["day", "week", "month", "year"])?
                .ok_or_else(|| ApiError::missing_param("recurring[interval]"))?;
            let count = integer(r, "interval_count", "recurring[interval_count]")?.unwrap_or(1);
            let usage =
                one_of(r, "usage_type", "recurring[usage_type]", &["licensed", "metered"])?.unwrap_or("licensed");
            let meter = s(r, "meter");
            match (usage, meter) {
                ("metered", None) => return Err(ApiError::missing_param("recurring[meter]")),
                ("licensed", Some(_)) => {
                    return Err(ApiError::invalid(
                        "A meter can only be set on a price with `recurring[usage_type]=metered`.",
                        Some("recurring[meter]"),
                    ));
                }
                (_, Some(meter)) => {
                    state
                        .get("billing.meter", "billing.meter", meter, "recurring[meter]")
                        .map_err(|_| ApiError::no_such_param("billing.meter", meter, "recurring[meter]"))?;
                }
                _ => {}
            }
            json!({"interval": interval, "interval_count": count, "meter": meter, "trial_period_days": null, "usage_type": usage})
        }
    };
    let price = json!({
        "id": State::new_id("price_"),
        "object": "price",
        "active": s(p, "active") != Some("false"),
        "billing_scheme": "per_unit",
        "created": state.now(),
        "currency": currency,
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": s(p, "lookup_key"),
        "metadata": metadata(p),
        "nickname": s(p, "nickname"),
        "product": product,
        "recurring": recurring,
        "tax_behavior": s(p, "tax_behavior").unwrap_or("unspecified"),
        "tiers_mode": null,
        "transform_quantity": null,
        "type": if recurring.is_null() { "one_time" } else { "recurring" },
        "unit_amount": unit_amount,
        "unit_amount_decimal": decimal,
    });
    state.put(price.clone());
    Ok(price)
}

pub fn create_meter(state: &mut State, p: &Value) -> Answer {
    known(
        p,
        &[
            "customer_mapping",
            "default_aggregation",
            "display_name",
            "event_name",
            "event_time_window",
            "value_settings",
        ],
    )?;
    let display_name = required(p, "display_name")?;
    let event_name = required(p, "event_name")?;
    let formula =
        one_of(&p["default_aggregation"], "formula", "default_aggregation[formula]", &["count", "last", "sum"])?
            .ok_or_else(|| ApiError::missing_param("default_aggregation[formula]"))?;
    let mapping_type = one_of(&p["customer_mapping"], "type", "customer_mapping[type]", &["by_id"])?;
    let mapping_key = s(&p["customer_mapping"], "event_payload_key");
    if p.get("customer_mapping").is_some() && (mapping_type.is_none() || mapping_key.is_none()) {
        return Err(ApiError::missing_param(if mapping_type.is_none() {
            "customer_mapping[type]"
        } else {
            "customer_mapping[event_payload_key]"
        }));
    }
    if !state.all_where("billing.meter", |m| m["event_name"] == event_name && m["status"] == "active").is_empty() {
        return Err(ApiError::invalid(
            format!("An active meter with event_name `{event_name}` already exists."),
            Some("event_name"),
        ));
    }
    let now = state.now();
    let meter = json!({
        "id": State::new_id("mtr_"),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": {"event_payload_key": mapping_key.unwrap_or("stripe_customer_id"), "type": "by_id"},
        "default_aggregation": {"formula": formula},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": s(p, "event_time_window"),
        "livemode": false,
        "status": "active",
        "status_transitions": {"deactivated_at": null},
        "updated": now,
        "value_settings": {"event_payload_key": s(&p["value_settings"], "event_payload_key").unwrap_or("value")},
    });
    state.put(meter.clone());
    Ok(meter)
}
