//! The words every Hopsbridge service shares: typed ids, validated values and money.
//!
//! This crate does no I/O and depends on no framework (no diesel, actix or tokio); CI checks
//! that it stays that way. Values are parsed once at the edge and carried as these types, so a
//! function that takes an [`Email`] never has to ask whether it is valid.

mod ids;
mod money;
mod text;

pub use ids::{ClusterId, EventId, UserId};
pub use money::{Currency, Money, MoneyError};
pub use text::{AuthSubject, Email, ParseError};
