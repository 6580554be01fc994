//! Parquet footers: where each column chunk of each row group lies.
//!
//! The Parquet-aware prefetch of [`crate::reader::Reader`] needs only the
//! byte range of every column chunk. That lives in the file's footer,
//! `FileMetaData` in Thrift's compact protocol, followed by its 4-byte
//! little-endian length and the magic `PAR1`. The footer comes from files
//! anyone may have written and is decoded inside every client process, so it
//! is decoded by the `parquet` crate (fuzzed upstream; default features off:
//! no Arrow, no compression codecs), never by a parser of our own. Anything
//! it refuses is an error, and an unparsable footer just turns the prefetch
//! off for that file.
//!
//! A chunk starts at its dictionary page when it has one, else at its first
//! data page, and is `total_compressed_size` bytes long
//! (`ColumnChunkMetaData::byte_range`): exactly the range a reader asks for.
//!
//! Footers are kept per process in a small LRU ([`FooterCache`]) keyed by
//! URL and object version, together with the tail bytes of the file that
//! readers ask for first, so the second open of a file asks the workers for
//! neither.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaDataReader};

use crate::error::{Error, Result};

/// The magic at both ends of a Parquet file.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// The column chunk ranges of one Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// Column paths (dotted `path_in_schema`), in file order.
    pub columns: Vec<String>,
    /// `row_groups[rg][col]`: the byte range of that column chunk.
    pub row_groups: Vec<Vec<Range<u64>>>,
}

impl Layout {
    /// The (row group, column) whose chunk contains `[start, end)`, if the
    /// range lies inside one chunk.
    pub fn chunk_at(&self, start: u64, end: u64) -> Option<(usize, usize)> {
        for (rg, cols) in self.row_groups.iter().enumerate() {
            for (c, r) in cols.iter().enumerate() {
                if r.start <= start && end <= r.end && start < r.end {
                    return Some((rg, c));
                }
            }
        }
        None
    }

    /// The byte range of column `col` in row group `rg`.
    pub fn chunk(&self, rg: usize, col: usize) -> Option<Range<u64>> {
        self.row_groups.get(rg)?.get(col).cloned()
    }
}

/// The length of the footer given the last 8 bytes of a file (`len`,
/// `PAR1`), or `None` when they are not a Parquet trailer.
pub fn footer_len(trailer: &[u8]) -> Option<u64> {
    if trailer.len() < 8 || &trailer[trailer.len() - 4..] != MAGIC {
        return None;
    }
    let n = trailer.len();
    let len = u32::from_le_bytes(trailer[n - 8..n - 4].try_into().ok()?);
    Some(u64::from(len))
}

/// Parse the layout from the last bytes of a file (`tail`: at least the
/// footer, its length and the magic). `file_size` checks the ranges.
pub fn parse_tail(tail: &[u8], file_size: u64) -> Result<Layout> {
    let len = footer_len(tail).ok_or_else(|| bad("no Parquet trailer"))? as usize;
    if len + 8 > tail.len() {
        return Err(bad("footer longer than the bytes given"));
    }
    let meta = &tail[tail.len() - 8 - len..tail.len() - 8];
    let layout = parse_file_metadata(meta)?;
    for cols in &layout.row_groups {
        for r in cols {
            if r.end > file_size {
                return Err(bad("column chunk past the end of the file"));
            }
        }
    }
    Ok(layout)
}

fn bad(what: &str) -> Error {
    Error::InvalidArgument(format!("parquet footer: {what}"))
}

/// Where a column chunk lies. (Not `ColumnChunkMetaData::byte_range`, which
/// asserts on negative offsets: a hostile footer must not panic a client.)
fn chunk_range(col: &ColumnChunkMetaData) -> Result<Range<u64>> {
    let data = col.data_page_offset();
    // Some writers set dictionary_page_offset to 0 for "none"; a dictionary
    // page always comes before the first data page.
    let start = match col.dictionary_page_offset() {
        Some(d) if d > 0 && d < data => d,
        _ => data,
    };
    let (Ok(start), Ok(len)) = (u64::try_from(start), u64::try_from(col.compressed_size())) else {
        return Err(bad("negative offset or size"));
    };
    let end = start
        .checked_add(len)
        .ok_or_else(|| bad("chunk end overflows"))?;
    Ok(start..end)
}

/// The layout of a `FileMetaData` (the footer without length and magic).
fn parse_file_metadata(meta: &[u8]) -> Result<Layout> {
    let decoded = ParquetMetaDataReader::decode_metadata(meta).map_err(|e| bad(&e.to_string()))?;
    let mut layout = Layout::default();
    for rg in decoded.row_groups() {
        let mut ranges = Vec::with_capacity(rg.num_columns());
        for col in rg.columns() {
            ranges.push(chunk_range(col)?);
        }
        if layout.columns.is_empty() {
            layout.columns = rg
                .columns()
                .iter()
                .map(|c| c.column_path().string())
                .collect();
        }
        layout.row_groups.push(ranges);
    }
    Ok(layout)
}

// ---- per-process footer cache ---------------------------------------------

/// What is kept of one file: its layout and its last bytes.
#[derive(Debug)]
pub struct Footer {
    /// The column chunk ranges.
    pub layout: Layout,
    /// File offset of `tail`.
    pub tail_start: u64,
    /// The last bytes of the file (at least the footer, as first read).
    pub tail: Vec<u8>,
}

