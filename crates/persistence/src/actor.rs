//! Persistent (event-sourced) actors on `ractor`.
//!
//! This module owns [`PersistentActor`], a ractor [`Actor`] that runs a user's
//! [`PersistentBehavior`], and [`PersistenceHandle`], the shared write path (retry, circuit
//! breaker, group commit) that all entities of a process use.
//!
//! - **Recovery** happens in `pre_start`, so it completes before the first command is handled:
//!   the latest snapshot is loaded, the journal's highest sequence number is read (it survives
//!   deletion), and the events up to it are replayed page by page. Reading the highest first,
//!   as Akka does, means an event a predecessor writes meanwhile is never counted without
//!   being applied: the new incarnation's first write collides with it instead.
//! - **`persist` / `persist_all`** ([`EntityContext`]) resolve only after the events are durable;
//!   only then are they applied to the state. Commands wait meanwhile (the mailbox is not read).
//! - **`persist_applied`** is the other way round, for commands whose events are only known by
//!   applying them one after another (a batch of orders that trade with each other): the
//!   handler changes the state in place and hands over the events; if the write fails, the
//!   entity is poisoned (it handles nothing more) and stops, so the changed state is discarded
//!   and the next incarnation recovers the journal's truth. Nothing is acted on before the
//!   write succeeds either way.
//! - **Snapshots** are taken every N events when configured, but not more often than
//!   [`EntitySettings::snapshot_min_interval`]. The state is encoded in the actor; the write
//!   (and deleting older snapshots and the events they cover) runs in the background, so a
//!   command never waits for a snapshot store. At most one snapshot write per entity is in
//!   flight: a snapshot due while the previous one is still being written waits for it, and
//!   stopping the entity waits for the last one. A failed snapshot is logged; the entity goes
//!   on (recovery then replays more events).
//! - **Failures stop the entity with a logged reason**: a recovery failure fails the spawn, and a
//!   persist that is rejected or fails (store unavailable after retries, bad event) stops the actor
//!   even if the handler ignores the error, so it never goes on with a state the journal does not
//!   have. Restarting it (a supervisor, or the next message through sharding) recovers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use telemetry::instruments::JournalMetrics;

use crate::error::{PersistenceError, Result};
use crate::group_commit::{GroupCommitConfig, GroupCommitWriter};
use crate::repr::{
    AtomicWrite, Persistable, PersistentRepr, SnapshotData, SnapshotMetadata,
    SnapshotSelectionCriteria,
};
use crate::resilience::{CircuitBreakerConfig, ResilientJournal, RetryPolicy};
use crate::traits::{Journal, SnapshotStore};

/// Settings of a [`PersistenceHandle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistenceConfig {
    /// Retry of journal operations while the store is unavailable.
    pub retry: RetryPolicy,
    /// Circuit breaker in front of the journal.
    pub breaker: CircuitBreakerConfig,
    /// Batching of writes across entities.
    pub group_commit: GroupCommitConfig,
    /// Events read per replay call during recovery.
    pub replay_page: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            retry: RetryPolicy::default(),
            breaker: CircuitBreakerConfig::default(),
            group_commit: GroupCommitConfig::default(),
            replay_page: 8192,
        }
    }
}

/// The journal, snapshot store and group-commit writer shared by the entities of a process.
/// Cheap to clone.
#[derive(Clone)]
pub struct PersistenceHandle {
    journal: Arc<dyn Journal>,
    snapshots: Arc<dyn SnapshotStore>,
    writer: GroupCommitWriter,
    replay_page: u64,
}

impl PersistenceHandle {
    /// Wraps the journal with retry and a circuit breaker and starts the group-commit writer
    /// (on the current tokio runtime).
    pub fn new(
        journal: Arc<dyn Journal>,
        snapshots: Arc<dyn SnapshotStore>,
        config: PersistenceConfig,
    ) -> Self {
        Self::with_metrics(journal, snapshots, config, None)
    }

