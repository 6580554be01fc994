//! Segment files: small pages packed side by side.
//!
//! A page whose record ([`alluxiofs_core::page_file::encode_record`]) is at
//! most [`SMALL_MAX`] bytes and an eighth of the directory's segment size
//! goes into the directory's *active* segment,
//! `<dir>/segments/<8 hex digits>.seg`, at the next free offset (records
//! are 8-byte aligned, so a 2 KiB page takes 2,096 bytes and no inode or
//! filesystem block of its own). A segment is sealed when the next record
//! would take it past [`SEGMENT_SIZE`], and never written again: a record
//! once written does not change, so a reader (the worker, or a same-node
//! client given the descriptor) may read it while it is evicted, moved or
//! its segment deleted. Segment numbers are never reused, so a stale
//! location can never name another page's bytes (and the record's page id
//! and checksum are checked on every read anyway).
//!
//! **Space.** A directory's used bytes count whole segment files. Evicting
//! a packed page leaves its bytes dead in its segment; a segment whose
//! pages are all gone is deleted at once. Dead bytes are reclaimed by
//! *compaction*: the live records of a sealed segment with at least an
//! eighth dead are copied to the active segment, and the old segment is
//! *retired*: deleted only after the journal records of the moves are on
//! disk, so a crash at any moment finds every page either at its old place
//! or its new one. Compaction needs room for the copies: a directory keeps
//! one segment's worth of its capacity free for it. It runs when a write
//! needs space, before live pages are evicted.
//!
//! **Sizes.** A directory's segments are a sixteenth of its capacity,
//! between 64 KiB and 8 MiB (so the reserve is at most 6.25%); a cache of
//! less than four segments (under 256 KiB) keeps a file per page.
//!
//! This module keeps the bookkeeping (under the index lock) and does the
//! file I/O of segments; the store decides when.

use crate::error::{Result, WorkerError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest record packed into segments; larger pages get a file each.
pub(crate) const SMALL_MAX: usize = 256 * 1024 + alluxiofs_core::page_file::RECORD_HEADER;
/// A segment is sealed before it grows past this.
pub(crate) const SEGMENT_SIZE: u32 = 8 << 20;
/// Smallest segment size chosen for a directory.
const MIN_SEGMENT: u64 = 64 * 1024;

/// The segment size of a directory of `capacity` bytes with `max` the
/// configured size: a sixteenth of the capacity, between 64 KiB and `max`;
/// and whether the directory packs at all (it holds four segments at
/// least; smaller caches keep a file per page).
pub(super) fn segment_size_for(capacity: u64, max: u32) -> (u32, bool) {
    let size = (capacity / 16).max(MIN_SEGMENT).min(u64::from(max)) as u32;
    (size, capacity >= 4 * u64::from(size))
}

/// Open segment descriptors kept per directory, at least and at most.
const MIN_OPEN_FILES: usize = 64;
const MAX_OPEN_FILES: usize = 16384;

/// How many segment descriptors each of `dirs` directories keeps open: a
/// quarter of the process's open-file limit (`ulimit -n`) shared out, so
/// that random reads over a cache of thousands of segments (10 million
/// small pages are about 2,500 segments of 8 MiB) do not reopen them. The
/// limit is not raised: the worker may live in a user's process (the
/// embedded worker), where descriptors past 1,024 break `select(2)`. Each
/// directory's descriptors are all closed when it has this many.
pub(super) fn open_files_per_dir(dirs: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX).min(1 << 32);
    let share = (soft / 4) as usize / dirs.max(1);
    share.clamp(MIN_OPEN_FILES, MAX_OPEN_FILES)
}

/// One segment.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seg {
    /// Bytes allocated (the file's length once every write landed).
    pub(super) size: u32,
    /// Bytes of the records of indexed pages.
    pub(super) live: u32,
    /// Records being written.
    pub(super) pending: u32,
    /// Compacted: deleted after the next journal flush.
    pub(super) retired: bool,
}

