//! The gap-free events-by-tag protocol (see the crate docs), driven by hand: a writer that has
//! reserved orderings but not committed yet holds readers back, its late commit is delivered in
//! order, and a reservation older than the lease is voided so that the stalled writer can never
//! commit under it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mongodb::bson::{DateTime, Document, doc};
use persistence::{
    AtomicWrite, EventsByTagQuery, Journal, Offset, Payload, PersistentRepr, current_events_by_tag,
};
use persistence_mongodb::{METADATA, MongoConfig, MongoStore, TAG_ORDERING_ID};

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

async fn store(db: &str, lease: Duration) -> MongoStore {
    let mut c = MongoConfig::new(common::connection_string());
    c.database = Some(db.into());
    c.pending_lease = lease;
    MongoStore::open(c).await.unwrap()
}

/// Reserves `n` orderings by hand, as a writer does before its transaction; returns `from`.
async fn reserve_by_hand(s: &MongoStore, token: &str, n: i64, at: DateTime) -> i64 {
    let meta = s.database().collection::<Document>(METADATA);
    let after = meta
        .find_one_and_update(
            doc! {"_id": TAG_ORDERING_ID},
            vec![doc! {"$set": {
                "next": {"$add": ["$next", n]},
                "pending": {"$concatArrays": ["$pending", [{
                    "token": token, "from": {"$add": ["$next", 1_i64]}, "to": {"$add": ["$next", n]}, "at": at,
                }]]},
            }}],
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap()
        .unwrap();
    after.get_i64("next").unwrap() - n + 1
}

async fn offsets_and_pids(s: &MongoStore, tag: &str) -> Vec<(u64, String)> {
    current_events_by_tag(Arc::new(s.clone()), tag, Offset::START)
        .map(|e| {
            let e = e.unwrap();
            (e.offset.0, e.event.persistence_id)
        })
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_below_a_visible_event_is_not_skipped() {
    let db = common::unique_db("late");
    let s = store(&db, Duration::from_secs(600)).await;
    let tag = "t";
    // A slow writer reserves ordering first ...
    let from = reserve_by_hand(&s, "slow", 1, DateTime::now()).await;
    // ... then a fast writer commits a later ordering.
    let w = AtomicWrite::new(vec![event("fast", 1, tag)]).unwrap();
    s.write_messages(vec![w]).await.unwrap().remove(0).unwrap();
    // The reader must not move past the slow writer's ordering yet.
    assert!(
        offsets_and_pids(&s, tag).await.is_empty(),
        "reader ran ahead of a pending reservation"
    );
    // The slow writer commits (events + completion marker, as its transaction would).
    let d = persistence_mongodb::event_document(&event("slow", 1, tag), from).unwrap();
    let coll = s.database().collection::<Document>("EventJournal");
    coll.insert_one(d).await.unwrap();
    let meta = s.database().collection::<Document>(METADATA);
    meta.insert_one(doc! {"_id": "done:slow"}).await.unwrap();
    let got = offsets_and_pids(&s, tag).await;
    assert_eq!(
        got.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
        vec!["slow", "fast"]
    );
    assert!(got[0].0 < got[1].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_older_than_the_lease_is_voided_and_fences_its_writer() {
    let db = common::unique_db("lease");
    let s = store(&db, Duration::from_millis(200)).await;
    let tag = "t";
    let old = DateTime::from_millis(DateTime::now().timestamp_millis() - 60_000);
    reserve_by_hand(&s, "dead", 2, old).await;
    let w = AtomicWrite::new(vec![event("alive", 1, tag)]).unwrap();
    s.write_messages(vec![w]).await.unwrap().remove(0).unwrap();
    // The dead writer's reservation is voided, so the reader proceeds.
    let got = offsets_and_pids(&s, tag).await;
    assert_eq!(
        got.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
        vec!["alive"]
    );
    // Its completion marker now exists as a void marker: a late commit would hit a duplicate key.
    let meta = s.database().collection::<Document>(METADATA);
    let marker = meta
        .find_one(doc! {"_id": "done:dead"})
        .await
        .unwrap()
        .expect("void marker");
    assert!(marker.contains_key("voidedAt"));
    let err = meta
        .insert_one(doc! {"_id": "done:dead"})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("E11000") || err.to_string().contains("duplicate"),
        "{err}"
    );
    // Every reservation is gone from the pending list (the live writer removes its own right
    // after acknowledging, in the background).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ord = meta
            .find_one(doc! {"_id": TAG_ORDERING_ID})
            .await
            .unwrap()
            .unwrap();
        if ord.get_array("pending").unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reservations left: {ord}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_readable_bson_documents() {
    let db = common::unique_db("readable");
    let s = store(&db, Duration::from_secs(30)).await;
    let mut e = event("book-1", 1, "t");
    e.payload = Payload::from_value(&serde_json::json!({"price": 101.25, "quantity": 30}));
    s.write_messages(vec![AtomicWrite::new(vec![e]).unwrap()])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let coll = s.database().collection::<Document>("EventJournal");
    let d = coll
        .find_one(doc! {"payload.quantity": 30_i64})
        .await
        .unwrap()
        .expect("found by field");
    assert_eq!(d.get_str("persistenceId").unwrap(), "book-1");
    assert_eq!(
        d.get_document("payload").unwrap().get_f64("price").unwrap(),
        101.25
    );
    let idx = coll.list_index_names().await.unwrap();
    assert!(
        idx.contains(&"persistenceId_sequenceNr".to_string()),
        "{idx:?}"
    );
    assert_eq!(s.highest_sequence_nr("book-1", 0).await.unwrap(), 1);
    assert!(
        s.current_persistence_ids()
            .await
            .unwrap()
            .contains(&"book-1".to_string())
    );
}

#[tokio::test]
async fn a_bad_connection_string_is_a_clear_error() {
    let err = MongoStore::open_uri("not-a-uri")
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("MONGO_CONNECTION_STR"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let port = common::free_port();
    let mut c = MongoConfig::new(format!("mongodb://127.0.0.1:{port}/?directConnection=true"));
    c.server_selection_timeout = Duration::from_millis(500);
    let err = MongoStore::open(c).await.err().expect("must fail");
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_bson_cannot_hold_is_refused_alone_and_nothing_else_is_lost() {
    let db = common::unique_db("badpayload");
    let s = store(&db, Duration::from_secs(30)).await;
    let mut bad = event("bad", 1, "t");
    bad.payload = Payload::from_json(format!("{{\"n\":{}}}", u64::MAX)).unwrap();
    let good = event("good", 1, "t");
    let r = s
        .write_messages(vec![
            AtomicWrite::new(vec![bad]).unwrap(),
            AtomicWrite::new(vec![good]).unwrap(),
        ])
        .await
        .unwrap();
    let err = r[0].as_ref().unwrap_err();
    assert!(
        matches!(err, persistence::PersistenceError::Serialization(_)),
        "{err}"
    );
    assert!(err.to_string().contains("64-bit"), "{err}");
    assert!(r[1].is_ok(), "{:?}", r[1]);
    assert_eq!(s.highest_sequence_nr("bad", 0).await.unwrap(), 0);
    assert_eq!(s.highest_sequence_nr("good", 0).await.unwrap(), 1);
}
