//! The trading desk of a traders node: the one actor that sends the node's orders to the
//! order books, receives their confirmations (it is registered on the transport as
//! [`DESK`], the reply address of every order), re-sends what stays unconfirmed, and
//! counts fills of its orders from the `{ticker}-Fill` topics.
//!
//! One desk per node, not one registered actor per trader: only a handful of actors are
//! addressable across nodes, whatever the number of traders.
//!
//! The desk batches, the way group commit does: it keeps at most one batch per book in flight,
//! and the orders for that book that arrive meanwhile go together, as one `Batch`, as soon as
//! the book answers (or after [`FLUSH_INTERVAL`] when nothing is in flight, or once
//! [`MAX_BATCH`] of them wait). The book stores a batch in one journal write. At the workshop's
//! pace that is one order per message and no waiting; under load a batch holds whatever came
//! during one round trip, so a book pays one journal round trip per batch, not per order, and
//! batches grow with the load instead of queueing up in the book's mailbox.
//!
//! The desk also keeps its books tidy, as a real desk withdraws stale quotes: it tracks which
//! of its orders still rest (confirmed with shares resting, not yet filled to zero on the
//! `{ticker}-Fill` topic) and, when more than [`DeskArgs::max_resting`] rest in one book,
//! cancels the oldest in the next batch. Without that, random prices leave a steady share
//! of all orders resting forever, and a book (and its snapshots) grows with every order.
//!
//! Each batch sent is where a trace starts: with trace export on, an `orderBook.place` root
//! span (sampled by `OTEL_TRACES_SAMPLER`) whose context goes with the batch to its book; the
//! book's handling, its journal write, and pricing's work on the resulting matches are its
//! descendants. With export off nothing is created (see `telemetry::MessageSpan`).
//!
//! The desk numbers the orders: per book, it draws a random [`OrderStream`] when it starts and
//! gives each new order the stream's next id, in the order it first sends them. Re-sends keep
//! their id. That is what lets a book recognise a re-send exactly, however late it comes, with
//! state per stream rather than per order (`domain::dedup`). An order the desk refuses (too
//! many unconfirmed) takes no number, so it leaves no gap.
//!
//! With a [`Blotter`] (`BLOTTER_DIR`), every order's first confirmation is also handed to it,
//! one line per order, without waiting for the disk (see [`crate::blotter`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use cluster_sharding::ShardRegion;
use domain::protocol::{ORDER_BOOK, OrderBookCommand, OrderBookReply};
use domain::{
    CancelOutcome, Fill, Order, OrderId, OrderStream, PlaceOutcome, Price, Quantity, Side, Ticker,
    Timestamp,
};
use hdrhistogram::Histogram;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use runtime::RemoteRef;
use serde::{Deserialize, Serialize};
use telemetry::MessageSpan;
use tracing::{debug, warn};

use crate::blotter::{Blotter, BlotterLine};
use crate::pending::PendingOrders;
use crate::resting::RestingOrders;

/// How long an order may wait for others of its ticker before it is sent.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(5);
/// Most orders in one `Batch`; a full one goes even while another is in flight.
pub const MAX_BATCH: usize = 500;

/// How long a batch counts as in flight without an answer (the book may be gone; its orders
/// are re-sent on their own timeout anyway).
pub const IN_FLIGHT_TIMEOUT: Duration = Duration::from_millis(500);

/// Confirmed order ids kept for [`DeskMsg::Confirmed`].
const CONFIRMED_KEPT: usize = 100_000;

/// Registered name of the desk on every traders node.
pub const DESK: &str = "traders-desk";

/// What an order book receives from traders.
pub type OrderBookMsg = OrderBookCommand<RemoteRef<OrderBookReply>>;

/// A trader's new limit order, before the desk numbers it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewOrder {
    /// The instrument.
    pub ticker: Ticker,
    /// Buy or sell.
    pub side: Side,
    /// The limit price.
    pub price: Price,
    /// Shares wanted.
    pub quantity: Quantity,
    /// When the trader placed it.
    pub placed_at: Timestamp,
}

