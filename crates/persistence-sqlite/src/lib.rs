//! The embedded SQLite backend: journal, snapshot store and events-by-tag query in one file.
//!
//! This crate owns [`SqliteStore`], the default persistence backend for local runs. It uses
//! rusqlite with a bundled SQLite in WAL mode with `synchronous = FULL`, so a write is durable
//! (synced to disk) when [`persistence::Journal::write_messages`] returns, while readers keep
//! reading during writes.
//!
//! # Layout
//!
//! - `event_journal`: one row per event; `ordering` (INTEGER PRIMARY KEY AUTOINCREMENT) is the
//!   events-by-tag offset; `UNIQUE (persistence_id, sequence_nr)` turns a taken sequence number
//!   into [`PersistenceError::Rejected`]; the payload and tags are stored as JSON text.
//! - `event_tag`: `(tag, ordering)` pairs, the index events-by-tag reads.
//! - `journal_metadata`: the highest sequence number per persistence id, written before events
//!   are deleted so that it never goes down.
//! - `snapshot_store`: one row per (persistence id, sequence nr); saving again overwrites.
//!
//! # Why events by tag cannot skip an event here
//!
//! SQLite admits one write transaction at a time (per database, across processes) and the
//! `ordering` of a row is assigned inside that transaction, so transactions commit in the order
//! of their orderings: when a reader sees ordering `n`, every row with a lower ordering is either
//! committed and visible in the same snapshot or was rolled back and never will be. A reader that
//! resumes after `n` therefore never misses a row that commits later.
//!
//! # Batching
//!
//! One [`persistence::Journal::write_messages`] call is one transaction (one disk sync) with a
//! savepoint per atomic write, so a rejected write is rolled back alone while the others commit.
//! Used behind [`persistence::GroupCommitWriter`], the writes of many entities share a sync.
//!
//! # Checkpoints off the write path
//!
//! A WAL checkpoint copies committed pages back into the database file and syncs it. Run by
//! the writing connection (SQLite's auto-checkpoint), it stalls every write queued behind it
//! for as long as the copy takes, which is what a busy journal's tail latency would be made
//! of. A background thread with its own connection therefore checkpoints (`PASSIVE`, never
//! blocking the writer) every [`CHECKPOINT_INTERVAL`]. The writer keeps an auto-checkpoint
//! as well: it finds almost everything already copied, finishes the little that is left, and
//! lets the WAL start over from its beginning, which a checkpoint running beside a steady
//! stream of commits cannot do by itself.
//!
//! # Figures
//!
//! `cargo bench -p persistence-sqlite --bench journal_sqlite` prints events/s for 1,000
//! concurrent entities, one sequential entity, live-query delivery delay and recovery replay,
//! with the CPU time per event and the machine's load average next to each wall-clock figure.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use persistence::{
    AtomicWrite, EventEnvelope, EventsByTagQuery, Journal, MAX_SEQUENCE_NR, Offset, Payload,
    PersistenceError, PersistentRepr, Result, SelectedSnapshot, SnapshotData, SnapshotMetadata,
    SnapshotSelectionCriteria, SnapshotStore,
};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use tokio::sync::watch;

/// Settings of a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database file; created with its tables when missing.
    pub path: PathBuf,
    /// `synchronous = FULL` (true, the default: every commit is synced to disk) or `NORMAL`
    /// (false: a crash of the machine may lose the last commits, a crash of the process not).
    pub sync_full: bool,
    /// How long a write waits for another process holding the write lock.
    pub busy_timeout: Duration,
    /// Poll interval of live events-by-tag queries for commits made by other processes (commits
    /// of this process wake them at once).
    pub refresh_interval: Duration,
}

impl SqliteConfig {
    /// Defaults for a database file: durable commits, 5 s busy timeout, 50 ms refresh.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            sync_full: true,
            busy_timeout: Duration::from_secs(5),
            refresh_interval: Duration::from_millis(50),
        }
    }
}

