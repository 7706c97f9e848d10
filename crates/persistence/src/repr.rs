//! The stored representation of events and snapshots.
//!
//! This module owns the data types that cross the journal and snapshot-store boundary:
//! [`Payload`] (structured JSON-like data, so that a document store keeps it readable),
//! [`PersistentRepr`] (one event with its persistence id, sequence number, manifest, schema
//! version, tags, timestamp and writer id), [`AtomicWrite`] (events of one persistence id that are
//! stored all or nothing), [`Offset`] / [`EventEnvelope`] (events-by-tag results), the snapshot
//! types, and the [`Persistable`] trait that maps user types to manifests and schema versions.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{PersistenceError, Result};

/// Milliseconds since the Unix epoch, the timestamp unit of events and snapshots.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Structured event or snapshot data, held as JSON text that is known to be valid.
///
/// Backends store it in their most readable form: SQLite as JSON text, MongoDB as a BSON
/// document. Cloning is cheap (the text is shared).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Arc<str>);

impl Payload {
    /// Serializes a value to a payload.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        serde_json::to_string(value)
            .map(|s| Payload(s.into()))
            .map_err(|e| PersistenceError::Serialization(format!("cannot serialize payload: {e}")))
    }

    /// Wraps JSON text after checking that it is one valid JSON value.
    pub fn from_json(text: impl Into<String>) -> Result<Self> {
        let text = text.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| {
            PersistenceError::Serialization(format!("payload is not valid JSON: {e}"))
        })?;
        Ok(Payload(text.into()))
    }

    /// Wraps JSON text without validating it. Backends use this for text they wrote themselves
    /// (validated on the way in); a corrupt value still fails cleanly when it is decoded.
    pub fn from_json_unchecked(text: impl Into<Arc<str>>) -> Self {
        Payload(text.into())
    }

    /// Builds a payload from a JSON value.
    pub fn from_value(value: &serde_json::Value) -> Self {
        // Serializing a `Value` cannot fail: its keys are strings and its numbers are finite.
        Payload(value.to_string().into())
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// True when both payloads hold the same data: the same text, or text that parses to equal
    /// JSON values. A document store re-encodes what it stores (MongoDB keeps a payload as BSON
    /// and gives back JSON with its keys in another order), so what a backend returns need not
    /// be the text that was written.
    pub fn same_data(&self, other: &Payload) -> bool {
        self.0 == other.0 || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }

    /// Parses the payload into a JSON value.
    pub fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.0)
            .map_err(|e| PersistenceError::Serialization(format!("payload is not valid JSON: {e}")))
    }

    /// Deserializes the payload into a user type.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.0).map_err(|e| {
            PersistenceError::Serialization(format!(
                "cannot deserialize payload as {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// Size of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the JSON text is empty (never the case for a validated payload).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({})", self.0)
    }
}

/// One event as it is stored in a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentRepr {
    /// The id of the entity that wrote the event.
    pub persistence_id: String,
    /// The event's position in that entity's history, starting at 1.
    pub sequence_nr: u64,
    /// The type name of the payload, used to pick the decoder.
    pub manifest: String,
    /// The schema version of the payload, used to upcast old events.
    pub schema_version: u32,
    /// Tags for events-by-tag queries.
    pub tags: Vec<String>,
    /// The event data.
    pub payload: Payload,
    /// When the event was created, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// A unique id of the writer incarnation that stored the event.
    pub writer_uuid: String,
}

impl PersistentRepr {
    /// Encodes a user event as a stored representation, with the event's own manifest, schema
    /// version and tags and the current time.
    pub fn from_event<E: Persistable>(
        persistence_id: impl Into<String>,
        sequence_nr: u64,
        event: &E,
        writer_uuid: impl Into<String>,
    ) -> Result<Self> {
        Ok(PersistentRepr {
            persistence_id: persistence_id.into(),
            sequence_nr,
            manifest: E::MANIFEST.to_owned(),
            schema_version: E::SCHEMA_VERSION,
            tags: event.tags(),
            payload: Payload::from_serialize(event)?,
            timestamp: now_millis(),
            writer_uuid: writer_uuid.into(),
        })
    }

    /// Decodes the payload as a user event (through [`Persistable::decode`], which upcasts).
    pub fn decode<E: Persistable>(&self) -> Result<E> {
        E::decode(&self.manifest, self.schema_version, &self.payload)
    }
}

/// Largest sequence number or offset any backend accepts (SQLite and BSON store signed 64-bit
/// integers).
pub const MAX_SEQUENCE_NR: u64 = i64::MAX as u64;

