//! Money and usage, exactly: the metered resources, their billed units, and the arithmetic of
//! costs in integers with one stated rounding each (decision 0038).
//!
//! Usage stays in the integers metering measures (nanocore-seconds, byte-seconds,
//! GPU-seconds, and storage's byte-seconds). Prices are [`Decimal`]s in the currency's minor unit per billed unit with at
//! most [`PRICE_SCALE`] decimal places. A window's cost of one resource is `n × price /
//! per_unit(day)` (storage's GB-month has as many seconds as its calendar month, decision 0057), computed with a 256-bit intermediate and rounded half up to [`MONEY_SCALE`]
//! decimal places of the minor unit: every stored amount (costs, credits, deductions) has at
//! most that many places, so sums of them are exact. No float is ever involved.

use chrono::{Datelike, Months, NaiveDate};
use hopsbridge_domain::ratio;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Decimal places of the minor unit that costs, credits and deductions carry.
pub const MONEY_SCALE: u32 = 12;
/// Decimal places a price may have (Stripe's `unit_amount_decimal` takes 12).
pub const PRICE_SCALE: u32 = 12;
/// Decimal places of a quantity told to Stripe: the quantum is 1e-9 of a billed unit.
pub const QUANTUM_SCALE: u32 = 9;
/// 10^9: quanta in one billed unit.
pub const QUANTA_PER_UNIT: u128 = 1_000_000_000;
/// How many resources are metered: the length of [`Resource::ALL`] and of every per-resource
/// array.
pub const RESOURCES: usize = 5;
/// Bytes in one GB, as storage is billed (decimal, not GiB).
pub const BYTES_PER_GB: u128 = 1_000_000_000;

/// A metered resource.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// CPU, billed per core-hour (nanocore-seconds / 3.6e12).
    Cpu,
    /// Memory, billed per GiB-hour (byte-seconds / (2^30 × 3600)).
    Memory,
    /// GPUs, billed per GPU-hour (GPU-seconds / 3600).
    Gpu,
    /// Offline storage (HDFS), billed per GB-month (byte-seconds / (1e9 × the month's seconds)).
    StorageOffline,
    /// Online storage (RonDB), billed per GB-month like offline storage.
    StorageOnline,
}

impl Resource {
    /// Every resource, in the order of the ledger's columns.
    pub const ALL: [Self; RESOURCES] = [Self::Cpu, Self::Memory, Self::Gpu, Self::StorageOffline, Self::StorageOnline];

    /// The storage resources, billed per GB-month.
    pub const STORAGE: [Self; 2] = [Self::StorageOffline, Self::StorageOnline];

    /// The stored and wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Gpu => "gpu",
            Self::StorageOffline => "storage_offline",
            Self::StorageOnline => "storage_online",
        }
    }

    /// The name, when `s` is one.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Base units (what metering measures) in one billed unit of usage on `day`: fixed for the
    /// hourly units; for storage, a GB-month is 1e9 bytes held for every second of `day`'s
    /// calendar month, so a month of constant storage is billed its price once whatever the
    /// month's length (decision 0057).
    #[must_use]
    pub fn per_unit(self, day: NaiveDate) -> u128 {
        match self {
            Self::Cpu => ratio::NANOCORE_SECONDS_PER_CORE_HOUR,
            Self::Memory => ratio::BYTE_SECONDS_PER_GIB_HOUR,
            Self::Gpu => ratio::GPU_SECONDS_PER_GPU_HOUR,
            Self::StorageOffline | Self::StorageOnline => BYTES_PER_GB * u128::from(month_seconds(day)),
        }
    }

    /// True for the storage resources.
    #[must_use]
    pub const fn is_storage(self) -> bool {
        matches!(self, Self::StorageOffline | Self::StorageOnline)
    }

    /// The billed unit, for people.
    #[must_use]
    pub const fn unit(self) -> &'static str {
        match self {
            Self::Cpu => "core-hour",
            Self::Memory => "GiB-hour",
            Self::Gpu => "GPU-hour",
            Self::StorageOffline | Self::StorageOnline => "GB-month",
        }
    }

    /// The position in [`Resource::ALL`].
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::Cpu => 0,
            Self::Memory => 1,
            Self::Gpu => 2,
            Self::StorageOffline => 3,
            Self::StorageOnline => 4,
        }
    }
}

/// The seconds of the calendar month `day` falls in (28, 29, 30 or 31 days of 86,400 s: UTC
/// has no leap seconds).
#[must_use]
pub fn month_seconds(day: NaiveDate) -> u64 {
    let first = day.with_day(1).unwrap_or(day);
    let next = first.checked_add_months(Months::new(1)).unwrap_or(first);
    u64::try_from((next - first).num_days()).unwrap_or(31) * 86_400
}

impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for Resource {
    fn to_sql<'b>(&'b self, out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>) -> diesel::serialize::Result {
        <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(self.as_str(), out)
    }
}

impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for Resource {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg>>::from_sql(bytes)?;
        Self::parse(&text).ok_or_else(|| format!("unknown resource {text:?}").into())
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a quotient is rounded to an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Towards zero.
    Down,
    /// Away from zero.
    Up,
    /// To the nearest, a half away from zero.
    HalfUp,
}

/// `a × b / d`, rounded as asked, with a 256-bit intermediate so nothing overflows before
/// the division. `None` when `d` is zero or the quotient does not fit 128 bits.
#[must_use]
pub fn mul_div(a: u128, b: u128, d: u128, rounding: Rounding) -> Option<u128> {
    if d == 0 {
        return None;
    }
    let (hi, lo) = widening_mul(a, b);
    if hi >= d {
        return None;
    }
    // Long division of (hi, lo) by d, one bit of lo at a time; the remainder stays below d.
    let (mut q, mut r) = (0_u128, hi);
    for i in (0..128).rev() {
        let carry = r >> 127;
        r = (r << 1) | ((lo >> i) & 1);
        if carry == 1 || r >= d {
            r = r.wrapping_sub(d);
            q |= 1 << i;
        }
    }
    let up = match rounding {
        Rounding::Down => false,
        Rounding::Up => r > 0,
        Rounding::HalfUp => r >= d - r,
    };
    if up { q.checked_add(1) } else { Some(q) }
}

/// The 256-bit product of `a` and `b` as (high, low) halves.
fn widening_mul(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & MASK);
    let (b1, b0) = (b >> 64, b & MASK);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    let middle = (p00 >> 64) + (p01 & MASK) + (p10 & MASK);
    let lo = (p00 & MASK) | (middle << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (middle >> 64);
    (hi, lo)
}

/// `value` as an integer count of `10^-scale`, when it is not negative and has at most
/// `scale` decimal places.
#[must_use]
pub fn to_scaled(value: Decimal, scale: u32) -> Option<u128> {
    if value.is_sign_negative() && !value.is_zero() {
        return None;
    }
    let normal = value.normalize();
    let places = normal.scale();
    if places > scale {
        return None;
    }
    let mantissa = u128::try_from(normal.mantissa()).ok()?;
    mantissa.checked_mul(10_u128.checked_pow(scale - places)?)
}

/// `value × 10^-scale` as a decimal, when it fits one.
#[must_use]
pub fn from_scaled(value: u128, scale: u32) -> Option<Decimal> {
    Decimal::try_from_i128_with_scale(i128::try_from(value).ok()?, scale).ok().map(|d| d.normalize())
}

/// Why an amount could not be computed: far beyond any real usage or price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Overflow(pub String);

/// The cost in minor units of `n` base units of `resource` used on `day` at `price` minor units
/// per billed unit, rounded half up to [`MONEY_SCALE`] places.
///
/// # Errors
/// When the price has more than [`PRICE_SCALE`] places or the cost does not fit.
pub fn cost(resource: Resource, day: NaiveDate, n: u64, price: Decimal) -> Result<Decimal, Overflow> {
    let p = to_scaled(price, PRICE_SCALE).ok_or_else(|| Overflow(format!("price {price} is not a price")))?;
    // PRICE_SCALE equals MONEY_SCALE, so the scaled price is already in money units.
    let c = mul_div(u128::from(n), p, resource.per_unit(day), Rounding::HalfUp)
        .ok_or_else(|| Overflow(format!("{n} {resource} at {price} overflows")))?;
    from_scaled(c, MONEY_SCALE).ok_or_else(|| Overflow(format!("{n} {resource} at {price} overflows")))
}

/// Rounds an amount half up to whole minor units (as Stripe rounds an invoice line).
#[must_use]
pub fn round_minor(amount: Decimal) -> i64 {
    let rounded = amount.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(rounded.mantissa() / 10_i128.pow(rounded.scale())).unwrap_or(i64::MAX)
}

/// What a prepaid window's cost becomes when the credits cannot pay all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflowed {
    /// What the credits pay.
    pub credits: Decimal,
    /// The quantity of each resource (in [`Resource::ALL`] order) billed postpaid, in quanta
    /// of 1e-9 unit.
    pub over_quanta: [u64; RESOURCES],
    /// The part of the cost billed postpaid: the window's cost less `credits`.
    pub postpaid: Decimal,
}

