//! `GET /api/cluster/projects`: a person's Hopsworks projects on their cluster, from project
//! sync's data, against the real Postgres and NATS and the Hopsworks sandbox. An owner sees the
//! projects they created, a team member the owner's projects they were added to with their role,
//! neither the cluster admin's project nor each other's as their own; someone with no cluster is
//! answered 404 and nobody signed in 401.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::{admin, hopsworks, person, start};
use hopsbridge_sandbox::hopsworks::ROLE_DATA_SCIENTIST;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

/// The names and relations of `who`'s projects, as the route answers them.
fn listed(body: &Value) -> Vec<(String, String, Option<String>)> {
    body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["relation"].as_str().unwrap().to_owned(),
                p["project_role"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_lists_their_own_projects_and_their_teams_and_nobody_elses() {
    let p = start().await;
    let sim = hopsworks("mine");
    let cluster = p.register("eu-1", &sim, 5).await;

    // Nobody signed in, and a person with no cluster.
    let (status, _) = p.call(Method::GET, "/api/cluster/projects", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let stranger = Uuid::now_v7();
    p.user_created(stranger, "sam@example.com", "Sam Stranger").await;
    let (status, body) = p.call(Method::GET, "/api/cluster/projects", Some(&person(stranger)), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_assigned")), "{body}");

    // An owner with two projects; the cluster's admin has one of its own.
    let owner = Uuid::now_v7();
    p.user_created(owner, "olivia@example.com", "Olivia Owner").await;
    p.paid(owner).await;
    let done = p.wait_status(owner, "complete").await;
    let username = done["hopsworks_username"].as_str().unwrap().to_owned();
    sim.create_project(&username, "beta").unwrap();
    sim.create_project(&username, "alpha").unwrap();
    sim.create_project("admin", "ops_tools").unwrap();
    let (status, body) = p.call(Method::GET, "/api/cluster/projects", Some(&person(owner)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(listed(&body).is_empty() && body["synced_at"].is_null(), "nothing before the first sync: {body}");

    // A member of the owner's team, added to both of the owner's projects.
    let member = Uuid::now_v7();
    p.user_created(member, "mia@example.com", "Mia Member").await;
    p.joined(owner, member, Uuid::now_v7(), ROLE_DATA_SCIENTIST, chrono::Utc::now().timestamp_micros()).await;
    p.wait_status(member, "complete").await;
    p.wait_projects(member, "were all added", |rows| rows.len() == 2 && rows.iter().all(|r| r["state"] == "added"))
        .await;

    let (status, synced) =
        p.call(Method::POST, &format!("/api/admin/clusters/{cluster}/projects/sync"), Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{synced}");

    let (status, body) = p.call(Method::GET, "/api/cluster/projects", Some(&person(owner)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        listed(&body),
        [("alpha".to_owned(), "creator".to_owned(), None), ("beta".to_owned(), "creator".to_owned(), None)],
        "the owner's own, by name; not the admin's"
    );
    assert!(body["synced_at"].is_string());
    let (status, body) = p.call(Method::GET, "/api/cluster/projects", Some(&person(member)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let role = Some(ROLE_DATA_SCIENTIST.to_owned());
    assert_eq!(
        listed(&body),
        [("alpha".to_owned(), "member".to_owned(), role.clone()), ("beta".to_owned(), "member".to_owned(), role)],
        "the owner's projects, as a member with the invited role"
    );
    assert!(body["projects"].as_array().unwrap().iter().all(|p| p["pending"] == false));

    // A project deleted in Hopsworks is gone from the list after the next sync.
    let beta = sim.projects().into_iter().find(|p| p.name == "beta").unwrap();
    sim.delete_project(beta.id).unwrap();
    p.call(Method::POST, &format!("/api/admin/clusters/{cluster}/projects/sync"), Some(&admin()), None).await;
    let (_, body) = p.call(Method::GET, "/api/cluster/projects", Some(&person(owner)), None).await;
    assert_eq!(listed(&body), [("alpha".to_owned(), "creator".to_owned(), None)]);
}
