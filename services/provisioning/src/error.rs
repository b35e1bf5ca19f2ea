//! provisioning's error catalogue, and the error its operations fail with.
//!
//! Every code provisioning answers with, besides the platform's own ([`PlatformCode`]), is a
//! [`ProvisioningCode`]; a refusal carries its code from where it is decided to the HTTP edge,
//! so no status is ever picked by inspecting an error.

use hopsbridge_platform::db::{DbError, RetryableError};
use hopsbridge_platform::http::{ApiError, ErrorCode, PlatformCode};

hopsbridge_platform::error_codes! {
    /// Every code provisioning answers with, besides the platform's own.
    pub enum ProvisioningCode {
        /// The route is for administrators.
        AdminOnly = (FORBIDDEN, "admin_only", "administrators only"),
        /// The internal route is for the metering service (signing as itself) only.
        MeteringOnly = (FORBIDDEN, "metering_only", "only the metering service may call this route"),
        /// A cluster's name is missing, empty, too long or has control characters.
        InvalidName = (BAD_REQUEST, "invalid_name", "name must be 1-100 characters without control characters"),
        /// A cluster's Hopsworks URL is missing or not a plain https URL.
        InvalidApiUrl = (BAD_REQUEST, "invalid_api_url",
            "api_url must be an https URL without credentials, query or fragment"),
        /// A cluster's API key is missing, empty, too long or has control characters.
        InvalidApiKey = (BAD_REQUEST, "invalid_api_key",
            "api_key must be 1-4096 characters without control characters"),
        /// A cluster's RonDB endpoint (`host:port`), user or password is malformed, or only some
        /// of the three are given where all are needed.
        InvalidRondb = (BAD_REQUEST, "invalid_rondb",
            "rondb_endpoint (host:port), rondb_user and rondb_password are given together, without control characters"),
        /// A cluster's kubeconfig is missing, too large, or names no https cluster and user with
        /// credentials.
        InvalidKubeconfig = (BAD_REQUEST, "invalid_kubeconfig",
            "kubeconfig must name an https cluster and a user with a token or a client certificate"),
        /// A cluster's Hopsworks URL or kubeconfig server is, or resolves to, a loopback,
        /// link-local, unspecified or cloud metadata address, or does not resolve
        /// (`clusters.allow_private_addresses` lifts this for development).
        ClusterAddressRefused = (BAD_REQUEST, "cluster_address_refused",
            "the cluster's Hopsworks URL and kubeconfig server must not be loopback, link-local, unspecified or metadata addresses"),
        /// A registration or change failed a check of the cluster as the services will use it
        /// (the API server, metering's permissions, metrics-server's API, the Hopsworks admin
        /// API with the key); `details.checks` lists every check with what to fix.
        ClusterCheckFailed = (UNPROCESSABLE_ENTITY, "cluster_check_failed",
            "the cluster failed its checks; details.checks says what to fix"),
        /// A cluster's CA bundle is missing or not PEM certificates.
        InvalidCaBundle = (BAD_REQUEST, "invalid_ca_bundle", "ca_bundle must hold PEM certificates"),
        /// A cluster's OAuth client id is missing, empty, too long or has control characters.
        InvalidOauthClientId = (BAD_REQUEST, "invalid_oauth_client_id",
            "oauth_client_id must be 1-256 characters without control characters"),
        /// A cluster's capacity is missing or not an integer from 0 to 1,000,000.
        InvalidCapacity = (BAD_REQUEST, "invalid_capacity", "capacity must be an integer from 0 to 1000000"),
        /// A cluster's region is missing or not 1-64 of letters, digits, `-`, `_` and `.`.
        InvalidRegion = (BAD_REQUEST, "invalid_region", "region must be 1-64 of letters, digits, '-', '_' and '.'"),
        /// A cluster status (in a body) or an assignment status (in a filter) is not a known one.
        InvalidStatus = (BAD_REQUEST, "invalid_status", "the status is not one of the known ones"),
        /// Another cluster has the name (names are unique regardless of case).
        ClusterNameTaken = (CONFLICT, "cluster_name_taken", "another cluster has this name"),
        /// No cluster has the id.
        ClusterNotFound = (NOT_FOUND, "cluster_not_found", "no such cluster"),
        /// The target of a move is not active.
        ClusterNotActive = (CONFLICT, "cluster_not_active", "the cluster is not active"),
        /// The target of a move has no free seat.
        ClusterFull = (CONFLICT, "cluster_full", "the cluster has no free seat"),
        /// provisioning has not heard of the person (no UserCreated yet).
        UserNotFound = (NOT_FOUND, "user_not_found", "provisioning does not know this user"),
        /// The person deleted their account.
        UserDeleted = (CONFLICT, "user_deleted", "the user's account is deleted"),
        /// The person has no assignment at all.
        AssignmentNotFound = (NOT_FOUND, "assignment_not_found", "the user has no assignment"),
        /// A previous move or unassignment is still deactivating a Hopsworks account.
        AssignmentBusy = (CONFLICT, "assignment_busy",
            "the user's previous Hopsworks account is still being deactivated; try again shortly"),
        /// The person holds no seat and is not waiting for one.
        NotAssigned = (NOT_FOUND, "not_assigned", "the user is not assigned to a cluster"),
        /// The cluster's Hopsworks did not answer usably, after the client's retries.
        HopsworksUnavailable = (BAD_GATEWAY, "hopsworks_unavailable", "the cluster's Hopsworks is unavailable"),
        /// Another replica (or request) is syncing the cluster's projects now.
        SyncInProgress = (CONFLICT, "sync_in_progress", "the cluster's projects are being synced; try again shortly"),
    }
}

/// What a provisioning operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    /// Refused with a code of the catalogue; the message says why.
    #[error("{message}")]
    Refused {
        /// The code answered.
        code: ProvisioningCode,
        /// What the caller is told.
        message: String,
    },
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Anything else (sealing failed, a secret does not open).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl ProvisioningError {
    /// A refusal with `message`.
    pub fn refused(code: ProvisioningCode, message: impl Into<String>) -> Self {
        Self::Refused { code, message: message.into() }
    }

    /// The code of a refusal.
    #[must_use]
    pub const fn code(&self) -> Option<ProvisioningCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Db(_) | Self::Other(_) => None,
        }
    }
}

impl From<ProvisioningCode> for ProvisioningError {
    fn from(code: ProvisioningCode) -> Self {
        Self::refused(code, code.description())
    }
}

impl From<diesel::result::Error> for ProvisioningError {
    fn from(e: diesel::result::Error) -> Self {
        match DbError::from(e) {
            DbError::UniqueViolation { constraint } if constraint == "clusters_name_unique" => {
                ProvisioningCode::ClusterNameTaken.into()
            }
            other => Self::Db(other),
        }
    }
}

impl RetryableError for ProvisioningError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}

impl From<ProvisioningError> for ApiError {
    fn from(e: ProvisioningError) -> Self {
        match e {
            ProvisioningError::Refused { code, message } => code.with_message(message),
            ProvisioningError::Db(DbError::Unavailable(_)) => PlatformCode::DatabaseUnavailable.error(),
            ProvisioningError::Db(e) => Self::internal(e),
            ProvisioningError::Other(e) => Self::internal(e),
        }
    }
}
