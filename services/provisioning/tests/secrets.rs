//! The hopsbridge-provisioning executable, run as a real process with known secrets and logging
//! at debug level, taken through its failures (refused registrations, a cluster whose Hopsworks
//! refuses the API key, one that answers 503, forged caller headers, a mail the SMTP server
//! never takes): no secret it holds reaches a log line, an answer, or an error it records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{CLIENT_ID, KUBECONFIG, Provisioning, admin, cluster_body, metering};
use hopsbridge_contracts::events::{PaymentMethodAddedV1, UserCreatedV1};
use hopsbridge_platform::caller::{Caller, CallerSigner};
use hopsbridge_platform::mail::{Alert, enqueue_alert};
use hopsbridge_provisioning::ProvisioningConfig;
use hopsbridge_sandbox::hopsworks::{HopsworksConfig, HopsworksSim};
use hopsbridge_testkit::{
    GATEWAY_SIGNING_KEY, PROVISIONING_ENCRYPTION_KEYS, SecretScan, ServiceProcess, TestBus, TestDb, TestSettings,
    eventually, free_port,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_hopsbridge-provisioning");
const KUBE_TOKEN: &str = "kube-token-very-secret-0123";
const SMTP_PASSWORD: &str = "smtp-pass/word@0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_an_answer_or_a_recorded_error() {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let good =
        HopsworksSim::start(HopsworksConfig::new("secrets-a", "hw-key-secrets-a-0123456789", CLIENT_ID)).unwrap();
    let refusing =
        HopsworksSim::start(HopsworksConfig::new("secrets-b", "hw-key-secrets-b-9876543210", CLIENT_ID)).unwrap();
    // A key of the refusing cluster's admin, revoked once the cluster is registered with it.
    let wrong_api_key = refusing.create_api_key(&refusing.admin().unwrap().username).unwrap();
    // Nothing listens on this port: every send fails.
    let smtp_url = format!("smtp://mailer:{}@127.0.0.1:{}", smtp_userinfo(SMTP_PASSWORD), free_port());
    let settings = TestSettings::provisioning(&db, &bus)
        .set("mail.smtp_url", smtp_url)
        .set("mail.admin_addresses", "ops@example.com")
        .set("mail.backoff_initial_secs", "1");
    let mut env = settings.env();
    env.push(("RUST_LOG".into(), "debug".into()));
    let mut process = ServiceProcess::start(BINARY, &env);
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let p = Provisioning { base: process.url(), db, bus, key, stops: Vec::new() };

    let (_, keys) = PROVISIONING_ENCRYPTION_KEYS.split_once(',').unwrap();
    let scan = SecretScan::new()
        .secret("auth.gateway_signing_key", GATEWAY_SIGNING_KEY)
        .secret("auth.service_key", hopsbridge_testkit::service_key(hopsbridge_contracts::Service::Provisioning))
        .secret("encryption key test1", "test-key-one-32-bytes-long------")
        .secret("encryption key test2", keys.trim_start_matches("test2:"))
        .secret("mail.smtp_url password", SMTP_PASSWORD)
        .secret("kubeconfig token", KUBE_TOKEN)
        .secret("Hopsworks API key (cluster a)", good.api_key())
        .secret("Hopsworks API key (cluster b)", refusing.api_key())
        .secret("a revoked Hopsworks API key", &wrong_api_key);
    let mut answers: Vec<(String, String)> = Vec::new();
    let mut call = async |method: Method, path: &str, caller: &Caller, body: Option<Value>| {
        let place = format!("{method} {path}");
        let (status, answer) = p.call(method, path, Some(caller), body).await;
        answers.push((format!("the answer to {place}"), answer.to_string()));
        (status, answer)
    };

    // Registrations refused with the secrets in them.
    let with = |field: &str, value: Value| {
        let mut body = cluster_body("eu-1", &good, 10);
        body[field] = value;
        body
    };
    for body in [
        with("kubeconfig", json!(KUBECONFIG.replace("https://", "http://"))),
        with("kubeconfig", json!(KUBECONFIG.replace("6443\n", "6443\n    insecure-skip-tls-verify: true\n"))),
        with("kubeconfig", json!(format!("not: [yaml {KUBE_TOKEN}"))),
        with("api_url", json!(format!("https://admin:{}@hw.example.com", good.api_key()))),
        with("api_key", json!(format!("{}\u{7}", good.api_key()))),
        with("capacity", json!(-1)),
        with("surprise", json!(good.api_key())),
    ] {
        let (status, answer) = call(Method::POST, "/api/admin/clusters", &admin(), Some(body)).await;
        assert_eq!(status, 400, "{answer}");
    }
    // A cluster whose Hopsworks answers, one that refuses the key it is given, and a change of
    // key refused by the second.
    let (status, a) = call(Method::POST, "/api/admin/clusters", &admin(), Some(cluster_body("eu-a", &good, 1))).await;
    assert_eq!(status, 201, "{a}");
    let mut b_body = cluster_body("eu-b", &refusing, 10);
    b_body["api_key"] = json!(wrong_api_key);
    let (status, b) = call(Method::POST, "/api/admin/clusters", &admin(), Some(b_body)).await;
    assert_eq!(status, 201, "{b}");
    refusing.revoke_api_key(&wrong_api_key);
    let (a, b) = (a["id"].as_str().unwrap().to_owned(), b["id"].as_str().unwrap().to_owned());
    let (status, _) =
        call(Method::PATCH, &format!("/api/admin/clusters/{b}"), &admin(), Some(json!({"api_key": "x\u{0}"}))).await;
    assert_eq!(status, 400);

    // Hopsworks refusing the key, then failing every try.
    let (status, _) = call(Method::GET, &format!("/internal/clusters/{b}/projects"), &metering(), None).await;
    assert!(status.is_server_error() || status.is_client_error(), "{status}");
    good.fail_next(3, 503);
    let (status, _) = call(Method::GET, &format!("/internal/clusters/{a}/projects"), &metering(), None).await;
    assert_eq!(status, 502);

    // A paying person is placed on the refusing cluster (the one with room); the background
    // task fails at Hopsworks and records why.
    let person = Uuid::now_v7();
    p.publish(
        &UserCreatedV1 {
            user_id: person.to_string(),
            auth_subject: format!("auth0|{person}"),
            email: "secrets@example.com".into(),
            name: "Secret Keeper".into(),
        },
        None,
    )
    .await;
    p.publish(&PaymentMethodAddedV1 { user_id: person.to_string(), stripe_customer_id: "cus_secrets".into() }, None)
        .await;
    let failed = eventually(Duration::from_secs(30), || async {
        p.count("SELECT count(*) AS n FROM assignments WHERE attempts > 0 AND last_error IS NOT NULL").await > 0
    })
    .await;
    assert!(failed, "the Hopsworks work was tried and failed");

    // Forged caller headers: signed with another key, or not at all.
    let forged = CallerSigner::from_seed(&[42; 32]);
    let (status, answer) =
        hopsbridge_testkit::signed_call(&forged, &p.base, Method::GET, "/api/admin/clusters", Some(&admin()), None)
            .await;
    assert_eq!(status, 401);
    let forged_answer = answer.to_string();

    // An admin alert the SMTP server never takes.
    {
        let config: ProvisioningConfig = settings.load(&hopsbridge_provisioning::DEFAULTS);
        let mut conn = p.db.connect("provisioning").await;
        let alert = Alert { title: "Secrets test".into(), lines: vec!["one fact".into()], link: None };
        assert_eq!(enqueue_alert(&mut conn, &config.mail, "secrets-test", &alert).await.unwrap(), 1);
    }
    let mail_failed = eventually(Duration::from_secs(30), || async {
        p.count("SELECT count(*) AS n FROM mail_outbox WHERE attempts > 0 AND last_error IS NOT NULL").await > 0
    })
    .await;
    assert!(mail_failed, "the mail was tried and failed");
    let (status, _) = call(Method::GET, "/api/admin/mail/provisioning", &admin(), None).await;
    assert_eq!(status, 200);
    for path in ["/api/admin/clusters", &format!("/api/admin/clusters/{b}"), "/api/admin/assignments"] {
        let (status, _) = call(Method::GET, path, &admin(), None).await;
        assert_eq!(status, 200);
    }

    // The one answer that holds a secret by design: metering's copy of the kubeconfig. The scan
    // finds it there, so it would find it anywhere else.
    let (status, kubeconfig) =
        p.call(Method::GET, &format!("/internal/clusters/{a}/kubeconfig"), Some(&metering()), None).await;
    assert_eq!(status, 200);
    let found = scan.findings("the kubeconfig answer", &kubeconfig.to_string());
    assert_eq!(found.iter().map(|f| f.secret.as_str()).collect::<Vec<_>>(), ["kubeconfig token"]);

    // What it recorded about failures, and everything it logged until it stopped.
    let recorded = p.texts("SELECT coalesce(last_error, '') AS t FROM assignments").await;
    let mailed = p.texts("SELECT coalesce(last_error, '') || ' ' || text_body AS t FROM mail_outbox").await;
    assert!(process.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()));
    let output = process.output();
    assert!(output.contains("\"level\":\"DEBUG\""), "debug lines are included: {output}");
    let mut texts: Vec<(String, &str)> = answers.iter().map(|(place, text)| (place.clone(), text.as_str())).collect();
    texts.push(("the answer to a forged caller".to_owned(), &forged_answer));
    texts.extend(recorded.iter().map(|t| ("assignments.last_error".to_owned(), t.as_str())));
    texts.extend(mailed.iter().map(|t| ("mail_outbox".to_owned(), t.as_str())));
    texts.extend(output.lines().enumerate().map(|(i, line)| (format!("log line {}", i + 1), line)));
    scan.assert_clean(texts);
}

/// `value` as it may stand in a URL's userinfo.
fn smtp_userinfo(value: &str) -> String {
    value.replace('/', "%2F").replace('@', "%40")
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    t: String,
}

trait Texts {
    async fn texts(&self, sql: &str) -> Vec<String>;
}

impl Texts for Provisioning {
    async fn texts(&self, sql: &str) -> Vec<String> {
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.connect("provisioning").await;
        diesel::sql_query(sql).load::<Text>(&mut conn).await.unwrap().into_iter().map(|r| r.t).collect()
    }
}
