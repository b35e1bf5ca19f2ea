//! The workload behind the simulated clusters: Hopsworks users' projects (namespaces) and their
//! pods, which start, stop and change their CPU, memory and GPU use over a simulated clock.
//!
//! Usage is piecewise constant with boundaries on whole seconds, so the true integrated usage
//! is computed exactly in integers (nanocore-seconds, byte-seconds, GPU-seconds). Everything is
//! deterministic from a seed. Profile boundaries are multiples of [`SCRAPE_SECS`] (in Unix
//! time), so a metrics-server window never straddles a change and reports the rate exactly.

pub use crate::clock::SimClock;
use std::collections::BTreeMap;

/// Seconds between metrics-server scrapes, and the window it reports.
pub const SCRAPE_SECS: i64 = 15;

const NANOS_PER_CORE: u64 = 1_000_000_000;
const MIB: u64 = 1 << 20;

/// splitmix64: a small deterministic generator, enough for workload shapes.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub const fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub const fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `permille`/1000.
    pub const fn chance(&mut self, permille: u64) -> bool {
        self.next_u64() % 1000 < permille
    }
}

/// How a container's CPU rate is written in PodMetrics: metrics-server writes the canonical
/// form, which depends on the value's granularity, so each class keeps its values on a grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuGrain {
    /// Any nanocore value (`12345678n`).
    Nano,
    /// Multiples of 1000 nanocores (`12u`).
    Micro,
    /// Multiples of a millicore (`250m`).
    Milli,
    /// Whole cores (`1`).
    Core,
}

impl CpuGrain {
    const fn step(self) -> u64 {
        match self {
            Self::Nano => 1,
            Self::Micro => 1_000,
            Self::Milli => 1_000_000,
            Self::Core => NANOS_PER_CORE,
        }
    }

    /// `nanocores` moved onto this grid (at least one step, and never a coarser grid's value,
    /// so the canonical form shows this class).
    #[must_use]
    pub const fn snap(self, nanocores: u64) -> u64 {
        let step = self.step();
        let mut v = nanocores / step * step;
        if v == 0 {
            v = step;
        }
        match self {
            Self::Nano if v.is_multiple_of(1_000) => v + 7,
            Self::Micro if v.is_multiple_of(1_000_000) => v + 3_000,
            Self::Milli if v.is_multiple_of(NANOS_PER_CORE) => v + 5_000_000,
            _ => v,
        }
    }
}

/// How a container's working set is written in PodMetrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemFormat {
    /// Binary SI, not a multiple of 1024: plain bytes (`129000001`).
    Bytes,
    /// Binary SI, multiples of 1 KiB (`123456Ki`).
    Kibi,
    /// Binary SI, multiples of 1 MiB (`512Mi`).
    Mebi,
    /// Decimal exponent, multiples of 10^6 (`129e6`).
    Exponent,
    /// Decimal SI, multiples of 10^6 (`129M`).
    DecimalSi,
}

impl MemFormat {
    /// `bytes` moved onto this format's grid (so that the canonical form shows this format).
    #[must_use]
    pub const fn snap(self, bytes: u64) -> u64 {
        match self {
            Self::Bytes => {
                if bytes.is_multiple_of(1024) {
                    bytes + 1
                } else {
                    bytes
                }
            }
            Self::Kibi => {
                let v = bytes / 1024 * 1024;
                if v.is_multiple_of(MIB) { v + 1024 } else { v }
            }
            Self::Mebi => {
                let v = bytes / MIB * MIB;
                if v.is_multiple_of(1 << 30) { v + MIB } else { v }
            }
            Self::Exponent | Self::DecimalSi => {
                let v = bytes / 1_000_000 * 1_000_000;
                let v = if v.is_multiple_of(1_000_000_000) { v + 1_000_000 } else { v };
                if v % 1024 == 0 { v + 1_000_000 } else { v }
            }
        }
    }
}

