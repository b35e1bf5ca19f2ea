//! The gateway's short cache of who each person is (status, roles, owner), as identity answers.
//!
//! An answer is used for at most `ttl` from the moment its request to identity started, so a
//! suspension reaches every request within `ttl` (`limits.caller_cache_secs`). Within that bound:
//! - Refresh ahead: the first request that finds an answer older than half the `ttl` still uses
//!   it, and starts one refresh in the background. A person who keeps making requests never
//!   waits for identity, and the cache never expires under all of their requests at once.
//! - One request at a time per person: requests that find no usable answer take turns, and
//!   those that waited use the answer the first one fetched instead of asking again. Without
//!   it, a burst of requests arriving after the answer expired (a page loading its data after
//!   a pause) would each ask identity, and each of those records a login on the same row.
//!
//! A `ttl` of zero turns the cache off: every request asks identity.

use hopsbridge_platform::http::ApiError;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Most people remembered before answers past their `ttl` are dropped.
const CAPACITY: usize = 100_000;

/// The person behind a request, as identity knows them.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
pub struct Resolved {
    /// Their Hopsbridge user id.
    pub id: Uuid,
    /// `active`, `suspended` or `deleted`.
    pub status: String,
    /// Whether they are an admin.
    pub is_admin: bool,
    /// Their email address.
    pub email: String,
    /// The account owner their usage is billed to (themselves for an owner).
    pub account_owner_id: Uuid,
}

/// Cached answers by Auth0 subject.
#[derive(Debug)]
pub struct CallerCache {
    ttl: Duration,
    entries: Arc<Entries>,
}

#[derive(Debug, Default)]
struct Entry {
    /// The answer, and when the request for it started.
    answer: Option<(Instant, Resolved)>,
    /// A background refresh is running.
    refreshing: bool,
    /// Held by the one request asking identity while no answer is usable.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// What the cache holds for a person at one moment.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    /// Usable, and young enough.
    Fresh(Resolved),
    /// Usable, and the caller is the one to refresh it.
    RefreshDue(Resolved),
    /// Nothing usable.
    Missing,
}

impl CallerCache {
    /// A cache whose answers are used for at most `ttl`.
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Arc::default() }
    }

    /// The person behind `subject`: from the cache when it may be used, else from `fetch`.
    /// `fetch` is also what a background refresh runs, on the current Tokio runtime.
    ///
    /// # Errors
    /// What `fetch` fails with when there is no usable answer.
    pub async fn get<F, Fut>(&self, subject: &str, fetch: F) -> Result<Resolved, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Resolved, ApiError>> + Send + 'static,
    {
        if self.ttl.is_zero() {
            return fetch().await;
        }
        match self.lookup(subject, Instant::now()) {
            Lookup::Fresh(person) => return Ok(person),
            Lookup::RefreshDue(person) => {
                let (started, refresh) = (Instant::now(), fetch());
                let (entries, subject) = (Arc::clone(&self.entries), subject.to_owned());
                tokio::spawn(async move {
                    let person =
                        refresh.await.inspect_err(|e| tracing::warn!(error = %e, "caller refresh failed")).ok();
                    keep(&entries, &subject, started, person, true);
                });
                return Ok(person);
            }
            Lookup::Missing => {}
        }
        let turn = self.turn(subject);
        let _turn = turn.lock().await;
        // Whoever held the turn before may have just fetched it.
        if let Lookup::Fresh(person) | Lookup::RefreshDue(person) = self.lookup(subject, Instant::now()) {
            return Ok(person);
        }
        let started = Instant::now();
        let person = fetch().await?;
        keep(&self.entries, subject, started, Some(person.clone()), false);
        Ok(person)
    }

    fn lookup(&self, subject: &str, now: Instant) -> Lookup {
        let Ok(mut entries) = self.entries.lock() else { return Lookup::Missing };
        let Some(entry) = entries.get_mut(subject) else { return Lookup::Missing };
        let Some((started, person)) = &entry.answer else { return Lookup::Missing };
        let age = now.saturating_duration_since(*started);
        if age >= self.ttl {
            Lookup::Missing
        } else if age >= self.ttl / 2 && !entry.refreshing {
            entry.refreshing = true;
            Lookup::RefreshDue(person.clone())
        } else {
            Lookup::Fresh(person.clone())
        }
    }

    fn turn(&self, subject: &str) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut entries) = self.entries.lock() else { return Arc::default() };
        if entries.len() >= CAPACITY && !entries.contains_key(subject) {
            let (now, ttl) = (Instant::now(), self.ttl);
            entries.retain(|_, e| {
                Arc::strong_count(&e.turn) > 1
                    || e.refreshing
                    || e.answer.as_ref().is_some_and(|(started, _)| now.saturating_duration_since(*started) < ttl)
            });
        }
        Arc::clone(&entries.entry(subject.to_owned()).or_default().turn)
    }
}

