//! Exact usage: integer resource-seconds, rendered as decimal hours without floats.
//!
//! A window of `secs` seconds at a CPU rate of `n` nanocores is `n × secs` nanocore-seconds,
//! which is `n × secs / (10^9 × 3600)` core-hours. The numerators (nanocore-seconds,
//! byte-seconds, GPU-seconds) are integers and add exactly, so they are what is kept; hours
//! are a rendering of `numerator / denominator` (decision 0020). The rendering is exact
//! whenever the quotient has a finite decimal expansion within [`MAX_SCALE`] places, which is
//! always the case for sums of 900 s windows (the default); otherwise it is rounded half to
//! even at [`MAX_SCALE`] places and says so. The units and the long division are the domain's
//! (`hopsbridge_domain::ratio`), shared with billing and team.

pub use hopsbridge_domain::ratio::{
    BYTE_SECONDS_PER_GIB_HOUR, DecimalText as Decimal, GPU_SECONDS_PER_GPU_HOUR, HOURS_PLACES as MAX_SCALE,
    NANOCORE_SECONDS_PER_CORE_HOUR,
};
use hopsbridge_domain::ratio::{Rounding, decimal_text};
use std::ops::{Add, AddAssign};

/// Usage over some time, exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usage {
    /// CPU, nanocore-seconds.
    pub cpu_nanocore_seconds: u128,
    /// Memory working set, byte-seconds.
    pub memory_byte_seconds: u128,
    /// GPUs held, GPU-seconds.
    pub gpu_seconds: u128,
}

impl Usage {
    /// `cpu_nanocores`, `memory_bytes` and `gpus` held for `secs` seconds.
    #[must_use]
    pub fn of_rates(cpu_nanocores: u128, memory_bytes: u128, gpus: u128, secs: u32) -> Self {
        let secs = u128::from(secs);
        Self {
            cpu_nanocore_seconds: cpu_nanocores.saturating_mul(secs),
            memory_byte_seconds: memory_bytes.saturating_mul(secs),
            gpu_seconds: gpus.saturating_mul(secs),
        }
    }

    /// Core-hours.
    #[must_use]
    pub fn cpu_core_hours(&self) -> Hours {
        Hours::new(self.cpu_nanocore_seconds, NANOCORE_SECONDS_PER_CORE_HOUR)
    }

    /// GiB-hours.
    #[must_use]
    pub fn memory_gib_hours(&self) -> Hours {
        Hours::new(self.memory_byte_seconds, BYTE_SECONDS_PER_GIB_HOUR)
    }

    /// GPU-hours.
    #[must_use]
    pub fn gpu_hours(&self) -> Hours {
        Hours::new(self.gpu_seconds, GPU_SECONDS_PER_GPU_HOUR)
    }

    /// Whether nothing was used.
    #[must_use]
    pub const fn is_zero(&self) -> bool {
        self.cpu_nanocore_seconds == 0 && self.memory_byte_seconds == 0 && self.gpu_seconds == 0
    }
}

impl Add for Usage {
    type Output = Self;

    fn add(self, o: Self) -> Self {
        Self {
            cpu_nanocore_seconds: self.cpu_nanocore_seconds.saturating_add(o.cpu_nanocore_seconds),
            memory_byte_seconds: self.memory_byte_seconds.saturating_add(o.memory_byte_seconds),
            gpu_seconds: self.gpu_seconds.saturating_add(o.gpu_seconds),
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}

/// An exact quantity of hours: `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    numerator: u128,
    denominator: u128,
}

impl Hours {
    /// `numerator / denominator` hours (`denominator` is one of this module's constants).
    #[must_use]
    pub const fn new(numerator: u128, denominator: u128) -> Self {
        Self { numerator, denominator }
    }

    /// The numerator (resource-seconds in the unit of the denominator).
    #[must_use]
    pub const fn numerator(&self) -> u128 {
        self.numerator
    }

    /// The denominator.
    #[must_use]
    pub const fn denominator(&self) -> u128 {
        self.denominator
    }

    /// The value as a decimal string, by long division, rounded half to even at
    /// [`MAX_SCALE`] places when it does not end before.
    #[must_use]
    pub fn to_decimal(&self) -> Decimal {
        decimal_text(self.numerator, self.denominator, MAX_SCALE, Rounding::HalfEven)
    }
}

impl std::fmt::Display for Hours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_decimal().text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn gcd(a: u128, b: u128) -> u128 {
        if b == 0 { a } else { gcd(b, a % b) }
    }