impl NewOrder {
    /// The order with its id.
    fn numbered(self, id: OrderId) -> Order {
        let NewOrder {
            ticker,
            side,
            price,
            quantity,
            placed_at,
        } = self;
        match side {
            Side::Bid => Order::bid(id, ticker, price, quantity, placed_at),
            Side::Ask => Order::ask(id, ticker, price, quantity, placed_at),
        }
    }
}

/// Messages of the desk.
pub enum DeskMsg {
    /// A trader's new order: number it, send it and track it until confirmed.
    Submit(NewOrder),
    /// An order book's answer.
    Reply(OrderBookReply),
    /// The fills of one journal write, published by an order book.
    Fills(Vec<Fill>),
    /// Time to re-send what is overdue.
    Retry,
    /// Time to send what waits in the outbox.
    Flush,
    /// The ids of the most recently confirmed orders (up to the last 100,000), oldest first.
    Confirmed(RpcReplyPort<Vec<OrderId>>),
    /// Counters and latency so far; `reset_latency` starts a new latency window.
    Stats {
        /// Start a new latency window after answering.
        reset_latency: bool,
        /// Where the answer goes.
        reply: RpcReplyPort<DeskStats>,
    },
}

/// The desk's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeskStats {
    /// Orders the traders placed.
    pub placed: u64,
    /// Orders confirmed by their book (first confirmation only).
    pub confirmed: u64,
    /// Confirmations of re-sent orders the book already had.
    pub duplicates: u64,
    /// Orders a book refused.
    pub rejected: u64,
    /// Re-sends of unconfirmed orders.
    pub resent: u64,
    /// Orders not placed because too many were unconfirmed.
    pub refused: u64,
    /// Orders waiting for confirmation now.
    pub pending: u64,
    /// Resting orders this desk cancelled (the book withdrew them).
    pub cancelled: u64,
    /// This desk's orders resting in the books now, as far as it knows.
    pub resting: u64,
    /// Fills of this desk's orders seen on pub-sub.
    pub fills: u64,
    /// Order-to-confirmation latency in the current window, microseconds.
    pub latency_p50_us: u64,
    /// 99th percentile of the same.
    pub latency_p99_us: u64,
    /// Confirmations in the current latency window.
    pub latency_samples: u64,
}

/// What the desk starts with.
pub struct DeskArgs {
    /// The order books (a proxy region on a traders node).
    pub books: ShardRegion<OrderBookMsg>,
    /// This desk's address, given to the books as the reply address.
    pub reply_to: RemoteRef<OrderBookReply>,
    /// Re-send an order unconfirmed for this long.
    pub retry_after: Duration,
    /// Most unconfirmed orders at a time.
    pub max_pending: usize,
    /// Most of this desk's orders resting in one book; beyond it the oldest are cancelled.
    pub max_resting: usize,
    /// Where confirmed orders are written, if anywhere (`BLOTTER_DIR`).
    pub blotter: Option<Blotter>,
}

/// Ids of recent orders, to recognise this desk's fills (bounded).
struct Recent {
    ids: HashSet<OrderId>,
    order: VecDeque<OrderId>,
    capacity: usize,
}

impl Recent {
    fn insert(&mut self, id: OrderId) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > self.capacity
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}

/// What goes to one book at the next flush.
#[derive(Default)]
struct Outgoing {
    cancels: Vec<OrderId>,
    orders: Vec<Order>,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.cancels.is_empty() && self.orders.is_empty()
    }
}

/// The desk actor.
pub struct Desk;

