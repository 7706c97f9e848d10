//! Measures sharding on in-process nodes over real TCP (loopback) and prints the figures:
//!
//! 1. remote: messages to sharded entities sent through a proxy region on a node
//!    without the role, to entities on another node (serialized once, batched frames);
//! 2. local: the same through the hosting node's own region (no serialization);
//! 3. hand-off pause: 3 nodes, 30 shards with 100 persistent entities each under a
//!    steady command load; one node leaves gracefully; the longest time any region
//!    buffered a shard (BeginHandOff to new home) and the longest command round trip.
//!
//! `cargo run --release -p cluster-sharding --example sharding-bench [-- MESSAGES]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cluster_sharding::{ShardRegion, shard_of};
use common::*;
use persistence::InMemoryStore;

/// CPU seconds this process used so far (user + system, from `/proc/self/stat`).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The 1-minute load average, to read the figures of a busy machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

async fn throughput(
    label: &str,
    region: &ShardRegion<Cmd>,
    shared: &Shared,
    entities: &[String],
    n: u64,
) {
    let base = shared.bumps.load(Ordering::Relaxed);
    // Warm-up: every entity started and every home known.
    for e in entities {
        region.tell(e.clone(), Cmd::Bump).unwrap();
    }
    let target = base + entities.len() as u64;
    while shared.bumps.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let base = target;
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        while sent - (shared.bumps.load(Ordering::Relaxed) - base) > 200_000 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        for _ in 0..10_000 {
            region
                .tell(
                    entities[(sent % entities.len() as u64) as usize].clone(),
                    Cmd::Bump,
                )
                .unwrap();
            sent += 1;
        }
    }
    while shared.bumps.load(Ordering::Relaxed) < base + n {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu0
        .zip(cpu_seconds())
        .map(|(a, b)| format!("{:.2} CPU-µs/msg over both nodes", (b - a) * 1e6 / n as f64))
        .unwrap_or_default();
    println!(
        "{label}: {n} messages to {} entities in {secs:.3} s = {:.0} msg/s ({cpu}; load average {})",
        entities.len(),
        n as f64 / secs,
        load_average()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let journal = Arc::new(InMemoryStore::new());

    // 1 and 2: one hosting node, one node without the role.
    let host = start_node(&[], &[ROLE]).await;
    let client = start_node(&[addr(&host)], &[]).await;
    wait_up(&[&host, &client], 2).await;
    let shared = Arc::new(Shared::default());
    let f = CounterFactory {
        journal: journal.clone(),
        remoting: host.remoting().clone(),
        shared: shared.clone(),
    };
    let mut s = settings("bench", Duration::from_secs(10));
    s.passivate_idle = None;
    let local = ShardRegion::start_on_node(s.clone(), f, &host)
        .await
        .unwrap();
    let proxy = ShardRegion::<Cmd>::start_proxy_on_node(s, &client)
        .await
        .unwrap();
    let entities: Vec<String> = (0..1000).map(|i| format!("b-{i}")).collect();
    throughput(
        "remote (proxy region on another node)",
        &proxy,
        &shared,
        &entities,
        n,
    )
    .await;
    throughput(
        "local (hosting node's region)",
        &local,
        &shared,
        &entities,
        n,
    )
    .await;
    println!(
        "  sent remote by the proxy: {}, dropped: {}",
        proxy.counters().sent_remote.load(Ordering::Relaxed),
        proxy.counters().dropped.load(Ordering::Relaxed)
    );
    client.halt().await;
    host.halt().await;

    // 3: hand-off pause on graceful leave, 100 persistent entities per shard.
    let a = start_node(&[], &[ROLE]).await;
    let seeds = [addr(&a)];
    let b = start_node(&seeds, &[ROLE]).await;
    let c = start_node(&seeds, &[ROLE]).await;
    wait_up(&[&a, &b, &c], 3).await;
    let mut regions = Vec::new();
    for node in [&a, &b, &c] {
        let f = CounterFactory {
            journal: journal.clone(),
            remoting: node.remoting().clone(),
            shared: Arc::default(),
        };
        regions.push(
            ShardRegion::start_on_node(settings("pause", Duration::from_secs(10)), f, node)
                .await
                .unwrap(),
        );
    }
    let mut per: BTreeMap<u32, usize> = BTreeMap::new();
    let mut ids = Vec::new();
    let mut i = 0;
    while ids.len() < 3000 {
        let id = format!("p-{i}");
        let c = per.entry(shard_of(&id, 30)).or_default();
        if *c < 100 {
            *c += 1;
            ids.push(id);
        }
        i += 1;
    }
    let (reply_to, mut acks) = ack_sink(&a, "acks").await;
    let warm: Vec<(String, u64)> = ids
        .iter()
        .enumerate()
        .map(|(i, e)| (e.clone(), i as u64))
        .collect();
    send_until_acked(
        &regions[0],
        &reply_to,
        &mut acks,
        &warm,
        Pace::new(500, 1000, 60),
        |_| {},
    )
    .await;
    let before = regions[1].state().await.unwrap();
    let coordinator_leaves = a.cluster().state().oldest == Some(addr(&b).to_string());
    let load: Vec<(String, u64)> = (0..30_000u64)
        .map(|k| (ids[(k % 3000) as usize].clone(), 10_000 + k))
        .collect();
    let mut left = None;
    let t = Instant::now();
    let rep = send_until_acked(
        &regions[0],
        &reply_to,
        &mut acks,
        &load,
        Pace::new(300, 1000, 120),
        |done| {
            if done >= 10_000 && left.is_none() {
                left = Some(Instant::now());
                b.leave();
            }
        },
    )
    .await;
    let load_secs = t.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(Duration::from_secs(20), b.terminated()).await;
    let left_at = left.expect("leave started");
    let mut pause = 0;
    for r in [&regions[0], &regions[2]] {
        let st = r.state().await.unwrap();
        pause = pause.max(st.max_handoff_pause_ms);
    }
    println!(
        "hand-off on graceful leave: {} shards with {} entities left the node{}; longest shard pause {} ms; longest command round trip {:?}; {} commands in {:.2} s, {} re-sent; leave started {:.2} s into the load",
        before.shards.len(),
        before.entity_count(),
        if coordinator_leaves {
            " (it hosted the coordinator)"
        } else {
            ""
        },
        pause,
        rep.max_latency,
        rep.acked,
        load_secs,
        rep.retries,
        left_at.duration_since(t).as_secs_f64(),
    );
    a.halt().await;
    c.halt().await;
}
