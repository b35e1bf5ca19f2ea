//! `hopsbridge-identity [--config FILE] [serve|migrate|grant-admin --email ADDRESS]`
//!
//! The journey crate builds this file as a binary of its own, so it uses only crates that one
//! depends on too.

use hopsbridge_identity::{IdentityConfig, MIGRATIONS, users};
use hopsbridge_platform::cli::{ExtraCommand, extra_args};
use hopsbridge_platform::config::ServiceSettings as _;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

fn main() -> ExitCode {
    hopsbridge_platform::cli::run_with(
        hopsbridge_identity::SERVICE,
        &hopsbridge_identity::DEFAULTS,
        Some(MIGRATIONS),
        hopsbridge_identity::build,
        &[ExtraCommand {
            name: "grant-admin",
            about: "grant-admin --email ADDRESS: make the person who signed up with ADDRESS an administrator",
            takes_arguments: true,
            run: grant_admin,
        }],
    )
}

/// The address of `--email ADDRESS` or `--email=ADDRESS`.
fn email_argument(args: &[String]) -> anyhow::Result<String> {
    match args {
        [flag, email] if flag == "--email" => Ok(email.clone()),
        [one] if one.starts_with("--email=") => Ok(one["--email=".len()..].to_owned()),
        _ => anyhow::bail!("usage: hopsbridge-identity grant-admin --email ADDRESS"),
    }
}

/// Grants admin to the one live account with the address (any case): the first admin of a
/// fresh installation is made this way, the others through `PUT /api/admin/users/{id}/admin`.
fn grant_admin(config: IdentityConfig) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
    Box::pin(async move {
        let email = email_argument(extra_args())?.trim().to_lowercase();
        let database = config.database().ok_or_else(|| anyhow::anyhow!("identity has no database configured"))?;
        let mut conn = hopsbridge_platform::db::dedicated_connection(database, MIGRATIONS.schema).await?;
        let (found, _) = users::list(&mut conn, Some(&email), 100, 0).await?;
        let live: Vec<_> =
            found.into_iter().filter(|u| u.email.to_string() == email && u.status.as_str() != "deleted").collect();
        let user = match live.as_slice() {
            [one] => one,
            [] => anyhow::bail!("nobody has signed up with {email}: sign up first, then run this again"),
            many => anyhow::bail!(
                "{} accounts use {email} (one per Auth0 tenant); grant it through the admin API",
                many.len()
            ),
        };
        let granted = users::set_admin(&mut conn, user.id, true).await?;
        report(&format!("{email} (user {}) is an administrator", granted.id));
        Ok(())
    })
}

#[expect(clippy::print_stdout, reason = "the command's answer, for the person who ran it")]
fn report(line: &str) {
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::email_argument;

    #[test]
    fn the_address_comes_from_email_alone() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(email_argument(&args(&["--email", "a@b.io"])).unwrap(), "a@b.io");
        assert_eq!(email_argument(&args(&["--email=a@b.io"])).unwrap(), "a@b.io");
        for bad in [&[][..], &["a@b.io"][..], &["--email"][..], &["--mail", "a@b.io"][..]] {
            assert!(email_argument(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
