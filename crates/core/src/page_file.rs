//! The page file format and its checks, shared by the worker that writes
//! page files and the same-node client that reads them ([`crate::local`]).
//!
//! Each page file is self-describing: a header (magic `AXFSPAGE`, format
//! version, page size, page index, data length, xxh3-64 of the data, URL
//! length, version length, URL, version; integers little endian) followed
//! by the data. The header lets the worker's restart scan rebuild its index
//! without reading data, and lets every read check that the file is the
//! page asked for and that its bytes are intact: [`check_header`] checks the
//! header against the page wanted, [`verify`] also the data length and the
//! checksum. Whoever reads a page file (the worker, or a client given its
//! descriptor) runs exactly these checks; unverified bytes are never served.
//!
//! Pure encoding and decoding: no file I/O here. The format is the on-disk
//! contract with every cache written so far: it must not change without a
//! new format version that readers still accept.

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 8] = b"AXFSPAGE";
const FORMAT_VERSION: u32 = 1;
/// Fixed part of the header: magic, format, page size, index, data length,
/// checksum, URL length, version length.
pub const FIXED_HEADER: usize = 8 + 4 + 8 + 8 + 8 + 8 + 4 + 4;
const MAX_TEXT: usize = 64 * 1024;

/// Bytes of the header of a page of `url` at `version`.
pub fn header_len(url: &str, version: &str) -> usize {
    FIXED_HEADER + url.len() + version.len()
}

/// The checksum of a page's data (xxh3-64).
pub fn checksum(data: &[u8]) -> u64 {
    xxh3_64(data)
}

/// The header of `data` as page `index` of (`url`, `version`) in a store of
/// `page_size`.
pub fn encode_header(page_size: u64, url: &str, version: &str, index: u64, data: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(header_len(url, version));
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&page_size.to_le_bytes());
    h.extend_from_slice(&index.to_le_bytes());
    h.extend_from_slice(&(data.len() as u64).to_le_bytes());
    h.extend_from_slice(&checksum(data).to_le_bytes());
    h.extend_from_slice(&(url.len() as u32).to_le_bytes());
    h.extend_from_slice(&(version.len() as u32).to_le_bytes());
    h.extend_from_slice(url.as_bytes());
    h.extend_from_slice(version.as_bytes());
    h
}

/// A decoded page header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The page size of the store that wrote it.
    pub page_size: u64,
    /// The page's index in its file.
    pub index: u64,
    /// Bytes of data after the header.
    pub data_len: u64,
    /// xxh3-64 of the data.
    pub checksum: u64,
    /// The normalized URL of the file.
    pub url: String,
    /// The object version the data belongs to.
    pub version: String,
}

impl Header {
    /// Bytes of this header in the file.
    pub fn len(&self) -> usize {
        header_len(&self.url, &self.version)
    }

