//! The command line every binary shares: `<binary> [--config FILE] [serve|migrate]`, plus any
//! subcommands of a service's own ([`run_with`], e.g. provisioning's `rotate-keys`).

use crate::config::{self, ServiceSettings};
use crate::db::Migrations;
use crate::service::Application;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use futures::future::BoxFuture;
use hopsbridge_contracts::Service;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

/// The arguments given after a service's own subcommand (e.g. `--email a@b.c`).
static EXTRA_ARGS: OnceLock<Vec<String>> = OnceLock::new();

/// The arguments that followed the service's own subcommand on the command line, for its
/// [`ExtraCommand::run`] to read (empty for `serve` and `migrate`).
#[must_use]
pub fn extra_args() -> &'static [String] {
    EXTRA_ARGS.get().map_or(&[], Vec::as_slice)
}

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(version, about = "A Hopsbridge service")]
pub struct Cli {
    /// A TOML file layered over the built-in defaults (environment variables still win).
    #[arg(long, env = "HOPSBRIDGE_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Serve HTTP and process events until SIGTERM or SIGINT.
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
}

/// Exit code for a configuration error.
const EXIT_CONFIG: u8 = 2;

/// A subcommand of one service's own, run with the loaded and validated configuration after
/// telemetry has started (e.g. provisioning's `rotate-keys`).
pub struct ExtraCommand<C> {
    /// The subcommand's name on the command line.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Whether it takes arguments of its own (read with [`extra_args`]); when it does not,
    /// anything after its name is refused as a usage error rather than ignored.
    pub takes_arguments: bool,
    /// What it does; the process exits 0 when it returns `Ok`, 1 otherwise.
    pub run: fn(C) -> BoxFuture<'static, anyhow::Result<()>>,
}

impl<C> std::fmt::Debug for ExtraCommand<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraCommand").field("name", &self.name).finish_non_exhaustive()
    }
}

enum Chosen<C> {
    Builtin(Command),
    Extra(fn(C) -> BoxFuture<'static, anyhow::Result<()>>),
}

/// Parses the command line: the shared arguments and subcommands plus `extra`.
fn parse<C>(extra: &[ExtraCommand<C>]) -> (Option<PathBuf>, Chosen<C>) {
    let mut command = Cli::command();
    for e in extra {
        let mut sub = clap::Command::new(e.name).about(e.about);
        if e.takes_arguments {
            sub = sub.arg(clap::Arg::new("args").num_args(0..).trailing_var_arg(true).allow_hyphen_values(true));
        }
        command = command.subcommand(sub);
    }
    let matches = command.get_matches();
    if let Some(name) = matches.subcommand_name()
        && let Some(e) = extra.iter().find(|e| e.name == name)
    {
        // clap panics when asked for an argument the subcommand does not define.
        let args = matches
            .subcommand_matches(name)
            .filter(|_| e.takes_arguments)
            .and_then(|m| m.get_many::<String>("args"))
            .map(|values| values.cloned().collect())
            .unwrap_or_default();
        let _ = EXTRA_ARGS.set(args);
        return (matches.get_one::<PathBuf>("config").cloned(), Chosen::Extra(e.run));
    }
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => (cli.config, Chosen::Builtin(cli.command.unwrap_or(Command::Serve))),
        Err(e) => e.exit(),
    }
}

/// Runs a binary: installs the TLS provider, parses the command line, loads and validates the
/// configuration (exiting 2 with the bad key's name if it is wrong), starts telemetry, then
/// migrates or serves until a signal. Exits 0 after a clean shutdown.
pub fn run<C, F>(service: Service, defaults: &[&str], migrations: Option<Migrations>, serve: F) -> ExitCode
where
    C: ServiceSettings,
    F: AsyncFnOnce(C) -> anyhow::Result<Application>,
{
    run_with(service, defaults, migrations, serve, &[])
}

/// [`run`] with subcommands of the service's own besides `serve` and `migrate`.
pub fn run_with<C, F>(
    service: Service,
    defaults: &[&str],
    migrations: Option<Migrations>,
    serve: F,
    extra: &[ExtraCommand<C>],
) -> ExitCode
where
    C: ServiceSettings,
    F: AsyncFnOnce(C) -> anyhow::Result<Application>,
{
    crate::install_crypto_provider();
    let (config_file, chosen) = parse(extra);
    let cfg: C = match config::load(service, defaults, config_file.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            report(&format!("hopsbridge-{service}: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            report(&format!("hopsbridge-{service}: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry = match crate::telemetry::init(service.name(), cfg.telemetry()) {
            Ok(t) => t,
            Err(e) => {
                report(&format!("hopsbridge-{service}: telemetry: {e:#}"));
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let outcome = match chosen {
            Chosen::Builtin(Command::Migrate) => migrate(cfg.database(), migrations).await,
            Chosen::Builtin(Command::Serve) => match serve(cfg).await {
                Ok(app) => app.run_until_stopped(crate::shutdown::on_signal()).await,
                Err(e) => Err(e),
            },
            Chosen::Extra(run) => run(cfg).await,
        };
        let code = match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "hopsbridge-{service} failed");
                ExitCode::FAILURE
            }
        };
        telemetry.shutdown();
        code
    })
}

async fn migrate(db: Option<&config::DatabaseConfig>, migrations: Option<Migrations>) -> anyhow::Result<()> {
    let (Some(db), Some(migrations)) = (db, migrations) else {
        tracing::info!("this service has no database; nothing to migrate");
        return Ok(());
    };
    let applied = migrations.run(db.url.expose()).await?;
    tracing::info!(schema = migrations.schema, applied = ?applied, "migrations applied");
    Ok(())
}

#[expect(clippy::print_stderr, reason = "configuration errors are reported before logging exists")]
fn report(message: &str) {
    eprintln!("{message}");
}
