//! The one start path every service binary calls: bind the transport, start
//! membership, serve management HTTP, wire the coordinated shutdown, and (for a
//! process) handle SIGTERM/Ctrl-C and turn the shutdown's outcome into the exit code.
//!
//! A [`Node`] holds no process-global state, so many nodes can run in one process (the
//! sandbox and the tests do).
//!
//! Logs, traces and metrics are set up by the process, not here: every binary calls
//! `telemetry::init(service)` first (the services through `host`), which installs the one
//! `tracing` subscriber of the process and gives the meter provider that goes into
//! [`NodeConfig::metrics`]. The runtime depends on `telemetry` (not the other way round,
//! and not through `host`) because it is itself instrumented: its transport records the
//! `remote.receive` spans and its management port serves the provider's Prometheus text;
//! both crates are trading-agnostic, so the runtime stays so.

use std::net::SocketAddr;
use std::time::Duration;

use telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::address::UniqueAddress;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::discovery::Discovery;
use crate::handshake::DEFAULT_COOKIE;
use crate::management;
use crate::metrics::NodeInstruments;
use crate::remote::Remoting;
use crate::shutdown::{CoordinatedShutdown, Reason};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The cluster port could not be bound.
    #[error("cannot bind cluster port {0}: {1}")]
    BindCluster(String, std::io::Error),
    /// The management port could not be bound.
    #[error("cannot bind management port {0}: {1}")]
    BindManagement(String, std::io::Error),
    /// The membership daemon did not start.
    #[error("cannot start membership: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

/// A running cluster node.
pub struct Node {
    remoting: Remoting,
    cluster: Cluster,
    metrics: Metrics,
    _instruments: NodeInstruments,
    shutdown: CoordinatedShutdown,
    management_addr: Option<SocketAddr>,
    stop_management: CancellationToken,
}

impl Node {
    /// Starts a node. With a static seed list that is empty, the node is its own seed
    /// (what the lighthouse does when no seeds are configured).
    pub async fn start(mut cfg: NodeConfig) -> Result<Node, NodeError> {
        let bind = format!("{}:{}", cfg.remoting.bind_host, cfg.remoting.port);
        let remoting = Remoting::start(cfg.remoting.clone())
            .await
            .map_err(|e| NodeError::BindCluster(bind, e))?;
        let me = remoting.self_address().clone();
        if let Discovery::Static(s) = &cfg.cluster.discovery
            && s.is_empty()
        {
            cfg.cluster.discovery = Discovery::Static(vec![me.address.clone()]);
        }
        let loopback = me.address.host == "localhost"
            || me
                .address
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if cfg.remoting.cookie == DEFAULT_COOKIE && !loopback {
            warn!(
                "CLUSTER_COOKIE is not set: using the local-development cookie on a non-loopback address"
            );
        }
        let shutdown = CoordinatedShutdown::new(cfg.shutdown_phase_timeout);
        let roles = cfg.cluster.roles.clone();
        let cluster = Cluster::start(remoting.clone(), cfg.cluster, shutdown.clone()).await?;
        let metrics = cfg
            .metrics
            .take()
            .unwrap_or_else(|| Metrics::standalone(&remoting.self_address().address.to_string()));
        let instruments = crate::metrics::register(&metrics, &cluster, &remoting);
        let stop_management = CancellationToken::new();
        let management_addr = match &cfg.management {
            Some(m) => {
                let addr =
                    management::serve(m, cluster.clone(), metrics.clone(), stop_management.clone())
                        .await
                        .map_err(|e| {
                            NodeError::BindManagement(format!("{}:{}", m.host, m.port), e)
                        })?;
                Some(addr)
            }
            None => None,
        };
        let stop = stop_management.clone();
        let _ = shutdown.add_task(
            "actor-system-terminate",
            "stop-management",
            move |_| async move {
                stop.cancel();
            },
        );
        info!(
            address = %me,
            pod = cfg.pod_name.as_deref().unwrap_or("-"),
            roles = ?roles,
            management = ?management_addr,
            "node started"
        );
        Ok(Node {
            remoting,
            cluster,
            metrics,
            _instruments: instruments,
            shutdown,
            management_addr,
            stop_management,
        })
    }

    /// This node's unique address.
    pub fn address(&self) -> &UniqueAddress {
        self.remoting.self_address()
    }

    /// The transport (register system actors here).
    pub fn remoting(&self) -> &Remoting {
        &self.remoting
    }

    /// Membership.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The node's meter provider: `/metrics` renders it; services add their instruments to
    /// it (`node.metrics().meter()`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The coordinated shutdown (add tasks to its phases here).
    pub fn coordinated_shutdown(&self) -> &CoordinatedShutdown {
        &self.shutdown
    }

    /// Bound management address, when enabled.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management_addr
    }

    /// Leaves the cluster gracefully and shuts down (all phases).
    pub fn leave(&self) {
        self.shutdown.run(Reason::Leave);
    }

    /// Waits until the node shut down; returns the process exit code it asks for.
    pub async fn terminated(&self) -> i32 {
        self.shutdown.terminated().await
    }

    /// Stops everything at once without leaving, as if the process were killed: the
    /// other members see it go unreachable. Meant for tests of failure handling.
    pub async fn halt(&self) {
        self.stop_management.cancel();
        self.remoting.shutdown(Duration::ZERO).await;
        self.cluster.stop_daemon();
    }
}

/// Starts a node for a process and runs it until it shuts down: the first SIGTERM or
/// Ctrl-C starts a graceful leave, a second one exits at once. Returns the exit code.
pub async fn run(cfg: NodeConfig) -> i32 {
    let node = match Node::start(cfg).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    run_node(&node).await
}

/// Runs an already started node (with whatever the service added to it) until it shuts
/// down, with the signal handling of [`run`]. Returns the exit code.
pub async fn run_node(node: &Node) -> i32 {
    let shutdown = node.coordinated_shutdown().clone();
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_for_signal().await;
            count += 1;
            if count == 1 {
                info!("signal received: leaving the cluster");
                shutdown.run(Reason::Signal);
            } else {
                warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    node.terminated().await
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
