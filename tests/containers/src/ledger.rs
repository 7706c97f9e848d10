//! The invariants the suite checks after every fault, from outside the cluster: the journal in
//! the MongoDB container (read with the project's own journal code and domain types) against
//! the traders' blotters (every order a trader saw confirmed, one JSON line each) and the
//! pricing checkpoints.
//!
//! - every order a trader saw confirmed is in its book's journal;
//! - no order id is placed twice in a book;
//! - trade ids are 1..N per book, with no gap, and every journaled event applies;
//! - pricing's checkpoint of each ticker reaches the journal's last match (within a bound);
//! - no trade-processor logged a write rejected for a taken sequence number.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use domain::{BookEvent, OrderBook, Ticker};
use host::Stores;
use persistence::SnapshotSelectionCriteria;
use pricing::projection::PriceProjection;

/// What one book's journal holds.
#[derive(Default, Debug)]
pub struct BookLedger {
    /// Order ids placed, as strings.
    pub placed: HashSet<String>,
    /// The last trade id (0 before the first match).
    pub last_trade: u64,
    /// Events in the journal.
    pub events: u64,
}

/// The journal of every book.
pub async fn read_books(stores: &Stores) -> Result<BTreeMap<Ticker, BookLedger>> {
    let mut books = BTreeMap::new();
    for ticker in Ticker::defaults() {
        let pid = trade_processor::entity::persistence_id(ticker.as_str());
        let events = stores
            .journal
            .replay_messages(&pid, 1, u64::MAX >> 1, u64::MAX >> 1)
            .await
            .with_context(|| format!("read the journal of {pid}"))?;
        let mut book = OrderBook::new(ticker);
        let mut ledger = BookLedger::default();
        for repr in events {
            let event: BookEvent = repr
                .payload
                .deserialize()
                .with_context(|| format!("{pid}: event {} decodes", repr.sequence_nr))?;
            match &event {
                BookEvent::OrderPlaced(o) if !ledger.placed.insert(o.id.to_string()) => {
                    bail!("{pid}: order {} placed twice", o.id);
                }
                BookEvent::Match(m) => {
                    if m.trade_id != ledger.last_trade + 1 {
                        bail!(
                            "{pid}: trade id {} follows {} (a gap or a repeat)",
                            m.trade_id,
                            ledger.last_trade
                        );
                    }
                    ledger.last_trade = m.trade_id;
                }
                _ => {}
            }
            book.apply(&event).map_err(|e| {
                anyhow::anyhow!("{pid}: event {} does not apply: {e}", repr.sequence_nr)
            })?;
            ledger.events += 1;
        }
        books.insert(ticker, ledger);
    }
    Ok(books)
}

/// A book's highest sequence number in the journal: one cheap query, so it can be polled
/// however long the journal grows (the invariants read the journal whole, once per check).
pub async fn book_seq(stores: &Stores, ticker: Ticker) -> Result<u64> {
    let pid = trade_processor::entity::persistence_id(ticker.as_str());
    Ok(stores.journal.highest_sequence_nr(&pid, 0).await?)
}

/// Every order in the blotters under `dir`: (ticker, order id). A line cut short by a kill
/// can only be the last of its file; it is skipped.
pub fn read_blotters(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut confirmed = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => {
                    let field = |k: &str| v[k].as_str().map(str::to_owned);
                    match (field("ticker"), field("order_id")) {
                        (Some(t), Some(id)) => confirmed.push((t, id)),
                        _ => bail!(
                            "{}: line {} lacks ticker/order_id: {line}",
                            path.display(),
                            i + 1
                        ),
                    }
                }
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => bail!(
                    "{}: line {} is not JSON ({e}): {line}",
                    path.display(),
                    i + 1
                ),
            }
        }
    }
    Ok(confirmed)
}

/// The last trade id pricing checkpointed for `ticker` (0 if none yet).
pub async fn pricing_checkpoint(stores: &Stores, ticker: Ticker) -> Result<u64> {
    let pid = pricing::aggregator::persistence_id(ticker);
    match stores
        .snapshots
        .load_snapshot(&pid, SnapshotSelectionCriteria::latest())
        .await?
    {
        Some(s) => Ok(s.data.decode::<PriceProjection>()?.last_trade_id()),
        None => Ok(0),
    }
}

/// What one check found.
#[derive(Debug)]
pub struct Verdict {
    /// Orders confirmed to traders, all found in the journal.
    pub confirmed: usize,
    /// Orders placed in all books.
    pub placed: usize,
    /// Matches in all books.
    pub trades: u64,
}

/// Checks every invariant; `logs` are the trade-processors' logs.
pub async fn check(stores: &Stores, blotters: &Path, logs: &[String]) -> Result<Verdict> {
    // Blotters first: whatever they hold was confirmed before the journal is read.
    let confirmed = read_blotters(blotters)?;
    let books = read_books(stores).await?;
    let mut missing = Vec::new();
    for (ticker, id) in &confirmed {
        let known = Ticker::new(ticker)
            .ok()
            .and_then(|t| books.get(&t))
            .is_some_and(|b| b.placed.contains(id));
        if !known {
            missing.push(format!("{ticker}/{id}"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} confirmed orders are not in the journal, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    for log in logs {
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("write rejected for persistence id"))
        {
            bail!("a trade-processor had a write rejected: {line}");
        }
    }
    // Pricing reaches the journal's last match of every ticker (it keeps trading meanwhile).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (ticker, book) in &books {
        loop {
            let at = pricing_checkpoint(stores, *ticker).await?;
            if at >= book.last_trade {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "pricing of {ticker} checkpointed trade {at}, the journal has {}",
                    book.last_trade
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(Verdict {
        confirmed: confirmed.len(),
        placed: books.values().map(|b| b.placed.len()).sum(),
        trades: books.values().map(|b| b.last_trade).sum(),
    })
}
