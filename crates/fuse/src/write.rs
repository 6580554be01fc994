//! Changes through the mount (`--write`): new files written whole and in
//! order, and unlink, mkdir, rmdir and rename on the UFS.
//!
//! - **Whole-file sequential writes.** A file opened for writing (created,
//!   or opened with `O_TRUNC`) streams its bytes, in order, to the owner
//!   worker's write-through path (the UFS upload and the cache's pages in
//!   one pass), or straight to the UFS when no worker takes it. The object
//!   appears at the UFS when the file is closed: the first `close` (the
//!   FUSE `flush`) completes the upload and reports its outcome. A write
//!   at any other offset than the end (a random write, a seek back) fails
//!   with `ENOTSUP` and the upload is abandoned: nothing of that file is
//!   written, never a partial object.
//! - **Refused, with a log line:** appends and writes into existing files
//!   (`ENOTSUP`), truncation to a size other than the bytes written
//!   (`ENOTSUP`), `chown` (`EPERM`), renaming a directory on an object
//!   store (`EXDEV`: `mv` then copies and removes, as between disks),
//!   `RENAME_EXCHANGE` (`EINVAL`). Modes and times are accepted and not
//!   kept (object stores have none).
//! - **Directories.** On a `file://` UFS mkdir and rmdir change the disk.
//!   Object stores have no directories: a directory made here exists in
//!   this mount (listed, usable as a parent) until the mount ends, and at
//!   the UFS once a file is written under it.
//! - **The workers forget** what changed (the path, its parent's listing,
//!   and everything under a removed or renamed directory), so reads through
//!   any client see the change; other mounts see it after their attribute
//!   and entry timeouts.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alluxiofs_core::write::Writer;
use alluxiofs_worker::ufs::Upload;
use bytes::Bytes;
use fuser::Errno;

use crate::fs::{lock, Fs};
use crate::nodes::{Kind, Meta};
use crate::Counters;

/// Where a file's bytes go.
enum Sink {
    /// The owner worker's write-through (UFS and cache).
    Worker(Writer),
    /// The UFS directly (no worker took the write).
    Ufs(Upload),
}

/// A file being written through one open handle.
pub(crate) struct NewFile {
    pub(crate) url: String,
    pub(crate) ino: u64,
    sink: Option<Sink>,
    pub(crate) written: u64,
    /// What every later call on this handle answers once a write failed.
    failed: Option<Errno>,
    /// The upload was completed.
    done: bool,
}

/// The made directories of a mount over an object store (see the module
/// documentation).
#[derive(Debug, Default)]
pub(crate) struct MadeDirs(BTreeSet<String>);

impl MadeDirs {
    pub(crate) fn contains(&self, url: &str) -> bool {
        self.0.contains(url)
    }

    /// The made directories directly under `dir`, as (name, url).
    pub(crate) fn children(&self, dir: &str) -> Vec<(String, String)> {
        let below = format!("{}/", dir.trim_end_matches('/'));
        self.0
            .range(below.clone()..)
            .take_while(|u| u.starts_with(&below))
            .filter_map(|u| {
                let name = &u[below.len()..];
                (!name.contains('/')).then(|| (name.to_string(), u.clone()))
            })
            .collect()
    }

    fn renamed(&mut self, from: &str, to: &str) {
        let below = format!("{from}/");
        let moved: Vec<String> = self
            .0
            .iter()
            .filter(|u| u.as_str() == from || u.starts_with(&below))
            .cloned()
            .collect();
        for old in moved {
            self.0.remove(&old);
            self.0.insert(format!("{to}{}", &old[from.len()..]));
        }
    }
}

/// `renameat2` flags (Linux values).
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

fn errno_of_change(e: &alluxiofs_worker::error::WorkerError) -> Errno {
    use alluxiofs_worker::error::WorkerError as W;
    match e {
        W::Ufs { source, .. } => match source {
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => Errno::EEXIST,
            object_store::Error::NotImplemented { .. } => Errno::ENOTSUP,
            object_store::Error::PermissionDenied { .. } => Errno::EACCES,
            _ => Errno::EIO,
        },
        W::BadRequest(_) => Errno::EXDEV,
        other => crate::fs::errno_of_ufs(other),
    }
}

