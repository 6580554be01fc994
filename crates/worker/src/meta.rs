//! Metadata cache and the `path_id → URL` map.
//!
//! File infos and directory listings are kept for `metadata_ttl` (zero
//! keeps nothing: every lookup asks the UFS). A listing also caches the
//! infos of the files it names, so the usual "list, then read every file"
//! pattern costs one UFS request for metadata instead of one per file.
//!
//! The `path_id → URL` map lets page requests omit `ufsFullPath`. It learns
//! every URL the worker answers for; after a restart, the first request
//! for an id it does not know fills it from the URLs of the pages on disk
//! (see [`crate::cache::ReadThrough::url_of_path_id`]), so it survives a
//! restart for cached files.
//!
//! The last version seen of each URL is also kept past the TTL (and at TTL
//! zero), in a third map. It is never served as metadata: it only tells a
//! read whose metadata is missing whether its pages are probably cached
//! (then a HEAD revalidates them) or the file is cold (then one GET brings
//! metadata and bytes together, see [`crate::cache`]).
//!
//! # Memory bound
//!
//! The four maps (infos, listings, seen versions, path ids) together stay
//! within `metadata_capacity` bytes, split in fixed shares: infos 1/2,
//! listings 1/4, seen versions 1/8, path ids the rest (1/8). Each entry is
//! charged an estimate of its heap bytes (see `Bounded::OVERHEAD`): the
//! length of its key, the length of every string of its value plus
//! [`ALLOC`] per allocated string (a listing also pays its `Vec` of
//! [`FileInfo`]s), and a fixed per-entry overhead for the hash map slot,
//! the boxed entry, the FIFO index slot and the shared key's allocation.
//! Against the resident memory of a process filling the maps, the estimate
//! came within 8% either way (whatever the fill of the hash tables: the
//! entries are boxed so that a half empty table wastes pointers only).
//!
//! When an insert takes a map over its share, the expired entries go first
//! (infos and listings; entries are stamped when inserted, so the expired
//! ones are the oldest), then the oldest inserted entries until the map is
//! within 90% of its share: a map is never cleared at once, and the most
//! recent entries stay. Re-inserting a key (a new info, a version seen
//! again, a path id remembered again) makes it the newest. An entry larger
//! than its whole share is not cached (and the older value of its key is
//! forgotten). With a capacity of 0 nothing is cached: every lookup asks
//! the UFS, every read without metadata is treated as cold, and page
//! requests must carry `ufsFullPath`.

use crate::metrics::MetaGauges;
use crate::ufs::ObjectVersion;
use alluxiofs_core::info::FileInfo;
use alluxiofs_core::path::{is_under, path_id};
use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes charged per heap allocation on top of its length: the
/// allocator's header and rounding (glibc malloc: 8 bytes of header, sizes
/// rounded up to 16).
pub const ALLOC: usize = 16;

/// Bytes of one slot of the FIFO index (`BTreeMap<u64, Arc<str>>`): 24
/// bytes of key and value in nodes about 2/3 full, plus the nodes' own
/// fields.
const ORDER_SLOT: usize = 40;

/// Heap bytes charged for a string: nothing when empty (no allocation).
fn heap(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        s.len() + ALLOC
    }
}

/// Heap bytes of the strings of a file info.
fn file_heap(f: &FileInfo) -> usize {
    heap(&f.name) + heap(&f.path) + heap(&f.ufs_path) + heap(&f.human_size) + heap(&f.content_hash)
}

/// Heap bytes of a cached info's value (the key is charged apart).
fn info_heap(c: &CachedInfo) -> usize {
    file_heap(&c.info)
        + c.version.as_ref().map_or(0, |v| {
            heap(&v.url) + heap(&v.version) + v.e_tag.as_deref().map_or(0, heap)
        })
}

/// Heap bytes of a listing's value.
fn list_heap(children: &[FileInfo]) -> usize {
    let vec = if children.is_empty() {
        0
    } else {
        ALLOC + std::mem::size_of_val(children)
    };
    vec + children.iter().map(file_heap).sum::<usize>()
}

