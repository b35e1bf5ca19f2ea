//! The cluster registry. Secrets are sealed before they reach a row and opened only in memory,
//! by the code that calls the cluster; nothing here ever answers or announces them.

use crate::crypto::{OpenError, Sealed, Vault};
use crate::error::{ProvisioningCode, ProvisioningError};
use crate::schema::clusters;
use crate::seats;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{ClusterRegisteredV1, ClusterUpdatedV1};
use hopsbridge_domain::{ClusterId, ClusterStatus};
use hopsbridge_platform::Secret;
use hopsbridge_platform::events::enqueue_at;
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The field names secrets are bound to.
pub mod field {
    /// The Hopsworks admin API key.
    pub const API_KEY: &str = "api_key";
    /// The kubeconfig.
    pub const KUBECONFIG: &str = "kubeconfig";
    /// The RonDB reader account's password.
    pub const RONDB_PASSWORD: &str = "rondb_password";
}

/// The cloud metadata services' addresses (AWS, GCP and Azure share the IPv4 one; AWS's IPv6).
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// What kind of address `ip` is, when the service must never call it: loopback, link-local,
/// unspecified (`0.0.0.0/8`, `::`) or a cloud metadata service. IPv4-mapped IPv6 addresses
/// count as their IPv4 address. Private networks (10/8, 172.16/12, 192.168/16, fc00::/7) are
/// allowed: clusters live on them.
#[must_use]
pub fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4 == METADATA_V4 => Some("a cloud metadata address"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("an unspecified address"),
        IpAddr::V6(v6) if v6 == METADATA_V6 => Some("a cloud metadata address"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("an unspecified address"),
        IpAddr::V4(_) | IpAddr::V6(_) => None,
    }
}

/// A DNS resolver for the clients that call clusters: resolves as the system does and keeps
/// only addresses a cluster may be at, so a name that came to resolve to a refused address
/// after it was registered is not called there. A name left with no address fails to resolve.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterResolver;

impl reqwest::dns::Resolve for ClusterResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| forbidden_address(a.ip()).is_none()).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no address a cluster may be at").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A cluster row.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = clusters)]
pub struct ClusterRow {
    /// Id.
    pub id: ClusterId,
    /// Unique name.
    pub name: String,
    /// Hopsworks base URL.
    pub api_url: String,
    /// Sealed API key.
    pub api_key_ciphertext: Vec<u8>,
    /// Its key id.
    pub api_key_key_id: String,
    /// Sealed kubeconfig.
    pub kubeconfig_ciphertext: Vec<u8>,
    /// Its key id.
    pub kubeconfig_key_id: String,
    /// PEM CA bundle.
    pub ca_bundle: String,
    /// OAuth client id.
    pub oauth_client_id: String,
    /// Seats.
    pub capacity: i32,
    /// Region.
    pub region: String,
    /// Status.
    pub status: ClusterStatus,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// RonDB's MySQL endpoint (`host:port`), when online storage is measured.
    pub rondb_endpoint: Option<String>,
    /// The RonDB reader account.
    pub rondb_user: Option<String>,
    /// Its sealed password.
    pub rondb_password_ciphertext: Option<Vec<u8>>,
    /// Its key id.
    pub rondb_password_key_id: Option<String>,
}

impl std::fmt::Debug for ClusterRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRow").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

impl ClusterRow {
    /// The sealed API key.
    #[must_use]
    pub fn api_key(&self) -> Sealed {
        Sealed { key_id: self.api_key_key_id.clone(), bytes: self.api_key_ciphertext.clone() }
    }

    /// The sealed kubeconfig.
    #[must_use]
    pub fn kubeconfig(&self) -> Sealed {
        Sealed { key_id: self.kubeconfig_key_id.clone(), bytes: self.kubeconfig_ciphertext.clone() }
    }

    /// The sealed RonDB password, when one is registered.
    #[must_use]
    pub fn rondb_password(&self) -> Option<Sealed> {
        match (&self.rondb_password_key_id, &self.rondb_password_ciphertext) {
            (Some(key_id), Some(bytes)) => Some(Sealed { key_id: key_id.clone(), bytes: bytes.clone() }),
            _ => None,
        }
    }

    /// How to reach the cluster's RonDB, password opened; `None` without a RonDB endpoint.
    ///
    /// # Errors
    /// When the password does not open.
    pub fn rondb(&self, vault: &Vault) -> Result<Option<RonDbAccess>, OpenError> {
        let (Some(endpoint), Some(user), Some(sealed)) =
            (&self.rondb_endpoint, &self.rondb_user, self.rondb_password())
        else {
            return Ok(None);
        };
        Ok(Some(RonDbAccess {
            endpoint: endpoint.clone(),
            user: user.clone(),
            password: Secret::new(vault.open_text(self.id, field::RONDB_PASSWORD, &sealed)?),
        }))
    }

