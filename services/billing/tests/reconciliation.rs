//! Backfill and reconciliation with metering: a day the ledger lacks is backfilled from
//! metering's usage and storage samples; a difference backfill cannot close is a finding,
//! alerted once; a backfill repeated changes nothing.

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

/// What the stand-in for metering answers: the usage and storage samples, and usage and
/// storage per owner.
#[derive(Default)]
struct Fake {
    samples: Vec<Value>,
    storage: Vec<Value>,
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
                } else if req.path() == "/internal/storage-samples" {
                    // Two pages: the first sample, then the rest.
                    if req.query_string().contains("after=") {
                        HttpResponse::Ok()
                            .json(json!({"samples": f.storage.get(1..).unwrap_or_default(), "next": null}))
                    } else {
                        let next = (f.storage.len() > 1).then_some("page-2");
                        HttpResponse::Ok()
                            .json(json!({"samples": f.storage.get(..1).unwrap_or_default(), "next": next}))
                    }
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

/// One hour of `owner`'s project 119 holding `bytes` offline, as metering's storage route
/// answers it.
fn storage_record(sample: Uuid, owner: Uuid, start: i64, bytes: i64) -> Value {
    json!({"sample_id": sample, "cluster_id": Uuid::from_u128(3), "project_id": 119, "namespace": "fraud",
        "user_id": owner, "owner_user_id": owner, "window_start_unix_seconds": start,
        "window_end_unix_seconds": start + 3600, "offline_bytes": bytes, "online_bytes": 0,
        "offline_byte_seconds": bytes * 3600, "online_byte_seconds": 0, "measured_at_unix_seconds": start + 60,
        "estimated": false})
}

/// metering's figures of one owner-day.
fn owner_day(owner: Uuid, cpu: i64, offline: i64) -> Value {
    json!({"owner_user_id": owner, "cpu_nanocore_seconds": cpu, "memory_byte_seconds": 0, "gpu_seconds": 0,
        "samples": 1, "storage_offline_byte_seconds": offline, "storage_online_byte_seconds": 0, "storage_samples": 1})
}

/// The last closed day the reconciliation compares (grace 3600 s): its start.
fn last_closed_day() -> i64 {
    let now = chrono::Utc::now().timestamp();
    (now - 3600 - 86_400).div_euclid(86_400) * 86_400
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_the_ledger_lacks_is_backfilled_and_a_difference_left_is_a_finding_alerted_once() {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let url = metering(Arc::clone(&fake));
    let day_start = last_closed_day();
    let (full, short) = (Uuid::now_v7(), Uuid::now_v7());
    {
        let mut f = fake.lock().unwrap();
        f.samples = (0..3).map(|i| record(full, day_start + i * 900, 900_000_000_000)).collect();
        f.daily = vec![owner_day(full, 2_700_000_000_000, 0), owner_day(short, 5, 0)];
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
    assert_eq!(list[0]["theirs"], "cpu=5 memory=0 gpu=0 storage_offline=0 storage_online=0");
    let day = chrono::DateTime::from_timestamp(day_start, 0).unwrap().date_naive();
    assert_eq!(list[0]["day"], day.to_string());
    assert_eq!(count(&billing.db, "mail_outbox WHERE kind = 'admin.alert'").await, 1, "alerted once");
    let (_, backfills) = billing.call(Method::GET, "/api/admin/billing/backfills", Some(&admin)).await;
    assert!(backfills["backfills"].as_array().unwrap().iter().all(|b| b["status"] == "done"), "{backfills}");
    assert!(fake.lock().unwrap().callers.iter().all(|c| c == "service:billing"), "signed as billing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_the_ledger_lacks_is_backfilled_once_and_a_storage_difference_is_a_finding() {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let url = metering(Arc::clone(&fake));
    let billing = start_adjusted(UserCreatedHooks::default(), |s| {
        s.set("metering.url", url.clone())
            .set("mail.admin_addresses", "ops@hopsbridge.test")
            .set("reconciliation.interval_secs", "86400")
            .set("reconciliation.days", "1")
    })
    .await;
    let admin = caller(Uuid::now_v7(), &[Role::User, Role::Admin]);
    let storage_entries = "ledger_entries WHERE source = 'storage'";
    // The run at start finds metering empty and nothing to do.
    let quiet = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        fake.lock().unwrap().callers.iter().any(|c| c == "service:billing")
    })
    .await;
    assert!(quiet, "the run at start asked metering");

    // The healthy owner's four hours of 2 GB; only the first hour's StorageRecorded reaches
    // billing (the others are past JetStream's retention). The drifting owner's one hour of
    // 1 GB, which metering's day says is 3 GB-hours.
    let day_start = last_closed_day();
    let (healthy, drifting) = (Uuid::now_v7(), Uuid::now_v7());
    let gb: i64 = 1_000_000_000;
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let first = hopsbridge_contracts::events::StorageRecordedV1 {
        sample_id: ids[0].to_string(),
        cluster_id: Uuid::from_u128(3).to_string(),
        project_id: 119,
        namespace: "fraud".into(),
        owner_user_id: healthy.to_string(),
        user_id: healthy.to_string(),
        window_start_unix_seconds: day_start,
        window_end_unix_seconds: day_start + 3600,
        offline_bytes: 2_000_000_000,
        offline_byte_seconds: 2_000_000_000 * 3600,
        measured_at_unix_seconds: day_start + 60,
        ..Default::default()
    };
    publish_metering(&billing.bus, &[(Uuid::now_v7(), first)]).await;
    let consumed = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        count(&billing.db, storage_entries).await == 1
    })
    .await;
    assert!(consumed, "the StorageRecorded was ledgered");
    {
        let mut f = fake.lock().unwrap();
        f.storage = ids
            .iter()
            .enumerate()
            .map(|(h, id)| storage_record(*id, healthy, day_start + 3600 * i64::try_from(h).unwrap(), 2 * gb))
            .collect();
        f.storage.push(storage_record(Uuid::now_v7(), drifting, day_start + 7200, gb));
        f.daily = vec![owner_day(healthy, 0, 4 * 2 * gb * 3600), owner_day(drifting, 0, 3 * gb * 3600)];
    }
    let (status, _) = billing.call(Method::POST, "/api/admin/billing/reconcile", Some(&admin)).await;
    assert_eq!(status, 202);
    let found = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        count(&billing.db, "reconciliation_findings").await == 1 && count(&billing.db, storage_entries).await == 5
    })
    .await;
    assert!(found, "backfilled and found: {} entries", count(&billing.db, storage_entries).await);
    // Each sample once: the consumed hour kept its event, the backfill added the four others.
    assert_eq!(count(&billing.db, &format!("{storage_entries} AND owner_id = '{healthy}'")).await, 4);
    assert_eq!(
        count(&billing.db, &format!("{storage_entries} AND sample_id = '{}' AND event_id IS NOT NULL", ids[0])).await,
        1
    );
    let (_, backfills) = billing.call(Method::GET, "/api/admin/billing/backfills", Some(&admin)).await;
    let by_reconciliation: Vec<&Value> =
        backfills["backfills"].as_array().unwrap().iter().filter(|b| b["requested_by"].is_null()).collect();
    assert_eq!(by_reconciliation.len(), 1, "{backfills}");
    assert_eq!(
        (
            &by_reconciliation[0]["status"],
            &by_reconciliation[0]["samples_seen"],
            &by_reconciliation[0]["samples_added"]
        ),
        (&json!("done"), &json!(5), &json!(4)),
        "{backfills}"
    );
    // The drifting owner's day is a finding naming the storage; the healthy owner's is none.
    let (_, findings) = billing.call(Method::GET, "/api/admin/billing/findings", Some(&admin)).await;
    let list = findings["findings"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{findings}");
    assert_eq!(
        (list[0]["kind"].as_str(), list[0]["owner_id"].as_str()),
        (Some("missing"), Some(drifting.to_string().as_str()))
    );
    assert_eq!(list[0]["ours"], format!("cpu=0 memory=0 gpu=0 storage_offline={} storage_online=0", gb * 3600));
    assert_eq!(list[0]["theirs"], format!("cpu=0 memory=0 gpu=0 storage_offline={} storage_online=0", 3 * gb * 3600));
    assert_eq!(count(&billing.db, "mail_outbox WHERE kind = 'admin.alert'").await, 1, "alerted once");

    // The same day backfilled again by an admin: every sample seen, none added, nothing changed.
    let cost = "(SELECT coalesce(sum(storage_offline_cost), 0)::text || '/' || count(*)::text FROM ledger_entries)";
    let before = texts(&billing.db, cost).await;
    let day = chrono::DateTime::from_timestamp(day_start, 0).unwrap();
    let body = json!({"from": day, "to": day + chrono::TimeDelta::days(1)});
    let (status, asked) =
        billing.call_with(Method::POST, "/api/admin/billing/backfill", Some(&admin), Some(body)).await;
    assert_eq!(status, 202, "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let done = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        count(&billing.db, &format!("backfills WHERE id = '{id}' AND status = 'done'")).await == 1
    })
    .await;
    assert!(done, "the admin's backfill ended");
    assert_eq!(
        count(&billing.db, &format!("backfills WHERE id = '{id}' AND samples_seen = 5 AND samples_added = 0")).await,
        1
    );
    assert_eq!(texts(&billing.db, cost).await, before, "a repeated backfill changes nothing");
    assert_eq!(count(&billing.db, "mail_outbox WHERE kind = 'admin.alert'").await, 1);
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    t: String,
}

/// The one text `sql` selects.
async fn texts(db: &hopsbridge_testkit::TestDb, sql: &str) -> String {
    use diesel_async::RunQueryDsl;
    let mut conn = db.connect("billing").await;
    diesel::sql_query(format!("SELECT {sql} AS t")).get_result::<Text>(&mut conn).await.unwrap().t
}
