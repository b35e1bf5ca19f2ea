//! The scheduled enforcer: Stripe's recorded signals acted on, spending-cap restrictions of past
//! months cleared, due restrictions suspended once (`AccountRestrictedV1`).

use super::{Lifecycle, Reason, Restriction, closed, lock_owner, open, open_restrictions, try_lock_owner, when};
use crate::accounts;
use crate::plans::{self, Plan};
use crate::schema::{lifecycle_signals, restrictions};
use chrono::Datelike;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::AccountRestrictedV1;
use hopsbridge_domain::OwnerId;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl Lifecycle {
    /// Acts on one pending signal, if any; whether there was one.
    async fn next_signal(&self) -> anyhow::Result<bool> {
        let this = self.clone();
        self.db
            .transaction(move |c| {
                let this = this.clone();
                Box::pin(async move { this.signal_in(c).await })
            })
            .await
    }

    async fn signal_in(&self, conn: &mut AsyncPgConnection) -> anyhow::Result<bool> {
        let row: Option<(String, OwnerId, String, String, i32, DateTime<Utc>)> = lifecycle_signals::table
            .filter(lifecycle_signals::handled_at.is_null())
            .order((lifecycle_signals::at, lifecycle_signals::key))
            .select((
                lifecycle_signals::key,
                lifecycle_signals::owner_id,
                lifecycle_signals::kind,
                lifecycle_signals::subject,
                lifecycle_signals::attempt,
                lifecycle_signals::at,
            ))
            .for_update()
            .skip_locked()
            .first(conn)
            .await
            .optional()?;
        let Some((key, owner, kind, subject, attempt, at)) = row else { return Ok(false) };
        let now = self.clock.now();
        let account = accounts::lock(conn, owner.as_user()).await?;
        lock_owner(conn, owner).await?;
        let acting = account.as_ref().is_some_and(|a| a.team_owner(now.timestamp_micros()).is_none())
            && !closed(conn, owner).await?;
        if acting && let Some(account) = account {
            match kind.as_str() {
                "subscription_ended" => {
                    // As for a lost card: prepaid owners pay with credits and keep their plan.
                    let paying = matches!(plans::current(conn, owner).await?, None | Some(Plan::Payg));
                    if paying && account.stripe_subscription_id.as_deref() == Some(subject.as_str()) {
                        self.change_plan(conn, owner, Plan::Free, (plans::reason::SUBSCRIPTION_DELETED, None)).await?;
                    }
                }
                "invoice_failed" => self.invoice_failed(conn, owner, &subject, attempt, at).await?,
                "invoice_paid" => {
                    if unpaid_failures(conn, owner).await? == 0 {
                        self.clear(conn, owner, Reason::PaymentFailed, now).await?;
                    }
                }
                "credits_bought" => {
                    self.clear(conn, owner, Reason::CreditsExhausted, now).await?;
                }
                other => tracing::warn!(kind = other, key, "unknown lifecycle signal"),
            }
        }
        diesel::update(lifecycle_signals::table.find(&key))
            .set(lifecycle_signals::handled_at.eq(now))
            .execute(conn)
            .await?;
        Ok(true)
    }

    async fn invoice_failed(
        &self,
        conn: &mut AsyncPgConnection,
        owner: OwnerId,
        invoice: &str,
        attempt: i32,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let paid: i64 = lifecycle_signals::table
            .filter(lifecycle_signals::kind.eq("invoice_paid"))
            .filter(lifecycle_signals::subject.eq(invoice))
            .count()
            .get_result(conn)
            .await?;
        if paid > 0 {
            return Ok(());
        }
        let deadline = at + TimeDelta::days(i64::from(self.config.unpaid_suspend_days));
        open(conn, owner, Reason::PaymentFailed, invoice, (at, deadline)).await?;
        let deadline = open_restrictions(conn, owner)
            .await?
            .into_iter()
            .find(|r| r.reason == Reason::PaymentFailed.as_str())
            .map_or(deadline, |r| r.deadline);
        let lines = vec![
            format!("A payment of your Hopsbridge invoice {invoice} failed (attempt {attempt})."),
            "Stripe will try again; update your card on the billing page.".to_owned(),
            format!("If the invoice is still unpaid on {}, the account is suspended.", when(deadline)),
        ];
        let mail =
            self.standing("billing.payment_failed", "A payment to Hopsbridge failed".to_owned(), lines, Vec::new());
        self.mail_owner(conn, owner, &format!("billing.payment_failed:{invoice}:{attempt}"), mail).await?;
        tracing::info!(%owner, invoice, attempt, %deadline, "invoice payment failed");
        Ok(())
    }

    /// Clears the spending-cap restrictions of months before this one.
    async fn new_months(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let month = now.date_naive().with_day(1).unwrap_or(now.date_naive()).format("%Y-%m").to_string();
        let stale: Vec<OwnerId> = restrictions::table
            .filter(restrictions::reason.eq(Reason::SpendingCap.as_str()))
            .filter(restrictions::cleared_at.is_null())
            .filter(restrictions::detail.lt(month))
            .select(restrictions::owner_id)
            .load(&mut *self.db.conn().await?)
            .await?;
        for owner in &stale {
            let this = self.clone();
            let owner = *owner;
            self.db
                .transaction(move |c| {
                    let this = this.clone();
                    Box::pin(async move {
                        lock_owner(c, owner).await?;
                        this.clear(c, owner, Reason::SpendingCap, now).await
                    })
                })
                .await?;
        }
        Ok(stale.len())
    }

    /// Suspends every due restriction of `owner` unless another replica holds the owner:
    /// how many were suspended now.
    async fn suspend_due(&self, conn: &mut AsyncPgConnection, owner: OwnerId) -> anyhow::Result<usize> {
        if !try_lock_owner(conn, owner).await? {
            return Ok(0);
        }
        let now = self.clock.now();
        let due: Vec<Restriction> = restrictions::table
            .filter(restrictions::owner_id.eq(owner))
            .filter(restrictions::cleared_at.is_null())
            .filter(restrictions::suspended_at.is_null())
            .filter(restrictions::deadline.le(now))
            .select(Restriction::as_select())
            .for_update()
            .skip_locked()
            .load(conn)
            .await?;
        for r in &due {
            diesel::update(restrictions::table.find(r.id))
                .set(restrictions::suspended_at.eq(now))
                .execute(conn)
                .await?;
            let event = AccountRestrictedV1 { user_id: owner.to_string(), reason: r.reason.clone() };
            hopsbridge_platform::events::enqueue(conn, &event, None).await?;
            let says = match r.reason.as_str() {
                "over_project_limit" => Reason::OverProjectLimit.says(),
                "payment_failed" => Reason::PaymentFailed.says(),
                "credits_exhausted" => Reason::CreditsExhausted.says(),
                _ => Reason::SpendingCap.says(),
            };
            let lines = vec![
                format!("Your Hopsbridge account is suspended: {says}."),
                "It becomes active again once that is resolved on the billing page.".to_owned(),
            ];
            let mail = self.standing(
                "billing.suspended",
                "Your Hopsbridge account is suspended".to_owned(),
                lines,
                Vec::new(),
            );
            self.mail_owner(conn, owner, &format!("billing.suspended:{}", r.id), mail).await?;
            tracing::info!(%owner, reason = %r.reason, restriction = %r.id, "account suspended");
        }
        if !due.is_empty() {
            diesel::sql_query(
                "INSERT INTO owner_suspensions (owner_id, suspended_at) VALUES ($1, $2)
                 ON CONFLICT (owner_id) DO UPDATE SET suspended_at = excluded.suspended_at, lifted_at = NULL
                 WHERE owner_suspensions.lifted_at IS NOT NULL",
            )
            .bind::<SqlUuid, _>(owner.as_uuid())
            .bind::<Timestamptz, _>(now)
            .execute(conn)
            .await?;
        }
        Ok(due.len())
    }
}

