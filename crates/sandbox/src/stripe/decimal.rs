//! Exact decimal arithmetic for meter values, unit prices and invoice amounts: any number of
//! digits, so a month of usage times a sub-cent price is never rounded before the one rounding
//! Stripe makes, at the invoice line.

use std::cmp::Ordering;
use std::fmt;

/// A signed decimal number: `digits` (least significant first) × 10^-`scale`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dec {
    negative: bool,
    digits: Vec<u8>,
    scale: u32,
}

impl Dec {
    #[must_use]
    pub fn zero() -> Self {
        Self { negative: false, digits: vec![0], scale: 0 }
    }

    #[must_use]
    pub fn from_i64(value: i64) -> Self {
        Self::parse(&value.to_string()).unwrap_or_else(Self::zero)
    }

    /// A plain decimal (`-12.5`, `3`, `0.000123`): an optional minus, digits, and an optional
    /// fraction of digits. No exponent, no `+`, no bare `.5`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (negative, unsigned) = text.strip_prefix('-').map_or((false, text), |rest| (true, rest));
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(fraction)
            || (unsigned.contains('.') && fraction.is_empty())
        {
            return None;
        }
        let digits = whole.bytes().chain(fraction.bytes()).rev().map(|b| b - b'0').collect();
        let scale = u32::try_from(fraction.len()).ok()?;
        Some(Self { negative, digits, scale }.normalized())
    }

    fn normalized(mut self) -> Self {
        while self.digits.len() > 1 && self.digits.last() == Some(&0) {
            self.digits.pop();
        }
        if self.digits.is_empty() {
            self.digits.push(0);
        }
        if self.is_zero() {
            self.negative = false;
        }
        self
    }

    /// The same number without trailing zeros in its fraction.
    #[must_use]
    pub fn trimmed(mut self) -> Self {
        if self.is_zero() {
            return Self::zero();
        }
        let zeros = self.digits.iter().take_while(|d| **d == 0).count();
        let drop = zeros.min(usize::try_from(self.scale).unwrap_or(0));
        self.digits.drain(..drop);
        self.scale -= u32::try_from(drop).unwrap_or(0);
        self.normalized()
    }

    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.digits.iter().all(|d| *d == 0)
    }

    #[must_use]
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Digits after the decimal point, trailing zeros not counted.
    #[must_use]
    pub fn decimal_places(&self) -> u32 {
        self.clone().trimmed().scale
    }

    /// Digits from the first non-zero one to the last, trailing fractional zeros not counted
    /// (`0.00120` has 2, `1200` has 4).
    #[must_use]
    pub fn significant_digits(&self) -> usize {
        let t = self.clone().trimmed();
        if t.is_zero() {
            return 1;
        }
        t.digits.iter().rposition(|d| *d != 0).unwrap_or(0) + 1
    }

    fn rescaled(&self, scale: u32) -> Vec<u8> {
        let mut digits = vec![0; usize::try_from(scale.saturating_sub(self.scale)).unwrap_or(0)];
        digits.extend_from_slice(&self.digits);
        digits
    }

    #[must_use]
    pub fn add(&self, other: &Self) -> Self {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.rescaled(scale), other.rescaled(scale));
        let (negative, digits) = if self.negative == other.negative {
            (self.negative, add_magnitudes(&a, &b))
        } else {
            match compare_magnitudes(&a, &b) {
                Ordering::Less => (other.negative, sub_magnitudes(&b, &a)),
                _ => (self.negative, sub_magnitudes(&a, &b)),
            }
        };
        Self { negative, digits, scale }.normalized()
    }

    #[must_use]
    pub fn mul(&self, other: &Self) -> Self {
        let mut product = vec![0_u32; self.digits.len() + other.digits.len()];
        for (i, a) in self.digits.iter().enumerate() {
            for (j, b) in other.digits.iter().enumerate() {
                product[i + j] += u32::from(*a) * u32::from(*b);
            }
        }
        let mut digits = Vec::with_capacity(product.len() + 1);
        let mut carry = 0_u32;
        for cell in product {
            let total = cell + carry;
            digits.push(u8::try_from(total % 10).unwrap_or(0));
            carry = total / 10;
        }
        while carry > 0 {
            digits.push(u8::try_from(carry % 10).unwrap_or(0));
            carry /= 10;
        }
        Self { negative: self.negative != other.negative, digits, scale: self.scale + other.scale }.normalized()
    }

    /// Rounded to `places` decimals, half away from zero (Stripe's "1.5 is rounded up to 2").
    #[must_use]
    pub fn round_half_up(&self, places: u32) -> Self {
        if self.scale <= places {
            return self.clone();
        }
        let drop = usize::try_from(self.scale - places).unwrap_or(0);
        let up = drop <= self.digits.len() && self.digits.get(drop - 1).is_some_and(|d| *d >= 5);
        let mut kept: Vec<u8> = self.digits.iter().skip(drop).copied().collect();
        if kept.is_empty() {
            kept.push(0);
        }
        if up {
            kept = add_magnitudes(&kept, &[1]);
        }
        Self { negative: self.negative, digits: kept, scale: places }.normalized()
    }

    /// The integer value once rounded half up, if it fits.
    #[must_use]
    pub fn to_i64_rounded(&self) -> Option<i64> {
        self.round_half_up(0).to_string().parse().ok()
    }

    #[must_use]
    pub fn to_f64(&self) -> f64 {
        self.to_string().parse().unwrap_or(0.0)
    }
}

