//! The sandbox: the whole trading cluster in one process, as real cluster nodes talking
//! over loopback TCP: a lighthouse, two trade-processors, a pricing node, a traders node
//! and pricing-web (a cluster client serving the dashboard), with the embedded SQLite
//! journal under a data folder that survives restarts (the books recover).
//!
//! [`Sandbox::start`] starts it all; [`Sandbox::shutdown`] stops it the way a cluster is
//! stopped: traders first, then each node leaves gracefully (shards handed off).
//!
//! Telemetry: the process has one `tracing` subscriber (`telemetry::init`, service name
//! `sandbox`), so the nodes' spans are told apart by their `cluster.node` attribute. Each
//! node has a meter provider of its own ([`SandboxConfig::telemetry`]'s
//! `TelemetryGuard::node_metrics`, `service.instance.id` = the node's name), so each
//! management port's `/metrics` shows that node only; pricing-web's is on the dashboard port.
//! The shared journal's write metrics are on trade-processor-1's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use domain::Ticker;
use host::{ServiceNode, StoreConfig, Stores};
use pricing_web::{PriceFeed, PriceHub};
use runtime::cluster::ClusterConfig;
use runtime::node::Node;
use runtime::{NodeAddress, NodeConfig, Remoting};
use telemetry::{Metrics, TelemetryGuard};

/// What to run.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Folder of the SQLite journal.
    pub data_dir: PathBuf,
    /// Tickers traded and shown.
    pub tickers: Vec<Ticker>,
    /// The traders' pace; `None` starts no traders (a cluster that only serves).
    pub pacing: Option<traders::TradersPacing>,
    /// How often prices are published.
    pub publish_interval: Duration,
    /// Dashboard port (0 = any free port).
    pub http_port: u16,
    /// When order books snapshot.
    pub snapshots: trade_processor::SnapshotPolicy,
    /// Most of the traders' orders resting in one book; the oldest beyond it are cancelled.
    pub max_resting: usize,
    /// Sync every SQLite commit to disk (else the WAL reaches the disk in its own time: a
    /// crash of the process loses nothing, a power cut may lose the last commits).
    pub sync_full: bool,
    /// The process's telemetry, whose `node_metrics` gives each node its meter provider
    /// (pushed over OTLP when configured); `None`: providers for `/metrics` only.
    pub telemetry: Option<Arc<TelemetryGuard>>,
}

impl SandboxConfig {
    /// The meter provider of the node called `name`.
    fn metrics_for(&self, name: &str) -> anyhow::Result<Metrics> {
        match &self.telemetry {
            Some(t) => t
                .node_metrics(name)
                .with_context(|| format!("metrics of {name}")),
            None => Ok(Metrics::standalone_instance("sandbox", name)),
        }
    }
}

/// The running cluster.
pub struct Sandbox {
    /// The seed node.
    pub lighthouse: Node,
    /// The two order-book nodes.
    pub trade_processors: Vec<ServiceNode>,
    /// The pricing node.
    pub pricing: ServiceNode,
    /// The traders node.
    pub traders_node: ServiceNode,
    /// The traders on it, unless none were asked for.
    pub traders: Option<traders::Traders>,
    /// The order-book region of the first trade-processor (to query books).
    pub books: cluster_sharding::ShardRegion<trade_processor::OrderBookMsg>,
    /// The dashboard's hub.
    pub hub: Arc<PriceHub>,
    /// The dashboard's address.
    pub http: SocketAddr,
    /// Where the data lives.
    pub stores: Stores,
    _pricing: pricing::Pricing,
    _web_metrics: pricing_web::metrics::WebInstruments,
    feed: PriceFeed,
    web_remoting: Remoting,
    stop_http: tokio::sync::oneshot::Sender<()>,
}

/// Cluster timings for nodes in one process: production failure detection (heartbeat 1 s,
/// acceptable pause 3 s), quick gossip and joining on loopback.
fn node_config(seeds: Vec<NodeAddress>, roles: &[&str], metrics: Metrics) -> NodeConfig {
    let mut cfg = NodeConfig::local(seeds, roles, Duration::from_millis(200));
    cfg.metrics = Some(metrics);
    let local = cfg.cluster.clone();
    cfg.cluster = ClusterConfig {
        discovery: local.discovery,
        roles: local.roles,
        gossip_interval: Duration::from_millis(200),
        seed_node_timeout: Duration::from_secs(1),
        join_retry_interval: Duration::from_millis(200),
        ..ClusterConfig::default()
    };
    // When the whole sandbox stops, the last node of each role has nowhere to hand its
    // shards to (its entities are persistent, so nothing is lost): give up on that quickly.
    cfg.shutdown_phase_timeout = Duration::from_secs(3);
    cfg
}

