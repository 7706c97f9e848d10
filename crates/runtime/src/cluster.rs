//! The membership daemon: a ractor actor, registered on the transport as `cluster`,
//! that joins the cluster, gossips the membership state, sends and watches heartbeats,
//! marks members unreachable/reachable, runs the leader actions and the split-brain
//! resolver, publishes cluster events, and shuts its node down when the node is downed
//! or removed. [`Cluster`] is the handle other code uses.
//!
//! Protocol (messages of [`ClusterProto`], each sent to the `cluster` actor of a node):
//! - join: `InitJoin` to every contact point; members answer `InitJoinAck`, nodes
//!   that are not members yet `InitJoinNack`; the joiner sends `Join` to the first that
//!   acknowledged and gets `Welcome` with the state (itself added as Joining). Who may
//!   form a new cluster is decided by [`crate::discovery`].
//! - gossip: every gossip interval each member sends its state to one reachable member,
//!   preferring members that have not seen the current version; a receiver that has a
//!   newer or concurrent version, or knows of more members that saw it, answers with its
//!   own, so a round trip converges both.
//! - heartbeat: every heartbeat interval to every other member; each receiver feeds
//!   its phi-accrual detector of the sender.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tracing::{debug, error, info, warn};

use crate::address::{NodeAddress, UniqueAddress};
use crate::app_version::AppVersion;
use crate::discovery::Discovery;
use crate::failure_detector::{FailureDetectorConfig, PhiAccrual};
use crate::membership::{ClockOrder, Gossip, Member, MemberStatus, MinMembers, leader_actions};
use crate::metrics::MailboxDepth;
use crate::remote::Remoting;
use crate::sbr::{self, SbrConfig};
use crate::shutdown::{CoordinatedShutdown, Reason};

/// Registered name of the membership daemon on every node.
pub const CLUSTER_ACTOR: &str = "cluster";

/// Settings of membership.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's roles.
    pub roles: BTreeSet<String>,
    /// The application version this node runs.
    pub app_version: AppVersion,
    /// Whom to join.
    pub discovery: Discovery,
    /// Minimum members (total and per role) before the leader moves members Up.
    pub min_members: MinMembers,
    /// Gossip and leader-action interval (Akka: 1 s).
    pub gossip_interval: Duration,
    /// Failure detector (heartbeat interval, threshold, acceptable pause).
    pub failure_detector: FailureDetectorConfig,
    /// Split-brain resolver; `None` leaves unreachable members to an operator.
    pub sbr: Option<SbrConfig>,
    /// Time the first seed waits for other seeds before forming the cluster alone.
    pub seed_node_timeout: Duration,
    /// Interval of join attempts.
    pub join_retry_interval: Duration,
    /// Give up (exit non-zero) when not joined after this long; `None` retries forever.
    pub shutdown_after_unsuccessful_join: Option<Duration>,
    /// How long an Exiting node waits to be told it was removed before shutting down.
    pub exiting_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            roles: BTreeSet::new(),
            app_version: AppVersion::built(),
            discovery: Discovery::Static(Vec::new()),
            min_members: MinMembers::default(),
            gossip_interval: Duration::from_secs(1),
            failure_detector: FailureDetectorConfig::default(),
            sbr: Some(SbrConfig::default()),
            seed_node_timeout: Duration::from_secs(5),
            join_retry_interval: Duration::from_secs(1),
            shutdown_after_unsuccessful_join: Some(Duration::from_secs(60)),
            exiting_timeout: Duration::from_secs(5),
        }
    }
}

impl ClusterConfig {
    /// Settings scaled for tests: gossip and heartbeat every `tick`, short pauses.
    pub fn fast(tick: Duration) -> Self {
        Self {
            gossip_interval: tick,
            failure_detector: FailureDetectorConfig {
                heartbeat_interval: tick,
                acceptable_pause: tick * 6,
                min_std_deviation: tick / 2,
                ..FailureDetectorConfig::default()
            },
            sbr: Some(SbrConfig {
                stable_after: tick * 10,
                ..SbrConfig::default()
            }),
            seed_node_timeout: tick * 5,
            join_retry_interval: tick,
            exiting_timeout: tick * 10,
            ..Self::default()
        }
    }
}

/// Messages between the daemons of different nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterProto {
    /// "Are you a member?"
    InitJoin,
    /// "Yes, join through me."
    InitJoinAck,
    /// "No, I am not a member (yet)."
    InitJoinNack,
    /// Request to be added as Joining.
    Join {
        /// Roles of the joiner.
        roles: BTreeSet<String>,
        /// The application version the joiner runs.
        app_version: AppVersion,
    },
    /// Answer to `Join`: the state, with the joiner in it.
    Welcome(Box<Gossip>),
    /// The state, for the incarnation with uid `to_uid`.
    Gossip {
        /// Receiver's uid (gossip to an old incarnation is ignored).
        to_uid: u64,
        /// The state.
        gossip: Box<Gossip>,
    },
    /// Liveness signal.
    Heartbeat,
    /// "My shutdown is past the shard hand-off: remove me." Sent by an Exiting (or
    /// Leaving) node to every member, again each gossip tick until it is removed, since
    /// the leader may change meanwhile (Akka's `ExitingConfirmed`).
    ExitingConfirmed,
}

