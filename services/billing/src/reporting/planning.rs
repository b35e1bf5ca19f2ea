//! Planning a pass: per owner, closed day and price version, what the ledger says Stripe must
//! bill minus what accepted reports carried, written `pending` before anything is sent; a day
//! at a price Stripe does not have yet waits.

use super::{
    BATCH, FINALISED_AFTER, PassOutcome, Report, Reporter, ReportingError, Scope, WINDOW_DAYS, day_start, identifier,
    month_start,
};
use crate::catalog;
use crate::events::next_month;
use crate::quantise::{self, MAX_SIGNIFICANT_DIGITS};
use crate::usage::{self, DayTotal};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::OwnerId;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

#[derive(QueryableByName)]
struct Reported {
    #[diesel(sql_type = SqlUuid)]
    owner_id: Uuid,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = SqlUuid)]
    price_id: Uuid,
    #[diesel(sql_type = BigInt)]
    accepted: i64,
    #[diesel(sql_type = Integer)]
    revision: i32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pending: bool,
}

#[derive(QueryableByName)]
struct Billed {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Text)]
    customer: String,
    #[diesel(sql_type = Nullable<Text>)]
    subscription: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
}

#[derive(QueryableByName)]
struct ItemRow {
    #[diesel(sql_type = Text)]
    subscription_id: String,
    #[diesel(sql_type = SqlUuid)]
    price_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    added_at: DateTime<Utc>,
}

impl Reporter {
    /// The reports `scope`'s days lack, written `pending`.
    pub(super) async fn plan(
        &self,
        scope: Scope,
        now: DateTime<Utc>,
        outcome: &mut PassOutcome,
    ) -> Result<Vec<Report>, ReportingError> {
        let from = now.date_naive() - TimeDelta::days(WINDOW_DAYS - 1);
        let through = scope.through;
        if through < from {
            return Ok(Vec::new());
        }
        let mut conn = self.db.conn().await?;
        let desired: BTreeMap<OwnerId, Vec<DayTotal>> = match scope.owner {
            Some(owner) => BTreeMap::from([(owner, usage::day_totals(&mut conn, owner, from, through).await?)]),
            None => usage::all_day_totals(&mut conn, from, through).await?,
        };
        let reported: Vec<Reported> = diesel::sql_query(
            "SELECT owner_id, day, price_id,
                    coalesce(sum(delta_quanta) FILTER (WHERE state = 'accepted'), 0)::bigint AS accepted,
                    max(revision) AS revision, bool_or(state = 'pending') AS pending
             FROM meter_reports WHERE day BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR owner_id = $3)
             GROUP BY owner_id, day, price_id",
        )
        .bind::<Date, _>(from)
        .bind::<Date, _>(through)
        .bind::<Nullable<SqlUuid>, _>(scope.owner.map(|o| o.as_uuid()))
        .load(&mut conn)
        .await?;
        let reported: HashMap<(Uuid, NaiveDate, Uuid), Reported> =
            reported.into_iter().map(|r| ((r.owner_id, r.day, r.price_id), r)).collect();
        let billed: Vec<Billed> = diesel::sql_query(
            "SELECT user_id, stripe_customer_id AS customer, stripe_subscription_id AS subscription,
                    subscription_status AS status
             FROM accounts WHERE stripe_customer_id IS NOT NULL AND ($1::uuid IS NULL OR user_id = $1)",
        )
        .bind::<Nullable<SqlUuid>, _>(scope.owner.map(|o| o.as_uuid()))
        .load(&mut conn)
        .await?;
        let billed: HashMap<Uuid, Billed> = billed.into_iter().map(|b| (b.user_id, b)).collect();
        let items: Vec<ItemRow> = diesel::sql_query(
            "SELECT i.subscription_id, i.price_id, i.added_at FROM subscription_items i
             JOIN accounts a ON a.stripe_subscription_id = i.subscription_id
             WHERE ($1::uuid IS NULL OR a.user_id = $1)",
        )
        .bind::<Nullable<SqlUuid>, _>(scope.owner.map(|o| o.as_uuid()))
        .load(&mut conn)
        .await?;
        let items: HashMap<(String, Uuid), DateTime<Utc>> =
            items.into_iter().map(|i| ((i.subscription_id, i.price_id), i.added_at)).collect();
        // What Stripe has: the pass's sync recorded every version it could bring in step.
        let meters: HashMap<Uuid, catalog::StripePrice> = crate::schema::stripe_prices::table
            .select(catalog::StripePrice::as_select())
            .load(&mut conn)
            .await?
            .into_iter()
            .map(|p| (p.price_id, p))
            .collect();
        let book = crate::prices::book(&mut conn).await?;

