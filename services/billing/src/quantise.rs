//! What Stripe is told and what it computes from it (decision 0038), as pure functions the
//! ledger's views and the reporter share:
//! - a day's quantity of one resource at one price is quantised to [`QUANTUM_SCALE`] decimal
//!   places, rounded half up ([`quantise`]); a hybrid window's postpaid quantity is already in
//!   quanta and adds as it is ([`day_quanta`]);
//! - an invoice line is the sum of its quantised days times the unit price, rounded half up
//!   once, to the minor unit ([`line_amount`]), as Stripe rounds per line.

use crate::money::{self, QUANTA_PER_UNIT, QUANTUM_SCALE, Resource, Rounding};
use chrono::NaiveDate;
use rust_decimal::Decimal;

/// `n` base units of `resource` used on `day` in quanta (1e-9 of a billed unit), rounded half
/// up. The day matters for storage: a GB-month has its calendar month's seconds.
#[must_use]
pub fn quantise(resource: Resource, day: NaiveDate, n: u128) -> u128 {
    money::mul_div(n, QUANTA_PER_UNIT, resource.per_unit(day), Rounding::HalfUp).unwrap_or(u128::MAX)
}

/// The quanta `day` reports for one resource at one price: its postpaid windows' base units
/// (`whole`, summed, then quantised once) plus the hybrid windows' postpaid quanta (`over`).
#[must_use]
pub fn day_quanta(resource: Resource, day: NaiveDate, whole: u128, over: u128) -> u128 {
    quantise(resource, day, whole).saturating_add(over)
}

/// A number of quanta as Stripe's meter event value: a decimal with exactly
/// [`QUANTUM_SCALE`] places (`"12.000000001"`).
#[must_use]
pub fn quanta_text(quanta: u128) -> String {
    let places = usize::try_from(QUANTUM_SCALE).unwrap_or(9);
    format!("{}.{:0places$}", quanta / QUANTA_PER_UNIT, quanta % QUANTA_PER_UNIT)
}

/// The significant digits of [`quanta_text`]`(quanta)` as Stripe counts them: from the first
/// non-zero digit to the last, trailing fractional zeros not counted (`1200.000000000` has 4,
/// `0.000000005` has 1). Stripe refuses a meter event value with more than
/// [`MAX_SIGNIFICANT_DIGITS`].
#[must_use]
pub fn significant_digits(quanta: u128) -> u32 {
    let mut n = quanta;
    let mut stripped = 0;
    while n != 0 && n.is_multiple_of(10) && stripped < QUANTUM_SCALE {
        n /= 10;
        stripped += 1;
    }
    n.checked_ilog10().map_or(1, |d| d + 1)
}

/// The most significant digits a meter event value may have.
pub const MAX_SIGNIFICANT_DIGITS: u32 = 15;

/// An invoice line: `quanta` (the sum of the line's quantised days) times `price`, unrounded,
/// in the minor unit.
#[must_use]
pub fn line_exact(quanta: u128, price: Decimal) -> Option<Decimal> {
    let p = money::to_scaled(price, money::PRICE_SCALE)?;
    let exact = money::mul_div(quanta, p, QUANTA_PER_UNIT, Rounding::Down)?;
    // Exact: quanta have 9 places and prices 12, so the product has 21; keep them all.
    let rest = quanta.checked_mul(p)? % QUANTA_PER_UNIT;
    let whole = money::from_scaled(exact, money::MONEY_SCALE)?;
    Some(whole + money::from_scaled(rest, money::MONEY_SCALE + QUANTUM_SCALE)?)
}

/// An invoice line's amount as Stripe computes it: `quanta` times `price`, rounded half up
/// once to the minor unit.
#[must_use]
pub fn line_amount(quanta: u128, price: Decimal) -> Option<i64> {
    let p = money::to_scaled(price, money::PRICE_SCALE)?;
    let minor = 10_u128.pow(money::PRICE_SCALE) * QUANTA_PER_UNIT;
    i64::try_from(money::mul_div(quanta, p, minor, Rounding::HalfUp)?).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use std::str::FromStr;

    #[test]
    fn days_quantise_half_up_to_nine_places_and_lines_round_once() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 4).unwrap();
        // 1 GPU-second is 0.000277777(7) h: 277,778 quanta.
        assert_eq!(quantise(Resource::Gpu, day, 1), 277_778);
        // Half a quantum of a core-hour (1,800 nanocore-seconds) rounds up.
        assert_eq!(quantise(Resource::Cpu, day, 1_800), 1);
        assert_eq!(quantise(Resource::Cpu, day, 1_799), 0);
        assert_eq!(day_quanta(Resource::Cpu, day, 3_600, 5), 6);
        // 1 GB for a day of November is a thirtieth of a GB-month: 0.033333333; of December a
        // thirty-first, 0.032258065 (half up).
        let gb_day = 86_400 * 1_000_000_000;
        assert_eq!(quantise(Resource::StorageOffline, day, gb_day), 33_333_333);
        let december = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        assert_eq!(quantise(Resource::StorageOnline, december, gb_day), 32_258_065);
        assert_eq!(quanta_text(12_000_000_001), "12.000000001");
        assert_eq!(quanta_text(5), "0.000000005");
        assert_eq!(significant_digits(5), 1);
        assert_eq!(significant_digits(0), 1);
        assert_eq!(significant_digits(1_200_000_000_000), 4);
        assert_eq!(significant_digits(12_000_000_001), 11);
        assert_eq!(significant_digits(999_999_999_999_999), 15);
        assert_eq!(significant_digits(1_000_000_000_000_001), 16);
        let price = Decimal::from_str("3.5").unwrap();
        // 1.5 units at 1 cent: 1.5 rounds up to 2, as Stripe documents.
        assert_eq!(line_amount(1_500_000_000, Decimal::ONE), Some(2));
        assert_eq!(line_amount(1_499_999_999, Decimal::ONE), Some(1));
        assert_eq!(line_amount(277_778 * 3, price), Some(0));
        assert_eq!(line_exact(277_778, price), Some(Decimal::from_str("0.000972223").unwrap()));
        assert_eq!(
            line_exact(1, Decimal::from_str("0.000000000001").unwrap()),
            Some(Decimal::from_str("0.000000000000000000001").unwrap())
        );
    }
}
