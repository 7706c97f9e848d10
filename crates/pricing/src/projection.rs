//! The price projection of one ticker: matches in, EMWA price and volume out, applied exactly
//! once whether a match arrives by pub-sub, from the journal, or both.
//!
//! Trade ids number a book's matches 1, 2, 3, ... without gaps, so the projection applies a
//! match only when its trade id is the next one. A pub-sub match that is not the next one
//! (a publish was lost, or arrived before an earlier one) is left to the journal stream, which
//! delivers every match of the ticker in order; a match already applied is skipped. The
//! journal offset is kept with the state, so after a restart the stream resumes where the
//! last checkpoint left it and re-reads at most what came after (skipped as duplicates).

use domain::{Match, PriceAggregate, PriceUpdate, PricingConfig, Ticker};
use serde::{Deserialize, Serialize};

/// What applying a match did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Applied {
    /// The match was the next one: here is the new price.
    Updated(PriceUpdate),
    /// The match was applied before; nothing changed.
    Duplicate,
    /// The match is ahead of the next expected one; nothing changed (the journal will bring
    /// the missing ones, then this one again).
    Ahead {
        /// The trade id the projection waits for.
        expected: u64,
    },
}

/// The checkpointed state of a ticker's price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceProjection {
    aggregate: PriceAggregate,
    last_trade_id: u64,
    offset: u64,
}

impl PriceProjection {
    /// A projection that has seen no match.
    pub fn new(ticker: Ticker, config: PricingConfig) -> Self {
        PriceProjection {
            aggregate: PriceAggregate::new(ticker, config),
            last_trade_id: 0,
            offset: 0,
        }
    }

    /// The ticker.
    pub fn ticker(&self) -> Ticker {
        self.aggregate.ticker()
    }

    /// The price aggregate (latest update and history).
    pub fn aggregate(&self) -> &PriceAggregate {
        &self.aggregate
    }

    /// Trade id of the last applied match.
    pub fn last_trade_id(&self) -> u64 {
        self.last_trade_id
    }

    /// Journal offset after which the tag stream resumes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Applies a match that came by pub-sub.
    pub fn apply_published(&mut self, m: &Match) -> Applied {
        self.apply(m)
    }

    /// Applies a match read from the journal at `offset`, and records the offset.
    pub fn apply_journaled(&mut self, m: &Match, offset: u64) -> Applied {
        self.offset = self.offset.max(offset);
        self.apply(m)
    }

    /// Records a journal offset whose event is not a match of this ticker.
    pub fn skip_journaled(&mut self, offset: u64) {
        self.offset = self.offset.max(offset);
    }

    fn apply(&mut self, m: &Match) -> Applied {
        if m.ticker != self.ticker() || m.trade_id <= self.last_trade_id {
            return Applied::Duplicate;
        }
        if m.trade_id != self.last_trade_id + 1 {
            return Applied::Ahead {
                expected: self.last_trade_id + 1,
            };
        }
        self.last_trade_id = m.trade_id;
        match self.aggregate.apply(m) {
            Some(update) => Applied::Updated(update),
            None => Applied::Duplicate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{OrderId, Price, Side, Timestamp};

    fn m(trade_id: u64, ticks: i64) -> Match {
        Match {
            ticker: Ticker::new("MSFT").unwrap(),
            trade_id,
            buy_order_id: OrderId::from_u128(1),
            sell_order_id: OrderId::from_u128(2),
            price: Price::from_ticks(ticks),
            quantity: 10,
            aggressor: Side::Bid,
            at: Timestamp(trade_id as i64),
        }
    }

    fn projection() -> PriceProjection {
        PriceProjection::new(Ticker::new("MSFT").unwrap(), PricingConfig::default())
    }

    #[test]
    fn contiguous_matches_apply_once_by_either_path() {
        let mut p = projection();
        assert!(matches!(
            p.apply_published(&m(1, 10_000)),
            Applied::Updated(_)
        ));
        assert_eq!(p.apply_journaled(&m(1, 10_000), 5), Applied::Duplicate);
        assert!(matches!(
            p.apply_journaled(&m(2, 20_000), 9),
            Applied::Updated(_)
        ));
        assert_eq!(p.apply_published(&m(2, 20_000)), Applied::Duplicate);
        assert_eq!(p.last_trade_id(), 2);
        assert_eq!(p.offset(), 9);
        assert_eq!(p.aggregate().matches(), 2);
    }

    #[test]
    fn a_lost_publish_is_filled_in_from_the_journal_in_order() {
        let mut p = projection();
        p.apply_published(&m(1, 10_000));
        // Trade 2 was never published; trade 3 arrives first and waits.
        assert_eq!(
            p.apply_published(&m(3, 30_000)),
            Applied::Ahead { expected: 2 }
        );
        assert_eq!(p.aggregate().matches(), 1);
        // The journal stream brings 1 (dup), 2 and 3, in order.
        assert_eq!(p.apply_journaled(&m(1, 10_000), 1), Applied::Duplicate);
        assert!(matches!(
            p.apply_journaled(&m(2, 20_000), 2),
            Applied::Updated(_)
        ));
        assert!(matches!(
            p.apply_journaled(&m(3, 30_000), 3),
            Applied::Updated(_)
        ));
        let prices: Vec<f64> = p.aggregate().history().map(|u| u.price).collect();
        let alpha = 2.0 / 31.0;
        let second = alpha * 2.0 + (1.0 - alpha) * 1.0;
        let third = alpha * 3.0 + (1.0 - alpha) * second;
        assert_eq!(prices, vec![1.0, second, third]);
    }

    #[test]
    fn the_checkpoint_round_trips() {
        let mut p = projection();
        p.apply_journaled(&m(1, 10_000), 4);
        let json = serde_json::to_string(&p).unwrap();
        let back: PriceProjection = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}
