//! Mail from the outbox, against the real Postgres and the sandbox's SMTP server: a mail is
//! written with the change that caused it, sent once per deduplication key, retried while SMTP
//! is down and listed as failing meanwhile, and admin alerts reach every admin and the webhook.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use actix_web::{App, test, web};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::Email;
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_platform::db::{Database, DbError};
use hopsbridge_platform::mail::{Alert, MailConfig, MailRelay, MailStatus, Rendered, enqueue, enqueue_alert, list};
use hopsbridge_sandbox::mail::MailSim;
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestDb, eventually};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SCHEMA: &str = "team";

fn config(sim: &MailSim) -> MailConfig {
    MailConfig {
        smtp_url: sim.smtp_url().into(),
        from: "Hopsbridge <no-reply@hopsbridge.test>".to_owned(),
        public_base_url: "https://app.hopsbridge.test".to_owned(),
        admin_addresses: "ops@hopsbridge.test, Oncall@Hopsbridge.test".to_owned(),
        admin_webhook_url: sim.webhook_url().into(),
        batch_size: 20,
        poll_interval_ms: 100,
        timeout_secs: 5,
        backoff_initial_secs: 1,
        backoff_max_secs: 1,
        failing_after_attempts: 2,
        retention_days: 30,
    }
}

fn mail(subject: &str) -> Rendered {
    Rendered {
        kind: "test.hello",
        subject: subject.to_owned(),
        text: "Hello Ada,\nyour team is ready.\n".to_owned(),
        html: "<p>Hello Ada, your team is <b>ready</b>.</p>".to_owned(),
    }
}

struct Setup {
    db: TestDb,
    pool: Database,
    sim: MailSim,
    cfg: MailConfig,
    stop: CancellationToken,
}

impl Setup {
    async fn new() -> Self {
        hopsbridge_testkit::init();
        let db = TestDb::new().await;
        let pool = Database::new(&db.config(), SCHEMA).unwrap();
        let sim = MailSim::start().unwrap();
        let cfg = config(&sim);
        Self { db, pool, sim, cfg, stop: CancellationToken::new() }
    }

    fn relay(&self) -> MailRelay {
        MailRelay::new(self.pool.clone(), self.db.config(), self.cfg.clone()).unwrap()
    }

    fn start_relay(&self) {
        tokio::spawn(self.relay().run(self.stop.clone()));
    }

    async fn conn(&self) -> AsyncPgConnection {
        self.db.connect(SCHEMA).await
    }

    async fn rows(&self) -> i64 {
        let mut conn = self.conn().await;
        diesel::sql_query("SELECT 1 FROM mail_outbox").execute(&mut conn).await.unwrap() as i64
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn ada() -> Email {
    Email::parse("ada@example.com").unwrap()
}

#[tokio::test]
async fn a_mail_written_with_its_change_is_sent_once_with_both_parts() {
    let s = Setup::new().await;
    let mut conn = s.conn().await;
    let added = s
        .pool
        .transaction::<_, DbError, _>(|c| {
            Box::pin(async move {
                let first = enqueue(c, "test:ada:1", &ada(), &mail("Welcome")).await?;
                let again = enqueue(c, "test:ada:1", &ada(), &mail("Welcome, again")).await?;
                Ok((first, again))
            })
        })
        .await
        .unwrap();
    assert_eq!(added, (true, false), "the second enqueue with the same key adds nothing");
    s.start_relay();
    assert!(eventually(Duration::from_secs(10), || async { s.sim.messages().len() == 1 }).await);

    let messages = s.sim.messages_to("ada@example.com");
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.subject, "Welcome");
    assert_eq!(m.from.address, "no-reply@hopsbridge.test");
    assert!(m.text.contains("your team is ready."), "{}", m.text);
    assert!(m.html.contains("<b>ready</b>"), "{}", m.html);
    // The relay marks the row sent once the server has taken the message, a moment after.
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = list(&mut conn, Some(MailStatus::Sent), 2, 50, 0).await.unwrap().0;
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows.len(), 1, "the mail is marked sent");
    assert_eq!(m.message_id, format!("{}@hopsbridge.test", rows[0].id), "the Message-ID is the row's id");

    // Nothing more goes out: a replayed enqueue after sending adds nothing either.
    assert!(!enqueue(&mut conn, "test:ada:1", &ada(), &mail("Welcome")).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.sim.received().len(), 1);
}

#[tokio::test]
async fn a_rolled_back_change_sends_nothing() {
    let s = Setup::new().await;
    let result = s
        .pool
        .transaction::<(), DbError, _>(|c| {
            Box::pin(async move {
                enqueue(c, "test:rolled-back", &ada(), &mail("Never")).await?;
                // Whatever made the change fail: the mail goes with it.
                Err(DbError::NotFound)
            })
        })
        .await;
    assert!(result.is_err());
    assert_eq!(s.rows().await, 0);
    let pass = s.relay().send_due().await.unwrap();
    assert_eq!((pass.sent, pass.failed), (0, 0));
    assert!(s.sim.received().is_empty());
}

