//! Per-user and per-IP rate limits: a token bucket per key, in memory.
//!
//! Each key may spend `per_minute` requests a minute, in bursts of up to a sixth of that
//! (at least 10); a refused request learns how many seconds until it may try again
//! (`Retry-After`). Buckets idle long enough to be full again are dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A set of buckets, one per key.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens added per second, in thousandths.
    refill_milli_per_sec: u64,
    /// Bucket size, in thousandths of a token.
    capacity_milli: u64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli: u64,
    at: Instant,
}

impl RateLimiter {
    /// `per_minute` requests a minute per key.
    #[must_use]
    pub fn per_minute(per_minute: u64) -> Self {
        let per_minute = per_minute.max(1);
        Self {
            refill_milli_per_sec: per_minute * 1000 / 60,
            capacity_milli: (per_minute / 6).max(10) * 1000,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `key`: `Ok` when allowed, or the wait before the next allowed one.
    ///
    /// # Errors
    /// The time until a token is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        if buckets.len() > 100_000 {
            let full_after = Duration::from_millis(self.capacity_milli * 1000 / self.refill_milli_per_sec.max(1));
            buckets.retain(|_, b| now.duration_since(b.at) < full_after);
        }
        if !buckets.contains_key(key) {
            buckets.insert(key.to_owned(), Bucket { milli: self.capacity_milli, at: now });
        }
        let Some(bucket) = buckets.get_mut(key) else { return Ok(()) };
        // Refill by whole thousandths and move `at` on only by the time those took, so the
        // remainder is not lost when requests come faster than a thousandth refills.
        let elapsed_us = u64::try_from(now.saturating_duration_since(bucket.at).as_micros()).unwrap_or(u64::MAX);
        let refilled = elapsed_us.saturating_mul(self.refill_milli_per_sec) / 1_000_000;
        if bucket.milli.saturating_add(refilled) >= self.capacity_milli {
            bucket.milli = self.capacity_milli;
            bucket.at = now;
        } else if refilled > 0 {
            bucket.milli += refilled;
            bucket.at += Duration::from_micros(refilled * 1_000_000 / self.refill_milli_per_sec.max(1));
        }
        if bucket.milli >= 1000 {
            bucket.milli -= 1000;
            Ok(())
        } else {
            let missing = 1000 - bucket.milli;
            Err(Duration::from_millis(missing * 1000 / self.refill_milli_per_sec.max(1) + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_until_the_bucket_refills() {
        let limiter = RateLimiter::per_minute(60);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check("ada", t0).is_ok());
        }
        let wait = limiter.check("ada", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(1001) && wait >= Duration::from_millis(999), "{wait:?}");
        assert!(limiter.check("grace", t0).is_ok(), "keys are independent");
        assert!(limiter.check("ada", t0 + Duration::from_secs(1)).is_ok(), "one token a second comes back");
        assert!(limiter.check("ada", t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn frequent_requests_still_refill_at_the_configured_rate() {
        // 6,000 a minute is 100 a second, a token every 10 ms. Asking every 0.7 ms after the
        // burst is spent must still be allowed about 100 times a second, not fewer because each
        // call's fraction of a token is thrown away.
        let limiter = RateLimiter::per_minute(6_000);
        let t0 = Instant::now();
        let burst = (0..2_000).take_while(|_| limiter.check("ada", t0).is_ok()).count();
        assert_eq!(burst, 1_000);
        let allowed =
            (1..=10_000u64).filter(|i| limiter.check("ada", t0 + Duration::from_micros(i * 700)).is_ok()).count();
        // 7 s at 100 a second.
        assert!((699..=700).contains(&allowed), "{allowed}");
    }
}
