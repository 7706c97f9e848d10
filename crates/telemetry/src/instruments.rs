//! Instrument names, attribute keys and constructors for the metrics of issue 8: owns what
//! each series is called, its unit and kind, so the runtime, persistence and services agree
//! and the Grafana dashboard (`k8s/environment/grafana-dashboard.json`) can rely on them.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists
//! (`messaging.client.*`, `db.client.operation.duration`); the others live in namespaces of
//! their own (`cluster.*`, `actor.*`, `persistence.*`, `trading.*`, `websocket.*`). Rates
//! such as orders/s are `rate()` over the counters in Prometheus, not instruments.
//!
//! Hot paths (one increment per remote message) use [`CounterFamily`]/[`GaugeFamily`]:
//! the caller takes a handle once per label set (per peer, per region) and then pays one
//! relaxed atomic add per event; the values are read by an observable instrument only when
//! metrics are collected. State that is already counted elsewhere (the transport's per-peer
//! totals, the membership table) is read at collection time through [`observed_counter`] and
//! [`observed_gauge`] under the same names. Rarer events (journal writes) use the SDK's
//! synchronous instruments directly.
//!
//! | constructor | Prometheus name | kind | attributes |
//! | --- | --- | --- | --- |
//! | [`messages_sent`] | `messaging_client_sent_messages_total` | counter | [`ATTR_PEER`], `messaging.system` |
//! | [`messages_received`] | `messaging_client_consumed_messages_total` | counter | [`ATTR_PEER`], `messaging.system` |
//! | [`mailbox_depth`] | `actor_mailbox_depth` | gauge | [`ATTR_ACTOR`] |
//! | [`members`] | `cluster_members` | gauge | [`ATTR_MEMBER_STATUS`] |
//! | [`unreachable_members`] | `cluster_members_unreachable` | gauge | |
//! | [`shards`] | `cluster_sharding_shards` | gauge | [`ATTR_TYPE_NAME`] |
//! | [`entities`] | `cluster_sharding_entities` | gauge | [`ATTR_TYPE_NAME`] |
//! | [`handoffs`] | `cluster_sharding_handoffs_total` | counter | [`ATTR_TYPE_NAME`] |
//! | [`JournalMetrics`] | `db_client_operation_duration_seconds` | histogram | `db.system.name`, `db.operation.name` |
//! | [`JournalMetrics`] | `persistence_journal_write_batch_size` | histogram | `db.system.name` |
//! | [`events_by_tag_lag`] | `persistence_query_events_by_tag_lag_seconds` | gauge | [`ATTR_TAG`] |
//! | [`orders`] | `trading_orders_total` | counter | [`ATTR_TICKER`] |
//! | [`matches()`] | `trading_matches_total` | counter | [`ATTR_TICKER`] |
//! | [`websocket_clients`] | `websocket_server_active_connections` | gauge | |
//!
//! The runtime reads the rest of its state at collection time ([`observed_counter`],
//! [`observed_gauge`]) under these names:
//!
//! | constant | Prometheus name | kind | attributes |
//! | --- | --- | --- | --- |
//! | [`REMOTE_DROPPED`] | `cluster_remote_messages_dropped_total` | counter | [`ATTR_PEER`] |
//! | [`REMOTE_FRAMES_SENT`] | `cluster_remote_frames_sent_total` | counter | [`ATTR_PEER`] |
//! | [`REMOTE_CONNECTED`] | `cluster_remote_peer_connected` | gauge | [`ATTR_PEER`] |
//! | [`REMOTE_SEND_QUEUE`] | `cluster_remote_send_queue_depth` | gauge | [`ATTR_PEER`] |
//! | [`REMOTE_HANDSHAKES_REFUSED`] | `cluster_remote_handshakes_refused_total` | counter | |
//! | [`REMOTE_FRAMES_MALFORMED`] | `cluster_remote_frames_malformed_total` | counter | |
//! | [`REMOTE_UNKNOWN_RECIPIENT`] | `cluster_remote_unknown_recipient_messages_total` | counter | |
//! | [`NODE_UP`] | `cluster_node_up` | gauge | |
//! | [`NODE_LEADER`] | `cluster_node_leader` | gauge | |
//! | [`GOSSIP_SENT`], [`GOSSIP_RECEIVED`] | `cluster_gossip_sent_total`, `cluster_gossip_received_total` | counter | |
//! | [`HEARTBEATS_SENT`], [`HEARTBEATS_RECEIVED`] | `cluster_heartbeats_sent_total`, `cluster_heartbeats_received_total` | counter | |
//! | [`SBR_DOWNED`] | `cluster_sbr_downed_members_total` | counter | |

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Gauge, Histogram, Meter, ObservableCounter, ObservableUpDownCounter};

