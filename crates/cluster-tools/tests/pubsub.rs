//! Distributed pub-sub across three nodes over real TCP: one frame per subscribed node
//! per publish (mediator and transport counters), none to nodes without subscribers,
//! local fan-out, trace context, unsubscribe, subscriber death and group sends.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_tools::pubsub::Delivery;
use cluster_tools::{DistributedPubSub, PubSubSettings, SubscriberId};
use common::{Node, cluster, eventually};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::NodeAddress;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

type Got = Arc<Mutex<Vec<(u64, Option<String>)>>>;

struct Sink;

impl Actor for Sink {
    type Msg = (u64, Option<String>);
    type State = Got;
    type Arguments = Got;
    async fn pre_start(&self, _me: ActorRef<Self::Msg>, a: Got) -> Result<Got, ActorProcessingErr> {
        Ok(a)
    }
    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        m: Self::Msg,
        s: &mut Got,
    ) -> Result<(), ActorProcessingErr> {
        s.lock().unwrap().push(m);
        Ok(())
    }
}

async fn mediator(n: &Node) -> DistributedPubSub {
    let (c, r) = (n.cluster.clone(), n.remoting.clone());
    n.run(async move {
        DistributedPubSub::start(
            &c,
            &r,
            PubSubSettings {
                gossip_interval: Duration::from_millis(100),
                ..PubSubSettings::default()
            },
        )
        .await
        .unwrap()
    })
    .await
}

/// Spawns a sink on `n` and subscribes it (to `group` when given), keeping the trace
/// context of each delivery.
async fn sink(
    n: &Node,
    ps: &DistributedPubSub,
    topic: &str,
    group: Option<&str>,
) -> (Got, ActorRef<(u64, Option<String>)>) {
    let got: Got = Arc::default();
    let g = got.clone();
    let (ps, topic, group) = (ps.clone(), topic.to_string(), group.map(str::to_string));
    let actor = n
        .run(async move {
            let (a, _) = Actor::spawn(None, Sink, g).await.unwrap();
            ps.subscribe_with(&topic, group.as_deref(), a.clone(), |d: &Delivery<'_>| {
                Ok((d.decode::<u64>()?, d.trace_context.map(str::to_string)))
            })
            .await
            .unwrap();
            a
        })
        .await;
    (got, actor)
}

fn count(g: &Got) -> usize {
    g.lock().unwrap().len()
}

async fn sees(ps: &DistributedPubSub, topic: &str, nodes: &[&Node]) {
    let mut want: Vec<NodeAddress> = nodes.iter().map(|n| n.address.clone()).collect();
    want.sort();
    eventually(
        Duration::from_secs(10),
        &format!("subscribers of {topic} at {want:?}"),
        || async { ps.subscriber_nodes(topic).await == want },
    )
    .await;
}

async fn publish(n: &Node, ps: &DistributedPubSub, topic: &str, range: std::ops::Range<u64>) {
    let (ps, topic) = (ps.clone(), topic.to_string());
    n.run(async move {
        for i in range {
            ps.publish_traced(&topic, &i, Some(TP)).unwrap();
        }
    })
    .await;
}

