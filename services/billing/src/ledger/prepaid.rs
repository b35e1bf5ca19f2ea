//! Prepaid entries paid from the owner's grants, window by window: what credit cannot pay is
//! billed postpaid by the hybrid rule with a card on file, else recorded unpaid with one
//! `CreditsExhaustedV1` per exhaustion; low-balance crossings are noted for mail.

use super::costs::Mails;
use super::{Entry, IngestError, Settings};
use crate::credits::{self, Grant};
use crate::money::{self, RESOURCES};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Integer, Numeric, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::CreditsExhaustedV1;
use hopsbridge_domain::OwnerId;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// What a prepaid entry came to.
#[derive(Debug, Clone, Default)]
struct Settled {
    credits: Decimal,
    unpaid: Decimal,
    over: [u64; RESOURCES],
}

/// The owners among `owners` with a usable card on file.
async fn with_card(conn: &mut AsyncPgConnection, owners: &[OwnerId]) -> QueryResult<HashSet<OwnerId>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        user_id: Uuid,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT a.user_id FROM accounts a WHERE a.user_id = ANY($1) AND EXISTS (
             SELECT 1 FROM payment_methods p WHERE p.stripe_customer_id = a.stripe_customer_id
             AND p.attached_at IS NOT NULL AND p.detached_at IS NULL)",
    )
    .bind::<Array<SqlUuid>, _>(owners.iter().map(|o| o.as_uuid()).collect::<Vec<_>>())
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| OwnerId::from(r.user_id)).collect())
}

