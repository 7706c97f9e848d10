//! A started service node: the runtime node, distributed pub-sub on it, and the sharding
//! registry that the node's management port serves as `GET /cluster/shards/{type}`, whose
//! regions' shard, entity and hand-off counts its `/metrics` shows, and that `/ready` waits
//! for (every region registered with its coordinator).

use cluster_sharding::{ShardingInstruments, ShardingRegistry};
use cluster_tools::pubsub::{DistributedPubSub, PubSubSettings};
use runtime::NodeConfig;
use runtime::node::{Node, NodeError};

/// Why a service node did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The runtime node did not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The pub-sub mediator did not start.
    #[error("cannot start pub-sub: {0}")]
    PubSub(#[from] ractor::SpawnErr),
}

/// A cluster member running a service.
pub struct ServiceNode {
    /// The runtime node.
    pub node: Node,
    /// Distributed pub-sub on this node.
    pub pubsub: DistributedPubSub,
    /// The sharded types of this node (add each region after starting it).
    pub sharding: ShardingRegistry,
    _sharding_metrics: ShardingInstruments,
}

impl ServiceNode {
    /// Starts the node, its pub-sub mediator, and serves the sharding statistics on the
    /// management port (`config.metrics` is the provider `/metrics` renders; see
    /// `runtime::NodeConfig`).
    pub async fn start(mut config: NodeConfig) -> Result<ServiceNode, ServiceError> {
        let sharding = ShardingRegistry::new();
        if let Some(management) = config.management.as_mut() {
            management.routes = Some(sharding.router());
            management
                .readiness
                .push(std::sync::Arc::new(sharding.clone()));
        }
        let node = Node::start(config).await?;
        let pubsub =
            DistributedPubSub::start(node.cluster(), node.remoting(), PubSubSettings::default())
                .await?;
        let sharding_metrics = sharding.register_metrics(node.metrics());
        Ok(ServiceNode {
            node,
            pubsub,
            sharding,
            _sharding_metrics: sharding_metrics,
        })
    }

    /// Runs until the node shuts down (SIGTERM/Ctrl-C leave gracefully); the exit code.
    pub async fn run(&self) -> i32 {
        runtime::node::run_node(&self.node).await
    }
}
