//! The account's standing (decision 0048): restrictions, their deadlines and the enforcer.
//!
//! - The last card removed (`PaymentMethodRemovedV1`, from billing's own webhooks) or the
//!   subscription deleted (Stripe's `customer.subscription.deleted`): a payg owner (or one who
//!   never chose a plan) is moved to free; the subscription ends with a final invoice of the usage
//!   so far ([`crate::deletion`]'s report-then-cancel). Over the free plan's project allowance
//!   (from `ProjectsCountedV1`, kept per owner and cluster): restriction `over_project_limit`
//!   with a deadline `lifecycle.project_deadline_days` ahead, the owner and the admins mailed
//!   with the projects listed; within it: free at once, nothing more.
//! - `invoice.payment_failed`: a mail per failure (Stripe's `attempt_count`), restriction
//!   `payment_failed` with a deadline `lifecycle.unpaid_suspend_days` after the first failure;
//!   `invoice.paid` of every failed invoice clears it.
//! - `CreditsExhaustedV1` without a card: a mail, restriction `credits_exhausted` with
//!   `lifecycle.credits_grace_hours` of grace; credit bought or a card added clears it.
//! - A spending cap whose action is `suspend` crossed at 100 %: restriction `spending_cap`, due
//!   at once; a new month or a cap raised above the month's cost clears it.
//!
//! Every change to an owner's restrictions holds the owner's transaction-scoped advisory lock
//! (after their account's row lock where one is taken), so clearing the last restriction and
//! lifting the suspension are decided once. The enforcer ([`Enforcer`]) runs on a tokio interval
//! in every replica: it suspends each due restriction once (`suspended_at` set in the
//! transaction that writes `AccountRestrictedV1` and the mail to the outboxes), and a clearing
//! that leaves a suspended owner with no restriction writes `AccountRestrictionLiftedV1` once.
//! Stripe's webhooks only record signals (`lifecycle_signals`) in their own transaction; the
//! enforcer acts on them. Time is the platform's calendar clock (decision 0037).

use crate::accounts;
use crate::catalog::Prices;
use crate::config::{LifecycleConfig, PlansConfig};
use crate::events::db_failure;
use crate::mail::StandingMail;
use crate::plans::{self, ChangeOf, Plan, PlanChange};
use crate::reporting::Reporter;
use crate::schema::{closed_owners, lifecycle_signals, project_counts, restrictions};
use crate::stripe::Stripe;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::AccountRestrictionLiftedV1;
use hopsbridge_domain::{Email, OwnerId, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::events::HandlerError;
use hopsbridge_platform::mail::{self, Alert, MailConfig};
use serde::Serialize;
use uuid::Uuid;

mod enforcer;
mod handlers;

pub use enforcer::{Enforcer, Pass};
pub use handlers::SignedIn;

/// Why an owner is restricted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// More active projects than the free plan allows.
    OverProjectLimit,
    /// An invoice's payment failed.
    PaymentFailed,
    /// Credits ran out and no card pays the rest.
    CreditsExhausted,
    /// The spending cap was crossed and its action is to suspend.
    SpendingCap,
}

impl Reason {
    /// Its name, as stored and announced.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OverProjectLimit => "over_project_limit",
            Self::PaymentFailed => "payment_failed",
            Self::CreditsExhausted => "credits_exhausted",
            Self::SpendingCap => "spending_cap",
        }
    }

    /// What it means, for mails.
    const fn says(self) -> &'static str {
        match self {
            Self::OverProjectLimit => "more active projects than your plan allows",
            Self::PaymentFailed => "an unpaid invoice",
            Self::CreditsExhausted => "no credit left and no card",
            Self::SpendingCap => "your monthly spending cap was reached",
        }
    }
}

/// A restriction as the owner's plan view shows it.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = restrictions)]
pub struct Restriction {
    /// The restriction.
    pub id: Uuid,
    /// The owner.
    pub owner_id: OwnerId,
    /// `over_project_limit`, `payment_failed`, `credits_exhausted` or `spending_cap`.
    pub reason: String,
    /// The invoice (payment_failed) or month (spending_cap) it is about; empty otherwise.
    pub detail: String,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// When the account is suspended if it still holds.
    pub deadline: DateTime<Utc>,
    /// When it was cleared.
    pub cleared_at: Option<DateTime<Utc>>,
    /// When the enforcer suspended the account for it.
    pub suspended_at: Option<DateTime<Utc>>,
}

