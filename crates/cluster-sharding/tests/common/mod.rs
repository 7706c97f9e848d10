//! Shared by the sharding tests and the bench: in-process nodes on real TCP with fast
//! timings, a persistent counter entity on a shared journal, and a sender that retries
//! until each command is acknowledged.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cluster_sharding::{EntityContext, EntityFactory, EntityMsg, ShardRegion, ShardingSettings};
use persistence::{
    AtomicWrite, InMemoryStore, Journal, MAX_SEQUENCE_NR, Persistable, PersistentRepr,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::membership::MemberStatus;
use runtime::{Node, NodeAddress, NodeConfig, RemoteRef, Remoting, SendPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Gossip/heartbeat tick of the test nodes.
pub const TICK: Duration = Duration::from_millis(100);
/// The role that hosts the test entities.
pub const ROLE: &str = "shard";

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Starts a node joining through `seeds` (empty: it is the first seed).
pub async fn start_node(seeds: &[NodeAddress], roles: &[&str]) -> Node {
    init_tracing();
    Node::start(NodeConfig::local(seeds.to_vec(), roles, TICK))
        .await
        .expect("node starts")
}

/// Address of a node.
pub fn addr(n: &Node) -> NodeAddress {
    n.address().address.clone()
}

/// Waits until every node sees `n` members, all Up.
pub async fn wait_up(nodes: &[&Node], n: usize) {
    for node in nodes {
        assert!(
            node.cluster()
                .wait_until(
                    |s| s.members.len() == n
                        && s.members.iter().all(|m| m.status == MemberStatus::Up),
                    Duration::from_secs(20),
                )
                .await,
            "cluster of {n} did not form"
        );
    }
}

/// Test settings: fast retries, rebalance every `rebalance`.
pub fn settings(type_name: &str, rebalance: Duration) -> ShardingSettings {
    let mut s = ShardingSettings::new(type_name).with_role(ROLE);
    s.retry_interval = Duration::from_millis(100);
    s.rebalance_interval = rebalance;
    s.rebalance_max_per_round = 10;
    s.handoff_timeout = Duration::from_secs(10);
    s.stats_timeout = Duration::from_secs(2);
    s
}

/// A command to a counter entity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Cmd {
    /// Apply command `id` once; acknowledge to `reply_to`.
    Apply { id: u64, reply_to: RemoteRef<Ack> },
    /// Count a message (bench; no persistence, no reply).
    Bump,
}

/// Acknowledgement of `Apply`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ack {
    /// The command.
    pub id: u64,
    /// The entity.
    pub entity: String,
    /// Commands the entity applied so far (recovered ones included).
    pub count: u64,
}

/// The event of the counter entity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Applied {
    /// Command id.
    pub id: u64,
}

impl Persistable for Applied {
    const MANIFEST: &'static str = "test.applied";
}

/// Counters shared by all entities of a factory.
#[derive(Default)]
pub struct Shared {
    /// Writes the journal rejected (a second writer of the same id).
    pub rejected_writes: AtomicU64,
    /// Entity starts (recoveries).
    pub starts: AtomicU64,
    /// `Bump`s received.
    pub bumps: AtomicU64,
}

/// Builds counter entities persisting to `journal`.
#[derive(Clone)]
pub struct CounterFactory {
    pub journal: Arc<InMemoryStore>,
    pub remoting: Remoting,
    pub shared: Arc<Shared>,
}

/// The counter entity actor.
pub struct Counter;

/// Its state.
pub struct CounterState {
    pid: String,
    seq: u64,
    ids: HashSet<u64>,
    count: u64,
    f: CounterFactory,
}

impl Actor for Counter {
    type Msg = EntityMsg<Cmd>;
    type State = CounterState;
    type Arguments = (String, CounterFactory);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (pid, f): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        f.shared.starts.fetch_add(1, Ordering::Relaxed);
        let events = f
            .journal
            .replay_messages(&pid, 1, MAX_SEQUENCE_NR, u64::MAX)
            .await?;
        let mut st = CounterState {
            pid,
            seq: 0,
            ids: HashSet::new(),
            count: 0,
            f,
        };
        for e in events {
            let a: Applied = e.decode()?;
            st.seq = e.sequence_nr;
            st.ids.insert(a.id);
            st.count += 1;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg.message {
            Cmd::Bump => {
                st.f.shared.bumps.fetch_add(1, Ordering::Relaxed);
            }
            Cmd::Apply { id, reply_to } => {
                if !st.ids.contains(&id) {
                    let repr =
                        PersistentRepr::from_event(&st.pid, st.seq + 1, &Applied { id }, "w")?;
                    let res =
                        st.f.journal
                            .write_messages(vec![AtomicWrite::new(vec![repr])?])
                            .await?;
                    if let Some(Err(e)) = res.into_iter().next() {
                        st.f.shared.rejected_writes.fetch_add(1, Ordering::Relaxed);
                        return Err(e.into());
                    }
                    st.seq += 1;
                    st.ids.insert(id);
                    st.count += 1;
                }
                let ack = Ack {
                    id,
                    entity: st.pid.clone(),
                    count: st.count,
                };
                let _ =
                    st.f.remoting
                        .tell(&reply_to, &ack, None, SendPolicy::Wait)
                        .await;
            }
        }
        Ok(())
    }
}

impl EntityFactory for CounterFactory {
    type Message = Cmd;
    type Entity = Counter;

    fn create(&self, ctx: &EntityContext) -> (Counter, (String, CounterFactory)) {
        (
            Counter,
            (format!("counter-{}", ctx.entity_id), self.clone()),
        )
    }
}

