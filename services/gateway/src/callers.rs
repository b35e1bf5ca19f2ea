//! Who each person is (status, roles, owner), as identity answers, and the gateway's short
//! cache of those answers (decision 0008).
//!
//! An answer is used for at most `ttl` from the moment its request to identity started, so a
//! suspension reaches every request within `ttl` (`limits.caller_cache_secs`). Within that bound:
//! - Refresh ahead: the first request that finds an answer older than half the `ttl` still uses
//!   it, and starts one refresh in the background. A person who keeps making requests never
//!   waits for identity, and the cache never expires under all of their requests at once. At
//!   most a few refreshes run at once; a request that finds them all busy uses the answer and
//!   leaves the refresh to the person's next request.
//! - One request at a time per person: requests that find no usable answer take turns, and
//!   those that waited use the answer the first one fetched instead of asking again. Without
//!   it, a burst of requests arriving after the answer expired (a page loading its data after
//!   a pause) would each ask identity, and each of those records a login on the same row.
//!
//! The answers are held in a moka cache: its per-entry expiry drops an answer `ttl` after its
//! request started, its bound keeps memory in check, and its per-key compute lock gives the
//! turns. moka has no refresh-ahead (a background reload before expiry that still serves the old
//! value), so that part is written here on top of it.
//!
//! A `ttl` of zero turns the cache off: every request asks identity.

use crate::error::GatewayCode;
use actix_web::http::StatusCode;
use hopsbridge_domain::{AccountStatus, AuthSubject, Email, OwnerId, UserId};
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_platform::http::{ApiError, ErrorCode as _};
use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Most people remembered; past it moka evicts the least likely to be asked for again.
const CAPACITY: u64 = 100_000;

/// Who a token speaks for: its issuer and subject together (a subject is unique only within the
/// tenant that issued it, so `auth0|abc` of another tenant is another person).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PersonKey {
    /// The token's issuer, with its trailing slash.
    pub issuer: String,
    /// The token's subject.
    pub subject: AuthSubject,
}

/// The person behind a request, as identity knows them.
#[derive(Clone, serde::Deserialize, PartialEq, Eq)]
pub struct Resolved {
    /// Their Hopsbridge user id.
    pub id: UserId,
    /// Whether they may use Hopsbridge.
    pub status: AccountStatus,
    /// Whether they are an admin.
    pub is_admin: bool,
    /// Their email address.
    pub email: Email,
    /// The account owner their usage is billed to (themselves for an owner).
    pub account_owner_id: OwnerId,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("is_admin", &self.is_admin)
            .field("account_owner_id", &self.account_owner_id)
            .finish_non_exhaustive()
    }
}

/// One answer of identity's, and when the request for it started.
#[derive(Debug)]
struct Answer {
    started: Instant,
    person: Resolved,
    /// A background refresh of this answer is running.
    refreshing: AtomicBool,
}

impl Answer {
    fn new(started: Instant, person: Resolved) -> Arc<Self> {
        Arc::new(Self { started, person, refreshing: AtomicBool::new(false) })
    }

    /// Lets the next request due start another refresh.
    fn refresh_failed(&self) {
        self.refreshing.store(false, Ordering::SeqCst);
    }
}

/// moka's expiry for answers: `ttl` after the request for the answer started, not after it
/// was stored.
struct FromRequestStart(Duration);

impl Expiry<PersonKey, Arc<Answer>> for FromRequestStart {
    fn expire_after_create(&self, _: &PersonKey, answer: &Arc<Answer>, created_at: Instant) -> Option<Duration> {
        Some(self.0.saturating_sub(created_at.saturating_duration_since(answer.started)))
    }

    fn expire_after_update(
        &self,
        subject: &PersonKey,
        answer: &Arc<Answer>,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(subject, answer, updated_at)
    }
}

/// Background refreshes running at once, at most. Answers fetched within the same second (a
/// gateway's start, a crowd's first requests) fall due together half a `ttl` later; unbounded,
/// their refreshes would reach identity as one burst and hold its connections while the
/// requests the gateway forwards to identity wait behind them.
const REFRESHES: usize = 4;

/// Cached answers by person (issuer and subject).
pub struct CallerCache {
    ttl: Duration,
    answers: Cache<PersonKey, Arc<Answer>>,
    refreshes: Arc<Semaphore>,
}

