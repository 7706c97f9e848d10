//! The backend traits: [`Journal`], [`SnapshotStore`] and [`EventsByTagQuery`].
//!
//! This module owns the contract every backend (in-memory, SQLite, MongoDB) implements and the
//! conformance suite (module `tck`, feature `tck`) checks. The traits are object safe, so runtimes hold them
//! as `Arc<dyn Journal>` and so on.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::Result;
use crate::repr::{
    AtomicWrite, EventEnvelope, Offset, PersistentRepr, SelectedSnapshot, SnapshotData,
    SnapshotMetadata, SnapshotSelectionCriteria,
};

/// An append-only event log, keyed by persistence id and sequence number.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Stores each atomic write all or nothing, in the given order.
    ///
    /// Returns one result per atomic write: `Ok(())` when it is durable, or
    /// [`crate::PersistenceError::Rejected`] when its sequence numbers are taken (then none of its
    /// events is stored, and the other writes are unaffected). The outer error means the whole
    /// call failed (for example [`crate::PersistenceError::Unavailable`]); then the outcome of every
    /// write is unknown.
    async fn write_messages(&self, writes: Vec<AtomicWrite>) -> Result<Vec<Result<()>>>;

    /// Events of `persistence_id` with `from_sequence_nr <= sequence_nr <= to_sequence_nr`, in
    /// sequence-number order, at most `max` of them. Deleted events are not returned.
    async fn replay_messages(
        &self,
        persistence_id: &str,
        from_sequence_nr: u64,
        to_sequence_nr: u64,
        max: u64,
    ) -> Result<Vec<PersistentRepr>>;

    /// The highest sequence number ever stored for `persistence_id` (0 if none), including
    /// events that were deleted since. `from_sequence_nr` is a hint: the result is never below it
    /// unless nothing at or above it was stored.
    async fn highest_sequence_nr(&self, persistence_id: &str, from_sequence_nr: u64)
    -> Result<u64>;

    /// Deletes the events of `persistence_id` up to and including `to_sequence_nr`. The highest
    /// sequence number is kept, so it never goes down.
    async fn delete_messages_to(&self, persistence_id: &str, to_sequence_nr: u64) -> Result<()>;
}

/// Stores snapshots of entity state.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Saves a snapshot; an existing snapshot with the same persistence id and sequence number is
    /// overwritten.
    async fn save_snapshot(&self, metadata: SnapshotMetadata, data: SnapshotData) -> Result<()>;

    /// The matching snapshot with the highest sequence number (then the latest timestamp), if any.
    async fn load_snapshot(
        &self,
        persistence_id: &str,
        criteria: SnapshotSelectionCriteria,
    ) -> Result<Option<SelectedSnapshot>>;

    /// Deletes the snapshot with this persistence id and sequence number (no error if absent).
    async fn delete_snapshot(&self, metadata: &SnapshotMetadata) -> Result<()>;

    /// Deletes every snapshot of `persistence_id` that matches the criteria.
    async fn delete_snapshots(
        &self,
        persistence_id: &str,
        criteria: SnapshotSelectionCriteria,
    ) -> Result<()>;
}

/// Reads events by tag and lists persistence ids.
///
/// Backends implement one page at a time; [`crate::query`] builds the current and live streams on
/// top. The one hard rule: a page only contains events from a *gap-free prefix* of the tag's
/// ordering. Once a page returned an event at offset `o`, no event with an offset `<= o` may
/// become visible later, so a reader that resumes after `o` never skips anything.
#[async_trait]
pub trait EventsByTagQuery: Send + Sync + 'static {
    /// Up to `limit` events tagged `tag` with an offset greater than `after`, in offset order.
    /// Fewer than `limit` (possibly none) means the reader has caught up for now.
    async fn events_by_tag_page(
        &self,
        tag: &str,
        after: Offset,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>>;

    /// Every persistence id that has written an event (including ids whose events were deleted).
    async fn current_persistence_ids(&self) -> Result<Vec<String>>;

    /// How long a live query waits between polls when it has caught up.
    fn refresh_interval(&self) -> Duration;

    /// A signal that changes whenever this process commits new events, so live queries in the
    /// same process wake up at once instead of waiting for the next poll. `None` when the backend
    /// has no such signal.
    fn commit_signal(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}
