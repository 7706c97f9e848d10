//! Property tests of the matching engine against a deliberately naive reference model.
//!
//! Random streams of limit orders, market orders, cancels and re-sent ids run through both
//! the engine and the model; every outcome and every emitted event must agree, which proves
//! price-time priority. On top: quantity is conserved, the book is never crossed, snapshots
//! round-trip (and keep matching identically), replaying the events rebuilds the book, and a
//! twin driven the event-sourced way (decide without mutation, then apply) stays identical.

use domain::{
    BookEvent, CancelOutcome, Order, OrderBook, OrderId, OrderType, PlaceOutcome, Price, Side,
    Ticker, Timestamp,
};
use proptest::prelude::*;

fn ticker() -> Ticker {
    Ticker::new("PROP").unwrap()
}

#[derive(Debug, Clone)]
enum Step {
    Limit { bid: bool, price: i64, qty: u64 },
    Market { bid: bool, qty: u64 },
    Cancel { pick: usize },
    Resend { pick: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<bool>(), 95i64..=105, 1u64..=20)
            .prop_map(|(bid, price, qty)| Step::Limit { bid, price, qty }),
        1 => (any::<bool>(), 1u64..=40).prop_map(|(bid, qty)| Step::Market { bid, qty }),
        2 => any::<usize>().prop_map(|pick| Step::Cancel { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Resend { pick }),
    ]
}

/// The obvious, slow order book: a list of resting orders, scanned in full for every trade.
#[derive(Default)]
struct Model {
    resting: Vec<(Order, u64, u64)>, // order, remaining, arrival seq
    seen: std::collections::HashSet<OrderId>,
    seq: u64,
    trades: u64,
}

impl Model {
    fn place(&mut self, order: Order, at: Timestamp, out: &mut Vec<BookEvent>) -> PlaceOutcome {
        if !self.seen.insert(order.id) {
            return PlaceOutcome::Duplicate;
        }
        self.seq += 1;
        out.push(BookEvent::OrderPlaced(order));
        let mut remaining = order.quantity;
        while remaining > 0 {
            // best opposite order: best price, then lowest seq
            let best = self
                .resting
                .iter()
                .enumerate()
                .filter(|(_, (o, _, _))| o.side != order.side)
                .filter(|(_, (o, _, _))| {
                    let p = o.limit_price().unwrap();
                    match (order.side, order.limit_price()) {
                        (_, None) => true,
                        (Side::Bid, Some(l)) => p <= l,
                        (Side::Ask, Some(l)) => p >= l,
                    }
                })
                .min_by_key(|(_, (o, _, seq))| {
                    let p = o.limit_price().unwrap().ticks();
                    (if o.side == Side::Ask { p } else { -p }, *seq)
                })
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let (resting, left, _) = &mut self.resting[i];
            let traded = remaining.min(*left);
            *left -= traded;
            remaining -= traded;
            let price = resting.limit_price().unwrap();
            out.push(BookEvent::Fill(domain::Fill {
                ticker: order.ticker,
                order_id: resting.id,
                side: resting.side,
                price,
                quantity: traded,
                remaining: *left,
                partial: *left > 0,
                at,
            }));
            out.push(BookEvent::Fill(domain::Fill {
                ticker: order.ticker,
                order_id: order.id,
                side: order.side,
                price,
                quantity: traded,
                remaining,
                partial: remaining > 0,
                at,
            }));
            let (buy, sell) = if order.side == Side::Bid {
                (order.id, resting.id)
            } else {
                (resting.id, order.id)
            };
            self.trades += 1;
            out.push(BookEvent::Match(domain::Match {
                ticker: order.ticker,
                trade_id: self.trades,
                buy_order_id: buy,
                sell_order_id: sell,
                price,
                quantity: traded,
                aggressor: order.side,
                at,
            }));
            if *left == 0 {
                self.resting.remove(i);
            }
        }
        let resting = match order.kind {
            OrderType::Limit(_) if remaining > 0 => {
                self.resting.push((order, remaining, self.seq));
                remaining
            }
            _ => 0,
        };
        PlaceOutcome::Accepted {
            filled: order.quantity - remaining,
            resting,
        }
    }

    fn cancel(&mut self, id: OrderId) -> CancelOutcome {
        match self.resting.iter().position(|(o, _, _)| o.id == id) {
            Some(i) => CancelOutcome::Cancelled {
                remaining: self.resting.remove(i).1,
            },
            None => CancelOutcome::NotResting,
        }
    }
}

struct Run {
    book: OrderBook,
    /// Driven the event-sourced way: decide (read-only), then apply the events.
    shadow: OrderBook,
    model: Model,
    placed: Vec<Order>,
    log: Vec<BookEvent>,
    accepted_qty: u64,
    matched_qty: u64,
    cancelled_qty: u64,
    dropped_qty: u64,
}

impl Run {
    fn new() -> Self {
        Run {
            book: OrderBook::new(ticker()),
            shadow: OrderBook::new(ticker()),
            model: Model::default(),
            placed: Vec::new(),
            log: Vec::new(),
            accepted_qty: 0,
            matched_qty: 0,
            cancelled_qty: 0,
            dropped_qty: 0,
        }
    }