struct Inner {
    config: SqliteConfig,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    commits: watch::Sender<u64>,
}

/// A SQLite journal, snapshot store and events-by-tag query. Cheap to clone; clones share the
/// connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_journal (
    ordering INTEGER PRIMARY KEY AUTOINCREMENT,
    persistence_id TEXT NOT NULL,
    sequence_nr INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    tags TEXT NOT NULL,
    payload TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    writer_uuid TEXT NOT NULL,
    UNIQUE (persistence_id, sequence_nr)
);
CREATE TABLE IF NOT EXISTS event_tag (
    tag TEXT NOT NULL,
    ordering INTEGER NOT NULL,
    PRIMARY KEY (tag, ordering)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal_metadata (
    persistence_id TEXT PRIMARY KEY,
    max_sequence_nr INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshot_store (
    persistence_id TEXT NOT NULL,
    sequence_nr INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (persistence_id, sequence_nr)
) WITHOUT ROWID;
";

fn classify(e: rusqlite::Error) -> PersistenceError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory,
        ) => PersistenceError::Unavailable(format!("sqlite: {e}")),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            PersistenceError::Corrupt(format!("sqlite: {e}"))
        }
        _ => PersistenceError::Backend(format!("sqlite: {e}")),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation
            && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| {
        PersistenceError::InvalidInput(format!("{what} {v} is above the maximum {MAX_SEQUENCE_NR}"))
    })
}

fn clamp(v: u64) -> i64 {
    v.min(MAX_SEQUENCE_NR) as i64
}

/// WAL mode, durability, checkpoint size and the schema, on the writing connection.
fn prepare_writer(conn: &Connection, config: &SqliteConfig) -> Result<()> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(PersistenceError::Backend(format!(
            "sqlite database {} refused WAL mode (got {mode})",
            config.path.display()
        )));
    }
    conn.execute_batch(if config.sync_full {
        "PRAGMA synchronous = FULL;"
    } else {
        "PRAGMA synchronous = NORMAL;"
    })
    .map_err(classify)?;
    // The background checkpointer copies pages as they are committed; the writer's own
    // checkpoint, once the WAL reaches ~200 MB, only finishes the rest and lets the WAL restart
    // (see "Checkpoints off the write path"). A large WAL restarts seldom: a restart overwrites
    // its first pages, and a page the kernel is still writing back (a checkpoint has just
    // synced the WAL) makes that write wait for the disk.
    conn.execute_batch("PRAGMA wal_autocheckpoint = 50000;")
        .map_err(classify)?;
    conn.execute_batch(SCHEMA).map_err(classify)
}

/// How often the background thread checkpoints the WAL.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Starts the thread that checkpoints the WAL beside the writer; it ends once the store is
/// dropped.
fn spawn_checkpointer(store: std::sync::Weak<Inner>) -> Result<()> {
    let config = match store.upgrade() {
        Some(inner) => inner.config.clone(),
        None => return Ok(()),
    };
    let conn = Connection::open_with_flags(
        &config.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        PersistenceError::Unavailable(format!(
            "cannot open sqlite database {} for checkpoints: {e}",
            config.path.display()
        ))
    })?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(CHECKPOINT_INTERVAL);
                if store.upgrade().is_none() {
                    return;
                }
                // PASSIVE copies what it can without waiting for anyone; a busy result only
                // means another checkpoint is running, and the next round catches up.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "background checkpoint failed");
                }
            }
        })
        .map_err(|e| PersistenceError::Backend(format!("cannot start the checkpointer: {e}")))?;
    Ok(())
}

/// True for the error another process's lock causes.
fn is_busy(e: &PersistenceError) -> bool {
    matches!(e, PersistenceError::Unavailable(m) if m.contains("locked") || m.contains("busy"))
}

