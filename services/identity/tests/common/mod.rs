//! identity on the real Postgres and NATS, called as the gateway calls it (signed caller
//! headers) and as the Auth0 Action calls it (the webhook's shared secret), with a stand-in for
//! the team service's internal route that counts an owner's members.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use actix_web::{HttpRequest, HttpResponse, web};
use hopsbridge_contracts::Service;
use hopsbridge_domain::OwnerId;
use hopsbridge_identity::IdentityConfig;
use hopsbridge_platform::caller::{Caller, CallerSigner, CallerVerifier, Role};
use hopsbridge_sandbox::auth0::{Auth0Sim, PostRegistrationAction};
use hopsbridge_sandbox::server::Served;
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, TestBus, TestDb, TestSettings, WEBHOOK_SECRET};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The Auth0 tenant identity is configured with: the issuer of the people its webhook creates,
/// and of the tokens of the people these tests sign in.
pub const ISSUER: &str = "https://tenant.hopsbridge.test/";

pub struct Identity {
    pub base: String,
    pub db: TestDb,
    pub bus: TestBus,
    pub key: CallerSigner,
    pub team: TeamStub,
    stop: CancellationToken,
}

/// What the stand-in team service answers and has been asked.
#[derive(Default)]
struct TeamState {
    members: Mutex<HashMap<OwnerId, u64>>,
    failing: AtomicBool,
    asked: AtomicUsize,
}

/// A stand-in for the team service's `GET /internal/owners/{id}/members`: it answers only a
/// request signed as the identity service (401 otherwise), with the count a test set (0 by
/// default), or 500 while failing.
pub struct TeamStub {
    served: Served,
    state: Arc<TeamState>,
}

impl TeamStub {
    pub fn start() -> Self {
        let state = Arc::new(TeamState::default());
        // What team verifies with: the gateway's and every service's public key.
        let key = hopsbridge_testkit::caller_verifier();
        let shared = Arc::clone(&state);
        let served = Served::start(
            move |c| {
                c.app_data(web::Data::from(Arc::clone(&shared)))
                    .app_data(web::Data::new(key.clone()))
                    .route("/internal/owners/{id}/members", web::get().to(members));
            },
            None,
        )
        .unwrap();
        Self { served, state }
    }

    pub fn url(&self) -> String {
        self.served.url()
    }

    /// Says `owner` has `n` members from now on.
    pub fn set_members(&self, owner: hopsbridge_domain::UserId, n: u64) {
        self.state.members.lock().unwrap().insert(owner.as_owner(), n);
    }

    /// Answers 500 to every request while `failing`.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Signed requests it answered (with a count or a failure).
    pub fn asked(&self) -> usize {
        self.state.asked.load(Ordering::SeqCst)
    }
}

async fn members(
    req: HttpRequest,
    owner: web::Path<OwnerId>,
    state: web::Data<TeamState>,
    key: web::Data<CallerVerifier>,
) -> HttpResponse {
    let path = req.uri().path_and_query().map_or_else(|| req.path().to_owned(), ToString::to_string);
    let empty = hopsbridge_platform::caller::body_sha256(b"");
    let verified = key.verify("GET", &path, req.headers(), &empty, chrono::Utc::now().timestamp());
    if !verified.is_ok_and(|caller| caller.is_service(Service::Identity)) {
        return HttpResponse::Unauthorized().json(json!({"code": "unauthenticated"}));
    }
    state.asked.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return HttpResponse::InternalServerError().json(json!({"code": "internal_error"}));
    }
    let count = state.members.lock().unwrap().get(&owner).copied().unwrap_or(0);
    HttpResponse::Ok().json(json!({"count": count}))
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start() -> Identity {
    let team = TeamStub::start();
    start_with_team(team, None).await
}

/// identity asking `team`, or, when `team_url` is given, that address instead (one where
/// nothing listens, say).
pub async fn start_with_team(team: TeamStub, team_url: Option<String>) -> Identity {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let config: IdentityConfig = TestSettings::data_service(Service::Identity, &db, &bus)
        .set("webhook.secret", WEBHOOK_SECRET)
        .set("auth0.issuer", ISSUER)
        .set("team.url", team_url.unwrap_or_else(|| team.url()))
        .set("team.timeout_ms", "2000")
        .load(&hopsbridge_identity::DEFAULTS);
    let app = hopsbridge_identity::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    Identity { base, db, bus, key, team, stop }
}

pub fn person(subject: &str, email: Option<&str>) -> Caller {
    Caller {
        subject: subject.into(),
        issuer: Some(ISSUER.into()),
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

    /// Makes `member` a current member of `owner`'s team in identity's projection, as a
    /// TeamMemberJoined of a minute ago would.
    pub async fn member_of(&self, member: hopsbridge_domain::UserId, owner: hopsbridge_domain::UserId) {
        self.sql(&format!(
            "INSERT INTO team_members (member_user_id, owner_user_id, membership_id, joined_at)
             VALUES ('{member}', '{owner}', '{}', now() - interval '1 minute')",
            uuid::Uuid::now_v7()
        ))
        .await;
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
