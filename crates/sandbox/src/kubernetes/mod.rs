//! A Kubernetes API server per simulated cluster, with metrics-server behind it: HTTPS with
//! the cluster's own CA, bearer tokens, discovery, pods and PodMetrics with label selectors and
//! `limit`/`continue` paging, `SelfSubjectAccessReview` ([`access`]), and fault modes a test
//! switches on: 429s, 5xx, delays, permissions denied, metrics-server absent, and a server
//! certificate that is its own CA ([`ServerCertificate::CaAsEndEntity`]).
//!
//! The pods come from a [`Workload`] read at a [`SimClock`]'s current time, and from the pods
//! a test starts while the cluster runs ([`KubeCluster::run_pods`]). Lists are serialized once
//! per clock second (pods) or per scrape (PodMetrics) and cached, so a page is a copy of ready
//! bytes. Pods are watched as well ([`watch`]): events, bookmarks and 410 Expired.
//!
//! A resourceVersion is the clock second of the change × 1,000, plus how many times pods were
//! started at that second by [`KubeCluster::run_pods`] (their changes before they appeared are
//! folded into one ADDED at the appearance), so lists and watches agree on one order.

mod access;
mod api;
pub mod quantity;
pub mod selector;
mod watch;

use crate::clock::SimClock;
use crate::server::Served;
use crate::tls::Ca;
use crate::workload::{SimPod, Workload};
use actix_web::web;
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use access::Permission;

/// resourceVersions per clock second (see the module's notes).
const RV_PER_SEC: i64 = 1000;

/// Faults a test switches on for a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Answer 429 with this `Retry-After` (seconds), as API Priority and Fairness does.
    pub too_many_requests: Option<u64>,
    /// Answer this 5xx status.
    pub server_error: Option<u16>,
    /// Hold every answer this long.
    pub delay: Option<Duration>,
    /// How many requests the faults apply to (`None`: until changed).
    pub times: Option<u32>,
}

/// The certificate a simulated API server presents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerCertificate {
    /// A server certificate issued by the cluster's CA, as kubeadm and managed clusters make.
    #[default]
    IssuedByCa,
    /// One self-signed certificate marked as a CA (`basicConstraints: CA:TRUE`), presented as
    /// the server's own and given to clients as the CA to trust. kubectl (Go's TLS) accepts it;
    /// rustls refuses it (`CaUsedAsEndEntity`).
    CaAsEndEntity,
}

/// Settings of a simulated API server.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// How long (simulated seconds) a continue token stays valid; older ones get 410 Expired.
    pub continue_ttl_secs: i64,
    /// The bearer token clients must present (a random one when `None`).
    pub token: Option<String>,
    /// The certificate the server presents.
    pub server_certificate: ServerCertificate,
    /// How far back (simulated seconds) a watch may start: an older resourceVersion is
    /// answered with an ERROR event, 410 Expired (etcd's compaction keeps 5 minutes).
    pub watch_history_secs: i64,
    /// Bookmarks are sent at every multiple of this many simulated seconds (the watch cache
    /// sends one about every minute), and before a watch's timeout ends it.
    pub bookmark_secs: i64,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self {
            continue_ttl_secs: 300,
            token: None,
            server_certificate: ServerCertificate::IssuedByCa,
            watch_history_secs: 300,
            bookmark_secs: 60,
        }
    }
}

/// The pods the server answers from and the lists serialized from them, replaced together
/// when pods are started, so that a request reads one pair whatever starts meanwhile.
#[derive(Debug)]
struct Pods {
    workload: Arc<Workload>,
    cache: api::Cache,
    /// The resourceVersion at which each pod started by `run_pods` appeared, by (namespace, name).
    appeared: HashMap<(String, String), i64>,
    /// Every pod's changes in resourceVersion order, made when first watched.
    changes: std::sync::OnceLock<Vec<watch::Change>>,
}

