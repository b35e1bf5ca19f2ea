//! The whole simulated outside world in one value, as the `hopsbridge-sandbox` binary and
//! end-to-end tests start it, with a small demo population.

use crate::auth0::{Auth0Config, Auth0Sim, TestUser};
use crate::hopsworks::{HopsworksConfig, HopsworksSim};
use std::fmt::Write as _;
use std::path::Path;

/// What to start.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// The gateway's public URL, whose callback and logout URLs Auth0 must allow.
    pub gateway_url: String,
    /// How many clusters to simulate.
    pub clusters: usize,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self { gateway_url: "http://127.0.0.1:8080".to_owned(), clusters: 2 }
    }
}

/// One simulated Hopsworks cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Its name, e.g. `eu-1`.
    pub name: String,
    /// Its Hopsworks admin API.
    pub hopsworks: HopsworksSim,
}

/// Every simulator, running.
#[derive(Debug)]
pub struct World {
    /// The Auth0 tenant.
    pub auth0: Auth0Sim,
    /// The demo people registered in the tenant.
    pub users: Vec<TestUser>,
    /// The clusters.
    pub clusters: Vec<Cluster>,
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
        let client_id = Auth0Config::default().client_id;
        let clusters = (1..=config.clusters)
            .map(|i| {
                let name = format!("eu-{i}");
                let api_key = format!("hw-admin-key-{i}-{}", uuid::Uuid::new_v4().simple());
                let hopsworks = HopsworksSim::start(HopsworksConfig::new(&name, &api_key, &client_id))?;
                Ok(Cluster { name, hopsworks })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { auth0, users, clusters })
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
        let _ = writeln!(
            out,
            "SANDBOX_CLUSTERS=\"{}\"",
            self.clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(" ")
        );
        for c in &self.clusters {
            let key = c.name.to_uppercase().replace('-', "_");
            let _ = writeln!(out, "SANDBOX_{key}_HOPSWORKS_URL={}", c.hopsworks.origin());
            let _ = writeln!(out, "SANDBOX_{key}_HOPSWORKS_API_KEY={}", c.hopsworks.api_key());
            let _ = writeln!(out, "SANDBOX_{key}_HOPSWORKS_CA=${{SANDBOX_DIR}}/{}-hopsworks-ca.pem", c.name);
        }
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
        for c in &self.clusters {
            let _ = writeln!(out, "Cluster        {}", c.name);
            let _ = writeln!(out, "  hopsworks    {} (ApiKey {})", c.hopsworks.url(), c.hopsworks.api_key());
            let _ =
                writeln!(out, "  CA bundle    {}", state_dir.join(format!("{}-hopsworks-ca.pem", c.name)).display());
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
        let absolute = std::path::absolute(dir)?;
        let env = self.env_file().replace("${SANDBOX_DIR}", &absolute.display().to_string());
        std::fs::write(dir.join("sandbox.env"), env)?;
        for c in &self.clusters {
            std::fs::write(dir.join(format!("{}-hopsworks-ca.pem", c.name)), c.hopsworks.ca_pem())?;
        }
        Ok(())
    }
}
