//! What a cluster's kubeconfig must allow before the cluster is accepted, asked of its API
//! server: that it answers (`GET /version`) over TLS rustls accepts, that the kubeconfig's
//! user holds every permission metering uses (one `SelfSubjectAccessReview` each,
//! [`PERMISSIONS`]), and that metrics-server's API is served (`GET /apis/metrics.k8s.io/v1beta1`).
//!
//! Each check ends in a [`Check`]: a stable name, whether it passed, and a detail that says
//! what to fix. TLS failures are explained ([`explain_tls`]): a server certificate that is
//! itself a CA certificate passes kubectl but not rustls, and the remedy differs from an
//! unknown issuer or a wrong name. No detail quotes the kubeconfig.

use hopsbridge_platform::Secret;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One check of a cluster: its name, whether it passed, and what was found or what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Check {
    /// Stable name: `kubernetes_api`, `kubernetes_can_list_pods`,
    /// `kubernetes_can_list_pod_metrics`, `kubernetes_can_watch_pods`, `metrics_api`,
    /// `hopsworks_admin_api`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found; for a failure, what to fix.
    pub detail: String,
}

impl Check {
    fn pass(name: &str, detail: impl Into<String>) -> Self {
        Self { name: name.to_owned(), ok: true, detail: detail.into() }
    }

    fn fail(name: &str, detail: impl Into<String>) -> Self {
        Self { name: name.to_owned(), ok: false, detail: detail.into() }
    }
}

/// A permission metering needs on every cluster, as a review asks it.
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    /// The check's name.
    pub check: &'static str,
    /// The verb.
    pub verb: &'static str,
    /// The API group (`""`: core).
    pub group: &'static str,
    /// The resource.
    pub resource: &'static str,
    /// Why metering needs it.
    pub why: &'static str,
}

/// Every permission metering uses (its two lists each window and its watch of pods, across all
/// namespaces), and nothing more: deploy/k8s/cluster-access/10-metering.yaml grants exactly
/// these. provisioning itself never calls Kubernetes.
pub const PERMISSIONS: [Permission; 3] = [
    Permission {
        check: "kubernetes_can_list_pods",
        verb: "list",
        group: "",
        resource: "pods",
        why: "metering lists every pod (GET /api/v1/pods) each window",
    },
    Permission {
        check: "kubernetes_can_list_pod_metrics",
        verb: "list",
        group: "metrics.k8s.io",
        resource: "pods",
        why: "metering lists PodMetrics (GET /apis/metrics.k8s.io/v1beta1/pods) each window",
    },
    Permission {
        check: "kubernetes_can_watch_pods",
        verb: "watch",
        group: "",
        resource: "pods",
        why: "metering watches pods (GET /api/v1/pods?watch=1) for their lifetimes (decision 0070)",
    },
];

/// The names of the Kubernetes checks, in the order they are reported.
pub const NAMES: [&str; 5] =
    ["kubernetes_api", PERMISSIONS[0].check, PERMISSIONS[1].check, PERMISSIONS[2].check, METRICS_API];

/// The check that metrics-server's API is served.
const METRICS_API: &str = "metrics_api";

/// What a failed TLS handshake means and what to do, when `text` (an error chain) is one:
/// `trusted` names where the trusted CA comes from.
#[must_use]
pub fn explain_tls(text: &str, trusted: &str) -> Option<String> {
    let explained = if text.contains("CaUsedAsEndEntity") {
        format!(
            "TLS: the server certificate is a CA certificate (CaUsedAsEndEntity); kubectl accepts it, rustls does \
             not: issue a server certificate signed by that CA, with the server's address in its subjectAltName, \
             keep the CA in {trusted}"
        )
    } else if text.contains("UnknownIssuer") {
        format!(
            "TLS: the server certificate is not issued by a CA of {trusted} (UnknownIssuer): put the CA that issued \
             the server's certificate there"
        )
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        "TLS: the server certificate does not name the address the cluster is registered with (NotValidForName): \
         register an address the certificate lists, or re-issue it with this address in its subjectAltName"
            .to_owned()
    } else if text.contains("certificate expired") || text.contains("Expired") || text.contains("not valid yet") {
        "TLS: the server certificate has expired or is not valid yet: renew it (or check the server's clock)".to_owned()
    } else if text.contains("extended key usage") || text.contains("InvalidPurpose") {
        "TLS: the server certificate is not for server authentication (extended key usage): re-issue it with \
         serverAuth"
            .to_owned()
    } else if text.contains("invalid peer certificate") || (text.contains("certificate") && text.contains("TLS")) {
        format!("TLS: the server certificate is refused: {text}")
    } else if text.contains("tls handshake") || text.contains("received fatal alert") {
        format!("TLS: the handshake failed: {text}")
    } else {
        return None;
    };
    Some(explained)
}

/// An error with its sources, each once.
#[must_use]
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

/// What a failed request means for the operator.
fn explain(err: &kube::Error, what: &str, server: &str) -> String {
    if let kube::Error::Api(status) = err {
        return match status.code {
            401 => format!(
                "{what}: the API server refused the kubeconfig's credentials (401 Unauthorized): the token or client \
                 certificate is wrong, expired or revoked; make a new kubeconfig (deploy/k8s/cluster-access/kubeconfig.sh)"
            ),
            403 => format!(
                "{what}: the API server answered 403 Forbidden ({}): grant the kubeconfig's user the ClusterRole of \
                 deploy/k8s/cluster-access/10-metering.yaml",
                status.message
            ),
            code => format!("{what}: the API server answered {code} {}: {}", status.reason, status.message),
        };
    }
    let text = chain(err);
    if let Some(tls) = explain_tls(&text, "the kubeconfig's certificate-authority-data") {
        return format!("{what}: {tls}");
    }
    format!(
        "{what}: the API server at {server} cannot be reached ({text}): check the kubeconfig's server address and that \
         provisioning's and metering's network reaches it"
    )
}

