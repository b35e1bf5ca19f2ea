//! Seat counting. Seats are never kept in a counter: a cluster's taken seats are its
//! assignments in a state that holds one ([`AssignmentState::holds_seat`]), counted when needed.
//!
//! Every placement first takes one transaction-wide advisory lock ([`placement_lock`]), then
//! locks the candidate cluster rows and counts ([`FreeSeats::lock`]), so two placements can
//! never fill the same last seat, whichever replica makes them.

use crate::schema::{assignments, clusters};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{AssignmentState, ClusterId, ClusterStatus};
use std::collections::HashMap;

/// Serialises every placement across replicas for the rest of the transaction.
///
/// # Errors
/// When Postgres fails.
pub async fn placement_lock(mut conn: &AsyncPgConnection) -> Result<(), diesel::result::Error> {
    // Raw SQL: pg_advisory_xact_lock answers `void`, which the DSL has no type to read into.
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('hopsbridge_provisioning_placement'))")
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// The states that hold a seat.
fn seated() -> Vec<AssignmentState> {
    AssignmentState::ALL.iter().copied().filter(|s| s.holds_seat()).collect()
}

/// Seats taken per cluster: of the clusters `of`, or of every cluster. Clusters with none are
/// left out.
///
/// # Errors
/// When Postgres fails.
pub async fn occupancy(
    mut conn: &AsyncPgConnection,
    of: Option<&[ClusterId]>,
) -> Result<HashMap<ClusterId, i64>, diesel::result::Error> {
    let mut seated = assignments::table
        .filter(assignments::status.eq_any(seated()))
        .group_by(assignments::cluster_id)
        .select((assignments::cluster_id, diesel::dsl::count_star()))
        .into_boxed();
    if let Some(ids) = of {
        seated = seated.filter(assignments::cluster_id.eq_any(ids));
    }
    let rows: Vec<(Option<ClusterId>, i64)> = seated.load(&mut conn).await?;
    Ok(rows.into_iter().filter_map(|(id, n)| id.map(|id| (id, n))).collect())
}

/// Seats taken on one cluster.
///
/// # Errors
/// When Postgres fails.
pub async fn taken(conn: &AsyncPgConnection, cluster: ClusterId) -> Result<i64, diesel::result::Error> {
    Ok(occupancy(conn, Some(&[cluster])).await?.get(&cluster).copied().unwrap_or(0))
}

/// The free seats of each active cluster, as a placement sees them under the lock.
#[derive(Debug, Clone)]
pub struct FreeSeats(Vec<(ClusterId, i64)>);

impl FreeSeats {
    /// Locks the active clusters and counts each one's free seats. The two statements go to
    /// Postgres together; it runs them in order, so the seats (of every cluster: the active
    /// ones are not known when the count is sent) are counted once the clusters are locked.
    /// The caller holds the [`placement_lock`].
    ///
    /// # Errors
    /// When Postgres fails.
    pub async fn lock(conn: &AsyncPgConnection) -> Result<Self, diesel::result::Error> {
        let mut locking = conn;
        let active = clusters::table
            .filter(clusters::status.eq(ClusterStatus::Active))
            .order(clusters::id.asc())
            .select((clusters::id, clusters::capacity))
            .for_update()
            .load::<(ClusterId, i32)>(&mut locking);
        let (active, used) = futures::try_join!(active, occupancy(conn, None))?;
        Ok(Self(
            active.into_iter().map(|(id, cap)| (id, i64::from(cap) - used.get(&id).copied().unwrap_or(0))).collect(),
        ))
    }

    /// Free seats over every active cluster.
    #[must_use]
    pub fn room(&self) -> i64 {
        self.0.iter().map(|(_, n)| (*n).max(0)).sum()
    }

    /// The cluster with the most free seats (the oldest id among equals), if any has one; that
    /// seat is taken.
    pub fn take_best(&mut self) -> Option<ClusterId> {
        let best = self.0.iter_mut().filter(|(_, n)| *n > 0).max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
        best.1 -= 1;
        Some(best.0)
    }
}
