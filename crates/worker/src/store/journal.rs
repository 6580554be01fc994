//! The persisted index: a journal of fixed-size records and a file of
//! URLs, per cache directory, under `<dir>/index/`.
//!
//! - **`journal`**: a 40-byte header (magic, format, page size) then
//!   40-byte records, each `PUT` (a page is on disk: URL hash, page index,
//!   version hash, segment or one-file, offset, length, when cached) or
//!   `DEL` (it is gone), each with a checksum of its own. Replaying it in
//!   order rebuilds the index; a torn or corrupt tail ends the replay
//!   there. Records are buffered in memory and written, after an
//!   `fdatasync` of the segments they point into, every persistence
//!   interval (and at shutdown), so a crash loses at most the pages cached
//!   in the last interval, which are then misses.
//! - **`names`**: one record per URL when its first page is cached (URL
//!   hash and URL). The index keeps no URLs in memory; this file is read
//!   only for work by prefix (pins, frees, invalidation of a tree, TTL
//!   rules), for the `path_id` map, and at a start with such rules.
//! - **Checkpoints.** When the journal holds more than twice as many
//!   records as there are pages (or more than a million dead ones), it is
//!   rewritten with one `PUT` per page (temporary file, fsync, rename), and
//!   `names` with the URLs that still have pages.
//!
//! A restart reads the journal (40 bytes per page: 400 MB for 10 million
//! pages), lists the segment and one-file directories (names and lengths,
//! no contents), drops what points at missing or short files and deletes
//! what nothing points at. It never reads a page.

use super::index::{Slot, LARGE};
use super::key::SlotKey;
use crate::error::{Result, WorkerError};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

/// Bytes of a journal record (and of the journal header).
pub(super) const RECORD: usize = 40;
const MAGIC: &[u8; 8] = b"AXFSIDX1";
const FORMAT: u32 = 1;
const PUT: u8 = 1;
const DEL: u8 = 2;
/// Longest URL a names record holds (longer URLs are not named: their
/// pages are still cached and served, but prefix operations miss them).
pub(super) const MAX_NAME: usize = u16::MAX as usize;

/// A decoded journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rec {
    pub(super) put: bool,
    pub(super) key: SlotKey,
    pub(super) version_hash: u32,
    pub(super) seg: u32,
    pub(super) off: u32,
    pub(super) len: u32,
    pub(super) created: u32,
}

fn crc(b: &[u8]) -> u32 {
    xxh3_64(b) as u32
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Append the record of `rec` to `out`.
pub(super) fn encode(out: &mut Vec<u8>, rec: &Rec) {
    let mut b = [0u8; RECORD];
    b[0] = if rec.put { PUT } else { DEL };
    b[4..12].copy_from_slice(&rec.key.url_hash.to_le_bytes());
    put_u32(&mut b, 12, rec.key.index);
    put_u32(&mut b, 16, rec.version_hash);
    put_u32(&mut b, 20, rec.seg);
    put_u32(&mut b, 24, rec.off);
    put_u32(&mut b, 28, rec.len);
    put_u32(&mut b, 32, rec.created);
    let c = crc(&b[..36]);
    put_u32(&mut b, 36, c);
    out.extend_from_slice(&b);
}

/// A `PUT` of slot `s`.
pub(super) fn put_of(s: &Slot) -> Rec {
    Rec {
        put: true,
        key: s.key(),
        version_hash: s.version_hash,
        seg: s.seg,
        off: s.off,
        len: s.len,
        created: s.created,
    }
}

/// A `DEL` of slot `s`.
pub(super) fn del_of(s: &Slot) -> Rec {
    Rec {
        put: false,
        ..put_of(s)
    }
}

fn decode(b: &[u8]) -> Option<Rec> {
    if crc(&b[..36]) != u32_at(b, 36) {
        return None;
    }
    let put = match b[0] {
        PUT => true,
        DEL => false,
        _ => return None,
    };
    Some(Rec {
        put,
        key: SlotKey {
            url_hash: u64_at(b, 4),
            index: u32_at(b, 12),
        },
        version_hash: u32_at(b, 16),
        seg: u32_at(b, 20),
        off: u32_at(b, 24),
        len: u32_at(b, 28),
        created: u32_at(b, 32),
    })
}

fn header(page_size: u64) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    b[..8].copy_from_slice(MAGIC);
    put_u32(&mut b, 8, FORMAT);
    b[12..20].copy_from_slice(&page_size.to_le_bytes());
    let c = crc(&b[..36]);
    put_u32(&mut b, 36, c);
    b
}

