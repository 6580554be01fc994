//! The page store: pages on local disks, hot pages in memory, an index of
//! a few dozen bytes per page that survives restarts.
//!
//! Overview (each part has its own file and design note):
//!
//! - `key`: a page is named by (normalized URL, object version, page
//!   index) and the page size; the index keys it by (URL hash, page index)
//!   and keeps a version hash, and every packed record carries the 128-bit
//!   page id, checked on read.
//! - `segments`: pages of up to 256 KiB are *packed* as records into
//!   segment files of 8 MiB (no inode or filesystem block per page); dead
//!   records are reclaimed by compaction. Larger pages get a file each
//!   (`files`), in the self-describing page-file format ([`format`]).
//!   Every read verifies the bytes (page id or URL and version, length,
//!   xxh3-64 checksum); a mismatch is logged, counted, the page dropped and
//!   the read treated as a miss. Unverified bytes are never served.
//! - `index`: the in-memory index (44-byte slots, a table of slot numbers,
//!   eviction links inside the slots) and its accounting; while a page is
//!   written it is *pending* (invisible to readers, not evictable) and its
//!   bytes are already reserved.
//! - `journal`: the index persisted as a journal of 40-byte records plus a
//!   file of URLs, written as it changes and synced every persistence
//!   interval; a restart replays it and never reads a page.
//! - `evict`: each directory's used bytes (whole segment files and page
//!   files) never exceed its capacity; space is reserved before a write by
//!   compacting or evicting in the order of the directory's
//!   [`crate::policy::Policy`] (LRU or S3-FIFO); mount quotas.
//! - `keep`: the keeping rules ([`crate::rules`]) applied: pins, TTLs,
//!   frees. Every removal is counted by reason (`alluxiofs_evictions_total`).
//! - `memory`: a bounded LRU of verified `Bytes` for hot pages.
//!
//! This file holds [`PageStore`] and its lookups and writes, which tie the
//! parts together. Lock order: the flush lock (`flushing`), the journal
//! files (`persist`), the index, then the memory tier. No lock is held while page bytes are read
//! or written, except by compaction (one segment at a time).
//!
//! All methods are blocking (file I/O) except [`PageStore::get_memory`];
//! async callers run them with `tokio::task::spawn_blocking`.

mod evict;
mod files;
mod format;
mod index;
mod journal;
mod keep;
mod key;
mod memory;
mod persist;
mod segments;

pub use keep::{KeepError, KeepOutcome, MountQuotaView, RulesView};
pub use key::PageKey;

use crate::error::{Result, WorkerError};
use crate::metrics::{DirGauge, EvictReason, Metrics, StoreGauges};
use crate::policy::PolicyKind;
use crate::rules::{PinQuota, Rules, RULES_FILE};
use alluxiofs_core::info::human_size;
use alluxiofs_core::page_file::{encode_record, record_len, verify_record};
use bytes::Bytes;
use files::{open_page_file, read_page_file, write_page};
use format::{encode_header, verify};
use index::{DirState, Index, NewPage, Slot, LARGE, MAX_DIRS};
use key::Hashes;
use memory::MemoryTier;
use segments::{Segments, SEGMENT_SIZE};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One cache directory and its capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    /// The directory.
    pub path: PathBuf,
    /// Bytes its pages may use.
    pub capacity: u64,
}

/// Options of the page store beyond its directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The eviction policy of every directory.
    pub policy: PolicyKind,
    /// Bound on pinned bytes.
    pub pin_quota: PinQuota,
    /// Capacity quotas of mounts: (normalized URL prefix, bytes).
    pub mount_quotas: Vec<(String, u64)>,
    /// How often the index journal is written (what a crash may lose).
    pub persist_interval: Duration,
    /// Bytes of a segment file before it is sealed.
    pub segment_size: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            policy: PolicyKind::default(),
            pin_quota: PinQuota::default(),
            mount_quotas: Vec::new(),
            persist_interval: Duration::from_secs(1),
            segment_size: SEGMENT_SIZE,
        }
    }
}

/// A page on disk opened for a same-node reader: the bytes from `offset`,
/// `len` long, are a packed record (`packed`) or a whole page file.
#[derive(Debug)]
pub struct LocalPage {
    /// Read-only descriptor.
    pub file: std::fs::File,
    /// Where the record starts (0 for a page file).
    pub offset: u64,
    /// Bytes of the record or file.
    pub len: u64,
    /// A packed record (else a page file).
    pub packed: bool,
}

