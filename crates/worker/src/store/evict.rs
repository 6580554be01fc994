//! Capacity and eviction.
//!
//! Each directory has a capacity, and its used bytes (headers and data)
//! never exceed it: a write reserves its bytes first (the entry is pending),
//! evicting pages of that directory in the order of its eviction
//! [`crate::policy::Policy`] (LRU or S3-FIFO) until they fit. A page goes to
//! the directory with the most free space. Pending and pinned pages are
//! never victims, so a write may be refused when everything left is being
//! written or pinned. A mount with a quota evicts its own pages (in any
//! directory) to stay within it. Every removal is counted by reason
//! (`alluxiofs_evictions_total`); the caller holds the index lock, and the
//! memory copy and the file of a victim go with its entry.

use super::index::Index;
use super::{lock, PageId, PageStore};
use crate::metrics::EvictReason;

impl PageStore {
    /// The index of the mount quota `url` falls under.
    pub(super) fn mount_of(&self, url: &str) -> Option<usize> {
        self.options
            .mount_quotas
            .iter()
            .position(|(m, _)| alluxiofs_core::path::is_under(url, m))
    }

    /// The directory a new page goes to: the one with the most free space.
    pub(super) fn roomiest_dir(&self, idx: &Index) -> usize {
        (0..self.dirs.len())
            .max_by_key(|&d| self.dirs[d].capacity.saturating_sub(idx.used[d]))
            .unwrap_or(0)
    }

    /// Evict pages of `dir`, in its policy's order, until `extra` more
    /// bytes fit; returns how many pages were evicted. Deletes their files.
    pub(super) fn evict_locked(&self, idx: &mut Index, dir: usize, extra: u64) -> usize {
        let capacity = self.dirs[dir].capacity;
        let mut evicted = 0;
        while idx.used[dir] + extra > capacity {
            let Some(hash) = idx.policies[dir].victim(&|_| true) else {
                break;
            };
            let id = PageId(hash);
            idx.remove(id);
            lock(&self.memory).remove(id);
            let _ = std::fs::remove_file(self.page_path(dir, id));
            evicted += 1;
        }
        self.metrics.evicted(EvictReason::Capacity, evicted as u64);
        evicted
    }

    /// Evict pages of mount quota `m` (any directory) until `extra` more
    /// bytes fit in its quota; `false` when they still do not.
    pub(super) fn evict_mount_locked(&self, idx: &mut Index, m: usize, extra: u64) -> bool {
        let quota = self.options.mount_quotas[m].1;
        let mut evicted = 0;
        while idx.mount_used[m] + extra > quota {
            let mut victim = None;
            for dir in 0..self.dirs.len() {
                let entries = &idx.entries;
                let of_mount =
                    |h: u128| entries.get(&PageId(h)).is_some_and(|e| e.mount == Some(m));
                if let Some(h) = idx.policies[dir].victim(&of_mount) {
                    victim = Some((dir, PageId(h)));
                    break;
                }
            }
            let Some((dir, id)) = victim else { break };
            idx.remove(id);
            lock(&self.memory).remove(id);
            let _ = std::fs::remove_file(self.page_path(dir, id));
            evicted += 1;
        }
        self.metrics
            .evicted(EvictReason::MountQuota, evicted as u64);
        idx.mount_used[m] + extra <= quota
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::policy::PolicyKind;
    use crate::rules::PinQuota;
    use proptest::prelude::*;

    #[test]
    fn lru_evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let one = (header_len("u", "v") + 1000) as u64;
        let store = open_opts(&[(dir.path(), 3 * one)], 0, lru());
        let k = |i| PageKey::new("u", "v", i);
        for i in 0..3 {
            store.put(&k(i), &data(i as u8, 1000)).unwrap();
        }
        assert!(store.get(&k(0)).is_some()); // 0 is now the most recent
        store.put(&k(3), &data(3, 1000)).unwrap();
        assert!(store.contains(&k(0)));
        assert!(!store.contains(&k(1)), "the least recently used page goes");
        assert!(store.contains(&k(2)) && store.contains(&k(3)));
    }

    #[test]
    fn a_mount_quota_evicts_within_its_mount() {
        let dir = tempfile::tempdir().unwrap();
        let one = (header_len("s3://b/small/f", "v") + 1000) as u64;
        let store = open_opts(
            &[(dir.path(), 100 * one)],
            0,
            StoreOptions {
                mount_quotas: vec![("s3://b/small".into(), 3 * one)],
                ..Default::default()
            },
        );
        for i in 0..5 {
            store
                .put(&PageKey::new("s3://b/big/f", "v", i), &data(1, 1000))
                .unwrap();
        }
        for i in 0..10 {
            store
                .put(&PageKey::new("s3://b/small/f", "v", i), &data(1, 1000))
                .unwrap();
        }
        let view = store.rules();
        assert_eq!(view.mount_quotas[0].used_bytes, 3 * one);
        assert_eq!(store.gauges().pages, 8, "the other mount is untouched");
        assert_eq!(store.metrics.evictions(EvictReason::MountQuota), 7);
        assert_eq!(store.metrics.evictions(EvictReason::Capacity), 0);
    }

