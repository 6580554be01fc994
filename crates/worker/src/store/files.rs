//! Page files (one file per large page) and the restart.
//!
//! - **Layout.** `<dir>/large/<2 hex digits>/<16 hex URL hash><8 hex page
//!   index><8 hex version hash>`, so the file of a page is named by its
//!   index slot alone; 256 subdirectories keep directories small. Pages of
//!   up to 256 KiB are packed into `<dir>/segments` instead
//!   ([`super::segments`]).
//! - **Writing** goes through [`crate::atomic`]: a temporary file in the
//!   page's directory, renamed into place, so no reader sees half a page.
//!   No fsync (a deliberate speed choice: a page lost or torn in a crash is
//!   a miss, or fails its checks and is dropped).
//! - **Restart** ([`PageStore::load_dir`]): replay the journal
//!   ([`super::journal`]), list the segment and page-file directories
//!   (names and lengths only), drop index entries whose bytes are missing
//!   or short, delete files nothing points at. A directory written by a
//!   version before the persisted index (`<dir>/pages/`, one file per page
//!   named by its 128-bit id) is imported once: each file's header is read,
//!   the file renamed into `large/`, and the index written.

use super::format::{decode_header, text_lens, FIXED_HEADER};
use super::index::{now_ds, Index, NewPage, LARGE};
use super::journal::{self, Files};
use super::key::SlotKey;
use super::{lock, PageStore};
use crate::atomic::{write_atomically, Durability};
use crate::error::{Result, WorkerError};
use crate::metrics::Metrics;
use alluxiofs_core::page_file::{url_hash, version_hash};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

impl PageStore {
    /// The file of the large page `key` of version hash `vh` in `dir`.
    pub(super) fn large_path(&self, dir: usize, key: SlotKey, vh: u32) -> PathBuf {
        large_path_in(&self.dirs[dir].path, key, vh)
    }

    /// Load directory `dir`'s index (see the module note) and open its
    /// journal for appending.
    pub(super) fn load_dir(&self, dir: usize) -> Result<Files> {
        let root = self.dirs[dir].path.clone();
        let mut idx = lock(&self.index);
        let found = idx.dirs[dir].segments.scan()?;
        for (id, len) in found {
            let bytes = idx.dirs[dir].segments.register(id, len);
            idx.dirs[dir].used += bytes;
        }
        let (mut applied, mut dropped) = (0u64, 0u64);
        // At most this many pages come (removals are records too); what is
        // reserved beyond the pages kept is given back after the load.
        idx.reserve(Files::records_hint(&root) as usize);
        let loaded = Files::replay(&root, self.page_size, &mut |rec| {
            if let Some(i) = idx.find(rec.key) {
                idx.remove(i);
            }
            if !rec.put {
                return;
            }
            if !journal::is_large(rec) {
                let fits =
                    idx.dirs[dir].segments.map.get(&rec.seg).is_some_and(|s| {
                        u64::from(rec.off) + u64::from(rec.len) <= u64::from(s.size)
                    });
                if !fits {
                    dropped += 1;
                    return;
                }
            }
            idx.insert(NewPage {
                key: rec.key,
                version_hash: rec.version_hash,
                dir,
                seg: rec.seg,
                off: rec.off,
                len: rec.len,
                created: rec.created,
                pending: false,
                pinned: false,
                mount: None,
                ttl_class: 0,
            });
            applied += 1;
        })?;
        // A removal replayed above may have dropped a page that pointed at
        // a missing segment; count the final state instead.
        let _ = applied;
        let orphans = self.reconcile_large(&mut idx, dir, &root);
        // Segments nothing points at (written after the last flush, or
        // emptied) go.
        let empty: Vec<u32> = idx.dirs[dir]
            .segments
            .map
            .iter()
            .filter(|(_, s)| s.live == 0)
            .map(|(id, _)| *id)
            .collect();
        for seg in empty {
            let bytes = idx.dirs[dir].segments.delete(seg);
            idx.dirs[dir].used -= bytes;
        }
        drop(idx);
        let clean = Files::take_clean(&root);
        let mut files = if loaded.found {
            Files::open_existing(&root, self.page_size, loaded.records, clean)?
        } else {
            Files::create_fresh(&root, self.page_size)?
        };
        if !loaded.found {
            // A new directory, or one of the layout before the index.
            self.import_legacy(dir, &root)?;
        }
        if loaded.torn || dropped > 0 || orphans > 0 {
            tracing::info!(
                dir = %root.display(),
                torn = loaded.torn,
                dropped,
                orphans,
                "index replayed: pages written after the last flush are misses"
            );
        }
        files.records = loaded.records;
        Ok(files)
    }

