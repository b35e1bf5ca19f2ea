//! What a collection reads from each page, and how a page is folded into it: Running pods
//! with their owner label (empty when they have none) and GPUs, and PodMetrics with their CPU and memory rates. Items
//! borrow their strings from the page's bytes where JSON allows (no escapes), so a page costs
//! few allocations.

use super::CollectError;
use super::pages::{List, decode};
use crate::quantity;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;

type Text<'a> = Cow<'a, str>;
type Map<'a> = HashMap<Text<'a>, Text<'a>>;

#[derive(Deserialize)]
struct ObjectMeta<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    namespace: Text<'a>,
    #[serde(default, borrow)]
    labels: Option<Map<'a>>,
}

#[derive(Deserialize)]
struct PodItem<'a> {
    #[serde(borrow)]
    metadata: ObjectMeta<'a>,
    #[serde(default, borrow)]
    spec: Option<PodSpec<'a>>,
    #[serde(default, borrow)]
    status: Option<PodStatus<'a>>,
}

/// A pod's spec: its containers' resources.
#[derive(Deserialize)]
pub(super) struct PodSpec<'a> {
    #[serde(default, borrow)]
    containers: Vec<Container<'a>>,
}

#[derive(Deserialize)]
struct Container<'a> {
    #[serde(default, borrow)]
    resources: Option<Resources<'a>>,
}

#[derive(Deserialize)]
struct Resources<'a> {
    #[serde(default, borrow)]
    requests: Option<Requested<'a>>,
    #[serde(default, borrow)]
    limits: Option<Requested<'a>>,
}

/// The resources of requests or limits metering reads; the others are skipped unread.
#[derive(Deserialize)]
struct Requested<'a> {
    #[serde(default, borrow, rename = "nvidia.com/gpu")]
    gpu: Option<Text<'a>>,
    #[serde(default, borrow)]
    cpu: Option<Text<'a>>,
    #[serde(default, borrow)]
    memory: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct PodStatus<'a> {
    #[serde(default, borrow)]
    phase: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct MetricsItem<'a> {
    #[serde(borrow)]
    metadata: ObjectMeta<'a>,
    #[serde(default, borrow)]
    containers: Vec<ContainerUsage<'a>>,
}

#[derive(Deserialize)]
struct ContainerUsage<'a> {
    #[serde(default, borrow)]
    usage: UsageQuantities<'a>,
}

#[derive(Default, Deserialize)]
struct UsageQuantities<'a> {
    #[serde(default, borrow)]
    cpu: Option<Text<'a>>,
    #[serde(default, borrow)]
    memory: Option<Text<'a>>,
}

/// The pod list folded: Running pods with their owner (empty for pods without the label),
/// and counts.
#[derive(Debug, Default)]
pub(super) struct PodFold {
    pub(super) running: HashMap<(String, String), RunningPod>,
    pub(super) listed: u64,
    pub(super) running_count: u64,
    pub(super) without_owner: u64,
    pub(super) duplicates: u64,
}

/// One PodMetrics item reduced to its sums.
pub(super) struct Measured {
    pub(super) key: (String, String),
    pub(super) cpu: u128,
    pub(super) memory: u128,
}

/// A running pod's owner (empty: no owner label), GPUs and CPU and memory requests.
#[derive(Debug)]
pub(super) struct RunningPod {
    pub(super) owner: String,
    pub(super) gpus: u64,
    /// Requests summed over containers: nanocores and bytes.
    pub(super) requests: (u128, u128),
    pub(super) measured: bool,
}

/// Folds one page of the pod list: Running pods with their `label_key` label (empty when it is
/// missing or empty, counted in `without_owner`) and their GPUs; returns the continue token.
pub(super) fn fold_pods(
    acc: &mut PodFold,
    label_key: &str,
    what: &str,
    body: &[u8],
) -> Result<Option<String>, CollectError> {
    let page: List<PodItem<'_>> = decode(what, body)?;
    for pod in page.items {
        acc.listed += 1;
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
            continue;
        }
        acc.running_count += 1;
        let owner =
            pod.metadata.labels.as_ref().and_then(|l| l.get(label_key)).map_or_else(String::new, |o| o.to_string());
        if owner.is_empty() {
            acc.without_owner += 1;
        }
        let (ns, name) = (&pod.metadata.namespace, &pod.metadata.name);
        let gpus = gpus_of(pod.spec.as_ref(), ns, name)?;
        let requests = requests_of(pod.spec.as_ref(), ns, name)?;
        let key = (pod.metadata.namespace.into_owned(), pod.metadata.name.into_owned());
        if acc.running.insert(key, RunningPod { owner, gpus, requests, measured: false }).is_some() {
            acc.duplicates += 1;
        }
    }
    Ok(page.metadata.continue_)
}

