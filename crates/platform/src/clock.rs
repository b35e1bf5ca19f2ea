//! The calendar clock: what time it is for calendar logic (which windows have ended, deadlines,
//! days and months, expiries shown to people, when something happened).
//!
//! A [`Clock`] is the machine's time unless `clock.follow_url` is set; then it follows a
//! simulated clock (the sandbox's `GET /clock`, a [`Reading`]), read every `clock.poll_ms`
//! and extrapolated between reads at the simulated rate, so tests and local development can
//! move calendar time forward, jump it or run it fast. It never goes backwards within a
//! process: a read that would move it back holds it until the simulated time passes it.
//!
//! Relative timers stay on real time and never use it: retries and backoff, leases, timeouts,
//! relay polling, `Instant`s, and SQL comparing a lease or retry time with Postgres' `now()`
//! (decision 0037). A clock is a value each service holds, not a process global, because tests
//! run several services, each following a clock of its own, in one process.

use crate::config::{ConfigError, Validate};
use crate::http::ReadinessCheck;
use chrono::{DateTime, SubsecRound as _, Utc};
use futures::future::BoxFuture;
use hopsbridge_contracts::Service;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Real time: a simulated clock's rate (in thousandths) when it runs as fast as the wall clock.
pub const REAL_TIME_RATE_MILLI: u32 = 1000;

/// The `[clock]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// A simulated clock to follow (the sandbox's `http://127.0.0.1:<port>/clock`); empty (as in
    /// production) for the machine's time.
    pub follow_url: String,
    /// How often the simulated clock is read, in milliseconds.
    pub poll_ms: u64,
}

impl Validate for ClockConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        let http = |u: url::Url| matches!(u.scheme(), "http" | "https");
        if !self.follow_url.is_empty() && !url::Url::parse(&self.follow_url).is_ok_and(http) {
            return Err(ConfigError::new(service, "clock.follow_url", "must be empty or an http(s) URL"));
        }
        if self.poll_ms == 0 || self.poll_ms > 60_000 {
            return Err(ConfigError::new(service, "clock.poll_ms", "must be between 1 and 60000"));
        }
        Ok(())
    }
}

/// What a simulated clock answers: its time and how fast it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// Simulated time, Unix microseconds.
    pub now_unix_micros: i64,
    /// Simulated microseconds per real millisecond, i.e. the rate in thousandths: 1000 is real
    /// time, 60000 sixty times faster, 0 standing still.
    pub rate_milli: u32,
}

/// The calendar clock of one service (cheap to clone; clones share it).
#[derive(Clone, Debug)]
pub struct Clock {
    follower: Option<Arc<Follower>>,
}

#[derive(Debug)]
struct Follower {
    url: String,
    poll: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// The last reading, and the moment it stood for.
    read: Reading,
    read_at: Instant,
    /// The latest time handed out (never handed out smaller again).
    given: i64,
}

impl State {
    fn extrapolated(&self, at: Instant) -> i64 {
        let elapsed = i128::try_from(at.saturating_duration_since(self.read_at).as_micros()).unwrap_or(i128::MAX);
        let moved = elapsed.saturating_mul(i128::from(self.read.rate_milli)) / 1000;
        i64::try_from(i128::from(self.read.now_unix_micros).saturating_add(moved)).unwrap_or(i64::MAX)
    }
}