/// Runs `fut`, at most `timeout`.
async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Result<kube::Error, Duration>> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Ok(e)),
        Err(_) => Err(Err(timeout)),
    }
}

fn failed(outcome: Result<kube::Error, Duration>, what: &str, server: &str) -> String {
    match outcome {
        Ok(e) => explain(&e, what, server),
        Err(t) => format!(
            "{what}: the API server at {server} did not answer within {} ms: check the address and the network",
            t.as_millis()
        ),
    }
}

/// A client from the kubeconfig's current context, or why there is none.
async fn client(kubeconfig: &Secret<String>, timeout: Duration) -> Result<(kube::Client, String), String> {
    // The YAML parser's messages can quote the document, which holds credentials.
    let kc = Kubeconfig::from_yaml(kubeconfig.expose())
        .map_err(|_| "the kubeconfig is not a valid kubeconfig YAML document".to_owned())?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("the kubeconfig cannot be used: {e}"))?;
    if cfg.accept_invalid_certs {
        return Err("the kubeconfig must not skip TLS verification".to_owned());
    }
    cfg.connect_timeout = Some(timeout);
    cfg.read_timeout = Some(timeout);
    cfg.default_retry = false;
    let server = cfg.cluster_url.to_string().trim_end_matches('/').to_owned();
    let client = kube::Client::try_from(cfg).map_err(|e| format!("the kubeconfig cannot be used: {e}"))?;
    Ok((client, server))
}

/// Every Kubernetes check of a kubeconfig, in [`NAMES`]' order. When the API server cannot be
/// talked to at all, the checks after the first say so instead of repeating its failure.
pub async fn check(kubeconfig: &Secret<String>, timeout: Duration) -> Vec<Check> {
    let skipped = |why: &str| -> Vec<Check> {
        NAMES[1..].iter().map(|n| Check::fail(n, format!("not checked: {why}"))).collect()
    };
    let (client, server) = match client(kubeconfig, timeout).await {
        Ok(c) => c,
        Err(why) => {
            let mut out = vec![Check::fail(NAMES[0], why)];
            out.extend(skipped("the kubeconfig cannot be used"));
            return out;
        }
    };
    let mut out = Vec::with_capacity(NAMES.len());
    match within(timeout, client.apiserver_version()).await {
        Ok(info) => out.push(Check::pass(NAMES[0], format!("Kubernetes {} at {server}", info.git_version))),
        Err(e) => {
            out.push(Check::fail(NAMES[0], failed(e, "GET /version", &server)));
            out.extend(skipped("the API server did not answer GET /version"));
            return out;
        }
    }
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    for p in PERMISSIONS {
        let shown = if p.group.is_empty() { p.resource.to_owned() } else { format!("{}.{}", p.resource, p.group) };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(p.verb.to_owned()),
                    group: Some(p.group.to_owned()),
                    resource: Some(p.resource.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let what = format!("SelfSubjectAccessReview of {} {shown}", p.verb);
        let check = match within(timeout, reviews.create(&PostParams::default(), &review)).await {
            Ok(answered) => match answered.status {
                Some(s) if s.allowed => Check::pass(p.check, format!("may {} {shown} in all namespaces", p.verb)),
                Some(s) => Check::fail(
                    p.check,
                    format!(
                        "the kubeconfig's user may not {} {shown} in all namespaces{}; {}: grant it with the \
                         ClusterRole of deploy/k8s/cluster-access/10-metering.yaml",
                        p.verb,
                        s.reason.filter(|r| !r.is_empty()).map(|r| format!(" ({r})")).unwrap_or_default(),
                        p.why
                    ),
                ),
                None => Check::fail(p.check, format!("{what}: the API server answered no status")),
            },
            Err(e) => Check::fail(p.check, failed(e, &what, &server)),
        };
        out.push(check);
    }
    let metrics = match within(timeout, client.list_api_group_resources("metrics.k8s.io/v1beta1")).await {
        Ok(list) if list.resources.iter().any(|r| r.name == "pods") => {
            Check::pass(METRICS_API, "metrics.k8s.io/v1beta1 serves PodMetrics")
        }
        Ok(_) => Check::fail(
            METRICS_API,
            "metrics.k8s.io/v1beta1 does not serve pods: install metrics-server (`kubectl top pods -A` must answer)",
        ),
        Err(Ok(kube::Error::Api(s))) if s.code == 404 => Check::fail(
            METRICS_API,
            "metrics.k8s.io/v1beta1 is not served (404): install metrics-server (`kubectl top pods -A` must answer)",
        ),
        Err(Ok(kube::Error::Api(s))) if s.code == 503 => Check::fail(
            METRICS_API,
            format!(
                "metrics.k8s.io/v1beta1 is registered but metrics-server does not answer (503 {}): check its pods \
                 (`kubectl -n kube-system get pods -l k8s-app=metrics-server`)",
                s.message
            ),
        ),
        Err(e) => Check::fail(METRICS_API, failed(e, "GET /apis/metrics.k8s.io/v1beta1", &server)),
    };
    out.push(metrics);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_explained_with_their_remedy() {
        let ca = "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))";
        let text = explain_tls(ca, "X").unwrap();
        assert!(text.contains("kubectl accepts it, rustls does not") && text.contains("signed by that CA"), "{text}");
        assert!(explain_tls("invalid peer certificate: UnknownIssuer", "ca_bundle").unwrap().contains("ca_bundle"));
        assert!(explain_tls("certificate not valid for name \"x\"", "X").unwrap().contains("subjectAltName"));
        assert!(explain_tls("connection refused", "X").is_none());
    }
}
