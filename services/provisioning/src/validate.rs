//! Checks of what an admin registers: each failure has its code of the catalogue and a message
//! that never repeats a secret.

use crate::clusters::{ClusterChange, forbidden_address};
use crate::error::{ProvisioningCode, ProvisioningError};
use hopsbridge_domain::ClusterStatus;
use kube::config::Kubeconfig;
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::IpAddr;
use std::time::Duration;

/// A rejected field: its code and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The code answered.
    pub code: ProvisioningCode,
    /// What is wrong.
    pub message: String,
}

impl From<Invalid> for ProvisioningError {
    fn from(e: Invalid) -> Self {
        Self::refused(e.code, e.message)
    }
}

/// A rejected field.
pub fn invalid(code: ProvisioningCode, message: impl Into<String>) -> Invalid {
    Invalid { code, message: message.into() }
}

/// A name: 1-100 characters, no control characters, trimmed.
///
/// # Errors
/// `invalid_name`.
pub fn name(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(invalid(ProvisioningCode::InvalidName, "name must be 1-100 characters without control characters"));
    }
    Ok(name.to_owned())
}

/// A region: 1-64 characters of letters, digits, `-`, `_` and `.`.
///
/// # Errors
/// `invalid_region`.
pub fn region(raw: &str) -> Result<String, Invalid> {
    let region = raw.trim();
    let ok = (1..=64).contains(&region.len())
        && region.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(invalid(
            ProvisioningCode::InvalidRegion,
            "region must be 1-64 of letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(region.to_owned())
}

/// The Hopsworks base URL: `https://host[:port]` with an optional path, no query, fragment or
/// credentials. Returned without a trailing slash.
///
/// # Errors
/// `invalid_api_url`.
pub fn api_url(raw: &str) -> Result<String, Invalid> {
    let bad = |m: &str| invalid(ProvisioningCode::InvalidApiUrl, m.to_owned());
    let url = Url::parse(raw.trim()).map_err(|_| bad("api_url is not a URL"))?;
    if url.scheme() != "https" {
        return Err(bad("api_url must use https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("api_url must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("api_url must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("api_url must not have a query or fragment"));
    }
    // The address users open; the admin API's path is added by the client, so a URL given with
    // it is taken without it.
    let text = url.as_str().trim_end_matches('/');
    Ok(text.strip_suffix(crate::hopsworks::BASE_PATH).unwrap_or(text).to_owned())
}

/// A non-empty secret or identifier of at most `max` bytes.
///
/// # Errors
/// `code`.
pub fn required_text(raw: &str, field: &str, code: ProvisioningCode, max: usize) -> Result<String, Invalid> {
    let v = raw.trim();
    if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(invalid(code, format!("{field} must be 1-{max} characters without control characters")));
    }
    Ok(v.to_owned())
}

/// A PEM bundle of one or more X.509 certificates, each a usable trust anchor.
///
/// # Errors
/// `invalid_ca_bundle`.
pub fn ca_bundle(raw: &str) -> Result<String, Invalid> {
    let bad = |m: &str| invalid(ProvisioningCode::InvalidCaBundle, m.to_owned());
    if !raw.contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad("ca_bundle must hold PEM certificates (-----BEGIN CERTIFICATE-----)"));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(raw.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("ca_bundle is not valid PEM"))?;
    if certs.is_empty() || certs.len() != raw.matches("-----BEGIN CERTIFICATE-----").count() {
        return Err(bad("ca_bundle is not valid PEM"));
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|_| bad("ca_bundle holds a certificate that cannot be parsed"))?;
    }
    Ok(raw.trim().to_owned() + "\n")
}

/// A kubeconfig (YAML) whose current context (or only context) names a cluster with an
/// https server and a user with credentials (a token or a client certificate and key).
/// Answers the server's URL.
///
/// # Errors
/// `invalid_kubeconfig`, with a message that never quotes the file.
pub fn kubeconfig(raw: &str) -> Result<Url, Invalid> {
    let bad = |m: &str| invalid(ProvisioningCode::InvalidKubeconfig, m.to_owned());
    if raw.trim().is_empty() {
        return Err(bad("kubeconfig is empty"));
    }
    let config = Kubeconfig::from_yaml(raw).map_err(|_| bad("kubeconfig is not a valid kubeconfig YAML document"))?;
    let context_name = match (&config.current_context, config.contexts.as_slice()) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, [only]) => only.name.clone(),
        _ => return Err(bad("kubeconfig must set current-context or hold exactly one context")),
    };
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| bad("kubeconfig's current context is not defined"))?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| bad("kubeconfig's context names a cluster that is not defined"))?;
    let server = Url::parse(cluster.server.as_deref().unwrap_or_default())
        .ok()
        .filter(|u| u.scheme() == "https" && u.host_str().is_some())
        .ok_or_else(|| bad("kubeconfig's cluster must have an https server"))?;
    if cluster.insecure_skip_tls_verify == Some(true) {
        return Err(bad("kubeconfig must not skip TLS verification"));
    }
    let user_name = context.user.as_deref().unwrap_or_default();
    let user = config
        .auth_infos
        .iter()
        .find(|u| u.name == user_name)
        .and_then(|u| u.auth_info.as_ref())
        .ok_or_else(|| bad("kubeconfig's context names a user that is not defined"))?;
    let has_token = user.token.is_some();
    let has_cert = (user.client_certificate_data.is_some() || user.client_certificate.is_some())
        && (user.client_key_data.is_some() || user.client_key.is_some());
    if !has_token && !has_cert {
        return Err(bad("kubeconfig's user must have a token or a client certificate and key"));
    }
    Ok(server)
}

