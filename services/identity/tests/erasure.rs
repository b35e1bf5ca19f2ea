//! A deleted account's personal data is erased once its retention period has passed, on the
//! calendar clock (a simulated one, moved by the test), exactly once with several replicas,
//! and the running service does it on its own schedule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use chrono::{DateTime, TimeDelta, Utc};
use diesel::sql_types::{BigInt, Bytea, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_domain::{AuthSubject, Email, UserId};
use hopsbridge_identity::erasure::{Eraser, erased_email, erased_subject};
use hopsbridge_identity::users::{self, NewPerson};
use hopsbridge_identity::{DEFAULTS, IdentityConfig};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::config::Validate;
use hopsbridge_platform::db::Database;
use hopsbridge_sandbox::clock::{ClockServer, SimClock};
use hopsbridge_testkit::{TestBus, TestDb, TestSettings, WEBHOOK_SECRET};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const ISSUER: &str = "https://tenant.hopsbridge.test/";
/// 2026-12-01T00:00:00Z.
const START: i64 = 1_796_083_200;
const DAY: i64 = 86_400;
const RETENTION_DAYS: i64 = 30;

struct World {
    db: TestDb,
    clock: Arc<SimClock>,
    server: ClockServer,
}

async fn world() -> World {
    hopsbridge_testkit::init();
    let clock = Arc::new(SimClock::new(START));
    let server = ClockServer::start(Arc::clone(&clock)).unwrap();
    World { db: TestDb::new().await, clock, server }
}

impl World {
    /// An eraser as one replica of identity holds it: its own pool, following the calendar.
    async fn replica(&self) -> Eraser {
        Eraser {
            db: Database::new(&self.db.config(), "identity").unwrap(),
            clock: Clock::follow(&self.server.url(), Duration::from_millis(20)).await.unwrap(),
            retention: TimeDelta::days(RETENTION_DAYS),
            every: Duration::from_secs(3600),
        }
    }

    /// Moves the calendar to `at` and waits until `eraser`'s clock has followed.
    async fn at(&self, at: i64, eraser: &Eraser) {
        self.clock.set(at);
        let followed =
            hopsbridge_testkit::eventually(Duration::from_secs(10), || async { eraser.clock.now().timestamp() >= at })
                .await;
        assert!(followed, "the eraser follows the calendar");
    }

    async fn person(&self, n: &str) -> UserId {
        let mut conn = self.db.connect("identity").await;
        let person = NewPerson {
            issuer: ISSUER.into(),
            subject: AuthSubject::parse(&format!("auth0|{n}")).unwrap(),
            email: Email::parse(&format!("{n}@example.com")).unwrap(),
            name: format!("Person {n}"),
        };
        let (user, created) = users::create_if_absent(&mut conn, &person, at(START)).await.unwrap();
        assert!(created);
        user.id
    }

    async fn delete(&self, id: UserId, when: i64) {
        let mut conn = self.db.connect("identity").await;
        users::delete_account(&mut conn, id, at(when)).await.unwrap();
    }

    async fn row(&self, id: UserId) -> Row {
        let mut conn = self.db.connect("identity").await;
        diesel::sql_query("SELECT email, name, auth_subject, status, deleted_at, erased_at FROM users WHERE id = $1")
            .bind::<SqlUuid, _>(id)
            .get_result(&mut conn)
            .await
            .unwrap()
    }

    /// The `UserErased` envelopes in the outbox.
    async fn erased_events(&self) -> Vec<Vec<u8>> {
        #[derive(diesel::QueryableByName)]
        struct Envelope {
            #[diesel(sql_type = Bytea)]
            envelope: Vec<u8>,
        }
        let mut conn = self.db.connect("identity").await;
        diesel::sql_query("SELECT envelope FROM outbox WHERE event_type = 'UserErased'")
            .get_results::<Envelope>(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.envelope)
            .collect()
    }
}

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap()
}

#[derive(diesel::QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    auth_subject: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deleted_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    erased_at: Option<DateTime<Utc>>,
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_deleted_account_is_erased_when_its_retention_ends_and_not_before() {
    let w = world().await;
    let eraser = w.replica().await;
    let gone = w.person("gone").await;
    let later = w.person("later").await;
    let kept = w.person("kept").await;
    w.delete(gone, START).await;
    w.delete(later, START + 10 * DAY).await;
    let deleted = w.row(gone).await;
    assert_eq!((deleted.status.as_str(), deleted.deleted_at), ("deleted", Some(at(START))));

    // One second before the retention ends nothing is erased.
    w.at(START + RETENTION_DAYS * DAY - 1, &eraser).await;
    assert_eq!(eraser.pass().await.unwrap(), 0);
    assert_eq!(w.row(gone).await.email, "gone@example.com");
    assert!(w.erased_events().await.is_empty());

    w.at(START + RETENTION_DAYS * DAY, &eraser).await;
    assert_eq!(eraser.pass().await.unwrap(), 1);
    let erased = w.row(gone).await;
    assert_eq!(erased.email, erased_email(gone));
    assert_eq!(erased.name, "");
    assert_eq!(erased.auth_subject, erased_subject(gone));
    assert_eq!(erased.status, "deleted");
    assert_eq!(erased.deleted_at, Some(at(START)), "the deletion's time stays");
    let erased_at = erased.erased_at.expect("erased_at set");
    assert!(erased_at >= at(START + RETENTION_DAYS * DAY));
    // The erased account still reads as a user (the admins' list reads every row).
    let mut conn = w.db.connect("identity").await;
    let user = users::get(&mut conn, gone).await.unwrap();
    assert_eq!(user.email.as_str(), erased_email(gone));

    let events = w.erased_events().await;
    assert_eq!(events.len(), 1, "one UserErased");
    assert!(contains(&events[0], &gone.to_string()), "the event names the user id");
    assert!(!contains(&events[0], "gone@example.com"), "the event carries no email");

    // The others: one deleted later waits for its own retention, an active one is untouched.
    assert_eq!(w.row(later).await.email, "later@example.com");
    let active = w.row(kept).await;
    assert_eq!((active.email.as_str(), active.erased_at), ("kept@example.com", None));

    // A second pass erases nothing more and announces nothing more.
    assert_eq!(eraser.pass().await.unwrap(), 0);
    assert_eq!(w.erased_events().await.len(), 1);

    w.at(START + (10 + RETENTION_DAYS) * DAY, &eraser).await;
    assert_eq!(eraser.pass().await.unwrap(), 1);
    assert_eq!(w.row(later).await.email, erased_email(later));
    assert_eq!(w.row(kept).await.email, "kept@example.com");
    assert_eq!(w.erased_events().await.len(), 2);
}