/// How a container's usage changes over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// Constant CPU rate and working set.
    Steady {
        /// CPU rate in nanocores.
        cpu_nanocores: u64,
        /// Working set in bytes.
        memory_bytes: u64,
    },
    /// A square wave: `high` for `burst_secs` of every `period_secs` (starting `phase_secs` into
    /// the period, counted from the Unix epoch), `low` otherwise. All three are multiples of
    /// [`SCRAPE_SECS`].
    Bursty {
        /// CPU rate outside bursts, in nanocores.
        cpu_low: u64,
        /// CPU rate during bursts, in nanocores.
        cpu_high: u64,
        /// Working set outside bursts, in bytes.
        memory_low: u64,
        /// Working set during bursts, in bytes.
        memory_high: u64,
        /// Length of the cycle.
        period_secs: i64,
        /// Length of a burst.
        burst_secs: i64,
        /// Start of a burst within the cycle.
        phase_secs: i64,
    },
}

impl Profile {
    /// Seconds of burst in `[from, to)`.
    fn burst_seconds(period: i64, burst: i64, phase: i64, from: i64, to: i64) -> i64 {
        let upto = |x: i64| {
            let y = x - phase;
            y.div_euclid(period) * burst + y.rem_euclid(period).min(burst)
        };
        upto(to) - upto(from)
    }

    fn bursting(period: i64, burst: i64, phase: i64, t: i64) -> bool {
        (t - phase).rem_euclid(period) < burst
    }

    /// (CPU nanocores, working-set bytes) during the second starting at `t`.
    #[must_use]
    pub fn at(&self, t: i64) -> (u64, u64) {
        match *self {
            Self::Steady { cpu_nanocores, memory_bytes } => (cpu_nanocores, memory_bytes),
            Self::Bursty { cpu_low, cpu_high, memory_low, memory_high, period_secs, burst_secs, phase_secs } => {
                if Self::bursting(period_secs, burst_secs, phase_secs, t) {
                    (cpu_high, memory_high)
                } else {
                    (cpu_low, memory_low)
                }
            }
        }
    }

    /// (nanocore-seconds, byte-seconds) over `[from, to)`.
    #[must_use]
    pub fn integral(&self, from: i64, to: i64) -> (u128, u128) {
        if to <= from {
            return (0, 0);
        }
        let secs = u128::from((to - from).unsigned_abs());
        match *self {
            Self::Steady { cpu_nanocores, memory_bytes } => {
                (u128::from(cpu_nanocores) * secs, u128::from(memory_bytes) * secs)
            }
            Self::Bursty { cpu_low, cpu_high, memory_low, memory_high, period_secs, burst_secs, phase_secs } => {
                let hi = u128::from(Self::burst_seconds(period_secs, burst_secs, phase_secs, from, to).unsigned_abs());
                let lo = secs - hi;
                (
                    u128::from(cpu_high) * hi + u128::from(cpu_low) * lo,
                    u128::from(memory_high) * hi + u128::from(memory_low) * lo,
                )
            }
        }
    }
}

/// The lowest and highest rates a profile takes over an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRange {
    /// Lowest CPU rate, nanocores.
    pub cpu_min: u64,
    /// Highest CPU rate, nanocores.
    pub cpu_max: u64,
    /// Lowest working set, bytes.
    pub memory_min: u64,
    /// Highest working set, bytes.
    pub memory_max: u64,
}

impl Profile {
    /// The lowest and highest rates during `[from, to)`; `None` when the interval is empty.
    /// A rate sampled anywhere in the interval lies in this range, and so does the interval's
    /// mean rate.
    #[must_use]
    pub fn range(&self, from: i64, to: i64) -> Option<RateRange> {
        if to <= from {
            return None;
        }
        let one = |(cpu, memory): (u64, u64)| RateRange {
            cpu_min: cpu,
            cpu_max: cpu,
            memory_min: memory,
            memory_max: memory,
        };
        match *self {
            Self::Steady { cpu_nanocores, memory_bytes } => Some(one((cpu_nanocores, memory_bytes))),
            Self::Bursty { cpu_low, cpu_high, memory_low, memory_high, period_secs, burst_secs, phase_secs } => {
                let burst = Self::burst_seconds(period_secs, burst_secs, phase_secs, from, to);
                let (low, high) = (one((cpu_low, memory_low)), one((cpu_high, memory_high)));
                Some(if burst == 0 {
                    low
                } else if burst == to - from {
                    high
                } else {
                    RateRange {
                        cpu_min: cpu_low.min(cpu_high),
                        cpu_max: cpu_low.max(cpu_high),
                        memory_min: memory_low.min(memory_high),
                        memory_max: memory_low.max(memory_high),
                    }
                })
            }
        }
    }
}

