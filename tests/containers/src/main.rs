//! `container-suite`: the AkkaTrader cluster as Docker containers, and faults across hosts.
//!
//! It starts docker/docker-compose.yaml with the tests' override (docker/docker-compose.test.yaml:
//! the SecantusDB stand-in for MongoDB, traders in load mode writing blotters) as a compose
//! project of its own, then runs, in order:
//!
//! 1. **formation**: every member Up (`docker exec lighthouse-0 tradectl cluster show`), `/ready`
//!    200 on each, prices of all 28 tickers on pricing-web's published port;
//! 2. **crash**: `docker kill` trade-processor-1 under load; downed, removed, its books trade on
//!    trade-processor-0; started again, it rejoins;
//! 3. **partition**: trade-processor-0 cut off the network past the resolver's stable-after: the
//!    majority downs it, it shuts itself down, and after reconnecting it rejoins as a new
//!    incarnation; then trade-processor-1 cut off for less than stable-after: nobody is downed;
//! 4. **rolling restart**: every container stopped with SIGTERM and started again, one at a
//!    time, highest ordinal first, as a StatefulSet RollingUpdate does (the next only once the
//!    last is Up and answers `/ready`); each exits 0 within its grace period; the longest pause
//!    any book saw is reported;
//! 5. **update**: a rolling update of the trade-processors to app version 0.1.1 (each container
//!    replaced, highest ordinal first); how many times each shard moved, and the longest pause
//!    a book saw;
//! 6. **scale**: traders 2 -> 4 -> 2; the new ones join, the removed ones leave gracefully;
//! 7. **outage**: the MongoDB container stopped for 10 s under load; books refuse work with
//!    errors, nothing crashes, then trading resumes.
//!
//! After every fault it checks the invariants of [`ledger`] (nothing confirmed lost, nothing
//! placed twice, trade ids 1..N, pricing caught up, no rejected write), and it prints the
//! figures it measured. With `--soak MINUTES` it runs [`soak`] instead of the scenarios. The project is removed at the end (containers, network, volumes) unless
//! `--keep` is given. `scripts/container-tests.sh` builds the images and runs it.

mod docker;
mod k8s;
mod ledger;
mod soak;
#[path = "../../support/web.rs"]
mod web;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use domain::Ticker;
use host::{StoreConfig, Stores};
use serde_json::Value;
use tokio::time::Instant;

use docker::{Project, Teardown, docker};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "container-suite",
    about = "The container fault suite of akka-cqrs-rs"
)]
struct Cli {
    /// Orders per second of each traders container.
    #[arg(long, default_value_t = 50)]
    orders_per_second: u32,
    /// Run only these faults (comma separated: crash,partition,rolling,update,scale,outage).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Formation and the steady-state rate only.
    #[arg(long)]
    no_faults: bool,
    /// Instead of the scenarios, a soak of this many minutes: a random fault every 30-60 s,
    /// the invariants after each, a table per fault kind and the memory of every container.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<u64>,
    /// Seed of the soak's faults (default: from the clock; printed at the start).
    #[arg(long)]
    seed: Option<u64>,
    /// Run the Kubernetes scenarios instead: the k8s/ manifests as pods on Docker through the
    /// harness (tests/k8s-harness), deployed and stopped by the deploy scripts.
    #[arg(long)]
    kubernetes: bool,
    /// Leave the project running at the end (remove it with `docker-compose -p NAME down -v`).
    #[arg(long)]
    keep: bool,
    /// The repository (default: the current directory).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
}

/// Every member of the compose topology: 3 lighthouses, 2 trade-processors, 2 pricing,
/// 2 traders.
const MEMBERS: usize = 9;
/// The members with a name of their own (the traders are scaled and advertise their IP).
const NAMED: [&str; 7] = [
    "lighthouse-0",
    "lighthouse-1",
    "lighthouse-2",
    "trade-processor-0",
    "trade-processor-1",
    "pricing-0",
    "pricing-1",
];
/// The services' stop grace period in the compose file.
const GRACE: Duration = Duration::from_secs(35);

fn address(service: &str, port: u16) -> String {
    format!("akka.tcp://AkkaTrader@{service}:{port}")
}

/// One member as `/cluster/members` reports it.
#[derive(Debug, Clone)]
struct Member {
    node: String,
    uid: u64,
    status: String,
    reachable: bool,
    app_version: String,
}

/// What "a book moves again" is measured by.
#[derive(Clone, Copy, Debug)]
enum Progress {
    /// Its last trade id grows (the book matches orders): reads the books whole.
    Trades,
    /// Its journal's sequence number grows (it writes): one query per book, for polling.
    Writes,
}

impl Progress {
    fn verb(self) -> &'static str {
        match self {
            Progress::Trades => "trading",
            Progress::Writes => "writing",
        }
    }

    fn poll(self) -> Duration {
        match self {
            Progress::Trades => Duration::from_millis(500),
            Progress::Writes => Duration::from_millis(250),
        }
    }
}

