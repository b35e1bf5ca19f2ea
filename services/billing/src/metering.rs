//! What billing asks metering for over its internal API (decisions 0038 and 0064): attributed
//! usage and storage samples by window, for backfill, and usage and storage per owner and day,
//! for reconciliation. Requests are signed with billing's own key, as the billing service
//! (decision 0053).

use crate::config::MeteringApiConfig;
use crate::ledger::Sample;
use chrono::{DateTime, NaiveDate, Utc};
use hopsbridge_contracts::Service;
use hopsbridge_domain::{ClusterId, OwnerId, UserId};
use hopsbridge_platform::caller::{Caller, CallerSigner};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use uuid::Uuid;

/// metering did not answer as asked.
#[derive(Debug, thiserror::Error)]
#[error("metering: {0}")]
pub struct MeteringError(pub String);

/// A client of metering's internal API.
#[derive(Clone, Debug)]
pub struct Metering {
    http: reqwest::Client,
    base: String,
    key: CallerSigner,
    /// Samples asked for per page.
    pub page_size: u32,
}

/// One sample as metering's `/internal/samples` answers it.
#[derive(Debug, Clone, Deserialize)]
pub struct SampleRecord {
    sample_id: Uuid,
    cluster_id: ClusterId,
    namespace: String,
    user_id: UserId,
    owner_user_id: OwnerId,
    window_start_unix_seconds: i64,
    window_end_unix_seconds: i64,
    estimated: bool,
    project_id: i64,
    cpu_nanocore_seconds: u64,
    memory_byte_seconds: u64,
    gpu_seconds: u64,
}

impl SampleRecord {
    /// The sample the ledger takes.
    ///
    /// # Errors
    /// When the record cannot be ledgered (as a bad event is rejected).
    pub fn to_sample(&self) -> Result<Sample, String> {
        let event = hopsbridge_contracts::events::UsageRecordedV1 {
            sample_id: self.sample_id.to_string(),
            cluster_id: self.cluster_id.to_string(),
            namespace: self.namespace.clone(),
            user_id: self.user_id.to_string(),
            owner_user_id: self.owner_user_id.to_string(),
            window_start_unix_seconds: self.window_start_unix_seconds,
            window_end_unix_seconds: self.window_end_unix_seconds,
            estimated: self.estimated,
            project_id: self.project_id,
            cpu_nanocore_seconds: self.cpu_nanocore_seconds,
            memory_byte_seconds: self.memory_byte_seconds,
            gpu_seconds: self.gpu_seconds,
            ..Default::default()
        };
        Sample::from_event(None, &event)
    }
}

/// One storage sample as metering's `/internal/storage-samples` answers it.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageRecord {
    sample_id: Uuid,
    cluster_id: ClusterId,
    project_id: i64,
    namespace: String,
    user_id: UserId,
    owner_user_id: OwnerId,
    window_start_unix_seconds: i64,
    window_end_unix_seconds: i64,
    offline_bytes: u64,
    online_bytes: u64,
    offline_byte_seconds: u64,
    online_byte_seconds: u64,
    measured_at_unix_seconds: i64,
    estimated: bool,
}

impl StorageRecord {
    /// The sample the ledger takes: the `StorageRecordedV1` metering announced for it, checked
    /// as the consumer checks it.
    ///
    /// # Errors
    /// When the record cannot be ledgered (as a bad event is rejected).
    pub fn to_sample(&self) -> Result<Sample, String> {
        let event = hopsbridge_contracts::events::StorageRecordedV1 {
            sample_id: self.sample_id.to_string(),
            cluster_id: self.cluster_id.to_string(),
            project_id: self.project_id,
            namespace: self.namespace.clone(),
            owner_user_id: self.owner_user_id.to_string(),
            user_id: self.user_id.to_string(),
            window_start_unix_seconds: self.window_start_unix_seconds,
            window_end_unix_seconds: self.window_end_unix_seconds,
            offline_bytes: self.offline_bytes,
            online_bytes: self.online_bytes,
            offline_byte_seconds: self.offline_byte_seconds,
            online_byte_seconds: self.online_byte_seconds,
            measured_at_unix_seconds: self.measured_at_unix_seconds,
            estimated: self.estimated,
        };
        Sample::from_storage(None, &event)
    }
}

