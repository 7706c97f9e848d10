//! The MongoDB backend: journal, snapshot store and events-by-tag query.
//!
//! This crate owns [`MongoStore`]. It keeps three collections in the database named by the
//! connection string (`mongodb://host:27017/akkaTrader`):
//!
//! - `EventJournal`: one readable document per event (`persistenceId`, `sequenceNr`,
//!   `ordering`, `manifest`, `schemaVersion`, `tags`, `timestamp`, `writerUuid`, and `payload`
//!   as an ordinary BSON document, so an operator can `find` events and read their fields).
//!   Unique index on (`persistenceId`, `sequenceNr`): a second writer of the same sequence number
//!   gets a duplicate-key error, reported as [`PersistenceError::Rejected`], never a crash.
//!   Index on (`tags`, `ordering`) for events by tag.
//! - `SnapshotStore`: one document per (`persistenceId`, `sequenceNr`), unique; saving again
//!   replaces it.
//! - `Metadata`: `journal:<persistence id>` documents keeping the highest sequence number when
//!   events are deleted (it never goes down), and the `tag-ordering` document described below.
//!
//! Indexes are created when the store is opened.
//!
//! # Atomic writes
//!
//! The events of one [`persistence::Journal::write_messages`] call (possibly many entities',
//! see [`persistence::GroupCommitWriter`]) are inserted with one ordered `insert_many` inside a
//! multi-document transaction, so an atomic write is stored all or nothing. If the batch meets a
//! duplicate key the transaction is aborted and the atomic writes are retried one by one, so only
//! the write that really conflicts is rejected. Transactions need a replica set (a single-node one
//! is fine: `mongod --replSet rs0`, or SecantusDB, which presents itself as one); opening the store
//! against a standalone server fails with a message saying so.
//!
//! # Events by tag without skipped events
//!
//! The published Akka MongoDB plugin orders events by a value assigned before the document is
//! visible; under concurrent writers an event with a lower order can become visible after a
//! reader already moved past it, and the reader never sees it. Here the ordering is still
//! reserved before the insert, but readers only read up to a *watermark* below which nothing can
//! appear any more:
//!
//! 1. **Reserve.** A writer reserves a range of orderings with one atomic update of the
//!    `tag-ordering` document in `Metadata` that raises `next` by the number of events **and**
//!    appends `{token, from, to, at, lsid}` to its `pending` list (`lsid`: the id of the
//!    session whose transaction will commit the range, see *Abandoned transactions* below).
//! 2. **Commit.** In one transaction it inserts the events (with those orderings) and a
//!    completion marker `{_id: "done:<token>"}` in `Metadata`. The events therefore become
//!    visible exactly when the marker does. Afterwards (off the acknowledgement path) it removes
//!    its `pending` entry and the marker. A write that fails for sure (aborted transaction)
//!    removes its entry too: its orderings stay unused forever.
//! 3. **Read.** A reader reads the `tag-ordering` document, then the markers of the pending
//!    entries, then (for entries without a marker) the pending list once more. An entry with a
//!    marker, or one that has left the list, is finished. The watermark is `from - 1` of the
//!    lowest unfinished entry, or `next` when none is left. The reader then queries events with
//!    `offset < ordering <= watermark`. Every ordering at or below the watermark belongs to a
//!    write that had committed (visible to the query that follows) or will never commit, so a
//!    gap below the watermark is final, and a reader that resumes after any offset it has seen
//!    cannot miss an event.
//! 4. **Lease.** A writer that died between steps 1 and 2 would hold the watermark back
//!    forever, so a reader voids entries older than [`MongoConfig::pending_lease`] by inserting
//!    the entry's marker itself (`voidedAt`), then removing the entry. That is safe: a slow
//!    writer whose reservation was voided hits a duplicate key on its own marker, its transaction
//!    aborts (nothing becomes visible under the voided orderings), and it retries with a fresh
//!    reservation. Clocks only decide when that happens, never whether an event can be skipped.
//!    Void markers are kept (a few bytes per voided reservation) so the fence holds.
//!
//! # Abandoned transactions
//!
//! A writer killed in the middle of step 2 leaves its transaction open on the server: closing
//! the connection does not abort it, the server does so only after its transaction lifetime
//! limit (`transactionLifetimeLimitSeconds`, 60 s by default). Until then the transaction holds
//! the keys it inserted, so the restarted writer of the same persistence id gets `WriteConflict`
//! on every try, and a reader's void marker (step 4) waits behind its uncommitted marker.
//!
//! So a write's lease is kept alive while its transaction runs, and a lapsed lease gets the
//! transaction killed:
//!
//! - **Lease.** The reservation records the writer's session id (`lsid`). A write that takes
//!   longer than a third of [`MongoConfig::abandon_after`] (default 5 s) renews its lease by
//!   setting `beat` on its entry, every third of that bound, until its transaction has ended
//!   (normal writes take milliseconds and never renew). A writer whose entry shows no sign of
//!   life (`at`, or the last `beat`) for longer than `abandon_after` is dead or cut off from the
//!   server.
//! - **Kill.** Readers (in the watermark computation, step 3) and writers that meet a write
//!   conflict (they retry for up to twice `abandon_after` plus a second, resolving pending
//!   reservations every 250 ms meanwhile) treat such an entry as abandoned: they run
//!   `killSessions` for its `lsid`, which aborts its open transaction, and then void the
//!   reservation as in step 4. The keys are free at once; the restarted writer succeeds within
//!   about `abandon_after` of the crash instead of a minute. An entry older than
//!   [`MongoConfig::pending_lease`] has its session killed before it is voided too.
//! - **Safety.** Killing changes nothing about which events can become visible: the void marker
//!   stays the fence (a writer whose transaction survived somehow hits the duplicate key on its
//!   own marker and retries with a fresh reservation), and a transaction that had committed has
//!   its marker, so it is never voided or killed. A live writer is only killed when it has not
//!   renewed its lease for `abandon_after`; it then sees `NoSuchTransaction` (a transient
//!   transaction error), retries, and, its reservation being void, takes a new one. The lease is
//!   renewed on the writer's own clock and checked on the reader's, so clocks must agree to well
//!   within `abandon_after`; clock skew can only cause an early kill (a retried write), never a
//!   skipped event.
//! - **Why `killSessions`.** `abortTransaction` would have to be sent as the holder's session
//!   (its `lsid` and transaction number), which drivers do not let a client do, and a write
//!   conflict does not name the transaction holding the key; recording the `lsid` with the
//!   reservation the write already takes names the holder, and `killSessions` needs nothing
//!   else. Lowering `transactionLifetimeLimitSeconds` instead
//!   would need admin rights on the server and cut off long legitimate transactions of every
//!   application on it. `killSessions` is allowed for one's own sessions without extra
//!   privileges, works on MongoDB 3.6+ and on SecantusDB (tests/abandoned.rs). If it fails, the
//!   entry is left alone until `pending_lease` and voided then as before.
//! - **Limit.** The session is held until the reservation is settled, so its `lsid` is not
//!   reused while the entry can be taken for abandoned; only when a write's outcome is ambiguous
//!   (or removing its entry fails) does the entry outlive the session, and a kill may then hit a
//!   later use of the same pooled session id by the same process: that operation fails once (a
//!   journal transaction retries it as transient).
//!
//! Concurrent writers touch the shared `tag-ordering` document only with single-document
//! updates outside their transactions, so their transactions do not conflict with each other.
//! The guarantee assumes reads and writes go to the primary (the default).
//!
//! Live queries poll every [`MongoConfig::refresh_interval`] and wake at once on commits made
//! through the same store.
//!
//! # Tests and figures
//!
//! The tests (`cargo test -p persistence-mongodb`: the conformance suite, the ordering protocol
//! driven by hand, abandoned transactions, and a fault test that stops and restarts the server) use the server in
//! `MONGO_CONNECTION_STR`; `scripts/test.sh` starts SecantusDB for them with
//! `scripts/mongo-test-server.sh`. Without the variable they fail when `CI` is set, and elsewhere
//! start their own `secantusd-py` (`pip install SecantusDB`). The fault test always runs its own
//! server. `cargo bench -p persistence-mongodb --bench journal_mongodb` compares the journal with
//! a plain `insert_many` of the same documents.

