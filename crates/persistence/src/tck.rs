//! The conformance suite (the Akka Persistence TCK cases), written once for every backend.
//!
//! This module owns the behaviour every backend must show: replay bounds and limits, highest
//! sequence number across deletion, atomic and rejected writes, a retried write meeting its own
//! stored events, snapshot selection and deletion, and events by tag (current, live, exclusive
//! offset, resume after a restart, persistence ids, and no lost or repeated event under
//! concurrent writers). A backend crate implements
//! [`TckBackend`] for a fixture and expands [`crate::tck_suite!`] in a test file, which turns every
//! case into its own `#[tokio::test]`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::error::{PersistenceError, Result};
use crate::query::{current_events_by_tag, events_by_tag};
use crate::repr::{
    AtomicWrite, EventEnvelope, MAX_SEQUENCE_NR, Offset, Payload, PersistentRepr, SnapshotData,
    SnapshotMetadata, SnapshotSelectionCriteria,
};
use crate::resilience::{CircuitBreakerConfig, ResilientJournal, RetryPolicy};
use crate::traits::{EventsByTagQuery, Journal, SnapshotStore};

/// A backend under test: a fixture that owns one storage (a temp dir, a database) and opens
/// handles onto it.
pub trait TckBackend: Send + Sync + 'static {
    /// The store type, implementing all three traits.
    type Store: Journal + SnapshotStore + EventsByTagQuery;

    /// A new handle onto this fixture's storage (like a process restart: same data, new
    /// connection).
    fn open(&self) -> impl Future<Output = Arc<Self::Store>> + Send;

    /// Events each of the 8 writers stores in the concurrency case. 10,000 unless a backend is
    /// too slow for that (say why where you override it).
    fn events_per_concurrent_writer(&self) -> usize {
        10_000
    }

    /// How long a live query may take to deliver an event before the case fails.
    fn live_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// Expands every conformance case as a `#[tokio::test]` for the backend fixture that `$backend`
/// (an expression, evaluated inside an async test, `.await` allowed) produces.
///
/// The crate expanding it needs `tokio` (features `macros`, `rt-multi-thread`) as a
/// dev-dependency and `persistence` with feature `tck`:
///
/// ```ignore
/// struct Fixture { /* a temp dir, a database name, ... */ }
/// impl persistence::tck::TckBackend for Fixture { /* open() a handle onto it */ }
/// persistence::tck_suite!(Fixture::new());
/// ```
#[macro_export]
macro_rules! tck_suite {
    ($backend:expr) => {
        $crate::tck_suite!(@cases $backend;
            replay_all, replay_with_lower_bound, replay_with_upper_bound, replay_with_max,
            replay_with_lower_upper_and_max, replay_single_when_lower_equals_upper,
            replay_single_when_max_is_one, replay_none_when_max_is_zero,
            replay_none_when_lower_above_upper, replay_none_when_nothing_written,
            highest_sequence_nr_without_replay, no_replay_of_deleted_messages,
            highest_sequence_nr_not_reset_by_deletion, atomic_write_of_several_events,
            duplicate_sequence_nr_is_rejected_alone, payload_round_trips_structured_data,
            retried_write_whose_answer_was_lost_is_stored_once,
            snapshot_none_for_unknown_id, snapshot_criteria_by_sequence_nr,
            snapshot_criteria_by_timestamp, snapshot_latest, snapshot_latest_under_bounds,
            snapshot_delete_one, snapshot_delete_by_criteria, snapshot_overwrite_same_sequence_nr,
            events_by_tag_current, events_by_tag_live, events_by_tag_exclusive_offset,
            events_by_tag_resume_after_restart, current_persistence_ids,
            concurrent_writers_with_live_tag_reader);
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $backend;
                $crate::tck::$case(&backend).await;
            }
        )*
    };
}

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// A test event with a structured payload and the given tags.
pub fn event(pid: &str, seq: u64, tags: &[&str]) -> PersistentRepr {
    PersistentRepr {
        persistence_id: pid.to_owned(),
        sequence_nr: seq,
        manifest: "TckEvent".into(),
        schema_version: 2,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        payload: Payload::from_value(&serde_json::json!({
            "pid": pid,
            "seq": seq,
            "price": 101.25,
            "quantity": -7,
            "note": "grüße ✓",
            "lines": [1, 2, {"deep": true}],
        })),
        timestamp: 1_700_000_000_000 + seq as i64,
        writer_uuid: "tck-writer".into(),
    }
}

