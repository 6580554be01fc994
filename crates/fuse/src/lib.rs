//! alluxiofs as a local directory: a FUSE filesystem over the cache.
//!
//! [`mount`] mounts one or more UFS URLs at a directory; reads go through
//! the client core ([`alluxiofs_core::Client`]: the same placement,
//! failover and same-node reads as the fsspec client) with the UFS as the
//! fallback for what no worker serves. There is no Python on the data path.
//!
//! - One URL: the mount point is that URL. Several: each is a directory of
//!   the mount point, named by [`MountRoot::name`].
//! - The kernel keeps a file's bytes in its page cache across opens while
//!   the object's version is unchanged (`FOPEN_KEEP_CACHE`), and drops them
//!   when an open sees a new version. Attributes and entries are cached by
//!   the kernel for [`MountOptions::attr_timeout`] /
//!   [`MountOptions::entry_timeout`]; a change at the UFS is seen after
//!   that long (as with NFS's attribute cache).
//! - Listings carry attributes (`readdirplus`), so `ls -l` of a directory
//!   is one listing. Requests are up to 1 MiB.
//! - Read-only by default: the mount is `ro`, so the kernel answers writes
//!   with `EROFS` before they reach it. With [`MountOptions::write`], new
//!   files are written whole and in order through the owner worker's
//!   write-through path, and unlink, mkdir, rmdir and rename change the
//!   UFS (the `write` module says what is refused and with which errno).
//! - A mount left by a killed process ("transport endpoint is not
//!   connected") is detached by the next [`mount`] at that path, or by
//!   [`unmount`].

mod fs;
mod nodes;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alluxiofs_core::path::normalize_url;
use alluxiofs_core::Client;
use alluxiofs_worker::ufs::Ufs;
use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use tokio::runtime::Handle;

pub use fs::MAX_REQUEST;

/// One mounted URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRoot {
    /// Its directory under the mount point (with several URLs).
    pub name: String,
    /// The UFS URL (a directory).
    pub url: String,
}

impl MountRoot {
    /// Roots for `urls`: `NAME=URL` takes the name given, a bare URL the
    /// last segment of its path (the bucket for a bucket root); a name
    /// taken twice gets `-2`, `-3`, ... Errors name the bad argument.
    pub fn from_args(urls: &[String]) -> Result<Vec<MountRoot>, String> {
        let mut out: Vec<MountRoot> = Vec::new();
        for arg in urls {
            let (name, raw) = match arg.split_once('=') {
                Some((n, u)) if !n.contains("://") && !n.contains('/') => (Some(n.to_string()), u),
                _ => (None, arg.as_str()),
            };
            let url = normalize_url(raw).map_err(|e| format!("{arg}: {e}"))?;
            let base = name.unwrap_or_else(|| {
                let tail = url.rsplit('/').find(|s| !s.is_empty()).unwrap_or("root");
                if tail.ends_with(':') {
                    "root".to_string()
                } else {
                    tail.to_string()
                }
            });
            if base.is_empty() || base == "." || base == ".." {
                return Err(format!("{arg}: {base:?} cannot name a directory"));
            }
            let mut name = base.clone();
            let mut k = 2;
            while out.iter().any(|r| r.name == name) {
                name = format!("{base}-{k}");
                k += 1;
            }
            out.push(MountRoot { name, url });
        }
        if out.is_empty() {
            return Err("no URL to mount".into());
        }
        Ok(out)
    }
}

/// How the mount behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// How long the kernel trusts a file's attributes (and this daemon its
    /// metadata) before asking again.
    pub attr_timeout: Duration,
    /// How long the kernel trusts a name it looked up.
    pub entry_timeout: Duration,
    /// Keep file bytes in the kernel page cache across opens while the
    /// version is unchanged.
    pub kernel_cache: bool,
    /// FUSE request threads.
    pub threads: usize,
    /// Let other users than the one mounting use the mount (`allow_other`).
    pub allow_other: bool,
    /// Read from the UFS what no worker serves (else such reads fail with
    /// `EIO`).
    pub fallback: bool,
    /// Writes: new files written whole, unlink, mkdir, rmdir, rename.
    pub write: bool,
    /// The kernel's readahead for the mount, in bytes (its default for a
    /// FUSE mount is 128 KiB, so a sequential read would reach the daemon
    /// as 128 KiB requests, one at a time). Set through the mount's
    /// `/sys/class/bdi/<dev>/read_ahead_kb`, which needs root; 0 leaves the
    /// kernel's default.
    pub readahead: u32,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            attr_timeout: Duration::from_secs(60),
            entry_timeout: Duration::from_secs(60),
            kernel_cache: true,
            threads: 16,
            allow_other: false,
            fallback: true,
            write: false,
            readahead: 4 << 20,
        }
    }
}

