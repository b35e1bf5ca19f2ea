//! The HTTP surface: authentication, rate limits, idempotency keys, routing, and each resource's
//! validation and JSON shape.

use super::Shared;
use super::form;
use super::state::{API_VERSION, ApiError, Endpoint, IdempotencyRecord, RequestCtx, State, random_id};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use std::sync::Arc;

const DAY: i64 = 86_400;

type Answer = Result<Value, ApiError>;

pub fn configure(cfg: &mut web::ServiceConfig, shared: Arc<Shared>) {
    cfg.app_data(web::Data::from(shared))
        .route("/c/pay/{id}", web::get().to(checkout_page))
        .route("/c/pay/{id}", web::post().to(checkout_pay))
        .route("/p/session/{id}", web::get().to(portal_page))
        .default_service(web::to(handle));
}

/// The hosted Checkout page a session's `url` points at: one button that pays as the customer.
async fn checkout_page(id: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let state = shared.lock();
    match state.get("checkout.session", "checkout.session", &id, "session") {
        Ok(session) if session["status"] == "open" => {
            HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
                "<!doctype html><title>Sandbox Checkout</title><form method=\"post\"><p>Checkout {id} ({mode})</p>\
             <button type=\"submit\">Pay with Visa 4242</button></form>",
                mode = session["mode"].as_str().unwrap_or_default()
            ))
        }
        _ => HttpResponse::NotFound()
            .content_type("text/html; charset=utf-8")
            .body("This Checkout Session is no longer available."),
    }
}

/// The billing portal page a portal session's `url` points at, linking back to its `return_url`.
async fn portal_page(id: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let state = shared.lock();
    match state.get("billing_portal.session", "billing_portal.session", &id, "session") {
        Ok(session) => HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
            "<!doctype html><title>Sandbox billing portal</title><p>Billing portal for {customer}</p>\
             <a href=\"{back}\">Return</a>",
            customer = session["customer"].as_str().unwrap_or_default(),
            back = escape_html(session["return_url"].as_str().unwrap_or_default()),
        )),
        Err(_) => HttpResponse::NotFound().finish(),
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Completes the session as the customer and redirects to its `success_url`, with
/// `{CHECKOUT_SESSION_ID}` replaced as Stripe replaces it.
async fn checkout_pay(id: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let mut state = shared.lock();
    match complete_checkout_session(&mut state, &id) {
        Ok(session) => {
            let target = session["success_url"].as_str().unwrap_or_default().replace("{CHECKOUT_SESSION_ID}", &id);
            HttpResponse::SeeOther().insert_header(("location", target)).finish()
        }
        Err(e) => HttpResponse::NotFound().content_type("text/html; charset=utf-8").body(e.message),
    }
}

