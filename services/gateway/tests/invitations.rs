//! The public `/api/…` routes: an invitation's preview (`GET /api/invitations/{token}`) reaches
//! team, and the price list (`GET /api/pricing`) billing, without a token, with no caller
//! headers, under the per-address limit; every other invitation route, accepting one included,
//! and the admins' price routes still need a token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use actix_web::{HttpRequest, HttpResponse, web};
use hopsbridge_contracts::Service;
use hopsbridge_sandbox::auth0::{Auth0Config, Auth0Sim};
use hopsbridge_testkit::TestSettings;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What the stand-in for team received: method, path with query, and header names.
type Seen = Arc<Mutex<Vec<(String, String, Vec<String>)>>>;

/// A stand-in for every service behind the gateway that records each request and answers 200.
fn upstream(seen: Seen) -> String {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = actix_web::HttpServer::new(move || {
        let seen = Arc::clone(&seen);
        actix_web::App::new().default_service(web::to(move |req: HttpRequest| {
            let seen = Arc::clone(&seen);
            async move {
                let path = req.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
                let headers = req.headers().keys().map(ToString::to_string).collect();
                seen.lock().unwrap().push((req.method().to_string(), path, headers));
                HttpResponse::Ok().json(serde_json::json!({"from": "team"}))
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

/// A gateway whose every upstream is a recording stand-in, at the lowest per-address limit:
/// its base URL, what the stand-in saw, and the token that stops it (and the Auth0 tenant,
/// kept alive with it).
async fn gateway() -> (String, Seen, CancellationToken, Auth0Sim) {
    hopsbridge_testkit::init();
    let seen: Seen = Arc::default();
    let upstream = upstream(Arc::clone(&seen));
    let tenant = Auth0Sim::start(Auth0Config::default()).unwrap();
    let port = hopsbridge_testkit::free_port();
    let mut settings = TestSettings::new(Service::Gateway)
        .set("http.port", port.to_string())
        .set("auth0.issuer", tenant.issuer())
        .set("limits.per_ip_per_minute", "1");
    for name in ["identity", "team", "provisioning", "metering", "billing"] {
        settings = settings.set(&format!("upstreams.{name}"), upstream.clone());
    }
    let gateway = hopsbridge_gateway::build(settings.load(&hopsbridge_gateway::DEFAULTS)).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(gateway.run_until_stopped(stop.clone()));
    (format!("http://127.0.0.1:{port}"), seen, stop, tenant)
}

const TOKEN: &str = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_preview_is_forwarded_without_a_token_and_nothing_else_is() {
    let (base, seen, stop, _tenant) = gateway().await;
    let client = reqwest::Client::new();

    // Forwarded as it came, without the client's credentials or forged caller headers.
    let preview = format!("/api/invitations/{TOKEN}");
    let response = client
        .get(format!("{base}{preview}"))
        .header("authorization", "Bearer not-a-token")
        .header("cookie", "hb_session=x")
        .header("x-hopsbridge-user-id", "0193a000-0000-7000-8000-000000000001")
        .header("x-hopsbridge-roles", "user,admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["from"], "team");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let (method, path, headers) = &seen[0];
        assert_eq!((method.as_str(), path.as_str()), ("GET", preview.as_str()));
        for h in headers {
            assert!(
                !h.starts_with("x-hopsbridge-") && h != "authorization" && h != "cookie",
                "{h} reached team: {headers:?}"
            );
        }
    }

    // Everything else about an invitation needs a token, and reaches nobody without one; a
    // method the path does not take is refused as such before any token is looked at.
    for (method, path, answer) in [
        (reqwest::Method::POST, format!("/api/invitations/{TOKEN}/accept"), (401, "unauthenticated")),
        (reqwest::Method::GET, format!("/api/invitations/{TOKEN}/accept"), (405, "method_not_allowed")),
        (reqwest::Method::POST, preview.clone(), (405, "method_not_allowed")),
        (reqwest::Method::DELETE, preview.clone(), (405, "method_not_allowed")),
        (reqwest::Method::GET, format!("{preview}?email=ada%40example.com"), (401, "unauthenticated")),
        (reqwest::Method::GET, "/api/team/invitations".to_owned(), (401, "unauthenticated")),
        (reqwest::Method::GET, format!("/api/team/invitations/{TOKEN}"), (405, "method_not_allowed")),
    ] {
        let response = client.request(method.clone(), format!("{base}{path}")).send().await.unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!((status.as_u16(), body["code"].as_str()), (answer.0, Some(answer.1)), "{method} {path}");
    }
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing else reached team");

    // The preview is held to the per-address limit (a burst of 10 at the lowest rate); the
    // refused tries above counted too.
    let mut limited = false;
    for _ in 0..12 {
        let response = client.get(format!("{base}{preview}")).send().await.unwrap();
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            limited = true;
            break;
        }
        assert_eq!(response.status(), 200);
    }
    assert!(limited, "the preview is rate-limited per address");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_price_list_is_forwarded_without_a_token_and_the_price_book_needs_one() {
    let (base, seen, stop, _tenant) = gateway().await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{base}/api/pricing"))
        .header("authorization", "Bearer not-a-token")
        .header("x-hopsbridge-roles", "user,admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!((seen[0].0.as_str(), seen[0].1.as_str()), ("GET", "/api/pricing"));
        assert!(seen[0].2.iter().all(|h| !h.starts_with("x-hopsbridge-") && h != "authorization"), "{:?}", seen[0].2);
    }
    for (method, path, answer) in [
        (reqwest::Method::POST, "/api/pricing", (405, "method_not_allowed")),
        (reqwest::Method::GET, "/api/pricing?currency=usd", (401, "unauthenticated")),
        (reqwest::Method::GET, "/api/admin/prices", (401, "unauthenticated")),
        (reqwest::Method::PUT, "/api/billing/cap", (401, "unauthenticated")),
        (reqwest::Method::GET, "/api/admin/billing/findings", (401, "unauthenticated")),
    ] {
        let response = client.request(method.clone(), format!("{base}{path}")).send().await.unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!((status.as_u16(), body["code"].as_str()), (answer.0, Some(answer.1)), "{method} {path}");
    }
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing else reached billing");
    let mut limited = false;
    for _ in 0..12 {
        if client.get(format!("{base}/api/pricing")).send().await.unwrap().status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the price list is rate-limited per address");
    stop.cancel();
}