/// Events of one persistence id that are stored all or nothing.
///
/// Built only through [`AtomicWrite::new`], which checks the invariants every backend relies on.
/// Cloning is cheap (the events are shared), so a write can be kept for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomicWrite {
    events: Arc<[PersistentRepr]>,
}

impl AtomicWrite {
    /// Checks and wraps events: at least one; one non-empty persistence id; sequence numbers
    /// from 1 to [`MAX_SEQUENCE_NR`], consecutive and ascending; no empty manifest or tag.
    pub fn new(events: Vec<PersistentRepr>) -> Result<Self> {
        let first = events.first().ok_or_else(|| {
            PersistenceError::InvalidInput("an atomic write needs at least one event".into())
        })?;
        if first.persistence_id.is_empty() {
            return Err(PersistenceError::InvalidInput(
                "persistence id must not be empty".into(),
            ));
        }
        for (i, e) in events.iter().enumerate() {
            if e.persistence_id != first.persistence_id {
                return Err(PersistenceError::InvalidInput(format!(
                    "an atomic write must have one persistence id, found '{}' and '{}'",
                    first.persistence_id, e.persistence_id
                )));
            }
            if e.sequence_nr == 0 || e.sequence_nr > MAX_SEQUENCE_NR {
                return Err(PersistenceError::InvalidInput(format!(
                    "sequence nr {} of '{}' is out of range 1..={MAX_SEQUENCE_NR}",
                    e.sequence_nr, e.persistence_id
                )));
            }
            if e.sequence_nr != first.sequence_nr + i as u64 {
                return Err(PersistenceError::InvalidInput(format!(
                    "sequence nrs of an atomic write must be consecutive: expected {} found {} for '{}'",
                    first.sequence_nr + i as u64,
                    e.sequence_nr,
                    e.persistence_id
                )));
            }
            if e.manifest.is_empty() {
                return Err(PersistenceError::InvalidInput(format!(
                    "event {} of '{}' has an empty manifest",
                    e.sequence_nr, e.persistence_id
                )));
            }
            if e.tags.iter().any(|t| t.is_empty()) {
                return Err(PersistenceError::InvalidInput(format!(
                    "event {} of '{}' has an empty tag",
                    e.sequence_nr, e.persistence_id
                )));
            }
        }
        Ok(AtomicWrite {
            events: events.into(),
        })
    }

    /// The persistence id of all events.
    pub fn persistence_id(&self) -> &str {
        &self.events[0].persistence_id
    }

    /// The lowest sequence number in the write.
    pub fn lowest_sequence_nr(&self) -> u64 {
        self.events[0].sequence_nr
    }

    /// The highest sequence number in the write.
    pub fn highest_sequence_nr(&self) -> u64 {
        self.events[self.events.len() - 1].sequence_nr
    }

    /// The events, in sequence-number order.
    pub fn events(&self) -> &[PersistentRepr] {
        &self.events
    }

    /// Number of events (never zero).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Always false: an atomic write has at least one event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events as a vector (a copy).
    pub fn into_events(self) -> Vec<PersistentRepr> {
        self.events.to_vec()
    }

    /// The rejection error for this write, with the given reason.
    pub fn rejected(&self, reason: impl Into<String>) -> PersistenceError {
        PersistenceError::Rejected {
            persistence_id: self.persistence_id().to_owned(),
            sequence_nr: self.lowest_sequence_nr(),
            reason: reason.into(),
        }
    }
}

/// An exclusive, resumable position in an events-by-tag stream.
///
/// A query started at offset `o` returns only events whose offset is greater than `o`; to resume,
/// pass the offset of the last event processed. [`Offset::START`] reads from the beginning.
/// Offsets of one tag are strictly increasing; they need not be contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    /// Before the first event.
    pub const START: Offset = Offset(0);

    /// The numeric value.
    pub fn value(self) -> u64 {
        self.0
    }
}

/// One result of an events-by-tag query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope {
    /// The event's offset; resume after it by passing it as the next query's offset.
    pub offset: Offset,
    /// The event.
    pub event: PersistentRepr,
}

/// Identifies one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotMetadata {
    /// The entity the snapshot belongs to.
    pub persistence_id: String,
    /// The sequence number of the last event the snapshot includes.
    pub sequence_nr: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl SnapshotMetadata {
    /// Metadata with the current time.
    pub fn new(persistence_id: impl Into<String>, sequence_nr: u64) -> Self {
        SnapshotMetadata {
            persistence_id: persistence_id.into(),
            sequence_nr,
            timestamp: now_millis(),
        }
    }

    /// Checks the persistence id and sequence number ranges.
    pub fn validate(&self) -> Result<()> {
        if self.persistence_id.is_empty() {
            return Err(PersistenceError::InvalidInput(
                "persistence id must not be empty".into(),
            ));
        }
        if self.sequence_nr > MAX_SEQUENCE_NR {
            return Err(PersistenceError::InvalidInput(format!(
                "snapshot sequence nr {} is out of range 0..={MAX_SEQUENCE_NR}",
                self.sequence_nr
            )));
        }
        Ok(())
    }
}

