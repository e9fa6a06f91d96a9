//! Exactly once (SPEC §6.3): which messageIds a run has already accepted.
//!
//! Why this module exists: at-least-once pipelines deliver events twice, and the `id` column must hold each
//! messageId once. The set of ids seen is the one structure of a run that grows with the input, so how it is
//! stored (and what it costs) is decided here.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use xxhash_rust::xxh3::xxh3_128;

/// A hasher for keys that are already 128-bit hashes (xxh3 of the messageId): it folds them, nothing more.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

/// The messageIds a run has accepted, as 128-bit xxh3 hashes (16 bytes each; a collision is as likely as
/// nothing at all). The set is split into 256 tables so that growing one (which briefly holds the old and the
/// new table) costs 1/256 of the set, not the whole set again: memory grows with the ids, smoothly.
pub struct SeenIds {
    shards: Vec<HashSet<u128, BuildHasherDefault<Prehashed>>>,
}

impl Default for SeenIds {
    fn default() -> Self {
        SeenIds {
            shards: (0..256).map(|_| HashSet::default()).collect(),
        }
    }
}

impl SeenIds {
    /// Adds an id; false if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        let h = xxh3_128(id.as_bytes());
        self.shards[(h >> 120) as usize].insert(h)
    }
}
