//! The month's cost per owner against their spending cap (shares reached once per month, a
//! `suspend` cap crossed opens a restriction), and the mails a batch owes its owners.

use super::{CAP_ALERTS, Entry, IngestError, Settings, month_of};
use crate::mail::{CapMail, LowBalanceMail, major};
use crate::schema::{accounts, spending_caps};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Date, Integer, Numeric, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{BillingMode, Email, OwnerId, UserId};
use hopsbridge_platform::mail::{self, Alert, MailTemplate};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// Mails and announcements a batch owes, written once it is settled.
#[derive(Debug, Default)]
pub(super) struct Mails {
    /// (owner, threshold, crossing, balance, has card).
    pub(super) low: Vec<(OwnerId, i64, i32, Decimal, bool)>,
    /// (owner, month, percent, spent, cap).
    pub(super) cap: Vec<(OwnerId, NaiveDate, i32, Decimal, i64)>,
}

impl Mails {
    pub(super) async fn send(self, conn: &mut AsyncPgConnection, settings: &Settings) -> Result<(), IngestError> {
        if self.low.is_empty() && self.cap.is_empty() {
            return Ok(());
        }
        let owners: Vec<UserId> =
            self.low.iter().map(|m| m.0.as_user()).chain(self.cap.iter().map(|m| m.0.as_user())).collect();
        let emails: HashMap<UserId, Email> = accounts::table
            .filter(accounts::user_id.eq_any(owners))
            .select((accounts::user_id, accounts::email))
            .load::<(UserId, Email)>(conn)
            .await?
            .into_iter()
            .collect();
        let currency = settings.currency.to_uppercase();
        let link = settings.billing_link();
        let render = |e: askama::Error| mail::MailError::Render(e.to_string());
        for (owner, threshold, crossing, balance, has_card) in self.low {
            let Some(to) = emails.get(&owner.as_user()) else { continue };
            let rendered = LowBalanceMail {
                balance: major(balance),
                threshold: major(Decimal::from(threshold)),
                currency: currency.clone(),
                has_card,
                link: link.clone(),
            }
            .render()
            .map_err(render)?;
            mail::enqueue(conn, &LowBalanceMail::dedup_key(owner, threshold, crossing), to, &rendered).await?;
        }
        let cap_owners: Vec<OwnerId> = self.cap.iter().map(|m| m.0).collect();
        let suspending: HashSet<OwnerId> = if cap_owners.is_empty() {
            HashSet::new()
        } else {
            spending_caps::table
                .filter(spending_caps::owner_id.eq_any(&cap_owners))
                .filter(spending_caps::cap_action.eq("suspend"))
                .select(spending_caps::owner_id)
                .load::<OwnerId>(conn)
                .await?
                .into_iter()
                .collect()
        };
        for (owner, month, percent, spent, cap) in self.cap {
            let suspends = suspending.contains(&owner);
            let month = month.format("%Y-%m").to_string();
            let key = CapMail::dedup_key(owner, &month, percent);
            let body = CapMail {
                month: month.clone(),
                percent,
                spent: major(spent),
                cap: major(Decimal::from(cap)),
                currency: currency.clone(),
                suspends,
                link: link.clone(),
            };
            if let Some(to) = emails.get(&owner.as_user()) {
                mail::enqueue(conn, &key, to, &body.render().map_err(render)?).await?;
            }
            if percent >= 100 {
                let alert = Alert {
                    title: format!("Owner {owner} reached their spending cap for {month}"),
                    lines: vec![
                        format!("Owner: {owner}"),
                        format!("Spent this month: {} of a {} {currency} cap", body.spent, body.cap),
                        if suspends {
                            "The owner's cap suspends: the account is suspended until the next month or a higher cap."
                        } else {
                            "The cap is soft: nothing was stopped."
                        }
                        .to_owned(),
                    ],
                    link: None,
                };
                mail::enqueue_alert(conn, &settings.mail, &key, &alert).await?;
            }
        }
        Ok(())
    }
}

