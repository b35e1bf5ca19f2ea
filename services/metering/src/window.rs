//! UTC-aligned measurement windows.
//!
//! A window is `[start, end)` in Unix seconds with `start` a multiple of its length. Lengths
//! divide a day (86,400 s), so every window lies inside one UTC day and carries that day with
//! it: the day a sample is booked on comes from the window, never from the clock of the run.

use chrono::{DateTime, NaiveDate, Utc};
use std::fmt;

/// Seconds in a UTC day (Unix time has no leap seconds).
pub const DAY_SECS: u32 = 86_400;
/// The default window length: 15 minutes.
pub const DEFAULT_WINDOW_SECS: u32 = 900;

/// Why a window length was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a window length must be between 1 and 86400 seconds and divide a day evenly; {0} does not")]
pub struct BadWindowLength(pub u32);

/// A window length that divides a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowLength(u32);

impl WindowLength {
    /// A length of `secs` seconds.
    ///
    /// # Errors
    /// When `secs` is 0, longer than a day or does not divide a day.
    pub const fn new(secs: u32) -> Result<Self, BadWindowLength> {
        if secs == 0 || secs > DAY_SECS || !DAY_SECS.is_multiple_of(secs) {
            return Err(BadWindowLength(secs));
        }
        Ok(Self(secs))
    }

    /// Seconds.
    #[must_use]
    pub const fn secs(self) -> u32 {
        self.0
    }

    /// The window containing the instant `unix_secs`.
    #[must_use]
    pub const fn containing(self, unix_secs: i64) -> Window {
        let len = self.0 as i64;
        let start = unix_secs - unix_secs.rem_euclid(len);
        Window { start, len: self.0 }
    }

    /// The latest window that has ended at `now` (its end is at or before `now`).
    #[must_use]
    pub const fn previous_complete(self, now: i64) -> Window {
        self.containing(now).previous()
    }

    /// The windows ending after `from` and at or before `to`, oldest first: the complete
    /// windows from the one containing `from` up to `to`. Empty when `to <= from`.
    pub fn between(self, from: i64, to: i64) -> impl Iterator<Item = Window> {
        let first = self.containing(from);
        let len = i64::from(self.0);
        let count = if to <= from { 0 } else { (to - first.start).div_euclid(len).max(0) };
        (0..count).map(move |i| Window { start: first.start + i * len, len: self.0 })
    }
}

impl Default for WindowLength {
    fn default() -> Self {
        Self(DEFAULT_WINDOW_SECS)
    }
}

/// One window `[start, end)`, UTC-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    start: i64,
    len: u32,
}

impl Window {
    /// Start, Unix seconds (inclusive).
    #[must_use]
    pub const fn start(&self) -> i64 {
        self.start
    }

    /// End, Unix seconds (exclusive).
    #[must_use]
    pub const fn end(&self) -> i64 {
        self.start + self.len as i64
    }

    /// Length.
    #[must_use]
    pub const fn length(&self) -> WindowLength {
        WindowLength(self.len)
    }

    /// Length in seconds.
    #[must_use]
    pub const fn secs(&self) -> u32 {
        self.len
    }

    /// The window before this one.
    #[must_use]
    pub const fn previous(&self) -> Self {
        Self { start: self.start - self.len as i64, len: self.len }
    }

    /// The window after this one.
    #[must_use]
    pub const fn next(&self) -> Self {
        Self { start: self.start + self.len as i64, len: self.len }
    }

    /// Whether `unix_secs` lies in it.
    #[must_use]
    pub const fn contains(&self, unix_secs: i64) -> bool {
        self.start <= unix_secs && unix_secs < self.end()
    }

    /// The UTC day it lies in (the day of its start; a window never crosses midnight).
    #[must_use]
    pub fn day(&self) -> NaiveDate {
        self.start_time().date_naive()
    }

