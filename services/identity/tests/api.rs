//! identity's API against the real Postgres and NATS, with requests signed as the gateway
//! signs them and the webhook called as the Auth0 Action calls it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{person, start};
use hopsbridge_platform::caller::Role;
use hopsbridge_sandbox::auth0::TestUser;
use hopsbridge_testkit::WEBHOOK_SECRET;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_refuses_a_missing_or_wrong_secret_and_changes_nothing() {
    let identity = start().await;
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let client = reqwest::Client::new();
    assert_eq!(identity.webhook("not-the-secret-at-all").fire(&client, &ada).await.unwrap(), 401);
    let (status, body) = identity
        .call(
            Method::POST,
            "/webhooks/auth0/post-registration",
            None,
            Some(json!({"user_id": "auth0|ada", "email": "ada@example.com"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_webhook_secret")));
    assert_eq!(identity.users().await, 0);
    assert_eq!(identity.events("UserCreated").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_creates_a_person_once_however_often_it_is_replayed() {
    let identity = start().await;
    let ada = TestUser::database("ada", "Ada@Example.COM", "Ada Lovelace");
    let action = identity.webhook(WEBHOOK_SECRET);
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(action.fire(&client, &ada).await.unwrap(), 200);
    }
    assert_eq!(identity.users().await, 1);
    assert_eq!(identity.events("UserCreated").await, 1);
    let caller = identity.sign_in("auth0|ada", "ada@example.com").await;
    let (status, me) = identity.call(Method::GET, "/api/me", Some(&caller), None).await;
    assert_eq!(status, 200);
    assert_eq!((me["email"].as_str(), me["name"].as_str()), (Some("ada@example.com"), Some("Ada Lovelace")));
    assert_eq!(me["status"], "active");
    assert!(me["last_login_at"].is_string());
    assert_eq!(me["account_owner_id"], me["id"], "a new person owns their account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_recorded_to_the_minute_without_a_write_for_each() {
    let identity = start().await;
    let ada = identity.sign_in("auth0|ada", "ada@example.com").await;
    let last_login =
        || async { identity.call(Method::GET, "/api/me", Some(&ada), None).await.1["last_login_at"].clone() };
    let first = last_login().await;
    assert!(first.is_string(), "the first call is recorded: {first}");
    identity.sign_in("auth0|ada", "ada@example.com").await;
    assert_eq!(last_login().await, first, "a call within the minute writes nothing");
    identity.sql("UPDATE users SET last_login_at = last_login_at - interval '61 seconds'").await;
    let aged = last_login().await;
    identity.sign_in("auth0|ada", "ada@example.com").await;
    let recorded = last_login().await;
    assert!(
        recorded != aged && recorded.as_str() > aged.as_str(),
        "a call a minute later is recorded: {aged} then {recorded}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_the_webhook_against_first_calls_still_makes_one_user_and_one_event() {
    let identity = start().await;
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let action = identity.webhook(WEBHOOK_SECRET);
    let client = reqwest::Client::new();
    let caller = person("auth0|ada", Some("ada@example.com"));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (action, client, ada, caller) = (action.clone(), client.clone(), ada.clone(), caller.clone());
        let identity = &identity;
        tasks.push(async move {
            if i % 2 == 0 {
                action.fire(&client, &ada).await.unwrap()
            } else {
                identity.call(Method::POST, "/internal/callers/resolve", Some(&caller), None).await.0.as_u16()
            }
        });
    }
    let statuses = futures::future::join_all(tasks).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(identity.users().await, 1);
    assert_eq!(identity.events("UserCreated").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_arriving_after_the_first_call_fills_in_the_name_and_nothing_else() {
    let identity = start().await;
    let caller = identity.sign_in("auth0|ada", "ada@example.com").await;
    let (_, before) = identity.call(Method::GET, "/api/me", Some(&caller), None).await;
    assert_eq!(before["name"], "", "the token carries no name");
    let action = identity.webhook(WEBHOOK_SECRET);
    let client = reqwest::Client::new();
    let ada = TestUser::database("ada", "ada@example.com", "Ada Lovelace");
    assert_eq!(action.fire(&client, &ada).await.unwrap(), 200);
    let (_, after) = identity.call(Method::GET, "/api/me", Some(&caller), None).await;
    assert_eq!((after["id"].clone(), after["name"].as_str()), (before["id"].clone(), Some("Ada Lovelace")));
    assert_eq!(identity.users().await, 1);
    assert_eq!(identity.events("UserCreated").await, 1);
    // A name the person chose since is theirs: a replayed Action does not overwrite it.
    let (status, _) = identity.call(Method::PATCH, "/api/me", Some(&caller), Some(json!({"name": "Countess"}))).await;
    assert_eq!(status, 200);
    assert_eq!(action.fire(&client, &ada).await.unwrap(), 200);
    let (_, last) = identity.call(Method::GET, "/api/me", Some(&caller), None).await;
    assert_eq!(last["name"], "Countess");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_social_login_is_created_on_its_first_call_and_needs_an_email() {
    let identity = start().await;
    let (status, body) =
        identity.call(Method::POST, "/internal/callers/resolve", Some(&person("google-oauth2|1034", None)), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("email_required")));
    assert_eq!(identity.users().await, 0);
    let caller = identity.sign_in("google-oauth2|1034", "grace@example.com").await;
    let again = identity.sign_in("google-oauth2|1034", "grace@example.com").await;
    assert_eq!(caller.user_id, again.user_id);
    assert_eq!(identity.events("UserCreated").await, 1);
    // Another login with the same address is a different account: refused, nothing created.
    let (status, body) = identity
        .call(Method::POST, "/internal/callers/resolve", Some(&person("auth0|other", Some("GRACE@example.com"))), None)
        .await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("email_in_use")));
    assert_eq!(identity.users().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_trusts_only_requests_signed_by_the_gateway() {
    let identity = start().await;
    let caller = identity.sign_in("auth0|ada", "ada@example.com").await;
    for (method, path) in [(Method::GET, "/api/me"), (Method::DELETE, "/api/me"), (Method::GET, "/api/admin/users")] {
        let (status, body) = identity.call(method.clone(), path, None, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
            "{method} {path}"
        );
    }
    // Headers signed for one route do not open another.
    let mut request = reqwest::Client::new().delete(format!("{}/api/me", identity.base));
    for (name, value) in identity.key.sign("GET", "/api/me", &caller, chrono::Utc::now().timestamp()) {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status(), 401);
    assert_eq!(identity.call(Method::GET, "/api/me", Some(&caller), None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_renames_themselves_within_limits() {
    let identity = start().await;
    let caller = identity.sign_in("auth0|ada", "ada@example.com").await;
    let (status, me) =
        identity.call(Method::PATCH, "/api/me", Some(&caller), Some(json!({"name": "  Ada L.  "}))).await;
    assert_eq!((status, me["name"].as_str()), (StatusCode::OK, Some("Ada L.")));
    for bad in [
        json!({"name": ""}),
        json!({"name": "x".repeat(201)}),
        json!({"name": "a\u{0007}b"}),
        json!({"email": "x@y.z"}),
    ] {
        let (status, body) = identity.call(Method::PATCH, "/api/me", Some(&caller), Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let (_, me) = identity.call(Method::GET, "/api/me", Some(&caller), None).await;
    assert_eq!(me["name"], "Ada L.", "bad input changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_deletes_their_account_once_their_team_is_empty() {
    let identity = start().await;
    let owner = identity.sign_in("auth0|owner", "owner@example.com").await;
    let member = identity.sign_in("auth0|member", "member@example.com").await;
    let (o, m) = (owner.user_id.unwrap(), member.user_id.unwrap());
    identity.member_of(m, o).await;
    identity.team.set_members(o, 1);

    let (_, me) = identity.call(Method::GET, "/api/me", Some(&member), None).await;
    assert_eq!(me["account_owner_id"], o.to_string(), "a member's usage belongs to the owner");
    let (status, body) = identity.call(Method::DELETE, "/api/me", Some(&owner), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("team_not_empty")));
    let (status, body) = identity.call(Method::DELETE, "/api/me", Some(&member), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("member_account")));
    assert_eq!(identity.events("UserDeleted").await, 0);

    identity.sql(&format!("DELETE FROM team_members WHERE member_user_id = '{m}'")).await;
    identity.team.set_members(o, 0);
    let (status, body) = identity.call(Method::DELETE, "/api/me", Some(&owner), None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("deleted")));
    assert_eq!(identity.events("UserDeleted").await, 1);
    let (status, body) = identity.call(Method::GET, "/api/me", Some(&owner), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("account_deleted")));
}

/// The owner's account as stored, and the UserDeleted events: what a refused deletion must
/// leave as it was.
async fn untouched(identity: &common::Identity, owner: &hopsbridge_platform::caller::Caller) {
    let (status, me) = identity.call(Method::GET, "/api/me", Some(owner), None).await;
    assert_eq!((status, me["status"].as_str()), (StatusCode::OK, Some("active")), "{me}");
    assert_eq!(identity.events("UserDeleted").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_is_not_deleted_while_the_team_service_fails_or_cannot_be_reached() {
    let identity = start().await;
    let owner = identity.sign_in("auth0|owner", "owner@example.com").await;
    identity.team.set_failing(true);
    let (status, body) = identity.call(Method::DELETE, "/api/me", Some(&owner), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("team_unavailable")));
    assert_eq!(identity.team.asked(), 1, "identity asked team, signed as itself");
    untouched(&identity, &owner).await;
    // A member is refused by identity alone: team is not asked.
    let member = identity.sign_in("auth0|member", "member@example.com").await;
    identity.member_of(member.user_id.unwrap(), owner.user_id.unwrap()).await;
    let (status, body) = identity.call(Method::DELETE, "/api/me", Some(&member), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("member_account")));
    assert_eq!(identity.team.asked(), 1);
    identity.sql(&format!("DELETE FROM team_members WHERE member_user_id = '{}'", member.user_id.unwrap())).await;

    identity.team.set_failing(false);
    let (status, body) = identity.call(Method::DELETE, "/api/me", Some(&owner), None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("deleted")), "{body}");
    assert_eq!(identity.events("UserDeleted").await, 1);

    // Nothing listens where this identity looks for team.
    let nowhere = format!("http://127.0.0.1:{}", hopsbridge_testkit::free_port());
    let identity = common::start_with_team(common::TeamStub::start(), Some(nowhere)).await;
    let owner = identity.sign_in("auth0|owner", "owner@example.com").await;
    let (status, body) = identity.call(Method::DELETE, "/api/me", Some(&owner), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("team_unavailable")));
    untouched(&identity, &owner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_view_suspend_reactivate_and_grant_and_others_cannot() {
    let identity = start().await;
    let admin = identity.sign_in("auth0|admin", "admin@example.com").await;
    let ada = identity.sign_in("auth0|ada", "ada@example.com").await;
    let grace = identity.sign_in("google-oauth2|grace", "grace@example.com").await;
    let ada_id = ada.user_id.unwrap();
    let ada_path = format!("/api/admin/users/{ada_id}");

    // Not yet an admin: every admin route is refused, whatever the caller claims in its roles.
    let mut claims_admin = grace.clone();
    claims_admin.roles.push(Role::Admin);
    for caller in [&admin, &claims_admin] {
        assert_eq!(identity.call(Method::GET, "/api/admin/users", Some(caller), None).await.0, 403);
        assert_eq!(identity.call(Method::GET, &ada_path, Some(caller), None).await.0, 403);
        assert_eq!(identity.call(Method::POST, &format!("{ada_path}/suspend"), Some(caller), None).await.0, 403);
    }
    identity.sql(&format!("UPDATE users SET is_admin = true WHERE id = '{}'", admin.user_id.unwrap())).await;

    let (status, page) = identity.call(Method::GET, "/api/admin/users?limit=2", Some(&admin), None).await;
    assert_eq!((status, page["total"].as_i64(), page["items"].as_array().unwrap().len()), (StatusCode::OK, Some(3), 2));
    let (_, page) = identity.call(Method::GET, "/api/admin/users?limit=2&offset=2", Some(&admin), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (_, found) = identity.call(Method::GET, "/api/admin/users?q=GRACE", Some(&admin), None).await;
    assert_eq!(found["items"][0]["email"], "grace@example.com");
    let (_, found) = identity.call(Method::GET, "/api/admin/users?q=%25", Some(&admin), None).await;
    assert_eq!(found["total"], 0, "% is matched literally");
    assert_eq!(identity.call(Method::GET, "/api/admin/users?limit=500", Some(&admin), None).await.0, 400);
    assert_eq!(identity.call(Method::GET, &ada_path, Some(&admin), None).await.1["email"], "ada@example.com");
    assert_eq!(identity.call(Method::GET, "/api/admin/users/not-a-uuid", Some(&admin), None).await.0, 400);
    let nobody = format!("/api/admin/users/{}", uuid::Uuid::now_v7());
    assert_eq!(identity.call(Method::GET, &nobody, Some(&admin), None).await.1["code"], "user_not_found");

    let (status, user) = identity
        .call(Method::POST, &format!("{ada_path}/suspend"), Some(&admin), Some(json!({"reason": "unpaid"})))
        .await;
    assert_eq!((status, user["status"].as_str()), (StatusCode::OK, Some("suspended")));
    identity.call(Method::POST, &format!("{ada_path}/suspend"), Some(&admin), None).await;
    assert_eq!(identity.events("UserSuspended").await, 1, "suspending twice announces once");
    assert_eq!(identity.call(Method::GET, "/api/me", Some(&ada), None).await.1["code"], "account_suspended");
    let (_, user) = identity.call(Method::POST, &format!("{ada_path}/reactivate"), Some(&admin), None).await;
    assert_eq!(user["status"], "active");
    assert_eq!(identity.events("UserReactivated").await, 1);

    let (_, user) = identity.call(Method::PUT, &format!("{ada_path}/admin"), Some(&admin), None).await;
    assert_eq!(user["is_admin"], true);
    assert_eq!(identity.call(Method::GET, "/api/admin/users", Some(&ada), None).await.0, 200, "ada is an admin now");
    let (_, user) = identity.call(Method::DELETE, &format!("{ada_path}/admin"), Some(&admin), None).await;
    assert_eq!(user["is_admin"], false);
    let own = format!("/api/admin/users/{}/admin", admin.user_id.unwrap());
    assert_eq!(identity.call(Method::DELETE, &own, Some(&admin), None).await.1["code"], "cannot_revoke_self");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_admin_the_gateway_vouches_for_manages_people_and_a_person_shaped_like_one_does_not() {
    let identity = start().await;
    let ada = identity.sign_in("auth0|ada", "ada@example.com").await;
    let ada_path = format!("/api/admin/users/{}", ada.user_id.unwrap());
    let machine = hopsbridge_platform::caller::Caller::machine_admin(&ada.issuer.clone().unwrap(), "ops-bot");

    assert_eq!(identity.call(Method::GET, "/api/admin/users", Some(&machine), None).await.0, 200);
    let (status, user) = identity
        .call(Method::POST, &format!("{ada_path}/suspend"), Some(&machine), Some(json!({"reason": "ops"})))
        .await;
    assert_eq!((status, user["status"].as_str()), (StatusCode::OK, Some("suspended")));
    assert_eq!(identity.events("UserSuspended").await, 1);
    let (_, user) = identity.call(Method::POST, &format!("{ada_path}/reactivate"), Some(&machine), None).await;
    assert_eq!(user["status"], "active");

    // Anything more than the exact shape is a person's caller, checked against identity's
    // records: ada with the admin role and a client subject is still not an admin.
    let mut pretender = machine.clone();
    pretender.user_id = ada.user_id;
    assert_eq!(identity.call(Method::GET, "/api/admin/users", Some(&pretender), None).await.0, 403);
    let mut no_issuer = machine;
    no_issuer.issuer = None;
    assert_eq!(identity.call(Method::GET, "/api/admin/users", Some(&no_issuer), None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_events_tell_identity_whose_account_a_member_belongs_to() {
    use hopsbridge_contracts::Event;
    use hopsbridge_contracts::events::{Envelope, TeamMemberJoinedV1, TeamMemberRemovedV1};
    use prost::Message as _;
    let identity = start().await;
    let owner = identity.sign_in("auth0|owner", "owner@example.com").await;
    let member = identity.sign_in("auth0|member", "member@example.com").await;
    let (o, m) = (owner.user_id.unwrap().to_string(), member.user_id.unwrap().to_string());

    let js = identity.bus.jetstream().await;
    let publish = |event_type: &'static str, subject: String, payload: Vec<u8>| {
        let js = js.clone();
        async move {
            let id = uuid::Uuid::now_v7().to_string();
            let envelope = Envelope {
                event_id: id.clone(),
                event_type: event_type.into(),
                schema_version: 1,
                producer: "team".into(),
                payload,
                ..Default::default()
            };
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(envelope.encode_to_vec().into())
                .message_id(id);
            js.send_publish(subject, message).await.unwrap().await.unwrap();
        }
    };
    let subjects = identity.bus.subjects();
    let joined = TeamMemberJoinedV1 {
        owner_user_id: o.clone(),
        member_user_id: m.clone(),
        project_role: "Data scientist".into(),
        ..TeamMemberJoinedV1::default()
    };
    publish(TeamMemberJoinedV1::TYPE, subjects.event::<TeamMemberJoinedV1>(), joined.encode_to_vec()).await;
    let belongs = hopsbridge_testkit::eventually(std::time::Duration::from_secs(15), || async {
        identity.call(Method::GET, "/api/me", Some(&member), None).await.1["account_owner_id"] == o.as_str()
    })
    .await;
    assert!(belongs, "the member's account belongs to the owner");
    identity.team.set_members(owner.user_id.unwrap(), 1);
    assert_eq!(identity.call(Method::DELETE, "/api/me", Some(&owner), None).await.1["code"], "team_not_empty");

    let removed =
        TeamMemberRemovedV1 { owner_user_id: o.clone(), member_user_id: m.clone(), ..TeamMemberRemovedV1::default() };
    publish(TeamMemberRemovedV1::TYPE, subjects.event::<TeamMemberRemovedV1>(), removed.encode_to_vec()).await;
    let own = hopsbridge_testkit::eventually(std::time::Duration::from_secs(15), || async {
        identity.call(Method::GET, "/api/me", Some(&member), None).await.1["account_owner_id"] == m.as_str()
    })
    .await;
    assert!(own, "after removal the member owns their account again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_the_search_or_the_webhook_is_refused_as_bad_input_and_writes_nothing() {
    let identity = start().await;
    let admin = identity.sign_in("auth0|admin", "admin@example.com").await;
    identity.sql(&format!("UPDATE users SET is_admin = true WHERE id = '{}'", admin.user_id.unwrap())).await;
    let (status, body) = identity.call(Method::GET, "/api/admin/users?q=a%00b", Some(&admin), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("nul_character")), "{body}");
    let (status, _) = identity.call(Method::GET, "/api/admin/users?q=a%2500b", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK, "an encoded percent sign is text");

    for body in [
        r#"{"user_id": "auth0|a\u0000b", "email": "nul@example.com"}"#,
        r#"{"user_id": "auth0|nul", "email": "n\u0000ul@example.com"}"#,
        "{\"user_id\": \"auth0|nul\", \"email\": \"nul@example.com\", \"name\": \"N\0\"}",
    ] {
        let response = reqwest::Client::new()
            .post(format!("{}/webhooks/auth0/post-registration", identity.base))
            .header(hopsbridge_identity::routes::WEBHOOK_SECRET_HEADER, WEBHOOK_SECRET)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("nul_character")), "{body}");
    }
    let patched = identity.call(Method::PATCH, "/api/me", Some(&admin), Some(json!({"name": "A\u{0}B"}))).await;
    assert_eq!((patched.0, patched.1["code"].as_str()), (StatusCode::BAD_REQUEST, Some("nul_character")));
    assert_eq!(identity.users().await, 1, "only the admin exists");
    assert_eq!(identity.events("UserCreated").await, 1, "nothing announced for the refused webhooks");
    let (_, me) = identity.call(Method::GET, "/api/me", Some(&admin), None).await;
    assert_eq!(me["name"].as_str(), Some(""), "the name did not change");
}