/// Append the names record of `url` to `out`.
pub(super) fn encode_name(out: &mut Vec<u8>, url_hash: u64, url: &str) {
    if url.len() > MAX_NAME {
        return;
    }
    let start = out.len();
    out.extend_from_slice(&(url.len() as u16).to_le_bytes());
    out.extend_from_slice(&url_hash.to_le_bytes());
    out.extend_from_slice(url.as_bytes());
    let c = crc(&out[start..]);
    out.extend_from_slice(&c.to_le_bytes());
}

/// The files of one directory's persisted index.
#[derive(Debug)]
pub(super) struct Files {
    dir: PathBuf,
    journal: File,
    names: File,
    /// Bytes in the names file.
    names_len: u64,
    /// Records in the journal (the header not counted).
    pub(super) records: u64,
    page_size: u64,
}

/// What a directory's journal held.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// The good records replayed.
    pub(super) records: u64,
    /// Whether a journal of this page size was there (else the directory
    /// is new, of an older layout, or of another page size).
    pub(super) found: bool,
    /// Whether the journal ended in a torn or corrupt record.
    pub(super) torn: bool,
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn open_append(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| WorkerError::io(format!("cannot open {}", path.display()), e))
}

impl Files {
    /// The index directory of cache directory `root`.
    pub(super) fn dir_of(root: &Path) -> PathBuf {
        root.join("index")
    }

    /// Records the journal of `root` holds at most (from its length).
    pub(super) fn records_hint(root: &Path) -> u64 {
        (file_len(&Self::dir_of(root).join("journal")) / RECORD as u64).saturating_sub(1)
    }

