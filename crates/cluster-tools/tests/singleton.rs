//! Cluster singleton over real TCP: exactly one instance during a graceful leave and a
//! crash, checked by the instances themselves through one journal id whose sequence
//! numbers reject a second writer; proxy routing and buffering.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_tools::{ClusterSingletonManager, ProxySettings, SingletonProxy, SingletonSettings};
use common::{Node, cluster, eventually};
use persistence::{AtomicWrite, InMemoryStore, Journal, Persistable, PersistentRepr};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

const PID: &str = "the-singleton";

#[derive(Serialize, Deserialize)]
struct Beat;

impl Persistable for Beat {
    const MANIFEST: &'static str = "beat";
}

#[derive(Debug, Serialize, Deserialize)]
enum GuardMsg {
    Beat,
    Work(u64),
    /// Built by the decode function from `Work` and the envelope's trace context.
    Traced(u64, Option<String>),
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Default)]
struct Log {
    starts: Vec<String>,
    violations: Vec<String>,
    work: Vec<(String, u64)>,
    traces: Vec<Option<String>>,
}

#[derive(Clone)]
struct GuardArgs {
    store: InMemoryStore,
    node: String,
    log: Arc<Mutex<Log>>,
}

struct Guard;

struct GuardState {
    a: GuardArgs,
    seq: u64,
}

