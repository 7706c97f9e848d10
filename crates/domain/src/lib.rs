//! The trading domain of the sample: pure, synchronous, and free of I/O.
//!
//! Everything a trading service needs to decide *what happens* lives here; *how it is delivered*
//! (actors, sharding, persistence, the network) lives in the runtime and the services. Every type
//! that crosses a process boundary implements `serde`'s `Serialize` and `Deserialize`.
//!
//! - [`ticker`]: the workshop's 28 symbols and their per-ticker price ranges.
//! - [`money`]: fixed-point prices ([`Price`], 1/10,000 of a currency unit), quantities and time.
//! - [`order`]: order ids (numbered in senders' streams), sides and the orders traders place.
//! - [`event`]: what an order book emits: orders placed, fills, matches, cancels.
//! - [`dedup`]: exact, bounded detection of orders a book has placed before.
//! - [`book`]: the matching engine (price-time priority), its snapshots and event replay.
//! - [`pricing`]: EMWA price and volume aggregation with a bounded history.
//! - [`protocol`]: the messages the services exchange and the pub-sub topic names.
//!
//! Time is an input, never read from a clock here: callers pass a [`Timestamp`] with each command,
//! which keeps the engine deterministic and replayable.

pub mod book;
pub mod dedup;
pub mod event;
pub mod money;
pub mod order;
pub mod pricing;
pub mod protocol;
pub mod ticker;

pub use book::{BookError, BookSnapshot, CancelOutcome, OrderBook, PlaceOutcome, RestingOrder};
pub use dedup::{MAX_OPEN_GAPS, Placed, PlacedOrders, StreamMarks};
pub use event::{BookEvent, Fill, Match, OrderCancelled};
pub use money::{Price, Quantity, Timestamp};
pub use order::{Order, OrderId, OrderStream, OrderType, Side};
pub use pricing::{Emwa, PriceAggregate, PriceUpdate, PricingConfig};
pub use ticker::{DEFAULT_TICKERS, PriceRange, Ticker, TickerError};
