//! Watching pods (`GET …/pods?watch=1`), as the API server answers it: a chunked stream of JSON
//! lines `{"type": "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR", "object": …}`,
//! driven by the simulated clock.
//!
//! - From `resourceVersion` (exclusive): every change after it, in resourceVersion order, as
//!   the clock reaches it. Without one (or with `"0"`), first an ADDED for every pod that exists
//!   now, then the changes.
//! - A resourceVersion older than the retained history (`watch_history_secs`, or anything given
//!   out before [`super::KubeCluster::expire_watches`]) is answered 200 with one ERROR event
//!   carrying a Status of code 410, reason `Expired` ("too old resource version"), then the
//!   stream ends: a client lists again.
//! - `allowWatchBookmarks=true`: a BOOKMARK, whose object carries only `kind`, `apiVersion`
//!   and `metadata.resourceVersion`, at every multiple of `bookmark_secs` of the clock and just
//!   before the stream ends.
//! - `timeoutSeconds` (simulated seconds; 1,800 when absent, the API server's
//!   `min-request-timeout`) ends the stream cleanly.
//! - `labelSelector` and `fieldSelector` as the list has them; a pod whose change takes it out
//!   of a field selector is seen DELETED, one that comes into it ADDED.

use super::api::{bad_request, deleted_pod_json, field_filter, field_matches, pod_json, status_with};
use super::selector::Selector;
use super::{Pods, RV_PER_SEC, State};
use crate::workload::SimPod;
use actix_web::HttpResponse;
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use serde_json::json;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often an open watch looks at the clock (real time).
const POLL: Duration = Duration::from_millis(50);
/// The stream's length when `timeoutSeconds` is not given.
const DEFAULT_TIMEOUT_SECS: i64 = 1800;

/// What a change does to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// The pod is created (or appears, when started by `run_pods`).
    Added,
    /// Its phase changes.
    Modified,
    /// It is deleted.
    Deleted,
}

/// One change of one pod: its resourceVersion, the pod (index in the workload), what it does,
/// and the clock second of the state it shows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Change {
    rv: i64,
    pod: usize,
    what: What,
    at: i64,
}

fn changes_of(i: usize, pod: &SimPod, appeared: Option<i64>) -> Vec<Change> {
    let mut out = vec![Change { rv: pod.created * RV_PER_SEC, pod: i, what: What::Added, at: pod.created }];
    if pod.started > pod.created && pod.exists_at(pod.started) {
        out.push(Change { rv: pod.started * RV_PER_SEC, pod: i, what: What::Modified, at: pod.started });
    }
    if let Some(f) = pod.finished.filter(|&f| f > pod.started && pod.exists_at(f)) {
        out.push(Change { rv: f * RV_PER_SEC, pod: i, what: What::Modified, at: f });
    }
    if let Some(d) = pod.deleted.filter(|&d| d > pod.created) {
        out.push(Change { rv: d * RV_PER_SEC, pod: i, what: What::Deleted, at: d });
    }
    let Some(a) = appeared else { return out };
    // Started by `run_pods`: what happened before it appeared is one ADDED at its appearance.
    let second = a.div_euclid(RV_PER_SEC);
    let mut folded: Vec<Change> = out.into_iter().filter(|c| c.rv > a).collect();
    if pod.exists_at(second) {
        folded.insert(0, Change { rv: a, pod: i, what: What::Added, at: second });
    }
    folded
}

impl Pods {
    /// Every change of every pod, in resourceVersion order.
    fn changes(&self) -> &[Change] {
        self.changes.get_or_init(|| {
            let mut all: Vec<Change> = self
                .workload
                .pods()
                .iter()
                .enumerate()
                .flat_map(|(i, p)| changes_of(i, p, self.appeared_of(p)))
                .collect();
            all.sort_by_key(|c| (c.rv, c.pod));
            all
        })
    }
}

/// What a watch selects.
struct Filter {
    namespace: Option<String>,
    labels: Selector,
    fields: Vec<(String, bool, String)>,
}

