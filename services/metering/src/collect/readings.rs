//! CPU and memory integrated over time from metrics-server's readings (decision 0043).
//!
//! Each PodMetrics item is a reading: the pod's CPU rate and working set over its `window`
//! ending at its `timestamp`, which metrics-server computes from the kubelet's cumulative
//! counters. Read at metrics-server's own resolution, consecutive readings of a pod tile time,
//! and the sum of rate × window over them is the counters' increase: the exact integral,
//! however bursty the pod. [`Integrator`] adds a window's readings up per pod:
//! - each reading counts only for the part of its window inside the metering window;
//! - a reading whose window ends where an earlier one of the pod ended, or before, counts
//!   nothing more (read twice, or overlapping), and the part of a window already covered
//!   counts once;
//! - time between two readings of a pod that no reading covers (a missed reading) is an
//!   estimate: the mean of the two readings' rates, recorded as estimated time;
//! - time before a pod's first reading and after its last is not counted: the pod was not
//!   running then, or its reading is not in yet.
//!
//! Times are kept in milliseconds (`timestamp` has whole seconds, `window` may have fractions)
//! and usage in nanocore-milliseconds and byte-milliseconds, truncated to whole seconds once
//! at the end.

use super::client::{ClusterClient, Counters};
use super::items::{PodFold, fold_pods};
use super::pages::{List, decode};
use super::{CollectError, Method, OwnerUsage};
use crate::quantity;
use crate::usage::Usage;
use crate::window::Window;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

/// One PodMetrics reading: the pod's rates over `[end_ms - window_ms, end_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// (namespace, pod name).
    pub key: (String, String),
    /// The reading's `timestamp`, Unix milliseconds.
    pub end_ms: i64,
    /// Its `window`, milliseconds.
    pub window_ms: i64,
    /// CPU rate over the window, nanocores, summed over containers.
    pub cpu: u128,
    /// Working set, bytes, summed over containers.
    pub memory: u128,
}

/// One list of readings and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadingList {
    /// The readings, one per pod.
    pub readings: Vec<Reading>,
    /// HTTP requests sent.
    pub api_calls: u64,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    namespace: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    metadata: Meta<'a>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    window: Cow<'a, str>,
    #[serde(default, borrow)]
    containers: Vec<ContainerUsage<'a>>,
}

#[derive(Deserialize)]
struct ContainerUsage<'a> {
    #[serde(borrow)]
    usage: Rates<'a>,
}

#[derive(Deserialize)]
struct Rates<'a> {
    #[serde(borrow)]
    cpu: Cow<'a, str>,
    #[serde(borrow)]
    memory: Cow<'a, str>,
}

/// Milliseconds in a Go duration as metav1.Duration writes it (`15s`, `14.527s`, `1m0.5s`,
/// `500ms`, `1h2m3s`); finer units are truncated to the millisecond.
///
/// # Errors
/// A text that is no such duration.
pub fn duration_ms(text: &str) -> Result<i64, String> {
    let bad = || format!("not a duration: {text:?}");
    if text == "0" {
        return Ok(0);
    }
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    // Nanoseconds, exact.
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let per: i128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let mut part = whole.checked_mul(per).ok_or_else(bad)?;
        let mut scale = per;
        for d in fraction.chars().take(18) {
            scale /= 10;
            part += i128::from(d.to_digit(10).ok_or_else(bad)?) * scale;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    i64::try_from(total / 1_000_000).map_err(|_| bad())
}

/// Folds one page of the PodMetrics list into readings; returns the continue token.
pub(super) fn fold_readings(acc: &mut Vec<Reading>, what: &str, body: &[u8]) -> Result<Option<String>, CollectError> {
    let page: List<Item<'_>> = decode(what, body)?;
    for m in page.items {
        let bad = |message: String| CollectError::Malformed {
            what: format!("{what}: {}/{}", m.metadata.namespace, m.metadata.name),
            message,
        };
        let end_ms = chrono::DateTime::parse_from_rfc3339(&m.timestamp)
            .map_err(|e| bad(format!("timestamp {:?}: {e}", m.timestamp)))?
            .timestamp_millis();
        let window_ms = duration_ms(&m.window).map_err(bad)?;
        let (mut cpu, mut memory) = (0_u128, 0_u128);
        for c in &m.containers {
            let quantity = |parsed: Result<u128, quantity::QuantityError>| {
                parsed.map_err(|source| CollectError::Quantity {
                    namespace: m.metadata.namespace.clone().into_owned(),
                    name: m.metadata.name.clone().into_owned(),
                    source,
                })
            };
            cpu = cpu.saturating_add(quantity(quantity::cpu_nanocores(&c.usage.cpu))?);
            memory = memory.saturating_add(quantity(quantity::memory_bytes(&c.usage.memory))?);
        }
        let key = (m.metadata.namespace.into_owned(), m.metadata.name.into_owned());
        acc.push(Reading { key, end_ms, window_ms, cpu, memory });
    }
    Ok(page.metadata.continue_)
}

impl ClusterClient {
    /// Every pod's current PodMetrics reading, with its timestamp and window.
    ///
    /// # Errors
    /// The first failure that retries could not overcome.
    pub async fn read_metrics(&self) -> Result<ReadingList, CollectError> {
        let counters = Counters::default();
        let readings = self.list_all(super::METRICS_PATH, &counters, Vec::new, fold_readings).await?;
        Ok(ReadingList { readings, api_calls: counters.api_calls.load(Ordering::Relaxed) })
    }
}

/// A Running pod as the pod list showed it: whose it is (empty: no owner label), its GPUs and
/// its requests summed over containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// The owner label's value.
    pub owner: String,
    /// GPUs held.
    pub gpus: u64,
    /// CPU requested, nanocores.
    pub cpu_request: u128,
    /// Memory requested, bytes.
    pub memory_request: u128,
}

