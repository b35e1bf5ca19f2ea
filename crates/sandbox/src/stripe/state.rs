//! The simulator's state: stored objects, idempotency records, meter events, webhook endpoints,
//! events and their deliveries, and Stripe's error answers.

use super::decimal::Dec;
use crate::clock::SimClock;
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The API version events are rendered with (the one async-stripe 1.0.0-rc.10 pins).
pub const API_VERSION: &str = "2026-09-30.endive";

/// Seconds in a day: idempotency keys and meter event identifiers are kept this long.
pub const DAY: i64 = 86_400;

/// How long a subscription's invoice stays a draft after `invoice.created` before Stripe
/// finalises it and takes the payment.
pub const FINALIZE_AFTER: i64 = 3600;

/// An object in Stripe's JSON shape, or the error to answer.
pub type Answer = Result<Value, ApiError>;

/// An error answered in Stripe's shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
    /// More fields of the error object, e.g. `decline_code` and `setup_intent` of a card error.
    pub extra: Vec<(&'static str, Value)>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            message: message.into(),
            param: param.map(str::to_owned),
            extra: Vec::new(),
        }
    }

    pub fn missing_param(param: &str) -> Self {
        Self {
            code: Some("parameter_missing"),
            ..Self::invalid(format!("Missing required param: {param}."), Some(param))
        }
    }

    /// A referenced object (in a parameter) that does not exist: 400 `resource_missing`.
    pub fn no_such_param(what: &str, id: &str, param: &str) -> Self {
        Self { status: 400, ..Self::no_such(what, id, param) }
    }

    /// An object in the path that does not exist: 404 `resource_missing`.
    pub fn no_such(what: &str, id: &str, param: &str) -> Self {
        Self {
            status: 404,
            code: Some("resource_missing"),
            ..Self::invalid(format!("No such {what}: '{id}'"), Some(param))
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"type": self.kind, "message": self.message});
        if let Some(code) = self.code {
            error["code"] = json!(code);
            error["doc_url"] = json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")));
        }
        if let Some(param) = &self.param {
            error["param"] = json!(param);
        }
        for (key, value) in &self.extra {
            error[*key] = value.clone();
        }
        json!({ "error": error })
    }
}

/// How webhook deliveries misbehave, as a test sets it.
#[derive(Debug, Clone)]
pub struct WebhookFaults {
    /// Deliver every event twice.
    pub duplicate: bool,
    /// Send up to 64 deliveries at once, as Stripe does (it keeps no order, and a slow answer
    /// holds up only its own delivery). Off, deliveries go one at a time in the order the
    /// events happened, which keeps a test's expectations simple.
    pub concurrent: bool,
    /// Hold deliveries back for `hold` and send each held batch newest first.
    pub out_of_order: bool,
    /// How long out-of-order deliveries are held back to collect a batch.
    pub hold: Duration,
    /// Extra delay before the first attempt.
    pub delay: Duration,
    /// Attempts per delivery before giving up (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further retry.
    pub backoff: Duration,
}

impl Default for WebhookFaults {
    fn default() -> Self {
        Self {
            duplicate: false,
            concurrent: false,
            out_of_order: false,
            hold: Duration::from_millis(300),
            delay: Duration::ZERO,
            max_attempts: 5,
            backoff: Duration::from_millis(50),
        }
    }
}

/// One attempt to deliver an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The HTTP status answered, or `None` when the request failed.
    pub status: Option<u16>,
    /// When the attempt was made.
    pub at: Instant,
}

impl Delivery {
    /// The status of each attempt (`None`: no answer).
    #[must_use]
    pub fn statuses(&self) -> Vec<Option<u16>> {
        self.attempts.iter().map(|a| a.status).collect()
    }
}

