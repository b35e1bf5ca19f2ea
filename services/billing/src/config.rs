//! billing's settings: the shared data-service settings plus Stripe, Checkout, the portal and
//! the usage rates.

use hopsbridge_contracts::Service;
use hopsbridge_platform::Secret;
use hopsbridge_platform::config::{ConfigError, Validate};
use serde::Deserialize;

hopsbridge_platform::data_service_config! {
    /// billing's settings: the sections every data service has, plus `stripe`, `checkout`,
    /// `portal` and `rates`.
    pub struct BillingConfig {
        /// The Stripe account.
        pub stripe: StripeConfig,
        /// Where Stripe Checkout sends the customer back to.
        pub checkout: CheckoutConfig,
        /// Where Stripe's billing portal sends the customer back to.
        pub portal: PortalConfig,
        /// What each metered resource costs.
        pub rates: Rates,
        /// The usage ledger's windows.
        pub ledger: LedgerConfig,
        /// The price book.
        pub prices: PricesConfig,
        /// Prepaid credits.
        pub credits: CreditsConfig,
        /// Spending caps.
        pub caps: CapsConfig,
        /// metering's internal API, for backfill and reconciliation.
        pub metering: MeteringApiConfig,
        /// The daily comparison of the ledger with metering.
        pub reconciliation: ReconciliationConfig,
        /// Postpaid usage reported to Stripe as meter events.
        pub reporting: ReportingConfig,
        /// The plans' limits and the terms' version.
        pub plans: PlansConfig,
        /// Deadlines, grace periods and the enforcer of restrictions.
        pub lifecycle: LifecycleConfig,
    }
}

/// The plans an owner chooses from, and the terms they accept.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlansConfig {
    /// The version of the terms an owner accepts with a plan.
    pub terms_version: String,
    /// The free plan.
    pub free: PlanLimits,
    /// Pay as you go.
    pub payg: PlanLimits,
    /// Prepaid.
    pub prepaid: PlanLimits,
}

/// One plan's limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Active Hopsworks projects allowed.
    pub max_active_projects: i32,
}

/// Deadlines and grace periods of restrictions, and the enforcer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Days an owner moved to free has to come within its project allowance.
    pub project_deadline_days: u32,
    /// Days after an invoice's first failed payment before suspension.
    pub unpaid_suspend_days: u32,
    /// Hours after credits ran out (no card) before suspension.
    pub credits_grace_hours: u32,
    /// Seconds between two passes of the enforcer.
    pub enforce_interval_secs: u64,
}

/// Postpaid usage reported to Stripe as meter events (decision 0044).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportingConfig {
    /// Seconds between two reporting passes.
    pub interval_secs: u64,
    /// Seconds after a UTC day's end before it is reported (metering's late windows land
    /// first); well under the hour Stripe waits between a period's end and its invoice's
    /// finalisation.
    pub close_after_secs: u64,
    /// The most meter events a second (Stripe allows 1,000 in live mode, 25 in test mode).
    pub max_events_per_second: u32,
    /// Meter event requests in flight at once.
    pub in_flight: usize,
}

/// The usage ledger's windows.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Window length in seconds, as metering's `schedule.window_secs`: a billing mode changes
    /// at the start of the next window.
    pub window_secs: u32,
}

/// The price book.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricesConfig {
    /// How far ahead a new price must start, in seconds: the Stripe catalogue must be in place
    /// before the first window it prices.
    pub min_lead_secs: u64,
    /// Seconds between two passes that give each new version its Stripe meter and price and
    /// each live subscription its item (well under `min_lead_secs`).
    pub sync_interval_secs: u64,
}

/// Prepaid credits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditsConfig {
    /// The smallest purchase, in minor units.
    pub min_purchase: i64,
    /// The largest purchase, in minor units.
    pub max_purchase: i64,
    /// The largest promotional grant an admin makes at once, in minor units.
    pub max_grant: i64,
    /// Balances (minor units) at which the owner is mailed, each once per crossing.
    pub alert_thresholds_minor: Vec<i64>,
    /// Where Checkout returns the owner after paying (`{CHECKOUT_SESSION_ID}` is replaced).
    pub success_url: String,
    /// Where Checkout returns the owner after giving up.
    pub cancel_url: String,
}

/// Spending caps.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsConfig {
    /// The largest monthly cap an owner may set, in minor units.
    pub max_minor: i64,
}

/// metering's internal API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringApiConfig {
    /// Its base URL.
    pub url: String,
    /// How long one request may take, in milliseconds.
    pub timeout_ms: u64,
    /// Samples asked for per page.
    pub page_size: u32,
}