    /// Like [`PersistenceHandle::new`], with the group-commit writer recording each journal
    /// call's duration and size in `metrics` (see [`crate::group_commit`]).
    pub fn with_metrics(
        journal: Arc<dyn Journal>,
        snapshots: Arc<dyn SnapshotStore>,
        config: PersistenceConfig,
        metrics: Option<JournalMetrics>,
    ) -> Self {
        let resilient: Arc<dyn Journal> =
            Arc::new(ResilientJournal::new(journal, config.retry, config.breaker));
        PersistenceHandle {
            writer: GroupCommitWriter::spawn_with_metrics(
                resilient.clone(),
                config.group_commit,
                metrics,
            ),
            journal: resilient,
            snapshots,
            replay_page: config.replay_page.max(1),
        }
    }

    /// The journal (with retry and circuit breaker).
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> &Arc<dyn SnapshotStore> {
        &self.snapshots
    }

    /// The group-commit writer.
    pub fn writer(&self) -> &GroupCommitWriter {
        &self.writer
    }
}

/// Snapshot policy of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntitySettings {
    /// Take a snapshot each time the sequence number passes a multiple of this (None = never).
    pub snapshot_every: Option<u64>,
    /// Take snapshots at most this often: one that falls due sooner is taken at the first
    /// write after the interval (zero = no limit). A busy entity writing thousands of events a
    /// second would otherwise spend more on snapshots than on its events, while recovery only
    /// gains from the latest one.
    pub snapshot_min_interval: Duration,
    /// After a snapshot, delete the events it covers.
    pub delete_events_on_snapshot: bool,
    /// After a snapshot, delete older snapshots.
    pub delete_older_snapshots: bool,
}

/// What an event-sourced entity does: its events, state, and command handling.
pub trait PersistentBehavior: Send + Sync + Sized + 'static {
    /// Commands the entity accepts (its actor message type).
    type Command: ractor::Message;
    /// Events it persists.
    type Event: Persistable;
    /// Its state; also its snapshot type.
    type State: Persistable;

    /// The state before any event.
    fn initial_state(&self) -> Self::State;

    /// Applies one event to the state (during recovery and after each successful persist).
    fn apply_event(&self, state: &mut Self::State, event: &Self::Event);

    /// Handles one command. Call [`EntityContext::persist`] to store events; reply after it
    /// returns. Returning an error stops the entity (ractor's failure path).
    fn handle_command(
        &self,
        ctx: &mut EntityContext<'_, Self>,
        command: Self::Command,
    ) -> impl Future<Output = std::result::Result<(), ActorProcessingErr>> + Send;

    /// Called once recovery has finished, before the first command.
    fn on_recovery_completed(
        &self,
        _persistence_id: &str,
        _state: &Self::State,
        _last_sequence_nr: u64,
    ) {
    }
}

/// The ractor actor running a [`PersistentBehavior`] for one persistence id.
pub struct PersistentActor<B: PersistentBehavior> {
    behavior: B,
    persistence_id: String,
    persistence: PersistenceHandle,
    settings: EntitySettings,
}

impl<B: PersistentBehavior> PersistentActor<B> {
    /// An actor for `persistence_id`; spawn it with `Actor::spawn(name, actor, ())`.
    pub fn new(
        behavior: B,
        persistence_id: impl Into<String>,
        persistence: PersistenceHandle,
        settings: EntitySettings,
    ) -> Self {
        PersistentActor {
            behavior,
            persistence_id: persistence_id.into(),
            persistence,
            settings,
        }
    }