impl Filter {
    fn static_match(&self, pod: &SimPod) -> bool {
        self.namespace.as_ref().is_none_or(|ns| &pod.namespace == ns) && self.labels.matches(&pod.labels)
    }

    fn matches_at(&self, pod: &SimPod, t: i64) -> bool {
        field_matches(&self.fields, pod, t)
    }
}

fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(br#"{"type":""#);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#"","object":"#);
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(rv: i64) -> Bytes {
    let object = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}});
    line("BOOKMARK", object.to_string().as_bytes())
}

fn too_old(rv: i64, oldest: i64) -> Bytes {
    let object = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {rv} ({oldest})"),
        "reason": "Expired",
        "code": 410,
    });
    line("ERROR", object.to_string().as_bytes())
}

/// The event lines of `changes` seen through `filter`.
fn event_line(pods: &Pods, filter: &Filter, c: Change) -> Option<Bytes> {
    let pod = pods.workload.pods().get(c.pod)?;
    if !filter.static_match(pod) {
        return None;
    }
    let appeared = pods.appeared_of(pod);
    match c.what {
        What::Added => filter.matches_at(pod, c.at).then(|| line("ADDED", &pod_json(pod, c.at, appeared))),
        What::Deleted => {
            filter.matches_at(pod, c.at - 1).then(|| line("DELETED", &deleted_pod_json(pod, c.at, appeared)))
        }
        What::Modified => {
            let object = || pod_json(pod, c.at, appeared);
            match (filter.matches_at(pod, c.at - 1), filter.matches_at(pod, c.at)) {
                (true, true) => Some(line("MODIFIED", &object())),
                (false, true) => Some(line("ADDED", &object())),
                (true, false) => Some(line("DELETED", &object())),
                (false, false) => None,
            }
        }
    }
}

/// The body of a watch: the lines its task sends, until the task ends.
struct Stream(mpsc::Receiver<Bytes>);

impl MessageBody for Stream {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(Ok))
    }
}

