//! Plans and the account's standing (decision 0048), against the running service, the real
//! Postgres and NATS and the Stripe sandbox on a simulated calendar that billing follows: each
//! ladder (a card removed with three projects, with two deleted in time, with one; failed
//! payments then paid; credits exhausted then bought), the enforcer twice at once and anew after
//! a pass, and bad input to the plan routes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use diesel_async::RunQueryDsl;
use hopsbridge_billing::BillingConfig;
use hopsbridge_billing::catalog::Prices;
use hopsbridge_billing::lifecycle::{Enforcer, Lifecycle, Pass};
use hopsbridge_billing::reporting::Reporter;
use hopsbridge_billing::stripe::Stripe;
use hopsbridge_contracts::Event;
use hopsbridge_contracts::events::{
    AccountRestrictedV1, CreditsExhaustedV1, Envelope, PlanChangedV1, ProjectsCountedV1, UserSignedInV1,
};
use hopsbridge_platform::caller::Role;
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_sandbox::clock::{ClockServer, REAL_TIME_RATE_MILLI, SimClock};
use hopsbridge_sandbox::stripe::{StripeConfig, StripeSim};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, STRIPE_SECRET_KEY, TestBus, TestDb, TestSettings};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DAY: i64 = 86_400;
/// 2026-11-03T10:00:00Z.
const START: i64 = 1_793_700_000;
const TERMS: &str = "2026-12-01";

struct World {
    billing: Billing,
    clock: Arc<SimClock>,
    _clock_server: ClockServer,
    lifecycle: Lifecycle,
}

impl std::ops::Deref for World {
    type Target = Billing;
    fn deref(&self) -> &Billing {
        &self.billing
    }
}

