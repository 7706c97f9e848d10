//! Queries over sharding: the state of one region (its shards and their entities),
//! cluster-wide shard statistics (per node: address, shard count, entity count), a
//! registry of the types a node shards, and the management HTTP route
//! `GET /cluster/shards/{type}` over that registry.
//!
//! JSON of `GET /cluster/shards/{type}` (a [`ClusterShardStats`]):
//!
//! ```json
//! {"typeName":"order-book",
//!  "regions":[{"address":"akka.tcp://AkkaTrader@10.0.0.5:4053","shards":15,"entities":212,
//!              "shardIds":[0,3,4,7,9,10,12,15,18,19,21,24,26,28,30]}],
//!  "failed":[]}
//! ```
//!
//! `failed` lists the nodes whose region did not answer within the stats timeout.
//!
//! The registry also backs this node's sharding metrics
//! ([`ShardingRegistry::register_metrics`]): shards, entities and hand-offs per type, read
//! from the regions' counters when `/metrics` is scraped.
//! [`format_stats_lines`] prints the same as `tradectl shards TYPE` does: one line per
//! node with address, shard count and entity count. Unknown types answer 404.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use telemetry::Metrics;
use telemetry::instruments as ins;
use telemetry::opentelemetry::KeyValue;
use telemetry::opentelemetry::metrics::{ObservableCounter, ObservableUpDownCounter};

use crate::hash::ShardId;
use crate::region::RegionCounters;

/// One shard hosted by a region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    /// The shard.
    pub shard: ShardId,
    /// Ids of its running entities.
    pub entities: Vec<String>,
}

/// The state of one region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionState {
    /// Entity type.
    #[serde(rename = "typeName")]
    pub type_name: String,
    /// The region's node, `akka.tcp://system@host:port`.
    pub address: String,
    /// Hosted shards, by shard id.
    pub shards: Vec<ShardState>,
    /// Messages buffered now (unknown home or shard moving).
    pub buffered: u64,
    /// Messages dropped because the buffer was full (since start).
    pub dropped: u64,
    /// Hand-offs this region waited for (it buffered while a shard moved).
    pub handoffs_seen: u64,
    /// Longest time in milliseconds a shard was unavailable to this region during a
    /// hand-off (from `BeginHandOff` to the new home being known).
    #[serde(rename = "maxHandoffPauseMs")]
    pub max_handoff_pause_ms: u64,
}

impl RegionState {
    /// Number of running entities.
    pub fn entity_count(&self) -> usize {
        self.shards.iter().map(|s| s.entities.len()).sum()
    }
}

/// Shard and entity counts of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeShardStats {
    /// The node.
    pub address: String,
    /// Shards it hosts.
    pub shards: usize,
    /// Entities it runs.
    pub entities: usize,
    /// The shards it hosts, ascending (Akka's `ShardRegionStats` keys).
    #[serde(rename = "shardIds", default)]
    pub shard_ids: Vec<ShardId>,
}

/// Cluster-wide statistics of one entity type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterShardStats {
    /// Entity type.
    #[serde(rename = "typeName")]
    pub type_name: String,
    /// Per node, by address.
    pub regions: Vec<NodeShardStats>,
    /// Nodes whose region did not answer in time.
    pub failed: Vec<String>,
}

impl ClusterShardStats {
    /// Builds the statistics from the regions' states.
    pub fn from_states(type_name: &str, states: &[RegionState], failed: Vec<String>) -> Self {
        let mut regions: Vec<NodeShardStats> = states
            .iter()
            .map(|s| {
                let mut shard_ids: Vec<ShardId> = s.shards.iter().map(|sh| sh.shard).collect();
                shard_ids.sort_unstable();
                NodeShardStats {
                    address: s.address.clone(),
                    shards: s.shards.len(),
                    entities: s.entity_count(),
                    shard_ids,
                }
            })
            .collect();
        regions.sort_by(|a, b| a.address.cmp(&b.address));
        Self {
            type_name: type_name.to_string(),
            regions,
            failed,
        }
    }

