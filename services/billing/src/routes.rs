//! billing's HTTP API.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /api/billing` | the account owner | billing mode, card, subscription status, recent invoices |
//! | `POST /api/billing/payment-method` | the account owner | a Checkout Session in setup mode to add a card |
//! | `POST /api/billing/portal` | the account owner | a Stripe billing portal session |
//! | `POST /webhooks/stripe` | Stripe (signed) | payment methods, subscriptions, invoices |
//!
//! A team member is refused every route for the account owner, from billing's own record of
//! their membership ([`crate::memberships`]), whatever roles the gateway gave them.

use crate::accounts::{self, CardSummary, InvoiceSummary};
use crate::api::MONEY_DOC;
use crate::config::{CheckoutConfig, PortalConfig};
use crate::error::{BillingCode, describe};
use crate::stripe::{Object, Stripe, params};
use crate::webhooks::{self, ApplyError, Event, Outcome, SUPPORTED_EVENTS, Webhooks};
use actix_web::{HttpRequest, HttpResponse, web};
use hopsbridge_domain::{BillingMode, UserId};
use hopsbridge_platform::Secret;
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode, PlatformCode};
use serde::Serialize;
use serde_json::json;

/// How many invoices `GET /api/billing` shows.
pub const RECENT_INVOICES: i64 = 12;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    /// billing's schema.
    pub db: Database,
    /// The Stripe API.
    pub stripe: Stripe,
    /// The webhook endpoint's signing secret.
    pub webhook_secret: Secret<String>,
    /// The currency Checkout collects cards for.
    pub currency: String,
    /// Checkout's return addresses.
    pub checkout: CheckoutConfig,
    /// The portal's return address.
    pub portal: PortalConfig,
    /// Applies webhook events.
    pub webhooks: Webhooks,
    /// Calendar time: whose team a member is in now.
    pub clock: Clock,
}

/// Registers the routes.
pub fn configure(c: &mut web::ServiceConfig, state: State) {
    c.app_data(web::Data::new(state))
        .route("/api/billing", web::get().to(get_billing))
        .route("/api/billing/payment-method", web::post().to(add_payment_method))
        .route("/api/billing/portal", web::post().to(portal))
        .route("/webhooks/stripe", web::post().to(stripe_webhook));
}

/// Registers billing's routes: these and the money routes ([`crate::api`]).
pub fn configure_all(
    c: &mut web::ServiceConfig,
    state: State,
    money: crate::api::Api,
    lifecycle: crate::lifecycle::Lifecycle,
) {
    configure(c, state);
    crate::api::configure(c, money);
    crate::api::configure_plans(c, lifecycle);
}

type Data = web::Data<State>;

/// Billing is the owner's business: members and everyone else are refused.
fn owner(caller: &Caller) -> Result<UserId, ApiError> {
    let id = caller.person()?;
    if !caller.has(Role::Owner) {
        return Err(BillingCode::OwnerOnly.error());
    }
    Ok(id)
}

/// The caller's account, if opened; refused when the caller is no owner, or when billing's own
/// record makes them a team member (the gateway's roles may not know yet).
async fn owners_account(state: &State, caller: &Caller) -> Result<Option<accounts::Account>, ApiError> {
    owner_account(&state.db, caller, state.clock.now()).await
}

/// The caller's account, as [`owners_account`] finds it at calendar time `now`.
pub(crate) async fn owner_account(
    db: &Database,
    caller: &Caller,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<accounts::Account>, ApiError> {
    let user = owner(caller)?;
    let mut conn = db.conn().await?;
    let account = accounts::get(&mut conn, user).await.map_err(ApiError::internal)?;
    if account.as_ref().is_some_and(|a| a.team_owner(now.timestamp_micros()).is_some()) {
        return Err(BillingCode::OwnerOnly.error());
    }
    Ok(account)
}

/// The owner's billing overview.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BillingView {
    /// How the owner pays.
    pub billing_mode: BillingMode,
    /// The card invoices are charged to; null until one is added.
    pub payment_method: Option<CardSummary>,
    /// The subscription's status as Stripe last reported it (`active`, `past_due`, `canceled`, …).
    pub subscription_status: Option<String>,
    /// The newest invoices, newest first.
    pub invoices: Vec<InvoiceSummary>,
}

#[utoipa::path(get, path = "/api/billing", tag = "billing",
    responses((status = 200, description = "the owner's billing", body = BillingView),
        (status = 401, description = describe(&[PlatformCode::Unauthenticated]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody)))]
async fn get_billing(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    // A read: no Stripe call and no write.
    let account = owners_account(&state, &caller).await?.ok_or(BillingCode::AccountNotFound)?;
    let mut conn = state.db.conn().await?;
    let (payment_method, invoices) = match &account.stripe_customer_id {
        Some(customer) => (
            accounts::card(&mut conn, customer).await.map_err(ApiError::internal)?,
            accounts::recent_invoices(&mut conn, customer, RECENT_INVOICES).await.map_err(ApiError::internal)?,
        ),
        None => (None, Vec::new()),
    };
    Ok(HttpResponse::Ok().json(BillingView {
        billing_mode: account.billing_mode,
        payment_method,
        subscription_status: account.subscription_status,
        invoices,
    }))
}

/// The caller's Stripe customer, once made.
async fn customer_of(state: &State, caller: &Caller) -> Result<String, ApiError> {
    let account = owners_account(state, caller).await?;
    Ok(account.and_then(|a| a.stripe_customer_id).ok_or(BillingCode::NotReady)?)
}