/// The segments of one directory.
#[derive(Debug)]
pub(crate) struct Segments {
    root: PathBuf,
    pub(super) map: BTreeMap<u32, Seg>,
    active: Option<(u32, Arc<File>)>,
    next_id: u32,
    files: HashMap<u32, Arc<File>>,
    /// Descriptors `files` keeps at most.
    open_files: usize,
    /// Segments written since the last flush (to `fdatasync`).
    pub(super) dirty: BTreeSet<u32>,
    segment_size: u32,
    packs: bool,
}

/// The file name of segment `id`.
fn name(id: u32) -> String {
    format!("{id:08x}.seg")
}

/// The segment number a file name stands for.
pub(super) fn parse_name(n: &str) -> Option<u32> {
    let hex = n.strip_suffix(".seg")?;
    (hex.len() == 8)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
}

impl Segments {
    /// The segments under `root` (`<dir>/segments`), none registered yet,
    /// of `segment_size` bytes; with `packs` false, no page is packed.
    pub(super) fn new(root: PathBuf, segment_size: u32, packs: bool, open_files: usize) -> Self {
        Segments {
            open_files,
            root,
            map: BTreeMap::new(),
            active: None,
            next_id: 0,
            files: HashMap::new(),
            dirty: BTreeSet::new(),
            segment_size,
            packs,
        }
    }

    /// The largest record packed here (0: none is): at most an eighth of
    /// a segment, so that sealing a segment wastes under an eighth of it.
    pub(super) fn small_max(&self) -> usize {
        if self.packs {
            SMALL_MAX.min(self.segment_size as usize / 8)
        } else {
            0
        }
    }

    /// Bytes kept free for compaction to copy a segment's live records.
    pub(super) fn reserve(&self) -> u64 {
        if self.packs {
            u64::from(self.segment_size)
        } else {
            0
        }
    }

