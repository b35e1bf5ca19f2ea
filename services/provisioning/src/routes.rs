//! provisioning's HTTP API.
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /api/admin/clusters`, `GET /api/admin/clusters` | admins | register, list |
//! | `GET /api/admin/clusters/{id}`, `PATCH /api/admin/clusters/{id}` | admins | view, change |
//! | `GET /api/admin/assignments?status=…` | admins | list, paged |
//! | `GET`, `PUT`, `DELETE /api/admin/assignments/{user_id}` | admins | view, move, unassign |
//! | `GET /api/admin/assignments/{user_id}/projects` | admins | a team member's membership and their place in each of the owner's projects |
//! | `POST /api/admin/clusters/{id}/projects/sync` | admins | sync the cluster's projects now |
//! | `GET /api/admin/assignments/status-drift` | admins | accounts whose Hopsworks status disagrees with ours, read from Hopsworks |
//! | `GET /api/cluster` | any signed-in person | their cluster, its state and their Hopsworks username |
//! | `GET /api/cluster/projects` | any signed-in person | their Hopsworks projects on their cluster ([`my_projects`]) |
//! | `GET /internal/clusters/{id}/kubeconfig` | the metering service only | the cluster's kubeconfig, opened |
//! | `GET /internal/clusters/{id}/projects` | the metering service only | the cluster's Hopsworks projects |
//! | `GET /internal/clusters/{id}/storage` | the metering service only | the projects' offline storage, from Hopsworks ([`storage`]) |
//!
//! `/internal/...` routes are for other services, never forwarded by the gateway and absent
//! from the public OpenAPI document ([`ApiDoc`]; they have their own, [`InternalApiDoc`]): the
//! caller signs as a service (`hopsbridge_platform::caller::Caller::service`), and any other
//! caller, an admin included, is answered 403 (decision 0026).
//!
//! Each response's description names the codes it is answered with, from the catalogues
//! ([`ProvisioningCode`] and the platform's).

use crate::assignments::{self, Assignment};
use crate::cluster_checks::{Checker, Target};
use crate::cluster_health::{self, ClusterWithHealth, Health};
use crate::clusters::{self, ClusterChange, ClusterRow, ClusterView};
use crate::config::HopsworksConfig;
use crate::crypto::Vault;
use crate::error::{ProvisioningCode, ProvisioningError};
use crate::hopsworks::{Hopsworks, PROJECT_PAGE};
use crate::integrity::{self, HopsworksAccess, StatusDrift, StatusDriftReport, UnreadCluster};
use crate::project_members::{self, AccessState, ProjectMember};
use crate::project_sync::{ProjectSync, SyncError, Synced};
use crate::team_members::{self, TeamMember, TeamState};
use crate::validate::{self, Invalid, invalid};
use actix_web::{HttpResponse, web};
use hopsbridge_contracts::Service;
use hopsbridge_domain::{AssignmentState, ClusterId, ClusterStatus, UserId};
use hopsbridge_platform::Secret;
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode, PlatformCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Notify;

mod internal;
mod my_projects;
use internal::{cluster_kubeconfig, cluster_projects, hopsworks_unavailable, metering_hopsworks, metering_only};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    /// provisioning's schema.
    pub db: Database,
    /// The keys cluster secrets are sealed with.
    pub vault: Vault,
    /// Wakes the background task after a change that may free seats or add work.
    pub wake: Arc<Notify>,
    /// `maxNumProjects` of a paying owner (for admin placements of users without a request).
    pub max_num_projects: i32,
    /// Calls to the clusters' Hopsworks (timeouts and retries).
    pub hopsworks: HopsworksConfig,
    /// Calendar time: when a cluster was registered or changed, as announced.
    pub clock: Clock,
    /// Clusters may be registered on loopback, link-local and metadata addresses
    /// (`clusters.allow_private_addresses`, development only).
    pub allow_private_addresses: bool,
    /// Syncs clusters' projects on an admin's demand.
    pub sync: ProjectSync,
    /// Checks a cluster before a registration or change is accepted (decision 0054).
    pub checker: Checker,
}

/// Registers the routes.
pub fn configure(c: &mut web::ServiceConfig, state: State) {
    c.app_data(web::Data::new(state))
        .route("/api/admin/clusters", web::post().to(create_cluster))
        .route("/api/admin/clusters", web::get().to(list_clusters))
        .route("/api/admin/clusters/{id}", web::get().to(get_cluster))
        .route("/api/admin/clusters/{id}", web::patch().to(update_cluster))
        .route("/api/admin/clusters/{id}/projects/sync", web::post().to(sync_projects))
        .route("/api/admin/assignments", web::get().to(list_assignments))
        .route("/api/admin/assignments/status-drift", web::get().to(status_drift))
        .route("/api/admin/assignments/{user_id}", web::get().to(get_assignment))
        .route("/api/admin/assignments/{user_id}", web::put().to(move_assignment))
        .route("/api/admin/assignments/{user_id}", web::delete().to(delete_assignment))
        .route("/api/admin/assignments/{user_id}/projects", web::get().to(member_projects))
        .route("/api/cluster", web::get().to(my_cluster))
        .route("/api/cluster/projects", web::get().to(my_projects::my_projects))
        .route("/internal/clusters/{id}/kubeconfig", web::get().to(cluster_kubeconfig))
        .route("/internal/clusters/{id}/projects", web::get().to(cluster_projects))
        .route("/internal/clusters/{id}/storage", web::get().to(storage::cluster_storage));
}

mod storage;

type Data = web::Data<State>;

/// 401 without caller headers (the extractor), 403 for anyone but an admin.
fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.has(Role::Admin) { Ok(()) } else { Err(ProvisioningCode::AdminOnly.error()) }
}

fn refused(e: Invalid) -> ApiError {
    ProvisioningError::from(e).into()
}

/// A response's description naming the codes it is answered with: `what. code: description; …`.
fn answers(what: &str, platform: &[PlatformCode], own: &[ProvisioningCode]) -> String {
    let platform = platform.iter().map(|c| (c.code(), c.description()));
    let own = own.iter().map(|c| (c.code(), c.description()));
    let codes: Vec<String> = platform.chain(own).map(|(code, description)| format!("{code}: {description}")).collect();
    format!("{what}. {}", codes.join("; "))
}

/// 401, from the caller extractor.
fn not_signed_in() -> String {
    answers("not signed in", &[PlatformCode::Unauthenticated], &[])
}

/// 403 for anyone but an admin.
fn admins_only() -> String {
    answers("administrators only", &[], &[ProvisioningCode::AdminOnly])
}

/// 404 for a cluster id.
fn no_such_cluster() -> String {
    answers("no such cluster", &[], &[ProvisioningCode::ClusterNotFound])
}

/// 400 for an internal route's cluster id.
fn not_a_cluster_id() -> String {
    answers("the id is not a UUID", &[PlatformCode::InvalidPath], &[])
}

/// 400 for a cluster registration or change.
fn invalid_cluster() -> String {
    use ProvisioningCode::{
        ClusterAddressRefused, InvalidApiKey, InvalidApiUrl, InvalidCaBundle, InvalidCapacity, InvalidKubeconfig,
        InvalidName, InvalidOauthClientId, InvalidRegion, InvalidRondb, InvalidStatus,
    };
    answers(
        "a field is invalid",
        &[PlatformCode::InvalidBody],
        &[
            InvalidName,
            InvalidApiUrl,
            ClusterAddressRefused,
            InvalidApiKey,
            InvalidKubeconfig,
            InvalidCaBundle,
            InvalidOauthClientId,
            InvalidCapacity,
            InvalidRegion,
            InvalidStatus,
            InvalidRondb,
        ],
    )
}

/// 422 for a registration or change the cluster's checks refused.
fn check_failed() -> String {
    answers(
        "the cluster failed a check; details.checks lists each with what to fix",
        &[],
        &[ProvisioningCode::ClusterCheckFailed],
    )
}

/// A cluster change as sent (`PATCH`; a registration, [`ClusterRegistration`], sends every
/// field): every field read by hand so each bad one gets its own code. A field sent as `null`
/// is refused like any other value that is not of its type; a field left out is unchanged.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterBody {
    /// Unique name, 1-100 characters once trimmed, no control characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$")]
    name: Option<Value>,
    /// The Hopsworks base URL (https).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, pattern = "^https://")]
    api_url: Option<Value>,
    /// The Hopsworks admin API key (secret; never answered), 1-4096 characters, no control
    /// characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 4096, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    api_key: Option<Value>,
    /// The cluster's kubeconfig YAML (secret; never answered), at most 256 KiB.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1)]
    kubeconfig: Option<Value>,
    /// PEM CA bundle of the cluster's TLS.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, pattern = "-----BEGIN CERTIFICATE-----")]
    ca_bundle: Option<Value>,
    /// The cluster's OAuth client id, 1-256 characters, no control characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    oauth_client_id: Option<Value>,
    /// Seats, 0-1000000.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = i32, minimum = 0, maximum = 1_000_000)]
    capacity: Option<Value>,
    /// Region: 1-64 letters, digits, `-`, `_` and `.`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    region: Option<Value>,
    /// The cluster's status.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = ClusterStatus)]
    status: Option<Value>,
    /// RonDB's MySQL endpoint, `host:port`, for online storage; with `rondb_user` and
    /// `rondb_password` (all three to set it the first time).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, max_length = 300)]
    rondb_endpoint: Option<Value>,
    /// The RonDB account with `SELECT` on `ndbinfo`, 1-80 characters, no control characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 80, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    rondb_user: Option<Value>,
    /// Its password (secret; never answered), 1-256 characters, no control characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    rondb_password: Option<Value>,
}

/// A cluster registration (`POST`): a [`ClusterBody`] with every field. Documents the body
/// only: it is read as a [`ClusterBody`] and each missing field refused with its own code.
#[derive(Debug, utoipa::ToSchema)]
#[expect(dead_code, reason = "documents the registration body, read as a ClusterBody")]
pub struct ClusterRegistration {
    /// Unique name, 1-100 characters once trimmed, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: String,
    /// The Hopsworks base URL (https).
    #[schema(pattern = "^https://")]
    api_url: String,
    /// The Hopsworks admin API key (secret; never answered), 1-4096 characters, no control
    /// characters.
    #[schema(min_length = 1, max_length = 4096, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    api_key: String,
    /// The cluster's kubeconfig YAML (secret; never answered), at most 256 KiB.
    #[schema(min_length = 1)]
    kubeconfig: String,
    /// PEM CA bundle of the cluster's TLS.
    #[schema(pattern = "-----BEGIN CERTIFICATE-----")]
    ca_bundle: String,
    /// The cluster's OAuth client id, 1-256 characters, no control characters.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    oauth_client_id: String,
    /// Seats, 0-1000000.
    #[schema(minimum = 0, maximum = 1_000_000)]
    capacity: i32,
    /// Region: 1-64 letters, digits, `-`, `_` and `.`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    region: String,
    /// The cluster's status.
    status: ClusterStatus,
    /// RonDB's MySQL endpoint, `host:port`, for online storage (optional; with `rondb_user`
    /// and `rondb_password`). Without it online storage is not measured on the cluster.
    #[schema(value_type = String, required = false, max_length = 300)]
    rondb_endpoint: Option<String>,
    /// The RonDB account with `SELECT` on `ndbinfo`, 1-80 characters, no control characters.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 80, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    rondb_user: Option<String>,
    /// Its password (secret; never answered), 1-256 characters, no control characters.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    rondb_password: Option<String>,
}

/// A field that was sent, `null` included (which then fails its type check); a field left out
/// stays `None` through `#[serde(default)]`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