fn open_connection(config: &SqliteConfig, write: bool) -> Result<Connection> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(&config.path, flags).map_err(|e| {
        PersistenceError::Unavailable(format!(
            "cannot open sqlite database {}: {e}",
            config.path.display()
        ))
    })?;
    conn.busy_timeout(config.busy_timeout).map_err(classify)?;
    if write {
        // Switching a new database to WAL takes an exclusive lock for which SQLite does not
        // call the busy handler, so two processes opening one fresh file at the same moment
        // (the services started together on one data folder) retry here instead of failing.
        let deadline = std::time::Instant::now() + config.busy_timeout;
        loop {
            match prepare_writer(&conn, config) {
                Ok(()) => break,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
    // A 64 MiB page cache per connection keeps the indexes of a busy journal in memory.
    conn.execute_batch("PRAGMA cache_size = -65536;")
        .map_err(classify)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn row_to_repr(row: &rusqlite::Row<'_>, base: usize) -> rusqlite::Result<Result<PersistentRepr>> {
    let seq: i64 = row.get(base + 1)?;
    let version: i64 = row.get(base + 3)?;
    let tags: String = row.get(base + 4)?;
    let payload: String = row.get(base + 5)?;
    let tags: Vec<String> = if tags == "[]" {
        Vec::new()
    } else {
        match serde_json::from_str(&tags) {
            Ok(t) => t,
            Err(e) => {
                return Ok(Err(PersistenceError::Corrupt(format!(
                    "tags column is not a JSON list: {e}"
                ))));
            }
        }
    };
    Ok(Ok(PersistentRepr {
        persistence_id: row.get(base)?,
        sequence_nr: seq as u64,
        manifest: row.get(base + 2)?,
        schema_version: version as u32,
        tags,
        payload: Payload::from_json_unchecked(payload),
        timestamp: row.get(base + 6)?,
        writer_uuid: row.get(base + 7)?,
    }))
}

const EVENT_COLUMNS: &str =
    "persistence_id, sequence_nr, manifest, schema_version, tags, payload, timestamp, writer_uuid";

impl SqliteStore {
    /// Opens (and creates when missing) the database described by `config`.
    pub async fn open(config: SqliteConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(|e| PersistenceError::Backend(format!("sqlite open task failed: {e}")))?
    }

    /// Opens a database file with default settings.
    pub async fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        Self::open(SqliteConfig::new(path.as_ref())).await
    }

    fn open_blocking(config: SqliteConfig) -> Result<Self> {
        if let Some(dir) = config.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                PersistenceError::Unavailable(format!(
                    "cannot create directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let writer = open_connection(&config, true)?;
        let inner = Arc::new(Inner {
            config,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            commits: watch::Sender::new(0),
        });
        spawn_checkpointer(Arc::downgrade(&inner))?;
        Ok(SqliteStore { inner })
    }

    /// The settings this store was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| PersistenceError::Backend("sqlite writer lock poisoned".into()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| PersistenceError::Backend(format!("sqlite task failed: {e}")))?
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut p| p.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.config, false)?,
            };
            let result = f(&conn);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < 8
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| PersistenceError::Backend(format!("sqlite task failed: {e}")))?
    }
}

/// Inserts the events (and tag rows) of one atomic write on `conn`.
fn insert_write(conn: &Connection, w: &AtomicWrite) -> rusqlite::Result<()> {
    let mut ins = conn.prepare_cached(
        "INSERT INTO event_journal (persistence_id, sequence_nr, manifest, schema_version, \
         tags, payload, timestamp, writer_uuid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut tag_ins =
        conn.prepare_cached("INSERT INTO event_tag (tag, ordering) VALUES (?1, ?2)")?;
    for e in w.events() {
        let tags: std::borrow::Cow<'_, str> = if e.tags.is_empty() {
            "[]".into()
        } else {
            serde_json::to_string(&e.tags)
                .unwrap_or_else(|_| "[]".to_owned())
                .into()
        };
        ins.execute(params![
            e.persistence_id,
            e.sequence_nr as i64,
            e.manifest,
            e.schema_version as i64,
            tags,
            e.payload.as_json(),
            e.timestamp,
            e.writer_uuid,
        ])?;
        if !e.tags.is_empty() {
            let ordering = conn.last_insert_rowid();
            for t in &e.tags {
                tag_ins.execute(params![t, ordering])?;
            }
        }
    }
    Ok(())
}

