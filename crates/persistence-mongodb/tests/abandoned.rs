//! A writer killed in the middle of a journal write leaves its transaction open on the server
//! (closing the connection does not abort it) until the server's transaction lifetime limit,
//! holding the keys it inserted. A new writer of the same persistence id must get past it within
//! a few seconds (its session is killed once its lease lapses), events by tag must not skip
//! anything, and a live writer that renews its lease must not be taken for abandoned.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mongodb::bson::{DateTime, Document, doc};
use persistence::{AtomicWrite, Journal, Offset, Payload, PersistentRepr, current_events_by_tag};
use persistence_mongodb::{EVENT_JOURNAL, METADATA, MongoConfig, MongoStore, TAG_ORDERING_ID};

fn event(pid: &str, seq: u64, tag: &str) -> PersistentRepr {
    PersistentRepr {
        persistence_id: pid.into(),
        sequence_nr: seq,
        manifest: "E".into(),
        schema_version: 1,
        tags: vec![tag.into()],
        payload: Payload::from_value(&serde_json::json!({"n": seq})),
        timestamp: 1,
        writer_uuid: "w".into(),
    }
}

async fn store(db: &str, abandon_after: Duration) -> MongoStore {
    let mut c = MongoConfig::new(common::connection_string());
    c.database = Some(db.into());
    c.refresh_interval = Duration::from_millis(100);
    c.abandon_after = abandon_after;
    MongoStore::open(c).await.unwrap()
}

async fn tagged(s: &MongoStore, tag: &str) -> Vec<(u64, String, u64)> {
    current_events_by_tag(Arc::new(s.clone()), tag, Offset::START)
        .map(|e| {
            let e = e.unwrap();
            (e.offset.0, e.event.persistence_id, e.event.sequence_nr)
        })
        .collect()
        .await
}

