//! The simulated clock: calendar time for the simulators that have a notion of it (the
//! Kubernetes workload) and for every service that follows it (`clock.follow_url`), so a test
//! or a developer can move calendar time forward, jump it or run it fast.
//!
//! A [`SimClock`] keeps microseconds and a rate (thousandths of real time: 1000 runs with the
//! wall clock, 60000 sixty times faster, 0 stands still); between changes it runs on by itself.
//! [`ClockServer`] serves it over HTTP:
//! - `GET /clock` → `{"now_unix_micros": …, "rate_milli": …}` (the platform's
//!   [`Reading`], integers only);
//! - `POST /clock` with any of `{"now_unix_micros", "advance_micros", "rate_milli"}` sets the
//!   time, moves it forward, and sets the rate, in that order, and answers the new reading;
//!   moving it back is refused (409 `clock_moves_forward`): the services' clocks never go back.

use crate::server::Served;
use actix_web::{HttpResponse, web};
pub use hopsbridge_platform::clock::REAL_TIME_RATE_MILLI;
use hopsbridge_platform::clock::Reading;
use serde::Deserialize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

const MICROS: i64 = 1_000_000;

/// The simulated clock, shared by the simulators of a test or of the sandbox binary.
#[derive(Debug)]
pub struct SimClock {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Simulated time at `since`, Unix microseconds.
    at: i64,
    since: Instant,
    rate_milli: u32,
}

impl State {
    fn now(&self) -> i64 {
        let real = i128::try_from(self.since.elapsed().as_micros()).unwrap_or(i128::MAX);
        let moved = real.saturating_mul(i128::from(self.rate_milli)) / 1000;
        i64::try_from(i128::from(self.at).saturating_add(moved)).unwrap_or(i64::MAX)
    }

    /// Re-anchored at the current simulated time.
    fn anchored(&self) -> Self {
        Self { at: self.now(), since: Instant::now(), rate_milli: self.rate_milli }
    }
}

impl SimClock {
    /// A clock standing still at `unix_secs` (tests move it with [`set`](Self::set) and
    /// [`advance`](Self::advance), or let it run with [`set_rate`](Self::set_rate)).
    #[must_use]
    pub fn new(unix_secs: i64) -> Self {
        Self::running(unix_secs.saturating_mul(MICROS), 0)
    }

