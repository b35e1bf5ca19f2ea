//! Kubernetes quantities (`resource.Quantity`) parsed exactly, with integer arithmetic only.
//!
//! The grammar is Kubernetes': an optional sign, digits with an optional fraction, then a
//! suffix that is binary SI (`Ki` … `Ei`), decimal SI (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`,
//! `P`, `E`) or a decimal exponent (`e6`, `E-3`). A value is kept as `digits × 10^exp10 × 2^exp2`
//! and converted to the wanted unit only when that is a whole number; anything else is refused
//! with an error naming the value, so nothing is rounded or guessed.

use std::fmt;

/// Why a quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {value:?}: {reason}")]
pub struct QuantityError {
    /// The text as received.
    pub value: String,
    /// What is wrong with it.
    pub reason: QuantityProblem,
}

/// What is wrong with a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityProblem {
    /// Not in the Kubernetes grammar.
    Malformed,
    /// Negative, where usage or a request cannot be.
    Negative,
    /// Finer than the unit (a fraction of a nanocore, of a byte, of a GPU).
    NotWhole,
    /// Larger than the arithmetic holds.
    TooLarge,
}

impl fmt::Display for QuantityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "not a Kubernetes quantity",
            Self::Negative => "negative",
            Self::NotWhole => "not a whole number of the unit",
            Self::TooLarge => "too large",
        })
    }
}

/// A parsed quantity: `digits × 10^exp10 × 2^exp2`, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exact {
    digits: u128,
    exp10: i32,
    exp2: u32,
}

/// More significant digits than any real quantity has; keeps `digits` well inside `u128`.
const MAX_DIGITS: usize = 30;

fn parse(text: &str) -> Result<Exact, QuantityProblem> {
    let s = text.strip_prefix('+').unwrap_or(text);
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(QuantityProblem::Malformed);
    }
    let (mut exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        e => {
            let exponent = e.strip_prefix(['e', 'E']).ok_or(QuantityProblem::Malformed)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityProblem::Malformed);
            }
            (exponent.parse::<i32>().map_err(|_| QuantityProblem::Malformed)?, 0)
        }
    };
    let all = whole.bytes().chain(fraction.bytes()).skip_while(|b| *b == b'0');
    let mut digits: u128 = 0;
    let mut count = 0;
    for b in all {
        count += 1;
        if count > MAX_DIGITS {
            return Err(QuantityProblem::TooLarge);
        }
        digits = digits * 10 + u128::from(b - b'0');
    }
    exp10 -= i32::try_from(fraction.len()).map_err(|_| QuantityProblem::TooLarge)?;
    if negative && digits != 0 {
        return Err(QuantityProblem::Negative);
    }
    Ok(Exact { digits, exp10, exp2 })
}

impl Exact {
    /// The value in units of `10^-unit_exp10` (9 for nanocores, 0 for bytes), if whole.
    fn whole(self, unit_exp10: i32) -> Result<u128, QuantityProblem> {
        if self.digits == 0 {
            return Ok(0);
        }
        let mut v = self.digits;
        let pow2 = 1_u128.checked_shl(self.exp2).ok_or(QuantityProblem::TooLarge)?;
        v = v.checked_mul(pow2).ok_or(QuantityProblem::TooLarge)?;
        let exp = self.exp10 + unit_exp10;
        if exp >= 0 {
            let pow10 = 10_u128.checked_pow(exp.unsigned_abs()).ok_or(QuantityProblem::TooLarge)?;
            v.checked_mul(pow10).ok_or(QuantityProblem::TooLarge)
        } else {
            let pow10 = 10_u128.checked_pow(exp.unsigned_abs()).ok_or(QuantityProblem::NotWhole)?;
            if v.is_multiple_of(pow10) { Ok(v / pow10) } else { Err(QuantityProblem::NotWhole) }
        }
    }
}

fn convert(text: &str, unit_exp10: i32) -> Result<u128, QuantityError> {
    parse(text.trim())
        .and_then(|q| q.whole(unit_exp10))
        .map_err(|reason| QuantityError { value: text.to_owned(), reason })
}

/// A CPU quantity (`250m`, `1`, `1500000n`, `12u`, `0.5`) in nanocores.
///
/// # Errors
/// When it is malformed, negative, finer than a nanocore or too large.
pub fn cpu_nanocores(text: &str) -> Result<u128, QuantityError> {
    convert(text, 9)
}

/// A memory quantity (`128974848`, `129e6`, `123Ki`, `1Gi`, `1G`, `1.5Gi`) in bytes.
///
/// # Errors
/// When it is malformed, negative, a fraction of a byte or too large.
pub fn memory_bytes(text: &str) -> Result<u128, QuantityError> {
    convert(text, 0)
}

