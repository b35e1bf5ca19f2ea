//! The HTTP surface: authentication, rate limits, API versions, idempotency keys, routing to
//! the resources, and the hosted Checkout and portal pages.

use super::params::{list, list_where, s};
use super::state::{
    API_VERSION, Answer, ApiError, Bucket, IdempotencyRecord, RequestCtx, State, random_id, set_livemode,
};
use super::{
    Shared, billing, catalog, checkout, customers, form, holds, meters, outage, payments, subscriptions, webhooks,
};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;
use std::sync::Arc;

pub fn configure(cfg: &mut web::ServiceConfig, shared: Arc<Shared>) {
    cfg.app_data(web::Data::from(shared))
        .route("/c/pay/{id}", web::get().to(checkout_page))
        .route("/c/pay/{id}", web::post().to(checkout_pay))
        .route("/p/session/{id}", web::get().to(portal_page))
        .route("/i/{id}", web::get().to(invoice_page))
        .configure(holds::configure)
        .configure(outage::configure)
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

/// The hosted invoice page an invoice's `hosted_invoice_url` points at: its lines and status.
async fn invoice_page(id: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let mut state = shared.lock();
    state.tick();
    match state.get("invoice", "invoice", &id, "invoice") {
        Ok(invoice) => {
            let lines: String = invoice["lines"]["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    format!(
                        "<tr><td>{}</td><td>{}</td></tr>",
                        escape_html(l["description"].as_str().unwrap_or_default()),
                        l["amount"]
                    )
                })
                .collect();
            HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
                "<!doctype html><title>Sandbox invoice</title><p>Invoice {number} ({status})</p><table>{lines}</table>\
                 <p>Total {total} {currency}</p>",
                number = invoice["number"].as_str().unwrap_or_default(),
                status = invoice["status"].as_str().unwrap_or_default(),
                total = invoice["total"],
                currency = invoice["currency"].as_str().unwrap_or_default(),
            ))
        }
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
    match checkout::complete_checkout_session(&mut state, &id) {
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
    let mut held = None;
    let response = respond(&req, &body, &shared, &mut held);
    // A held request is applied; its answer waits for the release, other requests go on.
    if let Some(release) = held {
        holds::wait_released(release).await;
    }
    response
}

/// Answers one API request under the simulator's lock; `held` gets the release of the hold
/// the request fell to, if any.
fn respond(
    req: &HttpRequest,
    body: &web::Bytes,
    shared: &Shared,
    held: &mut Option<tokio::sync::watch::Receiver<bool>>,
) -> HttpResponse {
    let request_id = random_id("req_", 14);
    // The version pinned by `Stripe-Version`, else the account's default.
    let version = req.headers().get("stripe-version").and_then(|v| v.to_str().ok()).unwrap_or(API_VERSION).to_owned();
    let error = |e: &ApiError| reply(e.status, &e.body(), &request_id, &version, false);
    let mut state = shared.lock();
    // What fell due on the clock happens before the request is seen, as it did at Stripe.
    state.tick();

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
            let prefix = if key.starts_with("sk_live_") { "sk_live_" } else { "sk_test_" };
            return error(&ApiError {
                status: 401,
                ..ApiError::invalid(format!("Invalid API Key provided: {prefix}****{tail}"), None)
            });
        }
        Some(key) => key.to_owned(),
    };

    if let Some(status) = state.failures.pop_front().or(state.outage) {
        return error(&injected_failure(status));
    }

    // Rate limits count real seconds (decision 0037): reads and writes apart, meter events on
    // a budget of their own.
    let bucket = match *req.method() {
        Method::GET => Bucket::Read,
        Method::POST if req.path() == "/v1/billing/meter_events" => Bucket::MeterEvents,
        _ => Bucket::Write,
    };
    let limit = if bucket == Bucket::MeterEvents { state.meter_event_rate_limit } else { state.rate_limit };
    if let Some(limit) = limit {
        let second = chrono::Utc::now().timestamp();
        let window = state.rate_window.entry((key, bucket)).or_insert((second, 0));
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
    let has_body = (method == Method::POST || method == Method::DELETE) && !body.is_empty();
    if has_body && !content_type.starts_with("application/x-www-form-urlencoded") {
        return error(&ApiError::invalid(
            format!(
                "Invalid request: unsupported Content-Type {content_type}. If error persists and you need assistance, \
                 please contact support@stripe.com."
            ),
            None,
        ));
    }
    // Parameters come in the body of a POST (and of a DELETE, as Stripe's clients send them),
    // else in the query string.
    let raw = if has_body || method == Method::POST {
        String::from_utf8_lossy(body).into_owned()
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
        state.expire_idempotency_keys();
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
    let answer = route(&mut state, &method, req.path(), &params, &ctx).and_then(|mut value| {
        for path in params.get("expand").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            expand(&state, &mut value, path, &path.split('.').collect::<Vec<_>>())?;
        }
        Ok(value)
    });
    let (status, mut answer) = match answer {
        Ok(value) => (200, value),
        Err(e) => (e.status, e.body()),
    };
    set_livemode(&mut answer, state.livemode);
    // Stripe saves a result only once the endpoint started executing: not for parameters that
    // failed validation, which is where every 4xx here except a card error comes from.
    if status == 200 {
        *held = state.take_hold(method.as_str(), req.path(), idempotency_key.as_deref());
    }
    if let Some(key) = idempotency_key.filter(|_| status == 200 || status == 402) {
        let at = state.now();
        state.idempotency_order.push_back((at, key.clone()));
        state.idempotency.insert(key, IdempotencyRecord { request: fingerprint, status, body: answer.clone(), at });
    }
    reply(status, &answer, &request_id, &version, false)
}

