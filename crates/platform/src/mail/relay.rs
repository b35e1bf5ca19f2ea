//! The mail relay: sends a service's due mails and records each outcome.
//!
//! A pass claims up to `mail.batch_size` due rows (`FOR UPDATE SKIP LOCKED`, so replicas share
//! the work) by moving their next attempt past a lease, commits, and only then talks to the
//! SMTP server or the webhook, so no transaction stays open across the network. A row whose
//! sender died mid-send becomes due again when its lease ends.

use super::MailConfig;
use super::outbox::{WEBHOOK_RECIPIENT, channel, channel_name};
use crate::config::DatabaseConfig;
use crate::db::{Database, DbError};
use crate::retry::Backoff;
use crate::schema::mail_outbox;
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures::StreamExt;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Sends one service's mail outbox. Several relays may run against the same table.
#[derive(Clone)]
pub struct MailRelay {
    db: Database,
    db_cfg: DatabaseConfig,
    cfg: MailConfig,
    smtp: AsyncSmtpTransport<Tokio1Executor>,
    http: reqwest::Client,
    from: Mailbox,
}

impl std::fmt::Debug for MailRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailRelay").field("schema", &self.db.schema()).finish_non_exhaustive()
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayPass {
    /// Mails accepted by the SMTP server or the webhook.
    pub sent: usize,
    /// Mails whose send failed; each is retried later.
    pub failed: usize,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = mail_outbox)]
struct Due {
    id: uuid::Uuid,
    channel: String,
    recipient: String,
    subject: String,
    text_body: String,
    html_body: Option<String>,
    attempts: i32,
}

