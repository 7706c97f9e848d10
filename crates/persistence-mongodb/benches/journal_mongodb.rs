//! MongoDB journal figures (issue "Measure"):
//! `MONGO_CONNECTION_STR=... cargo bench -p persistence-mongodb --bench journal_mongodb`
//! (`scripts/mongo-test-server.sh start DIR` starts SecantusDB and prints a connection string).
//!
//! The journal's events/s are compared with a plain `insert_many` of the same documents into a
//! collection with the same indexes, in the same run and with the same batch size (bar: the
//! journal reaches at least 80 % of it). Raw and journal batches alternate so drift of the server
//! affects both alike. A last figure goes through the group-commit writer with concurrent entities.
//! Sizes: BENCH_MONGO_EVENTS (per round, default 2000), BENCH_MONGO_BATCH (default 100),
//! BENCH_MONGO_ROUNDS (default 3).

use std::sync::Arc;
use std::time::Instant;

use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use persistence::{
    AtomicWrite, GroupCommitConfig, GroupCommitWriter, Journal, Payload, PersistentRepr,
};
use persistence_mongodb::{MongoConfig, MongoStore, event_document};

fn event(pid: &str, seq: u64) -> PersistentRepr {
    let mut payload = serde_json::json!({"n": seq, "data": ""});
    let len = payload.to_string().len();
    payload["data"] = serde_json::Value::String("x".repeat(100 - len));
    PersistentRepr {
        persistence_id: pid.to_owned(),
        sequence_nr: seq,
        manifest: "Recorded".into(),
        schema_version: 1,
        tags: vec!["bench".into()],
        payload: Payload::from_value(&payload),
        timestamp: persistence::now_millis(),
        writer_uuid: "bench".into(),
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `events` events as batches of `batch` atomic writes, one event per entity per batch.
fn batches(round: u64, events: u64, batch: u64) -> Vec<Vec<PersistentRepr>> {
    let mut out = Vec::new();
    let mut written = 0;
    let mut seq = 1;
    while written < events {
        let n = batch.min(events - written);
        out.push(
            (0..n)
                .map(|e| event(&format!("r{round}-e{e}"), seq))
                .collect(),
        );
        written += n;
        seq += 1;
    }
    out
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let Ok(uri) = std::env::var("MONGO_CONNECTION_STR") else {
        eprintln!(
            "set MONGO_CONNECTION_STR (e.g. `export MONGO_CONNECTION_STR=$(scripts/mongo-test-server.sh start /tmp/mongo-bench)`)"
        );
        std::process::exit(2);
    };
    let events = env("BENCH_MONGO_EVENTS", 2000);
    let batch = env("BENCH_MONGO_BATCH", 100).max(1);
    let rounds = env("BENCH_MONGO_ROUNDS", 3);
    let mut config = MongoConfig::new(uri.clone());
    config.database = Some(format!(
        "bench_{}",
        mongodb::bson::oid::ObjectId::new().to_hex()
    ));
    let store = Arc::new(MongoStore::open(config).await.expect("open mongodb"));
    let db = store.database().clone();
    println!(
        "MongoDB journal bench against {uri} (database {}), {events} events of 100 bytes per round, batches of {batch}",
        db.name()
    );

    let mut raw_total = 0.0;
    let mut journal_total = 0.0;
    for round in 0..rounds {
        // Raw insert_many of the same documents, same indexes, same batch size.
        let raw = db.collection::<Document>(&format!("RawInsert{round}"));
        raw.create_index(
            IndexModel::builder()
                .keys(doc! {"persistenceId": 1, "sequenceNr": 1})
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();
        raw.create_index(
            IndexModel::builder()
                .keys(doc! {"tags": 1, "ordering": 1})
                .build(),
        )
        .await
        .unwrap();
        let raw_batches = batches(1000 + round, events, batch);
        let mut ordering = 0;
        let docs: Vec<Vec<Document>> = raw_batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|e| {
                        ordering += 1;
                        event_document(e, ordering).unwrap()
                    })
                    .collect()
            })
            .collect();
        // Interleave one raw batch and one journal batch so that changes in the server's speed
        // during the run hit both sides alike.
        let journal_batches = batches(round, events, batch);
        let (mut raw_time, mut journal_time) = (0.0, 0.0);
        for (d, b) in docs.into_iter().zip(journal_batches) {
            let start = Instant::now();
            raw.insert_many(d).await.unwrap();
            raw_time += start.elapsed().as_secs_f64();
            let writes = b
                .into_iter()
                .map(|e| AtomicWrite::new(vec![e]).unwrap())
                .collect();
            let start = Instant::now();
            for r in store.write_messages(writes).await.unwrap() {
                r.unwrap();
            }
            journal_time += start.elapsed().as_secs_f64();
        }
        let raw_rate = events as f64 / raw_time;
        let journal_rate = events as f64 / journal_time;
        raw_total += raw_rate;
        journal_total += journal_rate;
        println!(
            "round {round}: raw insert_many {raw_rate:.0} events/s, journal write_messages {journal_rate:.0} events/s, journal/raw {:.1} %",
            100.0 * journal_rate / raw_rate
        );
    }
    println!(
        "mean: raw insert_many {:.0} events/s, journal {:.0} events/s, journal/raw {:.1} % (bar >= 80 %)",
        raw_total / rounds as f64,
        journal_total / rounds as f64,
        100.0 * journal_total / raw_total
    );

    // Through group commit: `batch` entities persisting concurrently, one event at a time each.
    let writer = GroupCommitWriter::spawn(store.clone(), GroupCommitConfig::default());
    let per_entity = (events / batch).max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for e in 0..batch {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 1..=per_entity {
                let w = AtomicWrite::new(vec![event(&format!("gc-e{e}"), seq)]).unwrap();
                writer.write(w).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = per_entity * batch;
    let commits = writer
        .stats()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "group commit: {batch} entities x {per_entity} sequential persists = {n} events in {secs:.2} s = {:.0} events/s ({commits} journal calls)",
        n as f64 / secs
    );
    db.drop().await.ok();
}
