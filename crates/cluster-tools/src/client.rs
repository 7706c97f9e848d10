//! Cluster client and receptionist: owns [`ClusterReceptionist`] (on member nodes,
//! registered on the transport as [`RECEPTIONIST`]) and [`ClusterClient`] (in a process
//! that is not a member), and the protocol between them.
//!
//! - **Transport, no membership.** The client runs the runtime's transport (it has a
//!   node identity and proves the cookie) but never joins membership. The receptionist
//!   accepts such a peer: the transport refuses only quarantined incarnations of
//!   removed members, and the membership daemon never hears of the client.
//! - **Connect.** The client sends `GetContacts` to every contact point (the
//!   `CLUSTER_SEEDS`-style list of [`ClientSettings::contacts`], plus receptionists it
//!   learned) each `reconnect_interval` until one answers `Contacts` (the Up members
//!   with the receptionist's role);
//!   that one becomes its receptionist. It then re-sends its topic subscriptions and
//!   flushes what it buffered.
//! - **Heartbeats.** Every `heartbeat_interval` the client sends `Heartbeat` and the
//!   receptionist answers; with no answer for `acceptable_heartbeat_pause` the client
//!   drops that receptionist (telling it `Bye`, best effort) and connects again, to
//!   whichever contact answers first. A receptionist forgets a client (and its
//!   subscriptions) that has not been heard of for `client_timeout`.
//! - **Buffer.** While not connected, sends and publishes are kept, up to
//!   `buffer_size` (the oldest is dropped beyond it), and go out in order on connect.
//! - **Services.** [`ClusterReceptionist::register_service`] registers an actor under a
//!   path such as `/user/price-history`, cluster-wide: it is a group subscription of the
//!   pub-sub topic `_service:{path}`, so a `Send` from a client reaches one service
//!   instance, on the receptionist's node when it has one. A service answers through
//!   the [`ReplyTo`] it is given (the reply travels back via the receptionist);
//!   [`ClusterClient::ask`] waits for it.
//! - **Topics.** A client's `Subscribe` makes the receptionist subscribe a function in
//!   its node's pub-sub mediator that forwards each published message (bytes as
//!   published, trace context kept) to the client. The client hands them to its local
//!   subscribers, ignoring anything from a receptionist that is not its current one, so
//!   a fail-over never duplicates deliveries.
//! - **Trace context.** Every client message carries the caller's W3C trace context in
//!   the transport envelope; the receptionist passes it on to services and pub-sub,
//!   and pub-sub deliveries carry it back to the client's subscribers. For a sampled
//!   context the receptionist records a span of its own (`receptionist.send`,
//!   `receptionist.publish`, `receptionist.reply`, and `receptionist.forward` for a
//!   publish it forwards to a client) and passes that span's context on; an unsampled
//!   context is passed on unchanged (see [`telemetry::MessageSpan`]).
//! - **Mailbox depth.** The receptionist counts the messages in its mailbox:
//!   `actor_mailbox_depth{actor_name="receptionist"}` on `/metrics`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SpawnErr};
use runtime::address::AddressError;
use runtime::cluster::{Cluster, ClusterSnapshot};
use runtime::membership::MemberStatus;
use runtime::metrics::MailboxDepth;
use runtime::remote::Inbound;
use runtime::{NodeAddress, Remoting, UniqueAddress};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use telemetry::MessageSpan;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use crate::pubsub::{Delivery, DistributedPubSub, SubscriberId, frame, take_str};
use crate::view;

/// Default registered name of the receptionist on member nodes.
pub const RECEPTIONIST: &str = "receptionist";
/// Default registered name of a cluster client in its process.
pub const CLIENT: &str = "cluster-client";
/// Pub-sub group that service instances join.
const SERVICE_GROUP: &str = "_service";

const KIND_CONTROL: u8 = 0;
const KIND_PUBLISHED: u8 = 1;

fn service_topic(path: &str) -> String {
    format!("_service:{path}")
}

/// Parses a contact-point list as in `CLUSTER_SEEDS`: entries separated by commas or
/// whitespace, each `host:port`, `system@host:port` or `akka.tcp://system@host:port`;
/// a bare `host:port` takes `default_system`.
pub fn parse_contacts(list: &str, default_system: &str) -> Result<Vec<NodeAddress>, AddressError> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| NodeAddress::parse_with_default(s, default_system))
        .collect()
}

/// Requests to a receptionist.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum ReceptionistProto {
    /// "Which receptionists are there?" (answered with `Contacts`).
    GetContacts { client: String },
    /// Liveness of a client (answered with `HeartbeatRsp`).
    Heartbeat { client: String },
    /// A message for the service at `path`; `correlation` 0 expects no reply.
    Send {
        client: String,
        path: String,
        correlation: u64,
        payload: Vec<u8>,
    },
    /// A message to publish to `topic`.
    Publish { topic: String, payload: Vec<u8> },
    /// Forward `topic` to the client.
    Subscribe { client: String, topic: String },
    /// Stop forwarding `topic`.
    Unsubscribe { client: String, topic: String },
    /// The client leaves this receptionist.
    Bye { client: String },
    /// A service's reply, to forward to the client.
    Reply {
        client: NodeAddress,
        client_name: String,
        correlation: u64,
        payload: Vec<u8>,
    },
}

/// Control messages to a client.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum ClientProto {
    /// The receptionists (Up members) the sender knows.
    Contacts { receptionists: Vec<NodeAddress> },
    /// Answer to a heartbeat.
    HeartbeatRsp,
    /// A service's reply to the request with this correlation id.
    Reply { correlation: u64, payload: Vec<u8> },
}

