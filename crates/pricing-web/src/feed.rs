//! The price feed: pricing-web is a cluster client of the pricing nodes (never a member). It
//! subscribes to every ticker's `{ticker}-price` topic through a receptionist, hands each
//! update to the [`PriceHub`], and, whenever it (re)connects, asks the `price-history`
//! service for each ticker's history so a fresh dashboard starts with charts, not blanks.
//! The hub skips points it already has, so history and live updates never double.
//!
//! A price update whose publish was traced (sampled) is handed to the hub inside a
//! `websocket.push` span, child of the pricing node's publish, so the trace of an order ends
//! with its push to the browsers.

use std::sync::Arc;
use std::time::Duration;

use cluster_tools::client::{ClientSettings, ClusterClient};
use domain::PriceUpdate;
use domain::protocol::{PRICE_HISTORY_SERVICE, PriceCommand, PriceHistory, topics};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::{NodeAddress, Remoting};
use telemetry::MessageSpan;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::hub::PriceHub;

/// How often the feed checks its connection.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long a history request may take.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(3);

/// A published price and the trace context it came with.
struct Priced {
    update: PriceUpdate,
    trace: Option<Box<str>>,
}

/// Hands published prices to the hub.
struct Forwarder;

/// The forwarder's hub and this process's node label (for spans).
struct ForwarderState {
    hub: Arc<PriceHub>,
    node: Arc<str>,
}

impl Actor for Forwarder {
    type Msg = Priced;
    type State = ForwarderState;
    type Arguments = ForwarderState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Priced>,
        state: ForwarderState,
    ) -> Result<ForwarderState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Priced>,
        priced: Priced,
        st: &mut ForwarderState,
    ) -> Result<(), ActorProcessingErr> {
        let span = MessageSpan::sampled("websocket.push", &st.node, priced.trace.as_deref())
            .map(|m| m.with_destination("/ws"));
        let _entered = span.as_ref().map(|m| m.span().enter());
        if let Err(e) = st.hub.publish(&priced.update) {
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
    forwarder: ActorRef<Priced>,
}

impl PriceFeed {
    /// Connects to the receptionists at `contacts` over `remoting` and feeds `hub`.
    pub async fn start(
        remoting: &Remoting,
        contacts: Vec<NodeAddress>,
        hub: Arc<PriceHub>,
    ) -> Result<PriceFeed, String> {
        Self::start_with(remoting, ClientSettings::new(contacts), hub).await
    }

    /// As [`PriceFeed::start`], with the cluster client's settings (contacts, or a contact
    /// service such as the pricing Service's DNS name).
    pub async fn start_with(
        remoting: &Remoting,
        settings: ClientSettings,
        hub: Arc<PriceHub>,
    ) -> Result<PriceFeed, String> {
        let client = ClusterClient::start(remoting, settings)
            .await
            .map_err(|e| e.to_string())?;
        let state = ForwarderState {
            hub: hub.clone(),
            node: remoting.node_label().clone(),
        };
        let (forwarder, _) = Actor::spawn(None, Forwarder, state)
            .await
            .map_err(|e| e.to_string())?;
        for &t in hub.tickers() {
            client
                .subscribe_with(&topics::prices(t), forwarder.clone(), |d| {
                    Ok(Priced {
                        update: d.decode()?,
                        trace: d.trace_context.map(Into::into),
                    })
                })
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
