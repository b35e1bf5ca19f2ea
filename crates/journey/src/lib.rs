//! The signup journey end to end, as a person lives it: every Hopsbridge service runs as its
//! own process against the real Postgres and NATS, and the sandbox stands in for Auth0, Stripe
//! and the Hopsworks clusters.
//!
//! [`Platform::start`] brings everything up and registers the sandbox's clusters through the
//! admin API. A [`Person`] then signs up ([`Platform::sign_up`]), adds a card
//! ([`Platform::add_card`]: a Checkout Session in setup mode, completed in the sandbox, whose
//! signed webhook reaches billing through the gateway) and is given a Hopsworks account
//! ([`Platform::wait_assigned`]). [`Platform::audit`] checks what must hold afterwards, however
//! many faults were on: per person one Stripe customer and one subscription (cancelled ones
//! counted too), one Hopsworks user (deactivated ones counted too), one assignment, one
//! PaymentMethodAddedV1 and one ClusterAssignedV1 on the streams, unless a test names a person
//! whose journey legitimately made more ([`Expected`]); and no cluster over capacity. An owner
//! makes a team through the team API: [`Platform::invite`], and [`Platform::join`] as the
//! invited person does it. [`Platform::secrets`] names every secret the run configured, to scan
//! the services' output, the answers the test received and the events on the streams
//! ([`Platform::transcript`]) for them.
//!
//! [`money`] is the money proof's period close and audit, in the library so that other
//! end-to-end runs (the chaos campaign) can check their invoices with it.
//!
//! The tests (`tests/*.rs`) and the benchmark (`benches/journey.rs`, `just bench journey`)
//! share this harness.

#![allow(clippy::expect_used, clippy::panic, reason = "a test harness fails the test loudly")]

pub mod browser;
pub mod money;

mod audit;
mod settings;

pub use audit::{Audit, ConsumerState, DeadLetterRow, Expected};

use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::{ClusterAssignedV1, Envelope, PaymentMethodAddedV1};
use hopsbridge_sandbox::auth0::{Auth0Config, Auth0Sim, TestUser, TokenSpec};
use hopsbridge_sandbox::stripe::WebhookFaults;
use hopsbridge_sandbox::world::{World, WorldConfig};
use hopsbridge_testkit::{
    GATEWAY_SIGNING_KEY, SecretScan, ServiceProcess, TestBus, TestDb, TestSettings, WEBHOOK_SECRET, free_port,
};
use prost::Message;
use serde_json::{Value, json};
use settings::{journey_provisioning, with_mail};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The encryption key provisioning keeps cluster secrets under (32 bytes, base64).
pub const CLUSTER_KEY: &str = "journey:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The key the gateway seals session cookies with.
const COOKIE_KEY: &str = "the-journey-gateway-seals-session-cookies-with-this";

/// Paths of the service binaries; [`binaries!`] fills them in a test or benchmark of this
/// package.
#[derive(Clone, Copy, Debug)]
pub struct Binaries {
    /// The gateway.
    pub gateway: &'static str,
    /// identity.
    pub identity: &'static str,
    /// team.
    pub team: &'static str,
    /// billing.
    pub billing: &'static str,
    /// provisioning.
    pub provisioning: &'static str,
    /// metering.
    pub metering: &'static str,
}

impl Binaries {
    fn of(&self, service: Service) -> &'static str {
        match service {
            Service::Gateway => self.gateway,
            Service::Identity => self.identity,
            Service::Team => self.team,
            Service::Billing => self.billing,
            Service::Provisioning => self.provisioning,
            Service::Metering => self.metering,
        }
    }
}

