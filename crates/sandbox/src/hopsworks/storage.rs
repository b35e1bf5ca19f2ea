//! The storage each project holds, as the admin projects list answers it with
//! `expand=quotas` (`GET /admin/projects?expand=quotas`): a `projectQuotas` object per
//! project, as Hopsworks' `ProjectQuotasController.getQuotas` builds it (decision 0056).
//!
//! Faithful to Hopsworks 4.x:
//! - storage is read from the HopsFS directories' quota records: the project's directory
//!   (`hdfs*`), its Hive database (`hive*`) and its feature store's offline database
//!   (`featurestore*`). Usage and quota are **GiB as a 32-bit float** (`bytes / 1073741824f`,
//!   the long first rounded to a float), so a figure is exact to 24 significant bits; the
//!   namespace figures are counts of files and directories;
//! - a directory without a quota has no quota record: its quota is answered `-1.0` (and its
//!   namespace quota `-1`) and its **usage is missing**, although it holds data;
//! - a project without a Hive database has no `hive*` fields, one without a feature store no
//!   `featurestore*` fields; fields without a value are omitted, as Hopsworks' JSON omits
//!   nulls;
//! - `kafkaNumTopics` and `kafkaMaxNumTopics` come with every project;
//! - online feature store (RonDB) storage is not part of this answer: Hopsworks reports it only
//!   to the project's members, in the feature store's `onlineFeaturestoreSize`.
//!
//! Tests and the sandbox set each project's storage now or from a time on
//! ([`HopsworksSim::set_storage`](super::HopsworksSim::set_storage),
//! [`HopsworksSim::set_storage_at`](super::HopsworksSim::set_storage_at)), on the simulated
//! clock when one is given ([`HopsworksSim::use_clock`](super::HopsworksSim::use_clock)), and
//! fail reads with the [`Route::ProjectQuotas`](super::Route::ProjectQuotas) faults.

use super::{HopsworksError, HopsworksSim, lock, project_not_found};
use crate::clock::SimClock;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The quota a new project's directories get: what a deployment sets with
/// `hdfs_default_quota_mbs` and its Hive and feature store counterparts (here 200 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 200 << 30;

/// One directory's storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directory {
    /// Bytes stored (HopsFS' storage space consumed).
    pub bytes: u64,
    /// Files and directories in it.
    pub files: u64,
    /// Its space quota; `None`: no quota is set, and Hopsworks answers no usage for it.
    pub quota_bytes: Option<u64>,
}

impl Directory {
    /// `bytes` in one file, under the default quota.
    #[must_use]
    pub const fn holding(bytes: u64) -> Self {
        Self { bytes, files: 1, quota_bytes: Some(DEFAULT_QUOTA_BYTES) }
    }

    /// Without a quota: its usage goes unreported.
    #[must_use]
    pub const fn without_quota(self) -> Self {
        Self { quota_bytes: None, ..self }
    }

    /// The bytes a client reads back from the answer: the usage as Hopsworks' float rounds it,
    /// or `None` when it is not answered.
    #[must_use]
    pub fn reported_bytes(&self) -> Option<u64> {
        self.quota_bytes.map(|_| gib_to_bytes(bytes_to_gib(self.bytes)))
    }
}

/// A project's offline storage: its directory, its Hive database and its feature store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectStorage {
    /// `/Projects/{name}`: the project's datasets.
    pub project: Directory,
    /// `/apps/hive/warehouse/{name}.db`, when the project has the Hive service.
    pub hive: Option<Directory>,
    /// `/apps/hive/warehouse/{name}_featurestore.db`, when the project has a feature store.
    pub featurestore: Option<Directory>,
}

impl ProjectStorage {
    /// A new project's: empty directories for the project, Hive and the feature store, under
    /// the default quota.
    #[must_use]
    pub const fn empty() -> Self {
        Self::of(0, Some(0), Some(0))
    }

    /// The given bytes in the project's directory, Hive database and feature store (`None`:
    /// the project has none), each under the default quota.
    #[must_use]
    pub const fn of(project: u64, hive: Option<u64>, featurestore: Option<u64>) -> Self {
        Self {
            project: Directory::holding(project),
            hive: match hive {
                Some(b) => Some(Directory::holding(b)),
                None => None,
            },
            featurestore: match featurestore {
                Some(b) => Some(Directory::holding(b)),
                None => None,
            },
        }
    }

    /// The offline bytes a client reads back from the answer (the three directories' usage as
    /// Hopsworks' float rounds each), or `None` when a directory that exists has no quota and
    /// so no usage.
    #[must_use]
    pub fn reported_offline_bytes(&self) -> Option<u64> {
        let mut total = self.project.reported_bytes()?;
        for dir in [self.hive, self.featurestore].into_iter().flatten() {
            total += dir.reported_bytes()?;
        }
        Some(total)
    }
}

/// `bytes / 1073741824f` as Java computes it: the long rounded to a float, then divided by
/// 2^30 (exact: the exponent moves down by 30, and a whole number of bytes stays normal).
#[allow(clippy::cast_precision_loss, reason = "the rounding to a float is the quirk simulated")]
fn bytes_to_gib(bytes: u64) -> f32 {
    if bytes == 0 {
        return 0.0;
    }
    f32::from_bits((bytes as f32).to_bits() - (30 << 23))
}

