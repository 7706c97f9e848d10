//! The `price-history` service: cluster clients (pricing-web, tradectl through it) ask it
//! for a ticker's history through any receptionist; it forwards the request to the ticker's
//! aggregator, which answers the client directly (back through the receptionist).

use cluster_sharding::ShardRegion;
use cluster_tools::client::{ClusterReceptionist, ReplyTo};
use domain::Ticker;
use domain::protocol::{PRICE_HISTORY_SERVICE, PriceCommand};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::debug;

use crate::aggregator::PriceMsg;

/// A history request on its way to the aggregator.
pub struct Request {
    ticker: Ticker,
    reply_to: ReplyTo,
}

/// The forwarding actor (one per pricing node).
pub struct HistoryService;

impl Actor for HistoryService {
    type Msg = Request;
    type State = ShardRegion<PriceMsg>;
    type Arguments = ShardRegion<PriceMsg>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Request>,
        region: ShardRegion<PriceMsg>,
    ) -> Result<ShardRegion<PriceMsg>, ActorProcessingErr> {
        Ok(region)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Request>,
        r: Request,
        region: &mut ShardRegion<PriceMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = region.tell(
            r.ticker.to_string(),
            PriceMsg::GetHistory {
                reply_to: r.reply_to,
            },
        ) {
            debug!(error = %e, "history request not forwarded");
        }
        Ok(())
    }
}

/// Starts this node's history service and registers it with the receptionist.
pub async fn register(
    receptionist: &ClusterReceptionist,
    region: ShardRegion<PriceMsg>,
) -> Result<(), String> {
    let (actor, _) = Actor::spawn(None, HistoryService, region)
        .await
        .map_err(|e| e.to_string())?;
    receptionist
        .register_service_with(PRICE_HISTORY_SERVICE, actor, |req| {
            let PriceCommand::GetHistory { ticker, .. } = req.decode::<PriceCommand<()>>()?;
            Ok(Request {
                ticker,
                reply_to: req.reply_to.clone(),
            })
        })
        .await
        .map_err(|e| e.to_string())
}
