//! The traders service: per ticker, a random number of bidders and askers (1 to 5 each, as
//! in the workshop) place random orders inside the ticker's price range, through a proxy of
//! the `orderBook` region, and re-send each order until its book confirms it.
//!
//! - [`pending`]: the unconfirmed orders and the retry rule (pure);
//! - [`resting`]: the desk's resting orders and which to cancel (pure);
//! - [`desk`]: the node's desk: sends orders, takes confirmations, re-sends, counts fills;
//! - [`blotter`]: with `BLOTTER_DIR`, the file of every order the desk saw confirmed (one JSON
//!   line each, one file per process incarnation), for checks against the journal from
//!   outside the cluster;
//! - [`trader`]: one bidder or asker;
//! - [`start`]: all of it on a service node.

pub mod blotter;
pub mod desk;
pub mod pending;
pub mod resting;
pub mod trader;

use std::path::PathBuf;
use std::time::Duration;

use cluster_sharding::{RegionError, ShardRegion, ShardingSettings};
use domain::protocol::{ORDER_BOOK, TRADE_EVENTS_ROLE, TRADE_PROCESSOR_ROLE, TRADER_ROLE, topics};
use domain::{PriceRange, Side, Ticker};
use host::ServiceNode;
use ractor::{Actor, ActorRef, RpcReplyPort};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use runtime::RemoteRef;

pub use blotter::{Blotter, BlotterLine};
pub use desk::{DESK, DeskMsg, DeskStats};
pub use trader::Pacing;

/// Roles of a traders node.
pub const ROLES: [&str; 2] = [TRADER_ROLE, TRADE_EVENTS_ROLE];
/// Cluster port of a traders node when none is configured.
pub const DEFAULT_PORT: u16 = 5055;

/// How a traders node trades.
#[derive(Debug, Clone)]
pub struct TradersConfig {
    /// The tickers traded.
    pub tickers: Vec<Ticker>,
    /// Bidders and askers per ticker are each drawn from this range.
    pub traders_per_side: std::ops::RangeInclusive<usize>,
    /// Their pace.
    pub pacing: TradersPacing,
    /// Re-send an order unconfirmed for this long.
    pub retry_after: Duration,
    /// Most unconfirmed orders at a time on this node.
    pub max_pending: usize,
    /// Most of this node's orders resting in one book; the oldest beyond it are cancelled.
    pub max_resting: usize,
    /// Seed of the price ranges, trader counts and orders; `None` draws one.
    pub seed: Option<u64>,
    /// Folder of the blotter (`BLOTTER_DIR`): every confirmed order is appended to a file of
    /// this node incarnation in it (see [`blotter`]); `None` keeps no blotter.
    pub blotter_dir: Option<PathBuf>,
}

/// The pace of the whole node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TradersPacing {
    /// Each trader: first order after 1 s, then one every 10 s (the workshop).
    Workshop,
    /// This many orders per second over all traders of the node.
    Load {
        /// Orders per second.
        orders_per_second: u32,
    },
}

impl Default for TradersConfig {
    fn default() -> Self {
        TradersConfig {
            tickers: Ticker::defaults(),
            traders_per_side: 1..=5,
            pacing: TradersPacing::Workshop,
            retry_after: Duration::from_secs(3),
            max_pending: 20_000,
            max_resting: 200,
            seed: None,
            blotter_dir: None,
        }
    }
}

/// The running traders of a node.
#[derive(Clone)]
pub struct Traders {
    desk: ActorRef<DeskMsg>,
    /// Bidders and askers started.
    pub count: usize,
    blotter: Option<Blotter>,
}

impl Traders {
    /// The desk's counters; `reset_latency` starts a new latency window.
    pub async fn stats(&self, reset_latency: bool) -> Option<DeskStats> {
        self.desk
            .call(
                |reply: RpcReplyPort<DeskStats>| DeskMsg::Stats {
                    reset_latency,
                    reply,
                },
                Some(Duration::from_secs(5)),
            )
            .await
            .ok()
            .and_then(|r| r.success_or(()).ok())
    }

    /// The ids of the most recently confirmed orders (up to 100,000), oldest first.
    pub async fn confirmed_ids(&self) -> Option<Vec<domain::OrderId>> {
        self.desk
            .call(DeskMsg::Confirmed, Some(Duration::from_secs(5)))
            .await
            .ok()
            .and_then(|r| r.success_or(()).ok())
    }

    /// This node's blotter, when it keeps one (`BLOTTER_DIR`).
    pub fn blotter(&self) -> Option<&Blotter> {
        self.blotter.as_ref()
    }

    /// Stops placing new orders; the desk keeps re-sending until every order is confirmed.
    pub fn stop_trading(&self) {
        for trader in self.desk.get_children() {
            trader.stop(None);
        }
    }

    /// Stops the desk and its traders.
    pub fn stop(&self) {
        self.desk.stop(None);
    }
}

