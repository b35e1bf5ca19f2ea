//! The lifecycle's event handlers: cards removed and added, credits exhausted, projects counted,
//! accounts deleted, and login repair on sign-in ([`SignedIn`]).

use super::{Lifecycle, Reason, closed, lock_owner, open, projects, when};
use crate::accounts;
use crate::catalog::Prices;
use crate::deletion::UserDeleted;
use crate::events::{UserCreated, UserCreatedHooks, db_failure};
use crate::plans::{self, Plan};
use crate::schema::{closed_owners, project_counts, restrictions};
use crate::stripe::Stripe;
use chrono::{DateTime, TimeDelta};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_contracts::events::{
    CreditsExhaustedV1, PaymentMethodAddedV1, PaymentMethodRemovedV1, ProjectsCountedV1, UserCreatedV1, UserDeletedV1,
    UserSignedInV1,
};
use hopsbridge_domain::{OwnerId, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::db::Database;
use hopsbridge_platform::events::{Handler, HandlerError, ReceivedEvent};
use uuid::Uuid;

fn user_of(raw: &str) -> Result<UserId, HandlerError> {
    raw.parse().map_err(|_| HandlerError::Reject(format!("user_id is not a UUID: {raw:?}")))
}

impl Handler<PaymentMethodRemovedV1> for Lifecycle {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<PaymentMethodRemovedV1>,
    ) -> Result<(), HandlerError> {
        let user = user_of(&event.payload.user_id)?;
        self.downgrade(conn, user, plans::reason::CARD_REMOVED).await
    }
}

impl Handler<PaymentMethodAddedV1> for Lifecycle {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<PaymentMethodAddedV1>,
    ) -> Result<(), HandlerError> {
        let owner = OwnerId::from_uuid(user_of(&event.payload.user_id)?.as_uuid());
        lock_owner(conn, owner).await.map_err(db_failure)?;
        self.clear(conn, owner, Reason::CreditsExhausted, self.clock.now()).await.map_err(HandlerError::Retry)?;
        Ok(())
    }
}

impl Handler<CreditsExhaustedV1> for Lifecycle {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<CreditsExhaustedV1>,
    ) -> Result<(), HandlerError> {
        let user = user_of(&event.payload.user_id)?;
        let owner = OwnerId::from_uuid(user.as_uuid());
        let Some(account) = accounts::lock(conn, user).await.map_err(db_failure)? else { return Ok(()) };
        if closed(conn, owner).await.map_err(db_failure)? {
            return Ok(());
        }
        if let Some(customer) = account.stripe_customer_id.as_deref() {
            let usable = accounts::usable_payment_methods(conn, vec![customer]).await.map_err(db_failure)?;
            if usable.get(customer).is_some_and(|cards| !cards.is_empty()) {
                return Ok(());
            }
        }
        lock_owner(conn, owner).await.map_err(db_failure)?;
        let now = self.clock.now();
        let deadline = now + TimeDelta::hours(i64::from(self.config.credits_grace_hours));
        let Some(id) = open(conn, owner, Reason::CreditsExhausted, "", (now, deadline)).await.map_err(db_failure)?
        else {
            return Ok(());
        };
        let lines = vec![
            "Your Hopsbridge credits ran out and no card is on file to pay for more usage.".to_owned(),
            format!("Buy credits or add a card before {}: after that the account is suspended.", when(deadline)),
        ];
        let mail =
            self.standing("billing.credits_exhausted", "Your Hopsbridge credits ran out".to_owned(), lines, Vec::new());
        self.mail_owner(conn, owner, &format!("billing.credits_exhausted:{id}"), mail)
            .await
            .map_err(HandlerError::Retry)?;
        Ok(())
    }
}

