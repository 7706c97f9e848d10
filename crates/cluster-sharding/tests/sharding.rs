//! Sharding across real nodes over TCP (in one process, fast timings, OS-chosen ports):
//! allocation and rebalance, a graceful leave under load with exactly-once application,
//! and the re-allocation of a killed node's shards with recovery from the journal.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cluster_sharding::remember::{RememberEvent, shard_id as remember_shard_id};
use cluster_sharding::{RememberStore, ShardRegion, shard_of};
use common::*;
use persistence::InMemoryStore;
use runtime::Node;

/// Entity ids `prefix-i`, enough to cover every one of `shards` shards.
fn ids_covering(prefix: &str, shards: u32, per_shard: usize) -> Vec<String> {
    let mut per: BTreeMap<u32, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut i = 0;
    while per.len() < shards as usize || per.values().any(|c| *c < per_shard) {
        let id = format!("{prefix}-{i}");
        let c = per.entry(shard_of(&id, shards)).or_default();
        if *c < per_shard {
            *c += 1;
            out.push(id);
        }
        i += 1;
    }
    out
}

async fn shard_counts(r: &ShardRegion<Cmd>) -> Vec<usize> {
    let s = r.cluster_stats().await.unwrap();
    let mut v: Vec<usize> = s.regions.iter().map(|r| r.shards).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_shards_split_evenly_and_rebalance_when_a_node_joins() {
    let journal = Arc::new(InMemoryStore::new());
    let rebalance = Duration::from_millis(2000);
    let a = start_node(&[], &[ROLE]).await;
    let seeds = [addr(&a)];
    let b = start_node(&seeds, &[ROLE]).await;
    wait_up(&[&a, &b], 2).await;
    let mut regions = Vec::new();
    for n in [&a, &b] {
        let f = CounterFactory {
            journal: journal.clone(),
            remoting: n.remoting().clone(),
            shared: Arc::default(),
        };
        regions.push(
            ShardRegion::start_on_node(settings("rebalance", rebalance), f, n)
                .await
                .unwrap(),
        );
    }
    let (reply_to, mut acks) = ack_sink(&a, "acks").await;
    let cmds: Vec<(String, u64)> = ids_covering("e", 30, 2)
        .into_iter()
        .enumerate()
        .map(|(i, e)| (e, i as u64))
        .collect();
    let rep = send_until_acked(
        &regions[0],
        &reply_to,
        &mut acks,
        &cmds,
        Pace::new(100, 500, 30),
        |_| {},
    )
    .await;
    assert_eq!(rep.acked, cmds.len());
    let counts = shard_counts(&regions[1]).await;
    assert_eq!(counts.iter().sum::<usize>(), 30, "{counts:?}");
    assert!(
        counts.iter().all(|c| (14..=16).contains(c)),
        "15/15 +-1: {counts:?}"
    );

    let c = start_node(&seeds, &[ROLE]).await;
    let f = CounterFactory {
        journal: journal.clone(),
        remoting: c.remoting().clone(),
        shared: Arc::default(),
    };
    regions.push(
        ShardRegion::start_on_node(settings("rebalance", rebalance), f, &c)
            .await
            .unwrap(),
    );
    wait_up(&[&a, &b, &c], 3).await;
    let joined = Instant::now();
    let ok = eventually(Duration::from_secs(10), || async {
        shard_counts(&regions[2]).await == vec![10, 10, 10]
    })
    .await;
    let took = joined.elapsed();
    assert!(ok, "no 10/10/10: {:?}", shard_counts(&regions[2]).await);
    assert!(
        took <= rebalance * 2,
        "rebalanced in {took:?}, more than two intervals"
    );
    // Every entity is still reachable after the moves, with its state.
    let more: Vec<(String, u64)> = cmds.iter().map(|(e, i)| (e.clone(), i + 10_000)).collect();
    let rep = send_until_acked(
        &regions[2],
        &reply_to,
        &mut acks,
        &more,
        Pace::new(100, 500, 30),
        |_| {},
    )
    .await;
    assert!(rep.counts.values().all(|c| *c == 2), "{:?}", rep.counts);
    for n in [&a, &b, &c] {
        n.halt().await;
    }
}

/// Three nodes with the role and a client node without it (proxy region, ack sink).
struct Fixture {
    role_nodes: Vec<Node>,
    regions: Vec<ShardRegion<Cmd>>,
    shared: Vec<Arc<common::Shared>>,
    client: Node,
    proxy: ShardRegion<Cmd>,
    journal: Arc<InMemoryStore>,
}

impl Fixture {
    async fn start(type_name: &str) -> Self {
        let journal = Arc::new(InMemoryStore::new());
        let a = start_node(&[], &[ROLE]).await;
        let seeds = [addr(&a)];
        let b = start_node(&seeds, &[ROLE]).await;
        let c = start_node(&seeds, &[ROLE]).await;
        wait_up(&[&a, &b, &c], 3).await;
        let client = start_node(&seeds, &[]).await;
        wait_up(&[&a, &b, &c, &client], 4).await;
        let role_nodes = vec![a, b, c];
        let mut regions = Vec::new();
        let mut shared = Vec::new();
        for n in &role_nodes {
            let sh = Arc::new(common::Shared::default());
            shared.push(sh.clone());
            let f = CounterFactory {
                journal: journal.clone(),
                remoting: n.remoting().clone(),
                shared: sh,
            };
            regions.push(
                ShardRegion::start_on_node(settings(type_name, Duration::from_secs(1)), f, n)
                    .await
                    .unwrap(),
            );
        }
        let proxy =
            ShardRegion::start_proxy_on_node(settings(type_name, Duration::from_secs(1)), &client)
                .await
                .unwrap();
        Self {
            role_nodes,
            regions,
            shared,
            client,
            proxy,
            journal,
        }
    }

    /// Index of the role node that hosts the coordinator (the oldest Up member).
    fn coordinator_host(&self) -> usize {
        let view = self.client.cluster().state();
        let oldest = view
            .members
            .iter()
            .filter(|m| m.roles.contains(ROLE))
            .min_by_key(|m| (m.up_number, m.node.clone()))
            .unwrap()
            .node
            .clone();
        self.role_nodes
            .iter()
            .position(|n| addr(n).to_string() == oldest)
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_leave_under_load_applies_every_command_exactly_once() {
    let fx = Fixture::start("leave").await;
    // The node that leaves hosts the coordinator too: its shards and the coordinator move.
    let victim = fx.coordinator_host();
    let (reply_to, mut acks) = ack_sink(&fx.client, "acks").await;
    let entities: Vec<String> = (0..100).map(|i| format!("acct-{i}")).collect();
    // Every entity started (so the leaving node hosts live entities) before the leave.
    let warm: Vec<(String, u64)> = entities
        .iter()
        .enumerate()
        .map(|(i, e)| (e.clone(), 1_000_000 + i as u64))
        .collect();
    send_until_acked(
        &fx.proxy,
        &reply_to,
        &mut acks,
        &warm,
        Pace::new(100, 300, 30),
        |_| {},
    )
    .await;
    let before = fx.regions[victim].state().await.unwrap();
    assert!(before.entity_count() > 0, "the leaving node hosts entities");

    let cmds: Vec<(String, u64)> = (0..10_000u64)
        .map(|i| (entities[(i % 100) as usize].clone(), i))
        .collect();
    let leaving = &fx.role_nodes[victim];
    let mut left = false;
    let rep = send_until_acked(
        &fx.proxy,
        &reply_to,
        &mut acks,
        &cmds,
        Pace::new(400, 300, 120),
        |n| {
            if n >= 3_000 && !left {
                left = true;
                leaving.leave();
            }
        },
    )
    .await;
    assert!(left);
    assert_eq!(rep.acked, 10_000);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), leaving.terminated())
            .await
            .unwrap(),
        0
    );
    let mut all = BTreeSet::new();
    for e in &entities {
        let ids = journal_ids(&fx.journal, &format!("counter-{e}")).await;
        let distinct: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "{e}: a command applied twice");
        let expected: BTreeSet<u64> = cmds
            .iter()
            .filter(|(x, _)| x == e)
            .map(|(_, i)| *i)
            .chain(warm.iter().filter(|(x, _)| x == e).map(|(_, i)| *i))
            .collect();
        let missing: Vec<&u64> = expected.difference(&distinct).collect();
        assert_eq!(
            ids.len(),
            101,
            "{e}: {} commands; missing {missing:?}; rejected writes {}",
            ids.len(),
            fx.shared
                .iter()
                .map(|sh| sh.rejected_writes.load(Ordering::Relaxed))
                .sum::<u64>()
        );
        assert_eq!(rep.counts[&format!("counter-{e}")], 101);
        all.extend(distinct.into_iter().filter(|i| *i < 1_000_000));
    }
    assert_eq!(all, (0..10_000).collect::<BTreeSet<u64>>(), "none lost");
    for sh in &fx.shared {
        assert_eq!(
            sh.rejected_writes.load(Ordering::Relaxed),
            0,
            "two writers of one entity"
        );
    }
    let stats = fx.proxy.cluster_stats().await.unwrap();
    assert_eq!(stats.regions.len(), 2, "{stats:?}");
    assert!(
        !stats
            .regions
            .iter()
            .any(|r| r.address == addr(leaving).to_string())
    );
    assert_eq!(stats.regions.iter().map(|r| r.entities).sum::<usize>(), 100);
    let proxy_state = fx.proxy.state().await.unwrap();
    assert!(
        proxy_state.handoffs_seen >= before.shards.len() as u64,
        "{proxy_state:?}"
    );
    println!(
        "graceful leave of the coordinator's node: {} shards / {} entities handed off; {} re-sends; longest ack {:?}; longest pause at the sender's region {} ms",
        before.shards.len(),
        before.entity_count(),
        rep.retries,
        rep.max_latency,
        proxy_state.max_handoff_pause_ms
    );
    for (i, n) in fx.role_nodes.iter().enumerate() {
        if i != victim {
            n.halt().await;
        }
    }
    fx.client.halt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_nodes_shards_move_and_their_entities_recover_from_the_journal() {
    let fx = Fixture::start("kill").await;
    // The killed node hosts the coordinator too: a new one must rebuild the allocation.
    let victim = fx.coordinator_host();
    let (reply_to, mut acks) = ack_sink(&fx.client, "acks").await;
    let entities: Vec<String> = (0..100).map(|i| format!("k-{i}")).collect();
    let cmds: Vec<(String, u64)> = (0..1_000u64)
        .map(|i| (entities[(i % 100) as usize].clone(), i))
        .collect();
    let rep = send_until_acked(
        &fx.proxy,
        &reply_to,
        &mut acks,
        &cmds,
        Pace::new(200, 500, 30),
        |_| {},
    )
    .await;
    assert_eq!(rep.acked, 1_000);
    let on_victim = fx.regions[victim].state().await.unwrap();
    let victim_entities: Vec<String> = on_victim
        .shards
        .iter()
        .flat_map(|s| s.entities.clone())
        .collect();
    assert!(!victim_entities.is_empty(), "the victim hosts entities");

    let dead = &fx.role_nodes[victim];
    dead.halt().await;
    fx.regions[victim].stop();
    let gone = addr(dead).to_string();
    for (i, n) in fx
        .role_nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
    {
        assert!(
            n.cluster()
                .wait_until(
                    |s| !s.members.iter().any(|m| m.node == gone),
                    Duration::from_secs(30)
                )
                .await,
            "node {i}: the killed node was not downed and removed"
        );
    }
    let more: Vec<(String, u64)> = (1_000..2_000u64)
        .map(|i| (entities[(i % 100) as usize].clone(), i))
        .collect();
    let rep = send_until_acked(
        &fx.proxy,
        &reply_to,
        &mut acks,
        &more,
        Pace::new(200, 500, 60),
        |_| {},
    )
    .await;
    assert_eq!(rep.acked, 1_000);
    for e in &entities {
        assert_eq!(
            rep.counts[&format!("counter-{e}")],
            20,
            "{e} recovered its 10 commands and applied 10 more"
        );
    }
    let stats = fx.proxy.cluster_stats().await.unwrap();
    assert_eq!(stats.regions.len(), 2, "{stats:?}");
    assert!(stats.failed.is_empty());
    assert_eq!(
        stats.regions.iter().map(|r| r.entities).sum::<usize>(),
        100,
        "{stats:?}"
    );
    for e in &victim_entities {
        let ids = journal_ids(&fx.journal, &format!("counter-{e}")).await;
        let distinct: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!((ids.len(), distinct.len()), (20, 20));
    }
    for sh in &fx.shared {
        assert_eq!(
            sh.rejected_writes.load(Ordering::Relaxed),
            0,
            "two writers of one entity"
        );
    }
    for (i, n) in fx.role_nodes.iter().enumerate() {
        if i != victim {
            n.halt().await;
        }
    }
    fx.client.halt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn management_route_serves_cluster_shard_stats() {
    let journal = Arc::new(InMemoryStore::new());
    // The registry exists before the node, so its route is served from the start; the
    // regions are added once they run.
    let registry = cluster_sharding::ShardingRegistry::new();
    let mut cfg = runtime::NodeConfig::local(Vec::new(), &[ROLE], TICK);
    cfg.management.as_mut().expect("management on").routes = Some(registry.router());
    let a = Node::start(cfg).await.unwrap();
    let b = start_node(&[addr(&a)], &[ROLE]).await;
    wait_up(&[&a, &b], 2).await;
    let mut regions = Vec::new();
    for n in [&a, &b] {
        let f = CounterFactory {
            journal: journal.clone(),
            remoting: n.remoting().clone(),
            shared: Arc::default(),
        };
        regions.push(
            ShardRegion::start_on_node(settings("http", Duration::from_secs(1)), f, n)
                .await
                .unwrap(),
        );
    }
    registry.insert("http", regions[0].clone());
    let (reply_to, mut acks) = ack_sink(&a, "acks").await;
    bump_each(&regions[0], &reply_to, &mut acks, "h", 40).await;

    let base = format!("http://{}/cluster/shards", a.management_addr().unwrap());
    let (status, body) = runtime::http_client::request(
        "GET",
        &format!("{base}/http"),
        None,
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let stats: cluster_sharding::ClusterShardStats = serde_json::from_str(&body).unwrap();
    assert_eq!(stats.type_name, "http");
    assert_eq!(stats.regions.len(), 2);
    assert_eq!(stats.regions.iter().map(|r| r.entities).sum::<usize>(), 40);
    assert!(stats.regions.iter().all(|r| r.shards > 0));
    let lines = cluster_sharding::format_stats_lines(&stats);
    assert_eq!(lines.lines().count(), 2);
    assert!(lines.contains(&addr(&b).to_string()));
    let (status, _) = runtime::http_client::request(
        "GET",
        &format!("{base}/nope"),
        None,
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    for n in [&a, &b] {
        n.halt().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_entities_passivate_and_remembered_entities_restart_after_a_hand_off() {
    let journal = Arc::new(InMemoryStore::new());
    let a = start_node(&[], &[ROLE]).await;
    let seeds = [addr(&a)];
    let b = start_node(&seeds, &[ROLE]).await;
    wait_up(&[&a, &b], 2).await;
    let mut idle = settings("idle", Duration::from_secs(1));
    idle.passivate_idle = Some(Duration::from_millis(300));
    let mut remember = settings("remember", Duration::from_millis(500));
    remember.remember_entities = true;
    remember.passivate_idle = None;
    let mut idle_regions = Vec::new();
    let mut kept_regions = Vec::new();
    for n in [&a, &b] {
        let f = CounterFactory {
            journal: journal.clone(),
            remoting: n.remoting().clone(),
            shared: Arc::default(),
        };
        idle_regions.push(
            ShardRegion::start_on_node(idle.clone(), f.clone(), n)
                .await
                .unwrap(),
        );
        kept_regions.push(
            ShardRegion::start_on_node(remember.clone(), f, n)
                .await
                .unwrap(),
        );
    }
    let (reply_to, mut acks) = ack_sink(&a, "acks").await;

    // Passivation: entities stop when idle and come back with their state.
    let cmds: Vec<(String, u64)> = (0..10u64).map(|i| (format!("i-{i}"), i)).collect();
    send_until_acked(
        &idle_regions[0],
        &reply_to,
        &mut acks,
        &cmds,
        Pace::new(10, 500, 30),
        |_| {},
    )
    .await;
    let running = idle_regions[0].cluster_stats().await.unwrap();
    assert_eq!(
        running.regions.iter().map(|r| r.entities).sum::<usize>(),
        10
    );
    let passivated = eventually(Duration::from_secs(5), || async {
        idle_regions[0]
            .cluster_stats()
            .await
            .unwrap()
            .regions
            .iter()
            .all(|r| r.entities == 0)
    })
    .await;
    assert!(passivated, "idle entities were not passivated");
    let again: Vec<(String, u64)> = (0..10u64).map(|i| (format!("i-{i}"), 100 + i)).collect();
    let rep = send_until_acked(
        &idle_regions[0],
        &reply_to,
        &mut acks,
        &again,
        Pace::new(10, 500, 30),
        |_| {},
    )
    .await;
    assert!(
        rep.counts.values().all(|c| *c == 2),
        "state recovered after passivation: {:?}",
        rep.counts
    );

    // Remember-entities: a third node joins, shards move to it, and their entities
    // start there without any message.
    let cmds: Vec<(String, u64)> = (0..60u64).map(|i| (format!("r-{i}"), 1_000 + i)).collect();
    send_until_acked(
        &kept_regions[0],
        &reply_to,
        &mut acks,
        &cmds,
        Pace::new(60, 500, 30),
        |_| {},
    )
    .await;
    let c = start_node(&seeds, &[ROLE]).await;
    let f = CounterFactory {
        journal: journal.clone(),
        remoting: c.remoting().clone(),
        shared: Arc::default(),
    };
    let on_c = ShardRegion::start_on_node(remember.clone(), f, &c)
        .await
        .unwrap();
    wait_up(&[&a, &b, &c], 3).await;
    let moved = eventually(Duration::from_secs(10), || async {
        let st = on_c.state().await.unwrap();
        !st.shards.is_empty() && st.shards.iter().all(|s| !s.entities.is_empty())
    })
    .await;
    assert!(
        moved,
        "no remembered entities restarted on the new node: {:?}",
        on_c.state().await.unwrap()
    );
    // The rebalance goes on in rounds after the first shard moved: a shard in hand-off runs
    // its entities nowhere for a moment, so count once the moves have settled.
    let total = || async {
        kept_regions[0]
            .cluster_stats()
            .await
            .unwrap()
            .regions
            .iter()
            .map(|r| r.entities)
            .sum::<usize>()
    };
    let all_run = eventually(Duration::from_secs(10), || async { total().await == 60 }).await;
    assert!(
        all_run,
        "every remembered entity runs somewhere: {}",
        total().await
    );
    for n in [&a, &b, &c] {
        n.halt().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remembered_entities_run_again_after_every_node_stopped() {
    // One journal outlives both clusters: it holds the entities' events and the
    // remember-entities store.
    let journal = Arc::new(InMemoryStore::new());
    let mut remember = settings("durable", Duration::from_secs(1));
    remember.remember_entities = true;
    remember.passivate_idle = None;
    remember.remember_entities_store = Some(RememberStore::new(journal.clone()));
    let start_cluster = || async {
        let a = start_node(&[], &[ROLE]).await;
        let b = start_node(&[addr(&a)], &[ROLE]).await;
        wait_up(&[&a, &b], 2).await;
        let shared: Arc<Shared> = Arc::default();
        let mut regions = Vec::new();
        for n in [&a, &b] {
            let f = CounterFactory {
                journal: journal.clone(),
                remoting: n.remoting().clone(),
                shared: shared.clone(),
            };
            regions.push(
                ShardRegion::start_on_node(remember.clone(), f, n)
                    .await
                    .unwrap(),
            );
        }
        (a, b, regions, shared)
    };

    let (a, b, regions, _) = start_cluster().await;
    let (reply_to, mut acks) = ack_sink(&a, "acks").await;
    bump_each(&regions[0], &reply_to, &mut acks, "d", 40).await;
    // The regions report started entities on their tick, the coordinator stores them on
    // its own: wait until all 40 are in the journal.
    let stored = eventually(Duration::from_secs(10), || async {
        let mut ids = BTreeSet::new();
        for shard in 0..remember.number_of_shards {
            ids.extend(remembered_ids(&journal, "durable", shard).await);
        }
        ids.len() == 40
    })
    .await;
    assert!(stored, "the 40 started entities were not all stored");
    for n in [&a, &b] {
        n.halt().await;
    }
    drop(regions);

    // A new cluster on the same journal: nobody sends a message, and every remembered
    // entity runs again.
    let (c, d, regions, shared) = start_cluster().await;
    let total = || async {
        regions[0]
            .cluster_stats()
            .await
            .map(|s| s.regions.iter().map(|r| r.entities).sum::<usize>())
            .unwrap_or(0)
    };
    let all_run = eventually(Duration::from_secs(20), || async { total().await == 40 }).await;
    assert!(
        all_run,
        "remembered entities running after the restart: {} of 40",
        total().await
    );
    assert_eq!(
        shared.bumps.load(Ordering::Relaxed),
        0,
        "no message was sent"
    );
    for n in [&c, &d] {
        n.halt().await;
    }
}

/// The entity ids the remember-entities store holds for one shard.
async fn remembered_ids(journal: &InMemoryStore, type_name: &str, shard: u32) -> Vec<String> {
    use persistence::Journal;
    let events = journal
        .replay_messages(&remember_shard_id(type_name, shard), 1, u64::MAX, u64::MAX)
        .await
        .unwrap_or_default();
    events
        .iter()
        .filter_map(|r| match r.decode::<RememberEvent>() {
            Ok(RememberEvent::EntitiesStarted { entities }) => Some(entities),
            _ => None,
        })
        .flatten()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_buffer_is_bounded_and_counts_what_it_drops() {
    // Nobody has the role: no coordinator, so every message waits in the buffer.
    let a = start_node(&[], &[]).await;
    wait_up(&[&a], 1).await;
    let mut s = settings("bounded", Duration::from_secs(1));
    s.buffer_size = 100;
    let proxy = ShardRegion::<Cmd>::start_proxy_on_node(s, &a)
        .await
        .unwrap();
    for i in 0..150 {
        proxy.tell(format!("x-{i}"), Cmd::Bump).unwrap();
    }
    let st = proxy.state().await.unwrap();
    assert_eq!(st.buffered, 100);
    assert_eq!(st.dropped, 50);
    assert_eq!(proxy.counters().dropped.load(Ordering::Relaxed), 50);
    a.halt().await;
}
