//! Test support: a sandbox on a temporary data folder, and ways to look into it.

#![allow(dead_code)]

use std::time::Duration;

use domain::protocol::{OrderBookCommand, OrderBookReply};
use domain::{BookEvent, BookSnapshot, OrderBook, OrderId, Ticker};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::RemoteRef;
use sandbox::{Sandbox, SandboxConfig};
use tokio::sync::mpsc;

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

struct Inbox;

impl Actor for Inbox {
    type Msg = OrderBookReply;
    type State = mpsc::UnboundedSender<OrderBookReply>;
    type Arguments = mpsc::UnboundedSender<OrderBookReply>;

    async fn pre_start(
        &self,
        _me: ActorRef<OrderBookReply>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _me: ActorRef<OrderBookReply>,
        msg: OrderBookReply,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(msg);
        Ok(())
    }
}

/// Asks the live order book of `ticker` for its whole state, through sharding.
pub async fn live_book(sb: &Sandbox, ticker: Ticker) -> BookSnapshot {
    let node = &sb.trade_processors[0].node;
    let name = format!("test-inbox-{ticker}");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (inbox, _) = Actor::spawn(None, Inbox, tx).await.unwrap();
    node.remoting().register(&name, inbox.clone());
    let reply_to = RemoteRef::new(node.address().address.clone(), name.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer from the {ticker} book"
        );
        let cmd = OrderBookCommand::GetBook {
            ticker,
            reply_to: reply_to.clone(),
        };
        let _ = sb.books.tell(ticker.to_string(), cmd);
        if let Ok(Some(OrderBookReply::Book(b))) =
            tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
        {
            break b;
        }
    };
    node.remoting().unregister(&name);
    inbox.stop(None);
    answer
}

/// Rebuilds a ticker's book from the journal alone, and lists the orders placed in it.
pub async fn journal_book(sb: &Sandbox, ticker: Ticker) -> (OrderBook, Vec<OrderId>) {
    let pid = format!("orderBook-{ticker}");
    let events = sb
        .stores
        .journal
        .replay_messages(&pid, 1, u64::MAX >> 1, u64::MAX >> 1)
        .await
        .unwrap();
    let mut book = OrderBook::new(ticker);
    let mut placed = Vec::new();
    for repr in events {
        let e: BookEvent = repr.payload.deserialize().unwrap();
        if let BookEvent::OrderPlaced(o) = e {
            placed.push(o.id);
        }
        book.apply(&e).unwrap();
    }
    (book, placed)
}