type Entries = Mutex<HashMap<String, Entry>>;

/// Keeps `person`, fetched by a request that started at `started`, unless the cache holds an
/// answer to a later request (a slow refresh must not overwrite a newer status). `refreshed`
/// ends the background refresh, so the next request due may start another.
fn keep(entries: &Entries, subject: &str, started: Instant, person: Option<Resolved>, refreshed: bool) {
    let Ok(mut entries) = entries.lock() else { return };
    let entry = entries.entry(subject.to_owned()).or_default();
    if refreshed {
        entry.refreshing = false;
    }
    if let Some(person) = person
        && entry.answer.as_ref().is_none_or(|(kept, _)| *kept <= started)
    {
        entry.answer = Some((started, person));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn person(status: &str) -> Resolved {
        Resolved {
            id: Uuid::from_u128(1),
            status: status.into(),
            is_admin: false,
            email: "ada@example.com".into(),
            account_owner_id: Uuid::from_u128(1),
        }
    }

    /// A fetch that counts its calls and answers `status` after `delay`.
    fn counting(
        calls: &Arc<AtomicUsize>,
        status: &'static str,
        delay: Duration,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Resolved, ApiError>> + Send>> {
        let calls = Arc::clone(calls);
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(person(status))
            })
        }
    }

    #[test]
    fn an_answer_is_fresh_then_due_for_one_refresh_then_unusable() {
        let cache = CallerCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        keep(&cache.entries, "auth0|ada", t0, Some(person("active")), false);
        assert_eq!(cache.lookup("auth0|ada", t0 + Duration::from_secs(4)), Lookup::Fresh(person("active")));
        assert_eq!(cache.lookup("auth0|ada", t0 + Duration::from_secs(5)), Lookup::RefreshDue(person("active")));
        assert_eq!(
            cache.lookup("auth0|ada", t0 + Duration::from_secs(6)),
            Lookup::Fresh(person("active")),
            "one refresh at a time"
        );
        assert_eq!(cache.lookup("auth0|ada", t0 + Duration::from_secs(10)), Lookup::Missing, "never past the ttl");
        assert_eq!(cache.lookup("auth0|grace", t0), Lookup::Missing);
        // A refresh that failed lets the next request due try again.
        keep(&cache.entries, "auth0|ada", t0, None, true);
        assert_eq!(cache.lookup("auth0|ada", t0 + Duration::from_secs(7)), Lookup::RefreshDue(person("active")));
    }

    #[test]
    fn a_slow_answer_never_replaces_one_asked_for_later() {
        let cache = CallerCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        keep(&cache.entries, "auth0|ada", t0 + Duration::from_secs(2), Some(person("suspended")), false);
        keep(&cache.entries, "auth0|ada", t0 + Duration::from_secs(1), Some(person("active")), true);
        assert_eq!(cache.lookup("auth0|ada", t0 + Duration::from_secs(3)), Lookup::Fresh(person("suspended")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_without_a_usable_answer_ask_identity_once_between_them() {
        let cache = Arc::new(CallerCache::new(Duration::from_secs(10)));
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = counting(&calls, "active", Duration::from_millis(50));
        let answers = futures::future::join_all((0..8).map(|_| cache.get("auth0|ada", &fetch))).await;
        assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|p| *p == person("active"))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_past_half_its_life_is_used_while_one_refresh_runs_behind_it() {
        let ttl = Duration::from_millis(400);
        let cache = CallerCache::new(ttl);
        let calls = Arc::new(AtomicUsize::new(0));
        keep(&cache.entries, "auth0|ada", Instant::now(), Some(person("active")), false);
        tokio::time::sleep(ttl / 2).await;
        let refresh = counting(&calls, "suspended", Duration::from_millis(50));
        for _ in 0..5 {
            let answer = cache.get("auth0|ada", &refresh).await.unwrap();
            assert_eq!(answer, person("active"), "answered from the cache, without waiting");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one refresh");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = cache.get("auth0|ada", &refresh).await.unwrap();
        assert_eq!(answer, person("suspended"), "the refreshed answer is used");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_zero_ttl_asks_identity_every_time() {
        let cache = CallerCache::new(Duration::ZERO);
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = counting(&calls, "active", Duration::ZERO);
        for _ in 0..3 {
            cache.get("auth0|ada", &fetch).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
