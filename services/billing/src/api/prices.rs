//! The price book's routes: public prices, and admins' versions.

use super::{Data, require_admin};
use crate::error::{BillingCode, describe};
use crate::money::Resource;
use crate::prices::{self, Price};
use actix_web::{HttpResponse, web};
use chrono::{DateTime, TimeDelta, Utc};
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A price as anyone may see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicPrice {
    /// What it prices.
    resource: Resource,
    /// The billed unit: `core-hour`, `GiB-hour`, `GPU-hour`, `GB-month` (1e9 bytes held for
    /// a whole calendar month, storage).
    unit: &'static str,
    /// Minor units per billed unit, exact.
    #[schema(value_type = String, example = "3.5")]
    unit_amount_decimal: Decimal,
    /// Lowercase ISO 4217.
    currency: String,
    /// From when.
    effective_from: DateTime<Utc>,
}

impl From<&Price> for PublicPrice {
    fn from(p: &Price) -> Self {
        Self {
            resource: p.resource,
            unit: p.resource.unit(),
            unit_amount_decimal: p.unit_amount_decimal,
            currency: p.currency.clone(),
            effective_from: p.effective_from,
        }
    }
}

/// What usage costs now, and what is scheduled.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pricing {
    /// The price of each resource in force now.
    current: Vec<PublicPrice>,
    /// Prices that start later, soonest first.
    scheduled: Vec<PublicPrice>,
}

#[utoipa::path(get, path = "/api/pricing", tag = "billing",
    description = "Public: no token. What each metered resource costs now and the prices scheduled to start later.",
    responses((status = 200, description = "current and scheduled prices", body = Pricing)))]
pub(super) async fn pricing(state: Data) -> Result<HttpResponse, ApiError> {
    let mut conn = state.db.conn().await?;
    let book = prices::book(&mut conn).await.map_err(ApiError::internal)?;
    let now = state.clock.now();
    let current = Resource::ALL.iter().filter_map(|r| book.in_force(*r, now)).map(PublicPrice::from).collect();
    let mut scheduled: Vec<PublicPrice> =
        book.iter().filter(|p| p.effective_from > now).map(PublicPrice::from).collect();
    scheduled.sort_by_key(|p| (p.effective_from, p.resource));
    Ok(HttpResponse::Ok().json(Pricing { current, scheduled }))
}

/// Every version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PriceList {
    /// By resource, then start.
    prices: Vec<Price>,
}

#[utoipa::path(get, path = "/api/admin/prices", tag = "billing",
    responses((status = 200, description = "every price version", body = PriceList),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody)))]
pub(super) async fn list_prices(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let book = prices::book(&mut conn).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(PriceList { prices: book.iter().cloned().collect() }))
}

/// A new price version.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    /// `cpu`, `memory`, `gpu`, `storage_offline` or `storage_online`.
    resource: String,
    /// Minor units per billed unit as a decimal string, e.g. `"0.35"`.
    #[schema(value_type = String, example = "0.35")]
    unit_amount_decimal: serde_json::Value,
    /// When it starts: at least `prices.min_lead_secs` ahead.
    effective_from: DateTime<Utc>,
}

#[utoipa::path(post, path = "/api/admin/prices", tag = "billing", request_body = PriceBody,
    responses((status = 201, description = "the version recorded", body = Price),
        (status = 400, description = describe(&[BillingCode::UnknownResource, BillingCode::InvalidPrice, BillingCode::PriceTooSoon]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody),
        (status = 409, description = describe(&[BillingCode::PriceExists]), body = ErrorBody)))]
pub(super) async fn create_price(
    state: Data,
    caller: Caller,
    body: web::Json<PriceBody>,
) -> Result<HttpResponse, ApiError> {
    let admin = require_admin(&caller)?;
    let resource = Resource::parse(&body.resource).ok_or_else(|| BillingCode::UnknownResource.error())?;
    let amount = body
        .unit_amount_decimal
        .as_str()
        .and_then(prices::parse_amount)
        .ok_or_else(|| BillingCode::InvalidPrice.error())?;
    let lead = TimeDelta::seconds(i64::try_from(state.min_lead_secs).unwrap_or(i64::MAX));
    if body.effective_from < state.clock.now() + lead {
        return Err(BillingCode::PriceTooSoon
            .with_message(format!("effective_from must be at least {} s ahead", state.min_lead_secs)));
    }
    let mut conn = state.db.conn().await?;
    let created = prices::create(&mut conn, resource, amount, &state.currency, body.effective_from, admin)
        .await
        .map_err(ApiError::internal)?;
    let price = created.ok_or_else(|| BillingCode::PriceExists.error())?;
    tracing::info!(price_id = %price.id, %resource, amount = %price.unit_amount_decimal, from = %price.effective_from, "price recorded");
    Ok(HttpResponse::Created().json(price))
}
