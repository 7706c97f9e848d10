//! Which of a desk's orders rest in the books, and which to cancel (pure, no actors).
//!
//! A desk learns that an order rests from its confirmation (shares left resting) and that it
//! departed from its fills (a fill leaving zero shares). When more than `max_per_book` of its
//! orders rest in one book, the oldest are withdrawn, as a real desk pulls stale quotes. The
//! view may lag the book (a fill not yet seen); a cancel of an order that has just filled is
//! answered "not resting" and costs nothing.

use std::collections::{HashMap, VecDeque};

use domain::{OrderId, Ticker};

/// A desk's resting orders per book, oldest first.
#[derive(Debug)]
pub struct RestingOrders {
    max_per_book: usize,
    /// Ids resting now, with their book.
    live: HashMap<OrderId, Ticker>,
    books: HashMap<Ticker, Book>,
}

#[derive(Debug, Default)]
struct Book {
    /// Ids in the order they came to rest; may still hold ids that have departed since.
    fifo: VecDeque<OrderId>,
    /// How many of them still rest.
    count: usize,
}

impl RestingOrders {
    /// No resting orders; at most `max_per_book` will rest in one book.
    pub fn new(max_per_book: usize) -> Self {
        RestingOrders {
            max_per_book,
            live: HashMap::new(),
            books: HashMap::new(),
        }
    }

    /// Notes that `order_id` now rests in `ticker`'s book; returns the oldest orders of that
    /// book to cancel so that no more than the limit rest (they no longer count as resting).
    pub fn rested(&mut self, ticker: Ticker, order_id: OrderId) -> Vec<OrderId> {
        if self.live.insert(order_id, ticker).is_some() {
            return Vec::new();
        }
        let max = self.max_per_book;
        let book = self.books.entry(ticker).or_default();
        book.fifo.push_back(order_id);
        book.count += 1;
        let mut cancels = Vec::new();
        while book.count > max {
            let Some(oldest) = book.fifo.pop_front() else {
                break;
            };
            if self.live.remove(&oldest).is_some() {
                cancels.push(oldest);
                book.count -= 1;
            }
        }
        // Departed ids wait in the queue until they reach its front; drop them in one pass
        // when they could outnumber the live ones.
        if book.fifo.len() > 2 * max + 16 {
            let live = &self.live;
            book.fifo.retain(|id| live.contains_key(id));
        }
        cancels
    }

    /// Notes that `order_id` no longer rests (it was filled to zero shares).
    pub fn departed(&mut self, order_id: OrderId) {
        if let Some(ticker) = self.live.remove(&order_id)
            && let Some(book) = self.books.get_mut(&ticker)
        {
            book.count -= 1;
        }
    }

    /// Orders resting now, over all books.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when none rests.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Ids queued for `ticker`, resting or not yet dropped (for tests of the bound).
    #[cfg(test)]
    fn queued(&self, ticker: Ticker) -> usize {
        self.books.get(&ticker).map_or(0, |b| b.fifo.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> OrderId {
        OrderId::from_u128(n)
    }

    #[test]
    fn cancels_the_oldest_beyond_the_limit_per_book() {
        let msft = Ticker::new("MSFT").unwrap();
        let aapl = Ticker::new("AAPL").unwrap();
        let mut r = RestingOrders::new(2);
        assert!(r.rested(msft, id(1)).is_empty());
        assert!(r.rested(msft, id(2)).is_empty());
        assert!(r.rested(aapl, id(10)).is_empty());
        assert_eq!(r.rested(msft, id(3)), vec![id(1)]);
        assert_eq!(r.rested(msft, id(4)), vec![id(2)]);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn filled_orders_are_not_cancelled_and_free_their_place() {
        let msft = Ticker::new("MSFT").unwrap();
        let mut r = RestingOrders::new(2);
        r.rested(msft, id(1));
        r.rested(msft, id(2));
        r.departed(id(1));
        assert!(r.rested(msft, id(3)).is_empty(), "only two rest");
        assert_eq!(
            r.rested(msft, id(4)),
            vec![id(2)],
            "1 departed, 2 is oldest"
        );
        r.departed(id(99)); // unknown: ignored
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_repeated_confirmation_counts_once() {
        let msft = Ticker::new("MSFT").unwrap();
        let mut r = RestingOrders::new(1);
        r.rested(msft, id(1));
        assert!(r.rested(msft, id(1)).is_empty());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn the_queue_stays_bounded_when_orders_fill_instead() {
        let msft = Ticker::new("MSFT").unwrap();
        let mut r = RestingOrders::new(10);
        for n in 0..10_000 {
            assert!(r.rested(msft, id(n)).is_empty());
            r.departed(id(n));
        }
        assert!(r.is_empty());
        assert!(r.queued(msft) <= 2 * 10 + 16, "{}", r.queued(msft));
    }
}
