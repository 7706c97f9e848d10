//! The trading desk of a traders node: the one actor that sends the node's orders to the
//! order books, receives their confirmations (it is registered on the transport as
//! [`DESK`], the reply address of every order), re-sends what stays unconfirmed, and
//! counts fills of its orders from the `{ticker}-Fill` topics.
//!
//! One desk per node, not one registered actor per trader: only a handful of actors are
//! addressable across nodes, whatever the number of traders.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use cluster_sharding::ShardRegion;
use domain::protocol::{OrderBookCommand, OrderBookReply};
use domain::{Fill, Order, OrderId, PlaceOutcome};
use hdrhistogram::Histogram;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use runtime::RemoteRef;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::pending::PendingOrders;

/// Confirmed order ids kept for [`DeskMsg::Confirmed`].
const CONFIRMED_KEPT: usize = 100_000;

/// Registered name of the desk on every traders node.
pub const DESK: &str = "traders-desk";

/// What an order book receives from traders.
pub type OrderBookMsg = OrderBookCommand<RemoteRef<OrderBookReply>>;

/// Messages of the desk.
pub enum DeskMsg {
    /// A trader's new order: send it and track it until confirmed.
    Submit(Order),
    /// An order book's answer.
    Reply(OrderBookReply),
    /// A fill published by an order book.
    Fill(Fill),
    /// Time to re-send what is overdue.
    Retry,
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

/// The desk actor.
pub struct Desk;

/// The desk's state.
pub struct DeskState {
    args: DeskArgs,
    pending: PendingOrders,
    recent: Recent,
    confirmed: VecDeque<OrderId>,
    stats: DeskStats,
    latency: Histogram<u64>,
}

impl DeskState {
    fn send(&self, order: Order) {
        let cmd = OrderBookCommand::Place {
            order,
            reply_to: self.args.reply_to.clone(),
        };
        if let Err(e) = self.args.books.tell(order.ticker.to_string(), cmd) {
            // Still pending: it goes again after the retry timeout.
            debug!(error = %e, "order not sent now");
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
        Ok(DeskState {
            pending: PendingOrders::new(args.retry_after, args.max_pending),
            recent: Recent {
                ids: HashSet::new(),
                order: VecDeque::new(),
                capacity: 200_000,
            },
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
            DeskMsg::Submit(order) => {
                if s.pending.sent(order, Instant::now()) {
                    s.stats.placed += 1;
                    s.recent.insert(order.id);
                    s.send(order);
                } else {
                    s.stats.refused += 1;
                }
            }
            DeskMsg::Reply(reply) => match reply {
                OrderBookReply::Confirmed {
                    order_id, outcome, ..
                } => match s.pending.settled(order_id, Instant::now()) {
                    Some(waited) => {
                        s.stats.confirmed += 1;
                        if s.confirmed.len() == CONFIRMED_KEPT {
                            s.confirmed.pop_front();
                        }
                        s.confirmed.push_back(order_id);
                        if outcome == PlaceOutcome::Duplicate {
                            s.stats.duplicates += 1;
                        }
                        let _ = s.latency.record(waited.as_micros().max(1) as u64);
                    }
                    None => s.stats.duplicates += 1,
                },
                OrderBookReply::Rejected {
                    order_id, reason, ..
                } => {
                    if s.pending.settled(order_id, Instant::now()).is_some() {
                        s.stats.rejected += 1;
                        warn!(%order_id, %reason, "order rejected");
                    }
                }
                OrderBookReply::Cancelled { .. } | OrderBookReply::Book(_) => {}
            },
            DeskMsg::Fill(fill) => {
                if s.recent.ids.contains(&fill.order_id) {
                    s.stats.fills += 1;
                }
            }
            DeskMsg::Retry => {
                for order in s.pending.due(Instant::now()) {
                    s.stats.resent += 1;
                    s.send(order);
                }
            }
            DeskMsg::Confirmed(reply) => {
                let _ = reply.send(s.confirmed.iter().copied().collect());
            }
            DeskMsg::Stats {
                reset_latency,
                reply,
            } => {
                let mut stats = s.stats.clone();
                stats.pending = s.pending.len() as u64;
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