/// `messaging.client.sent.messages`: envelopes handed to the transport for a remote peer.
pub const MESSAGES_SENT: &str = "messaging.client.sent.messages";
/// `messaging.client.consumed.messages`: envelopes received from a remote peer.
pub const MESSAGES_RECEIVED: &str = "messaging.client.consumed.messages";
/// `actor.mailbox.depth`: messages waiting in a system actor's mailbox.
pub const MAILBOX_DEPTH: &str = "actor.mailbox.depth";
/// `cluster.members`: members as this node sees them, by status.
pub const MEMBERS: &str = "cluster.members";
/// `cluster.members.unreachable`: members this node's failure detector marks unreachable.
pub const UNREACHABLE_MEMBERS: &str = "cluster.members.unreachable";
/// `cluster.sharding.shards`: shards hosted by this node's region, per entity type.
pub const SHARDS: &str = "cluster.sharding.shards";
/// `cluster.sharding.entities`: live entities in this node's region, per entity type.
pub const ENTITIES: &str = "cluster.sharding.entities";
/// `cluster.sharding.handoffs`: shards this node handed off, per entity type.
pub const HANDOFFS: &str = "cluster.sharding.handoffs";
/// `db.client.operation.duration` (semantic convention): journal writes are recorded with
/// `db.operation.name` = [`OP_JOURNAL_WRITE`].
pub const DB_OPERATION_DURATION: &str = "db.client.operation.duration";
/// `persistence.journal.write.batch.size`: events per atomic journal write (group commit).
pub const JOURNAL_WRITE_BATCH_SIZE: &str = "persistence.journal.write.batch.size";
/// `persistence.query.events_by_tag.lag`: age of the last event delivered by an
/// events-by-tag stream when it was delivered, per tag.
pub const EVENTS_BY_TAG_LAG: &str = "persistence.query.events_by_tag.lag";
/// `trading.orders`: orders accepted (orders/s is its `rate()`).
pub const ORDERS: &str = "trading.orders";
/// `trading.matches`: trades matched (matches/s is its `rate()`).
pub const MATCHES: &str = "trading.matches";
/// `websocket.server.active_connections`: browsers connected to the live stream.
pub const WEBSOCKET_CLIENTS: &str = "websocket.server.active_connections";

/// `cluster.remote.messages.dropped`: messages to a peer dropped while its link was down.
pub const REMOTE_DROPPED: &str = "cluster.remote.messages.dropped";
/// `cluster.remote.frames.sent`: frames (batches of messages) written to a peer.
pub const REMOTE_FRAMES_SENT: &str = "cluster.remote.frames.sent";
/// `cluster.remote.peer.connected`: 1 while a connection to the peer is open.
pub const REMOTE_CONNECTED: &str = "cluster.remote.peer.connected";
/// `cluster.remote.send_queue.depth`: messages waiting in a peer's bounded send queue.
pub const REMOTE_SEND_QUEUE: &str = "cluster.remote.send_queue.depth";
/// `cluster.remote.handshakes.refused`: inbound connections refused in the handshake.
pub const REMOTE_HANDSHAKES_REFUSED: &str = "cluster.remote.handshakes.refused";
/// `cluster.remote.frames.malformed`: connections closed for a malformed or oversized frame.
pub const REMOTE_FRAMES_MALFORMED: &str = "cluster.remote.frames.malformed";
/// `cluster.remote.unknown_recipient.messages`: messages for a name nobody registered.
pub const REMOTE_UNKNOWN_RECIPIENT: &str = "cluster.remote.unknown_recipient.messages";
/// `cluster.node.up`: 1 while this node is Up.
pub const NODE_UP: &str = "cluster.node.up";
/// `cluster.node.leader`: 1 while this node is the leader.
pub const NODE_LEADER: &str = "cluster.node.leader";
/// `cluster.gossip.sent`: gossip messages sent.
pub const GOSSIP_SENT: &str = "cluster.gossip.sent";
/// `cluster.gossip.received`: gossip messages received.
pub const GOSSIP_RECEIVED: &str = "cluster.gossip.received";
/// `cluster.heartbeats.sent`: failure-detector heartbeats sent.
pub const HEARTBEATS_SENT: &str = "cluster.heartbeats.sent";
/// `cluster.heartbeats.received`: failure-detector heartbeats received.
pub const HEARTBEATS_RECEIVED: &str = "cluster.heartbeats.received";
/// `cluster.sbr.downed_members`: members this node's split-brain resolver downed.
pub const SBR_DOWNED: &str = "cluster.sbr.downed_members";

