//! Layered, validated configuration.
//!
//! Each binary's settings are read from, in order (later wins):
//! 1. the defaults embedded in the binary (its `config/default.toml`, commented);
//! 2. an optional TOML file (`--config path` or `HOPSBRIDGE_CONFIG_FILE`);
//! 3. environment variables `HOPSBRIDGE_<SERVICE>__<SECTION>__<KEY>`, for example
//!    `HOPSBRIDGE_BILLING__DATABASE__URL`.
//!
//! A missing or invalid value stops the process with a message naming the key and the
//! environment variable that sets it. Secrets come only from the environment or from a file
//! outside the repository, and are [`Secret`]s so they never reach a log.

use crate::secret::Secret;
use hopsbridge_contracts::{Service, Subjects};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

/// A configuration value is missing or invalid.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key} ({env}): {reason}")]
pub struct ConfigError {
    /// The dotted key, e.g. `database.url`.
    pub key: String,
    /// The environment variable that sets it.
    pub env: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// An error about `key` of `service`'s configuration.
    pub fn new(service: Service, key: &str, reason: impl Into<String>) -> Self {
        Self { key: key.to_owned(), env: env_var(service, key), reason: reason.into() }
    }
}

/// The environment variable that sets `key` for `service`.
#[must_use]
pub fn env_var(service: Service, key: &str) -> String {
    format!("{}{}", env_prefix(service), key.replace('.', "__")).to_uppercase()
}

fn env_prefix(service: Service) -> String {
    format!("HOPSBRIDGE_{}__", service.name().to_uppercase())
}

/// Settings that check themselves after loading.
pub trait Validate {
    /// Checks values that parse but make no sense (a port of 0 where one is needed, a URL that
    /// is not a URL). Errors name the key.
    ///
    /// # Errors
    /// The first invalid value found.
    fn validate(&self, service: Service) -> Result<(), ConfigError>;
}

/// Loads `service`'s configuration from `defaults` (TOML layers, later wins), then `file`, then
/// the environment.
///
/// # Errors
/// A [`ConfigError`] naming the first missing or invalid key.
pub fn load<T: DeserializeOwned + Validate>(
    service: Service,
    defaults: &[&str],
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let prefix = env_prefix(service);
    let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(&prefix)).collect();
    load_from(service, defaults, file, env)
}

/// [`load`] with the environment given explicitly (for tests).
///
/// # Errors
/// A [`ConfigError`] naming the first missing or invalid key.
pub fn load_from<T: DeserializeOwned + Validate>(
    service: Service,
    defaults: &[&str],
    file: Option<&Path>,
    env: Vec<(String, String)>,
) -> Result<T, ConfigError> {
    let prefix = env_prefix(service);
    let source = config::Environment::with_prefix(prefix.trim_end_matches('_'))
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        // The one list a deployment sets from the environment: `..._EVENTS__BACKOFF_SECS=1,5,30`.
        .list_separator(",")
        .with_list_parse_key("events.backoff_secs")
        .source(Some(env.into_iter().collect()));
    let mut builder = config::Config::builder();
    for layer in defaults {
        builder = builder.add_source(config::File::from_str(layer, config::FileFormat::Toml));
    }
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
    }
    let settings = builder.add_source(source).build().map_err(|e| from_config_error(service, &e))?;
    let value: T = settings.try_deserialize().map_err(|e| from_config_error(service, &e))?;
    value.validate(service)?;
    Ok(value)
}