async fn world() -> World {
    hopsbridge_testkit::init();
    let clock = Arc::new(SimClock::running(START * 1_000_000, REAL_TIME_RATE_MILLI));
    let clock_server = ClockServer::start(Arc::clone(&clock)).unwrap();
    let sim = StripeSim::start_with_clock(
        StripeConfig { secret_key: STRIPE_SECRET_KEY.to_owned(), rate_limit: None },
        Arc::clone(&clock),
    )
    .unwrap();
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    // The service's own enforcer waits a day: the test runs the passes.
    let settings = settings(&db, &bus, &sim)
        .set("http.workers", "2")
        .layer(TEST_EVENTS)
        .clock(&clock_server.url())
        .set("lifecycle.enforce_interval_secs", "86400")
        .set("reporting.interval_secs", "86400")
        .set("reconciliation.interval_secs", "86400")
        .set("mail.admin_addresses", "ops@hopsbridge.test");
    let config: BillingConfig = TestSettings::load(&settings, &hopsbridge_billing::DEFAULTS);
    let app = hopsbridge_billing::build(config.clone()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let key = hopsbridge_platform::caller::CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let billing = Billing::assemble(base, db, bus, sim, key, config.clone(), stop);
    let lifecycle = lifecycle_of(&billing, &config, &clock_server.url()).await;
    World { billing, clock, _clock_server: clock_server, lifecycle }
}

/// The lifecycle as another replica of billing holds it, on its own pool.
async fn lifecycle_of(billing: &Billing, config: &BillingConfig, clock_url: &str) -> Lifecycle {
    let database = Database::new(&billing.db.config(), "billing").unwrap();
    let stripe = Stripe::new(&billing.sim.url(), STRIPE_SECRET_KEY.to_owned().into(), 100).unwrap();
    let prices = Prices::new(stripe.clone(), config.rates.clone(), "usd".into());
    let followed = Clock::follow(clock_url, Duration::from_millis(20)).await.unwrap();
    let reporter = Reporter::new(config, database.clone(), (stripe.clone(), prices.clone()), followed.clone()).unwrap();
    Lifecycle {
        db: database,
        clock: followed,
        stripe,
        prices,
        reporter,
        plans: config.plans.clone(),
        config: config.lifecycle.clone(),
        window_secs: config.ledger.window_secs,
        mail: config.mail.clone(),
    }
}

impl World {
    /// Moves the calendar to `at` and waits until the enforcer's clock has followed.
    async fn at(&self, at: i64) {
        self.clock.set(at);
        let followed = hopsbridge_testkit::eventually(Duration::from_secs(10), || async {
            self.lifecycle.clock.now().timestamp() >= at
        })
        .await;
        assert!(followed, "the enforcer follows the calendar");
        // The service's clock follows the same way.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fn now(&self) -> i64 {
        self.clock.now_micros() / 1_000_000
    }

    async fn pass(&self) -> Pass {
        Enforcer(self.lifecycle.clone()).pass().await.unwrap()
    }

    /// A Stripe event signed for billing's endpoint, created now on the calendar.
    async fn stripe_event(&self, kind: &str, object: Value, previous: Option<Value>) {
        let mut data = json!({"object": object});
        if let Some(p) = previous {
            data["previous_attributes"] = p;
        }
        let body = json!({"id": format!("evt_{}", Uuid::new_v4().simple()), "object": "event", "type": kind,
            "created": self.now(), "data": data})
        .to_string();
        let (status, answer) = self.webhook(&body).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {answer}");
    }

    async fn attach_card(&self, customer: &str) -> String {
        let pm = format!("pm_{}", Uuid::new_v4().simple());
        let card = json!({"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2031});
        self.stripe_event(
            "payment_method.attached",
            json!({"id": pm, "object": "payment_method", "customer": customer, "card": card}),
            None,
        )
        .await;
        pm
    }

    async fn detach_card(&self, customer: &str, pm: &str) {
        self.stripe_event(
            "payment_method.detached",
            json!({"id": pm, "object": "payment_method", "customer": null}),
            Some(json!({"customer": customer})),
        )
        .await;
    }

    async fn invoice(&self, customer: &str, id: &str, failed_attempt: Option<i64>) {
        let (kind, status) =
            if failed_attempt.is_some() { ("invoice.payment_failed", "open") } else { ("invoice.paid", "paid") };
        let object = json!({"id": id, "object": "invoice", "customer": customer, "status": status, "amount_due": 1234,
            "currency": "usd", "attempt_count": failed_attempt.unwrap_or(1), "created": self.now()});
        self.stripe_event(kind, object, None).await;
    }

    async fn choose(&self, user: Uuid, plan: &str) -> (StatusCode, Value) {
        let body = json!({"plan": plan, "accept_terms": true, "terms_version": TERMS});
        self.call_with(Method::PUT, "/api/billing/plan", Some(&owner(user)), Some(body)).await
    }

    async fn plan(&self, user: Uuid) -> Value {
        let (status, body) = self.call(Method::GET, "/api/billing/plan", Some(&owner(user))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// An owner with a card on payg, with `projects` active projects over two clusters.
    async fn paying_owner(&self, projects: usize) -> (Uuid, String, String) {
        let (user, row) = self.new_owner().await;
        let customer = row.stripe_customer_id.unwrap();
        let pm = self.attach_card(&customer).await;
        let (status, body) = self.choose(user, "payg").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["now"]["plan"], "payg");
        let names: Vec<String> = (0..projects).map(|i| format!("project_{i}")).collect();
        let (first, second) = names.split_at(projects.min(2));
        self.count_projects(user, 1, first).await;
        self.count_projects(user, 2, second).await;
        assert_eq!(self.plan(user).await["active_projects"], projects);
        (user, customer, pm)
    }

    /// ProjectsCountedV1 of `cluster` as provisioning publishes it; waits until handled.
    async fn count_projects(&self, user: Uuid, cluster: u128, names: &[String]) {
        let event = ProjectsCountedV1 {
            user_id: user.to_string(),
            cluster_id: Uuid::from_u128(cluster).to_string(),
            active_projects: i32::try_from(names.len()).unwrap(),
            project_names: names.to_vec(),
            synced_at_unix_seconds: self.now(),
        };
        self.publish(&event, "provisioning").await;
    }

    async fn publish<E: Event + prost::Message>(&self, event: &E, producer: &str) {
        let id = Uuid::now_v7();
        let envelope = Envelope {
            event_id: id.to_string(),
            event_type: E::TYPE.into(),
            schema_version: 1,
            producer: producer.into(),
            payload: event.encode_to_vec(),
            occurred_at_unix_micros: chrono::Utc::now().timestamp_micros(),
            ..Default::default()
        };
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(envelope.encode_to_vec().into())
            .message_id(id.to_string());
        let js = self.bus.jetstream().await;
        js.send_publish(self.bus.subjects().event::<E>(), message).await.unwrap().await.unwrap();
        assert!(
            self.db.handled("billing", &id.to_string(), Duration::from_secs(30)).await,
            "billing handled {}",
            E::TYPE
        );
    }

    /// The announcements of type `E` in billing's outbox, oldest first.
    async fn announced<E: Event + prost::Message + Default>(&self) -> Vec<E> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Bytea)]
            envelope: Vec<u8>,
        }
        let mut conn = self.db.connect("billing").await;
        let rows: Vec<Row> =
            diesel::sql_query("SELECT envelope FROM outbox WHERE event_type = $1 ORDER BY created_at, id")
                .bind::<diesel::sql_types::Text, _>(E::TYPE)
                .load(&mut conn)
                .await
                .unwrap();
        rows.iter().map(|r| E::decode(&*Envelope::decode(&*r.envelope).unwrap().payload).unwrap()).collect()
    }

    async fn mails(&self, kind: &str) -> i64 {
        count(&self.db, &format!("mail_outbox WHERE kind = '{kind}'")).await
    }

    async fn plan_changes_of(&self, user: Uuid) -> Vec<PlanChangedV1> {
        self.announced::<PlanChangedV1>().await.into_iter().filter(|e| e.user_id == user.to_string()).collect()
    }

    async fn restricted_of(&self, user: Uuid) -> Vec<AccountRestrictedV1> {
        self.announced::<AccountRestrictedV1>().await.into_iter().filter(|e| e.user_id == user.to_string()).collect()
    }

    async fn lifted(&self, user: Uuid) -> usize {
        self.announced::<hopsbridge_contracts::events::AccountRestrictionLiftedV1>()
            .await
            .into_iter()
            .filter(|e| e.user_id == user.to_string())
            .count()
    }

    /// Waits until the owner's plan is `plan`.
    async fn wait_plan(&self, user: Uuid, plan: &str) {
        let moved =
            hopsbridge_testkit::eventually(Duration::from_secs(30), || async { self.plan(user).await["plan"] == plan })
                .await;
        assert!(moved, "the owner is on {plan}");
    }
}