    /// Total shards over all nodes.
    pub fn total_shards(&self) -> usize {
        self.regions.iter().map(|r| r.shards).sum()
    }
}

/// One line per node (`address shards entities`), then one per failed node; what
/// `tradectl shards TYPE` prints.
pub fn format_stats_lines(stats: &ClusterShardStats) -> String {
    let mut out = String::new();
    for r in &stats.regions {
        out.push_str(&format!(
            "{}  shards={}  entities={}\n",
            r.address, r.shards, r.entities
        ));
    }
    for f in &stats.failed {
        out.push_str(&format!("{f}  (no answer)\n"));
    }
    out
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The region actor has stopped.
    #[error("the shard region has stopped")]
    RegionStopped,
}

type StatsFuture = Pin<Box<dyn Future<Output = Result<ClusterShardStats, QueryError>> + Send>>;

/// Something that answers cluster-wide stats for one type (a region handle).
pub trait StatsSource: Send + Sync + 'static {
    /// Gathers the cluster-wide statistics.
    fn cluster_stats(&self) -> StatsFuture;

    /// This node's counters of the type's region, when it hosts shards (`None` for a
    /// proxy): what `/metrics` shows per type.
    fn local_counters(&self) -> Option<Arc<RegionCounters>> {
        None
    }

    /// Whether the region (hosting or proxy) has registered with its coordinator at least
    /// once: what the node's readiness check reads.
    fn registered(&self) -> bool;
}

impl<M: Send + 'static> StatsSource for crate::region::ShardRegion<M> {
    fn cluster_stats(&self) -> StatsFuture {
        let r = self.clone();
        Box::pin(async move { r.cluster_stats().await })
    }

    fn local_counters(&self) -> Option<Arc<RegionCounters>> {
        self.is_host().then(|| self.shared_counters())
    }

    fn registered(&self) -> bool {
        self.counters().registered.load(Ordering::Relaxed)
    }
}

/// The entity types this node shards, by type name; the management HTTP route looks
/// types up here. Cheap to clone.
///
/// It is also the node's sharding readiness check (put it into
/// `NodeConfig.management.readiness`): `/ready` answers 503 until every region in it has
/// registered with its coordinator, as Akka's `ClusterShardingHealthCheck` does, so a rolling
/// update does not move on while this node's shards cannot be placed or reached. Once a
/// region has registered, a coordinator that moves later does not make the node unready.
#[derive(Clone, Default)]
pub struct ShardingRegistry {
    types: Arc<RwLock<BTreeMap<String, Arc<dyn StatsSource>>>>,
}

impl std::fmt::Debug for ShardingRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardingRegistry")
            .field("types", &self.type_names())
            .finish()
    }
}

impl runtime::management::ReadinessCheck for ShardingRegistry {
    fn check(&self) -> Result<(), String> {
        let waiting: Vec<String> = self
            .types
            .read()
            .expect("registry lock")
            .iter()
            .filter(|(_, src)| !src.registered())
            .map(|(t, _)| t.clone())
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "shard region {} has not registered with its coordinator",
                waiting.join(", ")
            ))
        }
    }
}

