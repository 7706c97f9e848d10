//! The persistence conformance suite against MongoDB (SecantusDB in CI), one fresh database per
//! case so cases run in parallel and repeatedly against one server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use persistence::tck::TckBackend;
use persistence_mongodb::MongoStore;

struct Mongo {
    db: String,
}

impl TckBackend for Mongo {
    type Store = MongoStore;

    async fn open(&self) -> Arc<MongoStore> {
        Arc::new(common::open_store(&self.db).await)
    }

    /// SecantusDB stores about 1,300 documents/s, so the concurrency case uses 8 x 250 events
    /// here (the in-memory and SQLite runs use 8 x 10,000). It still interleaves 8 writers'
    /// transactions with a live reader, which is what can expose a skipped late commit.
    fn events_per_concurrent_writer(&self) -> usize {
        250
    }

    fn live_timeout(&self) -> Duration {
        Duration::from_secs(20)
    }
}

persistence::tck_suite!(Mongo {
    db: common::unique_db("tck")
});
