//! A page's identity: what the index keys it by and what its bytes on disk
//! are checked against.
//!
//! A page is named by (normalized URL, object version, page index) and the
//! page size, so a changed object (new version) or a store reopened with
//! another page size never finds old pages. Three hashes of that tuple are
//! used, all computed once when the key is built ([`super::PageStore::key`],
//! which knows the page size) and carried with it, so the lookups of one
//! read hash nothing again:
//!
//! - the **slot key** (64-bit URL hash, 32-bit page index): the index keeps
//!   one page per (URL, page index), so the pages of a URL are found from
//!   its URL alone, without keeping the URL in memory (an object has one
//!   current version; a page of another version is stale and replaced);
//! - the 32-bit **version hash**, kept per page: a page of another version
//!   is a miss;
//! - the 128-bit **page id** ([`alluxiofs_core::page_file::page_id`]), which
//!   every packed record carries: a read checks it (and the data checksum),
//!   so a hash collision in the 96 bits the index keeps can cost a miss,
//!   never wrong bytes. One-file pages carry the URL and version themselves.
//!
//! The key's fields are read-only so carried hashes cannot go stale.

use alluxiofs_core::page_file::{page_id, url_hash, version_hash};

/// The index key of a page: (URL hash, page index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SlotKey {
    pub(crate) url_hash: u64,
    pub(crate) index: u32,
}

impl SlotKey {
    /// The hash the index's table places the key by.
    pub(crate) fn table_hash(self) -> u64 {
        // The URL hash is already uniform; mixing the index in keeps the
        // pages of one file apart.
        (self.url_hash ^ u64::from(self.index).wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17)
    }
}

/// The hashes of a key for one page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hashes {
    pub(crate) page_size: u64,
    pub(crate) slot: SlotKey,
    pub(crate) version_hash: u32,
    pub(crate) id: u128,
}

impl Hashes {
    /// The memory tier's name of the page.
    pub(crate) fn memory_key(&self) -> u128 {
        memory_key(self.slot, self.version_hash)
    }
}

/// The memory tier's name of the page at `slot` of version hash `vh`.
pub(crate) fn memory_key(slot: SlotKey, vh: u32) -> u128 {
    (u128::from(slot.url_hash) << 64) | (u128::from(slot.index) << 32) | u128::from(vh)
}

/// The identity of one cached page.
///
/// Equality and hashing are over (URL, version, index) only, whether or
/// not the key carries its hashes.
#[derive(Debug, Clone)]
pub struct PageKey {
    url: String,
    version: String,
    index: u64,
    hashes: Option<Hashes>,
}

impl PartialEq for PageKey {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.url == other.url && self.version == other.version
    }
}

impl Eq for PageKey {}

impl std::hash::Hash for PageKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.url.hash(state);
        self.version.hash(state);
        self.index.hash(state);
    }
}

impl PageKey {
    /// A key without its hashes (the store computes them on each use);
    /// prefer [`super::PageStore::key`], which hashes once.
    pub fn new(url: impl Into<String>, version: impl Into<String>, index: u64) -> Self {
        PageKey {
            url: url.into(),
            version: version.into(),
            index,
            hashes: None,
        }
    }

    /// A key carrying its hashes for a store of `page_size`.
    pub(crate) fn with_hashes(
        page_size: u64,
        url: impl Into<String>,
        version: impl Into<String>,
        index: u64,
    ) -> Self {
        let mut key = PageKey::new(url, version, index);
        key.hashes = Some(key.compute(page_size));
        key
    }

    fn compute(&self, page_size: u64) -> Hashes {
        Hashes {
            page_size,
            slot: SlotKey {
                url_hash: url_hash(&self.url),
                index: self.index.min(u64::from(u32::MAX)) as u32,
            },
            version_hash: version_hash(&self.version),
            id: page_id(page_size, &self.url, &self.version, self.index),
        }
    }

    /// Normalized UFS URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Object version (ETag or `<mtime_ms>-<size>`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Page index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Whether the index can hold this page (its index fits 32 bits).
    pub(crate) fn indexable(&self) -> bool {
        self.index < u64::from(u32::MAX)
    }

    /// The hashes in a store of `page_size`: the carried ones when they
    /// were computed for that size, else computed now.
    pub(crate) fn hashes(&self, page_size: u64) -> Hashes {
        match self.hashes {
            Some(h) if h.page_size == page_size => h,
            _ => self.compute(page_size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_hashes_are_the_computed_ones() {
        let plain = PageKey::new("s3://b/x", "\"v1\"", 3);
        let carried = PageKey::with_hashes(4096, "s3://b/x", "\"v1\"", 3);
        assert_eq!(plain, carried);
        assert_eq!(plain.hashes(4096), carried.hashes(4096));
        // Another page size: another page id (the carried one is not reused).
        assert_ne!(carried.hashes(8192).id, carried.hashes(4096).id);
        assert_eq!(carried.hashes(8192), plain.hashes(8192));
        let h = carried.hashes(4096);
        assert_eq!(h.slot.url_hash, url_hash("s3://b/x"));
        assert_eq!(h.slot.index, 3);
        // Another version: the same slot, another version hash.
        let v2 = PageKey::new("s3://b/x", "\"v2\"", 3).hashes(4096);
        assert_eq!(v2.slot, h.slot);
        assert_ne!(v2.version_hash, h.version_hash);
        assert!(!PageKey::new("u", "v", u64::from(u32::MAX)).indexable());
    }
}
