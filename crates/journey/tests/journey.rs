//! The signup journey through the gateway, with every service as its own process: Auth0 signup
//! → user → Stripe customer and subscription → Checkout completed in the sandbox → signed
//! webhook → PaymentMethodAddedV1 → cluster assigned → the Hopsworks user exists with the
//! person's subject and email. Then the same with the sandbox's faults on and services killed
//! mid-journey: still exactly one of everything per person and no cluster over capacity. No
//! secret the run used reaches a service's log line or an answer.

use hopsbridge_contracts::Service;
use hopsbridge_journey::{Options, Platform, binaries};
use hopsbridge_sandbox::stripe::WebhookFaults;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journey_survives_faults_without_doing_anything_twice() {
    // Eight people for eight places: any double assignment or overfill shows.
    let platform = Platform::start(binaries!(), &Options { capacity: 4, ..Options::default() }).await;
    let stripe = &platform.world.stripe;
    stripe.set_webhook_faults(WebhookFaults {
        duplicate: true,
        out_of_order: true,
        concurrent: true,
        ..WebhookFaults::default()
    });
    stripe.set_rate_limit(Some(8));
    platform.world.clusters[0].hopsworks.fail_next(4, 503);
    platform.world.clusters[1].hopsworks.hold_next(2, Duration::from_secs(12));

    let mut people = Vec::new();
    for i in 0..4 {
        people.push(platform.sign_up(&format!("early{i}")).await);
    }
    // billing dies while the first UserCreated events are being handled, and comes back.
    platform.kill_service(Service::Billing);
    for i in 0..4 {
        people.push(platform.sign_up(&format!("late{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    platform.start_service(Service::Billing);
    for person in &people {
        platform.wait_billing_account(person, Duration::from_secs(60)).await;
    }

    // Cards for everyone at once; provisioning dies mid-way and comes back.
    let adds = people.iter().map(|p| platform.add_card(p));
    futures::future::join_all(adds).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    platform.kill_service(Service::Provisioning);
    tokio::time::sleep(Duration::from_millis(500)).await;
    platform.start_service(Service::Provisioning);

    for person in &people {
        platform.wait_assigned(person, Duration::from_secs(90)).await;
    }
    stripe.set_rate_limit(None);
    // Let late duplicates and retries land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    platform.audit(&people).await.assert_exactly_once();
}
