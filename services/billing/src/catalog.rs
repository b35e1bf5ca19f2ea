//! The metered prices subscriptions are made of: one billing meter and one metered price per
//! version of the price book (Stripe's prices are immutable, and an invoice line is one meter's
//! events times one price), found by the meter's event name and the price's lookup key, and
//! created only when missing, so that restarts and replicas never make duplicates.
//!
//! The versions seeded from configuration use the configured names (`rates.*`); a later
//! version's names are derived from its id (`hb_<resource>_<uuid>`). `stripe_prices` records
//! each version's meter and price ([`Prices::version`]); [`sync_items`] gives every live
//! subscription an item of each version in force now or later, before any day at that price
//! is reported.

use crate::config::{Rate, Rates};
use crate::money::Resource;
use crate::prices::{self, Price as Version};
use crate::schema::{stripe_prices, subscription_items};
use crate::stripe::{List, Meter, Object, Price, Stripe, StripeError, Subscription, params};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::sync::Arc;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The price ids of the metered resources, in subscription item order (CPU, RAM, GPU, offline
/// and online storage: [`Rates::all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// `price_…` ids.
    pub prices: Vec<String>,
}

/// Why the catalog could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Stripe failed.
    #[error(transparent)]
    Stripe(#[from] StripeError),
    /// A price with the configured lookup key exists but differs from the configuration.
    #[error("{0}")]
    Mismatch(String),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    /// The price book has no version of a resource in force.
    #[error("no price of {0} is in force")]
    NoPrice(Resource),
}

impl CatalogError {
    /// True when trying again may work.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Stripe(e) => e.is_retryable(),
            Self::Db(_) => true,
            Self::Mismatch(_) | Self::NoPrice(_) => false,
        }
    }
}

/// The catalog, ensured once and then remembered.
#[derive(Debug, Clone)]
pub struct Prices {
    stripe: Stripe,
    rates: Rates,
    currency: String,
    ready: Arc<OnceCell<Catalog>>,
}

impl Prices {
    /// The catalog of `rates` in `currency`, ensured on first use.
    #[must_use]
    pub fn new(stripe: Stripe, rates: Rates, currency: String) -> Self {
        Self { stripe, rates, currency, ready: Arc::new(OnceCell::new()) }
    }

    /// The catalog, finding or creating its meters and prices the first time (one caller does
    /// it while the others wait).
    ///
    /// # Errors
    /// [`CatalogError`]; nothing is remembered, so the next call tries again.
    pub async fn get(&self) -> Result<Catalog, CatalogError> {
        self.ready.get_or_try_init(|| self.ensure()).await.cloned()
    }

    async fn ensure(&self) -> Result<Catalog, CatalogError> {
        let mut prices = Vec::with_capacity(crate::money::RESOURCES);
        for resource in Resource::ALL {
            let rate = self.rates.of(resource);
            let meter = self.meter(rate).await?;
            prices.push(self.price_of(rate, rate, &meter, resource).await?);
        }
        Ok(Catalog { prices })
    }

