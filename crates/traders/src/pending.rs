//! The orders a desk has sent and not yet seen confirmed, and when to send them again.
//!
//! Pure bookkeeping (time is passed in), so the retry rules are unit-tested without a clock:
//! an order is re-sent when `retry_after` has passed since it was last sent, doubling the wait
//! after each re-send (up to 16 times `retry_after`) so that an overloaded book is not buried
//! under re-sends, and forgotten once the book confirms or rejects it. The order book is idempotent on order ids, so a
//! re-sent order that the book had already taken is confirmed again as a duplicate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use domain::{Order, OrderId};

/// One unconfirmed order.
#[derive(Debug, Clone, Copy)]
struct Pending {
    order: Order,
    first_sent: Instant,
    last_sent: Instant,
    resends: u32,
}

/// The wait before a re-send doubles with each re-send, up to `retry_after << MAX_BACKOFF`.
const MAX_BACKOFF: u32 = 4;

/// Unconfirmed orders, by id.
#[derive(Debug)]
pub struct PendingOrders {
    orders: HashMap<OrderId, Pending>,
    retry_after: Duration,
    capacity: usize,
}

impl PendingOrders {
    /// Re-sends after `retry_after`; holds at most `capacity` orders.
    pub fn new(retry_after: Duration, capacity: usize) -> Self {
        PendingOrders {
            orders: HashMap::new(),
            retry_after,
            capacity,
        }
    }

    /// True when no more orders may be sent before some are settled.
    pub fn is_full(&self) -> bool {
        self.orders.len() >= self.capacity
    }

    /// Records an order sent at `now`; false (and nothing recorded) when full.
    pub fn sent(&mut self, order: Order, now: Instant) -> bool {
        if self.is_full() {
            return false;
        }
        self.orders.insert(
            order.id,
            Pending {
                order,
                first_sent: now,
                last_sent: now,
                resends: 0,
            },
        );
        true
    }

    /// Forgets a confirmed or rejected order; returns it and how long it waited since it
    /// was first sent, or `None` when it was not pending (a late duplicate confirmation).
    pub fn settled(&mut self, id: OrderId, now: Instant) -> Option<(Order, Duration)> {
        self.orders
            .remove(&id)
            .map(|p| (p.order, now.saturating_duration_since(p.first_sent)))
    }

    /// The orders due to be sent again at `now`, marked as sent now, in id order: the order
    /// the desk numbered them in, so that a book meets them in rising numbers and the gaps
    /// they fill do not split into many (`domain::dedup` bounds the gaps a stream keeps).
    pub fn due(&mut self, now: Instant) -> Vec<Order> {
        let base = self.retry_after;
        let mut due: Vec<Order> = self
            .orders
            .values_mut()
            .filter(|p| {
                now.saturating_duration_since(p.last_sent)
                    >= base * (1 << p.resends.min(MAX_BACKOFF))
            })
            .map(|p| {
                p.last_sent = now;
                p.resends += 1;
                p.order
            })
            .collect();
        due.sort_unstable_by_key(|o| o.id);
        due
    }

    /// Orders waiting for confirmation.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// True when `id` waits for confirmation.
    pub fn contains(&self, id: OrderId) -> bool {
        self.orders.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Price, Ticker, Timestamp};

    fn order(n: u128) -> Order {
        Order::bid(
            OrderId::from_u128(n),
            Ticker::new("MSFT").unwrap(),
            Price::from_ticks(100),
            1,
            Timestamp(0),
        )
    }

    #[test]
    fn unconfirmed_orders_are_due_again_after_the_timeout_until_settled() {
        let t0 = Instant::now();
        let mut p = PendingOrders::new(Duration::from_secs(2), 10);
        assert!(p.sent(order(1), t0));
        assert!(p.sent(order(2), t0 + Duration::from_secs(1)));
        assert!(p.due(t0 + Duration::from_millis(1999)).is_empty());
        let due: Vec<_> = p
            .due(t0 + Duration::from_secs(2))
            .iter()
            .map(|o| o.id.as_u128())
            .collect();
        assert_eq!(due, vec![1]);
        // Re-sent at 2 s, so due again at 4 s, not at 3 s.
        let at3: Vec<_> = p
            .due(t0 + Duration::from_secs(3))
            .iter()
            .map(|o| o.id.as_u128())
            .collect();
        assert_eq!(at3, vec![2]);
        assert_eq!(
            p.settled(OrderId::from_u128(1), t0 + Duration::from_secs(7))
                .map(|(o, waited)| (o.id, waited)),
            Some((OrderId::from_u128(1), Duration::from_secs(7)))
        );
        assert_eq!(p.settled(OrderId::from_u128(1), t0), None);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn due_orders_come_in_id_order() {
        let t0 = Instant::now();
        let mut p = PendingOrders::new(Duration::from_secs(1), 1_000);
        for n in (1..=500).rev() {
            assert!(p.sent(order(n), t0));
        }
        let due: Vec<u128> = p
            .due(t0 + Duration::from_secs(1))
            .iter()
            .map(|o| o.id.as_u128())
            .collect();
        assert_eq!(due, (1..=500).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_desk_refuses_new_orders() {
        let t0 = Instant::now();
        let mut p = PendingOrders::new(Duration::from_secs(1), 1);
        assert!(p.sent(order(1), t0));
        assert!(!p.sent(order(2), t0));
        assert!(!p.contains(OrderId::from_u128(2)));
    }
}