fn text<'a>(v: &'a Value, code: ProvisioningCode, field: &str) -> Result<&'a str, ApiError> {
    v.as_str().ok_or_else(|| refused(invalid(code, format!("{field} must be a string"))))
}

/// The change a body asks for, validated. With `required`, every field must be present.
fn parse_body(body: &ClusterBody, required: bool) -> Result<ClusterChange, ApiError> {
    use ProvisioningCode::{
        InvalidApiKey, InvalidApiUrl, InvalidCaBundle, InvalidCapacity, InvalidKubeconfig, InvalidName,
        InvalidOauthClientId, InvalidRegion, InvalidRondb, InvalidStatus,
    };
    let missing = |field: &str, code: ProvisioningCode| -> Result<(), ApiError> {
        if required { Err(refused(invalid(code, format!("{field} is required")))) } else { Ok(()) }
    };
    let mut change = ClusterChange::default();
    match &body.name {
        Some(v) => change.name = Some(validate::name(text(v, InvalidName, "name")?).map_err(refused)?),
        None => missing("name", InvalidName)?,
    }
    match &body.api_url {
        Some(v) => {
            change.api_url = Some(validate::api_url(text(v, InvalidApiUrl, "api_url")?).map_err(refused)?);
        }
        None => missing("api_url", InvalidApiUrl)?,
    }
    match &body.api_key {
        Some(v) => {
            let key = validate::required_text(text(v, InvalidApiKey, "api_key")?, "api_key", InvalidApiKey, 4096)
                .map_err(refused)?;
            change.api_key = Some(Secret::new(key));
        }
        None => missing("api_key", InvalidApiKey)?,
    }
    match &body.kubeconfig {
        Some(v) => {
            let yaml = text(v, InvalidKubeconfig, "kubeconfig")?;
            if yaml.len() > 256 * 1024 {
                return Err(refused(invalid(InvalidKubeconfig, "kubeconfig is too large")));
            }
            validate::kubeconfig(yaml).map_err(refused)?;
            change.kubeconfig = Some(Secret::new(yaml.to_owned()));
        }
        None => missing("kubeconfig", InvalidKubeconfig)?,
    }
    match &body.ca_bundle {
        Some(v) => {
            change.ca_bundle = Some(validate::ca_bundle(text(v, InvalidCaBundle, "ca_bundle")?).map_err(refused)?)
        }
        None => missing("ca_bundle", InvalidCaBundle)?,
    }
    match &body.oauth_client_id {
        Some(v) => {
            let id = text(v, InvalidOauthClientId, "oauth_client_id")?;
            change.oauth_client_id =
                Some(validate::required_text(id, "oauth_client_id", InvalidOauthClientId, 256).map_err(refused)?);
        }
        None => missing("oauth_client_id", InvalidOauthClientId)?,
    }
    match &body.capacity {
        Some(v) => change.capacity = Some(validate::capacity(v).map_err(refused)?),
        None => missing("capacity", InvalidCapacity)?,
    }
    match &body.region {
        Some(v) => change.region = Some(validate::region(text(v, InvalidRegion, "region")?).map_err(refused)?),
        None => missing("region", InvalidRegion)?,
    }
    match &body.status {
        Some(v) => change.status = Some(validate::status(text(v, InvalidStatus, "status")?).map_err(refused)?),
        None => missing("status", InvalidStatus)?,
    }
    if let Some(v) = &body.rondb_endpoint {
        change.rondb_endpoint =
            Some(validate::rondb_endpoint(text(v, InvalidRondb, "rondb_endpoint")?).map_err(refused)?);
    }
    if let Some(v) = &body.rondb_user {
        let user = text(v, InvalidRondb, "rondb_user")?;
        change.rondb_user = Some(validate::required_text(user, "rondb_user", InvalidRondb, 80).map_err(refused)?);
    }
    if let Some(v) = &body.rondb_password {
        let password = text(v, InvalidRondb, "rondb_password")?;
        // Kept as given: a password's spaces are part of it.
        if password.is_empty() || password.len() > 256 || password.chars().any(char::is_control) {
            return Err(refused(invalid(
                InvalidRondb,
                "rondb_password must be 1-256 characters without control characters",
            )));
        }
        change.rondb_password = Some(Secret::new(password.to_owned()));
    }
    let given = [change.rondb_endpoint.is_some(), change.rondb_user.is_some(), change.rondb_password.is_some()];
    if required && given.contains(&true) && given.contains(&false) {
        return Err(refused(invalid(InvalidRondb, "rondb_endpoint, rondb_user and rondb_password are given together")));
    }
    Ok(change)
}

