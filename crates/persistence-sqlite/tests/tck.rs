//! The persistence conformance suite against SQLite, one temp database per case.

use std::sync::Arc;

use persistence::tck::TckBackend;
use persistence_sqlite::{SqliteConfig, SqliteStore};

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Self {
        Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl TckBackend for Sqlite {
    type Store = SqliteStore;

    async fn open(&self) -> Arc<SqliteStore> {
        let config = SqliteConfig::new(self.dir.path().join("journal.db"));
        Arc::new(SqliteStore::open(config).await.expect("open sqlite"))
    }
}

persistence::tck_suite!(Sqlite::new());
