//! A page's identity and its name on disk.
//!
//! A page is named by (normalized URL, object version, page index) and the
//! page size, so a changed object (new version) or a store reopened with
//! another page size never finds old pages. Its [`PageId`] is the xxh3-128
//! hash of that tuple; the page file is `<dir>/pages/<first two hex
//! digits>/<32 hex digits>`. This naming is the on-disk contract with every
//! cache written so far: changing the hash input or its encoding would
//! orphan existing caches, so it must not change.
//!
//! The id is computed when the key is built by [`super::PageStore::key`]
//! (which knows the page size) and carried with it, so the lookups of one
//! read (`contains`, `get_memory`, `get`, `put`) hash the key once. A key
//! built by [`PageKey::new`] has no id yet; the store computes it on each
//! use, as before. The key's fields are read-only so a carried id cannot
//! go stale.

use xxhash_rust::xxh3::xxh3_128;

/// The hash naming a page (index key and file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PageId(pub(crate) u128);

impl PageId {
    /// The id of (`url`, `version`, `index`) in a store of `page_size`.
    pub(crate) fn of(page_size: u64, url: &str, version: &str, index: u64) -> Self {
        let mut buf = Vec::with_capacity(24 + url.len() + version.len());
        buf.extend_from_slice(&page_size.to_le_bytes());
        buf.extend_from_slice(&index.to_le_bytes());
        buf.extend_from_slice(&(url.len() as u64).to_le_bytes());
        buf.extend_from_slice(url.as_bytes());
        buf.extend_from_slice(version.as_bytes());
        PageId(xxh3_128(&buf))
    }

    /// The file name: 32 lowercase hex digits.
    pub(crate) fn hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// The id a page file name stands for; `None` for other names
    /// (temporary or foreign files).
    pub(crate) fn from_file_name(name: &str) -> Option<Self> {
        if name.len() != 32 || !name.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(name, 16).ok().map(PageId)
    }
}

/// The identity of one cached page.
///
/// Equality and hashing are over (URL, version, index) only, whether or
/// not the key carries its id.
#[derive(Debug, Clone)]
pub struct PageKey {
    url: String,
    version: String,
    index: u64,
    /// The id and the page size it was computed for.
    id: Option<(u64, PageId)>,
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
    /// A key without its id (the store hashes it on each use); prefer
    /// [`super::PageStore::key`], which hashes once.
    pub fn new(url: impl Into<String>, version: impl Into<String>, index: u64) -> Self {
        PageKey {
            url: url.into(),
            version: version.into(),
            index,
            id: None,
        }
    }

    /// A key carrying its id for a store of `page_size`.
    pub(crate) fn with_id(
        page_size: u64,
        url: impl Into<String>,
        version: impl Into<String>,
        index: u64,
    ) -> Self {
        let mut key = PageKey::new(url, version, index);
        key.id = Some((
            page_size,
            PageId::of(page_size, &key.url, &key.version, index),
        ));
        key
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

    /// The id in a store of `page_size`: the carried one when it was
    /// computed for that size, else computed now.
    pub(crate) fn id(&self, page_size: u64) -> PageId {
        match self.id {
            Some((size, id)) if size == page_size => id,
            _ => PageId::of(page_size, &self.url, &self.version, self.index),
        }
    }
}

#[cfg(test)]
pub(in crate::store) mod tests {
    use super::*;

    /// The file name of page 3 of (`s3://b/x`, `"v1"`) at 4096-byte pages,
    /// as every version so far has named it.
    pub(in crate::store) const NAME_OF_S3_B_X_V1_3: &str = "332d5b158ba76c12ee61f46bedbebb2b";

    #[test]
    fn the_carried_id_is_the_computed_one_and_names_do_not_change() {
        let plain = PageKey::new("s3://b/x", "\"v1\"", 3);
        let carried = PageKey::with_id(4096, "s3://b/x", "\"v1\"", 3);
        assert_eq!(plain, carried);
        assert_eq!(plain.id(4096), carried.id(4096));
        // Another page size: another page (the carried id is not reused).
        assert_ne!(carried.id(8192), carried.id(4096));
        assert_eq!(carried.id(8192), PageId::of(8192, "s3://b/x", "\"v1\"", 3));
        // The naming of caches on disk, pinned: the hash input is page
        // size, index, URL length (all little endian u64), URL, version.
        let mut buf = Vec::new();
        buf.extend_from_slice(&4096u64.to_le_bytes());
        buf.extend_from_slice(&3u64.to_le_bytes());
        buf.extend_from_slice(&8u64.to_le_bytes());
        buf.extend_from_slice(b"s3://b/x\"v1\"");
        let expected = format!("{:032x}", xxh3_128(&buf));
        assert_eq!(expected, NAME_OF_S3_B_X_V1_3);
        assert_eq!(carried.id(4096).hex(), expected);
        assert_eq!(PageId::from_file_name(&expected), Some(carried.id(4096)));
        assert_eq!(PageId::from_file_name("ab00.tmp.123"), None);
    }
}
