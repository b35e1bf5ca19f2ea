//! The proof's arithmetic, in integers: dates and days, rounding, units of usage per billed
//! unit, decimal strings and JSON numbers as fixed-point integers, and a JSON row's fields.

use super::E9;
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Utc};
use serde_json::Value;

/// The 1st of the month after `t`'s, 00:00 UTC.
pub fn next_month(t: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap()
}

/// `t` moved by `secs` seconds.
#[must_use]
pub fn at(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    t + TimeDelta::seconds(secs)
}

/// `n / d` rounded half up (n ≥ 0, d > 0).
pub fn half_up(n: i128, d: i128) -> i128 {
    (2 * n + d).div_euclid(2 * d)
}

/// `n / d` rounded up (n ≥ 0, d > 0).
#[must_use]
pub fn ceil_div(n: i128, d: i128) -> i128 {
    (n + d - 1).div_euclid(d)
}

/// Units of usage per billed unit on the UTC day of `t`: nanocore-seconds per core-hour,
/// byte-seconds per GiB-hour, GPU-seconds per GPU-hour, byte-seconds per GB-month of the day's
/// calendar month.
pub fn per_unit(resource: &str, t: i64) -> i128 {
    match resource {
        "cpu" => 3_600 * E9,
        "memory" => (1_i128 << 30) * 3_600,
        "gpu" => 3_600,
        "storage_offline" | "storage_online" => {
            let day = DateTime::from_timestamp(t, 0).unwrap();
            let first = Utc.with_ymd_and_hms(day.year(), day.month(), 1, 0, 0, 0).unwrap();
            E9 * i128::from((next_month(first) - first).num_seconds())
        }
        other => panic!("no resource {other}"),
    }
}

/// The start of a day named `YYYY-MM-DD`.
pub fn day_start(day: &str) -> i64 {
    NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

/// A decimal string as an integer count of 10^-places.
pub fn fixed(s: &str, places: usize) -> i128 {
    let s = s.trim();
    let (negative, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = if frac.len() > places { frac.trim_end_matches('0') } else { frac };
    assert!(frac.len() <= places, "{s} has more than {places} places");
    let scale = 10_i128.pow(u32::try_from(places).unwrap());
    let frac: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<places$}").parse().unwrap() };
    let v = whole.parse::<i128>().unwrap_or(0) * scale + frac;
    if negative { -v } else { v }
}

/// `v` (10^-places) as a decimal with two places, truncated: a table figure.
pub fn cents(v: i128, places: u32) -> String {
    let hundredths = v / 10_i128.pow(places.saturating_sub(2));
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// The string `k` of a JSON row.
#[must_use]
pub fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_owned()
}

/// The integer `k` of a JSON row.
#[must_use]
pub fn int(v: &Value, k: &str) -> i128 {
    i128::from(v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}")))
}

pub fn day_of(t: i64) -> String {
    DateTime::from_timestamp(t, 0).unwrap().date_naive().to_string()
}

/// A JSON number (Stripe's `aggregated_value`, a float) as an integer count of 10^-places,
/// from its shortest decimal form (exact for the at most 15 significant digits a meter takes),
/// rounded half up past `places`.
#[must_use]
pub fn decimal(v: &Value, places: u32) -> i128 {
    let s = v.to_string();
    let (mantissa, exponent) = s.split_once(['e', 'E']).unwrap_or((&s, "0"));
    let exponent: i32 = exponent.parse().unwrap_or_else(|_| panic!("a number: {s}"));
    let (negative, mantissa) = mantissa.strip_prefix('-').map_or((false, mantissa), |m| (true, m));
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: i128 = format!("{whole}{frac}").parse().unwrap_or_else(|_| panic!("a number: {s}"));
    // value = digits × 10^(exponent - |frac|); scaled by 10^places.
    let shift = exponent - i32::try_from(frac.len()).unwrap() + i32::try_from(places).unwrap();
    let scaled = if shift >= 0 {
        digits * 10_i128.pow(shift.unsigned_abs())
    } else {
        half_up(digits, 10_i128.pow(shift.unsigned_abs()))
    };
    if negative { -scaled } else { scaled }
}
