//! The trade-processor service: hosts the sharded `orderBook` entities (role
//! `trade-processor`), one event-sourced matching engine per ticker.
//!
//! - [`journal`]: how a book's events and snapshots are stored;
//! - [`entity`]: the order-book entity (decide, persist, apply, confirm, publish);
//! - [`start`]: the region on a service node.

pub mod entity;
pub mod journal;

use cluster_sharding::{RegionError, ShardRegion, ShardingSettings};
use host::{ServiceNode, Stores};

pub use entity::{OrderBookFactory, OrderBookMsg, ReplyTo, SnapshotPolicy, TradingMetrics};

use domain::protocol::{ORDER_BOOK, TRADE_EVENTS_ROLE, TRADE_PROCESSOR_ROLE};

/// The sharded type name of order books.
pub const TYPE_NAME: &str = ORDER_BOOK;
/// The role of the nodes that host order books.
pub const ROLE: &str = TRADE_PROCESSOR_ROLE;
/// Roles of a trade-processor node.
pub const ROLES: [&str; 2] = [ROLE, TRADE_EVENTS_ROLE];
/// Cluster port of a trade-processor when none is configured.
pub const DEFAULT_PORT: u16 = 5055;

/// Sharding settings of order books (30 shards, hosted on `trade-processor` nodes).
pub fn sharding_settings() -> ShardingSettings {
    ShardingSettings::new(TYPE_NAME).with_role(ROLE)
}

/// A proxy to the order books, for nodes that send orders without hosting books.
pub async fn proxy(service: &ServiceNode) -> Result<ShardRegion<OrderBookMsg>, RegionError> {
    ShardRegion::start_proxy_on_node(sharding_settings(), &service.node).await
}

/// Starts the order-book region on `service` (a node with the `trade-processor` role); its
/// books count orders and matches on the node's metrics.
pub async fn start(
    service: &ServiceNode,
    stores: &Stores,
    snapshots: SnapshotPolicy,
) -> Result<ShardRegion<OrderBookMsg>, RegionError> {
    let factory = OrderBookFactory::new(
        service.node.remoting().clone(),
        service.pubsub.clone(),
        stores.persistence.clone(),
        snapshots,
        TradingMetrics::new(service.node.metrics().meter()),
    );
    let region = ShardRegion::start_on_node(sharding_settings(), factory, &service.node).await?;
    service.sharding.insert(TYPE_NAME, region.clone());
    Ok(region)
}
