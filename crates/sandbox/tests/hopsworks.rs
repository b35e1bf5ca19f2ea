//! The simulated Hopsworks API (admin routes, the profile and project members), driven by an
//! independent HTTPS client.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use hopsbridge_sandbox::hopsworks::{
    HopsworksConfig, HopsworksSim, LoggedRequest, ROLE_DATA_OWNER, ROLE_DATA_SCIENTIST, Route,
};
use hopsbridge_sandbox::tls::Ca;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const KEY: &str = "admin-api-key";
const CLIENT_ID: &str = "hopsbridge-oauth";

fn start() -> HopsworksSim {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HopsworksSim::start(HopsworksConfig::new("cluster-a", KEY, CLIENT_ID)).unwrap()
}

fn client_trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

fn create_query(email: &str, given: &str, surname: &str, subject: &str) -> String {
    serde_urlencoded::to_string([
        ("accountType", "REMOTE_ACCOUNT_TYPE"),
        ("type", "OAUTH2"),
        ("email", email),
        ("givenName", given),
        ("surname", surname),
        ("maxNumProjects", "5"),
        ("subject", subject),
        ("clientId", CLIENT_ID),
    ])
    .unwrap()
}

async fn create_user(sim: &HopsworksSim, email: &str, subject: &str) -> reqwest::Response {
    client_trusting(sim.ca_pem())
        .post(format!("{}/admin/users?{}", sim.url(), create_query(email, "Meb", "Brown", subject)))
        .header("Authorization", format!("ApiKey {}", sim.api_key()))
        .send()
        .await
        .unwrap()
}

