//! The same-node read server: page file descriptors for clients on this
//! node, over a Unix domain socket (the protocol and why it is safe:
//! [`alluxiofs_core::local`]).
//!
//! - **Where.** The socket is `local_socket` (default
//!   `/tmp/alluxiofs-<uid>/<host>-<port>.sock`; `off` disables it). Its
//!   directory is created 0755 and the socket 0666: anyone on the node may
//!   connect, and the hello decides who may read. A socket file left by a
//!   crashed worker at the path is replaced.
//! - **Who.** A connection may read when the peer's uid (`SO_PEERCRED`) is
//!   the worker's own or one of `local_uids`, or when its hello carries the
//!   worker's auth token. Anyone else is refused (counted) and the
//!   connection closed; that client reads over HTTP, where the token rules
//!   apply as always.
//! - **What.** A read request names byte ranges of files; for each, the
//!   worker answers from what it already knows, with no UFS request: the
//!   cached metadata of the URL (confined to the worker's mounts, as every
//!   HTTP request is), and the descriptors of the consecutive pages of the
//!   range that are on disk, opened read-only ([`PageStore::open_page`]).
//!   A metadata miss, a pinned version that is not the current one, or a
//!   first page not on disk sends the client to HTTP for that file, which
//!   reads through and caches as usual. Pages only in the memory tier are
//!   served over HTTP too.
//! - **Threads.** Blocking I/O on plain threads: one accepting, one per
//!   connection (at most [`MAX_CONNECTIONS`]); every request is a few
//!   lookups and `open`s. Stopping closes the listener and removes the
//!   socket file; open connections end when their clients close them.
//!
//! [`PageStore::open_page`]: crate::store::PageStore::open_page

use crate::cache::ReadThrough;
use crate::error::{Result, WorkerError};
use crate::metrics::Metrics;
use alluxiofs_core::local::{self as proto, FilePages, FileRange, Reply, Request, MAX_FDS};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Connections served at once at most; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 256;

/// Who may read through the socket.
#[derive(Debug, Clone)]
pub struct Access {
    /// Uids that may read (the worker's own first).
    pub uids: Vec<u32>,
    /// The worker's auth token: a hello carrying it may read.
    pub token: Option<String>,
}

/// What a hello is answered with.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The worker's id.
    pub worker_id: String,
    /// This node's boot id.
    pub boot_id: String,
}

