//! Who a window's usage belongs to. Pure: the caller loads what is known about the cluster.
//!
//! Every pod of every namespace is measured (decision 0039); a (namespace, username) measured
//! on a cluster, the username being the pods' owner label or empty for pods without one, is
//! - **attributed** to the user when the namespace is one of that cluster's Hopsworks projects
//!   (keyed by (cluster, namespace), never the namespace alone) whose creator holds an account
//!   on that cluster, and the username holds an account there and is on the project: its
//!   creator, or in the same team as the creator (team members are added to their owner's
//!   projects, decision 0035);
//! - billed to the **project's creator** in that project's namespace otherwise: pods without
//!   the label (`unlabelled`), or labelled with a user who is not on the project
//!   (`not_member`);
//! - kept **unattributed** when the namespace is no project of the cluster's, or its creator
//!   holds no account there (`unknown_project`): billed to nobody, shown to administrators.
//!
//! An owner is a user's account owner at the window's start: the team owner while they are a
//! member, themselves otherwise.

use crate::collect::OwnerUsage;
use hopsbridge_domain::{Attribution, OwnerId, ProjectId, UserId};
use std::collections::{BTreeMap, HashMap};

/// One of the cluster's Hopsworks projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Hopsworks project id.
    pub id: ProjectId,
    /// Its name (`my_project`).
    pub name: String,
    /// Its creator's Hopsworks username.
    pub creator_username: String,
}

/// What is known about one cluster at measurement time.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Projects by namespace.
    pub projects: HashMap<String, Project>,
    /// Current accounts: Hopsworks username to user id.
    pub accounts: HashMap<String, UserId>,
    /// Memberships at the window's start: member to their team's owner.
    pub owners: HashMap<UserId, OwnerId>,
}

impl Known {
    /// `user`'s account owner at the window's start.
    fn owner_of(&self, user: UserId) -> OwnerId {
        self.owners.get(&user).copied().unwrap_or(user.as_owner())
    }
}

/// Why a project's pods are billed to its creator rather than to the pods' user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectPath {
    /// The pods carry no owner label.
    Unlabelled,
    /// The pods' user is not on the project (no account on the cluster, or neither its
    /// creator nor in the creator's team).
    NotMember,
}

/// Whose a sample's usage is: a user's, a project's, or nobody's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Whose {
    /// To `user`, billed to `owner`.
    User {
        /// The person whose pods they were.
        user: UserId,
        /// Their account owner.
        owner: OwnerId,
    },
    /// To the project's creator, billed to the creator's owner, for the reason `path`.
    Project {
        /// The project's creator.
        creator: UserId,
        /// The creator's account owner.
        owner: OwnerId,
        /// Why not to the pods' user.
        path: ProjectPath,
    },
    /// The namespace is not a project of this cluster, or its creator is not one of ours here.
    UnknownProject,
}

impl Whose {
    /// The attribution stored with the sample.
    #[must_use]
    pub const fn attribution(&self) -> Attribution {
        match self {
            Self::User { .. } => Attribution::Attributed,
            Self::Project { path: ProjectPath::Unlabelled, .. } => Attribution::Unlabelled,
            Self::Project { path: ProjectPath::NotMember, .. } => Attribution::NotMember,
            Self::UnknownProject => Attribution::UnknownProject,
        }
    }

    /// The user and the owner billed, when the sample is billed to someone.
    #[must_use]
    pub const fn billed(&self) -> Option<(UserId, OwnerId)> {
        match *self {
            Self::User { user, owner } | Self::Project { creator: user, owner, .. } => Some((user, owner)),
            Self::UnknownProject => None,
        }
    }
}

/// One (namespace, username)'s usage with its attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed {
    /// The namespace.
    pub namespace: String,
    /// The Hopsworks username from the pods' label; empty for pods without one.
    pub username: String,
    /// Whose it is.
    pub whose: Whose,
    /// The project, when the namespace is one of the cluster's.
    pub project: Option<Project>,
    /// The usage.
    pub usage: OwnerUsage,
}

/// Attributes every (namespace, username) of a collection.
#[must_use]
pub fn attribute(usage: &BTreeMap<(String, String), OwnerUsage>, known: &Known) -> Vec<Attributed> {
    usage
        .iter()
        .map(|((namespace, username), u)| {
            let project = known.projects.get(namespace).cloned();
            let whose = whose(known, project.as_ref(), username);
            Attributed { namespace: namespace.clone(), username: username.clone(), whose, project, usage: *u }
        })
        .collect()
}