    /// Whether the header has no text (never true of a valid page).
    pub fn is_empty(&self) -> bool {
        self.url.is_empty() && self.version.is_empty()
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The lengths of the URL and version that follow the fixed header part
/// `b` (checked: magic, format, text bounds).
pub fn text_lens(b: &[u8]) -> std::result::Result<(usize, usize), String> {
    if b.len() < FIXED_HEADER {
        return Err("file shorter than a page header".into());
    }
    if &b[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let format = u32_at(b, 8);
    if format != FORMAT_VERSION {
        return Err(format!("unknown page format {format}"));
    }
    let url_len = u32_at(b, 44) as usize;
    let version_len = u32_at(b, 48) as usize;
    if url_len > MAX_TEXT || version_len > MAX_TEXT {
        return Err("header text too long".into());
    }
    Ok((url_len, version_len))
}

/// Decode the header at the start of `b`.
pub fn decode_header(b: &[u8]) -> std::result::Result<Header, String> {
    let (url_len, version_len) = text_lens(b)?;
    let end = FIXED_HEADER + url_len + version_len;
    if b.len() < end {
        return Err("truncated header".into());
    }
    let url = std::str::from_utf8(&b[FIXED_HEADER..FIXED_HEADER + url_len])
        .map_err(|_| "URL is not UTF-8")?
        .to_string();
    let version = std::str::from_utf8(&b[FIXED_HEADER + url_len..end])
        .map_err(|_| "version is not UTF-8")?
        .to_string();
    Ok(Header {
        page_size: u64_at(b, 12),
        index: u64_at(b, 20),
        data_len: u64_at(b, 28),
        checksum: u64_at(b, 36),
        url,
        version,
    })
}

/// Whether `h` is the header of page `index` of (`url`, `version`) in a
/// store of `page_size`.
pub fn check_header(
    h: &Header,
    page_size: u64,
    url: &str,
    version: &str,
    index: u64,
) -> std::result::Result<(), String> {
    if h.page_size != page_size || h.index != index || h.url != url || h.version != version {
        return Err("header does not match the page key".into());
    }
    if h.data_len > page_size {
        return Err("data length exceeds the page size".into());
    }
    Ok(())
}

/// The data of the page file `raw`, if it is page `index` of (`url`,
/// `version`) of a store of `page_size` and its checksum holds; else why
/// not.
pub fn verify(
    page_size: u64,
    url: &str,
    version: &str,
    index: u64,
    raw: Vec<u8>,
) -> std::result::Result<Bytes, String> {
    let h = decode_header(&raw)?;
    check_header(&h, page_size, url, version, index)?;
    let start = h.len();
    if Some(raw.len() as u64) != (start as u64).checked_add(h.data_len) {
        return Err("data length does not match the header".into());
    }
    let data = Bytes::from(raw).slice(start..);
    if checksum(&data) != h.checksum {
        return Err("checksum mismatch".into());
    }
    Ok(data)
}

/// The id naming page `index` of (`url`, `version`) in a store of
/// `page_size`: xxh3-128 of page size, index, URL length (little endian
/// u64 each), URL and version. A packed record carries it, so whoever
/// reads the record checks it is the page asked for. This hash input is an
/// on-disk contract: it must not change.
pub fn page_id(page_size: u64, url: &str, version: &str, index: u64) -> u128 {
    let mut buf = Vec::with_capacity(24 + url.len() + version.len());
    buf.extend_from_slice(&page_size.to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&(url.len() as u64).to_le_bytes());
    buf.extend_from_slice(url.as_bytes());
    buf.extend_from_slice(version.as_bytes());
    xxhash_rust::xxh3::xxh3_128(&buf)
}

/// The hash of a normalized URL that a store indexes pages by.
pub fn url_hash(url: &str) -> u64 {
    xxh3_64(url.as_bytes())
}

/// The 32-bit hash of an object version that a store keeps per page.
pub fn version_hash(version: &str) -> u32 {
    xxh3_64(version.as_bytes()) as u32
}

// ---------------------------------------------------------------------
// Packed records (format 2): small pages side by side in segment files.
// ---------------------------------------------------------------------

/// Magic of a packed record.
const RECORD_MAGIC: &[u8; 4] = b"AXR2";
/// Bytes of a packed record's header: magic, data length (u32), URL hash
/// (u64), page index (u32), version hash (u32), page id (u128), xxh3-64
/// of the data (u64); little endian.
pub const RECORD_HEADER: usize = 4 + 4 + 8 + 4 + 4 + 16 + 8;
/// Records start at multiples of this in a segment file.
pub const RECORD_ALIGN: usize = 8;

/// Bytes a record of `data_len` bytes of data takes in a segment file
/// (header, data, padding to [`RECORD_ALIGN`]).
pub fn record_len(data_len: usize) -> usize {
    (RECORD_HEADER + data_len).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// A decoded packed-record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Bytes of data after the header.
    pub data_len: u32,
    /// [`url_hash`] of the page's URL.
    pub url_hash: u64,
    /// The page index (pages past `u32::MAX` are never packed).
    pub index: u32,
    /// [`version_hash`] of the page's version.
    pub version_hash: u32,
    /// [`page_id`] of the page.
    pub id: u128,
    /// xxh3-64 of the data.
    pub checksum: u64,
}

/// The packed record of `data` as page `index` (at most `u32::MAX`) of
/// (`url`, `version`) in a store of `page_size`, padded to
/// [`record_len`].
pub fn encode_record(page_size: u64, url: &str, version: &str, index: u64, data: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(record_len(data.len()));
    r.extend_from_slice(RECORD_MAGIC);
    r.extend_from_slice(&(data.len() as u32).to_le_bytes());
    r.extend_from_slice(&url_hash(url).to_le_bytes());
    r.extend_from_slice(&(index as u32).to_le_bytes());
    r.extend_from_slice(&version_hash(version).to_le_bytes());
    r.extend_from_slice(&page_id(page_size, url, version, index).to_le_bytes());
    r.extend_from_slice(&checksum(data).to_le_bytes());
    r.extend_from_slice(data);
    r.resize(record_len(data.len()), 0);
    r
}

/// Decode the record header at the start of `b`.
pub fn decode_record_header(b: &[u8]) -> std::result::Result<RecordHeader, String> {
    if b.len() < RECORD_HEADER {
        return Err("shorter than a record header".into());
    }
    if &b[..4] != RECORD_MAGIC {
        return Err("bad record magic".into());
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[24..40]);
    Ok(RecordHeader {
        data_len: u32_at(b, 4),
        url_hash: u64_at(b, 8),
        index: u32_at(b, 16),
        version_hash: u32_at(b, 20),
        id: u128::from_le_bytes(id),
        checksum: u64_at(b, 40),
    })
}

/// Whether `raw` starts with a packed record rather than a page file.
pub fn is_record(raw: &[u8]) -> bool {
    raw.len() >= 4 && &raw[..4] == RECORD_MAGIC
}

/// The data of the packed record `raw` (header, data, optional padding),
/// if it is page `index` of (`url`, `version`) of a store of `page_size`
/// and its checksum holds; else why not.
pub fn verify_record(
    page_size: u64,
    url: &str,
    version: &str,
    index: u64,
    raw: Bytes,
) -> std::result::Result<Bytes, String> {
    let h = decode_record_header(&raw)?;
    check_record(&h, page_size, url, version, index)?;
    let end = RECORD_HEADER + h.data_len as usize;
    if raw.len() < end {
        return Err("record shorter than its header says".into());
    }
    let data = raw.slice(RECORD_HEADER..end);
    if checksum(&data) != h.checksum {
        return Err("checksum mismatch".into());
    }
    Ok(data)
}

/// Whether `h` is the record header of page `index` of (`url`, `version`)
/// in a store of `page_size` (the data checksum is checked separately).
pub fn check_record(
    h: &RecordHeader,
    page_size: u64,
    url: &str,
    version: &str,
    index: u64,
) -> std::result::Result<(), String> {
    if h.id != page_id(page_size, url, version, index)
        || h.url_hash != url_hash(url)
        || u64::from(h.index) != index
        || h.version_hash != version_hash(version)
    {
        return Err("record is not the page asked for".into());
    }
    if u64::from(h.data_len) > page_size {
        return Err("data length exceeds the page size".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_roundtrips_and_verifies() {
        let data = b"hello page";
        let mut raw = encode_header(4096, "s3://b/x", "e", 7, data);
        assert_eq!(raw.len(), header_len("s3://b/x", "e"));
        let h = decode_header(&raw).unwrap();
        assert_eq!((h.page_size, h.index, h.data_len), (4096, 7, 10));
        assert_eq!((h.url.as_str(), h.version.as_str()), ("s3://b/x", "e"));
        raw.extend_from_slice(data);
        let ok = |ps, v: &str, i, raw: &Vec<u8>| verify(ps, "s3://b/x", v, i, raw.clone());
        assert_eq!(&ok(4096, "e", 7, &raw).unwrap()[..], data);
        assert!(ok(8192, "e", 7, &raw).is_err(), "page size");
        assert!(ok(4096, "e", 8, &raw).is_err(), "index");
        assert!(ok(4096, "f", 7, &raw).is_err(), "version");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(ok(4096, "e", 7, &raw).unwrap_err(), "checksum mismatch");
    }
    #[test]
    fn a_record_roundtrips_and_verifies() {
        let data = b"small page";
        let raw = encode_record(4096, "s3://b/x", "e", 7, data);
        assert_eq!(raw.len(), record_len(data.len()));
        assert_eq!(raw.len() % RECORD_ALIGN, 0);
        assert!(is_record(&raw));
        let h = decode_record_header(&raw).unwrap();
        assert_eq!((h.data_len, h.index), (10, 7));
        assert_eq!(h.url_hash, url_hash("s3://b/x"));
        assert_eq!(h.version_hash, version_hash("e"));
        let ok = |ps, v: &str, i, raw: &Vec<u8>| {
            verify_record(ps, "s3://b/x", v, i, Bytes::from(raw.clone()))
        };
        assert_eq!(&ok(4096, "e", 7, &raw).unwrap()[..], data);
        assert!(ok(8192, "e", 7, &raw).is_err(), "page size");
        assert!(ok(4096, "e", 8, &raw).is_err(), "index");
        assert!(ok(4096, "f", 7, &raw).is_err(), "version");
        let mut bad = raw.clone();
        bad[RECORD_HEADER + 3] ^= 1;
        assert_eq!(ok(4096, "e", 7, &bad).unwrap_err(), "checksum mismatch");
        let mut short = raw.clone();
        short.truncate(RECORD_HEADER + 2);
        assert!(ok(4096, "e", 7, &short).is_err(), "truncated");
    }
}