    /// What the service needs to call the cluster's Hopsworks, secrets opened.
    ///
    /// # Errors
    /// When the API key does not open.
    pub fn access(&self, vault: &Vault) -> Result<ClusterAccess, OpenError> {
        Ok(ClusterAccess {
            id: self.id,
            api_url: self.api_url.clone(),
            api_key: Secret::new(vault.open_text(self.id, field::API_KEY, &self.api_key())?),
            ca_bundle: self.ca_bundle.clone(),
            oauth_client_id: self.oauth_client_id.clone(),
        })
    }
}

/// How to reach one cluster's Hopsworks admin API (in memory only).
#[derive(Clone, Debug)]
pub struct ClusterAccess {
    /// Cluster id.
    pub id: ClusterId,
    /// Base URL.
    pub api_url: String,
    /// The admin API key.
    pub api_key: Secret<String>,
    /// CA bundle to trust (and nothing else).
    pub ca_bundle: String,
    /// OAuth client id of the cluster.
    pub oauth_client_id: String,
}

/// How to reach one cluster's RonDB MySQL server (in memory only).
#[derive(Clone, Debug)]
pub struct RonDbAccess {
    /// `host:port`.
    pub endpoint: String,
    /// The read-only account.
    pub user: String,
    /// Its password.
    pub password: Secret<String>,
}