/// A member as shown to operators and subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Address, e.g. `akka.tcp://AkkaTrader@127.0.0.1:4053`.
    pub node: String,
    /// uid of this incarnation.
    #[serde(rename = "nodeUid")]
    pub uid: u64,
    /// Status.
    pub status: MemberStatus,
    /// Roles.
    pub roles: BTreeSet<String>,
    /// False when some member cannot reach it.
    pub reachable: bool,
    /// Up order (1 = oldest; 0 = not yet Up).
    #[serde(rename = "upNumber")]
    pub up_number: u64,
    /// The application version it runs.
    #[serde(rename = "appVersion")]
    pub app_version: AppVersion,
}

/// Events published to subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClusterEvent {
    /// A member was added as Joining.
    MemberJoined {
        /// The member.
        member: MemberInfo,
    },
    /// A member became Up.
    MemberUp {
        /// The member.
        member: MemberInfo,
    },
    /// A member is Leaving.
    MemberLeft {
        /// The member.
        member: MemberInfo,
    },
    /// A member is Exiting.
    MemberExited {
        /// The member.
        member: MemberInfo,
    },
    /// A member was downed.
    MemberDowned {
        /// The member.
        member: MemberInfo,
    },
    /// A member was removed.
    MemberRemoved {
        /// The member (status Removed).
        member: MemberInfo,
        /// Its status before removal.
        #[serde(rename = "previousStatus")]
        previous_status: MemberStatus,
    },
    /// Some member cannot reach this one.
    UnreachableMember {
        /// The member.
        member: MemberInfo,
    },
    /// Reachable again.
    ReachableMember {
        /// The member.
        member: MemberInfo,
    },
    /// The leader changed.
    LeaderChanged {
        /// New leader, if any.
        leader: Option<String>,
    },
}

/// A point-in-time view of the membership as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    /// This node.
    #[serde(rename = "selfNode")]
    pub self_node: String,
    /// This node's uid.
    #[serde(rename = "selfUid")]
    pub self_uid: u64,
    /// This node's status; `None` before it joined.
    #[serde(rename = "selfStatus")]
    pub self_status: Option<MemberStatus>,
    /// Leader, if any.
    pub leader: Option<String>,
    /// Oldest Up member, if any.
    pub oldest: Option<String>,
    /// Whether the state converged.
    pub converged: bool,
    /// Members, by address.
    pub members: Vec<MemberInfo>,
    /// Unreachable members and who observed it.
    pub unreachable: Vec<UnreachableInfo>,
}

/// One unreachable member.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnreachableInfo {
    /// The member.
    pub node: String,
    /// Members that cannot reach it.
    #[serde(rename = "observedBy")]
    pub observed_by: Vec<String>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// Gossip messages sent.
    pub gossip_sent: AtomicU64,
    /// Gossip messages received.
    pub gossip_received: AtomicU64,
    /// Heartbeats sent.
    pub heartbeats_sent: AtomicU64,
    /// Heartbeats received.
    pub heartbeats_received: AtomicU64,
    /// Members the resolver downed from this node.
    pub sbr_downed: AtomicU64,
    /// Messages waiting in the daemon's mailbox (`actor_mailbox_depth{actor_name="cluster"}`).
    pub mailbox: MailboxDepth,
}

type Subscriber = Box<dyn Fn(&ClusterEvent) -> bool + Send>;

/// Local messages of the daemon.
pub enum ClusterMsg {
    /// From the daemon of another node.
    Remote(UniqueAddress, ClusterProto),
    /// Gossip, leader actions, resolver.
    GossipTick,
    /// Heartbeats and reachability.
    HeartbeatTick,
    /// Join attempts.
    JoinTick,
    /// Mark the member at this address Leaving.
    Leave(NodeAddress),
    /// Mark the member at this address Down.
    Down(NodeAddress),
    /// This node's coordinated shutdown reached `cluster-exiting`: confirm the exit.
    ConfirmExiting,
    /// Add an event subscriber (dropped when it returns false).
    Subscribe(Subscriber),
}

fn info_of(m: &Member, unreachable: &BTreeSet<UniqueAddress>) -> MemberInfo {
    MemberInfo {
        node: m.address.address.to_string(),
        uid: m.address.uid,
        status: m.status,
        roles: m.roles.clone(),
        reachable: !unreachable.contains(&m.address),
        up_number: m.up_number,
        app_version: m.app_version.clone(),
    }
}

