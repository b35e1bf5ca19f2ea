//! Each project's offline storage, as the admin projects list answers it with
//! `expand=quotas` (decision 0056): one call per page for every project of the cluster, with
//! the admin API key provisioning already holds.
//!
//! Hopsworks reads the figures from HopsFS' quota records of three directories: the project's
//! (`hdfsUsage`), its Hive database's (`hiveUsage`) and its feature store's offline database's
//! (`featurestoreUsage`), each in GiB as a 32-bit float. Its quirks, read here as they are:
//! - a directory without a quota has no record: its quota is `-1` and its usage is missing
//!   although it holds data. Such a project's storage is *unreported*, never zero;
//! - a project without Hive or without a feature store has no `hive*` or `featurestore*`
//!   fields at all: that part holds nothing;
//! - the float keeps 24 significant bits, so the bytes read back are the float's value times
//!   2^30, exactly what Hopsworks reported.

use super::{CallError, Hopsworks, describe};
use reqwest::Method;
use serde::Deserialize;

/// The quota figures of one project, as answered (GiB, or `-1` for no quota).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Quotas {
    hdfs_usage: Option<f64>,
    hdfs_quota: Option<f64>,
    hive_usage: Option<f64>,
    hive_quota: Option<f64>,
    featurestore_usage: Option<f64>,
    featurestore_quota: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Item {
    id: i64,
    name: String,
    namespace: String,
    #[serde(default)]
    creator: Option<super::ProjectCreator>,
    #[serde(default, rename = "projectQuotas")]
    quotas: Option<Quotas>,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    items: Vec<Item>,
    #[serde(default)]
    count: u64,
}

/// One project's offline storage as Hopsworks reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectStorage {
    /// Numeric project id.
    pub id: i64,
    /// Name as created.
    pub name: String,
    /// The project's Kubernetes namespace.
    pub namespace: String,
    /// The creator's Hopsworks username, when answered.
    pub creator_username: Option<String>,
    /// Bytes held offline, or why Hopsworks did not report them.
    pub offline: Result<u64, String>,
}

/// The bytes a float GiB figure stands for: the Java float's exact value times 2^30, in
/// integers (its mantissa shifted by its exponent; a fraction of a byte rounds half up).
/// `None` for a negative, infinite or not-a-number figure, or one beyond 2^64 bytes.
#[allow(clippy::cast_possible_truncation, reason = "the figure is a Java float: read back as one")]
fn gib_to_bytes(gib: f64) -> Option<u64> {
    let bits = (gib as f32).to_bits();
    let (negative, exponent, fraction) = (bits >> 31 == 1, (bits >> 23) & 0xff, u64::from(bits & 0x7f_ffff));
    if exponent == 0xff || (negative && bits << 1 != 0) {
        return None;
    }
    // value = mantissa × 2^(e − 150) GiB (e − 149 without the implicit bit when subnormal),
    // so bytes = mantissa × 2^(e − 120).
    let (mantissa, shift) = if exponent == 0 {
        (fraction, -119_i32)
    } else {
        (fraction | 0x80_0000, i32::try_from(exponent).unwrap_or(0) - 120)
    };
    if shift >= 0 {
        let shift = u32::try_from(shift).unwrap_or(u32::MAX);
        (shift <= 40).then(|| mantissa << shift)
    } else {
        let shift = shift.unsigned_abs();
        Some(if shift > 40 { 0 } else { (mantissa + (1 << (shift - 1))) >> shift })
    }
}

/// One part's bytes: its usage; nothing when the part does not exist (neither figure); not
/// reported when it has no quota record (quota `-1`, usage missing).
fn part(what: &str, usage: Option<f64>, quota: Option<f64>) -> Result<u64, String> {
    match (usage, quota) {
        (Some(usage), _) => gib_to_bytes(usage).ok_or_else(|| format!("{what} usage {usage} is not a size")),
        (None, None) => Ok(0),
        (None, Some(_)) => Err(format!("{what} has no quota, so Hopsworks reports no usage for it")),
    }
}

