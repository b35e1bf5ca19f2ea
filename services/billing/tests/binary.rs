//! The hopsbridge-billing executable, run as a real process against the real Postgres and NATS:
//! health, readiness naming each unreachable dependency, exit 0 on SIGTERM, and refusal of bad
//! configuration naming the key.

use hopsbridge_contracts::Service;

hopsbridge_testkit::data_service_binary_tests!(Service::Billing, "hopsbridge-billing");

/// billing's own required settings stop the binary with exit 2 naming the key, and no secret is
/// echoed.
#[test]
fn refuses_missing_or_bad_stripe_settings_naming_the_key() {
    use hopsbridge_platform::config::env_var;
    use hopsbridge_testkit::{ServiceProcess, TestSettings};
    let base = TestSettings::new(Service::Billing).set("database.url", "postgres://postgres@127.0.0.1:5432/x");
    let keys = base
        .clone()
        .set("stripe.secret_key", "sk_test_hopsbridge_secret_value")
        .set("stripe.webhook_secret", "whsec_hopsbridge_secret_value");
    let cases = [
        (base.clone(), "stripe.secret_key"),
        (base.set("stripe.secret_key", "sk_test_hopsbridge_secret_value"), "stripe.webhook_secret"),
        (keys.clone().set("rates.ram.unit_amount_decimal", "3,5"), "rates.ram.unit_amount_decimal"),
        (keys.set("checkout.success_url", "billing"), "checkout.success_url"),
    ];
    for (settings, key) in cases {
        let env = settings.env();
        for command in ["serve", "migrate"] {
            let (status, output) = ServiceProcess::run_to_exit(BINARY, &[command], &env);
            assert_eq!(status.code(), Some(2), "{command}: {output}");
            assert!(output.contains(key) && output.contains(&env_var(Service::Billing, key)), "{key}: {output}");
            assert!(!output.contains("hopsbridge_secret_value"), "no secret echoed: {output}");
        }
    }
}
