//! The metered prices every subscription is made of: one billing meter and one metered price
//! per resource, found by the meter's event name and the price's lookup key, and created only
//! when missing, so that restarts and replicas never make duplicates.

use crate::config::{Rate, Rates};
use crate::stripe::{List, Meter, Object, Price, Stripe, StripeError, params};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The price ids of the three metered resources, in subscription item order (CPU, RAM, GPU).
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
}

impl CatalogError {
    /// True when trying again may work.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Stripe(e) => e.is_retryable(),
            Self::Mismatch(_) => false,
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
        let mut prices = Vec::with_capacity(3);
        for (_, rate) in self.rates.all() {
            let meter = self.meter(rate).await?;
            prices.push(self.price(rate, &meter).await?);
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

    async fn price(&self, rate: &Rate, meter: &str) -> Result<String, CatalogError> {
        if let Some(price) = self.find_price(&rate.lookup_key).await? {
            return self.check(rate, meter, &price).map(|()| price.id);
        }
        let product = self.product(rate).await?;
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

    /// The product of a resource has a fixed id, so it too is created once.
    async fn product(&self, rate: &Rate) -> Result<String, CatalogError> {
        let id = format!("hb_{}", rate.meter_event_name);
        match self.stripe.get::<Object>(&format!("products/{id}"), &Vec::new()).await {
            Ok(p) => return Ok(p.id),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
        let form = params([("id", id.as_str()), ("name", rate.product_name.as_str()), ("unit_label", "hour")]);
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

/// `"3.50"` and `"3.5"` are the same amount.
fn trim_decimal(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}
