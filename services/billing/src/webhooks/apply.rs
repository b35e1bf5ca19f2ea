//! One transaction's worth of events: claimed together, their accounts locked together, their
//! effects' statements pipelined in waves, and their announcements written together
//! (decisions 0028 and 0029).
//!
//! The event ids are claimed in `processed_stripe_events` in the same transaction as the
//! effects, so a duplicate, even one delivered concurrently, waits on the claim and then does
//! nothing. The first usable payment method of an account publishes `PaymentMethodAddedV1` and
//! losing the last one `PaymentMethodRemovedV1`, through the outbox in the same transaction.

use super::effects::{self, Done, Effect};
use super::{ApplyError, Event, Outcome};
use crate::accounts;
use crate::stripe::Stripe;
use diesel_async::AsyncPgConnection;
use hopsbridge_contracts::events::{PaymentMethodAddedV1, PaymentMethodRemovedV1};
use hopsbridge_domain::UserId;
use hopsbridge_platform::events::{enqueue, enqueue_all};
use std::collections::{HashMap, HashSet};

/// Claims the events of `work` and applies the effects of those claimed now, in the caller's
/// transaction: every account involved is locked first (in customer order), and payment
/// methods are counted once per account, then kept up to date as the effects apply. Answers
/// each event's outcome, in order; an event twice in `work` is applied once.
pub(super) async fn apply_all(
    c: &mut AsyncPgConnection,
    stripe: &Stripe,
    work: &[(Event, Effect)],
) -> Result<Vec<Outcome>, ApplyError> {
    let mut claimed =
        accounts::claim_events(c, work.iter().map(|(e, _)| (e.id.as_str(), e.kind.as_str(), e.created)).collect())
            .await?;
    let applied: Vec<bool> = work.iter().map(|(event, _)| claimed.remove(&event.id)).collect();
    let effects = || work.iter().zip(&applied).filter(|(_, applied)| **applied).map(|((_, effect), _)| effect);
    let locks = effects().filter(|e| !matches!(e, Effect::CheckoutFollowUp { .. })).filter_map(Effect::customer);
    let counts = effects().filter(|e| matches!(e, Effect::PaymentMethod(_))).filter_map(Effect::customer);
    let mut locked = Locked::take(c, locks.collect(), counts.collect()).await?;
    let claimed: Vec<(&Effect, i64)> = work
        .iter()
        .zip(&applied)
        .filter(|(_, applied)| **applied)
        .map(|((event, effect), _)| (effect, event.created))
        .collect();
    apply_effects(c, stripe, &mut locked, &claimed).await?;
    Ok(applied.into_iter().map(|applied| if applied { Outcome::Applied } else { Outcome::Duplicate }).collect())
}

/// The accounts a transaction has locked, by Stripe customer: the user, and the account's usable
/// payment methods (read after locking, for the customers asked, then kept up to date by each
/// change the transaction makes: nobody else changes a locked account's payment methods).
#[derive(Debug, Default)]
pub(super) struct Locked(HashMap<String, (UserId, HashSet<String>)>);

impl Locked {
    /// Locks the accounts of `customers` (unknown ones are left out) and reads the usable
    /// payment methods of those in `counted`.
    pub(super) async fn take(
        c: &mut AsyncPgConnection,
        customers: Vec<&str>,
        counted: Vec<&str>,
    ) -> Result<Self, ApplyError> {
        if customers.is_empty() {
            return Ok(Self::default());
        }
        let users = accounts::lock_by_customers(c, customers).await?;
        let mut usable = accounts::usable_payment_methods(c, counted).await?;
        Ok(Self(
            users
                .into_iter()
                .map(|(customer, user)| {
                    let cards = usable.remove(&customer).unwrap_or_default();
                    (customer, (user, cards))
                })
                .collect(),
        ))
    }

    /// The user whose account has `customer`, if it is locked.
    pub(super) fn user(&self, customer: &str) -> Option<UserId> {
        self.0.get(customer).map(|(user, _)| *user)
    }

    /// Whether the account of `customer` is locked.
    pub(super) fn holds(&self, customer: &str) -> bool {
        self.0.contains_key(customer)
    }
}

