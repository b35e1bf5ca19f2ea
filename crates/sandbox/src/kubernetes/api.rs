//! Routes, authentication, faults and the JSON the API server and metrics-server answer.

use super::quantity::{cpu_millis, memory_request, write_cpu, write_memory};
use super::selector::Selector;
use super::{Pods, State};
use crate::workload::{Phase, SCRAPE_SECS, SimPod};
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

const EXPIRED_MESSAGE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Serialized list items of one moment, in (namespace, name) order.
#[derive(Debug)]
pub(super) struct Snapshot {
    at: i64,
    /// (index into the workload's pods, the item's JSON).
    items: Vec<(usize, Box<[u8]>)>,
}

/// The latest pod and PodMetrics snapshots.
#[derive(Debug, Default)]
pub(super) struct Cache {
    pods: Mutex<Option<Arc<Snapshot>>>,
    metrics: Mutex<Option<Arc<Snapshot>>>,
}

pub(super) fn timestamp(t: i64) -> String {
    DateTime::from_timestamp(t, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn status(code: StatusCode, reason: &str, message: &str) -> HttpResponse {
    status_with(code, reason, message, json!({}), json!({}))
}

pub(super) fn status_with(
    code: StatusCode,
    reason: &str,
    message: &str,
    metadata: Value,
    details: Value,
) -> HttpResponse {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata,
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if details.as_object().is_some_and(|d| !d.is_empty())
        && let Some(o) = body.as_object_mut()
    {
        o.insert("details".to_owned(), details);
    }
    HttpResponse::build(code).content_type("application/json").body(body.to_string())
}

fn json_ok(body: &Value) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(body.to_string())
}

fn not_found() -> HttpResponse {
    status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
}

/// Every request: authentication, then faults, then the route.
pub(super) async fn dispatch(req: HttpRequest, state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    state.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let authorized = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == state.token);
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let faults = state.take_faults();
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(retry_after) = faults.too_many_requests {
        let mut resp = status_with(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests, please try again later.",
            json!({}),
            json!({"retryAfterSeconds": retry_after}),
        );
        if let Ok(v) = retry_after.to_string().parse() {
            resp.headers_mut().insert(RETRY_AFTER, v);
        }
        return resp;
    }
    if let Some(code) = faults.server_error {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (reason, message) = if code == StatusCode::SERVICE_UNAVAILABLE {
            ("ServiceUnavailable", "the server is currently unable to handle the request")
        } else {
            ("InternalError", "Internal error occurred: etcdserver: request timed out")
        };
        return status(code, reason, message);
    }
    let path = req.path().trim_end_matches('/');
    if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" && req.method() == actix_web::http::Method::POST
    {
        return super::access::review(&state, &body);
    }
    if req.method() != actix_web::http::Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let metrics_api = state.metrics_api.load(std::sync::atomic::Ordering::SeqCst);
    if !metrics_api && segments.get(1) == Some(&"metrics.k8s.io") {
        return not_found();
    }
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    match segments.as_slice() {
        ["version"] => json_ok(&version()),
        ["api"] => json_ok(&json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": *state.address.lock().unwrap_or_else(PoisonError::into_inner)}],
        })),
        ["api", "v1"] => json_ok(&core_resources()),
        ["apis"] => json_ok(&groups(metrics_api)),
        ["apis", "authorization.k8s.io"] => json_ok(&authorization_group()),
        ["apis", "authorization.k8s.io", "v1"] => json_ok(&authorization_resources()),
        ["apis", "metrics.k8s.io"] => json_ok(&metrics_group()),
        ["apis", "metrics.k8s.io", "v1beta1"] => json_ok(&metrics_resources()),
        ["api", "v1", "namespaces"] => json_ok(&namespaces(&state)),
        ["api", "v1", "pods"] => list(&state, &query, None, Kind::Pods),
        ["api", "v1", "namespaces", ns, "pods"] => list(&state, &query, Some(ns), Kind::Pods),
        ["api", "v1", "namespaces", ns, "pods", name] => get_pod(&state, ns, name),
        ["apis", "metrics.k8s.io", "v1beta1", "pods"] => list(&state, &query, None, Kind::Metrics),
        ["apis", "metrics.k8s.io", "v1beta1", "namespaces", ns, "pods"] => {
            list(&state, &query, Some(ns), Kind::Metrics)
        }
        ["apis", "metrics.k8s.io", "v1beta1", "namespaces", ns, "pods", name] => get_pod_metrics(&state, ns, name),
        ["apis", "metrics.k8s.io", "v1beta1", "nodes"] => json_ok(&node_metrics(&state)),
        _ => not_found(),
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.5",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-09-09T00:00:00Z",
        "goVersion": "go1.24.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn core_resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["ns"],
             "storageVersionHash": "Q3oi5N2YM8M="},
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
             "shortNames": ["po"], "categories": ["all"], "storageVersionHash": "xPOwRZ+Yhw8="},
        ],
    })
}