/// Folds one page of the PodMetrics list into (pod, CPU nanocores, bytes); returns the
/// continue token.
pub(super) fn fold_metrics(acc: &mut Vec<Measured>, what: &str, body: &[u8]) -> Result<Option<String>, CollectError> {
    let page: List<MetricsItem<'_>> = decode(what, body)?;
    for m in page.items {
        let (mut cpu, mut memory) = (0_u128, 0_u128);
        for c in &m.containers {
            let q = |resource: &str| {
                let text = if resource == "cpu" { &c.usage.cpu } else { &c.usage.memory };
                let text = text.as_deref().unwrap_or("");
                let parsed =
                    if resource == "cpu" { quantity::cpu_nanocores(text) } else { quantity::memory_bytes(text) };
                parsed.map_err(|source| CollectError::Quantity {
                    namespace: m.metadata.namespace.clone().into_owned(),
                    name: m.metadata.name.clone().into_owned(),
                    source,
                })
            };
            cpu = cpu.saturating_add(q("cpu")?);
            memory = memory.saturating_add(q("memory")?);
        }
        let key = (m.metadata.namespace.into_owned(), m.metadata.name.into_owned());
        acc.push(Measured { key, cpu, memory });
    }
    Ok(page.metadata.continue_)
}

/// GPUs a pod holds: per container, its `nvidia.com/gpu` request, or its limit when no request
/// is given (Kubernetes then sets the request to the limit).
pub(super) fn gpus_of(spec: Option<&PodSpec<'_>>, namespace: &str, name: &str) -> Result<u64, CollectError> {
    let mut total = 0_u64;
    for c in spec.iter().flat_map(|s| &s.containers) {
        let Some(r) = &c.resources else { continue };
        let text =
            r.requests.as_ref().and_then(|m| m.gpu.as_ref()).or_else(|| r.limits.as_ref().and_then(|m| m.gpu.as_ref()));
        if let Some(text) = text {
            let n = quantity::count(text).map_err(|source| CollectError::Quantity {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })?;
            total = total.saturating_add(n);
        }
    }
    Ok(total)
}

