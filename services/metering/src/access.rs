//! What metering asks provisioning for over its internal API: a cluster's kubeconfig (held
//! only in memory here), its Hopsworks projects and their storage (decision 0056). Requests
//! are signed as the metering service with its own key, `auth.service_key` (decisions 0026, 0053).

use crate::attribution::Project;
use crate::config::ProvisioningApiConfig;
use hopsbridge_contracts::Service;
use hopsbridge_domain::{ClusterId, ProjectId};
use hopsbridge_platform::Secret;
use hopsbridge_platform::caller::{Caller, CallerSigner};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why provisioning could not answer.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// provisioning does not know the cluster.
    #[error("provisioning does not know cluster {0}")]
    UnknownCluster(ClusterId),
    /// Any other answer or failure; the message carries no secret.
    #[error("{what}: {message}")]
    Failed {
        /// The request.
        what: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl AccessError {
    /// A stable snake_case code for the failure.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownCluster(_) => "cluster_unknown",
            Self::Failed { what: "kubeconfig", .. } => "kubeconfig_unavailable",
            Self::Failed { what: "storage", .. } => "storage_unavailable",
            Self::Failed { .. } => "projects_unavailable",
        }
    }
}

/// A client of provisioning's internal API.
#[derive(Clone, Debug)]
pub struct Provisioning {
    http: reqwest::Client,
    base: String,
    key: CallerSigner,
}

#[derive(Deserialize)]
struct KubeconfigAnswer {
    kubeconfig: String,
}

#[derive(Deserialize)]
struct ProjectsAnswer {
    projects: Vec<ProjectItem>,
}

#[derive(Deserialize)]
struct StorageAnswer {
    projects: Vec<StorageItem>,
}

#[derive(Deserialize)]
struct StorageItem {
    id: ProjectId,
    name: String,
    namespace: String,
    creator_username: Option<String>,
    offline_bytes: Option<u64>,
    unreported: Option<String>,
    #[serde(default)]
    online_bytes: Option<u64>,
    #[serde(default)]
    online_unreported: Option<String>,
}

/// `online_unreported` of a cluster without a RonDB endpoint (decision 0071).
pub const ONLINE_NOT_CONFIGURED: &str = "online_not_configured";

/// One project's storage as provisioning read it from Hopsworks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectStorage {
    /// Hopsworks project id.
    pub id: ProjectId,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its creator's Hopsworks username, when Hopsworks names one.
    pub creator_username: Option<String>,
    /// Bytes held offline, or why Hopsworks did not report them.
    pub offline: Result<u64, String>,
    /// Bytes held online (RonDB), or why not measured ([`ONLINE_NOT_CONFIGURED`] when the
    /// cluster has no RonDB endpoint).
    pub online: Result<u64, String>,
}

#[derive(Deserialize)]
struct ProjectItem {
    id: ProjectId,
    name: String,
    namespace: String,
    creator_username: String,
}

impl Provisioning {
    /// A client of the API at `cfg.url`, signing with `key`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: &ProvisioningApiConfig, key: CallerSigner) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_millis(cfg.timeout_ms)).build()?;
        Ok(Self { http, base: cfg.url.trim_end_matches('/').to_owned(), key })
    }

    /// GETs `/internal/clusters/{cluster}/{what}` signed as the metering service and reads
    /// the answer.
    async fn get<T: DeserializeOwned>(&self, what: &'static str, cluster: ClusterId) -> Result<T, AccessError> {
        let path = format!("/internal/clusters/{cluster}/{what}");
        let caller = Caller::service(Service::Metering);
        let headers = self.key.sign("GET", &path, &caller, chrono::Utc::now().timestamp());
        let mut request = self.http.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let failed = |message: String| AccessError::Failed { what, message };
        let response = request.send().await.map_err(|e| failed(format!("provisioning unreachable: {e}")))?;
        let status = response.status().as_u16();
        if status == 200 {
            return response.json().await.map_err(|e| failed(format!("unreadable answer: {}", e.without_url())));
        }
        let body = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
            .unwrap_or_default();
        if status == 404 && code == "cluster_not_found" {
            return Err(AccessError::UnknownCluster(cluster));
        }
        Err(failed(format!("provisioning answered {status} {code}")))
    }

    /// The cluster's kubeconfig.
    ///
    /// # Errors
    /// When provisioning does not know the cluster or does not answer.
    pub async fn kubeconfig(&self, cluster: ClusterId) -> Result<Secret<String>, AccessError> {
        let body: KubeconfigAnswer = self.get("kubeconfig", cluster).await?;
        Ok(Secret::new(body.kubeconfig))
    }

    /// Each of the cluster's Hopsworks projects with the storage Hopsworks reports for it now.
    ///
    /// # Errors
    /// When provisioning does not know the cluster, or it or Hopsworks does not answer.
    pub async fn storage(&self, cluster: ClusterId) -> Result<Vec<ProjectStorage>, AccessError> {
        let body: StorageAnswer = self.get("storage", cluster).await?;
        Ok(body
            .projects
            .into_iter()
            .map(|p| ProjectStorage {
                id: p.id,
                name: p.name,
                namespace: p.namespace,
                creator_username: p.creator_username,
                offline: p.offline_bytes.ok_or_else(|| p.unreported.unwrap_or_else(|| "not reported".to_owned())),
                online: p
                    .online_bytes
                    .ok_or_else(|| p.online_unreported.unwrap_or_else(|| ONLINE_NOT_CONFIGURED.to_owned())),
            })
            .collect())
    }

    /// The cluster's Hopsworks projects, by namespace.
    ///
    /// # Errors
    /// When provisioning does not know the cluster, or it or Hopsworks does not answer.
    pub async fn projects(&self, cluster: ClusterId) -> Result<Vec<(String, Project)>, AccessError> {
        let body: ProjectsAnswer = self.get("projects", cluster).await?;
        Ok(body
            .projects
            .into_iter()
            .map(|p| (p.namespace, Project { id: p.id, name: p.name, creator_username: p.creator_username }))
            .collect())
    }
}