impl Handler<ProjectsCountedV1> for Lifecycle {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<ProjectsCountedV1>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let owner = OwnerId::from_uuid(user_of(&p.user_id)?.as_uuid());
        let cluster: Uuid = p
            .cluster_id
            .parse()
            .map_err(|_| HandlerError::Reject(format!("cluster_id is not a UUID: {:?}", p.cluster_id)))?;
        let synced = DateTime::from_timestamp(p.synced_at_unix_seconds, 0)
            .ok_or_else(|| HandlerError::Reject(format!("synced_at out of range: {}", p.synced_at_unix_seconds)))?;
        if p.active_projects < 0 {
            return Err(HandlerError::Reject(format!("active_projects is negative: {}", p.active_projects)));
        }
        // The upsert's WHERE: diesel offers it as FilterDsl, which the prelude does not bring.
        use diesel::query_dsl::methods::FilterDsl;
        lock_owner(conn, owner).await.map_err(db_failure)?;
        let names: Vec<Option<String>> = p.project_names.iter().cloned().map(Some).collect();
        // A sync older than the one kept changes nothing.
        diesel::insert_into(project_counts::table)
            .values((
                project_counts::owner_id.eq(owner),
                project_counts::cluster_id.eq(cluster),
                project_counts::active_projects.eq(p.active_projects),
                project_counts::project_names.eq(&names),
                project_counts::synced_at.eq(synced),
            ))
            .on_conflict((project_counts::owner_id, project_counts::cluster_id))
            .do_update()
            .set((
                project_counts::active_projects.eq(p.active_projects),
                project_counts::project_names.eq(&names),
                project_counts::synced_at.eq(synced),
            ))
            .filter(project_counts::synced_at.le(synced))
            .execute(conn)
            .await
            .map_err(db_failure)?;
        let (count, _) = projects(conn, owner).await.map_err(db_failure)?;
        let plan = plans::current(conn, owner).await.map_err(db_failure)?.unwrap_or(Plan::Free);
        if count <= i64::from(plan.max_active_projects(&self.plans)) {
            self.clear(conn, owner, Reason::OverProjectLimit, self.clock.now()).await.map_err(HandlerError::Retry)?;
        }
        Ok(())
    }
}

impl Handler<UserDeletedV1> for Lifecycle {
    /// The deleted account's billing closed ([`crate::deletion`]), then the owner left out of
    /// the lifecycle: their restrictions cleared without lifting anything, no mail, no plan.
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserDeletedV1>,
    ) -> Result<(), HandlerError> {
        UserDeleted::new(self.reporter.clone(), self.stripe.clone()).handle(conn, event).await?;
        let owner = OwnerId::from_uuid(user_of(&event.payload.user_id)?.as_uuid());
        lock_owner(conn, owner).await.map_err(db_failure)?;
        let now = self.clock.now();
        diesel::insert_into(closed_owners::table)
            .values((closed_owners::owner_id.eq(owner), closed_owners::closed_at.eq(now)))
            .on_conflict_do_nothing()
            .execute(conn)
            .await
            .map_err(db_failure)?;
        diesel::update(
            restrictions::table.filter(restrictions::owner_id.eq(owner)).filter(restrictions::cleared_at.is_null()),
        )
        .set(restrictions::cleared_at.eq(now))
        .execute(conn)
        .await
        .map_err(db_failure)?;
        Ok(())
    }
}

/// Login repair, billing's part: each sign-in completes, through the path a new person takes
/// ([`UserCreated`]), what is missing of the owner's Stripe customer and subscription. What it
/// cannot fix is logged with a stable code (`billing.repair.*`).
#[derive(Debug, Clone)]
pub struct SignedIn {
    created: UserCreated,
    db: Database,
    clock: Clock,
}

impl SignedIn {
    /// The handler, completing through a `UserCreated` handler of its own.
    #[must_use]
    pub fn new((db, clock): (Database, Clock), stripe: Stripe, prices: Prices) -> Self {
        let created = UserCreated::new((db.clone(), clock.clone()), stripe, prices, UserCreatedHooks::default());
        Self { created, db, clock }
    }
}

impl Handler<UserSignedInV1> for SignedIn {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &ReceivedEvent<UserSignedInV1>,
    ) -> Result<(), HandlerError> {
        let user = user_of(&event.payload.user_id)?;
        let account = {
            let mut own = self.db.conn().await.map_err(db_failure)?;
            accounts::get(&mut own, user).await.map_err(db_failure)?
        };
        let Some(account) = account else {
            tracing::warn!(code = "billing.repair.no_account", %user, "sign-in of a person billing has no account for (UserCreated not handled yet)");
            return Ok(());
        };
        if account.team_owner(self.clock.now().timestamp_micros()).is_some() {
            return Ok(());
        }
        if account.stripe_customer_id.is_some() && account.stripe_subscription_id.is_some() {
            return Ok(());
        }
        // The account holds what UserCreated carried (the subject is not used to open a
        // customer or a subscription; the person's id stands in for it).
        let person = UserCreatedV1 {
            user_id: user.to_string(),
            auth_subject: user.to_string(),
            email: account.email.as_str().to_owned(),
            name: account.name.clone(),
        };
        let repair = ReceivedEvent {
            id: event.id,
            causation: event.causation,
            occurred_at: event.occurred_at,
            delivered: event.delivered,
            payload: person,
        };
        match self.created.handle(conn, &repair).await {
            Ok(()) => {
                tracing::info!(code = "billing.repair.completed", %user, "sign-in completed the Stripe customer or subscription");
                Ok(())
            }
            Err(HandlerError::Reject(why)) => {
                tracing::warn!(code = "billing.repair.failed", %user, why, "sign-in could not complete billing");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
