//! Storage into the ledger (decision 0057): each `StorageRecordedV1` (one Hopsworks project's
//! offline and online storage in one window) is a sample of the two storage resources, billed
//! per GB-month to the project's owner at measurement time, through the same ledger as usage:
//! once by `sample_id` (and day), priced by the versions in force at its window's start,
//! deducted from prepaid credits per window with the same hybrid overflow, reported to Stripe
//! per owner, day and price version.

use crate::ledger::{self, Ledger, Sample, Source};
use chrono::DateTime;
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::StorageRecordedV1;
use hopsbridge_domain::EventId;
use hopsbridge_platform::events::{Handler, HandlerError, InBatch, ReceivedEvent};
use uuid::Uuid;

impl Sample {
    /// The sample a `StorageRecordedV1` announces: its byte-seconds as the storage resources'
    /// usage (the compute resources' zero), billed to `owner_user_id`, shown as `user_id`'s
    /// (the project's creator).
    ///
    /// # Errors
    /// Why the event can never be ledgered: a field that is no id or time, no project, a
    /// window the ledger does not take, or byte-seconds that are not the bytes times the
    /// window's seconds.
    pub fn from_storage(id: Option<EventId>, e: &StorageRecordedV1) -> Result<Self, String> {
        let uuid = |field: &str, v: &str| v.parse::<Uuid>().map_err(|_| format!("{field} is not a UUID: {v:?}"));
        let at = |field: &str, secs: i64| {
            DateTime::from_timestamp(secs, 0).ok_or_else(|| format!("{field} {secs} is no time"))
        };
        if e.project_id <= 0 {
            return Err(format!("storage sample {} names no project ({})", e.sample_id, e.project_id));
        }
        let sample = Self {
            sample_id: uuid("sample_id", &e.sample_id)?,
            event_id: id,
            user: uuid("user_id", &e.user_id)?.into(),
            owner: uuid("owner_user_id", &e.owner_user_id)?.into(),
            cluster: uuid("cluster_id", &e.cluster_id)?.into(),
            namespace: e.namespace.clone(),
            project_id: Some(e.project_id),
            window_start: at("window_start", e.window_start_unix_seconds)?,
            window_end: at("window_end", e.window_end_unix_seconds)?,
            usage: [0, 0, 0, e.offline_byte_seconds, e.online_byte_seconds],
            estimated: e.estimated,
            source: Source::Storage,
        }
        .checked()?;
        let secs = u64::try_from((sample.window_end - sample.window_start).num_seconds()).unwrap_or(0);
        for (field, bytes, byte_seconds) in
            [("offline", e.offline_bytes, e.offline_byte_seconds), ("online", e.online_bytes, e.online_byte_seconds)]
        {
            if bytes.checked_mul(secs) != Some(byte_seconds) {
                return Err(format!(
                    "storage sample {}: {field}_byte_seconds {byte_seconds} is not {field}_bytes {bytes} × {secs} s",
                    e.sample_id
                ));
            }
            if i64::try_from(byte_seconds).is_err() {
                return Err(format!(
                    "storage sample {}: {field}_byte_seconds {byte_seconds} does not fit",
                    e.sample_id
                ));
            }
        }
        Ok(sample)
    }
}

impl Handler<StorageRecordedV1> for Ledger {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<StorageRecordedV1>,
    ) -> Result<(), HandlerError> {
        let sample = Sample::from_storage(Some(event.id), &event.payload).map_err(HandlerError::Reject)?;
        ledger::ingest(conn, self.settings(), vec![sample]).await?;
        Ok(())
    }

    async fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[InBatch<'_, StorageRecordedV1>],
    ) -> Result<(), HandlerError> {
        let samples = events
            .iter()
            .map(|e| Sample::from_storage(Some(e.event.id), &e.event.payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandlerError::Reject)?;
        ledger::ingest(conn, self.settings(), samples).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn event(bytes: (u64, u64)) -> StorageRecordedV1 {
        let start = 1_798_761_600;
        StorageRecordedV1 {
            sample_id: Uuid::now_v7().to_string(),
            cluster_id: Uuid::now_v7().to_string(),
            project_id: 119,
            namespace: "fraud".into(),
            owner_user_id: Uuid::now_v7().to_string(),
            user_id: Uuid::now_v7().to_string(),
            window_start_unix_seconds: start,
            window_end_unix_seconds: start + 3_600,
            offline_bytes: bytes.0,
            online_bytes: bytes.1,
            offline_byte_seconds: bytes.0 * 3_600,
            online_byte_seconds: bytes.1 * 3_600,
            measured_at_unix_seconds: start + 60,
            estimated: true,
        }
    }

    #[test]
    fn a_storage_sample_is_usage_of_the_two_storage_resources() {
        let e = event((5_000_000_000, 7));
        let s = Sample::from_storage(None, &e).unwrap();
        assert_eq!(s.usage, [0, 0, 0, 18_000_000_000_000, 25_200]);
        assert_eq!((s.project_id, s.estimated, s.source), (Some(119), true, Source::Storage));
        assert_eq!(s.owner.to_string(), e.owner_user_id);
        assert_eq!(s.user.to_string(), e.user_id);
        assert_eq!(s.days().len(), 1);
    }

    #[test]
    fn a_malformed_storage_sample_is_refused_with_its_reason() {
        let mut e = event((1, 2));
        e.online_byte_seconds += 1;
        assert!(Sample::from_storage(None, &e).unwrap_err().contains("online_byte_seconds"));
        let mut e = event((1, 2));
        e.project_id = 0;
        assert!(Sample::from_storage(None, &e).unwrap_err().contains("no project"));
        let mut e = event((1, 2));
        e.window_end_unix_seconds = e.window_start_unix_seconds;
        assert!(Sample::from_storage(None, &e).unwrap_err().contains("lasts 0 s"));
        let mut e = event((u64::MAX / 3_600, 0));
        e.offline_byte_seconds = e.offline_bytes * 3_600;
        assert!(Sample::from_storage(None, &e).unwrap_err().contains("does not fit"));
        let mut e = event((1, 2));
        e.owner_user_id = "someone".into();
        assert!(Sample::from_storage(None, &e).unwrap_err().contains("owner_user_id"));
    }
}