    /// Its start as a UTC time.
    #[must_use]
    pub fn start_time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.start, 0).unwrap_or_default()
    }

    /// Its end as a UTC time.
    #[must_use]
    pub fn end_time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.end(), 0).unwrap_or_default()
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fmt = "%Y-%m-%dT%H:%M:%SZ";
        write!(f, "[{}, {})", self.start_time().format(fmt), self.end_time().format(fmt))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// 2027-01-01T00:00:00Z.
    const NEW_YEAR: i64 = 1_798_761_600;

    #[test]
    fn lengths_must_divide_a_day() {
        for ok in [1, 2, 5, 60, 300, 900, 3600, 7200, 43_200, 86_400] {
            assert_eq!(WindowLength::new(ok).unwrap().secs(), ok);
        }
        for bad in [0, 7, 11, 1000, 86_401, 172_800, 7 * 3600] {
            let err = WindowLength::new(bad).unwrap_err();
            assert!(err.to_string().contains(&bad.to_string()), "{err}");
        }
        assert_eq!(WindowLength::default().secs(), 900);
    }

    #[test]
    fn the_window_containing_an_instant_is_utc_aligned() {
        let len = WindowLength::default();
        let w = len.containing(NEW_YEAR + 901);
        assert_eq!((w.start(), w.end()), (NEW_YEAR + 900, NEW_YEAR + 1800));
        assert!(w.contains(NEW_YEAR + 900) && w.contains(NEW_YEAR + 1799) && !w.contains(NEW_YEAR + 1800));
        assert_eq!(len.containing(NEW_YEAR + 900), w);
        assert_eq!(len.containing(NEW_YEAR + 1799), w);
        assert_eq!(w.to_string(), "[2027-01-01T00:15:00Z, 2027-01-01T00:30:00Z)");
        // Before the epoch too.
        let early = len.containing(-1);
        assert_eq!((early.start(), early.end()), (-900, 0));
        let one = WindowLength::new(1).unwrap().containing(NEW_YEAR + 5);
        assert_eq!((one.start(), one.end(), one.secs()), (NEW_YEAR + 5, NEW_YEAR + 6, 1));
        assert_eq!(w.next().previous(), w);
        assert_eq!(w.length(), len);
    }

    #[test]
    fn the_midnight_run_books_the_last_window_on_the_previous_day() {
        let len = WindowLength::default();
        // The run at 00:00:03 on New Year's Day measures 23:45–24:00 of New Year's Eve.
        let w = len.previous_complete(NEW_YEAR + 3);
        assert_eq!((w.start(), w.end()), (NEW_YEAR - 900, NEW_YEAR));
        assert_eq!(w.day(), NaiveDate::from_ymd_opt(2026, 12, 31).unwrap());
        assert_eq!(w.end_time().date_naive(), NaiveDate::from_ymd_opt(2027, 1, 1).unwrap());
        // Exactly at a boundary the window just ended is the complete one.
        assert_eq!(len.previous_complete(NEW_YEAR), w);
        assert_eq!(len.previous_complete(NEW_YEAR + 899), w);
        assert_eq!(len.previous_complete(NEW_YEAR + 900).day(), NaiveDate::from_ymd_opt(2027, 1, 1).unwrap());
        // No window of any allowed length crosses midnight.
        for secs in [1, 7, 60, 900, 3600, 10_800, 43_200, 86_400] {
            let Ok(len) = WindowLength::new(secs) else { continue };
            for w in len.between(NEW_YEAR - 86_400, NEW_YEAR + 86_400) {
                assert_eq!(w.day(), DateTime::from_timestamp(w.end() - 1, 0).unwrap().date_naive(), "{w}");
            }
        }
    }

    #[test]
    fn windows_between_two_instants_are_the_complete_ones() {
        let len = WindowLength::default();
        let got: Vec<(i64, i64)> = len.between(NEW_YEAR + 100, NEW_YEAR + 2700).map(|w| (w.start(), w.end())).collect();
        assert_eq!(
            got,
            vec![(NEW_YEAR, NEW_YEAR + 900), (NEW_YEAR + 900, NEW_YEAR + 1800), (NEW_YEAR + 1800, NEW_YEAR + 2700)]
        );
        assert_eq!(len.between(NEW_YEAR + 100, NEW_YEAR + 2699).count(), 2, "the last one has not ended");
        assert_eq!(len.between(NEW_YEAR, NEW_YEAR + 899).count(), 0);
        assert_eq!(len.between(NEW_YEAR + 10, NEW_YEAR).count(), 0);
        assert_eq!(len.between(NEW_YEAR, NEW_YEAR + 86_400).count(), 96);
        let days: std::collections::BTreeSet<NaiveDate> =
            len.between(NEW_YEAR - 3600, NEW_YEAR + 3600).map(|w| w.day()).collect();
        assert_eq!(days.len(), 2);
    }
}
