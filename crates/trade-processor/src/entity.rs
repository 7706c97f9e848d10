//! The `orderBook` entity: one per ticker, sharded over the `trade-processor` nodes, running
//! the domain's matching engine as an event-sourced actor.
//!
//! For each order it *decides* the events without touching its state
//! ([`domain::OrderBook::decide_place`]), persists them as one atomic write (the order, its
//! fills and its matches together), *applies* them, and only then confirms to the trader and
//! publishes fills and matches on pub-sub (`MSFT-Fill`, `MSFT-Match`, one list per write). A desk's `Batch`
//! (cancels, then orders) is applied to the book one by one, since its orders trade with each
//! other, and stored as one write ([`EntityContext::persist_applied`]): that is how a busy
//! desk gets past one journal round trip per order. A write that fails stops the entity,
//! which recovers from its journal on the next message, so nothing the book confirmed is ever
//! missing from the journal. A duplicate order id is confirmed again
//! without new events: traders retry until confirmed, and the book is idempotent.
//!
//! Observability: a command that arrives with a sampled trace context is handled inside an
//! `orderBook.handle` span (child of the sender's span), the write inside a `journal.write`
//! span (its child), and the confirmation and the published fills and matches carry the
//! handling span's own context, so pricing's spans become its children. An unsampled
//! context is passed on as it came, and no context costs nothing (see
//! `telemetry::MessageSpan`). Accepted orders and matches are counted per ticker
//! (`trading_orders_total`, `trading_matches_total`): one relaxed atomic add each per write.

use cluster_sharding::{EntityContext as ShardContext, EntityFactory, EntityMsg};
use cluster_tools::pubsub::DistributedPubSub;
use domain::protocol::{ORDER_BOOK, OrderBookCommand, OrderBookReply, topics};
use domain::{BookEvent, CancelOutcome, OrderBook, PlaceOutcome, Ticker, Timestamp};
use persistence::actor::{
    EntityContext, EntitySettings, PersistenceHandle, PersistentActor, PersistentBehavior,
};
use std::time::Duration;

use ractor::ActorProcessingErr;
use runtime::{RemoteRef, Remoting};
use telemetry::MessageSpan;
use telemetry::instruments::{self, CounterFamily, CounterHandle};
use telemetry::opentelemetry::KeyValue;
use telemetry::opentelemetry::metrics::Meter;
use tracing::{Instrument, Span, debug, warn};

use crate::journal::{BookState, Journaled};

/// Where a trader wants its answer: a typed reference to an actor registered on its node.
pub type ReplyTo = RemoteRef<OrderBookReply>;

/// What an order-book entity receives.
pub type OrderBookMsg = OrderBookCommand<ReplyTo>;

/// The persistence id of a ticker's book: `orderBook-MSFT`.
pub fn persistence_id(ticker: &str) -> String {
    format!("orderBook-{ticker}")
}

/// The behavior of one order book.
pub struct OrderBookBehavior {
    ticker: Ticker,
    remoting: Remoting,
    pubsub: DistributedPubSub,
    fill_topic: String,
    match_topic: String,
    counters: BookCounters,
}

/// The per-ticker series of `trading_orders_total` and `trading_matches_total`.
#[derive(Debug, Clone)]
pub struct BookCounters {
    orders: CounterHandle,
    matches: CounterHandle,
}

/// The order and match counter families of a node; [`TradingMetrics::book`] gives one
/// ticker's series.
#[derive(Debug, Clone)]
pub struct TradingMetrics {
    orders: CounterFamily,
    matches: CounterFamily,
}

impl TradingMetrics {
    /// Registers `trading.orders` and `trading.matches` on `meter` (once per node).
    pub fn new(meter: &Meter) -> Self {
        TradingMetrics {
            orders: instruments::orders(meter),
            matches: instruments::matches(meter),
        }
    }

    /// The series of `ticker`.
    pub fn book(&self, ticker: Ticker) -> BookCounters {
        let attrs = [KeyValue::new(instruments::ATTR_TICKER, ticker.to_string())];
        BookCounters {
            orders: self.orders.handle(&attrs),
            matches: self.matches.handle(&attrs),
        }
    }
}

impl OrderBookBehavior {
    /// The book of `ticker`, answering through `remoting`, publishing on `pubsub` and
    /// counting into `counters`.
    pub fn new(
        ticker: Ticker,
        remoting: Remoting,
        pubsub: DistributedPubSub,
        counters: BookCounters,
    ) -> Self {
        OrderBookBehavior {
            ticker,
            remoting,
            pubsub,
            fill_topic: topics::fills(ticker),
            match_topic: topics::matches(ticker),
            counters,
        }
    }

