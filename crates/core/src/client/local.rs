//! Same-node reads: page files read through descriptors the local worker
//! passes ([`crate::local`] has the protocol and why it is safe).
//!
//! - **Finding out.** The first read that goes to a worker probes it once
//!   in the background ([`Client::local_channel`]): `GET /healthz` names the
//!   worker's socket and boot id; when the boot id is this node's, the
//!   client connects and says hello (the worker checks its uid or token).
//!   Until the probe is done, and for workers that are not local (another
//!   node, a socket that is not reachable from here, a refused hello), reads
//!   take the HTTP path. A socket that fails later is dropped and probed
//!   again after [`REPROBE`].
//! - **Reading.** For a chunk `[start, end)` the client asks for the
//!   descriptors of the pages the worker has on disk, reads each page's
//!   header and data with `pread` (the data straight into the caller's
//!   buffer when the chunk covers the whole page, else through one scratch
//!   page) and verifies them ([`crate::page_file`]) exactly as the worker
//!   does. The pages served are a prefix of the chunk; the rest (a page not
//!   on disk, only in the worker's memory tier, a miss of its metadata)
//!   goes over HTTP pinned to the same version. A page that fails its check
//!   is reported to the worker, which deletes it, and read over HTTP.
//! - **Small slices go over HTTP.** Every page touched is read and
//!   verified whole, so a read of less than a quarter of the page data it
//!   touches (a 4 KiB random read) is left to HTTP, where the worker answers
//!   from its memory tier of verified pages ([`worth_verifying`]).
//! - **Many files.** Whole-file reads (`cat` of many paths, `cat_file`)
//!   ask for the heads of up to [`LOCAL_BATCH`] files in one request
//!   ([`Client::local_heads`]); a file not wholly on disk goes to the HTTP
//!   batch of its owner.
//! - **Blocking.** The socket round trip and the `pread`s are blocking
//!   calls on the calling thread: the binding runs a read on the Python
//!   thread that asked for it (`block_on`), which is where the copy belongs,
//!   and the page cache answers in microseconds.
//! - **Counted.** [`super::Stats`] has `bytes_local` next to `bytes_read`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::batch::Head;
use super::{Client, WorkerAddr};
use crate::local::{self as proto, FilePages, FileRange, Reply, Request};
use crate::page_file;

/// How long a worker found not local (or whose socket failed) is left to
/// HTTP before it is probed again.
pub(super) const REPROBE: Duration = Duration::from_secs(30);

/// Files per same-node request of whole-file reads (small files need one
/// descriptor each; the worker passes at most `MAX_FDS` per reply).
const LOCAL_BATCH: usize = 64;

/// Idle connections kept per worker.
const IDLE_CONNECTIONS: usize = 16;

/// The socket timeout of a local request.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the client knows about one worker's locality.
enum Locality {
    Probing,
    Local(Arc<Channel>),
    Remote { until: Instant },
}

/// The connections to one local worker's socket.
pub(super) struct Channel {
    path: PathBuf,
    token: Option<String>,
    page_size: u64,
    idle: Mutex<Vec<UnixStream>>,
}

/// The same-node state of a client.
pub(super) struct LocalPlane {
    enabled: bool,
    boot_id: Option<String>,
    workers: Mutex<HashMap<String, Locality>>,
}

impl LocalPlane {
    pub(super) fn new(enabled: bool) -> Self {
        let boot_id = if enabled { proto::boot_id() } else { None };
        LocalPlane {
            enabled: enabled && boot_id.is_some(),
            boot_id,
            workers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Locality>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a worker said to hello.
#[derive(Debug)]
struct Hello {
    worker_id: String,
    boot_id: String,
    page_size: u64,
}

/// The part of a chunk served locally.
#[derive(Debug, Default)]
pub(super) struct LocalRead {
    /// Bytes written from the chunk's start on, contiguous.
    pub(super) written: u64,
    /// The version the pages belong to (pin the rest of the chunk to it).
    pub(super) version: Option<String>,
    /// The file's size, when the worker said it.
    pub(super) file_size: Option<u64>,
}

impl Channel {
    fn connect(&self) -> std::io::Result<(UnixStream, Hello)> {
        let s = UnixStream::connect(&self.path)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        proto::send(
            &s,
            &Request::Hello {
                token: self.token.clone(),
                features: vec![proto::FEATURE_RECORDS.to_string()],
            },
            &[],
        )?;
        match proto::recv::<Reply>(&s)? {
            Some((
                Reply::Hello {
                    worker_id,
                    boot_id,
                    page_size,
                },
                _,
            )) => Ok((
                s,
                Hello {
                    worker_id,
                    boot_id,
                    page_size,
                },
            )),
            Some((Reply::Refused { message }, _)) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                message,
            )),
            _ => Err(std::io::Error::other("unexpected answer to hello")),
        }
    }

    fn take(&self) -> std::io::Result<UnixStream> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(s) => Ok(s),
            None => self.connect().map(|(s, _)| s),
        }
    }

    fn give_back(&self, s: UnixStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(s);
        }
    }

    /// One request and its reply on a pooled connection.
    fn call(&self, req: &Request) -> std::io::Result<(Reply, Vec<OwnedFd>)> {
        let s = self.take()?;
        proto::send(&s, req, &[])?;
        let got = proto::recv::<Reply>(&s)?
            .ok_or_else(|| std::io::Error::other("the worker closed the socket"))?;
        self.give_back(s);
        Ok(got)
    }
}

