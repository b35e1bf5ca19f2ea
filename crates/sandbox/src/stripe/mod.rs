//! A simulated Stripe API for the parts billing uses: customers, products, prices, billing
//! meters, meter events, adjustments and summaries, subscriptions and their items, invoices
//! computed from metered usage at each period's end, SetupIntents, payment methods, Checkout
//! Sessions, PaymentIntents, billing portal sessions and signed webhooks, served on loopback
//! over plain HTTP.
//!
//! Requests are form-encoded and authenticated with a secret key; answers and errors take
//! Stripe's JSON shapes so the real `async-stripe` client decodes them. Idempotency keys, rate
//! limits and webhook faults (duplicates, reordering, delays, retries) behave as Stripe's do.
//! Calendar time (periods, invoices, meter event windows, idempotency keys) is a [`SimClock`]:
//! the World's, so a test moves Stripe's calendar with everything else.

mod api;
mod billing;
mod catalog;
mod checkout;
mod customers;
mod decimal;
mod form;
mod holds;
mod meters;
mod outage;
mod params;
mod payments;
mod state;
mod subscriptions;
mod webhooks;

pub use holds::HoldStatus;
pub use state::{Attempt, Delivery, WebhookFaults};
pub use webhooks::signature_header;

use crate::clock::{REAL_TIME_RATE_MILLI, SimClock};
use crate::server::Served;
use serde_json::Value;
use state::{Endpoint, RequestCtx, State};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How a simulator starts.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// The secret key requests must carry: `sk_test_…` for a test-mode account, `sk_live_…`
    /// for a live-mode one (every object's `livemode`, and meter events limited at 1,000 a
    /// second instead of the general limit).
    pub secret_key: String,
    /// Reads, and writes, per second allowed per key; `None` for no limit at all (meter events
    /// included). Stripe's are 25 in test mode and 100 in live mode.
    pub rate_limit: Option<u32>,
}

impl Default for StripeConfig {
    /// A test-mode account with Stripe's test-mode limit of 25 reads and 25 writes a second.
    fn default() -> Self {
        Self { secret_key: state::random_id("sk_test_", 32), rate_limit: Some(25) }
    }
}

impl StripeConfig {
    /// A live-mode account (`sk_live_…`) with Stripe's live-mode limits: 100 reads and 100
    /// writes a second, and 1,000 meter events a second.
    #[must_use]
    pub fn live() -> Self {
        Self { secret_key: state::random_id("sk_live_", 32), rate_limit: Some(100) }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running simulator and the handle tests use to inspect and drive it.
#[derive(Debug)]
pub struct StripeSim {
    served: Served,
    shared: Arc<Shared>,
    sender: tokio::task::JoinHandle<()>,
}

impl Drop for StripeSim {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

/// The answer of a control method, or why it failed (Stripe's error message).
pub type ControlResult<T> = Result<T, String>;

impl StripeSim {
    /// Serves the simulator on `127.0.0.1:0` on a calendar clock of its own, at the wall
    /// clock's time and real time, and starts the webhook sender and the billing cycle; needs
    /// a Tokio runtime.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn start(config: StripeConfig) -> std::io::Result<Self> {
        let clock = SimClock::running(chrono::Utc::now().timestamp_micros(), REAL_TIME_RATE_MILLI);
        Self::start_with_clock(config, Arc::new(clock))
    }

    /// [`start`](Self::start) on `clock` (the World's), so Stripe's periods, invoices and
    /// meter event windows move with everything else's calendar.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn start_with_clock(config: StripeConfig, clock: Arc<SimClock>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { state: Mutex::new(State::new(config.secret_key, config.rate_limit, clock)) });
        let routes = shared.clone();
        let served = Served::start(move |cfg| api::configure(cfg, routes.clone()), None)?;
        shared.lock().base_url = served.url();
        let sender = tokio::spawn(webhooks::run(shared.clone()));
        Ok(Self { served, shared, sender })
    }

    /// `http://127.0.0.1:<port>`; the client's base URL is this with a trailing `/`.
    #[must_use]
    pub fn url(&self) -> String {
        self.served.url()
    }

    /// Stops serving; the webhook sender stops when the handle is dropped.
    pub async fn stop(&self) {
        self.served.stop().await;
    }

    /// The secret key requests must carry.
    #[must_use]
    pub fn secret_key(&self) -> String {
        self.shared.lock().secret_key.clone()
    }

    /// Sets the reads, and the writes, per second allowed per key (`None`: unlimited).
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        self.shared.lock().rate_limit = per_second;
    }

