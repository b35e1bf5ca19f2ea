//! `UserErasedV1`: team erases the person's address, name and Hopsworks username, the
//! invitations that carry their address (except another owner's pending offer to it) and the
//! sent mail to or about them; a redelivery changes nothing more.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::UserErasedV1;
use hopsbridge_domain::{EventId, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::events::{Handler, ReceivedEvent};
use hopsbridge_team::erasure::UserErased;
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

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).await.unwrap().n
}

async fn exec(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

async fn invitation(
    conn: &mut AsyncPgConnection,
    owner: UserId,
    email: &str,
    status: &str,
    accepted_by: Option<UserId>,
) -> String {
    let id = uuid::Uuid::now_v7();
    let closed = if status == "pending" { "NULL" } else { "now()" };
    let accepted = accepted_by.map_or_else(|| "NULL".to_owned(), |a| format!("'{a}'"));
    exec(
        conn,
        &format!(
            "INSERT INTO invitations (id, owner_user_id, email, project_role, token_hash, status, expires_at, closed_at, accepted_by)
             VALUES ('{id}', '{owner}', '{email}', 'Data scientist', sha256('{id}'::bytea), '{status}',
                     now() + interval '7 days', {closed}, {accepted})"
        ),
    )
    .await;
    id.to_string()
}

async fn mail(conn: &mut AsyncPgConnection, to: &str, body: &str, sent: bool) -> String {
    let id = uuid::Uuid::now_v7();
    let sent_at = if sent { "now()" } else { "NULL" };
    exec(
        conn,
        &format!(
            "INSERT INTO mail_outbox (id, dedup_key, kind, channel, recipient, subject, text_body, html_body, sent_at)
             VALUES ('{id}', 'test:{id}', 'team.test', 'email', '{to}', 'A mail', '{body}', '<p>{body}</p>', {sent_at})"
        ),
    )
    .await;
    id.to_string()
}

fn erased(user: UserId) -> ReceivedEvent<UserErasedV1> {
    ReceivedEvent {
        id: EventId::new(),
        causation: None,
        occurred_at: chrono::Utc::now(),
        delivered: 1,
        payload: UserErasedV1 { user_id: user.to_string(), deleted_at_unix_seconds: 0, erased_at_unix_seconds: 0 },
    }
}

#[tokio::test]
async fn the_persons_copies_are_erased_once() {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    let mut conn = db.connect("team").await;
    let (person, other, owner, another_owner) = (UserId::new(), UserId::new(), UserId::new(), UserId::new());
    exec(&mut conn, &format!("INSERT INTO people (id, email, name, status) VALUES ('{person}', 'gone@example.com', 'Gone Person', 'deleted')")).await;
    exec(&mut conn, &format!("INSERT INTO people (id, email, name) VALUES ('{other}', 'other@example.com', 'Other')"))
        .await;
    // The invitation the person accepted, one they sent (their account's, still pending), a
    // closed one to their address, another owner's pending offer to it, and someone else's.
    let accepted = invitation(&mut conn, owner, "gone@example.com", "accepted", Some(person)).await;
    let sent = invitation(&mut conn, person, "friend@example.com", "pending", None).await;
    let replaced = invitation(&mut conn, another_owner, "gone@example.com", "replaced", None).await;
    let offer = invitation(&mut conn, another_owner, "gone@example.com", "pending", None).await;
    let unrelated = invitation(&mut conn, owner, "other@example.com", "pending", None).await;
    exec(
        &mut conn,
        &format!(
            "INSERT INTO accounts (user_id, cluster_id, hopsworks_username, assigned, changed_at)
             VALUES ('{person}', '{}', 'gon10000', false, now()), ('{other}', '{}', 'oth10000', true, now())",
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7()
        ),
    )
    .await;
    let to_them = mail(&mut conn, "gone@example.com", "Welcome", true).await;
    let about_them = mail(&mut conn, "ops@hopsbridge.test", "gone@example.com joined", true).await;
    let unsent = mail(&mut conn, "gone@example.com", "Still to send", false).await;
    let to_other = mail(&mut conn, "other@example.com", "Welcome", true).await;

    let handler = UserErased { clock: Clock::system() };
    for delivery in 1..=2 {
        let mut event = erased(person);
        event.delivered = delivery;
        handler.handle(&mut conn, &event).await.unwrap();

        let who = |id: &str| format!("SELECT email AS v FROM invitations WHERE id = '{id}'");
        assert_eq!(text(&mut conn, &who(&accepted)).await, format!("erased+{accepted}@erased.invalid"));
        assert_eq!(text(&mut conn, &who(&sent)).await, format!("erased+{sent}@erased.invalid"));
        assert_eq!(text(&mut conn, &who(&replaced)).await, format!("erased+{replaced}@erased.invalid"));
        assert_eq!(text(&mut conn, &who(&offer)).await, "gone@example.com", "another owner's pending offer stays");
        assert_eq!(text(&mut conn, &who(&unrelated)).await, "other@example.com");
        let status = |id: &str| format!("SELECT status AS v FROM invitations WHERE id = '{id}'");
        assert_eq!(text(&mut conn, &status(&sent)).await, "cancelled", "the person's own pending invitation is closed");
        assert_eq!(text(&mut conn, &status(&accepted)).await, "accepted");

        let people = format!("SELECT coalesce(email, '<null>') || '/' || name AS v FROM people WHERE id = '{person}'");
        assert_eq!(text(&mut conn, &people).await, "<null>/");
        let others = format!("SELECT email || '/' || name AS v FROM people WHERE id = '{other}'");
        assert_eq!(text(&mut conn, &others).await, "other@example.com/Other");
        let names = "SELECT string_agg(hopsworks_username, ',' ORDER BY hopsworks_username) AS v FROM accounts";
        assert_eq!(text(&mut conn, names).await, ",oth10000");

        let kept = |id: &str| format!("SELECT count(*) AS n FROM mail_outbox WHERE id = '{id}'");
        assert_eq!(count(&mut conn, &kept(&to_them)).await, 0, "sent mail to them is gone");
        assert_eq!(count(&mut conn, &kept(&about_them)).await, 0, "sent mail naming them is gone");
        assert_eq!(count(&mut conn, &kept(&unsent)).await, 1, "mail not sent yet stays for the relay");
        assert_eq!(count(&mut conn, &kept(&to_other)).await, 1);
    }
}