    async fn recover(&self) -> Result<EntityState<B>> {
        let pid = &self.persistence_id;
        if pid.is_empty() {
            return Err(PersistenceError::InvalidInput(
                "persistence id must not be empty".into(),
            ));
        }
        let mut state = self.behavior.initial_state();
        let mut last = 0u64;
        if let Some(snap) = self
            .persistence
            .snapshots
            .load_snapshot(pid, SnapshotSelectionCriteria::latest())
            .await?
        {
            state = snap.data.decode::<B::State>().map_err(|e| {
                PersistenceError::Serialization(format!(
                    "snapshot at sequence nr {} cannot be decoded: {e}",
                    snap.metadata.sequence_nr
                ))
            })?;
            last = snap.metadata.sequence_nr;
        }
        let snapshot_nr = last;
        // As Akka does: read the highest sequence nr first, then replay up to it. Reading it
        // after the replay would let an event a predecessor wrote in between be counted but
        // never applied; read first, such an event is beyond `highest` and the first write of
        // this incarnation collides with it in the journal instead of silently skipping it.
        let highest = self
            .persistence
            .journal
            .highest_sequence_nr(pid, last)
            .await?;
        let page = self.persistence.replay_page;
        while last < highest {
            let events = self
                .persistence
                .journal
                .replay_messages(pid, last + 1, highest, page)
                .await?;
            for r in &events {
                if r.sequence_nr <= last || r.sequence_nr > highest {
                    return Err(PersistenceError::Corrupt(format!(
                        "replay up to {highest} returned sequence nr {} after {last}",
                        r.sequence_nr
                    )));
                }
                let event = r.decode::<B::Event>().map_err(|e| {
                    PersistenceError::Serialization(format!(
                        "event at sequence nr {} cannot be decoded: {e}",
                        r.sequence_nr
                    ))
                })?;
                self.behavior.apply_event(&mut state, &event);
                last = r.sequence_nr;
            }
            if (events.len() as u64) < page {
                break;
            }
        }
        // Events deleted up to the end leave the highest sequence nr behind them.
        let last = last.max(highest);
        self.behavior.on_recovery_completed(pid, &state, last);
        Ok(EntityState {
            state,
            last_sequence_nr: last,
            last_snapshot_nr: snapshot_nr,
            writer_uuid: uuid::Uuid::new_v4().to_string(),
            poisoned: None,
            snapshot_due: false,
            last_snapshot_at: None,
            snapshot_write: None,
        })
    }
}

/// The runtime state of a [`PersistentActor`].
pub struct EntityState<B: PersistentBehavior> {
    state: B::State,
    last_sequence_nr: u64,
    last_snapshot_nr: u64,
    writer_uuid: String,
    /// Why the state may no longer match the journal; set, the entity handles nothing more.
    poisoned: Option<String>,
    /// A snapshot fell due before [`EntitySettings::snapshot_min_interval`] had passed.
    snapshot_due: bool,
    last_snapshot_at: Option<Instant>,
    /// The snapshot write in flight, if any.
    snapshot_write: Option<tokio::task::JoinHandle<()>>,
}

/// What a command handler sees: the state, and the way to persist events.
pub struct EntityContext<'a, B: PersistentBehavior> {
    actor: &'a PersistentActor<B>,
    entity: &'a mut EntityState<B>,
    myself: ActorRef<B::Command>,
    failure: Option<String>,
}