fn body_of(bytes: &[u8]) -> Result<ClusterBody, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| PlatformCode::InvalidBody.with_message(e.to_string()))
}

#[utoipa::path(post, path = "/api/admin/clusters", tag = "clusters", request_body = ClusterRegistration,
    description = "The addresses are checked first (no loopback, link-local or metadata address unless configured), \
        then the cluster as the services will use it: the API server answers the kubeconfig, its user may do what \
        metering does, metrics-server's API is served, and Hopsworks' admin API answers the key (decision 0054).",
    responses((status = 201, description = "registered (ClusterRegistered announced, without secrets), with the checks it passed as its health", body = ClusterWithHealth),
        (status = 400, description = invalid_cluster(), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 409, description = answers("name taken", &[], &[ProvisioningCode::ClusterNameTaken]), body = ErrorBody),
        (status = 422, description = check_failed(), body = ErrorBody)))]
async fn create_cluster(state: Data, caller: Caller, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let change = parse_body(&body_of(&body)?, true)?;
    validate::callable_addresses(&change, state.allow_private_addresses).await.map_err(refused)?;
    let report = state.checker.run(&Target::of_change(&change, None, &state.vault)?).await;
    if !report.ok {
        tracing::info!(name = ?change.name, "cluster registration refused by its checks");
        return Err(report.refusal());
    }
    let new = change
        .complete()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a registration passed its checks with a field missing")))?;
    let vault = state.vault.clone();
    let view = state
        .db
        .transaction(|c| {
            let (vault, new, now, report) = (vault.clone(), new.clone(), state.clock.now(), report.clone());
            Box::pin(async move {
                let view = clusters::create(c, &vault, &new, now).await?;
                cluster_health::record(c, view.id, &report).await?;
                let health = cluster_health::of(c, &[view.id]).await?.remove(&view.id);
                Ok::<_, ProvisioningError>(ClusterWithHealth { cluster: view, health })
            })
        })
        .await?;
    tracing::info!(cluster_id = %view.cluster.id, name = %view.cluster.name, "cluster registered");
    state.wake.notify_one();
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(get, path = "/api/admin/clusters", tag = "clusters",
    responses((status = 200, description = "every cluster, by name, with its last health check", body = Vec<ClusterWithHealth>),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody)))]
