//! `GET /internal/clusters/{id}/storage`: each of the cluster's Hopsworks projects with the
//! offline storage Hopsworks reports for it now, for the metering service only (decision 0056).
//! provisioning holds the cluster's admin API key, so metering reads storage through it, as it
//! reads the projects, and never holds the key itself.
//!
//! Online storage comes from the cluster's RonDB when one is registered (decision 0071): each
//! project's online feature store database (the project's name in lower case) from
//! `ndbinfo.memory_per_fragment`. Without a RonDB endpoint every project's online part is
//! `online_not_configured`; when RonDB cannot be read, every project's online part is
//! unreported with the reason, and the offline figures are answered as usual.

use super::{
    Data, answers, hopsworks_unavailable, metering_hopsworks, metering_only, no_such_cluster, not_a_cluster_id,
    not_signed_in,
};
use crate::error::ProvisioningCode;
use crate::hopsworks::PROJECT_PAGE;
use actix_web::HttpResponse;
use actix_web::web;
use hopsbridge_domain::ClusterId;
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::http::{ApiError, ErrorBody};
use serde::Serialize;

/// `online_unreported` of a cluster without a RonDB endpoint.
pub const ONLINE_NOT_CONFIGURED: &str = "online_not_configured";

/// One project's storage as Hopsworks reports it now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectStorage {
    /// Hopsworks' numeric project id: what storage is attributed by.
    id: i64,
    /// Name as created.
    name: String,
    /// The project's Kubernetes namespace.
    namespace: String,
    /// The creator's Hopsworks username; null when Hopsworks names none.
    creator_username: Option<String>,
    /// Bytes held offline (the project's directory, its Hive database and its feature store's
    /// offline database, as HopsFS' quota records count them); null when not reported.
    offline_bytes: Option<u64>,
    /// Why `offline_bytes` is null (a directory without a quota has no usage in Hopsworks).
    unreported: Option<String>,
    /// Bytes RonDB holds for the project's online feature store (allocated memory of its
    /// database's tables and indexes, each fragment once); 0 for a project without one; null
    /// when not measured.
    online_bytes: Option<u64>,
    /// Why `online_bytes` is null: `online_not_configured` (the cluster has no RonDB endpoint),
    /// or `rondb_unreachable`, `rondb_access_denied`, `rondb_no_grant`, `rondb_failed` with
    /// what happened.
    online_unreported: Option<String>,
}

/// A cluster's projects' storage, read at `read_at`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterStorage {
    cluster_id: ClusterId,
    /// When Hopsworks answered (provisioning's calendar clock).
    read_at: chrono::DateTime<chrono::Utc>,
    projects: Vec<ProjectStorage>,
}

/// Every project of the cluster with the offline storage Hopsworks' admin API reports for it
/// (`GET /admin/projects?expand=creator&expand=quotas`), with the service's usual client.
#[utoipa::path(get, path = "/internal/clusters/{id}/storage", tag = "internal",
    params(("id" = Uuid, Path, description = "cluster id")),
    responses((status = 200, description = "the cluster's projects with their storage", body = ClusterStorage),
        (status = 400, description = not_a_cluster_id(), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = metering_only(), body = ErrorBody),
        (status = 404, description = no_such_cluster(), body = ErrorBody),
        (status = 502, description = answers("Hopsworks cannot answer", &[], &[ProvisioningCode::HopsworksUnavailable]),
            body = ErrorBody)))]
pub(super) async fn cluster_storage(
    state: Data,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (row, client) = metering_hopsworks(&state, &caller, &id).await?;
    let id = row.id;
    let listed = client.project_storage(PROJECT_PAGE).await.map_err(|e| {
        tracing::warn!(cluster_id = %id, error = %e.0, "Hopsworks project storage unavailable");
        hopsworks_unavailable(&e.0)
    })?;
    let read_at = state.clock.now();
    let online = match row.rondb(&state.vault) {
        Ok(None) => Err(ONLINE_NOT_CONFIGURED.to_owned()),
        Ok(Some(access)) => {
            crate::rondb::database_bytes(&access, state.hopsworks.request_timeout()).await.map_err(|e| {
                tracing::warn!(cluster_id = %id, error = %e, "RonDB online storage unavailable");
                format!("{}: {e}", e.reason())
            })
        }
        Err(e) => Err(format!("rondb_failed: the RonDB password does not open: {e}")),
    };
    let projects = listed
        .into_iter()
        .map(|p| {
            let (offline_bytes, unreported) = match p.offline {
                Ok(bytes) => (Some(bytes), None),
                Err(why) => (None, Some(why)),
            };
            let (online_bytes, online_unreported) = match &online {
                Ok(databases) => (Some(databases.get(&p.name.to_lowercase()).copied().unwrap_or(0)), None),
                Err(why) => (None, Some(why.clone())),
            };
            ProjectStorage {
                id: p.id,
                name: p.name,
                namespace: p.namespace,
                creator_username: p.creator_username,
                offline_bytes,
                unreported,
                online_bytes,
                online_unreported,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(ClusterStorage { cluster_id: row.id, read_at, projects }))
}