/// CPU (nanocores) and memory (bytes) a pod requests: per container, its request, or its limit
/// when no request is given (Kubernetes then sets the request to the limit); init containers
/// are not counted.
pub(super) fn requests_of(
    spec: Option<&PodSpec<'_>>,
    namespace: &str,
    name: &str,
) -> Result<(u128, u128), CollectError> {
    let (mut cpu, mut memory) = (0_u128, 0_u128);
    for c in spec.iter().flat_map(|s| &s.containers) {
        let Some(r) = &c.resources else { continue };
        let bad = |source| CollectError::Quantity { namespace: namespace.to_owned(), name: name.to_owned(), source };
        let (requests, limits) = (r.requests.as_ref(), r.limits.as_ref());
        let cpu_text = requests.and_then(|q| q.cpu.as_ref()).or_else(|| limits.and_then(|q| q.cpu.as_ref()));
        let memory_text = requests.and_then(|q| q.memory.as_ref()).or_else(|| limits.and_then(|q| q.memory.as_ref()));
        if let Some(text) = cpu_text {
            cpu = cpu.saturating_add(quantity::cpu_nanocores(text).map_err(bad)?);
        }
        if let Some(text) = memory_text {
            memory = memory.saturating_add(quantity::memory_bytes(text).map_err(bad)?);
        }
    }
    Ok((cpu, memory))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn pods_page(items: &str) -> Result<(PodFold, Option<String>), CollectError> {
        let mut acc = PodFold::default();
        let body = format!(r#"{{"kind":"PodList","items":[{items}],"metadata":{{"continue":"next"}}}}"#);
        let token = fold_pods(&mut acc, "owner", "GET /api/v1/pods", body.as_bytes())?;
        Ok((acc, token))
    }

    fn pod_json(name: &str, owner: &str, phase: &str, resources: &str) -> String {
        format!(
            r#"{{"metadata":{{"name":"{name}","namespace":"ns","labels":{{"owner":"{owner}"}}}},
                "spec":{{"containers":[{{"name":"main","resources":{resources}}}]}},"status":{{"phase":"{phase}"}}}}"#
        )
    }

    #[test]
    fn a_pods_page_keeps_running_pods_with_their_owner_and_gpus() {
        let items = [
            pod_json("a", "alice", "Running", r#"{"requests":{"nvidia.com/gpu":"2"},"limits":{"nvidia.com/gpu":"2"}}"#),
            pod_json("b", "bob", "Running", r#"{"limits":{"nvidia.com/gpu":"1"}}"#),
            pod_json("c", "carol", "Pending", "{}"),
            pod_json("d", "", "Running", "{}"),
            pod_json("e\\u0065", "\\u0065ve", "Running", "{}"),
            r#"{"metadata":{"name":"f","namespace":"ns"},"status":{"phase":"Running"}}"#.to_owned(),
        ]
        .join(",");
        let (acc, token) = pods_page(&items).unwrap();
        assert_eq!(token.as_deref(), Some("next"));
        assert_eq!((acc.listed, acc.running_count, acc.without_owner), (6, 5, 2));
        let get = |n: &str| acc.running.get(&("ns".to_owned(), n.to_owned())).map(|p| (p.owner.as_str(), p.gpus));
        assert_eq!(get("a"), Some(("alice", 2)));
        assert_eq!(get("b"), Some(("bob", 1)), "a limit alone is the request");
        assert_eq!(get("c"), None);
        assert_eq!(get("d"), Some(("", 0)), "an empty owner label is no owner");
        assert_eq!(get("ee"), Some(("eve", 0)), "escaped strings are decoded");
        assert_eq!(get("f"), Some(("", 0)), "a pod without labels is kept, without an owner");
    }

    #[test]
    fn a_bad_gpu_count_or_a_bad_page_is_an_error_naming_it() {
        let bad = pod_json("a", "alice", "Running", r#"{"requests":{"nvidia.com/gpu":"half"}}"#);
        let err = pods_page(&bad).unwrap_err();
        assert_eq!(err.reason(), "malformed_quantity");
        assert_eq!(err.to_string(), "pod ns/a: invalid quantity \"half\": not a Kubernetes quantity");
        let err = fold_pods(&mut PodFold::default(), "owner", "GET /api/v1/pods", b"<html>").unwrap_err();
        assert_eq!(err.reason(), "malformed_answer");
        assert!(err.to_string().starts_with("GET /api/v1/pods: unreadable answer"), "{err}");
    }

    #[test]
    fn a_metrics_page_sums_containers_and_refuses_a_bad_quantity() {
        let body = br#"{"kind":"PodMetricsList","items":[
            {"metadata":{"name":"a","namespace":"ns"},"timestamp":"2027-01-01T06:00:00Z","window":"15s",
             "containers":[{"name":"x","usage":{"cpu":"250m","memory":"1Gi"}},{"name":"y","usage":{"cpu":"1500000n","memory":"129e6"}}]}
        ],"metadata":{}}"#;
        let mut acc = Vec::new();
        assert_eq!(fold_metrics(&mut acc, "GET m", body).unwrap(), None);
        assert_eq!(acc.len(), 1);
        assert_eq!((acc[0].cpu, acc[0].memory), (251_500_000, (1 << 30) + 129_000_000));
        for usage in [r#"{"cpu":"1.5.0","memory":"1Gi"}"#, r#"{"cpu":"1","memory":"-5Mi"}"#, r#"{"memory":"1Gi"}"#] {
            let body = format!(
                r#"{{"items":[{{"metadata":{{"name":"a","namespace":"ns"}},"containers":[{{"name":"x","usage":{usage}}}]}}]}}"#
            );
            let err = fold_metrics(&mut Vec::new(), "GET m", body.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), "malformed_quantity", "{usage}");
            assert!(err.to_string().starts_with("pod ns/a: invalid quantity"), "{err}");
        }
    }
}