fn single(e: PersistentRepr) -> AtomicWrite {
    AtomicWrite::new(vec![e]).expect("valid atomic write")
}

/// Asserts that a stored event equals the written one (payloads compared as JSON values, since a
/// document store may re-encode the text).
pub fn assert_same_event(actual: &PersistentRepr, expected: &PersistentRepr) {
    assert_eq!(actual.persistence_id, expected.persistence_id);
    assert_eq!(actual.sequence_nr, expected.sequence_nr);
    assert_eq!(actual.manifest, expected.manifest);
    assert_eq!(actual.schema_version, expected.schema_version);
    assert_eq!(actual.tags, expected.tags);
    assert_eq!(actual.timestamp, expected.timestamp);
    assert_eq!(actual.writer_uuid, expected.writer_uuid);
    assert_eq!(
        actual.payload.to_value().unwrap(),
        expected.payload.to_value().unwrap()
    );
}

/// Writes events 1..=n of `pid`, one atomic write each, in one call; all must succeed.
async fn write_n<S: Journal + ?Sized>(store: &S, pid: &str, n: u64, tags: &[&str]) {
    let writes = (1..=n).map(|s| single(event(pid, s, tags))).collect();
    for r in store.write_messages(writes).await.expect("write call") {
        r.expect("write accepted");
    }
}

async fn seqs<S: Journal + ?Sized>(store: &S, pid: &str, from: u64, to: u64, max: u64) -> Vec<u64> {
    store
        .replay_messages(pid, from, to, max)
        .await
        .expect("replay")
        .iter()
        .map(|e| e.sequence_nr)
        .collect()
}

async fn five<B: TckBackend>(b: &B) -> (Arc<B::Store>, String) {
    let store = b.open().await;
    let pid = unique("p");
    write_n(&*store, &pid, 5, &[]).await;
    (store, pid)
}

/// Replay returns every event, in order, exactly as written.
pub async fn replay_all<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    let got = s
        .replay_messages(&pid, 1, MAX_SEQUENCE_NR, u64::MAX)
        .await
        .unwrap();
    assert_eq!(got.len(), 5);
    for (i, e) in got.iter().enumerate() {
        assert_same_event(e, &event(&pid, i as u64 + 1, &[]));
    }
}

/// Replay from a lower bound.
pub async fn replay_with_lower_bound<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    assert_eq!(seqs(&*s, &pid, 3, u64::MAX, u64::MAX).await, vec![3, 4, 5]);
}

/// Replay up to an upper bound.
pub async fn replay_with_upper_bound<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    assert_eq!(seqs(&*s, &pid, 1, 3, u64::MAX).await, vec![1, 2, 3]);
}

/// Replay at most `max` events.
pub async fn replay_with_max<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    assert_eq!(seqs(&*s, &pid, 1, u64::MAX, 2).await, vec![1, 2]);
}

/// Lower bound, upper bound and max together.
pub async fn replay_with_lower_upper_and_max<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    assert_eq!(seqs(&*s, &pid, 2, 5, 3).await, vec![2, 3, 4]);
    assert_eq!(seqs(&*s, &pid, 2, 3, 5).await, vec![2, 3]);
}

/// One event when lower equals upper.
pub async fn replay_single_when_lower_equals_upper<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    assert_eq!(seqs(&*s, &pid, 2, 2, u64::MAX).await, vec![2]);
}