impl<B: PersistentBehavior> EntityContext<'_, B> {
    /// The current state.
    pub fn state(&self) -> &B::State {
        &self.entity.state
    }

    /// The entity's persistence id.
    pub fn persistence_id(&self) -> &str {
        &self.actor.persistence_id
    }

    /// The sequence number of the last persisted event.
    pub fn last_sequence_nr(&self) -> u64 {
        self.entity.last_sequence_nr
    }

    /// This actor.
    pub fn myself(&self) -> &ActorRef<B::Command> {
        &self.myself
    }

    /// Persists one event; see [`EntityContext::persist_all`].
    pub async fn persist(&mut self, event: B::Event) -> Result<()> {
        self.persist_all(vec![event]).await
    }

    /// Persists events atomically and, once they are durable, applies them to the state.
    /// On any failure nothing is applied, the error is returned, and the entity stops after this
    /// command (it must not go on with a state the journal may not have).
    pub async fn persist_all(&mut self, events: Vec<B::Event>) -> Result<()> {
        self.write(&events).await?;
        for e in &events {
            self.actor.behavior.apply_event(&mut self.entity.state, e);
        }
        self.written(events.len()).await;
        Ok(())
    }

    /// Lets `change` update the state in place and persists the events it returns (the ones
    /// it applied, in order) as one atomic write; returns what `change` returned besides.
    ///
    /// For commands whose events are only known by applying them one after another, such as
    /// a batch of orders that trade with each other, where deciding on a copy of the state
    /// would cost a copy per command. Reply only after this returns `Ok`. If the write fails,
    /// the state is ahead of the journal: the entity is poisoned, handles no further command
    /// and stops, and its next incarnation recovers from the journal.
    pub async fn persist_applied<T>(
        &mut self,
        change: impl FnOnce(&mut B::State) -> (Vec<B::Event>, T),
    ) -> Result<T> {
        self.check_healthy()?;
        let (events, out) = change(&mut self.entity.state);
        if let Err(e) = self.write(&events).await {
            self.entity.poisoned = self.failure.clone();
            return Err(e);
        }
        self.written(events.len()).await;
        Ok(out)
    }

    fn check_healthy(&self) -> Result<()> {
        match self.failure.as_ref().or(self.entity.poisoned.as_ref()) {
            Some(f) => Err(PersistenceError::Backend(format!(
                "entity is stopping after: {f}"
            ))),
            None => Ok(()),
        }
    }

    /// Writes `events` after the last sequence number; on failure records why the entity
    /// must stop.
    async fn write(&mut self, events: &[B::Event]) -> Result<()> {
        self.check_healthy()?;
        if events.is_empty() {
            return Ok(());
        }
        let base = self.entity.last_sequence_nr;
        let pid = &self.actor.persistence_id;
        let write = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                PersistentRepr::from_event(
                    pid.clone(),
                    base + 1 + i as u64,
                    e,
                    &self.entity.writer_uuid,
                )
            })
            .collect::<Result<Vec<_>>>()
            .and_then(AtomicWrite::new);
        let result = match write {
            Ok(w) => self.actor.persistence.writer.write(w).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.failure = Some(format!(
                "persist of {} event(s) at sequence nr {} failed: {e}",
                events.len(),
                base + 1
            ));
        }
        result
    }

    /// Advances the sequence number past `count` written events and snapshots when due.
    async fn written(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        let before = self.entity.last_sequence_nr;
        self.entity.last_sequence_nr = before + count as u64;
        self.maybe_snapshot(before).await;
    }

    async fn maybe_snapshot(&mut self, before: u64) {
        let Some(every) = self.actor.settings.snapshot_every.filter(|n| *n > 0) else {
            return;
        };
        let now = self.entity.last_sequence_nr;
        if now / every != before / every {
            self.entity.snapshot_due = true;
        }
        if !self.entity.snapshot_due {
            return;
        }
        let min = self.actor.settings.snapshot_min_interval;
        if let Some(at) = self.entity.last_snapshot_at
            && at.elapsed() < min
        {
            return;
        }
        if let Some(previous) = self.entity.snapshot_write.take() {
            // At most one write in flight; this only waits when snapshots come faster than
            // the store takes them.
            let _ = previous.await;
        }
        let pid = self.actor.persistence_id.clone();
        let data = match SnapshotData::from_state(&self.entity.state) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(persistence_id = %pid, sequence_nr = now, error = %e, "snapshot cannot be encoded; continuing without it");
                self.entity.snapshot_due = false;
                return;
            }
        };
        self.entity.snapshot_due = false;
        self.entity.last_snapshot_at = Some(Instant::now());
        self.entity.last_snapshot_nr = now;
        let settings = self.actor.settings;
        let p = self.actor.persistence.clone();
        self.entity.snapshot_write = Some(tokio::spawn(async move {
            save_snapshot(p, settings, pid, now, data).await;
        }));
    }
}

