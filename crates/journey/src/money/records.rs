//! What metering and billing recorded, read back: metering's attributed samples, billing's
//! ledger entries and its price book (and the price in force at an instant).

use super::{fixed, int, text};
use crate::Platform;
use chrono::DateTime;
use serde_json::Value;
use std::collections::HashMap;

/// One of metering's attributed samples, of usage or of storage.
#[derive(Clone, Debug)]
pub struct Sample {
    pub id: String,
    pub user: String,
    pub owner: String,
    pub start: i64,
    pub end: i64,
    /// In [`RESOURCES`](super::RESOURCES) order.
    pub n: [i128; 5],
    pub storage: bool,
}

/// metering's attributed usage and storage samples whose window starts before `before`.
pub async fn samples(platform: &Platform, before: i64) -> Vec<Sample> {
    let mut all = usage_samples(platform, before).await;
    let sql = format!(
        "SELECT id::text AS id, user_id::text AS u, owner_user_id::text AS o,
                extract(epoch FROM window_start)::bigint AS ws, extract(epoch FROM window_end)::bigint AS we,
                offline_byte_seconds AS so, online_byte_seconds AS sn
         FROM storage_samples WHERE owner_user_id IS NOT NULL AND window_start < to_timestamp({before})"
    );
    all.extend(platform.rows("metering", &sql).await.iter().map(|r| Sample {
        id: text(r, "id"),
        user: text(r, "u"),
        owner: text(r, "o"),
        start: r["ws"].as_i64().unwrap(),
        end: r["we"].as_i64().unwrap(),
        n: [0, 0, 0, int(r, "so"), int(r, "sn")],
        storage: true,
    }));
    all
}

pub async fn usage_samples(platform: &Platform, before: i64) -> Vec<Sample> {
    let sql = format!(
        "SELECT id::text AS id, user_id::text AS u, owner_user_id::text AS o,
                extract(epoch FROM window_start)::bigint AS ws, extract(epoch FROM window_end)::bigint AS we,
                cpu_nanocore_seconds AS c, memory_byte_seconds AS m, gpu_seconds AS g
         FROM samples WHERE attribution = 'attributed' AND window_start < to_timestamp({before})"
    );
    platform
        .rows("metering", &sql)
        .await
        .iter()
        .map(|r| Sample {
            id: text(r, "id"),
            user: text(r, "u"),
            owner: text(r, "o"),
            start: r["ws"].as_i64().unwrap(),
            end: r["we"].as_i64().unwrap(),
            n: [int(r, "c"), int(r, "m"), int(r, "g"), 0, 0],
            storage: false,
        })
        .collect()
}

/// One of billing's ledger entries.
#[derive(Clone, Debug)]
pub struct Entry {
    pub day: String,
    pub owner: String,
    pub start: i64,
    pub end: i64,
    pub n: [i128; 5],
    pub mode: String,
    pub price: [String; 5],
    /// 10^-12 minor units.
    pub cost: [i128; 5],
    pub paid: i128,
    pub unpaid: i128,
    /// 10^-9 billed units.
    pub over: [i128; 5],
}

pub async fn ledger(platform: &Platform, before: i64) -> HashMap<String, Vec<Entry>> {
    let sql = format!(
        "SELECT sample_id::text AS id, day::text AS day, owner_id::text AS o,
                extract(epoch FROM window_start)::bigint AS ws, extract(epoch FROM window_end)::bigint AS we,
                cpu_nanocore_seconds AS c, memory_byte_seconds AS m, gpu_seconds AS g,
                storage_offline_byte_seconds AS so, storage_online_byte_seconds AS sn, billing_mode AS mode,
                cpu_price_id::text AS cp, memory_price_id::text AS mp, gpu_price_id::text AS gp,
                coalesce(storage_offline_price_id::text, '') AS sop, coalesce(storage_online_price_id::text, '') AS snp,
                cpu_cost::text AS cc, memory_cost::text AS mc, gpu_cost::text AS gc,
                storage_offline_cost::text AS soc, storage_online_cost::text AS snc,
                credits_paid::text AS paid, unpaid::text AS unpaid,
                cpu_over_quanta AS co, memory_over_quanta AS mo, gpu_over_quanta AS go,
                storage_offline_over_quanta AS soo, storage_online_over_quanta AS sno
         FROM ledger_entries WHERE window_start < to_timestamp({before})"
    );
    let money = |r: &Value, k: &str| fixed(&text(r, k), 12);
    let mut by_sample: HashMap<String, Vec<Entry>> = HashMap::new();
    for r in platform.rows("billing", &sql).await {
        by_sample.entry(text(&r, "id")).or_default().push(Entry {
            day: text(&r, "day"),
            owner: text(&r, "o"),
            start: r["ws"].as_i64().unwrap(),
            end: r["we"].as_i64().unwrap(),
            n: [int(&r, "c"), int(&r, "m"), int(&r, "g"), int(&r, "so"), int(&r, "sn")],
            mode: text(&r, "mode"),
            price: [text(&r, "cp"), text(&r, "mp"), text(&r, "gp"), text(&r, "sop"), text(&r, "snp")],
            cost: [money(&r, "cc"), money(&r, "mc"), money(&r, "gc"), money(&r, "soc"), money(&r, "snc")],
            paid: money(&r, "paid"),
            unpaid: money(&r, "unpaid"),
            over: [int(&r, "co"), int(&r, "mo"), int(&r, "go"), int(&r, "soo"), int(&r, "sno")],
        });
    }
    by_sample
}

/// A version of the price book.
#[derive(Clone, Debug)]
pub struct Price {
    pub id: String,
    pub resource: String,
    /// 10^-12 minor units per billed unit.
    pub amount: i128,
    pub from: i64,
}

pub async fn price_book(platform: &Platform) -> Vec<Price> {
    let (status, list) = platform.call("GET", "/api/admin/prices", &platform.admin_token, None).await;
    assert_eq!(status, 200, "{list}");
    list["prices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Price {
            id: text(p, "id"),
            resource: text(p, "resource"),
            amount: fixed(&text(p, "unit_amount_decimal"), 12),
            from: DateTime::parse_from_rfc3339(&text(p, "effective_from")).unwrap().timestamp(),
        })
        .collect()
}

pub fn in_force<'a>(book: &'a [Price], resource: &str, t: i64) -> &'a Price {
    book.iter()
        .filter(|p| p.resource == resource && p.from <= t)
        .max_by_key(|p| p.from)
        .unwrap_or_else(|| panic!("no {resource} price at {t}"))
}