impl fmt::Display for Dec {
    /// Without trailing fractional zeros: `12.5`, `3`, `-0.000123`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.clone().trimmed();
        let scale = usize::try_from(t.scale).unwrap_or(0);
        let mut digits = t.digits.clone();
        digits.resize(digits.len().max(scale + 1), 0);
        let text: String = digits.iter().rev().map(|d| char::from(b'0' + d)).collect();
        let (whole, fraction) = text.split_at(text.len() - scale);
        let sign = if t.negative { "-" } else { "" };
        if fraction.is_empty() { write!(f, "{sign}{whole}") } else { write!(f, "{sign}{whole}.{fraction}") }
    }
}

fn compare_magnitudes(a: &[u8], b: &[u8]) -> Ordering {
    let length = |x: &[u8]| x.iter().rposition(|d| *d != 0).map_or(0, |i| i + 1);
    let (la, lb) = (length(a), length(b));
    if la != lb {
        return la.cmp(&lb);
    }
    (0..la).rev().map(|i| a[i].cmp(&b[i])).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
}

fn add_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let mut carry = 0;
    for i in 0..a.len().max(b.len()) {
        let total = a.get(i).copied().unwrap_or(0) + b.get(i).copied().unwrap_or(0) + carry;
        out.push(total % 10);
        carry = total / 10;
    }
    if carry > 0 {
        out.push(carry);
    }
    out
}

/// `a - b` for `a >= b`.
fn sub_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0;
    for (i, digit) in a.iter().enumerate() {
        let mut value = i16::from(*digit) - i16::from(b.get(i).copied().unwrap_or(0)) - borrow;
        borrow = i16::from(value < 0);
        if value < 0 {
            value += 10;
        }
        out.push(u8::try_from(value).unwrap_or(0));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::Dec;

    fn d(text: &str) -> Dec {
        Dec::parse(text).unwrap()
    }

    #[test]
    fn parses_plain_decimals_only() {
        for bad in ["", "-", "1.", ".5", "1e5", "+1", "1.2.3", "12a", " 1"] {
            assert!(Dec::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(d("-0.000").to_string(), "0");
        assert_eq!(d("012.3400").to_string(), "12.34");
        assert_eq!(d("1200").to_string(), "1200");
    }

    #[test]
    fn counts_significant_digits_and_places() {
        assert_eq!(d("1234567890.12345").significant_digits(), 15);
        assert_eq!(d("1234567890.123456").significant_digits(), 16);
        assert_eq!(d("0.000012345678901230").significant_digits(), 13);
        assert_eq!(d("999999.999999999").significant_digits(), 15);
        assert_eq!(d("1200").significant_digits(), 4);
        assert_eq!(d("0").significant_digits(), 1);
        assert_eq!(d("0.350").decimal_places(), 2);
    }

    #[test]
    fn adds_multiplies_and_rounds_exactly() {
        assert_eq!(d("0.1").add(&d("0.2")).to_string(), "0.3");
        assert_eq!(d("1.5").add(&d("-2.25")).to_string(), "-0.75");
        assert_eq!(d("-1.5").add(&d("2.25")).to_string(), "0.75");
        assert_eq!(d("12.345678901").mul(&d("0.35")).to_string(), "4.32098761535");
        assert_eq!(d("12.345678901").mul(&d("3.5")).to_string(), "43.2098761535");
        assert_eq!(d("1.5").round_half_up(0).to_string(), "2");
        assert_eq!(d("2.4999999").round_half_up(0).to_string(), "2");
        assert_eq!(d("-1.5").round_half_up(0).to_string(), "-2");
        assert_eq!(d("0.004").round_half_up(2).to_string(), "0");
        assert_eq!(d("9.995").round_half_up(2).to_string(), "10");
        assert_eq!(d("0.5").to_i64_rounded(), Some(1));
        let big = d("999999.999999999").mul(&d("1000000")).mul(&d("123.456789012345"));
        assert_eq!(big.to_string(), "123456789012344.876543210987655");
    }
}
