//! `hopsbridge-gateway [--config FILE] [serve]`

use std::process::ExitCode;

fn main() -> ExitCode {
    hopsbridge_platform::cli::run(
        hopsbridge_gateway::SERVICE,
        &hopsbridge_gateway::DEFAULTS,
        None,
        hopsbridge_gateway::build,
    )
}