    /// The segment files on disk and their lengths (restart).
    pub(super) fn scan(&self) -> Result<Vec<(u32, u64)>> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| WorkerError::io(format!("cannot create {}", self.root.display()), e))?;
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.root)
            .map_err(|e| WorkerError::io(format!("cannot scan {}", self.root.display()), e))?;
        for e in rd.flatten() {
            let n = e.file_name();
            let Some(id) = n.to_str().and_then(parse_name) else {
                tracing::warn!(file = %e.path().display(), "removing a foreign file among the segments");
                let _ = std::fs::remove_file(e.path());
                continue;
            };
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((id, len));
        }
        Ok(out)
    }

    /// Register a segment found on disk (sealed). Returns its bytes.
    pub(super) fn register(&mut self, id: u32, len: u64) -> u64 {
        let size = len.min(u64::from(u32::MAX)) as u32;
        self.map.insert(
            id,
            Seg {
                size,
                ..Default::default()
            },
        );
        self.next_id = self.next_id.max(id.wrapping_add(1));
        u64::from(size)
    }

    pub(super) fn add_live(&mut self, seg: u32, len: u32, pending: bool) {
        if let Some(s) = self.map.get_mut(&seg) {
            s.live += len;
            if pending {
                s.pending += 1;
            }
        }
    }

    pub(super) fn remove_live(&mut self, seg: u32, len: u32, pending: bool) {
        if let Some(s) = self.map.get_mut(&seg) {
            s.live = s.live.saturating_sub(len);
            if pending {
                s.pending = s.pending.saturating_sub(1);
            }
        }
    }

    pub(super) fn settle(&mut self, seg: u32) {
        if let Some(s) = self.map.get_mut(&seg) {
            s.pending = s.pending.saturating_sub(1);
        }
    }

    fn is_active(&self, seg: u32) -> bool {
        self.active.as_ref().is_some_and(|(a, _)| *a == seg)
    }

    /// Space for a record of `len` bytes: (segment, offset, file to write
    /// it to). The caller adds `len` to the directory's used bytes.
    pub(super) fn allocate(&mut self, len: u32) -> Result<(u32, u32, Arc<File>)> {
        let full = match &self.active {
            None => true,
            Some((id, _)) => self
                .map
                .get(id)
                .is_none_or(|s| u64::from(s.size) + u64::from(len) > u64::from(self.segment_size)),
        };
        if full {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            let path = self.root.join(name(id));
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| WorkerError::io(format!("cannot create {}", path.display()), e))?;
            let file = Arc::new(file);
            self.map.insert(id, Seg::default());
            self.files.insert(id, file.clone());
            self.active = Some((id, file));
        }
        let (id, file) = self.active.clone().expect("an active segment");
        let s = self
            .map
            .get_mut(&id)
            .expect("the active segment is registered");
        let off = s.size;
        s.size += len;
        self.dirty.insert(id);
        Ok((id, off, file))
    }

    /// A descriptor of segment `seg` for reading.
    pub(super) fn file(&mut self, seg: u32) -> std::io::Result<Arc<File>> {
        if let Some(f) = self.files.get(&seg) {
            return Ok(f.clone());
        }
        if !self.map.contains_key(&seg) {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        let f = Arc::new(File::open(self.root.join(name(seg)))?);
        if self.files.len() >= self.open_files {
            let active = self.active.as_ref().map(|(a, _)| *a);
            self.files.retain(|k, _| Some(*k) == active);
        }
        self.files.insert(seg, f.clone());
        Ok(f)
    }

    /// Whether `seg` can be deleted now: no page left, none being written,
    /// not waiting for a flush. (An empty active segment goes too; the next
    /// write starts a new one.)
    pub(super) fn deletable(&self, seg: u32) -> bool {
        self.map
            .get(&seg)
            .is_some_and(|s| s.live == 0 && s.pending == 0 && !s.retired)
    }

    /// Delete segment `seg`; returns the bytes it took.
    pub(super) fn delete(&mut self, seg: u32) -> u64 {
        let Some(s) = self.map.remove(&seg) else {
            return 0;
        };
        self.files.remove(&seg);
        self.dirty.remove(&seg);
        if self.is_active(seg) {
            self.active = None;
        }
        let path = self.root.join(name(seg));
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %path.display(), "cannot delete a segment: {e}");
            }
        }
        u64::from(s.size)
    }

    /// The sealed segment most worth compacting: at least an eighth (and
    /// `need` bytes) dead, the fewest live bytes, nothing being written.
    /// (id, live bytes).
    pub(super) fn compaction_candidate(&self, need: u64) -> Option<(u32, u32)> {
        self.map
            .iter()
            .filter(|(id, s)| {
                let dead = u64::from(s.size - s.live.min(s.size));
                !s.retired
                    && s.pending == 0
                    && !self.is_active(**id)
                    && dead * 8 >= u64::from(s.size)
                    && dead >= need
            })
            .min_by_key(|(_, s)| s.live)
            .map(|(id, s)| (*id, s.live))
    }

    /// Segments retired by compaction, waiting for a flush.
    pub(super) fn retired(&self) -> Vec<u32> {
        self.map
            .iter()
            .filter(|(_, s)| s.retired)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Files of the segments written since the last call (to sync).
    pub(super) fn take_dirty(&mut self) -> Vec<Arc<File>> {
        let ids = std::mem::take(&mut self.dirty);
        ids.into_iter()
            .filter_map(|id| self.file(id).ok())
            .collect()
    }
}

/// Read `len` bytes at `off` of `file`.
pub(super) fn read_at(file: &File, off: u32, len: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, u64::from(off))?;
    Ok(buf)
}

/// Write `data` at `off` of `file`.
pub(super) fn write_at(file: &File, off: u32, data: &[u8]) -> std::io::Result<()> {
    file.write_all_at(data, u64::from(off))
}
