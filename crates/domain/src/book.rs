//! The matching engine: one limit order book per ticker with price-time priority.
//!
//! # Rules
//! - An incoming bid matches resting asks priced at or below its limit (any price for a market
//!   bid), best price first and, within a price, oldest first (FIFO); asks mirror this.
//! - Trades execute at the resting order's price. A partial fill leaves the rest of the resting
//!   order in place, keeping its time priority; the rest of an incoming limit order rests at the
//!   back of its price level; the rest of a market order is dropped (immediate-or-cancel).
//! - An order id placed before is ignored and reported as [`PlaceOutcome::Duplicate`], so
//!   senders can retry until confirmed (at-least-once) without trading twice, however late the
//!   re-send. Duplicate detection is exact and its state is bounded by the senders' streams, not
//!   the orders ([`crate::dedup`]).
//!
//! # Data structures and cost
//! Each side is a `BTreeMap` from price to a price level, and each level is an intrusive doubly
//! linked FIFO list of orders stored in a slab (`Vec` plus free list), so:
//! placing costs O(log levels) plus O(1) per trade, cancelling by id costs O(1) to unlink plus
//! O(log levels) when the level empties, and no operation walks the book's depth. A hash map
//! from resting order id to slab slot serves cancel-by-id.
//!
//! # Event sourcing
//! [`OrderBook::place`] and [`OrderBook::cancel`] emit [`BookEvent`]s; [`OrderBook::apply`]
//! replays them onto another book without re-running the matching logic, and reaches the same
//! state (same resting orders, same priorities, same placed ids). A [`BookSnapshot`] holds
//! every resting order with its remaining quantity and arrival sequence, and the placed ids'
//! stream marks, and restores to a book that behaves identically.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::dedup::{Placed, PlacedOrders, StreamMarks};
use crate::event::{BookEvent, Fill, Match, OrderCancelled};
use crate::money::{Price, Quantity, Timestamp};
use crate::order::{Order, OrderId, OrderType, Side};
use crate::ticker::Ticker;

/// Slab index meaning "none" in the intrusive lists.
const NIL: u32 = u32::MAX;

/// Why the book refused an order, a cancel, an event or a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// The order or event is for another ticker.
    #[error("order book for {book} received an order or event for {got}")]
    WrongTicker {
        /// The book's ticker.
        book: Ticker,
        /// The ticker that arrived.
        got: Ticker,
    },
    /// Quantity zero.
    #[error("order {0} has a quantity of zero")]
    ZeroQuantity(OrderId),
    /// A limit price of zero or less.
    #[error("order {0} has a limit price of zero or less")]
    NonPositivePrice(OrderId),
    /// The book holds `u32::MAX - 1` resting orders already.
    #[error("order book is full")]
    Full,
    /// The order is below its stream's floor: the book can no longer tell whether it was
    /// placed, so it refuses it rather than risk trading twice (see [`crate::dedup`]).
    #[error("order {0} is older than the sequence numbers its book still tracks for its sender")]
    Unknowable(OrderId),
    /// Replayed events or a snapshot that no book could have produced.
    #[error("inconsistent book history: {0}")]
    Inconsistent(String),
}

/// What happened to a placed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlaceOutcome {
    /// The order was new: `filled` shares traded now and `resting` shares rest in the book.
    Accepted {
        /// Shares traded immediately.
        filled: Quantity,
        /// Shares left resting (always 0 for market orders).
        resting: Quantity,
    },
    /// The id was seen before; nothing changed and no event was emitted.
    Duplicate,
}

/// What happened to a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelOutcome {
    /// The order rested and is now removed; `remaining` shares were withdrawn.
    Cancelled {
        /// Shares withdrawn.
        remaining: Quantity,
    },
    /// No resting order has that id (never seen, already filled, or already cancelled).
    NotResting,
}

/// A resting order as it appears in snapshots and queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestingOrder {
    /// Order id.
    pub id: OrderId,
    /// Bid or ask.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Quantity originally ordered.
    pub quantity: Quantity,
    /// Quantity still open.
    pub remaining: Quantity,
    /// Arrival sequence within this book: time priority inside a price level.
    pub seq: u64,
    /// When the trader placed it.
    pub placed_at: Timestamp,
}

