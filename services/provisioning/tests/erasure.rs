//! `UserErasedV1`: provisioning erases the person's email, name and Auth0 subject and the
//! Hopsworks email of their places in projects, and the sent mail to them, keeping the
//! Hopsworks username that keeps their account deactivated; a redelivery changes nothing more.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::UserErasedV1;
use hopsbridge_domain::{EventId, UserId};
use hopsbridge_platform::events::{Handler, ReceivedEvent};
use hopsbridge_provisioning::erasure::UserErased;
use hopsbridge_testkit::TestDb;

#[derive(diesel::QueryableByName)]
struct One {
    #[diesel(sql_type = Text)]
    v: String,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn text(conn: &mut AsyncPgConnection, sql: &str) -> String {
    diesel::sql_query(sql).get_result::<One>(conn).await.unwrap().v
}

async fn exec(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

#[tokio::test]
async fn the_persons_copies_are_erased_once() {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    let mut conn = db.connect("provisioning").await;
    let (person, other, cluster) = (UserId::new(), UserId::new(), uuid::Uuid::now_v7());
    exec(
        &mut conn,
        &format!(
            "INSERT INTO users (user_id, auth_subject, email, name, status) VALUES
               ('{person}', 'auth0|gone', 'gone@example.com', 'Gone Person', 'deleted'),
               ('{other}', 'auth0|other', 'other@example.com', 'Other', 'active')"
        ),
    )
    .await;
    exec(
        &mut conn,
        &format!(
            "INSERT INTO clusters (id, name, api_url, api_key_ciphertext, api_key_key_id, kubeconfig_ciphertext,
                                   kubeconfig_key_id, ca_bundle, oauth_client_id, capacity, region, status)
             VALUES ('{cluster}', 'c1', 'https://c1.test', '\\x00', 'k', '\\x00', 'k', '', '', 10, 'eu', 'active')"
        ),
    )
    .await;
    for (member, username, email) in
        [(person, "gon10000", "gone@example.com"), (other, "oth10000", "other@example.com")]
    {
        exec(
            &mut conn,
            &format!(
                "INSERT INTO project_members (membership_id, cluster_id, project_id, member_id, project_name,
                                              hopsworks_username, hopsworks_email, project_role, state)
                 VALUES ('{}', '{cluster}', 7, '{member}', 'demo', '{username}', '{email}', 'Data scientist', 'removed')",
                uuid::Uuid::now_v7()
            ),
        )
        .await;
    }
    exec(
        &mut conn,
        "INSERT INTO mail_outbox (id, dedup_key, kind, channel, recipient, subject, text_body, html_body, sent_at) VALUES
           (gen_random_uuid(), 'a', 'test', 'email', 'gone@example.com', 'Hi', 'Hi', '<p>Hi</p>', now()),
           (gen_random_uuid(), 'b', 'test', 'email', 'other@example.com', 'Hi', 'Hi', '<p>Hi</p>', now())",
    )
    .await;

    for delivery in 1..=2 {
        let event = ReceivedEvent {
            id: EventId::new(),
            causation: None,
            occurred_at: chrono::Utc::now(),
            delivered: delivery,
            payload: UserErasedV1 {
                user_id: person.to_string(),
                deleted_at_unix_seconds: 0,
                erased_at_unix_seconds: 0,
            },
        };
        UserErased.handle(&mut conn, &event).await.unwrap();
        let user = |id: UserId| {
            format!(
                "SELECT auth_subject || '/' || email || '/' || name || '/' || status AS v FROM users WHERE user_id = '{id}'"
            )
        };
        assert_eq!(text(&mut conn, &user(person)).await, format!("erased|{person}///deleted"));
        assert_eq!(text(&mut conn, &user(other)).await, "auth0|other/other@example.com/Other/active");
        let place = |id: UserId| {
            format!(
                "SELECT hopsworks_username || '/' || hopsworks_email AS v FROM project_members WHERE member_id = '{id}'"
            )
        };
        assert_eq!(text(&mut conn, &place(person)).await, "gon10000/", "the username stays, the email goes");
        assert_eq!(text(&mut conn, &place(other)).await, "oth10000/other@example.com");
        let mails = diesel::sql_query("SELECT count(*) AS n FROM mail_outbox WHERE recipient = 'gone@example.com'")
            .get_result::<Count>(&mut conn)
            .await
            .unwrap();
        assert_eq!(mails.n, 0);
        assert_eq!(
            text(&mut conn, "SELECT string_agg(recipient, ',') AS v FROM mail_outbox").await,
            "other@example.com"
        );
    }
}
