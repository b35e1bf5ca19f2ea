//! The whole simulated outside world in one value, as the `hopsbridge-sandbox` binary and
//! end-to-end tests start it, with a small demo population.

use crate::auth0::{Auth0Config, Auth0Sim, TestUser};
use crate::clock::{ClockServer, REAL_TIME_RATE_MILLI, SimClock};
use crate::hopsworks::{HopsworksConfig, HopsworksSim};
use crate::kubernetes::{KubeCluster, KubeOptions};
use crate::mail::MailSim;
use crate::stripe::{StripeConfig, StripeSim};
use crate::workload::{MemFormat, Profile, SimContainer, SimPod, Workload, WorkloadConfig};
use std::path::Path;
use std::sync::Arc;

/// The password the demo database user (ada@) logs in with on the tenant's login page.
pub const DEMO_PASSWORD: &str = "Sandbox-ada-1815";

/// What to start.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// The gateway's public URL, whose callback and logout URLs Auth0 must allow.
    pub gateway_url: String,
    /// How many clusters to simulate.
    pub clusters: usize,
    /// Hopsworks usernames whose owners run a project of their own on every cluster: when
    /// provisioning makes the account, the project `<username>_lab` (namespace `<username>-lab`)
    /// is created with it, and its pods ([`lab_pods`]) run there from the start. The defaults are
    /// the usernames the demo people (ada@, grace@) get.
    pub lab_owners: Vec<String>,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            gateway_url: "http://127.0.0.1:8080".to_owned(),
            clusters: 2,
            lab_owners: vec!["ada10000".to_owned(), "gra10000".to_owned()],
        }
    }
}

/// The events the gateway's Stripe endpoint is registered for (its `enabled_events`), as an
/// operator registers it: exactly the ones billing handles (billing's tests check the two
/// lists agree), so Stripe does not deliver, and retry, events billing would refuse.
pub const STRIPE_ENDPOINT_EVENTS: [&str; 10] = [
    "checkout.session.completed",
    "setup_intent.succeeded",
    "payment_method.attached",
    "payment_method.detached",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.created",
    "invoice.paid",
    "invoice.payment_failed",
];

/// CPU of a lab's notebook pod, nanocores (500m), and its working set (1 GiB).
pub const LAB_NOTEBOOK_CPU_NANOCORES: u64 = 500_000_000;
/// Working set of a lab's notebook pod, bytes.
pub const LAB_NOTEBOOK_MEMORY_BYTES: u64 = 1 << 30;
/// CPU of a lab's training pod, nanocores (250m); it also holds one GPU.
pub const LAB_TRAINING_CPU_NANOCORES: u64 = 250_000_000;
/// Working set of a lab's training pod, bytes (512 MiB).
pub const LAB_TRAINING_MEMORY_BYTES: u64 = 512 << 20;

/// The steady pods of `username`'s lab, running since `since`: a notebook, and a training job
/// holding one GPU.
#[must_use]
pub fn lab_pods(username: &str, since: i64) -> Vec<SimPod> {
    let namespace = format!("{username}-lab");
    let pod = |name: &str, cpu: u64, memory: u64, gpus: u64| SimPod {
        namespace: namespace.clone(),
        name: format!("{name}-{username}"),
        uid: format!("uid-{namespace}-{name}"),
        labels: [("owner".to_owned(), username.to_owned())].into(),
        node: "node-1".to_owned(),
        created: since - 10,
        started: since,
        finished: None,
        deleted: None,
        containers: vec![SimContainer {
            name: "main".to_owned(),
            image: "docker.hops.works/python:4.1.0".to_owned(),
            cpu_request_millis: 1000,
            memory_request_bytes: 2 << 30,
            gpus,
            profile: Profile::Steady { cpu_nanocores: cpu, memory_bytes: memory },
            memory_format: MemFormat::Mebi,
        }],
    };
    vec![
        pod("notebook", LAB_NOTEBOOK_CPU_NANOCORES, LAB_NOTEBOOK_MEMORY_BYTES, 0),
        pod("training", LAB_TRAINING_CPU_NANOCORES, LAB_TRAINING_MEMORY_BYTES, 1),
    ]
}

/// One simulated Hopsworks cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Its name, e.g. `eu-1`.
    pub name: String,
    /// Its Hopsworks admin API.
    pub hopsworks: HopsworksSim,
    /// Its Kubernetes API server and metrics, over a generated workload.
    pub kubernetes: KubeCluster,
}