/// One event when max is 1.
pub async fn replay_single_when_max_is_one<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    assert_eq!(seqs(&*s, &pid, 2, u64::MAX, 1).await, vec![2]);
}

/// Nothing when max is 0.
pub async fn replay_none_when_max_is_zero<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    assert!(seqs(&*s, &pid, 1, u64::MAX, 0).await.is_empty());
}

/// Nothing when lower is above upper.
pub async fn replay_none_when_lower_above_upper<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    assert!(seqs(&*s, &pid, 3, 2, u64::MAX).await.is_empty());
}

/// Nothing for an id that never wrote.
pub async fn replay_none_when_nothing_written<B: TckBackend>(b: &B) {
    let (s, _) = five(b).await;
    assert!(
        seqs(&*s, &unique("never"), 1, u64::MAX, u64::MAX)
            .await
            .is_empty()
    );
}

/// The highest sequence number is available without replaying.
pub async fn highest_sequence_nr_without_replay<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    assert_eq!(s.highest_sequence_nr(&pid, 0).await.unwrap(), 5);
    assert_eq!(s.highest_sequence_nr(&pid, 3).await.unwrap(), 5);
    assert_eq!(s.highest_sequence_nr(&unique("never"), 0).await.unwrap(), 0);
}

/// Deleted events are not replayed.
pub async fn no_replay_of_deleted_messages<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    s.delete_messages_to(&pid, 3).await.unwrap();
    assert_eq!(seqs(&*s, &pid, 1, u64::MAX, u64::MAX).await, vec![4, 5]);
    // Deleting up to the same point again changes nothing.
    s.delete_messages_to(&pid, 3).await.unwrap();
    assert_eq!(seqs(&*s, &pid, 1, u64::MAX, u64::MAX).await, vec![4, 5]);
}

/// Deleting every event keeps the highest sequence number; writing continues after it.
pub async fn highest_sequence_nr_not_reset_by_deletion<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    s.delete_messages_to(&pid, 5).await.unwrap();
    assert!(seqs(&*s, &pid, 1, u64::MAX, u64::MAX).await.is_empty());
    assert_eq!(s.highest_sequence_nr(&pid, 0).await.unwrap(), 5);
    // Deleting beyond the highest number does not raise it.
    s.delete_messages_to(&pid, 100).await.unwrap();
    assert_eq!(s.highest_sequence_nr(&pid, 0).await.unwrap(), 5);
    // A reopened handle sees the same.
    let s2 = b.open().await;
    assert_eq!(s2.highest_sequence_nr(&pid, 0).await.unwrap(), 5);
    s2.write_messages(vec![single(event(&pid, 6, &[]))])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(s2.highest_sequence_nr(&pid, 0).await.unwrap(), 6);
    assert_eq!(seqs(&*s2, &pid, 1, u64::MAX, u64::MAX).await, vec![6]);
}

