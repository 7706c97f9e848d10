//! Cluster client over real TCP: a process that is not a member subscribes through a
//! receptionist, receives publishes, sends to and asks a service, fails over when its
//! receptionist's node crashes, and buffers a bounded number of messages while it is
//! not connected.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_tools::client::{ServiceRequest, register_service_with};
use cluster_tools::pubsub::Delivery;
use cluster_tools::{
    ClientSettings, ClusterClient, ClusterReceptionist, DistributedPubSub, PubSubSettings,
    ReceptionistSettings, ReplyTo,
};
use common::{Node, Process, cluster, eventually};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::{NodeAddress, Remoting};

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

/// A service that answers n with 2n.
struct Echo;

impl Actor for Echo {
    type Msg = (u64, ReplyTo);
    type State = Remoting;
    type Arguments = Remoting;
    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        r: Remoting,
    ) -> Result<Remoting, ActorProcessingErr> {
        Ok(r)
    }
    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        (n, to): Self::Msg,
        r: &mut Remoting,
    ) -> Result<(), ActorProcessingErr> {
        to.reply(r, &(n * 2), None)?;
        Ok(())
    }
}

struct Member {
    pubsub: DistributedPubSub,
    receptionist: ClusterReceptionist,
}

async fn member(n: &Node, role: Option<&str>) -> Member {
    let role = role.map(str::to_string);
    let (c, r) = (n.cluster.clone(), n.remoting.clone());
    n.run(async move {
        let pubsub = DistributedPubSub::start(
            &c,
            &r,
            PubSubSettings {
                gossip_interval: Duration::from_millis(100),
                ..PubSubSettings::default()
            },
        )
        .await
        .unwrap();
        let receptionist = ClusterReceptionist::start(
            &c,
            &r,
            &pubsub,
            ReceptionistSettings {
                role,
                client_timeout: Duration::from_secs(1),
                check_interval: Duration::from_millis(100),
                ..ReceptionistSettings::default()
            },
        )
        .await
        .unwrap();
        Member {
            pubsub,
            receptionist,
        }
    })
    .await
}

async fn echo_service(n: &Node, m: &Member) {
    let (r, rec) = (n.remoting.clone(), m.receptionist.clone());
    n.run(async move {
        let (a, _) = Actor::spawn(None, Echo, r).await.unwrap();
        rec.register_service_with("/user/echo", a, |req: &ServiceRequest<'_>| {
            Ok((req.decode::<u64>()?, req.reply_to.clone()))
        })
        .await
        .unwrap();
    })
    .await
}

async fn sink_service(n: &Node, pubsub: &DistributedPubSub) -> Got {
    let got: Got = Arc::default();
    let (g, ps) = (got.clone(), pubsub.clone());
    n.run(async move {
        let (a, _) = Actor::spawn(None, Sink, g).await.unwrap();
        register_service_with(&ps, "/user/sink", a, |req: &ServiceRequest<'_>| {
            Ok((req.decode::<u64>()?, req.trace_context.map(str::to_string)))
        })
        .await
        .unwrap();
    })
    .await;
    got
}

fn settings(contacts: Vec<NodeAddress>) -> ClientSettings {
    ClientSettings {
        heartbeat_interval: Duration::from_millis(100),
        acceptable_heartbeat_pause: Duration::from_millis(600),
        reconnect_interval: Duration::from_millis(100),
        buffer_size: 10,
        ..ClientSettings::new(contacts)
    }
}

fn numbers(g: &Got) -> Vec<u64> {
    g.lock().unwrap().iter().map(|x| x.0).collect()
}

