//! The wire contract between Hopsbridge services.
//!
//! - [`events`]: the event payloads and the [`events::Envelope`], generated at build time from
//!   `proto/hopsbridge/events/v1/*.proto`.
//! - [`Event`]: what each payload is called on the wire and which service publishes it.
//! - [`Subjects`]: NATS subject and JetStream stream names, under a prefix (`hb` in
//!   production, a unique one per test).

mod subjects;

pub use subjects::{InvalidPrefix, Subjects};

/// Event payloads and the envelope, generated from `proto/`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications, reason = "generated code")]
pub mod events {
    include!(concat!(env!("OUT_DIR"), "/hopsbridge.events.v1.rs"));
}

/// The Hopsbridge services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// The public HTTP entry point; owns no data.
    Gateway,
    /// Users and their lifecycle.
    Identity,
    /// Invitations and memberships.
    Team,
    /// Cluster registry and assignments.
    Provisioning,
    /// Usage samples and collection runs.
    Metering,
    /// Stripe, credits and payment-method state.
    Billing,
}

impl Service {
    /// The services that own a Postgres schema and publish events.
    pub const WITH_DATA: [Self; 5] = [Self::Identity, Self::Team, Self::Provisioning, Self::Metering, Self::Billing];

    /// The lowercase name: the binary's suffix, the Postgres schema, the subject token.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Identity => "identity",
            Self::Team => "team",
            Self::Provisioning => "provisioning",
            Self::Metering => "metering",
            Self::Billing => "billing",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An event payload: a protobuf message with a stable name, version and publisher.
pub trait Event: prost::Message + Default + Clone + Send + Sync + 'static {
    /// The message name without its version, e.g. `UserCreated`.
    const TYPE: &'static str;
    /// The schema version, 1 for `UserCreatedV1`.
    const VERSION: u32;
    /// The subject token, e.g. `user_created`.
    const TOKEN: &'static str;
    /// The only service that publishes this event.
    const PRODUCER: Service;

    /// The subject without the deployment prefix, e.g. `identity.user_created.v1`. This is what
    /// the outbox stores, so rows do not depend on the prefix.
    #[must_use]
    fn subject_suffix() -> String {
        format!("{}.{}.v{}", Self::PRODUCER.name(), Self::TOKEN, Self::VERSION)
    }
}

macro_rules! events {
    ($($ty:ident => ($name:literal, $version:literal, $token:literal, $producer:ident)),* $(,)?) => {
        $(
            impl Event for events::$ty {
                const TYPE: &'static str = $name;
                const VERSION: u32 = $version;
                const TOKEN: &'static str = $token;
                const PRODUCER: Service = Service::$producer;
            }
        )*
    };
}

events! {
    UserCreatedV1 => ("UserCreated", 1, "user_created", Identity),
    UserSuspendedV1 => ("UserSuspended", 1, "user_suspended", Identity),
    UserReactivatedV1 => ("UserReactivated", 1, "user_reactivated", Identity),
    UserDeletedV1 => ("UserDeleted", 1, "user_deleted", Identity),
    UserErasedV1 => ("UserErased", 1, "user_erased", Identity),
    UserSignedInV1 => ("UserSignedIn", 1, "user_signed_in", Identity),
    TeamMemberJoinedV1 => ("TeamMemberJoined", 1, "team_member_joined", Team),
    TeamMemberRemovedV1 => ("TeamMemberRemoved", 1, "team_member_removed", Team),
    PaymentMethodAddedV1 => ("PaymentMethodAdded", 1, "payment_method_added", Billing),
    PaymentMethodRemovedV1 => ("PaymentMethodRemoved", 1, "payment_method_removed", Billing),
    CreditsExhaustedV1 => ("CreditsExhausted", 1, "credits_exhausted", Billing),
    BillingModeChangedV1 => ("BillingModeChanged", 1, "billing_mode_changed", Billing),
    PlanChangedV1 => ("PlanChanged", 1, "plan_changed", Billing),
    AccountRestrictedV1 => ("AccountRestricted", 1, "account_restricted", Billing),
    AccountRestrictionLiftedV1 => ("AccountRestrictionLifted", 1, "account_restriction_lifted", Billing),
    ClusterAssignedV1 => ("ClusterAssigned", 1, "cluster_assigned", Provisioning),
    ClusterRegisteredV1 => ("ClusterRegistered", 1, "cluster_registered", Provisioning),
    ClusterUpdatedV1 => ("ClusterUpdated", 1, "cluster_updated", Provisioning),
    ClusterUnassignedV1 => ("ClusterUnassigned", 1, "cluster_unassigned", Provisioning),
    ProjectsCountedV1 => ("ProjectsCounted", 1, "projects_counted", Provisioning),
    UsageRecordedV1 => ("UsageRecorded", 1, "usage_recorded", Metering),
    StorageRecordedV1 => ("StorageRecorded", 1, "storage_recorded", Metering),
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn subjects_name_the_producer_event_and_version() {
        assert_eq!(events::UserCreatedV1::subject_suffix(), "identity.user_created.v1");
        assert_eq!(events::UsageRecordedV1::subject_suffix(), "metering.usage_recorded.v1");
    }

    #[test]
    fn payloads_round_trip_through_protobuf() {
        let sent = events::UserCreatedV1 {
            user_id: "0193".into(),
            auth_subject: "auth0|abc".into(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
        };
        let got = events::UserCreatedV1::decode(sent.encode_to_vec().as_slice()).ok();
        assert_eq!(got, Some(sent));
    }
}