/// A cached file info with the version needed to read the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedInfo {
    /// What `/v1/info` answers.
    pub info: FileInfo,
    /// The readable version (`None` for directories).
    pub version: Option<ObjectVersion>,
}

/// One entry of a [`Bounded`] map.
#[derive(Debug)]
struct Entry<V> {
    /// Its insertion number, its key in the FIFO index.
    seq: u64,
    /// The bytes it is charged.
    cost: usize,
    value: V,
}

/// A map bounded by the estimated bytes of its entries, evicting the
/// oldest inserted first. The key string is allocated once, shared by the
/// map and the FIFO index.
#[derive(Debug)]
struct Bounded<V> {
    map: HashMap<Arc<str>, Box<Entry<V>>>,
    /// Insertion number → key, oldest first.
    order: BTreeMap<u64, Arc<str>>,
    next: u64,
    /// Bytes charged for the entries now held.
    bytes: usize,
    /// Most bytes the entries may be charged.
    share: usize,
}

impl<V> Bounded<V> {
    /// Fixed bytes charged per entry besides its key and value strings:
    /// its hash map slot (the key's and the box's pointers, 24 bytes) twice
    /// over (hashbrown keeps 1/8 of its buckets free and doubles its table
    /// when full, so a table is 44% to 88% full) plus its control byte,
    /// the boxed [`Entry`] with its allocation header ([`ALLOC`]), one FIFO
    /// index slot, and the key's allocation header and reference counts.
    /// Boxing the entry keeps the slack of a half empty table to pointers.
    const OVERHEAD: usize = 2 * (size_of::<(Arc<str>, Box<Entry<V>>)>() + 1)
        + ALLOC
        + size_of::<Entry<V>>()
        + ORDER_SLOT
        + ALLOC
        + 2 * size_of::<usize>();

    fn new(share: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            bytes: 0,
            share,
        }
    }

    /// What an entry of key `key` whose value owns `value_heap` heap bytes
    /// is charged.
    fn cost(key: &str, value_heap: usize) -> usize {
        key.len() + value_heap + Self::OVERHEAD
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|e| &e.value)
    }

    fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Insert (or replace) `key` as the newest entry, its value owning
    /// `value_heap` heap bytes; then, over the share, drop the oldest
    /// entries `expired` says are expired and evict down to 90% of the
    /// share. An entry larger than the share is not cached, and the older
    /// value of `key` is dropped.
    fn insert(&mut self, key: &str, value: V, value_heap: usize, expired: impl Fn(&V) -> bool) {
        let cost = Self::cost(key, value_heap);
        if cost > self.share {
            self.remove(key);
            return;
        }
        let key: Arc<str> = match self.map.remove_entry(key) {
            Some((k, old)) => {
                self.order.remove(&old.seq);
                self.bytes -= old.cost;
                k
            }
            None => Arc::from(key),
        };
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key.clone());
        self.map.insert(key, Box::new(Entry { seq, cost, value }));
        self.bytes += cost;
        self.make_room(expired);
    }

    /// Make `key`, when held, the newest entry.
    fn touch(&mut self, key: &str) {
        if let Some(e) = self.map.get_mut(key) {
            if let Some(k) = self.order.remove(&e.seq) {
                e.seq = self.next;
                self.next += 1;
                self.order.insert(e.seq, k);
            }
        }
    }

    /// Over the share: the expired entries, then the oldest ones until 90%
    /// of the share, the newest entry staying.
    fn make_room(&mut self, expired: impl Fn(&V) -> bool) {
        if self.bytes <= self.share {
            return;
        }
        // Entries are stamped in insertion order: the expired are the oldest.
        while let Some((_, k)) = self.order.first_key_value() {
            if !self.map.get(&**k).is_some_and(|e| expired(&e.value)) {
                break;
            }
            self.pop_oldest();
        }
        let target = self.share - self.share / 10;
        while self.bytes > target && self.map.len() > 1 {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, k)) = self.order.pop_first() {
            if let Some(e) = self.map.remove(&*k) {
                self.bytes -= e.cost;
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.seq);
            self.bytes -= e.cost;
        }
    }

    /// Keep only the entries whose key `keep` accepts.
    fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let Bounded {
            map, order, bytes, ..
        } = self;
        map.retain(|k, e| {
            let kept = keep(k);
            if !kept {
                order.remove(&e.seq);
                *bytes -= e.cost;
            }
            kept
        });
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The shares of `capacity` bytes: (infos, listings, seen, ids).
fn shares(capacity: u64) -> (usize, usize, usize, usize) {
    let c = usize::try_from(capacity).unwrap_or(usize::MAX);
    let (infos, lists, seen) = (c / 2, c / 4, c / 8);
    (infos, lists, seen, c - infos - lists - seen)
}

