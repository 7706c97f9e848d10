//! The cluster singleton: owns [`ClusterSingletonManager`] (one per node that may host
//! the singleton) and [`SingletonProxy`] (on any node that talks to it).
//!
//! Rules (Akka's, written down):
//! - The singleton runs on the **oldest member with the role whose status is Up**
//!   (lowest up number, then lowest address, the runtime's age order).
//! - A manager starts the instance only when it is that member **and** every older
//!   member with the role has confirmed that it runs no instance and never will again
//!   (`HandOverDone`), or has left the membership: after `removal_margin` when it was
//!   last seen Down (a crash), after `hand_over_timeout` otherwise (a graceful leave:
//!   the runtime's leader removes an Exiting member without waiting for its node to
//!   finish its shutdown phases, so that node may still be stopping its instance). A
//!   member confirms only when its own status is Leaving, Exiting or Down, or its node
//!   shut down, so the confirmation is permanent (statuses only move forward); a
//!   confirmed member therefore counts as not Up even before this node's view shows
//!   its new status.
//! - **Graceful leave**: when the host becomes Leaving it unregisters the instance,
//!   drains it (the mailbox is processed, then it stops) and, once it has stopped, sends
//!   `HandOverDone` to every other member with the role (and to whoever asks later). The new oldest starts the
//!   instance only then, so the old one stops before the new one starts. The
//!   coordinated-shutdown phase `cluster-exiting` waits for that stop.
//! - **Crash**: a host that stops answering is marked unreachable, downed by the
//!   split-brain resolver and removed; then the next oldest starts the instance.
//! - While the manager is the rightful host it restarts an instance that stopped on
//!   its own, after `restart_delay`.
//!
//! The instance is registered on the transport as [`instance_name`]`(name)`; the
//! manager as `singleton-manager/{name}`. A [`SingletonProxy`] asks the manager on the
//! oldest member (`Identify`) and is told `Located` once an instance runs there; it
//! sends to the instance directly from then on, and buffers up to `buffer_size`
//! messages (dropping the oldest) while it knows of none. On a change of the oldest
//! member, or when the manager reports that the instance stopped (`Gone`), it buffers
//! and asks again. Delivery is at most once, as in Akka: a message that reaches a host
//! while its instance is being handed over is lost.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use runtime::cluster::{Cluster, ClusterSnapshot};
use runtime::membership::MemberStatus;
use runtime::remote::Inbound;
use runtime::shutdown::CoordinatedShutdown;
use runtime::{NodeAddress, RemoteRef, Remoting, SendError, SendPolicy, UniqueAddress};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::view::{self, MemberView};

/// The transport name under which the instance of singleton `name` is registered.
pub fn instance_name(name: &str) -> String {
    format!("singleton/{name}")
}

fn manager_name(name: &str) -> String {
    format!("singleton-manager/{name}")
}

/// Settings of a [`ClusterSingletonManager`].
#[derive(Clone, Debug)]
pub struct SingletonSettings {
    /// Only members with this role host the singleton (`None`: every member).
    pub role: Option<String>,
    /// Interval of hand-over requests to older members and of status checks.
    pub retry_interval: Duration,
    /// Extra time to wait after an older member that was Down (crashed) and never
    /// confirmed was removed.
    pub removal_margin: Duration,
    /// How long to wait for the confirmation of an older member that was removed
    /// after a graceful leave (its node may still be stopping its instance) before
    /// starting without it.
    pub hand_over_timeout: Duration,
    /// Delay before an instance that stopped on its own is started again.
    pub restart_delay: Duration,
}

impl Default for SingletonSettings {
    fn default() -> Self {
        Self {
            role: None,
            retry_interval: Duration::from_secs(1),
            removal_margin: Duration::ZERO,
            hand_over_timeout: Duration::from_secs(15),
            restart_delay: Duration::from_secs(1),
        }
    }
}

/// Settings of a [`SingletonProxy`].
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Role of the members that host the singleton (must match the manager's).
    pub role: Option<String>,
    /// Interval of `Identify` requests while no instance is known.
    pub identify_interval: Duration,
    /// Messages kept while no instance is known; beyond it the oldest is dropped.
    pub buffer_size: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            role: None,
            identify_interval: Duration::from_secs(1),
            buffer_size: 1000,
        }
    }
}

