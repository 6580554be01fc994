//! Keeping rules applied to the pages: pins, TTLs and frees.
//!
//! The rules themselves (prefix matching, persistence in `rules.json`) are
//! [`crate::rules`]; this file applies them to the index:
//!
//! - **Pins** take a prefix's pages out of the eviction policies (never
//!   evicted) and are bounded by the pin quota: a pin that would exceed it
//!   is refused and changes nothing.
//! - **TTLs**: a page older than the TTL of its path (since it was cached)
//!   is a miss, checked on read ([`PageStore::expired`]; skipped without a
//!   lock while no TTL exists) and by a periodic sweep on a thread of its
//!   own. The index keeps no URLs, so each page carries the number of the
//!   TTL rule that covers it (its *class*, set when it is cached and, after
//!   a rules change, from the names file); the sweep compares ages with
//!   the class's TTL.
//! - **Free** deletes a prefix's pages now; pinned ones only when forced.
//!
//! Work by prefix (pin, unpin, free) finds the URLs under the prefix in the
//! names file ([`super::journal`]), then their pages in the index. A rules
//! change is saved before it takes effect, under the index lock, so the
//! file and the index never disagree about what is pinned.

use super::index::{now_ds, MAX_CLASSES};
use super::key::Hashes;
use super::{lock, PageStore};
use crate::metrics::EvictReason;
use crate::rules::Rules;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What a pin, unpin or free did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeepOutcome {
    /// Pages affected.
    pub pages: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// A pin: whether its rule is new (it was not pinned already), so that
    /// undoing the pin (`unpin` with `exact`) is right.
    pub new_rule: bool,
}

/// The keeping rules and their accounting, for `GET /v1/rules`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RulesView {
    /// Pinned prefixes.
    pub pins: Vec<String>,
    /// TTL seconds per prefix.
    pub ttls: BTreeMap<String, u64>,
    /// Bytes of pinned pages.
    pub pinned_bytes: u64,
    /// The pin quota in bytes.
    pub pin_quota_bytes: u64,
    /// The eviction policy.
    pub eviction_policy: String,
    /// Mount quotas: prefix, quota and used bytes.
    pub mount_quotas: Vec<MountQuotaView>,
}

/// One mount quota and its use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MountQuotaView {
    /// The normalized mount prefix.
    pub mount: String,
    /// Its quota.
    pub quota_bytes: u64,
    /// Bytes of its pages on disk.
    pub used_bytes: u64,
}

/// A keeping request the store refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeepError {
    /// Pinning would exceed the pin quota.
    #[error(
        "pin quota exceeded: pinning {prefix} needs {needed} more bytes, {pinned} of the \
         quota of {quota} bytes are pinned already (unpin something, free pages or raise --pin-quota)"
    )]
    PinQuota {
        /// The prefix.
        prefix: String,
        /// Bytes the pin would add.
        needed: u64,
        /// Bytes pinned now.
        pinned: u64,
        /// The quota.
        quota: u64,
    },
    /// A free would remove pinned pages.
    #[error(
        "{prefix}: {pages} pinned pages ({bytes} bytes) would be freed; unpin first or pass force=true"
    )]
    Pinned {
        /// The prefix.
        prefix: String,
        /// Pinned pages found.
        pages: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// The rules file could not be written.
    #[error("cannot save the rules: {0}")]
    Save(String),
}

/// The TTL class of `url` under `rules`: 1 + the position (in prefix
/// order) of the longest TTL prefix holding it; 0 when none does. Beyond
/// [`MAX_CLASSES`] rules, `MAX_CLASSES + 1`: the sweep then leaves the
/// page to the check on read, which looks the URL up.
pub(super) fn ttl_class(rules: &Rules, url: &str) -> u8 {
    rules
        .ttls
        .keys()
        .enumerate()
        .filter(|(_, p)| alluxiofs_core::path::is_under(url, p))
        .max_by_key(|(_, p)| p.len())
        .map_or(0, |(i, _)| (i + 1).min(MAX_CLASSES + 1) as u8)
}

/// Deciseconds of `d`.
fn ds(d: Duration) -> u64 {
    (d.as_millis() / 100) as u64
}