/// The service binaries built by this package (use it in its tests and benchmarks).
#[macro_export]
macro_rules! binaries {
    () => {
        $crate::Binaries {
            gateway: env!("CARGO_BIN_EXE_journey-gateway"),
            identity: env!("CARGO_BIN_EXE_journey-identity"),
            team: env!("CARGO_BIN_EXE_journey-team"),
            billing: env!("CARGO_BIN_EXE_journey-billing"),
            provisioning: env!("CARGO_BIN_EXE_journey-provisioning"),
            metering: env!("CARGO_BIN_EXE_journey-metering"),
        }
    };
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Simulated Hopsworks clusters.
    pub clusters: usize,
    /// Users each cluster takes.
    pub capacity: u32,
    /// The services' log filter.
    pub log_filter: &'static str,
    /// actix workers per service.
    pub workers: u16,
    /// metering's window, seconds.
    pub metering_window_secs: u32,
    /// Hopsworks usernames with a lab of running pods on every cluster (`WorldConfig::lab_owners`).
    pub lab_owners: Vec<String>,
    /// Stripe in live mode: the sandbox allows 100 requests a second instead of test mode's
    /// 25, and billing paces itself at 90 instead of its default 20, as a live deployment is
    /// configured.
    pub stripe_live_mode: bool,
    /// Settings a service gets besides the harness's own (which they replace), e.g.
    /// `(Service::Team, "mail.backoff_initial_secs", "3600")`.
    pub settings: Vec<(Service, &'static str, String)>,
    /// The NATS server to use (e.g. a private one a test restarts, `testkit::NatsServer`);
    /// the shared test server when `None`.
    pub nats_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clusters: 2,
            capacity: 50,
            log_filter: "info",
            workers: 1,
            metering_window_secs: 900,
            lab_owners: Vec::new(),
            stripe_live_mode: false,
            settings: Vec::new(),
            nats_url: None,
        }
    }
}

/// A person going through the journey.
#[derive(Clone, Debug)]
pub struct Person {
    /// Who they are in Auth0.
    pub auth0: TestUser,
    /// Their access token.
    pub token: String,
    /// Their Hopsbridge user id.
    pub user_id: Uuid,
}

/// An invitation as the inviting owner was answered.
#[derive(Clone, Debug)]
pub struct Invitation {
    /// Its id.
    pub id: String,
    /// The link its mail carries, `<public base URL>/invitations/<token>`.
    pub link: String,
    /// The link's token.
    pub token: String,
}

/// Polls `check` until it answers `Some`, for at most `timeout`, and answers what it found;
/// fails the test naming `what` when it never does.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything, running.
#[derive(Debug)]
pub struct Platform {
    /// The sandbox: Auth0, Stripe, the clusters.
    pub world: World,
    /// The one database (a schema per service).
    pub db: TestDb,
    /// The subject prefix.
    pub bus: TestBus,
    /// The gateway's base URL.
    pub gateway: String,
    /// Provisioning's ids of the sandbox's clusters, in the world's order.
    pub cluster_ids: Vec<Uuid>,
    /// The admin's token.
    pub admin_token: String,
    /// When each user's first ClusterAssignedV1 went by on NATS (for timing; [`Platform::audit`]
    /// counts every one on the stream).
    pub assigned_at: Arc<Mutex<HashMap<Uuid, Instant>>>,
    /// When each user's first PaymentMethodAddedV1 went by on NATS (for timing;
    /// [`Platform::audit`] counts every one on the stream).
    pub card_added_at: Arc<Mutex<HashMap<Uuid, Instant>>>,
    binaries: Binaries,
    answers: Mutex<Vec<(String, String)>>,
    processes: Mutex<BTreeMap<&'static str, ServiceProcess>>,
    env: BTreeMap<&'static str, Vec<(String, String)>>,
    http: reqwest::Client,
    _listener: tokio::task::JoinHandle<()>,
}

/// Each data service's pool in a journey (`database.max_connections`).
const JOURNEY_POOL_SIZE: &str = "3";

const SERVICES: [Service; 6] =
    [Service::Identity, Service::Team, Service::Billing, Service::Provisioning, Service::Metering, Service::Gateway];

