//! Sent mail about a person erased with their personal data (decision 0058).

use crate::db::DbError;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::Email;

/// Deletes this service's sent mails to `address` or whose text mentions it (an admin's copy
/// naming the person, say), once their person's data is erased. Mail not sent yet stays: it
/// may be for a new account with the same address, and the relay still owes it; it is deleted
/// with the rest `mail.retention_days` after it is sent. Returns how many rows went; doing it
/// again deletes nothing more.
///
/// # Errors
/// When Postgres fails.
pub async fn erase_sent(conn: &mut AsyncPgConnection, address: &Email) -> Result<usize, DbError> {
    Ok(diesel::sql_query(
        "DELETE FROM mail_outbox WHERE sent_at IS NOT NULL AND (lower(recipient) = $1
             OR strpos(lower(subject), $1) > 0 OR strpos(lower(text_body), $1) > 0
             OR strpos(lower(coalesce(html_body, '')), $1) > 0)",
    )
    .bind::<Text, _>(address.as_str())
    .execute(conn)
    .await?)
}
