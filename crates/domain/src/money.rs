//! Fixed-point money, integer quantities and timestamps.
//!
//! The order book never touches floating point: a [`Price`] is an integer count of ticks, one
//! tick being 1/10,000 of a currency unit, so `12.3456` is `123456` ticks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A price in ticks of 1/10,000 of a currency unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Price(i64);

impl Price {
    /// Ticks in one currency unit.
    pub const TICKS_PER_UNIT: i64 = 10_000;

    /// A price of `ticks` ticks.
    pub const fn from_ticks(ticks: i64) -> Self {
        Price(ticks)
    }

    /// A price of whole currency units.
    pub const fn from_units(units: i64) -> Self {
        Price(units * Self::TICKS_PER_UNIT)
    }

    /// The price in ticks.
    pub const fn ticks(self) -> i64 {
        self.0
    }

    /// The price in currency units, for display and for the pricing math (never for matching).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::TICKS_PER_UNIT as f64
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let unit = Self::TICKS_PER_UNIT as u64;
        write!(f, "{sign}{}.{:04}", abs / unit, abs % unit)
    }
}

impl fmt::Debug for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Price({self})")
    }
}

/// A number of shares.
pub type Quantity = u64;

/// Microseconds since the Unix epoch. The domain never reads a clock: callers pass time in.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default, Debug,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Microseconds since the Unix epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0 / 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_display_with_four_decimals() {
        assert_eq!(Price::from_ticks(123_456).to_string(), "12.3456");
        assert_eq!(Price::from_units(20).to_string(), "20.0000");
        assert_eq!(Price::from_ticks(-5).to_string(), "-0.0005");
        assert_eq!(Price::from_ticks(15_000).as_f64(), 1.5);
    }

    #[test]
    fn prices_serialize_as_tick_integers() {
        assert_eq!(serde_json::to_string(&Price::from_ticks(42)).unwrap(), "42");
    }
}
