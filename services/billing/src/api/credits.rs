//! Prepaid credits' routes: buying through Checkout, the owner's balance, admins' grants.

use super::{Data, named_owner, owner, require_admin, whole_number};
use crate::credits::{self, Deduction, Grant, NewGrant};
use crate::error::{BillingCode, describe};
use crate::stripe::{Object, params};
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use hopsbridge_domain::OwnerId;
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::db::DbError;
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode, PlatformCode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

fn db(e: diesel::result::Error) -> ApiError {
    ApiError::from(DbError::from(e))
}

/// A purchase.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBody {
    /// Minor units, between `credits.min_purchase` and `credits.max_purchase`.
    #[schema(value_type = i64)]
    amount_minor: serde_json::Value,
}

/// The Checkout Session that collects a purchase.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Purchase {
    /// `cs_…`.
    id: String,
    /// Where to send the owner to pay.
    url: String,
    /// What is bought, minor units.
    amount_minor: i64,
}

#[utoipa::path(post, path = "/api/credits/purchase", tag = "billing", request_body = PurchaseBody,
    responses((status = 200, description = "a Checkout Session in payment mode; its completion grants the credit once", body = Purchase),
        (status = 400, description = describe(&[BillingCode::InvalidAmount]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody),
        (status = 409, description = describe(&[BillingCode::NotReady]), body = ErrorBody),
        (status = 502, description = describe(&[BillingCode::StripeError]), body = ErrorBody),
        (status = 503, description = describe(&[BillingCode::StripeUnavailable]), body = ErrorBody)))]
pub(super) async fn purchase(
    state: Data,
    caller: Caller,
    body: web::Json<PurchaseBody>,
) -> Result<HttpResponse, ApiError> {
    let account = owner(&state, &caller).await?;
    let amount = whole_number(&body.amount_minor, BillingCode::InvalidAmount)?;
    let (min, max) = (state.credits.min_purchase, state.credits.max_purchase);
    if !(min..=max).contains(&amount) {
        return Err(BillingCode::InvalidAmount.with_message(format!("amount_minor must be from {min} to {max}")));
    }
    let customer = account.stripe_customer_id.ok_or_else(|| BillingCode::NotReady.error())?;
    let owner = OwnerId::of(account.user_id);
    let (owner_text, amount_text) = (owner.to_string(), amount.to_string());
    let form = params([
        ("mode", "payment"),
        ("customer", customer.as_str()),
        ("success_url", state.credits.success_url.as_str()),
        ("cancel_url", state.credits.cancel_url.as_str()),
        ("client_reference_id", owner_text.as_str()),
        ("line_items[0][quantity]", "1"),
        ("line_items[0][price_data][currency]", state.currency.as_str()),
        ("line_items[0][price_data][unit_amount]", amount_text.as_str()),
        ("line_items[0][price_data][product_data][name]", "Hopsbridge credits"),
        ("metadata[hopsbridge_user_id]", owner_text.as_str()),
        ("metadata[hopsbridge_purpose]", "credits"),
    ]);
    let session: Object = state.stripe.post("checkout/sessions", &form, None).await?;
    let url = session.url.ok_or_else(|| ApiError::internal(anyhow::anyhow!("Checkout Session without a url")))?;
    let mut conn = state.db.conn().await?;
    credits::record_purchase(&mut conn, &session.id, owner, amount, &state.currency).await.map_err(db)?;
    Ok(HttpResponse::Ok().json(Purchase { id: session.id, url, amount_minor: amount }))
}

/// A page of deductions.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// At most this many deductions (1-1000, default 100).
    limit: Option<i64>,
    /// Skip this many.
    offset: Option<i64>,
}

/// The owner's credit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreditsView {
    /// What is left to spend now, minor units (up to 12 decimal places).
    #[schema(value_type = String)]
    balance: Decimal,
    /// Lowercase ISO 4217.
    currency: String,
    /// Every grant, newest first.
    grants: Vec<Grant>,
    /// What each grant paid, newest window first.
    deductions: Vec<Deduction>,
    /// How many deductions there are in all.
    total_deductions: i64,
}

#[utoipa::path(get, path = "/api/credits", tag = "billing", params(Page),
    responses((status = 200, description = "balance, grants and deductions", body = CreditsView),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody)))]
pub(super) async fn get_credits(state: Data, caller: Caller, q: web::Query<Page>) -> Result<HttpResponse, ApiError> {
    let account = owner(&state, &caller).await?;
    let (limit, offset) = (q.limit.unwrap_or(100), q.offset.unwrap_or(0));
    if !(1..=1000).contains(&limit) || offset < 0 {
        return Err(PlatformCode::InvalidQuery.with_message("limit must be 1-1000 and offset not negative"));
    }
    let owner = OwnerId::of(account.user_id);
    let mut conn = state.db.conn().await?;
    let balance = credits::balance(&conn, owner, state.clock.now()).await.map_err(db)?;
    let grants = credits::grants_of(&mut conn, owner).await.map_err(db)?;
    let (deductions, total_deductions) = credits::deductions_of(&mut conn, owner, limit, offset).await.map_err(db)?;
    Ok(HttpResponse::Ok().json(CreditsView {
        balance: balance.normalize(),
        currency: state.currency.clone(),
        grants,
        deductions,
        total_deductions,
    }))
}

/// A promotional grant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// Minor units, from 1 to `credits.max_grant`.
    #[schema(value_type = i64)]
    amount_minor: serde_json::Value,
    /// Not spent on windows starting at or after this instant (none: never expires).
    expires_at: Option<DateTime<Utc>>,
    /// Lower is spent first among promotional grants (0-1000, default 0).
    priority: Option<i32>,
}

#[utoipa::path(post, path = "/api/admin/billing/{owner}/credits", tag = "billing", request_body = GrantBody,
    params(("owner" = Uuid, Path, description = "the owner's user id")),
    responses((status = 201, description = "the grant, spent before purchased credit", body = Grant),
        (status = 400, description = describe(&[BillingCode::InvalidAmount, BillingCode::InvalidGrant]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody)))]
pub(super) async fn grant(
    state: Data,
    caller: Caller,
    owner: web::Path<String>,
    body: web::Json<GrantBody>,
) -> Result<HttpResponse, ApiError> {
    let admin = require_admin(&caller)?;
    let amount = whole_number(&body.amount_minor, BillingCode::InvalidAmount)?;
    if !(1..=state.credits.max_grant).contains(&amount) {
        return Err(BillingCode::InvalidAmount
            .with_message(format!("amount_minor must be from 1 to {}", state.credits.max_grant)));
    }
    let priority = body.priority.unwrap_or(0);
    if !(0..=1000).contains(&priority) || body.expires_at.is_some_and(|e| e <= state.clock.now()) {
        return Err(BillingCode::InvalidGrant.error());
    }
    let owner = named_owner(&state, &owner).await?;
    let new = NewGrant {
        owner,
        category: credits::PROMOTIONAL,
        amount,
        priority,
        expires_at: body.expires_at,
        source: format!("admin:{}", uuid::Uuid::now_v7()),
        by: admin,
    };
    let conn = state.db.conn().await?;
    let made = credits::grant(&conn, &new)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a fresh source granted twice")))?;
    Ok(HttpResponse::Created().json(made))
}
