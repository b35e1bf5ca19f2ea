//! What every Hopsbridge binary needs, in one place, so that each service is only its own
//! domain logic:
//!
//! - [`caller`]: the caller identity the gateway vouches for, in signed headers;
//! - [`clock`]: the calendar clock, the machine's or a simulated one tests can move;
//! - [`config`]: layered, validated settings with redacted secrets;
//! - [`telemetry`]: JSON logs, OpenTelemetry traces, trace context propagation;
//! - [`http`]: the actix-web server, request ids, the error envelope, `/healthz` and `/readyz`;
//! - [`shutdown`] and [`service`]: one graceful shutdown path and the [`service::Application`]
//!   that `main` and the tests run;
//! - [`db`]: the Postgres pool, embedded migrations, classified errors;
//! - [`retry`]: the one backoff policy (exponential, with jitter) every retry uses;
//! - [`events`]: JetStream streams, the transactional outbox and relay, idempotent consumers;
//! - [`mail`]: email and admin alerts from a mail outbox, sent over SMTP with retries;
//! - [`integrity`]: integrity checks, scheduled and on demand, their findings alerted once;
//! - [`metrics`]: Prometheus metrics on `GET /metrics`.

pub mod caller;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod events;
pub mod http;
pub mod integrity;
pub mod mail;
pub mod metrics;
pub mod retry;
pub mod schema;
pub mod secret;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use secret::{Secret, constant_time_eq};

/// Installs ring as the process's rustls crypto provider. Every binary and every test that
/// makes TLS or HTTP client calls runs this first; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
