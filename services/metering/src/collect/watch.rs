//! The requests of a pod watch (decision 0070): the pod list with its resourceVersion, and a
//! watch from it, each pod decoded into a small [`PodLife`] (never a whole `Pod`).

use super::client::{ClusterClient, Counters, Failure};
use super::items::{PodSpec, gpus_of, requests_of};
use super::{CollectError, PODS_PATH};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

type Text<'a> = Cow<'a, str>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    namespace: Text<'a>,
    #[serde(default, borrow)]
    uid: Text<'a>,
    #[serde(default, borrow)]
    resource_version: Text<'a>,
    #[serde(default, borrow)]
    creation_timestamp: Option<Text<'a>>,
    #[serde(default, borrow)]
    deletion_timestamp: Option<Text<'a>>,
    #[serde(default, borrow)]
    labels: Option<HashMap<Text<'a>, Text<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    #[serde(default, borrow)]
    phase: Option<Text<'a>>,
    #[serde(default, borrow)]
    start_time: Option<Text<'a>>,
    #[serde(default, borrow)]
    container_statuses: Vec<ContainerStatus<'a>>,
}

#[derive(Deserialize)]
struct ContainerStatus<'a> {
    #[serde(default, borrow)]
    state: Option<State<'a>>,
}

#[derive(Deserialize)]
struct State<'a> {
    #[serde(default, borrow)]
    running: Option<Times<'a>>,
    #[serde(default, borrow)]
    terminated: Option<Times<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Times<'a> {
    #[serde(default, borrow)]
    started_at: Option<Text<'a>>,
    #[serde(default, borrow)]
    finished_at: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    metadata: Meta<'a>,
    #[serde(default, borrow)]
    spec: Option<PodSpec<'a>>,
    #[serde(default, borrow)]
    status: Option<Status<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
    #[serde(default)]
    resource_version: String,
}

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(default, borrow)]
    items: Vec<Item<'a>>,
    metadata: ListMeta,
}

/// A pod reduced to what its lifetime needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLife {
    /// Its uid.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The owner label's value (empty without one).
    pub owner: String,
    /// GPUs held.
    pub gpus: u64,
    /// CPU requested, nanocores, summed over containers.
    pub cpu_request: u128,
    /// Memory requested, bytes, summed over containers.
    pub memory_request: u128,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<DateTime<Utc>>,
    /// When its first container started (else `status.startTime` once it runs).
    pub started_at: Option<DateTime<Utc>>,
    /// When its last container finished, once its phase is Succeeded or Failed.
    pub ended_at: Option<DateTime<Utc>>,
    /// `metadata.deletionTimestamp`.
    pub deletion_at: Option<DateTime<Utc>>,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
}