/// How many of `owner`'s failed invoices have no payment recorded.
async fn unpaid_failures(conn: &mut AsyncPgConnection, owner: OwnerId) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query(
        "SELECT count(DISTINCT f.subject) AS n FROM lifecycle_signals f WHERE f.owner_id = $1 AND f.kind = 'invoice_failed'
           AND NOT EXISTS (SELECT 1 FROM lifecycle_signals p WHERE p.kind = 'invoice_paid' AND p.subject = f.subject)",
    )
    .bind::<SqlUuid, _>(owner.as_uuid())
    .get_result(conn)
    .await?;
    Ok(n.n)
}

/// What one pass of the enforcer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Signals from Stripe acted on.
    pub signals: usize,
    /// Spending-cap restrictions of past months cleared.
    pub new_months: usize,
    /// Restrictions suspended.
    pub suspended: usize,
}

/// The scheduled enforcer: safe with several replicas and across restarts.
#[derive(Debug, Clone)]
pub struct Enforcer(pub Lifecycle);

impl Enforcer {
    /// One pass: Stripe's signals, new months, then due restrictions suspended.
    ///
    /// # Errors
    /// When Postgres fails or a mail does not render.
    pub async fn pass(&self) -> anyhow::Result<Pass> {
        let lc = &self.0;
        let mut pass = Pass::default();
        while pass.signals < 1000 && lc.next_signal().await? {
            pass.signals += 1;
        }
        pass.new_months = lc.new_months().await?;
        let now = lc.clock.now();
        let owners: Vec<OwnerId> = restrictions::table
            .filter(restrictions::cleared_at.is_null())
            .filter(restrictions::suspended_at.is_null())
            .filter(restrictions::deadline.le(now))
            .select(restrictions::owner_id)
            .distinct()
            .limit(1000)
            .load(&mut *lc.db.conn().await?)
            .await?;
        for owner in owners {
            let this = lc.clone();
            pass.suspended += lc
                .db
                .transaction(move |c| {
                    let this = this.clone();
                    Box::pin(async move { this.suspend_due(c, owner).await })
                })
                .await?;
        }
        Ok(pass)
    }

    /// Runs a pass every `lifecycle.enforce_interval_secs` until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(self.0.config.enforce_interval_secs));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            match self.pass().await {
                Ok(p) if p == Pass::default() => {}
                Ok(p) => tracing::info!(
                    signals = p.signals,
                    new_months = p.new_months,
                    suspended = p.suspended,
                    "enforcer pass"
                ),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "enforcer pass failed"),
            }
        }
    }
}
