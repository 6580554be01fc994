//! Writing the index out: flushes, checkpoints, the persister thread, and
//! the reads of the names file ([`super::journal`]).
//!
//! - **Write** (after every put and removal, [`PageStore::write_log`]):
//!   under the files lock, take the buffered journal and names records
//!   from the index (a moment under the index lock) and `write(2)` them,
//!   names first, unsynced. A killed process loses none of them.
//! - **Flush** (every persistence interval, at shutdown, and when a write
//!   waits for the bytes of compacted segments): under the flush lock, take
//!   the segments written since the last flush and those compaction
//!   retired, `fdatasync` the segments, write what is buffered, sync names
//!   then journal; then delete the retired segments (their pages' new
//!   places are now durable). A record synced before its segment is
//!   possible (it was written early): after a power loss its bytes fail
//!   their check and it is a miss.
//! - **Checkpoint**: when the journal has more than twice as many records
//!   as pages plus a slack ([`checkpoint_slack`]: 1/64 of the directory's
//!   capacity in records, at most a million), it is rewritten from the
//!   index (one `PUT` per page, built under the index lock: 40 bytes per
//!   page of memory for a moment), and the names file keeps only URLs with
//!   pages.

use super::index::{Index, Slot};
use super::journal::{self, for_each_name_chunk};
use super::{keep, lock, PageStore};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Dead journal records tolerated beyond the live ones before a
/// checkpoint, at most.
const CHECKPOINT_SLACK: u64 = 1_000_000;
/// ... and at least.
const MIN_CHECKPOINT_SLACK: u64 = 1024;

/// Dead journal records tolerated in a directory of `capacity` bytes: as
/// many as take 1/64 of the capacity, within [`MIN_CHECKPOINT_SLACK`] and
/// [`CHECKPOINT_SLACK`]. The journal sits in the cache directory beside
/// the pages, outside their capacity: a fixed million records (40 MB)
/// let it grow far past what a small cache holds (a 4 MiB cache's index
/// reached 389 KB in a 10 s fill, `tests/test_disk_full.py`).
pub(super) fn checkpoint_slack(capacity: u64) -> u64 {
    (capacity / 64 / journal::RECORD as u64).clamp(MIN_CHECKPOINT_SLACK, CHECKPOINT_SLACK)
}