impl MailRelay {
    /// A relay for the mail outbox in `db`'s schema.
    ///
    /// # Errors
    /// When the SMTP URL or the sender cannot be used (they are validated with the settings).
    pub fn new(db: Database, db_cfg: DatabaseConfig, cfg: MailConfig) -> anyhow::Result<Self> {
        let timeout = Duration::from_secs(cfg.timeout_secs);
        let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(cfg.smtp_url.expose())
            .map_err(|e| anyhow::anyhow!("mail.smtp_url: {e}"))?
            .timeout(Some(timeout))
            .build();
        let from: Mailbox = cfg.from.parse().map_err(|e| anyhow::anyhow!("mail.from: {e}"))?;
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { db, db_cfg, cfg, smtp, http, from })
    }

    /// Sends until `cancel` fires: at once when a transaction enqueues a mail, otherwise every
    /// `mail.poll_interval_ms` (which is also when retries become due).
    pub async fn run(self, cancel: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(crate::events::relay::listen(
            self.db_cfg.clone(),
            self.db.schema(),
            channel_name(self.db.schema()),
            Arc::clone(&wake),
            cancel.clone(),
        ));
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let full = usize::try_from(self.cfg.batch_size).unwrap_or(usize::MAX);
        let mut last_prune: Option<tokio::time::Instant> = None;
        while !cancel.is_cancelled() {
            let busy = match self.send_due().await {
                Ok(pass) => pass.sent + pass.failed >= full,
                Err(e) => {
                    tracing::warn!(error = %e, "mail relay pass failed");
                    false
                }
            };
            if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
                last_prune = Some(tokio::time::Instant::now());
                if let Err(e) = self.prune().await {
                    tracing::warn!(error = %e, "pruning sent mail failed");
                }
            }
            if !busy {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                }
            }
        }
        listener.abort();
    }

    /// One pass: claims the due mails, sends each, records what happened.
    ///
    /// # Errors
    /// When Postgres fails (a send's failure is recorded on its row instead).
    pub async fn send_due(&self) -> Result<RelayPass, DbError> {
        let due = self.claim().await?;
        let mut pass = RelayPass::default();
        let outcomes: Vec<(Due, Result<(), String>)> = futures::stream::iter(due)
            .map(|row| async move {
                let outcome = self.send(&row).await;
                (row, outcome)
            })
            .buffer_unordered(4)
            .collect()
            .await;
        let backoff = self.cfg.backoff();
        let mut conn = self.db.conn().await?;
        for (row, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    pass.sent += 1;
                    diesel::update(mail_outbox::table.find(row.id))
                        .set((mail_outbox::sent_at.eq(diesel::dsl::now), mail_outbox::last_error.eq(None::<String>)))
                        .execute(&mut conn)
                        .await?;
                }
                Err(error) => {
                    pass.failed += 1;
                    let attempts = row.attempts.saturating_add(1);
                    record_failure(&mut conn, &row, attempts, &error, &backoff).await?;
                    if attempts == self.cfg.failing_after_attempts {
                        tracing::error!(mail_id = %row.id, recipient = %row.recipient, attempts, error, "mail keeps failing; it stays queued and is listed as failing");
                    } else {
                        tracing::warn!(mail_id = %row.id, attempts, error, "mail not sent; will retry");
                    }
                }
            }
        }
        Ok(pass)
    }

    /// Takes the due rows no other relay holds, and leases them: their next attempt moves past
    /// the time a send can take.
    async fn claim(&self) -> Result<Vec<Due>, DbError> {
        let lease =
            chrono::Duration::seconds(i64::try_from(self.cfg.timeout_secs.saturating_mul(2) + 30).unwrap_or(90));
        let limit = self.cfg.batch_size;
        self.db
            .transaction::<_, DbError, _>(|c| {
                Box::pin(async move {
                    let due: Vec<Due> = mail_outbox::table
                        .filter(mail_outbox::sent_at.is_null())
                        .filter(mail_outbox::next_attempt_at.le(diesel::dsl::now))
                        .order(mail_outbox::next_attempt_at)
                        .limit(limit)
                        .for_update()
                        .skip_locked()
                        .select(Due::as_select())
                        .load(c)
                        .await?;
                    if !due.is_empty() {
                        let ids: Vec<uuid::Uuid> = due.iter().map(|d| d.id).collect();
                        diesel::update(mail_outbox::table.filter(mail_outbox::id.eq_any(ids)))
                            .set(mail_outbox::next_attempt_at.eq(Utc::now() + lease))
                            .execute(c)
                            .await?;
                    }
                    Ok(due)
                })
            })
            .await
    }

    async fn send(&self, row: &Due) -> Result<(), String> {
        match row.channel.as_str() {
            channel::EMAIL => self.send_email(row).await,
            channel::WEBHOOK => self.post_webhook(row).await,
            other => Err(format!("unknown channel '{other}'")),
        }
    }

    async fn send_email(&self, row: &Due) -> Result<(), String> {
        let to: Mailbox = row.recipient.parse().map_err(|e| format!("recipient: {e}"))?;
        let domain = self.from.email.domain().to_owned();
        let html = row.html_body.clone().unwrap_or_default();
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(row.subject.clone())
            .message_id(Some(format!("<{}@{domain}>", row.id)))
            .multipart(MultiPart::alternative_plain_html(row.text_body.clone(), html))
            .map_err(|e| format!("building the message: {e}"))?;
        self.smtp.send(message).await.map(drop).map_err(|e| e.to_string())
    }

    async fn post_webhook(&self, row: &Due) -> Result<(), String> {
        debug_assert_eq!(row.recipient, WEBHOOK_RECIPIENT);
        let url = self.cfg.admin_webhook_url.expose();
        if url.is_empty() {
            return Err("mail.admin_webhook_url is not configured".to_owned());
        }
        let body = serde_json::json!({ "text": slack_escape(&row.text_body) });
        let response = self.http.post(url).json(&body).send().await.map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(format!("the webhook answered {status}")) }
    }

    /// Deletes sent mails older than `mail.retention_days`.
    async fn prune(&self) -> Result<usize, DbError> {
        let days = i64::try_from(self.cfg.retention_days).unwrap_or(i64::MAX / 86_400);
        let cutoff = Utc::now() - chrono::Duration::days(days);
        let mut conn = self.db.conn().await?;
        Ok(diesel::delete(mail_outbox::table.filter(mail_outbox::sent_at.lt(cutoff))).execute(&mut conn).await?)
    }
}

async fn record_failure(
    conn: &mut diesel_async::AsyncPgConnection,
    row: &Due,
    attempts: i32,
    error: &str,
    backoff: &Backoff,
) -> Result<(), DbError> {
    let retry = u32::try_from(row.attempts).unwrap_or(0);
    let delay = chrono::Duration::from_std(backoff.delay(retry)).unwrap_or(chrono::Duration::hours(1));
    let error: String = error.chars().take(1_000).collect();
    diesel::update(mail_outbox::table.find(row.id))
        .set((
            mail_outbox::attempts.eq(attempts),
            mail_outbox::next_attempt_at.eq(Utc::now() + delay),
            mail_outbox::last_error.eq(error),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Escapes the three characters Slack's message formatting gives a meaning to (`&`, `<`, `>`),
/// as Slack documents for text sent to incoming webhooks.
fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::slack_escape;

    #[test]
    fn slack_text_escapes_its_control_characters_only() {
        assert_eq!(slack_escape("a <b> & \"c\" *d*"), "a &lt;b&gt; &amp; \"c\" *d*");
    }
}
