//! Settings of one sharded entity type: shard count, role, passivation, buffering,
//! rebalancing, remember-entities and the timings of the coordinator protocol.

use std::time::Duration;

use runtime::SendPolicy;

use crate::remember::RememberStore;

/// Settings of one entity type's sharding.
#[derive(Clone, Debug)]
pub struct ShardingSettings {
    /// Entity type name, e.g. `order-book`; names the registered actors
    /// (`sharding/{type}/region`, `sharding/{type}/coordinator`).
    pub type_name: String,
    /// Only nodes with this role host shards (and the coordinator); `None` = all nodes.
    pub role: Option<String>,
    /// Number of shards; the entity id hash is taken modulo this. Must be the same on
    /// every node and never change while entities exist. Default 30.
    pub number_of_shards: u32,
    /// Stop an entity after this long without a message; `None` never passivates.
    pub passivate_idle: Option<Duration>,
    /// Messages a region buffers, over all shards, while shard homes are unknown or
    /// shards move; beyond it messages are dropped (warning + counter; senders retry).
    pub buffer_size: usize,
    /// How often a region retries registration and home requests, and the period of
    /// the region's and the coordinator's housekeeping tick.
    pub retry_interval: Duration,
    /// How often the coordinator considers rebalancing.
    pub rebalance_interval: Duration,
    /// Rebalance only while the most and least loaded regions differ by more than this.
    pub rebalance_threshold: usize,
    /// At most this many shards move per rebalance round (hand-offs in flight count).
    pub rebalance_max_per_round: usize,
    /// Restart entities after a hand-off or a crash without waiting for a message.
    pub remember_entities: bool,
    /// Where remember-entities keeps its ids so that they survive a restart of the whole
    /// cluster (Akka's event-sourced store, see [`crate::remember`]); `None` keeps them
    /// only in the coordinator's memory, rebuilt from the regions.
    pub remember_entities_store: Option<RememberStore>,
    /// A rebalance whose regions have not all acknowledged `BeginHandOff` by then is
    /// abandoned (the shard stays where it is).
    pub handoff_timeout: Duration,
    /// How long a cluster-wide stats query waits for the regions' answers.
    pub stats_timeout: Duration,
    /// What a region does when a peer's send queue is full: wait (backpressure) or
    /// drop the message (counted; senders retry).
    pub send_policy: SendPolicy,
}

impl ShardingSettings {
    /// Defaults for entity type `type_name` (Akka's defaults where they exist).
    pub fn new(type_name: impl Into<String>) -> Self {
        Self {
            type_name: type_name.into(),
            role: None,
            number_of_shards: 30,
            passivate_idle: Some(Duration::from_secs(120)),
            buffer_size: 100_000,
            retry_interval: Duration::from_secs(1),
            rebalance_interval: Duration::from_secs(10),
            rebalance_threshold: 1,
            rebalance_max_per_round: 3,
            remember_entities: false,
            remember_entities_store: None,
            handoff_timeout: Duration::from_secs(60),
            stats_timeout: Duration::from_secs(3),
            send_policy: SendPolicy::Wait,
        }
    }

    /// Sets the role that hosts shards.
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Registered name of this type's region on every node.
    pub fn region_name(&self) -> String {
        format!("sharding/{}/region", self.type_name)
    }

    /// Name of the cluster singleton that runs this type's coordinator.
    pub fn singleton_name(&self) -> String {
        format!("sharding-coordinator-{}", self.type_name)
    }

    /// Registered name of this type's coordinator on the node that runs it.
    pub fn coordinator_name(&self) -> String {
        format!("sharding/{}/coordinator", self.type_name)
    }
}