async fn list_clusters(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let views = clusters::list(&mut conn).await?;
    Ok(HttpResponse::Ok().json(cluster_health::with_health(&mut conn, views).await.map_err(ProvisioningError::from)?))
}

#[utoipa::path(get, path = "/api/admin/clusters/{id}", tag = "clusters", params(("id" = Uuid, Path, description = "cluster id")),
    responses((status = 200, description = "the cluster, with its last health check", body = ClusterWithHealth),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = no_such_cluster(), body = ErrorBody)))]
async fn get_cluster(state: Data, caller: Caller, id: web::Path<ClusterId>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let view = clusters::get(&mut conn, *id).await?;
    let mut one = cluster_health::with_health(&mut conn, vec![view]).await.map_err(ProvisioningError::from)?;
    Ok(HttpResponse::Ok().json(one.pop()))
}

#[utoipa::path(patch, path = "/api/admin/clusters/{id}", tag = "clusters", params(("id" = Uuid, Path, description = "cluster id")), request_body = ClusterBody,
    description = "A change of the kubeconfig is checked against the API server, and one of the URL, key or CA \
        bundle against Hopsworks, as a registration is, before it is accepted.",
    responses((status = 200, description = "changed (ClusterUpdated announced, without secrets)", body = ClusterWithHealth),
        (status = 400, description = invalid_cluster(), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = no_such_cluster(), body = ErrorBody),
        (status = 409, description = answers("name taken", &[], &[ProvisioningCode::ClusterNameTaken]), body = ErrorBody),
        (status = 422, description = check_failed(), body = ErrorBody)))]
