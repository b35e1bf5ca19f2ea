//! The pacing of one cluster's requests: at most `max_concurrency` in flight (a semaphore),
//! starts at `requests_per_second` on average with bursts of up to `burst` (governor's GCRA
//! limiter), and a cluster-wide pause after a 429. Nothing is shared between clusters.

use super::CollectConfig;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Bounds on one cluster's requests.
#[derive(Debug)]
pub(super) struct Limiter {
    permits: Semaphore,
    rate: DefaultDirectRateLimiter,
    /// No request starts before this: the end of the last `Retry-After`. Kept here because a
    /// governor limiter cannot be paused.
    paused_until: Mutex<Instant>,
}

impl Limiter {
    pub(super) fn new(config: &CollectConfig) -> Self {
        let rate = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            permits: Semaphore::new(usize::try_from(config.max_concurrency).unwrap_or(1).max(1)),
            rate: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            paused_until: Mutex::new(Instant::now()),
        }
    }

    /// Waits for a slot in flight, the end of any pause and the rate, in that order; `None`
    /// when the limiter was shut down.
    pub(super) async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        let permit = self.permits.acquire().await.ok()?;
        let paused_until = *self.paused_until.lock().await;
        tokio::time::sleep_until(paused_until).await;
        self.rate.until_ready().await;
        Some(permit)
    }

    /// No request starts before `until`.
    pub(super) async fn pause_until(&self, until: Instant) {
        let mut paused_until = self.paused_until.lock().await;
        *paused_until = (*paused_until).max(until);
    }
}
