//! The blotter: an append-only file of every order this node's desk saw confirmed, so that a
//! check outside the cluster can hold it against the journal, even for a traders process
//! that was SIGTERMed, killed or removed by a scale-down.
//!
//! It owns that file and the one thread that writes it. With `BLOTTER_DIR` (`--blotter-dir`)
//! set, the desk hands each order to [`Blotter::record`] when it takes the order's *first*
//! confirmation (where `DeskStats::confirmed` is counted; a book confirms only what is durable
//! in its journal). `record` only puts the line on a channel; the `blotter` thread writes and
//! flushes, so the desk never waits for the disk.
//!
//! - **One file per process incarnation**, named `<host>-<port>-<uid>.jsonl` from the node's
//!   own unique address ([`file_name`]: advertised host, cluster port, the random uid drawn at
//!   every start), so restarts and replicas with the same environment never share a file.
//!   Characters other than `A-Z a-z 0-9 . _ -` in the host become `_`.
//! - **One JSON object per line** ([`BlotterLine`]), for example
//!   `{"order_id":"5f0c2b9e-8a4f-4c53-9d51-1b7b0e6c2a10","ticker":"MSFT","side":"Bid","confirmed_at_ms":1767225600123}`:
//!   the order id in the journal's own form (the hyphenated UUID string that `OrderPlaced`
//!   stores), the ticker and side as the journal writes them, and the Unix time in
//!   milliseconds at which the desk took the confirmation.
//! - **Flushed** to the operating system at most [`FLUSH_INTERVAL`] after a line was recorded
//!   (each write holds whole lines, so a killed process leaves out at most the lines of its
//!   last interval; a reader should still skip an unterminated last line), and flushed, synced and
//!   closed by [`Blotter::close`], which `crate::start` runs in the node's coordinated
//!   shutdown (phase `before-actor-system-terminate`, after the transport has stopped, once
//!   the desk has taken every confirmation already in its mailbox).
//! - **A write error** is logged once, at error level with the file's path, and the blotter
//!   stops writing (later lines are counted as lost in [`BlotterSummary`]); the node keeps
//!   trading.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use domain::{OrderId, Side, Ticker};
use runtime::address::UniqueAddress;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, info};

/// Longest time a recorded line waits in memory before it is written to the file.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Bytes gathered before a write even inside the interval (under load).
const MAX_BUFFERED: usize = 256 * 1024;

/// One confirmed order: one line of the blotter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlotterLine {
    /// The order's id, as the journal stores it (hyphenated UUID).
    pub order_id: OrderId,
    /// Its ticker (`"MSFT"`).
    pub ticker: Ticker,
    /// `"Bid"` or `"Ask"`.
    pub side: Side,
    /// When the desk took the confirmation, milliseconds since the Unix epoch.
    pub confirmed_at_ms: u64,
}

impl BlotterLine {
    /// The line of an order confirmed now.
    pub fn now(order_id: OrderId, ticker: Ticker, side: Side) -> Self {
        BlotterLine {
            order_id,
            ticker,
            side,
            confirmed_at_ms: unix_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a blotter did, reported when it closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlotterSummary {
    /// Lines written to the file.
    pub written: u64,
    /// Lines not written because of a write error.
    pub lost: u64,
    /// The first write error, if any.
    pub error: Option<String>,
}

enum Command {
    Line(BlotterLine),
    Close(oneshot::Sender<BlotterSummary>),
}

/// Handle to a node's blotter; cheap to clone. The file is closed by [`Blotter::close`], or
/// when every handle is gone.
#[derive(Clone, Debug)]
pub struct Blotter {
    tx: mpsc::Sender<Command>,
    path: PathBuf,
    closed: Arc<AtomicBool>,
}

/// The blotter file name of a node incarnation: `<host>-<port>-<uid>.jsonl`.
pub fn file_name(me: &UniqueAddress) -> String {
    let host: String = me
        .address
        .host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}-{}-{}.jsonl", me.address.port, me.uid)
}

impl Blotter {
    /// Creates `dir` if needed, opens this incarnation's file in it ([`file_name`]) and
    /// starts the writer thread.
    pub fn create(dir: &Path, me: &UniqueAddress) -> io::Result<Blotter> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file_name(me));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (tx, rx) = mpsc::channel();
        let closed = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            file: Some(file),
            path: path.clone(),
            closed: closed.clone(),
            buf: Vec::with_capacity(16 * 1024),
            pending: 0,
            summary: BlotterSummary::default(),
        };
        std::thread::Builder::new()
            .name("blotter".into())
            .spawn(move || writer.run(rx))?;
        info!(path = %path.display(), "blotter opened");
        Ok(Blotter { tx, path, closed })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once the file is closed (nothing more will be written to it).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queues a line; never blocks. After [`Blotter::close`] the line is dropped.
    pub fn record(&self, line: BlotterLine) {
        let _ = self.tx.send(Command::Line(line));
    }

    /// Writes every line recorded before this call, syncs and closes the file, and stops the
    /// writer; `None` when it had already stopped.
    pub async fn close(&self) -> Option<BlotterSummary> {
        let (done, summary) = oneshot::channel();
        self.tx.send(Command::Close(done)).ok()?;
        summary.await.ok()
    }
}

