//! `hopsbridge-sandbox [--state-dir DIR] [--gateway-url URL] [--clusters N]`: starts the simulated Auth0,
//! Stripe, Hopsworks clusters and Kubernetes API servers on loopback, seeds a demo world,
//! writes their settings under the state directory, prints where everything is, and serves
//! until SIGINT or SIGTERM.

use hopsbridge_sandbox::world::{World, WorldConfig};
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    state_dir: PathBuf,
    gateway_url: String,
    clusters: usize,
}

fn args() -> Result<Args, String> {
    let defaults = WorldConfig::default();
    let mut out = Args {
        state_dir: PathBuf::from(".local/sandbox"),
        gateway_url: defaults.gateway_url,
        clusters: defaults.clusters,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--state-dir" => out.state_dir = it.next().ok_or("--state-dir needs a directory")?.into(),
            "--gateway-url" => out.gateway_url = it.next().ok_or("--gateway-url needs a URL")?,
            "--clusters" => {
                out.clusters = it.next().and_then(|n| n.parse().ok()).ok_or("--clusters needs a number")?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: hopsbridge-sandbox [--state-dir DIR] [--gateway-url URL] [--clusters N]"
                ));
            }
        }
    }
    Ok(out)
}

#[allow(clippy::print_stdout, clippy::print_stderr, reason = "the binary reports where the sandbox is")]
fn main() -> ExitCode {
    hopsbridge_platform::install_crypto_provider();
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hopsbridge-sandbox: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("hopsbridge-sandbox: cannot start the runtime");
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let world = match World::start(&WorldConfig {
            gateway_url: args.gateway_url,
            clusters: args.clusters,
            ..WorldConfig::default()
        }) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("hopsbridge-sandbox: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = world.write_files(&args.state_dir) {
            eprintln!("hopsbridge-sandbox: writing {}: {e:#}", args.state_dir.display());
            return ExitCode::FAILURE;
        }
        let _clock = world.follow_real_time();
        println!("hopsbridge-sandbox is running\n\n{}", world.summary(&args.state_dir));
        println!("Ready.");
        hopsbridge_platform::shutdown::wait_for_signal().await;
        ExitCode::SUCCESS
    })
}
