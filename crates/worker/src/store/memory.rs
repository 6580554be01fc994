//! The memory tier: a bounded LRU of hot page bytes.
//!
//! It holds only bytes that were verified (read from disk and checked) or
//! came straight from the UFS, so a memory hit needs no check and no I/O;
//! async code may look it up without `spawn_blocking`. It is bounded by
//! bytes: a page larger than the whole tier is not kept, and inserting
//! evicts the least recently used pages until the new one fits. It is a
//! copy of what is on disk (or would be), not a tier of its own for
//! capacity accounting: eviction from disk also removes the memory copy.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

/// Bounded LRU of verified page bytes.
#[derive(Debug, Default)]
pub(super) struct MemoryTier {
    pub(super) capacity: u64,
    pub(super) used: u64,
    tick: u64,
    pub(super) map: HashMap<u128, (Bytes, u64)>,
    order: BTreeMap<u64, u128>,
}

impl MemoryTier {
    /// An empty tier of `capacity` bytes.
    pub(super) fn new(capacity: u64) -> Self {
        MemoryTier {
            capacity,
            ..Default::default()
        }
    }

    /// The page, now the most recently used.
    pub(super) fn get(&mut self, id: u128) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let (bytes, t) = self.map.get_mut(&id)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, id);
        Some(bytes.clone())
    }

    /// Keep a page (unless it is larger than the tier or already kept).
    pub(super) fn insert(&mut self, id: u128, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.capacity || self.map.contains_key(&id) {
            return;
        }
        while self.used + len > self.capacity {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.map.remove(&victim) {
                self.used -= b.len() as u64;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, id);
        self.map.insert(id, (bytes, self.tick));
        self.used += len;
    }

    pub(super) fn remove(&mut self, id: u128) {
        if let Some((b, t)) = self.map.remove(&id) {
            self.order.remove(&t);
            self.used -= b.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;

    #[test]
    fn memory_tier_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 2500);
        for i in 0..5 {
            store
                .put(&PageKey::new("u", "v", i), &data(i as u8, 1000))
                .unwrap();
        }
        let g = store.gauges();
        assert_eq!(g.memory_pages, 2);
        assert!(g.memory_used_bytes <= 2500);
    }
}