/// The data of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotData {
    /// Type name of the snapshot state.
    pub manifest: String,
    /// Schema version of the snapshot state.
    pub schema_version: u32,
    /// The state.
    pub payload: Payload,
}

impl SnapshotData {
    /// Encodes a user state.
    pub fn from_state<S: Persistable>(state: &S) -> Result<Self> {
        Ok(SnapshotData {
            manifest: S::MANIFEST.to_owned(),
            schema_version: S::SCHEMA_VERSION,
            payload: Payload::from_serialize(state)?,
        })
    }

    /// Decodes the state (through [`Persistable::decode`], which upcasts).
    pub fn decode<S: Persistable>(&self) -> Result<S> {
        S::decode(&self.manifest, self.schema_version, &self.payload)
    }
}

/// A snapshot found by a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedSnapshot {
    /// Which snapshot it is.
    pub metadata: SnapshotMetadata,
    /// Its data.
    pub data: SnapshotData,
}

/// Selects snapshots by sequence number and timestamp ranges (all bounds inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSelectionCriteria {
    /// Highest sequence number selected.
    pub max_sequence_nr: u64,
    /// Latest timestamp selected.
    pub max_timestamp: i64,
    /// Lowest sequence number selected.
    pub min_sequence_nr: u64,
    /// Earliest timestamp selected.
    pub min_timestamp: i64,
}

impl SnapshotSelectionCriteria {
    /// Every snapshot (a load picks the latest).
    pub fn latest() -> Self {
        SnapshotSelectionCriteria {
            max_sequence_nr: MAX_SEQUENCE_NR,
            max_timestamp: i64::MAX,
            min_sequence_nr: 0,
            min_timestamp: 0,
        }
    }

    /// No snapshot at all.
    pub fn none() -> Self {
        SnapshotSelectionCriteria {
            max_sequence_nr: 0,
            max_timestamp: 0,
            min_sequence_nr: 1,
            min_timestamp: 1,
        }
    }

    /// Snapshots with a sequence number of at most `max`.
    pub fn max_sequence_nr(max: u64) -> Self {
        SnapshotSelectionCriteria {
            max_sequence_nr: max.min(MAX_SEQUENCE_NR),
            ..Self::latest()
        }
    }

    /// True when the snapshot matches.
    pub fn matches(&self, m: &SnapshotMetadata) -> bool {
        m.sequence_nr <= self.max_sequence_nr
            && m.sequence_nr >= self.min_sequence_nr
            && m.timestamp <= self.max_timestamp
            && m.timestamp >= self.min_timestamp
    }

    /// The bounds clamped to what a backend storing signed 64-bit integers can compare:
    /// `(min_seq, max_seq, min_ts, max_ts)`.
    pub fn clamped(&self) -> (i64, i64, i64, i64) {
        (
            self.min_sequence_nr.min(MAX_SEQUENCE_NR) as i64,
            self.max_sequence_nr.min(MAX_SEQUENCE_NR) as i64,
            self.min_timestamp,
            self.max_timestamp,
        )
    }
}

