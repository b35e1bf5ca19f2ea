//! `GET /api/cluster/projects`: the signed-in person's Hopsworks projects on their cluster, from
//! project sync's data (decision 0050), for the console's cluster page. A person sees the
//! projects they created there and their owner's projects they were added to as a team member;
//! nobody else's, and no project that is gone. The list is as fresh as the cluster's last sync
//! (`synced_at`), so the page can say so.

use super::{answers, not_signed_in};
use crate::assignments;
use crate::error::{ProvisioningCode, ProvisioningError};
use crate::schema::{project_members, project_syncs, projects};
use crate::states::AccessState;
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use hopsbridge_domain::{AssignmentState, ProjectRole};
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::http::{ApiError, ErrorBody, ErrorCode as _};
use serde::Serialize;
use std::collections::BTreeMap;

/// How the person comes to be in a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// They created it.
    Creator,
    /// It is their owner's, and they were added to it as a team member.
    Member,
}

/// One of the person's projects.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MyProject {
    /// Hopsworks' project id.
    project_id: i64,
    /// Its name in Hopsworks.
    name: String,
    /// How they come to be in it.
    relation: Relation,
    /// Their role in it, when they were added as a team member.
    project_role: Option<ProjectRole>,
    /// Whether Hopsworks has added them yet (a member's place is added in the background).
    pending: bool,
}

/// The person's projects on their cluster.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MyProjects {
    /// By name.
    projects: Vec<MyProject>,
    /// When the cluster's projects were last read from Hopsworks; none before the first sync.
    synced_at: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/cluster/projects", tag = "clusters",
    responses((status = 200, description = "the caller's Hopsworks projects on their cluster", body = MyProjects),
        (status = 401, description = not_signed_in(), body = ErrorBody),
        (status = 404, description = answers("not assigned", &[], &[ProvisioningCode::NotAssigned]), body = ErrorBody)))]
pub(super) async fn my_projects(state: super::Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    let user = caller.person()?;
    let not_assigned = || ProvisioningCode::NotAssigned.with_message("you are not assigned to a cluster");
    let mut conn = state.db.conn().await?;
    let assignment =
        assignments::get(&mut conn, user).await.map_err(ProvisioningError::from)?.ok_or_else(not_assigned)?;
    let Some(cluster) = assignment.cluster_id.filter(|_| assignment.status == AssignmentState::Complete) else {
        return Err(not_assigned());
    };
    let created: Vec<(i64, String)> = projects::table
        .filter(projects::cluster_id.eq(cluster))
        .filter(projects::creator_id.eq(user))
        .filter(projects::gone_at.is_null())
        .select((projects::project_id, projects::name))
        .load(&mut conn)
        .await
        .map_err(ProvisioningError::from)?;
    let added: Vec<(i64, String, ProjectRole, AccessState)> = project_members::table
        .filter(project_members::cluster_id.eq(cluster))
        .filter(project_members::member_id.eq(user))
        .filter(project_members::state.eq_any([AccessState::Adding, AccessState::Added]))
        .select((
            project_members::project_id,
            project_members::project_name,
            project_members::project_role,
            project_members::state,
        ))
        .load(&mut conn)
        .await
        .map_err(ProvisioningError::from)?;
    let synced_at: Option<DateTime<Utc>> = project_syncs::table
        .find(cluster)
        .select(project_syncs::last_synced_at)
        .first(&mut conn)
        .await
        .optional()
        .map_err(ProvisioningError::from)?
        .flatten();
    let mut found: BTreeMap<(String, i64), MyProject> = BTreeMap::new();
    for (project_id, name) in created {
        let project = MyProject {
            project_id,
            name: name.clone(),
            relation: Relation::Creator,
            project_role: None,
            pending: false,
        };
        found.insert((name, project_id), project);
    }
    for (project_id, name, role, access) in added {
        found.entry((name.clone(), project_id)).or_insert(MyProject {
            project_id,
            name,
            relation: Relation::Member,
            project_role: Some(role),
            pending: access == AccessState::Adding,
        });
    }
    Ok(HttpResponse::Ok().json(MyProjects { projects: found.into_values().collect(), synced_at }))
}
