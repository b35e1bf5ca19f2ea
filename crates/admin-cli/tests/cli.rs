//! The `hopsbridge-admin` binary against a real gateway and the sandbox's Auth0 tenant, with a
//! recording stand-in for every service: it gets its token by client credentials, and each
//! command reaches its service as the admin service principal with its body; an ungranted client
//! and a wrong secret fail with their reasons and reach nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use actix_web::{HttpRequest, HttpResponse, web};
use hopsbridge_contracts::Service;
use hopsbridge_platform::caller::Role;
use hopsbridge_sandbox::auth0::{ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET, Auth0Config, Auth0Sim};
use hopsbridge_testkit::TestSettings;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One request the stand-in received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    body: Value,
    subject: String,
    roles: Vec<Role>,
    user_id: bool,
}

type Seen = Arc<Mutex<Vec<Received>>>;

/// Every service behind the gateway: verifies the caller headers and the body they sign with the
/// gateway's public key (401 if they do not verify, as a service would), records the request
/// and echoes it.
fn stand_in(seen: Seen) -> String {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let key = hopsbridge_testkit::caller_verifier();
    let server = actix_web::HttpServer::new(move || {
        let (seen, key) = (Arc::clone(&seen), key.clone());
        actix_web::App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (seen, key) = (Arc::clone(&seen), key.clone());
            async move {
                let path = req.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
                let now = chrono::Utc::now().timestamp();
                let digest = hopsbridge_platform::caller::body_sha256(&body);
                let Ok(caller) = key.verify(req.method().as_str(), &path, req.headers(), &digest, now) else {
                    return HttpResponse::Unauthorized().json(json!({"code": "unauthenticated"}));
                };
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let received = Received {
                    method: req.method().to_string(),
                    path: path.clone(),
                    body: body.clone(),
                    subject: caller.subject,
                    roles: caller.roles,
                    user_id: caller.user_id.is_some(),
                };
                let polls = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(received);
                    seen.iter().filter(|r| r.path.contains("/runs/")).count()
                };
                // An integrity run: started (202), then running until billing's second poll;
                // team's never ends.
                if let Some(service) = path.strip_prefix("/api/admin/integrity/").and_then(|p| p.strip_suffix("/run")) {
                    return HttpResponse::Accepted()
                        .json(json!({"id": RUN, "status": "running", "service": service, "runs": []}));
                }
                if path == format!("/api/admin/integrity/billing/runs/{RUN}") && polls >= 2 {
                    return HttpResponse::Ok()
                        .json(json!({"id": RUN, "status": "done", "runs": [{"check": "outbox_draining"}]}));
                }
                if path.ends_with(&format!("/runs/{RUN}")) {
                    return HttpResponse::Ok().json(json!({"id": RUN, "status": "running", "runs": []}));
                }
                HttpResponse::Ok().json(json!({"method": req.method().as_str(), "path": path, "body": body}))
            }
        }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    url
}

struct Setup {
    gateway: String,
    tenant: Auth0Sim,
    seen: Seen,
    stop: CancellationToken,
}

async fn setup() -> Setup {
    hopsbridge_testkit::init();
    let seen: Seen = Arc::default();
    let upstream = stand_in(Arc::clone(&seen));
    let tenant = Auth0Sim::start(Auth0Config::default()).unwrap();
    let port = hopsbridge_testkit::free_port();
    let mut settings = TestSettings::new(Service::Gateway)
        .set("http.port", port.to_string())
        .set("auth0.issuer", tenant.issuer())
        .set("admin.machine_clients", ADMIN_CLIENT_ID);
    for name in ["identity", "team", "provisioning", "metering", "billing"] {
        settings = settings.set(&format!("upstreams.{name}"), upstream.clone());
    }
    let gateway = hopsbridge_gateway::build(settings.load(&hopsbridge_gateway::DEFAULTS)).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(gateway.run_until_stopped(stop.clone()));
    Setup { gateway: format!("http://127.0.0.1:{port}"), tenant, seen, stop }
}

