//! The page store: pages on local disks, hot pages in memory.
//!
//! Design:
//! - **Key.** A page is named by (normalized URL, object version, page
//!   index) and the page size: a changed object never finds old pages. The
//!   file name is the hex of the xxh3-128 hash of that key, under
//!   `<cache_dir>/pages/<first two hex digits>/`.
//! - **Self-describing files.** Each file starts with a header (magic,
//!   format version, page size, page index, data length, xxh3-64 of the
//!   data, URL, version) followed by the data. Every read checks the header
//!   against the key and the checksum against the data; a mismatch is
//!   logged, counted, the file deleted and the read treated as a miss.
//!   Unverified bytes are never served.
//! - **Atomic writes.** A page is written to a temporary file in its
//!   directory and renamed into place, so no reader sees half a page. While
//!   it is written its index entry is *pending* (invisible to readers, not
//!   evictable) and its bytes are already reserved.
//! - **Capacity.** Each directory has a capacity; its used bytes (headers
//!   and data) never exceed it: space is reserved before a write, evicting
//!   pages of that directory chosen by its eviction [`Policy`] (LRU or
//!   S3-FIFO, see [`crate::policy`]). A page goes to the directory with the
//!   most free space. Pending and pinned pages are never victims.
//! - **Keeping rules** ([`crate::rules`]): pinned pages leave the policy
//!   (never evicted) and their bytes are bounded by the pin quota; pages
//!   older than the TTL of their path are a miss (checked on read and by a
//!   sweep); a mount with a quota evicts its own pages to stay within it.
//!   Every removal is counted by reason (`alluxiofs_evictions_total`).
//! - **Memory tier.** A bounded LRU of `Bytes` for hot pages; a page enters
//!   it only after verification (or straight from the UFS).
//! - **Restart.** On open, every directory is scanned: headers (not data)
//!   are read to rebuild the index and used bytes, the eviction order
//!   starts from file mtimes (a read refreshes an mtime older than a
//!   minute), a page's age (for TTLs) from its file's birth time, temporary
//!   and unreadable files are deleted. Rules are read from `rules.json`. The data checksum
//!   is still verified when a page is read.
//!
//! All methods are blocking (file I/O); async callers run them with
//! `tokio::task::spawn_blocking`.

use crate::error::{Result, WorkerError};
use crate::metrics::{DirGauge, EvictReason, Metrics, StoreGauges};
use crate::policy::{Policy, PolicyKind};
use crate::rules::{PinQuota, Rules, RULES_FILE};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

const MAGIC: &[u8; 8] = b"AXFSPAGE";
const FORMAT_VERSION: u32 = 1;
/// Fixed part of the header: magic, format, page size, index, data length,
/// checksum, URL length, version length.
const FIXED_HEADER: usize = 8 + 4 + 8 + 8 + 8 + 8 + 4 + 4;
const MAX_TEXT: usize = 64 * 1024;

/// The identity of one cached page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    /// Normalized UFS URL.
    pub url: String,
    /// Object version (ETag or `<mtime_ms>-<size>`).
    pub version: String,
    /// Page index.
    pub index: u64,
}

impl PageKey {
    /// A key.
    pub fn new(url: impl Into<String>, version: impl Into<String>, index: u64) -> Self {
        PageKey {
            url: url.into(),
            version: version.into(),
            index,
        }
    }
}

fn key_hash(page_size: u64, url: &str, version: &str, index: u64) -> u128 {
    let mut buf = Vec::with_capacity(24 + url.len() + version.len());
    buf.extend_from_slice(&page_size.to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&(url.len() as u64).to_le_bytes());
    buf.extend_from_slice(url.as_bytes());
    buf.extend_from_slice(version.as_bytes());
    xxh3_128(&buf)
}

fn header_len(url: &str, version: &str) -> usize {
    FIXED_HEADER + url.len() + version.len()
}