/// Several events are stored all or nothing.
pub async fn atomic_write_of_several_events<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    let w = AtomicWrite::new((6..=8).map(|q| event(&pid, q, &[])).collect()).unwrap();
    s.write_messages(vec![w]).await.unwrap().remove(0).unwrap();
    assert_eq!(
        seqs(&*s, &pid, 1, u64::MAX, u64::MAX).await,
        (1..=8).collect::<Vec<_>>()
    );
    // 8 is taken: the whole write [8, 9, 10] is refused and 9 and 10 are not stored.
    let w = AtomicWrite::new((8..=10).map(|q| event(&pid, q, &[])).collect()).unwrap();
    let r = s.write_messages(vec![w]).await.unwrap().remove(0);
    match r {
        Err(PersistenceError::Rejected {
            persistence_id,
            sequence_nr,
            ..
        }) => {
            assert_eq!((persistence_id.as_str(), sequence_nr), (pid.as_str(), 8));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        seqs(&*s, &pid, 1, u64::MAX, u64::MAX).await,
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(s.highest_sequence_nr(&pid, 0).await.unwrap(), 8);
}

/// A taken sequence number is rejected without affecting other writes of the same call.
pub async fn duplicate_sequence_nr_is_rejected_alone<B: TckBackend>(b: &B) {
    let (s, pid) = five(b).await;
    let other = unique("other");
    let mut dup = event(&pid, 5, &[]);
    dup.writer_uuid = "someone-else".into();
    let r = s
        .write_messages(vec![
            single(dup),
            single(event(&other, 1, &[])),
            single(event(&pid, 6, &[])),
        ])
        .await
        .unwrap();
    assert!(matches!(&r[0], Err(e) if e.is_rejected()), "{:?}", r[0]);
    assert!(r[1].is_ok(), "{:?}", r[1]);
    assert!(r[2].is_ok(), "{:?}", r[2]);
    let stored = s.replay_messages(&pid, 5, 5, 1).await.unwrap();
    assert_eq!(
        stored[0].writer_uuid, "tck-writer",
        "the first writer's event must stay"
    );
    assert_eq!(seqs(&*s, &other, 1, u64::MAX, u64::MAX).await, vec![1]);
}

/// Structured payloads (nested objects, arrays, unicode, extreme integers, floats, null) and tags
/// survive the round trip.
pub async fn payload_round_trips_structured_data<B: TckBackend>(b: &B) {
    let s = b.open().await;
    let pid = unique("payload");
    let mut e = event(&pid, 1, &["a", "b-c", "ünï"]);
    e.payload = Payload::from_value(&serde_json::json!({
        "max": i64::MAX, "min": i64::MIN, "zero": 0, "f": -0.5, "big": 1.0e300,
        "s": "line\nbreak \"quoted\" 😀", "none": null, "yes": true,
        "list": [[], {}, [1, [2, [3]]]], "obj": {"k": {"k": {"k": "v"}}}
    }));
    let mut scalar = event(&pid, 2, &[]);
    scalar.payload = Payload::from_json("\"just a string\"").unwrap();
    let mut array = event(&pid, 3, &[]);
    array.payload = Payload::from_json("[1,\"two\",3.5]").unwrap();
    let writes = vec![
        single(e.clone()),
        single(scalar.clone()),
        single(array.clone()),
    ];
    for r in s.write_messages(writes).await.unwrap() {
        r.unwrap();
    }
    let got = b.open().await.replay_messages(&pid, 1, 3, 3).await.unwrap();
    assert_same_event(&got[0], &e);
    assert_same_event(&got[1], &scalar);
    assert_same_event(&got[2], &array);
}

/// A journal that stores the first write it is given and then reports the store unavailable,
/// as when the answer is lost on the network; every other call passes through.
pub struct LosesFirstAnswer<J: ?Sized> {
    inner: Arc<J>,
    lost: std::sync::atomic::AtomicBool,
}

impl<J: ?Sized> LosesFirstAnswer<J> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<J>) -> Self {
        LosesFirstAnswer {
            inner,
            lost: false.into(),
        }
    }
}

#[async_trait::async_trait]
impl<J: Journal + ?Sized> Journal for LosesFirstAnswer<J> {
    async fn write_messages(&self, writes: Vec<AtomicWrite>) -> Result<Vec<Result<()>>> {
        let r = self.inner.write_messages(writes).await?;
        if !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(PersistenceError::Unavailable("connection reset".into()));
        }
        Ok(r)
    }
    async fn replay_messages(
        &self,
        p: &str,
        f: u64,
        t: u64,
        m: u64,
    ) -> Result<Vec<PersistentRepr>> {
        self.inner.replay_messages(p, f, t, m).await
    }
    async fn highest_sequence_nr(&self, p: &str, f: u64) -> Result<u64> {
        self.inner.highest_sequence_nr(p, f).await
    }
    async fn delete_messages_to(&self, p: &str, t: u64) -> Result<()> {
        self.inner.delete_messages_to(p, t).await
    }
}

