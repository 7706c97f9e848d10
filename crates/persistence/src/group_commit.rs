//! Group commit: many entities' writes coalesced into one journal call.
//!
//! This module owns [`GroupCommitWriter`]. Each entity hands it an [`AtomicWrite`] and awaits the
//! result; one background task takes every write that is queued, up to a batch limit, and stores
//! them with a single [`Journal::write_messages`] call. While that call is in flight new writes
//! queue up and form the next batch, so under load the number of store round trips per event
//! drops with the number of busy entities, and an idle system still writes each event at once.
//!
//! With [`GroupCommitWriter::spawn_with_metrics`] every journal call is also recorded in the
//! node's metrics: its duration (`db_client_operation_duration_seconds{db_operation_name=
//! "journal.write"}`) and its number of events (`persistence_journal_write_batch_size`), once
//! per batch, never per event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use telemetry::instruments::JournalMetrics;
use tokio::sync::{mpsc, oneshot};

use crate::error::{PersistenceError, Result};
use crate::repr::AtomicWrite;
use crate::traits::Journal;

/// Settings of a [`GroupCommitWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Most events in one journal call (a single larger atomic write still goes alone).
    pub max_batch_events: usize,
    /// Writes that may wait in the queue; further writers wait for room (backpressure).
    pub queue_capacity: usize,
    /// While several writers share the journal (the last call stored more than one write),
    /// the shortest time between the starts of two journal calls: writes that arrive sooner
    /// wait for the rest of it and go together. Each call rewrites the store's hot index
    /// pages whatever its size, so pacing calls under load cuts what is written per event;
    /// a lone writer's writes are never held back. Zero disables it.
    pub min_interval: std::time::Duration,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            max_batch_events: 4096,
            queue_capacity: 16_384,
            min_interval: std::time::Duration::from_millis(4),
        }
    }
}

struct Request {
    write: AtomicWrite,
    reply: oneshot::Sender<Result<()>>,
}

/// Counters of a [`GroupCommitWriter`].
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    /// Journal calls made.
    pub batches: AtomicU64,
    /// Atomic writes stored or refused.
    pub writes: AtomicU64,
    /// Events in those writes.
    pub events: AtomicU64,
}

/// A handle to the group-commit task. Clones share the task; it ends when the last handle is
/// dropped and the queue is drained.
#[derive(Clone)]
pub struct GroupCommitWriter {
    tx: mpsc::Sender<Request>,
    stats: Arc<GroupCommitStats>,
}

impl GroupCommitWriter {
    /// Starts the batching task on the current tokio runtime.
    pub fn spawn(journal: Arc<dyn Journal>, config: GroupCommitConfig) -> Self {
        Self::spawn_with_metrics(journal, config, None)
    }

    /// Like [`GroupCommitWriter::spawn`], recording each journal call in `metrics`.
    pub fn spawn_with_metrics(
        journal: Arc<dyn Journal>,
        config: GroupCommitConfig,
        metrics: Option<JournalMetrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(GroupCommitStats::default());
        tokio::spawn(run(journal, rx, config, stats.clone(), metrics));
        GroupCommitWriter { tx, stats }
    }

    /// Stores one atomic write, batched with others; resolves when it is durable or failed.
    pub async fn write(&self, write: AtomicWrite) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { write, reply })
            .await
            .map_err(|_| PersistenceError::Unavailable("group commit writer has stopped".into()))?;
        rx.await.map_err(|_| {
            PersistenceError::Unavailable("group commit writer stopped before answering".into())
        })?
    }

    /// Counters since the start.
    pub fn stats(&self) -> &GroupCommitStats {
        &self.stats
    }
}

