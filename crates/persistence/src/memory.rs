//! The in-memory backend: journal, snapshot store and events-by-tag query in one process.
//!
//! This module owns [`InMemoryStore`], meant for unit tests of code that uses the persistence
//! traits. It keeps everything in a mutex-protected map; the tag ordering is assigned under that
//! mutex at commit, so offsets become visible in order and a reader can never skip an event. It
//! can also pretend to be down ([`InMemoryStore::set_unavailable`]) so tests can exercise retry,
//! circuit breaking and entity failure without a real server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{PersistenceError, Result};
use crate::repr::{
    AtomicWrite, EventEnvelope, Offset, PersistentRepr, SelectedSnapshot, SnapshotData,
    SnapshotMetadata, SnapshotSelectionCriteria,
};
use crate::traits::{EventsByTagQuery, Journal, SnapshotStore};

#[derive(Default)]
struct State {
    /// persistence id -> sequence nr -> (offset, event)
    events: HashMap<String, BTreeMap<u64, (u64, PersistentRepr)>>,
    /// highest sequence nr ever written per persistence id (survives deletion)
    highest: HashMap<String, u64>,
    /// tag -> offsets, ascending, pointing into `by_offset`
    tags: HashMap<String, Vec<u64>>,
    /// offset -> (persistence id, sequence nr)
    by_offset: BTreeMap<u64, (String, u64)>,
    next_offset: u64,
    snapshots: HashMap<String, BTreeMap<u64, (SnapshotMetadata, SnapshotData)>>,
}

/// A journal, snapshot store and query kept in memory. Clones share the same data, so a clone
/// behaves like a second connection to the same store.
#[derive(Clone)]
pub struct InMemoryStore {
    state: Arc<Mutex<State>>,
    unavailable: Arc<AtomicBool>,
    commits: Arc<watch::Sender<u64>>,
    refresh_interval: Duration,
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryStore {
            state: Arc::new(Mutex::new(State::default())),
            unavailable: Arc::new(AtomicBool::new(false)),
            commits: Arc::new(watch::Sender::new(0)),
            refresh_interval: Duration::from_millis(50),
        }
    }

    /// Makes every operation fail with [`PersistenceError::Unavailable`] (`true`) or work again
    /// (`false`), to test how callers handle a store that is down.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(PersistenceError::Unavailable(
                "in-memory store is switched off".into(),
            ));
        }
        self.state
            .lock()
            .map_err(|_| PersistenceError::Backend("in-memory store lock poisoned".into()))
    }
}

#[async_trait]
impl Journal for InMemoryStore {
    async fn write_messages(&self, writes: Vec<AtomicWrite>) -> Result<Vec<Result<()>>> {
        let mut st = self.lock()?;
        let mut results = Vec::with_capacity(writes.len());
        let mut committed = false;
        for w in writes {
            let pid = w.persistence_id().to_owned();
            let taken = st.events.get(&pid).and_then(|m| {
                m.range(w.lowest_sequence_nr()..=w.highest_sequence_nr())
                    .next()
                    .map(|(s, _)| *s)
            });
            if let Some(seq) = taken {
                results.push(Err(
                    w.rejected(format!("sequence nr {seq} is already taken"))
                ));
                continue;
            }
            let hi = w.highest_sequence_nr();
            for e in w.into_events() {
                st.next_offset += 1;
                let off = st.next_offset;
                for t in &e.tags {
                    st.tags.entry(t.clone()).or_default().push(off);
                }
                st.by_offset.insert(off, (pid.clone(), e.sequence_nr));
                st.events
                    .entry(pid.clone())
                    .or_default()
                    .insert(e.sequence_nr, (off, e));
            }
            let h = st.highest.entry(pid).or_insert(0);
            *h = (*h).max(hi);
            committed = true;
            results.push(Ok(()));
        }
        drop(st);
        if committed {
            self.commits.send_modify(|c| *c += 1);
        }
        Ok(results)
    }

