//! The invitation mail (`team.invitation`): a plain-text and an HTML part rendered by askama
//! from typed data, so every value is escaped in the HTML part by construction.

use askama::Template;
use chrono::{DateTime, Utc};
use hopsbridge_domain::ProjectRole;
use hopsbridge_platform::mail::MailTemplate;

/// What the invitation mail says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationMail {
    /// Who invites: their name, or their address when they have none.
    pub inviter: String,
    /// The inviting owner's address.
    pub inviter_email: String,
    /// The project role offered.
    pub role: ProjectRole,
    /// The link with the token (`mail.public_base_url` + `/invitations/<token>`).
    pub link: String,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
}

impl InvitationMail {
    /// The deduplication key of the mail for the `send`th sending of `invitation`.
    #[must_use]
    pub fn dedup_key(invitation: uuid::Uuid, send: i32) -> String {
        format!("{}:{invitation}:{send}", Self::KIND)
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            inviter: &self.inviter,
            inviter_email: &self.inviter_email,
            role: self.role.as_str(),
            link: &self.link,
            expires: self.expires_at.format("%-d %B %Y, %H:%M UTC").to_string(),
        }
    }
}

/// The values both parts show.
struct Parts<'a> {
    inviter: &'a str,
    inviter_email: &'a str,
    role: &'a str,
    link: &'a str,
    expires: String,
}

#[derive(Template)]
#[template(path = "mail/invitation.txt")]
struct Text<'a> {
    m: &'a Parts<'a>,
}

#[derive(Template)]
#[template(path = "mail/invitation.html")]
struct Html<'a> {
    m: &'a Parts<'a>,
}

impl MailTemplate for InvitationMail {
    const KIND: &'static str = "team.invitation";

    fn subject(&self) -> String {
        format!("{} invited you to their team on Hopsbridge", self.inviter)
    }

    fn text(&self) -> askama::Result<String> {
        Text { m: &self.parts() }.render()
    }

    fn html(&self) -> askama::Result<String> {
        Html { m: &self.parts() }.render()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn both_parts_carry_the_link_and_the_html_escapes_every_value() {
        let mail = InvitationMail {
            inviter: "Ada <b>& co</b>".into(),
            inviter_email: "ada@example.com".into(),
            role: ProjectRole::DataScientist,
            link: "https://app.hopsbridge.example/invitations/abc_DEF-123?x=1&y=2".into(),
            expires_at: DateTime::parse_from_rfc3339("2026-12-14T09:30:00Z").unwrap().with_timezone(&Utc),
        };
        let rendered = mail.render().unwrap();
        assert_eq!(rendered.kind, "team.invitation");
        assert_eq!(rendered.subject, "Ada <b>& co</b> invited you to their team on Hopsbridge");
        assert!(rendered.text.contains("https://app.hopsbridge.example/invitations/abc_DEF-123?x=1&y=2"));
        assert!(rendered.text.contains("as Data scientist"), "{}", rendered.text);
        assert!(rendered.text.contains("14 December 2026, 09:30 UTC"), "{}", rendered.text);
        assert!(rendered.html.contains("href=\"https://app.hopsbridge.example/invitations/abc_DEF-123?x=1&#38;y=2\""));
        assert!(rendered.html.contains("Ada &#60;b&#62;&#38; co&#60;/b&#62;"), "{}", rendered.html);
        assert!(!rendered.html.contains("<b>"), "{}", rendered.html);
        assert_eq!(InvitationMail::dedup_key(uuid::Uuid::nil(), 2), format!("team.invitation:{}:2", uuid::Uuid::nil()));
    }
}
