//! Usage becomes money (decision 0038), against the running service, the real Postgres and
//! NATS and the Stripe sandbox: the ledger, prices, modes, credits, caps, the owner's views,
//! bad input and who may call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use hopsbridge_billing::events::UserCreatedHooks;
use hopsbridge_contracts::events::{BillingModeChangedV1, Envelope, UsageRecordedV1};
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_sandbox::stripe::WebhookFaults;
use hopsbridge_testkit::{TestBus, TestDb};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const DAY: i64 = 86_400;
const WINDOW: i64 = 900;

struct Money {
    billing: Billing,
    admin: Caller,
}

impl std::ops::Deref for Money {
    type Target = Billing;
    fn deref(&self) -> &Billing {
        &self.billing
    }
}

async fn start_money() -> Money {
    let billing = start_adjusted(UserCreatedHooks::default(), |s| {
        s.set("mail.admin_addresses", "ops@hopsbridge.test").set("reconciliation.interval_secs", "86400")
    })
    .await;
    Money { billing, admin: caller(Uuid::now_v7(), &[Role::User, Role::Admin]) }
}

fn owner_caller(user: Uuid) -> Caller {
    caller(user, &[Role::User, Role::Owner])
}

async fn publish_new(bus: &TestBus, events: &[UsageRecordedV1]) {
    let with_ids: Vec<_> = events.iter().map(|e| (Uuid::now_v7(), e.clone())).collect();
    publish_usage(bus, &with_ids).await;
}

async fn until(db: &TestDb, sql: &str, want: i64) {
    let reached =
        hopsbridge_testkit::eventually(Duration::from_secs(60), || async { count(db, sql).await == want }).await;
    assert!(reached, "{sql}: {} instead of {want}", count(db, sql).await);
}

#[derive(diesel::QueryableByName, Debug)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    t: String,
}

/// The rows of `sql`, which selects one text column named `t`.
async fn texts(db: &TestDb, sql: &str) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    let mut conn = db.connect("billing").await;
    diesel::sql_query(sql).load::<Text>(&mut conn).await.unwrap().into_iter().map(|r| r.t).collect()
}