#[tokio::test]
async fn mail_waits_while_smtp_is_down_is_listed_as_failing_and_goes_once_it_is_back() {
    let s = Setup::new().await;
    s.sim.set_smtp_down(true);
    let mut conn = s.conn().await;
    enqueue(&mut conn, "test:down", &ada(), &mail("Patience")).await.unwrap();
    let relay = s.relay();

    // Two failed passes (the policy's delays are 1-2 s) make it failing; it stays queued.
    assert_eq!(relay.send_due().await.unwrap().failed, 1);
    let (pending, _) = list(&mut conn, Some(MailStatus::Pending), 2, 50, 0).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].last_error.as_deref().is_some_and(|e| e.contains("421")), "{:?}", pending[0].last_error);
    assert!(pending[0].next_attempt_at > chrono::Utc::now(), "the retry waits for the backoff");
    assert_eq!(relay.send_due().await.unwrap().failed, 0, "not due again before its delay");
    assert!(
        eventually(Duration::from_secs(5), || async { relay.send_due().await.unwrap().failed == 1 }).await,
        "retried after its delay"
    );
    let (failing, _) = list(&mut conn, Some(MailStatus::Failing), 2, 50, 0).await.unwrap();
    assert_eq!(failing.len(), 1, "two failures make it failing");
    assert_eq!(failing[0].attempts, 2);
    assert!(s.sim.received().is_empty());

    s.sim.set_smtp_down(false);
    s.start_relay();
    assert!(eventually(Duration::from_secs(10), || async { s.sim.received().len() == 1 }).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.sim.received().len(), 1, "sent exactly once");
    let (sent, _) = list(&mut conn, Some(MailStatus::Sent), 2, 50, 0).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].last_error, None);
}

#[tokio::test]
async fn an_alert_reaches_every_admin_and_the_webhook_once() {
    let s = Setup::new().await;
    let alert = Alert {
        title: "Usage drift <3 owner-days>".to_owned(),
        lines: vec!["ada & grace: 2026-12-01".to_owned()],
        link: Some("https://app.hopsbridge.test/admin/integrity".to_owned()),
    };
    let mut conn = s.conn().await;
    assert_eq!(enqueue_alert(&mut conn, &s.cfg, "drift:2026-12-01", &alert).await.unwrap(), 3);
    assert_eq!(enqueue_alert(&mut conn, &s.cfg, "drift:2026-12-01", &alert).await.unwrap(), 0, "replayed");
    s.start_relay();
    assert!(
        eventually(Duration::from_secs(10), || async { s.sim.received().len() == 2 && s.sim.webhooks().len() == 1 })
            .await
    );
    let to: Vec<String> = s.sim.messages().iter().flat_map(|m| m.to.iter().map(|a| a.address.clone())).collect();
    assert!(
        to.contains(&"ops@hopsbridge.test".to_owned()) && to.contains(&"oncall@hopsbridge.test".to_owned()),
        "{to:?}"
    );
    let post = &s.sim.webhooks()[0];
    let text = post.body["text"].as_str().unwrap();
    assert!(text.contains("Usage drift &lt;3 owner-days&gt;"), "Slack's control characters are escaped: {text}");
    assert!(text.contains("ada &amp; grace"), "{text}");
    let html = &s.sim.messages()[0].html;
    assert!(html.contains("Usage drift &#60;3 owner-days&#62;"), "{html}");
}

#[tokio::test]
async fn admins_list_failing_mail_and_retry_it_and_nobody_else_may() {
    let s = Setup::new().await;
    s.sim.set_smtp_down(true);
    let mut conn = s.conn().await;
    enqueue(&mut conn, "test:admin-view", &ada(), &mail("Stuck")).await.unwrap();
    let relay = s.relay();
    assert_eq!(relay.send_due().await.unwrap().failed, 1);

    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let cfg = s.cfg.clone();
    let pool = s.pool.clone();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(hopsbridge_testkit::caller_verifier()))
            .wrap(actix_web::middleware::from_fn(hopsbridge_platform::http::hash_body))
            .configure(move |c| hopsbridge_platform::mail::configure_routes(c, "team", pool.clone(), &cfg)),
    )
    .await;
    let signed = |method: &str, path: &str, roles: Vec<Role>| {
        let caller = Caller {
            subject: "auth0|admin".to_owned(),
            issuer: Some("https://tenant.hopsbridge.test/".into()),
            user_id: Some(hopsbridge_domain::UserId::new()),
            roles,
            email: Email::parse("admin@hopsbridge.test").ok(),
        };
        let mut req = if method == "GET" { test::TestRequest::get() } else { test::TestRequest::post() }.uri(path);
        for (name, value) in key.sign(method, path, &caller, chrono::Utc::now().timestamp()) {
            req = req.insert_header((name, value));
        }
        req.to_request()
    };

    let res = test::call_service(&app, signed("GET", "/api/admin/mail/team?status=pending", vec![Role::User])).await;
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["code"], "admin_only");

    let res =
        test::call_service(&app, signed("GET", "/api/admin/mail/team?status=pending", vec![Role::User, Role::Admin]))
            .await;
    assert_eq!(res.status(), 200);
    let page: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["status"], "pending");
    assert_eq!(page["items"][0]["attempts"], 1);
    assert!(page["items"][0].get("text_body").is_none(), "bodies are not listed");
    let id = page["items"][0]["id"].as_str().unwrap().to_owned();

    let res = test::call_service(&app, signed("GET", "/api/admin/mail/team?limit=0", vec![Role::Admin])).await;
    assert_eq!(res.status(), 400);

    let retry = format!("/api/admin/mail/team/{id}/retry");
    let res = test::call_service(&app, signed("POST", &retry, vec![Role::User])).await;
    assert_eq!(res.status(), 403);
    s.sim.set_smtp_down(false);
    let res = test::call_service(&app, signed("POST", &retry, vec![Role::Admin])).await;
    assert_eq!(res.status(), 202, "due now, not after its backoff");
    assert_eq!(relay.send_due().await.unwrap().sent, 1);
    let res = test::call_service(&app, signed("POST", &retry, vec![Role::Admin])).await;
    assert_eq!(res.status(), 409);
    let missing = format!("/api/admin/mail/team/{}/retry", uuid::Uuid::now_v7());
    let res = test::call_service(&app, signed("POST", &missing, vec![Role::Admin])).await;
    assert_eq!(res.status(), 404);
    assert_eq!(s.sim.received().len(), 1);
}