impl PageStore {
    /// Whether the page `h` of `url` is older than the TTL of `url` (a copy
    /// only in memory, of unknown age, counts as expired). With `remove`,
    /// an expired page is deleted (disk and memory).
    pub(super) fn expired(&self, h: &Hashes, url: &str, remove: bool) -> bool {
        if !self.has_ttls.load(Ordering::Relaxed) {
            return false;
        }
        let mut idx = lock(&self.index);
        if idx.rules.ttls.is_empty() {
            return false;
        }
        let Some(ttl) = idx.rules.ttl_of(url) else {
            return false;
        };
        let slot = idx
            .find(h.slot)
            .filter(|&i| idx.slot(i).version_hash == h.version_hash);
        let expired = match slot {
            Some(i) if idx.slot(i).pending() => false,
            Some(i) => u64::from(now_ds().saturating_sub(idx.slot(i).created)) > ds(ttl),
            None => true,
        };
        if expired && remove {
            if let Some(i) = slot {
                self.remove_slot_locked(&mut idx, i);
                self.metrics.evicted(EvictReason::Ttl, 1);
            }
            drop(idx);
            lock(&self.memory).remove(h.memory_key());
        }
        expired
    }

    /// Delete every page older than the TTL of its path; returns how many.
    pub fn sweep_expired(&self) -> usize {
        let mut idx = lock(&self.index);
        if idx.rules.ttls.is_empty() {
            return 0;
        }
        let ttls: Vec<u64> = idx
            .rules
            .ttls
            .values()
            .map(|s| s.saturating_mul(10))
            .collect();
        let now = now_ds();
        let victims: Vec<u32> = idx
            .all()
            .filter(|&i| {
                let s = idx.slot(i);
                let c = s.ttl_class() as usize;
                !s.pending()
                    && c > 0
                    && c <= ttls.len().min(MAX_CLASSES)
                    && u64::from(now.saturating_sub(s.created)) > ttls[c - 1]
            })
            .collect();
        for &i in &victims {
            self.remove_slot_locked(&mut idx, i);
        }
        drop(idx);
        self.write_log();
        self.metrics.evicted(EvictReason::Ttl, victims.len() as u64);
        victims.len()
    }