    /// The `journal.write` span of a handling span (disabled when there is none).
    fn journal_span(handling: &Option<MessageSpan>) -> Span {
        handling
            .as_ref()
            .map_or_else(Span::none, |h| h.child("journal.write"))
    }

    fn reply(&self, to: &ReplyTo, reply: &OrderBookReply, trace: Option<&str>) {
        if let Err(e) = self.remoting.try_tell(to, reply, trace) {
            // The trader re-sends what is not confirmed; nothing is lost here.
            debug!(ticker = %self.ticker, error = %e, "could not answer a trader");
        }
    }

    /// Publishes the fills and the matches of one write, each as one message (a list), and
    /// counts the write's orders and matches.
    fn publish(&self, events: &[BookEvent], trace: Option<&str>) {
        let mut fills = Vec::new();
        let mut matches = Vec::new();
        let mut orders = 0;
        for e in events {
            match e {
                BookEvent::Fill(f) => fills.push(*f),
                BookEvent::Match(m) => matches.push(*m),
                BookEvent::OrderPlaced(_) => orders += 1,
                _ => {}
            }
        }
        self.counters.orders.add(orders);
        self.counters.matches.add(matches.len() as u64);
        let sent = [
            (!fills.is_empty())
                .then(|| self.pubsub.publish_traced(&self.fill_topic, &fills, trace)),
            (!matches.is_empty()).then(|| {
                self.pubsub
                    .publish_traced(&self.match_topic, &matches, trace)
            }),
        ];
        for e in sent.into_iter().flatten().filter_map(Result::err) {
            // Pub-sub is the fast path only; pricing catches up from the journal.
            debug!(ticker = %self.ticker, error = %e, "publish failed");
        }
    }

    fn now() -> Timestamp {
        Timestamp(host::now_micros())
    }
}

impl PersistentBehavior for OrderBookBehavior {
    type Command = EntityMsg<OrderBookMsg>;
    type Event = Journaled;
    type State = BookState;

    fn initial_state(&self) -> BookState {
        BookState::new(self.ticker)
    }

    fn apply_event(&self, state: &mut BookState, event: &Journaled) {
        // Events come from this book's own decisions (or its journal), so they always
        // apply; if one does not, the journal is corrupt and going on would be worse.
        if let Err(e) = state.0.apply(&event.0) {
            panic!(
                "order book {}: cannot apply a journaled event: {e}",
                self.ticker
            );
        }
    }

    async fn handle_command(
        &self,
        ctx: &mut EntityContext<'_, Self>,
        msg: EntityMsg<OrderBookMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let handling = MessageSpan::sampled(
            "orderBook.handle",
            self.remoting.node_label(),
            msg.trace_context.as_deref(),
        )
        .map(|h| h.with_destination(ORDER_BOOK));
        // What the answer and the publishes carry: this handling's context when recorded.
        let trace = handling
            .as_ref()
            .map_or(msg.trace_context.as_deref(), |h| h.traceparent());
        match msg.message {
            OrderBookCommand::Place { order, reply_to } => {
                let mut events = Vec::new();
                let reply = match ctx.state().0.decide_place(&order, Self::now(), &mut events) {
                    Err(e) => OrderBookReply::Rejected {
                        ticker: self.ticker,
                        order_id: order.id,
                        reason: e.to_string(),
                    },
                    Ok(PlaceOutcome::Duplicate) => OrderBookReply::Confirmed {
                        ticker: self.ticker,
                        order_id: order.id,
                        outcome: PlaceOutcome::Duplicate,
                    },
                    Ok(outcome) => {
                        ctx.persist_all(events.iter().copied().map(Journaled).collect())
                            .instrument(Self::journal_span(&handling))
                            .await?;
                        self.publish(&events, trace);
                        OrderBookReply::Confirmed {
                            ticker: self.ticker,
                            order_id: order.id,
                            outcome,
                        }
                    }
                };
                self.reply(&reply_to, &reply, trace);
            }
            OrderBookCommand::Batch {
                cancels,
                orders,
                reply_to,
                ..
            } => {
                // Orders of a batch trade with each other, so each is applied to the book as
                // it is decided; the events of all of them are then persisted as one write.
                // Nothing is answered or published before that write succeeds, and if it
                // fails the entity stops and its next incarnation recovers from the journal.
                let now = Self::now();
                let ticker = self.ticker;
                let (events, replies) = ctx
                    .persist_applied(|state| {
                        let mut events = Vec::new();
                        let mut replies = Vec::with_capacity(cancels.len() + orders.len());
                        for order_id in cancels {
                            let outcome = state.0.cancel(order_id, now, &mut events);
                            replies.push(OrderBookReply::Cancelled {
                                ticker,
                                order_id,
                                outcome,
                            });
                        }
                        for order in orders {
                            replies.push(match state.0.place(order, now, &mut events) {
                                Ok(outcome) => OrderBookReply::Confirmed {
                                    ticker,
                                    order_id: order.id,
                                    outcome,
                                },
                                Err(e) => OrderBookReply::Rejected {
                                    ticker,
                                    order_id: order.id,
                                    reason: e.to_string(),
                                },
                            });
                        }
                        let journaled = events.iter().copied().map(Journaled).collect();
                        (journaled, (events, replies))
                    })
                    .instrument(Self::journal_span(&handling))
                    .await?;
                self.publish(&events, trace);
                self.reply(&reply_to, &OrderBookReply::Batch(replies), trace);
            }
            OrderBookCommand::Cancel {
                order_id, reply_to, ..
            } => {
                let mut events = Vec::new();
                let outcome = ctx
                    .state()
                    .0
                    .decide_cancel(order_id, Self::now(), &mut events);
                if let CancelOutcome::Cancelled { .. } = outcome {
                    ctx.persist_all(events.into_iter().map(Journaled).collect())
                        .instrument(Self::journal_span(&handling))
                        .await?;
                }
                let reply = OrderBookReply::Cancelled {
                    ticker: self.ticker,
                    order_id,
                    outcome,
                };
                self.reply(&reply_to, &reply, trace);
            }
            OrderBookCommand::GetBook { reply_to, .. } => {
                let reply = OrderBookReply::Book(ctx.state().0.snapshot());
                self.reply(&reply_to, &reply, trace);
            }
        }
        Ok(())
    }