/// Pages on disk and in memory.
#[derive(Debug)]
pub struct PageStore {
    page_size: u64,
    dirs: Vec<DirSpec>,
    index: Mutex<Index>,
    memory: Mutex<MemoryTier>,
    /// Held for a whole flush (taken before `persist`).
    flushing: Mutex<()>,
    /// The journal files, one per directory; held while they are written
    /// (taken before the index lock).
    persist: Mutex<Vec<journal::Files>>,
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

/// Where a page's bytes are, found under the index lock.
enum Place {
    Packed {
        slot: u32,
        seg: u32,
        off: u32,
        len: u32,
        file: Arc<std::fs::File>,
    },
    Large {
        slot: u32,
        dir: usize,
        /// The write that made the file (the slot's offset field).
        write: u32,
    },
}

impl PageStore {
    /// Open (creating when needed) the cache directories and load the
    /// index left by an earlier run, with default [`StoreOptions`].
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
        if dirs.len() > MAX_DIRS {
            return Err(WorkerError::Config(format!(
                "{} cache directories: at most {MAX_DIRS} are supported",
                dirs.len()
            )));
        }
        for d in &dirs {
            std::fs::create_dir_all(&d.path).map_err(|e| {
                WorkerError::io(
                    format!("cannot create cache directory {}", d.path.display()),
                    e,
                )
            })?;
        }
        let rules_path = dirs[0].path.join(RULES_FILE);
        let rules = Rules::load(&rules_path).map_err(WorkerError::Config)?;
        let total: u64 = dirs.iter().map(|d| d.capacity).sum();
        let has_ttls = AtomicBool::new(!rules.ttls.is_empty());
        let open_files = segments::open_files_per_dir(dirs.len());
        let states = dirs
            .iter()
            .map(|d| {
                let (size, packs) = segments::segment_size_for(d.capacity, options.segment_size);
                DirState::new(
                    options.policy.build(d.capacity),
                    Segments::new(d.path.join("segments"), size, packs, open_files),
                )
            })
            .collect();
        let store = PageStore {
            page_size,
            index: Mutex::new(Index::new(states, options.mount_quotas.len(), rules)),
            memory: Mutex::new(MemoryTier::new(memory_capacity)),
            flushing: Mutex::new(()),
            persist: Mutex::new(Vec::new()),
            dirs,
            metrics,
            pin_quota: options.pin_quota.bytes(total),
            options,
            rules_path,
            has_ttls,
        };
        let started = std::time::Instant::now();
        let mut files = Vec::new();
        for i in 0..store.dirs.len() {
            files.push(store.load_dir(i)?);
        }
        *lock(&store.persist) = files;
        lock(&store.index).shrink_to_fit();
        store.classify_all();
        {
            let mut idx = lock(&store.index);
            for dir in 0..store.dirs.len() {
                store.evict_to_capacity(&mut idx, dir);
            }
        }
        store.flush();
        store.checkpoint_if_due(true);
        tracing::info!(
            pages = lock(&store.index).len(),
            ms = started.elapsed().as_millis() as u64,
            "page index loaded"
        );
        Ok(store)
    }

    fn memory_enabled(&self) -> bool {
        lock(&self.memory).capacity > 0
    }

    /// The page size the store was opened with.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The key of page `index` of (`url`, `version`), carrying its hashes,
    /// so that every lookup with it skips hashing. Prefer it to
    /// [`PageKey::new`].
    pub fn key(&self, url: impl Into<String>, version: impl Into<String>, index: u64) -> PageKey {
        PageKey::with_hashes(self.page_size, url, version, index)
    }

    /// The settled slot of `h`'s page (its version), if indexed.
    fn settled(idx: &Index, h: &Hashes) -> Option<u32> {
        let i = idx.find(h.slot)?;
        let s = idx.slot(i);
        (s.version_hash == h.version_hash && !s.pending()).then_some(i)
    }

    /// Whether `h`'s page (its version) is indexed, settled or pending.
    fn has_version(idx: &Index, h: &Hashes) -> bool {
        idx.find(h.slot)
            .is_some_and(|i| idx.slot(i).version_hash == h.version_hash)
    }

    /// Whether a verified-on-write page for `key` is indexed (it may still
    /// fail verification when read).
    pub fn contains(&self, key: &PageKey) -> bool {
        let h = key.hashes(self.page_size);
        if lock(&self.memory).map.contains_key(&h.memory_key()) {
            return true;
        }
        Self::settled(&lock(&self.index), &h).is_some()
    }

    /// Whether any page of `url` (any version) is on disk.
    pub fn has_pages(&self, url: &str) -> bool {
        lock(&self.index).has_url(alluxiofs_core::page_file::url_hash(url))
    }

    /// The page for `key` if the memory tier holds it (no disk I/O, so
    /// async code may call it directly).
    pub fn get_memory(&self, key: &PageKey) -> Option<Bytes> {
        let h = key.hashes(self.page_size);
        if self.expired(&h, key.url(), false) {
            // `get` removes it (file I/O).
            return None;
        }
        let in_memory = lock(&self.memory).get(h.memory_key());
        if in_memory.is_some() {
            Metrics::add(&self.metrics.memory_hits, 1);
            let mut idx = lock(&self.index);
            if let Some(i) = Self::settled(&idx, &h) {
                idx.touch(i);
            }
        }
        in_memory
    }

