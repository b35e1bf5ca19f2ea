//! Money as an integer count of a currency's minor unit. Never a float.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The currencies Hopsbridge bills in. Each knows its minor-unit exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Currency {
    /// US dollar, cents.
    Usd,
    /// Euro, cents.
    Eur,
}

impl Currency {
    /// Digits after the decimal point in the currency's minor unit.
    #[must_use]
    pub const fn exponent(self) -> u32 {
        match self {
            Self::Usd | Self::Eur => 2,
        }
    }

    /// The ISO 4217 code in Stripe's lowercase form.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Usd => "usd",
            Self::Eur => "eur",
        }
    }
}

/// What can go wrong combining amounts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The two amounts are in different currencies.
    #[error("cannot combine {0:?} with {1:?}")]
    CurrencyMismatch(Currency, Currency),
    /// The result does not fit in 64 bits.
    #[error("amount overflow")]
    Overflow,
}

/// An amount in a currency's minor unit (cents for USD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units; negative for credits and refunds.
    pub minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// An amount of `minor` units of `currency`.
    #[must_use]
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// The sum of two amounts in the same currency.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] or [`MoneyError::Overflow`].
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let minor = self.minor.checked_add(other.minor).ok_or(MoneyError::Overflow)?;
        Ok(Self::new(minor, self.currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = 10_i64.pow(self.currency.exponent());
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        let scale_u = scale.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale_u,
            abs % scale_u,
            self.currency.code(),
            width = self.currency.exponent() as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_in_one_currency_only() {
        let a = Money::new(1_050, Currency::Usd);
        assert_eq!(a.checked_add(Money::new(-50, Currency::Usd)), Ok(Money::new(1_000, Currency::Usd)));
        assert_eq!(
            a.checked_add(Money::new(1, Currency::Eur)),
            Err(MoneyError::CurrencyMismatch(Currency::Usd, Currency::Eur))
        );
        assert_eq!(
            Money::new(i64::MAX, Currency::Usd).checked_add(Money::new(1, Currency::Usd)),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn displays_minor_units_exactly() {
        assert_eq!(Money::new(1_005, Currency::Usd).to_string(), "10.05 usd");
        assert_eq!(Money::new(-7, Currency::Eur).to_string(), "-0.07 eur");
    }
}
