//! The owner's billing mails, each a plain-text and an HTML part rendered by askama from typed
//! data: a low credit balance (`billing.low_balance`), a share of the spending cap reached
//! (`billing.spending_cap`), and the account's standing ([`StandingMail`]: a deadline, a failed
//! payment, a suspension, a reactivation). Amounts are shown in the currency's major unit.

use askama::Template;
use hopsbridge_platform::mail::MailTemplate;
use rust_decimal::Decimal;

/// `minor` minor units in the major unit, to the cent (`1234` → `12.34`).
#[must_use]
pub fn major(minor: Decimal) -> String {
    let cents = minor.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    format!("{:.2}", cents / Decimal::ONE_HUNDRED)
}

/// The credit balance fell to a threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowBalanceMail {
    /// The balance now, major units.
    pub balance: String,
    /// The threshold crossed, major units.
    pub threshold: String,
    /// Uppercase ISO 4217.
    pub currency: String,
    /// Whether overflow is charged to a card.
    pub has_card: bool,
    /// The billing page.
    pub link: String,
}

impl LowBalanceMail {
    /// The deduplication key of the `crossing`th crossing of `threshold` by `owner`.
    #[must_use]
    pub fn dedup_key(owner: impl std::fmt::Display, threshold: i64, crossing: i32) -> String {
        format!("billing.low_balance:{owner}:{threshold}:{crossing}")
    }
}

#[derive(Template)]
#[template(path = "mail/low_balance.txt")]
struct LowBalanceText<'a> {
    m: &'a LowBalanceMail,
}

#[derive(Template)]
#[template(path = "mail/low_balance.html")]
struct LowBalanceHtml<'a> {
    m: &'a LowBalanceMail,
}

impl MailTemplate for LowBalanceMail {
    const KIND: &'static str = "billing.low_balance";

    fn subject(&self) -> String {
        format!("Your Hopsbridge credit balance is {} {}", self.balance, self.currency)
    }

    fn text(&self) -> askama::Result<String> {
        LowBalanceText { m: self }.render()
    }

    fn html(&self) -> askama::Result<String> {
        LowBalanceHtml { m: self }.render()
    }
}

/// A share of the monthly spending cap was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapMail {
    /// The UTC month, `2026-12`.
    pub month: String,
    /// 80, 90 or 100.
    pub percent: i32,
    /// The month's cost so far, major units.
    pub spent: String,
    /// The cap, major units.
    pub cap: String,
    /// Uppercase ISO 4217.
    pub currency: String,
    /// Whether reaching the cap suspends the account (`cap_action` `suspend`).
    pub suspends: bool,
    /// The billing page.
    pub link: String,
}

impl CapMail {
    /// The deduplication key of `percent` of `owner`'s cap in `month`.
    #[must_use]
    pub fn dedup_key(owner: impl std::fmt::Display, month: &str, percent: i32) -> String {
        format!("billing.cap:{owner}:{month}:{percent}")
    }
}

#[derive(Template)]
#[template(path = "mail/spending_cap.txt")]
struct CapText<'a> {
    m: &'a CapMail,
}

#[derive(Template)]
#[template(path = "mail/spending_cap.html")]
struct CapHtml<'a> {
    m: &'a CapMail,
}

impl MailTemplate for CapMail {
    const KIND: &'static str = "billing.spending_cap";

    fn subject(&self) -> String {
        format!("You have used {} % of your Hopsbridge spending cap for {}", self.percent, self.month)
    }

    fn text(&self) -> askama::Result<String> {
        CapText { m: self }.render()
    }

    fn html(&self) -> askama::Result<String> {
        CapHtml { m: self }.render()
    }
}

/// The account's standing changed: what happened and what to do, one fact per line, and the
/// items concerned (the projects over the plan's allowance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandingMail {
    /// `billing.over_project_limit`, `billing.payment_failed`, `billing.credits_exhausted`,
    /// `billing.suspended` or `billing.reactivated`.
    pub kind: &'static str,
    /// The subject line.
    pub subject: String,
    /// One fact per line.
    pub lines: Vec<String>,
    /// Listed after the lines (may be empty).
    pub items: Vec<String>,
    /// The billing page.
    pub link: String,
}

#[derive(Template)]
#[template(path = "mail/standing.txt")]
struct StandingText<'a> {
    m: &'a StandingMail,
}

#[derive(Template)]
#[template(path = "mail/standing.html")]
struct StandingHtml<'a> {
    m: &'a StandingMail,
}

impl StandingMail {
    /// Every part, under the mail's own kind.
    ///
    /// # Errors
    /// When a template fails to render.
    pub fn render(&self) -> askama::Result<hopsbridge_platform::mail::Rendered> {
        Ok(hopsbridge_platform::mail::Rendered {
            kind: self.kind,
            subject: self.subject.clone(),
            text: StandingText { m: self }.render()?,
            html: StandingHtml { m: self }.render()?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use std::str::FromStr;

    #[test]
    fn both_mails_render_and_escape() {
        assert_eq!(major(Decimal::from_str("1234.5").unwrap()), "12.35");
        assert_eq!(major(Decimal::ZERO), "0.00");
        let low = LowBalanceMail {
            balance: "4.99".into(),
            threshold: "5.00".into(),
            currency: "USD".into(),
            has_card: false,
            link: "https://app.example/billing?a=1&b=2".into(),
        };
        let r = low.render().unwrap();
        assert_eq!(r.kind, "billing.low_balance");
        assert!(r.text.contains("4.99 USD") && r.text.contains("not paid for"), "{}", r.text);
        assert!(r.html.contains("a=1&#38;b=2"), "{}", r.html);
        let cap = CapMail {
            month: "2026-12".into(),
            percent: 90,
            spent: "90.00".into(),
            cap: "100.00".into(),
            currency: "USD".into(),
            suspends: false,
            link: "https://app.example/billing".into(),
        };
        let r = cap.render().unwrap();
        assert!(r.text.contains("only alerts"), "{}", r.text);
        let suspending = CapMail { suspends: true, ..cap.clone() }.render().unwrap();
        assert!(suspending.text.contains("suspended until the next month") && !suspending.text.contains("only alerts"));
        assert!(r.subject.contains("90 %") && r.text.contains("90.00 of 100.00 USD"), "{}", r.text);
        assert_eq!(CapMail::dedup_key("o", "2026-12", 80), "billing.cap:o:2026-12:80");
        let standing = StandingMail {
            kind: "billing.over_project_limit",
            subject: "Delete projects".into(),
            lines: vec!["Over <the> limit".into()],
            items: vec!["alpha".into(), "beta".into()],
            link: "https://app.example/billing".into(),
        };
        let r = standing.render().unwrap();
        assert_eq!(r.kind, "billing.over_project_limit");
        assert!(r.text.contains("- alpha\n- beta") && r.text.contains("Over <the> limit"), "{}", r.text);
        assert!(r.html.contains("<li>beta</li>") && r.html.contains("Over &#60;the&#62; limit"), "{}", r.html);
    }
}