/// The answer to a request a test made fail: Stripe's 429 `rate_limit`, or its `api_error` for
/// a 5xx. Nothing is changed.
pub(super) fn injected_failure(status: u16) -> ApiError {
    if status == 429 {
        ApiError {
            status: 429,
            code: Some("rate_limit"),
            ..ApiError::invalid(
                "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                None,
            )
        }
    } else {
        ApiError {
            status,
            kind: "api_error",
            ..ApiError::invalid("An unknown error occurred. Please retry the request.", None)
        }
    }
}

/// Replaces the id at a dotted `expand` path (`latest_invoice`, `items.data.price.product`) with
/// the stored object; lists along the path are expanded element by element.
fn expand(state: &State, value: &mut Value, full: &str, path: &[&str]) -> Result<(), ApiError> {
    let cannot = || ApiError::invalid(format!("This property cannot be expanded ({full})."), Some("expand"));
    let Some((field, rest)) = path.split_first() else { return Ok(()) };
    let child = value.get_mut(*field).ok_or_else(cannot)?;
    match child {
        Value::Null => Ok(()),
        Value::String(id) if rest.is_empty() => {
            *child = state.objects.get(id.as_str()).cloned().ok_or_else(cannot)?;
            Ok(())
        }
        Value::Object(_) if rest.is_empty() => Ok(()),
        Value::Array(items) => items.iter_mut().try_for_each(|item| expand(state, item, full, rest)),
        _ if rest.is_empty() => Err(cannot()),
        _ => expand(state, child, full, rest),
    }
}