    /// The place of the settled page `h`, touched for eviction as a read.
    fn place(&self, h: &Hashes) -> Option<Place> {
        let mut idx = lock(&self.index);
        let i = Self::settled(&idx, h)?;
        idx.touch(i);
        let s = *idx.slot(i);
        if s.is_large() {
            return Some(Place::Large {
                slot: i,
                dir: s.dir(),
                write: s.off,
            });
        }
        match idx.dirs[s.dir()].segments.file(s.seg) {
            Ok(file) => Some(Place::Packed {
                slot: i,
                seg: s.seg,
                off: s.off,
                len: s.len,
                file,
            }),
            Err(e) => {
                tracing::warn!(segment = s.seg, "segment of a cached page unreadable: {e}");
                self.metrics.evicted(EvictReason::Corrupt, 1);
                self.remove_slot_locked(&mut idx, i);
                None
            }
        }
    }

    /// The page for `key`, verified; `None` on a miss (also when its bytes
    /// were missing or corrupt, which drops it).
    pub fn get(&self, key: &PageKey) -> Option<Bytes> {
        let h = key.hashes(self.page_size);
        if !key.indexable() || self.expired(&h, key.url(), true) {
            return None;
        }
        // Bind first: a guard in the `if let` head would live through the
        // body, taking the memory lock before the index lock.
        let in_memory = lock(&self.memory).get(h.memory_key());
        if let Some(b) = in_memory {
            Metrics::add(&self.metrics.memory_hits, 1);
            let mut idx = lock(&self.index);
            if let Some(i) = Self::settled(&idx, &h) {
                idx.touch(i);
            }
            return Some(b);
        }
        let (slot, seg_off, what, checked) = match self.place(&h)? {
            Place::Packed {
                slot,
                seg,
                off,
                len,
                file,
            } => {
                let checked = segments::read_at(&file, off, len)
                    .map_err(|e| e.to_string())
                    .and_then(|raw| {
                        verify_record(
                            self.page_size,
                            key.url(),
                            key.version(),
                            key.index(),
                            Bytes::from(raw),
                        )
                    });
                (slot, (seg, off), format!("segment {seg} at {off}"), checked)
            }
            Place::Large { slot, dir, write } => {
                let path = self.large_path(dir, h.slot, h.version_hash);
                let checked = match read_page_file(&path) {
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && !self.still(slot, &h, (LARGE, write)) =>
                    {
                        // Removed (its file deleted) since it was found:
                        // a miss, not a corrupt page.
                        return None;
                    }
                    r => r
                        .map_err(|e| e.to_string())
                        .and_then(|raw| verify(self.page_size, key, raw)),
                };
                (slot, (LARGE, write), path.display().to_string(), checked)
            }
        };
        match checked {
            Ok(data) => {
                lock(&self.memory).insert(h.memory_key(), data.clone());
                Some(data)
            }
            Err(reason) => {
                tracing::warn!(
                    place = %what,
                    url = %key.url(),
                    page = key.index(),
                    "corrupt cached page dropped: {reason}"
                );
                Metrics::add(&self.metrics.corrupt_pages, 1);
                self.metrics.evicted(EvictReason::Corrupt, 1);
                self.drop_if_still(slot, &h, seg_off);
                None
            }
        }
    }

