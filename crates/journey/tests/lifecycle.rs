//! The account lifecycle end to end (decisions 0048 and 0050), every service as its own
//! process and the sandbox's clock moved forward: owners with a card, a cluster and projects
//! made on the sandbox's Hopsworks lose their card. The one with three projects who does nothing
//! is moved to free, mailed with the projects (the admins too), and suspended once at the
//! deadline with their member: identity, Hopsworks (blocked) and the gateway (403) all agree.
//! One who deletes two projects, and one who adds a card back and chooses pay as you go, are
//! never suspended; one with a single project is free at once with no deadline. Billing is
//! restarted mid-ladder and after the suspension, and every event and mail is counted per owner,
//! so one done twice fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::{
    AccountRestrictedV1, AccountRestrictionLiftedV1, PaymentMethodRemovedV1, PlanChangedV1, UserReactivatedV1,
    UserSuspendedV1,
};
use hopsbridge_journey::browser::Browser;
use hopsbridge_journey::{Options, Person, Platform, binaries, wait_for};
use hopsbridge_sandbox::auth0::TokenSpec;
use hopsbridge_sandbox::hopsworks::{Route, STATUS_ACTIVATED, STATUS_BLOCKED, User};
use hopsbridge_sandbox::world::lab_pods;
use serde_json::{Value, json};
use std::time::Duration;

/// How long an effect may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(90);
/// Where the admins' alerts go (the harness's `mail.admin_addresses`).
const ADMINS: &str = "ops@hopsbridge.test";

#[derive(QueryableByName)]
struct Json {
    #[diesel(sql_type = Nullable<Text>)]
    j: Option<String>,
}

/// The rows of `sql` in `schema`, as JSON objects.
async fn rows(platform: &Platform, schema: &str, sql: &str) -> Vec<Value> {
    let mut conn = platform.db.connect(schema).await;
    let wrapped = format!("SELECT json_agg(t)::text AS j FROM ({sql}) t");
    let found: Json = diesel::sql_query(wrapped).get_result(&mut conn).await.unwrap();
    found.j.map(|j| serde_json::from_str::<Value>(&j).unwrap()).and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

/// `person`'s open restrictions in billing, read from its database (the owner's own view is
/// refused once they are suspended).
async fn open_restrictions(platform: &Platform, person: &Person) -> Vec<Value> {
    let sql = format!(
        "SELECT reason, started_at, deadline, suspended_at FROM restrictions WHERE owner_id = '{}' AND cleared_at IS NULL",
        person.user_id
    );
    rows(platform, "billing", &sql).await
}

/// `person`'s status in identity and who suspended them.
async fn identity_status(platform: &Platform, person: &Person) -> (String, Option<String>) {
    let sql = format!("SELECT status, suspended_by FROM users WHERE id = '{}'", person.user_id);
    let row = rows(platform, "identity", &sql).await.into_iter().next().expect("the person in identity");
    (row["status"].as_str().unwrap().to_owned(), row["suspended_by"].as_str().map(str::to_owned))
}

/// Their Hopsworks account on the (only) cluster.
fn account(platform: &Platform, person: &Person) -> User {
    let users = platform.world.clusters[0].hopsworks.users();
    users.into_iter().find(|u| u.email.eq_ignore_ascii_case(&person.auth0.email)).expect("a Hopsworks account")
}

/// A token minted now (the gateway checks expiry; the clock moves days ahead).
fn fresh_token(platform: &Platform, person: &Person) -> String {
    let spec = TokenSpec { expires_in: 60 * 86_400, ..TokenSpec::user(&person.auth0) };
    platform.world.auth0.access_token(&spec).expect("access token")
}

/// Syncs the cluster's projects now as an admin does (`POST /api/admin/clusters/{id}/projects/sync`),
/// waiting out a scheduled sync under way.
async fn sync_projects(platform: &Platform) {
    let path = format!("/api/admin/clusters/{}/projects/sync", platform.cluster_ids[0]);
    wait_for("a project sync", PATIENCE, || async {
        let (status, answer) = platform.call("POST", &path, &platform.admin_token, None).await;
        assert!(status == 200 || status == 409, "the sync answered {status}: {answer}");
        (status == 200).then_some(())
    })
    .await;
}

/// The accounts whose Hopsworks status disagrees with ours, as an admin reads them
/// (`GET /api/admin/assignments/status-drift`), every cluster read.
async fn status_drift(platform: &Platform) -> Vec<Value> {
    let (status, report) =
        platform.call("GET", "/api/admin/assignments/status-drift", &platform.admin_token, None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["unread"], json!([]), "{report}");
    report["items"].as_array().expect("the drift's items").clone()
}

/// Waits until billing counts `n` active projects for `person`.
async fn wait_counted(platform: &Platform, person: &Person, n: i64) {
    let sql = format!(
        "SELECT COALESCE(sum(active_projects), 0)::bigint AS n FROM project_counts WHERE owner_id = '{}'",
        person.user_id
    );
    wait_for(&format!("billing counts {n} projects of {}", person.auth0.email), PATIENCE, || async {
        let found = rows(platform, "billing", &sql).await;
        (<[Value]>::first(&found).and_then(|r| r["n"].as_i64()) == Some(n)).then_some(())
    })
    .await;
}

/// Detaches every card of `person`'s Stripe customer through Stripe's API, as the billing
/// portal does; Stripe sends `payment_method.detached`.
async fn remove_cards(platform: &Platform, person: &Person) {
    let stripe = &platform.world.stripe;
    let id = person.user_id.to_string();
    let customer = stripe
        .customers()
        .into_iter()
        .find(|c| c["metadata"]["hopsbridge_user_id"] == id.as_str())
        .expect("the person's Stripe customer");
    let cards: Vec<String> = stripe
        .payment_methods()
        .into_iter()
        .filter(|m| m["customer"] == customer["id"])
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!cards.is_empty(), "{} has a card", person.auth0.email);
    let http = reqwest::Client::new();
    for card in cards {
        let response = http
            .post(format!("{}/v1/payment_methods/{card}/detach", stripe.url()))
            .bearer_auth(stripe.secret_key())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "detach {card}");
    }
}