    async fn replay_messages(
        &self,
        persistence_id: &str,
        from_sequence_nr: u64,
        to_sequence_nr: u64,
        max: u64,
    ) -> Result<Vec<PersistentRepr>> {
        let st = self.lock()?;
        if from_sequence_nr > to_sequence_nr || max == 0 {
            return Ok(Vec::new());
        }
        Ok(st
            .events
            .get(persistence_id)
            .map(|m| {
                m.range(from_sequence_nr..=to_sequence_nr)
                    .take(usize::try_from(max).unwrap_or(usize::MAX))
                    .map(|(_, (_, e))| e.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn highest_sequence_nr(&self, persistence_id: &str, _from: u64) -> Result<u64> {
        let st = self.lock()?;
        Ok(st.highest.get(persistence_id).copied().unwrap_or(0))
    }

    async fn delete_messages_to(&self, persistence_id: &str, to_sequence_nr: u64) -> Result<()> {
        let mut st = self.lock()?;
        let st = &mut *st;
        if let Some(m) = st.events.get_mut(persistence_id) {
            let keep = m.split_off(&to_sequence_nr.saturating_add(1));
            let removed = std::mem::replace(m, keep);
            for (_, (off, e)) in removed {
                st.by_offset.remove(&off);
                for t in &e.tags {
                    if let Some(v) = st.tags.get_mut(t)
                        && let Ok(i) = v.binary_search(&off)
                    {
                        v.remove(i);
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SnapshotStore for InMemoryStore {
    async fn save_snapshot(&self, metadata: SnapshotMetadata, data: SnapshotData) -> Result<()> {
        metadata.validate()?;
        let mut st = self.lock()?;
        st.snapshots
            .entry(metadata.persistence_id.clone())
            .or_default()
            .insert(metadata.sequence_nr, (metadata, data));
        Ok(())
    }

    async fn load_snapshot(
        &self,
        persistence_id: &str,
        criteria: SnapshotSelectionCriteria,
    ) -> Result<Option<SelectedSnapshot>> {
        let st = self.lock()?;
        Ok(st.snapshots.get(persistence_id).and_then(|m| {
            m.values()
                .rev()
                .find(|(meta, _)| criteria.matches(meta))
                .map(|(meta, data)| SelectedSnapshot {
                    metadata: meta.clone(),
                    data: data.clone(),
                })
        }))
    }

    async fn delete_snapshot(&self, metadata: &SnapshotMetadata) -> Result<()> {
        let mut st = self.lock()?;
        if let Some(m) = st.snapshots.get_mut(&metadata.persistence_id) {
            m.remove(&metadata.sequence_nr);
        }
        Ok(())
    }

    async fn delete_snapshots(
        &self,
        persistence_id: &str,
        criteria: SnapshotSelectionCriteria,
    ) -> Result<()> {
        let mut st = self.lock()?;
        if let Some(m) = st.snapshots.get_mut(persistence_id) {
            m.retain(|_, (meta, _)| !criteria.matches(meta));
        }
        Ok(())
    }
}

#[async_trait]
impl EventsByTagQuery for InMemoryStore {
    async fn events_by_tag_page(
        &self,
        tag: &str,
        after: Offset,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let st = self.lock()?;
        let Some(offsets) = st.tags.get(tag) else {
            return Ok(Vec::new());
        };
        let start = offsets.partition_point(|o| *o <= after.0);
        let mut out = Vec::new();
        for off in offsets[start..].iter().take(limit) {
            let Some((pid, seq)) = st.by_offset.get(off) else {
                return Err(PersistenceError::Corrupt(format!(
                    "tag index points to missing offset {off}"
                )));
            };
            let Some((_, e)) = st.events.get(pid).and_then(|m| m.get(seq)) else {
                return Err(PersistenceError::Corrupt(format!(
                    "offset {off} points to missing event"
                )));
            };
            out.push(EventEnvelope {
                offset: Offset(*off),
                event: e.clone(),
            });
        }
        Ok(out)
    }

    async fn current_persistence_ids(&self) -> Result<Vec<String>> {
        let st = self.lock()?;
        let mut ids: Vec<String> = st.highest.keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    fn refresh_interval(&self) -> Duration {
        self.refresh_interval
    }

    fn commit_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.commits.subscribe())
    }
}