    fn dec(n: u128, d: u128) -> (String, bool) {
        let x = Hours::new(n, d).to_decimal();
        (x.text, x.exact)
    }

    #[test]
    fn the_brief_formulas_hold_exactly() {
        // 250m for 900 s = 0.25 × 0.25 h = 0.0625 core-hours.
        let u = Usage::of_rates(250_000_000, 1 << 30, 1, 900);
        assert_eq!(u.cpu_core_hours().to_string(), "0.0625");
        assert_eq!(u.memory_gib_hours().to_string(), "0.25");
        assert_eq!(u.gpu_hours().to_string(), "0.25");
        // One nanocore for 900 s: 900 / 3.6e12 = 2.5e-10, exact.
        assert_eq!(dec(900, NANOCORE_SECONDS_PER_CORE_HOUR), ("0.00000000025".to_owned(), true));
        // One byte for 900 s: 1 / 2^32 needs 32 places, exact.
        let one_byte = Usage::of_rates(0, 1, 0, 900).memory_gib_hours().to_decimal();
        assert_eq!(one_byte.text, "0.00000000023283064365386962890625");
        assert!(one_byte.exact);
        assert_eq!(Usage::default().cpu_core_hours().to_string(), "0");
        assert_eq!(Usage::of_rates(3_000_000_000, 0, 0, 3600).cpu_core_hours().to_string(), "3");
    }

    #[test]
    fn any_rate_over_a_default_window_renders_exactly() {
        let mut x: u128 = 1;
        for i in 0..2000_u128 {
            x = (x * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % (1 << 64);
            let u = Usage::of_rates(x % 1_000_000_000_000, x % (1 << 40), i % 9, 900);
            for h in [u.cpu_core_hours(), u.memory_gib_hours(), u.gpu_hours()] {
                let d = h.to_decimal();
                assert!(d.exact, "{h:?} -> {}", d.text);
                // Read back: digits × denominator = numerator × 10^scale.
                let (whole, frac) = d.text.split_once('.').unwrap_or((&d.text, ""));
                // whole = n / d and frac / 10^s = (n % d) / d, checked on the reduced fraction
                // r / q (q divides 10^s when the expansion is exact) to stay inside u128.
                let (n, den) = (h.numerator(), h.denominator());
                assert_eq!(whole.parse::<u128>().unwrap(), n / den, "{}", d.text);
                let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().unwrap() };
                let g = gcd(n % den, den);
                let (r, q) = ((n % den) / g, den / g);
                let pow = 10_u128.pow(u32::try_from(frac.len()).unwrap());
                assert_eq!(pow % q, 0, "{}", d.text);
                assert_eq!(frac_value, r * (pow / q), "{}", d.text);
            }
        }
    }

    #[test]
    fn a_repeating_value_is_rounded_half_to_even_and_says_so() {
        // One core for one second: 1/3600 h = 0.000277…
        let (text, exact) = dec(NANOCORE_SECONDS_PER_CORE_HOUR / 3600, NANOCORE_SECONDS_PER_CORE_HOUR);
        assert_eq!(text, "0.00027777777777777777777777777778");
        assert!(!exact);
        assert_eq!(dec(1, 3), ("0.33333333333333333333333333333333".to_owned(), false));
        assert_eq!(dec(2, 3), ("0.66666666666666666666666666666667".to_owned(), false));
        // Carries through nines into the whole part.
        let nines = 10_u128.pow(33) - 1; // 0.999…9 (33 nines) rounds up to 1.
        assert_eq!(dec(nines, 10_u128.pow(33)), ("1".to_owned(), false));
        // Exact halves at the last place go to even.
        assert_eq!(dec(5, 10_u128.pow(33)), ("0".to_owned(), false));
        assert_eq!(dec(15, 10_u128.pow(33)), ("0.00000000000000000000000000000002".to_owned(), false));
    }

    #[test]
    fn sums_are_exact() {
        let a = Usage::of_rates(1, 1, 1, 1);
        let mut total = Usage::default();
        for _ in 0..3600 {
            total += a;
        }
        assert_eq!(total, Usage::of_rates(1, 1, 1, 3600));
        assert_eq!(total.gpu_hours().to_string(), "1");
        assert!(!total.is_zero());
        assert!(Usage::default().is_zero());
    }
}
