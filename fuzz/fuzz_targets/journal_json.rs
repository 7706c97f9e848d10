//! What the SQLite and in-memory journals hand back: a stored JSON payload, decoded as every
//! event and snapshot type the services persist (order-book events and snapshots, the price
//! aggregators' events and projection, the sharding remember-entities events). The first
//! byte picks the manifest and schema version the row claims; the rest is the payload text.
#![no_main]

use akka_cqrs_fuzz::{decode_stored, manifests};
use libfuzzer_sys::fuzz_target;
use persistence::Payload;

fuzz_target!(|data: &[u8]| {
    let Some((&claim, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(payload) = Payload::from_json(text) else {
        return;
    };
    let manifests = manifests();
    let manifest = manifests[usize::from(claim) % manifests.len()];
    decode_stored(manifest, u32::from(claim >> 6), &payload);
});