async fn update_cluster(
    state: Data,
    caller: Caller,
    id: web::Path<ClusterId>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let change = parse_body(&body_of(&body)?, false)?;
    validate::callable_addresses(&change, state.allow_private_addresses).await.map_err(refused)?;
    let id = *id;
    let current = {
        let mut conn = state.db.conn().await?;
        clusters::row(&mut conn, id).await?
    };
    let rondb_given = [change.rondb_endpoint.is_some(), change.rondb_user.is_some(), change.rondb_password.is_some()];
    if current.rondb_endpoint.is_none() && rondb_given.contains(&true) && rondb_given.contains(&false) {
        return Err(refused(invalid(
            ProvisioningCode::InvalidRondb,
            "the cluster has no RonDB account yet: give rondb_endpoint, rondb_user and rondb_password",
        )));
    }
    let target = Target::of_change(&change, Some(&current), &state.vault)?;
    let report = if target.is_empty() { None } else { Some(state.checker.run(&target).await) };
    if let Some(report) = report.as_ref().filter(|r| !r.ok) {
        tracing::info!(cluster_id = %id, "cluster change refused by its checks");
        return Err(report.refusal());
    }
    let vault = state.vault.clone();
    let view = state
        .db
        .transaction(|c| {
            let (vault, change, now, report) = (vault.clone(), change.clone(), state.clock.now(), report.clone());
            Box::pin(async move {
                let view = clusters::update(c, &vault, id, &change, now).await?;
                if let Some(report) = &report {
                    cluster_health::record(c, id, report).await?;
                }
                let health = cluster_health::of(c, &[id]).await?.remove(&id);
                Ok::<_, ProvisioningError>(ClusterWithHealth { cluster: view, health })
            })
        })
        .await?;
    let (status, capacity) = (view.cluster.status, view.cluster.capacity);
    tracing::info!(cluster_id = %id, %status, capacity, "cluster changed");
    state.wake.notify_one();
    Ok(HttpResponse::Ok().json(view))
}

