//! Sealing cluster secrets at rest: AES-256-GCM under a key named by id, bound to the cluster
//! and the field as associated data, so a ciphertext copied into another row or column does not
//! open.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use hopsbridge_domain::ClusterId;
use hopsbridge_platform::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

const NONCE_LEN: usize = 12;

/// The AES-256-GCM keys that seal cluster API keys and kubeconfigs (the `encryption` section of
/// provisioning's settings).
///
/// Environment variables are lowercased by the configuration loader, so the keys are one
/// string rather than a map: `keys = "<id>:<base64 of 32 bytes>,<id>:<base64>"` (ids are
/// 1-32 characters of `a-z`, `0-9`, `-`, `_`), and `active_key` names the one new secrets are
/// sealed with. Rotation: add a key, make it active, run `hopsbridge-provisioning rotate-keys`,
/// then remove the old key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// The id of the key new secrets are sealed with.
    pub active_key: String,
    /// Every key that may still be needed to open a stored secret, active one included.
    pub keys: Secret<String>,
}

/// A secret sealed under one key.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The id of the key that sealed it.
    pub key_id: String,
    /// Nonce, then ciphertext and tag.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed").field("key_id", &self.key_id).field("len", &self.bytes.len()).finish()
    }
}

/// Why a secret could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The key it was sealed with is not configured (any more).
    #[error("sealed under key {0:?}, which is not configured")]
    UnknownKey(String),
    /// The ciphertext, the key or the associated data do not match.
    #[error("the sealed value does not open (corrupt, or bound to another cluster or field)")]
    Corrupt,
}

