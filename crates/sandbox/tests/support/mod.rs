//! Test support: a sandbox on a temporary data folder, and ways to look into it.

#![allow(dead_code)]

use std::time::Duration;

#[path = "../../../../tests/support/books.rs"]
mod books;

use domain::{BookSnapshot, OrderBook, OrderId, Ticker};
use sandbox::{Sandbox, SandboxConfig};

pub fn tickers() -> Vec<Ticker> {
    Ticker::parse_list("MSFT,AAPL").unwrap()
}

pub fn config(dir: &std::path::Path, pacing: Option<traders::TradersPacing>) -> SandboxConfig {
    SandboxConfig {
        data_dir: dir.to_path_buf(),
        tickers: tickers(),
        pacing,
        publish_interval: Duration::from_millis(100),
        http_port: 0,
        snapshots: trade_processor::SnapshotPolicy::default(),
        // Small, so that the traders cancel orders during a test and books stay bounded.
        max_resting: 10,
        sync_full: true,
        telemetry: None,
    }
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks the live order book of `ticker` for its whole state, through sharding.
pub async fn live_book(sb: &Sandbox, ticker: Ticker) -> BookSnapshot {
    books::ask_book(&sb.trade_processors[0].node, &sb.books, ticker, 30)
        .await
        .unwrap_or_else(|| panic!("no answer from the {ticker} book"))
}

/// Rebuilds a ticker's book from the journal alone, and lists the orders placed in it.
pub async fn journal_book(sb: &Sandbox, ticker: Ticker) -> (OrderBook, Vec<OrderId>) {
    books::journal_book(&sb.stores, ticker).await
}
