//! Storage read back for the usage views: per (UTC day, user, owner, cluster, namespace), the
//! byte-seconds the day's attributed samples add up to and their GB-months (over the seconds
//! of the day's calendar month, so a month of constant storage is its size in GB once).

use crate::usage_daily::UsageFilter;
use chrono::{Datelike, NaiveDate};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Date, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::ratio::{Rounding, decimal_text};
use hopsbridge_domain::{ClusterId, OwnerId, UserId};

/// Places GB-months are rendered to (they rarely end: a month's seconds have factors of 3).
pub const GB_MONTH_PLACES: usize = 12;

/// One day of one project's storage, billed to a user and their owner.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct StorageDay {
    /// The UTC day.
    #[diesel(sql_type = Date)]
    pub day: NaiveDate,
    /// The project's creator.
    #[diesel(sql_type = SqlUuid)]
    pub user_id: UserId,
    /// Who pays.
    #[diesel(sql_type = SqlUuid)]
    pub owner_user_id: OwnerId,
    /// The cluster.
    #[diesel(sql_type = SqlUuid)]
    pub cluster_id: ClusterId,
    /// The project's namespace.
    #[diesel(sql_type = Text)]
    pub namespace: String,
    /// Offline byte-seconds.
    #[diesel(sql_type = BigInt)]
    pub offline_byte_seconds: i64,
    /// Online byte-seconds.
    #[diesel(sql_type = BigInt)]
    pub online_byte_seconds: i64,
    /// Storage samples added up.
    #[diesel(sql_type = BigInt)]
    pub samples: i64,
    /// Of those, estimated under the gap policy (decision 0076).
    #[diesel(sql_type = BigInt)]
    pub estimated_samples: i64,
}

impl StorageDay {
    /// The day's storage in GB-months (offline and online together), rounded half to even at
    /// [`GB_MONTH_PLACES`] places.
    #[must_use]
    pub fn gb_months(&self) -> String {
        let total = u128::try_from(self.offline_byte_seconds).unwrap_or(0)
            + u128::try_from(self.online_byte_seconds).unwrap_or(0);
        decimal_text(total, 1_000_000_000 * month_seconds(self.day), GB_MONTH_PLACES, Rounding::HalfEven).text
    }
}

/// Seconds of the calendar month `day` falls in.
#[must_use]
pub fn month_seconds(day: NaiveDate) -> u128 {
    let first = day.with_day(1).unwrap_or(day);
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap_or(first);
    u128::try_from((next - first).num_seconds()).unwrap_or(0)
}

/// The storage days matching `filter` (at most `limit`).
///
/// # Errors
/// When Postgres fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &UsageFilter,
    limit: i64,
) -> diesel::QueryResult<Vec<StorageDay>> {
    // Raw SQL: a grouped sum whose bigint result the DSL types as numeric.
    diesel::sql_query(
        "SELECT (window_start AT TIME ZONE 'UTC')::date AS day, user_id, owner_user_id, cluster_id, namespace,
                sum(offline_byte_seconds)::bigint AS offline_byte_seconds,
                sum(online_byte_seconds)::bigint AS online_byte_seconds, count(*) AS samples,
                count(*) FILTER (WHERE estimated) AS estimated_samples
         FROM storage_samples
         WHERE owner_user_id IS NOT NULL
           AND window_start >= $1::date AND window_start < $2::date + 1
           AND ($3::uuid IS NULL OR user_id = $3)
           AND ($4::uuid IS NULL OR owner_user_id = $4)
           AND ($5::uuid IS NULL OR user_id = $5 OR owner_user_id = $5)
           AND ($6::uuid IS NULL OR cluster_id = $6)
         GROUP BY 1, 2, 3, 4, 5
         ORDER BY 1, 2, 4, 5
         LIMIT $7",
    )
    .bind::<Date, _>(filter.from)
    .bind::<Date, _>(filter.to)
    .bind::<Nullable<SqlUuid>, _>(filter.user)
    .bind::<Nullable<SqlUuid>, _>(filter.owner)
    .bind::<Nullable<SqlUuid>, _>(filter.person)
    .bind::<Nullable<SqlUuid>, _>(filter.cluster)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_of_one_gb_is_one_gb_month() {
        let day = NaiveDate::from_ymd_opt(2026, 2, 10).unwrap_or_default();
        assert_eq!(month_seconds(day), 28 * 86_400);
        let whole_month = StorageDay {
            day,
            user_id: UserId::from(uuid::Uuid::nil()),
            owner_user_id: OwnerId::from(uuid::Uuid::nil()),
            cluster_id: ClusterId::from(uuid::Uuid::nil()),
            namespace: "p".into(),
            offline_byte_seconds: 1_000_000_000 * 28 * 86_400,
            online_byte_seconds: 0,
            samples: 1,
            estimated_samples: 0,
        };
        assert_eq!(whole_month.gb_months(), "1");
    }
}
