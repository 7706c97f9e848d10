//! Remember-entities' durable store, as Akka's event-sourced one: which entities were started
//! in each shard, and which shards have any, kept as events in the journal so that they
//! survive the loss of every node at once.
//!
//! Two kinds of persistence ids, both written only by the shard coordinator (a cluster
//! singleton, so each id has one writer at a time):
//! - `sharding-{type}-shards`: a [`RememberEvent::ShardRemembered`] for each shard when its
//!   first entity is remembered;
//! - `sharding-{type}-shard-{id}`: a [`RememberEvent::EntitiesStarted`] for each report of
//!   entities newly started in that shard.
//!
//! A coordinator loads both when it starts ([`RememberLog::load`]), so a coordinator of a
//! cluster that restarted from nothing knows every shard to start, and with which entities,
//! and starts them as soon as the regions have registered. It appends what the regions
//! report ([`RememberLog::note`] and [`RememberLog::flush`], once per coordinator tick); a
//! write that fails stays pending and goes again on the next tick.
//!
//! Limits, written down: regions report started entities on their tick, so an entity started
//! within about one `retry_interval` before every node was lost may not be remembered (it
//! starts again with its next message). Ids are never removed, as in the region: passivated
//! entities stay remembered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use persistence::{AtomicWrite, Journal, Persistable, PersistenceError, PersistentRepr};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::hash::ShardId;

/// Events replayed per read when loading.
const REPLAY_BATCH: u64 = 1_000;

/// Where remember-entities keeps its ids: a journal (see the [module docs](self)).
#[derive(Clone)]
pub struct RememberStore {
    journal: Arc<dyn Journal>,
}

impl RememberStore {
    /// A store on `journal`.
    pub fn new(journal: Arc<dyn Journal>) -> Self {
        RememberStore { journal }
    }
}

impl fmt::Debug for RememberStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RememberStore(journal)")
    }
}

/// The events of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RememberEvent {
    /// A shard got its first remembered entity.
    ShardRemembered {
        /// The shard.
        shard: ShardId,
    },
    /// Entities started in the shard of this persistence id.
    EntitiesStarted {
        /// Their ids.
        entities: Vec<String>,
    },
}

impl Persistable for RememberEvent {
    const MANIFEST: &'static str = "sharding.RememberEvent";
}

/// The persistence id of the list of remembered shards of `type_name`.
pub fn shards_id(type_name: &str) -> String {
    format!("sharding-{type_name}-shards")
}

/// The persistence id of the remembered entities of one shard of `type_name`.
pub fn shard_id(type_name: &str, shard: ShardId) -> String {
    format!("sharding-{type_name}-shard-{shard}")
}

/// A coordinator's view of the store: what is stored, what is not yet, and the sequence
/// numbers to write at.
#[derive(Debug)]
pub struct RememberLog {
    store: RememberStore,
    type_name: String,
    writer: String,
    /// Highest sequence nr of the shard list.
    shards_seq: u64,
    /// Stored entity ids and the highest sequence nr, per shard.
    stored: BTreeMap<ShardId, (BTreeSet<String>, u64)>,
    /// Reported ids not stored yet.
    unsaved: BTreeMap<ShardId, BTreeSet<String>>,
}

impl RememberLog {
    /// Reads everything the store holds for `type_name`.
    pub async fn load(
        store: RememberStore,
        type_name: &str,
        writer: &str,
    ) -> Result<Self, PersistenceError> {
        let journal = &store.journal;
        let list = replay(journal.as_ref(), &shards_id(type_name)).await?;
        let mut shards_seq = 0;
        let mut stored: BTreeMap<ShardId, (BTreeSet<String>, u64)> = BTreeMap::new();
        for (seq, event) in list {
            shards_seq = seq;
            if let RememberEvent::ShardRemembered { shard } = event {
                stored.entry(shard).or_default();
            }
        }
        for (&shard, (ids, last)) in stored.iter_mut() {
            for (seq, event) in replay(journal.as_ref(), &shard_id(type_name, shard)).await? {
                *last = seq;
                if let RememberEvent::EntitiesStarted { entities } = event {
                    ids.extend(entities);
                }
            }
        }
        info!(
            type_name,
            shards = stored.len(),
            entities = stored.values().map(|(ids, _)| ids.len()).sum::<usize>(),
            "remembered entities loaded"
        );
        Ok(RememberLog {
            store,
            type_name: type_name.to_owned(),
            writer: writer.to_owned(),
            shards_seq,
            stored,
            unsaved: BTreeMap::new(),
        })
    }

    /// The stored entity ids, per shard.
    pub fn remembered(&self) -> impl Iterator<Item = (ShardId, &BTreeSet<String>)> {
        self.stored.iter().map(|(s, (ids, _))| (*s, ids))
    }

    /// Notes entity ids reported as started; the new ones are stored on the next flush.
    pub fn note(&mut self, shard: ShardId, ids: impl IntoIterator<Item = String>) {
        let stored = self.stored.get(&shard).map(|(ids, _)| ids);
        let new: Vec<String> = ids
            .into_iter()
            .filter(|id| stored.is_none_or(|s| !s.contains(id)))
            .collect();
        if !new.is_empty() {
            self.unsaved.entry(shard).or_default().extend(new);
        }
    }

