//! Distributed publish-subscribe: owns the mediator that runs on every node
//! ([`DistributedPubSub`], registered on the transport as [`MEDIATOR`]), its wire format,
//! the per-node subscription registry and the delivery to local subscribers.
//!
//! Design:
//! - **Buckets.** Each mediator owns one bucket: the topics that have local subscribers
//!   (plain, and per group), with a version bumped at every change. The owner pushes the
//!   bucket to every other live member at once when it changes and to a member that
//!   becomes live, and announces its version to every member each `gossip_interval`; a
//!   member that holds an older version (or none) asks for the bucket. Buckets of
//!   members that are Exiting, Down or gone are dropped.
//! - **Publish.** The message is serialized once (postcard); local subscribers get it
//!   straight away, and one frame (topic + those bytes) goes to each other node whose
//!   bucket lists the topic, and to no other node. The receiving node fans it out to its
//!   local subscribers in the transport's reader task, without another hop. The W3C
//!   trace context of the publish travels in the transport envelope and reaches every
//!   subscriber in its [`Delivery`]. On the receiving node a sampled context gets a
//!   `pubsub.deliver` span (topic as `messaging.destination.name`) around the fan-out, and
//!   the subscribers get that span's context; an unsampled one is handed on unchanged.
//! - **Mailbox depth.** Every message into the mediator's mailbox is counted (the remote
//!   control frames, the `Received` acknowledgement of each remote publish, ticks, snapshots,
//!   subscriptions), and `/metrics` shows the depth as
//!   `actor_mailbox_depth{actor_name="pubsub"}`.
//! - **Groups.** A subscriber may join a group of a topic. [`DistributedPubSub::send_to_group`]
//!   delivers a message to exactly one subscriber of the group: on this node when it has
//!   one (local affinity), else on a random node that has one; there it picks the next
//!   subscriber round-robin. Plain publishes do not reach group subscribers (Akka's rule).
//! - **Liveness.** A subscriber whose actor has stopped is removed when a delivery to it
//!   fails and by a sweep every `gossip_interval`; when that empties a topic the bucket
//!   changes and other nodes stop sending it.
//! - Delivery is at most once, like Akka's: a publish that races with a subscription
//!   change, or meets a full or broken link, is lost (and counted).
//!
//! Frames carried to the mediator (payload of one transport envelope): a kind byte, then
//! for `0` a postcard [`MediatorProto`](self) control message; for `1` (publish) a
//! `u32` little-endian topic length, the topic and the message bytes; for `2` (group
//! send) the same with the group after the topic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SpawnErr,
};
use rand::seq::IndexedRandom;
use runtime::cluster::{Cluster, ClusterSnapshot};
use runtime::membership::MemberStatus;
use runtime::metrics::MailboxDepth;
use runtime::remote::Inbound;
use runtime::{NodeAddress, Remoting, SendError, SendPolicy, UniqueAddress};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use telemetry::MessageSpan;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::view;

/// Default registered name of the mediator on every node.
pub const MEDIATOR: &str = "pubsub";

const KIND_CONTROL: u8 = 0;
const KIND_PUBLISH: u8 = 1;
const KIND_GROUP: u8 = 2;

/// Settings of the mediator.
#[derive(Clone, Debug)]
pub struct PubSubSettings {
    /// Registered name on the transport (the same on every node).
    pub name: String,
    /// Interval of version announcements and of the subscriber liveness sweep.
    pub gossip_interval: Duration,
}

impl Default for PubSubSettings {
    fn default() -> Self {
        Self {
            name: MEDIATOR.to_string(),
            gossip_interval: Duration::from_secs(1),
        }
    }
}

/// A published message as handed to a subscriber.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The topic it was published to.
    pub topic: &'a str,
    /// W3C traceparent of the publisher, if any.
    pub trace_context: Option<&'a str>,
    /// The serialized (postcard) message.
    pub payload: &'a [u8],
}

impl Delivery<'_> {
    /// Decodes the message.
    pub fn decode<M: DeserializeOwned>(&self) -> Result<M, postcard::Error> {
        postcard::from_bytes(self.payload)
    }
}

/// Identity of a subscriber, to unsubscribe it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SubscriberId {
    /// A local actor.
    Actor(ActorId),
    /// Something else (e.g. a cluster client), named by the code that subscribed it.
    External(String),
}