    fn step(&mut self, n: usize, step: &Step) -> Result<(), TestCaseError> {
        let at = Timestamp(n as i64);
        let id = OrderId::from_u128(n as u128 + 1);
        let order = match *step {
            Step::Limit { bid, price, qty } => {
                let p = Price::from_ticks(price);
                Some(if bid {
                    Order::bid(id, ticker(), p, qty, at)
                } else {
                    Order::ask(id, ticker(), p, qty, at)
                })
            }
            Step::Market { bid, qty } => Some(Order::market(
                id,
                ticker(),
                if bid { Side::Bid } else { Side::Ask },
                qty,
                at,
            )),
            Step::Resend { pick } if !self.placed.is_empty() => {
                Some(self.placed[pick % self.placed.len()])
            }
            Step::Cancel { pick } if !self.placed.is_empty() => {
                let target = self.placed[pick % self.placed.len()].id;
                let mut out = Vec::new();
                let mut decided = Vec::new();
                let shadow_got = self.shadow.decide_cancel(target, at, &mut decided);
                let got = self.book.cancel(target, at, &mut out);
                prop_assert_eq!(got, shadow_got);
                prop_assert_eq!(&out, &decided);
                for e in &decided {
                    self.shadow.apply(e).unwrap();
                }
                prop_assert_eq!(got, self.model.cancel(target));
                if let CancelOutcome::Cancelled { remaining } = got {
                    self.cancelled_qty += remaining;
                }
                self.log.extend(out);
                None
            }
            _ => None,
        };
        if let Some(order) = order {
            let (mut out, mut expected) = (Vec::new(), Vec::new());
            let mut decided = Vec::new();
            let shadow_got = self.shadow.decide_place(&order, at, &mut decided).unwrap();
            let got = self.book.place(order, at, &mut out).unwrap();
            prop_assert_eq!(got, self.model.place(order, at, &mut expected));
            prop_assert_eq!(&out, &expected);
            // Deciding without mutation gives the same outcome and events as placing.
            prop_assert_eq!(got, shadow_got);
            prop_assert_eq!(&out, &decided);
            for e in &decided {
                self.shadow.apply(e).unwrap();
            }
            if let PlaceOutcome::Accepted { filled, resting } = got {
                self.placed.push(order);
                self.accepted_qty += order.quantity;
                if order.kind == OrderType::Market {
                    self.dropped_qty += order.quantity - filled;
                } else {
                    prop_assert_eq!(filled + resting, order.quantity);
                }
            }
            for e in &out {
                if let BookEvent::Match(m) = e {
                    self.matched_qty += m.quantity;
                }
            }
            self.log.extend(out);
        }
        // The event-sourced twin holds the same book.
        prop_assert_eq!(self.shadow.snapshot(), self.book.snapshot());
        // Never crossed after matching.
        if let (Some(b), Some(a)) = (self.book.best_bid(), self.book.best_ask()) {
            prop_assert!(b < a, "crossed book: bid {} >= ask {}", b, a);
        }
        // Quantity is conserved: every accepted share traded (counted on both sides), rests,
        // was cancelled, or was the dropped rest of a market order.
        let resting: u64 = [Side::Bid, Side::Ask]
            .iter()
            .flat_map(|&s| self.book.depth(s))
            .map(|(_, q, _)| q)
            .sum();
        prop_assert_eq!(
            self.accepted_qty,
            2 * self.matched_qty + resting + self.cancelled_qty + self.dropped_qty
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn engine_agrees_with_the_reference_model_and_conserves_quantity(
        steps in prop::collection::vec(step(), 1..300)
    ) {
        let mut run = Run::new();
        for (n, s) in steps.iter().enumerate() {
            run.step(n, s)?;
        }
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_book(
        steps in prop::collection::vec(step(), 1..300)
    ) {
        let mut run = Run::new();
        for (n, s) in steps.iter().enumerate() {
            run.step(n, s)?;
        }
        let mut replayed = OrderBook::new(ticker());
        for e in &run.log {
            replayed.apply(e).unwrap();
        }
        prop_assert_eq!(replayed.snapshot(), run.book.snapshot());
    }

    #[test]
    fn a_snapshot_restores_a_book_that_keeps_matching_identically(
        before in prop::collection::vec(step(), 1..200),
        after in prop::collection::vec(step(), 1..100),
    ) {
        let mut run = Run::new();
        for (n, s) in before.iter().enumerate() {
            run.step(n, s)?;
        }
        let snapshot = run.book.snapshot();
        let bytes = serde_json::to_vec(&snapshot).unwrap();
        let restored = OrderBook::from_snapshot(&serde_json::from_slice(&bytes).unwrap()).unwrap();
        prop_assert_eq!(restored.snapshot(), snapshot.clone());
        // Continue both; the model keeps checking the restored one's events too.
        let shadow = OrderBook::from_snapshot(&snapshot).unwrap();
        let mut twin = Run { book: restored, shadow, ..Run::new() };
        twin.model = std::mem::take(&mut run.model);
        twin.placed = run.placed.clone();
        twin.accepted_qty = run.accepted_qty;
        twin.matched_qty = run.matched_qty;
        twin.cancelled_qty = run.cancelled_qty;
        twin.dropped_qty = run.dropped_qty;
        for (n, s) in after.iter().enumerate() {
            twin.step(before.len() + n, s)?;
        }
    }
}
