//! The signup journey through the gateway, with every service as its own process: Auth0 signup
//! → user → Stripe customer and subscription → Checkout completed in the sandbox → signed
//! webhook → PaymentMethodAddedV1 → cluster assigned → the Hopsworks user exists with the
//! person's subject and email. Then the same with the sandbox's faults on and services killed
//! mid-journey: still exactly one of everything per person and no cluster over capacity. No
//! secret the run used reaches a service's log line or an answer.
//!
//! The kills happen at named points (decision 0065), not after sleeps: billing while Stripe
//! holds its answer to a customer and to a subscription it made; provisioning right after its
//! PaymentMethodAdded consumer committed and before it acknowledged (the platform's kill
//! point); and provisioning after a Hopsworks user was made and before the assignment completed
//! (the sandbox holding the answer past provisioning's timeout).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::PaymentMethodAddedV1;
use hopsbridge_journey::{Options, Person, Platform, binaries, wait_for};
use hopsbridge_sandbox::hopsworks::Route;
use hopsbridge_sandbox::stripe::{HoldStatus, WebhookFaults};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_goes_from_signup_to_a_hopsworks_account() {
    let platform = Platform::start(binaries!(), &Options::default()).await;
    let person = platform.sign_up("ada").await;
    platform.wait_billing_account(&person, Duration::from_secs(30)).await;

    // Before a card: billing shows no payment method, and there is no cluster yet.
    let (status, billing) = platform.call("GET", "/api/billing", &person.token, None).await;
    assert_eq!(status, 200, "{billing}");
    let (status, cluster) = platform.call("GET", "/api/cluster", &person.token, None).await;
    assert_eq!(status, 404, "{cluster}");

    platform.add_card(&person).await;
    let cluster = platform.wait_assigned(&person, Duration::from_secs(30)).await;
    assert!(cluster["cluster"]["endpoint"].as_str().is_some_and(|e| e.starts_with("https://")), "{cluster}");

    // The card now shows on the billing page.
    let (status, billing) = platform.call("GET", "/api/billing", &person.token, None).await;
    assert_eq!(status, 200, "{billing}");
    assert_eq!(billing["payment_method"]["last4"], "4242", "{billing}");

    let audit = platform.audit(std::slice::from_ref(&person)).await;
    audit.assert_exactly_once();
    // The Hopsworks account carries the Auth0 subject and the email.
    let users: Vec<_> = platform.world.clusters.iter().flat_map(|c| c.hopsworks.users()).collect();
    let account = users.iter().find(|u| u.email == "ada@example.com").expect("a Hopsworks account");
    assert_eq!(
        account.uuid.as_deref(),
        Some(format!("{}.{}", platform.world.clusters[0].hopsworks.oauth_client_id(), person.auth0.sub).as_str())
    );
    assert!(platform.assigned_at.lock().unwrap().contains_key(&person.user_id), "ClusterAssignedV1 was published");

    // No secret the run used reached a service's log, an answer the person or admin received,
    // or an event.
    let scan = platform.secrets();
    assert_eq!(scan.names().len(), 17, "{:?}", scan.names());
    let transcript = platform.transcript().await;
    for place in ["billing log line", "gateway log line", "the answer 200 to GET /api/billing", "message 1 on "] {
        assert!(transcript.iter().any(|(p, _)| p.starts_with(place)), "nothing read from {place}…");
    }
    scan.assert_clean(transcript.iter().map(|(place, text)| (place.clone(), text.as_str())));
}

