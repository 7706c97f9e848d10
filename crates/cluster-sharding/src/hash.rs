//! Entity id to shard id: a hash that is stable across processes, platforms and
//! releases, so every node (and every future version) maps an entity to the same shard.
//!
//! The hash is 64-bit FNV-1a over the UTF-8 bytes of the entity id (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`), and the shard is that hash modulo the
//! number of shards. It is written out here rather than taken from a crate so that
//! its definition can never change under us; the unit tests pin it to the published
//! FNV-1a test vectors.

/// A shard number, `0..number_of_shards`.
pub type ShardId = u32;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The shard of `entity_id` among `number_of_shards` shards (which must be at least 1).
pub fn shard_of(entity_id: &str, number_of_shards: u32) -> ShardId {
    let n = u64::from(number_of_shards.max(1));
    (fnv1a64(entity_id.as_bytes()) % n) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_64_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn shard_ids_are_fixed_for_known_ids() {
        // Pinned values: changing them would move every persisted entity to another shard.
        assert_eq!(shard_of("foobar", 30), 18);
        assert_eq!(shard_of("a", 30), 16);
        assert_eq!(shard_of("", 30), 17);
        assert_eq!(shard_of("MSFT", 30), 29);
        assert_eq!(shard_of("order-42", 30), 14);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn ids_spread_over_all_shards() {
        let mut seen = [0u32; 30];
        for i in 0..3000 {
            seen[shard_of(&format!("entity-{i}"), 30) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "uneven spread: {seen:?}");
    }
}
