//! One retry policy for every service: exponential delays with jitter, from `backon`.
//!
//! A [`Backoff`] is used in two ways:
//! - around a call made again in the same task: `(|| call()).retry(policy.builder())`
//!   (backon's [`Retryable`](backon::Retryable)), or a loop that takes
//!   [`Backoff::delays`] one at a time when it must also watch for shutdown;
//! - for work retried later from a table (`next_attempt_at`): [`Backoff::delay`] gives the
//!   jittered delay before the `n`th retry, so stored retries spread out like in-process ones.
//!
//! Jitter adds a random part of up to the delay itself, so clients that failed together do not
//! return together.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// Exponential delays, doubling from `initial` up to `max`, each with jitter, and at most
/// `max_attempts` retries (unbounded when `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry (before jitter).
    pub initial: Duration,
    /// The longest delay (before jitter).
    pub max: Duration,
    /// How many retries the policy allows; `None` retries for ever.
    pub max_attempts: Option<usize>,
}

impl Backoff {
    /// Unbounded retries, from `initial` doubling to `max`.
    #[must_use]
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, max_attempts: None }
    }

    /// At most `n` retries.
    #[must_use]
    pub const fn with_max_attempts(self, n: usize) -> Self {
        Self { max_attempts: Some(n), ..self }
    }

    /// backon's builder for this policy, for [`backon::Retryable::retry`].
    #[must_use]
    pub fn builder(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max.max(self.initial))
            .with_factor(2.0)
            .with_jitter();
        match self.max_attempts {
            Some(n) => builder.with_max_times(n),
            None => builder.without_max_times(),
        }
    }

    /// The delays of successive retries; `None` once the policy gives up.
    #[must_use]
    pub fn delays(&self) -> ExponentialBackoff {
        self.builder().build()
    }

    /// The jittered delay before retry number `retry` (0 for the first), however many the
    /// policy allows: for work that is retried later from a table.
    #[must_use]
    pub fn delay(&self, retry: u32) -> Duration {
        let unbounded = Self { max_attempts: None, ..*self };
        // Past 32 doublings every delay is `max`; skip the walk.
        let n = usize::try_from(retry.min(32)).unwrap_or(32);
        unbounded.delays().nth(n).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_to_the_cap_with_at_most_their_own_length_of_jitter() {
        let policy = Backoff::new(ms(100), ms(1_000));
        for (retry, base) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1_000), (40, 1_000)] {
            for _ in 0..50 {
                let d = policy.delay(retry);
                assert!(d >= ms(base) && d <= ms(base * 2), "retry {retry}: {d:?}");
            }
        }
    }

    #[test]
    fn delays_are_jittered() {
        let policy = Backoff::new(ms(1_000), ms(1_000));
        let seen: std::collections::HashSet<_> = (0..50).map(|_| policy.delay(0)).collect();
        assert!(seen.len() > 1, "every delay was the same: {seen:?}");
    }

    #[test]
    fn a_bounded_policy_gives_up_after_its_retries() {
        let policy = Backoff::new(ms(1), ms(10)).with_max_attempts(3);
        assert_eq!(policy.delays().count(), 3);
        assert!(policy.delay(10) >= ms(10), "delay() ignores the bound");
    }
}