/// One event sent to one endpoint, with the outcome of each attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event's `evt_` id.
    pub event_id: String,
    /// The event's type, e.g. `checkout.session.completed`.
    pub event_type: String,
    /// The endpoint's URL.
    pub url: String,
    /// Each attempt, in order.
    pub attempts: Vec<Attempt>,
    /// Whether an attempt got a 2xx answer.
    pub succeeded: bool,
    pub(crate) secret: String,
    pub(crate) body: String,
}

#[derive(Debug)]
pub struct Pending {
    pub delivery: usize,
    pub due: Instant,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub secret: String,
    /// Event types sent to the endpoint; `*` for all.
    pub events: Vec<String>,
}

#[derive(Debug)]
pub struct IdempotencyRecord {
    pub request: String,
    pub status: u16,
    pub body: Value,
    pub at: i64,
}

/// The context of the API request that caused an event.
#[derive(Debug, Clone, Default)]
pub struct RequestCtx {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Which per-second budget a request spends: Stripe counts reads and writes apart, and meter
/// events have a limit of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Read,
    Write,
    MeterEvents,
}

/// One accepted meter event, as the invoices and summaries read it.
#[derive(Debug, Clone)]
pub struct MeterRecord {
    pub meter: String,
    pub event_name: String,
    pub customer: String,
    pub value: Dec,
    pub timestamp: i64,
    /// When Stripe received it, on the calendar clock.
    pub received: i64,
    pub identifier: String,
    /// When an adjustment cancelled it.
    pub cancelled: Option<i64>,
}

/// A subscription item over its life: items removed from a subscription leave its JSON but
/// not this record.
#[derive(Debug, Clone)]
pub struct ItemRecord {
    pub id: String,
    pub price: Value,
    pub quantity: Option<i64>,
    pub added: i64,
    pub removed: Option<i64>,
}

/// A subscription's billing cycle: the anchor its periods are counted from and the open period.
#[derive(Debug, Clone)]
pub struct Cycle {
    pub anchor: i64,
    pub interval: String,
    pub count: u32,
    pub period_start: i64,
    pub period_end: i64,
    /// `period_end` is the anchor moved on by this many intervals.
    pub next: i64,
}

/// What one invoice line bills.
#[derive(Debug, Clone)]
pub enum LineSpec {
    /// A metered item's usage with timestamps in `[from, to)`, counted when the invoice is
    /// finalised.
    Metered { item: String, price: Value, customer: String, from: i64, to: i64 },
    /// A licensed item for `[from, to)` (or any item, at an amount a test chose), at a fixed
    /// amount.
    Fixed { item: String, price: Value, quantity: Option<i64>, from: i64, to: i64, amount: i64 },
    /// A pending invoice item (a proration, or usage billed when its item was removed).
    Item(PendingItem),
}

/// An invoice item waiting for the subscription's next invoice.
#[derive(Debug, Clone)]
pub struct PendingItem {
    pub id: String,
    pub subscription: String,
    pub subscription_item: String,
    pub price: Value,
    pub amount: i64,
    pub quantity_decimal: String,
    pub proration: bool,
    pub from: i64,
    pub to: i64,
}

/// A draft invoice Stripe finalises at `finalize_at`.
#[derive(Debug, Clone)]
pub struct Draft {
    pub invoice: String,
    pub finalize_at: i64,
    pub lines: Vec<LineSpec>,
}

