//! `hopsbridge-billing [--config FILE] [serve|migrate]`

use std::process::ExitCode;

fn main() -> ExitCode {
    hopsbridge_platform::cli::run(
        hopsbridge_billing::SERVICE,
        &hopsbridge_billing::DEFAULTS,
        Some(hopsbridge_billing::MIGRATIONS),
        hopsbridge_billing::build,
    )
}
