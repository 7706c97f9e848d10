//! Cluster sharding (after Akka.Cluster.Sharding) on the runtime's transport.
//!
//! Entities of one type are spread over the nodes with the type's role in shards:
//! shard = stable hash of the entity id modulo the number of shards ([`hash`]). Each
//! such node runs a [`ShardRegion`] that hosts the shards allocated to it and routes
//! every other message to the right node; nodes without the role run a proxy region.
//! One [`ShardCoordinator`](coordinator::ShardCoordinator), on the oldest Up node with
//! the role, allocates shards (least shards first), rebalances in bounded rounds when
//! nodes join, and moves shards with a hand-off that stops their (persistent) entities
//! before they start elsewhere. Messages to a local entity are never serialized.
//!
//! Modules: [`hash`] (entity id to shard), [`settings`], [`membership`] (the view of
//! membership sharding reads), [`protocol`] (wire messages), [`allocation`] (the
//! coordinator's decisions, pure), [`coordinator`] (the coordinator actor and its
//! hosting), [`region`] (the region actor and handle), [`entity`] (what users
//! implement), [`stats`] (queries and the management route), [`node`] (wiring into a
//! runtime node: membership view and coordinated-shutdown hand-off).

pub mod allocation;
pub mod coordinator;
pub mod entity;
pub mod hash;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod region;
pub mod settings;
pub mod stats;

pub use entity::{EntityContext, EntityFactory, EntityMsg};
pub use hash::{ShardId, shard_of};
pub use membership::{MemberStatus, MemberView, Membership};
pub use region::{RegionError, ShardRegion};
pub use settings::ShardingSettings;
pub use stats::{
    ClusterShardStats, NodeShardStats, RegionState, ShardingRegistry, format_stats_lines,
};
