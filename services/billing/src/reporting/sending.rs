//! Sending reports as meter events (paced, many in flight, retried on 429, 5xx and no answer)
//! and settling the pending reports of earlier passes whose outcome is unknown.

use super::{
    BATCH, DUPLICATE, PassOutcome, RESEND_WITHIN, Report, Reporter, ReportingError, SEND_RETRY, WINDOW_DAYS, day_start,
};
use crate::quantise;
use crate::schema::meter_reports;
use crate::stripe::{StripeError, params};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use std::collections::BTreeMap;
use uuid::Uuid;

/// What Stripe answered to one report.
enum Sent {
    Accepted(Uuid),
    Pending,
    Refused(Box<Report>, String),
}

impl Reporter {
    /// Sends `reports` with `reporting.in_flight` requests at once, marking each accepted
    /// report in batches.
    pub(super) async fn send_all(&self, reports: Vec<Report>) -> Result<PassOutcome, ReportingError> {
        let mut outcome = PassOutcome::default();
        let mut accepted = Vec::new();
        let mut results = futures::stream::iter(reports).map(|r| self.send(r)).buffer_unordered(self.config.in_flight);
        while let Some(sent) = results.next().await {
            match sent {
                Sent::Accepted(id) => accepted.push(id),
                Sent::Pending => outcome.pending += 1,
                Sent::Refused(report, why) => {
                    let mut conn = self.db.conn().await?;
                    set_state(&mut conn, &[report.id], "abandoned", self.settings.clock.now()).await?;
                    outcome.abandoned += 1;
                    outcome.findings += self
                        .finding(&mut conn, "report_refused", report.owner_id, report.day, &report.identifier, &why)
                        .await?;
                }
            }
            if accepted.len() >= BATCH {
                let mut conn = self.db.conn().await?;
                outcome.accepted += set_state(&mut conn, &accepted, "accepted", self.settings.clock.now()).await?;
                accepted.clear();
            }
        }
        if !accepted.is_empty() {
            let mut conn = self.db.conn().await?;
            outcome.accepted += set_state(&mut conn, &accepted, "accepted", self.settings.clock.now()).await?;
        }
        Ok(outcome)
    }