/// The Running pods of one pod list and what it cost.
#[derive(Debug, Clone, Default)]
pub struct PodList {
    /// By (namespace, name).
    pub pods: HashMap<(String, String), PodInfo>,
    /// HTTP requests sent.
    pub api_calls: u64,
}

impl ClusterClient {
    /// Every Running pod with its owner label, GPUs and requests.
    ///
    /// # Errors
    /// The first failure that retries could not overcome.
    pub async fn list_running_pods(&self) -> Result<PodList, CollectError> {
        let counters = Counters::default();
        let label_key = self.config.label_key.as_str();
        let fold = |acc: &mut PodFold, what: &str, body: &[u8]| fold_pods(acc, label_key, what, body);
        let listed = self.list_all(super::PODS_PATH, &counters, PodFold::default, fold).await?;
        let pods = listed
            .running
            .into_iter()
            .map(|(key, p)| {
                let info =
                    PodInfo { owner: p.owner, gpus: p.gpus, cpu_request: p.requests.0, memory_request: p.requests.1 };
                (key, info)
            })
            .collect();
        Ok(PodList { pods, api_calls: counters.api_calls.load(Ordering::Relaxed) })
    }
}

/// A pod's lifetime as its watch recorded it (decision 0070).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetime {
    /// (namespace, pod name).
    pub key: (String, String),
    /// The owner label's value.
    pub owner: String,
    /// GPUs held.
    pub gpus: u64,
    /// CPU requested, nanocores.
    pub cpu_request: u128,
    /// Memory requested, bytes.
    pub memory_request: u128,
    /// Its start, Unix milliseconds.
    pub start_ms: i64,
    /// Its end, Unix milliseconds (`None`: running).
    pub end_ms: Option<i64>,
}

impl Lifetime {
    /// Milliseconds of `window` it ran.
    #[must_use]
    pub fn overlap_ms(&self, window: Window) -> i64 {
        let end = self.end_ms.unwrap_or(i64::MAX).min(window.end() * 1000);
        (end - self.start_ms.max(window.start() * 1000)).max(0)
    }
}

/// A window's readings integrated and joined with the pods they are of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Integrated {
    /// Usage per (namespace, owner).
    pub usage: BTreeMap<(String, String), OwnerUsage>,
    /// Pods with readings in the window and in a pod list: the ones aggregated.
    pub pods_measured: u64,
    /// Pods with readings in the window never seen Running in a pod list (skipped).
    pub metrics_without_pod: u64,
    /// Pod time estimated between readings, milliseconds, over the pods aggregated.
    pub estimated_ms: i64,
    /// Pods billed from their lifetime alone (no reading in the window).
    pub pods_from_lifetimes: u64,
}

