//! billing's integrity check (decision 0061): Stripe's subscriptions against billing's accounts.
//!
//! `stripe_subscriptions` lists every subscription Stripe has not cancelled, page by page
//! (`limit` and `starting_after`, while `has_more`), through billing's paced Stripe client
//! (decision 0024), and compares them with the accounts:
//!
//! - `orphan:<subscription>`: a subscription whose customer is no account's and whose
//!   `hopsbridge_user_id` metadata names nobody billing knows;
//! - `unrecorded:<subscription>`: a person's only live subscription in Stripe, which their account
//!   does not record;
//! - `duplicate:<customer>`: two or more live subscriptions of one customer;
//! - `status:<subscription>`: a recorded subscription whose status differs between Stripe and the
//!   account (cancelled in Stripe while live with us, or the other way);
//! - `missing:<subscription>`: a subscription an account records as live that Stripe does not
//!   have at all.
//!
//! A recorded subscription still live with us but absent from the list is read on its own
//! (`GET /v1/subscriptions/{id}`), so an account costs a Stripe call only when it disagrees.
//! Any Stripe failure fails the whole run: nothing is concluded from half a list.

use crate::accounts::ENDED;
use crate::events::USER_ID_METADATA;
use crate::schema::accounts;
use crate::stripe::{List, Stripe, StripeError, Subscription, params};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures::future::BoxFuture;
use hopsbridge_domain::UserId;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::integrity::{Check, Finding};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The check's name.
pub const STRIPE_SUBSCRIPTIONS: &str = "stripe_subscriptions";

/// Subscriptions asked for per page: Stripe's largest page.
pub const PAGE: u32 = 100;

/// `stripe_subscriptions`, registered with the service's integrity checks: billing's paced
/// Stripe client, listing `page` subscriptions at a time.
#[derive(Clone, Debug)]
pub struct StripeSubscriptions {
    /// billing's Stripe client (its pace is shared with every other call billing makes).
    pub stripe: Stripe,
    /// Subscriptions per list page (1-100).
    pub page: u32,
}

impl Check for StripeSubscriptions {
    fn name(&self) -> &str {
        STRIPE_SUBSCRIPTIONS
    }

    fn run<'a>(&'a self, db: &'a Database) -> BoxFuture<'a, anyhow::Result<Vec<Finding>>> {
        Box::pin(stripe_subscriptions(db, &self.stripe, self.page))
    }
}

/// An account as the check compares it.
#[derive(Debug, Clone, Queryable)]
struct Recorded {
    user: UserId,
    customer: Option<String>,
    subscription: Option<String>,
    status: Option<String>,
}

impl Recorded {
    /// Whether billing counts the recorded subscription as one Stripe may still bill on.
    fn live(&self) -> bool {
        self.subscription.is_some() && !self.status.as_deref().is_some_and(|s| ENDED.contains(&s))
    }

    fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("unknown")
    }
}

/// Every live (not cancelled) subscription in Stripe, newest first, `page` at a time.
///
/// # Errors
/// When Stripe fails, or pages without end.
pub async fn live_subscriptions(stripe: &Stripe, page: u32) -> Result<Vec<Subscription>, StripeError> {
    let limit = page.clamp(1, 100).to_string();
    let mut all: Vec<Subscription> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = params([("limit", limit.as_str())]);
        if let Some(cursor) = &after {
            query.push(("starting_after".into(), cursor.clone()));
        }
        let list: List<Subscription> = stripe.get("subscriptions", &query).await?;
        let more = list.has_more;
        let last = list.data.last().map(|s| s.id.clone());
        for s in list.data {
            if seen.insert(s.id.clone()) {
                all.push(s);
            }
        }
        match (more, last) {
            (false, _) => return Ok(all),
            (true, Some(last)) if after.as_ref() != Some(&last) => after = Some(last),
            _ => return Err(StripeError::Transport("Stripe's subscription list has more but did not move on".into())),
        }
    }
}

