//! Typed errors of the persistence layer.
//!
//! This module owns [`PersistenceError`], the one error type every journal, snapshot store and
//! query returns. Its variants let a caller tell apart the cases that need different reactions:
//! a write the store refused for good ([`PersistenceError::Rejected`], e.g. the sequence number is
//! already taken by another writer), a store that cannot be reached right now
//! ([`PersistenceError::Unavailable`], worth retrying later), and data that cannot be encoded or
//! decoded ([`PersistenceError::Serialization`]).

/// Everything that can go wrong in a journal, snapshot store or query.
///
/// The type is `Clone` so that one failed batch can report the same error to every writer that
/// took part in it (see [`crate::group_commit`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistenceError {
    /// The store refused this write and will refuse it again: typically the sequence number is
    /// already taken (another writer with the same persistence id, or a duplicate key). Nothing of
    /// the refused atomic write was stored.
    #[error(
        "write rejected for persistence id '{persistence_id}' at sequence nr {sequence_nr}: {reason}"
    )]
    Rejected {
        /// The persistence id of the refused write.
        persistence_id: String,
        /// The lowest sequence number of the refused atomic write.
        sequence_nr: u64,
        /// Why the store refused it.
        reason: String,
    },
    /// The store cannot be reached or did not answer in time. The operation may be retried; for a
    /// write the outcome is unknown (it may or may not have been stored).
    #[error("persistence store unavailable: {0}")]
    Unavailable(String),
    /// An event, snapshot or stored document could not be encoded or decoded.
    #[error("serialization failed: {0}")]
    Serialization(String),
    /// The caller passed something the store cannot accept (empty persistence id, sequence
    /// numbers out of order, a value out of range, ...). Nothing was stored.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Data read back from the store does not have the expected shape.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Any other failure reported by the backend.
    #[error("persistence backend error: {0}")]
    Backend(String),
}

impl PersistenceError {
    /// True for [`PersistenceError::Unavailable`]: the operation may succeed if tried again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PersistenceError::Unavailable(_))
    }

    /// True for [`PersistenceError::Rejected`].
    pub fn is_rejected(&self) -> bool {
        matches!(self, PersistenceError::Rejected { .. })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = PersistenceError> = std::result::Result<T, E>;
