//! Pricing math: exponentially weighted moving averages (EMWA) of trade price and volume,
//! with a bounded history of the updates they produced.
//!
//! As in the workshop, alpha = 2 / (N + 1) with N = 30 samples by default, and the first match
//! seeds both series (price = its price, volume = its quantity). Averages are `f64` in currency
//! units: they are derived figures for display, never used for matching.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::event::Match;
use crate::money::Timestamp;
use crate::ticker::Ticker;

/// An exponentially weighted moving average: `next = alpha * sample + (1 - alpha) * current`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Emwa {
    alpha: f64,
    value: f64,
}

impl Emwa {
    /// An average over `samples` samples (alpha = 2 / (samples + 1)) seeded with `first`.
    ///
    /// # Panics
    /// When `samples` is zero, which has no meaning.
    pub fn seeded(samples: u32, first: f64) -> Self {
        assert!(samples > 0, "an EMWA needs at least one sample");
        Emwa {
            alpha: 2.0 / (f64::from(samples) + 1.0),
            value: first,
        }
    }

    /// The smoothing factor.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The current average.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Folds one sample in and returns the new average.
    pub fn next(&mut self, sample: f64) -> f64 {
        self.value = self.alpha * sample + (1.0 - self.alpha) * self.value;
        self.value
    }
}

/// How a [`PriceAggregate`] smooths and how much history it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingConfig {
    /// N in alpha = 2 / (N + 1).
    pub samples: u32,
    /// Price updates kept in the history.
    pub history: usize,
}

impl Default for PricingConfig {
    fn default() -> Self {
        PricingConfig {
            samples: 30,
            history: 30,
        }
    }
}

/// One point of a ticker's price and volume series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriceUpdate {
    /// The instrument.
    pub ticker: Ticker,
    /// EMWA of trade prices, in currency units.
    pub price: f64,
    /// EMWA of trade quantities.
    pub volume: f64,
    /// Time of the match that produced this update.
    pub at: Timestamp,
    /// Matches folded in so far, this one included.
    pub matches: u64,
}

/// The running price and volume of one ticker, fed with its matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceAggregate {
    ticker: Ticker,
    config: PricingConfig,
    price: Option<Emwa>,
    volume: Option<Emwa>,
    matches: u64,
    history: VecDeque<PriceUpdate>,
}

impl PriceAggregate {
    /// An aggregate that has seen no match yet.
    pub fn new(ticker: Ticker, config: PricingConfig) -> Self {
        PriceAggregate {
            ticker,
            config,
            price: None,
            volume: None,
            matches: 0,
            history: VecDeque::with_capacity(config.history),
        }
    }

    /// The ticker.
    pub fn ticker(&self) -> Ticker {
        self.ticker
    }

    /// Folds in one match of this ticker and returns the update it produced, or `None` when
    /// the match is for another ticker.
    pub fn apply(&mut self, m: &Match) -> Option<PriceUpdate> {
        if m.ticker != self.ticker {
            return None;
        }
        let (price, volume) = (m.price.as_f64(), m.quantity as f64);
        let price = match &mut self.price {
            Some(avg) => avg.next(price),
            slot @ None => slot
                .insert(Emwa::seeded(self.config.samples, price))
                .value(),
        };
        let volume = match &mut self.volume {
            Some(avg) => avg.next(volume),
            slot @ None => slot
                .insert(Emwa::seeded(self.config.samples, volume))
                .value(),
        };
        self.matches += 1;
        let update = PriceUpdate {
            ticker: self.ticker,
            price,
            volume,
            at: m.at,
            matches: self.matches,
        };
        if self.config.history > 0 {
            if self.history.len() == self.config.history {
                self.history.pop_front();
            }
            self.history.push_back(update);
        }
        Some(update)
    }

    /// The latest update, once a match was seen.
    pub fn current(&self) -> Option<PriceUpdate> {
        self.history.back().copied().or_else(|| {
            Some(PriceUpdate {
                ticker: self.ticker,
                price: self.price?.value(),
                volume: self.volume?.value(),
                at: Timestamp::default(),
                matches: self.matches,
            })
        })
    }

    /// The kept updates, oldest first.
    pub fn history(&self) -> impl ExactSizeIterator<Item = &PriceUpdate> {
        self.history.iter()
    }

    /// Matches folded in so far.
    pub fn matches(&self) -> u64 {
        self.matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Price;
    use crate::order::{OrderId, Side};

    fn m(ticker: Ticker, ticks: i64, qty: u64, at: i64) -> Match {
        Match {
            ticker,
            trade_id: 1,
            buy_order_id: OrderId::from_u128(1),
            sell_order_id: OrderId::from_u128(2),
            price: Price::from_ticks(ticks),
            quantity: qty,
            aggressor: Side::Bid,
            at: Timestamp(at),
        }
    }

    #[test]
    fn alpha_is_two_over_n_plus_one() {
        assert_eq!(Emwa::seeded(30, 0.0).alpha(), 2.0 / 31.0);
        assert_eq!(Emwa::seeded(1, 0.0).alpha(), 1.0);
    }

    #[test]
    fn emwa_by_hand() {
        // N = 3: alpha = 0.5. Seed 10, then 20 -> 15, then 5 -> 10.
        let mut e = Emwa::seeded(3, 10.0);
        assert_eq!(e.next(20.0), 15.0);
        assert_eq!(e.next(5.0), 10.0);
    }

    #[test]
    fn first_match_seeds_price_and_volume_and_later_ones_smooth() {
        let t = Ticker::new("MSFT").unwrap();
        let mut agg = PriceAggregate::new(
            t,
            PricingConfig {
                samples: 3,
                history: 2,
            },
        );
        assert_eq!(agg.current(), None);
        let u1 = agg.apply(&m(t, 100_000, 10, 1)).unwrap();
        assert_eq!((u1.price, u1.volume, u1.matches), (10.0, 10.0, 1));
        let u2 = agg.apply(&m(t, 200_000, 30, 2)).unwrap();
        assert_eq!((u2.price, u2.volume), (15.0, 20.0));
        let u3 = agg.apply(&m(t, 50_000, 0, 3)).unwrap();
        assert_eq!((u3.price, u3.volume), (10.0, 10.0));
        // history keeps the last two updates, oldest first
        let h: Vec<_> = agg.history().map(|u| u.at.0).collect();
        assert_eq!(h, vec![2, 3]);
        assert_eq!(agg.current(), Some(u3));
        assert_eq!(agg.matches(), 3);
    }

    #[test]
    fn matches_of_other_tickers_are_ignored() {
        let t = Ticker::new("MSFT").unwrap();
        let other = Ticker::new("AAPL").unwrap();
        let mut agg = PriceAggregate::new(t, PricingConfig::default());
        assert_eq!(agg.apply(&m(other, 1, 1, 1)), None);
        assert_eq!(agg.matches(), 0);
    }

    #[test]
    fn the_default_window_is_thirty() {
        let t = Ticker::new("MSFT").unwrap();
        let mut agg = PriceAggregate::new(t, PricingConfig::default());
        for i in 0..100 {
            agg.apply(&m(t, 10_000 + i, 1, i));
        }
        assert_eq!(agg.history().len(), 30);
        assert_eq!(agg.history().next().unwrap().at, Timestamp(70));
    }
}