impl Platform {
    /// Starts the sandbox, every service as a process, registers the sandbox's clusters and an
    /// admin.
    pub async fn start(binaries: Binaries, options: &Options) -> Self {
        hopsbridge_testkit::init();
        let db = TestDb::new().await;
        let bus = match &options.nats_url {
            Some(url) => TestBus::on(url).await,
            None => TestBus::new().await,
        };
        let ports: BTreeMap<&'static str, u16> = SERVICES.iter().map(|s| (s.name(), free_port())).collect();
        let url = |s: Service| format!("http://127.0.0.1:{}", ports[s.name()]);
        let gateway = url(Service::Gateway);
        let world = World::start(&WorldConfig {
            gateway_url: gateway.clone(),
            clusters: options.clusters,
            lab_owners: options.lab_owners.clone(),
        })
        .expect("sandbox");

        let mut env = BTreeMap::new();
        for service in SERVICES {
            let mut settings = if service == Service::Gateway {
                TestSettings::new(service)
            } else {
                with_mail(TestSettings::data_service(service, &db, &bus), &world, &gateway)
                    .set("shutdown.timeout_secs", "10")
            };
            if service == Service::Provisioning {
                settings = journey_provisioning(&db, &bus, &world, &gateway);
            }
            if service != Service::Gateway {
                // Small pools: two platforms run at once beside the other crates' tests
                // (scripts/test.sh), within Postgres' default 100 connections.
                settings = settings.set("database.max_connections", JOURNEY_POOL_SIZE);
            }
            // Every service's calendar follows the sandbox's clock: real time unless a test moves
            // it (World::advance, set_time, set_rate).
            settings = settings
                .set("http.port", ports[service.name()].to_string())
                .set("http.workers", options.workers.to_string())
                .set("telemetry.log_filter", options.log_filter)
                .clock(&world.clock_url());
            settings = match service {
                Service::Identity => settings.set("webhook.secret", WEBHOOK_SECRET).set("team.url", url(Service::Team)),
                Service::Billing => {
                    let billing = settings
                        .set("stripe.api_base", world.stripe.url())
                        .set("stripe.secret_key", world.stripe.secret_key())
                        .set("stripe.webhook_secret", &world.stripe_webhook_secret)
                        .set("checkout.success_url", format!("{gateway}/billing?added=1"))
                        .set("checkout.cancel_url", format!("{gateway}/billing"))
                        .set("portal.return_url", format!("{gateway}/billing"))
                        .set("metering.url", url(Service::Metering));
                    if options.stripe_live_mode { billing.set("stripe.max_requests_per_second", "90") } else { billing }
                }
                Service::Gateway => {
                    // Browser login as scripts/dev.sh configures it, against the sandbox's
                    // tenant (which allows this gateway's callback and logout URLs).
                    let login = Auth0Config::default();
                    let mut gw = settings
                        .set("auth0.issuer", world.auth0.issuer())
                        .set("login.client_id", login.client_id)
                        .set("login.client_secret", login.client_secret)
                        .set("login.callback_url", format!("{gateway}/api/auth/callback"))
                        .set("login.post_logout_url", format!("{gateway}/"))
                        .set("login.cookie_key", COOKIE_KEY)
                        .set("limits.per_user_per_minute", "100000")
                        .set("limits.per_ip_per_minute", "10000000")
                        .set("limits.caller_cache_secs", "0");
                    for upstream in SERVICES.iter().filter(|s| **s != Service::Gateway) {
                        gw = gw.set(&format!("upstreams.{}", upstream.name()), url(*upstream));
                    }
                    gw
                }
                Service::Metering => {
                    let metering = settings
                        .set("provisioning.url", url(Service::Provisioning))
                        .set("schedule.window_secs", options.metering_window_secs.to_string())
                        .set("schedule.tick_ms", "200");
                    if options.metering_window_secs < 60 {
                        // Seconds-long windows: collected at once, leased briefly, a gap after six windows.
                        metering
                            .set("schedule.settle_secs", "0")
                            .set("schedule.deadline_secs", (options.metering_window_secs * 6).to_string())
                            .set("schedule.lease_secs", "8")
                            .set("schedule.retry_delay_ms", "200")
                    } else {
                        metering
                    }
                }
                Service::Provisioning | Service::Team => settings,
            };
            for (_, key, value) in options.settings.iter().filter(|(s, _, _)| *s == service) {
                settings = settings.set(key, value.as_str());
            }
            env.insert(service.name(), settings.env());
        }

        // Watch PaymentMethodAddedV1 and ClusterAssignedV1 go by, to time each journey's steps.
        let assigned_at = Arc::new(Mutex::new(HashMap::new()));
        let card_added_at = Arc::new(Mutex::new(HashMap::new()));
        let nats = async_nats::connect(bus.url()).await.expect("connect to NATS");
        let mut assigned =
            nats.subscribe(bus.subjects().event::<ClusterAssignedV1>()).await.expect("subscribe to ClusterAssignedV1");
        let mut added = nats
            .subscribe(bus.subjects().event::<PaymentMethodAddedV1>())
            .await
            .expect("subscribe to PaymentMethodAdded");
        let (seen_assigned, seen_added) = (Arc::clone(&assigned_at), Arc::clone(&card_added_at));
        let listener = tokio::spawn(async move {
            use futures::StreamExt;
            let _keep = nats;
            let record = |seen: &Mutex<HashMap<Uuid, Instant>>, user_id: &str, at: Instant| {
                if let Ok(id) = user_id.parse::<Uuid>() {
                    seen.lock().expect("lock").entry(id).or_insert(at);
                }
            };
            loop {
                tokio::select! {
                    Some(msg) = assigned.next() => {
                        let at = Instant::now();
                        let Ok(envelope) = Envelope::decode(msg.payload.as_ref()) else { continue };
                        let Ok(event) = ClusterAssignedV1::decode(envelope.payload.as_slice()) else { continue };
                        record(&seen_assigned, &event.user_id, at);
                    }
                    Some(msg) = added.next() => {
                        let at = Instant::now();
                        let Ok(envelope) = Envelope::decode(msg.payload.as_ref()) else { continue };
                        let Ok(event) = PaymentMethodAddedV1::decode(envelope.payload.as_slice()) else { continue };
                        record(&seen_added, &event.user_id, at);
                    }
                    else => return,
                }
            }
        });

        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        let mut platform = Self {
            world,
            db,
            bus,
            gateway,
            cluster_ids: Vec::new(),
            admin_token: String::new(),
            assigned_at,
            card_added_at,
            binaries,
            answers: Mutex::new(Vec::new()),
            processes: Mutex::new(BTreeMap::new()),
            env,
            http,
            _listener: listener,
        };
        for service in SERVICES {
            platform.start_service(service);
        }
        // Stripe delivers webhooks concurrently and in no particular order.
        platform.world.stripe.set_webhook_faults(WebhookFaults { concurrent: true, ..WebhookFaults::default() });
        if options.stripe_live_mode {
            platform.world.stripe.set_rate_limit(Some(100));
        }
        platform.bootstrap_admin().await;
        platform.register_clusters(options.capacity).await;
        platform
    }