impl Pods {
    fn appeared_of(&self, pod: &SimPod) -> Option<i64> {
        if self.appeared.is_empty() {
            return None;
        }
        self.appeared.get(&(pod.namespace.clone(), pod.name.clone())).copied()
    }
}

struct State {
    name: String,
    token: String,
    clock: Arc<SimClock>,
    /// The workload the cluster started with.
    started_with: Arc<Workload>,
    /// It, with the pods started since.
    pods: RwLock<Arc<Pods>>,
    continue_ttl_secs: i64,
    faults: Mutex<Faults>,
    address: Mutex<String>,
    /// Requests received (authenticated or not).
    requests: AtomicU64,
    /// Requests carrying a continue token still to be answered 410 Expired.
    expire_continues: AtomicU32,
    /// Permissions a `SelfSubjectAccessReview` answers as not allowed.
    denied: Mutex<Vec<Permission>>,
    /// Whether metrics-server's API (`metrics.k8s.io`) is served.
    metrics_api: AtomicBool,
    /// How many times pods were started at each clock second (`run_pods`).
    starts: Mutex<BTreeMap<i64, i64>>,
    watch_history_secs: i64,
    bookmark_secs: i64,
    /// resourceVersions below this are expired whatever the clock (`expire_watches`).
    expired_below: AtomicI64,
    /// Bumped by `expire_watches`: open watches end.
    watch_epoch: AtomicU64,
    /// Watches open now.
    watches_open: AtomicU64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("name", &self.name).finish_non_exhaustive()
    }
}

