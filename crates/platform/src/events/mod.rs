//! Events between services: JetStream streams, the transactional outbox with its relay, and the
//! idempotent consumer runner.
//!
//! The path of one event:
//! 1. A service changes its tables and calls [`outbox::enqueue`] in the same transaction; the
//!    event exists exactly when the change does.
//! 2. A [`relay::Relay`] takes unpublished rows (`FOR UPDATE SKIP LOCKED`, so several relays
//!    can run), publishes each with `Nats-Msg-Id` = event id, waits for the PubAcks, and marks
//!    the rows published in the same transaction. A relay that dies before marking publishes
//!    again; JetStream drops the duplicate inside its window and the inbox catches the rest.
//! 3. A [`consumer::Consumer`] pulls from a durable JetStream consumer, records the event id in
//!    its inbox in the same transaction as the handler's effect, commits, then acks. A message
//!    redelivered after a crash finds its id in the inbox and is acked without a second effect.
//!    A message that can never succeed is kept in the service's `dead_letters` table and goes
//!    to the dead-letter subject with its reason; admins see and replay it ([`dead_letters`]).

pub mod bus;
pub mod consumer;
mod dead_letter_routes;
pub mod dead_letters;
pub mod membership;
pub mod outbox;
pub mod people;
pub mod relay;

pub use bus::{EventBus, NatsCheck};
pub use consumer::{Consumer, ConsumerHooks, Handler, HandlerError, InBatch, ReceivedEvent, parse_id, parse_uuid};
pub use dead_letter_routes::{
    DeadLetterCode, configure as configure_dead_letter_routes, document as dead_letters_api_doc,
};
pub use dead_letters::{DeadLetter, ReplayOutcome, Replayers};
pub use membership::{MembershipEvent, MembershipNews};
pub use outbox::{enqueue, enqueue_all, enqueue_all_at, enqueue_at};
pub use people::NewPerson;
pub use relay::{Relay, RelayHooks, RelayTotals};

use futures::future::BoxFuture;
use std::sync::Arc;

/// A test seam: an async callback run at a named point of the relay or a consumer, so a test
/// can stop the task exactly there (as if the process were killed) or observe timings.
pub type Hook = Arc<dyn Fn(Vec<hopsbridge_domain::EventId>) -> BoxFuture<'static, ()> + Send + Sync>;

/// NATS header names Hopsbridge sets on every event.
pub mod headers {
    /// JetStream's de-duplication header; always the event id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The event type with its version, e.g. `UserCreatedV1`.
    pub const EVENT_TYPE: &str = "Hopsbridge-Event-Type";
    /// On a dead letter: why it could never be handled.
    pub const DEAD_LETTER_REASON: &str = "Hopsbridge-Dead-Letter-Reason";
    /// On a dead letter: the subject it was first published on.
    pub const ORIGINAL_SUBJECT: &str = "Hopsbridge-Original-Subject";
    /// On a dead letter: the consumer that gave up.
    pub const CONSUMER: &str = "Hopsbridge-Consumer";
    /// On a dead letter: how many times it was delivered.
    pub const DELIVERED: &str = "Hopsbridge-Delivered";
}