impl Fs {
    /// The UFS changes go to (mounted with `--write`, so present).
    fn changes(&self) -> Result<&Arc<alluxiofs_worker::ufs::Ufs>, Errno> {
        if !self.opts.write {
            return Err(Errno::EROFS);
        }
        self.ufs.as_ref().ok_or(Errno::EROFS)
    }

    /// Tell the workers to forget `url` (and what lies under it with
    /// `recursive`) after a change. A worker that cannot be told refreshes
    /// on its own after its metadata TTL; that is logged, not an error of
    /// the change, which has happened.
    fn forget_at_workers(&self, url: &str, recursive: bool) {
        if let Err(e) = self.rt.block_on(self.client.invalidate(url, recursive)) {
            tracing::warn!(
                url,
                "changed at the UFS, but the workers could not be told: {e}"
            );
        }
    }

    /// Start writing a new `url` (a file created here, or truncated) as
    /// inode `ino`, under handle `fh`.
    pub(crate) fn start_write(&self, url: &str, ino: u64, fh: u64) -> Result<(), Errno> {
        let ufs = self.changes()?.clone();
        let sink = match self.rt.block_on(self.client.write_owner(url)) {
            Ok(worker) => {
                let _in_runtime = self.rt.enter();
                Sink::Worker(Writer::start(self.client.clone(), url, worker))
            }
            Err(e) if e.is_worker_fault() => {
                tracing::warn!(
                    url,
                    "no worker takes the write ({e}): writing to the UFS directly"
                );
                Counters::add(&self.counters.write_fallbacks, 1);
                Sink::Ufs(ufs.upload(url).map_err(|e| {
                    tracing::warn!(url, "cannot write: {e}");
                    errno_of_change(&e)
                })?)
            }
            Err(e) => {
                tracing::warn!(url, "cannot write: {e}");
                return Err(crate::fs::errno_of(&e));
            }
        };
        {
            let mut nodes = lock(&self.nodes);
            if let Some(n) = nodes.get_mut(ino) {
                n.meta = Meta {
                    kind: Kind::File,
                    size: 0,
                    mtime_ms: now_ms(),
                    version: String::new(),
                };
                n.local = true;
                n.cached_version = None;
                n.fetched = Instant::now();
            }
        }
        Counters::add(&self.counters.writes_started, 1);
        lock(&self.writes).insert(
            fh,
            Arc::new(Mutex::new(NewFile {
                url: url.to_string(),
                ino,
                sink: Some(sink),
                written: 0,
                failed: None,
                done: false,
            })),
        );
        Ok(())
    }

    /// The file written under handle `fh`, if it is one.
    pub(crate) fn new_file(&self, fh: u64) -> Option<Arc<Mutex<NewFile>>> {
        lock(&self.writes).get(&fh).cloned()
    }

    /// The file being written as inode `ino` by some handle.
    pub(crate) fn writing_ino(&self, ino: u64) -> Option<Arc<Mutex<NewFile>>> {
        lock(&self.writes)
            .values()
            .find(|f| lock(f).ino == ino)
            .cloned()
    }

    /// Append `data` at `offset` of the file written under `f`.
    pub(crate) fn write_at(
        &self,
        f: &Mutex<NewFile>,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let mut f = lock(f);
        if let Some(e) = f.failed {
            return Err(e);
        }
        if f.done {
            tracing::warn!(url = %f.url, "write after the file was closed: the upload is complete");
            return Err(Errno::EBADF);
        }
        if offset != f.written {
            tracing::warn!(
                url = %f.url,
                offset,
                written = f.written,
                "a write not at the end of the file: only whole files written in order are supported; nothing of this file is kept"
            );
            self.fail(&mut f, Errno::ENOTSUP);
            return Err(Errno::ENOTSUP);
        }
        let bytes = Bytes::copy_from_slice(data);
        let r = match f.sink.as_mut() {
            Some(Sink::Worker(w)) => self.rt.block_on(w.write(bytes)).map_err(|e| e.to_string()),
            Some(Sink::Ufs(u)) => self.rt.block_on(u.put(bytes)).map_err(|e| e.to_string()),
            None => Err("the upload is gone".to_string()),
        };
        if let Err(e) = r {
            tracing::warn!(url = %f.url, offset, "write failed, nothing of this file is kept: {e}");
            self.fail(&mut f, Errno::EIO);
            return Err(Errno::EIO);
        }
        f.written += data.len() as u64;
        Counters::add(&self.counters.write_bytes, data.len() as u64);
        let (ino, size) = (f.ino, f.written);
        if let Some(n) = lock(&self.nodes).get_mut(ino) {
            n.meta.size = size;
        }
        Ok(())
    }

