//! The blotter with the real desk: a traders node trades against a stand-in `orderBook` region
//! on a second node (it "journals" every order it is sent and confirms each one twice, so the
//! desk also sees late duplicates), over loopback TCP. The blotter must hold exactly the
//! orders the desk counted as confirmed, one line each, written within the flush interval;
//! the node's graceful leave closes it, also when the leave comes in the middle of trading;
//! a second incarnation at the same host and port writes a file of its own.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_sharding::{EntityContext, EntityFactory, EntityMsg, ShardRegion, ShardingSettings};
use domain::protocol::{ORDER_BOOK, OrderBookCommand, OrderBookReply, TRADE_PROCESSOR_ROLE};
use domain::{OrderId, PlaceOutcome, Ticker};
use host::ServiceNode;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::membership::MemberStatus;
use runtime::{NodeAddress, NodeConfig, Remoting};
use traders::blotter::{BlotterLine, FLUSH_INTERVAL};
use traders::desk::OrderBookMsg;
use traders::{Traders, TradersConfig, TradersPacing};

/// Every order id the stand-in books were sent: what a journal would hold.
type Journal = Arc<Mutex<HashSet<OrderId>>>;

struct FakeBooks {
    remoting: Remoting,
    journal: Journal,
}

struct FakeBook;

impl Actor for FakeBook {
    type Msg = EntityMsg<OrderBookMsg>;
    type State = (Remoting, Journal);
    type Arguments = (Remoting, Journal);

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        (remoting, journal): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (orders, reply_to, batch) = match msg.message {
            OrderBookCommand::Place { order, reply_to } => (vec![order], reply_to, false),
            OrderBookCommand::Batch {
                orders, reply_to, ..
            } => (orders, reply_to, true),
            _ => return Ok(()),
        };
        let replies: Vec<OrderBookReply> = orders
            .iter()
            .map(|o| {
                journal.lock().unwrap().insert(o.id);
                OrderBookReply::Confirmed {
                    ticker: o.ticker,
                    order_id: o.id,
                    outcome: PlaceOutcome::Accepted {
                        filled: 0,
                        resting: 0,
                    },
                }
            })
            .collect();
        let reply = if batch {
            OrderBookReply::Batch(replies)
        } else {
            replies.into_iter().next().expect("one order")
        };
        // Twice: the second is a duplicate the desk must not write again.
        for _ in 0..2 {
            let _ = remoting.try_tell(&reply_to, &reply, None);
        }
        Ok(())
    }
}

impl EntityFactory for FakeBooks {
    type Message = OrderBookMsg;
    type Entity = FakeBook;

    fn create(&self, _ctx: &EntityContext) -> (FakeBook, (Remoting, Journal)) {
        (FakeBook, (self.remoting.clone(), self.journal.clone()))
    }
}

fn config(seeds: Vec<NodeAddress>, roles: &[&str]) -> NodeConfig {
    let mut cfg = NodeConfig::local(seeds, roles, Duration::from_millis(100));
    cfg.management = None;
    cfg.shutdown_phase_timeout = Duration::from_secs(3);
    cfg
}

async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
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
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The blotter's lines, checking each is one JSON object with exactly the documented keys.
fn read_blotter(path: &Path) -> Vec<BlotterLine> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "a partial line");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["order_id", "ticker", "side", "confirmed_at_ms"]),
                "{l}"
            );
            serde_json::from_str(l).unwrap()
        })
        .collect()
}

/// Waits until at least `n` orders are confirmed.
async fn confirmed(traders: &Traders, n: u64) {
    eventually(60, "confirmed orders", || async {
        traders.stats(false).await.filter(|s| s.confirmed >= n)
    })
    .await;
}

/// Trades until at least `n` orders are confirmed, stops trading, and waits until nothing is
/// pending; returns the ids the desk saw confirmed.
async fn trade(traders: &Traders, n: u64) -> Vec<OrderId> {
    confirmed(traders, n).await;
    traders.stop_trading();
    let stats = eventually(30, "no order pending", || async {
        traders.stats(false).await.filter(|s| s.pending == 0)
    })
    .await;
    let ids = traders.confirmed_ids().await.unwrap();
    assert_eq!(ids.len() as u64, stats.confirmed);
    assert!(stats.duplicates >= stats.confirmed, "{stats:?}");
    ids
}

