//! The end of a billing period on the World's clock ([`close_period`]), and billing killed at
//! a pinned point on the way ([`PinnedKill`]).

use super::{Kind, Owner, REPORTED_BY, at, customers};
use crate::Platform;
use chrono::{DateTime, Utc};
use hopsbridge_contracts::Service;
use hopsbridge_sandbox::stripe::HoldStatus;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Stripe's path for meter events.
pub const METER_EVENTS: &str = "/v1/billing/meter_events";

/// billing killed at a pinned point: while Stripe holds its answer to a meter event it has
/// counted.
#[derive(Debug)]
pub struct PinnedKill {
    /// The sandbox Stripe's hold.
    pub hold: String,
    /// Whether billing was killed there.
    pub done: bool,
}

/// billing's reports whose outcome it does not know.
pub async fn pending_reports(platform: &Platform) -> i64 {
    let found =
        platform.rows("billing", "SELECT count(*)::bigint AS n FROM meter_reports WHERE state = 'pending'").await;
    found[0]["n"].as_i64().unwrap()
}

/// Once Stripe holds the pinned meter event: billing killed, the answer released (to nobody),
/// billing started again at once; it must settle what it sent and did not record.
pub async fn kill_when_held(platform: &Platform, pinned: Option<&mut PinnedKill>) {
    let Some(k) = pinned else { return };
    if k.done || !matches!(platform.world.stripe.hold_status(&k.hold), Some(HoldStatus::Held { .. })) {
        return;
    }
    platform.kill_service(Service::Billing);
    platform.world.stripe.release(&k.hold).unwrap();
    let pending = pending_reports(platform).await;
    eprintln!(
        "billing killed while Stripe held its answer to a meter event: {pending} reports pending, {} meter events in",
        platform.world.stripe.meter_events().len()
    );
    assert!(pending > 0, "billing recorded the held report's outcome without its answer");
    platform.start_service(Service::Billing);
    k.done = true;
}

/// Ends the owners' billing period at `end` on the World's clock, as a live reporter lives
/// it: the clock stands [`REPORTED_BY`] after the end (past Stripe's `invoice.created`, on
/// which billing reports the last day at once, and the day's close) while billing reports
/// every closed day it has not (for at most a minute plus a twelfth of a second per
/// owner-day-resource of `days` days: test mode's meter event limit, twice over), billing
/// killed there when `pinned` holds; then an hour and 30 seconds after it, when the sandbox's
/// Stripe finalises the period's invoices from its meter totals. Holding the clock stands in
/// for the hour a live reporter has: its pace is bound to real time (Stripe's rate limits).
pub async fn close_period(
    platform: &Platform,
    owners: &[Owner],
    end: DateTime<Utc>,
    days: u64,
    mut pinned: Option<&mut PinnedKill>,
) {
    let world = &platform.world;
    let customers = customers(platform).await;
    let billed: BTreeSet<String> = owners
        .iter()
        .filter(|o| o.kind != Kind::Free && o.kind != Kind::Prepaid)
        .filter_map(|o| customers.get(&o.person.user_id.to_string()).cloned())
        .collect();
    world.set_time(at(end, REPORTED_BY));
    let last_day = (end.timestamp() - 86_400, end.timestamp());
    let reported = |events: &[Value]| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| e["timestamp"].as_i64().is_some_and(|t| t >= last_day.0 && t < last_day.1))
            .filter_map(|e| e["payload"]["stripe_customer_id"].as_str().map(str::to_owned))
            .collect()
    };
    let ceiling = Duration::from_secs(60 + u64::try_from(billed.len()).unwrap() * days * 6 / 12);
    let wait_start = Instant::now();
    let (mut count, mut steady_since) = (0, Instant::now());
    loop {
        kill_when_held(platform, pinned.as_deref_mut()).await;
        let events = world.stripe.meter_events();
        let seen = reported(&events);
        if events.len() != count {
            (count, steady_since) = (events.len(), Instant::now());
        }
        let killed = pinned.as_ref().is_none_or(|k| k.done);
        let done = killed
            && billed.is_subset(&seen)
            && steady_since.elapsed() > Duration::from_secs(5)
            && pending_reports(platform).await == 0;
        if done || wait_start.elapsed() > ceiling {
            eprintln!(
                "last day reported for {} of {} owners, {count} meter events, after {:?}",
                seen.len(),
                billed.len(),
                wait_start.elapsed()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(k) = &pinned {
        assert!(k.done, "Stripe never held the meter event billing was to be killed at");
    }
    world.stripe.set_meter_event_rate_limit(Some(25));
    // An hour after invoice.created the period's invoices are finalised.
    world.set_time(at(end, 3600 + 30));
}