/// The complete state of a book: restoring it gives a book that matches exactly as the
/// original would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshot {
    /// The book's ticker.
    pub ticker: Ticker,
    /// The next arrival sequence number to assign.
    pub next_seq: u64,
    /// Trades made so far: the trade id of the last match (ids run 1, 2, 3, ...).
    pub trades: u64,
    /// Resting bids, best price first, oldest first within a price.
    pub bids: Vec<RestingOrder>,
    /// Resting asks, best price first, oldest first within a price.
    pub asks: Vec<RestingOrder>,
    /// What was placed, per sender stream (see [`crate::dedup`]). Missing in snapshots written
    /// before exact deduplication; such a snapshot restores with its resting ids as placed.
    #[serde(default)]
    pub placed: Vec<StreamMarks>,
}

#[derive(Debug, Clone)]
struct Node {
    id: OrderId,
    side: Side,
    price: Price,
    quantity: Quantity,
    remaining: Quantity,
    seq: u64,
    placed_at: Timestamp,
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    head: u32,
    tail: u32,
    /// Open quantity at this level.
    total: Quantity,
    /// Orders at this level.
    count: u32,
}

/// One side of the book. Keys are arranged so that the best level is always the first:
/// asks by price, bids by negated price.
#[derive(Debug, Clone)]
struct Ladder {
    side: Side,
    levels: BTreeMap<i64, Level>,
}

impl Ladder {
    fn new(side: Side) -> Self {
        Ladder {
            side,
            levels: BTreeMap::new(),
        }
    }

    #[inline]
    fn key(&self, price: Price) -> i64 {
        match self.side {
            Side::Ask => price.ticks(),
            Side::Bid => -price.ticks(),
        }
    }

    #[inline]
    fn price(&self, key: i64) -> Price {
        price_of(self.side, key)
    }

    fn best(&self) -> Option<Price> {
        self.levels.keys().next().map(|&k| self.price(k))
    }
}

/// The price of a ladder key on `side` (the inverse of [`Ladder::key`]).
#[inline]
fn price_of(side: Side, key: i64) -> Price {
    match side {
        Side::Ask => Price::from_ticks(key),
        Side::Bid => Price::from_ticks(-key),
    }
}

/// Order storage: a slab of nodes with a free list.
#[derive(Debug, Clone, Default)]
struct Slab {
    nodes: Vec<Node>,
    free: Vec<u32>,
}

impl Slab {
    fn alloc(&mut self, node: Node) -> Result<u32, BookError> {
        if let Some(slot) = self.free.pop() {
            self.nodes[slot as usize] = node;
            Ok(slot)
        } else if self.nodes.len() < NIL as usize {
            self.nodes.push(node);
            Ok((self.nodes.len() - 1) as u32)
        } else {
            Err(BookError::Full)
        }
    }
}

/// Resting order ids by slab slot.
type Resting = HashMap<OrderId, u32, foldhash::fast::RandomState>;

/// A limit order book for one ticker. See the [module docs](self) for the rules.
#[derive(Debug, Clone)]
pub struct OrderBook {
    ticker: Ticker,
    bids: Ladder,
    asks: Ladder,
    slab: Slab,
    resting: Resting,
    placed: PlacedOrders,
    next_seq: u64,
    /// Trade id of the last match.
    trades: u64,
}

impl OrderBook {
    /// An empty book.
    pub fn new(ticker: Ticker) -> Self {
        OrderBook {
            ticker,
            bids: Ladder::new(Side::Bid),
            asks: Ladder::new(Side::Ask),
            slab: Slab::default(),
            resting: Resting::default(),
            placed: PlacedOrders::default(),
            next_seq: 0,
            trades: 0,
        }
    }

    /// The book's ticker.
    pub fn ticker(&self) -> Ticker {
        self.ticker
    }

    /// Places an order at time `at` (the time its trades carry), appending the resulting
    /// events to `out` (which the caller may reuse between calls to avoid allocating).
    ///
    /// A duplicate id returns [`PlaceOutcome::Duplicate`] and emits nothing; an invalid order
    /// returns an error and changes nothing.
    pub fn place(
        &mut self,
        order: Order,
        at: Timestamp,
        out: &mut Vec<BookEvent>,
    ) -> Result<PlaceOutcome, BookError> {
        if let Some(duplicate) = self.admit(&order)? {
            return Ok(duplicate);
        }
        self.placed.record(order.id);
        let seq = self.next_seq;
        self.next_seq += 1;
        out.push(BookEvent::OrderPlaced(order));
        let limit = order.limit_price();
        let opposite = match order.side {
            Side::Bid => &mut self.asks,
            Side::Ask => &mut self.bids,
        };
        let remaining = cross(
            opposite,
            &mut self.slab,
            &mut self.resting,
            &mut self.trades,
            &order,
            at,
            out,
        );
        let filled = order.quantity - remaining;
        match limit {
            Some(price) if remaining > 0 => {
                let own = match order.side {
                    Side::Bid => &mut self.bids,
                    Side::Ask => &mut self.asks,
                };
                let slot = rest(own, &mut self.slab, &order, price, remaining, seq)?;
                self.resting.insert(order.id, slot);
                Ok(PlaceOutcome::Accepted {
                    filled,
                    resting: remaining,
                })
            }
            _ => Ok(PlaceOutcome::Accepted { filled, resting: 0 }),
        }
    }