/// Stores the writes in one transaction. The common case (no conflict) inserts everything
/// directly; if a sequence number is taken, the transaction is rolled back and done again with a
/// savepoint per atomic write, so that only the conflicting writes are rejected.
fn write_blocking(
    conn: &mut Connection,
    writes: &[AtomicWrite],
) -> Result<(Vec<Result<()>>, bool)> {
    {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(classify)?;
        match writes.iter().try_for_each(|w| insert_write(&tx, w)) {
            Ok(()) => {
                tx.commit().map_err(classify)?;
                return Ok((writes.iter().map(|_| Ok(())).collect(), true));
            }
            // Dropping `tx` rolls the whole batch back; redo it below, one savepoint per write.
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(classify(e)),
        }
    }
    let mut tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(classify)?;
    let mut results = Vec::with_capacity(writes.len());
    let mut any = false;
    for w in writes {
        let mut attempt = || -> std::result::Result<(), rusqlite::Error> {
            let sp = tx.savepoint()?;
            insert_write(&sp, w)?;
            sp.commit()
        };
        match attempt() {
            Ok(()) => {
                any = true;
                results.push(Ok(()));
            }
            Err(e) if is_unique_violation(&e) => {
                results.push(Err(w.rejected(format!("sequence nr already taken ({e})"))));
            }
            Err(e) => return Err(classify(e)),
        }
    }
    tx.commit().map_err(classify)?;
    Ok((results, any))
}

#[async_trait]
impl Journal for SqliteStore {
    async fn write_messages(&self, writes: Vec<AtomicWrite>) -> Result<Vec<Result<()>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let (results, any) = self
            .with_writer(move |conn| write_blocking(conn, &writes))
            .await?;
        if any {
            self.inner.commits.send_modify(|c| *c += 1);
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
        let pid = persistence_id.to_owned();
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM event_journal WHERE persistence_id = ?1 \
                     AND sequence_nr >= ?2 AND sequence_nr <= ?3 ORDER BY sequence_nr LIMIT ?4"
                ))
                .map_err(classify)?;
            let rows = stmt
                .query_map(
                    params![
                        pid,
                        clamp(from_sequence_nr),
                        clamp(to_sequence_nr),
                        clamp(max)
                    ],
                    |r| row_to_repr(r, 0),
                )
                .map_err(classify)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r.map_err(classify)??);
            }
            Ok(out)
        })
        .await
    }

    async fn highest_sequence_nr(&self, persistence_id: &str, _from: u64) -> Result<u64> {
        let pid = persistence_id.to_owned();
        self.with_reader(move |conn| {
            let v: i64 = conn
                .query_row(
                    "SELECT MAX(COALESCE((SELECT MAX(sequence_nr) FROM event_journal WHERE persistence_id = ?1), 0), \
                     COALESCE((SELECT max_sequence_nr FROM journal_metadata WHERE persistence_id = ?1), 0))",
                    params![pid],
                    |r| r.get(0),
                )
                .map_err(classify)?;
            Ok(v as u64)
        })
        .await
    }

    async fn delete_messages_to(&self, persistence_id: &str, to_sequence_nr: u64) -> Result<()> {
        let pid = persistence_id.to_owned();
        let to = clamp(to_sequence_nr);
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(classify)?;
            let highest: Option<i64> = tx
                .query_row(
                    "SELECT MAX(sequence_nr) FROM event_journal WHERE persistence_id = ?1 AND sequence_nr <= ?2",
                    params![pid, to],
                    |r| r.get(0),
                )
                .map_err(classify)?;
            if let Some(h) = highest {
                tx.execute(
                    "INSERT INTO journal_metadata (persistence_id, max_sequence_nr) VALUES (?1, ?2) \
                     ON CONFLICT (persistence_id) DO UPDATE SET max_sequence_nr = MAX(max_sequence_nr, excluded.max_sequence_nr)",
                    params![pid, h],
                )
                .map_err(classify)?;
                let tagged: Vec<(i64, String)> = {
                    let mut stmt = tx
                        .prepare(
                            "SELECT ordering, tags FROM event_journal WHERE persistence_id = ?1 \
                             AND sequence_nr <= ?2 AND tags <> '[]'",
                        )
                        .map_err(classify)?;
                    let rows = stmt
                        .query_map(params![pid, to], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(classify)?;
                    rows.collect::<std::result::Result<_, _>>().map_err(classify)?
                };
                {
                    let mut del = tx
                        .prepare("DELETE FROM event_tag WHERE tag = ?1 AND ordering = ?2")
                        .map_err(classify)?;
                    for (ordering, tags) in tagged {
                        let tags: Vec<String> = serde_json::from_str(&tags).map_err(|e| {
                            PersistenceError::Corrupt(format!("tags column is not a JSON list: {e}"))
                        })?;
                        for t in tags {
                            del.execute(params![t, ordering]).map_err(classify)?;
                        }
                    }
                }
                tx.execute(
                    "DELETE FROM event_journal WHERE persistence_id = ?1 AND sequence_nr <= ?2",
                    params![pid, to],
                )
                .map_err(classify)?;
            }
            tx.commit().map_err(classify)
        })
        .await
    }
}

