//! The chaos campaign (issue 20, decision 0066): every service as its own process, Postgres,
//! a private NATS server and the sandbox; people sign up, add a card, get a cluster and run
//! their labs over the last simulated days of a month while a seeded monkey kills every service
//! again and again (SIGKILL at random moments), restarts NATS, takes the run's database away
//! (every connection of the run's database terminated and new ones refused for a moment, which
//! is what a Postgres restart is to the services, without disturbing other tests on the shared
//! server), and injects Stripe, Hopsworks and Kubernetes faults. Every named kill point (the
//! platform's `consumer_committed:<consumer>`, right after a consumer's commit and before its
//! acknowledgement, decision 0065) of every consumer the campaign's traffic reaches is armed
//! from the start, through every restart, until the process is seen to abort there.
//!
//! The audit at the end counts, and the test fails unless each is zero: per person anything
//! but exactly one Stripe customer, subscription, Hopsworks account, assignment,
//! PaymentMethodAdded and ClusterAssigned message; metering's samples missing from billing's
//! ledger, there more than once or with other quantities, and owners whose billed usage differs
//! from their samples' sum; outbox rows never published; dead letters without an explanation;
//! kill points never reached, and consumers the traffic reached that have none. Then the
//! people's billing period closes in the sandbox's Stripe and the money audit
//! (`hopsbridge_journey::money`) counts invoices differing, to the cent, from the ledger's cost
//! and from the samples × the prices in force, and owner-days reported twice or missed
//! (billing's reports, Stripe's meter events and its meter event summaries); person-days of
//! work on which metering attributed no CPU of the person's lab to them on their cluster (so
//! the ledger's checks cannot pass against no usage).
//! It prints the seed (`CHAOS_SEED=<n>` repeats a run's choices), the faults injected by kind,
//! the kill points reached and these counts.
//!
//! `cargo test -p hopsbridge-journey --test chaos` runs the short form (few people, two days,
//! three kills of each service); `just chaos` the long form (`--ignored`): twenty people over
//! five days, every service killed at least twenty times.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "a test; the campaign prints its seed and its counts"
)]

use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::TryStreamExt as _;
use hopsbridge_contracts::events::{
    ClusterAssignedV1, PaymentMethodAddedV1, ProjectsCountedV1, StorageRecordedV1, UsageRecordedV1, UserCreatedV1,
};
use hopsbridge_contracts::{Event, Service};
use hopsbridge_journey::money::{self, Kind, Owner, Period};
use hopsbridge_journey::{Options, Person, Platform, binaries, wait_for};
use hopsbridge_sandbox::auth0::{Auth0Sim, TestUser, TokenSpec};
use hopsbridge_sandbox::hopsworks::Route;
use hopsbridge_sandbox::kubernetes::Faults as KubeFaults;
use hopsbridge_sandbox::stripe::WebhookFaults;
use hopsbridge_testkit::{NatsServer, WEBHOOK_SECRET};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// metering's window, seconds of the World's clock.
const WINDOW: u32 = 30;
/// The World's clock while people work: 30× real time, one window a second.
const RATE: u32 = 30_000;
/// How long an effect may take on a loaded two-core machine with services dying around it.
const PATIENCE: Duration = Duration::from_secs(240);
/// Simulated minutes of work each day, from ten in the morning.
const WORK_MINUTES: i64 = 10;
/// The services, every one of which the monkey kills.
const SERVICES: [Service; 6] =
    [Service::Gateway, Service::Identity, Service::Team, Service::Billing, Service::Provisioning, Service::Metering];

/// metering's storage window (`storage.window_secs`): two in each day's work.
const STORAGE_WINDOW: u32 = 300;

/// The named kill points the campaign arms, `consumer_committed:<consumer>` (decision 0065):
/// every consumer of an event the campaign's traffic makes (signups, cards, clusters, labs at
/// work), by service.
fn kill_points() -> Vec<(Service, String)> {
    fn point<E: Event>(service: Service) -> (Service, String) {
        (service, format!("{}-{}", service.name(), E::TOKEN))
    }
    vec![
        point::<UserCreatedV1>(Service::Billing),
        point::<UserCreatedV1>(Service::Provisioning),
        point::<UserCreatedV1>(Service::Team),
        point::<PaymentMethodAddedV1>(Service::Billing),
        point::<PaymentMethodAddedV1>(Service::Provisioning),
        point::<ClusterAssignedV1>(Service::Metering),
        point::<ClusterAssignedV1>(Service::Team),
        point::<ProjectsCountedV1>(Service::Billing),
        point::<UsageRecordedV1>(Service::Billing),
        point::<UsageRecordedV1>(Service::Team),
        point::<StorageRecordedV1>(Service::Billing),
    ]
}