    /// Match the page files of `dir` with the index: drop entries without
    /// a file, delete files without an entry. Returns the files deleted.
    fn reconcile_large(&self, idx: &mut Index, dir: usize, root: &Path) -> u64 {
        let mut on_disk: HashSet<(u64, u32, u32)> = HashSet::new();
        let large = root.join("large");
        let mut orphans = 0;
        if let Ok(subs) = std::fs::read_dir(&large) {
            for sub in subs.flatten() {
                let Ok(files) = std::fs::read_dir(sub.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name();
                    match name.to_str().and_then(parse_large_name) {
                        Some(k) => {
                            on_disk.insert(k);
                        }
                        None => {
                            // Temporary files of interrupted writes.
                            let _ = std::fs::remove_file(f.path());
                        }
                    }
                }
            }
        }
        let indexed: Vec<u32> = idx
            .all()
            .filter(|&i| {
                let s = idx.slot(i);
                s.is_large() && s.dir() == dir
            })
            .collect();
        for i in indexed {
            let s = *idx.slot(i);
            let k = (s.key().url_hash, s.index, s.version_hash);
            if !on_disk.remove(&k) {
                idx.remove(i);
            }
        }
        for (h, index, vh) in on_disk {
            let key = SlotKey { url_hash: h, index };
            let _ = std::fs::remove_file(large_path_in(root, key, vh));
            orphans += 1;
        }
        orphans
    }

    /// Import the page files of the layout before the persisted index
    /// (`<dir>/pages/<xx>/<32 hex id>`): read each header, move the file
    /// into `large/`, index it; delete temporary, foreign and unreadable
    /// files (all but temporary ones counted as corrupt).
    fn import_legacy(&self, dir: usize, root: &Path) -> Result<()> {
        let pages = root.join("pages");
        let Ok(subdirs) = std::fs::read_dir(&pages) else {
            return Ok(());
        };
        let mut count = 0u64;
        for sub in subdirs.flatten() {
            let sub_path = sub.path();
            let Ok(files) = std::fs::read_dir(&sub_path) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                match self.import_file(dir, root, &path) {
                    Ok(()) => count += 1,
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
            let _ = std::fs::remove_dir(&sub_path);
        }
        let _ = std::fs::remove_dir(&pages);
        tracing::info!(dir = %root.display(), pages = count, "page files of the previous layout imported");
        Ok(())
    }

    fn import_file(&self, dir: usize, root: &Path, path: &Path) -> std::result::Result<(), String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("unreadable name")?;
        if name.len() != 32 || !name.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err("not a page file (temporary or foreign)".into());
        }
        let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let meta = f.metadata().map_err(|e| e.to_string())?;
        let mut fixed = vec![0u8; FIXED_HEADER];
        f.read_exact(&mut fixed)
            .map_err(|e| format!("header: {e}"))?;
        let (url_len, version_len) = text_lens(&fixed)?;
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
        let id = alluxiofs_core::page_file::page_id(h.page_size, &h.url, &h.version, h.index);
        if format!("{id:032x}") != name.to_ascii_lowercase() {
            return Err("header does not match the file name".into());
        }
        let file_len = meta.len();
        if Some(file_len) != (h.len() as u64).checked_add(h.data_len) {
            return Err("file length does not match the header".into());
        }
        if h.index >= u64::from(u32::MAX) || file_len > u64::from(u32::MAX) {
            return Err("page index or size beyond what the index holds".into());
        }
        let key = SlotKey {
            url_hash: url_hash(&h.url),
            index: h.index as u32,
        };
        let vh = version_hash(&h.version);
        let target = large_path_in(root, key, vh);
        let mut idx = lock(&self.index);
        if idx.find(key).is_some() {
            return Err("the same page twice".into());
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::rename(path, &target).map_err(|e| e.to_string())?;
        let named = idx.has_url(key.url_hash);
        let i = idx.insert(NewPage {
            key,
            version_hash: vh,
            dir,
            seg: LARGE,
            off: 0,
            len: file_len as u32,
            created: now_ds(),
            pending: false,
            pinned: false,
            mount: None,
            ttl_class: 0,
        });
        let rec = journal::put_of(idx.slot(i));
        journal::encode(&mut idx.dirs[dir].log, &rec);
        if !named {
            journal::encode_name(&mut idx.dirs[dir].names, key.url_hash, &h.url);
        }
        Ok(())
    }
}