/// Events that lead from `before` to `after`, as seen by `me`.
pub fn diff(before: &Gossip, after: &Gossip, me: &UniqueAddress) -> Vec<ClusterEvent> {
    let mut out = Vec::new();
    let ua = after.unreachable();
    let ub = before.unreachable();
    for (a, m) in &after.members {
        let changed = before.members.get(a).is_none_or(|o| o.status != m.status);
        if changed {
            let member = info_of(m, &ua);
            out.push(match m.status {
                MemberStatus::Joining => ClusterEvent::MemberJoined { member },
                MemberStatus::Up => ClusterEvent::MemberUp { member },
                MemberStatus::Leaving => ClusterEvent::MemberLeft { member },
                MemberStatus::Exiting => ClusterEvent::MemberExited { member },
                MemberStatus::Down => ClusterEvent::MemberDowned { member },
                MemberStatus::Removed => continue,
            });
        }
    }
    for (a, m) in &before.members {
        if !after.members.contains_key(a) {
            let mut member = info_of(m, &ub);
            member.status = MemberStatus::Removed;
            out.push(ClusterEvent::MemberRemoved {
                member,
                previous_status: m.status,
            });
        }
    }
    for a in ua.difference(&ub) {
        if let Some(m) = after.members.get(a) {
            out.push(ClusterEvent::UnreachableMember {
                member: info_of(m, &ua),
            });
        }
    }
    for a in ub.difference(&ua) {
        if let Some(m) = after.members.get(a) {
            out.push(ClusterEvent::ReachableMember {
                member: info_of(m, &ua),
            });
        }
    }
    let lb = before.leader(me);
    let la = after.leader(me);
    if lb != la {
        out.push(ClusterEvent::LeaderChanged {
            leader: la.map(|l| l.address.to_string()),
        });
    }
    out
}

fn snapshot_of(g: &Gossip, me: &UniqueAddress, joined: bool, removed: bool) -> ClusterSnapshot {
    let ua = g.unreachable();
    let mut members: Vec<MemberInfo> = g.members.values().map(|m| info_of(m, &ua)).collect();
    members.sort_by(|a, b| a.node.cmp(&b.node));
    ClusterSnapshot {
        self_node: me.address.to_string(),
        self_uid: me.uid,
        self_status: if removed {
            Some(MemberStatus::Removed)
        } else if joined {
            g.member(me).map(|m| m.status)
        } else {
            None
        },
        leader: g.leader(me).map(|l| l.address.to_string()),
        oldest: g.oldest(None).map(|m| m.address.address.to_string()),
        converged: g.converged(),
        members,
        unreachable: ua
            .iter()
            .map(|u| UnreachableInfo {
                node: u.address.to_string(),
                observed_by: g
                    .observers_of(u)
                    .iter()
                    .map(|o| o.address.to_string())
                    .collect(),
            })
            .collect(),
    }
}

struct Daemon;

struct State {
    me: UniqueAddress,
    remoting: Remoting,
    cfg: ClusterConfig,
    gossip: Gossip,
    joined: bool,
    removed: bool,
    join_started: Instant,
    join_sent: Option<Instant>,
    last_points: Vec<NodeAddress>,
    detectors: HashMap<UniqueAddress, PhiAccrual>,
    unreachable_since: Option<(BTreeSet<UniqueAddress>, Instant)>,
    /// When this node confirmed its exit (it then waits `exiting_timeout` for removal).
    exiting_since: Option<Instant>,
    /// Members that confirmed their exit to this node; the leader removes those.
    exiting_confirmed: BTreeSet<UniqueAddress>,
    events: broadcast::Sender<ClusterEvent>,
    subscribers: Vec<Subscriber>,
    snapshot: watch::Sender<ClusterSnapshot>,
    metrics: Arc<ClusterMetrics>,
    shutdown: CoordinatedShutdown,
    recipient: Arc<str>,
}

struct Args {
    remoting: Remoting,
    cfg: ClusterConfig,
    events: broadcast::Sender<ClusterEvent>,
    snapshot: watch::Sender<ClusterSnapshot>,
    metrics: Arc<ClusterMetrics>,
    shutdown: CoordinatedShutdown,
}

impl State {
    fn send(&self, to: &NodeAddress, msg: &ClusterProto) {
        match postcard::to_allocvec(msg) {
            Ok(bytes) => {
                if let Err(e) = self
                    .remoting
                    .try_send_raw(to, self.recipient.clone(), None, bytes)
                {
                    debug!(to = %to, error = %e, "cluster message not queued");
                }
            }
            Err(e) => error!(error = %e, "cannot encode cluster message"),
        }
    }

    fn send_gossip(&self, to: &UniqueAddress) {
        self.metrics.gossip_sent.fetch_add(1, Ordering::Relaxed);
        self.send(
            &to.address,
            &ClusterProto::Gossip {
                to_uid: to.uid,
                gossip: Box::new(self.gossip.clone()),
            },
        );
    }