/// A container of a simulated pod.
#[derive(Debug, Clone)]
pub struct SimContainer {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// CPU request (and limit) in millicores.
    pub cpu_request_millis: u64,
    /// Memory request (and limit) in bytes, a multiple of 1 MiB.
    pub memory_request_bytes: u64,
    /// GPUs requested (`nvidia.com/gpu`), held while the pod runs.
    pub gpus: u64,
    /// How its usage changes.
    pub profile: Profile,
    /// How its working set is written in PodMetrics.
    pub memory_format: MemFormat,
}

/// A simulated pod and its whole life.
#[derive(Debug, Clone)]
pub struct SimPod {
    /// Namespace (the project's).
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod uid.
    pub uid: String,
    /// Labels, Hopsworks' `owner` and `project-id` among them.
    pub labels: BTreeMap<String, String>,
    /// Node the pod is scheduled on.
    pub node: String,
    /// When the pod object is created (it is Pending until `started`).
    pub created: i64,
    /// When it starts Running.
    pub started: i64,
    /// When it stops Running (Succeeded), if it does.
    pub finished: Option<i64>,
    /// When the pod object is deleted, if it is.
    pub deleted: Option<i64>,
    /// Its containers.
    pub containers: Vec<SimContainer>,
}

/// A pod's phase at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Created, not yet running.
    Pending,
    /// Running.
    Running,
    /// Finished.
    Succeeded,
}

impl Phase {
    /// The name Kubernetes uses.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
        }
    }
}

impl SimPod {
    /// Whether the pod object exists at `t`.
    #[must_use]
    pub fn exists_at(&self, t: i64) -> bool {
        self.created <= t && self.deleted.is_none_or(|d| t < d)
    }

    /// Whether the pod runs during the second starting at `t`.
    #[must_use]
    pub fn running_at(&self, t: i64) -> bool {
        self.started <= t && self.finished.is_none_or(|f| t < f)
    }

    /// Its phase at `t` (meaningful while it exists).
    #[must_use]
    pub fn phase_at(&self, t: i64) -> Phase {
        if t < self.started {
            Phase::Pending
        } else if self.running_at(t) {
            Phase::Running
        } else {
            Phase::Succeeded
        }
    }

    /// When the object last changed as of `t` (its resourceVersion).
    #[must_use]
    pub fn changed_at(&self, t: i64) -> i64 {
        match self.phase_at(t) {
            Phase::Pending => self.created,
            Phase::Running => self.started,
            Phase::Succeeded => self.finished.unwrap_or(self.started),
        }
    }

    /// The `owner` label.
    #[must_use]
    pub fn owner(&self) -> Option<&str> {
        self.labels.get("owner").map(String::as_str)
    }

    /// Its true usage over `[from, to)`.
    #[must_use]
    pub fn usage(&self, from: i64, to: i64) -> Usage {
        let lo = from.max(self.started);
        let hi = self.finished.map_or(to, |f| to.min(f));
        let mut u = Usage::default();
        if hi <= lo {
            return u;
        }
        let secs = u128::from((hi - lo).unsigned_abs());
        for c in &self.containers {
            let (cpu, mem) = c.profile.integral(lo, hi);
            u.cpu_nanocore_seconds += cpu;
            u.memory_byte_seconds += mem;
            u.gpu_seconds += u128::from(c.gpus) * secs;
        }
        u
    }
}

/// Integrated usage, exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU in nanocore-seconds.
    pub cpu_nanocore_seconds: u128,
    /// Working set in byte-seconds.
    pub memory_byte_seconds: u128,
    /// GPUs held, in GPU-seconds.
    pub gpu_seconds: u128,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Self) {
        self.cpu_nanocore_seconds += o.cpu_nanocore_seconds;
        self.memory_byte_seconds += o.memory_byte_seconds;
        self.gpu_seconds += o.gpu_seconds;
    }
}

