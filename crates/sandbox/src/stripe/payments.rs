//! SetupIntents, payment methods and Stripe's test cards.

use super::params::{known, metadata, one_of, required, s};
use super::state::{Answer, ApiError, RequestCtx, State, random_id};
use serde_json::{Value, json};

pub fn create_setup_intent(state: &mut State, p: &Value) -> Answer {
    known(p, &["customer", "description", "metadata", "payment_method_types", "usage"])?;
    let customer = s(p, "customer");
    if let Some(c) = customer {
        state
            .get("customer", "customer", c, "customer")
            .map_err(|_| ApiError::no_such_param("customer", c, "customer"))?;
    }
    let types = p.get("payment_method_types").cloned().unwrap_or_else(|| json!(["card"]));
    let usage = one_of(p, "usage", "usage", &["off_session", "on_session"])?.unwrap_or("off_session");
    Ok(new_setup_intent(state, customer, &types, usage, s(p, "description"), metadata(p)))
}

pub fn new_setup_intent(
    state: &mut State,
    customer: Option<&str>,
    types: &Value,
    usage: &str,
    description: Option<&str>,
    metadata: Value,
) -> Value {
    let id = State::new_id("seti_");
    let intent = json!({
        "id": id,
        "object": "setup_intent",
        "application": null,
        "automatic_payment_methods": null,
        "cancellation_reason": null,
        "client_secret": format!("{id}_secret_{}", random_id("", 24)),
        "created": state.now(),
        "customer": customer,
        "description": description,
        "flow_directions": null,
        "last_setup_error": null,
        "latest_attempt": null,
        "livemode": false,
        "mandate": null,
        "metadata": metadata,
        "next_action": null,
        "on_behalf_of": null,
        "payment_method": null,
        "payment_method_configuration_details": null,
        "payment_method_options": {"card": {"mandate_options": null, "network": null, "request_three_d_secure": "automatic"}},
        "payment_method_types": types,
        "single_use_mandate": null,
        "status": "requires_payment_method",
        "usage": usage,
    });
    state.put(intent.clone());
    intent
}

pub fn new_card(state: &mut State) -> Value {
    new_card_ending(state, "4242")
}

/// A new Visa card ending in `last4`.
fn new_card_ending(state: &mut State, last4: &str) -> Value {
    let exp_year = chrono::DateTime::from_timestamp(state.now(), 0).map_or(2030, |t| {
        use chrono::Datelike;
        i64::from(t.year())
    }) + 3;
    let card = json!({
        "id": State::new_id("pm_"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": {"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null},
            "email": null, "name": null, "phone": null, "tax_id": null
        },
        "card": {
            "brand": "visa",
            "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"},
            "country": "US",
            "display_brand": "visa",
            "exp_month": 12,
            "exp_year": exp_year,
            "fingerprint": random_id("", 16),
            "funding": "credit",
            "generated_from": null,
            "last4": last4,
            "networks": {"available": ["visa"], "preferred": null},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": true},
            "wallet": null
        },
        "created": state.now(),
        "customer": null,
        "livemode": false,
        "metadata": {},
        "type": "card",
    });
    state.put(card.clone());
    card
}

pub fn payment_methods_of(state: &State, customer: Option<&str>, kind: Option<&str>) -> Vec<Value> {
    state.all_where("payment_method", |m| {
        customer.is_none_or(|c| m["customer"] == c) && kind.is_none_or(|k| m["type"] == k)
    })
}

pub fn attach(state: &mut State, pm: &str, customer: &str, ctx: &RequestCtx) -> Answer {
    let mut method = state.get("payment_method", "PaymentMethod", pm, "payment_method")?;
    state
        .get("customer", "customer", customer, "customer")
        .map_err(|_| ApiError::no_such_param("customer", customer, "customer"))?;
    if method["customer"] == customer {
        return Ok(method);
    }
    if !method["customer"].is_null() {
        return Err(ApiError::invalid(
            "The payment method you provided has already been attached to a customer.",
            Some("payment_method"),
        ));
    }
    method["customer"] = json!(customer);
    state.put(method.clone());
    state.emit("payment_method.attached", method.clone(), None, ctx);
    Ok(method)
}

pub fn attach_payment_method(state: &mut State, id: &str, p: &Value, ctx: &RequestCtx) -> Answer {
    known(p, &["customer"])?;
    let customer = required(p, "customer")?;
    state.get("payment_method", "PaymentMethod", id, "payment_method")?;
    attach(state, id, customer, ctx)
}

pub fn detach_payment_method(state: &mut State, id: &str, ctx: &RequestCtx) -> Answer {
    let mut method = state.get("payment_method", "PaymentMethod", id, "payment_method")?;
    let Some(customer) = method["customer"].as_str().map(str::to_owned) else {
        return Err(ApiError::invalid(
            "The payment method you provided is not attached to a customer so detachment is impossible.",
            None,
        ));
    };
    method["customer"] = Value::Null;
    state.put(method.clone());
    if let Ok(mut owner) = state.get("customer", "customer", &customer, "customer")
        && owner["invoice_settings"]["default_payment_method"] == id
    {
        owner["invoice_settings"]["default_payment_method"] = Value::Null;
        state.put(owner);
    }
    state.emit("payment_method.detached", method.clone(), Some(json!({ "customer": customer })), ctx);
    Ok(method)
}