#[tokio::test]
async fn the_same_auth0_subject_is_refused_during_the_retention_and_starts_afresh_after_it() {
    let w = world().await;
    let eraser = w.replica().await;
    let old = w.person("again").await;
    w.delete(old, START).await;
    let person = NewPerson {
        issuer: ISSUER.into(),
        subject: AuthSubject::parse("auth0|again").unwrap(),
        email: Email::parse("again@example.com").unwrap(),
        name: "Again".into(),
    };
    let mut conn = w.db.connect("identity").await;
    // During the retention the subject still finds the deleted account (which every route
    // refuses with account_deleted).
    let (found, created) = users::create_if_absent(&mut conn, &person, at(START + DAY)).await.unwrap();
    assert_eq!((found.id, created), (old, false));

    w.at(START + RETENTION_DAYS * DAY, &eraser).await;
    assert_eq!(eraser.pass().await.unwrap(), 1);
    let (fresh, created) = users::create_if_absent(&mut conn, &person, at(START + RETENTION_DAYS * DAY)).await.unwrap();
    assert!(created, "a new account");
    assert_ne!(fresh.id, old);
    assert_eq!(fresh.email.as_str(), "again@example.com");
    assert_eq!(w.row(old).await.email, erased_email(old), "nothing of the new account lands in the old one");
}

#[tokio::test]
async fn two_replicas_erase_each_person_once() {
    let w = world().await;
    let (a, b) = (w.replica().await, w.replica().await);
    let mut people = Vec::new();
    for i in 0..30 {
        let id = w.person(&format!("p{i}")).await;
        w.delete(id, START).await;
        people.push(id);
    }
    w.at(START + RETENTION_DAYS * DAY, &a).await;
    w.at(START + RETENTION_DAYS * DAY, &b).await;
    let (one, two) = tokio::join!(a.pass(), b.pass());
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one + two, 30, "each erased by one replica ({one} and {two})");
    assert_eq!(w.erased_events().await.len(), 30, "one UserErased each");
    for id in &people {
        assert_eq!(w.row(*id).await.email, erased_email(*id));
    }
    let (one, two) = tokio::join!(a.pass(), b.pass());
    assert_eq!((one.unwrap(), two.unwrap()), (0, 0));
    assert_eq!(w.erased_events().await.len(), 30);
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn the_running_service_erases_on_its_schedule() {
    let w = world().await;
    let bus = TestBus::new().await;
    let settings = TestSettings::data_service(Service::Identity, &w.db, &bus)
        .set("webhook.secret", WEBHOOK_SECRET)
        .set("auth0.issuer", ISSUER)
        .set("deletion.erase_interval_secs", "1")
        .clock(&w.server.url());
    let config: IdentityConfig = TestSettings::load(&settings, &DEFAULTS);
    let app = hopsbridge_identity::build(config).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let id = w.person("scheduled").await;
    w.delete(id, START).await;
    w.clock.set(START + RETENTION_DAYS * DAY + 60);
    let erased =
        hopsbridge_testkit::eventually(Duration::from_secs(15), || async { w.row(id).await.erased_at.is_some() }).await;
    stop.cancel();
    assert!(erased, "the service's eraser erased the account");
    let mut conn = w.db.connect("identity").await;
    let n: Count = diesel::sql_query("SELECT count(*) AS n FROM outbox WHERE event_type = 'UserErased'")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(n.n, 1);
}

#[test]
fn the_retention_is_validated() {
    let db_free = TestSettings::new(Service::Identity)
        .set("database.url", "postgres://127.0.0.1/none")
        .set("webhook.secret", WEBHOOK_SECRET);
    let config: IdentityConfig = TestSettings::load(&db_free, &DEFAULTS);
    assert_eq!(config.deletion.retention_days, 30, "30 days unless configured");
    for (days, why) in [(0, "zero"), (3651, "over ten years"), (7, "shorter than the outbox keeps published events")] {
        let mut bad = config.clone();
        bad.deletion.retention_days = days;
        let err = bad.validate(Service::Identity).expect_err(why);
        assert_eq!(err.key, "deletion.retention_days", "{why}: {err}");
    }
    let mut bad = config;
    bad.deletion.erase_interval_secs = 0;
    assert_eq!(bad.validate(Service::Identity).unwrap_err().key, "deletion.erase_interval_secs");
}