impl Footer {
    /// Copy `[offset, offset + buf.len())` out of the kept tail, if it lies
    /// inside it; returns whether it did.
    pub fn copy_tail(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset + buf.len() as u64;
        let tail_end = self.tail_start + self.tail.len() as u64;
        if offset < self.tail_start || end > tail_end {
            return false;
        }
        let from = (offset - self.tail_start) as usize;
        buf.copy_from_slice(&self.tail[from..from + buf.len()]);
        true
    }
}

type CacheEntry = ((Arc<str>, Option<Arc<str>>), Arc<Footer>);

/// A bounded LRU of footers, keyed by (URL, object version). The version
/// makes a changed object a different entry, so a stale footer is never used.
pub struct FooterCache {
    entries: Mutex<Vec<CacheEntry>>,
    max_entries: usize,
    max_bytes: usize,
}

impl FooterCache {
    /// A cache of at most `max_entries` footers and `max_bytes` of kept tails.
    pub const fn new(max_entries: usize, max_bytes: usize) -> Self {
        FooterCache {
            entries: Mutex::new(Vec::new()),
            max_entries,
            max_bytes,
        }
    }

    /// The footer of `url` at `version`, most recently used first.
    pub fn get(&self, url: &str, version: Option<&str>) -> Option<Arc<Footer>> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let i = e
            .iter()
            .position(|((u, v), _)| &**u == url && v.as_deref() == version)?;
        let hit = e.remove(i);
        let f = hit.1.clone();
        e.insert(0, hit);
        Some(f)
    }

    /// Keep `footer` for `url` at `version`, evicting the least recently used.
    pub fn put(&self, url: Arc<str>, version: Option<Arc<str>>, footer: Arc<Footer>) {
        if footer.tail.len() > self.max_bytes {
            return;
        }
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|((u, v), _)| !(u == &url && v == &version));
        e.insert(0, ((url, version), footer));
        let mut bytes: usize = e.iter().map(|(_, f)| f.tail.len()).sum();
        while e.len() > self.max_entries || bytes > self.max_bytes {
            match e.pop() {
                Some((_, f)) => bytes -= f.tail.len(),
                None => break,
            }
        }
    }

    /// How many footers are kept.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no footer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The footers of this process: 256 files, 64 MiB of kept tails.
pub static FOOTERS: FooterCache = FooterCache::new(256, 64 << 20);

#[cfg(test)]
mod tests {
    use super::*;

    /// A Parquet file written by pyarrow 26 (`tests/fixtures` README): three
    /// columns `a` (int64), `b` (double), `s` (string), 3 row groups of 1000 rows.
    const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/three_rg.parquet");

    #[test]
    fn parses_the_pyarrow_fixture() {
        let size = FIXTURE.len() as u64;
        let layout = parse_tail(FIXTURE, size).unwrap();
        assert_eq!(layout.columns, vec!["a", "b", "s"]);
        assert_eq!(layout.row_groups.len(), 3);
        // Expected ranges, printed by pyarrow from the same file.
        let want: Vec<Vec<Range<u64>>> =
            serde_json::from_str(include_str!("../tests/fixtures/three_rg.ranges.json")).unwrap();
        assert_eq!(layout.row_groups, want);
        let r = layout.chunk(1, 2).unwrap();
        assert_eq!(layout.chunk_at(r.start, r.end), Some((1, 2)));
        assert_eq!(layout.chunk_at(r.start + 1, r.end - 1), Some((1, 2)));
        assert_eq!(layout.chunk_at(size - 8, size), None);
    }

    #[test]
    fn a_short_tail_or_no_magic_is_an_error() {
        let size = FIXTURE.len() as u64;
        assert!(parse_tail(&FIXTURE[FIXTURE.len() - 20..], size).is_err());
        assert!(parse_tail(b"not a parquet file at all", 25).is_err());
        assert_eq!(footer_len(b"PAR"), None);
    }

    #[test]
    fn cache_is_keyed_by_version_and_bounded() {
        let cache = FooterCache::new(2, 100);
        let f = |n: usize| {
            Arc::new(Footer {
                layout: Layout::default(),
                tail_start: 0,
                tail: vec![0; n],
            })
        };
        cache.put("s3://b/x".into(), Some("v1".into()), f(10));
        assert!(cache.get("s3://b/x", Some("v1")).is_some());
        assert!(cache.get("s3://b/x", Some("v2")).is_none());
        cache.put("s3://b/y".into(), None, f(10));
        cache.put("s3://b/z".into(), None, f(10));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("s3://b/x", Some("v1")).is_none(), "LRU evicted");
        cache.put("s3://b/big".into(), None, f(95));
        assert_eq!(cache.len(), 1, "byte bound evicts older entries");
        let ft = f(0);
        assert!(ft.copy_tail(0, &mut []));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(0u8..=255, 0..600)) {
            let mut tail = bytes.clone();
            tail.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            tail.extend_from_slice(MAGIC);
            let _ = parse_tail(&tail, u64::MAX);
        }

        #[test]
        fn never_panics_on_a_mutated_footer(pos in 0usize..4096, val in 0u8..=255) {
            let mut f = FIXTURE.to_vec();
            let n = f.len();
            let len = footer_len(&f).unwrap() as usize;
            let i = n - 8 - len + pos % len;
            f[i] = val;
            let _ = parse_tail(&f, n as u64);
        }
    }
}
