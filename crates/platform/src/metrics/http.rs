//! The HTTP metrics every service's routes get from the platform's middleware.

use super::Metrics;
use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Instant;

/// The route pattern of requests no route of the service took.
pub const UNMATCHED: &str = "unmatched";

/// The route label of a request a handler serves under a default service, where actix knows
/// no pattern (the gateway's forwarding: the routing table's prefix). Put it in the request's
/// extensions; it must come from a bounded set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteLabel(pub &'static str);

/// Requests and their latency, by route pattern.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    /// The metrics, not registered.
    ///
    /// # Panics
    /// Never: the options are constants.
    #[must_use]
    #[allow(clippy::expect_used, reason = "constant, valid metric options")]
    pub fn new() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "hopsbridge_http_requests_total",
                "HTTP requests answered, by route pattern, method and status class (2xx, 4xx, 5xx, …)",
            ),
            &["route", "method", "status_class"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hopsbridge_http_request_duration_seconds",
                "Time from a request's arrival to its response, by route pattern and method",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["route", "method"],
        )
        .expect("valid metric");
        Self { requests, duration }
    }

    pub(crate) fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.duration.clone()))
    }

    /// Records one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.with_label_values(&[route, method, class]).inc();
        self.duration.with_label_values(&[route, method]).observe(seconds);
    }
}

/// A method label: the known methods as they are, anything else `other` (the label stays bounded
/// whatever clients send).
fn method_label(method: &actix_web::http::Method) -> &'static str {
    crate::http::KNOWN_METHODS.iter().find(|m| **m == method.as_str()).copied().unwrap_or("other")
}

/// The request's [`RouteLabel`], else the route pattern it matched (`/api/teams/{team_id}`),
/// else [`UNMATCHED`].
fn route_label(req: &actix_web::HttpRequest) -> String {
    if let Some(RouteLabel(label)) = req.extensions().get::<RouteLabel>() {
        return (*label).to_owned();
    }
    match req.match_pattern() {
        Some(p) if p != "/{unrouted:.*}" => p,
        _ => UNMATCHED.to_owned(),
    }
}

/// The middleware: records every request with its route pattern, method, status and latency.
pub(crate) async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    metrics: Metrics,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    // No clone of the request may be held across the call (routing needs it unique): the
    // pattern is read from the response's request.
    let outcome = next.call(req).await;
    let (route, status) = match &outcome {
        Ok(res) => (route_label(res.request()), res.status().as_u16()),
        Err(e) => (UNMATCHED.to_owned(), e.as_response_error().status_code().as_u16()),
    };
    metrics.http().observe(&route, method, status, started.elapsed().as_secs_f64());
    outcome
}