    /// Starts (or restarts) one service's process on its port.
    pub fn start_service(&self, service: Service) {
        let process = ServiceProcess::start(self.binaries.of(service), &self.env[service.name()]);
        self.processes.lock().expect("lock").insert(service.name(), process);
    }

    /// Starts (or restarts) one service's process with `extra` environment variables besides its
    /// settings, e.g. `("HOPSBRIDGE_KILL_POINT", "consumer_committed:provisioning-payment_method_added")`
    /// (a kill point, decision 0065); [`Platform::start_service`] starts it without them again.
    pub fn start_service_with(&self, service: Service, extra: &[(&str, &str)]) {
        let mut env = self.env[service.name()].clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let process = ServiceProcess::start(self.binaries.of(service), &env);
        self.processes.lock().expect("lock").insert(service.name(), process);
    }

    /// Whether `service`'s process has ended by itself (at a kill point, or crashed); its exit
    /// status. `None` while it runs or when it is not started.
    pub fn service_exit(&self, service: Service) -> Option<std::process::ExitStatus> {
        self.processes.lock().expect("lock").get_mut(service.name()).and_then(ServiceProcess::exit_status)
    }

    /// Starts another process of `service`, the same settings on a port of its own, kept as
    /// `name` (a second replica, e.g. two billing processes at once); the gateway keeps
    /// calling the first. [`Platform::kill_replica`] stops it. Answers its base URL.
    pub fn start_replica(&self, service: Service, name: &'static str) -> String {
        let port = hopsbridge_platform::config::env_var(service, "http.port");
        let env: Vec<(String, String)> = self.env[service.name()]
            .iter()
            .map(|(k, v)| if *k == port { (k.clone(), free_port().to_string()) } else { (k.clone(), v.clone()) })
            .collect();
        let process = ServiceProcess::start(self.binaries.of(service), &env);
        let url = process.url();
        let replaced = self.processes.lock().expect("lock").insert(name, process);
        assert!(replaced.is_none(), "a process named {name} was running");
        url
    }