fn route(state: &mut State, method: &Method, path: &str, p: &Value, ctx: &RequestCtx) -> Answer {
    let segments: Vec<&str> = path.strip_prefix("/v1/").unwrap_or("").split('/').collect();
    let (get, post, delete) = (method == Method::GET, method == Method::POST, method == Method::DELETE);
    match segments.as_slice() {
        ["customers"] if post => customers::create_customer(state, p, ctx),
        ["customers"] if get => {
            let email = s(p, "email");
            let items = state.all_where("customer", |c| email.is_none_or(|e| c["email"] == e));
            list("/v1/customers", items, p)
        }
        ["customers", id] if get => state.get("customer", "customer", id, "id"),
        ["customers", id] if post => customers::update_customer(state, id, p, ctx),
        ["customers", id, "payment_methods"] if get => {
            state.get("customer", "customer", id, "customer")?;
            list(
                &format!("/v1/customers/{id}/payment_methods"),
                payments::payment_methods_of(state, Some(id), s(p, "type")),
                p,
            )
        }
        ["products"] if post => catalog::create_product(state, p),
        ["products"] if get => list("/v1/products", state.all("product"), p),
        ["products", id] if get => state.get("product", "product", id, "id"),
        ["prices"] if post => catalog::create_price(state, p),
        ["prices"] if get => {
            let product = s(p, "product");
            let active = s(p, "active");
            let lookup_keys: Option<Vec<&str>> = p
                .get("lookup_keys")
                .and_then(Value::as_array)
                .map(|keys| keys.iter().filter_map(Value::as_str).collect());
            if lookup_keys.as_ref().is_some_and(|k| k.len() > 10) {
                return Err(ApiError::invalid("You may only specify up to 10 lookup_keys.", Some("lookup_keys")));
            }
            let items = state.all_where("price", |x| {
                product.is_none_or(|v| x["product"] == v)
                    && active.is_none_or(|a| x["active"] == (a == "true"))
                    && lookup_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| x["lookup_key"] == *k))
            });
            list("/v1/prices", items, p)
        }
        ["prices", id] if get => state.get("price", "price", id, "id"),
        ["billing", "meters"] if post => catalog::create_meter(state, p),
        ["billing", "meters"] if get => {
            let status = super::params::one_of(p, "status", "status", &["active", "inactive"])?;
            let items = state.all_where("billing.meter", |m| status.is_none_or(|st| m["status"] == st));
            list("/v1/billing/meters", items, p)
        }
        ["billing", "meters", id] if get => state.get("billing.meter", "billing.meter", id, "id"),
        ["billing", "meters", id, "event_summaries"] if get => meters::event_summaries(state, id, p),
        ["billing", "meter_events"] if post => meters::create_meter_event(state, p),
        ["billing", "meter_event_adjustments"] if post => meters::create_adjustment(state, p),
        ["subscriptions"] if post => subscriptions::create_subscription(state, p, ctx),
        ["subscriptions"] if get => {
            let customer = s(p, "customer");
            let status = s(p, "status");
            let keep = |x: &Value| {
                customer.is_none_or(|c| x["customer"] == c)
                    && match status {
                        Some("all") => true,
                        Some(status) => x["status"] == status,
                        None => x["status"] != "canceled",
                    }
            };
            list_where("/v1/subscriptions", "subscription", state.all("subscription"), keep, p)
        }
        ["subscriptions", id] if get => state.get("subscription", "subscription", id, "id"),
        ["subscriptions", id] if delete => subscriptions::cancel_subscription(state, id, p, ctx),
        ["subscription_items"] if post => subscriptions::create_item(state, p, ctx),
        ["subscription_items"] if get => subscriptions::list_items(state, p),
        ["subscription_items", id] if get => subscriptions::get_item(state, id),
        ["subscription_items", id] if delete => subscriptions::delete_item(state, id, p, ctx),
        ["setup_intents"] if post => payments::create_setup_intent(state, p),
        ["setup_intents", id] if get => state.get("setup_intent", "setupintent", id, "intent"),
        ["setup_intents", id, "confirm"] if post => {
            super::params::known(p, &["mandate_data", "payment_method", "return_url", "use_stripe_sdk"])?;
            let current = state.get("setup_intent", "setupintent", id, "intent")?;
            let pm = s(p, "payment_method").or_else(|| current["payment_method"].as_str()).map(str::to_owned);
            let pm = pm.ok_or_else(|| ApiError::missing_param("payment_method"))?;
            payments::confirm_setup_intent(state, id, &pm, ctx)
        }
        ["payment_methods"] if get => {
            let items = payments::payment_methods_of(state, s(p, "customer"), s(p, "type"));
            list("/v1/payment_methods", items, p)
        }
        ["payment_methods", id] if get => state.get("payment_method", "PaymentMethod", id, "id"),
        ["payment_methods", id, "attach"] if post => {
            let id = payments::resolve_test_card(state, id, "payment_method")?;
            payments::attach_payment_method(state, &id, p, ctx)
        }
        ["payment_methods", id, "detach"] if post => payments::detach_payment_method(state, id, ctx),
        ["checkout", "sessions"] if post => checkout::create_checkout_session(state, p),
        ["checkout", "sessions", id] if get => state.get("checkout.session", "checkout.session", id, "session"),
        ["invoices"] if get => {
            let customer = s(p, "customer");
            let subscription = s(p, "subscription");
            let items = state.all_where("invoice", |x| {
                customer.is_none_or(|c| x["customer"] == c)
                    && subscription.is_none_or(|c| x["parent"]["subscription_details"]["subscription"] == c)
            });
            list("/v1/invoices", items, p)
        }
        ["invoices", "create_preview"] if post => billing::create_preview(state, p),
        ["invoices", id] if get => state.get("invoice", "invoice", id, "invoice"),
        ["payment_intents", id] if get => state.get("payment_intent", "payment_intent", id, "intent"),
        ["billing_portal", "sessions"] if post => checkout::create_portal_session(state, p),
        ["webhook_endpoints"] if post => webhooks::create_webhook_endpoint(state, p),
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