fn sent_to(from: &Node, to: &Node) -> u64 {
    from.remoting
        .peer_stats()
        .into_iter()
        .find(|p| p.address == to.address)
        .map_or(0, |p| p.sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_crosses_the_wire_once_per_subscribed_node_and_never_elsewhere() {
    common::init_tracing();
    let nodes = cluster(&[&[], &[], &[]]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (pa, pb, pc) = (mediator(a).await, mediator(b).await, mediator(c).await);
    let (local, _) = sink(a, &pa, "MSFT-price", None).await;
    let mut remote = Vec::new();
    for _ in 0..3 {
        remote.push(sink(b, &pb, "MSFT-price", None).await.0);
    }
    let (other, _) = sink(c, &pc, "MSFT-Match", None).await;
    sees(&pa, "MSFT-price", &[a, b]).await;
    sees(&pa, "MSFT-Match", &[c]).await;

    const N: u64 = 1000;
    let (to_b, to_c) = (sent_to(a, b), sent_to(a, c));
    publish(a, &pa, "MSFT-price", 0..N).await;
    // the publishes are queued now: what a sends to c later cannot be one of them
    let to_c_after = sent_to(a, c);
    eventually(
        Duration::from_secs(10),
        "every subscriber got every message",
        || async { count(&local) == N as usize && remote.iter().all(|g| count(g) == N as usize) },
    )
    .await;

    // one frame per publish to the subscribed node, fanned out there to 3 subscribers
    assert_eq!(pa.stats().frames_sent, N);
    assert_eq!(pb.stats().frames_received, N);
    assert_eq!(pb.stats().delivered, 3 * N);
    // nothing to the node without subscribers of the topic
    assert_eq!(pc.stats().frames_received, 0);
    assert_eq!(count(&other), 0);
    // the transport agrees: the messages to b include the N publishes, those to c are
    // only membership and pub-sub control traffic
    assert!(sent_to(a, b) - to_b >= N);
    assert!(
        to_c_after - to_c < N / 10,
        "{} messages to c",
        to_c_after - to_c
    );
    // order and trace context survive
    for g in remote.iter().chain([&local]) {
        let got = g.lock().unwrap();
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, (n, t))| *n == i as u64 && t.as_deref() == Some(TP))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_and_subscriber_death_stop_deliveries() {
    common::init_tracing();
    let nodes = cluster(&[&[], &[], &[]]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (pa, pb, pc) = (mediator(a).await, mediator(b).await, mediator(c).await);
    let (on_b, actor_b) = sink(b, &pb, "T", None).await;
    let (on_c, actor_c) = sink(c, &pc, "T", None).await;
    sees(&pa, "T", &[b, c]).await;
    publish(a, &pa, "T", 0..10).await;
    eventually(Duration::from_secs(5), "both got 10", || async {
        count(&on_b) == 10 && count(&on_c) == 10
    })
    .await;

    // unsubscribe on b: a stops sending there
    pb.unsubscribe("T", None, SubscriberId::Actor(actor_b.get_id()))
        .await
        .unwrap();
    sees(&pa, "T", &[c]).await;
    publish(a, &pa, "T", 10..20).await;
    eventually(Duration::from_secs(5), "c got 20", || async {
        count(&on_c) == 20
    })
    .await;
    assert_eq!(count(&on_b), 10);
    assert_eq!(pb.stats().frames_received, 10);

    // the subscriber on c stops: it is removed and c gets nothing more
    actor_c.stop(None);
    sees(&pa, "T", &[]).await;
    publish(a, &pa, "T", 20..30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pc.stats().frames_received, 20);
    assert_eq!(pa.stats().frames_sent, 30);
    assert_eq!(count(&on_c), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_group_reaches_exactly_one_member() {
    common::init_tracing();
    let nodes = cluster(&[&[], &[], &[]]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (pa, pb, pc) = (mediator(a).await, mediator(b).await, mediator(c).await);
    let members = [
        sink(b, &pb, "orders", Some("g")).await.0,
        sink(b, &pb, "orders", Some("g")).await.0,
        sink(c, &pc, "orders", Some("g")).await.0,
    ];
    let (plain, _) = sink(b, &pb, "orders", None).await;
    // c has only the group subscriber, so a knows the group on both nodes
    sees(&pa, "orders", &[b, c]).await;
    let (p, total) = (pa.clone(), 60u64);
    a.run(async move {
        for i in 0..total {
            assert!(p.send_to_group("orders", "g", &i, Some(TP)).unwrap());
        }
    })
    .await;
    let sum = || members.iter().map(count).sum::<usize>();
    eventually(Duration::from_secs(5), "60 group deliveries", || async {
        sum() == 60
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sum(), 60, "each message reached exactly one member");
    let mut all: Vec<u64> = members
        .iter()
        .flat_map(|g| g.lock().unwrap().iter().map(|x| x.0).collect::<Vec<_>>())
        .collect();
    all.sort();
    assert_eq!(all, (0..60).collect::<Vec<_>>());
    assert!(
        count(&members[2]) > 0 && count(&members[0]) + count(&members[1]) > 0,
        "both nodes were picked"
    );
    assert_eq!(count(&plain), 0, "plain subscribers do not get group sends");

    // local affinity: a send from b stays on b
    let on_c = count(&members[2]);
    let p = pb.clone();
    b.run(async move {
        for i in 0..20u64 {
            assert!(p.send_to_group("orders", "g", &i, None).unwrap());
        }
    })
    .await;
    eventually(Duration::from_secs(5), "80 group deliveries", || async {
        sum() == 80
    })
    .await;
    assert_eq!(count(&members[2]), on_c);
    assert_eq!(pc.stats().frames_received, on_c as u64);
}