/// A user type that can be stored as an event or a snapshot.
///
/// The manifest names the type in storage (keep it stable when renaming the Rust type) and the
/// schema version says which shape the payload has. When the shape changes, raise
/// `SCHEMA_VERSION` and override [`Persistable::decode`] to upcast older payloads.
pub trait Persistable: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stable type name stored with every payload.
    const MANIFEST: &'static str;
    /// Current schema version of the payload.
    const SCHEMA_VERSION: u32 = 1;

    /// Tags for events-by-tag queries (ignored for snapshots).
    fn tags(&self) -> Vec<String> {
        Vec::new()
    }

    /// Decodes a stored payload. The default accepts only this type's manifest and current
    /// schema version and refuses anything else with a clear error; override it to upcast.
    fn decode(manifest: &str, schema_version: u32, payload: &Payload) -> Result<Self> {
        if manifest != Self::MANIFEST {
            return Err(PersistenceError::Serialization(format!(
                "manifest '{manifest}' cannot be decoded as '{}'",
                Self::MANIFEST
            )));
        }
        if schema_version != Self::SCHEMA_VERSION {
            return Err(PersistenceError::Serialization(format!(
                "'{manifest}' schema version {schema_version} is not supported (current is {}); \
                 override Persistable::decode to upcast it",
                Self::SCHEMA_VERSION
            )));
        }
        payload.deserialize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_with_the_same_data_in_another_key_order_are_the_same_data() {
        let written = Payload::from_json(r#"{"seq":1,"price":101.25,"at":{"z":1,"a":2}}"#).unwrap();
        let reencoded =
            Payload::from_json(r#"{"at":{"a":2,"z":1},"price":101.25,"seq":1}"#).unwrap();
        assert_ne!(written, reencoded);
        assert!(written.same_data(&reencoded));
        let other = Payload::from_json(r#"{"seq":2,"price":101.25,"at":{"z":1,"a":2}}"#).unwrap();
        assert!(!written.same_data(&other));
    }

    fn repr(pid: &str, seq: u64) -> PersistentRepr {
        PersistentRepr {
            persistence_id: pid.into(),
            sequence_nr: seq,
            manifest: "T".into(),
            schema_version: 1,
            tags: vec![],
            payload: Payload::from_json("1").unwrap(),
            timestamp: 0,
            writer_uuid: "w".into(),
        }
    }

    #[test]
    fn atomic_write_checks_invariants() {
        assert!(AtomicWrite::new(vec![]).is_err());
        assert!(AtomicWrite::new(vec![repr("", 1)]).is_err());
        assert!(AtomicWrite::new(vec![repr("a", 0)]).is_err());
        assert!(AtomicWrite::new(vec![repr("a", MAX_SEQUENCE_NR + 1)]).is_err());
        assert!(AtomicWrite::new(vec![repr("a", 1), repr("b", 2)]).is_err());
        assert!(AtomicWrite::new(vec![repr("a", 1), repr("a", 3)]).is_err());
        assert!(AtomicWrite::new(vec![repr("a", 2), repr("a", 1)]).is_err());
        let mut bad_tag = repr("a", 1);
        bad_tag.tags = vec![String::new()];
        assert!(AtomicWrite::new(vec![bad_tag]).is_err());
        let w = AtomicWrite::new(vec![repr("a", 4), repr("a", 5)]).unwrap();
        assert_eq!((w.lowest_sequence_nr(), w.highest_sequence_nr()), (4, 5));
        match w.rejected("dup") {
            PersistenceError::Rejected {
                persistence_id,
                sequence_nr,
                ..
            } => {
                assert_eq!((persistence_id.as_str(), sequence_nr), ("a", 4))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn payload_validates_json() {
        assert!(Payload::from_json("{\"a\":").is_err());
        assert!(Payload::from_json("{} {}").is_err());
        let p = Payload::from_json("{\"a\":[1,2.5,\"x\"]}").unwrap();
        assert_eq!(p.to_value().unwrap()["a"][1], serde_json::json!(2.5));
        assert!(p.deserialize::<u32>().is_err());
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Ev {
        n: u32,
    }
    impl Persistable for Ev {
        const MANIFEST: &'static str = "Ev";
        const SCHEMA_VERSION: u32 = 2;
    }

    #[test]
    fn persistable_default_decode_refuses_other_manifest_and_version() {
        let r = PersistentRepr::from_event("p", 1, &Ev { n: 3 }, "w").unwrap();
        assert_eq!(r.decode::<Ev>().unwrap(), Ev { n: 3 });
        let mut other = r.clone();
        other.manifest = "Other".into();
        assert!(matches!(
            other.decode::<Ev>(),
            Err(PersistenceError::Serialization(_))
        ));
        let mut old = r;
        old.schema_version = 1;
        let err = old.decode::<Ev>().unwrap_err().to_string();
        assert!(err.contains("schema version 1"), "{err}");
    }

    #[test]
    fn criteria_match_bounds() {
        let m = SnapshotMetadata {
            persistence_id: "p".into(),
            sequence_nr: 5,
            timestamp: 100,
        };
        assert!(SnapshotSelectionCriteria::latest().matches(&m));
        assert!(!SnapshotSelectionCriteria::none().matches(&m));
        assert!(SnapshotSelectionCriteria::max_sequence_nr(5).matches(&m));
        assert!(!SnapshotSelectionCriteria::max_sequence_nr(4).matches(&m));
        let c = SnapshotSelectionCriteria {
            max_timestamp: 99,
            ..SnapshotSelectionCriteria::latest()
        };
        assert!(!c.matches(&m));
    }
}
