//! Quantities written the way Kubernetes' `resource.Quantity` writes its canonical form.

use crate::workload::MemFormat;
use std::fmt::Write;

/// A CPU rate in nanocores as a decimal-SI quantity: `1`, `250m`, `12u`, `12345678n`.
pub fn write_cpu(out: &mut String, nanocores: u64) {
    let _ = match nanocores {
        0 => write!(out, "0"),
        n if n % 1_000_000_000 == 0 => write!(out, "{}", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => write!(out, "{}m", n / 1_000_000),
        n if n % 1_000 == 0 => write!(out, "{}u", n / 1_000),
        n => write!(out, "{n}n"),
    };
}

/// A byte count in `format`'s canonical form.
pub fn write_memory(out: &mut String, bytes: u64, format: MemFormat) {
    let _ = match format {
        MemFormat::Bytes | MemFormat::Kibi | MemFormat::Mebi => {
            let suffixes = [(1_u64 << 40, "Ti"), (1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")];
            match suffixes.iter().find(|(m, _)| bytes != 0 && bytes.is_multiple_of(*m)) {
                Some((m, s)) => write!(out, "{}{s}", bytes / m),
                None => write!(out, "{bytes}"),
            }
        }
        MemFormat::Exponent | MemFormat::DecimalSi => {
            let mut mantissa = bytes;
            let mut exp = 0;
            while mantissa != 0 && mantissa.is_multiple_of(1000) && exp < 18 {
                mantissa /= 1000;
                exp += 3;
            }
            if exp == 0 {
                write!(out, "{mantissa}")
            } else if format == MemFormat::Exponent {
                write!(out, "{mantissa}e{exp}")
            } else {
                let suffix = match exp {
                    3 => "k",
                    6 => "M",
                    9 => "G",
                    12 => "T",
                    15 => "P",
                    _ => "E",
                };
                write!(out, "{mantissa}{suffix}")
            }
        }
    };
}

/// A request in millicores as a manifest would give it: `500m`, `2`.
#[must_use]
pub fn cpu_millis(millis: u64) -> String {
    let mut s = String::new();
    write_cpu(&mut s, millis * 1_000_000);
    s
}

/// A request in bytes as a manifest would give it: `512Mi`, `2Gi`.
#[must_use]
pub fn memory_request(bytes: u64) -> String {
    let mut s = String::new();
    write_memory(&mut s, bytes, MemFormat::Mebi);
    s
}
