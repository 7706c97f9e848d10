//! The pricing service: one price aggregator per ticker, sharded over the nodes with the
//! `pricing-engine` role, and the receptionist through which pricing-web (a cluster client)
//! follows prices and asks for histories.
//!
//! - [`projection`]: the pure core: matches in, EMWA price and volume out, each match applied
//!   exactly once whether it came by pub-sub, from the journal, or both;
//! - [`aggregator`]: the sharded entity around it (journal stream, pub-sub, checkpoints);
//! - [`history`]: the `price-history` service clients ask;
//! - [`start`]: all of it on a service node.

pub mod aggregator;
pub mod history;
pub mod projection;

use std::time::Duration;

use cluster_sharding::{RegionError, RememberStore, ShardRegion, ShardingSettings};
use cluster_tools::client::{ClusterReceptionist, ReceptionistSettings};
use domain::Ticker;
use domain::protocol::{PRICE_AGGREGATOR, PRICING_ROLE, TRADE_EVENTS_ROLE};
use host::{ServiceNode, Stores};

pub use aggregator::{AggregatorSettings, PriceMsg};
pub use projection::{Applied, PriceProjection};

/// Roles of a pricing node.
pub const ROLES: [&str; 2] = [PRICING_ROLE, TRADE_EVENTS_ROLE];
/// Cluster port of a pricing node when none is configured.
pub const DEFAULT_PORT: u16 = 5055;
/// How often a pricing node wakes every ticker's aggregator (so each runs even before a
/// client asks, and comes back at once after a hand-off or a crash).
const WAKE_INTERVAL: Duration = Duration::from_secs(5);

/// Sharding settings of price aggregators.
pub fn sharding_settings() -> ShardingSettings {
    let mut s = ShardingSettings::new(PRICE_AGGREGATOR).with_role(PRICING_ROLE);
    s.remember_entities = true;
    s
}

/// The running pricing parts of a node.
pub struct Pricing {
    /// The aggregators' region.
    pub region: ShardRegion<PriceMsg>,
    /// The receptionist for cluster clients.
    pub receptionist: ClusterReceptionist,
    waker: tokio::task::JoinHandle<()>,
}

impl Drop for Pricing {
    fn drop(&mut self) {
        self.waker.abort();
    }
}

/// Why pricing did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The region did not start.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// An actor did not start.
    #[error("cannot start an actor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    /// The service registration failed.
    #[error("cannot register the history service: {0}")]
    Service(String),
}

/// Starts the aggregators of `tickers`, the history service and the receptionist on
/// `service` (a node with the `pricing-engine` role).
pub async fn start(
    service: &ServiceNode,
    stores: &Stores,
    tickers: Vec<Ticker>,
    settings: AggregatorSettings,
) -> Result<Pricing, StartError> {
    let factory = aggregator::AggregatorFactory {
        stores: stores.clone(),
        pubsub: service.pubsub.clone(),
        remoting: service.node.remoting().clone(),
        settings,
        lag: telemetry::instruments::events_by_tag_lag(service.node.metrics().meter()),
    };
    // Remembered aggregators are stored in the journal, so they run again after a restart
    // of every pricing node without waiting for the first wake-up.
    let mut sharding = sharding_settings();
    sharding.remember_entities_store = Some(RememberStore::new(stores.journal.clone()));
    let region = ShardRegion::start_on_node(sharding, factory, &service.node).await?;
    service.sharding.insert(PRICE_AGGREGATOR, region.clone());
    let receptionist = ClusterReceptionist::start(
        service.node.cluster(),
        service.node.remoting(),
        &service.pubsub,
        ReceptionistSettings::default(),
    )
    .await?;
    history::register(&receptionist, region.clone())
        .await
        .map_err(StartError::Service)?;
    let r = region.clone();
    let waker = tokio::spawn(async move {
        loop {
            for t in &tickers {
                let _ = r.tell(t.to_string(), PriceMsg::Wake);
            }
            tokio::time::sleep(WAKE_INTERVAL).await;
        }
    });
    Ok(Pricing {
        region,
        receptionist,
        waker,
    })
}