/// Starts the desk, a proxy of the order books, and the traders on `service`; with
/// `config.blotter_dir`, opens the blotter and closes it in the node's coordinated shutdown.
pub async fn start(service: &ServiceNode, config: &TradersConfig) -> Result<Traders, StartError> {
    let blotter = config
        .blotter_dir
        .as_ref()
        .map(|dir| {
            Blotter::create(dir, service.node.address()).map_err(|error| StartError::Blotter {
                dir: dir.clone(),
                error,
            })
        })
        .transpose()?;
    let books: ShardRegion<desk::OrderBookMsg> = ShardRegion::start_proxy_on_node(
        ShardingSettings::new(ORDER_BOOK).with_role(TRADE_PROCESSOR_ROLE),
        &service.node,
    )
    .await?;
    service.sharding.insert(ORDER_BOOK, books.clone());
    let remoting = service.node.remoting();
    let reply_to = RemoteRef::new(remoting.self_address().address.clone(), DESK);
    let (desk, _) = Actor::spawn(
        None,
        desk::Desk,
        desk::DeskArgs {
            books,
            reply_to,
            retry_after: config.retry_after,
            max_pending: config.max_pending,
            max_resting: config.max_resting,
            blotter: blotter.clone(),
        },
    )
    .await?;
    if let Some(blotter) = &blotter {
        close_blotter_on_shutdown(service, desk.clone(), blotter.clone());
    }
    remoting.register_with(DESK, desk.clone(), |inbound| {
        postcard::from_bytes::<domain::protocol::OrderBookReply>(inbound.payload)
            .map(DeskMsg::Reply)
    });
    for &ticker in &config.tickers {
        service
            .pubsub
            .subscribe_with(&topics::fills(ticker), None, desk.clone(), |d| {
                d.decode::<Vec<domain::Fill>>().map(DeskMsg::Fills)
            })
            .await
            .map_err(|e| StartError::PubSub(e.to_string()))?;
    }

    let mut rng = match config.seed {
        Some(s) => SmallRng::seed_from_u64(s),
        None => SmallRng::from_os_rng(),
    };
    let mut plan = Vec::new();
    for &ticker in &config.tickers {
        let range = PriceRange::random(&mut rng);
        for side in [Side::Bid, Side::Ask] {
            for _ in 0..rng.random_range(config.traders_per_side.clone()) {
                plan.push((ticker, side, range, rng.random::<u64>()));
            }
        }
    }
    let count = plan.len();
    let pacing = match config.pacing {
        TradersPacing::Workshop => Pacing::Workshop {
            first: Duration::from_secs(1),
            every: Duration::from_secs(10),
        },
        TradersPacing::Load { orders_per_second } => Pacing::Rate {
            per_second: f64::from(orders_per_second) / count.max(1) as f64,
        },
    };
    for (ticker, side, range, seed) in plan {
        Actor::spawn_linked(
            None,
            trader::Trader,
            trader::TraderArgs {
                ticker,
                side,
                range,
                pacing,
                desk: desk.clone(),
                seed,
            },
            desk.get_cell(),
        )
        .await?;
    }
    Ok(Traders {
        desk,
        count,
        blotter,
    })
}

/// Closes the blotter in phase `before-actor-system-terminate` of the node's coordinated
/// shutdown (SIGTERM, a leave, being downed or removed): after `cluster-shutdown` stopped the
/// transport, so no confirmation arrives later. A call to the desk first makes it take every
/// confirmation already in its mailbox (it handles messages in order), so each one is on the
/// blotter's channel before the close, which writes, syncs and closes the file.
fn close_blotter_on_shutdown(service: &ServiceNode, desk: ActorRef<DeskMsg>, blotter: Blotter) {
    let added = service.node.coordinated_shutdown().add_task(
        "before-actor-system-terminate",
        "traders-close-blotter",
        move |_| async move {
            let stats = desk
                .call(
                    |reply| DeskMsg::Stats {
                        reset_latency: false,
                        reply,
                    },
                    Some(Duration::from_secs(2)),
                )
                .await
                .ok()
                .and_then(|r| r.success_or(()).ok());
            if let Some(s) = stats {
                tracing::info!(
                    placed = s.placed,
                    confirmed = s.confirmed,
                    pending = s.pending,
                    "desk's last counts"
                );
            }
            // The writer logs the path and the counts ("blotter closed").
            let _ = blotter.close().await;
        },
    );
    if let Err(e) = added {
        tracing::warn!(error = %e, "the blotter will not be closed by the shutdown");
    }
}

/// Why the traders did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The order-book proxy did not start.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// An actor did not start.
    #[error("cannot start an actor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    /// The fill subscriptions failed.
    #[error("cannot subscribe to fills: {0}")]
    PubSub(String),
    /// The blotter file could not be created.
    #[error("BLOTTER_DIR (--blotter-dir): cannot open a blotter in {}: {error}", dir.display())]
    Blotter {
        /// The folder.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}
