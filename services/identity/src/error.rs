//! identity's errors and how each is answered.

use hopsbridge_platform::db::DbError;
use hopsbridge_platform::http::ApiError;

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
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this.
    #[error("{1}")]
    Forbidden(&'static str, String),
    /// The request conflicts with the account's state.
    #[error("{1}")]
    Conflict(&'static str, String),
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
            IdentityError::NotFound => Self::not_found("user_not_found", "no such user"),
            IdentityError::EmailInUse => Self::conflict("email_in_use", "another account uses this email address"),
            IdentityError::EmailRequired => Self::new(
                actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                "email_required",
                "the access token carries no email address",
            ),
            IdentityError::Invalid(m) => Self::bad_request("invalid_input", m),
            IdentityError::Forbidden(code, m) => Self::forbidden(code, m),
            IdentityError::Conflict(code, m) => Self::conflict(code, m),
            IdentityError::Db(DbError::Unavailable(_)) => {
                Self::unavailable("database_unavailable", "try again shortly")
            }
            IdentityError::Db(e) => Self::internal(e),
        }
    }
}