impl fmt::Display for SubscriberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Actor(a) => write!(f, "actor {a}"),
            Self::External(s) => write!(f, "{s}"),
        }
    }
}

/// Delivers to one subscriber; returns false when the subscriber is gone.
type DeliverFn = Arc<dyn Fn(&Delivery<'_>) -> bool + Send + Sync>;
/// Whether a subscriber is still alive.
type AliveFn = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct Sub {
    id: SubscriberId,
    deliver: DeliverFn,
    alive: AliveFn,
}

#[derive(Default)]
struct LocalTopic {
    plain: Vec<Sub>,
    groups: BTreeMap<String, Vec<Sub>>,
}

impl LocalTopic {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    fn entry(&self) -> TopicEntry {
        TopicEntry {
            plain: !self.plain.is_empty(),
            groups: self.groups.keys().cloned().collect(),
        }
    }
}

/// What one node's bucket says about one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TopicEntry {
    plain: bool,
    groups: BTreeSet<String>,
}

/// Control messages between mediators.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum MediatorProto {
    /// The sender's whole bucket.
    Bucket {
        version: u64,
        topics: BTreeMap<String, TopicEntry>,
    },
    /// The sender's bucket version.
    Version { version: u64 },
    /// "Send me your bucket."
    RequestBucket,
}

/// Where remote subscribers are, derived from the other nodes' buckets.
#[derive(Default)]
struct RemoteIndex {
    plain: HashMap<String, Vec<NodeAddress>>,
    groups: HashMap<(String, String), Vec<NodeAddress>>,
}

/// Counters of one mediator.
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    round_robin: AtomicUsize,
}

/// A snapshot of a mediator's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PubSubStats {
    /// Publishes and group sends made on this node.
    pub published: u64,
    /// Publish/group frames this node sent to other nodes (one per node per publish).
    pub frames_sent: u64,
    /// Publish/group frames this node received from other nodes.
    pub frames_received: u64,
    /// Messages handed to local subscribers.
    pub delivered: u64,
    /// Messages lost: no subscriber left, a full or broken link, a failed decode.
    pub dropped: u64,
}

/// What a publish reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Local subscribers that got the message.
    pub local: usize,
    /// Other nodes a frame was queued for.
    pub nodes: usize,
}

/// Why a publish or subscription failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubSubError {
    /// The message could not be serialized.
    #[error("cannot serialize the message: {0}")]
    Serialize(String),
    /// The mediator has stopped.
    #[error("the pub-sub mediator has stopped")]
    Stopped,
}

struct Shared {
    name: Arc<str>,
    /// This node, for span attributes.
    node: Arc<str>,
    mailbox: MailboxDepth,
    local: RwLock<HashMap<String, LocalTopic>>,
    remote: RwLock<Arc<RemoteIndex>>,
    counters: Counters,
}

impl Shared {
    /// Hands a publish to the local plain subscribers; returns the number reached and
    /// the subscribers found dead.
    fn deliver_plain(&self, d: &Delivery<'_>) -> (usize, Vec<SubscriberId>) {
        let local = self.local.read().expect("pubsub lock");
        let Some(t) = local.get(d.topic) else {
            return (0, Vec::new());
        };
        let mut n = 0;
        let mut dead = Vec::new();
        for s in &t.plain {
            if (s.deliver)(d) {
                n += 1;
            } else {
                dead.push(s.id.clone());
            }
        }
        self.counters
            .delivered
            .fetch_add(n as u64, Ordering::Relaxed);
        (n, dead)
    }

    /// Hands a message to one local subscriber of the group (round-robin); false when
    /// there is none alive.
    fn deliver_group(&self, group: &str, d: &Delivery<'_>) -> (bool, Vec<SubscriberId>) {
        let local = self.local.read().expect("pubsub lock");
        let Some(subs) = local.get(d.topic).and_then(|t| t.groups.get(group)) else {
            return (false, Vec::new());
        };
        let start = self.counters.round_robin.fetch_add(1, Ordering::Relaxed);
        let mut dead = Vec::new();
        for i in 0..subs.len() {
            let s = &subs[(start + i) % subs.len()];
            if (s.deliver)(d) {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                return (true, dead);
            }
            dead.push(s.id.clone());
        }
        (false, dead)
    }