    #[test]
    fn concurrent_puts_gets_and_removals_keep_the_accounting() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 40_000;
        let store = open(&[(dir.path(), cap)], 6000);
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let store = &store;
                scope.spawn(move || {
                    let mut x = t + 1;
                    for _ in 0..3000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let index = (x >> 40) % 24;
                        let url = if (x >> 20) % 2 == 0 {
                            "s3://b/one"
                        } else {
                            "s3://b/two"
                        };
                        let key = PageKey::new(url, "v", index);
                        let d = data(index as u8, (index as usize * 331) % 3000 + 1);
                        match (x >> 50) % 8 {
                            0 => {
                                store.remove_url(url, None);
                            }
                            1..=3 => {
                                store.put(&key, &d).unwrap();
                            }
                            _ => {
                                if let Some(got) = store.get(&key) {
                                    assert_eq!(got, d);
                                }
                            }
                        }
                        assert!(store.used_per_dir()[0] <= cap);
                    }
                });
            }
        });
        assert_eq!(store.used_per_dir()[0], disk_bytes(dir.path()));
        assert_eq!(Metrics::get(&store.metrics.corrupt_pages), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Reference model: random puts, reads, pins and frees over twice
        /// the capacity, under both policies; used bytes never exceed the
        /// capacity, match the files on disk, and pinned pages stay.
        #[test]
        fn under_2x_overfill_capacity_holds_and_pins_stay(
            ops in proptest::collection::vec((0u8..10, 0u64..60), 1..200),
            lru in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let one = (header_len("s3://b/a", "v") + 1000) as u64;
            let cap = 30 * one;
            let policy = if lru { PolicyKind::Lru } else { PolicyKind::S3Fifo };
            let store = open_opts(&[(dir.path(), cap)], 0, StoreOptions {
                policy,
                pin_quota: PinQuota::Bytes(10 * one),
                ..Default::default()
            });
            let key = |i: u64| PageKey::new(if i.is_multiple_of(4) { "s3://b/a" } else { "s3://b/c" }, "v", i);
            let mut pinned_a = false;
            for (op, i) in ops {
                match op {
                    0..=5 => { store.put(&key(i), &data(i as u8, 1000)).unwrap(); }
                    6 | 7 => {
                        if let Some(got) = store.get(&key(i)) {
                            prop_assert_eq!(got, data(i as u8, 1000));
                        }
                    }
                    8 => { pinned_a = store.pin("s3://b/a").is_ok() || pinned_a; }
                    _ => { let _ = store.free("s3://b/c", false, false); }
                }
                prop_assert!(store.used_per_dir()[0] <= cap);
                prop_assert_eq!(store.used_per_dir()[0], disk_bytes(dir.path()));
                prop_assert!(store.gauges().pinned_bytes <= 10 * one);
            }
            if pinned_a {
                let before: Vec<u64> = (0..60).step_by(4).filter(|i| store.contains(&key(*i))).collect();
                for i in 100..160 {
                    store.put(&PageKey::new("s3://b/c", "v", i), &data(0, 1000)).unwrap();
                }
                for i in before {
                    prop_assert!(store.contains(&key(i)), "pinned page {} evicted", i);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn used_bytes_never_exceed_capacity(
            caps in proptest::collection::vec(2_000u64..40_000, 1..3),
            puts in proptest::collection::vec(0u64..40, 1..80),
        ) {
            let dirs: Vec<_> = caps.iter().map(|_| tempfile::tempdir().unwrap()).collect();
            let specs: Vec<_> = dirs.iter().zip(&caps).map(|(d, c)| (d.path(), *c)).collect();
            let store = open(&specs, 5000);
            for index in puts {
                let len = (index as usize * 977) % 4096;
                let key = PageKey::new("s3://b/obj", "v", index);
                let d = data(index as u8, len);
                store.put(&key, &d).unwrap();
                for (i, used) in store.used_per_dir().iter().enumerate() {
                    prop_assert!(*used <= caps[i], "dir {} uses {} > {}", i, used, caps[i]);
                    prop_assert_eq!(*used, disk_bytes(dirs[i].path()));
                }
                if let Some(got) = store.get(&key) {
                    prop_assert_eq!(got, d);
                }
            }
        }
    }
}