/// How long resolving a cluster's host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that `url`'s host is no address the service must never call ([`forbidden_address`]):
/// an IP address as written, a host name every address it resolves to. A name that does not
/// resolve is refused too, since what it would reach cannot be known.
///
/// # Errors
/// `cluster_address_refused`, naming `field` and the kind of address.
pub async fn callable_host(url: &Url, field: &str) -> Result<(), Invalid> {
    let refuse = |m: String| invalid(ProvisioningCode::ClusterAddressRefused, m);
    let port = url.port_or_known_default().unwrap_or(443);
    // An IPv6 host is written in brackets.
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![ip]
    } else if host.is_empty() {
        Vec::new()
    } else {
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
            Ok(Err(_)) | Err(_) => Vec::new(),
        }
    };
    if addresses.is_empty() {
        return Err(refuse(format!("{field}'s host does not resolve to an address")));
    }
    for ip in addresses {
        if let Some(kind) = forbidden_address(ip) {
            return Err(refuse(format!("{field}'s host is {kind} ({ip}); clusters must be reachable elsewhere")));
        }
    }
    Ok(())
}

/// Checks every address a change would make the services call: the Hopsworks URL and the
/// kubeconfig's API server. Skipped when `allow_private_addresses` is set (development and
/// tests, whose clusters listen on 127.0.0.1).
///
/// # Errors
/// `cluster_address_refused`.
pub async fn callable_addresses(change: &ClusterChange, allow_private_addresses: bool) -> Result<(), Invalid> {
    if allow_private_addresses {
        return Ok(());
    }
    if let Some(api_url) = &change.api_url {
        let url = Url::parse(api_url).map_err(|_| invalid(ProvisioningCode::InvalidApiUrl, "api_url is not a URL"))?;
        callable_host(&url, "api_url").await?;
    }
    if let Some(yaml) = &change.kubeconfig {
        callable_host(&kubeconfig(yaml.expose())?, "kubeconfig's server").await?;
    }
    if let Some(endpoint) = &change.rondb_endpoint {
        let url = Url::parse(&format!("mysql://{endpoint}"))
            .map_err(|_| invalid(ProvisioningCode::InvalidRondb, "rondb_endpoint must be host:port"))?;
        callable_host(&url, "rondb_endpoint").await?;
    }
    Ok(())
}

/// A RonDB MySQL endpoint: `host:port` (`[v6]:port`), at most 300 characters.
///
/// # Errors
/// `invalid_rondb`.
pub fn rondb_endpoint(raw: &str) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    if trimmed.len() > 300 || crate::rondb::split_endpoint(trimmed).is_none() {
        return Err(invalid(ProvisioningCode::InvalidRondb, "rondb_endpoint must be host:port"));
    }
    Ok(trimmed.to_owned())
}

/// A capacity: an integer from 0 to 1,000,000.
///
/// # Errors
/// `invalid_capacity`.
pub fn capacity(value: &serde_json::Value) -> Result<i32, Invalid> {
    value
        .as_i64()
        .filter(|n| (0..=1_000_000).contains(n))
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| invalid(ProvisioningCode::InvalidCapacity, "capacity must be an integer from 0 to 1000000"))
}

/// A cluster status.
///
/// # Errors
/// `invalid_status`.
pub fn status(raw: &str) -> Result<ClusterStatus, Invalid> {
    raw.parse().map_err(|_| invalid(ProvisioningCode::InvalidStatus, one_of(ClusterStatus::ALL)))
}