/// Integrates `window`'s `readings` (each pod's in the order read) per pod and aggregates them
/// per (namespace, owner) on `method`'s bases: a pod's CPU is its integral, or the larger of it
/// and its request over the time its readings cover (covered and estimated alike); memory
/// likewise; GPUs are held for that time. Usage is truncated to whole resource-seconds per pod.
#[must_use]
pub fn integrate(
    window: Window,
    method: Method,
    readings: &[Reading],
    pods: &HashMap<(String, String), PodInfo>,
) -> Integrated {
    integrate_with(window, method, readings, pods, None)
}

/// As [`integrate`]; with `lifetimes` (every pod that ran in the window, from a watch that covered it whole,
/// decision 0070), GPUs and requests are held for each pod's time in the window instead, and
/// pods that ran without a reading in the window are billed their GPUs and, on
/// `max_request_usage`, their requests.
#[must_use]
pub fn integrate_with(
    window: Window,
    method: Method,
    readings: &[Reading],
    pods: &HashMap<(String, String), PodInfo>,
    lifetimes: Option<&[Lifetime]>,
) -> Integrated {
    let mut integrator = Integrator::new(window);
    integrator.add(readings);
    let mut out = Integrated::default();
    // Per pod name: its lifetimes' time in the window, and whether a reading used them.
    let mut lived: HashMap<&(String, String), (Vec<&Lifetime>, bool)> = HashMap::new();
    for l in lifetimes.unwrap_or_default() {
        lived.entry(&l.key).or_default().0.push(l);
    }
    let bill = |cpu_used: u128, memory_used: u128, held: &[(u128, &Lifetime)]| Usage {
        cpu_nanocore_seconds: method
            .cpu_basis
            .billed(cpu_used, held.iter().map(|(ms, l)| l.cpu_request * ms / 1000).sum()),
        memory_byte_seconds: method
            .memory_basis
            .billed(memory_used, held.iter().map(|(ms, l)| l.memory_request * ms / 1000).sum()),
        gpu_seconds: held.iter().map(|(ms, l)| u128::from(l.gpus) * ms / 1000).sum(),
    };
    for (key, got) in integrator.finish() {
        let Some(pod) = pods.get(&key) else {
            out.metrics_without_pod += 1;
            continue;
        };
        let usage = if lifetimes.is_some() {
            let held: Vec<(u128, &Lifetime)> = lived.get_mut(&key).map_or_else(Vec::new, |(ls, used)| {
                *used = true;
                ls.iter().map(|l| (millis(l.overlap_ms(window)), *l)).collect()
            });
            bill(got.usage.cpu_nanocore_seconds, got.usage.memory_byte_seconds, &held)
        } else {
            let time_ms = millis(got.covered_ms + got.estimated_ms);
            let requested = |rate: u128| rate * time_ms / 1000;
            Usage {
                cpu_nanocore_seconds: method
                    .cpu_basis
                    .billed(got.usage.cpu_nanocore_seconds, requested(pod.cpu_request)),
                memory_byte_seconds: method
                    .memory_basis
                    .billed(got.usage.memory_byte_seconds, requested(pod.memory_request)),
                gpu_seconds: requested(u128::from(pod.gpus)),
            }
        };
        let entry = out.usage.entry((key.0, pod.owner.clone())).or_default();
        entry.usage += usage;
        entry.pods += 1;
        entry.estimated_ms += got.estimated_ms;
        out.pods_measured += 1;
        out.estimated_ms += got.estimated_ms;
    }
    for (key, (ls, used)) in lived {
        let held: Vec<(u128, &Lifetime)> =
            ls.iter().map(|l| (millis(l.overlap_ms(window)), *l)).filter(|(ms, _)| *ms > 0).collect();
        let Some((_, first)) = held.first().filter(|_| !used) else { continue };
        let entry = out.usage.entry((key.0.clone(), first.owner.clone())).or_default();
        entry.usage += bill(0, 0, &held);
        entry.pods += 1;
        out.pods_from_lifetimes += 1;
    }
    out
}

/// One pod's usage integrated over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodIntegral {
    /// CPU and memory over the time covered (GPUs are not read from metrics).
    pub usage: Usage,
    /// Milliseconds of the window covered by readings.
    pub covered_ms: i64,
    /// Milliseconds between readings that no reading covered, estimated.
    pub estimated_ms: i64,
    /// Readings that counted.
    pub readings: u32,
    /// Readings that added nothing (read twice, or already covered).
    pub repeated: u32,
}

