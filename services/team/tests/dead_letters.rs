//! team's dead letters as a running service shows them: an event its consumer gave up on is
//! listed for admins at `/api/admin/dead-letters/team`, and replayed after the fix once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::UserCreatedV1;
use hopsbridge_domain::{Email, UserId};
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_sandbox::mail::MailSim;
use hopsbridge_team::TeamConfig;
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings, eventually};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LIST: &str = "/api/admin/dead-letters/team";

fn caller(roles: Vec<Role>) -> Caller {
    Caller {
        subject: "auth0|operator".to_owned(),
        issuer: Some("https://tenant.hopsbridge.test/".into()),
        user_id: Some(UserId::new()),
        roles,
        email: Email::parse("operator@hopsbridge.test").ok(),
    }
}

async fn people_named(db: &TestDb, email: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.connect("team").await;
    diesel::sql_query("SELECT count(*) AS n FROM people WHERE email = $1")
        .bind::<diesel::sql_types::Text, _>(email)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_team_gave_up_on_is_listed_with_its_reason_and_replayed_once_after_the_fix() {
    let (db, bus, mail) = (TestDb::new().await, TestBus::new().await, MailSim::start().unwrap());
    // Gives up after two deliveries a second apart.
    let settings = TestSettings::data_service(Service::Team, &db, &bus)
        .set("mail.smtp_url", mail.smtp_url())
        .set("shutdown.timeout_secs", "2")
        .layer("[events]\nmax_deliver = 3\nbackoff_secs = [1, 1]\n");
    let config: TeamConfig = TestSettings::load(&settings, &hopsbridge_team::DEFAULTS);
    let app = hopsbridge_team::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let call = async |method: Method, path: &str, roles: Vec<Role>| {
        hopsbridge_testkit::signed_call(&key, &base, method, path, Some(&caller(roles)), None).await
    };

    // The fault: team's people table refuses this person until it is fixed.
    let mut conn = db.connect("team").await;
    diesel::sql_query("ALTER TABLE people ADD CONSTRAINT not_yet CHECK (email <> 'blocked@example.com')")
        .execute(&mut conn)
        .await
        .unwrap();
    let blocked = UserCreatedV1 {
        user_id: UserId::new().to_string(),
        auth_subject: "auth0|blocked".to_owned(),
        email: "blocked@example.com".to_owned(),
        name: "Blocked".to_owned(),
    };
    let blocked_id = bus.publish(&blocked, None).await;
    let unusable = UserCreatedV1 { user_id: "not-a-uuid".to_owned(), ..blocked.clone() };
    let unusable_id = bus.publish(&unusable, None).await;

    let listed = eventually(Duration::from_secs(30), || async {
        call(Method::GET, LIST, vec![Role::Admin]).await.1["total"] == 2
    })
    .await;
    assert!(listed, "{}", call(Method::GET, LIST, vec![Role::Admin]).await.1);
    let (_, page) = call(Method::GET, LIST, vec![Role::User, Role::Admin]).await;
    let of = |id: &str| page["items"].as_array().unwrap().iter().find(|i| i["event_id"] == id).unwrap().clone();
    let (gave_up, rejected) = (of(&blocked_id), of(&unusable_id));
    assert_eq!(gave_up["consumer"], "team-user_created");
    assert!(gave_up["reason"].as_str().unwrap().starts_with("gave up after 2 deliveries"), "{gave_up}");
    assert!(rejected["reason"].as_str().unwrap().contains("not a UUID"), "{rejected}");
    assert_eq!(people_named(&db, "blocked@example.com").await, 0);

    // Only admins.
    let (status, body) = call(Method::POST, &format!("{LIST}/replay"), vec![Role::User, Role::Owner]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    assert_eq!(people_named(&db, "blocked@example.com").await, 0);

    // The fix, then every waiting one: the blocked person is recorded, the unusable event fails
    // again with its reason.
    diesel::sql_query("ALTER TABLE people DROP CONSTRAINT not_yet").execute(&mut conn).await.unwrap();
    let (status, summary) = call(Method::POST, &format!("{LIST}/replay"), vec![Role::Admin]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["applied"], 1, "{summary}");
    assert_eq!(summary["failed"], json!([rejected["id"]]));
    assert_eq!(people_named(&db, "blocked@example.com").await, 1);
    let one = format!("{LIST}/{}/replay", gave_up["id"].as_str().unwrap());
    let (_, again) = call(Method::POST, &one, vec![Role::Admin]).await;
    assert_eq!(again["outcome"], "already_applied");
    assert_eq!(people_named(&db, "blocked@example.com").await, 1);
    let (_, shown) = call(Method::GET, &format!("{LIST}/{}", gave_up["id"].as_str().unwrap()), vec![Role::Admin]).await;
    assert_eq!((shown["replay_outcome"].as_str(), shown["replayed_at"].is_string()), (Some("applied"), true));
    stop.cancel();
}
