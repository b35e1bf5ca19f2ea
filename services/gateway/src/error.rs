//! The codes the gateway answers with itself. A service's own answers, and identity's refusals
//! of a sign-in, reach the client with the service's code unchanged.

hopsbridge_platform::error_codes! {
    /// The gateway's error codes.
    pub enum GatewayCode {
        /// No forwarded prefix or gateway route has the path.
        RouteNotFound = (NOT_FOUND, "route_not_found", "no such route"),
        /// The path would reach another route once parsed as a URL (dot segments, backslashes,
        /// characters that are not percent-encoded).
        InvalidPath = (BAD_REQUEST, "invalid_path",
            "the path must be sent as it is meant: no dot segments, and special characters percent-encoded"),
        /// The method cannot be forwarded.
        InvalidMethod = (BAD_REQUEST, "invalid_method", "unsupported method"),
        /// The path is documented, but not with this method; `Allow` names the methods it
        /// takes (TRACE is never forwarded nor echoed).
        MethodNotAllowed = (METHOD_NOT_ALLOWED, "method_not_allowed",
            "the path does not take this method; Allow lists the methods it takes"),
        /// The method is none the server implements for any path (RFC 9110's methods and PATCH
        /// are known).
        MethodNotImplemented = (NOT_IMPLEMENTED, "method_not_implemented", "the method is not implemented by this server"),
        /// The path, the query or the body carries a NUL character (`%00`, `\u0000`); refused
        /// before anything is forwarded.
        NulCharacter = (BAD_REQUEST, "nul_character",
            "the request carries a NUL character (%00 or \\u0000), which no field accepts"),
        /// The request body broke off or was malformed on the wire.
        InvalidBody = (BAD_REQUEST, "invalid_body", "the request body could not be read"),
        /// The body is larger than `http.max_body_bytes`.
        PayloadTooLarge = (PAYLOAD_TOO_LARGE, "payload_too_large", "request body too large"),
        /// Over the per-address or per-person rate; `Retry-After` says when to come back.
        RateLimited = (TOO_MANY_REQUESTS, "rate_limited", "too many requests"),
        /// Neither a bearer token nor a valid session cookie came with the request.
        Unauthenticated = (UNAUTHORIZED, "unauthenticated", "authentication required"),
        /// The bearer token (or the session's token) is not a valid Auth0 access token for us.
        InvalidToken = (UNAUTHORIZED, "invalid_token", "the access token is not valid"),
        /// A change made with the session cookie lacks the session's `x-csrf-token`.
        CsrfFailed = (FORBIDDEN, "csrf_failed", "missing or wrong x-csrf-token"),
        /// A valid client-credentials token whose client is not in `admin.machine_clients`
        /// (decision 0045).
        MachineClientNotAdmin = (FORBIDDEN, "machine_client_not_admin",
            "the machine client is not granted the admin role in the gateway's configuration"),
        /// A granted machine client asked for a route that is not an admin route: a machine has no
        /// account, so only `/api/admin/…` is open to it.
        MachineClientAdminOnly = (FORBIDDEN, "machine_client_admin_only",
            "a machine client has no account and reaches only the admin routes"),
        /// The person's account is suspended.
        AccountSuspended = (FORBIDDEN, "account_suspended", "the account is suspended"),
        /// The person's account is deleted.
        AccountDeleted = (FORBIDDEN, "account_deleted", "the account is deleted"),
        /// The Auth0 tenant's discovery or keys cannot be read, so no token can be checked.
        AuthUnavailable = (SERVICE_UNAVAILABLE, "auth_unavailable",
            "authentication is unavailable; try again shortly"),
        /// identity, which says who the person is, cannot be reached or failed.
        IdentityUnavailable = (SERVICE_UNAVAILABLE, "identity_unavailable",
            "sign-in is unavailable; try again shortly"),
        /// The service that owns the route cannot be reached.
        UpstreamUnavailable = (BAD_GATEWAY, "upstream_unavailable",
            "the service behind this route is unavailable"),
        /// Browser sign-in cannot start: the Auth0 tenant's discovery cannot be read.
        LoginUnavailable = (SERVICE_UNAVAILABLE, "login_unavailable", "sign-in is unavailable; try again shortly"),
        /// The callback's state matches no sign-in this browser started (or it is over 10 minutes old).
        InvalidLoginState = (BAD_REQUEST, "invalid_login_state",
            "the sign-in could not be matched to one this browser started"),
        /// Auth0 refused the sign-in, or its code or tokens did not check out.
        LoginFailed = (BAD_REQUEST, "login_failed", "the sign-in could not be completed; start again"),
    }
}