/// What the mount did, counted since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// `lookup` requests.
    pub lookups: AtomicU64,
    /// Metadata asked of the workers (or the UFS).
    pub metadata_requests: AtomicU64,
    /// Metadata (info or listing) asked of the UFS because no worker answered.
    pub ufs_metadata_requests: AtomicU64,
    /// Directory listings.
    pub listings: AtomicU64,
    /// Files opened.
    pub opens: AtomicU64,
    /// `read` requests answered with data.
    pub reads: AtomicU64,
    /// Bytes answered to `read` requests.
    pub read_bytes: AtomicU64,
    /// Of those, bytes read from the UFS (no worker served them).
    pub ufs_bytes: AtomicU64,
    /// `read` requests answered with an error.
    pub read_errors: AtomicU64,
    /// Listing entries not shown (not a plain name under their directory).
    pub names_refused: AtomicU64,
    /// Files opened for writing.
    pub writes_started: AtomicU64,
    /// Of those, completed (the object is at the UFS).
    pub writes_done: AtomicU64,
    /// Writes abandoned (a random write, an upload that failed).
    pub write_errors: AtomicU64,
    /// Writes that went to the UFS directly because no worker took them.
    pub write_fallbacks: AtomicU64,
    /// Bytes written.
    pub write_bytes: AtomicU64,
    /// unlink, mkdir, rmdir and rename done.
    pub changes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("lookups", g(&self.lookups)),
            ("metadata_requests", g(&self.metadata_requests)),
            ("ufs_metadata_requests", g(&self.ufs_metadata_requests)),
            ("listings", g(&self.listings)),
            ("opens", g(&self.opens)),
            ("reads", g(&self.reads)),
            ("read_bytes", g(&self.read_bytes)),
            ("ufs_bytes", g(&self.ufs_bytes)),
            ("read_errors", g(&self.read_errors)),
            ("names_refused", g(&self.names_refused)),
            ("writes_started", g(&self.writes_started)),
            ("writes_done", g(&self.writes_done)),
            ("write_errors", g(&self.write_errors)),
            ("write_fallbacks", g(&self.write_fallbacks)),
            ("write_bytes", g(&self.write_bytes)),
            ("changes", g(&self.changes)),
        ]
    }
}

/// Why a mount failed.
#[derive(Debug)]
pub enum MountError {
    /// A bad argument (mount point, URL).
    Invalid(String),
    /// The system refused the mount.
    Io(String, std::io::Error),
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountError::Invalid(m) => f.write_str(m),
            MountError::Io(m, e) => write!(f, "{m}: {e}"),
        }
    }
}

impl std::error::Error for MountError {}

/// A live mount; [`Mounted::unmount`] (or dropping it) unmounts.
pub struct Mounted {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .finish()
    }
}

