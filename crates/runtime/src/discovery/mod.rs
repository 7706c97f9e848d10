//! Discovery of whom to join: a static seed list (`CLUSTER_SEEDS`), the A records of a
//! headless DNS service, or the pods the Kubernetes API lists ([`kubernetes`]).
//!
//! The rule that keeps one cluster (Akka Cluster Bootstrap's, for the dynamic kinds):
//! - static seeds: only the first seed may form a cluster by itself, and only after
//!   none of the other seeds answered within the seed-node timeout; every other node
//!   only joins a node that is already a member;
//! - DNS and Kubernetes:
//!   1. the node looks up its contact points until at least `required_contact_points` are
//!      found and the set is the same on two consecutive lookups;
//!   2. it asks every contact point whether it is a member of a cluster;
//!   3. it joins the first that says yes;
//!   4. if none does, the lowest address of the stable set, and only it, forms the cluster
//!      (one retry interval after asking, so a late answer still wins).
//!
//! A node that has not joined within `shutdown-after-unsuccessful-join` stops and its
//! process exits non-zero, so its pod restarts instead of waiting for ever.
//!
//! Step 2 asks over the cluster transport (`InitJoin`, answered `InitJoinAck` by a member),
//! where Akka asks each contact point's management HTTP endpoint. The question is the
//! same; the transport is already authenticated by the cluster cookie (and mutual TLS
//! when on), and it is the very connection the join then uses, so a contact point that
//! answers can also be joined; over HTTP a node could answer while its cluster port is
//! unreachable.
//!
//! The loop that drives these steps is the cluster daemon's join tick
//! ([`crate::cluster`]); this module answers what the contact points are and who may form.

pub mod kubernetes;

use crate::address::NodeAddress;
pub use kubernetes::{KubernetesDiscovery, KubernetesSettings};

/// Where contact points come from.
#[derive(Clone, Debug)]
pub enum Discovery {
    /// A fixed list; the first entry is the seed that may form the cluster.
    Static(Vec<NodeAddress>),
    /// A headless service: every A/AAAA record of `name` is a contact point at `port`.
    Dns {
        /// DNS name, e.g. `lighthouse.akka-cqrs.svc.cluster.local`.
        name: String,
        /// Cluster port of the contact points.
        port: u16,
        /// Actor-system name.
        system: String,
        /// Contact points needed before the lowest may form the cluster.
        required_contact_points: usize,
    },
    /// The Kubernetes pods API.
    Kubernetes(KubernetesDiscovery),
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// DNS failure.
    #[error("dns lookup of {0} failed: {1}")]
    Dns(String, std::io::Error),
    /// API failure.
    #[error("kubernetes api: {0}")]
    Api(String),
}

impl Discovery {
    /// The current contact points (static: as configured; otherwise sorted).
    pub async fn contact_points(&self) -> Result<Vec<NodeAddress>, DiscoveryError> {
        match self {
            Discovery::Static(v) => Ok(v.clone()),
            Discovery::Dns {
                name, port, system, ..
            } => {
                let addrs = tokio::net::lookup_host((name.as_str(), *port))
                    .await
                    .map_err(|e| DiscoveryError::Dns(name.clone(), e))?;
                let mut v: Vec<NodeAddress> = addrs
                    .map(|a| NodeAddress::new(system.clone(), a.ip().to_string(), a.port()))
                    .collect();
                v.sort();
                v.dedup();
                Ok(v)
            }
            Discovery::Kubernetes(k) => k.lookup().await,
        }
    }

    /// Whether `me` may form a new cluster given these contact points (see module docs;
    /// for DNS and Kubernetes `stable` says the set did not change since the last lookup).
    pub fn may_form(&self, points: &[NodeAddress], me: &NodeAddress, stable: bool) -> bool {
        match self {
            Discovery::Static(_) => points.first() == Some(me),
            Discovery::Dns {
                required_contact_points,
                ..
            } => {
                stable
                    && points.len() >= *required_contact_points
                    && points.iter().min() == Some(me)
            }
            Discovery::Kubernetes(k) => {
                stable
                    && points.len() >= k.required_contact_points()
                    && points.iter().min() == Some(me)
            }
        }
    }

    /// True for the static seed list (where the first seed waits for the seed-node
    /// timeout before forming the cluster alone).
    pub fn is_static(&self) -> bool {
        matches!(self, Discovery::Static(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_only_first_seed_forms() {
        let a = NodeAddress::new("S", "a", 1);
        let b = NodeAddress::new("S", "b", 1);
        let d = Discovery::Static(vec![b.clone(), a.clone()]);
        assert!(d.may_form(&[b.clone(), a.clone()], &b, false));
        assert!(!d.may_form(&[b.clone(), a.clone()], &a, true));
    }

    #[test]
    fn dynamic_lowest_forms_only_with_enough_stable_points() {
        let d = Discovery::Dns {
            name: "x".into(),
            port: 1,
            system: "S".into(),
            required_contact_points: 2,
        };
        let a = NodeAddress::new("S", "a", 1);
        let b = NodeAddress::new("S", "b", 1);
        assert!(!d.may_form(std::slice::from_ref(&a), &a, true));
        assert!(!d.may_form(&[a.clone(), b.clone()], &a, false));
        assert!(d.may_form(&[a.clone(), b.clone()], &a, true));
        assert!(!d.may_form(&[a.clone(), b.clone()], &b, true));
    }

    #[tokio::test]
    async fn dns_resolves_localhost() {
        let d = Discovery::Dns {
            name: "localhost".into(),
            port: 4053,
            system: "S".into(),
            required_contact_points: 1,
        };
        let v = d.contact_points().await.unwrap();
        assert!(v.iter().any(|a| a.port == 4053));
    }
}
