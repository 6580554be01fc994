//! The page store: pages on local disks, hot pages in memory.
//!
//! Overview (each part has its own file and design note):
//!
//! - `key`: a page is named by (normalized URL, object version, page
//!   index) and the page size, so a changed object never finds old pages;
//!   its id (xxh3-128 of that) is computed once when the key is built
//!   ([`PageStore::key`]) and names its file.
//! - [`format`]: each file is self-describing (a header with the key, the
//!   data length and an xxh3-64 checksum, then the data); every read
//!   verifies it, and a mismatch is logged, counted, the file deleted and
//!   the read treated as a miss. Unverified bytes are never served.
//! - `files`: where page files live, atomic writes (temporary file and
//!   rename, so no reader sees half a page), and the restart scan that
//!   rebuilds the index from headers.
//! - `index`: the in-memory index and its accounting; while a page is
//!   written its entry is *pending* (invisible to readers, not evictable)
//!   and its bytes are already reserved.
//! - `evict`: each directory's used bytes never exceed its capacity;
//!   space is reserved before a write by evicting in the order of the
//!   directory's [`crate::policy::Policy`] (LRU or S3-FIFO); mount quotas.
//! - `keep`: the keeping rules ([`crate::rules`]) applied: pins, TTLs,
//!   frees. Every removal is counted by reason (`alluxiofs_evictions_total`).
//! - `memory`: a bounded LRU of verified `Bytes` for hot pages.
//!
//! This file holds [`PageStore`] and its lookups and writes, which tie the
//! parts together. Lock order: the index lock before the memory lock.
//!
//! All methods are blocking (file I/O) except [`PageStore::get_memory`];
//! async callers run them with `tokio::task::spawn_blocking`.

mod evict;
mod files;
mod format;
mod index;
mod keep;
mod key;
mod memory;

pub use keep::{KeepError, KeepOutcome, MountQuotaView, RulesView};
pub use key::PageKey;

use crate::error::{Result, WorkerError};
use crate::metrics::{DirGauge, EvictReason, Metrics, StoreGauges};
use crate::policy::PolicyKind;
use crate::rules::{PinQuota, Rules, RULES_FILE};
use bytes::Bytes;
use files::{open_and_touch, read_and_touch, write_page};
use format::{encode_header, verify};
use index::{Entry, Index};
use key::PageId;
use memory::MemoryTier;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// One cache directory and its capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    /// The directory (pages go under `<path>/pages`).
    pub path: PathBuf,
    /// Bytes it may use.
    pub capacity: u64,
}

/// Options of the page store beyond its directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// The eviction policy of every directory.
    pub policy: PolicyKind,
    /// Bound on pinned bytes.
    pub pin_quota: PinQuota,
    /// Capacity quotas of mounts: (normalized URL prefix, bytes).
    pub mount_quotas: Vec<(String, u64)>,
}

