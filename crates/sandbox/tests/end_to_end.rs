//! The whole system in one process, as real cluster nodes over loopback TCP with the SQLite
//! journal: traders' orders become matches in the journal and prices on a WebSocket and in
//! the API; every confirmed order is in the journal; traders cancel their oldest resting
//! orders, so books stay small; and after a restart on the same data the books hold exactly
//! what they held before.

mod support;
#[path = "../../../tests/support/web.rs"]
mod web;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use sandbox::Sandbox;
use support::{config, eventually, journal_book, live_book, tickers};
use tokio_tungstenite::tungstenite::Message;
use traders::TradersPacing;
use web::get;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_become_prices_and_the_books_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(config(
        dir.path(),
        Some(TradersPacing::Load {
            orders_per_second: 200,
        }),
    ))
    .await
    .unwrap();

    // Prices reach a WebSocket client of the dashboard.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", sb.http))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let price = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no price on the WebSocket"
        );
        if let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(500), ws.next()).await
        {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "price" {
                break v;
            }
        }
    };
    assert!(price["price"].as_f64().unwrap() > 0.0, "{price}");

    // The API has a history for MSFT.
    eventually(30, "two points of MSFT history", || async {
        let (status, body) = get(sb.http, "/api/prices/MSFT").await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["points"].as_array()?.len() >= 2).then_some(())
    })
    .await;

    // Stop placing orders and let every order be confirmed.
    let traders = sb.traders.as_ref().unwrap();
    traders.stop_trading();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let stats = loop {
        let s = traders.stats(false).await.unwrap();
        if s.pending == 0 {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders stay unconfirmed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(stats.confirmed >= 50, "{stats:?}");
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert!(
        stats.cancelled > 0,
        "traders cancel their oldest orders: {stats:?}"
    );
    let confirmed = traders.confirmed_ids().await.unwrap();
    assert_eq!(confirmed.len() as u64, stats.confirmed);

    // Every confirmed order is in the journal, the journal has matches, and the live books
    // are exactly what the journal describes.
    let mut placed = HashSet::new();
    let mut before = Vec::new();
    for t in tickers() {
        // The desk's last cancels may still be on their way; the book settles within moments.
        let (book, ids) = eventually(10, "the live book to match its journal", || async {
            let (book, ids) = journal_book(&sb, t).await;
            (live_book(&sb, t).await == book.snapshot()).then_some((book, ids))
        })
        .await;
        assert!(book.trades() > 0, "no match for {t}");
        // At most 10 of the desk's orders rest per book, plus those confirmed after the last
        // cancel was decided (a cancel goes with the next batch).
        assert!(book.len() <= 20, "{t}: {} orders rest", book.len());
        placed.extend(ids);
        before.push((t, book.snapshot()));
    }
    let missing: Vec<_> = confirmed.iter().filter(|id| !placed.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "confirmed but not journaled: {missing:?}"
    );

    sb.shutdown().await;

    // Restart on the same data, without traders: the books recover exactly.
    let sb = Sandbox::start(config(dir.path(), None)).await.unwrap();
    for (t, snapshot) in &before {
        assert_eq!(&live_book(&sb, *t).await, snapshot, "{t} after restart");
    }
    // And pricing comes back with its history (from its checkpoint and the journal).
    eventually(30, "MSFT history after the restart", || async {
        let (_, body) = get(sb.http, "/api/prices/MSFT").await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (!v["points"].as_array()?.is_empty()).then_some(())
    })
    .await;
    sb.shutdown().await;
}
