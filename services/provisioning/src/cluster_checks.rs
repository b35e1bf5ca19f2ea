//! A cluster checked as the services will use it, before it is accepted and on a schedule:
//! the kubeconfig against its API server ([`crate::kube_checks`]) and the Hopsworks admin API
//! with the API key, trusting the CA bundle only (`GET /admin/users`, one user). A registration
//! or change is accepted only when every check of what it sets passes (decision 0054).
//!
//! Addresses are checked before (`crate::validate::callable_addresses`): nothing here is
//! called on a loopback, link-local or metadata address unless configuration allows it.

use crate::clusters::{ClusterAccess, ClusterChange, ClusterRow, RonDbAccess};
use crate::config::{ClustersConfig, HopsworksConfig};
use crate::crypto::Vault;
use crate::error::{ProvisioningCode, ProvisioningError};
use crate::hopsworks::Hopsworks;
use crate::kube_checks::{self, Check, explain_tls};
use hopsbridge_domain::ClusterId;
use hopsbridge_platform::Secret;
use hopsbridge_platform::http::ErrorCode as _;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The name of the Hopsworks check.
pub const HOPSWORKS: &str = "hopsworks_admin_api";
/// The name of the RonDB check: the online storage query, run with the account.
pub const RONDB: &str = "rondb_ndbinfo";

/// Every check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// Whether every check passed.
    pub ok: bool,
    /// Each check, Kubernetes' first.
    pub checks: Vec<Check>,
}

impl Report {
    fn of(checks: Vec<Check>) -> Self {
        Self { ok: checks.iter().all(|c| c.ok), checks }
    }

    /// The refusal of a registration or change that failed: 422 `cluster_check_failed`,
    /// naming the first failure, with every check in `details.checks`.
    #[must_use]
    pub fn refusal(&self) -> hopsbridge_platform::http::ApiError {
        let failed: Vec<&Check> = self.checks.iter().filter(|c| !c.ok).collect();
        let first = failed.first().map_or_else(String::new, |c| format!(": {}: {}", c.name, c.detail));
        ProvisioningCode::ClusterCheckFailed
            .with_message(format!("the cluster failed {} of its {} checks{first}", failed.len(), self.checks.len()))
            .with_details(serde_json::json!({ "checks": self.checks }))
    }
}

/// What a check reaches: the kubeconfig, the Hopsworks access, or both.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The kubeconfig, when its checks are due.
    pub kubeconfig: Option<Secret<String>>,
    /// The Hopsworks access, when its check is due.
    pub hopsworks: Option<ClusterAccess>,
    /// The RonDB account, when its check is due.
    pub rondb: Option<RonDbAccess>,
}

impl Target {
    /// Everything of a stored cluster.
    ///
    /// # Errors
    /// When a secret does not open.
    pub fn of_row(row: &ClusterRow, vault: &Vault) -> Result<Self, ProvisioningError> {
        let kubeconfig = vault
            .open_text(row.id, crate::clusters::field::KUBECONFIG, &row.kubeconfig())
            .map_err(|e| anyhow::anyhow!("cluster {}: the kubeconfig does not open: {e}", row.id))?;
        let access =
            row.access(vault).map_err(|e| anyhow::anyhow!("cluster {}: the API key does not open: {e}", row.id))?;
        let rondb = row
            .rondb(vault)
            .map_err(|e| anyhow::anyhow!("cluster {}: the RonDB password does not open: {e}", row.id))?;
        Ok(Self { kubeconfig: Some(Secret::new(kubeconfig)), hopsworks: Some(access), rondb })
    }

    /// What `change` makes due, over `current` (`None` for a registration, which sets every
    /// field): the Kubernetes checks when the kubeconfig changes, the Hopsworks check when
    /// the URL, key or CA bundle changes. Nothing when neither does.
    ///
    /// # Errors
    /// When a stored secret does not open.
    pub fn of_change(
        change: &ClusterChange,
        current: Option<&ClusterRow>,
        vault: &Vault,
    ) -> Result<Self, ProvisioningError> {
        let kubeconfig = change.kubeconfig.clone();
        let hopsworks_due = change.api_url.is_some() || change.api_key.is_some() || change.ca_bundle.is_some();
        let hopsworks = if hopsworks_due {
            let stored = current
                .map(|row| row.access(vault))
                .transpose()
                .map_err(|e| anyhow::anyhow!("the API key does not open: {e}"))?;
            let pick =
                |new: &Option<String>, old: Option<&String>| new.clone().or_else(|| old.cloned()).unwrap_or_default();
            Some(ClusterAccess {
                id: current.map_or_else(ClusterId::new, |r| r.id),
                api_url: pick(&change.api_url, stored.as_ref().map(|s| &s.api_url)),
                api_key: change
                    .api_key
                    .clone()
                    .or_else(|| stored.as_ref().map(|s| s.api_key.clone()))
                    .unwrap_or_else(|| Secret::new(String::new())),
                ca_bundle: pick(&change.ca_bundle, stored.as_ref().map(|s| &s.ca_bundle)),
                oauth_client_id: pick(&change.oauth_client_id, stored.as_ref().map(|s| &s.oauth_client_id)),
            })
        } else {
            None
        };
        let rondb_due =
            change.rondb_endpoint.is_some() || change.rondb_user.is_some() || change.rondb_password.is_some();
        let rondb = if rondb_due {
            let stored = current
                .map(|row| row.rondb(vault))
                .transpose()
                .map_err(|e| anyhow::anyhow!("the RonDB password does not open: {e}"))?
                .flatten();
            Some(RonDbAccess {
                endpoint: change
                    .rondb_endpoint
                    .clone()
                    .or_else(|| stored.as_ref().map(|s| s.endpoint.clone()))
                    .unwrap_or_default(),
                user: change.rondb_user.clone().or_else(|| stored.as_ref().map(|s| s.user.clone())).unwrap_or_default(),
                password: change
                    .rondb_password
                    .clone()
                    .or_else(|| stored.as_ref().map(|s| s.password.clone()))
                    .unwrap_or_else(|| Secret::new(String::new())),
            })
        } else {
            None
        };
        Ok(Self { kubeconfig, hopsworks, rondb })
    }

