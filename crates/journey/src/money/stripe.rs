//! Stripe's side, read back: the sandbox's Stripe API read as billing's key, each owner's
//! Stripe customer as billing recorded it, and Stripe's meters with their prices.

use super::{PATIENCE, fixed, text};
use crate::{Platform, wait_for};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The Stripe API of the sandbox, read as billing's key.
pub async fn stripe_list(platform: &Platform, path: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let joiner = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{}/v1/{path}{joiner}limit=100", platform.world.stripe.url());
        if let Some(a) = &after {
            let _ = write!(url, "&starting_after={a}");
        }
        // Stripe may be failing requests (the faults): read until it answers.
        let page: Value = wait_for("a page of Stripe's list", PATIENCE, || async {
            let answer = http.get(&url).bearer_auth(platform.world.stripe.secret_key()).send().await.ok()?;
            if !answer.status().is_success() {
                return None;
            }
            answer.json().await.ok()
        })
        .await;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        after = data.last().and_then(|d| d["id"].as_str()).map(str::to_owned);
        all.extend(data);
        if page["has_more"] != true || after.is_none() {
            return all;
        }
    }
}

/// Each owner's Stripe customer as billing recorded it: user id → customer id.
pub async fn customers(platform: &Platform) -> HashMap<String, String> {
    platform
        .rows("billing", "SELECT user_id::text AS u, stripe_customer_id AS c FROM accounts")
        .await
        .iter()
        .filter_map(|r| Some((text(r, "u"), r["c"].as_str()?.to_owned())))
        .collect()
}

/// Stripe's meters: (id, event name, the unit amount (10^-12) of the price on it).
pub async fn meters(platform: &Platform) -> Vec<(String, String, i128)> {
    let meters: HashMap<String, String> =
        stripe_list(platform, "billing/meters").await.iter().map(|m| (text(m, "id"), text(m, "event_name"))).collect();
    stripe_list(platform, "prices")
        .await
        .iter()
        .filter_map(|p| {
            let meter = p["recurring"]["meter"].as_str()?;
            let name = meters.get(meter)?.clone();
            Some((meter.to_owned(), name, fixed(p["unit_amount_decimal"].as_str()?, 12)))
        })
        .collect()
}