async fn run(
    journal: Arc<dyn Journal>,
    mut rx: mpsc::Receiver<Request>,
    config: GroupCommitConfig,
    stats: Arc<GroupCommitStats>,
    metrics: Option<JournalMetrics>,
) {
    let max_events = config.max_batch_events.max(1);
    let mut carry: Option<Request> = None;
    // When the last journal call started, if it stored more than one write.
    let mut shared_since: Option<tokio::time::Instant> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        if let Some(started) = shared_since {
            tokio::time::sleep_until(started + config.min_interval).await;
        }
        let start = tokio::time::Instant::now();
        let mut events = first.write.len();
        let mut batch = vec![first];
        while events < max_events {
            match rx.try_recv() {
                Ok(r) if events + r.write.len() > max_events => {
                    carry = Some(r);
                    break;
                }
                Ok(r) => {
                    events += r.write.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|r| (r.write, r.reply)).unzip();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        stats.events.fetch_add(events as u64, Ordering::Relaxed);
        let n = writes.len();
        shared_since = (n > 1 && !config.min_interval.is_zero()).then_some(start);
        let started = Instant::now();
        let written = journal.write_messages(writes).await;
        if let Some(m) = &metrics {
            m.record_write(started.elapsed(), events);
        }
        match written {
            Ok(results) if results.len() == n => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Ok(results) => {
                let e = PersistenceError::Backend(format!(
                    "journal answered {} results for {n} writes",
                    results.len()
                ));
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryStore;
    use crate::repr::{Payload, PersistentRepr};

    fn write(pid: &str, seq: u64) -> AtomicWrite {
        AtomicWrite::new(vec![PersistentRepr {
            persistence_id: pid.into(),
            sequence_nr: seq,
            manifest: "T".into(),
            schema_version: 1,
            tags: vec![],
            payload: Payload::from_json("1").unwrap(),
            timestamp: 0,
            writer_uuid: "w".into(),
        }])
        .unwrap()
    }

    /// A journal with a round trip of 2 ms, like a store on the network or one that syncs.
    struct Slow(InMemoryStore);

    #[async_trait::async_trait]
    impl Journal for Slow {
        async fn write_messages(&self, writes: Vec<AtomicWrite>) -> Result<Vec<Result<()>>> {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            self.0.write_messages(writes).await
        }
        async fn replay_messages(
            &self,
            p: &str,
            f: u64,
            t: u64,
            m: u64,
        ) -> Result<Vec<PersistentRepr>> {
            self.0.replay_messages(p, f, t, m).await
        }
        async fn highest_sequence_nr(&self, p: &str, f: u64) -> Result<u64> {
            self.0.highest_sequence_nr(p, f).await
        }
        async fn delete_messages_to(&self, p: &str, t: u64) -> Result<()> {
            self.0.delete_messages_to(p, t).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_writers_share_few_batches_and_each_gets_its_own_result() {
        let store = Arc::new(InMemoryStore::new());
        let w = GroupCommitWriter::spawn(
            Arc::new(Slow((*store).clone())),
            GroupCommitConfig::default(),
        );
        // Entity "dup" already has sequence nr 1, so its write must be rejected alone.
        w.write(write("dup", 1)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let pid = if i == 0 {
                    "dup".to_string()
                } else {
                    format!("e{i}")
                };
                for seq in 1..=20 {
                    let r = w.write(write(&pid, seq)).await;
                    if pid == "dup" && seq == 1 {
                        assert!(r.unwrap_err().is_rejected());
                    } else {
                        r.unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for i in 1..200 {
            assert_eq!(
                store
                    .highest_sequence_nr(&format!("e{i}"), 0)
                    .await
                    .unwrap(),
                20
            );
        }
        let batches = w.stats().batches.load(Ordering::Relaxed);
        let writes = w.stats().writes.load(Ordering::Relaxed);
        assert_eq!(writes, 1 + 200 * 20);
        assert!(
            batches < writes / 4,
            "expected batching, got {batches} batches for {writes} writes"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_journal_call_is_recorded_once_with_its_event_count() {
        let metrics = telemetry::Metrics::standalone("persistence-test");
        let w = GroupCommitWriter::spawn_with_metrics(
            Arc::new(Slow(InMemoryStore::new())),
            GroupCommitConfig::default(),
            Some(JournalMetrics::new(metrics.meter(), "inmem")),
        );
        let mut tasks = Vec::new();
        for i in 0..50 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                w.write(write(&format!("p{i}"), 1)).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let text = metrics.render().unwrap();
        let value = |series: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {series} in {text}"))
        };
        let batches = w.stats().batches.load(Ordering::Relaxed) as f64;
        let size = r#"persistence_journal_write_batch_size_"#;
        assert_eq!(
            value(&format!(r#"{size}sum{{db_system_name="inmem"}}"#)),
            50.0
        );
        assert_eq!(
            value(&format!(r#"{size}count{{db_system_name="inmem"}}"#)),
            batches
        );
        let took = value(
            r#"db_client_operation_duration_seconds_sum{db_operation_name="journal.write",db_system_name="inmem"}"#,
        );
        // Each call sleeps 2 ms in the slow journal.
        assert!(took >= 0.002 * batches, "{took} s for {batches} calls");
    }

    #[tokio::test]
    async fn store_failure_reaches_every_writer_of_the_batch() {
        let store = Arc::new(InMemoryStore::new());
        let w = GroupCommitWriter::spawn(store.clone(), GroupCommitConfig::default());
        store.set_unavailable(true);
        let err = w.write(write("p", 1)).await.unwrap_err();
        assert!(err.is_unavailable());
        store.set_unavailable(false);
        w.write(write("p", 1)).await.unwrap();
    }

    #[tokio::test]
    async fn batch_never_exceeds_the_event_limit() {
        let store = Arc::new(InMemoryStore::new());
        let w = GroupCommitWriter::spawn(
            store.clone(),
            GroupCommitConfig {
                max_batch_events: 3,
                queue_capacity: 100,
                ..Default::default()
            },
        );
        let mut tasks = Vec::new();
        for i in 0..30 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                w.write(write(&format!("p{i}"), 1)).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let batches = w.stats().batches.load(Ordering::Relaxed);
        assert!(
            batches >= 10,
            "30 events with at most 3 per batch need 10 batches, got {batches}"
        );
    }

    fn paced(interval_ms: u64) -> GroupCommitConfig {
        GroupCommitConfig {
            min_interval: std::time::Duration::from_millis(interval_ms),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_writer_is_never_held_back() {
        let w = GroupCommitWriter::spawn(Arc::new(InMemoryStore::new()), paced(1000));
        let start = tokio::time::Instant::now();
        for seq in 1..=10 {
            w.write(write("p", seq)).await.unwrap();
        }
        assert!(start.elapsed() < std::time::Duration::from_millis(1000));
        assert_eq!(w.stats().batches.load(Ordering::Relaxed), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn shared_writes_are_paced_and_grouped() {
        let w = GroupCommitWriter::spawn(Arc::new(InMemoryStore::new()), paced(1000));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 1..=3 {
                    w.write(write(&format!("p{i}"), seq)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Four writers, three writes each: every call after a shared one waits out the
        // interval, so the twelve writes take three calls and two intervals.
        assert_eq!(w.stats().batches.load(Ordering::Relaxed), 3);
        assert!(start.elapsed() >= std::time::Duration::from_millis(2000));
    }
}