fn from_config_error(service: Service, e: &config::ConfigError) -> ConfigError {
    let text = e.to_string();
    // config reports the key as `... for key `http.port`` or `missing configuration field "database.url"`.
    let key = text
        .split_once("for key `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(k, _)| k.to_owned())
        .or_else(|| {
            text.split_once("missing configuration field \"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(k, _)| k.to_owned())
        })
        .unwrap_or_else(|| "(file)".to_owned());
    ConfigError::new(service, &key, text)
}

/// The HTTP listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to bind, e.g. `127.0.0.1` or `0.0.0.0`.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// actix worker threads.
    pub workers: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// A port of its own for `GET /metrics` (Prometheus), bound on `host`; 0 picks a free one.
    /// Unset: a data service answers `/metrics` on `port`, and the gateway (whose `port` is the
    /// internet's) serves no metrics at all.
    #[serde(default)]
    pub metrics_port: Option<u16>,
}

/// Logs and traces.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// A tracing filter such as `info` or `info,hopsbridge_platform=debug`. `RUST_LOG` wins when set.
    pub log_filter: String,
    /// Log as JSON lines (true) or as human-readable text (false).
    pub json_logs: bool,
    /// OTLP/HTTP collector base URL, e.g. `http://127.0.0.1:4318`; empty turns export off.
    pub otlp_endpoint: String,
}

/// Shutdown behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight requests and messages get to finish after SIGTERM, in seconds.
    pub timeout_secs: u64,
}

impl ShutdownConfig {
    /// The bound as a duration.
    #[must_use]
    pub const fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Postgres.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database`. Required; may hold a password.
    pub url: Secret<String>,
    /// Pool size.
    pub max_connections: usize,
    /// Seconds to wait for a pooled connection before failing the request.
    pub acquire_timeout_secs: u64,
    /// Apply pending migrations at start (local development and tests). In production run the
    /// `migrate` subcommand instead.
    pub migrate_on_start: bool,
}

/// NATS and JetStream.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:port`.
    pub url: String,
    /// Subject and stream prefix; `hb` in a deployment, unique per test.
    pub prefix: String,
    /// How long streams keep events, in hours.
    pub stream_max_age_hours: u64,
    /// JetStream's duplicate window (messages with the same Nats-Msg-Id inside it are dropped),
    /// in seconds.
    pub duplicate_window_secs: u64,
    /// Stream replicas (1 on one server, 3 on a production cluster).
    pub stream_replicas: usize,
}

/// The outbox relay and the consumers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Outbox rows a relay publishes per transaction.
    pub relay_batch_size: i64,
    /// How often an idle relay looks for rows nobody told it about, in milliseconds.
    pub relay_poll_interval_ms: u64,
    /// How long published outbox rows and inbox records are kept, in hours. Must exceed the
    /// stream's max age so a redelivered event is still recognised.
    pub retention_hours: u64,
    /// Messages a consumer handles per transaction.
    pub consumer_batch_size: usize,
    /// Seconds JetStream waits for an ack before redelivering.
    pub ack_wait_secs: u64,
    /// Deliveries before a message goes to the dead-letter subject.
    pub max_deliver: i64,
    /// Delays before each redelivery after a failure, in seconds; the last repeats.
    pub backoff_secs: Vec<u64>,
}

impl Validate for HttpConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        if self.host.parse::<std::net::IpAddr>().is_err() && self.host != "localhost" {
            return Err(ConfigError::new(service, "http.host", "must be an IP address or localhost"));
        }
        if self.workers == 0 {
            return Err(ConfigError::new(service, "http.workers", "must be at least 1"));
        }
        Ok(())
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        let url = self.url.expose();
        if url.is_empty() {
            return Err(ConfigError::new(service, "database.url", "missing"));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::new(service, "database.url", "must start with postgres://"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(service, "database.max_connections", "must be at least 1"));
        }
        Ok(())
    }
}

impl Validate for NatsConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        if !(self.url.starts_with("nats://") || self.url.starts_with("tls://")) {
            return Err(ConfigError::new(service, "nats.url", "must start with nats:// or tls://"));
        }
        Subjects::new(&self.prefix).map_err(|e| ConfigError::new(service, "nats.prefix", e.to_string()))?;
        if self.stream_replicas == 0 {
            return Err(ConfigError::new(service, "nats.stream_replicas", "must be at least 1"));
        }
        Ok(())
    }
}

