//! Faults a simulated cluster injects: for every request (the simulator's own) and for the
//! requests to one route, so a test can make one call fail while the others succeed.

use std::collections::HashMap;
use std::time::Duration;

/// The routes the simulator serves, each a target of its own faults
/// ([`HopsworksSim::fail_next_on`], [`HopsworksSim::hold_next_on`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /admin/users`.
    CreateUser,
    /// `GET /admin/users`.
    ListUsers,
    /// `GET /admin/users/{id}`.
    GetUser,
    /// `GET /admin/user/{uuid}`.
    GetUserByUuid,
    /// `PUT /admin/users/{id}`.
    UpdateUser,
    /// `GET /admin/projects` without `expand=quotas`.
    ListProjects,
    /// `GET /admin/projects?expand=quotas`: the projects with their storage.
    ProjectQuotas,
    /// `POST /admin/projects/add-to-projects`.
    AddToProjects,
    /// `GET /users/profile`.
    Profile,
    /// `GET /project/{id}/projectMembers`.
    ListMembers,
    /// `DELETE /project/{id}/projectMembers/{email}`.
    RemoveMember,
}

impl Route {
    /// Whether the route is an `/admin` one, for administrators only.
    pub(super) const fn is_admin(self) -> bool {
        matches!(
            self,
            Self::CreateUser
                | Self::ListUsers
                | Self::GetUser
                | Self::GetUserByUuid
                | Self::UpdateUser
                | Self::ListProjects
                | Self::ProjectQuotas
                | Self::AddToProjects
        )
    }
}

/// Faults of one route, consumed by the requests to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RouteFaults {
    pub(super) fail_next: u32,
    pub(super) fail_status: u16,
    pub(super) hold_next: u32,
    pub(super) hold: Duration,
}

/// Faults the simulator injects, consumed request by request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The next this-many requests are answered with `fail_status` and do nothing.
    pub fail_next: u32,
    /// The 5xx status of failed requests (500 when unset or not a server error).
    pub fail_status: u16,
    /// Every request waits this long before it is handled.
    pub delay: Option<Duration>,
    /// The next this-many requests are handled, then their answer is held for `hold`.
    pub hold_next: u32,
    /// How long a held answer is held.
    pub hold: Duration,
}

/// Consumes the faults a request to `route` (`None`: no route) meets: the simulator's first,
/// then the route's own. Answers the delay before it is handled, the 5xx status it fails with
/// instead, and how long its answer is held.
pub(super) fn consume(
    faults: &mut Faults,
    routes: &mut HashMap<Route, RouteFaults>,
    route: Option<Route>,
) -> (Option<Duration>, Option<u16>, Option<Duration>) {
    let mut fail = (faults.fail_next > 0).then(|| {
        faults.fail_next -= 1;
        faults.fail_status
    });
    let mut hold = (faults.hold_next > 0).then(|| {
        faults.hold_next -= 1;
        faults.hold
    });
    if let Some(own) = route.and_then(|r| routes.get_mut(&r)) {
        if fail.is_none() && own.fail_next > 0 {
            own.fail_next -= 1;
            fail = Some(own.fail_status);
        }
        if hold.is_none() && own.hold_next > 0 {
            own.hold_next -= 1;
            hold = Some(own.hold);
        }
    }
    (faults.delay, fail, hold)
}