/// What the lifecycle's handlers, routes and enforcer share.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// billing's schema.
    pub db: Database,
    /// Calendar time.
    pub clock: Clock,
    /// The Stripe API.
    pub stripe: Stripe,
    /// The metered prices, for new subscriptions.
    pub prices: Prices,
    /// The reports to Stripe, for the final invoice.
    pub reporter: Reporter,
    /// The plans.
    pub plans: PlansConfig,
    /// Deadlines and the enforcer's interval.
    pub config: LifecycleConfig,
    /// The ledger's window, seconds.
    pub window_secs: u32,
    /// Admin addresses and links.
    pub mail: MailConfig,
}

/// Holds `owner`'s standing lock for the rest of the transaction.
///
/// # Errors
/// When Postgres fails.
pub async fn lock_owner(conn: &mut AsyncPgConnection, owner: OwnerId) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended('billing.standing:' || $1::text, 0))")
        .bind::<SqlUuid, _>(owner.as_uuid())
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Takes `owner`'s standing lock unless another transaction holds it.
async fn try_lock_owner(conn: &mut AsyncPgConnection, owner: OwnerId) -> QueryResult<bool> {
    let row: Locked = diesel::sql_query(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('billing.standing:' || $1::text, 0)) AS locked",
    )
    .bind::<SqlUuid, _>(owner.as_uuid())
    .get_result(conn)
    .await?;
    Ok(row.locked)
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// Opens a restriction of `owner` for `reason` (the caller holds the owner's lock) unless one is
/// open already: its id when opened now.
///
/// # Errors
/// When Postgres fails.
pub async fn open(
    conn: &mut AsyncPgConnection,
    owner: OwnerId,
    reason: Reason,
    detail: &str,
    (now, deadline): (DateTime<Utc>, DateTime<Utc>),
) -> QueryResult<Option<Uuid>> {
    let opened: Option<Id> = diesel::sql_query(
        "INSERT INTO restrictions (id, owner_id, reason, detail, started_at, deadline) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (owner_id, reason) WHERE cleared_at IS NULL DO NOTHING RETURNING id",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<SqlUuid, _>(owner.as_uuid())
    .bind::<Text, _>(reason.as_str())
    .bind::<Text, _>(detail)
    .bind::<Timestamptz, _>(now)
    .bind::<Timestamptz, _>(deadline)
    .get_result(conn)
    .await
    .optional()?;
    Ok(opened.map(|o| o.id))
}

/// The restrictions of `owner` not cleared, oldest first.
///
/// # Errors
/// When Postgres fails.
pub async fn open_restrictions(conn: &mut AsyncPgConnection, owner: OwnerId) -> QueryResult<Vec<Restriction>> {
    restrictions::table
        .filter(restrictions::owner_id.eq(owner))
        .filter(restrictions::cleared_at.is_null())
        .order(restrictions::started_at)
        .select(Restriction::as_select())
        .load(conn)
        .await
}

/// Whether billing has suspended `owner` and not lifted it.
///
/// # Errors
/// When Postgres fails.
pub async fn suspended(conn: &mut AsyncPgConnection, owner: OwnerId) -> QueryResult<bool> {
    use crate::schema::owner_suspensions as s;
    let n: i64 = s::table.filter(s::owner_id.eq(owner)).filter(s::lifted_at.is_null()).count().get_result(conn).await?;
    Ok(n > 0)
}

/// `owner`'s active projects over every cluster, with their names.
///
/// # Errors
/// When Postgres fails.
pub async fn projects(conn: &mut AsyncPgConnection, owner: OwnerId) -> QueryResult<(i64, Vec<String>)> {
    let rows: Vec<(i32, Vec<Option<String>>)> = project_counts::table
        .filter(project_counts::owner_id.eq(owner))
        .order(project_counts::cluster_id)
        .select((project_counts::active_projects, project_counts::project_names))
        .load(conn)
        .await?;
    let count = rows.iter().map(|(n, _)| i64::from(*n)).sum();
    let names = rows.into_iter().flat_map(|(_, names)| names.into_iter().flatten()).collect();
    Ok((count, names))
}

/// Whether `owner`'s account was deleted.
async fn closed(conn: &mut AsyncPgConnection, owner: OwnerId) -> QueryResult<bool> {
    let n: i64 = closed_owners::table.filter(closed_owners::owner_id.eq(owner)).count().get_result(conn).await?;
    Ok(n > 0)
}

/// A signal from Stripe's webhooks, acted on by the enforcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal<'a> {
    /// The subscription `id` ended.
    SubscriptionEnded(&'a str),
    /// A payment of invoice `id` failed, Stripe's `attempt`th.
    InvoiceFailed(&'a str, i32),
    /// Invoice `id` was paid.
    InvoicePaid(&'a str),
    /// The credit purchase of Checkout Session `id` was granted.
    CreditsBought(&'a str),
}

/// Records `signal` about `user` at `at` (once per subject and attempt), on a connection other
/// statements of a webhook group share.
///
/// # Errors
/// When Postgres fails.
pub async fn signal(mut conn: &AsyncPgConnection, user: UserId, signal: Signal<'_>, at: i64) -> QueryResult<()> {
    let (kind, subject, attempt) = match signal {
        Signal::SubscriptionEnded(id) => ("subscription_ended", id, 0),
        Signal::InvoiceFailed(id, attempt) => ("invoice_failed", id, attempt),
        Signal::InvoicePaid(id) => ("invoice_paid", id, 0),
        Signal::CreditsBought(id) => ("credits_bought", id, 0),
    };
    let at = DateTime::from_timestamp(at, 0).unwrap_or_else(Utc::now);
    diesel::insert_into(lifecycle_signals::table)
        .values((
            lifecycle_signals::key.eq(format!("{kind}:{subject}:{attempt}")),
            lifecycle_signals::owner_id.eq(user.as_uuid()),
            lifecycle_signals::kind.eq(kind),
            lifecycle_signals::subject.eq(subject),
            lifecycle_signals::attempt.eq(attempt),
            lifecycle_signals::at.eq(at),
        ))
        .on_conflict_do_nothing()
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Formats an instant for mails.
fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

impl Lifecycle {
    fn link(&self) -> String {
        self.mail.links().map(|l| l.to(&["billing"], &[]).to_string()).unwrap_or_default()
    }

    /// Writes `mail` for `owner` to the outbox once per `key`.
    async fn mail_owner(
        &self,
        conn: &mut AsyncPgConnection,
        owner: OwnerId,
        key: &str,
        m: StandingMail,
    ) -> anyhow::Result<()> {
        let email: Option<Email> = crate::schema::accounts::table
            .find(owner.as_user())
            .select(crate::schema::accounts::email)
            .first(conn)
            .await
            .optional()?;
        let Some(to) = email else { return Ok(()) };
        mail::enqueue(conn, key, &to, &m.render()?).await?;
        Ok(())
    }

    fn standing(&self, kind: &'static str, subject: String, lines: Vec<String>, items: Vec<String>) -> StandingMail {
        StandingMail { kind, subject, lines, items, link: self.link() }
    }

    /// Clears `owner`'s open restriction for `reason` (the caller holds the owner's lock);
    /// lifts a suspension billing made when none is left. Whether one was cleared.
    ///
    /// # Errors
    /// When Postgres fails or a mail does not render.
    pub async fn clear(
        &self,
        conn: &mut AsyncPgConnection,
        owner: OwnerId,
        reason: Reason,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let cleared = diesel::update(
            restrictions::table
                .filter(restrictions::owner_id.eq(owner))
                .filter(restrictions::reason.eq(reason.as_str()))
                .filter(restrictions::cleared_at.is_null()),
        )
        .set(restrictions::cleared_at.eq(now))
        .execute(conn)
        .await?;
        if cleared == 0 {
            return Ok(false);
        }
        tracing::info!(%owner, reason = reason.as_str(), "restriction cleared");
        self.lift_if_clear(conn, owner, now).await?;
        Ok(true)
    }

    /// Announces `AccountRestrictionLiftedV1` (once) when billing suspended `owner` and no
    /// restriction of theirs is open any more.
    async fn lift_if_clear(
        &self,
        conn: &mut AsyncPgConnection,
        owner: OwnerId,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        #[derive(QueryableByName)]
        struct Lifted {
            #[diesel(sql_type = Timestamptz)]
            suspended_at: DateTime<Utc>,
        }
        let lifted: Option<Lifted> = diesel::sql_query(
            "UPDATE owner_suspensions SET lifted_at = $2 WHERE owner_id = $1 AND lifted_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM restrictions WHERE owner_id = $1 AND cleared_at IS NULL)
             RETURNING suspended_at",
        )
        .bind::<SqlUuid, _>(owner.as_uuid())
        .bind::<Timestamptz, _>(now)
        .get_result(conn)
        .await
        .optional()?;
        let Some(lifted) = lifted else { return Ok(()) };
        hopsbridge_platform::events::enqueue(conn, &AccountRestrictionLiftedV1 { user_id: owner.to_string() }, None)
            .await?;
        let mail = self.standing(
            "billing.reactivated",
            "Your Hopsbridge account is active again".to_owned(),
            vec!["Nothing restricts your account any more: it is active again.".to_owned()],
            Vec::new(),
        );
        let key = format!("billing.reactivated:{owner}:{}", lifted.suspended_at.timestamp_micros());
        self.mail_owner(conn, owner, &key, mail).await?;
        tracing::info!(%owner, "suspension lifted");
        Ok(())
    }

    /// Re-judges `owner`'s project allowance on `plan` (the caller holds the owner's lock): over
    /// the free plan's, a restriction with a deadline and the mails; within the plan's, any
    /// restriction cleared.
    async fn judge_projects(
        &self,
        conn: &mut AsyncPgConnection,
        owner: OwnerId,
        plan: Option<Plan>,
        now: DateTime<Utc>,
        why: &str,
    ) -> anyhow::Result<()> {
        let (count, names) = projects(conn, owner).await?;
        let Some(plan) = plan else { return Ok(()) };
        let allowed = i64::from(plan.max_active_projects(&self.plans));
        if count <= allowed {
            self.clear(conn, owner, Reason::OverProjectLimit, now).await?;
            return Ok(());
        }
        if plan != Plan::Free {
            return Ok(());
        }
        let deadline = now + TimeDelta::days(i64::from(self.config.project_deadline_days));
        let Some(id) = open(conn, owner, Reason::OverProjectLimit, "", (now, deadline)).await? else { return Ok(()) };
        let subject = format!("Your Hopsbridge account is on the free plan: delete projects by {}", when(deadline));
        let lines = vec![
            format!("Your account moved to the free plan ({why})."),
            format!("The free plan allows {allowed} active project(s); you have {count}:"),
            format!(
                "Delete the extra projects, or add a card and choose pay as you go, before {}: after that the account is suspended.",
                when(deadline)
            ),
        ];
        let mail = self.standing("billing.over_project_limit", subject, lines, names.clone());
        self.mail_owner(conn, owner, &format!("billing.over_project_limit:{id}"), mail).await?;
        let alert = Alert {
            title: format!("Owner {owner} is over the free plan's project limit until {}", when(deadline)),
            lines: std::iter::once(format!("{count} active projects, {allowed} allowed ({why})"))
                .chain(names.into_iter().map(|n| format!("project: {n}")))
                .collect(),
            link: None,
        };
        mail::enqueue_alert(conn, &self.mail, &format!("billing.over_project_limit:{id}"), &alert).await?;
        tracing::info!(%owner, count, allowed, %deadline, "over the free plan's project limit: deadline set");
        Ok(())
    }

    /// Changes `owner`'s plan (the caller holds the account's lock and the owner's), then
    /// re-judges their projects against the new plan's allowance.
    ///
    /// # Errors
    /// When Postgres fails or a mail does not render.
    pub async fn change_plan(
        &self,
        conn: &mut AsyncPgConnection,
        owner: OwnerId,
        plan: Plan,
        (reason, by): (&str, Option<Uuid>),
    ) -> anyhow::Result<Option<PlanChange>> {
        let now = self.clock.now();
        let of = ChangeOf { reason, by, now, window_secs: self.window_secs };
        let changed = plans::change(conn, owner, plan, of, &self.plans).await?;
        if changed.is_some() {
            let why = match reason {
                plans::reason::CARD_REMOVED => "your last card was removed",
                plans::reason::SUBSCRIPTION_DELETED => "your subscription ended",
                plans::reason::ADMIN => "an administrator changed it",
                _ => "you chose it",
            };
            self.judge_projects(conn, owner, Some(plan), now, why).await?;
        }
        Ok(changed)
    }

    /// Moves a paying `owner` to free after losing their card or subscription, the
    /// subscription ended with a final invoice; nothing for a member, a prepaid or free owner, a
    /// deleted account, or one whose card came back.
    async fn downgrade(&self, conn: &mut AsyncPgConnection, user: UserId, reason: &str) -> Result<(), HandlerError> {
        let owner = OwnerId::from_uuid(user.as_uuid());
        let Some(account) = accounts::lock(conn, user).await.map_err(db_failure)? else { return Ok(()) };
        let now = self.clock.now();
        if account.team_owner(now.timestamp_micros()).is_some() || closed(conn, owner).await.map_err(db_failure)? {
            return Ok(());
        }
        let plan = plans::current(conn, owner).await.map_err(db_failure)?;
        if matches!(plan, Some(Plan::Free | Plan::Prepaid)) {
            return Ok(());
        }
        if let Some(customer) = account.stripe_customer_id.as_deref() {
            let usable = accounts::usable_payment_methods(conn, vec![customer]).await.map_err(db_failure)?;
            if usable.get(customer).is_some_and(|cards| !cards.is_empty()) {
                return Ok(());
            }
        }
        // The usage so far reported and the subscription cancelled with a final invoice, as for
        // a deleted account.
        crate::deletion::close(conn, (&self.reporter, &self.stripe), user).await?;
        lock_owner(conn, owner).await.map_err(db_failure)?;
        self.change_plan(conn, owner, Plan::Free, (reason, None)).await.map_err(HandlerError::Retry)?;
        Ok(())
    }
}