/// A Hopsworks project, which lives in a namespace of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Numeric project id (the `project-id` label).
    pub id: u64,
    /// Project name (`my_project`).
    pub name: String,
    /// Namespace (`my-project`).
    pub namespace: String,
    /// Owner's Hopsworks username.
    pub owner: String,
}

/// Shape of a generated workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Everything derives from it.
    pub seed: u64,
    /// Number of Hopsworks users.
    pub users: usize,
    /// Projects per user.
    pub projects_per_user: usize,
    /// Pods running for the whole horizon.
    pub long_running_pods: usize,
    /// Short jobs (30 s to 20 min) spread over the horizon.
    pub short_lived_pods: usize,
    /// Start of the horizon (Unix seconds).
    pub start: i64,
    /// Length of the horizon.
    pub horizon_secs: i64,
    /// Share of users (in permille) whose pods are bursty; the others' are steady.
    pub bursty_users_permille: u64,
    /// Share of pods (in permille) that request GPUs.
    pub gpu_pods_permille: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            users: 20,
            projects_per_user: 2,
            long_running_pods: 200,
            short_lived_pods: 40,
            start: 1_798_761_600,
            horizon_secs: 86_400,
            bursty_users_permille: 500,
            gpu_pods_permille: 100,
        }
    }
}

/// The pods of one cluster over time, sorted by (namespace, name) as the API server lists them.
#[derive(Debug, Clone)]
pub struct Workload {
    projects: Vec<Project>,
    pods: Vec<SimPod>,
}

const CPU_GRAINS: [CpuGrain; 4] = [CpuGrain::Nano, CpuGrain::Micro, CpuGrain::Milli, CpuGrain::Core];
const MEM_FORMATS: [MemFormat; 5] =
    [MemFormat::Bytes, MemFormat::Kibi, MemFormat::Mebi, MemFormat::Exponent, MemFormat::DecimalSi];

fn pick<T: Copy>(items: &[T], i: usize) -> Option<T> {
    items.get(i % items.len().max(1)).copied()
}

impl Workload {
    /// A workload of the given projects and pods.
    #[must_use]
    pub fn new(projects: Vec<Project>, mut pods: Vec<SimPod>) -> Self {
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Self { projects, pods }
    }