/// Attribute: the remote node, as `system@host:port`.
pub const ATTR_PEER: &str = "cluster.peer.address";
/// Attribute: a registered actor name.
pub const ATTR_ACTOR: &str = "actor.name";
/// Attribute: a member status (`joining`, `up`, `leaving`, `exiting`, `down`, `removed`).
pub const ATTR_MEMBER_STATUS: &str = "cluster.member.status";
/// Attribute: a sharded entity type (`orderBook`, `priceAggregator`).
pub const ATTR_TYPE_NAME: &str = "cluster.sharding.type_name";
/// Attribute: a ticker symbol, on [`ORDERS`] and [`MATCHES`] (the dashboard groups by it).
pub const ATTR_TICKER: &str = "trading.ticker";
/// Attribute: an event tag (for events by tag).
pub const ATTR_TAG: &str = "persistence.tag";
/// Attribute (semantic convention): the database backend, e.g. `sqlite`, `mongodb`.
pub const ATTR_DB_SYSTEM: &str = "db.system.name";
/// Attribute (semantic convention): the operation, see [`OP_JOURNAL_WRITE`].
pub const ATTR_DB_OPERATION: &str = "db.operation.name";
/// Attribute (semantic convention) set on the messaging counters.
pub const ATTR_MESSAGING_SYSTEM: &str = "messaging.system";
/// The value of [`ATTR_MESSAGING_SYSTEM`] for the cluster transport.
pub const MESSAGING_SYSTEM: &str = "akka-cqrs";
/// The value of [`ATTR_DB_OPERATION`] for a journal append.
pub const OP_JOURNAL_WRITE: &str = "journal.write";

/// Histogram buckets (seconds) for journal writes: from an embedded SQLite group commit
/// (sub-millisecond) to a struggling MongoDB (seconds).
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Histogram buckets for batch sizes (events per write).
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

type Cells<T> = Arc<RwLock<Vec<(Vec<KeyValue>, Arc<T>)>>>;

fn cell<T: Default>(cells: &Cells<T>, base: &[KeyValue], attrs: &[KeyValue]) -> Arc<T> {
    let mut key: Vec<KeyValue> = base.to_vec();
    key.extend_from_slice(attrs);
    if let Some((_, c)) = cells
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
    {
        return c.clone();
    }
    let mut w = cells.write().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = w.iter().find(|(k, _)| *k == key) {
        return c.clone();
    }
    let c = Arc::new(T::default());
    w.push((key, c.clone()));
    c
}

/// A monotonic counter whose series (one per label set) are atomics read at collection.
#[derive(Debug, Clone)]
pub struct CounterFamily {
    cells: Cells<AtomicU64>,
    base: Vec<KeyValue>,
    _instrument: ObservableCounter<u64>,
}

impl CounterFamily {
    /// Registers the counter `name` on `meter`; `base` attributes go on every series.
    pub fn new(
        meter: &Meter,
        name: &'static str,
        description: &'static str,
        unit: &'static str,
        base: Vec<KeyValue>,
    ) -> Self {
        let cells: Cells<AtomicU64> = Arc::default();
        let read = cells.clone();
        let instrument = meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(move |obs| {
                for (attrs, c) in read.read().unwrap_or_else(|e| e.into_inner()).iter() {
                    obs.observe(c.load(Ordering::Relaxed), attrs);
                }
            })
            .build();
        Self {
            cells,
            base,
            _instrument: instrument,
        }
    }

    /// The series for `attrs` (created at 0 on first use; the same atomic afterwards). Take
    /// it once per peer/region and keep it: adding is then one atomic instruction.
    pub fn handle(&self, attrs: &[KeyValue]) -> CounterHandle {
        CounterHandle(cell(&self.cells, &self.base, attrs))
    }
}

