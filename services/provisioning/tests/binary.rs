//! The hopsbridge-provisioning executable, run as a real process against the real Postgres and NATS:
//! health, readiness naming each unreachable dependency, exit 0 on SIGTERM, and refusal of bad
//! configuration naming the key.

use hopsbridge_contracts::Service;

hopsbridge_testkit::data_service_binary_tests!(Service::Provisioning, "hopsbridge-provisioning");

/// The encryption settings are required and checked: each bad value exits 2 naming its key,
/// without echoing key material.
#[test]
fn refuses_missing_or_malformed_encryption_keys_naming_the_key() {
    use hopsbridge_platform::config::env_var;
    let var = |k: &str, v: &str| (env_var(Service::Provisioning, k), v.to_owned());
    let base = [
        var("database.url", "postgres://postgres@127.0.0.1:5432/x"),
        var("auth.gateway_signing_key", hopsbridge_testkit::GATEWAY_SIGNING_KEY),
    ];
    let short = "c2hvcnQta2V5LW9mLTE2Yg==";
    let cases = [
        (vec![], "encryption.keys"),
        (vec![var("encryption.keys", &format!("k1:{short}")), var("encryption.active_key", "k1")], "encryption.keys"),
        (vec![var("encryption.keys", "no-colon-here"), var("encryption.active_key", "k1")], "encryption.keys"),
        (
            vec![
                var("encryption.keys", hopsbridge_testkit::PROVISIONING_ENCRYPTION_KEYS),
                var("encryption.active_key", "k9"),
            ],
            "encryption.active_key",
        ),
        (
            vec![
                var("encryption.keys", hopsbridge_testkit::PROVISIONING_ENCRYPTION_KEYS),
                var("encryption.active_key", "test1"),
                var("assignments.lease_secs", "1"),
            ],
            "assignments.lease_secs",
        ),
    ];
    for (extra, key) in cases {
        let env: Vec<_> = base.iter().cloned().chain(extra).collect();
        for command in ["serve", "rotate-keys"] {
            let (status, output) = hopsbridge_testkit::ServiceProcess::run_to_exit(BINARY, &[command], &env);
            assert_eq!(status.code(), Some(2), "{output}");
            assert!(output.contains(key) && output.contains(&env_var(Service::Provisioning, key)), "{key}: {output}");
            assert!(!output.contains(short) && !output.contains("dGVzdC1rZXkt"), "key material echoed: {output}");
        }
    }
}