/// The daily comparison of the ledger with metering's usage per day.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationConfig {
    /// How many closed UTC days back are compared.
    pub days: u32,
    /// Seconds between two runs (a day in production).
    pub interval_secs: u64,
    /// Seconds after a day's end before it is compared (late samples land first).
    pub grace_secs: u64,
}

/// The Stripe account.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// `https://api.stripe.com` in production; the sandbox's URL in development and tests.
    pub api_base: String,
    /// The secret API key (`sk_…` or a restricted `rk_…`). Required.
    pub secret_key: Secret<String>,
    /// The webhook endpoint's signing secret (`whsec_…`). Required.
    pub webhook_secret: Secret<String>,
    /// The currency prices are created in (ISO 4217, lowercase).
    pub currency: String,
    /// The most requests a second billing sends to Stripe (Stripe allows about 100 in live mode
    /// and 25 in test mode, fewer on some endpoints).
    pub max_requests_per_second: u32,
}

/// Stripe Checkout's return addresses.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutConfig {
    /// Where the customer lands after adding a card (`{CHECKOUT_SESSION_ID}` is replaced by Stripe).
    pub success_url: String,
    /// Where the customer lands after giving up.
    pub cancel_url: String,
}

/// The billing portal's return address.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Where the portal's "return" link goes.
    pub return_url: String,
}

/// The metered resources.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    /// CPU core-hours.
    pub cpu: Rate,
    /// RAM GiB-hours.
    pub ram: Rate,
    /// GPU hours.
    pub gpu: Rate,
    /// Offline (HDFS) storage GB-months.
    pub storage_offline: Rate,
    /// Online (RonDB) storage GB-months.
    pub storage_online: Rate,
}

impl Rates {
    /// Each resource with its configuration key.
    #[must_use]
    pub fn all(&self) -> [(&'static str, &Rate); crate::money::RESOURCES] {
        [
            ("cpu", &self.cpu),
            ("ram", &self.ram),
            ("gpu", &self.gpu),
            ("storage_offline", &self.storage_offline),
            ("storage_online", &self.storage_online),
        ]
    }

    /// The configured rate of `resource`.
    #[must_use]
    pub const fn of(&self, resource: crate::money::Resource) -> &Rate {
        use crate::money::Resource;
        match resource {
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.ram,
            Resource::Gpu => &self.gpu,
            Resource::StorageOffline => &self.storage_offline,
            Resource::StorageOnline => &self.storage_online,
        }
    }
}

/// One metered resource: its Stripe meter and price.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// The product's name on invoices, e.g. "CPU core-hours".
    pub product_name: String,
    /// The billing meter's `event_name`; the meter is found by it.
    pub meter_event_name: String,
    /// The price's `lookup_key`; the price is found by it. A new rate needs a new key.
    pub lookup_key: String,
    /// The price per unit in the currency's minor unit, as a decimal string (`"3.5"` = 3.5 cents),
    /// at most 12 decimal places as Stripe allows.
    pub unit_amount_decimal: String,
}

/// True for a non-negative decimal number written as Stripe's `unit_amount_decimal` takes it.
#[must_use]
pub fn is_unit_amount_decimal(s: &str) -> bool {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    !whole.is_empty()
        && whole.len() <= 12
        && whole.chars().all(|c| c.is_ascii_digit())
        && fraction.len() <= 12
        && fraction.chars().all(|c| c.is_ascii_digit())
        && (!s.contains('.') || !fraction.is_empty())
}

/// The largest amount in minor units any setting or request takes (10^10: a hundred million
/// dollars), so every sum of them fits the money arithmetic with room to spare.
pub const MAX_AMOUNT_MINOR: i64 = 10_000_000_000;

fn is_http_url(s: &str) -> bool {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.chars().any(char::is_whitespace))
}

