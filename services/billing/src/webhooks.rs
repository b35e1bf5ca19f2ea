//! Stripe's webhooks: signature verification, and each supported event applied exactly once.
//!
//! The event id is claimed in `processed_stripe_events` in the same transaction as the event's
//! effect, so a duplicate, even one delivered concurrently, waits on the claim and then does
//! nothing. Out-of-order delivery is handled per object type:
//! - payment methods: a detached payment method can never be attached again (Stripe's rule), so
//!   detachment is final and a late `attached` or `setup_intent.succeeded` for it is ignored;
//! - subscriptions: the subscription is re-read from Stripe while the account row is locked,
//!   so whatever order events arrive in, the stored status is Stripe's latest;
//! - invoices: a state is replaced only by one from a later event, or from an event of the same
//!   second with a later status (`draft` < `open` < `uncollectible` < `paid`/`void`).
//!
//! The first usable payment method of an account publishes `PaymentMethodAddedV1` and losing
//! the last one `PaymentMethodRemovedV1`, through the outbox in the same transaction.
//!
//! Events whose effect needs nothing from Stripe are written in groups ([`Webhooks::write_groups`]):
//! every such event that arrives while a group is being written joins the next one, and the
//! whole group is claimed and applied in one transaction, so a burst of deliveries costs a few
//! commits instead of one each. Each delivery is still answered only once its event is committed.
//! If a group's transaction fails, its events are applied again one transaction each, so one
//! event's failure is only that event's. Subscription events, which re-read Stripe under the
//! account's lock, always take a transaction of their own.
//!
//! A webhook is answered without waiting on Stripe wherever the payload says enough (Stripe
//! gives an endpoint a few seconds, and billing paces its own Stripe calls): a completed
//! setup-mode Checkout Session only records a follow-up (`checkout_follow_ups`) in the claiming
//! transaction, and [`run_follow_ups`] reads the saved card and makes it the customer's default
//! in the background, retrying until Stripe agrees.

use crate::accounts::{self, CardSummary, InvoiceRecord};
use crate::stripe::{Stripe, StripeError, Subscription, params};
use diesel_async::AsyncPgConnection;
use hmac::{Hmac, Mac};
use hopsbridge_contracts::events::{PaymentMethodAddedV1, PaymentMethodRemovedV1};
use hopsbridge_platform::constant_time_eq;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::events::{enqueue, enqueue_all};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How far a signature's timestamp may be from now, in seconds (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// The event types billing handles; any other is refused with `unsupported_event_type`.
pub const SUPPORTED_EVENTS: [&str; 9] = [
    "checkout.session.completed",
    "setup_intent.succeeded",
    "payment_method.attached",
    "payment_method.detached",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
];

/// Why a `Stripe-Signature` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No header.
    #[error("the Stripe-Signature header is missing")]
    Missing,
    /// No `t=` or no `v1=`, or one that is not hex.
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    /// No `v1` signature matches.
    #[error("no signature matches the payload")]
    Mismatch,
    /// The timestamp is more than the tolerance away from now.
    #[error("the signature's timestamp is outside the tolerance")]
    Expired,
}