fn reply(status: u16, body: &Value, request_id: &str, version: &str, replayed: bool) -> HttpResponse {
    let mut response = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    response.insert_header(("request-id", request_id.to_owned())).insert_header(("stripe-version", version.to_owned()));
    if replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    // Errors that a retry cannot fix say so; lock conflicts, rate limits and 5xx leave the choice to the client.
    if (400..=404).contains(&status) {
        response.insert_header(("stripe-should-retry", "false"));
    }
    response.json(body)
}

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let request_id = random_id("req_", 14);
    // The version pinned by `Stripe-Version`, else the account's default.
    let version = req.headers().get("stripe-version").and_then(|v| v.to_str().ok()).unwrap_or(API_VERSION).to_owned();
    let error = |e: &ApiError| reply(e.status, &e.body(), &request_id, &version, false);
    let mut state = shared.lock();

    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let key = match bearer {
        None | Some("") => {
            return error(&ApiError {
                status: 401,
                ..ApiError::invalid(
                    "You did not provide an API key. You need to provide your API key in the Authorization header, \
                     using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                    None,
                )
            });
        }
        Some(key) if key != state.secret_key => {
            let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            return error(&ApiError {
                status: 401,
                ..ApiError::invalid(format!("Invalid API Key provided: sk_test_****{tail}"), None)
            });
        }
        Some(key) => key.to_owned(),
    };

    if let Some(limit) = state.rate_limit {
        let second = chrono::Utc::now().timestamp();
        let window = state.rate_window.entry(key).or_insert((second, 0));
        if window.0 != second {
            *window = (second, 0);
        }
        window.1 += 1;
        if window.1 > limit {
            return error(&ApiError {
                status: 429,
                code: Some("rate_limit"),
                ..ApiError::invalid(
                    "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                    None,
                )
            });
        }
    }

    if version.get(..10).is_none_or(|date| chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err()) {
        return error(&ApiError::invalid(format!("Invalid Stripe API version: {version}"), None));
    }
    let method = req.method().clone();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if method == Method::POST && !body.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return error(&ApiError::invalid(
            format!(
                "Invalid request: unsupported Content-Type {content_type}. If error persists and you need assistance, \
                 please contact support@stripe.com."
            ),
            None,
        ));
    }
    let raw = if method == Method::POST {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        req.query_string().to_owned()
    };
    let params = match form::parse(&raw) {
        Ok(params) => params,
        Err(e) => return error(&e),
    };

    let idempotency_key = (method == Method::POST)
        .then(|| req.headers().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .flatten();
    let fingerprint = format!("{method} {} {params}", req.path());
    if let Some(key) = &idempotency_key {
        if key.len() > 255 {
            return error(&ApiError::invalid("Idempotency keys may be at most 255 characters long.", None));
        }
        let now = state.now();
        state.idempotency.retain(|_, r| now - r.at < DAY);
        if let Some(record) = state.idempotency.get(key) {
            if record.request != fingerprint {
                return error(&ApiError {
                    kind: "idempotency_error",
                    ..ApiError::invalid(
                        format!(
                            "Keys for idempotent requests can only be used with the same parameters they were first \
                             used with. Try using a key other than '{key}' if you meant to execute a different request."
                        ),
                        None,
                    )
                });
            }
            return reply(record.status, &record.body, &request_id, &version, true);
        }
    }

    let ctx = RequestCtx { id: Some(request_id.clone()), idempotency_key: idempotency_key.clone() };
    let (status, answer) = match route(&mut state, &method, req.path(), &params, &ctx) {
        Ok(value) => (200, value),
        Err(e) => (e.status, e.body()),
    };
    // Stripe saves a result only once the endpoint started executing: not for parameters that
    // failed validation, which is where every 4xx here except a card error comes from.
    if let Some(key) = idempotency_key.filter(|_| status == 200 || status == 402) {
        let at = state.now();
        state.idempotency.insert(key, IdempotencyRecord { request: fingerprint, status, body: answer.clone(), at });
    }
    reply(status, &answer, &request_id, &version, false)
}