/// Stripe's test payment methods: `pm_card_visa` makes a new Visa card, and
/// `pm_card_chargeCustomerFail` one that attaches but whose charges are declined; a declining
/// one is answered with Stripe's 402 card error.
const DECLINING_CARDS: [(&str, &str); 3] = [
    ("pm_card_visa_chargeDeclined", "generic_decline"),
    ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("pm_card_visa_chargeDeclinedExpiredCard", "expired_card"),
];

pub fn resolve_test_card(state: &mut State, pm: &str, param: &str) -> Result<String, ApiError> {
    if pm == "pm_card_visa" {
        return Ok(new_card(state)["id"].as_str().unwrap_or_default().to_owned());
    }
    if pm == "pm_card_chargeCustomerFail" {
        let id = new_card_ending(state, "0341")["id"].as_str().unwrap_or_default().to_owned();
        state.failing_cards.insert(id.clone());
        return Ok(id);
    }
    if let Some((_, decline)) = DECLINING_CARDS.iter().find(|(name, _)| *name == pm) {
        return Err(card_declined(decline));
    }
    state
        .get("payment_method", "PaymentMethod", pm, param)
        .map_err(|_| ApiError::no_such_param("PaymentMethod", pm, param))?;
    Ok(pm.to_owned())
}

fn card_declined(decline_code: &str) -> ApiError {
    let message = match decline_code {
        "insufficient_funds" => "Your card has insufficient funds.",
        "expired_card" => "Your card has expired.",
        _ => "Your card was declined.",
    };
    ApiError {
        status: 402,
        kind: "card_error",
        code: Some(if decline_code == "expired_card" { "expired_card" } else { "card_declined" }),
        extra: vec![("decline_code", json!(decline_code))],
        ..ApiError::invalid(message, None)
    }
}

pub fn confirm_setup_intent(state: &mut State, id: &str, pm: &str, ctx: &RequestCtx) -> Answer {
    let mut intent = state.get("setup_intent", "setupintent", id, "intent")?;
    if intent["status"] == "succeeded" || intent["status"] == "canceled" {
        return Err(ApiError {
            code: Some("setup_intent_unexpected_state"),
            ..ApiError::invalid(
                format!(
                    "You cannot confirm this SetupIntent because it has a status of {}.",
                    intent["status"].as_str().unwrap_or("")
                ),
                None,
            )
        });
    }
    let pm = match resolve_test_card(state, pm, "payment_method") {
        Ok(pm) => pm,
        Err(mut error) if error.status == 402 => {
            intent["last_setup_error"] = error.body()["error"].clone();
            intent["status"] = json!("requires_payment_method");
            state.put(intent.clone());
            state.emit("setup_intent.setup_failed", intent.clone(), None, ctx);
            error.extra.push(("setup_intent", intent));
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    if let Some(customer) = intent["customer"].as_str().map(str::to_owned) {
        attach(state, &pm, &customer, ctx)?;
    }
    intent["payment_method"] = json!(pm);
    intent["last_setup_error"] = Value::Null;
    intent["status"] = json!("succeeded");
    state.put(intent.clone());
    state.emit("setup_intent.succeeded", intent.clone(), None, ctx);
    Ok(intent)
}

/// A PaymentIntent a customer paid with `payment_method` (Checkout in payment mode).
pub fn paid_intent(state: &mut State, amount: i64, currency: &Value, customer: &str, payment_method: &str) -> Value {
    let id = State::new_id("pi_");
    let intent = json!({
        "id": id,
        "object": "payment_intent",
        "allowed_payment_method_types": null,
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": null,
        "amount_received": amount,
        "application": null,
        "application_fee_amount": null,
        "automatic_payment_methods": null,
        "canceled_at": null,
        "cancellation_reason": null,
        "capture_method": "automatic",
        "client_secret": format!("{id}_secret_{}", random_id("", 24)),
        "confirmation_method": "automatic",
        "created": state.now(),
        "currency": currency,
        "customer": customer,
        "customer_account": null,
        "description": null,
        "excluded_payment_method_types": null,
        "hooks": null,
        "last_payment_error": null,
        "latest_charge": State::new_id("ch_"),
        "livemode": false,
        "managed_payments": null,
        "metadata": {},
        "next_action": null,
        "on_behalf_of": null,
        "payment_details": null,
        "payment_method": payment_method,
        "payment_method_configuration_details": null,
        "payment_method_options": null,
        "payment_method_types": ["card"],
        "payment_record": null,
        "presentment_details": null,
        "processing": null,
        "receipt_email": null,
        "review": null,
        "setup_future_usage": null,
        "shipping": null,
        "source": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": "succeeded",
        "transfer_data": null,
        "transfer_group": null,
    });
    state.put(intent.clone());
    intent
}