/// How big a campaign is.
#[derive(Clone, Copy, Debug)]
struct Campaign {
    people: usize,
    days: i64,
    /// SIGKILLs (or kill points reached) per service, at least.
    kills_per_service: u32,
    nats_restarts: u32,
    postgres_restarts: u32,
}

/// The short form, a normal test: a few people, two days, a few of every fault.
const SHORT: Campaign = Campaign { people: 4, days: 2, kills_per_service: 3, nats_restarts: 1, postgres_restarts: 1 };

/// The long form (`just chaos`).
const LONG: Campaign = Campaign { people: 20, days: 5, kills_per_service: 20, nats_restarts: 3, postgres_restarts: 3 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_campaign_loses_and_duplicates_nothing() {
    run(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the long form, minutes long: `just chaos`"]
async fn the_chaos_campaign() {
    run(LONG).await;
}

async fn run(campaign: Campaign) {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    eprintln!("chaos campaign {campaign:?}, seed {seed} (CHAOS_SEED={seed} repeats its choices)");
    let started = Instant::now();
    let nats = NatsServer::start().await;
    let handles: Vec<String> = (0..campaign.people).map(handle).collect();
    let mut settings: Vec<_> =
        Service::WITH_DATA.iter().map(|s| (*s, "events.ack_wait_secs", "5".to_owned())).collect();
    // A killed consumer's batch comes back after five seconds, not thirty; storage prices of
    // their own (the money audit tells invoice lines apart by unit amount).
    settings.extend(money::settings());
    settings.push((Service::Metering, "storage.window_secs", STORAGE_WINDOW.to_string()));
    let options = Options {
        clusters: 2,
        capacity: 50,
        metering_window_secs: WINDOW,
        lab_owners: handles.iter().map(|h| format!("{h}10000")).collect(),
        log_filter: "warn",
        nats_url: Some(nats.url()),
        settings,
        ..Options::default()
    };
    let platform = Arc::new(Platform::start(binaries!(), &options).await);
    let world = &platform.world;
    // The people work on the last `days` days of a month, which ends their first billing
    // period (subscriptions are anchored at the 1st of the next month); they sign up the day
    // before, with the clock at real time.
    let period_end = money::next_month(Utc::now() + TimeDelta::days(campaign.days + 2));
    let first = period_end - TimeDelta::days(campaign.days) + TimeDelta::hours(10);
    let setup_at = first - TimeDelta::days(1);
    world.set_time(setup_at);
    // Stripe delivers twice, out of order and at once, and retries a failed delivery for
    // minutes (as Stripe does for days), not the sandbox's default second.
    world.stripe.set_webhook_faults(WebhookFaults {
        duplicate: true,
        out_of_order: true,
        concurrent: true,
        max_attempts: 12,
        backoff: Duration::from_millis(250),
        ..WebhookFaults::default()
    });
    // What the consumers had delivered when the platform settled after its start (clusters
    // registered, the admin made): traffic before the campaign's.
    let mut delivered_before = deliveries(&platform).await;
    let settle = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = deliveries(&platform).await;
        if now == delivered_before || Instant::now() > settle {
            break;
        }
        delivered_before = now;
    }
    eprintln!("platform up after {:?}", started.elapsed());

    let done = Arc::new(AtomicBool::new(false));
    let mut pending: HashMap<Service, Vec<String>> = HashMap::new();
    for (service, consumer) in kill_points() {
        pending.entry(service).or_default().push(consumer);
    }
    let monkey = Monkey {
        platform: Arc::clone(&platform),
        nats,
        rng: StdRng::seed_from_u64(seed),
        campaign,
        kills: BTreeMap::new(),
        faults: BTreeMap::new(),
        armed: HashSet::new(),
        pending,
        reached: kill_points().into_iter().map(|(_, c)| (c, 0)).collect(),
        stripe_hold: None,
    };
    let armed = Arc::new(AtomicBool::new(false));
    let monkey = tokio::spawn(monkey.run(Arc::clone(&done), Arc::clone(&armed)));
    // The people come once every named kill point is armed: the traffic reaching each is theirs.
    wait_for("every named kill point armed", PATIENCE, || async {
        AtomicBool::load(&armed, Ordering::SeqCst).then_some(())
    })
    .await;

    let work: Vec<(DateTime<Utc>, DateTime<Utc>)> = (0..campaign.days)
        .map(|d| (first + TimeDelta::days(d), first + TimeDelta::days(d) + TimeDelta::minutes(WORK_MINUTES)))
        .collect();
    let people = journey(&platform, &handles, &work).await;
    done.store(true, Ordering::SeqCst);
    // The monkey hands NATS back: the audit reads the streams.
    let (faults, kills, reached, _nats) = monkey.await.expect("the monkey");
    eprintln!("people done and the monkey stopped after {:?}", started.elapsed());
    // Every window measured before the audit, and so before the period closes: a
    // window measured after its day was reported would be billed in the next period, and the
    // period's invoice would lack it (the audit compares it with the whole ledger).
    // (The labs run on: every window that has ended on the stopped clock.)
    let window = i64::from(WINDOW);
    let stopped = DateTime::from_timestamp(world.clock.now() / window * window, 0).expect("the clock");
    metering_caught_up(&platform, stopped, true).await;

    let mut counts = audit(&platform, &people, &work).await;
    // Consumers the campaign's traffic reached: each must have its kill point on the list.
    let delivered_after = deliveries(&platform).await;
    let unarmed: Vec<&String> = delivered_after
        .iter()
        .filter(|(name, n)| **n > delivered_before.get(*name).copied().unwrap_or(0) && !reached.contains_key(*name))
        .map(|(name, _)| name)
        .collect();
    counts.insert("consumers reached by the traffic with no kill point armed".to_owned(), unarmed.len());
    counts.insert("kill points never reached".to_owned(), reached.values().filter(|n| **n == 0).count());

    // The people's billing period ends: the last day reported, Stripe's invoices finalised.
    let owners: Vec<Owner> = people
        .iter()
        .zip(&handles)
        .map(|(person, handle)| Owner {
            kind: Kind::Postpaid,
            username: format!("{handle}10000"),
            person: person.clone(),
            member: None,
            mode_from: None,
            stores: false,
        })
        .collect();
    let days = u64::try_from(campaign.days).unwrap();
    money::close_period(&platform, &owners, period_end, days, None).await;
    let findings = money::audit(&platform, &owners, &Period { from: setup_at, end: period_end }).await;
    eprintln!("{}", findings.table);
    for (kind, what) in &findings.problems {
        eprintln!("money audit: {kind}: {what}");
    }

    eprintln!("faults injected ({} in all):", faults.values().sum::<u32>());
    for (kind, n) in &faults {
        eprintln!("  {kind}: {n}");
    }
    for (service, n) in &kills {
        eprintln!("  {service} killed: {n}");
    }
    eprintln!("kill points reached ({} of {}):", reached.values().filter(|n| **n > 0).count(), reached.len());
    for (point, n) in &reached {
        eprintln!("  consumer_committed:{point}: {n}");
    }
    for name in &unarmed {
        eprintln!("  {name} reached by the campaign's traffic with no kill point armed");
    }
    eprintln!("lost or duplicated:");
    for (what, n) in &counts {
        eprintln!("  {what}: {n}");
    }
    eprintln!("invoices and reports (money audit):");
    for (what, n) in findings.counts() {
        eprintln!("  {what}: {n}");
    }
    eprintln!("campaign took {:?}", started.elapsed());
    for service in SERVICES {
        assert!(
            kills.get(service.name()).copied().unwrap_or(0) >= campaign.kills_per_service,
            "{} killed fewer than {} times: {kills:?}",
            service.name(),
            campaign.kills_per_service
        );
    }
    let wrong: Vec<_> = counts.iter().filter(|(_, n)| **n != 0).collect();
    assert!(wrong.is_empty(), "lost or duplicated: {wrong:?} (seed {seed})");
    let money_wrong: Vec<_> = findings.counts().into_iter().filter(|(_, n)| *n != 0).collect();
    assert!(money_wrong.is_empty(), "invoices and reports: {money_wrong:?} (seed {seed})");
}

/// Deliveries so far (redeliveries included) of every service's consumer on every stream.
async fn deliveries(platform: &Platform) -> BTreeMap<String, u64> {
    let js = platform.bus.jetstream().await;
    let mut all = BTreeMap::new();
    for producer in SERVICES {
        let Ok(stream) = js.get_stream(platform.bus.subjects().stream(producer)).await else { continue };
        let infos: Vec<_> = stream.consumers().try_collect().await.expect("the stream's consumers");
        // The services' durable consumers (`<service>-<event>`), not the harness's ordered ones.
        for info in infos.into_iter().filter(|i| SERVICES.iter().any(|s| i.name.starts_with(&format!("{}-", s.name()))))
        {
            all.insert(info.name, info.delivered.consumer_sequence);
        }
    }
    all
}

/// Email local parts whose first three letters differ, so that the Hopsworks sandbox names
/// each `<handle>10000`, the owner of the lab the World runs for them.
fn handle(i: usize) -> String {
    let letter = |k: usize| char::from(b'a' + u8::try_from(k % 26).unwrap());
    format!("c{}{}", letter(i / 26), letter(i))
}

/// Signup, a card and a cluster for everyone, then the days of `work` on the World's clock.
async fn journey(platform: &Platform, handles: &[String], work: &[(DateTime<Utc>, DateTime<Utc>)]) -> Vec<Person> {
    let world = &platform.world;
    let mut people = Vec::new();
    for chunk in handles.chunks(5) {
        people.extend(futures::future::join_all(chunk.iter().map(|h| sign_up(platform, h))).await);
    }
    eprintln!("{} people signed up", people.len());
    futures::future::join_all(people.iter().map(|p| add_card(platform, p))).await;
    futures::future::join_all(people.iter().map(|p| wait_assigned(platform, p))).await;
    eprintln!("{} people have their cluster", people.len());
    // Their labs' projects synced now, as an admin can, rather than at provisioning's schedule
    // (every ten minutes, longer than the short form): metering attributes the labs' usage
    // through them, and the sync announces each owner's projects (ProjectsCounted).
    for cluster in &platform.cluster_ids {
        let path = format!("/api/admin/clusters/{cluster}/projects/sync");
        call_until_ok(platform, "POST", &path, &platform.admin_token).await;
    }

    // Each day: its work at RATE; then the next day. The clock first stands a few windows before
    // the day's work until metering has caught up with the jump (a day of windows scheduled and
    // settled as gaps), so that the day's windows do not wait behind that backlog past their
    // deadlines (six windows: six real seconds at RATE).
    for (day, (from, until)) in work.iter().enumerate() {
        world.set_rate(0);
        let lead = *from - TimeDelta::seconds(i64::from(WINDOW) * 4);
        world.set_time(lead);
        metering_caught_up(platform, lead, false).await;
        world.set_rate(RATE);
        let real = Duration::from_secs(u64::try_from(WORK_MINUTES * 60).unwrap() * 1000 / u64::from(RATE));
        let deadline = Instant::now() + real + Duration::from_secs(120);
        while world.clock.now() < until.timestamp() {
            assert!(Instant::now() < deadline, "the clock did not reach {until}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        world.set_rate(0);
        eprintln!("day {} of work done ({from})", day + 1);
    }
    people
}

/// Waits until metering has scheduled every active cluster's windows through `at` and has none
/// ending by then still pending, and, with `running`, none running either. Between days the
/// running ones are not waited for (the monkey's kills leave some held until their lease runs
/// out); before the audit they are (leases are seconds here).
async fn metering_caught_up(platform: &Platform, at: DateTime<Utc>, running: bool) {
    let at_sql = format!("to_timestamp({})", at.timestamp());
    let states = if running { "'pending', 'running'" } else { "'pending'" };
    let sql = format!(
        "SELECT (SELECT count(*) FROM clusters WHERE status = 'active' \
                 AND (scheduled_through IS NULL OR scheduled_through < {at_sql})) \
              + (SELECT count(*) FROM runs WHERE status IN ({states}) AND window_end <= {at_sql}) \
              AS open"
    );
    wait_for(&format!("metering caught up with {at}"), PATIENCE, || async {
        (platform.rows("metering", &sql).await[0]["open"].as_i64() == Some(0)).then_some(())
    })
    .await;
}

/// Calls until the answer is 2xx, through services being killed and restarted.
async fn call_until_ok(platform: &Platform, method: &str, path: &str, token: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = platform.call(method, path, token, None).await;
        if (200..300).contains(&status) {
            return body;
        }
        assert!(Instant::now() < deadline, "{method} {path}: not within {PATIENCE:?}, last answered {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Signs `handle` up in Auth0 (its post-registration Action fired until the gateway answers),
/// then makes their first call.
async fn sign_up(platform: &Platform, handle: &str) -> Person {
    let auth0 = TestUser::database(handle, &format!("{handle}@example.com"), &format!("Person {handle}"));
    platform.world.auth0.add_user(auth0.clone());
    let action = Auth0Sim::post_registration_action(
        &format!("{}/webhooks/auth0/post-registration", platform.gateway),
        WEBHOOK_SECRET,
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    wait_for("the post-registration Action", PATIENCE, || async {
        action.fire(&http, &auth0).await.ok().filter(|s| *s == 200 || *s == 201)
    })
    .await;
    let token = platform.world.auth0.access_token(&TokenSpec::user(&auth0)).unwrap();
    let me = call_until_ok(platform, "GET", "/api/me", &token).await;
    let user_id = me["id"].as_str().and_then(|s| s.parse().ok()).expect("user id");
    Person { auth0, token, user_id }
}

/// A Checkout Session in setup mode, completed in the sandbox as the person would.
async fn add_card(platform: &Platform, person: &Person) {
    let session = call_until_ok(platform, "POST", "/api/billing/payment-method", &person.token).await;
    let id = session["id"].as_str().expect("checkout session id");
    platform.world.stripe.complete_checkout_session(id).expect("complete the checkout session");
}

async fn wait_assigned(platform: &Platform, person: &Person) {
    wait_for(&format!("{}'s cluster", person.auth0.email), PATIENCE, || async {
        let (status, body) = platform.call("GET", "/api/cluster", &person.token, None).await;
        (status == 200 && body["status"] == "complete").then_some(())
    })
    .await;
}

/// Kills and faults, chosen by a seeded RNG, until the people are done and every target is met.
struct Monkey {
    platform: Arc<Platform>,
    nats: NatsServer,
    rng: StdRng,
    campaign: Campaign,
    /// Kills per service (SIGKILLs and kill points reached).
    kills: BTreeMap<&'static str, u32>,
    /// Faults injected, by kind.
    faults: BTreeMap<String, u32>,
    /// Services running with a kill point set.
    armed: HashSet<Service>,
    /// Named kill points not reached yet, by service: a service runs with all of its armed.
    pending: HashMap<Service, Vec<String>>,
    /// Named kill points (consumers) and how often a process was seen to abort there.
    reached: BTreeMap<String, u32>,
    /// A Stripe hold armed on one of billing's writes (its id and path): once Stripe has applied
    /// the request and holds its answer, billing is killed before it learns the outcome.
    stripe_hold: Option<(String, &'static str)>,
}

/// billing's Stripe writes a hold may catch: a person's customer and subscription, a day's
/// meter events, a card's Checkout Session.
const HELD_WRITES: [&str; 4] = ["/v1/customers", "/v1/subscriptions", money::METER_EVENTS, "/v1/checkout/sessions"];

impl Monkey {
    fn count(&mut self, kind: impl Into<String>) {
        *self.faults.entry(kind.into()).or_default() += 1;
    }

    fn targets_met(&self) -> bool {
        SERVICES.iter().all(|s| self.kills.get(s.name()).copied().unwrap_or(0) >= self.campaign.kills_per_service)
            && self.faults.get("nats restarted").copied().unwrap_or(0) >= self.campaign.nats_restarts
            && self.faults.get("postgres restarted").copied().unwrap_or(0) >= self.campaign.postgres_restarts
    }

    async fn run(
        mut self,
        done: Arc<AtomicBool>,
        armed: Arc<AtomicBool>,
    ) -> (BTreeMap<String, u32>, BTreeMap<&'static str, u32>, BTreeMap<String, u32>, NatsServer) {
        // Every named kill point armed before the people come.
        let mut services: Vec<Service> = self.pending.keys().copied().collect();
        services.sort_by_key(|s| s.name());
        for service in services {
            self.platform.kill_service(service);
            *self.kills.entry(service.name()).or_default() += 1;
            self.count(format!("SIGKILL ({})", service.name()));
            self.start(service, false).await;
        }
        armed.store(true, Ordering::SeqCst);
        while !(AtomicBool::load(&done, Ordering::SeqCst) && self.targets_met()) {
            self.restart_stopped().await;
            self.kill_when_held().await;
            let roll = self.rng.gen_range(0..100);
            match roll {
                0..55 => self.kill().await,
                55..60 => self.restart_nats().await,
                60..65 => self.restart_postgres().await,
                _ => self.sandbox_fault(),
            }
            let pause = self.rng.gen_range(200..1200);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.restart_stopped().await;
        if let Some((id, path)) = self.stripe_hold.take() {
            // Armed and never reached: it holds nothing any more.
            let _ = self.platform.world.stripe.release(&id);
            self.count(format!("stripe hold not reached ({path})"));
        }
        // The people are done: no kill point left armed and faults off, so the audit reads a
        // settled platform. A named point not reached by now never will be: the audit counts it.
        self.pending.clear();
        for service in std::mem::take(&mut self.armed) {
            self.platform.kill_service(service);
            self.start(service, false).await;
        }
        for cluster in &self.platform.world.clusters {
            cluster.hopsworks.clear_faults();
            cluster.kubernetes.set_faults(KubeFaults::default());
        }
        (self.faults, self.kills, self.reached, self.nats)
    }

    /// Restarts every service that stopped by itself (with its named kill points not reached
    /// yet): at a kill point (SIGABRT after the point's line), which counts as a kill and
    /// marks a named point reached, or otherwise, which is counted apart.
    async fn restart_stopped(&mut self) {
        use std::os::unix::process::ExitStatusExt as _;
        for service in SERVICES {
            let Some(status) = self.platform.service_exit(service) else { continue };
            let at = kill_point_in(&self.platform.service_output(service));
            if let (Some(6), Some(consumer)) = (status.signal(), at) {
                *self.kills.entry(service.name()).or_default() += 1;
                let pending = self.pending.entry(service).or_default();
                if let Some(i) = pending.iter().position(|c| *c == consumer) {
                    pending.remove(i);
                    *self.reached.entry(consumer).or_default() += 1;
                    self.count(format!("named kill point reached ({})", service.name()));
                } else {
                    self.count(format!("kill point reached ({})", service.name()));
                }
            } else {
                eprintln!("{} exited by itself ({status}):\n{}", service.name(), self.platform.service_output(service));
                self.count(format!("exited by itself ({})", service.name()));
            }
            self.start(service, false).await;
        }
    }

    /// Starts `service` with its named kill points not reached yet armed; with none left, with
    /// the kill point on every consumer when `every_consumer`.
    async fn start(&mut self, service: Service, every_consumer: bool) {
        let named = self.pending.get(&service).filter(|p| !p.is_empty()).map(|p| p.join(","));
        let point = named.or_else(|| every_consumer.then(|| "*".to_owned()));
        if point.is_some() {
            self.armed.insert(service);
        } else {
            self.armed.remove(&service);
        }
        let platform = Arc::clone(&self.platform);
        tokio::task::spawn_blocking(move || match point {
            Some(point) => {
                let value = format!("consumer_committed:{point}");
                platform.start_service_with(service, &[("HOPSBRIDGE_KILL_POINT", value.as_str())]);
            }
            None => platform.start_service(service),
        })
        .await
        .expect("start a service");
    }

    /// SIGKILLs a service (one short of its target first), down for up to 1.5 s; it comes back
    /// with its named kill points not reached yet, or (a service with consumers, one time in
    /// three) with the kill point set on all of them.
    async fn kill(&mut self) {
        let behind: Vec<Service> = SERVICES
            .iter()
            .copied()
            .filter(|s| self.kills.get(s.name()).copied().unwrap_or(0) < self.campaign.kills_per_service)
            .collect();
        let pool = if behind.is_empty() { SERVICES.to_vec() } else { behind };
        let service = pool[self.rng.gen_range(0..pool.len())];
        self.platform.kill_service(service);
        *self.kills.entry(service.name()).or_default() += 1;
        self.count(format!("SIGKILL ({})", service.name()));
        let down = self.rng.gen_range(0..1500);
        tokio::time::sleep(Duration::from_millis(down)).await;
        let every_consumer = service != Service::Gateway && self.rng.gen_range(0..3) == 0;
        if every_consumer && self.pending.get(&service).is_none_or(Vec::is_empty) {
            self.count(format!("started with the kill point on every consumer ({})", service.name()));
        }
        self.start(service, every_consumer).await;
    }

    /// When Stripe holds the answer to the write its hold was armed on, SIGKILLs billing, lets
    /// the answer go (to nobody) and starts billing again: Stripe made the change and billing
    /// never learned it, so its retry must find the change (an idempotency key, a lookup) and
    /// not make it twice.
    async fn kill_when_held(&mut self) {
        use hopsbridge_sandbox::stripe::HoldStatus;
        let Some((id, path)) = self.stripe_hold.clone() else { return };
        let platform = Arc::clone(&self.platform);
        let stripe = &platform.world.stripe;
        match stripe.hold_status(&id) {
            Some(HoldStatus::Armed { .. }) => return,
            Some(HoldStatus::Held { .. }) => {
                self.platform.kill_service(Service::Billing);
                *self.kills.entry(Service::Billing.name()).or_default() += 1;
                self.count(format!("billing killed while Stripe held its answer ({path})"));
                let _ = stripe.release(&id);
                self.start(Service::Billing, false).await;
            }
            // Released or gone: nothing held.
            _ => {}
        }
        self.stripe_hold = None;
    }

    async fn restart_nats(&mut self) {
        self.nats.stop();
        let down = self.rng.gen_range(500..3000);
        tokio::time::sleep(Duration::from_millis(down)).await;
        self.nats.resume().await;
        self.count("nats restarted");
    }

    /// The run's database refuses connections for a moment and every open one is terminated.
    async fn restart_postgres(&mut self) {
        let name = self.platform.db.name().to_owned();
        let mut admin = AsyncPgConnection::establish(&hopsbridge_testkit::admin_database_url()).await.unwrap();
        diesel::sql_query(format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"))
            .execute(&mut admin)
            .await
            .unwrap();
        diesel::sql_query(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        let down = self.rng.gen_range(500..3000);
        tokio::time::sleep(Duration::from_millis(down)).await;
        diesel::sql_query(format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"))
            .execute(&mut admin)
            .await
            .unwrap();
        self.count("postgres restarted");
    }

    fn sandbox_fault(&mut self) {
        let world = &self.platform.world;
        let cluster = &world.clusters[self.rng.gen_range(0..world.clusters.len())];
        match self.rng.gen_range(0..8) {
            7 if self.stripe_hold.is_none() => {
                let path = HELD_WRITES[self.rng.gen_range(0..HELD_WRITES.len())];
                self.stripe_hold = Some((world.stripe.hold("POST", path, 1), path));
                self.count(format!("stripe hold armed ({path})"));
            }
            0 => {
                world.stripe.fail_next(2, 500);
                self.count("stripe 500 x2");
            }
            1 => {
                world.stripe.fail_next(2, 429);
                self.count("stripe 429 x2");
            }
            2 => {
                cluster.hopsworks.fail_next(2, 503);
                self.count("hopsworks 503 x2");
            }
            3 => {
                // Past provisioning's request timeout: the change is made, the answer lost.
                cluster.hopsworks.hold_next_on(Route::CreateUser, 1, Duration::from_secs(3));
                self.count("hopsworks create-user answer held");
            }
            4 => {
                cluster.kubernetes.set_faults(KubeFaults {
                    server_error: Some(500),
                    times: Some(3),
                    ..KubeFaults::default()
                });
                self.count("kubernetes 500 x3");
            }
            5 => {
                cluster.kubernetes.set_faults(KubeFaults {
                    too_many_requests: Some(1),
                    times: Some(3),
                    ..KubeFaults::default()
                });
                self.count("kubernetes 429 x3");
            }
            _ => {
                cluster.kubernetes.set_faults(KubeFaults {
                    delay: Some(Duration::from_secs(2)),
                    times: Some(2),
                    ..KubeFaults::default()
                });
                self.count("kubernetes slow x2");
            }
        }
    }
}

/// The consumer whose kill point a process's output says it aborted at (its last such line).
fn kill_point_in(output: &str) -> Option<String> {
    output
        .lines()
        .rev()
        .filter(|l| l.contains("kill point consumer_committed reached"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|l| l["consumer"].as_str().map(str::to_owned))
}

/// A sample's or a ledger entry's usage: nanocore-seconds, byte-seconds, GPU-seconds, offline
/// and online storage byte-seconds.
type Usage = [i64; 5];

fn usage(r: &Value) -> Usage {
    ["c", "m", "g", "f", "n"].map(|k| r[k].as_i64().unwrap_or_else(|| panic!("{k} in {r}")))
}

fn text(r: &Value, k: &str) -> String {
    r[k].as_str().unwrap_or_else(|| panic!("{k} in {r}")).to_owned()
}

/// What went wrong, counted: every count is zero when nothing was lost or duplicated and every
/// person's lab was measured on every day of `work`.
async fn audit(
    platform: &Platform,
    people: &[Person],
    work: &[(DateTime<Utc>, DateTime<Utc>)],
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    // Settled: every outbox published, every webhook delivered, every sample in billing's ledger.
    let owners: HashSet<String> = people.iter().map(|p| p.user_id.to_string()).collect();
    // Usage (30 s windows) and storage (hourly, per project) samples, and the ledger's entries
    // of both: nanocore-seconds, byte-seconds, GPU-seconds, offline and online byte-seconds.
    let samples_sql = "SELECT id::text AS id, owner_user_id::text AS o, cpu_nanocore_seconds AS c, \
                       memory_byte_seconds AS m, gpu_seconds AS g, 0::bigint AS f, 0::bigint AS n \
                       FROM samples WHERE attribution = 'attributed' \
                       UNION ALL SELECT id::text, owner_user_id::text, 0, 0, 0, offline_byte_seconds, \
                       online_byte_seconds FROM storage_samples WHERE owner_user_id IS NOT NULL";
    let ledger_sql = "SELECT sample_id::text AS id, owner_id::text AS o, cpu_nanocore_seconds AS c, \
                      memory_byte_seconds AS m, gpu_seconds AS g, storage_offline_byte_seconds AS f, \
                      storage_online_byte_seconds AS n FROM ledger_entries";
    let deadline = Instant::now() + PATIENCE;
    let (samples, ledger, backlog) = loop {
        let backlog = platform.outbox_backlog().await;
        let samples: Vec<Value> = platform
            .rows("metering", samples_sql)
            .await
            .into_iter()
            .filter(|s| owners.contains(&text(s, "o")))
            .collect();
        let ledger = platform.rows("billing", ledger_sql).await;
        let in_ledger: HashSet<String> = ledger.iter().map(|e| text(e, "id")).collect();
        let delivered = platform.world.stripe.deliveries().iter().all(|d| d.succeeded);
        let settled = backlog.values().all(|n| *n == 0)
            && delivered
            && samples.iter().all(|s| in_ledger.contains(&text(s, "id")));
        if settled || Instant::now() > deadline {
            break (samples, ledger, backlog);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    // Per person: one of everything.
    let found = platform.audit(people).await;
    let extra = |v: &[usize]| v.iter().map(|n| n.saturating_sub(1)).sum::<usize>();
    let missing = |v: &[usize]| v.iter().filter(|n| **n == 0).count();
    let assignments: Vec<usize> = found.assignments.iter().map(|n| usize::try_from(*n).unwrap_or(0)).collect();
    for (what, per_person) in [
        ("Stripe customers", &found.customers),
        ("subscriptions", &found.subscriptions),
        ("Hopsworks accounts", &found.hopsworks_users),
        ("assignments", &assignments),
        ("PaymentMethodAdded messages", &found.cards_added),
        ("ClusterAssigned messages", &found.clusters_assigned),
    ] {
        counts.insert(format!("{what} duplicated"), extra(per_person));
        counts.insert(format!("{what} missing"), missing(per_person));
    }
    counts.insert(
        "Hopsworks accounts of another subject".to_owned(),
        found.subject_matches.iter().filter(|m| !**m).count(),
    );
    counts.insert(
        "clusters over capacity".to_owned(),
        usize::try_from(found.clusters_over_capacity).unwrap_or(usize::MAX),
    );

    // Usage: each sample in the ledger once, with its quantities; each owner billed their sum.
    let mut entries: HashMap<String, Vec<&Value>> = HashMap::new();
    for e in &ledger {
        entries.entry(text(e, "id")).or_default().push(e);
    }
    let (mut lost, mut twice, mut differ) = (0, 0, 0);
    let mut sampled: HashMap<String, Usage> = HashMap::new();
    let mut billed: HashMap<String, Usage> = HashMap::new();
    let add = |sum: &mut Usage, u: Usage| {
        for (s, x) in sum.iter_mut().zip(u) {
            *s += x;
        }
    };
    for s in &samples {
        add(sampled.entry(text(s, "o")).or_default(), usage(s));
        let theirs = entries.get(&text(s, "id")).map_or(&[][..], Vec::as_slice);
        match theirs.len() {
            0 => lost += 1,
            1 => {}
            _ => twice += 1,
        }
        differ += theirs.iter().filter(|e| usage(e) != usage(s) || text(e, "o") != text(s, "o")).count();
    }
    let sample_ids: HashSet<String> = samples.iter().map(|s| text(s, "id")).collect();
    let mut unsampled = 0;
    for e in ledger.iter().filter(|e| owners.contains(&text(e, "o"))) {
        add(billed.entry(text(e, "o")).or_default(), usage(e));
        unsampled += usize::from(!sample_ids.contains(&text(e, "id")));
    }
    eprintln!(
        "{} usage and storage samples of {} owners; {} ledger entries",
        samples.len(),
        sampled.len(),
        ledger.len()
    );
    counts.insert(
        "person-days of work without usage measured on their cluster".to_owned(),
        unmeasured(platform, people, work).await,
    );
    counts.insert("samples missing from the ledger".to_owned(), lost);
    counts.insert("samples in the ledger more than once".to_owned(), twice);
    counts.insert("ledger entries differing from their sample".to_owned(), differ);
    counts.insert("ledger entries of no sample".to_owned(), unsampled);
    let owners_off = owners.iter().filter(|o| sampled.get(*o) != billed.get(*o)).count();
    counts.insert("owners whose billed usage differs from their samples' sum".to_owned(), owners_off);

    // Outboxes drained; every dead letter explained.
    counts.insert(
        "outbox rows never published".to_owned(),
        backlog.values().map(|n| usize::try_from(*n).unwrap_or(0)).sum(),
    );
    // No event of this campaign is one a service cannot handle, so no dead letter is expected:
    // each is printed with its reason and counted.
    let letters = platform.dead_letters().await;
    for letter in &letters {
        eprintln!("dead letter in {} ({}): {}", letter.service, letter.consumer, letter.reason);
    }
    counts.insert("dead letters unexplained".to_owned(), letters.len());
    counts
}

/// The person-days of `work` on which metering attributed no CPU to the person on the cluster
/// provisioning assigned them: the labs run all day, so each day of work has usage windows
/// unless metering measured nothing (every window a gap) or attributed it to nobody.
async fn unmeasured(platform: &Platform, people: &[Person], work: &[(DateTime<Utc>, DateTime<Utc>)]) -> usize {
    let assigned: HashMap<String, String> = platform
        .rows("provisioning", "SELECT user_id::text AS u, cluster_id::text AS c FROM assignments")
        .await
        .iter()
        .map(|r| (text(r, "u"), text(r, "c")))
        .collect();
    let measured: HashSet<(String, String, i64)> = platform
        .rows(
            "metering",
            "SELECT user_id::text AS u, cluster_id::text AS c, extract(epoch FROM window_start)::bigint AS w \
             FROM samples WHERE attribution = 'attributed' AND cpu_nanocore_seconds > 0",
        )
        .await
        .iter()
        .map(|r| (text(r, "u"), text(r, "c"), r["w"].as_i64().unwrap_or_else(|| panic!("w in {r}"))))
        .collect();
    let mut missing = 0;
    for person in people {
        let user = person.user_id.to_string();
        let cluster = assigned.get(&user).cloned().unwrap_or_default();
        for (from, until) in work {
            let on_day = measured
                .iter()
                .any(|(u, c, t)| *u == user && *c == cluster && (from.timestamp()..until.timestamp()).contains(t));
            if !on_day {
                eprintln!(
                    "no usage of {} measured on their cluster {cluster} from {from} to {until}",
                    person.auth0.email
                );
                missing += 1;
            }
        }
    }
    missing
}
