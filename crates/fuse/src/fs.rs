//! The FUSE operations (`fuser::Filesystem`) over the client core.
//!
//! Every operation runs on one of fuser's threads and waits for the core's
//! async calls on the shared tokio runtime (`Handle::block_on`). Metadata
//! (lookup, getattr, listings) comes from the URL's preferred workers, and
//! from the UFS when no worker answers; data comes from the workers in
//! page-aligned chunks, with any bytes no worker could serve read from the
//! UFS (the same fallback as the fsspec client). The mount is read-only
//! unless mounted with `--write` (see [`crate::write`]).
//!
//! Names: an entry is shown only if its name is a plain file name (not
//! empty, `.` or `..`, no `/` or NUL) and its URL, normalized, lies
//! strictly under its directory's URL, so that object keys such as
//! `a/../../etc` never reach a path outside the mounted URLs. Names that are
//! not UTF-8 are not found (object keys are UTF-8).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use alluxiofs_core::info::{FileInfo, FileType as InfoType};
use alluxiofs_core::path::{is_under, normalize_url};
use alluxiofs_core::reader::Reader;
use alluxiofs_core::{Client, Error as CoreError};
use alluxiofs_worker::ufs::{ObjectVersion, Ufs};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::nodes::{Kind, Meta, Node, Nodes, ROOT};
use crate::write::{MadeDirs, NewFile};
use crate::{dir_meta, Counters, MountOptions};

/// Largest read or write request the kernel sends (1 MiB).
pub const MAX_REQUEST: u32 = 1 << 20;

/// One entry of an open directory.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    url: String,
    meta: Meta,
}

/// An open file: the version it was opened at, and its reader (the core's
/// sequential readahead, as for the fsspec client's file objects: a cold
/// file read in order has the next pages in flight while the kernel asks
/// for these; a same-node warm file is read straight from page files).
#[derive(Debug, Clone)]
struct OpenFile {
    url: String,
    size: u64,
    mtime_ms: i64,
    version: String,
    reader: Arc<Mutex<Reader>>,
}