    /// Sets the meter events per second allowed per key (`None`: unlimited); they do not count
    /// against [`set_rate_limit`](Self::set_rate_limit)'s.
    pub fn set_meter_event_rate_limit(&self, per_second: Option<u32>) {
        self.shared.lock().meter_event_rate_limit = per_second;
    }

    /// Whether this is a live-mode account (its key is `sk_live_…`).
    #[must_use]
    pub fn livemode(&self) -> bool {
        self.shared.lock().livemode
    }

    /// Answers the next `n` authenticated API requests with `status` and changes nothing:
    /// 429 is Stripe's `rate_limit` error, a 5xx its `api_error`. Hosted pages are not affected.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut state = self.shared.lock();
        state.failures.extend(std::iter::repeat_n(status, n));
    }

    /// Answers every authenticated API request with `status` (429 `rate_limit` or a 5xx
    /// `api_error`, changing nothing) until it is set to `None`: an outage that lasts as long as
    /// a test or an operator's walkthrough needs, however many requests come meanwhile. Also
    /// `PUT /_sandbox/outage` with JSON `{status}` and `DELETE /_sandbox/outage`.
    pub fn set_outage(&self, status: Option<u16>) {
        self.shared.lock().outage = status;
    }

    /// Holds the answer to the `nth` (1 = the next) request with `method` whose path starts
    /// with `path_prefix` that Stripe applies (answers 2xx): its effect is made, its answer
    /// waits until [`release`](Self::release). Other requests are served meanwhile. Answers the
    /// hold's id. Also `POST /_sandbox/holds`.
    pub fn hold(&self, method: &str, path_prefix: &str, nth: u32) -> String {
        self.shared.lock().arm_hold(method, path_prefix, nth)
    }

    /// Where hold `id` stands (`GET /_sandbox/holds/{id}`); `None` for an unknown id.
    #[must_use]
    pub fn hold_status(&self, id: &str) -> Option<HoldStatus> {
        self.shared.lock().hold_status(id)
    }

    /// Releases hold `id` (`POST /_sandbox/holds/{id}/release`): a held answer goes out (to a
    /// client still waiting for it); an armed hold holds nothing any more.
    ///
    /// # Errors
    /// When there is no hold `id`.
    pub fn release(&self, id: &str) -> ControlResult<()> {
        self.shared.lock().release_hold(id).map(|_| ()).map_err(|e| e.message)
    }

    /// How many injected failures are still to be answered.
    #[must_use]
    pub fn failures_left(&self) -> usize {
        self.shared.lock().failures.len()
    }

    /// The calendar clock Stripe runs on (the World's, or its own).
    #[must_use]
    pub fn clock(&self) -> Arc<SimClock> {
        Arc::clone(&self.shared.lock().clock)
    }

    /// Moves the calendar clock forward by `seconds` (the clock it shares with the World, if it
    /// does) and does what falls due: periods end, invoices finalise. A clock never goes back,
    /// so zero or less changes nothing.
    pub fn advance_clock(&self, seconds: i64) {
        let mut state = self.shared.lock();
        if seconds > 0 {
            state.clock.advance(seconds);
        }
        state.tick();
    }

    /// Does what has fallen due on the clock: invoices at each period's end, finalisation and
    /// payment an hour after `invoice.created`. The simulator also does it every few
    /// milliseconds and before every request.
    pub fn run_due(&self) {
        self.shared.lock().tick();
    }

    /// The calendar clock, in unix seconds.
    #[must_use]
    pub fn now(&self) -> i64 {
        self.shared.lock().now()
    }

    /// Customers, newest first.
    #[must_use]
    pub fn customers(&self) -> Vec<Value> {
        self.shared.lock().all("customer")
    }

    /// Subscriptions, newest first, once what fell due has been done.
    #[must_use]
    pub fn subscriptions(&self) -> Vec<Value> {
        let mut state = self.shared.lock();
        state.tick();
        state.all("subscription")
    }

    /// Payment methods, newest first.
    #[must_use]
    pub fn payment_methods(&self) -> Vec<Value> {
        self.shared.lock().all("payment_method")
    }

    /// Invoices, newest first, once what fell due has been done.
    #[must_use]
    pub fn invoices(&self) -> Vec<Value> {
        let mut state = self.shared.lock();
        state.tick();
        state.all("invoice")
    }

    /// Accepted meter events, in the order they arrived (cancelled ones included).
    #[must_use]
    pub fn meter_events(&self) -> Vec<Value> {
        self.shared.lock().meter_events.clone()
    }

    /// Every event emitted, in order, once what fell due has been done.
    #[must_use]
    pub fn events(&self) -> Vec<Value> {
        let mut state = self.shared.lock();
        state.tick();
        state.events.clone()
    }

    /// From now on, charges to payment method `id` are declined (`card_declined`), as they are
    /// for Stripe's test card `pm_card_chargeCustomerFail`; `false` lets them succeed again.
    pub fn decline_charges(&self, id: &str, declined: bool) {
        let mut state = self.shared.lock();
        if declined {
            state.failing_cards.insert(id.to_owned());
        } else {
            state.failing_cards.remove(id);
        }
    }

    /// Every webhook delivery with its attempts.
    #[must_use]
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// Sets the webhook fault modes for events emitted from now on.
    pub fn set_webhook_faults(&self, faults: WebhookFaults) {
        self.shared.lock().faults = faults;
    }

    /// Registers a webhook endpoint receiving every event, signed with `secret`; answers its `we_` id.
    pub fn add_webhook_endpoint(&self, url: &str, secret: &str) -> String {
        self.add_webhook_endpoint_for(url, secret, &["*"])
    }

    /// Registers a webhook endpoint receiving only `events` (Stripe's `enabled_events`; `*`
    /// for all), signed with `secret`; answers its `we_` id.
    pub fn add_webhook_endpoint_for(&self, url: &str, secret: &str, events: &[&str]) -> String {
        let id = State::new_id("we_");
        self.shared.lock().endpoints.push(Endpoint {
            id: id.clone(),
            url: url.to_owned(),
            secret: secret.to_owned(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
        });
        id
    }

    /// Completes an open Checkout Session as a customer paying with a Visa card ending 4242:
    /// attaches the card and, in setup mode, confirms a SetupIntent; emits
    /// `payment_method.attached`, `setup_intent.succeeded` (setup mode) and
    /// `checkout.session.completed`. Answers the completed session.
    ///
    /// # Errors
    /// When the session is missing, not open, or has no customer.
    pub fn complete_checkout_session(&self, id: &str) -> ControlResult<Value> {
        checkout::complete_checkout_session(&mut self.shared.lock(), id).map_err(|e| e.message)
    }

    /// Confirms a SetupIntent as a customer would with a Visa card ending 4242 and emits
    /// `payment_method.attached` (when the intent has a customer) and `setup_intent.succeeded`.
    ///
    /// # Errors
    /// When the SetupIntent is missing or already succeeded.
    pub fn confirm_setup_intent(&self, id: &str) -> ControlResult<Value> {
        let mut state = self.shared.lock();
        payments::confirm_setup_intent(&mut state, id, "pm_card_visa", &RequestCtx::default()).map_err(|e| e.message)
    }

    /// Retries the payment of an open invoice as Stripe's automatic retries do: another
    /// attempt (`attempt_count` one more), charged to the default card as it is now, emitting
    /// `invoice.paid` or `invoice.payment_failed` as [`create_invoice`](Self::create_invoice)
    /// does. Answers the invoice.
    ///
    /// # Errors
    /// When the invoice is missing or not open.
    pub fn retry_invoice_payment(&self, id: &str) -> ControlResult<Value> {
        let mut state = self.shared.lock();
        let invoice = state.get("invoice", "invoice", id, "invoice").map_err(|e| e.message)?;
        if invoice["status"] != "open" {
            return Err(format!("invoice {id} is {}, not open", invoice["status"]));
        }
        billing::pay(&mut state, id, None, &RequestCtx::default());
        state.get("invoice", "invoice", id, "invoice").map_err(|e| e.message)
    }

    /// Creates a finalized invoice for a subscription with one line per subscription item
    /// (`amounts` in item order, in the minor unit), then paid or with a failed payment; emits
    /// `invoice.created`, `invoice.finalized` and `invoice.paid`, or `invoice.payment_failed` and
    /// `customer.subscription.updated` (the subscription turns `past_due`).
    ///
    /// # Errors
    /// When the subscription is missing or `amounts` does not match its items.
    pub fn create_invoice(&self, subscription: &str, amounts: &[i64], paid: bool) -> ControlResult<Value> {
        subscriptions::create_invoice(&mut self.shared.lock(), subscription, amounts, paid).map_err(|e| e.message)
    }
}
