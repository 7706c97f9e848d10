//! The shard region of one entity type on one node: it routes every message for an
//! entity to the shard's home, hosts the shards the coordinator allocates to it (and
//! their entities), buffers while a home is unknown or a shard moves, takes part in
//! the hand-off, passivates idle entities, and answers state and stats queries.
//! [`ShardRegion`] is the cheap, cloneable handle services use.
//!
//! Routing: shard = FNV-1a(entity id) % shards ([`crate::hash`]). A message whose
//! shard lives here goes straight into the entity's mailbox (no serialization); a
//! message whose shard lives on another node is serialized once and sent to that
//! node's region with the trace context in the envelope; a message whose home is
//! unknown, or whose shard is being handed off, is buffered (bounded by
//! `buffer_size` over all shards: beyond it the message is dropped, counted and
//! logged; senders retry) and delivered in arrival order once the coordinator names
//! the home.
//!
//! Hand-off (see [`crate::allocation`] for the coordinator's side): on
//! `BeginHandOff` the region buffers the shard's messages and acknowledges; the home
//! region, on `HandOff`, stops the shard's entities with `drain` (each finishes its
//! mailbox), waits for all of them to terminate, and answers `ShardStopped`; every
//! region flushes the buffer when `ShardHome` names the new home. The time from
//! `BeginHandOff` to `ShardHome` is the pause this region saw; the longest is in the
//! region state.
//!
//! Entities are spawned off the region's task (their `pre_start`, e.g. a journal
//! replay, never blocks routing); messages that arrive meanwhile queue in order.
//!
//! Guarantees and limits, written down:
//! - Delivery is at most once per send, as in Akka: a message to a node whose link is
//!   down (unreachable, not yet downed) is dropped by the transport and counted there;
//!   a full buffer drops and counts. Senders that need every command applied retry
//!   until acknowledged, and entities deduplicate (the tests do exactly that).
//! - `tell` never blocks. What is bounded is the buffer (above) and each peer link's
//!   send queue (the region waits on a full one with `SendPolicy::Wait`, or drops with
//!   `Fail`); the region actor's own mailbox is ractor's and unbounded, so a sender
//!   that outruns the cluster should pace itself (e.g. by acknowledgements).
//! - Order per sender and entity holds while a shard stays put. Around a hand-off, a
//!   message already on its way to the old home is forwarded from there after the move
//!   and may arrive after later messages that went straight to the new home.
//! - A shard is never hosted by two regions: the coordinator allocates only
//!   unallocated shards (see [`crate::allocation`]); a region starts a shard only on a
//!   `HostShard` from the coordinator it registered with (never because a `ShardHome`
//!   names its own address: that may have meant a predecessor at the same address);
//!   it reports what it hosts, shards still stopping included, when it registers; and
//!   a node restarted at the same address registers only once its predecessor is gone
//!   from membership, so until then its region hosts nothing. Unreachable members are
//!   not treated as gone until they are downed.
//! - Remember-entities keeps the ids in the coordinator (reported by the regions as
//!   entities start, and again when a region registers). Without a store
//!   ([`ShardingSettings::remember_entities_store`]), ids of entities whose node and
//!   coordinator were lost together are not restarted until their next message; with one,
//!   the coordinator also keeps them in the journal and restarts them after any loss,
//!   the whole cluster's included ([`crate::remember`]). Passivated entities stay
//!   remembered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use runtime::remote::ResolvedRef;
use runtime::{NodeAddress, RemoteRef, Remoting, SendPolicy};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::entity::{EntityContext, EntityFactory, EntityMsg};
use crate::hash::{ShardId, shard_of};
use crate::membership::{MemberStatus, Membership};
use crate::protocol::{CoordinatorWire, RegionWire};
use crate::settings::ShardingSettings;
use crate::stats::{ClusterShardStats, QueryError, RegionState, ShardState};

/// Messages are forwarded between regions at most this many times (stale homes).
const MAX_HOPS: u8 = 3;

type SpawnFuture<M> =
    Pin<Box<dyn Future<Output = Result<ActorRef<EntityMsg<M>>, SpawnErr>> + Send>>;
type Spawner<M> = Arc<dyn Fn(EntityContext, ActorCell) -> SpawnFuture<M> + Send + Sync>;

/// Messages of the region actor.
pub enum RegionMsg<M> {
    /// From a local sender (through the actor, see [`ShardRegion::tell`]).
    Tell {
        /// The entity's shard.
        shard: ShardId,
        /// Target entity.
        entity_id: String,
        /// The message.
        msg: M,
        /// W3C traceparent.
        trace: Option<Box<str>>,
    },
    /// An entity message from another node's region.
    Inbound {
        /// Target entity.
        entity_id: String,
        /// The message.
        msg: M,
        /// W3C traceparent of the envelope.
        trace: Option<Box<str>>,
        /// Forwards so far.
        hops: u8,
    },
    /// A protocol message from another node's region or the coordinator.
    Wire {
        /// Sending node.
        from: NodeAddress,
        /// W3C traceparent of the envelope.
        trace: Option<Box<str>>,
        /// The message.
        wire: RegionWire<M>,
    },
    /// A new membership view.
    Members(Membership),
    /// Housekeeping (every `retry_interval`).
    Tick,
    /// An entity spawn finished.
    EntityStarted {
        /// Its shard.
        shard: ShardId,
        /// Its id.
        entity_id: String,
        /// The actor, or why it did not start.
        result: Result<ActorRef<EntityMsg<M>>, String>,
    },
    /// This region's state.
    GetState(RpcReplyPort<RegionState>),
    /// Cluster-wide stats of the type.
    GetClusterStats(RpcReplyPort<ClusterShardStats>),
    /// A stats query ran out of time.
    StatsTimeout(u64),
    /// Hand off every local shard (graceful leave); answered when none is left.
    GracefulShutdown(RpcReplyPort<()>),
}