    async fn find_meter(&self, event_name: &str) -> Result<Option<Meter>, StripeError> {
        let mut after: Option<String> = None;
        loop {
            let mut query = params([("limit", "100"), ("status", "active")]);
            if let Some(a) = &after {
                query.push(("starting_after".into(), a.clone()));
            }
            let page: List<Meter> = self.stripe.get("billing/meters", &query).await?;
            if let Some(m) = page.data.iter().find(|m| m.event_name == event_name && m.status == "active") {
                return Ok(Some(m.clone()));
            }
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                _ => return Ok(None),
            }
        }
    }

    /// The configured rate of `resource`.
    const fn base(&self, resource: Resource) -> &Rate {
        self.rates.of(resource)
    }

    /// The meter and price names of `version`: the configured ones for a version seeded from
    /// configuration (in force from the epoch, recorded by nobody), else derived from its id.
    fn names(&self, version: &Version) -> Rate {
        let base = self.base(version.resource);
        let amount = version.unit_amount_decimal.normalize().to_string();
        if version.created_by.is_none() && version.effective_from == DateTime::<Utc>::UNIX_EPOCH {
            return Rate { unit_amount_decimal: amount, ..base.clone() };
        }
        let name = format!("hb_{}_{}", version.resource, version.id.simple());
        Rate {
            product_name: base.product_name.clone(),
            meter_event_name: name.clone(),
            lookup_key: name,
            unit_amount_decimal: amount,
        }
    }

    /// The meter and price of `version`, recorded in `stripe_prices`; found or created in
    /// Stripe the first time.
    ///
    /// # Errors
    /// [`CatalogError`].
    pub async fn version(&self, conn: &mut AsyncPgConnection, version: &Version) -> Result<StripePrice, CatalogError> {
        if let Some(known) =
            stripe_prices::table.find(version.id).select(StripePrice::as_select()).first(conn).await.optional()?
        {
            return Ok(known);
        }
        let rate = self.names(version);
        let base = self.base(version.resource).clone();
        let meter = self.meter(&rate).await?;
        let price = self.price_of(&rate, &base, &meter, version.resource).await?;
        let row = StripePrice {
            price_id: version.id,
            meter_id: meter,
            event_name: rate.meter_event_name,
            stripe_price_id: price,
        };
        diesel::insert_into(stripe_prices::table)
            .values(&row)
            .on_conflict(stripe_prices::price_id)
            .do_nothing()
            .execute(conn)
            .await?;
        Ok(row)
    }

    /// Every version of the price book in Stripe; answers them all.
    ///
    /// # Errors
    /// [`CatalogError`].
    pub async fn ensure_versions(&self, conn: &mut AsyncPgConnection) -> Result<Vec<StripePrice>, CatalogError> {
        let book = prices::book(conn).await?;
        let mut all = Vec::new();
        for version in book.iter() {
            all.push(self.version(conn, version).await?);
        }
        Ok(all)
    }

    /// The versions in force at `at`, one per resource in [`Resource::ALL`] order, each with
    /// its meter and price (found or created first).
    ///
    /// # Errors
    /// [`CatalogError`].
    pub async fn in_force(
        &self,
        conn: &mut AsyncPgConnection,
        at: DateTime<Utc>,
    ) -> Result<Vec<StripePrice>, CatalogError> {
        let book = prices::book(conn).await?;
        let mut out = Vec::with_capacity(crate::money::RESOURCES);
        for resource in Resource::ALL {
            let version = book.in_force(resource, at).ok_or(CatalogError::NoPrice(resource))?;
            out.push(self.version(conn, version).await?);
        }
        Ok(out)
    }

    async fn meter(&self, rate: &Rate) -> Result<String, CatalogError> {
        if let Some(m) = self.find_meter(&rate.meter_event_name).await? {
            return Ok(m.id);
        }
        let form = params([
            ("display_name", rate.product_name.as_str()),
            ("event_name", rate.meter_event_name.as_str()),
            ("default_aggregation[formula]", "sum"),
            ("customer_mapping[type]", "by_id"),
            ("customer_mapping[event_payload_key]", "stripe_customer_id"),
            ("value_settings[event_payload_key]", "value"),
        ]);
        let key = format!("hb-meter-{}", rate.meter_event_name);
        match self.stripe.post::<Meter>("billing/meters", &form, Some(&key)).await {
            Ok(m) => Ok(m.id),
            // Another replica created it between our look-up and our create.
            Err(e @ StripeError::Api { status: 400, .. }) => match self.find_meter(&rate.meter_event_name).await? {
                Some(m) => Ok(m.id),
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn find_price(&self, lookup_key: &str) -> Result<Option<Price>, StripeError> {
        let query = params([("lookup_keys[0]", lookup_key), ("active", "true"), ("limit", "10")]);
        let page: List<Price> = self.stripe.get("prices", &query).await?;
        Ok(page.data.into_iter().find(|p| p.active && p.lookup_key.as_deref() == Some(lookup_key)))
    }

    /// The price of `rate` on `meter`, under the product of the resource's configured `base`.
    async fn price_of(
        &self,
        rate: &Rate,
        base: &Rate,
        meter: &str,
        resource: Resource,
    ) -> Result<String, CatalogError> {
        if let Some(price) = self.find_price(&rate.lookup_key).await? {
            return self.check(rate, meter, &price).map(|()| price.id);
        }
        let product = self.product(base, resource).await?;
        let form = params([
            ("product", product.as_str()),
            ("currency", self.currency.as_str()),
            ("unit_amount_decimal", rate.unit_amount_decimal.as_str()),
            ("recurring[interval]", "month"),
            ("recurring[usage_type]", "metered"),
            ("recurring[meter]", meter),
            ("lookup_key", rate.lookup_key.as_str()),
            ("nickname", rate.product_name.as_str()),
        ]);
        let key = format!("hb-price-{}", rate.lookup_key);
        let price: Price = self.stripe.post("prices", &form, Some(&key)).await?;
        Ok(price.id)
    }

    /// The product of a resource has a fixed id, so it too is created once. Its unit label is
    /// what the price is per: `hour` for the hourly units, `GB-month` for storage.
    async fn product(&self, rate: &Rate, resource: Resource) -> Result<String, CatalogError> {
        let id = format!("hb_{}", rate.meter_event_name);
        match self.stripe.get::<Object>(&format!("products/{id}"), &Vec::new()).await {
            Ok(p) => return Ok(p.id),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
        let unit_label = if resource.is_storage() { "GB-month" } else { "hour" };
        let form = params([("id", id.as_str()), ("name", rate.product_name.as_str()), ("unit_label", unit_label)]);
        match self.stripe.post::<Object>("products", &form, Some(&format!("hb-product-{id}"))).await {
            Ok(p) => Ok(p.id),
            Err(e) if e.code() == Some("resource_already_exists") => Ok(id),
            Err(e) => Err(e.into()),
        }
    }

    fn check(&self, rate: &Rate, meter: &str, price: &Price) -> Result<(), CatalogError> {
        let recurring = price.recurring.as_ref();
        let same = price.currency == self.currency
            && price.unit_amount_decimal.as_deref().map(trim_decimal) == Some(trim_decimal(&rate.unit_amount_decimal))
            && recurring.is_some_and(|r| r.usage_type == "metered" && r.meter.as_deref() == Some(meter));
        if same {
            Ok(())
        } else {
            Err(CatalogError::Mismatch(format!(
                "the Stripe price with lookup key {} ({}) does not match the configured rate ({} {} per unit on meter {}); \
                 configure a new lookup key to introduce a new rate",
                rate.lookup_key, price.id, rate.unit_amount_decimal, self.currency, rate.meter_event_name
            )))
        }
    }
}

/// The Stripe meter and price of one price version (`stripe_prices`).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = stripe_prices)]
pub struct StripePrice {
    /// The version (`prices.id`).
    pub price_id: Uuid,
    /// `mtr_…`.
    pub meter_id: String,
    /// The meter's event name, which meter events are sent under.
    pub event_name: String,
    /// `price_…`.
    pub stripe_price_id: String,
}

/// One subscription item of a price version (`subscription_items`).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = subscription_items)]
pub struct Item {
    /// `sub_…`.
    pub subscription_id: String,
    /// The version.
    pub price_id: Uuid,
    /// `si_…`.
    pub item_id: String,
    /// When Stripe added it: usage timestamped before is not billed by it.
    pub added_at: DateTime<Utc>,
}

/// Records the items of `subscription` (as Stripe answered it) whose price is a known version.
///
/// # Errors
/// When Postgres fails.
pub async fn record_items(conn: &mut AsyncPgConnection, subscription: &Subscription) -> QueryResult<()> {
    for item in subscription.items.as_ref().map(|l| l.data.as_slice()).unwrap_or_default() {
        record_item(conn, &subscription.id, item).await?;
    }
    Ok(())
}

async fn record_item(
    conn: &mut AsyncPgConnection,
    subscription: &str,
    item: &crate::stripe::SubscriptionItem,
) -> QueryResult<()> {
    let Some(price_id) = stripe_prices::table
        .filter(stripe_prices::stripe_price_id.eq(&item.price.id))
        .select(stripe_prices::price_id)
        .first::<Uuid>(conn)
        .await
        .optional()?
    else {
        return Ok(());
    };
    let added_at = DateTime::from_timestamp(item.created, 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    diesel::insert_into(subscription_items::table)
        .values((
            subscription_items::subscription_id.eq(subscription),
            subscription_items::price_id.eq(price_id),
            subscription_items::item_id.eq(&item.id),
            subscription_items::added_at.eq(added_at),
        ))
        .on_conflict((subscription_items::subscription_id, subscription_items::price_id))
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// The item of version `price` on `subscription`, when recorded.
///
/// # Errors
/// When Postgres fails.
pub async fn item(conn: &mut AsyncPgConnection, subscription: &str, price: Uuid) -> QueryResult<Option<Item>> {
    subscription_items::table
        .find((subscription, price))
        .filter(subscription_items::removed_at.is_null())
        .select(Item::as_select())
        .first(conn)
        .await
        .optional()
}

#[derive(QueryableByName)]
struct Missing {
    #[diesel(sql_type = diesel::sql_types::Text)]
    subscription_id: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    price_id: Uuid,
}

/// The SQL (`FROM … WHERE …`, aliases `a` for the account and `p` for the price version) of
/// the pairs of a live subscription and a price version in force at `$at` or later that the
/// subscription has no Stripe item of: what [`sync_items`] adds, and what billing's metric
/// `hopsbridge_billing_subscription_items_missing` counts (among versions in force now).
macro_rules! missing_items {
    ($at:literal) => {
        concat!(
            "FROM accounts a CROSS JOIN prices p
             WHERE a.stripe_subscription_id IS NOT NULL
               AND coalesce(a.subscription_status, '') NOT IN ('canceled', 'incomplete_expired')
               AND NOT EXISTS (SELECT 1 FROM prices q WHERE q.resource = p.resource
                               AND q.effective_from > p.effective_from AND q.effective_from <= ",
            $at,
            ")
               AND NOT EXISTS (SELECT 1 FROM subscription_items i
                               WHERE i.subscription_id = a.stripe_subscription_id AND i.price_id = p.id)"
        )
    };
}
pub(crate) use missing_items;

/// Gives every live subscription an item of each price version in force at `now` or later
/// that it lacks (`POST /v1/subscription_items`, `proration_behavior=none`, an
/// `Idempotency-Key` per subscription and version; an item Stripe has already is found and
/// recorded instead). Answers how many items were added or found.
///
/// # Errors
/// [`CatalogError`].
pub async fn sync_items(
    conn: &mut AsyncPgConnection,
    (stripe, catalogue): (&Stripe, &Prices),
    now: DateTime<Utc>,
) -> Result<usize, CatalogError> {
    catalogue.ensure_versions(conn).await?;
    let missing: Vec<Missing> = diesel::sql_query(concat!(
        "SELECT a.stripe_subscription_id AS subscription_id, p.id AS price_id ",
        missing_items!("$1"),
        " ORDER BY 1, 2"
    ))
    .bind::<diesel::sql_types::Timestamptz, _>(now)
    .load(conn)
    .await?;
    let mut done = 0;
    for m in missing {
        let Some(version) =
            stripe_prices::table.find(m.price_id).select(StripePrice::as_select()).first(conn).await.optional()?
        else {
            continue;
        };
        let query = params([("subscription", m.subscription_id.as_str()), ("limit", "100")]);
        let existing: List<crate::stripe::SubscriptionItem> = stripe.get("subscription_items", &query).await?;
        let item = match existing.data.into_iter().find(|i| i.price.id == version.stripe_price_id) {
            Some(found) => found,
            None => {
                let form = params([
                    ("subscription", m.subscription_id.as_str()),
                    ("price", version.stripe_price_id.as_str()),
                    ("proration_behavior", "none"),
                ]);
                let key = format!("hb-item-{}-{}", m.subscription_id, m.price_id.simple());
                match stripe.post("subscription_items", &form, Some(&key)).await {
                    Ok(item) => item,
                    // Cancelled meanwhile: its webhook will record it; nothing to add.
                    Err(e) if e.status() == Some(400) => {
                        tracing::warn!(subscription = %m.subscription_id, error = %e, "subscription item not added");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        record_item(conn, &m.subscription_id, &item).await?;
        done += 1;
    }
    Ok(done)
}

/// `"3.50"` and `"3.5"` are the same amount.
fn trim_decimal(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}