/// Paging and filtering of assignments.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AssignmentQuery {
    /// Only assignments in this status.
    status: Option<String>,
    /// Page size, 1-500 (100).
    limit: Option<i64>,
    /// Rows to skip (0).
    offset: Option<i64>,
}

/// A page of assignments.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssignmentPage {
    items: Vec<Assignment>,
    total: i64,
    limit: i64,
    offset: i64,
}

#[utoipa::path(get, path = "/api/admin/assignments", tag = "clusters", params(AssignmentQuery),
    responses((status = 200, description = "a page of assignments, oldest first", body = AssignmentPage),
        (status = 400, description = answers("bad status or paging", &[PlatformCode::InvalidQuery], &[ProvisioningCode::InvalidStatus]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody)))]
async fn list_assignments(
    state: Data,
    caller: Caller,
    query: web::Query<AssignmentQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let limit = query.limit.unwrap_or(100);
    let offset = query.offset.unwrap_or(0);
    if !(1..=500).contains(&limit) || offset < 0 {
        return Err(PlatformCode::InvalidQuery.with_message("limit must be 1-500 and offset at least 0"));
    }
    let status = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<AssignmentState>)
        .transpose()
        .map_err(|_| ProvisioningCode::InvalidStatus.with_message(validate::one_of(AssignmentState::ALL)))?;
    let mut conn = state.db.conn().await?;
    let (items, total) = assignments::list(&mut conn, status, limit, offset).await.map_err(ProvisioningError::from)?;
    Ok(HttpResponse::Ok().json(AssignmentPage { items, total, limit, offset }))
}

#[utoipa::path(get, path = "/api/admin/assignments/{user_id}", tag = "clusters", params(("user_id" = Uuid, Path, description = "user id")),
    responses((status = 200, description = "the assignment", body = Assignment),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = answers("no assignment", &[], &[ProvisioningCode::AssignmentNotFound]), body = ErrorBody)))]
async fn get_assignment(state: Data, caller: Caller, user: web::Path<UserId>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let mut conn = state.db.conn().await?;
    let a = assignments::get(&mut conn, *user)
        .await
        .map_err(ProvisioningError::from)?
        .ok_or_else(|| ProvisioningCode::AssignmentNotFound.error())?;
    Ok(HttpResponse::Ok().json(a))
}

/// Where to move a user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    /// The target cluster.
    cluster_id: ClusterId,
}

#[utoipa::path(put, path = "/api/admin/assignments/{user_id}", tag = "clusters", params(("user_id" = Uuid, Path, description = "user id")), request_body = MoveBody,
    responses((status = 200, description = "seated on the cluster; the account is made (and the old one deactivated) in the background", body = Assignment),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = answers("no such user or cluster", &[],
            &[ProvisioningCode::UserNotFound, ProvisioningCode::ClusterNotFound]), body = ErrorBody),
        (status = 409, description = answers("the move is refused", &[], &[ProvisioningCode::ClusterFull,
            ProvisioningCode::ClusterNotActive, ProvisioningCode::AssignmentBusy, ProvisioningCode::UserDeleted]),
            body = ErrorBody),
        (status = 415, description = answers("not JSON", &[PlatformCode::UnsupportedMediaType], &[]), body = ErrorBody)))]
async fn move_assignment(
    state: Data,
    caller: Caller,
    user: web::Path<UserId>,
    body: web::Json<MoveBody>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let (user, target, default_projects) = (*user, body.cluster_id, state.max_num_projects);
    let a = state
        .db
        .transaction(|c| Box::pin(async move { assignments::move_to(c, user, target, default_projects).await }))
        .await?;
    tracing::info!(user_id = %user, cluster_id = %target, "assignment moved by an admin");
    state.wake.notify_one();
    Ok(HttpResponse::Ok().json(a))
}