/// The blotter holds exactly `ids`, one line each, of `tickers`, confirmed after `since_ms`,
/// and every one is in the journal.
fn check(lines: &[BlotterLine], ids: &[OrderId], tickers: &[Ticker], since_ms: u64, j: &Journal) {
    assert_eq!(lines.len(), ids.len(), "one line per confirmed order");
    let written: HashSet<OrderId> = lines.iter().map(|l| l.order_id).collect();
    assert_eq!(written.len(), lines.len(), "an order written twice");
    assert_eq!(written, ids.iter().copied().collect::<HashSet<_>>());
    let journal = j.lock().unwrap();
    for l in lines {
        assert!(journal.contains(&l.order_id), "{l:?} is not in the journal");
        assert!(tickers.contains(&l.ticker), "{l:?}");
        assert!(
            l.confirmed_at_ms >= since_ms && l.confirmed_at_ms <= now_ms(),
            "{l:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blotter_holds_exactly_the_confirmed_orders_per_incarnation() {
    let since_ms = now_ms();
    let dir = tempfile::tempdir().unwrap();
    let tickers = vec![Ticker::new("MSFT").unwrap(), Ticker::new("AAPL").unwrap()];
    let journal: Journal = Arc::default();

    let books = ServiceNode::start(config(vec![], &[TRADE_PROCESSOR_ROLE]))
        .await
        .unwrap();
    let _region = ShardRegion::start_on_node(
        ShardingSettings::new(ORDER_BOOK).with_role(TRADE_PROCESSOR_ROLE),
        FakeBooks {
            remoting: books.node.remoting().clone(),
            journal: journal.clone(),
        },
        &books.node,
    )
    .await
    .unwrap();
    let seed = books.node.address().address.clone();
    let traders_config = TradersConfig {
        tickers: tickers.clone(),
        traders_per_side: 1..=1,
        pacing: TradersPacing::Load {
            orders_per_second: 200,
        },
        retry_after: Duration::from_millis(500),
        seed: Some(7),
        blotter_dir: Some(dir.path().join("blotter")),
        ..TradersConfig::default()
    };

    // First incarnation.
    let node = ServiceNode::start(config(vec![seed.clone()], &traders::ROLES))
        .await
        .unwrap();
    let me = node.node.address().clone();
    let traders = traders::start(&node, &traders_config).await.unwrap();
    let first = traders.blotter().unwrap().path().to_path_buf();
    assert_eq!(
        first,
        dir.path().join("blotter").join(format!(
            "{}-{}-{}.jsonl",
            me.address.host, me.address.port, me.uid
        ))
    );
    let ids = trade(&traders, 100).await;
    // No shutdown yet: what the desk saw confirmed is in the file within the flush interval.
    tokio::time::sleep(FLUSH_INTERVAL * 2).await;
    check(&read_blotter(&first), &ids, &tickers, since_ms, &journal);

    // A graceful leave closes the file; nothing is added or lost.
    assert!(!traders.blotter().unwrap().is_closed());
    node.node.leave();
    tokio::time::timeout(Duration::from_secs(30), node.node.terminated())
        .await
        .expect("the traders node leaves");
    assert!(traders.blotter().unwrap().is_closed());
    check(&read_blotter(&first), &ids, &tickers, since_ms, &journal);
    traders.stop();

    // Second incarnation at the same host and port: a new uid, so a new file.
    let mut again = config(vec![seed], &traders::ROLES);
    again.remoting.port = me.address.port;
    let node2 = ServiceNode::start(again).await.unwrap();
    let me2 = node2.node.address().clone();
    assert_eq!(me2.address, me.address);
    assert_ne!(me2.uid, me.uid);
    assert!(
        node2
            .node
            .cluster()
            .wait_until(
                |s| s.self_status == Some(MemberStatus::Up),
                Duration::from_secs(30),
            )
            .await,
        "the second incarnation joins"
    );
    // (Another seed: the same one would place the same order ids again.)
    let traders2 = traders::start(
        &node2,
        &TradersConfig {
            seed: Some(8),
            ..traders_config.clone()
        },
    )
    .await
    .unwrap();
    let second = traders2.blotter().unwrap().path().to_path_buf();
    assert_ne!(second, first);
    // This one leaves while trading (as on SIGTERM): confirmations stop with the transport,
    // and the closed file holds every order the desk saw confirmed up to then.
    confirmed(&traders2, 50).await;
    node2.node.leave();
    tokio::time::timeout(Duration::from_secs(30), node2.node.terminated())
        .await
        .expect("the second traders node leaves");
    assert!(traders2.blotter().unwrap().is_closed());
    let ids2 = traders2.confirmed_ids().await.unwrap();
    check(&read_blotter(&second), &ids2, &tickers, since_ms, &journal);
    // Each file holds only its own incarnation's orders.
    check(&read_blotter(&first), &ids, &tickers, since_ms, &journal);
    assert!(ids.iter().all(|id| !ids2.contains(id)));
    let mut files: Vec<_> = std::fs::read_dir(dir.path().join("blotter"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(files, expected);
    traders2.stop();
    books.node.leave();
}