    /// Run [`PageStore::sweep_expired`] every `every` on a background
    /// thread, until the store is dropped.
    pub fn start_sweeper(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("alluxiofs-ttl-sweep".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(store) = weak.upgrade() else { break };
                let n = store.sweep_expired();
                if n > 0 {
                    tracing::debug!(pages = n, "expired pages removed");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the TTL sweeper (TTLs are still checked on read): {e}");
        }
    }

    fn save_rules(&self, rules: &Rules) -> std::result::Result<(), KeepError> {
        rules
            .save(&self.rules_path)
            .map_err(|e| KeepError::Save(format!("{}: {e}", self.rules_path.display())))
    }

    /// The slots of the pages of the URLs hashed `hashes`.
    fn slots_of(idx: &super::index::Index, hashes: &[u64]) -> Vec<u32> {
        hashes.iter().flat_map(|h| idx.pages_of(*h)).collect()
    }

    /// Pin `prefix` (normalized): its cached pages and those cached later
    /// are never evicted. Refused when the pages cached under it now would
    /// take the pinned bytes over the pin quota.
    pub fn pin(&self, prefix: &str) -> std::result::Result<KeepOutcome, KeepError> {
        let hashes = self.hashes_under(prefix, true);
        let mut idx = lock(&self.index);
        let ids = Self::slots_of(&idx, &hashes);
        let mut out = KeepOutcome::default();
        for &i in &ids {
            let s = idx.slot(i);
            if !s.pinned() {
                out.pages += 1;
                out.bytes += u64::from(s.len);
            }
        }
        if idx.pinned_bytes + out.bytes > self.pin_quota {
            return Err(KeepError::PinQuota {
                prefix: prefix.to_string(),
                needed: out.bytes,
                pinned: idx.pinned_bytes,
                quota: self.pin_quota,
            });
        }
        let mut rules = idx.rules.clone();
        out.new_rule = rules.pin(prefix);
        self.save_rules(&rules)?;
        idx.rules = rules;
        for i in ids {
            idx.set_pinned(i, true);
        }
        Ok(out)
    }

    /// Remove the pins at or under `prefix` (with `exact`, only the pin of
    /// `prefix` itself: how a client undoes a pin that another worker
    /// refused); pages no other pin covers become evictable. Returns the
    /// rules removed and the pages unpinned.
    pub fn unpin(
        &self,
        prefix: &str,
        exact: bool,
    ) -> std::result::Result<(usize, KeepOutcome), KeepError> {
        let mut urls: Vec<(u64, String)> = Vec::new();
        self.for_each_url(&mut |h, u| {
            if alluxiofs_core::path::is_under(u, prefix) {
                urls.push((h, u.to_string()));
            }
        });
        let mut idx = lock(&self.index);
        let mut rules = idx.rules.clone();
        let removed = if exact {
            rules.unpin_exact(prefix)
        } else {
            rules.unpin(prefix)
        };
        self.save_rules(&rules)?;
        idx.rules = rules;
        let mut out = KeepOutcome::default();
        for (h, url) in urls {
            if idx.rules.is_pinned(&url) {
                continue;
            }
            let ids: Vec<u32> = idx.pages_of(h).collect();
            for i in ids {
                let len = idx.set_pinned(i, false);
                if len > 0 {
                    out.pages += 1;
                    out.bytes += len;
                }
            }
        }
        Ok((removed, out))
    }

    /// Set (`Some`) or clear (`None`) the TTL of `prefix`.
    pub fn set_ttl(
        &self,
        prefix: &str,
        ttl: Option<Duration>,
    ) -> std::result::Result<(), KeepError> {
        {
            let mut idx = lock(&self.index);
            let mut rules = idx.rules.clone();
            rules.set_ttl(prefix, ttl);
            self.save_rules(&rules)?;
            self.has_ttls
                .store(!rules.ttls.is_empty(), Ordering::Relaxed);
            idx.rules = rules;
        }
        // The classes are positions among the rules: set them all anew.
        self.classify_all();
        Ok(())
    }

    /// Delete the pages of `prefix` (of every URL under it, `recursive`)
    /// now. Pinned pages are refused unless `force`.
    pub fn free(
        &self,
        prefix: &str,
        recursive: bool,
        force: bool,
    ) -> std::result::Result<KeepOutcome, KeepError> {
        let hashes = self.hashes_under(prefix, recursive);
        let mut idx = lock(&self.index);
        let ids = Self::slots_of(&idx, &hashes);
        if !force {
            let (mut pages, mut bytes) = (0, 0);
            for &i in &ids {
                let s = idx.slot(i);
                if s.pinned() {
                    pages += 1;
                    bytes += u64::from(s.len);
                }
            }
            if pages > 0 {
                return Err(KeepError::Pinned {
                    prefix: prefix.to_string(),
                    pages,
                    bytes,
                });
            }
        }
        let mut out = KeepOutcome::default();
        for i in ids {
            let s = self.remove_slot_locked(&mut idx, i);
            if !s.pending() {
                out.pages += 1;
                out.bytes += u64::from(s.len);
            }
        }
        drop(idx);
        self.write_log();
        self.metrics.evicted(EvictReason::Free, out.pages);
        Ok(out)
    }

    /// The rules and their accounting.
    pub fn rules(&self) -> RulesView {
        let idx = lock(&self.index);
        RulesView {
            pins: idx.rules.pins.clone(),
            ttls: idx.rules.ttls.clone(),
            pinned_bytes: idx.pinned_bytes,
            pin_quota_bytes: self.pin_quota,
            eviction_policy: self.options.policy.to_string(),
            mount_quotas: self
                .options
                .mount_quotas
                .iter()
                .zip(&idx.mount_used)
                .map(|((m, q), u)| MountQuotaView {
                    mount: m.clone(),
                    quota_bytes: *q,
                    used_bytes: *u,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::policy::PolicyKind;
    use crate::rules::PinQuota;
    use std::time::Duration;

    #[test]
    fn pinned_pages_survive_eviction_and_the_quota_holds() {
        for policy in [PolicyKind::Lru, PolicyKind::S3Fifo] {
            let dir = tempfile::tempdir().unwrap();
            let one = (header_len("s3://b/hot/f", "v") + 1000) as u64;
            let store = open_opts(
                &[(dir.path(), 10 * one)],
                0,
                StoreOptions {
                    policy,
                    pin_quota: PinQuota::Bytes(4 * one),
                    ..Default::default()
                },
            );
            let hot = |i| PageKey::new("s3://b/hot/f", "v", i);
            let cold = |i| PageKey::new("s3://b/col/f", "v", i);
            for i in 0..3 {
                store.put(&hot(i), &data(1, 1000)).unwrap();
            }
            assert_eq!(store.pin("s3://b/hot").unwrap().pages, 3);
            // Pinned later: cached and pinned while the quota allows.
            assert!(store.put(&hot(3), &data(1, 1000)).unwrap());
            assert!(
                !store.put(&hot(4), &data(1, 1000)).unwrap(),
                "over the pin quota"
            );
            assert_eq!(Metrics::get(&store.metrics.pin_refused), 1);
            for i in 0..50 {
                store.put(&cold(i), &data(2, 1000)).unwrap();
            }
            for i in 0..4 {
                assert!(
                    store.get(&hot(i)).is_some(),
                    "{policy}: pinned page {i} kept"
                );
            }
            assert_eq!(store.gauges().pinned_bytes, 4 * one);
            assert!(store.used_per_dir()[0] <= 10 * one);
            // A pin that would exceed the quota is refused and changes nothing.
            let err = store.pin("s3://b/col").unwrap_err();
            assert!(err.to_string().contains("pin quota exceeded"), "{err}");
            assert!(store.rules().pins == vec!["s3://b/hot".to_string()]);
            // Free refuses pinned pages unless forced.
            assert!(matches!(
                store.free("s3://b/hot/f", false, false),
                Err(KeepError::Pinned { pages: 4, .. })
            ));
            // Unpinned pages become evictable again.
            let (rules, out) = store.unpin("s3://b", false).unwrap();
            assert_eq!((rules, out.pages), (1, 4));
            for i in 50..70 {
                store.put(&cold(i), &data(2, 1000)).unwrap();
            }
            assert!(!store.contains(&hot(0)), "{policy}: unpinned pages go");
            assert_eq!(store.gauges().pinned_bytes, 0);
        }
    }

    #[test]
    fn rules_persist_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let k = PageKey::new("s3://b/p/x", "v", 0);
        {
            let store = open(&[(dir.path(), 1 << 20)], 0);
            store.put(&k, &data(1, 1000)).unwrap();
            store.pin("s3://b/p").unwrap();
            store
                .set_ttl("s3://b/t", Some(Duration::from_secs(30)))
                .unwrap();
        }
        let store = open(&[(dir.path(), 1 << 20)], 0);
        let rules = store.rules();
        assert_eq!(rules.pins, vec!["s3://b/p".to_string()]);
        assert_eq!(rules.ttls.get("s3://b/t"), Some(&30));
        assert_eq!(rules.pinned_bytes, store.gauges().used_bytes);
    }

    #[test]
    fn ttl_expires_on_read_and_by_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 4 << 20);
        let a = PageKey::new("s3://b/t/a", "v", 0);
        let b = PageKey::new("s3://b/t/b", "v", 0);
        let other = PageKey::new("s3://b/keep", "v", 0);
        store
            .set_ttl("s3://b/t", Some(Duration::from_secs(1)))
            .unwrap();
        for k in [&a, &b, &other] {
            store.put(k, &data(3, 500)).unwrap();
        }
        assert!(store.get_memory(&a).is_some(), "fresh: served");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(store.get_memory(&a).is_none(), "expired in memory too");
        assert!(store.get(&a).is_none(), "expired: a miss");
        assert_eq!(store.sweep_expired(), 1, "b goes in the sweep");
        assert!(!store.contains(&b));
        assert!(store.get(&other).is_some(), "no TTL: kept");
        assert_eq!(store.metrics.evictions(EvictReason::Ttl), 2);
        store.set_ttl("s3://b/t", None).unwrap();
        store.put(&a, &data(3, 500)).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(store.get(&a).is_some(), "TTL cleared");
    }

    #[test]
    fn free_removes_now_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 1 << 20);
        for i in 0..3 {
            store
                .put(&PageKey::new("s3://b/d/x", "v", i), &data(1, 100))
                .unwrap();
            store
                .put(&PageKey::new("s3://b/d/y/z", "v", i), &data(1, 100))
                .unwrap();
        }
        assert_eq!(store.free("s3://b/d/x", false, false).unwrap().pages, 3);
        assert!(store.get(&PageKey::new("s3://b/d/x", "v", 0)).is_none());
        assert_eq!(store.free("s3://b/d", false, false).unwrap().pages, 0);
        let out = store.free("s3://b/d", true, false).unwrap();
        assert_eq!(out.pages, 3);
        assert_eq!(store.gauges().used_bytes, 0);
        assert_eq!(store.gauges().memory_pages, 0);
        assert_eq!(store.metrics.evictions(EvictReason::Free), 6);
        assert_eq!(disk_bytes(dir.path()), 0);
    }
}