thread_local! {
    /// Each request thread's read buffer (grown to the largest request).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The mounted filesystem.
pub(crate) struct Fs {
    pub(crate) client: Arc<Client>,
    /// The UFS: the fallback for reads (with `opts.fallback`) and where
    /// changes go (with `opts.write`).
    pub(crate) ufs: Option<Arc<Ufs>>,
    pub(crate) rt: Handle,
    /// The mounted URLs by name, when there are several (the root lists
    /// them); empty when the root is the one mounted URL.
    roots: Vec<(String, String)>,
    pub(crate) nodes: Mutex<Nodes>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Entry>>>>,
    files: Mutex<HashMap<u64, OpenFile>>,
    /// Handles of files being written.
    pub(crate) writes: Mutex<HashMap<u64, Arc<Mutex<NewFile>>>>,
    /// Directories made in this mount over an object store.
    pub(crate) made_dirs: Mutex<MadeDirs>,
    next_fh: AtomicU64,
    pub(crate) opts: MountOptions,
    uid: u32,
    gid: u32,
    started: std::time::SystemTime,
    pub(crate) counters: Arc<Counters>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The metadata of a file info.
pub(crate) fn meta_of(info: &FileInfo) -> Meta {
    match info.kind {
        InfoType::Directory => Meta {
            kind: Kind::Dir,
            size: 0,
            mtime_ms: info.mtime_ms,
            version: String::new(),
        },
        InfoType::File => Meta {
            kind: Kind::File,
            size: info.length,
            mtime_ms: info.mtime_ms,
            version: info.content_hash.clone(),
        },
    }
}

/// The listing entry of a directory made in this mount.
fn made_dir_info(name: &str, url: &str) -> FileInfo {
    FileInfo {
        kind: InfoType::Directory,
        name: name.to_string(),
        path: url.to_string(),
        ufs_path: url.to_string(),
        mtime_ms: 0,
        length: 0,
        human_size: String::new(),
        content_hash: String::new(),
        in_cache_percent: 0,
    }
}

/// The errno for a core error (worker faults are handled before this).
pub(crate) fn errno_of(e: &CoreError) -> Errno {
    match e {
        CoreError::NotFound { .. } => Errno::ENOENT,
        CoreError::IsADirectory { .. } => Errno::EISDIR,
        CoreError::NotADirectory { .. } => Errno::ENOTDIR,
        CoreError::PermissionDenied { .. } => Errno::EACCES,
        CoreError::InvalidArgument(_) => Errno::EINVAL,
        CoreError::ObjectChanged { .. } => Errno::ESTALE,
        CoreError::Timeout(..) => Errno::ETIMEDOUT,
        _ => Errno::EIO,
    }
}

pub(crate) fn errno_of_ufs(e: &alluxiofs_worker::error::WorkerError) -> Errno {
    use alluxiofs_worker::error::WorkerError as W;
    match e {
        W::NotFound { .. } => Errno::ENOENT,
        W::Forbidden { .. } => Errno::EACCES,
        W::IsADirectory { .. } => Errno::EISDIR,
        W::Changed { .. } => Errno::ESTALE,
        W::Shared(inner) => errno_of_ufs(inner),
        _ => Errno::EIO,
    }
}

/// Whether `name` may be an entry of a directory.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The URL of `name` in the directory `dir`: normalized and strictly below
/// it, or `None`.
pub(crate) fn child_url(dir: &str, name: &str) -> Option<String> {
    if !plain_name(name) {
        return None;
    }
    let sep = if dir.ends_with('/') { "" } else { "/" };
    let url = normalize_url(&format!("{dir}{sep}{name}")).ok()?;
    (url != dir && is_under(&url, dir)).then_some(url)
}

impl Fs {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Arc<Client>,
        ufs: Option<Arc<Ufs>>,
        rt: Handle,
        roots: Vec<(String, String)>,
        root_url: String,
        root: Meta,
        opts: MountOptions,
        counters: Arc<Counters>,
    ) -> Self {
        Fs {
            client,
            ufs,
            rt,
            roots,
            nodes: Mutex::new(Nodes::new(root_url, root)),
            dirs: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            writes: Mutex::new(HashMap::new()),
            made_dirs: Mutex::new(MadeDirs::default()),
            next_fh: AtomicU64::new(1),
            opts,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            started: std::time::SystemTime::now(),
            counters,
        }
    }

    /// The metadata of `url`: from its workers, else from the UFS.
    pub(crate) fn info(&self, url: &str) -> Result<Meta, Errno> {
        Counters::add(&self.counters.metadata_requests, 1);
        self.metadata("metadata", url, self.client.info(url), |ufs| async move {
            ufs.info(url).await.map(|(info, _)| info)
        })
        .map(|info| meta_of(&info))
        .or_else(|e| {
            if e == Errno::ENOENT && lock(&self.made_dirs).contains(url) {
                Ok(dir_meta())
            } else {
                Err(e)
            }
        })
    }

    /// The children of directory `url`: from its workers, else the UFS.
    pub(crate) fn list(&self, url: &str) -> Result<Vec<FileInfo>, Errno> {
        Counters::add(&self.counters.listings, 1);
        let listed = self.metadata("listing", url, self.client.list(url), |ufs| async move {
            ufs.list(url).await
        });
        let made = lock(&self.made_dirs).children(url);
        let mut out = match listed {
            Ok(v) => v,
            Err(Errno::ENOENT) if lock(&self.made_dirs).contains(url) => Vec::new(),
            Err(e) => return Err(e),
        };
        for (name, child) in made {
            if !out.iter().any(|i| i.name == name) {
                out.push(made_dir_info(&name, &child));
            }
        }
        Ok(out)
    }

    /// `from_workers`, or `from_ufs` when no worker answered (and the
    /// fallback is on); `what` names it in the log.
    fn metadata<T, W, U, F>(
        &self,
        what: &str,
        url: &str,
        from_workers: W,
        from_ufs: F,
    ) -> Result<T, Errno>
    where
        W: std::future::Future<Output = alluxiofs_core::Result<T>>,
        F: FnOnce(Arc<Ufs>) -> U,
        U: std::future::Future<Output = alluxiofs_worker::error::Result<T>>,
    {
        let e = match self.rt.block_on(from_workers) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !e.is_worker_fault() {
            if !matches!(e, CoreError::NotFound { .. }) {
                tracing::warn!(url, "{what}: {e}");
            }
            return Err(errno_of(&e));
        }
        let Some(ufs) = self.ufs.clone().filter(|_| self.opts.fallback) else {
            tracing::warn!(url, "no worker answered for the {what}: {e}");
            return Err(Errno::EIO);
        };
        Counters::add(&self.counters.ufs_metadata_requests, 1);
        self.rt.block_on(from_ufs(ufs)).map_err(|e| {
            tracing::warn!(url, "{what} from the UFS failed: {e}");
            errno_of_ufs(&e)
        })
    }

    fn attr(&self, ino: u64, meta: &Meta) -> FileAttr {
        let mtime = if meta.mtime_ms > 0 {
            UNIX_EPOCH + Duration::from_millis(meta.mtime_ms as u64)
        } else {
            // Object stores have no directory times: the mount's start.
            self.started
        };
        let w = if self.opts.write { 0o200 } else { 0 };
        let (kind, perm, nlink) = match meta.kind {
            Kind::Dir => (FileType::Directory, 0o555 | w, 2),
            Kind::File => (FileType::RegularFile, 0o444 | w, 1),
        };
        FileAttr {
            ino: INodeNo(ino),
            size: meta.size,
            blocks: meta.size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 128 * 1024,
            flags: 0,
        }
    }

    /// Node `ino` with metadata no older than the attribute timeout.
    fn fresh(&self, ino: u64) -> Result<Node, Errno> {
        let node = lock(&self.nodes).get(ino).cloned().ok_or(Errno::ENOENT)?;
        if node.url.is_empty() || node.local || node.fetched.elapsed() < self.opts.attr_timeout {
            return Ok(node);
        }
        let meta = self.info(&node.url)?;
        let mut nodes = lock(&self.nodes);
        let Some(n) = nodes.get_mut(ino) else {
            return Err(Errno::ENOENT);
        };
        if n.meta.version != meta.version || n.meta.kind != meta.kind {
            n.cached_version = None;
        }
        n.meta = meta;
        n.fetched = std::time::Instant::now();
        Ok(n.clone())
    }

    /// The entries of directory `node` (sorted by name).
    fn entries(&self, node: &Node) -> Result<Vec<Entry>, Errno> {
        if node.url.is_empty() {
            let mut out = Vec::new();
            for (name, url) in &self.roots {
                let meta = self.info(url)?;
                out.push(Entry {
                    name: name.clone(),
                    url: url.clone(),
                    meta,
                });
            }
            return Ok(out);
        }
        if node.meta.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let mut out = Vec::new();
        for info in self.list(&node.url)? {
            let Some(url) = child_url(&node.url, &info.name) else {
                Counters::add(&self.counters.names_refused, 1);
                tracing::warn!(dir = %node.url, name = ?info.name, "entry not shown: not a plain file name under its directory");
                continue;
            };
            out.push(Entry {
                name: info.name.clone(),
                url,
                meta: meta_of(&info),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    /// The URL of `name` in directory `parent`.
    pub(crate) fn lookup_url(&self, parent: u64, name: &OsStr) -> Result<String, Errno> {
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let dir = lock(&self.nodes)
            .get(parent)
            .map(|n| (n.url.clone(), n.meta.kind))
            .ok_or(Errno::ENOENT)?;
        if dir.0.is_empty() {
            return self
                .roots
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, u)| u.clone())
                .ok_or(Errno::ENOENT);
        }
        if dir.1 != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        child_url(&dir.0, name).ok_or(Errno::ENOENT)
    }

    /// Read `[offset, offset + len)` of an open file into `scratch` (the
    /// request thread's buffer, reused: no allocation, zero-fill or page
    /// faults per request): the workers' bytes, the holes from the UFS.
    /// Returns the bytes of the answer, a prefix of `scratch`.
    fn read_range<'b>(
        &self,
        f: &OpenFile,
        offset: u64,
        len: usize,
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], Errno> {
        if scratch.len() < len {
            scratch.resize(len, 0);
        }
        let buf = &mut scratch[..len];
        // Reads of one open file take turns (the reader's window is one
        // sequence); reads of different opens run in parallel.
        let outcome = {
            let mut reader = lock(&f.reader);
            self.rt.block_on(reader.read_at(offset, buf))
        };
        let (filled, holes, fault) = match outcome {
            Ok(o) => (o.filled, o.holes, o.fault),
            Err(e) if e.is_worker_fault() => {
                let whole = offset..offset + len as u64;
                (len, vec![whole], Some(e))
            }
            Err(e) => {
                if matches!(e, CoreError::ObjectChanged { .. }) {
                    tracing::warn!(url = %f.url, "changed at the UFS while open: reads of this open file fail with ESTALE; open it again");
                } else {
                    tracing::warn!(url = %f.url, offset, len, "read: {e}");
                }
                Counters::add(&self.counters.read_errors, 1);
                return Err(errno_of(&e));
            }
        };
        let buf = &mut buf[..filled.min(len)];
        if !holes.is_empty() {
            let Some(ufs) = self.ufs.as_ref().filter(|_| self.opts.fallback) else {
                tracing::warn!(url = %f.url, "no worker could serve the read and the UFS fallback is off: {}", fault.map(|e| e.to_string()).unwrap_or_default());
                Counters::add(&self.counters.read_errors, 1);
                return Err(Errno::EIO);
            };
            let version = ObjectVersion::from_info(&FileInfo {
                kind: InfoType::File,
                name: String::new(),
                path: String::new(),
                ufs_path: f.url.clone(),
                mtime_ms: f.mtime_ms,
                length: f.size,
                human_size: String::new(),
                content_hash: f.version.clone(),
                in_cache_percent: 0,
            });
            for hole in holes {
                let end = hole.end.min(f.size);
                if hole.start >= end {
                    continue;
                }
                let bytes = self
                    .rt
                    .block_on(ufs.read(&version, hole.start..end))
                    .map_err(|e| {
                        tracing::warn!(url = %f.url, "UFS read: {e}");
                        Counters::add(&self.counters.read_errors, 1);
                        errno_of_ufs(&e)
                    })?;
                let at = ((hole.start - offset) as usize).min(buf.len());
                let hole_end = ((end - offset) as usize).min(buf.len());
                // The buffer holds an earlier request's bytes: a hole the
                // UFS answers short must read as zeros, not as those.
                buf[at..hole_end].fill(0);
                let n = bytes.len().min(hole_end - at);
                buf[at..at + n].copy_from_slice(&bytes[..n]);
                Counters::add(&self.counters.ufs_bytes, n as u64);
            }
        }
        Ok(buf)
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(MAX_REQUEST);
        let _ = config.set_max_write(MAX_REQUEST);
        // Listings carry attributes (one listing for `ls -l`, not a lookup
        // per entry); lookups in one directory run in parallel.
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            if config.add_capabilities(cap).is_err() {
                tracing::info!("the kernel does not offer FUSE capability {cap:?}");
            }
        }
        // `O_TRUNC` comes with the open (a truncating open starts a new
        // file), not as a separate setattr.
        if self.opts.write
            && config
                .add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC)
                .is_err()
        {
            tracing::info!("the kernel does not offer FUSE_ATOMIC_O_TRUNC");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        Counters::add(&self.counters.lookups, 1);
        let url = match self.lookup_url(parent.0, name) {
            Ok(u) => u,
            Err(e) => return reply.error(e),
        };
        match self.info(&url) {
            Ok(meta) => {
                let ino = lock(&self.nodes).looked_up(&url, meta.clone());
                reply.entry_with_ttls(
                    &self.opts.attr_timeout,
                    &self.opts.entry_timeout,
                    &self.attr(ino, &meta),
                    Generation(0),
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.nodes).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fresh(ino.0) {
            Ok(n) => reply.attr(&self.opts.attr_timeout, &self.attr(ino.0, &n.meta)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writing = flags.acc_mode() != OpenAccMode::O_RDONLY;
        if (writing || flags.0 & (O_TRUNC | O_APPEND) != 0) && !self.opts.write {
            return reply.error(Errno::EROFS);
        }
        let node = match self.fresh(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if node.meta.kind == Kind::Dir {
            return reply.error(Errno::EISDIR);
        }
        if writing || flags.0 & O_TRUNC != 0 {
            // A truncating open writes a new file; an empty file may be
            // written from the start. Anything else would change the
            // object in place, which the UFS cannot do.
            if flags.0 & O_APPEND != 0 || (flags.0 & O_TRUNC == 0 && node.meta.size > 0) {
                tracing::warn!(url = %node.url, "open for append or in-place writes refused: only new or truncated files can be written");
                return reply.error(Errno::ENOTSUP);
            }
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            return match self.start_write(&node.url, ino.0, fh) {
                Ok(()) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            };
        }
        Counters::add(&self.counters.opens, 1);
        let keep = {
            let mut nodes = lock(&self.nodes);
            let Some(n) = nodes.get_mut(ino.0) else {
                return reply.error(Errno::ENOENT);
            };
            let keep = self.opts.kernel_cache
                && n.cached_version.as_deref() == Some(node.meta.version.as_str());
            n.cached_version = self.opts.kernel_cache.then(|| node.meta.version.clone());
            keep
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(
            fh,
            OpenFile {
                url: node.url.clone(),
                size: node.meta.size,
                mtime_ms: node.meta.mtime_ms,
                version: node.meta.version.clone(),
                reader: Arc::new(Mutex::new(Reader::new(
                    self.client.clone(),
                    node.url.clone(),
                    node.meta.size,
                    Some(node.meta.version.clone()),
                ))),
            },
        );
        let flags = if keep {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(fh), flags);
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if !self.opts.write {
            return reply.error(Errno::EROFS);
        }
        let url = match self.lookup_url(parent.0, name) {
            Ok(u) => u,
            Err(e) => return reply.error(e),
        };
        match self.info(&url) {
            Ok(m) if m.kind == Kind::Dir => return reply.error(Errno::EISDIR),
            Ok(_) if flags & O_EXCL != 0 => return reply.error(Errno::EEXIST),
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return reply.error(e),
        }
        let ino = lock(&self.nodes).looked_up(
            &url,
            Meta {
                kind: Kind::File,
                size: 0,
                mtime_ms: 0,
                version: String::new(),
            },
        );
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.start_write(&url, ino, fh) {
            lock(&self.nodes).forget(ino, 1);
            return reply.error(e);
        }
        let meta = lock(&self.nodes).get(ino).map(|n| n.meta.clone());
        let Some(meta) = meta else {
            return reply.error(Errno::ENOENT);
        };
        reply.created(
            &self.opts.entry_timeout.min(self.opts.attr_timeout),
            &self.attr(ino, &meta),
            Generation(0),
            FileHandle(fh),
            FopenFlags::empty(),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(f) = self.new_file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match self.write_at(&f, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if !self.opts.write {
            return reply.error(Errno::EROFS);
        }
        let node = match self.fresh(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if uid.is_some_and(|u| u != self.uid) || gid.is_some_and(|g| g != self.gid) {
            tracing::warn!(url = %node.url, "chown refused: the UFS has no owners");
            return reply.error(Errno::EPERM);
        }
        if let Some(size) = size {
            let writing = fh
                .and_then(|fh| self.new_file(fh.0))
                .or_else(|| self.writing_ino(ino.0));
            let current = match &writing {
                Some(f) => lock(f).written,
                None => node.meta.size,
            };
            if size != current {
                tracing::warn!(url = %node.url, size, current, "truncate refused: a file can only be written whole");
                return reply.error(Errno::ENOTSUP);
            }
        }
        if mode.is_some() {
            tracing::debug!(url = %node.url, "mode change accepted, not kept (the UFS has no modes)");
        }
        reply.attr(&self.opts.attr_timeout, &self.attr(ino.0, &node.meta));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.unlink_name(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.mkdir_name(parent.0, name) {
            Ok(url) => {
                let meta = dir_meta();
                let ino = lock(&self.nodes).looked_up(&url, meta.clone());
                reply.entry_with_ttls(
                    &self.opts.attr_timeout,
                    &self.opts.entry_timeout,
                    &self.attr(ino, &meta),
                    Generation(0),
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.rmdir_name(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.rename_name(parent.0, name, newparent.0, newname, flags.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // A file being written is durable once closed, not before (the
        // upload completes at close, see `crate::write`); a read-only
        // handle has nothing to write back.
        reply.ok()
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = lock(&self.files).get(&fh.0).cloned() else {
            // Handles of files being written cannot read them back.
            return reply.error(Errno::EBADF);
        };
        if offset >= f.size {
            return reply.data(&[]);
        }
        let len = (f.size - offset).min(u64::from(size)) as usize;
        SCRATCH.with_borrow_mut(|scratch| match self.read_range(&f, offset, len, scratch) {
            Ok(buf) => {
                Counters::add(&self.counters.reads, 1);
                Counters::add(&self.counters.read_bytes, buf.len() as u64);
                reply.data(buf)
            }
            Err(e) => reply.error(e),
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // The first close of a file being written completes its upload
        // and reports the outcome; a file opened for reading has nothing
        // to write back.
        match self.new_file(fh.0) {
            Some(f) => match self.finish_write(&f) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
            None => reply.ok(),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.files).remove(&fh.0);
        self.release_write(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let node = match self.fresh(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.entries(&node) {
            Ok(entries) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.dirs).insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = lock(&self.dirs).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        // Offsets: 1 and 2 are `.` and `..`, entry i is i + 3.
        let mut at = offset;
        while at < entries.len() as u64 + 2 {
            let full = match at {
                0 => reply.add(ino, 1, FileType::Directory, "."),
                1 => reply.add(INodeNo(ROOT), 2, FileType::Directory, ".."),
                _ => {
                    let e = &entries[(at - 2) as usize];
                    let kind = match e.meta.kind {
                        Kind::Dir => FileType::Directory,
                        Kind::File => FileType::RegularFile,
                    };
                    let known = lock(&self.nodes).ino_of(&e.url);
                    reply.add(
                        INodeNo(known.unwrap_or_else(|| pseudo_ino(&e.url))),
                        at + 1,
                        kind,
                        &e.name,
                    )
                }
            };
            if full {
                break;
            }
            at += 1;
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(entries) = lock(&self.dirs).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        // One time-to-live for an entry and its attributes here: the
        // shorter, so that attributes are never trusted past theirs.
        let ttl = self.opts.entry_timeout.min(self.opts.attr_timeout);
        let dir_meta = lock(&self.nodes).get(ino.0).map(|n| n.meta.clone());
        let Some(dir_meta) = dir_meta else {
            return reply.error(Errno::ENOENT);
        };
        let dir_attr = self.attr(ino.0, &dir_meta);
        let mut at = offset;
        while at < entries.len() as u64 + 2 {
            // `.` and `..` are not counted as lookups by the kernel.
            let full = match at {
                0 => reply.add(ino, 1, ".", &ttl, &dir_attr, Generation(0)),
                1 => reply.add(ino, 2, "..", &ttl, &dir_attr, Generation(0)),
                _ => {
                    let e = &entries[(at - 2) as usize];
                    let child = lock(&self.nodes).looked_up(&e.url, e.meta.clone());
                    let full = reply.add(
                        INodeNo(child),
                        at + 1,
                        &e.name,
                        &ttl,
                        &self.attr(child, &e.meta),
                        Generation(0),
                    );
                    if full {
                        // Not sent: not a reference the kernel holds.
                        lock(&self.nodes).forget(child, 1);
                    }
                    full
                }
            };
            if full {
                break;
            }
            at += 1;
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    // No extended attributes: ENOSYS makes the kernel stop asking (it
    // answers EOPNOTSUPP itself from then on), without a log line per call.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    #[allow(clippy::too_many_arguments)]
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Object storage has no fixed size: report a large, mostly free
        // filesystem (what `df` shows) of 4 KiB blocks.
        let blocks = 1u64 << 40;
        reply.statfs(blocks, blocks, blocks, 1 << 32, 1 << 32, 4096, 255, 4096);
    }
}

/// An inode number for a `readdir` entry the kernel has not looked up: a
/// hash of its URL with the top bit set, so it never collides with a
/// number handed out by a lookup.
fn pseudo_ino(url: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new` has fixed keys: the same number in every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut h);
    h.finish() | (1 << 63)
}

/// open(2) flags that would change the file (Linux values).
const O_TRUNC: i32 = 0o1000;
const O_APPEND: i32 = 0o2000;
const O_EXCL: i32 = 0o200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_below_the_directory_are_entries() {
        let d = "s3://b/data";
        assert_eq!(child_url(d, "x.bin").as_deref(), Some("s3://b/data/x.bin"));
        assert_eq!(child_url("file:///", "etc").as_deref(), Some("file:///etc"));
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", "%2e%2e"] {
            assert_eq!(child_url(d, bad), None, "{bad:?}");
        }
        assert_eq!(
            child_url(d, "odd name ü+&?#").as_deref(),
            Some("s3://b/data/odd name ü+&?#")
        );
    }

    #[test]
    fn pseudo_numbers_never_meet_lookup_numbers() {
        assert!(pseudo_ino("s3://b/x") >= 1 << 63);
        assert_eq!(pseudo_ino("s3://b/x"), pseudo_ino("s3://b/x"));
    }
}
