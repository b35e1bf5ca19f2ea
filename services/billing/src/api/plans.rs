//! The plan routes (decision 0048): the owner's plan, terms and standing; the owner's explicit
//! choice with the terms accepted; an admin's setting.

use crate::error::{BillingCode, describe};
use crate::lifecycle::{self, Lifecycle, Restriction};
use crate::memberships;
use crate::plans::{self, Plan, PlanChange};
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use hopsbridge_domain::OwnerId;
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::db::{DbError, RetryableError};
use hopsbridge_platform::events::HandlerError;
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode, PlatformCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

type Data = web::Data<Lifecycle>;

/// A plan's limits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Limits {
    /// Active Hopsworks projects allowed.
    max_active_projects: i32,
}

/// Terms accepted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Terms {
    /// The version accepted.
    version: String,
    /// When.
    accepted_at: DateTime<Utc>,
}

/// The owner's plan and standing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanView {
    /// `free`, `payg` or `prepaid`; null until chosen.
    plan: Option<Plan>,
    /// The limits of the plan (of free while none is chosen).
    limits: Limits,
    /// Active projects over every cluster, from the latest project sync.
    active_projects: i64,
    /// The latest terms accepted; null when never.
    terms_accepted: Option<Terms>,
    /// The version of the terms in force (to accept when choosing a plan).
    terms_version: String,
    /// What restricts the account now, each with its deadline.
    restrictions: Vec<Restriction>,
    /// Whether billing has suspended the account.
    suspended: bool,
}

#[utoipa::path(get, path = "/api/billing/plan", tag = "billing",
    responses((status = 200, description = "the owner's plan, terms, limits and restrictions (a read: nothing changes)", body = PlanView),
        (status = 401, description = describe(&[PlatformCode::Unauthenticated]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody)))]
pub(super) async fn get_plan(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let account = crate::routes::owner_account(&state.db, &caller, state.clock.now())
        .await?
        .ok_or_else(|| BillingCode::AccountNotFound.error())?;
    let owner = OwnerId::from_uuid(account.user_id.as_uuid());
    let mut conn = state.db.conn().await?;
    let view = view(&state, &mut conn, owner).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(view))
}

async fn view(state: &Lifecycle, conn: &mut AsyncPgConnection, owner: OwnerId) -> diesel::QueryResult<PlanView> {
    let plan = plans::current(conn, owner).await?;
    let terms = plans::terms_accepted(conn, owner).await?;
    let (active_projects, _) = lifecycle::projects(conn, owner).await?;
    Ok(PlanView {
        plan,
        limits: Limits { max_active_projects: plan.unwrap_or(Plan::Free).max_active_projects(&state.plans) },
        active_projects,
        terms_accepted: terms.map(|(version, accepted_at)| Terms { version, accepted_at }),
        terms_version: state.plans.terms_version.clone(),
        restrictions: lifecycle::open_restrictions(conn, owner).await?,
        suspended: lifecycle::suspended(conn, owner).await?,
    })
}

/// The plan chosen.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// `free`, `payg` or `prepaid`.
    plan: String,
    /// Must be true: the owner accepts the terms.
    #[serde(default)]
    accept_terms: bool,
    /// The version of the terms accepted: the one in force (`GET /api/billing/plan`'s `terms_version`).
    #[serde(default)]
    terms_version: String,
}

/// What choosing did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanAnswer {
    /// The change; null when the owner was on that plan already (the terms are recorded anyway).
    change: Option<PlanChange>,
    /// The plan and standing now.
    now: PlanView,
}

/// A failure inside a plan's transaction.
#[derive(Debug)]
enum Failure {
    Api(ApiError),
    Other(anyhow::Error),
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        Self::Other(e.into())
    }
}

impl From<diesel::result::Error> for Failure {
    fn from(e: diesel::result::Error) -> Self {
        Self::Other(e.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

impl From<HandlerError> for Failure {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::Retry(e) => {
                tracing::warn!(error = format!("{e:#}"), "a plan's subscription could not be opened");
                Self::Api(BillingCode::StripeUnavailable.error())
            }
            other => {
                tracing::warn!(error = %other, "a plan's subscription was refused");
                Self::Api(BillingCode::StripeError.error())
            }
        }
    }
}

impl RetryableError for Failure {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Other(e) if e.is_retryable())
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Api(e) => e,
            Failure::Other(e) => ApiError::internal(e),
        }
    }
}

