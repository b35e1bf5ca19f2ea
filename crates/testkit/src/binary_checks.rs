//! The checks every service binary must pass, run against the real executable.

use crate::{ServiceProcess, TcpProxy, TestBus, TestDb};
use hopsbridge_contracts::Service;
use hopsbridge_platform::config::env_var;
use std::time::Duration;

fn var(service: Service, key: &str, value: impl Into<String>) -> (String, String) {
    (env_var(service, key), value.into())
}

/// `GET url` → (status, JSON body).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    let response = client.get(url).send().await.expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Waits until `/readyz` answers `want`; returns the last body.
pub async fn readyz_becomes(base: &str, want: u16) -> serde_json::Value {
    let url = format!("{base}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get_json(&url).await;
        if status == want {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz never answered {want}; last: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts a 503 `/readyz` body names `dependency` as failing and only it.
pub fn assert_names_failed_dependency(body: &serde_json::Value, dependency: &str) {
    assert_eq!(body["code"], "not_ready", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(dependency), "message {message:?} should name {dependency}");
    let checks = body["details"]["checks"].as_object().expect("checks in details");
    for (name, state) in checks {
        if name == dependency {
            assert_ne!(state, "ok", "{body}");
        } else {
            assert_eq!(state, "ok", "{body}");
        }
    }
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
}

/// The environment a data service needs to run against `db` and `bus` through proxies.
#[must_use]
pub fn data_service_env(
    service: Service,
    db: &TestDb,
    postgres: &TcpProxy,
    nats: &TcpProxy,
    bus: &TestBus,
) -> Vec<(String, String)> {
    let mut env = vec![
        var(service, "database.url", format!("postgres://postgres@{}/{}", postgres.addr(), db.name())),
        var(service, "database.migrate_on_start", "true"),
        var(service, "database.acquire_timeout_secs", "1"),
        var(service, "nats.url", format!("nats://{}", nats.addr())),
        var(service, "nats.prefix", bus.prefix()),
        var(service, "http.port", "0"),
        var(service, "shutdown.timeout_secs", "10"),
    ];
    // The test keys: the gateway's public key, the service's own key, every other service's.
    env.extend(crate::TestSettings::new(service).env().into_iter().filter(|(name, _)| name.contains("__AUTH__")));
    if service == Service::Identity {
        env.push(var(service, "webhook.secret", crate::WEBHOOK_SECRET));
    }
    if service == Service::Billing {
        // Stripe itself is not needed for the lifecycle: billing finds its prices in the
        // background and /readyz does not depend on Stripe.
        env.push(var(service, "stripe.secret_key", crate::STRIPE_SECRET_KEY));
        env.push(var(service, "stripe.webhook_secret", crate::STRIPE_WEBHOOK_SECRET));
        env.push(var(service, "stripe.api_base", "http://127.0.0.1:9"));
    }
    if service == Service::Provisioning {
        env.push(var(service, "encryption.keys", crate::PROVISIONING_ENCRYPTION_KEYS));
        env.push(var(service, "encryption.active_key", "test1"));
    }
    env
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Starts the binary of a data service, checks `/healthz` and `/readyz`, makes Postgres and
/// then NATS unreachable and checks that `/readyz` answers 503 naming each, restores them,
/// and checks that SIGTERM stops the process with exit code 0.
pub async fn data_service_lifecycle(binary: &str, service: Service) {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let postgres = TcpProxy::start(&host_port(&crate::admin_database_url())).await;
    let nats = TcpProxy::start(&host_port(&crate::nats_url())).await;
    let mut process = ServiceProcess::start(binary, &data_service_env(service, &db, &postgres, &nats, &bus));
    let base = process.url();

    let (status, body) = get_json(&format!("{base}/healthz")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    readyz_becomes(&base, 200).await;

    postgres.cut();
    let body = readyz_becomes(&base, 503).await;
    assert_names_failed_dependency(&body, "postgres");
    let (status, _) = get_json(&format!("{base}/healthz")).await;
    assert_eq!(status, 200, "the process is still alive");
    postgres.restore();
    readyz_becomes(&base, 200).await;

    nats.cut();
    let body = readyz_becomes(&base, 503).await;
    assert_names_failed_dependency(&body, "nats");
    nats.restore();
    readyz_becomes(&base, 200).await;

    let status = process.terminate(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit after SIGTERM; output:\n{}", process.output());
}

/// A data service's binary refuses to start without a database URL, or with a malformed
/// port, naming the key and its environment variable.
pub fn data_service_bad_configuration(binary: &str, service: Service) {
    let (status, output) = ServiceProcess::run_to_exit(binary, &["serve"], &[]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("database.url") && output.contains(&env_var(service, "database.url")), "{output}");

    let env =
        [var(service, "database.url", "postgres://postgres@127.0.0.1:5432/x"), var(service, "http.port", "eighty")];
    let (status, output) = ServiceProcess::run_to_exit(binary, &["serve"], &env);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("http.port") && output.contains(&env_var(service, "http.port")), "{output}");

    // A key that is no 32-byte seed: the setting and what is wrong are named, the key is not.
    let seed = "ab".repeat(31);
    let env = [
        var(service, "database.url", "postgres://postgres@127.0.0.1:5432/x"),
        var(service, "auth.gateway_public_key", crate::public_key(Service::Gateway)),
        var(service, "auth.service_key", seed.as_str()),
    ];
    let (status, output) = ServiceProcess::run_to_exit(binary, &["serve"], &env);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains(&env_var(service, "auth.service_key")) && output.contains("32 bytes"), "{output}");
    assert!(!output.contains(&seed), "the key is never printed: {output}");
}

/// The gateway's binary: `/readyz` follows the services it routes to.
pub async fn gateway_lifecycle(gateway_binary: &str, upstream_binary: &str) {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let postgres = TcpProxy::start(&host_port(&crate::admin_database_url())).await;
    let nats = TcpProxy::start(&host_port(&crate::nats_url())).await;
    let upstream =
        ServiceProcess::start(upstream_binary, &data_service_env(Service::Identity, &db, &postgres, &nats, &bus));
    let target = host_port(&upstream.url());
    let names = ["identity", "team", "provisioning", "metering", "billing"];
    let mut proxies = Vec::new();
    for _ in names {
        proxies.push(TcpProxy::start(&target).await);
    }
    let tenant = hopsbridge_sandbox::auth0::Auth0Sim::start(hopsbridge_sandbox::auth0::Auth0Config::default())
        .expect("start the Auth0 tenant");
    let mut env = vec![
        var(Service::Gateway, "http.port", "0"),
        var(Service::Gateway, "shutdown.timeout_secs", "10"),
        var(Service::Gateway, "auth0.issuer", tenant.issuer()),
        var(Service::Gateway, "auth.gateway_signing_key", crate::GATEWAY_SIGNING_KEY),
    ];
    for (name, proxy) in names.iter().zip(&proxies) {
        env.push(var(Service::Gateway, &format!("upstreams.{name}"), format!("http://{}", proxy.addr())));
    }
    let mut gateway = ServiceProcess::start(gateway_binary, &env);
    let base = gateway.url();

    let (status, _) = get_json(&format!("{base}/healthz")).await;
    assert_eq!(status, 200);
    readyz_becomes(&base, 200).await;

    proxies[4].cut();
    let body = readyz_becomes(&base, 503).await;
    assert_names_failed_dependency(&body, "billing");
    proxies[4].restore();
    readyz_becomes(&base, 200).await;

    let status = gateway.terminate(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit after SIGTERM; output:\n{}", gateway.output());
}

/// The gateway refuses a malformed port or upstream URL, naming the key.
pub fn gateway_bad_configuration(binary: &str) {
    let (status, output) = ServiceProcess::run_to_exit(binary, &[], &[]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("auth0.issuer") && output.contains("HOPSBRIDGE_GATEWAY__AUTH0__ISSUER"), "{output}");
    let valid = vec![
        var(Service::Gateway, "auth0.issuer", "https://hopsbridge.eu.auth0.com/"),
        var(Service::Gateway, "auth.gateway_signing_key", crate::GATEWAY_SIGNING_KEY),
    ];
    let with = |extra: (String, String)| {
        let mut env = valid.clone();
        env.push(extra);
        env
    };
    let seed = "cd".repeat(31);
    let (status, output) = ServiceProcess::run_to_exit(
        binary,
        &[],
        &[valid[0].clone(), var(Service::Gateway, "auth.gateway_signing_key", seed.as_str())],
    );
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("HOPSBRIDGE_GATEWAY__AUTH__GATEWAY_SIGNING_KEY") && output.contains("32 bytes"),
        "{output}"
    );
    assert!(!output.contains(&seed), "the key is never printed: {output}");
    let (status, output) = ServiceProcess::run_to_exit(binary, &[], &with(var(Service::Gateway, "http.port", "99999")));
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("http.port"), "{output}");
    let (status, output) =
        ServiceProcess::run_to_exit(binary, &[], &with(var(Service::Gateway, "upstreams.billing", "billing:8085")));
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("upstreams.billing") && output.contains("HOPSBRIDGE_GATEWAY__UPSTREAMS__BILLING"),
        "{output}"
    );
}

/// The tests every data service binary gets, for `tests/binary.rs` of its crate:
/// `hopsbridge_testkit::data_service_binary_tests!(Service::Billing, "hopsbridge-billing");`
#[macro_export]
macro_rules! data_service_binary_tests {
    ($service:expr, $binary:literal) => {
        const BINARY: &str = env!(concat!("CARGO_BIN_EXE_", $binary));

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn serves_health_reports_each_unreachable_dependency_and_exits_zero_on_sigterm() {
            $crate::binary_checks::data_service_lifecycle(BINARY, $service).await;
        }

        #[test]
        fn refuses_bad_configuration_naming_the_key() {
            $crate::binary_checks::data_service_bad_configuration(BINARY, $service);
        }
    };
}