/// Writes one snapshot, then deletes what it makes redundant, as `settings` say.
async fn save_snapshot(
    p: PersistenceHandle,
    settings: EntitySettings,
    pid: String,
    seq: u64,
    data: SnapshotData,
) {
    if let Err(e) = p
        .snapshots
        .save_snapshot(SnapshotMetadata::new(pid.clone(), seq), data)
        .await
    {
        tracing::warn!(persistence_id = %pid, sequence_nr = seq, error = %e, "snapshot failed; continuing without it");
        return;
    }
    if settings.delete_older_snapshots
        && let Err(e) = p
            .snapshots
            .delete_snapshots(&pid, SnapshotSelectionCriteria::max_sequence_nr(seq - 1))
            .await
    {
        tracing::warn!(persistence_id = %pid, error = %e, "deleting older snapshots failed");
    }
    if settings.delete_events_on_snapshot
        && let Err(e) = p.journal.delete_messages_to(&pid, seq).await
    {
        tracing::warn!(persistence_id = %pid, error = %e, "deleting events covered by a snapshot failed");
    }
}

impl<B: PersistentBehavior> Actor for PersistentActor<B> {
    type Msg = B::Command;
    type State = EntityState<B>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        match self.recover().await {
            Ok(s) => {
                tracing::debug!(persistence_id = %self.persistence_id, last_sequence_nr = s.last_sequence_nr, "recovered");
                Ok(s)
            }
            Err(e) => {
                tracing::error!(persistence_id = %self.persistence_id, error = %e, "recovery failed; the entity does not start");
                Err(Box::new(PersistenceError::Backend(format!(
                    "recovery of '{}' failed: {e}",
                    self.persistence_id
                ))))
            }
        }
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        if state.poisoned.is_some() {
            // Its state is ahead of the journal; it is stopping and must not act on it.
            return Ok(());
        }
        let mut ctx = EntityContext {
            actor: self,
            entity: state,
            myself: myself.clone(),
            failure: None,
        };
        let result = self.behavior.handle_command(&mut ctx, message).await;
        if let Some(reason) = ctx.failure.take() {
            tracing::error!(persistence_id = %self.persistence_id, %reason, "stopping entity");
            state.poisoned = Some(reason.clone());
            myself.stop(Some(reason));
            return Ok(());
        }
        result
    }

    /// Waits for the snapshot write in flight, so a stopped entity has finished writing.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        if let Some(write) = state.snapshot_write.take() {
            let _ = write.await;
        }
        Ok(())
    }
}

impl<B: PersistentBehavior> EntityState<B> {
    /// The current state.
    pub fn state(&self) -> &B::State {
        &self.state
    }

    /// The sequence number of the last persisted event.
    pub fn last_sequence_nr(&self) -> u64 {
        self.last_sequence_nr
    }