/// Adds the new entries' cost (every mode but free) to their owners' months, and records the
/// spending-cap shares reached, once per owner, month and share; this month's cost at or over a
/// cap whose action is `suspend` opens a `spending_cap` restriction due at once
/// ([`crate::lifecycle`]).
pub(super) async fn track_costs(
    conn: &mut AsyncPgConnection,
    entries: &[&Entry],
    mails: &mut Mails,
    now: DateTime<Utc>,
) -> Result<(), IngestError> {
    let mut added: BTreeMap<(OwnerId, NaiveDate), Decimal> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.mode != BillingMode::Free) {
        *added.entry((e.sample.owner, month_of(e.day))).or_default() += e.cost();
    }
    if added.is_empty() {
        return Ok(());
    }
    #[derive(QueryableByName)]
    struct Total {
        #[diesel(sql_type = SqlUuid)]
        owner_id: Uuid,
        #[diesel(sql_type = Date)]
        month: NaiveDate,
        #[diesel(sql_type = Numeric)]
        cost: Decimal,
    }
    let totals: Vec<Total> = diesel::sql_query(
        "INSERT INTO monthly_costs (owner_id, month, cost) SELECT * FROM unnest($1::uuid[], $2::date[], $3::numeric[])
         ON CONFLICT (owner_id, month) DO UPDATE SET cost = monthly_costs.cost + excluded.cost
         RETURNING owner_id, month, cost",
    )
    .bind::<Array<SqlUuid>, _>(added.keys().map(|(o, _)| o.as_uuid()).collect::<Vec<_>>())
    .bind::<Array<Date>, _>(added.keys().map(|(_, m)| *m).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(added.values().copied().collect::<Vec<_>>())
    .load(conn)
    .await?;
    let owners: Vec<OwnerId> = added.keys().map(|(o, _)| *o).collect();
    let caps: HashMap<OwnerId, i64> = spending_caps::table
        .filter(spending_caps::owner_id.eq_any(&owners))
        .select((spending_caps::owner_id, spending_caps::monthly_cap_minor))
        .load::<(OwnerId, i64)>(conn)
        .await?
        .into_iter()
        .collect();
    if caps.is_empty() {
        return Ok(());
    }
    let mut reached = Vec::new();
    for t in &totals {
        let owner = OwnerId::from(t.owner_id);
        let Some(cap) = caps.get(&owner) else { continue };
        for percent in CAP_ALERTS {
            if t.cost * Decimal::ONE_HUNDRED >= Decimal::from(*cap) * Decimal::from(percent) {
                reached.push((owner, t.month, percent, t.cost, *cap));
            }
        }
    }
    let this_month = month_of(now.date_naive());
    let mut over: Vec<OwnerId> = reached.iter().filter(|r| r.2 == 100 && r.1 == this_month).map(|r| r.0).collect();
    if !over.is_empty() {
        over.sort_unstable_by_key(|o| o.as_uuid());
        over.dedup();
        suspend_over_caps(conn, &over, this_month, now).await?;
    }
    if reached.is_empty() {
        return Ok(());
    }
    #[derive(QueryableByName)]
    struct Sent {
        #[diesel(sql_type = SqlUuid)]
        owner_id: Uuid,
        #[diesel(sql_type = Date)]
        month: NaiveDate,
        #[diesel(sql_type = Integer)]
        percent: i32,
    }
    let sent: Vec<Sent> = diesel::sql_query(
        "INSERT INTO cap_alerts (owner_id, month, percent) SELECT * FROM unnest($1::uuid[], $2::date[], $3::int[])
         ON CONFLICT DO NOTHING RETURNING owner_id, month, percent",
    )
    .bind::<Array<SqlUuid>, _>(reached.iter().map(|r| r.0.as_uuid()).collect::<Vec<_>>())
    .bind::<Array<Date>, _>(reached.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(reached.iter().map(|r| r.2).collect::<Vec<_>>())
    .load(conn)
    .await?;
    let sent: HashSet<(Uuid, NaiveDate, i32)> = sent.into_iter().map(|s| (s.owner_id, s.month, s.percent)).collect();
    mails.cap.extend(reached.into_iter().filter(|r| sent.contains(&(r.0.as_uuid(), r.1, r.2))));
    Ok(())
}

/// Opens a `spending_cap` restriction, due at once, for each of `owners` (in id order, so
/// concurrent batches take the owners' locks alike) whose cap's action is `suspend` and whose
/// cost this month reached it; one open already stays as it is.
async fn suspend_over_caps(
    conn: &mut AsyncPgConnection,
    owners: &[OwnerId],
    month: NaiveDate,
    now: DateTime<Utc>,
) -> Result<(), IngestError> {
    let suspending: HashSet<OwnerId> = spending_caps::table
        .filter(spending_caps::owner_id.eq_any(owners))
        .filter(spending_caps::cap_action.eq("suspend"))
        .select(spending_caps::owner_id)
        .load::<OwnerId>(conn)
        .await?
        .into_iter()
        .collect();
    let detail = month.format("%Y-%m").to_string();
    for owner in owners.iter().filter(|o| suspending.contains(o)) {
        crate::lifecycle::lock_owner(conn, *owner).await?;
        crate::lifecycle::open(conn, *owner, crate::lifecycle::Reason::SpendingCap, &detail, (now, now)).await?;
    }
    Ok(())
}