/// An owner with a card and a Hopsworks account, with `projects` made on Hopsworks as them.
async fn owner_with_projects(platform: &Platform, handle: &str, projects: usize) -> (Person, Vec<u64>) {
    let person = platform.sign_up(handle).await;
    platform.wait_billing_account(&person, PATIENCE).await;
    platform.add_card(&person).await;
    let cluster = platform.wait_assigned(&person, PATIENCE).await;
    let username = cluster["hopsworks_username"].as_str().expect("the Hopsworks username").to_owned();
    let hopsworks = &platform.world.clusters[0].hopsworks;
    let ids =
        (0..projects).map(|i| hopsworks.create_project(&username, &format!("{handle}_p{i}")).unwrap().id).collect();
    (person, ids)
}

/// `person` adds a card through Checkout and chooses pay as you go once billing has it.
async fn card_back_on_payg(platform: &Platform, person: &Person) {
    platform.add_card(person).await;
    let terms = platform.retry_call("GET", "/api/billing/plan", &person.token).await["terms_version"].clone();
    let body = json!({ "plan": "payg", "accept_terms": true, "terms_version": terms });
    wait_for(&format!("{} chooses pay as you go with the card back", person.auth0.email), PATIENCE, || async {
        let (status, answer) = platform.call("PUT", "/api/billing/plan", &person.token, Some(body.clone())).await;
        // 409 card_required until billing has the card.
        assert!(status == 200 || status == 409, "{status} {answer}");
        (status == 200).then_some(())
    })
    .await;
}

/// Mails to `address` whose subject contains `about`.
fn mails(platform: &Platform, address: &str, about: &str) -> Vec<hopsbridge_sandbox::mail::Message> {
    platform.world.mail.messages_to(address).into_iter().filter(|m| m.subject.contains(about)).collect()
}

