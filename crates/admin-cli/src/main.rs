//! `hopsbridge-admin [--gateway URL] [--token T | --issuer URL --client-id ID --client-secret S] <group> <command>`

use clap::Parser as _;
use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = hopsbridge_admin::Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::Error::from(e)),
    };
    match runtime.block_on(hopsbridge_admin::run(&cli)) {
        Ok(answer) => {
            let text = serde_json::to_string_pretty(&answer.body).unwrap_or_default();
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            if answer.is_success() {
                ExitCode::SUCCESS
            } else {
                let _ = writeln!(std::io::stderr().lock(), "{}", answer.summary());
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "hopsbridge-admin: {e:#}");
    ExitCode::from(3)
}