struct Suite<'a> {
    project: &'a Project,
    blotters: PathBuf,
    dashboard: SocketAddr,
    figures: Vec<(String, String)>,
    stores: Option<Stores>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The longest pause any book saw: every book's highest sequence nr, sampled every 250 ms
/// from the journal, and the longest time one stayed the same while the traders load it.
struct PauseSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Pause>,
}

/// A book's longest pause: how long, which book, and when it ended.
struct Pause {
    length: Duration,
    ticker: String,
    ended: Instant,
}

impl Pause {
    /// The step (label, start, end) that overlapped the pause most, to say what caused it.
    fn during<'a>(&self, steps: &'a [(String, Instant, Instant)]) -> Option<&'a str> {
        let began = self.ended.checked_sub(self.length)?;
        steps
            .iter()
            .map(|(label, start, end)| {
                let overlap = (*end)
                    .min(self.ended)
                    .saturating_duration_since((*start).max(began));
                (overlap, label)
            })
            .filter(|(overlap, _)| !overlap.is_zero())
            .max_by_key(|(overlap, _)| *overlap)
            .map(|(_, label)| label.as_str())
    }
}

impl PauseSampler {
    fn start(stores: Stores) -> PauseSampler {
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut last: BTreeMap<Ticker, (u64, Instant)> = BTreeMap::new();
            let mut longest = Pause {
                length: Duration::ZERO,
                ticker: String::new(),
                ended: Instant::now(),
            };
            loop {
                for t in Ticker::defaults() {
                    let Ok(seq) = ledger::book_seq(&stores, t).await else {
                        continue;
                    };
                    let now = Instant::now();
                    let e = last.entry(t).or_insert((seq, now));
                    if seq != e.0 {
                        let gap = now - e.1;
                        if gap > longest.length {
                            longest = Pause {
                                length: gap,
                                ticker: t.to_string(),
                                ended: now,
                            };
                        }
                        *e = (seq, now);
                    }
                }
                if stop_rx.try_recv().is_ok() {
                    return longest;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        PauseSampler { stop, task }
    }

    /// The longest pause, the book that saw it and when.
    async fn stop(self) -> Result<Pause> {
        let _ = self.stop.send(());
        Ok(self.task.await?)
    }
}

/// How often each `orderBook` shard changed its home: `GET /cluster/shards/orderBook` on
/// the traders (which proxy the type and are not restarted), sampled every 250 ms. A shard
/// absent from every region is in hand-off and counts when it reappears elsewhere.
struct ShardMoveSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<BTreeMap<u64, (String, usize)>>,
}

impl ShardMoveSampler {
    fn start(nodes: Vec<SocketAddr>) -> ShardMoveSampler {
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // shard -> (current home, moves so far)
            let mut homes: BTreeMap<u64, (String, usize)> = BTreeMap::new();
            loop {
                for addr in &nodes {
                    let Ok(Ok((200, body))) = tokio::time::timeout(
                        Duration::from_secs(2),
                        web_get(*addr, "/cluster/shards/orderBook"),
                    )
                    .await
                    else {
                        continue;
                    };
                    let Ok(stats) = serde_json::from_str::<Value>(&body) else {
                        continue;
                    };
                    for region in stats["regions"].as_array().into_iter().flatten() {
                        let home = region["address"].as_str().unwrap_or_default();
                        for id in region["shardIds"].as_array().into_iter().flatten() {
                            let Some(id) = id.as_u64() else { continue };
                            let e = homes.entry(id).or_insert((home.to_owned(), 0));
                            if e.0 != home {
                                *e = (home.to_owned(), e.1 + 1);
                            }
                        }
                    }
                    break;
                }
                if stop_rx.try_recv().is_ok() {
                    return homes;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        ShardMoveSampler { stop, task }
    }

    /// Moves per shard.
    async fn stop(self) -> Result<BTreeMap<u64, (String, usize)>> {
        let _ = self.stop.send(());
        Ok(self.task.await?)
    }
}

/// `at most M, A on average over N shards (moves: shards {moves: count})`.
fn moves_summary(homes: &BTreeMap<u64, (String, usize)>) -> Result<String> {
    if homes.is_empty() {
        bail!("no shard homes were sampled from the traders");
    }
    let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
    for (_, n) in homes.values() {
        *histogram.entry(*n).or_default() += 1;
    }
    let total: usize = homes.values().map(|(_, n)| n).sum();
    let most = histogram.keys().max().copied().unwrap_or(0);
    Ok(format!(
        "at most {most}, {:.2} on average over {} shards (moves: shards {:?})",
        total as f64 / homes.len() as f64,
        homes.len(),
        histogram
    ))
}

impl Suite<'_> {
    fn figure(&mut self, name: &str, value: String) {
        println!("    {name}: {value}");
        self.figures.push((name.to_owned(), value));
    }

    /// The members, as the first lighthouse that answers sees them.
    async fn members(&self) -> Result<Vec<Member>> {
        for lh in ["lighthouse-0", "lighthouse-1", "lighthouse-2"] {
            let Ok(id) = self.project.container(lh).await else {
                continue;
            };
            let ip = self.project.ip(&id).await?;
            if ip.is_empty() {
                continue;
            }
            let addr: SocketAddr = format!("{ip}:8558").parse()?;
            let Ok(Ok((200, body))) =
                tokio::time::timeout(Duration::from_secs(2), web_get(addr, "/cluster/members"))
                    .await
            else {
                continue;
            };
            let state: Value = serde_json::from_str(&body)?;
            return Ok(state["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| Member {
                    node: m["node"].as_str().unwrap_or_default().to_owned(),
                    uid: m["nodeUid"].as_u64().unwrap_or_default(),
                    status: m["status"].as_str().unwrap_or_default().to_owned(),
                    reachable: m["reachable"].as_bool().unwrap_or(false),
                    app_version: m["appVersion"].as_str().unwrap_or_default().to_owned(),
                })
                .collect());
        }
        bail!("no lighthouse answers /cluster/members")
    }