    fn has_local_group(&self, topic: &str, group: &str) -> bool {
        self.local
            .read()
            .expect("pubsub lock")
            .get(topic)
            .is_some_and(|t| t.groups.contains_key(group))
    }
}

pub(crate) fn frame(kind: u8, topic: &str, group: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 8 + topic.len() + group.map_or(0, str::len) + payload.len());
    v.push(kind);
    v.extend_from_slice(&(topic.len() as u32).to_le_bytes());
    v.extend_from_slice(topic.as_bytes());
    if let Some(g) = group {
        v.extend_from_slice(&(g.len() as u32).to_le_bytes());
        v.extend_from_slice(g.as_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// Splits a length-prefixed string off `b`.
pub(crate) fn take_str(b: &[u8]) -> Option<(&str, &[u8])> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let s = b.get(4..4 + len)?;
    Some((std::str::from_utf8(s).ok()?, &b[4 + len..]))
}

/// Local messages of the mediator actor.
enum MediatorMsg {
    Subscribe {
        topic: String,
        group: Option<String>,
        sub: Sub,
        reply: RpcReplyPort<()>,
    },
    Unsubscribe {
        topic: String,
        group: Option<String>,
        id: SubscriberId,
        reply: RpcReplyPort<()>,
    },
    RemoveEverywhere(SubscriberId),
    Dead(Vec<SubscriberId>),
    Remote(UniqueAddress, MediatorProto),
    Snapshot(ClusterSnapshot),
    Tick,
    Received,
    Nodes(String, RpcReplyPort<Vec<NodeAddress>>),
}

struct Mediator;

struct MediatorArgs {
    remoting: Remoting,
    shared: Arc<Shared>,
    settings: PubSubSettings,
}

struct Bucket {
    uid: u64,
    version: u64,
    topics: BTreeMap<String, TopicEntry>,
}

struct MediatorState {
    me: UniqueAddress,
    remoting: Remoting,
    shared: Arc<Shared>,
    version: u64,
    own: BTreeMap<String, TopicEntry>,
    buckets: HashMap<NodeAddress, Bucket>,
    live: Vec<UniqueAddress>,
}

impl MediatorState {
    fn send(&self, to: &NodeAddress, msg: &MediatorProto) {
        let mut bytes = vec![KIND_CONTROL];
        match postcard::to_extend(msg, bytes) {
            Ok(b) => bytes = b,
            Err(e) => {
                warn!(error = %e, "cannot encode a pub-sub control message");
                return;
            }
        }
        if let Err(e) = self
            .remoting
            .try_send_raw(to, self.shared.name.clone(), None, bytes)
        {
            debug!(to = %to, error = %e, "pub-sub control message not sent");
        }
    }

    fn own_bucket(&self) -> MediatorProto {
        MediatorProto::Bucket {
            version: self.version,
            topics: self.own.clone(),
        }
    }

    /// Recomputes this node's bucket; pushes it to every live member when it changed.
    fn local_changed(&mut self) {
        let own: BTreeMap<String, TopicEntry> = self
            .shared
            .local
            .read()
            .expect("pubsub lock")
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(k, t)| (k.clone(), t.entry()))
            .collect();
        if own == self.own {
            return;
        }
        self.own = own;
        self.version += 1;
        let b = self.own_bucket();
        for m in &self.live {
            self.send(&m.address, &b);
        }
    }

    fn rebuild_index(&self) {
        let mut idx = RemoteIndex::default();
        for (node, b) in &self.buckets {
            for (topic, e) in &b.topics {
                if e.plain {
                    idx.plain
                        .entry(topic.clone())
                        .or_default()
                        .push(node.clone());
                }
                for g in &e.groups {
                    idx.groups
                        .entry((topic.clone(), g.clone()))
                        .or_default()
                        .push(node.clone());
                }
            }
        }
        *self.shared.remote.write().expect("pubsub lock") = Arc::new(idx);
    }

    fn remove(&mut self, ids: &[SubscriberId], topic: Option<(&str, Option<&str>)>) {
        {
            let mut local = self.shared.local.write().expect("pubsub lock");
            for (name, t) in local.iter_mut() {
                if let Some((tp, _)) = topic
                    && tp != name
                {
                    continue;
                }
                let group = topic.and_then(|(_, g)| g);
                if topic.is_none() || group.is_none() {
                    t.plain.retain(|s| !ids.contains(&s.id));
                }
                for (g, subs) in t.groups.iter_mut() {
                    if topic.is_none() || group == Some(g.as_str()) {
                        subs.retain(|s| !ids.contains(&s.id));
                    }
                }
                t.groups.retain(|_, subs| !subs.is_empty());
            }
            local.retain(|_, t| !t.is_empty());
        }
        self.local_changed();
    }

    fn sweep(&mut self) {
        let dead: Vec<SubscriberId> = {
            let local = self.shared.local.read().expect("pubsub lock");
            local
                .values()
                .flat_map(|t| t.plain.iter().chain(t.groups.values().flatten()))
                .filter(|s| !(s.alive)())
                .map(|s| s.id.clone())
                .collect()
        };
        if !dead.is_empty() {
            debug!(count = dead.len(), "removing stopped subscribers");
            self.remove(&dead, None);
        }
    }

    fn on_snapshot(&mut self, s: &ClusterSnapshot) {
        let live: Vec<UniqueAddress> = view::members(s, None)
            .into_iter()
            .filter(|m| {
                m.node != self.me
                    && matches!(
                        m.status,
                        MemberStatus::Joining | MemberStatus::Up | MemberStatus::Leaving
                    )
            })
            .map(|m| m.node)
            .collect();
        let newcomers: Vec<UniqueAddress> = live
            .iter()
            .filter(|m| !self.live.contains(m))
            .cloned()
            .collect();
        self.live = live;
        let before = self.buckets.len();
        let live = &self.live;
        self.buckets
            .retain(|node, b| live.iter().any(|m| m.address == *node && m.uid == b.uid));
        if self.buckets.len() != before {
            self.rebuild_index();
        }
        if self.version > 0 {
            let b = self.own_bucket();
            for m in &newcomers {
                self.send(&m.address, &b);
            }
        }
    }

    fn on_remote(&mut self, from: UniqueAddress, msg: MediatorProto) {
        match msg {
            MediatorProto::Bucket { version, topics } => {
                if !self.live.contains(&from) {
                    debug!(from = %from, "bucket from a node that is not a live member ignored");
                    return;
                }
                let newer = match self.buckets.get(&from.address) {
                    Some(b) => b.uid != from.uid || b.version < version,
                    None => true,
                };
                if newer {
                    self.buckets.insert(
                        from.address.clone(),
                        Bucket {
                            uid: from.uid,
                            version,
                            topics,
                        },
                    );
                    self.rebuild_index();
                }
            }
            MediatorProto::Version { version } => {
                if !self.live.contains(&from) {
                    return;
                }
                let behind = match self.buckets.get(&from.address) {
                    Some(b) => b.uid != from.uid || b.version < version,
                    None => version > 0,
                };
                if behind {
                    self.send(&from.address, &MediatorProto::RequestBucket);
                }
            }
            MediatorProto::RequestBucket => {
                let b = self.own_bucket();
                self.send(&from.address, &b);
            }
        }
    }
}

