//! Cluster tools built on the runtime's transport and membership, the counterparts of
//! Akka.Cluster.Tools:
//!
//! - [`singleton`]: one instance of an actor cluster-wide (per role) on the oldest member,
//!   handed over on graceful leave and restarted on the next oldest after a crash, plus a
//!   proxy that routes to the current instance and buffers while there is none.
//!
//! Nothing here knows about trading; topics, services and singletons are named by the
//! code that uses them.

pub mod singleton;
mod view;

pub use singleton::{ClusterSingletonManager, ProxySettings, SingletonProxy, SingletonSettings};