fn metrics_version() -> Value {
    json!({"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"})
}

fn metrics_group() -> Value {
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": "metrics.k8s.io",
        "versions": [metrics_version()],
        "preferredVersion": metrics_version(),
    })
}

fn authorization_group() -> Value {
    let version = json!({"groupVersion": "authorization.k8s.io/v1", "version": "v1"});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": "authorization.k8s.io",
        "versions": [version],
        "preferredVersion": version,
    })
}

fn authorization_resources() -> Value {
    let review = |name: &str, kind: &str| json!({"name": name, "singularName": "", "namespaced": false, "kind": kind, "verbs": ["create"]});
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "authorization.k8s.io/v1",
        "resources": [
            review("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
            review("selfsubjectrulesreviews", "SelfSubjectRulesReview"),
        ],
    })
}

/// The groups discovery lists: authorization, and metrics-server's when it is served.
fn groups(metrics_api: bool) -> Value {
    let mut listed = vec![authorization_group()];
    if metrics_api {
        listed.push(metrics_group());
    }
    for group in &mut listed {
        if let Some(o) = group.as_object_mut() {
            o.remove("kind");
            o.remove("apiVersion");
        }
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": listed})
}

fn metrics_resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "metrics.k8s.io/v1beta1",
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ],
    })
}

fn namespaces(state: &State) -> Value {
    let current = state.pods();
    let mut names: Vec<(&str, i64)> = vec![("default", 0), ("kube-system", 0)];
    for p in current.workload.pods() {
        match names.iter_mut().find(|(n, _)| *n == p.namespace) {
            Some((_, created)) => *created = (*created).min(p.created),
            None => names.push((&p.namespace, p.created)),
        }
    }
    names.sort_unstable();
    let items: Vec<Value> = names
        .iter()
        .map(|(n, created)| {
            json!({
                "metadata": {"name": n, "resourceVersion": created.to_string(),
                             "creationTimestamp": timestamp(*created),
                             "labels": {"kubernetes.io/metadata.name": n}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            })
        })
        .collect();
    json!({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": state.clock.now().to_string()}, "items": items})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pods,
    Metrics,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodJson<'a> {
    metadata: PodMeta<'a>,
    spec: PodSpecJson<'a>,
    status: PodStatusJson<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodMeta<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    resource_version: String,
    creation_timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletion_timestamp: Option<String>,
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecJson<'a> {
    containers: Vec<ContainerJson<'a>>,
    node_name: &'a str,
    restart_policy: &'static str,
}

#[derive(Serialize)]
struct ContainerJson<'a> {
    name: &'a str,
    image: &'a str,
    resources: Resources,
}

#[derive(Serialize)]
struct Resources {
    requests: BTreeMap<&'static str, String>,
    limits: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodStatusJson<'a> {
    phase: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
    container_statuses: Vec<ContainerStatusJson<'a>>,
    qos_class: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatusJson<'a> {
    name: &'a str,
    image: &'a str,
    ready: bool,
    restart_count: u32,
    started: bool,
    state: Value,
}

/// A pod's object at `t`; `appeared` is the resourceVersion at which a pod started by
/// [`super::KubeCluster::run_pods`] appeared (changes before it are folded into it).
pub(super) fn pod_json(pod: &SimPod, t: i64, appeared: Option<i64>) -> Vec<u8> {
    pod_object(pod, t, appeared, None)
}

/// The object a DELETED event carries: the pod as it was, with its `deletionTimestamp`.
pub(super) fn deleted_pod_json(pod: &SimPod, deleted: i64, appeared: Option<i64>) -> Vec<u8> {
    pod_object(pod, deleted - 1, appeared, Some(deleted))
}

fn pod_object(pod: &SimPod, t: i64, appeared: Option<i64>, deleted: Option<i64>) -> Vec<u8> {
    let phase = pod.phase_at(t);
    let state = match phase {
        Phase::Pending => json!({"waiting": {"reason": "ContainerCreating"}}),
        Phase::Running => json!({"running": {"startedAt": timestamp(pod.started)}}),
        Phase::Succeeded => json!({"terminated": {"exitCode": 0, "reason": "Completed",
            "startedAt": timestamp(pod.started), "finishedAt": timestamp(pod.finished.unwrap_or(pod.started))}}),
    };
    let container_statuses = pod
        .containers
        .iter()
        .map(|c| ContainerStatusJson {
            name: &c.name,
            image: &c.image,
            ready: phase == Phase::Running,
            restart_count: 0,
            started: phase == Phase::Running,
            state: state.clone(),
        })
        .collect();
    let changed = deleted.unwrap_or_else(|| pod.changed_at(t)) * super::RV_PER_SEC;
    let containers = pod
        .containers
        .iter()
        .map(|c| {
            let mut requests = BTreeMap::new();
            requests.insert("cpu", cpu_millis(c.cpu_request_millis));
            requests.insert("memory", memory_request(c.memory_request_bytes));
            if c.gpus > 0 {
                requests.insert("nvidia.com/gpu", c.gpus.to_string());
            }
            ContainerJson {
                name: &c.name,
                image: &c.image,
                resources: Resources { limits: requests.clone(), requests },
            }
        })
        .collect();
    let body = PodJson {
        metadata: PodMeta {
            name: &pod.name,
            namespace: &pod.namespace,
            uid: &pod.uid,
            resource_version: appeared.map_or(changed, |a| a.max(changed)).to_string(),
            creation_timestamp: timestamp(pod.created),
            deletion_timestamp: deleted.map(timestamp),
            labels: &pod.labels,
        },
        spec: PodSpecJson {
            containers,
            node_name: &pod.node,
            restart_policy: if pod.finished.is_some() { "Never" } else { "Always" },
        },
        status: PodStatusJson {
            phase: phase.as_str(),
            start_time: (phase != Phase::Pending).then(|| timestamp(pod.started)),
            container_statuses,
            qos_class: "Guaranteed",
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Serialize)]
struct MetricsJson<'a> {
    metadata: MetricsMeta<'a>,
    timestamp: &'a str,
    window: &'static str,
    containers: Vec<UsageJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricsMeta<'a> {
    name: &'a str,
    namespace: &'a str,
    creation_timestamp: &'a str,
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct UsageJson<'a> {
    name: &'a str,
    usage: UsageValues,
}

#[derive(Serialize)]
struct UsageValues {
    cpu: String,
    memory: String,
}

/// The scrape a PodMetrics list at `t` reports: the last one at or before `t`.
const fn scrape_at(t: i64) -> i64 {
    t - t.rem_euclid(SCRAPE_SECS)
}

/// Whether metrics-server has a rate for `pod` at scrape `ts`: it ran through the second
/// before the scrape and is still running at it.
fn has_metrics(pod: &SimPod, ts: i64) -> bool {
    pod.exists_at(ts) && pod.running_at(ts) && pod.running_at(ts - 1)
}

fn metrics_json(pod: &SimPod, ts: i64, stamp: &str, created: &str) -> Vec<u8> {
    let containers = pod
        .containers
        .iter()
        .map(|c| {
            // The window [ts - 15, ts) never straddles a profile change, so its rate is the
            // rate of its last second.
            let (cpu, mem) = c.profile.at(ts - 1);
            let mut usage = UsageValues { cpu: String::new(), memory: String::new() };
            write_cpu(&mut usage.cpu, cpu);
            write_memory(&mut usage.memory, mem, c.memory_format);
            UsageJson { name: &c.name, usage }
        })
        .collect();
    let body = MetricsJson {
        metadata: MetricsMeta {
            name: &pod.name,
            namespace: &pod.namespace,
            creation_timestamp: created,
            labels: &pod.labels,
        },
        timestamp: stamp,
        window: "15s",
        containers,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

fn build(current: &Pods, kind: Kind, at: i64) -> Snapshot {
    let pods = current.workload.pods();
    let items = match kind {
        Kind::Pods => pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.exists_at(at))
            .map(|(i, p)| (i, pod_json(p, at, current.appeared_of(p)).into_boxed_slice()))
            .collect(),
        Kind::Metrics => {
            let stamp = timestamp(at);
            pods.iter()
                .enumerate()
                .filter(|(_, p)| has_metrics(p, at))
                .map(|(i, p)| (i, metrics_json(p, at, &stamp, &stamp).into_boxed_slice()))
                .collect()
        }
    };
    Snapshot { at, items }
}

/// The snapshot of `kind` at `at` (a clock second for pods, a scrape for metrics): the cached
/// one when it matches, else built (and cached when it is the newest).
fn snapshot(current: &Pods, kind: Kind, at: i64) -> Arc<Snapshot> {
    let slot = match kind {
        Kind::Pods => &current.cache.pods,
        Kind::Metrics => &current.cache.metrics,
    };
    let mut cached = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = cached.as_ref().filter(|s| s.at == at) {
        return Arc::clone(s);
    }
    let fresh = Arc::new(build(current, kind, at));
    if cached.as_ref().is_none_or(|s| s.at < at) {
        *cached = Some(Arc::clone(&fresh));
    }
    fresh
}

#[derive(Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, pod: &SimPod) -> String {
    let token =
        ContinueToken { v: "meta.k8s.io/v1".to_owned(), rv, start: format!("{}/{}\u{0}", pod.namespace, pod.name) };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<(i64, String, String), String> {
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|e| format!("continue key is not valid: {e}"))?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|e| format!("continue key is not valid: {e}"))?;
    if t.v != "meta.k8s.io/v1" {
        return Err("continue key is not valid: server does not recognize this encoded key".to_owned());
    }
    let start = t.start.strip_suffix('\u{0}').unwrap_or(&t.start);
    let (ns, name) = start.split_once('/').ok_or("continue key is not valid: invalid start key")?;
    Ok((t.rv, ns.to_owned(), name.to_owned()))
}

pub(super) fn bad_request(message: &str) -> HttpResponse {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// A field selector on pods: `metadata.name`, `metadata.namespace`, `spec.nodeName`,
/// `status.phase`, with `=`, `==`, `!=`.
pub(super) fn field_filter(text: &str) -> Result<Vec<(String, bool, String)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
            (f, false, v)
        } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (f, true, v)
        } else {
            return Err(format!("invalid selector: '{part}'; can't understand '{part}'"));
        };
        let field = field.trim();
        if !matches!(field, "metadata.name" | "metadata.namespace" | "spec.nodeName" | "status.phase") {
            return Err(format!("field label not supported: {field}"));
        }
        out.push((field.to_owned(), eq, value.trim().to_owned()));
    }
    Ok(out)
}