/// A write that was stored but whose answer was lost, retried by [`ResilientJournal`], meets
/// its own events and is reported stored, not rejected. The retry recognises them by the data
/// this backend gives back, which need not be the text written: the payload's keys are in the
/// order serde writes a struct's fields, not sorted.
pub async fn retried_write_whose_answer_was_lost_is_stored_once<B: TckBackend>(b: &B) {
    let s = b.open().await;
    let pid = unique("lost-answer");
    let mut e = event(&pid, 1, &[]);
    e.payload =
        Payload::from_json(r#"{"seq":1,"price":101.25,"id":"b-1","at":{"z":1,"a":[2,0.5]}}"#)
            .unwrap();
    let journal = ResilientJournal::new(
        Arc::new(LosesFirstAnswer::new(s.clone())),
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        },
        CircuitBreakerConfig::default(),
    );
    let r = journal.write_messages(vec![single(e.clone())]).await;
    let r = r.expect("write call");
    assert!(r[0].is_ok(), "own earlier write reported as {:?}", r[0]);
    let stored = s
        .replay_messages(&pid, 1, u64::MAX, u64::MAX)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_same_event(&stored[0], &e);
}

fn snap(pid: &str, seq: u64, ts: i64) -> (SnapshotMetadata, SnapshotData) {
    (
        SnapshotMetadata {
            persistence_id: pid.to_owned(),
            sequence_nr: seq,
            timestamp: ts,
        },
        SnapshotData {
            manifest: "TckState".into(),
            schema_version: 3,
            payload: Payload::from_value(&serde_json::json!({"at": seq, "items": [seq, ts]})),
        },
    )
}

/// Saves snapshots at sequence numbers 10, 20, 30 with timestamps 1000, 2000, 3000.
async fn three_snapshots<B: TckBackend>(b: &B) -> (Arc<B::Store>, String) {
    let s = b.open().await;
    let pid = unique("snap");
    for (seq, ts) in [(10, 1000), (20, 2000), (30, 3000)] {
        let (m, d) = snap(&pid, seq, ts);
        s.save_snapshot(m, d).await.unwrap();
    }
    (s, pid)
}

async fn loaded_seq<S: SnapshotStore + ?Sized>(
    s: &S,
    pid: &str,
    c: SnapshotSelectionCriteria,
) -> Option<u64> {
    s.load_snapshot(pid, c)
        .await
        .unwrap()
        .map(|x| x.metadata.sequence_nr)
}

/// No snapshot for an id that never saved one.
pub async fn snapshot_none_for_unknown_id<B: TckBackend>(b: &B) {
    let (s, _) = three_snapshots(b).await;
    assert_eq!(
        loaded_seq(&*s, &unique("never"), SnapshotSelectionCriteria::latest()).await,
        None
    );
}

/// Selection by maximum (and minimum) sequence number.
pub async fn snapshot_criteria_by_sequence_nr<B: TckBackend>(b: &B) {
    let (s, pid) = three_snapshots(b).await;
    let c = SnapshotSelectionCriteria::max_sequence_nr;
    assert_eq!(loaded_seq(&*s, &pid, c(25)).await, Some(20));
    assert_eq!(loaded_seq(&*s, &pid, c(20)).await, Some(20));
    assert_eq!(loaded_seq(&*s, &pid, c(5)).await, None);
    let min = SnapshotSelectionCriteria {
        min_sequence_nr: 31,
        ..SnapshotSelectionCriteria::latest()
    };
    assert_eq!(loaded_seq(&*s, &pid, min).await, None);
}

/// Selection by timestamp.
pub async fn snapshot_criteria_by_timestamp<B: TckBackend>(b: &B) {
    let (s, pid) = three_snapshots(b).await;
    let latest = SnapshotSelectionCriteria::latest();
    let max_ts = SnapshotSelectionCriteria {
        max_timestamp: 2500,
        ..latest
    };
    assert_eq!(loaded_seq(&*s, &pid, max_ts).await, Some(20));
    let min_ts = SnapshotSelectionCriteria {
        min_timestamp: 3000,
        ..latest
    };
    assert_eq!(loaded_seq(&*s, &pid, min_ts).await, Some(30));
    let none = SnapshotSelectionCriteria {
        max_timestamp: 999,
        ..latest
    };
    assert_eq!(loaded_seq(&*s, &pid, none).await, None);
}