impl Sandbox {
    /// Starts every node and waits until the dashboard's feed is connected.
    pub async fn start(config: SandboxConfig) -> anyhow::Result<Sandbox> {
        let tp_metrics = [
            config.metrics_for("trade-processor-1")?,
            config.metrics_for("trade-processor-2")?,
        ];
        let stores = Stores::open_with_metrics(
            &StoreConfig::Sqlite {
                dir: config.data_dir.clone(),
                sync_full: config.sync_full,
            },
            Some(&tp_metrics[0]),
        )
        .await
        .context("opening the journal")?;

        let lighthouse = Node::start(node_config(
            vec![],
            &["lighthouse"],
            config.metrics_for("lighthouse")?,
        ))
        .await
        .context("starting the lighthouse")?;
        let seeds = vec![lighthouse.address().address.clone()];

        let mut trade_processors = Vec::new();
        let mut regions = Vec::new();
        for metrics in tp_metrics {
            let node =
                ServiceNode::start(node_config(seeds.clone(), &trade_processor::ROLES, metrics))
                    .await
                    .context("starting a trade-processor")?;
            regions.push(
                trade_processor::start(&node, &stores, config.snapshots)
                    .await
                    .context("starting the order books")?,
            );
            trade_processors.push(node);
        }
        let books = regions.swap_remove(0);

        let pricing_node = ServiceNode::start(node_config(
            seeds.clone(),
            &pricing::ROLES,
            config.metrics_for("pricing")?,
        ))
        .await
        .context("starting the pricing node")?;
        let pricing_parts = pricing::start(
            &pricing_node,
            &stores,
            config.tickers.clone(),
            pricing::AggregatorSettings {
                publish_interval: config.publish_interval,
                ..Default::default()
            },
        )
        .await
        .context("starting the price aggregators")?;

        let traders_node = ServiceNode::start(node_config(
            seeds.clone(),
            &traders::ROLES,
            config.metrics_for("traders")?,
        ))
        .await
        .context("starting the traders node")?;
        let traders = match config.pacing {
            Some(pacing) => Some(
                traders::start(
                    &traders_node,
                    &traders::TradersConfig {
                        tickers: config.tickers.clone(),
                        pacing,
                        max_resting: config.max_resting,
                        ..Default::default()
                    },
                )
                .await
                .context("starting the traders")?,
            ),
            None => None,
        };

        // pricing-web: not a member; a cluster client of the pricing node.
        let web_metrics = config.metrics_for("pricing-web")?;
        let web_remoting = Remoting::start(node_config(vec![], &[], web_metrics.clone()).remoting)
            .await
            .context("starting pricing-web's transport")?;
        let hub = PriceHub::new(config.tickers.clone(), 300);
        let web_instruments =
            pricing_web::metrics::register(&web_metrics, &hub, Some(&web_remoting));
        let feed = PriceFeed::start(
            &web_remoting,
            vec![pricing_node.node.address().address.clone()],
            hub.clone(),
        )
        .await
        .map_err(anyhow::Error::msg)
        .context("starting the price feed")?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.http_port))
            .await
            .with_context(|| format!("binding the dashboard port {}", config.http_port))?;
        let http = listener.local_addr()?;
        let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = hub.clone();
        tokio::spawn(async move {
            let _ = pricing_web::http::serve(listener, served, Some(web_metrics), async {
                let _ = stopped.await;
            })
            .await;
        });

        Ok(Sandbox {
            lighthouse,
            trade_processors,
            pricing: pricing_node,
            traders_node,
            traders,
            books,
            hub,
            http,
            stores,
            _pricing: pricing_parts,
            _web_metrics: web_instruments,
            feed,
            web_remoting,
            stop_http,
        })
    }

    /// Every node's role and management address, for the banner.
    pub fn management_ports(&self) -> Vec<(String, Option<SocketAddr>)> {
        let mut v = vec![("lighthouse".to_string(), self.lighthouse.management_addr())];
        for (i, n) in self.trade_processors.iter().enumerate() {
            v.push((
                format!("trade-processor-{}", i + 1),
                n.node.management_addr(),
            ));
        }
        v.push(("pricing".into(), self.pricing.node.management_addr()));
        v.push(("traders".into(), self.traders_node.node.management_addr()));
        v
    }

    /// Stops trading, then every node leaves the cluster gracefully.
    pub async fn shutdown(self) {
        if let Some(t) = &self.traders {
            t.stop();
        }
        self.feed.stop();
        let _ = self.stop_http.send(());
        let mut nodes: Vec<&Node> = vec![&self.traders_node.node, &self.pricing.node];
        nodes.extend(self.trade_processors.iter().map(|n| &n.node));
        for n in &nodes {
            n.leave();
        }
        for n in &nodes {
            let _ = tokio::time::timeout(Duration::from_secs(20), n.terminated()).await;
        }
        self.lighthouse.leave();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.lighthouse.terminated()).await;
        self.web_remoting.shutdown(Duration::from_millis(100)).await;
    }
}
