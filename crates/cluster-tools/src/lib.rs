//! Cluster tools built on the runtime's transport and membership, the counterparts of
//! Akka.Cluster.Tools:
//!
//! - [`singleton`]: one instance of an actor cluster-wide (per role) on the oldest member,
//!   handed over on graceful leave and restarted on the next oldest after a crash, plus a
//!   proxy that routes to the current instance and buffers while there is none.
//! - [`pubsub`]: a distributed publish-subscribe mediator per node; a publish crosses the
//!   wire once per node that has subscribers of the topic.
//! - [`client`]: the cluster receptionist on member nodes and the cluster client for a
//!   process that is not a member.
//!
//! Nothing here knows about trading; topics, services and singletons are named by the
//! code that uses them.

#![warn(missing_docs)]

pub mod client;
pub mod pubsub;
pub mod singleton;
mod view;

pub use client::{
    ClientSettings, ClusterClient, ClusterReceptionist, ReceptionistSettings, ReplyTo,
};
pub use pubsub::{Delivery, DistributedPubSub, PubSubSettings, SubscriberId};
pub use singleton::{ClusterSingletonManager, ProxySettings, SingletonProxy, SingletonSettings};