    /// True when reported ids wait to be stored.
    pub fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// Stores what was noted: for a new shard its place in the shard list first, then its
    /// ids. What fails stays noted for the next flush.
    pub async fn flush(&mut self) {
        let shards: Vec<ShardId> = self.unsaved.keys().copied().collect();
        for shard in shards {
            if let Err(e) = self.flush_shard(shard).await {
                warn!(type_name = %self.type_name, shard, error = %e, "remembered entities not stored yet; retrying on the next tick");
                if e.is_rejected() {
                    // Another writer (an earlier coordinator) wrote meanwhile: take up its
                    // sequence numbers.
                    self.resync(shard).await;
                }
                return;
            }
        }
    }

    async fn flush_shard(&mut self, shard: ShardId) -> Result<(), PersistenceError> {
        if !self.stored.contains_key(&shard) {
            let seq = self.shards_seq + 1;
            self.write(
                shards_id(&self.type_name),
                seq,
                &RememberEvent::ShardRemembered { shard },
            )
            .await?;
            self.shards_seq = seq;
            self.stored.insert(shard, (BTreeSet::new(), 0));
        }
        let Some(ids) = self.unsaved.get(&shard) else {
            return Ok(());
        };
        let seq = self.stored[&shard].1 + 1;
        let event = RememberEvent::EntitiesStarted {
            entities: ids.iter().cloned().collect(),
        };
        self.write(shard_id(&self.type_name, shard), seq, &event)
            .await?;
        let ids = self.unsaved.remove(&shard).unwrap_or_default();
        let entry = self.stored.get_mut(&shard).expect("inserted above");
        entry.0.extend(ids);
        entry.1 = seq;
        Ok(())
    }

    async fn write(
        &self,
        pid: String,
        seq: u64,
        event: &RememberEvent,
    ) -> Result<(), PersistenceError> {
        let repr = PersistentRepr::from_event(pid, seq, event, self.writer.clone())?;
        let results = self
            .store
            .journal
            .write_messages(vec![AtomicWrite::new(vec![repr])?])
            .await?;
        results.into_iter().next().unwrap_or(Ok(()))
    }

    async fn resync(&mut self, shard: ShardId) {
        let journal = &self.store.journal;
        if let Ok(seq) = journal
            .highest_sequence_nr(&shards_id(&self.type_name), self.shards_seq)
            .await
        {
            self.shards_seq = seq;
        }
        if let Some(entry) = self.stored.get_mut(&shard)
            && let Ok(seq) = journal
                .highest_sequence_nr(&shard_id(&self.type_name, shard), entry.1)
                .await
        {
            entry.1 = seq;
        }
    }
}

/// Every event of `pid`, with its sequence nr.
async fn replay(
    journal: &dyn Journal,
    pid: &str,
) -> Result<Vec<(u64, RememberEvent)>, PersistenceError> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let batch = journal
            .replay_messages(pid, from, u64::MAX, REPLAY_BATCH)
            .await?;
        let Some(last) = batch.last().map(|r| r.sequence_nr) else {
            return Ok(out);
        };
        for r in &batch {
            out.push((r.sequence_nr, r.decode::<RememberEvent>()?));
        }
        if (batch.len() as u64) < REPLAY_BATCH {
            return Ok(out);
        }
        from = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use persistence::InMemoryStore;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn noted_ids_are_stored_once_and_load_again() {
        let store = RememberStore::new(Arc::new(InMemoryStore::new()));
        let mut log = RememberLog::load(store.clone(), "t", "w1").await.unwrap();
        log.note(3, ids(&["a", "b"]));
        log.note(7, ids(&["c"]));
        log.flush().await;
        assert!(!log.has_unsaved());
        log.note(3, ids(&["b", "d"]));
        log.flush().await;
        log.note(3, ids(&["a", "d"]));
        assert!(!log.has_unsaved(), "stored ids are not noted again");

        let loaded = RememberLog::load(store, "t", "w2").await.unwrap();
        let all: Vec<(ShardId, Vec<String>)> = loaded
            .remembered()
            .map(|(s, i)| (s, i.iter().cloned().collect()))
            .collect();
        assert_eq!(all, vec![(3, ids(&["a", "b", "d"])), (7, ids(&["c"]))]);
        assert_eq!((loaded.shards_seq, loaded.stored[&3].1), (2, 2));
    }

    #[tokio::test]
    async fn a_write_that_lost_to_another_writer_is_retried_after_it() {
        let store = RememberStore::new(Arc::new(InMemoryStore::new()));
        let mut first = RememberLog::load(store.clone(), "t", "w1").await.unwrap();
        let mut second = RememberLog::load(store.clone(), "t", "w2").await.unwrap();
        first.note(1, ids(&["a"]));
        first.flush().await;
        second.note(1, ids(&["b"]));
        second.flush().await; // the shard list's sequence nr 1 is taken
        assert!(second.has_unsaved());
        second.flush().await;
        second.flush().await;
        assert!(!second.has_unsaved());
        let loaded = RememberLog::load(store, "t", "w3").await.unwrap();
        let (_, got) = loaded.remembered().next().unwrap();
        assert_eq!(got.iter().cloned().collect::<Vec<_>>(), ids(&["a", "b"]));
    }
}