#[utoipa::path(delete, path = "/api/admin/assignments/{user_id}", tag = "clusters", params(("user_id" = Uuid, Path, description = "user id")),
    responses((status = 200, description = "seat released; the account is deactivated in the background", body = Assignment),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = answers("not assigned", &[], &[ProvisioningCode::NotAssigned]), body = ErrorBody)))]
async fn delete_assignment(state: Data, caller: Caller, user: web::Path<UserId>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let user = *user;
    let a = state.db.transaction(|c| Box::pin(async move { assignments::unassign(c, user).await })).await?;
    tracing::info!(user_id = %user, "assignment released by an admin");
    state.wake.notify_one();
    Ok(HttpResponse::Ok().json(a))
}

#[utoipa::path(post, path = "/api/admin/clusters/{id}/projects/sync", tag = "clusters",
    params(("id" = Uuid, Path, description = "cluster id")),
    description = "Reads the cluster's Hopsworks projects with their creators now, as the schedule does: the \
        projects are kept by (cluster, project id), each owner whose active projects changed is announced \
        (ProjectsCounted), and each owner's maxNumProjects follows. A failed read changes nothing but the \
        cluster's last sync error.",
    responses((status = 200, description = "synced", body = Synced),
        (status = 400, description = not_a_cluster_id(), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody),
        (status = 404, description = no_such_cluster(), body = ErrorBody),
        (status = 409, description = answers("a sync of the cluster is under way", &[], &[ProvisioningCode::SyncInProgress]), body = ErrorBody),
        (status = 502, description = answers("Hopsworks cannot answer; nothing changed", &[], &[ProvisioningCode::HopsworksUnavailable]),
            body = ErrorBody)))]
async fn sync_projects(state: Data, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let id: ClusterId =
        id.parse().map_err(|_| PlatformCode::InvalidPath.with_message("the cluster id must be a UUID"))?;
    let outcome = match state.sync.exists(id).await {
        Ok(()) => state.sync.sync(id).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(synced) => {
            tracing::info!(cluster_id = %id, projects = synced.projects, "projects synced by an admin");
            Ok(HttpResponse::Ok().json(synced))
        }
        Err(SyncError::Busy) => Err(ProvisioningCode::SyncInProgress.error()),
        Err(SyncError::NoCluster) => Err(ProvisioningCode::ClusterNotFound.error()),
        Err(SyncError::Hopsworks(e)) => Err(hopsworks_unavailable(&e)),
        Err(e @ SyncError::Db(_)) => Err(ApiError::internal(anyhow::anyhow!("{e}"))),
    }
}

#[utoipa::path(get, path = "/api/admin/assignments/status-drift", tag = "clusters",
    description = "Reads every cluster's users from its Hopsworks and lists each account (of a complete \
        assignment) whose status is not the one ours gives: blocked while the person is suspended, activated \
        otherwise. The background task pushes it until Hopsworks agrees.",
    responses((status = 200, description = "the accounts that disagree, and the clusters that could not be read", body = StatusDriftReport),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody)))]
async fn status_drift(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let access = HopsworksAccess {
        vault: state.vault.clone(),
        config: state.hopsworks.clone(),
        allow_private_addresses: state.allow_private_addresses,
    };
    let report = integrity::status_drift(&state.db, &access).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// A person's team membership as provisioning keeps it, and their place in each of their
/// owner's projects.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberProjects {
    user_id: UserId,
    /// The latest membership provisioning heard of, if any.
    team: Option<TeamMember>,
    /// One per (membership, cluster, project), oldest first: adding and removing are retried
    /// by the background task until Hopsworks agrees.
    projects: Vec<ProjectMember>,
}

#[utoipa::path(get, path = "/api/admin/assignments/{user_id}/projects", tag = "clusters", params(("user_id" = Uuid, Path, description = "user id")),
    responses((status = 200, description = "the person's team membership and their place in each of the owner's projects (empty for a person in no team)", body = MemberProjects),
        (status = 400, description = answers("the id is not a UUID", &[PlatformCode::InvalidPath], &[]), body = ErrorBody),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 403, description = admins_only(), body = ErrorBody)))]
