//! The words every Hopsbridge service shares: typed ids, statuses, validated values and money.
//!
//! This crate does no I/O, and its default build depends on no framework (no diesel, actix or
//! tokio); CI checks that it stays that way. Values are parsed once at the edge and carried as these types, so a
//! function that takes an [`Email`] never has to ask whether it is valid.
//!
//! Features: `diesel` stores every id, status and text value in Postgres (`ToSql`/`FromSql`);
//! `openapi` describes them in the OpenAPI document. Services turn both on; the crate's own
//! default build has neither.

mod ids;
pub mod membership;
mod money;
pub mod ratio;
mod status;
mod text;

pub use ids::{ClusterId, EventId, MembershipId, OwnerId, ProjectId, SampleId, UserId};
pub use money::{Currency, Money, MoneyError};
pub use status::{AccountStatus, AssignmentState, Attribution, BillingMode, ClusterStatus, ProjectRole, RunState};
pub use text::{AuthSubject, Email, ParseError};
