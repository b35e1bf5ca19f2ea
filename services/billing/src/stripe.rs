//! A small typed Stripe client over reqwest: form-encoded requests, `Idempotency-Key` where a
//! POST must be safe to repeat, and errors classified so that callers know what a retry can fix
//! (see docs/decisions/0010-billing-stripe-client.md for why not async-stripe).

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hopsbridge_platform::Secret;
use hopsbridge_platform::retry::Backoff;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// The API version every request is pinned to (the one the sandbox and async-stripe rc.10 use).
pub const API_VERSION: &str = "2026-09-30.endive";

/// A Stripe call failed.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error object.
    #[error("stripe answered {status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// `error.type`, e.g. `invalid_request_error`.
        kind: String,
        /// `error.code`, e.g. `resource_missing`, when present.
        code: Option<String>,
        /// `error.message`.
        message: String,
    },
    /// Stripe could not be reached, or its answer could not be read.
    #[error("stripe unreachable: {0}")]
    Transport(String),
}

impl StripeError {
    /// True when the same request may succeed later: 429, 5xx, a lock conflict (409) or no
    /// answer at all. Authentication failures (401, 403) also count: they are an operator's
    /// mistake that a corrected key fixes, not a property of the request.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Api { status, .. } => matches!(status, 401 | 403 | 409 | 429) || *status >= 500,
        }
    }

    /// The `error.code`, when Stripe gave one.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => code.as_deref(),
            Self::Transport(_) => None,
        }
    }

    /// The HTTP status, when Stripe answered.
    #[must_use]
    pub const fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Transport(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: String,
}

/// A Stripe list page.
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    /// The items.
    pub data: Vec<T>,
    /// Whether more follow.
    #[serde(default)]
    pub has_more: bool,
}

/// The pauses before a request is sent again after a 429: three more tries, 250 ms doubling,
/// with jitter; a fourth 429 reaches the caller.
const RATE_LIMITED: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1)).with_max_attempts(3);

/// The Stripe API at one base URL with one key.
///
/// Requests are paced to at most `requests_per_second` (spread evenly: one at a time, never a
/// burst; shared by every clone), so a burst of work (hundreds of sign-ups at once) queues here
/// instead of running into Stripe's rate limit. A 429 that comes anyway is sent again after
/// [`RATE_LIMITED`]'s pauses (safe: every POST that creates something carries an idempotency
/// key); only a lasting 429 is returned.
#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
    key: Secret<String>,
    pace: Arc<DefaultDirectRateLimiter>,
    /// Requests waiting for the pace, in arrival order: governor wakes every waiter at each
    /// turn and lets an arbitrary one through, so a busy burst could starve a request; tokio's
    /// mutex is fair, so only the oldest waits on the limiter.
    queue: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe").field("base", &self.base).finish_non_exhaustive()
    }
}

/// Form parameters in Stripe's nested-key encoding, in order.
pub type Params = Vec<(String, String)>;

/// Builds [`Params`] from `(key, value)` pairs.
#[must_use]
pub fn params<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Params {
    pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect()
}