/// Messages between managers, and from proxies to managers.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum ManagerProto {
    /// "I am the oldest now; confirm that you run no instance."
    HandOverToMe,
    /// "I run no instance and never will again."
    HandOverDone,
    /// A proxy (registered as `proxy` on the sender's node) asks where the instance is.
    Identify {
        /// Registered name of the proxy.
        proxy: String,
    },
}

/// Messages from managers to proxies.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum ProxyProto {
    /// The instance runs on the sender's node.
    Located,
    /// The instance on the sender's node stopped.
    Gone,
}

type SpawnFuture<M> = Pin<Box<dyn Future<Output = Result<ActorRef<M>, SpawnErr>> + Send>>;
type Factory<M> = Arc<dyn Fn(ActorCell) -> SpawnFuture<M> + Send + Sync>;
type Decode<M> = Arc<dyn Fn(Inbound<'_>) -> Result<M, postcard::Error> + Send + Sync>;

/// Local messages of a manager.
enum ManagerMsg {
    Snapshot(ClusterSnapshot),
    Tick,
    Remote(UniqueAddress, ManagerProto),
    /// Stop the instance for good (coordinated shutdown or [`ClusterSingletonManager::stop`]).
    Stop(RpcReplyPort<()>),
    IsRunning(RpcReplyPort<bool>),
}

struct Manager<M>(PhantomData<fn() -> M>);

struct ManagerArgs<M> {
    remoting: Remoting,
    name: String,
    settings: SingletonSettings,
    factory: Factory<M>,
    decode: Decode<M>,
    snapshot: ClusterSnapshot,
}

struct ManagerState<M> {
    me: UniqueAddress,
    remoting: Remoting,
    name: String,
    instance_name: String,
    settings: SingletonSettings,
    factory: Factory<M>,
    decode: Decode<M>,
    snapshot: ClusterSnapshot,
    instance: Option<ActorRef<M>>,
    stopping: Option<ActorRef<M>>,
    /// Older members that confirmed they run no instance.
    confirmed: HashSet<UniqueAddress>,
    /// Older members we are waiting for (to notice one vanishing unconfirmed).
    /// Last seen status and age of each member with the role.
    known: HashMap<UniqueAddress, (MemberStatus, (u64, NodeAddress))>,
    /// Members with the role that left the membership unconfirmed: age and until when
    /// they count as possibly running an instance.
    departed: HashMap<UniqueAddress, ((u64, NodeAddress), Instant)>,
    /// No start before this (restart delay, failed start).
    not_before: Option<Instant>,
    hand_over_to: HashSet<NodeAddress>,
    proxies: HashSet<(NodeAddress, String)>,
    pending_identify: HashSet<(NodeAddress, String)>,
    shut_down: bool,
    /// `HandOverDone` was sent to every member with the role.
    announced_out: bool,
    stop_waiters: Vec<RpcReplyPort<()>>,
}

impl<M: ractor::Message> ManagerState<M> {
    fn members(&self) -> Vec<MemberView> {
        view::members(&self.snapshot, self.settings.role.as_deref())
    }

    fn my_status(&self) -> Option<MemberStatus> {
        self.snapshot.self_status
    }

    /// This node's confirmation would be permanent: it will never host again.
    fn permanently_out(&self) -> bool {
        self.shut_down
            || matches!(
                self.my_status(),
                Some(
                    MemberStatus::Leaving
                        | MemberStatus::Exiting
                        | MemberStatus::Down
                        | MemberStatus::Removed
                )
            )
    }

    /// This node should host: it is Up, and the oldest Up member with the role once the
    /// members that confirmed the hand-over are left out (they declared themselves
    /// Leaving or gone for good, which this node's view may not show yet).
    fn rightful(&self, members: &[MemberView]) -> bool {
        let candidates: Vec<MemberView> = members
            .iter()
            .filter(|m| !self.confirmed.contains(&m.node))
            .cloned()
            .collect();
        !self.shut_down
            && self.my_status() == Some(MemberStatus::Up)
            && view::oldest_up(&candidates).is_some_and(|m| m.node == self.me)
    }

    fn send_manager(&self, to: &NodeAddress, msg: &ManagerProto) {
        let r = RemoteRef::<ManagerProto>::new(to.clone(), manager_name(&self.name));
        if let Err(e) = self.remoting.try_tell(&r, msg, None) {
            debug!(singleton = %self.name, to = %to, error = %e, "singleton message not sent");
        }
    }

    fn send_proxy(&self, to: &(NodeAddress, String), msg: &ProxyProto) {
        let r = RemoteRef::<ProxyProto>::new(to.0.clone(), to.1.clone());
        if let Err(e) = self.remoting.try_tell(&r, msg, None) {
            debug!(singleton = %self.name, to = %to.0, error = %e, "proxy message not sent");
        }
    }

    fn begin_stop(&mut self) {
        let Some(inst) = self.instance.take() else {
            return;
        };
        info!(singleton = %self.name, node = %self.me.address, "stopping the singleton instance (hand-over)");
        self.remoting.unregister(&self.instance_name);
        for p in std::mem::take(&mut self.proxies) {
            self.send_proxy(&p, &ProxyProto::Gone);
        }
        if inst.drain().is_err() || inst.get_status() == ActorStatus::Stopped {
            self.stopped();
        } else {
            self.stopping = Some(inst);
        }
    }

    /// The instance has stopped (after `begin_stop`).
    fn stopped(&mut self) {
        self.stopping = None;
        info!(singleton = %self.name, node = %self.me.address, "singleton instance stopped");
        self.confirm_if_out();
        for w in self.stop_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// When this node is permanently out and runs no instance: tells every other member
    /// with the role once (so whoever becomes the oldest, now or later, need not wait
    /// for this node's removal), and whoever asked since.
    fn confirm_if_out(&mut self) {
        if !self.permanently_out() || self.instance.is_some() || self.stopping.is_some() {
            return;
        }
        let mut to: HashSet<NodeAddress> = std::mem::take(&mut self.hand_over_to);
        if !self.announced_out {
            self.announced_out = true;
            to.extend(
                self.members()
                    .into_iter()
                    .filter(|m| m.has_role && m.node != self.me)
                    .map(|m| m.node.address),
            );
        }
        for n in to {
            self.send_manager(&n, &ManagerProto::HandOverDone);
        }
        for w in self.stop_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// The running instance ended without being asked to.
    fn crashed(&mut self) {
        if self.instance.take().is_some() {
            warn!(singleton = %self.name, node = %self.me.address, "singleton instance stopped on its own; restarting after the delay");
            self.remoting.unregister(&self.instance_name);
            for p in std::mem::take(&mut self.proxies) {
                self.send_proxy(&p, &ProxyProto::Gone);
            }
            self.not_before = Some(Instant::now() + self.settings.restart_delay);
        }
    }

    /// Notices members with the role that left the membership without confirming: one
    /// last seen Down (crashed) counts as possibly running for `removal_margin` more,
    /// any other (a graceful leave whose node may still be stopping its instance) for
    /// `hand_over_timeout`, or until it confirms.
    fn track_departures(&mut self, members: &[MemberView]) {
        let now = Instant::now();
        let present: HashMap<UniqueAddress, (MemberStatus, (u64, NodeAddress))> = members
            .iter()
            .filter(|m| m.has_role && m.up_number > 0 && m.node != self.me)
            .map(|m| {
                (
                    m.node.clone(),
                    (m.status, (m.up_number, m.node.address.clone())),
                )
            })
            .collect();
        for (n, (status, age)) in std::mem::take(&mut self.known) {
            if !present.contains_key(&n) && !self.confirmed.contains(&n) {
                let wait = if status == MemberStatus::Down {
                    self.settings.removal_margin
                } else {
                    self.settings.hand_over_timeout
                };
                debug!(singleton = %self.name, member = %n, %status, ?wait, "a member left the membership without confirming the hand-over");
                self.departed.insert(n, (age, now + wait));
            }
        }
        self.known = present;
        let confirmed = &self.confirmed;
        self.departed
            .retain(|n, (_, until)| now < *until && !confirmed.contains(n));
    }

    async fn evaluate(&mut self, myself: &ActorRef<ManagerMsg>, tick: bool) {
        // notice instances that stopped without a supervision event (not linked)
        if self
            .stopping
            .as_ref()
            .is_some_and(|s| s.get_status() == ActorStatus::Stopped)
        {
            self.stopped();
        }
        if self
            .instance
            .as_ref()
            .is_some_and(|s| s.get_status() == ActorStatus::Stopped)
        {
            self.crashed();
        }
        let members = self.members();
        self.track_departures(&members);
        let rightful = self.rightful(&members);
        if !rightful {
            self.begin_stop();
            self.confirm_if_out();
            return;
        }
        if self.instance.is_some() || self.stopping.is_some() {
            return;
        }
        let mine = members
            .iter()
            .find(|m| m.node == self.me)
            .map(|m| (m.up_number, m.node.address.clone()));
        let Some(mine) = mine else {
            return;
        };
        // older members that may still run an instance: those in the membership and
        // those that left it recently, unless they confirmed
        let mut pending: Vec<UniqueAddress> = members
            .iter()
            .filter(|m| {
                m.has_role
                    && m.node != self.me
                    && m.up_number > 0
                    && (m.up_number, &m.node.address) < (mine.0, &mine.1)
            })
            .map(|m| m.node.clone())
            .chain(
                self.departed
                    .iter()
                    .filter(|(_, (age, _))| *age < mine)
                    .map(|(n, _)| n.clone()),
            )
            .filter(|o| !self.confirmed.contains(o))
            .collect();
        pending.sort();
        pending.dedup();
        if !pending.is_empty() {
            for p in &pending {
                debug!(singleton = %self.name, to = %p, tick, "asking an older member to hand over");
                self.send_manager(&p.address, &ManagerProto::HandOverToMe);
            }
            return;
        }
        if self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.not_before = None;
        match (self.factory)(myself.get_cell()).await {
            Ok(inst) => {
                info!(singleton = %self.name, node = %self.me.address, "singleton instance started");
                let decode = self.decode.clone();
                self.remoting
                    .register_with(&self.instance_name, inst.clone(), move |inb| decode(inb));
                self.instance = Some(inst);
                for p in std::mem::take(&mut self.pending_identify) {
                    self.send_proxy(&p, &ProxyProto::Located);
                    self.proxies.insert(p);
                }
            }
            Err(e) => {
                warn!(singleton = %self.name, error = %e, "cannot start the singleton instance; retrying");
                self.not_before = Some(Instant::now() + self.settings.restart_delay);
            }
        }
    }
}

impl<M: ractor::Message> Actor for Manager<M> {
    type Msg = ManagerMsg;
    type State = ManagerState<M>;
    type Arguments = ManagerArgs<M>;

    async fn pre_start(
        &self,
        myself: ActorRef<ManagerMsg>,
        a: ManagerArgs<M>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(a.settings.retry_interval, || ManagerMsg::Tick);
        Ok(ManagerState {
            me: a.remoting.self_address().clone(),
            instance_name: instance_name(&a.name),
            remoting: a.remoting,
            name: a.name,
            settings: a.settings,
            factory: a.factory,
            decode: a.decode,
            snapshot: a.snapshot,
            instance: None,
            stopping: None,
            confirmed: HashSet::new(),
            known: HashMap::new(),
            departed: HashMap::new(),
            not_before: None,
            hand_over_to: HashSet::new(),
            proxies: HashSet::new(),
            pending_identify: HashSet::new(),
            shut_down: false,
            announced_out: false,
            stop_waiters: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ManagerMsg>,
        msg: ManagerMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ManagerMsg::Snapshot(s) => {
                st.snapshot = s;
                st.evaluate(&myself, false).await;
            }
            ManagerMsg::Tick => st.evaluate(&myself, true).await,
            ManagerMsg::Remote(from, p) => match p {
                ManagerProto::HandOverToMe => {
                    st.hand_over_to.insert(from.address.clone());
                    // replies once stopped, and only when permanently out
                    st.evaluate(&myself, false).await;
                }
                ManagerProto::HandOverDone => {
                    debug!(singleton = %st.name, from = %from, "older member confirmed the hand-over");
                    st.confirmed.insert(from);
                    st.evaluate(&myself, false).await;
                }
                ManagerProto::Identify { proxy } => {
                    let p = (from.address, proxy);
                    if st.instance.is_some() {
                        st.send_proxy(&p, &ProxyProto::Located);
                        st.proxies.insert(p);
                    } else {
                        st.pending_identify.insert(p);
                    }
                }
            },
            ManagerMsg::Stop(reply) => {
                st.shut_down = true;
                st.stop_waiters.push(reply);
                st.evaluate(&myself, false).await;
            }
            ManagerMsg::IsRunning(reply) => {
                let _ = reply.send(st.instance.is_some());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ManagerMsg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let who = match &evt {
            SupervisionEvent::ActorTerminated(c, _, _) => c.get_id(),
            SupervisionEvent::ActorFailed(c, e) => {
                warn!(singleton = %st.name, error = %e, "singleton instance failed");
                c.get_id()
            }
            _ => return Ok(()),
        };
        if st.stopping.as_ref().is_some_and(|s| s.get_id() == who) {
            st.stopped();
            st.evaluate(&myself, false).await;
        } else if st.instance.as_ref().is_some_and(|s| s.get_id() == who) {
            st.crashed();
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ManagerMsg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.remoting.unregister(&manager_name(&st.name));
        if st.instance.is_some() {
            st.remoting.unregister(&st.instance_name);
        }
        Ok(())
    }
}

/// Feeds every membership change of `watch` to `actor` until the actor stops.
fn forward_snapshots<T: ractor::Message>(
    mut watch: watch::Receiver<ClusterSnapshot>,
    actor: ActorRef<T>,
    wrap: fn(ClusterSnapshot) -> T,
) {
    tokio::spawn(async move {
        loop {
            let s = watch.borrow_and_update().clone();
            if actor.cast(wrap(s)).is_err() {
                return;
            }
            if watch.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Runs the singleton `name` on this node while it is the oldest member with the role;
/// see the [module docs](self) for the rules. Start one on every node that may host the
/// singleton.
#[derive(Clone)]
pub struct ClusterSingletonManager {
    actor: ActorRef<ManagerMsg>,
    name: String,
}

impl ClusterSingletonManager {
    /// Starts the manager of singleton `name` on this node.
    ///
    /// `factory` is called with the manager's actor cell each time an instance must
    /// start here; it should spawn the instance linked to that cell
    /// (`Actor::spawn_linked(None, actor, args, supervisor)`) so the manager learns at
    /// once when it stops (otherwise it notices at its next check). The instance
    /// receives messages of type `M` decoded from the transport.
    ///
    /// The manager hooks into coordinated shutdown (phase `cluster-exiting`) to stop
    /// the instance and hand over before the node exits.
    pub async fn start<M, F, Fut>(
        cluster: &Cluster,
        remoting: &Remoting,
        shutdown: &CoordinatedShutdown,
        name: &str,
        settings: SingletonSettings,
        factory: F,
    ) -> Result<Self, SpawnErr>
    where
        M: ractor::Message + DeserializeOwned,
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorRef<M>, SpawnErr>> + Send + 'static,
    {
        Self::start_with(
            cluster,
            remoting,
            shutdown,
            name,
            settings,
            factory,
            |inb| postcard::from_bytes(inb.payload),
        )
        .await
    }

    /// Like [`ClusterSingletonManager::start`], with a function that builds the
    /// instance's message from the whole inbound delivery (sender, W3C trace context
    /// sent with [`SingletonProxy::tell_traced`], bytes).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with<M, F, Fut, D>(
        cluster: &Cluster,
        remoting: &Remoting,
        shutdown: &CoordinatedShutdown,
        name: &str,
        settings: SingletonSettings,
        factory: F,
        decode: D,
    ) -> Result<Self, SpawnErr>
    where
        M: ractor::Message,
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorRef<M>, SpawnErr>> + Send + 'static,
        D: Fn(Inbound<'_>) -> Result<M, postcard::Error> + Send + Sync + 'static,
    {
        let factory: Factory<M> = Arc::new(move |cell| Box::pin(factory(cell)));
        let (actor, _) = Actor::spawn(
            None,
            Manager::<M>(PhantomData),
            ManagerArgs {
                remoting: remoting.clone(),
                name: name.to_string(),
                settings,
                factory,
                decode: Arc::new(decode),
                snapshot: cluster.state(),
            },
        )
        .await?;
        remoting.register_with(&manager_name(name), actor.clone(), |inb: Inbound<'_>| {
            Ok(ManagerMsg::Remote(
                inb.from.clone(),
                postcard::from_bytes(inb.payload)?,
            ))
        });
        forward_snapshots(cluster.watch(), actor.clone(), ManagerMsg::Snapshot);
        let handle = Self {
            actor,
            name: name.to_string(),
        };
        let h = handle.clone();
        if let Err(e) = shutdown.add_task(
            "cluster-exiting",
            &format!("singleton-{name}"),
            move |_| async move {
                h.stop().await;
            },
        ) {
            warn!(singleton = %name, error = %e, "cannot hook the singleton into coordinated shutdown");
        }
        Ok(handle)
    }

    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the instance runs on this node now.
    pub async fn is_running_here(&self) -> bool {
        ractor::call!(self.actor, ManagerMsg::IsRunning).unwrap_or(false)
    }

    /// Stops the instance on this node for good (it is handed over to the next oldest
    /// member once this node is Leaving or Down) and returns once it has stopped.
    pub async fn stop(&self) {
        let _ = ractor::call!(self.actor, ManagerMsg::Stop);
    }
}

/// Local messages of a proxy.
enum ProxyMsg<M> {
    Tell(M, Option<String>),
    Snapshot(ClusterSnapshot),
    Tick,
    Remote(UniqueAddress, ProxyProto),
    Current(RpcReplyPort<Option<NodeAddress>>),
    Dropped(RpcReplyPort<u64>),
}

struct Proxy<M>(PhantomData<fn() -> M>);

struct ProxyArgs {
    remoting: Remoting,
    name: String,
    registered_as: String,
    settings: ProxySettings,
    snapshot: ClusterSnapshot,
}

struct ProxyState<M> {
    remoting: Remoting,
    name: String,
    registered_as: String,
    settings: ProxySettings,
    oldest: Option<NodeAddress>,
    target: Option<RemoteRef<M>>,
    buffer: VecDeque<(M, Option<String>)>,
    dropped: u64,
}

impl<M: ractor::Message + Serialize> ProxyState<M> {
    fn identify(&self) {
        let Some(o) = &self.oldest else {
            return;
        };
        let r = RemoteRef::<ManagerProto>::new(o.clone(), manager_name(&self.name));
        let msg = ManagerProto::Identify {
            proxy: self.registered_as.clone(),
        };
        if let Err(e) = self.remoting.try_tell(&r, &msg, None) {
            debug!(singleton = %self.name, error = %e, "identify not sent");
        }
    }

    fn buffer(&mut self, msg: M, trace: Option<String>) {
        if self.settings.buffer_size == 0 {
            self.dropped += 1;
            return;
        }
        if self.buffer.len() >= self.settings.buffer_size {
            self.buffer.pop_front();
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                warn!(singleton = %self.name, dropped = self.dropped, "singleton proxy buffer full; dropping the oldest messages");
            }
        }
        self.buffer.push_back((msg, trace));
    }

    async fn send(&mut self, msg: M, trace: Option<String>) {
        let Some(t) = &self.target else {
            self.buffer(msg, trace);
            return;
        };
        let payload = match postcard::to_allocvec(&msg) {
            Ok(p) => p,
            Err(e) => {
                self.dropped += 1;
                warn!(singleton = %self.name, error = %e, "cannot serialize a message to the singleton");
                return;
            }
        };
        let (node, name) = (t.node.clone(), Arc::<str>::from(t.name.as_str()));
        match self
            .remoting
            .send_raw(&node, name, trace.as_deref(), payload, SendPolicy::Wait)
            .await
        {
            Ok(()) => {}
            Err(SendError::UnknownRecipient(_)) => {
                // local instance just stopped: keep the message for the next one
                self.target = None;
                self.buffer(msg, trace);
            }
            Err(e) => {
                self.dropped += 1;
                debug!(singleton = %self.name, error = %e, "message to the singleton dropped");
            }
        }
    }

    async fn flush(&mut self) {
        while self.target.is_some() {
            let Some((m, t)) = self.buffer.pop_front() else {
                return;
            };
            self.send(m, t).await;
        }
    }
}

impl<M: ractor::Message + Serialize> Actor for Proxy<M> {
    type Msg = ProxyMsg<M>;
    type State = ProxyState<M>;
    type Arguments = ProxyArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        a: ProxyArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(a.settings.identify_interval, || ProxyMsg::Tick);
        let members = view::members(&a.snapshot, a.settings.role.as_deref());
        let oldest = view::oldest_up(&members).map(|m| m.node.address.clone());
        let st = ProxyState {
            remoting: a.remoting,
            name: a.name,
            registered_as: a.registered_as,
            settings: a.settings,
            oldest,
            target: None,
            buffer: VecDeque::new(),
            dropped: 0,
        };
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProxyMsg::Tell(m, t) => st.send(m, t).await,
            ProxyMsg::Snapshot(s) => {
                let members = view::members(&s, st.settings.role.as_deref());
                let oldest = view::oldest_up(&members).map(|m| m.node.address.clone());
                if oldest != st.oldest {
                    debug!(singleton = %st.name, ?oldest, "oldest member changed; identifying the singleton again");
                    st.oldest = oldest;
                    st.target = None;
                    st.identify();
                }
            }
            ProxyMsg::Tick => {
                if st.target.is_none() {
                    st.identify();
                }
            }
            ProxyMsg::Remote(from, ProxyProto::Located) => {
                st.target = Some(RemoteRef::new(from.address, instance_name(&st.name)));
                st.flush().await;
            }
            ProxyMsg::Remote(from, ProxyProto::Gone) => {
                if st.target.as_ref().is_some_and(|t| t.node == from.address) {
                    st.target = None;
                    st.identify();
                }
            }
            ProxyMsg::Current(reply) => {
                let _ = reply.send(st.target.as_ref().map(|t| t.node.clone()));
            }
            ProxyMsg::Dropped(reply) => {
                let _ = reply.send(st.dropped);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.remoting.unregister(&st.registered_as);
        Ok(())
    }
}

/// Routes messages to the current instance of singleton `name`, wherever it runs;
/// cheap to clone. See the [module docs](self).
pub struct SingletonProxy<M> {
    actor: ActorRef<ProxyMsg<M>>,
}

impl<M> Clone for SingletonProxy<M> {
    fn clone(&self) -> Self {
        Self {
            actor: self.actor.clone(),
        }
    }
}

impl<M: ractor::Message + Serialize> SingletonProxy<M> {
    /// Starts a proxy to singleton `name` on this node.
    pub async fn start(
        cluster: &Cluster,
        remoting: &Remoting,
        name: &str,
        settings: ProxySettings,
    ) -> Result<Self, SpawnErr> {
        let registered_as = format!("singleton-proxy/{name}/{:016x}", rand::random::<u64>());
        let (actor, _) = Actor::spawn(
            None,
            Proxy::<M>(PhantomData),
            ProxyArgs {
                remoting: remoting.clone(),
                name: name.to_string(),
                registered_as: registered_as.clone(),
                settings,
                snapshot: cluster.state(),
            },
        )
        .await?;
        remoting.register_with(&registered_as, actor.clone(), |inb: Inbound<'_>| {
            Ok(ProxyMsg::Remote(
                inb.from.clone(),
                postcard::from_bytes(inb.payload)?,
            ))
        });
        forward_snapshots(cluster.watch(), actor.clone(), ProxyMsg::Snapshot);
        Ok(Self { actor })
    }

    /// Sends `msg` to the singleton (buffered while no instance is known). Fails only
    /// when the proxy has stopped.
    pub fn tell(&self, msg: M) -> Result<(), ProxyStopped> {
        self.tell_traced(msg, None)
    }

    /// Like [`SingletonProxy::tell`], with a W3C trace context that travels with the
    /// message.
    pub fn tell_traced(&self, msg: M, trace_context: Option<String>) -> Result<(), ProxyStopped> {
        self.actor
            .cast(ProxyMsg::Tell(msg, trace_context))
            .map_err(|_| ProxyStopped)
    }

    /// The node of the instance the proxy currently sends to, if it knows one.
    pub async fn current(&self) -> Option<NodeAddress> {
        ractor::call!(self.actor, ProxyMsg::Current).ok().flatten()
    }

    /// Messages dropped so far (buffer overflow or a failed send).
    pub async fn dropped(&self) -> u64 {
        ractor::call!(self.actor, ProxyMsg::Dropped).unwrap_or(0)
    }

    /// Stops the proxy; buffered messages are dropped.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}

/// The proxy has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the singleton proxy has stopped")]
pub struct ProxyStopped;
