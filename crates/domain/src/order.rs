//! Orders: their ids, sides and types, and the order a trader places with the book.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Price, Quantity, Timestamp};
use crate::ticker::Ticker;

/// A globally unique order id (a UUID), unique across processes without coordination.
///
/// Serialized as the canonical hyphenated UUID string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

/// Hashes the id as one 128-bit integer: one hasher call instead of a length plus 16 bytes,
/// which matters on the matching engine's hot path (every order is looked up once).
impl std::hash::Hash for OrderId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.0.as_u128());
    }
}

impl OrderId {
    /// A random version-4 UUID drawn from `rng`. Traders pass a thread-local or OS-seeded
    /// generator; tests pass a seeded one for reproducible ids.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let bytes: [u8; 16] = rng.random();
        OrderId(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// An id built from a raw 128-bit value (used by benchmarks and tests).
    pub const fn from_u128(value: u128) -> Self {
        OrderId(Uuid::from_u128(value))
    }

    /// The id as a 128-bit integer.
    pub const fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The underlying UUID.
    pub const fn uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrderId({})", self.0)
    }
}

impl FromStr for OrderId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(OrderId)
    }
}

/// Which side of the book an order is on: a bid buys, an ask sells.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Side {
    /// A buy order.
    Bid,
    /// A sell order.
    Ask,
}

impl Side {
    /// The other side.
    pub const fn opposite(self) -> Side {
        match self {
            Side::Bid => Side::Ask,
            Side::Ask => Side::Bid,
        }
    }
}

/// A limit order rests at its price when it cannot fill; a market order takes what liquidity
/// there is and never rests (the unfilled rest is dropped, immediate-or-cancel).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum OrderType {
    /// Trade at this price or better; rest the remainder in the book.
    Limit(Price),
    /// Trade at any price against resting orders; never rest.
    Market,
}

/// An order as a trader places it: the `Bid` and `Ask` commands of the workshop are the two
/// sides of this one type (see [`Order::bid`] and [`Order::ask`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Order {
    /// Unique id; the book ignores an id it has seen before.
    pub id: OrderId,
    /// The instrument.
    pub ticker: Ticker,
    /// Buy or sell.
    pub side: Side,
    /// Limit or market.
    pub kind: OrderType,
    /// Shares wanted; must be positive.
    pub quantity: Quantity,
    /// When the trader placed it.
    pub placed_at: Timestamp,
}

impl Order {
    /// A limit bid (buy) of `quantity` at `price` or lower.
    pub fn bid(
        id: OrderId,
        ticker: Ticker,
        price: Price,
        quantity: Quantity,
        at: Timestamp,
    ) -> Self {
        Order {
            id,
            ticker,
            side: Side::Bid,
            kind: OrderType::Limit(price),
            quantity,
            placed_at: at,
        }
    }

    /// A limit ask (sell) of `quantity` at `price` or higher.
    pub fn ask(
        id: OrderId,
        ticker: Ticker,
        price: Price,
        quantity: Quantity,
        at: Timestamp,
    ) -> Self {
        Order {
            id,
            ticker,
            side: Side::Ask,
            kind: OrderType::Limit(price),
            quantity,
            placed_at: at,
        }
    }

    /// A market order on `side`.
    pub fn market(
        id: OrderId,
        ticker: Ticker,
        side: Side,
        quantity: Quantity,
        at: Timestamp,
    ) -> Self {
        Order {
            id,
            ticker,
            side,
            kind: OrderType::Market,
            quantity,
            placed_at: at,
        }
    }

    /// The limit price, or `None` for a market order.
    pub fn limit_price(&self) -> Option<Price> {
        match self.kind {
            OrderType::Limit(p) => Some(p),
            OrderType::Market => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn random_ids_are_v4_reproducible_from_a_seed_and_round_trip() {
        let a = OrderId::random(&mut StdRng::seed_from_u64(1));
        let b = OrderId::random(&mut StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        assert_eq!(a.uuid().get_version_num(), 4);
        let text = a.to_string();
        assert_eq!(text.parse::<OrderId>().unwrap(), a);
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{text}\""));
    }

    #[test]
    fn many_random_ids_do_not_collide() {
        let mut rng = StdRng::seed_from_u64(3);
        let ids: std::collections::HashSet<_> =
            (0..100_000).map(|_| OrderId::random(&mut rng)).collect();
        assert_eq!(ids.len(), 100_000);
    }
}