/// Every simulator, running.
#[derive(Debug)]
pub struct World {
    /// The Auth0 tenant.
    pub auth0: Auth0Sim,
    /// The demo people registered in the tenant.
    pub users: Vec<TestUser>,
    /// Stripe.
    pub stripe: StripeSim,
    /// The signing secret of the Stripe webhook endpoint registered at the gateway's
    /// `/webhooks/stripe` (billing verifies deliveries with it).
    pub stripe_webhook_secret: String,
    /// The clusters.
    pub clusters: Vec<Cluster>,
    /// The mail catcher every service sends through, and the admin alert webhook.
    pub mail: MailSim,
    /// The simulated clock: the clusters' workloads and Stripe run on it and the services
    /// follow it ([`World::clock_url`]). It starts at the wall clock's time and runs at real
    /// time until a test moves it ([`World::set_time`], [`World::advance`], [`World::set_rate`]).
    pub clock: Arc<SimClock>,
    /// The clock served over HTTP.
    pub clock_server: ClockServer,
}

impl World {
    /// Starts every simulator and seeds the demo population.
    ///
    /// # Errors
    /// When a simulator cannot start.
    pub fn start(config: &WorldConfig) -> anyhow::Result<Self> {
        // The Password grant lets a person get a bearer token for curl in local development.
        let auth0 = Auth0Sim::start(Auth0Config { password_grant: true, ..Auth0Config::default() })?;
        let gateway = config.gateway_url.trim_end_matches('/');
        auth0.allow_urls(&format!("{gateway}/api/auth/callback"), &format!("{gateway}/"));
        let users = vec![
            TestUser::database("ada", "ada@example.com", "Ada Lovelace"),
            TestUser::google("grace", "grace@example.com", "Grace Hopper"),
        ];
        for u in &users {
            if u.connection == "google-oauth2" {
                auth0.add_user(u.clone());
            } else {
                auth0.add_user_with_password(u.clone(), DEMO_PASSWORD);
            }
        }
        let client_id = Auth0Config::default().client_id;
        let clock = Arc::new(SimClock::running(chrono::Utc::now().timestamp_micros(), REAL_TIME_RATE_MILLI));
        // Stripe's periods, invoices and meter event windows run on the World's calendar.
        let stripe = StripeSim::start_with_clock(StripeConfig::default(), Arc::clone(&clock))?;
        // Stripe delivers its events to the gateway, which forwards them to billing.
        let stripe_webhook_secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());
        stripe.add_webhook_endpoint_for(
            &format!("{gateway}/webhooks/stripe"),
            &stripe_webhook_secret,
            &STRIPE_ENDPOINT_EVENTS,
        );
        let now = clock.now();
        let clock_server = ClockServer::start(Arc::clone(&clock))?;
        let clusters = (1..=config.clusters)
            .map(|i| {
                let name = format!("eu-{i}");
                let api_key = format!("hw-admin-key-{i}-{}", uuid::Uuid::new_v4().simple());
                let mut hopsworks_config = HopsworksConfig::new(&name, &api_key, &client_id);
                hopsworks_config.projects_on_signup =
                    config.lab_owners.iter().map(|u| (u.clone(), format!("{u}_lab"))).collect();
                let hopsworks = HopsworksSim::start(hopsworks_config)?;
                // A small demo population: a few users with steady and bursty projects, for a week.
                let workload = Workload::generate(&WorkloadConfig {
                    seed: u64::try_from(i).unwrap_or(1),
                    users: 4,
                    projects_per_user: 2,
                    long_running_pods: 24,
                    short_lived_pods: 40,
                    start: now - 3600,
                    horizon_secs: 7 * 86_400,
                    ..WorkloadConfig::default()
                });
                let mut pods = workload.pods().to_vec();
                pods.extend(config.lab_owners.iter().flat_map(|u| lab_pods(u, now - 3600)));
                let workload = Workload::new(workload.projects().to_vec(), pods);
                let kubernetes =
                    KubeCluster::start(&name, Arc::new(workload), Arc::clone(&clock), KubeOptions::default())?;
                Ok(Cluster { name, hopsworks, kubernetes })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mail = MailSim::start()?;
        Ok(Self { auth0, users, stripe, stripe_webhook_secret, clusters, mail, clock, clock_server })
    }

    /// What an admin sends provisioning to register `cluster` (`POST /api/admin/clusters`).
    #[must_use]
    pub fn registration(cluster: &Cluster, capacity: u32, region: &str) -> serde_json::Value {
        serde_json::json!({
            "name": cluster.name,
            "api_url": cluster.hopsworks.origin(),
            "api_key": cluster.hopsworks.api_key(),
            "kubeconfig": cluster.kubernetes.kubeconfig(),
            "ca_bundle": cluster.hopsworks.ca_pem(),
            "oauth_client_id": cluster.hopsworks.oauth_client_id(),
            "capacity": capacity,
            "region": region,
            "status": "active",
        })
    }

    /// Plays the operator for local development: registers every cluster with provisioning's
    /// admin API at `provisioning` (as an admin, signing with the key the services share),
    /// waiting for provisioning to answer. A cluster of the same name registered by an earlier
    /// run (whose sandbox had other addresses and keys) is updated to this one's.
    ///
    /// # Errors
    /// When provisioning refuses a cluster, or does not answer within `patience`.
    pub async fn register_clusters_with(
        &self,
        provisioning: &str,
        key: &hopsbridge_platform::caller::CallerSigner,
        patience: std::time::Duration,
    ) -> anyhow::Result<()> {
        use hopsbridge_platform::caller::{Caller, Role};
        let admin = Caller {
            subject: "sandbox|operator".to_owned(),
            issuer: None,
            user_id: None,
            roles: vec![Role::User, Role::Admin],
            email: None,
        };
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
        let base = provisioning.trim_end_matches('/');
        let send = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
            let mut request = http.request(method.clone(), format!("{base}{path}"));
            let body = body.map(|b| b.to_string().into_bytes());
            let now = chrono::Utc::now().timestamp();
            for (name, value) in
                key.sign_with_body(method.as_str(), &path, body.as_deref().unwrap_or_default(), &admin, now)
            {
                request = request.header(name, value);
            }
            if let Some(body) = body {
                request = request.header("content-type", "application/json").body(body);
            }
            request.send()
        };
        let deadline = tokio::time::Instant::now() + patience;
        for cluster in &self.clusters {
            let body = Self::registration(cluster, 100, "local");
            loop {
                match send(reqwest::Method::POST, "/api/admin/clusters".to_owned(), Some(body.clone())).await {
                    Ok(r) if r.status() == 201 => break,
                    Ok(r) if r.status() == 409 => {
                        let listed = send(reqwest::Method::GET, "/api/admin/clusters".to_owned(), None).await?;
                        let clusters: Vec<serde_json::Value> = listed.json().await?;
                        let id = clusters
                            .iter()
                            .find(|c| c["name"] == cluster.name.as_str())
                            .and_then(|c| c["id"].as_str())
                            .ok_or_else(|| anyhow::anyhow!("{}: taken, but not listed", cluster.name))?
                            .to_owned();
                        let patched =
                            send(reqwest::Method::PATCH, format!("/api/admin/clusters/{id}"), Some(body.clone()))
                                .await?;
                        anyhow::ensure!(
                            patched.status() == 200,
                            "{}: update answered {}",
                            cluster.name,
                            patched.status()
                        );
                        break;
                    }
                    Ok(r) if r.status().is_client_error() => {
                        anyhow::bail!("{}: provisioning answered {}", cluster.name, r.status());
                    }
                    _ if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    _ => anyhow::bail!("provisioning did not answer at {base}"),
                }
            }
        }
        Ok(())
    }

