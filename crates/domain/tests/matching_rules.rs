//! Hand-computed checks of every matching rule of the order book.

use domain::{
    BookError, BookEvent, CancelOutcome, Order, OrderBook, OrderId, PlaceOutcome, Price, Side,
    Ticker, Timestamp,
};

fn msft() -> Ticker {
    Ticker::new("MSFT").unwrap()
}

fn id(n: u128) -> OrderId {
    OrderId::from_u128(n)
}

fn p(ticks: i64) -> Price {
    Price::from_ticks(ticks)
}

fn bid(n: u128, price: i64, qty: u64) -> Order {
    Order::bid(id(n), msft(), p(price), qty, Timestamp(n as i64))
}

fn ask(n: u128, price: i64, qty: u64) -> Order {
    Order::ask(id(n), msft(), p(price), qty, Timestamp(n as i64))
}

fn place(book: &mut OrderBook, order: Order) -> (PlaceOutcome, Vec<BookEvent>) {
    let mut out = Vec::new();
    let outcome = book.place(order, Timestamp(1_000), &mut out).unwrap();
    (outcome, out)
}

fn matches(events: &[BookEvent]) -> Vec<(u128, u128, i64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            BookEvent::Match(m) => Some((
                m.buy_order_id.as_u128(),
                m.sell_order_id.as_u128(),
                m.price.ticks(),
                m.quantity,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn non_crossing_orders_rest_and_set_the_spread() {
    let mut book = OrderBook::new(msft());
    let (o1, e1) = place(&mut book, bid(1, 99, 10));
    let (o2, _) = place(&mut book, ask(2, 101, 5));
    assert_eq!(
        o1,
        PlaceOutcome::Accepted {
            filled: 0,
            resting: 10
        }
    );
    assert_eq!(
        o2,
        PlaceOutcome::Accepted {
            filled: 0,
            resting: 5
        }
    );
    assert_eq!(e1, vec![BookEvent::OrderPlaced(bid(1, 99, 10))]);
    assert_eq!(book.best_bid(), Some(p(99)));
    assert_eq!(book.best_ask(), Some(p(101)));
    assert_eq!(book.len(), 2);
}

#[test]
fn best_price_first_then_trades_at_the_resting_price() {
    let mut book = OrderBook::new(msft());
    place(&mut book, ask(1, 103, 10));
    place(&mut book, ask(2, 101, 10));
    place(&mut book, ask(3, 102, 10));
    // A bid at 102 for 15 takes 10 @101 then 5 @102, never touching 103.
    let (outcome, events) = place(&mut book, bid(4, 102, 15));
    assert_eq!(
        outcome,
        PlaceOutcome::Accepted {
            filled: 15,
            resting: 0
        }
    );
    assert_eq!(matches(&events), vec![(4, 2, 101, 10), (4, 3, 102, 5)]);
    // Trade ids number the matches of the book: 1, 2, ...
    let ids: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            BookEvent::Match(m) => Some(m.trade_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(book.trades(), 2);
    assert_eq!(book.best_ask(), Some(p(102)));
    assert_eq!(book.resting(id(3)).unwrap().remaining, 5);
    assert!(book.best_bid().is_none());
}

#[test]
fn a_resting_order_behind_an_earlier_one_at_the_same_price_is_filled_second() {
    let mut book = OrderBook::new(msft());
    place(&mut book, bid(1, 100, 5)); // first at 100
    place(&mut book, bid(2, 100, 5)); // second at 100, same price
    place(&mut book, bid(3, 99, 5));
    // Sell 7 at 99: 5 from order 1 (earliest at the best price), 2 from order 2.
    let (_, events) = place(&mut book, ask(4, 99, 7));
    assert_eq!(matches(&events), vec![(1, 4, 100, 5), (2, 4, 100, 2)]);
    // Order 1 is gone, order 2 keeps its place with 3 left, order 3 untouched.
    assert!(book.resting(id(1)).is_none());
    assert_eq!(book.resting(id(2)).unwrap().remaining, 3);
    assert_eq!(book.resting(id(3)).unwrap().remaining, 5);
    // Both orders at 100 survive as distinct orders: the original's collapse bug is gone.
    assert_eq!(book.depth(Side::Bid), vec![(p(100), 3, 1), (p(99), 5, 1)]);
}

#[test]
fn two_orders_at_one_price_are_both_kept() {
    let mut book = OrderBook::new(msft());
    place(&mut book, ask(1, 100, 5));
    place(&mut book, ask(2, 100, 7));
    assert_eq!(book.depth(Side::Ask), vec![(p(100), 12, 2)]);
    let ids: Vec<_> = book
        .orders(Side::Ask)
        .iter()
        .map(|o| o.id.as_u128())
        .collect();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn partial_fills_emit_fills_for_both_sides_and_the_rest_rests() {
    let mut book = OrderBook::new(msft());
    place(&mut book, ask(1, 100, 4));
    let (outcome, events) = place(&mut book, bid(2, 101, 10));
    assert_eq!(
        outcome,
        PlaceOutcome::Accepted {
            filled: 4,
            resting: 6
        }
    );
    let fills: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BookEvent::Fill(f) => Some((
                f.order_id.as_u128(),
                f.side,
                f.price.ticks(),
                f.quantity,
                f.remaining,
                f.partial,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        fills,
        vec![
            (1, Side::Ask, 100, 4, 0, false),
            (2, Side::Bid, 100, 4, 6, true)
        ]
    );
    // The rest of the bid rests at its own limit, 101.
    assert_eq!(book.best_bid(), Some(p(101)));
    assert_eq!(book.resting(id(2)).unwrap().remaining, 6);
    assert!(book.best_ask().is_none());
    // Every event carries the ticker, and the event order is placed, fill, fill, match.
    assert!(events.iter().all(|e| e.ticker() == msft()));
    let kinds: Vec<_> = events.iter().map(BookEvent::kind).collect();
    assert_eq!(kinds, vec!["OrderPlaced", "Fill", "Fill", "Match"]);
}

#[test]
fn a_partially_filled_resting_order_keeps_its_time_priority() {
    let mut book = OrderBook::new(msft());
    place(&mut book, ask(1, 100, 10));
    place(&mut book, ask(2, 100, 10));
    place(&mut book, bid(3, 100, 4)); // order 1 now has 6 left, still first
    let (_, events) = place(&mut book, bid(4, 100, 8));
    assert_eq!(matches(&events), vec![(4, 1, 100, 6), (4, 2, 100, 2)]);
}

#[test]
fn market_orders_sweep_levels_and_never_rest() {
    let mut book = OrderBook::new(msft());
    place(&mut book, bid(1, 100, 3));
    place(&mut book, bid(2, 98, 3));
    let mut out = Vec::new();
    let outcome = book
        .place(
            Order::market(id(3), msft(), Side::Ask, 10, Timestamp(5)),
            Timestamp(6),
            &mut out,
        )
        .unwrap();
    assert_eq!(
        outcome,
        PlaceOutcome::Accepted {
            filled: 6,
            resting: 0
        }
    );
    assert_eq!(matches(&out), vec![(1, 3, 100, 3), (2, 3, 98, 3)]);
    assert!(book.is_empty());
    // Its id is remembered: a retry is a duplicate.
    let mut out = Vec::new();
    let again = book
        .place(
            Order::market(id(3), msft(), Side::Ask, 10, Timestamp(5)),
            Timestamp(7),
            &mut out,
        )
        .unwrap();
    assert_eq!(again, PlaceOutcome::Duplicate);
    assert!(out.is_empty());
}

#[test]
fn duplicates_are_ignored_whether_resting_filled_or_cancelled() {
    let mut book = OrderBook::new(msft());
    place(&mut book, bid(1, 100, 5));
    // resting duplicate, even with different fields
    let (o, e) = place(&mut book, bid(1, 105, 50));
    assert_eq!(o, PlaceOutcome::Duplicate);
    assert!(e.is_empty());
    assert_eq!(book.resting(id(1)).unwrap().remaining, 5);
    // filled duplicate
    place(&mut book, ask(2, 100, 5));
    assert!(book.is_empty());
    assert_eq!(place(&mut book, ask(2, 100, 5)).0, PlaceOutcome::Duplicate);
    assert_eq!(place(&mut book, bid(1, 100, 5)).0, PlaceOutcome::Duplicate);
    // cancelled duplicate
    place(&mut book, bid(3, 90, 5));
    let mut out = Vec::new();
    book.cancel(id(3), Timestamp(9), &mut out);
    assert_eq!(place(&mut book, bid(3, 90, 5)).0, PlaceOutcome::Duplicate);
    assert!(book.is_empty());
}

#[test]
fn a_duplicate_is_recognised_however_many_orders_came_between() {
    let mut book = OrderBook::new(msft());
    // 100,000 orders that trade away, ten times the old window of remembered ids.
    for n in 1..=50_000 {
        place(&mut book, bid(2 * n - 1, 100, 1));
        place(&mut book, ask(2 * n, 100, 1));
    }
    assert!(book.is_empty());
    assert_eq!(place(&mut book, bid(1, 100, 1)).0, PlaceOutcome::Duplicate);
    assert!(book.knows(id(77_777)));
    assert!(!book.knows(id(100_001)));
    // And the state is one stream with one gap (number 0, never sent), not 100,000 ids.
    let placed = book.snapshot().placed;
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].last, id(100_000));
    assert_eq!(placed[0].gaps, vec![[0, 0]]);
}

#[test]
fn an_order_below_its_streams_floor_is_refused_and_changes_nothing() {
    let mut book = OrderBook::new(msft());
    // A sender skipping every other number opens a gap per order, past the limit.
    for n in 1..=(domain::MAX_OPEN_GAPS as u128 + 1) {
        place(&mut book, bid(2 * n, 90, 1));
    }
    let mut out = Vec::new();
    let before = book.snapshot();
    assert_eq!(
        book.place(ask(1, 200, 1), Timestamp(0), &mut out),
        Err(BookError::Unknowable(id(1)))
    );
    assert!(out.is_empty());
    assert_eq!(book.snapshot(), before);
    // Numbers in the gaps still open are placed normally.
    assert!(matches!(
        place(&mut book, ask(3, 200, 1)).0,
        PlaceOutcome::Accepted { .. }
    ));
}

#[test]
fn cancel_removes_only_a_resting_order() {
    let mut book = OrderBook::new(msft());
    place(&mut book, bid(1, 100, 5));
    place(&mut book, bid(2, 100, 6));
    place(&mut book, bid(3, 100, 7));
    let mut out = Vec::new();
    assert_eq!(
        book.cancel(id(2), Timestamp(9), &mut out),
        CancelOutcome::Cancelled { remaining: 6 }
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        book.cancel(id(2), Timestamp(9), &mut out),
        CancelOutcome::NotResting
    );
    assert_eq!(
        book.cancel(id(42), Timestamp(9), &mut out),
        CancelOutcome::NotResting
    );
    assert_eq!(out.len(), 1);
    assert_eq!(book.depth(Side::Bid), vec![(p(100), 12, 2)]);
    // FIFO links are intact around the removed middle order.
    let (_, events) = place(&mut book, ask(4, 100, 12));
    assert_eq!(matches(&events), vec![(1, 4, 100, 5), (3, 4, 100, 7)]);
    assert!(book.is_empty());
}

#[test]
fn invalid_orders_are_refused_and_change_nothing() {
    let mut book = OrderBook::new(msft());
    let mut out = Vec::new();
    let other = Order::bid(id(1), Ticker::new("AAPL").unwrap(), p(1), 1, Timestamp(0));
    assert!(matches!(
        book.place(other, Timestamp(0), &mut out),
        Err(BookError::WrongTicker { .. })
    ));
    assert_eq!(
        book.place(bid(2, 100, 0), Timestamp(0), &mut out),
        Err(BookError::ZeroQuantity(id(2)))
    );
    assert_eq!(
        book.place(bid(3, 0, 1), Timestamp(0), &mut out),
        Err(BookError::NonPositivePrice(id(3)))
    );
    assert!(out.is_empty());
    assert!(book.is_empty());
    // A refused id was not recorded: the same id can be placed once valid.
    assert!(!book.knows(id(2)));
}

#[test]
fn a_book_restored_from_a_snapshot_matches_exactly_as_the_original() {
    let mut original = OrderBook::new(msft());
    place(&mut original, bid(1, 100, 5));
    place(&mut original, bid(2, 100, 5));
    place(&mut original, bid(3, 99, 8));
    place(&mut original, ask(4, 103, 4));
    place(&mut original, ask(5, 102, 4));
    place(&mut original, ask(6, 100, 3)); // partially fills order 1
    let snapshot = original.snapshot();
    let json = serde_json::to_string(&snapshot).unwrap();
    let mut restored = OrderBook::from_snapshot(&serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(restored.snapshot(), snapshot);
    // The same aggressive order produces the same events on both books.
    let sweep = ask(7, 98, 20);
    let (o1, e1) = place(&mut original, sweep);
    let (o2, e2) = place(&mut restored, sweep);
    assert_eq!(o1, o2);
    assert_eq!(e1, e2);
    assert_eq!(
        matches(&e1),
        vec![(1, 7, 100, 2), (2, 7, 100, 5), (3, 7, 99, 8)]
    );
    assert_eq!(original.snapshot(), restored.snapshot());
    // The restored book remembers departed ids too.
    assert_eq!(
        place(&mut restored, ask(6, 100, 3)).0,
        PlaceOutcome::Duplicate
    );
}

#[test]
fn an_impossible_snapshot_is_refused() {
    let mut book = OrderBook::new(msft());
    place(&mut book, bid(1, 100, 5));
    place(&mut book, ask(2, 101, 5));
    let mut crossed = book.snapshot();
    crossed.asks[0].price = p(99);
    assert!(matches!(
        OrderBook::from_snapshot(&crossed),
        Err(BookError::Inconsistent(_))
    ));
    let mut repeated = book.snapshot();
    repeated.asks[0].id = id(1);
    assert!(OrderBook::from_snapshot(&repeated).is_err());
    let mut wrong_side = book.snapshot();
    wrong_side.asks[0].side = Side::Bid;
    assert!(OrderBook::from_snapshot(&wrong_side).is_err());
}

#[test]
fn replaying_emitted_events_rebuilds_the_book() {
    let mut live = OrderBook::new(msft());
    let mut log = Vec::new();
    for order in [
        bid(1, 100, 5),
        bid(2, 100, 5),
        ask(3, 101, 5),
        ask(4, 100, 7),
        Order::market(id(5), msft(), Side::Bid, 2, Timestamp(5)),
        bid(6, 102, 10),
    ] {
        live.place(order, Timestamp(9), &mut log).unwrap();
    }
    live.cancel(id(6), Timestamp(10), &mut log);
    let mut replayed = OrderBook::new(msft());
    for e in &log {
        replayed.apply(e).unwrap();
    }
    assert_eq!(replayed.snapshot(), live.snapshot());
}
