//! Usage per owner, person and UTC month (`usage_monthly`), summed exactly from metering's
//! `UsageRecordedV1` (each event once: the consumer's inbox drops a redelivery), and shown as
//! decimal hours computed from the integer sums without floating point.

use crate::error::TeamError;
use crate::schema::usage_monthly;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Numeric, Text};
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::ratio::{
    self, BYTE_SECONDS_PER_GIB_HOUR, GPU_SECONDS_PER_GPU_HOUR, HOURS_PLACES, NANOCORE_SECONDS_PER_CORE_HOUR, Rounding,
};
use hopsbridge_domain::{OwnerId, UserId};
use serde::Serialize;
use std::collections::HashMap;

/// One sample's usage, as `UsageRecordedV1` carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// CPU, nanocore-seconds.
    pub cpu_nanocore_seconds: u64,
    /// Memory, byte-seconds.
    pub memory_byte_seconds: u64,
    /// GPUs, GPU-seconds.
    pub gpu_seconds: u64,
}

/// Usage over a month, exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// CPU, nanocore-seconds.
    pub cpu_nanocore_seconds: u128,
    /// Memory, byte-seconds.
    pub memory_byte_seconds: u128,
    /// GPUs, GPU-seconds.
    pub gpu_seconds: u128,
}

/// A month's usage in hours, as decimal strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Hours {
    /// The month (its first day, UTC).
    pub month: NaiveDate,
    /// Core-hours, e.g. `"12.5"`.
    pub cpu_core_hours: String,
    /// GiB-hours.
    pub memory_gib_hours: String,
    /// GPU-hours.
    pub gpu_hours: String,
}

impl Totals {
    /// The totals in hours, for `month`.
    #[must_use]
    pub fn hours(&self, month: NaiveDate) -> Hours {
        Hours {
            month,
            cpu_core_hours: decimal(self.cpu_nanocore_seconds, NANOCORE_SECONDS_PER_CORE_HOUR),
            memory_gib_hours: decimal(self.memory_byte_seconds, BYTE_SECONDS_PER_GIB_HOUR),
            gpu_hours: decimal(self.gpu_seconds, GPU_SECONDS_PER_GPU_HOUR),
        }
    }
}

/// `numerator / per_hour` as a decimal: exact when it ends within [`HOURS_PLACES`] places,
/// otherwise cut there.
fn decimal(numerator: u128, per_hour: u128) -> String {
    ratio::decimal_text(numerator, per_hour, HOURS_PLACES, Rounding::Down).text
}

/// The UTC month (its first day) that `t` falls in.
#[must_use]
pub fn month_of(t: DateTime<Utc>) -> NaiveDate {
    let day = t.date_naive();
    day.with_day(1).unwrap_or(day)
}

/// Adds one sample of `user`'s usage, billed to `owner`, to the month its window began in.
///
/// # Errors
/// When Postgres fails.
pub async fn add(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    user: UserId,
    month: NaiveDate,
    sample: Sample,
) -> Result<(), TeamError> {
    let numeric = |v: u64| sql::<Numeric>("CAST(").bind::<Text, _>(v.to_string()).sql(" AS numeric)");
    use usage_monthly as u;
    diesel::insert_into(u::table)
        .values((
            u::owner_user_id.eq(owner),
            u::user_id.eq(user),
            u::month.eq(month),
            u::cpu_nanocore_seconds.eq(numeric(sample.cpu_nanocore_seconds)),
            u::memory_byte_seconds.eq(numeric(sample.memory_byte_seconds)),
            u::gpu_seconds.eq(numeric(sample.gpu_seconds)),
            u::samples.eq(1_i64),
        ))
        .on_conflict((u::owner_user_id, u::month, u::user_id))
        .do_update()
        .set((
            u::cpu_nanocore_seconds.eq(u::cpu_nanocore_seconds + excluded(u::cpu_nanocore_seconds)),
            u::memory_byte_seconds.eq(u::memory_byte_seconds + excluded(u::memory_byte_seconds)),
            u::gpu_seconds.eq(u::gpu_seconds + excluded(u::gpu_seconds)),
            u::samples.eq(u::samples + 1),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The usage of each of `users` billed to `owner` in `month` (absent: none).
///
/// # Errors
/// When Postgres fails, or a stored sum is not a whole number (it cannot be).
pub async fn of_month(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    month: NaiveDate,
    users: &[UserId],
) -> Result<HashMap<UserId, Totals>, TeamError> {
    use usage_monthly as u;
    let rows: Vec<(UserId, String, String, String)> = u::table
        .filter(u::owner_user_id.eq(owner))
        .filter(u::month.eq(month))
        .filter(u::user_id.eq_any(users))
        .select((
            u::user_id,
            sql::<Text>("cpu_nanocore_seconds::text"),
            sql::<Text>("memory_byte_seconds::text"),
            sql::<Text>("gpu_seconds::text"),
        ))
        .load(conn)
        .await?;
    let whole = |s: &str| s.parse::<u128>().map_err(|e| TeamError::Internal(format!("usage sum {s:?}: {e}")));
    rows.into_iter()
        .map(|(user, cpu, memory, gpu)| {
            let totals = Totals {
                cpu_nanocore_seconds: whole(&cpu)?,
                memory_byte_seconds: whole(&memory)?,
                gpu_seconds: whole(&gpu)?,
            };
            Ok((user, totals))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_exact_decimals() {
        // 250 millicores for 900 s, 1 GiB for 900 s, one GPU for 900 s.
        let t =
            Totals { cpu_nanocore_seconds: 250_000_000 * 900, memory_byte_seconds: (1 << 30) * 900, gpu_seconds: 900 };
        let month = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default();
        let h = t.hours(month);
        assert_eq!(
            (h.cpu_core_hours.as_str(), h.memory_gib_hours.as_str(), h.gpu_hours.as_str()),
            ("0.0625", "0.25", "0.25")
        );
        assert_eq!(decimal(0, GPU_SECONDS_PER_GPU_HOUR), "0");
        assert_eq!(decimal(7200, GPU_SECONDS_PER_GPU_HOUR), "2");
        // One byte for 900 s needs all 32 places.
        assert_eq!(decimal(900, BYTE_SECONDS_PER_GIB_HOUR), "0.00000000023283064365386962890625");
        // Sums beyond 64 bits stay exact.
        let big = u128::from(u64::MAX) * 3;
        assert_eq!(decimal(big, 1), big.to_string());
    }

    #[test]
    fn a_month_is_the_utc_month_of_the_window_start() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T23:59:59Z").map(|t| t.with_timezone(&Utc)).ok();
        assert_eq!(t.map(month_of), NaiveDate::from_ymd_opt(2026, 11, 1));
    }
}
