//! Metadata cache and the `path_id → URL` map.
//!
//! File infos and directory listings are kept for `metadata_ttl` (zero
//! keeps nothing: every lookup asks the UFS). A listing also caches the
//! infos of the files it names, so the usual "list, then read every file"
//! pattern costs one UFS request for metadata instead of one per file.
//!
//! The `path_id → URL` map lets page requests omit `ufsFullPath`. It learns
//! every URL the worker answers for, and at start it is filled from the URLs
//! of the pages found on disk, so it survives a restart for cached files.
//! Both maps are bounded: past [`MAX_ENTRIES`] expired entries are dropped,
//! then everything.
//!
//! The last version seen of each URL is also kept past the TTL (and at TTL
//! zero), in a third bounded map. It is never served as metadata: it only
//! tells a read whose metadata is missing whether its pages are probably
//! cached (then a HEAD revalidates them) or the file is cold (then one GET
//! brings metadata and bytes together, see [`crate::cache`]).

use crate::ufs::ObjectVersion;
use alluxiofs_core::info::FileInfo;
use alluxiofs_core::path::{is_under, path_id};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bound on cached infos, listings and path ids, each.
pub const MAX_ENTRIES: usize = 1_000_000;

/// A cached file info with the version needed to read the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedInfo {
    /// What `/v1/info` answers.
    pub info: FileInfo,
    /// The readable version (`None` for directories).
    pub version: Option<ObjectVersion>,
}

#[derive(Debug, Default)]
struct Maps {
    infos: HashMap<String, (Instant, CachedInfo)>,
    lists: HashMap<String, (Instant, Vec<FileInfo>)>,
    /// URL -> last version seen (`None`: pages found on disk at start, of
    /// a version not known yet). Kept past the TTL.
    seen: HashMap<String, Option<String>>,
}

/// What the worker saw of a URL before, whatever the TTL: a hint only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Never looked up (since the start, or since it was invalidated).
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
    maps: Mutex<Maps>,
    ids: Mutex<HashMap<String, String>>,
}

fn bound<V>(map: &mut HashMap<String, (Instant, V)>, ttl: Duration) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, (t, _)| t.elapsed() < ttl);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
}

fn note_seen(seen: &mut HashMap<String, Option<String>>, url: &str, version: Option<String>) {
    if seen.len() >= MAX_ENTRIES && !seen.contains_key(url) {
        seen.clear();
    }
    seen.insert(url.to_string(), version);
}

impl MetaCache {
    /// A cache keeping entries for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        MetaCache {
            ttl,
            maps: Mutex::new(Maps::default()),
            ids: Mutex::new(HashMap::new()),
        }
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Remember the info of `url`.
    pub fn put_info(&self, url: &str, cached: CachedInfo) {
        self.remember(url);
        let mut maps = self.maps();
        match &cached.version {
            Some(v) => note_seen(&mut maps.seen, url, Some(v.version.clone())),
            None => {
                maps.seen.remove(url);
            }
        }
        if self.ttl.is_zero() {
            return;
        }
        bound(&mut maps.infos, self.ttl);
        maps.infos.insert(url.to_string(), (Instant::now(), cached));
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
        let now = Instant::now();
        let mut maps = self.maps();
        for c in children.iter().filter(|c| !c.is_dir()) {
            let version = ObjectVersion::from_info(c).version;
            note_seen(&mut maps.seen, &c.ufs_path, Some(version));
        }
        if self.ttl.is_zero() {
            return;
        }
        bound(&mut maps.lists, self.ttl);
        bound(&mut maps.infos, self.ttl);
        for c in children.iter().filter(|c| !c.is_dir()) {
            let version = ObjectVersion::from_info(c);
            maps.infos.insert(
                c.ufs_path.clone(),
                (
                    now,
                    CachedInfo {
                        info: c.clone(),
                        version: Some(version),
                    },
                ),
            );
        }
        maps.lists.insert(url.to_string(), (now, children.to_vec()));
    }

    /// Forget the metadata of `url` (and, with `recursive`, of everything
    /// under it), and the listing of its parent.
    pub fn invalidate(&self, url: &str, recursive: bool) -> usize {
        let mut maps = self.maps();
        let before = maps.infos.len() + maps.lists.len();
        let hit = |k: &String| k == url || (recursive && is_under(k, url));
        maps.infos.retain(|k, _| !hit(k));
        maps.lists.retain(|k, _| !hit(k));
        maps.seen.retain(|k, _| !hit(k));
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
        if !maps.seen.contains_key(url) {
            note_seen(&mut maps.seen, url, None);
        }
    }

    /// Record the `path_id` of `url`; returns it.
    pub fn remember(&self, url: &str) -> String {
        let id = path_id(url);
        self.remember_as(id.clone(), url);
        id
    }

    /// Record `id`, the `path_id` the caller computed already for `url`
    /// (the digest is not computed twice per request).
    pub fn remember_as(&self, id: String, url: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.len() >= MAX_ENTRIES {
            ids.clear();
        }
        ids.entry(id).or_insert_with(|| url.to_string());
    }

    /// The URL of a known `path_id`.
    pub fn url_of(&self, id: &str) -> Option<String> {
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.get(&id.to_ascii_lowercase()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alluxiofs_core::info::FileType;

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
        let m = MetaCache::new(Duration::from_secs(60));
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
        let m = MetaCache::new(Duration::ZERO);
        m.put_list("s3://b/d", &[file("s3://b/d/x")]);
        assert!(m.info("s3://b/d/x").is_none());
        assert!(m.list("s3://b/d").is_none());
        assert!(m.url_of(&path_id("s3://b/d/x")).is_some());
    }

    #[test]
    fn seen_outlives_the_ttl() {
        let m = MetaCache::new(Duration::ZERO);
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
        let m = MetaCache::new(Duration::from_millis(30));
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
}