/// The file of the large page `key` of version hash `vh` under `root`.
fn large_path_in(root: &Path, key: SlotKey, vh: u32) -> PathBuf {
    let name = format!("{:016x}{:08x}{vh:08x}", key.url_hash, key.index);
    root.join("large").join(&name[..2]).join(name)
}

/// (URL hash, page index, version hash) of a page file name.
fn parse_large_name(n: &str) -> Option<(u64, u32, u32)> {
    if n.len() != 32 || !n.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((
        u64::from_str_radix(&n[..16], 16).ok()?,
        u32::from_str_radix(&n[16..24], 16).ok()?,
        u32::from_str_radix(&n[24..], 16).ok()?,
    ))
}

/// Read a page file whole.
pub(super) fn read_page_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut raw = Vec::with_capacity(f.metadata()?.len() as usize);
    f.read_to_end(&mut raw)?;
    Ok(raw)
}

/// Open a page file read-only (to pass its descriptor to a same-node
/// reader).
pub(super) fn open_page_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// Write a page file (header, then data) atomically, without fsync.
pub(super) fn write_page(path: &Path, header: &[u8], data: &[u8]) -> std::io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| std::io::Error::other("page path has no parent"))?;
    std::fs::create_dir_all(parent)?;
    write_atomically(path, &[header, data], Durability::Rename)
}