    /// Kills the replica `name` at once (SIGKILL).
    pub fn kill_replica(&self, name: &'static str) {
        drop(self.processes.lock().expect("lock").remove(name));
    }

    /// Each running service's process id.
    pub fn service_pids(&self) -> Vec<(&'static str, u32)> {
        self.processes.lock().expect("lock").iter().map(|(name, p)| (*name, p.pid())).collect()
    }

    /// Every log line a running service's process has printed so far (empty when it is not
    /// running), for a failing test to show what the service saw.
    pub fn service_output(&self, service: Service) -> String {
        self.processes.lock().expect("lock").get_mut(service.name()).map(ServiceProcess::output).unwrap_or_default()
    }

    /// Kills one service's process at once (SIGKILL: no graceful shutdown).
    pub fn kill_service(&self, service: Service) {
        // Dropping a ServiceProcess kills it.
        drop(self.processes.lock().expect("lock").remove(service.name()));
    }

    /// Every secret the run configured: Stripe's secret key and webhook secret, the Auth0
    /// webhook secret, the gateway's caller signing key and each service's own key, the gateway's
    /// login client secret and cookie key,
    /// provisioning's encryption key (as configured and decoded), and each sandbox cluster's
    /// Hopsworks API key and Kubernetes token.
    pub fn secrets(&self) -> SecretScan {
        let (_, key) = CLUSTER_KEY.split_once(':').expect("a named key");
        let mut scan = SecretScan::new()
            .secret("stripe.secret_key", &self.world.stripe.secret_key())
            .secret("stripe.webhook_secret", &self.world.stripe_webhook_secret)
            .secret("webhook.secret (Auth0)", WEBHOOK_SECRET)
            .secret("auth.gateway_signing_key", GATEWAY_SIGNING_KEY)
            .secret("login.client_secret", &Auth0Config::default().client_secret)
            .secret("login.cookie_key", COOKIE_KEY)
            .secret("encryption key journey", key)
            .secret("encryption key journey (decoded)", "0123456789abcdef0123456789abcdef");
        for service in Service::WITH_DATA {
            scan = scan.secret(&format!("auth.service_key ({service})"), hopsbridge_testkit::service_key(service));
        }
        for cluster in &self.world.clusters {
            scan = scan
                .secret(&format!("Hopsworks API key ({})", cluster.name), cluster.hopsworks.api_key())
                .secret(&format!("kubeconfig token ({})", cluster.name), cluster.kubernetes.token());
        }
        scan
    }