impl Mounted {
    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether the session still runs (false once someone unmounted it,
    /// e.g. `umount` or [`unmount`] from another process).
    pub fn is_running(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmount: detach the mount point at once (lazily, so that files
    /// still open do not make it busy) and wait up to `wait` for the
    /// request threads to end. They end when the last open file is closed;
    /// `Ok(false)` when some were still open after `wait` (the threads are
    /// left to the process's exit, which fails the reads of those files
    /// with `ENOTCONN`).
    pub fn unmount(mut self, wait: Duration) -> std::io::Result<bool> {
        self.finish(wait)
    }

    fn finish(&mut self, wait: Duration) -> std::io::Result<bool> {
        let Some(s) = self.session.take() else {
            return Ok(true);
        };
        if !s.guard.is_finished() {
            unmount(&self.mountpoint)?;
        }
        let deadline = std::time::Instant::now() + wait;
        while !s.guard.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if s.guard.is_finished() {
            s.join()?;
            Ok(true)
        } else {
            tracing::warn!(mountpoint = %self.mountpoint.display(), "unmounted with files still open: their reads fail from now on");
            // Not dropped: its drop would unmount the path again, which may
            // be someone else's mount by now.
            std::mem::forget(s);
            Ok(false)
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.finish(Duration::from_secs(2)) {
            tracing::warn!(mountpoint = %self.mountpoint.display(), "unmount: {e}");
        }
    }
}

/// `statfs` type of FUSE filesystems (`f_type` is an `i64` on Linux).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// What is at a mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountState {
    /// Not mounted (a plain directory, or missing).
    NotMounted,
    /// A FUSE mount that answers.
    Mounted,
    /// A FUSE mount whose daemon is gone ("transport endpoint is not
    /// connected").
    Stale,
}

/// What is mounted at `path`.
pub fn mount_state(path: &Path) -> MountState {
    match rustix::fs::statfs(path) {
        Ok(s) if s.f_type == FUSE_SUPER_MAGIC => MountState::Mounted,
        Ok(_) => MountState::NotMounted,
        Err(rustix::io::Errno::NOTCONN) => MountState::Stale,
        Err(_) => MountState::NotMounted,
    }
}

/// Unmount whatever FUSE mount is at `path` (a live one or one whose
/// daemon died), detaching it lazily so that open files do not block it.
/// `Ok(false)` when nothing was mounted there.
pub fn unmount(path: &Path) -> std::io::Result<bool> {
    if mount_state(path) == MountState::NotMounted {
        return Ok(false);
    }
    rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH)
        .map_err(std::io::Error::from)?;
    Ok(true)
}

/// Mount `roots` at `mountpoint` and serve it from background threads
/// until the [`Mounted`] is dropped or unmounted.
///
/// `client` reaches the workers; `ufs` (over the same URLs) serves what
/// no worker can (with [`MountOptions::fallback`]) and takes the changes
/// (with [`MountOptions::write`], which needs it); `None` for neither.
/// `rt` runs the core's requests. A mount left at `mountpoint` by a dead
/// daemon is detached first; a live one is an error.
pub fn mount(
    mountpoint: &Path,
    roots: Vec<MountRoot>,
    client: Arc<Client>,
    ufs: Option<Arc<Ufs>>,
    rt: Handle,
    opts: MountOptions,
) -> Result<Mounted, MountError> {
    match mount_state(mountpoint) {
        MountState::Mounted => {
            return Err(MountError::Invalid(format!(
                "{} is already a FUSE mount (alluxiofs unmount {0} first)",
                mountpoint.display()
            )))
        }
        MountState::Stale => {
            tracing::warn!(mountpoint = %mountpoint.display(), "detaching a mount left by a daemon that died");
            unmount(mountpoint).map_err(|e| {
                MountError::Io(
                    format!("cannot detach the dead mount at {}", mountpoint.display()),
                    e,
                )
            })?;
        }
        MountState::NotMounted => {}
    }
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(MountError::Invalid(format!(
                "{} is not a directory",
                mountpoint.display()
            )))
        }
        Err(e) => {
            return Err(MountError::Io(
                format!("mount point {}", mountpoint.display()),
                e,
            ))
        }
    }
    if opts.write && ufs.is_none() {
        return Err(MountError::Invalid(
            "a writable mount needs UFS access (the UFS options of the mounted URLs)".into(),
        ));
    }
    let counters = Arc::new(Counters::default());
    let (root_url, root_list) = if roots.len() == 1 {
        (roots[0].url.clone(), Vec::new())
    } else {
        (
            String::new(),
            roots
                .iter()
                .map(|r| (r.name.clone(), r.url.clone()))
                .collect(),
        )
    };
    let fs = fs::Fs::new(
        client,
        ufs,
        rt,
        root_list,
        root_url,
        dir_meta(),
        opts.clone(),
        counters.clone(),
    );
    // Every URL must be a directory that answers now: a typo fails here,
    // not as an empty mount.
    for r in &roots {
        match fs.info(&r.url) {
            Ok(m) if m.kind == nodes::Kind::Dir => {}
            Ok(_) => {
                return Err(MountError::Invalid(format!(
                    "{} is a file: mount its directory",
                    r.url
                )))
            }
            Err(e) => {
                return Err(MountError::Invalid(format!(
                    "{}: {}",
                    r.url,
                    std::io::Error::from_raw_os_error(e.code())
                )))
            }
        }
    }
    let mut config = Config::default();
    config.mount_options = vec![
        if opts.write {
            MountOption::RW
        } else {
            MountOption::RO
        },
        MountOption::FSName("alluxiofs".into()),
        MountOption::Subtype("alluxiofs".into()),
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let session = fuser::Session::new(fs, mountpoint, &config)
        .and_then(|s| s.spawn())
        .map_err(|e| MountError::Io(format!("cannot mount {}", mountpoint.display()), e))?;
    if opts.readahead > 0 {
        set_readahead(mountpoint, opts.readahead);
    }
    tracing::info!(mountpoint = %mountpoint.display(), roots = roots.len(), write = opts.write, "mounted");
    Ok(Mounted {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        counters,
    })
}

/// Set the kernel's readahead of the mount at `mountpoint` (served by now)
/// to `bytes`; a failure (not root, no sysfs) is logged and left.
fn set_readahead(mountpoint: &Path, bytes: u32) {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata(mountpoint) {
        Ok(m) => m.dev(),
        Err(e) => {
            tracing::info!(mountpoint = %mountpoint.display(), "readahead left at the kernel's default: {e}");
            return;
        }
    };
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&path, format!("{}", bytes / 1024)) {
        Ok(()) => tracing::debug!(path, kib = bytes / 1024, "readahead set"),
        Err(e) => {
            tracing::info!(
                path,
                "readahead left at the kernel's default (128 KiB): {e}"
            )
        }
    }
}

pub(crate) fn dir_meta() -> nodes::Meta {
    nodes::Meta {
        kind: nodes::Kind::Dir,
        size: 0,
        mtime_ms: 0,
        version: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_named_by_their_last_segment_or_as_given() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let r = MountRoot::from_args(&args(&[
            "s3://bucket/train/",
            "s3://other/train",
            "val=file:///data/v",
            "gs://bkt",
        ]))
        .unwrap();
        let names: Vec<_> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["train", "train-2", "val", "bkt"]);
        assert_eq!(r[0].url, "s3://bucket/train");
        assert!(MountRoot::from_args(&args(&["s3://b/../x"])).is_err());
        assert!(MountRoot::from_args(&args(&[])).is_err());
        assert!(MountRoot::from_args(&args(&["..=s3://b/x"])).is_err());
    }

    #[test]
    fn a_plain_directory_is_not_mounted() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(mount_state(d.path()), MountState::NotMounted);
        assert!(!unmount(d.path()).unwrap());
    }
}
