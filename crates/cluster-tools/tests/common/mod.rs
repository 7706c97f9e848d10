//! Test nodes: each node (transport, membership, coordinated shutdown and every actor
//! started through [`Node::run`]) lives on its own tokio runtime, so [`Node::crash`]
//! kills all of a node's tasks and sockets at once, like `kill -9` of a process.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use runtime::cluster::{Cluster, ClusterConfig, ClusterSnapshot};
use runtime::discovery::Discovery;
use runtime::membership::MemberStatus;
use runtime::shutdown::{CoordinatedShutdown, Reason};
use runtime::{NodeAddress, Remoting, RemotingConfig};

/// Membership tick of the tests.
pub const TICK: Duration = Duration::from_millis(100);

/// One node on its own runtime.
pub struct Node {
    rt: Option<tokio::runtime::Runtime>,
    /// The transport.
    pub remoting: Remoting,
    /// Membership.
    pub cluster: Cluster,
    /// Coordinated shutdown.
    pub shutdown: CoordinatedShutdown,
    /// Address.
    pub address: NodeAddress,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("node runtime")
}

/// Logging for a test binary (`RUST_LOG` picks the level).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A transport without membership (a cluster client's process), on its own runtime.
pub struct Process {
    rt: Option<tokio::runtime::Runtime>,
    /// The transport.
    pub remoting: Remoting,
}

impl Process {
    /// Starts a transport on a free port.
    pub async fn start() -> Self {
        let rt = runtime();
        let remoting = rt
            .spawn(async { Remoting::start(RemotingConfig::default()).await.unwrap() })
            .await
            .unwrap();
        Self {
            rt: Some(rt),
            remoting,
        }
    }

    /// Runs `f` on this process's runtime.
    pub async fn run<F, T>(&self, f: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.rt.as_ref().expect("running").spawn(f).await.unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Node {
    /// Starts a node with `roles` that joins through `seed` (or forms the cluster).
    pub async fn start(seed: Option<&NodeAddress>, roles: &[&str]) -> Self {
        let rt = runtime();
        let seed = seed.cloned();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let (remoting, cluster, shutdown) = rt
            .spawn(async move {
                let remoting = Remoting::start(RemotingConfig {
                    backoff_max: Duration::from_millis(300),
                    ..RemotingConfig::default()
                })
                .await
                .unwrap();
                let me = remoting.self_address().address.clone();
                let shutdown = CoordinatedShutdown::new(Duration::from_secs(5));
                let cfg = ClusterConfig {
                    roles: roles.into_iter().collect(),
                    discovery: Discovery::Static(vec![seed.unwrap_or(me)]),
                    ..ClusterConfig::fast(TICK)
                };
                let cluster = Cluster::start(remoting.clone(), cfg, shutdown.clone())
                    .await
                    .unwrap();
                (remoting, cluster, shutdown)
            })
            .await
            .unwrap();
        let address = remoting.self_address().address.clone();
        Self {
            rt: Some(rt),
            remoting,
            cluster,
            shutdown,
            address,
        }
    }

    /// Runs `f` on this node's runtime (actors spawned there belong to the node).
    pub async fn run<F, T>(&self, f: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.rt
            .as_ref()
            .expect("node running")
            .spawn(f)
            .await
            .unwrap()
    }

    /// Kills every task and socket of the node at once.
    pub fn crash(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Starts a graceful leave (coordinated shutdown with reason Leave).
    pub fn leave(&self) {
        let s = self.shutdown.clone();
        self.rt
            .as_ref()
            .expect("node running")
            .spawn(async move { s.run(Reason::Leave) });
    }

    /// Waits until this node sees `n` members Up (and no other status).
    pub async fn wait_up(&self, n: usize) {
        let ok = self
            .cluster
            .wait_until(
                |s: &ClusterSnapshot| {
                    s.members.len() == n && s.members.iter().all(|m| m.status == MemberStatus::Up)
                },
                Duration::from_secs(20),
            )
            .await;
        assert!(
            ok,
            "{} did not see {n} members Up: {:?}",
            self.address,
            self.cluster.state().members
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Starts `roles.len()` nodes that form one cluster and waits until all are Up.
pub async fn cluster(roles: &[&[&str]]) -> Vec<Node> {
    let mut nodes = vec![Node::start(None, roles[0]).await];
    nodes[0].wait_up(1).await;
    let seed = nodes[0].address.clone();
    for r in &roles[1..] {
        nodes.push(Node::start(Some(&seed), r).await);
    }
    for n in &nodes {
        n.wait_up(roles.len()).await;
    }
    nodes
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