fn control<T: Serialize>(msg: &T) -> Option<Vec<u8>> {
    match postcard::to_extend(msg, vec![KIND_CONTROL]) {
        Ok(b) => Some(b),
        Err(e) => {
            warn!(error = %e, "cannot encode a client control message");
            None
        }
    }
}

/// Where a service's reply goes: back through the receptionist to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// The receptionist the request came through.
    pub receptionist: NodeAddress,
    /// Its registered name.
    pub receptionist_name: String,
    /// The client's node.
    pub client: NodeAddress,
    /// The client's registered name.
    pub client_name: String,
    /// The request's correlation id (0: the client expects no reply).
    pub correlation: u64,
}

impl ReplyTo {
    /// Whether the client waits for a reply ([`ClusterClient::ask`]).
    pub fn expects_reply(&self) -> bool {
        self.correlation != 0
    }

    /// Sends `msg` as the reply (without waiting; dropped when the link queue is full).
    pub fn reply<M: Serialize>(
        &self,
        remoting: &Remoting,
        msg: &M,
        trace_context: Option<&str>,
    ) -> Result<(), runtime::SendError> {
        let payload =
            postcard::to_allocvec(msg).map_err(|e| runtime::SendError::Serialize(e.to_string()))?;
        let req = ReceptionistProto::Reply {
            client: self.client.clone(),
            client_name: self.client_name.clone(),
            correlation: self.correlation,
            payload,
        };
        let bytes = postcard::to_allocvec(&req)
            .map_err(|e| runtime::SendError::Serialize(e.to_string()))?;
        remoting.try_send_raw(
            &self.receptionist,
            self.receptionist_name.as_str().into(),
            trace_context,
            bytes,
        )
    }
}

/// What a service receives with each request.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ServiceEnvelope {
    reply_to: ReplyTo,
    payload: Vec<u8>,
}

/// A request to a service, as handed to its decode function.
#[derive(Debug, Clone, Copy)]
pub struct ServiceRequest<'a> {
    /// The service path.
    pub path: &'a str,
    /// W3C traceparent of the client, if any.
    pub trace_context: Option<&'a str>,
    /// The serialized (postcard) message.
    pub payload: &'a [u8],
    /// Where a reply goes.
    pub reply_to: &'a ReplyTo,
}

impl ServiceRequest<'_> {
    /// Decodes the message.
    pub fn decode<M: DeserializeOwned>(&self) -> Result<M, postcard::Error> {
        postcard::from_bytes(self.payload)
    }
}

