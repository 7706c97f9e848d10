//! The node's metrics: owns the registration of the runtime's instruments on the node's
//! [`telemetry::Metrics`] (the provider whose Prometheus text the management port serves as
//! `/metrics`, and which pushes over OTLP when configured), and the mailbox-depth counters of
//! the system actors.
//!
//! Nothing here sits on a message path. The transport and membership already count in
//! atomics of their own (per-peer sent/received/dropped, gossip, heartbeats); the
//! instruments registered by [`register`] read those, the membership snapshot and the
//! registered mailbox depths only when metrics are collected (a scrape or an OTLP push).
//! Names come from [`telemetry::instruments`], the one place the Grafana dashboard's queries
//! are checked against.
//!
//! Mailbox depth: ractor does not expose the length of a mailbox, so an actor that wants its
//! depth on `/metrics` counts it itself with a [`MailboxDepth`] (one relaxed atomic add per
//! message sent to it, one subtract per message handled) and registers it with
//! [`crate::Remoting::observe_mailbox`]; the shard regions register a function over counters
//! they already keep.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use telemetry::Metrics;
use telemetry::instruments as ins;
use telemetry::opentelemetry::KeyValue;
use telemetry::opentelemetry::metrics::{ObservableCounter, ObservableUpDownCounter};

use crate::cluster::Cluster;
use crate::membership::MemberStatus;
use crate::remote::Remoting;

/// Messages waiting in one actor's mailbox, counted by the actor's senders and the actor.
/// Cheap to clone (shares the count).
#[derive(Debug, Clone, Default)]
pub struct MailboxDepth(Arc<AtomicI64>);

impl MailboxDepth {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A message was put into the mailbox.
    #[inline]
    pub fn sent(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was taken out of the mailbox (or its send failed).
    #[inline]
    pub fn taken(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Messages waiting now (never below zero).
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed).max(0)
    }
}

/// Every member status, in lifecycle order: each gets a series, zero included, so a
/// dashboard's `cluster_members{cluster_member_status="down"}` exists before anyone is down.
const STATUSES: [MemberStatus; 6] = [
    MemberStatus::Joining,
    MemberStatus::Up,
    MemberStatus::Leaving,
    MemberStatus::Exiting,
    MemberStatus::Down,
    MemberStatus::Removed,
];

/// The instruments [`register`] created; they report for as long as this lives (the
/// [`crate::Node`] keeps it).
#[derive(Debug)]
pub struct NodeInstruments {
    _counters: Vec<ObservableCounter<u64>>,
    _gauges: Vec<ObservableUpDownCounter<i64>>,
}

fn peer_attrs(p: &crate::remote::PeerStat) -> Vec<KeyValue> {
    vec![
        KeyValue::new(ins::ATTR_PEER, p.address.to_string()),
        ins::messaging_system(),
    ]
}

/// Registers the transport's instruments (per-peer messages, queue depths, refused
/// handshakes, the system actors' mailbox depths) on `metrics`. pricing-web, a transport
/// without membership, calls only this.
pub fn register_transport(metrics: &Metrics, remoting: &Remoting) -> NodeInstruments {
    let m = metrics.meter_with_scope("runtime");
    type PeerFn = fn(&crate::remote::PeerStat) -> u64;
    let per_peer_counter =
        |name: &'static str, description: &'static str, unit: &'static str, f: PeerFn| {
            let r = remoting.clone();
            ins::observed_counter(&m, name, description, unit, move || {
                r.peer_stats()
                    .iter()
                    .map(|p| (peer_attrs(p), f(p)))
                    .collect()
            })
        };
    let per_peer_gauge =
        |name: &'static str, description: &'static str, unit: &'static str, f: PeerFn| {
            let r = remoting.clone();
            ins::observed_gauge(&m, name, description, unit, move || {
                r.peer_stats()
                    .iter()
                    .map(|p| (peer_attrs(p), f(p) as i64))
                    .collect()
            })
        };
    let transport_counter =
        |name: &'static str,
         description: &'static str,
         f: fn(&crate::remote::TransportStats) -> u64| {
            let r = remoting.clone();
            ins::observed_counter(&m, name, description, "{event}", move || {
                vec![(Vec::new(), f(&r.stats()))]
            })
        };
    let counters = vec![
        per_peer_counter(
            ins::MESSAGES_SENT,
            "Messages sent to a remote cluster node",
            "{message}",
            |p| p.sent,
        ),
        per_peer_counter(
            ins::MESSAGES_RECEIVED,
            "Messages received from a remote cluster node",
            "{message}",
            |p| p.received,
        ),
        per_peer_counter(
            ins::REMOTE_DROPPED,
            "Messages to a peer dropped while its link was down",
            "{message}",
            |p| p.dropped,
        ),
        per_peer_counter(
            ins::REMOTE_FRAMES_SENT,
            "Frames (batches of messages) written to a peer",
            "{frame}",
            |p| p.frames_out,
        ),
        transport_counter(
            ins::REMOTE_HANDSHAKES_REFUSED,
            "Inbound connections refused in the handshake",
            |t| t.handshakes_refused,
        ),
        transport_counter(
            ins::REMOTE_FRAMES_MALFORMED,
            "Connections closed for a malformed or oversized frame",
            |t| t.frames_malformed,
        ),
        transport_counter(
            ins::REMOTE_UNKNOWN_RECIPIENT,
            "Messages for a name nobody registered",
            |t| t.unknown_recipient,
        ),
    ];
    let r = remoting.clone();
    let gauges = vec![
        per_peer_gauge(
            ins::REMOTE_CONNECTED,
            "1 while a connection to the peer is open",
            "",
            |p| u64::from(p.connected),
        ),
        per_peer_gauge(
            ins::REMOTE_SEND_QUEUE,
            "Messages waiting in a peer's send queue",
            "{message}",
            |p| p.queued,
        ),
        ins::observed_gauge(
            &m,
            ins::MAILBOX_DEPTH,
            "Messages waiting in a system actor's mailbox",
            "{message}",
            move || {
                r.mailbox_depths()
                    .into_iter()
                    .map(|(name, d)| (vec![KeyValue::new(ins::ATTR_ACTOR, name.to_string())], d))
                    .collect()
            },
        ),
    ];
    NodeInstruments {
        _counters: counters,
        _gauges: gauges,
    }
}

