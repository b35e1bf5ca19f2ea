//! `hopsbridge-team [--config FILE] [serve|migrate]`

use std::process::ExitCode;

fn main() -> ExitCode {
    hopsbridge_platform::cli::run(
        hopsbridge_team::SERVICE,
        &hopsbridge_team::DEFAULTS,
        Some(hopsbridge_team::MIGRATIONS),
        hopsbridge_team::build,
    )
}
