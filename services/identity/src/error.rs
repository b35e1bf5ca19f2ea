//! identity's errors: the precise [`IdentityError`] its stores return, the catalogue of codes
//! it answers with ([`IdentityCode`]), and how one becomes the other.

use hopsbridge_platform::db::DbError;
use hopsbridge_platform::http::{ApiError, ErrorCode, PlatformCode, describe, entry};

hopsbridge_platform::error_codes! {
    /// Every code identity answers with, besides the platform's own
    /// ([`PlatformCode`]: `unauthenticated`, `invalid_body`, `invalid_query`, `invalid_path`,
    /// `database_unavailable`, `internal_error`, ...).
    pub enum IdentityCode {
        /// No such user, or not one the caller may see.
        UserNotFound = (NOT_FOUND, "user_not_found", "no such user"),
        /// Another account (not deleted) already uses the email address.
        EmailInUse = (CONFLICT, "email_in_use", "another account uses this email address"),
        /// A person seen for the first time has no email address in their token.
        EmailRequired = (UNPROCESSABLE_ENTITY, "email_required", "the access token carries no email address"),
        /// The name is empty, longer than 200 characters or has control characters.
        InvalidName = (BAD_REQUEST, "invalid_name", "the name is empty, longer than 200 characters or has control characters"),
        /// The webhook's `user_id` is not an Auth0 subject (`provider|id`).
        InvalidUserId = (BAD_REQUEST, "invalid_user_id", "the user_id is not an Auth0 subject (provider|id)"),
        /// The email address is not of the form `local@domain`.
        InvalidEmail = (BAD_REQUEST, "invalid_email", "the email address is not valid"),
        /// The caller's subject is not an Auth0 subject (`provider|id`), or the gateway named no
        /// issuer for it.
        InvalidSubject = (BAD_REQUEST, "invalid_subject", "the caller's subject is not an Auth0 subject (provider|id), or comes without its issuer"),
        /// The post-registration webhook came without the shared secret, or with another one.
        InvalidWebhookSecret = (UNAUTHORIZED, "invalid_webhook_secret", "missing or wrong webhook secret"),
        /// A caller-resolution route (`/internal/callers/...`) called by a service other than the
        /// gateway: only the gateway vouches for people (decision 0053).
        GatewayOnly = (FORBIDDEN, "gateway_only", "only the gateway resolves callers"),
        /// The route is for administrators, and the caller is not one in identity's records.
        AdminOnly = (FORBIDDEN, "admin_only", "administrators only"),
        /// The caller's account is suspended.
        AccountSuspended = (FORBIDDEN, "account_suspended", "the account is suspended"),
        /// The caller's account is deleted.
        AccountDeleted = (FORBIDDEN, "account_deleted", "the account is deleted"),
        /// The account to change is deleted, and a deleted account never changes again (the
        /// same code as [`IdentityCode::AccountDeleted`], answered with 409 because the caller is
        /// not the one refused).
        AccountDeletedConflict = (CONFLICT, "account_deleted", "the account is deleted"),
        /// A team member tried to delete their account; their owner removes them instead.
        MemberAccount = (CONFLICT, "member_account", "a team member's account is removed by its owner"),
        /// An owner tried to delete their account while their team still has members.
        TeamNotEmpty = (CONFLICT, "team_not_empty", "remove your team members before deleting the account"),
        /// The team service, which says whether an owner still has members, did not answer; the
        /// account is left as it was.
        TeamUnavailable = (SERVICE_UNAVAILABLE, "team_unavailable", "the team service did not answer and nothing was changed, try again shortly"),
        /// An administrator tried to suspend themselves.
        CannotSuspendSelf = (CONFLICT, "cannot_suspend_self", "administrators cannot suspend themselves"),
        /// An administrator tried to revoke their own rights.
        CannotRevokeSelf = (CONFLICT, "cannot_revoke_self", "administrators cannot revoke their own rights"),
    }
}

/// What an identity operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No such user (or not one the caller may see).
    #[error("user not found")]
    NotFound,
    /// Another account already uses this email.
    #[error("email already in use")]
    EmailInUse,
    /// A new person's token carried no email.
    #[error("email required")]
    EmailRequired,
    /// The account's state refuses the operation; the code says which state and how it is
    /// answered ([`IdentityCode::AccountSuspended`], [`IdentityCode::TeamNotEmpty`], ...).
    #[error("refused: {}", .0.description())]
    Refused(IdentityCode),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for IdentityError {
    fn from(e: diesel::result::Error) -> Self {
        match DbError::from(e) {
            DbError::NotFound => Self::NotFound,
            DbError::UniqueViolation { constraint } if constraint == "users_email_unique" => Self::EmailInUse,
            other => Self::Db(other),
        }
    }
}

impl hopsbridge_platform::db::RetryableError for IdentityError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::NotFound => IdentityCode::UserNotFound.error(),
            IdentityError::EmailInUse => IdentityCode::EmailInUse.error(),
            IdentityError::EmailRequired => IdentityCode::EmailRequired.error(),
            IdentityError::Refused(code) => code.error(),
            IdentityError::Db(DbError::Unavailable(_)) => PlatformCode::DatabaseUnavailable.error(),
            IdentityError::Db(e) => Self::internal(e),
        }
    }
}

/// The description of an error response in the OpenAPI document: each code it may carry, with
/// its description (`code: description; …`), so the document says what the catalogue says.
pub(crate) fn answers(identity: &[IdentityCode], platform: &[PlatformCode]) -> String {
    let entries: Vec<_> = identity.iter().map(|c| entry(*c)).chain(platform.iter().map(|c| entry(*c))).collect();
    describe(&entries)
}