/// Registers every runtime instrument of a member node: [`register_transport`] plus
/// membership (members by status, unreachable members, up and leader flags, gossip,
/// heartbeats, resolver decisions).
pub fn register(metrics: &Metrics, cluster: &Cluster, remoting: &Remoting) -> NodeInstruments {
    let mut all = register_transport(metrics, remoting);
    let m = metrics.meter_with_scope("runtime");
    let c = cluster.clone();
    all._gauges.push(ins::observed_gauge(
        &m,
        ins::MEMBERS,
        "Cluster members seen by this node, by status",
        "{member}",
        move || {
            let st = c.state();
            STATUSES
                .iter()
                .map(|s| {
                    let n = st.members.iter().filter(|m| m.status == *s).count();
                    (
                        vec![KeyValue::new(ins::ATTR_MEMBER_STATUS, s.as_str())],
                        n as i64,
                    )
                })
                .collect()
        },
    ));
    let c = cluster.clone();
    all._gauges.push(ins::observed_gauge(
        &m,
        ins::UNREACHABLE_MEMBERS,
        "Members this node's failure detector marks unreachable",
        "{member}",
        move || vec![(Vec::new(), c.state().unreachable.len() as i64)],
    ));
    let c = cluster.clone();
    all._gauges.push(ins::observed_gauge(
        &m,
        ins::NODE_UP,
        "1 while this node is Up",
        "",
        move || {
            let up = c.state().self_status == Some(MemberStatus::Up);
            vec![(Vec::new(), i64::from(up))]
        },
    ));
    let c = cluster.clone();
    all._gauges.push(ins::observed_gauge(
        &m,
        ins::NODE_LEADER,
        "1 while this node is the leader",
        "",
        move || {
            let st = c.state();
            let leader = st.leader.as_deref() == Some(st.self_node.as_str());
            vec![(Vec::new(), i64::from(leader))]
        },
    ));
    type ClusterFn = fn(&crate::cluster::ClusterMetrics) -> u64;
    let counters: [(&'static str, &'static str, &'static str, ClusterFn); 5] = [
        (ins::GOSSIP_SENT, "Gossip messages sent", "{message}", |m| {
            m.gossip_sent.load(Ordering::Relaxed)
        }),
        (
            ins::GOSSIP_RECEIVED,
            "Gossip messages received",
            "{message}",
            |m| m.gossip_received.load(Ordering::Relaxed),
        ),
        (
            ins::HEARTBEATS_SENT,
            "Failure-detector heartbeats sent",
            "{message}",
            |m| m.heartbeats_sent.load(Ordering::Relaxed),
        ),
        (
            ins::HEARTBEATS_RECEIVED,
            "Failure-detector heartbeats received",
            "{message}",
            |m| m.heartbeats_received.load(Ordering::Relaxed),
        ),
        (
            ins::SBR_DOWNED,
            "Members this node's split-brain resolver downed",
            "{member}",
            |m| m.sbr_downed.load(Ordering::Relaxed),
        ),
    ];
    for (name, description, unit, f) in counters {
        let c = cluster.clone();
        all._counters.push(ins::observed_counter(
            &m,
            name,
            description,
            unit,
            move || vec![(Vec::new(), f(c.metrics()))],
        ));
    }
    all
}
