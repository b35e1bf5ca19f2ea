//! What joining and leaving a team do in provisioning, against the real Postgres and NATS and
//! the Hopsworks sandbox: the member on the owner's cluster and in each of the owner's
//! projects, Hopsworks failures retried, removal out of every project and off the cluster, and
//! events out of order or repeated. Effects are counted (accounts, memberships, events), so a
//! duplicate fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::{CLIENT_ID, Provisioning, admin, hopsworks, person, start, start_with};
use hopsbridge_contracts::events::{ClusterAssignedV1, ClusterUnassignedV1, TeamMemberJoinedV1, TeamMemberRemovedV1};
use hopsbridge_sandbox::hopsworks::{
    HopsworksConfig, HopsworksSim, ROLE_DATA_OWNER, ROLE_DATA_SCIENTIST, Route, STATUS_ACTIVATED, STATUS_DEACTIVATED,
};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A paying owner with an account on the cluster and the projects `projects` made in
/// Hopsworks; answers their id and Hopsworks username.
async fn owner_with_projects(p: &Provisioning, sim: &HopsworksSim, email: &str, projects: &[&str]) -> (Uuid, String) {
    let owner = Uuid::now_v7();
    p.user_created(owner, email, "Olivia Owner").await;
    p.paid(owner).await;
    let done = p.wait_status(owner, "complete").await;
    let username = done["hopsworks_username"].as_str().unwrap().to_owned();
    for name in projects {
        sim.create_project(&username, name).unwrap();
    }
    (owner, username)
}

/// `username`'s memberships in the sandbox, as (project name, role), by name.
fn memberships_of(sim: &HopsworksSim, username: &str) -> Vec<(String, String)> {
    let projects = sim.projects();
    let mut of: Vec<(String, String)> = sim
        .memberships()
        .into_iter()
        .filter(|m| m.username == username)
        .map(|m| (projects.iter().find(|p| p.id == m.project_id).unwrap().name.clone(), m.role))
        .collect();
    of.sort();
    of
}

fn account(sim: &HopsworksSim, email: &str) -> hopsbridge_sandbox::hopsworks::User {
    let mut found: Vec<_> = sim.users().into_iter().filter(|u| u.email == email).collect();
    assert_eq!(found.len(), 1, "one account for {email}");
    found.remove(0)
}

fn all_in(rows: &[Value], n: usize, state: &str) -> bool {
    rows.len() == n && rows.iter().all(|r| r["state"] == state)
}

/// The events of `event_type` about `user`, as decoded by `decode`.
async fn events_about<T>(
    p: &Provisioning,
    event_type: &str,
    user: Uuid,
    decode: impl Fn(&[u8]) -> (String, T),
) -> Vec<T> {
    p.outbox(event_type)
        .await
        .into_iter()
        .map(|e| decode(e.payload.as_slice()))
        .filter(|(u, _)| *u == user.to_string())
        .map(|(_, t)| t)
        .collect()
}

async fn assigned_to(p: &Provisioning, user: Uuid) -> Vec<String> {
    events_about(p, "ClusterAssigned", user, |b| {
        let e = ClusterAssignedV1::decode(b).unwrap();
        (e.user_id, e.cluster_id)
    })
    .await
}