/// The hybrid overflow rule (decision 0038): a window costing `costs` (per resource, at
/// `prices`) when only `available` credit is left. The overflow is `O = C − available`; each
/// resource's postpaid quantity is `ceil_to_quantum(q_r × O / C)`, with `q_r` taken as
/// `cost_r / price_r` so that the quantities' cost, each rounded up to [`MONEY_SCALE`], covers
/// `O` exactly; the credits pay the rest, `C − Σ ceil(q_over_r × price_r)` (never below zero).
///
/// # Errors
/// When an amount does not fit.
pub fn overflow(
    costs: [Decimal; RESOURCES],
    prices: [Decimal; RESOURCES],
    available: Decimal,
) -> Result<Overflowed, Overflow> {
    let scaled = |d: Decimal| to_scaled(d, MONEY_SCALE).ok_or_else(|| Overflow(format!("{d} is not an amount")));
    let c: Vec<u128> = costs.iter().map(|c| scaled(*c)).collect::<Result<_, _>>()?;
    let p: Vec<u128> = prices.iter().map(|p| scaled(*p)).collect::<Result<_, _>>()?;
    let total: u128 = c.iter().sum();
    let left = scaled(available)?.min(total);
    let over = total - left;
    let mut over_quanta = [0_u64; RESOURCES];
    let mut postpaid = 0_u128;
    for r in 0..RESOURCES {
        if c[r] == 0 || p[r] == 0 || over == 0 {
            continue;
        }
        let too_big = || Overflow(format!("the overflow of {} does not fit", costs[r]));
        let d = total.checked_mul(p[r]).ok_or_else(too_big)?;
        let a = c[r].checked_mul(QUANTA_PER_UNIT).ok_or_else(too_big)?;
        let quanta = mul_div(a, over, d, Rounding::Up).ok_or_else(too_big)?;
        over_quanta[r] = u64::try_from(quanta).map_err(|_| too_big())?;
        postpaid += mul_div(quanta, p[r], QUANTA_PER_UNIT, Rounding::Up).ok_or_else(too_big)?;
    }
    let credits = total.saturating_sub(postpaid);
    let amount = |v: u128| from_scaled(v, MONEY_SCALE).ok_or_else(|| Overflow(format!("{v} does not fit")));
    Ok(Overflowed { credits: amount(credits)?, over_quanta, postpaid: amount(total - credits)? })
}

/// `n` base units of `resource` used on `day` in billed units, as a decimal string: exact when
/// the quotient ends within 32 places (always for sums of 900 s windows of the hourly units),
/// otherwise rounded half up there.
#[must_use]
pub fn quantity_text(resource: Resource, day: NaiveDate, n: u128) -> String {
    ratio::decimal_text(n, resource.per_unit(day), ratio::HOURS_PLACES, ratio::Rounding::HalfUp).text
}