impl State {
    /// The pods now.
    fn pods(&self) -> Arc<Pods> {
        Arc::clone(&self.pods.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The resourceVersion of the state at clock second `t`: every change up to `t`, pods
    /// started at `t` included.
    fn resource_version_at(&self, t: i64) -> i64 {
        let starts = self.starts.lock().unwrap_or_else(PoisonError::into_inner).get(&t).copied().unwrap_or(0);
        t * RV_PER_SEC + starts
    }

    /// The oldest resourceVersion a watch may start from at clock second `now`.
    fn oldest_watchable(&self, now: i64) -> i64 {
        ((now - self.watch_history_secs) * RV_PER_SEC).max(self.expired_below.load(Ordering::SeqCst))
    }

    /// Whether this continue token is to be treated as expired (counting it).
    fn force_expired(&self) -> bool {
        self.expire_continues.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    /// The faults to apply to the next request, counting it.
    fn take_faults(&self) -> Faults {
        let mut f = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let current = f.clone();
        match f.times {
            Some(0) => return Faults::default(),
            Some(n) => f.times = Some(n - 1),
            None => {}
        }
        current
    }
}

/// A running simulated Kubernetes API server.
#[derive(Debug)]
pub struct KubeCluster {
    served: Served,
    /// The certificate clients are given to trust (PEM).
    ca_pem: String,
    state: Arc<State>,
}

impl KubeCluster {
    /// Starts the API server of cluster `name` on `127.0.0.1:0` over HTTPS with a new CA.
    ///
    /// # Errors
    /// When the CA cannot be made or the port bound.
    pub fn start(
        name: &str,
        workload: Arc<Workload>,
        clock: Arc<SimClock>,
        options: KubeOptions,
    ) -> anyhow::Result<Self> {
        let (ca_pem, tls) = match options.server_certificate {
            ServerCertificate::IssuedByCa => {
                let ca = Ca::new(name)?;
                let tls = ca.server_config()?;
                (ca.cert_pem().to_owned(), tls)
            }
            ServerCertificate::CaAsEndEntity => Ca::serving_itself(name)?,
        };
        let state = Arc::new(State {
            name: name.to_owned(),
            token: options.token.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            clock,
            pods: RwLock::new(Arc::new(Pods {
                workload: Arc::clone(&workload),
                cache: api::Cache::default(),
                appeared: HashMap::new(),
                changes: std::sync::OnceLock::new(),
            })),
            started_with: workload,
            continue_ttl_secs: options.continue_ttl_secs,
            faults: Mutex::new(Faults::default()),
            address: Mutex::new(String::new()),
            requests: AtomicU64::new(0),
            expire_continues: AtomicU32::new(0),
            denied: Mutex::new(Vec::new()),
            metrics_api: AtomicBool::new(true),
            starts: Mutex::new(BTreeMap::new()),
            watch_history_secs: options.watch_history_secs,
            bookmark_secs: options.bookmark_secs.max(1),
            expired_below: AtomicI64::new(0),
            watch_epoch: AtomicU64::new(0),
            watches_open: AtomicU64::new(0),
        });
        let shared = web::Data::from(Arc::clone(&state));
        let served = Served::start(
            move |c: &mut web::ServiceConfig| {
                c.app_data(shared.clone()).default_service(web::to(api::dispatch));
            },
            Some(tls),
        )?;
        *state.address.lock().unwrap_or_else(PoisonError::into_inner) = served.addr().to_string();
        Ok(Self { served, ca_pem, state })
    }

    /// `https://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        self.served.url()
    }

    /// The cluster's name (also its kubeconfig context).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The CA certificate (PEM) clients must trust.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token the server accepts.
    #[must_use]
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// The workload the cluster started with (without the pods of [`KubeCluster::run_pods`]).
    #[must_use]
    pub fn workload(&self) -> &Workload {
        &self.state.started_with
    }

    /// The workload now: the one the cluster started with and the pods started since.
    #[must_use]
    pub fn workload_now(&self) -> Arc<Workload> {
        Arc::clone(&self.state.pods().workload)
    }

    /// Starts `pods` on the running cluster, as a person starting a notebook or a job does:
    /// every request answered from now on sees them, as their times say at the clock's time.
    /// Watches see each as one ADDED at a new resourceVersion (when it exists by then), then
    /// its later changes.
    ///
    /// # Errors
    /// When a pod has the namespace and name of one the cluster has, or of another of `pods`.
    pub fn run_pods(&self, pods: Vec<SimPod>) -> anyhow::Result<()> {
        let mut current = self.state.pods.write().unwrap_or_else(PoisonError::into_inner);
        let mut all = current.workload.pods().to_vec();
        let mut appeared = current.appeared.clone();
        let mut keys = Vec::new();
        for pod in pods {
            anyhow::ensure!(
                !all.iter().any(|p| p.namespace == pod.namespace && p.name == pod.name),
                "pod {}/{} exists already",
                pod.namespace,
                pod.name
            );
            keys.push((pod.namespace.clone(), pod.name.clone()));
            all.push(pod);
        }
        let now = self.state.clock.now();
        let rv = {
            let mut starts = self.state.starts.lock().unwrap_or_else(PoisonError::into_inner);
            let n = starts.entry(now).or_insert(0);
            *n = (*n + 1).min(RV_PER_SEC - 1);
            now * RV_PER_SEC + *n
        };
        appeared.extend(keys.into_iter().map(|k| (k, rv)));
        let workload = Arc::new(Workload::new(current.workload.projects().to_vec(), all));
        *current =
            Arc::new(Pods { workload, cache: api::Cache::default(), appeared, changes: std::sync::OnceLock::new() });
        Ok(())
    }

    /// Switches faults on (or off, with `Faults::default()`).
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// How many requests the server has received, answered or refused alike.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Answers every `SelfSubjectAccessReview` of `verb` on `resource` of API `group` (`""`
    /// for core; `"*"` as the verb or resource matches any) as not allowed, as RBAC does for a
    /// ServiceAccount whose ClusterRole lacks the rule. Requests themselves are still answered:
    /// only the review says no.
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        self.state.denied.lock().unwrap_or_else(PoisonError::into_inner).push(Permission::new(verb, group, resource));
    }

    /// Allows every permission again.
    pub fn allow_all(&self) {
        self.state.denied.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Serves metrics-server's API or not: without it `metrics.k8s.io` is absent from
    /// discovery and its paths answer 404, as on a cluster without metrics-server.
    pub fn set_metrics_api(&self, served: bool) {
        self.state.metrics_api.store(served, Ordering::SeqCst);
    }

    /// Answers the next `n` list requests that carry a continue token with 410 Expired, as a
    /// real server does once the token is older than etcd's compaction, whatever the clock.
    pub fn expire_next_continue_tokens(&self, n: u32) {
        self.state.expire_continues.store(n, Ordering::SeqCst);
    }

    /// Expires every watch now, as an API server does when its watch cache is re-initialised or
    /// etcd compacted past a watcher: open watches end, and a watch from any resourceVersion
    /// given out so far is answered with an ERROR event, 410 Expired. A fresh list's
    /// resourceVersion works again.
    pub fn expire_watches(&self) {
        let now = self.state.clock.now();
        let rv = {
            let mut starts = self.state.starts.lock().unwrap_or_else(PoisonError::into_inner);
            let n = starts.entry(now).or_insert(0);
            *n = (*n + 1).min(RV_PER_SEC - 1);
            now * RV_PER_SEC + *n
        };
        self.state.expired_below.fetch_max(rv, Ordering::SeqCst);
        self.state.watch_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// How many watches are open now.
    #[must_use]
    pub fn watches_open(&self) -> u64 {
        self.state.watches_open.load(Ordering::SeqCst)
    }

    /// A kubeconfig with one cluster, one token user and one context, all named after the
    /// cluster.
    #[must_use]
    pub fn kubeconfig(&self) -> String {
        let name = &self.state.name;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: {name}-admin
  user:
    token: {token}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}-admin
current-context: {name}
preferences: {{}}
",
            url = self.url(),
            token = self.state.token,
        )
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.served.stop().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::world::lab_pods;

    const T0: i64 = 1_798_761_600;

    async fn names(cluster: &KubeCluster, path: &str) -> Vec<String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(cluster.ca_pem().as_bytes()).unwrap()])
            .build()
            .unwrap();
        let answer = http.get(format!("{}{path}", cluster.url())).bearer_auth(cluster.token()).send().await.unwrap();
        let list: serde_json::Value = answer.json().await.unwrap();
        list["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pods_started_while_the_cluster_runs_are_listed_and_measured_from_the_next_request() {
        let workload = Arc::new(Workload::new(Vec::new(), lab_pods("ada", T0 - 60)));
        let clock = Arc::new(SimClock::new(T0));
        let cluster = KubeCluster::start("run", workload, clock, KubeOptions::default()).unwrap();
        let ada = ["notebook-ada", "training-ada"];
        assert_eq!(names(&cluster, "/api/v1/pods").await, ada);
        assert_eq!(names(&cluster, "/apis/metrics.k8s.io/v1beta1/pods").await, ada);

        // At the same clock second, whose lists are cached.
        cluster.run_pods(lab_pods("mia", T0 - 60)).unwrap();
        let mia = ["notebook-mia", "training-mia"];
        assert_eq!(names(&cluster, "/api/v1/namespaces/mia-lab/pods?labelSelector=owner%3Dmia").await, mia);
        assert_eq!(names(&cluster, "/apis/metrics.k8s.io/v1beta1/pods").await, [ada, mia].concat());
        assert_eq!(cluster.workload_now().pods().len(), 4);
        assert_eq!(cluster.workload().pods().len(), 2, "the workload it started with");

        let taken = cluster.run_pods(lab_pods("mia", T0)).unwrap_err();
        assert!(taken.to_string().contains("mia-lab/notebook-mia"), "{taken}");
        assert_eq!(cluster.workload_now().pods().len(), 4, "a refused start changes nothing");
        cluster.stop().await;
    }
}
