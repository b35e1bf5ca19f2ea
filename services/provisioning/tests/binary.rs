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
    let base = hopsbridge_testkit::TestSettings::new(Service::Provisioning)
        .set("database.url", "postgres://postgres@127.0.0.1:5432/x");
    let short = "c2hvcnQta2V5LW9mLTE2Yg==";
    let keys = hopsbridge_testkit::PROVISIONING_ENCRYPTION_KEYS;
    let short_key = format!("k1:{short}");
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "encryption.keys"),
        (&[("encryption.keys", &short_key), ("encryption.active_key", "k1")], "encryption.keys"),
        (&[("encryption.keys", "no-colon-here"), ("encryption.active_key", "k1")], "encryption.keys"),
        (&[("encryption.keys", keys), ("encryption.active_key", "k9")], "encryption.active_key"),
        (
            &[("encryption.keys", keys), ("encryption.active_key", "test1"), ("assignments.lease_secs", "1")],
            "assignments.lease_secs",
        ),
    ];
    for (extra, key) in cases {
        let env = extra.iter().fold(base.clone(), |settings, (k, v)| settings.set(k, *v)).env();
        for command in ["serve", "rotate-keys"] {
            let (status, output) = hopsbridge_testkit::ServiceProcess::run_to_exit(BINARY, &[command], &env);
            assert_eq!(status.code(), Some(2), "{output}");
            assert!(output.contains(key) && output.contains(&env_var(Service::Provisioning, key)), "{key}: {output}");
            assert!(!output.contains(short) && !output.contains("dGVzdC1rZXkt"), "key material echoed: {output}");
        }
    }
}

/// `rotate-keys` takes no arguments: anything after it is a usage error (clap's exit 2, before
/// the configuration is read), never silently ignored.
#[test]
fn rotate_keys_refuses_arguments_it_does_not_take() {
    let env = hopsbridge_testkit::TestSettings::new(Service::Provisioning).env();
    let (status, output) = hopsbridge_testkit::ServiceProcess::run_to_exit(BINARY, &["rotate-keys", "--dry-run"], &env);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("--dry-run"), "the refused argument is named: {output}");
}
