//! Event persistence for the actor runtime, free of any business knowledge.
//!
//! This crate owns the persistence contract and the parts every backend shares:
//!
//! - [`traits`]: the async [`Journal`], [`SnapshotStore`] and [`EventsByTagQuery`] traits;
//! - [`error`]: [`PersistenceError`], which tells a rejected write from an unavailable store;
//! - [`repr`]: the stored representation ([`PersistentRepr`], [`AtomicWrite`], [`Payload`],
//!   snapshots, [`Offset`]) and the [`Persistable`] trait for user types;
//! - [`query`]: current and live events-by-tag streams with exclusive, resumable offsets;
//! - [`memory`]: an in-memory backend for unit tests;
//! - [`resilience`]: circuit breaker and bounded retry with backoff;
//! - [`group_commit`]: a batching writer that coalesces many entities' writes into one call;
//! - [`actor`]: a persistent-actor helper on `ractor` (recovery, `persist`, snapshots);
//! - `tck` (feature `tck`): the conformance suite every backend runs.
//!
//! Backends live in their own crates (`persistence-sqlite`, `persistence-mongodb`).

#![warn(missing_docs)]

pub mod actor;
pub mod error;
pub mod group_commit;
pub mod memory;
pub mod query;
pub mod repr;
pub mod resilience;
#[cfg(any(test, feature = "tck"))]
pub mod tck;
pub mod traits;

pub use actor::{
    EntityContext, EntitySettings, EntityState, PersistenceConfig, PersistenceHandle,
    PersistentActor, PersistentBehavior,
};
pub use error::{PersistenceError, Result};
pub use group_commit::{GroupCommitConfig, GroupCommitWriter};
pub use memory::InMemoryStore;
pub use query::{current_events_by_tag, events_by_tag, events_by_tag_polled};
pub use repr::{
    AtomicWrite, EventEnvelope, MAX_SEQUENCE_NR, Offset, Payload, Persistable, PersistentRepr,
    SelectedSnapshot, SnapshotData, SnapshotMetadata, SnapshotSelectionCriteria, now_millis,
};
pub use resilience::{CircuitBreaker, CircuitBreakerConfig, ResilientJournal, RetryPolicy};
pub use traits::{EventsByTagQuery, Journal, SnapshotStore};

#[cfg(test)]
mod memory_tck {
    //! The conformance suite against the in-memory backend.
    use std::sync::Arc;

    use crate::memory::InMemoryStore;
    use crate::tck::TckBackend;

    struct Memory(InMemoryStore);

    impl TckBackend for Memory {
        type Store = InMemoryStore;
        async fn open(&self) -> Arc<InMemoryStore> {
            Arc::new(self.0.clone())
        }
    }

    crate::tck_suite!(Memory(InMemoryStore::new()));
}