    fn publish(&mut self, events: Vec<ClusterEvent>) {
        for e in events {
            info!(node = %self.me.address, event = ?e, "cluster event");
            let _ = self.events.send(e.clone());
            self.subscribers.retain(|s| s(&e));
        }
    }

    fn refresh_snapshot(&self) {
        self.snapshot.send_replace(snapshot_of(
            &self.gossip,
            &self.me,
            self.joined,
            self.removed,
        ));
    }

    /// Everything that follows a change of the state.
    fn after_change(&mut self, before: &Gossip) {
        let events = diff(before, &self.gossip, &self.me);
        let new_tombstones: Vec<&UniqueAddress> = self
            .gossip
            .tombstones
            .keys()
            .filter(|t| !before.tombstones.contains_key(*t))
            .collect();
        for t in new_tombstones {
            self.detectors.remove(t);
            if *t == self.me {
                continue;
            }
            self.remoting.quarantine(t);
            // Stop the link a little later, so the last gossip still reaches the member;
            // but not when a new incarnation at the same address is a member by then: the
            // link (one per address) is now its link, and senders that resolved it (shard
            // regions, the coordinator) would be left with a closed one.
            let remoting = self.remoting.clone();
            let addr = t.address.clone();
            let old_uid = t.uid;
            let members = self.snapshot.subscribe();
            let delay = self.cfg.gossip_interval * 3;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let node = addr.to_string();
                let replaced = members
                    .borrow()
                    .members
                    .iter()
                    .any(|m| m.node == node && m.uid != old_uid);
                if !replaced {
                    remoting.forget_peer(&addr);
                }
            });
        }
        self.publish(events);
        self.refresh_snapshot();
        if self.gossip.tombstones.contains_key(&self.me) {
            self.self_removed();
            return;
        }
        match self.gossip.member(&self.me).map(|m| m.status) {
            Some(MemberStatus::Down) => {
                warn!(node = %self.me.address, "this node was downed; shutting down");
                self.shutdown.run(Reason::Downed);
            }
            Some(MemberStatus::Leaving) if self.shutdown.reason().is_none() => {
                // asked to leave from elsewhere: run the shutdown phases (hand-off first)
                self.shutdown.run(Reason::Leave);
            }
            _ => {}
        }
    }

    /// This node's shutdown is past the shard hand-off: tell every member, so that the
    /// leader removes it, and give the removal `exiting_timeout` to arrive.
    fn confirm_exiting(&mut self) {
        if self.removed || !self.joined || self.exiting_since.is_some() {
            return;
        }
        info!(node = %self.me.address, "confirming this node's exit");
        self.exiting_since = Some(Instant::now());
        // Confirmed to itself too: the last member, or one that leads because no other is
        // Up, removes itself.
        self.exiting_confirmed.insert(self.me.clone());
        self.broadcast_exiting_confirmed();
    }

    fn broadcast_exiting_confirmed(&self) {
        for m in self.gossip.members.keys() {
            if *m != self.me {
                self.send(&m.address, &ClusterProto::ExitingConfirmed);
            }
        }
    }

    fn self_removed(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        if let Some(m) = self.gossip.member(&self.me).cloned() {
            let mut member = info_of(&m, &BTreeSet::new());
            member.status = MemberStatus::Removed;
            self.publish(vec![ClusterEvent::MemberRemoved {
                member,
                previous_status: m.status,
            }]);
        }
        info!(node = %self.me.address, "this node was removed from the cluster; shutting down");
        self.refresh_snapshot();
        self.shutdown.run(Reason::Removed);
    }

    fn join_self(&mut self) {
        info!(node = %self.me.address, "forming a new cluster");
        let before = self.gossip.clone();
        self.gossip.members.insert(
            self.me.clone(),
            Member::joining(
                self.me.clone(),
                self.cfg.roles.clone(),
                self.cfg.app_version.clone(),
            ),
        );
        self.gossip.changed_by(&self.me);
        self.joined = true;
        self.after_change(&before);
    }

    async fn join_tick(&mut self) {
        if self.joined || self.removed {
            return;
        }
        let waited = self.join_started.elapsed();
        if let Some(limit) = self.cfg.shutdown_after_unsuccessful_join
            && waited >= limit
        {
            error!(node = %self.me.address, ?limit, "could not join any seed node; shutting down (shutdown-after-unsuccessful-join)");
            self.removed = true;
            self.shutdown.run(Reason::JoinFailed);
            return;
        }
        if let Some(t) = self.join_sent {
            if t.elapsed() < self.cfg.join_retry_interval * 5 {
                return;
            }
            self.join_sent = None;
        }
        let points =
            match tokio::time::timeout(Duration::from_secs(5), self.cfg.discovery.contact_points())
                .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    warn!(error = %e, "discovery failed");
                    return;
                }
                Err(_) => {
                    warn!("discovery timed out");
                    return;
                }
            };
        let stable = points == self.last_points;
        self.last_points = points.clone();
        let others: Vec<&NodeAddress> = points.iter().filter(|p| **p != self.me.address).collect();
        for p in &others {
            self.send(p, &ClusterProto::InitJoin);
        }
        if self
            .cfg
            .discovery
            .may_form(&points, &self.me.address, stable)
        {
            let timeout = if self.cfg.discovery.is_static() {
                self.cfg.seed_node_timeout
            } else {
                // dynamic discovery: give the probes sent above one retry interval to be answered
                self.cfg.join_retry_interval
            };
            if others.is_empty() || waited >= timeout {
                self.join_self();
            }
        }
    }

    fn handle_remote(&mut self, from: UniqueAddress, msg: ClusterProto) {
        match msg {
            ClusterProto::Heartbeat => {
                self.metrics
                    .heartbeats_received
                    .fetch_add(1, Ordering::Relaxed);
                let fd = &self.cfg.failure_detector;
                let now = Instant::now();
                if let Some(d) = self.detectors.get_mut(&from) {
                    d.heartbeat(fd, now);
                }
            }
            ClusterProto::InitJoin => {
                let member = self.joined
                    && !self.removed
                    && self.gossip.member(&self.me).is_some_and(|m| {
                        matches!(m.status, MemberStatus::Joining | MemberStatus::Up)
                    });
                let reply = if member {
                    ClusterProto::InitJoinAck
                } else {
                    ClusterProto::InitJoinNack
                };
                self.send(&from.address, &reply);
            }
            ClusterProto::InitJoinAck => {
                if !self.joined && self.join_sent.is_none() {
                    info!(node = %self.me.address, via = %from.address, "joining");
                    self.send(
                        &from.address,
                        &ClusterProto::Join {
                            roles: self.cfg.roles.clone(),
                            app_version: self.cfg.app_version.clone(),
                        },
                    );
                    self.join_sent = Some(Instant::now());
                }
            }
            ClusterProto::InitJoinNack => {}
            ClusterProto::ExitingConfirmed => {
                if self.gossip.members.contains_key(&from)
                    && self.exiting_confirmed.insert(from.clone())
                {
                    debug!(node = %self.me.address, member = %from, "member confirmed its exit");
                }
            }
            ClusterProto::Join { roles, app_version } => self.handle_join(from, roles, app_version),
            ClusterProto::Welcome(g) => {
                if self.joined || self.removed || !g.members.contains_key(&self.me) {
                    return;
                }
                let before = self.gossip.clone();
                self.gossip = *g;
                self.gossip.seen.insert(self.me.clone());
                self.joined = true;
                info!(node = %self.me.address, via = %from.address, "welcomed into the cluster");
                self.after_change(&before);
                self.send_gossip(&from);
            }
            ClusterProto::Gossip { to_uid, gossip } => {
                if to_uid != self.me.uid || !self.joined || self.removed {
                    return;
                }
                self.metrics.gossip_received.fetch_add(1, Ordering::Relaxed);
                self.receive_gossip(from, *gossip);
            }
        }
    }

    fn handle_join(
        &mut self,
        from: UniqueAddress,
        roles: BTreeSet<String>,
        app_version: AppVersion,
    ) {
        if !self.joined || self.removed || self.gossip.tombstones.contains_key(&from) {
            return;
        }
        let my_status = self.gossip.member(&self.me).map(|m| m.status);
        if !matches!(my_status, Some(MemberStatus::Joining | MemberStatus::Up)) {
            return;
        }
        if !self.gossip.members.contains_key(&from) {
            let before = self.gossip.clone();
            let old: Vec<UniqueAddress> = self
                .gossip
                .members
                .keys()
                .filter(|m| m.address == from.address)
                .cloned()
                .collect();
            for o in old {
                info!(old = %o, new = %from, "a new incarnation replaces the old one; downing the old");
                self.gossip.set_status(&o, MemberStatus::Down);
            }
            self.gossip.members.insert(
                from.clone(),
                Member::joining(from.clone(), roles, app_version),
            );
            self.gossip.changed_by(&self.me);
            self.after_change(&before);
        }
        self.send(
            &from.address,
            &ClusterProto::Welcome(Box::new(self.gossip.clone())),
        );
    }

    fn receive_gossip(&mut self, from: UniqueAddress, remote: Gossip) {
        if remote.tombstones.contains_key(&self.me) {
            let before = self.gossip.clone();
            self.gossip = self.gossip.merge(&remote);
            self.after_change(&before);
            return;
        }
        if !remote.members.contains_key(&self.me) {
            debug!(from = %from, "ignoring gossip without this node");
            return;
        }
        let before = self.gossip.clone();
        let order = self.gossip.version.compare(&remote.version);
        let reply;
        match order {
            ClockOrder::Same => {
                self.gossip.seen.extend(remote.seen.iter().cloned());
                reply = self.gossip.seen.len() > remote.seen.len();
            }
            ClockOrder::Before => {
                self.gossip = remote;
                self.gossip.seen.insert(self.me.clone());
                reply = true;
            }
            ClockOrder::After => reply = true,
            ClockOrder::Concurrent => {
                self.gossip = self.gossip.merge(&remote);
                self.gossip.seen.insert(self.me.clone());
                reply = true;
            }
        }
        if self.gossip != before {
            self.after_change(&before);
        }
        if reply && self.gossip.members.contains_key(&from) {
            self.send_gossip(&from);
        }
    }

    fn mark(&mut self, a: &NodeAddress, status: MemberStatus) {
        if !self.joined || self.removed {
            return;
        }
        let target = self
            .gossip
            .members
            .values()
            .filter(|m| m.address.address == *a)
            .map(|m| m.address.clone())
            .collect::<Vec<_>>();
        let before = self.gossip.clone();
        let mut changed = false;
        for t in target {
            let cur = self.gossip.member(&t).map(|m| m.status);
            let ok = match status {
                MemberStatus::Leaving => {
                    matches!(cur, Some(MemberStatus::Joining | MemberStatus::Up))
                }
                _ => true,
            };
            if ok && self.gossip.set_status(&t, status) {
                info!(node = %self.me.address, member = %t, %status, "member marked");
                changed = true;
            }
        }
        if changed {
            self.gossip.changed_by(&self.me);
            self.after_change(&before);
            self.gossip_round();
        }
    }

    fn gossip_round(&self) {
        let unreachable = self.gossip.unreachable();
        let candidates: Vec<&UniqueAddress> = self
            .gossip
            .members
            .values()
            .filter(|m| m.address != self.me && m.status != MemberStatus::Down)
            .filter(|m| !unreachable.contains(&m.address))
            .map(|m| &m.address)
            .collect();
        let unseen: Vec<&UniqueAddress> = candidates
            .iter()
            .filter(|a| !self.gossip.seen.contains(**a))
            .copied()
            .collect();
        let mut rng = rand::rng();
        let pick = if !unseen.is_empty() && rand::random::<f64>() < 0.8 {
            unseen.choose(&mut rng)
        } else {
            candidates.choose(&mut rng)
        };
        if let Some(t) = pick {
            self.send_gossip(t);
        }
    }

    fn gossip_tick(&mut self) {
        if !self.joined || self.removed {
            return;
        }
        if let Some(t) = self.exiting_since {
            if t.elapsed() >= self.cfg.exiting_timeout {
                info!(node = %self.me.address, "exiting timeout reached without removal notice");
                self.self_removed();
                return;
            }
            self.broadcast_exiting_confirmed();
        }
        let members = &self.gossip.members;
        self.exiting_confirmed.retain(|a| members.contains_key(a));
        self.gossip.prune_tombstones(
            crate::membership::TOMBSTONE_TTL,
            crate::membership::now_millis(),
        );
        // leader actions
        let before = self.gossip.clone();
        let acts = leader_actions(
            &mut self.gossip,
            &self.me,
            &self.cfg.min_members,
            &self.exiting_confirmed,
        );
        if !acts.is_empty() {
            debug!(node = %self.me.address, ?acts, "leader actions");
            for r in acts.removed.iter().filter(|r| **r != self.me) {
                // tell the removed member (best effort) so it shuts down
                self.send_gossip(r);
            }
            self.after_change(&before);
            if self.removed {
                return;
            }
        }
        self.resolve_split_brain();
        if self.removed {
            return;
        }
        self.gossip_round();
    }

    fn resolve_split_brain(&mut self) {
        let Some(sbr_cfg) = self.cfg.sbr.clone() else {
            return;
        };
        let unreachable: BTreeSet<UniqueAddress> = self
            .gossip
            .unreachable()
            .into_iter()
            .filter(|u| {
                self.gossip
                    .member(u)
                    .is_some_and(|m| m.status != MemberStatus::Down)
            })
            .collect();
        if unreachable.is_empty() {
            self.unreachable_since = None;
            return;
        }
        let since = match &self.unreachable_since {
            Some((set, t)) if *set == unreachable => *t,
            _ => {
                self.unreachable_since = Some((unreachable.clone(), Instant::now()));
                return;
            }
        };
        if since.elapsed() < sbr_cfg.stable_after
            || self.gossip.leader(&self.me).as_ref() != Some(&self.me)
        {
            return;
        }
        let down = sbr::decide(&sbr_cfg, &self.gossip, &self.me);
        if down.is_empty() {
            return;
        }
        warn!(node = %self.me.address, strategy = ?sbr_cfg.strategy, down = ?down.iter().map(|d| d.address.to_string()).collect::<Vec<_>>(), "split-brain resolver downs members");
        let before = self.gossip.clone();
        for d in &down {
            if self.gossip.set_status(d, MemberStatus::Down) {
                self.metrics.sbr_downed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.gossip.changed_by(&self.me);
        self.unreachable_since = None;
        if down.contains(&self.me) {
            // our side loses: tell everyone we can reach before going away
            for m in self.gossip.members.keys() {
                if *m != self.me {
                    self.send_gossip(m);
                }
            }
        }
        self.after_change(&before);
    }

    fn heartbeat_tick(&mut self) {
        if !self.joined || self.removed {
            return;
        }
        let now = Instant::now();
        let fd = self.cfg.failure_detector.clone();
        let others: Vec<UniqueAddress> = self
            .gossip
            .members
            .keys()
            .filter(|m| **m != self.me)
            .cloned()
            .collect();
        for m in &others {
            self.metrics.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
            self.send(&m.address, &ClusterProto::Heartbeat);
            self.detectors
                .entry(m.clone())
                .or_insert_with(|| PhiAccrual::new(&fd, now));
        }
        self.detectors.retain(|k, _| others.contains(k));
        let before = self.gossip.clone();
        let mut changed = false;
        for m in &others {
            let status = self.gossip.member(m).map(|x| x.status);
            if status == Some(MemberStatus::Down) {
                continue;
            }
            let available = self.detectors[m].is_available(&fd, now);
            let marked = self
                .gossip
                .reachability
                .get(&self.me)
                .is_some_and(|r| r.unreachable.contains(m));
            if available == marked {
                if !available {
                    warn!(node = %self.me.address, member = %m, "member unreachable (failure detector)");
                } else {
                    info!(node = %self.me.address, member = %m, "member reachable again");
                }
                changed |= self.gossip.set_reachability(&self.me, m, available);
            }
        }
        if changed {
            self.gossip.changed_by(&self.me);
            self.after_change(&before);
        }
    }
}

impl Actor for Daemon {
    type Msg = ClusterMsg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        a: Args,
    ) -> Result<State, ActorProcessingErr> {
        let me = a.remoting.self_address().clone();
        // Every message into the mailbox is counted (`handle` counts it out).
        let depth = a.metrics.mailbox.clone();
        let d = depth.clone();
        myself.send_interval(a.cfg.gossip_interval, move || {
            d.sent();
            ClusterMsg::GossipTick
        });
        let d = depth.clone();
        myself.send_interval(a.cfg.failure_detector.heartbeat_interval, move || {
            d.sent();
            ClusterMsg::HeartbeatTick
        });
        let d = depth.clone();
        myself.send_interval(a.cfg.join_retry_interval, move || {
            d.sent();
            ClusterMsg::JoinTick
        });
        tell(&myself, &depth, ClusterMsg::JoinTick);
        Ok(State {
            me,
            remoting: a.remoting,
            cfg: a.cfg,
            gossip: Gossip::default(),
            joined: false,
            removed: false,
            join_started: Instant::now(),
            join_sent: None,
            last_points: Vec::new(),
            detectors: HashMap::new(),
            unreachable_since: None,
            exiting_since: None,
            exiting_confirmed: BTreeSet::new(),
            events: a.events,
            subscribers: Vec::new(),
            snapshot: a.snapshot,
            metrics: a.metrics,
            shutdown: a.shutdown,
            recipient: CLUSTER_ACTOR.into(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        st: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        st.metrics.mailbox.taken();
        match msg {
            ClusterMsg::Remote(from, p) => st.handle_remote(from, p),
            ClusterMsg::GossipTick => st.gossip_tick(),
            ClusterMsg::HeartbeatTick => st.heartbeat_tick(),
            ClusterMsg::JoinTick => st.join_tick().await,
            ClusterMsg::Leave(a) => {
                if a == st.me.address && !st.joined {
                    st.removed = true;
                    st.refresh_snapshot();
                    st.shutdown.run(Reason::Leave);
                } else {
                    st.mark(&a, MemberStatus::Leaving);
                }
            }
            ClusterMsg::Down(a) => st.mark(&a, MemberStatus::Down),
            ClusterMsg::ConfirmExiting => st.confirm_exiting(),
            ClusterMsg::Subscribe(s) => st.subscribers.push(s),
        }
        Ok(())
    }
}

/// Casts into the daemon's mailbox, counting the message in its depth.
fn tell(actor: &ActorRef<ClusterMsg>, depth: &MailboxDepth, msg: ClusterMsg) {
    depth.sent();
    if actor.cast(msg).is_err() {
        depth.taken();
    }
}

/// Handle to this node's membership; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    actor: ActorRef<ClusterMsg>,
    snapshot: watch::Receiver<ClusterSnapshot>,
    events: broadcast::Sender<ClusterEvent>,
    metrics: Arc<ClusterMetrics>,
    self_node: UniqueAddress,
}

impl Cluster {
    /// Starts the daemon on `remoting` and hooks leave/exit into `shutdown`
    /// (phases `cluster-leave`, `cluster-exiting`, `cluster-shutdown`).
    pub async fn start(
        remoting: Remoting,
        cfg: ClusterConfig,
        shutdown: CoordinatedShutdown,
    ) -> Result<Self, ractor::SpawnErr> {
        let me = remoting.self_address().clone();
        let (snap_tx, snap_rx) = watch::channel(snapshot_of(&Gossip::default(), &me, false, false));
        let (events, _) = broadcast::channel(1024);
        let metrics = Arc::new(ClusterMetrics::default());
        let exiting_timeout = cfg.exiting_timeout;
        let (actor, _) = Actor::spawn(
            None,
            Daemon,
            Args {
                remoting: remoting.clone(),
                cfg,
                events: events.clone(),
                snapshot: snap_tx,
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
            },
        )
        .await?;
        let depth = metrics.mailbox.clone();
        remoting.register_with(CLUSTER_ACTOR, actor.clone(), move |inb| {
            let msg = ClusterMsg::Remote(inb.from.clone(), postcard::from_bytes(inb.payload)?);
            depth.sent();
            Ok(msg)
        });
        let depth = metrics.mailbox.clone();
        remoting.observe_mailbox(CLUSTER_ACTOR, move || depth.get());
        let cluster = Self {
            actor,
            snapshot: snap_rx,
            events,
            metrics,
            self_node: me,
        };
        let c = cluster.clone();
        let _ = shutdown.add_task("cluster-leave", "leave", move |_| async move {
            let status = c.state().self_status;
            if matches!(status, Some(MemberStatus::Joining | MemberStatus::Up)) {
                c.leave(c.self_node.address.clone());
            }
            if matches!(
                status,
                Some(MemberStatus::Joining | MemberStatus::Up | MemberStatus::Leaving)
            ) {
                // the phase timeout bounds this wait
                c.wait_until(
                    |s| s.self_status.is_none_or(|st| st >= MemberStatus::Exiting),
                    Duration::from_secs(3600),
                )
                .await;
            }
        });
        let c = cluster.clone();
        let _ = shutdown.add_task("cluster-exiting", "wait-removed", move |_| async move {
            if matches!(
                c.state().self_status,
                Some(MemberStatus::Leaving | MemberStatus::Exiting)
            ) {
                // The phases before this one (the shard hand-off first) are done: only
                // now may the leader remove this node and the others take its shards.
                c.confirm_exiting();
                c.wait_until(
                    |s| s.self_status.is_none_or(|st| st >= MemberStatus::Down),
                    exiting_timeout,
                )
                .await;
            }
        });
        let c = cluster.clone();
        let r = remoting.clone();
        let _ = shutdown.add_task("cluster-shutdown", "stop-membership", move |_| async move {
            r.unregister(CLUSTER_ACTOR);
            c.actor.stop(None);
            r.shutdown(Duration::from_millis(500)).await;
        });
        Ok(cluster)
    }

    /// This node.
    pub fn self_node(&self) -> &UniqueAddress {
        &self.self_node
    }

    /// The current view.
    pub fn state(&self) -> ClusterSnapshot {
        self.snapshot.borrow().clone()
    }

    /// A watch of the view, updated on every change.
    pub fn watch(&self) -> watch::Receiver<ClusterSnapshot> {
        self.snapshot.clone()
    }

    /// Waits until `pred` holds for the view or `timeout` passes; returns whether it held.
    pub async fn wait_until<F: Fn(&ClusterSnapshot) -> bool>(
        &self,
        pred: F,
        timeout: Duration,
    ) -> bool {
        let mut rx = self.snapshot.clone();
        tokio::time::timeout(timeout, async move {
            loop {
                if pred(&rx.borrow_and_update()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// A stream of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// Delivers every event from now on to an actor (until it stops).
    pub fn subscribe_actor<M>(&self, actor: ActorRef<M>)
    where
        M: ractor::Message + From<ClusterEvent>,
    {
        tell(
            &self.actor,
            &self.metrics.mailbox,
            ClusterMsg::Subscribe(Box::new(move |e: &ClusterEvent| {
                actor.cast(M::from(e.clone())).is_ok()
            })),
        );
    }

    /// Asks the member at `address` to leave (gracefully).
    pub fn leave(&self, address: NodeAddress) {
        tell(
            &self.actor,
            &self.metrics.mailbox,
            ClusterMsg::Leave(address),
        );
    }

    /// Confirms this node's exit (Akka's `ExitingConfirmed`): the leader removes an
    /// Exiting member only after this (or once it is unreachable). The coordinated
    /// shutdown calls it in `cluster-exiting`, after the shard hand-off.
    pub fn confirm_exiting(&self) {
        tell(
            &self.actor,
            &self.metrics.mailbox,
            ClusterMsg::ConfirmExiting,
        );
    }

    /// Marks the member at `address` Down.
    pub fn down(&self, address: NodeAddress) {
        tell(
            &self.actor,
            &self.metrics.mailbox,
            ClusterMsg::Down(address),
        );
    }

    /// Stops the daemon at once, without leaving (used by [`crate::node::Node::halt`]).
    pub(crate) fn stop_daemon(&self) {
        self.actor.stop(None);
    }

    /// Counters.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.metrics
    }
}