/// Waits until no reservation is pending (writers remove theirs in the background after
/// acknowledging), so no clean-up task is cut off when the test's runtime shuts down.
async fn settled(s: &MongoStore) {
    let meta = s.database().collection::<Document>(METADATA);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ord = meta
            .find_one(doc! {"_id": TAG_ORDERING_ID})
            .await
            .unwrap()
            .unwrap();
        if ord.get_array("pending").unwrap().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "reservations left: {ord}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tries to insert `doc` in a transaction of its own; returns the error, if any.
async fn try_insert_in_txn(client: &mongodb::Client, db: &str, d: Document) -> Option<String> {
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    let coll = client.database(db).collection::<Document>(EVENT_JOURNAL);
    match coll.insert_one(d).session(&mut s).await {
        Ok(_) => {
            s.abort_transaction().await.unwrap();
            None
        }
        Err(e) => Some(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_gets_past_a_transaction_abandoned_mid_write() {
    let db = common::unique_db("abandoned");
    let tag = "t";
    // The dead process: one committed event, then a write whose transaction never ends.
    let dead = store(&db, Duration::from_secs(5)).await;
    let w = AtomicWrite::new(vec![event("other", 1, tag)]).unwrap();
    dead.write_messages(vec![w])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let abandoned =
        vec![AtomicWrite::new(vec![event("book", 1, tag), event("book", 2, tag)]).unwrap()];
    dead.begin_write_and_abandon_it(&abandoned).await.unwrap();
    drop(dead);

    // The transaction really is open and holds the keys.
    let raw = mongodb::Client::with_uri_str(common::connection_string())
        .await
        .unwrap();
    let d = persistence_mongodb::event_document(&event("book", 1, tag), 1_000_000).unwrap();
    let err = try_insert_in_txn(&raw, &db, d)
        .await
        .expect("the abandoned transaction should hold the key");
    assert!(err.contains("WriteConflict"), "{err}");

    // The restarted process writes the same persistence id (default 5 s abandon bound).
    let live = store(&db, MongoConfig::new("").abandon_after).await;
    let started = Instant::now();
    let limit = Duration::from_secs(15);
    let mut tries = 0;
    loop {
        tries += 1;
        let w = AtomicWrite::new(vec![event("book", 1, tag), event("book", 2, tag)]).unwrap();
        match live.write_messages(vec![w]).await {
            Ok(mut r) => {
                r.remove(0).unwrap();
                break;
            }
            Err(e) => {
                assert!(
                    started.elapsed() < limit,
                    "still failing after {:?} ({tries} tries): {e}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let took = started.elapsed();
    eprintln!("write past the abandoned transaction took {took:?} ({tries} tries)");
    assert!(took < limit, "took {took:?}");
    let w = AtomicWrite::new(vec![event("after", 1, tag)]).unwrap();
    live.write_messages(vec![w])
        .await
        .unwrap()
        .remove(0)
        .unwrap();

    // Events by tag: everything, in order, nothing skipped, the dead write's orderings unused.
    let got = tagged(&live, tag).await;
    let names: Vec<(&str, u64)> = got.iter().map(|(_, p, s)| (p.as_str(), *s)).collect();
    assert_eq!(
        names,
        vec![("other", 1), ("book", 1), ("book", 2), ("after", 1)]
    );
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "{got:?}");
    let events = live.database().collection::<Document>(EVENT_JOURNAL);
    assert_eq!(events.count_documents(doc! {}).await.unwrap(), 4);
    // The dead write's reservation was voided, so it can never commit.
    let meta = live.database().collection::<Document>(METADATA);
    assert_eq!(
        meta.count_documents(doc! {"voidedAt": {"$exists": true}})
            .await
            .unwrap(),
        1
    );
    settled(&live).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_resolves_an_abandoned_write_after_the_abandon_bound() {
    let db = common::unique_db("abandoned_reader");
    let tag = "t";
    let dead = store(&db, Duration::from_secs(1)).await;
    let abandoned = vec![AtomicWrite::new(vec![event("book", 1, tag)]).unwrap()];
    dead.begin_write_and_abandon_it(&abandoned).await.unwrap();
    drop(dead);
    let reader = store(&db, Duration::from_secs(1)).await;
    let w = AtomicWrite::new(vec![event("other", 1, tag)]).unwrap();
    reader
        .write_messages(vec![w])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    // Held back by the pending reservation until its lease lapses, then it moves on.
    let started = Instant::now();
    loop {
        let got = tagged(&reader, tag).await;
        if !got.is_empty() {
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1, "other");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "reader stuck");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The key the dead write held is free again.
    let w = AtomicWrite::new(vec![event("book", 1, tag)]).unwrap();
    reader
        .write_messages(vec![w])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    settled(&reader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_writer_that_renews_its_lease_is_not_killed_and_its_late_commit_is_delivered() {
    let db = common::unique_db("abandoned_live");
    let tag = "t";
    let s = store(&db, Duration::from_millis(500)).await;
    let raw = mongodb::Client::with_uri_str(common::connection_string())
        .await
        .unwrap();
    // (SecantusDB: the first event with tags makes the tags index multikey, which conflicts
    // with any concurrent transaction; write one first, as any running system has.)
    let w = AtomicWrite::new(vec![event("first", 1, tag)]).unwrap();
    s.write_messages(vec![w]).await.unwrap().remove(0).unwrap();
    let mut session = raw.start_session().await.unwrap();
    // A slow writer: reserved long ago (older than the abandon bound), lease renewed just now.
    let meta = raw.database(&db).collection::<Document>(METADATA);
    let old = DateTime::from_millis(DateTime::now().timestamp_millis() - 5_000);
    let after = meta
        .find_one_and_update(
            doc! {"_id": TAG_ORDERING_ID},
            vec![doc! {"$set": {
                "next": {"$add": ["$next", 1_i64]},
                "pending": {"$concatArrays": ["$pending", [{
                    "token": "slow", "from": {"$add": ["$next", 1_i64]}, "to": {"$add": ["$next", 1_i64]},
                    "at": old, "lsid": {"$literal": session.id().clone()},
                }]]},
            }}],
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap()
        .unwrap();
    let from = after.get_i64("next").unwrap();
    session.start_transaction().await.unwrap();
    let events = raw.database(&db).collection::<Document>(EVENT_JOURNAL);
    let d = persistence_mongodb::event_document(&event("slow", 1, tag), from).unwrap();
    events.insert_one(d).session(&mut session).await.unwrap();
    meta.insert_one(doc! {"_id": "done:slow"})
        .session(&mut session)
        .await
        .unwrap();
    // It keeps renewing its lease while a fast writer commits and a reader polls.
    let renew = {
        let meta = meta.clone();
        tokio::spawn(async move {
            loop {
                meta.update_one(
                    doc! {"_id": TAG_ORDERING_ID, "pending.token": "slow"},
                    doc! {"$set": {"pending.$.beat": DateTime::now()}},
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let w = AtomicWrite::new(vec![event("fast", 1, tag)]).unwrap();
    s.write_messages(vec![w]).await.unwrap().remove(0).unwrap();
    for _ in 0..10 {
        assert_eq!(
            tagged(&s, tag).await.len(),
            1,
            "reader ran ahead of a live writer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    renew.abort();
    // Its transaction was not killed: it commits, and the late commit is delivered in order.
    session.commit_transaction().await.unwrap();
    let got = tagged(&s, tag).await;
    let names: Vec<&str> = got.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(names, vec!["first", "slow", "fast"]);
    meta.update_one(
        doc! {"_id": TAG_ORDERING_ID},
        doc! {"$pull": {"pending": {"token": "slow"}}},
    )
    .await
    .unwrap();
    settled(&s).await;
}
