//! The wire protocol between regions and the coordinator, and between regions.
//!
//! Two registered names per entity type and node: the region
//! (`sharding/{type}/region`, messages [`RegionWire`]) and, on one node, the
//! coordinator (`sharding/{type}/coordinator`, messages [`CoordinatorWire`]). Every
//! message names its sender node so a receiver needs nothing from the transport.
//!
//! The coordinator does not know the entities' message type: it sends
//! `RegionWire<()>`. The variants that carry a user message come last and the others
//! do not depend on `M`, so postcard encodes a coordinator variant identically for any
//! `M` (a unit test pins this).

use runtime::NodeAddress;
use serde::{Deserialize, Serialize};

use crate::hash::ShardId;
use crate::stats::RegionState;

/// Messages to the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorWire {
    /// A region announces itself and what it hosts; re-sent until acknowledged. The
    /// coordinator accepts it only from an incarnation that is a live member in its view.
    Register {
        /// The region's node.
        region: NodeAddress,
        /// The uid of the region's incarnation of that node.
        uid: u64,
        /// A proxy hosts nothing; it only routes.
        proxy: bool,
        /// The region is handing off for a graceful leave: allocate nothing to it.
        leaving: bool,
        /// Shards it hosts, each with the entity ids to remember; including shards whose
        /// entities are still stopping for a hand-off (their `ShardStopped` follows), so
        /// that a new coordinator never allocates a shard whose entities still run.
        shards: Vec<(ShardId, Vec<String>)>,
    },
    /// Where does `shard` live? Answered with `ShardHome` (allocating it if needed).
    GetShardHome {
        /// The asking region.
        region: NodeAddress,
        /// The shard.
        shard: ShardId,
    },
    /// The region started `shard` after `HostShard`.
    ShardStarted {
        /// The new home.
        region: NodeAddress,
        /// The shard.
        shard: ShardId,
    },
    /// The region stopped routing `shard` and buffers for it.
    BeginHandOffAck {
        /// The acknowledging region.
        region: NodeAddress,
        /// The shard.
        shard: ShardId,
    },
    /// All entities of `shard` stopped (hand-off done).
    ShardStopped {
        /// The old home.
        region: NodeAddress,
        /// The shard.
        shard: ShardId,
        /// Entity ids to restart at the new home (remember-entities).
        entities: Vec<String>,
    },
    /// With remember-entities: entities the region started since its last report.
    EntitiesStarted {
        /// The reporting region.
        region: NodeAddress,
        /// Shard and entity ids.
        entities: Vec<(ShardId, Vec<String>)>,
    },
    /// Hand off every shard of this region and allocate nothing more to it.
    GracefulShutdown {
        /// The leaving region.
        region: NodeAddress,
    },
}

/// Messages to a region; `M` is the entity message type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegionWire<M> {
    /// The coordinator accepted the registration; the current allocation.
    RegisterAck {
        /// Home of every allocated shard.
        homes: Vec<(ShardId, NodeAddress)>,
    },
    /// Start hosting `shard` (and restart these remembered entities).
    HostShard {
        /// The shard.
        shard: ShardId,
        /// Entity ids to start at once.
        entities: Vec<String>,
    },
    /// `shard` lives at `home`.
    ShardHome {
        /// The shard.
        shard: ShardId,
        /// Its node.
        home: NodeAddress,
    },
    /// `shard` is about to move: stop routing to it and buffer.
    BeginHandOff {
        /// The shard.
        shard: ShardId,
    },
    /// Stop all entities of `shard` and answer `ShardStopped`.
    HandOff {
        /// The shard.
        shard: ShardId,
    },
    /// The coordinator took note of the graceful shutdown.
    GracefulShutdownAck,
    /// A coordinator (re)started here: register with it again.
    CoordinatorStarted,
    /// Asks for this region's state; answered with `State` to `reply_to`'s region.
    GetState {
        /// The asking node.
        reply_to: NodeAddress,
        /// Request number.
        request: u64,
    },
    /// Answer to `GetState`.
    State {
        /// Request number.
        request: u64,
        /// The answering region's state.
        state: RegionState,
    },
    /// A message for an entity.
    Deliver {
        /// The entity's shard.
        shard: ShardId,
        /// The entity.
        entity_id: String,
        /// Times the message was forwarded between regions (bounded).
        hops: u8,
        /// The message.
        msg: M,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_variants_decode_for_any_message_type() {
        let home = NodeAddress::new("S", "10.0.0.1", 4053);
        let sent: Vec<RegionWire<()>> = vec![
            RegionWire::RegisterAck {
                homes: vec![(3, home.clone())],
            },
            RegionWire::HostShard {
                shard: 7,
                entities: vec!["a".into()],
            },
            RegionWire::ShardHome {
                shard: 7,
                home: home.clone(),
            },
            RegionWire::BeginHandOff { shard: 1 },
            RegionWire::HandOff { shard: 2 },
            RegionWire::GracefulShutdownAck,
            RegionWire::CoordinatorStarted,
        ];
        for m in sent {
            let bytes = postcard::to_allocvec(&m).unwrap();
            let got: RegionWire<(String, u64)> = postcard::from_bytes(&bytes).unwrap();
            let again: RegionWire<()> =
                postcard::from_bytes(&postcard::to_allocvec(&got).unwrap()).unwrap();
            assert_eq!(again, m);
        }
        let d = RegionWire::Deliver {
            shard: 1,
            entity_id: "e".into(),
            hops: 0,
            msg: ("x".to_string(), 5u64),
        };
        let got: RegionWire<(String, u64)> =
            postcard::from_bytes(&postcard::to_allocvec(&d).unwrap()).unwrap();
        assert_eq!(got, d);
    }
}