async fn member_projects(state: Data, caller: Caller, user: web::Path<String>) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let user: UserId =
        user.parse().map_err(|_| PlatformCode::InvalidPath.with_message("the user id must be a UUID"))?;
    let mut conn = state.db.conn().await?;
    let team = team_members::get(&conn, user).await.map_err(ProvisioningError::from)?;
    let projects = project_members::of_member(&mut conn, user).await.map_err(ProvisioningError::from)?;
    Ok(HttpResponse::Ok().json(MemberProjects { user_id: user, team, projects }))
}

/// The caller's cluster as they see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MyCluster {
    /// The cluster, once one is chosen.
    cluster: Option<ClusterSummary>,
    /// complete, provisioning or waiting_for_capacity.
    status: AssignmentState,
    /// Why it is not complete yet.
    reason: Option<String>,
    /// The caller's own Hopsworks username on the cluster, once the account exists.
    hopsworks_username: Option<String>,
}

/// A cluster as a user sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterSummary {
    id: ClusterId,
    name: String,
    region: String,
    /// The Hopsworks URL to open.
    endpoint: String,
}

#[utoipa::path(get, path = "/api/cluster", tag = "clusters",
    responses((status = 200, description = "the caller's cluster and its state", body = MyCluster),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 404, description = answers("not assigned", &[], &[ProvisioningCode::NotAssigned]), body = ErrorBody)))]
async fn my_cluster(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let user = caller.person()?;
    let not_assigned = || ProvisioningCode::NotAssigned.with_message("you are not assigned to a cluster");
    let mut conn = state.db.conn().await?;
    let a = assignments::get(&mut conn, user).await.map_err(ProvisioningError::from)?.ok_or_else(not_assigned)?;
    let reason = match a.status {
        AssignmentState::Complete => None,
        AssignmentState::Provisioning => {
            Some(a.last_error.clone().unwrap_or_else(|| "your Hopsworks account is being created".to_owned()))
        }
        AssignmentState::WaitingForCapacity => {
            Some("every cluster is full; you will be assigned when one has room".to_owned())
        }
        AssignmentState::WaitingForOwner => {
            Some("your team's owner has no cluster yet; you will join theirs when they do".to_owned())
        }
        AssignmentState::WaitingForUser | AssignmentState::Unassigning | AssignmentState::Unassigned => {
            return Err(not_assigned());
        }
    };
    let cluster = match a.cluster_id {
        Some(id) => {
            let row = clusters::row(&mut conn, id).await?;
            Some(ClusterSummary { id: row.id, name: row.name, region: row.region, endpoint: row.api_url })
        }
        None => None,
    };
    let hopsworks_username = a.hopsworks_username.clone();
    Ok(HttpResponse::Ok().json(MyCluster { cluster, status: a.status, reason, hopsworks_username }))
}

/// provisioning's catalogue in the document, the codes of routes outside it included.
const CATALOGUE: hopsbridge_platform::http::CatalogueSchema<ProvisioningCode> =
    hopsbridge_platform::http::CatalogueSchema::new(
        "ProvisioningErrorCode",
        "The codes provisioning answers with, besides the platform's.",
    );

/// provisioning's part of the public API's OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(create_cluster, list_clusters, get_cluster, update_cluster, sync_projects, list_assignments, status_drift,
        get_assignment, move_assignment, delete_assignment, member_projects, my_cluster, my_projects::my_projects),
    components(schemas(ClusterBody, ClusterRegistration, ClusterView, ClusterWithHealth, Health, crate::kube_checks::Check, Assignment, AssignmentPage, MoveBody, MemberProjects, TeamMember,
        TeamState, ProjectMember, AccessState, MyCluster, ClusterSummary, Synced, StatusDrift, StatusDriftReport,
        UnreadCluster, my_projects::MyProjects, my_projects::MyProject, my_projects::Relation, ErrorBody)),
    modifiers(&CATALOGUE),
    tags((name = "clusters", description = "Hopsworks clusters and who is on which"))
)]
pub struct ApiDoc;

/// The routes other services call (`/internal/...`), kept out of the public document: the
/// gateway never forwards them.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(internal::cluster_kubeconfig, internal::cluster_projects, storage::cluster_storage),
    components(schemas(internal::ClusterKubeconfig, internal::ClusterProjects, internal::ClusterProject, storage::ClusterStorage,
        storage::ProjectStorage, ErrorBody)),
    tags((name = "internal", description = "Routes for other Hopsbridge services"))
)]
pub struct InternalApiDoc;