impl Quotas {
    fn offline_bytes(&self) -> Result<u64, String> {
        let project = match (self.hdfs_usage, self.hdfs_quota) {
            (None, _) => Err("the project directory has no quota, so Hopsworks reports no usage for it".to_owned()),
            (usage, quota) => part("the project directory", usage, quota),
        }?;
        let hive = part("the Hive database", self.hive_usage, self.hive_quota)?;
        let featurestore = part("the feature store", self.featurestore_usage, self.featurestore_quota)?;
        project
            .checked_add(hive)
            .and_then(|b| b.checked_add(featurestore))
            .ok_or_else(|| "the usage overflows".to_owned())
    }
}

impl Hopsworks {
    /// Every project of the cluster with its creator and offline storage, paged as
    /// [`Hopsworks::projects`] pages.
    ///
    /// # Errors
    /// [`CallError`] when a page is not answered.
    pub async fn project_storage(&self, page_size: u64) -> Result<Vec<ProjectStorage>, CallError> {
        const WHAT: &str = "read the projects' storage";
        let mut projects: std::collections::BTreeMap<i64, ProjectStorage> = std::collections::BTreeMap::new();
        let mut offset = 0_u64;
        loop {
            let mut url = self.url("admin/projects")?;
            url.query_pairs_mut()
                .append_pair("expand", "creator")
                .append_pair("expand", "quotas")
                .append_pair("offset", &offset.to_string())
                .append_pair("limit", &page_size.max(1).to_string());
            let (status, body) = self.send(WHAT, Method::GET, url, None).await?;
            if !status.is_success() {
                return Err(CallError(format!("{WHAT}: {}", describe(status, &body))));
            }
            let page: Page =
                serde_json::from_slice(&body).map_err(|e| CallError(format!("{WHAT}: unexpected answer: {e}")))?;
            let received = u64::try_from(page.items.len()).unwrap_or(u64::MAX);
            for item in page.items {
                let offline = item.quotas.as_ref().map_or_else(
                    || Err("Hopsworks answered no quotas for the project".to_owned()),
                    Quotas::offline_bytes,
                );
                projects.entry(item.id).or_insert(ProjectStorage {
                    id: item.id,
                    name: item.name,
                    namespace: item.namespace,
                    creator_username: item.creator.and_then(|c| c.username),
                    offline,
                });
            }
            offset = offset.saturating_add(received);
            if received == 0 || offset >= page.count {
                return Ok(projects.into_values().collect());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(v: serde_json::Value) -> Quotas {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn the_three_directories_add_up_and_missing_parts_hold_nothing() {
        let q =
            quotas(serde_json::json!({"hdfsUsage": 1.5, "hdfsQuota": 200.0, "hiveUsage": 0.25, "hiveQuota": 200.0}));
        assert_eq!(q.offline_bytes(), Ok(7 << 28), "1.5 GiB + 0.25 GiB");
        // Java prints a small float in its own notation; it is read back as that float.
        let tiny = quotas(serde_json::json!({"hdfsUsage": 9.313226e-10, "hdfsQuota": 200.0}));
        assert_eq!(tiny.offline_bytes(), Ok(1));
        assert_eq!(gib_to_bytes(0.0), Some(0));
        assert_eq!(gib_to_bytes(1024.0), Some(1 << 40));
        assert_eq!(gib_to_bytes(-1.0), None);
        assert_eq!(gib_to_bytes(f64::NAN), None);
    }

    #[test]
    fn a_directory_without_a_quota_is_unreported_not_zero() {
        let q = quotas(serde_json::json!({"hdfsQuota": -1.0, "hdfsNsQuota": -1}));
        assert!(q.offline_bytes().is_err());
        let hive = quotas(serde_json::json!({"hdfsUsage": 1.0, "hdfsQuota": 2.0, "hiveQuota": -1.0}));
        assert!(hive.offline_bytes().is_err());
    }
}