/// Runs the binary with the client's credentials in its environment: status, stdout, stderr.
async fn admin(s: &Setup, client: (&str, &str), args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hopsbridge-admin"))
        .args(args)
        .env("HOPSBRIDGE_ADMIN_GATEWAY", &s.gateway)
        .env("HOPSBRIDGE_ADMIN_ISSUER", s.tenant.issuer())
        .env("HOPSBRIDGE_ADMIN_CLIENT_ID", client.0)
        .env("HOPSBRIDGE_ADMIN_CLIENT_SECRET", client.1)
        .env("HOPSBRIDGE_ADMIN_AUDIENCE", s.tenant.audience())
        .env_remove("HOPSBRIDGE_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const CLUSTER: &str = "0193a000-0000-7000-8000-0000000000c1";
const USER: &str = "0193a000-0000-7000-8000-0000000000a1";
const MAIL: &str = "0193a000-0000-7000-8000-0000000000e1";
const RUN: &str = "0193a000-0000-7000-8000-0000000000f1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_reaches_its_route_as_the_admin_service_principal() {
    let s = setup().await;
    let dir = std::env::temp_dir().join(format!("hopsbridge-admin-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster_file = dir.join("cluster.json");
    let cluster = json!({"name": "eu-1", "hopsworks_url": "https://hopsworks.example", "capacity": 40});
    std::fs::write(&cluster_file, cluster.to_string()).unwrap();
    let file = cluster_file.to_str().unwrap();
    let granted = (ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET);

    let expected: Vec<(Vec<&str>, &str, String, Value)> = vec![
        (vec!["clusters", "register", "--file", file], "POST", "/api/admin/clusters".into(), cluster.clone()),
        (vec!["clusters", "list"], "GET", "/api/admin/clusters".into(), Value::Null),
        (
            vec!["clusters", "update", CLUSTER, "--file", file],
            "PATCH",
            format!("/api/admin/clusters/{CLUSTER}"),
            cluster,
        ),
        (
            vec!["assignments", "list", "--status", "active"],
            "GET",
            "/api/admin/assignments?status=active".into(),
            Value::Null,
        ),
        (
            vec!["assignments", "move", USER, "--cluster", CLUSTER],
            "PUT",
            format!("/api/admin/assignments/{USER}"),
            json!({"cluster_id": CLUSTER}),
        ),
        (vec!["assignments", "unassign", USER], "DELETE", format!("/api/admin/assignments/{USER}"), Value::Null),
        (vec!["people", "list", "--q", "ada lovelace"], "GET", "/api/admin/users?q=ada+lovelace".into(), Value::Null),
        (
            vec!["people", "suspend", USER, "--reason", "unpaid"],
            "POST",
            format!("/api/admin/users/{USER}/suspend"),
            json!({"reason": "unpaid"}),
        ),
        (vec!["people", "reactivate", USER], "POST", format!("/api/admin/users/{USER}/reactivate"), Value::Null),
        (
            vec![
                "prices",
                "add",
                "--resource",
                "cpu",
                "--unit-amount-decimal",
                "0.35",
                "--effective-from",
                "2027-01-01T00:00:00Z",
            ],
            "POST",
            "/api/admin/prices".into(),
            json!({"resource": "cpu", "unit_amount_decimal": "0.35", "effective_from": "2027-01-01T00:00:00Z"}),
        ),
        (
            vec!["metering", "collect", CLUSTER],
            "POST",
            format!("/api/admin/metering/clusters/{CLUSTER}/collect"),
            Value::Null,
        ),
        (
            vec!["metering", "gaps", "--cluster-id", CLUSTER],
            "GET",
            format!("/api/admin/metering/gaps?cluster_id={CLUSTER}"),
            Value::Null,
        ),
        (
            vec!["mail", "list", "provisioning", "--status", "failing"],
            "GET",
            "/api/admin/mail/provisioning?status=failing".into(),
            Value::Null,
        ),
        (vec!["mail", "retry", "billing", MAIL], "POST", format!("/api/admin/mail/billing/{MAIL}/retry"), Value::Null),
        (
            vec!["dead-letters", "list", "billing", "--event-type", "UserCreatedV1", "--status", "waiting"],
            "GET",
            "/api/admin/dead-letters/billing?event_type=UserCreatedV1&status=waiting".into(),
            Value::Null,
        ),
        (
            vec!["dead-letters", "show", "team", MAIL],
            "GET",
            format!("/api/admin/dead-letters/team/{MAIL}"),
            Value::Null,
        ),
        (
            vec!["dead-letters", "replay", "metering", MAIL],
            "POST",
            format!("/api/admin/dead-letters/metering/{MAIL}/replay"),
            Value::Null,
        ),
        (
            vec!["dead-letters", "replay-all", "identity", "--limit", "10"],
            "POST",
            "/api/admin/dead-letters/identity/replay?limit=10".into(),
            Value::Null,
        ),
        (
            vec!["integrity", "list", "provisioning", "--all"],
            "GET",
            "/api/admin/integrity/provisioning?status=all".into(),
            Value::Null,
        ),
        (vec!["integrity", "list", "metering"], "GET", "/api/admin/integrity/metering".into(), Value::Null),
    ];
    for (args, method, path, body) in &expected {
        let (status, stdout, stderr) = admin(&s, granted, args).await;
        assert_eq!(status, 0, "{args:?}: {stderr}");
        let printed: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"));
        assert_eq!(printed, json!({"method": method, "path": path, "body": body}), "{args:?} prints the answer");
    }
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    for (received, (args, method, path, body)) in seen.iter().zip(&expected) {
        assert_eq!((received.method.as_str(), &received.path, &received.body), (*method, path, body), "{args:?}");
        assert_eq!(received.subject, format!("client:{ADMIN_CLIENT_ID}"), "{args:?}");
        assert_eq!((received.roles.as_slice(), received.user_id), ([Role::Admin].as_slice(), false), "{args:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_run_starts_the_run_and_polls_it_until_it_ends_within_its_ceiling() {
    let s = setup().await;
    let granted = (ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET);
    let (status, stdout, stderr) = admin(&s, granted, &["integrity", "run", "billing"]).await;
    assert_eq!(status, 0, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        (printed["status"].as_str(), printed["runs"][0]["check"].as_str()),
        (Some("done"), Some("outbox_draining"))
    );
    let seen: Vec<(String, String)> =
        s.seen.lock().unwrap().iter().map(|r| (r.method.clone(), r.path.clone())).collect();
    let poll = format!("/api/admin/integrity/billing/runs/{RUN}");
    assert_eq!(
        seen,
        vec![
            ("POST".to_owned(), "/api/admin/integrity/billing/run".to_owned()),
            ("GET".to_owned(), poll.clone()),
            ("GET".to_owned(), poll),
        ],
        "started once, polled until done"
    );

    // A run that does not end within the ceiling: the command gives up and says how to poll.
    let (status, stdout, stderr) = admin(&s, granted, &["integrity", "run", "team", "--wait-secs", "2"]).await;
    assert_eq!((status, stdout.as_str()), (3, ""), "{stderr}");
    assert!(stderr.contains(&format!("integrity run {RUN} of team still running after 2 s")), "{stderr}");
    assert!(stderr.contains(&format!("GET /api/admin/integrity/team/runs/{RUN}")), "{stderr}");
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_client_and_a_wrong_secret_fail_with_their_reasons_and_reach_nothing() {
    let s = setup().await;
    s.tenant.add_machine_client("ci-robot", "ci-robot-secret");
    let (status, stdout, stderr) = admin(&s, ("ci-robot", "ci-robot-secret"), &["clusters", "list"]).await;
    assert_eq!(status, 1, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["code"], "machine_client_not_admin");
    assert!(stderr.contains("HTTP 403 machine_client_not_admin"), "{stderr}");

    let (status, stdout, stderr) = admin(&s, (ADMIN_CLIENT_ID, "wrong"), &["clusters", "list"]).await;
    assert_eq!((status, stdout.as_str()), (3, ""), "{stderr}");
    assert!(stderr.contains("refused the client credentials: HTTP 401 access_denied"), "{stderr}");
    assert!(!stderr.contains("wrong"), "the secret is not echoed: {stderr}");

    let (status, _, stderr) = admin(&s, (ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET), &["clusters", "show", "../x"]).await;
    assert_eq!(status, 2, "a wrong command line is clap's: {stderr}");
    assert!(s.seen.lock().unwrap().is_empty());
    s.stop.cancel();
}

/// A name no other test run picks.
fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default())
}