    /// Where the services read the simulated clock (`clock.follow_url`).
    #[must_use]
    pub fn clock_url(&self) -> String {
        self.clock_server.url()
    }

    /// Jumps the simulated clock forward to `at` (never back: the services' clocks hold until
    /// the simulated time passes what they have shown).
    pub fn set_time(&self, at: chrono::DateTime<chrono::Utc>) {
        self.clock.set_micros(at.timestamp_micros().max(self.clock.now_micros()));
    }

    /// Jumps the simulated clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        self.clock.advance_micros(i64::try_from(by.as_micros()).unwrap_or(i64::MAX));
    }

    /// Runs the simulated clock at `rate_milli` thousandths of real time (1000: real time,
    /// 60000: an hour a minute, 0: standing still).
    pub fn set_rate(&self, rate_milli: u32) {
        self.clock.set_rate(rate_milli);
    }

    /// Puts the simulated clock back on the wall clock: at the wall clock's time (if that is
    /// ahead), at real time.
    pub fn follow_real_time(&self) {
        self.set_time(chrono::Utc::now());
        self.clock.set_rate(REAL_TIME_RATE_MILLI);
    }

    /// Shell-sourceable settings (`SANDBOX_…=…`) describing where everything is.
    #[must_use]
    pub fn env_file(&self) -> String {
        let cfg = Auth0Config::default();
        let names: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        let mut lines = vec![
            format!("SANDBOX_AUTH0_ISSUER={}", self.auth0.issuer()),
            format!("SANDBOX_AUTH0_AUDIENCE={}", self.auth0.audience()),
            format!("SANDBOX_AUTH0_CLIENT_ID={}", cfg.client_id),
            format!("SANDBOX_AUTH0_CLIENT_SECRET={}", cfg.client_secret),
            format!("SANDBOX_AUTH0_ADMIN_CLIENT_ID={}", crate::auth0::ADMIN_CLIENT_ID),
            format!("SANDBOX_AUTH0_ADMIN_CLIENT_SECRET={}", crate::auth0::ADMIN_CLIENT_SECRET),
            format!("SANDBOX_STRIPE_URL={}", self.stripe.url()),
            format!("SANDBOX_STRIPE_SECRET_KEY={}", self.stripe.secret_key()),
            format!("SANDBOX_STRIPE_WEBHOOK_SECRET={}", self.stripe_webhook_secret),
            format!("SANDBOX_CLUSTERS=\"{}\"", names.join(" ")),
            format!("SANDBOX_SMTP_URL={}", self.mail.smtp_url()),
            format!("SANDBOX_MAIL_INBOX_URL={}", self.mail.url()),
            format!("SANDBOX_ALERT_WEBHOOK_URL={}", self.mail.webhook_url()),
            format!("SANDBOX_CLOCK_URL={}", self.clock_url()),
        ];
        for c in &self.clusters {
            let key = c.name.to_uppercase().replace('-', "_");
            lines.push(format!("SANDBOX_{key}_HOPSWORKS_URL={}", c.hopsworks.origin()));
            lines.push(format!("SANDBOX_{key}_HOPSWORKS_API_KEY={}", c.hopsworks.api_key()));
            lines.push(format!("SANDBOX_{key}_HOPSWORKS_CA=${{SANDBOX_DIR}}/{}-hopsworks-ca.pem", c.name));
            lines.push(format!("SANDBOX_{key}_KUBERNETES_URL={}", c.kubernetes.url()));
            lines.push(format!("SANDBOX_{key}_KUBECONFIG=${{SANDBOX_DIR}}/{}-kubeconfig.yaml", c.name));
        }
        lines.join("\n") + "\n"
    }

    /// A human-readable summary: URLs, credentials and files.
    #[must_use]
    pub fn summary(&self, state_dir: &Path) -> String {
        let cfg = Auth0Config::default();
        let file = |name: String| state_dir.join(name).display().to_string();
        let mut lines = vec![
            format!("Auth0 tenant   {}", self.auth0.issuer()),
            format!("  audience     {}", self.auth0.audience()),
            format!("  client       {} / {}", cfg.client_id, cfg.client_secret),
        ];
        for u in &self.users {
            let password = if u.connection == "google-oauth2" {
                " (Continue with Google on the login page)".to_owned()
            } else {
                format!(", password {DEMO_PASSWORD}")
            };
            lines.push(format!("  user         {} <{}> ({}){password}", u.sub, u.email, u.connection));
        }
        lines.push(format!("Stripe         {} (secret key {})", self.stripe.url(), self.stripe.secret_key()));
        lines.push(format!(
            "  webhooks     to the gateway's /webhooks/stripe, signed with {}",
            self.stripe_webhook_secret
        ));
        for c in &self.clusters {
            lines.push(format!("Cluster        {}", c.name));
            lines.push(format!("  hopsworks    {} (ApiKey {})", c.hopsworks.url(), c.hopsworks.api_key()));
            lines.push(format!("  CA bundle    {}", file(format!("{}-hopsworks-ca.pem", c.name))));
            lines.push(format!(
                "  kubernetes   {} ({} pods in the workload)",
                c.kubernetes.url(),
                c.kubernetes.workload().pods().len()
            ));
            lines.push(format!("  kubeconfig   {}", file(format!("{}-kubeconfig.yaml", c.name))));
        }
        lines.push(format!("Mail           SMTP {}", self.mail.smtp_url()));
        lines.push(format!("  inbox        {}/api/v1/messages", self.mail.url()));
        lines.push(format!("  alerts       {} (admin alert webhook, Slack's format)", self.mail.webhook_url()));
        lines.push(format!(
            "Clock          {} (GET to read, POST to move forward or change the rate)",
            self.clock_url()
        ));
        lines.push(format!("Settings       {}", file("sandbox.env".to_owned())));
        lines.join("\n") + "\n"
    }

    /// Writes the env file and each cluster's Hopsworks CA bundle and kubeconfig under `dir`.
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
            std::fs::write(dir.join(format!("{}-kubeconfig.yaml", c.name)), c.kubernetes.kubeconfig())?;
        }
        Ok(())
    }
}
