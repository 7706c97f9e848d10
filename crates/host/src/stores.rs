//! Opening the persistence backend once per process. Every entity of the process shares the
//! result, so writes from all of them meet in one group-commit writer (one disk sync or one
//! MongoDB round trip for many entities' events).

use std::sync::Arc;

use persistence::actor::{PersistenceConfig, PersistenceHandle};
use persistence::{EventsByTagQuery, Journal, PersistenceError, SnapshotStore};
use persistence_mongodb::{MongoConfig, MongoStore};
use persistence_sqlite::{SqliteConfig, SqliteStore};

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
        match config {
            StoreConfig::Sqlite { dir, sync_full } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    PersistenceError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
                let path = dir.join("journal.db");
                let mut config = SqliteConfig::new(&path);
                config.sync_full = *sync_full;
                let store = Arc::new(SqliteStore::open(config).await?);
                Ok(Self::from_store(
                    store,
                    format!("SQLite {}", path.display()),
                ))
            }
            StoreConfig::Mongo(uri) => {
                let store = Arc::new(MongoStore::open(MongoConfig::new(uri.clone())).await?);
                Ok(Self::from_store(store, "MongoDB".to_string()))
            }
        }
    }

    /// Wraps a store that implements all three traits.
    pub fn from_store<S>(store: Arc<S>, description: String) -> Stores
    where
        S: Journal + SnapshotStore + EventsByTagQuery,
    {
        let journal: Arc<dyn Journal> = store.clone();
        let snapshots: Arc<dyn SnapshotStore> = store.clone();
        let persistence = PersistenceHandle::new(
            journal.clone(),
            snapshots.clone(),
            PersistenceConfig::default(),
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
