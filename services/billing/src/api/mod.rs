//! billing's money routes (decision 0038).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /api/pricing` | anyone, no token | current and scheduled prices |
//! | `GET /api/admin/prices`, `POST /api/admin/prices` | admins | every price version; a new one |
//! | `PUT /api/admin/billing/{owner}/mode` | admins | the owner's billing mode, from the next window |
//! | `POST /api/admin/billing/{owner}/credits` | admins | a promotional grant |
//! | `POST /api/admin/billing/backfill`, `GET /api/admin/billing/backfills` | admins | pull a range from metering; past backfills |
//! | `POST /api/admin/billing/reconcile`, `GET /api/admin/billing/findings` | admins | compare the ledger with metering now; the differences |
//! | `GET /api/admin/billing/reports?owner=&day=` | admins | the meter event reports to Stripe of an owner (a day) |
//! | `POST /api/admin/billing/reconcile/stripe` | admins | compare the accepted reports with Stripe's summaries now |
//! | `POST /api/credits/purchase`, `GET /api/credits` | the account owner | buy credits through Checkout; balance, grants, deductions |
//! | `PUT /api/billing/cap` | the account owner | the monthly spending cap and what crossing it does |
//! | `GET /api/billing/plan`, `PUT /api/billing/plan` | the account owner | plan, terms, limits and restrictions; choosing a plan with the terms |
//! | `PUT /api/admin/billing/{owner}/plan` | admins | the owner's plan |
//! | `GET /api/billing/usage`, `GET /api/billing/usage/samples` | the account owner | usage and cost per day, resource, project and member, the upcoming invoice; the entries behind a day |
//!
//! Members are refused every owner route (`owner_only`), as the other billing routes refuse
//! them; everyone but admins is refused the admin routes (`admin_only`).

mod admin;
mod credits;
mod plans;
mod prices;
mod usage;

use crate::config::{CapsConfig, CreditsConfig};
use crate::error::BillingCode;
use crate::reconciliation::Reconciler;
use crate::stripe::Stripe;
use actix_web::web;
use hopsbridge_domain::OwnerId;
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::http::{ApiError, ErrorCode, PlatformCode};
use uuid::Uuid;

/// What the money routes share.
#[derive(Clone, Debug)]
pub struct Api {
    /// billing's schema.
    pub db: Database,
    /// The Stripe API.
    pub stripe: Stripe,
    /// The calendar clock.
    pub clock: Clock,
    /// The currency of prices and credits.
    pub currency: String,
    /// The usage window, seconds.
    pub window_secs: u32,
    /// How far ahead a price must start, seconds.
    pub min_lead_secs: u64,
    /// Credit settings.
    pub credits: CreditsConfig,
    /// Cap settings.
    pub caps: CapsConfig,
    /// Backfill and reconciliation.
    pub reconciler: Reconciler,
    /// The reports to Stripe.
    pub reporter: crate::reporting::Reporter,
    /// The account's standing (a cap's suspension).
    pub lifecycle: crate::lifecycle::Lifecycle,
}

/// Registers the money routes.
pub fn configure(c: &mut web::ServiceConfig, api: Api) {
    c.app_data(web::Data::new(api))
        .route("/api/pricing", web::get().to(prices::pricing))
        .route("/api/admin/prices", web::get().to(prices::list_prices))
        .route("/api/admin/prices", web::post().to(prices::create_price))
        .route("/api/admin/billing/backfill", web::post().to(admin::backfill))
        .route("/api/admin/billing/backfills", web::get().to(admin::backfills))
        .route("/api/admin/billing/reconcile", web::post().to(admin::reconcile))
        .route("/api/admin/billing/findings", web::get().to(admin::findings))
        .route("/api/admin/billing/reports", web::get().to(admin::reports))
        .route("/api/admin/billing/reconcile/stripe", web::post().to(admin::reconcile_stripe))
        .route("/api/admin/billing/{owner}/mode", web::put().to(admin::set_mode))
        .route("/api/admin/billing/{owner}/credits", web::post().to(credits::grant))
        .route("/api/credits/purchase", web::post().to(credits::purchase))
        .route("/api/credits", web::get().to(credits::get_credits))
        .route("/api/billing/cap", web::put().to(usage::set_cap))
        .route("/api/billing/usage", web::get().to(usage::get_usage))
        .route("/api/billing/usage/samples", web::get().to(usage::get_samples));
}