fn time(text: Option<&Text<'_>>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

fn life(item: Item<'_>, label_key: &str) -> Result<PodLife, CollectError> {
    let (ns, name) = (&item.metadata.namespace, &item.metadata.name);
    let gpus = gpus_of(item.spec.as_ref(), ns, name)?;
    let (cpu_request, memory_request) = requests_of(item.spec.as_ref(), ns, name)?;
    let phase = item.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    let states = item.status.iter().flat_map(|s| &s.container_statuses).filter_map(|c| c.state.as_ref());
    let mut started_at: Option<DateTime<Utc>> = None;
    let mut finished_at: Option<DateTime<Utc>> = None;
    for state in states {
        for times in [&state.running, &state.terminated].into_iter().flatten() {
            if let Some(t) = time(times.started_at.as_ref()) {
                started_at = Some(started_at.map_or(t, |s| s.min(t)));
            }
            if let Some(t) = time(times.finished_at.as_ref()) {
                finished_at = Some(finished_at.map_or(t, |f| f.max(t)));
            }
        }
    }
    if started_at.is_none() && matches!(phase, "Running" | "Succeeded" | "Failed") {
        started_at = time(item.status.as_ref().and_then(|s| s.start_time.as_ref()));
    }
    let terminal = matches!(phase, "Succeeded" | "Failed");
    Ok(PodLife {
        uid: item.metadata.uid.into_owned(),
        owner: item.metadata.labels.as_ref().and_then(|l| l.get(label_key)).map_or_else(String::new, |o| o.to_string()),
        gpus,
        cpu_request,
        memory_request,
        created_at: time(item.metadata.creation_timestamp.as_ref()),
        started_at,
        ended_at: if terminal { finished_at.or(started_at) } else { None },
        deletion_at: time(item.metadata.deletion_timestamp.as_ref()),
        resource_version: item.metadata.resource_version.into_owned(),
        namespace: item.metadata.namespace.into_owned(),
        name: item.metadata.name.into_owned(),
    })
}

/// A watch event's object as a [`PodLife`].
///
/// # Errors
/// An object that is no pod, or a malformed quantity in it.
pub fn pod_of(object: &serde_json::Value, label_key: &str) -> Result<PodLife, CollectError> {
    let item = Item::deserialize(object)
        .map_err(|e| CollectError::Malformed { what: format!("WATCH {PODS_PATH}"), message: e.to_string() })?;
    life(item, label_key)
}

/// Every pod, and the list's resourceVersion to watch from.
#[derive(Debug, Clone, Default)]
pub struct PodLives {
    /// The pods, every phase.
    pub pods: Vec<PodLife>,
    /// The list's `metadata.resourceVersion`.
    pub resource_version: String,
    /// HTTP requests sent.
    pub api_calls: u64,
}

/// Events of a pod watch, each object as JSON.
pub type WatchEvents = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<kube::core::WatchEvent<serde_json::Value>, kube::Error>> + Send>,
>;

/// How opening a watch failed.
#[derive(Debug)]
pub enum WatchOpenError {
    /// 410: the resourceVersion is too old; list again.
    Expired,
    /// Anything else.
    Failed(CollectError),
}

impl ClusterClient {
    /// Every pod (paged; a list whose continue token expires starts again) with the
    /// resourceVersion of the list's first page.
    ///
    /// # Errors
    /// As for a collection's lists.
    pub async fn list_pod_lives(&self) -> Result<PodLives, CollectError> {
        let counters = Counters::default();
        let label_key = self.config.label_key.as_str();
        let fold = |acc: &mut PodLives, what: &str, body: &[u8]| {
            let page: Page<'_> = serde_json::from_slice(body)
                .map_err(|e| CollectError::Malformed { what: what.to_owned(), message: e.to_string() })?;
            if acc.resource_version.is_empty() {
                acc.resource_version = page.metadata.resource_version;
            }
            for item in page.items {
                acc.pods.push(life(item, label_key)?);
            }
            Ok(page.metadata.continue_)
        };
        let mut lives = self.list_all(PODS_PATH, &counters, PodLives::default, fold).await?;
        lives.api_calls = counters.api_calls.load(Ordering::Relaxed);
        Ok(lives)
    }

    /// Watches every pod from `resource_version`, with bookmarks, for `timeout_secs` at most.
    /// Counts the request in `api_calls`.
    ///
    /// # Errors
    /// [`WatchOpenError::Expired`] on a 410, else the failure.
    pub async fn watch_pods(
        &self,
        resource_version: &str,
        timeout_secs: u32,
        api_calls: &std::sync::atomic::AtomicU64,
    ) -> Result<WatchEvents, WatchOpenError> {
        let query = serde_urlencoded::to_string([
            ("watch", "1"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", &timeout_secs.to_string()),
        ])
        .map_err(|e| {
            WatchOpenError::Failed(CollectError::Malformed { what: "WATCH".to_owned(), message: e.to_string() })
        })?;
        let counters = Counters::default();
        let opened = self.open_watch(&format!("{PODS_PATH}?{query}"), &counters).await;
        api_calls.fetch_add(counters.api_calls.load(Ordering::Relaxed), Ordering::Relaxed);
        match opened {
            Ok(events) => Ok(Box::pin(events)),
            Err(Failure::Gone) => Err(WatchOpenError::Expired),
            Err(Failure::Fatal(e)) => Err(WatchOpenError::Failed(e)),
        }
    }
}
