//! What the MongoDB journal and snapshot store read back: any BSON document, converted as an
//! event document and as a snapshot document (the backend's own checks of fields and types),
//! and, when that succeeds, its payload decoded as every type the services persist. With the
//! first byte odd, the rest is JSON that the harness stores as a well-formed event document
//! first, so the fuzzer also reaches the payload decoders through the BSON conversion.
#![no_main]

use akka_cqrs_fuzz::{decode_stored, manifests};
use libfuzzer_sys::fuzz_target;
use persistence::{Payload, PersistentRepr};
use persistence_mongodb::convert::{doc_to_event, doc_to_snapshot, event_to_doc};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let doc = if mode & 1 == 0 {
        match bson::Document::from_reader(rest) {
            Ok(d) => d,
            Err(_) => return,
        }
    } else {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let Ok(payload) = Payload::from_json(text) else {
            return;
        };
        let manifests = manifests();
        let event = PersistentRepr {
            persistence_id: "fuzz".into(),
            sequence_nr: 1,
            manifest: manifests[usize::from(mode >> 1) % manifests.len()].into(),
            schema_version: 1,
            payload,
            tags: Vec::new(),
            timestamp: 0,
            writer_uuid: "fuzz".into(),
        };
        match event_to_doc(&event, 1) {
            Ok(d) => d,
            // A payload BSON cannot hold (for example an integer beyond i64) is refused
            // when written, with an error.
            Err(_) => return,
        }
    };
    if let Ok((_, event)) = doc_to_event(&doc) {
        decode_stored(&event.manifest, event.schema_version, &event.payload);
    }
    if let Ok(snapshot) = doc_to_snapshot(&doc) {
        decode_stored(
            &snapshot.data.manifest,
            snapshot.data.schema_version,
            &snapshot.data.payload,
        );
    }
});