/// Runs `stripe_subscriptions`: the findings as they are now.
///
/// # Errors
/// When Postgres or Stripe fails; nothing is concluded then.
pub async fn stripe_subscriptions(db: &Database, stripe: &Stripe, page: u32) -> anyhow::Result<Vec<Finding>> {
    let mut conn = db.conn().await?;
    let recorded: Vec<Recorded> = accounts::table
        .filter(accounts::stripe_customer_id.is_not_null().or(accounts::stripe_subscription_id.is_not_null()))
        .select((
            accounts::user_id,
            accounts::stripe_customer_id,
            accounts::stripe_subscription_id,
            accounts::subscription_status,
        ))
        .load(&mut conn)
        .await?;
    // No connection is held while Stripe answers.
    drop(conn);
    let live = live_subscriptions(stripe, page).await?;
    let mut found = compare(&recorded, &live);
    // A recorded subscription live with us that Stripe did not list: cancelled, or unknown.
    let listed: HashSet<&str> = live.iter().map(|s| s.id.as_str()).collect();
    for account in recorded.iter().filter(|a| a.live()) {
        let Some(id) = account.subscription.as_deref().filter(|id| !listed.contains(id)) else { continue };
        match stripe.get::<Subscription>(&format!("subscriptions/{id}"), &Vec::new()).await {
            Ok(theirs) if theirs.status != account.status() => found.push(status_differs(account, &theirs)),
            Ok(_) => {}
            Err(e) if e.status() == Some(404) && e.code() == Some("resource_missing") => found.push(Finding {
                key: format!("missing:{id}"),
                subject: format!("subscription {id}"),
                detail: format!(
                    "billing records subscription {id} ({}) for person {}, but Stripe has no such subscription: \
                     check that billing's key is for the Stripe account (and mode) the subscription was made in; \
                     while it is missing nobody is billed for this person's usage",
                    account.status(),
                    account.user
                ),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

/// The findings of comparing the accounts with Stripe's live subscriptions.
fn compare(recorded: &[Recorded], live: &[Subscription]) -> Vec<Finding> {
    let by_subscription: HashMap<&str, &Recorded> =
        recorded.iter().filter_map(|a| Some((a.subscription.as_deref()?, a))).collect();
    let by_customer: HashMap<&str, &Recorded> =
        recorded.iter().filter_map(|a| Some((a.customer.as_deref()?, a))).collect();
    let by_user: HashMap<String, &Recorded> = recorded.iter().map(|a| (a.user.to_string(), a)).collect();
    let mut per_customer: BTreeMap<&str, Vec<&Subscription>> = BTreeMap::new();
    for s in live {
        per_customer.entry(s.customer.as_str()).or_default().push(s);
    }
    let mut found = Vec::new();
    for s in live {
        let owner = by_subscription.get(s.id.as_str()).copied();
        if let Some(account) = owner {
            if s.status != account.status() {
                found.push(status_differs(account, s));
            }
            continue;
        }
        let person = by_customer
            .get(s.customer.as_str())
            .copied()
            .or_else(|| s.metadata.get(USER_ID_METADATA).and_then(|u| by_user.get(u).copied()));
        let alone = per_customer.get(s.customer.as_str()).is_none_or(|all| all.len() < 2);
        match person {
            None => found.push(Finding {
                key: format!("orphan:{}", s.id),
                subject: format!("subscription {}", s.id),
                detail: format!(
                    "Stripe has subscription {} ({}) of customer {}, which belongs to no billing account: cancel it \
                     in Stripe unless someone should pay on it",
                    s.id, s.status, s.customer
                ),
            }),
            Some(account) if alone => found.push(Finding {
                key: format!("unrecorded:{}", s.id),
                subject: format!("subscription {}", s.id),
                detail: format!(
                    "Stripe has subscription {} ({}) of person {}, whose account records {}: billing does not \
                     count it, so cancel it in Stripe unless it should replace the recorded one",
                    s.id,
                    s.status,
                    account.user,
                    account
                        .subscription
                        .as_deref()
                        .map_or_else(|| "none".to_owned(), |r| format!("{r} ({})", account.status()))
                ),
            }),
            Some(_) => {}
        }
    }
    for (customer, subscriptions) in per_customer.into_iter().filter(|(_, all)| all.len() > 1) {
        let account = by_customer.get(customer).copied().or_else(|| {
            subscriptions.iter().find_map(|s| s.metadata.get(USER_ID_METADATA).and_then(|u| by_user.get(u).copied()))
        });
        let ids: Vec<String> = subscriptions.iter().map(|s| format!("{} ({})", s.id, s.status)).collect();
        let kept = account.and_then(|a| a.subscription.as_deref());
        let keep = match kept {
            Some(kept) if subscriptions.iter().any(|s| s.id == kept) => {
                format!("cancel every one but {kept}, the one billing records")
            }
            _ => "keep the one billing should record and cancel the others".to_owned(),
        };
        found.push(Finding {
            key: format!("duplicate:{customer}"),
            subject: account.map_or_else(|| format!("customer {customer}"), |a| format!("person {}", a.user)),
            detail: format!(
                "customer {customer}{} has {} live subscriptions in Stripe, {}: each bills the same usage; {keep} \
                 in Stripe",
                account.map_or_else(String::new, |a| format!(" (person {})", a.user)),
                subscriptions.len(),
                ids.join(", "),
            ),
        });
    }
    found
}

/// `status:<subscription>`: Stripe and the account disagree on the subscription's status.
fn status_differs(account: &Recorded, theirs: &Subscription) -> Finding {
    let ended = |s: &str| ENDED.contains(&s);
    let what = if !ended(&theirs.status) && ended(account.status()) {
        "Stripe may still bill on it while billing counts it ended: cancel it in Stripe"
    } else {
        "billing missed a customer.subscription.* webhook: resend the subscription's latest one from Stripe's \
         dashboard (billing reads the subscription's current state when it applies one)"
    };
    Finding {
        key: format!("status:{}", theirs.id),
        subject: format!("subscription {}", theirs.id),
        detail: format!(
            "subscription {} of person {} is {} in Stripe and {} in billing; {what}",
            theirs.id,
            account.user,
            theirs.status,
            account.status()
        ),
    }
}
