//! The messages the trading services exchange, and the names of the pub-sub topics.
//!
//! Commands are generic over `R`, the address a reply goes to. The services use the runtime's
//! typed remote reference there; keeping it a parameter keeps this crate free of the runtime.
//!
//! | from | to | message |
//! |---|---|---|
//! | traders | `orderBook` entity (id = ticker) | [`OrderBookCommand`] |
//! | `orderBook` | the trader that asked | [`OrderBookReply`] |
//! | `orderBook` | topic `{ticker}-Fill` | [`Fill`](crate::Fill) |
//! | `orderBook` | topic `{ticker}-Match` | [`Match`](crate::Match) (numbered by `trade_id`) |
//! | pricing-web, tradectl | `priceAggregator` entity (id = ticker) | [`PriceCommand`] |
//! | `priceAggregator` | topics `{ticker}-price`, `{ticker}-volume` | [`PriceUpdate`] |

use serde::{Deserialize, Serialize};

use crate::book::{BookSnapshot, CancelOutcome, PlaceOutcome};
use crate::order::{Order, OrderId};
use crate::pricing::PriceUpdate;
use crate::ticker::Ticker;

/// The sharded entity type of order books (one entity per ticker).
pub const ORDER_BOOK: &str = "orderBook";
/// The role of the nodes that host order books.
pub const TRADE_PROCESSOR_ROLE: &str = "trade-processor";
/// The sharded entity type of price aggregators (one entity per ticker).
pub const PRICE_AGGREGATOR: &str = "priceAggregator";
/// The role of the nodes that host price aggregators.
pub const PRICING_ROLE: &str = "pricing-engine";
/// The role of the nodes that run traders.
pub const TRADER_ROLE: &str = "trader";
/// The role every node that handles trade events carries, as in the workshop.
pub const TRADE_EVENTS_ROLE: &str = "trade-events";
/// The cluster-client service through which price histories are asked for.
pub const PRICE_HISTORY_SERVICE: &str = "price-history";

/// A command to the order book of one ticker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderBookCommand<R> {
    /// Place an order. The book answers [`OrderBookReply::Confirmed`] once the order and its
    /// trades are durable, and again (as a duplicate) if the same order id is sent again.
    Place {
        /// The order.
        order: Order,
        /// Where the confirmation goes.
        reply_to: R,
    },
    /// Cancel some resting orders, then place some orders, of one ticker and in this order,
    /// stored in one atomic write: how a busy sender amortises the journal round trip.
    /// Answered with one [`OrderBookReply::Batch`] holding a [`OrderBookReply::Cancelled`] per
    /// cancel, then each order's answer, in order.
    Batch {
        /// The book.
        ticker: Ticker,
        /// Orders to withdraw first (unknown or departed ones answer `NotFound`).
        cancels: Vec<OrderId>,
        /// The orders to place, all for `ticker`.
        orders: Vec<Order>,
        /// Where the answers go.
        reply_to: R,
    },
    /// Cancel a resting order.
    Cancel {
        /// The book.
        ticker: Ticker,
        /// The order to cancel.
        order_id: OrderId,
        /// Where the answer goes.
        reply_to: R,
    },
    /// Ask for the whole book (every resting order).
    GetBook {
        /// The book.
        ticker: Ticker,
        /// Where the snapshot goes.
        reply_to: R,
    },
}

impl<R> OrderBookCommand<R> {
    /// The ticker, which is also the id of the order-book entity.
    pub fn ticker(&self) -> Ticker {
        match self {
            OrderBookCommand::Place { order, .. } => order.ticker,
            OrderBookCommand::Batch { ticker, .. }
            | OrderBookCommand::Cancel { ticker, .. }
            | OrderBookCommand::GetBook { ticker, .. } => *ticker,
        }
    }
}

/// An order book's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderBookReply {
    /// The order is durable in the journal (or was already: a duplicate).
    Confirmed {
        /// The book.
        ticker: Ticker,
        /// The order.
        order_id: OrderId,
        /// What happened to it.
        outcome: PlaceOutcome,
    },
    /// The order was refused and will never be accepted as sent.
    Rejected {
        /// The book.
        ticker: Ticker,
        /// The order.
        order_id: OrderId,
        /// Why.
        reason: String,
    },
    /// The answer to a cancel, once durable.
    Cancelled {
        /// The book.
        ticker: Ticker,
        /// The order.
        order_id: OrderId,
        /// What happened.
        outcome: CancelOutcome,
    },
    /// The whole book.
    Book(BookSnapshot),
    /// The answers to a [`OrderBookCommand::Batch`]: one per cancel, then one per order, in order.
    Batch(Vec<OrderBookReply>),
}

impl OrderBookReply {
    /// The book that answered (`None` for an empty batch).
    pub fn ticker(&self) -> Option<Ticker> {
        match self {
            OrderBookReply::Confirmed { ticker, .. }
            | OrderBookReply::Rejected { ticker, .. }
            | OrderBookReply::Cancelled { ticker, .. } => Some(*ticker),
            OrderBookReply::Book(snapshot) => Some(snapshot.ticker),
            OrderBookReply::Batch(replies) => replies.first().and_then(OrderBookReply::ticker),
        }
    }
}

/// A command to the price aggregator of one ticker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PriceCommand<R> {
    /// Ask for the latest price and the kept history.
    GetHistory {
        /// The ticker.
        ticker: Ticker,
        /// Where the history goes.
        reply_to: R,
    },
}

impl<R> PriceCommand<R> {
    /// The ticker, which is also the id of the price-aggregator entity.
    pub fn ticker(&self) -> Ticker {
        match self {
            PriceCommand::GetHistory { ticker, .. } => *ticker,
        }
    }
}

/// A ticker's price history, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceHistory {
    /// The ticker.
    pub ticker: Ticker,
    /// The kept updates, oldest first.
    pub updates: Vec<PriceUpdate>,
}

/// The pub-sub topics of a ticker.
pub mod topics {
    use crate::ticker::Ticker;

    /// Fills of `ticker`'s orders: `MSFT-Fill`. Each message is a `Vec<Fill>`: the fills of
    /// one journal write, in order.
    pub fn fills(ticker: Ticker) -> String {
        format!("{ticker}-Fill")
    }

    /// Matches of `ticker`: `MSFT-Match`. Each message is a `Vec<Match>`: the matches of one
    /// journal write, in trade-id order.
    pub fn matches(ticker: Ticker) -> String {
        format!("{ticker}-Match")
    }

    /// Price updates of `ticker`: `MSFT-price`.
    pub fn prices(ticker: Ticker) -> String {
        format!("{ticker}-price")
    }

    /// Volume updates of `ticker`: `MSFT-volume` (the same [`PriceUpdate`](crate::PriceUpdate)
    /// as on the price topic, for subscribers that follow volume only, as in the workshop).
    pub fn volumes(ticker: Ticker) -> String {
        format!("{ticker}-volume")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{Price, Timestamp};

    #[test]
    fn commands_know_their_entity() {
        let t = Ticker::new("MSFT").unwrap();
        let order = Order::bid(
            OrderId::from_u128(1),
            t,
            Price::from_ticks(1),
            1,
            Timestamp(0),
        );
        let place: OrderBookCommand<()> = OrderBookCommand::Place {
            order,
            reply_to: (),
        };
        assert_eq!(place.ticker(), t);
        assert_eq!(topics::matches(t), "MSFT-Match");
        assert_eq!(topics::fills(t), "MSFT-Fill");
        assert_eq!(topics::prices(t), "MSFT-price");
    }
}
