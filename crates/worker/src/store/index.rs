//! The index of the pages on disk and its accounting.
//!
//! One map from [`PageId`] to [`Entry`] (directory, file length, URL,
//! version, when cached, pending, pinned, mount), kept consistent with the
//! per-directory used bytes, the per-mount used bytes, the pinned bytes, the
//! per-URL sets (for invalidation, pins and frees by prefix) and one
//! eviction [`Policy`] per directory. Every change goes through
//! [`Index::insert`], [`Index::settle`], [`Index::set_pinned`] and
//! [`Index::remove`], which update all of them together; nothing else
//! mutates an entry's accounting.
//!
//! A policy orders only the evictable pages: an entry is *pending* while
//! its file is written (invisible to readers, its bytes already reserved,
//! not a victim) and *pinned* pages are out of the policy altogether.
//!
//! The index is in memory only; the restart scan rebuilds it from the
//! files. It does no I/O: the store deletes files after removing entries.

use super::PageId;
use crate::policy::Policy;
use crate::rules::Rules;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

/// One page on disk.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) dir: usize,
    pub(super) file_len: u64,
    pub(super) url: Arc<str>,
    pub(super) version: Arc<str>,
    /// When the page was cached (its age counts for TTLs).
    pub(super) created: SystemTime,
    pub(super) pending: bool,
    pub(super) pinned: bool,
    /// Index of the mount quota the URL falls under.
    pub(super) mount: Option<usize>,
}

/// The pages, their accounting, and the keeping rules in force.
#[derive(Debug)]
pub(super) struct Index {
    pub(super) entries: HashMap<PageId, Entry>,
    /// One eviction order per directory, over its evictable pages (neither
    /// pending nor pinned).
    pub(super) policies: Vec<Box<dyn Policy>>,
    pub(super) used: Vec<u64>,
    pub(super) mount_used: Vec<u64>,
    pub(super) pinned_bytes: u64,
    pub(super) by_url: HashMap<Arc<str>, HashSet<PageId>>,
    pub(super) rules: Rules,
}

impl Index {
    /// An empty index over `policies` (one per directory) and
    /// `mounts` mount quotas.
    pub(super) fn new(policies: Vec<Box<dyn Policy>>, mounts: usize, rules: Rules) -> Self {
        Index {
            entries: HashMap::new(),
            used: vec![0; policies.len()],
            policies,
            mount_used: vec![0; mounts],
            pinned_bytes: 0,
            by_url: HashMap::new(),
            rules,
        }
    }

    pub(super) fn insert(&mut self, id: PageId, entry: Entry) {
        self.used[entry.dir] += entry.file_len;
        if entry.pinned {
            self.pinned_bytes += entry.file_len;
        }
        if let Some(m) = entry.mount {
            self.mount_used[m] += entry.file_len;
        }
        if !entry.pending && !entry.pinned {
            self.policies[entry.dir].insert(id.0, entry.file_len);
        }
        self.by_url.entry(entry.url.clone()).or_default().insert(id);
        self.entries.insert(id, entry);
    }

    pub(super) fn touch(&mut self, id: PageId) {
        if let Some(e) = self.entries.get(&id) {
            self.policies[e.dir].hit(id.0);
        }
    }

    /// A pending page was written: it becomes visible (and evictable unless
    /// pinned). `false` when it was removed meanwhile.
    pub(super) fn settle(&mut self, id: PageId) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        e.pending = false;
        if !e.pinned {
            self.policies[e.dir].insert(id.0, e.file_len);
        }
        true
    }

    /// Pin or unpin a page; returns its bytes when that changed anything.
    pub(super) fn set_pinned(&mut self, id: PageId, pinned: bool) -> u64 {
        let Some(e) = self.entries.get_mut(&id) else {
            return 0;
        };
        if e.pinned == pinned {
            return 0;
        }
        e.pinned = pinned;
        let (dir, len, pending) = (e.dir, e.file_len, e.pending);
        if pinned {
            self.pinned_bytes += len;
            self.policies[dir].remove(id.0);
        } else {
            self.pinned_bytes -= len;
            if !pending {
                self.policies[dir].insert(id.0, len);
            }
        }
        len
    }

    pub(super) fn remove(&mut self, id: PageId) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        self.policies[e.dir].remove(id.0);
        self.used[e.dir] -= e.file_len;
        if e.pinned {
            self.pinned_bytes -= e.file_len;
        }
        if let Some(m) = e.mount {
            self.mount_used[m] -= e.file_len;
        }
        if let Some(set) = self.by_url.get_mut(&e.url) {
            set.remove(&id);
            if set.is_empty() {
                self.by_url.remove(&e.url);
            }
        }
        Some(e)
    }

    /// Ids of the pages of URLs at `prefix` (or under it, `recursive`).
    pub(super) fn ids_under(&self, prefix: &str, recursive: bool) -> Vec<PageId> {
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
