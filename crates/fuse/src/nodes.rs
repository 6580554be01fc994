//! The inode table: which UFS URL each inode number stands for, what is
//! known about it, and how many kernel references it has.
//!
//! Inode 1 is the mount's root: the one mounted URL, or, with several, a
//! directory made here whose entries are the mounted URLs under their
//! names. Every other inode is a URL under one of the mounted URLs, made
//! when the kernel first looks it up (`lookup`, or an entry of
//! `readdirplus`) and dropped when the kernel forgets it (`forget`: its
//! lookup count reaches zero). A URL keeps its inode number while the
//! kernel holds it, so hard-link-free trees look as on a local disk.
//!
//! The table holds what the last metadata answer said (size, modification
//! time, version) and when it came; callers decide when that is too old.

use std::collections::HashMap;
use std::time::Instant;

/// The inode number of the mount's root.
pub(crate) const ROOT: u64 = 1;

/// Directory or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// What a metadata answer said about a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    pub(crate) mtime_ms: i64,
    /// The object version (ETag or `<mtime>-<size>`); empty for directories.
    pub(crate) version: String,
}

/// One inode.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The normalized URL; empty for the root of several mounted URLs.
    pub(crate) url: String,
    pub(crate) meta: Meta,
    /// When `meta` was fetched.
    pub(crate) fetched: Instant,
    /// Kernel references (lookups not yet forgotten).
    lookups: u64,
    /// The version whose bytes the kernel's page cache may hold for this
    /// file (the version of the last open that let it keep them).
    pub(crate) cached_version: Option<String>,
    /// The metadata is this mount's own (a file it is writing): it is not
    /// asked of the workers until the write ends.
    pub(crate) local: bool,
}

/// The table.
#[derive(Debug)]
pub(crate) struct Nodes {
    nodes: HashMap<u64, Node>,
    by_url: HashMap<String, u64>,
    next: u64,
}

impl Nodes {
    /// A table holding only the root (`url` empty for a root of several).
    pub(crate) fn new(root_url: String, root: Meta) -> Self {
        let mut nodes = HashMap::new();
        let mut by_url = HashMap::new();
        if !root_url.is_empty() {
            by_url.insert(root_url.clone(), ROOT);
        }
        nodes.insert(
            ROOT,
            Node {
                url: root_url,
                meta: root,
                fetched: Instant::now(),
                lookups: 1,
                cached_version: None,
                local: false,
            },
        );
        Nodes {
            nodes,
            by_url,
            next: ROOT + 1,
        }
    }

    /// Inode `ino`, if the kernel still holds it.
    pub(crate) fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The inode of `url`, if the kernel holds one.
    pub(crate) fn ino_of(&self, url: &str) -> Option<u64> {
        self.by_url.get(url).copied()
    }

    /// Inode `ino`, mutable.
    pub(crate) fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The inode of `url` with `meta` as its latest metadata, counted as one
    /// more kernel reference (a lookup). Its number is kept if it had one.
    pub(crate) fn looked_up(&mut self, url: &str, meta: Meta) -> u64 {
        if let Some(&ino) = self.by_url.get(url) {
            let n = self.nodes.get_mut(&ino).expect("by_url and nodes agree");
            if n.meta.version != meta.version || n.meta.kind != meta.kind {
                // Another object now: what the kernel cached is not it.
                n.cached_version = None;
            }
            n.meta = meta;
            n.fetched = Instant::now();
            n.lookups += 1;
            n.local = false;
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_url.insert(url.to_string(), ino);
        self.nodes.insert(
            ino,
            Node {
                url: url.to_string(),
                meta,
                fetched: Instant::now(),
                lookups: 1,
                cached_version: None,
                local: false,
            },
        );
        ino
    }

    /// `url` is gone (unlinked, or renamed away): its inode stays while the
    /// kernel holds it, but a new lookup of `url` gets a new one.
    pub(crate) fn removed(&mut self, url: &str) {
        self.by_url.remove(url);
    }

    /// `from` is now `to`, and so is everything under it: inodes keep their
    /// numbers under their new URLs, and whatever `to` was is gone.
    pub(crate) fn renamed(&mut self, from: &str, to: &str) {
        let below = format!("{from}/");
        let moved: Vec<(String, u64)> = self
            .by_url
            .iter()
            .filter(|(u, _)| u.as_str() == from || u.starts_with(&below))
            .map(|(u, &i)| (u.clone(), i))
            .collect();
        self.removed(to);
        for (old, ino) in moved {
            self.by_url.remove(&old);
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.url = new.clone();
                n.cached_version = None;
            }
            self.by_url.insert(new, ino);
        }
    }

    /// The kernel dropped `n` references to `ino`; the inode goes with the
    /// last one (never the root).
    pub(crate) fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            let node = self.nodes.remove(&ino).expect("present");
            if self.by_url.get(&node.url) == Some(&ino) {
                self.by_url.remove(&node.url);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: &str) -> Meta {
        Meta {
            kind: Kind::File,
            size: 3,
            mtime_ms: 0,
            version: version.into(),
        }
    }

    #[test]
    fn a_url_keeps_its_number_until_forgotten() {
        let root = Meta {
            kind: Kind::Dir,
            size: 0,
            mtime_ms: 0,
            version: String::new(),
        };
        let mut t = Nodes::new("file:///d".into(), root);
        let a = t.looked_up("file:///d/a", file("1"));
        let b = t.looked_up("file:///d/b", file("1"));
        assert_ne!(a, b);
        assert_eq!(t.looked_up("file:///d/a", file("1")), a);
        t.get_mut(a).unwrap().cached_version = Some("1".into());
        // A new version seen by a lookup drops what the kernel cached.
        assert_eq!(t.looked_up("file:///d/a", file("2")), a);
        assert_eq!(t.get(a).unwrap().cached_version, None);
        t.forget(a, 2);
        assert!(t.get(a).is_some(), "one lookup left");
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        let a2 = t.looked_up("file:///d/a", file("2"));
        assert_ne!(a2, a, "a forgotten number is not reused for another lookup");
        let sub = t.looked_up("file:///d/s", file("1"));
        let x = t.looked_up("file:///d/s/x", file("1"));
        let gone = t.looked_up("file:///d/t", file("1"));
        t.renamed("file:///d/s", "file:///d/t");
        assert_eq!(t.ino_of("file:///d/t"), Some(sub));
        assert_eq!(t.ino_of("file:///d/t/x"), Some(x));
        assert_eq!(t.get(x).unwrap().url, "file:///d/t/x");
        assert_eq!(t.ino_of("file:///d/s/x"), None);
        assert!(t.get(gone).is_some(), "the replaced inode stays while held");
        assert_eq!(t.ino_of("file:///d/a"), Some(a2), "a sibling is untouched");
        t.removed("file:///d/a");
        assert_eq!(t.ino_of("file:///d/a"), None);
        assert!(t.get(a2).is_some(), "held by the kernel still");
        t.forget(ROOT, 10);
        assert!(t.get(ROOT).is_some(), "the root stays");
        assert_eq!(t.nodes.len(), 6);
    }
}