/// The latest snapshot, with its data intact.
pub async fn snapshot_latest<B: TckBackend>(b: &B) {
    let (s, pid) = three_snapshots(b).await;
    let got = b
        .open()
        .await
        .load_snapshot(&pid, SnapshotSelectionCriteria::latest())
        .await
        .unwrap();
    let got = got.expect("a snapshot");
    let (m, d) = snap(&pid, 30, 3000);
    assert_eq!(got.metadata, m);
    assert_eq!(got.data.manifest, d.manifest);
    assert_eq!(got.data.schema_version, d.schema_version);
    assert_eq!(
        got.data.payload.to_value().unwrap(),
        d.payload.to_value().unwrap()
    );
    drop(s);
}

/// The latest snapshot within combined bounds.
pub async fn snapshot_latest_under_bounds<B: TckBackend>(b: &B) {
    let (s, pid) = three_snapshots(b).await;
    let c = SnapshotSelectionCriteria {
        max_sequence_nr: 30,
        max_timestamp: 2000,
        ..SnapshotSelectionCriteria::latest()
    };
    assert_eq!(loaded_seq(&*s, &pid, c).await, Some(20));
    let c = SnapshotSelectionCriteria {
        min_sequence_nr: 5,
        max_sequence_nr: 15,
        ..SnapshotSelectionCriteria::latest()
    };
    assert_eq!(loaded_seq(&*s, &pid, c).await, Some(10));
    assert_eq!(
        loaded_seq(&*s, &pid, SnapshotSelectionCriteria::none()).await,
        None
    );
}

/// Deleting one snapshot leaves the others.
pub async fn snapshot_delete_one<B: TckBackend>(b: &B) {
    let (s, pid) = three_snapshots(b).await;
    s.delete_snapshot(&snap(&pid, 30, 3000).0).await.unwrap();
    assert_eq!(
        loaded_seq(&*s, &pid, SnapshotSelectionCriteria::latest()).await,
        Some(20)
    );
    // Deleting an absent snapshot is not an error.
    s.delete_snapshot(&snap(&pid, 30, 3000).0).await.unwrap();
    assert_eq!(
        loaded_seq(&*s, &pid, SnapshotSelectionCriteria::max_sequence_nr(15)).await,
        Some(10)
    );
}

/// Deleting by criteria removes exactly the matching snapshots.
pub async fn snapshot_delete_by_criteria<B: TckBackend>(b: &B) {
    let (s, pid) = three_snapshots(b).await;
    s.delete_snapshots(&pid, SnapshotSelectionCriteria::max_sequence_nr(20))
        .await
        .unwrap();
    assert_eq!(
        loaded_seq(&*s, &pid, SnapshotSelectionCriteria::latest()).await,
        Some(30)
    );
    assert_eq!(
        loaded_seq(&*s, &pid, SnapshotSelectionCriteria::max_sequence_nr(25)).await,
        None
    );
}

/// Saving again at the same sequence number overwrites.
pub async fn snapshot_overwrite_same_sequence_nr<B: TckBackend>(b: &B) {
    let (s, pid) = three_snapshots(b).await;
    let (m, mut d) = snap(&pid, 30, 3100);
    d.payload = Payload::from_json("{\"replaced\":true}").unwrap();
    s.save_snapshot(m.clone(), d.clone()).await.unwrap();
    let got = s
        .load_snapshot(&pid, SnapshotSelectionCriteria::latest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.metadata, m);
    assert_eq!(
        got.data.payload.to_value().unwrap(),
        serde_json::json!({"replaced": true})
    );
    s.delete_snapshot(&m).await.unwrap();
    assert_eq!(
        loaded_seq(&*s, &pid, SnapshotSelectionCriteria::latest()).await,
        Some(20)
    );
}