/// Pays the new prepaid entries from their owners' grants, in window order.
pub(super) async fn settle_prepaid(
    conn: &mut AsyncPgConnection,
    settings: &Settings,
    entries: &[&Entry],
    mails: &mut Mails,
) -> Result<(), IngestError> {
    let mut owners: Vec<OwnerId> = entries.iter().map(|e| e.sample.owner).collect();
    owners.sort_unstable();
    owners.dedup();
    let carded = with_card(conn, &owners).await?;
    let mut grants: BTreeMap<OwnerId, Vec<Grant>> = BTreeMap::new();
    for g in credits::lock_spendable(conn, &owners).await? {
        grants.entry(g.owner_id).or_default().push(g);
    }
    let now = settings.clock.now();
    let usable_now = |gs: &[Grant]| gs.iter().filter(|g| g.usable_at(now)).map(|g| g.remaining).sum::<Decimal>();
    let before: HashMap<OwnerId, Decimal> = grants.iter().map(|(o, gs)| (*o, usable_now(gs))).collect();
    let mut settled = Vec::with_capacity(entries.len());
    let mut deductions: Vec<(&Entry, Uuid, Decimal)> = Vec::new();
    let mut exhausted: Vec<OwnerId> = Vec::new();
    let mut changed: HashSet<Uuid> = HashSet::new();
    for e in entries {
        let owner = e.sample.owner;
        let at = e.sample.window_start;
        let owned = grants.entry(owner).or_default();
        let available: Decimal = owned.iter().filter(|g| g.usable_at(at)).map(|g| g.remaining).sum();
        let cost = e.cost();
        let outcome = if available >= cost {
            Settled { credits: cost, ..Settled::default() }
        } else if carded.contains(&owner) {
            let split = money::overflow(e.costs, e.prices, available)?;
            Settled { credits: split.credits, unpaid: Decimal::ZERO, over: split.over_quanta }
        } else {
            exhausted.push(owner);
            Settled { credits: available, unpaid: cost - available, over: [0; RESOURCES] }
        };
        let mut left = outcome.credits;
        for g in owned.iter_mut().filter(|g| g.usable_at(at)) {
            if left.is_zero() {
                break;
            }
            let take = left.min(g.remaining);
            g.remaining -= take;
            left -= take;
            changed.insert(g.id);
            deductions.push((*e, g.id, take));
        }
        settled.push((*e, outcome));
    }
    record_settled(conn, &settled).await?;
    let changed: Vec<&Grant> = grants.values().flatten().filter(|g| changed.contains(&g.id)).collect();
    if !changed.is_empty() {
        diesel::sql_query(
            "UPDATE credit_grants g SET remaining = u.remaining
             FROM unnest($1::uuid[], $2::numeric[]) AS u(id, remaining) WHERE g.id = u.id",
        )
        .bind::<Array<SqlUuid>, _>(changed.iter().map(|g| g.id).collect::<Vec<_>>())
        .bind::<Array<Numeric>, _>(changed.iter().map(|g| g.remaining.normalize()).collect::<Vec<_>>())
        .execute(conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO credit_deductions (sample_id, day, grant_id, owner_id, amount, window_start)
             SELECT * FROM unnest($1::uuid[], $2::date[], $3::uuid[], $4::uuid[], $5::numeric[], $6::timestamptz[])",
        )
        .bind::<Array<SqlUuid>, _>(deductions.iter().map(|d| d.0.sample.sample_id).collect::<Vec<_>>())
        .bind::<Array<Date>, _>(deductions.iter().map(|d| d.0.day).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(deductions.iter().map(|d| d.1).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(deductions.iter().map(|d| d.0.sample.owner.as_uuid()).collect::<Vec<_>>())
        .bind::<Array<Numeric>, _>(deductions.iter().map(|d| d.2.normalize()).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(deductions.iter().map(|d| d.0.sample.window_start).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    }
    if !exhausted.is_empty() {
        announce_exhaustion(conn, exhausted).await?;
    }
    // Low balances: a threshold the balance fell from above to at or below is crossed, once.
    let mut crossed: Vec<(OwnerId, i64, Decimal)> = Vec::new();
    for (owner, gs) in &grants {
        let (was, now) = (before.get(owner).copied().unwrap_or_default(), usable_now(gs));
        for t in &settings.thresholds {
            let t_minor = Decimal::from(*t);
            if was > t_minor && now <= t_minor {
                crossed.push((*owner, *t, now));
            }
        }
    }
    if !crossed.is_empty() {
        #[derive(QueryableByName)]
        struct Crossing {
            #[diesel(sql_type = SqlUuid)]
            owner_id: Uuid,
            #[diesel(sql_type = BigInt)]
            threshold_minor: i64,
            #[diesel(sql_type = Integer)]
            crossings: i32,
        }
        let counted: Vec<Crossing> = diesel::sql_query(
            "INSERT INTO low_balance_alerts (owner_id, threshold_minor, crossings)
             SELECT o, t, 1 FROM unnest($1::uuid[], $2::bigint[]) AS u(o, t)
             ON CONFLICT (owner_id, threshold_minor) DO UPDATE
                 SET crossings = low_balance_alerts.crossings + 1, last_crossed_at = now()
             RETURNING owner_id, threshold_minor, crossings",
        )
        .bind::<Array<SqlUuid>, _>(crossed.iter().map(|c| c.0.as_uuid()).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(crossed.iter().map(|c| c.1).collect::<Vec<_>>())
        .load(conn)
        .await?;
        for c in counted {
            let owner = OwnerId::from(c.owner_id);
            let balance =
                crossed.iter().find(|x| x.0 == owner && x.1 == c.threshold_minor).map(|x| x.2).unwrap_or_default();
            mails.low.push((owner, c.threshold_minor, c.crossings, balance, carded.contains(&owner)));
        }
    }
    Ok(())
}

/// Records what each prepaid entry came to.
async fn record_settled(conn: &mut AsyncPgConnection, settled: &[(&Entry, Settled)]) -> Result<(), IngestError> {
    let over = |r: usize| settled.iter().map(|(_, s)| i64::try_from(s.over[r]).unwrap_or(i64::MAX)).collect::<Vec<_>>();
    diesel::sql_query(
        "UPDATE ledger_entries l SET credits_paid = u.credits, unpaid = u.unpaid,
             cpu_over_quanta = u.cpu, memory_over_quanta = u.memory, gpu_over_quanta = u.gpu,
             storage_offline_over_quanta = u.offline, storage_online_over_quanta = u.online
         FROM unnest($1::uuid[], $2::date[], $3::numeric[], $4::numeric[], $5::bigint[], $6::bigint[], $7::bigint[],
                     $8::bigint[], $9::bigint[])
             AS u(sample_id, day, credits, unpaid, cpu, memory, gpu, offline, online)
         WHERE l.sample_id = u.sample_id AND l.day = u.day",
    )
    .bind::<Array<SqlUuid>, _>(settled.iter().map(|(e, _)| e.sample.sample_id).collect::<Vec<_>>())
    .bind::<Array<Date>, _>(settled.iter().map(|(e, _)| e.day).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(settled.iter().map(|(_, s)| s.credits.normalize()).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(settled.iter().map(|(_, s)| s.unpaid.normalize()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(over(0))
    .bind::<Array<BigInt>, _>(over(1))
    .bind::<Array<BigInt>, _>(over(2))
    .bind::<Array<BigInt>, _>(over(3))
    .bind::<Array<BigInt>, _>(over(4))
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks `owners` exhausted; those not exhausted already (since their last grant) announce
/// `CreditsExhaustedV1`.
async fn announce_exhaustion(conn: &mut AsyncPgConnection, mut owners: Vec<OwnerId>) -> Result<(), IngestError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        owner_id: Uuid,
    }
    owners.sort_unstable();
    owners.dedup();
    let newly: Vec<Row> = diesel::sql_query(
        "INSERT INTO credit_states (owner_id, exhausted_at, exhaustions) SELECT o, now(), 1 FROM unnest($1::uuid[]) AS o
         ON CONFLICT (owner_id) DO UPDATE SET exhausted_at = now(), exhaustions = credit_states.exhaustions + 1
             WHERE credit_states.exhausted_at IS NULL
         RETURNING owner_id",
    )
    .bind::<Array<SqlUuid>, _>(owners.iter().map(|o| o.as_uuid()).collect::<Vec<_>>())
    .load(conn)
    .await?;
    let events: Vec<CreditsExhaustedV1> =
        newly.iter().map(|r| CreditsExhaustedV1 { user_id: r.owner_id.to_string() }).collect();
    hopsbridge_platform::events::enqueue_all(conn, &events, None).await?;
    Ok(())
}
