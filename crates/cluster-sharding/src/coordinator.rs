//! The shard coordinator actor of one entity type.
//!
//! [`ShardCoordinator`] is a ractor actor around the pure
//! [`CoordinatorState`]: it registers itself on the
//! transport as `sharding/{type}/coordinator`, feeds it region messages, membership
//! views and ticks, and sends what the state decides. It runs as a cluster singleton
//! (`cluster_tools::ClusterSingletonManager`, see [`crate::node`]) on the oldest Up
//! member with the type's role, which is also the node that
//! [`Membership::coordinator_node`] names; regions only talk to the coordinator on the
//! node their own view names. The singleton stops the old instance before the next
//! one starts, and a new instance rebuilds the allocation from the regions.
//!
//! With a remember-entities store ([`ShardingSettings::remember_entities_store`]) it
//! also loads the remembered shards and entities when it starts, and stores what the
//! regions report as started, once per tick ([`crate::remember`]). The store's reads
//! and writes run in a task of their own, so an unavailable store never holds up
//! allocation or hand-offs: the start waits at most [`LOAD_WAIT`] for the load, which
//! then goes on in the background (shards not hosted by the time it completes are
//! started with their stored entities).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::remote::ResolvedRef;
use runtime::{NodeAddress, RemoteRef, Remoting, SendPolicy};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::allocation::{AllocationSettings, CoordinatorState, Out};
use crate::hash::ShardId;
use crate::membership::Membership;
use crate::protocol::{CoordinatorWire, RegionWire};
use crate::remember::{RememberLog, RememberStore};
use crate::settings::ShardingSettings;

/// Messages of the coordinator actor. Only `Wire` comes from the network (the
/// singleton manager requires a decodable message type; the others are local).
#[derive(Debug, Deserialize)]
pub enum CoordinatorMsg {
    /// From a region.
    Wire(CoordinatorWire),
    /// A new membership view.
    #[serde(skip)]
    Members(Membership),
    /// Housekeeping (every `retry_interval`).
    #[serde(skip)]
    Tick,
    /// The remember-entities store was read (or could not be).
    #[serde(skip)]
    RememberLoaded(Box<Result<RememberLog, String>>),
    /// Reported ids were written to the remember-entities store (what failed is kept).
    #[serde(skip)]
    RememberFlushed(Box<RememberLog>),
}

/// How long a starting coordinator waits for the remember-entities store before it
/// handles the regions (the load goes on in the background after that).
pub const LOAD_WAIT: Duration = Duration::from_secs(5);

/// Start arguments of the coordinator.
pub struct CoordinatorArgs {
    /// The type's settings.
    pub settings: ShardingSettings,
    /// The node's transport.
    pub remoting: Remoting,
    /// Membership views.
    pub membership: watch::Receiver<Membership>,
}

/// The coordinator actor.
pub struct ShardCoordinator;

/// State of the running coordinator.
pub struct CoordinatorActorState {
    state: CoordinatorState,
    remoting: Remoting,
    name: String,
    region_name: String,
    last_rebalance: Instant,
    rebalance_interval: std::time::Duration,
    hello_ticks: u32,
    refs: HashMap<NodeAddress, ResolvedRef<RegionWire<()>>>,
    tasks: Vec<JoinHandle<()>>,
    remember: Option<Remember>,
    type_name: String,
    /// This incarnation, as the writer of the store's events.
    writer: String,
}

/// The coordinator's side of the remember-entities store.
struct Remember {
    store: RememberStore,
    log: LogState,
    /// Ids the regions reported that the log has not been given yet, per shard. A set: a
    /// region reports its ids again until it hears back, and while the store cannot be read
    /// this is bounded by the distinct ids, not by the reports.
    reported: BTreeMap<ShardId, BTreeSet<String>>,
}