    /// The page of `key` on disk, opened read-only, for a same-node client
    /// that reads and verifies it itself (`crate::local`); `None` when the
    /// page is not on disk (a miss, only in the memory tier, being written,
    /// expired). Counts as a read for eviction, like [`PageStore::get`].
    /// Page files and records are never modified once written, so the
    /// descriptor keeps reading this page even if it is evicted meanwhile.
    pub fn open_page(&self, key: &PageKey) -> Option<LocalPage> {
        let h = key.hashes(self.page_size);
        if !key.indexable() || self.expired(&h, key.url(), true) {
            return None;
        }
        match self.place(&h)? {
            Place::Packed { off, len, file, .. } => Some(LocalPage {
                file: file.try_clone().ok()?,
                offset: u64::from(off),
                len: u64::from(len),
                packed: true,
            }),
            Place::Large { slot, dir, write } => {
                let path = self.large_path(dir, h.slot, h.version_hash);
                match open_page_file(&path) {
                    Ok(file) => {
                        let len = file.metadata().map(|m| m.len()).ok()?;
                        Some(LocalPage {
                            file,
                            offset: 0,
                            len,
                            packed: false,
                        })
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && !self.still(slot, &h, (LARGE, write)) =>
                    {
                        None // removed since it was found
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), "cached page unreadable: {e}");
                        self.metrics.evicted(EvictReason::Corrupt, 1);
                        self.drop_if_still(slot, &h, (LARGE, write));
                        None
                    }
                }
            }
        }
    }

    /// A reader found the page of `key` corrupt: drop it and its memory
    /// copy, counted as corrupt, so the next read fetches the page anew.
    /// Returns whether there was such a page.
    pub fn discard_corrupt(&self, key: &PageKey) -> bool {
        let h = key.hashes(self.page_size);
        lock(&self.memory).remove(h.memory_key());
        let mut idx = lock(&self.index);
        let Some(i) = Self::settled(&idx, &h) else {
            return false;
        };
        tracing::warn!(url = %key.url(), page = key.index(), "corrupt cached page dropped (found by a same-node reader)");
        Metrics::add(&self.metrics.corrupt_pages, 1);
        self.metrics.evicted(EvictReason::Corrupt, 1);
        self.remove_slot_locked(&mut idx, i);
        true
    }

    /// Whether slot `i` still holds the settled page `h` written at
    /// `place` (segment and offset, or [`LARGE`] and the write number):
    /// not removed, nor removed and written anew, since it was looked up.
    fn still(&self, i: u32, h: &Hashes, place: (u32, u32)) -> bool {
        Self::still_locked(&lock(&self.index), i, h, place)
    }

    fn still_locked(idx: &Index, i: u32, h: &Hashes, (seg, off): (u32, u32)) -> bool {
        Self::settled(idx, h) == Some(i) && {
            let s = idx.slot(i);
            s.seg == seg && s.off == off
        }
    }

    /// Drop slot `i` if it still holds the page `h` written at `place`.
    fn drop_if_still(&self, i: u32, h: &Hashes, place: (u32, u32)) {
        let mut idx = lock(&self.index);
        if Self::still_locked(&idx, i, h, place) {
            self.remove_slot_locked(&mut idx, i);
        }
    }

    /// Remove slot `i` (uncounted: the caller counts the reason): its
    /// memory copy, its journal record, its file or, for a packed page,
    /// its segment once nothing else is in it.
    fn remove_slot_locked(&self, idx: &mut Index, i: u32) -> Slot {
        let s = idx.remove(i);
        let key = s.key();
        lock(&self.memory).remove(key::memory_key(key, s.version_hash));
        let d = &mut idx.dirs[s.dir()];
        if !s.pending() {
            journal::encode(&mut d.log, &journal::del_of(&s));
        }
        if s.is_large() {
            if !s.pending() {
                let _ = std::fs::remove_file(self.large_path(s.dir(), key, s.version_hash));
            }
        } else if d.segments.deletable(s.seg) {
            d.used -= d.segments.delete(s.seg);
        }
        s
    }

    /// Store a page. Returns `Ok(false)` when it was not stored (already
    /// there, larger than any directory, everything else pending or pinned,
    /// over the pin quota or its mount's quota). The page also enters the
    /// memory tier, unless a quota refused it.
    pub fn put(&self, key: &PageKey, data: &Bytes) -> Result<bool> {
        let r = self.put_indexed(key, data);
        self.write_log();
        r
    }

    /// [`PageStore::put`] but for writing its index records out.
    fn put_indexed(&self, key: &PageKey, data: &Bytes) -> Result<bool> {
        let h = key.hashes(self.page_size);
        let remember = || {
            if self.memory_enabled() {
                // A copy: `data` is often a slice of a whole multi-page UFS
                // read, which a cached slice would keep alive in full.
                lock(&self.memory).insert(h.memory_key(), Bytes::copy_from_slice(data));
            }
        };
        if !key.indexable() || data.len() as u64 > self.page_size {
            remember();
            return Ok(false);
        }
        let mut attempts = 0;
        let (i, dir, seg, off, file) = loop {
            attempts += 1;
            let mut idx = lock(&self.index);
            if let Some(i) = idx.find(h.slot) {
                let s = *idx.slot(i);
                if s.version_hash == h.version_hash || s.pending() {
                    drop(idx);
                    remember();
                    return Ok(false);
                }
                // A page of another version: stale, replaced.
                self.metrics.evicted(EvictReason::Stale, 1);
                self.remove_slot_locked(&mut idx, i);
            }
            let dir = self.roomiest_dir(&idx);
            let packed = record_len(data.len()) <= idx.dirs[dir].segments.small_max();
            let disk_len = if packed {
                record_len(data.len()) as u64
            } else {
                format::header_len(key.url(), key.version()) as u64 + data.len() as u64
            };
            let pinned = idx.rules.is_pinned(key.url());
            if pinned && idx.pinned_bytes + disk_len > self.pin_quota {
                Metrics::add(&self.metrics.pin_refused, 1);
                tracing::debug!(url = %key.url(), page = key.index(), "pin quota full: page not cached");
                return Ok(false);
            }
            let mount = self.mount_of(key.url());
            if let Some(m) = mount {
                if !self.evict_mount_locked(&mut idx, m, disk_len) {
                    return Ok(false);
                }
            }
            if disk_len > self.dirs[dir].capacity {
                drop(idx);
                remember();
                return Ok(false);
            }
            match self.make_room(&mut idx, dir, disk_len) {
                evict::Room::Ready => {}
                evict::Room::AfterFlush if attempts < 4 => {
                    drop(idx);
                    self.flush();
                    continue;
                }
                _ => {
                    // Everything left is being written right now, or pinned.
                    drop(idx);
                    remember();
                    return Ok(false);
                }
            }
            let named = idx.has_url(h.slot.url_hash);
            // (segment, offset) names this write alone: segment numbers
            // are never reused, and a page file's offset field carries a
            // write number instead. The write settles its slot only if the
            // slot still has it: the slot number and the key may have been
            // freed and taken again by another write of the same page.
            let (seg, off, file) = if packed {
                let (seg, off, file) = idx.dirs[dir].segments.allocate(disk_len as u32)?;
                idx.dirs[dir].used += disk_len;
                (seg, off, Some(file))
            } else {
                (LARGE, idx.next_write(), None)
            };
            let ttl_class = keep::ttl_class(&idx.rules, key.url());
            let i = idx.insert(NewPage {
                key: h.slot,
                version_hash: h.version_hash,
                dir,
                seg,
                off,
                len: disk_len as u32,
                created: index::now_ds(),
                pending: true,
                pinned,
                mount,
                ttl_class,
            });
            if !named {
                journal::encode_name(&mut idx.dirs[dir].names, h.slot.url_hash, key.url());
            }
            break (i, dir, seg, off, file);
        };
        remember();
        let written = match &file {
            Some(file) => {
                let record =
                    encode_record(self.page_size, key.url(), key.version(), key.index(), data);
                segments::write_at(file, off, &record)
            }
            None => {
                let header = encode_header(self.page_size, key, data);
                write_page(&self.large_path(dir, h.slot, h.version_hash), &header, data)
            }
        };
        let mut idx = lock(&self.index);
        let ours = idx.find(h.slot) == Some(i) && {
            let s = idx.slot(i);
            s.pending() && s.version_hash == h.version_hash && s.seg == seg && s.off == off
        };
        match written {
            Ok(()) => {
                if ours {
                    idx.settle(i);
                    let rec = journal::put_of(idx.slot(i));
                    journal::encode(&mut idx.dirs[dir].log, &rec);
                } else if file.is_none() && !Self::has_version(&idx, &h) {
                    // Removed (invalidated) while being written, and no
                    // other write of this page has begun since (whose file
                    // this path is: under the index lock, none can begin
                    // until it is deleted).
                    let _ = std::fs::remove_file(self.large_path(dir, h.slot, h.version_hash));
                }
                Ok(true)
            }
            Err(e) => {
                if ours {
                    self.remove_slot_locked(&mut idx, i);
                }
                if e.kind() == std::io::ErrorKind::StorageFull {
                    // The disk holds less than the capacity: hold what it
                    // holds now, and evict to make room from here on. What
                    // it holds is the pages written, not the bytes reserved
                    // for writes in flight (they may fail the same way).
                    let first = idx.dirs[dir].disk_full.is_none();
                    let at = idx.dirs[dir].on_disk();
                    idx.dirs[dir].disk_full = Some((at, std::time::Instant::now()));
                    if first {
                        tracing::warn!(
                            dir = %self.dirs[dir].path.display(),
                            "cache disk full at {} used (capacity {}): evicting to make room \
                             for {} s before trying the capacity again",
                            human_size(at),
                            human_size(self.dirs[dir].capacity),
                            index::DISK_FULL_FOR.as_secs()
                        );
                    }
                }
                Metrics::add(&self.metrics.page_write_errors, 1);
                Err(WorkerError::io(
                    format!("cannot write a page of {}", key.url()),
                    e,
                ))
            }
        }
    }

    /// Reserve `bytes` of the first directory's capacity for a file that is
    /// not a page (a write-through's spool, kept in that directory): room
    /// is made as for a page, by compaction or eviction, so that the
    /// directory's files stay within its capacity. `false` when they do not
    /// fit (more than the directory holds, or everything left is being
    /// written or pinned). Counted as used (the file is on disk) until
    /// [`Self::release_scratch`]. Without a directory, nothing to reserve.
    pub fn reserve_scratch(&self, bytes: u64) -> bool {
        let Some(spec) = self.dirs.first() else {
            return true;
        };
        if bytes > spec.capacity {
            return false;
        }
        let mut reserved = false;
        for attempt in 0..4 {
            let mut idx = lock(&self.index);
            match self.make_room(&mut idx, 0, bytes) {
                evict::Room::Ready => {
                    idx.dirs[0].used += bytes;
                    reserved = true;
                    break;
                }
                evict::Room::AfterFlush if attempt < 3 => {
                    drop(idx);
                    self.flush();
                }
                _ => break,
            }
        }
        // The evictions' journal records.
        self.write_log();
        reserved
    }

    /// Reserve at least `want` bytes for a file being written (a spool, a
    /// part): 1 MiB at a time when that fits (a reservation per MiB, not
    /// per chunk), else just `want`. Returns the bytes reserved, 0 when not
    /// even `want` fits.
    pub fn reserve_scratch_step(&self, want: u64) -> u64 {
        const STEP: u64 = 1 << 20;
        if want < STEP && self.reserve_scratch(STEP) {
            STEP
        } else if self.reserve_scratch(want) {
            want
        } else {
            0
        }
    }

    /// The first directory's capacity, which [`Self::reserve_scratch`]
    /// reserves from (`None` without a directory).
    pub fn scratch_capacity(&self) -> Option<u64> {
        self.dirs.first().map(|d| d.capacity)
    }

    /// Give back `bytes` reserved with [`Self::reserve_scratch`].
    pub fn release_scratch(&self, bytes: u64) {
        if self.dirs.is_empty() {
            return;
        }
        let mut idx = lock(&self.index);
        idx.dirs[0].used = idx.dirs[0].used.saturating_sub(bytes);
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
        let keep = keep_version.map(alluxiofs_core::page_file::version_hash);
        let n = self.remove_hashes(&[alluxiofs_core::page_file::url_hash(url)], keep);
        self.metrics.evicted(reason, n as u64);
        n
    }

    /// Remove the pages of the URLs hashed `hashes` (but those of version
    /// hash `keep`); uncounted. Returns how many.
    fn remove_hashes(&self, hashes: &[u64], keep: Option<u32>) -> usize {
        let mut idx = lock(&self.index);
        let mut removed = 0;
        for &h in hashes {
            let ids: Vec<u32> = idx.pages_of(h).collect();
            for i in ids {
                if keep.is_some_and(|v| idx.slot(i).version_hash == v) {
                    continue;
                }
                self.remove_slot_locked(&mut idx, i);
                removed += 1;
            }
        }
        drop(idx);
        self.write_log();
        removed
    }

    /// Delete the pages of every URL at or under `prefix` (normalized).
    pub fn remove_under(&self, prefix: &str) -> usize {
        let hashes = self.hashes_under(prefix, true);
        let n = self.remove_hashes(&hashes, None);
        self.metrics.evicted(EvictReason::Invalidate, n as u64);
        n
    }

    /// How many pages of (`url`, `version`) are cached.
    pub fn cached_pages(&self, url: &str, version: &str) -> u64 {
        let vh = alluxiofs_core::page_file::version_hash(version);
        let idx = lock(&self.index);
        idx.pages_of(alluxiofs_core::page_file::url_hash(url))
            .filter(|&i| {
                let s = idx.slot(i);
                !s.pending() && s.version_hash == vh
            })
            .count() as u64
    }

    /// Every URL with pages on disk, each once (reads the names file).
    pub fn urls(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        self.for_each_url(&mut |_, url| {
            if seen.insert(url.to_string()) {
                out.push(url.to_string());
            }
        });
        out
    }

    /// Used bytes per directory.
    pub fn used_per_dir(&self) -> Vec<u64> {
        lock(&self.index).dirs.iter().map(|d| d.used).collect()
    }

    /// The store gauges for `/metrics`.
    pub fn gauges(&self) -> StoreGauges {
        let index_disk_bytes = lock(&self.persist).iter().map(|f| f.disk_bytes()).sum();
        let (used, pages, pinned, dirs, index_memory_bytes) = {
            let idx = lock(&self.index);
            let dirs = self
                .dirs
                .iter()
                .zip(&idx.dirs)
                .map(|(d, s)| DirGauge {
                    path: d.path.display().to_string(),
                    used_bytes: s.on_disk(),
                    capacity_bytes: d.capacity,
                })
                .collect();
            (
                idx.dirs.iter().map(|d| d.on_disk()).sum(),
                idx.len() as u64,
                idx.pinned_bytes,
                dirs,
                idx.heap_bytes() as u64,
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
            index_memory_bytes,
            index_disk_bytes,
            dirs,
        }
    }
}