    /// Replay the journal of `root` (if any) for a store of `page_size`:
    /// `f` gets each good record in order, straight from the file (the
    /// records are never all in memory).
    pub(super) fn replay(root: &Path, page_size: u64, f: &mut dyn FnMut(&Rec)) -> Result<Loaded> {
        let dir = Self::dir_of(root);
        let path = dir.join("journal");
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(e) => {
                return Err(WorkerError::io(
                    format!("cannot read {}", path.display()),
                    e,
                ))
            }
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut b = [0u8; RECORD];
        if r.read_exact(&mut b).is_err() || b != header(page_size) {
            tracing::warn!(file = %path.display(), "index journal of another format or page size: starting empty");
            return Ok(Loaded::default());
        }
        let mut out = Loaded {
            records: 0,
            found: true,
            torn: false,
        };
        loop {
            match r.read_exact(&mut b) {
                Ok(()) => match decode(&b) {
                    Some(rec) => {
                        f(&rec);
                        out.records += 1;
                    }
                    None => {
                        out.torn = true;
                        break;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    out.torn = out.records * RECORD as u64 + (RECORD as u64) < len;
                    break;
                }
                Err(e) => {
                    return Err(WorkerError::io(
                        format!("cannot read {}", path.display()),
                        e,
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Start a fresh journal for `root` holding `recs`, and open both files
    /// for appending (the names file is kept).
    pub(super) fn create(root: &Path, page_size: u64, recs: &[u8]) -> Result<Files> {
        let dir = Self::dir_of(root);
        std::fs::create_dir_all(&dir)
            .map_err(|e| WorkerError::io(format!("cannot create {}", dir.display()), e))?;
        write_replacing(&dir.join("journal"), &[&header(page_size), recs])?;
        Ok(Files {
            journal: open_append(&dir.join("journal"))?,
            names_len: file_len(&dir.join("names")),
            names: open_append(&dir.join("names"))?,
            records: (recs.len() / RECORD) as u64,
            dir,
            page_size,
        })
    }

    /// Open the journal of `root` (replayed just before: `records` good
    /// ones) for appending, cutting off a torn tail; after a crash
    /// (`clean` false) also cut the names file after its last good record.
    pub(super) fn open_existing(
        root: &Path,
        page_size: u64,
        records: u64,
        clean: bool,
    ) -> Result<Files> {
        let dir = Self::dir_of(root);
        let cut = |path: &Path, len: u64| -> Result<()> {
            let f = File::options()
                .write(true)
                .open(path)
                .map_err(|e| WorkerError::io(format!("cannot open {}", path.display()), e))?;
            if f.metadata().map(|m| m.len()).unwrap_or(0) > len {
                f.set_len(len)
                    .map_err(|e| WorkerError::io(format!("cannot repair {}", path.display()), e))?;
            }
            Ok(())
        };
        cut(&dir.join("journal"), (records + 1) * RECORD as u64)?;
        if !clean {
            let names = dir.join("names");
            let mut good = 0u64;
            if names.exists() {
                for_each_name_chunk_at(&names, &mut |_, end| good = end)?;
                cut(&names, good)?;
            }
        }
        Ok(Files {
            journal: open_append(&dir.join("journal"))?,
            names_len: file_len(&dir.join("names")),
            names: open_append(&dir.join("names"))?,
            records,
            dir,
            page_size,
        })
    }

    /// Mark the index as written completely (a clean shutdown).
    pub(super) fn mark_clean(&self) {
        let _ = File::create(self.dir.join("clean"));
    }

    /// Whether the index of `root` was marked clean; the mark is removed
    /// (a crash from now on must not find it).
    pub(super) fn take_clean(root: &Path) -> bool {
        std::fs::remove_file(Self::dir_of(root).join("clean")).is_ok()
    }

    /// Append `recs` (whole records) and `names`, names first, without
    /// syncing: once written they survive the process (a kill), and
    /// [`Files::sync`] makes them survive the machine.
    pub(super) fn write(&mut self, recs: &[u8], names: &[u8]) -> std::io::Result<()> {
        // A failed write is cut off again: what follows must not land
        // behind a torn record (the replay stops at the first one).
        if !names.is_empty() {
            if let Err(e) = self.names.write_all(names) {
                let _ = self.names.set_len(self.names_len);
                return Err(e);
            }
            self.names_len += names.len() as u64;
        }
        if !recs.is_empty() {
            if let Err(e) = self.journal.write_all(recs) {
                let _ = self.journal.set_len((self.records + 1) * RECORD as u64);
                return Err(e);
            }
            self.records += (recs.len() / RECORD) as u64;
        }
        Ok(())
    }

    /// Sync both files (names first).
    pub(super) fn sync(&self) -> std::io::Result<()> {
        self.names.sync_data()?;
        self.journal.sync_data()
    }

    /// Replace the journal by `recs` (a checkpoint).
    pub(super) fn rewrite(&mut self, recs: &[u8]) -> Result<()> {
        let path = self.dir.join("journal");
        write_replacing(&path, &[&header(self.page_size), recs])?;
        self.journal = open_append(&path)?;
        self.records = (recs.len() / RECORD) as u64;
        Ok(())
    }

    /// Rewrite the names file with the records `keep` accepts (by URL hash),
    /// reading the current one in chunks.
    pub(super) fn rewrite_names(
        &mut self,
        keep: &mut dyn FnMut(&[u64]) -> Vec<bool>,
    ) -> Result<()> {
        let path = self.dir.join("names");
        let mut kept = Vec::new();
        for_each_name_chunk(&path, &mut |chunk: &[(u64, String)]| {
            let hashes: Vec<u64> = chunk.iter().map(|(h, _)| *h).collect();
            for ((h, url), k) in chunk.iter().zip(keep(&hashes)) {
                if k {
                    encode_name(&mut kept, *h, url);
                }
            }
        })?;
        write_replacing(&path, &[&kept])?;
        self.names = open_append(&path)?;
        self.names_len = kept.len() as u64;
        Ok(())
    }

    /// Bytes of the persisted index on disk.
    pub(super) fn disk_bytes(&self) -> u64 {
        ["journal", "names"]
            .iter()
            .filter_map(|n| std::fs::metadata(self.dir.join(n)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The names file.
    pub(super) fn names_path(&self) -> PathBuf {
        self.dir.join("names")
    }
}

/// A run of (URL hash, URL) read from a names file.
pub(super) type NameChunk = [(u64, String)];

/// Call `f` with chunks of (URL hash, URL) from the names file at `path`
/// (missing: none); a torn or corrupt record ends the file.
pub(super) fn for_each_name_chunk(path: &Path, f: &mut dyn FnMut(&NameChunk)) -> Result<()> {
    for_each_name_chunk_at(path, &mut |chunk, _| f(chunk))
}

/// [`for_each_name_chunk`], also telling where the good records end.
fn for_each_name_chunk_at(path: &Path, f: &mut dyn FnMut(&NameChunk, u64)) -> Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(WorkerError::io(
                format!("cannot read {}", path.display()),
                e,
            ))
        }
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut chunk = Vec::with_capacity(4096);
    let mut rec = Vec::new();
    let mut end = 0u64;
    loop {
        let mut head = [0u8; 10];
        if r.read_exact(&mut head).is_err() {
            break;
        }
        let n = u16::from_le_bytes([head[0], head[1]]) as usize;
        rec.clear();
        rec.extend_from_slice(&head);
        rec.resize(10 + n + 4, 0);
        if r.read_exact(&mut rec[10..]).is_err() {
            break;
        }
        if crc(&rec[..10 + n]) != u32_at(&rec, 10 + n) {
            tracing::warn!(file = %path.display(), "corrupt record in the names file: the rest is ignored");
            break;
        }
        let Ok(url) = std::str::from_utf8(&rec[10..10 + n]) else {
            break;
        };
        chunk.push((u64_at(&rec, 2), url.to_string()));
        end += rec.len() as u64;
        if chunk.len() == 4096 {
            f(&chunk, end);
            chunk.clear();
        }
    }
    f(&chunk, end);
    Ok(())
}

/// Decode buffered names records (not yet written).
pub(super) fn decode_names(b: &[u8]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 10 <= b.len() {
        let n = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
        let end = at + 10 + n;
        if end + 4 > b.len() {
            break;
        }
        if let Ok(url) = std::str::from_utf8(&b[at + 10..end]) {
            out.push((u64_at(b, at + 2), url.to_string()));
        }
        at = end + 4;
    }
    out
}

/// Write `parts` to `path` through a temporary file, fsync, rename.
fn write_replacing(path: &Path, parts: &[&[u8]]) -> Result<()> {
    crate::atomic::write_atomically(path, parts, crate::atomic::Durability::Sync)
        .map_err(|e| WorkerError::io(format!("cannot write {}", path.display()), e))
}

/// Whether a record names a one-file page.
pub(super) fn is_large(rec: &Rec) -> bool {
    rec.seg == LARGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_a_torn_tail_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |i: u32, put| Rec {
            put,
            key: SlotKey {
                url_hash: 0xdead_beef_0000_0000 | u64::from(i),
                index: i,
            },
            version_hash: 7,
            seg: i / 2,
            off: i * 100,
            len: 2096,
            created: 42,
        };
        let mut buf = Vec::new();
        for i in 0..10 {
            encode(&mut buf, &rec(i, i % 3 != 0));
        }
        let mut files = Files::create(dir.path(), 4096, &buf[..5 * RECORD]).unwrap();
        files.write(&buf[5 * RECORD..], b"").unwrap();
        files.sync().unwrap();
        let load = |ps| {
            let mut recs = Vec::new();
            let l = Files::replay(dir.path(), ps, &mut |r| recs.push(*r)).unwrap();
            (l, recs)
        };
        let (loaded, recs) = load(4096);
        assert!(loaded.found && !loaded.torn);
        assert_eq!(
            recs,
            (0..10).map(|i| rec(i, i % 3 != 0)).collect::<Vec<_>>()
        );
        assert_eq!(loaded.records, 10);
        // Another page size: not this store's journal.
        assert!(!load(8192).0.found);
        // Half a record, then a flipped byte.
        let path = dir.path().join("index").join("journal");
        let mut raw = std::fs::read(&path).unwrap();
        raw.truncate(raw.len() - 7);
        std::fs::write(&path, &raw).unwrap();
        let (loaded, recs) = load(4096);
        assert_eq!((recs.len(), loaded.records, loaded.torn), (9, 9, true));
        raw[RECORD * 4 + 13] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert_eq!(load(4096).1.len(), 3);
    }

    #[test]
    fn names_roundtrip_and_rewrite_keeps_what_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::create(dir.path(), 4096, &[]).unwrap();
        let mut names = Vec::new();
        for i in 0..10_000u64 {
            encode_name(&mut names, i, &format!("s3://b/{i}"));
        }
        files.write(&[], &names).unwrap();
        files.sync().unwrap();
        files
            .rewrite_names(&mut |hs| hs.iter().map(|h| h % 2 == 0).collect())
            .unwrap();
        let mut seen = Vec::new();
        for_each_name_chunk(&files.names_path(), &mut |c| seen.extend_from_slice(c)).unwrap();
        assert_eq!(seen.len(), 5000);
        assert!(seen
            .iter()
            .all(|(h, u)| h % 2 == 0 && *u == format!("s3://b/{h}")));
    }
}
