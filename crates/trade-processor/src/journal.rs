//! How an order book is stored: its events (one journal entry each, tagged `MSFT` and
//! `MSFT-Match` etc.) and its snapshots (the whole book).

use domain::{BookEvent, BookSnapshot, OrderBook, Ticker};
use persistence::Persistable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A book event as journaled: the domain event, with the domain's manifest and tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Journaled(pub BookEvent);

impl Persistable for Journaled {
    const MANIFEST: &'static str = BookEvent::MANIFEST;
    const SCHEMA_VERSION: u32 = BookEvent::SCHEMA_VERSION;

    fn tags(&self) -> Vec<String> {
        self.0.tags()
    }
}

/// The state of an order-book entity, stored as a [`BookSnapshot`]: every resting order with
/// its remaining quantity and arrival order, the trade count and the placed ids' stream marks.
#[derive(Debug, Clone)]
pub struct BookState(pub OrderBook);

impl BookState {
    /// An empty book.
    pub fn new(ticker: Ticker) -> Self {
        BookState(OrderBook::new(ticker))
    }
}

impl Serialize for BookState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.snapshot().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BookState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let snapshot = BookSnapshot::deserialize(deserializer)?;
        OrderBook::from_snapshot(&snapshot)
            .map(BookState)
            .map_err(serde::de::Error::custom)
    }
}

impl Persistable for BookState {
    const MANIFEST: &'static str = "OrderBookSnapshot";
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Order, OrderId, Price, Timestamp};

    #[test]
    fn the_state_round_trips_through_its_snapshot_form() {
        let t = Ticker::new("MSFT").unwrap();
        let mut state = BookState::new(t);
        let mut out = Vec::new();
        for (n, price) in [(1u128, 100), (2, 100), (3, 99)] {
            let order = Order::bid(
                OrderId::from_u128(n),
                t,
                Price::from_ticks(price),
                5,
                Timestamp(0),
            );
            state.0.place(order, Timestamp(0), &mut out).unwrap();
        }
        let json = serde_json::to_string(&state).unwrap();
        let back: BookState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.0.snapshot(), state.0.snapshot());
        assert_eq!(Journaled(out[0]).tags(), vec!["MSFT", "MSFT-OrderPlaced"]);
    }
}