pub(super) fn field_matches(fields: &[(String, bool, String)], pod: &SimPod, at: i64) -> bool {
    fields.iter().all(|(f, eq, v)| {
        let actual = match f.as_str() {
            "metadata.name" => pod.name.as_str(),
            "metadata.namespace" => pod.namespace.as_str(),
            "spec.nodeName" => pod.node.as_str(),
            _ => pod.phase_at(at).as_str(),
        };
        (actual == v) == *eq
    })
}

fn list(
    state: &web::Data<State>,
    query: &HashMap<String, String>,
    namespace: Option<&str>,
    kind: Kind,
) -> HttpResponse {
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return match kind {
            Kind::Pods => super::watch::watch(web::Data::clone(state), query, namespace),
            // metrics.k8s.io serves get and list only.
            Kind::Metrics => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ),
        };
    }
    let selector = match Selector::parse(query.get("labelSelector").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(e) => return bad_request(&e),
    };
    let fields = match kind {
        Kind::Pods => match field_filter(query.get("fieldSelector").map_or("", String::as_str)) {
            Ok(f) => f,
            Err(e) => return bad_request(&e),
        },
        Kind::Metrics => Vec::new(),
    };
    let limit = match query.get("limit").map(|l| l.parse::<i64>()) {
        None => None,
        Some(Ok(l)) if l > 0 => usize::try_from(l).ok(),
        Some(Ok(_)) => None,
        Some(Err(_)) => return bad_request("limit: Invalid value: must be an integer"),
    };
    let now = state.clock.now();
    let current = state.pods();
    let pods = current.workload.pods();
    let (rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        None => (now, None),
        Some(token) => match decode_continue(token) {
            Err(e) => return bad_request(&e),
            Ok((rv, ..)) if now - rv > state.continue_ttl_secs || state.force_expired() => {
                let fresh = ContinueToken { v: "meta.k8s.io/v1".to_owned(), rv: now, start: String::new() };
                let inconsistent = decode_continue(token)
                    .map(|(_, ns, name)| ContinueToken { start: format!("{ns}/{name}\u{0}"), ..fresh })
                    .ok()
                    .and_then(|t| serde_json::to_vec(&t).ok())
                    .map(|b| base64::engine::general_purpose::URL_SAFE.encode(b))
                    .unwrap_or_default();
                return status_with(
                    StatusCode::GONE,
                    "Expired",
                    EXPIRED_MESSAGE,
                    json!({"continue": inconsistent}),
                    json!({}),
                );
            }
            Ok((rv, ns, name)) => (rv, Some((ns, name))),
        },
    };
    let at = match kind {
        Kind::Pods => rv,
        Kind::Metrics => scrape_at(rv),
    };
    let snap = snapshot(&current, kind, at);
    let first = after.as_ref().map_or(0, |(ns, name)| {
        snap.items.partition_point(|(i, _)| {
            pods.get(*i).is_some_and(|p| (p.namespace.as_str(), p.name.as_str()) <= (ns.as_str(), name.as_str()))
        })
    });
    let accept = |i: usize| {
        pods.get(i).is_some_and(|p| {
            namespace.is_none_or(|ns| p.namespace == ns) && selector.matches(&p.labels) && field_matches(&fields, p, rv)
        })
    };
    let mut body = Vec::with_capacity(1024);
    let mut count = 0_usize;
    let mut last = None;
    let mut more = false;
    let mut remaining = 0_u64;
    let counting = selector.is_empty() && fields.is_empty();
    let head = match kind {
        Kind::Pods => &br#"{"kind":"PodList","apiVersion":"v1","items":["#[..],
        Kind::Metrics => &br#"{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","items":["#[..],
    };
    body.extend_from_slice(head);
    for (i, item) in snap.items.iter().skip(first) {
        if !accept(*i) {
            continue;
        }
        if limit.is_some_and(|l| count >= l) {
            more = true;
            if !counting {
                break;
            }
            remaining += 1;
            continue;
        }
        if count > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
        count += 1;
        last = Some(*i);
    }
    body.push(b']');
    let mut meta = serde_json::Map::new();
    if kind == Kind::Pods {
        meta.insert("resourceVersion".to_owned(), json!(state.resource_version_at(rv).to_string()));
    }
    if more && let Some(pod) = last.and_then(|i| pods.get(i)) {
        meta.insert("continue".to_owned(), json!(encode_continue(rv, pod)));
        if counting {
            meta.insert("remainingItemCount".to_owned(), json!(remaining));
        }
    }
    body.extend_from_slice(br#","metadata":"#);
    body.extend_from_slice(Value::Object(meta).to_string().as_bytes());
    body.push(b'}');
    HttpResponse::Ok().insert_header((CONTENT_TYPE, "application/json")).body(body)
}