    /// A workload generated from `config`, deterministic in its seed.
    #[must_use]
    pub fn generate(config: &WorkloadConfig) -> Self {
        let mut rng = SplitMix64::new(config.seed);
        let mut projects = Vec::new();
        let mut bursty_user = Vec::new();
        for u in 0..config.users {
            let owner = format!("user{u:04}_{:x}", config.seed % 0xfff);
            bursty_user.push(rng.chance(config.bursty_users_permille));
            for p in 0..config.projects_per_user {
                let id = 1000 + (u * config.projects_per_user + p) as u64;
                let name = format!("{}_p{p}", owner.replace('_', ""));
                projects.push(Project { id, namespace: name.replace('_', "-"), name, owner: owner.clone() });
            }
        }
        let mut pods = Vec::with_capacity(config.long_running_pods + config.short_lived_pods);
        let total = config.long_running_pods + config.short_lived_pods;
        let kinds = ["jupyter", "spark-driver", "spark-exec", "model-serving", "job"];
        for i in 0..total {
            let Some(pi) = (rng.next_u64() as usize).checked_rem(projects.len()) else { break };
            let Some(project) = projects.get(pi) else { break };
            let user_index = pi / config.projects_per_user.max(1);
            let bursty = bursty_user.get(user_index).copied().unwrap_or(false);
            let short = i >= config.long_running_pods;
            let kind = if short { "job" } else { kinds[i % (kinds.len() - 1)] };
            let (created, started, finished, deleted) = if short {
                let created = config.start + (rng.next_u64() % config.horizon_secs.max(1).unsigned_abs()) as i64;
                let started = created + rng.range(1, 20) as i64;
                let finished = started + rng.range(30, 1200) as i64;
                (created, started, Some(finished), Some(finished + 60))
            } else {
                let created = config.start - rng.range(60, 86_400) as i64;
                (created, created + rng.range(2, 30) as i64, None, None)
            };
            let gpus = if rng.chance(config.gpu_pods_permille) { rng.range(1, 2) } else { 0 };
            let cpu_grain = pick(&CPU_GRAINS, i).unwrap_or(CpuGrain::Milli);
            let memory_format = pick(&MEM_FORMATS, i / 4).unwrap_or(MemFormat::Mebi);
            let cpu_request_millis = rng.range(1, 8) * 500;
            let memory_request_bytes = rng.range(1, 16) * 512 * MIB;
            let cpu = |rng: &mut SplitMix64, max_millis: u64| {
                let max = max_millis * 1_000_000;
                cpu_grain.snap(match cpu_grain {
                    CpuGrain::Core => rng.range(1, (max / NANOS_PER_CORE).max(1)) * NANOS_PER_CORE,
                    _ => rng.range(max / 50, max),
                })
            };
            let mem = |rng: &mut SplitMix64, max: u64| memory_format.snap(rng.range(max / 8, max));
            let profile = if bursty {
                let period_secs = SCRAPE_SECS * rng.range(20, 160) as i64;
                let burst_secs = SCRAPE_SECS * rng.range(2, (period_secs / SCRAPE_SECS / 4).max(2) as u64) as i64;
                let phase_secs = SCRAPE_SECS * rng.range(0, (period_secs / SCRAPE_SECS) as u64) as i64;
                let cpu_low = cpu_grain.snap(cpu(&mut rng, cpu_request_millis) / 10);
                let memory_low = memory_format.snap(mem(&mut rng, memory_request_bytes) / 4);
                Profile::Bursty {
                    cpu_low,
                    cpu_high: cpu(&mut rng, cpu_request_millis * 2).max(cpu_low),
                    memory_low,
                    memory_high: mem(&mut rng, memory_request_bytes).max(memory_low),
                    period_secs,
                    burst_secs,
                    phase_secs,
                }
            } else {
                Profile::Steady {
                    cpu_nanocores: cpu(&mut rng, cpu_request_millis),
                    memory_bytes: mem(&mut rng, memory_request_bytes),
                }
            };
            let mut containers = vec![SimContainer {
                name: kind.to_owned(),
                image: format!("docker.hops.works/{kind}:4.1.0"),
                cpu_request_millis,
                memory_request_bytes,
                gpus,
                profile,
                memory_format,
            }];
            if i % 4 == 1 {
                containers.push(SimContainer {
                    name: "filebeat".to_owned(),
                    image: "docker.hops.works/filebeat:8.9.0".to_owned(),
                    cpu_request_millis: 100,
                    memory_request_bytes: 128 * MIB,
                    gpus: 0,
                    profile: Profile::Steady {
                        cpu_nanocores: CpuGrain::Nano.snap(rng.range(1_000_000, 20_000_000)),
                        memory_bytes: MemFormat::Bytes.snap(rng.range(20 * MIB, 100 * MIB)),
                    },
                    memory_format: MemFormat::Bytes,
                });
            }
            let mut labels = BTreeMap::new();
            labels.insert("owner".to_owned(), project.owner.clone());
            labels.insert("project-id".to_owned(), project.id.to_string());
            labels.insert("app".to_owned(), kind.to_owned());
            if gpus > 0 {
                labels.insert("accelerator".to_owned(), "nvidia".to_owned());
            }
            let bits = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            let uid = uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid().to_string();
            pods.push(SimPod {
                namespace: project.namespace.clone(),
                name: format!("{kind}-{i:05}-{:05x}", rng.next_u64() & 0xfffff),
                uid,
                labels,
                node: format!("node-{}", rng.range(1, 40)),
                created,
                started,
                finished,
                deleted,
                containers,
            });
        }
        Self::new(projects, pods)
    }

    /// The projects.
    #[must_use]
    pub fn projects(&self) -> &[Project] {
        &self.projects
    }

    /// All pods, sorted by (namespace, name).
    #[must_use]
    pub fn pods(&self) -> &[SimPod] {
        &self.pods
    }

    /// The true usage over `[from, to)` of the pods `filter` accepts.
    pub fn usage_where(&self, from: i64, to: i64, filter: impl Fn(&SimPod) -> bool) -> Usage {
        let mut u = Usage::default();
        for pod in self.pods.iter().filter(|p| filter(p)) {
            u += pod.usage(from, to);
        }
        u
    }

