//! Test support for the process-level tests: the `trade-processor` binary as child processes
//! (killed on drop), and the rest of the cluster in this process through the libraries: a
//! seed node (playing lighthouse, with a proxy of the order books to query them), a pricing
//! node and a traders node, all on OS-chosen loopback ports.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "../../../../tests/support/books.rs"]
mod books;

use cluster_sharding::ShardRegion;
use domain::protocol::TRADE_PROCESSOR_ROLE;
use domain::{BookSnapshot, OrderBook, OrderId, Ticker};
use host::{ServiceNode, StoreConfig, Stores};
use persistence::SnapshotSelectionCriteria;
use runtime::cluster::{ClusterConfig, ClusterSnapshot};
use runtime::membership::MemberStatus;
use runtime::node::Node;
use runtime::sbr::SbrConfig;
use runtime::{NodeAddress, NodeConfig};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_trade-processor");

/// A free TCP port on the loopback interface, chosen by the OS.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 200 ms until it returns `Some`; after `secs` seconds panics with `what`
/// and whatever `context` says then (for example the children's logs).
pub async fn eventually<T, F, Fut>(
    secs: u64,
    what: &str,
    context: impl Fn() -> String,
    mut f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where the persistent nodes keep their events.
#[derive(Debug, Clone)]
pub enum Backend {
    /// One SQLite file in this folder, shared by every process.
    Sqlite(PathBuf),
    /// A MongoDB connection string naming the database (unique per test run).
    Mongo(String),
}

impl Backend {
    fn store_config(&self) -> StoreConfig {
        match self {
            Backend::Sqlite(dir) => StoreConfig::Sqlite {
                dir: dir.clone(),
                sync_full: true,
            },
            Backend::Mongo(uri) => StoreConfig::Mongo(uri.clone()),
        }
    }
}

/// `uri` with its database (the path of the connection string) replaced by `db`, keeping
/// hosts and options: `mongodb://h:1/?directConnection=true` becomes
/// `mongodb://h:1/db?directConnection=true`.
pub fn with_database(uri: &str, db: &str) -> String {
    let (scheme, rest) = uri
        .split_once("://")
        .expect("a mongodb:// connection string");
    let (hosts, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let options = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{hosts}/{db}{options}")
}

/// A trade-processor process, killed (SIGKILL) when dropped. It keeps its ports across
/// restarts, as a StatefulSet pod keeps its address; its stderr (JSON lines) goes to a log
/// file, each start after a `---- start #N ----` line.
pub struct TradeProcessor {
    name: String,
    child: Option<Child>,
    /// Cluster port.
    pub port: u16,
    mgmt: u16,
    seed: NodeAddress,
    backend: Backend,
    log: PathBuf,
    log_filter: String,
    /// How many times it was started.
    pub starts: u32,
    /// When each killed or terminated start was gone (reaped), in start order.
    killed_at: Vec<OffsetDateTime>,
}

/// One incarnation of a trade-processor hosting one entity: from its region's `starting
/// entity` to its `entity stopped`, or to the end of the incarnation (`to` is `None` while
/// it still runs).
#[derive(Clone, Debug)]
pub struct Hosting {
    pub process: String,
    pub start: u32,
    pub entity_id: String,
    pub from: OffsetDateTime,
    pub to: Option<OffsetDateTime>,
}

impl Hosting {
    /// Whether two hostings by different incarnations overlap in time.
    pub fn overlaps(&self, other: &Hosting) -> bool {
        let ends_before = |a: &Hosting, b: &Hosting| a.to.is_some_and(|t| t <= b.from);
        (self.process != other.process || self.start != other.start)
            && self.entity_id == other.entity_id
            && !ends_before(self, other)
            && !ends_before(other, self)
    }
}

impl TradeProcessor {
    /// Starts `trade-processor` joining through `seed`, on `backend`, logging to `log_dir`
    /// with `log_filter` (a `RUST_LOG` value).
    pub fn start(
        name: &str,
        seed: &NodeAddress,
        backend: &Backend,
        log_dir: &Path,
        log_filter: &str,
    ) -> Self {
        let mut p = TradeProcessor {
            name: name.to_string(),
            child: None,
            port: free_port(),
            mgmt: free_port(),
            seed: seed.clone(),
            backend: backend.clone(),
            log: log_dir.join(format!("{name}.log")),
            log_filter: log_filter.to_string(),
            starts: 0,
            killed_at: Vec::new(),
        };
        p.spawn();
        p
    }

    /// The cluster address, as members are listed.
    pub fn address(&self) -> String {
        format!("akka.tcp://AkkaTrader@127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let _ = std::io::Write::write_all(
            &mut log,
            format!("---- start #{} ----\n", self.starts).as_bytes(),
        );
        let mut cmd = Command::new(BIN);
        // Nothing of the test's environment (a MONGO_CONNECTION_STR, say) leaks in.
        cmd.env_clear()
            .args(["--port", &self.port.to_string()])
            .args(["--management-port", &self.mgmt.to_string()])
            .args(["--seeds", &format!("127.0.0.1:{}", self.seed.port)])
            .env("RUST_LOG", &self.log_filter)
            .env("LOG_FORMAT", "json")
            .env("CLUSTER_GOSSIP_INTERVAL", "200ms")
            .env("CLUSTER_SEED_NODE_TIMEOUT", "1s")
            .env("CLUSTER_SBR_STABLE_AFTER", "3s")
            .env("CLUSTER_EXITING_TIMEOUT", "3s")
            .env("CLUSTER_JOIN_TIMEOUT", "60s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        match &self.backend {
            Backend::Sqlite(dir) => {
                cmd.arg("--data-dir").arg(dir);
            }
            Backend::Mongo(uri) => {
                cmd.env("MONGO_CONNECTION_STR", uri);
            }
        }
        self.child = Some(cmd.spawn().expect("spawn the trade-processor binary"));
    }

    /// `kill -9`, and waits until the process is gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap the killed process");
            self.killed_at.push(OffsetDateTime::now_utc());
        }
    }

    /// SIGTERM (a graceful leave: hand-off, leave, exit), and waits up to `secs` for the
    /// process to exit; returns its exit status.
    pub fn terminate(&mut self, secs: u64) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = c.try_wait().expect("wait for the process") {
                self.child = None;
                self.killed_at.push(OffsetDateTime::now_utc());
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not exit within {secs} s of SIGTERM\n{}",
                self.name,
                self.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log lines (of every start) that report a journal write the store rejected: a
    /// sign that two incarnations of an entity wrote at once.
    pub fn rejected_writes(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("write rejected"))
            .map(str::to_string)
            .collect()
    }

    /// Every entity each start of this process hosted, from the region's debug lines
    /// (`cluster_sharding::region=debug` in the log filter); a killed start's hostings end
    /// when it was killed.
    pub fn hostings(&self) -> Vec<Hosting> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut done = Vec::new();
        let mut open: HashMap<String, Hosting> = HashMap::new();
        let mut start = 0;
        let close_all =
            |open: &mut HashMap<String, Hosting>, start: u32, done: &mut Vec<Hosting>| {
                let end = (start as usize)
                    .checked_sub(1)
                    .and_then(|i| self.killed_at.get(i));
                for (_, mut h) in open.drain() {
                    h.to = end.copied();
                    done.push(h);
                }
            };
        for line in text.lines() {
            if let Some(n) = line
                .strip_prefix("---- start #")
                .and_then(|r| r.strip_suffix(" ----"))
            {
                close_all(&mut open, start, &mut done);
                start = n.parse().expect("start number");
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(msg), Some(id), Some(at)) = (
                v["fields"]["message"].as_str().or(v["message"].as_str()),
                v["fields"]["entity_id"]
                    .as_str()
                    .or(v["entity_id"].as_str()),
                v["timestamp"].as_str(),
            ) else {
                continue;
            };
            let at = OffsetDateTime::parse(at, &Rfc3339).expect("an RFC 3339 timestamp");
            match msg {
                "starting entity" => {
                    let h = Hosting {
                        process: self.name.clone(),
                        start,
                        entity_id: id.to_string(),
                        from: at,
                        to: None,
                    };
                    if let Some(mut prev) = open.insert(id.to_string(), h) {
                        // Restarted by the same region (after a failure): the first ended.
                        prev.to = Some(at);
                        done.push(prev);
                    }
                }
                // A failed start (its recovery failed) ends the hosting too.
                "entity stopped" | "entity did not start; its messages are dropped" => {
                    if let Some(mut h) = open.remove(id) {
                        h.to = Some(at);
                        done.push(h);
                    }
                }
                _ => {}
            }
        }
        close_all(&mut open, start, &mut done);
        done
    }

    /// Starts it again at the same address on the same data.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// `Some(description)` when the process has exited by itself.
    pub fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        c.try_wait()
            .ok()
            .flatten()
            .map(|s| format!("{} exited: {s}", self.name))
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for TradeProcessor {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Cluster timings for the in-process nodes: production failure detection (heartbeat 1 s,
/// acceptable pause 3 s), quick gossip and joining on loopback, a 3 s split-brain resolver.
fn node_config(seeds: Vec<NodeAddress>, roles: &[&str]) -> NodeConfig {
    let mut cfg = NodeConfig::local(seeds, roles, Duration::from_millis(200));
    let local = cfg.cluster.clone();
    cfg.cluster = ClusterConfig {
        discovery: local.discovery,
        roles: local.roles,
        gossip_interval: Duration::from_millis(200),
        seed_node_timeout: Duration::from_secs(1),
        join_retry_interval: Duration::from_millis(200),
        sbr: Some(SbrConfig {
            stable_after: Duration::from_secs(3),
            ..SbrConfig::default()
        }),
        ..ClusterConfig::default()
    };
    cfg.shutdown_phase_timeout = Duration::from_secs(3);
    cfg
}

/// What the in-process part of the cluster runs.
pub struct Setup {
    pub backend: Backend,
    pub tickers: Vec<Ticker>,
    pub orders_per_second: u32,
    /// `RUST_LOG` of the trade-processor processes (default: the test's, else warnings).
    pub child_log_filter: Option<String>,
}

/// The cluster: two trade-processor processes, and in this process the seed, pricing and
/// traders nodes.
pub struct Cluster {
    pub tickers: Vec<Ticker>,
    pub seed: Node,
    /// Proxy of the order books on the seed node, to query them.
    pub books: ShardRegion<trade_processor::OrderBookMsg>,
    pub pricing_node: ServiceNode,
    pub pricing: pricing::Pricing,
    pub traders_node: ServiceNode,
    pub traders: traders::Traders,
    /// This process's view of the store (the same data the children write).
    pub stores: Stores,
    pub processes: Vec<TradeProcessor>,
    logs: tempfile::TempDir,
}

impl Cluster {
    /// Starts the seed, both trade-processor processes, pricing and traders, and waits until
    /// all five are Up.
    pub async fn start(setup: Setup) -> Cluster {
        // The in-process nodes' warnings go to the captured output (RUST_LOG shows more); a
        // second test in the same process keeps the first one's subscriber.
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let _ = telemetry::TelemetryBuilder::new("trade-processor-tests")
            .log_filter(filter.clone())
            .install();
        let stores = Stores::open(&setup.backend.store_config())
            .await
            .expect("open the store");
        let seed = Node::start(node_config(vec![], &["lighthouse"]))
            .await
            .expect("start the seed node");
        let seeds = vec![seed.address().address.clone()];
        let books = ShardRegion::start_proxy_on_node(trade_processor::sharding_settings(), &seed)
            .await
            .expect("start the order-book proxy on the seed");

        let logs = tempfile::Builder::new()
            .prefix("trade-processor-logs")
            .tempdir()
            .unwrap();
        let child_log = setup
            .child_log_filter
            .clone()
            .unwrap_or_else(|| filter.clone());
        let processes: Vec<TradeProcessor> = (1..=2)
            .map(|i| {
                TradeProcessor::start(
                    &format!("trade-processor-{i}"),
                    &seeds[0],
                    &setup.backend,
                    logs.path(),
                    &child_log,
                )
            })
            .collect();

        let pricing_node = ServiceNode::start(node_config(seeds.clone(), &pricing::ROLES))
            .await
            .expect("start the pricing node");
        let pricing = pricing::start(
            &pricing_node,
            &stores,
            setup.tickers.clone(),
            pricing::AggregatorSettings {
                publish_interval: Duration::from_millis(200),
                checkpoint_interval: Duration::from_millis(500),
                ..Default::default()
            },
        )
        .await
        .expect("start pricing");

        let traders_node = ServiceNode::start(node_config(seeds.clone(), &traders::ROLES))
            .await
            .expect("start the traders node");
        let mut processes = processes;
        wait_up(&seed, &mut processes, &HashSet::new()).await;
        let traders = traders::start(
            &traders_node,
            &traders::TradersConfig {
                tickers: setup.tickers.clone(),
                pacing: traders::TradersPacing::Load {
                    orders_per_second: setup.orders_per_second,
                },
                // Re-send soon after a kill (the wait doubles after each re-send, up to
                // 16 times this), and keep the backlog of a long outage small.
                retry_after: Duration::from_secs(1),
                max_pending: 2_000,
                ..Default::default()
            },
        )
        .await
        .expect("start the traders");
        Cluster {
            tickers: setup.tickers,
            seed,
            books,
            pricing_node,
            pricing,
            traders_node,
            traders,
            stores,
            processes,
            logs,
        }
    }

    /// What went on, for failure messages: the seed's view and the children's log tails.
    pub fn context(&self) -> String {
        context(&self.seed, &self.processes)
    }

    /// The uids of the trade-processor members the seed sees now.
    pub fn trade_processor_uids(&self) -> HashSet<u64> {
        self.seed
            .cluster()
            .state()
            .members
            .iter()
            .filter(|m| m.roles.contains(TRADE_PROCESSOR_ROLE))
            .map(|m| m.uid)
            .collect()
    }

    /// Waits until both trade-processors are Up and reachable as incarnations not in
    /// `old`, and the seed's view has converged with every member Up.
    pub async fn wait_trade_processors_up(&mut self, old: &HashSet<u64>) {
        wait_up(&self.seed, &mut self.processes, old).await;
    }

    /// The uid of trade-processor `i` as the seed sees it now.
    pub fn uid_of(&self, i: usize) -> u64 {
        let node = self.processes[i].address();
        self.seed
            .cluster()
            .state()
            .members
            .iter()
            .find(|m| m.node == node)
            .map(|m| m.uid)
            .expect("the trade-processor is a member")
    }

    /// `kill -9` both trade-processors; returns the uids they had.
    pub fn kill_trade_processors(&mut self) -> HashSet<u64> {
        let old = self.trade_processor_uids();
        for p in &mut self.processes {
            p.kill9();
        }
        old
    }

    /// Restarts both trade-processors (same addresses, same data) and waits until they are
    /// Up as new incarnations.
    pub async fn restart_trade_processors(&mut self, old: &HashSet<u64>) {
        for p in &mut self.processes {
            p.restart();
        }
        self.wait_trade_processors_up(old).await;
    }

    /// The traders' counters.
    pub async fn stats(&self) -> traders::DeskStats {
        self.traders.stats(false).await.expect("the desk answers")
    }

    /// Polls until the traders have nothing unconfirmed, for up to `secs` seconds.
    pub async fn wait_nothing_pending(&self, secs: u64) -> traders::DeskStats {
        eventually(
            secs,
            "every order to be confirmed",
            || self.context(),
            || async {
                let s = self.stats().await;
                (s.pending == 0).then_some(s)
            },
        )
        .await
    }

    /// Every ticker's book rebuilt from the journal alone, with the ids of the orders placed.
    pub async fn journal(&self) -> HashMap<Ticker, (OrderBook, Vec<OrderId>)> {
        let mut all = HashMap::new();
        for &t in &self.tickers {
            all.insert(t, journal_book(&self.stores, t).await);
        }
        all
    }

    /// Asserts that every order the traders consider confirmed is in the journal, and that
    /// no order was placed twice. Returns how many confirmed orders were checked.
    pub async fn assert_confirmed_orders_journaled(&self, when: &str) -> usize {
        let confirmed = self
            .traders
            .confirmed_ids()
            .await
            .expect("the desk answers");
        let journal = self.journal().await;
        let mut placed = HashSet::new();
        for (t, (_, ids)) in &journal {
            for id in ids {
                assert!(
                    placed.insert(*id),
                    "{when}: order {id:?} was placed twice in the {t} book"
                );
            }
        }
        let missing: Vec<_> = confirmed.iter().filter(|id| !placed.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "{when}: {} of {} confirmed orders are not in the journal, e.g. {:?}",
            missing.len(),
            confirmed.len(),
            &missing[..missing.len().min(5)]
        );
        confirmed.len()
    }

    /// Asks the live book of `ticker` for its whole state, through the proxy on the seed.
    pub async fn live_book(&self, ticker: Ticker) -> BookSnapshot {
        books::ask_book(&self.seed, &self.books, ticker, 60)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no answer from the {ticker} book within 60 s\n{}",
                    self.context()
                )
            })
    }

    /// Every ticker's live book.
    pub async fn live_books(&self) -> Vec<(Ticker, BookSnapshot)> {
        let mut v = Vec::new();
        for &t in &self.tickers {
            v.push((t, self.live_book(t).await));
        }
        v
    }

    /// The latest checkpoint of a ticker's price aggregator.
    pub async fn price_checkpoint(&self, ticker: Ticker) -> Option<pricing::PriceProjection> {
        let pid = pricing::aggregator::persistence_id(ticker);
        let s = self
            .stores
            .snapshots
            .load_snapshot(&pid, SnapshotSelectionCriteria::latest())
            .await
            .ok()??;
        s.data.decode::<pricing::PriceProjection>().ok()
    }

    /// Stops trading and the in-process nodes; the children are killed when dropped.
    pub async fn shutdown(self) {
        self.traders.stop();
        for n in [&self.traders_node.node, &self.pricing_node.node, &self.seed] {
            n.halt().await;
        }
    }
}

