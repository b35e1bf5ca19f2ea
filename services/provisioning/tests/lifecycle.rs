//! The account lifecycle on Hopsworks, against the sandbox: a suspension blocks the account and
//! a reactivation activates it, retried while Hopsworks fails (the drift view lists the account
//! meanwhile); the project sync keeps each cluster's projects, announces each owner's count once
//! per change, changes nothing when Hopsworks fails, and sets `maxNumProjects` to what was
//! created plus what the plan still allows, never below it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{Provisioning, WAIT, admin, hopsworks, start};
use hopsbridge_contracts::events::{PlanChangedV1, ProjectsCountedV1, UserReactivatedV1, UserSuspendedV1};
use hopsbridge_sandbox::hopsworks::{HopsworksSim, Route, User};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// A paying owner with a complete account on a new cluster; answers the cluster id and the
/// account as the sandbox holds it.
async fn owner_on_cluster(p: &Provisioning, sim: &HopsworksSim, owner: Uuid, email: &str) -> (String, User) {
    let cluster = p.register("c1", sim, 10).await;
    p.user_created(owner, email, "Ada Lovelace").await;
    p.paid(owner).await;
    p.wait_status(owner, "complete").await;
    let account = sim.users().into_iter().find(|u| u.email == email).unwrap();
    (cluster, account)
}