fn owner(user: Uuid) -> hopsbridge_platform::caller::Caller {
    caller(user, &[Role::User, Role::Owner])
}

fn restriction<'a>(view: &'a Value, reason: &str) -> Option<&'a Value> {
    view["restrictions"].as_array().unwrap().iter().find(|r| r["reason"] == reason)
}

fn at_of(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_removed_with_three_projects_moves_to_free_and_suspends_once_at_the_deadline() {
    let w = world().await;
    catalog_ready(&w.sim).await;
    let (user, customer, pm) = w.paying_owner(3).await;
    let subscription = account(&w.db, user).await.unwrap().stripe_subscription_id.unwrap();

    let removed_at = w.now();
    w.detach_card(&customer, &pm).await;
    w.wait_plan(user, "free").await;
    let changes = w.plan_changes_of(user).await;
    let reasons: Vec<(&str, &str, i32)> =
        changes.iter().map(|c| (c.plan.as_str(), c.reason.as_str(), c.max_active_projects)).collect();
    assert_eq!(reasons, [("payg", "chosen", 5), ("free", "card_removed", 1)]);
    // The subscription ended with a final invoice of the usage so far.
    let sub = w.sim.subscriptions().into_iter().find(|s| s["id"] == subscription.as_str()).unwrap();
    assert_eq!(sub["status"], "canceled");
    let view = w.plan(user).await;
    let r = restriction(&view, "over_project_limit").expect("a deadline");
    let deadline = at_of(&r["deadline"]);
    assert!((deadline - removed_at - 7 * DAY).abs() < 120, "seven days: {r}");
    assert_eq!(view["suspended"], false);
    // The owner and the admins are mailed once, with the projects listed.
    assert_eq!(w.mails("billing.over_project_limit").await, 1);
    let listed = count(
        &w.db,
        "mail_outbox WHERE text_body LIKE '%project_0%' AND text_body LIKE '%project_1%' AND text_body LIKE '%project_2%'",
    )
    .await;
    assert_eq!(listed, 2, "the owner's mail and the admins' alert list the projects");

    // Before the deadline nothing is suspended, however often the enforcer runs.
    assert_eq!(w.pass().await.suspended, 0);
    w.at(deadline - 60).await;
    assert_eq!(w.pass().await.suspended, 0);
    assert!(w.restricted_of(user).await.is_empty());

    w.at(deadline + 1).await;
    assert_eq!(w.pass().await.suspended, 1);
    assert_eq!(w.pass().await.suspended, 0, "once");
    let restricted = w.restricted_of(user).await;
    assert_eq!(restricted.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(), ["over_project_limit"]);
    assert_eq!(w.mails("billing.suspended").await, 1);
    let view = w.plan(user).await;
    assert_eq!(view["suspended"], true);

    // A replica started anew finds it done.
    let again = lifecycle_of(&w, &w.config, &w._clock_server.url()).await;
    assert_eq!(Enforcer(again).pass().await.unwrap().suspended, 0);
    assert_eq!((w.restricted_of(user).await.len(), w.mails("billing.suspended").await), (1, 1));

    // Projects deleted: the restriction clears and the suspension is lifted, once.
    w.count_projects(user, 1, &["project_0".to_owned()]).await;
    w.count_projects(user, 2, &[]).await;
    assert_eq!(w.lifted(user).await, 1);
    assert_eq!(w.mails("billing.reactivated").await, 1);
    let view = w.plan(user).await;
    assert_eq!((view["suspended"].as_bool(), view["restrictions"].as_array().unwrap().len()), (Some(false), 0));
    w.count_projects(user, 2, &[]).await;
    assert_eq!(w.lifted(user).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_deleted_or_a_card_added_before_the_deadline_suspend_nothing_and_one_project_is_free_at_once() {
    let w = world().await;
    catalog_ready(&w.sim).await;

    // Two of three projects deleted before the deadline.
    let (deleting, customer, pm) = w.paying_owner(3).await;
    w.detach_card(&customer, &pm).await;
    w.wait_plan(deleting, "free").await;
    let deadline = at_of(&restriction(&w.plan(deleting).await, "over_project_limit").unwrap()["deadline"]);
    w.count_projects(deleting, 1, &["kept".to_owned()]).await;
    w.count_projects(deleting, 2, &[]).await;
    assert!(w.plan(deleting).await["restrictions"].as_array().unwrap().is_empty(), "cleared");

    // A card added and payg chosen again before the deadline.
    let (returning, customer, pm) = w.paying_owner(3).await;
    w.detach_card(&customer, &pm).await;
    w.wait_plan(returning, "free").await;
    let (status, body) = w.choose(returning, "payg").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("card_required")), "{body}");
    w.attach_card(&customer).await;
    let (status, body) = w.choose(returning, "payg").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["now"]["restrictions"].as_array().unwrap().is_empty(), "{body}");
    let live = account(&w.db, returning).await.unwrap();
    assert_ne!(live.subscription_status.as_deref(), Some("canceled"), "a new subscription for payg: {live:?}");

    // One project: free at once, no deadline, no mail.
    let (single, customer, pm) = w.paying_owner(1).await;
    w.detach_card(&customer, &pm).await;
    w.wait_plan(single, "free").await;
    assert!(w.plan(single).await["restrictions"].as_array().unwrap().is_empty());

    w.at(deadline + 1).await;
    assert_eq!(w.pass().await.suspended, 0);
    for user in [deleting, returning, single] {
        assert!(w.restricted_of(user).await.is_empty());
        assert_eq!(w.lifted(user).await, 0);
    }
    assert_eq!(w.mails("billing.over_project_limit").await, 2, "the two owners over the limit, never the third");
    assert_eq!(w.mails("billing.suspended").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_payments_mail_each_time_and_paid_clears_or_lifts() {
    let w = world().await;
    catalog_ready(&w.sim).await;

    // Two failures, then paid before the deadline: two mails, nothing suspended.
    let (user, customer, _) = w.paying_owner(1).await;
    w.invoice(&customer, "in_a", Some(1)).await;
    w.pass().await;
    let first = w.now();
    w.at(first + 3 * DAY).await;
    w.invoice(&customer, "in_a", Some(2)).await;
    w.invoice(&customer, "in_a", Some(2)).await;
    w.pass().await;
    assert_eq!(w.mails("billing.payment_failed").await, 2, "one per failure");
    let r = restriction(&w.plan(user).await, "payment_failed").unwrap().clone();
    assert!((at_of(&r["deadline"]) - first - 14 * DAY).abs() < 120, "from the first failure: {r}");
    w.invoice(&customer, "in_a", None).await;
    w.pass().await;
    assert!(w.plan(user).await["restrictions"].as_array().unwrap().is_empty());
    w.at(first + 15 * DAY).await;
    assert_eq!(w.pass().await.suspended, 0);
    assert!(w.restricted_of(user).await.is_empty());

    // Unpaid past the deadline: suspended once; paid on the third retry: lifted once.
    let (late, customer, _) = w.paying_owner(1).await;
    w.invoice(&customer, "in_b", Some(1)).await;
    w.pass().await;
    let failed = w.now();
    w.at(failed + 14 * DAY + 60).await;
    w.invoice(&customer, "in_b", Some(2)).await;
    assert_eq!(w.pass().await.suspended, 1);
    assert_eq!(w.restricted_of(late).await.len(), 1);
    w.invoice(&customer, "in_b", None).await;
    w.pass().await;
    assert_eq!(w.lifted(late).await, 1);
    assert_eq!(w.pass().await, Pass::default());
    assert_eq!(w.lifted(late).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_exhausted_without_a_card_suspend_after_the_grace_and_buying_lifts() {
    let w = world().await;
    catalog_ready(&w.sim).await;
    let (user, row) = w.new_owner().await;
    let customer = row.stripe_customer_id.unwrap();
    let (status, body) = w.choose(user, "prepaid").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    w.publish(&CreditsExhaustedV1 { user_id: user.to_string() }, "billing").await;
    assert_eq!(w.mails("billing.credits_exhausted").await, 1);
    let r = restriction(&w.plan(user).await, "credits_exhausted").unwrap().clone();
    let deadline = at_of(&r["deadline"]);
    assert!((deadline - w.now() - 72 * 3600).abs() < 120, "{r}");
    w.at(deadline + 1).await;
    assert_eq!(w.pass().await.suspended, 1);

    // Credit bought through Checkout: cleared, lifted once.
    let session = format!("cs_{}", Uuid::new_v4().simple());
    sql(
        &w.db,
        &format!(
            "INSERT INTO credit_purchases (session_id, owner_id, amount_minor, currency) VALUES ('{session}', '{user}', 5000, 'usd')"
        ),
    )
    .await;
    let object = json!({"id": session, "object": "checkout.session", "mode": "payment", "payment_status": "paid", "customer": customer});
    w.stripe_event("checkout.session.completed", object, None).await;
    w.pass().await;
    assert_eq!(w.lifted(user).await, 1);
    assert_eq!(w.mails("billing.reactivated").await, 1);

    // With a card, running out of credit restricts nothing.
    w.attach_card(&customer).await;
    w.publish(&CreditsExhaustedV1 { user_id: user.to_string() }, "billing").await;
    assert!(w.plan(user).await["restrictions"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_enforcers_at_once_suspend_once_and_mail_once() {
    let w = world().await;
    catalog_ready(&w.sim).await;
    let mut owners = Vec::new();
    for _ in 0..3 {
        let (user, customer, pm) = w.paying_owner(3).await;
        w.detach_card(&customer, &pm).await;
        w.wait_plan(user, "free").await;
        owners.push(user);
    }
    w.at(w.now() + 8 * DAY).await;
    let other = lifecycle_of(&w, &w.config, &w._clock_server.url()).await;
    let (one, two) = (Enforcer(w.lifecycle.clone()), Enforcer(other));
    let (a, b) = tokio::join!(one.pass(), two.pass());
    assert_eq!(a.unwrap().suspended + b.unwrap().suspended, 3);
    for user in &owners {
        assert_eq!(w.restricted_of(*user).await.len(), 1, "one AccountRestricted each");
    }
    assert_eq!(w.mails("billing.suspended").await, 3, "one mail each");
    assert_eq!(w.pass().await.suspended, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plan_choices_are_refused_and_change_nothing() {
    let w = world().await;
    catalog_ready(&w.sim).await;
    let (user, _) = w.new_owner().await;
    let world = &w;
    let put = |body: Value, who| async move {
        world.call_with(Method::PUT, "/api/billing/plan", Some(&who), Some(body)).await
    };
    let cases = [
        (json!({"plan": "gold", "accept_terms": true, "terms_version": TERMS}), owner(user), 400, "invalid_plan"),
        (
            json!({"plan": "free", "accept_terms": false, "terms_version": TERMS}),
            owner(user),
            400,
            "terms_not_accepted",
        ),
        (json!({"plan": "free"}), owner(user), 400, "terms_not_accepted"),
        (
            json!({"plan": "free", "accept_terms": true, "terms_version": "2020-01-01"}),
            owner(user),
            409,
            "terms_outdated",
        ),
        (json!({"plan": "payg", "accept_terms": true, "terms_version": TERMS}), owner(user), 409, "card_required"),
        (
            json!({"plan": "free", "accept_terms": true, "terms_version": TERMS}),
            caller(user, &[Role::User, Role::Member]),
            403,
            "owner_only",
        ),
    ];
    for (body, who, status, code) in cases {
        let (s, answer) = put(body.clone(), who).await;
        assert_eq!((s.as_u16(), answer["code"].as_str()), (status, Some(code)), "{body}: {answer}");
    }
    let (s, answer) = w.call(Method::GET, "/api/billing/plan", Some(&caller(user, &[Role::User, Role::Member]))).await;
    assert_eq!((s, answer["code"].as_str()), (StatusCode::FORBIDDEN, Some("owner_only")));
    let view = w.plan(user).await;
    assert_eq!((view["plan"].clone(), view["terms_accepted"].clone()), (Value::Null, Value::Null));
    assert_eq!(count(&w.db, "plan_changes").await + count(&w.db, "terms_acceptances").await, 0);
    assert!(w.plan_changes_of(user).await.is_empty());
    assert_eq!(account(&w.db, user).await.unwrap().billing_mode, "postpaid");

    // A valid choice is recorded with the terms' version and time; the mode follows.
    let (status, body) = w.choose(user, "free").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["now"]["terms_accepted"]["version"], TERMS);
    assert_eq!(body["change"]["mode_change"]["mode"], "free");
    assert_eq!(w.plan_changes_of(user).await.len(), 1);

    // An admin sets a plan; anyone else is refused.
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    let path = format!("/api/admin/billing/{user}/plan");
    let (s, answer) = w.call_with(Method::PUT, &path, Some(&owner(user)), Some(json!({"plan": "prepaid"}))).await;
    assert_eq!((s, answer["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    let (s, answer) = w.call_with(Method::PUT, &path, Some(&admin), Some(json!({"plan": "prepaid"}))).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    let last = w.plan_changes_of(user).await.pop().unwrap();
    assert_eq!((last.plan.as_str(), last.reason.as_str()), ("prepaid", "admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspending_spending_cap_suspends_at_100_percent_until_raised_or_a_new_month() {
    let w = world().await;
    catalog_ready(&w.sim).await;
    let (user, _) = w.new_owner().await;
    let me = owner(user);
    let cap = |body: Value| w.call_with(Method::PUT, "/api/billing/cap", Some(&me), Some(body));
    let (status, answer) = cap(json!({"monthly_cap_minor": 100, "cap_action": "suspend"})).await;
    assert_eq!((status, answer["cap_action"].as_str()), (StatusCode::OK, Some("suspend")), "{answer}");
    let (_, answer) = cap(json!({"monthly_cap_minor": 150})).await;
    assert_eq!(answer["cap_action"], "suspend", "an omitted action is kept: {answer}");

    // 87.5 a window (a GPU for 15 minutes): 175 crosses the cap of 150.
    let gpu_window = |i: i64| (Uuid::now_v7(), usage(user, user, START - 3600 + i * 900, 900, (0, 0, 1)));
    for i in 0..2 {
        publish_usage(&w.bus, &[gpu_window(i)]).await;
        let entered = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
            count(&w.db, &format!("ledger_entries WHERE owner_id = '{user}'")).await == i + 1
        })
        .await;
        assert!(entered, "the ledger has the window");
    }
    let view = w.plan(user).await;
    let r = restriction(&view, "spending_cap").expect("the cap's restriction");
    assert_eq!(r["detail"], "2026-11");
    let told = count(
        &w.db,
        "mail_outbox WHERE kind = 'billing.spending_cap' AND text_body LIKE '%suspended until the next month%'",
    );
    assert_eq!(told.await, 3, "80, 90 and 100 % each say the cap suspends");
    assert_eq!(w.pass().await.suspended, 1);
    assert_eq!(w.restricted_of(user).await.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(), ["spending_cap"]);

    // A cap above the month's cost lifts it once; crossing the new cap suspends again.
    let (status, _) = cap(json!({"monthly_cap_minor": 200})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w.lifted(user).await, 1);
    publish_usage(&w.bus, &[gpu_window(2)]).await;
    let reopened = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        restriction(&w.plan(user).await, "spending_cap").is_some()
    })
    .await;
    assert!(reopened, "262.5 is over 200");
    assert_eq!(w.pass().await.suspended, 1);
    assert_eq!(w.restricted_of(user).await.len(), 2);

    // The next month clears it.
    w.at(START - 10 * 3600 + 28 * DAY + 60).await;
    assert_eq!(w.pass().await.new_months, 1);
    assert_eq!(w.lifted(user).await, 2);
    assert_eq!(w.pass().await, Pass::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_completes_a_lost_subscription_record_through_the_user_created_path_and_nothing_more() {
    let w = world().await;
    catalog_ready(&w.sim).await;
    let (user, row) = w.new_owner().await;
    let subscription = row.stripe_subscription_id.clone().unwrap();
    // The record of the subscription Stripe made was lost.
    sql(
        &w.db,
        &format!(
            "UPDATE accounts SET stripe_subscription_id = NULL, subscription_status = NULL WHERE user_id = '{user}'"
        ),
    )
    .await;
    w.publish(&UserSignedInV1 { user_id: user.to_string() }, "identity").await;
    let repaired = account(&w.db, user).await.unwrap();
    assert_eq!(
        repaired.stripe_subscription_id.as_deref(),
        Some(subscription.as_str()),
        "Stripe's subscription found again"
    );
    let customer = row.stripe_customer_id.unwrap();
    assert_eq!(w.sim.subscriptions().iter().filter(|s| s["customer"] == customer.as_str()).count(), 1, "none made");
    assert_eq!(w.sim.customers().iter().filter(|c| c["id"] == customer.as_str()).count(), 1);

    // A complete account, a free owner whose subscription ended, and a person billing has no
    // account for: nothing is done.
    w.publish(&UserSignedInV1 { user_id: user.to_string() }, "identity").await;
    let (free, customer, pm) = w.paying_owner(1).await;
    w.detach_card(&customer, &pm).await;
    w.wait_plan(free, "free").await;
    let before = account(&w.db, free).await.unwrap();
    assert_eq!(before.subscription_status.as_deref(), Some("canceled"));
    w.publish(&UserSignedInV1 { user_id: free.to_string() }, "identity").await;
    let stranger = Uuid::now_v7();
    w.publish(&UserSignedInV1 { user_id: stranger.to_string() }, "identity").await;
    assert_eq!(account(&w.db, free).await.unwrap(), before);
    assert!(account(&w.db, stranger).await.is_none());
    assert_eq!(w.sim.subscriptions().iter().filter(|s| s["customer"] == customer.as_str()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_deleted_at_stripe_moves_the_owner_to_free_with_a_deadline_over_the_allowance() {
    let w = world().await;
    catalog_ready(&w.sim).await;
    let (user, customer, _) = w.paying_owner(2).await;
    let subscription = account(&w.db, user).await.unwrap().stripe_subscription_id.unwrap();
    // Cancelled at Stripe (the portal, or Stripe after its retries), then announced by webhook.
    let cancelled: Value = w.lifecycle.stripe.delete(&format!("subscriptions/{subscription}")).await.unwrap();
    assert_eq!(cancelled["status"], "canceled");
    let object = json!({"id": subscription, "object": "subscription", "customer": customer, "status": "canceled"});
    w.stripe_event("customer.subscription.deleted", object.clone(), None).await;
    w.stripe_event("customer.subscription.deleted", object, None).await;
    assert_eq!(w.pass().await.signals, 1, "one signal for both deliveries");
    let last = w.plan_changes_of(user).await.pop().unwrap();
    assert_eq!((last.plan.as_str(), last.reason.as_str()), ("free", "subscription_deleted"));
    assert_eq!(w.plan_changes_of(user).await.len(), 2, "payg chosen, then free once");
    let view = w.plan(user).await;
    assert!(restriction(&view, "over_project_limit").is_some(), "{view}");
    assert_eq!(w.mails("billing.over_project_limit").await, 1);

    // A member's subscription cancelled on joining a team changes no plan.
    let (member, row) = w.new_owner().await;
    let sub = row.stripe_subscription_id.unwrap();
    sql(&w.db, &format!("UPDATE accounts SET team_membership_id = '{}', team_owner_id = '{user}', team_joined_at = now() WHERE user_id = '{member}'", Uuid::now_v7())).await;
    let _: Value = w.lifecycle.stripe.delete(&format!("subscriptions/{sub}")).await.unwrap();
    let object =
        json!({"id": sub, "object": "subscription", "customer": row.stripe_customer_id.unwrap(), "status": "canceled"});
    w.stripe_event("customer.subscription.deleted", object, None).await;
    assert_eq!(w.pass().await.signals, 1);
    assert!(w.plan_changes_of(member).await.is_empty());
}