/// Sets `owner`'s plan in one transaction: the account and the owner locked, payg refused
/// without a usable card, the terms recorded when accepted, the plan changed, and a paying plan
/// given a live subscription when it has none.
async fn set(
    state: &Lifecycle,
    owner: OwnerId,
    plan: Plan,
    (reason, by): (&'static str, Option<Uuid>),
    terms: Option<String>,
) -> Result<Option<PlanChange>, ApiError> {
    let this = state.clone();
    let changed = state
        .db
        .transaction(move |c| {
            let (this, terms) = (this.clone(), terms.clone());
            Box::pin(async move {
                let user = owner.as_user();
                let account = crate::accounts::lock(c, user)
                    .await?
                    .ok_or_else(|| Failure::Api(BillingCode::AccountNotFound.error()))?;
                if plan == Plan::Payg {
                    let customer = account.stripe_customer_id.as_deref().unwrap_or_default();
                    let usable = crate::accounts::usable_payment_methods(c, vec![customer]).await?;
                    if usable.get(customer).is_none_or(std::collections::HashSet::is_empty) {
                        return Err(Failure::Api(BillingCode::CardRequired.error()));
                    }
                }
                if plan != Plan::Free && account.stripe_customer_id.is_none() {
                    return Err(Failure::Api(BillingCode::NotReady.error()));
                }
                lifecycle::lock_owner(c, owner).await?;
                let now = this.clock.now();
                if let Some(version) = &terms {
                    plans::accept_terms(c, owner, version, now).await?;
                }
                let change = this.change_plan(c, owner, plan, (reason, by)).await?;
                if plan != Plan::Free && account.live_subscription().is_none() {
                    let key = format!("hb-subscription-plan-{}-{}", owner, now.timestamp_micros());
                    memberships::settle(c, (&this.stripe, &this.prices), &account, &key, now).await?;
                }
                Ok::<_, Failure>(change)
            })
        })
        .await?;
    Ok(changed)
}

#[utoipa::path(put, path = "/api/billing/plan", tag = "billing", request_body = PlanBody,
    description = "The owner's explicit choice, with the terms accepted (recorded with their version and time). payg needs a usable card; the billing mode follows from the next window; PlanChangedV1 announces it.",
    responses((status = 200, description = "the plan now", body = PlanAnswer),
        (status = 400, description = describe(&[BillingCode::InvalidPlan, BillingCode::TermsNotAccepted]), body = ErrorBody),
        (status = 401, description = describe(&[PlatformCode::Unauthenticated]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::OwnerOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody),
        (status = 409, description = describe(&[BillingCode::TermsOutdated, BillingCode::CardRequired, BillingCode::NotReady]), body = ErrorBody),
        (status = 502, description = describe(&[BillingCode::StripeError]), body = ErrorBody),
        (status = 503, description = describe(&[BillingCode::StripeUnavailable]), body = ErrorBody)))]
pub(super) async fn put_plan(state: Data, caller: Caller, body: web::Json<PlanBody>) -> Result<HttpResponse, ApiError> {
    let account = crate::routes::owner_account(&state.db, &caller, state.clock.now())
        .await?
        .ok_or_else(|| BillingCode::AccountNotFound.error())?;
    let plan = Plan::parse(&body.plan).ok_or_else(|| BillingCode::InvalidPlan.error())?;
    if !body.accept_terms {
        return Err(BillingCode::TermsNotAccepted.error());
    }
    if body.terms_version != state.plans.terms_version {
        return Err(BillingCode::TermsOutdated
            .with_message(format!("the terms in force are version {}", state.plans.terms_version)));
    }
    let owner = OwnerId::from_uuid(account.user_id.as_uuid());
    let by = Some(account.user_id.as_uuid());
    let change = set(&state, owner, plan, (plans::reason::CHOSEN, by), Some(body.terms_version.clone())).await?;
    let mut conn = state.db.conn().await?;
    let now = view(&state, &mut conn, owner).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(PlanAnswer { change, now }))
}

/// The plan an admin sets.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminPlanBody {
    /// `free`, `payg` or `prepaid`.
    plan: String,
}

#[utoipa::path(put, path = "/api/admin/billing/{owner}/plan", tag = "billing", request_body = AdminPlanBody,
    params(("owner" = Uuid, Path, description = "the owner's user id")),
    responses((status = 200, description = "the owner's plan now; PlanChangedV1 (reason admin) announces a change", body = PlanAnswer),
        (status = 400, description = describe(&[BillingCode::InvalidPlan]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody),
        (status = 409, description = describe(&[BillingCode::CardRequired, BillingCode::NotReady]), body = ErrorBody)))]
pub(super) async fn admin_set_plan(
    state: Data,
    caller: Caller,
    owner: web::Path<String>,
    body: web::Json<AdminPlanBody>,
) -> Result<HttpResponse, ApiError> {
    let admin = super::require_admin(&caller)?;
    let plan = Plan::parse(&body.plan).ok_or_else(|| BillingCode::InvalidPlan.error())?;
    let id: Uuid = owner.parse().map_err(|_| PlatformCode::InvalidPath.with_message("the owner id must be a UUID"))?;
    let mut conn = state.db.conn().await?;
    let account = crate::accounts::get(&mut conn, id.into()).await.map_err(ApiError::internal)?;
    let account = account.ok_or_else(|| BillingCode::AccountNotFound.error())?;
    if account.team_owner(state.clock.now().timestamp_micros()).is_some() {
        return Err(BillingCode::AccountNotFound.with_message("the account is a team member's: its owner is billed"));
    }
    drop(conn);
    let owner = OwnerId::from(id);
    let change = set(&state, owner, plan, (plans::reason::ADMIN, admin), None).await?;
    let mut conn = state.db.conn().await?;
    let now = view(&state, &mut conn, owner).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(PlanAnswer { change, now }))
}
