//! `hopsbridge-provisioning [--config FILE] [serve|migrate]`

use std::process::ExitCode;

fn main() -> ExitCode {
    hopsbridge_platform::cli::run(
        hopsbridge_provisioning::SERVICE,
        &hopsbridge_provisioning::DEFAULTS,
        Some(hopsbridge_provisioning::MIGRATIONS),
        hopsbridge_provisioning::build,
    )
}