#![warn(missing_docs)]

pub mod convert;

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use persistence::{
    AtomicWrite, EventEnvelope, EventsByTagQuery, Journal, MAX_SEQUENCE_NR, Offset,
    PersistenceError, PersistentRepr, Result, SelectedSnapshot, SnapshotData, SnapshotMetadata,
    SnapshotSelectionCriteria, SnapshotStore, now_millis,
};
use tokio::sync::watch;

pub use convert::{bson_to_json, json_to_bson};

/// The `EventJournal` document of an event at the given ordering (for tools and tests that
/// inspect or prepare the collection by hand).
pub fn event_document(event: &PersistentRepr, ordering: i64) -> Result<Document> {
    convert::event_to_doc(event, ordering)
}

/// Name of the events collection.
pub const EVENT_JOURNAL: &str = "EventJournal";
/// Name of the snapshots collection.
pub const SNAPSHOT_STORE: &str = "SnapshotStore";
/// Name of the metadata collection.
pub const METADATA: &str = "Metadata";
/// `_id` of the tag-ordering document in `Metadata`.
pub const TAG_ORDERING_ID: &str = "tag-ordering";
/// Database used when the connection string names none.
pub const DEFAULT_DATABASE: &str = "akkaTrader";

const DUPLICATE_KEY: i32 = 11000;

/// Settings of a [`MongoStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoConfig {
    /// The connection string, e.g. `mongodb://mongodb:27017/akkaTrader`.
    pub uri: String,
    /// Database name; `None` takes the one in the connection string, else `akkaTrader`.
    pub database: Option<String>,
    /// Poll interval of live events-by-tag queries.
    pub refresh_interval: Duration,
    /// How long a reserved ordering range may stay pending before readers void it (see the
    /// crate docs). Must exceed the longest write you expect.
    pub pending_lease: Duration,
    /// How long a write's transaction may go without a sign of life (its reservation or the
    /// last renewal of its lease, renewed every third of this while the transaction runs)
    /// before other writers and readers treat it as abandoned: they kill its session, which
    /// aborts the transaction, and void its reservation (see "Abandoned transactions" in the
    /// crate docs). Must be well above the time one lease renewal can take.
    pub abandon_after: Duration,
    /// How long an operation waits for a reachable server before failing as unavailable.
    pub server_selection_timeout: Duration,
}