/// Where the data bytes of every page in cache directory `root` are on
/// disk: (file, offset, length), for records in segment files and for page
/// files. Reads the files (a tool for tests and inspection, not for a
/// running store's hot path).
pub fn page_data_spans(root: &std::path::Path) -> Vec<(PathBuf, u64, u64)> {
    use alluxiofs_core::page_file::{decode_record_header, RECORD_ALIGN, RECORD_HEADER};
    let mut out = Vec::new();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(root.join("segments"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    segs.sort();
    for path in segs {
        let Ok(raw) = std::fs::read(&path) else {
            continue;
        };
        let mut off = 0;
        while off + RECORD_HEADER <= raw.len() {
            match decode_record_header(&raw[off..]) {
                Ok(h) if off + record_len(h.data_len as usize) <= raw.len() => {
                    out.push((
                        path.clone(),
                        (off + RECORD_HEADER) as u64,
                        u64::from(h.data_len),
                    ));
                    off += record_len(h.data_len as usize);
                }
                _ => off += RECORD_ALIGN,
            }
        }
    }
    let mut large: Vec<PathBuf> = std::fs::read_dir(root.join("large"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|sub| std::fs::read_dir(sub.path()).ok())
                .flat_map(|files| files.flatten().map(|e| e.path()))
                .collect()
        })
        .unwrap_or_default();
    large.sort();
    for path in large {
        let Ok(raw) = std::fs::read(&path) else {
            continue;
        };
        if let Ok(h) = format::decode_header(&raw) {
            out.push((path, h.len() as u64, h.data_len));
        }
    }
    out
}

impl Drop for PageStore {
    fn drop(&mut self) {
        self.flush();
        for f in lock(&self.persist).iter() {
            f.mark_clean();
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the store's tests.
    pub(super) use super::format::header_len;
    use super::*;

    pub(crate) const PS: u64 = 4096;

    pub(crate) fn open(dirs: &[(&std::path::Path, u64)], memory: u64) -> PageStore {
        open_opts(dirs, memory, StoreOptions::default())
    }

    pub(crate) fn open_opts(
        dirs: &[(&std::path::Path, u64)],
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

    /// Bytes a packed page of `len` data bytes takes on disk.
    pub(crate) fn packed(len: usize) -> u64 {
        record_len(len) as u64
    }

    pub(crate) fn data(seed: u8, len: usize) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Bytes of page data on disk: segment files and page files.
    pub(crate) fn disk_bytes(root: &std::path::Path) -> u64 {
        page_files(root)
            .iter()
            .map(|f| f.metadata().unwrap().len())
            .sum()
    }

    /// The segment files and page files under `root`.
    pub(crate) fn page_files(root: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(root.join("segments")) {
            out.extend(rd.flatten().map(|f| f.path()));
        }
        if let Ok(rd) = std::fs::read_dir(root.join("large")) {
            for sub in rd.flatten() {
                for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
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
        assert!(store.has_pages("s3://b/x"));
        assert_eq!(store.remove_url("s3://b/x", Some("\"v1\"")), 0);
        assert_eq!(store.remove_url("s3://b/x", Some("\"v2\"")), 1);
        assert!(store.get(&k).is_none());
        assert!(!store.has_pages("s3://b/x"));
        assert_eq!(store.gauges().used_bytes, 0);
        assert_eq!(disk_bytes(dir.path()), 0, "the emptied segment is deleted");
    }

    #[test]
    fn a_new_version_replaces_the_old_pages_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 0);
        for i in 0..3 {
            store
                .put(&PageKey::new("u", "v1", i), &data(1, 100))
                .unwrap();
        }
        assert!(store
            .put(&PageKey::new("u", "v2", 1), &data(2, 100))
            .unwrap());
        assert_eq!(store.cached_pages("u", "v1"), 2);
        assert_eq!(store.cached_pages("u", "v2"), 1);
        assert_eq!(store.metrics.evictions(EvictReason::Stale), 1);
        assert_eq!(
            store.get(&PageKey::new("u", "v2", 1)).unwrap(),
            data(2, 100)
        );
        assert_eq!(store.remove_url("u", None), 3);
    }

    #[test]
    fn corrupt_pages_are_never_served_and_dropped() {
        // A packed page (bytes flipped in its record: magic, length, key,
        // page id, checksum, data) and a one-file page (in its header and
        // data).
        for (len, flips) in [
            (3000usize, vec![1, 5, 9, 17, 21, 30, 42, 60, 2000]),
            (
                PS as usize,
                vec![20, 35, 40, format::FIXED_HEADER + 3, 4000],
            ),
        ] {
            for flip_at in flips {
                let dir = tempfile::tempdir().unwrap();
                let metrics = Arc::new(Metrics::new());
                let opts = StoreOptions::default();
                // Small records pack; a page past SMALL_MAX gets a file: use
                // a store with a page size above it for the file case.
                let page_size = if len == 3000 { PS } else { 1 << 20 };
                let len = if len == 3000 {
                    len
                } else {
                    segments::SMALL_MAX + 10
                };
                let store = PageStore::open_with(
                    vec![DirSpec {
                        path: dir.path().to_path_buf(),
                        capacity: 8 << 20,
                    }],
                    0,
                    page_size,
                    metrics.clone(),
                    opts,
                )
                .unwrap();
                let k = PageKey::new("file:///tmp/abcdefgh", "1-2", 0);
                let d = data(7, len);
                assert!(store.put(&k, &d).unwrap());
                let files = page_files(dir.path());
                assert_eq!(files.len(), 1);
                let mut raw = std::fs::read(&files[0]).unwrap();
                raw[flip_at] ^= 0x40;
                std::fs::write(&files[0], &raw).unwrap();
                assert!(
                    store.get(&k).is_none(),
                    "flip at {flip_at} of {len} must not be served"
                );
                assert_eq!(Metrics::get(&metrics.corrupt_pages), 1);
                assert_eq!(store.gauges().pages, 0);
                assert_eq!(store.gauges().used_bytes, 0);
                assert!(
                    page_files(dir.path()).is_empty(),
                    "the bad bytes are deleted"
                );
            }
        }
    }

    #[test]
    fn small_pages_share_segments_and_large_ones_get_files() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = PageStore::open_with(
            vec![DirSpec {
                path: dir.path().to_path_buf(),
                capacity: 64 << 20,
            }],
            0,
            1 << 20,
            metrics,
            StoreOptions::default(),
        )
        .unwrap();
        for i in 0..1000 {
            let k = PageKey::new(format!("s3://b/small/{i}"), "v", 0);
            store.put(&k, &data(i as u8, 2048)).unwrap();
        }
        let big = PageKey::new("s3://b/big", "v", 0);
        store.put(&big, &data(3, 1 << 20)).unwrap();
        let files = page_files(dir.path());
        assert_eq!(files.len(), 2, "one segment and one page file: {files:?}");
        let used = store.gauges().used_bytes;
        assert_eq!(used, disk_bytes(dir.path()));
        assert_eq!(
            used,
            1000 * packed(2048) + (1 << 20) + format::header_len("s3://b/big", "v") as u64
        );
        for i in (0..1000).step_by(97) {
            let k = PageKey::new(format!("s3://b/small/{i}"), "v", 0);
            assert_eq!(store.get(&k).unwrap(), data(i as u8, 2048));
        }
        assert_eq!(store.get(&big).unwrap(), data(3, 1 << 20));
    }
    #[test]
    fn used_bytes_count_pages_on_disk_not_writes_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 0);
        let k = PageKey::new("s3://b/f", "v", 0);
        store.put(&k, &data(1, 2048)).unwrap();
        let on_disk = store.gauges().used_bytes;
        assert_eq!(on_disk, disk_bytes(dir.path()));
        // A page being written: its bytes are reserved against the capacity
        // (used_per_dir) but not on disk yet (the gauge, and a disk-full limit).
        let pending = store.key("s3://b/g", "v", 0).hashes(PS);
        let i = {
            let mut idx = lock(&store.index);
            let off = idx.next_write();
            let i = idx.insert(NewPage {
                key: pending.slot,
                version_hash: pending.version_hash,
                dir: 0,
                seg: LARGE,
                off,
                len: 5000,
                created: index::now_ds(),
                pending: true,
                pinned: false,
                mount: None,
                ttl_class: 0,
            });
            assert_eq!(idx.dirs[0].on_disk(), on_disk);
            i
        };
        assert_eq!(store.used_per_dir()[0], on_disk + 5000);
        assert_eq!(store.gauges().used_bytes, on_disk);
        assert_eq!(store.gauges().dirs[0].used_bytes, on_disk);
        // Written: counted. Removed while pending: never counted.
        lock(&store.index).settle(i);
        assert_eq!(store.gauges().used_bytes, on_disk + 5000);
        lock(&store.index).remove(i);
        assert_eq!(store.gauges().used_bytes, on_disk);
        let i = lock(&store.index).insert(NewPage {
            key: pending.slot,
            version_hash: pending.version_hash,
            dir: 0,
            seg: LARGE,
            off: 1,
            len: 700,
            created: index::now_ds(),
            pending: true,
            pinned: false,
            mount: None,
            ttl_class: 0,
        });
        lock(&store.index).remove(i);
        assert_eq!(store.gauges().used_bytes, on_disk);
        assert_eq!(store.used_per_dir()[0], on_disk);
    }

    #[test]
    fn the_index_journal_of_a_small_cache_stays_small() {
        // 1 MiB of 4 KiB pages churned 20 times over: every put and every
        // eviction is a journal record; checkpoints keep the dead ones to
        // 1/64 of the capacity (the floor of 1,024 records here).
        let dir = tempfile::tempdir().unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 0);
        for i in 0..5000u32 {
            let k = PageKey::new(format!("s3://b/f{}", i % 8), "v", u64::from(i));
            store.put(&k, &data(i as u8, PS as usize)).unwrap();
            if i % 500 == 0 {
                store.flush();
            }
        }
        store.flush();
        let g = store.gauges();
        assert!(g.used_bytes <= 1 << 20);
        let live = g.pages * journal::RECORD as u64;
        let bound = 3 * live + persist::checkpoint_slack(1 << 20) * journal::RECORD as u64;
        assert!(
            g.index_disk_bytes <= bound + 4096,
            "index {} bytes, bound {bound}",
            g.index_disk_bytes
        );
        assert!(g.index_disk_bytes < 1 << 17, "{}", g.index_disk_bytes);
        assert_eq!(persist::checkpoint_slack(1 << 20), 1024);
        assert_eq!(persist::checkpoint_slack(64 << 20), 26_214);
        assert_eq!(persist::checkpoint_slack(1 << 40), 1_000_000);
    }
    #[test]
    fn scratch_bytes_make_room_and_count_as_used() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 1 << 20;
        let store = open_opts(&[(dir.path(), cap)], 0, lru());
        for i in 0..300u64 {
            let k = PageKey::new("s3://b/f", "v", i);
            store.put(&k, &data(i as u8, PS as usize)).unwrap();
        }
        let full = store.used_per_dir()[0];
        assert!(full > cap / 2);
        assert!(store.reserve_scratch(cap / 2), "pages are evicted for it");
        assert!(store.used_per_dir()[0] <= cap);
        assert_eq!(
            store.gauges().used_bytes,
            disk_bytes(dir.path()) + cap / 2,
            "counted as on disk"
        );
        assert!(!store.reserve_scratch(cap + 1), "more than the directory");
        store.release_scratch(cap / 2);
        assert_eq!(store.gauges().used_bytes, disk_bytes(dir.path()));
        assert_eq!(store.scratch_capacity(), Some(cap));
    }
}