    async fn member(&self, node: &str) -> Result<Option<Member>> {
        Ok(self.members().await?.into_iter().find(|m| m.node == node))
    }

    /// Waits until `node` is Up and reachable as a new incarnation (not `old_uid`).
    async fn rejoined(&self, node: &str, old_uid: u64, timeout: Duration) -> Result<()> {
        eventually(
            &format!("{node} Up as a new incarnation"),
            timeout,
            || async {
                Ok(self
                    .member(node)
                    .await?
                    .filter(|m| m.status == "Up" && m.reachable && m.uid != old_uid)
                    .map(|_| ()))
            },
        )
        .await
    }

    /// Waits until `n` members are Up and reachable.
    async fn all_up(&self, n: usize, timeout: Duration) -> Result<Vec<Member>> {
        eventually(
            &format!("{n} members Up and reachable"),
            timeout,
            || async {
                let ms = self.members().await?;
                let ok = ms.len() == n && ms.iter().all(|m| m.status == "Up" && m.reachable);
                Ok(ok.then_some(ms))
            },
        )
        .await
    }

    /// The journal and snapshots in the MongoDB container, through its current address.
    async fn stores(&mut self) -> Result<&Stores> {
        if self.stores.is_none() {
            let id = self.project.container("mongodb").await?;
            let ip = self.project.ip(&id).await?;
            let uri = format!("mongodb://{ip}:27017/akkaTrader?directConnection=true");
            let stores = Stores::open(&StoreConfig::Mongo(uri.clone()))
                .await
                .with_context(|| format!("open the journal at {uri}"))?;
            self.stores = Some(stores);
        }
        Ok(self.stores.as_ref().unwrap())
    }

    /// Each book's last trade id.
    async fn last_trades(&mut self) -> Result<BTreeMap<Ticker, u64>> {
        let stores = self.stores().await?;
        Ok(ledger::read_books(stores)
            .await?
            .into_iter()
            .map(|(t, b)| (t, b.last_trade))
            .collect())
    }

    /// Each book's progress as `by` measures it.
    async fn progress(&mut self, by: Progress) -> Result<BTreeMap<Ticker, u64>> {
        match by {
            Progress::Trades => self.last_trades().await,
            Progress::Writes => {
                let mut seqs = BTreeMap::new();
                for t in Ticker::defaults() {
                    let stores = self.stores().await?;
                    seqs.insert(t, ledger::book_seq(stores, t).await?);
                }
                Ok(seqs)
            }
        }
    }