fn route(state: &mut State, method: &Method, path: &str, p: &Value, ctx: &RequestCtx) -> Answer {
    let segments: Vec<&str> = path.strip_prefix("/v1/").unwrap_or("").split('/').collect();
    let (get, post, delete) = (method == Method::GET, method == Method::POST, method == Method::DELETE);
    match segments.as_slice() {
        ["customers"] if post => create_customer(state, p, ctx),
        ["customers"] if get => {
            let email = s(p, "email");
            let items = state.all("customer").into_iter().filter(|c| email.is_none_or(|e| c["email"] == e)).collect();
            list("/v1/customers", items, p)
        }
        ["customers", id] if get => state.get("customer", "customer", id, "id"),
        ["customers", id] if post => update_customer(state, id, p, ctx),
        ["customers", id, "payment_methods"] if get => {
            state.get("customer", "customer", id, "customer")?;
            list(&format!("/v1/customers/{id}/payment_methods"), payment_methods_of(state, Some(id), s(p, "type")), p)
        }
        ["products"] if post => create_product(state, p),
        ["products"] if get => list("/v1/products", state.all("product"), p),
        ["products", id] if get => state.get("product", "product", id, "id"),
        ["prices"] if post => create_price(state, p),
        ["prices"] if get => {
            let product = s(p, "product");
            let items = state.all("price").into_iter().filter(|x| product.is_none_or(|v| x["product"] == v)).collect();
            list("/v1/prices", items, p)
        }
        ["prices", id] if get => state.get("price", "price", id, "id"),
        ["billing", "meters"] if post => create_meter(state, p),
        ["billing", "meters"] if get => list("/v1/billing/meters", state.all("billing.meter"), p),
        ["billing", "meters", id] if get => state.get("billing.meter", "billing.meter", id, "id"),
        ["billing", "meter_events"] if post => create_meter_event(state, p),
        ["subscriptions"] if post => create_subscription(state, p, ctx),
        ["subscriptions"] if get => {
            let customer = s(p, "customer");
            let status = s(p, "status");
            let items = state
                .all("subscription")
                .into_iter()
                .filter(|x| customer.is_none_or(|c| x["customer"] == c))
                .filter(|x| match status {
                    Some("all") => true,
                    Some(status) => x["status"] == status,
                    None => x["status"] != "canceled",
                })
                .collect();
            list("/v1/subscriptions", items, p)
        }
        ["subscriptions", id] if get => state.get("subscription", "subscription", id, "id"),
        ["subscriptions", id] if delete => cancel_subscription(state, id, ctx),
        ["setup_intents"] if post => create_setup_intent(state, p),
        ["setup_intents", id] if get => state.get("setup_intent", "setupintent", id, "intent"),
        ["setup_intents", id, "confirm"] if post => {
            known(p, &["mandate_data", "payment_method", "return_url", "use_stripe_sdk"])?;
            let current = state.get("setup_intent", "setupintent", id, "intent")?;
            let pm = s(p, "payment_method").or_else(|| current["payment_method"].as_str()).map(str::to_owned);
            let pm = pm.ok_or_else(|| ApiError::missing_param("payment_method"))?;
            confirm_setup_intent(state, id, &pm, ctx)
        }
        ["payment_methods"] if get => {
            let items = payment_methods_of(state, s(p, "customer"), s(p, "type"));
            list("/v1/payment_methods", items, p)
        }
        ["payment_methods", id] if get => state.get("payment_method", "PaymentMethod", id, "id"),
        ["payment_methods", id, "attach"] if post => {
            let id = resolve_test_card(state, id, "payment_method")?;
            attach_payment_method(state, &id, p, ctx)
        }
        ["payment_methods", id, "detach"] if post => detach_payment_method(state, id, ctx),
        ["checkout", "sessions"] if post => create_checkout_session(state, p),
        ["checkout", "sessions", id] if get => state.get("checkout.session", "checkout.session", id, "session"),
        ["invoices"] if get => {
            let customer = s(p, "customer");
            let subscription = s(p, "subscription");
            let items = state
                .all("invoice")
                .into_iter()
                .filter(|x| customer.is_none_or(|c| x["customer"] == c))
                .filter(|x| subscription.is_none_or(|c| x["parent"]["subscription_details"]["subscription"] == c))
                .collect();
            list("/v1/invoices", items, p)
        }
        ["invoices", id] if get => state.get("invoice", "invoice", id, "invoice"),
        ["billing_portal", "sessions"] if post => create_portal_session(state, p),
        ["webhook_endpoints"] if post => create_webhook_endpoint(state, p),
        _ => Err(ApiError {
            status: 404,
            ..ApiError::invalid(
                format!(
                    "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help \
                     at https://support.stripe.com/."
                ),
                None,
            )
        }),
    }
}

/// A non-empty string parameter.
fn s<'a>(p: &'a Value, key: &str) -> Option<&'a str> {
    p.get(key).and_then(Value::as_str).filter(|v| !v.is_empty())
}

fn required<'a>(p: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    s(p, key).ok_or_else(|| ApiError::missing_param(key))
}

fn integer(p: &Value, key: &str, param: &str) -> Result<Option<i64>, ApiError> {
    s(p, key)
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::invalid(format!("Invalid integer: {v}"), Some(param))))
        .transpose()
}

fn one_of<'a>(p: &'a Value, key: &str, param: &str, allowed: &[&str]) -> Result<Option<&'a str>, ApiError> {
    match s(p, key) {
        Some(v) if !allowed.contains(&v) => {
            Err(ApiError::invalid(format!("Invalid {param}: must be one of {}", allowed.join(", ")), Some(param)))
        }
        other => Ok(other),
    }
}

/// Rejects top-level parameters the endpoint does not know, as Stripe does.
fn known(p: &Value, allowed: &[&str]) -> Result<(), ApiError> {
    let unknown = p.as_object().and_then(|m| m.keys().find(|k| *k != "expand" && !allowed.contains(&k.as_str())));
    match unknown {
        Some(key) => Err(ApiError::invalid(format!("Received unknown parameter: {key}"), Some(key))),
        None => Ok(()),
    }
}

fn metadata(p: &Value) -> Value {
    let entries = p.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    Value::Object(entries.into_iter().filter(|(_, v)| v.as_str().is_some_and(|v| !v.is_empty())).collect())
}