    /// One meter event, sent again after a 429, a 5xx or no answer with [`SEND_RETRY`]'s
    /// pauses.
    async fn send(&self, report: Report) -> Sent {
        let value = quantise::quanta_text(u128::try_from(report.delta_quanta).unwrap_or(0));
        let timestamp = report.event_timestamp.timestamp().to_string();
        let form = params([
            ("event_name", report.event_name.as_str()),
            ("payload[stripe_customer_id]", report.customer_id.as_str()),
            ("payload[value]", value.as_str()),
            ("timestamp", timestamp.as_str()),
            ("identifier", report.identifier.as_str()),
        ]);
        let mut pauses = SEND_RETRY.delays();
        loop {
            match self.events.post::<serde_json::Value>("billing/meter_events", &form, Some(&report.identifier)).await {
                Ok(_) => return Sent::Accepted(report.id),
                Err(StripeError::Api { status: 400, message, .. }) if message.contains(DUPLICATE) => {
                    return Sent::Accepted(report.id);
                }
                Err(e) if e.is_retryable() => match pauses.next() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => {
                        tracing::warn!(identifier = %report.identifier, error = %e, "meter event left pending");
                        return Sent::Pending;
                    }
                },
                Err(e) => return Sent::Refused(Box::new(report), e.to_string()),
            }
        }
    }

    /// Settles the pending reports of earlier passes: sent again while Stripe's identifier
    /// window surely holds; older ones compared with Stripe's summary of their day.
    ///
    /// # Errors
    /// [`ReportingError`].
    pub async fn settle_unknown(&self) -> Result<PassOutcome, ReportingError> {
        let now = self.settings.clock.now();
        let mut conn = self.db.conn().await?;
        let pending: Vec<Report> = meter_reports::table
            .filter(meter_reports::state.eq("pending"))
            .order(meter_reports::created_at)
            .select(Report::as_select())
            .load(&mut conn)
            .await?;
        drop(conn);
        if pending.is_empty() {
            return Ok(PassOutcome::default());
        }
        let (recent, old): (Vec<Report>, Vec<Report>) =
            pending.into_iter().partition(|r| r.created_at > now - RESEND_WITHIN);
        let mut outcome = self.send_all(recent).await?;
        let mut groups: BTreeMap<(String, String, NaiveDate), Vec<Report>> = BTreeMap::new();
        let mut conn = self.db.conn().await?;
        for r in old {
            if r.event_timestamp <= now - TimeDelta::days(WINDOW_DAYS) {
                set_state(&mut conn, &[r.id], "abandoned", now).await?;
                outcome.abandoned += 1;
                outcome.findings +=
                    self.finding(&mut conn, "report_expired", r.owner_id, r.day, &r.identifier, "-").await?;
                continue;
            }
            groups
                .entry((r.customer_id.clone(), r.meter_id.clone(), r.event_timestamp.date_naive()))
                .or_default()
                .push(r);
        }
        for ((customer, meter, day), reports) in groups {
            let theirs = self.stripe_day_total(&customer, &meter, day).await?;
            let ours: i64 = meter_reports::table
                .filter(meter_reports::customer_id.eq(&customer))
                .filter(meter_reports::meter_id.eq(&meter))
                .filter(meter_reports::state.eq("accepted"))
                .filter(meter_reports::event_timestamp.ge(day_start(day)))
                .filter(meter_reports::event_timestamp.lt(day_start(day) + TimeDelta::days(1)))
                .select(diesel::dsl::sum(meter_reports::delta_quanta))
                .first::<Option<rust_decimal::Decimal>>(&mut conn)
                .await?
                .and_then(|d| i64::try_from(d).ok())
                .unwrap_or(0);
            let pending: i64 = reports.iter().map(|r| r.delta_quanta).sum();
            let ids: Vec<Uuid> = reports.iter().map(|r| r.id).collect();
            if theirs == i128::from(ours) + i128::from(pending) {
                outcome.accepted += set_state(&mut conn, &ids, "accepted", now).await?;
            } else if theirs == i128::from(ours) {
                outcome.abandoned += set_state(&mut conn, &ids, "abandoned", now).await?;
            } else if let Some(first) = <[Report]>::first(&reports) {
                outcome.findings += self
                    .finding(
                        &mut conn,
                        "report_unknown",
                        first.owner_id,
                        first.day,
                        &format!("accepted {ours} + pending {pending} quanta"),
                        &format!("stripe {theirs} quanta on {day}"),
                    )
                    .await?;
            }
        }
        Ok(outcome)
    }

    /// Stripe's total of `customer`'s events on `meter` timestamped on `day`, in quanta.
    ///
    /// # Errors
    /// [`ReportingError`] when Stripe fails.
    pub async fn stripe_day_total(&self, customer: &str, meter: &str, day: NaiveDate) -> Result<i128, ReportingError> {
        let days = self.stripe_days(customer, meter, (day, day + TimeDelta::days(1))).await?;
        Ok(days.get(&day).copied().unwrap_or(0))
    }
}

/// Sets the state of reports `ids`; answers how many changed.
async fn set_state(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    state: &str,
    at: DateTime<Utc>,
) -> Result<usize, ReportingError> {
    let changed = diesel::update(
        meter_reports::table.filter(meter_reports::id.eq_any(ids)).filter(meter_reports::state.eq("pending")),
    )
    .set((meter_reports::state.eq(state), meter_reports::sent_at.eq(at)))
    .execute(conn)
    .await?;
    if state == "accepted" {
        crate::metrics::STRIPE_REPORTS_SENT.inc_by(u64::try_from(changed).unwrap_or(u64::MAX));
    }
    Ok(changed)
}
