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
//! hosting), [`remember`] (remember-entities' durable store in the journal), [`region`]
//! (the region actor and handle), [`entity`] (what users implement), [`stats`] (queries and the management route), [`node`] (wiring into a
//! runtime node: membership view and coordinated-shutdown hand-off).
//!
//! # Use
//!
//! On every node with the type's role, start a region with an [`EntityFactory`]; on
//! other nodes a proxy. Send with [`ShardRegion::tell`] (or `tell_traced` with a W3C
//! `traceparent`); query with [`ShardRegion::state`] / [`ShardRegion::cluster_stats`];
//! serve `GET /cluster/shards/{type}` on the management port by putting
//! [`ShardingRegistry::router`] into `NodeConfig.management.routes` before the node
//! starts and inserting the regions into the registry.
//!
//! ```no_run
//! use cluster_sharding::{
//!     EntityContext, EntityFactory, EntityMsg, ShardRegion, ShardingRegistry, ShardingSettings,
//! };
//! use ractor::{Actor, ActorProcessingErr, ActorRef};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum Cmd {
//!     Add(u64),
//! }
//!
//! struct Account;
//!
//! impl Actor for Account {
//!     type Msg = EntityMsg<Cmd>;
//!     type State = u64;
//!     type Arguments = String;
//!     async fn pre_start(&self, _me: ActorRef<Self::Msg>, _id: String) -> Result<u64, ActorProcessingErr> {
//!         Ok(0) // a real entity recovers its state from the journal here
//!     }
//!     async fn handle(&self, _me: ActorRef<Self::Msg>, m: Self::Msg, total: &mut u64) -> Result<(), ActorProcessingErr> {
//!         let Cmd::Add(n) = m.message;
//!         *total += n;
//!         Ok(())
//!     }
//! }
//!
//! struct Accounts;
//!
//! impl EntityFactory for Accounts {
//!     type Message = Cmd;
//!     type Entity = Account;
//!     fn create(&self, ctx: &EntityContext) -> (Account, String) {
//!         (Account, ctx.entity_id.clone())
//!     }
//! }
//!
//! async fn run(node: &runtime::Node) -> Result<(), Box<dyn std::error::Error>> {
//!     let settings = ShardingSettings::new("account").with_role("accounts");
//!     let region = ShardRegion::start_on_node(settings, Accounts, node).await?;
//!     region.tell("acct-42", Cmd::Add(5))?;
//!     let stats = region.cluster_stats().await?;
//!     print!("{}", cluster_sharding::format_stats_lines(&stats));
//!     let registry = ShardingRegistry::new();
//!     registry.insert("account", region.clone());
//!     let _routes: axum::Router = registry.router(); // NodeConfig.management.routes
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

pub mod allocation;
pub mod coordinator;
pub mod entity;
pub mod hash;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod region;
pub mod remember;
pub mod settings;
pub mod stats;

pub use entity::{EntityContext, EntityFactory, EntityMsg};
pub use hash::{ShardId, shard_of};
pub use membership::{MemberStatus, MemberView, Membership};
pub use region::{RegionError, ShardRegion};
pub use remember::RememberStore;
pub use settings::ShardingSettings;
pub use stats::{
    ClusterShardStats, NodeShardStats, RegionState, ShardingInstruments, ShardingRegistry,
    format_stats_lines,
};