impl Validate for EventsConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        if self.relay_batch_size < 1 {
            return Err(ConfigError::new(service, "events.relay_batch_size", "must be at least 1"));
        }
        if self.consumer_batch_size == 0 {
            return Err(ConfigError::new(service, "events.consumer_batch_size", "must be at least 1"));
        }
        // nats-server 2.9 rejects max_deliver <= len(backoff) (error 10116).
        let backoff_len = i64::try_from(self.backoff_secs.len()).unwrap_or(i64::MAX);
        if self.max_deliver <= backoff_len {
            return Err(ConfigError::new(
                service,
                "events.max_deliver",
                "must be greater than the number of backoff steps",
            ));
        }
        Ok(())
    }
}

/// The settings of a service that owns data: HTTP, Postgres, NATS and the event machinery.
///
/// A service with settings of its own declares its struct with
/// [`data_service_config!`](crate::data_service_config), which adds these sections to it
/// (serde's flatten would lose the names of bad keys in errors).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataServiceConfig {
    /// The HTTP listener.
    pub http: HttpConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Shutdown.
    pub shutdown: ShutdownConfig,
    /// Postgres.
    pub database: DatabaseConfig,
    /// NATS.
    pub nats: NatsConfig,
    /// Outbox relay and consumers.
    pub events: EventsConfig,
    /// Trust in the gateway.
    pub auth: AuthConfig,
    /// Email and admin alerts.
    pub mail: crate::mail::MailConfig,
    /// The calendar clock: the machine's, or a simulated one to follow.
    pub clock: crate::clock::ClockConfig,
    /// Integrity checks.
    pub integrity: crate::integrity::IntegrityConfig,
}

/// Declares a data service's settings: the sections of [`DataServiceConfig`] followed by the
/// service's own, with `base()` (the shared sections) and [`ServiceSettings`]. The service
/// implements [`Validate`], starting with `self.base().validate(service)`.
#[macro_export]
macro_rules! data_service_config {
    (
        $(#[$doc:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fdoc:meta])* $fvis:vis $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            /// The HTTP listener.
            pub http: $crate::config::HttpConfig,
            /// Logs and traces.
            pub telemetry: $crate::config::TelemetryConfig,
            /// Shutdown.
            pub shutdown: $crate::config::ShutdownConfig,
            /// Postgres.
            pub database: $crate::config::DatabaseConfig,
            /// NATS.
            pub nats: $crate::config::NatsConfig,
            /// Outbox relay and consumers.
            pub events: $crate::config::EventsConfig,
            /// Trust in the gateway, and the key internal calls are signed with.
            pub auth: $crate::config::AuthConfig,
            /// Email and admin alerts.
            pub mail: $crate::mail::MailConfig,
            /// The calendar clock: the machine's, or a simulated one to follow.
            pub clock: $crate::clock::ClockConfig,
            /// Integrity checks.
            pub integrity: $crate::integrity::IntegrityConfig,
            $( $(#[$fdoc])* $fvis $field: $ty, )*
        }

        impl $name {
            /// The sections every data service has.
            #[must_use]
            pub fn base(&self) -> $crate::config::DataServiceConfig {
                $crate::config::DataServiceConfig {
                    http: self.http.clone(),
                    telemetry: self.telemetry.clone(),
                    shutdown: self.shutdown.clone(),
                    database: self.database.clone(),
                    nats: self.nats.clone(),
                    events: self.events.clone(),
                    auth: self.auth.clone(),
                    mail: self.mail.clone(),
                    clock: self.clock.clone(),
                    integrity: self.integrity.clone(),
                }
            }
        }

        impl $crate::config::ServiceSettings for $name {
            fn telemetry(&self) -> &$crate::config::TelemetryConfig {
                &self.telemetry
            }

            fn database(&self) -> Option<&$crate::config::DatabaseConfig> {
                Some(&self.database)
            }
        }
    };
}

impl Validate for DataServiceConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        self.http.validate(service)?;
        self.database.validate(service)?;
        self.nats.validate(service)?;
        self.events.validate(service)?;
        retention_outlives_streams(&self.nats, &self.events, service)?;
        self.auth.validate(service)?;
        self.mail.validate(service)?;
        self.clock.validate(service)?;
        self.integrity.validate(service)
    }
}