/// The bytes a float GiB figure stands for: the float's exact value times 2^30, which is the
/// long as the float rounded it.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a whole, non-negative float")]
fn gib_to_bytes(gib: f32) -> u64 {
    if gib.to_bits() == 0 {
        return 0;
    }
    f32::from_bits(gib.to_bits() + (30 << 23)) as u64
}

/// The quota figure of a directory: GiB, or `-1.0` without a quota.
fn quota_json(dir: &Directory) -> Value {
    dir.quota_bytes.map_or_else(|| json!(-1.0_f32), |q| json!(bytes_to_gib(q)))
}

/// Adds one directory's four fields under `prefix` (`hdfs`, `hive`, `featurestore`).
fn put(map: &mut Map<String, Value>, prefix: &str, dir: &Directory) {
    map.insert(format!("{prefix}Quota"), quota_json(dir));
    if dir.quota_bytes.is_some() {
        map.insert(format!("{prefix}Usage"), json!(bytes_to_gib(dir.bytes)));
        map.insert(format!("{prefix}NsCount"), json!(dir.files));
    }
    map.insert(format!("{prefix}NsQuota"), json!(-1));
}

/// The `projectQuotas` object of a project holding `storage`.
pub(super) fn quotas_json(storage: &ProjectStorage) -> Value {
    let mut map = Map::new();
    put(&mut map, "hdfs", &storage.project);
    if let Some(hive) = &storage.hive {
        put(&mut map, "hive", hive);
    }
    if let Some(fs) = &storage.featurestore {
        put(&mut map, "featurestore", fs);
    }
    map.insert("kafkaNumTopics".to_owned(), json!(0));
    map.insert("kafkaMaxNumTopics".to_owned(), json!(100));
    Value::Object(map)
}

/// A project's storage over time: changes in the order of their times.
#[derive(Clone, Debug, Default)]
pub(super) struct Timeline {
    changes: Vec<(i64, ProjectStorage)>,
}

impl Timeline {
    /// From `at` (Unix seconds) on, the project holds `storage`.
    pub(super) fn set(&mut self, at: i64, storage: ProjectStorage) {
        self.changes.retain(|(t, _)| *t != at);
        let i = self.changes.partition_point(|(t, _)| *t < at);
        self.changes.insert(i, (at, storage));
    }

    /// What it holds at `at`: the last change at or before it, else an empty project's.
    pub(super) fn at(&self, at: i64) -> ProjectStorage {
        self.changes.iter().rev().find(|(t, _)| *t <= at).map_or_else(ProjectStorage::empty, |(_, s)| *s)
    }
}

impl HopsworksSim {
    /// Reads storage on `clock` from now on (and the times given to
    /// [`set_storage_at`](Self::set_storage_at) are its times).
    pub fn use_clock(&self, clock: Arc<SimClock>) {
        *lock(&self.inner.clock) = Some(clock);
    }

    /// From now on the project holds `storage`.
    ///
    /// # Errors
    /// Unknown project.
    pub fn set_storage(&self, project_id: u64, storage: ProjectStorage) -> Result<(), HopsworksError> {
        self.set_storage_at(project_id, self.inner.now(), storage)
    }

    /// From `at` (Unix seconds) on the project holds `storage`, until a later change.
    ///
    /// # Errors
    /// Unknown project.
    pub fn set_storage_at(&self, project_id: u64, at: i64, storage: ProjectStorage) -> Result<(), HopsworksError> {
        let mut state = lock(&self.inner.state);
        if !state.projects.iter().any(|p| p.id == project_id) {
            return Err(project_not_found());
        }
        state.storage.entry(project_id).or_default().set(at, storage);
        Ok(())
    }

    /// What the project holds at `at` (Unix seconds), when it exists.
    #[must_use]
    pub fn storage_at(&self, project_id: u64, at: i64) -> Option<ProjectStorage> {
        let state = lock(&self.inner.state);
        state
            .projects
            .iter()
            .any(|p| p.id == project_id)
            .then(|| state.storage.get(&project_id).map_or_else(ProjectStorage::empty, |t| t.at(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_float_gib_keeps_24_significant_bits() {
        let exact = Directory::holding(1 << 40);
        assert_eq!(exact.reported_bytes(), Some(1 << 40));
        // 2^30 + 1 needs 31 bits: the float drops the last byte.
        assert_eq!(Directory::holding((1 << 30) + 1).reported_bytes(), Some(1 << 30));
        assert_eq!(Directory::holding(123).reported_bytes(), Some(123));
        assert_eq!(Directory::holding(5).without_quota().reported_bytes(), None);
    }

    #[test]
    fn a_directory_without_a_quota_answers_no_usage() {
        let storage = ProjectStorage { project: Directory::holding(7).without_quota(), hive: None, featurestore: None };
        let v = quotas_json(&storage);
        assert_eq!(v["hdfsQuota"], json!(-1.0));
        assert!(v.get("hdfsUsage").is_none());
        assert!(v.get("hiveQuota").is_none() && v.get("featurestoreUsage").is_none());
        assert_eq!(storage.reported_offline_bytes(), None);
    }

    #[test]
    fn the_timeline_answers_the_last_change_before() {
        let mut t = Timeline::default();
        t.set(100, ProjectStorage::of(1, None, None));
        t.set(50, ProjectStorage::of(2, None, None));
        assert_eq!(t.at(10), ProjectStorage::empty());
        assert_eq!(t.at(50).project.bytes, 2);
        assert_eq!(t.at(99).project.bytes, 2);
        assert_eq!(t.at(100).project.bytes, 1);
    }
}