fn get_pod(state: &State, ns: &str, name: &str) -> HttpResponse {
    let now = state.clock.now();
    let current = state.pods();
    match current.workload.pods().iter().find(|p| p.namespace == ns && p.name == name && p.exists_at(now)) {
        Some(pod) => {
            let appeared = current.appeared_of(pod);
            let mut v: Value = serde_json::from_slice(&pod_json(pod, now, appeared)).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".to_owned(), json!("Pod"));
                o.insert("apiVersion".to_owned(), json!("v1"));
            }
            json_ok(&v)
        }
        None => status_with(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
            json!({}),
            json!({"name": name, "kind": "pods"}),
        ),
    }
}

/// One pod's PodMetrics from the latest scrape, as `kubectl top pod NAME` reads it.
fn get_pod_metrics(state: &State, ns: &str, name: &str) -> HttpResponse {
    let ts = scrape_at(state.clock.now());
    let current = state.pods();
    let snap = snapshot(&current, Kind::Metrics, ts);
    let pods = current.workload.pods();
    let key = (ns, name);
    let at = snap
        .items
        .partition_point(|(i, _)| pods.get(*i).is_some_and(|p| (p.namespace.as_str(), p.name.as_str()) < key));
    match snap.items.get(at).filter(|(i, _)| pods.get(*i).is_some_and(|p| p.namespace == ns && p.name == name)) {
        Some((_, item)) => {
            let mut body = Vec::with_capacity(item.len() + 64);
            body.extend_from_slice(br#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1","#);
            body.extend_from_slice(item.get(1..).unwrap_or_default());
            HttpResponse::Ok().insert_header((CONTENT_TYPE, "application/json")).body(body)
        }
        None => status_with(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("podmetrics.metrics.k8s.io \"{name}\" not found"),
            json!({}),
            json!({"name": name, "group": "metrics.k8s.io", "kind": "pods"}),
        ),
    }
}

fn node_metrics(state: &State) -> Value {
    let ts = scrape_at(state.clock.now());
    let mut nodes: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let current = state.pods();
    for pod in current.workload.pods().iter().filter(|p| has_metrics(p, ts)) {
        let e = nodes.entry(&pod.node).or_default();
        for c in &pod.containers {
            let (cpu, mem) = c.profile.at(ts - 1);
            e.0 += cpu;
            e.1 += mem;
        }
    }
    let stamp = timestamp(ts);
    let items: Vec<Value> = nodes
        .iter()
        .map(|(name, (cpu, mem))| {
            let mut c = String::new();
            write_cpu(&mut c, *cpu);
            json!({
                "metadata": {"name": name, "creationTimestamp": stamp, "labels": {"kubernetes.io/hostname": name}},
                "timestamp": stamp, "window": "15s",
                "usage": {"cpu": c, "memory": format!("{}Ki", mem / 1024)},
            })
        })
        .collect();
    json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items})
}
