//! `hopsbridge-sandbox [--state-dir DIR] [--gateway-url URL] [--clusters N] [--register-clusters-at URL]
//! [--post-registration-url URL]`:
//! starts the simulated Auth0, Stripe, Hopsworks clusters and Kubernetes API servers on
//! loopback, seeds a demo world, writes their settings under the state directory, prints where
//! everything is, and serves until SIGINT or SIGTERM.
//!
//! With `--register-clusters-at`, it also plays the operator: once provisioning answers at that
//! URL, it registers every simulated cluster there as an admin, signing with the key in
//! `HOPSBRIDGE_SANDBOX_SIGNING_KEY` (the gateway's private `auth.gateway_signing_key`: in
//! development the sandbox vouches for its operator as the gateway would).
//!
//! With `--post-registration-url`, a sign-up on the tenant's login page fires the
//! post-registration Action at that URL with the secret in `HOPSBRIDGE_SANDBOX_AUTH0_WEBHOOK_SECRET`
//! (identity's `webhook.secret`).

use hopsbridge_sandbox::world::{World, WorldConfig};
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    state_dir: PathBuf,
    gateway_url: String,
    clusters: usize,
    register_at: Option<String>,
    post_registration_url: Option<String>,
}

const USAGE: &str = "usage: hopsbridge-sandbox [--state-dir DIR] [--gateway-url URL] [--clusters N] [--register-clusters-at URL] [--post-registration-url URL]";

fn args() -> Result<Args, String> {
    let defaults = WorldConfig::default();
    let mut out = Args {
        state_dir: PathBuf::from(".local/sandbox"),
        gateway_url: defaults.gateway_url,
        clusters: defaults.clusters,
        register_at: None,
        post_registration_url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--state-dir" => out.state_dir = it.next().ok_or("--state-dir needs a directory")?.into(),
            "--gateway-url" => out.gateway_url = it.next().ok_or("--gateway-url needs a URL")?,
            "--clusters" => {
                out.clusters = it.next().and_then(|n| n.parse().ok()).ok_or("--clusters needs a number")?;
            }
            "--register-clusters-at" => {
                out.register_at = Some(it.next().ok_or("--register-clusters-at needs provisioning's URL")?);
            }
            "--post-registration-url" => {
                out.post_registration_url =
                    Some(it.next().ok_or("--post-registration-url needs the Action's webhook URL")?);
            }
            other => return Err(format!("unknown argument {other}; {USAGE}")),
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
        if let Some(url) = &args.post_registration_url {
            let Ok(secret) = std::env::var("HOPSBRIDGE_SANDBOX_AUTH0_WEBHOOK_SECRET") else {
                eprintln!("hopsbridge-sandbox: --post-registration-url needs HOPSBRIDGE_SANDBOX_AUTH0_WEBHOOK_SECRET");
                return ExitCode::from(2);
            };
            world.auth0.set_post_registration_action(hopsbridge_sandbox::auth0::Auth0Sim::post_registration_action(
                url, &secret,
            ));
        }
        if let Err(e) = world.write_files(&args.state_dir) {
            eprintln!("hopsbridge-sandbox: writing {}: {e:#}", args.state_dir.display());
            return ExitCode::FAILURE;
        }
        let key = match args.register_at.as_ref().map(|_| std::env::var("HOPSBRIDGE_SANDBOX_SIGNING_KEY")) {
            Some(Ok(k)) => match hopsbridge_platform::caller::CallerSigner::new(&k.into()) {
                Ok(key) => Some(key),
                Err(e) => {
                    eprintln!("hopsbridge-sandbox: HOPSBRIDGE_SANDBOX_SIGNING_KEY {e}");
                    return ExitCode::from(2);
                }
            },
            Some(Err(_)) => {
                eprintln!("hopsbridge-sandbox: --register-clusters-at needs HOPSBRIDGE_SANDBOX_SIGNING_KEY");
                return ExitCode::from(2);
            }
            None => None,
        };
        println!("hopsbridge-sandbox is running\n\n{}", world.summary(&args.state_dir));
        println!("Ready.");
        let world = std::sync::Arc::new(world);
        if let (Some(url), Some(key)) = (args.register_at, key) {
            let world = std::sync::Arc::clone(&world);
            tokio::spawn(async move {
                match world.register_clusters_with(&url, &key, std::time::Duration::from_secs(300)).await {
                    Ok(()) => println!("Clusters registered with provisioning at {url}."),
                    Err(e) => eprintln!("hopsbridge-sandbox: registering the clusters: {e:#}"),
                }
            });
        }
        hopsbridge_platform::shutdown::wait_for_signal().await;
        ExitCode::SUCCESS
    })
}