fn at_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The machine's time.
    #[must_use]
    pub const fn system() -> Self {
        Self { follower: None }
    }

    /// The clock `config` asks for: the machine's, or the simulated one at `clock.follow_url`
    /// (with a warning: calendar time is then not this machine's).
    ///
    /// # Errors
    /// When the simulated clock cannot be read within a few seconds.
    pub async fn from_config(config: &ClockConfig) -> anyhow::Result<Self> {
        if config.follow_url.is_empty() {
            return Ok(Self::system());
        }
        let clock = Self::follow(&config.follow_url, Duration::from_millis(config.poll_ms)).await?;
        tracing::warn!(url = %config.follow_url, "calendar time follows a simulated clock, not this machine's (tests and local development only)");
        Ok(clock)
    }

    /// Follows the simulated clock at `url`, read every `poll`. The first read is made before
    /// this returns; later failed reads keep the last reading (logged).
    ///
    /// # Errors
    /// When the clock does not answer a reading within 5 s.
    pub async fn follow(url: &str, poll: Duration) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let patience = Instant::now() + Duration::from_secs(5);
        let (read, read_at) = loop {
            match read_clock(&client, url).await {
                Ok(first) => break first,
                Err(e) if Instant::now() < patience => {
                    tracing::debug!(url, error = %e, "simulated clock not readable yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => anyhow::bail!("clock.follow_url: cannot read the simulated clock at {url}: {e}"),
            }
        };
        let state = State { read, read_at, given: read.now_unix_micros };
        let follower = Arc::new(Follower { url: url.to_owned(), poll, state: Mutex::new(state) });
        tokio::spawn(poll_until_dropped(Arc::downgrade(&follower), client));
        Ok(Self { follower: Some(follower) })
    }

    /// Calendar time now, to the microsecond (what Postgres keeps).
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        match &self.follower {
            None => Utc::now().trunc_subsecs(6),
            Some(f) => at_micros(f.now_micros()),
        }
    }

    /// Whether this clock follows a simulated one.
    #[must_use]
    pub const fn is_simulated(&self) -> bool {
        self.follower.is_some()
    }

    /// The calendar time once `real` has passed at the current rate (for comparing a retry,
    /// which waits in real time, with a calendar deadline).
    #[must_use]
    pub fn after(&self, real: Duration) -> DateTime<Utc> {
        let rate = self.follower.as_ref().map_or(REAL_TIME_RATE_MILLI, |f| f.lock().read.rate_milli);
        let real = i128::try_from(real.as_micros()).unwrap_or(i128::MAX);
        let moved = i64::try_from(real.saturating_mul(i128::from(rate)) / 1000).unwrap_or(i64::MAX);
        at_micros(self.now().timestamp_micros().saturating_add(moved))
    }

    /// Sleeps until calendar time `until`. A simulated clock is watched in slices no longer
    /// than its poll interval, so a jump forward or a change of rate is noticed at once.
    pub async fn sleep_until(&self, until: DateTime<Utc>) {
        loop {
            let left = until.timestamp_micros().saturating_sub(self.now().timestamp_micros());
            if left <= 0 {
                return;
            }
            let left = u64::try_from(left).unwrap_or(u64::MAX);
            let slice = match &self.follower {
                None => Duration::from_micros(left),
                Some(f) => {
                    let rate = u64::from(f.lock().read.rate_milli);
                    let real = left.saturating_mul(1000).checked_div(rate).map_or(f.poll, Duration::from_micros);
                    real.min(f.poll)
                }
            };
            tokio::time::sleep(slice.max(Duration::from_millis(1))).await;
        }
    }

    /// A `/readyz` entry saying `"clock": "simulated"` when this clock follows a simulated one.
    #[must_use]
    pub fn readiness(&self) -> Option<Arc<dyn ReadinessCheck>> {
        self.is_simulated().then(|| Arc::new(SimulatedClockCheck(self.clone())) as Arc<dyn ReadinessCheck>)
    }
}

impl Follower {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_micros(&self) -> i64 {
        let mut state = self.lock();
        let now = state.extrapolated(Instant::now()).max(state.given);
        state.given = now;
        now
    }
}

/// One reading, and the moment it stood for (halfway through the request).
async fn read_clock(client: &reqwest::Client, url: &str) -> anyhow::Result<(Reading, Instant)> {
    let sent = Instant::now();
    let reading: Reading = client.get(url).send().await?.error_for_status()?.json().await?;
    let received = Instant::now();
    Ok((reading, sent + received.saturating_duration_since(sent) / 2))
}

