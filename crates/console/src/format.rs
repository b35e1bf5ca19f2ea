//! Figures as pages show them: money from the API's minor units (whole or exact decimal) and
//! quantities from its exact decimals, with exact arithmetic throughout (no floats).

use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::{Decimal, RoundingStrategy};
use std::str::FromStr as _;

/// Currencies whose minor unit is the major one (ISO 4217 exponent 0).
const ZERO_DECIMAL: [&str; 16] =
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"];

fn exponent(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) { 0 } else { 2 }
}

/// A decimal string of the API's (`"12.5"`), or `None` when it is not one.
#[must_use]
pub fn parse(value: &str) -> Option<Decimal> {
    Decimal::from_str(value).ok()
}

/// Whole minor units as money: `1234`, `eur` → `12.34 EUR`.
#[must_use]
pub fn minor(amount: i64, currency: &str) -> String {
    money(Decimal::from(amount), currency)
}

/// Exact minor units (a decimal string) as money, rounded half up to the minor unit as the
/// API rounds: `"1234.5"`, `eur` → `12.35 EUR`. An unreadable figure is shown as it came.
#[must_use]
pub fn minor_decimal(amount: &str, currency: &str) -> String {
    parse(amount).map_or_else(|| amount.to_owned(), |d| money(d, currency))
}

fn money(minor_units: Decimal, currency: &str) -> String {
    let places = exponent(currency);
    let rounded = minor_units.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    let mut major = rounded / Decimal::from(10_i64.pow(places));
    major.rescale(places);
    format!("{major} {}", currency.to_ascii_uppercase())
}

/// An exact quantity shown to `places` decimal places (half up): `"1.23456"`, 3 → `1.235`.
#[must_use]
pub fn quantity(value: &str, places: u32) -> String {
    parse(value).map_or_else(
        || value.to_owned(),
        |d| {
            let mut r = d.round_dp_with_strategy(places, RoundingStrategy::MidpointAwayFromZero);
            r.rescale(places);
            r.to_string()
        },
    )
}

/// The unit a resource is billed in.
#[must_use]
pub fn unit(resource: &str) -> &'static str {
    match resource {
        "cpu" => "core-hours",
        "memory" => "GiB-hours",
        "gpu" => "GPU-hours",
        "storage" | "storage_offline" | "storage_online" => "GB-months",
        _ => "units",
    }
}

/// One billed unit of a resource, as a price is quoted per it: `cpu` → `core-hour`.
#[must_use]
pub fn per_unit(resource: &str) -> &'static str {
    match resource {
        "cpu" => "core-hour",
        "memory" => "GiB-hour",
        "gpu" => "GPU-hour",
        "storage" | "storage_offline" | "storage_online" => "GB-month",
        _ => "unit",
    }
}

/// A price's exact minor units per unit (a decimal string of the API's) in the currency's
/// major unit, exactly, with at least the currency's places: `"3.5"`, `usd` → `0.035 USD`,
/// `"40"`, `usd` → `0.40 USD`. An unreadable figure is shown as it came.
#[must_use]
pub fn unit_price(minor_units: &str, currency: &str) -> String {
    let places = exponent(currency);
    parse(minor_units).and_then(|d| d.normalize().checked_mul(Decimal::new(1, places))).map_or_else(
        || minor_units.to_owned(),
        |mut major| {
            if major.scale() < places {
                major.rescale(places);
            }
            format!("{major} {}", currency.to_ascii_uppercase())
        },
    )
}

/// A resource's name for people.
#[must_use]
pub fn resource_name(resource: &str) -> &'static str {
    match resource {
        "cpu" => "CPU",
        "memory" => "Memory",
        "gpu" => "GPU",
        "storage_offline" => "Offline storage",
        "storage_online" => "Online storage",
        "storage" => "Storage",
        _ => "Other",
    }
}

/// The resource a usage figure of `resource` is drawn and added up under: offline and online
/// storage together as `storage` (one chart and column, both in GB-months), the others as
/// they are.
#[must_use]
pub fn shown_as(resource: &str) -> &str {
    match resource {
        "storage_offline" | "storage_online" => "storage",
        other => other,
    }
}

