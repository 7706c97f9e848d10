//! Opening the persistence backend once per process. Every entity of the process shares the
//! result, so writes from all of them meet in one group-commit writer (one disk sync or one
//! MongoDB round trip for many entities' events). Opened with a [`Metrics`], that writer
//! records each journal call's latency and size on it (the node's `/metrics`).

use std::sync::Arc;

use persistence::actor::{PersistenceConfig, PersistenceHandle};
use persistence::{EventsByTagQuery, Journal, PersistenceError, SnapshotStore};
use persistence_mongodb::{MongoConfig, MongoStore};
use persistence_sqlite::{SqliteConfig, SqliteStore};
use telemetry::Metrics;
use telemetry::instruments::JournalMetrics;

use crate::args::StoreConfig;

/// The journal, snapshot store and query of one backend, and the shared write path.
#[derive(Clone)]
pub struct Stores {
    /// The events.
    pub journal: Arc<dyn Journal>,
    /// The snapshots.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Events by tag (the read side).
    pub query: Arc<dyn EventsByTagQuery>,
    /// Retry, circuit breaker and group commit in front of the journal, for entities.
    pub persistence: PersistenceHandle,
    /// Where the data lives, for logs and banners.
    pub description: String,
}

impl Stores {
    /// Opens (and creates, for SQLite) the configured backend; indexes and tables are
    /// created at start. Must run inside a tokio runtime.
    pub async fn open(config: &StoreConfig) -> Result<Stores, PersistenceError> {
        Self::open_with_metrics(config, None).await
    }

    /// Like [`Stores::open`], recording journal writes (latency histogram and batch sizes,
    /// `db.system.name` = `sqlite` or `mongodb`) on `metrics`.
    pub async fn open_with_metrics(
        config: &StoreConfig,
        metrics: Option<&Metrics>,
    ) -> Result<Stores, PersistenceError> {
        let journal_metrics = |system: &'static str| {
            metrics.map(|m| JournalMetrics::new(&m.meter_with_scope("persistence"), system))
        };
        match config {
            StoreConfig::Sqlite { dir, sync_full } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    PersistenceError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
                let path = dir.join("journal.db");
                let mut config = SqliteConfig::new(&path);
                config.sync_full = *sync_full;
                let store = Arc::new(SqliteStore::open(config).await?);
                Ok(Self::from_store_with_metrics(
                    store,
                    format!("SQLite {}", path.display()),
                    journal_metrics("sqlite"),
                ))
            }
            StoreConfig::Mongo(uri) => {
                let store = Arc::new(MongoStore::open(MongoConfig::new(uri.clone())).await?);
                Ok(Self::from_store_with_metrics(
                    store,
                    "MongoDB".to_string(),
                    journal_metrics("mongodb"),
                ))
            }
        }
    }

    /// Wraps a store that implements all three traits.
    pub fn from_store<S>(store: Arc<S>, description: String) -> Stores
    where
        S: Journal + SnapshotStore + EventsByTagQuery,
    {
        Self::from_store_with_metrics(store, description, None)
    }

    /// Like [`Stores::from_store`], with the group-commit writer recording on `metrics`.
    pub fn from_store_with_metrics<S>(
        store: Arc<S>,
        description: String,
        metrics: Option<JournalMetrics>,
    ) -> Stores
    where
        S: Journal + SnapshotStore + EventsByTagQuery,
    {
        let journal: Arc<dyn Journal> = store.clone();
        let snapshots: Arc<dyn SnapshotStore> = store.clone();
        let persistence = PersistenceHandle::with_metrics(
            journal.clone(),
            snapshots.clone(),
            PersistenceConfig::default(),
            metrics,
        );
        Stores {
            journal,
            snapshots,
            query: store,
            persistence,
            description,
        }
    }
}
