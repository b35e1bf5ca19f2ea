//! What the metering test files share: the crypto provider, a collection configuration without
//! waiting, the steady pods the tests run on the sandbox's Kubernetes, and provisioning run in
//! the test's process on the sandbox's clock.

#![allow(dead_code, reason = "each test file uses part of it")]

use hopsbridge_metering::collect::CollectConfig;
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_sandbox::workload::{MemFormat, Profile, SimContainer, SimPod};

/// An administrator, as the gateway vouches for them.
pub fn admin() -> Caller {
    Caller {
        subject: "auth0|admin".into(),
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: Some(uuid::Uuid::now_v7().into()),
        roles: vec![Role::User, Role::Admin],
        email: None,
    }
}

/// A signed-in owner who is no administrator.
pub fn person(user: uuid::Uuid) -> Caller {
    Caller {
        subject: format!("auth0|{user}"),
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: Some(user.into()),
        roles: vec![Role::User, Role::Owner],
        email: None,
    }
}

/// Installs the process's one rustls provider.
pub fn init() {
    hopsbridge_platform::install_crypto_provider();
}

/// The production collection settings without their pacing: small pages, no rate bound,
/// short backoffs.
pub fn fast() -> CollectConfig {
    CollectConfig {
        page_size: 100,
        requests_per_second: 1000,
        backoff_initial_ms: 10,
        backoff_max_ms: 50,
        ..CollectConfig::default()
    }
}

/// A container using `cpu` nanocores and `mem` bytes steadily, holding `gpus` GPUs.
pub fn container(cpu: u64, mem: u64, gpus: u64) -> SimContainer {
    SimContainer {
        name: "main".to_owned(),
        image: "docker.hops.works/jupyter:4.1.0".to_owned(),
        cpu_request_millis: 1000,
        memory_request_bytes: 1 << 30,
        gpus,
        profile: Profile::Steady { cpu_nanocores: cpu, memory_bytes: mem },
        memory_format: MemFormat::Kibi,
    }
}

/// A pod of `owner` in `ns`, Running from `started` on.
pub fn pod(ns: &str, name: &str, owner: &str, started: i64, containers: Vec<SimContainer>) -> SimPod {
    SimPod {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{ns}-{name}"),
        labels: [("owner".to_owned(), owner.to_owned())].into(),
        node: "node-1".to_owned(),
        created: started - 5,
        started,
        finished: None,
        deleted: None,
        containers,
    }
}

/// provisioning in this process on the test's database and NATS, following the sandbox clock
/// served at `clock_url`, with `extra` settings; answers its base URL and what stops it.
pub async fn provisioning(
    db: &hopsbridge_testkit::TestDb,
    bus: &hopsbridge_testkit::TestBus,
    clock_url: &str,
    extra: &[(&str, &str)],
) -> (String, tokio_util::sync::CancellationToken) {
    let mut settings = hopsbridge_testkit::TestSettings::provisioning(db, bus)
        .set("hopsworks.request_timeout_ms", "2000")
        .clock(clock_url);
    for (key, value) in extra {
        settings = settings.set(key, *value);
    }
    let config: hopsbridge_provisioning::ProvisioningConfig =
        hopsbridge_testkit::TestSettings::load(&settings, &hopsbridge_provisioning::DEFAULTS);
    let app = hopsbridge_provisioning::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    (base, stop)
}