impl SignatureError {
    /// The stable error code.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_signature",
            Self::Malformed | Self::Mismatch => "invalid_signature",
            Self::Expired => "signature_expired",
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Verifies `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over `"<t>.<body>"` with the
/// endpoint secret: some `v1` must match (compared in constant time), and `t` must be within
/// [`TOLERANCE_SECS`] of `now`.
///
/// # Errors
/// [`SignatureError`].
pub fn verify(header: Option<&str>, body: &[u8], secret: &[u8], now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { continue };
        match k {
            "t" => timestamp = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(unhex(v).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    // Every candidate is compared, so the time taken does not say which one matched.
    let matched = signatures.iter().fold(false, |any, s| constant_time_eq(s, &expected) | any);
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

/// A Stripe event, as much of it as billing reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// `evt_…`.
    pub id: String,
    /// e.g. `payment_method.attached`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    /// The object and the changed attributes.
    pub data: EventData,
}

/// An event's data.
#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    /// The object as it was when the event happened.
    pub object: Value,
    /// Attributes that changed, with their previous values.
    #[serde(default)]
    pub previous_attributes: Option<Value>,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied now.
    Applied,
    /// Applied before (a duplicate): nothing done.
    Duplicate,
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn card_of(pm: &Value) -> CardSummary {
    let card = &pm["card"];
    let int = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok());
    CardSummary {
        brand: card["brand"].as_str().map(str::to_owned),
        last4: card["last4"].as_str().map(str::to_owned),
        exp_month: int(&card["exp_month"]),
        exp_year: int(&card["exp_year"]),
    }
}

/// The most events one group transaction applies.
pub const GROUP_SIZE: usize = 64;
/// How many group transactions may be open at once (each a task of [`Webhooks::write_groups`]).
pub const GROUP_WRITERS: usize = 2;

/// Applies verified events.
#[derive(Debug, Clone)]
pub struct Webhooks {
    db: Database,
    stripe: Stripe,
    follow_ups: Arc<Notify>,
    /// One queue per group writer. An event goes to its customer's queue, so two groups written
    /// at the same time never touch the same account and never wait on each other's locks.
    queues: Arc<[mpsc::Sender<Job>]>,
    inboxes: Arc<[Mutex<mpsc::Receiver<Job>>]>,
}

/// An event waiting for its group, and where to answer.
#[derive(Debug)]
struct Job {
    event: Event,
    effect: Effect,
    reply: oneshot::Sender<anyhow::Result<Outcome>>,
}

/// A change to a payment method an event asks for.
#[derive(Debug, Clone)]
enum PmChange {
    Attach { pm: String, customer: String, card: CardSummary },
    Detach { pm: String, customer: String },
}

impl PmChange {
    /// The payment method.
    fn pm(&self) -> &str {
        match self {
            Self::Attach { pm, .. } | Self::Detach { pm, .. } => pm,
        }
    }

    /// The customer the event names.
    fn customer(&self) -> &str {
        match self {
            Self::Attach { customer, .. } | Self::Detach { customer, .. } => customer,
        }
    }
}

/// What an event needs done in the transaction, prepared from its payload (and, for a completed
/// Checkout Session, from Stripe).
#[derive(Debug, Clone)]
enum Effect {
    PaymentMethod(PmChange),
    /// A completed setup-mode Checkout Session: record the follow-up work.
    CheckoutFollowUp {
        event_id: String,
        customer: String,
        setup_intent: String,
    },
    Subscription {
        id: String,
        customer: String,
    },
    Invoice(InvoiceRecord),
    Nothing,
}

impl Effect {
    /// The customer whose account the effect locks, if any: groups lock accounts in this order,
    /// so two groups never wait on each other in a cycle.
    fn customer(&self) -> Option<&str> {
        match self {
            Self::PaymentMethod(change) => Some(change.customer()),
            Self::CheckoutFollowUp { customer, .. } | Self::Subscription { customer, .. } => Some(customer),
            Self::Invoice(invoice) => Some(&invoice.customer),
            Self::Nothing => None,
        }
    }

    /// Whether applying it calls Stripe (inside its transaction).
    const fn calls_stripe(&self) -> bool {
        matches!(self, Self::Subscription { .. })
    }
}

impl Webhooks {
    /// Applies events to `db`, reading from and writing to `stripe` where an event needs it.
    /// Grouped events wait for a task running [`Webhooks::write_groups`].
    #[must_use]
    pub fn new(db: Database, stripe: Stripe) -> Self {
        let (queues, inboxes): (Vec<_>, Vec<_>) =
            (0..GROUP_WRITERS).map(|_| mpsc::channel(GROUP_SIZE * 4)).map(|(tx, rx)| (tx, Mutex::new(rx))).unzip();
        Self { db, stripe, follow_ups: Arc::new(Notify::new()), queues: queues.into(), inboxes: inboxes.into() }
    }

    /// Wakes the follow-up task whenever a webhook records work for it.
    #[must_use]
    pub fn follow_up_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.follow_ups)
    }

    /// Applies a verified event of a supported type exactly once: in the next group, or in a
    /// transaction of its own when its effect calls Stripe or no group writer is running.
    ///
    /// # Errors
    /// When Postgres or Stripe fails (Stripe will deliver the event again).
    pub async fn apply(&self, event: &Event) -> anyhow::Result<Outcome> {
        let effect = prepare(event);
        if effect.calls_stripe() {
            return self.apply_alone(event.clone(), effect).await;
        }
        let (reply, answer) = oneshot::channel();
        let queue = &self.queues[writer_of(&effect)];
        match queue.send(Job { event: event.clone(), effect, reply }).await {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(anyhow::anyhow!("the webhook group writer stopped"))),
            // Shutting down: the writers are gone.
            Err(mpsc::error::SendError(job)) => self.apply_alone(job.event, job.effect).await,
        }
    }

    /// Claims `event` and applies `effect` in a transaction of their own.
    async fn apply_alone(&self, event: Event, effect: Effect) -> anyhow::Result<Outcome> {
        let outcomes = self.write(vec![(event, effect)]).await?;
        Ok(outcomes.first().copied().unwrap_or(Outcome::Duplicate))
    }

    /// Claims and applies `work` in one transaction, answering each event's outcome in order,
    /// and wakes the follow-up task if a completed Checkout was recorded.
    async fn write(&self, work: Vec<(Event, Effect)>) -> anyhow::Result<Vec<Outcome>> {
        let checkouts: Vec<bool> = work.iter().map(|(_, e)| matches!(e, Effect::CheckoutFollowUp { .. })).collect();
        let stripe = self.stripe.clone();
        let outcomes = self
            .db
            .transaction(move |c| {
                let (work, stripe) = (work.clone(), stripe.clone());
                Box::pin(async move { apply_all(c, &stripe, &work).await })
            })
            .await?;
        if checkouts.iter().zip(&outcomes).any(|(checkout, outcome)| *checkout && *outcome == Outcome::Applied) {
            self.follow_ups.notify_one();
        }
        Ok(outcomes)
    }

    /// Writes groups of the events queued for writer `writer` (below [`GROUP_WRITERS`]) until
    /// `cancel`; then takes no more, and writes what is queued (later deliveries get a
    /// transaction each). Run one for each writer.
    pub async fn write_groups(self, writer: usize, cancel: CancellationToken) {
        let Some(inbox) = self.inboxes.get(writer) else { return };
        loop {
            let group = {
                let mut inbox = inbox.lock().await;
                let first = tokio::select! {
                    job = inbox.recv() => job,
                    () = cancel.cancelled() => {
                        // A closed queue still hands out what it holds, then None.
                        inbox.close();
                        inbox.recv().await
                    }
                };
                let Some(first) = first else { return };
                let mut group = vec![first];
                while group.len() < GROUP_SIZE {
                    match inbox.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                group
            };
            self.write_group(group).await;
        }
    }

    /// Writes `group` in one transaction, answering each delivery; if that fails, applies each
    /// event on its own.
    async fn write_group(&self, mut group: Vec<Job>) {
        group.sort_by(|a, b| {
            (a.effect.customer(), a.event.created, &a.event.id).cmp(&(
                b.effect.customer(),
                b.event.created,
                &b.event.id,
            ))
        });
        let work: Vec<(Event, Effect)> = group.iter().map(|j| (j.event.clone(), j.effect.clone())).collect();
        match self.write(work).await {
            Ok(outcomes) => {
                tracing::debug!(events = group.len(), "webhook group written");
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(
                    events = group.len(),
                    error = format!("{e:#}"),
                    "webhook group failed; applying its events one by one"
                );
                futures::future::join_all(group.into_iter().map(|job| async move {
                    let outcome = self.apply_alone(job.event, job.effect).await;
                    let _ = job.reply.send(outcome);
                }))
                .await;
            }
        }
    }
}

/// The writer whose queue an effect goes to: the same for every event of one customer.
fn writer_of(effect: &Effect) -> usize {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let Some(customer) = effect.customer() else { return 0 };
    let mut hasher = DefaultHasher::new();
    customer.hash(&mut hasher);
    usize::try_from(hasher.finish() % GROUP_WRITERS as u64).unwrap_or(0)
}

/// What `event` asks for, from its payload alone.
fn prepare(event: &Event) -> Effect {
    let o = &event.data.object;
    match event.kind.as_str() {
        "payment_method.attached" => match (id_of(&o["id"]), id_of(&o["customer"])) {
            (Some(pm), Some(customer)) => Effect::PaymentMethod(PmChange::Attach { pm, customer, card: card_of(o) }),
            _ => Effect::Nothing,
        },
        "payment_method.detached" => {
            let previous = event.data.previous_attributes.as_ref().map_or(&Value::Null, |p| &p["customer"]);
            match (id_of(&o["id"]), id_of(previous)) {
                (Some(pm), Some(customer)) => Effect::PaymentMethod(PmChange::Detach { pm, customer }),
                _ => Effect::Nothing,
            }
        }
        "setup_intent.succeeded" => match (id_of(&o["payment_method"]), id_of(&o["customer"])) {
            (Some(pm), Some(customer)) => {
                let card = if o["payment_method"].is_object() {
                    card_of(&o["payment_method"])
                } else {
                    CardSummary::default()
                };
                Effect::PaymentMethod(PmChange::Attach { pm, customer, card })
            }
            _ => Effect::Nothing,
        },
        "checkout.session.completed" => completed_checkout(o, &event.id),
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            match (id_of(&o["id"]), id_of(&o["customer"])) {
                (Some(id), Some(customer)) => Effect::Subscription { id, customer },
                _ => Effect::Nothing,
            }
        }
        "invoice.paid" | "invoice.payment_failed" => match (id_of(&o["id"]), id_of(&o["customer"])) {
            (Some(id), Some(customer)) => Effect::Invoice(InvoiceRecord {
                id,
                customer,
                number: o["number"].as_str().map(str::to_owned),
                status: o["status"].as_str().unwrap_or("open").to_owned(),
                amount_due: o["amount_due"].as_i64().unwrap_or(0),
                currency: o["currency"].as_str().unwrap_or_default().to_owned(),
                hosted_invoice_url: o["hosted_invoice_url"].as_str().map(str::to_owned),
                created: o["created"].as_i64().unwrap_or(event.created),
            }),
            _ => Effect::Nothing,
        },
        _ => Effect::Nothing,
    }
}

/// A setup-mode Checkout Session saved a card: it is to become the customer's default for
/// invoices and count as attached. Both need Stripe, so they are left to the follow-up task
/// (recorded only for a customer billing knows: no Stripe write on anyone else's behalf).
fn completed_checkout(session: &Value, event_id: &str) -> Effect {
    if session["mode"] != "setup" {
        return Effect::Nothing;
    }
    let (Some(setup_intent), Some(customer)) = (id_of(&session["setup_intent"]), id_of(&session["customer"])) else {
        return Effect::Nothing;
    };
    Effect::CheckoutFollowUp { event_id: event_id.to_owned(), customer, setup_intent }
}

/// One recorded follow-up of a completed Checkout Session.
#[derive(Debug, diesel::QueryableByName)]
struct FollowUp {
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    stripe_customer_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    setup_intent_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    event_created: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
}

/// Follow-ups a task takes at once.
const FOLLOW_UP_BATCH: i64 = 16;
/// How long a taken follow-up is left to its task before another may take it.
const FOLLOW_UP_LEASE_SECS: i64 = 120;

/// Does the follow-ups of completed Checkout Sessions until `cancel`: reads the card the
/// session saved, makes it the customer's invoice default (idempotency key from the event) and
/// records it as attached (publishing `PaymentMethodAddedV1` if it is the account's first usable
/// one). A failure is retried after a growing pause (1 s doubling to 5 minutes); several
/// replicas share the work through leases.
pub async fn run_follow_ups(db: Database, stripe: Stripe, wake: Arc<Notify>, cancel: CancellationToken) {
    loop {
        let taken = take_follow_ups(&db).await;
        let idle = match taken {
            Ok(batch) => {
                let idle = batch.is_empty();
                for work in batch {
                    let result = follow_up(&stripe, &work).await;
                    if let Err(e) = finish_follow_up(&db, &stripe, &work, result).await {
                        tracing::warn!(error = %e, event = %work.event_id, "could not record a follow-up's outcome");
                    }
                }
                idle
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take checkout follow-ups");
                true
            }
        };
        if idle {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else if cancel.is_cancelled() {
            return;
        }
    }
}

async fn take_follow_ups(db: &Database) -> anyhow::Result<Vec<FollowUp>> {
    use diesel_async::RunQueryDsl;
    let mut conn = db.conn().await?;
    Ok(diesel::sql_query(
        "UPDATE checkout_follow_ups SET attempts = attempts + 1, \
           next_attempt_at = now() + make_interval(secs => $2) \
         WHERE event_id IN (SELECT event_id FROM checkout_follow_ups \
           WHERE done_at IS NULL AND next_attempt_at <= now() \
           ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING event_id, stripe_customer_id, setup_intent_id, event_created, attempts",
    )
    .bind::<diesel::sql_types::BigInt, _>(FOLLOW_UP_BATCH)
    .bind::<diesel::sql_types::BigInt, _>(FOLLOW_UP_LEASE_SECS)
    .load(&mut conn)
    .await?)
}

/// The Stripe side of one follow-up; answers the saved card, if the session saved one.
async fn follow_up(stripe: &Stripe, work: &FollowUp) -> anyhow::Result<Option<String>> {
    #[derive(Deserialize)]
    struct Intent {
        payment_method: Option<Value>,
    }
    let intent: Intent = stripe.get(&format!("setup_intents/{}", work.setup_intent_id), &Vec::new()).await?;
    let Some(pm) = intent.payment_method.as_ref().and_then(id_of) else {
        return Ok(None);
    };
    let form = params([("invoice_settings[default_payment_method]", pm.as_str())]);
    let key = format!("hb-default-pm-{}", work.event_id);
    match stripe.post::<Value>(&format!("customers/{}", work.stripe_customer_id), &form, Some(&key)).await {
        Ok(_) => {}
        // Detached meanwhile: then it is not the default, and the detach event says so.
        Err(StripeError::Api { status: 400, .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Some(pm))
}

async fn finish_follow_up(
    db: &Database,
    stripe: &Stripe,
    work: &FollowUp,
    result: anyhow::Result<Option<String>>,
) -> anyhow::Result<()> {
    use diesel_async::RunQueryDsl;
    let event_id = work.event_id.clone();
    match result {
        Ok(pm) => {
            let (customer, at) = (work.stripe_customer_id.clone(), work.event_created);
            db.transaction(move |c| {
                let (event_id, customer, pm, stripe) = (event_id.clone(), customer.clone(), pm.clone(), stripe.clone());
                Box::pin(async move {
                    if let Some(pm) = pm {
                        let mut locked = Locked::take(c, vec![&customer], vec![&customer]).await?;
                        let attach = Effect::PaymentMethod(PmChange::Attach {
                            pm,
                            customer: customer.clone(),
                            card: CardSummary::default(),
                        });
                        apply_effects(c, &stripe, &mut locked, &[(&attach, at)]).await?;
                    }
                    diesel::sql_query(
                        "UPDATE checkout_follow_ups SET done_at = now(), last_error = NULL WHERE event_id = $1",
                    )
                    .bind::<diesel::sql_types::Text, _>(&event_id)
                    .execute(c)
                    .await?;
                    Ok::<_, anyhow::Error>(())
                })
            })
            .await
        }
        Err(e) => {
            tracing::warn!(error = %e, event = %work.event_id, attempts = work.attempts, "checkout follow-up failed; will retry");
            let exponent = u32::try_from(work.attempts.clamp(1, 10) - 1).unwrap_or(0);
            let delay = (1_i64 << exponent).min(300);
            let mut conn = db.conn().await?;
            diesel::sql_query(
                "UPDATE checkout_follow_ups SET last_error = $2, next_attempt_at = now() + make_interval(secs => $3) \
                 WHERE event_id = $1",
            )
            .bind::<diesel::sql_types::Text, _>(&work.event_id)
            .bind::<diesel::sql_types::Text, _>(e.to_string())
            .bind::<diesel::sql_types::BigInt, _>(delay)
            .execute(&mut conn)
            .await?;
            Ok(())
        }
    }
}

/// Claims the events of `work` and applies the effects of those claimed now, in the caller's
/// transaction: every account involved is locked first (in customer order), and payment
/// methods are counted once per account, then kept up to date as the effects apply. Answers
/// each event's outcome, in order; an event twice in `work` is applied once.
async fn apply_all(
    c: &mut AsyncPgConnection,
    stripe: &Stripe,
    work: &[(Event, Effect)],
) -> anyhow::Result<Vec<Outcome>> {
    let mut claimed =
        accounts::claim_events(c, work.iter().map(|(e, _)| (e.id.as_str(), e.kind.as_str(), e.created)).collect())
            .await?;
    let applied: Vec<bool> = work.iter().map(|(event, _)| claimed.remove(&event.id)).collect();
    let effects = || work.iter().zip(&applied).filter(|(_, applied)| **applied).map(|((_, effect), _)| effect);
    let locks = effects().filter(|e| !matches!(e, Effect::CheckoutFollowUp { .. })).filter_map(Effect::customer);
    let counts = effects().filter(|e| matches!(e, Effect::PaymentMethod(_))).filter_map(Effect::customer);
    let mut locked = Locked::take(c, locks.collect(), counts.collect()).await?;
    let claimed: Vec<(&Effect, i64)> = work
        .iter()
        .zip(&applied)
        .filter(|(_, applied)| **applied)
        .map(|((event, effect), _)| (effect, event.created))
        .collect();
    apply_effects(c, stripe, &mut locked, &claimed).await?;
    Ok(applied.into_iter().map(|applied| if applied { Outcome::Applied } else { Outcome::Duplicate }).collect())
}

/// The accounts a transaction has locked, by Stripe customer: the user, and the account's usable
/// payment methods (read after locking, for the customers asked, then kept up to date by each
/// change the transaction makes: nobody else changes a locked account's payment methods).
#[derive(Debug, Default)]
struct Locked(std::collections::HashMap<String, (uuid::Uuid, std::collections::HashSet<String>)>);

impl Locked {
    /// Locks the accounts of `customers` (unknown ones are left out) and reads the usable
    /// payment methods of those in `counted`.
    async fn take(c: &mut AsyncPgConnection, customers: Vec<&str>, counted: Vec<&str>) -> anyhow::Result<Self> {
        if customers.is_empty() {
            return Ok(Self::default());
        }
        let users = accounts::lock_by_customers(c, customers).await?;
        let mut usable = accounts::usable_payment_methods(c, counted).await?;
        Ok(Self(
            users
                .into_iter()
                .map(|(customer, user)| {
                    let cards = usable.remove(&customer).unwrap_or_default();
                    (customer, (user, cards))
                })
                .collect(),
        ))
    }

    fn user(&self, customer: &str) -> Option<uuid::Uuid> {
        self.0.get(customer).map(|(user, _)| *user)
    }
}

/// What one effect's statements found, for replaying the payment method changes in order.
#[derive(Debug)]
enum Done {
    Other,
    /// The payment method's row after an attach; `None` when it was detached already.
    Attached(Option<accounts::PaymentMethodState>),
    /// The customer a detached payment method's row belongs to.
    Detached(String),
}

/// The row an effect writes, if any: effects on different rows give the same results in any
/// order, so their statements may go to Postgres together.
fn row_of(effect: &Effect) -> Option<(&'static str, &str)> {
    match effect {
        Effect::PaymentMethod(change) => Some(("pm", change.pm())),
        Effect::Invoice(invoice) => Some(("invoice", &invoice.id)),
        Effect::CheckoutFollowUp { event_id, .. } => Some(("checkout", event_id)),
        Effect::Subscription { customer, .. } => Some(("account", customer)),
        Effect::Nothing => None,
    }
}

/// Splits `effects` into runs, in order, in which no two effects write the same row.
fn waves<'a, T>(effects: &'a [(&'a Effect, T)]) -> Vec<&'a [(&'a Effect, T)]> {
    let mut waves = Vec::new();
    let (mut start, mut rows) = (0, std::collections::HashSet::new());
    for (i, (effect, _)) in effects.iter().enumerate() {
        if let Some(row) = row_of(effect)
            && !rows.insert(row)
        {
            waves.push(&effects[start..i]);
            start = i;
            rows.clear();
            rows.insert(row);
        }
    }
    if start < effects.len() {
        waves.push(&effects[start..]);
    }
    waves
}

/// Applies `effects` (each with its event's time) on the accounts in `locked`, as if one after
/// another in order. The statements of a wave (no two on the same row) are sent to Postgres
/// together, pipelined on the transaction's connection, so a group costs a few round trips
/// instead of one per effect. Then the changes to each account's usable payment methods are
/// replayed in order: the first usable one announces `PaymentMethodAddedV1` and losing the last
/// `PaymentMethodRemovedV1`, written to the outbox together.
async fn apply_effects(
    c: &mut AsyncPgConnection,
    stripe: &Stripe,
    locked: &mut Locked,
    effects: &[(&Effect, i64)],
) -> anyhow::Result<()> {
    let mut done = Vec::with_capacity(effects.len());
    {
        let (shared, known): (&AsyncPgConnection, &Locked) = (c, locked);
        for wave in waves(effects) {
            let results = futures::future::try_join_all(
                wave.iter().map(|(effect, at)| run_effect(shared, stripe, known, effect, *at)),
            )
            .await?;
            done.extend(results);
        }
    }
    let mut announced = Vec::new();
    for ((effect, _), done) in effects.iter().zip(done) {
        let Effect::PaymentMethod(change) = effect else { continue };
        let customer = change.customer();
        let Some((user, usable)) = locked.0.get_mut(customer) else { continue };
        let before = usable.len();
        // The row says whose the payment method is: only the account's own rows count for it.
        match done {
            Done::Attached(Some(row)) if row.usable && row.customer == customer => {
                usable.insert(change.pm().to_owned());
            }
            Done::Detached(owner) if owner == customer => {
                usable.remove(change.pm());
            }
            _ => {}
        }
        let (after, user_id, stripe_customer_id) = (usable.len(), user.to_string(), customer.to_owned());
        if before == 0 && after > 0 {
            announced.push(Announcement::Added(PaymentMethodAddedV1 { user_id, stripe_customer_id }));
        } else if before > 0 && after == 0 {
            announced.push(Announcement::Removed(PaymentMethodRemovedV1 { user_id, stripe_customer_id }));
        }
    }
    announce(c, announced).await
}

/// An effect's statements, on a connection other effects' statements share.
async fn run_effect(
    mut c: &AsyncPgConnection,
    stripe: &Stripe,
    locked: &Locked,
    effect: &Effect,
    at: i64,
) -> anyhow::Result<Done> {
    match effect {
        Effect::Nothing => Ok(Done::Other),
        Effect::Invoice(invoice) => {
            if locked.user(&invoice.customer).is_some() {
                accounts::record_invoice(c, invoice, at).await?;
            }
            Ok(Done::Other)
        }
        Effect::Subscription { id, customer } => {
            let Some(user) = locked.user(customer) else {
                return Ok(Done::Other);
            };
            // Stripe's current state, read while the account is locked: order of delivery
            // does not matter.
            let current: Subscription = stripe.get(&format!("subscriptions/{id}"), &Vec::new()).await?;
            accounts::set_subscription_status(c, user, &current.id, &current.status).await?;
            Ok(Done::Other)
        }
        Effect::CheckoutFollowUp { event_id, customer, setup_intent } => {
            use diesel_async::RunQueryDsl;
            diesel::sql_query(
                "INSERT INTO checkout_follow_ups (event_id, stripe_customer_id, setup_intent_id, event_created) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM accounts WHERE stripe_customer_id = $2) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind::<diesel::sql_types::Text, _>(event_id)
            .bind::<diesel::sql_types::Text, _>(customer)
            .bind::<diesel::sql_types::Text, _>(setup_intent)
            .bind::<diesel::sql_types::BigInt, _>(at)
            .execute(&mut c)
            .await?;
            Ok(Done::Other)
        }
        Effect::PaymentMethod(change) => {
            // Only a locked account's payment methods are written.
            if !locked.0.contains_key(change.customer()) {
                return Ok(Done::Other);
            }
            Ok(match change {
                PmChange::Attach { pm, customer, card } => {
                    Done::Attached(accounts::attach(c, pm, customer, card, at).await?)
                }
                PmChange::Detach { pm, customer } => Done::Detached(accounts::detach(c, pm, customer, at).await?),
            })
        }
    }
}

/// An account gained its first usable payment method, or lost its last.
#[derive(Debug)]
enum Announcement {
    Added(PaymentMethodAddedV1),
    Removed(PaymentMethodRemovedV1),
}

/// Writes a transaction's announcements to the outbox in order: in one insert when they are all
/// of one type (the usual case), otherwise one by one.
async fn announce(c: &mut AsyncPgConnection, announced: Vec<Announcement>) -> anyhow::Result<()> {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for a in &announced {
        match a {
            Announcement::Added(e) => added.push(e.clone()),
            Announcement::Removed(e) => removed.push(e.clone()),
        }
    }
    if removed.is_empty() {
        enqueue_all(c, &added, None).await?;
    } else if added.is_empty() {
        enqueue_all(c, &removed, None).await?;
    } else {
        for a in announced {
            match a {
                Announcement::Added(e) => enqueue(c, &e, None).await?,
                Announcement::Removed(e) => enqueue(c, &e, None).await?,
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn sign(body: &str, secret: &str, t: i64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn attach(pm: &str, customer: &str) -> Effect {
        Effect::PaymentMethod(PmChange::Attach {
            pm: pm.into(),
            customer: customer.into(),
            card: CardSummary::default(),
        })
    }

    fn detach(pm: &str, customer: &str) -> Effect {
        Effect::PaymentMethod(PmChange::Detach { pm: pm.into(), customer: customer.into() })
    }

    fn checkout(event_id: &str, customer: &str) -> Effect {
        Effect::CheckoutFollowUp { event_id: event_id.into(), customer: customer.into(), setup_intent: "seti_1".into() }
    }

    #[test]
    fn a_wave_never_writes_one_row_twice_and_waves_keep_the_events_order() {
        let (detach, checkout) = (detach("pm_1", "cus_a"), checkout("evt_3", "cus_a"));
        let effects = [
            (&attach("pm_1", "cus_a"), 1),
            (&attach("pm_2", "cus_b"), 2),
            (&checkout, 3),
            (&Effect::Nothing, 4),
            // pm_1 again: a new wave, after everything before it.
            (&attach("pm_1", "cus_a"), 5),
            (&detach, 6),
            (&attach("pm_2", "cus_b"), 7),
        ];
        let split = waves(&effects);
        let times: Vec<Vec<i32>> = split.iter().map(|w| w.iter().map(|(_, t)| *t).collect()).collect();
        assert_eq!(times, vec![vec![1, 2, 3, 4], vec![5], vec![6, 7]]);
        assert!(waves(&effects[..0]).is_empty());
    }

    #[test]
    fn every_event_of_one_customer_goes_to_the_same_writer() {
        let writer = writer_of(&attach("pm_1", "cus_a"));
        assert!(writer < GROUP_WRITERS);
        assert_eq!(writer_of(&detach("pm_9", "cus_a")), writer);
        assert_eq!(writer_of(&checkout("evt_1", "cus_a")), writer);
        // Customers spread over the writers.
        let used: std::collections::HashSet<usize> =
            (0..64).map(|i| writer_of(&attach("pm_1", &format!("cus_{i}")))).collect();
        assert_eq!(used.len(), GROUP_WRITERS);
    }

    #[test]
    fn the_sandbox_registers_the_stripe_endpoint_for_exactly_the_events_billing_handles() {
        let mut ours = SUPPORTED_EVENTS.to_vec();
        ours.sort_unstable();
        let mut registered = hopsbridge_sandbox::world::STRIPE_ENDPOINT_EVENTS.to_vec();
        registered.sort_unstable();
        assert_eq!(ours, registered);
    }

    #[test]
    fn a_matching_signature_within_the_tolerance_verifies() {
        let body = r#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let header = format!("t={now},v1={}", sign(body, "whsec_test_secret", now));
        assert_eq!(verify(Some(&header), body.as_bytes(), b"whsec_test_secret", now + 299), Ok(()));
        // One of several v1 signatures matching is enough (secret rotation).
        let header = format!("t={now},v1={},v1={}", sign(body, "old", now), sign(body, "whsec_test_secret", now));
        assert_eq!(verify(Some(&header), body.as_bytes(), b"whsec_test_secret", now), Ok(()));
    }

    #[test]
    fn forged_stale_missing_and_malformed_signatures_are_refused() {
        let body = r#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let secret = b"whsec_test_secret";
        let good = sign(body, "whsec_test_secret", now);
        let cases = [
            (None, SignatureError::Missing),
            (Some(format!("t={now},v1={}", sign(body, "another", now))), SignatureError::Mismatch),
            (Some(format!("t={now},v1={good}")), SignatureError::Expired),
            (Some(format!("v1={good}")), SignatureError::Malformed),
            (Some(format!("t={now}")), SignatureError::Malformed),
            (Some(format!("t={now},v0={good}")), SignatureError::Malformed),
            (Some(format!("t=yesterday,v1={good}")), SignatureError::Malformed),
            (Some(format!("t={now},v1=zz")), SignatureError::Malformed),
        ];
        for (i, (header, want)) in cases.into_iter().enumerate() {
            let at = if want == SignatureError::Expired { now + 301 } else { now };
            assert_eq!(verify(header.as_deref(), body.as_bytes(), secret, at), Err(want), "case {i}");
        }
        // The body is covered: a changed payload with the old signature fails.
        let header = format!("t={now},v1={good}");
        assert_eq!(verify(Some(&header), br#"{"id":"evt_2"}"#, secret, now), Err(SignatureError::Mismatch));
    }
}
