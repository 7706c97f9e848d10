//! The price feed: pricing-web is a cluster client of the pricing nodes (never a member). It
//! subscribes to every ticker's `{ticker}-price` topic through a receptionist, hands each
//! update to the [`PriceHub`], and, whenever it (re)connects, asks the `price-history`
//! service for each ticker's history so a fresh dashboard starts with charts, not blanks.
//! The hub skips points it already has, so history and live updates never double.

use std::sync::Arc;
use std::time::Duration;

use cluster_tools::client::{ClientSettings, ClusterClient};
use domain::PriceUpdate;
use domain::protocol::{PRICE_HISTORY_SERVICE, PriceCommand, PriceHistory, topics};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::{NodeAddress, Remoting};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::hub::PriceHub;

/// How often the feed checks its connection.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long a history request may take.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(3);

/// Hands published prices to the hub.
struct Forwarder;

impl Actor for Forwarder {
    type Msg = PriceUpdate;
    type State = Arc<PriceHub>;
    type Arguments = Arc<PriceHub>;

    async fn pre_start(
        &self,
        _myself: ActorRef<PriceUpdate>,
        hub: Arc<PriceHub>,
    ) -> Result<Arc<PriceHub>, ActorProcessingErr> {
        Ok(hub)
    }

    async fn handle(
        &self,
        _myself: ActorRef<PriceUpdate>,
        update: PriceUpdate,
        hub: &mut Arc<PriceHub>,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = hub.publish(&update) {
            debug!(error = %e, "update for a ticker this dashboard does not show");
        }
        Ok(())
    }
}

/// A running feed.
pub struct PriceFeed {
    /// The cluster client.
    pub client: ClusterClient,
    watcher: JoinHandle<()>,
    forwarder: ActorRef<PriceUpdate>,
}

impl PriceFeed {
    /// Connects to the receptionists at `contacts` over `remoting` and feeds `hub`.
    pub async fn start(
        remoting: &Remoting,
        contacts: Vec<NodeAddress>,
        hub: Arc<PriceHub>,
    ) -> Result<PriceFeed, String> {
        let client = ClusterClient::start(remoting, ClientSettings::new(contacts))
            .await
            .map_err(|e| e.to_string())?;
        let (forwarder, _) = Actor::spawn(None, Forwarder, hub.clone())
            .await
            .map_err(|e| e.to_string())?;
        for &t in hub.tickers() {
            client
                .subscribe(&topics::prices(t), forwarder.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        let watcher = tokio::spawn(watch(client.clone(), hub));
        Ok(PriceFeed {
            client,
            watcher,
            forwarder,
        })
    }

    /// Stops the client and the feed.
    pub fn stop(&self) {
        self.watcher.abort();
        self.client.stop();
        self.forwarder.stop(None);
    }
}

/// Keeps `/ready` in step with the connection and loads histories on each (re)connect.
async fn watch(client: ClusterClient, hub: Arc<PriceHub>) {
    let mut connected_to: Option<NodeAddress> = None;
    loop {
        let now = client.receptionist().await;
        hub.set_ready(now.is_some());
        if now.is_some() && now != connected_to {
            info!(receptionist = ?now, "price feed connected");
            load_histories(&client, &hub).await;
        }
        connected_to = now;
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

async fn load_histories(client: &ClusterClient, hub: &PriceHub) {
    for &ticker in hub.tickers() {
        let ask: PriceCommand<()> = PriceCommand::GetHistory {
            ticker,
            reply_to: (),
        };
        match client
            .ask::<_, PriceHistory>(PRICE_HISTORY_SERVICE, &ask, None, HISTORY_TIMEOUT)
            .await
        {
            Ok(history) => {
                for u in &history.updates {
                    let _ = hub.publish(u);
                }
            }
            Err(e) => debug!(%ticker, error = %e, "no history yet"),
        }
    }
}