/// The consumer whose commit-to-ack gap the journey kills provisioning in.
const PAID_CONSUMER: &str = "provisioning-payment_method_added";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journey_survives_faults_and_kills_at_named_points_without_doing_anything_twice() {
    // Eight people for eight places: any double assignment or overfill shows. A killed
    // consumer's batch comes back after ten seconds.
    let ack_wait = || "10".to_owned();
    let options = Options {
        capacity: 4,
        settings: vec![
            (Service::Billing, "events.ack_wait_secs", ack_wait()),
            (Service::Provisioning, "events.ack_wait_secs", ack_wait()),
        ],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let stripe = &platform.world.stripe;
    // Stripe retries a failed delivery for minutes here (for days in production), not the
    // sandbox's default second: a delivery made while billing is killed and slow to come back
    // on a loaded machine must still reach it.
    stripe.set_webhook_faults(WebhookFaults {
        duplicate: true,
        out_of_order: true,
        concurrent: true,
        max_attempts: 12,
        backoff: Duration::from_millis(250),
        ..WebhookFaults::default()
    });
    stripe.set_rate_limit(Some(8));
    platform.world.clusters[0].hopsworks.fail_next(4, 503);
    platform.world.clusters[1].hopsworks.hold_next(2, Duration::from_secs(12));

    // Point 1: Stripe made a customer and billing has not recorded it. billing is killed while
    // Stripe holds that answer; the rest sign up while it is down.
    let hold = stripe.hold("POST", "/v1/customers", 1);
    let mut people = Vec::new();
    for i in 0..4 {
        people.push(platform.sign_up(&format!("early{i}")).await);
    }
    kill_while_held(&platform, &hold, "customers").await;
    for i in 0..4 {
        people.push(platform.sign_up(&format!("late{i}")).await);
    }
    // Point 1 again for a subscription: the first one billing creates once it is back.
    let hold = stripe.hold("POST", "/v1/subscriptions", 1);
    platform.start_service(Service::Billing);
    kill_while_held(&platform, &hold, "subscriptions").await;
    platform.start_service(Service::Billing);
    for person in &people {
        platform.wait_billing_account(person, Duration::from_secs(90)).await;
    }

    // Point 3: provisioning stops itself right after its PaymentMethodAdded consumer committed
    // a batch (the assignments and the inbox records) and before it acknowledged it.
    platform.kill_service(Service::Provisioning);
    let point = format!("consumer_committed:{PAID_CONSUMER}");
    platform.start_service_with(Service::Provisioning, &[("HOPSBRIDGE_KILL_POINT", &point)]);
    futures::future::join_all(people.iter().map(|p| platform.add_card(p))).await;
    wait_for("provisioning stops at its kill point", Duration::from_secs(60), || async {
        platform.service_exit(Service::Provisioning)
    })
    .await;
    let output = platform.service_output(Service::Provisioning);
    assert!(output.contains("kill point consumer_committed reached"), "{output}");
    let unacked = platform.consumer_state(Service::Billing, PAID_CONSUMER).await;
    assert!(unacked.ack_pending > 0, "the committed batch is not acknowledged: {unacked:?}");

    // Point 2: a Hopsworks user made and provisioning not told (the answer held past its
    // timeout). It is killed there, before it completes the assignment.
    for cluster in &platform.world.clusters {
        cluster.hopsworks.hold_next_on(Route::CreateUser, 1, Duration::from_secs(10));
    }
    platform.start_service(Service::Provisioning);
    let emails: Vec<&str> = people.iter().map(|p| p.auth0.email.as_str()).collect();
    let made = wait_for("a person's Hopsworks user is made", Duration::from_secs(90), || async {
        platform.world.clusters.iter().flat_map(|c| c.hopsworks.users()).find(|u| emails.contains(&u.email.as_str()))
    })
    .await;
    platform.kill_service(Service::Provisioning);
    let person = people.iter().find(|p| p.auth0.email == made.email).expect("the person");
    assert_ne!(assignment_status(&platform, person).await, "complete", "killed before the assignment completed");
    platform.start_service(Service::Provisioning);

    for person in &people {
        platform.wait_assigned(person, Duration::from_secs(120)).await;
    }
    stripe.set_rate_limit(None);
    // Everything has landed before counting: every webhook delivered, every outbox published,
    // and the killed batch redelivered and acknowledged by the inbox without a second effect.
    let messages = u64::try_from(platform.published::<PaymentMethodAddedV1>().await).unwrap();
    // A generous ceiling (a loaded machine took over 90 s once); what was still missing is said.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let acked = loop {
        let undelivered = stripe.deliveries().iter().filter(|d| !d.succeeded).count();
        let backlog = platform.outbox_backlog().await;
        let state = platform.consumer_state(Service::Billing, PAID_CONSUMER).await;
        let acked = state.ack_pending == 0 && state.pending == 0 && state.acknowledged == state.deliveries;
        if undelivered == 0 && backlog.values().all(|n| *n == 0) && acked {
            break state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "everything lands: not within 240 s: {undelivered} webhooks undelivered, outboxes {backlog:?}, \
             {PAID_CONSUMER}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(acked.deliveries > messages, "the killed batch was delivered again: {acked:?}, {messages} messages");
    platform.audit(&people).await.assert_exactly_once();
}

/// Waits until Stripe holds its answer to `hold`, then kills billing and releases the answer
/// (to nobody); billing has not recorded what Stripe made.
async fn kill_while_held(platform: &Platform, hold: &str, what: &str) {
    let stripe = &platform.world.stripe;
    wait_for("Stripe holds billing's request", Duration::from_secs(60), || async {
        matches!(stripe.hold_status(hold), Some(HoldStatus::Held { .. })).then_some(())
    })
    .await;
    platform.kill_service(Service::Billing);
    stripe.release(hold).unwrap();
    let (objects, column) = match what {
        "customers" => (stripe.customers(), "stripe_customer_id"),
        _ => (stripe.subscriptions(), "stripe_subscription_id"),
    };
    let mut conn = platform.db.connect("billing").await;
    let recorded: Vec<Text> =
        diesel::sql_query(format!("SELECT {column} AS text FROM accounts WHERE {column} IS NOT NULL"))
            .load(&mut conn)
            .await
            .unwrap();
    let unrecorded =
        objects.iter().filter_map(|o| o["id"].as_str()).filter(|id| !recorded.iter().any(|r| r.text == *id)).count();
    assert!(unrecorded > 0, "billing recorded every one of Stripe's {what} it was killed making");
}

/// The status of `person`'s assignment in provisioning.
async fn assignment_status(platform: &Platform, person: &Person) -> String {
    let mut conn = platform.db.connect("provisioning").await;
    let found: Text = diesel::sql_query("SELECT status AS text FROM assignments WHERE user_id = $1")
        .bind::<diesel::sql_types::Uuid, _>(person.user_id)
        .get_result(&mut conn)
        .await
        .unwrap();
    found.text
}

#[derive(QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    text: String,
}
