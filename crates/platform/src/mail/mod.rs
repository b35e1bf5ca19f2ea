//! Email and admin alerts, sent from each service's own mail outbox.
//!
//! 1. A service renders a mail from typed data (an askama template with a plain-text and an
//!    HTML part, so values are escaped by construction) and calls [`enqueue`] or
//!    [`enqueue_alert`] in the same transaction as the change that caused it. Each mail has a
//!    deduplication key: a second enqueue with the same key adds nothing, so a replayed event
//!    or a restarted job sends a mail once.
//! 2. The service's [`MailRelay`] sends due rows over SMTP (lettre), or posts them to the admin
//!    webhook in the format Slack's incoming webhooks accept, and marks them sent. A failed send
//!    is retried with the platform's backoff for as long as it takes; after
//!    `mail.failing_after_attempts` failures the mail is listed as failing at
//!    `GET /api/admin/mail/<service>` (and logged at error level), never dropped.
//!
//! A mail accepted by the SMTP server just before the process dies, and before its row was
//! marked, is sent again after the restart: delivery is at least once, with a stable
//! `Message-ID` (the row's id) by which a receiver can recognise the copy.

mod erasure;
mod outbox;
mod relay;
mod routes;

pub use erasure::erase_sent;

pub use outbox::{Alert, MailError, MailRow, MailStatus, enqueue, enqueue_alert, find, list};
pub use relay::{MailRelay, RelayPass};
pub use routes::{MailCode, configure as configure_routes, document as api_doc};

use crate::config::{ConfigError, Validate};
use crate::secret::Secret;
use askama::Template;
use hopsbridge_contracts::Service;
use hopsbridge_domain::Email;
use serde::Deserialize;
use std::time::Duration;

/// Mail settings (`[mail]`), shared by every service that owns data.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// The SMTP server: `smtp://host:port` (plain, local development),
    /// `smtp://user:password@host:587?tls=required` (STARTTLS) or `smtps://host:465`. May hold
    /// a password.
    pub smtp_url: Secret<String>,
    /// The sender, e.g. `Hopsbridge <no-reply@hopsbridge.example>`.
    pub from: String,
    /// Where people reach the platform; every link in a mail starts with it.
    pub public_base_url: String,
    /// Who receives admin alerts by email, comma-separated (may be empty).
    pub admin_addresses: String,
    /// A Slack incoming-webhook URL admin alerts are also posted to (empty: none). A secret.
    pub admin_webhook_url: Secret<String>,
    /// Rows one relay pass sends.
    pub batch_size: i64,
    /// How often an idle relay looks for due rows nobody told it about, in milliseconds.
    pub poll_interval_ms: u64,
    /// How long one SMTP conversation or webhook post may take, in seconds.
    pub timeout_secs: u64,
    /// The first retry's delay, in seconds; it doubles (with jitter) up to `backoff_max_secs`.
    pub backoff_initial_secs: u64,
    /// The longest delay between retries, in seconds.
    pub backoff_max_secs: u64,
    /// Failures after which a mail is listed as failing (it is still retried).
    pub failing_after_attempts: i32,
    /// How long sent rows are kept, in days.
    pub retention_days: u64,
}

impl MailConfig {
    /// The retry policy of a failed send.
    #[must_use]
    pub const fn backoff(&self) -> crate::retry::Backoff {
        crate::retry::Backoff::new(
            Duration::from_secs(self.backoff_initial_secs),
            Duration::from_secs(self.backoff_max_secs),
        )
    }

    /// The admin addresses, parsed.
    ///
    /// # Errors
    /// The first address that is not one.
    pub fn admins(&self) -> Result<Vec<Email>, String> {
        self.admin_addresses
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| Email::parse(a).map_err(|_| format!("'{a}' is not an email address")))
            .collect()
    }

    /// Links into the platform.
    ///
    /// # Errors
    /// When `public_base_url` is not an absolute http(s) URL.
    pub fn links(&self) -> Result<Links, String> {
        Links::new(&self.public_base_url)
    }
}

