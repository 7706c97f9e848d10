//! Helpers shared by the cluster tests: starting in-process nodes and waiting on views.
#![allow(dead_code)]

pub mod proxy;

use std::time::Duration;

use runtime::cluster::ClusterSnapshot;
use runtime::membership::MemberStatus;
use runtime::{Node, NodeAddress, NodeConfig};

/// Gossip/heartbeat tick used by the in-process tests.
pub const TICK: Duration = Duration::from_millis(100);

/// Starts a node joining through `seeds` (empty: it is its own seed).
pub async fn start(seeds: &[NodeAddress], roles: &[&str]) -> Node {
    Node::start(NodeConfig::local(seeds.to_vec(), roles, TICK))
        .await
        .expect("node starts")
}

/// Starts a node with a customised configuration.
pub async fn start_with(seeds: &[NodeAddress], f: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut cfg = NodeConfig::local(seeds.to_vec(), &[], TICK);
    f(&mut cfg);
    Node::start(cfg).await.expect("node starts")
}

/// Addresses of members with the given status in a view.
pub fn with_status(s: &ClusterSnapshot, st: MemberStatus) -> Vec<String> {
    s.members
        .iter()
        .filter(|m| m.status == st)
        .map(|m| m.node.clone())
        .collect()
}

/// True when the view shows exactly `n` members, all Up and reachable, converged.
pub fn all_up(s: &ClusterSnapshot, n: usize) -> bool {
    s.members.len() == n
        && s.members
            .iter()
            .all(|m| m.status == MemberStatus::Up && m.reachable)
        && s.converged
}

/// Waits until every node's view satisfies `pred`.
pub async fn wait_all<F>(nodes: &[&Node], timeout: Duration, pred: F) -> bool
where
    F: Fn(&ClusterSnapshot) -> bool + Clone,
{
    let deadline = tokio::time::Instant::now() + timeout;
    for n in nodes {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !n.cluster().wait_until(pred.clone(), left).await {
            return false;
        }
    }
    true
}
