//! The settings the harness gives the services besides testkit's own: mail through the
//! sandbox's mail catcher, and provisioning's key, timeouts and retry delays.

use crate::CLUSTER_KEY;
use hopsbridge_sandbox::world::World;
use hopsbridge_testkit::{TestBus, TestDb, TestSettings};

/// Mail through the sandbox's mail catcher, with links to the gateway and admin alerts to an
/// address and the catcher's webhook.
pub(super) fn with_mail(settings: TestSettings, world: &World, gateway: &str) -> TestSettings {
    settings
        .set("mail.smtp_url", world.mail.smtp_url())
        .set("mail.public_base_url", gateway)
        .set("mail.admin_addresses", "ops@hopsbridge.test")
        .set("mail.admin_webhook_url", world.mail.webhook_url())
        .set("mail.poll_interval_ms", "200")
}

/// provisioning's key, and Hopsworks timeouts and retry delays short enough that a test sees a
/// timed-out call retried and work left by a killed process taken over (its lease runs out
/// after 30 s, the least these timeouts allow) within a minute.
pub(super) fn journey_provisioning(db: &TestDb, bus: &TestBus, world: &World, gateway: &str) -> TestSettings {
    with_mail(TestSettings::provisioning(db, bus), world, gateway)
        .set("shutdown.timeout_secs", "10")
        .set("encryption.keys", CLUSTER_KEY)
        .set("encryption.active_key", "journey")
        .set("hopsworks.request_timeout_ms", "1500")
        .set("hopsworks.connect_timeout_ms", "500")
        .set("hopsworks.max_attempts", "2")
        .set("hopsworks.initial_backoff_ms", "100")
        .set("hopsworks.max_backoff_ms", "500")
        .set("assignments.lease_secs", "30")
        .set("assignments.retry_interval_ms", "500")
        .set("assignments.initial_retry_delay_ms", "500")
        .set("assignments.max_retry_delay_ms", "2000")
}