/// Counters of a region, readable without a round trip to the actor.
#[derive(Debug, Default)]
pub struct RegionCounters {
    /// Messages put into a local entity's mailbox.
    pub delivered_local: AtomicU64,
    /// Messages sent to another node's region.
    pub sent_remote: AtomicU64,
    /// Messages dropped (buffer full, send failure, too many hops, entity failed to start).
    pub dropped: AtomicU64,
    /// Shards hosted here now (updated by the region actor as shards come and go).
    pub shards: AtomicU64,
    /// Entities here now, starting, running or stopping (updated as they come and go).
    pub entities: AtomicU64,
    /// Shards this region handed off to another region (stopped here for a move).
    pub handoffs: AtomicU64,
    /// Set once the region has registered with its coordinator, and never cleared: what
    /// the node's readiness check reads (as Akka's sharding health check, a coordinator
    /// moving later does not make a node unready again).
    pub registered: AtomicBool,
}

type PeerRef<M> = Arc<ResolvedRef<RegionWire<M>>>;

/// What a [`ShardRegion`] handle needs to send straight to a remote home, skipping
/// the region actor: the usable routes, and per shard the number of the handle's
/// messages still in the actor's mailbox. The actor publishes a shard's route only
/// while its home is known, remote, not moving and nothing for it is buffered; a
/// handle uses it only while none of its messages for that shard wait in the
/// mailbox, so a sender's messages keep their order.
struct Direct<M> {
    shards: u32,
    routes: RwLock<HashMap<ShardId, PeerRef<M>>>,
    queued: Box<[AtomicU64]>,
}

