//! A simulated Stripe API for the parts billing uses: customers, products, prices, billing
//! meters and meter events, subscriptions, SetupIntents, payment methods, Checkout Sessions,
//! invoices, billing portal sessions and signed webhooks, served on loopback over plain HTTP.
//!
//! Requests are form-encoded and authenticated with a secret key; answers and errors take
//! Stripe's JSON shapes so the real `async-stripe` client decodes them. Idempotency keys, rate
//! limits and webhook faults (duplicates, reordering, delays, retries) behave as Stripe's do.

mod api;
mod catalog;
mod checkout;
mod customers;
mod form;
mod params;
mod payments;
mod state;
mod subscriptions;
mod webhooks;

pub use state::{Attempt, Delivery, WebhookFaults};
pub use webhooks::signature_header;

use crate::server::Served;
use serde_json::Value;
use state::{Endpoint, RequestCtx, State};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How a simulator starts.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// The secret key requests must carry (`sk_test_…`).
    pub secret_key: String,
    /// Requests per second allowed per key; `None` for no limit. Defaults to Stripe's test-mode
    /// limit of 25.
    pub rate_limit: Option<u32>,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self { secret_key: state::random_id("sk_test_", 32), rate_limit: Some(25) }
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
    /// Serves the simulator on `127.0.0.1:0` and starts the webhook sender; needs a Tokio runtime.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn start(config: StripeConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                secret_key: config.secret_key,
                rate_limit: config.rate_limit,
                ..State::default()
            }),
        });
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

    /// Sets the requests per second allowed per key (`None`: unlimited).
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        self.shared.lock().rate_limit = per_second;
    }

    /// Answers the next `n` authenticated API requests with `status` and changes nothing:
    /// 429 is Stripe's `rate_limit` error, a 5xx its `api_error`. Hosted pages are not affected.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut state = self.shared.lock();
        state.failures.extend(std::iter::repeat_n(status, n));
    }

    /// How many injected failures are still to be answered.
    #[must_use]
    pub fn failures_left(&self) -> usize {
        self.shared.lock().failures.len()
    }

    /// Moves the simulated clock forward (or back) by `seconds`.
    pub fn advance_clock(&self, seconds: i64) {
        self.shared.lock().clock_offset += seconds;
    }

    /// The simulated clock, in unix seconds.
    #[must_use]
    pub fn now(&self) -> i64 {
        self.shared.lock().now()
    }

    /// Customers, newest first.
    #[must_use]
    pub fn customers(&self) -> Vec<Value> {
        self.shared.lock().all("customer")
    }

    /// Subscriptions, newest first.
    #[must_use]
    pub fn subscriptions(&self) -> Vec<Value> {
        self.shared.lock().all("subscription")
    }

    /// Payment methods, newest first.
    #[must_use]
    pub fn payment_methods(&self) -> Vec<Value> {
        self.shared.lock().all("payment_method")
    }

    /// Invoices, newest first.
    #[must_use]
    pub fn invoices(&self) -> Vec<Value> {
        self.shared.lock().all("invoice")
    }

    /// Accepted meter events, in the order they arrived.
    #[must_use]
    pub fn meter_events(&self) -> Vec<Value> {
        self.shared.lock().meter_events.clone()
    }

    /// Every event emitted, in order.
    #[must_use]
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
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