impl Client {
    /// The local channel to `w` if it is on this node and reachable. The
    /// first call for a worker probes it (one `/healthz` request and a
    /// hello); concurrent reads meanwhile take HTTP.
    pub(super) async fn local_channel(&self, w: &WorkerAddr) -> Option<Arc<Channel>> {
        if !self.local.enabled {
            return None;
        }
        let key = w.addr();
        {
            let mut map = self.local.lock();
            match map.get(&key) {
                Some(Locality::Local(ch)) => return Some(ch.clone()),
                Some(Locality::Probing) => return None,
                Some(Locality::Remote { until }) if Instant::now() < *until => return None,
                _ => {}
            }
            map.insert(key.clone(), Locality::Probing);
        }
        let found = self.find_local(w).await.map(Arc::new);
        let state = match &found {
            Some(ch) => {
                tracing::debug!(worker = %key, socket = %ch.path.display(), "same-node reads");
                Locality::Local(ch.clone())
            }
            None => Locality::Remote {
                until: Instant::now() + REPROBE,
            },
        };
        self.local.lock().insert(key, state);
        found
    }

    /// Whether reads of `url` go to a worker already known to be local.
    pub fn prefers_local(&self, url: &str) -> bool {
        if !self.local.enabled {
            return false;
        }
        let Some(w) = self.workers_for(url).into_iter().next() else {
            return false;
        };
        matches!(self.local.lock().get(&w.addr()), Some(Locality::Local(_)))
    }

    /// Whether `w` is known to be local (for tests and `fs.stats()`).
    pub fn is_local_worker(&self, w: &WorkerAddr) -> bool {
        matches!(self.local.lock().get(&w.addr()), Some(Locality::Local(_)))
    }

    async fn find_local(&self, w: &WorkerAddr) -> Option<Channel> {
        // Not a read request: the probe is not counted in the stats.
        let req = super::Req::get("/healthz", "/healthz").uncounted();
        let body = self.send_text(w, req).await.ok()?;
        let health: serde_json::Value = serde_json::from_str(&body).ok()?;
        let socket = health.get("local_socket")?.as_str()?.to_string();
        let boot = health.get("boot_id")?.as_str()?;
        if Some(boot) != self.local.boot_id.as_deref() || socket.is_empty() {
            return None;
        }
        let worker_id = health.get("worker_id")?.as_str()?.to_string();
        let ch = Channel {
            path: PathBuf::from(socket),
            token: self.config.auth_token.clone(),
            page_size: self.config.page_size,
            idle: Mutex::new(Vec::new()),
        };
        let boot_id = self.local.boot_id.clone();
        // Connect and say hello off the runtime: blocking calls.
        tokio::task::spawn_blocking(move || match ch.connect() {
            Ok((s, hello))
                if Some(&hello.boot_id) == boot_id.as_ref()
                    && hello.worker_id == worker_id
                    && hello.page_size == ch.page_size =>
            {
                ch.give_back(s);
                Some(ch)
            }
            Ok((_, hello)) => {
                tracing::debug!(socket = %ch.path.display(), ?hello, "not this worker or node");
                None
            }
            Err(e) => {
                tracing::debug!(socket = %ch.path.display(), "no same-node reads: {e}");
                None
            }
        })
        .await
        .ok()
        .flatten()
    }

    fn local_failed(&self, w: &WorkerAddr, e: &std::io::Error) {
        tracing::debug!(worker = %w.addr(), "same-node read failed, using HTTP: {e}");
        self.local.lock().insert(
            w.addr(),
            Locality::Remote {
                until: Instant::now() + REPROBE,
            },
        );
    }

    /// Ask `w` for the page descriptors of `files`: per file, the worker's
    /// answer and its descriptors, in order. `None` when the socket failed
    /// (the worker is then left to HTTP for [`REPROBE`]).
    pub(super) fn local_pages(
        &self,
        w: &WorkerAddr,
        ch: &Channel,
        files: Vec<FileRange>,
    ) -> Option<Vec<(FilePages, Vec<OwnedFd>)>> {
        let n = files.len();
        let (reply, fds) = match ch.call(&Request::Read { files }) {
            Ok(r) => r,
            Err(e) => {
                self.local_failed(w, &e);
                return None;
            }
        };
        let Reply::Read { files } = reply else {
            return None;
        };
        if files.len() != n {
            return None;
        }
        let mut fds = fds.into_iter();
        Some(
            files
                .into_iter()
                .map(|f| {
                    let mine: Vec<OwnedFd> = fds.by_ref().take(f.pages as usize).collect();
                    (f, mine)
                })
                .collect(),
        )
    }

