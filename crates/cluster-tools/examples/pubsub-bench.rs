//! Pub-sub throughput across nodes over real TCP on loopback.
//!
//! Starts `NODES` cluster nodes in this process (fast membership timings, ports from the
//! OS), subscribes `SUBS` counting actors per node to one topic on every node but the
//! first, publishes `MESSAGES` messages of about `SIZE` bytes from the first node (with
//! backpressure, `publish_wait`), and prints the publish rate and the delivery rate
//! (until every subscriber got every message), plus the frames that crossed the wire.
//!
//! ```text
//! cargo run --release -p cluster-tools --example pubsub-bench -- [MESSAGES] [SIZE] [NODES] [SUBS]
//! ```
//! Defaults: 200000 messages, 100 bytes, 3 nodes, 1 subscriber per node.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cluster_tools::{DistributedPubSub, PubSubSettings};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::cluster::{Cluster, ClusterConfig};
use runtime::discovery::Discovery;
use runtime::membership::MemberStatus;
use runtime::shutdown::CoordinatedShutdown;
use runtime::{Remoting, RemotingConfig};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Tick {
    seq: u64,
    ticker: String,
    pad: Vec<u8>,
}

struct Counter;

impl Actor for Counter {
    type Msg = Tick;
    type State = Arc<AtomicU64>;
    type Arguments = Arc<AtomicU64>;
    async fn pre_start(
        &self,
        _me: ActorRef<Tick>,
        c: Arc<AtomicU64>,
    ) -> Result<Arc<AtomicU64>, ActorProcessingErr> {
        Ok(c)
    }
    async fn handle(
        &self,
        _me: ActorRef<Tick>,
        _m: Tick,
        c: &mut Arc<AtomicU64>,
    ) -> Result<(), ActorProcessingErr> {
        c.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let (messages, size, nodes_n, subs) =
        (arg(1, 200_000), arg(2, 100), arg(3, 3).max(2), arg(4, 1));
    let tick = Duration::from_millis(200);
    let mut nodes = Vec::new();
    let mut seed = None;
    for _ in 0..nodes_n {
        let remoting = Remoting::start(RemotingConfig::default()).await.unwrap();
        let me = remoting.self_address().address.clone();
        let seed_addr = seed.get_or_insert(me).clone();
        let cfg = ClusterConfig {
            discovery: Discovery::Static(vec![seed_addr]),
            ..ClusterConfig::fast(tick)
        };
        let cluster = Cluster::start(
            remoting.clone(),
            cfg,
            CoordinatedShutdown::new(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        let pubsub = DistributedPubSub::start(&cluster, &remoting, PubSubSettings::default())
            .await
            .unwrap();
        nodes.push((remoting, cluster, pubsub));
    }
    for (_, c, _) in &nodes {
        let n = nodes_n as usize;
        assert!(
            c.wait_until(
                |s| s.members.len() == n && s.members.iter().all(|m| m.status == MemberStatus::Up),
                Duration::from_secs(30)
            )
            .await,
            "cluster did not form"
        );
    }
    let mut counters = Vec::new();
    for (_, _, ps) in &nodes[1..] {
        for _ in 0..subs {
            let c = Arc::new(AtomicU64::new(0));
            let (a, _) = Actor::spawn(None, Counter, c.clone()).await.unwrap();
            ps.subscribe("MSFT-price", a).await.unwrap();
            counters.push(c);
        }
    }
    let publisher = nodes[0].2.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while publisher.subscriber_nodes("MSFT-price").await.len() < nodes_n as usize - 1 {
        assert!(Instant::now() < deadline, "subscriptions did not spread");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let frames_before: u64 = nodes[0].0.peer_stats().iter().map(|p| p.frames_out).sum();
    let pad = vec![7u8; size.saturating_sub(24) as usize];
    let start = Instant::now();
    for seq in 0..messages {
        let m = Tick {
            seq,
            ticker: "MSFT".into(),
            pad: pad.clone(),
        };
        publisher
            .publish_wait("MSFT-price", &m, None)
            .await
            .unwrap();
    }
    let published = start.elapsed();
    let want = messages;
    while counters.iter().any(|c| c.load(Ordering::Relaxed) < want) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "deliveries stalled"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let delivered = start.elapsed();
    let frames: u64 = nodes[0]
        .0
        .peer_stats()
        .iter()
        .map(|p| p.frames_out)
        .sum::<u64>()
        - frames_before;
    let stats = publisher.stats();
    let deliveries = messages * counters.len() as u64;
    println!(
        "pubsub-bench: {messages} messages of ~{size} B from 1 node to {} nodes x {subs} subscriber(s)",
        nodes_n - 1
    );
    println!(
        "  publish:  {:>10.0} msg/s ({:.3} s)",
        messages as f64 / published.as_secs_f64(),
        published.as_secs_f64()
    );
    println!(
        "  delivered: {:>9.0} msg/s per subscriber, {:.0} deliveries/s in total ({:.3} s until the last)",
        messages as f64 / delivered.as_secs_f64(),
        deliveries as f64 / delivered.as_secs_f64(),
        delivered.as_secs_f64()
    );
    println!(
        "  pub-sub frames sent: {} (= messages x subscribed nodes: {}); TCP writes: {} ({:.1} messages per write)",
        stats.frames_sent,
        messages * (nodes_n - 1),
        frames,
        stats.frames_sent as f64 / frames.max(1) as f64
    );
    for (i, (_, _, ps)) in nodes.iter().enumerate().skip(1) {
        let s = ps.stats();
        println!(
            "  node {i}: frames received {}, delivered {}, dropped {}",
            s.frames_received, s.delivered, s.dropped
        );
    }
}
