//! The price hub: the latest price and a bounded history per ticker, and the fan-out of new
//! points to every connected browser.
//!
//! Each update is serialized once and shared by all WebSocket sessions (a `broadcast` channel
//! of ref-counted frames), so a hundred browsers cost one serialization, not a hundred. A
//! session that falls more than the channel's capacity behind gets a fresh snapshot instead of
//! the missed points. Updates are idempotent: a point whose match count is not newer than the
//! ticker's latest is ignored, so duplicate or replayed publishes (a cluster client failing over,
//! a pricing node republishing its current price) never draw the same point twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use domain::{PriceUpdate, Ticker};
use tokio::sync::broadcast;

use crate::protocol::{PricePoint, ServerMessage};

/// Frames a slow browser may fall behind before it is resynchronised with a snapshot.
const FANOUT_CAPACITY: usize = 1024;

/// Why the hub refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The ticker is not one this dashboard shows.
    #[error("unknown ticker {0}")]
    UnknownTicker(Ticker),
}

/// Prices per ticker and the live fan-out. Shared as `Arc<PriceHub>`.
#[derive(Debug)]
pub struct PriceHub {
    tickers: Vec<Ticker>,
    history: usize,
    series: RwLock<HashMap<Ticker, VecDeque<PricePoint>>>,
    fanout: broadcast::Sender<Utf8Bytes>,
    clients: AtomicUsize,
    ready: AtomicBool,
}

impl PriceHub {
    /// A hub showing `tickers`, keeping the last `history` points of each.
    pub fn new(tickers: Vec<Ticker>, history: usize) -> Arc<Self> {
        let series = tickers
            .iter()
            .map(|&t| (t, VecDeque::with_capacity(history)))
            .collect();
        Arc::new(PriceHub {
            tickers,
            history: history.max(1),
            series: RwLock::new(series),
            fanout: broadcast::channel(FANOUT_CAPACITY).0,
            clients: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
        })
    }

    /// The tickers shown, in display order.
    pub fn tickers(&self) -> &[Ticker] {
        &self.tickers
    }

    /// Records an update and pushes it to every browser. Returns `Ok(false)` when the update
    /// is not newer than what the hub has (it is then ignored).
    pub fn publish(&self, update: &PriceUpdate) -> Result<bool, HubError> {
        let point = PricePoint::from(update);
        {
            let mut series = self.series.write().expect("hub lock poisoned");
            let points = series
                .get_mut(&update.ticker)
                .ok_or(HubError::UnknownTicker(update.ticker))?;
            if points
                .back()
                .is_some_and(|last| last.matches >= point.matches)
            {
                return Ok(false);
            }
            if points.len() == self.history {
                points.pop_front();
            }
            points.push_back(point);
        }
        let frame = ServerMessage::Price {
            ticker: update.ticker,
            point,
        };
        // No receivers is fine: nobody is watching yet.
        let _ = self.fanout.send(encode(&frame));
        Ok(true)
    }

    /// The kept points of one ticker, oldest first.
    pub fn history(&self, ticker: Ticker) -> Result<Vec<PricePoint>, HubError> {
        let series = self.series.read().expect("hub lock poisoned");
        series
            .get(&ticker)
            .map(|p| p.iter().copied().collect())
            .ok_or(HubError::UnknownTicker(ticker))
    }

    /// The latest point of one ticker, if it has any.
    pub fn latest(&self, ticker: Ticker) -> Result<Option<PricePoint>, HubError> {
        let series = self.series.read().expect("hub lock poisoned");
        series
            .get(&ticker)
            .map(|p| p.back().copied())
            .ok_or(HubError::UnknownTicker(ticker))
    }

    /// Every ticker's history, as sent to a browser when it connects.
    pub fn snapshot(&self) -> ServerMessage {
        let series = self.series.read().expect("hub lock poisoned");
        let tickers: BTreeMap<_, _> = series
            .iter()
            .map(|(&t, p)| (t, p.iter().copied().collect()))
            .collect();
        ServerMessage::Snapshot { tickers }
    }

    /// The snapshot, serialized.
    pub fn snapshot_frame(&self) -> Utf8Bytes {
        encode(&self.snapshot())
    }

    /// A receiver of every frame published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Utf8Bytes> {
        self.fanout.subscribe()
    }

    /// Counts a connected browser until the guard drops.
    pub fn client(self: &Arc<Self>) -> ClientGuard {
        self.clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard(Arc::clone(self))
    }

    /// Browsers connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Marks whether the feed is connected (what `/ready` reports).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the feed is connected.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Keeps a browser counted in [`PriceHub::clients`] while it lives.
#[derive(Debug)]
pub struct ClientGuard(Arc<PriceHub>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn encode(message: &ServerMessage) -> Utf8Bytes {
    serde_json::to_string(message)
        .expect("server messages always serialize")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Timestamp;

    fn update(t: &str, price: f64, matches: u64) -> PriceUpdate {
        PriceUpdate {
            ticker: Ticker::new(t).unwrap(),
            price,
            volume: 10.0,
            at: Timestamp(matches as i64),
            matches,
        }
    }

    #[test]
    fn keeps_a_bounded_history_and_ignores_stale_points() {
        let msft = Ticker::new("MSFT").unwrap();
        let hub = PriceHub::new(vec![msft], 2);
        assert_eq!(hub.publish(&update("MSFT", 1.0, 1)), Ok(true));
        assert_eq!(hub.publish(&update("MSFT", 2.0, 2)), Ok(true));
        assert_eq!(hub.publish(&update("MSFT", 9.0, 2)), Ok(false));
        assert_eq!(hub.publish(&update("MSFT", 3.0, 3)), Ok(true));
        let prices: Vec<_> = hub.history(msft).unwrap().iter().map(|p| p.price).collect();
        assert_eq!(prices, vec![2.0, 3.0]);
        assert_eq!(hub.latest(msft).unwrap().unwrap().matches, 3);
    }

    #[test]
    fn unknown_tickers_are_refused() {
        let hub = PriceHub::new(vec![Ticker::new("MSFT").unwrap()], 2);
        assert_eq!(
            hub.publish(&update("AAPL", 1.0, 1)),
            Err(HubError::UnknownTicker(Ticker::new("AAPL").unwrap()))
        );
    }

    #[test]
    fn subscribers_get_each_new_point_once() {
        let hub = PriceHub::new(vec![Ticker::new("MSFT").unwrap()], 10);
        let mut rx = hub.subscribe();
        hub.publish(&update("MSFT", 1.5, 1)).unwrap();
        hub.publish(&update("MSFT", 1.5, 1)).unwrap();
        let frame = rx.try_recv().unwrap();
        let msg: ServerMessage = serde_json::from_str(frame.as_str()).unwrap();
        assert!(matches!(msg, ServerMessage::Price { point, .. } if point.price == 1.5));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn clients_are_counted_while_connected() {
        let hub = PriceHub::new(vec![], 1);
        let a = hub.client();
        let b = hub.client();
        assert_eq!(hub.clients(), 2);
        drop(a);
        drop(b);
        assert_eq!(hub.clients(), 0);
    }
}
