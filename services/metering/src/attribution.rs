//! Who a window's usage belongs to. Pure: the caller loads what is known about the cluster.
//!
//! A (namespace, username) measured on a cluster is attributed when
//! - the namespace is one of that cluster's Hopsworks projects (keyed by (cluster, namespace),
//!   never the namespace alone) whose creator holds an account on that cluster, and
//! - the username holds an account on that cluster.
//!
//! Its owner is the user's account owner at the window's start: the team owner while they are
//! a member, themselves otherwise. Anything else is kept as an unattributed sample with the reason,
//! and billed to nobody.

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

/// Whose a sample's usage is: a user's, billed to their owner, or nobody's for a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Whose {
    /// To `user`, billed to `owner`.
    User {
        /// The person whose pods they were.
        user: UserId,
        /// Their account owner.
        owner: OwnerId,
    },
    /// The username holds no account on this cluster.
    UnknownUser,
    /// The namespace is not a project of this cluster, or its creator is not one of ours here.
    UnknownProject,
}

impl Whose {
    /// The attribution stored with the sample.
    #[must_use]
    pub const fn attribution(&self) -> Attribution {
        match self {
            Self::User { .. } => Attribution::Attributed,
            Self::UnknownUser => Attribution::UnknownUser,
            Self::UnknownProject => Attribution::UnknownProject,
        }
    }

    /// The user and the owner billed, when the sample is attributed.
    #[must_use]
    pub const fn billed(&self) -> Option<(UserId, OwnerId)> {
        match *self {
            Self::User { user, owner } => Some((user, owner)),
            Self::UnknownUser | Self::UnknownProject => None,
        }
    }
}

/// One (namespace, username)'s usage with its attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed {
    /// The namespace.
    pub namespace: String,
    /// The Hopsworks username from the pods' label.
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
            let ours = project.as_ref().is_some_and(|p| known.accounts.contains_key(&p.creator_username));
            let whose = match known.accounts.get(username) {
                _ if !ours => Whose::UnknownProject,
                None => Whose::UnknownUser,
                Some(&user) => Whose::User { user, owner: known.owners.get(&user).copied().unwrap_or(user.as_owner()) },
            };
            Attributed { namespace: namespace.clone(), username: username.clone(), whose, project, usage: *u }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Usage;

    fn u(cpu: u128) -> OwnerUsage {
        OwnerUsage { usage: Usage::of_rates(cpu, 0, 0, 900), pods: 1 }
    }

    fn project(id: i64, creator: &str) -> Project {
        Project { id: ProjectId::new(id), name: format!("p{id}"), creator_username: creator.to_owned() }
    }

    #[test]
    fn usage_goes_to_the_user_and_bills_to_their_owner_only_inside_our_projects() {
        let (ada, bob, owner) = (UserId::new(), UserId::new(), OwnerId::new());
        let known = Known {
            projects: [
                ("ada-lab".to_owned(), project(1, "ada000")),
                ("foreign".to_owned(), project(2, "stranger")),
                // The same name as a project of another cluster means nothing here.
            ]
            .into(),
            accounts: [("ada000".to_owned(), ada), ("bob000".to_owned(), bob)].into(),
            owners: [(bob, owner)].into(),
        };
        let usage: BTreeMap<_, _> = [
            (("ada-lab".to_owned(), "ada000".to_owned()), u(1)),
            (("ada-lab".to_owned(), "bob000".to_owned()), u(2)),
            (("ada-lab".to_owned(), "eve000".to_owned()), u(3)),
            (("foreign".to_owned(), "ada000".to_owned()), u(4)),
            (("kube-system".to_owned(), "ada000".to_owned()), u(5)),
        ]
        .into();
        let got: Vec<_> = attribute(&usage, &known).into_iter().map(|a| (a.username, a.namespace, a.whose)).collect();
        assert_eq!(
            got,
            vec![
                ("ada000".to_owned(), "ada-lab".to_owned(), Whose::User { user: ada, owner: ada.as_owner() }),
                ("bob000".to_owned(), "ada-lab".to_owned(), Whose::User { user: bob, owner }),
                ("eve000".to_owned(), "ada-lab".to_owned(), Whose::UnknownUser),
                ("ada000".to_owned(), "foreign".to_owned(), Whose::UnknownProject),
                ("ada000".to_owned(), "kube-system".to_owned(), Whose::UnknownProject),
            ]
        );
    }
}