/// Polls the sandbox's account of `email` until `pred` holds.
async fn wait_account(sim: &HopsworksSim, email: &str, what: &str, pred: impl Fn(&User) -> bool) -> User {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let user = sim.users().into_iter().find(|u| u.email == email).unwrap();
        if pred(&user) {
            return user;
        }
        assert!(tokio::time::Instant::now() < deadline, "the account never {what}; last: {user:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drift(p: &Provisioning) -> Value {
    let (status, body) = p.call(Method::GET, "/api/admin/assignments/status-drift", Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_blocks_the_account_once_hopsworks_answers_and_the_drift_view_shows_it_meanwhile() {
    let p = start().await;
    let sim = hopsworks("c1");
    let owner = Uuid::now_v7();
    let (_, account) = owner_on_cluster(&p, &sim, owner, "ada@example.com").await;
    assert_eq!(account.status, 2);
    assert_eq!(drift(&p).await["items"], serde_json::json!([]), "nothing disagrees yet");

    // Hopsworks refuses every change of a user for a while.
    sim.fail_next_on(Route::UpdateUser, 1_000_000, 503);
    let id =
        p.publish(&UserSuspendedV1 { user_id: owner.to_string(), reason: "billing:payment_failed".into() }, None).await;
    p.handled(&id).await;
    let sql =
        format!("SELECT count(*) AS n FROM assignments WHERE user_id = '{owner}' AND account_sync_error IS NOT NULL");
    let deadline = tokio::time::Instant::now() + WAIT;
    while p.count(&sql).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the failed push was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = drift(&p).await;
    let items = view["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{view}");
    assert_eq!(items[0]["user_id"], owner.to_string());
    assert_eq!(items[0]["status"], "suspended");
    assert_eq!(items[0]["wanted_hopsworks_status"], 4);
    assert_eq!(items[0]["hopsworks_status"], 2);
    assert!(items[0]["sync_error"].as_str().unwrap().contains("503"), "{view}");
    assert_eq!(sim.users().into_iter().find(|u| u.id == account.id).unwrap().status, 2, "still active");

    // Hopsworks recovers: the account is blocked, and nothing disagrees any more.
    sim.clear_faults();
    wait_account(&sim, "ada@example.com", "was blocked", |u| u.status == 4).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = p
            .count(&format!(
                "SELECT count(*) AS n FROM assignments WHERE user_id = '{owner}' AND account_sync_due_at IS NULL \
                 AND account_sync_error IS NULL"
            ))
            .await;
        if n == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the push was never recorded done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(drift(&p).await["items"], serde_json::json!([]));

    // Reactivated: the account is activated again.
    let id = p.publish(&UserReactivatedV1 { user_id: owner.to_string() }, None).await;
    p.handled(&id).await;
    wait_account(&sim, "ada@example.com", "was activated", |u| u.status == 2).await;
}

/// Every ProjectsCounted in provisioning's outbox, oldest first.
async fn counted(p: &Provisioning) -> Vec<ProjectsCountedV1> {
    p.outbox("ProjectsCounted")
        .await
        .into_iter()
        .map(|e| ProjectsCountedV1::decode(e.payload.as_slice()).unwrap())
        .collect()
}

async fn sync(p: &Provisioning, cluster: &str) -> (StatusCode, Value) {
    p.call(Method::POST, &format!("/api/admin/clusters/{cluster}/projects/sync"), Some(&admin()), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_counts_each_owners_projects_once_per_change_and_sets_the_limit_from_it() {
    let p = start().await;
    let sim = hopsworks("c1");
    let owner = Uuid::now_v7();
    let email = "ada@example.com";
    let (cluster, account) = owner_on_cluster(&p, &sim, owner, email).await;
    assert_eq!(account.max_num_projects, 5, "a paying owner's, before any sync");
    sim.create_project(&account.username, "alpha").unwrap();
    let beta = sim.create_project(&account.username, "beta").unwrap();

    let (status, body) = sync(&p, &cluster).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["projects"], 2);
    let events = counted(&p).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].user_id, owner.to_string());
    assert_eq!(events[0].cluster_id, cluster);
    assert_eq!(events[0].active_projects, 2);
    assert_eq!(events[0].project_names, ["alpha", "beta"]);
    assert_eq!(p.count("SELECT count(*) AS n FROM projects WHERE namespace IN ('alpha', 'beta')").await, 2);
    // No plan yet (the free plan's one project), two created and running: never below them.
    wait_account(&sim, email, "got maxNumProjects 2", |u| u.max_num_projects == 2).await;

    // Nothing changed: nothing announced.
    let (status, _) = sync(&p, &cluster).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counted(&p).await.len(), 1);

    // A project deleted: announced once; Hopsworks still counts it as created.
    sim.delete_project(beta.id).unwrap();
    let (status, body) = sync(&p, &cluster).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["gone"], 1);
    let events = counted(&p).await;
    assert_eq!(events.len(), 2);
    assert_eq!((events[1].active_projects, events[1].project_names.clone()), (1, vec!["alpha".to_owned()]));
    assert_eq!(p.count("SELECT count(*) AS n FROM projects WHERE gone_at IS NOT NULL AND name = 'beta'").await, 1);

    // Pay-as-you-go allows five active: two created, one active, so four more.
    let plan = PlanChangedV1 {
        user_id: owner.to_string(),
        previous_plan: "free".into(),
        plan: "payg".into(),
        max_active_projects: 5,
        reason: "chosen".into(),
        changed_at_unix_seconds: chrono::Utc::now().timestamp(),
    };
    let id = p.publish(&plan, None).await;
    p.handled(&id).await;
    wait_account(&sim, email, "got maxNumProjects 6", |u| u.max_num_projects == 6).await;
    // An older plan change arriving late changes nothing.
    let stale =
        PlanChangedV1 { max_active_projects: 1, changed_at_unix_seconds: plan.changed_at_unix_seconds - 60, ..plan };
    let id = p.publish(&stale, None).await;
    p.handled(&id).await;
    assert_eq!(p.count("SELECT max_active_projects::bigint AS n FROM plans").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_changes_nothing_and_is_recorded() {
    let p = start().await;
    let sim = hopsworks("c1");
    let owner = Uuid::now_v7();
    let (cluster, account) = owner_on_cluster(&p, &sim, owner, "ada@example.com").await;
    let alpha = sim.create_project(&account.username, "alpha").unwrap();
    let (status, _) = sync(&p, &cluster).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counted(&p).await.len(), 1);

    sim.delete_project(alpha.id).unwrap();
    sim.fail_next_on(Route::ListProjects, 1_000, 503);
    let (status, body) = sync(&p, &cluster).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["code"], "hopsworks_unavailable");
    assert_eq!(p.count("SELECT count(*) AS n FROM projects WHERE gone_at IS NULL").await, 1, "never zero projects");
    assert_eq!(counted(&p).await.len(), 1, "nothing announced");
    assert_eq!(p.count("SELECT count(*) AS n FROM project_syncs WHERE last_sync_error LIKE '%503%'").await, 1);
    let limit =
        p.count(&format!("SELECT max_num_projects::bigint AS n FROM assignments WHERE user_id = '{owner}'")).await;
    assert_eq!(limit, 1, "the limit of the last successful sync: one created, one allowed, one active");

    sim.clear_faults();
    let (status, _) = sync(&p, &cluster).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p.count("SELECT count(*) AS n FROM projects WHERE gone_at IS NULL").await, 0);
    assert_eq!(p.count("SELECT count(*) AS n FROM project_syncs WHERE last_sync_error IS NULL").await, 1);
    let events = counted(&p).await;
    assert_eq!((events.len(), events[1].active_projects), (2, 0));

    // A sync of a cluster that does not exist.
    let (status, body) = sync(&p, &Uuid::now_v7().to_string()).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("cluster_not_found")));
    let (status, _) = p
        .call(Method::POST, &format!("/api/admin/clusters/{cluster}/projects/sync"), Some(&common::person(owner)), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_sync_runs_without_being_asked_and_the_person_sees_their_username() {
    let p = common::start_with(|s| s.set("projects.sync_interval_secs", "1")).await;
    let sim = hopsworks("c1");
    let owner = Uuid::now_v7();
    let (_, account) = owner_on_cluster(&p, &sim, owner, "ada@example.com").await;
    sim.create_project(&account.username, "alpha").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while counted(&p).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no scheduled sync counted the project");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = p.call(Method::GET, "/api/cluster", Some(&common::person(owner)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hopsworks_username"], account.username);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_owners_account_is_deactivated_and_their_projects_stop_counting() {
    let p = start().await;
    let sim = hopsworks("c1");
    let owner = Uuid::now_v7();
    let (cluster, account) = owner_on_cluster(&p, &sim, owner, "ada@example.com").await;
    sim.create_project(&account.username, "alpha").unwrap();
    let (status, _) = sync(&p, &cluster).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counted(&p).await[0].active_projects, 1);

    let id = p.publish(&hopsbridge_contracts::events::UserDeletedV1 { user_id: owner.to_string() }, None).await;
    p.handled(&id).await;
    p.wait_status(owner, "unassigned").await;
    assert_eq!(sim.users().into_iter().find(|u| u.id == account.id).unwrap().status, 3, "deactivated");
    let (status, _) = sync(&p, &cluster).await;
    assert_eq!(status, StatusCode::OK);
    let events = counted(&p).await;
    assert_eq!(events.len(), 2);
    assert_eq!((events[1].user_id.clone(), events[1].active_projects), (owner.to_string(), 0));
    assert_eq!(p.count("SELECT count(*) AS n FROM projects WHERE owner_id IS NULL AND gone_at IS NULL").await, 1);
    assert!(drift(&p).await["items"].as_array().unwrap().is_empty(), "a deleted person's account is no drift");
}