/// A page of metering's records.
#[derive(Debug, Deserialize)]
pub struct RecordPage<R> {
    /// The records.
    pub samples: Vec<R>,
    /// The next page's cursor.
    pub next: Option<String>,
}

/// Which samples a backfill pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    /// CPU, memory and GPUs (`UsageRecordedV1`).
    Usage,
    /// Storage per project (`StorageRecordedV1`).
    Storage,
}

impl SampleKind {
    /// Both, in the order a backfill pulls them.
    pub const ALL: [Self; 2] = [Self::Usage, Self::Storage];

    const fn path(self) -> &'static str {
        match self {
            Self::Usage => "/internal/samples",
            Self::Storage => "/internal/storage-samples",
        }
    }
}

/// A page of samples, each as the ledger takes it or why it cannot.
#[derive(Debug)]
pub struct SamplePage {
    /// The samples.
    pub samples: Vec<Result<Sample, String>>,
    /// The next page's cursor.
    pub next: Option<String>,
}

/// One owner's usage on one day, as metering adds it up.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct OwnerDay {
    /// The owner.
    pub owner_user_id: OwnerId,
    /// Nanocore-seconds.
    pub cpu_nanocore_seconds: i64,
    /// Byte-seconds.
    pub memory_byte_seconds: i64,
    /// GPU-seconds.
    pub gpu_seconds: i64,
    /// Offline storage byte-seconds.
    pub storage_offline_byte_seconds: i64,
    /// Online storage byte-seconds.
    pub storage_online_byte_seconds: i64,
}

#[derive(Debug, Deserialize)]
struct DailyOwners {
    owners: Vec<OwnerDay>,
}

impl Metering {
    /// A client of the API at `cfg.url`, signing with `key`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: &MeteringApiConfig, key: CallerSigner) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_millis(cfg.timeout_ms)).build()?;
        Ok(Self { http, base: cfg.url.trim_end_matches('/').to_owned(), key, page_size: cfg.page_size })
    }

    async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, MeteringError> {
        let caller = Caller::service(Service::Billing);
        // A signature's age is a relative timer, checked against the receiver's wall clock.
        let headers = self.key.sign("GET", path_and_query, &caller, Utc::now().timestamp());
        let mut request = self.http.get(format!("{}{path_and_query}", self.base));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| MeteringError(format!("unreachable: {}", e.without_url())))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(MeteringError(format!("answered {status}: {body}")));
        }
        response.json().await.map_err(|e| MeteringError(format!("unreadable answer: {}", e.without_url())))
    }

    /// The attributed samples of `kind` whose window starts in `[from, to)`, after `after`.
    ///
    /// # Errors
    /// When metering does not answer.
    pub async fn samples(
        &self,
        kind: SampleKind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<&str>,
    ) -> Result<SamplePage, MeteringError> {
        let mut query = vec![
            ("from", from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ("to", to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ("limit", self.page_size.to_string()),
        ];
        if let Some(a) = after {
            query.push(("after", a.to_owned()));
        }
        let query = serde_urlencoded::to_string(&query).map_err(|e| MeteringError(e.to_string()))?;
        let path = format!("{}?{query}", kind.path());
        Ok(match kind {
            SampleKind::Usage => {
                let page: RecordPage<SampleRecord> = self.get(&path).await?;
                SamplePage { samples: page.samples.iter().map(SampleRecord::to_sample).collect(), next: page.next }
            }
            SampleKind::Storage => {
                let page: RecordPage<StorageRecord> = self.get(&path).await?;
                SamplePage { samples: page.samples.iter().map(StorageRecord::to_sample).collect(), next: page.next }
            }
        })
    }

    /// Every owner's usage and storage on `day` (windows starting that day).
    ///
    /// # Errors
    /// When metering does not answer.
    pub async fn daily(&self, day: NaiveDate) -> Result<Vec<OwnerDay>, MeteringError> {
        let answer: DailyOwners = self.get(&format!("/internal/usage/daily?day={day}")).await?;
        Ok(answer.owners)
    }
}
