//! Storage measured per Hopsworks project (decision 0056).
//!
//! Every cluster (an inactive one too: its projects keep their data) gets one storage run per
//! UTC-aligned storage window (`storage.window_secs`, an hour by default). A run is due as soon
//! as its window starts and must take its snapshot inside the window (its deadline is the
//! window's end): provisioning reads every project's offline storage from the cluster's
//! Hopsworks admin API (`GET /internal/clusters/{id}/storage`), and the run stores, in one
//! transaction ([`runs::complete`]):
//! - one sample per project whose storage was reported, keyed by (cluster, project, window)
//!   with an id derived from that key ([`sample_id`]), held for the whole window (bytes ×
//!   the window's seconds), attributed by project id to the project's creator and their owner
//!   at the window's start, whether or not the project runs pods;
//! - one `StorageRecordedV1` per new attributed sample, through the outbox: a window read
//!   again (a retry, another replica, a restart) adds nothing and announces nothing;
//! - one storage gap per project Hopsworks did not report (a directory without a quota has no
//!   usage there), never a sample of zero.
//!
//! A run that cannot read the cluster is tried again with the schedule's backoff; once its
//! tries are used up or its window has ended it is a gap of the whole cluster ([`runs::sweep`],
//! [`runs::failed`]), and nothing is announced for it.
//!
//! Online (RonDB) storage is not reported by Hopsworks' admin API; the samples carry it as 0
//! until it has a source (decision 0056).
//!
//! Under the gap policy `estimate` or `review` the windows and projects not measured are
//! estimated from each project's measured samples around them ([`estimates`], decision 0076).

pub mod api;
pub mod estimates;
pub mod meter;
pub mod runs;
pub mod views;

use hopsbridge_domain::{ClusterId, ProjectId, SampleId};
use hopsbridge_platform::config::ConfigError;
use serde::Deserialize;

/// How storage is measured.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Whether storage is measured at all.
    pub enabled: bool,
    /// Storage window length in seconds; it must divide a day (3600 by default).
    pub window_secs: u32,
    /// How far back windows are scheduled after metering was down, in seconds: each becomes a
    /// gap (a snapshot can only be taken inside its window).
    pub lookback_secs: u32,
    /// Clusters read at once by one replica.
    pub clusters_in_flight: usize,
}

impl StorageConfig {
    /// Checks the settings, naming the key at fault under `section`.
    ///
    /// # Errors
    /// A window that does not divide a day, or nothing read at once.
    pub fn validate(&self, section: &str) -> Result<(), (String, &'static str)> {
        if self.window_secs == 0 || 86_400 % self.window_secs != 0 {
            return Err((format!("{section}.window_secs"), "must divide a day (86400 s), e.g. 3600"));
        }
        if self.clusters_in_flight == 0 {
            return Err((format!("{section}.clusters_in_flight"), "must be at least 1"));
        }
        Ok(())
    }

    /// The settings' error for `service`.
    #[must_use]
    pub fn error(service: hopsbridge_contracts::Service, (key, why): (String, &'static str)) -> ConfigError {
        ConfigError::new(service, &key, why)
    }
}

/// The id of the storage sample of (`cluster`, `project`, window starting at `start`):
/// derived from the key (FNV-1a, 128 bits, as a version 8 UUID), so every replica and every
/// rerun names the same sample.
#[must_use]
pub fn sample_id(cluster: ClusterId, project: ProjectId, start: i64) -> SampleId {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    let cluster = uuid::Uuid::from(cluster);
    let key = [
        b"hopsbridge.storage-sample.v1".as_slice(),
        cluster.as_bytes(),
        &project.get().to_be_bytes(),
        &start.to_be_bytes(),
    ];
    for byte in key.iter().flat_map(|part| part.iter()) {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    let mut bytes = hash.to_be_bytes();
    // Version 8 (custom), RFC 9562 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    SampleId::from(uuid::Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_id_is_its_key_and_only_its_key() {
        let (a, b) = (ClusterId::from(uuid::Uuid::now_v7()), ClusterId::from(uuid::Uuid::now_v7()));
        let id = sample_id(a, ProjectId::new(119), 3600);
        assert_eq!(id, sample_id(a, ProjectId::new(119), 3600));
        assert_ne!(id, sample_id(b, ProjectId::new(119), 3600));
        assert_ne!(id, sample_id(a, ProjectId::new(120), 3600));
        assert_ne!(id, sample_id(a, ProjectId::new(119), 7200));
        assert_eq!(uuid::Uuid::from(id).get_version_num(), 8);
    }
}