impl Actor for Mediator {
    type Msg = MediatorMsg;
    type State = MediatorState;
    type Arguments = MediatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MediatorMsg>,
        a: MediatorArgs,
    ) -> Result<MediatorState, ActorProcessingErr> {
        let depth = a.shared.mailbox.clone();
        myself.send_interval(a.settings.gossip_interval, move || {
            depth.sent();
            MediatorMsg::Tick
        });
        Ok(MediatorState {
            me: a.remoting.self_address().clone(),
            remoting: a.remoting,
            shared: a.shared,
            version: 0,
            own: BTreeMap::new(),
            buckets: HashMap::new(),
            live: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<MediatorMsg>,
        msg: MediatorMsg,
        st: &mut MediatorState,
    ) -> Result<(), ActorProcessingErr> {
        st.shared.mailbox.taken();
        match msg {
            MediatorMsg::Subscribe {
                topic,
                group,
                sub,
                reply,
            } => {
                {
                    let mut local = st.shared.local.write().expect("pubsub lock");
                    let t = local.entry(topic).or_default();
                    let list = match group {
                        Some(g) => t.groups.entry(g).or_default(),
                        None => &mut t.plain,
                    };
                    list.retain(|s| s.id != sub.id);
                    list.push(sub);
                }
                st.local_changed();
                let _ = reply.send(());
            }
            MediatorMsg::Unsubscribe {
                topic,
                group,
                id,
                reply,
            } => {
                st.remove(&[id], Some((&topic, group.as_deref())));
                let _ = reply.send(());
            }
            MediatorMsg::RemoveEverywhere(id) => st.remove(&[id], None),
            MediatorMsg::Dead(ids) => st.remove(&ids, None),
            MediatorMsg::Remote(from, p) => st.on_remote(from, p),
            MediatorMsg::Snapshot(s) => st.on_snapshot(&s),
            MediatorMsg::Tick => {
                st.sweep();
                let v = MediatorProto::Version {
                    version: st.version,
                };
                for m in &st.live {
                    st.send(&m.address, &v);
                }
            }
            MediatorMsg::Received => {}
            MediatorMsg::Nodes(topic, reply) => {
                let mut nodes: Vec<NodeAddress> = st
                    .buckets
                    .iter()
                    .filter(|(_, b)| {
                        b.topics
                            .get(&topic)
                            .is_some_and(|e| e.plain || !e.groups.is_empty())
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                if st.own.contains_key(&topic) {
                    nodes.push(st.me.address.clone());
                }
                nodes.sort();
                let _ = reply.send(nodes);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MediatorMsg>,
        st: &mut MediatorState,
    ) -> Result<(), ActorProcessingErr> {
        st.remoting.unregister(&st.shared.name);
        Ok(())
    }
}

fn forward_snapshots(
    mut watch: watch::Receiver<ClusterSnapshot>,
    actor: ActorRef<MediatorMsg>,
    depth: MailboxDepth,
) {
    tokio::spawn(async move {
        loop {
            let s = watch.borrow_and_update().clone();
            if !tell(&actor, &depth, MediatorMsg::Snapshot(s)) {
                return;
            }
            if watch.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Casts into the mediator's mailbox, counting the message in its depth; false when the
/// mediator has stopped.
fn tell(actor: &ActorRef<MediatorMsg>, depth: &MailboxDepth, msg: MediatorMsg) -> bool {
    depth.sent();
    let sent = actor.cast(msg).is_ok();
    if !sent {
        depth.taken();
    }
    sent
}

/// Handle to this node's pub-sub mediator; cheap to clone. See the [module docs](self).
#[derive(Clone)]
pub struct DistributedPubSub {
    actor: ActorRef<MediatorMsg>,
    remoting: Remoting,
    shared: Arc<Shared>,
}

impl DistributedPubSub {
    /// Starts the mediator of this node and registers it on the transport.
    pub async fn start(
        cluster: &Cluster,
        remoting: &Remoting,
        settings: PubSubSettings,
    ) -> Result<Self, SpawnErr> {
        let shared = Arc::new(Shared {
            name: settings.name.as_str().into(),
            node: remoting.node_label().clone(),
            mailbox: MailboxDepth::new(),
            local: RwLock::new(HashMap::new()),
            remote: RwLock::new(Arc::new(RemoteIndex::default())),
            counters: Counters::default(),
        });
        let (actor, _) = Actor::spawn(
            None,
            Mediator,
            MediatorArgs {
                remoting: remoting.clone(),
                shared: shared.clone(),
                settings: settings.clone(),
            },
        )
        .await?;
        let sh = shared.clone();
        remoting.register_with(&settings.name, actor.clone(), move |inb: Inbound<'_>| {
            let msg = receive(&sh, inb)?;
            sh.mailbox.sent();
            Ok(msg)
        });
        let depth = shared.mailbox.clone();
        remoting.observe_mailbox(&settings.name, move || depth.get());
        forward_snapshots(cluster.watch(), actor.clone(), shared.mailbox.clone());
        Ok(Self {
            actor,
            remoting: remoting.clone(),
            shared,
        })
    }

    /// Subscribes `actor` to `topic`; each published message is decoded as `M`.
    /// Returns once the subscription is registered on this node (other nodes learn of
    /// it within a network hop, see [`DistributedPubSub::subscriber_nodes`]).
    pub async fn subscribe<M>(&self, topic: &str, actor: ActorRef<M>) -> Result<(), PubSubError>
    where
        M: ractor::Message + DeserializeOwned,
    {
        self.subscribe_with(topic, None, actor, |d| d.decode::<M>())
            .await
    }

    /// Subscribes `actor` to `topic` as a member of `group`: it receives what
    /// [`DistributedPubSub::send_to_group`] sends to the group, one subscriber per message.
    pub async fn subscribe_group<M>(
        &self,
        topic: &str,
        group: &str,
        actor: ActorRef<M>,
    ) -> Result<(), PubSubError>
    where
        M: ractor::Message + DeserializeOwned,
    {
        self.subscribe_with(topic, Some(group), actor, |d| d.decode::<M>())
            .await
    }

    /// Subscribes `actor` with a function that builds its message from the whole
    /// [`Delivery`] (topic, trace context, bytes).
    pub async fn subscribe_with<M, F>(
        &self,
        topic: &str,
        group: Option<&str>,
        actor: ActorRef<M>,
        decode: F,
    ) -> Result<(), PubSubError>
    where
        M: ractor::Message,
        F: Fn(&Delivery<'_>) -> Result<M, postcard::Error> + Send + Sync + 'static,
    {
        let cell: ActorCell = actor.get_cell();
        let id = SubscriberId::Actor(actor.get_id());
        let deliver: DeliverFn = Arc::new(move |d: &Delivery<'_>| match decode(d) {
            Ok(m) => actor.cast(m).is_ok(),
            Err(e) => {
                warn!(topic = d.topic, error = %e, "cannot decode a published message; dropped");
                true
            }
        });
        let alive: AliveFn = Arc::new(move || cell.get_status() != ActorStatus::Stopped);
        self.add(topic, group, Sub { id, deliver, alive }).await
    }

    /// Subscribes a function (for subscribers that are not local actors, e.g. clients of
    /// a receptionist). `deliver` returns false once the subscriber is gone, which
    /// removes it; remove it otherwise with [`DistributedPubSub::unsubscribe`] or
    /// [`DistributedPubSub::remove_subscriber`].
    pub async fn subscribe_fn<F>(
        &self,
        topic: &str,
        group: Option<&str>,
        id: String,
        deliver: F,
    ) -> Result<(), PubSubError>
    where
        F: Fn(&Delivery<'_>) -> bool + Send + Sync + 'static,
    {
        let sub = Sub {
            id: SubscriberId::External(id),
            deliver: Arc::new(deliver),
            alive: Arc::new(|| true),
        };
        self.add(topic, group, sub).await
    }

    async fn add(&self, topic: &str, group: Option<&str>, sub: Sub) -> Result<(), PubSubError> {
        let (topic, group) = (topic.to_string(), group.map(str::to_string));
        self.shared.mailbox.sent();
        ractor::call!(self.actor, |reply| MediatorMsg::Subscribe {
            topic,
            group,
            sub,
            reply
        })
        .map_err(|_| PubSubError::Stopped)
    }

    /// Removes a subscription (of `group` when given, else the plain one).
    pub async fn unsubscribe(
        &self,
        topic: &str,
        group: Option<&str>,
        id: SubscriberId,
    ) -> Result<(), PubSubError> {
        let (topic, group) = (topic.to_string(), group.map(str::to_string));
        self.shared.mailbox.sent();
        ractor::call!(self.actor, |reply| MediatorMsg::Unsubscribe {
            topic,
            group,
            id,
            reply
        })
        .map_err(|_| PubSubError::Stopped)
    }

    /// Removes every subscription of a subscriber.
    pub fn remove_subscriber(&self, id: SubscriberId) {
        tell(
            &self.actor,
            &self.shared.mailbox,
            MediatorMsg::RemoveEverywhere(id),
        );
    }

    /// Publishes `msg` to every plain subscriber of `topic` in the cluster, without
    /// waiting: a frame for a node whose link queue is full is dropped (and counted).
    pub fn publish<M: Serialize>(&self, topic: &str, msg: &M) -> Result<Published, PubSubError> {
        self.publish_traced(topic, msg, None)
    }

    /// Like [`DistributedPubSub::publish`], with a W3C trace context.
    pub fn publish_traced<M: Serialize>(
        &self,
        topic: &str,
        msg: &M,
        trace_context: Option<&str>,
    ) -> Result<Published, PubSubError> {
        let payload =
            postcard::to_allocvec(msg).map_err(|e| PubSubError::Serialize(e.to_string()))?;
        Ok(self.publish_bytes(topic, &payload, trace_context))
    }

    /// Publishes an already serialized (postcard) message, without waiting.
    pub fn publish_bytes(
        &self,
        topic: &str,
        payload: &[u8],
        trace_context: Option<&str>,
    ) -> Published {
        let (local, targets) = self.publish_local(topic, payload, trace_context);
        let mut nodes = 0;
        if !targets.is_empty() {
            let f = frame(KIND_PUBLISH, topic, None, payload);
            for n in &targets {
                match self.remoting.try_send_raw(
                    n,
                    self.shared.name.clone(),
                    trace_context,
                    f.clone(),
                ) {
                    Ok(()) => nodes += 1,
                    Err(e) => self.lost(n, &e),
                }
            }
        }
        self.shared
            .counters
            .frames_sent
            .fetch_add(nodes as u64, Ordering::Relaxed);
        Published { local, nodes }
    }

    /// Publishes like [`DistributedPubSub::publish_traced`], waiting while a link queue is
    /// full (backpressure) instead of dropping. `msg` is serialized before the future is
    /// returned.
    pub fn publish_wait<M: Serialize>(
        &self,
        topic: &str,
        msg: &M,
        trace_context: Option<&str>,
    ) -> impl Future<Output = Result<Published, PubSubError>> + Send + 'static {
        let payload = postcard::to_allocvec(msg).map_err(|e| PubSubError::Serialize(e.to_string()));
        let this = self.clone();
        let topic = topic.to_string();
        let trace = trace_context.map(str::to_string);
        async move {
            let payload = payload?;
            let trace = trace.as_deref();
            let (local, targets) = this.publish_local(&topic, &payload, trace);
            let mut nodes = 0;
            if !targets.is_empty() {
                let f = frame(KIND_PUBLISH, &topic, None, &payload);
                for n in &targets {
                    match this
                        .remoting
                        .send_raw(
                            n,
                            this.shared.name.clone(),
                            trace,
                            f.clone(),
                            SendPolicy::Wait,
                        )
                        .await
                    {
                        Ok(()) => nodes += 1,
                        Err(e) => this.lost(n, &e),
                    }
                }
            }
            this.shared
                .counters
                .frames_sent
                .fetch_add(nodes as u64, Ordering::Relaxed);
            Ok(Published { local, nodes })
        }
    }

    fn lost(&self, node: &NodeAddress, e: &SendError) {
        self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        debug!(node = %node, error = %e, "published message not queued");
    }

    /// Delivers locally and returns the remote nodes that want the topic.
    fn publish_local(
        &self,
        topic: &str,
        payload: &[u8],
        trace: Option<&str>,
    ) -> (usize, Vec<NodeAddress>) {
        self.shared
            .counters
            .published
            .fetch_add(1, Ordering::Relaxed);
        let d = Delivery {
            topic,
            trace_context: trace,
            payload,
        };
        let (local, dead) = self.shared.deliver_plain(&d);
        if !dead.is_empty() {
            tell(&self.actor, &self.shared.mailbox, MediatorMsg::Dead(dead));
        }
        let idx = self.shared.remote.read().expect("pubsub lock").clone();
        let targets = idx.plain.get(topic).cloned().unwrap_or_default();
        (local, targets)
    }

    /// Sends `msg` to exactly one subscriber of `group` of `topic`: on this node if it
    /// has one, else on a random node that has one. Returns false when no node has one
    /// (the message is dropped) or the frame could not be queued.
    pub fn send_to_group<M: Serialize>(
        &self,
        topic: &str,
        group: &str,
        msg: &M,
        trace_context: Option<&str>,
    ) -> Result<bool, PubSubError> {
        let payload =
            postcard::to_allocvec(msg).map_err(|e| PubSubError::Serialize(e.to_string()))?;
        Ok(self.send_to_group_bytes(topic, group, payload, trace_context))
    }

    /// Like [`DistributedPubSub::send_to_group`] with an already serialized message.
    pub fn send_to_group_bytes(
        &self,
        topic: &str,
        group: &str,
        payload: Vec<u8>,
        trace_context: Option<&str>,
    ) -> bool {
        self.shared
            .counters
            .published
            .fetch_add(1, Ordering::Relaxed);
        if self.shared.has_local_group(topic, group) {
            let d = Delivery {
                topic,
                trace_context,
                payload: &payload,
            };
            let (ok, dead) = self.shared.deliver_group(group, &d);
            if !dead.is_empty() {
                tell(&self.actor, &self.shared.mailbox, MediatorMsg::Dead(dead));
            }
            if ok {
                return true;
            }
        }
        let idx = self.shared.remote.read().expect("pubsub lock").clone();
        let node = idx
            .groups
            .get(&(topic.to_string(), group.to_string()))
            .and_then(|nodes| nodes.choose(&mut rand::rng()).cloned());
        let Some(node) = node else {
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let f = frame(KIND_GROUP, topic, Some(group), &payload);
        match self
            .remoting
            .try_send_raw(&node, self.shared.name.clone(), trace_context, f)
        {
            Ok(()) => {
                self.shared
                    .counters
                    .frames_sent
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.lost(&node, &e);
                false
            }
        }
    }

    /// The nodes (this one included) that have subscribers of `topic`, as this node
    /// knows them now.
    pub async fn subscriber_nodes(&self, topic: &str) -> Vec<NodeAddress> {
        let t = topic.to_string();
        self.shared.mailbox.sent();
        ractor::call!(self.actor, |reply| MediatorMsg::Nodes(t, reply)).unwrap_or_default()
    }

    /// The mediator's counters.
    pub fn stats(&self) -> PubSubStats {
        let c = &self.shared.counters;
        PubSubStats {
            published: c.published.load(Ordering::Relaxed),
            frames_sent: c.frames_sent.load(Ordering::Relaxed),
            frames_received: c.frames_received.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops the mediator (its subscriptions vanish from the other nodes once they
    /// notice the node left).
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}

/// Handles one inbound frame in the transport's reader task: fan-out of publishes to
/// local subscribers here, control messages to the mediator actor.
fn receive(sh: &Shared, inb: Inbound<'_>) -> Result<MediatorMsg, postcard::Error> {
    let bad = postcard::Error::DeserializeUnexpectedEnd;
    let (&kind, rest) = inb.payload.split_first().ok_or(bad)?;
    match kind {
        KIND_CONTROL => Ok(MediatorMsg::Remote(
            inb.from.clone(),
            postcard::from_bytes(rest)?,
        )),
        KIND_PUBLISH | KIND_GROUP => {
            let (topic, rest) = take_str(rest).ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
            let (group, payload) = if kind == KIND_GROUP {
                let (g, p) = take_str(rest).ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
                (Some(g), p)
            } else {
                (None, rest)
            };
            sh.counters.frames_received.fetch_add(1, Ordering::Relaxed);
            let delivering = MessageSpan::sampled("pubsub.deliver", &sh.node, inb.trace_context)
                .map(|m| m.with_destination(topic));
            let _entered = delivering.as_ref().map(|m| m.span().enter());
            let d = Delivery {
                topic,
                trace_context: delivering
                    .as_ref()
                    .map_or(inb.trace_context, |m| m.traceparent()),
                payload,
            };
            let (reached, dead) = match group {
                None => {
                    let (n, dead) = sh.deliver_plain(&d);
                    (n > 0, dead)
                }
                Some(g) => sh.deliver_group(g, &d),
            };
            if !reached {
                sh.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(if dead.is_empty() {
                MediatorMsg::Received
            } else {
                MediatorMsg::Dead(dead)
            })
        }
        _ => Err(postcard::Error::DeserializeBadEnum),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_refused() {
        let f = frame(KIND_GROUP, "MSFT-Match", Some("g1"), b"payload");
        assert_eq!(f[0], KIND_GROUP);
        let (topic, rest) = take_str(&f[1..]).unwrap();
        let (group, payload) = take_str(rest).unwrap();
        assert_eq!(
            (topic, group, payload),
            ("MSFT-Match", "g1", &b"payload"[..])
        );
        let p = frame(KIND_PUBLISH, "MSFT-price", None, b"");
        let (topic, payload) = take_str(&p[1..]).unwrap();
        assert_eq!((topic, payload.len()), ("MSFT-price", 0));
        for cut in 1..5 + "MSFT-price".len() {
            assert!(take_str(&p[1..cut]).is_none(), "cut at {cut}");
        }
        assert!(take_str(&[255, 255, 255, 255, b'a']).is_none());
    }
}
