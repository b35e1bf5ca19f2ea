//! The whole simulated outside world in one value, as the `hopsbridge-sandbox` binary and
//! end-to-end tests start it, with a small demo population.

use crate::auth0::{Auth0Config, Auth0Sim, TestUser};
use std::fmt::Write as _;
use std::path::Path;

/// What to start.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// The gateway's public URL, whose callback and logout URLs Auth0 must allow.
    pub gateway_url: String,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self { gateway_url: "http://127.0.0.1:8080".to_owned() }
    }
}

/// Every simulator, running.
#[derive(Debug)]
pub struct World {
    /// The Auth0 tenant.
    pub auth0: Auth0Sim,
    /// The demo people registered in the tenant.
    pub users: Vec<TestUser>,
}

impl World {
    /// Starts every simulator and seeds the demo population.
    ///
    /// # Errors
    /// When a simulator cannot start.
    pub fn start(config: &WorldConfig) -> anyhow::Result<Self> {
        let auth0 = Auth0Sim::start(Auth0Config::default())?;
        let gateway = config.gateway_url.trim_end_matches('/');
        auth0.allow_urls(&format!("{gateway}/api/auth/callback"), &format!("{gateway}/"));
        let users = vec![
            TestUser::database("ada", "ada@example.com", "Ada Lovelace"),
            TestUser::google("grace", "grace@example.com", "Grace Hopper"),
        ];
        for u in &users {
            auth0.add_user(u.clone());
        }
        Ok(Self { auth0, users })
    }

    /// Shell-sourceable settings (`SANDBOX_…=…`) describing where everything is.
    #[must_use]
    pub fn env_file(&self) -> String {
        let cfg = Auth0Config::default();
        let mut out = String::new();
        let _ = writeln!(out, "SANDBOX_AUTH0_ISSUER={}", self.auth0.issuer());
        let _ = writeln!(out, "SANDBOX_AUTH0_AUDIENCE={}", self.auth0.audience());
        let _ = writeln!(out, "SANDBOX_AUTH0_CLIENT_ID={}", cfg.client_id);
        let _ = writeln!(out, "SANDBOX_AUTH0_CLIENT_SECRET={}", cfg.client_secret);
        out
    }

    /// A human-readable summary: URLs, credentials and files.
    #[must_use]
    pub fn summary(&self, state_dir: &Path) -> String {
        let cfg = Auth0Config::default();
        let mut out = String::new();
        let _ = writeln!(out, "Auth0 tenant   {}", self.auth0.issuer());
        let _ = writeln!(out, "  audience     {}", self.auth0.audience());
        let _ = writeln!(out, "  client       {} / {}", cfg.client_id, cfg.client_secret);
        for u in &self.users {
            let _ = writeln!(out, "  user         {} <{}> ({})", u.sub, u.email, u.connection);
        }
        let _ = writeln!(out, "Settings       {}", state_dir.join("sandbox.env").display());
        out
    }

    /// Writes the env file (and, as simulators are added, CA bundles and kubeconfigs) under
    /// `dir`.
    ///
    /// # Errors
    /// When the files cannot be written.
    pub fn write_files(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("sandbox.env"), self.env_file())?;
        Ok(())
    }
}