    /// Abandon the upload of `f`: nothing of it is kept.
    fn fail(&self, f: &mut NewFile, e: Errno) {
        f.failed = Some(e);
        Counters::add(&self.counters.write_errors, 1);
        match f.sink.take() {
            // Dropping the writer cuts its request: the worker aborts.
            Some(Sink::Worker(w)) => w.abort(),
            Some(Sink::Ufs(u)) => self.rt.block_on(u.abort()),
            None => {}
        }
        self.write_ended(f);
    }

    /// Complete the upload of `f` (the first close): `Ok` once the object
    /// is at the UFS.
    pub(crate) fn finish_write(&self, f: &Mutex<NewFile>) -> Result<(), Errno> {
        let mut f = lock(f);
        if let Some(e) = f.failed {
            return Err(e);
        }
        if f.done {
            return Ok(());
        }
        let Some(sink) = f.sink.take() else {
            return Err(Errno::EIO);
        };
        let outcome = match sink {
            Sink::Worker(w) => self.rt.block_on(w.finish()).map(|r| {
                tracing::info!(url = %f.url, size = r.size, worker = %r.worker, pages_cached = r.pages_cached, "written through the worker");
            }).map_err(|e| e.to_string()),
            Sink::Ufs(u) => self.rt.block_on(u.finish()).map(|()| {
                tracing::info!(url = %f.url, size = f.written, "written to the UFS");
                self.forget_at_workers(&f.url, false);
            }).map_err(|e| e.to_string()),
        };
        if let Err(e) = outcome {
            tracing::warn!(url = %f.url, "the upload failed at close, nothing of this file is kept: {e}");
            f.failed = Some(Errno::EIO);
            Counters::add(&self.counters.write_errors, 1);
            self.write_ended(&f);
            return Err(Errno::EIO);
        }
        f.done = true;
        Counters::add(&self.counters.writes_done, 1);
        self.write_ended(&f);
        Ok(())
    }

    /// After a write completed or failed: the node's metadata comes from
    /// the workers again.
    fn write_ended(&self, f: &NewFile) {
        let meta = if f.done { self.info(&f.url).ok() } else { None };
        let mut nodes = lock(&self.nodes);
        if let Some(n) = nodes.get_mut(f.ino) {
            n.local = false;
            match meta {
                Some(m) => {
                    n.meta = m;
                    n.fetched = Instant::now();
                }
                // Asked again at the next getattr.
                None => n.fetched = Instant::now() - self.opts.attr_timeout,
            }
        }
    }

    /// The handle `fh` is closed for good: an upload not completed yet
    /// (no `flush` came) is completed now, its outcome logged.
    pub(crate) fn release_write(&self, fh: u64) {
        let Some(f) = lock(&self.writes).remove(&fh) else {
            return;
        };
        if let Err(e) = self.finish_write(&f) {
            tracing::debug!(url = %lock(&f).url, "released after a failed write: {e:?}");
        }
    }

    /// `unlink`: delete the file `name` of `parent` at the UFS.
    pub(crate) fn unlink_name(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ufs = self.changes()?.clone();
        let url = self.lookup_url(parent, name)?;
        if self.info(&url)?.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        self.rt.block_on(ufs.delete(&url)).map_err(|e| {
            tracing::warn!(url, "unlink: {e}");
            errno_of_change(&e)
        })?;
        Counters::add(&self.counters.changes, 1);
        self.forget_at_workers(&url, false);
        lock(&self.nodes).removed(&url);
        tracing::info!(url, "removed");
        Ok(())
    }

    /// `mkdir`: make the directory `name` of `parent`; its URL.
    pub(crate) fn mkdir_name(&self, parent: u64, name: &OsStr) -> Result<String, Errno> {
        let ufs = self.changes()?.clone();
        let url = self.lookup_url(parent, name)?;
        match self.info(&url) {
            Ok(_) => return Err(Errno::EEXIST),
            Err(e) if e != Errno::ENOENT => return Err(e),
            Err(_) => {}
        }
        match ufs.local_path(&url).map_err(|e| errno_of_change(&e))? {
            Some(path) => std::fs::create_dir(&path).map_err(|e| {
                tracing::warn!(url, "mkdir: {e}");
                Errno::from(e)
            })?,
            None => {
                lock(&self.made_dirs).0.insert(url.clone());
            }
        }
        Counters::add(&self.counters.changes, 1);
        self.forget_at_workers(&url, false);
        Ok(url)
    }