impl Stripe {
    /// A client for `base` (e.g. `https://api.stripe.com`) authenticating with `key`, sending
    /// at most `requests_per_second` (at least 1).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: &str, key: Secret<String>, requests_per_second: u32) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            pace: Arc::new(pace(requests_per_second, 1)),
            queue: Arc::default(),
        })
    }

    /// The same client allowing up to `burst` requests at once after a late turn (at least
    /// one), so a pace of hundreds a second keeps its rate although a timer wakes each turn a
    /// little late: with no burst every late wake-up is lost for good. Over any second at most
    /// `requests_per_second + burst` go out.
    #[must_use]
    pub fn with_burst(mut self, requests_per_second: u32, burst: u32) -> Self {
        self.pace = Arc::new(pace(requests_per_second, burst));
        self
    }

    /// Waits for this request's turn under the pace, after the requests that came before it.
    async fn turn(&self) {
        let _first_in_line = self.queue.lock().await;
        self.pace.until_ready().await;
    }

    /// `GET /v1/<path>?<query>`.
    ///
    /// # Errors
    /// [`StripeError`].
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &Params) -> Result<T, StripeError> {
        let mut url = format!("{}/v1/{path}", self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&encode(query)?);
        }
        self.send(self.http.get(url)).await
    }

    /// `POST /v1/<path>` with a form body, and an `Idempotency-Key` when given.
    ///
    /// # Errors
    /// [`StripeError`].
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &Params,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let mut request = self
            .http
            .post(format!("{}/v1/{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form)?);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        self.send(request).await
    }

    /// `DELETE /v1/<path>`. Stripe takes no `Idempotency-Key` on a DELETE (a DELETE is
    /// idempotent by its nature); deleting what is gone already is answered with an error the
    /// caller recognises.
    ///
    /// # Errors
    /// [`StripeError`].
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, StripeError> {
        self.send(self.http.delete(format!("{}/v1/{path}", self.base))).await
    }

    /// `DELETE /v1/<path>` with a form body (`invoice_now=true` when cancelling a subscription).
    ///
    /// # Errors
    /// [`StripeError`].
    pub async fn delete_with<T: DeserializeOwned>(&self, path: &str, form: &Params) -> Result<T, StripeError> {
        let request = self
            .http
            .delete(format!("{}/v1/{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form)?);
        self.send(request).await
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, StripeError> {
        let request = request.bearer_auth(self.key.expose()).header("stripe-version", API_VERSION);
        let mut pauses = RATE_LIMITED.delays();
        let response = loop {
            self.turn().await;
            // Bodies here are always in memory, so the request can be cloned for another try.
            let Some(attempt) = request.try_clone() else {
                return Err(StripeError::Transport("request cannot be repeated".to_owned()));
            };
            let response = attempt.send().await.map_err(|e| StripeError::Transport(e.without_url().to_string()))?;
            if response.status().as_u16() != 429 {
                break response;
            }
            crate::metrics::STRIPE_RATE_LIMITED.inc();
            match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => break response,
            }
        };
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| StripeError::Transport(e.to_string()))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body)
                .map_err(|e| StripeError::Transport(format!("unexpected answer from Stripe: {e}")));
        }
        let error = serde_json::from_slice::<ErrorEnvelope>(&body).map(|e| e.error).unwrap_or(ErrorObject {
            kind: "api_error".to_owned(),
            code: None,
            message: format!("HTTP {status}"),
        });
        Err(StripeError::Api { status, kind: error.kind, code: error.code, message: error.message })
    }
}

/// One request every `1 / requests_per_second` seconds (at least one a second), with at most
/// `burst` (at least 1: none) at once: a request waits for its turn rather than going out with
/// others.
fn pace(requests_per_second: u32, burst: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(requests_per_second).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(Duration::from_secs(1) / rate.get()).unwrap_or_else(|| Quota::per_second(rate));
    RateLimiter::direct(quota.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)))
}

fn encode(params: &Params) -> Result<String, StripeError> {
    serde_urlencoded::to_string(params).map_err(|e| StripeError::Transport(e.to_string()))
}

/// The fields of a customer billing reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    /// `cus_…`.
    pub id: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
}

/// The fields of a subscription billing reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    /// `sub_…`.
    pub id: String,
    /// `cus_…`.
    pub customer: String,
    /// `active`, `past_due`, `canceled`, …
    pub status: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
    /// The items.
    #[serde(default)]
    pub items: Option<List<SubscriptionItem>>,
}

/// The fields of a subscription item billing reads.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    /// `si_…`.
    pub id: String,
    /// When it was added (unix seconds).
    pub created: i64,
    /// Its price.
    pub price: Object,
}

/// An object with an id (meters, prices, products, sessions).
#[derive(Debug, Clone, Deserialize)]
pub struct Object {
    /// The id.
    pub id: String,
    /// The hosted URL, for Checkout and portal sessions.
    #[serde(default)]
    pub url: Option<String>,
}

/// The fields of a billing meter billing reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Meter {
    /// `mtr_…`.
    pub id: String,
    /// The event name usage is reported under.
    pub event_name: String,
    /// `active` or `inactive`.
    pub status: String,
}

/// The fields of a price billing reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    /// `price_…`.
    pub id: String,
    /// Whether it can be used.
    pub active: bool,
    /// Lowercase currency.
    pub currency: String,
    /// The lookup key.
    #[serde(default)]
    pub lookup_key: Option<String>,
    /// The amount as a decimal string.
    #[serde(default)]
    pub unit_amount_decimal: Option<String>,
    /// The recurring terms.
    #[serde(default)]
    pub recurring: Option<Recurring>,
}

/// A price's recurring terms.
#[derive(Debug, Clone, Deserialize)]
pub struct Recurring {
    /// `metered` or `licensed`.
    pub usage_type: String,
    /// The meter of a metered price.
    #[serde(default)]
    pub meter: Option<String>,
}