/// One series of a [`CounterFamily`].
#[derive(Debug, Clone)]
pub struct CounterHandle(Arc<AtomicU64>);

impl CounterHandle {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A current-value series family (rendered as a Prometheus gauge), one atomic per label
/// set, read at collection.
#[derive(Debug, Clone)]
pub struct GaugeFamily {
    cells: Cells<AtomicI64>,
    base: Vec<KeyValue>,
    _instrument: ObservableUpDownCounter<i64>,
}

impl GaugeFamily {
    /// Registers the up-down counter `name` on `meter`; `base` attributes go on every series.
    pub fn new(
        meter: &Meter,
        name: &'static str,
        description: &'static str,
        unit: &'static str,
        base: Vec<KeyValue>,
    ) -> Self {
        let cells: Cells<AtomicI64> = Arc::default();
        let read = cells.clone();
        let instrument = meter
            .i64_observable_up_down_counter(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(move |obs| {
                for (attrs, c) in read.read().unwrap_or_else(|e| e.into_inner()).iter() {
                    obs.observe(c.load(Ordering::Relaxed), attrs);
                }
            })
            .build();
        Self {
            cells,
            base,
            _instrument: instrument,
        }
    }

    /// The series for `attrs` (created at 0 on first use).
    pub fn handle(&self, attrs: &[KeyValue]) -> GaugeHandle {
        GaugeHandle(cell(&self.cells, &self.base, attrs))
    }
}

/// One series of a [`GaugeFamily`].
#[derive(Debug, Clone)]
pub struct GaugeHandle(Arc<AtomicI64>);

impl GaugeHandle {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds `d` (negative to subtract).
    #[inline]
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter read from existing state at collection time: `series` returns the current total
/// of each label set (e.g. the transport's per-peer counters). For code that already counts,
/// so nothing is added to its hot path. Keep the returned handle alive with the node.
pub fn observed_counter<F>(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    unit: &'static str,
    series: F,
) -> ObservableCounter<u64>
where
    F: Fn() -> Vec<(Vec<KeyValue>, u64)> + Send + Sync + 'static,
{
    meter
        .u64_observable_counter(name)
        .with_description(description)
        .with_unit(unit)
        .with_callback(move |obs| {
            for (attrs, v) in series() {
                obs.observe(v, &attrs);
            }
        })
        .build()
}

/// A current value read from existing state at collection time (e.g. members by status from
/// the membership state); see [`observed_counter`].
pub fn observed_gauge<F>(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    unit: &'static str,
    series: F,
) -> ObservableUpDownCounter<i64>
where
    F: Fn() -> Vec<(Vec<KeyValue>, i64)> + Send + Sync + 'static,
{
    meter
        .i64_observable_up_down_counter(name)
        .with_description(description)
        .with_unit(unit)
        .with_callback(move |obs| {
            for (attrs, v) in series() {
                obs.observe(v, &attrs);
            }
        })
        .build()
}

/// The `messaging.system` attribute every messaging series carries.
pub fn messaging_system() -> KeyValue {
    KeyValue::new(ATTR_MESSAGING_SYSTEM, MESSAGING_SYSTEM)
}

fn messaging_base() -> Vec<KeyValue> {
    vec![KeyValue::new(ATTR_MESSAGING_SYSTEM, MESSAGING_SYSTEM)]
}

/// [`MESSAGES_SENT`]; handle per peer: `handle(&[KeyValue::new(ATTR_PEER, peer)])`.
pub fn messages_sent(meter: &Meter) -> CounterFamily {
    CounterFamily::new(
        meter,
        MESSAGES_SENT,
        "Messages sent to a remote cluster node",
        "{message}",
        messaging_base(),
    )
}

/// [`MESSAGES_RECEIVED`]; handle per peer.
pub fn messages_received(meter: &Meter) -> CounterFamily {
    CounterFamily::new(
        meter,
        MESSAGES_RECEIVED,
        "Messages received from a remote cluster node",
        "{message}",
        messaging_base(),
    )
}

/// [`MAILBOX_DEPTH`]; handle per actor ([`ATTR_ACTOR`]).
pub fn mailbox_depth(meter: &Meter) -> GaugeFamily {
    GaugeFamily::new(
        meter,
        MAILBOX_DEPTH,
        "Messages waiting in a system actor's mailbox",
        "{message}",
        Vec::new(),
    )
}

/// [`MEMBERS`]; handle per status ([`ATTR_MEMBER_STATUS`]), set on every membership change.
pub fn members(meter: &Meter) -> GaugeFamily {
    GaugeFamily::new(
        meter,
        MEMBERS,
        "Cluster members seen by this node, by status",
        "{member}",
        Vec::new(),
    )
}

/// [`UNREACHABLE_MEMBERS`]; one series (`handle(&[])`).
pub fn unreachable_members(meter: &Meter) -> GaugeFamily {
    GaugeFamily::new(
        meter,
        UNREACHABLE_MEMBERS,
        "Members this node's failure detector marks unreachable",
        "{member}",
        Vec::new(),
    )
}

/// [`SHARDS`]; handle per entity type ([`ATTR_TYPE_NAME`]).
pub fn shards(meter: &Meter) -> GaugeFamily {
    GaugeFamily::new(
        meter,
        SHARDS,
        "Shards hosted by this node's region",
        "{shard}",
        Vec::new(),
    )
}

/// [`ENTITIES`]; handle per entity type.
pub fn entities(meter: &Meter) -> GaugeFamily {
    GaugeFamily::new(
        meter,
        ENTITIES,
        "Live entities in this node's region",
        "{entity}",
        Vec::new(),
    )
}

/// [`HANDOFFS`]; handle per entity type.
pub fn handoffs(meter: &Meter) -> CounterFamily {
    CounterFamily::new(
        meter,
        HANDOFFS,
        "Shards handed off by this node",
        "{handoff}",
        Vec::new(),
    )
}

/// [`EVENTS_BY_TAG_LAG`]: record seconds with `&[KeyValue::new(ATTR_TAG, tag)]`.
pub fn events_by_tag_lag(meter: &Meter) -> Gauge<f64> {
    meter
        .f64_gauge(EVENTS_BY_TAG_LAG)
        .with_description("Age of the last event an events-by-tag stream delivered")
        .with_unit("s")
        .build()
}

/// [`ORDERS`]; handle per ticker ([`ATTR_TICKER`]).
pub fn orders(meter: &Meter) -> CounterFamily {
    CounterFamily::new(meter, ORDERS, "Orders accepted", "{order}", Vec::new())
}

/// [`MATCHES`]; handle per ticker ([`ATTR_TICKER`]).
pub fn matches(meter: &Meter) -> CounterFamily {
    CounterFamily::new(meter, MATCHES, "Trades matched", "{match}", Vec::new())
}

/// [`WEBSOCKET_CLIENTS`]; one series, `add(1)` on connect and `add(-1)` on close.
pub fn websocket_clients(meter: &Meter) -> GaugeFamily {
    GaugeFamily::new(
        meter,
        WEBSOCKET_CLIENTS,
        "WebSocket clients connected to the live stream",
        "{connection}",
        Vec::new(),
    )
}

/// Journal write latency and batch size of one backend.
#[derive(Debug, Clone)]
pub struct JournalMetrics {
    duration: Histogram<f64>,
    batch: Histogram<u64>,
    duration_attrs: [KeyValue; 2],
    batch_attrs: [KeyValue; 1],
}

impl JournalMetrics {
    /// Instruments for the backend `db_system` (`sqlite`, `mongodb`, `inmem`).
    pub fn new(meter: &Meter, db_system: &'static str) -> Self {
        Self {
            duration: meter
                .f64_histogram(DB_OPERATION_DURATION)
                .with_description("Duration of database client operations")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            batch: meter
                .u64_histogram(JOURNAL_WRITE_BATCH_SIZE)
                .with_description("Events per atomic journal write")
                .with_unit("{event}")
                .with_boundaries(BATCH_BUCKETS.to_vec())
                .build(),
            duration_attrs: [
                KeyValue::new(ATTR_DB_SYSTEM, db_system),
                KeyValue::new(ATTR_DB_OPERATION, OP_JOURNAL_WRITE),
            ],
            batch_attrs: [KeyValue::new(ATTR_DB_SYSTEM, db_system)],
        }
    }

    /// Records one journal write of `events` events that took `took`.
    pub fn record_write(&self, took: Duration, events: usize) {
        self.duration
            .record(took.as_secs_f64(), &self.duration_attrs);
        self.batch.record(events as u64, &self.batch_attrs);
    }
}