    fn on_recovery_completed(&self, persistence_id: &str, state: &BookState, last: u64) {
        let book: &OrderBook = &state.0;
        debug!(
            persistence_id,
            last_sequence_nr = last,
            resting = book.len(),
            trades = book.trades(),
            "order book recovered"
        );
    }
}

/// Builds order-book entities for the shard region.
pub struct OrderBookFactory {
    remoting: Remoting,
    pubsub: DistributedPubSub,
    persistence: PersistenceHandle,
    settings: EntitySettings,
    metrics: TradingMetrics,
}

impl OrderBookFactory {
    /// A factory whose books snapshot as `snapshots` says (older snapshots are deleted;
    /// events are kept, since pricing reads matches from the journal) and count orders and
    /// matches into `metrics`.
    pub fn new(
        remoting: Remoting,
        pubsub: DistributedPubSub,
        persistence: PersistenceHandle,
        snapshots: SnapshotPolicy,
        metrics: TradingMetrics,
    ) -> Self {
        OrderBookFactory {
            remoting,
            pubsub,
            persistence,
            metrics,
            settings: EntitySettings {
                snapshot_every: snapshots.every,
                snapshot_min_interval: snapshots.min_interval,
                delete_events_on_snapshot: false,
                delete_older_snapshots: true,
            },
        }
    }
}

/// When an order book snapshots its whole state.
///
/// Every [`SnapshotPolicy::every`] events (the workshop's 100), but not more often than
/// [`SnapshotPolicy::min_interval`] (5 s by default). At the workshop's pace the count decides
/// and the interval never matters. Under load a book writes thousands of events a second and
/// its snapshot carries every resting order (up to 200 per desk), so snapshots by count
/// alone would outweigh the events themselves; the interval bounds that cost, and recovery still replays
/// no more than about five seconds of events past the latest snapshot (at 20,000 orders/s
/// over 28 books, some 12,000 events per book).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Snapshot each time this many more events are stored (`None` = never).
    pub every: Option<u64>,
    /// The shortest time between two snapshots of one book.
    pub min_interval: Duration,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            every: Some(100),
            min_interval: Duration::from_secs(5),
        }
    }
}

/// Stands in for an entity id that is not a ticker symbol: a book that refuses every order
/// (they all name another ticker), so bad input never crashes the region.
const NOT_A_TICKER: &str = "INVALID";

impl EntityFactory for OrderBookFactory {
    type Message = OrderBookMsg;
    type Entity = PersistentActor<OrderBookBehavior>;

    fn create(&self, ctx: &ShardContext) -> (Self::Entity, ()) {
        let ticker = Ticker::new(&ctx.entity_id).unwrap_or_else(|e| {
            warn!(entity_id = %ctx.entity_id, error = %e, "order book for an invalid ticker");
            Ticker::new(NOT_A_TICKER).expect("valid symbol")
        });
        let behavior = OrderBookBehavior::new(
            ticker,
            self.remoting.clone(),
            self.pubsub.clone(),
            self.metrics.book(ticker),
        );
        let actor = PersistentActor::new(
            behavior,
            persistence_id(&ctx.entity_id),
            self.persistence.clone(),
            self.settings,
        );
        (actor, ())
    }
}
