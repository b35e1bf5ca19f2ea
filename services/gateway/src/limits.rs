//! Per-person and per-address rate limits: governor's keyed GCRA limiters, in memory.
//!
//! Each key may make `per_minute` requests a minute, in bursts of up to a sixth of that (at
//! least 10); a refused request learns how long until it may try again, which the client reads
//! in `Retry-After` ([`too_many_requests`]). Once many keys are held, those whose budget is full
//! again (indistinguishable from a key never seen) are dropped, so memory stays bounded.

use crate::error::GatewayCode;
use actix_web::HttpResponse;
use actix_web::http::header::{HeaderName, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Governor};
use hopsbridge_platform::http::ErrorCode as _;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Keys held before the ones with a full budget are dropped.
const PRUNE_ABOVE: usize = 100_000;
/// Checks between two looks at how many keys are held (counting them takes the map's lock).
const PRUNE_EVERY: u32 = 1_024;

/// A budget per key, on `C`'s clock (the process's monotonic clock outside tests).
pub struct RateLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    limiter: Governor<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<C::Instant>>,
    checks: AtomicU32,
}

impl<K: Hash + Eq + Clone, C: Clock> std::fmt::Debug for RateLimiter<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("keys", &self.limiter.len()).finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_minute` requests a minute per key.
    #[must_use]
    pub fn per_minute(per_minute: u64) -> Self {
        Self::with_clock(per_minute, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> RateLimiter<K, C> {
    /// `per_minute` requests a minute per key, timed by `clock`.
    #[must_use]
    pub fn with_clock(per_minute: u64, clock: C) -> Self {
        let rate = u32::try_from(per_minute).unwrap_or(u32::MAX).max(1);
        let burst = (rate / 6).max(10);
        let quota = Quota::per_minute(NonZeroU32::MIN.saturating_add(rate - 1))
            .allow_burst(NonZeroU32::MIN.saturating_add(burst - 1));
        Self { limiter: Governor::new(quota, DefaultKeyedStateStore::default(), clock), checks: AtomicU32::new(0) }
    }

    /// Takes one request for `key`: `Ok` when allowed, or the wait before the next allowed one.
    ///
    /// # Errors
    /// The time until the key may make a request again.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(PRUNE_EVERY) && self.limiter.len() > PRUNE_ABOVE {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(key).map_err(|refused| refused.wait_time_from(self.limiter.clock().now()))
    }
}

/// 429 `rate_limited` with `Retry-After` in whole seconds (at least 1).
#[must_use]
pub fn too_many_requests(wait: Duration) -> HttpResponse {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let error = GatewayCode::RateLimited.error().with_details(serde_json::json!({"retry_after_seconds": secs}));
    let mut response = actix_web::ResponseError::error_response(&error);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(HeaderName::from_static("retry-after"), v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn a_burst_is_allowed_then_refused_until_the_bucket_refills() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(60, clock.clone());
        for _ in 0..10 {
            assert!(limiter.check(&"ada").is_ok());
        }
        let wait = limiter.check(&"ada").unwrap_err();
        assert!(wait <= Duration::from_millis(1001) && wait >= Duration::from_millis(999), "{wait:?}");
        assert!(limiter.check(&"grace").is_ok(), "keys are independent");
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(&"ada").is_ok(), "one token a second comes back");
        assert!(limiter.check(&"ada").is_err());
    }

    #[test]
    fn frequent_requests_still_refill_at_the_configured_rate() {
        // 6,000 a minute is 100 a second, a token every 10 ms. Asking every 0.7 ms after the
        // burst is spent must still be allowed about 100 times a second, not fewer because each
        // call's fraction of a token is thrown away.
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(6_000, clock.clone());
        let burst = (0..2_000).take_while(|_| limiter.check(&"ada").is_ok()).count();
        assert_eq!(burst, 1_000);
        let allowed = (1..=10_000u64)
            .filter(|_| {
                clock.advance(Duration::from_micros(700));
                limiter.check(&"ada").is_ok()
            })
            .count();
        // 7 s at 100 a second.
        assert!((699..=700).contains(&allowed), "{allowed}");
    }

    #[test]
    fn keys_with_a_full_budget_are_dropped_once_many_are_held() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(60, clock.clone());
        for key in 0..=PRUNE_ABOVE {
            assert!(limiter.check(&key).is_ok());
        }
        clock.advance(Duration::from_secs(60));
        // Up to the next check that looks at the size, which prunes.
        while !limiter.checks.load(Ordering::Relaxed).is_multiple_of(PRUNE_EVERY) {
            let _ = limiter.check(&0);
        }
        let _ = limiter.check(&0);
        assert!(limiter.limiter.len() <= 1, "{}", limiter.limiter.len());
    }
}
