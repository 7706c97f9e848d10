//! Ticker symbols and the per-ticker price ranges that traders draw prices from.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::money::Price;

/// The workshop's 28 ticker symbols, in the workshop's order.
pub const DEFAULT_TICKERS: [&str; 28] = [
    "MSFT", "AMZN", "GOOG", "TSLA", "TEAM", "AMD", "WDC", "STX", "UBER", "SNAP", "FB", "NET", "DT",
    "ESTC", "FSLY", "UPWK", "INTC", "HPE", "BB", "QCOM", "AAPL", "DDOG", "NEWR", "RACE", "SAVE",
    "AAL", "UAL", "DAL",
];

/// Longest symbol a [`Ticker`] holds.
pub const MAX_TICKER_LEN: usize = 8;

/// A stock symbol such as `MSFT`: 1 to 8 ASCII upper-case letters, digits or dots.
///
/// Stored inline (no heap), so it is `Copy` and cheap to put in every event.
/// Serialized as a plain string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticker {
    len: u8,
    bytes: [u8; MAX_TICKER_LEN],
}

/// Why a string is not a valid [`Ticker`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TickerError {
    /// The symbol was empty.
    #[error("a ticker symbol cannot be empty")]
    Empty,
    /// The symbol was longer than [`MAX_TICKER_LEN`].
    #[error("ticker symbol {0:?} is longer than {MAX_TICKER_LEN} characters")]
    TooLong(String),
    /// The symbol held something other than `A-Z`, `0-9` or `.`.
    #[error("ticker symbol {0:?} may only hold upper-case letters, digits and dots")]
    InvalidCharacter(String),
}

impl Ticker {
    /// Parses a symbol; lower-case letters are refused rather than silently upper-cased, so that
    /// `msft` in a URL gets a clear error instead of addressing a different entity id.
    pub fn new(symbol: &str) -> Result<Self, TickerError> {
        if symbol.is_empty() {
            return Err(TickerError::Empty);
        }
        if symbol.len() > MAX_TICKER_LEN {
            return Err(TickerError::TooLong(symbol.to_owned()));
        }
        if !symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.')
        {
            return Err(TickerError::InvalidCharacter(symbol.to_owned()));
        }
        let mut bytes = [0u8; MAX_TICKER_LEN];
        bytes[..symbol.len()].copy_from_slice(symbol.as_bytes());
        Ok(Ticker {
            len: symbol.len() as u8,
            bytes,
        })
    }

    /// The symbol as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored (checked in `new`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("ticker is ASCII")
    }

    /// The workshop's 28 default tickers.
    pub fn defaults() -> Vec<Ticker> {
        DEFAULT_TICKERS
            .iter()
            .map(|s| Ticker::new(s).expect("default tickers are valid"))
            .collect()
    }

    /// The tickers of an optional comma-separated list, or the workshop's 28 when there is
    /// none: what every service's `--tickers` flag means.
    pub fn list_or_defaults(list: Option<&str>) -> Result<Vec<Ticker>, TickerError> {
        match list {
            Some(list) => Ticker::parse_list(list),
            None => Ok(Ticker::defaults()),
        }
    }

    /// Parses a comma-separated list such as `MSFT,AAPL` (spaces around symbols are ignored).
    pub fn parse_list(list: &str) -> Result<Vec<Ticker>, TickerError> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Ticker::new)
            .collect()
    }
}

impl FromStr for Ticker {
    type Err = TickerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ticker::new(s)
    }
}

impl fmt::Display for Ticker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ticker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticker({})", self.as_str())
    }
}

impl Serialize for Ticker {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Ticker {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ticker::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The band of prices a ticker's traders bid and ask inside, inclusive at both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRange {
    /// Lowest price a trader will quote.
    pub min: Price,
    /// Highest price a trader will quote.
    pub max: Price,
}

impl PriceRange {
    /// Draws a range the workshop's way: a whole-unit maximum in `20..45` and a whole-unit
    /// minimum in `10..15`. Pass a seeded generator for reproducible ranges.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let max = rng.random_range(20..45);
        let min = rng.random_range(10..15);
        PriceRange {
            min: Price::from_units(min),
            max: Price::from_units(max),
        }
    }

    /// A price drawn uniformly from the range, rounded to whole cents.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Price {
        let cent = Price::TICKS_PER_UNIT / 100;
        let lo = self.min.ticks() / cent;
        let hi = self.max.ticks() / cent;
        Price::from_ticks(rng.random_range(lo..=hi) * cent)
    }

    /// True when `price` lies inside the range.
    pub fn contains(&self, price: Price) -> bool {
        self.min <= price && price <= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn the_workshop_tickers_are_all_valid_and_distinct() {
        let all = Ticker::defaults();
        assert_eq!(all.len(), 28);
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), 28);
        assert!(all.contains(&Ticker::new("AAPL").unwrap()));
    }

    #[test]
    fn bad_symbols_are_refused_with_a_reason() {
        assert_eq!(Ticker::new(""), Err(TickerError::Empty));
        assert!(matches!(
            Ticker::new("TOOLONGSYM"),
            Err(TickerError::TooLong(_))
        ));
        assert!(matches!(
            Ticker::new("msft"),
            Err(TickerError::InvalidCharacter(_))
        ));
        assert!(matches!(
            Ticker::new("MS FT"),
            Err(TickerError::InvalidCharacter(_))
        ));
    }

    #[test]
    fn tickers_serialize_as_plain_strings() {
        let t = Ticker::new("MSFT").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"MSFT\"");
        assert_eq!(serde_json::from_str::<Ticker>("\"MSFT\"").unwrap(), t);
        assert!(serde_json::from_str::<Ticker>("\"ms\"").is_err());
    }

    #[test]
    fn lists_parse() {
        let l = Ticker::parse_list(" MSFT, AAPL ,").unwrap();
        assert_eq!(
            l,
            vec![Ticker::new("MSFT").unwrap(), Ticker::new("AAPL").unwrap()]
        );
    }

    #[test]
    fn price_ranges_follow_the_workshop_bounds_and_are_reproducible() {
        let mut a = StdRng::seed_from_u64(7);
        let mut b = StdRng::seed_from_u64(7);
        let mut prices = StdRng::seed_from_u64(8);
        for _ in 0..1000 {
            let r = PriceRange::random(&mut a);
            assert_eq!(r, PriceRange::random(&mut b));
            assert!(r.max >= Price::from_units(20) && r.max < Price::from_units(45));
            assert!(r.min >= Price::from_units(10) && r.min < Price::from_units(15));
            let p = r.sample(&mut prices);
            assert!(r.contains(p), "{p} outside {r:?}");
            assert_eq!(p.ticks() % 100, 0, "prices are whole cents");
        }
    }
}
