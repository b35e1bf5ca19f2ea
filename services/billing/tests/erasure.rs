//! `UserErasedV1`: billing erases the account's email and name and the Stripe customer's (with
//! empty values, as Stripe unsets them), and the sent mail to the person; invoices stay; a
//! Stripe that cannot be reached erases nothing (the event is retried); a redelivery changes
//! nothing more.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_billing::erasure::UserErased;
use hopsbridge_billing::stripe::{Params, Stripe, params};
use hopsbridge_contracts::events::UserErasedV1;
use hopsbridge_domain::{EventId, UserId};
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent};
use hopsbridge_sandbox::stripe::{StripeConfig, StripeSim};
use hopsbridge_testkit::{STRIPE_SECRET_KEY, TestDb};
use serde_json::Value;

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

fn erased(user: UserId) -> ReceivedEvent<UserErasedV1> {
    ReceivedEvent {
        id: EventId::new(),
        causation: None,
        occurred_at: chrono::Utc::now(),
        delivered: 1,
        payload: UserErasedV1 { user_id: user.to_string(), deleted_at_unix_seconds: 0, erased_at_unix_seconds: 0 },
    }
}

async fn customer(stripe: &Stripe, email: &str, name: &str) -> String {
    let made: Value = stripe.post("customers", &params([("email", email), ("name", name)]), None).await.unwrap();
    made["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_account_and_the_stripe_customer_are_erased_once() {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    let sim = StripeSim::start(StripeConfig { secret_key: STRIPE_SECRET_KEY.to_owned(), rate_limit: None }).unwrap();
    let stripe = Stripe::new(&sim.url(), STRIPE_SECRET_KEY.to_owned().into(), 100).unwrap();
    let mut conn = db.connect("billing").await;
    let (person, other) = (UserId::new(), UserId::new());
    let theirs = customer(&stripe, "gone@example.com", "Gone Person").await;
    let others = customer(&stripe, "other@example.com", "Other").await;
    exec(
        &mut conn,
        &format!(
            "INSERT INTO accounts (user_id, email, name, stripe_customer_id) VALUES
               ('{person}', 'gone@example.com', 'Gone Person', '{theirs}'),
               ('{other}', 'other@example.com', 'Other', '{others}')"
        ),
    )
    .await;
    exec(
        &mut conn,
        "INSERT INTO mail_outbox (id, dedup_key, kind, channel, recipient, subject, text_body, html_body, sent_at) VALUES
           (gen_random_uuid(), 'a', 'test', 'email', 'gone@example.com', 'Hi', 'Hi', '<p>Hi</p>', now()),
           (gen_random_uuid(), 'b', 'test', 'email', 'other@example.com', 'Hi', 'Hi', '<p>Hi</p>', now())",
    )
    .await;

    // Stripe out of reach: retried later, nothing erased meanwhile.
    let unreachable = Stripe::new("http://127.0.0.1:9", STRIPE_SECRET_KEY.to_owned().into(), 100).unwrap();
    let failed = UserErased::new(unreachable).handle(&mut conn, &erased(person)).await;
    assert!(matches!(failed, Err(HandlerError::Retry(_))), "{failed:?}");
    let account = |id: UserId| format!("SELECT email || '/' || name AS v FROM accounts WHERE user_id = '{id}'");
    assert_eq!(text(&mut conn, &account(person)).await, "gone@example.com/Gone Person");

    let handler = UserErased::new(stripe.clone());
    for _ in 0..2 {
        handler.handle(&mut conn, &erased(person)).await.unwrap();
        assert_eq!(text(&mut conn, &account(person)).await, "/");
        assert_eq!(text(&mut conn, &account(other)).await, "other@example.com/Other");
        let at_stripe: Value = stripe.get(&format!("customers/{theirs}"), &Params::new()).await.unwrap();
        assert_eq!((&at_stripe["email"], &at_stripe["name"]), (&Value::Null, &Value::Null), "{at_stripe}");
        let kept: Value = stripe.get(&format!("customers/{others}"), &Params::new()).await.unwrap();
        assert_eq!(kept["email"], "other@example.com");
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

#[tokio::test]
async fn a_customer_stripe_no_longer_has_leaves_only_ours_to_erase() {
    hopsbridge_testkit::init();
    let db = TestDb::new().await;
    let sim = StripeSim::start(StripeConfig { secret_key: STRIPE_SECRET_KEY.to_owned(), rate_limit: None }).unwrap();
    let stripe = Stripe::new(&sim.url(), STRIPE_SECRET_KEY.to_owned().into(), 100).unwrap();
    let mut conn = db.connect("billing").await;
    let person = UserId::new();
    exec(
        &mut conn,
        &format!("INSERT INTO accounts (user_id, email, name, stripe_customer_id) VALUES ('{person}', 'gone@example.com', 'G', 'cus_missing')"),
    )
    .await;
    UserErased::new(stripe).handle(&mut conn, &erased(person)).await.unwrap();
    assert_eq!(
        text(&mut conn, &format!("SELECT email || name AS v FROM accounts WHERE user_id = '{person}'")).await,
        ""
    );
}