/// A count such as `nvidia.com/gpu` (`1`, `2`): a whole, non-negative number.
///
/// # Errors
/// When it is malformed, negative, fractional or larger than `u64`.
pub fn count(text: &str) -> Result<u64, QuantityError> {
    let v = convert(text, 0)?;
    u64::try_from(v).map_err(|_| QuantityError { value: text.to_owned(), reason: QuantityProblem::TooLarge })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use hopsbridge_sandbox::kubernetes::quantity::{write_cpu, write_memory};
    use hopsbridge_sandbox::workload::{CpuGrain, MemFormat, SplitMix64};

    #[test]
    fn cpu_in_every_form_the_brief_and_kubernetes_use() {
        for (text, nanos) in [
            ("250m", 250_000_000),
            ("1", 1_000_000_000),
            ("1500000n", 1_500_000),
            ("12u", 12_000),
            ("0.5", 500_000_000),
            (".5", 500_000_000),
            ("2.", 2_000_000_000),
            ("+1.25", 1_250_000_000),
            ("0", 0),
            ("-0", 0),
            ("0n", 0),
            ("1e3", 1_000_000_000_000),
            ("1E-3", 1_000_000),
            ("3k", 3_000_000_000_000),
            ("0.000000001", 1),
            ("100m", 100_000_000),
            ("007", 7_000_000_000),
        ] {
            assert_eq!(cpu_nanocores(text), Ok(nanos), "{text}");
        }
    }

    #[test]
    fn memory_in_every_form_the_brief_and_kubernetes_use() {
        for (text, bytes) in [
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129E6", 129_000_000),
            ("123Ki", 123 * 1024),
            ("1Gi", 1 << 30),
            ("1G", 1_000_000_000),
            ("1.5Gi", 3 << 29),
            ("512Mi", 512 << 20),
            ("2Ti", 2 << 40),
            ("1Ei", 1 << 60),
            ("1k", 1000),
            ("1.5k", 1500),
            ("0.5Ki", 512),
            ("1000m", 1),
            ("12e+3", 12_000),
        ] {
            assert_eq!(memory_bytes(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn gpus_are_whole_counts() {
        assert_eq!(count("1"), Ok(1));
        assert_eq!(count("2"), Ok(2));
        assert_eq!(count("0"), Ok(0));
        assert_eq!(count("1000m"), Ok(1));
        assert_eq!(count("0.5").unwrap_err().reason, QuantityProblem::NotWhole);
    }

    #[test]
    fn malformed_negative_fractional_and_huge_values_are_refused_naming_the_value() {
        for (text, problem) in [
            ("", QuantityProblem::Malformed),
            ("abc", QuantityProblem::Malformed),
            ("1.2.3", QuantityProblem::Malformed),
            ("1 Gi", QuantityProblem::Malformed),
            ("1gi", QuantityProblem::Malformed),
            ("1KI", QuantityProblem::Malformed),
            ("1e", QuantityProblem::Malformed),
            ("1e1.5", QuantityProblem::Malformed),
            ("1e1000", QuantityProblem::Malformed),
            ("Mi", QuantityProblem::Malformed),
            (".", QuantityProblem::Malformed),
            ("m", QuantityProblem::Malformed),
            ("--1", QuantityProblem::Malformed),
            ("1mm", QuantityProblem::Malformed),
            ("1e3m", QuantityProblem::Malformed),
            ("0x10", QuantityProblem::Malformed),
            ("-1", QuantityProblem::Negative),
            ("-250m", QuantityProblem::Negative),
            ("1e40", QuantityProblem::TooLarge),
            ("1234567890123456789012345678901", QuantityProblem::TooLarge),
        ] {
            let err = memory_bytes(text).unwrap_err();
            assert_eq!(err.reason, problem, "{text:?}");
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
        assert_eq!(cpu_nanocores("0.1n").unwrap_err().reason, QuantityProblem::NotWhole);
        assert_eq!(cpu_nanocores("1e-10").unwrap_err().reason, QuantityProblem::NotWhole);
        assert_eq!(memory_bytes("1.5").unwrap_err().reason, QuantityProblem::NotWhole);
        assert_eq!(memory_bytes("1m").unwrap_err().reason, QuantityProblem::NotWhole);
        assert_eq!(cpu_nanocores("1x").unwrap_err().to_string(), "invalid quantity \"1x\": not a Kubernetes quantity");
    }

    /// Every value the sandbox's metrics-server writes, in every canonical form, reads back as
    /// itself.
    #[test]
    fn what_the_sandbox_writes_reads_back_exactly() {
        let mut rng = SplitMix64::new(42);
        let grains = [CpuGrain::Nano, CpuGrain::Micro, CpuGrain::Milli, CpuGrain::Core];
        let formats = [MemFormat::Bytes, MemFormat::Kibi, MemFormat::Mebi, MemFormat::Exponent, MemFormat::DecimalSi];
        for i in 0..20_000_u64 {
            let scale = 10_u64.pow(u32::try_from(i % 13).unwrap());
            let raw = rng.next_u64() % scale.saturating_mul(1000).max(1);
            let grain = grains[usize::try_from(i % 4).unwrap()];
            let nanos = if i % 17 == 0 { raw } else { grain.snap(raw) };
            let mut text = String::new();
            write_cpu(&mut text, nanos);
            assert_eq!(cpu_nanocores(&text), Ok(u128::from(nanos)), "{text}");

            let format = formats[usize::try_from(i % 5).unwrap()];
            let bytes = format.snap(rng.next_u64() % (1 << 40));
            let mut text = String::new();
            write_memory(&mut text, bytes, format);
            assert_eq!(memory_bytes(&text), Ok(u128::from(bytes)), "{text}");
        }
        let mut text = String::new();
        write_cpu(&mut text, u64::MAX);
        assert_eq!(cpu_nanocores(&text), Ok(u128::from(u64::MAX)));
    }
}
