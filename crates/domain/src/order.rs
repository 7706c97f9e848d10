//! Orders: their ids, sides and types, and the order a trader places with the book.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Price, Quantity, Timestamp};
use crate::ticker::Ticker;

/// A globally unique order id: a UUID that reads as a *stream* and a *sequence number*.
///
/// A desk numbers its orders for each book in a stream of its own ([`OrderStream`]), which is
/// what lets a book detect duplicates exactly with O(streams) state (see [`crate::dedup`]).
/// The stream is the id's top 66 bits and the sequence number its low 62 bits; a desk's ids are
/// version-8 (custom) UUIDs. Any 128-bit value is a valid id, so ids built with
/// [`OrderId::from_u128`] work too (stream 0, numbered by their value, for small values).
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

/// Bits of an id that hold its sequence number.
const SEQ_BITS: u32 = 62;
/// The largest sequence number.
pub const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

impl OrderId {
    /// The id numbered `seq` in `stream` (the inverse of [`OrderId::stream`] and
    /// [`OrderId::seq`]; `stream` keeps its low 66 bits and `seq` its low 62).
    pub const fn from_stream(stream: u128, seq: u64) -> Self {
        OrderId::from_u128((stream << SEQ_BITS) | (seq & MAX_SEQ) as u128)
    }

    /// An id built from a raw 128-bit value (used by benchmarks and tests).
    pub const fn from_u128(value: u128) -> Self {
        OrderId(Uuid::from_u128(value))
    }

    /// The id as a 128-bit integer.
    pub const fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The stream the id belongs to: its top 66 bits.
    #[inline]
    pub const fn stream(&self) -> u128 {
        self.0.as_u128() >> SEQ_BITS
    }

    /// The id's number within its stream: its low 62 bits.
    #[inline]
    pub const fn seq(&self) -> u64 {
        (self.0.as_u128() as u64) & MAX_SEQ
    }

    /// The underlying UUID.
    pub const fn uuid(&self) -> Uuid {
        self.0
    }
}

/// A sender's numbered order ids for one book: a random stream, numbered 0, 1, 2, ...
///
/// The ids are version-8 UUIDs: 60 random bits name the stream (so streams drawn
/// independently by many desks do not collide), the version and variant bits are fixed, and
/// the low 62 bits count. A desk draws a new stream per book each time it starts, and must
/// number orders in the order it first sends them, which keeps a book's gaps few.
#[derive(Debug, Clone)]
pub struct OrderStream {
    stream: u128,
    next: u64,
}

impl OrderStream {
    /// A new stream drawn from `rng`. Desks pass an OS-seeded generator; tests pass a seeded
    /// one for reproducible ids.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let bytes: [u8; 16] = rng.random();
        // A v8 UUID with the random bytes; its top 66 bits (version and variant included)
        // become the stream, its low 62 bits are replaced by the count.
        let uuid = uuid::Builder::from_custom_bytes(bytes).into_uuid();
        OrderStream {
            stream: uuid.as_u128() >> SEQ_BITS,
            next: 0,
        }
    }

    /// The next id of the stream.
    ///
    /// # Panics
    /// After 2^62 ids (at a million orders per second, in 146,000 years).
    pub fn next_id(&mut self) -> OrderId {
        assert!(self.next <= MAX_SEQ, "order stream exhausted");
        let id = OrderId::from_stream(self.stream, self.next);
        self.next += 1;
        id
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
    fn stream_ids_are_v8_numbered_from_zero_reproducible_and_round_trip() {
        let mut a = OrderStream::random(&mut StdRng::seed_from_u64(1));
        let mut b = OrderStream::random(&mut StdRng::seed_from_u64(1));
        let first = a.next_id();
        assert_eq!(first, b.next_id());
        assert_eq!(first.uuid().get_version_num(), 8);
        assert_eq!(first.uuid().get_variant(), uuid::Variant::RFC4122);
        assert_eq!(first.seq(), 0);
        let second = a.next_id();
        assert_eq!((second.stream(), second.seq()), (first.stream(), 1));
        assert_eq!(OrderId::from_stream(first.stream(), 1), second);
        let text = first.to_string();
        assert_eq!(text.parse::<OrderId>().unwrap(), first);
        assert_eq!(
            serde_json::to_string(&first).unwrap(),
            format!("\"{text}\"")
        );
    }

    #[test]
    fn many_streams_do_not_collide() {
        let mut rng = StdRng::seed_from_u64(3);
        let streams: std::collections::HashSet<_> = (0..100_000)
            .map(|_| OrderStream::random(&mut rng).next_id().stream())
            .collect();
        assert_eq!(streams.len(), 100_000);
    }

    #[test]
    fn small_raw_ids_are_stream_zero_numbered_by_value() {
        let id = OrderId::from_u128(42);
        assert_eq!((id.stream(), id.seq()), (0, 42));
    }
}