/// Counts an open watch while it lives.
struct Open(Arc<State>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.watches_open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers a watch of pods (in `namespace`, when given).
pub(super) fn watch(state: web::Data<State>, query: &HashMap<String, String>, namespace: Option<&str>) -> HttpResponse {
    let labels = match Selector::parse(query.get("labelSelector").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(e) => return bad_request(&e),
    };
    let fields = match field_filter(query.get("fieldSelector").map_or("", String::as_str)) {
        Ok(f) => f,
        Err(e) => return bad_request(&e),
    };
    let timeout = match query.get("timeoutSeconds").map(|t| t.parse::<i64>()) {
        None => DEFAULT_TIMEOUT_SECS,
        Some(Ok(t)) if t >= 0 => t,
        Some(_) => return bad_request("timeoutSeconds: Invalid value: must be a non-negative integer"),
    };
    let from = match query.get("resourceVersion").map(String::as_str).filter(|rv| !rv.is_empty() && *rv != "0") {
        None => None,
        Some(rv) => match rv.parse::<i64>() {
            Ok(rv) if rv > 0 => Some(rv),
            _ => {
                return status_with(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("resourceVersion: Invalid value: \"{rv}\": invalid resource version"),
                    json!({}),
                    json!({}),
                );
            }
        },
    };
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true" || b == "1");
    let filter = Filter { namespace: namespace.map(str::to_owned), labels, fields };
    let state = state.into_inner();
    state.watches_open.fetch_add(1, Ordering::SeqCst);
    let open = Open(Arc::clone(&state));
    // The watch starts when its request is answered, not when the task sending it first runs:
    // a clock moved (or watches expired) in between is seen by it, as by the API server's.
    let start =
        Start { at: state.clock.now(), epoch: state.watch_epoch.load(Ordering::SeqCst), from, timeout, bookmarks };
    let (tx, rx) = mpsc::channel(64);
    actix_web::rt::spawn(async move {
        let _open = open;
        stream(&state, &filter, start, &tx).await;
    });
    HttpResponse::Ok().content_type("application/json").body(Stream(rx))
}

/// How a watch was asked for, and the clock second and expiry epoch of its request.
struct Start {
    at: i64,
    epoch: u64,
    from: Option<i64>,
    timeout: i64,
    bookmarks: bool,
}

/// Sends the watch's lines until its timeout, an expiry, or the client going away.
async fn stream(state: &State, filter: &Filter, start: Start, tx: &mpsc::Sender<Bytes>) {
    let Start { at: started, epoch, from, timeout, bookmarks } = start;
    let end = started.saturating_add(timeout);
    let mut cursor = match from {
        Some(rv) => {
            let oldest = state.oldest_watchable(started);
            if rv < oldest {
                let _ = tx.send(too_old(rv, oldest)).await;
                return;
            }
            rv
        }
        None => {
            // The state now, as ADDED events, then the changes after it.
            let rv = state.resource_version_at(started);
            let pods = state.pods();
            for pod in pods.workload.pods().iter().filter(|p| p.exists_at(started)) {
                if filter.static_match(pod)
                    && filter.matches_at(pod, started)
                    && tx.send(line("ADDED", &pod_json(pod, started, pods.appeared_of(pod)))).await.is_err()
                {
                    return;
                }
            }
            rv
        }
    };
    let mut last_bookmark = cursor.div_euclid(RV_PER_SEC);
    loop {
        if tx.is_closed() || state.watch_epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        let now = state.clock.now().min(end);
        let to = state.resource_version_at(now);
        if to > cursor {
            let pods = state.pods();
            let changes = pods.changes();
            let first = changes.partition_point(|c| c.rv <= cursor);
            for c in changes.iter().skip(first).take_while(|c| c.rv <= to) {
                if let Some(l) = event_line(&pods, filter, *c)
                    && tx.send(l).await.is_err()
                {
                    return;
                }
            }
            cursor = to;
            let every = state.bookmark_secs;
            if bookmarks && now.div_euclid(every) > last_bookmark.div_euclid(every) {
                if tx.send(bookmark(cursor)).await.is_err() {
                    return;
                }
                last_bookmark = now;
            }
        }
        if now >= end {
            if bookmarks {
                let _ = tx.send(bookmark(cursor)).await;
            }
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::workload::{MemFormat, Profile, SimContainer};

    fn pod(created: i64, started: i64, finished: Option<i64>, deleted: Option<i64>) -> SimPod {
        SimPod {
            namespace: "ns".to_owned(),
            name: "p".to_owned(),
            uid: "u".to_owned(),
            labels: [("owner".to_owned(), "ada".to_owned())].into(),
            node: "n".to_owned(),
            created,
            started,
            finished,
            deleted,
            containers: vec![SimContainer {
                name: "main".to_owned(),
                image: "i".to_owned(),
                cpu_request_millis: 100,
                memory_request_bytes: 1 << 20,
                gpus: 1,
                profile: Profile::Steady { cpu_nanocores: 1, memory_bytes: 1 },
                memory_format: MemFormat::Mebi,
            }],
        }
    }

    #[test]
    fn a_pods_life_is_four_changes_and_what_came_before_its_appearance_is_one() {
        let p = pod(100, 110, Some(200), Some(260));
        let all: Vec<(i64, What)> = changes_of(0, &p, None).iter().map(|c| (c.rv, c.what)).collect();
        assert_eq!(
            all,
            [(100_000, What::Added), (110_000, What::Modified), (200_000, What::Modified), (260_000, What::Deleted)]
        );
        let folded: Vec<(i64, What, i64)> =
            changes_of(0, &p, Some(150_002)).iter().map(|c| (c.rv, c.what, c.at)).collect();
        assert_eq!(
            folded,
            [(150_002, What::Added, 150), (200_000, What::Modified, 200), (260_000, What::Deleted, 260)]
        );
        assert!(changes_of(0, &p, Some(300_001)).is_empty(), "gone before it appeared");
        let started_at_once = pod(100, 100, None, None);
        assert_eq!(changes_of(0, &started_at_once, None).len(), 1);
    }
}