    /// Cancels a resting order by id, emitting [`BookEvent::OrderCancelled`] when it rested.
    pub fn cancel(
        &mut self,
        order_id: OrderId,
        at: Timestamp,
        out: &mut Vec<BookEvent>,
    ) -> CancelOutcome {
        match self.remove_resting(order_id) {
            Some(remaining) => {
                out.push(BookEvent::OrderCancelled(OrderCancelled {
                    ticker: self.ticker,
                    order_id,
                    remaining,
                    at,
                }));
                CancelOutcome::Cancelled { remaining }
            }
            None => CancelOutcome::NotResting,
        }
    }

    /// Computes, without changing the book, the events [`OrderBook::place`] would emit for
    /// `order` at `at`, and its outcome.
    ///
    /// This is the command side of an event-sourced order book: an entity decides, persists
    /// the events, and only then [applies](OrderBook::apply) them, so its state never runs
    /// ahead of its journal. Walks only the levels and orders the order trades with.
    pub fn decide_place(
        &self,
        order: &Order,
        at: Timestamp,
        out: &mut Vec<BookEvent>,
    ) -> Result<PlaceOutcome, BookError> {
        if let Some(duplicate) = self.admit(order)? {
            return Ok(duplicate);
        }
        out.push(BookEvent::OrderPlaced(*order));
        let limit = order.limit_price();
        let opposite = match order.side {
            Side::Bid => &self.asks,
            Side::Ask => &self.bids,
        };
        let bound = limit.map_or(i64::MAX, |p| opposite.key(p));
        let mut remaining = order.quantity;
        let mut trade_id = self.trades;
        'levels: for (&key, level) in &opposite.levels {
            if key > bound {
                break;
            }
            let price = opposite.price(key);
            let mut slot = level.head;
            while slot != NIL {
                if remaining == 0 {
                    break 'levels;
                }
                let node = &self.slab.nodes[slot as usize];
                let traded = remaining.min(node.remaining);
                remaining -= traded;
                trade_id += 1;
                push_trade(
                    out,
                    trade_id,
                    order,
                    node.id,
                    opposite.side,
                    node.remaining - traded,
                    price,
                    traded,
                    remaining,
                    at,
                );
                slot = node.next;
            }
        }
        let filled = order.quantity - remaining;
        let resting = if limit.is_some() { remaining } else { 0 };
        Ok(PlaceOutcome::Accepted { filled, resting })
    }

    /// Computes, without changing the book, the event [`OrderBook::cancel`] would emit.
    pub fn decide_cancel(
        &self,
        order_id: OrderId,
        at: Timestamp,
        out: &mut Vec<BookEvent>,
    ) -> CancelOutcome {
        match self.resting(order_id) {
            Some(o) => {
                out.push(BookEvent::OrderCancelled(OrderCancelled {
                    ticker: self.ticker,
                    order_id,
                    remaining: o.remaining,
                    at,
                }));
                CancelOutcome::Cancelled {
                    remaining: o.remaining,
                }
            }
            None => CancelOutcome::NotResting,
        }
    }

    /// Applies an event this or another book with the same history emitted, without running
    /// the matching logic: the way a persistent order book recovers from its journal.
    ///
    /// A `Match` only advances the trade id (the two `Fill`s before it carry the change to the
    /// orders); a `Fill` of an order that does not rest (a market order) changes nothing.
    pub fn apply(&mut self, event: &BookEvent) -> Result<(), BookError> {
        if event.ticker() != self.ticker {
            return Err(BookError::WrongTicker {
                book: self.ticker,
                got: event.ticker(),
            });
        }
        match event {
            BookEvent::OrderPlaced(order) => {
                if self.admit(order)?.is_some() {
                    return Err(BookError::Inconsistent(format!(
                        "order {} placed twice",
                        order.id
                    )));
                }
                self.placed.record(order.id);
                let seq = self.next_seq;
                self.next_seq += 1;
                if let OrderType::Limit(price) = order.kind {
                    let own = match order.side {
                        Side::Bid => &mut self.bids,
                        Side::Ask => &mut self.asks,
                    };
                    let slot = rest(own, &mut self.slab, order, price, order.quantity, seq)?;
                    self.resting.insert(order.id, slot);
                }
            }
            BookEvent::Fill(fill) => {
                let Some(&slot) = self.resting.get(&fill.order_id) else {
                    return Ok(());
                };
                let node = &mut self.slab.nodes[slot as usize];
                if fill.quantity > node.remaining {
                    return Err(BookError::Inconsistent(format!(
                        "fill of {} for order {} with only {} open",
                        fill.quantity, fill.order_id, node.remaining
                    )));
                }
                node.remaining -= fill.quantity;
                let (remaining, price) = (node.remaining, node.price);
                let ladder = match fill.side {
                    Side::Bid => &mut self.bids,
                    Side::Ask => &mut self.asks,
                };
                let key = ladder.key(price);
                if let Some(level) = ladder.levels.get_mut(&key) {
                    level.total -= fill.quantity;
                }
                if remaining == 0 {
                    self.remove_resting(fill.order_id);
                }
            }
            BookEvent::Match(m) => {
                if m.trade_id != self.trades + 1 {
                    return Err(BookError::Inconsistent(format!(
                        "match with trade id {} after trade {}",
                        m.trade_id, self.trades
                    )));
                }
                self.trades = m.trade_id;
            }
            BookEvent::OrderCancelled(c) => {
                if self.remove_resting(c.order_id).is_none() {
                    return Err(BookError::Inconsistent(format!(
                        "cancel of order {} that does not rest",
                        c.order_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The trade id of the last match (0 before the first). Trade ids run 1, 2, 3, ... per
    /// book, so a consumer of matches can tell whether it missed one.
    pub fn trades(&self) -> u64 {
        self.trades
    }

    /// The highest resting bid price.
    pub fn best_bid(&self) -> Option<Price> {
        self.bids.best()
    }

    /// The lowest resting ask price.
    pub fn best_ask(&self) -> Option<Price> {
        self.asks.best()
    }

    /// Number of resting orders.
    pub fn len(&self) -> usize {
        self.slab.nodes.len() - self.slab.free.len()
    }

    /// True when nothing rests.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when an order with this id was placed: placing it again would be reported as a
    /// duplicate.
    pub fn knows(&self, id: OrderId) -> bool {
        self.placed.placed(id) == Placed::Yes
    }

    /// The placed order ids, by sender stream.
    pub fn placed(&self) -> &PlacedOrders {
        &self.placed
    }

    /// The resting order with this id, if any.
    pub fn resting(&self, id: OrderId) -> Option<RestingOrder> {
        let slot = *self.resting.get(&id)?;
        Some(resting_order(&self.slab.nodes[slot as usize]))
    }

    /// Aggregated depth of one side, best price first: `(price, open quantity, orders)`.
    pub fn depth(&self, side: Side) -> Vec<(Price, Quantity, u32)> {
        let ladder = self.ladder(side);
        ladder
            .levels
            .iter()
            .map(|(&k, l)| (ladder.price(k), l.total, l.count))
            .collect()
    }

    /// Every resting order of one side, best price first and oldest first within a price.
    pub fn orders(&self, side: Side) -> Vec<RestingOrder> {
        let ladder = self.ladder(side);
        let mut all = Vec::with_capacity(self.len());
        for level in ladder.levels.values() {
            let mut slot = level.head;
            while slot != NIL {
                let node = &self.slab.nodes[slot as usize];
                all.push(resting_order(node));
                slot = node.next;
            }
        }
        all
    }

    /// The complete state of the book.
    pub fn snapshot(&self) -> BookSnapshot {
        BookSnapshot {
            ticker: self.ticker,
            next_seq: self.next_seq,
            trades: self.trades,
            bids: self.orders(Side::Bid),
            asks: self.orders(Side::Ask),
            placed: self.placed.marks(),
        }
    }

    /// Rebuilds a book from a snapshot, checking that it is one a book could have produced
    /// (orders on the right side of their ticker, positive quantities, no repeated id, time
    /// priority consistent with the arrival sequence, a book that is not crossed, resting ids
    /// among the placed ones).
    pub fn from_snapshot(snapshot: &BookSnapshot) -> Result<Self, BookError> {
        let mut book = OrderBook::new(snapshot.ticker);
        book.placed =
            PlacedOrders::from_marks(&snapshot.placed).map_err(BookError::Inconsistent)?;
        // A snapshot from before exact deduplication lists no streams: its resting ids are
        // the placed ones it knows.
        let legacy = snapshot.placed.is_empty();
        book.next_seq = snapshot.next_seq;
        book.trades = snapshot.trades;
        for (side, orders) in [(Side::Bid, &snapshot.bids), (Side::Ask, &snapshot.asks)] {
            let mut previous: Option<&RestingOrder> = None;
            for o in orders.iter() {
                let bad = |why: &str| {
                    Err(BookError::Inconsistent(format!(
                        "snapshot order {}: {why}",
                        o.id
                    )))
                };
                if o.side != side {
                    return bad("listed on the wrong side");
                }
                if o.remaining == 0 || o.remaining > o.quantity {
                    return bad("remaining quantity out of range");
                }
                if o.price.ticks() <= 0 {
                    return bad("non-positive price");
                }
                if o.seq >= snapshot.next_seq {
                    return bad("arrival sequence not below next_seq");
                }
                if book.resting.contains_key(&o.id) {
                    return bad("id appears twice");
                }
                match (book.placed.placed(o.id), legacy) {
                    (Placed::Yes, _) => {}
                    (Placed::No, true) => book.placed.record(o.id),
                    _ => return bad("rests but is not among the placed ids"),
                }
                if let Some(p) = previous {
                    let better_or_same = match side {
                        Side::Bid => p.price >= o.price,
                        Side::Ask => p.price <= o.price,
                    };
                    if !better_or_same || (p.price == o.price && p.seq >= o.seq) {
                        return bad("out of price-time order");
                    }
                }
                previous = Some(o);
                let own = match side {
                    Side::Bid => &mut book.bids,
                    Side::Ask => &mut book.asks,
                };
                let order = Order {
                    id: o.id,
                    ticker: snapshot.ticker,
                    side,
                    kind: OrderType::Limit(o.price),
                    quantity: o.quantity,
                    placed_at: o.placed_at,
                };
                let slot = rest(own, &mut book.slab, &order, o.price, o.remaining, o.seq)?;
                book.resting.insert(o.id, slot);
            }
        }
        if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask())
            && bid >= ask
        {
            return Err(BookError::Inconsistent(format!(
                "snapshot is crossed: bid {bid} >= ask {ask}"
            )));
        }
        Ok(book)
    }

    /// Checks an order before it is placed: `Some(Duplicate)` when it was placed before, an
    /// error when it is invalid or its id cannot be judged, `None` when it is new.
    #[inline]
    fn admit(&self, order: &Order) -> Result<Option<PlaceOutcome>, BookError> {
        self.validate(order)?;
        match self.placed.placed(order.id) {
            Placed::No => Ok(None),
            Placed::Yes => Ok(Some(PlaceOutcome::Duplicate)),
            Placed::Unknowable => Err(BookError::Unknowable(order.id)),
        }
    }

    fn validate(&self, order: &Order) -> Result<(), BookError> {
        if order.ticker != self.ticker {
            return Err(BookError::WrongTicker {
                book: self.ticker,
                got: order.ticker,
            });
        }
        if order.quantity == 0 {
            return Err(BookError::ZeroQuantity(order.id));
        }
        if let OrderType::Limit(p) = order.kind
            && p.ticks() <= 0
        {
            return Err(BookError::NonPositivePrice(order.id));
        }
        Ok(())
    }

    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
        }
    }

    /// Unlinks a resting order and returns its open quantity.
    fn remove_resting(&mut self, id: OrderId) -> Option<Quantity> {
        let slot = self.resting.remove(&id)?;
        let node = self.slab.nodes[slot as usize].clone();
        let ladder = match node.side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        };
        let key = ladder.key(node.price);
        let level = ladder.levels.get_mut(&key)?;
        if node.prev == NIL {
            level.head = node.next;
        } else {
            self.slab.nodes[node.prev as usize].next = node.next;
        }
        if node.next == NIL {
            level.tail = node.prev;
        } else {
            self.slab.nodes[node.next as usize].prev = node.prev;
        }
        level.total -= node.remaining;
        level.count -= 1;
        if level.count == 0 {
            ladder.levels.remove(&key);
        }
        self.slab.free.push(slot);
        Some(node.remaining)
    }
}

fn resting_order(node: &Node) -> RestingOrder {
    RestingOrder {
        id: node.id,
        side: node.side,
        price: node.price,
        quantity: node.quantity,
        remaining: node.remaining,
        seq: node.seq,
        placed_at: node.placed_at,
    }
}

/// Appends an order at the back of its price level and returns its slot.
fn rest(
    ladder: &mut Ladder,
    slab: &mut Slab,
    order: &Order,
    price: Price,
    remaining: Quantity,
    seq: u64,
) -> Result<u32, BookError> {
    let key = ladder.key(price);
    let level = ladder.levels.entry(key).or_insert(Level {
        head: NIL,
        tail: NIL,
        total: 0,
        count: 0,
    });
    let slot = slab.alloc(Node {
        id: order.id,
        side: order.side,
        price,
        quantity: order.quantity,
        remaining,
        seq,
        placed_at: order.placed_at,
        prev: level.tail,
        next: NIL,
    })?;
    if level.tail == NIL {
        level.head = slot;
    } else {
        slab.nodes[level.tail as usize].next = slot;
    }
    level.tail = slot;
    level.total += remaining;
    level.count += 1;
    Ok(slot)
}

/// Emits the three events of one trade: the resting order's fill, the incoming order's fill,
/// and the match.
#[allow(clippy::too_many_arguments)]
#[inline]
fn push_trade(
    out: &mut Vec<BookEvent>,
    trade_id: u64,
    incoming: &Order,
    resting_id: OrderId,
    resting_side: Side,
    resting_left: Quantity,
    price: Price,
    traded: Quantity,
    incoming_left: Quantity,
    at: Timestamp,
) {
    let (buy, sell) = match incoming.side {
        Side::Bid => (incoming.id, resting_id),
        Side::Ask => (resting_id, incoming.id),
    };
    out.push(BookEvent::Fill(Fill {
        ticker: incoming.ticker,
        order_id: resting_id,
        side: resting_side,
        price,
        quantity: traded,
        remaining: resting_left,
        partial: resting_left > 0,
        at,
    }));
    out.push(BookEvent::Fill(Fill {
        ticker: incoming.ticker,
        order_id: incoming.id,
        side: incoming.side,
        price,
        quantity: traded,
        remaining: incoming_left,
        partial: incoming_left > 0,
        at,
    }));
    out.push(BookEvent::Match(Match {
        ticker: incoming.ticker,
        trade_id,
        buy_order_id: buy,
        sell_order_id: sell,
        price,
        quantity: traded,
        aggressor: incoming.side,
        at,
    }));
}

/// Matches an incoming order against the opposite ladder and returns its unfilled quantity.
#[inline]
fn cross(
    opposite: &mut Ladder,
    slab: &mut Slab,
    resting: &mut Resting,
    trades: &mut u64,
    order: &Order,
    at: Timestamp,
    out: &mut Vec<BookEvent>,
) -> Quantity {
    let mut remaining = order.quantity;
    // The incoming order trades with a level while the level's key is at most this bound.
    let bound = order.limit_price().map_or(i64::MAX, |p| opposite.key(p));
    let opposite_side = opposite.side;
    while remaining > 0 {
        let Some(mut entry) = opposite.levels.first_entry() else {
            break;
        };
        let key = *entry.key();
        if key > bound {
            break;
        }
        let price = price_of(opposite_side, key);
        let level = entry.get_mut();
        while remaining > 0 && level.head != NIL {
            let slot = level.head;
            let node = &mut slab.nodes[slot as usize];
            let traded = remaining.min(node.remaining);
            node.remaining -= traded;
            remaining -= traded;
            level.total -= traded;
            *trades += 1;
            push_trade(
                out,
                *trades,
                order,
                node.id,
                opposite_side,
                node.remaining,
                price,
                traded,
                remaining,
                at,
            );
            if node.remaining == 0 {
                let (id, next) = (node.id, node.next);
                level.head = next;
                if next == NIL {
                    level.tail = NIL;
                } else {
                    slab.nodes[next as usize].prev = NIL;
                }
                level.count -= 1;
                slab.free.push(slot);
                resting.remove(&id);
            }
        }
        if level.head == NIL {
            entry.remove();
        }
    }
    remaining
}