fn midnight_today() -> i64 {
    let now = chrono::Utc::now().timestamp();
    now - now.rem_euclid(DAY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_is_ledgered_once_priced_and_split_at_midnight() {
    let m = start_money().await;
    let (owner, user) = (Uuid::now_v7(), Uuid::now_v7());
    let today = midnight_today();
    // 5,000 samples of 50 owners, all in today's windows.
    let mut events = Vec::new();
    for i in 0..5000_i64 {
        let o = Uuid::from_u128(1000 + u128::try_from(i % 50).unwrap());
        events.push((Uuid::now_v7(), usage(o, o, today + (i / 50) * WINDOW % DAY, WINDOW, (1, 2, 0))));
    }
    publish_usage(&m.bus, &events).await;
    until(&m.db, "ledger_entries", 5000).await;
    // Redelivered (same event id) and republished (a new event id, the same sample): nothing changes.
    publish_usage(&m.bus, &events[..200]).await;
    let again: Vec<_> = events[200..400].iter().map(|(_, e)| (Uuid::now_v7(), e.clone())).collect();
    publish_usage(&m.bus, &again).await;
    let consumed = hopsbridge_testkit::eventually(Duration::from_secs(30), || async {
        count(&m.db, "inbox WHERE event_type = 'UsageRecorded'").await >= 5200
    })
    .await;
    assert!(consumed, "the republished events were consumed");
    assert_eq!(count(&m.db, "ledger_entries").await, 5000);
    // 1 core for 900 s at 35 = 8.75; 2 GiB at 3.5 = 1.75.
    let sums = "SELECT (sum(cpu_cost) || ' ' || sum(memory_cost) || ' ' || sum(gpu_cost)) AS t FROM ledger_entries";
    assert_eq!(texts(&m.db, sums).await, vec!["43750.00 8750.00 0".to_owned()]);

    // A window across midnight: 300 s before, 600 s after, split by seconds.
    let across = usage(owner, user, today + DAY - 300, WINDOW, (0, 0, 1));
    publish_new(&m.bus, std::slice::from_ref(&across)).await;
    until(&m.db, &format!("ledger_entries WHERE sample_id = '{}'", across.sample_id), 2).await;
    let parts = texts(
        &m.db,
        &format!(
            "SELECT (day || ' ' || gpu_seconds || ' ' || gpu_cost) AS t FROM ledger_entries WHERE sample_id = '{}' ORDER BY day",
            across.sample_id
        ),
    )
    .await;
    let day = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().date_naive();
    // 350 an hour: 300 s is 29.1666…, 600 s 58.333….
    assert_eq!(
        parts,
        vec![format!("{} 300 29.166666666667", day(today)), format!("{} 600 58.333333333333", day(today + DAY)),]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_admin_records_prices_as_no_person_and_a_person_shaped_like_one_is_refused() {
    let m = start_money().await;
    let machine = Caller::machine_admin("https://tenant.example/", "ops-bot");
    let at = chrono::DateTime::from_timestamp(midnight_today() + 2 * DAY, 0).unwrap().to_rfc3339();
    let body = json!({"resource": "gpu", "unit_amount_decimal": "120", "effective_from": at});
    let (status, price) = m.call_with(Method::POST, "/api/admin/prices", Some(&machine), Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{price}");
    let by =
        texts(&m.db, "SELECT coalesce(created_by::text, 'nobody') AS t FROM prices WHERE unit_amount_decimal = 120")
            .await;
    assert_eq!(by, vec!["nobody"]);

    // A person's caller with the client subject and the admin role's shape, plus a user id, is
    // a person; without the admin role it is refused and records nothing.
    let mut pretender = Caller { roles: vec![Role::User], ..machine };
    pretender.user_id = Some(hopsbridge_domain::UserId::from_uuid(Uuid::now_v7()));
    let other = json!({"resource": "gpu", "unit_amount_decimal": "130", "effective_from": body["effective_from"]});
    let (status, refused) = m.call_with(Method::POST, "/api/admin/prices", Some(&pretender), Some(other)).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    let (_, all) = m.call(Method::GET, "/api/admin/prices", Some(&m.admin)).await;
    assert_eq!(all["prices"].as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_takes_the_price_and_the_mode_in_force_at_its_start() {
    let m = start_money().await;
    let (owner, _) = m.new_owner().await;
    // A price change at noon tomorrow: the 11:45 window keeps 35, the 12:00 one takes 40.
    let noon = midnight_today() + DAY + DAY / 2;
    let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
    let body = json!({"resource": "cpu", "unit_amount_decimal": "40", "effective_from": at(noon)});
    let (status, price) = m.call_with(Method::POST, "/api/admin/prices", Some(&m.admin), Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{price}");
    assert_eq!(price["unit_amount_decimal"], "40");
    let (status, again) = m.call_with(Method::POST, "/api/admin/prices", Some(&m.admin), Some(body)).await;
    assert_eq!((status, again["code"].as_str()), (StatusCode::CONFLICT, Some("price_exists")));
    let (status, pricing) = m.call(Method::GET, "/api/pricing", None).await;
    assert_eq!(status, 200, "public: {pricing}");
    assert_eq!(pricing["current"].as_array().unwrap().len(), 5, "{pricing}");
    assert_eq!(pricing["scheduled"][0]["unit_amount_decimal"], "40", "{pricing}");
    let (_, all) = m.call(Method::GET, "/api/admin/prices", Some(&m.admin)).await;
    assert_eq!(all["prices"].as_array().unwrap().len(), 6);

    let before = usage(owner, owner, noon - WINDOW, WINDOW, (1, 0, 0));
    let after = usage(owner, owner, noon, WINDOW, (1, 0, 0));
    publish_new(&m.bus, &[before.clone(), after.clone()]).await;
    until(&m.db, &format!("ledger_entries WHERE owner_id = '{owner}'"), 2).await;
    let costs = texts(
        &m.db,
        &format!("SELECT cpu_cost::text AS t FROM ledger_entries WHERE owner_id = '{owner}' ORDER BY window_start"),
    )
    .await;
    assert_eq!(costs, vec!["8.75", "10"]);

    // A mode change takes effect at the next window's start: the current window stays postpaid.
    let (status, changed) = m
        .call_with(
            Method::PUT,
            &format!("/api/admin/billing/{owner}/mode"),
            Some(&m.admin),
            Some(json!({"mode": "free"})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let from = chrono::DateTime::parse_from_rfc3339(changed["effective_from"].as_str().unwrap()).unwrap().timestamp();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(from, now - now.rem_euclid(WINDOW) + WINDOW, "{changed}");
    assert_eq!(changed["change"]["previous_mode"], "postpaid");
    let (_, same) = m
        .call_with(
            Method::PUT,
            &format!("/api/admin/billing/{owner}/mode"),
            Some(&m.admin),
            Some(json!({"mode": "free"})),
        )
        .await;
    assert_eq!(same["change"], Value::Null, "already scheduled: {same}");
    assert_eq!(m.outbox("BillingModeChanged").await, 1);
    let announced = published(&m.bus, &m.bus.subjects().event::<BillingModeChangedV1>()).await;
    let got = Envelope::decode(announced[0].payload.as_ref()).unwrap();
    let event = BillingModeChangedV1::decode(got.payload.as_slice()).unwrap();
    assert_eq!((event.mode.as_str(), event.effective_from_unix_seconds), ("free", from));
    let current = usage(owner, owner, from - WINDOW, WINDOW, (1, 0, 0));
    let next = usage(owner, owner, from, WINDOW, (1, 0, 0));
    publish_new(&m.bus, &[current.clone(), next.clone()]).await;
    until(&m.db, &format!("ledger_entries WHERE owner_id = '{owner}'"), 4).await;
    let mode_of = |s: &UsageRecordedV1| {
        format!("SELECT billing_mode AS t FROM ledger_entries WHERE sample_id = '{}'", s.sample_id)
    };
    assert_eq!(texts(&m.db, &mode_of(&current)).await, vec!["postpaid"]);
    assert_eq!(texts(&m.db, &mode_of(&next)).await, vec!["free"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_bought_through_checkout_are_granted_once_and_spent_window_by_window() {
    let m = start_money().await;
    let (owner, account) = m.new_owner().await;
    let me = owner_caller(owner);
    let (status, _) = m
        .call_with(
            Method::PUT,
            &format!("/api/admin/billing/{owner}/mode"),
            Some(&m.admin),
            Some(json!({"mode": "prepaid"})),
        )
        .await;
    assert_eq!(status, 200);
    m.deliver_webhooks();
    m.sim.set_webhook_faults(WebhookFaults { duplicate: true, out_of_order: true, ..WebhookFaults::default() });
    let (status, bought) =
        m.call_with(Method::POST, "/api/credits/purchase", Some(&me), Some(json!({"amount_minor": 1000}))).await;
    assert_eq!(status, 200, "{bought}");
    assert!(bought["url"].as_str().unwrap().contains("/c/pay/"), "{bought}");
    let session = m.sim.complete_checkout_session(bought["id"].as_str().unwrap()).unwrap();
    assert_eq!((session["mode"].as_str(), session["payment_status"].as_str()), (Some("payment"), Some("paid")));
    until(&m.db, "credit_grants", 1).await;
    // Both deliveries of the completion were answered before anything more is looked at.
    let delivered = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        m.sim.deliveries().iter().filter(|d| d.event_type == "checkout.session.completed" && d.succeeded).count() == 2
    })
    .await;
    assert!(delivered);
    // And Stripe delivering it again later changes nothing.
    let completed = m.sim.events().into_iter().find(|e| e["type"] == "checkout.session.completed").unwrap();
    let (status, dup) = m.webhook(&completed.to_string()).await;
    assert_eq!((status, dup["duplicate"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(count(&m.db, "credit_grants").await, 1);
    assert_eq!(
        texts(&m.db, "SELECT (category || ' ' || amount || ' ' || source) AS t FROM credit_grants").await,
        vec![format!("purchased 1000 checkout:{}", bought["id"].as_str().unwrap())]
    );
    // A promotional grant is spent first.
    let (status, promo) = m
        .call_with(
            Method::POST,
            &format!("/api/admin/billing/{owner}/credits"),
            Some(&m.admin),
            Some(json!({"amount_minor": 100})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{promo}");

    // Windows of one GPU (87.5 each) from the first prepaid window on, published in order.
    let now = chrono::Utc::now().timestamp();
    let first = now - now.rem_euclid(WINDOW) + WINDOW;
    let windows: Vec<_> = (0..14).map(|i| usage(owner, owner, first + i * WINDOW, WINDOW, (0, 0, 1))).collect();
    publish_new(&m.bus, &windows).await;
    until(&m.db, &format!("ledger_entries WHERE owner_id = '{owner}'"), 14).await;
    let paid = texts(
        &m.db,
        &format!("SELECT (credits_paid || ' ' || unpaid) AS t FROM ledger_entries WHERE owner_id = '{owner}' ORDER BY window_start"),
    )
    .await;
    let mut want: Vec<String> = (0..12).map(|_| "87.5 0".to_owned()).collect();
    want.push("50 37.5".to_owned());
    want.push("0 87.5".to_owned());
    assert_eq!(paid, want);
    // The promotional grant paid the first window and the start of the second.
    let promo_paid = texts(
        &m.db,
        &format!(
            "SELECT amount::text AS t FROM credit_deductions WHERE grant_id = '{}' ORDER BY window_start",
            promo["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(promo_paid, vec!["87.5", "12.5"]);
    assert_eq!(m.outbox("CreditsExhausted").await, 1, "exhausted once");
    // Low balance: 1000 (at 925), 500 (at 487.5) and 0 each mailed once.
    let mails = "SELECT dedup_key AS t FROM mail_outbox WHERE kind = 'billing.low_balance' ORDER BY dedup_key";
    assert_eq!(
        texts(&m.db, mails).await,
        vec![
            format!("billing.low_balance:{owner}:0:1"),
            format!("billing.low_balance:{owner}:1000:1"),
            format!("billing.low_balance:{owner}:500:1"),
        ]
    );

    // A card and another grant: a window beyond the credit overflows to postpaid, exactly.
    let customer = account.stripe_customer_id.unwrap();
    let attached = json!({"id": format!("evt_{}", Uuid::new_v4().simple()), "object": "event", "type": "payment_method.attached",
        "created": chrono::Utc::now().timestamp(), "data": {"object": {"id": "pm_money", "object": "payment_method",
        "customer": customer, "card": {"brand": "visa", "last4": "4242", "exp_month": 1, "exp_year": 2031}}}});
    assert_eq!(m.webhook(&attached.to_string()).await.0, 200);
    let (status, _) = m
        .call_with(
            Method::POST,
            &format!("/api/admin/billing/{owner}/credits"),
            Some(&m.admin),
            Some(json!({"amount_minor": 100})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let more: Vec<_> = (14..16).map(|i| usage(owner, owner, first + i * WINDOW, WINDOW, (0, 0, 1))).collect();
    publish_new(&m.bus, &more).await;
    until(&m.db, &format!("ledger_entries WHERE owner_id = '{owner}'"), 16).await;
    let last = texts(
        &m.db,
        &format!(
            "SELECT (credits_paid || ' ' || unpaid || ' ' || gpu_over_quanta) AS t FROM ledger_entries WHERE sample_id = '{}'",
            more[1].sample_id
        ),
    )
    .await;
    // 12.5 left of 87.5: q_over = ceil(0.25 h × 75 / 87.5) = 0.214285715 h, billed 75.00000025.
    assert_eq!(last, vec!["12.49999975 0 214285715"]);
    assert_eq!(m.outbox("CreditsExhausted").await, 1, "a card on file: no exhaustion");
    let (status, credits) = m.call(Method::GET, "/api/credits", Some(&me)).await;
    assert_eq!(status, 200, "{credits}");
    assert_eq!(credits["balance"], "0.00000025", "{credits}");
    assert_eq!(credits["grants"].as_array().unwrap().len(), 3);
    assert_eq!(credits["total_deductions"], 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_sees_usage_costs_the_upcoming_invoice_and_cap_alerts_once_a_month() {
    let m = start_money().await;
    let (owner, _) = m.new_owner().await;
    let member = Uuid::now_v7();
    let me = owner_caller(owner);
    let (status, cap) =
        m.call_with(Method::PUT, "/api/billing/cap", Some(&me), Some(json!({"monthly_cap_minor": 100}))).await;
    assert_eq!((status, cap["monthly_cap_minor"].as_i64()), (StatusCode::OK, Some(100)));
    let today = midnight_today();
    // 87.5 (80 %), then 175 (90 and 100 %), then 262.5 (nothing new).
    for (i, who) in [owner, member, owner].into_iter().enumerate() {
        let w = usage(owner, who, today + i64::try_from(i).unwrap() * WINDOW, WINDOW, (0, 0, 1));
        publish_new(&m.bus, &[w]).await;
        until(&m.db, &format!("ledger_entries WHERE owner_id = '{owner}'"), i64::try_from(i).unwrap() + 1).await;
    }
    let mails =
        texts(&m.db, "SELECT dedup_key AS t FROM mail_outbox WHERE kind = 'billing.spending_cap' ORDER BY dedup_key")
            .await;
    let month = chrono::DateTime::from_timestamp(today, 0).unwrap().format("%Y-%m").to_string();
    assert_eq!(mails, [100, 80, 90].map(|p| format!("billing.cap:{owner}:{month}:{p}")).to_vec());
    assert_eq!(count(&m.db, "mail_outbox WHERE kind = 'admin.alert'").await, 1, "admins at 100 %");

    let (status, view) = m.call(Method::GET, "/api/billing/usage", Some(&me)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["month_to_date"]["cost"], "262.5", "{view}");
    assert_eq!(view["month_to_date"]["cost_minor"], 263);
    let lines = view["lines"].as_array().unwrap();
    let by_member: Vec<_> = lines.iter().filter(|l| l["user_id"] == member.to_string()).collect();
    assert_eq!(by_member.len(), 1, "{view}");
    assert_eq!((by_member[0]["quantity"].as_str(), by_member[0]["cost"].as_str()), (Some("0.25"), Some("87.5")));
    // The upcoming invoice: 0.75 GPU-hours quantised once a day, times 350, rounded once.
    let invoice = &view["upcoming_invoice"];
    assert_eq!(invoice["lines"].as_array().unwrap().len(), 1, "{invoice}");
    assert_eq!(invoice["lines"][0]["quantity"], "0.750000000");
    assert_eq!(invoice["total_minor"], 263);
    let day = chrono::DateTime::from_timestamp(today, 0).unwrap().date_naive();
    let (status, samples) = m.call(Method::GET, &format!("/api/billing/usage/samples?day={day}"), Some(&me)).await;
    assert_eq!(status, 200, "{samples}");
    assert_eq!(samples["samples"].as_array().unwrap().len(), 3);
    assert_eq!(samples["samples"][0]["gpu_hours"], "0.25");
    // Narrowed to one person of the team (the member has no billing account: their entries
    // make them the owner's), or to one source.
    let of = |query: String| {
        let me = me.clone();
        let m = &m;
        async move { m.call(Method::GET, &format!("/api/billing/usage/samples?day={day}&{query}"), Some(&me)).await }
    };
    let users = |v: &Value| -> Vec<String> {
        v["samples"].as_array().unwrap().iter().map(|s| s["user_id"].as_str().unwrap().to_owned()).collect()
    };
    let (status, theirs) = of(format!("user_id={member}")).await;
    assert_eq!((status, users(&theirs)), (StatusCode::OK, vec![member.to_string()]), "{theirs}");
    let (status, mine) = of(format!("user_id={owner}")).await;
    assert_eq!((status, users(&mine)), (StatusCode::OK, vec![owner.to_string(); 2]), "{mine}");
    let (status, pods) = of("source=usage".to_owned()).await;
    assert_eq!((status, pods["samples"].as_array().unwrap().len()), (StatusCode::OK, 3));
    let (status, stored) = of(format!("source=storage&user_id={member}")).await;
    assert_eq!((status, stored["samples"].clone()), (StatusCode::OK, json!([])));
    let (status, nobody) = of(format!("user_id={}", Uuid::now_v7())).await;
    assert_eq!((status, nobody["code"].as_str()), (StatusCode::NOT_FOUND, Some("person_not_found")));
    let (status, bad) = of("source=disk".to_owned()).await;
    assert_eq!((status, bad["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")));
    // Another owner sees none of it, and the member is not theirs.
    let (other, _) = m.new_owner().await;
    let (_, theirs) =
        m.call(Method::GET, &format!("/api/billing/usage/samples?day={day}"), Some(&owner_caller(other))).await;
    assert_eq!(theirs["samples"], json!([]));
    let path = format!("/api/billing/usage/samples?day={day}&user_id={member}");
    let (status, _) = m.call(Method::GET, &path, Some(&owner_caller(other))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_samples_narrow_to_one_project_or_to_none_and_page_under_it() {
    let m = start_money().await;
    let (owner, _) = m.new_owner().await;
    let me = owner_caller(owner);
    let today = midnight_today();
    // One day's windows, interleaved: project 7 three times, project 8 once, and twice a
    // namespace of no known project (metering's project id 0).
    let projects = [7, 8, 0, 7, 0, 7];
    let events: Vec<_> = projects
        .iter()
        .enumerate()
        .map(|(i, project)| {
            let mut e = usage(owner, owner, today + i64::try_from(i).unwrap() * WINDOW, WINDOW, (1, 0, 0));
            e.project_id = *project;
            e
        })
        .collect();
    publish_new(&m.bus, &events).await;
    until(&m.db, &format!("ledger_entries WHERE owner_id = '{owner}'"), 6).await;
    let of = |project: i64| -> Vec<String> {
        events.iter().filter(|e| e.project_id == project).map(|e| e.sample_id.clone()).collect()
    };
    let day = chrono::DateTime::from_timestamp(today, 0).unwrap().date_naive();
    let get = |query: String| {
        let me = me.clone();
        let m = &m;
        async move { m.call(Method::GET, &format!("/api/billing/usage/samples?day={day}&{query}"), Some(&me)).await }
    };
    let ids = |v: &Value| -> Vec<String> {
        v["samples"].as_array().unwrap().iter().map(|s| s["sample_id"].as_str().unwrap().to_owned()).collect()
    };
    let (status, all) = get("limit=1000".to_owned()).await;
    assert_eq!((status, ids(&all).len()), (StatusCode::OK, 6), "{all}");
    // One project's entries, exactly; those of no known project, exactly.
    let (status, seven) = get("project_id=7".to_owned()).await;
    assert_eq!((status, ids(&seven)), (StatusCode::OK, of(7)), "{seven}");
    assert_eq!(of(7).len(), 3);
    assert!(seven["samples"].as_array().unwrap().iter().all(|s| s["project_id"] == 7), "{seven}");
    let (status, eight) = get("project_id=8".to_owned()).await;
    assert_eq!((status, ids(&eight)), (StatusCode::OK, of(8)), "{eight}");
    let (status, none) = get("project_id=none".to_owned()).await;
    assert_eq!((status, ids(&none)), (StatusCode::OK, of(0)), "{none}");
    assert_eq!(of(0).len(), 2);
    assert!(none["samples"].as_array().unwrap().iter().all(|s| s["project_id"].is_null()), "{none}");
    let (status, unused) = get("project_id=9".to_owned()).await;
    assert_eq!((status, unused["samples"].clone(), unused["next"].clone()), (StatusCode::OK, json!([]), Value::Null));
    // The filter goes with the others: project 7's storage is none of it.
    let (status, stored) = get("project_id=7&source=storage".to_owned()).await;
    assert_eq!((status, stored["samples"].clone()), (StatusCode::OK, json!([])), "{stored}");
    let (status, mine) = get(format!("project_id=7&user_id={owner}&source=usage")).await;
    assert_eq!((status, ids(&mine)), (StatusCode::OK, of(7)), "{mine}");

    // One at a time under the filter, the cursor goes through the same entries and no others.
    for (query, want) in [("project_id=7", of(7)), ("project_id=none", of(0))] {
        let (mut paged, mut after, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let cursor = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
            let (status, page) = get(format!("{query}&limit=1{cursor}")).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert!(ids(&page).len() <= 1, "{page}");
            paged.extend(ids(&page));
            pages += 1;
            assert!(pages <= 10, "{query}: the cursor does not end: {paged:?}");
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(paged, want, "{query}");
        // By page number (`offset`), the same entries in the same order, and then none.
        let mut numbered = Vec::new();
        for offset in 0..=want.len() {
            let (status, page) = get(format!("{query}&limit=1&offset={offset}")).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            numbered.extend(ids(&page));
        }
        assert_eq!(numbered, want, "{query} by offset");
    }
    // An offset out of range, or with a cursor, is refused.
    let (_, first) = get("limit=1".to_owned()).await;
    let cursor = first["next"].as_str().unwrap().to_owned();
    for bad in
        ["offset=-1".to_owned(), "offset=1000001".to_owned(), "offset=x".to_owned(), format!("offset=0&after={cursor}")]
    {
        let (status, body) = get(bad.clone()).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{bad}: {body}");
    }

    // Anything but a positive integer or `none` is refused, saying what is expected.
    for bad in ["seven", "", "0", "-7", "None", "7.0", "null"] {
        let (status, body) = get(format!("project_id={bad}")).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{bad}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains("project_id"), "{bad}: {body}");
    }
}

/// Counts of every table the money routes write.
async fn footprint(db: &TestDb) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in
        ["prices", "billing_modes", "credit_purchases", "credit_grants", "spending_caps", "outbox", "backfills"]
    {
        counts.push(count(db, table).await);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_code_and_changes_nothing_and_members_are_refused() {
    let m = start_money().await;
    let (owner, _) = m.new_owner().await;
    let me = owner_caller(owner);
    let before = footprint(&m.db).await;
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(60)).to_rfc3339();
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(2)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::TimeDelta::seconds(60)).to_rfc3339();
    let admin = Some(&m.admin);
    let cases: Vec<(Method, String, Option<&Caller>, Value, &str)> = vec![
        (
            Method::POST,
            "/api/admin/prices".into(),
            admin,
            json!({"resource": "disk", "unit_amount_decimal": "1", "effective_from": later}),
            "unknown_resource",
        ),
        (
            Method::POST,
            "/api/admin/prices".into(),
            admin,
            json!({"resource": "cpu", "unit_amount_decimal": "-1", "effective_from": later}),
            "invalid_price",
        ),
        (
            Method::POST,
            "/api/admin/prices".into(),
            admin,
            json!({"resource": "cpu", "unit_amount_decimal": 0.35, "effective_from": later}),
            "invalid_price",
        ),
        (
            Method::POST,
            "/api/admin/prices".into(),
            admin,
            json!({"resource": "cpu", "unit_amount_decimal": "1e3", "effective_from": later}),
            "invalid_price",
        ),
        (
            Method::POST,
            "/api/admin/prices".into(),
            admin,
            json!({"resource": "cpu", "unit_amount_decimal": "0.0000000000001", "effective_from": later}),
            "invalid_price",
        ),
        (
            Method::POST,
            "/api/admin/prices".into(),
            admin,
            json!({"resource": "cpu", "unit_amount_decimal": "1", "effective_from": soon}),
            "price_too_soon",
        ),
        (Method::PUT, "/api/billing/cap".into(), Some(&me), json!({"monthly_cap_minor": -5}), "invalid_cap"),
        (Method::PUT, "/api/billing/cap".into(), Some(&me), json!({"monthly_cap_minor": 0}), "invalid_cap"),
        (
            Method::PUT,
            "/api/billing/cap".into(),
            Some(&me),
            json!({"monthly_cap_minor": 1_000_000_000_000_i64}),
            "invalid_cap",
        ),
        (Method::PUT, "/api/billing/cap".into(), Some(&me), json!({"monthly_cap_minor": 12.5}), "invalid_cap"),
        (Method::PUT, "/api/billing/cap".into(), Some(&me), json!({"monthly_cap_minor": "100"}), "invalid_cap"),
        (Method::POST, "/api/credits/purchase".into(), Some(&me), json!({"amount_minor": 0}), "invalid_amount"),
        (Method::POST, "/api/credits/purchase".into(), Some(&me), json!({"amount_minor": -100}), "invalid_amount"),
        (Method::POST, "/api/credits/purchase".into(), Some(&me), json!({"amount_minor": 499}), "invalid_amount"),
        (Method::POST, "/api/credits/purchase".into(), Some(&me), json!({"amount_minor": 1_000_001}), "invalid_amount"),
        (Method::POST, "/api/credits/purchase".into(), Some(&me), json!({"amount_minor": 1000.5}), "invalid_amount"),
        (
            Method::POST,
            format!("/api/admin/billing/{owner}/credits"),
            admin,
            json!({"amount_minor": 0}),
            "invalid_amount",
        ),
        (
            Method::POST,
            format!("/api/admin/billing/{owner}/credits"),
            admin,
            json!({"amount_minor": 10, "priority": -1}),
            "invalid_grant",
        ),
        (
            Method::POST,
            format!("/api/admin/billing/{owner}/credits"),
            admin,
            json!({"amount_minor": 10, "expires_at": past}),
            "invalid_grant",
        ),
        (Method::PUT, format!("/api/admin/billing/{owner}/mode"), admin, json!({"mode": "gratis"}), "invalid_mode"),
        (
            Method::PUT,
            format!("/api/admin/billing/{}/mode", Uuid::now_v7()),
            admin,
            json!({"mode": "free"}),
            "billing_account_not_found",
        ),
        (
            Method::POST,
            format!("/api/admin/billing/{}/credits", Uuid::now_v7()),
            admin,
            json!({"amount_minor": 10}),
            "billing_account_not_found",
        ),
        (
            Method::POST,
            "/api/admin/billing/backfill".into(),
            admin,
            json!({"from": later, "to": soon}),
            "invalid_range",
        ),
    ];
    for (method, path, who, body, code) in cases {
        let (status, answer) = m.call_with(method.clone(), &path, who, Some(body.clone())).await;
        assert_eq!(answer["code"].as_str(), Some(code), "{method} {path} {body}: {status} {answer}");
        assert!(status.is_client_error(), "{status}");
    }
    let (status, answer) = m.call(Method::GET, "/api/billing/usage?from=2026-12-09&to=2026-12-01", Some(&me)).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_range")));
    assert_eq!(footprint(&m.db).await, before, "nothing changed");

    // Members and anyone but the owner are refused every owner route; all but admins the admin routes.
    let owner_routes = [
        (Method::POST, "/api/credits/purchase", Some(json!({"amount_minor": 1000}))),
        (Method::GET, "/api/credits", None),
        (Method::PUT, "/api/billing/cap", Some(json!({"monthly_cap_minor": 100}))),
        (Method::GET, "/api/billing/usage", None),
        (Method::GET, "/api/billing/usage/samples?day=2026-12-01", None),
    ];
    let admin_routes = [
        (Method::GET, "/api/admin/prices".to_owned()),
        (Method::POST, "/api/admin/prices".to_owned()),
        (Method::PUT, format!("/api/admin/billing/{owner}/mode")),
        (Method::POST, format!("/api/admin/billing/{owner}/credits")),
        (Method::POST, "/api/admin/billing/backfill".to_owned()),
        (Method::GET, "/api/admin/billing/backfills".to_owned()),
        (Method::POST, "/api/admin/billing/reconcile".to_owned()),
        (Method::GET, "/api/admin/billing/findings".to_owned()),
    ];
    for roles in [vec![Role::User, Role::Member], vec![Role::User]] {
        for (method, path, body) in &owner_routes {
            let (status, answer) = m.call_with(method.clone(), path, Some(&caller(owner, &roles)), body.clone()).await;
            assert_eq!(
                (status, answer["code"].as_str()),
                (StatusCode::FORBIDDEN, Some("owner_only")),
                "{path} {roles:?}"
            );
        }
    }
    let bodies = [
        None,
        Some(json!({"resource": "cpu", "unit_amount_decimal": "1", "effective_from": later})),
        Some(json!({"mode": "free"})),
        Some(json!({"amount_minor": 10})),
        Some(json!({"from": soon, "to": later})),
        None,
        None,
        None,
    ];
    for ((method, path), body) in admin_routes.iter().zip(bodies) {
        let (status, answer) = m.call_with(method.clone(), path, Some(&me), body).await;
        assert_eq!((status, answer["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")), "{path}");
        let (status, _) = m.call(method.clone(), path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(footprint(&m.db).await, before, "nothing changed");
}