    /// Read `[start, end)` (cut at the file's size) from the pages `f` and
    /// `fds` name into `dst` (which holds `[start, ..)`), verifying each;
    /// returns how many bytes from `start` on were written. A corrupt page
    /// is reported to the worker and ends the prefix.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy_pages(
        &self,
        ch: &Channel,
        f: &FilePages,
        fds: Vec<OwnedFd>,
        start: u64,
        end: u64,
        dst: &mut [u8],
    ) -> u64 {
        let ps = ch.page_size;
        let stop = end.min(f.size);
        let mut pos = start;
        for (k, fd) in fds.into_iter().enumerate() {
            if pos >= stop {
                break;
            }
            let index = f.first_page + k as u64;
            if index != pos / ps {
                break;
            }
            let page_start = index * ps;
            let want = pos - page_start..stop.min(page_start + ps) - page_start;
            let at = (pos - start) as usize;
            let target = &mut dst[at..at + (want.end - want.start) as usize];
            let file = std::fs::File::from(fd);
            let span = f.spans.get(k).copied().filter(|(_, len)| *len > 0);
            match read_page(
                &file,
                span,
                ps,
                &f.url,
                &f.version,
                index,
                want.clone(),
                target,
            ) {
                Ok(()) => pos = page_start + want.end,
                Err(reason) => {
                    tracing::warn!(url = %f.url, page = index, "corrupt page file from the local worker: {reason}");
                    let _ = ch.call(&Request::Corrupt {
                        url: f.url.clone(),
                        version: f.version.clone(),
                        index,
                    });
                    break;
                }
            }
        }
        let written = pos - start;
        if written > 0 {
            self.count_local_bytes(written);
        }
        written
    }

    /// Serve a prefix of `[start, end)` of `url` from `w`'s page files into
    /// `dst` (which holds `[start, end)`). Never fails: what is not served
    /// is left to HTTP.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn read_local(
        &self,
        w: &WorkerAddr,
        ch: &Channel,
        url: &str,
        version: Option<&str>,
        start: u64,
        end: u64,
        dst: &mut [u8],
    ) -> LocalRead {
        let files = vec![FileRange {
            url: url.to_string(),
            version: version.map(str::to_string),
            start,
            end,
        }];
        let Some(mut answers) = self.local_pages(w, ch, files) else {
            return LocalRead::default();
        };
        let (f, fds) = answers.remove(0);
        // The worker must never answer with another version than pinned.
        if f.status != "ok" || version.is_some_and(|v| v != f.version) {
            return LocalRead::default();
        }
        if !worth_verifying(ch.page_size, f.size, start, end) {
            // A small slice of a page: verifying the whole page here costs
            // more than the worker's answer from its verified memory tier.
            return LocalRead::default();
        }
        let written = self.copy_pages(ch, &f, fds, start, end, dst);
        LocalRead {
            written,
            version: Some(f.version),
            file_size: Some(f.size),
        }
    }
}

impl Client {
    /// The heads (first `max_chunk` bytes) of whole-file reads of `urls`
    /// from `w`'s page files, [`LOCAL_BATCH`] files per request: one
    /// [`Head`] per URL, in order, [`Head::Unserved`] for a file whose head
    /// is not wholly on disk (or failed its check), to be read over HTTP.
    pub(super) fn local_heads(&self, w: &WorkerAddr, ch: &Channel, urls: &[&str]) -> Vec<Head> {
        let max = self.config.max_chunk;
        let ps = ch.page_size;
        let mut out: Vec<Head> = urls.iter().map(|_| Head::Unserved).collect();
        for (g, group) in urls.chunks(LOCAL_BATCH).enumerate() {
            let files = group
                .iter()
                .map(|u| FileRange {
                    url: u.to_string(),
                    version: None,
                    start: 0,
                    end: max,
                })
                .collect();
            let Some(answers) = self.local_pages(w, ch, files) else {
                break;
            };
            for (k, (f, fds)) in answers.into_iter().enumerate() {
                let want = f.size.min(max);
                if f.status != "ok" || f.first_page != 0 || u64::from(f.pages) < want.div_ceil(ps) {
                    continue;
                }
                let mut data = vec![0u8; want as usize];
                if self.copy_pages(ch, &f, fds, 0, want, &mut data) == want {
                    out[g * LOCAL_BATCH + k] = Head::Served {
                        data,
                        size: Some(f.size),
                        version: Some(f.version),
                    };
                }
            }
        }
        out
    }
}