/// "status must be one of a, b, c".
pub fn one_of<S: std::fmt::Display>(statuses: &[S]) -> String {
    let names: Vec<String> = statuses.iter().map(ToString::to_string).collect();
    format!("status must be one of {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hopsbridge_platform::http::ErrorCode as _;

    const KUBECONFIG: &str = "apiVersion: v1
kind: Config
current-context: main
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: AAAA
contexts:
- name: main
  context:
    cluster: c
    user: u
users:
- name: u
  user:
    token: abc
";

    #[test]
    fn a_complete_kubeconfig_passes_and_incomplete_ones_do_not() {
        assert_eq!(kubeconfig(KUBECONFIG).map(String::from), Ok("https://127.0.0.1:6443/".to_owned()));
        for broken in [
            "",
            "not: [valid",
            "just a string",
            &KUBECONFIG.replace("https://127.0.0.1:6443", "http://127.0.0.1:6443"),
            &KUBECONFIG.replace("    token: abc\n", "    username: x\n"),
            &KUBECONFIG.replace("cluster: c\n", "cluster: other\n"),
            &KUBECONFIG.replace("current-context: main", "current-context: nope"),
        ] {
            assert_eq!(kubeconfig(broken).map_err(|e| e.code.code()), Err("invalid_kubeconfig"), "{broken}");
        }
    }

    #[test]
    fn urls_must_be_https_without_extras() {
        assert_eq!(api_url("https://hw.example.com/").unwrap(), "https://hw.example.com");
        assert_eq!(api_url("https://127.0.0.1:8181").unwrap(), "https://127.0.0.1:8181");
        assert_eq!(api_url("https://hw.example.com/hopsworks-api/api/").unwrap(), "https://hw.example.com");
        for bad in ["http://hw.example.com", "hw.example.com", "https://u:p@hw.example.com", "https://hw?x=1", ""] {
            assert!(api_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_link_local_unspecified_and_metadata_addresses_are_forbidden() {
        let kind = |ip: &str| forbidden_address(ip.parse().unwrap());
        for (ip, want) in [
            ("127.0.0.1", "a loopback address"),
            ("127.8.9.10", "a loopback address"),
            ("::1", "a loopback address"),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("169.254.0.1", "a link-local address"),
            ("169.254.255.254", "a link-local address"),
            ("fe80::1", "a link-local address"),
            ("febf::1", "a link-local address"),
            ("0.0.0.0", "an unspecified address"),
            ("0.1.2.3", "an unspecified address"),
            ("::", "an unspecified address"),
            ("169.254.169.254", "a cloud metadata address"),
            ("::ffff:169.254.169.254", "a cloud metadata address"),
            ("fd00:ec2::254", "a cloud metadata address"),
        ] {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "169.253.255.255",
            "fec0::1",
            "fd00:ec2::253",
            "2001:db8::1",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn hosts_are_checked_as_written_and_as_resolved() {
        let check = |u: &str| {
            let url = Url::parse(u).unwrap();
            async move { callable_host(&url, "api_url").await.map_err(|e| (e.code.code(), e.message)) }
        };
        assert_eq!(check("https://10.1.2.3").await, Ok(()));
        assert_eq!(check("https://[2001:db8::1]:8181").await, Ok(()));
        for (u, kind) in [
            ("https://127.0.0.1:8181", "loopback"),
            ("https://[::1]", "loopback"),
            ("https://169.254.169.254/latest", "metadata"),
            ("https://[fe80::1]", "link-local"),
            ("https://0.0.0.0", "unspecified"),
            // A name is judged by what it resolves to.
            ("https://localhost:8181", "loopback"),
        ] {
            let (code, message) = check(u).await.unwrap_err();
            assert_eq!(code, "cluster_address_refused", "{u}");
            assert!(message.contains(kind), "{u}: {message}");
        }
        let (code, message) = check("https://no-such-host.invalid").await.unwrap_err();
        assert_eq!((code, message.contains("does not resolve")), ("cluster_address_refused", true));
    }

    #[tokio::test]
    async fn a_change_is_checked_in_its_hopsworks_url_and_kubeconfig_server_unless_allowed() {
        use hopsbridge_platform::Secret;
        let loopback_kubeconfig =
            ClusterChange { kubeconfig: Some(Secret::new(KUBECONFIG.to_owned())), ..Default::default() };
        let err = callable_addresses(&loopback_kubeconfig, false).await.unwrap_err();
        assert_eq!(err.code.code(), "cluster_address_refused");
        assert!(err.message.starts_with("kubeconfig's server"), "{}", err.message);
        assert!(!err.message.contains("abc"), "the kubeconfig's token is not quoted");
        let metadata_url = ClusterChange { api_url: Some("https://169.254.169.254".into()), ..Default::default() };
        assert!(callable_addresses(&metadata_url, false).await.is_err());
        let public = ClusterChange {
            api_url: Some("https://10.0.0.7".into()),
            kubeconfig: Some(Secret::new(KUBECONFIG.replace("127.0.0.1", "10.0.0.8"))),
            ..Default::default()
        };
        assert_eq!(callable_addresses(&public, false).await, Ok(()));
        assert_eq!(callable_addresses(&loopback_kubeconfig, true).await, Ok(()));
        assert_eq!(callable_addresses(&metadata_url, true).await, Ok(()));
    }

    #[test]
    fn capacities_are_small_non_negative_integers() {
        assert_eq!(capacity(&serde_json::json!(0)), Ok(0));
        assert_eq!(capacity(&serde_json::json!(15)), Ok(15));
        for bad in [serde_json::json!(-1), serde_json::json!(1.5), serde_json::json!("10"), serde_json::json!(null)] {
            assert!(capacity(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_is_not_a_ca_bundle() {
        assert!(ca_bundle("hello").is_err());
        assert!(ca_bundle("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