/// The configured keys.
#[derive(Clone)]
pub struct Vault {
    keys: Arc<BTreeMap<String, Aes256Gcm>>,
    active: String,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Vault {
    /// The keys of `cfg`.
    ///
    /// # Errors
    /// The configuration key at fault and why (never echoing key material).
    pub fn from_config(cfg: &EncryptionConfig) -> Result<Self, (&'static str, String)> {
        let text = cfg.keys.expose().trim();
        if text.is_empty() {
            return Err(("encryption.keys", "missing: give \"<id>:<base64 of 32 bytes>\", comma-separated".into()));
        }
        let mut keys = BTreeMap::new();
        for (n, entry) in text.split(',').map(str::trim).enumerate() {
            let Some((id, material)) = entry.split_once(':') else {
                return Err(("encryption.keys", format!("entry {} is not <id>:<base64>", n + 1)));
            };
            let id = id.trim();
            if !valid_key_id(id) {
                return Err(("encryption.keys", format!("entry {}: key id must be 1-32 of a-z, 0-9, - and _", n + 1)));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(material.trim())
                .map_err(|_| ("encryption.keys", format!("key {id:?} is not valid base64")))?;
            if bytes.len() != 32 {
                return Err(("encryption.keys", format!("key {id:?} must be 32 bytes, not {}", bytes.len())));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
            if keys.insert(id.to_owned(), cipher).is_some() {
                return Err(("encryption.keys", format!("key {id:?} is given twice")));
            }
        }
        let active = cfg.active_key.trim();
        if active.is_empty() {
            return Err(("encryption.active_key", "missing".into()));
        }
        if !keys.contains_key(active) {
            return Err(("encryption.active_key", format!("{active:?} is not one of encryption.keys")));
        }
        Ok(Self { keys: Arc::new(keys), active: active.to_owned() })
    }

    /// The id of the key new secrets are sealed with.
    #[must_use]
    pub fn active_key(&self) -> &str {
        &self.active
    }

    fn aad(cluster: ClusterId, field: &str, key_id: &str) -> Vec<u8> {
        format!("hopsbridge/provisioning/v1/{cluster}/{field}/{key_id}").into_bytes()
    }

    /// Seals `plaintext` (the `field` of `cluster`) under the active key.
    ///
    /// # Errors
    /// Only if the cipher refuses, which AES-GCM does for inputs beyond 64 GiB.
    pub fn seal(&self, cluster: ClusterId, field: &str, plaintext: &[u8]) -> anyhow::Result<Sealed> {
        let cipher = self.keys.get(&self.active).ok_or_else(|| anyhow::anyhow!("active key missing"))?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = Self::aad(cluster, field, &self.active);
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: &aad })
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        Ok(Sealed { key_id: self.active.clone(), bytes })
    }

    /// Opens a sealed `field` of `cluster`.
    ///
    /// # Errors
    /// [`OpenError`].
    pub fn open(&self, cluster: ClusterId, field: &str, sealed: &Sealed) -> Result<Vec<u8>, OpenError> {
        let cipher = self.keys.get(&sealed.key_id).ok_or_else(|| OpenError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.bytes.len() < NONCE_LEN {
            return Err(OpenError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.bytes.split_at(NONCE_LEN);
        let aad = Self::aad(cluster, field, &sealed.key_id);
        cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad }).map_err(|_| OpenError::Corrupt)
    }

    /// Opens a sealed text field.
    ///
    /// # Errors
    /// [`OpenError`], also for a value that is not UTF-8.
    pub fn open_text(&self, cluster: ClusterId, field: &str, sealed: &Sealed) -> Result<String, OpenError> {
        String::from_utf8(self.open(cluster, field, sealed)?).map_err(|_| OpenError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    fn vault(keys: &str, active: &str) -> Result<Vault, (&'static str, String)> {
        Vault::from_config(&EncryptionConfig { active_key: active.into(), keys: Secret::new(keys.into()) })
    }

    #[test]
    fn sealed_values_open_only_for_their_cluster_and_field() {
        let v = vault(&format!("k1:{}", key(1)), "k1").unwrap();
        let (a, b) = (ClusterId::new(), ClusterId::new());
        let sealed = v.seal(a, "api_key", b"s3cret").unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.bytes.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(v.open(a, "api_key", &sealed).unwrap(), b"s3cret");
        assert_eq!(v.open(b, "api_key", &sealed), Err(OpenError::Corrupt));
        assert_eq!(v.open(a, "kubeconfig", &sealed), Err(OpenError::Corrupt));
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.bytes.last_mut() {
            *last ^= 1;
        }
        assert_eq!(v.open(a, "api_key", &tampered), Err(OpenError::Corrupt));
        let renamed = Sealed { key_id: "k2".into(), ..sealed };
        assert_eq!(v.open(a, "api_key", &renamed), Err(OpenError::UnknownKey("k2".into())));
    }

    #[test]
    fn an_old_key_still_opens_after_a_new_one_becomes_active() {
        let old = vault(&format!("k1:{}", key(1)), "k1").unwrap();
        let both = vault(&format!("k1:{},k2:{}", key(1), key(2)), "k2").unwrap();
        let id = ClusterId::new();
        let sealed = old.seal(id, "kubeconfig", b"yaml").unwrap();
        assert_eq!(both.open(id, "kubeconfig", &sealed).unwrap(), b"yaml");
        assert_eq!(both.seal(id, "kubeconfig", b"yaml").unwrap().key_id, "k2");
    }

    #[test]
    fn bad_key_configuration_is_refused_without_echoing_key_material() {
        assert_eq!(vault("", "k1").unwrap_err().0, "encryption.keys");
        assert_eq!(vault("k1", "k1").unwrap_err().0, "encryption.keys");
        assert_eq!(vault("K1:abc", "k1").unwrap_err().0, "encryption.keys");
        let short = base64::engine::general_purpose::STANDARD.encode([7_u8; 16]);
        let err = vault(&format!("k1:{short}"), "k1").unwrap_err();
        assert!(err.1.contains("32 bytes") && !err.1.contains(&short), "{err:?}");
        assert_eq!(vault(&format!("k1:{0},k1:{0}", key(1)), "k1").unwrap_err().0, "encryption.keys");
        assert_eq!(vault(&format!("k1:{}", key(1)), "k2").unwrap_err().0, "encryption.active_key");
        assert_eq!(vault(&format!("k1:{}", key(1)), "").unwrap_err().0, "encryption.active_key");
    }
}