/// Splits `n` over consecutive parts lasting `secs` seconds each, pro rata by seconds with
/// integer arithmetic: each part gets the floor of its cumulative share less what the parts
/// before it got, so the parts add up to `n` and the remainder goes to the later parts.
#[must_use]
pub fn pro_rata(n: u64, secs: &[u64]) -> Vec<u64> {
    let total: u128 = secs.iter().map(|s| u128::from(*s)).sum();
    if total == 0 {
        return secs.iter().enumerate().map(|(i, _)| if i + 1 == secs.len() { n } else { 0 }).collect();
    }
    let mut before = 0_u128;
    let mut given = 0_u64;
    secs.iter()
        .map(|s| {
            before += u128::from(*s);
            let through = u64::try_from(u128::from(n) * before / total).unwrap_or(n);
            let part = through - given;
            given = through;
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// Any day: the hourly units do not depend on it.
    fn any() -> NaiveDate {
        day(2026, 12, 9)
    }

    #[test]
    fn mul_div_is_exact_past_128_bits_and_rounds_as_asked() {
        let big = u128::MAX / 3;
        assert_eq!(mul_div(u128::MAX, 4, 2, Rounding::Down), None, "the quotient overflows");
        assert_eq!(mul_div(big, 6, 2, Rounding::Down), Some(u128::MAX), "the product does not");
        assert_eq!(mul_div(big, 1 << 64, 1 << 64, Rounding::Down), Some(big));
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX, Rounding::Down), Some(u128::MAX));
        assert_eq!(mul_div(7, 1, 2, Rounding::Down), Some(3));
        assert_eq!(mul_div(7, 1, 2, Rounding::Up), Some(4));
        assert_eq!(mul_div(7, 1, 2, Rounding::HalfUp), Some(4));
        assert_eq!(mul_div(5, 1, 4, Rounding::HalfUp), Some(1));
        assert_eq!(mul_div(6, 1, 4, Rounding::HalfUp), Some(2));
        assert_eq!(mul_div(8, 1, 4, Rounding::Up), Some(2));
        assert_eq!(mul_div(1, 1, 0, Rounding::Down), None);
    }

    #[test]
    fn costs_are_rounded_half_up_at_twelve_places() {
        // One core for 900 s at 35 cents a core-hour: 8.75 cents exactly.
        assert_eq!(cost(Resource::Cpu, any(), 900 * 1_000_000_000, dec("35")).unwrap(), dec("8.75"));
        // 1 GiB for 900 s at 3.5: 0.875.
        assert_eq!(cost(Resource::Memory, any(), 900 << 30, dec("3.5")).unwrap(), dec("0.875"));
        // One byte-second: 3.5 / 3865470566400 = 9.05452...e-13, rounded to 1e-12.
        assert_eq!(cost(Resource::Memory, any(), 1, dec("3.5")).unwrap(), dec("0.000000000001"));
        assert_eq!(cost(Resource::Gpu, any(), 1, dec("0.000000000001")).unwrap(), Decimal::ZERO);
        assert!(cost(Resource::Gpu, any(), 1, dec("0.0000000000001")).is_err(), "13 places is no price");
        assert_eq!(round_minor(dec("8.5")), 9);
        assert_eq!(round_minor(dec("8.4999999")), 8);
    }

    #[test]
    fn the_overflow_is_covered_exactly_and_the_credits_never_pay_more_than_is_left() {
        let prices = [dec("35"), dec("3.5"), dec("350"), dec("10"), dec("50")];
        let costs = [
            cost(Resource::Cpu, any(), 1_234_567_891_234, prices[0]).unwrap(),
            cost(Resource::Memory, any(), 98_765_432_109_876, prices[1]).unwrap(),
            cost(Resource::Gpu, any(), 77, prices[2]).unwrap(),
            // 1 GB for a day of November (30 days): a thirtieth of 10.
            cost(Resource::StorageOffline, day(2026, 11, 4), 86_400 * 1_000_000_000, prices[3]).unwrap(),
            // 2 GB for an hour of December (31 days): 50 × 7,200 / 2,678,400.
            cost(Resource::StorageOnline, day(2026, 12, 4), 7_200 * 1_000_000_000, prices[4]).unwrap(),
        ];
        assert_eq!(costs[3], dec("0.333333333333"));
        assert_eq!(costs[4], dec("0.134408602151"));
        let total: Decimal = costs.iter().sum();
        for available in ["0", "0.000000000001", "1", "7.123456789012", &total.to_string()] {
            let available = dec(available);
            let split = overflow(costs, prices, available).unwrap();
            assert!(split.credits <= available, "{available}: {split:?}");
            assert_eq!(split.credits + split.postpaid, total, "{available}");
            // The quantities billed postpaid cover the overflow.
            let billed: Decimal = (0..RESOURCES)
                .map(|r| Decimal::from(split.over_quanta[r]) * prices[r] / Decimal::from(1_000_000_000_u64))
                .sum();
            assert!(billed >= total - available, "{available}: {billed} < {}", total - available);
            if split.credits.is_zero() {
                // Nothing left to pay with: the rounding up to the quantum is billed too.
                assert!(split.postpaid <= billed && billed - split.postpaid < dec("0.000001"), "{split:?} {billed}");
            } else {
                assert!(
                    split.postpaid >= billed && split.postpaid - billed < dec("0.00000000001"),
                    "{split:?} {billed}"
                );
            }
        }
        let all = overflow(costs, prices, total).unwrap();
        assert_eq!((all.credits, all.over_quanta, all.postpaid), (total, [0; RESOURCES], Decimal::ZERO));
        // Nothing left: every resource is billed in full, rounded up to the quantum.
        let none = overflow(costs, prices, Decimal::ZERO).unwrap();
        assert_eq!(none.over_quanta, [342_935_526, 25_550_687_921, 21_388_889, 33_333_334, 2_688_173]);
    }

    #[test]
    fn quantities_render_exactly() {
        assert_eq!(quantity_text(Resource::Cpu, any(), 900 * 1_000_000_000), "0.25");
        assert_eq!(quantity_text(Resource::Memory, any(), 900 << 30), "0.25");
        assert_eq!(quantity_text(Resource::Gpu, any(), 1), "0.00027777777777777777777777777778");
        assert_eq!(quantity_text(Resource::Gpu, any(), 0), "0");
        // 1 GB for 7 days of February 2027 (28 days): a quarter GB-month.
        let week = 7 * 86_400 * 1_000_000_000;
        assert_eq!(quantity_text(Resource::StorageOffline, day(2027, 2, 10), week), "0.25");
        assert_eq!(quantity_text(Resource::StorageOnline, day(2027, 2, 10), week * 4), "1");
    }

    #[test]
    fn a_gb_month_has_the_seconds_of_its_calendar_month() {
        for ((y, m), days) in [((2027, 2), 28), ((2028, 2), 29), ((2026, 11), 30), ((2026, 12), 31), ((2027, 1), 31)] {
            for d in [1, 15, days] {
                assert_eq!(month_seconds(day(y, m, d)), u64::from(days) * 86_400, "{y}-{m}-{d}");
                assert_eq!(
                    Resource::StorageOffline.per_unit(day(y, m, d)),
                    1_000_000_000 * u128::from(days) * 86_400,
                    "{y}-{m}-{d}"
                );
            }
        }
        // The hourly units are the same every day.
        assert_eq!(Resource::Cpu.per_unit(day(2027, 2, 1)), Resource::Cpu.per_unit(day(2026, 12, 31)));
        assert_eq!(Resource::parse("storage_online"), Some(Resource::StorageOnline));
        assert_eq!(serde_json::to_string(&Resource::StorageOffline).unwrap(), "\"storage_offline\"");
        assert!(Resource::ALL.iter().enumerate().all(|(i, r)| r.index() == i));
    }

    /// A month of constant storage, hour by hour, costs its GB-month price: in the ledger (each
    /// hour's cost at 12 places, summed) to well under a billionth of a minor unit, and on the
    /// invoice (each day's quantity quantised, the line rounded once) to the minor unit exactly.
    #[test]
    fn a_month_of_constant_storage_costs_the_gb_month_price() {
        let gb = 1_000_000_000_u64;
        for ((y, m), days) in [((2027, 2), 28_u32), ((2028, 2), 29), ((2026, 11), 30), ((2026, 12), 31)] {
            for (size_gb, price) in [(1_u64, "2.3"), (1_234, "0.017"), (1_000_000, "2.3"), (7, "99.999999999999")] {
                let price = dec(price);
                let mut ledger = Decimal::ZERO;
                let mut quanta = 0_u128;
                for d in 1..=days {
                    let mut whole = 0_u128;
                    for _hour in 0..24 {
                        let n = size_gb * gb * 3_600;
                        ledger += cost(Resource::StorageOffline, day(y, m, d), n, price).unwrap();
                        whole += u128::from(n);
                    }
                    quanta += crate::quantise::quantise(Resource::StorageOffline, day(y, m, d), whole);
                }
                let exact = price * Decimal::from(size_gb);
                let windows = Decimal::from(days * 24);
                assert!((ledger - exact).abs() <= windows * dec("0.0000000000005"), "{y}-{m} {size_gb} GB at {price}");
                assert_eq!(round_minor(ledger), round_minor(exact), "{y}-{m} {size_gb} GB at {price}");
                let line = crate::quantise::line_amount(quanta, price).unwrap();
                assert_eq!(line, round_minor(exact), "{y}-{m} {size_gb} GB at {price}: {quanta} quanta");
            }
        }
    }

    #[test]
    fn a_window_across_midnight_is_split_by_seconds_with_the_remainder_to_the_later_day() {
        assert_eq!(pro_rata(10, &[1, 2]), vec![3, 7]);
        assert_eq!(pro_rata(900, &[300, 600]), vec![300, 600]);
        assert_eq!(pro_rata(7, &[1, 1, 1]), vec![2, 2, 3]);
        assert_eq!(pro_rata(u64::MAX, &[1, 1]), vec![u64::MAX / 2, u64::MAX - u64::MAX / 2]);
        assert_eq!(pro_rata(5, &[0]), vec![5]);
    }

    #[test]
    fn scaled_decimals_round_trip() {
        assert_eq!(to_scaled(dec("3.5"), 12), Some(3_500_000_000_000));
        assert_eq!(to_scaled(dec("3.50"), 1), Some(35));
        assert_eq!(to_scaled(dec("0.0000000000001"), 12), None);
        assert_eq!(to_scaled(dec("-1"), 12), None);
        assert_eq!(from_scaled(3_500_000_000_000, 12), Some(dec("3.5")));
    }
}