#[derive(Debug)]
pub struct State {
    pub secret_key: String,
    pub base_url: String,
    /// Whether this is a live-mode account (`sk_live_…`): `livemode` on every object and
    /// live-mode rate limits.
    pub livemode: bool,
    /// The calendar: the World's clock, or one of the simulator's own at real time.
    pub clock: Arc<SimClock>,
    /// While the simulator acts on its own at a scheduled time (a period's end, a
    /// finalisation), that time: what `now()` answers.
    pub as_of: Option<i64>,
    /// Requests per second per key and kind (reads, writes); `None` for no limit.
    pub rate_limit: Option<u32>,
    /// Meter events per second per key; `None` for no limit.
    pub meter_event_rate_limit: Option<u32>,
    /// Statuses the next API requests are answered with (a test's faults), first first.
    pub failures: VecDeque<u16>,
    /// While set, every API request is answered with this status (an outage), until cleared.
    pub outage: Option<u16>,
    pub rate_window: HashMap<(String, Bucket), (i64, u32)>,
    pub objects: BTreeMap<String, Value>,
    /// The ids of each type of object (`"customer"`, …), oldest first.
    pub order: HashMap<String, Vec<String>>,
    pub idempotency: HashMap<String, IdempotencyRecord>,
    /// The same keys in the order saved (the clock never goes back), so those older than 24
    /// hours are dropped from the front instead of by a scan of all of them on every request.
    pub idempotency_order: VecDeque<(i64, String)>,
    pub meter_events: Vec<Value>,
    pub meter_records: Vec<MeterRecord>,
    /// Each identifier seen in the last 24 hours: when it was received and its record.
    pub meter_identifiers: HashMap<String, (i64, usize)>,
    /// The same identifiers in the order received (the clock never goes back), so those older
    /// than 24 hours are dropped from the front instead of by a scan of all of them.
    pub meter_identifier_order: VecDeque<(i64, String)>,
    pub items: HashMap<String, Vec<ItemRecord>>,
    pub cycles: HashMap<String, Cycle>,
    pub pending_items: Vec<PendingItem>,
    pub drafts: Vec<Draft>,
    /// Payment methods whose charges are declined (`pm_card_chargeCustomerFail`, or a test's).
    pub failing_cards: HashSet<String>,
    pub endpoints: Vec<Endpoint>,
    pub events: Vec<Value>,
    pub deliveries: Vec<Delivery>,
    pub pending: Vec<Pending>,
    pub faults: WebhookFaults,
    pub hold_until: Option<Instant>,
    /// Hold controls (`holds`): requests whose answers are held back once applied.
    pub holds: Vec<super::holds::Hold>,
}

pub fn random_id(prefix: &str, len: usize) -> String {
    let tail: String = rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect();
    format!("{prefix}{tail}")
}

/// Sets every `livemode` field in `value` to `live`.
pub fn set_livemode(value: &mut Value, live: bool) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "livemode" {
                    *child = Value::Bool(live);
                } else {
                    set_livemode(child, live);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| set_livemode(item, live)),
        _ => {}
    }
}

impl State {
    pub fn new(secret_key: String, rate_limit: Option<u32>, clock: Arc<SimClock>) -> Self {
        let livemode = secret_key.starts_with("sk_live_");
        // Stripe's v1 meter events take about 1,000 a second in live mode; test mode's is not
        // published, so it is taken to be the general test-mode limit.
        let meter_event_rate_limit = rate_limit.map(|general| if livemode { 1000 } else { general });
        Self {
            secret_key,
            base_url: String::new(),
            livemode,
            clock,
            as_of: None,
            rate_limit,
            meter_event_rate_limit,
            failures: VecDeque::new(),
            outage: None,
            rate_window: HashMap::new(),
            objects: BTreeMap::new(),
            order: HashMap::new(),
            idempotency: HashMap::new(),
            idempotency_order: VecDeque::new(),
            meter_events: Vec::new(),
            meter_records: Vec::new(),
            meter_identifiers: HashMap::new(),
            meter_identifier_order: VecDeque::new(),
            items: HashMap::new(),
            cycles: HashMap::new(),
            pending_items: Vec::new(),
            drafts: Vec::new(),
            failing_cards: HashSet::new(),
            endpoints: Vec::new(),
            events: Vec::new(),
            deliveries: Vec::new(),
            pending: Vec::new(),
            faults: WebhookFaults::default(),
            hold_until: None,
            holds: Vec::new(),
        }
    }

    /// The calendar time, unix seconds: the clock's, or the scheduled time being acted on.
    pub fn now(&self) -> i64 {
        self.as_of.unwrap_or_else(|| self.clock.now())
    }