/// Forwards acks from the transport into a channel.
pub struct AckSink;

impl Actor for AckSink {
    type Msg = Ack;
    type State = mpsc::UnboundedSender<Ack>;
    type Arguments = mpsc::UnboundedSender<Ack>;

    async fn pre_start(
        &self,
        _m: ActorRef<Ack>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _m: ActorRef<Ack>,
        msg: Ack,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(msg);
        Ok(())
    }
}

/// An ack receiver registered on `node` as `name`.
pub async fn ack_sink(node: &Node, name: &str) -> (RemoteRef<Ack>, mpsc::UnboundedReceiver<Ack>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (a, _) = Actor::spawn(None, AckSink, tx).await.unwrap();
    node.remoting().register(name, a);
    (RemoteRef::new(addr(node), name), rx)
}

/// Result of [`send_until_acked`].
#[derive(Debug, Default)]
pub struct SendReport {
    /// Commands acknowledged.
    pub acked: usize,
    /// Re-sends.
    pub retries: u64,
    /// Longest time from first send to acknowledgement.
    pub max_latency: Duration,
    /// Last acknowledged count per entity.
    pub counts: HashMap<String, u64>,
}

/// Pacing of [`send_until_acked`].
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Unacknowledged commands at most.
    pub window: usize,
    /// Re-send a command not acknowledged within this.
    pub retry_after: Duration,
    /// Fail the test when not all are acknowledged by then.
    pub deadline: Duration,
}

impl Pace {
    /// `window` in flight, re-send after `retry_ms`, give up after `deadline_s`.
    pub fn new(window: usize, retry_ms: u64, deadline_s: u64) -> Self {
        Self {
            window,
            retry_after: Duration::from_millis(retry_ms),
            deadline: Duration::from_secs(deadline_s),
        }
    }
}

/// Sends one command to each of the entities `{prefix}-0` .. `{prefix}-{n - 1}`, all in
/// flight at once, until every one is acknowledged.
pub async fn bump_each(
    region: &ShardRegion<Cmd>,
    reply_to: &RemoteRef<Ack>,
    acks: &mut mpsc::UnboundedReceiver<Ack>,
    prefix: &str,
    n: u64,
) -> SendReport {
    let commands: Vec<(String, u64)> = (0..n).map(|i| (format!("{prefix}-{i}"), i)).collect();
    let pace = Pace::new(commands.len(), 500, 30);
    send_until_acked(region, reply_to, acks, &commands, pace, |_| {}).await
}

/// Sends `commands` (entity, command id), at most `pace.window` unacknowledged at a
/// time, re-sending each one not acknowledged within `pace.retry_after`, until all are
/// acked. `progress` is called with the number acked so far after each ack.
pub async fn send_until_acked(
    region: &ShardRegion<Cmd>,
    reply_to: &RemoteRef<Ack>,
    acks: &mut mpsc::UnboundedReceiver<Ack>,
    commands: &[(String, u64)],
    pace: Pace,
    mut progress: impl FnMut(usize),
) -> SendReport {
    let Pace {
        window,
        retry_after,
        deadline,
    } = pace;
    let started = Instant::now();
    let by_id: HashMap<u64, &String> = commands.iter().map(|(e, i)| (*i, e)).collect();
    let mut next = 0;
    let mut outstanding: HashMap<u64, (Instant, Instant)> = HashMap::new();
    let mut done: BTreeSet<u64> = BTreeSet::new();
    let mut rep = SendReport::default();
    while done.len() < commands.len() {
        assert!(
            started.elapsed() < deadline,
            "not all commands acknowledged in time: {} of {}",
            done.len(),
            commands.len()
        );
        while outstanding.len() < window && next < commands.len() {
            let (e, id) = &commands[next];
            next += 1;
            let now = Instant::now();
            outstanding.insert(*id, (now, now));
            region
                .tell(
                    e.clone(),
                    Cmd::Apply {
                        id: *id,
                        reply_to: reply_to.clone(),
                    },
                )
                .unwrap();
        }
        match tokio::time::timeout(Duration::from_millis(20), acks.recv()).await {
            // A late duplicate ack of an earlier call's command (a re-send applied
            // twice is acknowledged twice) is not one of these commands.
            Ok(Some(a)) if !by_id.contains_key(&a.id) => {}
            Ok(Some(a)) => {
                if let Some((first, _)) = outstanding.remove(&a.id) {
                    rep.max_latency = rep.max_latency.max(first.elapsed());
                }
                if done.insert(a.id) {
                    rep.counts.insert(
                        a.entity.clone(),
                        rep.counts.get(&a.entity).copied().unwrap_or(0).max(a.count),
                    );
                    progress(done.len());
                }
            }
            Ok(None) => panic!("ack channel closed"),
            Err(_) => {}
        }
        let now = Instant::now();
        for (id, (_, last)) in outstanding.iter_mut() {
            if now.duration_since(*last) >= retry_after {
                *last = now;
                rep.retries += 1;
                region
                    .tell(
                        by_id[id].clone(),
                        Cmd::Apply {
                            id: *id,
                            reply_to: reply_to.clone(),
                        },
                    )
                    .unwrap();
            }
        }
    }
    rep.acked = done.len();
    rep
}

/// Replays entity `pid`'s journal: the command ids in order.
pub async fn journal_ids(journal: &InMemoryStore, pid: &str) -> Vec<u64> {
    journal
        .replay_messages(pid, 1, MAX_SEQUENCE_NR, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.decode::<Applied>().unwrap().id)
        .collect()
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