    /// What the run wrote so far, labelled: every line each running service printed, the body
    /// of every answer [`Platform::call`] received, and every event on the streams (its
    /// envelope's bytes, in which a string field is as written).
    pub async fn transcript(&self) -> Vec<(String, String)> {
        let mut texts: Vec<(String, String)> = SERVICES
            .iter()
            .flat_map(|s| {
                let output = self.service_output(*s);
                output
                    .lines()
                    .enumerate()
                    .map(|(i, line)| (format!("{} log line {}", s.name(), i + 1), line.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        texts.extend(self.answers.lock().expect("lock").iter().cloned());
        for producer in SERVICES {
            let all = self.bus.subjects().stream_subjects(producer);
            for (i, (subject, payload)) in self.stream_messages(producer, all).await.into_iter().enumerate() {
                texts.push((format!("message {} on {subject}", i + 1), String::from_utf8_lossy(&payload).into_owned()));
            }
        }
        texts
    }

    async fn bootstrap_admin(&mut self) {
        let admin = TestUser::database("journey-admin", "admin@hopsbridge.example", "Journey Admin");
        self.world.auth0.add_user(admin.clone());
        let token = token_for(&self.world.auth0, &admin);
        let (status, me) = self.call("GET", "/api/me", &token, None).await;
        assert_eq!(status, 200, "the admin's first call: {me}");
        let mut conn = self.db.connect("identity").await;
        diesel::sql_query("UPDATE users SET is_admin = true WHERE auth_subject = $1")
            .bind::<Text, _>(&admin.sub)
            .execute(&mut conn)
            .await
            .expect("grant admin");
        self.admin_token = token;
    }

    async fn register_clusters(&mut self, capacity: u32) {
        let mut ids = Vec::new();
        for cluster in &self.world.clusters {
            let body = World::registration(cluster, capacity, "eu-north");
            let (status, answer) = self.call("POST", "/api/admin/clusters", &self.admin_token, Some(body)).await;
            assert_eq!(status, 201, "register {}: {answer}", cluster.name);
            ids.push(answer["id"].as_str().and_then(|s| s.parse().ok()).expect("cluster id"));
        }
        self.cluster_ids = ids;
    }

    /// Calls the public API through the gateway; answers the status and the JSON body (null
    /// when there is none).
    pub async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(method, path, Some(token), body).await
    }

    /// Calls the public API through the gateway as the holder of `token`, or without one
    /// (`None`) as someone who is not signed in; answers as [`Platform::call`] does.
    pub async fn call_as(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let verb = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(verb, format!("{}{path}", self.gateway));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let value = serde_json::from_str(&text).unwrap_or(Value::Null);
                self.answers.lock().expect("lock").push((format!("the answer {status} to {method} {path}"), text));
                (status, value)
            }
            // A service being restarted: the caller retries.
            Err(e) => (0, json!({ "error": e.to_string() })),
        }
    }

    /// Step 1: signs `handle` up in Auth0 (a database connection, so Auth0's post-registration
    /// Action calls identity's webhook through the gateway), then makes their first call.
    pub async fn sign_up(&self, handle: &str) -> Person {
        let auth0 = TestUser::database(handle, &format!("{handle}@example.com"), &format!("Person {handle}"));
        self.world.auth0.add_user(auth0.clone());
        let action = Auth0Sim::post_registration_action(
            &format!("{}/webhooks/auth0/post-registration", self.gateway),
            WEBHOOK_SECRET,
        );
        let fired = action.fire(&self.http, &auth0).await.expect("the post-registration Action");
        assert!(fired == 200 || fired == 201, "post-registration answered {fired}");
        let token = token_for(&self.world.auth0, &auth0);
        let me = self.retry_call("GET", "/api/me", &token).await;
        let user_id = me["id"].as_str().and_then(|s| s.parse().ok()).expect("user id");
        Person { auth0, token, user_id }
    }

    /// Calls until the answer is 2xx (services may be restarting), for at most 60 s.
    pub async fn retry_call(&self, method: &str, path: &str, token: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.call(method, path, token, None).await;
            if (200..300).contains(&status) {
                return body;
            }
            assert!(Instant::now() < deadline, "{method} {path} kept failing: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until billing has stored the person's Stripe customer and subscription.
    pub async fn wait_billing_account(&self, person: &Person, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut conn = self.db.connect("billing").await;
            let row: Option<Ids> = diesel::sql_query(
                "SELECT stripe_customer_id AS a, stripe_subscription_id AS b FROM accounts WHERE user_id = $1",
            )
            .bind::<diesel::sql_types::Uuid, _>(person.user_id)
            .get_result(&mut conn)
            .await
            .ok();
            if row.is_some_and(|r| r.a.is_some() && r.b.is_some()) {
                return;
            }
            assert!(Instant::now() < deadline, "no Stripe customer and subscription for {}", person.auth0.email);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The people whose billing account has its Stripe customer and subscription, read in one
    /// query (for a harness waiting on many people at once).
    pub async fn billing_ready(&self) -> HashSet<Uuid> {
        let mut conn = self.db.connect("billing").await;
        let rows: Vec<UserId> = diesel::sql_query(
            "SELECT user_id FROM accounts WHERE stripe_customer_id IS NOT NULL AND stripe_subscription_id IS NOT NULL",
        )
        .load(&mut conn)
        .await
        .unwrap_or_default();
        rows.into_iter().map(|r| r.user_id).collect()
    }

    /// Step 2: asks billing for a Checkout Session in setup mode and completes it in the
    /// sandbox as the person would; Stripe then sends its signed webhooks. Answers when the
    /// sandbox accepted the card.
    pub async fn add_card(&self, person: &Person) -> Instant {
        let session = self.retry_call("POST", "/api/billing/payment-method", &person.token).await;
        let id = session["id"].as_str().expect("checkout session id").to_owned();
        assert!(session["url"].as_str().is_some_and(|u| u.starts_with("http")), "{session}");
        let at = Instant::now();
        self.world.stripe.complete_checkout_session(&id).expect("complete the checkout session");
        at
    }

    /// Step 3: waits until `GET /api/cluster` shows a complete assignment; answers it.
    pub async fn wait_assigned(&self, person: &Person, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.call("GET", "/api/cluster", &person.token, None).await;
            if status == 200 && body["status"] == "complete" {
                return body;
            }
            assert!(Instant::now() < deadline, "{} not assigned: {status} {body}", person.auth0.email);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `owner` invites `email` into their team with `project_role` (`Data owner` or `Data
    /// scientist`) through `POST /api/team/invitations`; answers the invitation and its link.
    pub async fn invite(&self, owner: &Person, email: &str, project_role: &str) -> Invitation {
        let body = json!({ "email": email, "project_role": project_role });
        let (status, issued) = self.call("POST", "/api/team/invitations", &owner.token, Some(body)).await;
        assert_eq!(status, 201, "{} invites {email}: {issued}", owner.auth0.email);
        let link = issued["link"].as_str().expect("the invitation's link").to_owned();
        let token = link.rsplit('/').next().expect("the link's token").to_owned();
        let id = issued["invitation"]["id"].as_str().expect("the invitation's id").to_owned();
        Invitation { id, link, token }
    }

    /// `person` opens the invitation link of `token` as the console does, reading its preview
    /// without signing in (`GET /api/invitations/{token}`), and accepts it signed in with the
    /// terms version the preview names; answers the membership.
    pub async fn join(&self, person: &Person, token: &str) -> Value {
        let (status, preview) = self.call_as("GET", &format!("/api/invitations/{token}"), None, None).await;
        assert_eq!(status, 200, "the preview of {}'s invitation: {preview}", person.auth0.email);
        let terms = json!({ "accept_terms": true, "terms_version": preview["terms_version"] });
        let (status, membership) =
            self.call("POST", &format!("/api/invitations/{token}/accept"), &person.token, Some(terms)).await;
        assert_eq!(status, 200, "{} accepts: {membership}", person.auth0.email);
        membership
    }

    /// metering's samples of `person`'s usage in windows starting today (UTC, on the sandbox's
    /// clock), as an admin reads them (`GET /api/admin/usage/samples`).
    pub async fn samples_today(&self, person: &Person) -> Vec<Value> {
        let today = chrono::DateTime::from_timestamp(self.world.clock.now(), 0).unwrap_or_default().date_naive();
        let path = format!("/api/admin/usage/samples?user_id={}&day={today}", person.user_id);
        let (status, samples) = self.call("GET", &path, &self.admin_token, None).await;
        assert_eq!(status, 200, "{samples}");
        samples.as_array().expect("a list of samples").clone()
    }

    /// Every message on `producer`'s stream whose subject matches `filter` (wildcards allowed),
    /// in the stream's order: its subject and its raw payload (the envelope).
    async fn stream_messages(&self, producer: Service, filter: String) -> Vec<(String, Vec<u8>)> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        use futures::StreamExt;
        let js = self.bus.jetstream().await;
        let Ok(stream) = js.get_stream(self.bus.subjects().stream(producer)).await else {
            return Vec::new();
        };
        let Ok(counts) = stream.info_with_subjects(&filter).await else {
            return Vec::new();
        };
        let expected: usize =
            counts.filter_map(|r| async move { r.ok() }).map(|(_, n)| n).collect::<Vec<_>>().await.iter().sum();
        if expected == 0 {
            return Vec::new();
        }
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: DeliverPolicy::All,
                ..OrderedConfig::default()
            })
            .await
            .expect("an ordered consumer");
        let mut messages = consumer.messages().await.expect("the stream's messages");
        let mut read = Vec::with_capacity(expected);
        while read.len() < expected {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .unwrap_or_else(|_| panic!("{} of {expected} messages on {filter} read", read.len()))
                .expect("the stream ended")
                .expect("a message");
            read.push((message.subject.to_string(), message.payload.to_vec()));
        }
        read
    }
}
fn token_for(auth0: &Auth0Sim, user: &TestUser) -> String {
    auth0.access_token(&TokenSpec::user(user)).expect("access token")
}

#[derive(QueryableByName)]
struct UserId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    user_id: Uuid,
}

#[derive(QueryableByName)]
struct Ids {
    #[diesel(sql_type = Nullable<Text>)]
    a: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    b: Option<String>,
}
