//! `hopsbridge-identity [--config FILE] [serve|migrate]`

use std::process::ExitCode;

fn main() -> ExitCode {
    hopsbridge_platform::cli::run(
        hopsbridge_identity::SERVICE,
        &hopsbridge_identity::DEFAULTS,
        Some(hopsbridge_identity::MIGRATIONS),
        hopsbridge_identity::build,
    )
}