async fn collect_current<S: EventsByTagQuery>(
    s: Arc<S>,
    tag: &str,
    from: Offset,
) -> Vec<EventEnvelope> {
    current_events_by_tag(s, tag, from)
        .map(|r| r.expect("query"))
        .collect()
        .await
}

fn ids(envs: &[EventEnvelope]) -> Vec<(String, u64)> {
    envs.iter()
        .map(|e| (e.event.persistence_id.clone(), e.event.sequence_nr))
        .collect()
}

/// Writes a, b, c events tagged per the test and returns the store and the two tags.
async fn tagged<B: TckBackend>(b: &B) -> (Arc<B::Store>, String, String, String, String) {
    let s = b.open().await;
    let (red, blue) = (unique("red"), unique("blue"));
    let (p1, p2) = (unique("p1"), unique("p2"));
    let writes = vec![
        single(event(&p1, 1, &[&red])),
        single(event(&p2, 1, &[&blue])),
        single(event(&p1, 2, &[&red, &blue])),
        single(event(&p2, 2, &[&red])),
        AtomicWrite::new(vec![event(&p1, 3, &[&red]), event(&p1, 4, &[])]).unwrap(),
    ];
    for r in s.write_messages(writes).await.unwrap() {
        r.unwrap();
    }
    (s, red, blue, p1, p2)
}

/// The current query returns what is stored, in write order, then ends.
pub async fn events_by_tag_current<B: TckBackend>(b: &B) {
    let (s, red, blue, p1, p2) = tagged(b).await;
    let got = collect_current(s.clone(), &red, Offset::START).await;
    assert_eq!(
        ids(&got),
        vec![
            (p1.clone(), 1),
            (p1.clone(), 2),
            (p2.clone(), 2),
            (p1.clone(), 3)
        ]
    );
    assert!(got.windows(2).all(|w| w[0].offset < w[1].offset));
    assert_same_event(&got[0].event, &event(&p1, 1, &[&red]));
    let got = collect_current(s.clone(), &blue, Offset::START).await;
    assert_eq!(ids(&got), vec![(p2, 1), (p1, 2)]);
    assert!(
        collect_current(s, &unique("nothing"), Offset::START)
            .await
            .is_empty()
    );
}

/// The live query delivers stored events and then new ones as they are written.
pub async fn events_by_tag_live<B: TckBackend>(b: &B) {
    let (s, red, _, p1, p2) = tagged(b).await;
    let mut live = events_by_tag(s.clone(), red.clone(), Offset::START);
    let deadline = b.live_timeout();
    let mut got = Vec::new();
    while got.len() < 4 {
        let e = tokio::time::timeout(deadline, live.next())
            .await
            .expect("live event in time");
        got.push(e.expect("stream open").expect("event"));
    }
    s.write_messages(vec![single(event(&p2, 3, &[&red]))])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let e = tokio::time::timeout(deadline, live.next())
        .await
        .expect("new event in time");
    let e = e.expect("stream open").expect("event");
    assert_eq!(
        (e.event.persistence_id.as_str(), e.event.sequence_nr),
        (p2.as_str(), 3)
    );
    assert!(e.offset > got[3].offset);
    // Nothing else arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), live.next())
            .await
            .is_err()
    );
    drop(p1);
}

/// The offset is exclusive: starting at an event's offset begins with the next event.
pub async fn events_by_tag_exclusive_offset<B: TckBackend>(b: &B) {
    let (s, red, _, p1, p2) = tagged(b).await;
    let all = collect_current(s.clone(), &red, Offset::START).await;
    let rest = collect_current(s.clone(), &red, all[1].offset).await;
    assert_eq!(ids(&rest), vec![(p2, 2), (p1, 3)]);
    assert!(collect_current(s, &red, all[3].offset).await.is_empty());
}