impl MongoConfig {
    /// Defaults for a connection string: 500 ms refresh, 30 s lease, 5 s abandon bound, 5 s
    /// server selection.
    pub fn new(uri: impl Into<String>) -> Self {
        MongoConfig {
            uri: uri.into(),
            database: None,
            refresh_interval: Duration::from_millis(500),
            pending_lease: Duration::from_secs(30),
            abandon_after: Duration::from_secs(5),
            server_selection_timeout: Duration::from_secs(5),
        }
    }
}

/// A MongoDB journal, snapshot store and events-by-tag query. Cheap to clone.
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    events: Collection<Document>,
    snapshots: Collection<Document>,
    metadata: Collection<Document>,
    config: MongoConfig,
    commits: std::sync::Arc<watch::Sender<u64>>,
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(im) => im
            .write_errors
            .as_ref()
            .is_some_and(|v| v.iter().any(|w| w.code == DUPLICATE_KEY)),
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// `WriteConflict`: another transaction holds a key this one writes.
fn is_write_conflict(e: &mongodb::error::Error) -> bool {
    const WRITE_CONFLICT: i32 = 112;
    match &*e.kind {
        ErrorKind::Command(c) => c.code == WRITE_CONFLICT,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == WRITE_CONFLICT,
        ErrorKind::InsertMany(im) => im
            .write_errors
            .as_ref()
            .is_some_and(|v| v.iter().any(|w| w.code == WRITE_CONFLICT)),
        _ => false,
    }
}

fn is_transient(e: &mongodb::error::Error) -> bool {
    e.contains_label("TransientTransactionError")
}

/// Maps a driver error to a persistence error: network, server selection, shutdown and
/// not-primary errors mean the store is unavailable.
fn classify(e: mongodb::error::Error) -> PersistenceError {
    const UNAVAILABLE_CODES: &[i32] = &[
        6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
    ];
    let unavailable = e.contains_label("RetryableWriteError")
        || e.contains_label("TransientTransactionError")
        || e.contains_label("UnknownTransactionCommitResult")
        || match &*e.kind {
            ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. } => true,
            ErrorKind::Command(c) => UNAVAILABLE_CODES.contains(&c.code),
            _ => false,
        };
    if unavailable {
        PersistenceError::Unavailable(format!("mongodb: {e}"))
    } else {
        PersistenceError::Backend(format!("mongodb: {e}"))
    }
}

fn clamp(v: u64) -> i64 {
    v.min(MAX_SEQUENCE_NR) as i64
}

/// The `_id` of the completion marker of a reservation.
fn done_id(token: &str) -> String {
    format!("done:{token}")
}

/// How a reservation's transaction ended.
enum Commit {
    /// Events and marker committed.
    Done,
    /// A reader had voided the reservation; nothing was stored.
    Voided,
}

/// Which step of the transaction failed.
enum Step {
    Events(mongodb::error::Error),
    Marker(mongodb::error::Error),
}

enum CommitError {
    /// The commit outcome is unknown.
    Ambiguous(PersistenceError),
    /// Nothing was stored.
    Failed(GroupError),
}

fn malformed_entry() -> PersistenceError {
    PersistenceError::Corrupt("Metadata 'tag-ordering'.pending holds a malformed entry".into())
}

/// What a reader knows of a pending reservation's writer.
struct Lease {
    /// The session whose transaction commits the reservation (absent in entries written by
    /// older versions).
    lsid: Option<Document>,
    /// Milliseconds: the reservation time or its last lease renewal, whichever is later.
    alive_at: i64,
}

/// Stops a lease renewal task when dropped.
struct LeaseGuard(tokio::task::JoinHandle<()>);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum GroupError {
    Duplicate(String),
    Other(PersistenceError),
}

impl From<PersistenceError> for GroupError {
    fn from(e: PersistenceError) -> Self {
        GroupError::Other(e)
    }
}

