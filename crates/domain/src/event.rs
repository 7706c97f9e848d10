//! The events an order book emits. They are the journal's content: replaying them onto an empty
//! book (see [`crate::OrderBook::apply`]) rebuilds the book exactly.

use serde::{Deserialize, Serialize};

use crate::money::{Price, Quantity, Timestamp};
use crate::order::{Order, OrderId, Side};
use crate::ticker::Ticker;

/// One side of a trade, as seen by the order that was (partly) filled.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Fill {
    /// The instrument.
    pub ticker: Ticker,
    /// The order that was filled.
    pub order_id: OrderId,
    /// That order's side.
    pub side: Side,
    /// The trade price (the resting order's price).
    pub price: Price,
    /// Shares filled by this trade.
    pub quantity: Quantity,
    /// Shares of the order still open after this fill.
    pub remaining: Quantity,
    /// True while the order is not yet completely filled (`remaining > 0`).
    pub partial: bool,
    /// When the trade happened.
    pub at: Timestamp,
}

/// A trade between a buyer and a seller: what the pricing engine consumes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Match {
    /// The instrument.
    pub ticker: Ticker,
    /// The trade's number in its book: 1, 2, 3, ... with no gaps, so a consumer that has
    /// applied trade `n` knows the next one is `n + 1` and can detect a missed match.
    pub trade_id: u64,
    /// The buying order.
    pub buy_order_id: OrderId,
    /// The selling order.
    pub sell_order_id: OrderId,
    /// The trade price (the resting order's price).
    pub price: Price,
    /// Shares traded.
    pub quantity: Quantity,
    /// The side of the incoming order that caused the trade.
    pub aggressor: Side,
    /// When the trade happened.
    pub at: Timestamp,
}

/// A resting order removed from the book on request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The instrument.
    pub ticker: Ticker,
    /// The cancelled order.
    pub order_id: OrderId,
    /// Shares that were still open and are now withdrawn.
    pub remaining: Quantity,
    /// When it was cancelled.
    pub at: Timestamp,
}

/// Everything that changes an order book.
///
/// For one accepted order the book emits `OrderPlaced`, then for each trade `Fill` (resting
/// order), `Fill` (incoming order) and `Match`, in that order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum BookEvent {
    /// An order was accepted (not a duplicate, valid).
    OrderPlaced(Order),
    /// An order was filled, partly or completely.
    Fill(Fill),
    /// Two orders traded.
    Match(Match),
    /// A resting order was cancelled.
    OrderCancelled(OrderCancelled),
}

impl BookEvent {
    /// The type name stored with every journaled book event (the journal's manifest).
    pub const MANIFEST: &'static str = "BookEvent";
    /// The schema version of journaled book events.
    pub const SCHEMA_VERSION: u32 = 1;

    /// The journal tags of this event: the ticker (`MSFT`) and ticker plus kind (`MSFT-Match`),
    /// which is what the pricing engine reads matches by.
    pub fn tags(&self) -> Vec<String> {
        let ticker = self.ticker();
        vec![ticker.to_string(), Self::kind_tag(ticker, self.kind())]
    }

    /// The tag of one kind of event of a ticker, such as `MSFT-Match`.
    pub fn kind_tag(ticker: Ticker, kind: &str) -> String {
        format!("{ticker}-{kind}")
    }

    /// The ticker every event carries.
    pub fn ticker(&self) -> Ticker {
        match self {
            BookEvent::OrderPlaced(o) => o.ticker,
            BookEvent::Fill(f) => f.ticker,
            BookEvent::Match(m) => m.ticker,
            BookEvent::OrderCancelled(c) => c.ticker,
        }
    }

    /// A short name of the event kind (`OrderPlaced`, `Fill`, `Match`, `OrderCancelled`),
    /// used for journal tags such as `MSFT-Match`.
    pub fn kind(&self) -> &'static str {
        match self {
            BookEvent::OrderPlaced(_) => "OrderPlaced",
            BookEvent::Fill(_) => "Fill",
            BookEvent::Match(_) => "Match",
            BookEvent::OrderCancelled(_) => "OrderCancelled",
        }
    }
}
