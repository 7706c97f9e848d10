//! How long a cluster singleton is absent during a graceful hand-over and after a crash.
//!
//! Starts 4 nodes with the role in this process, each on its own tokio runtime (so a
//! "crash" drops a node's runtime: all its tasks and sockets die at once), with the
//! membership tick given (default 100 ms: heartbeats every tick, split-brain resolver
//! stable-after 5 ticks). Then: the host leaves gracefully (coordinated shutdown), and
//! the next host crashes (3 of 4 nodes remain, 2 of 3 after the crash: the resolver's
//! majority downs the crashed one). Prints, for each, the gap between the old instance's stop and
//! the new one's start, and the time from the leave/crash to the new start.
//!
//! ```text
//! cargo run --release -p cluster-tools --example singleton-handover -- [TICK_MS]
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_tools::{ClusterSingletonManager, SingletonSettings};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::cluster::{Cluster, ClusterConfig};
use runtime::discovery::Discovery;
use runtime::membership::MemberStatus;
use runtime::shutdown::{CoordinatedShutdown, Reason};
use runtime::{NodeAddress, Remoting, RemotingConfig};

type Events = Arc<Mutex<Vec<(String, &'static str, Instant)>>>;

struct Instance;

impl Actor for Instance {
    type Msg = ();
    type State = (String, Events);
    type Arguments = (String, Events);
    async fn pre_start(
        &self,
        _me: ActorRef<()>,
        (node, ev): (String, Events),
    ) -> Result<(String, Events), ActorProcessingErr> {
        ev.lock()
            .unwrap()
            .push((node.clone(), "start", Instant::now()));
        Ok((node, ev))
    }
    async fn post_stop(
        &self,
        _me: ActorRef<()>,
        (node, ev): &mut (String, Events),
    ) -> Result<(), ActorProcessingErr> {
        ev.lock()
            .unwrap()
            .push((node.clone(), "stop", Instant::now()));
        Ok(())
    }
}

struct Node {
    rt: Option<tokio::runtime::Runtime>,
    cluster: Cluster,
    shutdown: CoordinatedShutdown,
    address: NodeAddress,
}

async fn node(seed: Option<NodeAddress>, tick: Duration, events: Events) -> Node {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (cluster, shutdown, address) = rt
        .spawn(async move {
            let remoting = Remoting::start(RemotingConfig::default()).await.unwrap();
            let me = remoting.self_address().address.clone();
            let shutdown = CoordinatedShutdown::new(Duration::from_secs(10));
            let cfg = ClusterConfig {
                roles: ["worker".to_string()].into(),
                discovery: Discovery::Static(vec![seed.unwrap_or(me.clone())]),
                ..ClusterConfig::fast(tick)
            };
            let cluster = Cluster::start(remoting.clone(), cfg, shutdown.clone())
                .await
                .unwrap();
            let settings = SingletonSettings {
                role: Some("worker".into()),
                retry_interval: tick,
                restart_delay: tick,
                ..SingletonSettings::default()
            };
            let name = me.to_string();
            ClusterSingletonManager::start(
                &cluster,
                &remoting,
                &shutdown,
                "s",
                settings,
                move |sup| {
                    let args = (name.clone(), events.clone());
                    async move {
                        Actor::spawn_linked(None, Instance, args, sup)
                            .await
                            .map(|(r, _)| r)
                    }
                },
            )
            .await
            .unwrap();
            (cluster, shutdown, me)
        })
        .await
        .unwrap();
    Node {
        rt: Some(rt),
        cluster,
        shutdown,
        address,
    }
}

fn host(events: &Events) -> Option<String> {
    let mut running: Vec<String> = Vec::new();
    for (n, what, _) in events.lock().unwrap().iter() {
        match *what {
            "start" => running.push(n.clone()),
            _ => running.retain(|r| r != n),
        }
    }
    assert!(running.len() <= 1, "two instances: {running:?}");
    running.pop()
}

async fn wait_for_new_host(events: &Events, old: &str) -> String {
    let t = Instant::now();
    loop {
        if let Some(h) = host(events)
            && h != old
        {
            return h;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no new host");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn time_of(events: &Events, node: &str, what: &str) -> Option<Instant> {
    events
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(n, w, _)| n == node && *w == what)
        .map(|e| e.2)
}

#[tokio::main]
async fn main() {
    let tick = Duration::from_millis(
        std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(100),
    );
    let events: Events = Arc::default();
    let mut nodes = vec![node(None, tick, events.clone()).await];
    let seed = nodes[0].address.clone();
    for _ in 0..3 {
        nodes.push(node(Some(seed.clone()), tick, events.clone()).await);
    }
    for n in &nodes {
        assert!(
            n.cluster
                .wait_until(
                    |s| s.members.len() == 4
                        && s.members.iter().all(|m| m.status == MemberStatus::Up),
                    Duration::from_secs(60)
                )
                .await
        );
    }
    let first = loop {
        if let Some(h) = host(&events) {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    println!(
        "singleton-handover: 4 nodes, membership tick {tick:?} (SBR stable-after {:?})",
        tick * 5
    );

    // graceful leave of the host
    let i = nodes
        .iter()
        .position(|n| n.address.to_string() == first)
        .unwrap();
    let t0 = Instant::now();
    let s = nodes[i].shutdown.clone();
    nodes[i]
        .rt
        .as_ref()
        .unwrap()
        .spawn(async move { s.run(Reason::Leave) });
    let second = wait_for_new_host(&events, &first).await;
    let started = time_of(&events, &second, "start").unwrap();
    let stopped = time_of(&events, &first, "stop").unwrap();
    println!(
        "  graceful leave: old stopped {:.1} ms after the leave began; new started {:.1} ms after the old stopped ({:.1} ms without a singleton in total)",
        (stopped - t0).as_secs_f64() * 1e3,
        (started - stopped).as_secs_f64() * 1e3,
        (started - t0).as_secs_f64() * 1e3
    );
    nodes[i].shutdown.terminated().await;

    // crash of the new host
    let j = nodes
        .iter()
        .position(|n| n.address.to_string() == second)
        .unwrap();
    let t1 = Instant::now();
    nodes[j].rt.take().unwrap().shutdown_background();
    // its instance died with it (no post_stop runs on a crash)
    events.lock().unwrap().push((second.clone(), "crash", t1));
    let third = wait_for_new_host(&events, &second).await;
    let started = time_of(&events, &third, "start").unwrap();
    println!(
        "  crash: new instance started {:.1} ms after the crash (failure detection + resolver + removal)",
        (started - t1).as_secs_f64() * 1e3
    );
    for mut n in nodes {
        if let Some(rt) = n.rt.take() {
            rt.shutdown_background();
        }
    }
}