/// A reader that stops and starts again with a new handle resumes after its last offset.
pub async fn events_by_tag_resume_after_restart<B: TckBackend>(b: &B) {
    let (s, red, _, p1, p2) = tagged(b).await;
    let first: Vec<EventEnvelope> = current_events_by_tag(s.clone(), red.clone(), Offset::START)
        .take(2)
        .map(|r| r.unwrap())
        .collect()
        .await;
    let resume_at = first[1].offset;
    drop(s);
    let s2 = b.open().await;
    s2.write_messages(vec![single(event(&p2, 3, &[&red]))])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let rest = collect_current(s2.clone(), &red, resume_at).await;
    assert_eq!(ids(&rest), vec![(p2.clone(), 2), (p1, 3), (p2, 3)]);
}

/// Every id that wrote is listed, also after its events were deleted.
pub async fn current_persistence_ids<B: TckBackend>(b: &B) {
    let (s, _, _, p1, p2) = tagged(b).await;
    s.delete_messages_to(&p2, 2).await.unwrap();
    let ids = b.open().await.current_persistence_ids().await.unwrap();
    assert!(
        ids.contains(&p1) && ids.contains(&p2),
        "{ids:?} must hold {p1} and {p2}"
    );
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "no duplicates");
}

/// Writers in the concurrency case.
pub const CONCURRENT_WRITERS: usize = 8;

/// 8 writers store events concurrently (atomic writes of 1 to 25 events, each writer with its own
/// handle) while a live tag reader runs: the reader must see every event exactly once, in
/// per-id order, with increasing offsets; a current query afterwards must see the same.
pub async fn concurrent_writers_with_live_tag_reader<B: TckBackend>(b: &B) {
    let per_writer = b.events_per_concurrent_writer() as u64;
    let total = per_writer as usize * CONCURRENT_WRITERS;
    let tag = unique("all");
    let reader_store = b.open().await;
    let mut live = events_by_tag(reader_store.clone(), tag.clone(), Offset::START);
    let mut writers = Vec::new();
    for w in 0..CONCURRENT_WRITERS {
        let store = b.open().await;
        let tag = tag.clone();
        writers.push(tokio::spawn(async move {
            let pid = unique(&format!("w{w}"));
            let mut seq = 1u64;
            let mut size = 1 + w as u64;
            while seq <= per_writer {
                let n = size.min(per_writer - seq + 1);
                let evs = (seq..seq + n).map(|q| event(&pid, q, &[&tag])).collect();
                store
                    .write_messages(vec![AtomicWrite::new(evs).unwrap()])
                    .await
                    .expect("write call")
                    .remove(0)
                    .expect("write accepted");
                seq += n;
                size = size % 25 + 1;
            }
            pid
        }));
    }
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut last_offset = Offset::START;
    let mut seen = 0usize;
    let timeout = b.live_timeout() * 6;
    while seen < total {
        let next = tokio::time::timeout(timeout, live.next())
            .await
            .unwrap_or_else(|_| panic!("live reader stalled after {seen} of {total} events"));
        let env = next.expect("live stream ended").expect("live stream error");
        assert!(env.offset > last_offset, "offsets must increase");
        last_offset = env.offset;
        let prev = last_seq
            .entry(env.event.persistence_id.clone())
            .or_insert(0);
        assert_eq!(
            env.event.sequence_nr,
            *prev + 1,
            "'{}' out of order, repeated or skipped after {} events",
            env.event.persistence_id,
            seen
        );
        *prev = env.event.sequence_nr;
        seen += 1;
    }
    let mut pids = Vec::new();
    for w in writers {
        pids.push(w.await.expect("writer"));
    }
    for pid in &pids {
        assert_eq!(
            last_seq.get(pid),
            Some(&per_writer),
            "reader saw all of {pid}"
        );
    }
    // Nothing beyond the expected events arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), live.next())
            .await
            .is_err()
    );
    let current = collect_current(reader_store, &tag, Offset::START).await;
    assert_eq!(current.len(), total);
}