/// A running socket server; [`LocalServer::stop`] (or dropping it) stops it.
#[derive(Debug)]
pub struct LocalServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl LocalServer {
    /// Bind `path` and serve same-node reads of `cache` in background
    /// threads.
    pub fn start(
        path: &Path,
        cache: Arc<ReadThrough>,
        access: Access,
        identity: Identity,
    ) -> Result<Self> {
        let listener = bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            cache,
            access,
            identity,
            connections: AtomicUsize::new(0),
        });
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("alluxiofs-local".into())
            .spawn(move || accept_loop(listener, shared, flag))
            .map_err(|e| WorkerError::io("cannot start the local socket thread", e))?;
        Ok(LocalServer {
            path: path.to_path_buf(),
            stop,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting and remove the socket file.
    pub fn stop(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            // Wake the accept loop so that it sees the flag.
            let _ = UnixStream::connect(&self.path);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(path: &Path) -> Result<UnixListener> {
    let err =
        |what: &str, e| WorkerError::io(format!("local socket {}: {what}", path.display()), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| err("cannot create its directory", e))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
    match UnixStream::connect(path) {
        Ok(_) => {
            return Err(WorkerError::Config(format!(
                "local socket {} is in use by another worker (set local_socket to another path, or off)",
                path.display()
            )))
        }
        Err(_) if path.exists() => {
            // Left by a worker that is gone.
            std::fs::remove_file(path).map_err(|e| err("cannot replace a stale socket", e))?;
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| err("cannot bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| err("cannot set its permissions", e))?;
    Ok(listener)
}

struct Shared {
    cache: Arc<ReadThrough>,
    access: Access,
    identity: Identity,
    connections: AtomicUsize,
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("local socket: {MAX_CONNECTIONS} connections open, closing a new one");
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("alluxiofs-local-conn".into())
            .spawn(move || {
                if let Err(e) = serve(&conn, &s) {
                    tracing::debug!("local socket connection ended: {e}");
                }
                s.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Whether the peer of `conn`, whose hello carried `token`, may read.
fn allowed(conn: &UnixStream, access: &Access, token: Option<&str>) -> bool {
    if let (Some(want), Some(given)) = (&access.token, token) {
        let (a, b) = (given.trim().as_bytes(), want.as_bytes());
        if a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0 {
            return true;
        }
    }
    match rustix::net::sockopt::socket_peercred(conn.as_fd()) {
        Ok(cred) => access.uids.contains(&cred.uid.as_raw()),
        Err(_) => false,
    }
}

fn serve(conn: &UnixStream, s: &Shared) -> std::io::Result<()> {
    let Some((hello, _)) = proto::recv::<Request>(conn)? else {
        return Ok(());
    };
    let Request::Hello { token, features } = hello else {
        return proto::send(conn, &refused("the first message must be a hello"), &[]);
    };
    if !allowed(conn, &s.access, token.as_deref()) {
        Metrics::add(&s.cache.metrics().local_refused, 1);
        let peer = rustix::net::sockopt::socket_peercred(conn.as_fd())
            .map(|c| c.uid.as_raw().to_string())
            .unwrap_or_else(|_| "unknown".into());
        tracing::info!(uid = %peer, "local socket: refused a client (uid not allowed, no valid token)");
        return proto::send(
            conn,
            &refused("this uid may not read page files (use HTTP, or the auth token)"),
            &[],
        );
    }
    let records = features.iter().any(|f| f == proto::FEATURE_RECORDS);
    proto::send(
        conn,
        &Reply::Hello {
            worker_id: s.identity.worker_id.clone(),
            boot_id: s.identity.boot_id.clone(),
            page_size: s.cache.page_size(),
        },
        &[],
    )?;
    while let Some((req, _)) = proto::recv::<Request>(conn)? {
        match req {
            Request::Hello { .. } => proto::send(conn, &refused("hello twice"), &[])?,
            Request::Read { files } => {
                Metrics::add(&s.cache.metrics().local_requests, 1);
                let (answers, open) = read(&s.cache, files, records);
                let fds: Vec<_> = open.iter().map(|f| f.as_fd()).collect();
                proto::send(conn, &Reply::Read { files: answers }, &fds)?;
            }
            Request::Corrupt {
                url,
                version,
                index,
            } => {
                if let Ok(url) = s.cache.confine(&url) {
                    let store = s.cache.store();
                    store.discard_corrupt(&store.key(url, version, index));
                }
                proto::send(conn, &Reply::Done, &[])?;
            }
        }
    }
    Ok(())
}

fn refused(message: &str) -> Reply {
    Reply::Refused {
        message: message.to_string(),
    }
}

/// The answers to a read request and the open page files, in order. With
/// `records` the client reads packed records (else only page files pass).
fn read(
    cache: &ReadThrough,
    files: Vec<FileRange>,
    records: bool,
) -> (Vec<FilePages>, Vec<std::fs::File>) {
    let mut open = Vec::new();
    let answers = files
        .into_iter()
        .map(|f| {
            let budget = MAX_FDS - open.len();
            file_pages(cache, f, budget, records, &mut open)
        })
        .collect();
    (answers, open)
}

fn file_pages(
    cache: &ReadThrough,
    f: FileRange,
    budget: usize,
    records: bool,
    open: &mut Vec<std::fs::File>,
) -> FilePages {
    let url = match cache.confine(&f.url) {
        Ok(u) => u,
        Err(e) => return FilePages::not_local("error", e.to_string()),
    };
    let Some(cached) = cache.meta().info(&url) else {
        return FilePages::not_local("miss", "metadata not cached");
    };
    let Some(v) = cached.version else {
        return FilePages::not_local("miss", "not a file");
    };
    if f.version.as_deref().is_some_and(|p| p != v.version) {
        return FilePages::not_local("changed", "the pinned version is not the current one");
    }
    let ps = cache.page_size();
    let end = f.end.min(v.size);
    let first_page = f.start / ps;
    let mut pages = 0u32;
    let mut spans = Vec::new();
    if f.start < end {
        let last_page = (end - 1) / ps;
        let store = cache.store();
        for index in first_page..=last_page {
            if pages as usize >= budget {
                break;
            }
            let Some(page) = store.open_page(&store.key(url.clone(), v.version.clone(), index))
            else {
                break;
            };
            if page.packed && !records {
                break;
            }
            spans.push(if page.packed {
                (page.offset, page.len)
            } else {
                (0, 0)
            });
            open.push(page.file);
            pages += 1;
            let m = cache.metrics();
            Metrics::add(&m.cache_hits, 1);
            Metrics::add(&m.local_pages, 1);
            let len = cache.page_len(&v, index);
            Metrics::add(&m.local_bytes, len);
            // Served from the cache all the same (what `bytes_saved` counts).
            Metrics::add(&m.bytes_served, len);
        }
    }
    FilePages {
        status: "ok".into(),
        url,
        version: v.version,
        size: v.size,
        first_page,
        pages,
        // Whole page files only: no spans (what clients before packed
        // records expect).
        spans: if spans.iter().all(|(_, len)| *len == 0) {
            Vec::new()
        } else {
            spans
        },
        message: String::new(),
    }
}