impl std::fmt::Debug for CallerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerCache")
            .field("ttl", &self.ttl)
            .field("people", &self.answers.entry_count())
            .finish_non_exhaustive()
    }
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
        Self {
            ttl,
            answers: Cache::builder().max_capacity(CAPACITY).expire_after(FromRequestStart(ttl)).build(),
            refreshes: Arc::new(Semaphore::new(REFRESHES)),
        }
    }

    /// The person behind `subject`: from the cache when it may be used, else from `fetch`.
    /// `fetch` is also what a background refresh runs, on the current Tokio runtime.
    ///
    /// # Errors
    /// What `fetch` fails with when there is no usable answer.
    pub async fn get<F, Fut>(&self, subject: &PersonKey, fetch: F) -> Result<Resolved, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Resolved, ApiError>> + Send + 'static,
    {
        if self.ttl.is_zero() {
            return fetch().await;
        }
        let held = self.answers.get(subject).await;
        match self.judge(held.as_deref(), Instant::now()) {
            Lookup::Fresh(person) => return Ok(person),
            Lookup::RefreshDue(person) => {
                let Ok(permit) = Arc::clone(&self.refreshes).try_acquire_owned() else {
                    // Enough refreshes are running; a later request of this person's starts it.
                    if let Some(due) = held {
                        due.refresh_failed();
                    }
                    return Ok(person);
                };
                let (started, refresh) = (Instant::now(), fetch());
                let (answers, subject) = (self.answers.clone(), subject.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match refresh.await {
                        Ok(person) => keep(&answers, subject, started, person).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "caller refresh failed");
                            if let Some(due) = held {
                                due.refresh_failed();
                            }
                        }
                    }
                });
                return Ok(person);
            }
            Lookup::Missing => {}
        }
        // moka runs compute calls on one key one at a time: whoever held the turn before may
        // have just fetched the answer, which the next one then uses as it is.
        let ttl = self.ttl;
        let outcome = self
            .answers
            .entry_by_ref(subject)
            .and_try_compute_with(|current| async move {
                if current.is_some_and(|c| Instant::now().saturating_duration_since(c.value().started) < ttl) {
                    return Ok(Op::Nop);
                }
                let started = Instant::now();
                let person = fetch().await?;
                Ok::<_, ApiError>(Op::Put(Answer::new(started, person)))
            })
            .await?;
        match outcome {
            CompResult::Inserted(entry) | CompResult::ReplacedWith(entry) | CompResult::Unchanged(entry) => {
                Ok(entry.into_value().person.clone())
            }
            CompResult::StillNone(_) | CompResult::Removed(_) => {
                Err(ApiError::internal(anyhow::anyhow!("the caller cache lost an answer it just kept")))
            }
        }
    }

    /// What `answer` is good for at `now`; claims the refresh when one is due.
    fn judge(&self, answer: Option<&Answer>, now: Instant) -> Lookup {
        let Some(answer) = answer else { return Lookup::Missing };
        let age = now.saturating_duration_since(answer.started);
        if age >= self.ttl {
            Lookup::Missing
        } else if age >= self.ttl / 2 && !answer.refreshing.swap(true, Ordering::SeqCst) {
            Lookup::RefreshDue(answer.person.clone())
        } else {
            Lookup::Fresh(answer.person.clone())
        }
    }

    #[cfg(test)]
    async fn lookup(&self, subject: &PersonKey, now: Instant) -> Lookup {
        self.judge(self.answers.get(subject).await.as_deref(), now)
    }
}

/// Keeps `person`, fetched by a request that started at `started`, unless the cache holds an
/// answer to a later request (a slow refresh must not overwrite a newer status).
async fn keep(answers: &Cache<PersonKey, Arc<Answer>>, subject: PersonKey, started: Instant, person: Resolved) {
    answers
        .entry(subject)
        .and_compute_with(|current| async move {
            if current.is_some_and(|c| c.value().started > started) {
                Op::Nop
            } else {
                Op::Put(Answer::new(started, person))
            }
        })
        .await;
}

/// The path of identity's route that finds or creates the caller.
pub const RESOLVE_PATH: &str = "/internal/callers/resolve";

/// The path of identity's route that resolves the caller of a browser sign-in and announces it
/// (`UserSignedInV1`), called once by the login callback.
pub const SIGNED_IN_PATH: &str = "/internal/callers/signed-in";