impl MongoStore {
    /// Connects, checks that the server supports transactions, creates the indexes and the
    /// tag-ordering document.
    pub async fn open(config: MongoConfig) -> Result<Self> {
        let mut options = ClientOptions::parse(&config.uri).await.map_err(|e| {
            PersistenceError::InvalidInput(format!(
                "MONGO_CONNECTION_STR '{}' is invalid: {e}",
                config.uri
            ))
        })?;
        options.server_selection_timeout = Some(config.server_selection_timeout);
        options.connect_timeout = Some(config.server_selection_timeout);
        options
            .app_name
            .get_or_insert_with(|| "persistence-mongodb".to_owned());
        let db_name = config
            .database
            .clone()
            .or_else(|| options.default_database.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(options).map_err(|e| {
            PersistenceError::InvalidInput(format!(
                "MONGO_CONNECTION_STR '{}' is invalid: {e}",
                config.uri
            ))
        })?;
        let db = client.database(&db_name);
        let store = MongoStore {
            events: db.collection(EVENT_JOURNAL),
            snapshots: db.collection(SNAPSHOT_STORE),
            metadata: db.collection(METADATA),
            client,
            db,
            config,
            commits: std::sync::Arc::new(watch::Sender::new(0)),
        };
        store.check_replica_set().await?;
        store.create_indexes().await?;
        Ok(store)
    }

    /// Connects with default settings to a connection string.
    pub async fn open_uri(uri: impl Into<String>) -> Result<Self> {
        Self::open(MongoConfig::new(uri)).await
    }

    /// The database holding the collections.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The settings this store was opened with.
    pub fn config(&self) -> &MongoConfig {
        &self.config
    }

    async fn check_replica_set(&self) -> Result<()> {
        let hello = self
            .db
            .run_command(doc! {"hello": 1})
            .await
            .map_err(classify)?;
        let replica_set = hello.get_str("setName").is_ok();
        let sharded = hello.get_str("msg").is_ok_and(|m| m == "isdbgrid");
        if replica_set || sharded {
            Ok(())
        } else {
            Err(PersistenceError::InvalidInput(format!(
                "the MongoDB server at '{}' is a standalone server; the journal needs transactions, \
                 so run it as a replica set (a single node is fine, e.g. mongod --replSet rs0)",
                self.config.uri
            )))
        }
    }

    async fn create_indexes(&self) -> Result<()> {
        let unique = |name: &str| {
            IndexOptions::builder()
                .unique(true)
                .name(name.to_owned())
                .build()
        };
        self.events
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"persistenceId": 1, "sequenceNr": 1})
                    .options(unique("persistenceId_sequenceNr"))
                    .build(),
            )
            .await
            .map_err(classify)?;
        self.events
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"tags": 1, "ordering": 1})
                    .options(
                        IndexOptions::builder()
                            .name("tags_ordering".to_owned())
                            .build(),
                    )
                    .build(),
            )
            .await
            .map_err(classify)?;
        self.snapshots
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"persistenceId": 1, "sequenceNr": 1})
                    .options(unique("persistenceId_sequenceNr"))
                    .build(),
            )
            .await
            .map_err(classify)?;
        match self
            .metadata
            .insert_one(doc! {"_id": TAG_ORDERING_ID, "next": 0_i64, "pending": []})
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Reserves `n` orderings and records them as pending, with the id of the session whose
    /// transaction will commit them; returns `(token, from, to)`.
    async fn reserve(&self, n: i64, lsid: &Document) -> Result<(String, i64, i64)> {
        let token = mongodb::bson::oid::ObjectId::new().to_hex();
        // `$literal`: the lsid is data, not an expression of the pipeline update.
        let update = vec![doc! {"$set": {
            "next": {"$add": ["$next", n]},
            "pending": {"$concatArrays": ["$pending", [{
                "token": &token,
                "from": {"$add": ["$next", 1_i64]},
                "to": {"$add": ["$next", n]},
                "at": DateTime::now(),
                "lsid": {"$literal": lsid.clone()},
            }]]},
        }}];
        let after = self
            .metadata
            .find_one_and_update(doc! {"_id": TAG_ORDERING_ID}, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(classify)?
            .ok_or_else(|| {
                PersistenceError::Corrupt("Metadata 'tag-ordering' document is missing".into())
            })?;
        let to = match after.get("next") {
            Some(Bson::Int64(v)) => *v,
            Some(Bson::Int32(v)) => i64::from(*v),
            other => {
                return Err(PersistenceError::Corrupt(format!(
                    "Metadata 'tag-ordering'.next is not an integer: {other:?}"
                )));
            }
        };
        Ok((token, to - n + 1, to))
    }

    /// Removes a reservation from the pending list (and its completion marker), best effort:
    /// what is left behind is cleaned up by readers after the lease.
    async fn release(&self, token: &str) {
        if let Err(e) = self
            .metadata
            .update_one(
                doc! {"_id": TAG_ORDERING_ID},
                doc! {"$pull": {"pending": {"token": token}}},
            )
            .await
        {
            tracing::warn!(error = %e, token, "could not release an ordering reservation; readers clean it up after the lease");
            return;
        }
        let _ = self.metadata.delete_one(doc! {"_id": done_id(token)}).await;
    }

    /// Stores writes whose documents are known to encode: all in one transaction, or, when a
    /// sequence number is taken, one by one so that only the conflicting writes are rejected.
    async fn write_good(&self, writes: &[AtomicWrite]) -> Result<Vec<Result<()>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        Ok(match self.write_group(writes).await {
            Ok(()) => writes.iter().map(|_| Ok(())).collect(),
            Err(GroupError::Duplicate(reason)) if writes.len() == 1 => {
                vec![Err(writes[0].rejected(format!("duplicate key: {reason}")))]
            }
            Err(GroupError::Duplicate(_)) => {
                let mut out = Vec::with_capacity(writes.len());
                for w in writes {
                    match self.write_group(std::slice::from_ref(w)).await {
                        Ok(()) => out.push(Ok(())),
                        Err(GroupError::Duplicate(reason)) => {
                            out.push(Err(w.rejected(format!("duplicate key: {reason}"))))
                        }
                        Err(GroupError::Other(e)) => return Err(e),
                    }
                }
                out
            }
            Err(GroupError::Other(e)) => return Err(e),
        })
    }

    /// Stores the writes in one transaction: `Ok` when all are durable.
    async fn write_group(&self, writes: &[AtomicWrite]) -> std::result::Result<(), GroupError> {
        let n: i64 = writes.iter().map(|w| w.len() as i64).sum();
        for _ in 0..5 {
            // The session is held until the reservation is settled, so the lsid recorded with
            // the reservation is never handed to another operation while the entry is pending
            // (unless the outcome is ambiguous, see the crate docs).
            let mut session = self
                .client
                .start_session()
                .await
                .map_err(|e| GroupError::Other(classify(e)))?;
            let (token, from, _to) = self.reserve(n, session.id()).await?;
            let mut docs = Vec::with_capacity(n as usize);
            let mut ordering = from;
            for w in writes {
                for e in w.events() {
                    match convert::event_to_doc(e, ordering) {
                        Ok(d) => docs.push(d),
                        Err(err) => {
                            self.release(&token).await;
                            return Err(err.into());
                        }
                    }
                    ordering += 1;
                }
            }
            let lease = self.renew_lease(&token);
            let outcome = self.commit_events(&mut session, docs, &token).await;
            drop(lease);
            match outcome {
                Ok(Commit::Done) => {
                    // The events are durable now; removing the reservation is clean-up that
                    // readers do not depend on (they see the completion marker), so it does
                    // not delay the acknowledgement.
                    let store = self.clone();
                    tokio::spawn(async move { store.release(&token).await });
                    return Ok(());
                }
                Ok(Commit::Voided) => {
                    tracing::warn!(
                        token,
                        "ordering reservation was voided (lease expired or transaction taken for abandoned); retrying the write"
                    );
                    self.release(&token).await;
                }
                Err(CommitError::Ambiguous(e)) => {
                    // The commit may have happened: keep the reservation, readers resolve it
                    // through its completion marker (or void it) after the lease.
                    return Err(GroupError::Other(e));
                }
                Err(CommitError::Failed(e)) => {
                    self.release(&token).await;
                    return Err(e);
                }
            }
        }
        Err(GroupError::Other(PersistenceError::Unavailable(
            "mongodb: ordering reservations expired 5 times in a row; is pending_lease too short?"
                .into(),
        )))
    }

    /// Renews the lease of a pending reservation (`beat`) every third of
    /// [`MongoConfig::abandon_after`] until the returned guard is dropped, so that a live
    /// writer whose transaction takes long is not taken for abandoned. Writes that finish
    /// sooner (nearly all) never renew.
    fn renew_lease(&self, token: &str) -> LeaseGuard {
        let store = self.clone();
        let token = token.to_owned();
        let every = (self.config.abandon_after / 3).max(Duration::from_millis(10));
        LeaseGuard(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store
                    .metadata
                    .update_one(
                        doc! {"_id": TAG_ORDERING_ID, "pending.token": &token},
                        doc! {"$set": {"pending.$.beat": DateTime::now()}},
                    )
                    .await
                {
                    tracing::warn!(error = %e, token, "could not renew the lease of an ordering reservation");
                }
            }
        }))
    }

    /// Kills a session (`killSessions`): its open transaction, if any, is aborted.
    async fn kill_session(&self, lsid: &Document) -> Result<()> {
        self.client
            .database("admin")
            .run_command(doc! {"killSessions": [lsid.clone()]})
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Test support: runs a write's transaction up to (not including) its commit and then
    /// forgets the session, as a writer killed mid-write leaves it: the reservation stays
    /// pending and the transaction stays open on the server holding the events' keys.
    #[doc(hidden)]
    pub async fn begin_write_and_abandon_it(&self, writes: &[AtomicWrite]) -> Result<()> {
        let n: i64 = writes.iter().map(|w| w.len() as i64).sum();
        let mut session = self.client.start_session().await.map_err(classify)?;
        let (token, from, _) = self.reserve(n, session.id()).await?;
        let mut docs = Vec::new();
        let mut ordering = from;
        for w in writes {
            for e in w.events() {
                docs.push(convert::event_to_doc(e, ordering)?);
                ordering += 1;
            }
        }
        session.start_transaction().await.map_err(classify)?;
        if let Err(Step::Events(e) | Step::Marker(e)) =
            self.transaction_body(&mut session, &docs, &token).await
        {
            return Err(classify(e));
        }
        // Dropping the session would abort the transaction; a killed process does not.
        std::mem::forget(session);
        Ok(())
    }

    /// Inserts the events and the reservation's completion marker in one transaction.
    ///
    /// A write conflict means another transaction holds one of the keys: a live one finishes
    /// soon, an abandoned one (its writer died mid-write) holds them until the server's
    /// transaction lifetime limit. So conflicts are retried for a while, and between tries
    /// reservations whose lease lapsed are resolved (their sessions killed, see the crate docs).
    async fn commit_events(
        &self,
        session: &mut ClientSession,
        docs: Vec<Document>,
        token: &str,
    ) -> std::result::Result<Commit, CommitError> {
        let started = std::time::Instant::now();
        let patience = self.config.abandon_after * 2 + Duration::from_secs(1);
        let mut last_resolve: Option<std::time::Instant> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            session
                .start_transaction()
                .await
                .map_err(|e| CommitError::Failed(GroupError::Other(classify(e))))?;
            let body = self.transaction_body(session, &docs, token).await;
            let failure = match body {
                Ok(()) => match commit_with_retry(session).await {
                    Ok(()) => return Ok(Commit::Done),
                    Err(e) if e.contains_label("UnknownTransactionCommitResult") => {
                        return Err(CommitError::Ambiguous(classify(e)));
                    }
                    Err(e) => Step::Events(e),
                },
                Err(step) => {
                    let _ = session.abort_transaction().await;
                    step
                }
            };
            match failure {
                Step::Marker(e) if is_duplicate_key(&e) => return Ok(Commit::Voided),
                Step::Events(e) if is_duplicate_key(&e) => {
                    return Err(CommitError::Failed(GroupError::Duplicate(e.to_string())));
                }
                Step::Events(e) | Step::Marker(e)
                    if is_transient(&e)
                        && (attempt < 20
                            || (is_write_conflict(&e) && started.elapsed() < patience)) =>
                {
                    if is_write_conflict(&e)
                        && attempt >= 3
                        && last_resolve.is_none_or(|t| t.elapsed() >= Duration::from_millis(250))
                    {
                        // Kills and voids reservations whose lease lapsed (ours is renewed).
                        if let Err(e) = self.watermark().await {
                            tracing::debug!(error = %e, "could not resolve pending reservations");
                        }
                        last_resolve = Some(std::time::Instant::now());
                    }
                    let pause = (2 * attempt).min(100);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Step::Events(e) | Step::Marker(e) => {
                    return Err(CommitError::Failed(GroupError::Other(classify(e))));
                }
            }
        }
    }

    async fn transaction_body(
        &self,
        session: &mut ClientSession,
        docs: &[Document],
        token: &str,
    ) -> std::result::Result<(), Step> {
        self.events
            .insert_many(docs)
            .ordered(true)
            .session(&mut *session)
            .await
            .map_err(Step::Events)?;
        self.metadata
            .insert_one(doc! {"_id": done_id(token), "committedAt": DateTime::now()})
            .session(&mut *session)
            .await
            .map_err(Step::Marker)?;
        Ok(())
    }

    /// The highest ordering at or below which no event can still appear. Reservations older
    /// than the lease are voided (or, when complete, cleaned up) on the way.
    async fn watermark(&self) -> Result<i64> {
        let d = self
            .metadata
            .find_one(doc! {"_id": TAG_ORDERING_ID})
            .await
            .map_err(classify)?
            .ok_or_else(|| {
                PersistenceError::Corrupt("Metadata 'tag-ordering' document is missing".into())
            })?;
        let next = match d.get("next") {
            Some(Bson::Int64(v)) => *v,
            Some(Bson::Int32(v)) => i64::from(*v),
            other => {
                return Err(PersistenceError::Corrupt(format!(
                    "Metadata 'tag-ordering'.next is not an integer: {other:?}"
                )));
            }
        };
        let pending = d.get_array("pending").map_err(|e| {
            PersistenceError::Corrupt(format!("Metadata 'tag-ordering'.pending: {e}"))
        })?;
        if pending.is_empty() {
            return Ok(next);
        }
        let mut entries = Vec::with_capacity(pending.len());
        for p in pending {
            let p = p.as_document().ok_or_else(malformed_entry)?;
            let token = p
                .get_str("token")
                .map_err(|_| malformed_entry())?
                .to_owned();
            let from = p.get_i64("from").map_err(|_| malformed_entry())?;
            let at = p
                .get_datetime("at")
                .map(|t| t.timestamp_millis())
                .map_err(|_| malformed_entry())?;
            entries.push((token, from, at));
        }
        let ids: Vec<String> = entries.iter().map(|(t, _, _)| done_id(t)).collect();
        let done: std::collections::HashSet<String> = self
            .metadata
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"_id": 1})
            .await
            .map_err(classify)?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(classify)?
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect();
        // A writer removes its entry right after committing, and its completion marker just
        // after that; if the marker was already gone when we looked, the entry is gone from the
        // pending list too. Read the list again: an entry no longer pending has finished for good.
        // This second read also gives the latest lease renewal of each entry still pending.
        let still_pending: std::collections::HashMap<String, Lease> =
            if entries.iter().all(|(t, _, _)| done.contains(&done_id(t))) {
                std::collections::HashMap::new()
            } else {
                self.pending_leases().await?
            };
        let now = now_millis();
        let lease_start = now - self.config.pending_lease.as_millis() as i64;
        let abandon_start = now - self.config.abandon_after.as_millis() as i64;
        let mut min_from: Option<i64> = None;
        for (token, from, at) in entries {
            if done.contains(&done_id(&token)) {
                if at < lease_start {
                    // Complete, but its writer did not clean up (it stopped): do it for it.
                    self.cleanup_reservation(&token, false).await?;
                }
                continue;
            }
            let Some(lease) = still_pending.get(&token) else {
                continue;
            };
            let expired = at < lease_start;
            let abandoned = lease.lsid.is_some() && lease.alive_at < abandon_start;
            if expired || abandoned {
                // First abort the writer's transaction if it is still open on the server (its
                // writer died mid-write): otherwise it holds its keys, and the void marker below,
                // until the server's transaction lifetime limit.
                if let Some(lsid) = &lease.lsid {
                    if let Err(e) = self.kill_session(lsid).await {
                        tracing::warn!(error = %e, token, "could not kill the session of an abandoned write");
                        if !expired {
                            min_from = Some(min_from.map_or(from, |m: i64| m.min(from)));
                            continue;
                        }
                    } else {
                        tracing::warn!(
                            token,
                            from,
                            idle_ms = now - lease.alive_at,
                            "killed the session of a write whose lease lapsed (its writer is gone)"
                        );
                    }
                }
                // Void it: once the marker exists, the writer's transaction can no longer
                // commit (its marker insert hits the duplicate key), so the range is final.
                match self
                    .metadata
                    .insert_one(doc! {"_id": done_id(&token), "voidedAt": DateTime::now()})
                    .await
                {
                    Ok(_) => tracing::warn!(
                        token,
                        from,
                        "voided an ordering reservation older than the lease"
                    ),
                    Err(e) if is_duplicate_key(&e) => {}
                    Err(e) => return Err(classify(e)),
                }
                self.cleanup_reservation(&token, true).await?;
                continue;
            }
            min_from = Some(min_from.map_or(from, |m: i64| m.min(from)));
        }
        Ok(min_from.map_or(next, |f| f - 1))
    }

    /// The entries currently in the pending list: token, session id and last sign of life.
    async fn pending_leases(&self) -> Result<std::collections::HashMap<String, Lease>> {
        let d = self
            .metadata
            .find_one(doc! {"_id": TAG_ORDERING_ID})
            .await
            .map_err(classify)?
            .ok_or_else(|| {
                PersistenceError::Corrupt("Metadata 'tag-ordering' document is missing".into())
            })?;
        let pending = d.get_array("pending").map_err(|e| {
            PersistenceError::Corrupt(format!("Metadata 'tag-ordering'.pending: {e}"))
        })?;
        let mut out = std::collections::HashMap::with_capacity(pending.len());
        for p in pending {
            let p = p.as_document().ok_or_else(malformed_entry)?;
            let token = p.get_str("token").map_err(|_| malformed_entry())?;
            let at = p
                .get_datetime("at")
                .map(|t| t.timestamp_millis())
                .map_err(|_| malformed_entry())?;
            let beat = p.get_datetime("beat").map(|t| t.timestamp_millis()).ok();
            out.insert(
                token.to_owned(),
                Lease {
                    lsid: p.get_document("lsid").ok().cloned(),
                    alive_at: beat.map_or(at, |b| b.max(at)),
                },
            );
        }
        Ok(out)
    }

    /// Removes a finished reservation from the pending list; the completion marker of a
    /// committed one is deleted too, a void marker is kept (it fences a writer that may still
    /// try to commit).
    async fn cleanup_reservation(&self, token: &str, voided: bool) -> Result<()> {
        self.metadata
            .update_one(
                doc! {"_id": TAG_ORDERING_ID},
                doc! {"$pull": {"pending": {"token": token}}},
            )
            .await
            .map_err(classify)?;
        if !voided {
            self.metadata
                .delete_one(doc! {"_id": done_id(token)})
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn collect_events(
        &self,
        filter: Document,
        sort: Document,
        limit: i64,
    ) -> Result<Vec<(i64, PersistentRepr)>> {
        let cursor = self
            .events
            .find(filter)
            .sort(sort)
            .limit(limit)
            .await
            .map_err(classify)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(classify)?;
        docs.iter().map(convert::doc_to_event).collect()
    }
}

async fn commit_with_retry(session: &mut ClientSession) -> mongodb::error::Result<()> {
    let mut tries = 0;
    loop {
        match session.commit_transaction().await {
            Err(e) if e.contains_label("UnknownTransactionCommitResult") && tries < 3 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

#[async_trait]
impl Journal for MongoStore {
    async fn write_messages(&self, writes: Vec<AtomicWrite>) -> Result<Vec<Result<()>>> {
        // A write whose payload cannot become BSON is refused alone; the others go ahead.
        let mut results: Vec<Option<Result<()>>> = writes
            .iter()
            .map(|w| {
                w.events()
                    .iter()
                    .try_for_each(|e| convert::payload_to_bson(&e.payload).map(|_| ()))
                    .err()
                    .map(Err)
            })
            .collect();
        let good: Vec<AtomicWrite> = writes
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_none())
            .map(|(w, _)| w.clone())
            .collect();
        let mut outcome = self.write_good(&good).await?.into_iter();
        for r in results.iter_mut().filter(|r| r.is_none()) {
            *r = outcome.next();
        }
        let results: Vec<Result<()>> = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(PersistenceError::Backend("missing write result".into())))
            })
            .collect();
        if results.iter().any(|r| r.is_ok()) {
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
        if max == 0 || from_sequence_nr > to_sequence_nr {
            return Ok(Vec::new());
        }
        let filter = doc! {
            "persistenceId": persistence_id,
            "sequenceNr": {"$gte": clamp(from_sequence_nr), "$lte": clamp(to_sequence_nr)},
        };
        Ok(self
            .collect_events(filter, doc! {"sequenceNr": 1}, clamp(max))
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    async fn highest_sequence_nr(&self, persistence_id: &str, _from: u64) -> Result<u64> {
        let last = self
            .events
            .find_one(doc! {"persistenceId": persistence_id})
            .sort(doc! {"sequenceNr": -1})
            .projection(doc! {"sequenceNr": 1})
            .await
            .map_err(classify)?;
        let from_events = match last {
            Some(d) => d
                .get_i64("sequenceNr")
                .map_err(|e| PersistenceError::Corrupt(e.to_string()))?,
            None => 0,
        };
        let meta = self
            .metadata
            .find_one(doc! {"_id": format!("journal:{persistence_id}")})
            .await
            .map_err(classify)?;
        let from_meta = meta
            .and_then(|d| d.get_i64("maxSequenceNr").ok())
            .unwrap_or(0);
        Ok(from_events.max(from_meta).max(0) as u64)
    }

    async fn delete_messages_to(&self, persistence_id: &str, to_sequence_nr: u64) -> Result<()> {
        let to = clamp(to_sequence_nr);
        let highest_deleted = self
            .events
            .find_one(doc! {"persistenceId": persistence_id, "sequenceNr": {"$lte": to}})
            .sort(doc! {"sequenceNr": -1})
            .projection(doc! {"sequenceNr": 1})
            .await
            .map_err(classify)?;
        let Some(h) = highest_deleted else {
            return Ok(());
        };
        let h = h
            .get_i64("sequenceNr")
            .map_err(|e| PersistenceError::Corrupt(e.to_string()))?;
        // Keep the highest number before anything is deleted, so a crash in between loses nothing.
        self.metadata
            .update_one(
                doc! {"_id": format!("journal:{persistence_id}")},
                doc! {"$max": {"maxSequenceNr": h}, "$set": {"persistenceId": persistence_id}},
            )
            .upsert(true)
            .await
            .map_err(classify)?;
        self.events
            .delete_many(doc! {"persistenceId": persistence_id, "sequenceNr": {"$lte": to}})
            .await
            .map_err(classify)?;
        Ok(())
    }
}

fn snapshot_filter(persistence_id: &str, c: &SnapshotSelectionCriteria) -> Document {
    let (min_seq, max_seq, min_ts, max_ts) = c.clamped();
    // BSON dates outside years 1..=9999 are refused by some servers; no snapshot is stored there.
    const MIN_MS: i64 = -62_135_596_800_000;
    const MAX_MS: i64 = 253_402_300_799_999;
    let (min_ts, max_ts) = (min_ts.clamp(MIN_MS, MAX_MS), max_ts.clamp(MIN_MS, MAX_MS));
    doc! {
        "persistenceId": persistence_id,
        "sequenceNr": {"$gte": min_seq, "$lte": max_seq},
        "timestamp": {"$gte": DateTime::from_millis(min_ts), "$lte": DateTime::from_millis(max_ts)},
    }
}

#[async_trait]
impl SnapshotStore for MongoStore {
    async fn save_snapshot(&self, metadata: SnapshotMetadata, data: SnapshotData) -> Result<()> {
        metadata.validate()?;
        let d = convert::snapshot_to_doc(&metadata, &data)?;
        let filter = doc! {"persistenceId": &metadata.persistence_id, "sequenceNr": metadata.sequence_nr as i64};
        // Two concurrent upserts of a new key can race on the unique index; the second try
        // then replaces the document the first one inserted.
        for attempt in 0..2 {
            match self
                .snapshots
                .replace_one(filter.clone(), d.clone())
                .upsert(true)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate_key(&e) && attempt == 0 => continue,
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(())
    }

    async fn load_snapshot(
        &self,
        persistence_id: &str,
        criteria: SnapshotSelectionCriteria,
    ) -> Result<Option<SelectedSnapshot>> {
        let found = self
            .snapshots
            .find_one(snapshot_filter(persistence_id, &criteria))
            .sort(doc! {"sequenceNr": -1, "timestamp": -1})
            .await
            .map_err(classify)?;
        found.as_ref().map(convert::doc_to_snapshot).transpose()
    }

    async fn delete_snapshot(&self, metadata: &SnapshotMetadata) -> Result<()> {
        self.snapshots
            .delete_one(doc! {
                "persistenceId": &metadata.persistence_id,
                "sequenceNr": clamp(metadata.sequence_nr),
            })
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn delete_snapshots(
        &self,
        persistence_id: &str,
        criteria: SnapshotSelectionCriteria,
    ) -> Result<()> {
        self.snapshots
            .delete_many(snapshot_filter(persistence_id, &criteria))
            .await
            .map_err(classify)?;
        Ok(())
    }
}

#[async_trait]
impl EventsByTagQuery for MongoStore {
    async fn events_by_tag_page(
        &self,
        tag: &str,
        after: Offset,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let after = clamp(after.0);
        let watermark = self.watermark().await?;
        if watermark <= after || limit == 0 {
            return Ok(Vec::new());
        }
        let filter = doc! {"tags": tag, "ordering": {"$gt": after, "$lte": watermark}};
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .collect_events(filter, doc! {"ordering": 1}, limit)
            .await?
            .into_iter()
            .map(|(o, event)| EventEnvelope {
                offset: Offset(o as u64),
                event,
            })
            .collect())
    }

    async fn current_persistence_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = Vec::new();
        for v in self
            .events
            .distinct("persistenceId", doc! {})
            .await
            .map_err(classify)?
        {
            if let Bson::String(s) = v {
                ids.push(s);
            }
        }
        let kept = self
            .metadata
            .distinct("persistenceId", doc! {"persistenceId": {"$exists": true}})
            .await
            .map_err(classify)?;
        for v in kept {
            if let Bson::String(s) = v {
                ids.push(s);
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn refresh_interval(&self) -> Duration {
        self.config.refresh_interval
    }

    fn commit_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.commits.subscribe())
    }
}