#[async_trait]
impl SnapshotStore for SqliteStore {
    async fn save_snapshot(&self, metadata: SnapshotMetadata, data: SnapshotData) -> Result<()> {
        metadata.validate()?;
        self.with_writer(move |conn| {
            conn.prepare_cached(
                "INSERT INTO snapshot_store (persistence_id, sequence_nr, timestamp, manifest, schema_version, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (persistence_id, sequence_nr) DO UPDATE SET \
                 timestamp = excluded.timestamp, manifest = excluded.manifest, \
                 schema_version = excluded.schema_version, payload = excluded.payload",
            )
            .map_err(classify)?
            .execute(params![
                metadata.persistence_id,
                to_i64(metadata.sequence_nr, "snapshot sequence nr")?,
                metadata.timestamp,
                data.manifest,
                data.schema_version as i64,
                data.payload.as_json()
            ])
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn load_snapshot(
        &self,
        persistence_id: &str,
        criteria: SnapshotSelectionCriteria,
    ) -> Result<Option<SelectedSnapshot>> {
        let pid = persistence_id.to_owned();
        let (min_seq, max_seq, min_ts, max_ts) = criteria.clamped();
        self.with_reader(move |conn| {
            conn.query_row(
                "SELECT sequence_nr, timestamp, manifest, schema_version, payload FROM snapshot_store \
                 WHERE persistence_id = ?1 AND sequence_nr >= ?2 AND sequence_nr <= ?3 \
                 AND timestamp >= ?4 AND timestamp <= ?5 ORDER BY sequence_nr DESC, timestamp DESC LIMIT 1",
                params![pid, min_seq, max_seq, min_ts, max_ts],
                |r| {
                    Ok(SelectedSnapshot {
                        metadata: SnapshotMetadata {
                            persistence_id: pid.clone(),
                            sequence_nr: r.get::<_, i64>(0)? as u64,
                            timestamp: r.get(1)?,
                        },
                        data: SnapshotData {
                            manifest: r.get(2)?,
                            schema_version: r.get::<_, i64>(3)? as u32,
                            payload: Payload::from_json_unchecked(r.get::<_, String>(4)?),
                        },
                    })
                },
            )
            .optional()
            .map_err(classify)
        })
        .await
    }

    async fn delete_snapshot(&self, metadata: &SnapshotMetadata) -> Result<()> {
        let pid = metadata.persistence_id.clone();
        let seq = clamp(metadata.sequence_nr);
        self.with_writer(move |conn| {
            conn.execute(
                "DELETE FROM snapshot_store WHERE persistence_id = ?1 AND sequence_nr = ?2",
                params![pid, seq],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn delete_snapshots(
        &self,
        persistence_id: &str,
        criteria: SnapshotSelectionCriteria,
    ) -> Result<()> {
        let pid = persistence_id.to_owned();
        let (min_seq, max_seq, min_ts, max_ts) = criteria.clamped();
        self.with_writer(move |conn| {
            conn.prepare_cached(
                "DELETE FROM snapshot_store WHERE persistence_id = ?1 AND sequence_nr >= ?2 \
                 AND sequence_nr <= ?3 AND timestamp >= ?4 AND timestamp <= ?5",
            )
            .map_err(classify)?
            .execute(params![pid, min_seq, max_seq, min_ts, max_ts])
            .map_err(classify)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl EventsByTagQuery for SqliteStore {
    async fn events_by_tag_page(
        &self,
        tag: &str,
        after: Offset,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let tag = tag.to_owned();
        let after = clamp(after.0);
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT e.ordering, {} FROM event_tag t JOIN event_journal e ON e.ordering = t.ordering \
                     WHERE t.tag = ?1 AND t.ordering > ?2 ORDER BY t.ordering LIMIT ?3",
                    EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ")
                ))
                .map_err(classify)?;
            let rows = stmt
                .query_map(params![tag, after, limit], |r| {
                    let ordering: i64 = r.get(0)?;
                    Ok(row_to_repr(r, 1)?.map(|event| EventEnvelope { offset: Offset(ordering as u64), event }))
                })
                .map_err(classify)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r.map_err(classify)??);
            }
            Ok(out)
        })
        .await
    }

    async fn current_persistence_ids(&self) -> Result<Vec<String>> {
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT persistence_id FROM event_journal UNION SELECT persistence_id FROM journal_metadata \
                     ORDER BY 1",
                )
                .map_err(classify)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(classify)?;
            rows.collect::<std::result::Result<Vec<_>, _>>().map_err(classify)
        })
        .await
    }

    fn refresh_interval(&self) -> Duration {
        self.inner.config.refresh_interval
    }

    fn commit_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.commits.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unopenable_path_is_a_clear_unavailable_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = SqliteStore::open_path(file.join("journal.db"))
            .await
            .err()
            .expect("must fail");
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("junk.db");
        std::fs::write(&file, vec![b'z'; 4096]).unwrap();
        let err = SqliteStore::open_path(&file)
            .await
            .err()
            .expect("must fail");
        assert!(matches!(err, PersistenceError::Corrupt(_)), "{err}");
        // The file is left as it was: nothing is lost.
        assert_eq!(std::fs::read(&file).unwrap(), vec![b'z'; 4096]);
    }

    #[tokio::test]
    async fn a_damaged_row_is_reported_as_corrupt_not_as_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let store = SqliteStore::open_path(&path).await.unwrap();
        let e = PersistentRepr {
            persistence_id: "p".into(),
            sequence_nr: 1,
            manifest: "M".into(),
            schema_version: 1,
            tags: vec!["t".into()],
            payload: Payload::from_json("{}").unwrap(),
            timestamp: 0,
            writer_uuid: "w".into(),
        };
        let w = AtomicWrite::new(vec![e]).unwrap();
        store
            .write_messages(vec![w])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute("UPDATE event_journal SET tags = 'not json'", [])
            .unwrap();
        let err = store.replay_messages("p", 1, 1, 1).await.unwrap_err();
        assert!(matches!(err, PersistenceError::Corrupt(_)), "{err}");
        let err = store
            .events_by_tag_page("t", Offset::START, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, PersistenceError::Corrupt(_)), "{err}");
    }
}