/// Sets `maxNumProjects` of the sandbox's user `id` through its admin API, as a Hopsworks
/// administrator would by hand.
async fn set_max_by_hand(sim: &HopsworksSim, id: u64, n: u32) {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let answer = client
        .put(format!("{}/admin/users/{id}", sim.url()))
        .header("authorization", format!("ApiKey {}", sim.api_key()))
        .json(&serde_json::json!({"maxNumProjects": n}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_project_counts_against_their_owner() {
    let p = start().await;
    let sim = hopsworks("c1");
    let owner = Uuid::now_v7();
    let (cluster, owner_account) = owner_on_cluster(&p, &sim, owner, "olivia@example.com").await;
    sim.create_project(&owner_account.username, "alpha").unwrap();
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    p.joined(owner, member, Uuid::now_v7(), "Data scientist", chrono::Utc::now().timestamp_micros()).await;
    let placed = p.wait_status(member, "complete").await;
    assert_eq!(placed["max_num_projects"], 0, "a member creates no project of their own");
    let mia = sim.users().into_iter().find(|u| u.email == "mia@example.com").unwrap();
    // A project the member made anyway (a Hopsworks administrator raised their limit by hand).
    set_max_by_hand(&sim, mia.id, 1).await;
    sim.create_project(&mia.username, "beta").unwrap();

    let (status, body) = sync(&p, &cluster).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = counted(&p).await;
    assert_eq!(events.len(), 1, "one owner, nobody else: {events:?}");
    assert_eq!(events[0].user_id, owner.to_string());
    assert_eq!(events[0].project_names, ["alpha", "beta"]);
    let sql = format!("SELECT count(*) AS n FROM projects WHERE creator_id = '{member}' AND owner_id = '{owner}'");
    assert_eq!(p.count(&sql).await, 1);
    // The owner: one created, two active against the free plan's one: nothing more.
    wait_account(&sim, "olivia@example.com", "got maxNumProjects 1", |u| u.max_num_projects == 1).await;
    let member_limit =
        p.count(&format!("SELECT max_num_projects::bigint AS n FROM assignments WHERE user_id = '{member}'")).await;
    assert_eq!(member_limit, 0, "members stay at 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_repairs_an_account_whose_status_drifted() {
    let p = start().await;
    let sim = hopsworks("c1");
    let owner = Uuid::now_v7();
    let (_, account) = owner_on_cluster(&p, &sim, owner, "ada@example.com").await;
    // Blocked by hand in Hopsworks, while the person is active here.
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let answer = client
        .put(format!("{}/admin/users/{}", sim.url(), account.id))
        .header("authorization", format!("ApiKey {}", sim.api_key()))
        .json(&serde_json::json!({"status": 4}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    assert_eq!(drift(&p).await["items"].as_array().unwrap().len(), 1);

    let id = p.publish(&hopsbridge_contracts::events::UserSignedInV1 { user_id: owner.to_string() }, None).await;
    p.handled(&id).await;
    wait_account(&sim, "ada@example.com", "was activated again", |u| u.status == 2).await;
}
