//! The money proof's audit (`tests/money.rs`, decision 0042), for any end-to-end run to end
//! with (the chaos campaign's is to, decision 0066): billing settings that tell every price
//! apart, the end of a billing period on the World's clock ([`close_period`]: the last day
//! reported while the invoices are drafts, then the invoices finalised), and per owner
//! ([`audit`]):
//!
//! - billing's ledger holds exactly metering's attributed usage and storage samples of the
//!   period, once each, with the mode and the price in force at each window's start and each
//!   window's cost `n × price / per_unit` rounded half up to 12 places;
//! - the invoice the sandbox's Stripe computed has lines equal, to the cent, to Σ over days of
//!   the day's quantity quantised to 9 places half up × the price, rounded half up once;
//! - the owner's view of the period (`GET /api/billing/usage`) shows the ledger's cost and
//!   credits; prepaid credit deductions equal the cost they paid;
//! - each owner-day-price is reported once: Stripe's meter events, Stripe's meter event
//!   summaries and billing's accepted `meter_reports` each add up to the day's quantity, and no
//!   meter event identifier is sent twice.
//!
//! Every amount is computed here, apart from billing, in integers.

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test harness: it fails the test loudly and prints what it found"
)]

mod arithmetic;
mod close;
mod proof;
mod records;
mod stripe;

pub use arithmetic::{
    at, ceil_div, cents, day_of, day_start, decimal, fixed, half_up, int, next_month, per_unit, text,
};
pub use close::{METER_EVENTS, PinnedKill, close_period, kill_when_held, pending_reports};
pub use proof::{Findings, PROBLEMS, Period, Row, audit};
pub use records::{Entry, Price, Sample, in_force, ledger, price_book, samples, usage_samples};
pub use stripe::{customers, meters, stripe_list};

use crate::Person;
use hopsbridge_contracts::Service;
use std::time::Duration;

/// How long an effect may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(240);
/// 10^12 and 10^9 and 10^21: money in 12 places of the minor unit, quantities in 9 places.
pub const E12: i128 = 1_000_000_000_000;
/// 10^9.
pub const E9: i128 = 1_000_000_000;
/// 10^21.
pub const E21: i128 = E12 * E9;
/// The billed resources, in the order of [`Sample::n`].
pub const RESOURCES: [&str; 5] = ["cpu", "memory", "gpu", "storage_offline", "storage_online"];
/// Credits bought by a prepaid owner (plenty) and a hybrid one (run out), minor units.
pub const PREPAID_CREDITS: i64 = 100_000;
/// See [`PREPAID_CREDITS`].
pub const HYBRID_CREDITS: i64 = 500;
/// Seconds after the period's end by which billing has reported the period's last day: it
/// reports a day 30 minutes after it ends (`reporting.close_after_secs`); Stripe finalises the
/// period's invoices an hour after it ends.
pub const REPORTED_BY: i64 = 40 * 60;
/// The storage prices of the audited runs: unit amounts no other price has, since invoice
/// lines and reports are told apart by unit amount (the defaults are memory's 3.5 and CPU's 35).
pub const STORAGE_OFFLINE_PRICE: &str = "2.75";
/// See [`STORAGE_OFFLINE_PRICE`].
pub const STORAGE_ONLINE_PRICE: &str = "36.25";

/// billing's settings of an audited run: storage prices of their own.
#[must_use]
pub fn settings() -> Vec<(Service, &'static str, String)> {
    vec![
        (Service::Billing, "rates.storage_offline.unit_amount_decimal", STORAGE_OFFLINE_PRICE.to_owned()),
        (Service::Billing, "rates.storage_online.unit_amount_decimal", STORAGE_ONLINE_PRICE.to_owned()),
    ]
}

/// What kind of owner: how they pay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Postpaid with a card.
    Postpaid,
    /// Prepaid with plenty of credits bought through Checkout.
    Prepaid,
    /// Prepaid with a card whose credits run out (the overflow billed postpaid).
    Hybrid,
    /// Postpaid, with a team member whose usage rolls up to them.
    TeamOwner,
    /// Free.
    Free,
}

impl Kind {
    /// Its name in the table.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Postpaid => "postpaid",
            Self::Prepaid => "prepaid",
            Self::Hybrid => "hybrid",
            Self::TeamOwner => "team",
            Self::Free => "free",
        }
    }
    /// The billing mode an admin sets (none: postpaid, the default).
    #[must_use]
    pub fn mode(self) -> Option<&'static str> {
        match self {
            Self::Prepaid | Self::Hybrid => Some("prepaid"),
            Self::Free => Some("free"),
            Self::Postpaid | Self::TeamOwner => None,
        }
    }
    /// Credits bought, minor units.
    #[must_use]
    pub fn credits(self) -> Option<i64> {
        match self {
            Self::Prepaid => Some(PREPAID_CREDITS),
            Self::Hybrid => Some(HYBRID_CREDITS),
            _ => None,
        }
    }
}

/// An owner of the run.
#[derive(Debug)]
pub struct Owner {
    pub kind: Kind,
    pub username: String,
    pub person: Person,
    pub member: Option<Person>,
    /// From when their mode applies (none: postpaid from the start).
    pub mode_from: Option<i64>,
    /// Whether their lab's Hopsworks project holds offline storage.
    pub stores: bool,
}