fn count_for<E>(events: &[E], user: &Person, id: impl Fn(&E) -> &str) -> usize {
    let user = user.user_id.to_string();
    events.iter().filter(|e| id(e) == user).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_removed_moves_owners_to_free_and_suspends_only_the_one_still_over_the_limit_once() {
    let options = Options {
        clusters: 1,
        settings: vec![
            (Service::Billing, "lifecycle.enforce_interval_secs", "1".to_owned()),
            // Metering looks back an hour, not a day, after the clock's jump.
            (Service::Metering, "schedule.lookback_secs", "3600".to_owned()),
        ],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let hopsworks = &platform.world.clusters[0].hopsworks;
    // Two billing processes throughout: both consume the events and run the enforcer.
    let replica = platform.start_replica(Service::Billing, "billing-2");

    // Four owners with a card: three with three projects, one with one; the first has a member.
    let ((ada, _), (bea, bea_projects), (cal, _), (dan, _)) = tokio::join!(
        owner_with_projects(&platform, "ada", 3),
        owner_with_projects(&platform, "bea", 3),
        owner_with_projects(&platform, "cal", 3),
        owner_with_projects(&platform, "dan", 1),
    );
    let owners = [&ada, &bea, &cal, &dan];
    let invitation = platform.invite(&ada, "max@example.com", "Data scientist").await;
    let max = platform.sign_up("max").await;
    platform.wait_billing_account(&max, PATIENCE).await;
    platform.join(&max, &invitation.token).await;
    platform.wait_assigned(&max, PATIENCE).await;

    // The sync counts each owner's projects.
    sync_projects(&platform).await;
    for (owner, n) in [(&ada, 3), (&bea, 3), (&cal, 3), (&dan, 1)] {
        wait_counted(&platform, owner, n).await;
    }

    // Every owner loses their last card.
    for owner in owners {
        remove_cards(&platform, owner).await;
    }
    for owner in owners {
        wait_for(&format!("{} moved to free", owner.auth0.email), PATIENCE, || async {
            let (status, plan) = platform.call("GET", "/api/billing/plan", &owner.token, None).await;
            assert_eq!(status, 200, "{plan}");
            (plan["plan"] == "free").then_some(())
        })
        .await;
    }
    // Three are over the free plan's one project: a deadline seven days ahead, a mail to the
    // owner and to the admins listing the projects. The fourth is free with no deadline.
    let started = platform.world.clock.now();
    for owner in [&ada, &bea, &cal] {
        let open = open_restrictions(&platform, owner).await;
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(open[0]["reason"], "over_project_limit", "{open:?}");
        let deadline = chrono::DateTime::parse_from_rfc3339(open[0]["deadline"].as_str().unwrap()).unwrap().timestamp();
        assert!((deadline - started - 7 * 86_400).abs() < 600, "deadline {deadline}, now {started}");
        let handle = owner.auth0.email.split('@').next().unwrap();
        let names: Vec<String> = (0..3).map(|i| format!("{handle}_p{i}")).collect();
        let mail = wait_for("the owner's mail", PATIENCE, || async {
            let found = mails(&platform, &owner.auth0.email, "free plan");
            found.into_iter().next()
        })
        .await;
        assert!(names.iter().all(|n| mail.text.contains(n.as_str())), "{names:?} in {}", mail.text);
        let id = owner.user_id.to_string();
        let alert =
            wait_for("the admins' alert", PATIENCE, || async { mails(&platform, ADMINS, &id).into_iter().next() })
                .await;
        assert!(names.iter().all(|n| alert.text.contains(n.as_str())), "{names:?} in {}", alert.text);
    }
    assert!(open_restrictions(&platform, &dan).await.is_empty(), "one project is within the free plan");
    let changes = platform.published_events::<PlanChangedV1>().await;
    for owner in owners {
        let theirs: Vec<&PlanChangedV1> = changes.iter().filter(|c| c.user_id == owner.user_id.to_string()).collect();
        assert_eq!(theirs.len(), 1, "{theirs:?}");
        assert_eq!((theirs[0].plan.as_str(), theirs[0].reason.as_str()), ("free", "card_removed"), "{theirs:?}");
    }

    // Before the deadline: bea deletes two projects; cal adds a card and chooses pay as you go.
    for id in &bea_projects[1..] {
        hopsworks.delete_project(*id).unwrap();
    }
    sync_projects(&platform).await;
    card_back_on_payg(&platform, &cal).await;
    for owner in [&bea, &cal] {
        wait_for(&format!("{}'s deadline cleared", owner.auth0.email), PATIENCE, || async {
            open_restrictions(&platform, owner).await.is_empty().then_some(())
        })
        .await;
    }

    // Billing restarts mid-ladder (its second replica runs on); Hopsworks refuses every change
    // of a user; then the deadline passes.
    platform.kill_service(Service::Billing);
    platform.start_service(Service::Billing);
    hopsworks.fail_next_on(Route::UpdateUser, 100_000, 503);
    platform.world.advance(Duration::from_secs(7 * 86_400 + 120));

    // ada and her member are suspended in identity and refused by the gateway; while
    // Hopsworks refuses, the admins' drift view lists both with the push's error.
    for person in [&ada, &max] {
        wait_for(&format!("{} suspended in identity", person.auth0.email), PATIENCE, || async {
            (identity_status(&platform, person).await.0 == "suspended").then_some(())
        })
        .await;
        let (status, refused) = platform.call("GET", "/api/me", &fresh_token(&platform, person), None).await;
        assert_eq!((status, refused["code"].as_str()), (403, Some("account_suspended")), "{refused}");
    }
    // In the console, suspended ada still reaches her billing page (to add a card), and no other.
    let mut browser = Browser::new(&platform.gateway);
    let back = browser.sign_in(&platform, &ada, "/billing").await;
    let billing = browser.get(&back).await;
    assert_eq!(billing.status, 200, "the billing page for a suspended owner: {}", billing.body);
    let usage = browser.get("/usage").await;
    assert_eq!(usage.status, 403, "other pages refuse her: {}", usage.body);
    let drift = wait_for("both in the drift view with the push's error", PATIENCE, || async {
        let items = status_drift(&platform).await;
        let erred = |p: &Person| {
            items.iter().any(|i| i["user_id"] == p.user_id.to_string().as_str() && i["sync_error"].is_string())
        };
        (erred(&ada) && erred(&max)).then_some(items)
    })
    .await;
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert!(drift.iter().all(|i| i["wanted_hopsworks_status"] == 4 && i["hopsworks_status"] == 2), "{drift:?}");
    assert_eq!(account(&platform, &ada).status, STATUS_ACTIVATED, "Hopsworks refused the block so far");

    // Hopsworks answers again: both blocked, the drift view empty.
    hopsworks.clear_faults();
    for person in [&ada, &max] {
        wait_for(&format!("{} blocked in Hopsworks", person.auth0.email), PATIENCE, || async {
            (account(&platform, person).status == STATUS_BLOCKED).then_some(())
        })
        .await;
    }
    wait_for("an empty drift view", PATIENCE, || async { status_drift(&platform).await.is_empty().then_some(()) })
        .await;
    assert_eq!(identity_status(&platform, &ada).await.1.as_deref(), Some("billing"));
    assert_eq!(identity_status(&platform, &max).await.1.as_deref(), Some("owner"));

    // Billing restarts after the suspension; several enforcer passes later, everything
    // happened once.
    platform.kill_service(Service::Billing);
    platform.start_service(Service::Billing);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restricted = platform.published_events::<AccountRestrictedV1>().await;
    assert_eq!(restricted.len(), 1, "{restricted:?}");
    assert_eq!(count_for(&restricted, &ada, |e| &e.user_id), 1);
    assert_eq!(restricted[0].reason, "over_project_limit");
    let suspended = platform.published_events::<UserSuspendedV1>().await;
    assert_eq!(suspended.len(), 2, "{suspended:?}");
    assert_eq!(count_for(&suspended, &ada, |e| &e.user_id), 1);
    assert_eq!(count_for(&suspended, &max, |e| &e.user_id), 1);
    let suspension_mails = wait_for("the suspension mail", PATIENCE, || async {
        Some(mails(&platform, &ada.auth0.email, "is suspended")).filter(|m| !m.is_empty())
    })
    .await;
    assert_eq!(suspension_mails.len(), 1, "one suspension mail");
    assert_eq!(mails(&platform, &ada.auth0.email, "free plan").len(), 1, "one deadline mail");

    // The others are active everywhere.
    for owner in [&bea, &cal, &dan] {
        assert_eq!(identity_status(&platform, owner).await, ("active".to_owned(), None));
        assert_eq!(account(&platform, owner).status, STATUS_ACTIVATED, "{}", owner.auth0.email);
        let (status, me) = platform.call("GET", "/api/me", &fresh_token(&platform, owner), None).await;
        assert_eq!(status, 200, "{me}");
        assert!(mails(&platform, &owner.auth0.email, "is suspended").is_empty());
        assert!(mails(&platform, &owner.auth0.email, "free plan").len() <= 1);
    }
    assert!(mails(&platform, &dan.auth0.email, "free plan").is_empty(), "no deadline for one project");

    // Suspended, ada still reaches the billing page: a card back and pay as you go lift the
    // suspension, and she and her member are active everywhere again, once.
    card_back_on_payg(&platform, &ada).await;
    for person in [&ada, &max] {
        wait_for(&format!("{} active in identity", person.auth0.email), PATIENCE, || async {
            (identity_status(&platform, person).await == ("active".to_owned(), None)).then_some(())
        })
        .await;
        wait_for(&format!("{} activated in Hopsworks", person.auth0.email), PATIENCE, || async {
            (account(&platform, person).status == STATUS_ACTIVATED).then_some(())
        })
        .await;
        let (status, me) = platform.call("GET", "/api/me", &fresh_token(&platform, person), None).await;
        assert_eq!(status, 200, "{me}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lifted = platform.published_events::<AccountRestrictionLiftedV1>().await;
    assert_eq!((lifted.len(), count_for(&lifted, &ada, |e| &e.user_id)), (1, 1), "{lifted:?}");
    let reactivated = platform.published_events::<UserReactivatedV1>().await;
    assert_eq!(reactivated.len(), 2, "{reactivated:?}");
    assert_eq!(count_for(&reactivated, &ada, |e| &e.user_id), 1);
    assert_eq!(count_for(&reactivated, &max, |e| &e.user_id), 1);
    assert_eq!(mails(&platform, &ada.auth0.email, "is suspended").len(), 1);

    let ready = reqwest::get(format!("{replica}/readyz")).await.unwrap().status();
    assert_eq!(ready, 200, "the second billing ran throughout");
}

/// `person`'s Stripe customer id.
fn customer_of(platform: &Platform, person: &Person) -> String {
    let id = person.user_id.to_string();
    let customer =
        platform.world.stripe.customers().into_iter().find(|c| c["metadata"]["hopsbridge_user_id"] == id.as_str());
    customer.expect("the person's Stripe customer")["id"].as_str().unwrap().to_owned()
}

/// An invoice of `person`'s live subscription whose first payment fails, the card declining
/// from now on; answers the invoice's id.
fn failing_invoice(platform: &Platform, person: &Person) -> String {
    let stripe = &platform.world.stripe;
    let customer = customer_of(platform, person);
    let subscription = stripe
        .subscriptions()
        .into_iter()
        .find(|s| s["customer"] == customer.as_str() && s["status"] == "active")
        .expect("a live subscription");
    for card in stripe.payment_methods().into_iter().filter(|m| m["customer"] == customer.as_str()) {
        stripe.decline_charges(card["id"].as_str().unwrap(), true);
    }
    let items = subscription["items"]["data"].as_array().unwrap().len();
    let mut amounts = vec![0; items];
    amounts[0] = 1_250;
    let invoice = stripe.create_invoice(subscription["id"].as_str().unwrap(), &amounts, false).unwrap();
    assert_eq!(invoice["status"], "open", "{invoice}");
    invoice["id"].as_str().unwrap().to_owned()
}

/// `person`'s cards charge again.
fn cards_work(platform: &Platform, person: &Person) {
    let customer = customer_of(platform, person);
    for card in platform.world.stripe.payment_methods().into_iter().filter(|m| m["customer"] == customer.as_str()) {
        platform.world.stripe.decline_charges(card["id"].as_str().unwrap(), false);
    }
}

/// Waits until `person` has `n` mails saying a payment failed.
async fn wait_failure_mails(platform: &Platform, person: &Person, n: usize) {
    wait_for(&format!("{n} payment failure mails to {}", person.auth0.email), PATIENCE, || async {
        (mails(platform, &person.auth0.email, "payment to Hopsbridge failed").len() == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_payments_mail_each_failure_and_suspend_only_past_the_days_unpaid_and_paying_reactivates() {
    let options = Options {
        clusters: 1,
        settings: vec![
            (Service::Billing, "lifecycle.enforce_interval_secs", "1".to_owned()),
            (Service::Metering, "schedule.lookback_secs", "3600".to_owned()),
        ],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let stripe = &platform.world.stripe;
    let day = Duration::from_secs(86_400);

    // Two paying owners with a Hopsworks account; an invoice of each fails.
    let ((eve, _), (fay, _)) =
        tokio::join!(owner_with_projects(&platform, "eve", 0), owner_with_projects(&platform, "fay", 0));
    let eve_invoice = failing_invoice(&platform, &eve);
    let fay_invoice = failing_invoice(&platform, &fay);
    let first_failure = platform.world.clock.now();
    wait_failure_mails(&platform, &eve, 1).await;
    wait_failure_mails(&platform, &fay, 1).await;

    // Stripe retries eve's twice more over the following days, failing: a mail each time,
    // one restriction due fourteen days after the first failure.
    for attempt in 2..=3 {
        platform.world.advance(3 * day);
        let retried = stripe.retry_invoice_payment(&eve_invoice).unwrap();
        assert_eq!((retried["status"].as_str(), retried["attempt_count"].as_i64()), (Some("open"), Some(attempt)));
        wait_failure_mails(&platform, &eve, usize::try_from(attempt).unwrap()).await;
    }
    let open = open_restrictions(&platform, &eve).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["reason"], "payment_failed", "{open:?}");
    let deadline = chrono::DateTime::parse_from_rfc3339(open[0]["deadline"].as_str().unwrap()).unwrap().timestamp();
    assert!((deadline - first_failure - 14 * 86_400).abs() < 600, "deadline {deadline}, first failure {first_failure}");

    // The third retry is paid (the card works again): the restriction is cleared, and the
    // fourteenth day passes with eve active.
    platform.world.advance(3 * day);
    cards_work(&platform, &eve);
    let paid = stripe.retry_invoice_payment(&eve_invoice).unwrap();
    assert_eq!((paid["status"].as_str(), paid["attempt_count"].as_i64()), (Some("paid"), Some(4)), "{paid}");
    wait_for("eve's restriction cleared by the payment", PATIENCE, || async {
        open_restrictions(&platform, &eve).await.is_empty().then_some(())
    })
    .await;
    platform.world.advance(5 * day + Duration::from_secs(120));

    // fay's invoice stays unpaid past the fourteen days: suspended in identity and Hopsworks,
    // refused by the gateway.
    wait_for("fay suspended in identity", PATIENCE, || async {
        (identity_status(&platform, &fay).await == ("suspended".to_owned(), Some("billing".to_owned()))).then_some(())
    })
    .await;
    wait_for("fay blocked in Hopsworks", PATIENCE, || async {
        (account(&platform, &fay).status == STATUS_BLOCKED).then_some(())
    })
    .await;
    let (status, refused) = platform.call("GET", "/api/me", &fresh_token(&platform, &fay), None).await;
    assert_eq!((status, refused["code"].as_str()), (403, Some("account_suspended")), "{refused}");

    // fay pays: reactivated in identity and Hopsworks, the gateway lets her in.
    cards_work(&platform, &fay);
    let paid = stripe.retry_invoice_payment(&fay_invoice).unwrap();
    assert_eq!(paid["status"], "paid", "{paid}");
    wait_for("fay active in identity", PATIENCE, || async {
        (identity_status(&platform, &fay).await.0 == "active").then_some(())
    })
    .await;
    wait_for("fay activated in Hopsworks", PATIENCE, || async {
        (account(&platform, &fay).status == STATUS_ACTIVATED).then_some(())
    })
    .await;
    let (status, me) = platform.call("GET", "/api/me", &fresh_token(&platform, &fay), None).await;
    assert_eq!(status, 200, "{me}");

    // eve was never suspended; each of fay's effects happened once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(identity_status(&platform, &eve).await, ("active".to_owned(), None));
    assert_eq!(account(&platform, &eve).status, STATUS_ACTIVATED);
    assert_eq!(mails(&platform, &eve.auth0.email, "payment to Hopsbridge failed").len(), 3);
    assert!(mails(&platform, &eve.auth0.email, "is suspended").is_empty());
    let restricted = platform.published_events::<AccountRestrictedV1>().await;
    assert_eq!((restricted.len(), count_for(&restricted, &fay, |e| &e.user_id)), (1, 1), "{restricted:?}");
    assert_eq!(restricted[0].reason, "payment_failed");
    let lifted = platform.published_events::<AccountRestrictionLiftedV1>().await;
    assert_eq!((lifted.len(), count_for(&lifted, &fay, |e| &e.user_id)), (1, 1), "{lifted:?}");
    let suspended = platform.published_events::<UserSuspendedV1>().await;
    assert_eq!((suspended.len(), count_for(&suspended, &fay, |e| &e.user_id)), (1, 1), "{suspended:?}");
    let reactivated = platform.published_events::<UserReactivatedV1>().await;
    assert_eq!((reactivated.len(), count_for(&reactivated, &fay, |e| &e.user_id)), (1, 1), "{reactivated:?}");
    assert_eq!(mails(&platform, &fay.auth0.email, "is suspended").len(), 1);
}

/// Buys `amount_minor` of credits through Checkout (`POST /api/credits/purchase`) as `token`'s
/// holder and pays in the sandbox.
async fn buy_credits(platform: &Platform, token: &str, amount_minor: i64) {
    let body = json!({ "amount_minor": amount_minor });
    let (status, purchase) = platform.call("POST", "/api/credits/purchase", token, Some(body)).await;
    assert_eq!(status, 200, "{purchase}");
    platform.world.stripe.complete_checkout_session(purchase["id"].as_str().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_exhausted_without_a_card_suspend_after_the_grace_and_buying_credits_reactivates() {
    // pia's lab (a GPU training pod among others) runs from the start; two-second windows.
    let options = Options {
        clusters: 1,
        metering_window_secs: 2,
        lab_owners: vec!["pia10000".to_owned()],
        settings: vec![
            (Service::Billing, "lifecycle.enforce_interval_secs", "1".to_owned()),
            (Service::Billing, "ledger.window_secs", "2".to_owned()),
            (Service::Billing, "credits.min_purchase", "50".to_owned()),
            (Service::Metering, "schedule.lookback_secs", "60".to_owned()),
        ],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;

    // pia chooses prepaid, gets her cluster with a card, then removes the card: prepaid keeps
    // its plan.
    let pia = platform.sign_up("pia").await;
    platform.wait_billing_account(&pia, PATIENCE).await;
    let terms = platform.retry_call("GET", "/api/billing/plan", &pia.token).await["terms_version"].clone();
    let body = json!({ "plan": "prepaid", "accept_terms": true, "terms_version": terms });
    let (status, chosen) = platform.call("PUT", "/api/billing/plan", &pia.token, Some(body)).await;
    assert_eq!(status, 200, "{chosen}");
    platform.add_card(&pia).await;
    let cluster = platform.wait_assigned(&pia, PATIENCE).await;
    assert_eq!(cluster["hopsworks_username"], "pia10000", "{cluster}");
    remove_cards(&platform, &pia).await;
    wait_for("billing sees pia's card gone", PATIENCE, || async {
        let id = pia.user_id.to_string();
        let removed = platform.published_events::<PaymentMethodRemovedV1>().await;
        removed.iter().any(|e| e.user_id == id).then_some(())
    })
    .await;
    let (status, plan) = platform.call("GET", "/api/billing/plan", &pia.token, None).await;
    assert_eq!((status, plan["plan"].as_str()), (200, Some("prepaid")), "{plan}");

    // Fifty cents of credits (Stripe's least) and sixty more GPU pods: the lab uses them up
    // within seconds, and with no card she is warned with a deadline 72 hours ahead.
    let training = lab_pods("pia10000", platform.world.clock.now())
        .into_iter()
        .find(|p| p.name.starts_with("training"))
        .expect("the lab's training pod");
    let pods = (0..60)
        .map(|k| {
            let mut pod = training.clone();
            pod.name = format!("training{k}-pia10000");
            pod.uid = format!("uid-{}-training{k}", pod.namespace);
            pod
        })
        .collect();
    platform.world.clusters[0].kubernetes.run_pods(pods).unwrap();
    let bought_at = platform.world.clock.now();
    buy_credits(&platform, &pia.token, 50).await;
    let restriction = wait_for("the credits_exhausted restriction", PATIENCE, || async {
        let open = open_restrictions(&platform, &pia).await;
        open.into_iter().find(|r| {
            r["reason"] == "credits_exhausted"
                && chrono::DateTime::parse_from_rfc3339(r["started_at"].as_str().unwrap()).unwrap().timestamp()
                    >= bought_at
        })
    })
    .await;
    let deadline = chrono::DateTime::parse_from_rfc3339(restriction["deadline"].as_str().unwrap()).unwrap().timestamp();
    let started =
        chrono::DateTime::parse_from_rfc3339(restriction["started_at"].as_str().unwrap()).unwrap().timestamp();
    assert_eq!(deadline - started, 72 * 3600, "{restriction}");
    wait_for("the credits mail", PATIENCE, || async {
        Some(mails(&platform, &pia.auth0.email, "credits ran out")).filter(|m| !m.is_empty())
    })
    .await;

    // The grace passes: suspended in identity and Hopsworks, refused by the gateway.
    platform.world.advance(Duration::from_secs(72 * 3600 + 120));
    wait_for("pia suspended in identity", PATIENCE, || async {
        (identity_status(&platform, &pia).await == ("suspended".to_owned(), Some("billing".to_owned()))).then_some(())
    })
    .await;
    wait_for("pia blocked in Hopsworks", PATIENCE, || async {
        (account(&platform, &pia).status == STATUS_BLOCKED).then_some(())
    })
    .await;
    let token = fresh_token(&platform, &pia);
    let (status, refused) = platform.call("GET", "/api/me", &token, None).await;
    assert_eq!((status, refused["code"].as_str()), (403, Some("account_suspended")), "{refused}");

    // Suspended, she still reaches the billing page and buys credits: reactivated everywhere.
    buy_credits(&platform, &token, 1_000).await;
    wait_for("pia active in identity", PATIENCE, || async {
        (identity_status(&platform, &pia).await.0 == "active").then_some(())
    })
    .await;
    wait_for("pia activated in Hopsworks", PATIENCE, || async {
        (account(&platform, &pia).status == STATUS_ACTIVATED).then_some(())
    })
    .await;
    let (status, me) = platform.call("GET", "/api/me", &token, None).await;
    assert_eq!(status, 200, "{me}");

    // Once each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restricted = platform.published_events::<AccountRestrictedV1>().await;
    assert_eq!((restricted.len(), count_for(&restricted, &pia, |e| &e.user_id)), (1, 1), "{restricted:?}");
    assert_eq!(restricted[0].reason, "credits_exhausted");
    let lifted = platform.published_events::<AccountRestrictionLiftedV1>().await;
    assert_eq!(count_for(&lifted, &pia, |e| &e.user_id), 1, "{lifted:?}");
    assert_eq!(mails(&platform, &pia.auth0.email, "is suspended").len(), 1);
}
