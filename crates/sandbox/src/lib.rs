//! The outside world Hopsbridge depends on, simulated on loopback: Auth0, Stripe, the
//! Hopsworks admin API of each cluster, the Kubernetes API server of each cluster, and a mail
//! catcher (SMTP in, an HTTP inbox out, and a Slack-style webhook receiver), and the
//! simulated clock the Kubernetes workload runs on and the services follow ([`clock`]).
//!
//! Tests start the simulators in-process; local development runs the `hopsbridge-sandbox`
//! binary. Each simulator follows `../shared/guides/external-apis.md`: the same paths,
//! payloads, authentication, errors and limits as the real system, because a simulator that
//! accepts what the real one rejects hides the bugs tests exist to find.

#![recursion_limit = "256"]

pub mod auth0;
pub mod clock;
pub mod hopsworks;
pub mod kubernetes;
pub mod mail;
pub mod rondb;
pub mod server;
pub mod stripe;
pub mod tls;
pub mod workload;
pub mod world;