impl ShardingRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the region of `type_name`.
    pub fn insert(&self, type_name: &str, source: impl StatsSource) {
        self.types
            .write()
            .expect("registry lock")
            .insert(type_name.to_string(), Arc::new(source));
    }

    /// Type names, sorted.
    pub fn type_names(&self) -> Vec<String> {
        self.types
            .read()
            .expect("registry lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Stats of `type_name`; `None` for an unknown type.
    pub async fn stats(&self, type_name: &str) -> Option<Result<ClusterShardStats, QueryError>> {
        let src = self
            .types
            .read()
            .expect("registry lock")
            .get(type_name)
            .cloned()?;
        Some(src.cluster_stats().await)
    }

    /// Registers `cluster_sharding_shards`, `cluster_sharding_entities` and
    /// `cluster_sharding_handoffs_total` (per `cluster_sharding_type_name`) on `metrics`,
    /// read from the counters of every hosting region in this registry at collection time
    /// (regions inserted later are included). Once per node; keep the result alive.
    pub fn register_metrics(&self, metrics: &Metrics) -> ShardingInstruments {
        let m = metrics.meter_with_scope("cluster-sharding");
        type Read = fn(&RegionCounters) -> u64;
        let series = |reg: &ShardingRegistry, f: Read| -> Vec<(Vec<KeyValue>, u64)> {
            reg.types
                .read()
                .expect("registry lock")
                .iter()
                .filter_map(|(t, src)| {
                    let c = src.local_counters()?;
                    Some((vec![KeyValue::new(ins::ATTR_TYPE_NAME, t.clone())], f(&c)))
                })
                .collect()
        };
        let gauge = |name: &'static str, description: &'static str, unit: &'static str, f: Read| {
            let reg = self.clone();
            ins::observed_gauge(&m, name, description, unit, move || {
                series(&reg, f)
                    .into_iter()
                    .map(|(a, v)| (a, v as i64))
                    .collect()
            })
        };
        let reg = self.clone();
        ShardingInstruments {
            _gauges: vec![
                gauge(
                    ins::SHARDS,
                    "Shards hosted by this node's region",
                    "{shard}",
                    |c| c.shards.load(Ordering::Relaxed),
                ),
                gauge(
                    ins::ENTITIES,
                    "Live entities in this node's region",
                    "{entity}",
                    |c| c.entities.load(Ordering::Relaxed),
                ),
            ],
            _handoffs: ins::observed_counter(
                &m,
                ins::HANDOFFS,
                "Shards handed off by this node",
                "{handoff}",
                move || series(&reg, |c| c.handoffs.load(Ordering::Relaxed)),
            ),
        }
    }

    /// `GET /cluster/shards/{type}` over this registry, for the node's management port:
    /// create the registry first, set `NodeConfig.management.routes =
    /// Some(registry.router())` before `Node::start`, then `insert` each region once it
    /// runs (the route looks types up on every request).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/cluster/shards/{type}", get(shards_handler))
            .with_state(self.clone())
    }
}

/// The instruments of [`ShardingRegistry::register_metrics`]; they report while this lives.
#[derive(Debug)]
pub struct ShardingInstruments {
    _gauges: Vec<ObservableUpDownCounter<i64>>,
    _handoffs: ObservableCounter<u64>,
}

async fn shards_handler(
    State(reg): State<ShardingRegistry>,
    Path(type_name): Path<String>,
) -> Response {
    match reg.stats(&type_name).await {
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no sharded type {type_name:?}") })),
        )
            .into_response(),
        Some(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Some(Ok(s)) => Json(s).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_json_shape_and_lines() {
        let st = |addr: &str, shards: &[(u32, usize)]| RegionState {
            type_name: "t".into(),
            address: addr.into(),
            shards: shards
                .iter()
                .map(|(s, n)| ShardState {
                    shard: *s,
                    entities: (0..*n).map(|i| format!("e{i}")).collect(),
                })
                .collect(),
            ..RegionState::default()
        };
        let s = ClusterShardStats::from_states(
            "t",
            &[st("b", &[(2, 3), (1, 2)]), st("a", &[(3, 1)])],
            vec!["c".into()],
        );
        assert_eq!(s.total_shards(), 3);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"typeName":"t","regions":[
                {"address":"a","shards":1,"entities":1,"shardIds":[3]},
                {"address":"b","shards":2,"entities":5,"shardIds":[1,2]}],"failed":["c"]})
        );
        assert_eq!(
            format_stats_lines(&s),
            "a  shards=1  entities=1\nb  shards=2  entities=5\nc  (no answer)\n"
        );
    }
}