/// Where the coordinator's copy of the store stands.
enum LogState {
    /// Not read yet, or the last read failed; `reading` while a read task runs.
    Unread { reading: bool },
    /// Read, and no task has it: the next tick flushes what was reported.
    Idle(RememberLog),
    /// A flush task has it.
    Flushing,
}

impl ShardCoordinator {
    /// Spawns a coordinator linked to `supervisor` (what a singleton manager's factory
    /// does); it registers itself on the transport.
    pub async fn spawn_linked(
        args: CoordinatorArgs,
        supervisor: ractor::ActorCell,
    ) -> Result<ActorRef<CoordinatorMsg>, ractor::SpawnErr> {
        let (r, _) = Actor::spawn_linked(None, ShardCoordinator, args, supervisor).await?;
        Ok(r)
    }
}

impl CoordinatorActorState {
    /// Starts the store's next task, if none runs: the load until it succeeded, then a
    /// flush of what the regions reported since the last one.
    fn remember_tick(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        let Some(r) = &mut self.remember else {
            return;
        };
        let me = myself.clone();
        match std::mem::replace(&mut r.log, LogState::Flushing) {
            LogState::Unread { reading: false } => {
                r.log = LogState::Unread { reading: true };
                let (store, type_name, writer) =
                    (r.store.clone(), self.type_name.clone(), self.writer.clone());
                tokio::spawn(async move {
                    let loaded = RememberLog::load(store, &type_name, &writer)
                        .await
                        .map_err(|e| e.to_string());
                    let _ = me.cast(CoordinatorMsg::RememberLoaded(Box::new(loaded)));
                });
            }
            LogState::Idle(mut log) => {
                for (shard, ids) in std::mem::take(&mut r.reported) {
                    log.note(shard, ids);
                }
                if !log.has_unsaved() {
                    r.log = LogState::Idle(log);
                    return;
                }
                tokio::spawn(async move {
                    log.flush().await;
                    let _ = me.cast(CoordinatorMsg::RememberFlushed(Box::new(log)));
                });
            }
            busy @ (LogState::Unread { reading: true } | LogState::Flushing) => r.log = busy,
        }
    }

    /// The store was read: its shards and entities join the allocation.
    fn remember_loaded(&mut self, loaded: Result<RememberLog, String>) {
        let Some(r) = &mut self.remember else {
            return;
        };
        match loaded {
            Ok(log) => {
                for (shard, ids) in log.remembered() {
                    self.state.remember(shard, ids.iter().cloned());
                }
                r.log = LogState::Idle(log);
            }
            Err(e) => {
                r.log = LogState::Unread { reading: false };
                warn!(type_name = %self.type_name, error = %e, "remembered entities not loaded; retrying on the next tick");
            }
        }
    }

    /// Notes the entity ids a region reports as started, for the store.
    fn note_reported(&mut self, w: &CoordinatorWire) {
        let Some(r) = &mut self.remember else {
            return;
        };
        match w {
            CoordinatorWire::EntitiesStarted { entities, .. } => {
                for (shard, ids) in entities {
                    r.reported
                        .entry(*shard)
                        .or_default()
                        .extend(ids.iter().cloned());
                }
            }
            CoordinatorWire::Register { shards, .. } => {
                for (shard, ids) in shards.iter().filter(|(_, ids)| !ids.is_empty()) {
                    r.reported
                        .entry(*shard)
                        .or_default()
                        .extend(ids.iter().cloned());
                }
            }
            _ => {}
        }
    }

    fn send(&mut self, out: Vec<Out>) {
        for Out(node, msg) in out {
            let r = self.refs.entry(node.clone()).or_insert_with(|| {
                self.remoting
                    .resolve(&RemoteRef::new(node.clone(), self.region_name.clone()))
            });
            // `Fail` never waits: the future completes on its first poll.
            if let Some(Err(e)) = r.send(&msg, None, SendPolicy::Fail).now_or_never() {
                debug!(to = %node, error = %e, "coordinator message not sent; the protocol re-sends");
            }
        }
    }
}