async fn get(sim: &HopsworksSim, path_and_query: &str) -> (StatusCode, Value) {
    let response = client_trusting(sim.ca_pem())
        .get(format!("{}{path_and_query}", sim.url()))
        .header("Authorization", format!("ApiKey {KEY}"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn put_json(sim: &HopsworksSim, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = client_trusting(sim.ca_pem())
        .put(format!("{}{path}", sim.url()))
        .header("Authorization", format!("ApiKey {KEY}"))
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn post_json(sim: &HopsworksSim, path: &str, body: &Value) -> reqwest::Response {
    client_trusting(sim.ca_pem())
        .post(format!("{}{path}", sim.url()))
        .header("Authorization", format!("ApiKey {KEY}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn id_of(sim: &HopsworksSim, username: &str) -> u64 {
    sim.users().iter().find(|u| u.username == username).unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_user_with_query_parameters_answers_201_without_a_numeric_id() {
    let sim = start();
    let subject = "google-oauth2|1234567890";
    let response = create_user(&sim, "Meb.Brown@Example.com", subject).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["uuid"], format!("{CLIENT_ID}.{subject}"));
    assert_eq!(body["email"], "Meb.Brown@Example.com");
    assert_eq!(body["givenName"], "Meb");
    assert_eq!(body["surname"], "Brown");
    assert_eq!(body["username"], "meb10000");
    assert!(body.get("id").is_none(), "no numeric id in {body}");

    let again = create_user(&sim, "meb.brown@example.COM", "auth0|other").await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let error: Value = again.json().await.unwrap();
    assert_eq!(error["errorCode"], 160_003);

    let second = create_user(&sim, "mebbie@example.com", "auth0|second").await;
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["username"], "meb10001", "usernames are unique");

    let user = sim.users().into_iter().find(|u| u.username == "meb10000").unwrap();
    assert_eq!(user.uuid.as_deref(), Some("hopsbridge-oauth.google-oauth2|1234567890"));
    assert_eq!(user.max_num_projects, 5);
    assert_eq!(user.status, 2);
    let (status, by_uuid) = get(&sim, &format!("/admin/user/{CLIENT_ID}.google-oauth2%7C1234567890")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_uuid["email"], "Meb.Brown@Example.com");
    assert!(by_uuid.get("id").is_none(), "the uuid look-up has no numeric id either");

    let negative = client_trusting(sim.ca_pem())
        .post(format!(
            "{}/admin/users?{}",
            sim.url(),
            create_query("neg@example.com", "N", "G", "auth0|neg").replace("maxNumProjects=5", "maxNumProjects=-1")
        ))
        .header("Authorization", format!("ApiKey {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(negative.status(), StatusCode::CREATED);
    let neg = sim.users().into_iter().find(|u| u.email == "neg@example.com").unwrap();
    assert_eq!(neg.max_num_projects, hopsbridge_sandbox::hopsworks::DEFAULT_MAX_NUM_PROJECTS);

    let log = sim.requests();
    assert!(log[0].query.contains("subject=google-oauth2%7C1234567890"), "{:?}", log[0]);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_user_with_a_json_body_answers_422_account_type_not_provided() {
    let sim = start();
    let body = json!({
        "accountType": "REMOTE_ACCOUNT_TYPE", "type": "OAUTH2", "email": "a@example.com", "givenName": "A",
        "surname": "B", "maxNumProjects": 5, "subject": "auth0|1", "clientId": CLIENT_ID,
    });
    let response = post_json(&sim, "/admin/users", &body).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["usrMsg"], "Account type not provided");
    assert!(error["errorCode"].is_u64() && error["errorMsg"].is_string(), "{error}");
    assert_eq!(sim.users().len(), 1, "only the admin exists");
    assert_eq!(
        sim.requests(),
        vec![LoggedRequest {
            method: "POST".to_owned(),
            path: "/hopsworks-api/api/admin/users".to_owned(),
            query: String::new(),
            had_body: true,
        }]
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_api_key_is_answered_401() {
    let sim = start();
    let client = client_trusting(sim.ca_pem());
    let url = format!("{}/admin/users?{}", sim.url(), create_query("a@example.com", "A", "B", "auth0|1"));
    for auth in [None, Some("ApiKey wrong"), Some(&*format!("Bearer {KEY}"))] {
        let mut request = client.post(&url);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let error: Value = response.json().await.unwrap();
        assert!(error["errorCode"].is_u64() && error["errorMsg"].is_string(), "{error}");
    }
    let listing = client.get(format!("{}/admin/users", sim.url())).send().await.unwrap();
    assert_eq!(listing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sim.users().len(), 1);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_found_by_paging_the_listing_and_comparing_emails_case_insensitively() {
    let sim = start();
    for i in 0..5 {
        let email = format!("User{i}@Example.COM");
        assert_eq!(create_user(&sim, &email, &format!("auth0|{i}")).await.status(), StatusCode::CREATED);
    }
    let wanted = "user3@example.com";
    let mut found = None;
    let mut offset = 0;
    let mut pages = 0;
    loop {
        let (status, page) = get(&sim, &format!("/admin/users?offset={offset}&limit=2")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["count"], 6, "count is the total, not the page size");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        pages += 1;
        for item in items {
            for field in ["id", "username", "email", "accountType", "status", "maxNumProjects", "numActiveProjects"] {
                assert!(item.get(field).is_some(), "{field} in {item}");
            }
            assert!(item["activated"].is_string());
            assert_ne!(item["email"], wanted, "emails are stored as given");
            if item["email"].as_str().unwrap().eq_ignore_ascii_case(wanted) {
                found = Some(item.clone());
            }
        }
        offset += items.len();
        if offset >= 6 {
            break;
        }
    }
    assert_eq!(pages, 3);
    let found = found.unwrap();
    assert_eq!(found["email"], "User3@Example.COM");
    assert_eq!(found["accountType"], "REMOTE_ACCOUNT_TYPE");
    assert!(found["id"].is_u64());

    let (_, filtered) = get(&sim, "/admin/users?filter_by=user_like:USER3").await;
    assert_eq!(filtered["count"], 1);
    let (_, beyond) = get(&sim, "/admin/users?offset=10&limit=2").await;
    assert_eq!(beyond["count"], 6);
    assert!(beyond.get("items").is_none(), "an empty page has no items: {beyond}");
    let (status, _) = get(&sim, "/admin/users?limit=two").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = get(&sim, "/admin/users?sort_by=id:asc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "Hopsworks does not sort users by id");
    assert!(error["errorCode"].is_u64());
    let (_, sorted) = get(&sim, "/admin/users?sort_by=email:desc&filter_by=type:REMOTE_ACCOUNT_TYPE").await;
    assert_eq!(sorted["count"], 5, "the local admin is not a remote account");
    assert_eq!(sorted["items"][0]["email"], "User4@Example.COM");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_read_and_updated_by_numeric_id_only() {
    let sim = start();
    let created: Value = create_user(&sim, "meb@example.com", "auth0|1").await.json().await.unwrap();
    let username = created["username"].as_str().unwrap();
    let id = id_of(&sim, username);

    let (status, user) = get(&sim, &format!("/admin/users/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["username"], username);
    assert_eq!(user["status"], 2);

    let (status, error) = get(&sim, &format!("/admin/users/{username}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error["errorCode"].is_u64() && error["errorMsg"].is_string(), "{error}");
    let (status, error) = put_json(&sim, &format!("/admin/users/{username}"), &json!({"status": 3})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error["errorCode"].is_u64());
    let (status, _) = get(&sim, "/admin/users/99999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, user) = put_json(&sim, &format!("/admin/users/{id}"), &json!({"maxNumProjects": 0})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["maxNumProjects"], 0);
    for s in [3, 4, 2] {
        let (status, user) = put_json(&sim, &format!("/admin/users/{id}"), &json!({"status": s})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(user["status"], s);
        assert_eq!(sim.users().iter().find(|u| u.id == id).unwrap().status, s);
    }
    for bad in [json!({"status": 8}), json!({"status": "ACTIVATED"}), json!({"maxNumProjects": -1}), json!({})] {
        let (status, error) = put_json(&sim, &format!("/admin/users/{id}"), &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(error["errorCode"].is_u64(), "{error}");
    }
    let stored = sim.users().into_iter().find(|u| u.id == id).unwrap();
    assert_eq!((stored.status, stored.max_num_projects), (2, 0));
    assert!(sim.create_project(username, "over_limit").is_err(), "maxNumProjects 0 forbids creating");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_live_in_namespaces_derived_from_their_names_and_take_members() {
    let sim = start();
    let owner: Value = create_user(&sim, "owner@example.com", "auth0|owner").await.json().await.unwrap();
    let member: Value = create_user(&sim, "member@example.com", "auth0|member").await.json().await.unwrap();
    let owner = owner["username"].as_str().unwrap();
    let member = member["username"].as_str().unwrap();
    let project = sim.create_project(owner, "My_Project").unwrap();
    assert_eq!(project.namespace, "my-project");
    let other = sim.create_project(owner, "second").unwrap();

    let (status, listing) = get(&sim, "/admin/projects?expand=creator").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listing["count"], 2);
    let first = &listing["items"][0];
    assert_eq!(first["name"], "My_Project");
    assert_eq!(first["namespace"], "my-project");
    assert_eq!(first["id"], project.id);
    assert!(first["created"].is_string());
    assert_eq!(first["creator"]["username"], owner);
    assert_eq!(first["creator"]["email"], "owner@example.com");
    let owner_id = id_of(&sim, owner);
    assert!(first["creator"]["href"].as_str().unwrap().ends_with(&format!("/hopsworks-api/api/users/{owner_id}")));
    let (_, unexpanded) = get(&sim, "/admin/projects").await;
    assert!(unexpanded["items"][0]["creator"].get("username").is_none(), "creator is expanded on request only");
    let (_, paged) = get(&sim, "/admin/projects?offset=1&limit=1").await;
    assert_eq!((paged["count"].as_u64(), paged["items"][0]["name"].as_str()), (Some(2), Some("second")));

    let add = json!({"username": member, "role": ROLE_DATA_SCIENTIST, "projectIds": [project.id, other.id]});
    let response = post_json(&sim, "/admin/projects/add-to-projects", &add).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty(), "add-to-projects answers an empty body");
    assert_eq!(post_json(&sim, "/admin/projects/add-to-projects", &add).await.status(), StatusCode::OK);
    let memberships = sim.memberships();
    let of_member: Vec<_> = memberships.iter().filter(|m| m.username == member).collect();
    assert_eq!(of_member.len(), 2, "a retried add records nothing twice");
    assert!(of_member.iter().all(|m| m.role == ROLE_DATA_SCIENTIST));
    assert!(memberships.iter().any(|m| m.username == owner && m.role == ROLE_DATA_OWNER && m.project_id == project.id));

    let bad_role = json!({"username": member, "role": "Data engineer", "projectIds": [project.id]});
    let response = post_json(&sim, "/admin/projects/add-to-projects", &bad_role).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.json::<Value>().await.unwrap()["errorCode"].is_u64());
    let unknown = json!({"username": owner, "role": ROLE_DATA_SCIENTIST, "projectIds": [987_654]});
    let response = post_json(&sim, "/admin/projects/add-to-projects", &unknown).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.json::<Value>().await.unwrap()["errorCode"].is_u64());
    assert_eq!(sim.memberships().len(), memberships.len());
    let observer: Value = create_user(&sim, "observer@example.com", "auth0|observer").await.json().await.unwrap();
    let observe = json!({"username": observer["username"], "role": "Observer", "projectIds": [project.id]});
    assert_eq!(post_json(&sim, "/admin/projects/add-to-projects", &observe).await.status(), StatusCode::OK);
    let unknown_user = json!({"username": "nobody10000", "role": ROLE_DATA_SCIENTIST, "projectIds": [project.id]});
    let response = post_json(&sim, "/admin/projects/add-to-projects", &unknown_user).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["errorCode"], 160_002);

    let (_, owner_item) = get(&sim, &format!("/admin/users/{}", id_of(&sim, owner))).await;
    assert_eq!(owner_item["numActiveProjects"], 2);
    sim.delete_project(other.id).unwrap();
    let (_, owner_item) = get(&sim, &format!("/admin/users/{}", id_of(&sim, owner))).await;
    assert_eq!(
        (owner_item["numActiveProjects"].as_u64(), owner_item["numCreatedProjects"].as_u64()),
        (Some(1), Some(2))
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_requests_answer_5xx_with_a_hopsworks_body_and_change_nothing() {
    let sim = start();
    sim.fail_next(2, 503);
    let first = create_user(&sim, "a@example.com", "auth0|a").await;
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: Value = first.json().await.unwrap();
    assert!(error["errorCode"].is_u64() && error["errorMsg"].is_string(), "{error}");
    assert_eq!(create_user(&sim, "a@example.com", "auth0|a").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.users().len(), 1);
    assert_eq!(create_user(&sim, "a@example.com", "auth0|a").await.status(), StatusCode::CREATED);

    sim.fail_next(1, 500);
    let (status, _) = get(&sim, "/admin/users").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = get(&sim, "/admin/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.requests().len(), 5, "faulted requests are logged too");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_arrive_late() {
    let sim = start();
    sim.set_delay(Some(Duration::from_millis(400)));
    let started = Instant::now();
    let (status, _) = get(&sim, "/admin/users").await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
    sim.set_delay(None);
    let started = Instant::now();
    get(&sim, "/admin/users").await;
    assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_answer_times_the_client_out_although_the_change_was_made() {
    let sim = start();
    sim.hold_next(1, Duration::from_secs(5));
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap()])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let result = client
        .post(format!("{}/admin/users?{}", sim.url(), create_query("held@example.com", "H", "D", "auth0|h")))
        .header("Authorization", format!("ApiKey {KEY}"))
        .send()
        .await;
    let error = result.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(sim.users().iter().any(|u| u.email == "held@example.com"));
    let retried = create_user(&sim, "held@example.com", "auth0|h").await;
    assert_eq!(retried.status(), StatusCode::CONFLICT, "the retry finds the user made by the timed-out request");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_trusted_through_the_cluster_ca_only() {
    let sim = start();
    assert!(sim.url().starts_with("https://127.0.0.1:"));
    assert!(sim.url().ends_with("/hopsworks-api/api"));
    let other = Ca::new("cluster-b").unwrap();
    let refused = client_trusting(other.cert_pem())
        .get(format!("{}/admin/users", sim.url()))
        .header("Authorization", format!("ApiKey {KEY}"))
        .send()
        .await;
    assert!(refused.is_err(), "a client trusting another CA is refused");
    let (status, _) = get(&sim, "/admin/users").await;
    assert_eq!(status, StatusCode::OK);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_are_answered_before_the_api_key_is_checked() {
    let sim = start();
    let client = client_trusting(sim.ca_pem());
    let unknown = client.get(format!("{}/admin/clusters", sim.url())).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.json::<Value>().await.unwrap()["errorCode"].is_u64());
    let patch = client.patch(format!("{}/admin/users/10000", sim.url())).send().await.unwrap();
    assert_eq!(patch.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(patch.json::<Value>().await.unwrap()["errorCode"].is_u64());
    let unauthorized = client.get(format!("{}/admin/users/10000", sim.url())).send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let (status, admin) = get(&sim, "/admin/users/10000").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(admin["email"], "admin@hopsworks.ai");
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Keys of their own, and project members

async fn call(sim: &HopsworksSim, method: reqwest::Method, key: &str, path: &str) -> (StatusCode, Value) {
    let response = client_trusting(sim.ca_pem())
        .request(method, format!("{}{path}", sim.url()))
        .header("Authorization", format!("ApiKey {key}"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
}

/// A cluster with an owner who created `analytics`, and people to add to it; answers the
/// project id and the usernames (owner, then the others).
async fn project_with_people(sim: &HopsworksSim, others: &[&str]) -> (u64, Vec<String>) {
    let mut names = Vec::new();
    for who in std::iter::once(&"owner").chain(others) {
        let made: Value =
            create_user(sim, &format!("{who}@example.com"), &format!("auth0|{who}")).await.json().await.unwrap();
        names.push(made["username"].as_str().unwrap().to_owned());
    }
    let project = sim.create_project(&names[0], "analytics").unwrap();
    (project.id, names)
}

fn roles_in(sim: &HopsworksSim, project: u64) -> Vec<(String, String)> {
    sim.memberships().into_iter().filter(|m| m.project_id == project).map(|m| (m.username, m.role)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_is_the_api_keys_own_user_and_only_admins_keys_reach_admin_routes() {
    let sim = start();
    let admin = sim.admin().unwrap();
    let (status, me) = call(&sim, reqwest::Method::GET, KEY, "/users/profile").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((me["id"].as_u64(), me["username"].as_str()), (Some(admin.id), Some(admin.username.as_str())));
    assert_eq!(me["email"], "admin@hopsworks.ai");

    let made: Value = create_user(&sim, "ada@example.com", "auth0|ada").await.json().await.unwrap();
    let ada = made["username"].as_str().unwrap();
    let key = sim.create_api_key(ada).unwrap();
    let (status, me) = call(&sim, reqwest::Method::GET, &key, "/users/profile").await;
    assert_eq!(
        (status, me["username"].as_str(), me["email"].as_str()),
        (StatusCode::OK, Some(ada), Some("ada@example.com"))
    );
    let (status, error) = call(&sim, reqwest::Method::GET, &key, "/admin/users").await;
    assert_eq!((status, error["errorCode"].as_u64()), (StatusCode::FORBIDDEN, Some(200_014)), "{error}");
    let (status, error) = call(&sim, reqwest::Method::GET, "no-such-key", "/users/profile").await;
    assert_eq!((status, error["errorCode"].as_u64()), (StatusCode::UNAUTHORIZED, Some(320_004)));
    assert!(sim.create_api_key("nobody10000").is_err());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_members_are_listed_to_its_data_owners_and_data_scientists_only() {
    let sim = start();
    let (project, names) = project_with_people(&sim, &["member", "watcher"]).await;
    for (who, role) in [(&names[1], ROLE_DATA_SCIENTIST), (&names[2], "Observer")] {
        let add = json!({"username": who, "role": role, "projectIds": [project]});
        assert_eq!(post_json(&sim, "/admin/projects/add-to-projects", &add).await.status(), StatusCode::OK);
    }
    let path = format!("/project/{project}/projectMembers");
    let (status, error) = call(&sim, reqwest::Method::GET, KEY, &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the admin is no member: {error}");
    assert_eq!(
        (error["errorCode"].as_u64(), error["errorMsg"].as_str()),
        (Some(160_000), Some("No valid role found for this user"))
    );

    for who in [&names[0], &names[1]] {
        let (status, members) = call(&sim, reqwest::Method::GET, &sim.create_api_key(who).unwrap(), &path).await;
        assert_eq!(status, StatusCode::OK, "{members}");
        let listed: Vec<(&str, &str, &str)> = members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["projectTeamPK"]["projectId"], project);
                (
                    m["user"]["username"].as_str().unwrap(),
                    m["projectTeamPK"]["teamMember"].as_str().unwrap(),
                    m["teamRole"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            vec![
                (names[0].as_str(), "owner@example.com", ROLE_DATA_OWNER),
                (names[1].as_str(), "member@example.com", ROLE_DATA_SCIENTIST),
                (names[2].as_str(), "watcher@example.com", "Observer"),
            ]
        );
    }
    let (status, error) = call(&sim, reqwest::Method::GET, &sim.create_api_key(&names[2]).unwrap(), &path).await;
    assert_eq!((status, error["errorCode"].as_u64()), (StatusCode::FORBIDDEN, Some(150_068)), "an observer may not");
    let (status, error) = call(&sim, reqwest::Method::GET, KEY, "/project/987654/projectMembers").await;
    assert_eq!((status, error["errorCode"].as_u64()), (StatusCode::NOT_FOUND, Some(150_004)));
    let (status, _) = call(&sim, reqwest::Method::GET, KEY, "/project/analytics/projectMembers").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the id is a number");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_removed_only_as_hopsworks_allows_and_a_refusal_changes_nothing() {
    let sim = start();
    let (project, names) = project_with_people(&sim, &["first", "second"]).await;
    for who in [&names[1], &names[2]] {
        let add = json!({"username": who, "role": ROLE_DATA_SCIENTIST, "projectIds": [project]});
        assert_eq!(post_json(&sim, "/admin/projects/add-to-projects", &add).await.status(), StatusCode::OK);
    }
    let remove = |email: &str| format!("/project/{project}/projectMembers/{email}");
    let delete = reqwest::Method::DELETE;
    let before = roles_in(&sim, project);

    let (status, error) = call(&sim, delete.clone(), KEY, &remove("first@example.com")).await;
    assert_eq!((status, error["errorCode"].as_u64()), (StatusCode::FORBIDDEN, Some(160_000)), "the admin is no member");
    let first = sim.create_api_key(&names[1]).unwrap();
    let (status, error) = call(&sim, delete.clone(), &first, &remove("second@example.com")).await;
    assert_eq!(
        (status, error["errorCode"].as_u64()),
        (StatusCode::FORBIDDEN, Some(150_012)),
        "a data scientist removes only themselves"
    );
    let (status, error) = call(&sim, delete.clone(), &first, &remove("stranger@example.com")).await;
    assert_eq!((status, error["errorCode"].as_u64()), (StatusCode::NOT_FOUND, Some(150_023)));
    assert_eq!(roles_in(&sim, project), before, "refusals change nothing");

    // The admin's own user, made a Data owner, removes a member and then itself.
    let admin = sim.admin().unwrap();
    let add = json!({"username": admin.username, "role": ROLE_DATA_OWNER, "projectIds": [project]});
    assert_eq!(post_json(&sim, "/admin/projects/add-to-projects", &add).await.status(), StatusCode::OK);
    let (status, error) = call(&sim, delete.clone(), KEY, &remove("OWNER@example.com")).await;
    assert_eq!(
        (status, error["errorCode"].as_u64()),
        (StatusCode::FORBIDDEN, Some(150_013)),
        "nobody removes the creator"
    );
    let (status, done) = call(&sim, delete.clone(), KEY, &remove("Second@Example.com")).await;
    assert_eq!((status, done["successMessage"].as_str()), (StatusCode::OK, Some("Member removed from team.")));
    let (status, error) = call(&sim, delete.clone(), KEY, &remove("second@example.com")).await;
    assert_eq!(
        (status, error["errorCode"].as_u64()),
        (StatusCode::NOT_FOUND, Some(150_023)),
        "a second removal finds nobody"
    );
    let (status, _) = call(&sim, delete.clone(), &first, &remove("first@example.com")).await;
    assert_eq!(status, StatusCode::OK, "a data scientist leaves");
    let (status, _) = call(&sim, delete.clone(), KEY, &remove("admin@hopsworks.ai")).await;
    assert_eq!(status, StatusCode::OK, "the admin leaves");
    assert_eq!(roles_in(&sim, project), vec![(names[0].clone(), ROLE_DATA_OWNER.to_owned())]);
    let (status, error) = call(&sim, delete, KEY, &remove("admin@hopsworks.ai")).await;
    assert_eq!((status, error["errorCode"].as_u64()), (StatusCode::FORBIDDEN, Some(160_000)), "gone, it has no role");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_aimed_at_one_route_leave_the_others_alone() {
    let sim = start();
    let (project, names) = project_with_people(&sim, &["member"]).await;
    sim.fail_next_on(Route::AddToProjects, 2, 503);
    let add = json!({"username": names[1], "role": ROLE_DATA_SCIENTIST, "projectIds": [project]});
    for _ in 0..2 {
        assert_eq!(get(&sim, "/admin/users").await.0, StatusCode::OK, "other routes answer");
        let failed = post_json(&sim, "/admin/projects/add-to-projects", &add).await;
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(failed.json::<Value>().await.unwrap()["errorCode"], 120_000);
    }
    assert_eq!(roles_in(&sim, project).len(), 1, "a failed request adds nobody");
    assert_eq!(post_json(&sim, "/admin/projects/add-to-projects", &add).await.status(), StatusCode::OK);
    assert_eq!(roles_in(&sim, project).len(), 2);

    // A held removal is made although the client gives up waiting.
    sim.hold_next_on(Route::RemoveMember, 1, Duration::from_secs(5));
    let owner_key = sim.create_api_key(&names[0]).unwrap();
    let impatient = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap()])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let lost = impatient
        .delete(format!("{}/project/{project}/projectMembers/member@example.com", sim.url()))
        .header("Authorization", format!("ApiKey {owner_key}"))
        .send()
        .await;
    assert!(lost.unwrap_err().is_timeout());
    assert_eq!(roles_in(&sim, project).len(), 1, "the member was removed");

    sim.fail_next_on(Route::Profile, 5, 500);
    sim.clear_faults();
    assert_eq!(call(&sim, reqwest::Method::GET, KEY, "/users/profile").await.0, StatusCode::OK, "cleared");
    sim.stop().await;
}
