//! Reconciliation with Stripe: its meter event summaries per customer, meter and day against
//! the accepted reports; a difference is a `stripe_drift` finding.

use super::{Reporter, ReportingError, day_start, last_closed_day, record_finding};
use crate::quantise;
use crate::schema::reconciliation_findings;
use crate::stripe::params;
use chrono::{DateTime, NaiveDate, TimeDelta};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use hopsbridge_domain::OwnerId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A meter whose day differs: its id, Σ accepted quanta, Stripe's quanta.
type Differing = (String, i64, i128);

#[derive(QueryableByName)]
struct AcceptedDay {
    #[diesel(sql_type = SqlUuid)]
    owner_id: Uuid,
    #[diesel(sql_type = Text)]
    customer_id: String,
    #[diesel(sql_type = Text)]
    meter_id: String,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    quanta: i64,
}

#[derive(Deserialize)]
struct DaySummaries {
    data: Vec<DaySummary>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct DaySummary {
    id: String,
    start_time: i64,
    aggregated_value: serde_json::Number,
}

impl Reporter {
    /// Compares, for each of the `days` closed UTC days before now, Stripe's meter event
    /// summaries per customer, meter and day with Σ accepted reports timestamped that day; a
    /// difference is a `stripe_drift` finding (alerted once), an agreement resolves an open one.
    /// One summary request per customer and meter covers every day. Answers the open drifts.
    ///
    /// # Errors
    /// [`ReportingError`].
    pub async fn reconcile_stripe(&self, days: u32) -> Result<usize, ReportingError> {
        let now = self.settings.clock.now();
        let to = last_closed_day(now, self.config.close_after_secs) + TimeDelta::days(1);
        let from = to - TimeDelta::days(i64::from(days.max(1)));
        let mut conn = self.db.conn().await?;
        let ours: Vec<AcceptedDay> = diesel::sql_query(
            "SELECT owner_id, customer_id, meter_id, (event_timestamp AT TIME ZONE 'UTC')::date AS day,
                    sum(delta_quanta)::bigint AS quanta
             FROM meter_reports
             WHERE state = 'accepted' AND event_timestamp >= $1 AND event_timestamp < $2
             GROUP BY 1, 2, 3, 4 ORDER BY 2, 3, 4",
        )
        .bind::<Timestamptz, _>(day_start(from))
        .bind::<Timestamptz, _>(day_start(to))
        .load(&mut conn)
        .await?;
        drop(conn);
        let mut by_meter: BTreeMap<(String, String), (Uuid, BTreeMap<NaiveDate, i64>)> = BTreeMap::new();
        for d in ours {
            by_meter
                .entry((d.customer_id, d.meter_id))
                .or_insert((d.owner_id, BTreeMap::new()))
                .1
                .insert(d.day, d.quanta);
        }
        // Per owner and day, the meters whose totals differ (a finding is per owner-day).
        let mut compared: BTreeMap<(Uuid, NaiveDate), Vec<Differing>> = BTreeMap::new();
        for ((customer, meter), (owner, ours)) in by_meter {
            let theirs = self.stripe_days(&customer, &meter, (from, to)).await?;
            for day in ours.keys().chain(theirs.keys()).copied().collect::<std::collections::BTreeSet<_>>() {
                let (u, t) = (ours.get(&day).copied().unwrap_or(0), theirs.get(&day).copied().unwrap_or(0));
                let differing = compared.entry((owner, day)).or_default();
                if i128::from(u) != t {
                    differing.push((meter.clone(), u, t));
                }
            }
        }
        let mut open = 0;
        let mut conn = self.db.conn().await?;
        for ((owner, day), differing) in compared {
            if differing.is_empty() {
                diesel::update(
                    reconciliation_findings::table
                        .filter(reconciliation_findings::kind.eq("stripe_drift"))
                        .filter(reconciliation_findings::owner_id.eq(OwnerId::from_uuid(owner)))
                        .filter(reconciliation_findings::day.eq(day))
                        .filter(reconciliation_findings::resolved_at.is_null()),
                )
                .set(reconciliation_findings::resolved_at.eq(diesel::dsl::now))
                .execute(&mut conn)
                .await?;
                continue;
            }
            open += 1;
            let text = |pick: &dyn Fn(&Differing) -> u128| {
                differing
                    .iter()
                    .map(|d| format!("{}: {}", d.0, quantise::quanta_text(pick(d))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let ours = text(&|d| u128::try_from(d.1).unwrap_or(0));
            let theirs = text(&|d| u128::try_from(d.2).unwrap_or(0));
            record_finding(&mut conn, &self.settings, ("stripe_drift", owner, day), &ours, &theirs).await?;
        }
        Ok(open)
    }

    /// Stripe's totals per day of `customer`'s events on `meter` in `[from, to)`, in quanta.
    pub(super) async fn stripe_days(
        &self,
        customer: &str,
        meter: &str,
        (from, to): (NaiveDate, NaiveDate),
    ) -> Result<BTreeMap<NaiveDate, i128>, ReportingError> {
        let start = day_start(from).timestamp().to_string();
        let end = day_start(to).timestamp().to_string();
        let mut out = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = params([
                ("customer", customer),
                ("start_time", start.as_str()),
                ("end_time", end.as_str()),
                ("value_grouping_window", "day"),
                ("limit", "100"),
            ]);
            if let Some(a) = &after {
                query.push(("starting_after".into(), a.clone()));
            }
            let page: DaySummaries =
                self.stripe.get(&format!("billing/meters/{meter}/event_summaries"), &query).await?;
            for s in &page.data {
                if let Some(at) = DateTime::from_timestamp(s.start_time, 0) {
                    *out.entry(at.date_naive()).or_default() += to_quanta(&s.aggregated_value);
                }
            }
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// Reconciles with Stripe every `interval` until `cancel` (the first run one interval after
    /// start).
    pub async fn run_reconciliation(self, days: u32, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.reconcile_stripe(days).await {
                Ok(open) => tracing::info!(open_drifts = open, "reports reconciled with Stripe"),
                Err(e) => tracing::warn!(error = %e, "reconciliation with Stripe failed"),
            }
        }
    }
}

/// A summary's `aggregated_value` (a JSON number) in quanta, rounded to the nearest.
fn to_quanta(n: &serde_json::Number) -> i128 {
    let text = n.to_string();
    let value = rust_decimal::Decimal::from_str_exact(&text)
        .or_else(|_| rust_decimal::Decimal::from_scientific(&text))
        .unwrap_or_default();
    let quanta = (value * rust_decimal::Decimal::from(1_000_000_000_i64)).round();
    i128::try_from(quanta).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn summaries_read_as_quanta() {
        let n: serde_json::Number = serde_json::from_str("12.000000001").unwrap();
        assert_eq!(to_quanta(&n), 12_000_000_001);
        let n: serde_json::Number = serde_json::from_str("3").unwrap();
        assert_eq!(to_quanta(&n), 3_000_000_000);
    }
}
