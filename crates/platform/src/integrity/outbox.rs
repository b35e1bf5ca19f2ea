//! `outbox_draining`: the check every data service runs on its own outboxes.

use super::{Check, Finding};
use crate::db::Database;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use futures::future::BoxFuture;

/// Events in the outbox unpublished, and mails due but unsent, for longer than `max_age_secs`:
/// one finding per event type (`outbox/<event type>`) and per mail kind
/// (`mail_outbox/<kind>`).
#[derive(Clone, Debug)]
pub struct OutboxDraining {
    /// How long a row may wait, in seconds.
    pub max_age_secs: u64,
}

#[derive(QueryableByName)]
struct Stuck {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = Timestamptz)]
    oldest: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

impl OutboxDraining {
    async fn look(&self, db: &Database) -> anyhow::Result<Vec<Finding>> {
        let age = i64::try_from(self.max_age_secs)?;
        let mut conn = db.conn().await?;
        let events: Vec<Stuck> = diesel::sql_query(
            "SELECT event_type AS kind, count(*) AS count, min(created_at) AS oldest, \
                 (array_agg(last_error ORDER BY created_at) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error \
             FROM outbox WHERE published_at IS NULL AND created_at <= now() - make_interval(secs => $1) \
             GROUP BY event_type ORDER BY event_type",
        )
        .bind::<BigInt, _>(age)
        .load(&mut conn)
        .await?;
        let mails: Vec<Stuck> = diesel::sql_query(
            "SELECT kind, count(*) AS count, min(next_attempt_at) AS oldest, \
                 (array_agg(last_error ORDER BY next_attempt_at) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error \
             FROM mail_outbox WHERE sent_at IS NULL AND next_attempt_at <= now() - make_interval(secs => $1) \
             GROUP BY kind ORDER BY kind",
        )
        .bind::<BigInt, _>(age)
        .load(&mut conn)
        .await?;
        let error = |e: &Option<String>| e.as_deref().map(|e| format!(" The last error: {e}.")).unwrap_or_default();
        let mut findings: Vec<Finding> = events
            .iter()
            .map(|s| {
                Finding::new(
                    format!("outbox/{}", s.kind),
                    format!("outbox events {}", s.kind),
                    format!(
                        "{} {} event(s) not published to NATS for more than {}s (the oldest since {}).{} \
                         Check that NATS is reachable and the outbox relay runs (its logs, \
                         hopsbridge_events_outbox_depth).",
                        s.count,
                        s.kind,
                        self.max_age_secs,
                        s.oldest.format("%Y-%m-%d %H:%M:%S UTC"),
                        error(&s.last_error)
                    ),
                )
            })
            .collect();
        findings.extend(mails.iter().map(|s| {
            Finding::new(
                format!("mail_outbox/{}", s.kind),
                format!("mail outbox {}", s.kind),
                format!(
                    "{} {} mail(s) due for more than {}s and not sent (due since {}).{} \
                     Check the SMTP server or admin webhook and the mail relay (its logs, \
                     GET /api/admin/mail/<service>).",
                    s.count,
                    s.kind,
                    self.max_age_secs,
                    s.oldest.format("%Y-%m-%d %H:%M:%S UTC"),
                    error(&s.last_error)
                ),
            )
        }));
        Ok(findings)
    }
}

impl Check for OutboxDraining {
    fn name(&self) -> &str {
        "outbox_draining"
    }

    fn run<'a>(&'a self, db: &'a Database) -> BoxFuture<'a, anyhow::Result<Vec<Finding>>> {
        Box::pin(self.look(db))
    }
}