    /// The true usage over `[from, to)` of `owner`'s pods.
    #[must_use]
    pub fn usage_of_owner(&self, owner: &str, from: i64, to: i64) -> Usage {
        self.usage_where(from, to, |p| p.owner() == Some(owner))
    }

    /// The true usage over `[from, to)` of the pods in `namespace`.
    #[must_use]
    pub fn usage_of_namespace(&self, namespace: &str, from: i64, to: i64) -> Usage {
        self.usage_where(from, to, |p| p.namespace == namespace)
    }

    /// The true usage over `[from, to)` per owner.
    #[must_use]
    pub fn usage_by_owner(&self, from: i64, to: i64) -> BTreeMap<String, Usage> {
        let mut out: BTreeMap<String, Usage> = BTreeMap::new();
        for pod in &self.pods {
            if let Some(owner) = pod.owner() {
                *out.entry(owner.to_owned()).or_default() += pod.usage(from, to);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2027-01-01T00:00:00Z.
    const T0: i64 = 1_798_761_600;

    #[test]
    fn a_rate_range_holds_every_second_of_its_interval_and_nothing_more() {
        let steady = Profile::Steady { cpu_nanocores: 7, memory_bytes: 11 };
        let one = RateRange { cpu_min: 7, cpu_max: 7, memory_min: 11, memory_max: 11 };
        assert_eq!(steady.range(T0, T0 + 900), Some(one));
        assert_eq!(steady.range(T0, T0), None);
        assert_eq!(steady.range(T0 + 1, T0), None);

        // Bursts of 60 s every 300 s, starting 120 s into each cycle (counted from the epoch;
        // T0 is a multiple of 300).
        let bursty = Profile::Bursty {
            cpu_low: 100,
            cpu_high: 900,
            memory_low: 5,
            memory_high: 50,
            period_secs: 300,
            burst_secs: 60,
            phase_secs: 120,
        };
        let low = RateRange { cpu_min: 100, cpu_max: 100, memory_min: 5, memory_max: 5 };
        let high = RateRange { cpu_min: 900, cpu_max: 900, memory_min: 50, memory_max: 50 };
        let both = RateRange { cpu_min: 100, cpu_max: 900, memory_min: 5, memory_max: 50 };
        assert_eq!(bursty.range(T0, T0 + 120), Some(low));
        assert_eq!(bursty.range(T0 + 120, T0 + 180), Some(high));
        assert_eq!(bursty.range(T0 + 179, T0 + 180), Some(high));
        assert_eq!(bursty.range(T0 + 180, T0 + 420), Some(low));
        assert_eq!(bursty.range(T0 + 119, T0 + 121), Some(both));
        assert_eq!(bursty.range(T0 + 179, T0 + 181), Some(both));
        assert_eq!(bursty.range(T0, T0 + 900), Some(both));

        // Against the second-by-second rates of generated profiles, over intervals that start
        // and end anywhere.
        let workload = Workload::generate(&WorkloadConfig { bursty_users_permille: 1000, ..WorkloadConfig::default() });
        let mut rng = SplitMix64::new(3);
        let mut mixed = 0;
        for profile in workload.pods().iter().take(40).flat_map(|p| p.containers.iter().map(|c| &c.profile)) {
            for _ in 0..20 {
                let from = T0 + rng.range(0, 86_400) as i64;
                let to = from + rng.range(1, 1200) as i64;
                let rates: Vec<(u64, u64)> = (from..to).map(|t| profile.at(t)).collect();
                let want = RateRange {
                    cpu_min: rates.iter().map(|r| r.0).min().unwrap_or(0),
                    cpu_max: rates.iter().map(|r| r.0).max().unwrap_or(0),
                    memory_min: rates.iter().map(|r| r.1).min().unwrap_or(0),
                    memory_max: rates.iter().map(|r| r.1).max().unwrap_or(0),
                };
                assert_eq!(profile.range(from, to), Some(want), "{profile:?} over [{from}, {to})");
                mixed += usize::from(want.cpu_min < want.cpu_max);
            }
        }
        assert!(mixed > 100, "the intervals cover bursts and quiet spells: {mixed}");
    }
}
