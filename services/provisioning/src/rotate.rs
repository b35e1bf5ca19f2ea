//! `hopsbridge-provisioning rotate-keys`: re-encrypts every cluster secret under the active key,
//! one cluster per transaction, so that older keys can then be removed from the configuration.

use crate::clusters::{self, ClusterRow, field};
use crate::config::ProvisioningConfig;
use crate::crypto::{Sealed, Vault};
use crate::error::ProvisioningError;
use crate::schema::clusters as table;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use hopsbridge_domain::ClusterId;
use hopsbridge_platform::db::Database;

/// Re-seals one cluster's secrets under the active key; answers whether anything changed.
///
/// # Errors
/// When a secret does not open with the configured keys, or Postgres fails.
pub async fn rotate_cluster(
    conn: &mut AsyncPgConnection,
    vault: &Vault,
    id: ClusterId,
) -> Result<bool, ProvisioningError> {
    let row: ClusterRow = clusters::lock(conn, id).await?;
    let active = vault.active_key();
    let rondb_current = row.rondb_password_key_id.as_deref().is_none_or(|k| k == active);
    if row.api_key_key_id == active && row.kubeconfig_key_id == active && rondb_current {
        return Ok(false);
    }
    let open = |f: &str, sealed: &Sealed| {
        vault.open(id, f, sealed).map_err(|e| ProvisioningError::Other(anyhow::anyhow!("cluster {id}: {f}: {e}")))
    };
    let (old_key, old_kubeconfig) = (row.api_key(), row.kubeconfig());
    let api_key = vault.seal(id, field::API_KEY, &open(field::API_KEY, &old_key)?)?;
    let kubeconfig = vault.seal(id, field::KUBECONFIG, &open(field::KUBECONFIG, &old_kubeconfig)?)?;
    let rondb_password = row
        .rondb_password()
        .map(|sealed| -> Result<Sealed, ProvisioningError> {
            Ok(vault.seal(id, field::RONDB_PASSWORD, &open(field::RONDB_PASSWORD, &sealed)?)?)
        })
        .transpose()?;
    diesel::update(table::table.find(id))
        .set((
            table::api_key_ciphertext.eq(&api_key.bytes),
            table::api_key_key_id.eq(&api_key.key_id),
            table::kubeconfig_ciphertext.eq(&kubeconfig.bytes),
            table::kubeconfig_key_id.eq(&kubeconfig.key_id),
            table::rondb_password_ciphertext.eq(rondb_password.as_ref().map(|p| &p.bytes)),
            table::rondb_password_key_id.eq(rondb_password.as_ref().map(|p| &p.key_id)),
        ))
        .execute(conn)
        .await?;
    Ok(true)
}

/// Re-seals every cluster's secrets under the active key.
///
/// # Errors
/// When a secret does not open with the configured keys (the others are still rotated), or
/// Postgres fails.
pub async fn rotate_all(db: &Database, vault: &Vault) -> anyhow::Result<(usize, usize)> {
    let ids: Vec<ClusterId> = {
        let mut conn = db.conn().await?;
        table::table.select(table::id).order(table::id.asc()).load(&mut conn).await?
    };
    let (mut rotated, mut failed) = (0, Vec::new());
    for id in &ids {
        let id = *id;
        let outcome = db
            .transaction(|c| {
                let vault = vault.clone();
                Box::pin(async move { rotate_cluster(c, &vault, id).await })
            })
            .await;
        match outcome {
            Ok(true) => rotated += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(cluster_id = %id, error = %e, "cannot re-encrypt this cluster's secrets");
                failed.push(id);
            }
        }
    }
    if failed.is_empty() {
        Ok((rotated, ids.len()))
    } else {
        anyhow::bail!("{} of {} clusters could not be re-encrypted (see above)", failed.len(), ids.len())
    }
}

/// The `rotate-keys` subcommand.
pub fn command(config: ProvisioningConfig) -> BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let vault =
            Vault::from_config(&config.encryption).map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?;
        let db = Database::new(&config.database, crate::SERVICE.name())?;
        let (rotated, total) = rotate_all(&db, &vault).await?;
        tracing::info!(rotated, clusters = total, active_key = %vault.active_key(), "cluster secrets re-encrypted");
        Ok(())
    })
}