impl PageStore {
    /// Write the records buffered in the index to the journal files,
    /// without syncing: called after every change, so that a killed
    /// process loses nothing of the index (a crashed machine loses what
    /// the last sync did not cover). Takes the files lock, then the index
    /// lock, so the records reach the file in the order they were made.
    pub(super) fn write_log(&self) {
        let mut files = lock(&self.persist);
        if files.is_empty() {
            return;
        }
        let work: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut idx = lock(&self.index);
            if idx
                .dirs
                .iter()
                .all(|d| d.log.is_empty() && d.names.is_empty())
            {
                return;
            }
            idx.dirs
                .iter_mut()
                .map(|d| (std::mem::take(&mut d.log), std::mem::take(&mut d.names)))
                .collect()
        };
        for (dir, (log, names)) in work.into_iter().enumerate() {
            if let Err(e) = files[dir].write(&log, &names) {
                tracing::error!(dir = %self.dirs[dir].path.display(), "cannot write the page index: {e}");
                // Keep the records for the next try, in order.
                let mut idx = lock(&self.index);
                let d = &mut idx.dirs[dir];
                let mut l = log;
                l.extend_from_slice(&d.log);
                d.log = l;
                let mut n = names;
                n.extend_from_slice(&d.names);
                d.names = n;
            }
        }
    }

    /// Make the index durable now (see the module note). Errors are
    /// logged: the index in memory stays right, and what is not on disk
    /// is a miss after a crash.
    pub fn flush(&self) {
        let _flushing = lock(&self.flushing);
        if lock(&self.persist).is_empty() {
            return;
        }
        // What to sync, and the segments whose pages moved before now.
        let work: Vec<_> = {
            let mut idx = lock(&self.index);
            idx.dirs
                .iter_mut()
                .map(|d| (d.segments.take_dirty(), d.segments.retired()))
                .collect()
        };
        let mut ok: Vec<bool> = work
            .iter()
            .enumerate()
            .map(|(dir, (dirty, _))| match dirty.iter().try_for_each(|f| f.sync_data()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(dir = %self.dirs[dir].path.display(), "cannot sync page segments: {e}");
                    false
                }
            })
            .collect();
        // Every record made before the segments were taken is in the
        // journal files after this write; then they are synced.
        self.write_log();
        {
            let files = lock(&self.persist);
            for (dir, f) in files.iter().enumerate() {
                let pending = !lock(&self.index).dirs[dir].log.is_empty();
                if let Err(e) = f.sync() {
                    tracing::error!(dir = %self.dirs[dir].path.display(), "cannot sync the page index: {e}");
                    ok[dir] = false;
                } else if pending {
                    // A write failed: the moved pages' records are not on disk.
                    ok[dir] = false;
                }
            }
        }
        let mut idx = lock(&self.index);
        for (dir, (_, retired)) in work.into_iter().enumerate() {
            if !ok[dir] {
                continue;
            }
            for seg in retired {
                let d = &mut idx.dirs[dir];
                if let Some(s) = d.segments.map.get_mut(&seg) {
                    s.retired = false;
                }
                if d.segments.deletable(seg) {
                    let bytes = d.segments.delete(seg);
                    d.used -= bytes;
                }
            }
        }
        drop(idx);
        self.checkpoint_if_due(false);
    }

    /// Rewrite the journal (and names) when it is due, or with `force`
    /// when the journal holds any dead record.
    pub(super) fn checkpoint_if_due(&self, force: bool) {
        let mut files = lock(&self.persist);
        for dir in 0..files.len() {
            let slack = checkpoint_slack(self.dirs[dir].capacity);
            let (live, snapshot) = {
                let mut idx = lock(&self.index);
                let records =
                    files[dir].records + (idx.dirs[dir].log.len() / journal::RECORD) as u64;
                // Counting the directory's pages walks the index: only
                // when even all pages would leave the journal too long.
                if !force && records <= 2 * idx.dirs[dir].pages + slack {
                    continue;
                }
                let live = idx
                    .all()
                    .filter(|&i| {
                        let s = idx.slot(i);
                        s.dir() == dir && !s.pending()
                    })
                    .count() as u64;
                let due = records > 2 * live + slack || (force && records > live);
                if !due {
                    continue;
                }
                let mut buf = Vec::with_capacity(live as usize * journal::RECORD);
                for i in idx.all().collect::<Vec<_>>() {
                    let s: &Slot = idx.slot(i);
                    if s.dir() == dir && !s.pending() {
                        journal::encode(&mut buf, &journal::put_of(s));
                    }
                }
                // Everything buffered is in the snapshot.
                idx.dirs[dir].log.clear();
                idx.rebuild_multi();
                (live, buf)
            };
            if let Err(e) = files[dir].rewrite(&snapshot) {
                tracing::error!("cannot checkpoint the page index: {e}");
                continue;
            }
            drop(snapshot);
            let index = &self.index;
            let kept = files[dir].rewrite_names(&mut |hashes| {
                let idx = lock(index);
                hashes.iter().map(|h| idx.has_url(*h)).collect()
            });
            if let Err(e) = kept {
                tracing::warn!("cannot rewrite the URL names: {e}");
            }
            tracing::info!(dir = %self.dirs[dir].path.display(), pages = live, "page index checkpointed");
        }
    }

    /// Flush every `interval` on a thread of its own while the store lives.
    pub fn start_persister(self: &Arc<Self>, interval: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("alluxiofs-index".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(store) = weak.upgrade() else { break };
                store.flush();
            });
        if let Err(e) = spawned {
            tracing::warn!(
                "cannot start the index persister (the index is written at shutdown only): {e}"
            );
        }
    }

    /// The persistence interval of this store.
    pub fn persist_interval(&self) -> Duration {
        self.options.persist_interval
    }

    /// Call `f` with (URL hash, URL) of the URLs with pages, from the names
    /// files and the names not yet written (a URL may come more than once).
    pub fn for_each_url(&self, f: &mut dyn FnMut(u64, &str)) {
        let files = lock(&self.persist);
        for file in files.iter() {
            let index = &self.index;
            let read = for_each_name_chunk(&file.names_path(), &mut |chunk| {
                let has: Vec<bool> = {
                    let idx = lock(index);
                    chunk.iter().map(|(h, _)| idx.has_url(*h)).collect()
                };
                for ((h, url), has) in chunk.iter().zip(has) {
                    if has {
                        f(*h, url);
                    }
                }
            });
            if let Err(e) = read {
                tracing::warn!("cannot read the URL names: {e}");
            }
        }
        let buffered: Vec<Vec<u8>> = lock(&self.index)
            .dirs
            .iter()
            .map(|d| d.names.clone())
            .collect();
        drop(files);
        for names in buffered {
            for (h, url) in journal::decode_names(&names) {
                if self.has_hash(h) {
                    f(h, &url);
                }
            }
        }
    }

    /// Bytes of the names files (what [`PageStore::for_each_url`] reads).
    pub fn names_bytes(&self) -> u64 {
        let files = lock(&self.persist);
        files
            .iter()
            .filter_map(|f| std::fs::metadata(f.names_path()).ok())
            .map(|m| m.len())
            .sum()
    }

    fn has_hash(&self, h: u64) -> bool {
        lock(&self.index).has_url(h)
    }

    /// URL hashes of the URLs at `prefix` (or under it, `recursive`) with
    /// pages.
    pub(super) fn hashes_under(&self, prefix: &str, recursive: bool) -> Vec<u64> {
        let mut out = Vec::new();
        self.for_each_url(&mut |h, url| {
            let hit = if recursive {
                alluxiofs_core::path::is_under(url, prefix)
            } else {
                url == prefix
            };
            if hit {
                out.push(h);
            }
        });
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Set every page's pin, mount quota and TTL class from its URL and the
    /// rules (at open when there are rules or quotas, and after a TTL
    /// change). Reads the names file.
    pub(super) fn classify_all(&self) {
        let any = {
            let idx = lock(&self.index);
            !idx.rules.pins.is_empty() || !idx.rules.ttls.is_empty()
        } || !self.options.mount_quotas.is_empty();
        if !any {
            return;
        }
        let mut urls: Vec<(u64, String)> = Vec::new();
        self.for_each_url(&mut |h, u| urls.push((h, u.to_string())));
        let mut idx = lock(&self.index);
        for (h, url) in &urls {
            let pinned = idx.rules.is_pinned(url);
            let mount = self.mount_of(url);
            let class = keep::ttl_class(&idx.rules, url);
            let ids: Vec<u32> = idx.pages_of(*h).collect();
            for i in ids {
                self.classify(&mut idx, i, pinned, mount, class);
            }
        }
    }

    /// Set page `i`'s pin (within the quota), mount and TTL class.
    fn classify(&self, idx: &mut Index, i: u32, pinned: bool, mount: Option<usize>, class: u8) {
        let s = *idx.slot(i);
        if s.mount() != mount {
            let len = u64::from(s.len);
            if let Some(m) = s.mount().filter(|m| *m < idx.mount_used.len()) {
                idx.mount_used[m] -= len;
            }
            if let Some(m) = mount.filter(|m| *m < idx.mount_used.len()) {
                idx.mount_used[m] += len;
            }
            idx.slot_mut(i).set_mount(mount);
        }
        idx.slot_mut(i).set_ttl_class(class);
        if pinned != s.pinned()
            && (!pinned || idx.pinned_bytes + u64::from(s.len) <= self.pin_quota)
        {
            idx.set_pinned(i, pinned);
        }
    }
}
