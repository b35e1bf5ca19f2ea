//! `hopsbridge-metering [--config FILE] [serve|migrate]`

use std::process::ExitCode;

fn main() -> ExitCode {
    hopsbridge_platform::cli::run(
        hopsbridge_metering::SERVICE,
        &hopsbridge_metering::DEFAULTS,
        Some(hopsbridge_metering::MIGRATIONS),
        hopsbridge_metering::build,
    )
}