/// A hosted Stripe page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckoutSession {
    /// `cs_…`.
    pub id: String,
    /// Where to send the owner.
    pub url: String,
}

#[utoipa::path(post, path = "/api/billing/payment-method", tag = "billing",
    responses((status = 200, description = "a Checkout Session in setup mode", body = CheckoutSession),
        (status = 401, description = describe(&[PlatformCode::Unauthenticated]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 409, description = describe(&[BillingCode::NotReady]), body = ErrorBody),
        (status = 502, description = describe(&[BillingCode::StripeError]), body = ErrorBody),
        (status = 503, description = describe(&[BillingCode::StripeUnavailable]), body = ErrorBody)))]
async fn add_payment_method(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let customer = customer_of(&state, &caller).await?;
    let user_id = caller.person()?.to_string();
    let form = params([
        ("mode", "setup"),
        ("customer", customer.as_str()),
        ("currency", state.currency.as_str()),
        ("success_url", state.checkout.success_url.as_str()),
        ("cancel_url", state.checkout.cancel_url.as_str()),
        ("client_reference_id", user_id.as_str()),
    ]);
    let session: Object = state.stripe.post("checkout/sessions", &form, None).await?;
    let url = session.url.ok_or_else(|| ApiError::internal(anyhow::anyhow!("Checkout Session without a url")))?;
    Ok(HttpResponse::Ok().json(CheckoutSession { id: session.id, url }))
}

/// A link to Stripe's billing portal.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PortalSession {
    /// Where to send the owner.
    pub url: String,
}

#[utoipa::path(post, path = "/api/billing/portal", tag = "billing",
    responses((status = 200, description = "a billing portal session", body = PortalSession),
        (status = 401, description = describe(&[PlatformCode::Unauthenticated]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 409, description = describe(&[BillingCode::NotReady]), body = ErrorBody),
        (status = 502, description = describe(&[BillingCode::StripeError]), body = ErrorBody),
        (status = 503, description = describe(&[BillingCode::StripeUnavailable]), body = ErrorBody)))]
async fn portal(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let customer = customer_of(&state, &caller).await?;
    let form = params([("customer", customer.as_str()), ("return_url", state.portal.return_url.as_str())]);
    let session: Object = state.stripe.post("billing_portal/sessions", &form, None).await?;
    let url = session.url.ok_or_else(|| ApiError::internal(anyhow::anyhow!("portal session without a url")))?;
    Ok(HttpResponse::Ok().json(PortalSession { url }))
}

/// The 503 a webhook gets when its event could not be applied: Stripe delivers it again.
fn not_applied(e: &ApplyError) -> ApiError {
    match e {
        ApplyError::Stripe(_) => BillingCode::StripeUnavailable.with_message("try again later"),
        ApplyError::Database(_) | ApplyError::WriterStopped => {
            PlatformCode::DatabaseUnavailable.with_message("try again later")
        }
    }
}

#[utoipa::path(post, path = "/webhooks/stripe", tag = "billing",
    description = "Stripe's events, signed with the endpoint's secret (`Stripe-Signature`); no Auth0 token.",
    request_body(content = Object, description = "a Stripe event", content_type = "application/json"),
    responses((status = 200, description = "applied: {received: true}, or applied before: {received: true, duplicate: true}"),
        (status = 400, description = describe(&[BillingCode::MissingSignature, BillingCode::InvalidSignature,
            BillingCode::SignatureExpired, BillingCode::InvalidPayload, BillingCode::UnsupportedEventType]), body = ErrorBody),
        (status = 503, description = format!("{}; {}: nothing applied, Stripe delivers the event again",
            describe(&[BillingCode::StripeUnavailable]), describe(&[PlatformCode::DatabaseUnavailable])), body = ErrorBody)))]
async fn stripe_webhook(state: Data, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let header = req.headers().get("stripe-signature").and_then(|v| v.to_str().ok());
    webhooks::verify(header, &body, state.webhook_secret.expose().as_bytes(), chrono::Utc::now().timestamp())?;
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| BillingCode::InvalidPayload.with_message(format!("not a Stripe event: {e}")))?;
    if !SUPPORTED_EVENTS.contains(&event.kind.as_str()) {
        return Err(BillingCode::UnsupportedEventType
            .with_message(format!("billing does not handle {}; enable only the events it handles", event.kind)));
    }
    match state.webhooks.apply(&event).await {
        Ok(Outcome::Applied) => Ok(HttpResponse::Ok().json(json!({"received": true}))),
        Ok(Outcome::Duplicate) => Ok(HttpResponse::Ok().json(json!({"received": true, "duplicate": true}))),
        Err(e) => {
            tracing::warn!(event_id = %event.id, event_type = %event.kind, error = format!("{e:#}"), "webhook not applied; Stripe will retry");
            Err(not_applied(&e))
        }
    }
}

/// billing's catalogue in the document, the codes of routes outside it included.
const CATALOGUE: hopsbridge_platform::http::CatalogueSchema<BillingCode> =
    hopsbridge_platform::http::CatalogueSchema::new(
        "BillingErrorCode",
        "The codes billing answers with, besides the platform's.",
    );

/// billing's part of the public API's OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(get_billing, add_payment_method, portal, stripe_webhook),
    components(schemas(BillingView, BillingMode, CardSummary, InvoiceSummary, CheckoutSession, PortalSession, ErrorBody)),
    modifiers(&MONEY_DOC, &CATALOGUE),
    tags((name = "billing", description = "the account owner's billing"))
)]
pub struct ApiDoc;
