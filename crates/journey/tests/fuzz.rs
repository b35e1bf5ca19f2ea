//! A request fuzzer driven by the OpenAPI document: schemathesis (PyPI, pinned, in a virtual
//! environment under `.local/schemathesis`) generates requests for every operation of
//! `/api/openapi.json` from its schemas, valid and deliberately invalid, and sends them to the
//! gateway with every service running as its own process. Each answer must not be a 5xx, must
//! have a status and a body the document gives that operation, and an invalid request must not
//! be answered 2xx. The run's failures are printed with the request that reproduces each.
//!
//! The requests carry an admin's token, so the admin routes are reached, and an owner with a
//! card and a cluster exists, so the owner routes have data behind them. `DELETE /api/me` is
//! left out: it would delete the caller halfway through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
#![allow(clippy::print_stdout, reason = "the test prints the fuzzer's report")]

use hopsbridge_contracts::Service;
use hopsbridge_journey::{Options, Platform, binaries};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SCHEMATHESIS: &str = "4.32.5";
/// Examples generated per operation and phase; the long form (`just fuzz`) sets more through
/// `HOPSBRIDGE_FUZZ_EXAMPLES`.
const EXAMPLES: &str = "12";
/// The fuzzer's settings: which answers are expected beyond the document's.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/schemathesis.toml");
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,negative_data_rejection";

/// The virtual environment with schemathesis, made once.
fn schemathesis() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join(".local/schemathesis");
    let bin = venv.join("bin/schemathesis");
    let installed = Command::new(&bin).arg("--version").output().ok();
    if installed.is_none_or(|o| !String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS)) {
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 -m venv");
        assert!(made.success(), "python3 -m venv {} failed (Debian: apt-get install python3-venv)", venv.display());
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", &format!("schemathesis=={SCHEMATHESIS}")])
            .status()
            .expect("pip");
        assert!(pip.success(), "pip install schemathesis=={SCHEMATHESIS} failed");
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generated_request_is_answered_as_the_document_says() {
    let bin = schemathesis();
    let options = Options {
        // The fuzzer's requests come from one person and one address, faster than a person's.
        settings: vec![
            (Service::Gateway, "limits.per_user_per_minute", "60000".into()),
            (Service::Gateway, "limits.per_ip_per_minute", "60000".into()),
        ],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let owner = platform.sign_up("fuzz-owner").await;
    platform.add_card(&owner).await;
    platform.wait_assigned(&owner, Duration::from_secs(120)).await;

    let examples = std::env::var("HOPSBRIDGE_FUZZ_EXAMPLES").unwrap_or_else(|_| EXAMPLES.to_owned());
    let gateway = platform.gateway.clone();
    let token = platform.admin_token.clone();
    let output = tokio::task::spawn_blocking(move || {
        // Its caches (.schemathesis, .hypothesis) go beside it, which git ignores.
        let cache = bin.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        Command::new(&bin)
            .current_dir(cache)
            .args(["--config-file", CONFIG, "run", &format!("{gateway}/api/openapi.json"), "--url", &gateway])
            .args(["--checks", CHECKS, "--max-examples", &examples, "--workers", "1"])
            .args(["--phases", "examples,coverage,fuzzing", "--seed", "1"])
            .args(["--exclude-operation-id", "delete_me"])
            .args(["--request-timeout", "30", "--no-color"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .output()
            .expect("schemathesis")
    })
    .await
    .expect("join");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{report}");
    assert!(output.status.success(), "the fuzzer found answers the document does not allow (above)");
    for service in [Service::Identity, Service::Team, Service::Billing, Service::Provisioning, Service::Metering] {
        assert!(!platform.service_output(service).contains("panicked"), "{} panicked", service.name());
    }
}