    /// Waits until every book moved past `before`, as `by` measures it. The store may be
    /// away meanwhile (a fault can be its outage): the client is opened again until then.
    async fn every_book_moves(
        &mut self,
        by: Progress,
        before: &BTreeMap<Ticker, u64>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let stuck: Vec<String> = match self.progress(by).await {
                Ok(now) => before
                    .iter()
                    .filter(|(t, n)| now.get(t).copied().unwrap_or(0) <= **n)
                    .map(|(t, _)| t.to_string())
                    .collect(),
                Err(e) => {
                    self.stores = None;
                    vec![format!("the store: {e:#}")]
                }
            };
            if stuck.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "books not {} {timeout:?} after the fault: {stuck:?}",
                    by.verb()
                );
            }
            tokio::time::sleep(by.poll()).await;
        }
    }

    async fn tp_logs(&self) -> Result<Vec<String>> {
        let mut logs = Vec::new();
        for s in ["trade-processor-0", "trade-processor-1"] {
            logs.push(self.project.logs(&self.project.container(s).await?).await?);
        }
        Ok(logs)
    }

    /// The invariants, after a fault.
    async fn invariants(&mut self, after: &str) -> Result<()> {
        let logs = self.tp_logs().await?;
        let blotters = self.blotters.clone();
        let stores = self.stores().await?;
        let v = ledger::check(stores, &blotters, &logs)
            .await
            .with_context(|| format!("invariants after {after}"))?;
        println!(
            "    invariants hold after {after}: {} confirmed orders all journaled, {} placed once each, {} trades with ids 1..N, pricing caught up",
            v.confirmed, v.placed, v.trades
        );
        Ok(())
    }

    /// Orders confirmed per second, from the blotters, over `window`.
    async fn confirmed_rate(&self, window: Duration) -> Result<f64> {
        let a = ledger::read_blotters(&self.blotters)?.len();
        tokio::time::sleep(window).await;
        let b = ledger::read_blotters(&self.blotters)?.len();
        Ok((b - a) as f64 / window.as_secs_f64())
    }

    async fn formation(&mut self, started: Instant) -> Result<()> {
        println!("==> formation");
        self.all_up(MEMBERS, Duration::from_secs(240)).await?;
        self.figure("all members Up after `up`", secs(started.elapsed()));
        let lh0 = self.project.container("lighthouse-0").await?;
        let show = docker(&["exec", &lh0, "tradectl", "cluster", "show"]).await?;
        let up = show
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("| up |"))
            .count();
        if up != MEMBERS {
            bail!("tradectl cluster show lists {up} members Up, expected {MEMBERS}:\n{show}");
        }
        let mut ready = 0;
        let mut ids = Vec::new();
        for s in NAMED {
            ids.push(self.project.container(s).await?);
        }
        ids.extend(self.project.containers("traders").await?);
        for id in &ids {
            let addr: SocketAddr = format!("{}:8558", self.project.ip(id).await?).parse()?;
            // Each member sees itself Up a gossip round after the lighthouse does.
            eventually(&format!("/ready 200 on {id}"), Duration::from_secs(60), || async move {
                Ok(matches!(web_get(addr, "/ready").await?, (200, _)).then_some(()))
            })
            .await?;
            ready += 1;
        }
        println!("    tradectl cluster show: {up} members Up; /ready 200 on {ready} members");
        let dashboard = self.dashboard;
        eventually(
            "prices of all 28 tickers on pricing-web",
            Duration::from_secs(180),
            || async move {
                let (status, body) = web_get(dashboard, "/api/tickers").await?;
                if status != 200 {
                    return Ok(None);
                }
                let rows: Value = serde_json::from_str(&body)?;
                let priced = rows
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| !r["latest"].is_null())
                    .count();
                Ok((priced == 28).then_some(()))
            },
        )
        .await?;
        self.figure(
            "prices of all 28 tickers after `up`",
            secs(started.elapsed()),
        );
        let rate = self.confirmed_rate(Duration::from_secs(20)).await?;
        self.figure("confirmed orders/s across containers", format!("{rate:.0}"));
        self.invariants("formation").await
    }

    async fn crash(&mut self) -> Result<()> {
        println!("==> crash: docker kill trade-processor-1 under load");
        let node = address("trade-processor-1", 5055);
        let old = self
            .member(&node)
            .await?
            .context("trade-processor-1 is a member")?;
        let before = self.last_trades().await?;
        let id = self.project.container("trade-processor-1").await?;
        let t0 = Instant::now();
        docker(&["kill", &id]).await?;
        let (unreachable, down) = (Cell::new(None), Cell::new(None));
        let this = &*self;
        let removed = eventually(
            "trade-processor-1 removed",
            Duration::from_secs(120),
            || {
                let node = node.clone();
                let (unreachable, down) = (&unreachable, &down);
                async move {
                    match this.member(&node).await? {
                        Some(m) => {
                            if !m.reachable && unreachable.get().is_none() {
                                unreachable.set(Some(t0.elapsed()));
                            }
                            if m.status == "Down" && down.get().is_none() {
                                down.set(Some(t0.elapsed()));
                            }
                            Ok(None)
                        }
                        None => Ok(Some(t0.elapsed())),
                    }
                }
            },
        )
        .await?;
        let figure = |d: Option<Duration>| d.map(secs).unwrap_or_else(|| "-".into());
        self.figure("crash: unreachable after kill", figure(unreachable.get()));
        self.figure("crash: downed after kill", figure(down.get()));
        self.figure("crash: removed after kill", secs(removed));
        // Its shards move: trade-processor-0 runs every book, and every book trades again.
        let tp0 = self.project.container("trade-processor-0").await?;
        let tp0_addr: SocketAddr = format!("{}:8558", self.project.ip(&tp0).await?).parse()?;
        eventually(
            "trade-processor-0 hosting all 28 books",
            Duration::from_secs(90),
            || async move {
                let (status, body) = web_get(tp0_addr, "/cluster/shards/orderBook").await?;
                let stats: Value = serde_json::from_str(&body).unwrap_or_default();
                let regions = stats["regions"].as_array().cloned().unwrap_or_default();
                let only_tp0 = regions.len() == 1
                    && regions[0]["address"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("trade-processor-0")
                    && regions[0]["entities"].as_u64().unwrap_or(0) >= 28;
                Ok((status == 200 && only_tp0).then_some(()))
            },
        )
        .await?;
        self.every_book_moves(Progress::Trades, &before, Duration::from_secs(120))
            .await?;
        self.figure(
            "crash: every book trading again after kill",
            secs(t0.elapsed()),
        );
        let t1 = Instant::now();
        docker(&["start", &id]).await?;
        self.rejoined(&node, old.uid, Duration::from_secs(120))
            .await?;
        self.figure("crash: rejoined Up after docker start", secs(t1.elapsed()));
        self.all_up(MEMBERS, Duration::from_secs(60)).await?;
        self.invariants("crash").await
    }

    async fn reconnect(&self, id: &str, alias: &str) -> Result<()> {
        docker(&[
            "network",
            "connect",
            "--alias",
            alias,
            &self.project.network(),
            id,
        ])
        .await
        .map(|_| ())
    }

    async fn partition(&mut self) -> Result<()> {
        println!("==> partition: trade-processor-0 cut off past stable-after (20 s)");
        let node = address("trade-processor-0", 5055);
        let old = self
            .member(&node)
            .await?
            .context("trade-processor-0 is a member")?;
        let id = self.project.container("trade-processor-0").await?;
        let (_, _, restarts_before) = self.project.state(&id).await?;
        let t0 = Instant::now();
        docker(&["network", "disconnect", &self.project.network(), &id]).await?;
        let unreachable = Cell::new(None);
        let this = &*self;
        let downed = eventually(
            "the majority downs trade-processor-0",
            Duration::from_secs(120),
            || {
                let node = node.clone();
                let unreachable = &unreachable;
                async move {
                    match this.member(&node).await? {
                        Some(m) if m.uid == old.uid && m.status != "Down" => {
                            if !m.reachable && unreachable.get().is_none() {
                                unreachable.set(Some(t0.elapsed()));
                            }
                            Ok(None)
                        }
                        _ => Ok(Some(t0.elapsed())),
                    }
                }
            },
        )
        .await?;
        let unreachable = unreachable.get().map(secs).unwrap_or_else(|| "-".into());
        self.figure("partition: unreachable after cut", unreachable);
        self.figure("partition: downed by the majority after cut", secs(downed));
        // The isolated node downs itself and exits; the restart policy starts it again.
        let project = &self.project;
        let id2 = id.clone();
        let isolated = eventually(
            "the isolated node shuts down",
            Duration::from_secs(120),
            || {
                let id = id2.clone();
                async move {
                    let (running, _, restarts) = project.state(&id).await?;
                    Ok((!running || restarts > restarts_before).then_some(t0.elapsed()))
                }
            },
        )
        .await?;
        self.figure(
            "partition: isolated node shut itself down after cut",
            secs(isolated),
        );
        let t1 = Instant::now();
        self.reconnect(&id, "trade-processor-0").await?;
        self.rejoined(&node, old.uid, Duration::from_secs(180))
            .await?;
        self.figure("partition: rejoined after reconnect", secs(t1.elapsed()));
        self.all_up(MEMBERS, Duration::from_secs(60)).await?;
        self.invariants("the long partition").await?;

        println!("==> partition: trade-processor-1 cut off for 8 s (< stable-after)");
        let before: BTreeMap<String, u64> = self
            .members()
            .await?
            .into_iter()
            .map(|m| (m.node, m.uid))
            .collect();
        let id = self.project.container("trade-processor-1").await?;
        docker(&["network", "disconnect", &self.project.network(), &id]).await?;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let t2 = Instant::now();
        self.reconnect(&id, "trade-processor-1").await?;
        self.all_up(MEMBERS, Duration::from_secs(60)).await?;
        self.figure(
            "short partition: all reachable after heal",
            secs(t2.elapsed()),
        );
        let after: BTreeMap<String, u64> = self
            .members()
            .await?
            .into_iter()
            .map(|m| (m.node, m.uid))
            .collect();
        if before != after {
            bail!("a short partition changed the membership: {before:?} -> {after:?}");
        }
        self.invariants("the short partition").await
    }

    /// Waits until the member in container `id` answers `/ready` 200 (Up, and its shard
    /// regions registered); returns how long after `started`.
    async fn ready_after(&self, id: &str, started: Instant, timeout: Duration) -> Result<Duration> {
        let addr: SocketAddr = format!("{}:8558", self.project.ip(id).await?).parse()?;
        eventually(&format!("/ready 200 on {id}"), timeout, || async move {
            Ok(matches!(web_get(addr, "/ready").await, Ok((200, _))).then_some(()))
        })
        .await?;
        Ok(started.elapsed())
    }

    /// SIGTERM one container, wait for it to exit, start it again; returns the time to exit
    /// and when it was started again.
    async fn restart_gracefully(&self, id: &str) -> Result<(Duration, Instant)> {
        let t0 = Instant::now();
        docker(&["stop", "--time", &GRACE.as_secs().to_string(), id]).await?;
        let took = t0.elapsed();
        let (_, code, _) = self.project.state(id).await?;
        if code != 0 {
            let log = self.project.logs(id).await?;
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!("{id} exited with {code} after SIGTERM ({took:?}); last lines: {tail:#?}");
        }
        if took >= GRACE {
            bail!("{id} did not exit within the grace period");
        }
        let started = Instant::now();
        docker(&["start", id]).await?;
        Ok((took, started))
    }

    async fn rolling(&mut self) -> Result<()> {
        println!("==> rolling restart: SIGTERM, one container at a time, highest ordinal first");
        let pauses = PauseSampler::start(self.stores().await?.clone());
        let mut slowest_exit = (Duration::ZERO, String::new());
        let order: [(&str, u16); 7] = [
            ("trade-processor-1", 5055),
            ("trade-processor-0", 5055),
            ("pricing-1", 5055),
            ("pricing-0", 5055),
            ("lighthouse-2", 4053),
            ("lighthouse-1", 4053),
            ("lighthouse-0", 4053),
        ];
        // (label, container, the member's address and incarnation when it has a name of its
        // own; the scaled traders advertise their container's IP, so only `all_up` applies).
        let mut steps = Vec::new();
        for (service, port) in order {
            let node = address(service, port);
            let old = self.member(&node).await?.context("a member")?;
            let id = self.project.container(service).await?;
            steps.push((service.to_owned(), id, Some((node, old.uid))));
        }
        for id in self.project.containers("traders").await?.into_iter().rev() {
            steps.push((format!("traders {id}"), id, None));
        }
        let mut windows = Vec::new();
        for (label, id, named) in steps {
            let began = Instant::now();
            let (took, started) = self.restart_gracefully(&id).await?;
            if took > slowest_exit.0 {
                slowest_exit = (took, label.clone());
            }
            if let Some((node, old_uid)) = &named {
                self.rejoined(node, *old_uid, Duration::from_secs(120))
                    .await?;
            }
            self.all_up(MEMBERS, Duration::from_secs(120)).await?;
            // As a StatefulSet's rolling update: the next pod only once this one is ready.
            let ready = self
                .ready_after(&id, started, Duration::from_secs(120))
                .await?;
            println!(
                "    {label}: exit 0 after SIGTERM in {}, back Up, ready {} after start",
                secs(took),
                secs(ready)
            );
            windows.push((label, began, Instant::now()));
        }
        let web_id = self.project.container("pricing-web").await?;
        let (took, _) = self.restart_gracefully(&web_id).await?;
        let dashboard = self.dashboard;
        eventually(
            "pricing-web ready again",
            Duration::from_secs(60),
            || async move {
                Ok(matches!(web_get(dashboard, "/ready").await, Ok((200, _))).then_some(()))
            },
        )
        .await?;
        println!(
            "    pricing-web: exit 0 after SIGTERM in {}, ready again",
            secs(took)
        );
        let pause = pauses.stop().await?;
        self.figure(
            "rolling: slowest SIGTERM-to-exit",
            format!("{} ({})", secs(slowest_exit.0), slowest_exit.1),
        );
        self.figure(
            "rolling: longest pause any book saw",
            format!(
                "{} ({}, while restarting {})",
                secs(pause.length),
                pause.ticker,
                pause.during(&windows).unwrap_or("nothing")
            ),
        );
        self.invariants("the rolling restart").await
    }

    /// Starts counting shard moves (through the traders, which are not replaced) and book
    /// pauses, and gives them a first sample before anything moves.
    async fn start_samplers(&mut self) -> Result<(ShardMoveSampler, PauseSampler)> {
        let mut traders = Vec::new();
        for id in self.project.containers("traders").await? {
            traders.push(format!("{}:8558", self.project.ip(&id).await?).parse()?);
        }
        let moves = ShardMoveSampler::start(traders);
        let pauses = PauseSampler::start(self.stores().await?.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok((moves, pauses))
    }

    /// A rolling update of the trade-processors to a new application version, as a
    /// StatefulSet does it: highest ordinal first, each container replaced (SIGTERM, a new
    /// container with `APP_VERSION` 0.1.1) and the next only once the new one is ready.
    /// Reports how often each shard moved and the longest pause a book saw.
    async fn update(&mut self) -> Result<()> {
        const NEW_VERSION: &str = "0.1.1";
        println!(
            "==> rolling update: trade-processors to app version {NEW_VERSION}, highest ordinal first"
        );
        let (moves, pauses) = self.start_samplers().await?;
        let t0 = Instant::now();
        for service in ["trade-processor-1", "trade-processor-0"] {
            let node = address(service, 5055);
            let old = self.member(&node).await?.context("a member")?;
            let started = Instant::now();
            self.project
                .compose_with(
                    &[("TRADE_PROCESSOR_APP_VERSION", NEW_VERSION)],
                    &["up", "-d", "--no-deps", service],
                )
                .await?;
            self.rejoined(&node, old.uid, Duration::from_secs(120))
                .await?;
            let id = self.project.container(service).await?;
            let ready = self
                .ready_after(&id, started, Duration::from_secs(120))
                .await?;
            let now = self.member(&node).await?.context("a member")?;
            if now.app_version != NEW_VERSION {
                bail!(
                    "{node} runs app version {:?} after the update",
                    now.app_version
                );
            }
            println!(
                "    {service}: replaced, Up as {NEW_VERSION}, ready {} after the replacement began",
                secs(ready)
            );
        }
        self.all_up(MEMBERS, Duration::from_secs(120)).await?;
        let took = t0.elapsed();
        // let the coordinator finish what the last join started (a rebalance, once the
        // versions agree again) before counting
        tokio::time::sleep(Duration::from_secs(15)).await;
        let homes = moves.stop().await?;
        let pause = pauses.stop().await?;
        self.figure("update: both trade-processors replaced in", secs(took));
        self.figure("update: moves per shard", moves_summary(&homes)?);
        self.figure(
            "update: longest pause any book saw",
            format!("{} ({})", secs(pause.length), pause.ticker),
        );
        self.invariants("the rolling update").await
    }

    async fn scale(&mut self) -> Result<()> {
        println!("==> scale: traders 2 -> 4 -> 2");
        let t0 = Instant::now();
        self.project
            .compose(&["up", "-d", "--no-recreate", "--scale", "traders=4"])
            .await?;
        let members = self.all_up(MEMBERS + 2, Duration::from_secs(120)).await?;
        self.figure(
            "scale: 4 traders Up after `--scale traders=4`",
            secs(t0.elapsed()),
        );
        let named: Vec<String> = NAMED
            .iter()
            .map(|s| {
                address(
                    s,
                    if s.starts_with("lighthouse") {
                        4053
                    } else {
                        5055
                    },
                )
            })
            .collect();
        let traders_before: Vec<String> = members
            .into_iter()
            .map(|m| m.node)
            .filter(|n| !named.contains(n))
            .collect();
        // Scaling down stops the highest-numbered replicas with SIGTERM; they must leave
        // (Leaving/Exiting, then removed), never be downed.
        let t1 = Instant::now();
        let watcher = {
            let lh = self.project.container("lighthouse-0").await?;
            let addr: SocketAddr = format!("{}:8558", self.project.ip(&lh).await?).parse()?;
            let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
                loop {
                    if let Ok((200, body)) = web_get(addr, "/cluster/members").await {
                        let state: Value = serde_json::from_str(&body).unwrap_or_default();
                        for m in state["members"].as_array().into_iter().flatten() {
                            let node = m["node"].as_str().unwrap_or_default().to_owned();
                            let status = m["status"].as_str().unwrap_or_default().to_owned();
                            let s = seen.entry(node).or_default();
                            if s.last() != Some(&status) {
                                s.push(status);
                            }
                        }
                    }
                    if stop_rx.try_recv().is_ok() {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            (stop_tx, task)
        };
        self.project
            .compose(&["up", "-d", "--no-recreate", "--scale", "traders=2"])
            .await?;
        let after = self.all_up(MEMBERS, Duration::from_secs(120)).await?;
        self.figure(
            "scale: back to 2 traders after `--scale traders=2`",
            secs(t1.elapsed()),
        );
        let _ = watcher.0.send(());
        let seen = watcher.1.await?;
        let remaining: Vec<String> = after.into_iter().map(|m| m.node).collect();
        for gone in traders_before.iter().filter(|n| !remaining.contains(n)) {
            let statuses = seen.get(gone).cloned().unwrap_or_default();
            if statuses.iter().any(|s| s == "Down") {
                bail!("{gone} was downed instead of leaving: {statuses:?}");
            }
            println!("    {gone} left gracefully: {}", statuses.join(" -> "));
        }
        self.invariants("scaling").await
    }

    async fn outage(&mut self) -> Result<()> {
        println!("==> outage: MongoDB stopped for 10 s under load");
        let before_uids: BTreeMap<String, u64> = self
            .members()
            .await?
            .into_iter()
            .map(|m| (m.node, m.uid))
            .collect();
        let mut restarts = Vec::new();
        for s in [
            "trade-processor-0",
            "trade-processor-1",
            "pricing-0",
            "pricing-1",
        ] {
            let id = self.project.container(s).await?;
            restarts.push((s, id.clone(), self.project.state(&id).await?.2));
        }
        let since = docker(&["info", "--format", "{{.SystemTime}}"]).await?;
        let mongo = self.project.container("mongodb").await?;
        self.stores = None;
        docker(&["stop", "--time", "10", &mongo]).await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        docker(&["start", &mongo]).await?;
        let t0 = Instant::now();
        // Books refused work with errors meanwhile.
        let mut refusals = 0;
        for (s, id, _) in &restarts {
            if s.starts_with("trade-processor") {
                let out = tokio::process::Command::new("docker")
                    .args(["logs", "--since", since.trim(), id])
                    .output()
                    .await?;
                let text = String::from_utf8_lossy(&out.stderr).into_owned()
                    + &String::from_utf8_lossy(&out.stdout);
                refusals += text
                    .lines()
                    .filter(|l| {
                        l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\"")
                    })
                    .count();
            }
        }
        if refusals == 0 {
            bail!("no trade-processor logged an error or warning while the store was down");
        }
        let before = self.wait_for_store().await?;
        self.every_book_moves(Progress::Trades, &before, Duration::from_secs(120))
            .await?;
        self.figure(
            "outage: every book trading again after the store came back",
            secs(t0.elapsed()),
        );
        for (s, id, n) in &restarts {
            let (running, _, now) = self.project.state(id).await?;
            if !running || now != *n {
                bail!("{s} crashed during the store outage (restarts {n} -> {now})");
            }
        }
        let after: BTreeMap<String, u64> = self
            .members()
            .await?
            .into_iter()
            .map(|m| (m.node, m.uid))
            .collect();
        if before_uids != after {
            bail!("the store outage changed the membership: {before_uids:?} -> {after:?}");
        }
        println!(
            "    {refusals} warnings/errors logged by the trade-processors; no restart, same members"
        );
        self.invariants("the store outage").await
    }

    /// Reconnects to the store after it restarted (its address may change) and returns each
    /// book's last trade id then.
    async fn wait_for_store(&mut self) -> Result<BTreeMap<Ticker, u64>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.stores = None;
            match self.last_trades().await {
                Ok(t) => return Ok(t),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

async fn web_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let connect = tokio::net::TcpStream::connect(addr);
    tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .context("connect timeout")??;
    Ok(
        tokio::time::timeout(Duration::from_secs(5), web::try_get(addr, path))
            .await
            .context("request timeout")??,
    )
}

async fn run(suite: &mut Suite<'_>, cli: &Cli, started: Instant) -> Result<()> {
    suite.formation(started).await?;
    if cli.no_faults {
        return Ok(());
    }
    if let Some(minutes) = cli.soak {
        let seed = cli.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        return suite.soak(minutes, seed).await;
    }
    let wanted = |f: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == f);
    if wanted("crash") {
        suite.crash().await?;
    }
    if wanted("partition") {
        suite.partition().await?;
    }
    if wanted("rolling") {
        suite.rolling().await?;
    }
    if wanted("update") {
        suite.update().await?;
    }
    if wanted("scale") {
        suite.scale().await?;
    }
    if wanted("outage") {
        suite.outage().await?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let repo = std::fs::canonicalize(&cli.repo).expect("the repository exists");
    if cli.kubernetes {
        return if k8s::run(&cli, &repo).await {
            println!("==> Kubernetes suite passed");
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        };
    }
    let name = format!("akka-cqrs-test-{}", std::process::id());
    let work = repo.join("target/container-tests").join(&name);
    let blotters = work.join("blotters");
    std::fs::create_dir_all(&blotters).expect("create the blotter folder");
    // The traders run as uid 10001 in their containers.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&blotters, std::fs::Permissions::from_mode(0o777)).unwrap();
    let dashboard_port = free_port();
    let env = vec![
        (
            "TRADERS_ORDERS_PER_SECOND".into(),
            cli.orders_per_second.to_string(),
        ),
        ("BLOTTER_HOST_DIR".into(), blotters.display().to_string()),
        ("DASHBOARD_PORT".into(), dashboard_port.to_string()),
        ("MANAGEMENT_PORT".into(), free_port().to_string()),
    ];
    let project = Project::new(name.clone(), repo, env);
    let teardown = Teardown {
        project: &project,
        keep: cli.keep,
    };
    let mut suite = Suite {
        project: &project,
        blotters: blotters.clone(),
        dashboard: SocketAddr::from(([127, 0, 0, 1], dashboard_port)),
        figures: Vec::new(),
        stores: None,
    };
    println!(
        "==> docker-compose up: project {name}, {} orders/s per traders container",
        cli.orders_per_second
    );
    let started = Instant::now();
    let outcome = match suite.project.compose(&["up", "-d"]).await {
        Ok(_) => run(&mut suite, &cli, started).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        eprintln!("FAILED: {e:#}");
        for s in [
            "trade-processor-0",
            "trade-processor-1",
            "pricing-0",
            "mongodb",
        ] {
            if let Ok(id) = suite.project.container(s).await {
                let log = suite.project.logs(&id).await.unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                eprintln!("--- last lines of {s}:");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
    let took = started.elapsed();
    suite.stores = None;
    drop(teardown);
    if !cli.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    println!("==> figures ({} in all)", secs(took));
    for (k, v) in &suite.figures {
        println!("    {k}: {v}");
    }
    if outcome.is_ok() {
        println!("==> container suite passed");
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
