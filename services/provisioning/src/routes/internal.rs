//! The routes for the metering service (`/internal/clusters/{id}/...`): a cluster's kubeconfig
//! and its Hopsworks projects. Every other caller, admins included, is answered 403.

use super::*;

/// 401 without caller headers (the extractor), 403 for anyone but the metering service signing
/// as itself: no person, admins included, and no other service.
pub(super) fn require_metering(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_service(Service::Metering) { Ok(()) } else { Err(ProvisioningCode::MeteringOnly.error()) }
}

/// The cluster of an internal route, for the metering service only. The id is read after the
/// caller is known to be allowed, so a refused caller learns nothing from how it is judged.
async fn metering_cluster(state: &State, caller: &Caller, raw: &str) -> Result<ClusterRow, ApiError> {
    require_metering(caller)?;
    let id: ClusterId =
        raw.parse().map_err(|_| PlatformCode::InvalidPath.with_message("the cluster id must be a UUID"))?;
    let mut conn = state.db.conn().await?;
    Ok(clusters::row(&mut conn, id).await?)
}

/// 403 for anyone but the metering service.
pub(super) fn metering_only() -> String {
    answers("the metering service only", &[], &[ProvisioningCode::MeteringOnly])
}

/// A cluster's kubeconfig, opened, for the metering service. Never logged.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClusterKubeconfig {
    cluster_id: ClusterId,
    name: String,
    status: ClusterStatus,
    /// The kubeconfig YAML as registered.
    kubeconfig: String,
}

impl std::fmt::Debug for ClusterKubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKubeconfig").field("cluster_id", &self.cluster_id).finish_non_exhaustive()
    }
}

/// The kubeconfig as registered, opened in memory. The answer is marked `no-store`.
#[utoipa::path(get, path = "/internal/clusters/{id}/kubeconfig", tag = "internal",
    params(("id" = Uuid, Path, description = "cluster id")),
    responses((status = 200, description = "the cluster's kubeconfig", body = ClusterKubeconfig),
        (status = 400, description = not_a_cluster_id(), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = metering_only(), body = ErrorBody),
        (status = 404, description = no_such_cluster(), body = ErrorBody)))]
pub(super) async fn cluster_kubeconfig(
    state: Data,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = metering_cluster(&state, &caller, &id).await?;
    let id = row.id;
    let kubeconfig = state
        .vault
        .open_text(row.id, clusters::field::KUBECONFIG, &row.kubeconfig())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cluster {id}: the kubeconfig does not open: {e}")))?;
    tracing::info!(cluster_id = %id, caller = %caller.subject, "kubeconfig handed out");
    let answer = ClusterKubeconfig { cluster_id: row.id, name: row.name, status: row.status, kubeconfig };
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(answer))
}

/// One Hopsworks project of a cluster.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterProject {
    /// Hopsworks' numeric project id.
    id: i64,
    /// Name as created.
    name: String,
    /// The Kubernetes namespace its pods run in.
    namespace: String,
    /// The creator's Hopsworks username; null when Hopsworks names none.
    creator_username: Option<String>,
}

/// A cluster's Hopsworks projects.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterProjects {
    cluster_id: ClusterId,
    projects: Vec<ClusterProject>,
}

pub(super) fn hopsworks_unavailable(detail: &str) -> ApiError {
    ProvisioningCode::HopsworksUnavailable.with_message(format!("the cluster's Hopsworks is unavailable: {detail}"))
}

/// The cluster of an internal route (as [`metering_cluster`]) and the service's usual client of
/// its Hopsworks (the cluster's CA only, its API key, timeouts and retries).
pub(super) async fn metering_hopsworks(
    state: &State,
    caller: &Caller,
    raw: &str,
) -> Result<(ClusterRow, Hopsworks), ApiError> {
    let row = metering_cluster(state, caller, raw).await?;
    let access = row
        .access(&state.vault)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cluster {}: the API key does not open: {e}", row.id)))?;
    let client = Hopsworks::new(&access, &state.hopsworks, state.allow_private_addresses)
        .map_err(|e| hopsworks_unavailable(&e.0))?;
    Ok((row, client))
}

/// The projects the cluster's Hopsworks admin API lists now, with the service's usual client
/// (the cluster's CA only, its API key, timeouts and retries).
#[utoipa::path(get, path = "/internal/clusters/{id}/projects", tag = "internal",
    params(("id" = Uuid, Path, description = "cluster id")),
    responses((status = 200, description = "the cluster's Hopsworks projects", body = ClusterProjects),
        (status = 400, description = not_a_cluster_id(), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = metering_only(), body = ErrorBody),
        (status = 404, description = no_such_cluster(), body = ErrorBody),
        (status = 502, description = answers("Hopsworks cannot answer", &[], &[ProvisioningCode::HopsworksUnavailable]),
            body = ErrorBody)))]
pub(super) async fn cluster_projects(
    state: Data,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (row, client) = metering_hopsworks(&state, &caller, &id).await?;
    let id = row.id;
    let listed = client.projects(PROJECT_PAGE).await.map_err(|e| {
        tracing::warn!(cluster_id = %id, error = %e.0, "Hopsworks projects unavailable");
        hopsworks_unavailable(&e.0)
    })?;
    let projects = listed
        .into_iter()
        .map(|p| ClusterProject {
            id: p.id,
            name: p.name,
            namespace: p.namespace,
            creator_username: p.creator.and_then(|c| c.username),
        })
        .collect();
    Ok(HttpResponse::Ok().json(ClusterProjects { cluster_id: row.id, projects }))
}