impl Files {
    /// Start an empty journal and names file for `root` (a new directory,
    /// or an index of another page size or format: not ours).
    pub(super) fn create_fresh(root: &Path, page_size: u64) -> Result<Files> {
        let names = Files::dir_of(root).join("names");
        if names.exists() {
            std::fs::remove_file(&names)
                .map_err(|e| WorkerError::io(format!("cannot reset {}", names.display()), e))?;
        }
        Files::create(root, page_size, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;

    #[test]
    fn restart_finds_pages_without_reading_them_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<_> = (0..5).map(|i| PageKey::new("s3://b/f", "e", i)).collect();
        {
            let store = open(&[(dir.path(), 1 << 20)], 0);
            for (i, k) in keys.iter().enumerate() {
                store.put(k, &data(i as u8, 4096)).unwrap();
            }
        }
        // Leftovers of a crash: a segment nothing points at, and a
        // temporary file among the page files.
        std::fs::write(dir.path().join("segments").join("0000ffff.seg"), b"half").unwrap();
        let sub = dir.path().join("large").join("ab");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("ab00.tmp.123"), b"half").unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 0);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(store.get(k).unwrap(), data(i as u8, 4096));
        }
        assert_eq!(store.urls(), vec!["s3://b/f".to_string()]);
        assert!(!sub.join("ab00.tmp.123").exists(), "temporary files go");
        assert!(!dir.path().join("segments").join("0000ffff.seg").exists());
        assert_eq!(store.gauges().pages, 5);
        assert_eq!(store.gauges().used_bytes, disk_bytes(dir.path()));
        // A smaller capacity on restart evicts down to it (whole segments
        // count, so with all five in one segment, everything goes).
        drop(store);
        let store = open(&[(dir.path(), 3 * packed(4096))], 0);
        assert!(store.gauges().used_bytes <= 3 * packed(4096));
        assert_eq!(store.gauges().used_bytes, disk_bytes(dir.path()));
    }

    #[test]
    fn a_killed_process_loses_nothing_and_a_lost_journal_tail_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("index").join("journal");
        let k = |i| PageKey::new(format!("s3://b/{i}"), "v", 0);
        let store = open(&[(dir.path(), 1 << 20)], 0);
        for i in 0..10 {
            store.put(&k(i), &data(i as u8, 1000)).unwrap();
        }
        store.flush();
        let synced = std::fs::metadata(&journal).unwrap().len();
        for i in 10..20 {
            store.put(&k(i), &data(i as u8, 1000)).unwrap();
        }
        // A kill: the store is never dropped, nothing more is flushed, yet
        // every record was written as its page was.
        std::mem::forget(store);
        let store = open(&[(dir.path(), 1 << 20)], 0);
        for i in 0..20 {
            assert_eq!(store.get(&k(i)).unwrap(), data(i as u8, 1000), "page {i}");
        }
        drop(store);
        // A machine crash loses what the last sync did not cover: the
        // journal cut back to its synced length (the reopen above
        // checkpointed nothing: the journal holds one record per page).
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .unwrap();
        f.set_len(synced).unwrap();
        drop(f);
        let _ = std::fs::remove_file(dir.path().join("index").join("clean"));
        let store = open(&[(dir.path(), 1 << 20)], 0);
        for i in 0..10 {
            assert_eq!(store.get(&k(i)).unwrap(), data(i as u8, 1000), "synced {i}");
        }
        for i in 10..20 {
            assert!(store.get(&k(i)).is_none(), "not synced: a miss");
        }
        assert_eq!(store.gauges().pages, 10);
        // Their bytes are dead space of the segment, counted as used.
        assert_eq!(store.gauges().used_bytes, disk_bytes(dir.path()));
    }

    #[test]
    fn a_page_file_of_the_previous_layout_is_found_after_reopening() {
        // Written by hand with the on-disk naming and format of the
        // caches of earlier versions, not by `put`.
        let dir = tempfile::tempdir().unwrap();
        let key = PageKey::new("s3://b/x", "\"v1\"", 3);
        let name = format!(
            "{:032x}",
            alluxiofs_core::page_file::page_id(PS, "s3://b/x", "\"v1\"", 3)
        );
        assert_eq!(
            name, "332d5b158ba76c12ee61f46bedbebb2b",
            "the old naming, pinned"
        );
        let sub = dir.path().join("pages").join(&name[..2]);
        std::fs::create_dir_all(&sub).unwrap();
        let d = data(9, 4000);
        let mut raw = super::super::format::encode_header(PS, &key, &d);
        raw.extend_from_slice(&d);
        std::fs::write(sub.join(&name), &raw).unwrap();
        std::fs::write(sub.join("garbage0000000000000000000000000"), b"x").unwrap();
        {
            let store = open(&[(dir.path(), 1 << 20)], 0);
            assert_eq!(store.gauges().pages, 1);
            assert_eq!(store.get(&key).unwrap(), d);
            assert_eq!(store.get(&store.key("s3://b/x", "\"v1\"", 3)).unwrap(), d);
            assert!(!dir.path().join("pages").exists(), "imported");
        }
        // And found again from the index.
        let store = open(&[(dir.path(), 1 << 20)], 0);
        assert_eq!(store.get(&key).unwrap(), d);
        assert_eq!(store.urls(), vec!["s3://b/x".to_string()]);
    }
}
