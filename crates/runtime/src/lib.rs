//! The trading-agnostic cluster runtime: node identity, the cluster transport and its
//! handshake, membership with gossip, failure detection and split-brain resolution,
//! coordinated shutdown, discovery, the management HTTP API, node configuration, and
//! the one start path every service binary calls ([`node`]).
//!
//! Local actors are `ractor` actors; the network is this crate's own transport
//! ([`remote`]), whose messages land directly in registered actors' mailboxes.
//!
//! Observability: the runtime depends on the `telemetry` crate rather than having `host` glue
//! the two. Both are trading-agnostic, and the runtime is instrumented itself: the transport
//! records `remote.receive` spans for sampled trace contexts, the management port serves the
//! node's `telemetry::Metrics` as `/metrics`, and [`metrics`] registers the runtime's
//! instruments on it. Setting telemetry up (`telemetry::init`: the process's subscriber and
//! providers) stays with each binary, since a process may run several nodes.

#![warn(missing_docs)]

pub mod address;
pub mod app_version;
pub mod handshake;
pub mod remote;
pub mod wire;

pub use address::{NodeAddress, UniqueAddress};
pub use app_version::AppVersion;
pub use remote::{RemoteRef, Remoting, RemotingConfig, SendError, SendPolicy};
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod failure_detector;
pub mod http_client;
pub mod management;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod sbr;
pub mod shutdown;
pub mod tls;

pub use cluster::{Cluster, ClusterConfig, ClusterEvent};
pub use config::{NodeArgs, NodeConfig, ServiceDefaults};
pub use node::Node;
