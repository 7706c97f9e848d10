//! Test support: a pricing-web server on a free port, fed by the test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use domain::{PriceUpdate, Ticker, Timestamp};
use pricing_web::PriceHub;
use tokio::net::TcpListener;

/// A running server, its hub and the metrics its `/metrics` renders.
pub struct Server {
    pub addr: SocketAddr,
    pub hub: Arc<PriceHub>,
    pub metrics: telemetry::Metrics,
    _instruments: pricing_web::metrics::WebInstruments,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn ticker(s: &str) -> Ticker {
    Ticker::new(s).unwrap()
}

pub async fn start(tickers: &[&str]) -> Server {
    let hub = PriceHub::new(tickers.iter().map(|t| ticker(t)).collect(), 100);
    hub.set_ready(true);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let served = Arc::clone(&hub);
    let metrics = telemetry::Metrics::standalone("pricing-web");
    let instruments = pricing_web::metrics::register(&metrics, &hub, None);
    let m = metrics.clone();
    tokio::spawn(async move {
        pricing_web::http::serve(listener, served, Some(m), async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        addr,
        hub,
        metrics,
        _instruments: instruments,
        stop: Some(tx),
    }
}

pub fn update(t: &str, price: f64, volume: f64, matches: u64) -> PriceUpdate {
    PriceUpdate {
        ticker: ticker(t),
        price,
        volume,
        at: Timestamp(1_700_000_000_000_000 + matches as i64 * 100_000),
        matches,
    }
}