impl Validate for MailConfig {
    fn validate(&self, service: Service) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| ConfigError::new(service, &format!("mail.{key}"), reason);
        let smtp = url::Url::parse(self.smtp_url.expose()).map_err(|e| err("smtp_url", e.to_string()))?;
        if !matches!(smtp.scheme(), "smtp" | "smtps") {
            return Err(err("smtp_url", "must start with smtp:// or smtps://".into()));
        }
        self.from.parse::<lettre::message::Mailbox>().map_err(|e| err("from", e.to_string()))?;
        self.links().map_err(|e| err("public_base_url", e))?;
        self.admins().map_err(|e| err("admin_addresses", e))?;
        if !self.admin_webhook_url.expose().is_empty() {
            let hook = url::Url::parse(self.admin_webhook_url.expose())
                .map_err(|_| err("admin_webhook_url", "is not a URL".into()))?;
            if !matches!(hook.scheme(), "http" | "https") {
                return Err(err("admin_webhook_url", "must be an http(s) URL".into()));
            }
        }
        if self.batch_size < 1 {
            return Err(err("batch_size", "must be at least 1".into()));
        }
        if self.timeout_secs == 0 || self.poll_interval_ms == 0 {
            return Err(err("timeout_secs", "timeout_secs and poll_interval_ms must be positive".into()));
        }
        if self.backoff_initial_secs == 0 || self.backoff_max_secs < self.backoff_initial_secs {
            return Err(err(
                "backoff_max_secs",
                "backoff_initial_secs must be positive and at most backoff_max_secs".into(),
            ));
        }
        if self.failing_after_attempts < 1 {
            return Err(err("failing_after_attempts", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Absolute links into the platform, built on `mail.public_base_url` with path segments and
/// query pairs escaped by the URL builder (never by concatenation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Links {
    base: url::Url,
}

impl Links {
    /// Links under `base` (an absolute http or https URL).
    ///
    /// # Errors
    /// When `base` is not one.
    pub fn new(base: &str) -> Result<Self, String> {
        let base = url::Url::parse(base).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err("must be an absolute http(s) URL".into());
        }
        Ok(Self { base })
    }

    /// `base` followed by `segments` (each percent-encoded as one segment) and `query`.
    #[must_use]
    pub fn to(&self, segments: &[&str], query: &[(&str, &str)]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }
}

/// A mail rendered from a template, ready for the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The template's name, e.g. `team.invitation`.
    pub kind: &'static str,
    /// The subject line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// A mail template: typed data rendered into a subject, a plain-text part and an HTML part.
/// Implement it with two askama templates (`.txt` and `.html`), so each value is written by
/// the template engine and escaped for HTML by construction.
pub trait MailTemplate {
    /// The template's stable name, recorded with each mail.
    const KIND: &'static str;

    /// The subject line.
    fn subject(&self) -> String;

    /// The plain-text part.
    ///
    /// # Errors
    /// When the template fails to render.
    fn text(&self) -> askama::Result<String>;

    /// The HTML part.
    ///
    /// # Errors
    /// When the template fails to render.
    fn html(&self) -> askama::Result<String>;

    /// Renders every part.
    ///
    /// # Errors
    /// When a template fails to render.
    fn render(&self) -> askama::Result<Rendered> {
        Ok(Rendered { kind: Self::KIND, subject: self.subject(), text: self.text()?, html: self.html()? })
    }
}

/// The plain-text part of an admin alert.
#[derive(Template)]
#[template(path = "mail/alert.txt")]
struct AlertText<'a> {
    alert: &'a Alert,
}

/// The HTML part of an admin alert.
#[derive(Template)]
#[template(path = "mail/alert.html")]
struct AlertHtml<'a> {
    alert: &'a Alert,
}

impl MailTemplate for Alert {
    const KIND: &'static str = "admin.alert";

    fn subject(&self) -> String {
        format!("[Hopsbridge] {}", self.title)
    }

    fn text(&self) -> askama::Result<String> {
        AlertText { alert: self }.render()
    }

    fn html(&self) -> askama::Result<String> {
        AlertHtml { alert: self }.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_escape_segments_and_queries() {
        let links = Links::new("https://app.hopsbridge.example/console/").unwrap_or_else(|e| panic!("{e}"));
        let url = links.to(&["invitations", "a/b c"], &[("email", "ada+1@example.com")]);
        assert_eq!(
            url.as_str(),
            "https://app.hopsbridge.example/console/invitations/a%2Fb%20c?email=ada%2B1%40example.com"
        );
        assert!(Links::new("ftp://example.com").is_err());
        assert!(Links::new("/relative").is_err());
    }

    #[test]
    fn alerts_render_both_parts_and_escape_html() {
        let alert = Alert {
            title: "Drift <b>found</b>".into(),
            lines: vec!["owner ada & co: 3 days".into()],
            link: Some("https://app.hopsbridge.example/admin?x=1&y=2".into()),
        };
        let mail = alert.render().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mail.kind, "admin.alert");
        assert_eq!(mail.subject, "[Hopsbridge] Drift <b>found</b>");
        assert!(
            mail.text.contains("Drift <b>found</b>") && mail.text.contains("owner ada & co: 3 days"),
            "{}",
            mail.text
        );
        assert!(mail.html.contains("Drift &#60;b&#62;found&#60;/b&#62;"), "{}", mail.html);
        assert!(mail.html.contains("owner ada &#38; co"), "{}", mail.html);
        assert!(!mail.html.contains("<b>"), "{}", mail.html);
    }
}
