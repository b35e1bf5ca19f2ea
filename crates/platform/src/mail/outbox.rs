//! The mail outbox table: what is written in a service's transaction, and what admins see.

use super::{MailConfig, MailTemplate, Rendered};
use crate::db::DbError;
use crate::schema::mail_outbox;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::Email;
use serde::Serialize;

/// An alert for the platform's admins: sent by email to `mail.admin_addresses` and posted to
/// `mail.admin_webhook_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// One line saying what happened, e.g. "Usage drift for 3 owner-days".
    pub title: String,
    /// What an admin needs to act, one fact per line.
    pub lines: Vec<String>,
    /// Where in the admin console to look, if anywhere.
    pub link: Option<String>,
}

/// Where a mail is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MailStatus {
    /// Waiting for its first send, or for a retry.
    Pending,
    /// Failed at least `mail.failing_after_attempts` times; still retried.
    Failing,
    /// Accepted by the SMTP server or the webhook.
    Sent,
}

/// A mail as admins see it (bodies left out).
#[derive(Clone, Debug, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = mail_outbox)]
pub struct MailRow {
    /// The mail's id, also its `Message-ID`.
    pub id: uuid::Uuid,
    /// Its deduplication key.
    pub dedup_key: String,
    /// The template, e.g. `team.invitation`.
    pub kind: String,
    /// `email` or `webhook`.
    pub channel: String,
    /// The address, or `admin-webhook`.
    pub recipient: String,
    /// The subject.
    pub subject: String,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Failed sends so far.
    pub attempts: i32,
    /// When it is tried next (while not sent).
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last send failed.
    pub last_error: Option<String>,
    /// When it was accepted.
    pub sent_at: Option<DateTime<Utc>>,
}

/// What writing a mail can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A template did not render.
    #[error("mail template: {0}")]
    Render(String),
    /// The mail settings are unusable (they are validated at start, so this is a bug).
    #[error("mail settings: {0}")]
    Config(String),
}

impl crate::db::RetryableError for MailError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}

/// The channel names stored in `mail_outbox.channel`.
pub(super) mod channel {
    pub const EMAIL: &str = "email";
    pub const WEBHOOK: &str = "webhook";
}

/// The recipient recorded for webhook posts.
pub(super) const WEBHOOK_RECIPIENT: &str = "admin-webhook";

/// Writes `mail` for `to` into the outbox, unless a mail with `dedup_key` is already there.
/// Call it in the transaction that makes the change the mail tells of. Returns whether it was
/// added.
///
/// # Errors
/// When Postgres fails.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    dedup_key: &str,
    to: &Email,
    mail: &Rendered,
) -> Result<bool, DbError> {
    let added = insert(conn, dedup_key, channel::EMAIL, to.as_str(), mail, Some(&mail.html)).await?;
    if added {
        notify(conn).await?;
    }
    Ok(added)
}

/// Writes `alert` for every admin address and for the admin webhook (whichever are
/// configured), each once per `dedup_key`. Returns how many deliveries were added.
///
/// # Errors
/// When Postgres fails, or the alert's templates do not render.
pub async fn enqueue_alert(
    conn: &mut AsyncPgConnection,
    cfg: &MailConfig,
    dedup_key: &str,
    alert: &Alert,
) -> Result<usize, MailError> {
    let mail = alert.render().map_err(|e| MailError::Render(e.to_string()))?;
    let admins = cfg.admins().map_err(MailError::Config)?;
    let mut added = 0;
    for admin in &admins {
        let key = format!("{dedup_key}:email:{admin}");
        if insert(conn, &key, channel::EMAIL, admin.as_str(), &mail, Some(&mail.html)).await? {
            added += 1;
        }
    }
    if !cfg.admin_webhook_url.expose().is_empty() {
        let key = format!("{dedup_key}:webhook");
        if insert(conn, &key, channel::WEBHOOK, WEBHOOK_RECIPIENT, &mail, None).await? {
            added += 1;
        }
    }
    if admins.is_empty() && cfg.admin_webhook_url.expose().is_empty() {
        tracing::warn!(dedup_key, title = %alert.title, "admin alert with no admin address or webhook configured");
    }
    if added > 0 {
        notify(conn).await?;
    }
    Ok(added)
}