/// Registers the plan routes.
pub fn configure_plans(c: &mut web::ServiceConfig, lifecycle: crate::lifecycle::Lifecycle) {
    c.app_data(web::Data::new(lifecycle))
        .route("/api/billing/plan", web::get().to(plans::get_plan))
        .route("/api/billing/plan", web::put().to(plans::put_plan))
        .route("/api/admin/billing/{owner}/plan", web::put().to(plans::admin_set_plan));
}

type Data = web::Data<Api>;

/// Admins only. An admin calling: the person's user id, or none for a machine client the gateway granted
/// the admin role (decision 0045), recorded as no person.
fn require_admin(caller: &Caller) -> Result<Option<Uuid>, ApiError> {
    if caller.is_machine_admin() {
        return Ok(None);
    }
    if !caller.has(Role::Admin) {
        return Err(BillingCode::AdminOnly.error());
    }
    Ok(Some(caller.person()?.as_uuid()))
}

/// The owner calling, with their account: members and anyone else are refused.
async fn owner(api: &Api, caller: &Caller) -> Result<crate::accounts::Account, ApiError> {
    crate::routes::owner_account(&api.db, caller, api.clock.now())
        .await?
        .ok_or_else(|| BillingCode::AccountNotFound.error())
}

/// The owner an admin route names, when billing has their account.
async fn named_owner(api: &Api, raw: &str) -> Result<OwnerId, ApiError> {
    let id: Uuid = raw.parse().map_err(|_| PlatformCode::InvalidPath.with_message("the owner id must be a UUID"))?;
    let mut conn = api.db.conn().await?;
    let account = crate::accounts::get(&mut conn, id.into()).await.map_err(ApiError::internal)?;
    let account = account.ok_or_else(|| BillingCode::AccountNotFound.error())?;
    if account.team_owner(api.clock.now().timestamp_micros()).is_some() {
        return Err(BillingCode::AccountNotFound.with_message("the account is a team member's: its owner is billed"));
    }
    Ok(OwnerId::from(id))
}

/// An integer in a JSON body, or `code`.
fn whole_number(v: &serde_json::Value, code: BillingCode) -> Result<i64, ApiError> {
    v.as_i64().ok_or_else(|| code.with_message(format!("{}: got {v}", code.description())))
}

/// The money routes' part of the OpenAPI document, merged into [`crate::routes::ApiDoc`].
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        prices::pricing,
        prices::list_prices,
        prices::create_price,
        admin::set_mode,
        admin::backfill,
        admin::backfills,
        admin::reconcile,
        admin::findings,
        admin::reports,
        admin::reconcile_stripe,
        credits::grant,
        credits::purchase,
        credits::get_credits,
        usage::set_cap,
        usage::get_usage,
        usage::get_samples,
        plans::get_plan,
        plans::put_plan,
        plans::admin_set_plan,
    ),
    components(schemas(
        crate::prices::Price,
        crate::money::Resource,
        crate::credits::Grant,
        crate::credits::Deduction,
        crate::modes::ModeChange,
        crate::reconciliation::Backfill,
        crate::reconciliation::Finding,
        prices::Pricing,
        prices::PublicPrice,
        prices::PriceList,
        prices::PriceBody,
        admin::ModeBody,
        admin::ModeAnswer,
        admin::RangeBody,
        admin::BackfillList,
        admin::FindingList,
        admin::ReportList,
        crate::reporting::Report,
        credits::GrantBody,
        credits::PurchaseBody,
        credits::Purchase,
        credits::CreditsView,
        usage::CapBody,
        usage::Cap,
        usage::UsageView,
        usage::UsageLine,
        usage::Totals,
        usage::Invoice,
        usage::InvoiceLine,
        usage::SamplesView,
        usage::SampleLine,
        crate::plans::Plan,
        crate::plans::PlanChange,
        crate::lifecycle::Restriction,
        plans::Limits,
        plans::Terms,
        plans::PlanView,
        plans::PlanBody,
        plans::PlanAnswer,
        plans::AdminPlanBody,
    )),
    tags((name = "billing", description = "the account owner's billing"))
)]
pub struct MoneyDoc;

/// Merges [`MoneyDoc`] into billing's document.
#[derive(Debug)]
pub struct MergeMoney;

/// The modifier that merges the money routes.
pub const MONEY_DOC: MergeMoney = MergeMoney;

impl utoipa::Modify for MergeMoney {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.merge(<MoneyDoc as utoipa::OpenApi>::openapi());
    }
}
