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
//!   least-recently-used pages of that directory first. A page goes to the
//!   directory with the most free space.
//! - **Memory tier.** A bounded LRU of `Bytes` for hot pages; a page enters
//!   it only after verification (or straight from the UFS).
//! - **Restart.** On open, every directory is scanned: headers (not data)
//!   are read to rebuild the index and used bytes, LRU order follows file
//!   mtimes (a read refreshes an mtime older than a minute), temporary and
//!   unreadable files are deleted. The data checksum
//!   is still verified when a page is read.
//!
//! All methods are blocking (file I/O); async callers run them with
//! `tokio::task::spawn_blocking`.

use crate::error::{Result, WorkerError};
use crate::metrics::{Metrics, StoreGauges};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
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

#[derive(Debug, Clone)]
struct Entry {
    dir: usize,
    file_len: u64,
    url: Arc<str>,
    version: Arc<str>,
    tick: u64,
    pending: bool,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<u128, Entry>,
    lru: BTreeMap<u64, u128>,
    used: Vec<u64>,
    by_url: HashMap<Arc<str>, HashSet<u128>>,
    tick: u64,
}

impl Index {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn insert(&mut self, hash: u128, mut entry: Entry) {
        let tick = self.next_tick();
        entry.tick = tick;
        self.lru.insert(tick, hash);
        self.used[entry.dir] += entry.file_len;
        self.by_url
            .entry(entry.url.clone())
            .or_default()
            .insert(hash);
        self.entries.insert(hash, entry);
    }

    fn touch(&mut self, hash: u128) {
        let tick = self.next_tick();
        if let Some(e) = self.entries.get_mut(&hash) {
            self.lru.remove(&e.tick);
            e.tick = tick;
            self.lru.insert(tick, hash);
        }
    }

    fn remove(&mut self, hash: u128) -> Option<Entry> {
        let e = self.entries.remove(&hash)?;
        self.lru.remove(&e.tick);
        self.used[e.dir] -= e.file_len;
        if let Some(set) = self.by_url.get_mut(&e.url) {
            set.remove(&hash);
            if set.is_empty() {
                self.by_url.remove(&e.url);
            }
        }
        Some(e)
    }
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
    /// pages left by an earlier run.
    pub fn open(
        dirs: Vec<DirSpec>,
        memory_capacity: u64,
        page_size: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        if dirs.is_empty() {
            return Err(WorkerError::Config("no cache directory".into()));
        }
        let store = PageStore {
            page_size,
            index: Mutex::new(Index {
                used: vec![0; dirs.len()],
                ..Default::default()
            }),
            memory: Mutex::new(MemoryTier {
                capacity: memory_capacity,
                ..Default::default()
            }),
            dirs,
            metrics,
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
        let mut found: Vec<(std::time::SystemTime, u128, Entry)> = Vec::new();
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
                    Ok((hash, mtime, url, version, file_len)) => found.push((
                        mtime,
                        hash,
                        Entry {
                            dir,
                            file_len,
                            url: url.into(),
                            version: version.into(),
                            tick: 0,
                            pending: false,
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
        for (_, hash, entry) in found {
            if idx.entries.contains_key(&hash) {
                // The same page in two directories (capacities changed): keep one.
                let _ = std::fs::remove_file(self.page_path(dir, hash));
                continue;
            }
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
    ) -> std::result::Result<(u128, std::time::SystemTime, String, String, u64), String> {
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
        Ok((hash, mtime, h.url, h.version, file_len))
    }

    /// Evict LRU pages of `dir` until `extra` more bytes fit; returns how
    /// many pages were evicted. Deletes their files.
    fn evict_locked(&self, idx: &mut Index, dir: usize, extra: u64) -> usize {
        let capacity = self.dirs[dir].capacity;
        let mut evicted = 0;
        while idx.used[dir] + extra > capacity {
            let victim = idx.lru.values().copied().find(|h| {
                idx.entries
                    .get(h)
                    .is_some_and(|e| e.dir == dir && !e.pending)
            });
            let Some(hash) = victim else { break };
            idx.remove(hash);
            lock(&self.memory).remove(hash);
            let _ = std::fs::remove_file(self.page_path(dir, hash));
            evicted += 1;
        }
        Metrics::add(&self.metrics.evictions, evicted as u64);
        evicted
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
    /// there, or larger than any directory). The page also enters the
    /// memory tier.
    pub fn put(&self, key: &PageKey, data: &Bytes) -> Result<bool> {
        let hash = self.hash(key);
        if self.memory_enabled() {
            // A copy: `data` is often a slice of a whole multi-page UFS
            // read, which a cached slice would keep alive in full.
            lock(&self.memory).insert(hash, Bytes::copy_from_slice(data));
        }
        let header = encode_header(self.page_size, key, data);
        let file_len = (header.len() + data.len()) as u64;
        let dir = {
            let mut idx = lock(&self.index);
            if idx.entries.contains_key(&hash) {
                return Ok(false);
            }
            let dir = (0..self.dirs.len())
                .max_by_key(|&d| self.dirs[d].capacity.saturating_sub(idx.used[d]))
                .unwrap_or(0);
            if file_len > self.dirs[dir].capacity {
                return Ok(false);
            }
            self.evict_locked(&mut idx, dir, file_len);
            if idx.used[dir] + file_len > self.dirs[dir].capacity {
                // Everything left is being written right now.
                return Ok(false);
            }
            idx.insert(
                hash,
                Entry {
                    dir,
                    file_len,
                    url: key.url.as_str().into(),
                    version: key.version.as_str().into(),
                    tick: 0,
                    pending: true,
                },
            );
            dir
        };
        let path = self.page_path(dir, hash);
        let written = write_atomically(&path, &header, data);
        let mut idx = lock(&self.index);
        match written {
            Ok(()) => {
                if let Some(e) = idx.entries.get_mut(&hash) {
                    e.pending = false;
                } else {
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
    /// is not `keep_version`. Returns how many were deleted.
    pub fn remove_url(&self, url: &str, keep_version: Option<&str>) -> usize {
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
        let (used, pages) = {
            let idx = lock(&self.index);
            (idx.used.iter().sum(), idx.entries.len() as u64)
        };
        let mem = lock(&self.memory);
        StoreGauges {
            used_bytes: used,
            capacity_bytes: self.dirs.iter().map(|d| d.capacity).sum(),
            pages,
            memory_used_bytes: mem.used,
            memory_capacity_bytes: mem.capacity,
            memory_pages: mem.map.len() as u64,
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
        let store = open(&[(dir.path(), 3 * one)], 0);
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
            let store = open(&[(dir.path(), 2 * one)], 0);
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
        let store = open(&[(dir.path(), 2 * one)], 0);
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
