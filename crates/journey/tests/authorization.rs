//! The authorisation matrix: every public route × {anonymous, another user, the owner, a team
//! member, an admin}, through the gateway, against every service running as its own process.
//! New routes join the table as they are added.

use diesel_async::RunQueryDsl;
use hopsbridge_journey::{Options, Platform, binaries};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    AnotherUser,
    Owner,
    Member,
    Admin,
}

const EVERYONE: [Who; 5] = [Who::Anonymous, Who::AnotherUser, Who::Owner, Who::Member, Who::Admin];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_kind_of_caller_as_it_should() {
    let platform = Platform::start(binaries!(), &Options::default()).await;
    let mut tokens: HashMap<Who, String> = HashMap::new();
    let mut ids: HashMap<Who, String> = HashMap::new();
    for (who, handle) in
        [(Who::AnotherUser, "another"), (Who::Owner, "owner"), (Who::Member, "member"), (Who::Admin, "admin")]
    {
        let person = platform.sign_up(handle).await;
        platform.wait_billing_account(&person, Duration::from_secs(30)).await;
        tokens.insert(who, person.token.clone());
        ids.insert(who, person.user_id.to_string());
        if who == Who::Owner {
            // The owner has a card and a cluster.
            platform.add_card(&person).await;
            platform.wait_assigned(&person, Duration::from_secs(30)).await;
        }
    }
    // "target", whom no one else is, is the object of admin actions.
    let target = platform.sign_up("target").await.user_id.to_string();
    {
        let mut conn = platform.db.connect("identity").await;
        let statements = [
            format!("UPDATE users SET is_admin = true WHERE id = '{}'", ids[&Who::Admin]),
            format!(
                "INSERT INTO team_members (member_user_id, owner_user_id) VALUES ('{}', '{}')",
                ids[&Who::Member],
                ids[&Who::Owner]
            ),
        ];
        for statement in statements {
            diesel::sql_query(statement).execute(&mut conn).await.unwrap();
        }
    }
    let owner = ids[&Who::Owner].clone();
    let today = chrono::Utc::now().date_naive();
    let (cluster, other_cluster) = (platform.cluster_ids[0], platform.cluster_ids[1]);
    let new_cluster = |name: &str| {
        let c = &platform.world.clusters[0];
        json!({
            "name": name, "api_url": c.hopsworks.origin(), "api_key": "key", "kubeconfig": c.kubernetes.kubeconfig(),
            "ca_bundle": c.hopsworks.ca_pem(), "oauth_client_id": "client", "capacity": 1, "region": "eu", "status": "inactive",
        })
    };

    // (method, path, body, expected status for Anonymous, AnotherUser, Owner, Member, Admin)
    let table: Vec<(&str, String, Option<Value>, [u16; 5])> = vec![
        ("GET", "/api/auth/caller".into(), None, [401, 200, 200, 200, 200]),
        // identity
        ("GET", "/api/me".into(), None, [401, 200, 200, 200, 200]),
        ("PATCH", "/api/me".into(), Some(json!({"name": "Renamed"})), [401, 200, 200, 200, 200]),
        ("GET", "/api/admin/users".into(), None, [401, 403, 403, 403, 200]),
        ("GET", format!("/api/admin/users/{owner}"), None, [401, 403, 403, 403, 200]),
        (
            "POST",
            format!("/api/admin/users/{target}/suspend"),
            Some(json!({"reason": "test"})),
            [401, 403, 403, 403, 200],
        ),
        ("POST", format!("/api/admin/users/{target}/reactivate"), None, [401, 403, 403, 403, 200]),
        ("PUT", format!("/api/admin/users/{target}/admin"), None, [401, 403, 403, 403, 200]),
        ("DELETE", format!("/api/admin/users/{target}/admin"), None, [401, 403, 403, 403, 200]),
        // billing: owners only (every person who is not a member owns an account, admins too)
        ("GET", "/api/billing".into(), None, [401, 200, 200, 403, 200]),
        ("POST", "/api/billing/payment-method".into(), None, [401, 200, 200, 403, 200]),
        ("POST", "/api/billing/portal".into(), None, [401, 200, 200, 403, 200]),
        // provisioning: a person sees only their own cluster; the registry is for admins
        ("GET", "/api/cluster".into(), None, [401, 404, 200, 404, 404]),
        ("GET", "/api/admin/clusters".into(), None, [401, 403, 403, 403, 200]),
        ("POST", "/api/admin/clusters".into(), Some(new_cluster("matrix")), [401, 403, 403, 403, 201]),
        ("GET", format!("/api/admin/clusters/{cluster}"), None, [401, 403, 403, 403, 200]),
        ("PATCH", format!("/api/admin/clusters/{cluster}"), Some(json!({"capacity": 60})), [401, 403, 403, 403, 200]),
        ("GET", "/api/admin/assignments".into(), None, [401, 403, 403, 403, 200]),
        ("GET", format!("/api/admin/assignments/{owner}"), None, [401, 403, 403, 403, 200]),
        (
            "PUT",
            format!("/api/admin/assignments/{owner}"),
            Some(json!({"cluster_id": other_cluster})),
            [401, 403, 403, 403, 200],
        ),
        ("DELETE", format!("/api/admin/assignments/{owner}"), None, [401, 403, 403, 403, 200]),
        // metering: a person sees their own usage (an owner their team's too); the rest is for admins
        ("GET", "/api/usage".into(), None, [401, 200, 200, 200, 200]),
        ("GET", format!("/api/usage?from={today}&to={today}"), None, [401, 200, 200, 200, 200]),
        ("GET", format!("/api/admin/usage?owner_user_id={owner}"), None, [401, 403, 403, 403, 200]),
        ("GET", format!("/api/admin/usage/samples?user_id={owner}&day={today}"), None, [401, 403, 403, 403, 200]),
        ("GET", format!("/api/admin/metering/runs?cluster_id={cluster}"), None, [401, 403, 403, 403, 200]),
        ("GET", "/api/admin/metering/gaps".into(), None, [401, 403, 403, 403, 200]),
        ("POST", format!("/api/admin/metering/clusters/{cluster}/collect"), None, [401, 403, 403, 403, 202]),
        // Deleting an account: a member cannot, an owner with members cannot; run last.
        ("DELETE", "/api/me".into(), None, [401, 200, 409, 409, 200]),
    ];
    let client = reqwest::Client::new();
    let mut mismatches = Vec::new();
    for (method, path, body, expected) in &table {
        for (who, want) in EVERYONE.iter().zip(expected) {
            let mut request = client.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", platform.gateway),
            );
            if let Some(token) = tokens.get(who) {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            let got = response.status().as_u16();
            if got != *want {
                let answer = response.text().await.unwrap_or_default();
                mismatches.push(format!("{method} {path} as {who:?}: {got}, expected {want} ({answer})"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