fn encode_header(page_size: u64, key: &PageKey, data: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(header_len(&key.url, &key.version));
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&page_size.to_le_bytes());
    h.extend_from_slice(&key.index.to_le_bytes());
    h.extend_from_slice(&(data.len() as u64).to_le_bytes());
    h.extend_from_slice(&xxh3_64(data).to_le_bytes());
    h.extend_from_slice(&(key.url.len() as u32).to_le_bytes());
    h.extend_from_slice(&(key.version.len() as u32).to_le_bytes());
    h.extend_from_slice(key.url.as_bytes());
    h.extend_from_slice(key.version.as_bytes());
    h
}

/// A decoded page header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    page_size: u64,
    index: u64,
    data_len: u64,
    checksum: u64,
    url: String,
    version: String,
}

impl Header {
    fn len(&self) -> usize {
        header_len(&self.url, &self.version)
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Decode the fixed header part: (header without texts, url len, version len).
fn decode_fixed(b: &[u8]) -> std::result::Result<(u64, u64, u64, u64, usize, usize), String> {
    if b.len() < FIXED_HEADER {
        return Err("file shorter than a page header".into());
    }
    if &b[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let format = u32_at(b, 8);
    if format != FORMAT_VERSION {
        return Err(format!("unknown page format {format}"));
    }
    let url_len = u32_at(b, 44) as usize;
    let version_len = u32_at(b, 48) as usize;
    if url_len > MAX_TEXT || version_len > MAX_TEXT {
        return Err("header text too long".into());
    }
    Ok((
        u64_at(b, 12),
        u64_at(b, 20),
        u64_at(b, 28),
        u64_at(b, 36),
        url_len,
        version_len,
    ))
}

fn decode_header(b: &[u8]) -> std::result::Result<Header, String> {
    let (page_size, index, data_len, checksum, url_len, version_len) = decode_fixed(b)?;
    let end = FIXED_HEADER + url_len + version_len;
    if b.len() < end {
        return Err("truncated header".into());
    }
    let url = std::str::from_utf8(&b[FIXED_HEADER..FIXED_HEADER + url_len])
        .map_err(|_| "URL is not UTF-8")?
        .to_string();
    let version = std::str::from_utf8(&b[FIXED_HEADER + url_len..end])
        .map_err(|_| "version is not UTF-8")?
        .to_string();
    Ok(Header {
        page_size,
        index,
        data_len,
        checksum,
        url,
        version,
    })
}

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

#[derive(Debug, Clone)]
struct Entry {
    dir: usize,
    file_len: u64,
    url: Arc<str>,
    version: Arc<str>,
    /// When the page was cached (its age counts for TTLs).
    created: SystemTime,
    pending: bool,
    pinned: bool,
    /// Index of the mount quota the URL falls under.
    mount: Option<usize>,
}

#[derive(Debug)]
struct Index {
    entries: HashMap<u128, Entry>,
    /// One eviction order per directory, over its evictable pages (neither
    /// pending nor pinned).
    policies: Vec<Box<dyn Policy>>,
    used: Vec<u64>,
    mount_used: Vec<u64>,
    pinned_bytes: u64,
    by_url: HashMap<Arc<str>, HashSet<u128>>,
    rules: Rules,
}

impl Index {
    fn insert(&mut self, hash: u128, entry: Entry) {
        self.used[entry.dir] += entry.file_len;
        if entry.pinned {
            self.pinned_bytes += entry.file_len;
        }
        if let Some(m) = entry.mount {
            self.mount_used[m] += entry.file_len;
        }
        if !entry.pending && !entry.pinned {
            self.policies[entry.dir].insert(hash, entry.file_len);
        }
        self.by_url
            .entry(entry.url.clone())
            .or_default()
            .insert(hash);
        self.entries.insert(hash, entry);
    }

    fn touch(&mut self, hash: u128) {
        if let Some(e) = self.entries.get(&hash) {
            self.policies[e.dir].hit(hash);
        }
    }

    /// A pending page was written: it becomes visible (and evictable unless
    /// pinned). `false` when it was removed meanwhile.
    fn settle(&mut self, hash: u128) -> bool {
        let Some(e) = self.entries.get_mut(&hash) else {
            return false;
        };
        e.pending = false;
        if !e.pinned {
            self.policies[e.dir].insert(hash, e.file_len);
        }
        true
    }

    fn set_pinned(&mut self, hash: u128, pinned: bool) -> u64 {
        let Some(e) = self.entries.get_mut(&hash) else {
            return 0;
        };
        if e.pinned == pinned {
            return 0;
        }
        e.pinned = pinned;
        let (dir, len, pending) = (e.dir, e.file_len, e.pending);
        if pinned {
            self.pinned_bytes += len;
            self.policies[dir].remove(hash);
        } else {
            self.pinned_bytes -= len;
            if !pending {
                self.policies[dir].insert(hash, len);
            }
        }
        len
    }

    fn remove(&mut self, hash: u128) -> Option<Entry> {
        let e = self.entries.remove(&hash)?;
        self.policies[e.dir].remove(hash);
        self.used[e.dir] -= e.file_len;
        if e.pinned {
            self.pinned_bytes -= e.file_len;
        }
        if let Some(m) = e.mount {
            self.mount_used[m] -= e.file_len;
        }
        if let Some(set) = self.by_url.get_mut(&e.url) {
            set.remove(&hash);
            if set.is_empty() {
                self.by_url.remove(&e.url);
            }
        }
        Some(e)
    }

    /// Hashes of the pages of URLs at `prefix` (or under it, `recursive`).
    fn hashes_under(&self, prefix: &str, recursive: bool) -> Vec<u128> {
        if !recursive {
            return self
                .by_url
                .get(prefix)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
        }
        self.by_url
            .iter()
            .filter(|(u, _)| alluxiofs_core::path::is_under(u, prefix))
            .flat_map(|(_, s)| s.iter().copied())
            .collect()
    }
}

/// What a pin, unpin or free did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeepOutcome {
    /// Pages affected.
    pub pages: u64,
    /// Their bytes on disk.
    pub bytes: u64,
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

/// Bounded LRU of verified page bytes.
#[derive(Debug, Default)]
struct MemoryTier {
    capacity: u64,
    used: u64,
    tick: u64,
    map: HashMap<u128, (Bytes, u64)>,
    order: BTreeMap<u64, u128>,
}

impl MemoryTier {
    fn get(&mut self, hash: u128) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let (bytes, t) = self.map.get_mut(&hash)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, hash);
        Some(bytes.clone())
    }

    fn insert(&mut self, hash: u128, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.capacity || self.map.contains_key(&hash) {
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
        self.order.insert(self.tick, hash);
        self.map.insert(hash, (bytes, self.tick));
        self.used += len;
    }

    fn remove(&mut self, hash: u128) {
        if let Some((b, t)) = self.map.remove(&hash) {
            self.order.remove(&t);
            self.used -= b.len() as u64;
        }
    }
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

fn hex(hash: u128) -> String {
    format!("{hash:032x}")
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
            index: Mutex::new(Index {
                entries: HashMap::new(),
                policies: dirs
                    .iter()
                    .map(|d| options.policy.build(d.capacity))
                    .collect(),
                used: vec![0; dirs.len()],
                mount_used: vec![0; options.mount_quotas.len()],
                pinned_bytes: 0,
                by_url: HashMap::new(),
                rules,
            }),
            memory: Mutex::new(MemoryTier {
                capacity: memory_capacity,
                ..Default::default()
            }),
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

    fn page_path(&self, dir: usize, hash: u128) -> PathBuf {
        let h = hex(hash);
        self.dirs[dir].path.join("pages").join(&h[..2]).join(h)
    }

    fn hash(&self, key: &PageKey) -> u128 {
        key_hash(self.page_size, &key.url, &key.version, key.index)
    }

    fn scan_dir(&self, dir: usize) -> Result<()> {
        let root = self.dirs[dir].path.join("pages");
        let mut found: Vec<(SystemTime, u128, Entry)> = Vec::new();
        let subdirs = std::fs::read_dir(&root)
            .map_err(|e| WorkerError::io(format!("cannot scan {}", root.display()), e))?;
        for sub in subdirs.flatten() {
            let sub_path = sub.path();
            if !sub_path.is_dir() {
                continue;
            }
            let Ok(files) = std::fs::read_dir(&sub_path) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                match self.scan_file(&path) {
                    Ok((hash, mtime, created, url, version, file_len)) => found.push((
                        mtime,
                        hash,
                        Entry {
                            dir,
                            file_len,
                            mount: self.mount_of(&url),
                            url: url.into(),
                            version: version.into(),
                            created,
                            pending: false,
                            pinned: false,
                        },
                    )),
                    Err(reason) => {
                        let temporary = path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.contains(".tmp."));
                        if temporary {
                            tracing::debug!(file = %path.display(), "removing temporary file");
                        } else {
                            tracing::warn!(file = %path.display(), "removing cache file: {reason}");
                            Metrics::add(&self.metrics.corrupt_pages, 1);
                        }
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        found.sort_by_key(|(mtime, hash, _)| (*mtime, *hash));
        let mut idx = lock(&self.index);
        let count = found.len();
        for (_, hash, mut entry) in found {
            if idx.entries.contains_key(&hash) {
                // The same page in two directories (capacities changed): keep one.
                let _ = std::fs::remove_file(self.page_path(dir, hash));
                continue;
            }
            entry.pinned = idx.rules.is_pinned(&entry.url);
            idx.insert(hash, entry);
        }
        let evicted = self.evict_locked(&mut idx, dir, 0);
        drop(idx);
        tracing::info!(
            dir = %self.dirs[dir].path.display(),
            pages = count - evicted,
            evicted,
            "cache directory scanned"
        );
        Ok(())
    }

    fn scan_file(
        &self,
        path: &Path,
    ) -> std::result::Result<(u128, SystemTime, SystemTime, String, String, u64), String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("unreadable name")?;
        if name.len() != 32 || !name.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err("not a page file (temporary or foreign)".into());
        }
        let hash = u128::from_str_radix(name, 16).map_err(|e| e.to_string())?;
        let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let meta = f.metadata().map_err(|e| e.to_string())?;
        let mut fixed = vec![0u8; FIXED_HEADER];
        f.read_exact(&mut fixed)
            .map_err(|e| format!("header: {e}"))?;
        let (_, _, _, _, url_len, version_len) = decode_fixed(&fixed)?;
        let mut rest = vec![0u8; url_len + version_len];
        f.read_exact(&mut rest)
            .map_err(|e| format!("header: {e}"))?;
        fixed.extend_from_slice(&rest);
        let h = decode_header(&fixed)?;
        if h.page_size != self.page_size {
            return Err(format!(
                "page size {} differs from the configured {}",
                h.page_size, self.page_size
            ));
        }
        if key_hash(h.page_size, &h.url, &h.version, h.index) != hash {
            return Err("header does not match the file name".into());
        }
        let file_len = meta.len();
        if Some(file_len) != (h.len() as u64).checked_add(h.data_len) {
            return Err("file length does not match the header".into());
        }
        let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        // A read refreshes the mtime; the birth time (where the file
        // system keeps one) is when the page was cached.
        let created = meta.created().unwrap_or(mtime).min(mtime);
        Ok((hash, mtime, created, h.url, h.version, file_len))
    }

    /// The index of the mount quota `url` falls under.
    fn mount_of(&self, url: &str) -> Option<usize> {
        self.options
            .mount_quotas
            .iter()
            .position(|(m, _)| alluxiofs_core::path::is_under(url, m))
    }

    /// Evict pages of `dir`, in its policy's order, until `extra` more
    /// bytes fit; returns how many pages were evicted. Deletes their files.
    fn evict_locked(&self, idx: &mut Index, dir: usize, extra: u64) -> usize {
        let capacity = self.dirs[dir].capacity;
        let mut evicted = 0;
        while idx.used[dir] + extra > capacity {
            let Some(hash) = idx.policies[dir].victim(&|_| true) else {
                break;
            };
            idx.remove(hash);
            lock(&self.memory).remove(hash);
            let _ = std::fs::remove_file(self.page_path(dir, hash));
            evicted += 1;
        }
        self.metrics.evicted(EvictReason::Capacity, evicted as u64);
        evicted
    }

    /// Evict pages of mount quota `m` (any directory) until `extra` more
    /// bytes fit in its quota; `false` when they still do not.
    fn evict_mount_locked(&self, idx: &mut Index, m: usize, extra: u64) -> bool {
        let quota = self.options.mount_quotas[m].1;
        let mut evicted = 0;
        while idx.mount_used[m] + extra > quota {
            let mut victim = None;
            for dir in 0..self.dirs.len() {
                let entries = &idx.entries;
                let of_mount = |h: u128| entries.get(&h).is_some_and(|e| e.mount == Some(m));
                if let Some(h) = idx.policies[dir].victim(&of_mount) {
                    victim = Some((dir, h));
                    break;
                }
            }
            let Some((dir, hash)) = victim else { break };
            idx.remove(hash);
            lock(&self.memory).remove(hash);
            let _ = std::fs::remove_file(self.page_path(dir, hash));
            evicted += 1;
        }
        self.metrics
            .evicted(EvictReason::MountQuota, evicted as u64);
        idx.mount_used[m] + extra <= quota
    }

    /// Whether the page `hash` of `url` is older than the TTL of `url`
    /// (a copy only in memory, of unknown age, counts as expired). With
    /// `remove`, an expired page is deleted (disk and memory).
    fn expired(&self, hash: u128, url: &str, remove: bool) -> bool {
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
        let expired = match idx.entries.get(&hash) {
            Some(e) if e.pending => false,
            Some(e) => e.created.elapsed().is_ok_and(|age| age > ttl),
            None => true,
        };
        if expired && remove {
            if let Some(e) = idx.remove(hash) {
                let _ = std::fs::remove_file(self.page_path(e.dir, hash));
                self.metrics.evicted(EvictReason::Ttl, 1);
            }
            drop(idx);
            lock(&self.memory).remove(hash);
        }
        expired
    }

    /// Delete every page older than the TTL of its path; returns how many.
    pub fn sweep_expired(&self) -> usize {
        let mut idx = lock(&self.index);
        if idx.rules.ttls.is_empty() {
            return 0;
        }
        let mut victims = Vec::new();
        for (url, hashes) in &idx.by_url {
            let Some(ttl) = idx.rules.ttl_of(url) else {
                continue;
            };
            for h in hashes {
                if idx
                    .entries
                    .get(h)
                    .is_some_and(|e| !e.pending && e.created.elapsed().is_ok_and(|age| age > ttl))
                {
                    victims.push(*h);
                }
            }
        }
        let mut files = Vec::with_capacity(victims.len());
        for h in &victims {
            if let Some(e) = idx.remove(*h) {
                files.push(self.page_path(e.dir, *h));
            }
        }
        drop(idx);
        let mut mem = lock(&self.memory);
        for h in &victims {
            mem.remove(*h);
        }
        drop(mem);
        for f in files {
            let _ = std::fs::remove_file(f);
        }
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

    /// Pin `prefix` (normalized): its cached pages and those cached later
    /// are never evicted. Refused when the pages cached under it now would
    /// take the pinned bytes over the pin quota.
    pub fn pin(&self, prefix: &str) -> std::result::Result<KeepOutcome, KeepError> {
        let mut idx = lock(&self.index);
        let hashes = idx.hashes_under(prefix, true);
        let mut out = KeepOutcome::default();
        for h in &hashes {
            if let Some(e) = idx.entries.get(h).filter(|e| !e.pinned) {
                out.pages += 1;
                out.bytes += e.file_len;
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
        rules.pin(prefix);
        self.save_rules(&rules)?;
        idx.rules = rules;
        for h in hashes {
            idx.set_pinned(h, true);
        }
        Ok(out)
    }

    /// Remove the pins at or under `prefix`; pages no other pin covers
    /// become evictable. Returns the rules removed and the pages unpinned.
    pub fn unpin(&self, prefix: &str) -> std::result::Result<(usize, KeepOutcome), KeepError> {
        let mut idx = lock(&self.index);
        let mut rules = idx.rules.clone();
        let removed = rules.unpin(prefix);
        self.save_rules(&rules)?;
        idx.rules = rules;
        let mut out = KeepOutcome::default();
        for h in idx.hashes_under(prefix, true) {
            let still = idx
                .entries
                .get(&h)
                .is_some_and(|e| idx.rules.is_pinned(&e.url));
            if !still {
                let len = idx.set_pinned(h, false);
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
        let mut idx = lock(&self.index);
        let mut rules = idx.rules.clone();
        rules.set_ttl(prefix, ttl);
        self.save_rules(&rules)?;
        self.has_ttls
            .store(!rules.ttls.is_empty(), Ordering::Relaxed);
        idx.rules = rules;
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
        let mut idx = lock(&self.index);
        let hashes = idx.hashes_under(prefix, recursive);
        if !force {
            let (mut pages, mut bytes) = (0, 0);
            for h in &hashes {
                if let Some(e) = idx.entries.get(h).filter(|e| e.pinned) {
                    pages += 1;
                    bytes += e.file_len;
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
        let mut mem = lock(&self.memory);
        for h in hashes {
            mem.remove(h);
            let Some(e) = idx.remove(h) else { continue };
            if !e.pending {
                let _ = std::fs::remove_file(self.page_path(e.dir, h));
                out.pages += 1;
                out.bytes += e.file_len;
            }
        }
        drop(mem);
        drop(idx);
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

    /// Whether a verified-on-write page for `key` is indexed (it may still
    /// fail verification when read).
    pub fn contains(&self, key: &PageKey) -> bool {
        let hash = self.hash(key);
        if lock(&self.memory).map.contains_key(&hash) {
            return true;
        }
        lock(&self.index)
            .entries
            .get(&hash)
            .is_some_and(|e| !e.pending)
    }

    /// The page for `key` if the memory tier holds it (no disk I/O, so
    /// async code may call it directly).
    pub fn get_memory(&self, key: &PageKey) -> Option<Bytes> {
        let hash = self.hash(key);
        if self.expired(hash, &key.url, false) {
            // `get` removes it (file I/O).
            return None;
        }
        let in_memory = lock(&self.memory).get(hash);
        if in_memory.is_some() {
            Metrics::add(&self.metrics.memory_hits, 1);
            lock(&self.index).touch(hash);
        }
        in_memory
    }

    /// The page for `key`, verified; `None` on a miss (also when the file
    /// was missing or corrupt, which deletes it).
    pub fn get(&self, key: &PageKey) -> Option<Bytes> {
        let hash = self.hash(key);
        if self.expired(hash, &key.url, true) {
            return None;
        }
        // Bind first: a guard in the `if let` head would live through the
        // body, taking the memory lock before the index lock (eviction takes
        // them the other way round).
        let in_memory = lock(&self.memory).get(hash);
        if let Some(b) = in_memory {
            Metrics::add(&self.metrics.memory_hits, 1);
            lock(&self.index).touch(hash);
            return Some(b);
        }
        let dir = {
            let mut idx = lock(&self.index);
            let e = idx.entries.get(&hash)?;
            if e.pending {
                return None;
            }
            let dir = e.dir;
            idx.touch(hash);
            dir
        };
        let path = self.page_path(dir, hash);
        let raw = match read_and_touch(&path) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(file = %path.display(), "cached page unreadable: {e}");
                self.metrics.evicted(EvictReason::Corrupt, 1);
                self.drop_entry(hash, dir, &path);
                return None;
            }
        };
        match self.verify(key, raw) {
            Ok(data) => {
                lock(&self.memory).insert(hash, data.clone());
                Some(data)
            }
            Err(reason) => {
                tracing::warn!(
                    file = %path.display(),
                    url = %key.url,
                    page = key.index,
                    "corrupt cached page deleted: {reason}"
                );
                Metrics::add(&self.metrics.corrupt_pages, 1);
                self.metrics.evicted(EvictReason::Corrupt, 1);
                self.drop_entry(hash, dir, &path);
                None
            }
        }
    }

    fn drop_entry(&self, hash: u128, dir: usize, path: &Path) {
        let mut idx = lock(&self.index);
        if idx
            .entries
            .get(&hash)
            .is_some_and(|e| e.dir == dir && !e.pending)
        {
            idx.remove(hash);
            let _ = std::fs::remove_file(path);
        }
    }

    fn verify(&self, key: &PageKey, raw: Vec<u8>) -> std::result::Result<Bytes, String> {
        let h = decode_header(&raw)?;
        if h.page_size != self.page_size
            || h.index != key.index
            || h.url != key.url
            || h.version != key.version
        {
            return Err("header does not match the page key".into());
        }
        let start = h.len();
        if Some(raw.len() as u64) != (start as u64).checked_add(h.data_len) {
            return Err("data length does not match the header".into());
        }
        let data = Bytes::from(raw).slice(start..);
        if xxh3_64(&data) != h.checksum {
            return Err("checksum mismatch".into());
        }
        Ok(data)
    }

    /// Store a page. Returns `Ok(false)` when it was not stored (already
    /// there, larger than any directory, everything else pending or pinned,
    /// over the pin quota or its mount's quota). The page also enters the
    /// memory tier, unless a quota refused it.
    pub fn put(&self, key: &PageKey, data: &Bytes) -> Result<bool> {
        let hash = self.hash(key);
        let header = encode_header(self.page_size, key, data);
        let file_len = (header.len() + data.len()) as u64;
        let remember = || {
            if self.memory_enabled() {
                // A copy: `data` is often a slice of a whole multi-page UFS
                // read, which a cached slice would keep alive in full.
                lock(&self.memory).insert(hash, Bytes::copy_from_slice(data));
            }
        };
        let dir = {
            let mut idx = lock(&self.index);
            if idx.entries.contains_key(&hash) {
                drop(idx);
                remember();
                return Ok(false);
            }
            let pinned = idx.rules.is_pinned(&key.url);
            if pinned && idx.pinned_bytes + file_len > self.pin_quota {
                Metrics::add(&self.metrics.pin_refused, 1);
                tracing::debug!(url = %key.url, page = key.index, "pin quota full: page not cached");
                return Ok(false);
            }
            let mount = self.mount_of(&key.url);
            if let Some(m) = mount {
                if !self.evict_mount_locked(&mut idx, m, file_len) {
                    return Ok(false);
                }
            }
            let dir = (0..self.dirs.len())
                .max_by_key(|&d| self.dirs[d].capacity.saturating_sub(idx.used[d]))
                .unwrap_or(0);
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
                hash,
                Entry {
                    dir,
                    file_len,
                    url: key.url.as_str().into(),
                    version: key.version.as_str().into(),
                    created: SystemTime::now(),
                    pending: true,
                    pinned,
                    mount,
                },
            );
            dir
        };
        remember();
        let path = self.page_path(dir, hash);
        let written = write_atomically(&path, &header, data);
        let mut idx = lock(&self.index);
        match written {
            Ok(()) => {
                if !idx.settle(hash) {
                    // Removed (invalidated) while being written.
                    let _ = std::fs::remove_file(&path);
                }
                Ok(true)
            }
            Err(e) => {
                idx.remove(hash);
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
        let Some(hashes) = idx.by_url.get(url).cloned() else {
            return 0;
        };
        let mut removed = 0;
        for hash in hashes {
            let Some(e) = idx.entries.get(&hash) else {
                continue;
            };
            if keep_version.is_some_and(|v| &*e.version == v) {
                continue;
            }
            let dir = e.dir;
            let pending = e.pending;
            idx.remove(hash);
            lock(&self.memory).remove(hash);
            if !pending {
                let _ = std::fs::remove_file(self.page_path(dir, hash));
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

/// Pages not touched for this long get their mtime refreshed on a hit, so
/// that the LRU order rebuilt from mtimes after a restart reflects reads.
const TOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Read a page file; refresh its mtime when it is older than
/// [`TOUCH_AFTER`] (best effort).
fn read_and_touch(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = match std::fs::File::options().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => std::fs::File::open(path)?,
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let mut raw = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut raw)?;
    let now = std::time::SystemTime::now();
    let stale = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age > TOUCH_AFTER);
    if stale {
        let _ = f.set_modified(now);
    }
    Ok(raw)
}

fn write_atomically(path: &Path, header: &[u8], data: &[u8]) -> std::io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| std::io::Error::other("page path has no parent"))?;
    std::fs::create_dir_all(parent)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("page");
    let tmp = parent.join(format!("{name}.tmp.{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(header)?;
        f.write_all(data)?;
        f.flush()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PS: u64 = 4096;

    fn open(dirs: &[(&Path, u64)], memory: u64) -> PageStore {
        let specs = dirs
            .iter()
            .map(|(p, c)| DirSpec {
                path: p.to_path_buf(),
                capacity: *c,
            })
            .collect();
        PageStore::open(specs, memory, PS, Arc::new(Metrics::new())).unwrap()
    }

    fn open_opts(dirs: &[(&Path, u64)], memory: u64, options: StoreOptions) -> PageStore {
        let specs = dirs
            .iter()
            .map(|(p, c)| DirSpec {
                path: p.to_path_buf(),
                capacity: *c,
            })
            .collect();
        PageStore::open_with(specs, memory, PS, Arc::new(Metrics::new()), options).unwrap()
    }

    fn lru() -> StoreOptions {
        StoreOptions {
            policy: PolicyKind::Lru,
            ..Default::default()
        }
    }

    fn data(seed: u8, len: usize) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn disk_bytes(root: &Path) -> u64 {
        let mut total = 0;
        for sub in std::fs::read_dir(root.join("pages")).unwrap().flatten() {
            for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
                total += f.metadata().unwrap().len();
            }
        }
        total
    }

    fn page_files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(root.join("pages")).unwrap().flatten() {
            for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
        out
    }

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

    #[test]
    fn restart_finds_pages_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<_> = (0..5).map(|i| PageKey::new("s3://b/f", "e", i)).collect();
        {
            let store = open(&[(dir.path(), 1 << 20)], 0);
            for (i, k) in keys.iter().enumerate() {
                store.put(k, &data(i as u8, 4096)).unwrap();
            }
        }
        // Leftovers of a crash: a temporary file and garbage.
        let sub = dir.path().join("pages").join("ab");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("ab00.tmp.123"), b"half").unwrap();
        std::fs::write(sub.join(format!("{:032x}", 0xab_u128 << 120)), b"garbage").unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 0);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(store.get(k).unwrap(), data(i as u8, 4096));
        }
        assert_eq!(store.urls(), vec!["s3://b/f".to_string()]);
        assert_eq!(
            Metrics::get(&store.metrics.corrupt_pages),
            1,
            "the garbage file"
        );
        assert!(
            !sub.join("ab00.tmp.123").exists(),
            "temporary files are removed"
        );
        assert_eq!(store.gauges().pages, 5);
        assert_eq!(store.gauges().used_bytes, disk_bytes(dir.path()));
        // A smaller capacity on restart evicts down to it.
        drop(store);
        let one_page = (header_len("s3://b/f", "e") + 4096) as u64;
        let store = open(&[(dir.path(), 2 * one_page)], 0);
        assert_eq!(store.gauges().pages, 2);
        assert_eq!(disk_bytes(dir.path()), 2 * one_page);
    }

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
    fn a_page_read_long_ago_counts_as_recent_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let one = (header_len("u", "v") + 1000) as u64;
        let k = |i| PageKey::new("u", "v", i);
        {
            let store = open_opts(&[(dir.path(), 2 * one)], 0, lru());
            store.put(&k(0), &data(0, 1000)).unwrap();
            store.put(&k(1), &data(1, 1000)).unwrap();
            // Both pages look old; then page 0 is read.
            let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
            for f in page_files(dir.path()) {
                let file = std::fs::File::options().write(true).open(&f).unwrap();
                let age = if f.ends_with(hex(store.hash(&k(0)))) {
                    2
                } else {
                    1
                };
                file.set_modified(old - std::time::Duration::from_secs(age))
                    .unwrap();
            }
            assert!(store.get(&k(0)).is_some());
        }
        let store = open_opts(&[(dir.path(), 2 * one)], 0, lru());
        store.put(&k(2), &data(2, 1000)).unwrap();
        assert!(store.contains(&k(0)), "read before the restart: kept");
        assert!(!store.contains(&k(1)), "not read: evicted first");
    }

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
            let (rules, out) = store.unpin("s3://b").unwrap();
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