    /// A clock at `unix_micros` running at `rate_milli`.
    #[must_use]
    pub fn running(unix_micros: i64, rate_milli: u32) -> Self {
        Self { state: Mutex::new(State { at: unix_micros, since: Instant::now(), rate_milli }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current simulated time in Unix seconds (rounded down).
    #[must_use]
    pub fn now(&self) -> i64 {
        self.now_micros().div_euclid(MICROS)
    }

    /// The current simulated time in Unix microseconds.
    #[must_use]
    pub fn now_micros(&self) -> i64 {
        self.lock().now()
    }

    /// The time and the rate, read together.
    #[must_use]
    pub fn reading(&self) -> Reading {
        let state = self.lock();
        Reading { now_unix_micros: state.now(), rate_milli: state.rate_milli }
    }

    /// How fast it runs, in thousandths of real time.
    #[must_use]
    pub fn rate_milli(&self) -> u32 {
        self.lock().rate_milli
    }

    /// Moves the clock forward by `secs` (a jump; the rate is kept).
    pub fn advance(&self, secs: i64) {
        self.advance_micros(secs.saturating_mul(MICROS));
    }

    /// Moves the clock forward by `micros`.
    pub fn advance_micros(&self, micros: i64) {
        let mut state = self.lock();
        let at = state.now().saturating_add(micros);
        *state = State { at, since: Instant::now(), rate_milli: state.rate_milli };
    }

    /// Sets the clock to `unix_secs` (the rate is kept).
    pub fn set(&self, unix_secs: i64) {
        self.set_micros(unix_secs.saturating_mul(MICROS));
    }

    /// Sets the clock to `unix_micros`.
    pub fn set_micros(&self, unix_micros: i64) {
        let mut state = self.lock();
        *state = State { at: unix_micros, since: Instant::now(), rate_milli: state.rate_milli };
    }

    /// Runs the clock at `rate_milli` thousandths of real time from now on (1000: real time;
    /// 0: standing still).
    pub fn set_rate(&self, rate_milli: u32) {
        let mut state = self.lock();
        *state = State { rate_milli, ..state.anchored() };
    }
}

/// The clock served over HTTP (see the module documentation).
#[derive(Debug)]
pub struct ClockServer {
    served: Served,
}

/// A change asked of the clock over HTTP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    now_unix_micros: Option<i64>,
    advance_micros: Option<i64>,
    rate_milli: Option<u32>,
}

impl ClockServer {
    /// Serves `clock` on `127.0.0.1:0`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn start(clock: Arc<SimClock>) -> std::io::Result<Self> {
        let clock = web::Data::from(clock);
        let served = Served::start(
            move |c| {
                c.app_data(clock.clone()).route("/clock", web::get().to(read)).route("/clock", web::post().to(change));
            },
            None,
        )?;
        Ok(Self { served })
    }

    /// `http://127.0.0.1:<port>/clock`, what services follow (`clock.follow_url`).
    #[must_use]
    pub fn url(&self) -> String {
        format!("{}/clock", self.served.url())
    }
}

async fn read(clock: web::Data<SimClock>) -> HttpResponse {
    HttpResponse::Ok().json(clock.reading())
}

async fn change(clock: web::Data<SimClock>, body: web::Json<Change>) -> HttpResponse {
    if body.now_unix_micros.is_some_and(|t| t < clock.now_micros()) || body.advance_micros.is_some_and(|d| d < 0) {
        return HttpResponse::Conflict().json(serde_json::json!({
            "code": "clock_moves_forward",
            "message": "the simulated clock only moves forward: the services following it never go back",
        }));
    }
    if let Some(t) = body.now_unix_micros {
        clock.set_micros(t);
    }
    if let Some(d) = body.advance_micros {
        clock.advance_micros(d);
    }
    if let Some(rate) = body.rate_milli {
        clock.set_rate(rate);
    }
    HttpResponse::Ok().json(clock.reading())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    const T0: i64 = 1_798_761_600;

    #[test]
    fn a_clock_stands_still_until_given_a_rate_and_keeps_it_across_jumps() {
        let clock = SimClock::new(T0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(clock.now_micros(), T0 * MICROS, "standing still");
        clock.advance(3600);
        assert_eq!(clock.now(), T0 + 3600);
        clock.set_rate(60_000);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let moved = clock.now_micros() - (T0 + 3600) * MICROS;
        assert!((3_000_000..30_000_000).contains(&moved), "60× for 50 ms: {moved} µs");
        clock.set(T0);
        assert_eq!(clock.rate_milli(), 60_000, "a jump keeps the rate");
        assert!(clock.now() < T0 + 10);
        clock.set_rate(0);
        let held = clock.reading();
        assert_eq!((clock.reading(), held.rate_milli), (held, 0));
    }

    #[tokio::test]
    async fn the_clock_is_read_and_moved_forward_over_http_never_back() {
        hopsbridge_platform::install_crypto_provider();
        let clock = Arc::new(SimClock::new(T0));
        let server = ClockServer::start(Arc::clone(&clock)).unwrap();
        let http = reqwest::Client::new();
        let got: Reading = http.get(server.url()).send().await.unwrap().json().await.unwrap();
        assert_eq!(got, Reading { now_unix_micros: T0 * MICROS, rate_milli: 0 });
        let body = serde_json::json!({"advance_micros": 900 * MICROS, "rate_milli": 1000});
        let got: Reading = http.post(server.url()).json(&body).send().await.unwrap().json().await.unwrap();
        assert!(got.now_unix_micros >= (T0 + 900) * MICROS && got.rate_milli == 1000, "{got:?}");
        let back = serde_json::json!({"now_unix_micros": T0 * MICROS});
        let refused = http.post(server.url()).json(&back).send().await.unwrap();
        assert_eq!(refused.status(), 409);
        assert!(clock.now() >= T0 + 900);
    }
}
