//! One bidder or asker: places random orders for one ticker, inside the ticker's price range,
//! on its schedule, and hands them to the desk (which numbers them, sends them and sees them
//! confirmed).

use std::time::Duration;

use domain::{PriceRange, Side, Ticker, Timestamp};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::desk::{DeskMsg, NewOrder};

/// How often traders place orders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// The workshop's pace: a first order after `first`, then one every `every`.
    Workshop {
        /// Delay of the first order.
        first: Duration,
        /// Time between orders.
        every: Duration,
    },
    /// A load: this many orders per second from this one trader, spread evenly.
    Rate {
        /// Orders per second.
        per_second: f64,
    },
}

/// How often a trader under [`Pacing::Rate`] wakes up.
const RATE_TICK: Duration = Duration::from_millis(10);

/// Largest quantity a trader orders.
pub const MAX_QUANTITY: u64 = 100;

/// What a trader starts with.
pub struct TraderArgs {
    /// Its ticker.
    pub ticker: Ticker,
    /// Bid (buy) or ask (sell).
    pub side: Side,
    /// Prices it quotes.
    pub range: PriceRange,
    /// Its pace.
    pub pacing: Pacing,
    /// Where its orders go.
    pub desk: ActorRef<DeskMsg>,
    /// Seed of its random prices and sizes.
    pub seed: u64,
}

/// The trader actor.
pub struct Trader;

/// A trader's state.
pub struct TraderState {
    args: TraderArgs,
    rng: SmallRng,
    carry: f64,
}

/// Wakes a trader up.
pub struct Tick;

impl TraderState {
    fn place(&mut self) {
        let price = self.args.range.sample(&mut self.rng);
        let quantity = self.rng.random_range(1..=MAX_QUANTITY);
        let order = NewOrder {
            ticker: self.args.ticker,
            side: self.args.side,
            price,
            quantity,
            placed_at: Timestamp(host::now_micros()),
        };
        let _ = self.args.desk.cast(DeskMsg::Submit(order));
    }
}

impl Actor for Trader {
    type Msg = Tick;
    type State = TraderState;
    type Arguments = TraderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Tick>,
        args: TraderArgs,
    ) -> Result<TraderState, ActorProcessingErr> {
        match args.pacing {
            Pacing::Workshop { first, .. } => {
                myself.send_after(first, || Tick);
            }
            Pacing::Rate { .. } => {
                myself.send_interval(RATE_TICK, || Tick);
            }
        }
        Ok(TraderState {
            rng: SmallRng::seed_from_u64(args.seed),
            carry: 0.0,
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Tick>,
        _tick: Tick,
        s: &mut TraderState,
    ) -> Result<(), ActorProcessingErr> {
        match s.args.pacing {
            Pacing::Workshop { every, .. } => {
                s.place();
                myself.send_after(every, || Tick);
            }
            Pacing::Rate { per_second } => {
                s.carry += per_second * RATE_TICK.as_secs_f64();
                while s.carry >= 1.0 {
                    s.carry -= 1.0;
                    s.place();
                }
            }
        }
        Ok(())
    }
}
