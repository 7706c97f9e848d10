//! The JSON the dashboard receives over `/ws` and from `/api/prices/{ticker}`.
//!
//! Server to browser, one JSON object per text frame:
//! - `{"type":"snapshot","tickers":{"MSFT":[point, ...], ...}}` on connect, and again whenever
//!   a slow browser fell behind the stream (it then redraws from the snapshot);
//! - `{"type":"price","ticker":"MSFT", ...point}` for every new update.
//!
//! A point is `{"price":12.34,"volume":42.0,"at":1700000000000000,"matches":17}`: EMWA price in
//! currency units, EMWA volume in shares, the time of the match in microseconds since the epoch,
//! and the number of matches folded in so far. Browsers send nothing the server acts on.

use std::collections::BTreeMap;

use domain::{PriceUpdate, Ticker};
use serde::{Deserialize, Serialize};

/// One point of a ticker's price and volume series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PricePoint {
    /// EMWA of trade prices, currency units.
    pub price: f64,
    /// EMWA of trade quantities, shares.
    pub volume: f64,
    /// Time of the match, microseconds since the Unix epoch.
    pub at: i64,
    /// Matches folded in so far.
    pub matches: u64,
}

impl From<&PriceUpdate> for PricePoint {
    fn from(u: &PriceUpdate) -> Self {
        PricePoint {
            price: u.price,
            volume: u.volume,
            at: u.at.micros(),
            matches: u.matches,
        }
    }
}

/// A message pushed to browsers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// Every ticker's kept history, oldest point first.
    Snapshot {
        /// History per ticker.
        tickers: BTreeMap<Ticker, Vec<PricePoint>>,
    },
    /// One new point of one ticker.
    Price {
        /// The ticker.
        ticker: Ticker,
        /// The point.
        #[serde(flatten)]
        point: PricePoint,
    },
}
