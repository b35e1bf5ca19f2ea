//! provisioning's errors and how each is answered.

use crate::validate::Invalid;
use actix_web::http::StatusCode;
use hopsbridge_platform::db::DbError;
use hopsbridge_platform::http::ApiError;

/// What a provisioning operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    /// A field of the request is invalid.
    #[error("{}", .0.message)]
    Invalid(Invalid),
    /// No such thing (code names what).
    #[error("{1}")]
    NotFound(&'static str, String),
    /// The request conflicts with the current state (code says how).
    #[error("{1}")]
    Conflict(&'static str, String),
    /// Another cluster has this name.
    #[error("cluster name taken")]
    NameTaken,
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Anything else (sealing failed).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<Invalid> for ProvisioningError {
    fn from(e: Invalid) -> Self {
        Self::Invalid(e)
    }
}

impl From<diesel::result::Error> for ProvisioningError {
    fn from(e: diesel::result::Error) -> Self {
        match DbError::from(e) {
            DbError::UniqueViolation { constraint } if constraint == "clusters_name_unique" => Self::NameTaken,
            other => Self::Db(other),
        }
    }
}

impl hopsbridge_platform::db::RetryableError for ProvisioningError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if hopsbridge_platform::db::RetryableError::is_retryable(e))
    }
}

impl From<ProvisioningError> for ApiError {
    fn from(e: ProvisioningError) -> Self {
        match e {
            ProvisioningError::Invalid(i) => Self::new(StatusCode::BAD_REQUEST, i.code, i.message),
            ProvisioningError::NotFound(code, m) => Self::not_found(code, m),
            ProvisioningError::Conflict(code, m) => Self::conflict(code, m),
            ProvisioningError::NameTaken => Self::conflict("cluster_name_taken", "another cluster has this name"),
            ProvisioningError::Db(DbError::Unavailable(_)) => {
                Self::unavailable("database_unavailable", "try again shortly")
            }
            ProvisioningError::Db(e) => Self::internal(e),
            ProvisioningError::Other(e) => Self::internal(e),
        }
    }
}