async fn unassigned_from(p: &Provisioning, user: Uuid) -> Vec<(String, String)> {
    events_about(p, "ClusterUnassigned", user, |b| {
        let e = ClusterUnassignedV1::decode(b).unwrap();
        (e.user_id, (e.cluster_id, e.reason))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gets_an_account_on_the_owners_cluster_and_each_of_the_owners_projects_once() {
    let p = start().await;
    let sim = hopsworks("team");
    let cluster = p.register("eu-1", &sim, 5).await;
    let (owner, _) = owner_with_projects(&p, &sim, "olivia@example.com", &["alpha", "beta"]).await;
    sim.create_project("admin", "gamma").unwrap();
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    let membership = Uuid::now_v7();
    p.joined(owner, member, membership, ROLE_DATA_SCIENTIST, now()).await;

    let done = p.wait_status(member, "complete").await;
    assert_eq!((done["cluster_id"].as_str(), done["max_num_projects"].as_i64()), (Some(cluster.as_str()), Some(0)));
    let mia = account(&sim, "mia@example.com");
    assert_eq!((mia.max_num_projects, mia.status), (0, STATUS_ACTIVATED), "no project quota of their own");
    let view = p.wait_projects(member, "were all added", |rows| all_in(rows, 2, "added")).await;
    assert_eq!(view["team"]["state"], "member");
    assert_eq!(view["team"]["membership_id"], membership.to_string());
    for row in view["projects"].as_array().unwrap() {
        assert_eq!(
            (row["project_role"].as_str(), row["hopsworks_username"].as_str()),
            (Some(ROLE_DATA_SCIENTIST), Some(mia.username.as_str()))
        );
        assert_eq!((row["cluster_id"].as_str(), row["last_error"].as_str()), (Some(cluster.as_str()), None));
    }
    let expected =
        vec![("alpha".to_owned(), ROLE_DATA_SCIENTIST.to_owned()), ("beta".to_owned(), ROLE_DATA_SCIENTIST.to_owned())];
    assert_eq!(memberships_of(&sim, &mia.username), expected, "each of the owner's projects once, none of another's");
    assert_eq!(assigned_to(&p, member).await, vec![cluster.clone()]);
    let (_, view) = p.call(Method::GET, &format!("/api/admin/clusters/{cluster}"), Some(&admin()), None).await;
    assert_eq!(view["used"], 2, "the member's seat counts");
    let (status, mine) = p.call(Method::GET, "/api/cluster", Some(&person(member)), None).await;
    assert_eq!((status, mine["status"].as_str()), (StatusCode::OK, Some("complete")));

    // Only admins see a member's projects; a bad id is refused.
    let path = format!("/api/admin/assignments/{member}/projects");
    let (status, err) = p.call(Method::GET, &path, Some(&person(member)), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    assert_eq!(p.call(Method::GET, &path, None, None).await.0, StatusCode::UNAUTHORIZED);
    let (status, err) = p.call(Method::GET, "/api/admin/assignments/nobody/projects", Some(&admin()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_path")));
    let stranger = p.member_projects(Uuid::now_v7()).await;
    assert_eq!((stranger["team"].clone(), stranger["projects"].clone()), (Value::Null, json!([])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_owner_has_no_cluster_waits_and_is_placed_when_the_owner_is() {
    let p = start().await;
    let mut config = HopsworksConfig::new("wait", &format!("hw-key-{}", Uuid::new_v4().simple()), CLIENT_ID);
    // The owner (olivia@…, so oli10000) makes a project as soon as their account exists.
    config.projects_on_signup = vec![("oli10000".into(), "alpha".into())];
    let sim = HopsworksSim::start(config).unwrap();
    let cluster = p.register("eu-1", &sim, 5).await;
    let owner = Uuid::now_v7();
    p.user_created(owner, "olivia@example.com", "Olivia Owner").await;
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    p.joined(owner, member, Uuid::now_v7(), ROLE_DATA_OWNER, now()).await;

    let waiting = p.wait_status(member, "waiting_for_owner").await;
    assert_eq!((waiting["cluster_id"].clone(), waiting["max_num_projects"].as_i64()), (Value::Null, Some(0)));
    let (status, mine) = p.call(Method::GET, "/api/cluster", Some(&person(member)), None).await;
    assert_eq!((status, mine["status"].as_str()), (StatusCode::OK, Some("waiting_for_owner")));
    assert!(sim.users().iter().all(|u| u.email != "mia@example.com"), "no account before the owner has one");
    let (_, view) = p.call(Method::GET, &format!("/api/admin/clusters/{cluster}"), Some(&admin()), None).await;
    assert_eq!(view["used"], 0, "waiting takes no seat");

    p.paid(owner).await;
    p.wait_status(owner, "complete").await;
    let done = p.wait_status(member, "complete").await;
    assert_eq!(done["cluster_id"], cluster.as_str());
    p.wait_projects(member, "were added", |rows| all_in(rows, 1, "added")).await;
    let mia = account(&sim, "mia@example.com");
    assert_eq!(mia.max_num_projects, 0);
    assert_eq!(memberships_of(&sim, &mia.username), vec![("alpha".to_owned(), ROLE_DATA_OWNER.to_owned())]);
    assert_eq!(assigned_to(&p, member).await, vec![cluster]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hopsworks_failing_to_add_a_member_is_retried_until_each_membership_exists_once() {
    // One try per call, so each failure is an attempt the background task retries.
    let p = start_with(|s| s.set("hopsworks.max_attempts", "1")).await;
    let sim = hopsworks("flaky-team");
    p.register("eu-1", &sim, 5).await;
    let (owner, _) = owner_with_projects(&p, &sim, "olivia@example.com", &["alpha", "beta"]).await;
    sim.fail_next_on(Route::AddToProjects, 3, 503);
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    p.joined(owner, member, Uuid::now_v7(), ROLE_DATA_SCIENTIST, now()).await;

    let view = p.wait_projects(member, "were all added", |rows| all_in(rows, 2, "added")).await;
    let rows = view["projects"].as_array().unwrap();
    let attempts: i64 = rows.iter().map(|r| r["attempts"].as_i64().unwrap()).sum();
    assert_eq!(attempts, 2 + 3, "one success each, after three failed attempts");
    assert!(rows.iter().all(|r| r["last_error"].is_null() && r["next_attempt_at"].is_null()), "{view}");
    let adds = sim.requests().iter().filter(|r| r.path.ends_with("/admin/projects/add-to-projects")).count();
    assert_eq!(adds, 5);
    let mia = account(&sim, "mia@example.com");
    let expected =
        vec![("alpha".to_owned(), ROLE_DATA_SCIENTIST.to_owned()), ("beta".to_owned(), ROLE_DATA_SCIENTIST.to_owned())];
    assert_eq!(memberships_of(&sim, &mia.username), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_leaves_every_owner_project_and_then_the_cluster() {
    let p = start().await;
    let sim = hopsworks("leave");
    let cluster = p.register("eu-1", &sim, 5).await;
    let (owner, owner_name) = owner_with_projects(&p, &sim, "olivia@example.com", &["alpha", "beta"]).await;
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    let membership = Uuid::now_v7();
    p.joined(owner, member, membership, ROLE_DATA_OWNER, now()).await;
    p.wait_projects(member, "were all added", |rows| all_in(rows, 2, "added")).await;
    let mia = account(&sim, "mia@example.com");
    assert_eq!(memberships_of(&sim, &mia.username).len(), 2);
    // A failed removal step midway is retried from where it stopped.
    sim.fail_next_on(Route::RemoveMember, 3, 500);

    p.removed(owner, member, membership, now()).await;
    let gone = p.wait_status(member, "unassigned").await;
    assert_eq!(gone["max_num_projects"], 5, "their next account is a paying owner's");
    let view = p.member_projects(member).await;
    assert!(all_in(view["projects"].as_array().unwrap(), 2, "removed"), "{view}");
    assert_eq!(view["team"]["state"], "left");
    assert!(memberships_of(&sim, &mia.username).is_empty(), "out of every owner project");
    let admin_user = sim.admin().unwrap();
    assert!(memberships_of(&sim, &admin_user.username).is_empty(), "the admin's user is not left behind");
    let owner_kept =
        vec![("alpha".to_owned(), ROLE_DATA_OWNER.to_owned()), ("beta".to_owned(), ROLE_DATA_OWNER.to_owned())];
    assert_eq!(memberships_of(&sim, &owner_name), owner_kept);
    assert_eq!(account(&sim, "mia@example.com").status, STATUS_DEACTIVATED);
    assert_eq!(unassigned_from(&p, member).await, vec![(cluster.clone(), "unassigned".to_owned())]);
    // Per project: the admin made a member, the member removed, the admin removed (once each
    // that succeeded; the three failures are of the member's removal).
    let deletes = sim.requests().iter().filter(|r| r.method == "DELETE").count();
    assert_eq!(deletes, 4 + 3);
    let (_, view) = p.call(Method::GET, &format!("/api/admin/clusters/{cluster}"), Some(&admin()), None).await;
    assert_eq!(view["used"], 1, "the seat is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_arriving_before_its_join_leaves_the_member_out_and_a_later_membership_still_counts() {
    let p = start().await;
    let sim = hopsworks("late");
    let cluster = p.register("eu-1", &sim, 5).await;
    let (owner, _) = owner_with_projects(&p, &sim, "olivia@example.com", &["alpha"]).await;
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    let (first, joined_at) = (Uuid::now_v7(), now());
    let removal = p.removed(owner, member, first, joined_at + 1_000).await;
    p.handled(&removal).await;
    let join = p.joined(owner, member, first, ROLE_DATA_SCIENTIST, joined_at).await;
    p.handled(&join).await;
    assert_eq!(p.assignment(member).await, Value::Null, "never placed");
    let view = p.member_projects(member).await;
    assert_eq!((view["team"]["state"].as_str(), view["projects"].clone()), (Some("left"), json!([])));
    assert!(!view["team"]["joined_at"].is_null() && !view["team"]["removed_at"].is_null(), "{view}");
    assert!(sim.users().iter().all(|u| u.email != "mia@example.com"), "no account made");
    assert!(assigned_to(&p, member).await.is_empty());

    // A later membership is the member's.
    let second = Uuid::now_v7();
    p.joined(owner, member, second, ROLE_DATA_SCIENTIST, now()).await;
    p.wait_projects(member, "were added", |rows| all_in(rows, 1, "added")).await;
    assert_eq!(p.assignment(member).await["cluster_id"], cluster.as_str());
    let mia = account(&sim, "mia@example.com");
    assert_eq!(memberships_of(&sim, &mia.username), vec![("alpha".to_owned(), ROLE_DATA_SCIENTIST.to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_events_change_nothing() {
    let p = start().await;
    let sim = hopsworks("dup");
    let cluster = p.register("eu-1", &sim, 5).await;
    let (owner, _) = owner_with_projects(&p, &sim, "olivia@example.com", &["alpha", "beta"]).await;
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    let membership = Uuid::now_v7();
    let joined = TeamMemberJoinedV1 {
        owner_user_id: owner.to_string(),
        member_user_id: member.to_string(),
        project_role: ROLE_DATA_SCIENTIST.into(),
        membership_id: membership.to_string(),
        joined_at_unix_micros: now(),
    };
    // The same event twice (redelivered), then again under another id (sent again).
    let id = p.publish(&joined, None).await;
    p.publish(&joined, Some(id)).await;
    p.wait_projects(member, "were all added", |rows| all_in(rows, 2, "added")).await;
    let again = p.publish(&joined, None).await;
    p.handled(&again).await;
    assert_eq!(p.assignment(member).await["status"], "complete");
    assert_eq!(p.member_projects(member).await["projects"].as_array().unwrap().len(), 2);
    let mia = account(&sim, "mia@example.com");
    assert_eq!(memberships_of(&sim, &mia.username).len(), 2);
    assert_eq!(assigned_to(&p, member).await, vec![cluster.clone()], "one account, announced once");

    let removed = TeamMemberRemovedV1 {
        owner_user_id: owner.to_string(),
        member_user_id: member.to_string(),
        membership_id: membership.to_string(),
        removed_at_unix_micros: now(),
        reason: "left".into(),
    };
    let id = p.publish(&removed, None).await;
    p.publish(&removed, Some(id)).await;
    p.wait_status(member, "unassigned").await;
    for copy in [p.publish(&removed, None).await, p.publish(&joined, None).await] {
        p.handled(&copy).await;
    }
    assert_eq!(p.assignment(member).await["status"], "unassigned", "a stale join does not place them again");
    let view = p.member_projects(member).await;
    assert!(all_in(view["projects"].as_array().unwrap(), 2, "removed"), "{view}");
    assert!(memberships_of(&sim, &mia.username).is_empty());
    assert_eq!(unassigned_from(&p, member).await.len(), 1);
    assert_eq!(assigned_to(&p, member).await.len(), 1);
    assert_eq!(sim.users().iter().filter(|u| u.email == "mia@example.com").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_still_takes_the_owners_member() {
    let p = start().await;
    let sim = hopsworks("full");
    let cluster = p.register("eu-1", &sim, 1).await;
    let (owner, _) = owner_with_projects(&p, &sim, "olivia@example.com", &["alpha"]).await;
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    p.joined(owner, member, Uuid::now_v7(), ROLE_DATA_SCIENTIST, now()).await;
    let done = p.wait_status(member, "complete").await;
    assert_eq!(done["cluster_id"], cluster.as_str());
    p.wait_projects(member, "were added", |rows| all_in(rows, 1, "added")).await;
    let (_, view) = p.call(Method::GET, &format!("/api/admin/clusters/{cluster}"), Some(&admin()), None).await;
    assert_eq!((view["capacity"].as_i64(), view["used"].as_i64()), (Some(1), Some(2)));
    // Another paying owner still finds the cluster full.
    let bob = Uuid::now_v7();
    p.user_created(bob, "bob@example.com", "Bob").await;
    p.paid(bob).await;
    p.wait_status(bob, "waiting_for_capacity").await;
}

async fn set_status(p: &Provisioning, cluster: &str, status: &str) {
    let path = format!("/api/admin/clusters/{cluster}");
    let (code, body) = p.call(Method::PATCH, &path, Some(&admin()), Some(json!({"status": status}))).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_cluster_of_their_own_is_moved_to_the_owners() {
    let p = start().await;
    let (a, b) = (hopsworks("own-a"), hopsworks("own-b"));
    let ca = p.register("eu-a", &a, 5).await;
    let cb = p.register("eu-b", &b, 5).await;
    set_status(&p, &cb, "inactive").await;
    let (owner, _) = owner_with_projects(&p, &a, "olivia@example.com", &["alpha"]).await;
    set_status(&p, &ca, "full").await;
    set_status(&p, &cb, "active").await;
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    p.paid(member).await;
    let own = p.wait_status(member, "complete").await;
    assert_eq!(own["cluster_id"], cb.as_str());

    p.joined(owner, member, Uuid::now_v7(), ROLE_DATA_SCIENTIST, now()).await;
    p.wait_projects(member, "were added", |rows| all_in(rows, 1, "added")).await;
    let moved = p.assignment(member).await;
    assert_eq!((moved["cluster_id"].as_str(), moved["max_num_projects"].as_i64()), (Some(ca.as_str()), Some(0)));
    assert_eq!(account(&b, "mia@example.com").status, STATUS_DEACTIVATED, "the account of their own is deactivated");
    let mia = account(&a, "mia@example.com");
    assert_eq!((mia.status, mia.max_num_projects), (STATUS_ACTIVATED, 0));
    assert_eq!(unassigned_from(&p, member).await, vec![(cb.clone(), "moved".to_owned())]);
    assert_eq!(assigned_to(&p, member).await, vec![cb, ca]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_events_that_can_never_be_handled_change_nothing() {
    let p = start().await;
    let sim = hopsworks("bad-team");
    p.register("eu-1", &sim, 5).await;
    let (owner, _) = owner_with_projects(&p, &sim, "olivia@example.com", &["alpha"]).await;
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    let observer = p.joined(owner, member, Uuid::now_v7(), "Observer", now()).await;
    let own_team = p.joined(owner, owner, Uuid::now_v7(), ROLE_DATA_SCIENTIST, now()).await;
    let no_time = TeamMemberRemovedV1 {
        owner_user_id: owner.to_string(),
        member_user_id: member.to_string(),
        membership_id: Uuid::now_v7().to_string(),
        removed_at_unix_micros: i64::MAX,
        reason: "removed".into(),
    };
    let no_time = p.publish(&no_time, None).await;
    // Events after them are handled; they are not.
    let later = Uuid::now_v7();
    p.user_created(later, "leo@example.com", "Leo Later").await;
    p.handled(&p.joined(owner, later, Uuid::now_v7(), ROLE_DATA_SCIENTIST, now()).await).await;
    for id in [observer, own_team, no_time] {
        assert_eq!(p.count(&format!("SELECT count(*) AS n FROM inbox WHERE event_id = '{id}'")).await, 0);
    }
    assert_eq!(p.count(&format!("SELECT count(*) AS n FROM team_members WHERE member_id = '{member}'")).await, 0);
    assert_eq!(p.count(&format!("SELECT count(*) AS n FROM team_members WHERE member_id = '{owner}'")).await, 0);
    assert_eq!(p.assignment(member).await, Value::Null);
    assert_eq!(p.assignment(owner).await["max_num_projects"], 5, "the owner is still a paying owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_rejoins_while_being_taken_out_is_added_back_only_once_the_removal_is_done() {
    let p = start().await;
    let sim = hopsworks("rejoin");
    let cluster = p.register("eu-1", &sim, 5).await;
    let (owner, _) = owner_with_projects(&p, &sim, "olivia@example.com", &["alpha"]).await;
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    let first = Uuid::now_v7();
    p.joined(owner, member, first, ROLE_DATA_SCIENTIST, now()).await;
    p.wait_projects(member, "were added", |rows| all_in(rows, 1, "added")).await;
    // The removal keeps failing for a while; the member rejoins meanwhile, with another role.
    sim.fail_next_on(Route::RemoveMember, 6, 500);
    p.handled(&p.removed(owner, member, first, now()).await).await;
    let second = Uuid::now_v7();
    p.joined(owner, member, second, ROLE_DATA_OWNER, now()).await;

    let view = p
        .wait_projects(member, "settled", |rows| {
            rows.len() == 2
                && rows.iter().any(|r| r["membership_id"] == first.to_string() && r["state"] == "removed")
                && rows.iter().any(|r| r["membership_id"] == second.to_string() && r["state"] == "added")
        })
        .await;
    assert_eq!(view["team"]["state"], "member");
    let mia = account(&sim, "mia@example.com");
    assert_eq!(
        memberships_of(&sim, &mia.username),
        vec![("alpha".to_owned(), ROLE_DATA_OWNER.to_owned())],
        "the removal did not undo the new membership"
    );
    assert!(memberships_of(&sim, &sim.admin().unwrap().username).is_empty());
    let a = p.assignment(member).await;
    assert_eq!((a["status"].as_str(), a["cluster_id"].as_str()), (Some("complete"), Some(cluster.as_str())));
    assert!(unassigned_from(&p, member).await.is_empty(), "never taken off the cluster");
    assert_eq!(mia.status, STATUS_ACTIVATED);
}