fn list(url: &str, items: Vec<Value>, p: &Value) -> Answer {
    let limit = integer(p, "limit", "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("Invalid limit: must be between 1 and 100", Some("limit")));
    }
    let start = match s(p, "starting_after") {
        Some(after) => items.iter().position(|x| x["id"] == after).map_or(0, |i| i + 1),
        None => 0,
    };
    let rest: Vec<Value> = items.into_iter().skip(start).collect();
    let limit = usize::try_from(limit).unwrap_or(10);
    let has_more = rest.len() > limit;
    let data: Vec<Value> = rest.into_iter().take(limit).collect();
    Ok(json!({"object": "list", "data": data, "has_more": has_more, "url": url}))
}

fn create_customer(state: &mut State, p: &Value, ctx: &RequestCtx) -> Answer {
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

fn update_customer(state: &mut State, id: &str, p: &Value, ctx: &RequestCtx) -> Answer {
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

fn create_product(state: &mut State, p: &Value) -> Answer {
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

fn create_price(state: &mut State, p: &Value) -> Answer {
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
        (None, Some(d)) if d.parse::<f64>().is_ok_and(|x| x.is_finite() && x >= 0.0) => d.to_owned(),
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

fn create_meter(state: &mut State, p: &Value) -> Answer {
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
    if state.all("billing.meter").iter().any(|m| m["event_name"] == event_name && m["status"] == "active") {
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

fn create_meter_event(state: &mut State, p: &Value) -> Answer {
    known(p, &["event_name", "identifier", "payload", "timestamp"])?;
    let event_name = required(p, "event_name")?;
    let payload = p.get("payload").and_then(Value::as_object).ok_or_else(|| ApiError::missing_param("payload"))?;
    let meter = state
        .all("billing.meter")
        .into_iter()
        .find(|m| m["event_name"] == event_name && m["status"] == "active")
        .ok_or_else(|| {
            ApiError::invalid(format!("No active meter was found for event_name `{event_name}`."), Some("event_name"))
        })?;
    let customer_key = meter["customer_mapping"]["event_payload_key"].as_str().unwrap_or("stripe_customer_id");
    let value_key = meter["value_settings"]["event_payload_key"].as_str().unwrap_or("value");
    let customer_param = format!("payload[{customer_key}]");
    let customer = payload
        .get(customer_key)
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::missing_param(&customer_param))?;
    state
        .get("customer", "customer", customer, &customer_param)
        .map_err(|_| ApiError::no_such_param("customer", customer, &customer_param))?;
    let value_param = format!("payload[{value_key}]");
    if meter["default_aggregation"]["formula"] != "count" {
        let value =
            payload.get(value_key).and_then(Value::as_str).ok_or_else(|| ApiError::missing_param(&value_param))?;
        if !value.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(ApiError::invalid(format!("The value `{value}` is not a valid number."), Some(&value_param)));
        }
        if significant_digits(value) > 15 {
            return Err(ApiError::invalid(
                format!("The value in the event payload can have at most 15 digits. Received `{value}`."),
                Some(&value_param),
            ));
        }
    }
    let now = state.now();
    let timestamp = integer(p, "timestamp", "timestamp")?.unwrap_or(now);
    if timestamp < now - 35 * DAY {
        return Err(ApiError::invalid(
            "Timestamp must be within the past 35 days. Meter events with older timestamps are rejected.",
            Some("timestamp"),
        ));
    }
    if timestamp > now + 300 {
        return Err(ApiError::invalid("Timestamp must not be more than 5 minutes in the future.", Some("timestamp")));
    }
    let identifier = s(p, "identifier").map_or_else(|| random_id("", 24), str::to_owned);
    state.meter_identifiers.retain(|_, at| now - *at < DAY);
    if state.meter_identifiers.contains_key(&identifier) {
        return Err(ApiError::invalid(
            format!("An event already exists with identifier {identifier}."),
            Some("identifier"),
        ));
    }
    state.meter_identifiers.insert(identifier.clone(), now);
    let event = json!({
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": false,
        "payload": payload,
        "timestamp": timestamp,
    });
    state.meter_events.push(event.clone());
    Ok(event)
}

/// Digits of a decimal number from its first non-zero digit, without trailing fractional zeros.
fn significant_digits(value: &str) -> usize {
    let unsigned = value.trim_start_matches(['-', '+']);
    let (mantissa, _) = unsigned.split_once(['e', 'E']).unwrap_or((unsigned, ""));
    let trimmed = if mantissa.contains('.') { mantissa.trim_end_matches('0') } else { mantissa };
    trimmed.chars().filter(char::is_ascii_digit).skip_while(|c| *c == '0').count()
}

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

fn create_subscription(state: &mut State, p: &Value, ctx: &RequestCtx) -> Answer {
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

fn cancel_subscription(state: &mut State, id: &str, ctx: &RequestCtx) -> Answer {
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

fn create_setup_intent(state: &mut State, p: &Value) -> Answer {
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

fn new_setup_intent(
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

fn new_card(state: &mut State) -> Value {
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
            "exp_year": chrono::Utc::now().format("%Y").to_string().parse::<i64>().unwrap_or(2030) + 3,
            "fingerprint": random_id("", 16),
            "funding": "credit",
            "generated_from": null,
            "last4": "4242",
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

fn payment_methods_of(state: &State, customer: Option<&str>, kind: Option<&str>) -> Vec<Value> {
    state
        .all("payment_method")
        .into_iter()
        .filter(|m| customer.is_none_or(|c| m["customer"] == c))
        .filter(|m| kind.is_none_or(|k| m["type"] == k))
        .collect()
}

fn attach(state: &mut State, pm: &str, customer: &str, ctx: &RequestCtx) -> Answer {
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

fn attach_payment_method(state: &mut State, id: &str, p: &Value, ctx: &RequestCtx) -> Answer {
    known(p, &["customer"])?;
    let customer = required(p, "customer")?;
    state.get("payment_method", "PaymentMethod", id, "payment_method")?;
    attach(state, id, customer, ctx)
}

fn detach_payment_method(state: &mut State, id: &str, ctx: &RequestCtx) -> Answer {
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

/// Stripe's test payment methods: `pm_card_visa` makes a new Visa card; a declining one is
/// answered with Stripe's 402 card error.
const DECLINING_CARDS: [(&str, &str); 3] = [
    ("pm_card_visa_chargeDeclined", "generic_decline"),
    ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("pm_card_visa_chargeDeclinedExpiredCard", "expired_card"),
];

fn resolve_test_card(state: &mut State, pm: &str, param: &str) -> Result<String, ApiError> {
    if pm == "pm_card_visa" {
        return Ok(new_card(state)["id"].as_str().unwrap_or_default().to_owned());
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

fn create_checkout_session(state: &mut State, p: &Value) -> Answer {
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
            let quantity = integer(item, "quantity", &format!("line_items[{i}][quantity]"))?
                .ok_or_else(|| ApiError::missing_param(&format!("line_items[{i}][quantity]")))?;
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
                (integer(data, "unit_amount", &format!("{prefix}[unit_amount]"))?, Some(currency.to_lowercase()))
            } else {
                return Err(ApiError::missing_param(&format!("line_items[{i}][price]")));
            };
            let unit =
                unit.ok_or_else(|| ApiError::missing_param(&format!("line_items[{i}][price_data][unit_amount]")))?;
            total = total.saturating_add(unit.saturating_mul(quantity));
            currency = currency.or(item_currency);
        }
        amount = Some(total);
    }
    let id = random_id("cs_test_", 58);
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
        session["payment_intent"] = json!(State::new_id("pi_"));
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
    let number = state.all("invoice").len() + 1;
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

fn create_portal_session(state: &mut State, p: &Value) -> Answer {
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

fn create_webhook_endpoint(state: &mut State, p: &Value) -> Answer {
    known(p, &["api_version", "description", "enabled_events", "metadata", "url"])?;
    let url = required(p, "url")?;
    let events: Vec<String> = p
        .get("enabled_events")
        .and_then(Value::as_array)
        .map(|e| e.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .filter(|e: &Vec<String>| !e.is_empty())
        .ok_or_else(|| ApiError::missing_param("enabled_events"))?;
    let endpoint = Endpoint { id: State::new_id("we_"), url: url.to_owned(), secret: random_id("whsec_", 32), events };
    let answer = json!({
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "api_version": s(p, "api_version"),
        "application": null,
        "created": state.now(),
        "description": s(p, "description"),
        "enabled_events": endpoint.events,
        "livemode": false,
        "metadata": metadata(p),
        "secret": endpoint.secret,
        "status": "enabled",
        "url": url,
    });
    state.endpoints.push(endpoint);
    Ok(answer)
}