/// A cluster as admins see it: never a secret, at most that it has one and which key sealed it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// Id.
    pub id: ClusterId,
    /// Unique name.
    pub name: String,
    /// Hopsworks base URL (also the endpoint users open).
    pub api_url: String,
    /// The OAuth client id used when creating Hopsworks users.
    pub oauth_client_id: String,
    /// PEM CA bundle the service trusts for this cluster.
    pub ca_bundle: String,
    /// Seats.
    pub capacity: i32,
    /// Seats taken (assignments provisioning or complete).
    pub used: i64,
    /// Region.
    pub region: String,
    /// Whether it takes new users and is measured.
    pub status: ClusterStatus,
    /// Always true: an API key is required.
    pub has_api_key: bool,
    /// The id of the key the API key is sealed with.
    pub api_key_key_id: String,
    /// Always true: a kubeconfig is required.
    pub has_kubeconfig: bool,
    /// The id of the key the kubeconfig is sealed with.
    pub kubeconfig_key_id: String,
    /// RonDB's MySQL endpoint (`host:port`) online storage is read from; null: online storage
    /// is not measured on this cluster.
    pub rondb_endpoint: Option<String>,
    /// The RonDB account that reads `ndbinfo`; null without an endpoint.
    pub rondb_user: Option<String>,
    /// Whether a RonDB password is stored (never answered).
    pub has_rondb_password: bool,
    /// The id of the key the RonDB password is sealed with.
    pub rondb_password_key_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl ClusterView {
    fn of(row: ClusterRow, used: i64) -> Self {
        Self {
            id: row.id,
            name: row.name,
            api_url: row.api_url,
            oauth_client_id: row.oauth_client_id,
            ca_bundle: row.ca_bundle,
            capacity: row.capacity,
            used,
            region: row.region,
            status: row.status,
            has_api_key: true,
            api_key_key_id: row.api_key_key_id,
            has_kubeconfig: true,
            kubeconfig_key_id: row.kubeconfig_key_id,
            has_rondb_password: row.rondb_password_ciphertext.is_some(),
            rondb_endpoint: row.rondb_endpoint,
            rondb_user: row.rondb_user,
            rondb_password_key_id: row.rondb_password_key_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A validated registration.
#[derive(Clone, Debug)]
pub struct NewCluster {
    /// Name.
    pub name: String,
    /// Base URL.
    pub api_url: String,
    /// API key.
    pub api_key: Secret<String>,
    /// Kubeconfig YAML.
    pub kubeconfig: Secret<String>,
    /// CA bundle.
    pub ca_bundle: String,
    /// OAuth client id.
    pub oauth_client_id: String,
    /// Seats.
    pub capacity: i32,
    /// Region.
    pub region: String,
    /// Status.
    pub status: ClusterStatus,
    /// RonDB: endpoint, user and password, when online storage is measured.
    pub rondb: Option<(String, String, Secret<String>)>,
}

/// A validated change; absent fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct ClusterChange {
    /// Name.
    pub name: Option<String>,
    /// Base URL.
    pub api_url: Option<String>,
    /// API key.
    pub api_key: Option<Secret<String>>,
    /// Kubeconfig YAML.
    pub kubeconfig: Option<Secret<String>>,
    /// CA bundle.
    pub ca_bundle: Option<String>,
    /// OAuth client id.
    pub oauth_client_id: Option<String>,
    /// Seats.
    pub capacity: Option<i32>,
    /// Region.
    pub region: Option<String>,
    /// Status.
    pub status: Option<ClusterStatus>,
    /// RonDB's endpoint.
    pub rondb_endpoint: Option<String>,
    /// RonDB's reader account.
    pub rondb_user: Option<String>,
    /// Its password.
    pub rondb_password: Option<Secret<String>>,
}

async fn view(conn: &mut AsyncPgConnection, row: ClusterRow) -> Result<ClusterView, ProvisioningError> {
    let used = seats::taken(conn, row.id).await?;
    Ok(ClusterView::of(row, used))
}

impl ClusterChange {
    /// The registration this change describes, when every field is given.
    #[must_use]
    pub fn complete(self) -> Option<NewCluster> {
        Some(NewCluster {
            name: self.name?,
            api_url: self.api_url?,
            api_key: self.api_key?,
            kubeconfig: self.kubeconfig?,
            ca_bundle: self.ca_bundle?,
            oauth_client_id: self.oauth_client_id?,
            capacity: self.capacity?,
            region: self.region?,
            status: self.status?,
            rondb: match (self.rondb_endpoint, self.rondb_user, self.rondb_password) {
                (Some(e), Some(u), Some(p)) => Some((e, u, p)),
                _ => None,
            },
        })
    }
}

/// Registers a cluster and announces it (without secrets).
///
/// # Errors
/// `cluster_name_taken`.
pub async fn create(
    conn: &mut AsyncPgConnection,
    vault: &Vault,
    new: &NewCluster,
    now: DateTime<Utc>,
) -> Result<ClusterView, ProvisioningError> {
    let id = ClusterId::new();
    let api_key = vault.seal(id, field::API_KEY, new.api_key.expose().as_bytes())?;
    let kubeconfig = vault.seal(id, field::KUBECONFIG, new.kubeconfig.expose().as_bytes())?;
    let rondb_password =
        new.rondb.as_ref().map(|(_, _, p)| vault.seal(id, field::RONDB_PASSWORD, p.expose().as_bytes())).transpose()?;
    let row: ClusterRow = diesel::insert_into(clusters::table)
        .values((
            clusters::id.eq(id),
            clusters::name.eq(&new.name),
            clusters::api_url.eq(&new.api_url),
            clusters::api_key_ciphertext.eq(&api_key.bytes),
            clusters::api_key_key_id.eq(&api_key.key_id),
            clusters::kubeconfig_ciphertext.eq(&kubeconfig.bytes),
            clusters::kubeconfig_key_id.eq(&kubeconfig.key_id),
            clusters::ca_bundle.eq(&new.ca_bundle),
            clusters::oauth_client_id.eq(&new.oauth_client_id),
            clusters::capacity.eq(new.capacity),
            clusters::region.eq(&new.region),
            clusters::status.eq(new.status),
            clusters::rondb_endpoint.eq(new.rondb.as_ref().map(|(e, _, _)| e)),
            clusters::rondb_user.eq(new.rondb.as_ref().map(|(_, u, _)| u)),
            clusters::rondb_password_ciphertext.eq(rondb_password.as_ref().map(|p| &p.bytes)),
            clusters::rondb_password_key_id.eq(rondb_password.as_ref().map(|p| &p.key_id)),
        ))
        .returning(ClusterRow::as_returning())
        .get_result(conn)
        .await?;
    let event = ClusterRegisteredV1 {
        cluster_id: id.to_string(),
        name: row.name.clone(),
        region: row.region.clone(),
        status: row.status.to_string(),
        capacity: row.capacity,
    };
    enqueue_at(conn, &event, None, now).await?;
    view(conn, row).await
}

/// Changes a cluster and announces it (without secrets), as changed at calendar time `now`.
///
/// # Errors
/// `cluster_not_found`, `cluster_name_taken`.
pub async fn update(
    conn: &mut AsyncPgConnection,
    vault: &Vault,
    id: ClusterId,
    change: &ClusterChange,
    now: DateTime<Utc>,
) -> Result<ClusterView, ProvisioningError> {
    let current = lock(conn, id).await?;
    let api_key = change.api_key.as_ref().map(|k| vault.seal(id, field::API_KEY, k.expose().as_bytes())).transpose()?;
    let kubeconfig =
        change.kubeconfig.as_ref().map(|k| vault.seal(id, field::KUBECONFIG, k.expose().as_bytes())).transpose()?;
    let api_key = api_key.unwrap_or_else(|| current.api_key());
    let kubeconfig = kubeconfig.unwrap_or_else(|| current.kubeconfig());
    let rondb_password = match &change.rondb_password {
        Some(p) => Some(vault.seal(id, field::RONDB_PASSWORD, p.expose().as_bytes())?),
        None => current.rondb_password(),
    };
    let rondb_endpoint = change.rondb_endpoint.as_ref().or(current.rondb_endpoint.as_ref());
    let rondb_user = change.rondb_user.as_ref().or(current.rondb_user.as_ref());
    if rondb_endpoint.is_some() != rondb_user.is_some() || rondb_endpoint.is_some() != rondb_password.is_some() {
        return Err(ProvisioningError::refused(
            ProvisioningCode::InvalidRondb,
            "the cluster has no RonDB account yet: give rondb_endpoint, rondb_user and rondb_password",
        ));
    }
    let row: ClusterRow = diesel::update(clusters::table.find(id))
        .set((
            clusters::name.eq(change.name.as_ref().unwrap_or(&current.name)),
            clusters::api_url.eq(change.api_url.as_ref().unwrap_or(&current.api_url)),
            clusters::api_key_ciphertext.eq(&api_key.bytes),
            clusters::api_key_key_id.eq(&api_key.key_id),
            clusters::kubeconfig_ciphertext.eq(&kubeconfig.bytes),
            clusters::kubeconfig_key_id.eq(&kubeconfig.key_id),
            clusters::ca_bundle.eq(change.ca_bundle.as_ref().unwrap_or(&current.ca_bundle)),
            clusters::oauth_client_id.eq(change.oauth_client_id.as_ref().unwrap_or(&current.oauth_client_id)),
            clusters::capacity.eq(change.capacity.unwrap_or(current.capacity)),
            clusters::region.eq(change.region.as_ref().unwrap_or(&current.region)),
            clusters::status.eq(change.status.unwrap_or(current.status)),
            clusters::rondb_endpoint.eq(rondb_endpoint),
            clusters::rondb_user.eq(rondb_user),
            clusters::rondb_password_ciphertext.eq(rondb_password.as_ref().map(|p| &p.bytes)),
            clusters::rondb_password_key_id.eq(rondb_password.as_ref().map(|p| &p.key_id)),
            clusters::updated_at.eq(diesel::dsl::now),
        ))
        .returning(ClusterRow::as_returning())
        .get_result(conn)
        .await?;
    let event = ClusterUpdatedV1 {
        cluster_id: id.to_string(),
        name: row.name.clone(),
        region: row.region.clone(),
        status: row.status.to_string(),
        capacity: row.capacity,
    };
    enqueue_at(conn, &event, None, now).await?;
    view(conn, row).await
}

fn not_found() -> ProvisioningError {
    ProvisioningCode::ClusterNotFound.into()
}

/// One cluster.
///
/// # Errors
/// `cluster_not_found`.
pub async fn get(conn: &mut AsyncPgConnection, id: ClusterId) -> Result<ClusterView, ProvisioningError> {
    let row = row(conn, id).await?;
    view(conn, row).await
}

/// One cluster's row.
///
/// # Errors
/// `cluster_not_found`.
pub async fn row(conn: &mut AsyncPgConnection, id: ClusterId) -> Result<ClusterRow, ProvisioningError> {
    clusters::table.find(id).select(ClusterRow::as_select()).first(conn).await.optional()?.ok_or_else(not_found)
}

/// One cluster's row, locked for the rest of the transaction.
///
/// # Errors
/// `cluster_not_found`.
pub async fn lock(conn: &mut AsyncPgConnection, id: ClusterId) -> Result<ClusterRow, ProvisioningError> {
    clusters::table
        .find(id)
        .select(ClusterRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(not_found)
}

/// Every cluster, by name.
///
/// # Errors
/// When Postgres fails.
pub async fn list(conn: &mut AsyncPgConnection) -> Result<Vec<ClusterView>, ProvisioningError> {
    let rows: Vec<ClusterRow> =
        clusters::table.order(clusters::name.asc()).select(ClusterRow::as_select()).load(conn).await?;
    let used = seats::occupancy(conn, None).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let n = used.get(&r.id).copied().unwrap_or(0);
            ClusterView::of(r, n)
        })
        .collect())
}

/// The rows of the clusters `ids`, by id (each once).
///
/// # Errors
/// When Postgres fails.
pub async fn rows(
    conn: &mut AsyncPgConnection,
    ids: &[ClusterId],
) -> Result<HashMap<ClusterId, ClusterRow>, diesel::result::Error> {
    let rows: Vec<ClusterRow> =
        clusters::table.filter(clusters::id.eq_any(ids)).select(ClusterRow::as_select()).load(conn).await?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
}
