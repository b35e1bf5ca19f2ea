//! Backfill and reconciliation with metering: a day the ledger lacks is backfilled from
//! metering's samples; a difference backfill cannot close is a finding, alerted once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use actix_web::{HttpRequest, HttpResponse, web};
use common::*;
use hopsbridge_billing::events::UserCreatedHooks;
use hopsbridge_platform::caller::Role;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// What the stand-in for metering answers: the samples, and usage per owner.
#[derive(Default)]
struct Fake {
    samples: Vec<Value>,
    daily: Vec<Value>,
    callers: Vec<String>,
}

fn metering(fake: Arc<Mutex<Fake>>) -> String {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = actix_web::HttpServer::new(move || {
        let fake = Arc::clone(&fake);
        actix_web::App::new().default_service(web::to(move |req: HttpRequest| {
            let fake = Arc::clone(&fake);
            async move {
                let mut f = fake.lock().unwrap();
                let subject = req.headers().get("x-hopsbridge-subject").and_then(|v| v.to_str().ok()).unwrap_or("");
                f.callers.push(subject.to_owned());
                if req.path() == "/internal/samples" {
                    HttpResponse::Ok().json(json!({"samples": f.samples, "next": null}))
                } else {
                    HttpResponse::Ok().json(json!({"day": "x", "owners": f.daily}))
                }
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

fn record(owner: Uuid, start: i64, cpu: i64) -> Value {
    json!({"sample_id": Uuid::now_v7(), "cluster_id": Uuid::from_u128(3), "namespace": "lab", "user_id": owner,
        "owner_user_id": owner, "window_start_unix_seconds": start, "window_end_unix_seconds": start + 900,
        "estimated": false, "project_id": 7, "cpu_nanocore_seconds": cpu, "memory_byte_seconds": 0, "gpu_seconds": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_the_ledger_lacks_is_backfilled_and_a_difference_left_is_a_finding_alerted_once() {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let url = metering(Arc::clone(&fake));
    // The last closed day the reconciliation compares (grace 3600 s).
    let now = chrono::Utc::now().timestamp();
    let day_start = (now - 3600 - 86_400).div_euclid(86_400) * 86_400;
    let (full, short) = (Uuid::now_v7(), Uuid::now_v7());
    {
        let mut f = fake.lock().unwrap();
        f.samples = (0..3).map(|i| record(full, day_start + i * 900, 900_000_000_000)).collect();
        f.daily = vec![
            json!({"owner_user_id": full, "cpu_nanocore_seconds": 2_700_000_000_000_i64, "memory_byte_seconds": 0, "gpu_seconds": 0, "samples": 3}),
            json!({"owner_user_id": short, "cpu_nanocore_seconds": 5, "memory_byte_seconds": 0, "gpu_seconds": 0, "samples": 1}),
        ];
    }
    let billing = start_adjusted(UserCreatedHooks::default(), |s| {
        s.set("metering.url", url.clone())
            .set("mail.admin_addresses", "ops@hopsbridge.test")
            .set("reconciliation.interval_secs", "86400")
            .set("reconciliation.days", "1")
    })
    .await;
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    // The run at start, then one asked for: the same findings, one alert.
    let found = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        count(&billing.db, "reconciliation_findings").await == 1 && count(&billing.db, "ledger_entries").await == 3
    })
    .await;
    assert!(found, "backfilled and found");
    let (status, _) = billing.call(Method::POST, "/api/admin/billing/reconcile", Some(&admin)).await;
    assert_eq!(status, 202);
    let again = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        fake.lock().unwrap().callers.iter().filter(|c| c.as_str() == "service:billing").count() >= 4
    })
    .await;
    assert!(again, "asked metering again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, findings) = billing.call(Method::GET, "/api/admin/billing/findings", Some(&admin)).await;
    assert_eq!(status, 200, "{findings}");
    let list = findings["findings"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{findings}");
    assert_eq!(
        (list[0]["kind"].as_str(), list[0]["owner_id"].as_str()),
        (Some("missing"), Some(short.to_string().as_str()))
    );
    assert_eq!(list[0]["theirs"], "cpu=5 memory=0 gpu=0");
    let day = chrono::DateTime::from_timestamp(day_start, 0).unwrap().date_naive();
    assert_eq!(list[0]["day"], day.to_string());
    assert_eq!(count(&billing.db, "mail_outbox WHERE kind = 'admin.alert'").await, 1, "alerted once");
    let (_, backfills) = billing.call(Method::GET, "/api/admin/billing/backfills", Some(&admin)).await;
    assert!(backfills["backfills"].as_array().unwrap().iter().all(|b| b["status"] == "done"), "{backfills}");
    assert!(fake.lock().unwrap().callers.iter().all(|c| c == "service:billing"), "signed as billing");
}