/// Whether reading `[start, end)` of a file of `size` from page files pays:
/// every page touched is read and verified whole, so the bytes wanted must
/// be at least a quarter of the page data touched (a 4 KiB random read of a
/// 1 MiB page goes over HTTP; a whole small file, or a large read that is
/// not page aligned, is read locally).
fn worth_verifying(page_size: u64, size: u64, start: u64, end: u64) -> bool {
    let end = end.min(size);
    if start >= end {
        return true;
    }
    let first = start / page_size * page_size;
    let last = ((end - 1) / page_size + 1) * page_size;
    let touched = last.min(size) - first;
    4 * (end - start) >= touched
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Read page `index` of (`url`, `version`) from `file` (a whole page file,
/// or the packed record at `span`), verify it, and copy its bytes `want`
/// (offsets in the page) into `dst`.
#[allow(clippy::too_many_arguments)]
fn read_page(
    file: &std::fs::File,
    span: Option<(u64, u64)>,
    page_size: u64,
    url: &str,
    version: &str,
    index: u64,
    want: std::ops::Range<u64>,
    dst: &mut [u8],
) -> std::result::Result<(), String> {
    if let Some((offset, len)) = span {
        return read_record(file, offset, len, page_size, url, version, index, want, dst);
    }
    let hlen = page_file::header_len(url, version);
    let mut head = vec![0u8; hlen];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| format!("header: {e}"))?;
    let h = page_file::decode_header(&head)?;
    page_file::check_header(&h, page_size, url, version, index)?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    if Some(file_len) != (hlen as u64).checked_add(h.data_len) {
        return Err("file length does not match the header".into());
    }
    read_data(file, hlen as u64, h.data_len, h.checksum, want, dst)
}

/// Read the `data_len` data bytes at `data_at` of `file`, check them
/// against `checksum`, and copy their bytes `want` into `dst` (straight
/// into `dst` when it wants them all).
fn read_data(
    file: &std::fs::File,
    data_at: u64,
    data_len: u64,
    checksum: u64,
    want: std::ops::Range<u64>,
    dst: &mut [u8],
) -> std::result::Result<(), String> {
    if want.end > data_len {
        return Err("the page is shorter than the file size says".into());
    }
    if want.start == 0 && want.end == data_len {
        file.read_exact_at(dst, data_at)
            .map_err(|e| format!("data: {e}"))?;
        if page_file::checksum(dst) != checksum {
            return Err("checksum mismatch".into());
        }
        return Ok(());
    }
    SCRATCH.with(|s| {
        let mut page = s.borrow_mut();
        page.resize(data_len as usize, 0);
        file.read_exact_at(&mut page, data_at)
            .map_err(|e| format!("data: {e}"))?;
        if page_file::checksum(&page) != checksum {
            return Err("checksum mismatch".to_string());
        }
        dst.copy_from_slice(&page[want.start as usize..want.end as usize]);
        Ok(())
    })
}

/// [`read_page`] of the packed record of `len` bytes at `offset`.
#[allow(clippy::too_many_arguments)]
fn read_record(
    file: &std::fs::File,
    offset: u64,
    len: u64,
    page_size: u64,
    url: &str,
    version: &str,
    index: u64,
    want: std::ops::Range<u64>,
    dst: &mut [u8],
) -> std::result::Result<(), String> {
    let mut head = [0u8; page_file::RECORD_HEADER];
    file.read_exact_at(&mut head, offset)
        .map_err(|e| format!("record header: {e}"))?;
    let h = page_file::decode_record_header(&head)?;
    page_file::check_record(&h, page_size, url, version, index)?;
    if page_file::record_len(h.data_len as usize) as u64 != len {
        return Err("record length does not match its header".into());
    }
    let data_at = offset + page_file::RECORD_HEADER as u64;
    read_data(file, data_at, u64::from(h.data_len), h.checksum, want, dst)
}

#[cfg(test)]
mod tests {
    use super::worth_verifying;

    #[test]
    fn small_slices_of_pages_are_not_worth_verifying() {
        let p = 1 << 20;
        assert!(!worth_verifying(p, 100 << 20, 5 << 20, (5 << 20) + 4096));
        assert!(
            worth_verifying(p, 100 << 10, 0, 8 << 20),
            "a whole small file"
        );
        assert!(
            worth_verifying(p, 100 << 20, 12345, 12345 + (8 << 20)),
            "a large unaligned read"
        );
        assert!(worth_verifying(p, 100 << 20, 0, p / 4));
        assert!(!worth_verifying(p, 100 << 20, 0, p / 4 - 1));
        assert!(worth_verifying(p, 10, 20, 30), "past the end");
    }
}