/// Inbox records must outlive the messages they recognise: a message JetStream still holds can
/// be redelivered, and one whose inbox record was pruned would be handled a second time.
fn retention_outlives_streams(nats: &NatsConfig, events: &EventsConfig, service: Service) -> Result<(), ConfigError> {
    if events.retention_hours <= nats.stream_max_age_hours {
        return Err(ConfigError::new(
            service,
            "events.retention_hours",
            format!(
                "must exceed nats.stream_max_age_hours ({}) so an event redelivered while the stream keeps it \
                 still finds its inbox record; it is {}",
                nats.stream_max_age_hours, events.retention_hours
            ),
        ));
    }
    Ok(())
}

/// How a service recognises callers, and its own credential for calling other services
/// (decision 0053). Keys are 32 bytes as 64 hex digits or base64.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The gateway's Ed25519 public key: requests signed with it come from the gateway.
    pub gateway_public_key: String,
    /// This service's own Ed25519 private key (its seed): it signs this service's calls to
    /// other services' `/internal/...` routes. Secret; from the environment or a secret store.
    pub service_key: Secret<String>,
    /// The services whose calls this service accepts: service name to its public key. Each
    /// internal route further names which of them it serves.
    #[serde(default)]
    pub trusted_services: std::collections::BTreeMap<String, String>,
}

impl AuthConfig {
    /// This service's signer (`auth.service_key`).
    ///
    /// # Errors
    /// When the key is not a 32-byte seed (the message names the setting, never the key).
    pub fn service_signer(&self) -> anyhow::Result<crate::caller::CallerSigner> {
        crate::caller::CallerSigner::new(&self.service_key).map_err(|e| anyhow::anyhow!("auth.service_key {e}"))
    }

    /// The verifier of callers (`auth.gateway_public_key`, `auth.trusted_services`).
    ///
    /// # Errors
    /// When a key is wrong (the message names the setting, never the key).
    pub fn verifier(&self) -> anyhow::Result<crate::caller::CallerVerifier> {
        crate::caller::CallerVerifier::from_config(self).map_err(|(key, e)| anyhow::anyhow!("{key} {e}"))
    }
}

impl Validate for AuthConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        crate::caller::CallerSigner::new(&self.service_key)
            .map_err(|e| ConfigError::new(service, "auth.service_key", e))?;
        crate::caller::CallerVerifier::from_config(self)
            .map(|_| ())
            .map_err(|(key, e)| ConfigError::new(service, &key, e))
    }
}

/// The gateway's credential: the private key it signs caller headers with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAuthConfig {
    /// The gateway's Ed25519 private key (its 32-byte seed as 64 hex digits or base64); only the
    /// gateway holds it, services hold its public key. Required; from the environment or a
    /// secret store.
    pub gateway_signing_key: Secret<String>,
}

impl GatewayAuthConfig {
    /// The gateway's signer.
    ///
    /// # Errors
    /// When the key is not a 32-byte seed (the message names the setting, never the key).
    pub fn signer(&self) -> anyhow::Result<crate::caller::CallerSigner> {
        crate::caller::CallerSigner::new(&self.gateway_signing_key)
            .map_err(|e| anyhow::anyhow!("auth.gateway_signing_key {e}"))
    }
}

impl Validate for GatewayAuthConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        crate::caller::CallerSigner::new(&self.gateway_signing_key)
            .map(|_| ())
            .map_err(|e| ConfigError::new(service, "auth.gateway_signing_key", e))
    }
}

/// Defaults shared by every service that owns data; each binary adds its own port on top.
pub const DATA_SERVICE_DEFAULTS: &str = include_str!("../config/data-service.toml");

/// Settings every binary has.
pub trait ServiceSettings: DeserializeOwned + Validate + Send + 'static {
    /// Logs and traces.
    fn telemetry(&self) -> &TelemetryConfig;
    /// Postgres, for services that own data.
    fn database(&self) -> Option<&DatabaseConfig>;
}

