//! identity on the real Postgres and NATS, called as the gateway calls it (signed caller
//! headers) and as the Auth0 Action calls it (the webhook's shared secret).

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use hopsbridge_contracts::Service;
use hopsbridge_identity::IdentityConfig;
use hopsbridge_platform::caller::{Caller, CallerKey, Role};
use hopsbridge_sandbox::auth0::{Auth0Sim, PostRegistrationAction};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings, WEBHOOK_SECRET};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct Identity {
    pub base: String,
    pub db: TestDb,
    pub bus: TestBus,
    pub key: CallerKey,
    stop: CancellationToken,
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start() -> Identity {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let config: IdentityConfig = TestSettings::data_service(Service::Identity, &db, &bus)
        .set("webhook.secret", WEBHOOK_SECRET)
        .load(&hopsbridge_identity::DEFAULTS);
    let app = hopsbridge_identity::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let key = CallerKey::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    Identity { base, db, bus, key, stop }
}

pub fn person(subject: &str, email: Option<&str>) -> Caller {
    Caller {
        subject: subject.into(),
        user_id: None,
        roles: vec![Role::User],
        email: email.map(|e| hopsbridge_domain::Email::parse(e).expect("a valid email")),
    }
}

impl Identity {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        caller: Option<&Caller>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        hopsbridge_testkit::signed_call(&self.key, &self.base, method, path, caller, body).await
    }

    /// Resolves a person as the gateway does before forwarding, and returns them with their id.
    pub async fn sign_in(&self, subject: &str, email: &str) -> Caller {
        let mut caller = person(subject, Some(email));
        let (status, body) = self.call(Method::POST, "/internal/callers/resolve", Some(&caller), None).await;
        assert_eq!(status, 200, "{body}");
        caller.user_id = Some(body["id"].as_str().unwrap().parse().unwrap());
        caller
    }

    pub async fn events(&self, event_type: &str) -> i64 {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.db.connect("identity").await;
        diesel::sql_query("SELECT count(*) AS n FROM outbox WHERE event_type = $1")
            .bind::<diesel::sql_types::Text, _>(event_type)
            .get_result::<N>(&mut conn)
            .await
            .unwrap()
            .n
    }

    pub async fn users(&self) -> i64 {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.db.connect("identity").await;
        diesel::sql_query("SELECT count(*) AS n FROM users").get_result::<N>(&mut conn).await.unwrap().n
    }

    pub async fn sql(&self, statement: &str) {
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.connect("identity").await;
        diesel::sql_query(statement).execute(&mut conn).await.unwrap();
    }

    pub fn webhook(&self, secret: &str) -> PostRegistrationAction {
        Auth0Sim::post_registration_action(&format!("{}/webhooks/auth0/post-registration", self.base), secret)
    }
}
