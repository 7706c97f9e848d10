//! What every service binary of the trading system shares, and nothing of trading itself:
//!
//! - [`args`]: the command line ([`HostArgs`]): the runtime's node flags plus where events go
//!   (`--data-dir` for the embedded SQLite journal, or `MONGO_CONNECTION_STR`);
//! - [`stores`]: opening that backend once per process ([`Stores`]): journal, snapshots,
//!   events-by-tag query and the shared write path with group commit;
//! - [`service`]: a started node with distributed pub-sub and the sharding registry whose
//!   statistics the management port serves ([`ServiceNode`]);
//! - [`start`]: the start sequence of every `main`, with its exit codes.
//!
//! A service's `main` is then: parse [`HostArgs`], [`init_telemetry`], open [`Stores`],
//! start a [`ServiceNode`], start its own regions and actors on it, and
//! [`ServiceNode::run`] until it leaves.

pub mod args;
pub mod service;
pub mod start;
pub mod stores;

pub use args::{HostArgs, StoreConfig};
pub use service::{ServiceError, ServiceNode};
pub use start::{StartFailure, init_telemetry, start_service};
pub use stores::Stores;

/// Microseconds since the Unix epoch, the time unit of the domain's timestamps.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
