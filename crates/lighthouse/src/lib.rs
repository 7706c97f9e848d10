//! The lighthouse: the seed node of the cluster. It runs nothing but membership and
//! the management API, so it stays up while services come and go, and every other
//! node joins the cluster through it (`CLUSTER_SEEDS` pointing at the lighthouses).
//!
//! Without `--seeds` a lighthouse is its own seed and forms the cluster; with several
//! lighthouses, list them all as seeds in the same order on every node: the first one
//! forms the cluster, the others join it.
//!
//! A cluster by hand, in three terminals (the second and third node are lighthouse
//! binaries with other roles, standing in for services):
//!
//! ```text
//! cargo run -p lighthouse                                   # 127.0.0.1:4053, management 8558
//! cargo run -p lighthouse -- --port 4054 --management-port 8559 --roles trader --seeds 127.0.0.1:4053
//! cargo run -p lighthouse -- --port 4055 --management-port 8560 --roles pricing-engine \
//!     --seeds akka.tcp://AkkaTrader@127.0.0.1:4053
//! cargo run -p ctl --bin tradectl -- --addr 127.0.0.1:8558 cluster show
//! ```
//!
//! Ctrl-C (or SIGTERM) on a node makes it leave gracefully and exit 0.

#![warn(missing_docs)]

use clap::Parser;
use runtime::config::ConfigError;
use runtime::{NodeArgs, NodeConfig, ServiceDefaults};

/// Command line of the `lighthouse` binary (every flag also reads its environment
/// variable; see [`runtime::config`]).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "lighthouse",
    version,
    about = "Seed node of the AkkaTrader cluster"
)]
pub struct Cli {
    /// Node settings.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// The lighthouse's defaults: port 4053, role `lighthouse`, its own seed.
pub fn defaults() -> ServiceDefaults {
    ServiceDefaults {
        port: 4053,
        roles: vec!["lighthouse".to_string()],
        self_seed: true,
    }
}

/// Checks the command line and environment and builds the node configuration.
pub fn config(cli: &Cli) -> Result<NodeConfig, ConfigError> {
    cli.node.resolve(&defaults())
}
