//! Test support shared by the crates that look into order books (included with `#[path]`):
//! a book's live state asked through sharding, and the same book rebuilt from the journal
//! alone, so that a test can compare the two.

#![allow(dead_code)]

use std::time::Duration;

use cluster_sharding::ShardRegion;
use domain::protocol::{OrderBookCommand, OrderBookReply};
use domain::{BookEvent, BookSnapshot, OrderBook, OrderId, Ticker};
use host::Stores;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::RemoteRef;
use runtime::node::Node;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Asks the live book of `ticker` for its whole state through `books` (a region or proxy on
/// `node`, where the answer is received), asking again every 2 s; `None` after `secs`.
pub async fn ask_book(
    node: &Node,
    books: &ShardRegion<trade_processor::OrderBookMsg>,
    ticker: Ticker,
    secs: u64,
) -> Option<BookSnapshot> {
    let remoting = node.remoting();
    let name = format!("test-inbox-{ticker}");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (inbox, _) = Actor::spawn(None, Inbox, tx).await.unwrap();
    remoting.register(&name, inbox.clone());
    let reply_to = RemoteRef::new(node.address().address.clone(), name.clone());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut answer = None;
    while answer.is_none() && Instant::now() < deadline {
        let cmd = OrderBookCommand::GetBook {
            ticker,
            reply_to: reply_to.clone(),
        };
        let _ = books.tell(ticker.to_string(), cmd);
        if let Ok(Some(OrderBookReply::Book(b))) =
            tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
        {
            answer = Some(b);
        }
    }
    remoting.unregister(&name);
    inbox.stop(None);
    answer
}

/// Rebuilds a ticker's book from the journal alone, and lists the orders placed in it.
pub async fn journal_book(stores: &Stores, ticker: Ticker) -> (OrderBook, Vec<OrderId>) {
    let pid = trade_processor::entity::persistence_id(&ticker.to_string());
    let events = stores
        .journal
        .replay_messages(&pid, 1, u64::MAX >> 1, u64::MAX >> 1)
        .await
        .expect("read the journal");
    let mut book = OrderBook::new(ticker);
    let mut placed = Vec::new();
    for repr in events {
        let e: BookEvent = repr.payload.deserialize().expect("decode a book event");
        if let BookEvent::OrderPlaced(o) = e {
            placed.push(o.id);
        }
        book.apply(&e)
            .unwrap_or_else(|err| panic!("{pid}: journaled event does not apply: {err}"));
    }
    (book, placed)
}

/// Receives the books' answers.
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