/// Pages on disk and in memory.
#[derive(Debug)]
pub struct PageStore {
    page_size: u64,
    dirs: Vec<DirSpec>,
    index: Mutex<Index>,
    memory: Mutex<MemoryTier>,
    metrics: Arc<Metrics>,
    options: StoreOptions,
    pin_quota: u64,
    rules_path: PathBuf,
    /// Whether any TTL rule exists: reads skip the TTL check (and its
    /// lock) when none does.
    has_ttls: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent-enough state (every
    // mutation is a few field updates); keep serving rather than cascade.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PageStore {
    /// Open (creating when needed) the cache directories and scan them for
    /// pages left by an earlier run, with default [`StoreOptions`].
    pub fn open(
        dirs: Vec<DirSpec>,
        memory_capacity: u64,
        page_size: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        Self::open_with(
            dirs,
            memory_capacity,
            page_size,
            metrics,
            StoreOptions::default(),
        )
    }

    /// [`PageStore::open`] with an eviction policy, quotas, and the rules
    /// read from `<first dir>/rules.json`.
    pub fn open_with(
        dirs: Vec<DirSpec>,
        memory_capacity: u64,
        page_size: u64,
        metrics: Arc<Metrics>,
        options: StoreOptions,
    ) -> Result<Self> {
        if dirs.is_empty() {
            return Err(WorkerError::Config("no cache directory".into()));
        }
        std::fs::create_dir_all(&dirs[0].path).map_err(|e| {
            WorkerError::io(
                format!("cannot create cache directory {}", dirs[0].path.display()),
                e,
            )
        })?;
        let rules_path = dirs[0].path.join(RULES_FILE);
        let rules = Rules::load(&rules_path).map_err(WorkerError::Config)?;
        let total: u64 = dirs.iter().map(|d| d.capacity).sum();
        let has_ttls = AtomicBool::new(!rules.ttls.is_empty());
        let store = PageStore {
            page_size,
            index: Mutex::new(Index::new(
                dirs.iter()
                    .map(|d| options.policy.build(d.capacity))
                    .collect(),
                options.mount_quotas.len(),
                rules,
            )),
            memory: Mutex::new(MemoryTier::new(memory_capacity)),
            dirs,
            metrics,
            pin_quota: options.pin_quota.bytes(total),
            options,
            rules_path,
            has_ttls,
        };
        for (i, d) in store.dirs.iter().enumerate() {
            let pages = d.path.join("pages");
            std::fs::create_dir_all(&pages).map_err(|e| {
                WorkerError::io(
                    format!("cannot create cache directory {}", pages.display()),
                    e,
                )
            })?;
            store.scan_dir(i)?;
        }
        Ok(store)
    }

    fn memory_enabled(&self) -> bool {
        lock(&self.memory).capacity > 0
    }

    /// The page size the store was opened with.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The key of page `index` of (`url`, `version`), carrying its id, so
    /// that every lookup with it skips hashing. Prefer it to
    /// [`PageKey::new`].
    pub fn key(&self, url: impl Into<String>, version: impl Into<String>, index: u64) -> PageKey {
        PageKey::with_id(self.page_size, url, version, index)
    }

    /// Whether a verified-on-write page for `key` is indexed (it may still
    /// fail verification when read).
    pub fn contains(&self, key: &PageKey) -> bool {
        let id = key.id(self.page_size);
        if lock(&self.memory).map.contains_key(&id) {
            return true;
        }
        lock(&self.index)
            .entries
            .get(&id)
            .is_some_and(|e| !e.pending)
    }

    /// The page for `key` if the memory tier holds it (no disk I/O, so
    /// async code may call it directly).
    pub fn get_memory(&self, key: &PageKey) -> Option<Bytes> {
        let id = key.id(self.page_size);
        if self.expired(id, key.url(), false) {
            // `get` removes it (file I/O).
            return None;
        }
        let in_memory = lock(&self.memory).get(id);
        if in_memory.is_some() {
            Metrics::add(&self.metrics.memory_hits, 1);
            lock(&self.index).touch(id);
        }
        in_memory
    }

    /// The page for `key`, verified; `None` on a miss (also when the file
    /// was missing or corrupt, which deletes it).
    pub fn get(&self, key: &PageKey) -> Option<Bytes> {
        let id = key.id(self.page_size);
        if self.expired(id, key.url(), true) {
            return None;
        }
        // Bind first: a guard in the `if let` head would live through the
        // body, taking the memory lock before the index lock (eviction takes
        // them the other way round).
        let in_memory = lock(&self.memory).get(id);
        if let Some(b) = in_memory {
            Metrics::add(&self.metrics.memory_hits, 1);
            lock(&self.index).touch(id);
            return Some(b);
        }
        let dir = self.touch_on_disk(id)?;
        let path = self.page_path(dir, id);
        let raw = match read_and_touch(&path) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(file = %path.display(), "cached page unreadable: {e}");
                self.metrics.evicted(EvictReason::Corrupt, 1);
                self.drop_entry(id, dir, &path);
                return None;
            }
        };
        match verify(self.page_size, key, raw) {
            Ok(data) => {
                lock(&self.memory).insert(id, data.clone());
                Some(data)
            }
            Err(reason) => {
                tracing::warn!(
                    file = %path.display(),
                    url = %key.url(),
                    page = key.index(),
                    "corrupt cached page deleted: {reason}"
                );
                Metrics::add(&self.metrics.corrupt_pages, 1);
                self.metrics.evicted(EvictReason::Corrupt, 1);
                self.drop_entry(id, dir, &path);
                None
            }
        }
    }

    /// The page file of `key`, opened read-only, for a same-node client
    /// that reads and verifies it itself (`crate::local`); `None` when the
    /// page is not on disk (a miss, only in the memory tier, being written,
    /// expired). Counts as a read for eviction, like [`PageStore::get`].
    /// The file is never modified after it was renamed into place, so the
    /// descriptor keeps reading this page even if it is evicted meanwhile.
    pub fn open_page(&self, key: &PageKey) -> Option<std::fs::File> {
        let id = key.id(self.page_size);
        if self.expired(id, key.url(), true) {
            return None;
        }
        let dir = self.touch_on_disk(id)?;
        let path = self.page_path(dir, id);
        match open_and_touch(&path) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(file = %path.display(), "cached page unreadable: {e}");
                self.metrics.evicted(EvictReason::Corrupt, 1);
                self.drop_entry(id, dir, &path);
                None
            }
        }
    }

    /// A reader found the page file of `key` corrupt: delete it and its
    /// memory copy, counted as corrupt, so the next read fetches the page
    /// anew. Returns whether there was such a page.
    pub fn discard_corrupt(&self, key: &PageKey) -> bool {
        let id = key.id(self.page_size);
        let dir = match lock(&self.index).entries.get(&id) {
            Some(e) if !e.pending => e.dir,
            _ => return false,
        };
        lock(&self.memory).remove(id);
        let path = self.page_path(dir, id);
        tracing::warn!(file = %path.display(), url = %key.url(), page = key.index(), "corrupt cached page deleted (found by a same-node reader)");
        Metrics::add(&self.metrics.corrupt_pages, 1);
        self.metrics.evicted(EvictReason::Corrupt, 1);
        self.drop_entry(id, dir, &path);
        true
    }

    /// The directory of the settled disk page `id`, touched for eviction
    /// as a read; `None` when it is not indexed or still being written.
    fn touch_on_disk(&self, id: PageId) -> Option<usize> {
        let mut idx = lock(&self.index);
        let e = idx.entries.get(&id)?;
        if e.pending {
            return None;
        }
        let dir = e.dir;
        idx.touch(id);
        Some(dir)
    }

    fn drop_entry(&self, id: PageId, dir: usize, path: &Path) {
        let mut idx = lock(&self.index);
        if idx
            .entries
            .get(&id)
            .is_some_and(|e| e.dir == dir && !e.pending)
        {
            idx.remove(id);
            let _ = std::fs::remove_file(path);
        }
    }

    /// Store a page. Returns `Ok(false)` when it was not stored (already
    /// there, larger than any directory, everything else pending or pinned,
    /// over the pin quota or its mount's quota). The page also enters the
    /// memory tier, unless a quota refused it.
    pub fn put(&self, key: &PageKey, data: &Bytes) -> Result<bool> {
        let id = key.id(self.page_size);
        let header = encode_header(self.page_size, key, data);
        let file_len = (header.len() + data.len()) as u64;
        let remember = || {
            if self.memory_enabled() {
                // A copy: `data` is often a slice of a whole multi-page UFS
                // read, which a cached slice would keep alive in full.
                lock(&self.memory).insert(id, Bytes::copy_from_slice(data));
            }
        };
        let dir = {
            let mut idx = lock(&self.index);
            if idx.entries.contains_key(&id) {
                drop(idx);
                remember();
                return Ok(false);
            }
            let pinned = idx.rules.is_pinned(key.url());
            if pinned && idx.pinned_bytes + file_len > self.pin_quota {
                Metrics::add(&self.metrics.pin_refused, 1);
                tracing::debug!(url = %key.url(), page = key.index(), "pin quota full: page not cached");
                return Ok(false);
            }
            let mount = self.mount_of(key.url());
            if let Some(m) = mount {
                if !self.evict_mount_locked(&mut idx, m, file_len) {
                    return Ok(false);
                }
            }
            let dir = self.roomiest_dir(&idx);
            if file_len > self.dirs[dir].capacity {
                drop(idx);
                remember();
                return Ok(false);
            }
            self.evict_locked(&mut idx, dir, file_len);
            if idx.used[dir] + file_len > self.dirs[dir].capacity {
                // Everything left is being written right now, or pinned.
                drop(idx);
                remember();
                return Ok(false);
            }
            idx.insert(
                id,
                Entry {
                    dir,
                    file_len,
                    url: key.url().into(),
                    version: key.version().into(),
                    created: SystemTime::now(),
                    pending: true,
                    pinned,
                    mount,
                },
            );
            dir
        };
        remember();
        let path = self.page_path(dir, id);
        let written = write_page(&path, &header, data);
        let mut idx = lock(&self.index);
        match written {
            Ok(()) => {
                if !idx.settle(id) {
                    // Removed (invalidated) while being written.
                    let _ = std::fs::remove_file(&path);
                }
                Ok(true)
            }
            Err(e) => {
                idx.remove(id);
                Metrics::add(&self.metrics.page_write_errors, 1);
                Err(WorkerError::io(
                    format!("cannot write page {}", path.display()),
                    e,
                ))
            }
        }
    }

    /// Delete the pages of `url`: all of them, or only those whose version
    /// is not `keep_version`. Returns how many were deleted. Counted as
    /// evictions of reason `stale` (with a version kept) or `invalidate`.
    pub fn remove_url(&self, url: &str, keep_version: Option<&str>) -> usize {
        let reason = if keep_version.is_some() {
            EvictReason::Stale
        } else {
            EvictReason::Invalidate
        };
        let n = self.remove_url_uncounted(url, keep_version);
        self.metrics.evicted(reason, n as u64);
        n
    }

    fn remove_url_uncounted(&self, url: &str, keep_version: Option<&str>) -> usize {
        let mut idx = lock(&self.index);
        let Some(ids) = idx.by_url.get(url).cloned() else {
            return 0;
        };
        let mut removed = 0;
        for id in ids {
            let Some(e) = idx.entries.get(&id) else {
                continue;
            };
            if keep_version.is_some_and(|v| &*e.version == v) {
                continue;
            }
            let dir = e.dir;
            let pending = e.pending;
            idx.remove(id);
            lock(&self.memory).remove(id);
            if !pending {
                let _ = std::fs::remove_file(self.page_path(dir, id));
            }
            removed += 1;
        }
        removed
    }

    /// Delete the pages of every URL at or under `prefix` (normalized).
    pub fn remove_under(&self, prefix: &str) -> usize {
        let urls: Vec<Arc<str>> = lock(&self.index)
            .by_url
            .keys()
            .filter(|u| alluxiofs_core::path::is_under(u, prefix))
            .cloned()
            .collect();
        urls.iter().map(|u| self.remove_url(u, None)).sum()
    }

    /// How many pages of (`url`, `version`) are cached.
    pub fn cached_pages(&self, url: &str, version: &str) -> u64 {
        let idx = lock(&self.index);
        idx.by_url.get(url).map_or(0, |set| {
            set.iter()
                .filter(|h| {
                    idx.entries
                        .get(h)
                        .is_some_and(|e| !e.pending && &*e.version == version)
                })
                .count() as u64
        })
    }

    /// Every URL with pages on disk (to rebuild the `path_id` map).
    pub fn urls(&self) -> Vec<String> {
        lock(&self.index)
            .by_url
            .keys()
            .map(|u| u.to_string())
            .collect()
    }

    /// Used bytes per directory.
    pub fn used_per_dir(&self) -> Vec<u64> {
        lock(&self.index).used.clone()
    }

    /// The store gauges for `/metrics`.
    pub fn gauges(&self) -> StoreGauges {
        let (used, pages, pinned, dirs) = {
            let idx = lock(&self.index);
            let dirs = self
                .dirs
                .iter()
                .zip(&idx.used)
                .map(|(d, u)| DirGauge {
                    path: d.path.display().to_string(),
                    used_bytes: *u,
                    capacity_bytes: d.capacity,
                })
                .collect();
            (
                idx.used.iter().sum(),
                idx.entries.len() as u64,
                idx.pinned_bytes,
                dirs,
            )
        };
        let mem = lock(&self.memory);
        StoreGauges {
            used_bytes: used,
            capacity_bytes: self.dirs.iter().map(|d| d.capacity).sum(),
            pages,
            memory_used_bytes: mem.used,
            memory_capacity_bytes: mem.capacity,
            memory_pages: mem.map.len() as u64,
            pinned_bytes: pinned,
            pin_quota_bytes: self.pin_quota,
            dirs,
        }
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! Helpers shared by the store's tests.
    pub(super) use super::format::header_len;
    use super::*;

    pub(crate) const PS: u64 = 4096;

    pub(crate) fn open(dirs: &[(&Path, u64)], memory: u64) -> PageStore {
        open_opts(dirs, memory, StoreOptions::default())
    }

    pub(crate) fn open_opts(
        dirs: &[(&Path, u64)],
        memory: u64,
        options: StoreOptions,
    ) -> PageStore {
        let specs = dirs
            .iter()
            .map(|(p, c)| DirSpec {
                path: p.to_path_buf(),
                capacity: *c,
            })
            .collect();
        PageStore::open_with(specs, memory, PS, Arc::new(Metrics::new()), options).unwrap()
    }

    pub(crate) fn lru() -> StoreOptions {
        StoreOptions {
            policy: PolicyKind::Lru,
            ..Default::default()
        }
    }

    pub(crate) fn data(seed: u8, len: usize) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    pub(crate) fn disk_bytes(root: &Path) -> u64 {
        let mut total = 0;
        for sub in std::fs::read_dir(root.join("pages")).unwrap().flatten() {
            for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
                total += f.metadata().unwrap().len();
            }
        }
        total
    }

    pub(crate) fn page_files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(root.join("pages")).unwrap().flatten() {
            for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::format::FIXED_HEADER;
    use super::testing::*;
    use super::*;

    #[test]
    fn put_get_roundtrip_and_version_isolation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 0);
        let k = PageKey::new("s3://b/x", "\"v1\"", 3);
        let d = data(1, 4096);
        assert!(store.put(&k, &d).unwrap());
        assert_eq!(store.get(&k).unwrap(), d);
        assert!(store.get(&PageKey::new("s3://b/x", "\"v2\"", 3)).is_none());
        assert!(store.get(&PageKey::new("s3://b/x", "\"v1\"", 4)).is_none());
        assert_eq!(store.cached_pages("s3://b/x", "\"v1\""), 1);
        assert_eq!(store.remove_url("s3://b/x", Some("\"v1\"")), 0);
        assert_eq!(store.remove_url("s3://b/x", Some("\"v2\"")), 1);
        assert!(store.get(&k).is_none());
        assert_eq!(disk_bytes(dir.path()), 0);
    }

    #[test]
    fn corrupt_pages_are_never_served_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(7, 3000);
        // Flip a byte in the data, in the header's index, length (high byte) and
        // checksum fields, and in the URL.
        for flip_at in [FIXED_HEADER + 8 + 2 + 100, 20, 35, 40, FIXED_HEADER + 3] {
            let metrics = Arc::new(Metrics::new());
            let store = PageStore::open(
                vec![DirSpec {
                    path: dir.path().to_path_buf(),
                    capacity: 1 << 20,
                }],
                0,
                PS,
                metrics.clone(),
            )
            .unwrap();
            let k = PageKey::new("file:///tmp/abcdefgh", "1-2", 0);
            assert!(store.put(&k, &d).unwrap());
            let files = page_files(dir.path());
            assert_eq!(files.len(), 1);
            let mut raw = std::fs::read(&files[0]).unwrap();
            raw[flip_at] ^= 0x40;
            std::fs::write(&files[0], &raw).unwrap();
            assert!(
                store.get(&k).is_none(),
                "flip at {flip_at} must not be served"
            );
            assert!(!files[0].exists(), "corrupt page file must be deleted");
            assert_eq!(Metrics::get(&metrics.corrupt_pages), 1);
            assert_eq!(store.gauges().used_bytes, 0);
        }
    }
}