/// Registers `actor` as (one instance of) the service at `path` in the node's pub-sub
/// mediator, which is all a service needs: clients reach it through any receptionist,
/// and the node need not run one. See [`ClusterReceptionist::register_service_with`].
pub async fn register_service_with<M, F>(
    pubsub: &DistributedPubSub,
    path: &str,
    actor: ActorRef<M>,
    decode: F,
) -> Result<(), crate::pubsub::PubSubError>
where
    M: ractor::Message,
    F: Fn(&ServiceRequest<'_>) -> Result<M, postcard::Error> + Send + Sync + 'static,
{
    let p = path.to_string();
    pubsub
        .subscribe_with(&service_topic(path), Some(SERVICE_GROUP), actor, move |d| {
            let env: ServiceEnvelope = d.decode()?;
            decode(&ServiceRequest {
                path: &p,
                trace_context: d.trace_context,
                payload: &env.payload,
                reply_to: &env.reply_to,
            })
        })
        .await
}

/// Settings of a receptionist.
#[derive(Clone, Debug)]
pub struct ReceptionistSettings {
    /// Registered name on the transport (the same on every member).
    pub name: String,
    /// Members with this role run receptionists (`None`: every member); only they are
    /// handed to clients as contacts.
    pub role: Option<String>,
    /// A client not heard of for this long is forgotten with its subscriptions.
    pub client_timeout: Duration,
    /// Interval of the client-timeout check.
    pub check_interval: Duration,
}

impl Default for ReceptionistSettings {
    fn default() -> Self {
        Self {
            name: RECEPTIONIST.to_string(),
            role: None,
            client_timeout: Duration::from_secs(30),
            check_interval: Duration::from_secs(1),
        }
    }
}

struct ClientEntry {
    uid: u64,
    last_seen: Instant,
    topics: BTreeSet<String>,
}

enum ReceptionistMsg {
    Remote(UniqueAddress, Option<String>, ReceptionistProto),
    Snapshot(ClusterSnapshot),
    Tick,
    Clients(RpcReplyPort<usize>),
}

struct Receptionist;

struct ReceptionistArgs {
    remoting: Remoting,
    pubsub: DistributedPubSub,
    settings: ReceptionistSettings,
    depth: MailboxDepth,
}

struct ReceptionistState {
    me: NodeAddress,
    depth: MailboxDepth,
    remoting: Remoting,
    pubsub: DistributedPubSub,
    settings: ReceptionistSettings,
    up: Vec<NodeAddress>,
    clients: HashMap<(NodeAddress, String), ClientEntry>,
}

fn client_key(node: &NodeAddress, name: &str) -> String {
    format!("client {node}/{name}")
}

fn client_id(node: &NodeAddress, name: &str) -> SubscriberId {
    SubscriberId::External(client_key(node, name))
}

/// The receptionist's span for a sampled `trace` (none otherwise); handle the message inside
/// it and pass on `onward(&span, trace)`. Only for handling that does not await.
fn span_for(remoting: &Remoting, name: &str, to: &str, trace: Option<&str>) -> Option<MessageSpan> {
    MessageSpan::sampled(name, remoting.node_label(), trace).map(|m| m.with_destination(to))
}

/// The context to pass on from inside `span`: its own, or the incoming one unchanged.
fn onward<'a>(span: &'a Option<MessageSpan>, trace: Option<&'a str>) -> Option<&'a str> {
    span.as_ref().map_or(trace, |m| m.traceparent())
}

impl ReceptionistState {
    fn to_client(&self, node: &NodeAddress, name: &str, trace: Option<&str>, bytes: Vec<u8>) {
        if let Err(e) = self.remoting.try_send_raw(node, name.into(), trace, bytes) {
            debug!(client = %node, error = %e, "message to a client not sent");
        }
    }

    fn forget(&mut self, key: &(NodeAddress, String)) {
        if self.clients.remove(key).is_some() {
            self.pubsub.remove_subscriber(client_id(&key.0, &key.1));
        }
    }

    fn touch(&mut self, from: &UniqueAddress, client: &str) {
        let key = (from.address.clone(), client.to_string());
        if self.clients.get(&key).is_some_and(|e| e.uid != from.uid) {
            // a restarted client: its old subscriptions go
            self.forget(&key);
        }
        let e = self.clients.entry(key).or_insert_with(|| {
            info!(client = %from, "cluster client connected");
            ClientEntry {
                uid: from.uid,
                last_seen: Instant::now(),
                topics: BTreeSet::new(),
            }
        });
        e.last_seen = Instant::now();
    }

    async fn on_remote(
        &mut self,
        from: UniqueAddress,
        trace: Option<String>,
        msg: ReceptionistProto,
    ) {
        let trace = trace.as_deref();
        match msg {
            ReceptionistProto::GetContacts { client } => {
                self.touch(&from, &client);
                let mut receptionists = self.up.clone();
                if !receptionists.contains(&self.me) {
                    receptionists.insert(0, self.me.clone());
                }
                if let Some(b) = control(&ClientProto::Contacts { receptionists }) {
                    self.to_client(&from.address, &client, None, b);
                }
            }
            ReceptionistProto::Heartbeat { client } => {
                self.touch(&from, &client);
                if let Some(b) = control(&ClientProto::HeartbeatRsp) {
                    self.to_client(&from.address, &client, None, b);
                }
            }
            ReceptionistProto::Send {
                client,
                path,
                correlation,
                payload,
            } => {
                self.touch(&from, &client);
                let span = span_for(&self.remoting, "receptionist.send", &path, trace);
                let _entered = span.as_ref().map(|m| m.span().enter());
                let trace = onward(&span, trace);
                let env = ServiceEnvelope {
                    reply_to: ReplyTo {
                        receptionist: self.me.clone(),
                        receptionist_name: self.settings.name.clone(),
                        client: from.address.clone(),
                        client_name: client,
                        correlation,
                    },
                    payload,
                };
                match postcard::to_allocvec(&env) {
                    Ok(b) => {
                        if !self.pubsub.send_to_group_bytes(
                            &service_topic(&path),
                            SERVICE_GROUP,
                            b,
                            trace,
                        ) {
                            debug!(path, "no service registered at this path; message dropped");
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot encode a service request"),
                }
            }
            ReceptionistProto::Publish { topic, payload } => {
                let span = span_for(&self.remoting, "receptionist.publish", &topic, trace);
                let _entered = span.as_ref().map(|m| m.span().enter());
                self.pubsub
                    .publish_bytes(&topic, &payload, onward(&span, trace));
            }
            ReceptionistProto::Subscribe { client, topic } => {
                self.touch(&from, &client);
                let key = (from.address.clone(), client.clone());
                let remoting = self.remoting.clone();
                let (node, name): (NodeAddress, Arc<str>) =
                    (from.address.clone(), client.as_str().into());
                let forward = move |d: &Delivery<'_>| {
                    let span =
                        span_for(&remoting, "receptionist.forward", d.topic, d.trace_context);
                    let _entered = span.as_ref().map(|m| m.span().enter());
                    let trace = onward(&span, d.trace_context);
                    let f = frame(KIND_PUBLISHED, d.topic, None, d.payload);
                    if let Err(e) = remoting.try_send_raw(&node, name.clone(), trace, f) {
                        debug!(client = %node, error = %e, "publish to a client not sent");
                    }
                    true
                };
                let id = client_key(&key.0, &key.1);
                if self
                    .pubsub
                    .subscribe_fn(&topic, None, id, forward)
                    .await
                    .is_ok()
                    && let Some(e) = self.clients.get_mut(&key)
                {
                    e.topics.insert(topic);
                }
            }
            ReceptionistProto::Unsubscribe { client, topic } => {
                self.touch(&from, &client);
                let key = (from.address.clone(), client);
                let _ = self
                    .pubsub
                    .unsubscribe(&topic, None, client_id(&key.0, &key.1))
                    .await;
                if let Some(e) = self.clients.get_mut(&key) {
                    e.topics.remove(&topic);
                }
            }
            ReceptionistProto::Bye { client } => {
                info!(client = %from, "cluster client left");
                self.forget(&(from.address, client));
            }
            ReceptionistProto::Reply {
                client,
                client_name,
                correlation,
                payload,
            } => {
                let span = span_for(&self.remoting, "receptionist.reply", &client_name, trace);
                let _entered = span.as_ref().map(|m| m.span().enter());
                if let Some(b) = control(&ClientProto::Reply {
                    correlation,
                    payload,
                }) {
                    self.to_client(&client, &client_name, onward(&span, trace), b);
                }
            }
        }
    }
}

impl Actor for Receptionist {
    type Msg = ReceptionistMsg;
    type State = ReceptionistState;
    type Arguments = ReceptionistArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ReceptionistMsg>,
        a: ReceptionistArgs,
    ) -> Result<ReceptionistState, ActorProcessingErr> {
        let depth = a.depth.clone();
        myself.send_interval(a.settings.check_interval, move || {
            depth.sent();
            ReceptionistMsg::Tick
        });
        Ok(ReceptionistState {
            me: a.remoting.self_address().address.clone(),
            depth: a.depth,
            remoting: a.remoting,
            pubsub: a.pubsub,
            settings: a.settings,
            up: Vec::new(),
            clients: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReceptionistMsg>,
        msg: ReceptionistMsg,
        st: &mut ReceptionistState,
    ) -> Result<(), ActorProcessingErr> {
        st.depth.taken();
        match msg {
            ReceptionistMsg::Remote(from, trace, p) => st.on_remote(from, trace, p).await,
            ReceptionistMsg::Snapshot(s) => {
                st.up = view::members(&s, st.settings.role.as_deref())
                    .into_iter()
                    .filter(|m| m.has_role && m.status == MemberStatus::Up)
                    .map(|m| m.node.address)
                    .collect();
            }
            ReceptionistMsg::Tick => {
                let timeout = st.settings.client_timeout;
                let gone: Vec<(NodeAddress, String)> = st
                    .clients
                    .iter()
                    .filter(|(_, e)| e.last_seen.elapsed() > timeout)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    info!(client = %k.0, "cluster client timed out; dropping its subscriptions");
                    st.forget(&k);
                    st.remoting.forget_peer(&k.0);
                }
            }
            ReceptionistMsg::Clients(reply) => {
                let _ = reply.send(st.clients.len());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ReceptionistMsg>,
        st: &mut ReceptionistState,
    ) -> Result<(), ActorProcessingErr> {
        st.remoting.unregister(&st.settings.name);
        Ok(())
    }
}

/// The receptionist of a member node; cheap to clone. See the [module docs](self).
#[derive(Clone)]
pub struct ClusterReceptionist {
    actor: ActorRef<ReceptionistMsg>,
    pubsub: DistributedPubSub,
    depth: MailboxDepth,
}

impl ClusterReceptionist {
    /// Starts the receptionist of this node on top of its pub-sub mediator.
    pub async fn start(
        cluster: &Cluster,
        remoting: &Remoting,
        pubsub: &DistributedPubSub,
        settings: ReceptionistSettings,
    ) -> Result<Self, SpawnErr> {
        let name = settings.name.clone();
        let depth = MailboxDepth::new();
        let (actor, _) = Actor::spawn(
            None,
            Receptionist,
            ReceptionistArgs {
                remoting: remoting.clone(),
                pubsub: pubsub.clone(),
                settings,
                depth: depth.clone(),
            },
        )
        .await?;
        let d = depth.clone();
        remoting.register_with(&name, actor.clone(), move |inb: Inbound<'_>| {
            let msg = ReceptionistMsg::Remote(
                inb.from.clone(),
                inb.trace_context.map(str::to_string),
                postcard::from_bytes(inb.payload)?,
            );
            d.sent();
            Ok(msg)
        });
        let d = depth.clone();
        remoting.observe_mailbox(&name, move || d.get());
        let mut watch: watch::Receiver<ClusterSnapshot> = cluster.watch();
        let a = actor.clone();
        let d = depth.clone();
        tokio::spawn(async move {
            loop {
                let s = watch.borrow_and_update().clone();
                d.sent();
                if a.cast(ReceptionistMsg::Snapshot(s)).is_err() {
                    d.taken();
                    return;
                }
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            actor,
            pubsub: pubsub.clone(),
            depth,
        })
    }

    /// Registers `actor` as (one instance of) the service at `path`, e.g.
    /// `/user/price-history`; requests are decoded as `M`.
    pub async fn register_service<M>(
        &self,
        path: &str,
        actor: ActorRef<M>,
    ) -> Result<(), crate::pubsub::PubSubError>
    where
        M: ractor::Message + DeserializeOwned,
    {
        self.register_service_with(path, actor, |r| r.decode::<M>())
            .await
    }

    /// Registers a service with a function that builds the actor's message from the
    /// whole request (to keep its [`ReplyTo`] or trace context).
    pub async fn register_service_with<M, F>(
        &self,
        path: &str,
        actor: ActorRef<M>,
        decode: F,
    ) -> Result<(), crate::pubsub::PubSubError>
    where
        M: ractor::Message,
        F: Fn(&ServiceRequest<'_>) -> Result<M, postcard::Error> + Send + Sync + 'static,
    {
        register_service_with(&self.pubsub, path, actor, decode).await
    }

    /// Removes a service instance.
    pub async fn unregister_service(
        &self,
        path: &str,
        actor: ActorId,
    ) -> Result<(), crate::pubsub::PubSubError> {
        self.pubsub
            .unsubscribe(
                &service_topic(path),
                Some(SERVICE_GROUP),
                SubscriberId::Actor(actor),
            )
            .await
    }

    /// Number of clients this receptionist currently knows.
    pub async fn clients(&self) -> usize {
        self.depth.sent();
        ractor::call!(self.actor, ReceptionistMsg::Clients).unwrap_or(0)
    }
}

/// Settings of a cluster client.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Initial contact points (receptionists), see [`parse_contacts`].
    pub contacts: Vec<NodeAddress>,
    /// A DNS name and port whose every address is a receptionist's node, such as a
    /// Kubernetes headless Service (`pricing:5055`): looked up on every contact attempt, so
    /// scaling the receptionists' StatefulSet needs no new contact list. The DNS answers
    /// IPs while members advertise names, so each address is identified through the
    /// transport handshake ([`Remoting::identify`]) and contacted by the name it gives.
    pub contact_service: Option<(String, u16)>,
    /// Registered name of the client in its process.
    pub name: String,
    /// Registered name of the receptionists.
    pub receptionist_name: String,
    /// Interval of heartbeats to the receptionist.
    pub heartbeat_interval: Duration,
    /// No heartbeat answer for this long: the receptionist is considered dead.
    pub acceptable_heartbeat_pause: Duration,
    /// Interval of contact attempts while not connected.
    pub reconnect_interval: Duration,
    /// Messages kept while not connected; beyond it the oldest is dropped.
    pub buffer_size: usize,
}

impl ClientSettings {
    /// Settings with Akka's defaults and these contact points.
    pub fn new(contacts: Vec<NodeAddress>) -> Self {
        Self {
            contacts,
            contact_service: None,
            name: CLIENT.to_string(),
            receptionist_name: RECEPTIONIST.to_string(),
            heartbeat_interval: Duration::from_secs(2),
            acceptable_heartbeat_pause: Duration::from_secs(13),
            reconnect_interval: Duration::from_secs(3),
            buffer_size: 1000,
        }
    }
}

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The message could not be serialized or the reply decoded.
    #[error("serialization failed: {0}")]
    Serialize(String),
    /// No reply within the time given.
    #[error("no reply in time")]
    Timeout,
    /// The client has stopped.
    #[error("the cluster client has stopped")]
    Stopped,
}

type ClientDeliverFn = Arc<dyn Fn(&Delivery<'_>) -> bool + Send + Sync>;

struct ClientSub {
    id: ActorId,
    alive: Box<dyn Fn() -> bool + Send + Sync>,
    deliver: ClientDeliverFn,
}

#[derive(Default)]
struct ClientShared {
    subs: RwLock<HashMap<String, Vec<ClientSub>>>,
    current: RwLock<Option<NodeAddress>>,
    received: AtomicU64,
    ignored: AtomicU64,
}

enum Outgoing {
    Send {
        path: String,
        correlation: u64,
        payload: Vec<u8>,
        trace: Option<String>,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        trace: Option<String>,
    },
}

enum ClientMsg {
    Out(Outgoing),
    Ask {
        path: String,
        payload: Vec<u8>,
        trace: Option<String>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    Subscribe(String, ClientSub, RpcReplyPort<()>),
    Unsubscribe(String, ActorId, RpcReplyPort<()>),
    Control(UniqueAddress, ClientProto),
    Tick,
    /// A published message was handled in the reader task (nothing left to do).
    Received,
    Current(RpcReplyPort<Option<NodeAddress>>),
    Learned(RpcReplyPort<Vec<NodeAddress>>),
    Stats(RpcReplyPort<ClientStats>),
    /// The receptionists' nodes found behind the contact service.
    Discovered(Vec<NodeAddress>),
}

/// Counters of a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connections made to a receptionist (1 + fail-overs).
    pub connects: u64,
    /// Messages dropped from the full buffer.
    pub dropped: u64,
    /// Published messages received from the current receptionist.
    pub received: u64,
    /// Published messages ignored because they came from another receptionist.
    pub ignored: u64,
}

struct Client;

struct ClientState {
    remoting: Remoting,
    settings: ClientSettings,
    shared: Arc<ClientShared>,
    receptionist: Option<NodeAddress>,
    receptionist_name: Arc<str>,
    learned: Vec<NodeAddress>,
    discovered: Vec<NodeAddress>,
    myself: ActorRef<ClientMsg>,
    last_rsp: Instant,
    ticks: u64,
    buffer: VecDeque<Outgoing>,
    pending: HashMap<u64, oneshot::Sender<Vec<u8>>>,
    next_correlation: u64,
    connects: u64,
    dropped: u64,
}

impl ClientState {
    fn send_to(&self, node: &NodeAddress, msg: &ReceptionistProto, trace: Option<&str>) -> bool {
        let bytes = match postcard::to_allocvec(msg) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot encode a request to the receptionist");
                return false;
            }
        };
        match self
            .remoting
            .try_send_raw(node, self.receptionist_name.clone(), trace, bytes)
        {
            Ok(()) => true,
            Err(e) => {
                debug!(receptionist = %node, error = %e, "request to the receptionist not sent");
                false
            }
        }
    }

    fn out(&mut self, o: Outgoing) {
        let Some(r) = self.receptionist.clone() else {
            if self.buffer.len() >= self.settings.buffer_size {
                self.buffer.pop_front();
                self.dropped += 1;
            }
            if self.settings.buffer_size > 0 {
                self.buffer.push_back(o);
            } else {
                self.dropped += 1;
            }
            return;
        };
        let client = self.settings.name.clone();
        match o {
            Outgoing::Send {
                path,
                correlation,
                payload,
                trace,
            } => {
                self.send_to(
                    &r,
                    &ReceptionistProto::Send {
                        client,
                        path,
                        correlation,
                        payload,
                    },
                    trace.as_deref(),
                );
            }
            Outgoing::Publish {
                topic,
                payload,
                trace,
            } => {
                self.send_to(
                    &r,
                    &ReceptionistProto::Publish { topic, payload },
                    trace.as_deref(),
                );
            }
        }
    }

    fn establish(&self) {
        self.discover();
        let msg = ReceptionistProto::GetContacts {
            client: self.settings.name.clone(),
        };
        let mut all: Vec<&NodeAddress> = self
            .settings
            .contacts
            .iter()
            .chain(&self.learned)
            .chain(&self.discovered)
            .collect();
        all.sort();
        all.dedup();
        for c in all {
            self.send_to(c, &msg, None);
        }
    }

    /// Looks up the contact service (if any) in the background: every address it resolves
    /// to, identified by a handshake; the result comes back as `Discovered`.
    fn discover(&self) {
        let Some((name, port)) = self.settings.contact_service.clone() else {
            return;
        };
        let remoting = self.remoting.clone();
        let myself = self.myself.clone();
        let limit = self.settings.reconnect_interval;
        tokio::spawn(async move {
            let ips: Vec<std::net::IpAddr> =
                match tokio::time::timeout(limit, tokio::net::lookup_host((name.as_str(), port)))
                    .await
                {
                    Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                    Ok(Err(e)) => {
                        warn!(service = %name, error = %e, "contact service lookup failed");
                        return;
                    }
                    Err(_) => {
                        warn!(service = %name, "contact service lookup timed out");
                        return;
                    }
                };
            let mut found = Vec::new();
            for ip in ips {
                let host = ip.to_string();
                match tokio::time::timeout(limit, remoting.identify(&host, port)).await {
                    Ok(Ok(node)) => found.push(node.address),
                    Ok(Err(e)) => debug!(%host, port, error = %e, "contact not identified"),
                    Err(_) => debug!(%host, port, "contact did not answer the handshake"),
                }
            }
            found.sort();
            found.dedup();
            let _ = myself.send_message(ClientMsg::Discovered(found));
        });
    }

    fn lost(&mut self) {
        if let Some(r) = self.receptionist.take() {
            warn!(receptionist = %r, "no heartbeat answer from the receptionist; failing over");
            self.send_to(
                &r,
                &ReceptionistProto::Bye {
                    client: self.settings.name.clone(),
                },
                None,
            );
            self.learned.retain(|l| *l != r);
            *self.shared.current.write().expect("client lock") = None;
        }
        self.establish();
    }

    fn connected(&mut self, r: NodeAddress) {
        info!(receptionist = %r, "cluster client connected to a receptionist");
        self.connects += 1;
        self.receptionist = Some(r.clone());
        *self.shared.current.write().expect("client lock") = Some(r.clone());
        self.last_rsp = Instant::now();
        let topics: Vec<String> = self
            .shared
            .subs
            .read()
            .expect("client lock")
            .keys()
            .cloned()
            .collect();
        for topic in topics {
            self.send_to(
                &r,
                &ReceptionistProto::Subscribe {
                    client: self.settings.name.clone(),
                    topic,
                },
                None,
            );
        }
        while let Some(o) = self.buffer.pop_front() {
            self.out(o);
        }
    }

    fn sweep_subscribers(&mut self) {
        let mut emptied = Vec::new();
        {
            let mut subs = self.shared.subs.write().expect("client lock");
            for (t, list) in subs.iter_mut() {
                list.retain(|s| (s.alive)());
                if list.is_empty() {
                    emptied.push(t.clone());
                }
            }
            subs.retain(|_, l| !l.is_empty());
        }
        for topic in emptied {
            self.unsubscribed(topic);
        }
    }

    fn unsubscribed(&self, topic: String) {
        if let Some(r) = &self.receptionist {
            self.send_to(
                r,
                &ReceptionistProto::Unsubscribe {
                    client: self.settings.name.clone(),
                    topic,
                },
                None,
            );
        }
    }
}

impl Actor for Client {
    type Msg = ClientMsg;
    type State = ClientState;
    type Arguments = (Remoting, ClientSettings, Arc<ClientShared>);

    async fn pre_start(
        &self,
        myself: ActorRef<ClientMsg>,
        (remoting, settings, shared): Self::Arguments,
    ) -> Result<ClientState, ActorProcessingErr> {
        let tick = settings.heartbeat_interval.min(settings.reconnect_interval);
        myself.send_interval(tick, || ClientMsg::Tick);
        let st = ClientState {
            remoting,
            receptionist_name: settings.receptionist_name.as_str().into(),
            settings,
            shared,
            receptionist: None,
            learned: Vec::new(),
            discovered: Vec::new(),
            myself: myself.clone(),
            last_rsp: Instant::now(),
            ticks: 0,
            buffer: VecDeque::new(),
            pending: HashMap::new(),
            next_correlation: 1,
            connects: 0,
            dropped: 0,
        };
        st.establish();
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ClientMsg>,
        msg: ClientMsg,
        st: &mut ClientState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClientMsg::Out(o) => st.out(o),
            ClientMsg::Ask {
                path,
                payload,
                trace,
                reply,
            } => {
                let correlation = st.next_correlation;
                st.next_correlation += 1;
                st.pending.insert(correlation, reply);
                st.out(Outgoing::Send {
                    path,
                    correlation,
                    payload,
                    trace,
                });
            }
            ClientMsg::Subscribe(topic, sub, reply) => {
                let first = {
                    let mut subs = st.shared.subs.write().expect("client lock");
                    let list = subs.entry(topic.clone()).or_default();
                    list.retain(|s| s.id != sub.id);
                    list.push(sub);
                    list.len() == 1
                };
                if first && let Some(r) = &st.receptionist {
                    st.send_to(
                        r,
                        &ReceptionistProto::Subscribe {
                            client: st.settings.name.clone(),
                            topic,
                        },
                        None,
                    );
                }
                let _ = reply.send(());
            }
            ClientMsg::Unsubscribe(topic, id, reply) => {
                let emptied = {
                    let mut subs = st.shared.subs.write().expect("client lock");
                    let emptied = subs.get_mut(&topic).is_some_and(|l| {
                        l.retain(|s| s.id != id);
                        l.is_empty()
                    });
                    if emptied {
                        subs.remove(&topic);
                    }
                    emptied
                };
                if emptied {
                    st.unsubscribed(topic);
                }
                let _ = reply.send(());
            }
            ClientMsg::Control(from, p) => match p {
                ClientProto::Contacts { receptionists } => {
                    st.learned = receptionists;
                    if st.receptionist.is_none() {
                        st.connected(from.address);
                    }
                }
                ClientProto::HeartbeatRsp => {
                    if st.receptionist.as_ref() == Some(&from.address) {
                        st.last_rsp = Instant::now();
                    }
                }
                ClientProto::Reply {
                    correlation,
                    payload,
                } => {
                    if let Some(tx) = st.pending.remove(&correlation) {
                        let _ = tx.send(payload);
                    }
                }
            },
            ClientMsg::Tick => {
                st.ticks += 1;
                st.pending.retain(|_, tx| !tx.is_closed());
                st.sweep_subscribers();
                match st.receptionist.clone() {
                    Some(r) => {
                        if st.last_rsp.elapsed() > st.settings.acceptable_heartbeat_pause {
                            st.lost();
                        } else {
                            let client = st.settings.name.clone();
                            st.send_to(
                                &r,
                                &ReceptionistProto::Heartbeat {
                                    client: client.clone(),
                                },
                                None,
                            );
                            if st.ticks % 10 == 0 {
                                st.send_to(&r, &ReceptionistProto::GetContacts { client }, None);
                            }
                        }
                    }
                    None => st.establish(),
                }
            }
            ClientMsg::Received => {}
            ClientMsg::Discovered(nodes) => {
                if st.receptionist.is_none() {
                    let msg = ReceptionistProto::GetContacts {
                        client: st.settings.name.clone(),
                    };
                    for n in nodes.iter().filter(|n| !st.discovered.contains(n)) {
                        st.send_to(n, &msg, None);
                    }
                }
                st.discovered = nodes;
            }
            ClientMsg::Current(reply) => {
                let _ = reply.send(st.receptionist.clone());
            }
            ClientMsg::Learned(reply) => {
                let _ = reply.send(st.learned.clone());
            }
            ClientMsg::Stats(reply) => {
                let _ = reply.send(ClientStats {
                    connects: st.connects,
                    dropped: st.dropped,
                    received: st.shared.received.load(Ordering::Relaxed),
                    ignored: st.shared.ignored.load(Ordering::Relaxed),
                });
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ClientMsg>,
        st: &mut ClientState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(r) = &st.receptionist {
            st.send_to(
                r,
                &ReceptionistProto::Bye {
                    client: st.settings.name.clone(),
                },
                None,
            );
        }
        st.remoting.unregister(&st.settings.name);
        Ok(())
    }
}

/// Handles one inbound message of the client in the transport's reader task.
fn client_receive(sh: &ClientShared, inb: Inbound<'_>) -> Result<ClientMsg, postcard::Error> {
    let (&kind, rest) = inb
        .payload
        .split_first()
        .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
    match kind {
        KIND_CONTROL => Ok(ClientMsg::Control(
            inb.from.clone(),
            postcard::from_bytes(rest)?,
        )),
        KIND_PUBLISHED => {
            let (topic, payload) =
                take_str(rest).ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
            let current = sh.current.read().expect("client lock").clone();
            if current.as_ref() != Some(&inb.from.address) {
                sh.ignored.fetch_add(1, Ordering::Relaxed);
                return Ok(ClientMsg::Received);
            }
            sh.received.fetch_add(1, Ordering::Relaxed);
            let d = Delivery {
                topic,
                trace_context: inb.trace_context,
                payload,
            };
            let subs = sh.subs.read().expect("client lock");
            for s in subs.get(topic).into_iter().flatten() {
                (s.deliver)(&d);
            }
            Ok(ClientMsg::Received)
        }
        _ => Err(postcard::Error::DeserializeBadEnum),
    }
}

/// A cluster client; cheap to clone. See the [module docs](self).
#[derive(Clone)]
pub struct ClusterClient {
    actor: ActorRef<ClientMsg>,
}

impl ClusterClient {
    /// Starts a client on `remoting` (a transport whose node does not join membership)
    /// and begins to contact the receptionists.
    pub async fn start(remoting: &Remoting, settings: ClientSettings) -> Result<Self, SpawnErr> {
        let shared = Arc::new(ClientShared::default());
        let name = settings.name.clone();
        let (actor, _) =
            Actor::spawn(None, Client, (remoting.clone(), settings, shared.clone())).await?;
        remoting.register_with(&name, actor.clone(), move |inb: Inbound<'_>| {
            client_receive(&shared, inb)
        });
        Ok(Self { actor })
    }

    fn encode<M: Serialize>(msg: &M) -> Result<Vec<u8>, ClientError> {
        postcard::to_allocvec(msg).map_err(|e| ClientError::Serialize(e.to_string()))
    }

    /// Sends `msg` to one instance of the service at `path` (buffered while not
    /// connected).
    pub fn send<M: Serialize>(
        &self,
        path: &str,
        msg: &M,
        trace_context: Option<&str>,
    ) -> Result<(), ClientError> {
        let payload = Self::encode(msg)?;
        self.actor
            .cast(ClientMsg::Out(Outgoing::Send {
                path: path.to_string(),
                correlation: 0,
                payload,
                trace: trace_context.map(str::to_string),
            }))
            .map_err(|_| ClientError::Stopped)
    }

    /// Sends `msg` to the service at `path` and waits up to `timeout` for its reply
    /// (see [`ReplyTo::reply`]).
    pub async fn ask<M: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        msg: &M,
        trace_context: Option<&str>,
        timeout: Duration,
    ) -> Result<R, ClientError> {
        let payload = Self::encode(msg)?;
        let (tx, rx) = oneshot::channel();
        self.actor
            .cast(ClientMsg::Ask {
                path: path.to_string(),
                payload,
                trace: trace_context.map(str::to_string),
                reply: tx,
            })
            .map_err(|_| ClientError::Stopped)?;
        let bytes = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Stopped)?;
        postcard::from_bytes(&bytes).map_err(|e| ClientError::Serialize(e.to_string()))
    }

    /// Publishes `msg` to `topic` in the cluster (buffered while not connected).
    pub fn publish<M: Serialize>(
        &self,
        topic: &str,
        msg: &M,
        trace_context: Option<&str>,
    ) -> Result<(), ClientError> {
        let payload = Self::encode(msg)?;
        self.actor
            .cast(ClientMsg::Out(Outgoing::Publish {
                topic: topic.to_string(),
                payload,
                trace: trace_context.map(str::to_string),
            }))
            .map_err(|_| ClientError::Stopped)
    }

    /// Subscribes a local actor to `topic` through the receptionist; messages are
    /// decoded as `M`.
    pub async fn subscribe<M>(&self, topic: &str, actor: ActorRef<M>) -> Result<(), ClientError>
    where
        M: ractor::Message + DeserializeOwned,
    {
        self.subscribe_with(topic, actor, |d| d.decode::<M>()).await
    }

    /// Subscribes a local actor with a function that builds its message from the whole
    /// [`Delivery`] (topic, trace context, bytes).
    pub async fn subscribe_with<M, F>(
        &self,
        topic: &str,
        actor: ActorRef<M>,
        decode: F,
    ) -> Result<(), ClientError>
    where
        M: ractor::Message,
        F: Fn(&Delivery<'_>) -> Result<M, postcard::Error> + Send + Sync + 'static,
    {
        let cell = actor.get_cell();
        let sub = ClientSub {
            id: actor.get_id(),
            alive: Box::new(move || cell.get_status() != ActorStatus::Stopped),
            deliver: Arc::new(move |d: &Delivery<'_>| match decode(d) {
                Ok(m) => actor.cast(m).is_ok(),
                Err(e) => {
                    warn!(topic = d.topic, error = %e, "cannot decode a published message; dropped");
                    true
                }
            }),
        };
        let topic = topic.to_string();
        ractor::call!(self.actor, |r| ClientMsg::Subscribe(topic, sub, r))
            .map_err(|_| ClientError::Stopped)
    }

    /// Removes a subscription of a local actor.
    pub async fn unsubscribe(&self, topic: &str, actor: ActorId) -> Result<(), ClientError> {
        let topic = topic.to_string();
        ractor::call!(self.actor, |r| ClientMsg::Unsubscribe(topic, actor, r))
            .map_err(|_| ClientError::Stopped)
    }

    /// The receptionist the client is connected to, if any.
    pub async fn receptionist(&self) -> Option<NodeAddress> {
        ractor::call!(self.actor, ClientMsg::Current).ok().flatten()
    }

    /// The receptionists the client learned from its receptionist (tried, with the
    /// contact points, when it connects again).
    pub async fn learned_contacts(&self) -> Vec<NodeAddress> {
        ractor::call!(self.actor, ClientMsg::Learned).unwrap_or_default()
    }

    /// The client's counters.
    pub async fn stats(&self) -> ClientStats {
        ractor::call!(self.actor, ClientMsg::Stats).unwrap_or_default()
    }

    /// Stops the client (telling its receptionist).
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_lists_parse_like_cluster_seeds() {
        let c = parse_contacts(
            "akka.tcp://AkkaTrader@lighthouse-0:4053, 10.0.0.2:4053\tOther@h:1",
            "AkkaTrader",
        )
        .unwrap();
        assert_eq!(
            c,
            vec![
                NodeAddress::new("AkkaTrader", "lighthouse-0", 4053),
                NodeAddress::new("AkkaTrader", "10.0.0.2", 4053),
                NodeAddress::new("Other", "h", 1),
            ]
        );
        assert!(parse_contacts("", "S").unwrap().is_empty());
        assert!(parse_contacts("h:1,nope", "S").is_err());
    }
}