impl<M> Direct<M> {
    fn new(shards: u32) -> Self {
        Self {
            shards: shards.max(1),
            routes: RwLock::new(HashMap::new()),
            queued: (0..shards.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

struct Pending<M> {
    entity_id: String,
    msg: M,
    trace: Option<Box<str>>,
    hops: u8,
}

enum Slot<M> {
    Starting(VecDeque<(M, Option<Box<str>>)>),
    Running {
        actor: ActorRef<EntityMsg<M>>,
        last: Instant,
    },
    Stopping(VecDeque<(M, Option<Box<str>>)>),
}

struct LocalShard<M> {
    entities: HashMap<String, Slot<M>>,
    stopping: bool,
    handoff_ids: Vec<String>,
}

impl<M> LocalShard<M> {
    fn new() -> Self {
        Self {
            entities: HashMap::new(),
            stopping: false,
            handoff_ids: Vec::new(),
        }
    }
}

struct PendingStats {
    port: RpcReplyPort<ClusterShardStats>,
    waiting: HashSet<NodeAddress>,
    states: Vec<RegionState>,
}

struct Shutdown {
    acked: bool,
    /// Shards hosted here when the shutdown began: done when each has a new home.
    own: BTreeSet<ShardId>,
    ports: Vec<RpcReplyPort<()>>,
}

/// State of the region actor.
pub struct Region<M> {
    s: ShardingSettings,
    type_name: Arc<str>,
    spawner: Option<Spawner<M>>,
    remoting: Remoting,
    me: NodeAddress,
    /// The uid of this node's incarnation.
    uid: u64,
    members: Membership,
    coordinator: Option<NodeAddress>,
    prev_coordinator: Option<NodeAddress>,
    coord_ref: Option<ResolvedRef<CoordinatorWire>>,
    registered: bool,
    homes: HashMap<ShardId, NodeAddress>,
    handing_off: HashMap<ShardId, Instant>,
    buffers: BTreeMap<ShardId, VecDeque<Pending<M>>>,
    buffered: usize,
    requested: HashMap<ShardId, Instant>,
    shards: BTreeMap<ShardId, LocalShard<M>>,
    by_actor: HashMap<ActorId, (ShardId, String)>,
    peers: HashMap<NodeAddress, PeerRef<M>>,
    counters: Arc<RegionCounters>,
    direct: Arc<Direct<M>>,
    handoffs_seen: u64,
    max_pause: Duration,
    shutdown: Option<Shutdown>,
    next_request: u64,
    pending_stats: HashMap<u64, PendingStats>,
    remembered_new: Vec<(ShardId, String)>,
    tasks: Vec<JoinHandle<()>>,
}

/// Start arguments of the region actor.
pub struct RegionArgs<M> {
    settings: ShardingSettings,
    spawner: Option<Spawner<M>>,
    remoting: Remoting,
    membership: watch::Receiver<Membership>,
    counters: Arc<RegionCounters>,
    direct: Arc<Direct<M>>,
}

/// The region actor.
pub struct RegionActor<M>(std::marker::PhantomData<fn() -> M>);

fn state_of<M>(r: &Region<M>) -> RegionState {
    RegionState {
        type_name: r.type_name.to_string(),
        address: r.me.to_string(),
        shards: r
            .shards
            .iter()
            .map(|(s, sh)| {
                let mut entities: Vec<String> = sh.entities.keys().cloned().collect();
                entities.sort();
                ShardState {
                    shard: *s,
                    entities,
                }
            })
            .collect(),
        buffered: r.buffered as u64,
        dropped: r.counters.dropped.load(Ordering::Relaxed),
        handoffs_seen: r.handoffs_seen,
        max_handoff_pause_ms: r.max_pause.as_millis() as u64,
    }
}

impl<M> Region<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Stores the shard and entity counts in the counters `/metrics` reads: after every
    /// message that may change them (not after the routine delivery to a running entity,
    /// the hot path, which changes neither). O(shards hosted).
    fn publish_counts(&self) {
        let entities: usize = self.shards.values().map(|s| s.entities.len()).sum();
        self.counters
            .shards
            .store(self.shards.len() as u64, Ordering::Relaxed);
        self.counters
            .entities
            .store(entities as u64, Ordering::Relaxed);
    }

    fn drop_msg(&self, why: &str, entity_id: &str) {
        let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        if n.is_power_of_two() || n % 10_000 == 0 {
            warn!(type_name = %self.type_name, entity_id, dropped_total = n + 1, why, "sharded message dropped");
        }
    }

    async fn send_coordinator(&self, msg: CoordinatorWire) {
        if let Some(c) = &self.coord_ref
            && let Err(e) = c.send(&msg, None, runtime::SendPolicy::Fail).await
        {
            debug!(error = %e, "message to the coordinator not sent; retried on the next tick");
        }
    }

    fn peer(&mut self, node: &NodeAddress) -> PeerRef<M> {
        if let Some(r) = self.peers.get(node) {
            return r.clone();
        }
        let r = Arc::new(
            self.remoting
                .resolve(&RemoteRef::new(node.clone(), self.s.region_name())),
        );
        self.peers.insert(node.clone(), r.clone());
        r
    }

    /// Publishes or withdraws the direct route of `shard` for the handles.
    fn sync_route(&mut self, shard: ShardId) {
        let usable = !self.handing_off.contains_key(&shard) && !self.buffers.contains_key(&shard);
        let route = match self.homes.get(&shard) {
            Some(h) if usable && *h != self.me => {
                let h = h.clone();
                Some(self.peer(&h))
            }
            _ => None,
        };
        let mut routes = self.direct.routes.write().expect("routes lock");
        match route {
            Some(r) => {
                routes.insert(shard, r);
            }
            None => {
                routes.remove(&shard);
            }
        }
    }

    fn sync_all_routes(&mut self) {
        let shards: BTreeSet<ShardId> = self
            .homes
            .keys()
            .copied()
            .chain(
                self.direct
                    .routes
                    .read()
                    .expect("routes lock")
                    .keys()
                    .copied(),
            )
            .collect();
        for s in shards {
            self.sync_route(s);
        }
    }

    async fn send_region(
        &mut self,
        node: &NodeAddress,
        msg: RegionWire<M>,
        trace: Option<&str>,
    ) -> bool {
        let r = self.peer(node);
        match r.send(&msg, trace, self.s.send_policy).await {
            Ok(()) => true,
            Err(e) => {
                debug!(to = %node, error = %e, "message to region not sent");
                false
            }
        }
    }

    async fn register(&mut self) {
        if self.coordinator.is_none() {
            return;
        }
        if self.members.has_predecessor(&self.me, self.uid) {
            // A previous incarnation of this node is still listed (Down, not removed):
            // the coordinator may still count shards as its. Host nothing until it is
            // gone; the next membership change or tick registers.
            debug!(type_name = %self.type_name, "waiting for this node's previous incarnation to be removed before registering");
            return;
        }
        // Shards still stopping for a hand-off are reported too: their entities run until
        // `ShardStopped`, so a coordinator that does not know of the hand-off (a new one)
        // must not allocate them elsewhere meanwhile.
        let shards = self
            .shards
            .iter()
            .map(|(s, sh)| {
                let ids = if self.s.remember_entities {
                    sh.entities.keys().cloned().collect()
                } else {
                    Vec::new()
                };
                (*s, ids)
            })
            .collect();
        self.send_coordinator(CoordinatorWire::Register {
            region: self.me.clone(),
            uid: self.uid,
            proxy: self.spawner.is_none(),
            leaving: self.shutdown.is_some(),
            shards,
        })
        .await;
    }

    fn buffer(&mut self, shard: ShardId, p: Pending<M>) {
        if self.buffered >= self.s.buffer_size {
            self.drop_msg("buffer full", &p.entity_id);
            return;
        }
        self.buffered += 1;
        self.buffers.entry(shard).or_default().push_back(p);
        self.direct
            .routes
            .write()
            .expect("routes lock")
            .remove(&shard);
    }

    async fn request_home(&mut self, shard: ShardId) {
        if !self.registered {
            return;
        }
        let now = Instant::now();
        if self
            .requested
            .get(&shard)
            .is_some_and(|t| now.duration_since(*t) < self.s.retry_interval)
        {
            return;
        }
        self.requested.insert(shard, now);
        self.send_coordinator(CoordinatorWire::GetShardHome {
            region: self.me.clone(),
            shard,
        })
        .await;
    }

    async fn route(&mut self, myself: &ActorRef<RegionMsg<M>>, p: Pending<M>) {
        let shard = shard_of(&p.entity_id, self.s.number_of_shards);
        if self.handing_off.contains_key(&shard) {
            self.buffer(shard, p);
            return;
        }
        match self.homes.get(&shard) {
            Some(h) if *h == self.me => self.deliver_local(myself, shard, p),
            Some(h) => {
                let h = h.clone();
                if p.hops >= MAX_HOPS {
                    self.drop_msg("forwarded too often", &p.entity_id);
                    return;
                }
                let Pending {
                    entity_id,
                    msg,
                    trace,
                    hops,
                } = p;
                let wire = RegionWire::Deliver {
                    shard,
                    entity_id,
                    hops: hops + 1,
                    msg,
                };
                if self.send_region(&h, wire, trace.as_deref()).await {
                    self.counters.sent_remote.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.buffer(shard, p);
                self.request_home(shard).await;
            }
        }
    }

    fn deliver_local(&mut self, myself: &ActorRef<RegionMsg<M>>, shard: ShardId, p: Pending<M>) {
        let sh = self.shards.entry(shard).or_insert_with(LocalShard::new);
        if sh.stopping {
            self.buffer(shard, p);
            return;
        }
        let Pending {
            entity_id,
            msg,
            trace,
            ..
        } = p;
        match sh.entities.get_mut(&entity_id) {
            Some(Slot::Running { actor, last }) => {
                *last = Instant::now();
                match actor.cast(EntityMsg {
                    message: msg,
                    trace_context: trace,
                }) {
                    Ok(()) => {
                        self.counters
                            .delivered_local
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ractor::MessagingErr::SendErr(m)) => {
                        // Stopped but its termination not seen yet: restart on it.
                        let mut q = VecDeque::new();
                        q.push_back((m.message, m.trace_context));
                        sh.entities.insert(entity_id, Slot::Stopping(q));
                    }
                    Err(_) => self.drop_msg("entity mailbox closed", &entity_id),
                }
            }
            Some(Slot::Starting(q)) | Some(Slot::Stopping(q)) => q.push_back((msg, trace)),
            None => {
                let mut q = VecDeque::new();
                q.push_back((msg, trace));
                sh.entities.insert(entity_id.clone(), Slot::Starting(q));
                self.spawn_entity(myself, shard, entity_id);
                self.publish_counts();
            }
        }
    }

    fn spawn_entity(&self, myself: &ActorRef<RegionMsg<M>>, shard: ShardId, entity_id: String) {
        let Some(spawner) = self.spawner.clone() else {
            error!("a proxy region cannot host entities");
            return;
        };
        let ctx = EntityContext {
            type_name: self.type_name.clone(),
            entity_id: entity_id.clone(),
            shard,
            node: self.me.clone(),
        };
        let me = myself.clone();
        let sup = myself.get_cell();
        debug!(type_name = %self.type_name, shard, entity_id, "starting entity");
        tokio::spawn(async move {
            let result = spawner(ctx, sup).await.map_err(|e| e.to_string());
            let started = result.as_ref().ok().cloned();
            if me
                .cast(RegionMsg::EntityStarted {
                    shard,
                    entity_id,
                    result,
                })
                .is_err()
                && let Some(a) = started
            {
                a.stop(None);
            }
        });
    }

    async fn flush(&mut self, myself: &ActorRef<RegionMsg<M>>, shard: ShardId) {
        if let Some(q) = self.buffers.remove(&shard) {
            self.buffered -= q.len();
            for p in q {
                self.route(myself, p).await;
            }
        }
        self.sync_route(shard);
    }

    fn record_pause(&mut self, shard: ShardId) {
        if let Some(t) = self.handing_off.remove(&shard) {
            self.handoffs_seen += 1;
            self.max_pause = self.max_pause.max(t.elapsed());
            self.check_shutdown_done();
        }
        self.sync_route(shard);
    }

    async fn host_shard(
        &mut self,
        myself: &ActorRef<RegionMsg<M>>,
        shard: ShardId,
        entities: Vec<String>,
    ) {
        if self.spawner.is_none() {
            error!(
                shard,
                "the coordinator allocated a shard to a proxy region; ignored"
            );
            return;
        }
        self.homes.insert(shard, self.me.clone());
        self.record_pause(shard);
        let sh = self.shards.entry(shard).or_insert_with(LocalShard::new);
        let mut to_start = Vec::new();
        if !sh.stopping {
            for id in entities {
                if !sh.entities.contains_key(&id) {
                    sh.entities
                        .insert(id.clone(), Slot::Starting(VecDeque::new()));
                    to_start.push(id);
                }
            }
        }
        for id in to_start {
            self.spawn_entity(myself, shard, id);
        }
        self.send_coordinator(CoordinatorWire::ShardStarted {
            region: self.me.clone(),
            shard,
        })
        .await;
        self.flush(myself, shard).await;
    }

    /// Starts stopping a local shard's entities for a hand-off.
    async fn hand_off(&mut self, shard: ShardId) {
        self.handing_off.entry(shard).or_insert_with(Instant::now);
        self.sync_route(shard);
        let Some(sh) = self.shards.get_mut(&shard) else {
            self.send_coordinator(CoordinatorWire::ShardStopped {
                region: self.me.clone(),
                shard,
                entities: Vec::new(),
            })
            .await;
            return;
        };
        if sh.stopping {
            return;
        }
        sh.stopping = true;
        sh.handoff_ids = sh.entities.keys().cloned().collect();
        let mut moved: Vec<Pending<M>> = Vec::new();
        for (id, slot) in sh.entities.iter_mut() {
            match slot {
                Slot::Running { actor, .. } => {
                    let _ = actor.drain();
                    *slot = Slot::Stopping(VecDeque::new());
                }
                Slot::Starting(q) | Slot::Stopping(q) => {
                    for (msg, trace) in q.drain(..) {
                        moved.push(Pending {
                            entity_id: id.clone(),
                            msg,
                            trace,
                            hops: 0,
                        });
                    }
                }
            }
        }
        // Queued before anything now in the region buffer: put them first.
        if !moved.is_empty() {
            self.buffered += moved.len();
            let b = self.buffers.entry(shard).or_default();
            for p in moved.into_iter().rev() {
                b.push_front(p);
            }
        }
        self.check_stopped(shard).await;
    }

    async fn check_stopped(&mut self, shard: ShardId) {
        let done = self
            .shards
            .get(&shard)
            .is_some_and(|sh| sh.stopping && sh.entities.is_empty());
        if !done {
            return;
        }
        let sh = self.shards.remove(&shard).expect("present");
        self.counters.handoffs.fetch_add(1, Ordering::Relaxed);
        if self.homes.get(&shard) == Some(&self.me) {
            self.homes.remove(&shard);
        }
        self.sync_route(shard);
        let entities = if self.s.remember_entities {
            sh.handoff_ids
        } else {
            Vec::new()
        };
        debug!(shard, "shard stopped for hand-off");
        self.send_coordinator(CoordinatorWire::ShardStopped {
            region: self.me.clone(),
            shard,
            entities,
        })
        .await;
        self.check_shutdown_done();
    }

    fn check_shutdown_done(&mut self) {
        // Done when nothing is hosted here and every shard that was has a new home
        // announced (so a coordinator on this node may stop), or when no other member
        // with the role could take them.
        let others = self.members.members.iter().any(|m| {
            m.address != self.me
                && m.status == MemberStatus::Up
                && m.has_role(self.s.role.as_deref())
        });
        let done = self.shutdown.as_ref().is_some_and(|s| {
            s.acked
                && self.shards.is_empty()
                && (!others || !s.own.iter().any(|x| self.handing_off.contains_key(x)))
        });
        if done {
            for p in self.shutdown.as_mut().expect("present").ports.drain(..) {
                let _ = p.send(());
            }
        }
    }

    async fn on_wire(
        &mut self,
        myself: &ActorRef<RegionMsg<M>>,
        from: NodeAddress,
        trace: Option<Box<str>>,
        wire: RegionWire<M>,
    ) {
        let from_coordinator = self.coordinator.as_ref() == Some(&from);
        match wire {
            RegionWire::Deliver {
                entity_id,
                hops,
                msg,
                ..
            } => {
                self.route(
                    myself,
                    Pending {
                        entity_id,
                        msg,
                        trace,
                        hops,
                    },
                )
                .await;
            }
            RegionWire::GetState { reply_to, request } => {
                let state = state_of(self);
                self.send_region(&reply_to, RegionWire::State { request, state }, None)
                    .await;
            }
            RegionWire::State { request, state } => {
                if let Some(p) = self.pending_stats.get_mut(&request) {
                    p.waiting.remove(&from);
                    p.states.push(state);
                    if p.waiting.is_empty() {
                        let p = self.pending_stats.remove(&request).expect("present");
                        let _ = p.port.send(ClusterShardStats::from_states(
                            &self.type_name,
                            &p.states,
                            Vec::new(),
                        ));
                    }
                }
            }
            RegionWire::ShardHome { shard, home }
                if !from_coordinator && self.prev_coordinator.as_ref() == Some(&from) =>
            {
                // A home the previous coordinator decided before it stopped: informative
                // only (a stale one costs a forward), so take it.
                if home != self.me {
                    self.homes.insert(shard, home);
                    self.record_pause(shard);
                    self.flush(myself, shard).await;
                }
            }
            _ if !from_coordinator => {
                debug!(from = %from, "coordinator message from a node that is not the coordinator; ignored");
            }
            RegionWire::RegisterAck { homes } => {
                if !self.registered {
                    info!(type_name = %self.type_name, coordinator = %from, "region registered");
                }
                self.registered = true;
                self.counters.registered.store(true, Ordering::Relaxed);
                // The coordinator's allocation is authoritative: it also ends hand-offs
                // that a previous coordinator began and never finished telling us about.
                for (s, h) in homes {
                    let stopping_here = self.shards.get(&s).is_some_and(|sh| sh.stopping);
                    if !stopping_here && (h != self.me || self.shards.contains_key(&s)) {
                        self.homes.insert(s, h);
                        self.record_pause(s);
                    }
                    self.sync_route(s);
                }
                let shards: Vec<ShardId> = self.buffers.keys().copied().collect();
                for s in shards {
                    if self.homes.contains_key(&s) {
                        self.flush(myself, s).await;
                    } else {
                        self.request_home(s).await;
                    }
                }
                if let Some(sd) = &self.shutdown
                    && !sd.acked
                {
                    self.send_coordinator(CoordinatorWire::GracefulShutdown {
                        region: self.me.clone(),
                    })
                    .await;
                }
            }
            RegionWire::HostShard { .. } if !self.registered => {
                // Sent before this region registered: meant for a predecessor at this
                // address, or re-sent by the coordinator once this region is known.
                debug!(node = %self.me, "HostShard before registration; ignored");
            }
            RegionWire::HostShard { shard, entities } => {
                self.host_shard(myself, shard, entities).await
            }
            RegionWire::ShardHome { shard, home } => {
                debug!(node = %self.me, shard, home = %home, moving = self.handing_off.contains_key(&shard), "shard home");
                if home == self.me && !self.shards.contains_key(&shard) {
                    // The coordinator counts a shard here that this region does not host
                    // (its `ShardStopped` was lost, or the home meant a predecessor at
                    // this address). Hosting it now could host it twice; say it is not
                    // here, so the coordinator allocates it with a `HostShard`.
                    if self.registered {
                        warn!(
                            shard,
                            "the coordinator names this region the home of a shard it does not host; reporting it stopped"
                        );
                        self.send_coordinator(CoordinatorWire::ShardStopped {
                            region: self.me.clone(),
                            shard,
                            entities: Vec::new(),
                        })
                        .await;
                    }
                    return;
                }
                if home != self.me
                    && let Some(sh) = self.shards.get(&shard)
                    && !sh.stopping
                {
                    warn!(shard, home = %home, "shard hosted here but homed elsewhere; stopping it");
                    self.hand_off(shard).await;
                }
                self.homes.insert(shard, home);
                self.record_pause(shard);
                self.requested.remove(&shard);
                self.flush(myself, shard).await;
            }
            RegionWire::BeginHandOff { shard } => {
                debug!(node = %self.me, shard, "begin hand-off");
                self.handing_off.entry(shard).or_insert_with(Instant::now);
                self.sync_route(shard);
                self.send_coordinator(CoordinatorWire::BeginHandOffAck {
                    region: self.me.clone(),
                    shard,
                })
                .await;
            }
            RegionWire::HandOff { shard } => self.hand_off(shard).await,
            RegionWire::CoordinatorStarted => {
                self.registered = false;
                self.register().await;
            }
            RegionWire::GracefulShutdownAck => {
                if let Some(s) = &mut self.shutdown {
                    s.acked = true;
                }
                self.check_shutdown_done();
            }
        }
    }

    async fn on_members(&mut self, myself: &ActorRef<RegionMsg<M>>, m: Membership) {
        let gone: HashSet<NodeAddress> = self
            .members
            .members
            .iter()
            .map(|x| x.address.clone())
            .filter(|a| !m.is_alive(a))
            .chain(
                m.members
                    .iter()
                    .filter(|x| x.status >= MemberStatus::Down)
                    .map(|x| x.address.clone()),
            )
            .collect();
        self.members = m;
        self.homes.retain(|_, h| !gone.contains(h));
        self.peers.retain(|a, _| !gone.contains(a));
        self.sync_all_routes();
        let done: Vec<u64> = self
            .pending_stats
            .iter_mut()
            .filter_map(|(id, p)| {
                p.waiting.retain(|a| !gone.contains(a));
                p.waiting.is_empty().then_some(*id)
            })
            .collect();
        for id in done {
            let p = self.pending_stats.remove(&id).expect("present");
            let _ = p.port.send(ClusterShardStats::from_states(
                &self.type_name,
                &p.states,
                Vec::new(),
            ));
        }
        let c = self.members.coordinator_node(self.s.role.as_deref());
        if c != self.coordinator {
            info!(type_name = %self.type_name, coordinator = ?c.as_ref().map(|a| a.to_string()), "shard coordinator changed");
            self.prev_coordinator = std::mem::replace(&mut self.coordinator, c.clone());
            self.registered = false;
            self.coord_ref = c.map(|n| {
                self.remoting
                    .resolve(&RemoteRef::new(n, self.s.coordinator_name()))
            });
            self.register().await;
        }
        let _ = myself;
    }

    async fn on_tick(&mut self, myself: &ActorRef<RegionMsg<M>>) {
        if !self.registered {
            self.register().await;
        } else {
            // Shards with waiting messages, and hand-offs whose end was not announced
            // (e.g. the coordinator moved meanwhile): ask where they live.
            let now = Instant::now();
            let retry = self.s.retry_interval;
            let shards: BTreeSet<ShardId> = self
                .buffers
                .keys()
                .copied()
                .chain(
                    self.handing_off
                        .iter()
                        .filter(|(_, t)| now.duration_since(**t) >= retry)
                        .map(|(s, _)| *s),
                )
                .collect();
            for s in shards {
                self.request_home(s).await;
            }
            if !self.remembered_new.is_empty() {
                let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
                for (s, id) in self.remembered_new.drain(..) {
                    by_shard.entry(s).or_default().push(id);
                }
                self.send_coordinator(CoordinatorWire::EntitiesStarted {
                    region: self.me.clone(),
                    entities: by_shard.into_iter().collect(),
                })
                .await;
            }
            if let Some(sd) = &self.shutdown
                && !sd.acked
            {
                self.send_coordinator(CoordinatorWire::GracefulShutdown {
                    region: self.me.clone(),
                })
                .await;
            }
        }
        if let Some(idle) = self.s.passivate_idle {
            let now = Instant::now();
            for sh in self.shards.values_mut().filter(|sh| !sh.stopping) {
                for slot in sh.entities.values_mut() {
                    if let Slot::Running { actor, last } = slot
                        && now.duration_since(*last) >= idle
                    {
                        let _ = actor.drain();
                        *slot = Slot::Stopping(VecDeque::new());
                    }
                }
            }
        }
        let _ = myself;
    }

    fn on_entity_started(
        &mut self,
        shard: ShardId,
        entity_id: String,
        result: Result<ActorRef<EntityMsg<M>>, String>,
    ) -> Option<ShardId> {
        let remember = self.s.remember_entities;
        let Some(sh) = self.shards.get_mut(&shard) else {
            if let Ok(a) = result {
                a.stop(None);
            }
            return None;
        };
        let queue = match sh.entities.remove(&entity_id) {
            Some(Slot::Starting(q)) | Some(Slot::Stopping(q)) => q,
            Some(running @ Slot::Running { .. }) => {
                sh.entities.insert(entity_id, running);
                if let Ok(a) = result {
                    a.stop(None);
                }
                return None;
            }
            None => VecDeque::new(),
        };
        match result {
            Ok(actor) => {
                self.by_actor
                    .insert(actor.get_id(), (shard, entity_id.clone()));
                if remember {
                    self.remembered_new.push((shard, entity_id.clone()));
                }
                if sh.stopping {
                    let _ = actor.drain();
                    sh.entities
                        .insert(entity_id, Slot::Stopping(VecDeque::new()));
                } else {
                    let n = queue.len() as u64;
                    for (msg, trace) in queue {
                        let _ = actor.cast(EntityMsg {
                            message: msg,
                            trace_context: trace,
                        });
                    }
                    self.counters
                        .delivered_local
                        .fetch_add(n, Ordering::Relaxed);
                    sh.entities.insert(
                        entity_id,
                        Slot::Running {
                            actor,
                            last: Instant::now(),
                        },
                    );
                }
                None
            }
            Err(e) => {
                error!(shard, entity_id, error = %e, "entity did not start; its messages are dropped");
                self.counters
                    .dropped
                    .fetch_add(queue.len() as u64, Ordering::Relaxed);
                sh.stopping.then_some(shard)
            }
        }
    }

    /// An entity terminated or failed; returns the shard if it may now be stopped.
    fn on_entity_gone(
        &mut self,
        myself: &ActorRef<RegionMsg<M>>,
        id: ActorId,
        failed: bool,
    ) -> Option<ShardId> {
        let (shard, entity_id) = self.by_actor.remove(&id)?;
        debug!(type_name = %self.type_name, shard, entity_id, failed, "entity stopped");
        let sh = self.shards.get_mut(&shard)?;
        let slot = sh.entities.remove(&entity_id);
        if sh.stopping {
            return Some(shard);
        }
        match slot {
            Some(Slot::Stopping(q)) if !q.is_empty() => {
                sh.entities.insert(entity_id.clone(), Slot::Starting(q));
                self.spawn_entity(myself, shard, entity_id);
            }
            Some(Slot::Running { .. }) if failed && self.s.remember_entities => {
                warn!(
                    shard,
                    entity_id, "entity failed; restarting it (remember-entities)"
                );
                sh.entities
                    .insert(entity_id.clone(), Slot::Starting(VecDeque::new()));
                self.spawn_entity(myself, shard, entity_id);
            }
            Some(Slot::Running { .. }) if failed => {
                warn!(
                    shard,
                    entity_id, "entity failed; it restarts on its next message"
                );
            }
            Some(other) => {
                // Terminated while a newer incarnation is starting: keep that one.
                if matches!(other, Slot::Starting(_)) {
                    sh.entities.insert(entity_id, other);
                }
            }
            None => {}
        }
        None
    }

    fn cluster_stats(
        &mut self,
        myself: &ActorRef<RegionMsg<M>>,
        port: RpcReplyPort<ClusterShardStats>,
    ) -> Vec<NodeAddress> {
        let mut states = Vec::new();
        if self.spawner.is_some() {
            states.push(state_of(self));
        }
        let waiting: HashSet<NodeAddress> = self
            .members
            .active_with_role(self.s.role.as_deref())
            .map(|m| m.address.clone())
            .filter(|a| *a != self.me)
            .collect();
        if waiting.is_empty() {
            let _ = port.send(ClusterShardStats::from_states(
                &self.type_name,
                &states,
                Vec::new(),
            ));
            return Vec::new();
        }
        self.next_request += 1;
        let request = self.next_request;
        let targets: Vec<NodeAddress> = waiting.iter().cloned().collect();
        self.pending_stats.insert(
            request,
            PendingStats {
                port,
                waiting,
                states,
            },
        );
        myself.send_after(self.s.stats_timeout, move || {
            RegionMsg::StatsTimeout(request)
        });
        targets
    }
}

impl<M> Actor for RegionActor<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Msg = RegionMsg<M>;
    type State = Region<M>;
    type Arguments = RegionArgs<M>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RegionArgs<M>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let s = args.settings;
        let me = args.remoting.self_address().address.clone();
        let uid = args.remoting.self_address().uid;
        args.remoting
            .register_with(&s.region_name(), myself.clone(), |inb| {
                let trace = inb.trace_context.map(Into::into);
                Ok(match postcard::from_bytes(inb.payload)? {
                    RegionWire::Deliver {
                        entity_id,
                        hops,
                        msg,
                        ..
                    } => RegionMsg::Inbound {
                        entity_id,
                        msg,
                        trace,
                        hops,
                    },
                    wire => RegionMsg::Wire {
                        from: inb.from.address.clone(),
                        trace,
                        wire,
                    },
                })
            });
        let mut membership = args.membership.clone();
        let first = membership.borrow_and_update().clone();
        let me_ref = myself.clone();
        let watcher = tokio::spawn(async move {
            while membership.changed().await.is_ok() {
                let m = membership.borrow_and_update().clone();
                if me_ref.cast(RegionMsg::Members(m)).is_err() {
                    break;
                }
            }
        });
        let ticker = myself.send_interval(s.retry_interval, || RegionMsg::Tick);
        let tasks = vec![watcher, ticker];
        let _ = myself.cast(RegionMsg::Members(first));
        info!(type_name = %s.type_name, node = %me, proxy = args.spawner.is_none(), "shard region started");
        Ok(Region {
            type_name: s.type_name.clone().into(),
            s,
            spawner: args.spawner,
            remoting: args.remoting,
            me,
            uid,
            members: Membership::default(),
            coordinator: None,
            prev_coordinator: None,
            coord_ref: None,
            registered: false,
            homes: HashMap::new(),
            handing_off: HashMap::new(),
            buffers: BTreeMap::new(),
            buffered: 0,
            requested: HashMap::new(),
            shards: BTreeMap::new(),
            by_actor: HashMap::new(),
            peers: HashMap::new(),
            counters: args.counters,
            direct: args.direct,
            handoffs_seen: 0,
            max_pause: Duration::ZERO,
            shutdown: None,
            next_request: 0,
            pending_stats: HashMap::new(),
            remembered_new: Vec::new(),
            tasks,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.remoting.unregister(&st.s.region_name());
        for t in &st.tasks {
            t.abort();
        }
        for sh in st.shards.values() {
            for slot in sh.entities.values() {
                if let Slot::Running { actor, .. } = slot {
                    actor.stop(None);
                }
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Tells and inbound deliveries change the counts only when they start an entity
        // (counted there); everything else may add or remove shards and entities.
        let recount = !matches!(msg, RegionMsg::Tell { .. } | RegionMsg::Inbound { .. });
        match msg {
            RegionMsg::Tell {
                shard,
                entity_id,
                msg,
                trace,
            } => {
                st.route(
                    &myself,
                    Pending {
                        entity_id,
                        msg,
                        trace,
                        hops: 0,
                    },
                )
                .await;
                st.direct.queued[shard as usize].fetch_sub(1, Ordering::AcqRel);
            }
            RegionMsg::Inbound {
                entity_id,
                msg,
                trace,
                hops,
            } => {
                st.route(
                    &myself,
                    Pending {
                        entity_id,
                        msg,
                        trace,
                        hops,
                    },
                )
                .await
            }
            RegionMsg::Wire { from, trace, wire } => st.on_wire(&myself, from, trace, wire).await,
            RegionMsg::Members(m) => st.on_members(&myself, m).await,
            RegionMsg::Tick => st.on_tick(&myself).await,
            RegionMsg::EntityStarted {
                shard,
                entity_id,
                result,
            } => {
                if let Some(s) = st.on_entity_started(shard, entity_id, result) {
                    st.check_stopped(s).await;
                }
            }
            RegionMsg::GetState(port) => {
                let _ = port.send(state_of(st));
            }
            RegionMsg::GetClusterStats(port) => {
                let targets = st.cluster_stats(&myself, port);
                let request = st.next_request;
                for t in targets {
                    let m = RegionWire::GetState {
                        reply_to: st.me.clone(),
                        request,
                    };
                    st.send_region(&t, m, None).await;
                }
            }
            RegionMsg::StatsTimeout(request) => {
                if let Some(p) = st.pending_stats.remove(&request) {
                    let mut failed: Vec<String> = p.waiting.iter().map(|a| a.to_string()).collect();
                    failed.sort();
                    let _ = p.port.send(ClusterShardStats::from_states(
                        &st.type_name,
                        &p.states,
                        failed,
                    ));
                }
            }
            RegionMsg::GracefulShutdown(port) => {
                if st.spawner.is_none() {
                    let _ = port.send(());
                    return Ok(());
                }
                match &mut st.shutdown {
                    Some(s) => s.ports.push(port),
                    None => {
                        let own = st.shards.keys().copied().collect();
                        st.shutdown = Some(Shutdown {
                            acked: false,
                            own,
                            ports: vec![port],
                        })
                    }
                }
                if st.registered {
                    st.send_coordinator(CoordinatorWire::GracefulShutdown {
                        region: st.me.clone(),
                    })
                    .await;
                }
                st.check_shutdown_done();
            }
        }
        if recount {
            st.publish_counts();
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let gone = match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => Some((cell.get_id(), false)),
            SupervisionEvent::ActorFailed(cell, err) => {
                warn!(error = %err, "entity failed");
                Some((cell.get_id(), true))
            }
            _ => None,
        };
        if let Some((id, failed)) = gone
            && let Some(shard) = st.on_entity_gone(&myself, id, failed)
        {
            st.check_stopped(shard).await;
        }
        st.publish_counts();
        Ok(())
    }
}

/// Why a region could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The region actor has stopped.
    #[error("the shard region has stopped")]
    Stopped,
    /// The region actor could not be spawned.
    #[error("cannot start the shard region: {0}")]
    Spawn(#[from] SpawnErr),
}

/// Handle to the shard region of one entity type on this node; cheap to clone.
pub struct ShardRegion<M> {
    actor: ActorRef<RegionMsg<M>>,
    type_name: Arc<str>,
    hosting: bool,
    counters: Arc<RegionCounters>,
    direct: Arc<Direct<M>>,
    stats_timeout: Duration,
}

impl<M> Clone for ShardRegion<M> {
    fn clone(&self) -> Self {
        Self {
            actor: self.actor.clone(),
            type_name: self.type_name.clone(),
            hosting: self.hosting,
            counters: self.counters.clone(),
            direct: self.direct.clone(),
            stats_timeout: self.stats_timeout,
        }
    }
}

impl<M> ShardRegion<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts the region of `settings.type_name` on a node with the type's role: it
    /// hosts the shards the coordinator allocates to it and creates their entities with
    /// `factory`. The coordinator runs elsewhere (as a cluster singleton, see
    /// [`ShardRegion::start_on_node`]).
    pub async fn start<F>(
        settings: ShardingSettings,
        factory: F,
        remoting: Remoting,
        membership: watch::Receiver<Membership>,
    ) -> Result<Self, RegionError>
    where
        F: EntityFactory<Message = M>,
    {
        let factory = Arc::new(factory);
        let spawner: Spawner<M> = Arc::new(move |ctx: EntityContext, sup: ActorCell| {
            let (actor, args) = factory.create(&ctx);
            Box::pin(async move {
                Actor::spawn_linked(None, actor, args, sup)
                    .await
                    .map(|(a, _)| a)
            }) as SpawnFuture<M>
        });
        Self::spawn(settings, Some(spawner), remoting, membership).await
    }

    /// Starts a proxy-only region (for nodes without the type's role): it routes and
    /// buffers but never hosts shards.
    pub async fn start_proxy(
        settings: ShardingSettings,
        remoting: Remoting,
        membership: watch::Receiver<Membership>,
    ) -> Result<Self, RegionError> {
        Self::spawn(settings, None, remoting, membership).await
    }

    /// Sends `msg` to entity `entity_id` (started on its first message), wherever it lives.
    pub fn tell(&self, entity_id: impl Into<String>, msg: M) -> Result<(), RegionError> {
        self.tell_traced(entity_id, msg, None)
    }

    /// Like [`ShardRegion::tell`], carrying a W3C `traceparent` to the entity.
    ///
    /// When the shard's home is another node, known and settled, the message is
    /// serialized here and queued on that node's link without passing through the
    /// region actor (unless messages of this handle for the shard still wait in the
    /// actor, which keeps the order); otherwise the region actor routes it (local
    /// delivery without serialization, or buffering).
    pub fn tell_traced(
        &self,
        entity_id: impl Into<String>,
        msg: M,
        trace_context: Option<&str>,
    ) -> Result<(), RegionError> {
        let mut entity_id = entity_id.into();
        let mut msg = msg;
        let shard = shard_of(&entity_id, self.direct.shards);
        let queued = &self.direct.queued[shard as usize];
        if queued.load(Ordering::Acquire) == 0 {
            let route = self
                .direct
                .routes
                .read()
                .expect("routes lock")
                .get(&shard)
                .cloned();
            if let Some(r) = route {
                let wire = RegionWire::Deliver {
                    shard,
                    entity_id,
                    hops: 1,
                    msg,
                };
                if let Some(Ok(())) = r
                    .send(&wire, trace_context, SendPolicy::Fail)
                    .now_or_never()
                {
                    self.counters.sent_remote.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                // Queue full or link down: let the actor handle it (it may wait).
                (entity_id, msg) = match wire {
                    RegionWire::Deliver { entity_id, msg, .. } => (entity_id, msg),
                    _ => unreachable!("built as Deliver above"),
                };
            }
        }
        queued.fetch_add(1, Ordering::AcqRel);
        self.actor
            .cast(RegionMsg::Tell {
                shard,
                entity_id,
                msg,
                trace: trace_context.map(Into::into),
            })
            .map_err(|_| {
                queued.fetch_sub(1, Ordering::AcqRel);
                RegionError::Stopped
            })
    }

    async fn spawn(
        settings: ShardingSettings,
        spawner: Option<Spawner<M>>,
        remoting: Remoting,
        membership: watch::Receiver<Membership>,
    ) -> Result<Self, RegionError> {
        let counters = Arc::new(RegionCounters::default());
        let direct = Arc::new(Direct::new(settings.number_of_shards));
        let type_name: Arc<str> = settings.type_name.clone().into();
        let stats_timeout = settings.stats_timeout;
        // The region's mailbox depth as far as it is counted: local tells still waiting
        // for the actor (the hot path; remote deliveries and protocol messages are not).
        let d = direct.clone();
        remoting.observe_mailbox(&settings.region_name(), move || {
            d.queued
                .iter()
                .map(|q| q.load(Ordering::Relaxed) as i64)
                .sum()
        });
        let hosting = spawner.is_some();
        let (actor, _) = Actor::spawn(
            None,
            RegionActor(std::marker::PhantomData),
            RegionArgs {
                settings,
                spawner,
                remoting,
                membership,
                counters: counters.clone(),
                direct: direct.clone(),
            },
        )
        .await?;
        Ok(Self {
            actor,
            type_name,
            hosting,
            counters,
            direct,
            stats_timeout,
        })
    }
}

impl<M: Send + 'static> ShardRegion<M> {
    /// The entity type.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Counters, read without asking the actor.
    pub fn counters(&self) -> &RegionCounters {
        &self.counters
    }

    /// The counters, shared (for instruments that read them at collection time).
    pub fn shared_counters(&self) -> Arc<RegionCounters> {
        self.counters.clone()
    }

    /// Whether this region hosts shards (false for a proxy).
    pub fn is_host(&self) -> bool {
        self.hosting
    }

    /// Shards and entities on this node.
    pub async fn state(&self) -> Result<RegionState, QueryError> {
        self.actor
            .call(RegionMsg::GetState, None)
            .await
            .ok()
            .and_then(|r| r.success_or(()).ok())
            .ok_or(QueryError::RegionStopped)
    }

    /// Per node of the type's role: address, shard count, entity count (nodes that do
    /// not answer within the stats timeout are listed in `failed`).
    pub async fn cluster_stats(&self) -> Result<ClusterShardStats, QueryError> {
        self.actor
            .call(RegionMsg::GetClusterStats, Some(self.stats_timeout * 2))
            .await
            .ok()
            .and_then(|r| r.success_or(()).ok())
            .ok_or(QueryError::RegionStopped)
    }

    /// Hands off every shard of this region to other regions and returns when none is
    /// left here (the coordinated-shutdown task of a graceful leave). New shards are
    /// no longer allocated to this region.
    pub async fn graceful_handoff(&self) -> Result<(), QueryError> {
        self.actor
            .call(RegionMsg::GracefulShutdown, None)
            .await
            .ok()
            .and_then(|r| r.success_or(()).ok())
            .ok_or(QueryError::RegionStopped)
    }

    /// Stops the region (and its entities) without a hand-off.
    pub fn stop(&self) {
        self.actor.stop(None);
    }

    /// The region actor (for supervision or linking).
    pub fn actor(&self) -> &ActorRef<RegionMsg<M>> {
        &self.actor
    }
}