    /// `rmdir`: remove the empty directory `name` of `parent`.
    pub(crate) fn rmdir_name(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ufs = self.changes()?.clone();
        let url = self.lookup_url(parent, name)?;
        if self.info(&url)?.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if !self.list(&url)?.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        match ufs.local_path(&url).map_err(|e| errno_of_change(&e))? {
            Some(path) => std::fs::remove_dir(&path).map_err(|e| {
                tracing::warn!(url, "rmdir: {e}");
                Errno::from(e)
            })?,
            None => {
                if !lock(&self.made_dirs).0.remove(&url) {
                    tracing::warn!(url, "rmdir: an empty directory marker at the object store cannot be removed through the mount");
                    return Err(Errno::ENOTSUP);
                }
            }
        }
        Counters::add(&self.counters.changes, 1);
        self.forget_at_workers(&url, true);
        lock(&self.nodes).removed(&url);
        Ok(())
    }

    /// `rename`: move `name` of `parent` to `newname` of `newparent`.
    pub(crate) fn rename_name(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        let ufs = self.changes()?.clone();
        if flags & RENAME_EXCHANGE != 0 || flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
            tracing::warn!(flags, "rename: only RENAME_NOREPLACE is supported");
            return Err(Errno::EINVAL);
        }
        let from = self.lookup_url(parent, name)?;
        let to = self.lookup_url(newparent, newname)?;
        if from == to {
            return Ok(());
        }
        let kind = self.info(&from)?.kind;
        let target = match self.info(&to) {
            Ok(m) => Some(m.kind),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        if target.is_some() && flags & RENAME_NOREPLACE != 0 {
            return Err(Errno::EEXIST);
        }
        match (kind, target) {
            (Kind::File, Some(Kind::Dir)) => return Err(Errno::EISDIR),
            (Kind::Dir, Some(Kind::File)) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(Errno::EINVAL);
        }
        match kind {
            Kind::File => self
                .rt
                .block_on(ufs.rename(&from, &to, flags & RENAME_NOREPLACE != 0))
                .map_err(|e| {
                    tracing::warn!(from, to, "rename: {e}");
                    errno_of_change(&e)
                })?,
            Kind::Dir => {
                let paths = (
                    ufs.local_path(&from).map_err(|e| errno_of_change(&e))?,
                    ufs.local_path(&to).map_err(|e| errno_of_change(&e))?,
                );
                match paths {
                    (Some(a), Some(b)) => std::fs::rename(&a, &b).map_err(|e| {
                        tracing::warn!(from, to, "rename: {e}");
                        Errno::from(e)
                    })?,
                    _ => {
                        let made = lock(&self.made_dirs).contains(&from);
                        if !made || !self.list(&from)?.is_empty() {
                            tracing::warn!(from, to, "rename of a directory on an object store: refused with EXDEV (mv then copies and removes)");
                            return Err(Errno::EXDEV);
                        }
                        if target.is_some() {
                            return Err(Errno::EEXIST);
                        }
                    }
                }
            }
        }
        lock(&self.made_dirs).renamed(&from, &to);
        Counters::add(&self.counters.changes, 1);
        let recursive = kind == Kind::Dir;
        self.forget_at_workers(&from, recursive);
        self.forget_at_workers(&to, recursive);
        lock(&self.nodes).renamed(&from, &to);
        tracing::info!(from, to, "renamed");
        Ok(())
    }
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_directories_list_their_direct_children_and_move() {
        let mut m = MadeDirs::default();
        for u in ["s3://b/d/x", "s3://b/d/x/y", "s3://b/d/z", "s3://b/dd"] {
            m.0.insert(u.into());
        }
        let names: Vec<_> = m.children("s3://b/d").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x", "z"]);
        m.renamed("s3://b/d/x", "s3://b/d/w");
        assert!(m.contains("s3://b/d/w/y") && !m.contains("s3://b/d/x"));
        assert!(
            m.contains("s3://b/dd"),
            "a sibling with the same prefix stays"
        );
    }
}
