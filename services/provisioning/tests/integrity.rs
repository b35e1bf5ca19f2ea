//! provisioning's integrity checks (decision 0061) run on demand through the platform's route:
//! `cluster_occupancy` finds an owner seat moved onto a full cluster in SQL, a person seated on a
//! retired cluster and a deleted person's seat, and nothing while team members fill a cluster
//! past its capacity; `hopsworks_status` finds accounts blocked in Hopsworks while active here,
//! activated there while suspended here, and missing there, nothing while they agree; with one
//! of two clusters' Hopsworks answering 503 the other's accounts are compared, the unreachable
//! one is a finding and its accounts' findings stay open.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{Provisioning, admin, hopsworks, start};
use diesel_async::RunQueryDsl;
use hopsbridge_provisioning::integrity::{CLUSTER_OCCUPANCY, HOPSWORKS_STATUS};
use hopsbridge_sandbox::hopsworks::Route;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use uuid::Uuid;

/// Runs every check of provisioning now (202, then polled until done); answers the run of
/// `check`.
async fn run(p: &Provisioning, check: &str) -> Value {
    let (status, started) = p.call(Method::POST, "/api/admin/integrity/provisioning/run", Some(&admin()), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let path = format!("/api/admin/integrity/provisioning/runs/{}", started["id"].as_str().unwrap());
    let mut body = started;
    for _ in 0..600 {
        let (status, polled) = p.call(Method::GET, &path, Some(&admin()), None).await;
        assert_eq!(status, StatusCode::OK, "{polled}");
        body = polled;
        if body["status"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(body["status"], "done", "{body}");
    body["runs"].as_array().unwrap().iter().find(|r| r["check"] == check).cloned().unwrap()
}

fn keys(findings: &Value) -> BTreeSet<String> {
    findings.as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap().to_owned()).collect()
}

fn finding(run: &Value, key: &str) -> Value {
    run["findings"].as_array().unwrap().iter().find(|f| f["key"] == key).cloned().unwrap()
}

async fn sql(p: &Provisioning, statement: &str) {
    let mut conn = p.db.connect("provisioning").await;
    diesel::sql_query(statement).execute(&mut conn).await.unwrap();
}

/// Seats `user` on `cluster` with a complete assignment, straight in SQL; a `member` is in a
/// team as well.
async fn seat(p: &Provisioning, user: Uuid, cluster: &str, member: bool) {
    p.insert_person(user, &format!("{}@example.com", user.simple()), "active").await;
    sql(
        p,
        &format!(
            "INSERT INTO assignments (user_id, cluster_id, status, hopsworks_username, hopsworks_user_id, \
             max_num_projects, completed_at) VALUES ('{user}', '{cluster}', 'complete', 'u{}', {}, 5, now())",
            user.simple(),
            user.as_u128() % 1_000_000
        ),
    )
    .await;
    if member {
        sql(
            p,
            &format!(
                "INSERT INTO team_members (member_id, membership_id, owner_id, project_role, joined_at, state) \
                 VALUES ('{user}', '{}', '{}', 'Data scientist', now(), 'member')",
                Uuid::now_v7(),
                Uuid::now_v7()
            ),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_occupancy_finds_overfilled_retired_and_deleted_seats_and_not_a_team_past_capacity() {
    let p = start().await;
    let (sim1, sim2) = (hopsworks("c1"), hopsworks("c2"));
    let c1 = p.register("c1", &sim1, 2).await;
    let c2 = p.register("c2", &sim2, 2).await;
    let owners: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let member = Uuid::now_v7();
    seat(&p, owners[0], &c1, false).await;
    seat(&p, owners[1], &c1, false).await;
    seat(&p, member, &c1, true).await;
    seat(&p, owners[2], &c2, false).await;
    seat(&p, owners[3], &c2, false).await;

    let healthy = run(&p, CLUSTER_OCCUPANCY).await;
    assert_eq!((healthy["outcome"].as_str(), &healthy["findings"]), (Some("ok"), &json!([])), "{healthy}");

    // An owner's seat moved onto the full cluster behind placement's back, c2 retired with its
    // last owner still on it, and a deleted person still seated.
    sql(&p, &format!("UPDATE assignments SET cluster_id = '{c1}' WHERE user_id = '{}'", owners[2])).await;
    let (status, body) = p
        .call(Method::PATCH, &format!("/api/admin/clusters/{c2}"), Some(&admin()), Some(json!({"status": "inactive"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sql(&p, &format!("UPDATE users SET status = 'deleted' WHERE user_id = '{}'", owners[1])).await;

    let broken = run(&p, CLUSTER_OCCUPANCY).await;
    assert_eq!(broken["outcome"], "ok", "{broken}");
    let expected: BTreeSet<String> = [
        format!("over_capacity:{c1}"),
        format!("retired_cluster:{}", owners[3]),
        format!("deleted_person:{}", owners[1]),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys(&broken["findings"]), expected, "{broken}");
    let over = finding(&broken, &format!("over_capacity:{c1}"));
    assert_eq!(over["subject"], format!("cluster c1 ({c1})"));
    let detail = over["detail"].as_str().unwrap();
    assert!(detail.contains("seats 3 owners (4 seats with team members) for a capacity of 2"), "{detail}");
    assert_eq!(finding(&broken, &format!("retired_cluster:{}", owners[3]))["subject"], format!("person {}", owners[3]));

    // Set right again: each finding is resolved by the next run.
    sql(&p, &format!("UPDATE assignments SET cluster_id = '{c2}' WHERE user_id = '{}'", owners[2])).await;
    sql(&p, &format!("UPDATE clusters SET status = 'active' WHERE id = '{c2}'")).await;
    sql(
        &p,
        &format!("UPDATE assignments SET status = 'unassigned', cluster_id = NULL WHERE user_id = '{}'", owners[1]),
    )
    .await;
    let fixed = run(&p, CLUSTER_OCCUPANCY).await;
    assert_eq!((fixed["resolved"].as_u64(), &fixed["findings"]), (Some(3), &json!([])), "{fixed}");
}

/// A paying owner with a complete Hopsworks account on `cluster` made through the events;
/// answers the account's id in the sandbox.
async fn owner(p: &Provisioning, sim: &hopsbridge_sandbox::hopsworks::HopsworksSim, user: Uuid) -> u64 {
    let email = format!("{}@example.com", user.simple());
    p.user_created(user, &email, "Ada Lovelace").await;
    p.paid(user).await;
    p.wait_status(user, "complete").await;
    sim.users().into_iter().find(|u| u.email == email).unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hopsworks_status_finds_each_disagreement_and_an_unreachable_cluster_resolves_nothing_of_its_own() {
    let p = start().await;
    let sim = hopsworks("c1");
    p.register("c1", &sim, 10).await;
    let people: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut accounts = Vec::new();
    for person in &people {
        accounts.push(owner(&p, &sim, *person).await);
    }
    let healthy = run(&p, HOPSWORKS_STATUS).await;
    assert_eq!((healthy["outcome"].as_str(), &healthy["findings"]), (Some("ok"), &json!([])), "{healthy}");

    // Blocked by hand in Hopsworks while active here.
    block(&sim, accounts[0], 4).await;
    // Suspended here with nothing pushing it, and an account id Hopsworks does not have.
    sql(&p, &format!("UPDATE users SET status = 'suspended' WHERE user_id = '{}'", people[1])).await;
    sql(&p, &format!("UPDATE assignments SET hopsworks_user_id = 987654 WHERE user_id = '{}'", people[2])).await;

    let broken = run(&p, HOPSWORKS_STATUS).await;
    assert_eq!((broken["outcome"].as_str(), broken["opened"].as_u64()), (Some("ok"), Some(3)), "{broken}");
    let expected: BTreeSet<String> = people.iter().map(|u| format!("status:{u}")).collect();
    assert_eq!(keys(&broken["findings"]), expected, "{broken}");
    let detail = |i: usize| finding(&broken, &format!("status:{}", people[i]))["detail"].as_str().unwrap().to_owned();
    assert!(
        detail(0).contains("is active here") && detail(0).contains("is blocked (4) where it should be activated (2)")
    );
    assert!(
        detail(1).contains("is suspended here")
            && detail(1).contains("is activated (2) where it should be blocked (4)")
    );
    assert!(detail(2).contains("does not have"), "{}", detail(2));
    assert_eq!(finding(&broken, &format!("status:{}", people[0]))["subject"], format!("person {}", people[0]));

    // The drift view reads the same comparison.
    let (status, drift) = p.call(Method::GET, "/api/admin/assignments/status-drift", Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{drift}");
    assert_eq!((drift["items"].as_array().unwrap().len(), drift["checked"].as_u64()), (3, Some(3)), "{drift}");

    // A second cluster, where the next owner is placed (it has the most room), whose account is
    // blocked by hand.
    let sim2 = hopsworks("c2");
    let c2 = p.register("c2", &sim2, 10).await;
    let fourth = Uuid::now_v7();
    let account4 = owner(&p, &sim2, fourth).await;
    assert_eq!(p.assignment(fourth).await["cluster_id"].as_str(), Some(c2.as_str()));
    block(&sim2, account4, 4).await;
    let both = run(&p, HOPSWORKS_STATUS).await;
    assert_eq!((both["outcome"].as_str(), both["opened"].as_u64()), (Some("ok"), Some(1)), "{both}");

    // c2's Hopsworks down while the first person is put right on c1: c1's accounts are compared
    // (one resolved, two still found), c2 is a finding, and its account's finding stays open.
    sim2.fail_next_on(Route::ListUsers, 1_000_000, 503);
    block(&sim, accounts[0], 2).await;
    let partial = run(&p, HOPSWORKS_STATUS).await;
    assert_eq!((partial["outcome"].as_str(), partial["resolved"].as_u64()), (Some("ok"), Some(1)), "{partial}");
    let unreachable = format!("hopsworks_unreachable:{c2}");
    let expected: BTreeSet<String> = [
        format!("status:{}", people[1]),
        format!("status:{}", people[2]),
        format!("status:{fourth}"),
        unreachable.clone(),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys(&partial["findings"]), expected, "{partial}");
    assert!(finding(&partial, &unreachable)["detail"].as_str().unwrap().contains("503"), "{partial}");
    assert!(
        finding(&partial, &format!("status:{fourth}"))["detail"].as_str().unwrap().contains("blocked (4)"),
        "kept as it was: {partial}"
    );

    // Both down: nothing is resolved, each cluster is a finding.
    sim.fail_next_on(Route::ListUsers, 1_000_000, 503);
    let down = run(&p, HOPSWORKS_STATUS).await;
    assert_eq!((down["outcome"].as_str(), down["resolved"].as_u64()), (Some("ok"), Some(0)), "{down}");
    let c1 = p.assignment(people[1]).await["cluster_id"].as_str().unwrap().to_owned();
    let mut all = expected;
    all.insert(format!("hopsworks_unreachable:{c1}"));
    assert_eq!(keys(&down["findings"]), all, "{down}");
    let (status, open) =
        p.call(Method::GET, "/api/admin/integrity/provisioning?status=open&limit=200", Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{open}");
    let open: BTreeSet<String> = open["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == HOPSWORKS_STATUS)
        .map(|f| f["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(open, all, "nothing resolved on no evidence");
}

/// Sets account `id`'s status in `sim`'s Hopsworks by hand, as its admin would.
async fn block(sim: &hopsbridge_sandbox::hopsworks::HopsworksSim, id: u64, status: i64) {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let answer = client
        .put(format!("{}/admin/users/{id}", sim.url()))
        .header("authorization", format!("ApiKey {}", sim.api_key()))
        .json(&json!({"status": status}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
}