async fn insert(
    conn: &mut AsyncPgConnection,
    dedup_key: &str,
    channel: &str,
    recipient: &str,
    mail: &Rendered,
    html: Option<&str>,
) -> Result<bool, DbError> {
    let rows = diesel::insert_into(mail_outbox::table)
        .values((
            mail_outbox::id.eq(uuid::Uuid::now_v7()),
            mail_outbox::dedup_key.eq(dedup_key),
            mail_outbox::kind.eq(mail.kind),
            mail_outbox::channel.eq(channel),
            mail_outbox::recipient.eq(recipient),
            mail_outbox::subject.eq(&mail.subject),
            mail_outbox::text_body.eq(&mail.text),
            mail_outbox::html_body.eq(html),
        ))
        .on_conflict(mail_outbox::dedup_key)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(rows == 1)
}

/// Wakes this schema's mail relay when the transaction commits.
async fn notify(conn: &mut AsyncPgConnection) -> Result<(), DbError> {
    // The channel is named after the schema the connection works in, which the relay knows as
    // its service's; pg_notify takes the name as a value, so no identifier is built here.
    diesel::sql_query("SELECT pg_notify('hopsbridge_mail_' || current_schema(), '')").execute(conn).await?;
    Ok(())
}

/// The NOTIFY channel of `schema`'s mail relay.
pub(super) fn channel_name(schema: &str) -> String {
    format!("hopsbridge_mail_{schema}")
}

/// A page of mails, newest first, in `status` if given.
///
/// # Errors
/// When Postgres fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    status: Option<MailStatus>,
    failing_after: i32,
    limit: i64,
    offset: i64,
) -> Result<(Vec<MailRow>, i64), DbError> {
    let filtered = || {
        let query = mail_outbox::table.into_boxed();
        match status {
            None => query,
            Some(MailStatus::Sent) => query.filter(mail_outbox::sent_at.is_not_null()),
            Some(MailStatus::Failing) => {
                query.filter(mail_outbox::sent_at.is_null()).filter(mail_outbox::attempts.ge(failing_after))
            }
            Some(MailStatus::Pending) => {
                query.filter(mail_outbox::sent_at.is_null()).filter(mail_outbox::attempts.lt(failing_after))
            }
        }
    };
    let total = filtered().count().get_result(conn).await?;
    let items = filtered()
        .order((mail_outbox::created_at.desc(), mail_outbox::id.desc()))
        .limit(limit)
        .offset(offset)
        .select(MailRow::as_select())
        .load(conn)
        .await?;
    Ok((items, total))
}

/// One mail.
///
/// # Errors
/// [`DbError::NotFound`].
pub async fn find(conn: &mut AsyncPgConnection, id: uuid::Uuid) -> Result<MailRow, DbError> {
    Ok(mail_outbox::table.find(id).select(MailRow::as_select()).first(conn).await?)
}

/// Makes an unsent mail due now (an admin asks for a retry after fixing the cause). Returns
/// false when it was already sent.
///
/// # Errors
/// [`DbError::NotFound`].
pub(super) async fn retry_now(conn: &mut AsyncPgConnection, id: uuid::Uuid) -> Result<bool, DbError> {
    let row = find(conn, id).await?;
    if row.sent_at.is_some() {
        return Ok(false);
    }
    diesel::update(mail_outbox::table.find(id))
        .set(mail_outbox::next_attempt_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    notify(conn).await?;
    Ok(true)
}

impl MailRow {
    /// Where it is.
    #[must_use]
    pub const fn status(&self, failing_after: i32) -> MailStatus {
        if self.sent_at.is_some() {
            MailStatus::Sent
        } else if self.attempts >= failing_after {
            MailStatus::Failing
        } else {
            MailStatus::Pending
        }
    }
}
