//! Who a window's usage belongs to. Pure: the caller loads what is known about the cluster.
//!
//! A (namespace, username) measured on a cluster is attributed when
//! - the namespace is one of that cluster's Hopsworks projects (keyed by (cluster, namespace),
//!   never the namespace alone) whose creator holds an account on that cluster, and
//! - the username holds an account on that cluster.
//!
//! Its owner is the user's account owner at measurement time: the team owner while they are a
//! member, themselves otherwise. Anything else is kept as an unattributed sample with the reason,
//! and billed to nobody.

use crate::collect::OwnerUsage;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// One of the cluster's Hopsworks projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Hopsworks project id.
    pub id: i64,
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
    pub accounts: HashMap<String, Uuid>,
    /// Current memberships: member user id to owner user id.
    pub owners: HashMap<Uuid, Uuid>,
}

/// Why a sample is or is not billed to someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribution {
    /// To `user`, billed to `owner`.
    Attributed {
        /// The person whose pods they were.
        user: Uuid,
        /// Their account owner.
        owner: Uuid,
    },
    /// The username holds no account on this cluster.
    UnknownUser,
    /// The namespace is not a project of this cluster, or its creator is not one of ours here.
    UnknownProject,
}

impl Attribution {
    /// The stored code.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Attributed { .. } => "attributed",
            Self::UnknownUser => "unknown_user",
            Self::UnknownProject => "unknown_project",
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
    pub attribution: Attribution,
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
            let attribution = match known.accounts.get(username) {
                _ if !ours => Attribution::UnknownProject,
                None => Attribution::UnknownUser,
                Some(&user) => {
                    Attribution::Attributed { user, owner: known.owners.get(&user).copied().unwrap_or(user) }
                }
            };
            Attributed { namespace: namespace.clone(), username: username.clone(), attribution, project, usage: *u }
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
        Project { id, name: format!("p{id}"), creator_username: creator.to_owned() }
    }

    #[test]
    fn usage_goes_to_the_user_and_bills_to_their_owner_only_inside_our_projects() {
        let (ada, bob, owner) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
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
        let got: Vec<_> =
            attribute(&usage, &known).into_iter().map(|a| (a.username, a.namespace, a.attribution)).collect();
        assert_eq!(
            got,
            vec![
                ("ada000".to_owned(), "ada-lab".to_owned(), Attribution::Attributed { user: ada, owner: ada }),
                ("bob000".to_owned(), "ada-lab".to_owned(), Attribution::Attributed { user: bob, owner }),
                ("eve000".to_owned(), "ada-lab".to_owned(), Attribution::UnknownUser),
                ("ada000".to_owned(), "foreign".to_owned(), Attribution::UnknownProject),
                ("ada000".to_owned(), "kube-system".to_owned(), Attribution::UnknownProject),
            ]
        );
    }
}