impl ServiceSettings for DataServiceConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }

    fn database(&self) -> Option<&DatabaseConfig> {
        Some(&self.database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn load_billing(pairs: &[(&str, &str)]) -> Result<DataServiceConfig, ConfigError> {
        let mut all = env(pairs);
        if !pairs.iter().any(|(k, _)| k.ends_with("GATEWAY_PUBLIC_KEY")) {
            let gateway = crate::caller::CallerSigner::from_seed(&[7; 32]).public_key().to_string();
            all.push(("HOPSBRIDGE_BILLING__AUTH__GATEWAY_PUBLIC_KEY".into(), gateway));
        }
        if !pairs.iter().any(|(k, _)| k.ends_with("SERVICE_KEY")) {
            all.push(("HOPSBRIDGE_BILLING__AUTH__SERVICE_KEY".into(), "0b".repeat(32)));
        }
        load_from(Service::Billing, &[DATA_SERVICE_DEFAULTS], None, all)
    }

    #[test]
    fn environment_overrides_defaults() {
        let cfg = load_billing(&[
            ("HOPSBRIDGE_BILLING__DATABASE__URL", "postgres://postgres@127.0.0.1/x"),
            ("HOPSBRIDGE_BILLING__HTTP__PORT", "9090"),
            ("HOPSBRIDGE_BILLING__EVENTS__MAX_DELIVER", "9"),
        ])
        .unwrap();
        assert_eq!(cfg.http.port, 9090);
        assert_eq!(cfg.events.max_deliver, 9);
        assert_eq!(cfg.database.url.expose(), "postgres://postgres@127.0.0.1/x");
    }

    #[test]
    fn a_missing_database_url_names_the_key() {
        let err = load_billing(&[]).unwrap_err();
        assert_eq!(err.key, "database.url");
        assert_eq!(err.env, "HOPSBRIDGE_BILLING__DATABASE__URL");
    }

    #[test]
    fn a_malformed_port_names_the_key() {
        let err = load_billing(&[
            ("HOPSBRIDGE_BILLING__DATABASE__URL", "postgres://postgres@127.0.0.1/x"),
            ("HOPSBRIDGE_BILLING__HTTP__PORT", "eighty"),
        ])
        .unwrap_err();
        assert_eq!(err.key, "http.port", "{err}");
        assert!(err.to_string().contains("HOPSBRIDGE_BILLING__HTTP__PORT"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let cfg = load_billing(&[("HOPSBRIDGE_BILLING__DATABASE__URL", "postgres://app:hunter2@db/app")]).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn a_wrong_key_names_its_setting_and_never_echoes_it() {
        let url = ("HOPSBRIDGE_BILLING__DATABASE__URL", "postgres://postgres@127.0.0.1/x");
        let err = load_billing(&[url, ("HOPSBRIDGE_BILLING__AUTH__SERVICE_KEY", "short-secret")]).unwrap_err();
        assert_eq!(err.key, "auth.service_key");
        assert!(!err.to_string().contains("short-secret"), "the secret is not echoed: {err}");
        let seed = "ab".repeat(31);
        let err = load_billing(&[url, ("HOPSBRIDGE_BILLING__AUTH__SERVICE_KEY", seed.as_str())]).unwrap_err();
        assert!(err.to_string().contains("32 bytes") && !err.to_string().contains(&seed), "{err}");
        let err = load_billing(&[url, ("HOPSBRIDGE_BILLING__AUTH__GATEWAY_PUBLIC_KEY", "")]).unwrap_err();
        assert_eq!(err.key, "auth.gateway_public_key", "{err}");
        let err =
            load_billing(&[url, ("HOPSBRIDGE_BILLING__AUTH__TRUSTED_SERVICES__METERING", "not-a-key")]).unwrap_err();
        assert_eq!(err.key, "auth.trusted_services.metering", "{err}");
        let metering = crate::caller::CallerSigner::from_seed(&[9; 32]).public_key().to_string();
        let err = load_billing(&[url, ("HOPSBRIDGE_BILLING__AUTH__TRUSTED_SERVICES__STRIPE", metering.as_str())])
            .unwrap_err();
        assert_eq!(err.key, "auth.trusted_services.stripe", "{err}");
        let cfg =
            load_billing(&[url, ("HOPSBRIDGE_BILLING__AUTH__TRUSTED_SERVICES__METERING", metering.as_str())]).unwrap();
        assert_eq!(cfg.auth.trusted_services.get("metering"), Some(&metering));
        assert!(!format!("{cfg:?}").contains(&"0b".repeat(32)), "the service key is redacted");
    }

    #[test]
    fn the_clock_is_the_machines_unless_a_simulated_one_is_named() {
        let url = ("HOPSBRIDGE_BILLING__DATABASE__URL", "postgres://postgres@127.0.0.1/x");
        let cfg = load_billing(&[url]).unwrap();
        assert_eq!((cfg.clock.follow_url.as_str(), cfg.clock.poll_ms), ("", 100));
        let cfg =
            load_billing(&[url, ("HOPSBRIDGE_BILLING__CLOCK__FOLLOW_URL", "http://127.0.0.1:4000/clock")]).unwrap();
        assert_eq!(cfg.clock.follow_url, "http://127.0.0.1:4000/clock");
        let err = load_billing(&[url, ("HOPSBRIDGE_BILLING__CLOCK__FOLLOW_URL", "sandbox")]).unwrap_err();
        assert_eq!(err.key, "clock.follow_url");
        let err = load_billing(&[url, ("HOPSBRIDGE_BILLING__CLOCK__POLL_MS", "0")]).unwrap_err();
        assert_eq!(err.key, "clock.poll_ms");
    }

    #[test]
    fn inbox_retention_not_longer_than_the_streams_keep_events_is_refused() {
        let url = ("HOPSBRIDGE_BILLING__DATABASE__URL", "postgres://postgres@127.0.0.1/x");
        let shipped = load_billing(&[url]).unwrap();
        assert!(shipped.events.retention_hours > shipped.nats.stream_max_age_hours);
        for retention in ["168", "100"] {
            let err = load_billing(&[url, ("HOPSBRIDGE_BILLING__EVENTS__RETENTION_HOURS", retention)]).unwrap_err();
            assert_eq!(err.key, "events.retention_hours", "{err}");
            assert_eq!(err.env, "HOPSBRIDGE_BILLING__EVENTS__RETENTION_HOURS");
            assert!(err.reason.contains("nats.stream_max_age_hours (168)"), "{err}");
        }
        let err = load_billing(&[url, ("HOPSBRIDGE_BILLING__NATS__STREAM_MAX_AGE_HOURS", "240")]).unwrap_err();
        assert_eq!(err.key, "events.retention_hours", "{err}");
        let cfg = load_billing(&[
            url,
            ("HOPSBRIDGE_BILLING__NATS__STREAM_MAX_AGE_HOURS", "240"),
            ("HOPSBRIDGE_BILLING__EVENTS__RETENTION_HOURS", "241"),
        ])
        .unwrap();
        assert_eq!((cfg.nats.stream_max_age_hours, cfg.events.retention_hours), (240, 241));
    }

    #[test]
    fn the_backoff_is_a_comma_separated_list_in_the_environment() {
        let cfg = load_billing(&[
            ("HOPSBRIDGE_BILLING__DATABASE__URL", "postgres://postgres@127.0.0.1/x"),
            ("HOPSBRIDGE_BILLING__EVENTS__MAX_DELIVER", "3"),
            ("HOPSBRIDGE_BILLING__EVENTS__BACKOFF_SECS", "1,2"),
        ])
        .unwrap();
        assert_eq!((cfg.events.max_deliver, cfg.events.backoff_secs.clone()), (3, vec![1, 2]));
    }

    #[test]
    fn backoff_longer_than_max_deliver_is_refused() {
        let err = load_billing(&[
            ("HOPSBRIDGE_BILLING__DATABASE__URL", "postgres://postgres@127.0.0.1/x"),
            ("HOPSBRIDGE_BILLING__EVENTS__MAX_DELIVER", "2"),
        ])
        .unwrap_err();
        assert_eq!(err.key, "events.max_deliver");
    }
}