#[derive(Debug)]
struct Maps {
    infos: Bounded<(Instant, CachedInfo)>,
    lists: Bounded<(Instant, Vec<FileInfo>)>,
    /// URL -> last version seen (`None`: pages found on disk at start, of
    /// a version not known yet). Kept past the TTL.
    seen: Bounded<Option<String>>,
}

impl Maps {
    fn note_seen(&mut self, url: &str, version: Option<String>) {
        let heap = version.as_deref().map_or(0, heap);
        self.seen.insert(url, version, heap, |_| false);
    }
}

/// What the worker saw of a URL before, whatever the TTL: a hint only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Never looked up (since the start, or since it was invalidated or
    /// evicted).
    Never,
    /// Pages of it were on disk at start; their version is not known yet.
    Pages,
    /// This version was seen last.
    Version(String),
}

/// Metadata cache of one worker.
#[derive(Debug)]
pub struct MetaCache {
    ttl: Duration,
    capacity: u64,
    maps: Mutex<Maps>,
    ids: Mutex<Bounded<String>>,
}

impl MetaCache {
    /// A cache keeping entries for `ttl`, within about `capacity_bytes`
    /// of memory (see the module doc for how entries are charged).
    pub fn new(ttl: Duration, capacity_bytes: u64) -> Self {
        let (infos, lists, seen, ids) = shares(capacity_bytes);
        MetaCache {
            ttl,
            capacity: capacity_bytes,
            maps: Mutex::new(Maps {
                infos: Bounded::new(infos),
                lists: Bounded::new(lists),
                seen: Bounded::new(seen),
            }),
            ids: Mutex::new(Bounded::new(ids)),
        }
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Bounded<String>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached info of `url`, when fresh.
    pub fn info(&self, url: &str) -> Option<CachedInfo> {
        if self.ttl.is_zero() {
            return None;
        }
        let maps = self.maps();
        let (t, c) = maps.infos.get(url)?;
        (t.elapsed() < self.ttl).then(|| c.clone())
    }

    /// The info of `url` when it expired less than `window` ago (the last
    /// verified version, to serve while the UFS is unreachable); `None`
    /// when it is fresh (ask [`Self::info`]), older, or never cached.
    pub fn stale_info(&self, url: &str, window: Duration) -> Option<CachedInfo> {
        if self.ttl.is_zero() || window.is_zero() {
            return None;
        }
        let maps = self.maps();
        let (t, c) = maps.infos.get(url)?;
        (t.elapsed() < self.ttl.saturating_add(window)).then(|| c.clone())
    }

    /// The listing of `url` when it expired less than `window` ago (see
    /// [`Self::stale_info`]).
    pub fn stale_list(&self, url: &str, window: Duration) -> Option<Vec<FileInfo>> {
        if self.ttl.is_zero() || window.is_zero() {
            return None;
        }
        let maps = self.maps();
        let (t, l) = maps.lists.get(url)?;
        (t.elapsed() < self.ttl.saturating_add(window)).then(|| l.clone())
    }

    /// Remember the info of `url`.
    pub fn put_info(&self, url: &str, cached: CachedInfo) {
        self.remember(url);
        let mut maps = self.maps();
        match &cached.version {
            Some(v) => maps.note_seen(url, Some(v.version.clone())),
            None => maps.seen.remove(url),
        }
        if self.ttl.is_zero() {
            return;
        }
        let ttl = self.ttl;
        let heap = info_heap(&cached);
        maps.infos
            .insert(url, (Instant::now(), cached), heap, |(t, _)| {
                t.elapsed() >= ttl
            });
    }

    /// The cached listing of `url`, when fresh.
    pub fn list(&self, url: &str) -> Option<Vec<FileInfo>> {
        if self.ttl.is_zero() {
            return None;
        }
        let maps = self.maps();
        let (t, l) = maps.lists.get(url)?;
        (t.elapsed() < self.ttl).then(|| l.clone())
    }

    /// Remember the listing of `url` and the infos of the files in it.
    pub fn put_list(&self, url: &str, children: &[FileInfo]) {
        for c in children {
            self.remember(&c.ufs_path);
        }
        let mut maps = self.maps();
        for c in children.iter().filter(|c| !c.is_dir()) {
            let version = ObjectVersion::from_info(c).version;
            maps.note_seen(&c.ufs_path, Some(version));
        }
        if self.ttl.is_zero() {
            return;
        }
        let ttl = self.ttl;
        let now = Instant::now();
        for c in children.iter().filter(|c| !c.is_dir()) {
            let cached = CachedInfo {
                info: c.clone(),
                version: Some(ObjectVersion::from_info(c)),
            };
            let heap = info_heap(&cached);
            maps.infos
                .insert(&c.ufs_path, (now, cached), heap, |(t, _)| {
                    t.elapsed() >= ttl
                });
        }
        let heap = list_heap(children);
        maps.lists
            .insert(url, (now, children.to_vec()), heap, |(t, _)| {
                t.elapsed() >= ttl
            });
    }

    /// Forget the metadata of `url` (and, with `recursive`, of everything
    /// under it), and the listing of its parent.
    pub fn invalidate(&self, url: &str, recursive: bool) -> usize {
        let mut maps = self.maps();
        let before = maps.infos.len() + maps.lists.len();
        let hit = |k: &str| k == url || (recursive && is_under(k, url));
        maps.infos.retain(|k| !hit(k));
        maps.lists.retain(|k| !hit(k));
        maps.seen.retain(|k| !hit(k));
        if let Some((parent, _)) = url.rsplit_once('/') {
            maps.lists.remove(parent);
        }
        before - (maps.infos.len() + maps.lists.len())
    }

    /// What was seen of `url` before, expired or not (a hint, never
    /// metadata to serve).
    pub fn seen(&self, url: &str) -> Seen {
        match self.maps().seen.get(url) {
            None => Seen::Never,
            Some(None) => Seen::Pages,
            Some(Some(v)) => Seen::Version(v.clone()),
        }
    }

    /// Record that pages of `url` were found on disk (at start), version
    /// unknown. A version seen already is kept.
    pub fn note_pages(&self, url: &str) {
        let mut maps = self.maps();
        if !maps.seen.contains(url) {
            maps.note_seen(url, None);
        }
    }

    /// Record the `path_id` of `url`; returns it.
    pub fn remember(&self, url: &str) -> String {
        let id = path_id(url);
        self.remember_as(id.clone(), url);
        id
    }

    /// Record `id`, the `path_id` the caller computed already for `url`
    /// (the digest is not computed twice per request). A known id becomes
    /// the newest entry.
    pub fn remember_as(&self, id: String, url: &str) {
        let mut ids = self.ids();
        if ids.contains(&id) {
            ids.touch(&id);
        } else {
            ids.insert(&id, url.to_string(), heap(url), |_| false);
        }
    }

    /// The URL of a known `path_id`.
    pub fn url_of(&self, id: &str) -> Option<String> {
        self.ids().get(&id.to_ascii_lowercase()).cloned()
    }

    /// Bytes charged for the entries held now, all maps (at most the
    /// capacity).
    pub fn used_bytes(&self) -> u64 {
        let ids = self.ids().bytes;
        let maps = self.maps();
        (maps.infos.bytes + maps.lists.bytes + maps.seen.bytes + ids) as u64
    }

    /// Entries held now, all maps.
    pub fn entries(&self) -> u64 {
        let ids = self.ids().len();
        let maps = self.maps();
        (maps.infos.len() + maps.lists.len() + maps.seen.len() + ids) as u64
    }

    /// The gauges of `/metrics`.
    pub fn gauges(&self) -> MetaGauges {
        MetaGauges {
            used_bytes: self.used_bytes(),
            entries: self.entries(),
            capacity_bytes: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alluxiofs_core::info::FileType;

    const MIB: u64 = 1 << 20;

    fn file(url: &str) -> FileInfo {
        FileInfo {
            kind: FileType::File,
            name: "x".into(),
            path: "/x".into(),
            ufs_path: url.into(),
            mtime_ms: 1,
            length: 2,
            human_size: "2B".into(),
            content_hash: "\"e\"".into(),
            in_cache_percent: 0,
        }
    }

    #[test]
    fn ttl_and_invalidation() {
        let m = MetaCache::new(Duration::from_secs(60), MIB);
        m.put_list("s3://b/d", &[file("s3://b/d/x"), file("s3://b/d/y")]);
        let cached = m.info("s3://b/d/x").unwrap();
        assert_eq!(cached.version.unwrap().e_tag.as_deref(), Some("\"e\""));
        assert_eq!(m.list("s3://b/d").unwrap().len(), 2);
        m.invalidate("s3://b/d/x", false);
        assert!(m.info("s3://b/d/x").is_none());
        assert!(m.list("s3://b/d").is_none(), "parent listing forgotten too");
        assert!(m.info("s3://b/d/y").is_some());
        m.invalidate("s3://b", true);
        assert!(m.info("s3://b/d/y").is_none());
        assert_eq!(
            m.url_of(&path_id("s3://b/d/y")).as_deref(),
            Some("s3://b/d/y")
        );
    }

    #[test]
    fn zero_ttl_keeps_nothing() {
        let m = MetaCache::new(Duration::ZERO, MIB);
        m.put_list("s3://b/d", &[file("s3://b/d/x")]);
        assert!(m.info("s3://b/d/x").is_none());
        assert!(m.list("s3://b/d").is_none());
        assert!(m.url_of(&path_id("s3://b/d/x")).is_some());
    }

    #[test]
    fn seen_outlives_the_ttl() {
        let m = MetaCache::new(Duration::ZERO, MIB);
        assert_eq!(m.seen("s3://b/d/x"), Seen::Never);
        m.note_pages("s3://b/d/x");
        assert_eq!(m.seen("s3://b/d/x"), Seen::Pages);
        m.put_list("s3://b/d", &[file("s3://b/d/x")]);
        assert_eq!(m.seen("s3://b/d/x"), Seen::Version("\"e\"".into()));
        m.note_pages("s3://b/d/x");
        assert_eq!(m.seen("s3://b/d/x"), Seen::Version("\"e\"".into()));
        assert!(
            m.info("s3://b/d/x").is_none(),
            "still nothing served at TTL 0"
        );
        m.put_info(
            "s3://b/d/x",
            CachedInfo {
                info: file("s3://b/d/x"),
                version: None,
            },
        );
        assert_eq!(m.seen("s3://b/d/x"), Seen::Never, "a directory now");
        m.put_list("s3://b/d", &[file("s3://b/d/x")]);
        m.invalidate("s3://b", true);
        assert_eq!(m.seen("s3://b/d/x"), Seen::Never, "invalidation forgets it");
    }

    #[test]
    fn expires() {
        let m = MetaCache::new(Duration::from_millis(30), MIB);
        m.put_info(
            "s3://b/x",
            CachedInfo {
                info: file("s3://b/x"),
                version: None,
            },
        );
        assert!(m.info("s3://b/x").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(m.info("s3://b/x").is_none());
    }
    /// The info of a file as a lookup caches it.
    fn cached(url: &str) -> CachedInfo {
        let info = file(url);
        CachedInfo {
            version: Some(ObjectVersion::from_info(&info)),
            info,
        }
    }

    /// What an info entry of `url` is charged.
    fn info_cost(url: &str) -> usize {
        Bounded::<(Instant, CachedInfo)>::cost(url, info_heap(&cached(url)))
    }

    /// The accounting of one map holds: the bytes are the sum of the
    /// entries' costs, the FIFO index names each entry once, and the map
    /// is within its share.
    fn check<V>(b: &Bounded<V>) {
        assert_eq!(b.bytes, b.map.values().map(|e| e.cost).sum::<usize>());
        assert_eq!(b.order.len(), b.map.len());
        for (seq, k) in &b.order {
            assert_eq!(b.map[&**k].seq, *seq);
        }
        assert!(b.bytes <= b.share, "{} bytes, share {}", b.bytes, b.share);
    }

    fn check_all(m: &MetaCache) {
        check(&m.ids());
        let maps = m.maps();
        check(&maps.infos);
        check(&maps.lists);
        check(&maps.seen);
    }

    #[test]
    fn bytes_stay_within_the_budget() {
        let cap = 256 << 10;
        let m = MetaCache::new(Duration::from_secs(60), cap);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut peak = 0;
        let mut last = Vec::new();
        for i in 0..100_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let url = format!("s3://b/{i}/{}", "k".repeat((x % 400) as usize));
            match i % 4 {
                0 => m.put_info(&url, cached(&url)),
                1 => m.put_list(
                    &url,
                    &[file(&format!("{url}/a")), file(&format!("{url}/b"))],
                ),
                2 => m.note_pages(&url),
                _ => {
                    m.remember(&url);
                }
            }
            let used = m.used_bytes();
            assert!(used <= cap, "insert {i}: {used} bytes over {cap}");
            peak = peak.max(used);
            if i % 5_000 == 0 {
                check_all(&m);
            }
            if i >= 99_996 {
                last.push(url);
            }
        }
        check_all(&m);
        assert!(peak > cap * 3 / 4, "the budget was used: peak {peak}");
        assert!(m.used_bytes() > cap / 2, "no cliff: {}", m.used_bytes());
        assert!(m.info(&last[0]).is_some(), "the newest info is kept");
        assert!(m.list(&last[1]).is_some(), "the newest listing is kept");
        assert_eq!(m.seen(&last[2]), Seen::Pages, "the newest seen is kept");
        let id = path_id(&last[3]);
        assert_eq!(m.url_of(&id).as_deref(), Some(last[3].as_str()));
        let g = m.gauges();
        assert_eq!((g.used_bytes, g.capacity_bytes), (m.used_bytes(), cap));
        assert_eq!(g.entries, m.entries());
    }

    #[test]
    fn eviction_is_oldest_first_and_no_cliff() {
        let m = MetaCache::new(Duration::from_secs(60), 64 << 10);
        let urls: Vec<String> = (0..2_000).map(|i| format!("s3://b/f{i:05}")).collect();
        for u in &urls {
            m.put_info(u, cached(u));
        }
        let held: Vec<bool> = urls.iter().map(|u| m.info(u).is_some()).collect();
        let n = held.iter().filter(|h| **h).count();
        let share = m.maps().infos.share;
        let cost = info_cost(&urls[0]);
        assert!(n > 10 && n < urls.len(), "{n} held");
        assert!(n * cost >= share * 8 / 10, "evicted to ~90%, not cleared");
        let cut = urls.len() - n;
        assert!(held[..cut].iter().all(|h| !h), "the oldest went");
        assert!(held[cut..].iter().all(|h| *h), "the newest stayed");
        // Inserted again, the oldest held entry becomes the newest.
        m.put_info(&urls[cut], cached(&urls[cut]));
        for i in 0..n / 2 {
            let u = format!("s3://b/g{i:05}");
            m.put_info(&u, cached(&u));
        }
        assert!(m.info(&urls[cut]).is_some(), "re-inserted: kept");
        assert!(m.info(&urls[cut + 1]).is_none(), "next oldest: evicted");
        check_all(&m);

        // The path ids: remembering a known id again keeps it.
        for (i, u) in urls.iter().enumerate() {
            m.remember(u);
            if i % 10 == 0 {
                m.remember(&urls[0]);
            }
        }
        assert_eq!(m.url_of(&path_id(&urls[0])).as_deref(), Some(&*urls[0]));
        assert!(m.url_of(&path_id(&urls[1])).is_none(), "evicted");
        assert!(m.url_of(&path_id(urls.last().unwrap())).is_some());
        check_all(&m);
    }

    #[test]
    fn expired_entries_go_first() {
        let ttl = Duration::from_millis(100);
        let m = MetaCache::new(ttl, 64 << 10);
        let share = m.maps().infos.share;
        let url = |p: &str, i: usize| format!("s3://b/{p}{i:05}");
        let cost = info_cost(&url("o", 0));
        let old = share / cost / 2;
        for i in 0..old {
            m.put_info(&url("o", i), cached(&url("o", i)));
        }
        std::thread::sleep(ttl + Duration::from_millis(50));
        // Fresh entries up to the first insert over the share: FIFO alone
        // would evict the old ones only down to 90%; expired, all go.
        let fresh = share / cost - old + 1;
        for i in 0..fresh {
            m.put_info(&url("n", i), cached(&url("n", i)));
        }
        assert_eq!(m.maps().infos.len(), fresh, "only the fresh entries left");
        assert!((0..fresh).all(|i| m.info(&url("n", i)).is_some()));
        check_all(&m);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let m = MetaCache::new(Duration::from_secs(60), 0);
        m.put_info("s3://b/x", cached("s3://b/x"));
        m.put_list("s3://b/d", &[file("s3://b/d/y")]);
        m.note_pages("s3://b/z");
        let id = m.remember("s3://b/x");
        assert!(m.info("s3://b/x").is_none());
        assert!(m.info("s3://b/d/y").is_none());
        assert!(m.list("s3://b/d").is_none());
        assert_eq!(m.seen("s3://b/x"), Seen::Never);
        assert_eq!(m.seen("s3://b/z"), Seen::Never);
        assert!(m.url_of(&id).is_none());
        assert_eq!((m.used_bytes(), m.entries()), (0, 0));
        assert_eq!(m.invalidate("s3://b", true), 0);
    }

    #[test]
    fn an_entry_larger_than_its_share_is_not_cached() {
        // Listings get 1/4 of 16 KiB: 4 KiB, less than 40 infos.
        let m = MetaCache::new(Duration::from_secs(60), 16 << 10);
        m.put_list("s3://b/d", &[file("s3://b/d/x")]);
        assert!(m.list("s3://b/d").is_some());
        let many: Vec<FileInfo> = (0..40).map(|i| file(&format!("s3://b/d/{i}"))).collect();
        m.put_list("s3://b/d", &many);
        assert!(
            m.list("s3://b/d").is_none(),
            "too big, and the old one is gone"
        );
        assert!(m.info("s3://b/d/39").is_some(), "its infos still fit");
        check_all(&m);
    }

    #[test]
    fn invalidation_releases_the_bytes() {
        let m = MetaCache::new(Duration::from_secs(60), MIB);
        for d in 0..20 {
            let dir = format!("s3://b/{d}");
            let files: Vec<FileInfo> = (0..10).map(|i| file(&format!("{dir}/{i}"))).collect();
            m.put_list(&dir, &files);
        }
        let ids = m.ids().bytes as u64;
        assert!(m.used_bytes() > ids);
        m.invalidate("s3://b/3/4", false);
        check_all(&m);
        assert_eq!(m.invalidate("s3://b", true), 19 + 199);
        check_all(&m);
        assert_eq!(m.used_bytes(), ids, "only the path ids are left");
    }
}