        let open_period = month_start(now);
        let mut planned = Vec::new();
        for (owner, days) in desired {
            let owner = owner.as_uuid();
            let Some(account) = billed.get(&owner) else {
                tracing::warn!(%owner, "usage to report for an owner without a Stripe customer");
                continue;
            };
            for total in days {
                let key = (owner, total.day, total.price_id);
                let before = reported.get(&key);
                if before.is_some_and(|r| r.pending) {
                    continue;
                }
                let accepted = before.map_or(0, |r| r.accepted);
                let quanta = total.quanta();
                let Ok(desired) = i64::try_from(quanta) else {
                    outcome.findings +=
                        self.finding(&mut conn, "report_too_large", owner, total.day, &quanta.to_string(), "-").await?;
                    continue;
                };
                let delta = desired - accepted;
                if delta < 0 {
                    outcome.findings += self
                        .finding(
                            &mut conn,
                            "report_negative",
                            owner,
                            total.day,
                            &desired.to_string(),
                            &accepted.to_string(),
                        )
                        .await?;
                    continue;
                }
                if delta == 0 {
                    continue;
                }
                let delta_quanta = u128::try_from(delta).unwrap_or(0);
                if quantise::significant_digits(delta_quanta) > MAX_SIGNIFICANT_DIGITS {
                    outcome.findings += self
                        .finding(
                            &mut conn,
                            "report_too_large",
                            owner,
                            total.day,
                            &quantise::quanta_text(delta_quanta),
                            "-",
                        )
                        .await?;
                    continue;
                }
                let Some(meter) = meters.get(&total.price_id) else {
                    let price = total.price_id;
                    tracing::warn!(%owner, day = %total.day, %price, "waiting for the price's Stripe meter");
                    outcome.waiting += 1;
                    continue;
                };
                let item = account.subscription.as_ref().and_then(|s| items.get(&(s.clone(), total.price_id)));
                // The sync gives a live subscription an item of the version in force; until
                // Stripe has it, an event would be counted by the meter and billed by no item.
                let live = account.subscription.is_some()
                    && !account.status.as_deref().is_some_and(|s| crate::accounts::ENDED.contains(&s));
                let current = book.in_force(total.resource, now).is_some_and(|p| p.id == total.price_id);
                if item.is_none() && live && current {
                    let price = total.price_id;
                    tracing::warn!(%owner, day = %total.day, %price, "waiting for the subscription's item");
                    outcome.waiting += 1;
                    continue;
                }
                let added = item.copied().unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                let period_end = next_month(day_start(total.day));
                let (event_timestamp, carried_into) = if now >= period_end + FINALISED_AFTER {
                    (open_period.max(added), Some(open_period.date_naive()))
                } else {
                    (day_start(total.day).max(added), None)
                };
                let revision = before.map_or(1, |r| r.revision + 1);
                planned.push(Report {
                    id: Uuid::now_v7(),
                    owner_id: owner,
                    day: total.day,
                    resource: total.resource.to_string(),
                    price_id: total.price_id,
                    revision,
                    identifier: identifier(owner, total.day, total.price_id, revision),
                    delta_quanta: delta,
                    total_quanta: desired,
                    event_timestamp,
                    carried_into,
                    state: "pending".to_owned(),
                    customer_id: account.customer.clone(),
                    meter_id: meter.meter_id.clone(),
                    event_name: meter.event_name.clone(),
                    created_at: now,
                    sent_at: None,
                });
            }
        }
        let mut written = Vec::with_capacity(planned.len());
        for chunk in planned.chunks(BATCH) {
            let ids: std::collections::HashSet<Uuid> = insert_pending(&mut conn, chunk).await?.into_iter().collect();
            written.extend(chunk.iter().filter(|r| ids.contains(&r.id)).cloned());
        }
        Ok(written)
    }
}

/// Writes `reports` `pending` in one statement; answers the ids written (a report another
/// replica planned first is left to it).
async fn insert_pending(conn: &mut AsyncPgConnection, reports: &[Report]) -> QueryResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let Some(first) = reports.first() else { return Ok(Vec::new()) };
    let ids: Vec<Id> = diesel::sql_query(
        "INSERT INTO meter_reports (id, owner_id, day, resource, price_id, revision, identifier, delta_quanta,
                                    total_quanta, event_timestamp, carried_into, customer_id, meter_id, event_name,
                                    state, created_at)
         SELECT u.*, 'pending', $15 FROM unnest($1::uuid[], $2::uuid[], $3::date[], $4::text[], $5::uuid[],
                $6::int[], $7::text[], $8::bigint[], $9::bigint[], $10::timestamptz[], $11::date[], $12::text[],
                $13::text[], $14::text[]) AS u
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind::<Array<SqlUuid>, _>(reports.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(reports.iter().map(|r| r.owner_id).collect::<Vec<_>>())
    .bind::<Array<Date>, _>(reports.iter().map(|r| r.day).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.resource.clone()).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(reports.iter().map(|r| r.price_id).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(reports.iter().map(|r| r.revision).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.identifier.clone()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(reports.iter().map(|r| r.delta_quanta).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(reports.iter().map(|r| r.total_quanta).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(reports.iter().map(|r| r.event_timestamp).collect::<Vec<_>>())
    .bind::<Array<Nullable<Date>>, _>(reports.iter().map(|r| r.carried_into).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.customer_id.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.meter_id.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(reports.iter().map(|r| r.event_name.clone()).collect::<Vec<_>>())
    .bind::<Timestamptz, _>(first.created_at)
    .load(conn)
    .await?;
    Ok(ids.into_iter().map(|i| i.id).collect())
}