    /// Forgets the idempotency keys saved 24 hours or more ago (of the clock).
    pub fn expire_idempotency_keys(&mut self) {
        let now = self.now();
        while let Some((at, _)) = self.idempotency_order.front()
            && now - *at >= DAY
        {
            if let Some((at, key)) = self.idempotency_order.pop_front()
                && self.idempotency.get(&key).is_some_and(|r| r.at == at)
            {
                self.idempotency.remove(&key);
            }
        }
    }

    /// `test` or `live`, as Stripe writes it in some ids (`cs_test_…`).
    pub fn mode(&self) -> &'static str {
        if self.livemode { "live" } else { "test" }
    }

    pub fn new_id(prefix: &str) -> String {
        random_id(prefix, 24)
    }

    pub fn put(&mut self, mut object: Value) {
        set_livemode(&mut object, self.livemode);
        if let Some(id) = object["id"].as_str() {
            if !self.objects.contains_key(id) {
                let kind = object["object"].as_str().unwrap_or_default().to_owned();
                self.order.entry(kind).or_default().push(id.to_owned());
            }
            self.objects.insert(id.to_owned(), object);
        }
    }

    /// The stored object `id` of type `object`, or Stripe's 404.
    pub fn get(&self, object: &str, what: &str, id: &str, param: &str) -> Result<Value, ApiError> {
        self.objects
            .get(id)
            .filter(|o| o["object"] == object)
            .cloned()
            .ok_or_else(|| ApiError::no_such(what, id, param))
    }

    /// Objects of one type that `keep` accepts, newest first. Only those are copied: a list
    /// filtered by customer or email costs a look at each object of the type, not a copy.
    pub fn all_where(&self, object: &str, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.order
            .get(object)
            .into_iter()
            .flatten()
            .rev()
            .filter_map(|id| self.objects.get(id))
            .filter(|o| keep(o))
            .cloned()
            .collect()
    }

    /// Objects of one type, newest first.
    pub fn all(&self, object: &str) -> Vec<Value> {
        self.all_where(object, |_| true)
    }

    /// Records an event and queues its delivery to every endpoint.
    pub fn emit(&mut self, kind: &str, mut object: Value, previous: Option<Value>, ctx: &RequestCtx) {
        set_livemode(&mut object, self.livemode);
        let mut data = json!({ "object": object });
        if let Some(previous) = previous {
            data["previous_attributes"] = previous;
        }
        let event = json!({
            "id": Self::new_id("evt_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "data": data,
            "livemode": self.livemode,
            "pending_webhooks": self.endpoints.iter().filter(|e| e.events.iter().any(|t| t == "*" || t == kind)).count(),
            "request": {"id": ctx.id, "idempotency_key": ctx.idempotency_key},
            "type": kind,
        });
        let body = event.to_string();
        let now = Instant::now();
        let due = if self.faults.out_of_order {
            // One shared deadline, so events emitted together leave together, in reverse.
            let until = match self.hold_until {
                Some(until) if until > now => until,
                _ => now + self.faults.hold + self.faults.delay,
            };
            self.hold_until = Some(until);
            until
        } else {
            now + self.faults.delay
        };
        let copies = if self.faults.duplicate { 2 } else { 1 };
        let endpoints: Vec<Endpoint> =
            self.endpoints.iter().filter(|e| e.events.iter().any(|t| t == "*" || t == kind)).cloned().collect();
        for endpoint in endpoints {
            for _ in 0..copies {
                self.deliveries.push(Delivery {
                    event_id: event["id"].as_str().unwrap_or_default().to_owned(),
                    event_type: kind.to_owned(),
                    url: endpoint.url.clone(),
                    attempts: Vec::new(),
                    succeeded: false,
                    secret: endpoint.secret.clone(),
                    body: body.clone(),
                });
                self.pending.push(Pending { delivery: self.deliveries.len() - 1, due });
            }
        }
        self.events.push(event);
    }
}
