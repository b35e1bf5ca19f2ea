//! The price book (`prices`): every version of each resource's price, recorded and never
//! rewritten. A window is priced, per resource, by the version in force at its start; a change
//! at T applies to windows starting at or after T and never splits one.

use crate::config::Rates;
use crate::money::{PRICE_SCALE, RESOURCES, Resource, to_scaled};
use crate::schema::prices;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rust_decimal::Decimal;
use serde::Serialize;
use std::str::FromStr;
use uuid::Uuid;

/// One version of a resource's price.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = prices)]
pub struct Price {
    /// The version's id (the ledger names it per resource).
    pub id: Uuid,
    /// What it prices.
    pub resource: Resource,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// Minor units per billed unit (core-hour, GiB-hour, GPU-hour, GB-month), exact.
    #[schema(value_type = String, example = "3.5")]
    pub unit_amount_decimal: Decimal,
    /// Windows starting at or after this instant use it (until a later version).
    pub effective_from: DateTime<Utc>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// The admin who recorded it; null for the version from configuration.
    pub created_by: Option<Uuid>,
}

/// Parses a price as Stripe's `unit_amount_decimal` takes it: a non-negative decimal with at
/// most [`PRICE_SCALE`] places and at most 12 digits before the point.
#[must_use]
pub fn parse_amount(text: &str) -> Option<Decimal> {
    if !crate::config::is_unit_amount_decimal(text) {
        return None;
    }
    let amount = Decimal::from_str(text).ok()?;
    to_scaled(amount, PRICE_SCALE).map(|_| amount.normalize())
}

/// Every version, as one book.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    /// Per resource (in [`Resource::ALL`] order), oldest first.
    versions: [Vec<Price>; RESOURCES],
}

impl PriceBook {
    /// The book of `prices`.
    #[must_use]
    pub fn new(prices: Vec<Price>) -> Self {
        let mut versions: [Vec<Price>; RESOURCES] = Default::default();
        for p in prices {
            versions[p.resource.index()].push(p);
        }
        for v in &mut versions {
            v.sort_by_key(|p| p.effective_from);
        }
        Self { versions }
    }

    /// The version of `resource` in force at `at`.
    #[must_use]
    pub fn in_force(&self, resource: Resource, at: DateTime<Utc>) -> Option<&Price> {
        self.versions[resource.index()].iter().rev().find(|p| p.effective_from <= at)
    }

    /// The version in force at `at` for every resource, in [`Resource::ALL`] order.
    #[must_use]
    pub fn all_in_force(&self, at: DateTime<Utc>) -> Option<[&Price; RESOURCES]> {
        let mut found = [None; RESOURCES];
        for r in Resource::ALL {
            found[r.index()] = Some(self.in_force(r, at)?);
        }
        Some(found.map(|p| p.unwrap_or_else(|| unreachable!("every resource was found"))))
    }

    /// Every version, by resource then start.
    pub fn iter(&self) -> impl Iterator<Item = &Price> {
        self.versions.iter().flatten()
    }
}

/// The whole book.
///
/// # Errors
/// When Postgres fails.
pub async fn book(conn: &mut AsyncPgConnection) -> QueryResult<PriceBook> {
    let rows = prices::table.select(Price::as_select()).load(conn).await?;
    Ok(PriceBook::new(rows))
}