/// identity's `POST /internal/callers/resolve` at `url`, signed for the person (their issuer
/// and subject).
///
/// # Errors
/// `identity_unavailable` when identity cannot be reached or fails; identity's own refusals
/// (no email on a first login, an address already in use) as identity worded them.
pub async fn ask_identity(
    client: reqwest::Client,
    url: String,
    key: CallerSigner,
    person: PersonKey,
    email: Option<Email>,
) -> Result<Resolved, ApiError> {
    ask_identity_at(RESOLVE_PATH, client, url, key, person, email).await
}

/// identity's `POST <path>` (a route that resolves the caller: [`RESOLVE_PATH`] or
/// [`SIGNED_IN_PATH`]) at `url`, signed for the person.
///
/// # Errors
/// As [`ask_identity`].
pub async fn ask_identity_at(
    path: &str,
    client: reqwest::Client,
    url: String,
    key: CallerSigner,
    person: PersonKey,
    email: Option<Email>,
) -> Result<Resolved, ApiError> {
    let caller = Caller {
        subject: person.subject.into(),
        issuer: Some(person.issuer),
        user_id: None,
        roles: vec![Role::User],
        email,
    };
    let mut request = client.post(url);
    for (name, value) in key.sign("POST", path, &caller, chrono::Utc::now().timestamp()) {
        request = request.header(name, value);
    }
    if let Some(id) = hopsbridge_platform::http::current_request_id() {
        request = request.header("x-request-id", id);
    }
    // In the request's trace: identity creates a person here and announces it, and the
    // services that handle the announcement continue this trace.
    for (name, value) in hopsbridge_platform::telemetry::trace_context_of(&tracing::Span::current()) {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| {
        tracing::warn!(error = %e, "identity unreachable");
        GatewayCode::IdentityUnavailable.error()
    })?;
    let status = response.status();
    if status.is_success() {
        return response.json().await.map_err(ApiError::internal);
    }
    let body: hopsbridge_platform::http::ErrorBody = response.json().await.map_err(ApiError::internal)?;
    let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if code.is_server_error() {
        return Err(GatewayCode::IdentityUnavailable.error());
    }
    Err(ApiError::new(code, body.code, body.message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn person(status: AccountStatus) -> Resolved {
        Resolved {
            id: UserId::from_uuid(uuid::Uuid::from_u128(1)),
            status,
            is_admin: false,
            email: Email::parse("ada@example.com").unwrap(),
            account_owner_id: OwnerId::from_uuid(uuid::Uuid::from_u128(1)),
        }
    }

    fn subject(name: &str) -> PersonKey {
        PersonKey {
            issuer: "https://tenant.hopsbridge.test/".into(),
            subject: AuthSubject::parse(&format!("auth0|{name}")).unwrap(),
        }
    }

    /// A fetch that counts its calls and answers `status` after `delay`.
    fn counting(
        calls: &Arc<AtomicUsize>,
        status: AccountStatus,
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

    #[tokio::test]
    async fn an_answer_is_fresh_then_due_for_one_refresh_then_unusable() {
        use AccountStatus::Active;
        let cache = CallerCache::new(Duration::from_secs(10));
        let (ada, t0) = (subject("ada"), Instant::now());
        keep(&cache.answers, ada.clone(), t0, person(Active)).await;
        assert_eq!(cache.lookup(&ada, t0 + Duration::from_secs(4)).await, Lookup::Fresh(person(Active)));
        assert_eq!(cache.lookup(&ada, t0 + Duration::from_secs(5)).await, Lookup::RefreshDue(person(Active)));
        assert_eq!(
            cache.lookup(&ada, t0 + Duration::from_secs(6)).await,
            Lookup::Fresh(person(Active)),
            "one refresh at a time"
        );
        assert_eq!(cache.lookup(&ada, t0 + Duration::from_secs(10)).await, Lookup::Missing, "never past the ttl");
        assert_eq!(cache.lookup(&subject("grace"), t0).await, Lookup::Missing);
        // A refresh that failed lets the next request due try again.
        cache.answers.get(&ada).await.unwrap().refresh_failed();
        assert_eq!(cache.lookup(&ada, t0 + Duration::from_secs(7)).await, Lookup::RefreshDue(person(Active)));
    }

    #[tokio::test]
    async fn a_slow_answer_never_replaces_one_asked_for_later() {
        let cache = CallerCache::new(Duration::from_secs(10));
        let (ada, t0) = (subject("ada"), Instant::now());
        keep(&cache.answers, ada.clone(), t0 + Duration::from_secs(2), person(AccountStatus::Suspended)).await;
        keep(&cache.answers, ada.clone(), t0 + Duration::from_secs(1), person(AccountStatus::Active)).await;
        assert_eq!(
            cache.lookup(&ada, t0 + Duration::from_secs(3)).await,
            Lookup::Fresh(person(AccountStatus::Suspended))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_without_a_usable_answer_ask_identity_once_between_them() {
        let cache = Arc::new(CallerCache::new(Duration::from_secs(10)));
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = counting(&calls, AccountStatus::Active, Duration::from_millis(50));
        let ada = subject("ada");
        let answers = futures::future::join_all((0..8).map(|_| cache.get(&ada, &fetch))).await;
        assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|p| *p == person(AccountStatus::Active))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_past_half_its_life_is_used_while_one_refresh_runs_behind_it() {
        let ttl = Duration::from_millis(400);
        let cache = CallerCache::new(ttl);
        let calls = Arc::new(AtomicUsize::new(0));
        let ada = subject("ada");
        keep(&cache.answers, ada.clone(), Instant::now(), person(AccountStatus::Active)).await;
        tokio::time::sleep(ttl / 2).await;
        let refresh = counting(&calls, AccountStatus::Suspended, Duration::from_millis(50));
        for _ in 0..5 {
            let answer = cache.get(&ada, &refresh).await.unwrap();
            assert_eq!(answer, person(AccountStatus::Active), "answered from the cache, without waiting");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one refresh");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = cache.get(&ada, &refresh).await.unwrap();
        assert_eq!(answer, person(AccountStatus::Suspended), "the refreshed answer is used");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refreshes_due_together_run_a_few_at_a_time_and_the_rest_later() {
        let ttl = Duration::from_secs(2);
        let cache = CallerCache::new(ttl);
        let people: Vec<_> = (0..3 * REFRESHES).map(|i| subject(&format!("p{i}"))).collect();
        let t0 = Instant::now();
        for p in &people {
            keep(&cache.answers, p.clone(), t0, person(AccountStatus::Active)).await;
        }
        tokio::time::sleep(ttl / 2).await;
        let (calls, running, most) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(tokio::sync::Notify::new());
        let refresh = {
            let (calls, running, most, release) = (calls.clone(), running.clone(), most.clone(), release.clone());
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let (running, release) = (running.clone(), release.clone());
                Box::pin(async move {
                    release.notified().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(person(AccountStatus::Suspended))
                }) as std::pin::Pin<Box<dyn Future<Output = Result<Resolved, ApiError>> + Send>>
            }
        };
        for p in &people {
            assert_eq!(cache.get(p, &refresh).await.unwrap(), person(AccountStatus::Active), "answered at once");
        }
        assert_eq!(calls.load(Ordering::SeqCst), REFRESHES, "only as many refreshes as may run");
        // The refreshes end; the people whose refresh was left over start theirs on their next request.
        while running.load(Ordering::SeqCst) > 0 {
            release.notify_waiters();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let waiting = tokio::spawn({
            let release = release.clone();
            async move {
                loop {
                    release.notify_waiters();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        for _ in 0..3 {
            for p in &people {
                cache.get(p, &refresh).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        waiting.abort();
        assert!(most.load(Ordering::SeqCst) <= REFRESHES, "at most {REFRESHES} at once: {most:?}");
        for p in &people {
            assert_eq!(cache.get(p, &refresh).await.unwrap(), person(AccountStatus::Suspended), "every one refreshed");
        }
    }

    #[tokio::test]
    async fn the_same_subject_of_another_issuer_is_another_person() {
        let cache = CallerCache::new(Duration::from_secs(10));
        let (ada, t0) = (subject("ada"), Instant::now());
        keep(&cache.answers, ada.clone(), t0, person(AccountStatus::Active)).await;
        let elsewhere = PersonKey { issuer: "https://other-tenant.example/".into(), ..ada };
        assert_eq!(cache.lookup(&elsewhere, t0).await, Lookup::Missing, "never answered from the first one's entry");
    }

    #[tokio::test]
    async fn a_zero_ttl_asks_identity_every_time() {
        let cache = CallerCache::new(Duration::ZERO);
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = counting(&calls, AccountStatus::Active, Duration::ZERO);
        for _ in 0..3 {
            cache.get(&subject("ada"), &fetch).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
