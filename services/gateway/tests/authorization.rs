//! The authorisation matrix: every public route × {anonymous, another user, the owner, a team
//! member, an admin}, through the gateway, against the real services. New routes join the
//! table as they are added.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{Options, Platform};
use hopsbridge_sandbox::auth0::{TestUser, TokenSpec};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    let platform = Platform::start(Options::default()).await;
    let (tenant, base, db) = (&platform.tenant, platform.gateway.clone(), &platform.db);

    let people = [
        (Who::AnotherUser, TestUser::database("another", "another@example.com", "Another")),
        (Who::Owner, TestUser::database("owner", "owner@example.com", "Owner")),
        (Who::Member, TestUser::google("member", "member@example.com", "Member")),
        (Who::Admin, TestUser::database("admin", "admin@example.com", "Admin")),
        (Who::Anonymous, TestUser::database("target", "target@example.com", "Target")),
    ];
    let client = reqwest::Client::new();
    let call = |who: Who, method: Method, path: String, body: Option<Value>| {
        let token =
            people.iter().find(|(w, _)| *w == who).map(|(_, u)| tenant.access_token(&TokenSpec::user(u)).unwrap());
        let mut request = client.request(method, format!("{base}{path}"));
        if who != Who::Anonymous {
            request = request.bearer_auth(token.unwrap_or_default());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Everyone signs in once; "target" (a person no one else is) is the object of admin actions.
    let mut ids = std::collections::HashMap::new();
    for who in [Who::AnotherUser, Who::Owner, Who::Member, Who::Admin, Who::Anonymous] {
        let (status, me) = call(who, Method::GET, "/api/me".into(), None).await;
        if who == Who::Anonymous {
            assert_eq!(status, 401);
            continue;
        }
        ids.insert(format!("{who:?}"), me["id"].as_str().unwrap().to_owned());
    }
    // The target signs in with their own token to exist.
    let target_token = tenant.access_token(&TokenSpec::user(&people[4].1)).unwrap();
    let me: Value =
        client.get(format!("{base}/api/me")).bearer_auth(target_token).send().await.unwrap().json().await.unwrap();
    let target = me["id"].as_str().unwrap().to_owned();
    {
        use diesel_async::RunQueryDsl;
        let mut conn = db.connect("identity").await;
        diesel::sql_query(format!("UPDATE users SET is_admin = true WHERE id = '{}'", ids["Admin"]))
            .execute(&mut conn)
            .await
            .unwrap();
        diesel::sql_query(format!(
            "INSERT INTO team_members (member_user_id, owner_user_id) VALUES ('{}', '{}')",
            ids["Member"], ids["Owner"]
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let owner = ids["Owner"].clone();

    // (method, path, body, expected status for Anonymous, AnotherUser, Owner, Member, Admin)
    let table: Vec<(Method, String, Option<Value>, [u16; 5])> = vec![
        (Method::GET, "/api/auth/caller".into(), None, [401, 200, 200, 200, 200]),
        (Method::GET, "/api/me".into(), None, [401, 200, 200, 200, 200]),
        (Method::PATCH, "/api/me".into(), Some(json!({"name": "Renamed"})), [401, 200, 200, 200, 200]),
        (Method::GET, "/api/admin/users".into(), None, [401, 403, 403, 403, 200]),
        (Method::GET, format!("/api/admin/users/{owner}"), None, [401, 403, 403, 403, 200]),
        (
            Method::POST,
            format!("/api/admin/users/{target}/suspend"),
            Some(json!({"reason": "test"})),
            [401, 403, 403, 403, 200],
        ),
        (Method::POST, format!("/api/admin/users/{target}/reactivate"), None, [401, 403, 403, 403, 200]),
        (Method::PUT, format!("/api/admin/users/{target}/admin"), None, [401, 403, 403, 403, 200]),
        (Method::DELETE, format!("/api/admin/users/{target}/admin"), None, [401, 403, 403, 403, 200]),
        // Deleting an account: a member cannot, an owner with members cannot; run last.
        (Method::DELETE, "/api/me".into(), None, [401, 200, 409, 409, 200]),
    ];
    let mut mismatches = Vec::new();
    for (method, path, body, expected) in &table {
        for (who, want) in EVERYONE.iter().zip(expected) {
            let (got, answer) = call(*who, method.clone(), path.clone(), body.clone()).await;
            if got != *want {
                mismatches.push(format!("{method} {path} as {who:?}: {got}, expected {want} ({answer})"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
