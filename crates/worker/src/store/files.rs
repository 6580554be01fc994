//! The page files on disk: where they live, reading and writing one, and
//! the restart scan.
//!
//! - **Layout.** `<dir>/pages/<first two hex digits of the id>/<id>`
//!   ([`super::key`]); 256 subdirectories keep directories small.
//! - **Writing** goes through [`crate::atomic`]: a temporary file in the
//!   page's directory, renamed into place, so no reader sees half a page.
//!   No fsync (a deliberate speed choice: a page lost or torn in a crash is
//!   a miss, or fails its checksum and is deleted).
//! - **Reading** refreshes the file's mtime when it is older than
//!   [`TOUCH_AFTER`], so the eviction order rebuilt from mtimes after a
//!   restart reflects reads, at one metadata write per page per minute.
//! - **Restart.** On open, every directory is scanned: headers (not data)
//!   are read to rebuild the index and used bytes, the eviction order
//!   starts from file mtimes, a page's age (for TTLs) from its file's birth
//!   time, and temporary, foreign and unreadable files are deleted (all but
//!   temporary ones counted as corrupt). A directory over its capacity (it
//!   shrank) is evicted down to it. The data checksum is still verified
//!   when a page is read.

use super::format::{decode_header, text_lens, FIXED_HEADER};
use super::index::Entry;
use super::{lock, PageId, PageStore};
use crate::atomic::{write_atomically, Durability};
use crate::error::{Result, WorkerError};
use crate::metrics::Metrics;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

impl PageStore {
    /// The file of page `id` in directory `dir`.
    pub(super) fn page_path(&self, dir: usize, id: PageId) -> PathBuf {
        let h = id.hex();
        self.dirs[dir].path.join("pages").join(&h[..2]).join(h)
    }

    pub(super) fn scan_dir(&self, dir: usize) -> Result<()> {
        let root = self.dirs[dir].path.join("pages");
        let mut found: Vec<(SystemTime, PageId, Entry)> = Vec::new();
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
                    Ok((id, mtime, created, url, version, file_len)) => found.push((
                        mtime,
                        id,
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
        found.sort_by_key(|(mtime, id, _)| (*mtime, *id));
        let mut idx = lock(&self.index);
        let count = found.len();
        for (_, id, mut entry) in found {
            if idx.entries.contains_key(&id) {
                // The same page in two directories (capacities changed): keep one.
                let _ = std::fs::remove_file(self.page_path(dir, id));
                continue;
            }
            entry.pinned = idx.rules.is_pinned(&entry.url);
            idx.insert(id, entry);
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

    /// Check one file found by the scan: (id, mtime, birth time, URL,
    /// version, length), or why it is no page of this store.
    fn scan_file(
        &self,
        path: &Path,
    ) -> std::result::Result<(PageId, SystemTime, SystemTime, String, String, u64), String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("unreadable name")?;
        let id = PageId::from_file_name(name).ok_or("not a page file (temporary or foreign)")?;
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
        if PageId::of(h.page_size, &h.url, &h.version, h.index) != id {
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
        Ok((id, mtime, created, h.url, h.version, file_len))
    }
}

/// Pages not touched for this long get their mtime refreshed on a hit, so
/// that the LRU order rebuilt from mtimes after a restart reflects reads.
const TOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Read a page file; refresh its mtime when it is older than
/// [`TOUCH_AFTER`] (best effort).
pub(super) fn read_and_touch(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = match std::fs::File::options().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => std::fs::File::open(path)?,
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let mut raw = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut raw)?;
    touch_if_stale(&f, &meta);
    Ok(raw)
}

/// Refresh the mtime of the open page file `f` when it is older than
/// [`TOUCH_AFTER`] (best effort; the owner may set the times of a file it
/// opened read-only).
fn touch_if_stale(f: &std::fs::File, meta: &std::fs::Metadata) {
    let now = std::time::SystemTime::now();
    let stale = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age > TOUCH_AFTER);
    if stale {
        let _ = f.set_modified(now);
    }
}

/// Open a page file read-only (to pass its descriptor to a same-node
/// reader); refresh its mtime as [`read_and_touch`] does.
pub(super) fn open_and_touch(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::File::open(path)?;
    touch_if_stale(&f, &f.metadata()?);
    Ok(f)
}

/// Write a page file (header, then data) atomically, without fsync.
pub(super) fn write_page(path: &Path, header: &[u8], data: &[u8]) -> std::io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| std::io::Error::other("page path has no parent"))?;
    std::fs::create_dir_all(parent)?;
    write_atomically(path, &[header, data], Durability::Rename)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;

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
                let age = if f.ends_with(store.key("u", "v", 0).id(PS).hex()) {
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
    fn a_page_file_named_as_before_is_found_after_reopening() {
        // Written by hand with the on-disk naming and format of the
        // caches of earlier versions, not by `put`.
        let dir = tempfile::tempdir().unwrap();
        let name = crate::store::key::tests::NAME_OF_S3_B_X_V1_3;
        let sub = dir.path().join("pages").join(&name[..2]);
        std::fs::create_dir_all(&sub).unwrap();
        let key = PageKey::new("s3://b/x", "\"v1\"", 3);
        let d = data(9, 4000);
        let mut raw = super::super::format::encode_header(PS, &key, &d);
        raw.extend_from_slice(&d);
        std::fs::write(sub.join(name), &raw).unwrap();
        let store = open(&[(dir.path(), 1 << 20)], 0);
        assert_eq!(store.gauges().pages, 1);
        assert_eq!(store.get(&key).unwrap(), d);
        assert_eq!(store.get(&store.key("s3://b/x", "\"v1\"", 3)).unwrap(), d);
    }
}
