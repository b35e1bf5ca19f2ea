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
    use hopsbridge_testkit::ServiceProcess;
    let var = |k: &str, v: &str| (env_var(Service::Billing, k), v.to_owned());
    let base = vec![
        var("database.url", "postgres://postgres@127.0.0.1:5432/x"),
        var("auth.gateway_signing_key", hopsbridge_testkit::GATEWAY_SIGNING_KEY),
    ];
    let with = |extra: &[(String, String)]| {
        let mut env = base.clone();
        env.extend_from_slice(extra);
        env
    };
    let cases = [
        (with(&[]), "stripe.secret_key"),
        (with(&[var("stripe.secret_key", "sk_test_hopsbridge_secret_value")]), "stripe.webhook_secret"),
        (
            with(&[
                var("stripe.secret_key", "sk_test_hopsbridge_secret_value"),
                var("stripe.webhook_secret", "whsec_hopsbridge_secret_value"),
                var("rates.ram.unit_amount_decimal", "3,5"),
            ]),
            "rates.ram.unit_amount_decimal",
        ),
        (
            with(&[
                var("stripe.secret_key", "sk_test_hopsbridge_secret_value"),
                var("stripe.webhook_secret", "whsec_hopsbridge_secret_value"),
                var("checkout.success_url", "billing"),
            ]),
            "checkout.success_url",
        ),
    ];
    for (env, key) in cases {
        for command in ["serve", "migrate"] {
            let (status, output) = ServiceProcess::run_to_exit(BINARY, &[command], &env);
            assert_eq!(status.code(), Some(2), "{command}: {output}");
            assert!(output.contains(key) && output.contains(&env_var(Service::Billing, key)), "{key}: {output}");
            assert!(!output.contains("hopsbridge_secret_value"), "no secret echoed: {output}");
        }
    }
}
