//! The error codes metering's handlers answer with. Codes every service shares (invalid_query,
//! invalid_path, unauthenticated, database_unavailable, …) are the platform's
//! [`PlatformCode`](hopsbridge_platform::http::PlatformCode).

hopsbridge_platform::error_codes! {
    /// metering's error codes.
    pub enum MeteringCode {
        /// The operation is for administrators.
        AdminOnly = (FORBIDDEN, "admin_only", "administrators only"),
        /// A runs filter names no run state.
        InvalidStatus = (BAD_REQUEST, "invalid_status", "status must be one of pending, running, complete, gap"),
        /// A usage range runs backwards or spans more than 366 days.
        InvalidRange = (BAD_REQUEST, "invalid_range", "from must not be after to, and at most 366 days before it"),
        /// metering has not heard of the cluster.
        ClusterNotFound = (NOT_FOUND, "cluster_not_found", "metering knows no such cluster"),
        /// The cluster is inactive and its projects have no pods left, so it is not measured.
        ClusterInactive = (CONFLICT, "cluster_inactive", "the cluster is inactive and has no pods left to measure"),
        /// An internal route for the billing service was called by anyone else.
        BillingOnly = (FORBIDDEN, "billing_only", "the billing service only"),
        /// No gap estimate has this id.
        EstimateNotFound = (NOT_FOUND, "estimate_not_found", "no gap estimate has this id"),
        /// The estimate was published, rejected, or had nothing to estimate.
        EstimateDecided = (CONFLICT, "estimate_decided", "the estimate is no longer pending: it was published or rejected, or nothing was estimated"),
        /// An estimates filter names no estimate status.
        InvalidEstimateStatus = (BAD_REQUEST, "invalid_estimate_status", "status must be one of pending, published, rejected, none"),
        /// The window's deadline has passed.
        WindowClosed = (CONFLICT, "window_closed", "the window can no longer be measured; it stays a gap"),
    }
}