impl Validate for BillingConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        self.base().validate(service)?;
        let err = |key: &str, reason: &str| Err(ConfigError::new(service, key, reason));
        if !is_http_url(&self.stripe.api_base) {
            return err("stripe.api_base", "must be an http:// or https:// URL");
        }
        let key = self.stripe.secret_key.expose();
        if key.is_empty() {
            return err("stripe.secret_key", "missing");
        }
        if !(key.starts_with("sk_") || key.starts_with("rk_")) {
            return err("stripe.secret_key", "must be a Stripe secret key (sk_… or rk_…)");
        }
        if self.stripe.webhook_secret.expose().len() < 16 {
            return err("stripe.webhook_secret", "missing or shorter than 16 characters");
        }
        if self.stripe.max_requests_per_second == 0 {
            return err("stripe.max_requests_per_second", "must be at least 1");
        }
        let currency = &self.stripe.currency;
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_lowercase()) {
            return err("stripe.currency", "must be a lowercase ISO 4217 code such as usd");
        }
        for (key, value) in [
            ("checkout.success_url", &self.checkout.success_url),
            ("checkout.cancel_url", &self.checkout.cancel_url),
            ("portal.return_url", &self.portal.return_url),
        ] {
            if !is_http_url(value) {
                return err(key, "must be an http:// or https:// URL");
            }
        }
        if self.ledger.window_secs == 0 || 86_400 % self.ledger.window_secs != 0 {
            return err("ledger.window_secs", "must divide a day");
        }
        let c = &self.credits;
        if c.min_purchase < 1 || c.max_purchase < c.min_purchase || c.max_purchase > MAX_AMOUNT_MINOR {
            return err("credits.max_purchase", "need 1 <= min_purchase <= max_purchase <= 10^10");
        }
        if c.max_grant < 1 || c.max_grant > MAX_AMOUNT_MINOR {
            return err("credits.max_grant", "must be between 1 and 10^10");
        }
        if c.alert_thresholds_minor.iter().any(|t| *t < 0 || *t > MAX_AMOUNT_MINOR) {
            return err("credits.alert_thresholds_minor", "each threshold must be between 0 and 10^10");
        }
        for (key, value) in [("credits.success_url", &c.success_url), ("credits.cancel_url", &c.cancel_url)] {
            if !is_http_url(value) {
                return err(key, "must be an http:// or https:// URL");
            }
        }
        if self.caps.max_minor < 1 || self.caps.max_minor > MAX_AMOUNT_MINOR {
            return err("caps.max_minor", "must be between 1 and 10^10");
        }
        if !is_http_url(&self.metering.url) {
            return err("metering.url", "must be an http:// or https:// URL");
        }
        if self.metering.timeout_ms == 0 || !(1..=10_000).contains(&self.metering.page_size) {
            return err("metering.page_size", "timeout_ms must be positive and page_size 1-10000");
        }
        if self.reconciliation.interval_secs == 0 || self.reconciliation.days > 60 {
            return err("reconciliation.days", "days must be at most 60 and interval_secs positive");
        }
        if self.prices.sync_interval_secs == 0 || self.prices.sync_interval_secs >= self.prices.min_lead_secs {
            return err("prices.sync_interval_secs", "must be positive and less than prices.min_lead_secs");
        }
        let r = &self.reporting;
        if r.interval_secs == 0 || r.max_events_per_second == 0 || !(1..=1024).contains(&r.in_flight) {
            return err("reporting", "interval_secs and max_events_per_second must be positive, in_flight 1-1024");
        }
        if r.close_after_secs >= 3000 {
            return err("reporting.close_after_secs", "must leave time before Stripe finalises (under 3000 s)");
        }
        if self.plans.terms_version.trim().is_empty() {
            return err("plans.terms_version", "must not be empty");
        }
        for (plan, limits) in [("free", &self.plans.free), ("payg", &self.plans.payg), ("prepaid", &self.plans.prepaid)]
        {
            if !(0..=10_000).contains(&limits.max_active_projects) {
                return err(&format!("plans.{plan}.max_active_projects"), "must be between 0 and 10000");
            }
        }
        let l = &self.lifecycle;
        if l.enforce_interval_secs == 0 || l.project_deadline_days > 365 || l.unpaid_suspend_days > 365 {
            return err("lifecycle", "enforce_interval_secs must be positive, the day counts at most 365");
        }
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (resource, rate) in self.rates.all() {
            let key = |field: &str| format!("rates.{resource}.{field}");
            if rate.product_name.trim().is_empty() {
                return err(&key("product_name"), "must not be empty");
            }
            let token = |s: &str| {
                !s.is_empty()
                    && s.len() <= 100
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            };
            if !token(&rate.meter_event_name) || !names.insert(rate.meter_event_name.clone()) {
                return err(&key("meter_event_name"), "must be a unique name of letters, digits, _ - .");
            }
            if !token(&rate.lookup_key) || !keys.insert(rate.lookup_key.clone()) {
                return err(&key("lookup_key"), "must be a unique key of letters, digits, _ - .");
            }
            if !is_unit_amount_decimal(&rate.unit_amount_decimal) {
                return err(
                    &key("unit_amount_decimal"),
                    "must be a non-negative decimal in minor units with at most 12 decimal places",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn load(extra: &[(&str, &str)]) -> Result<BillingConfig, ConfigError> {
        let mut env: Vec<(String, String)> = [
            ("HOPSBRIDGE_BILLING__DATABASE__URL", "postgres://postgres@127.0.0.1/x"),
            ("HOPSBRIDGE_BILLING__AUTH__GATEWAY_PUBLIC_KEY", hopsbridge_testkit::public_key(Service::Gateway).as_str()),
            ("HOPSBRIDGE_BILLING__AUTH__SERVICE_KEY", hopsbridge_testkit::service_key(Service::Billing)),
            ("HOPSBRIDGE_BILLING__STRIPE__SECRET_KEY", "sk_test_123"),
            ("HOPSBRIDGE_BILLING__STRIPE__WEBHOOK_SECRET", "whsec_0123456789abcdef"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        hopsbridge_platform::config::load_from(Service::Billing, &crate::DEFAULTS, None, env)
    }

    #[test]
    fn defaults_carry_the_predecessors_rates() {
        let cfg = load(&[]).unwrap();
        assert_eq!(cfg.stripe.api_base, "https://api.stripe.com");
        assert_eq!(cfg.stripe.currency, "usd");
        assert_eq!(cfg.rates.cpu.unit_amount_decimal, "35");
        assert_eq!(cfg.rates.gpu.unit_amount_decimal, "350");
        assert_eq!(cfg.rates.ram.unit_amount_decimal, "3.5");
        assert_eq!(cfg.rates.storage_offline.unit_amount_decimal, "3.5");
        assert_eq!(cfg.rates.storage_online.unit_amount_decimal, "35");
        assert!(!format!("{cfg:?}").contains("sk_test_123"), "the key is redacted");
    }

    #[test]
    fn the_environment_sets_stripe_and_rates() {
        let cfg = load(&[
            ("HOPSBRIDGE_BILLING__STRIPE__API_BASE", "http://127.0.0.1:9999"),
            ("HOPSBRIDGE_BILLING__CHECKOUT__SUCCESS_URL", "https://app.example/billing?ok"),
            ("HOPSBRIDGE_BILLING__RATES__RAM__UNIT_AMOUNT_DECIMAL", "4.25"),
            ("HOPSBRIDGE_BILLING__RATES__STORAGE_ONLINE__UNIT_AMOUNT_DECIMAL", "12.5"),
        ])
        .unwrap();
        assert_eq!(cfg.rates.storage_online.unit_amount_decimal, "12.5");
        assert_eq!(cfg.stripe.api_base, "http://127.0.0.1:9999");
        assert_eq!(cfg.checkout.success_url, "https://app.example/billing?ok");
        assert_eq!(cfg.rates.ram.unit_amount_decimal, "4.25");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (var, value, key) in [
            ("HOPSBRIDGE_BILLING__STRIPE__SECRET_KEY", "", "stripe.secret_key"),
            ("HOPSBRIDGE_BILLING__STRIPE__SECRET_KEY", "pk_test_public", "stripe.secret_key"),
            ("HOPSBRIDGE_BILLING__STRIPE__WEBHOOK_SECRET", "", "stripe.webhook_secret"),
            ("HOPSBRIDGE_BILLING__STRIPE__API_BASE", "api.stripe.com", "stripe.api_base"),
            ("HOPSBRIDGE_BILLING__STRIPE__CURRENCY", "dollars", "stripe.currency"),
            ("HOPSBRIDGE_BILLING__CHECKOUT__CANCEL_URL", "not a url", "checkout.cancel_url"),
            ("HOPSBRIDGE_BILLING__PORTAL__RETURN_URL", "", "portal.return_url"),
            ("HOPSBRIDGE_BILLING__RATES__CPU__UNIT_AMOUNT_DECIMAL", "-1", "rates.cpu.unit_amount_decimal"),
            ("HOPSBRIDGE_BILLING__RATES__GPU__UNIT_AMOUNT_DECIMAL", "3,5", "rates.gpu.unit_amount_decimal"),
            ("HOPSBRIDGE_BILLING__RATES__GPU__LOOKUP_KEY", "hopsbridge_cpu_core_hour_v1", "rates.gpu.lookup_key"),
        ] {
            let e = load(&[(var, value)]).unwrap_err();
            assert_eq!(e.key, key, "{var}={value}: {e}");
            assert_eq!(e.env, var.to_owned(), "{e}");
            assert!(!e.to_string().contains("sk_test_123"), "{e}");
        }
    }

    #[test]
    fn unit_amounts_are_decimals_in_minor_units() {
        for ok in ["0", "35", "3.5", "0.000000000001"] {
            assert!(is_unit_amount_decimal(ok), "{ok}");
        }
        for bad in ["", "-1", "1.", ".5", "1e3", "1.0000000000001", "3,5", "NaN"] {
            assert!(!is_unit_amount_decimal(bad), "{bad}");
        }
    }
}