/// Publishes `from, from+1, ...` through `m` every 20 ms until the client's subscriber got
/// one of them; returns the next number.
async fn publish_until_received(m: &Member, got: &Got, from: u64) -> u64 {
    let mut i = from;
    eventually(
        Duration::from_secs(20),
        "a publish reaches the client",
        || {
            let (ps, k) = (m.pubsub.clone(), i);
            i += 1;
            let done = numbers(got).iter().any(|x| *x >= from);
            async move {
                if !done {
                    ps.publish_traced("MSFT-price", &k, Some(TP)).unwrap();
                }
                done
            }
        },
    )
    .await;
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subscribes_sends_and_fails_over_when_its_receptionist_dies() {
    common::init_tracing();
    // receptionists run on the members with the role "gateway"
    let mut nodes = cluster(&[&["gateway"], &["gateway"], &[]]).await;
    let mut members = Vec::new();
    for n in &nodes {
        members.push(member(n, Some("gateway")).await);
    }
    echo_service(&nodes[1], &members[1]).await;
    echo_service(&nodes[2], &members[2]).await;
    let one_way = sink_service(&nodes[2], &members[2].pubsub).await;

    // a process that is not a member; contacts: the first two nodes
    let process = Process::start().await;
    let contacts = vec![nodes[0].address.clone(), nodes[1].address.clone()];
    let got: Got = Arc::default();
    let (r, g) = (process.remoting.clone(), got.clone());
    let client = process
        .run(async move {
            let client = ClusterClient::start(&r, settings(contacts)).await.unwrap();
            let (a, _) = Actor::spawn(None, Sink, g).await.unwrap();
            client
                .subscribe_with("MSFT-price", a, |d: &Delivery<'_>| {
                    Ok((d.decode::<u64>()?, d.trace_context.map(str::to_string)))
                })
                .await
                .unwrap();
            client
        })
        .await;
    eventually(Duration::from_secs(10), "client connected", || async {
        client.receptionist().await.is_some()
    })
    .await;
    let first = client.receptionist().await.unwrap();
    let mut gateways = vec![nodes[0].address.clone(), nodes[1].address.clone()];
    gateways.sort();
    let mut learned = client.learned_contacts().await;
    learned.sort();
    assert_eq!(learned, gateways, "only members with the role are contacts");
    let dead = nodes.iter().position(|n| n.address == first).unwrap();
    assert!(dead < 2, "the receptionist is one of the contacts");
    assert!(
        nodes[1 - dead]
            .cluster
            .state()
            .members
            .iter()
            .all(|m| m.node != process.remoting.self_address().address.to_string()),
        "the client never joins membership"
    );

    // publishes on the third node reach the client through its receptionist
    let next = publish_until_received(&members[2], &got, 0).await;
    let ps = members[2].pubsub.clone();
    for k in 10_000..10_100u64 {
        ps.publish_traced("MSFT-price", &k, Some(TP)).unwrap();
    }
    eventually(
        Duration::from_secs(5),
        "100 publishes reach the client",
        || async { numbers(&got).iter().filter(|x| **x >= 10_000).count() == 100 },
    )
    .await;
    {
        let got = got.lock().unwrap();
        let tail: Vec<&(u64, Option<String>)> = got.iter().filter(|x| x.0 >= 10_000).collect();
        assert!(
            tail.iter()
                .enumerate()
                .all(|(i, (n, t))| *n == 10_000 + i as u64 && t.as_deref() == Some(TP))
        );
    }

    // a service answers, and one-way sends keep their trace context
    let answer: u64 = client
        .ask("/user/echo", &21u64, Some(TP), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer, 42);
    for k in 0..10u64 {
        client.send("/user/sink", &k, Some(TP)).unwrap();
    }
    eventually(Duration::from_secs(5), "one-way sends arrive", || async {
        numbers(&one_way) == (0..10).collect::<Vec<_>>()
    })
    .await;
    assert!(
        one_way
            .lock()
            .unwrap()
            .iter()
            .all(|(_, t)| t.as_deref() == Some(TP))
    );
    assert_eq!(members[dead].receptionist.clients().await, 1);

    // the receptionist's node crashes: the client fails over to the other contact
    nodes[dead].crash();
    let survivor = nodes[1 - dead].address.clone();
    eventually(Duration::from_secs(20), "client failed over", || async {
        client.receptionist().await.as_ref() == Some(&survivor)
    })
    .await;
    assert_eq!(client.stats().await.connects, 2);
    let before = numbers(&got).len();
    publish_until_received(&members[2], &got, next + 100_000).await;
    assert!(numbers(&got).len() > before);
    eventually(
        Duration::from_secs(20),
        "the echo service answers again",
        || async {
            client
                .ask::<u64, u64>("/user/echo", &5, None, Duration::from_millis(300))
                .await
                == Ok(10)
        },
    )
    .await;
    // never a duplicate delivery: numbers only grow
    let n = numbers(&got);
    assert!(
        n.windows(2).all(|w| w[0] < w[1]),
        "duplicates or reordering: {n:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_buffers_a_bounded_number_of_messages_until_connected() {
    common::init_tracing();
    let nodes = cluster(&[&[]]).await;
    let n = &nodes[0];
    let (c, r) = (n.cluster.clone(), n.remoting.clone());
    let pubsub = n
        .run(async move {
            DistributedPubSub::start(&c, &r, PubSubSettings::default())
                .await
                .unwrap()
        })
        .await;
    let got = sink_service(n, &pubsub).await;
    let process = Process::start().await;
    let (r, contacts) = (process.remoting.clone(), vec![n.address.clone()]);
    let client = process
        .run(async move { ClusterClient::start(&r, settings(contacts)).await.unwrap() })
        .await;
    // no receptionist yet: the client cannot connect and keeps the newest 10
    for k in 0..15u64 {
        client.send("/user/sink", &k, None).unwrap();
    }
    eventually(
        Duration::from_secs(5),
        "5 dropped from the buffer",
        || async { client.stats().await.dropped == 5 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.receptionist().await, None);
    assert_eq!(client.stats().await.dropped, 5);
    assert!(numbers(&got).is_empty());

    let (c, r) = (n.cluster.clone(), n.remoting.clone());
    n.run(async move {
        ClusterReceptionist::start(&c, &r, &pubsub, ReceptionistSettings::default())
            .await
            .unwrap()
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "buffered sends delivered in order",
        || async { numbers(&got) == (5..15).collect::<Vec<_>>() },
    )
    .await;
    assert_eq!(client.receptionist().await.as_ref(), Some(&n.address));
}

/// A client given only a DNS name for its contacts (as a Kubernetes headless Service):
/// the name (`localhost`) resolves to an IP while the receptionist's node advertises
/// another name (`127.0.0.1`), so the client identifies each resolved address through
/// the handshake and contacts the node by the name it gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_finds_receptionists_behind_a_dns_name() {
    common::init_tracing();
    let nodes = cluster(&[&[]]).await;
    let m = member(&nodes[0], None).await;
    echo_service(&nodes[0], &m).await;
    let process = Process::start().await;
    let port = nodes[0].address.port;
    let r = process.remoting.clone();
    let client = process
        .run(async move {
            let s = ClientSettings {
                contact_service: Some(("localhost".to_string(), port)),
                ..settings(Vec::new())
            };
            ClusterClient::start(&r, s).await.unwrap()
        })
        .await;
    let addr = nodes[0].address.clone();
    eventually(
        Duration::from_secs(10),
        "connected through the DNS name",
        || {
            let (client, addr) = (client.clone(), addr.clone());
            async move { client.receptionist().await == Some(addr) }
        },
    )
    .await;
    let answer: u64 = client
        .ask("/user/echo", &21u64, None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer, 42);
}
