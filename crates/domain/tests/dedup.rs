//! Property test of exact deduplication: a confirmed order re-sent after any delay is never
//! placed twice, a new order is never taken for a duplicate, and the book's duplicate state
//! stays bounded by the gaps senders leave open, not by the orders placed.
//!
//! Several desks number their orders in streams of their own. Their first sends can be lost
//! (the number is skipped and sent later), any order issued so far can be re-sent at any time,
//! and the book can restart from its snapshot or from its journal (the events) at any point.
//! Orders trade away as they arrive (bids and asks at one price), so the resting orders say
//! nothing about what was placed: only the dedup state does.

use std::collections::HashSet;

use domain::{
    BookEvent, BookSnapshot, Order, OrderBook, OrderId, OrderStream, PlaceOutcome, Price, Ticker,
    Timestamp,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const DESKS: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    /// Desk `d` sends its next order.
    Send(usize),
    /// Desk `d` issues its next order but the send is lost: it goes later, as a re-send.
    Lose(usize),
    /// Any order issued so far is sent (again).
    Resend(usize),
    /// The book restarts from a snapshot.
    RestoreSnapshot,
    /// The book restarts by replaying every event.
    Replay,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..DESKS).prop_map(Step::Send),
        2 => (0..DESKS).prop_map(Step::Lose),
        4 => any::<usize>().prop_map(Step::Resend),
        1 => Just(Step::RestoreSnapshot),
        1 => Just(Step::Replay),
    ]
}

fn ticker() -> Ticker {
    Ticker::new("DEDUP").unwrap()
}

/// The order with this id: bids and asks alternate per number, all at one price.
fn order(id: OrderId) -> Order {
    let at = Timestamp(0);
    let price = Price::from_ticks(100);
    if id.seq() % 2 == 0 {
        Order::bid(id, ticker(), price, 1, at)
    } else {
        Order::ask(id, ticker(), price, 1, at)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_confirmed_order_resent_after_any_delay_is_never_placed_twice(
        seed in any::<u64>(),
        steps in prop::collection::vec(step(), 1..600),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut desks: Vec<OrderStream> = (0..DESKS).map(|_| OrderStream::random(&mut rng)).collect();
        let mut book = OrderBook::new(ticker());
        let mut journal: Vec<BookEvent> = Vec::new();
        let mut issued: Vec<OrderId> = Vec::new();
        let mut lost: HashSet<OrderId> = HashSet::new();
        let mut placed: HashSet<OrderId> = HashSet::new();
        let mut out = Vec::new();
        let mut send = |book: &mut OrderBook, journal: &mut Vec<BookEvent>, id: OrderId| {
            out.clear();
            let outcome = book.place(order(id), Timestamp(0), &mut out).unwrap();
            journal.extend_from_slice(&out);
            outcome
        };
        for step in steps {
            match step {
                Step::Send(d) | Step::Lose(d) => {
                    let id = desks[d].next_id();
                    issued.push(id);
                    if matches!(step, Step::Lose(_)) {
                        lost.insert(id);
                        continue;
                    }
                    let outcome = send(&mut book, &mut journal, id);
                    prop_assert!(matches!(outcome, PlaceOutcome::Accepted { .. }), "new {:?}: {:?}", id, outcome);
                    placed.insert(id);
                }
                Step::Resend(pick) => {
                    if issued.is_empty() {
                        continue;
                    }
                    let id = issued[pick % issued.len()];
                    lost.remove(&id);
                    let outcome = send(&mut book, &mut journal, id);
                    if placed.insert(id) {
                        prop_assert!(matches!(outcome, PlaceOutcome::Accepted { .. }), "late first send {:?}: {:?}", id, outcome);
                    } else {
                        prop_assert_eq!(outcome, PlaceOutcome::Duplicate, "re-send of {:?}", id);
                    }
                }
                Step::RestoreSnapshot => {
                    let json = serde_json::to_string(&book.snapshot()).unwrap();
                    let snapshot: BookSnapshot = serde_json::from_str(&json).unwrap();
                    book = OrderBook::from_snapshot(&snapshot).unwrap();
                }
                Step::Replay => {
                    let mut replayed = OrderBook::new(ticker());
                    for e in &journal {
                        replayed.apply(e).unwrap();
                    }
                    prop_assert_eq!(replayed.snapshot(), book.snapshot());
                    book = replayed;
                }
            }
            // Bounded: one stream per desk that sent, and a gap per lost send at most.
            prop_assert!(book.placed().streams() <= DESKS);
            prop_assert!(book.placed().open_gaps() <= lost.len());
        }
        // Every lost order finally arrives, once.
        for id in lost.clone() {
            let outcome = send(&mut book, &mut journal, id);
            prop_assert!(matches!(outcome, PlaceOutcome::Accepted { .. }), "{:?}", outcome);
            placed.insert(id);
        }
        prop_assert_eq!(book.placed().open_gaps(), 0);
        // The journal placed each issued order exactly once.
        let mut seen = HashSet::new();
        for e in &journal {
            if let BookEvent::OrderPlaced(o) = e {
                prop_assert!(seen.insert(o.id), "{:?} placed twice", o.id);
            }
        }
        prop_assert_eq!(seen.len(), issued.len());
        for id in &issued {
            prop_assert!(book.knows(*id));
        }
    }
}