/// Records the configured rate of each resource without any version as its first version (in
/// force from the epoch): a new deployment seeds them all, and one made before a resource was
/// metered (storage, decision 0057) seeds that resource only. Safe for every replica at once.
///
/// # Errors
/// When Postgres fails, or a configured rate is not a price (configuration is validated, so
/// never in practice).
pub async fn seed(conn: &mut AsyncPgConnection, rates: &Rates, currency: &str) -> anyhow::Result<()> {
    let priced: Vec<Resource> = prices::table.select(prices::resource).distinct().load(conn).await?;
    for resource in Resource::ALL.into_iter().filter(|r| !priced.contains(r)) {
        let rate = rates.of(resource);
        let amount = parse_amount(&rate.unit_amount_decimal)
            .ok_or_else(|| anyhow::anyhow!("rates.{resource}: {} is not a price", rate.unit_amount_decimal))?;
        diesel::insert_into(prices::table)
            .values((
                prices::id.eq(Uuid::now_v7()),
                prices::resource.eq(resource),
                prices::currency.eq(currency),
                prices::unit_amount_decimal.eq(amount),
                prices::effective_from.eq(DateTime::<Utc>::UNIX_EPOCH),
            ))
            .on_conflict((prices::resource, prices::effective_from))
            .do_nothing()
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Records a new version and, when it commits, wakes every replica's catalogue sync
/// ([`CHANGED`]), so Stripe gets its meter, price and subscription items at once; `None` when
/// `resource` already has one starting at `effective_from`.
///
/// # Errors
/// When Postgres fails; nothing is recorded then.
pub async fn create(
    conn: &mut AsyncPgConnection,
    resource: Resource,
    amount: Decimal,
    currency: &str,
    effective_from: DateTime<Utc>,
    by: Option<Uuid>,
) -> QueryResult<Option<Price>> {
    conn.transaction(async |c| {
        let created = diesel::insert_into(prices::table)
            .values((
                prices::id.eq(Uuid::now_v7()),
                prices::resource.eq(resource),
                prices::currency.eq(currency),
                prices::unit_amount_decimal.eq(amount),
                prices::effective_from.eq(effective_from),
                prices::created_by.eq(by),
            ))
            .on_conflict((prices::resource, prices::effective_from))
            .do_nothing()
            .returning(Price::as_returning())
            .get_result(c)
            .await
            .optional()?;
        if created.is_some() {
            // The channel is named after the schema the connection works in, as the listener
            // names it after its service's.
            diesel::sql_query(format!("SELECT pg_notify('{CHANGED}' || current_schema(), '')")).execute(c).await?;
        }
        Ok(created)
    })
    .await
}

/// The Postgres notification channel of price changes, followed by the schema's name.
pub const CHANGED: &str = "hopsbridge_prices_";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn price(resource: Resource, amount: &str, from: i64) -> Price {
        Price {
            id: Uuid::now_v7(),
            resource,
            currency: "usd".into(),
            unit_amount_decimal: Decimal::from_str(amount).unwrap(),
            effective_from: DateTime::from_timestamp(from, 0).unwrap(),
            created_at: DateTime::UNIX_EPOCH,
            created_by: None,
        }
    }

    #[test]
    fn a_window_takes_the_version_in_force_at_its_start() {
        let book = PriceBook::new(vec![
            price(Resource::Cpu, "40", 1000),
            price(Resource::Cpu, "35", 0),
            price(Resource::Memory, "3.5", 0),
        ]);
        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        assert_eq!(book.in_force(Resource::Cpu, at(999)).unwrap().unit_amount_decimal.to_string(), "35");
        assert_eq!(book.in_force(Resource::Cpu, at(1000)).unwrap().unit_amount_decimal.to_string(), "40");
        assert!(book.in_force(Resource::Gpu, at(1000)).is_none());
        assert!(book.all_in_force(at(5)).is_none());
        let mut all: Vec<Price> = Resource::ALL.iter().map(|r| price(*r, "1", 0)).collect();
        all.push(price(Resource::StorageOnline, "2.5", 1000));
        let book = PriceBook::new(all);
        let in_force = book.all_in_force(at(1000)).unwrap();
        assert_eq!(in_force.map(|p| p.resource), Resource::ALL);
        assert_eq!(in_force[4].unit_amount_decimal.to_string(), "2.5");
    }

    #[test]
    fn prices_are_stripe_decimals() {
        assert_eq!(parse_amount("0.35").unwrap().to_string(), "0.35");
        assert_eq!(parse_amount("3.50").unwrap().to_string(), "3.5");
        for bad in ["", "-1", "1e3", "0.0000000000001", "abc", "1.", "1234567890123"] {
            assert!(parse_amount(bad).is_none(), "{bad}");
        }
    }
}