fn whose(known: &Known, project: Option<&Project>, username: &str) -> Whose {
    let Some(creator) = project.and_then(|p| known.accounts.get(&p.creator_username)).copied() else {
        return Whose::UnknownProject;
    };
    let creator_owner = known.owner_of(creator);
    let by_project = |path| Whose::Project { creator, owner: creator_owner, path };
    if username.is_empty() {
        return by_project(ProjectPath::Unlabelled);
    }
    match known.accounts.get(username).copied() {
        Some(user) if user == creator || known.owner_of(user) == creator_owner => {
            Whose::User { user, owner: known.owner_of(user) }
        }
        _ => by_project(ProjectPath::NotMember),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Usage;

    fn u(cpu: u128) -> OwnerUsage {
        OwnerUsage { usage: Usage::of_rates(cpu, 0, 0, 900), pods: 1, estimated_ms: 0 }
    }

    fn project(id: i64, creator: &str) -> Project {
        Project { id: ProjectId::new(id), name: format!("p{id}"), creator_username: creator.to_owned() }
    }

    #[test]
    fn usage_goes_to_members_of_our_projects_else_to_the_projects_creator_else_to_nobody() {
        let (ada, bob, eve, zoe, owner) = (UserId::new(), UserId::new(), UserId::new(), UserId::new(), OwnerId::new());
        let ada_owner = ada.as_owner();
        let known = Known {
            projects: [
                ("ada-lab".to_owned(), project(1, "ada000")),
                ("foreign".to_owned(), project(2, "stranger")),
                ("team-lab".to_owned(), project(3, "bob000")),
                // The same name as a project of another cluster means nothing here.
            ]
            .into(),
            accounts: [
                ("ada000".to_owned(), ada),
                ("bob000".to_owned(), bob),
                ("eve000".to_owned(), eve),
                ("zoe000".to_owned(), zoe),
            ]
            .into(),
            // bob is in ada's team; zoe in someone else's; eve owns her own.
            owners: [(bob, ada_owner), (zoe, owner)].into(),
        };
        let usage: BTreeMap<_, _> = [
            (("ada-lab".to_owned(), "ada000".to_owned()), u(1)),
            (("ada-lab".to_owned(), "bob000".to_owned()), u(2)),
            (("ada-lab".to_owned(), "eve000".to_owned()), u(3)),
            (("ada-lab".to_owned(), "nobody0".to_owned()), u(4)),
            (("ada-lab".to_owned(), String::new()), u(5)),
            (("foreign".to_owned(), "ada000".to_owned()), u(6)),
            (("foreign".to_owned(), String::new()), u(7)),
            (("kube-system".to_owned(), String::new()), u(8)),
            (("team-lab".to_owned(), "ada000".to_owned()), u(9)),
            (("team-lab".to_owned(), "zoe000".to_owned()), u(10)),
        ]
        .into();
        let got: Vec<_> = attribute(&usage, &known)
            .into_iter()
            .map(|a| (a.namespace, a.username, a.whose.attribution().as_str(), a.whose.billed()))
            .collect();
        let row = |ns: &str, user: &str, path: &'static str, billed: Option<(UserId, OwnerId)>| {
            (ns.to_owned(), user.to_owned(), path, billed)
        };
        assert_eq!(
            got,
            vec![
                row("ada-lab", "", "unlabelled", Some((ada, ada_owner))),
                row("ada-lab", "ada000", "attributed", Some((ada, ada_owner))),
                row("ada-lab", "bob000", "attributed", Some((bob, ada_owner))),
                row("ada-lab", "eve000", "not_member", Some((ada, ada_owner))),
                row("ada-lab", "nobody0", "not_member", Some((ada, ada_owner))),
                row("foreign", "", "unknown_project", None),
                row("foreign", "ada000", "unknown_project", None),
                row("kube-system", "", "unknown_project", None),
                // A project a member created (before joining) is their team's: its owner is on it.
                row("team-lab", "ada000", "attributed", Some((ada, ada_owner))),
                row("team-lab", "zoe000", "not_member", Some((bob, ada_owner))),
            ]
        );
    }
}