impl Actor for ShardCoordinator {
    type Msg = CoordinatorMsg;
    type State = CoordinatorActorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CoordinatorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let s = &args.settings;
        let mut membership = args.membership.clone();
        let view = membership.borrow_and_update().clone();
        let state = CoordinatorState::new(
            AllocationSettings {
                role: s.role.clone(),
                rebalance_threshold: s.rebalance_threshold,
                rebalance_max_per_round: s.rebalance_max_per_round,
                handoff_timeout: s.handoff_timeout,
                retry_interval: s.retry_interval,
            },
            view,
        );
        let name = s.coordinator_name();
        args.remoting.register_with(&name, myself.clone(), |inb| {
            postcard::from_bytes(inb.payload).map(CoordinatorMsg::Wire)
        });
        info!(type_name = %s.type_name, node = %args.remoting.self_address().address, "shard coordinator started");
        let me = myself.clone();
        let watcher = tokio::spawn(async move {
            while membership.changed().await.is_ok() {
                let m = membership.borrow_and_update().clone();
                if me.cast(CoordinatorMsg::Members(m)).is_err() {
                    break;
                }
            }
        });
        let ticker = myself.send_interval(s.retry_interval, || CoordinatorMsg::Tick);
        let remember = match (&s.remember_entities_store, s.remember_entities) {
            (Some(store), true) => Some(Remember {
                store: store.clone(),
                log: LogState::Unread { reading: false },
                reported: BTreeMap::new(),
            }),
            _ => None,
        };
        let me_unique = args.remoting.self_address();
        let writer = format!("{}#{}", me_unique.address, me_unique.uid);
        let mut st = CoordinatorActorState {
            state,
            remoting: args.remoting,
            name,
            region_name: s.region_name(),
            last_rebalance: Instant::now(),
            rebalance_interval: s.rebalance_interval,
            hello_ticks: 10,
            refs: HashMap::new(),
            tasks: vec![watcher, ticker],
            remember,
            type_name: s.type_name.clone(),
            writer,
        };
        // Load before the first registration is handled, so that the shards to restart
        // and their entities are known when the coordinator becomes active.
        if let Some(r) = &st.remember {
            let load = RememberLog::load(r.store.clone(), &st.type_name, &st.writer);
            let loaded = match tokio::time::timeout(LOAD_WAIT, load).await {
                Ok(loaded) => loaded.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {LOAD_WAIT:?}")),
            };
            st.remember_loaded(loaded);
        }
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.remoting.unregister(&st.name);
        for t in &st.tasks {
            t.abort();
        }
        info!(name = %st.name, "shard coordinator stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let out = match msg {
            CoordinatorMsg::Wire(w) => {
                st.note_reported(&w);
                st.state.on_wire(w, now)
            }
            CoordinatorMsg::Members(m) => {
                st.refs.retain(|a, _| m.is_alive(a));
                st.state.on_members(m, now)
            }
            CoordinatorMsg::RememberLoaded(loaded) => {
                st.remember_loaded(*loaded);
                Vec::new()
            }
            CoordinatorMsg::RememberFlushed(log) => {
                if let Some(r) = &mut st.remember {
                    r.log = LogState::Idle(*log);
                }
                Vec::new()
            }
            CoordinatorMsg::Tick => {
                st.remember_tick(&myself);
                let due = now.duration_since(st.last_rebalance) >= st.rebalance_interval;
                if due {
                    st.last_rebalance = now;
                }
                let mut out = st.state.on_tick(now, due);
                // Regions that registered with an earlier instance on this same node
                // (restarted after a failure) would not know to register again.
                if st.hello_ticks > 0 {
                    st.hello_ticks -= 1;
                    out.extend(
                        st.state
                            .unregistered_members()
                            .into_iter()
                            .map(|a| Out(a, RegionWire::CoordinatorStarted)),
                    );
                }
                out
            }
        };
        st.send(out);
        Ok(())
    }
}
