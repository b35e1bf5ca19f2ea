//! Admins' billing routes: modes, backfill, reconciliation and the reports to Stripe.

use super::{Data, named_owner, require_admin};
use crate::error::{BillingCode, describe};
use crate::modes::{self, ModeChange};
use crate::reconciliation::{self, Backfill, Finding};
use crate::reporting::{self, Report};
use actix_web::{HttpResponse, web};
use chrono::{DateTime, TimeDelta, Utc};
use hopsbridge_domain::BillingMode;
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::db::DbError;
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};

/// The mode to set.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    /// `free`, `postpaid` or `prepaid`.
    mode: String,
}

/// What setting a mode did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModeAnswer {
    /// The change, from the next window; null when that mode was in force then already.
    change: Option<ModeChange>,
    /// The start of the next window.
    effective_from: DateTime<Utc>,
}

#[utoipa::path(put, path = "/api/admin/billing/{owner}/mode", tag = "billing", request_body = ModeBody,
    params(("owner" = Uuid, Path, description = "the owner's user id")),
    responses((status = 200, description = "the mode applies to windows starting at or after effective_from; BillingModeChangedV1 announces it", body = ModeAnswer),
        (status = 400, description = describe(&[BillingCode::InvalidMode]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody),
        (status = 404, description = describe(&[BillingCode::AccountNotFound]), body = ErrorBody)))]
pub(super) async fn set_mode(
    state: Data,
    caller: Caller,
    owner: web::Path<String>,
    body: web::Json<ModeBody>,
) -> Result<HttpResponse, ApiError> {
    let admin = require_admin(&caller)?;
    let mode: BillingMode = body.mode.parse().map_err(|_| BillingCode::InvalidMode.error())?;
    let owner = named_owner(&state, &owner).await?;
    let effective_from = modes::next_window_start(state.clock.now(), state.window_secs);
    let change = state
        .db
        .transaction(move |c| Box::pin(async move { modes::change(c, owner, mode, effective_from, admin).await }))
        .await?;
    Ok(HttpResponse::Ok().json(ModeAnswer { change, effective_from }))
}

/// A range of window starts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeBody {
    /// Windows starting at or after this instant.
    from: DateTime<Utc>,
    /// Windows starting before this instant (at most 31 days after `from`).
    to: DateTime<Utc>,
}

#[utoipa::path(post, path = "/api/admin/billing/backfill", tag = "billing", request_body = RangeBody,
    responses((status = 202, description = "the backfill runs; GET /api/admin/billing/backfills shows how it ends", body = Backfill),
        (status = 400, description = describe(&[BillingCode::InvalidRange]), body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody)))]
pub(super) async fn backfill(
    state: Data,
    caller: Caller,
    body: web::Json<RangeBody>,
) -> Result<HttpResponse, ApiError> {
    let admin = require_admin(&caller)?;
    if body.to <= body.from || body.to - body.from > TimeDelta::days(31) {
        return Err(BillingCode::InvalidRange.with_message("from must be before to, at most 31 days before it"));
    }
    let mut conn = state.db.conn().await?;
    let recorded = reconciliation::record_backfill(&mut conn, body.from, body.to, admin)
        .await
        .map_err(|e| ApiError::from(DbError::from(e)))?;
    let reconciler = state.reconciler.clone();
    let (id, from, to) = (recorded.id, recorded.range_start, recorded.range_end);
    tokio::spawn(async move { reconciler.run_backfill(id, from, to).await });
    Ok(HttpResponse::Accepted().json(recorded))
}

/// The newest backfills.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackfillList {
    backfills: Vec<Backfill>,
}

#[utoipa::path(get, path = "/api/admin/billing/backfills", tag = "billing",
    responses((status = 200, description = "the 50 newest backfills", body = BackfillList),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody)))]
pub(super) async fn backfills(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let backfills =
        reconciliation::recent_backfills(&mut conn, 50).await.map_err(|e| ApiError::from(DbError::from(e)))?;
    Ok(HttpResponse::Ok().json(BackfillList { backfills }))
}

#[utoipa::path(post, path = "/api/admin/billing/reconcile", tag = "billing",
    responses((status = 202, description = "the ledger is compared with metering now; findings appear at GET /api/admin/billing/findings"),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody)))]
pub(super) async fn reconcile(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let reconciler = state.reconciler.clone();
    tokio::spawn(async move {
        if let Err(e) = reconciler.reconcile().await {
            tracing::warn!(error = format!("{e:#}"), "reconciliation asked by an admin failed");
        }
    });
    Ok(HttpResponse::Accepted().json(serde_json::json!({"accepted": true})))
}

/// Which findings.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FindingQuery {
    /// Resolved ones too (default: open only).
    all: Option<bool>,
}

/// Differences between the ledger and metering.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FindingList {
    findings: Vec<Finding>,
}

#[utoipa::path(get, path = "/api/admin/billing/findings", tag = "billing", params(FindingQuery),
    responses((status = 200, description = "the 500 newest findings", body = FindingList),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody)))]
pub(super) async fn findings(
    state: Data,
    caller: Caller,
    q: web::Query<FindingQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let findings = reconciliation::findings(&mut conn, q.all.unwrap_or(false), 500)
        .await
        .map_err(|e| ApiError::from(DbError::from(e)))?;
    Ok(HttpResponse::Ok().json(FindingList { findings }))
}

/// Whose reports.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// The owner's user id.
    owner: uuid::Uuid,
    /// One UTC day of usage (`YYYY-MM-DD`); default every day.
    day: Option<chrono::NaiveDate>,
}

/// Meter event reports to Stripe.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportList {
    reports: Vec<Report>,
}

#[utoipa::path(get, path = "/api/admin/billing/reports", tag = "billing", params(ReportQuery),
    responses((status = 200, description = "the owner's 1,000 newest meter event reports to Stripe (by usage day), each revision with what it added, its state and where it was carried", body = ReportList),
        (status = 400, description = "the query is not an owner id and a day", body = ErrorBody),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody)))]
pub(super) async fn reports(state: Data, caller: Caller, q: web::Query<ReportQuery>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let reports =
        reporting::reports(&mut conn, q.owner, q.day, 1000).await.map_err(|e| ApiError::from(DbError::from(e)))?;
    Ok(HttpResponse::Ok().json(ReportList { reports }))
}

#[utoipa::path(post, path = "/api/admin/billing/reconcile/stripe", tag = "billing",
    responses((status = 202, description = "the accepted meter event reports of the last reconciliation.days are compared with Stripe's summaries now; differences appear at GET /api/admin/billing/findings as stripe_drift"),
        (status = 403, description = describe(&[BillingCode::AdminOnly]), body = ErrorBody)))]
pub(super) async fn reconcile_stripe(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let reporter = state.reporter.clone();
    let days = state.reconciler.days;
    tokio::spawn(async move {
        if let Err(e) = reporter.reconcile_stripe(days).await {
            tracing::warn!(error = %e, "reconciliation with Stripe asked by an admin failed");
        }
    });
    Ok(HttpResponse::Accepted().json(serde_json::json!({"accepted": true})))
}