/// The desk's state.
pub struct DeskState {
    args: DeskArgs,
    /// This node (`cluster.node` of the spans started here).
    node: std::sync::Arc<str>,
    pending: PendingOrders,
    /// This desk's order stream per book, drawn when it first sends there.
    streams: HashMap<Ticker, OrderStream>,
    recent: Recent,
    outbox: HashMap<Ticker, Outgoing>,
    /// When the batch in flight to each book was sent.
    in_flight: HashMap<Ticker, Instant>,
    resting: RestingOrders,
    confirmed: VecDeque<OrderId>,
    stats: DeskStats,
    latency: Histogram<u64>,
}

impl DeskState {
    /// Queues an order for its book; a full batch goes at once.
    fn queue(&mut self, order: Order) {
        let out = self.outbox.entry(order.ticker).or_default();
        out.orders.push(order);
        if out.orders.len() >= MAX_BATCH {
            self.send_now(order.ticker);
        }
    }

    /// Sends what waits for every book that has no batch in flight.
    fn flush(&mut self) {
        let now = Instant::now();
        let ready: Vec<Ticker> = self
            .outbox
            .iter()
            .filter(|(t, out)| {
                !out.is_empty()
                    && self
                        .in_flight
                        .get(t)
                        .is_none_or(|sent| now.duration_since(*sent) >= IN_FLIGHT_TIMEOUT)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in ready {
            self.send_now(t);
        }
    }

    /// A book answered: its next batch may go, and goes at once if one waits.
    fn answered(&mut self, ticker: Ticker) {
        if self.in_flight.remove(&ticker).is_some() {
            self.send_now(ticker);
        }
    }

    /// Sends what waits for `ticker`'s book, as one message.
    fn send_now(&mut self, ticker: Ticker) {
        let Some(mut out) = self.outbox.get_mut(&ticker).map(std::mem::take) else {
            return;
        };
        if out.is_empty() {
            return;
        }
        self.in_flight.insert(ticker, Instant::now());
        let reply_to = self.args.reply_to.clone();
        let cmd = if out.orders.len() == 1 && out.cancels.is_empty() {
            OrderBookCommand::Place {
                order: out.orders.pop().expect("one order"),
                reply_to,
            }
        } else {
            OrderBookCommand::Batch {
                ticker,
                cancels: out.cancels,
                orders: out.orders,
                reply_to,
            }
        };
        let mut root = MessageSpan::start("orderBook.place", &self.node);
        if root.is_recording() {
            root = root.with_destination(&format!("{ORDER_BOOK}/{ticker}"));
        }
        let _entered = root.span().enter();
        if let Err(e) = self
            .args
            .books
            .tell_traced(ticker.to_string(), cmd, root.traceparent())
        {
            // Orders stay pending and go again after the retry timeout; a lost cancel
            // leaves an order resting a little longer.
            debug!(error = %e, "orders not sent now");
        }
    }

    /// Takes one answer of a book.
    fn settle(&mut self, reply: OrderBookReply) {
        match reply {
            OrderBookReply::Confirmed {
                ticker,
                order_id,
                outcome,
            } => match self.pending.settled(order_id, Instant::now()) {
                Some((order, waited)) => {
                    self.stats.confirmed += 1;
                    if let Some(blotter) = &self.args.blotter {
                        blotter.record(BlotterLine::now(order_id, ticker, order.side));
                    }
                    match outcome {
                        PlaceOutcome::Duplicate => self.stats.duplicates += 1,
                        PlaceOutcome::Accepted { resting, .. } if resting > 0 => {
                            let cancels = self.resting.rested(ticker, order_id);
                            if !cancels.is_empty() {
                                let out = self.outbox.entry(ticker).or_default();
                                out.cancels.extend(cancels);
                            }
                        }
                        PlaceOutcome::Accepted { .. } => {}
                    }
                    if self.confirmed.len() == CONFIRMED_KEPT {
                        self.confirmed.pop_front();
                    }
                    self.confirmed.push_back(order_id);
                    let _ = self.latency.record(waited.as_micros().max(1) as u64);
                }
                None => self.stats.duplicates += 1,
            },
            OrderBookReply::Rejected {
                order_id, reason, ..
            } => {
                if self.pending.settled(order_id, Instant::now()).is_some() {
                    self.stats.rejected += 1;
                    warn!(%order_id, %reason, "order rejected");
                }
            }
            OrderBookReply::Batch(replies) => {
                for r in replies {
                    self.settle(r);
                }
            }
            OrderBookReply::Cancelled { outcome, .. } => {
                if let CancelOutcome::Cancelled { .. } = outcome {
                    self.stats.cancelled += 1;
                }
            }
            OrderBookReply::Book(_) => {}
        }
    }
}

impl Actor for Desk {
    type Msg = DeskMsg;
    type State = DeskState;
    type Arguments = DeskArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DeskMsg>,
        args: DeskArgs,
    ) -> Result<DeskState, ActorProcessingErr> {
        let tick = (args.retry_after / 4).max(Duration::from_millis(50));
        myself.send_interval(tick, || DeskMsg::Retry);
        myself.send_interval(FLUSH_INTERVAL, || DeskMsg::Flush);
        Ok(DeskState {
            node: args.reply_to.node.to_string().into(),
            pending: PendingOrders::new(args.retry_after, args.max_pending),
            streams: HashMap::new(),
            recent: Recent {
                ids: HashSet::new(),
                order: VecDeque::new(),
                capacity: 200_000,
            },
            outbox: HashMap::new(),
            in_flight: HashMap::new(),
            resting: RestingOrders::new(args.max_resting),
            confirmed: VecDeque::new(),
            stats: DeskStats::default(),
            latency: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            args,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<DeskMsg>,
        msg: DeskMsg,
        s: &mut DeskState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeskMsg::Submit(new) => {
                if s.pending.is_full() {
                    s.stats.refused += 1;
                } else {
                    let id = s
                        .streams
                        .entry(new.ticker)
                        .or_insert_with(|| OrderStream::random(&mut rand::rng()))
                        .next_id();
                    let order = new.numbered(id);
                    s.pending.sent(order, Instant::now());
                    s.stats.placed += 1;
                    s.recent.insert(id);
                    s.queue(order);
                }
            }
            DeskMsg::Reply(reply) => {
                let ticker = reply.ticker();
                s.settle(reply);
                if let Some(t) = ticker {
                    s.answered(t);
                }
            }
            DeskMsg::Fills(fills) => {
                for fill in fills {
                    if s.recent.ids.contains(&fill.order_id) {
                        s.stats.fills += 1;
                    }
                    if fill.remaining == 0 {
                        s.resting.departed(fill.order_id);
                    }
                }
            }
            DeskMsg::Retry => {
                for order in s.pending.due(Instant::now()) {
                    s.stats.resent += 1;
                    s.queue(order);
                }
            }
            DeskMsg::Flush => s.flush(),
            DeskMsg::Confirmed(reply) => {
                let _ = reply.send(s.confirmed.iter().copied().collect());
            }
            DeskMsg::Stats {
                reset_latency,
                reply,
            } => {
                let mut stats = s.stats.clone();
                stats.pending = s.pending.len() as u64;
                stats.resting = s.resting.len() as u64;
                stats.latency_p50_us = s.latency.value_at_quantile(0.5);
                stats.latency_p99_us = s.latency.value_at_quantile(0.99);
                stats.latency_samples = s.latency.len();
                if reset_latency {
                    s.latency.reset();
                }
                let _ = reply.send(stats);
            }
        }
        Ok(())
    }

    /// The traders are the desk's children: one that stops (trading paused) or fails leaves
    /// the desk running, so what was sent still gets confirmed.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<DeskMsg>,
        event: SupervisionEvent,
        _s: &mut DeskState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(who, reason) = event {
            warn!(trader = %who.get_id(), %reason, "a trader failed");
        }
        Ok(())
    }
}
