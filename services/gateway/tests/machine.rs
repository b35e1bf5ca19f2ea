//! Machine clients (decision 0045): a client-credentials token of a client granted in
//! `admin.machine_clients` reaches the admin routes signed as an admin service principal; another
//! client's valid token is 403 `machine_client_not_admin`, a granted one off the admin routes 403
//! `machine_client_admin_only`, and a forged one 401 `invalid_token`. Nothing refused reaches a
//! service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hopsbridge_contracts::Service;
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_sandbox::auth0::{ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET, Auth0Config, Auth0Sim};
use hopsbridge_testkit::TestSettings;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What the stand-in received: method, path with query, and the caller its headers verify as.
type Seen = Arc<Mutex<Vec<(String, String, Result<Caller, String>)>>>;

/// A stand-in for every service behind the gateway: it verifies the caller headers and the body
/// they sign with the gateway's public key, as services do, records them and answers 200.
fn upstream(seen: Seen) -> String {
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
                let caller =
                    key.verify(req.method().as_str(), &path, req.headers(), &digest, now).map_err(|e| e.to_string());
                seen.lock().unwrap().push((req.method().to_string(), path, caller));
                HttpResponse::Ok().json(serde_json::json!({"from": "stand-in"}))
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

async fn gateway(granted: &str) -> (String, Seen, CancellationToken, Auth0Sim) {
    hopsbridge_testkit::init();
    let seen: Seen = Arc::default();
    let upstream = upstream(Arc::clone(&seen));
    let tenant = Auth0Sim::start(Auth0Config::default()).unwrap();
    let port = hopsbridge_testkit::free_port();
    let mut settings = TestSettings::new(Service::Gateway)
        .set("http.port", port.to_string())
        .set("auth0.issuer", tenant.issuer())
        .set("admin.machine_clients", granted);
    for name in ["identity", "team", "provisioning", "metering", "billing"] {
        settings = settings.set(&format!("upstreams.{name}"), upstream.clone());
    }
    let gateway = hopsbridge_gateway::build(settings.load(&hopsbridge_gateway::DEFAULTS)).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(gateway.run_until_stopped(stop.clone()));
    (format!("http://127.0.0.1:{port}"), seen, stop, tenant)
}

/// A token from the tenant's `/oauth/token` by client credentials.
async fn client_credentials(tenant: &Auth0Sim, id: &str, secret: &str) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
        ("audience", &tenant.audience()),
    ];
    let response = reqwest::Client::new()
        .post(format!("{}oauth/token", tenant.issuer()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

async fn call(base: &str, method: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .header("x-hopsbridge-roles", "admin,service")
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_machine_client_reaches_the_admin_routes_as_an_admin_service_principal() {
    let (base, seen, stop, tenant) = gateway(&format!("other-client, {ADMIN_CLIENT_ID}")).await;
    let token = client_credentials(&tenant, ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET).await;
    for (method, path) in [
        ("GET", "/api/admin/clusters?limit=5"),
        ("POST", "/api/admin/metering/clusters/0193a000-0000-7000-8000-000000000001/collect"),
        ("GET", "/api/admin/users"),
        ("GET", "/api/admin/mail/provisioning"),
        ("POST", "/api/admin/dead-letters/billing/replay?event_type=UserCreatedV1"),
    ] {
        let (status, body) = call(&base, method, path, &token).await;
        assert_eq!((status, body["from"].as_str()), (200, Some("stand-in")), "{method} {path}: {body}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5, "{seen:?}");
    let expected = Caller {
        subject: format!("client:{ADMIN_CLIENT_ID}"),
        issuer: Some(tenant.issuer()),
        user_id: None,
        roles: vec![Role::Admin],
        email: None,
    };
    for (method, path, caller) in &seen {
        let caller = caller.as_ref().unwrap_or_else(|e| panic!("{method} {path}: headers do not verify: {e}"));
        assert_eq!(caller, &expected, "{method} {path}: an admin, no person, the client's forged roles ignored");
        assert!(!caller.has(Role::Service) && !caller.has(Role::User));
    }
    assert_eq!(seen[0].1, "/api/admin/clusters?limit=5", "signed for the path and query forwarded");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_machine_client_is_forbidden_a_granted_one_off_admin_routes_too_and_a_forged_one_is_unauthenticated()
 {
    let (base, seen, stop, tenant) = gateway(ADMIN_CLIENT_ID).await;
    tenant.add_machine_client("ci-robot", "ci-robot-secret");
    let ungranted = client_credentials(&tenant, "ci-robot", "ci-robot-secret").await;
    for (method, path) in [("GET", "/api/admin/clusters"), ("GET", "/api/me"), ("GET", "/api/auth/caller")] {
        let (status, body) = call(&base, method, path, &ungranted).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("machine_client_not_admin")), "{path}: {body}");
    }

    let granted = client_credentials(&tenant, ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET).await;
    for (method, path) in
        [("GET", "/api/me"), ("GET", "/api/usage"), ("GET", "/api/auth/caller"), ("GET", "/api/cluster")]
    {
        let (status, body) = call(&base, method, path, &granted).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("machine_client_admin_only")), "{path}: {body}");
    }

    // The ungranted client's token with its payload rewritten to name the granted client: the
    // signature no longer verifies.
    let mut parts: Vec<String> = ungranted.split('.').map(str::to_owned).collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["sub"] = format!("{ADMIN_CLIENT_ID}@clients").into();
    claims["azp"] = ADMIN_CLIENT_ID.into();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let forged = parts.join(".");
    let (status, body) = call(&base, "GET", "/api/admin/clusters", &forged).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")), "{body}");
    // Any other client the tenant signs for is refused the same way.
    let other = tenant.machine_token("someone-else", "").unwrap();
    let (status, body) = call(&base, "GET", "/api/admin/clusters", &other).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("machine_client_not_admin")), "{body}");

    assert!(seen.lock().unwrap().is_empty(), "nothing refused reached a service: {:?}", seen.lock().unwrap());
    stop.cancel();
}