async fn poll_until_dropped(follower: Weak<Follower>, client: reqwest::Client) {
    let mut failing = false;
    loop {
        let Some((url, poll)) = follower.upgrade().map(|f| (f.url.clone(), f.poll)) else { return };
        tokio::time::sleep(poll).await;
        let read = read_clock(&client, &url).await;
        let Some(f) = follower.upgrade() else { return };
        match read {
            Ok((read, read_at)) => {
                let mut state = f.lock();
                state.read = read;
                state.read_at = read_at;
                if failing {
                    tracing::info!(url = %f.url, "simulated clock readable again");
                    failing = false;
                }
            }
            Err(e) if !failing => {
                tracing::warn!(url = %f.url, error = %e, "simulated clock unreadable; extrapolating from the last reading");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Holds the clock, so a service that only reports it keeps following it.
struct SimulatedClockCheck(#[expect(dead_code, reason = "kept alive, never read")] Clock);

impl ReadinessCheck for SimulatedClockCheck {
    fn name(&self) -> &'static str {
        "clock"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn ready_as(&self) -> &'static str {
        "simulated"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use actix_web::{App, HttpResponse, HttpServer, web};

    /// A stub simulated clock the test sets: a reading and the instant it was taken.
    #[derive(Clone)]
    struct Stub(Arc<Mutex<(Reading, Instant)>>);

    impl Stub {
        fn set(&self, now_unix_micros: i64, rate_milli: u32) {
            *self.0.lock().unwrap() = (Reading { now_unix_micros, rate_milli }, Instant::now());
        }

        fn now(&self) -> Reading {
            let (r, at) = *self.0.lock().unwrap();
            let moved = i64::try_from(at.elapsed().as_micros()).unwrap() * i64::from(r.rate_milli) / 1000;
            Reading { now_unix_micros: r.now_unix_micros + moved, rate_milli: r.rate_milli }
        }
    }

    async fn serve(stub: Stub) -> String {
        let server = HttpServer::new(move || {
            let stub = stub.clone();
            App::new().route(
                "/clock",
                web::get().to(move || {
                    let reading = stub.now();
                    async move { HttpResponse::Ok().json(reading) }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        tokio::spawn(server.run());
        format!("http://{addr}/clock")
    }

    const T0: i64 = 1_798_761_600_000_000;
    const POLL: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_simulated_clock_is_extrapolated_at_its_rate_never_goes_back_and_a_jump_is_seen_within_a_poll() {
        let stub = Stub(Arc::new(Mutex::new((Reading { now_unix_micros: T0, rate_milli: 0 }, Instant::now()))));
        stub.set(T0, 60_000);
        let clock = Clock::follow(&serve(stub.clone()).await, POLL).await.unwrap();
        assert!(clock.is_simulated());

        // Extrapolated between reads at 60×: 200 ms of real time are 12 s of calendar time.
        let before = clock.now().timestamp_micros();
        let real = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let moved = clock.now().timestamp_micros() - before;
        let want = i64::try_from(real.elapsed().as_micros()).unwrap() * 60;
        assert!((moved - want).abs() < 3_000_000, "moved {moved} µs, want about {want}");
        assert!(clock.after(Duration::from_secs(1)) >= clock.now() + chrono::Duration::seconds(59));

        // A reading behind what was handed out holds the clock: it never goes back.
        let high = clock.now();
        stub.set(T0, 0);
        let mut last = clock.now();
        for _ in 0..8 {
            tokio::time::sleep(POLL / 2).await;
            let now = clock.now();
            assert!(now >= last, "{now} after {last}");
            last = now;
        }
        assert!(last >= high);
        assert!(last.timestamp_micros() - high.timestamp_micros() < 2_000_000, "held, not running on");

        // A jump forward (standing still) is seen within one poll, exactly.
        let jumped = T0 + 3_600_000_000;
        stub.set(jumped, 0);
        tokio::time::sleep(POLL + Duration::from_millis(40)).await;
        assert_eq!(clock.now().timestamp_micros(), jumped);

        // A sleep until a calendar time wakes when the simulated clock gets there by a jump.
        let waiting = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(at_micros(jumped + 600_000_000)).await })
        };
        tokio::time::sleep(POLL * 2).await;
        assert!(!waiting.is_finished(), "a clock standing still does not wake it");
        stub.set(jumped + 900_000_000, 1000);
        tokio::time::timeout(POLL * 4, waiting).await.expect("woken within a poll or two").unwrap();
    }

    #[tokio::test]
    async fn the_system_clock_is_the_machines_and_an_unreachable_clock_is_an_error() {
        let clock = Clock::system();
        assert!(!clock.is_simulated() && clock.readiness().is_none());
        let d = (clock.now() - Utc::now()).num_milliseconds().abs();
        assert!(d < 100, "{d}");
        assert_eq!(clock.now().timestamp_subsec_nanos() % 1000, 0, "microseconds");
        let t = Instant::now();
        clock.sleep_until(clock.now() + chrono::Duration::milliseconds(50)).await;
        assert!(t.elapsed() >= Duration::from_millis(45));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/clock", listener.local_addr().unwrap());
        drop(listener);
        let err = Clock::follow(&url, POLL).await.unwrap_err();
        assert!(err.to_string().contains("clock.follow_url"), "{err}");
    }
}