/// What went on, for failure messages: the seed's view and the children's log tails.
fn context(seed: &Node, processes: &[TradeProcessor]) -> String {
    let mut s = String::new();
    let view = seed.cluster().state();
    let _ = writeln!(
        s,
        "seed's view of the cluster (converged: {}):",
        view.converged
    );
    for m in &view.members {
        let _ = writeln!(
            s,
            "  {} uid {} {:?} reachable {} {:?}",
            m.node, m.uid, m.status, m.reachable, m.roles
        );
    }
    for p in processes {
        let _ = writeln!(
            s,
            "last lines of {} (started {} times):\n{}",
            p.name,
            p.starts,
            p.log_tail(15)
        );
    }
    s
}

/// Waits until both trade-processors are Up and reachable as incarnations not in `old`,
/// and the seed's view has converged with every member Up.
async fn wait_up(seed: &Node, processes: &mut [TradeProcessor], old: &HashSet<u64>) {
    let expected: BTreeSet<String> = processes.iter().map(|p| p.address()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let exited: Vec<String> = processes.iter_mut().filter_map(|p| p.exited()).collect();
        assert!(
            exited.is_empty(),
            "{}\n{}",
            exited.join("; "),
            context(seed, processes)
        );
        if all_up_with(&seed.cluster().state(), &expected, old) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the trade-processors did not come Up within 60 s\n{}",
            context(seed, processes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_up_with(view: &ClusterSnapshot, expected: &BTreeSet<String>, old: &HashSet<u64>) -> bool {
    let fresh: BTreeSet<String> = view
        .members
        .iter()
        .filter(|m| {
            m.roles.contains(TRADE_PROCESSOR_ROLE)
                && !old.contains(&m.uid)
                && m.status == MemberStatus::Up
                && m.reachable
        })
        .map(|m| m.node.clone())
        .collect();
    &fresh == expected
        && view.converged
        && view
            .members
            .iter()
            .all(|m| m.status == MemberStatus::Up && m.reachable)
}

pub use books::journal_book;

/// Where a difference between two snapshots of one book is, in a few words (the books hold
/// hundreds of orders, too many for an assertion message).
pub fn book_difference(a: &BookSnapshot, b: &BookSnapshot) -> Option<String> {
    if a == b {
        return None;
    }
    let mut s = String::new();
    for (what, x, y) in [("bids", &a.bids, &b.bids), ("asks", &a.asks, &b.asks)] {
        if x.len() != y.len() {
            let _ = write!(s, "{what}: {} vs {} resting; ", x.len(), y.len());
        }
        if let Some(i) = x.iter().zip(y.iter()).position(|(p, q)| p != q) {
            let _ = write!(s, "{what}[{i}]: {:?} vs {:?}; ", x[i], y[i]);
        }
    }
    if a.trades != b.trades {
        let _ = write!(s, "trades {} vs {}; ", a.trades, b.trades);
    }
    if a.next_seq != b.next_seq {
        let _ = write!(s, "next_seq {} vs {}; ", a.next_seq, b.next_seq);
    }
    if a.placed != b.placed {
        let _ = write!(
            s,
            "placed ids: {} vs {} streams, {:?} vs {:?}; ",
            a.placed.len(),
            b.placed.len(),
            a.placed.iter().find(|m| !b.placed.contains(m)),
            b.placed.iter().find(|m| !a.placed.contains(m)),
        );
    }
    Some(s)
}