/// Splits `effects` into runs, in order, in which no two effects write the same row.
fn waves<'a, T>(effects: &'a [(&'a Effect, T)]) -> Vec<&'a [(&'a Effect, T)]> {
    let mut waves = Vec::new();
    let (mut start, mut rows) = (0, HashSet::new());
    for (i, (effect, _)) in effects.iter().enumerate() {
        if let Some(row) = effect.row()
            && !rows.insert(row)
        {
            waves.push(&effects[start..i]);
            start = i;
            rows.clear();
            rows.insert(row);
        }
    }
    if start < effects.len() {
        waves.push(&effects[start..]);
    }
    waves
}

/// Applies `effects` (each with its event's time) on the accounts in `locked`, as if one after
/// another in order. The statements of a wave (no two on the same row) are sent to Postgres
/// together, pipelined on the transaction's connection, so a group costs a few round trips
/// instead of one per effect. Then the changes to each account's usable payment methods are
/// replayed in order: the first usable one announces `PaymentMethodAddedV1` and losing the last
/// `PaymentMethodRemovedV1`, written to the outbox together.
pub(super) async fn apply_effects(
    c: &mut AsyncPgConnection,
    stripe: &Stripe,
    locked: &mut Locked,
    effects: &[(&Effect, i64)],
) -> Result<(), ApplyError> {
    let mut done = Vec::with_capacity(effects.len());
    {
        let (shared, known): (&AsyncPgConnection, &Locked) = (c, locked);
        for wave in waves(effects) {
            let results = futures::future::try_join_all(
                wave.iter().map(|(effect, at)| effects::run(shared, stripe, known, effect, *at)),
            )
            .await?;
            done.extend(results);
        }
    }
    let mut announced = Vec::new();
    for ((effect, _), done) in effects.iter().zip(done) {
        let Effect::PaymentMethod(change) = effect else { continue };
        let customer = change.customer();
        let Some((user, usable)) = locked.0.get_mut(customer) else { continue };
        let before = usable.len();
        // The row says whose the payment method is: only the account's own rows count for it.
        match done {
            Done::Attached(Some(row)) if row.usable && row.customer == customer => {
                usable.insert(change.pm().to_owned());
            }
            Done::Detached(owner) if owner == customer => {
                usable.remove(change.pm());
            }
            _ => {}
        }
        let (after, user_id, stripe_customer_id) = (usable.len(), user.to_string(), customer.to_owned());
        if before == 0 && after > 0 {
            announced.push(Announcement::Added(PaymentMethodAddedV1 { user_id, stripe_customer_id }));
        } else if before > 0 && after == 0 {
            announced.push(Announcement::Removed(PaymentMethodRemovedV1 { user_id, stripe_customer_id }));
        }
    }
    announce(c, announced).await
}

/// An account gained its first usable payment method, or lost its last.
#[derive(Debug)]
enum Announcement {
    Added(PaymentMethodAddedV1),
    Removed(PaymentMethodRemovedV1),
}

/// Writes a transaction's announcements to the outbox in order: in one insert when they are all
/// of one type (the usual case), otherwise one by one.
async fn announce(c: &mut AsyncPgConnection, announced: Vec<Announcement>) -> Result<(), ApplyError> {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for a in &announced {
        match a {
            Announcement::Added(e) => added.push(e.clone()),
            Announcement::Removed(e) => removed.push(e.clone()),
        }
    }
    if removed.is_empty() {
        enqueue_all(c, &added, None).await?;
    } else if added.is_empty() {
        enqueue_all(c, &removed, None).await?;
    } else {
        for a in announced {
            match a {
                Announcement::Added(e) => enqueue(c, &e, None).await?,
                Announcement::Removed(e) => enqueue(c, &e, None).await?,
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::effects::samples::{attach, checkout, detach};
    use super::*;

    #[test]
    fn a_wave_never_writes_one_row_twice_and_waves_keep_the_events_order() {
        let (detach, checkout) = (detach("pm_1", "cus_a"), checkout("evt_3", "cus_a"));
        let effects = [
            (&attach("pm_1", "cus_a"), 1),
            (&attach("pm_2", "cus_b"), 2),
            (&checkout, 3),
            (&Effect::Nothing, 4),
            // pm_1 again: a new wave, after everything before it.
            (&attach("pm_1", "cus_a"), 5),
            (&detach, 6),
            (&attach("pm_2", "cus_b"), 7),
        ];
        let split = waves(&effects);
        let times: Vec<Vec<i32>> = split.iter().map(|w| w.iter().map(|(_, t)| *t).collect()).collect();
        assert_eq!(times, vec![vec![1, 2, 3, 4], vec![5], vec![6, 7]]);
        assert!(waves(&effects[..0]).is_empty());
    }
}