/// The decimal places a quantity of `resource` is shown with: 3 for the hourly units, 9 for
/// storage's GB-months (the quantum Stripe is told, decision 0057; an hour of a few GB is
/// millionths of a GB-month).
#[must_use]
pub fn places(resource: &str) -> u32 {
    if shown_as(resource) == "storage" { 9 } else { 3 }
}

/// A money amount typed into a form (`12.34`) in whole minor units of `currency`; `None` when
/// it is not a positive amount with at most the currency's decimal places.
#[must_use]
pub fn parse_major(typed: &str, currency: &str) -> Option<i64> {
    let typed = typed.trim();
    if typed.is_empty() || !typed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let d = Decimal::from_str(typed).ok()?;
    let places = exponent(currency);
    if d <= Decimal::ZERO || d.scale() > places {
        return None;
    }
    d.checked_mul(Decimal::from(10_i64.pow(places)))?.trunc().to_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_named_and_shown_in_gb_months() {
        assert_eq!((resource_name("storage_offline"), unit("storage_offline")), ("Offline storage", "GB-months"));
        assert_eq!((resource_name("storage_online"), unit("storage_online")), ("Online storage", "GB-months"));
        assert_eq!((resource_name("disk"), unit("disk")), ("Other", "units"));
        assert_eq!((resource_name("storage"), unit("storage")), ("Storage", "GB-months"));
        assert_eq!(
            (shown_as("storage_offline"), shown_as("storage_online"), shown_as("cpu")),
            ("storage", "storage", "cpu")
        );
        assert_eq!((places("storage_online"), places("gpu")), (9, 3));
    }

    #[test]
    fn money_is_rounded_half_up_to_the_minor_unit() {
        assert_eq!(minor(1234, "eur"), "12.34 EUR");
        assert_eq!(minor(5, "usd"), "0.05 USD");
        assert_eq!(minor(-250, "usd"), "-2.50 USD");
        assert_eq!(minor(1234, "jpy"), "1234 JPY");
        assert_eq!(minor_decimal("1234.5", "eur"), "12.35 EUR");
        assert_eq!(minor_decimal("1234.4999999", "eur"), "12.34 EUR");
        assert_eq!(minor_decimal("0", "eur"), "0.00 EUR");
        assert_eq!(minor_decimal("n/a", "eur"), "n/a");
    }

    #[test]
    fn unit_prices_are_exact_in_major_units() {
        assert_eq!(unit_price("3.5", "usd"), "0.035 USD");
        assert_eq!(unit_price("40", "usd"), "0.40 USD");
        assert_eq!(unit_price("0.000001", "eur"), "0.00000001 EUR");
        assert_eq!(unit_price("1.50", "jpy"), "1.5 JPY");
        assert_eq!(unit_price("12", "jpy"), "12 JPY");
        assert_eq!(unit_price("n/a", "usd"), "n/a");
        assert_eq!((per_unit("cpu"), per_unit("storage_online"), per_unit("disk")), ("core-hour", "GB-month", "unit"));
    }

    #[test]
    fn quantities_keep_the_places_asked_for() {
        assert_eq!(quantity("1.23456", 3), "1.235");
        assert_eq!(quantity("2", 2), "2.00");
        assert_eq!(quantity("0.0004", 3), "0.000");
    }

    #[test]
    fn typed_amounts_become_whole_minor_units_or_nothing() {
        assert_eq!(parse_major("12.34", "eur"), Some(1234));
        assert_eq!(parse_major(" 20 ", "usd"), Some(2000));
        assert_eq!(parse_major("1.5", "usd"), Some(150));
        assert_eq!(parse_major("1500", "jpy"), Some(1500));
        for bad in ["", "0", "-1", "1.234", "ten", "1e3"] {
            assert_eq!(parse_major(bad, "usd"), None, "{bad}");
        }
        assert_eq!(parse_major("1.5", "jpy"), None);
    }
}