impl Actor for Guard {
    type Msg = GuardMsg;
    type State = GuardState;
    type Arguments = GuardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GuardMsg>,
        a: GuardArgs,
    ) -> Result<GuardState, ActorProcessingErr> {
        let seq = a.store.highest_sequence_nr(PID, 0).await?;
        a.log.lock().unwrap().starts.push(a.node.clone());
        myself.send_interval(Duration::from_millis(5), || GuardMsg::Beat);
        Ok(GuardState { a, seq })
    }

    async fn handle(
        &self,
        myself: ActorRef<GuardMsg>,
        msg: GuardMsg,
        st: &mut GuardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GuardMsg::Beat => {
                if !st.beat().await? {
                    myself.stop(Some("second writer".into()));
                }
            }
            GuardMsg::Work(n) => st.a.log.lock().unwrap().work.push((st.a.node.clone(), n)),
            GuardMsg::Traced(n, t) => {
                let mut log = st.a.log.lock().unwrap();
                log.work.push((st.a.node.clone(), n));
                log.traces.push(t);
            }
        }
        Ok(())
    }

    /// A slow stop that keeps writing for a while (flushing state, say): a successor
    /// started before this ends would be caught by the sequence check.
    async fn post_stop(
        &self,
        _myself: ActorRef<GuardMsg>,
        st: &mut GuardState,
    ) -> Result<(), ActorProcessingErr> {
        // 500 ms: longer than the leaving node takes to be removed from the membership
        for _ in 0..20 {
            if !st.beat().await? {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }
}

impl GuardState {
    /// Appends the next sequence number; false (and a violation logged) when another
    /// writer took it.
    async fn beat(&mut self) -> Result<bool, ActorProcessingErr> {
        let repr = PersistentRepr::from_event(PID, self.seq + 1, &Beat, self.a.node.clone())?;
        let res = self
            .a
            .store
            .write_messages(vec![AtomicWrite::new(vec![repr])?])
            .await?;
        match res.into_iter().next() {
            Some(Ok(())) => {
                self.seq += 1;
                Ok(true)
            }
            other => {
                self.a.log.lock().unwrap().violations.push(format!(
                    "{} could not write seq {}: {other:?}",
                    self.a.node,
                    self.seq + 1
                ));
                Ok(false)
            }
        }
    }
}

fn settings() -> SingletonSettings {
    SingletonSettings {
        role: Some("worker".into()),
        retry_interval: Duration::from_millis(100),
        removal_margin: Duration::ZERO,
        hand_over_timeout: Duration::from_secs(5),
        restart_delay: Duration::from_millis(100),
    }
}

async fn start_manager(
    n: &Node,
    store: &InMemoryStore,
    log: &Arc<Mutex<Log>>,
) -> ClusterSingletonManager {
    let args = GuardArgs {
        store: store.clone(),
        node: n.address.to_string(),
        log: log.clone(),
    };
    let (c, r, s) = (n.cluster.clone(), n.remoting.clone(), n.shutdown.clone());
    n.run(async move {
        ClusterSingletonManager::start_with(
            &c,
            &r,
            &s,
            "guard",
            settings(),
            move |sup| {
                let a = args.clone();
                async move {
                    Actor::spawn_linked(None, Guard, a, sup)
                        .await
                        .map(|(r, _)| r)
                }
            },
            |inb| {
                Ok(match postcard::from_bytes(inb.payload)? {
                    GuardMsg::Work(n) => GuardMsg::Traced(n, inb.trace_context.map(str::to_string)),
                    other => other,
                })
            },
        )
        .await
        .unwrap()
    })
    .await
}

async fn start_proxy(n: &Node, buffer_size: usize) -> SingletonProxy<GuardMsg> {
    let (c, r) = (n.cluster.clone(), n.remoting.clone());
    n.run(async move {
        SingletonProxy::start(
            &c,
            &r,
            "guard",
            ProxySettings {
                role: Some("worker".into()),
                identify_interval: Duration::from_millis(100),
                buffer_size,
            },
        )
        .await
        .unwrap()
    })
    .await
}

async fn running(managers: &[&ClusterSingletonManager]) -> Vec<bool> {
    let mut v = Vec::new();
    for m in managers {
        v.push(m.is_running_here().await);
    }
    v
}

fn work_on(log: &Arc<Mutex<Log>>, node: &str, from: u64) -> usize {
    log.lock()
        .unwrap()
        .work
        .iter()
        .filter(|(n, w)| n == node && *w >= from)
        .count()
}

/// Sends work items `from..from+count` through the proxy until the instance on
/// `node` received all of those sent after it was located.
async fn work_reaches(
    proxy: &SingletonProxy<GuardMsg>,
    log: &Arc<Mutex<Log>>,
    node: &Node,
    from: u64,
) {
    eventually(
        Duration::from_secs(20),
        "the proxy routes to the new instance",
        || async { proxy.current().await.as_ref() == Some(&node.address) },
    )
    .await;
    for i in from..from + 50 {
        proxy.tell(GuardMsg::Work(i)).unwrap();
    }
    let name = node.address.to_string();
    eventually(
        Duration::from_secs(10),
        "work reaches the instance",
        || async { work_on(log, &name, from) == 50 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_through_graceful_leave_and_crash() {
    common::init_tracing();
    let mut nodes = cluster(&[&["web"], &["worker"], &["worker"], &["worker"]]).await;
    let store = InMemoryStore::new();
    let log = Arc::new(Mutex::new(Log::default()));
    // hosts in age order (nodes that joined together are ordered by address)
    let state = nodes[0].cluster.state();
    let age = |n: &Node| {
        let m = state
            .members
            .iter()
            .find(|m| m.node == n.address.to_string())
            .unwrap();
        (m.up_number, n.address.clone())
    };
    let mut order = [1usize, 2, 3];
    order.sort_by_key(|i| age(&nodes[*i]));
    let [a, b, c] = [order[0], order[1], order[2]];
    let ma = start_manager(&nodes[a], &store, &log).await;
    let mb = start_manager(&nodes[b], &store, &log).await;
    let mc = start_manager(&nodes[c], &store, &log).await;
    let proxy = start_proxy(&nodes[0], 1000).await;

    // the oldest worker hosts it, nobody else (node 0, the oldest member, lacks the role)
    eventually(
        Duration::from_secs(10),
        "instance on the oldest worker",
        || async { running(&[&ma, &mb, &mc]).await == [true, false, false] },
    )
    .await;
    work_reaches(&proxy, &log, &nodes[a], 0).await;

    // graceful leave of the host: the next oldest takes over after the hand-over
    nodes[a].leave();
    eventually(
        Duration::from_secs(20),
        "instance on the second oldest",
        || async { running(&[&mb, &mc]).await == [true, false] },
    )
    .await;
    assert!(
        nodes[a].shutdown.terminated().await == 0,
        "the leaving node shuts down cleanly"
    );
    // the process exits after its coordinated shutdown
    nodes[a].crash();
    work_reaches(&proxy, &log, &nodes[b], 1000).await;

    // crash of the host: after it is downed and removed, the next oldest takes over
    let before_crash = store.highest_sequence_nr(PID, 0).await.unwrap();
    nodes[b].crash();
    eventually(
        Duration::from_secs(30),
        "instance on the youngest",
        || async { mc.is_running_here().await },
    )
    .await;
    work_reaches(&proxy, &log, &nodes[c], 2000).await;
    // the new instance keeps writing after the crashed one
    let after = store.highest_sequence_nr(PID, 0).await.unwrap();
    assert!(after > before_crash);

    let events = store
        .replay_messages(PID, 1, u64::MAX, u64::MAX)
        .await
        .unwrap();
    let log = log.lock().unwrap();
    assert!(
        log.violations.is_empty(),
        "second writer: {:?}",
        log.violations
    );
    let expected: Vec<String> = [a, b, c]
        .iter()
        .map(|i| nodes[*i].address.to_string())
        .collect();
    assert_eq!(log.starts, expected, "one start per host, in age order");
    // the journal shows one writer at a time: contiguous sequence numbers, and each
    // host's writes form one block, in hand-over order
    let mut blocks: Vec<String> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.sequence_nr, i as u64 + 1);
        if blocks.last() != Some(&e.writer_uuid) {
            blocks.push(e.writer_uuid.clone());
        }
    }
    assert_eq!(blocks, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_buffers_a_bounded_number_of_messages_until_an_instance_runs() {
    common::init_tracing();
    let nodes = cluster(&[&["worker"], &["web"]]).await;
    let store = InMemoryStore::new();
    let log = Arc::new(Mutex::new(Log::default()));
    // the proxy starts before any manager: nothing to route to yet
    let proxy = start_proxy(&nodes[1], 5).await;
    for i in 0..12 {
        proxy
            .tell_traced(GuardMsg::Work(i), (i % 2 == 0).then(|| TP.to_string()))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.current().await, None);
    assert_eq!(proxy.dropped().await, 7);
    let m = start_manager(&nodes[0], &store, &log).await;
    let host = nodes[0].address.to_string();
    eventually(
        Duration::from_secs(10),
        "buffered messages delivered",
        || async { work_on(&log, &host, 0) == 5 },
    )
    .await;
    assert!(m.is_running_here().await);
    // the newest five were kept, in order
    let got: Vec<u64> = log.lock().unwrap().work.iter().map(|(_, w)| *w).collect();
    assert_eq!(got, vec![7, 8, 9, 10, 11]);
    // the trace context travels with each message
    let traces = log.lock().unwrap().traces.clone();
    assert_eq!(traces, [None, Some(TP.into()), None, Some(TP.into()), None]);
}