#[derive(Debug, Default)]
struct PodState {
    /// Where the latest reading's window ended.
    last_end_ms: Option<i64>,
    /// Its rates.
    last_rates: (u128, u128),
    /// Nanocore-milliseconds and byte-milliseconds.
    cpu_ms: u128,
    memory_ms: u128,
    covered_ms: i64,
    estimated_ms: i64,
    readings: u32,
    repeated: u32,
}

/// Integrates one window's readings per pod.
#[derive(Debug)]
pub struct Integrator {
    start_ms: i64,
    end_ms: i64,
    pods: HashMap<(String, String), PodState>,
}

fn millis(span: i64) -> u128 {
    u128::try_from(span.max(0)).unwrap_or(0)
}

impl Integrator {
    /// An integrator of `window`.
    #[must_use]
    pub fn new(window: Window) -> Self {
        Self { start_ms: window.start() * 1000, end_ms: window.end() * 1000, pods: HashMap::new() }
    }

    /// Adds readings; each pod's must come in the order they were read.
    pub fn add<'a>(&mut self, readings: impl IntoIterator<Item = &'a Reading>) {
        for r in readings {
            let pod = self.pods.entry(r.key.clone()).or_default();
            let from = r.end_ms - r.window_ms;
            if pod.last_end_ms.is_some_and(|last| r.end_ms <= last) {
                pod.repeated += 1;
                continue;
            }
            if let Some(last) = pod.last_end_ms.filter(|&last| last < from) {
                // Missed readings: the gap at the mean of the rates around it.
                let gap = from.min(self.end_ms) - last.max(self.start_ms);
                if gap > 0 {
                    let (cpu, memory) = pod.last_rates;
                    pod.cpu_ms += (cpu + r.cpu) * millis(gap) / 2;
                    pod.memory_ms += (memory + r.memory) * millis(gap) / 2;
                    pod.estimated_ms += gap;
                }
            }
            let counted_from = pod.last_end_ms.map_or(from, |last| last.max(from)).max(self.start_ms);
            let counted = r.end_ms.min(self.end_ms) - counted_from;
            if counted > 0 {
                pod.cpu_ms += r.cpu * millis(counted);
                pod.memory_ms += r.memory * millis(counted);
                pod.covered_ms += counted;
                pod.readings += 1;
            } else {
                pod.repeated += 1;
            }
            pod.last_end_ms = Some(r.end_ms);
            pod.last_rates = (r.cpu, r.memory);
        }
    }

    /// Each pod's usage over the window, by (namespace, name); pods with nothing counted are left
    /// out.
    #[must_use]
    pub fn finish(self) -> BTreeMap<(String, String), PodIntegral> {
        self.pods
            .into_iter()
            .filter(|(_, p)| p.covered_ms > 0 || p.estimated_ms > 0)
            .map(|(key, p)| {
                let usage = Usage {
                    cpu_nanocore_seconds: p.cpu_ms / 1000,
                    memory_byte_seconds: p.memory_ms / 1000,
                    gpu_seconds: 0,
                };
                let integral = PodIntegral {
                    usage,
                    covered_ms: p.covered_ms,
                    estimated_ms: p.estimated_ms,
                    readings: p.readings,
                    repeated: p.repeated,
                };
                (key, integral)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::window::WindowLength;

    #[test]
    fn go_durations_are_read_to_the_millisecond() {
        for (text, ms) in [
            ("15s", 15_000),
            ("14.527s", 14_527),
            ("1m0.5s", 60_500),
            ("500ms", 500),
            ("1h2m3s", 3_723_000),
            ("0", 0),
            ("10.0000019s", 10_000),
            ("1500us", 1),
        ] {
            assert_eq!(duration_ms(text), Ok(ms), "{text}");
        }
        for bad in ["", "15", "s", "1x", "-1s", "1.2.3s", "."] {
            assert!(duration_ms(bad).is_err(), "{bad}");
        }
    }

    fn reading(pod: &str, end_s: i64, window_ms: i64, cpu: u128, memory: u128) -> Reading {
        Reading { key: ("ns".to_owned(), pod.to_owned()), end_ms: end_s * 1000, window_ms, cpu, memory }
    }

    fn window() -> Window {
        WindowLength::new(60).unwrap().containing(1_800_000_000)
    }

    #[test]
    fn readings_that_tile_the_window_integrate_exactly_and_count_once() {
        let w = window();
        let (s, e) = (w.start(), w.end());
        let mut i = Integrator::new(w);
        // The reading ending at the window's start belongs to the window before.
        i.add(&[reading("a", s, 15_000, 9, 9)]);
        for (k, cpu) in [(1, 100), (2, 400), (3, 100), (4, 1_000)] {
            i.add(&[reading("a", s + 15 * k, 15_000, cpu, 2 * cpu)]);
        }
        // Read again: nothing more.
        i.add(&[reading("a", e, 15_000, 1_000, 2_000)]);
        // Straddling the end: only its part inside counts.
        i.add(&[reading("b", s + 30, 15_000, 10, 0), reading("b", e + 10, 15_000, 20, 0)]);
        let got = i.finish();
        let a = got[&("ns".to_owned(), "a".to_owned())];
        assert_eq!(a.usage.cpu_nanocore_seconds, 15 * (100 + 400 + 100 + 1_000));
        assert_eq!(a.usage.memory_byte_seconds, 2 * 15 * (100 + 400 + 100 + 1_000));
        assert_eq!((a.covered_ms, a.estimated_ms, a.readings, a.repeated), (60_000, 0, 4, 2));
        let b = got[&("ns".to_owned(), "b".to_owned())];
        // [s+15, s+30) at 10, the gap [s+30, s+55) estimated at 15, then [s+55, e) at 20.
        assert_eq!(b.usage.cpu_nanocore_seconds, 15 * 10 + 25 * 15 + 5 * 20);
        assert_eq!((b.covered_ms, b.estimated_ms), (20_000, 25_000));
    }

    #[test]
    fn a_missed_reading_is_estimated_from_its_neighbours_and_overlaps_count_once() {
        let w = window();
        let s = w.start();
        let mut i = Integrator::new(w);
        i.add(&[reading("a", s + 15, 15_000, 100, 0)]);
        // s + 30 missed.
        i.add(&[reading("a", s + 45, 15_000, 300, 0)]);
        // Overlapping the last one by 5 s (a node's scrape moved).
        i.add(&[reading("a", s + 55, 15_000, 400, 0)]);
        let a = i.finish()[&("ns".to_owned(), "a".to_owned())];
        assert_eq!(a.usage.cpu_nanocore_seconds, 15 * 100 + 15 * 200 + 15 * 300 + 10 * 400);
        assert_eq!((a.covered_ms, a.estimated_ms, a.readings), (40_000, 15_000, 3));
    }

    #[test]
    fn integrated_pods_are_billed_on_their_basis_with_gpus_for_the_time_read() {
        use super::super::{Basis, Source};
        let w = window();
        let s = w.start();
        // Pod a: 100 for [s, s+30), then 300 for [s+30, s+45); requests 200 and 1,000 bytes.
        let readings = [
            reading("a", s, 15_000, 100, 500),
            reading("a", s + 15, 15_000, 100, 500),
            reading("a", s + 30, 15_000, 100, 500),
            reading("a", s + 45, 15_000, 300, 2_000),
            reading("stray", s + 15, 15_000, 1, 1),
        ];
        let pods: HashMap<_, _> = [(
            ("ns".to_owned(), "a".to_owned()),
            PodInfo { owner: "ada".to_owned(), gpus: 2, cpu_request: 200, memory_request: 1_000 },
        )]
        .into();
        let usage = Method { source: Source::Readings, cpu_basis: Basis::Usage, memory_basis: Basis::Usage };
        let got = integrate(w, usage, &readings, &pods);
        let a = got.usage[&("ns".to_owned(), "ada".to_owned())];
        assert_eq!(
            a.usage,
            Usage {
                cpu_nanocore_seconds: 30 * 100 + 15 * 300,
                memory_byte_seconds: 30 * 500 + 15 * 2_000,
                gpu_seconds: 2 * 45
            }
        );
        assert_eq!((a.pods, got.pods_measured, got.metrics_without_pod, got.estimated_ms), (1, 1, 1, 0));
        let max = Method { cpu_basis: Basis::MaxRequestUsage, memory_basis: Basis::MaxRequestUsage, ..usage };
        let a = integrate(w, max, &readings, &pods).usage[&("ns".to_owned(), "ada".to_owned())];
        // Over the 45 s read: CPU requested 200 × 45 = 9,000 > 7,500 used; memory used
        // 45,000 > 45,000 requested (equal: either).
        assert_eq!((a.usage.cpu_nanocore_seconds, a.usage.memory_byte_seconds), (9_000, 45_000));
    }
}
