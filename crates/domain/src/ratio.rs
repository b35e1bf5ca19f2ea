//! Exact quotients of integers as decimal text: how every service shows usage in billed units
//! (core-hours, GiB-hours, GPU-hours) from the integers metering measures, without floats.

/// Nanocore-seconds in a core-hour.
pub const NANOCORE_SECONDS_PER_CORE_HOUR: u128 = 1_000_000_000 * 3600;
/// Byte-seconds in a GiB-hour.
pub const BYTE_SECONDS_PER_GIB_HOUR: u128 = (1 << 30) * 3600;
/// GPU-seconds in a GPU-hour.
pub const GPU_SECONDS_PER_GPU_HOUR: u128 = 3600;
/// Decimal places usage in billed units is written with: a 900 s window's GiB-hours
/// (bytes × 900 / (2^30 × 3600) = bytes / 2^32) and any sum of them end within 32 places;
/// other quotients are rounded there.
pub const HOURS_PLACES: usize = 32;

/// What happens to the digits beyond the last place kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Cut (towards zero).
    Down,
    /// To the nearest, a half away from zero.
    HalfUp,
    /// To the nearest, a half to the even digit.
    HalfEven,
}

/// A quotient written as a decimal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecimalText {
    /// The digits, `123.456`: no exponent, no trailing zeros after the point, no lone point.
    pub text: String,
    /// Whether `text` is the quotient itself (false: rounded at the last place kept).
    pub exact: bool,
}

impl std::fmt::Display for DecimalText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `numerator / denominator` by long division: exact when it ends within `places` decimal
/// places, otherwise rounded there as `rounding` says. A zero denominator is taken as one.
///
/// The remainder stays below the denominator, so `denominator` must be below 2^124 for
/// `remainder × 10` to fit; every unit conversion here is far below that.
#[must_use]
pub fn decimal_text(numerator: u128, denominator: u128, places: usize, rounding: Rounding) -> DecimalText {
    let d = denominator.max(1);
    let mut whole = numerator / d;
    let mut rest = numerator % d;
    let mut digits: Vec<u8> = Vec::new();
    while rest != 0 && digits.len() < places {
        rest = rest.saturating_mul(10);
        digits.push(u8::try_from(rest / d).unwrap_or(0));
        rest %= d;
    }
    let exact = rest == 0;
    let up = !exact
        && match rounding {
            Rounding::Down => false,
            Rounding::HalfUp => rest >= d - rest,
            Rounding::HalfEven => {
                let last = digits.last().copied().map_or(whole % 2 == 1, |x| x % 2 == 1);
                rest > d - rest || (rest == d - rest && last)
            }
        };
    if up {
        let mut carry = true;
        for digit in digits.iter_mut().rev() {
            if *digit == 9 {
                *digit = 0;
            } else {
                *digit += 1;
                carry = false;
                break;
            }
        }
        if carry {
            whole += 1;
        }
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let mut text = whole.to_string();
    if !digits.is_empty() {
        text.push('.');
        text.extend(digits.iter().map(|x| char::from(b'0' + x)));
    }
    DecimalText { text, exact }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: u128, d: u128, places: usize, rounding: Rounding) -> String {
        decimal_text(n, d, places, rounding).text
    }

    #[test]
    fn exact_quotients_are_written_whole_and_marked_exact() {
        assert_eq!(decimal_text(7, 4, 32, Rounding::Down), DecimalText { text: "1.75".into(), exact: true });
        assert_eq!(text(3_600, 3_600, 2, Rounding::HalfUp), "1");
        assert_eq!(text(0, 0, 2, Rounding::HalfUp), "0");
    }

    #[test]
    fn each_rounding_mode_rounds_as_named() {
        assert_eq!(text(2, 3, 2, Rounding::Down), "0.66");
        assert_eq!(text(2, 3, 2, Rounding::HalfUp), "0.67");
        assert_eq!(text(2, 3, 2, Rounding::HalfEven), "0.67");
        assert!(!decimal_text(2, 3, 2, Rounding::HalfUp).exact);
        // Exactly half: up away from zero, or to the even digit.
        assert_eq!(text(5, 8, 2, Rounding::HalfUp), "0.63");
        assert_eq!(text(5, 8, 2, Rounding::HalfEven), "0.62");
        assert_eq!(text(15, 8, 2, Rounding::HalfEven), "1.88");
        assert_eq!(text(5, 2, 0, Rounding::HalfEven), "2");
        assert_eq!(text(7, 2, 0, Rounding::HalfEven), "4");
        // A carry through the nines into the whole part; trailing zeros dropped.
        assert_eq!(text(199, 100, 1, Rounding::HalfUp), "2");
        assert_eq!(text(1_999, 1_000, 2, Rounding::Down), "1.99");
    }
}