    /// The sequence number of the last snapshot taken or recovered (0 if none).
    pub fn last_snapshot_nr(&self) -> u64 {
        self.last_snapshot_nr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryStore;
    use crate::repr::Payload;
    use ractor::RpcReplyPort;
    use serde::{Deserialize, Serialize};
    use std::time::Duration;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Added {
        n: i64,
    }
    impl Persistable for Added {
        const MANIFEST: &'static str = "Added";
        fn tags(&self) -> Vec<String> {
            vec!["counter".into()]
        }
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
    struct Total {
        sum: i64,
        count: u64,
    }
    impl Persistable for Total {
        const MANIFEST: &'static str = "Total";
    }

    enum Cmd {
        Add(Vec<i64>, RpcReplyPort<std::result::Result<i64, String>>),
        /// The same through `persist_applied`: the handler adds in place, then persists.
        AddApplied(Vec<i64>, RpcReplyPort<std::result::Result<i64, String>>),
        Get(RpcReplyPort<(i64, u64)>),
    }

    struct Counter;

    impl PersistentBehavior for Counter {
        type Command = Cmd;
        type Event = Added;
        type State = Total;

        fn initial_state(&self) -> Total {
            Total::default()
        }

        fn apply_event(&self, state: &mut Total, e: &Added) {
            state.sum += e.n;
            state.count += 1;
        }

        async fn handle_command(
            &self,
            ctx: &mut EntityContext<'_, Self>,
            command: Cmd,
        ) -> std::result::Result<(), ActorProcessingErr> {
            match command {
                Cmd::Add(ns, reply) => {
                    // The handler ignores the persist error on purpose: the entity must stop anyway.
                    let r = ctx
                        .persist_all(ns.into_iter().map(|n| Added { n }).collect())
                        .await;
                    let _ = reply.send(r.map(|_| ctx.state().sum).map_err(|e| e.to_string()));
                }
                Cmd::AddApplied(ns, reply) => {
                    let r = ctx
                        .persist_applied(|state| {
                            let events: Vec<Added> = ns.into_iter().map(|n| Added { n }).collect();
                            for e in &events {
                                Counter.apply_event(state, e);
                            }
                            (events, state.sum)
                        })
                        .await;
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                }
                Cmd::Get(reply) => {
                    let _ = reply.send((ctx.state().sum, ctx.last_sequence_nr()));
                }
            }
            Ok(())
        }
    }

    fn handle(store: &InMemoryStore) -> PersistenceHandle {
        let s = Arc::new(store.clone());
        PersistenceHandle::new(
            s.clone(),
            s,
            PersistenceConfig {
                retry: RetryPolicy {
                    max_retries: 1,
                    initial_backoff: Duration::from_millis(1),
                    max_backoff: Duration::from_millis(1),
                },
                replay_page: 4,
                ..Default::default()
            },
        )
    }

    async fn spawn(
        store: &InMemoryStore,
        settings: EntitySettings,
    ) -> std::result::Result<(ActorRef<Cmd>, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
        Actor::spawn(
            None,
            PersistentActor::new(Counter, "counter-1", handle(store), settings),
            (),
        )
        .await
    }

    /// Starts the entity again and answers its (sum, last sequence nr) after recovery.
    async fn recovered(store: &InMemoryStore, settings: EntitySettings) -> (i64, u64) {
        let (a, h) = spawn(store, settings).await.unwrap();
        let state = ractor::call!(a, Cmd::Get).unwrap();
        a.stop(None);
        h.await.unwrap();
        state
    }

    /// Waits for an entity that must stop by itself.
    async fn stopped(h: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("entity stopped")
            .unwrap();
    }

    async fn add(a: &ActorRef<Cmd>, ns: Vec<i64>) -> std::result::Result<i64, String> {
        ractor::call!(a, Cmd::Add, ns).expect("actor answers")
    }

    #[tokio::test]
    async fn recovers_state_and_sequence_nr_before_the_first_command() {
        let store = InMemoryStore::new();
        let (a, h) = spawn(&store, EntitySettings::default()).await.unwrap();
        for i in 1..=10 {
            add(&a, vec![i]).await.unwrap();
        }
        assert_eq!(add(&a, vec![100, 200]).await.unwrap(), 355);
        a.stop(None);
        h.await.unwrap();
        // Replay pages of 4 events; 12 events in all.
        let (a, h) = spawn(&store, EntitySettings::default()).await.unwrap();
        assert_eq!(ractor::call!(a, Cmd::Get).unwrap(), (355, 12));
        assert_eq!(add(&a, vec![1]).await.unwrap(), 356);
        let stored = store.replay_messages("counter-1", 13, 13, 1).await.unwrap();
        assert_eq!(stored[0].tags, vec!["counter".to_string()]);
        a.stop(None);
        h.await.unwrap();
    }

    #[tokio::test]
    async fn snapshots_every_n_events_and_deletes_what_they_cover() {
        let store = InMemoryStore::new();
        let settings = EntitySettings {
            snapshot_every: Some(3),
            snapshot_min_interval: Duration::ZERO,
            delete_events_on_snapshot: true,
            delete_older_snapshots: true,
        };
        let (a, h) = spawn(&store, settings).await.unwrap();
        for i in 1..=10 {
            add(&a, vec![i]).await.unwrap();
        }
        a.stop(None);
        h.await.unwrap();
        let snap = store
            .load_snapshot("counter-1", SnapshotSelectionCriteria::latest())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snap.metadata.sequence_nr, 9);
        assert_eq!(
            snap.data.decode::<Total>().unwrap(),
            Total { sum: 45, count: 9 }
        );
        let older = SnapshotSelectionCriteria::max_sequence_nr(8);
        assert!(
            store
                .load_snapshot("counter-1", older)
                .await
                .unwrap()
                .is_none()
        );
        let events = store
            .replay_messages("counter-1", 1, u64::MAX, u64::MAX)
            .await
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.sequence_nr).collect::<Vec<_>>(),
            vec![10]
        );
        assert_eq!(recovered(&store, settings).await, (55, 10));
    }

    #[tokio::test]
    async fn persist_applied_stores_what_the_handler_applied_once() {
        let store = InMemoryStore::new();
        let (a, h) = spawn(&store, EntitySettings::default()).await.unwrap();
        assert_eq!(add(&a, vec![1]).await.unwrap(), 1);
        let sum = ractor::call!(a, Cmd::AddApplied, vec![10, 20]).unwrap();
        assert_eq!(sum, Ok(31));
        assert_eq!(ractor::call!(a, Cmd::Get).unwrap(), (31, 3));
        a.stop(None);
        h.await.unwrap();
        assert_eq!(recovered(&store, EntitySettings::default()).await, (31, 3));
    }

    #[tokio::test]
    async fn a_failed_persist_applied_poisons_the_entity_until_it_recovers() {
        let store = InMemoryStore::new();
        let (a, h) = spawn(&store, EntitySettings::default()).await.unwrap();
        add(&a, vec![5]).await.unwrap();
        store.set_unavailable(true);
        let err = ractor::call!(a, Cmd::AddApplied, vec![100])
            .unwrap()
            .unwrap_err();
        assert!(err.contains("unavailable"), "{err}");
        // Whatever was queued behind is not handled on the changed state.
        assert!(ractor::call!(a, Cmd::Get).is_err());
        stopped(h).await;
        store.set_unavailable(false);
        assert_eq!(recovered(&store, EntitySettings::default()).await, (5, 1));
    }

    #[tokio::test]
    async fn snapshots_wait_for_the_minimum_interval() {
        let store = InMemoryStore::new();
        let settings = EntitySettings {
            snapshot_every: Some(2),
            snapshot_min_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        let (a, h) = spawn(&store, settings).await.unwrap();
        for i in 1..=9 {
            add(&a, vec![i]).await.unwrap();
        }
        a.stop(None);
        h.await.unwrap();
        // The first one is taken when due (there was none before); the rest wait an hour.
        let snap = store
            .load_snapshot("counter-1", SnapshotSelectionCriteria::latest())
            .await
            .unwrap()
            .expect("one snapshot");
        assert_eq!(snap.metadata.sequence_nr, 2);
    }

    #[tokio::test]
    async fn a_rejected_write_stops_the_entity() {
        let store = InMemoryStore::new();
        let (a, h) = spawn(&store, EntitySettings::default()).await.unwrap();
        add(&a, vec![1]).await.unwrap();
        // Another writer takes sequence nr 2 behind the entity's back.
        let other =
            PersistentRepr::from_event("counter-1", 2, &Added { n: 1000 }, "intruder").unwrap();
        store
            .write_messages(vec![AtomicWrite::new(vec![other]).unwrap()])
            .await
            .unwrap();
        let err = add(&a, vec![5]).await.unwrap_err();
        assert!(err.contains("rejected"), "{err}");
        stopped(h).await;
        // The state did not take the failed event; a restart recovers the journal's truth.
        assert_eq!(
            recovered(&store, EntitySettings::default()).await,
            (1001, 2)
        );
    }

    #[tokio::test]
    async fn an_unavailable_store_stops_the_entity_and_nothing_acknowledged_is_lost() {
        let store = InMemoryStore::new();
        let (a, h) = spawn(&store, EntitySettings::default()).await.unwrap();
        add(&a, vec![7]).await.unwrap();
        store.set_unavailable(true);
        let err = add(&a, vec![8]).await.unwrap_err();
        assert!(err.contains("unavailable"), "{err}");
        stopped(h).await;
        // While the store is down the entity cannot even start.
        assert!(spawn(&store, EntitySettings::default()).await.is_err());
        store.set_unavailable(false);
        assert_eq!(recovered(&store, EntitySettings::default()).await, (7, 1));
    }

    #[tokio::test]
    async fn an_undecodable_event_fails_recovery_with_the_reason() {
        let store = InMemoryStore::new();
        let mut bad = PersistentRepr::from_event("counter-1", 1, &Added { n: 1 }, "w").unwrap();
        bad.payload = Payload::from_json("{\"n\":\"not a number\"}").unwrap();
        store
            .write_messages(vec![AtomicWrite::new(vec![bad]).unwrap()])
            .await
            .unwrap();
        let Err(err) = spawn(&store, EntitySettings::default()).await else {
            panic!("spawn must fail");
        };
        let text = format!("{err:?}");
        assert!(text.contains("sequence nr 1 cannot be decoded"), "{text}");
    }

    /// A journal on which a predecessor incarnation writes one more event right after the
    /// first replay call has read its page, as a still-running old entity would.
    struct PredecessorWritesDuringReplay {
        inner: InMemoryStore,
        written: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Journal for PredecessorWritesDuringReplay {
        async fn write_messages(&self, writes: Vec<AtomicWrite>) -> Result<Vec<Result<()>>> {
            self.inner.write_messages(writes).await
        }
        async fn replay_messages(
            &self,
            pid: &str,
            from: u64,
            to: u64,
            max: u64,
        ) -> Result<Vec<PersistentRepr>> {
            let page = self.inner.replay_messages(pid, from, to, max).await?;
            if !self.written.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let next = self.inner.highest_sequence_nr(pid, 0).await? + 1;
                let e = PersistentRepr::from_event(pid, next, &Added { n: 1000 }, "old").unwrap();
                let r = self
                    .inner
                    .write_messages(vec![AtomicWrite::new(vec![e]).unwrap()]);
                r.await?.pop().unwrap()?;
            }
            Ok(page)
        }
        async fn highest_sequence_nr(&self, pid: &str, from: u64) -> Result<u64> {
            self.inner.highest_sequence_nr(pid, from).await
        }
        async fn delete_messages_to(&self, pid: &str, to: u64) -> Result<()> {
            self.inner.delete_messages_to(pid, to).await
        }
    }

    #[tokio::test]
    async fn a_write_of_a_predecessor_during_recovery_is_never_skipped() {
        let store = InMemoryStore::new();
        let (a, h) = spawn(&store, EntitySettings::default()).await.unwrap();
        add(&a, vec![1, 2]).await.unwrap();
        a.stop(None);
        h.await.unwrap();

        let journal = Arc::new(PredecessorWritesDuringReplay {
            inner: store.clone(),
            written: false.into(),
        });
        let mut persistence = handle(&store);
        persistence.journal = journal;
        let (a, h) = Actor::spawn(
            None,
            PersistentActor::new(Counter, "counter-1", persistence, EntitySettings::default()),
            (),
        )
        .await
        .unwrap();
        // The state and the sequence nr agree: the predecessor's event (seq 3) was written
        // after the highest sequence nr was read, so it is neither applied nor counted...
        assert_eq!(ractor::call!(a, Cmd::Get).unwrap(), (3, 2));
        // ...and this incarnation's first write collides with it instead of following it
        // with a state that never saw it.
        assert!(add(&a, vec![5]).await.is_err());
        stopped(h).await;
        // The next incarnation recovers all three events.
        assert_eq!(
            recovered(&store, EntitySettings::default()).await,
            (1003, 3)
        );
    }
}