/// The writer thread's state.
struct Writer {
    /// `None` once closed or after a write error.
    file: Option<File>,
    path: PathBuf,
    closed: Arc<AtomicBool>,
    buf: Vec<u8>,
    /// Lines in `buf`.
    pending: u64,
    summary: BlotterSummary,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        // When the oldest line not yet written must be written.
        let mut due: Option<Instant> = None;
        loop {
            let cmd = match due {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match cmd {
                Ok(Command::Line(line)) => {
                    self.push(&line);
                    let at = *due.get_or_insert_with(|| Instant::now() + FLUSH_INTERVAL);
                    if self.buf.len() >= MAX_BUFFERED || Instant::now() >= at {
                        self.flush();
                        due = None;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.flush();
                    due = None;
                }
                Ok(Command::Close(done)) => {
                    let summary = self.close();
                    let _ = done.send(summary);
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.close();
                    return;
                }
            }
        }
    }

    fn push(&mut self, line: &BlotterLine) {
        if self.file.is_none() {
            self.summary.lost += 1;
            return;
        }
        serde_json::to_writer(&mut self.buf, line).expect("a blotter line serializes");
        self.buf.push(b'\n');
        self.pending += 1;
    }

    /// Writes what is buffered; a failure is logged once and stops the blotter.
    fn flush(&mut self) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if self.buf.is_empty() {
            return;
        }
        match file.write_all(&self.buf) {
            Ok(()) => self.summary.written += self.pending,
            Err(e) => self.fail(e),
        }
        self.buf.clear();
        self.pending = 0;
    }

    fn fail(&mut self, e: io::Error) {
        error!(
            path = %self.path.display(),
            error = %e,
            "cannot write the blotter: no more orders go to it; the node keeps trading"
        );
        self.summary.lost += self.pending;
        self.summary.error = Some(e.to_string());
        self.file = None;
    }

    fn close(&mut self) -> BlotterSummary {
        self.flush();
        if let Some(file) = self.file.take()
            && let Err(e) = file.sync_data()
        {
            self.fail(e);
        }
        self.closed.store(true, Ordering::Release);
        info!(
            path = %self.path.display(),
            written = self.summary.written,
            lost = self.summary.lost,
            "blotter closed"
        );
        std::mem::take(&mut self.summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::address::NodeAddress;

    fn me(host: &str, port: u16, uid: u64) -> UniqueAddress {
        UniqueAddress {
            address: NodeAddress::new("AkkaTrader", host, port),
            uid,
        }
    }

    fn line(n: u128, side: Side) -> BlotterLine {
        BlotterLine {
            order_id: OrderId::from_u128(n),
            ticker: Ticker::new("MSFT").unwrap(),
            side,
            confirmed_at_ms: 1_767_225_600_000 + n as u64,
        }
    }

    #[test]
    fn file_names_differ_per_incarnation_and_are_safe() {
        assert_eq!(
            file_name(&me("172.18.0.5", 5055, 42)),
            "172.18.0.5-5055-42.jsonl"
        );
        assert_ne!(
            file_name(&me("traders", 5055, 1)),
            file_name(&me("traders", 5055, 3))
        );
        assert_eq!(file_name(&me("fe80::1", 1, 7)), "fe80__1-1-7.jsonl");
    }

    #[test]
    fn a_line_is_the_journals_json_forms() {
        let l = line(1, Side::Ask);
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"order_id":"{}","ticker":"MSFT","side":"Ask","confirmed_at_ms":1767225600001}}"#,
                l.order_id
            )
        );
        // The id in the form an `OrderPlaced` event of the journal holds it.
        let placed = serde_json::to_value(domain::BookEvent::OrderPlaced(domain::Order::ask(
            l.order_id,
            l.ticker,
            domain::Price::from_ticks(100),
            1,
            domain::Timestamp(0),
        )))
        .unwrap();
        assert_eq!(
            placed["OrderPlaced"]["id"],
            serde_json::to_value(l).unwrap()["order_id"]
        );
        assert_eq!(serde_json::from_str::<BlotterLine>(&text).unwrap(), l);
    }

    #[tokio::test]
    async fn lines_are_written_within_the_interval_and_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let b = Blotter::create(dir.path(), &me("127.0.0.1", 5055, 9)).unwrap();
        assert_eq!(b.path(), dir.path().join("127.0.0.1-5055-9.jsonl"));
        let lines: Vec<_> = (1..=3).map(|n| line(n, Side::Bid)).collect();
        for l in &lines {
            b.record(*l);
        }
        tokio::time::sleep(FLUSH_INTERVAL * 2).await;
        let text = std::fs::read_to_string(b.path()).unwrap();
        let read: Vec<BlotterLine> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(read, lines);

        // Close writes what was recorded just before, even inside the interval.
        b.record(line(4, Side::Ask));
        assert!(!b.is_closed());
        let summary = b.close().await.unwrap();
        assert!(b.is_closed());
        assert_eq!(summary.written, 4);
        assert_eq!(summary.lost, 0);
        assert_eq!(
            std::fs::read_to_string(b.path()).unwrap().lines().count(),
            4
        );
        // Closed: later lines go nowhere, and closing again says so.
        b.record(line(5, Side::Ask));
        assert_eq!(b.close().await, None);
        assert_eq!(
            std::fs::read_to_string(b.path()).unwrap().lines().count(),
            4
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_write_error_stops_the_blotter_not_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let id = me("127.0.0.1", 5055, 11);
        // Every write to /dev/full fails with "no space left on device".
        std::os::unix::fs::symlink("/dev/full", dir.path().join(file_name(&id))).unwrap();
        let b = Blotter::create(dir.path(), &id).unwrap();
        b.record(line(1, Side::Bid));
        tokio::time::sleep(FLUSH_INTERVAL * 2).await;
        for n in 2..=5 {
            b.record(line(n, Side::Bid));
        }
        let summary = b.close().await.unwrap();
        assert_eq!(summary.written, 0);
        assert_eq!(summary.lost, 5);
        assert!(summary.error.is_some());
    }
}
