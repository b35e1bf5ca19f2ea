//! The codes billing answers with, besides the platform's own (`unauthenticated`,
//! `database_unavailable`, `internal_error`, …): one catalogue, documented in the OpenAPI
//! document and each reached by a test.

use crate::stripe::StripeError;
use crate::webhooks::SignatureError;
use hopsbridge_platform::http::{ApiError, ErrorCode};

hopsbridge_platform::error_codes! {
    /// billing's error codes.
    pub enum BillingCode {
        /// The caller is signed in but owns no account: billing is the owner's business.
        OwnerOnly = (FORBIDDEN, "owner_only", "only the account owner can see or change billing"),
        /// The owner's billing account is not opened yet.
        AccountNotFound = (NOT_FOUND, "billing_account_not_found", "billing is not set up for this account yet"),
        /// The owner's Stripe customer is not made yet.
        NotReady = (CONFLICT, "billing_not_ready", "billing is still being set up for this account"),
        /// Stripe did not answer, rate-limited billing, or failed; trying again may work.
        StripeUnavailable = (SERVICE_UNAVAILABLE, "stripe_unavailable", "the payment provider is unavailable; try again shortly"),
        /// Stripe refused the request.
        StripeError = (BAD_GATEWAY, "stripe_error", "the payment provider refused the request"),
        /// A webhook came without a `Stripe-Signature` header.
        MissingSignature = (BAD_REQUEST, "missing_signature", "the Stripe-Signature header is missing"),
        /// A webhook's `Stripe-Signature` is malformed or matches no signature of the body.
        InvalidSignature = (BAD_REQUEST, "invalid_signature", "no signature matches the payload"),
        /// A webhook's signature is older or newer than the tolerance (300 s).
        SignatureExpired = (BAD_REQUEST, "signature_expired", "the signature's timestamp is outside the tolerance"),
        /// A signed webhook body is not a Stripe event.
        InvalidPayload = (BAD_REQUEST, "invalid_payload", "not a Stripe event"),
        /// A webhook of an event type billing does not handle.
        UnsupportedEventType = (BAD_REQUEST, "unsupported_event_type", "billing does not handle this event type"),
        /// The operation is for administrators.
        AdminOnly = (FORBIDDEN, "admin_only", "administrators only"),
        /// A price names no metered resource.
        UnknownResource = (BAD_REQUEST, "unknown_resource", "resource must be cpu, memory, gpu, storage_offline or storage_online"),
        /// A price is not a decimal string Stripe takes.
        InvalidPrice = (BAD_REQUEST, "invalid_price", "unit_amount_decimal must be a string: a non-negative decimal in minor units with at most 12 decimal places"),
        /// A price starts too soon for the Stripe catalogue to be ready.
        PriceTooSoon = (BAD_REQUEST, "price_too_soon", "effective_from must be at least prices.min_lead_secs ahead"),
        /// The resource has a price starting at that instant already.
        PriceExists = (CONFLICT, "price_exists", "a price of this resource already starts at that instant"),
        /// A billing mode that does not exist.
        InvalidMode = (BAD_REQUEST, "invalid_mode", "mode must be free, postpaid or prepaid"),
        /// A purchase or grant amount out of bounds or not a whole number of minor units.
        InvalidAmount = (BAD_REQUEST, "invalid_amount", "amount_minor must be a whole number of minor units within the allowed bounds"),
        /// A grant's expiry or priority is unusable.
        InvalidGrant = (BAD_REQUEST, "invalid_grant", "expires_at must be in the future and priority between 0 and 1000"),
        /// A spending cap out of bounds.
        InvalidCap = (BAD_REQUEST, "invalid_cap", "monthly_cap_minor must be null or a whole number from 1 to caps.max_minor"),
        /// A range runs backwards or is too long.
        InvalidRange = (BAD_REQUEST, "invalid_range", "from must be before to, within 366 days (31 for a backfill)"),
        /// A plan that does not exist.
        InvalidPlan = (BAD_REQUEST, "invalid_plan", "plan must be free, payg or prepaid"),
        /// A plan chosen without accepting the terms.
        TermsNotAccepted = (BAD_REQUEST, "terms_not_accepted", "accept_terms must be true to choose a plan"),
        /// The terms accepted are not the version in force.
        TermsOutdated = (CONFLICT, "terms_outdated", "terms_version must be the version of the terms in force"),
        /// Pay as you go chosen without a usable card.
        CardRequired = (CONFLICT, "card_required", "pay as you go needs a card: add one first"),
        /// A spending cap action that does not exist.
        InvalidCapAction = (BAD_REQUEST, "invalid_cap_action", "cap_action must be alert or suspend"),
        /// A usage filter names someone who is neither the owner nor one of their team's
        /// members, present or past.
        PersonNotFound = (NOT_FOUND, "person_not_found", "user_id is neither the owner nor a present or past member of their team"),
    }
}

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> Self {
        let code = match e {
            SignatureError::Missing => BillingCode::MissingSignature,
            SignatureError::Malformed | SignatureError::Mismatch => BillingCode::InvalidSignature,
            SignatureError::Expired => BillingCode::SignatureExpired,
        };
        code.with_message(e.to_string())
    }
}

impl From<StripeError> for ApiError {
    /// A Stripe call a route made failed: `stripe_unavailable` when trying again may work,
    /// `stripe_error` when Stripe refused.
    fn from(e: StripeError) -> Self {
        tracing::warn!(error = %e, "Stripe call failed");
        if e.is_retryable() { BillingCode::StripeUnavailable.error() } else { BillingCode::StripeError.error() }
    }
}

/// An OpenAPI response description naming `codes`, each with its description
/// (`owner_only: only the account owner …`).
#[must_use]
pub fn describe<C: ErrorCode>(codes: &[C]) -> String {
    codes.iter().map(|c| format!("{}: {}", c.code(), c.description())).collect::<Vec<_>>().join("; ")
}