    /// Whether anything is to be checked.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.kubeconfig.is_none() && self.hopsworks.is_none() && self.rondb.is_none()
    }
}

/// Runs the checks.
#[derive(Debug, Clone)]
pub struct Checker {
    hopsworks: HopsworksConfig,
    allow_private_addresses: bool,
    timeout: Duration,
}

impl Checker {
    /// Checks with the service's Hopsworks client settings, and `clusters`' address rule and
    /// timeout.
    #[must_use]
    pub fn new(hopsworks: &HopsworksConfig, clusters: &ClustersConfig) -> Self {
        Self {
            hopsworks: hopsworks.clone(),
            allow_private_addresses: clusters.allow_private_addresses,
            timeout: Duration::from_millis(clusters.check_timeout_ms),
        }
    }

    /// Every check `target` makes due, Kubernetes' first.
    pub async fn run(&self, target: &Target) -> Report {
        let kube = async {
            match &target.kubeconfig {
                Some(k) => kube_checks::check(k, self.timeout).await,
                None => Vec::new(),
            }
        };
        let hopsworks = async {
            match &target.hopsworks {
                Some(access) => Some(self.hopsworks(access).await),
                None => None,
            }
        };
        let rondb = async {
            match &target.rondb {
                Some(access) => Some(self.rondb(access).await),
                None => None,
            }
        };
        let (mut checks, hopsworks, rondb) = tokio::join!(kube, hopsworks, rondb);
        checks.extend(hopsworks);
        checks.extend(rondb);
        Report::of(checks)
    }

    /// The online storage query, as the storage route runs it.
    async fn rondb(&self, access: &RonDbAccess) -> Check {
        match crate::rondb::database_bytes(access, self.timeout).await {
            Ok(databases) => Check {
                name: RONDB.to_owned(),
                ok: true,
                detail: format!(
                    "{} reads ndbinfo.memory_per_fragment at {} ({} databases)",
                    access.user,
                    access.endpoint,
                    databases.len()
                ),
            },
            Err(e) => Check { name: RONDB.to_owned(), ok: false, detail: format!("{}: {e}", e.reason()) },
        }
    }

    async fn hopsworks(&self, access: &ClusterAccess) -> Check {
        let fail = |detail: String| Check { name: HOPSWORKS.to_owned(), ok: false, detail };
        let client = match Hopsworks::new(access, &self.hopsworks, self.allow_private_addresses) {
            Ok(c) => c,
            Err(e) => return fail(e.0),
        };
        let base = format!("{}{}", access.api_url, crate::hopsworks::BASE_PATH);
        // The client's own timeouts and tries bound the wait.
        match client.probe().await {
            Ok(Ok(users)) => Check {
                name: HOPSWORKS.to_owned(),
                ok: true,
                detail: format!("the admin API at {base} answers the key ({users} users)"),
            },
            Ok(Err((StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, said))) => fail(format!(
                "Hopsworks refused the API key: {said}: use an API key of a user in the HOPS_ADMIN group with the \
                 ADMIN, PROJECT and USER scopes"
            )),
            Ok(Err((StatusCode::NOT_FOUND, said))) => fail(format!(
                "no Hopsworks admin API at {base}: {said}: api_url must be Hopsworks' base URL (https://host[:port])"
            )),
            Ok(Err((_, said))) => fail(format!("GET /admin/users: {said}")),
            Err(e) => match explain_tls(&e.0, "the cluster's ca_bundle") {
                Some(tls) => fail(format!("GET /admin/users: {tls}")),
                None => fail(format!(
                    "Hopsworks at {base} cannot be reached ({}): check api_url and that provisioning's network reaches it",
                    e.0
                )),
            },
        }
    }
}
