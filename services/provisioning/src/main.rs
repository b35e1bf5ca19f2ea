//! `hopsbridge-provisioning [--config FILE] [serve|migrate|rotate-keys]`

use std::process::ExitCode;

fn main() -> ExitCode {
    hopsbridge_platform::cli::run_with(
        hopsbridge_provisioning::SERVICE,
        &hopsbridge_provisioning::DEFAULTS,
        Some(hopsbridge_provisioning::MIGRATIONS),
        hopsbridge_provisioning::build,
        &hopsbridge_provisioning::COMMANDS,
    )
}
